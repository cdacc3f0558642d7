//! A room's timeline: everything that happens in a room and is kept,
//! numbered by `seq` (1, 2, 3… without gaps, in commit order). Messages are
//! one kind of timeline event; a member joining or leaving is another, and
//! so is every change to an earlier message (an edit, a deletion). Each
//! kind has a frame of its own on the WebSocket and an item of its own in
//! `GET /chat/rooms/{id}/events/`, and a client that follows a room's seqs
//! sees every kind in one order. Read receipts, typing and presence are
//! not in the timeline: they are momentary and take no seq.

use serde::{Deserialize, Serialize};

use crate::{Message, RoomId, Seq, Timestamp, UserId};

/// How a room's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// `user` became a member (joined a public room, accepted an invite).
    Joined,
    /// `user` left: no longer a member nor invited.
    Left,
    /// `user` was invited by `by`.
    Invited,
    /// `by` removed `user` (a member, or an invitation), with `reason`.
    Kicked,
    /// `by` banned `user` until `until` (`null`: until lifted), with
    /// `reason`; a member is removed too.
    Banned,
    /// `by` lifted `user`'s ban.
    Unbanned,
    /// `by` made `user`'s role `role` (an ownership handed over is two of
    /// these: the new owner's, then the old owner's, now `admin`).
    RoleChanged,
    /// `by` muted `user` until `until` (`null`: until unmuted).
    Muted,
    /// `by` unmuted `user`.
    Unmuted,
}

impl MemberChange {
    /// The name it has on the wire and in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Invited => "invited",
            Self::Kicked => "kicked",
            Self::Banned => "banned",
            Self::Unbanned => "unbanned",
            Self::RoleChanged => "role_changed",
            Self::Muted => "muted",
            Self::Unmuted => "unmuted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Joined,
            Self::Left,
            Self::Invited,
            Self::Kicked,
            Self::Banned,
            Self::Unbanned,
            Self::RoleChanged,
            Self::Muted,
            Self::Unmuted,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether `user` is out of the room after it: their sockets stop
    /// receiving it.
    pub const fn removes(self) -> bool {
        matches!(self, Self::Left | Self::Kicked | Self::Banned)
    }
}

/// A membership change, as a timeline event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct MemberEvent {
    pub room: RoomId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    /// Whose membership changed.
    pub user: UserId,
    pub change: MemberChange,
    pub created_at: Timestamp,
    /// Who made the change, when it was not `user` themself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    /// Why, as the moderator gave it (kick, ban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The role after a `role_changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::moderation::Role>,
    /// When a ban or a mute ends; absent: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// A change to an earlier message of the room, as a timeline event with a
/// seq of its own: `message` is that message as it stands after the change
/// (its new body, `edited_at` and `version`; or its tombstone). Replayed
/// later, it shows the message as it stands then, so a client applies the
/// copy with the highest `version` and never goes back. `message.is_read`
/// is not the viewer's here (the frame is the same for every socket): keep
/// the read state you had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct MessageUpdate {
    pub room: RoomId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    /// Who made the change.
    pub user: UserId,
    pub created_at: Timestamp,
    pub message: Message,
}

/// A user added or removed a reaction to a message of the room: a timeline
/// event with a seq of its own. `message` is the message as it stands,
/// its `reactions` counted after the change (see [`MessageUpdate`] on
/// replays and `is_read`; `me` is absent here). A reaction to a message
/// deleted since is replayed with an empty `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ReactionEvent {
    pub room: RoomId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    /// Who reacted (or took the reaction back).
    pub user: UserId,
    pub created_at: Timestamp,
    pub key: String,
    /// `true`: added; `false`: removed.
    pub added: bool,
    pub message: Message,
}

/// One event of a room's timeline: what `GET /chat/rooms/{id}/events/`
/// lists, each in the same JSON as its WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// A message, as the viewer sees it.
    Message { message: Message },
    /// A membership change.
    Member(MemberEvent),
    /// A message's body was changed by its sender.
    MessageEdited(MessageUpdate),
    /// A message was deleted; `message` is its tombstone.
    MessageDeleted(MessageUpdate),
    /// A reaction was added to a message or taken back.
    Reaction(ReactionEvent),
    /// A message was pinned to the room.
    MessagePinned(MessageUpdate),
    /// A message was unpinned.
    MessageUnpinned(MessageUpdate),
    /// The room's settings changed.
    RoomUpdated(crate::moderation::RoomUpdate),
}

impl TimelineEvent {
    /// The event's room.
    pub fn room(&self) -> RoomId {
        match self {
            Self::Message { message } => message.room,
            Self::Member(event) => event.room,
            Self::MessageEdited(update)
            | Self::MessageDeleted(update)
            | Self::MessagePinned(update)
            | Self::MessageUnpinned(update) => update.room,
            Self::Reaction(reaction) => reaction.room,
            Self::RoomUpdated(update) => update.room,
        }
    }

    /// The event's place in its room's timeline.
    pub fn seq(&self) -> Seq {
        match self {
            Self::Message { message } => message.seq,
            Self::Member(event) => event.seq,
            Self::MessageEdited(update)
            | Self::MessageDeleted(update)
            | Self::MessagePinned(update)
            | Self::MessageUnpinned(update) => update.seq,
            Self::Reaction(reaction) => reaction.seq,
            Self::RoomUpdated(update) => update.seq,
        }
    }
}

/// The answer of `GET /chat/rooms/{id}/pins/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct PinsResponse {
    /// The room's pinned messages, the most recently pinned first.
    pub pins: Vec<Message>,
}

/// The answer of `GET /chat/messages/{id}/thread/` (paged by seq with the
/// query of `GET /chat/rooms/{id}/events/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ThreadResponse {
    /// The thread's root, with its reply count.
    pub root: Message,
    /// Replies in the thread, oldest first.
    pub replies: Vec<Message>,
    /// Whether more replies lie beyond this page in the direction paged.
    pub has_more: bool,
}

/// `GET /chat/rooms/{id}/events/`: a page of the room's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct TimelineQuery {
    /// Only events with `seq` below this (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>, minimum = 1))]
    pub before: Option<Seq>,
    /// Only events with `seq` above this (0 or more); the page then runs
    /// upward from `after + 1` (without it, it is the newest events below
    /// `before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>, minimum = 0))]
    pub after: Option<Seq>,
    /// 1..=200, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// The answer of `GET /chat/rooms/{id}/events/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct TimelineResponse {
    /// Oldest first.
    pub events: Vec<TimelineEvent>,
    /// Whether more events lie beyond this page in the direction paged.
    pub has_more: bool,
}
