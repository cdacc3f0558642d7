//! Fan-out between server instances, behind one trait.
//!
//! The broker is best effort: it carries [`Event`]s (already serialized
//! frames) from the instance where something happened to every *other*
//! instance with local subscribers of the room. The instance where it
//! happened hands it to its own sockets itself (the hub does, at the commit
//! point for timeline events), without a round trip through the broker. It
//! is never the source of truth; a message is in storage before its event is
//! published, and a socket that misses an event catches up from storage by
//! `seq`.
//!
//! An instance subscribes to a room when its first local socket joins it and
//! unsubscribes when the last one leaves (see the hub), so a broker
//! carries one subscription per room per instance, never one per socket.
//!
//! The broker also holds the little state instances must agree on, so that
//! a deployment of many behaves like one server: who is online in a room
//! (counted per user across instances, not per instance) and the token
//! buckets of rate limits that span connections (messages per user, failed
//! logins per account and address). Like events, this state is never the
//! source of truth: while the broker is unreachable each instance falls back
//! to counting alone (see the hub and `service::throttle`).
//!
//! Backends, one file each: [`local`] (`local://`, in-process) and
//! `redis` (`redis://`, `rediss://`, between instances). Every
//! backend runs the one `conformance` suite.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::api::ComponentState;
use chat_core::{RoomId, UserId};

// Each public function is one test, named for the rule it checks.
#[cfg(any(test, feature = "testing"))]
#[allow(missing_docs)]
pub mod conformance;
pub mod local;
#[cfg(feature = "redis")]
pub mod redis;

pub use crate::event::{ConnId, Event, EventKind, Frame};

/// Where a broker hands the events of subscribed rooms. Implemented by the
/// hub; must not block (it only queues).
pub trait EventSink: Send + Sync + 'static {
    /// An event another instance published, for a room this instance
    /// subscribed to.
    fn deliver(&self, event: Arc<Event>);
    /// The broker lost its connection and has it back (resubscribed): events
    /// published in between may never arrive, so every room catches up from
    /// storage.
    fn resync(&self);
}

/// Options every broker understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Prefix of every key and channel, so that several deployments can
    /// share one Redis.
    pub prefix: String,
    /// PEM file of the CA that signs a `rediss://` server's certificate, for
    /// self-signed setups; the system roots are used otherwise.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            prefix: "chat".to_owned(),
            tls_ca: None,
        }
    }
}

/// How long an instance's presence entries live unless refreshed: a crashed
/// instance's users are offline everywhere at most this long after it died
/// (plus one refresh).
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How often the hub refreshes its presence entries
/// ([`Broker::refresh_presence`]).
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// A token bucket: `burst` cells, one coming back every `interval` (the
/// generic cell rate algorithm, as governor counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Cells when full.
    pub burst: u32,
    /// Time for one cell to come back.
    pub interval: Duration,
}

/// What [`Broker::rate`] does with the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateCheck {
    /// Takes a cell if there is one.
    Take,
    /// Only looks.
    Peek,
}

/// Broker failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker's server cannot be reached; local delivery goes on.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else.
    #[error("broker error: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

/// Carries events between instances. Object safe; used as `Arc<dyn Broker>`.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends an event to every other instance subscribed to its room (never
    /// back to this one: the hub delivered it here already). Events
    /// published by one caller for one room arrive in the order they were
    /// published.
    async fn publish(&self, event: Arc<Event>) -> Result<(), BrokerError>;
    /// Publishes `events` in their order, as if by one `publish` after the
    /// other. Backends that can send them together (one Redis pipeline) do.
    async fn publish_many(&self, events: &[Arc<Event>]) -> Result<(), BrokerError> {
        for event in events {
            self.publish(event.clone()).await?;
        }
        Ok(())
    }
    /// Starts delivering the room's events to the sink. Once this returns,
    /// every event published afterwards is delivered. Idempotent.
    async fn subscribe(&self, room: RoomId) -> Result<(), BrokerError>;
    /// Stops delivering the room's events. Idempotent.
    async fn unsubscribe(&self, room: RoomId) -> Result<(), BrokerError>;
    /// Whether the broker can currently reach its server.
    fn state(&self) -> ComponentState;
    /// Records that `user` has a socket in `room` on this instance (the
    /// hub calls it for their first). Returns whether no instance had them
    /// in the room before: then the caller announces them `online`. Of
    /// instances racing, exactly one hears `true`.
    async fn present(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError>;
    /// Records that the user's last socket in the room on this instance
    /// left. Returns whether no instance has them in the room any more: then
    /// the caller announces them `offline`.
    async fn absent(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError>;
    /// Users with a socket in the room on any instance, by id, ascending.
    async fn online(&self, room: RoomId) -> Result<Vec<UserId>, BrokerError>;
    /// Keeps this instance's entries alive: `here` is every room with local
    /// sockets and its users. Entries not refreshed for [`PRESENCE_TTL`]
    /// (an instance that died without saying `absent`) expire. Returns the
    /// users of those rooms whose every entry expired, removed now, for the
    /// caller to announce `offline`; of instances racing, one returns each.
    async fn refresh_presence(
        &self,
        here: &[(RoomId, Vec<UserId>)],
    ) -> Result<Vec<(RoomId, UserId)>, BrokerError>;
    /// Counts against the token bucket `key`, shared by every instance on
    /// the broker. `Ok(None)`: a cell was there (and, with
    /// [`RateCheck::Take`], is taken). `Ok(Some(wait))`: the bucket is
    /// empty for `wait` more; nothing was taken.
    async fn rate(
        &self,
        key: &str,
        quota: Quota,
        check: RateCheck,
    ) -> Result<Option<Duration>, BrokerError>;
    /// Whether another instance may be listening. `false` only when none
    /// can be (a local broker alone on its bus): the hub then does not
    /// publish at all.
    fn has_peers(&self) -> bool {
        true
    }
}

/// Opens the broker a URL names (`local://`, `redis://…`, `rediss://…`),
/// delivering to `sink`.
pub async fn connect(
    url: &str,
    options: &BrokerOptions,
    sink: Arc<dyn EventSink>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "local" => Ok(Arc::new(local::LocalBroker::new(sink))),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(
            self::redis::RedisBroker::connect(url, options, sink).await?,
        )),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => {
            let _ = options;
            Err(BrokerError::Backend(
                "broker URL redis://: this chat-server was built without the `redis` feature"
                    .into(),
            ))
        }
        _ => Err(BrokerError::Backend(
            format!("unsupported broker URL {url:?}: expected local://, redis:// or rediss://")
                .into(),
        )),
    }
}
