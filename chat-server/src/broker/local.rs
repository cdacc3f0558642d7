//! `local://`: the in-process broker for a single instance. Publishing hands
//! the event straight to the sink when the room is subscribed; nothing is
//! serialized or copied.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chat_core::RoomId;
use chat_core::api::ComponentState;

use super::{Broker, BrokerError, Event, EventSink};

/// The in-process broker.
pub struct LocalBroker {
    sink: Arc<dyn EventSink>,
    // A std Mutex: the set is touched for a hash lookup and never across an
    // await, so an async mutex would only add cost.
    rooms: Mutex<HashSet<RoomId>>,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// A broker delivering to `sink`.
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        Self {
            sink,
            rooms: Mutex::new(HashSet::new()),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashSet<RoomId>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, event: Arc<Event>) -> Result<(), BrokerError> {
        let subscribed = self.rooms().contains(&event.room);
        if subscribed {
            self.sink.deliver(event);
        }
        Ok(())
    }

    async fn subscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.rooms().insert(room);
        Ok(())
    }

    async fn unsubscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.rooms().remove(&room);
        Ok(())
    }

    fn state(&self) -> ComponentState {
        ComponentState::Ok
    }
}

#[cfg(test)]
mod tests {
    crate::broker_conformance_tests!(|sink| async move {
        std::sync::Arc::new(super::LocalBroker::new(sink))
            as std::sync::Arc<dyn crate::broker::Broker>
    });
}
