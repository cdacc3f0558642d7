//! The outbox: a room's timeline delivered to a [`Sink`] (a webhook
//! endpoint, a push gateway) from a cursor in storage (the timeline is the
//! outbox).
//!
//! Each sink has a task of its own, so a slow or dead one delays nobody
//! else, and nothing here runs on the send path: the commit only nudges
//! the task (a full queue drops the nudge; the poll finds the work). The
//! task asks storage which rooms have events past the sink's cursor, takes
//! a lease on each (one instance at a time delivers a room, so events go
//! out in room order), hands the sink up to [`BATCH`] events, and moves the
//! cursor only when the sink succeeded. A failure keeps the cursor and
//! backs off (doubling from `backoff`, at most [`MAX_BACKOFF`]): delivery
//! is at least once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::timeline::TimelineEvent;
use chat_core::{RoomId, Timestamp, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ChatService;
use crate::storage::HistoryQuery;

/// Events per POST, at most.
const BATCH: u32 = 50;
/// Rooms one endpoint is delivered at once.
const CONCURRENT_ROOMS: usize = 4;
/// How long a lease on (endpoint, room) lasts; renewed with each batch.
const LEASE: Duration = Duration::from_secs(30);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How often storage is asked for work without a nudge (events of other
/// instances, retries coming due).
const POLL: Duration = Duration::from_secs(2);
/// Rooms asked about per poll.
const BACKLOG_ROOMS: u32 = 256;

/// Where a room's events go.
#[async_trait]
pub(crate) trait Sink: Send + Sync + 'static {
    /// The name its cursors are kept under in storage (a new name starts
    /// from the present).
    fn name(&self) -> String;
    /// What it is, for metrics: `webhook`, `push`.
    fn kind(&self) -> &'static str;
    /// Delivers a batch of one room's events, oldest first; `Err` (why)
    /// to have the whole batch again later.
    async fn deliver(
        &self,
        service: &ChatService,
        room: RoomId,
        events: &[TimelineEvent],
    ) -> Result<(), String>;
}

/// Nudges for the sinks' tasks: a room has new events.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nudges {
    senders: Vec<mpsc::Sender<RoomId>>,
}

impl Nudges {
    /// Tells every sink's task that `room` has news; never waits.
    pub(crate) fn nudge(&self, room: RoomId) {
        for sender in &self.senders {
            let _ = sender.try_send(room);
        }
    }
}

/// Registers the sinks in storage and starts their tasks; the nudges go
/// to the commit listener. `backoff` is the wait after a first failure.
pub(crate) async fn start(
    service: Arc<ChatService>,
    sinks: Vec<Arc<dyn Sink>>,
    backoff: Duration,
    stop: CancellationToken,
) -> Result<Nudges, crate::storage::StorageError> {
    let mut nudges = Nudges::default();
    let owner = uuid::Uuid::new_v4().simple().to_string();
    for sink in sinks {
        let name = sink.name();
        if service
            .storage()
            .outbox_start(&name, Timestamp::now())
            .await?
        {
            tracing::info!(sink = %crate::redact_url(&name),
                "new outbox sink: it gets the events from now on");
        }
        let (tx, rx) = mpsc::channel(1_024);
        nudges.senders.push(tx.clone());
        let worker = Worker {
            retry: tx,
            service: service.clone(),
            sink,
            name,
            backoff,
            owner: owner.clone(),
        };
        tokio::spawn(worker.run(rx, stop.clone()));
    }
    Ok(nudges)
}

struct Worker {
    /// Its own nudges: a failed room is nudged again when its retry is
    /// due (the poll would find it too, later).
    retry: mpsc::Sender<RoomId>,
    service: Arc<ChatService>,
    sink: Arc<dyn Sink>,
    /// The sink's name in storage.
    name: String,
    backoff: Duration,
    /// This instance, as a lease holder.
    owner: String,
}

impl Worker {
    async fn run(self, mut nudges: mpsc::Receiver<RoomId>, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut busy: HashSet<RoomId> = HashSet::new();
        // Rooms nudged while being delivered: the delivery may have read
        // before the news, so they go again when it ends.
        let mut again: HashSet<RoomId> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<RoomId>();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut wanted: Vec<RoomId> = Vec::new();
            tokio::select! {
                () = stop.cancelled() => return,
                _ = poll.tick() => {
                    match this.service.storage()
                        .outbox_backlog(&this.name, Timestamp::now(), BACKLOG_ROOMS)
                        .await
                    {
                        Ok(rooms) => {
                            let behind: i64 = rooms.iter().map(|c| c.last_seq - c.delivered).sum();
                            metrics::gauge!(crate::metrics::OUTBOX_QUEUED, "sink" => this.sink.kind()).set(behind as f64);
                            wanted.extend(rooms.iter().map(|c| c.room));
                        }
                        Err(e) => tracing::warn!(error = %e, "webhook backlog unreadable; retrying"),
                    }
                }
                Some(room) = nudges.recv() => wanted.push(room),
                Some(room) = done_rx.recv() => {
                    busy.remove(&room);
                    if again.remove(&room) {
                        wanted.push(room);
                    }
                }
            }
            for room in wanted {
                if busy.contains(&room) {
                    again.insert(room);
                    continue;
                }
                if busy.len() >= CONCURRENT_ROOMS {
                    // The poll offers it again.
                    continue;
                }
                busy.insert(room);
                let worker = this.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    worker.deliver_room(room).await;
                    let _ = done.send(room);
                });
            }
        }
    }

    /// The sink's delivery of one batch, the lease renewed while it runs
    /// (a sink may take longer than a lease: one request per member for
    /// push). A renewal refused means another instance holds the room now:
    /// the cursor will not move for us (it checks the holder).
    async fn deliver_leased(&self, room: RoomId, events: &[TimelineEvent]) -> Result<(), String> {
        let delivery = self.sink.deliver(&self.service, room, events);
        tokio::pin!(delivery);
        loop {
            tokio::select! {
                result = &mut delivery => return result,
                () = tokio::time::sleep(LEASE / 3) => {
                    let now = Timestamp::now();
                    let renewed = self
                        .service
                        .storage()
                        .outbox_claim(&self.name, room, &self.owner, later(now, LEASE), now)
                        .await;
                    if !matches!(renewed, Ok(Some(_))) {
                        tracing::warn!(%room, "outbox lease lost during a delivery");
                    }
                }
            }
        }
    }

    /// Delivers `room`'s events past the cursor, batch after batch, while
    /// the lease is ours and the endpoint says yes.
    async fn deliver_room(&self, room: RoomId) {
        let storage = self.service.storage();
        let url = &self.name;
        loop {
            let now = Timestamp::now();
            let until = later(now, LEASE);
            let cursor = match storage
                .outbox_claim(url, room, &self.owner, until, now)
                .await
            {
                Ok(Some(cursor)) => cursor,
                // Another instance delivers it, or the room is gone.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, %room, "webhook lease not taken");
                    return;
                }
            };
            if cursor.next_attempt_at.is_some_and(|at| at > now) {
                let _ = storage.outbox_release(url, room, &self.owner).await;
                return;
            }
            let query = HistoryQuery {
                before: None,
                after: Some(cursor.delivered),
                limit: BATCH,
            };
            let events = match self.service.timeline_page(UserId(0), room, query).await {
                Ok((events, _)) => events,
                Err(e) => {
                    tracing::warn!(error = %e.message, %room, "webhook events unreadable");
                    let _ = storage.outbox_release(url, room, &self.owner).await;
                    return;
                }
            };
            let Some(last) = events.last().map(TimelineEvent::seq) else {
                let _ = storage.outbox_release(url, room, &self.owner).await;
                return;
            };
            match self.deliver_leased(room, &events).await {
                Ok(()) => {
                    metrics::counter!(crate::metrics::OUTBOX_DELIVERED, "sink" => self.sink.kind())
                        .increment(events.len() as u64);
                    if let Err(e) = storage.outbox_delivered(url, room, &self.owner, last).await {
                        // Delivered but not recorded: they go again (at
                        // least once).
                        tracing::warn!(error = %e, %room, "webhook cursor not moved");
                        return;
                    }
                }
                Err(why) => {
                    let attempts = cursor.attempts.saturating_add(1);
                    let wait = backoff(self.backoff, attempts);
                    metrics::counter!(crate::metrics::OUTBOX_FAILED, "sink" => self.sink.kind())
                        .increment(1);
                    metrics::counter!(crate::metrics::OUTBOX_RETRIED, "sink" => self.sink.kind())
                        .increment(1);
                    tracing::info!(sink = %crate::redact_url(url), %room, attempts, ?wait, %why,
                        "outbox delivery failed; retrying later");
                    let next = later(Timestamp::now(), wait);
                    if let Err(e) = storage
                        .outbox_failed(url, room, &self.owner, attempts, next)
                        .await
                    {
                        tracing::warn!(error = %e, %room, "webhook failure not recorded");
                    }
                    let retry = self.retry.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = retry.send(room).await;
                    });
                    return;
                }
            }
        }
    }
}

/// The wait before attempt `attempts + 1`: `base` doubled per failure, at
/// most [`MAX_BACKOFF`], with up to a quarter of jitter so that endpoints
/// coming back are not hit by every instance at once.
fn backoff(base: Duration, attempts: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let wait = doubled.min(MAX_BACKOFF);
    let jitter = wait.mul_f64(rand::random::<f64>() * 0.25);
    wait + jitter
}

fn later(now: Timestamp, wait: Duration) -> Timestamp {
    Timestamp::from_unix_micros(
        now.unix_micros()
            .saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let base = Duration::from_secs(1);
        let first = backoff(base, 1);
        assert!(first >= base && first <= base.mul_f64(1.25), "{first:?}");
        let third = backoff(base, 3);
        assert!(
            third >= Duration::from_secs(4) && third <= Duration::from_secs(5),
            "{third:?}"
        );
        let late = backoff(base, 40);
        assert!(
            late >= MAX_BACKOFF && late <= MAX_BACKOFF.mul_f64(1.25),
            "{late:?}"
        );
    }
}
