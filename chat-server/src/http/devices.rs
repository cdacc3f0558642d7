//! Push devices: `/api/push/devices/`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::ErrorBody;
use chat_core::push::{Device, RegisterDeviceRequest};

use super::docs;
use super::extract::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::server::AppState;

/// Register a push device
///
/// The device's push token, so that messages of your rooms reach it while
/// you have no socket open in them (through the server's push gateway).
/// The same token registered again, by anyone, moves to the caller.
#[utoipa::path(
    post,
    path = "/api/push/devices/",
    operation_id = "register_device",
    tag = "push",
    request_body = RegisterDeviceRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = Device),
        (status = 400, description = "`invalid_input`: an empty or overlong field", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<RegisterDeviceRequest>,
) -> ApiResult<impl IntoResponse> {
    let device = state.service.register_device(user, req).await?;
    Ok((StatusCode::CREATED, Json(device)))
}

/// Your push devices
#[utoipa::path(
    get,
    path = "/api/push/devices/",
    operation_id = "devices",
    tag = "push",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Your devices, oldest first", body = Vec<Device>),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<Device>>> {
    state.service.devices(user).await.map(Json)
}

/// Unregister a push device
#[utoipa::path(
    delete,
    path = "/api/push/devices/{id}/",
    operation_id = "unregister_device",
    tag = "push",
    params(("id" = i64, Path, description = "The device's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unregistered"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such device of yours", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    // Anything that is not an id names no device.
    let id = id.parse::<i64>().map_err(|_| {
        ApiError::with_message(chat_core::ErrorCode::NotFound, "No such device of yours")
    })?;
    state.service.delete_device(user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
