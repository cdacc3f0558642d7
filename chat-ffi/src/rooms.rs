//! Group rooms over HTTP: create, join, leave, list, per-room unread
//! counts.
//!
//! Lists come as JSON text for the reason `chat_history_json` gives: the
//! wire format is versioned by PROTOCOL.md and may grow fields; a C struct
//! array would freeze a layout and add ownership rules. The one number an
//! app polls often, a room's unread count, also has a scalar call.

use std::ffi::c_char;

use ::chat_client::{CreateRoomRequest, RoomId, RoomType};

use crate::client::chat_client;
use crate::error::{chat_code, client_error, fail, put_json};

/// Who may join a room made by `chat_create_room` (PROTOCOL.md, Rooms).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum chat_room_type {
    /// Anyone may join.
    CHAT_ROOM_PUBLIC = 0,
    /// Only invited users may join (the server's default).
    CHAT_ROOM_PRIVATE = 1,
    /// Like private; kept apart for game lobbies.
    CHAT_ROOM_GAME = 2,
}

/// The room type behind a C `int`: taken as an integer, not as the enum,
/// because a value outside the enum would be undefined behaviour in Rust
/// before it could be rejected.
fn room_type(kind: i32) -> Option<RoomType> {
    match kind {
        k if k == chat_room_type::CHAT_ROOM_PUBLIC as i32 => Some(RoomType::Public),
        k if k == chat_room_type::CHAT_ROOM_PRIVATE as i32 => Some(RoomType::Private),
        k if k == chat_room_type::CHAT_ROOM_GAME as i32 => Some(RoomType::Game),
        _ => None,
    }
}

fn room_id(id: i64) -> Result<RoomId, chat_code> {
    if id > 0 {
        Ok(RoomId(id))
    } else {
        Err(fail(
            chat_code::CHAT_INVALID_ARG,
            format!("`room_id` must be positive, not {id}"),
        ))
    }
}

/// Creates a room named `name` of type `kind` (a `chat_room_type`); the
/// caller becomes its creator and first member. `*out_room_id` (may be
/// NULL) receives its id. A taken name is `CHAT_CONFLICT`; a blank one
/// `CHAT_INVALID_INPUT`; a `kind` outside `chat_room_type`
/// `CHAT_INVALID_ARG`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_create_room(
    client: *const chat_client,
    name: *const c_char,
    kind: i32,
    out_room_id: *mut i64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let name = c_str!(name, "name");
        let Some(kind) = room_type(kind) else {
            return fail(
                chat_code::CHAT_INVALID_ARG,
                format!("`kind` {kind} is not a chat_room_type"),
            );
        };
        let request = CreateRoomRequest {
            name: Some(name.to_owned()),
            kind: Some(kind),
            ..Default::default()
        };
        match client.runtime.block_on(client.client.create_room(request)) {
            Ok(room) => {
                if !out_room_id.is_null() {
                    // SAFETY: not NULL; the caller promises writable memory.
                    unsafe { *out_room_id = room.id.0 };
                }
                chat_code::CHAT_OK
            }
            Err(e) => client_error(&e),
        }
    })
}

/// Joins room `room_id`: a public one, or a private one the caller was
/// invited to. Joining twice is fine. An unknown room, or a private one
/// without an invitation, is `CHAT_NOT_FOUND` (the server does not tell
/// them apart). (Subscribing to a public room on a connection also joins
/// it.)
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_join_room(client: *const chat_client, room_id: i64) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = match self::room_id(room_id) {
            Ok(room) => room,
            Err(code) => return code,
        };
        match client.runtime.block_on(client.client.join_room(room)) {
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Leaves room `room_id`, or declines an invitation to it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_leave_room(client: *const chat_client, room_id: i64) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = match self::room_id(room_id) {
            Ok(room) => room,
            Err(code) => return code,
        };
        match client.runtime.block_on(client.client.leave_room(room)) {
            Ok(()) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// The rooms the caller is a member of or invited to, as JSON text into
/// `*out_json` (free it with `chat_string_free`): an array of
/// `{"id","name","type","creator","membership","member_count",
/// "unread_count","last_message","created_at"}` (`GET /chat/rooms/` of
/// PROTOCOL.md). Every room's unread count in one call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_rooms_json(
    client: *const chat_client,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out_json, "out_json");
        match client.runtime.block_on(client.client.rooms()) {
            Ok(rooms) => put_json(out_json, serde_json::to_string(&rooms), "the rooms"),
            Err(e) => client_error(&e),
        }
    })
}

/// The number of messages from others above the caller's read mark in room
/// `room_id`, into `*out` (0 while only invited). A room the caller is
/// neither a member of nor invited to is `CHAT_NOT_FOUND`. One request per
/// call: for every room at once use `chat_rooms_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_room_unread_count(
    client: *const chat_client,
    room_id: i64,
    out: *mut u64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = match self::room_id(room_id) {
            Ok(room) => room,
            Err(code) => return code,
        };
        non_null!(out, "out");
        let rooms = match client.runtime.block_on(client.client.rooms()) {
            Ok(rooms) => rooms,
            Err(e) => return client_error(&e),
        };
        match rooms.iter().find(|r| r.id == room) {
            Some(r) => {
                // SAFETY: not NULL (checked above); the caller promises
                // writable memory.
                unsafe { *out = r.unread_count };
                chat_code::CHAT_OK
            }
            None => fail(
                chat_code::CHAT_NOT_FOUND,
                format!("room {room_id} is not among the caller's rooms"),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_enums_values_are_room_types() {
        assert_eq!(room_type(0), Some(RoomType::Public));
        assert_eq!(room_type(1), Some(RoomType::Private));
        assert_eq!(room_type(2), Some(RoomType::Game));
        assert_eq!(room_type(3), None);
        assert_eq!(room_type(-1), None);
    }
}
