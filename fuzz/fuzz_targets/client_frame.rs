//! A WebSocket text frame as the server parses it: any text gives a frame
//! or a clear error, and a frame that parses serializes back to one that
//! parses the same.
#![no_main]

use chat_core::frame::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::from_json(text) {
        let again = serde_json::to_string(&frame).expect("a parsed frame serializes");
        let reparsed = ClientFrame::from_json(&again).expect("a serialized frame parses");
        assert_eq!(frame, reparsed, "round trip of {text:?}");
    }
});
