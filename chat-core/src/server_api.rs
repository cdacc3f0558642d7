//! The server API: calls a host's backend makes with an API key (created
//! with `chat-server api-key create NAME`), under `/server/`. Users are
//! named by their id in the host (`external_id`), the same id its identity
//! service's tokens carry as subject.

use serde::{Deserialize, Serialize};

use crate::{MessageId, User};

/// `PUT /server/users/{external_id}/`: creates the user if the host's id is
/// new, else updates their display name. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct UpsertUserRequest {
    /// The name shown beside their messages (1 to 64 characters once
    /// trimmed); an existing user's is replaced, `None` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 64,
            pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub display_name: Option<String>,
    /// A new user's username (made to fit 3 to 32 of letters, digits, `_`,
    /// `.`, `-`, and unique with a suffix); default: the external id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A new user's email; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Asks for a bot, which must then be named `bot:{name}` (any such id
    /// is one, shown with `bot: true`): a bot that listens on a socket of
    /// its own is made so, with tokens minted for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

/// A user as the server API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ServerUser {
    /// The user as clients see them (chat's own id).
    #[serde(flatten)]
    pub user: User,
    /// The host's id for them; `None` for an account registered here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// A bot the backend sends as.
    #[serde(default)]
    pub bot: bool,
}

/// `POST /server/rooms/`: a group room made by the backend, its owner and
/// members named by external id. Members join at once (no invitation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ServerCreateRoomRequest {
    /// 1–64 characters once trimmed, not all digits, no `/` nor control
    /// characters; unique.
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 64,
            pattern = r"^[^/\x00-\x1f\x7f-\x9f]*[^/0-9\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^/\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub name: String,
    /// `public` (default), `private` or `game`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(schema_with = crate::openapi::new_group_room_type)
    )]
    pub kind: Option<crate::room::RoomType>,
    /// The owner's external id (a user known to chat).
    #[cfg_attr(feature = "schema", schema(schema_with = crate::openapi::external_id))]
    pub owner: String,
    /// The other members' external ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(schema_with = crate::openapi::external_ids))]
    pub members: Vec<String>,
}

/// `PUT /server/rooms/{id}/members/`: the room's members become exactly
/// these (the owner always stays): the missing join, the others leave,
/// each a `member` event of the room's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct SetMembersRequest {
    /// External ids of users known to chat.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::openapi::external_ids))]
    pub members: Vec<String>,
}

/// `POST /server/rooms/{id}/members/`: some users join, some leave (the
/// owner cannot be removed), the others stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ChangeMembersRequest {
    /// External ids of users to make members (already members: nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(schema_with = crate::openapi::external_ids))]
    pub add: Vec<String>,
    /// External ids of members to take out (not members: nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(schema_with = crate::openapi::external_ids))]
    pub remove: Vec<String>,
}

/// `POST /server/rooms/{id}/messages/`: a message sent as a user (by
/// external id, a member of the room) or as a bot (by name; created and
/// made a member on first use). Exactly one of `user` and `bot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ServerSendRequest {
    /// The sender's external id (1 to 255 bytes, no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub user: Option<String>,
    /// A bot's name (3 to 32 of letters, digits, `_`, `.`, `-`; whitespace
    /// around them is trimmed): the user `bot:{name}`, shown with
    /// `bot: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(
            pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9_.-]{3,32}[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub bot: Option<String>,
    /// The body, as for any message: not blank, at most the server's
    /// `--max-message-chars` characters.
    #[cfg_attr(
        feature = "schema",
        schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
    )]
    pub message: String,
    /// Makes the send idempotent per sender, as for any message: 1 to 128
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(min_length = 1, max_length = 128))]
    pub client_id: Option<String>,
    /// A message of the room this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}
