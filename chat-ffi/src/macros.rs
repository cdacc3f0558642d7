//! The wrapper of every export.

/// Defines an `extern "C"` function whose body runs inside `catch_unwind`;
/// a panic is recorded as the last error and becomes `$on_panic`.
///
/// The body may `return` early with any value of the return type.
macro_rules! ffi_fn {    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) -> chat_code $body:block
    ) => {
        ffi_fn! {
            $(#[$doc])*
            fn $name($($arg: $arg_ty),*) -> $crate::error::chat_code $body ?= $crate::error::chat_code::CHAT_PANIC
        }
    };

    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) -> $ret:ty $body:block ?= $on_panic:expr
    ) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $arg_ty),*) -> $ret {
            let result = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
                move || -> $ret { $body },
            ));
            match result {
                Ok(value) => value,
                Err(payload) => {
                    $crate::error::set_panic(payload);
                    $on_panic
                }
            }
        }
    };
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) $body:block
    ) => {
        ffi_fn! {
            $(#[$doc])*
            fn $name($($arg: $arg_ty),*) -> () $body ?= ()
        }
    };
}

/// Returns `CHAT_INVALID_ARG` (with a reason naming `$name`) from the
/// enclosing export when `$ptr` is NULL.
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
/// the enclosing export when it is NULL or not UTF-8.
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
