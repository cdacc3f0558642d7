//! `/api/users/…`: accounts and tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::User;
use chat_core::api::{
    ListUsersQuery, RefreshRequest, RegisterRequest, TokenRequest, TokenResponse,
};

use super::extract::{ApiJson, ApiQuery, Caller};
use crate::error::ApiResult;
use crate::server::AppState;

pub(super) async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let user = state.service.register(req).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub(super) async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.service.login(req).await.map(Json)
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.service.refresh(req).await.map(Json)
}

pub(super) async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    state.service.logout(req).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> ApiResult<Json<Vec<User>>> {
    state.service.list_users(user, q).await.map(Json)
}

pub(super) async fn me(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<User>> {
    state.service.me(user).await.map(Json)
}
