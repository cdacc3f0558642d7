//! chat-server (work in progress: storage layer first).

pub mod storage;
