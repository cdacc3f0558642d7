//! `chat_connection`: the live side (one WebSocket for many rooms), its
//! events delivered to a C callback from a library-owned thread.
//!
//! A task on the client's runtime (the "pump") owns the
//! [`Connection`]: it runs the blocking calls' commands one at a time and,
//! while a callback is registered, hands each event to it. Callbacks thus
//! run on one of the runtime's worker threads (named `chat-ffi`), one at a
//! time per connection, never on the caller's thread.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;

use ::chat_client::chat_core::frame::ServerFrame;
use ::chat_client::{
    ClientError, Connection, ConnectionState, Event, Message, RoomId, RoomRef, Seq,
};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::chat_client;
use crate::error::{chat_code, client_error, describe, fail};

/// Receives each event of a connection as JSON text (valid only during the
/// call; copy what you keep), with the userdata given at registration.
///
/// Runs on a thread owned by the library, one call at a time per
/// connection. It must not call the blocking functions of this library
/// (`chat_connection_send`, `chat_login`, ...) nor free a handle; it may
/// call `chat_connection_send_async`, `chat_string_free` and
/// `chat_last_error_message`, which do not block.
///
/// The JSON is an object with a `"type"`: `"message"` (`"message"`: the
/// wire message), `"member"` (`room`, `seq`, `user`, `change`: `"joined"`
/// or `"left"`, `created_at`), `"read"` (`room`, `user`, `seq`), `"typing"` (`room`,
/// `user`), `"presence"` (`room`, `user`, `status`), `"room_deleted"`
/// (`room`), `"state"` (`state`: `"connecting"`, `"connected"`,
/// `"reconnecting"`, `"closed"`), or `"other"` for kinds added later.
#[allow(non_camel_case_types)]
pub type chat_event_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event_json: *const c_char)>;

/// Completes a `chat_connection_send_async`: `code` is `CHAT_OK` and `seq`
/// the message's `seq`, or a failure with `error_message` (else NULL) saying
/// why; the string is valid only during the call. Runs on the library's
/// thread, with the same restrictions as `chat_event_callback`.
#[allow(non_camel_case_types)]
pub type chat_send_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        code: chat_code,
        seq: i64,
        error_message: *const c_char,
    ),
>;

/// A live connection (opaque). Created by `chat_connect`, freed by
/// `chat_connection_free`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct chat_connection {
    runtime: Arc<Runtime>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    // Dropped on free: the pump stops waiting for acks and ends.
    stop: Option<watch::Sender<()>>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

/// A registered callback and its userdata.
#[derive(Debug, Clone, Copy)]
struct Callback {
    f: unsafe extern "C" fn(*mut c_void, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: the C caller promises, by registering it, that the callback may
// be called with `userdata` from the library's thread.
unsafe impl Send for Callback {}

/// A send completion and its userdata.
#[derive(Debug, Clone, Copy)]
struct Completion {
    f: unsafe extern "C" fn(*mut c_void, chat_code, i64, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: as for `Callback`.
unsafe impl Send for Completion {}

#[derive(Debug)]
enum Command {
    SendAsync(String, String, Completion),
    Subscribe(String, oneshot::Sender<Result<RoomId, ClientError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), ClientError>>),
    State(oneshot::Sender<ConnectionState>),
    Send(
        String,
        String,
        oneshot::Sender<Result<Message, ClientError>>,
    ),
    MarkRead(RoomId, Seq, oneshot::Sender<Result<(), ClientError>>),
    Listen(Callback, oneshot::Sender<u64>),
    Unlisten(u64, oneshot::Sender<()>),
}

/// Resolves once the handle is freed (its `watch::Sender` dropped).
async fn stopped(stop: &mut watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

/// `fut`, or `Closed` if the handle is freed first (a send waiting for a
/// reconnect must not make `chat_connection_free` hang).
async fn or_stopped<T>(
    stop: &mut watch::Receiver<()>,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::select! {
        result = fut => result,
        () = stopped(stop) => Err(ClientError::Closed),
    }
}

/// Owns the connection until the handle is freed, then fails what is still
/// queued with `Closed` and closes the connection.
async fn pump(
    mut conn: Connection,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<()>,
) {
    let mut listeners: Vec<(u64, Callback)> = Vec::new();
    let mut next_id = 0_u64;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            command = commands.recv() => match command {
                None => break,
                Some(Command::Subscribe(room, reply)) => {
                    let result = or_stopped(&mut stop, conn.subscribe(RoomRef::parse(&room))).await;
                    let _ = reply.send(result);
                }
                Some(Command::Unsubscribe(room, reply)) => {
                    let result = or_stopped(&mut stop, conn.unsubscribe(RoomRef::parse(&room))).await;
                    let _ = reply.send(result);
                }
                Some(Command::State(reply)) => {
                    let _ = reply.send(conn.state());
                }
                Some(Command::Send(room, body, reply)) => {
                    let result = or_stopped(&mut stop, conn.send(RoomRef::parse(&room), body)).await;
                    let _ = reply.send(result);
                }
                Some(Command::SendAsync(room, body, done)) => {
                    let result = or_stopped(&mut stop, conn.send(RoomRef::parse(&room), body)).await;
                    complete(done, result);
                }
                Some(Command::MarkRead(room, seq, reply)) => {
                    let _ = reply.send(or_stopped(&mut stop, conn.mark_read(room, seq)).await);
                }
                Some(Command::Listen(callback, reply)) => {
                    next_id += 1;
                    listeners.push((next_id, callback));
                    let _ = reply.send(next_id);
                }
                Some(Command::Unlisten(id, reply)) => {
                    listeners.retain(|(listener, _)| *listener != id);
                    let _ = reply.send(());
                }
            },
            event = conn.next_event(), if !listeners.is_empty() => {
                let Some(event) = event else { break };
                for (_, callback) in &listeners {
                    deliver(*callback, &event);
                }
            }
        }
    }
    // Queued sends still complete, each exactly once, as closed.
    commands.close();
    while let Ok(command) = commands.try_recv() {
        if let Command::SendAsync(_, _, done) = command {
            complete(done, Err(ClientError::Closed));
        }
    }
    conn.close().await;
}

fn deliver(cb: Callback, event: &Event) {
    let json = event_json(event).to_string();
    let Ok(json) = CString::new(json) else { return };
    // A panic must not unwind out of the pump (it would end delivery
    // silently); a callback that unwinds is the caller's bug and aborts.
    // SAFETY: the caller registered `f` with `userdata` for this purpose;
    // `json` outlives the call.
    unsafe { (cb.f)(cb.userdata, json.as_ptr()) };
}

fn complete(done: Completion, result: Result<Message, ClientError>) {
    let (code, seq, error) = match result {
        Ok(message) => (chat_code::CHAT_OK, message.seq, None),
        Err(e) => {
            let code = client_error(&e);
            let message = describe(&e).replace('\0', "");
            (code, 0, CString::new(message).ok())
        }
    };
    let error_ptr = error.as_ref().map_or(std::ptr::null(), |e| e.as_ptr());
    // SAFETY: the caller registered `f` with `userdata` for this call;
    // `error` outlives it.
    unsafe { (done.f)(done.userdata, code, seq, error_ptr) };
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Message(m) => json!({ "type": "message", "message": m }),
        // The same JSON as the server's `member` and `room_updated` frames.
        Event::Member(m) => serde_json::to_value(ServerFrame::Member(m.clone()))
            .unwrap_or_else(|_| json!({ "type": "other" })),
        Event::RoomUpdated(u) => serde_json::to_value(ServerFrame::RoomUpdated(u.clone()))
            .unwrap_or_else(|_| json!({ "type": "other" })),
        // The same JSON as the server's frames.
        Event::MessageEdited(u) => {
            json!({ "type": "message_edited", "room": u.room, "seq": u.seq, "user": u.user,
                    "created_at": u.created_at, "message": u.message })
        }
        Event::MessageDeleted(u) => {
            json!({ "type": "message_deleted", "room": u.room, "seq": u.seq, "user": u.user,
                    "created_at": u.created_at, "message": u.message })
        }
        Event::MessagePinned(u) => {
            json!({ "type": "message_pinned", "room": u.room, "seq": u.seq, "user": u.user,
                    "created_at": u.created_at, "message": u.message })
        }
        Event::MessageUnpinned(u) => {
            json!({ "type": "message_unpinned", "room": u.room, "seq": u.seq, "user": u.user,
                    "created_at": u.created_at, "message": u.message })
        }
        Event::Reaction(r) => {
            json!({ "type": "reaction", "room": r.room, "seq": r.seq, "user": r.user,
                    "created_at": r.created_at, "key": r.key, "added": r.added,
                    "message": r.message })
        }
        Event::Read { room, user, seq } => {
            json!({ "type": "read", "room": room, "user": user, "seq": seq })
        }
        Event::Typing { room, user } => json!({ "type": "typing", "room": room, "user": user }),
        Event::Presence { room, user, status } => {
            json!({ "type": "presence", "room": room, "user": user, "status": status })
        }
        Event::RoomDeleted { room } => json!({ "type": "room_deleted", "room": room }),
        Event::StateChanged(state) => {
            let state = match state {
                ConnectionState::Connecting => "connecting",
                ConnectionState::Connected => "connected",
                ConnectionState::Reconnecting { .. } => "reconnecting",
                ConnectionState::Closed => "closed",
                _ => "other",
            };
            json!({ "type": "state", "state": state })
        }
        _ => json!({ "type": "other" }),
    }
}

impl chat_connection {
    /// Sends `command` to the pump and blocks for its answer.
    fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, chat_code> {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.as_ref().map(|c| c.send(command(reply)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(fail(chat_code::CHAT_CLOSED, "the connection is closed"));
        }
        self.runtime
            .block_on(answer)
            .map_err(|_| fail(chat_code::CHAT_CLOSED, "the connection is closed"))
    }
}

impl Drop for chat_connection {
    fn drop(&mut self) {
        // Stopping and closing the channel end the pump, which closes the
        // connection.
        self.stop = None;
        self.commands = None;
        if let Some(pump) = self.pump.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // On a runtime thread (a callback, against the contract):
                // waiting would panic; the pump ends on its own.
                return;
            }
            // Waiting for the pump guarantees no callback runs after free.
            let _ = self.runtime.block_on(pump);
        }
    }
}

/// Borrows the connection behind `$ptr`, or returns `CHAT_INVALID_ARG`.
macro_rules! conn_ref {
    ($ptr:expr) => {{
        non_null!($ptr, "conn");
        // SAFETY: not NULL; the caller promises a live handle from
        // `chat_connect`, not freed during this call.
        unsafe { &*$ptr }
    }};
}

/// Opens a live connection for the logged-in `client` into `*out`; blocks
/// until the first socket is open. Free it with `chat_connection_free`
/// (before or after the client: it keeps the runtime alive).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_connect(
    client: *const chat_client,
    out: *mut *mut chat_connection,
) -> chat_code {
    ffi_guard!({
        non_null!(client, "client");
        non_null!(out, "out");
        // SAFETY: not NULL; the caller promises a live client handle.
        let client = unsafe { &*client };
        let conn = match client.runtime.block_on(client.client.connect()) {
            Ok(conn) => conn,
            Err(e) => return client_error(&e),
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let (stop, stop_receiver) = watch::channel(());
        let pump = client.runtime.spawn(pump(conn, receiver, stop_receiver));
        let handle = chat_connection {
            runtime: Arc::clone(&client.runtime),
            commands: Some(commands),
            stop: Some(stop),
            pump: Some(pump),
        };
        // SAFETY: not NULL (checked above); the caller promises writable
        // memory.
        unsafe { *out = Box::into_raw(Box::new(handle)) };
        chat_code::CHAT_OK
    })
}

/// Closes and frees a connection. NULL is ignored. Blocks until the event
/// thread has stopped: once it returns, no callback of this connection
/// runs, and its userdata may be freed. Must not be called from a callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_connection_free(conn: *mut chat_connection) {
    ffi_guard!(
        {
            if !conn.is_null() {
                // SAFETY: the caller promises a handle from `chat_connect`,
                // freed once.
                drop(unsafe { Box::from_raw(conn) });
            }
        },
        ()
    )
}

/// Subscribes to `room` (an id in decimal, or a name); blocks until the
/// server confirmed. `*out_room_id` (may be NULL) receives the room's id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_subscribe(
    conn: *const chat_connection,
    room: *const c_char,
    out_room_id: *mut i64,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        let room = c_str!(room, "room").to_owned();
        match conn.call(|reply| Command::Subscribe(room, reply)) {
            Ok(Ok(id)) => {
                if !out_room_id.is_null() {
                    // SAFETY: not NULL; the caller promises writable memory.
                    unsafe { *out_room_id = id.0 };
                }
                chat_code::CHAT_OK
            }
            Ok(Err(e)) => client_error(&e),
            Err(code) => code,
        }
    })
}

/// Stops receiving `room` (an id in decimal, or a name); blocks until the
/// server confirmed. Once it returns, no event of the room is delivered.
/// The caller stays a member (see `chat_leave_room`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_unsubscribe(
    conn: *const chat_connection,
    room: *const c_char,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        let room = c_str!(room, "room").to_owned();
        match conn.call(|reply| Command::Unsubscribe(room, reply)) {
            Ok(Ok(())) => chat_code::CHAT_OK,
            Ok(Err(e)) => client_error(&e),
            Err(code) => code,
        }
    })
}

/// The state of a connection's socket, from `chat_connection_state`. The
/// same changes arrive as `"state"` events through `chat_listen`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum chat_state {
    /// Opening the first socket.
    CHAT_STATE_CONNECTING = 0,
    /// The socket is open; sends go out at once.
    CHAT_STATE_CONNECTED = 1,
    /// The socket dropped and is being reopened; sends wait for it.
    CHAT_STATE_RECONNECTING = 2,
    /// Closed for good.
    CHAT_STATE_CLOSED = 3,
}

/// The connection's current state, into `*out`. Answered between the
/// connection's other blocking calls: while a `chat_connection_send` waits
/// for a reconnect, this waits too (the state events do not).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_connection_state(
    conn: *const chat_connection,
    out: *mut chat_state,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        non_null!(out, "out");
        let state = match conn.call(Command::State) {
            Ok(ConnectionState::Connecting) => chat_state::CHAT_STATE_CONNECTING,
            Ok(ConnectionState::Connected) => chat_state::CHAT_STATE_CONNECTED,
            Ok(ConnectionState::Reconnecting { .. }) => chat_state::CHAT_STATE_RECONNECTING,
            // A state added to the client later: nearest is "not usable".
            Ok(_) => chat_state::CHAT_STATE_CLOSED,
            // The event thread has ended: the connection is closed.
            Err(_) => chat_state::CHAT_STATE_CLOSED,
        };
        // SAFETY: not NULL (checked above); the caller promises writable
        // memory.
        unsafe { *out = state };
        chat_code::CHAT_OK
    })
}

/// Sends `body` to `room` over the connection and blocks until the server
/// acknowledged it; `*out_seq` (may be NULL) receives its `seq`. Events
/// are not delivered while it waits (they are buffered).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_connection_send(
    conn: *const chat_connection,
    room: *const c_char,
    body: *const c_char,
    out_seq: *mut i64,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        let room = c_str!(room, "room").to_owned();
        let body = c_str!(body, "body").to_owned();
        match conn.call(|reply| Command::Send(room, body, reply)) {
            Ok(Ok(message)) => {
                if !out_seq.is_null() {
                    // SAFETY: not NULL; the caller promises writable memory.
                    unsafe { *out_seq = message.seq };
                }
                chat_code::CHAT_OK
            }
            Ok(Err(e)) => client_error(&e),
            Err(code) => code,
        }
    })
}

/// Queues `body` for `room` and returns at once; `done` is called with the
/// outcome (the server's ack, or the failure) from the library's thread.
/// Every queued send completes exactly once, at the latest before
/// `chat_connection_free` returns; sends not yet acknowledged by then
/// complete with `CHAT_CLOSED` (the message may or may not have been
/// stored). On any code
/// but `CHAT_OK`, `done` is not called.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_connection_send_async(
    conn: *const chat_connection,
    room: *const c_char,
    body: *const c_char,
    done: chat_send_callback,
    userdata: *mut c_void,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        let room = c_str!(room, "room").to_owned();
        let body = c_str!(body, "body").to_owned();
        let Some(f) = done else {
            return fail(chat_code::CHAT_INVALID_ARG, "`done` is NULL");
        };
        let command = Command::SendAsync(room, body, Completion { f, userdata });
        match conn.commands.as_ref().map(|c| c.send(command)) {
            Some(Ok(())) => chat_code::CHAT_OK,
            _ => fail(chat_code::CHAT_CLOSED, "the connection is closed"),
        }
    })
}

/// Marks room `room_id` read up to `seq`; blocks until the server took it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_mark_read(
    conn: *const chat_connection,
    room_id: i64,
    seq: i64,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        match conn.call(|reply| Command::MarkRead(RoomId(room_id), seq, reply)) {
            Ok(Ok(())) => chat_code::CHAT_OK,
            Ok(Err(e)) => client_error(&e),
            Err(code) => code,
        }
    })
}

/// An event callback's registration (opaque). Created by `chat_listen`;
/// `chat_listener_free` unregisters it.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct chat_listener {
    runtime: Arc<Runtime>,
    // Weak: a registration does not keep the connection's event thread alive.
    commands: mpsc::WeakUnboundedSender<Command>,
    id: u64,
}

impl Drop for chat_listener {
    fn drop(&mut self) {
        let Some(commands) = self.commands.upgrade() else {
            return; // The connection is gone, and its event thread with it.
        };
        let (reply, answer) = oneshot::channel();
        let sent = commands.send(Command::Unlisten(self.id, reply));
        drop(commands);
        if sent.is_ok() && tokio::runtime::Handle::try_current().is_err() {
            // Once the event thread answers, it no longer calls this one.
            let _ = self.runtime.block_on(answer);
        }
    }
}

/// Registers `callback` for every event of the connection, with `userdata`
/// passed back, into `*out`; free the registration with
/// `chat_listener_free`. Events are read only while at least one callback
/// is registered (they wait in the connection's buffer before). Callbacks
/// run on a library thread, one at a time, in registration order.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_listen(
    conn: *const chat_connection,
    callback: chat_event_callback,
    userdata: *mut c_void,
    out: *mut *mut chat_listener,
) -> chat_code {
    ffi_guard!({
        let conn = conn_ref!(conn);
        non_null!(out, "out");
        let Some(f) = callback else {
            return fail(chat_code::CHAT_INVALID_ARG, "`callback` is NULL");
        };
        let Some(commands) = conn.commands.as_ref().map(mpsc::UnboundedSender::downgrade) else {
            return fail(chat_code::CHAT_CLOSED, "the connection is closed");
        };
        match conn.call(|reply| Command::Listen(Callback { f, userdata }, reply)) {
            Ok(id) => {
                let listener = chat_listener {
                    runtime: Arc::clone(&conn.runtime),
                    commands,
                    id,
                };
                // SAFETY: not NULL (checked above); the caller promises
                // writable memory.
                unsafe { *out = Box::into_raw(Box::new(listener)) };
                chat_code::CHAT_OK
            }
            Err(code) => code,
        }
    })
}

/// Unregisters and frees a registration. NULL is ignored. Blocks until the
/// event thread has dropped the callback: once it returns, the callback is
/// not called again and its userdata may be freed. May be called before or
/// after `chat_connection_free`; must not be called from a callback of
/// another connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_listener_free(listener: *mut chat_listener) {
    ffi_guard!(
        {
            if !listener.is_null() {
                // SAFETY: the caller promises a handle from `chat_listen`,
                // freed once.
                drop(unsafe { Box::from_raw(listener) });
            }
        },
        ()
    )
}
