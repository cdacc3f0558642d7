//! Messages.

use serde::{Deserialize, Serialize};

use crate::attachment::Attachment;
use crate::{MessageId, RoomId, Seq, Timestamp, UserId};

/// A stored message as a given viewer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Message {
    pub id: MessageId,
    pub room: RoomId,
    /// Position in the room: 1, 2, 3… without gaps, in commit order.
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    pub sender: UserId,
    pub sender_name: String,
    pub body: String,
    pub created_at: Timestamp,
    /// For a message someone else sent: whether the viewer has read it. For
    /// the viewer's own message: whether another member has read it.
    pub is_read: bool,
    /// The sender's idempotency key, if it gave one.
    pub client_id: Option<String>,
    /// When the body was last edited; absent for a message never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    /// How many times the message has changed since it was sent (each edit,
    /// its deletion): absent (0) as sent. Of two copies of one message, the
    /// one with the higher version is the newer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u32,
    /// The message was deleted: `body` is empty (the text is gone from the
    /// server) and the message keeps its place (`seq`) as a tombstone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Reactions by key, each with how many users reacted so; absent when
    /// none. In order of the first reaction of each key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// Pinned to its room (`GET /chat/rooms/{id}/pins/` lists them).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pinned: bool,
    /// The message this one replies to (same room), with a snippet of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyPreview>,
    /// The thread this message belongs to: its root's id. Thread replies
    /// take the room's seqs and reach every subscriber like any message,
    /// but `GET /chat/history/` leaves them out; page a thread with
    /// `GET /chat/messages/{root}/thread/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<MessageId>,
    /// On a thread's root, once it has had a reply: how many replies it
    /// has (deleted ones not counted) and when the last was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    /// The users the message mentions (members of the room when sent);
    /// each counts it in the room's `mention_count` until read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
    /// Files sent with the message (at most 10), as they were when sent;
    /// gone once the message is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// The message a reply answers, as the reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ReplyPreview {
    pub id: MessageId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    pub sender: UserId,
    /// The start of its body (at most [`SNIPPET_CHARS`] characters) as it
    /// was when the reply was sent; empty once it is deleted.
    pub snippet: String,
    /// The message replied to was deleted since: its text is gone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// The most characters of a message a reply's snippet keeps.
pub const SNIPPET_CHARS: usize = 100;

/// A thread root's replies, in short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ThreadSummary {
    /// Replies in the thread, not counting deleted ones.
    pub reply_count: u32,
    /// When the newest reply was sent.
    pub last_reply_at: Timestamp,
}

/// One reaction key on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Reaction {
    /// A short key, such as an emoji: 1 to 32 characters, no whitespace,
    /// no control characters, no `/`.
    pub key: String,
    /// How many users reacted with it (each at most once).
    pub count: u32,
    /// Whether the viewer is one of them. Set in answers and history; in a
    /// live frame, which every socket shares, it is absent: use the event's
    /// `user` to keep your own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub me: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The short form of a message used in room and conversation lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct LastMessage {
    pub body: String,
    pub created_at: Timestamp,
    pub sender_id: UserId,
    pub is_read: bool,
    /// The last message was deleted (`body` is empty).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

impl From<&Message> for LastMessage {
    fn from(m: &Message) -> Self {
        Self {
            body: m.body.clone(),
            created_at: m.created_at,
            sender_id: m.sender,
            is_read: m.is_read,
            deleted: m.deleted,
        }
    }
}
