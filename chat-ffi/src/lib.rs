//! C ABI over chat-client (filled by the FFI issue).
