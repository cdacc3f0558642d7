//! One message over HTTP: sending with its id, editing, deleting,
//! reacting. Each change answers the message as it now stands, as JSON
//! text (the server's wire format; see `chat_history_json` for why JSON).

use std::ffi::c_char;

use ::chat_client::chat_core::MessageId;
use ::chat_client::{
    ClientError, HistoryQuery, Message, RoomRef, SendOptions, SendResponse, UserId,
};

use crate::client::chat_client;
use crate::error::{chat_code, client_error, fail, put_json};

fn message_id(id: i64) -> Result<MessageId, chat_code> {
    if id > 0 {
        Ok(MessageId(id))
    } else {
        Err(fail(
            chat_code::CHAT_INVALID_ARG,
            format!("`message_id` must be positive, not {id}"),
        ))
    }
}

/// The answer of a change: the message as JSON into `*out_json` when it is
/// not NULL.
fn answer(result: Result<Message, ClientError>, out_json: *mut *mut c_char) -> chat_code {
    match result {
        Ok(_) if out_json.is_null() => chat_code::CHAT_OK,
        Ok(message) => put_json(out_json, serde_json::to_string(&message), "the message"),
        Err(e) => client_error(&e),
    }
}

/// Sends `body` to `room` (an id in decimal, or a name) over HTTP and
/// blocks until the server stored it; `*out_id` and `*out_seq` (either may
/// be NULL) receive the message's id (what `chat_edit_message` and the
/// others take) and its `seq` in the room.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_send_message(
    client: *const chat_client,
    room: *const c_char,
    body: *const c_char,
    out_id: *mut i64,
    out_seq: *mut i64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = c_str!(room, "room");
        let body = c_str!(body, "body");
        let sent = client
            .runtime
            .block_on(client.client.send(RoomRef::parse(room), body, None));
        sent_answer(sent, out_id, out_seq)
    })
}

/// The answer of a send: the stored message's id and seq into the out
/// pointers that are not NULL.
pub(crate) fn sent_answer(
    result: Result<SendResponse, ClientError>,
    out_id: *mut i64,
    out_seq: *mut i64,
) -> chat_code {
    match result {
        Ok(sent) => {
            if !out_id.is_null() {
                // SAFETY: not NULL; the caller promises writable memory.
                unsafe { *out_id = sent.id.get() };
            }
            if !out_seq.is_null() {
                // SAFETY: as above.
                unsafe { *out_seq = sent.seq };
            }
            chat_code::CHAT_OK
        }
        Err(e) => client_error(&e),
    }
}

/// [`chat_send_message`] with references: `reply_to` (0 for none) a
/// message of the room to reply to, `thread_root` (0 for none) a message
/// of the room in whose thread to post, and `mentions_len` user ids at
/// `mentions` (may be NULL when `mentions_len` is 0) to mention, members
/// of the room. A reply target or root not in the room is
/// `CHAT_NOT_FOUND`, a deleted one `CHAT_CONFLICT`, a mention of someone
/// outside the room `CHAT_INVALID_INPUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_send_reply(
    client: *const chat_client,
    room: *const c_char,
    body: *const c_char,
    reply_to: i64,
    thread_root: i64,
    mentions: *const i64,
    mentions_len: usize,
    out_id: *mut i64,
    out_seq: *mut i64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = c_str!(room, "room");
        let body = c_str!(body, "body");
        if reply_to < 0 || thread_root < 0 {
            return fail(
                chat_code::CHAT_INVALID_ARG,
                "`reply_to` and `thread_root` must not be negative",
            );
        }
        let mut options = SendOptions::new();
        if reply_to > 0 {
            options = options.reply_to(MessageId(reply_to));
        }
        if thread_root > 0 {
            options = options.in_thread(MessageId(thread_root));
        }
        if mentions_len > 0 {
            non_null!(mentions, "mentions");
            // SAFETY: not NULL; the caller promises `mentions_len` readable
            // ids there, which are copied before this returns.
            let ids = unsafe { std::slice::from_raw_parts(mentions, mentions_len) };
            for id in ids {
                options = options.mention(UserId(*id));
            }
        }
        let sent = client.runtime.block_on(client.client.send_with(
            RoomRef::parse(room),
            body,
            None,
            options,
        ));
        sent_answer(sent, out_id, out_seq)
    })
}

/// A thread as JSON into `*out_json` (free it with `chat_string_free`):
/// `{"root":{...,"thread":{"reply_count","last_reply_at"}},"replies":[...],
/// "has_more":bool}`, replies oldest first from above seq `after` (0: from
/// the start), at most `limit` (1 to 200). `root_id` may be any reply in
/// the thread. Not a member of its room: `CHAT_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_thread_json(
    client: *const chat_client,
    root_id: i64,
    after: i64,
    limit: u32,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out_json, "out_json");
        let root = match message_id(root_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        if after < 0 {
            return fail(chat_code::CHAT_INVALID_ARG, "`after` must not be negative");
        }
        let query = HistoryQuery::new().after(after).limit(limit);
        match client.runtime.block_on(client.client.thread(root, query)) {
            Ok(thread) => put_json(out_json, serde_json::to_string(&thread), "the thread"),
            Err(e) => client_error(&e),
        }
    })
}

/// Replaces the body of one of the caller's messages. `*out_json` (may be
/// NULL; else free it with `chat_string_free`) receives the message as it
/// now stands. Someone else's message is `CHAT_FORBIDDEN`; an unknown one,
/// or one of a room the caller is not in, `CHAT_NOT_FOUND`; a deleted one
/// `CHAT_CONFLICT`; an empty or too long body `CHAT_INVALID_INPUT`. The
/// same body again changes nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_edit_message(
    client: *const chat_client,
    message_id: i64,
    body: *const c_char,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let body = c_str!(body, "body");
        let id = match self::message_id(message_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        let result = client
            .runtime
            .block_on(client.client.edit_message(id, body));
        answer(result, out_json)
    })
}

/// Deletes a message (the caller's own, or any in a room the caller
/// created). `*out_json` (may be NULL) receives the tombstone. Deleting it
/// again answers the same. Errors as `chat_edit_message`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_delete_message(
    client: *const chat_client,
    message_id: i64,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let id = match self::message_id(message_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        let result = client.runtime.block_on(client.client.delete_message(id));
        answer(result, out_json)
    })
}

/// Adds (`add` true) or takes back the caller's reaction `key` (UTF-8, 1 to
/// 32 characters, no spaces or `/`) on a message of a room the caller is a
/// member of. `*out_json` (may be NULL) receives the message with its
/// `reactions`. Doing it twice changes nothing. A bad key is
/// `CHAT_INVALID_INPUT`; a deleted message `CHAT_CONFLICT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_react(
    client: *const chat_client,
    message_id: i64,
    key: *const c_char,
    add: bool,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let key = c_str!(key, "key");
        let id = match self::message_id(message_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        let result = if add {
            client.runtime.block_on(client.client.react(id, key))
        } else {
            client.runtime.block_on(client.client.unreact(id, key))
        };
        answer(result, out_json)
    })
}

/// Pins (`pin` true) or unpins a message: whoever moderates its room (its
/// creator; either participant of a conversation), else `CHAT_FORBIDDEN`.
/// `*out_json` (may be NULL) receives the message. Doing it twice changes
/// nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_pin_message(
    client: *const chat_client,
    message_id: i64,
    pin: bool,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let id = match self::message_id(message_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        let result = client.runtime.block_on(client.client.pin(id, pin));
        answer(result, out_json)
    })
}

/// Full-text search over the messages of the caller's rooms, newest first,
/// as JSON text into `*out_json` (free it with `chat_string_free`):
/// `{"hits":[{"room","room_name","seq","message"}...],"has_more":bool}`.
/// Every word of `q` must appear. `room_id` 0 searches every room;
/// `before` 0 starts from the newest, else below that message id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_search_json(
    client: *const chat_client,
    q: *const c_char,
    room_id: i64,
    before: i64,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let q = c_str!(q, "q");
        non_null!(out_json, "out_json");
        if room_id < 0 || before < 0 {
            return fail(
                chat_code::CHAT_INVALID_ARG,
                "`room_id` and `before` must not be negative",
            );
        }
        let room = (room_id > 0).then_some(::chat_client::RoomId(room_id));
        let before = (before > 0).then_some(MessageId(before));
        match client
            .runtime
            .block_on(client.client.search(q, room, before))
        {
            Ok(found) => put_json(out_json, serde_json::to_string(&found), "the hits"),
            Err(e) => client_error(&e),
        }
    })
}
