//! `chat_client`: one server, one session, its own tokio runtime.

use std::ffi::{CStr, c_char};
use std::sync::Arc;

use ::chat_client::{ChatClient, ClientOptions, HistoryQuery, RegisterRequest, RoomRef};
use tokio::runtime::Runtime;

use crate::error::{chat_code, client_error, fail, put_json};

/// A client of one chat-rs server (opaque). Created by `chat_client_new`,
/// freed by `chat_client_free`. It owns a multi-thread tokio runtime on
/// which its calls run; the blocking calls may be made from any thread
/// except one of the library's own (a callback).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct chat_client {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) client: ChatClient,
}

impl chat_client {
    fn new(base_url: &str, options: ClientOptions) -> Result<Self, chat_code> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chat-ffi")
            .enable_all()
            .build()
            .map_err(|e| {
                fail(
                    chat_code::CHAT_OTHER,
                    format!("cannot start the runtime: {e}"),
                )
            })?;
        let client = {
            let _guard = runtime.enter();
            ChatClient::with_options(base_url, options).map_err(|e| client_error(&e))?
        };
        Ok(Self {
            runtime: Arc::new(runtime),
            client,
        })
    }
}

/// Reads an optional C string: NULL is `None`.
pub(crate) fn opt_str(ptr: *const c_char, name: &str) -> Result<Option<&str>, chat_code> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL; the caller promises a NUL-terminated string that
    // lives for the call.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map(Some)
        .map_err(|_| {
            fail(
                chat_code::CHAT_INVALID_ARG,
                format!("`{name}` is not valid UTF-8"),
            )
        })
}

fn put_client(out: *mut *mut chat_client, result: Result<chat_client, chat_code>) -> chat_code {
    match result {
        Ok(client) => {
            // SAFETY: `out` was checked not NULL by the caller of this
            // function; the C caller promises it points to writable memory.
            unsafe { *out = Box::into_raw(Box::new(client)) };
            chat_code::CHAT_OK
        }
        Err(code) => code,
    }
}

/// Creates a client for the server at `base_url` (e.g.
/// `"https://chat.example.com"`) with default options, into `*out`.
/// Free it with `chat_client_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_client_new(
    base_url: *const c_char,
    out: *mut *mut chat_client,
) -> chat_code {
    ffi_guard!({
        let base_url = c_str!(base_url, "base_url");
        non_null!(out, "out");
        put_client(out, chat_client::new(base_url, ClientOptions::default()))
    })
}

/// Like `chat_client_new`, with TLS options: `root_ca_pem` (may be NULL)
/// is a PEM CA certificate trusted in addition to the system's;
/// `danger_accept_invalid_certs` turns off certificate checks (tests
/// only).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_client_new_with_tls(
    base_url: *const c_char,
    root_ca_pem: *const c_char,
    danger_accept_invalid_certs: bool,
    out: *mut *mut chat_client,
) -> chat_code {
    ffi_guard!({
        let base_url = c_str!(base_url, "base_url");
        non_null!(out, "out");
        let root_ca_pem = match opt_str(root_ca_pem, "root_ca_pem") {
            Ok(pem) => pem,
            Err(code) => return code,
        };
        let mut options =
            ClientOptions::default().danger_accept_invalid_certs(danger_accept_invalid_certs);
        if let Some(pem) = root_ca_pem {
            options = options.root_ca_pem(pem.as_bytes().to_vec());
        }
        put_client(out, chat_client::new(base_url, options))
    })
}

/// Like `chat_client_new_with_tls`, the CA read from the PEM file at
/// `root_ca_path` (e.g. one shipped with an app or written by a server
/// started with `--tls-self-signed`). A file that cannot be read is
/// `CHAT_INVALID_ARG`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_client_new_with_ca_file(
    base_url: *const c_char,
    root_ca_path: *const c_char,
    out: *mut *mut chat_client,
) -> chat_code {
    ffi_guard!({
        let base_url = c_str!(base_url, "base_url");
        let path = c_str!(root_ca_path, "root_ca_path");
        non_null!(out, "out");
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => {
                return fail(
                    chat_code::CHAT_INVALID_ARG,
                    format!("cannot read the CA file {path}: {e}"),
                );
            }
        };
        put_client(
            out,
            chat_client::new(base_url, ClientOptions::default().root_ca_pem(pem)),
        )
    })
}

/// Frees a client and stops its runtime. NULL is ignored. Connections
/// made from it keep the runtime alive until they are freed. Must not be
/// called from a callback of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_client_free(client: *mut chat_client) {
    ffi_guard!(
        {
            if !client.is_null() {
                // SAFETY: the caller promises a handle from `chat_client_new`,
                // freed once.
                drop(unsafe { Box::from_raw(client) });
            }
        },
        ()
    )
}

/// Creates an account. `display_name` may be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_register(
    client: *const chat_client,
    username: *const c_char,
    email: *const c_char,
    password: *const c_char,
    display_name: *const c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let username = c_str!(username, "username");
        let email = c_str!(email, "email");
        let password = c_str!(password, "password");
        let display_name = match opt_str(display_name, "display_name") {
            Ok(name) => name,
            Err(code) => return code,
        };
        let request = RegisterRequest {
            username: username.to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: display_name.map(str::to_owned),
        };
        match client.runtime.block_on(client.client.register(request)) {
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Logs in by username; the session is kept in the client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_login(
    client: *const chat_client,
    username: *const c_char,
    password: *const c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let username = c_str!(username, "username");
        let password = c_str!(password, "password");
        match client
            .runtime
            .block_on(client.client.login(username, password))
        {
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Ends the session on the server and forgets it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_logout(client: *const chat_client) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        match client.runtime.block_on(client.client.logout()) {
            Ok(()) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Sends `body` to `room` (an id in decimal, or a name) over HTTP and
/// blocks until the server stored it; `*out_seq` (may be NULL) receives
/// its `seq` in the room.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_send_http(
    client: *const chat_client,
    room: *const c_char,
    body: *const c_char,
    out_seq: *mut i64,
) -> chat_code {
    // SAFETY: the caller's promises for these pointers are the ones
    // `chat_send_message` asks for; no id is wanted.
    unsafe { crate::messages::chat_send_message(client, room, body, std::ptr::null_mut(), out_seq) }
}

/// A page of `room`'s history as JSON text into `*out_json` (free it with
/// `chat_string_free`): `{"chat_history":[message...],"has_more":bool}`,
/// oldest first, each message as the server's wire format.
///
/// `before` / `after` (`seq`s; 0 or less for none) and `limit` (0 for
/// the server's default) select the page.
///
/// JSON rather than an array of C structs: the wire format is already
/// versioned and may grow fields without breaking callers, and there is
/// no struct layout (nor its ownership rules) to keep stable in the ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_history_json(
    client: *const chat_client,
    room: *const c_char,
    before: i64,
    after: i64,
    limit: u32,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = c_str!(room, "room");
        non_null!(out_json, "out_json");
        let mut query = HistoryQuery::new();
        if before > 0 {
            query = query.before(before);
        }
        if after > 0 {
            query = query.after(after);
        }
        if limit > 0 {
            query = query.limit(limit);
        }
        let page = match client
            .runtime
            .block_on(client.client.history(RoomRef::parse(room), query))
        {
            Ok(page) => page,
            Err(e) => return client_error(&e),
        };
        put_json(out_json, serde_json::to_string(&page), "the history")
    })
}

/// The number of unread messages over all of the user's rooms, into
/// `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_unread_count(client: *const chat_client, out: *mut u64) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out, "out");
        match client.runtime.block_on(client.client.unread_count()) {
            Ok(count) => {
                // SAFETY: not NULL (checked above); the caller promises
                // writable memory.
                unsafe { *out = count };
                chat_code::CHAT_OK
            }
            Err(e) => client_error(&e),
        }
    })
}

/// The logged-in user's id into `*out` (what mentions name).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_me_id(client: *const chat_client, out: *mut i64) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out, "out");
        match client.runtime.block_on(client.client.me()) {
            Ok(me) => {
                // SAFETY: not NULL (checked above); the caller promises
                // writable memory.
                unsafe { *out = me.id.get() };
                chat_code::CHAT_OK
            }
            Err(e) => client_error(&e),
        }
    })
}
