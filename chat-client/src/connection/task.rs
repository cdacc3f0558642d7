//! The background task that owns the socket.
//!
//! One loop `select!`s over the application's commands, the socket's frames,
//! handing buffered events to the application, and the reconnect timer.
//!
//! Ordering per room: the server sends each room's timeline (messages,
//! members joining and leaving) in `seq` order, the connection's own acks in
//! their messages' places. A timeline event is handed on only if its `seq`
//! is the cursor + 1 and the event buffer has room; anything else above the
//! cursor only raises the room's `behind` mark, and [`Actor::fill`] fetches
//! `cursor+1..=behind` from the room's timeline over HTTP. So an
//! application too slow to read (or a replay racing a live event across a
//! reconnect) costs a timeline call, never a duplicate or a hole, and the
//! socket is always read (acks keep flowing even while the application is
//! not taking events).
//!
//! Answers without a `client_id` (`subscribed`, `error`) come in the order
//! of the frames that caused them. `subscribe` always gets `subscribed` or
//! an `error`; `read`, `typing` and `unsubscribe` only get an `error` when
//! they fail, so each is followed by a `ping` whose `pong` says "done". The
//! queue of those pending operations ([`Actor::ops`]) is then matched in
//! order. `auth` (the socket's token renewal) is answered by
//! `authenticated` or an `error`, and sits in the same queue.
//!
//! Token renewal: ahead of the socket's token expiry (by the refresh margin,
//! or half the time left if shorter) a task refreshes the session through the
//! client's single-flight refresh and the loop sends `auth` with the new
//! access token. A failed or refused renewal is retried a few times; past
//! that, and when the expiry is unknown, the server's 4401 close followed by
//! a refresh and a reconnect is the fallback.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use chat_core::frame::{ClientFrame, ServerFrame};
use chat_core::timeline::TimelineEvent;
use chat_core::{CloseCode, ErrorCode, Message, RoomId, RoomRef, Seq, Timestamp};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::socket::{self, Ws};
use super::{Command, ConnectOptions, ConnectionState, Event};
use crate::{ChatClient, ClientError, ErrorKind, HistoryQuery, SendOptions, Tokens};

/// History pages fetched to fill a gap (the server's maximum).
const FILL_PAGE: u32 = 200;
/// Pause before retrying a gap fill whose history call failed.
const FILL_RETRY: Duration = Duration::from_millis(500);
/// Pause before retrying a failed renewal of the socket's token (times the
/// failures so far).
const REAUTH_RETRY: Duration = Duration::from_secs(1);
/// Renewals tried in a row before leaving it to the server's 4401.
const MAX_REAUTH_FAILURES: u32 = 3;

/// A subscribed room.
#[derive(Debug)]
struct Room {
    /// The last seq handed to the application.
    cursor: Seq,
    /// The highest seq known to exist; above `cursor` means a gap to fill.
    behind: Seq,
}

/// An operation waiting for its answer, in the order its frames were written.
#[derive(Debug)]
struct Op {
    kind: OpKind,
    /// `None` for the task's own resubscribes.
    reply: Option<Reply>,
    /// An `error` answered it; the `pong` that follows only removes it.
    answered: bool,
}

#[derive(Debug)]
enum OpKind {
    Subscribe {
        room: RoomRef,
        after_seq: Option<Seq>,
    },
    /// `read`, `typing` or `unsubscribe`, followed by a `ping`.
    Other(ClientFrame),
    /// A bare `ping`, to notice a dead peer.
    Keepalive,
    /// `auth` with a fresh token, answered by `authenticated` or an error.
    Auth {
        token: Secret,
        expires_at: Option<SystemTime>,
    },
}

/// A token, kept out of debug output.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug)]
enum Reply {
    Room(oneshot::Sender<Result<RoomId, ClientError>>),
    Unit(oneshot::Sender<Result<(), ClientError>>),
}

impl Reply {
    fn fail(self, e: ClientError) {
        match self {
            Self::Room(tx) => drop(tx.send(Err(e))),
            Self::Unit(tx) => drop(tx.send(Err(e))),
        }
    }
}

#[derive(Debug)]
struct PendingSend {
    client_id: String,
    room: RoomRef,
    body: String,
    options: SendOptions,
    reply: oneshot::Sender<Result<Message, ClientError>>,
    /// Written on the current socket (and so may be what the server is
    /// processing).
    written: bool,
}

type WsResult = Result<WsMessage, tokio_tungstenite::tungstenite::Error>;

/// What one turn of the loop does.
#[derive(Debug)]
enum Step {
    Idle,
    Stop,
    Command(Command),
    Frame(Option<WsResult>),
    Reconnect,
    Keepalive,
    /// Time to fetch a fresh token for the live socket.
    Reauth,
    /// The fresh token (or why there is none).
    Refreshed(Result<Tokens, ClientError>),
}

/// Why the socket went away.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// The server's close code, if it sent one.
    Closed(Option<u16>),
}

#[derive(Debug)]
pub(super) struct Actor {
    client: ChatClient,
    options: ConnectOptions,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ConnectionState>,
    /// The access token of the current (or last) socket, for 4401.
    token: String,
    /// Events for the application, bounded by `options.event_capacity` for
    /// messages (see the module doc).
    outbox: VecDeque<Event>,
    rooms: HashMap<RoomId, Room>,
    names: HashMap<String, RoomId>,
    ops: VecDeque<Op>,
    /// Unacknowledged sends, by the order they were made.
    sends: BTreeMap<u64, PendingSend>,
    send_index: HashMap<String, u64>,
    next_send: u64,
    fill_retry_at: Option<Instant>,
    /// Reconnect: the next try and how many were made.
    reconnect_at: Option<Instant>,
    attempt: u32,
    /// The server closed with 4401: refresh before reconnecting.
    refresh_first: bool,
    /// When the current socket last delivered a frame, and when to ping it.
    last_heard: Instant,
    next_ping: Instant,
    /// When to renew the socket's token with an `auth` frame, before the
    /// server closes it with 4401 (which stays the fallback).
    reauth_at: Option<Instant>,
    /// A token refresh for the renewal, running beside the loop so that
    /// the socket is read meanwhile.
    refreshing: Option<oneshot::Receiver<Result<Tokens, ClientError>>>,
    /// Renewals refused or failed in a row; the next one refreshes first.
    reauth_failures: u32,
}

impl Actor {
    pub(super) fn new(
        client: ChatClient,
        options: ConnectOptions,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        state: watch::Sender<ConnectionState>,
        token: String,
    ) -> Self {
        Self {
            client,
            commands,
            events,
            state,
            token,
            outbox: VecDeque::new(),
            rooms: HashMap::new(),
            names: HashMap::new(),
            ops: VecDeque::new(),
            sends: BTreeMap::new(),
            send_index: HashMap::new(),
            next_send: 0,
            fill_retry_at: None,
            reconnect_at: None,
            attempt: 0,
            refresh_first: false,
            last_heard: Instant::now(),
            next_ping: Instant::now() + options.keepalive,
            reauth_at: None,
            refreshing: None,
            reauth_failures: 0,
            options,
        }
    }

    pub(super) async fn run(mut self, ws: Ws) {
        let mut ws = Some(ws);
        self.socket_opened();
        loop {
            self.fill().await;
            let has_events = !self.outbox.is_empty();
            let connected = ws.is_some();
            let reconnect_at = self.reconnect_at;
            let fill_retry_at = self.fill_retry_at;
            let next_ping = self.next_ping;
            let reauth_at = self.reauth_at.filter(|_| self.refreshing.is_none());
            let refreshing = self.refreshing.is_some();
            // Decide in the `select!`, act after it: the branches' futures
            // borrow `self` until it ends.
            let step = tokio::select! {
                permit = self.events.reserve(), if has_events => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.outbox.pop_front() {
                            permit.send(event);
                        }
                        Step::Idle
                    }
                    // The handle is gone.
                    Err(_) => Step::Stop,
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => Step::Stop,
                    Some(command) => Step::Command(command),
                },
                frame = next_frame(&mut ws), if connected => Step::Frame(frame),
                () = sleep_until(reconnect_at), if !connected => Step::Reconnect,
                () = tokio::time::sleep_until(next_ping), if connected => Step::Keepalive,
                () = sleep_until(reauth_at), if connected && reauth_at.is_some() => Step::Reauth,
                result = refreshed(&mut self.refreshing), if refreshing => Step::Refreshed(result),
                () = sleep_until(fill_retry_at), if fill_retry_at.is_some() => {
                    self.fill_retry_at = None;
                    Step::Idle
                },
            };
            match step {
                Step::Idle => {}
                Step::Stop => break,
                Step::Command(command) => {
                    if let Err(gone) = self.command(command, &mut ws).await {
                        self.dropped(&mut ws, gone);
                    }
                }
                Step::Frame(frame) => {
                    self.last_heard = Instant::now();
                    if let Err(gone) = self.frame(frame) {
                        self.dropped(&mut ws, gone);
                    }
                }
                Step::Keepalive => {
                    if let Err(gone) = self.keepalive(&mut ws).await {
                        self.dropped(&mut ws, gone);
                    }
                }
                Step::Reauth => self.start_refresh(),
                Step::Refreshed(result) => {
                    self.refreshing = None;
                    if let Err(gone) = self.reauthenticate(result, &mut ws).await {
                        self.dropped(&mut ws, gone);
                    }
                }
                Step::Reconnect => {
                    if !self.reconnect(&mut ws).await {
                        self.finish_fatal().await;
                        return;
                    }
                }
            }
        }
        if let Some(mut ws) = ws {
            let _ = ws.close(None).await;
        }
        self.set_state(ConnectionState::Closed, false);
    }

    // ---- commands ----------------------------------------------------

    async fn command(&mut self, command: Command, ws: &mut Option<Ws>) -> Result<(), Gone> {
        match command {
            Command::Subscribe {
                room,
                after_seq,
                reply,
            } => {
                let op = Op {
                    kind: OpKind::Subscribe { room, after_seq },
                    reply: Some(Reply::Room(reply)),
                    answered: false,
                };
                self.push_op(op, ws).await
            }
            Command::Unsubscribe { room, reply } => {
                let id = match &room {
                    RoomRef::Id(id) => Some(*id),
                    RoomRef::Name(name) => self.names.get(name).copied(),
                };
                if let Some(id) = id {
                    self.rooms.remove(&id);
                    self.names.retain(|_, v| *v != id);
                }
                if ws.is_none() {
                    // Not resubscribed on reconnect: nothing to tell the server.
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let op = Op {
                    kind: OpKind::Other(ClientFrame::Unsubscribe { room }),
                    reply: Some(Reply::Unit(reply)),
                    answered: false,
                };
                self.push_op(op, ws).await
            }
            Command::Read { room, seq, reply } => {
                let op = Op {
                    kind: OpKind::Other(ClientFrame::Read {
                        room: RoomRef::Id(room),
                        seq,
                    }),
                    reply: Some(Reply::Unit(reply)),
                    answered: false,
                };
                self.push_op(op, ws).await
            }
            Command::Typing { room, reply } => {
                let op = Op {
                    kind: OpKind::Other(ClientFrame::Typing {
                        room: RoomRef::Id(room),
                    }),
                    reply: Some(Reply::Unit(reply)),
                    answered: false,
                };
                self.push_op(op, ws).await
            }
            Command::Send {
                room,
                body,
                options,
                reply,
            } => {
                if self.sends.len() >= self.options.queue_limit {
                    let _ = reply.send(Err(ClientError::QueueFull {
                        limit: self.options.queue_limit,
                    }));
                    return Ok(());
                }
                let index = self.next_send;
                self.next_send += 1;
                let client_id = uuid::Uuid::new_v4().to_string();
                self.send_index.insert(client_id.clone(), index);
                self.sends.insert(
                    index,
                    PendingSend {
                        client_id,
                        room,
                        body,
                        options,
                        reply,
                        written: false,
                    },
                );
                match ws {
                    Some(socket) => write_send(socket, &mut self.sends, index).await,
                    None => Ok(()),
                }
            }
            Command::Close => Ok(()),
        }
    }

    /// Pings the server, or gives the socket up when it has been silent
    /// for two intervals (the last ping went unanswered).
    async fn keepalive(&mut self, ws: &mut Option<Ws>) -> Result<(), Gone> {
        let now = Instant::now();
        self.next_ping = now + self.options.keepalive;
        if now.duration_since(self.last_heard) >= self.options.keepalive * 2 {
            tracing::debug!("no answer to the last ping; dropping the socket");
            return Err(Gone::Closed(None));
        }
        let op = Op {
            kind: OpKind::Keepalive,
            reply: None,
            answered: false,
        };
        self.push_op(op, ws).await
    }

    // ---- renewing the socket's token --------------------------------

    /// A socket just opened with `self.token`: plan its renewal from the
    /// session's expiry for that token (unknown expiry: no renewal, the
    /// server's 4401 and a reconnect cover it).
    fn socket_opened(&mut self) {
        self.reauth_failures = 0;
        let expires_at = self
            .client
            .tokens()
            .filter(|t| t.access == self.token)
            .and_then(|t| t.expires_at);
        self.plan_reauth(expires_at);
    }

    /// Renews ahead of `expires_at` by the refresh margin, or by half the
    /// time left when that is shorter, so a lifetime below the margin
    /// does not renew in a loop.
    fn plan_reauth(&mut self, expires_at: Option<SystemTime>) {
        self.reauth_at = expires_at.map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let lead = self.client.options().get_refresh_margin().min(left / 2);
            Instant::now() + (left - lead)
        });
    }

    fn start_refresh(&mut self) {
        self.reauth_at = None;
        let client = self.client.clone();
        // After a refusal the session's token may be the refused one:
        // refresh it whatever its expiry says.
        let force = (self.reauth_failures > 0).then(|| self.token.clone());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let result = match force {
                Some(stale) => match client.refresh_after(Some(&stale)).await {
                    Ok(_) => client.fresh_tokens().await,
                    Err(e) => Err(e),
                },
                None => client.fresh_tokens().await,
            };
            let _ = tx.send(result);
        });
        self.refreshing = Some(rx);
    }

    async fn reauthenticate(
        &mut self,
        result: Result<Tokens, ClientError>,
        ws: &mut Option<Ws>,
    ) -> Result<(), Gone> {
        if ws.is_none() {
            // Reconnecting opens the next socket with a fresh token anyway.
            return Ok(());
        }
        match result {
            Ok(tokens) if tokens.access == self.token => {
                // Nothing newer (the refresh failed softly): try again later.
                tracing::debug!("no fresher token to renew the socket with yet");
                self.reauth_later();
                Ok(())
            }
            Ok(tokens) => {
                let op = Op {
                    kind: OpKind::Auth {
                        token: Secret(tokens.access),
                        expires_at: tokens.expires_at,
                    },
                    reply: None,
                    answered: false,
                };
                self.push_op(op, ws).await
            }
            Err(e) if e.kind() == ErrorKind::Unauthorized => {
                // The session is gone: the server's 4401 ends this socket
                // and the reconnect reports it.
                tracing::warn!(error = %e, "cannot renew the socket's token");
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "token refresh for the socket failed; retrying");
                self.reauth_later();
                Ok(())
            }
        }
    }

    /// After a failed or refused renewal: a few more tries, then leave it
    /// to the 4401 fallback.
    fn reauth_later(&mut self) {
        self.reauth_failures += 1;
        if self.reauth_failures <= MAX_REAUTH_FAILURES {
            self.reauth_at = Some(Instant::now() + REAUTH_RETRY * self.reauth_failures);
        }
    }

    /// `authenticated`: the socket now runs on the token of the `auth` at
    /// the head of the queue.
    fn authenticated(&mut self, server_expiry: Timestamp) {
        match self.ops.front() {
            Some(Op {
                kind: OpKind::Auth { .. },
                ..
            }) => {}
            _ => {
                tracing::warn!("authenticated without a pending auth");
                return;
            }
        }
        let Some(Op {
            kind: OpKind::Auth { token, expires_at },
            ..
        }) = self.ops.pop_front()
        else {
            return;
        };
        self.token = token.0;
        self.reauth_failures = 0;
        let expires_at = expires_at.or_else(|| {
            let micros = u64::try_from(server_expiry.unix_micros()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
        });
        self.plan_reauth(expires_at);
    }

    /// Queues `op` and, when connected, writes it.
    async fn push_op(&mut self, op: Op, ws: &mut Option<Ws>) -> Result<(), Gone> {
        let frames = op.frames();
        self.ops.push_back(op);
        if let Some(socket) = ws {
            for frame in frames {
                write(socket, &frame).await?;
            }
        }
        Ok(())
    }

    // ---- frames ------------------------------------------------------

    fn frame(&mut self, frame: Option<WsResult>) -> Result<(), Gone> {
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(close))) => {
                return Err(Gone::Closed(close.map(|c| u16::from(c.code))));
            }
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket failed");
                return Err(Gone::Closed(None));
            }
            None => return Err(Gone::Closed(None)),
        };
        let frame: ServerFrame = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server; skipped");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Message { message } => {
                self.bind_replay(message.room);
                self.deliver(TimelineEvent::Message { message });
            }
            ServerFrame::Member(member) => {
                self.bind_replay(member.room);
                self.deliver(TimelineEvent::Member(member));
            }
            ServerFrame::MessageEdited(update) => {
                self.bind_replay(update.room);
                self.deliver(TimelineEvent::MessageEdited(update));
            }
            ServerFrame::MessageDeleted(update) => {
                self.bind_replay(update.room);
                self.deliver(TimelineEvent::MessageDeleted(update));
            }
            ServerFrame::Reaction(reaction) => {
                self.bind_replay(reaction.room);
                self.deliver(TimelineEvent::Reaction(reaction));
            }
            ServerFrame::MessagePinned(update) => {
                self.bind_replay(update.room);
                self.deliver(TimelineEvent::MessagePinned(update));
            }
            ServerFrame::MessageUnpinned(update) => {
                self.bind_replay(update.room);
                self.deliver(TimelineEvent::MessageUnpinned(update));
            }
            ServerFrame::RoomUpdated(update) => {
                self.bind_replay(update.room);
                self.deliver(TimelineEvent::RoomUpdated(update));
            }
            ServerFrame::Ack { client_id, message } => {
                if let Some(index) = client_id.and_then(|c| self.send_index.remove(&c))
                    && let Some(pending) = self.sends.remove(&index)
                {
                    let _ = pending.reply.send(Ok(message.clone()));
                }
                self.deliver(TimelineEvent::Message { message });
            }
            ServerFrame::Subscribed { room, last_seq } => self.subscribed(room, last_seq),
            ServerFrame::Pong => {
                if let Some(op) = self.ops.pop_front() {
                    if let (Some(Reply::Unit(tx)), false) = (op.reply, op.answered) {
                        let _ = tx.send(Ok(()));
                    }
                } else {
                    tracing::debug!("pong without a pending operation");
                }
            }
            ServerFrame::Error {
                code,
                error,
                client_id: Some(client_id),
            } => {
                if let Some(index) = self.send_index.remove(&client_id)
                    && let Some(pending) = self.sends.remove(&index)
                {
                    let _ = pending
                        .reply
                        .send(Err(ClientError::from_frame(code, error)));
                }
            }
            ServerFrame::Error {
                code,
                error,
                client_id: None,
            } => self.op_failed(code, error),
            ServerFrame::Read { room, user, seq } => {
                self.outbox.push_back(Event::Read { room, user, seq });
            }
            ServerFrame::Typing { room, user } => {
                // Typing is momentary: dropped rather than buffered when the
                // application is behind.
                if self.outbox.len() < self.options.event_capacity {
                    self.outbox.push_back(Event::Typing { room, user });
                }
            }
            ServerFrame::Presence { room, user, status } => {
                self.outbox
                    .push_back(Event::Presence { room, user, status });
            }
            ServerFrame::RoomDeleted { room } => self.room_gone(room),
            ServerFrame::Authenticated { expires_at } => self.authenticated(expires_at),
        }
        Ok(())
    }

    /// A replayed message of a room being subscribed by name arrives before
    /// `subscribed` names its id: the op at the head of the queue is that
    /// subscription (the server answers in order), so its cursor starts
    /// here.
    fn bind_replay(&mut self, room: RoomId) {
        if self.rooms.contains_key(&room) {
            return;
        }
        if let Some(Op {
            kind:
                OpKind::Subscribe {
                    room: wanted,
                    after_seq: Some(after),
                },
            ..
        }) = self.ops.front()
            && wanted.as_id().is_none_or(|id| id == room)
        {
            self.rooms.insert(
                room,
                Room {
                    cursor: *after,
                    behind: *after,
                },
            );
        }
    }

    fn subscribed(&mut self, room: RoomId, last_seq: Seq) {
        let op = match self.ops.front() {
            Some(Op {
                kind: OpKind::Subscribe { .. },
                ..
            }) => self.ops.pop_front(),
            _ => {
                tracing::warn!(%room, "subscribed without a pending subscribe");
                None
            }
        };
        let after_seq = match &op {
            Some(Op {
                kind:
                    OpKind::Subscribe {
                        room: wanted,
                        after_seq,
                    },
                ..
            }) => {
                if let RoomRef::Name(name) = wanted {
                    self.names.insert(name.clone(), room);
                }
                *after_seq
            }
            _ => None,
        };
        let entry = self.rooms.entry(room).or_insert(Room {
            cursor: after_seq.unwrap_or(last_seq),
            behind: 0,
        });
        entry.behind = entry.behind.max(last_seq);
        if let Some(Op {
            reply: Some(Reply::Room(tx)),
            ..
        }) = op
        {
            let _ = tx.send(Ok(room));
        }
    }

    fn op_failed(&mut self, code: ErrorCode, error: String) {
        let Some(front) = self.ops.front_mut() else {
            tracing::warn!(%code, error, "error frame without a pending operation");
            return;
        };
        match &front.kind {
            OpKind::Subscribe { room, .. } => {
                let room = room.clone();
                let Some(op) = self.ops.pop_front() else {
                    return;
                };
                match op.reply {
                    Some(reply) => reply.fail(ClientError::from_frame(code, error)),
                    // Our own resubscribe: the room went away while we were
                    // disconnected, or we lost access to it.
                    None => {
                        tracing::info!(%code, %room, "resubscribe refused; the room's subscription ends");
                        if let Some(id) = room.as_id() {
                            self.room_gone(id);
                        }
                    }
                }
            }
            OpKind::Auth { .. } => {
                self.ops.pop_front();
                tracing::warn!(%code, error, "the server refused the socket's new token");
                self.reauth_later();
            }
            OpKind::Other(_) | OpKind::Keepalive => {
                if !front.answered {
                    front.answered = true;
                    if let Some(reply) = front.reply.take() {
                        reply.fail(ClientError::from_frame(code, error));
                    }
                }
            }
        }
    }

    fn room_gone(&mut self, room: RoomId) {
        if self.rooms.remove(&room).is_some() {
            self.names.retain(|_, v| *v != room);
        }
        self.outbox.push_back(Event::RoomDeleted { room });
    }

    /// Hands `event` on if it is next in its room and there is room for
    /// it; otherwise records that the room is behind (see the module doc).
    fn deliver(&mut self, event: TimelineEvent) {
        let full = self.outbox.len() >= self.options.event_capacity;
        let (id, seq) = (event.room(), event.seq());
        let Some(room) = self.rooms.get_mut(&id) else {
            return;
        };
        if seq <= room.cursor {
            return;
        }
        if !full && room.behind <= room.cursor && seq == room.cursor + 1 {
            room.cursor = seq;
            room.behind = seq;
            self.outbox.push_back(as_event(event));
        } else {
            room.behind = room.behind.max(seq);
        }
    }

    /// Fetches the timeline of rooms that are behind over HTTP,
    /// while the event buffer has room.
    async fn fill(&mut self) {
        if self.fill_retry_at.is_some() {
            return;
        }
        while self.outbox.len() < self.options.event_capacity {
            let Some((&id, room)) = self.rooms.iter().find(|(_, r)| r.behind > r.cursor) else {
                return;
            };
            let space = self.options.event_capacity - self.outbox.len();
            let limit = u32::try_from(space)
                .unwrap_or(FILL_PAGE)
                .clamp(1, FILL_PAGE);
            let query = HistoryQuery::new()
                .after(room.cursor)
                .before(room.behind.saturating_add(1))
                .limit(limit);
            match self.client.timeline(id, query).await {
                Ok(page) => {
                    let Some(room) = self.rooms.get_mut(&id) else {
                        continue;
                    };
                    if page.events.is_empty() {
                        tracing::warn!(%id, cursor = room.cursor, behind = room.behind, "the timeline has nothing to fill the gap");
                        room.behind = room.cursor;
                        continue;
                    }
                    for event in page.events {
                        let seq = event.seq();
                        if seq > room.cursor && seq <= room.behind {
                            room.cursor = seq;
                            self.outbox.push_back(as_event(event));
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Forbidden) => {
                    // The room is gone or closed to us; its `room_deleted`
                    // (or the next resubscribe) ends the subscription.
                    tracing::debug!(%id, error = %e, "history refused while filling a gap");
                    if let Some(room) = self.rooms.get_mut(&id) {
                        room.behind = room.cursor;
                    }
                }
                Err(e) => {
                    tracing::debug!(%id, error = %e, "history failed while filling a gap; retrying");
                    self.fill_retry_at = Some(Instant::now() + FILL_RETRY);
                    return;
                }
            }
        }
    }

    // ---- drops and reconnects ----------------------------------------

    fn dropped(&mut self, ws: &mut Option<Ws>, why: Gone) {
        *ws = None;
        let Gone::Closed(code) = why;
        tracing::debug!(?code, "socket dropped");
        match code.and_then(CloseCode::from_code) {
            // Revoked (logged out everywhere, deactivated): a refresh
            // tells whether the session lives on; if not, the connection
            // closes.
            Some(CloseCode::TokenExpired | CloseCode::SessionRevoked) => self.refresh_first = true,
            Some(CloseCode::TooLarge) => {
                // The server reads frames in order and answers each before
                // the next, so the oldest send still waiting on this socket
                // is the one it could not take. Sending it again would only
                // close the next socket too.
                let culprit = self
                    .sends
                    .iter()
                    .find(|(_, s)| s.written)
                    .map(|(index, _)| *index);
                if let Some(index) = culprit
                    && let Some(pending) = self.sends.remove(&index)
                {
                    self.send_index.remove(&pending.client_id);
                    let _ = pending.reply.send(Err(ClientError::from_frame(
                        ErrorCode::BodyTooLong,
                        "The message is larger than the server accepts".to_owned(),
                    )));
                }
            }
            _ => {}
        }
        // The task's own resubscribes are made again from `rooms`; the
        // application's operations wait and are written again.
        self.ops.retain(|op| op.reply.is_some());
        for op in &mut self.ops {
            op.answered = false;
        }
        for pending in self.sends.values_mut() {
            pending.written = false;
        }
        self.attempt = 1;
        self.schedule_reconnect();
    }

    fn schedule_reconnect(&mut self) {
        let exponent = self.attempt.saturating_sub(1).min(16);
        let base = self
            .options
            .min_backoff
            .saturating_mul(1 << exponent)
            .min(self.options.max_backoff);
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        self.reconnect_at = Some(Instant::now() + base.mul_f64(jitter));
        self.set_state(
            ConnectionState::Reconnecting {
                attempt: self.attempt,
            },
            true,
        );
    }

    /// One reconnect try. `false` when the connection cannot go on (the
    /// session is gone).
    async fn reconnect(&mut self, ws: &mut Option<Ws>) -> bool {
        self.reconnect_at = None;
        let stale = self.refresh_first.then(|| self.token.clone());
        match socket::open(&self.client, stale.as_deref()).await {
            Ok((socket, token)) => {
                self.refresh_first = false;
                self.token = token;
                *ws = Some(socket);
                self.last_heard = Instant::now();
                self.next_ping = self.last_heard + self.options.keepalive;
                self.attempt = 0;
                self.refreshing = None;
                self.socket_opened();
                self.set_state(ConnectionState::Connected, true);
                if let Err(gone) = self.resume(ws).await {
                    self.dropped(ws, gone);
                }
                true
            }
            Err(e)
                if e.kind() == ErrorKind::Unauthorized
                    || e.code() == Some(ErrorCode::AccountDeactivated) =>
            {
                tracing::warn!(error = %e, "the session is gone; closing the connection");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt = self.attempt, "reconnect failed");
                self.attempt = self.attempt.saturating_add(1);
                self.schedule_reconnect();
                true
            }
        }
    }

    /// After reconnecting: resubscribe every room from its cursor, then the
    /// application's operations and sends, in their order.
    async fn resume(&mut self, ws: &mut Option<Ws>) -> Result<(), Gone> {
        let mut ops: VecDeque<Op> = self
            .rooms
            .iter()
            .map(|(id, room)| Op {
                kind: OpKind::Subscribe {
                    room: RoomRef::Id(*id),
                    after_seq: Some(room.cursor),
                },
                reply: None,
                answered: false,
            })
            .collect();
        ops.append(&mut self.ops);
        let Some(socket) = ws else {
            return Ok(());
        };
        let mut frames = Vec::new();
        for op in &ops {
            frames.extend(op.frames());
        }
        self.ops = ops;
        for frame in frames {
            write(socket, &frame).await?;
        }
        let indexes: Vec<u64> = self.sends.keys().copied().collect();
        for index in indexes {
            write_send(socket, &mut self.sends, index).await?;
        }
        Ok(())
    }

    /// The session is gone: fail what waits, tell the application, and end
    /// once it has taken the buffered events.
    async fn finish_fatal(mut self) {
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        self.ops.clear();
        self.sends.clear();
        self.set_state(ConnectionState::Closed, true);
        while let Some(event) = self.outbox.pop_front() {
            if self.events.send(event).await.is_err() {
                return;
            }
        }
    }

    fn set_state(&mut self, state: ConnectionState, announce: bool) {
        self.state.send_replace(state);
        if announce {
            self.outbox.push_back(Event::StateChanged(state));
        }
    }
}

impl Op {
    fn frames(&self) -> Vec<ClientFrame> {
        match &self.kind {
            OpKind::Subscribe { room, after_seq } => vec![ClientFrame::Subscribe {
                room: room.clone(),
                after_seq: *after_seq,
            }],
            OpKind::Other(frame) => vec![frame.clone(), ClientFrame::Ping],
            OpKind::Keepalive => vec![ClientFrame::Ping],
            OpKind::Auth { token, .. } => vec![ClientFrame::Auth {
                token: token.0.clone(),
            }],
        }
    }
}

async fn next_frame(ws: &mut Option<Ws>) -> Option<WsResult> {
    match ws {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

async fn refreshed(
    rx: &mut Option<oneshot::Receiver<Result<Tokens, ClientError>>>,
) -> Result<Tokens, ClientError> {
    match rx {
        Some(rx) => rx.await.unwrap_or(Err(ClientError::Closed)),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write(socket: &mut Ws, frame: &ClientFrame) -> Result<(), Gone> {
    let text = serde_json::to_string(frame).map_err(|e| {
        tracing::error!(error = %e, "unserializable frame");
        Gone::Closed(None)
    })?;
    socket.send(WsMessage::text(text)).await.map_err(|e| {
        tracing::debug!(error = %e, "socket write failed");
        Gone::Closed(None)
    })
}

async fn write_send(
    socket: &mut Ws,
    sends: &mut BTreeMap<u64, PendingSend>,
    index: u64,
) -> Result<(), Gone> {
    let Some(pending) = sends.get_mut(&index) else {
        return Ok(());
    };
    pending.written = true;
    let frame = ClientFrame::Send {
        room: Some(pending.room.clone()),
        body: pending.body.clone(),
        client_id: Some(pending.client_id.clone()),
        reply_to: pending.options.reply_to,
        thread_root: pending.options.thread_root,
        mentions: pending.options.mentions.clone(),
        attachments: pending.options.attachments.clone(),
    };
    write(socket, &frame).await
}

/// A timeline event as the application gets it.
fn as_event(event: TimelineEvent) -> Event {
    match event {
        TimelineEvent::Message { message } => Event::Message(message),
        TimelineEvent::Member(member) => Event::Member(member),
        TimelineEvent::MessageEdited(update) => Event::MessageEdited(update),
        TimelineEvent::MessageDeleted(update) => Event::MessageDeleted(update),
        TimelineEvent::Reaction(reaction) => Event::Reaction(reaction),
        TimelineEvent::MessagePinned(update) => Event::MessagePinned(update),
        TimelineEvent::MessageUnpinned(update) => Event::MessageUnpinned(update),
        TimelineEvent::RoomUpdated(update) => Event::RoomUpdated(update),
    }
}
