//! Running a room: roles, and what owners and admins do to members (kick,
//! ban, mute, promote, hand over the room). Each action that changes
//! something is a timeline event ([`crate::timeline::MemberEvent`]), so
//! every client keeps its member list right from the room's stream.

use serde::{Deserialize, Serialize};

use crate::{RoomId, Timestamp, UserId};

/// A member's role in a group room. Conversations have none: each
/// participant answers for their own messages.
///
/// Ranked `member < admin < owner`: an action on a member needs a rank
/// above theirs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Member,
    /// Moderates: deletes and pins messages, kicks, bans and mutes
    /// members, changes the room's settings.
    Admin,
    /// One per room, its creator until handed over: everything an admin
    /// does, and names admins, hands the room over, deletes it.
    Owner,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "member" => Self::Member,
            "admin" => Self::Admin,
            "owner" => Self::Owner,
            _ => return None,
        })
    }
}

/// What a moderation request does to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// Remove a member (or take back an invitation); they may come back.
    Kick,
    /// Remove them and keep them out until `until` (or for good); a
    /// user who is not in the room can be banned too.
    Ban,
    /// Let a banned user join again.
    Unban,
    /// A member may not send until `until` (or until unmuted); everything
    /// else stays allowed.
    Mute,
    Unmute,
    /// Make a member an admin or an admin a member (`role`): the owner only.
    SetRole,
    /// Hand the room over to another member, who becomes its owner; the
    /// old owner stays as an admin. The owner only.
    TransferOwnership,
}

impl ModerationAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kick => "kick",
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::Mute => "mute",
            Self::Unmute => "unmute",
            Self::SetRole => "set_role",
            Self::TransferOwnership => "transfer_ownership",
        }
    }
}

/// `POST /chat/rooms/{id}/moderate/` (and the WebSocket `moderate` frame,
/// with `room`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ModerateRequest {
    /// Whom the action is for.
    pub user_id: UserId,
    pub action: ModerationAction,
    /// Shown to the room with a kick or a ban (at most 500 characters, no
    /// control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub reason: Option<String>,
    /// When a ban or a mute ends; absent: until lifted. Must be in the
    /// future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// The new role, for `set_role`: `admin` or `member`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl ModerateRequest {
    /// `action` for `user_id`, without reason, end or role.
    pub fn new(user_id: UserId, action: ModerationAction) -> Self {
        Self {
            user_id,
            action,
            reason: None,
            until: None,
            role: None,
        }
    }
}

/// The answer of `POST /chat/rooms/{id}/moderate/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ModerateResponse {
    /// The timeline event the action appended; `null` if it changed
    /// nothing (a kick of someone gone already, a second unmute).
    pub event: Option<crate::timeline::MemberEvent>,
}

/// A ban of a room, as `GET /chat/rooms/{id}/bans/` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Ban {
    pub room: RoomId,
    pub user_id: UserId,
    pub username: String,
    /// Who banned them.
    pub by: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it ends; `null`: until lifted.
    pub until: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// The answer of `GET /chat/rooms/{id}/bans/`: the bans in force, newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct BansResponse {
    pub bans: Vec<Ban>,
}

/// A room's settings, as `PATCH /chat/rooms/{id}/` takes them (each
/// optional: only what is given changes) and as a `room_updated` event
/// carries them (only what changed, with its new value). An empty string
/// clears `topic`, `description` or `avatar_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schema(min_properties = 1))]
pub struct RoomSettings {
    /// A new name: the rules of creation (1–64 characters once trimmed,
    /// not all digits, no `/` nor control characters), and still unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 64,
            pattern = r"^[^/\x00-\x1f\x7f-\x9f]*[^/0-9\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^/\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub name: Option<String>,
    /// `public` or `private` (a game room and a conversation keep theirs).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(schema_with = crate::openapi::settings_room_type)
    )]
    pub kind: Option<crate::RoomType>,
    /// At most 250 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 250, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub topic: Option<String>,
    /// At most 2,000 characters, no control characters but line feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 2000, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$")
    )]
    pub description: Option<String>,
    /// An `https://` (or `http://`) URL with a host, at most 2,000
    /// characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 2000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub avatar_url: Option<String>,
    /// Only admins and the owner post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<bool>,
    /// At most one message per member every this many seconds (admins and
    /// the owner excepted); 0 turns it off. At most 21,600 (6 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(maximum = 21600))]
    pub slow_mode_seconds: Option<u32>,
}

impl RoomSettings {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A room's settings changed: a timeline event with a seq of its own.
/// `settings` holds what changed, with the new values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct RoomUpdate {
    pub room: RoomId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: crate::Seq,
    /// Who changed them.
    pub user: UserId,
    pub created_at: Timestamp,
    pub settings: RoomSettings,
}

/// `GET /chat/directory/`: public rooms by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct DirectoryQuery {
    /// Only rooms whose name starts with this (case-insensitive); at most
    /// 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(max_length = 64))]
    pub q: Option<String>,
    /// Only rooms whose name sorts after this one: the last name of the
    /// page before (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(max_length = 64))]
    pub after: Option<String>,
    /// 1..=100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
}

/// One public room of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct DirectoryRoom {
    pub id: RoomId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    pub member_count: u64,
    /// The newest message's time, else the room's creation.
    pub last_activity_at: Timestamp,
    pub created_at: Timestamp,
}

/// The answer of `GET /chat/directory/`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct DirectoryResponse {
    pub rooms: Vec<DirectoryRoom>,
    /// Whether more rooms follow: ask again with `after` = the last name.
    pub has_more: bool,
}
