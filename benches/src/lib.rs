//! Load generation and measurement for chat-rs.
//!
//! Layout:
//! - [`wire`]: the timestamped message body and the allocation-free reading
//!   of a delivered frame.
//! - [`http`]: setup through the HTTP API (users, tokens, rooms).
//! - [`sockets`]: receiving and sending sockets and the counters they share.
//! - [`stats`]: latency quantiles, process RSS and CPU time.
//!
//! Binaries: `chat-load` (the load generator), `chat-reference` (the
//! minimal broadcast server it is compared with), `chat-soak` (the server's
//! memory under connection churn), `append-bench` and `fanout-bench`. `run.sh` runs the documented scenarios; `benches/` holds
//! the criterion micro-benchmarks.
//!
//! ```
//! let mut body = String::new();
//! chat_bench::wire::write_body(&mut body, 42, 1, 7, 32);
//! assert_eq!(body.len(), 32);
//! assert!(body.starts_with("42:1:7:"));
//! ```

pub mod http;
pub mod sockets;
pub mod stats;
pub mod wire;
