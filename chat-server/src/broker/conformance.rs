//! The one test suite every [`Broker`] runs. A backend supplies a factory
//! `|sink| async { Arc<dyn Broker> }` and invokes
//! [`broker_conformance_tests!`](crate::broker_conformance_tests).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chat_core::RoomId;
use tokio::sync::Notify;

use super::{Broker, ConnId, Event, EventKind, EventSink};

/// A sink that records what it is given.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<Arc<Event>>>,
    resyncs: std::sync::atomic::AtomicUsize,
    notify: Notify,
}

impl RecordingSink {
    /// How many times the broker asked for a resync.
    pub fn resyncs(&self) -> usize {
        self.resyncs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Everything delivered so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` events arrived, or panics after 5 seconds.
    pub async fn wait_for(&self, n: usize) -> Vec<Arc<Event>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.notify.notified();
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} events, got {}: {events:?}", events.len());
            }
        }
    }
}

impl EventSink for RecordingSink {
    fn deliver(&self, event: Arc<Event>) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        self.notify.notify_waiters();
    }

    fn resync(&self) {
        self.resyncs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// A message event with a recognizable frame.
pub fn message_event(room: i64, seq: i64) -> Arc<Event> {
    Arc::new(Event {
        room: RoomId(room),
        kind: EventKind::Message,
        seq: Some(seq),
        origin: Some(ConnId(7)),
        frame: Utf8Bytes::from(format!(r#"{{"type":"message","room":{room},"seq":{seq}}}"#)),
    })
}

/// A subscribed room receives published events intact.
pub async fn delivers_to_subscribed_room(broker: Arc<dyn Broker>, sink: Arc<RecordingSink>) {
    broker.subscribe(RoomId(1)).await.expect("subscribe");
    let sent = message_event(1, 1);
    broker.publish(sent.clone()).await.expect("publish");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(*got[0], *sent);
}

/// Events of rooms that are not subscribed are not delivered, and
/// unsubscribing stops delivery.
pub async fn ignores_unsubscribed_rooms(broker: Arc<dyn Broker>, sink: Arc<RecordingSink>) {
    broker.subscribe(RoomId(1)).await.expect("subscribe");
    broker.publish(message_event(2, 1)).await.expect("publish");
    broker.publish(message_event(1, 1)).await.expect("publish");
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].room, RoomId(1));

    broker.unsubscribe(RoomId(1)).await.expect("unsubscribe");
    broker.publish(message_event(1, 2)).await.expect("publish");
    // A marker on a still-subscribed room proves the earlier publish had time
    // to arrive had it been delivered.
    broker.subscribe(RoomId(3)).await.expect("subscribe");
    broker.publish(message_event(3, 1)).await.expect("publish");
    let got = sink.wait_for(2).await;
    let rooms: Vec<_> = got.iter().map(|e| (e.room.0, e.seq)).collect();
    assert_eq!(rooms, vec![(1, Some(1)), (3, Some(1))]);
}

/// Subscribing twice delivers once; one unsubscribe ends it.
pub async fn subscribe_is_idempotent(broker: Arc<dyn Broker>, sink: Arc<RecordingSink>) {
    broker.subscribe(RoomId(1)).await.expect("subscribe");
    broker.subscribe(RoomId(1)).await.expect("subscribe again");
    broker.publish(message_event(1, 1)).await.expect("publish");
    broker
        .subscribe(RoomId(9))
        .await
        .expect("subscribe marker room");
    broker
        .publish(message_event(9, 1))
        .await
        .expect("publish marker");
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2, "one delivery per event: {got:?}");
}

/// One publisher's events for a room arrive in publish order.
pub async fn keeps_publish_order(broker: Arc<dyn Broker>, sink: Arc<RecordingSink>) {
    broker.subscribe(RoomId(1)).await.expect("subscribe");
    for seq in 1..=200 {
        broker
            .publish(message_event(1, seq))
            .await
            .expect("publish");
    }
    let got = sink.wait_for(200).await;
    let seqs: Vec<_> = got.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

/// Every kind of event survives the trip with its fields.
pub async fn carries_every_kind(broker: Arc<dyn Broker>, sink: Arc<RecordingSink>) {
    broker.subscribe(RoomId(4)).await.expect("subscribe");
    let kinds = [
        EventKind::Message,
        EventKind::Notice,
        EventKind::RoomDeleted,
        EventKind::MemberLeft(chat_core::UserId(42)),
    ];
    let mut sent = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Arc::new(Event {
            room: RoomId(4),
            seq: matches!(kind, EventKind::Message).then_some(i as i64 + 1),
            kind,
            origin: (i % 2 == 0).then_some(ConnId(i as u64 + 100)),
            frame: Utf8Bytes::from(format!(r#"{{"n":{i},"text":"é ✓"}}"#)),
        });
        broker.publish(event.clone()).await.expect("publish");
        sent.push(event);
    }
    let got = sink.wait_for(sent.len()).await;
    let got: Vec<Event> = got.iter().map(|e| (**e).clone()).collect();
    let sent: Vec<Event> = sent.iter().map(|e| (**e).clone()).collect();
    assert_eq!(got, sent);
}

/// Expands to one `#[tokio::test]` per conformance test. `$make` is a
/// closure `|sink: Arc<dyn EventSink>| async { Arc<dyn Broker> }`.
#[macro_export]
macro_rules! broker_conformance_tests {
    ($make:expr) => {
        $crate::broker_conformance_tests!(@tests $make;
            delivers_to_subscribed_room,
            ignores_unsubscribed_rooms,
            subscribe_is_idempotent,
            keeps_publish_order,
            carries_every_kind,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let sink = ::std::sync::Arc::new($crate::broker::conformance::RecordingSink::default());
                let make = $make;
                let broker = make(sink.clone() as ::std::sync::Arc<dyn $crate::broker::EventSink>).await;
                $crate::broker::conformance::$name(broker, sink).await;
            }
        )*
    };
}
