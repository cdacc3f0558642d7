//! Extractors that speak the contract: every rejection becomes an
//! `{"error","code"}` body instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chat_core::{ErrorCode, UserId};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::error::ApiError;
use crate::server::AppState;

/// The caller, from `Authorization: Bearer <access token>`. Missing,
/// malformed and expired tokens all get 401 `unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) UserId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        let access = state
            .service
            .authenticate(token, ErrorCode::Unauthorized)
            .await?;
        Ok(Self(access.user))
    }
}

/// A live API key of the server API, from `Authorization: Bearer
/// chat_key_…`. A user's token, a revoked or unknown key: 401
/// `unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerKey(pub(crate) i64);

impl FromRequestParts<AppState> for ServerKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).unwrap_or("");
        let key = state.service.api_key(token).await?;
        Ok(Self(key.id))
    }
}

/// The client's address, when the server was started with connect info
/// (`Server::start` is; a router embedded elsewhere may not be, and then
/// per-address limits do not apply): the TCP peer, or behind a proxy of
/// `--trusted-proxies` the client its `X-Forwarded-For` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(peer.map(|peer| {
            super::proxies::client(peer, &parts.headers, &state.limits.trusted_proxies)
        })))
    }
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A JSON body. Unlike `axum::Json` it does not insist on a
/// `Content-Type` (curl's `-d` sends a form type), tells syntax errors
/// (`invalid_json`) from wrong fields (`invalid_input`), and answers an
/// oversized body with 413 `payload_too_large`.
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::new(ErrorCode::PayloadTooLarge),
            other => ApiError::with_message(ErrorCode::InvalidInput, other.body_text()),
        })?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON body (an object: every body of the API is one),
/// classifying the failure.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if chat_core::text::json_has_nul(bytes) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidInput,
            chat_core::text::NUL_REFUSED,
        ));
    }
    // serde reads a struct from an array too (`["x"]` as `{"body": "x"}`),
    // which the schema does not allow: only an object is a body.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidInput,
            "Invalid input: the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                ApiError::with_message(ErrorCode::InvalidInput, format!("Invalid input: {e}"))
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::with_message(ErrorCode::InvalidJson, format!("Invalid JSON: {e}"))
            }
        }
    })
}

/// A query string, with `invalid_input` on bad parameters.
#[derive(Debug, Clone)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e: QueryRejection| {
                ApiError::with_message(
                    ErrorCode::InvalidInput,
                    format!("Invalid query: {}", e.body_text()),
                )
            })
    }
}

/// An id from the path, read as `$inner`; anything else (not a number, or
/// below 1: ids start at 1) answers `$code`, as an id that names nothing
/// does.
macro_rules! path_id {
    ($(#[$doc:meta])* $name:ident($inner:ty), $code:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub(crate) $inner);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let axum::extract::Path(id) =
                    axum::extract::Path::<i64>::from_request_parts(parts, state)
                        .await
                        .map_err(|_| ApiError::new($code))?;
                if id < 1 {
                    return Err(ApiError::new($code));
                }
                Ok(Self(<$inner>::from(id)))
            }
        }
    };
}

path_id!(
    /// A room id from the path.
    RoomPath(chat_core::RoomId),
    ErrorCode::RoomNotFound
);
path_id!(
    /// A user id from the path.
    UserPath(UserId),
    ErrorCode::UserNotFound
);
path_id!(
    /// A report id from the path.
    ReportPath(i64),
    ErrorCode::ReportNotFound
);
path_id!(
    /// An attachment id from the path.
    AttachmentPath(chat_core::AttachmentId),
    ErrorCode::AttachmentNotFound
);
