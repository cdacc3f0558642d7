//! The guard around the body of every export.
//!
//! The exports are plain `pub unsafe extern "C" fn` items (so that cbindgen,
//! which does not expand macros, sees them); each body is wrapped in
//! `ffi_guard!`.

/// Runs `$body` (a block, which may `return` early) inside `catch_unwind`;
/// a panic is recorded as the last error and becomes `$on_panic`
/// (`CHAT_PANIC` when omitted).
macro_rules! ffi_guard {
    ($body:block) => {
        ffi_guard!($body, $crate::error::chat_code::CHAT_PANIC)
    };
    ($body:block, $on_panic:expr) => {{
        #[allow(clippy::redundant_closure_call)]
        let result = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(move || $body));
        match result {
            Ok(value) => value,
            Err(payload) => {
                $crate::error::set_panic(payload);
                $on_panic
            }
        }
    }};
}

/// Returns `CHAT_INVALID_ARG` (with a reason naming `$name`) from the
/// enclosing guarded body when `$ptr` is NULL.
macro_rules! non_null {
    ($ptr:expr, $name:literal) => {
        if $ptr.is_null() {
            return $crate::error::fail(
                $crate::error::chat_code::CHAT_INVALID_ARG,
                concat!("`", $name, "` is NULL"),
            );
        }
    };
}

/// Reads a C string argument as `&str`, or returns `CHAT_INVALID_ARG` from
/// the enclosing guarded body when it is NULL or not UTF-8.
macro_rules! c_str {
    ($ptr:expr, $name:literal) => {{
        non_null!($ptr, $name);
        // SAFETY: not NULL (checked above); the caller promises a
        // NUL-terminated string that lives for the call.
        match unsafe { ::std::ffi::CStr::from_ptr($ptr) }.to_str() {
            Ok(s) => s,
            Err(_) => {
                return $crate::error::fail(
                    $crate::error::chat_code::CHAT_INVALID_ARG,
                    concat!("`", $name, "` is not valid UTF-8"),
                );
            }
        }
    }};
}

/// Borrows the client behind `$ptr`, or returns `CHAT_INVALID_ARG`.
macro_rules! client_ref {
    ($ptr:expr) => {{
        non_null!($ptr, "client");
        // SAFETY: not NULL; the caller promises a live handle from
        // `chat_client_new`, not freed during this call.
        unsafe { &*$ptr }
    }};
}
