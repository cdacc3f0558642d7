//! What happens in a room, as the server carries it from where it happened
//! (a commit, a read mark, a socket) to every socket listening to the room,
//! on this instance directly and on the others through the broker.
//!
//! A room's durable history is its timeline: events numbered by `seq`,
//! gap-free, in commit order: messages and membership changes today; an
//! edit, a deletion or a reaction will be timeline events too, each a frame
//! of its own on the same path. Everything else a room hears (read receipts,
//! typing, presence) is a signal: not stored, not numbered, best effort.
//!
//! Each event carries its server frame already serialized ([`Frame`]), so
//! one JSON encoding serves every socket of every instance. Nothing here
//! knows of axum or tungstenite; `ws/` turns a frame into a WebSocket text
//! message.

use bytes::Bytes;
use chat_core::frame::ServerFrame;
use chat_core::{RoomId, Seq, UserId};

/// Identifies one WebSocket connection across every instance, so that the
/// socket that caused an event can be told apart (it gets an ack, or
/// nothing, instead of the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// A server frame as JSON text, serialized once and shared (a refcount per
/// socket, never a copy). Always valid UTF-8: it is only ever made by
/// serializing a [`ServerFrame`] or by checking bytes that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Serializes `frame`.
    pub fn encode(frame: &ServerFrame) -> Self {
        // Serializing these plain structs cannot fail; were it to, an empty
        // frame is skipped by clients rather than taking the server down.
        Self(Bytes::from(serde_json::to_vec(frame).unwrap_or_default()))
    }

    /// Frame bytes that arrived from elsewhere (another instance), checked
    /// to be UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// The JSON text's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON text's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (a frame never is).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One thing that happened in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The room it happened in.
    pub room: RoomId,
    /// The connection that caused it, if any: it does not receive the frame
    /// (the sender of a message gets an ack instead).
    pub origin: Option<ConnId>,
    /// What happened.
    pub kind: EventKind,
}

/// What an event is, each kind with the data it needs and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// An event of the room's timeline, stored at `seq` before anyone hears
    /// of it. Sockets get them in seq order, each once. With `leaves`, that
    /// member is no longer in the room: their sockets get the frame and then
    /// stop receiving the room.
    Timeline {
        /// The event's place in the room's timeline.
        seq: Seq,
        /// The frame sockets get.
        frame: Frame,
        /// The member who is out of the room after it (left, kicked, banned).
        leaves: Option<UserId>,
    },
    /// A read receipt, typing notice or presence change: forwarded as is.
    Signal {
        /// The frame sockets get.
        frame: Frame,
    },
    /// The room was deleted: sockets get the frame and drop the room.
    RoomDeleted {
        /// The frame sockets get.
        frame: Frame,
    },
}

impl Event {
    /// A timeline event at `seq`; `leaves` is a member it takes out of the
    /// room.
    pub fn timeline(
        room: RoomId,
        seq: Seq,
        origin: Option<ConnId>,
        frame: &ServerFrame,
        leaves: Option<UserId>,
    ) -> Self {
        Self {
            room,
            origin,
            kind: EventKind::Timeline {
                seq,
                frame: Frame::encode(frame),
                leaves,
            },
        }
    }

    /// A signal (read receipt, typing, presence) for everyone in the room
    /// but `origin`.
    pub fn signal(room: RoomId, origin: Option<ConnId>, frame: &ServerFrame) -> Self {
        Self {
            room,
            origin,
            kind: EventKind::Signal {
                frame: Frame::encode(frame),
            },
        }
    }

    /// The room is gone.
    pub fn room_deleted(room: RoomId) -> Self {
        Self {
            room,
            origin: None,
            kind: EventKind::RoomDeleted {
                frame: Frame::encode(&ServerFrame::RoomDeleted { room }),
            },
        }
    }

    /// The timeline seq, for timeline events.
    pub fn seq(&self) -> Option<Seq> {
        match &self.kind {
            EventKind::Timeline { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The frame sockets get.
    pub fn frame(&self) -> &Frame {
        match &self.kind {
            EventKind::Timeline { frame, .. }
            | EventKind::Signal { frame }
            | EventKind::RoomDeleted { frame } => frame,
        }
    }
}
