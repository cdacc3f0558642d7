//! [`ClientError`]: every way a call can fail, sorted by [`ErrorKind`] and
//! carrying the server's [`ErrorCode`] when it sent one.

use std::collections::BTreeMap;
use std::fmt;

use chat_core::{ErrorBody, ErrorCode};

/// What went wrong with a call, coarsely: what an application or a retry loop
/// branches on. Match on [`ClientError::code`] for the precise reason.
///
/// ```
/// use chat_client::ErrorKind;
///
/// fn describe(kind: ErrorKind) -> &'static str {
///     match kind {
///         ErrorKind::Unauthorized => "log in again",
///         ErrorKind::Network | ErrorKind::Unavailable => "try again later",
///         _ => "something else",
///     }
/// }
/// assert_eq!(describe(ErrorKind::Network), "try again later");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: bad credentials, an invalid or spent refresh token, or no session
    /// at all (never logged in, or logged out).
    Unauthorized,
    /// 403: the caller may not do this (not a member, not the creator).
    Forbidden,
    /// 404: no such room, user or conversation (or one the caller may not see).
    NotFound,
    /// 409: a username, email or room name already taken.
    Conflict,
    /// 400, 413, 416 or 422: the request was rejected as invalid (empty
    /// body, bad name, a file too large, a range outside the file, an
    /// image the server will not decode…).
    InvalidInput,
    /// 429: too many requests.
    RateLimited,
    /// 503 (`storage_unavailable`, `files_unavailable`…): the server is up
    /// but cannot serve now.
    Unavailable,
    /// Any other 5xx: the server failed.
    Server,
    /// The request did not get an answer: connection refused or reset, DNS,
    /// TLS handshake, or a timeout.
    Network,
    /// The answer was not what the protocol promises (undecodable body, an
    /// unexpected status): the client and server disagree.
    Protocol,
    /// The client was built with invalid options (bad base URL, bad CA PEM).
    Config,
    /// A local file, or the caller's reader or writer, failed (an upload's
    /// source, a download's destination).
    Io,
    /// The live [`Connection`](crate::Connection) was closed for good (by
    /// [`Connection::close`](crate::Connection::close), or because the
    /// session could not be refreshed): open a new one.
    Closed,
}

impl ErrorKind {
    /// Whether trying the same call again later may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Network | Self::Unavailable | Self::RateLimited | Self::Server
        )
    }

    fn from_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            400 | 413 | 416 | 422 => Self::InvalidInput,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            500..=599 => Self::Server,
            _ => Self::Protocol,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not found",
            Self::Conflict => "conflict",
            Self::InvalidInput => "invalid input",
            Self::RateLimited => "rate limited",
            Self::Unavailable => "unavailable",
            Self::Server => "server error",
            Self::Network => "network error",
            Self::Protocol => "protocol error",
            Self::Config => "configuration error",
            Self::Io => "I/O error",
            Self::Closed => "connection closed",
        })
    }
}

/// The error of every [`ChatClient`](crate::ChatClient) call.
///
/// Use [`kind`](Self::kind) and [`is_retryable`](Self::is_retryable) to decide
/// what to do, [`code`](Self::code) for the server's machine-readable reason.
///
/// ```no_run
/// use chat_client::{ChatClient, ErrorCode, ErrorKind};
///
/// # async fn demo(client: ChatClient) {
/// match client.login("alice", "wrong password").await {
///     Ok(_) => println!("logged in"),
///     Err(e) if e.code() == Some(ErrorCode::InvalidCredentials) => println!("{}", e.message()),
///     Err(e) if e.is_retryable() => println!("try again later: {e}"),
///     Err(e) => println!("failed ({}): {e}", e.kind()),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status. `code` is `None` when the
    /// body was not the contract's `{"error","code"}` (e.g. a proxy's page).
    #[error("{message} (HTTP {status}{})", code.map(|c| format!(", {c}")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's code, if it sent an error body.
        code: Option<ErrorCode>,
        /// The server's sentence, or the status's reason phrase.
        message: String,
        /// Field name → problem, for `invalid_input`.
        fields: Option<BTreeMap<String, String>>,
    },
    /// No answer: connection refused or reset, DNS, TLS, or a timeout.
    #[error("network error: {source}")]
    Network {
        /// Whether a timeout (rather than a connection failure) ended it.
        timeout: bool,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An answer the protocol does not allow.
    #[error("unexpected response{}: {detail}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Protocol {
        /// The HTTP status, if a response arrived.
        status: Option<u16>,
        /// What was wrong with it.
        detail: String,
    },
    /// The call needs a session and the client has none: log in or
    /// [`set_tokens`](crate::ChatClient::set_tokens) first.
    #[error("not logged in")]
    NotLoggedIn,
    /// Invalid client options.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// [`Connection::send`](crate::Connection::send) found the offline queue
    /// (sends not yet acknowledged) full. Kind
    /// [`Unavailable`](ErrorKind::Unavailable): retry once earlier sends
    /// have been acknowledged.
    #[error("the connection's send queue is full ({limit} unacknowledged sends)")]
    QueueFull {
        /// The bound, [`ConnectOptions::queue_limit`](crate::ConnectOptions::queue_limit).
        limit: usize,
    },
    /// The live connection is closed for good.
    #[error("the connection is closed")]
    Closed,
    /// Reading an upload's source or writing a download's destination
    /// failed: a local file, or the caller's reader or writer. Kind
    /// [`Io`](ErrorKind::Io).
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written (e.g. the file's path).
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The coarse category of the failure.
    ///
    /// ```
    /// use chat_client::{ClientError, ErrorKind};
    /// assert_eq!(ClientError::NotLoggedIn.kind(), ErrorKind::Unauthorized);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api { status, code, .. } => match code {
                Some(
                    ErrorCode::StorageUnavailable
                    | ErrorCode::AuthUnavailable
                    | ErrorCode::HookUnavailable
                    | ErrorCode::FilesUnavailable,
                ) => ErrorKind::Unavailable,
                Some(ErrorCode::RateLimited) => ErrorKind::RateLimited,
                _ => ErrorKind::from_status(*status),
            },
            Self::Network { .. } => ErrorKind::Network,
            Self::Protocol { .. } => ErrorKind::Protocol,
            Self::NotLoggedIn => ErrorKind::Unauthorized,
            Self::Config(_) => ErrorKind::Config,
            Self::QueueFull { .. } => ErrorKind::Unavailable,
            Self::Closed => ErrorKind::Closed,
            Self::Io { .. } => ErrorKind::Io,
        }
    }

    /// Whether the same call may succeed if tried again later: network
    /// failures, 429, 503 and other 5xx. Never for 4xx answers, which would
    /// only be repeated.
    ///
    /// A network failure may come after the server acted: retrying
    /// [`send`](crate::ChatClient::send) with the same `client_id` stores the
    /// message at most once, but retrying e.g.
    /// [`create_room`](crate::ChatClient::create_room) may then answer
    /// `room_name_taken`.
    ///
    /// ```
    /// use chat_client::ClientError;
    /// assert!(!ClientError::NotLoggedIn.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The server's error code, if the server answered with one.
    ///
    /// ```
    /// use chat_client::ClientError;
    /// assert_eq!(ClientError::NotLoggedIn.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// The HTTP status, if a response arrived.
    ///
    /// ```
    /// use chat_client::ClientError;
    /// assert_eq!(ClientError::NotLoggedIn.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Protocol { status, .. } => *status,
            _ => None,
        }
    }

    /// A human sentence: the server's own for an error answer (e.g. "Room
    /// name already exists"), otherwise a description of the failure.
    ///
    /// ```
    /// use chat_client::ClientError;
    /// assert_eq!(ClientError::NotLoggedIn.message(), "not logged in");
    /// ```
    pub fn message(&self) -> String {
        match self {
            Self::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Per-field problems of an `invalid_input` answer.
    ///
    /// ```
    /// use chat_client::ClientError;
    /// assert!(ClientError::NotLoggedIn.fields().is_none());
    /// ```
    pub fn fields(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Api { fields, .. } => fields.as_ref(),
            _ => None,
        }
    }

    /// Builds the error for an error status and its body.
    pub(crate) fn from_response(status: u16, reason: Option<&str>, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => Self::Api {
                status,
                code: Some(b.code),
                message: b.error,
                fields: b.fields,
            },
            Err(_) => Self::Api {
                status,
                code: None,
                message: reason.unwrap_or("unexpected status").to_owned(),
                fields: None,
            },
        }
    }

    pub(crate) fn network(e: reqwest::Error) -> Self {
        Self::Network {
            timeout: e.is_timeout(),
            source: Box::new(e),
        }
    }

    /// An `error` frame of the live connection, as if the same call had
    /// been made over HTTP (the status is the code's HTTP status).
    pub(crate) fn from_frame(code: ErrorCode, message: String) -> Self {
        Self::Api {
            status: code.http_status(),
            code: Some(code),
            message,
            fields: None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn protocol(status: Option<u16>, detail: impl Into<String>) -> Self {
        Self::Protocol {
            status,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_status_and_code() {
        let body =
            br#"{"error":"Storage is unavailable, try again later","code":"storage_unavailable"}"#;
        let e = ClientError::from_response(503, None, body);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.code(), Some(ErrorCode::StorageUnavailable));
        assert_eq!(e.message(), "Storage is unavailable, try again later");

        let e = ClientError::from_response(502, Some("Bad Gateway"), b"<html>");
        assert_eq!(e.kind(), ErrorKind::Server);
        assert!(e.is_retryable());
        assert_eq!(e.code(), None);
        assert_eq!(e.message(), "Bad Gateway");

        let body = br#"{"error":"Room name already exists","code":"room_name_taken"}"#;
        let e = ClientError::from_response(409, None, body);
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "Room name already exists (HTTP 409, room_name_taken)"
        );

        for (status, kind) in [
            (400, ErrorKind::InvalidInput),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (405, ErrorKind::Protocol),
            (413, ErrorKind::InvalidInput),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Server),
        ] {
            let e = ClientError::from_response(status, None, b"");
            assert_eq!(e.kind(), kind, "status {status}");
            assert_eq!(e.is_retryable(), status == 429 || status >= 500);
        }
    }

    #[test]
    fn attachment_codes_have_their_kinds() {
        for (status, code, kind, retryable) in [
            (404, "attachment_not_found", ErrorKind::NotFound, false),
            (413, "file_too_large", ErrorKind::InvalidInput, false),
            (403, "quota_exceeded", ErrorKind::Forbidden, false),
            (422, "invalid_image", ErrorKind::InvalidInput, false),
            (409, "attachment_in_use", ErrorKind::Conflict, false),
            (416, "range_not_satisfiable", ErrorKind::InvalidInput, false),
            (503, "files_unavailable", ErrorKind::Unavailable, true),
        ] {
            let body = format!(r#"{{"error":"x","code":"{code}"}}"#);
            let e = ClientError::from_response(status, None, body.as_bytes());
            assert_eq!(e.code().map(ErrorCode::as_str), Some(code));
            assert_eq!(e.kind(), kind, "{code}");
            assert_eq!(e.is_retryable(), retryable, "{code}");
        }
        let e = ClientError::io("reading a.txt", std::io::ErrorKind::NotFound.into());
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("reading a.txt: "), "{e}");
    }

    #[test]
    fn unknown_codes_from_a_newer_server_still_decode() {
        let body = br#"{"error":"Something new","code":"brand_new_code"}"#;
        let e = ClientError::from_response(409, None, body);
        assert_eq!(e.code(), Some(ErrorCode::Unknown));
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }
}
