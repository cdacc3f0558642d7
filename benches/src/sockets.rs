//! The generator's sockets: receivers that subscribe and record every
//! delivery, senders that send at a fixed rate. One task per socket on one
//! tokio runtime; counters are shared atomics and one histogram behind a
//! mutex that no task holds across an `.await`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::latency_histogram;
use crate::wire;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: with thousands of sockets, tungstenite's 128 KiB default
/// read buffer would make the generator's memory the story.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens `/ws/` on `base` (`ws://host:port`) with a token.
pub async fn connect(base: &str, token: &str) -> anyhow::Result<Ws> {
    let url = format!("{base}/ws/?token={token}");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// Subscribes to a room and waits for `subscribed`, skipping frames that
/// come before it (presence, replay).
pub async fn subscribe(ws: &mut Ws, room: i64, timeout: Duration) -> anyhow::Result<()> {
    ws.send(Message::text(format!(
        r#"{{"type":"subscribe","room":{room}}}"#
    )))
    .await?;
    tokio::time::timeout(timeout, async {
        while let Some(frame) = ws.next().await {
            match frame? {
                Message::Text(t) if wire::is_subscribed(t.as_str()) => return Ok(()),
                Message::Text(t) if wire::is_error(t.as_str()) => {
                    bail!("subscribe refused: {}", t.as_str())
                }
                Message::Close(c) => bail!("closed while subscribing: {c:?}"),
                _ => {}
            }
        }
        bail!("socket ended while subscribing")
    })
    .await
    .context("no `subscribed` in time")?
}

/// Everything the sockets count, shared by all of them.
#[derive(Debug)]
pub struct Counters {
    /// Deliveries in order, each the next counter of its sender.
    pub received: AtomicU64,
    /// Deliveries whose counter was not above the last one seen from that
    /// sender on that socket: duplicates (or reordering, which the contract
    /// forbids as well).
    pub duplicated: AtomicU64,
    /// Counters skipped over on arrival (lost unless they come later).
    pub skipped: AtomicU64,
    /// Receivers whose socket ended (closed by the server, e.g. 4408).
    pub receivers_closed: AtomicU64,
    /// Microseconds (wire clock) of the latest delivery.
    pub last_delivery_us: AtomicU64,
    /// When the newest ack arrived (Unix micros).
    pub last_ack_us: AtomicU64,
    pub sent: AtomicU64,
    /// Edits and reactions sent in place of messages.
    pub changes: AtomicU64,
    pub acked: AtomicU64,
    /// `error` frames answering sends (rate limited, refused).
    pub send_errors: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
    /// Send to ack, at the sender: the store path alone, without fan-out.
    pub ack_latency: Mutex<Histogram<u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            receivers_closed: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            latency: Mutex::new(latency_histogram()),
            ack_latency: Mutex::new(latency_histogram()),
        }
    }
}

impl Counters {
    /// The latency histogram so far, replaced by an empty one.
    pub fn take_latency(&self) -> Histogram<u64> {
        match self.latency.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, latency_histogram()),
            Err(_) => latency_histogram(),
        }
    }

    /// The ack latency histogram so far, replaced by an empty one.
    pub fn take_ack_latency(&self) -> Histogram<u64> {
        match self.ack_latency.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, latency_histogram()),
            Err(_) => latency_histogram(),
        }
    }

    fn record(&self, d: wire::Delivery, now_us: u64) {
        if let Ok(mut h) = self.latency.lock() {
            // Out of range only past ten minutes; clamp rather than drop.
            h.saturating_record(now_us.saturating_sub(d.sent_us).max(1));
        }
    }
}

/// Reads a subscribed socket until it ends, checking every delivery against
/// the last counter seen from its sender. `senders` is the number of sender
/// ids in the run (ids are dense from 0).
pub async fn receive(mut ws: Ws, counters: std::sync::Arc<Counters>, senders: usize) {
    let mut next = vec![0u32; senders];
    while let Some(frame) = ws.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some(d) = wire::parse_delivery(text.as_str()) else {
            continue;
        };
        let now = wire::now_micros();
        counters.record(d, now);
        counters.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        let Some(expected) = next.get_mut(d.sender as usize) else {
            continue;
        };
        if d.counter < *expected {
            counters.duplicated.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if d.counter > *expected {
            counters
                .skipped
                .fetch_add(u64::from(d.counter - *expected), Ordering::Relaxed);
        }
        *expected = d.counter + 1;
        counters.received.fetch_add(1, Ordering::Relaxed);
    }
    counters.receivers_closed.fetch_add(1, Ordering::Relaxed);
}

/// A sending socket: its write half stays here between steps, its read half
/// counts acks and errors in a task of its own.
#[derive(Debug)]
pub struct Sender {
    pub id: u32,
    pub room: i64,
    sink: SplitSink<Ws, Message>,
    counter: u32,
    /// The id of this sender's newest acknowledged message (0: none yet),
    /// what its changes change.
    last_id: std::sync::Arc<AtomicI64>,
    /// Changes made, and the message its last reaction went to.
    changes: u64,
    reacted: i64,
}

/// What a sender sends on one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Message,
    /// An edit, a reaction or its removal, in turn, of the sender's newest
    /// message.
    Change,
}

/// Which ticks are changes: every `1 / share`-th, spread evenly (0: none),
/// shifted by `phase`: senders given different phases make their changes
/// on different ticks, so that the server sees changes and messages mixed
/// as people make them, not every sender's change in the same window with
/// no message in it (which the first W1C runs did).
pub fn tick_kind(n: u64, share: f64, phase: u64) -> Tick {
    if share <= 0.0 {
        return Tick::Message;
    }
    // A change when the running count of changes due steps up.
    let due = |k: u64| (k as f64 * share).floor() as u64;
    let n = n + phase;
    if due(n + 1) > due(n) {
        Tick::Change
    } else {
        Tick::Message
    }
}

impl Sender {
    pub fn new(id: u32, room: i64, ws: Ws, counters: std::sync::Arc<Counters>) -> Self {
        let (sink, stream) = ws.split();
        let last_id = std::sync::Arc::new(AtomicI64::new(0));
        tokio::spawn(count_answers(stream, counters, last_id.clone()));
        Self {
            id,
            room,
            sink,
            counter: 0,
            last_id,
            changes: 0,
            reacted: 0,
        }
    }

    /// Sends on `count` ticks at `rate` per second, the first after
    /// `offset` (senders are staggered so their ticks do not coincide),
    /// the share `change_share` of them changes to an earlier message
    /// instead of messages. Late ticks are caught up, so the offered load
    /// is what was asked. Answers how many messages were sent.
    pub async fn run(
        mut self,
        count: u64,
        rate: f64,
        offset: Duration,
        body_bytes: usize,
        change_share: f64,
        counters: std::sync::Arc<Counters>,
    ) -> (Self, anyhow::Result<u64>) {
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut body = String::with_capacity(body_bytes + 32);
        let mut messages = 0;
        for n in 0..count {
            tick.tick().await;
            let target = self.last_id.load(Ordering::Relaxed);
            if tick_kind(n, change_share, u64::from(self.id)) == Tick::Change && target > 0 {
                let frame = self.change(target, body_bytes);
                if let Err(e) = self.sink.send(Message::text(frame)).await {
                    return (self, Err(e.into()));
                }
                counters.changes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            messages += 1;
            wire::write_body(
                &mut body,
                wire::now_micros(),
                self.id,
                self.counter,
                body_bytes,
            );
            let frame = format!(
                r#"{{"type":"send","room":{},"body":"{body}","client_id":"{}-{}"}}"#,
                self.room, self.id, self.counter
            );
            self.counter += 1;
            if let Err(e) = self.sink.send(Message::text(frame)).await {
                return (self, Err(e.into()));
            }
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        (self, Ok(messages))
    }

    /// The next change, in turn: an edit of `target` (a body of the
    /// message size), a reaction to it, the reaction taken back (from the
    /// message it went to), so that each one changes something and takes
    /// a seq.
    fn change(&mut self, target: i64, body_bytes: usize) -> String {
        let turn = self.changes % 3;
        self.changes += 1;
        match turn {
            0 => {
                let mut body = format!("edit {}:", self.changes);
                while body.len() < body_bytes {
                    body.push('y');
                }
                format!(r#"{{"type":"edit","message_id":{target},"body":"{body}"}}"#)
            }
            1 => {
                self.reacted = target;
                format!(r#"{{"type":"react","message_id":{target},"key":"+1"}}"#)
            }
            _ => format!(
                r#"{{"type":"unreact","message_id":{},"key":"+1"}}"#,
                self.reacted
            ),
        }
    }
}

async fn count_answers(
    mut stream: SplitStream<Ws>,
    counters: std::sync::Arc<Counters>,
    last_id: std::sync::Arc<AtomicI64>,
) {
    while let Some(Ok(frame)) = stream.next().await {
        if let Message::Text(t) = frame {
            if wire::is_ack(t.as_str()) {
                if let Some(id) = wire::ack_message_id(t.as_str()) {
                    last_id.fetch_max(id, Ordering::Relaxed);
                }
                counters.acked.fetch_add(1, Ordering::Relaxed);
                counters
                    .last_ack_us
                    .fetch_max(wire::now_micros(), Ordering::Relaxed);
                if let Some(sent) = wire::ack_sent_us(t.as_str())
                    && let Ok(mut h) = counters.ack_latency.lock()
                {
                    h.saturating_record(wire::now_micros().saturating_sub(sent).max(1));
                }
            } else if wire::is_error(t.as_str()) {
                counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Tick, tick_kind};

    #[test]
    fn a_tenth_of_the_ticks_are_changes_spread_evenly() {
        let changes = |phase| -> Vec<u64> {
            (0..40)
                .filter(|n| tick_kind(*n, 0.1, phase) == Tick::Change)
                .collect()
        };
        assert_eq!(changes(0), vec![9, 19, 29, 39]);
        assert_eq!(changes(3), vec![6, 16, 26, 36]);
        assert_eq!(changes(13), changes(3));
        assert!((0..100).all(|n| tick_kind(n, 0.0, 0) == Tick::Message));
    }
}
