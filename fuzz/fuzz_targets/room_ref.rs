//! The room reference parser (path and query segments): digits are an
//! id, anything else a name; it never panics and round-trips through
//! JSON.
#![no_main]

use chat_core::RoomRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = RoomRef::parse(text);
    if let RoomRef::Name(name) = &parsed {
        assert_eq!(name, text);
    }
    let json = serde_json::to_string(&parsed).expect("serializes");
    let _: RoomRef = serde_json::from_str(&json).expect("parses back");
    let _ = chat_core::text::uri_has_nul(text);
});
