//! The chat-rs server, as a library with a thin binary (`src/bin/chat-server.rs`).
//!
//! It serves the HTTP + WebSocket contract of `PROTOCOL.md`: users and JWT
//! tokens, rooms, messages with per-room sequence numbers, history, read
//! marks. Storage and fan-out sit behind traits so that backends can change
//! without touching the rules.
//!
//! What an embedder uses:
//! - [`Builder`]: the configuration ([`Config`]) plus, optionally, a
//!   storage, a broker, an authenticator and hooks; it gives a running
//!   [`Server`] or a [`Chat`] whose router the host nests in its own app.
//! - [`storage`]: the durable [`storage::Storage`] trait and its backends
//!   (`memory`, and `sqlite`, `postgres` by cargo feature).
//! - [`broker`]: the [`broker::Broker`] trait carrying events between
//!   instances (`local`, and `redis` by feature).
//! - [`identity`]: who a host's token is ([`identity::Authenticator`]) and
//!   the shipped JWT authenticator.
//! - [`hooks`]: the host's say on messages before they are stored, and
//!   word of every stored event.
//! - [`blobs`]: where attachments' bytes live ([`blobs::BlobStore`]):
//!   `memory://`, `file://`, and `s3://` by feature.
//!
//! Inside (crate-private; see `ARCHITECTURE.md`): `config`, `server` (build,
//! serve, shut down), `http` (the REST router, one file per resource), `ws`
//! (upgrade, the per-socket loop), `service` (the rules both call, the
//! server API, the outbox feeding webhooks and push), `hub` (local fan-out),
//! `auth` (passwords, tokens), `error`, `metrics`, `tls`, `signature`.
//!
//! Embedding, on a free port with in-memory storage:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = chat_server::Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     storage_url: "memory://".into(),
//!     ..chat_server::Config::default()
//! };
//! let server = chat_server::Server::start(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod auth;
pub mod blobs;
pub mod broker;
mod config;
mod error;
mod event;
pub mod hooks;
mod http;
pub mod identity;
// The send-path micro-benchmark (benches/benches/send_path.rs) drives the
// hub directly; nothing else outside the crate may.
#[cfg(feature = "internals")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod hub;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)]
mod hub;
mod media;
mod metrics;
mod server;
/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzz {
    use std::time::Duration;

    /// Verifies `token` as an access and as a refresh token of a server
    /// whose secret is `secret`: whether either accepted it. A refusal is
    /// an answer; a panic is the bug the fuzzer looks for.
    pub fn verify_token(secret: &[u8], token: &str) -> bool {
        let tokens = crate::auth::Tokens::new(
            secret,
            Duration::from_secs(900),
            Duration::from_secs(86_400),
        );
        let access = tokens.verify_access(token).is_ok();
        let refresh = tokens
            .verify(token, crate::auth::TokenKind::Refresh)
            .is_ok();
        access || refresh
    }
}
mod service;
mod signature;
pub mod storage;
mod tls;
mod ws;

pub use config::{
    AdminCommand, ApiKeyCommand, Cli, Command, Config, ConfigError, PushBody, TlsConfig,
    WebhookConfig,
};
pub use server::{Builder, Chat, Server, StartError, api_keys, migrate, redact_url, set_admin};
pub use service::server_api::ApiKeyError;
pub use tls::{Tls, TlsError};
