//! The server API under `/server/`: a host's backend, with an API key,
//! manages users and rooms, mints tokens and sends as users or bots.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::TokenResponse;
use chat_core::room::Room;
use chat_core::server_api::{
    ChangeMembersRequest, ServerCreateRoomRequest, ServerSendRequest, ServerUser,
    SetMembersRequest, UpsertUserRequest,
};
use chat_core::timeline::{TimelineQuery, TimelineResponse};
use chat_core::{ErrorBody, Message, RoomId};

use super::docs;
use super::extract::{ApiJson, ApiQuery, RoomPath, ServerKey};
use crate::error::ApiResult;
use crate::server::AppState;

/// Create or update a user
///
/// The user the host knows as `external_id` (the subject its identity
/// service's tokens carry): created if new (username from `username` or
/// the id, made unique), else their display name updated.
#[utoipa::path(
    put,
    path = "/server/users/{external_id}/",
    operation_id = "server_upsert_user",
    tag = "server",
    params(("external_id" = String, Path, description = "The user's id in the host (percent-encoded): 1 to 255 bytes (UTF-8) without control characters",
        min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")),
    request_body = UpsertUserRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The user", body = ServerUser),
        (status = 400, description = "`invalid_input`: an empty or overlong id or display name", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn upsert_user(
    State(state): State<AppState>,
    _: ServerKey,
    Path(external_id): Path<String>,
    ApiJson(req): ApiJson<UpsertUserRequest>,
) -> ApiResult<Json<ServerUser>> {
    state
        .service
        .server_upsert_user(&external_id, req)
        .await
        .map(Json)
}

/// Mint a user's tokens
///
/// An access and a refresh token for the user, as a login would give: the
/// host's own login hands them to its client, which uses and refreshes
/// them as any chat client does.
#[utoipa::path(
    post,
    path = "/server/users/{external_id}/tokens/",
    operation_id = "server_mint_tokens",
    tag = "server",
    params(("external_id" = String, Path, description = "The user's id in the host (percent-encoded): 1 to 255 bytes (UTF-8) without control characters",
        min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The tokens", body = TokenResponse),
        (status = 400, description = "`invalid_input`: an empty or overlong external id, or one with control characters", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 403, description = "`account_deactivated`", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no user with that external id", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn mint_tokens(
    State(state): State<AppState>,
    _: ServerKey,
    Path(external_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tokens = state.service.server_mint_tokens(&external_id).await?;
    Ok((StatusCode::CREATED, Json(tokens)))
}

/// Create a room
///
/// A group room with its owner and members (external ids), who are in it
/// at once.
#[utoipa::path(
    post,
    path = "/server/rooms/",
    operation_id = "server_create_room",
    tag = "server",
    request_body = ServerCreateRoomRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The room", body = Room),
        (status = 400, description = "`room_name_required`, `invalid_input`", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 404, description = "`user_not_found`: an owner or member chat does not know", body = ErrorBody),
        (status = 409, description = "`room_name_taken`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn create_room(
    State(state): State<AppState>,
    _: ServerKey,
    ApiJson(req): ApiJson<ServerCreateRoomRequest>,
) -> ApiResult<impl IntoResponse> {
    let room = state.service.server_create_room(req).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// Set a room's members
///
/// The members become exactly these and the owner: the missing join, the
/// others leave (each a `member` event); invitations stay.
#[utoipa::path(
    put,
    path = "/server/rooms/{id}/members/",
    operation_id = "server_set_members",
    tag = "server",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = SetMembersRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The room after", body = Room),
        (status = 400, description = "`invalid_input`: a conversation", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 403, description = "`banned`: a user banned from the room", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn set_members(
    State(state): State<AppState>,
    _: ServerKey,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<SetMembersRequest>,
) -> ApiResult<Json<Room>> {
    state.service.server_set_members(room, req).await.map(Json)
}

/// Add and remove members
///
/// `add` join (already members: nothing), `remove` leave (not members:
/// nothing); the others stay. The owner cannot be removed.
#[utoipa::path(
    post,
    path = "/server/rooms/{id}/members/",
    operation_id = "server_change_members",
    tag = "server",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = ChangeMembersRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The room after", body = Room),
        (status = 400, description = "`invalid_input`: a conversation, the owner in `remove`", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 403, description = "`banned`: a user banned from the room", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn change_members(
    State(state): State<AppState>,
    _: ServerKey,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<ChangeMembersRequest>,
) -> ApiResult<Json<Room>> {
    state
        .service
        .server_change_members(room, req)
        .await
        .map(Json)
}

/// Send as a user or a bot
///
/// As `user` (an external id, a member of the room) or as `bot` (a name:
/// the bot is created and joins on first use). The room's rules apply as
/// to any member (mutes, announcement mode, slow mode); `client_id` makes
/// it idempotent.
#[utoipa::path(
    post,
    path = "/server/rooms/{id}/messages/",
    operation_id = "server_send",
    tag = "server",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = ServerSendRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Stored and broadcast", body = Message),
        (status = 200, description = "A repeat of a `client_id` already stored: the original", body = Message),
        (status = 400, description = "`empty_body`, `body_too_long`, `invalid_input` (not exactly one of `user` and `bot`, a bad bot name)", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 403, description = "`not_member`, `muted`, `announcement_only`, `account_deactivated`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `user_not_found`", body = ErrorBody),
        (status = 429, description = "`slow_mode`, `rate_limited`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn send(
    State(state): State<AppState>,
    _: ServerKey,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<ServerSendRequest>,
) -> ApiResult<impl IntoResponse> {
    let (message, created) = state.service.server_send(room, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message)))
}

/// Read a room's timeline
///
/// Every kind of event, paged as `GET /chat/rooms/{id}/events/`, whoever
/// is in the room; `is_read` says whether anyone but the sender read a
/// message.
#[utoipa::path(
    get,
    path = "/server/rooms/{id}/events/",
    operation_id = "server_events",
    tag = "server",
    params(("id" = RoomId, Path, description = "The room's id"), TimelineQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of timeline events, oldest first", body = TimelineResponse),
        (status = 400, description = "`invalid_input`", body = ErrorBody),
        (status = 401, description = docs::API_KEY_REQUIRED, body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    _: ServerKey,
    RoomPath(room): RoomPath,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> ApiResult<Json<TimelineResponse>> {
    state.service.server_events(room, q).await.map(Json)
}
