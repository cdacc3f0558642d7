//! REST request and response bodies, one per call of `PROTOCOL.md`.

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::room::{RoomRef, RoomType};
use crate::{AttachmentId, MessageId, RoomId, Seq, UserId};

/// `POST /api/users/register/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct RegisterRequest {
    /// 3 to 32 of `[A-Za-z0-9_.-]` (whitespace around them is trimmed).
    #[cfg_attr(
        feature = "schema",
        schema(
            pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9_.-]{3,32}[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub username: String,
    /// One `@`, something before it (at most 64 bytes), a dotted domain
    /// after it; at most 254 bytes, no whitespace.
    #[cfg_attr(feature = "schema", schema(format = Email))]
    pub email: String,
    /// At least 8 characters, at most 1,024 bytes.
    #[cfg_attr(feature = "schema", schema(min_length = 8))]
    pub password: String,
    /// At most 64 characters, no control characters; absent or blank: the
    /// username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub display_name: Option<String>,
}

/// `POST /api/users/token/`: log in by username or by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct TokenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub password: String,
}

/// The answer of the token and refresh calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct TokenResponse {
    pub access: String,
    pub refresh: String,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Seconds until `access` expires.
    pub expires_in: u64,
}

/// `POST /api/users/token/refresh/` and `POST /api/users/logout/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct RefreshRequest {
    pub refresh: String,
}

/// Query of `GET /api/users/`: keyset paging by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct ListUsersQuery {
    /// 1..=200, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
    /// Only users with an id above this (the last id of the previous page;
    /// any integer, 0 or less: from the first user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>))]
    pub after: Option<UserId>,
}

/// `POST /chat/create-room/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct CreateRoomRequest {
    /// 1–64 characters, not all digits. Required: a missing or blank name
    /// gets 400 `room_name_required` (an `Option` so that it gets that code
    /// instead of a generic parse error).
    ///
    /// Whitespace around it is trimmed; no `/` nor control characters.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schema(
            required = true,
            nullable = false,
            max_length = 64,
            pattern = r"^[^/\x00-\x1f\x7f-\x9f]*[^/0-9\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^/\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    #[cfg_attr(feature = "schema", schemars(required))]
    pub name: Option<String>,
    /// `public`, `private` (the default) or `game`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(schema_with = crate::openapi::new_group_room_type)
    )]
    pub kind: Option<RoomType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited_users: Vec<UserId>,
}

/// `POST /chat/join-room/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct JoinRoomRequest {
    pub room_id: RoomId,
}

/// `POST /chat/rooms/{id}/invite/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct InviteRequest {
    pub user_ids: Vec<UserId>,
}

/// Query of `GET /chat/history/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct HistoryQuery {
    /// The room's id or name.
    pub room: RoomRef,
    /// Only messages with `seq` below this (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>, minimum = 1))]
    pub before: Option<Seq>,
    /// Only messages with `seq` above this (0 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>, minimum = 0))]
    pub after: Option<Seq>,
    /// 1..=200, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// The answer of `GET /chat/history/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct HistoryResponse {
    /// Oldest first.
    pub chat_history: Vec<Message>,
    /// Whether more messages lie beyond this page in the direction paged.
    pub has_more: bool,
}

/// `POST /chat/send/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct SendRequest {
    pub room: RoomRef,
    /// Not blank; at most the server's `--max-message-chars` characters
    /// (4,000 by default).
    #[cfg_attr(
        feature = "schema",
        schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
    )]
    pub message: String,
    /// The sender's idempotency key: 1 to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(min_length = 1, max_length = 128))]
    pub client_id: Option<String>,
    /// Reply to this message of the same room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// Post in the thread of this message of the same room (a reply in a
    /// thread names the thread's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<MessageId>,
    /// Users to mention: members of the room, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(max_items = 50))]
    pub mentions: Vec<UserId>,
    /// Files to send with it: ids of the caller's own uploads not yet sent
    /// (`POST /chat/attachments/`), at most 10, each once. With attachments
    /// the body may be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(max_items = 10))]
    pub attachments: Vec<AttachmentId>,
}

/// The answer of `POST /chat/send/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct SendResponse {
    /// Always `"Message sent!"`.
    pub message: String,
    pub id: MessageId,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
}

/// `PATCH /chat/messages/{id}/`: the new body of one of the caller's
/// messages. Answered with the message as it now stands (200). A body equal
/// to the current one changes nothing and makes no event, so a retried
/// edit is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct EditRequest {
    /// Not blank; at most the server's `--max-message-chars` characters.
    #[cfg_attr(
        feature = "schema",
        schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
    )]
    pub body: String,
}

/// Query of `GET /chat/search/`: full-text search over the messages of
/// the rooms the caller is a member of, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct SearchQuery {
    /// Words to find (1 to 200 characters; every word must appear, case
    /// and punctuation ignored).
    #[cfg_attr(feature = "schema", param(min_length = 1, max_length = 200))]
    pub q: String,
    /// Only this room (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>))]
    pub room: Option<RoomId>,
    /// Only messages older than this one (its id): the next page starts
    /// below the last hit of the previous one (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(value_type = Option<i64>, minimum = 1))]
    pub before: Option<MessageId>,
    /// 1..=100, default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
}

/// One message found by `GET /chat/search/`, with where it is: open the
/// room's history around `message.seq` to show it in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct SearchHit {
    pub room: RoomId,
    pub room_name: String,
    #[cfg_attr(feature = "schema", schema(value_type = i64))]
    pub seq: Seq,
    pub message: Message,
}

/// The answer of `GET /chat/search/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct SearchResponse {
    /// Newest first.
    pub hits: Vec<SearchHit>,
    /// Whether older hits exist (ask again with `before` = the last hit's
    /// message id).
    pub has_more: bool,
}

/// The state of one dependency in `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Ok,
    Unavailable,
}

/// The answer of `GET /healthz` (200 when everything is up, 503 otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Health {
    /// `"ok"` or `"degraded"`.
    pub status: String,
    pub storage: ComponentState,
    pub broker: ComponentState,
    pub version: String,
}
