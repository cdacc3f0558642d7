//! Typed async client SDK for chat-rs servers (filled by the client issue).
