//! [`Connection`]: the live side of the SDK, one WebSocket (`/ws/`) for many
//! rooms, kept open across drops.
//!
//! The handle talks to one background task ([`task`]) that owns the socket:
//! commands go to it over a bounded channel, each with a oneshot for its
//! answer; events come back over a bounded channel. The task keeps, per
//! subscribed room, a cursor (the last `seq` handed to the application) and
//! fills any gap from HTTP history, so every message is seen once, in order.

mod socket;
mod task;

use std::time::Duration;

use chat_core::frame::PresenceStatus;
use chat_core::moderation::RoomUpdate;
use chat_core::timeline::{MemberEvent, MessageUpdate, ReactionEvent};
use chat_core::{Message, RoomId, RoomRef, Seq, UserId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{ChatClient, ClientError, SendOptions};

/// How a [`Connection`] queues and reconnects. Start from
/// [`ConnectOptions::default`] and chain the setters.
///
/// ```
/// use std::time::Duration;
/// use chat_client::ConnectOptions;
///
/// let options = ConnectOptions::default()
///     .queue_limit(100)
///     .backoff(Duration::from_millis(50), Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) queue_limit: usize,
    pub(crate) event_capacity: usize,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) keepalive: Duration,
}

impl Default for ConnectOptions {
    /// 1,000 unacknowledged sends, 1,024 buffered events, backoff from
    /// 100 ms to 10 s, a ping every 20 s.
    fn default() -> Self {
        Self {
            queue_limit: 1_000,
            event_capacity: 1_024,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
        }
    }
}

impl ConnectOptions {
    /// At most this many sends may wait for the server's ack (in flight, or
    /// queued while disconnected); past it [`Connection::send`] fails at once
    /// with [`ClientError::QueueFull`] (kind
    /// [`Unavailable`](crate::ErrorKind::Unavailable)). Default 1,000.
    ///
    /// ```
    /// let o = chat_client::ConnectOptions::default().queue_limit(10);
    /// # let _ = o;
    /// ```
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = limit.max(1);
        self
    }

    /// How many events wait for [`Connection::next_event`] before the
    /// connection stops buffering messages (it fetches them from history
    /// once the application catches up) and typing notices (dropped). Read
    /// marks, presence and state changes are still kept, as they cannot be
    /// fetched again. The socket is read either way, so acks keep coming.
    /// Default 1,024.
    ///
    /// ```
    /// let o = chat_client::ConnectOptions::default().event_capacity(64);
    /// # let _ = o;
    /// ```
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Reconnect delays: the first after `min`, doubling up to `max`, each
    /// with random jitter (between half and all of it). Default 100 ms to
    /// 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ConnectOptions::default()
    ///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// # let _ = o;
    /// ```
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Pings the server this often; a socket silent for two intervals is
    /// taken for dead and reconnected (a peer that vanished without closing
    /// the TCP connection is otherwise noticed only when a write fails).
    /// Default 20 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ConnectOptions::default().keepalive(Duration::from_secs(5));
    /// # let _ = o;
    /// ```
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval.max(Duration::from_millis(10));
        self
    }
}

/// Where a [`Connection`] stands. Changes are also delivered in order as
/// [`Event::StateChanged`].
///
/// ```no_run
/// use chat_client::ConnectionState;
///
/// # async fn demo(conn: chat_client::Connection) {
/// match conn.state() {
///     ConnectionState::Connected => println!("live"),
///     ConnectionState::Reconnecting { attempt } => println!("reconnecting (try {attempt})"),
///     ConnectionState::Closed => println!("closed"),
///     _ => println!("connecting"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening the first socket. ([`ChatClient::connect`] resolves once it
    /// is open, so a [`Connection`] starts [`Connected`](Self::Connected).)
    Connecting,
    /// The socket is open; sends go out at once.
    Connected,
    /// The socket dropped; the `attempt`th try to reopen it is due. Sends
    /// wait in the offline queue.
    Reconnecting {
        /// 1 for the first try after a drop.
        attempt: u32,
    },
    /// Closed for good: [`Connection::next_event`] ends after the buffered
    /// events.
    Closed,
}

/// What a [`Connection`] delivers through [`Connection::next_event`].
///
/// ```no_run
/// use chat_client::Event;
///
/// # async fn demo(mut conn: chat_client::Connection) {
/// while let Some(event) = conn.next_event().await {
///     match event {
///         Event::Message(m) => println!("[{}#{}] {}: {}", m.room, m.seq, m.sender_name, m.body),
///         Event::Typing { room, user } => println!("{user} is typing in {room}"),
///         Event::StateChanged(state) => println!("connection: {state:?}"),
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message of a subscribed room. Every message of each subscribed room
    /// comes exactly once, in `seq` order, this connection's own sends
    /// included.
    Message(Message),
    /// A membership of a subscribed room changed: joined, left, invited,
    /// kicked, banned, unbanned, role changed, muted, unmuted. Like
    /// messages, these are timeline events: each comes once, in `seq`
    /// order with the room's messages (a room's seqs number both). After
    /// your own `kicked` or `banned`, the room sends nothing more.
    Member(MemberEvent),
    /// A message of a subscribed room was edited: a timeline event of its
    /// own (its `seq` is the event's), carrying the message as it stands.
    /// Apply it with [`MessageUpdate::message`]'s `version`: a copy with a
    /// higher version is newer.
    MessageEdited(MessageUpdate),
    /// A message of a subscribed room was deleted: `message` is its
    /// tombstone (`deleted: true`, empty body), which keeps its seq.
    MessageDeleted(MessageUpdate),
    /// A reaction to a message of a subscribed room was added or taken back
    /// (a timeline event; `message` carries the counts after it, `me`
    /// absent: compare `user` with yourself).
    Reaction(ReactionEvent),
    /// A message of a subscribed room was pinned (`message.pinned`).
    MessagePinned(MessageUpdate),
    /// A message of a subscribed room was unpinned.
    MessageUnpinned(MessageUpdate),
    /// A subscribed room's settings changed (a timeline event): `settings`
    /// holds what changed, with the new values.
    RoomUpdated(RoomUpdate),
    /// `user` has read `room` up to `seq`.
    Read {
        /// The room.
        room: RoomId,
        /// Who read it.
        user: UserId,
        /// Up to which message.
        seq: Seq,
    },
    /// `user` is typing in `room`.
    Typing {
        /// The room.
        room: RoomId,
        /// Who is typing.
        user: UserId,
    },
    /// `user` came online or went offline in `room`.
    Presence {
        /// The room.
        room: RoomId,
        /// Whose presence changed.
        user: UserId,
        /// Online or offline.
        status: PresenceStatus,
    },
    /// The room was deleted (or was found gone on resubscribing); its
    /// subscription ends.
    RoomDeleted {
        /// The room.
        room: RoomId,
    },
    /// The connection dropped, reconnected, or closed.
    StateChanged(ConnectionState),
}

/// A command for the background task, with where to answer it.
#[derive(Debug)]
enum Command {
    Subscribe {
        room: RoomRef,
        after_seq: Option<Seq>,
        reply: oneshot::Sender<Result<RoomId, ClientError>>,
    },
    Unsubscribe {
        room: RoomRef,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Send {
        room: RoomRef,
        body: String,
        options: SendOptions,
        reply: oneshot::Sender<Result<Message, ClientError>>,
    },
    Read {
        room: RoomId,
        seq: Seq,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Typing {
        room: RoomId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close,
}

/// A live connection to the server: subscribe to rooms, send, and read the
/// rooms' events with [`next_event`](Self::next_event).
///
/// It survives drops: on any disconnect it reconnects with jittered
/// exponential backoff, a fresh access token, resubscribes every room from
/// where the application left off and resends every unacknowledged send with
/// its original `client_id` (so the server stores it once). Close it with
/// [`close`](Self::close); dropping it closes it too.
///
/// ```no_run
/// use chat_client::{ChatClient, Event};
///
/// # async fn demo(client: ChatClient) -> Result<(), chat_client::ClientError> {
/// let mut conn = client.connect().await?;
/// let room = conn.subscribe("lobby").await?;
/// let sent = conn.send(room, "hello").await?;
/// println!("stored as #{}", sent.seq);
/// while let Some(event) = conn.next_event().await {
///     if let Event::Message(m) = event {
///         println!("{}: {}", m.sender_name, m.body);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connection {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    state: watch::Receiver<ConnectionState>,
    task: tokio::task::JoinHandle<()>,
}

impl ChatClient {
    /// Opens a live connection over `/ws/` (`ws://` or `wss://` after the
    /// base URL's scheme) with default [`ConnectOptions`]. Resolves once the
    /// first socket is open; fails if it cannot be (network, or a session
    /// the server refuses even after a refresh). Later drops are repaired
    /// by the connection itself.
    ///
    /// Must be called within a tokio runtime (the connection spawns its
    /// task). Cancel safe: nothing is left behind if the future is dropped.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let conn = client.connect().await?;
    /// conn.subscribe("lobby").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        self.connect_with(ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with these options.
    ///
    /// ```no_run
    /// use chat_client::ConnectOptions;
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let conn = client.connect_with(ConnectOptions::default().queue_limit(100)).await?;
    /// # let _ = conn;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(&self, options: ConnectOptions) -> Result<Connection, ClientError> {
        let (ws, token) = socket::open(self, None).await?;
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(options.event_capacity);
        let (state_tx, state) = watch::channel(ConnectionState::Connected);
        let actor = task::Actor::new(self.clone(), options, command_rx, event_tx, state_tx, token);
        let task = tokio::spawn(actor.run(ws));
        Ok(Connection {
            commands,
            events,
            state,
            task,
        })
    }
}

impl Connection {
    /// Starts receiving `room` (an id or a name) from now on; resolves with
    /// its id once the server confirms (`subscribed`). Subscribing to a
    /// `public` room joins it. While disconnected it waits for the
    /// reconnect.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) (`room_not_found`),
    /// [`Forbidden`](crate::ErrorKind::Forbidden) (`not_authorized`);
    /// [`Closed`](crate::ErrorKind::Closed) once closed.
    ///
    /// Cancel safe in that dropping the future leaves no state behind on
    /// this side; the subscription may still take effect.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection) -> Result<(), chat_client::ClientError> {
    /// let lobby = conn.subscribe("lobby").await?;
    /// println!("lobby is room {lobby}");
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, room: impl Into<RoomRef>) -> Result<RoomId, ClientError> {
        self.subscribe_inner(room.into(), None).await
    }

    /// Like [`subscribe`](Self::subscribe), but first delivers every stored
    /// message above `after_seq`, in order, then live ones: to resume from
    /// the last message the application saw (0 for the whole history).
    /// Messages this connection already delivered are not repeated.
    ///
    /// ```no_run
    /// # async fn demo(mut conn: chat_client::Connection) -> Result<(), chat_client::ClientError> {
    /// let last_seen = 41; // e.g. saved by the app
    /// conn.subscribe_from("lobby", last_seen).await?;
    /// // next_event() now yields seq 42, 43, … then live messages.
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_from(
        &self,
        room: impl Into<RoomRef>,
        after_seq: Seq,
    ) -> Result<RoomId, ClientError> {
        self.subscribe_inner(room.into(), Some(after_seq)).await
    }

    async fn subscribe_inner(
        &self,
        room: RoomRef,
        after_seq: Option<Seq>,
    ) -> Result<RoomId, ClientError> {
        self.request(|reply| Command::Subscribe {
            room,
            after_seq,
            reply,
        })
        .await
    }

    /// Stops receiving `room`: no event of it is delivered after this
    /// returns. Cancel safe.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection) -> Result<(), chat_client::ClientError> {
    /// conn.unsubscribe("lobby").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unsubscribe(&self, room: impl Into<RoomRef>) -> Result<(), ClientError> {
        let room = room.into();
        self.request(|reply| Command::Unsubscribe { room, reply })
            .await
    }

    /// Sends `body` to `room` (an id or a name; the caller must be a member)
    /// and resolves with the stored message once the server acknowledges
    /// it. The message also comes through [`next_event`](Self::next_event)
    /// in its place in the room's order, if the room is subscribed.
    ///
    /// A `client_id` (UUID v4) is generated for it. While disconnected the
    /// send waits in the offline queue and goes out after reconnecting; one
    /// in flight when the socket dropped is sent again with the same
    /// `client_id`, so the server stores it once.
    ///
    /// Errors: [`QueueFull`](ClientError::QueueFull) at once when
    /// [`ConnectOptions::queue_limit`] sends are already waiting;
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) (`empty_body`,
    /// `body_too_long`, also when the server closed the socket because the
    /// frame was too large), [`Forbidden`](crate::ErrorKind::Forbidden) /
    /// [`NotFound`](crate::ErrorKind::NotFound) for a room the caller is not
    /// in, [`RateLimited`](crate::ErrorKind::RateLimited);
    /// [`Closed`](crate::ErrorKind::Closed) once closed.
    ///
    /// Not cancel safe: dropping the future does not withdraw the message,
    /// which may still be stored (and delivered as an event).
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection) -> Result<(), chat_client::ClientError> {
    /// let message = conn.send("lobby", "hello").await?;
    /// println!("#{} at {}", message.seq, message.created_at);
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        room: impl Into<RoomRef>,
        body: impl Into<String>,
    ) -> Result<Message, ClientError> {
        self.send_with(room, body, SendOptions::new()).await
    }

    /// [`send`](Self::send) a reply, a thread reply, a message with
    /// mentions or with attachments (see [`SendOptions`]); the same
    /// queueing and retries (a send resent after a reconnect carries the
    /// same attachments and `client_id`, so the server stores it once).
    /// Upload the files first, over HTTP ([`ChatClient::upload_file`]).
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection, question: chat_client::Message) -> Result<(), chat_client::ClientError> {
    /// use chat_client::SendOptions;
    /// let options = SendOptions::new().reply_to(question.id).mention(question.sender);
    /// conn.send_with(question.room, "good question", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_with(
        &self,
        room: impl Into<RoomRef>,
        body: impl Into<String>,
        options: SendOptions,
    ) -> Result<Message, ClientError> {
        let (room, body) = (room.into(), body.into());
        self.request(|reply| Command::Send {
            room,
            body,
            options,
            reply,
        })
        .await
    }

    /// Marks `room` read up to `seq`; resolves once the server has taken it.
    /// While disconnected it waits for the reconnect. Cancel safe.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection, m: chat_client::Message) -> Result<(), chat_client::ClientError> {
    /// conn.mark_read(m.room, m.seq).await?;
    /// # Ok(()) }
    /// ```
    pub async fn mark_read(&self, room: RoomId, seq: Seq) -> Result<(), ClientError> {
        self.request(|reply| Command::Read { room, seq, reply })
            .await
    }

    /// Tells the room the user is typing (the server passes on at most one
    /// per interval). Cancel safe.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection, room: chat_client::RoomId) -> Result<(), chat_client::ClientError> {
    /// conn.typing(room).await?;
    /// # Ok(()) }
    /// ```
    pub async fn typing(&self, room: RoomId) -> Result<(), ClientError> {
        self.request(|reply| Command::Typing { room, reply }).await
    }

    /// The next event; `None` once the connection is closed for good and
    /// every buffered event was taken.
    ///
    /// Cancel safe: use it in `tokio::select!` without losing events.
    ///
    /// ```no_run
    /// # async fn demo(mut conn: chat_client::Connection) {
    /// while let Some(event) = conn.next_event().await {
    ///     println!("{event:?}");
    /// }
    /// # }
    /// ```
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The current state.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection) {
    /// assert_eq!(conn.state(), chat_client::ConnectionState::Connected);
    /// # }
    /// ```
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Closes the connection for good: the socket is closed, sends still
    /// waiting fail with [`Closed`](crate::ErrorKind::Closed). Waits for the
    /// background task to end.
    ///
    /// ```no_run
    /// # async fn demo(conn: chat_client::Connection) {
    /// conn.close().await;
    /// # }
    /// ```
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
        let _ = self.task.await;
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }
}
