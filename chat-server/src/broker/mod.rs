//! Fan-out between server instances, behind one trait.
//!
//! The broker is best effort: it carries [`Event`]s (already serialized
//! frames) from the instance where something happened to every instance with
//! local subscribers of the room. It is never the source of truth; a message
//! is in storage before its event is published, and a socket that misses an
//! event catches up from storage by `seq`.
//!
//! An instance subscribes to a room when its first local socket joins it and
//! unsubscribes when the last one leaves (see [`crate::hub`]), so a broker
//! carries one subscription per room per instance, never one per socket.
//!
//! Backends, one file each: [`local`] (`local://`, in-process) and
//! [`redis`](self::redis) (`redis://`, `rediss://`, between instances). Every
//! backend runs the one [`conformance`] suite.

use std::error::Error as StdError;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::api::ComponentState;
use chat_core::frame::ServerFrame;
use chat_core::{RoomId, Seq, UserId};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;
pub mod redis;

/// Identifies one WebSocket connection across every instance, so that the
/// socket that sent a message can skip its own broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// What an event means to the instances that receive it. The frame text is
/// what sockets get; the kind tells the session what else to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A stored message; `Event::seq` is its seq.
    Message,
    /// A read receipt, typing notice or presence change: forwarded as is.
    Notice,
    /// The room was deleted: sockets get the frame and drop the room.
    RoomDeleted,
    /// `user` left or was removed: their sockets drop the room, nobody else
    /// gets a frame.
    MemberLeft(UserId),
    /// Made by the hub, never published: events of the room may have been
    /// lost in transit (the broker reconnected), so sockets catch up from
    /// storage.
    Resync,
}

/// One thing that happened in a room, serialized once for every socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub room: RoomId,
    pub kind: EventKind,
    /// The message seq, for [`EventKind::Message`].
    pub seq: Option<Seq>,
    /// The connection that caused it, which does not receive it.
    pub origin: Option<ConnId>,
    /// The server frame JSON sent to sockets (empty for `MemberLeft`).
    pub frame: Utf8Bytes,
}

impl Event {
    /// A notice (read receipt, typing, presence) for everyone in the room
    /// but `origin`.
    pub fn notice(room: RoomId, origin: Option<ConnId>, frame: &ServerFrame) -> Self {
        Self {
            room,
            kind: EventKind::Notice,
            seq: None,
            origin,
            frame: encode(frame),
        }
    }
}

/// Serializes a frame once for every socket that gets it.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    // Serializing these plain structs cannot fail; were it to, an empty
    // frame is skipped by clients rather than taking the server down.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// Where a broker hands the events of subscribed rooms. Implemented by the
/// hub; must not block (it only queues).
pub trait EventSink: Send + Sync + 'static {
    /// An event for a room this instance subscribed to.
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
    /// Sends an event to every instance subscribed to its room, this one
    /// included. Events published by one caller for one room arrive in the
    /// order they were published.
    async fn publish(&self, event: Arc<Event>) -> Result<(), BrokerError>;
    /// Starts delivering the room's events to the sink. Once this returns,
    /// every event published afterwards is delivered. Idempotent.
    async fn subscribe(&self, room: RoomId) -> Result<(), BrokerError>;
    /// Stops delivering the room's events. Idempotent.
    async fn unsubscribe(&self, room: RoomId) -> Result<(), BrokerError>;
    /// Whether the broker can currently reach its server.
    fn state(&self) -> ComponentState;
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
        "redis" | "rediss" => Ok(Arc::new(
            self::redis::RedisBroker::connect(url, options, sink).await?,
        )),
        _ => Err(BrokerError::Backend(
            format!("unsupported broker URL {url:?}: expected local://, redis:// or rediss://")
                .into(),
        )),
    }
}
