//! `/chat/…` rooms: create, join, list, detail, invite, leave, delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::{CreateRoomRequest, InviteRequest, JoinRoomRequest};
use chat_core::room::{JoinedRoom, Room, RoomListItem};
use chat_core::{ErrorCode, RoomId};

use super::extract::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::server::AppState;

/// A room id from the path; anything else is an unknown room.
#[derive(Debug, Clone, Copy)]
pub(super) struct RoomPath(pub(super) RoomId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(id) = Path::<i64>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(ErrorCode::RoomNotFound))?;
        Ok(Self(RoomId(id)))
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<CreateRoomRequest>,
) -> ApiResult<impl IntoResponse> {
    let room = state.service.create_room(user, req).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

pub(super) async fn join(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<JoinRoomRequest>,
) -> ApiResult<Json<JoinedRoom>> {
    state.service.join_room(user, req.room_id).await.map(Json)
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<RoomListItem>>> {
    state.service.list_rooms(user).await.map(Json)
}

pub(super) async fn detail(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<Json<Room>> {
    state.service.room_detail(user, room).await.map(Json)
}

pub(super) async fn invite(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<Json<Room>> {
    state.service.invite(user, room, req).await.map(Json)
}

pub(super) async fn leave(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<StatusCode> {
    state.service.leave_room(user, room).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<StatusCode> {
    state.service.delete_room(user, room).await?;
    Ok(StatusCode::NO_CONTENT)
}
