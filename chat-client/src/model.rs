//! A room's messages kept current from the event stream alone: new
//! messages, edits, deletions and reactions applied in place, thread
//! replies filed under their root.

use std::collections::{BTreeMap, HashMap};

use chat_core::message::ThreadSummary;
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
/// Thread replies follow the server's rule: they are not among
/// [`messages`](Self::messages) (as history leaves them out) but under
/// their root ([`thread`](Self::thread)), and each new one counts on the
/// root's `thread` summary (one sent after the summary's `last_reply_at`,
/// so that a replayed reply already counted by a fetched root is not
/// counted twice); a reply deleted here leaves the count.
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

    /// The room's messages held, oldest first (tombstones included: they
    /// keep their place), without thread replies.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.by_seq.values().filter(|m| m.thread_root.is_none())
    }

    /// The replies held in the thread of `root`, oldest first.
    pub fn thread(&self, root: MessageId) -> impl Iterator<Item = &Message> {
        self.by_seq
            .values()
            .filter(move |m| m.thread_root == Some(root))
    }

    /// How many [`messages`](Self::messages) are held.
    pub fn len(&self) -> usize {
        self.messages().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a thread reply on its root: a new one (`+1`), or one deleted
    /// here (`-1`).
    fn count_reply(&mut self, reply: &Message, before: Option<bool>) {
        let Some(root) = reply.thread_root.and_then(|r| self.seq_of.get(&r).copied()) else {
            return;
        };
        let Some(root) = self.by_seq.get_mut(&root) else {
            return;
        };
        match (before, reply.deleted) {
            (None, false) => match &mut root.thread {
                Some(t) if reply.created_at <= t.last_reply_at => {}
                Some(t) => {
                    t.reply_count += 1;
                    t.last_reply_at = reply.created_at;
                }
                None => {
                    root.thread = Some(ThreadSummary {
                        reply_count: 1,
                        last_reply_at: reply.created_at,
                    });
                }
            },
            (Some(false), true) => {
                if let Some(t) = &mut root.thread {
                    t.reply_count = t.reply_count.saturating_sub(1);
                }
            }
            _ => {}
        }
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
        let before = self.get(message.id).map(|m| m.deleted);
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
        self.count_reply(&message, before);
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
            attachments: Vec::new(),
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
    fn thread_replies_count_on_their_root_once() {
        let mut room = RoomMessages::new(RoomId(1), UserId(7));
        room.extend([message(1, 0, "lunch?")]);
        let reply = |seq: Seq, at: i64| {
            let mut m = message(seq, 0, "noon");
            m.thread_root = Some(MessageId(101));
            m.created_at = Timestamp::from_unix_micros(at);
            m
        };
        assert!(room.apply(&Event::Message(reply(2, 10))));
        assert!(room.apply(&Event::Message(reply(3, 20))));
        let summary = |room: &RoomMessages| {
            room.get(MessageId(101))
                .and_then(|m| m.thread)
                .map(|t| (t.reply_count, t.last_reply_at.unix_micros()))
        };
        assert_eq!(summary(&room), Some((2, 20)));
        // Delivered twice (a replay): counted once.
        assert!(!room.apply(&Event::Message(reply(3, 20))));
        assert_eq!(summary(&room), Some((2, 20)));
        // The thread is apart from the room's messages.
        assert_eq!(room.len(), 1);
        assert_eq!(room.thread(MessageId(101)).count(), 2);
        // A root fetched again with the server's count, then a replayed
        // reply it already counts: not counted again.
        let mut fetched = message(1, 0, "lunch?");
        fetched.thread = Some(ThreadSummary {
            reply_count: 3,
            last_reply_at: Timestamp::from_unix_micros(30),
        });
        room.extend([fetched]);
        room.apply(&Event::Message(reply(4, 30)));
        assert_eq!(summary(&room), Some((3, 30)));
        // A reply deleted here leaves the count.
        let mut gone = reply(2, 10);
        gone.deleted = true;
        gone.version = 1;
        assert!(room.apply(&Event::MessageDeleted(update(5, gone))));
        assert_eq!(summary(&room), Some((2, 30)));
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
