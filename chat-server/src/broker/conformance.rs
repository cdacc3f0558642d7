//! The one test suite every [`Broker`] runs. A backend supplies a [`Bus`]
//! (a factory of broker instances that see each other, like servers sharing
//! one Redis) and invokes
//! [`broker_conformance_tests!`](crate::broker_conformance_tests).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::api::ComponentState;
use chat_core::{RoomId, UserId};
use tokio::sync::Notify;

use super::{Broker, ConnId, Event, EventKind, EventSink, Frame, Quota, RateCheck};

/// Makes broker instances for one test. Every instance made by one bus
/// receives the events the others publish (one Redis and key prefix, or one
/// in-process [`LocalBus`](super::local::LocalBus)); buses of different
/// tests never see each other.
#[async_trait]
pub trait Bus: Send + Sync {
    /// A new broker instance delivering to `sink`. Panics if it cannot be
    /// made: a conformance test never passes without its backend.
    async fn broker(&self, sink: Arc<dyn EventSink>) -> Arc<dyn Broker>;
}

/// A new instance on `bus` with a sink of its own.
pub async fn instance(bus: &dyn Bus) -> (Arc<dyn Broker>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let broker = bus.broker(sink.clone()).await;
    (broker, sink)
}

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
    message_from(7, room, seq)
}

/// A message event caused by connection `origin`.
pub fn message_from(origin: u64, room: i64, seq: i64) -> Arc<Event> {
    Arc::new(Event {
        room: RoomId(room),
        origin: Some(ConnId(origin)),
        kind: EventKind::Timeline {
            seq,
            frame: text(format!(
                r#"{{"type":"message","room":{room},"seq":{seq},"origin":{origin}}}"#
            )),
            leaves: None,
        },
    })
}

fn text(json: String) -> Frame {
    Frame::from_utf8(json.into()).expect("a String is UTF-8")
}

/// `(room, seq)` of each event, to compare with what was sent.
fn rooms_and_seqs(events: &[Arc<Event>]) -> Vec<(i64, Option<i64>)> {
    events.iter().map(|e| (e.room.0, e.seq())).collect()
}

/// A subscribed room receives what another instance published, intact.
pub async fn delivers_to_subscribed_room(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(1)).await.expect("subscribe");
    let sent = message_event(1, 1);
    a.publish(sent.clone()).await.expect("publish");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(*got[0], *sent);
}

/// An instance never hears its own events back: its hub delivered them to
/// its sockets already, and a second copy would be a duplicate to drop.
pub async fn never_back_to_its_publisher(bus: &dyn Bus) {
    let (a, sink_a) = instance(bus).await;
    let (b, sink_b) = instance(bus).await;
    a.subscribe(RoomId(2)).await.expect("subscribe a");
    b.subscribe(RoomId(2)).await.expect("subscribe b");
    a.publish(message_event(2, 1)).await.expect("publish");
    assert_eq!(
        rooms_and_seqs(&sink_b.wait_for(1).await),
        vec![(2, Some(1))]
    );
    // b's marker reaches a after a's own event would have.
    b.publish(message_event(2, 2))
        .await
        .expect("publish marker");
    assert_eq!(
        rooms_and_seqs(&sink_a.wait_for(1).await),
        vec![(2, Some(2))]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rooms_and_seqs(&sink_a.events()), vec![(2, Some(2))]);
    assert_eq!(rooms_and_seqs(&sink_b.events()), vec![(2, Some(1))]);
}

/// Events of rooms that are not subscribed are not delivered, and
/// unsubscribing stops delivery.
pub async fn ignores_unsubscribed_rooms(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(1)).await.expect("subscribe");
    a.publish(message_event(2, 1)).await.expect("publish");
    a.publish(message_event(1, 1)).await.expect("publish");
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].room, RoomId(1));

    b.unsubscribe(RoomId(1)).await.expect("unsubscribe");
    a.publish(message_event(1, 2)).await.expect("publish");
    // A marker on a still-subscribed room proves the earlier publish had time
    // to arrive had it been delivered.
    b.subscribe(RoomId(3)).await.expect("subscribe");
    a.publish(message_event(3, 1)).await.expect("publish");
    let got = sink.wait_for(2).await;
    assert_eq!(rooms_and_seqs(&got), vec![(1, Some(1)), (3, Some(1))]);
}

/// Subscribing twice delivers once; one unsubscribe ends it.
pub async fn subscribe_is_idempotent(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(1)).await.expect("subscribe");
    b.subscribe(RoomId(1)).await.expect("subscribe again");
    a.publish(message_event(1, 1)).await.expect("publish");
    b.subscribe(RoomId(9)).await.expect("subscribe marker room");
    a.publish(message_event(9, 1))
        .await
        .expect("publish marker");
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2, "one delivery per event: {got:?}");
}

/// One publisher's events for a room arrive in publish order, whether
/// published one by one or together.
pub async fn keeps_publish_order(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(1)).await.expect("subscribe");
    for seq in 1..=200 {
        a.publish(message_event(1, seq)).await.expect("publish");
    }
    for chunk in (201..=600).collect::<Vec<_>>().chunks(100) {
        let events: Vec<_> = chunk.iter().map(|seq| message_event(1, *seq)).collect();
        a.publish_many(&events).await.expect("publish many");
    }
    let got = sink.wait_for(600).await;
    let seqs: Vec<_> = got.iter().filter_map(|e| e.seq()).collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
}

/// Every kind of event survives the trip with its fields.
pub async fn carries_every_kind(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(4)).await.expect("subscribe");
    let frame = |i: usize| text(format!(r#"{{"n":{i},"text":"é ✓"}}"#));
    let kinds = [
        EventKind::Timeline {
            seq: 1,
            frame: frame(0),
            leaves: None,
        },
        EventKind::Signal { frame: frame(1) },
        EventKind::RoomDeleted { frame: frame(2) },
        EventKind::Timeline {
            seq: 2,
            frame: frame(3),
            leaves: Some(chat_core::UserId(42)),
        },
    ];
    let mut sent = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Arc::new(Event {
            room: RoomId(4),
            kind,
            origin: (i % 2 == 0).then_some(ConnId(i as u64 + 100)),
        });
        a.publish(event.clone()).await.expect("publish");
        sent.push(event);
    }
    let got = sink.wait_for(sent.len()).await;
    let got: Vec<Event> = got.iter().map(|e| (**e).clone()).collect();
    let sent: Vec<Event> = sent.iter().map(|e| (**e).clone()).collect();
    assert_eq!(got, sent);
}

/// The trait's contract after a quiet spell: once `subscribe` returns, the
/// very next event another instance publishes is delivered.
pub async fn subscribe_after_quiet_period_delivers(bus: &dyn Bus) {
    let (a, sink_a) = instance(bus).await;
    let (b, sink_b) = instance(bus).await;
    // Nothing is published for a while: no earlier traffic can have made a
    // subscription ready by chance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.subscribe(RoomId(11)).await.expect("subscribe b");
    a.publish(message_event(11, 1)).await.expect("publish");
    assert_eq!(
        rooms_and_seqs(&sink_b.wait_for(1).await),
        vec![(11, Some(1))]
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    a.subscribe(RoomId(11)).await.expect("subscribe a");
    b.publish(message_event(11, 2)).await.expect("publish");
    assert_eq!(
        rooms_and_seqs(&sink_a.wait_for(1).await),
        vec![(11, Some(2))]
    );
}

/// Two instances publishing to one room at the same time: each sees every
/// event of the other, once, in the other's order, and none of its own.
pub async fn two_instances_see_each_other_in_publish_order(bus: &dyn Bus) {
    const EACH: i64 = 100;
    let (a, sink_a) = instance(bus).await;
    let (b, sink_b) = instance(bus).await;
    a.subscribe(RoomId(5)).await.expect("subscribe a");
    b.subscribe(RoomId(5)).await.expect("subscribe b");
    let publish_all = |broker: Arc<dyn Broker>, origin: u64| async move {
        for seq in 1..=EACH {
            broker
                .publish(message_from(origin, 5, seq))
                .await
                .expect("publish");
        }
        // A marker after everything else: the events arrive in order, so
        // once it is in, every one is.
        broker
            .publish(message_from(origin, 5, EACH + 1))
            .await
            .expect("publish marker");
    };
    tokio::join!(publish_all(a.clone(), 1), publish_all(b.clone(), 2));
    for (name, sink, other) in [("a", &sink_a, 2), ("b", &sink_b, 1)] {
        let got = sink.wait_for(EACH as usize + 1).await;
        let seqs: Vec<i64> = got
            .iter()
            .filter(|e| e.origin == Some(ConnId(other)))
            .filter_map(|e| e.seq())
            .collect();
        assert_eq!(
            seqs,
            (1..=EACH + 1).collect::<Vec<_>>(),
            "{name} sees publisher {other}'s events once each, in order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            sink.events().len(),
            EACH as usize + 1,
            "{name}: only the other's"
        );
    }
}

/// Unsubscribing one room leaves this instance's other rooms, and another
/// instance's subscription to the same room, alone.
pub async fn unsubscribe_leaves_other_rooms(bus: &dyn Bus) {
    let (a, sink_a) = instance(bus).await;
    let (b, sink_b) = instance(bus).await;
    let (publisher, _) = instance(bus).await;
    for room in [21, 22, 23] {
        a.subscribe(RoomId(room)).await.expect("subscribe a");
    }
    b.subscribe(RoomId(22)).await.expect("subscribe b");
    a.unsubscribe(RoomId(22)).await.expect("unsubscribe");
    for room in [21, 22, 23] {
        publisher
            .publish(message_event(room, 1))
            .await
            .expect("publish");
    }
    // A marker on a still-subscribed room, published last, proves that the
    // room-22 event had time to arrive at a had it been delivered.
    publisher
        .publish(message_event(23, 2))
        .await
        .expect("publish marker");
    assert_eq!(
        rooms_and_seqs(&sink_a.wait_for(3).await),
        vec![(21, Some(1)), (23, Some(1)), (23, Some(2))]
    );
    assert_eq!(
        rooms_and_seqs(&sink_b.wait_for(1).await),
        vec![(22, Some(1))]
    );
}

/// A 64 KiB frame (multi-byte characters included) arrives byte for byte.
pub async fn large_frame_arrives_intact(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    b.subscribe(RoomId(6)).await.expect("subscribe");
    let mut body = String::new();
    let mut i = 0u32;
    while body.len() < 64 * 1024 {
        // ASCII, two-, three- and four-byte characters, so that a cut in the
        // wrong place cannot go unnoticed.
        body.push_str(&format!("{i} é ✓ 🦀 "));
        i += 1;
    }
    let frame = text(format!(r#"{{"type":"message","text":"{body}"}}"#));
    assert!(frame.len() >= 64 * 1024);
    let sent = Arc::new(Event {
        room: RoomId(6),
        origin: Some(ConnId(u64::MAX)),
        kind: EventKind::Timeline {
            seq: 1,
            frame,
            leaves: None,
        },
    });
    a.publish(sent.clone()).await.expect("publish");
    let got = sink.wait_for(1).await;
    assert_eq!(*got[0], *sent);
}

/// A healthy broker says so, before and after carrying events, and knows
/// it has peers.
pub async fn state_is_ok_when_healthy(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, sink) = instance(bus).await;
    assert_eq!(a.state(), ComponentState::Ok);
    assert!(a.has_peers());
    b.subscribe(RoomId(8)).await.expect("subscribe");
    a.publish(message_event(8, 1)).await.expect("publish");
    sink.wait_for(1).await;
    assert_eq!(a.state(), ComponentState::Ok);
    assert_eq!(b.state(), ComponentState::Ok);
}

/// A user is online in a room from their first socket on any instance to
/// their last: only the first `present` and the last `absent` say so, and
/// every instance lists them meanwhile.
pub async fn presence_counts_a_user_once_across_instances(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, _) = instance(bus).await;
    let (room, other_room) = (RoomId(31), RoomId(32));
    let (ann, bob) = (UserId(1), UserId(2));
    assert!(
        a.present(room, ann).await.expect("present"),
        "first anywhere"
    );
    assert!(
        !b.present(room, ann).await.expect("present"),
        "already on a"
    );
    assert!(b.present(room, bob).await.expect("present"));
    assert!(
        a.present(other_room, bob).await.expect("present"),
        "rooms apart"
    );
    for broker in [&a, &b] {
        assert_eq!(broker.online(room).await.expect("online"), vec![ann, bob]);
    }
    assert!(!a.absent(room, ann).await.expect("absent"), "still on b");
    assert_eq!(a.online(room).await.expect("online"), vec![ann, bob]);
    assert!(
        b.absent(room, ann).await.expect("absent"),
        "gone everywhere"
    );
    assert_eq!(a.online(room).await.expect("online"), vec![bob]);
    assert!(b.absent(room, bob).await.expect("absent"));
    assert_eq!(b.online(room).await.expect("online"), Vec::<UserId>::new());
    assert_eq!(b.online(other_room).await.expect("online"), vec![bob]);
    // A refresh of live entries reports nobody gone.
    let gone = a
        .refresh_presence(&[(other_room, vec![bob])])
        .await
        .expect("refresh");
    assert_eq!(gone, Vec::new());
    assert_eq!(a.online(other_room).await.expect("online"), vec![bob]);
}

/// Of instances racing to announce one user, exactly one is first, and
/// exactly one is last.
pub async fn presence_races_have_one_winner(bus: &dyn Bus) {
    let mut brokers = Vec::new();
    for _ in 0..4 {
        brokers.push(instance(bus).await.0);
    }
    let (room, ann) = (RoomId(33), UserId(5));
    let firsts = futures_util::future::join_all(brokers.iter().map(|b| b.present(room, ann))).await;
    let firsts = firsts
        .into_iter()
        .map(|r| r.expect("present"))
        .filter(|f| *f);
    assert_eq!(firsts.count(), 1);
    let lasts = futures_util::future::join_all(brokers.iter().map(|b| b.absent(room, ann))).await;
    let lasts = lasts.into_iter().map(|r| r.expect("absent")).filter(|l| *l);
    assert_eq!(lasts.count(), 1);
}

/// A rate-limit bucket is one bucket across instances: what one instance
/// takes, the other cannot; a look takes nothing; cells come back.
pub async fn rate_buckets_are_shared(bus: &dyn Bus) {
    let (a, _) = instance(bus).await;
    let (b, _) = instance(bus).await;
    let quota = Quota {
        burst: 3,
        interval: Duration::from_millis(400),
    };
    let key = "login:account:ann";
    for broker in [&a, &b, &a] {
        assert_eq!(
            broker
                .rate(key, quota, RateCheck::Take)
                .await
                .expect("rate"),
            None
        );
    }
    let wait = b
        .rate(key, quota, RateCheck::Peek)
        .await
        .expect("rate")
        .expect("empty after three takes");
    assert!(wait <= quota.interval, "{wait:?}");
    assert!(
        a.rate(key, quota, RateCheck::Take)
            .await
            .expect("rate")
            .is_some()
    );
    assert_eq!(
        a.rate("login:account:bob", quota, RateCheck::Take)
            .await
            .expect("rate"),
        None,
        "other keys have their own bucket"
    );
    // Looking does not take: after one interval exactly one cell is back.
    tokio::time::sleep(quota.interval + Duration::from_millis(50)).await;
    for _ in 0..3 {
        assert_eq!(
            b.rate(key, quota, RateCheck::Peek).await.expect("rate"),
            None
        );
    }
    assert_eq!(
        b.rate(key, quota, RateCheck::Take).await.expect("rate"),
        None
    );
    assert!(
        a.rate(key, quota, RateCheck::Take)
            .await
            .expect("rate")
            .is_some()
    );
}

/// Expands to one `#[tokio::test]` per conformance test. `$bus` is a
/// closure `|| async { impl Bus }`, called once per test, so that each test
/// gets a bus (key prefix, server) of its own.
#[macro_export]
macro_rules! broker_conformance_tests {
    ($bus:expr) => {
        $crate::broker_conformance_tests!(@tests $bus;
            delivers_to_subscribed_room,
            never_back_to_its_publisher,
            ignores_unsubscribed_rooms,
            subscribe_is_idempotent,
            keeps_publish_order,
            carries_every_kind,
            subscribe_after_quiet_period_delivers,
            two_instances_see_each_other_in_publish_order,
            unsubscribe_leaves_other_rooms,
            large_frame_arrives_intact,
            state_is_ok_when_healthy,
            presence_counts_a_user_once_across_instances,
            presence_races_have_one_winner,
            rate_buckets_are_shared,
        );
    };
    (@tests $bus:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let make = $bus;
                let bus = make().await;
                $crate::broker::conformance::$name(&bus).await;
            }
        )*
    };
}
