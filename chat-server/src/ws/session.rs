//! The per-socket loop: client frames in, events and answers out.
//!
//! One task per socket does both directions. While it awaits an append, no
//! events are written, which is fine: they wait in the socket's bounded
//! queue, and one task instead of two halves the per-socket memory.
//!
//! Client frames are handled in two phases: read what has already arrived
//! (up to [`MAX_BURST`] frames), then execute it in order. A run of sends
//! goes to the service in one call, so a client sending faster than one
//! commit per message shares commits instead of waiting for each; every
//! other frame runs on its own. Each frame is answered in the order it
//! came.
//!
//! Each subscribed room's stream is in `seq` order, each event once: the
//! hub hands them over in order, a cursor per room (`delivered`) drops what
//! a replay already sent, and an event beyond `delivered + 1` (possible only
//! across instances, when the hub gave up waiting for a lost publish) first
//! reads the gap from storage. The socket that sent a message gets its
//! `ack` in the message's place in that order: the committer queued the
//! message's event on this socket before answering the append, so the ack
//! waits (in `acks`) until the stream reaches its seq, normally within the
//! same turn of the loop.
//!
//! The loop is generic over the sink and stream, so tests can drive it with
//! channels.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use chat_core::frame::{ClientFrame, PresenceStatus, ServerFrame};
use chat_core::{CloseCode, ErrorCode, RoomId, RoomRef, Seq, UserId};
use futures_util::{FutureExt as _, Sink, SinkExt as _, Stream, StreamExt as _};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cursor::{Cursor, Cursors};
use crate::auth::{AccessToken, LEEWAY_SECS, unix_timestamp};
use crate::error::ApiError;
use crate::event::{ConnId, Event, EventKind, Frame};
use crate::hub::{Delivery, Subscriber};
use crate::server::AppState;
use crate::service::Access;
use crate::service::messages::{Draft, MAX_HISTORY_PAGE, MessageChanged, Outgoing, timeline_frame};
use crate::storage::{HistoryQuery, RoomRecord};

/// A socket bound to one room at the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub(crate) room: RoomRecord,
    /// Replay messages above this first (optional, as on `subscribe`).
    pub(crate) after_seq: Option<Seq>,
}

/// At most one `typing` notice per room per socket in this interval.
pub(crate) const TYPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Events written per flush, so that one busy room cannot starve reads.
const MAX_BATCH: usize = 128;

/// Client frames read before they are executed.
const MAX_BURST: usize = 64;

/// How long a closing socket may take to accept its close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a closed socket waits for the client's close reply.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the loop does after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close(CloseCode),
    /// The client sent a close frame: tungstenite queued the reply (RFC
    /// 6455 asks for it), which a flush sends; nothing else may follow.
    ClosedByClient,
    /// The client went away; nothing to send.
    Gone,
}

/// A `send` (or `message`) frame read but not stored yet.
#[derive(Debug)]
struct PendingSend {
    room: RoomRef,
    draft: Draft,
}

/// One client frame as read, before it is executed.
#[derive(Debug)]
enum Incoming {
    Send(PendingSend),
    Frame(ClientFrame),
    /// A frame answered by this reply alone (it did not parse).
    /// Boxed: a server frame can hold a whole message; these are rare.
    Reply(Box<ServerFrame>),
    /// The socket is done: the client closed it or it failed.
    End(Flow),
}

struct Session<S> {
    state: AppState,
    user: UserId,
    /// When the newest token this socket presented expires (Unix seconds);
    /// the socket is closed with 4401 once that plus the leeway passes.
    expires_at: u64,
    /// The token version of the newest token this socket presented: a
    /// revocation of a newer version closes it with 4403.
    version: i64,
    conn: ConnId,
    bound: Option<RoomId>,
    rooms: Cursors,
    queue: mpsc::Sender<Delivery>,
    /// The other end of `queue`: what the hub delivered.
    inbox: mpsc::Receiver<Delivery>,
    /// Cancelled when the socket falls behind (the hub does that) or the
    /// server shuts down: a child of the shutdown token, so one future
    /// watches both, and polling it touches only this socket's lock, not
    /// the one every socket shares.
    too_slow: CancellationToken,
    limiter: Option<DefaultDirectRateLimiter>,
    /// When each room last heard this socket was typing.
    typing_sent: HashMap<RoomId, Instant>,
    sink: S,
    out: Vec<WsMessage>,
}

/// Runs a socket until the client leaves, the server shuts down (1001), the
/// socket falls behind (4408), its bound room is deleted (4409), a frame is
/// too large (1009), its token expires without an `auth` frame renewing it
/// (4401), or its user's sessions are revoked (4403: logged out everywhere,
/// deactivated).
pub(crate) async fn run<S, R, E>(
    state: AppState,
    access: AccessToken,
    bound: Option<Bound>,
    sink: S,
    mut stream: R,
) where
    S: Sink<WsMessage> + Unpin + Send,
    S::Error: std::fmt::Display,
    R: Stream<Item = Result<WsMessage, E>> + Unpin + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    let (queue, inbox) = mpsc::channel(state.limits.socket_queue);
    let limiter = NonZeroU32::new(state.limits.rate_limit).map(|rate| {
        let burst = NonZeroU32::new(state.limits.rate_limit.saturating_mul(5)).unwrap_or(rate);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    let user = access.user;
    let too_slow = state.shutdown.child_token();
    let mut s = Session {
        conn: state.next_conn_id(),
        state,
        user,
        expires_at: access.expires_at,
        version: access.version,
        bound: bound.as_ref().map(|b| b.room.id),
        rooms: Cursors::default(),
        queue,
        inbox,
        too_slow,
        limiter,
        typing_sent: HashMap::new(),
        sink,
        out: Vec::new(),
    };
    tracing::debug!(conn = s.conn.0, %user, "socket open");
    let _open = ConnectionGauge::open();
    // Made once: a fresh future per turn of the loop would register with the
    // token and deregister again every time.
    let stop = s.too_slow.clone().cancelled_owned();
    let mut revocations = s.state.service.revocations();
    let service = s.state.service.clone();
    let revoked_before = !service.session_current(user, s.version).await;
    tokio::pin!(stop);
    let mut expires_at = s.expires_at;
    let expiry = tokio::time::sleep_until(expiry_deadline(expires_at));
    tokio::pin!(expiry);

    let mut flow = match bound {
        _ if revoked_before => Flow::Close(CloseCode::SessionRevoked),
        Some(b) => Box::pin(s.subscribe(b.room, b.after_seq)).await,
        None => Flow::Continue,
    };
    if matches!(flow, Flow::Continue | Flow::Close(_))
        && let Err(f) = s.flush().await
    {
        flow = f;
    }
    while flow == Flow::Continue {
        flow = tokio::select! {
            biased;
            () = &mut stop => Flow::Close(s.stop_code()),
            () = &mut expiry => Flow::Close(CloseCode::TokenExpired),
            revoked = revocations.recv() => Box::pin(s.on_revoked(revoked)).await,
            Some(delivery) = s.inbox.recv() => {
                match Box::pin(s.on_delivery(delivery)).await {
                    Flow::Continue => Box::pin(s.take_queued()).await,
                    flow => flow,
                }
            }
            frame = stream.next() => {
                let burst = s.read_burst(frame, &mut stream);
                match Box::pin(s.execute(burst)).await {
                    Flow::Continue => Box::pin(s.take_queued()).await,
                    flow => flow,
                }
            }
        };
        if matches!(flow, Flow::Continue | Flow::Close(_))
            && let Err(f) = s.flush().await
        {
            // Keep a close already decided (its frames went out or not).
            if flow == Flow::Continue || f == Flow::Gone {
                flow = f;
            }
        }
        if s.expires_at != expires_at {
            expires_at = s.expires_at;
            expiry.as_mut().reset(expiry_deadline(expires_at));
        }
    }
    match flow {
        // Boxed, like every branch above, so that the future each socket
        // keeps for its lifetime is only as large as its idle state.
        Flow::Close(code) => Box::pin(close(code, s.conn, &mut s.sink, &mut stream)).await,
        Flow::ClosedByClient => Box::pin(answer_close(&mut s.sink, &mut stream)).await,
        Flow::Continue | Flow::Gone => {}
    }
    let hub = s.state.service.hub().clone();
    for room in s.rooms.keys() {
        hub.leave(*room, s.conn).await;
    }
    tracing::debug!(conn = s.conn.0, %user, "socket closed");
}

/// Sends the close frame `code` and finishes the closing handshake.
async fn close<S, R, E>(code: CloseCode, conn: ConnId, sink: &mut S, stream: &mut R)
where
    S: Sink<WsMessage> + Unpin + Send,
    R: Stream<Item = Result<WsMessage, E>> + Unpin + Send,
{
    tracing::debug!(conn = conn.0, code = code.code(), "closing socket");
    let close = WsMessage::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    }));
    // A client that is not reading cannot take the close frame either:
    // give it a while, then drop the connection.
    if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close)).await {
        finish_closing(stream).await;
    }
}

/// Finishes the closing handshake: reads (and discards) until the client
/// answers or goes. Dropping a socket with unread input makes the kernel
/// reset it, and a reset can destroy the close frame before the client
/// reads it.
async fn finish_closing<R, E>(stream: &mut R)
where
    R: Stream<Item = Result<WsMessage, E>> + Unpin + Send,
{
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
}

/// Sends the close reply tungstenite queued when the client's close frame
/// arrived, then waits for the client to end the connection.
async fn answer_close<S, R, E>(sink: &mut S, stream: &mut R)
where
    S: Sink<WsMessage> + Unpin + Send,
    R: Stream<Item = Result<WsMessage, E>> + Unpin + Send,
{
    if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await {
        finish_closing(stream).await;
    }
}

/// The instant a socket whose token expires at `exp` (Unix seconds) is
/// closed: the token verifier's own leeway past `exp`, so a socket lives
/// exactly as long as its token would still be accepted.
fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    // An expiry centuries away (another issuer's token may say anything)
    // is as good as none; adding it to a clock must not overflow.
    const FAR: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    let left = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(
            exp.saturating_add(LEEWAY_SECS),
        ))
        .map_or(FAR, |close_at| {
            close_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
    tokio::time::Instant::now() + left.min(FAR)
}

/// Counts a socket in the connections gauge for as long as it lives.
struct ConnectionGauge;

impl ConnectionGauge {
    fn open() -> Self {
        metrics::gauge!(crate::metrics::CONNECTIONS).increment(1.0);
        Self
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::CONNECTIONS).decrement(1.0);
    }
}

/// Feeds every pending frame and flushes once: one write for the batch.
async fn write_all<S>(sink: &mut S, out: &mut Vec<WsMessage>) -> Result<(), S::Error>
where
    S: Sink<WsMessage> + Unpin,
{
    for msg in out.drain(..) {
        sink.feed(msg).await?;
    }
    // With nothing to write this still sends a pong tungstenite queued.
    sink.flush().await
}

/// The close code a failed read earns, if the connection can still take
/// one: a frame over the limit (1009), text that is not UTF-8 (1007), a
/// broken framing rule (1002). I/O errors and resets get none.
fn read_failure(e: &(dyn std::error::Error + 'static)) -> Option<CloseCode> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        match err.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => return Some(CloseCode::TooLarge),
            Some(tungstenite::Error::Utf8(_)) => return Some(CloseCode::InvalidPayload),
            Some(tungstenite::Error::Protocol(p)) => {
                return match p {
                    // The peer is gone or the handshake is over: no frame
                    // can reach it.
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
                    | tungstenite::error::ProtocolError::SendAfterClosing
                    | tungstenite::error::ProtocolError::ReceivedAfterClosing => None,
                    _ => Some(CloseCode::ProtocolError),
                };
            }
            Some(_) => return None,
            None => cur = err.source(),
        }
    }
    None
}

/// A frame's JSON as a WebSocket text message. The frame was serialized
/// once for every socket; this checks it is UTF-8 (it always is) and shares
/// its bytes.
fn text(frame: &Frame) -> WsMessage {
    WsMessage::Text(Utf8Bytes::try_from(frame.bytes().clone()).unwrap_or_default())
}

fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

impl<S> Session<S>
where
    S: Sink<WsMessage> + Unpin + Send,
    S::Error: std::fmt::Display,
{
    fn push(&mut self, frame: &ServerFrame) {
        self.out.push(WsMessage::Text(encode(frame)));
    }

    fn push_error(&mut self, e: &ApiError, client_id: Option<String>) {
        self.push(&ServerFrame::Error {
            code: e.code,
            error: e.message.to_string(),
            client_id,
        });
    }

    /// Writes everything pending in one batch. A client that stops reading
    /// blocks the write; the wait ends when the socket is flagged too slow
    /// (its queue filled meanwhile) or the server shuts down.
    async fn flush(&mut self) -> Result<(), Flow> {
        let conn = self.conn;
        let written = tokio::select! {
            biased;
            result = write_all(&mut self.sink, &mut self.out) => result.map_err(|e| {
                tracing::debug!(conn = conn.0, error = %e, "socket write failed");
                Flow::Gone
            }),
            () = self.too_slow.cancelled() => Err(Flow::Close(self.stop_code())),
        };
        // An idle socket keeps no batch buffer: one allocation per batch
        // costs less than every socket holding its largest batch's.
        self.out = Vec::new();
        written
    }

    /// Why `too_slow` was cancelled: the server is shutting down (1001) or
    /// the socket fell behind (4408).
    fn stop_code(&self) -> CloseCode {
        if self.state.shutdown.is_cancelled() {
            CloseCode::GoingAway
        } else {
            CloseCode::TooSlow
        }
    }

    // Phase one: read.

    /// `first` and whatever else has already arrived behind it, up to
    /// [`MAX_BURST`] frames, parsed. Stops at the end of the socket.
    fn read_burst<R, E>(&self, first: Option<Result<WsMessage, E>>, stream: &mut R) -> Vec<Incoming>
    where
        R: Stream<Item = Result<WsMessage, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut burst = Vec::new();
        let mut frame = first;
        loop {
            match self.incoming(frame) {
                Some(end @ Incoming::End(_)) => {
                    burst.push(end);
                    return burst;
                }
                Some(item) => burst.push(item),
                None => {}
            }
            if burst.len() >= MAX_BURST {
                return burst;
            }
            match stream.next().now_or_never() {
                Some(next) => frame = next,
                None => return burst,
            }
        }
    }

    /// One read off the socket, parsed; `None` for control frames
    /// (tungstenite queues the pong, the next flush sends it).
    fn incoming<E>(&self, frame: Option<Result<WsMessage, E>>) -> Option<Incoming>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Some(match frame {
            Some(Ok(WsMessage::Text(text))) => match ClientFrame::from_json(text.as_str()) {
                Ok(frame) => match self.as_send(frame) {
                    Ok(send) => Incoming::Send(send),
                    Err(frame) => Incoming::Frame(frame),
                },
                Err(e) => Incoming::Reply(Box::new(ServerFrame::Error {
                    code: e.code,
                    error: e.message,
                    client_id: None,
                })),
            },
            Some(Ok(WsMessage::Binary(_))) => Incoming::Reply(Box::new(ServerFrame::Error {
                code: ErrorCode::InvalidJson,
                error: "Invalid JSON: frames must be text".to_owned(),
                client_id: None,
            })),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => return None,
            Some(Ok(WsMessage::Close(_))) => Incoming::End(Flow::ClosedByClient),
            None => Incoming::End(Flow::Gone),
            Some(Err(e)) => {
                tracing::debug!(conn = self.conn.0, error = %e, "socket read failed");
                Incoming::End(match read_failure(&e) {
                    Some(code) => Flow::Close(code),
                    None => Flow::Gone,
                })
            }
        })
    }

    /// A send frame becomes a [`PendingSend`]; any other frame comes back.
    #[allow(clippy::result_large_err)] // the frame is handed back, not an error
    fn as_send(&self, frame: ClientFrame) -> Result<PendingSend, ClientFrame> {
        match frame {
            ClientFrame::Text { message } => match self.bound {
                Some(room) => Ok(PendingSend {
                    room: RoomRef::Id(room),
                    draft: Draft::text(message, None),
                }),
                None => Err(ClientFrame::Text { message }),
            },
            ClientFrame::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            } => {
                let draft = Draft {
                    body,
                    client_id,
                    reply_to,
                    thread_root,
                    mentions,
                    attachments,
                };
                match room.or(self.bound.map(RoomRef::Id)) {
                    Some(room) => Ok(PendingSend { room, draft }),
                    None => Err(ClientFrame::Send {
                        room: None,
                        body: draft.body,
                        client_id: draft.client_id,
                        reply_to: draft.reply_to,
                        thread_root: draft.thread_root,
                        mentions: draft.mentions,
                        attachments: draft.attachments,
                    }),
                }
            }
            other => Err(other),
        }
    }

    // Phase two: execute, in order.

    /// Runs a burst in the order it came: each run of sends in one call,
    /// every other frame on its own.
    async fn execute(&mut self, burst: Vec<Incoming>) -> Flow {
        let mut sends = Vec::new();
        for item in burst {
            let item = match item {
                Incoming::Send(send) => {
                    sends.push(send);
                    continue;
                }
                other => other,
            };
            if !sends.is_empty() {
                let flow = self.send_all(std::mem::take(&mut sends)).await;
                if flow != Flow::Continue {
                    return flow;
                }
            }
            let flow = match item {
                Incoming::Reply(frame) => {
                    self.push(&frame);
                    Flow::Continue
                }
                Incoming::Frame(frame) => self.on_frame(frame).await,
                Incoming::End(flow) => flow,
                Incoming::Send(_) => Flow::Continue,
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
        if !sends.is_empty() {
            return self.send_all(sends).await;
        }
        Flow::Continue
    }

    /// Every client frame but a send.
    async fn on_frame(&mut self, frame: ClientFrame) -> Flow {
        match frame {
            // Frames that would be sends but name no room.
            ClientFrame::Text { .. } => self.push_error(
                &ApiError::with_message(
                    ErrorCode::InvalidInput,
                    "{\"message\"} frames need a socket bound to a room (/ws/chat/{room}/); \
                     on /ws/ send {\"type\":\"send\",\"room\",\"body\"}",
                ),
                None,
            ),
            ClientFrame::Send { client_id, .. } => self.push_error(
                &ApiError::invalid_field("room", "is required on /ws/"),
                client_id,
            ),
            ClientFrame::Subscribe { room, after_seq } => {
                if after_seq.is_some_and(|s| s < 0) {
                    self.push_error(
                        &ApiError::invalid_field("after_seq", "must not be negative"),
                        None,
                    );
                    return Flow::Continue;
                }
                match self
                    .state
                    .service
                    .room_to_listen(self.user, &room, false)
                    .await
                {
                    Ok(record) => return self.subscribe(record, after_seq).await,
                    Err(e) => self.push_error(&e, None),
                }
            }
            ClientFrame::Unsubscribe { room } => {
                if let Err(e) = self.unsubscribe(&room).await {
                    self.push_error(&e, None);
                }
            }
            ClientFrame::Read { room, seq } => {
                let result = match self.room_as_member(&room).await {
                    Ok(record) => {
                        self.state
                            .service
                            .mark_read(self.user, record.id, seq, Some(self.conn))
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.push_error(&e, None);
                }
            }
            ClientFrame::Typing { room } => {
                if !self.allow() {
                    self.push_error(&ApiError::new(ErrorCode::RateLimited), None);
                    return Flow::Continue;
                }
                match self.room_as_member(&room).await {
                    Ok(record) => {
                        // Clients send typing on keystrokes; the room hears
                        // of it at most once per interval per socket, and
                        // the extra frames are dropped without an error.
                        let now = Instant::now();
                        let due = self
                            .typing_sent
                            .get(&record.id)
                            .is_none_or(|at| now.duration_since(*at) >= TYPING_INTERVAL);
                        if due {
                            self.typing_sent.insert(record.id, now);
                            let service = self.state.service.clone();
                            if let Err(e) = service.typing(self.user, &record, self.conn).await {
                                self.push_error(&e, None);
                            }
                        }
                    }
                    Err(e) => self.push_error(&e, None),
                }
            }
            ClientFrame::Edit { message_id, body } => {
                let service = self.state.service.clone();
                let changed = service.edit_message(self.user, message_id, body).await;
                return self.changed(changed).await;
            }
            ClientFrame::Delete { message_id } => {
                let service = self.state.service.clone();
                let changed = service.delete_message(self.user, message_id).await;
                return self.changed(changed).await;
            }
            ClientFrame::React { message_id, key } => {
                let service = self.state.service.clone();
                let changed = service.react(self.user, message_id, key, true).await;
                return self.changed(changed).await;
            }
            ClientFrame::Unreact { message_id, key } => {
                let service = self.state.service.clone();
                let changed = service.react(self.user, message_id, key, false).await;
                return self.changed(changed).await;
            }
            ClientFrame::Pin { message_id } => {
                let service = self.state.service.clone();
                let changed = service.pin(self.user, message_id, true).await;
                return self.changed(changed).await;
            }
            ClientFrame::Unpin { message_id } => {
                let service = self.state.service.clone();
                let changed = service.pin(self.user, message_id, false).await;
                return self.changed(changed).await;
            }
            ClientFrame::Moderate { room, request } => {
                let service = self.state.service.clone();
                match service.moderate(self.user, &room, request).await {
                    // Answered by the event, in its place in the room's
                    // stream if this socket listens to the room.
                    Ok(Some(event)) => {
                        let (room, seq) = (event.room, event.seq);
                        return self
                            .take_while(|s| s.rooms.get(&room).is_some_and(|c| c.delivered < seq))
                            .await;
                    }
                    Ok(None) => {}
                    Err(e) => self.push_error(&e, None),
                }
            }
            ClientFrame::UpdateRoom { room, settings } => {
                let service = self.state.service.clone();
                match service.update_room(self.user, &room, settings).await {
                    // Answered by the event, like `moderate`.
                    Ok((_, Some(event))) => {
                        let (room, seq) = (event.room, event.seq);
                        return self
                            .take_while(|s| s.rooms.get(&room).is_some_and(|c| c.delivered < seq))
                            .await;
                    }
                    Ok((_, None)) => {}
                    Err(e) => self.push_error(&e, None),
                }
            }
            ClientFrame::Block { user_id, block } => {
                let service = self.state.service.clone();
                let done = if block {
                    service.block(self.user, user_id).await
                } else {
                    service.unblock(self.user, user_id).await
                };
                if let Err(e) = done {
                    self.push_error(&e, None);
                }
            }
            ClientFrame::Report { request } => {
                let service = self.state.service.clone();
                if let Err(e) = service.report(self.user, request).await {
                    self.push_error(&e, None);
                }
            }
            ClientFrame::Ping => self.push(&ServerFrame::Pong),
            ClientFrame::Auth { token } => self.reauthenticate(&token).await,
        }
        Flow::Continue
    }

    /// Answers an `edit` or `delete`: an error, or nothing more than the
    /// change's event, which this socket hears like every other in the
    /// room if it listens to the room, before any later frame is answered
    /// (the committer queued it here before the change returned).
    async fn changed(&mut self, changed: Result<MessageChanged, ApiError>) -> Flow {
        match changed {
            Ok(MessageChanged {
                message,
                seq: Some(seq),
            }) => {
                let room = message.room;
                self.take_while(|s| s.rooms.get(&room).is_some_and(|c| c.delivered < seq))
                    .await
            }
            Ok(_) => Flow::Continue,
            Err(e) => {
                self.push_error(&e, None);
                Flow::Continue
            }
        }
    }

    /// A revocation heard: this socket closes (4403) if it is of its user
    /// and newer than its token; having missed some (the channel lagged),
    /// it asks for its account as it stands.
    async fn on_revoked(
        &mut self,
        revoked: Result<
            crate::service::accounts::Revoked,
            tokio::sync::broadcast::error::RecvError,
        >,
    ) -> Flow {
        use tokio::sync::broadcast::error::RecvError;
        let closing = match revoked {
            Ok(r) => r.user == self.user && r.version > self.version,
            Err(RecvError::Lagged(_)) => {
                let service = self.state.service.clone();
                !service.session_valid(self.user, self.version).await
            }
            Err(RecvError::Closed) => false,
        };
        if closing {
            Flow::Close(CloseCode::SessionRevoked)
        } else {
            Flow::Continue
        }
    }

    /// `auth`: a valid access token of this socket's user extends its life
    /// to that token's expiry. Anything else is `invalid_token`, and the
    /// socket keeps the expiry it had.
    async fn reauthenticate(&mut self, token: &str) {
        let service = self.state.service.clone();
        match service.authenticate(token, ErrorCode::InvalidToken).await {
            Ok(access) if access.user == self.user => {
                self.expires_at = self.expires_at.max(access.expires_at);
                self.version = self.version.max(access.version);
                self.push(&ServerFrame::Authenticated {
                    expires_at: unix_timestamp(self.expires_at),
                });
            }
            Ok(access) => {
                tracing::debug!(conn = self.conn.0, user = %self.user, other = %access.user,
                    "auth frame with another user's token");
                self.push_error(&ApiError::new(ErrorCode::InvalidToken), None);
            }
            Err(e) => self.push_error(&e, None),
        }
    }

    /// Whether the per-connection rate limit lets one more message through.
    fn allow(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// A room the user is a member of: the subscribed one if it is, else
    /// checked through the service.
    async fn room_as_member(&self, room: &RoomRef) -> Result<RoomRecord, ApiError> {
        if let Some(id) = room.as_id()
            && let Some(cursor) = self.rooms.get(&id)
        {
            return Ok(cursor.room.clone());
        }
        self.state.service.room_as_member(self.user, room).await
    }

    /// The room a send goes to. By id it needs no lookup: whether the user
    /// may post there is checked by the append itself, under the room's
    /// lock (a refusal answers as `room_as_member` would). A name is looked
    /// up.
    async fn send_target(&self, room: &RoomRef) -> Result<RoomId, ApiError> {
        match room.as_id() {
            Some(id) => Ok(id),
            None => self.room_as_member(room).await.map(|r| r.id),
        }
    }

    /// Stores a run of sends together and answers each in order: an `ack`
    /// (in its message's place in the room's stream if the socket listens
    /// to the room), or the `error` that refused it.
    async fn send_all(&mut self, sends: Vec<PendingSend>) -> Flow {
        // Per send: its client_id, and why it was refused before storage.
        let mut checked = Vec::with_capacity(sends.len());
        let mut outgoing = Vec::with_capacity(sends.len());
        // A burst usually goes to one room: resolve it once.
        let mut rooms: Vec<(RoomRef, Result<RoomId, ApiError>)> = Vec::new();
        for send in sends {
            if !self.allow() {
                checked.push((
                    send.draft.client_id,
                    Some(ApiError::new(ErrorCode::RateLimited)),
                ));
                continue;
            }
            let record = match rooms.iter().find(|(r, _)| *r == send.room) {
                Some((_, record)) => record.clone(),
                None => {
                    let record = self.send_target(&send.room).await;
                    rooms.push((send.room, record.clone()));
                    record
                }
            };
            match record {
                Ok(room) => {
                    checked.push((send.draft.client_id.clone(), None));
                    outgoing.push(Outgoing {
                        room,
                        draft: send.draft,
                    });
                }
                Err(e) => checked.push((send.draft.client_id, Some(e))),
            }
        }
        let service = self.state.service.clone();
        let mut results = service
            .send_many(self.user, outgoing, Some(self.conn))
            .await
            .into_iter();
        for (client_id, refused) in checked {
            let result = match refused {
                Some(e) => Err(e),
                None => results
                    .next()
                    .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal))),
            };
            match result {
                Ok(sent) => {
                    let (room, seq) = (sent.message.room, sent.message.seq);
                    let ack = encode(&ServerFrame::Ack {
                        client_id,
                        message: sent.message,
                    });
                    match self.rooms.get_mut(&room) {
                        Some(cursor) if sent.created && seq > cursor.delivered => {
                            cursor.acks.insert(seq, ack);
                        }
                        _ => self.out.push(WsMessage::Text(ack)),
                    }
                }
                Err(e) => self.push_error(&e, client_id),
            }
        }
        self.release_acks().await
    }

    /// Takes in the events of this socket's own messages, and with them
    /// the acks waiting for their place, so that the next frame is answered
    /// after them. On one instance the events are queued already: the
    /// committer queued them before the appends returned. Across instances
    /// the hub may still hold one for a predecessor from another instance;
    /// its ack then follows when it comes.
    async fn release_acks(&mut self) -> Flow {
        self.take_while(|s| s.rooms.values().any(|c| !c.acks.is_empty()))
            .await
    }

    /// Stops delivering a room. Not being subscribed is harmless, but a
    /// room hidden from the caller answers like one that does not exist:
    /// otherwise unsubscribing would tell which private rooms exist.
    async fn unsubscribe(&mut self, room: &RoomRef) -> Result<(), ApiError> {
        let service = &self.state.service;
        let (record, access) = service
            .room_with_access(self.user, room)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::RoomNotFound))?;
        if self.rooms.remove(&record.id).is_some() {
            service.hub().leave(record.id, self.conn).await;
            return Ok(());
        }
        if access == Access::Hidden {
            return Err(ApiError::new(ErrorCode::RoomNotFound));
        }
        Ok(())
    }

    /// Starts (or restarts) delivering a room: listen first, then replay
    /// what is stored above `after_seq`, so nothing falls between the two.
    /// After `subscribed`, a `presence` frame for each user already online.
    async fn subscribe(&mut self, room: RoomRecord, after_seq: Option<Seq>) -> Flow {
        let id = room.id;
        if !self.rooms.contains_key(&id) {
            let sub = Subscriber {
                conn: self.conn,
                user: self.user,
                queue: self.queue.clone(),
                too_slow: self.too_slow.clone(),
            };
            if let Err(e) = self.state.service.hub().join(id, sub).await {
                tracing::warn!(room = %id, error = %e, "broker subscribe failed");
                self.push_error(
                    &ApiError::with_message(
                        ErrorCode::StorageUnavailable,
                        "Cannot subscribe right now, try again",
                    ),
                    None,
                );
                return Flow::Continue;
            }
        }
        let start = match (self.rooms.get(&id), after_seq) {
            // Subscribed already: what this socket was given is on its way
            // to the client, so the cursor never moves back (each event
            // once, whatever the client asks); it moves forward only to
            // skip what the client says it has.
            (Some(cursor), after) => cursor.delivered.max(after.unwrap_or(0)),
            (None, Some(seq)) => seq,
            // Live only: start after what is stored now that we listen.
            (None, None) => match self
                .state
                .service
                .room_with_access(self.user, &RoomRef::Id(id))
                .await
            {
                Ok(Some((r, _))) => r.last_seq,
                Ok(None) => {
                    self.drop_room(id).await;
                    self.push_error(&ApiError::new(ErrorCode::RoomNotFound), None);
                    return Flow::Continue;
                }
                Err(e) => {
                    self.drop_room(id).await;
                    self.push_error(&e, None);
                    return Flow::Continue;
                }
            },
        };
        // A resubscribe keeps the acks still waiting for their place; those
        // at or below a cursor moved forward go out now.
        let mut acks = self.rooms.remove(&id).map(|c| c.acks).unwrap_or_default();
        let later = acks.split_off(&(start + 1));
        self.out.extend(acks.into_values().map(WsMessage::Text));
        let acks = later;
        self.rooms.insert(
            id,
            Cursor {
                room,
                delivered: start,
                acks,
            },
        );
        if let Err(flow) = self.catch_up(id, None).await {
            return flow;
        }
        let last_seq = self.rooms.get(&id).map_or(start, |c| c.delivered);
        self.state.service.hub().fanout().anchor(id, last_seq);
        self.push(&ServerFrame::Subscribed { room: id, last_seq });
        // Who is here already; changes arrive as they happen.
        for user in self.state.service.hub().online(id).await {
            if user != self.user {
                self.push(&ServerFrame::Presence {
                    room: id,
                    user,
                    status: PresenceStatus::Online,
                });
            }
        }
        Flow::Continue
    }

    /// After a broker outage: whether the room was deleted (4409) or the
    /// user left it (1000) meanwhile, which the socket may not have heard.
    /// If the service cannot tell, the socket closes 4408 and resumes later.
    async fn lost_while_away(&self, room: RoomId) -> Result<Option<CloseCode>, Flow> {
        match self
            .state
            .service
            .room_with_access(self.user, &RoomRef::Id(room))
            .await
        {
            Ok(None) => Ok(Some(CloseCode::RoomDeleted)),
            Ok(Some((_, Access::Member))) => Ok(None),
            Ok(Some(_)) => Ok(Some(CloseCode::Normal)),
            Err(e) => {
                tracing::warn!(conn = self.conn.0, %room, error = %e, "membership check after resync failed");
                Err(Flow::Close(CloseCode::TooSlow))
            }
        }
    }

    /// Stops listening to a room. Acks still waiting for their place go out
    /// now: the sender must hear back whatever the room does.
    async fn drop_room(&mut self, room: RoomId) {
        if let Some(cursor) = self.rooms.remove(&room) {
            self.out
                .extend(cursor.acks.into_values().map(WsMessage::Text));
        }
        self.state.service.hub().leave(room, self.conn).await;
    }

    /// Delivers the stored timeline above the cursor (and below `before`),
    /// every kind of event, page by page, flushing each page so a long
    /// replay needs little memory. A message of this socket's whose ack
    /// waits goes out as that ack. If storage fails the socket closes 4408:
    /// the client resumes by seq.
    async fn catch_up(&mut self, room: RoomId, before: Option<Seq>) -> Result<(), Flow> {
        loop {
            let Some(cursor) = self.rooms.get(&room) else {
                return Ok(());
            };
            let query = HistoryQuery {
                before,
                after: Some(cursor.delivered),
                limit: MAX_HISTORY_PAGE,
            };
            let (events, has_more) = match self
                .state
                .service
                .timeline_page(self.user, room, query)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(conn = self.conn.0, %room, error = %e, "catch-up from storage failed");
                    return Err(Flow::Close(CloseCode::TooSlow));
                }
            };
            let Some(cursor) = self.rooms.get_mut(&room) else {
                return Ok(());
            };
            for event in events {
                cursor.delivered = event.seq();
                let frame = match cursor.acks.remove(&event.seq()) {
                    Some(ack) => ack,
                    None => encode(&timeline_frame(event)),
                };
                self.out.push(WsMessage::Text(frame));
            }
            if !has_more {
                return Ok(());
            }
            self.flush().await?;
        }
    }

    /// Handles what is queued behind, until the queue is empty or a batch
    /// is full.
    async fn take_queued(&mut self) -> Flow {
        self.take_while(|s| s.out.len() < MAX_BATCH).await
    }

    /// Handles queued deliveries while `more` holds and the queue has any.
    async fn take_while(&mut self, more: impl Fn(&Self) -> bool) -> Flow {
        while more(self) {
            match self.inbox.try_recv() {
                Ok(delivery) => match self.on_delivery(delivery).await {
                    Flow::Continue => {}
                    flow => return flow,
                },
                Err(_) => break,
            }
        }
        Flow::Continue
    }

    async fn on_delivery(&mut self, delivery: Delivery) -> Flow {
        match delivery {
            Delivery::Event(event) => self.on_event(&event).await,
            Delivery::CatchUp(room) => self.on_catch_up(room).await,
        }
    }

    async fn on_event(&mut self, event: &Event) -> Flow {
        let Some(cursor) = self.rooms.get(&event.room) else {
            return Flow::Continue;
        };
        match &event.kind {
            EventKind::Timeline { seq, frame, leaves } => {
                let seq = *seq;
                if seq <= cursor.delivered {
                    return Flow::Continue;
                }
                if seq > cursor.delivered + 1 {
                    // Only across instances: the hub gave up waiting for a
                    // publish that was lost.
                    metrics::counter!(crate::metrics::GAP_READS).increment(1);
                    if let Err(flow) = self.catch_up(event.room, Some(seq)).await {
                        return flow;
                    }
                }
                let mine = event.origin == Some(self.conn);
                if let Some(cursor) = self.rooms.get_mut(&event.room) {
                    cursor.delivered = seq;
                    match cursor.acks.remove(&seq) {
                        Some(ack) => self.out.push(WsMessage::Text(ack)),
                        None if !mine => self.out.push(text(frame)),
                        // Its ack went out before the socket listened.
                        None => {}
                    }
                }
                // This user is no longer in the room: after the event that
                // says so, the socket stops receiving it.
                if *leaves == Some(self.user) {
                    self.drop_room(event.room).await;
                    if self.bound == Some(event.room) {
                        return Flow::Close(CloseCode::Normal);
                    }
                }
                Flow::Continue
            }
            EventKind::Signal { frame } => {
                if event.origin != Some(self.conn) {
                    self.out.push(text(frame));
                }
                Flow::Continue
            }
            EventKind::RoomDeleted { frame } => {
                self.out.push(text(frame));
                self.drop_room(event.room).await;
                if self.bound == Some(event.room) {
                    return Flow::Close(CloseCode::RoomDeleted);
                }
                Flow::Continue
            }
        }
    }

    /// Whatever was published while the broker was away is in storage:
    /// deliver what lies above the cursor, if the user may still read it
    /// (the events that said otherwise may have been lost with the broker).
    async fn on_catch_up(&mut self, room: RoomId) -> Flow {
        if !self.rooms.contains_key(&room) {
            return Flow::Continue;
        }
        match self.lost_while_away(room).await {
            Ok(None) => {}
            Ok(Some(code)) => {
                if code == CloseCode::RoomDeleted {
                    self.push(&ServerFrame::RoomDeleted { room });
                }
                self.drop_room(room).await;
                if self.bound == Some(room) {
                    return Flow::Close(code);
                }
                return Flow::Continue;
            }
            Err(flow) => return flow,
        }
        match self.catch_up(room, None).await {
            Ok(()) => Flow::Continue,
            Err(flow) => flow,
        }
    }
}
