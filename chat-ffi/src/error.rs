//! Return codes, the per-thread last error, and the library's strings.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char};

use ::chat_client::{ClientError, ErrorCode, ErrorKind};

/// The result of every call. On anything but `CHAT_OK`,
/// `chat_last_error_message()` says why.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum chat_code {
    /// Success.
    CHAT_OK = 0,
    /// An argument was NULL, not UTF-8, or otherwise unusable.
    CHAT_INVALID_ARG = 1,
    /// The server rejected the input (validation failed).
    CHAT_INVALID_INPUT = 2,
    /// Not logged in, or the session expired; log in again.
    CHAT_UNAUTHORIZED = 3,
    /// Logged in but not allowed.
    CHAT_FORBIDDEN = 4,
    /// The room, user or message does not exist.
    CHAT_NOT_FOUND = 5,
    /// Already exists (username taken, ...).
    CHAT_CONFLICT = 6,
    /// Too many requests; retry later.
    CHAT_RATE_LIMITED = 7,
    /// The server could not be reached or the connection broke.
    CHAT_NETWORK = 8,
    /// The server is temporarily unavailable; retry later.
    CHAT_UNAVAILABLE = 9,
    /// The server failed.
    CHAT_SERVER = 10,
    /// Any other failure (protocol error, bad configuration, ...).
    CHAT_OTHER = 11,
    /// The connection was closed.
    CHAT_CLOSED = 13,
    /// A panic was caught inside the library (a bug); the handle involved
    /// may be unusable but can still be freed.
    CHAT_PANIC = 12,
    /// The file is larger than the server takes (`file_too_large`).
    CHAT_FILE_TOO_LARGE = 14,
    /// The upload would take the user's uploads over their quota
    /// (`quota_exceeded`): delete unsent uploads or old messages.
    CHAT_QUOTA_EXCEEDED = 15,
    /// A local file could not be read or written (an upload's source, a
    /// download's destination).
    CHAT_IO = 16,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: impl Into<String>) {
    let mut bytes = message.into().into_bytes();
    bytes.retain(|&b| b != 0);
    let message = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(message));
}

/// Records `message` and returns `code`.
pub(crate) fn fail(code: chat_code, message: impl Into<String>) -> chat_code {
    set_last_error(message);
    code
}

/// Records a caught panic's message.
pub(crate) fn set_panic(payload: Box<dyn Any + Send>) {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    set_last_error(format!("panic inside chat-ffi: {what}"));
}

/// The code of a client error, its message recorded as the last error.
pub(crate) fn client_error(error: &ClientError) -> chat_code {
    let code = match (error.code(), error.kind()) {
        (Some(ErrorCode::FileTooLarge), _) => chat_code::CHAT_FILE_TOO_LARGE,
        (Some(ErrorCode::QuotaExceeded), _) => chat_code::CHAT_QUOTA_EXCEEDED,
        (_, kind) => kind_code(kind),
    };
    fail(code, describe(error))
}

/// The code of a kind of client error.
fn kind_code(kind: ErrorKind) -> chat_code {
    match kind {
        ErrorKind::InvalidInput => chat_code::CHAT_INVALID_INPUT,
        ErrorKind::Unauthorized => chat_code::CHAT_UNAUTHORIZED,
        ErrorKind::Forbidden => chat_code::CHAT_FORBIDDEN,
        ErrorKind::NotFound => chat_code::CHAT_NOT_FOUND,
        ErrorKind::Conflict => chat_code::CHAT_CONFLICT,
        ErrorKind::RateLimited => chat_code::CHAT_RATE_LIMITED,
        ErrorKind::Network => chat_code::CHAT_NETWORK,
        ErrorKind::Unavailable => chat_code::CHAT_UNAVAILABLE,
        ErrorKind::Closed => chat_code::CHAT_CLOSED,
        ErrorKind::Config => chat_code::CHAT_INVALID_ARG,
        ErrorKind::Server => chat_code::CHAT_SERVER,
        ErrorKind::Io => chat_code::CHAT_IO,
        _ => chat_code::CHAT_OTHER,
    }
}

/// The error and its causes, outermost first: a C caller has no other way
/// to reach the cause (e.g. which certificate check failed under "network
/// error"). A cause whose text its parent already shows is skipped.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Copies `s` into a new C string owned by the caller (NUL bytes dropped).
pub(crate) fn to_c_string(s: impl Into<String>) -> *mut c_char {
    let mut bytes = s.into().into_bytes();
    bytes.retain(|&b| b != 0);
    CString::new(bytes).unwrap_or_default().into_raw()
}

/// Writes `json` (an encoding of `what`) to `*out` as a new C string, or
/// records why it could not be encoded. `out` must have been checked not
/// NULL.
pub(crate) fn put_json(
    out: *mut *mut c_char,
    json: Result<String, serde_json::Error>,
    what: &str,
) -> chat_code {
    match json {
        Ok(json) => {
            // SAFETY: checked not NULL by the caller; the C caller promises
            // writable memory.
            unsafe { *out = to_c_string(json) };
            chat_code::CHAT_OK
        }
        Err(e) => fail(chat_code::CHAT_OTHER, format!("cannot encode {what}: {e}")),
    }
}

/// The reason of the last failed call on this thread, as a new string
/// the caller frees with `chat_string_free`; NULL if no call on this
/// thread has failed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_last_error_message() -> *mut c_char {
    ffi_guard!(
        {
            LAST_ERROR.with(|last| match &*last.borrow() {
                Some(message) => message.clone().into_raw(),
                None => std::ptr::null_mut(),
            })
        },
        std::ptr::null_mut()
    )
}

/// Frees a string returned by this library. NULL is ignored. Passing any
/// other pointer, or the same one twice, is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chat_string_free(s: *mut c_char) {
    ffi_guard!(
        {
            if !s.is_null() {
                // SAFETY: the caller promises `s` came from this library, which
                // made every returned string with `CString::into_raw`, and that it
                // is freed once.
                drop(unsafe { CString::from_raw(s) });
            }
        },
        ()
    )
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn maybe_panic(panic: bool) -> chat_code {
        ffi_guard!({
            if panic {
                panic!("boom");
            }
            chat_code::CHAT_OK
        })
    }

    /// Takes and frees the last error message.
    fn last_error() -> Option<String> {
        // SAFETY: no arguments.
        let message = unsafe { chat_last_error_message() };
        if message.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string from this library.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: returned by this library, freed once.
        unsafe { chat_string_free(message) };
        Some(text)
    }

    #[test]
    fn a_panic_becomes_chat_panic_with_its_message() {
        assert_eq!(maybe_panic(false), chat_code::CHAT_OK);
        assert_eq!(maybe_panic(true), chat_code::CHAT_PANIC);
        let message = last_error().expect("a reason after a panic");
        assert!(message.contains("boom"), "{message}");
    }

    #[test]
    fn the_last_error_is_per_thread_and_survives_reading() {
        std::thread::spawn(|| {
            assert_eq!(last_error(), None);
            assert_eq!(
                fail(chat_code::CHAT_OTHER, "a\0b reason"),
                chat_code::CHAT_OTHER
            );
            assert_eq!(last_error().as_deref(), Some("ab reason"));
            assert_eq!(last_error().as_deref(), Some("ab reason"));
        })
        .join()
        .expect("thread");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_description_shows_each_new_cause() {
        let error = Layer(
            "network error: no answer",
            Some(Box::new(Layer(
                "no answer",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            describe(&error),
            "network error: no answer: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn freeing_null_is_a_no_op() {
        // SAFETY: NULL is allowed.
        unsafe { chat_string_free(std::ptr::null_mut()) };
    }
}
