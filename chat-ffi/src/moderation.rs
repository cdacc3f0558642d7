//! Running rooms and accounts: moderation, room settings, the public
//! directory, blocking, reports, logging out everywhere.
//!
//! Requests and answers are JSON text, in the shapes of the HTTP API (see
//! the server's README and `GET /schema/`): they grow fields release by
//! release, which C structs could not without breaking layouts.

use std::ffi::c_char;

use ::chat_client::{ModerateRequest, ReportRequest, RoomId, RoomSettings, UserId};

use crate::client::chat_client;
use crate::error::{chat_code, client_error, fail, put_json};

/// A JSON argument parsed into `T`, or `CHAT_INVALID_ARG`.
fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, chat_code> {
    serde_json::from_str(json).map_err(|e| {
        fail(
            chat_code::CHAT_INVALID_ARG,
            format!("`{what}` is not valid: {e}"),
        )
    })
}

fn positive(id: i64, what: &str) -> Result<i64, chat_code> {
    if id > 0 {
        Ok(id)
    } else {
        Err(fail(
            chat_code::CHAT_INVALID_ARG,
            format!("`{what}` must be positive, not {id}"),
        ))
    }
}

/// Kicks, bans, unbans, mutes, unmutes, sets a role or hands the room
/// `room_id` over: `request_json` is `{"user_id","action","reason"?,
/// "until"?,"role"?}` (`POST /chat/rooms/{id}/moderate/`). `*out_json`
/// (may be NULL; free it with `chat_string_free`) receives the `member`
/// event appended, or `null` if nothing changed. Refusals: `CHAT_FORBIDDEN`
/// (`not_moderator`, `insufficient_role`), `CHAT_NOT_FOUND`,
/// `CHAT_INVALID_INPUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_moderate(
    client: *const chat_client,
    room_id: i64,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let json = c_str!(request_json, "request_json");
        let room = match positive(room_id, "room_id") {
            Ok(id) => RoomId(id),
            Err(code) => return code,
        };
        let request: ModerateRequest = match parse(json, "request_json") {
            Ok(r) => r,
            Err(code) => return code,
        };
        match client
            .runtime
            .block_on(client.client.moderate(room, &request))
        {
            Ok(event) if !out_json.is_null() => {
                put_json(out_json, serde_json::to_string(&event), "the event")
            }
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Changes room `room_id`'s settings: `settings_json` is `{"name"?,
/// "type"?,"topic"?,"description"?,"avatar_url"?,"announcement"?,
/// "slow_mode_seconds"?}` (`PATCH /chat/rooms/{id}/`; only what is given
/// changes). `*out_json` (may be NULL) receives the room as it now stands.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_update_room(
    client: *const chat_client,
    room_id: i64,
    settings_json: *const c_char,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let json = c_str!(settings_json, "settings_json");
        let room = match positive(room_id, "room_id") {
            Ok(id) => RoomId(id),
            Err(code) => return code,
        };
        let settings: RoomSettings = match parse(json, "settings_json") {
            Ok(s) => s,
            Err(code) => return code,
        };
        match client
            .runtime
            .block_on(client.client.update_room(room, &settings))
        {
            Ok(room) if !out_json.is_null() => {
                put_json(out_json, serde_json::to_string(&room), "the room")
            }
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// A page of public rooms by name into `*out_json` (`GET
/// /chat/directory/`): `prefix` and `after` may be NULL, `limit` 0 for
/// the server's default.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_directory_json(
    client: *const chat_client,
    prefix: *const c_char,
    after: *const c_char,
    limit: u32,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out_json, "out_json");
        let prefix = if prefix.is_null() {
            None
        } else {
            Some(c_str!(prefix, "prefix"))
        };
        let after = if after.is_null() {
            None
        } else {
            Some(c_str!(after, "after"))
        };
        let limit = (limit > 0).then_some(limit);
        match client
            .runtime
            .block_on(client.client.directory(prefix, after, limit))
        {
            Ok(page) => put_json(out_json, serde_json::to_string(&page), "the directory"),
            Err(e) => client_error(&e),
        }
    })
}

/// Blocks (`block` true) or unblocks user `user_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_block_user(
    client: *const chat_client,
    user_id: i64,
    block: bool,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let user = match positive(user_id, "user_id") {
            Ok(id) => UserId(id),
            Err(code) => return code,
        };
        let call = async {
            if block {
                client.client.block(user).await
            } else {
                client.client.unblock(user).await
            }
        };
        match client.runtime.block_on(call) {
            Ok(()) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Reports a message or a user: `request_json` is `{"message_id" or
/// "user_id","reason"}`. `*out_json` (may be NULL) receives the report.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_report(
    client: *const chat_client,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let json = c_str!(request_json, "request_json");
        let request: ReportRequest = match parse(json, "request_json") {
            Ok(r) => r,
            Err(code) => return code,
        };
        match client.runtime.block_on(client.client.report(&request)) {
            Ok(report) if !out_json.is_null() => {
                put_json(out_json, serde_json::to_string(&report), "the report")
            }
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Revokes every token of this user, this client's included: every
/// session must log in again; open connections close (4403).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_logout_everywhere(client: *const chat_client) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        match client.runtime.block_on(client.client.logout_everywhere()) {
            Ok(()) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}
