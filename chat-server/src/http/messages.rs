//! `/chat/history/` and `/chat/send/`: the HTTP side of messages.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::{HistoryQuery, HistoryResponse, SendRequest, SendResponse};

use super::extract::{ApiJson, ApiQuery, Caller};
use crate::error::ApiResult;
use crate::server::AppState;

pub(super) async fn history(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryResponse>> {
    state.service.history(user, q).await.map(Json)
}

/// 201 with the message's id and seq; a repeated `client_id` answers the
/// same with the original's, so a retry is safe.
pub(super) async fn send(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<SendRequest>,
) -> ApiResult<impl IntoResponse> {
    let sent = state
        .service
        .send(user, &req.room, req.message, req.client_id, None)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SendResponse {
            message: "Message sent!".to_owned(),
            id: sent.message.id,
            seq: sent.message.seq,
        }),
    ))
}
