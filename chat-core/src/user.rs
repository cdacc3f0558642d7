//! Users as the API shows them.

use serde::{Deserialize, Serialize};

use crate::{Timestamp, UserId};

/// A user. `email` and `created_at` are shown only to the user themself;
/// everyone else sees `id`, `username` and `display_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct User {
    pub id: UserId,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// A bot a backend sends as (server API); absent for people.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

/// The other participant of a conversation, as the documents showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct OtherUser {
    pub id: UserId,
    pub name: String,
    /// Present for compatibility with the documents' clients; empty when the
    /// viewer may not see it.
    pub email: String,
}

/// A user the caller blocked, as `GET /api/users/blocked/` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct BlockedUser {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    /// When they were blocked.
    pub blocked_at: Timestamp,
}

/// The answer of `GET /api/users/blocked/`, the newest block first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct BlockedResponse {
    pub blocked: Vec<BlockedUser>,
}
