//! The one error type the service layer returns, and its single translation
//! into the contract's `{"error","code"}` body (HTTP) or `error` frame
//! (WebSocket). Internals are logged, never sent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::{ErrorBody, ErrorCode};

use crate::storage::StorageError;

/// A failure a client is told about: a code from the contract, the sentence,
/// and per-field reasons for validation errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: ErrorCode,
    pub(crate) message: Cow<'static, str>,
    pub(crate) fields: Option<BTreeMap<String, String>>,
    /// Seconds until trying again makes sense (`Retry-After` on HTTP).
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    /// The code with its standard sentence.
    pub(crate) fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
            fields: None,
            retry_after: None,
        }
    }

    /// The code with a specific sentence.
    pub(crate) fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
        }
    }

    /// `invalid_input` naming what is wrong with each field.
    pub(crate) fn invalid_fields(fields: BTreeMap<String, String>) -> Self {
        let message = fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            code: ErrorCode::InvalidInput,
            message: Cow::Owned(format!("Invalid input: {message}")),
            fields: Some(fields),
            retry_after: None,
        }
    }

    /// `rate_limited`, to be tried again after `wait` (rounded up to whole
    /// seconds).
    pub(crate) fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(ErrorCode::RateLimited)
        }
    }

    /// `invalid_input` for one field.
    pub(crate) fn invalid_field(field: &str, why: impl Into<String>) -> Self {
        Self::invalid_fields(BTreeMap::from([(field.to_owned(), why.into())]))
    }

    /// The HTTP status carrying this error.
    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The wire body.
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.to_string(),
            code: self.code,
            fields: self.fields.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => {
                tracing::warn!(error = %e, "storage unavailable");
                Self::new(ErrorCode::StorageUnavailable)
            }
            StorageError::NotFound => Self::new(ErrorCode::NotFound),
            StorageError::NotMember { kind, state } => {
                crate::service::rooms::refused_append(kind, state)
            }
            StorageError::Refused(refusal) => match refusal {
                crate::storage::Refusal::NotAllowed => Self::new(ErrorCode::NotSender),
                crate::storage::Refusal::Deleted => Self::new(ErrorCode::MessageDeleted),
                crate::storage::Refusal::NotModerator => Self::new(ErrorCode::NotModerator),
                crate::storage::Refusal::TooManyPins => Self::with_message(
                    ErrorCode::InvalidInput,
                    format!(
                        "A room keeps at most {} pinned messages",
                        crate::storage::MAX_PINS
                    ),
                ),
                crate::storage::Refusal::TooManyReactions => Self::invalid_field(
                    "key",
                    format!(
                        "a message takes at most {} different reactions",
                        crate::storage::MAX_REACTION_KEYS
                    ),
                ),
                crate::storage::Refusal::InsufficientRole => Self::new(ErrorCode::InsufficientRole),
                crate::storage::Refusal::Banned => Self::new(ErrorCode::Banned),
                crate::storage::Refusal::Muted { until: Some(until) } => Self::with_message(
                    ErrorCode::Muted,
                    format!("You are muted in this room until {until}"),
                ),
                crate::storage::Refusal::Muted { until: None } => Self::new(ErrorCode::Muted),
                crate::storage::Refusal::NotInRoom => Self::new(ErrorCode::NotInRoom),
                crate::storage::Refusal::SelfAction => {
                    Self::invalid_field("user_id", "a moderator cannot do this to themself")
                }
                // The same bytes as a conversation that does not exist.
                crate::storage::Refusal::Blocked => Self::new(ErrorCode::RoomNotFound),
                crate::storage::Refusal::AnnouncementOnly => Self::new(ErrorCode::AnnouncementOnly),
                crate::storage::Refusal::SlowMode { until } => Self::with_message(
                    ErrorCode::SlowMode,
                    format!("Slow mode is on: you may send again at {until}"),
                ),
                crate::storage::Refusal::Conversation => Self::with_message(
                    ErrorCode::InvalidInput,
                    "Conversations have no roles and take no moderation",
                ),
            },
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::new(ErrorCode::Internal)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// `Result` of the service layer.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
