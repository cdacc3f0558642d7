//! Messages.

use serde::{Deserialize, Serialize};

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
}

/// The short form of a message used in room and conversation lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct LastMessage {
    pub body: String,
    pub created_at: Timestamp,
    pub sender_id: UserId,
    pub is_read: bool,
}

impl From<&Message> for LastMessage {
    fn from(m: &Message) -> Self {
        Self {
            body: m.body.clone(),
            created_at: m.created_at,
            sender_id: m.sender,
            is_read: m.is_read,
        }
    }
}
