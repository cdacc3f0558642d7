//! `/api/chats/…`: one-to-one conversations and the unread total.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::Seq;
use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationRequest, CreateConversationResponse,
    UnreadCount,
};
use serde::Deserialize;

use chat_core::ErrorBody;

use super::docs;
use super::extract::RoomPath;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::error::ApiResult;
use crate::server::AppState;

/// Paging of a conversation's messages.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Only messages with `seq` below this (the newest page if absent).
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<Seq>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// Your conversations
///
/// Most recent activity first, each with the other participant, the last
/// message and the unread count.
#[utoipa::path(
    get,
    path = "/api/chats/conversations/",
    operation_id = "list_conversations",
    tag = "conversations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversations, most recent activity first", body = Vec<ConversationSummary>),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<ConversationSummary>>> {
    state.service.conversations(user).await.map(Json)
}

/// A conversation with a page of its messages
///
/// The newest `limit` messages below `before`, oldest first. Only the two
/// participants see it; everyone else gets 404.
#[utoipa::path(
    get,
    path = "/api/chats/conversations/{id}/",
    operation_id = "get_conversation",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's room id"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetail),
        (status = 400, description = "`invalid_input`: a bad `before` or `limit`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such conversation, or the caller does not take part", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
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

/// Create or get a conversation
///
/// 201 when the conversation was created, 200 when it existed; at most one
/// exists per pair of users.
#[utoipa::path(
    post,
    path = "/api/chats/conversations/create/",
    operation_id = "create_conversation",
    tag = "conversations",
    request_body = CreateConversationRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreateConversationResponse),
        (status = 200, description = "It existed", body = CreateConversationResponse),
        (status = 400, description = "`invalid_input`: `user_id` is missing or is the caller; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`user_not_found`: no such user", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
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

/// Unread messages in total
///
/// Messages from others above the caller's read marks, over every room and
/// conversation the caller is a member of.
#[utoipa::path(
    get,
    path = "/api/chats/unread-count/",
    operation_id = "unread_count",
    tag = "conversations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The total", body = UnreadCount),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn unread_count(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<UnreadCount>> {
    state.service.unread_count(user).await.map(Json)
}
