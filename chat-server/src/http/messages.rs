//! `/chat/history/`, `/chat/send/` and `/chat/messages/{id}/`: the HTTP
//! side of messages.

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::api::{
    EditRequest, HistoryQuery, HistoryResponse, SearchQuery, SearchResponse, SendRequest,
    SendResponse,
};
use chat_core::message::Message;
use chat_core::timeline::{PinsResponse, ThreadResponse, TimelineQuery, TimelineResponse};
use chat_core::{ErrorBody, ErrorCode, MessageId, RoomId};

use super::docs;
use super::extract::RoomPath;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::error::{ApiError, ApiResult};
use crate::server::AppState;
use crate::service::messages::Draft;

/// A room's history
///
/// A page of messages, oldest first. Without bounds, the newest page; with
/// `after`, the page following that seq; with `before`, the page preceding it.
#[utoipa::path(
    get,
    path = "/chat/history/",
    operation_id = "history",
    tag = "messages",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of messages, oldest first", body = HistoryResponse),
        (status = 400, description = "`invalid_input`: `limit` outside 1..=200, a negative bound, or a malformed parameter", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such room, or the caller is not a member of it", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn history(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryResponse>> {
    state.service.history(user, q).await.map(Json)
}

/// A room's timeline
///
/// A page of every kind of timeline event (messages, members joining and
/// leaving), oldest first, each in the JSON of its WebSocket frame, with
/// their seqs 1, 2, 3… without gaps. Paged like history: without bounds the
/// newest page; with `after`, the page following that seq; with `before`,
/// the page preceding it. For members only.
#[utoipa::path(
    get,
    path = "/chat/rooms/{id}/events/",
    operation_id = "room_timeline",
    tag = "messages",
    params(("id" = RoomId, Path, description = "The room's id"), TimelineQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of timeline events, oldest first", body = TimelineResponse),
        (status = 400, description = "`invalid_input`: `limit` outside 1..=200, a negative bound, or a malformed parameter", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such room, or the caller is not a member of it", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn timeline(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> ApiResult<Json<TimelineResponse>> {
    state.service.timeline(user, room, q).await.map(Json)
}

/// Send a message
///
/// To a room the caller is a member of. Sockets subscribed to the room get
/// it as a `message` frame. A repeated `client_id` stores nothing new and
/// answers 201 with the original's id and seq, so a retry is safe.
#[utoipa::path(
    post,
    path = "/chat/send/",
    operation_id = "send_message",
    tag = "messages",
    request_body = SendRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored: `{\"message\": \"Message sent!\", \"id\", \"seq\"}`", body = SendResponse),
        (status = 400, description = "`empty_body`: \"Message body cannot be empty\"; `body_too_long`; `invalid_input`: a bad `client_id` or field, more than 50 `mentions` or one who is not a member of the room; `invalid_json`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_member`: the caller may see the room but has not joined it", body = ErrorBody),
        (status = 404, description = "`room_not_found`: \"Room not found\" (also for a room hidden from the caller); `message_not_found`: `reply_to` or `thread_root` names no message of this room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message named by `reply_to` or `thread_root` was deleted", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 429, description = "`rate_limited`: the caller sends faster than `--user-rate-limit` allows; nothing was stored; `Retry-After` says when to try again", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn send(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<SendRequest>,
) -> ApiResult<impl IntoResponse> {
    let sent = state
        .service
        .send(
            user,
            &req.room,
            Draft {
                body: req.message,
                client_id: req.client_id,
                reply_to: req.reply_to,
                thread_root: req.thread_root,
                mentions: req.mentions,
                attachments: req.attachments,
            },
            None,
        )
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

/// A message id in the path; anything that is not one answers like a
/// message that does not exist.
pub(super) struct MessagePath(MessageId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MessagePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(id) = Path::<i64>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(ErrorCode::MessageNotFound))?;
        Ok(Self(MessageId(id)))
    }
}

/// Edit a message
///
/// The sender replaces the body of one of their messages. The message keeps
/// its seq; it gets `edited_at` and a higher `version`, and the room a
/// `message_edited` event with a seq of its own. The same body again
/// changes nothing (no event), so a retry is safe.
#[utoipa::path(
    patch,
    path = "/chat/messages/{id}/",
    operation_id = "edit_message",
    tag = "messages",
    params(("id" = MessageId, Path, description = "The message's id")),
    request_body = EditRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message as it now stands", body = Message),
        (status = 400, description = "`empty_body`; `body_too_long`; `invalid_json`; `invalid_input`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_sender`: the message is someone else's", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message was deleted", body = ErrorBody),
        (status = 413, description = docs::PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn edit(
    State(state): State<AppState>,
    Caller(user): Caller,
    MessagePath(id): MessagePath,
    ApiJson(req): ApiJson<EditRequest>,
) -> ApiResult<Json<Message>> {
    let changed = state.service.edit_message(user, id, req.body).await?;
    Ok(Json(changed.message))
}

/// Delete a message
///
/// The sender, or whoever moderates the room (its creator; nobody in a
/// conversation), deletes a message. Its body is erased from storage; the
/// message keeps its seq as a tombstone (`deleted: true`, empty body) in
/// history, and the room gets a `message_deleted` event with a seq of its
/// own. Unread counts no longer count it. Deleting it again answers the
/// same tombstone and changes nothing.
#[utoipa::path(
    delete,
    path = "/chat/messages/{id}/",
    operation_id = "delete_message",
    tag = "messages",
    params(("id" = MessageId, Path, description = "The message's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tombstone", body = Message),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_sender`: the message is someone else's and the caller does not moderate the room", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    MessagePath(id): MessagePath,
) -> ApiResult<Json<Message>> {
    let changed = state.service.delete_message(user, id).await?;
    Ok(Json(changed.message))
}

/// A message id and a reaction key in the path (percent-decoded).
pub(super) struct ReactionPath(MessageId, String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReactionPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path((id, key)) = Path::<(i64, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(ErrorCode::MessageNotFound))?;
        Ok(Self(MessageId(id), key))
    }
}

/// React to a message
///
/// A member adds their reaction `key` (an emoji or a short name, 1–32
/// characters without spaces, control characters or `/`; percent-encode it
/// in the path) to a message of the room. Each user reacts at most once per
/// key; doing it again changes nothing. The room gets a `reaction` event.
/// Answers the message with its `reactions` (`me` marks the caller's).
#[utoipa::path(
    put,
    path = "/chat/messages/{id}/reactions/{key}/",
    operation_id = "add_reaction",
    tag = "messages",
    params(
        ("id" = MessageId, Path, description = "The message's id"),
        ("key" = String, Path, description = "The reaction, percent-encoded: 1 to 32 characters without whitespace, control characters or `/`",
            min_length = 1, max_length = 32, pattern = r"^[^/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,32}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message with its reactions", body = Message),
        (status = 400, description = "`invalid_input`: a bad key, or the message has 20 different reactions already", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message was deleted", body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn react(
    State(state): State<AppState>,
    Caller(user): Caller,
    ReactionPath(id, key): ReactionPath,
) -> ApiResult<Json<Message>> {
    let changed = state.service.react(user, id, key, true).await?;
    Ok(Json(changed.message))
}

/// Take a reaction back
///
/// Removes the caller's reaction `key` from a message; not having it
/// changes nothing. The room gets a `reaction` event with `added: false`.
#[utoipa::path(
    delete,
    path = "/chat/messages/{id}/reactions/{key}/",
    operation_id = "remove_reaction",
    tag = "messages",
    params(
        ("id" = MessageId, Path, description = "The message's id"),
        ("key" = String, Path, description = "The reaction, percent-encoded: 1 to 32 characters without whitespace, control characters or `/`",
            min_length = 1, max_length = 32, pattern = r"^[^/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,32}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message with its reactions", body = Message),
        (status = 400, description = "`invalid_input`: a bad key", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message was deleted", body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn unreact(
    State(state): State<AppState>,
    Caller(user): Caller,
    ReactionPath(id, key): ReactionPath,
) -> ApiResult<Json<Message>> {
    let changed = state.service.react(user, id, key, false).await?;
    Ok(Json(changed.message))
}

/// Pin a message
///
/// Whoever moderates the room (its creator; either participant of a
/// conversation) pins a message to it. Pinning a pinned message changes
/// nothing. The room gets a `message_pinned` event. A room keeps at most
/// 50 pinned messages.
#[utoipa::path(
    put,
    path = "/chat/messages/{id}/pin/",
    operation_id = "pin_message",
    tag = "messages",
    params(("id" = MessageId, Path, description = "The message's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message, `pinned`", body = Message),
        (status = 400, description = "`invalid_input`: the room has 50 pinned messages already", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_moderator`: the caller does not moderate the room", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message was deleted", body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn pin(
    State(state): State<AppState>,
    Caller(user): Caller,
    MessagePath(id): MessagePath,
) -> ApiResult<Json<Message>> {
    let changed = state.service.pin(user, id, true).await?;
    Ok(Json(changed.message))
}

/// Unpin a message
///
/// As `PUT`, the other way; the room gets a `message_unpinned` event.
#[utoipa::path(
    delete,
    path = "/chat/messages/{id}/pin/",
    operation_id = "unpin_message",
    tag = "messages",
    params(("id" = MessageId, Path, description = "The message's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message, no longer `pinned`", body = Message),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_moderator`: the caller does not moderate the room", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 409, description = "`message_deleted`: the message was deleted (which unpinned it)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: changes count against `--user-rate-limit` like sends", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn unpin(
    State(state): State<AppState>,
    Caller(user): Caller,
    MessagePath(id): MessagePath,
) -> ApiResult<Json<Message>> {
    let changed = state.service.pin(user, id, false).await?;
    Ok(Json(changed.message))
}

/// A thread
///
/// A thread's root (with its reply count) and a page of its replies,
/// oldest first, paged by seq like the room's timeline: without bounds
/// the newest replies, with `after` the ones following that seq. A reply
/// in the thread stands for its root. Thread replies are messages of the
/// room (they take its seqs and reach its subscribers as `message`
/// frames with `thread_root`), but `GET /chat/history/` leaves them out.
/// For members of the message's room only.
#[utoipa::path(
    get,
    path = "/chat/messages/{id}/thread/",
    operation_id = "thread",
    tag = "messages",
    params(("id" = MessageId, Path, description = "The thread's root (or any reply in it)"), TimelineQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The root and a page of replies", body = ThreadResponse),
        (status = 400, description = "`invalid_input`: a bound or `limit` out of range", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message, or the caller is not a member of its room", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn thread(
    State(state): State<AppState>,
    Caller(user): Caller,
    MessagePath(id): MessagePath,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> ApiResult<Json<ThreadResponse>> {
    state.service.thread(user, id, q).await.map(Json)
}

/// A room's pinned messages
///
/// The most recently pinned first. For members only, like history.
#[utoipa::path(
    get,
    path = "/chat/rooms/{id}/pins/",
    operation_id = "room_pins",
    tag = "messages",
    params(("id" = RoomId, Path, description = "The room's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The pinned messages", body = PinsResponse),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: no such room, or the caller is not a member of it", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn pins(
    State(state): State<AppState>,
    Caller(user): Caller,
    RoomPath(room): RoomPath,
) -> ApiResult<Json<PinsResponse>> {
    state.service.pins(user, room).await.map(Json)
}

/// Search messages
///
/// Full-text search over the messages of the rooms the caller is a member
/// of (or of one of them, `room`), newest first: every word of `q` must
/// appear (case and punctuation ignored; no stemming). Deleted messages
/// are never found; an edited one is found by its current body. Each hit
/// names its room and seq, to open the history around it. Page with
/// `before` = the last hit's message id.
#[utoipa::path(
    get,
    path = "/chat/search/",
    operation_id = "search_messages",
    tag = "messages",
    params(SearchQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Hits, newest first", body = SearchResponse),
        (status = 400, description = "`invalid_input`: no word in `q`, `q` too long, or `limit` outside 1..=100", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`room_not_found`: `room` is not a room the caller is a member of", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn search(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<SearchResponse>> {
    state.service.search(user, q).await.map(Json)
}
