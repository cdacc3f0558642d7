//! `/api/users/…`: accounts and tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::{
    ListUsersQuery, RefreshRequest, RegisterRequest, TokenRequest, TokenResponse,
};
use chat_core::{ErrorBody, User};

use super::docs;
use super::extract::{ApiJson, ApiQuery, Caller, ClientAddr};
use crate::error::ApiResult;
use crate::server::AppState;

/// Register a user
///
/// Username 3–32 of `[A-Za-z0-9_.-]`, a valid email, a password of at least
/// 8 characters; `display_name` defaults to the username.
#[utoipa::path(
    post,
    path = "/api/users/register/",
    operation_id = "register",
    tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user, as they see themself", body = User),
        (status = 400, description = "`invalid_input` with `fields` naming each bad field; `invalid_json`", body = ErrorBody),
        (status = 409, description = "`username_taken` or `email_taken`", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let user = state.service.register(req).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Log in
///
/// By `username` or by `email`, with the password. Starts a new family of
/// refresh tokens.
#[utoipa::path(
    post,
    path = "/api/users/token/",
    operation_id = "login",
    tag = "users",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "An access and a refresh token", body = TokenResponse),
        (status = 400, description = docs::INVALID_BODY, body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: \"Invalid username or password\", the same whether or not the user exists", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many failed attempts for this account or from this address; `Retry-After` says when to try again (even the right password is refused until then)", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.service.login(req, addr).await.map(Json)
}

/// Refresh tokens
///
/// Spends the refresh token and returns a new pair. Presenting a spent
/// refresh token again revokes its whole family.
#[utoipa::path(
    post,
    path = "/api/users/token/refresh/",
    operation_id = "refresh_tokens",
    tag = "users",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access and refresh token", body = TokenResponse),
        (status = 400, description = docs::INVALID_BODY, body = ErrorBody),
        (status = 401, description = "`invalid_token`: unknown, expired, spent or revoked refresh token", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.service.refresh(req).await.map(Json)
}

/// Log out
///
/// The refresh token stops working. Logging out twice is not an error.
#[utoipa::path(
    post,
    path = "/api/users/logout/",
    operation_id = "logout",
    tag = "users",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = docs::INVALID_BODY, body = ErrorBody),
        (status = 401, description = "`invalid_token`: not a refresh token this server issued", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    state.service.logout(req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List users
///
/// Ordered by id, paged with `after`. Email and creation time only for the
/// caller themself.
#[utoipa::path(
    get,
    path = "/api/users/",
    operation_id = "list_users",
    tag = "users",
    params(ListUsersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of users", body = Vec<User>),
        (status = 400, description = "`invalid_input`: `limit` outside 1..=200 or a malformed parameter", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> ApiResult<Json<Vec<User>>> {
    state.service.list_users(user, q).await.map(Json)
}

/// The caller
#[utoipa::path(
    get,
    path = "/api/users/me/",
    operation_id = "me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller, with email", body = User),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn me(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<User>> {
    state.service.me(user).await.map(Json)
}
