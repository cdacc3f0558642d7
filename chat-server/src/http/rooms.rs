//! `/chat/…` rooms: create, join, list, detail, invite, leave, delete,
//! moderate, bans.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::{CreateRoomRequest, InviteRequest, JoinRoomRequest};
use chat_core::moderation::{
    BansResponse, DirectoryQuery, DirectoryResponse, ModerateRequest, ModerateResponse,
    RoomSettings,
};
use chat_core::room::{JoinedRoom, OnlineResponse, Room, RoomListItem};
use chat_core::{ErrorBody, RoomId};

use super::docs;
use super::extract::{ApiJson, ApiQuery, Caller, RoomPath};
use crate::error::ApiResult;
use crate::server::AppState;

/// Create a room
///
/// The caller becomes its creator and first member; `invited_users` may
/// join it. `type` defaults to `private`.
#[utoipa::path(
    post,
    path = "/chat/create-room/",
    operation_id = "create_room",
    tag = "rooms",
    request_body = CreateRoomRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new room", body = Room),
        (status = 400, description = "`room_name_required`: \"Room name is required\"; `invalid_input`: a bad name or type, or an unknown user id; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`room_name_taken`: \"Room name already exists\"", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<CreateRoomRequest>,
) -> ApiResult<impl IntoResponse> {
    let room = state.service.create_room(user, req).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// Join a room
///
/// Any user may join a `public` room; `private` and `game` rooms only
/// users invited to them. Joining twice is not an error.
#[utoipa::path(
    post,
    path = "/chat/join-room/",
    operation_id = "join_room",
    tag = "rooms",
    request_body = JoinRoomRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The room with its members", body = JoinedRoom),
        (status = 400, description = docs::INVALID_BODY, body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_authorized`: \"You are not authorized to join this room\": the creator of a private or game room, after leaving it (not invited)", body = ErrorBody),
        (status = 404, description = "`room_not_found`: \"Room not found\": no such room, or a private, game or direct room the caller is not invited to (answered like a missing room so that joining cannot probe for them)", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn join(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<JoinRoomRequest>,
) -> ApiResult<Json<JoinedRoom>> {
    state.service.join_room(user, req.room_id).await.map(Json)
}

/// The caller's rooms
///
/// Group rooms the caller is a member of or invited to, with unread counts
/// and the newest message. Conversations have their own list.
#[utoipa::path(
    get,
    path = "/chat/rooms/",
    operation_id = "list_rooms",
    tag = "rooms",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rooms, newest activity first", body = Vec<RoomListItem>),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<RoomListItem>>> {
    state.service.list_rooms(user).await.map(Json)
}

/// A room
///
/// Visible to members, invited users, and anyone for a `public` room.
#[utoipa::path(
    get,
    path = "/chat/rooms/{id}/",
    operation_id = "room_detail",
    tag = "rooms",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The room with its members and invited users", body = Room),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such room, or the caller is not a member of a room that is not public (invitees included)", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn detail(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<Json<Room>> {
    state.service.room_detail(user, room).await.map(Json)
}

/// Invite users to a room
///
/// Members only. Invited users may then join the room.
#[utoipa::path(
    post,
    path = "/chat/rooms/{id}/invite/",
    operation_id = "invite_to_room",
    tag = "rooms",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = InviteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The room with its members and invited users", body = Room),
        (status = 400, description = "`invalid_input`: an unknown user id, or the room is a conversation; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_member`: the caller has not joined the room", body = ErrorBody),
        (status = 404, description = docs::ROOM_NOT_FOUND, body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn invite(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<Json<Room>> {
    state.service.invite(user, room, req).await.map(Json)
}

/// Leave a room
///
/// Members and invited users; the caller's sockets stop receiving the room.
/// Leaving a room one is not in is not an error.
#[utoipa::path(
    post,
    path = "/chat/rooms/{id}/leave/",
    operation_id = "leave_room",
    tag = "rooms",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Left"),
        (status = 400, description = "`invalid_input`: a conversation cannot be left", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = docs::ROOM_NOT_FOUND, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn leave(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<StatusCode> {
    state.service.leave_room(user, room).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a room
///
/// The creator only. The room's history is gone and connected sockets get
/// `room_deleted` (bound sockets then close with 4409).
#[utoipa::path(
    delete,
    path = "/chat/rooms/{id}/",
    operation_id = "delete_room",
    tag = "rooms",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_authorized`: the caller is not the creator (the creator may delete even after leaving)", body = ErrorBody),
        (status = 404, description = docs::ROOM_NOT_FOUND, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<StatusCode> {
    state.service.delete_room(user, room).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moderate a member
///
/// Kick, ban (with an optional end), unban, mute (until a time, or until
/// unmuted), unmute, make a member an admin or an admin a member, or hand
/// the room over (the old owner stays as an admin). Admins act on members;
/// the owner on anyone; roles and handovers are the owner's. The room
/// gets a `member` event (`kicked`, `banned`, `unbanned`, `muted`,
/// `unmuted`, `role_changed`), which is also the answer; a kicked or
/// banned member's sockets stop receiving the room at once. An action that
/// changes nothing (a second unmute) answers `{"event": null}`.
#[utoipa::path(
    post,
    path = "/chat/rooms/{id}/moderate/",
    operation_id = "moderate",
    tag = "moderation",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = ModerateRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ModerateResponse),
        (status = 400, description = "`invalid_input`: a bad field (`until` in the past or on an action without an end, `reason` too long, `role` missing), an action on oneself, or a conversation; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_member`: the caller is not a member; `not_moderator`: the caller is neither admin nor owner; `insufficient_role`: the user's role is not below the caller's, or the action is the owner's", body = ErrorBody),
        (status = 404, description = "`room_not_found`; `user_not_found`: no such user; `not_in_room`: the user is not in the room (kick, mute, role)", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn moderate(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<ModerateRequest>,
) -> ApiResult<Json<ModerateResponse>> {
    let event = state.service.moderate(user, &room.into(), req).await?;
    Ok(Json(ModerateResponse { event }))
}

/// Who is online in a room
///
/// The users with a socket subscribed to the room now, on any server
/// instance (instances sharing a Redis broker count together); the same
/// list a socket gets as `presence` frames after `subscribed`. Members
/// only, like history.
#[utoipa::path(
    get,
    path = "/chat/rooms/{id}/online/",
    operation_id = "room_online",
    tag = "rooms",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Who is online", body = OnlineResponse),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such room, or the caller is not a member", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn online(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<Json<OnlineResponse>> {
    let users = state.service.online(user, room).await?;
    Ok(Json(OnlineResponse { room, users }))
}

/// List a room's bans
///
/// The bans in force, newest first: the room's admins and owner only.
#[utoipa::path(
    get,
    path = "/chat/rooms/{id}/bans/",
    operation_id = "room_bans",
    tag = "moderation",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The bans", body = BansResponse),
        (status = 400, description = "`invalid_input`: a conversation", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_member`; `not_moderator`: the caller is neither admin nor owner", body = ErrorBody),
        (status = 404, description = docs::ROOM_NOT_FOUND, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn bans(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<Json<BansResponse>> {
    let bans = state.service.bans(user, &room.into()).await?;
    Ok(Json(BansResponse { bans }))
}

/// Change a room's settings
///
/// Name (the rules of creation, still unique), type (public ↔ private),
/// topic, description, avatar URL, announcement mode (only admins post)
/// and slow mode (seconds between a member's messages; 0 turns it off).
/// Only what is given changes; an empty string clears a text. Admins and
/// the owner. The room gets a `room_updated` event with what changed; the
/// answer is the room as it now stands.
#[utoipa::path(
    patch,
    path = "/chat/rooms/{id}/",
    operation_id = "update_room",
    tag = "moderation",
    params(("id" = RoomId, Path, description = "The room's id")),
    request_body = RoomSettings,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The room as it now stands", body = Room),
        (status = 400, description = "`invalid_input`: nothing given, a bad field (name, type, lengths, avatar URL, slow mode), or a conversation; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_member`; `not_moderator`: the caller is neither admin nor owner", body = ErrorBody),
        (status = 404, description = docs::ROOM_NOT_FOUND, body = ErrorBody),
        (status = 409, description = "`room_name_taken`", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
    ApiJson(settings): ApiJson<RoomSettings>,
) -> ApiResult<Json<Room>> {
    let (room, _) = state
        .service
        .update_room(user, &room.into(), settings)
        .await?;
    Ok(Json(room))
}

/// The public directory
///
/// Public rooms by name (never private, game or direct ones), with their
/// member counts and last activity: `q` keeps the names that start with
/// it (case-insensitive), `after` pages on (the last name of the page
/// before).
#[utoipa::path(
    get,
    path = "/chat/directory/",
    operation_id = "directory",
    tag = "rooms",
    params(DirectoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of public rooms", body = DirectoryResponse),
        (status = 400, description = "`invalid_input`: a bad `limit`, `q` or `after`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn directory(
    State(state): State<AppState>,
    Caller(_user): Caller,
    ApiQuery(query): ApiQuery<DirectoryQuery>,
) -> ApiResult<Json<DirectoryResponse>> {
    state.service.directory(query).await.map(Json)
}
