//! `local://`: the in-process broker. A single instance has nobody to
//! publish to (its hub delivers to its own sockets), so alone on its bus it
//! reports no peers and the hub skips publishing. Brokers on one bus hand
//! each other's events straight to their sinks; nothing is serialized or
//! copied.
//!
//! Brokers made with [`LocalBroker::on_bus`] on one [`LocalBus`] see each
//! other's events, like instances sharing one Redis: that is how the
//! conformance suite's two-instance tests run against `local://`, and how
//! several servers in one process could share fan-out. They share presence
//! and rate-limit buckets the same way.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::api::ComponentState;
use chat_core::{RoomId, UserId};
use std::time::Instant;

use super::{Broker, BrokerError, Event, EventSink, Quota, RateCheck};

/// What brokers on one bus share: every broker's sink and rooms, who is
/// online where, and the rate-limit buckets.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    // Weak, so that a dropped broker leaves the bus without an explicit
    // goodbye; dead entries are pruned on the next publish.
    members: Arc<Mutex<Vec<Weak<Member>>>>,
    /// Live brokers on the bus: with one, publishing reaches nobody.
    brokers: Arc<AtomicUsize>,
    /// Numbers the brokers, for their presence entries.
    next_id: Arc<AtomicU64>,
    /// For each room and user, the brokers that have them there.
    presence: Arc<Mutex<Presence>>,
    buckets: Arc<Buckets>,
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Member>>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// For each room and user, the numbers of the brokers that have them there.
type Presence = HashMap<(RoomId, UserId), HashSet<u64>>;

/// Token buckets in memory, by key: the generic cell rate algorithm, which
/// keeps one instant per key (its "theoretical arrival time"). Written here
/// rather than taken from governor because Redis runs the very same rule in
/// Lua (see `redis.rs`) and both must answer alike, including a look that
/// takes nothing ([`RateCheck::Peek`]), which governor cannot do.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    // A std Mutex: held for one map operation, never across an await.
    tats: Mutex<HashMap<String, Instant>>,
    last_sweep: Mutex<Option<Instant>>,
}

/// How often [`Buckets`] drops the keys whose bucket is full again (a full
/// bucket and no entry are the same thing). Keys come from clients, so they
/// must not pile up.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Buckets {
    pub(crate) fn check(&self, key: &str, quota: Quota, check: RateCheck) -> Option<Duration> {
        let now = Instant::now();
        let span = quota.interval.saturating_mul(quota.burst);
        let mut tats = lock(&self.tats);
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        // A cell is there when the bucket, having given back one per
        // interval since `tat`, holds at least one more than it owes.
        let earliest = now + span;
        let next = tat + quota.interval;
        if next > earliest {
            return Some(next - earliest);
        }
        if check == RateCheck::Take {
            tats.insert(key.to_owned(), next);
        }
        drop(tats);
        self.sweep(now);
        None
    }

    fn sweep(&self, now: Instant) {
        {
            let mut last = lock(&self.last_sweep);
            match *last {
                Some(at) if now.duration_since(at) < SWEEP_EVERY => return,
                _ => *last = Some(now),
            }
        }
        lock(&self.tats).retain(|_, tat| *tat > now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Member {
    sink: Arc<dyn EventSink>,
    // A std Mutex: the set is touched for a hash lookup and never across an
    // await, so an async mutex would only add cost.
    rooms: Mutex<HashSet<RoomId>>,
}

impl Member {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashSet<RoomId>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The in-process broker.
pub struct LocalBroker {
    bus: LocalBus,
    me: Arc<Member>,
    /// This broker's number in the bus's presence entries.
    id: u64,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// A broker of its own, delivering to `sink`.
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        Self::on_bus(&LocalBus::new(), sink)
    }

    /// A broker delivering to `sink` the events published by every broker
    /// on `bus`, itself included.
    pub fn on_bus(bus: &LocalBus, sink: Arc<dyn EventSink>) -> Self {
        let me = Arc::new(Member {
            sink,
            rooms: Mutex::new(HashSet::new()),
        });
        bus.members().push(Arc::downgrade(&me));
        bus.brokers.fetch_add(1, Ordering::AcqRel);
        Self {
            bus: bus.clone(),
            me,
            id: bus.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, event: Arc<Event>) -> Result<(), BrokerError> {
        // Collected first so that no sink runs under the bus lock (a sink
        // may publish in turn).
        let targets: Vec<Arc<Member>> = {
            let mut members = self.bus.members();
            members.retain(|m| m.strong_count() > 0);
            members
                .iter()
                .filter_map(Weak::upgrade)
                // This instance's own sockets have it from the hub already.
                .filter(|m| !Arc::ptr_eq(m, &self.me) && m.rooms().contains(&event.room))
                .collect()
        };
        for member in targets {
            member.sink.deliver(event.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.me.rooms().insert(room);
        Ok(())
    }

    async fn unsubscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.me.rooms().remove(&room);
        Ok(())
    }

    async fn present(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError> {
        let mut presence = lock(&self.bus.presence);
        let here = presence.entry((room, user)).or_default();
        let first = here.iter().all(|id| *id == self.id);
        here.insert(self.id);
        Ok(first)
    }

    async fn absent(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError> {
        let mut presence = lock(&self.bus.presence);
        let Some(here) = presence.get_mut(&(room, user)) else {
            return Ok(true);
        };
        here.remove(&self.id);
        let last = here.is_empty();
        if last {
            presence.remove(&(room, user));
        }
        Ok(last)
    }

    async fn online(&self, room: RoomId) -> Result<Vec<UserId>, BrokerError> {
        let presence = lock(&self.bus.presence);
        let users: BTreeSet<UserId> = presence
            .keys()
            .filter(|(r, _)| *r == room)
            .map(|(_, u)| *u)
            .collect();
        Ok(users.into_iter().collect())
    }

    /// Nothing expires in one process: a broker that goes away takes its
    /// entries with it (see `Drop`).
    async fn refresh_presence(
        &self,
        _here: &[(RoomId, Vec<UserId>)],
    ) -> Result<Vec<(RoomId, UserId)>, BrokerError> {
        Ok(Vec::new())
    }

    async fn rate(
        &self,
        key: &str,
        quota: Quota,
        check: RateCheck,
    ) -> Result<Option<Duration>, BrokerError> {
        Ok(self.bus.buckets.check(key, quota, check))
    }

    fn state(&self) -> ComponentState {
        ComponentState::Ok
    }

    fn has_peers(&self) -> bool {
        self.bus.brokers.load(Ordering::Acquire) > 1
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.bus.brokers.fetch_sub(1, Ordering::AcqRel);
        lock(&self.bus.presence).retain(|_, here| {
            here.remove(&self.id);
            !here.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{LocalBroker, LocalBus};
    use crate::broker::conformance::Bus;
    use crate::broker::{Broker, EventSink};

    /// Every broker of one conformance test on one shared bus.
    #[derive(Debug, Default)]
    struct TestBus(LocalBus);

    #[async_trait::async_trait]
    impl Bus for TestBus {
        async fn broker(&self, sink: Arc<dyn EventSink>) -> Arc<dyn Broker> {
            Arc::new(LocalBroker::on_bus(&self.0, sink))
        }
    }

    crate::broker_conformance_tests!(|| async { TestBus::default() });
}
