//! Local fan-out: which sockets of this instance listen to which room.
//!
//! The broker hands every event of a subscribed room to the hub once; the hub
//! puts an `Arc` of it on the queue of each local socket in that room. The
//! frame was serialized once by the publisher, so fan-out costs one refcount
//! and one queue push per socket.
//!
//! Queues are bounded. A socket whose queue is full is too slow to keep up:
//! it is flagged, closes with 4408, and its client resumes by `seq`. Nothing
//! is lost because storage holds every message.
//!
//! Messages reach sockets in seq order. Appends that commit together (group
//! commit), or on two instances, may be published in another order than
//! their seqs; a socket that saw seq n+2 before n+1 would read the gap from
//! storage, and a thousand sockets doing so at once would swamp it. So the
//! hub puts a room's messages back in order once, for all its sockets: one
//! that arrives ahead of its predecessor waits (at most [`REORDER_WAIT`])
//! for it. After that wait the gap is real (a publish was lost) and each
//! socket fills it from storage as before.
//!
//! The hub also keeps the broker subscribed to exactly the rooms that have
//! local sockets: subscribe on the first, unsubscribe after the last. And it
//! announces presence: a user is `online` in a room from their first socket
//! in it to their last (counted per instance; see ARCHITECTURE.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chat_core::frame::{PresenceStatus, ServerFrame};
use chat_core::{RoomId, Seq, UserId};
use tokio::sync::mpsc;
// The runtime's clock, so that timers and `held_since` agree (and tests can
// pause it).
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError, ConnId, Event, EventKind, EventSink};

/// A socket's place in a room.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub user: UserId,
    /// The socket's event queue.
    pub queue: mpsc::Sender<Arc<Event>>,
    /// Cancelled when the socket falls behind; the session then closes 4408.
    pub too_slow: CancellationToken,
}

/// The longest a message waits for the one before it. Long enough for the
/// callers of one group commit to publish (microseconds apart) and for two
/// instances' publishes to cross Redis; short enough to be a hiccup when a
/// publish really was lost.
pub const REORDER_WAIT: Duration = Duration::from_millis(50);

/// Messages held ahead of a gap beyond which the hub stops waiting.
const MAX_HELD: usize = 1024;

/// The rooms of this instance and their local sockets. It is the broker's
/// [`EventSink`].
#[derive(Debug)]
pub struct Fanout {
    // Each room's subscribers sit in an immutable slice that joins and leaves
    // replace: delivery holds the lock only to clone an Arc, never while
    // pushing to a thousand queues.
    rooms: Mutex<HashMap<RoomId, Arc<[Subscriber]>>>,
    // Per room, so that putting one room in order never waits on another.
    order: Mutex<HashMap<RoomId, Arc<Mutex<Order>>>>,
    // For the timers that release held messages.
    me: Weak<Fanout>,
}

/// A room's message order on this instance.
#[derive(Debug, Default)]
struct Order {
    /// The seq expected next; unknown until the room's first message here.
    next: Option<Seq>,
    /// Messages that arrived ahead of `next`, by seq.
    held: BTreeMap<Seq, Arc<Event>>,
    /// When the oldest message in `held` started waiting.
    held_since: Option<Instant>,
    /// A release timer is running for `held`.
    timer: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fanout {
    /// An empty fan-out.
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            rooms: Mutex::default(),
            order: Mutex::default(),
            me: me.clone(),
        })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Arc<[Subscriber]>>> {
        lock(&self.rooms)
    }

    fn subscribers(&self, room: RoomId) -> Option<Arc<[Subscriber]>> {
        self.rooms().get(&room).cloned()
    }

    fn has_subscribers(&self, room: RoomId) -> bool {
        self.rooms().contains_key(&room)
    }

    /// Adds a socket to a room. `None` if it was there already, else
    /// whether it is its user's first socket in the room here.
    fn add(&self, room: RoomId, sub: Subscriber) -> Option<bool> {
        let mut rooms = self.rooms();
        let current = rooms.get(&room).map(|s| &s[..]).unwrap_or(&[]);
        if current.iter().any(|s| s.conn == sub.conn) {
            return None;
        }
        let first = !current.iter().any(|s| s.user == sub.user);
        let next: Arc<[Subscriber]> = current
            .iter()
            .cloned()
            .chain(std::iter::once(sub))
            .collect();
        rooms.insert(room, next);
        Some(first)
    }

    /// Removes a socket from a room. `None` if it was not there, else its
    /// user and whether that was the user's last socket in the room here.
    fn remove(&self, room: RoomId, conn: ConnId) -> Option<(UserId, bool)> {
        let mut rooms = self.rooms();
        let current = rooms.get(&room)?;
        let user = current.iter().find(|s| s.conn == conn)?.user;
        let next: Arc<[Subscriber]> = current.iter().filter(|s| s.conn != conn).cloned().collect();
        let last = !next.iter().any(|s| s.user == user);
        if next.is_empty() {
            rooms.remove(&room);
            // Whoever joins later starts from storage; nothing to keep.
            lock(&self.order).remove(&room);
        } else {
            rooms.insert(room, next);
        }
        Some((user, last))
    }

    /// Users with at least one socket in the room on this instance, by id.
    pub fn online_users(&self, room: RoomId) -> Vec<UserId> {
        let mut users: Vec<UserId> = self
            .subscribers(room)
            .map_or_else(Vec::new, |s| s.iter().map(|s| s.user).collect());
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Number of sockets in a room on this instance.
    pub fn local_sockets(&self, room: RoomId) -> usize {
        self.subscribers(room).map_or(0, |s| s.len())
    }
}

impl Fanout {
    /// Pushes an event onto the queue of every socket of its room.
    fn push(&self, event: Arc<Event>) {
        let Some(subscribers) = self.subscribers(event.room) else {
            return;
        };
        let mut delivered = 0u64;
        for sub in subscribers.iter() {
            match sub.queue.try_send(event.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !sub.too_slow.is_cancelled() {
                        tracing::info!(conn = sub.conn.0, user = %sub.user, room = %event.room,
                            "socket queue full, closing it as too slow");
                        sub.too_slow.cancel();
                        metrics::counter!(crate::metrics::SLOW_SOCKETS).increment(1);
                    }
                }
                // The session is ending and will leave the room itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        metrics::counter!(crate::metrics::DELIVERIES).increment(delivered);
    }

    fn order_of(&self, room: RoomId) -> Arc<Mutex<Order>> {
        lock(&self.order).entry(room).or_default().clone()
    }

    /// Delivers a message in seq order: at once if it is the next one (and
    /// then whatever it was holding up), later if it came early.
    fn deliver_in_order(&self, event: Arc<Event>, seq: Seq) {
        let order = self.order_of(event.room);
        // Held through the pushes: two publishers of one room must not
        // overtake each other between deciding the order and pushing.
        let mut order = lock(&order);
        match order.next {
            Some(next) if seq > next => {
                let room = event.room;
                order.held.insert(seq, event);
                order.held_since.get_or_insert_with(Instant::now);
                if order.held.len() > MAX_HELD {
                    self.release(&mut order);
                } else if !order.timer {
                    order.timer = true;
                    self.release_later(room);
                }
            }
            // A late one (its gap was given up on) or a repeat: sockets
            // drop what they already have.
            Some(next) if seq < next => self.push(event),
            _ => {
                self.push(event);
                let mut next = seq + 1;
                let was_held = !order.held.is_empty();
                while let Some(event) = order.held.remove(&next) {
                    next += 1;
                    self.push(event);
                }
                order.next = Some(next);
                // What is still held waits for a newer gap: its wait starts
                // now.
                if order.held.is_empty() {
                    order.held_since = None;
                } else if was_held {
                    order.held_since = Some(Instant::now());
                }
            }
        }
    }

    /// Gives up waiting: delivers everything held, in seq order. Sockets
    /// fill the gaps from storage.
    fn release(&self, order: &mut Order) {
        if !order.held.is_empty() {
            metrics::counter!(crate::metrics::REORDER_GAPS).increment(1);
        }
        order.held_since = None;
        for (seq, event) in std::mem::take(&mut order.held) {
            order.next = Some(seq + 1);
            self.push(event);
        }
    }

    /// Releases the room's held messages once the oldest has waited
    /// [`REORDER_WAIT`]. The held set changes while the timer sleeps (its
    /// gap filled, a newer one opened), so the timer goes by `held_since`
    /// when it wakes, not by when it was started: a message held a moment
    /// ago is not given up on because an older, filled gap's timer fired.
    fn release_later(&self, room: RoomId) {
        let me = self.me.clone();
        // `Some(deadline)`: sleep until then and look again.
        let check = move || -> Option<Instant> {
            let fanout = me.upgrade()?;
            // Gone when the room's last socket left meanwhile.
            let order = lock(&fanout.order).get(&room).cloned()?;
            let mut order = lock(&order);
            let due = order.held_since.map(|since| since + REORDER_WAIT);
            match due {
                Some(due) if due > Instant::now() => Some(due),
                _ => {
                    order.timer = false;
                    fanout.release(&mut order);
                    None
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let mut deadline = Instant::now() + REORDER_WAIT;
                    loop {
                        tokio::time::sleep_until(deadline).await;
                        match check() {
                            Some(next) => deadline = next,
                            None => return,
                        }
                    }
                });
            }
            // No runtime to wait on: better early than never.
            Err(_) => {
                if let Some(order) = lock(&self.order).get(&room).cloned() {
                    let mut order = lock(&order);
                    order.timer = false;
                    self.release(&mut order);
                }
            }
        }
    }
}

impl EventSink for Fanout {
    fn deliver(&self, event: Arc<Event>) {
        if !self.has_subscribers(event.room) {
            return;
        }
        match (&event.kind, event.seq) {
            (EventKind::Message, Some(seq)) => self.deliver_in_order(event, seq),
            _ => self.push(event),
        }
    }

    fn resync(&self) {
        let rooms: Vec<RoomId> = self.rooms().keys().copied().collect();
        tracing::info!(
            rooms = rooms.len(),
            "broker reconnected, catching every room up from storage"
        );
        for room in rooms {
            // What was held waits for nothing now: every socket catches up.
            let order = lock(&self.order).remove(&room);
            if let Some(order) = order {
                self.release(&mut lock(&order));
            }
            self.push(Arc::new(Event {
                room,
                kind: EventKind::Resync,
                seq: None,
                origin: None,
                frame: axum::extract::ws::Utf8Bytes::from_static(""),
            }));
        }
    }
}

/// Local sockets per room plus the broker subscriptions that feed them.
pub struct Hub {
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    // Serializes subscribe/unsubscribe decisions so that a last-leave and a
    // first-join racing on one room cannot leave the broker unsubscribed
    // while a socket listens. Guards the set of rooms the broker has.
    subscribed: tokio::sync::Mutex<HashSet<RoomId>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("fanout", &self.fanout)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over `broker`, which must deliver to `fanout`.
    pub fn new(fanout: Arc<Fanout>, broker: Arc<dyn Broker>) -> Self {
        Self {
            fanout,
            broker,
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
        }
    }

    /// The broker events go out through.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The local fan-out.
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// Adds a socket to a room. When this returns `Ok`, every event published
    /// to the room from now on reaches the socket's queue. On a broker error
    /// the socket is not added. A user's first socket in the room announces
    /// them `online`.
    pub async fn join(&self, room: RoomId, sub: Subscriber) -> Result<(), BrokerError> {
        let (conn, user) = (sub.conn, sub.user);
        let Some(first) = self.fanout.add(room, sub) else {
            return Ok(());
        };
        if let Err(e) = self.sync_broker(room).await {
            self.fanout.remove(room, conn);
            return Err(e);
        }
        if first {
            self.presence(room, user, PresenceStatus::Online, Some(conn))
                .await;
        }
        Ok(())
    }

    /// Removes a socket from a room. A user's last socket leaving announces
    /// them `offline`.
    pub async fn leave(&self, room: RoomId, conn: ConnId) {
        let Some((user, last)) = self.fanout.remove(room, conn) else {
            return;
        };
        if let Err(e) = self.sync_broker(room).await {
            tracing::warn!(%room, error = %e, "broker unsubscribe failed");
        }
        if last {
            self.presence(room, user, PresenceStatus::Offline, None)
                .await;
        }
    }

    async fn presence(
        &self,
        room: RoomId,
        user: UserId,
        status: PresenceStatus,
        origin: Option<ConnId>,
    ) {
        let frame = ServerFrame::Presence { room, user, status };
        if let Err(e) = self.publish(Event::notice(room, origin, &frame)).await {
            tracing::warn!(%room, %user, error = %e, "presence publish failed");
        }
    }

    /// Publishes an event to every instance's sockets in its room. If the
    /// broker cannot take it, this instance's sockets still get it (other
    /// instances catch up from storage when the broker is back); the error
    /// is returned for the caller to log.
    pub async fn publish(&self, event: Event) -> Result<(), BrokerError> {
        let event = Arc::new(event);
        match self.broker.publish(event.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fanout.deliver(event);
                Err(e)
            }
        }
    }

    async fn sync_broker(&self, room: RoomId) -> Result<(), BrokerError> {
        let mut subscribed = self.subscribed.lock().await;
        let wanted = self.fanout.has_subscribers(room);
        let have = subscribed.contains(&room);
        if wanted && !have {
            self.broker.subscribe(room).await?;
            subscribed.insert(room);
        } else if !wanted && have {
            self.broker.unsubscribe(room).await?;
            subscribed.remove(&room);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Utf8Bytes;

    use super::*;
    use crate::broker::local::LocalBroker;

    fn hub() -> Hub {
        let fanout = Fanout::new();
        let broker = Arc::new(LocalBroker::new(fanout.clone()));
        Hub::new(fanout, broker)
    }

    fn subscriber(conn: u64, queue: usize) -> (Subscriber, mpsc::Receiver<Arc<Event>>) {
        let (tx, rx) = mpsc::channel(queue);
        let sub = Subscriber {
            conn: ConnId(conn),
            user: UserId(conn as i64),
            queue: tx,
            too_slow: CancellationToken::new(),
        };
        (sub, rx)
    }

    /// The next message event, skipping presence notices.
    async fn next_message(rx: &mut mpsc::Receiver<Arc<Event>>) -> Option<i64> {
        loop {
            let e = rx.recv().await?;
            if e.kind == EventKind::Message {
                return e.seq;
            }
        }
    }

    fn messages_now(rx: &mut mpsc::Receiver<Arc<Event>>) -> Vec<i64> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if e.kind == EventKind::Message {
                out.extend(e.seq);
            }
        }
        out
    }

    fn event(room: i64, seq: i64) -> Event {
        Event {
            room: RoomId(room),
            kind: EventKind::Message,
            seq: Some(seq),
            origin: None,
            frame: Utf8Bytes::from_static("{}"),
        }
    }

    #[tokio::test]
    async fn events_reach_every_socket_of_the_room_only() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 8);
        let (b, mut rb) = subscriber(2, 8);
        let (c, mut rc) = subscriber(3, 8);
        hub.join(RoomId(1), a).await.expect("join");
        hub.join(RoomId(1), b).await.expect("join");
        hub.join(RoomId(2), c).await.expect("join");
        hub.publish(event(1, 1)).await.expect("publish");
        assert_eq!(next_message(&mut ra).await, Some(1));
        assert_eq!(next_message(&mut rb).await, Some(1));
        assert!(messages_now(&mut rc).is_empty());
    }

    #[tokio::test]
    async fn messages_published_out_of_order_reach_sockets_in_order() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        let (b, mut rb) = subscriber(2, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.join(RoomId(1), b).await.expect("join");
        for seq in [1, 3, 4, 2, 6, 5, 7] {
            hub.publish(event(1, seq)).await.expect("publish");
        }
        // Restored by the arrivals alone, without waiting.
        assert_eq!(messages_now(&mut ra), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(messages_now(&mut rb), [1, 2, 3, 4, 5, 6, 7]);
        // A repeat or a late one goes through; sockets drop what they have.
        hub.publish(event(1, 3)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [3]);
    }

    #[tokio::test]
    async fn a_gap_never_filled_is_given_up_after_the_wait() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.publish(event(1, 1)).await.expect("publish");
        hub.publish(event(1, 4)).await.expect("publish");
        hub.publish(event(1, 3)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [1]);
        // Seq 2 was lost: after the wait 3 and 4 go out in order, and the
        // socket reads 2 from storage.
        for seq in [3, 4] {
            let next = tokio::time::timeout(Duration::from_secs(10), next_message(&mut ra)).await;
            assert_eq!(next.ok().flatten(), Some(seq));
        }
        hub.publish(event(1, 5)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_filled_gaps_timer_does_not_give_up_on_a_newer_gap() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.publish(event(1, 1)).await.expect("publish");
        hub.publish(event(1, 3)).await.expect("publish");
        tokio::time::sleep(REORDER_WAIT * 4 / 5).await;
        hub.publish(event(1, 2)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [1, 2, 3]);
        // A new gap opens just before the first one's timer is due.
        hub.publish(event(1, 5)).await.expect("publish");
        tokio::time::sleep(REORDER_WAIT / 2).await;
        assert_eq!(messages_now(&mut ra), Vec::<i64>::new(), "5 waits for 4");
        hub.publish(event(1, 4)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [4, 5]);
        // And a gap that stays open is given up on a full wait after it
        // opened.
        hub.publish(event(1, 7)).await.expect("publish");
        tokio::time::sleep(REORDER_WAIT / 2).await;
        assert_eq!(messages_now(&mut ra), Vec::<i64>::new());
        tokio::time::sleep(REORDER_WAIT).await;
        assert_eq!(messages_now(&mut ra), [7]);
    }

    #[tokio::test]
    async fn rooms_are_ordered_independently() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        let (b, mut rb) = subscriber(2, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.join(RoomId(2), b).await.expect("join");
        hub.publish(event(1, 10)).await.expect("publish");
        hub.publish(event(1, 12)).await.expect("publish");
        hub.publish(event(2, 1)).await.expect("publish");
        hub.publish(event(2, 2)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [10]);
        assert_eq!(messages_now(&mut rb), [1, 2]);
        hub.publish(event(1, 11)).await.expect("publish");
        assert_eq!(messages_now(&mut ra), [11, 12]);
    }

    #[tokio::test]
    async fn last_leave_unsubscribes_the_broker() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 8);
        hub.join(RoomId(1), a.clone()).await.expect("join");
        hub.leave(RoomId(1), a.conn).await;
        assert_eq!(hub.fanout().local_sockets(RoomId(1)), 0);
        assert!(hub.subscribed.lock().await.is_empty());
        hub.publish(event(1, 1)).await.expect("publish");
        assert!(messages_now(&mut ra).is_empty());
    }

    #[tokio::test]
    async fn presence_follows_a_users_first_and_last_socket() {
        let hub = hub();
        let (watcher, mut rw) = subscriber(1, 16);
        hub.join(RoomId(1), watcher).await.expect("join");
        let (mut a1, _r1) = subscriber(2, 16);
        let (mut a2, _r2) = subscriber(3, 16);
        a1.user = UserId(50);
        a2.user = UserId(50);
        hub.join(RoomId(1), a1.clone()).await.expect("join");
        hub.join(RoomId(1), a2.clone()).await.expect("join");
        hub.leave(RoomId(1), a1.conn).await;
        hub.leave(RoomId(1), a2.conn).await;
        let mut seen = Vec::new();
        while let Ok(e) = rw.try_recv() {
            // The session skips notices its own socket caused.
            if e.origin != Some(ConnId(1)) {
                seen.push(e.frame.as_str().to_owned());
            }
        }
        // User 50 once online (two sockets) and once offline (after the
        // second leaves).
        assert_eq!(
            seen,
            vec![
                r#"{"type":"presence","room":1,"user":50,"status":"online"}"#,
                r#"{"type":"presence","room":1,"user":50,"status":"offline"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn resync_asks_every_socket_of_every_room_to_catch_up() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 8);
        let (b, mut rb) = subscriber(2, 8);
        hub.join(RoomId(1), a).await.expect("join");
        hub.join(RoomId(2), b).await.expect("join");
        hub.fanout().resync();
        let resyncs = |rx: &mut mpsc::Receiver<Arc<Event>>| {
            let mut rooms = Vec::new();
            while let Ok(e) = rx.try_recv() {
                if e.kind == EventKind::Resync {
                    rooms.push(e.room);
                }
            }
            rooms
        };
        assert_eq!(resyncs(&mut ra), vec![RoomId(1)]);
        assert_eq!(resyncs(&mut rb), vec![RoomId(2)]);
    }

    #[tokio::test]
    async fn a_full_queue_flags_the_socket_too_slow() {
        let hub = hub();
        // Room for the fast socket's own presence notice and two messages.
        let (slow, _keep) = subscriber(1, 3);
        let (fast, mut rf) = subscriber(2, 16);
        let flag = slow.too_slow.clone();
        hub.join(RoomId(1), slow).await.expect("join");
        hub.join(RoomId(1), fast).await.expect("join");
        for seq in 1..=3 {
            hub.publish(event(1, seq)).await.expect("publish");
        }
        assert!(flag.is_cancelled());
        for seq in 1..=3 {
            assert_eq!(next_message(&mut rf).await, Some(seq));
        }
    }
}
