//! Local fan-out: which sockets of this instance listen to which room, and
//! the one door every room event goes out through ([`Hub::publish`]).
//!
//! An event is handed to this instance's sockets directly, by whoever made
//! it: the storage committer for timeline events (right after their commit,
//! in seq order, before the senders hear back), the service for the rest.
//! The same event then goes to the broker for the other instances, through
//! an outbox that one task drains in order. The frame was serialized once,
//! so fan-out costs one refcount and one queue push per socket.
//!
//! Queues are bounded. A socket whose queue is full is too slow to keep up:
//! it is flagged, closes with 4408, and its client resumes by `seq`. Nothing
//! is lost because storage holds every timeline event.
//!
//! Timeline events reach sockets in seq order. On one instance they are
//! made in that order, so the hub only passes them on. Across instances
//! they are not: two instances commit to one room and each publishes over
//! Redis, so instance A may hear B's seq n+1 before its own n+2 but after
//! n+3, or B's n+1 after A's own n+2. This is the one place that puts them
//! back in order: an event that arrives ahead of its predecessor waits (at
//! most [`REORDER_WAIT`]) for it; after that wait the gap is real (a publish
//! was lost) and each socket reads it from storage.
//!
//! The hub also keeps the broker subscribed to exactly the rooms that have
//! local sockets: subscribe on the first, unsubscribe after the last. And it
//! announces presence: a user is `online` in a room from their first socket
//! in it, on any instance, to their last. The broker counts instances
//! ([`Broker::present`]); the hub counts sockets here and refreshes its
//! entries every [`PRESENCE_REFRESH`], announcing `offline` the users a dead
//! instance left behind. While the broker is unreachable, presence falls
//! back to this instance's own count.

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

use crate::broker::{Broker, BrokerError, EventSink, PRESENCE_REFRESH};
use crate::event::{ConnId, Event};

/// What a socket's queue carries.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event of one of its rooms.
    Event(Arc<Event>),
    /// Events of the room may have been lost on their way from another
    /// instance (the broker reconnected): read what is above the cursor
    /// from storage.
    CatchUp(RoomId),
}

/// A socket's place in a room.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub user: UserId,
    /// The socket's event queue.
    pub queue: mpsc::Sender<Delivery>,
    /// Cancelled when the socket falls behind; the session then closes 4408.
    pub too_slow: CancellationToken,
}

/// The longest a timeline event from another instance waits for the one
/// before it. Long enough for two instances' publishes to cross Redis;
/// short enough to be a hiccup when a publish really was lost.
pub const REORDER_WAIT: Duration = Duration::from_millis(50);

/// Events held ahead of a gap beyond which the hub stops waiting.
const MAX_HELD: usize = 1024;

/// The rooms of this instance and their local sockets. It is the broker's
/// [`EventSink`] for other instances' events, and takes this instance's own
/// from [`Hub::publish`].
#[derive(Debug)]
pub struct Fanout {
    // Each room's subscribers sit in an immutable slice that joins and leaves
    // replace: delivery holds the lock only to clone an Arc, never while
    // pushing to a thousand queues.
    rooms: Mutex<HashMap<RoomId, Arc<[Subscriber]>>>,
    // Per room, so that putting one room in order never waits on another.
    // Held through the pushes of an event: two publishers of one room (the
    // committer, the broker's task) must not overtake each other between
    // deciding the order and pushing.
    order: Mutex<HashMap<RoomId, Arc<Mutex<Order>>>>,
    // For the timers that release held messages.
    me: Weak<Fanout>,
}

/// A room's timeline order on this instance.
#[derive(Debug, Default)]
struct Order {
    /// The seq expected next; unknown until the room's first event here.
    next: Option<Seq>,
    /// Events that arrived ahead of `next`, by seq.
    held: BTreeMap<Seq, Arc<Event>>,
    /// When the oldest event in `held` started waiting.
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

    /// Tells the room's order where a socket that just caught up from
    /// storage stands: if this instance has seen no event of the room yet,
    /// the next one is `delivered + 1`. Without it the first event to
    /// arrive would set the order, and an older one from another instance,
    /// arriving after it, would make every socket read a gap.
    pub fn anchor(&self, room: RoomId, delivered: Seq) {
        let order = self.order_of(room);
        let mut order = lock(&order);
        if order.next.is_none() {
            order.next = Some(delivered + 1);
        }
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

    /// Every room with sockets here and its users, for the presence
    /// refresh.
    fn presence(&self) -> Vec<(RoomId, Vec<UserId>)> {
        let rooms: Vec<(RoomId, Arc<[Subscriber]>)> =
            self.rooms().iter().map(|(r, s)| (*r, s.clone())).collect();
        rooms
            .into_iter()
            .filter(|(room, _)| has_presence(*room))
            .map(|(room, subs)| {
                let mut users: Vec<UserId> = subs.iter().map(|s| s.user).collect();
                users.sort_unstable();
                users.dedup();
                (room, users)
            })
            .collect()
    }

    /// Number of sockets in a room on this instance.
    #[cfg(test)]
    pub fn local_sockets(&self, room: RoomId) -> usize {
        self.subscribers(room).map_or(0, |s| s.len())
    }
}

impl Fanout {
    /// Pushes an event onto the queue of every socket of its room.
    fn push(&self, event: Arc<Event>) {
        let room = event.room;
        self.push_all(room, Delivery::Event(event));
    }

    fn push_all(&self, room: RoomId, delivery: Delivery) {
        let Some(subscribers) = self.subscribers(room) else {
            return;
        };
        let mut delivered = 0u64;
        for sub in subscribers.iter() {
            match sub.queue.try_send(delivery.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !sub.too_slow.is_cancelled() {
                        tracing::info!(conn = sub.conn.0, user = %sub.user, %room,
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

    /// Hands an event to the room's sockets: a timeline event in seq
    /// order, anything else at once.
    fn dispatch(&self, event: Arc<Event>) {
        if !self.has_subscribers(event.room) {
            return;
        }
        match event.seq() {
            Some(seq) => self.deliver_in_order(event, seq),
            None => self.push(event),
        }
    }

    /// Delivers a timeline event in seq order: at once if it is the next
    /// one (and then whatever it was holding up), later if it came early.
    fn deliver_in_order(&self, event: Arc<Event>, seq: Seq) {
        let order = self.order_of(event.room);
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
        self.dispatch(event);
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
            self.push_all(room, Delivery::CatchUp(room));
        }
    }
}

/// Events queued for the broker before `publish` drops them. A burst of
/// this many while Redis is slow is survivable; past it, other instances
/// read from storage what they missed.
const OUTBOX: usize = 65_536;

/// Events handed to the broker in one call (one Redis pipeline).
const PUBLISH_BATCH: usize = 512;

/// Local sockets per room plus the broker subscriptions that feed them.
pub struct Hub {
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    /// To the task that publishes, in order, what other instances need.
    outbox: mpsc::Sender<Arc<Event>>,
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
    /// A hub over `broker`, which must deliver to `fanout`. Starts the
    /// outbox's task on the current runtime.
    pub fn new(fanout: Arc<Fanout>, broker: Arc<dyn Broker>) -> Self {
        let (outbox, queued) = mpsc::channel(OUTBOX);
        tokio::spawn(publish_loop(broker.clone(), queued));
        tokio::spawn(refresh_loop(
            Arc::downgrade(&fanout),
            Arc::downgrade(&broker),
            outbox.downgrade(),
        ));
        Self {
            fanout,
            broker,
            outbox,
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
        if first && has_presence(room) {
            let anywhere = self.broker.present(room, user).await.unwrap_or_else(|e| {
                tracing::warn!(%room, error = %e, "presence not shared, announcing from this instance");
                true
            });
            if anywhere {
                self.presence(room, user, PresenceStatus::Online, Some(conn));
            }
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
        if last && has_presence(room) {
            let anywhere = self.broker.absent(room, user).await.unwrap_or_else(|e| {
                tracing::warn!(%room, error = %e, "presence not shared, announcing from this instance");
                true
            });
            if anywhere {
                self.presence(room, user, PresenceStatus::Offline, None);
            }
        }
    }

    fn presence(&self, room: RoomId, user: UserId, status: PresenceStatus, origin: Option<ConnId>) {
        let frame = ServerFrame::Presence { room, user, status };
        self.publish(Event::signal(room, origin, &frame));
    }

    /// Users with a socket in the room on any instance, by id. While the
    /// broker is unreachable, those of this instance; a user whose entry
    /// the broker lost (joined during an outage) is listed from here until
    /// the next refresh puts it back.
    pub async fn online(&self, room: RoomId) -> Vec<UserId> {
        let local = self.fanout.online_users(room);
        match self.broker.online(room).await {
            Ok(mut users) => {
                users.extend(local);
                users.sort_unstable();
                users.dedup();
                users
            }
            Err(e) => {
                tracing::debug!(%room, error = %e, "online list from this instance only");
                local
            }
        }
    }

    /// Hands an event to this instance's sockets in the room, then queues
    /// it for the other instances. Never waits: the committer calls this
    /// from its own thread between a commit and its answers. If the outbox
    /// is full the other instances miss the event (counted in
    /// `chat_broker_dropped_total`) and read it from storage.
    pub fn publish(&self, event: Event) {
        send_out(&self.fanout, &*self.broker, &self.outbox, event);
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

/// Rooms 0 and below are the server's own channels (the account channel),
/// whose listeners are nobody to announce.
fn has_presence(room: RoomId) -> bool {
    room.0 > 0
}

/// Keeps this instance's presence entries alive and announces `offline` the
/// users whose entries expired (their instance died). Ends with the hub.
async fn refresh_loop(
    fanout: Weak<Fanout>,
    broker: Weak<dyn Broker>,
    outbox: mpsc::WeakSender<Arc<Event>>,
) {
    let mut ticks = tokio::time::interval(PRESENCE_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (Some(fanout), Some(broker), Some(outbox)) =
            (fanout.upgrade(), broker.upgrade(), outbox.upgrade())
        else {
            return;
        };
        let here = fanout.presence();
        if here.is_empty() {
            continue;
        }
        let gone = match broker.refresh_presence(&here).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::debug!(error = %e, "presence refresh failed");
                continue;
            }
        };
        for (room, user) in gone {
            let frame = ServerFrame::Presence {
                room,
                user,
                status: PresenceStatus::Offline,
            };
            send_out(
                &fanout,
                &*broker,
                &outbox,
                Event::signal(room, None, &frame),
            );
        }
    }
}

/// [`Hub::publish`], for the hub's own tasks too.
fn send_out(fanout: &Fanout, broker: &dyn Broker, outbox: &mpsc::Sender<Arc<Event>>, event: Event) {
    let event = Arc::new(event);
    fanout.dispatch(event.clone());
    if !broker.has_peers() {
        return;
    }
    if let Err(mpsc::error::TrySendError::Full(event)) = outbox.try_send(event) {
        tracing::warn!(room = %event.room, "broker outbox full, event not published");
        metrics::counter!(crate::metrics::BROKER_DROPPED).increment(1);
    }
}

/// Publishes what the outbox holds, in its order, as few calls as the
/// backlog allows. Ends with the hub.
async fn publish_loop(broker: Arc<dyn Broker>, mut queued: mpsc::Receiver<Arc<Event>>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while queued.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        if let Err(e) = broker.publish_many(&batch).await {
            // Best effort: the other instances' sockets read the gap from
            // storage (their hub gives up waiting, or the broker's
            // reconnect makes them catch up).
            tracing::warn!(events = batch.len(), error = %e, "broker publish failed");
            metrics::counter!(crate::metrics::BROKER_ERRORS).increment(1);
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::local::LocalBroker;

    fn hub() -> Hub {
        let fanout = Fanout::new();
        let broker = Arc::new(LocalBroker::new(fanout.clone()));
        Hub::new(fanout, broker)
    }

    fn subscriber(conn: u64, queue: usize) -> (Subscriber, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(queue);
        let sub = Subscriber {
            conn: ConnId(conn),
            user: UserId(conn as i64),
            queue: tx,
            too_slow: CancellationToken::new(),
        };
        (sub, rx)
    }

    /// The next timeline event's seq, skipping presence signals.
    async fn next_message(rx: &mut mpsc::Receiver<Delivery>) -> Option<i64> {
        loop {
            if let Delivery::Event(e) = rx.recv().await?
                && let Some(seq) = e.seq()
            {
                return Some(seq);
            }
        }
    }

    fn messages_now(rx: &mut mpsc::Receiver<Delivery>) -> Vec<i64> {
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            if let Delivery::Event(e) = d {
                out.extend(e.seq());
            }
        }
        out
    }

    fn event(room: i64, seq: i64) -> Event {
        Event::timeline(RoomId(room), seq, None, &ServerFrame::Pong, None)
    }

    /// Another instance's event, as the broker hands it over.
    fn remote(hub: &Hub, room: i64, seq: i64) {
        hub.fanout().deliver(Arc::new(event(room, seq)));
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
        hub.publish(event(1, 1));
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
            remote(&hub, 1, seq);
        }
        // Restored by the arrivals alone, without waiting.
        assert_eq!(messages_now(&mut ra), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(messages_now(&mut rb), [1, 2, 3, 4, 5, 6, 7]);
        // A repeat or a late one goes through; sockets drop what they have.
        remote(&hub, 1, 3);
        assert_eq!(messages_now(&mut ra), [3]);
    }

    #[tokio::test]
    async fn a_gap_never_filled_is_given_up_after_the_wait() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.publish(event(1, 1));
        remote(&hub, 1, 4);
        remote(&hub, 1, 3);
        assert_eq!(messages_now(&mut ra), [1]);
        // Seq 2 was lost: after the wait 3 and 4 go out in order, and the
        // socket reads 2 from storage.
        for seq in [3, 4] {
            let next = tokio::time::timeout(Duration::from_secs(10), next_message(&mut ra)).await;
            assert_eq!(next.ok().flatten(), Some(seq));
        }
        remote(&hub, 1, 5);
        assert_eq!(messages_now(&mut ra), [5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_filled_gaps_timer_does_not_give_up_on_a_newer_gap() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.publish(event(1, 1));
        remote(&hub, 1, 3);
        tokio::time::sleep(REORDER_WAIT * 4 / 5).await;
        remote(&hub, 1, 2);
        assert_eq!(messages_now(&mut ra), [1, 2, 3]);
        // A new gap opens just before the first one's timer is due.
        remote(&hub, 1, 5);
        tokio::time::sleep(REORDER_WAIT / 2).await;
        assert_eq!(messages_now(&mut ra), Vec::<i64>::new(), "5 waits for 4");
        remote(&hub, 1, 4);
        assert_eq!(messages_now(&mut ra), [4, 5]);
        // And a gap that stays open is given up on a full wait after it
        // opened.
        remote(&hub, 1, 7);
        tokio::time::sleep(REORDER_WAIT / 2).await;
        assert_eq!(messages_now(&mut ra), Vec::<i64>::new());
        tokio::time::sleep(REORDER_WAIT).await;
        assert_eq!(messages_now(&mut ra), [7]);
    }

    /// A socket that caught up to 3 anchors the order: another instance's
    /// 5, arriving before its 4, waits for it instead of starting the order
    /// at 5 (which would make every socket read 4 from storage).
    #[tokio::test]
    async fn an_anchored_room_waits_for_the_next_seq() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.fanout().anchor(RoomId(1), 3);
        remote(&hub, 1, 5);
        assert_eq!(messages_now(&mut ra), Vec::<i64>::new(), "5 waits for 4");
        remote(&hub, 1, 4);
        assert_eq!(messages_now(&mut ra), [4, 5]);
        // Anchoring again changes nothing once the order is known.
        hub.fanout().anchor(RoomId(1), 1);
        remote(&hub, 1, 6);
        assert_eq!(messages_now(&mut ra), [6]);
    }

    #[tokio::test]
    async fn rooms_are_ordered_independently() {
        let hub = hub();
        let (a, mut ra) = subscriber(1, 64);
        let (b, mut rb) = subscriber(2, 64);
        hub.join(RoomId(1), a).await.expect("join");
        hub.join(RoomId(2), b).await.expect("join");
        remote(&hub, 1, 10);
        remote(&hub, 1, 12);
        remote(&hub, 2, 1);
        remote(&hub, 2, 2);
        assert_eq!(messages_now(&mut ra), [10]);
        assert_eq!(messages_now(&mut rb), [1, 2]);
        remote(&hub, 1, 11);
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
        hub.publish(event(1, 1));
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
            if let Delivery::Event(e) = e
                && e.origin != Some(ConnId(1))
            {
                seen.push(String::from_utf8_lossy(e.frame().bytes()).into_owned());
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
        let resyncs = |rx: &mut mpsc::Receiver<Delivery>| {
            let mut rooms = Vec::new();
            while let Ok(d) = rx.try_recv() {
                if let Delivery::CatchUp(room) = d {
                    rooms.push(room);
                }
            }
            rooms
        };
        assert_eq!(resyncs(&mut ra), vec![RoomId(1)]);
        assert_eq!(resyncs(&mut rb), vec![RoomId(2)]);
    }

    /// Two instances on one bus: each event reaches the publishing
    /// instance's sockets directly and the other's through the broker, once
    /// each, in order.
    #[tokio::test]
    async fn events_reach_this_instance_directly_and_others_through_the_broker() {
        use crate::broker::local::LocalBus;
        let bus = LocalBus::new();
        let on_bus = || {
            let fanout = Fanout::new();
            let broker = Arc::new(LocalBroker::on_bus(&bus, fanout.clone()));
            Hub::new(fanout, broker)
        };
        let (one, two) = (on_bus(), on_bus());
        let (a, mut ra) = subscriber(1, 64);
        let (b, mut rb) = subscriber(2, 64);
        one.join(RoomId(1), a).await.expect("join");
        two.join(RoomId(1), b).await.expect("join");
        for seq in 1..=5 {
            one.publish(event(1, seq));
        }
        // Here at once, from the publish itself.
        assert_eq!(messages_now(&mut ra), [1, 2, 3, 4, 5]);
        for seq in 1..=5 {
            let next = tokio::time::timeout(Duration::from_secs(5), next_message(&mut rb)).await;
            assert_eq!(next.ok().flatten(), Some(seq));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(messages_now(&mut ra).is_empty(), "nothing comes back");
        assert!(messages_now(&mut rb).is_empty(), "nothing twice");
    }

    #[test]
    fn a_lone_local_broker_has_nobody_to_publish_to() {
        let fanout = Fanout::new();
        let alone = LocalBroker::new(fanout.clone());
        assert!(!alone.has_peers());
        let bus = crate::broker::local::LocalBus::new();
        let first = LocalBroker::on_bus(&bus, fanout.clone());
        let second = LocalBroker::on_bus(&bus, fanout);
        assert!(first.has_peers());
        drop(second);
        assert!(!first.has_peers());
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
            hub.publish(event(1, seq));
        }
        assert!(flag.is_cancelled());
        for seq in 1..=3 {
            assert_eq!(next_message(&mut rf).await, Some(seq));
        }
    }
}
