//! WebSocket endpoints: authentication and room checks at the handshake
//! (refusals are plain HTTP 401/403/404 with the error body), then the
//! per-socket loop in [`session`].
//!
//! - `/ws/`: one socket for many rooms (`subscribe` / `unsubscribe`).
//! - `/ws/chat/{room}/`: bound to one room by name or id; connecting joins a
//!   public room and marks the room read.
//! - `/ws/users/{user_id}/`: bound to the conversation with that user,
//!   created if needed; connecting marks it read.

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use chat_core::{ErrorCode, RoomRef, Seq, UserId};
use serde::Deserialize;

use crate::auth::AccessToken;
use crate::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::server::AppState;
use crate::storage::RoomRecord;

mod cursor;
pub(crate) mod session;

pub(crate) use session::Bound;

/// Read buffer per socket, allocated up front for every socket. Client
/// frames are small JSON (a `send` with a 100 B body is ~150 B, so one read
/// still takes several) and tungstenite grows the buffer for the rare big
/// one, so a small start keeps idle sockets cheap: the 128 KiB default costs
/// ~135 KiB of RSS per idle socket, 4 KiB about 10.8 KB, 1 KiB about 8 KB
/// (benches/run.sh W3); 512 B still takes three 150 B sends per read.
const READ_BUFFER_BYTES: usize = 512;
/// Bytes buffered before tungstenite writes on its own; the session flushes
/// after every batch anyway.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Frames up to this multiple of the message limit are read whole before
/// being refused with 1009.
const FRAME_CEILING_FACTOR: usize = 4;

/// The WebSocket routes. A WebSocket opens with `GET` + `Upgrade` on
/// HTTP/1.1 and with `CONNECT` (RFC 8441) on HTTP/2, which browsers use when
/// HTTPS negotiated h2.
pub(crate) fn routes() -> Router<AppState> {
    let upgrade = MethodFilter::GET.or(MethodFilter::CONNECT);
    Router::new()
        .route("/ws", on(upgrade, multi))
        .route("/ws/chat/{room}", on(upgrade, bound))
        .route("/ws/users/{user_id}", on(upgrade, direct))
}

#[derive(Debug, Default, Deserialize)]
struct WsParams {
    token: Option<String>,
    after_seq: Option<Seq>,
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

async fn multi(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<WsParams>,
    upgrade: Upgrade,
) -> Response {
    let access = match handshake(&state, &headers, params.token.as_deref()).await {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    accept(state, upgrade, access, None)
}

async fn bound(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
    ApiQuery(params): ApiQuery<WsParams>,
    upgrade: Upgrade,
) -> Response {
    let access = match handshake(&state, &headers, params.token.as_deref()).await {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    let user = access.user;
    let service = &state.service;
    match service
        .room_to_listen(
            user,
            &RoomRef::parse(&room),
            service.limits().auto_create_rooms,
        )
        .await
    {
        Ok(room) => accept_bound(state, upgrade, access, room, params.after_seq).await,
        Err(e) => e.into_response(),
    }
}

/// `/ws/users/{user_id}/`: bound to the conversation with that user,
/// created if needed.
async fn direct(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(other): Path<String>,
    ApiQuery(params): ApiQuery<WsParams>,
    upgrade: Upgrade,
) -> Response {
    let access = match handshake(&state, &headers, params.token.as_deref()).await {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    let user = access.user;
    let Ok(other) = other.parse::<i64>() else {
        return ApiError::new(ErrorCode::UserNotFound).into_response();
    };
    match state.service.open_conversation(user, UserId(other)).await {
        Ok(opened) => accept_bound(state, upgrade, access, opened.room, params.after_seq).await,
        Err(e) => e.into_response(),
    }
}

/// The documents' behaviour for a bound socket: opening it reads the room.
async fn accept_bound(
    state: AppState,
    upgrade: Upgrade,
    access: AccessToken,
    room: RoomRecord,
    after_seq: Option<Seq>,
) -> Response {
    let user = access.user;
    if after_seq.is_some_and(|s| s < 0) {
        return ApiError::invalid_field("after_seq", "must not be negative").into_response();
    }
    // "Connecting marks the room read up to its newest message": up to the
    // message, not past the timeline events after it (a join), which would
    // send a read receipt that covers no message.
    let newest = room.last_message_seq;
    if let Err(e) = state.service.mark_read(user, room.id, newest, None).await {
        return e.into_response();
    }
    accept(state, upgrade, access, Some(Bound { room, after_seq }))
}

/// Checks the origin, then the token (`?token=` or `Authorization:
/// Bearer`). The origin comes first so that a page of a foreign site learns
/// nothing about the token it holds.
async fn handshake(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<AccessToken, ApiError> {
    if let Some(origin) = headers.get(ORIGIN)
        && !crate::http::origin::allowed(state.limits.allowed_origins.as_deref(), origin)
    {
        return Err(ApiError::with_message(
            ErrorCode::NotAuthorized,
            "Origin not allowed",
        ));
    }
    let header_token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let token = query_token
        .or(header_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
    let access = state
        .service
        .authenticate(token, ErrorCode::Unauthorized)
        .await?;
    Ok(access)
}

fn accept(
    state: AppState,
    upgrade: Upgrade,
    access: AccessToken,
    bound: Option<Bound>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::with_message(
                ErrorCode::InvalidInput,
                format!(
                    "This endpoint expects a WebSocket upgrade: {}",
                    e.body_text()
                ),
            )
            .into_response();
        }
    };
    let max = state.limits.max_frame_bytes;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max)
        // tungstenite checks the frame limit on the header and stops reading,
        // leaving the payload unread; closing then resets the connection and
        // the client may never see the 1009. The message limit is checked
        // after the frame is read, so the close is clean. Frames beyond the
        // ceiling are still cut at the header.
        .max_frame_size(max.saturating_mul(FRAME_CEILING_FACTOR))
        .on_upgrade(move |socket| {
            // Tracked, so that a shutdown waits for its close frame.
            let sessions = state.sessions.clone();
            sessions.track_future(async move {
                use futures_util::StreamExt as _;
                let (sink, stream) = socket.split();
                session::run(state, access, bound, sink, stream).await;
            })
        })
}
