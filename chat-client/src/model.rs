//! A room's messages kept current from the event stream alone: new
//! messages, edits, deletions and reactions applied in place.

use std::collections::{BTreeMap, HashMap};

use chat_core::timeline::{MessageUpdate, ReactionEvent};
use chat_core::{Message, MessageId, RoomId, Seq, UserId};

use crate::Event;

/// The messages of one room as the viewer `me` sees them, in seq order,
/// with every change the server reported applied.
///
/// Feed it a page of history ([`RoomMessages::extend`]) and then every
/// [`Event`] of the connection ([`RoomMessages::apply`]); events of other
/// rooms are ignored. A copy of a message replaces the one held only if its
/// `version` is at least as high, so a replayed old edit never undoes a
/// newer one, and what only the viewer can know (`is_read`, `me` on each
/// reaction) is kept across copies that cannot tell it.
///
/// ```
/// use chat_client::RoomMessages;
/// use chat_client::chat_core::{RoomId, UserId};
///
/// let mut room = RoomMessages::new(RoomId(1), UserId(7));
/// assert!(room.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct RoomMessages {
    room: RoomId,
    me: UserId,
    by_seq: BTreeMap<Seq, Message>,
    seq_of: HashMap<MessageId, Seq>,
}

impl RoomMessages {
    /// An empty room for the viewer `me`.
    pub fn new(room: RoomId, me: UserId) -> Self {
        Self {
            room,
            me,
            by_seq: BTreeMap::new(),
            seq_of: HashMap::new(),
        }
    }

    /// Messages as fetched (history, the timeline): each is the viewer's
    /// own view, `me` and `is_read` included.
    pub fn extend(&mut self, messages: impl IntoIterator<Item = Message>) {
        for message in messages {
            if message.room == self.room {
                self.put(message, Viewed::ByViewer);
            }
        }
    }

    /// Applies one event; `true` if it changed a message of this room.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Message(m) if m.room == self.room => self.put(m.clone(), Viewed::ByViewer),
            Event::MessageEdited(MessageUpdate { message, .. })
            | Event::MessageDeleted(MessageUpdate { message, .. })
            | Event::MessagePinned(MessageUpdate { message, .. })
            | Event::MessageUnpinned(MessageUpdate { message, .. })
                if message.room == self.room =>
            {
                self.put(message.clone(), Viewed::Shared)
            }
            Event::Reaction(reaction) if reaction.room == self.room => self.react(reaction),
            _ => false,
        }
    }

    /// The message with this id, if held.
    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.seq_of.get(&id).and_then(|seq| self.by_seq.get(seq))
    }

    /// The messages held, oldest first (tombstones included: they keep
    /// their place).
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.by_seq.values()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    fn react(&mut self, reaction: &ReactionEvent) -> bool {
        let mut message = reaction.message.clone();
        // The shared frame cannot say which keys are the viewer's: keep
        // what was known, and learn from the viewer's own reactions.
        let known = self.get(message.id).map(|m| m.reactions.clone());
        for r in &mut message.reactions {
            r.me = if reaction.user == self.me && r.key == reaction.key {
                reaction.added
            } else {
                known.iter().flatten().any(|k| k.key == r.key && k.me)
            };
        }
        self.put(message, Viewed::ReactionsKnown)
    }

    fn put(&mut self, mut message: Message, viewed: Viewed) -> bool {
        if let Some(held) = self.get(message.id) {
            if held.version > message.version {
                return false;
            }
            if viewed != Viewed::ByViewer {
                message.is_read = held.is_read;
            }
            if viewed == Viewed::Shared {
                for r in &mut message.reactions {
                    r.me = held.reactions.iter().any(|k| k.key == r.key && k.me);
                }
            }
            if *held == message {
                return false;
            }
        }
        self.seq_of.insert(message.id, message.seq);
        self.by_seq.insert(message.seq, message);
        true
    }
}

/// How much of a copy is the viewer's own view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewed {
    /// Fetched or delivered for the viewer: take it whole.
    ByViewer,
    /// From a frame every socket shares: `is_read` and `me` are not the
    /// viewer's.
    Shared,
    /// A shared frame whose `me` flags were worked out already.
    ReactionsKnown,
}

#[cfg(test)]
mod tests {
    use chat_core::Timestamp;
    use chat_core::message::Reaction;

    use super::*;

    fn message(seq: Seq, version: u32, body: &str) -> Message {
        Message {
            id: MessageId(100 + seq),
            room: RoomId(1),
            seq,
            sender: UserId(2),
            sender_name: "ann".to_owned(),
            body: body.to_owned(),
            created_at: Timestamp::from_unix_micros(0),
            is_read: true,
            client_id: None,
            edited_at: None,
            version,
            deleted: false,
            reactions: Vec::new(),
            pinned: false,
            reply_to: None,
            thread_root: None,
            thread: None,
            mentions: Vec::new(),
        }
    }

    fn update(seq: Seq, message: Message) -> MessageUpdate {
        MessageUpdate {
            room: RoomId(1),
            seq,
            user: UserId(2),
            created_at: Timestamp::from_unix_micros(0),
            message,
        }
    }

    fn reaction(user: i64, key: &str, added: bool, counts: &[(&str, u32)], version: u32) -> Event {
        let mut m = message(1, version, "hi");
        m.is_read = false;
        m.reactions = counts
            .iter()
            .map(|(k, n)| Reaction {
                key: (*k).to_owned(),
                count: *n,
                me: false,
            })
            .collect();
        Event::Reaction(ReactionEvent {
            room: RoomId(1),
            seq: 10 + i64::from(version),
            user: UserId(user),
            created_at: Timestamp::from_unix_micros(0),
            key: key.to_owned(),
            added,
            message: m,
        })
    }

    #[test]
    fn edits_apply_by_version_and_keep_the_viewers_read_state() {
        let mut room = RoomMessages::new(RoomId(1), UserId(7));
        room.extend([message(1, 0, "helo"), message(2, 0, "other")]);
        let mut v2 = message(1, 2, "hello!");
        v2.is_read = false;
        assert!(room.apply(&Event::MessageEdited(update(3, v2))));
        // A replayed older copy changes nothing.
        assert!(!room.apply(&Event::MessageEdited(update(4, message(1, 1, "hello")))));
        let held = room.get(MessageId(101)).expect("held");
        assert_eq!((held.body.as_str(), held.version), ("hello!", 2));
        assert!(
            held.is_read,
            "the shared frame's is_read is not the viewer's"
        );
        // Another room's events are not this room's.
        let mut elsewhere = message(1, 5, "x");
        elsewhere.room = RoomId(2);
        assert!(!room.apply(&Event::MessageEdited(update(5, elsewhere))));
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn a_deletion_leaves_a_tombstone_in_place() {
        let mut room = RoomMessages::new(RoomId(1), UserId(7));
        room.extend([message(1, 0, "oops"), message(2, 0, "fine")]);
        let mut gone = message(1, 1, "");
        gone.deleted = true;
        assert!(room.apply(&Event::MessageDeleted(update(3, gone))));
        let bodies: Vec<(&str, bool)> = room
            .messages()
            .map(|m| (m.body.as_str(), m.deleted))
            .collect();
        assert_eq!(bodies, vec![("", true), ("fine", false)]);
    }

    #[test]
    fn reactions_track_the_viewers_own() {
        let mut room = RoomMessages::new(RoomId(1), UserId(7));
        room.extend([message(1, 0, "hi")]);
        // Someone else: counts only.
        assert!(room.apply(&reaction(3, "👍", true, &[("👍", 1)], 1)));
        // The viewer: theirs.
        assert!(room.apply(&reaction(7, "👍", true, &[("👍", 2)], 2)));
        assert!(room.apply(&reaction(3, "❤️", true, &[("👍", 2), ("❤️", 1)], 3)));
        let held = room.get(MessageId(101)).expect("held");
        let mine: Vec<(&str, u32, bool)> = held
            .reactions
            .iter()
            .map(|r| (r.key.as_str(), r.count, r.me))
            .collect();
        assert_eq!(mine, vec![("👍", 2, true), ("❤️", 1, false)]);
        assert!(held.is_read);
        // An edit's shared frame keeps the flags too.
        let mut edited = message(1, 4, "hi!");
        edited.reactions = held.reactions.clone();
        for r in &mut edited.reactions {
            r.me = false;
        }
        room.apply(&Event::MessageEdited(update(20, edited)));
        assert!(room.get(MessageId(101)).expect("held").reactions[0].me);
        // Taken back by the viewer.
        assert!(room.apply(&reaction(7, "👍", false, &[("👍", 1), ("❤️", 1)], 5)));
        assert!(!room.get(MessageId(101)).expect("held").reactions[0].me);
    }
}
