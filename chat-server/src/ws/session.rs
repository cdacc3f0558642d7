//! The per-socket loop: client frames in, events and answers out.
//!
//! One task per socket does both directions. While it awaits an append, no
//! events are written, which is fine: they wait in the socket's bounded
//! queue, and one task instead of two halves the per-socket memory.
//!
//! Sends that arrive together are stored together: the frames already read
//! behind a send are taken with it (up to [`MAX_SENDS`]) and appended in one
//! call, in order, so a client sending faster than one commit per message
//! is not held to that rate. Each is still answered on its own and in
//! order, and any other frame waits until the sends before it are answered.
//!
//! Delivery is exactly once and in `seq` order per room: each subscribed room
//! has a cursor (`delivered`); events at or below it are dropped (a replay
//! already sent them), and an event beyond `delivered + 1` first fills the gap
//! from storage. The socket that sent a message gets an `ack` instead of the
//! broadcast.
//!
//! The loop is generic over the sink and stream, so tests can drive it with
//! channels.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use chat_core::frame::{ClientFrame, PresenceStatus, ServerFrame};
use chat_core::{CloseCode, ErrorCode, RoomId, RoomRef, Seq, UserId};
use futures_util::{FutureExt as _, Sink, SinkExt as _, Stream, StreamExt as _};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{AccessToken, LEEWAY_SECS, unix_timestamp};
use crate::broker::{ConnId, Event, EventKind, encode as frame_text};
use crate::error::ApiError;
use crate::hub::Subscriber;
use crate::server::AppState;
use crate::service::Access;
use crate::service::messages::{MAX_HISTORY_PAGE, Outgoing};
use crate::storage::{HistoryQuery, MemberState, RoomRecord};

/// A socket bound to one room at the handshake.
#[derive(Debug, Clone)]
pub struct Bound {
    pub room: RoomRecord,
    /// Replay messages above this first (optional, as on `subscribe`).
    pub after_seq: Option<Seq>,
}

/// At most one `typing` notice per room per socket in this interval.
pub const TYPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Events written per flush, so that one busy room cannot starve reads.
const MAX_BATCH: usize = 128;

/// Sends read off the socket before they are stored together.
const MAX_SENDS: usize = 64;

/// How long a closing socket may take to accept its close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a closed socket waits for the client's close reply.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the loop does after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close(CloseCode),
    /// The client went away; nothing to send.
    Gone,
}

/// A `send` (or `message`) frame read but not stored yet.
#[derive(Debug)]
struct PendingSend {
    room: RoomRef,
    body: String,
    client_id: Option<String>,
}

#[derive(Debug)]
struct Cursor {
    room: RoomRecord,
    /// The highest seq this socket has been given (or acked), in order.
    delivered: Seq,
    /// Seqs this socket sent and got acked above `delivered`: a gap fill
    /// must not echo them back.
    own: BTreeSet<Seq>,
}

struct Session<S> {
    state: AppState,
    user: UserId,
    /// When the newest token this socket presented expires (Unix seconds);
    /// the socket is closed with 4401 once that plus the leeway passes.
    expires_at: u64,
    conn: ConnId,
    bound: Option<RoomId>,
    rooms: HashMap<RoomId, Cursor>,
    queue: mpsc::Sender<Arc<Event>>,
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
    /// Sends read in one burst, stored together by `send_pending`, which
    /// runs before anything else the client sent after them.
    sends: Vec<PendingSend>,
}

/// Runs a socket until the client leaves, the server shuts down (1001), the
/// socket falls behind (4408), its bound room is deleted (4409), a frame is
/// too large (1009) or its token expires without an `auth` frame renewing it
/// (4401).
pub async fn run<S, R, E>(
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
    let (queue, mut events) = mpsc::channel(state.limits.socket_queue);
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
        bound: bound.as_ref().map(|b| b.room.id),
        rooms: HashMap::new(),
        queue,
        too_slow,
        limiter,
        typing_sent: HashMap::new(),
        sink,
        out: Vec::new(),
        sends: Vec::new(),
    };
    tracing::debug!(conn = s.conn.0, %user, "socket open");
    let _open = ConnectionGauge::open();
    // Made once: a fresh future per turn of the loop would register with the
    // token and deregister again every time.
    let stop = s.too_slow.clone().cancelled_owned();
    tokio::pin!(stop);
    let mut expires_at = s.expires_at;
    let expiry = tokio::time::sleep_until(expiry_deadline(expires_at));
    tokio::pin!(expiry);

    let mut flow = match bound {
        Some(b) => s.subscribe(b.room, b.after_seq).await,
        None => Flow::Continue,
    };
    if flow != Flow::Gone
        && let Err(f) = s.flush().await
    {
        flow = f;
    }
    while flow == Flow::Continue {
        flow = tokio::select! {
            biased;
            () = &mut stop => Flow::Close(s.stop_code()),
            () = &mut expiry => Flow::Close(CloseCode::TokenExpired),
            Some(event) = events.recv() => {
                let mut flow = s.on_event(&event).await;
                while flow == Flow::Continue && s.out.len() < MAX_BATCH {
                    match events.try_recv() {
                        Ok(event) => flow = s.on_event(&event).await,
                        Err(_) => break,
                    }
                }
                flow
            }
            frame = stream.next() => {
                let mut flow = s.on_read(frame).await;
                // A client sending faster than its messages commit finds
                // several waiting: they are stored together, in one commit,
                // instead of each waiting for the one before.
                while flow == Flow::Continue && !s.sends.is_empty() && s.sends.len() < MAX_SENDS {
                    match stream.next().now_or_never() {
                        Some(frame) => flow = s.on_read(frame).await,
                        None => break,
                    }
                }
                s.send_pending().await;
                flow
            }
        };
        if flow != Flow::Gone
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
    if let Flow::Close(code) = flow {
        tracing::debug!(conn = s.conn.0, code = code.code(), "closing socket");
        let close = WsMessage::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        }));
        // A client that is not reading cannot take the close frame either:
        // give it a while, then drop the connection.
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, s.sink.send(close)).await {
            // Finish the closing handshake: read (and discard) until the
            // client answers or goes. Dropping a socket with unread input
            // makes the kernel reset it, and a reset can destroy the close
            // frame before the client reads it.
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
        }
    }
    let hub = s.state.service.hub().clone();
    for room in s.rooms.keys() {
        hub.leave(*room, s.conn).await;
    }
    tracing::debug!(conn = s.conn.0, %user, "socket closed");
}

/// The instant a socket whose token expires at `exp` (Unix seconds) is
/// closed: the token verifier's own leeway past `exp`, so a socket lives
/// exactly as long as its token would still be accepted.
fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    let close_at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp.saturating_add(LEEWAY_SECS));
    let left = close_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + left
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

/// Whether a read failed because a frame or message exceeded the limit.
fn is_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

impl<S> Session<S>
where
    S: Sink<WsMessage> + Unpin + Send,
    S::Error: std::fmt::Display,
{
    fn push(&mut self, frame: &ServerFrame) {
        self.out.push(WsMessage::Text(frame_text(frame)));
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
        tokio::select! {
            biased;
            result = write_all(&mut self.sink, &mut self.out) => result.map_err(|e| {
                tracing::debug!(conn = conn.0, error = %e, "socket write failed");
                Flow::Gone
            }),
            () = self.too_slow.cancelled() => Err(Flow::Close(self.stop_code())),
        }
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

    /// One read off the socket.
    async fn on_read<E>(&mut self, frame: Option<Result<WsMessage, E>>) -> Flow
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        // Whatever the client sent before a frame is answered before it.
        match frame {
            Some(Ok(WsMessage::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(WsMessage::Binary(_))) => {
                self.send_pending().await;
                self.push(&ServerFrame::Error {
                    code: ErrorCode::InvalidJson,
                    error: "Invalid JSON: frames must be text".to_owned(),
                    client_id: None,
                });
                Flow::Continue
            }
            // tungstenite queues the pong; the flush after this sends it.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Flow::Continue,
            None | Some(Ok(WsMessage::Close(_))) => {
                self.send_pending().await;
                Flow::Gone
            }
            Some(Err(e)) => {
                self.send_pending().await;
                if is_too_large(&e) {
                    return Flow::Close(CloseCode::TooLarge);
                }
                tracing::debug!(conn = self.conn.0, error = %e, "socket read failed");
                Flow::Gone
            }
        }
    }

    /// A send frame becomes a [`PendingSend`]; any other frame comes back.
    fn as_send(&self, frame: ClientFrame) -> Result<PendingSend, ClientFrame> {
        match frame {
            ClientFrame::Text { message } => match self.bound {
                Some(room) => Ok(PendingSend {
                    room: RoomRef::Id(room),
                    body: message,
                    client_id: None,
                }),
                None => Err(ClientFrame::Text { message }),
            },
            ClientFrame::Send {
                room,
                body,
                client_id,
            } => match room.or(self.bound.map(RoomRef::Id)) {
                Some(room) => Ok(PendingSend {
                    room,
                    body,
                    client_id,
                }),
                None => Err(ClientFrame::Send {
                    room: None,
                    body,
                    client_id,
                }),
            },
            other => Err(other),
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let parsed = ClientFrame::from_json(text).map(|f| self.as_send(f));
        let frame = match parsed {
            Ok(Ok(send)) => {
                self.sends.push(send);
                return Flow::Continue;
            }
            Ok(Err(frame)) => {
                self.send_pending().await;
                frame
            }
            Err(e) => {
                self.send_pending().await;
                self.push(&ServerFrame::Error {
                    code: e.code,
                    error: e.message,
                    client_id: None,
                });
                return Flow::Continue;
            }
        };
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
                match self.state.service.open_room(self.user, &room, false).await {
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
                let result = match self.member_room(&room).await {
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
                match self.member_room(&room).await {
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
                            let frame = ServerFrame::Typing {
                                room: record.id,
                                user: self.user,
                            };
                            let event = Event::notice(record.id, Some(self.conn), &frame);
                            self.state.service.publish_quietly(event).await;
                        }
                    }
                    Err(e) => self.push_error(&e, None),
                }
            }
            ClientFrame::Ping => self.push(&ServerFrame::Pong),
            ClientFrame::Auth { token } => self.reauthenticate(&token).await,
        }
        Flow::Continue
    }

    /// `auth`: a valid access token of this socket's user extends its life
    /// to that token's expiry. Anything else is `invalid_token`, and the
    /// socket keeps the expiry it had.
    async fn reauthenticate(&mut self, token: &str) {
        let service = self.state.service.clone();
        match service.authenticate(token, ErrorCode::InvalidToken).await {
            Ok(access) if access.user == self.user => {
                self.expires_at = self.expires_at.max(access.expires_at);
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
    async fn member_room(&self, room: &RoomRef) -> Result<RoomRecord, ApiError> {
        if let Some(id) = room.as_id()
            && let Some(cursor) = self.rooms.get(&id)
        {
            return Ok(cursor.room.clone());
        }
        self.state.service.member_room(self.user, room).await
    }

    /// Stores the sends read so far, together, and answers each in order:
    /// an `ack`, or the `error` that refused it.
    async fn send_pending(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let sends = std::mem::take(&mut self.sends);
        // Per send: its client_id, and why it was refused before storage.
        let mut checked = Vec::with_capacity(sends.len());
        let mut outgoing = Vec::with_capacity(sends.len());
        // A burst usually goes to one room: check it once.
        let mut rooms: Vec<(RoomRef, Result<RoomRecord, ApiError>)> = Vec::new();
        for send in sends {
            if !self.allow() {
                checked.push((send.client_id, Some(ApiError::new(ErrorCode::RateLimited))));
                continue;
            }
            let record = match rooms.iter().find(|(r, _)| *r == send.room) {
                Some((_, record)) => record.clone(),
                None => {
                    let record = self.member_room(&send.room).await;
                    rooms.push((send.room, record.clone()));
                    record
                }
            };
            match record {
                Ok(record) => {
                    checked.push((send.client_id.clone(), None));
                    outgoing.push(Outgoing {
                        room: record.id,
                        body: send.body,
                        client_id: send.client_id,
                    });
                }
                Err(e) => checked.push((send.client_id, Some(e))),
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
                    if let Some(cursor) = self.rooms.get_mut(&sent.message.room)
                        && sent.message.seq > cursor.delivered
                    {
                        cursor.own.insert(sent.message.seq);
                    }
                    self.push(&ServerFrame::Ack {
                        client_id,
                        message: sent.message,
                    });
                }
                Err(e) => self.push_error(&e, client_id),
            }
        }
    }

    /// Stops delivering a room. Not being subscribed is harmless, but a
    /// room hidden from the caller answers like one that does not exist:
    /// otherwise unsubscribing would tell which private rooms exist.
    async fn unsubscribe(&mut self, room: &RoomRef) -> Result<(), ApiError> {
        let service = &self.state.service;
        let (record, access) = service
            .find_room_for(self.user, room)
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
        let start = match after_seq {
            Some(seq) => seq,
            // Live only: start after what is stored now that we listen.
            None => match self.state.service.storage().room(id).await {
                Ok(Some(r)) => r.last_seq,
                Ok(None) => {
                    self.drop_room(id).await;
                    self.push_error(&ApiError::new(ErrorCode::RoomNotFound), None);
                    return Flow::Continue;
                }
                Err(e) => {
                    self.drop_room(id).await;
                    self.push_error(&e.into(), None);
                    return Flow::Continue;
                }
            },
        };
        self.rooms.insert(
            id,
            Cursor {
                room,
                delivered: start,
                own: BTreeSet::new(),
            },
        );
        if let Err(flow) = self.catch_up(id, None).await {
            return flow;
        }
        let last_seq = self.rooms.get(&id).map_or(start, |c| c.delivered);
        self.push(&ServerFrame::Subscribed { room: id, last_seq });
        // Who is here already; changes arrive as they happen.
        for user in self.state.service.hub().fanout().online_users(id) {
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
    /// If storage cannot tell, the socket closes 4408 and resumes later.
    async fn lost_while_away(&self, room: RoomId) -> Result<Option<CloseCode>, Flow> {
        let storage = self.state.service.storage();
        let still = match storage.room(room).await {
            Ok(None) => return Ok(Some(CloseCode::RoomDeleted)),
            Ok(Some(_)) => storage.membership(room, self.user).await,
            Err(e) => Err(e),
        };
        match still {
            Ok(Some(MemberState::Member)) => Ok(None),
            Ok(_) => Ok(Some(CloseCode::Normal)),
            Err(e) => {
                tracing::warn!(conn = self.conn.0, %room, error = %e, "membership check after resync failed");
                Err(Flow::Close(CloseCode::TooSlow))
            }
        }
    }

    async fn drop_room(&mut self, room: RoomId) {
        self.rooms.remove(&room);
        self.state.service.hub().leave(room, self.conn).await;
    }

    /// Delivers stored messages above the cursor (and below `before`), page
    /// by page, flushing each page so a long replay needs little memory. If
    /// storage fails the socket closes 4408: the client resumes by seq.
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
            let (messages, has_more) = match self.state.service.page(self.user, room, query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(conn = self.conn.0, %room, error = %e, "catch-up from storage failed");
                    return Err(Flow::Close(CloseCode::TooSlow));
                }
            };
            let Some(cursor) = self.rooms.get_mut(&room) else {
                return Ok(());
            };
            let mut frames = Vec::with_capacity(messages.len());
            for message in messages {
                cursor.delivered = message.seq;
                if !cursor.own.remove(&message.seq) {
                    frames.push(frame_text(&ServerFrame::Message { message }));
                }
            }
            let delivered = cursor.delivered;
            cursor.own.retain(|s| *s > delivered);
            self.out.extend(frames.into_iter().map(WsMessage::Text));
            if !has_more {
                return Ok(());
            }
            self.flush().await?;
        }
    }

    async fn on_event(&mut self, event: &Event) -> Flow {
        let Some(cursor) = self.rooms.get(&event.room) else {
            return Flow::Continue;
        };
        match &event.kind {
            EventKind::Message => {
                let Some(seq) = event.seq else {
                    return Flow::Continue;
                };
                if seq <= cursor.delivered {
                    return Flow::Continue;
                }
                if seq > cursor.delivered + 1 {
                    metrics::counter!(crate::metrics::GAP_READS).increment(1);
                    if let Err(flow) = self.catch_up(event.room, Some(seq)).await {
                        return flow;
                    }
                }
                let mine = event.origin == Some(self.conn);
                if let Some(cursor) = self.rooms.get_mut(&event.room) {
                    let acked = cursor.own.remove(&seq);
                    if seq > cursor.delivered {
                        cursor.delivered = seq;
                        if !mine && !acked {
                            self.out.push(WsMessage::Text(event.frame.clone()));
                        }
                    }
                }
                Flow::Continue
            }
            EventKind::Notice => {
                if event.origin != Some(self.conn) {
                    self.out.push(WsMessage::Text(event.frame.clone()));
                }
                Flow::Continue
            }
            EventKind::RoomDeleted => {
                self.out.push(WsMessage::Text(event.frame.clone()));
                self.drop_room(event.room).await;
                if self.bound == Some(event.room) {
                    return Flow::Close(CloseCode::RoomDeleted);
                }
                Flow::Continue
            }
            EventKind::Resync => {
                // Whatever was published while the broker was away is in
                // storage: deliver what lies above the cursor, if the user
                // may still read it (the events that said otherwise may
                // have been lost with the broker).
                match self.lost_while_away(event.room).await {
                    Ok(None) => {}
                    Ok(Some(code)) => {
                        if code == CloseCode::RoomDeleted {
                            self.push(&ServerFrame::RoomDeleted { room: event.room });
                        }
                        self.drop_room(event.room).await;
                        if self.bound == Some(event.room) {
                            return Flow::Close(code);
                        }
                        return Flow::Continue;
                    }
                    Err(flow) => return flow,
                }
                if let Err(flow) = self.catch_up(event.room, None).await {
                    return flow;
                }
                Flow::Continue
            }
            EventKind::MemberLeft(user) => {
                if *user == self.user {
                    self.drop_room(event.room).await;
                    if self.bound == Some(event.room) {
                        return Flow::Close(CloseCode::Normal);
                    }
                }
                Flow::Continue
            }
        }
    }
}
