//! Rooms: group rooms (`public`, `private`, `game`) and one-to-one
//! conversations (`direct`), which share the same id space.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::LastMessage;
use crate::{RoomId, Timestamp, UserId};

/// Who may join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoomType {
    /// Anyone may join.
    Public,
    /// Only invited users may join.
    #[default]
    Private,
    /// Like private; kept apart for game lobbies.
    Game,
    /// A one-to-one conversation: exactly two members, at most one per pair.
    Direct,
}

impl RoomType {
    /// The wire name (`"public"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Game => "game",
            Self::Direct => "direct",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Self::Public,
            "private" => Self::Private,
            "game" => Self::Game,
            "direct" => Self::Direct,
            _ => return None,
        })
    }
}

impl fmt::Display for RoomType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room named by id or by name, as calls accept it (`"room": 7` or
/// `"room": "lobby"`). A string of digits is an id, since room names may not
/// be all digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(untagged)]
pub enum RoomRef {
    Id(RoomId),
    Name(String),
}

impl RoomRef {
    /// Reads a path or query segment: digits are an id, anything else a name.
    pub fn parse(s: &str) -> Self {
        match s.parse::<i64>() {
            Ok(id) if !s.starts_with('+') => Self::Id(RoomId(id)),
            _ => Self::Name(s.to_owned()),
        }
    }

    /// The id form if the reference is an id, or a name made of digits.
    pub fn as_id(&self) -> Option<RoomId> {
        match self {
            Self::Id(id) => Some(*id),
            Self::Name(n) => match Self::parse(n) {
                Self::Id(id) => Some(id),
                Self::Name(_) => None,
            },
        }
    }
}

impl From<RoomId> for RoomRef {
    fn from(id: RoomId) -> Self {
        Self::Id(id)
    }
}

impl From<&str> for RoomRef {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl fmt::Display for RoomRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// A room with its people: the answer of create, detail and invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Room {
    pub id: RoomId,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RoomType,
    /// The creator's username.
    pub creator: String,
    /// Usernames invited and not yet joined.
    pub invited_users: Vec<String>,
    /// Usernames of the members, the creator included.
    pub members: Vec<String>,
    pub created_at: Timestamp,
    /// The owner's username: the creator until the room is handed over
    /// (absent in a conversation, which has no roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Usernames of the members with role `admin`.
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Only admins and the owner post.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announcement: bool,
    /// At most one message per member every this many seconds (0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_mode_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The answer of `GET /chat/rooms/{id}/online/`: who has a socket
/// subscribed to the room now, on any server instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct OnlineResponse {
    pub room: RoomId,
    /// Their ids, ascending.
    pub users: Vec<UserId>,
}

/// The answer of `POST /chat/join-room/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct JoinedRoom {
    pub id: RoomId,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RoomType,
    pub members: Vec<String>,
}

/// How the caller stands in a listed room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Member,
    /// Invited, not joined yet: the room's messages stay hidden until joining.
    Invited,
}

/// One entry of `GET /chat/rooms/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct RoomListItem {
    pub id: RoomId,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RoomType,
    /// The creator's username.
    pub creator: String,
    pub membership: Membership,
    pub member_count: u64,
    /// Messages from others above the caller's read mark (0 while invited).
    pub unread_count: u64,
    /// Of those, the ones that mention the caller.
    #[serde(default)]
    pub mention_count: u64,
    /// The newest message, or null if there is none or the caller is only
    /// invited.
    pub last_message: Option<LastMessage>,
    pub created_at: Timestamp,
    /// The caller's role; absent while invited and in conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::moderation::Role>,
    /// Until when the caller may not send here; absent when not muted
    /// (and for a mute without end, `muted` alone says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<Timestamp>,
    /// Whether the caller is muted here now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
}
