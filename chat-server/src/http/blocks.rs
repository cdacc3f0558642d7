//! `/api/users/{id}/block/` and `/api/users/blocked/`: blocking users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::user::BlockedResponse;
use chat_core::{ErrorBody, UserId};

use super::docs;
use super::extract::{Caller, UserPath};
use crate::error::ApiResult;
use crate::server::AppState;

/// Block a user
///
/// They can no longer open a conversation with you (404 `user_not_found`)
/// nor send in yours (404 `room_not_found`), so you hear nothing from them
/// in direct rooms. Group rooms are not filtered. Blocking twice is fine.
#[utoipa::path(
    post,
    path = "/api/users/{id}/block/",
    operation_id = "block_user",
    tag = "users",
    params(("id" = UserId, Path, description = "The user to block")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Blocked"),
        (status = 400, description = "`invalid_input`: yourself", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn block(
    State(state): State<AppState>,
    Caller(user): Caller,
    UserPath(other): UserPath,
) -> ApiResult<StatusCode> {
    state.service.block(user, other).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unblock a user
#[utoipa::path(
    delete,
    path = "/api/users/{id}/block/",
    operation_id = "unblock_user",
    tag = "users",
    params(("id" = UserId, Path, description = "The user to unblock (an id that names nobody is not blocked either)")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Not blocked (any more)"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`user_not_found`: the id is not a user id (an integer from 1)", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn unblock(
    State(state): State<AppState>,
    Caller(user): Caller,
    UserPath(other): UserPath,
) -> ApiResult<StatusCode> {
    state.service.unblock(user, other).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The users you blocked
#[utoipa::path(
    get,
    path = "/api/users/blocked/",
    operation_id = "blocked_users",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The newest block first", body = BlockedResponse),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn blocked(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<BlockedResponse>> {
    let blocked = state.service.blocked(user).await?;
    Ok(Json(BlockedResponse { blocked }))
}
