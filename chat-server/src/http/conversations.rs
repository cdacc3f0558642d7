//! `/api/chats/…`: one-to-one conversations and the unread total.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::Seq;
use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationRequest, UnreadCount,
};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::rooms::RoomPath;
use crate::error::ApiResult;
use crate::server::AppState;

/// Paging of a conversation's messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    before: Option<Seq>,
    limit: Option<u32>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<ConversationSummary>>> {
    state.service.conversations(user).await.map(Json)
}

pub(super) async fn detail(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(id): RoomPath,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ConversationDetail>> {
    state
        .service
        .conversation(user, id, q.before, q.limit)
        .await
        .map(Json)
}

/// 201 when the conversation was created, 200 when it existed.
pub(super) async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<CreateConversationRequest>,
) -> ApiResult<impl IntoResponse> {
    let created = state.service.create_conversation(user, req.user_id).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)))
}

pub(super) async fn unread_count(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<UnreadCount>> {
    state.service.unread_count(user).await.map(Json)
}
