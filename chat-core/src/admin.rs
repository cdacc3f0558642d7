//! Reports and server administration: what any user reports, and what a
//! server admin (granted with `chat-server admin grant USER`) does with
//! reports and accounts.

use serde::{Deserialize, Serialize};

use crate::{MessageId, RoomId, Timestamp, UserId};

/// `POST /chat/reports/`: a message (of a room the reporter is in) or a
/// user, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ReportRequest {
    /// The message reported (exactly one of `message_id` and `user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The user reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// 1 to 1,000 characters, not blank.
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 1000,
            pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
}

/// A report, as its reporter gets it back and as server admins list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Report {
    pub id: i64,
    pub reporter: UserId,
    /// The user reported: the message's sender for a message.
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    pub reason: String,
    pub created_at: Timestamp,
    /// The message's body when it was reported, kept even if its sender
    /// deletes it: shown to server admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
    /// Whether the message was deleted since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub message_deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// `GET /admin/reports/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct ReportsQuery {
    /// `open` (the default), `resolved` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(schema_with = crate::openapi::report_status))]
    pub status: Option<String>,
    /// Only reports with an id below this (the last id of the page
    /// before): newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// 1..=100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
}

/// The answer of `GET /admin/reports/`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ReportsResponse {
    pub reports: Vec<Report>,
    pub has_more: bool,
}

/// `POST /admin/reports/{id}/resolve/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ResolveRequest {
    /// What was done, 1 to 1,000 characters, not blank.
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 1000,
            pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub resolution: String,
}
