//! Attachments: uploading a file, downloading one (or its thumbnail) to a
//! path, an attachment's details as JSON, deleting an unsent upload, and
//! sending a message with attachments.
//!
//! Transfers stream between the file and the network (a file is never
//! whole in memory) and report progress to a C callback. The callback runs
//! on the thread that made the call, before the call returns: the transfer
//! itself runs on the client's runtime and only posts its numbers to a
//! queue, which the calling thread hands to the callback while it waits.
//! A C caller thus needs no locking around its userdata.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::sync::Arc;

use ::chat_client::{AttachmentId, ClientError, Progress, RoomRef, SendOptions, Transfer};
use tokio::sync::mpsc;

use crate::client::chat_client;
use crate::error::{chat_code, client_error, fail, put_json};
use crate::messages::sent_answer;

/// Reports a transfer's progress: `done` bytes of `total` (0 when the
/// total is unknown), with the userdata given to the call.
///
/// Called on the thread that made the transfer's call, during it (never
/// after it returns): about once per 64 KiB moved, with `done` only
/// growing, and once at the end with every byte counted; no report is
/// skipped, and all have been made when the call returns. It must not
/// call this library's blocking functions (the call it reports on is
/// still running on this thread) nor unwind into the library; a slow
/// callback slows a download, which runs on the calling thread.
#[allow(non_camel_case_types)]
pub type chat_progress_cb =
    Option<unsafe extern "C" fn(userdata: *mut c_void, done: u64, total: u64)>;

fn attachment_id(id: i64) -> Result<AttachmentId, chat_code> {
    if id > 0 {
        Ok(AttachmentId(id))
    } else {
        Err(fail(
            chat_code::CHAT_INVALID_ARG,
            format!("`attachment_id` must be positive, not {id}"),
        ))
    }
}

/// Runs `transfer` (made with the [`Progress`] it is given) on `client`'s
/// runtime, blocking the calling thread, which meanwhile calls `callback`
/// with each report the transfer posts, in order.
fn run_transfer<T, F>(
    client: &chat_client,
    callback: chat_progress_cb,
    userdata: *mut c_void,
    transfer: impl FnOnce(Option<Progress>) -> F,
) -> Result<T, ClientError>
where
    F: Future<Output = Result<T, ClientError>>,
{
    let Some(callback) = callback else {
        return client.runtime.block_on(transfer(None));
    };
    // Unbounded, so that the transfer never waits for the caller's
    // thread; at most one report per 64 KiB moved is queued.
    let (posted, mut reports) = mpsc::unbounded_channel::<Transfer>();
    let progress: Progress = Arc::new(move |t| {
        let _ = posted.send(t);
    });
    let report = |t: Transfer| {
        // SAFETY: the C caller promises that `callback` may be called with
        // `userdata` during the call, on this (its own) thread.
        unsafe { callback(userdata, t.done, t.total.unwrap_or(0)) };
    };
    client.runtime.block_on(async {
        let transfer = transfer(Some(progress));
        tokio::pin!(transfer);
        loop {
            tokio::select! {
                biased;
                Some(t) = reports.recv() => report(t),
                result = &mut transfer => {
                    // Reports posted with the end (the last counts every
                    // byte) are still queued.
                    while let Ok(t) = reports.try_recv() {
                        report(t);
                    }
                    break result;
                }
            }
        }
    })
}

/// Uploads the file at `path` (named by its file name), streamed from disk
/// as it is sent, and blocks until the server stored it. `*out_json` (may
/// be NULL; else free it with `chat_string_free`) receives the attachment
/// as JSON: `{"id","name","size","content_type","width"?,"height"?,
/// "thumbnail"?,"created_at"}`; send its `id` with
/// `chat_send_attachments`. Until then only the caller sees it.
///
/// `progress` (may be NULL) is called with `userdata` as bytes go out (see
/// `chat_progress_cb`). A file that cannot be read is `CHAT_IO`; over the
/// server's largest file `CHAT_FILE_TOO_LARGE`; over the caller's quota
/// `CHAT_QUOTA_EXCEEDED`; an image the server will not decode
/// `CHAT_INVALID_INPUT`; file storage down on the server
/// `CHAT_UNAVAILABLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_upload_file(
    client: *const chat_client,
    path: *const c_char,
    progress: chat_progress_cb,
    userdata: *mut c_void,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let path = c_str!(path, "path");
        let result = run_transfer(client, progress, userdata, |progress| {
            client.client.upload_file(path, progress)
        });
        match result {
            Ok(_) if out_json.is_null() => chat_code::CHAT_OK,
            Ok(attachment) => put_json(
                out_json,
                serde_json::to_string(&attachment),
                "the attachment",
            ),
            Err(e) => client_error(&e),
        }
    })
}

/// Uploads `len` bytes at `data` (may be NULL when `len` is 0) as a file
/// named `name`, like `chat_upload_file` (the bytes are copied first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_upload_bytes(
    client: *const chat_client,
    name: *const c_char,
    data: *const u8,
    len: usize,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let name = c_str!(name, "name");
        let bytes = if len == 0 {
            Vec::new()
        } else {
            non_null!(data, "data");
            // SAFETY: not NULL; the caller promises `len` readable bytes
            // there, copied before this returns.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        };
        let result = client
            .runtime
            .block_on(client.client.upload_bytes(name, bytes));
        match result {
            Ok(_) if out_json.is_null() => chat_code::CHAT_OK,
            Ok(attachment) => put_json(
                out_json,
                serde_json::to_string(&attachment),
                "the attachment",
            ),
            Err(e) => client_error(&e),
        }
    })
}

/// Downloads attachment `attachment_id` (or, with `thumbnail`, its
/// thumbnail, which image attachments have) to the file at `path`, streamed
/// to disk as it comes, and blocks until it is complete. The bytes go to
/// `path` + `".part"` first, renamed to `path` once complete, so `path`
/// never holds part of a file; an existing file there is replaced.
///
/// `progress` (may be NULL) is called with `userdata` as bytes come in
/// (see `chat_progress_cb`). An attachment the caller may not read (an
/// unknown id, someone else's unsent upload, a file of a room the caller
/// is not in) and a missing thumbnail are `CHAT_NOT_FOUND`; a file that
/// cannot be written is `CHAT_IO`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_download_file(
    client: *const chat_client,
    attachment_id: i64,
    path: *const c_char,
    thumbnail: bool,
    progress: chat_progress_cb,
    userdata: *mut c_void,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let path = c_str!(path, "path");
        let id = match self::attachment_id(attachment_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        let result = run_transfer(client, progress, userdata, |progress| async move {
            if thumbnail {
                client
                    .client
                    .download_thumbnail_to_file(id, path, progress)
                    .await
            } else {
                client.client.download_to_file(id, path, progress).await
            }
        });
        match result {
            Ok(_) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Attachment `attachment_id` and where it stands, as JSON into
/// `*out_json` (free it with `chat_string_free`): the attachment's fields
/// and, once sent, `"message_id"` and `"room"`. One the caller may not see
/// is `CHAT_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_attachment_json(
    client: *const chat_client,
    attachment_id: i64,
    out_json: *mut *mut c_char,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        non_null!(out_json, "out_json");
        let id = match self::attachment_id(attachment_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        match client.runtime.block_on(client.client.attachment(id)) {
            Ok(info) => put_json(out_json, serde_json::to_string(&info), "the attachment"),
            Err(e) => client_error(&e),
        }
    })
}

/// Deletes one of the caller's uploads not yet sent. One already sent is
/// `CHAT_CONFLICT` (delete its message instead); one the caller may not
/// see, `CHAT_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_delete_attachment(
    client: *const chat_client,
    attachment_id: i64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let id = match self::attachment_id(attachment_id) {
            Ok(id) => id,
            Err(code) => return code,
        };
        match client.runtime.block_on(client.client.delete_attachment(id)) {
            Ok(()) => chat_code::CHAT_OK,
            Err(e) => client_error(&e),
        }
    })
}

/// Sends `body` (may be empty when there are attachments) to `room` (an id
/// in decimal, or a name) over HTTP with the `attachments_len` uploads
/// whose ids are at `attachments` (may be NULL when `attachments_len` is
/// 0): the caller's own, not sent yet, at most 10. Blocks until the server
/// stored it; `*out_id` and `*out_seq` (either may be NULL) receive the
/// message's id and `seq`, as `chat_send_message`. An id that is not the
/// caller's upload is `CHAT_NOT_FOUND`; one already sent `CHAT_CONFLICT`;
/// more than 10 `CHAT_INVALID_INPUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_send_attachments(
    client: *const chat_client,
    room: *const c_char,
    body: *const c_char,
    attachments: *const i64,
    attachments_len: usize,
    out_id: *mut i64,
    out_seq: *mut i64,
) -> chat_code {
    ffi_guard!({
        let client = client_ref!(client);
        let room = c_str!(room, "room");
        let body = c_str!(body, "body");
        let ids = if attachments_len == 0 {
            Vec::new()
        } else {
            non_null!(attachments, "attachments");
            // SAFETY: not NULL; the caller promises `attachments_len`
            // readable ids there, copied before this returns.
            let ids = unsafe { std::slice::from_raw_parts(attachments, attachments_len) };
            let mut checked = Vec::with_capacity(ids.len());
            for &id in ids {
                match attachment_id(id) {
                    Ok(id) => checked.push(id),
                    Err(code) => return code,
                }
            }
            checked
        };
        let sent = client.runtime.block_on(client.client.send_with(
            RoomRef::parse(room),
            body,
            None,
            SendOptions::new().attachments(ids),
        ));
        sent_answer(sent, out_id, out_seq)
    })
}
