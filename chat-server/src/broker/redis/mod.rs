//! `redis://` and `rediss://`: fan-out between instances over Redis pub/sub.
//!
//! Connection model, per broker (one per server instance):
//! - **Publishing** goes through a bb8-redis pool of multiplexed connections.
//!   One connection taken from the pool is shared by every publish; the
//!   hub's publisher hands over what queued up meanwhile, which goes as one
//!   pipeline, in order, each event one `PUBLISH` to its room's channel
//!   `{prefix}:room:{id}`, however many members the room has. Every event
//!   carries the publishing instance's random stamp, and an instance drops
//!   its own when Redis hands them back: its hub delivered them already. A connection error drops the shared connection and the publish is
//!   tried once more on a fresh one from the pool, which pings it first
//!   (`test_on_check_out`) and so replaces a dead one. (Pinging on every
//!   publish instead would double the commands; bb8-redis never reports a
//!   multiplexed connection broken by itself.)
//! - **Subscriptions** live on one dedicated pub/sub connection, owned by a
//!   background task. `subscribe`/`unsubscribe` are requests to that task,
//!   answered once Redis confirmed; the task keeps the set of rooms and
//!   forwards messages of those rooms to the [`EventSink`].
//!
//! When the pub/sub connection is lost the task marks the broker
//! unavailable, reconnects with jittered exponential backoff, subscribes
//! every room again, marks it available, and asks the sink to resync (events
//! published in between are gone; sockets catch up from storage). While it is
//! disconnected, `subscribe` and `unsubscribe` record the wish, which the
//! reconnect applies, and return `Ok`: the hub treats a subscribe error as
//! "socket not added", which would turn a Redis outage into failed joins,
//! whereas the resync after reconnecting already delivers whatever the room
//! missed. Publishing while Redis is known to be down fails at once with
//! [`BrokerError::Unavailable`] rather than waiting for a connection
//! timeout, so the publishes queued behind do not wait either (local
//! delivery never waited for Redis).
//!
//! Events travel in a small versioned binary header followed by the frame
//! JSON (see [`encode_event`]).
//!
//! Presence and rate-limit buckets are small Lua scripts run on the same
//! shared command connection ([`state`]); while Redis is down they fail at
//! once like publishes, and callers count locally instead.

mod state;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bb8_redis::RedisConnectionManager;
use chat_core::api::ComponentState;
use chat_core::{RoomId, UserId};
use futures_util::StreamExt as _;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{RedisError, TlsCertificates};
use tokio::sync::{mpsc, oneshot};

use super::{
    Broker, BrokerError, BrokerOptions, ConnId, Event, EventKind, EventSink, Frame, Quota,
    RateCheck,
};

/// How long opening a connection (TCP, TLS, handshake) may take. Short, so
/// that a wrong address or certificate shows as an error at once rather than
/// as bb8's 30 s default timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer one command. An outer bound: bb8-redis
/// opens its connections with redis-rs's defaults (1 s to connect, 500 ms
/// per response).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a publish waits for a pool connection once the pub/sub
/// connection is known lost. bb8 does not report a refused connection to a
/// waiting caller, only its own timeout; while Redis is down that wait would
/// hold up every sender's acknowledgement.
const CHECKOUT_WHEN_SUSPECT: Duration = Duration::from_millis(300);
/// How often the idle pub/sub connection is pinged, to notice a peer that
/// vanished without closing the socket.
const PING_INTERVAL: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Channels per `SUBSCRIBE` when resubscribing, to keep one command small.
const SUBSCRIBE_BATCH: usize = 512;

/// A broker on Redis pub/sub.
pub struct RedisBroker {
    prefix: String,
    /// Stamped on every event this instance publishes, so that its own
    /// subscription drops them (the hub delivered them here already).
    instance: u64,
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What the broker and its subscription task share.
#[derive(Debug)]
struct Shared {
    /// Whether the pub/sub connection is up with every room subscribed.
    subscribed: AtomicBool,
    commands: Commands,
}

/// A request to the subscription task, answered once it is applied (or,
/// while disconnected, recorded).
#[derive(Debug)]
enum Request {
    Subscribe(RoomId, oneshot::Sender<()>),
    Unsubscribe(RoomId, oneshot::Sender<()>),
}

impl RedisBroker {
    /// Connects to the Redis a `redis://` or `rediss://` URL names. With
    /// `options.tls_ca`, a `rediss://` server's certificate is checked
    /// against that CA instead of the system roots.
    ///
    /// Fails if the first pub/sub connection cannot be made within a few
    /// seconds, so that a wrong address or certificate stops the server at
    /// start; after that, outages are survived (see the module docs).
    pub async fn connect(
        url: &str,
        options: &BrokerOptions,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self, BrokerError> {
        let client = client(url, options)?;
        let first = open_pubsub(&client)
            .await
            .map_err(|e| BrokerError::Unavailable(Box::new(e)))?;
        // bb8-redis takes connection info, not a client. The info of a client
        // from `build_with_tls` carries the parsed CA, so the pool's
        // connections trust the same CA as the pub/sub one.
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())
            .map_err(|e| BrokerError::Backend(Box::new(e)))?;
        // Small: publishes share one connection (see `Commands`) and hold a
        // pooled one only while it is validated; the second covers a
        // checkout that overlaps another's validation.
        let pool = bb8::Pool::builder()
            .max_size(2)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .test_on_check_out(true)
            // The pooled connection sits idle in the pool while its clone
            // does the work: reaping it for idleness or age would only open
            // a second socket beside the one in use.
            .idle_timeout(None)
            .max_lifetime(None)
            .error_sink(Box::new(LogErrors))
            .build_unchecked(manager);
        let shared = Arc::new(Shared {
            subscribed: AtomicBool::new(true),
            commands: Commands::new(pool),
        });
        let (requests, receiver) = mpsc::channel(256);
        let (pubsub_sink, stream) = first.split();
        let instance = rand::random::<u64>();
        let task = Subscriptions {
            client,
            instance,
            prefix: options.prefix.clone(),
            sink,
            requests: receiver,
            rooms: HashSet::new(),
            shared: shared.clone(),
        };
        tokio::spawn(task.run(pubsub_sink, stream));
        Ok(Self {
            prefix: options.prefix.clone(),
            instance,
            shared,
            requests,
        })
    }

    /// Runs `command` on the shared command connection, or fails at once
    /// while Redis is known to be down.
    async fn command<T, F>(
        &self,
        command: impl Fn(MultiplexedConnection) -> F,
    ) -> Result<T, BrokerError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let subscribed = self.shared.subscribed.load(Ordering::Acquire);
        // The pub/sub connection is lost and a command or a fresh connection
        // failed too: Redis is down. Trying again would only hold up the
        // commands behind this one; the subscription task's reconnect ends
        // this. (The pub/sub connection alone failing is not enough: Redis
        // may be fine, and a publish that could have reached other
        // instances must not be dropped.)
        if self.shared.commands.is_down() && !subscribed {
            return Err(BrokerError::Unavailable(
                "redis is unreachable; reconnecting".into(),
            ));
        }
        let checkout = if subscribed {
            CONNECT_TIMEOUT
        } else {
            CHECKOUT_WHEN_SUSPECT
        };
        self.shared.commands.execute(checkout, command).await
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<()>) -> Request,
    ) -> Result<(), BrokerError> {
        let (reply, answer) = oneshot::channel();
        let ended = || BrokerError::Backend("the broker's subscription task ended".into());
        self.requests.send(make(reply)).await.map_err(|_| ended())?;
        answer.await.map_err(|_| ended())
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, event: Arc<Event>) -> Result<(), BrokerError> {
        self.publish_many(std::slice::from_ref(&event)).await
    }

    /// One pipeline of `PUBLISH`es, in order, on the shared connection: one
    /// round trip for the lot.
    async fn publish_many(&self, events: &[Arc<Event>]) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        for event in events {
            let payload = encode_event(self.instance, event);
            pipe.cmd("PUBLISH")
                .arg(channel(&self.prefix, event.room))
                .arg(payload)
                .ignore();
        }
        let pipe = &pipe;
        self.command(|mut conn| async move { pipe.query_async::<redis::Value>(&mut conn).await })
            .await
            .map(drop)
    }

    async fn subscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.request(|reply| Request::Subscribe(room, reply)).await
    }

    async fn unsubscribe(&self, room: RoomId) -> Result<(), BrokerError> {
        self.request(|reply| Request::Unsubscribe(room, reply))
            .await
    }

    async fn present(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError> {
        state::present(self, room, user).await
    }

    async fn absent(&self, room: RoomId, user: UserId) -> Result<bool, BrokerError> {
        state::absent(self, room, user).await
    }

    async fn online(&self, room: RoomId) -> Result<Vec<UserId>, BrokerError> {
        state::online(self, room).await
    }

    async fn refresh_presence(
        &self,
        here: &[(RoomId, Vec<UserId>)],
    ) -> Result<Vec<(RoomId, UserId)>, BrokerError> {
        state::refresh_presence(self, here).await
    }

    async fn rate(
        &self,
        key: &str,
        quota: Quota,
        check: RateCheck,
    ) -> Result<Option<Duration>, BrokerError> {
        state::rate(self, key, quota, check).await
    }

    fn state(&self) -> ComponentState {
        if self.shared.subscribed.load(Ordering::Acquire) && !self.shared.commands.is_down() {
            ComponentState::Ok
        } else {
            ComponentState::Unavailable
        }
    }
}

/// The client for `url`, with the CA of `options` for `rediss://`.
fn client(url: &str, options: &BrokerOptions) -> Result<redis::Client, BrokerError> {
    let backend = |e: RedisError| BrokerError::Backend(Box::new(e));
    if url.starts_with("rediss://") {
        // The redis client builds its rustls config from the process's
        // default provider; the server installs ring at start, this covers
        // a broker made without a server (tests, embedding).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let Some(ca) = &options.tls_ca else {
        return redis::Client::open(url).map_err(backend);
    };
    if !url.starts_with("rediss://") {
        // Most likely a missing "s": refuse rather than talk plain text to a
        // server the operator meant to reach over TLS.
        return Err(BrokerError::Backend(
            "a broker TLS CA was given but the broker URL is not rediss://".into(),
        ));
    }
    // Read once at start, before any socket exists: blocking here is fine.
    let root_cert = std::fs::read(ca).map_err(|e| {
        BrokerError::Backend(format!("cannot read the broker CA {}: {e}", ca.display()).into())
    })?;
    redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .map_err(backend)
}

/// A pub/sub connection, within [`CONNECT_TIMEOUT`].
async fn open_pubsub(client: &redis::Client) -> Result<redis::aio::PubSub, RedisError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(result) => result,
        Err(_) => Err(timed_out("connecting to redis")),
    }
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

/// The channel of a room's events.
fn channel(prefix: &str, room: RoomId) -> String {
    format!("{prefix}:room:{}", room.0)
}

/// Logs the pool's connection failures, which bb8 otherwise only reports as
/// a timeout.
#[derive(Debug, Clone, Copy)]
struct LogErrors;

impl bb8::ErrorSink<RedisError> for LogErrors {
    fn sink(&self, error: RedisError) {
        tracing::warn!(%error, "redis command connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(*self)
    }
}

/// The publishing side: a bb8 pool and the connection currently shared.
#[derive(Debug)]
struct Commands {
    pool: bb8::Pool<RedisConnectionManager>,
    // A clone of a pooled multiplexed connection, numbered so that a caller
    // whose request failed drops only the connection it used, not one a
    // concurrent caller already replaced it with. A std Mutex: held for a
    // clone, never across an await.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    /// The last command, or the subscription task's last reconnect attempt,
    /// failed on its connection: Redis may be down.
    down: AtomicBool,
    /// A background probe is checking whether Redis is back.
    probing: AtomicBool,
}

impl Commands {
    fn new(pool: bb8::Pool<RedisConnectionManager>) -> Self {
        Self {
            pool,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection from the pool, validated by a PING, that becomes the
    /// shared one.
    async fn checkout(&self, wait: Duration) -> Result<(u64, MultiplexedConnection), BrokerError> {
        let pooled = match tokio::time::timeout(wait, self.pool.get()).await {
            Ok(Ok(pooled)) => pooled,
            failed => {
                self.down.store(true, Ordering::Release);
                let error: Box<dyn std::error::Error + Send + Sync> = match failed {
                    Ok(Err(e)) => Box::new(e),
                    _ => Box::new(timed_out("getting a redis connection")),
                };
                return Err(BrokerError::Unavailable(error));
            }
        };
        // A multiplexed connection is a handle on one socket: the clone is
        // shared, the pooled original goes back to the pool at once.
        let conn = pooled.clone();
        drop(pooled);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current() = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops the shared connection if it is still `generation`.
    fn forget(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Drops the shared connection, whichever it is.
    fn forget_all(&self) {
        *self.current() = None;
    }

    /// Runs `command` on the shared connection (once more on a fresh one if
    /// the shared one failed), waiting at most `checkout` for a pool
    /// connection if one is needed.
    async fn execute<T, F>(
        &self,
        checkout: Duration,
        command: impl Fn(MultiplexedConnection) -> F,
    ) -> Result<T, BrokerError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let shared = self.current().clone();
        if let Some((generation, conn)) = shared {
            match timed(command(conn)).await {
                Err(e) if is_connection_error(&e) => {
                    // The shared connection may have died long ago (an idle
                    // connection closed by the server): one more try on a
                    // fresh one before calling Redis unavailable.
                    tracing::debug!(error = %e, "redis command failed, retrying on a fresh connection");
                    self.forget(generation);
                }
                other => return self.outcome(other, generation),
            }
        }
        let (generation, conn) = self.checkout(checkout).await?;
        let result = timed(command(conn)).await;
        self.outcome(result, generation)
    }

    fn outcome<T>(&self, result: Result<T, RedisError>, generation: u64) -> Result<T, BrokerError> {
        match result {
            Ok(value) => {
                self.down.store(false, Ordering::Release);
                Ok(value)
            }
            Err(e) if is_connection_error(&e) => {
                self.forget(generation);
                self.down.store(true, Ordering::Release);
                Err(BrokerError::Unavailable(Box::new(e)))
            }
            // Redis answered with an error: the connection is fine.
            Err(e) => Err(BrokerError::Backend(Box::new(e))),
        }
    }
}

/// `command`, failing with a timeout error after [`COMMAND_TIMEOUT`].
async fn timed<T>(command: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
    tokio::time::timeout(COMMAND_TIMEOUT, command)
        .await
        .unwrap_or_else(|_| Err(timed_out("a redis command")))
}

/// Checks, in the background, whether commands work again, so that the
/// reported state recovers without waiting for the next publish.
fn probe_commands(shared: &Arc<Shared>) {
    if shared.commands.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let commands = &shared.commands;
        commands.forget_all();
        if let Ok((generation, mut conn)) = commands.checkout(CONNECT_TIMEOUT).await {
            let ping = redis::cmd("PING");
            let result = timed(ping.query_async::<redis::Value>(&mut conn)).await;
            let _ = commands.outcome(result, generation);
        }
        commands.probing.store(false, Ordering::Release);
    });
}

/// Whether an error says the connection (not the command) failed.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Why the subscription task left its connected loop.
enum Ended {
    /// Every broker handle is gone.
    Shutdown,
    /// The connection failed.
    Lost(RedisError),
}

/// The task that owns the pub/sub connection.
struct Subscriptions {
    client: redis::Client,
    /// This instance's stamp: events carrying it are its own.
    instance: u64,
    prefix: String,
    sink: Arc<dyn EventSink>,
    requests: mpsc::Receiver<Request>,
    /// Every room this instance wants. While connected, each is confirmed
    /// subscribed (a failure to subscribe one is treated as a lost
    /// connection, whose reconnect subscribes them all).
    rooms: HashSet<RoomId>,
    shared: Arc<Shared>,
}

impl Subscriptions {
    async fn run(mut self, mut pubsub: PubSubSink, mut stream: PubSubStream) {
        loop {
            let error = match self.serve(&mut pubsub, &mut stream).await {
                Ended::Shutdown => return,
                Ended::Lost(error) => error,
            };
            self.shared.subscribed.store(false, Ordering::Release);
            tracing::warn!(%error, rooms = self.rooms.len(),
                "redis broker connection lost; reconnecting (local delivery goes on)");
            let started = tokio::time::Instant::now();
            let Some((sink, next)) = self.reconnect().await else {
                return;
            };
            (pubsub, stream) = (sink, next);
            // Redis answers again: publishes start over on a fresh, validated
            // connection instead of failing fast.
            self.shared.commands.forget_all();
            self.shared.commands.down.store(false, Ordering::Release);
            self.shared.subscribed.store(true, Ordering::Release);
            tracing::info!(
                rooms = self.rooms.len(),
                down_ms = started.elapsed().as_millis() as u64,
                "redis broker reconnected and resubscribed; rooms catch up from storage"
            );
            self.sink.resync();
        }
    }

    /// Serves requests and forwards messages until the connection fails or
    /// the broker is dropped.
    async fn serve(&mut self, pubsub: &mut PubSubSink, stream: &mut PubSubStream) -> Ended {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = self.requests.recv() => {
                    let Some(request) = request else {
                        return Ended::Shutdown;
                    };
                    if let Err(error) = self.apply(request, pubsub).await {
                        return Ended::Lost(error);
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Lost(RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "redis closed the pub/sub connection",
                        )));
                    };
                    self.forward(&message);
                }
                _ = ping.tick() => {
                    // The reply is "PONG" or, once subscribed, an array.
                    match tokio::time::timeout(COMMAND_TIMEOUT, pubsub.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Ended::Lost(error),
                        Err(_) => return Ended::Lost(timed_out("a pub/sub ping")),
                    }
                    if self.shared.commands.is_down() {
                        probe_commands(&self.shared);
                    }
                }
            }
        }
    }

    /// Applies a request on a live connection. The room set changes (and
    /// the caller is answered) whatever Redis says: a failure means the
    /// connection is in doubt, and the reconnect applies the set.
    async fn apply(&mut self, request: Request, pubsub: &mut PubSubSink) -> Result<(), RedisError> {
        let (changed, subscribe, room, reply) = match request {
            Request::Subscribe(room, reply) => (self.rooms.insert(room), true, room, reply),
            Request::Unsubscribe(room, reply) => (self.rooms.remove(&room), false, room, reply),
        };
        let result = if changed {
            let name = channel(&self.prefix, room);
            let command = async {
                if subscribe {
                    pubsub.subscribe(name).await
                } else {
                    pubsub.unsubscribe(name).await
                }
            };
            match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
                Ok(result) => result,
                Err(_) => Err(timed_out("a pub/sub subscription change")),
            }
        } else {
            Ok(())
        };
        let _ = reply.send(());
        result
    }

    /// Hands a message to the sink if it decodes and its room is wanted (a
    /// message that was already on its way when the room was unsubscribed
    /// is dropped here).
    fn forward(&self, message: &redis::Msg) {
        match decode_event(message.get_payload_bytes()) {
            Ok((instance, event))
                if instance != self.instance && self.rooms.contains(&event.room) =>
            {
                self.sink.deliver(Arc::new(event));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                channel = message.get_channel_name(),
                error,
                "undecodable broker event dropped"
            ),
        }
    }

    /// Reconnects with jittered exponential backoff and subscribes every
    /// room, serving requests meanwhile (recording them). `None` when the
    /// broker was dropped.
    async fn reconnect(&mut self) -> Option<(PubSubSink, PubSubStream)> {
        let mut backoff = BACKOFF_MIN;
        loop {
            // Half the delay plus a random part of the other half: instances
            // that lost Redis together do not all come back in one instant.
            let half = backoff / 2;
            let pause = half + half.mul_f64(rand::random::<f64>());
            let sleep = tokio::time::sleep(pause);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    request = self.requests.recv() => record(&mut self.rooms, request?),
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);

            let attempt = open_pubsub(&self.client);
            tokio::pin!(attempt);
            let opened = loop {
                tokio::select! {
                    opened = &mut attempt => break opened,
                    request = self.requests.recv() => record(&mut self.rooms, request?),
                }
            };
            let (mut pubsub, stream) = match opened {
                Ok(pubsub) => pubsub.split(),
                Err(error) => {
                    // A fresh connection failed: publishes need not try their
                    // own until this task gets through.
                    self.shared.commands.down.store(true, Ordering::Release);
                    tracing::debug!(%error, "redis broker reconnect failed");
                    continue;
                }
            };
            match self.subscribe_all(&mut pubsub).await {
                Ok(()) => return Some((pubsub, stream)),
                Err(error) => tracing::warn!(%error, "redis broker resubscribe failed"),
            }
        }
    }

    async fn subscribe_all(&self, pubsub: &mut PubSubSink) -> Result<(), RedisError> {
        let channels: Vec<String> = self
            .rooms
            .iter()
            .map(|r| channel(&self.prefix, *r))
            .collect();
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            match tokio::time::timeout(COMMAND_TIMEOUT, pubsub.subscribe(batch)).await {
                Ok(result) => result?,
                Err(_) => return Err(timed_out("resubscribing")),
            }
        }
        Ok(())
    }
}

/// Records a request made while disconnected; the reconnect applies it.
fn record(rooms: &mut HashSet<RoomId>, request: Request) {
    match request {
        Request::Subscribe(room, reply) => {
            rooms.insert(room);
            let _ = reply.send(());
        }
        Request::Unsubscribe(room, reply) => {
            rooms.remove(&room);
            let _ = reply.send(());
        }
    }
}

// The wire format of an event, version 2. Big-endian integers:
//
//   u8 version (2) | u8 kind | u8 flags | u64 instance | i64 room
//   | u64 origin (flag 1) | i64 seq (kind Timeline) | i64 leaving user (flag 2)
//   | frame: UTF-8 JSON, the rest of the payload
//
// Binary rather than JSON: the frame is already JSON and is carried as is,
// without escaping it into another document. A receiver drops (and logs)
// a version it does not know, so a rolling upgrade that changes the format
// loses live events only, which storage catch-up fills. Version 2 added the
// instance (an instance drops its own events) and numbers kinds anew.
const WIRE_VERSION: u8 = 2;
const KIND_TIMELINE: u8 = 0;
const KIND_SIGNAL: u8 = 1;
const KIND_ROOM_DELETED: u8 = 2;
const FLAG_ORIGIN: u8 = 1;
const FLAG_LEAVES: u8 = 2;

/// Serializes an event for Redis, stamped with the publishing `instance`.
fn encode_event(instance: u64, event: &Event) -> Vec<u8> {
    let frame = &event.frame().bytes()[..];
    let mut out = Vec::with_capacity(3 + 5 * 8 + frame.len());
    let (kind, leaves) = match &event.kind {
        EventKind::Timeline { leaves, .. } => (KIND_TIMELINE, *leaves),
        EventKind::Signal { .. } => (KIND_SIGNAL, None),
        EventKind::RoomDeleted { .. } => (KIND_ROOM_DELETED, None),
    };
    let flags = if event.origin.is_some() {
        FLAG_ORIGIN
    } else {
        0
    } | if leaves.is_some() { FLAG_LEAVES } else { 0 };
    out.extend_from_slice(&[WIRE_VERSION, kind, flags]);
    out.extend_from_slice(&instance.to_be_bytes());
    out.extend_from_slice(&event.room.0.to_be_bytes());
    if let Some(origin) = event.origin {
        out.extend_from_slice(&origin.0.to_be_bytes());
    }
    if let EventKind::Timeline { seq, .. } = &event.kind {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    if let Some(user) = leaves {
        out.extend_from_slice(&user.0.to_be_bytes());
    }
    out.extend_from_slice(frame);
    out
}

/// Parses what [`encode_event`] wrote: the publishing instance and the event.
fn decode_event(bytes: &[u8]) -> Result<(u64, Event), &'static str> {
    fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], &'static str> {
        let (head, tail) = rest.split_first_chunk::<N>().ok_or("truncated header")?;
        *rest = tail;
        Ok(*head)
    }
    let mut rest = bytes;
    let [version, kind, flags] = take::<3>(&mut rest)?;
    if version != WIRE_VERSION {
        return Err("unknown wire version");
    }
    if flags & !(FLAG_ORIGIN | FLAG_LEAVES) != 0 {
        return Err("unknown flags");
    }
    let instance = u64::from_be_bytes(take(&mut rest)?);
    let room = RoomId(i64::from_be_bytes(take(&mut rest)?));
    let origin = if flags & FLAG_ORIGIN != 0 {
        Some(ConnId(u64::from_be_bytes(take(&mut rest)?)))
    } else {
        None
    };
    let kind = match kind {
        KIND_TIMELINE => {
            let seq = i64::from_be_bytes(take(&mut rest)?);
            let leaves = if flags & FLAG_LEAVES != 0 {
                Some(UserId(i64::from_be_bytes(take(&mut rest)?)))
            } else {
                None
            };
            EventKind::Timeline {
                seq,
                frame: frame_of(rest)?,
                leaves,
            }
        }
        _ if flags & FLAG_LEAVES != 0 => return Err("unknown flags"),
        KIND_SIGNAL => EventKind::Signal {
            frame: frame_of(rest)?,
        },
        KIND_ROOM_DELETED => EventKind::RoomDeleted {
            frame: frame_of(rest)?,
        },
        _ => return Err("unknown event kind"),
    };
    Ok((instance, Event { room, origin, kind }))
}

fn frame_of(rest: &[u8]) -> Result<Frame, &'static str> {
    Frame::from_utf8(bytes::Bytes::copy_from_slice(rest)).map_err(|_| "frame is not UTF-8")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use chat_core::RoomId;
    use chat_core::api::ComponentState;

    use super::{RedisBroker, client, decode_event, encode_event};
    use crate::broker::conformance::{Bus, RecordingSink, message_event};
    use crate::broker::{
        Broker, BrokerError, BrokerOptions, ConnId, Event, EventKind, EventSink, Frame,
    };

    /// The machine's Redis (SERVICES.md), shared by every test.
    const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
    const HOW_TO_START: &str = "start it with `redis-server --daemonize yes --bind 127.0.0.1 -::1 \
        --port 6379 --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log` \
        (see /work/shared/SERVICES.md)";

    /// A key prefix no other test uses.
    fn unique_prefix() -> String {
        format!("chat-test-{}", uuid::Uuid::new_v4().simple())
    }

    fn options(prefix: String, tls_ca: Option<PathBuf>) -> BrokerOptions {
        BrokerOptions { prefix, tls_ca }
    }

    /// Brokers on the shared Redis under one fresh prefix.
    #[derive(Debug)]
    pub(super) struct SharedRedisBus {
        pub(super) prefix: String,
    }

    impl SharedRedisBus {
        pub(super) fn new() -> Self {
            Self {
                prefix: unique_prefix(),
            }
        }
    }

    #[async_trait::async_trait]
    impl Bus for SharedRedisBus {
        async fn broker(&self, sink: Arc<dyn EventSink>) -> Arc<dyn Broker> {
            match RedisBroker::connect(SHARED_REDIS, &options(self.prefix.clone(), None), sink)
                .await
            {
                Ok(broker) => Arc::new(broker),
                Err(e) => panic!("cannot reach Redis at {SHARED_REDIS} ({e}); {HOW_TO_START}"),
            }
        }
    }

    /// Brokers on a TLS redis-server of the test's own, with a CA the test
    /// generated.
    #[derive(Debug)]
    struct TlsRedisBus {
        server: TestRedis,
        prefix: String,
    }

    impl TlsRedisBus {
        async fn start() -> Self {
            Self {
                server: TestRedis::start(true).await,
                prefix: unique_prefix(),
            }
        }
    }

    #[async_trait::async_trait]
    impl Bus for TlsRedisBus {
        async fn broker(&self, sink: Arc<dyn EventSink>) -> Arc<dyn Broker> {
            let url = self.server.url();
            match RedisBroker::connect(&url, &self.server.options(&self.prefix), sink).await {
                Ok(broker) => Arc::new(broker),
                Err(e) => panic!("cannot connect to the test's TLS redis-server at {url}: {e}"),
            }
        }
    }

    mod plain {
        crate::broker_conformance_tests!(|| async { super::SharedRedisBus::new() });
    }

    mod tls {
        crate::broker_conformance_tests!(super::TlsRedisBus::start);
    }

    /// A CA and a server certificate for `localhost` and `127.0.0.1`, as PEM
    /// files in a temporary directory.
    #[derive(Debug)]
    struct TlsFiles {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    fn generate_tls() -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chat-rs test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        TlsFiles {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            _dir: dir,
        }
    }

    /// A redis-server of the test's own on a free port (TLS-only if asked),
    /// that the test can kill and restart on the same port. Killed when
    /// dropped.
    #[derive(Debug)]
    struct TestRedis {
        port: u16,
        tls: Option<TlsFiles>,
        dir: tempfile::TempDir,
        child: Option<Child>,
    }

    impl TestRedis {
        async fn start(tls: bool) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut server = Self {
                port,
                tls: tls.then(generate_tls),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
            };
            server.restart().await;
            server
        }

        fn url(&self) -> String {
            let scheme = if self.tls.is_some() {
                "rediss"
            } else {
                "redis"
            };
            format!("{scheme}://127.0.0.1:{}", self.port)
        }

        /// The test's CA is passed explicitly: SSL_CERT_FILE (set on this
        /// machine) holds the system roots, which do not know it.
        fn options(&self, prefix: &str) -> BrokerOptions {
            options(prefix.to_owned(), self.tls.as_ref().map(|t| t.ca.clone()))
        }

        /// SIGKILL: connections die without a goodbye, as in a crash.
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts (again) on the same port and waits until it answers PING.
        async fn restart(&mut self) {
            self.kill();
            let port = self.port.to_string();
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path());
            match &self.tls {
                None => {
                    command.args(["--port", &port]);
                }
                Some(tls) => {
                    command
                        .args([
                            "--port",
                            "0",
                            "--tls-port",
                            &port,
                            "--tls-auth-clients",
                            "no",
                        ])
                        .arg("--tls-cert-file")
                        .arg(&tls.cert)
                        .arg("--tls-key-file")
                        .arg(&tls.key)
                        .arg("--tls-ca-cert-file")
                        .arg(&tls.ca);
                }
            }
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (Debian package redis-server, on PATH)");
            self.child = Some(child);
            let client = client(&self.url(), &self.options("ping")).expect("client");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut last_error = String::new();
            while Instant::now() < deadline {
                let ping = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await
                };
                match tokio::time::timeout(Duration::from_secs(2), ping).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => last_error = e.to_string(),
                    Err(_) => last_error = "timed out".to_owned(),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "redis-server on port {} did not answer: {last_error}",
                self.port
            );
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// Polls `ready` every 20 ms; panics with `what` after `limit`.
    async fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ready() {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn rooms_and_seqs(events: &[Arc<Event>]) -> Vec<(i64, Option<i64>)> {
        events.iter().map(|e| (e.room.0, e.seq())).collect()
    }

    /// Redis killed and restarted under two brokers: they report the
    /// outage, fail publishes at once, keep subscribe working, reconnect by
    /// themselves, resubscribe (including what changed during the outage)
    /// and ask for a resync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_redis_restart_and_resubscribes() {
        let started = Instant::now();
        let mut server = TestRedis::start(false).await;
        let prefix = unique_prefix();
        let connect = |sink: Arc<RecordingSink>| {
            let (url, options) = (server.url(), server.options(&prefix));
            async move {
                RedisBroker::connect(&url, &options, sink)
                    .await
                    .expect("connect")
            }
        };
        // One instance publishes, the other listens.
        let broker = connect(Arc::new(RecordingSink::default())).await;
        let sink = Arc::new(RecordingSink::default());
        let listener = connect(sink.clone()).await;
        for room in [1, 2] {
            listener.subscribe(RoomId(room)).await.expect("subscribe");
            broker
                .publish(message_event(room, 1))
                .await
                .expect("publish");
        }
        sink.wait_for(2).await;
        assert_eq!(broker.state(), ComponentState::Ok);

        server.kill();
        wait_until(
            Duration::from_secs(5),
            "the broker notices the outage",
            || broker.state() == ComponentState::Unavailable,
        )
        .await;
        let t = Instant::now();
        let first = broker.publish(message_event(1, 2)).await;
        let first_took = t.elapsed();
        assert!(
            matches!(first, Err(BrokerError::Unavailable(_))),
            "{first:?}"
        );
        assert!(
            first_took < Duration::from_secs(1),
            "first failed publish took {first_took:?}"
        );
        let t = Instant::now();
        let second = broker.publish(message_event(1, 3)).await;
        assert!(
            matches!(second, Err(BrokerError::Unavailable(_))),
            "{second:?}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "publish fails fast once Redis is known down: {:?}",
            t.elapsed()
        );
        // Subscription changes during the outage are recorded, not refused,
        // and do not wait for Redis.
        let t = Instant::now();
        listener
            .subscribe(RoomId(3))
            .await
            .expect("subscribe while down");
        listener
            .unsubscribe(RoomId(2))
            .await
            .expect("unsubscribe while down");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(sink.resyncs(), 0);

        let restarting = Instant::now();
        server.restart().await;
        wait_until(
            Duration::from_secs(10),
            "the brokers reconnect and resync",
            || {
                broker.state() == ComponentState::Ok
                    && listener.state() == ComponentState::Ok
                    && sink.resyncs() >= 1
            },
        )
        .await;
        let reconnect_took = restarting.elapsed();

        // Rooms subscribed before (1) and during (3) the outage get events
        // again; the one unsubscribed during it (2) does not.
        let before = sink.events().len();
        for (room, seq) in [(1, 4), (2, 2), (3, 1), (1, 5)] {
            broker
                .publish(message_event(room, seq))
                .await
                .expect("publish after the restart");
        }
        let got = sink.wait_for(before + 3).await;
        assert_eq!(
            rooms_and_seqs(&got[before..]),
            vec![(1, Some(4)), (3, Some(1)), (1, Some(5))]
        );
        eprintln!(
            "outage test: first failed publish {first_took:?}, reconnect after restart {reconnect_took:?}, total {:?}",
            started.elapsed()
        );
    }

    /// A broker whose Redis is not there fails to connect, quickly, with
    /// `Unavailable` (a server does not start on a wrong address).
    #[tokio::test]
    async fn connect_fails_fast_without_redis() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let t = Instant::now();
        let result = RedisBroker::connect(
            &format!("redis://127.0.0.1:{port}"),
            &options(unique_prefix(), None),
            Arc::new(RecordingSink::default()),
        )
        .await;
        assert!(
            matches!(result, Err(BrokerError::Unavailable(_))),
            "{result:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    /// Without the test's CA (system roots only), the TLS server is refused:
    /// the CA option is what makes it trusted.
    #[tokio::test]
    async fn tls_needs_the_ca() {
        let server = TestRedis::start(true).await;
        let t = Instant::now();
        let result = RedisBroker::connect(
            &server.url(),
            &options(unique_prefix(), None),
            Arc::new(RecordingSink::default()),
        )
        .await;
        let error = result.expect_err("a certificate of an unknown CA is refused");
        assert!(
            matches!(error, BrokerError::Unavailable(_))
                && error.to_string().contains("UnknownIssuer"),
            "{error}"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    /// A CA given with a plain `redis://` URL is a configuration error.
    #[tokio::test]
    async fn a_ca_with_a_plain_url_is_refused() {
        let result = RedisBroker::connect(
            SHARED_REDIS,
            &options(unique_prefix(), Some(PathBuf::from("/nonexistent/ca.pem"))),
            Arc::new(RecordingSink::default()),
        )
        .await;
        assert!(matches!(result, Err(BrokerError::Backend(_))), "{result:?}");
    }

    #[test]
    fn every_kind_round_trips_through_the_wire_format() {
        let frame = || Frame::from_utf8("{\"é\":\"✓\"}".into()).expect("UTF-8");
        let events = [
            (
                EventKind::Timeline {
                    seq: 7,
                    frame: frame(),
                    leaves: None,
                },
                Some(ConnId(u64::MAX)),
            ),
            (
                EventKind::Timeline {
                    seq: 8,
                    frame: frame(),
                    leaves: Some(chat_core::UserId(-3)),
                },
                None,
            ),
            (EventKind::Signal { frame: frame() }, None),
            (EventKind::RoomDeleted { frame: frame() }, Some(ConnId(1))),
        ];
        for (kind, origin) in events {
            let event = Event {
                room: RoomId(i64::MAX),
                kind,
                origin,
            };
            let bytes = encode_event(u64::MAX - 1, &event);
            assert_eq!(decode_event(&bytes), Ok((u64::MAX - 1, event)));
        }
    }

    #[test]
    fn malformed_payloads_are_rejected_not_panicked_on() {
        let good = encode_event(5, &message_event(1, 2));
        // Every truncation of the header, a wrong version, unknown flags and
        // kind, and a frame that is not UTF-8.
        for len in 0..35 {
            assert!(decode_event(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut wrong = good.clone();
        wrong[0] = 1;
        assert_eq!(decode_event(&wrong), Err("unknown wire version"));
        let mut wrong = good.clone();
        wrong[2] |= 0x80;
        assert_eq!(decode_event(&wrong), Err("unknown flags"));
        let mut wrong = good.clone();
        wrong[1] = 9;
        assert_eq!(decode_event(&wrong), Err("unknown event kind"));
        let mut wrong = good;
        wrong.push(0xFF);
        assert_eq!(decode_event(&wrong), Err("frame is not UTF-8"));
    }
}
