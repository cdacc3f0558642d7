//! Webhooks: every room's timeline POSTed to each configured endpoint, from
//! a cursor in storage (the timeline is the outbox).
//!
//! Each endpoint has a task of its own, so a slow or dead endpoint delays
//! nobody else, and nothing here runs on the send path: the commit only
//! nudges the task (a full queue drops the nudge; the poll finds the work).
//! The task asks storage which rooms have events past the endpoint's
//! cursor, takes a lease on each (one instance at a time delivers a room,
//! so events go out in room order), POSTs up to [`BATCH`] events, and moves
//! the cursor only on a 2xx. A failure keeps the cursor and backs off
//! (doubling from `webhook_backoff`, at most [`MAX_BACKOFF`]); delivery is
//! at least once, each event with its id (`{room}:{seq}`) to drop repeats.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chat_core::timeline::TimelineEvent;
use chat_core::{RoomId, Seq, Timestamp, UserId};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ChatService;
use crate::signature;
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

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) secret: String,
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) timeout: Duration,
    pub(crate) backoff: Duration,
}

/// One event as POSTed.
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    /// `{room}:{seq}`: the same event always has the same id.
    id: String,
    room: RoomId,
    seq: Seq,
    event: &'a TimelineEvent,
}

/// Nudges for the endpoints' tasks: a room has new events.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nudges {
    senders: Vec<mpsc::Sender<RoomId>>,
}

impl Nudges {
    /// Tells every endpoint's task that `room` has news; never waits.
    pub(crate) fn nudge(&self, room: RoomId) {
        for sender in &self.senders {
            let _ = sender.try_send(room);
        }
    }
}

/// Registers the endpoints in storage and starts their tasks; the nudges
/// go to the commit listener.
pub(crate) async fn start(
    service: Arc<ChatService>,
    endpoints: Vec<Endpoint>,
    delivery: Delivery,
    stop: CancellationToken,
) -> Result<Nudges, crate::storage::StorageError> {
    let mut nudges = Nudges::default();
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let client = reqwest::Client::builder()
        .timeout(delivery.timeout)
        .build()
        .map_err(|e| crate::storage::StorageError::Backend(Box::new(e)))?;
    for endpoint in endpoints {
        if service
            .storage()
            .webhook_start(&endpoint.url, Timestamp::now())
            .await?
        {
            tracing::info!(endpoint = %crate::redact_url(&endpoint.url),
                "new webhook endpoint: it gets the events from now on");
        }
        let (tx, rx) = mpsc::channel(1_024);
        nudges.senders.push(tx.clone());
        let worker = Worker {
            retry: tx,
            service: service.clone(),
            endpoint: Arc::new(endpoint),
            delivery: delivery.clone(),
            owner: owner.clone(),
            client: client.clone(),
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
    endpoint: Arc<Endpoint>,
    delivery: Delivery,
    /// This instance, as a lease holder.
    owner: String,
    client: reqwest::Client,
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
                        .webhook_backlog(&this.endpoint.url, Timestamp::now(), BACKLOG_ROOMS)
                        .await
                    {
                        Ok(rooms) => {
                            let behind: i64 = rooms.iter().map(|c| c.last_seq - c.delivered).sum();
                            metrics::gauge!(crate::metrics::WEBHOOK_QUEUED).set(behind as f64);
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

    /// Delivers `room`'s events past the cursor, batch after batch, while
    /// the lease is ours and the endpoint says yes.
    async fn deliver_room(&self, room: RoomId) {
        let storage = self.service.storage();
        let url = &self.endpoint.url;
        loop {
            let now = Timestamp::now();
            let until = later(now, LEASE);
            let cursor = match storage
                .webhook_claim(url, room, &self.owner, until, now)
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
                let _ = storage.webhook_release(url, room, &self.owner).await;
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
                    let _ = storage.webhook_release(url, room, &self.owner).await;
                    return;
                }
            };
            let Some(last) = events.last().map(TimelineEvent::seq) else {
                let _ = storage.webhook_release(url, room, &self.owner).await;
                return;
            };
            match self.post(room, &events).await {
                Ok(()) => {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERED)
                        .increment(events.len() as u64);
                    if let Err(e) = storage
                        .webhook_delivered(url, room, &self.owner, last)
                        .await
                    {
                        // Delivered but not recorded: they go again (at
                        // least once).
                        tracing::warn!(error = %e, %room, "webhook cursor not moved");
                        return;
                    }
                }
                Err(why) => {
                    let attempts = cursor.attempts.saturating_add(1);
                    let wait = backoff(self.delivery.backoff, attempts);
                    metrics::counter!(crate::metrics::WEBHOOK_FAILED).increment(1);
                    metrics::counter!(crate::metrics::WEBHOOK_RETRIED).increment(1);
                    tracing::info!(endpoint = %crate::redact_url(url), %room, attempts, ?wait, %why,
                        "webhook delivery failed; retrying later");
                    let next = later(Timestamp::now(), wait);
                    if let Err(e) = storage
                        .webhook_failed(url, room, &self.owner, attempts, next)
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

    /// One POST of a batch; `Err` unless the endpoint answered 2xx.
    async fn post(&self, room: RoomId, events: &[TimelineEvent]) -> Result<(), String> {
        let outgoing: Vec<Outgoing<'_>> = events
            .iter()
            .map(|event| Outgoing {
                id: format!("{}:{}", room, event.seq()),
                room,
                seq: event.seq(),
                event,
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "events": outgoing }))
            .map_err(|e| e.to_string())?;
        let now = crate::auth::unix_now();
        let answer = self
            .client
            .post(&self.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::TIMESTAMP_HEADER, now.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(self.endpoint.secret.as_bytes(), now, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
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
