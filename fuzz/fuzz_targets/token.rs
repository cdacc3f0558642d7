//! A bearer token as the server verifies it (its own HS256 tokens, access
//! and refresh): any text is refused or accepted, never a panic; and a
//! token the server issued is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = chat_server::fuzz::verify_token(SECRET, text);
});
