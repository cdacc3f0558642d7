//! Durable state behind one trait: users, refresh tokens, rooms, members,
//! messages with their per-room `seq`, and read marks.
//!
//! Storage is the truth. The broker only carries hints that something new
//! exists; whoever misses a hint catches up from here by `seq`.
//!
//! Backends, one file each: [`memory`] (`memory://`, for tests and demos),
//! `sqlite` (`sqlite://PATH`, the embedded default) and `postgres`
//! (`postgres://…` or `postgresql://…`, for several instances sharing one
//! database). The SQL backends are one implementation ([`sql`]) over a
//! dialect each, and keep their DDL apart (`migrations/sqlite/`,
//! `migrations/postgres/`), applied at connect or by [`migrate`]. Every backend runs the one
//! `conformance` suite.
//!
//! A room's history is its timeline: events numbered by `seq`, of which a
//! message is one kind, a member joining or leaving another, and a change
//! to an earlier message (an edit, a deletion) a third ([`StoredEvent`]). Every event is committed at one point and heard of
//! there ([`CommitListener`]), in seq order.
//!
//! Invariants every backend keeps (the conformance suite checks each):
//! - `seq` is assigned in the same transaction as the insert: a room's
//!   events are numbered 1, 2, 3… in commit order, with no gap and no
//!   duplicate, however many writers append at once.
//! - A repeated `(sender, client_id)` stores nothing and returns the original.
//! - Appending moves the sender's read mark up to the new message, so that
//!   every message above a member's mark is from someone else.
//! - Unread counts count messages only, whatever other kinds take seqs: a
//!   room counts its messages (`msg_count`), a membership the messages at or
//!   below its mark (`read_no`), and `unread = msg_count - read_no`, one
//!   subtraction per membership (a property test checks it against a naive
//!   count over random interleavings).
//! - Read marks only move forward and never past the room's `last_seq`.
//! - A change to a message is checked (membership, who may make it) under
//!   the room's lock, changes the message's row and appends its event in
//!   one transaction; a deleted message keeps its row and seq with its body
//!   erased, and counts as unread for nobody.

use std::error::Error as StdError;
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::attachment::Attachment;
use chat_core::message::SNIPPET_CHARS;
use chat_core::moderation::{Role, RoomSettings};
use chat_core::room::RoomType;
use chat_core::timeline::MemberChange;
use chat_core::{AttachmentId, MessageId, RoomId, Seq, Timestamp, UserId};

use crate::event::ConnId;

// Each public function is one test, named for the rule it checks.
#[cfg(any(test, feature = "testing"))]
#[allow(missing_docs)]
pub mod conformance;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group_commit;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod roles;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// A user as stored, password hash included. Never sent to clients as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Assigned by the store at creation; never reused.
    pub id: UserId,
    /// Unique, and matched exactly (case included).
    pub username: String,
    /// Stored lowercased; compared case-insensitively through that.
    pub email: String,
    /// The name shown beside messages; need not be unique.
    pub display_name: String,
    /// A PHC string (argon2).
    pub password_hash: String,
    /// When the account was created.
    pub created_at: Timestamp,
    /// A server admin: handles reports, deactivates accounts.
    pub is_admin: bool,
    /// The user's id in the host's identity service (a token's subject),
    /// for users provisioned from it; `None` for this server's own accounts.
    pub external_id: Option<String>,
    /// A bot a backend sends as (see the server API), shown as one.
    pub is_bot: bool,
    /// Deactivated: no token of theirs works, and they cannot log in.
    pub deactivated_at: Option<Timestamp>,
    /// Every access token carries the version it was issued under; one
    /// issued under an older one is refused (log out everywhere).
    pub token_version: i64,
}

/// A report to store ([`Storage::create_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    /// Who reports.
    pub reporter: UserId,
    /// The user reported (a message's sender).
    pub user: UserId,
    /// The message reported; `None` for a report of a user alone.
    pub message: Option<MessageId>,
    /// The reported message's room; `None` when `message` is.
    pub room: Option<RoomId>,
    /// Why, in the reporter's words.
    pub reason: String,
    /// The message's body as it stands when reported.
    pub message_body: Option<String>,
    /// When it is made.
    pub created_at: Timestamp,
}

/// A report as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    /// Assigned at creation, increasing (what [`Storage::reports`] pages by).
    pub id: i64,
    /// Who reported.
    pub reporter: UserId,
    /// The user reported (a message's sender).
    pub user: UserId,
    /// The message reported; `None` for a report of a user alone.
    pub message: Option<MessageId>,
    /// The reported message's room; `None` when `message` is.
    pub room: Option<RoomId>,
    /// Why, in the reporter's words.
    pub reason: String,
    /// The message's body as it stood when reported, kept through a
    /// deletion; `None` when `message` is.
    pub message_body: Option<String>,
    /// Whether the message was deleted since (its row a tombstone, or
    /// gone with its room).
    pub message_deleted: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When an admin resolved it; `None` while open.
    pub resolved_at: Option<Timestamp>,
    /// The admin who resolved it; `None` while open.
    pub resolved_by: Option<UserId>,
    /// The admin's note on resolving it; `None` while open.
    pub resolution: Option<String>,
}

/// Which reports [`Storage::reports`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    /// Not resolved yet.
    Open,
    /// Resolved by an admin.
    Resolved,
    /// Both, open or resolved.
    All,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Must be unique (`Conflict(Username)`), matched exactly.
    pub username: String,
    /// Stored lowercased, and unique so (`Conflict(Email)`).
    pub email: String,
    /// The name shown beside messages.
    pub display_name: String,
    /// A PHC string (argon2).
    pub password_hash: String,
    /// When the account is created.
    pub created_at: Timestamp,
}

/// A user of the host's identity service ([`Storage::provision_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    /// Their id there (a token's subject): unique, never changes.
    pub external_id: String,
    /// The username a new user gets (unique); an existing user keeps theirs.
    pub username: String,
    /// A new user's email, '' for none (stored lowercased).
    pub email: String,
    /// The name to show: a new user's (their username if `None`), and an
    /// existing user's new one when it changed.
    pub display_name: Option<String>,
    /// When a new user is created.
    pub created_at: Timestamp,
    /// Whether a new user is a bot.
    pub bot: bool,
}

/// An API key of the server API as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Assigned at creation; never reused.
    pub id: i64,
    /// Unique among the keys not revoked.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last authorized a call (recorded at most once a minute).
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked; a revoked key authorizes nothing.
    pub revoked_at: Option<Timestamp>,
}

/// Where an outbox sink (a webhook endpoint, a push gateway) stands in a
/// room ([`Storage::outbox_claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCursor {
    /// The last seq the sink took (0: none yet).
    pub delivered: Seq,
    /// Failed attempts since the last delivery.
    pub attempts: u32,
    /// When the next attempt is due, after a failure.
    pub next_attempt_at: Option<Timestamp>,
}

/// A room with events a sink has not had ([`Storage::outbox_backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// The room.
    pub room: RoomId,
    /// Its newest event.
    pub last_seq: Seq,
    /// The sink's cursor in it.
    pub delivered: Seq,
}

/// A registered push device ([`Storage::register_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Assigned at first registration; kept when the token moves.
    pub id: i64,
    /// Whose device it is.
    pub user: UserId,
    /// As registered (`fcm`, `apns`…).
    pub platform: String,
    /// The push token.
    pub token: String,
    /// The app the token belongs to.
    pub app_id: String,
    /// When it was (last) registered.
    pub created_at: Timestamp,
}

/// A refresh token, known by its JWT id. Tokens issued from one login share a
/// `family`, so that reuse of a rotated token can revoke them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// The token's JWT id (`jti`).
    pub id: String,
    /// Whose token it is.
    pub user: UserId,
    /// Shared by every token rotated from one login.
    pub family: String,
    /// When it expires (its JWT's `exp`); kept, not checked, by the store.
    pub expires_at: Timestamp,
}

/// What happened when a refresh token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenUse {
    /// It was live and is now spent: issue the next one.
    Live(RefreshTokenRecord),
    /// It had already been spent or revoked.
    Spent(RefreshTokenRecord),
    /// Never issued by this server (or deleted with its user).
    Unknown,
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Assigned by the store at creation; never reused.
    pub id: RoomId,
    /// Unique, matched exactly; `direct/{lo}/{hi}` for a conversation.
    pub name: String,
    /// Its type: who may join it.
    pub kind: RoomType,
    /// Who created it; unchanged when ownership is handed over.
    pub creator: UserId,
    /// Its owner (see `roles.rs`): the creator until handed over.
    pub owner: UserId,
    /// Its settings beyond name and type.
    pub profile: RoomProfile,
    /// When it was created.
    pub created_at: Timestamp,
    /// The seq of the newest timeline event, 0 while the room has none.
    pub last_seq: Seq,
    /// The seq of the newest message, 0 while the room has none.
    pub last_message_seq: Seq,
}

/// A room to create. The creator becomes a member; `invited` users (other
/// than the creator, duplicates ignored) become invited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Must be unique (`Conflict(RoomName)`), matched exactly.
    pub name: String,
    /// Its type: who may join it.
    pub kind: RoomType,
    /// Who creates it: its first member and its owner.
    pub creator: UserId,
    /// Users to invite.
    pub invited: Vec<UserId>,
    /// When it is created.
    pub created_at: Timestamp,
}

/// A room looked up by id or by its unique name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKey<'a> {
    /// By id.
    Id(RoomId),
    /// By name, matched exactly.
    Name(&'a str),
}

/// How a user stands in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Joined: reads the room and, unless muted, sends to it.
    Member,
    /// Invited, not joined yet: may not read the room.
    Invited,
}

/// A member or invitee of a room, with the name the API shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPerson {
    /// The member or invitee.
    pub user: UserId,
    /// Their username.
    pub username: String,
    /// Member or invited.
    pub state: MemberState,
    /// 0 for invitees.
    pub read_seq: Seq,
    /// `Member` for invitees (and in conversations, where it means nothing).
    pub role: Role,
}

/// One room of a user's room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRoom {
    /// The room.
    pub room: RoomRecord,
    /// How the user stands in it: member or invited.
    pub state: MemberState,
    /// The user's read mark; 0 for invitees.
    pub read_seq: Seq,
    /// The user's role in the room; `Member` for invitees.
    pub role: Role,
    /// Until when the user may not send here, if muted (see
    /// [`Storage::update_member`]); it may have passed.
    pub muted_until: Option<Timestamp>,
    /// Messages from others above the read mark; 0 for invitees.
    pub unread: u64,
    /// Of those, the ones that mention this user.
    pub mentions: u64,
    /// Its members, invitees not counted.
    pub member_count: u64,
    /// The highest read mark among the other members, 0 if there are none;
    /// always 0 for invitees, who may not see the room's progress yet. Lets
    /// the service tell whether the user's own last message was read by
    /// someone without reading every room's marks. A member who joined
    /// after a message counts as having read it (joining starts at
    /// `last_seq`).
    pub others_read_seq: Seq,
    /// The newest message; `None` for an empty room and always for invitees
    /// (they may not read the room yet).
    pub last_message: Option<StoredMessage>,
}

/// One conversation of a user's list: the room as [`UserRoom`] sees it from
/// that user, and the other participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The conversation's room, as the user sees it.
    pub room: UserRoom,
    /// The other participant.
    pub other: UserRecord,
}

/// An uploaded file's row: the wire form and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    /// What clients see of it.
    pub attachment: Attachment,
    /// Who uploaded it: the only one who may read or send it until it is
    /// sent.
    pub owner: UserId,
    /// Where its bytes are in the blob store (the thumbnail's key is
    /// derived from it); made by the server, never by a client.
    pub blob_key: String,
    /// The message it was sent with, and that message's room.
    pub sent: Option<(RoomId, MessageId)>,
    /// Doomed: its message or room was deleted, or it was never sent in
    /// time, or its uploader deleted it. Its files are deleted next, then
    /// the row ([`Storage::forget_attachments`]).
    pub doomed: bool,
}

/// A new upload whose bytes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttachment {
    /// Its uploader.
    pub owner: UserId,
    /// Its name, made safe.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed from the bytes.
    pub content_type: String,
    /// Pixels, for an image.
    pub dimensions: Option<(u32, u32)>,
    /// Its thumbnail, for an image that has one.
    pub thumbnail: Option<chat_core::attachment::Thumbnail>,
    /// Where its bytes are.
    pub blob_key: String,
    /// When it was uploaded.
    pub created_at: Timestamp,
}

/// A message as stored. `is_read` depends on the viewer and is worked out by
/// the service from read marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Unique across rooms, increasing, never reused.
    pub id: MessageId,
    /// The room it was sent to.
    pub room: RoomId,
    /// Its place in the room's timeline.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's display name at read time.
    pub sender_name: String,
    /// Its text as last edited; empty once deleted.
    pub body: String,
    /// When it was sent.
    pub created_at: Timestamp,
    /// The sender's idempotency key, if given: a repeated
    /// `(sender, client_id)` returns this message.
    pub client_id: Option<String>,
    /// When the body was last edited.
    pub edited_at: Option<Timestamp>,
    /// Changes since it was sent (edits, its deletion).
    pub version: u32,
    /// Deleted: the body is erased (empty), the row keeps its seq.
    pub deleted: bool,
    /// Pinned to its room.
    pub pinned: bool,
    /// The message it replies to, as the reply shows it.
    pub reply: Option<StoredReply>,
    /// The root of the thread it is in.
    pub thread_root: Option<MessageId>,
    /// As a thread's root: its replies not deleted, and when the newest was
    /// sent (`None`: it never had one).
    pub reply_count: u32,
    /// As a thread's root: when its newest reply was sent; `None` if it
    /// never had one.
    pub last_reply_at: Option<Timestamp>,
    /// Who it mentions, in the order given.
    pub mentions: Vec<UserId>,
    /// The files sent with it, as they were when it was sent; none once it
    /// is deleted.
    pub attachments: Vec<Attachment>,
}

/// What a reply keeps of the message it replies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// The message replied to.
    pub id: MessageId,
    /// Its seq in the room.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The start of its body when the reply was sent; `None` once it is
    /// deleted.
    pub snippet: Option<String>,
}

/// A reply's snippet of `body`: its first [`SNIPPET_CHARS`] characters.
pub fn snippet(body: &str) -> String {
    body.chars().take(SNIPPET_CHARS).collect()
}

/// A membership change in a room's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    /// The room.
    pub room: RoomId,
    /// The event's place in the room's timeline.
    pub seq: Seq,
    /// Whose membership changed.
    pub user: UserId,
    /// What happened to the membership.
    pub change: MemberChange,
    /// When it happened.
    pub created_at: Timestamp,
    /// Who made it, when not `user` themself.
    pub by: Option<UserId>,
    /// Why, as `by` gave it for a kick or a ban; `None` if not given.
    pub reason: Option<String>,
    /// The role after a `RoleChanged` (`Owner`: the room was handed to
    /// `user`, and `by` is an admin now).
    pub role: Option<Role>,
    /// The end of a ban or a mute; `None`: until lifted.
    pub until: Option<Timestamp>,
}

/// A change to someone's membership of a room, as
/// [`Storage::update_member`] takes it: a join or a leave by the user
/// (`by` is `None`), an invitation by a member, or a moderator's action
/// (kick, ban, unban, mute, unmute, role change; a handover is a
/// `RoleChanged` to `Owner`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberUpdate {
    /// The room.
    pub room: RoomId,
    /// Whose membership changes.
    pub user: UserId,
    /// What happens to it.
    pub change: MemberChange,
    /// Who makes the change; `None`: `user` themself (a join, a leave).
    pub by: Option<UserId>,
    /// For a kick or a ban: why, as `by` gives it.
    pub reason: Option<String>,
    /// The new role, for a `RoleChanged`.
    pub role: Option<Role>,
    /// For a ban or a mute: when it ends; `None`: until lifted.
    pub until: Option<Timestamp>,
    /// When it is made: the event's time.
    pub created_at: Timestamp,
}

impl MemberUpdate {
    /// `change` of `user`'s membership, made by `by` (`None`: by the user).
    pub fn new(room: RoomId, user: UserId, change: MemberChange, by: Option<UserId>) -> Self {
        Self {
            room,
            user,
            change,
            by,
            reason: None,
            role: None,
            until: None,
            created_at: Timestamp::now(),
        }
    }

    /// The event it appends, at `seq`.
    pub(crate) fn event(&self, seq: Seq) -> StoredMember {
        StoredMember {
            room: self.room,
            seq,
            user: self.user,
            change: self.change,
            created_at: self.created_at,
            by: self.by,
            reason: self.reason.clone(),
            role: self.role,
            until: self.until,
        }
    }

    /// What the rule reads of it.
    pub(crate) fn request(&self) -> roles::Request<'_> {
        roles::Request {
            user: self.user,
            by: self.by,
            change: self.change,
            role: self.role,
            until: self.until.as_ref(),
            at: self.created_at,
        }
    }
}

/// A ban in force, as [`Storage::bans`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// The room banned from.
    pub room: RoomId,
    /// Who is banned.
    pub user: UserId,
    /// Their username.
    pub username: String,
    /// Who banned them.
    pub by: UserId,
    /// Why, as `by` gave it; `None` if not given.
    pub reason: Option<String>,
    /// When it ends; `None`: until lifted.
    pub until: Option<Timestamp>,
    /// When they were banned.
    pub created_at: Timestamp,
}

/// What a change did to an earlier message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateKind {
    /// Its body was replaced.
    Edited,
    /// It was deleted: its body erased, its row kept as a tombstone.
    Deleted,
    /// `user` added (`added`) or took back a reaction `key`. The key of a
    /// reaction to a message deleted since reads back empty.
    Reacted {
        /// The reaction key.
        key: String,
        /// `true` if added, `false` if taken back.
        added: bool,
    },
    /// Pinned to the room, or unpinned.
    Pinned {
        /// `true` if pinned, `false` if unpinned.
        pinned: bool,
    },
}

/// How many users reacted to a message with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    /// The reaction key (1 to 32 characters, such as an emoji).
    pub key: String,
    /// How many users reacted with it, each at most once.
    pub count: u32,
    /// Whether the viewer asked about is one of them (always `false` in a
    /// [`StoredUpdate`], which every viewer shares).
    pub mine: bool,
}

/// A change to an earlier message, in the room's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpdate {
    /// The message's room.
    pub room: RoomId,
    /// The change's place in the room's timeline (not the message's seq).
    pub seq: Seq,
    /// Who made the change.
    pub user: UserId,
    /// What it did.
    pub kind: UpdateKind,
    /// When it was made.
    pub created_at: Timestamp,
    /// The message changed, as it stands when read (its newest body, or
    /// its tombstone).
    pub message: StoredMessage,
    /// The message's reactions right after the change, for the frame
    /// published at the commit; empty when the event is read back (ask
    /// [`Storage::reactions`]).
    pub reactions: Vec<ReactionCount>,
}

/// One event of a room's timeline, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredEvent {
    /// A message sent.
    Message(StoredMessage),
    /// A membership change.
    Member(StoredMember),
    /// A change to an earlier message.
    Update(StoredUpdate),
    /// A change to the room's settings.
    Room(StoredRoomUpdate),
}

/// A change to a room's settings, in its timeline: what changed, with the
/// new values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoomUpdate {
    /// The room.
    pub room: RoomId,
    /// The event's place in the room's timeline.
    pub seq: Seq,
    /// Who changed them.
    pub user: UserId,
    /// When they were changed.
    pub created_at: Timestamp,
    /// Only what changed, with its new value.
    pub settings: RoomSettings,
}

/// A change to make to a room's settings ([`Storage::update_room`]),
/// already validated (name rules, lengths, the type public or private).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomChange {
    /// The room to change.
    pub room: RoomId,
    /// Who makes it: an admin or the owner.
    pub by: UserId,
    /// What to set: `None` fields stay as they are, an empty string clears
    /// a text.
    pub settings: RoomSettings,
    /// When it is made: the event's time.
    pub created_at: Timestamp,
}

/// What a room shows and what its appends read beside the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomProfile {
    /// A short topic line; `None` when unset.
    pub topic: Option<String>,
    /// A longer description; `None` when unset.
    pub description: Option<String>,
    /// The URL of its picture; `None` when unset.
    pub avatar_url: Option<String>,
    /// Only admins and the owner post.
    pub announcement: bool,
    /// Seconds between a member's messages; 0 for off.
    pub slow_mode: u32,
}

impl RoomProfile {
    /// `settings` applied to it, and what of them changes anything (`None`:
    /// nothing). The name and type are the record's, given beside.
    pub(crate) fn apply(
        &self,
        name: &str,
        kind: RoomType,
        settings: &RoomSettings,
    ) -> Option<(String, RoomType, RoomProfile, RoomSettings)> {
        let text = |new: &Option<String>, old: &Option<String>| {
            new.as_ref()
                .map(|v| (!v.is_empty()).then(|| v.clone()))
                .filter(|v| v != old)
        };
        let changed = RoomSettings {
            name: settings.name.clone().filter(|n| n != name),
            kind: settings.kind.filter(|k| *k != kind),
            topic: text(&settings.topic, &self.topic).map(Option::unwrap_or_default),
            description: text(&settings.description, &self.description)
                .map(Option::unwrap_or_default),
            avatar_url: text(&settings.avatar_url, &self.avatar_url).map(Option::unwrap_or_default),
            announcement: settings.announcement.filter(|a| *a != self.announcement),
            slow_mode_seconds: settings.slow_mode_seconds.filter(|s| *s != self.slow_mode),
        };
        if changed.is_empty() {
            return None;
        }
        let clear = |v: &Option<String>, old: &Option<String>| match v {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.clone()),
            None => old.clone(),
        };
        let profile = RoomProfile {
            topic: clear(&changed.topic, &self.topic),
            description: clear(&changed.description, &self.description),
            avatar_url: clear(&changed.avatar_url, &self.avatar_url),
            announcement: changed.announcement.unwrap_or(self.announcement),
            slow_mode: changed.slow_mode_seconds.unwrap_or(self.slow_mode),
        };
        Some((
            changed.name.clone().unwrap_or_else(|| name.to_owned()),
            changed.kind.unwrap_or(kind),
            profile,
            changed,
        ))
    }
}

/// One public room of the directory ([`Storage::public_rooms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRoom {
    /// The room.
    pub room: RoomRecord,
    /// Its members, invitees not counted.
    pub member_count: u64,
    /// When its newest message was sent, else when it was created.
    pub last_activity_at: Timestamp,
}

impl StoredEvent {
    /// The same event, borrowed.
    pub fn as_committed(&self) -> Committed<'_> {
        match self {
            Self::Message(m) => Committed::Message(m),
            Self::Member(m) => Committed::Member(m),
            Self::Update(u) => Committed::Update(u),
            Self::Room(r) => Committed::Room(r),
        }
    }

    /// The room it belongs to.
    pub fn room(&self) -> RoomId {
        self.as_committed().room()
    }

    /// Its place in that room's timeline.
    pub fn seq(&self) -> Seq {
        self.as_committed().seq()
    }
}

/// A just-committed event, borrowed from the records the committer
/// answers its callers with: telling the listener copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed<'a> {
    /// A message sent.
    Message(&'a StoredMessage),
    /// A membership change.
    Member(&'a StoredMember),
    /// A change to an earlier message.
    Update(&'a StoredUpdate),
    /// A change to the room's settings.
    Room(&'a StoredRoomUpdate),
}

impl Committed<'_> {
    /// The room it belongs to.
    pub fn room(&self) -> RoomId {
        match self {
            Self::Message(m) => m.room,
            Self::Member(m) => m.room,
            Self::Update(u) => u.room,
            Self::Room(r) => r.room,
        }
    }

    /// Its place in that room's timeline.
    pub fn seq(&self) -> Seq {
        match self {
            Self::Message(m) => m.seq,
            Self::Member(m) => m.seq,
            Self::Update(u) => u.seq,
            Self::Room(r) => r.seq,
        }
    }
}

/// A page of a room's timeline, oldest first (see [`HistoryQuery`] for the
/// bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePage {
    /// The events, oldest first.
    pub events: Vec<StoredEvent>,
    /// More events exist beyond the page in the direction it was read.
    pub has_more: bool,
}

/// A message to append. The backend assigns `id` and `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room to send to.
    pub room: RoomId,
    /// Who sends it: a member of the room (`NotMember` otherwise).
    pub sender: UserId,
    /// Its text.
    pub body: String,
    /// The sender's idempotency key, if any: a repeated
    /// `(sender, client_id)` stores nothing and returns the original.
    pub client_id: Option<String>,
    /// When it is sent.
    pub created_at: Timestamp,
    /// The connection it came from, if any: not stored, only passed to the
    /// [`CommitListener`] with the message.
    pub origin: Option<ConnId>,
    /// A message of the same room (checked by the caller) that it replies
    /// to: the backend keeps its seq, sender and [`snippet`] as they are
    /// at the commit.
    pub reply_to: Option<MessageId>,
    /// The root of its thread, a message of the same room that is not
    /// itself in a thread (checked by the caller): its reply count goes up.
    pub thread_root: Option<MessageId>,
    /// Members it mentions (checked, without repeats, by the caller).
    pub mentions: Vec<UserId>,
    /// Uploads of the sender's to send with it (checked by the caller:
    /// theirs, not sent, not doomed): the message keeps them as they are,
    /// and the append links each upload's row to the message, in the same
    /// transaction.
    pub attachments: Vec<Attachment>,
}

impl NewMessage {
    /// A plain message sent now: no reply, thread, mention or origin.
    pub fn new(room: RoomId, sender: UserId, body: impl Into<String>) -> Self {
        Self {
            room,
            sender,
            body: body.into(),
            client_id: None,
            created_at: Timestamp::now(),
            origin: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// A change to make to an earlier message; the backend checks it and
/// applies it under the room's lock ([`Storage::change_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    /// The message to change.
    pub message: MessageId,
    /// The message's room, if the caller knows it (messages never move);
    /// the SQL backend reads it otherwise, so that its committer runs the
    /// change beside work on other rooms. A backend checks nothing by it.
    pub room: Option<RoomId>,
    /// Who makes the change: a member of the message's room.
    pub user: UserId,
    /// What to do to it.
    pub op: ChangeOp,
    /// Who besides nobody may make it: the service's rule, evaluated with
    /// the rows as they are under the lock.
    pub allowed: Authority,
    /// When it is made: the event's time, and the new `edited_at` of an edit.
    pub created_at: Timestamp,
}

impl MessageChange {
    /// The rule of this change to `target`, in a room of the kind and
    /// creator given,
    /// judged on the rows as they are under the room's lock, the same for
    /// every backend: what the change does (`None`: nothing, as for the
    /// same body again or a second deletion) or why it is refused.
    pub(crate) fn decide(
        &self,
        target: &StoredMessage,
        standing: &Standing,
    ) -> Result<Option<UpdateKind>, StorageError> {
        let own = target.sender == self.user;
        let allowed = match self.allowed {
            Authority::Sender => own,
            Authority::SenderOrModerator => own || roles::moderates(standing.kind, standing.role),
            Authority::Member => true,
            Authority::Moderator => {
                if standing.kind == RoomType::Direct
                    || roles::moderates(standing.kind, standing.role)
                {
                    true
                } else {
                    return Err(StorageError::Refused(Refusal::NotModerator));
                }
            }
        };
        if !allowed {
            return Err(StorageError::Refused(Refusal::NotAllowed));
        }
        let refused = |why| Err(StorageError::Refused(why));
        match &self.op {
            ChangeOp::Delete if target.deleted => Ok(None),
            ChangeOp::Delete => Ok(Some(UpdateKind::Deleted)),
            _ if target.deleted => refused(Refusal::Deleted),
            ChangeOp::Edit { body } if *body == target.body => Ok(None),
            ChangeOp::Edit { .. } => Ok(Some(UpdateKind::Edited)),
            ChangeOp::React { add, .. } if *add == standing.reacted => Ok(None),
            ChangeOp::React { add: true, .. }
                if !standing.key_present && standing.keys >= MAX_REACTION_KEYS =>
            {
                refused(Refusal::TooManyReactions)
            }
            ChangeOp::React { key, add } => Ok(Some(UpdateKind::Reacted {
                key: key.clone(),
                added: *add,
            })),
            ChangeOp::Pin { pin } if *pin == target.pinned => Ok(None),
            ChangeOp::Pin { pin: true } if standing.pins >= MAX_PINS => {
                refused(Refusal::TooManyPins)
            }
            ChangeOp::Pin { pin } => Ok(Some(UpdateKind::Pinned { pinned: *pin })),
        }
    }
}

/// The change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOp {
    /// A new body. Equal to the current one: nothing changes.
    Edit {
        /// The new body.
        body: String,
    },
    /// Erase the body (and whatever hangs on the message: its reactions);
    /// the row stays as a tombstone. Already deleted: nothing changes.
    Delete,
    /// Add (`add`) or take back the caller's reaction `key` (validated by
    /// the caller). Already so: nothing changes.
    React {
        /// The reaction key.
        key: String,
        /// `true` to add it, `false` to take it back.
        add: bool,
    },
    /// Pin the message to its room, or unpin it. Already so: nothing
    /// changes. A deletion unpins.
    Pin {
        /// `true` to pin, `false` to unpin.
        pin: bool,
    },
}

/// What the rule of a change needs to know beyond the message, read under
/// the room's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) kind: RoomType,
    /// The caller's role in the room.
    pub(crate) role: Role,
    /// For a reaction: whether the caller has it already.
    pub(crate) reacted: bool,
    /// For a reaction: how many distinct keys the message has, and whether
    /// this key is one of them.
    pub(crate) keys: usize,
    pub(crate) key_present: bool,
    /// For a pin: how many messages the room has pinned.
    pub(crate) pins: usize,
}

/// The most distinct reaction keys one message takes.
pub const MAX_REACTION_KEYS: usize = 20;

/// The most messages one room keeps pinned.
pub const MAX_PINS: usize = 50;

/// Who may change a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Its sender only.
    Sender,
    /// Its sender, or whoever moderates the room (`roles::moderates`).
    SenderOrModerator,
    /// Any member of the room.
    Member,
    /// Whoever moderates the room; in a conversation, either participant.
    Moderator,
}

/// What a [`MessageChange`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The message as it now stands.
    pub message: StoredMessage,
    /// The timeline event the change appended; `None` if nothing changed
    /// (the same body again, a second deletion).
    pub event: Option<StoredUpdate>,
    /// The message as the one who changed it sees it, where the backend
    /// had it at hand as it wrote the change (PostgreSQL's batch, memory),
    /// so that the caller need not read it again. `None`: the caller reads
    /// it ([`read_seen`]).
    pub seen: Option<Seen>,
}

/// What `viewer` sees of `message` besides the message, read from
/// `store`.
pub async fn read_seen<S: Storage + ?Sized>(
    store: &S,
    message: &StoredMessage,
    viewer: UserId,
) -> Result<Seen, StorageError> {
    let reactions = store
        .reactions(&[message.id], viewer)
        .await?
        .into_iter()
        .find(|(id, _)| *id == message.id)
        .map(|(_, counts)| counts)
        .unwrap_or_default();
    let marks = store.read_marks(message.room).await?;
    let own_mark = marks.iter().find(|(u, _)| *u == viewer).map_or(0, |m| m.1);
    let others_mark = marks
        .iter()
        .filter(|(u, _)| *u != viewer)
        .map(|m| m.1)
        .max()
        .unwrap_or(0);
    Ok(Seen {
        reactions,
        own_mark,
        others_mark,
    })
}

/// What one viewer sees of a message besides the message: what
/// [`Storage::reactions`] and [`Storage::read_marks`] say of it for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The message's reactions, the viewer's own marked `mine`, in the
    /// order of each key's first.
    pub reactions: Vec<ReactionCount>,
    /// The viewer's read mark in the message's room (0 if none).
    pub own_mark: Seq,
    /// The highest read mark of the room's other members (0 if none).
    pub others_mark: Seq,
}

/// Why a backend refused a change to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The [`Authority`] does not cover the caller.
    NotAllowed,
    /// The message was deleted; it cannot be edited or reacted to.
    Deleted,
    /// The message has [`MAX_REACTION_KEYS`] keys already and this is a
    /// new one.
    TooManyReactions,
    /// The change needs whoever moderates the room.
    NotModerator,
    /// The room has [`MAX_PINS`] pinned messages already.
    TooManyPins,
    /// The caller's role is not above the target's, or the action is the
    /// owner's.
    InsufficientRole,
    /// The user is banned from the room.
    Banned,
    /// The sender is muted in the room until then (`None`: until unmuted).
    Muted {
        /// When the mute ends; `None`: until unmuted.
        until: Option<Timestamp>,
    },
    /// The user the action is for is not in the room.
    NotInRoom,
    /// An action a moderator cannot take on themself.
    SelfAction,
    /// Conversations take no moderation.
    Conversation,
    /// An announcement room: admins and the owner post.
    AnnouncementOnly,
    /// Slow mode: the sender may send again from then.
    SlowMode {
        /// When the sender may send again.
        until: Timestamp,
    },
    /// The other participant of the conversation blocked the sender: the
    /// conversation answers as one that does not exist.
    Blocked,
}

/// Hears of every new timeline event at its commit point: the seam that
/// lets whoever commits publish, in order, with no reordering downstream.
pub trait CommitListener: Send + Sync + 'static {
    /// `event` was just committed (repeats of a `client_id` are not new and
    /// do not come here). Called once per event, in seq order per room,
    /// before the call that stored it returns. It runs on the committing
    /// thread, in the middle of group commit: it must not block. `origin` is
    /// the connection a message came from.
    fn committed(&self, event: Committed<'_>, origin: Option<ConnId>);
}

/// Where a backend keeps its listener; shared with its committer.
#[derive(Clone, Default)]
pub(crate) struct Listener(Arc<std::sync::RwLock<Option<Arc<dyn CommitListener>>>>);

impl Listener {
    pub(crate) fn set(&self, listener: Arc<dyn CommitListener>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
    }

    /// Tells the listener, if there is one, of `appended` if it is new.
    pub(crate) fn appended(&self, appended: &Appended, origin: Option<ConnId>) {
        if appended.created {
            self.committed(Committed::Message(&appended.message), origin);
        }
    }

    /// Tells the listener, if there is one, of `event`.
    pub(crate) fn committed(&self, event: Committed<'_>, origin: Option<ConnId>) {
        let listener = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(listener) = listener {
            listener.committed(event, origin);
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message stored, or the original for a repeated `client_id`.
    pub message: StoredMessage,
    /// `false` when `(sender, client_id)` was already stored and `message` is
    /// the original.
    pub created: bool,
}

/// A full-text search, checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// Only rooms this user is a member of.
    pub viewer: UserId,
    /// Lowercased words, each made of letters and digits only; a message
    /// matches if it holds every one as a word.
    pub terms: Vec<String>,
    /// Only this room; `None`: every room the viewer is a member of.
    pub room: Option<RoomId>,
    /// Only messages with a lower id.
    pub before: Option<MessageId>,
    /// Already clamped by the caller.
    pub limit: u32,
}

/// Messages found, newest first, each with its room's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// Each message found, with its room's name.
    pub hits: Vec<(StoredMessage, String)>,
    /// Older hits exist.
    pub has_more: bool,
}

/// A page request. With `after`, the page runs upward from `after + 1`;
/// without it, it is the newest `limit` messages below `before` (or of the
/// room). Either way the page is returned oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only seqs below this one.
    pub before: Option<Seq>,
    /// Only seqs above this one; the page then starts right after it.
    pub after: Option<Seq>,
    /// Already clamped by the caller to 1..=200.
    pub limit: u32,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// More messages exist beyond the page in the direction it was read
    /// (above it when paging with `after`, below it otherwise), within the
    /// `before`/`after` bounds.
    pub has_more: bool,
}

/// A read mark before and after a `mark_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The mark before the call.
    pub previous: Seq,
    /// The mark after it.
    pub current: Seq,
}

impl ReadMark {
    /// Whether the mark moved.
    pub fn advanced(&self) -> bool {
        self.current > self.previous
    }
}

/// Which unique rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// The username is taken.
    Username,
    /// The email is taken (compared lowercased).
    Email,
    /// The room name is taken.
    RoomName,
    /// A live API key has the name.
    ApiKeyName,
    /// The attachment is sent with a message.
    AttachmentSent,
}

/// Storage failures. Backends map their own errors onto these; no backend
/// type leaks through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The row the operation needs (a room, a membership) does not exist.
    #[error("not found")]
    NotFound,
    /// A unique rule was broken.
    #[error("conflict on {0:?}")]
    Conflict(Conflict),
    /// An append whose sender is not a member of the room, checked in the
    /// append itself so that a send racing a leave is stored before it or
    /// refused, never stored after. What the room is and what the sender is
    /// in it (invited, or nothing) decide the caller's error.
    #[error("the sender is not a member of the room")]
    NotMember {
        /// The room's type.
        kind: RoomType,
        /// How the sender stands in the room: invited, or `None` (not at all).
        state: Option<MemberState>,
    },
    /// A change to a message that its rule does not allow.
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// The database cannot be reached (connection refused or lost, pool
    /// timeout). Retrying later may work; clients get `storage_unavailable`.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else the backend reported.
    #[error("storage error: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

/// The durable store. Object safe; used as `Arc<dyn Storage>`.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    // Users

    /// Creates a user. `Conflict(Username | Email)` if taken (emails compare
    /// lowercased).
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, StorageError>;
    /// The user with `id`, if any.
    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StorageError>;
    /// The user with exactly this username, if any.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StorageError>;
    /// `email` is matched lowercased.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StorageError>;
    /// The user the host's identity service knows as `external_id`.
    async fn user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<UserRecord>, StorageError>;
    /// The user the host's identity service knows as `user.external_id`,
    /// created if there is none yet (of two instances racing, one creates
    /// and both get that user), its display name brought up to date when
    /// `user.display_name` is given and differs. A new user's username or
    /// email taken is `Conflict(Username)` / `Conflict(Email)`.
    async fn provision_user(&self, user: &ExternalUser) -> Result<UserRecord, StorageError>;
    /// Users with `id > after`, ordered by id, at most `limit`.
    async fn users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StorageError>;
    /// The users among `ids` that exist, ordered by id.
    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StorageError>;

    // Refresh tokens

    /// Stores a newly issued refresh token, live.
    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StorageError>;
    /// Spends a refresh token atomically: of two concurrent calls with the
    /// same id, exactly one sees `Live`.
    async fn use_refresh_token(&self, id: &str) -> Result<TokenUse, StorageError>;
    /// Spends every token of a family (logout everywhere, reuse detected).
    async fn revoke_refresh_family(&self, family: &str) -> Result<(), StorageError>;

    // Server secrets

    /// Returns the secret stored under `name`, storing `candidate` first if
    /// there is none, so that every instance sharing the store agrees.
    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StorageError>;

    // Rooms

    /// Creates a room, its creator as member and its invitees.
    /// `Conflict(RoomName)` if the name is taken.
    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StorageError>;
    /// The room with `id`, if any.
    async fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StorageError>;
    /// The room with exactly this name, if any.
    async fn room_by_name(&self, name: &str) -> Result<Option<RoomRecord>, StorageError>;
    /// Deletes the room with its members and its whole history. `false` if
    /// it did not exist.
    async fn delete_room(&self, id: RoomId) -> Result<bool, StorageError>;
    /// Members and invitees with their usernames: members first in order of
    /// joining, then invitees in order of invitation.
    async fn room_people(&self, room: RoomId) -> Result<Vec<RoomPerson>, StorageError>;
    /// How `user` stands in `room`; `None` if neither member nor invited,
    /// or if there is no such room.
    async fn membership(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<Option<MemberState>, StorageError>;
    /// A room (by id or by name) and how `user` stands in it, in one read:
    /// what every access check needs. `None` if there is no such room.
    async fn room_for(
        &self,
        room: RoomKey<'_>,
        user: UserId,
    ) -> Result<Option<(RoomRecord, Option<MemberState>)>, StorageError> {
        let record = match room {
            RoomKey::Id(id) => self.room(id).await?,
            RoomKey::Name(name) => self.room_by_name(name).await?,
        };
        match record {
            Some(r) => {
                let state = self.membership(r.id, user).await?;
                Ok(Some((r, state)))
            }
            None => Ok(None),
        }
    }
    /// Changes a membership and appends its event to the room's timeline,
    /// in one transaction under the room's lock, where the rule
    /// (`roles::judge`) is checked on the rows as they stand: the event,
    /// or `None` if nothing changed (a join of a member, a kick of someone
    /// gone, a second unmute). A join makes `user` a member (from invited
    /// or from nothing) with its read mark at the room's `last_seq`; a
    /// leave, kick or ban removes the member or invitee (a ban also keeps
    /// them from joining and from being invited until it ends); a mute
    /// keeps a member from sending until it ends. `NotFound` if the room is
    /// gone (for a join, an invitation or a moderator's action);
    /// `NotMember` if `by` is not a member; `Refused` for what the rule
    /// does not allow.
    async fn update_member(
        &self,
        update: MemberUpdate,
    ) -> Result<Option<StoredMember>, StorageError>;
    /// Joins `room` (see [`Storage::update_member`]); `false` if already a
    /// member (its mark is then untouched, and nothing is appended).
    async fn join_room(&self, room: RoomId, user: UserId) -> Result<bool, StorageError> {
        let update = MemberUpdate::new(room, user, MemberChange::Joined, None);
        Ok(self.update_member(update).await?.is_some())
    }
    /// Invites, as `by`, the users that are neither members nor invited
    /// yet, each with an `Invited` event, in order; stops at the first
    /// refusal (a banned user), those before it invited.
    async fn invite(&self, room: RoomId, by: UserId, users: &[UserId]) -> Result<(), StorageError> {
        for &user in users {
            let update = MemberUpdate::new(room, user, MemberChange::Invited, Some(by));
            self.update_member(update).await?;
        }
        Ok(())
    }
    /// Removes a member or invitee with a `Left` event; `false` if `user`
    /// was neither (nothing is appended).
    async fn leave_room(&self, room: RoomId, user: UserId) -> Result<bool, StorageError> {
        let update = MemberUpdate::new(room, user, MemberChange::Left, None);
        match self.update_member(update).await {
            Ok(event) => Ok(event.is_some()),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Changes a room's settings and appends a `room_updated` event with
    /// what changed, in one transaction under the room's lock, where the
    /// rule (`roles::judge_settings`: an admin or the owner of a group
    /// room) is checked. `None` if nothing changes. `NotFound` if the room
    /// is gone; `Conflict(RoomName)` if the new name is taken.
    async fn update_room(
        &self,
        change: RoomChange,
    ) -> Result<Option<StoredRoomUpdate>, StorageError>;
    /// Public rooms by name, after `after`, whose name starts with `prefix`
    /// (both compared lowercased), at most `limit`.
    async fn public_rooms(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PublicRoom>, StorageError>;
    // Accounts

    // The outbox: each room's timeline delivered to sinks (webhook
    // endpoints, push gateways) from a cursor per sink and room.

    /// Registers a sink if it is new, its cursor in every
    /// existing room at the room's last seq (it gets what happens from now
    /// on; a room created later starts at 0). Whether it was new.
    async fn outbox_start(&self, sink: &str, at: Timestamp) -> Result<bool, StorageError>;
    /// Rooms with events past `sink`'s cursor that nobody holds a
    /// lease on and whose retry is due at `now`, by room id, at most
    /// `limit`.
    async fn outbox_backlog(
        &self,
        sink: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxBacklog>, StorageError>;
    /// Takes (or renews) the lease on `room` for `sink` until `until`,
    /// if nobody else holds one at `now`: the cursor, or `None` if another
    /// owner holds it or the room is gone.
    async fn outbox_claim(
        &self,
        sink: &str,
        room: RoomId,
        owner: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<OutboxCursor>, StorageError>;
    /// The sink took everything up to `seq`: the cursor moves
    /// there (never back) and the failures are forgotten; the lease stays.
    async fn outbox_delivered(
        &self,
        sink: &str,
        room: RoomId,
        owner: &str,
        seq: Seq,
    ) -> Result<(), StorageError>;
    /// A delivery failed: `attempts` so far, the next one due at `next`;
    /// the lease is given up.
    async fn outbox_failed(
        &self,
        sink: &str,
        room: RoomId,
        owner: &str,
        attempts: u32,
        next: Timestamp,
    ) -> Result<(), StorageError>;
    /// Gives the lease up.
    async fn outbox_release(
        &self,
        sink: &str,
        room: RoomId,
        owner: &str,
    ) -> Result<(), StorageError>;

    // Push devices

    /// Registers `token` of `app_id` for `user`; the same token registered
    /// before (by anyone) moves to `user` and keeps its id.
    async fn register_device(
        &self,
        user: UserId,
        platform: &str,
        token: &str,
        app_id: &str,
        at: Timestamp,
    ) -> Result<DeviceRecord, StorageError>;
    /// The devices of `users`, by id.
    async fn devices(&self, users: &[UserId]) -> Result<Vec<DeviceRecord>, StorageError>;
    /// Unregisters `user`'s device `id`; `false` if they have none such.
    async fn delete_device(&self, user: UserId, id: i64) -> Result<bool, StorageError>;
    /// Forgets a token the gateway rejected, whoever had it.
    async fn delete_device_token(&self, app_id: &str, token: &str) -> Result<bool, StorageError>;

    // API keys

    /// Stores a new API key by the hash of its secret.
    /// `Conflict(ApiKeyName)` if a live key has the name.
    async fn create_api_key(
        &self,
        name: &str,
        key_hash: &str,
        created_at: Timestamp,
    ) -> Result<ApiKeyRecord, StorageError>;
    /// Every API key, revoked ones included, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StorageError>;
    /// The live (not revoked) key with this hash.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StorageError>;
    /// Revokes the live key named `name`; `false` if there is none.
    async fn revoke_api_key(&self, name: &str, at: Timestamp) -> Result<bool, StorageError>;
    /// Records that the key authorized a call at `at`.
    async fn touch_api_key(&self, id: i64, at: Timestamp) -> Result<(), StorageError>;

    /// Makes `user` a server admin or not; `false` if there is no such
    /// user.
    async fn set_admin(&self, user: UserId, admin: bool) -> Result<bool, StorageError>;
    /// Deactivates `user` at `at` (their tokens all revoked: the token
    /// version moves on, the refresh tokens are spent) or reactivates them
    /// (`None`); the token version after, `None` if there is no such user.
    async fn set_deactivated(
        &self,
        user: UserId,
        at: Option<Timestamp>,
    ) -> Result<Option<i64>, StorageError>;
    /// Revokes every token of `user` (log out everywhere): the token
    /// version after, `None` if there is no such user.
    async fn revoke_sessions(&self, user: UserId) -> Result<Option<i64>, StorageError>;

    // Reports

    /// Stores a report; its id.
    async fn create_report(&self, report: NewReport) -> Result<i64, StorageError>;
    /// The report with `id`, if any.
    async fn report(&self, id: i64) -> Result<Option<ReportRecord>, StorageError>;
    /// Reports with an id below `before`, newest first, at most `limit`.
    async fn reports(
        &self,
        status: ReportStatus,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ReportRecord>, StorageError>;
    /// Resolves an open report; `false` if there is no open report `id`.
    async fn resolve_report(
        &self,
        id: i64,
        by: UserId,
        resolution: &str,
        at: Timestamp,
    ) -> Result<bool, StorageError>;

    // Blocks

    /// `blocker` blocks `blocked` (see `roles::send_refusal`); `false` if
    /// it already did.
    async fn block_user(
        &self,
        blocker: UserId,
        blocked: UserId,
        at: Timestamp,
    ) -> Result<bool, StorageError>;
    /// Lifts a block; `false` if there was none.
    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError>;
    /// Whether `blocker` blocked `blocked`.
    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError>;
    /// The users `blocker` blocked, with when, the newest first.
    async fn blocked_users(
        &self,
        blocker: UserId,
    ) -> Result<Vec<(UserRecord, Timestamp)>, StorageError>;

    /// The room's bans in force at `now`, newest first.
    async fn bans(&self, room: RoomId, now: Timestamp) -> Result<Vec<BanRecord>, StorageError>;
    /// Every room where `user` is a member or invited, newest activity
    /// first (last message time, else creation time). Conversations
    /// included; callers filter by kind.
    async fn user_rooms(&self, user: UserId) -> Result<Vec<UserRoom>, StorageError>;

    // Conversations

    /// Creates or gets the conversation between `a` and `b`; `true` when
    /// this call created it. A new one is a [`RoomType::Direct`] room named
    /// `direct/{lo}/{hi}` (the two ids in order, a name no group room can
    /// take), with `a` as creator and both users as members with read mark
    /// 0. An existing one is returned as it is. The pair is unordered and
    /// unique, enforced by the store: of concurrent calls for one pair, from
    /// either side, exactly one sees `true` and all get the same room. The
    /// caller makes sure both users exist; `a == b` is rejected (`Backend`).
    async fn direct_room(
        &self,
        a: UserId,
        b: UserId,
        created_at: Timestamp,
    ) -> Result<(RoomRecord, bool), StorageError>;
    /// The conversation between `a` and `b`, in either order (never one for
    /// `a == b`).
    async fn find_direct_room(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<Option<RoomRecord>, StorageError>;
    /// Every conversation `user` is in (made by [`Storage::direct_room`];
    /// a direct room made by `create_room` has no pair and is not one),
    /// newest activity first like [`Storage::user_rooms`], in one query.
    async fn user_conversations(&self, user: UserId) -> Result<Vec<Conversation>, StorageError>;

    // Messages

    /// Makes `listener` hear of every message committed from now on (see
    /// [`CommitListener`]), replacing any earlier one.
    fn listen(&self, listener: Arc<dyn CommitListener>);
    /// Stores a message with the room's next seq (see the module invariants).
    /// `NotFound` if the room is gone, `NotMember` if the sender is not one
    /// of its members (checked before a repeated `client_id` is answered).
    async fn append(&self, message: NewMessage) -> Result<Appended, StorageError>;
    /// Appends `messages` as if by one `append` after the other, in their
    /// order, answering each in that order. Backends that group-commit queue
    /// them all before waiting, so a burst sent over one socket waits for
    /// one commit instead of one per message.
    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StorageError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.append(message).await);
        }
        results
    }
    /// A page of the room's messages (the other kinds of event left out,
    /// and thread replies: [`Storage::thread`] pages those).
    async fn history(&self, room: RoomId, query: HistoryQuery)
    -> Result<HistoryPage, StorageError>;
    /// A page of the replies in the thread of `root`, by seq.
    async fn thread(
        &self,
        root: MessageId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError>;
    /// One message by id; `None` if no message has it (a timeline event
    /// that is not a message counts as none).
    async fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StorageError>;
    /// The message `sender` stored with `client_id`, if any: what a repeat
    /// of that send is answered with.
    async fn message_by_client_id(
        &self,
        sender: UserId,
        client_id: &str,
    ) -> Result<Option<StoredMessage>, StorageError>;
    /// Which of `users` are members of `room` (in no given order).
    async fn members_among(
        &self,
        room: RoomId,
        users: &[UserId],
    ) -> Result<Vec<UserId>, StorageError>;
    /// A page of the room's timeline, every kind of event.
    async fn timeline(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<TimelinePage, StorageError>;

    /// Changes an earlier message and appends the change to its room's
    /// timeline, in one transaction under the room's lock (see the module
    /// invariants). `NotFound` if there is no such message (a timeline
    /// event that is not a message counts as none); `NotMember` if the
    /// caller is not a member of its room; `Refused` if the rule does not
    /// allow it or the message is deleted (for an edit). A deletion
    /// erases the body and makes the message unread for nobody.
    async fn change_message(&self, change: MessageChange) -> Result<Changed, StorageError>;
    /// Messages matching a search in the rooms the viewer is a member of,
    /// newest first (deleted ones never match): an index on SQLite (FTS5)
    /// and PostgreSQL (full text, GIN), a scan in memory.
    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, StorageError>;
    /// The room's pinned messages, the most recently pinned first.
    async fn pins(&self, room: RoomId) -> Result<Vec<StoredMessage>, StorageError>;
    /// The reactions of `messages`, per message (in the order of each
    /// key's first reaction), with whether `viewer` is among each key's
    /// users. Messages without reactions are left out.
    async fn reactions(
        &self,
        messages: &[MessageId],
        viewer: UserId,
    ) -> Result<Vec<(MessageId, Vec<ReactionCount>)>, StorageError>;

    // Read marks

    /// Moves `user`'s read mark in `room` up to `min(seq, last_seq)`; never
    /// down. `NotFound` unless `user` is a member.
    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        seq: Seq,
    ) -> Result<ReadMark, StorageError>;
    /// Every member's read mark in `room`.
    async fn read_marks(&self, room: RoomId) -> Result<Vec<(UserId, Seq)>, StorageError>;
    /// Messages from others above `user`'s read marks, over all rooms where
    /// `user` is a member. Answered from the room and membership rows, not
    /// by scanning history.
    async fn unread_total(&self, user: UserId) -> Result<u64, StorageError>;

    // Attachments

    /// Records an upload whose bytes are in the blob store, with a new id.
    async fn create_attachment(
        &self,
        attachment: NewAttachment,
    ) -> Result<AttachmentRecord, StorageError>;
    /// The attachments with these ids that exist (doomed ones included),
    /// in no particular order.
    async fn attachments(
        &self,
        ids: &[AttachmentId],
    ) -> Result<Vec<AttachmentRecord>, StorageError>;
    /// Bytes (files and thumbnails) of `owner`'s attachments not doomed.
    async fn upload_usage(&self, owner: UserId) -> Result<u64, StorageError>;
    /// Dooms `owner`'s upload `id` if it is not sent (and not doomed
    /// already): `Ok(true)`; `Ok(false)` if there is no such upload of
    /// theirs; `Conflict(AttachmentSent)` if it is sent.
    async fn doom_upload(&self, owner: UserId, id: AttachmentId) -> Result<bool, StorageError>;
    /// Dooms every upload not sent and made before `before`; how many.
    async fn doom_unsent(&self, before: Timestamp) -> Result<u64, StorageError>;
    /// Up to `limit` doomed attachments, oldest first, whose files are to
    /// be deleted. A message's deletion dooms its attachments in the same
    /// transaction, and a room's deletion those of its messages.
    async fn doomed_attachments(&self, limit: u32) -> Result<Vec<AttachmentRecord>, StorageError>;
    /// Deletes the rows of doomed attachments whose files are gone.
    async fn forget_attachments(&self, ids: &[AttachmentId]) -> Result<(), StorageError>;

    // Health

    /// A cheap round trip to the database.
    async fn ping(&self) -> Result<(), StorageError>;
}

/// A conversation's key: the pair in id order, so that `(a, b)` and `(b, a)`
/// name the same one. `None` for a user paired with themself.
pub(crate) fn direct_pair(a: UserId, b: UserId) -> Option<(UserId, UserId)> {
    match a.cmp(&b) {
        std::cmp::Ordering::Less => Some((a, b)),
        std::cmp::Ordering::Greater => Some((b, a)),
        std::cmp::Ordering::Equal => None,
    }
}

/// The error for `direct_room(a, a)`, which the contract rules out.
pub(crate) fn self_conversation() -> StorageError {
    StorageError::Backend("a conversation needs two different users".into())
}

/// A conversation's room name. The `/` keeps it out of the group rooms'
/// namespace; users never see it.
/// The other participant of a conversation made by `direct_room`, read
/// from its name (`direct/{lo}/{hi}`); `None` for any other room.
pub(crate) fn direct_other(room: &RoomRecord, user: UserId) -> Option<UserId> {
    if room.kind != RoomType::Direct {
        return None;
    }
    let mut ids = room.name.strip_prefix("direct/")?.split('/');
    let lo = UserId(ids.next()?.parse().ok()?);
    let hi = UserId(ids.next()?.parse().ok()?);
    (lo == user).then_some(hi).or((hi == user).then_some(lo))
}

pub(crate) fn direct_name(lo: UserId, hi: UserId) -> String {
    format!("direct/{lo}/{hi}")
}

/// Options every backend understands.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Maximum pooled connections, for backends that pool.
    pub max_connections: u32,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self { max_connections: 8 }
    }
}

/// Opens the backend a URL names: `memory://`, `sqlite://PATH`,
/// `postgres://…` (or `postgresql://…`). SQL databases are migrated first.
pub async fn connect(
    url: &str,
    options: &StorageOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    match scheme(url) {
        "memory" => Ok(Arc::new(memory::MemoryStorage::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteStorage::connect(url, options).await?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            postgres::PostgresStorage::connect(url, options).await?,
        )),
        _ => {
            let _ = options;
            Err(unsupported(url))
        }
    }
}

/// Applies the migrations the database at `url` lacks, and nothing else:
/// for a deploy step that runs before the servers start. Servers migrate at
/// connect anyway; this only moves the work (and its failures) earlier.
/// Nothing to do for `memory://`.
pub async fn migrate(url: &str) -> Result<(), StorageError> {
    match scheme(url) {
        "memory" => Ok(()),
        // Opening a SQLite file migrates it; the pools close on drop.
        #[cfg(feature = "sqlite")]
        "sqlite" => sqlite::SqliteStorage::connect(url, &StorageOptions::default())
            .await
            .map(drop),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => postgres::PostgresStorage::migrate(url).await,
        _ => Err(unsupported(url)),
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or("")
}

fn unsupported(url: &str) -> StorageError {
    // Only the scheme: the rest of a URL may hold a password.
    let scheme = scheme(url);
    let why = match scheme {
        "sqlite" | "postgres" | "postgresql" => format!(
            "storage URL scheme {scheme:?}: this chat-server was built without the `{}` \
             feature",
            if scheme == "sqlite" {
                "sqlite"
            } else {
                "postgres"
            }
        ),
        _ => format!(
            "unsupported storage URL scheme {scheme:?}: expected memory://, sqlite://PATH, \
             postgres://…"
        ),
    };
    StorageError::Backend(why.into())
}
