//! Where a socket stands in each room it listens to.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use chat_core::{RoomId, Seq};

use crate::storage::RoomRecord;

#[derive(Debug)]
pub(super) struct Cursor {
    pub(super) room: RoomRecord,
    /// The highest seq this socket has been given (or acked), in order.
    pub(super) delivered: Seq,
    /// Acks of this socket's own messages above `delivered`, each sent when
    /// the stream reaches its seq, in the message's place.
    pub(super) acks: BTreeMap<Seq, Utf8Bytes>,
}

/// A socket's cursors by room. Most sockets listen to one room or a few,
/// and each is held for the socket's lifetime, so a vector searched in
/// order: a hash map's smallest table (four slots) costs an idle socket
/// about 400 bytes more (benches/run.sh W3).
#[derive(Debug, Default)]
pub(super) struct Cursors(Vec<(RoomId, Cursor)>);

impl Cursors {
    pub(super) fn get(&self, room: &RoomId) -> Option<&Cursor> {
        self.0.iter().find(|(r, _)| r == room).map(|(_, c)| c)
    }

    pub(super) fn get_mut(&mut self, room: &RoomId) -> Option<&mut Cursor> {
        self.0.iter_mut().find(|(r, _)| r == room).map(|(_, c)| c)
    }

    pub(super) fn contains_key(&self, room: &RoomId) -> bool {
        self.get(room).is_some()
    }

    /// Sets `room`'s cursor (the room must not have one).
    pub(super) fn insert(&mut self, room: RoomId, cursor: Cursor) {
        self.0.push((room, cursor));
    }

    pub(super) fn remove(&mut self, room: &RoomId) -> Option<Cursor> {
        let at = self.0.iter().position(|(r, _)| r == room)?;
        Some(self.0.swap_remove(at).1)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &RoomId> {
        self.0.iter().map(|(r, _)| r)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Cursor> {
        self.0.iter().map(|(_, c)| c)
    }
}
