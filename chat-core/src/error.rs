//! The error body every failure carries (HTTP and WebSocket), its codes, and
//! the WebSocket close codes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `{"error": "<human sentence>", "code": "<snake_case code>"}`, plus
/// `"fields"` for validation errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
    /// Field name → what is wrong with it, for `invalid_input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl ErrorBody {
    /// A body with the code's standard sentence.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            error: code.default_message().to_owned(),
            code,
            fields: None,
        }
    }
}

/// Machine-readable error codes. Clients match on these, never on sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    InvalidInput,
    UsernameTaken,
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    Unauthorized,
    RoomNameRequired,
    RoomNameTaken,
    RoomNotFound,
    NotAuthorized,
    NotMember,
    UserNotFound,
    MessageNotFound,
    NotSender,
    MessageDeleted,
    NotModerator,
    InsufficientRole,
    Banned,
    Muted,
    NotInRoom,
    AnnouncementOnly,
    SlowMode,
    AccountDeactivated,
    NotAdmin,
    ReportNotFound,
    EmptyBody,
    BodyTooLong,
    InvalidJson,
    UnknownType,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    StorageUnavailable,
    /// A before-send hook refused the message; the sentence is its reason.
    MessageRejected,
    /// The before-send hook could not decide (failing closed); retrying
    /// later may work.
    HookUnavailable,
    /// The host's authenticator could not say who a token is (its
    /// identity service is unreachable); retrying later may work.
    AuthUnavailable,
    /// No attachment with that id that the caller may see.
    AttachmentNotFound,
    /// The upload is over the server's `--max-upload-bytes`.
    FileTooLarge,
    /// The upload would take the caller's uploads over
    /// `--upload-quota-bytes`; delete unsent uploads or old messages.
    QuotaExceeded,
    /// An image the server will not decode: more pixels than it allows (a
    /// decompression bomb, or simply too big), or not decodable as the
    /// type its bytes claim.
    InvalidImage,
    /// The attachment is already sent with a message (each upload goes
    /// with one message), or a sent one cannot be deleted on its own.
    AttachmentInUse,
    /// A `Range` the file cannot satisfy.
    RangeNotSatisfiable,
    /// The file store (disk or object storage) is unavailable; retrying
    /// later may work.
    FilesUnavailable,
    Internal,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire form (`"room_not_found"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::UsernameTaken => "username_taken",
            Self::EmailTaken => "email_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::Unauthorized => "unauthorized",
            Self::RoomNameRequired => "room_name_required",
            Self::RoomNameTaken => "room_name_taken",
            Self::RoomNotFound => "room_not_found",
            Self::NotAuthorized => "not_authorized",
            Self::NotMember => "not_member",
            Self::UserNotFound => "user_not_found",
            Self::MessageNotFound => "message_not_found",
            Self::NotSender => "not_sender",
            Self::MessageDeleted => "message_deleted",
            Self::NotModerator => "not_moderator",
            Self::InsufficientRole => "insufficient_role",
            Self::Banned => "banned",
            Self::Muted => "muted",
            Self::NotInRoom => "not_in_room",
            Self::AnnouncementOnly => "announcement_only",
            Self::SlowMode => "slow_mode",
            Self::AccountDeactivated => "account_deactivated",
            Self::NotAdmin => "not_admin",
            Self::ReportNotFound => "report_not_found",
            Self::EmptyBody => "empty_body",
            Self::BodyTooLong => "body_too_long",
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::StorageUnavailable => "storage_unavailable",
            Self::AuthUnavailable => "auth_unavailable",
            Self::MessageRejected => "message_rejected",
            Self::HookUnavailable => "hook_unavailable",
            Self::AttachmentNotFound => "attachment_not_found",
            Self::FileTooLarge => "file_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::InvalidImage => "invalid_image",
            Self::AttachmentInUse => "attachment_in_use",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::FilesUnavailable => "files_unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// The standard sentence for the code. Where `PROTOCOL.md` quotes one,
    /// this is that exact text.
    pub const fn default_message(self) -> &'static str {
        match self {
            Self::InvalidInput => "Invalid input",
            Self::UsernameTaken => "A user with that username already exists",
            Self::EmailTaken => "A user with that email already exists",
            Self::InvalidCredentials => "Invalid username or password",
            Self::InvalidToken => "Token is invalid or expired",
            Self::Unauthorized => "Authentication credentials are missing, malformed or expired",
            Self::RoomNameRequired => "Room name is required",
            Self::RoomNameTaken => "Room name already exists",
            Self::RoomNotFound => "Room not found",
            Self::NotAuthorized => "You are not authorized to join this room",
            Self::NotMember => "You are not a member of this room",
            Self::UserNotFound => "User not found",
            Self::MessageNotFound => "Message not found",
            Self::NotSender => "Only the message's sender (or a moderator, to delete) can do this",
            Self::MessageDeleted => "The message was deleted",
            Self::NotModerator => "Only whoever moderates the room can do this",
            Self::InsufficientRole => "Your role in this room does not allow this",
            Self::Banned => "You are banned from this room",
            Self::Muted => "You are muted in this room",
            Self::NotInRoom => "That user is not in this room",
            Self::AnnouncementOnly => "Only admins post in this room",
            Self::SlowMode => "Slow mode is on: wait before sending again",
            Self::AccountDeactivated => "This account is deactivated",
            Self::NotAdmin => "Only a server admin can do this",
            Self::ReportNotFound => "Report not found",
            Self::EmptyBody => "Message body cannot be empty",
            Self::BodyTooLong => "Message body is too long",
            Self::InvalidJson => "Invalid JSON",
            Self::UnknownType => "Unknown frame type",
            Self::RateLimited => "Too many messages, slow down",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PayloadTooLarge => "Request is too large",
            Self::StorageUnavailable => "Storage is unavailable, try again later",
            Self::AuthUnavailable => "Authentication is unavailable, try again later",
            Self::MessageRejected => "The message was rejected",
            Self::HookUnavailable => "The message could not be checked, try again later",
            Self::AttachmentNotFound => "Attachment not found",
            Self::FileTooLarge => "The file is too large",
            Self::QuotaExceeded => "Your uploads are over their quota",
            Self::InvalidImage => "The image is too large or cannot be read",
            Self::AttachmentInUse => "The attachment is already sent with a message",
            Self::RangeNotSatisfiable => "The requested range is not in the file",
            Self::FilesUnavailable => "File storage is unavailable, try again later",
            Self::Internal => "Internal server error",
            Self::Unknown => "Unknown error",
        }
    }

    /// The HTTP status that carries this code.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput
            | Self::RoomNameRequired
            | Self::EmptyBody
            | Self::BodyTooLong
            | Self::InvalidJson
            | Self::UnknownType => 400,
            Self::InvalidCredentials | Self::InvalidToken | Self::Unauthorized => 401,
            Self::NotAuthorized
            | Self::NotMember
            | Self::NotSender
            | Self::NotModerator
            | Self::InsufficientRole
            | Self::Banned
            | Self::Muted
            | Self::AnnouncementOnly
            | Self::AccountDeactivated
            | Self::NotAdmin
            | Self::QuotaExceeded
            | Self::MessageRejected => 403,
            Self::RoomNotFound
            | Self::UserNotFound
            | Self::MessageNotFound
            | Self::NotInRoom
            | Self::ReportNotFound
            | Self::AttachmentNotFound
            | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UsernameTaken
            | Self::EmailTaken
            | Self::RoomNameTaken
            | Self::MessageDeleted
            | Self::AttachmentInUse => 409,
            Self::PayloadTooLarge | Self::FileTooLarge => 413,
            Self::RangeNotSatisfiable => 416,
            Self::InvalidImage => 422,
            Self::RateLimited | Self::SlowMode => 429,
            Self::StorageUnavailable
            | Self::AuthUnavailable
            | Self::HookUnavailable
            | Self::FilesUnavailable => 503,
            Self::Internal | Self::Unknown => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: closed normally.
    Normal,
    /// 1001: the server is shutting down; reconnect elsewhere or later.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol (an unmasked frame,
    /// a reserved opcode or bit, a malformed close frame).
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1009: a frame exceeded the size limit.
    TooLarge,
    /// 4401: the access token expired; refresh it and reconnect.
    TokenExpired,
    /// 4408: the socket could not keep up; reconnect and resume with `after_seq`.
    TooSlow,
    /// 4409: the bound room was deleted; do not reconnect to it.
    RoomDeleted,
    /// 4403: the user's sessions were revoked (logged out everywhere, or
    /// the account deactivated); log in again.
    SessionRevoked,
}

impl CloseCode {
    /// The numeric code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::TooLarge => 1009,
            Self::TokenExpired => 4401,
            Self::TooSlow => 4408,
            Self::RoomDeleted => 4409,
            Self::SessionRevoked => 4403,
        }
    }

    /// Reads a numeric code; `None` for codes this protocol does not define.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1007 => Self::InvalidPayload,
            1009 => Self::TooLarge,
            4401 => Self::TokenExpired,
            4408 => Self::TooSlow,
            4409 => Self::RoomDeleted,
            4403 => Self::SessionRevoked,
            _ => return None,
        })
    }

    /// The reason text sent with the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid UTF-8",
            Self::TooLarge => "frame too large",
            Self::TokenExpired => "token expired",
            Self::TooSlow => "too slow to keep up, resume with after_seq",
            Self::RoomDeleted => "room deleted",
            Self::SessionRevoked => "session revoked",
        }
    }
}
