//! One-to-one conversations: rooms of type `direct` with exactly two members.

use serde::{Deserialize, Serialize};

use crate::message::{LastMessage, Message};
use crate::user::OtherUser;
use crate::{RoomId, Timestamp, UserId};

/// One entry of `GET /api/chats/conversations/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ConversationSummary {
    pub id: RoomId,
    pub other_user: OtherUser,
    pub last_message: Option<LastMessage>,
    pub unread_count: u64,
    /// Of those, the ones that mention the caller.
    #[serde(default)]
    pub mention_count: u64,
    pub created_at: Timestamp,
}

/// The answer of `GET /api/chats/conversations/{id}/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ConversationDetail {
    pub id: RoomId,
    pub other_user: OtherUser,
    /// Oldest first.
    pub messages: Vec<Message>,
    pub created_at: Timestamp,
}

/// The body of `POST /api/chats/conversations/create/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct CreateConversationRequest {
    pub user_id: UserId,
}

/// The answer of `POST /api/chats/conversations/create/` (201 when created,
/// 200 when it existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct CreateConversationResponse {
    pub id: RoomId,
    pub other_user: OtherUser,
    pub created: bool,
    pub created_at: Timestamp,
}

/// The answer of `GET /api/chats/unread-count/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct UnreadCount {
    pub unread_count: u64,
}
