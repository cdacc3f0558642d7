//! `local://`: the in-process broker. A single instance has nobody to
//! publish to (its hub delivers to its own sockets), so alone on its bus it
//! reports no peers and the hub skips publishing. Brokers on one bus hand
//! each other's events straight to their sinks; nothing is serialized or
//! copied.
//!
//! Brokers made with [`LocalBroker::on_bus`] on one [`LocalBus`] see each
//! other's events, like instances sharing one Redis: that is how the
//! conformance suite's two-instance tests run against `local://`, and how
//! several servers in one process could share fan-out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use chat_core::RoomId;
use chat_core::api::ComponentState;

use super::{Broker, BrokerError, Event, EventSink};

/// What brokers on one bus share: every broker's sink and rooms.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    // Weak, so that a dropped broker leaves the bus without an explicit
    // goodbye; dead entries are pruned on the next publish.
    members: Arc<Mutex<Vec<Weak<Member>>>>,
    /// Live brokers on the bus: with one, publishing reaches nobody.
    brokers: Arc<AtomicUsize>,
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
