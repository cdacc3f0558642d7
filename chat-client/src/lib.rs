//! The typed async Rust SDK of chat-rs.
//!
//! A [`ChatClient`] talks to one chat-rs server over HTTP(S): it registers and
//! logs in, keeps the session's tokens fresh, and offers a typed call for
//! every operation of the protocol, returning the wire types of
//! [`chat_core`] (re-exported here). Failures are a [`ClientError`] whose
//! [`kind`](ClientError::kind) and [`is_retryable`](ClientError::is_retryable)
//! say what to do next, and whose [`code`](ClientError::code) is the
//! server's.
//!
//! A [`Connection`] ([`ChatClient::connect`]) is the live side: one WebSocket
//! for many rooms, whose [`Event`]s carry every message of each subscribed
//! room exactly once and in order, across dropped sockets and server
//! restarts (it reconnects by itself and resumes each room by `seq`).
//!
//! ```no_run
//! use chat_client::{ChatClient, Event};
//!
//! # async fn live(client: ChatClient) -> Result<(), chat_client::ClientError> {
//! let mut conn = client.connect().await?;
//! let lobby = conn.subscribe("lobby").await?;
//! conn.send(lobby, "hi all").await?;
//! while let Some(event) = conn.next_event().await {
//!     match event {
//!         Event::Message(m) => println!("{}: {}", m.sender_name, m.body),
//!         Event::StateChanged(state) => println!("({state:?})"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Calls are `async` and need a tokio runtime. TLS is rustls with the *ring* provider (no OpenSSL); the system's trust
//! store is used, plus any CA given to [`ClientOptions::root_ca_pem`].
//!
//! # Tutorial
//!
//! Build a client, create an account, log in, open a room, talk, read back:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use chat_client::{
//!     ChatClient, ClientOptions, CreateRoomRequest, ErrorCode, HistoryQuery, RegisterRequest,
//!     RoomType,
//! };
//!
//! # async fn tutorial() -> Result<(), chat_client::ClientError> {
//! // 1. One client per server; clones share the session and connection pool.
//! let client = ChatClient::with_options(
//!     "https://chat.example.com",
//!     ClientOptions::default().timeout(Duration::from_secs(10)).user_agent("my-app/1.0"),
//! )?;
//!
//! // 2. An account (once), then a session. Errors carry the server's code.
//! let registration = client
//!     .register(RegisterRequest {
//!         username: "alice".into(),
//!         email: "alice@example.com".into(),
//!         password: "correct horse battery staple".into(),
//!         display_name: Some("Alice".into()),
//!     })
//!     .await;
//! match registration {
//!     Ok(user) => println!("registered as #{}", user.id),
//!     Err(e) if e.code() == Some(ErrorCode::UsernameTaken) => println!("welcome back"),
//!     Err(e) => return Err(e),
//! }
//! let tokens = client.login("alice", "correct horse battery staple").await?;
//! // Persist `tokens` to restore the session later with `client.set_tokens(Some(tokens))`.
//! # let _ = tokens;
//!
//! // 3. A room anyone may join.
//! let room = client
//!     .create_room(CreateRoomRequest {
//!         name: Some("lobby".into()),
//!         kind: Some(RoomType::Public),
//!         ..Default::default()
//!     })
//!     .await?;
//!
//! // 4. Send. Without a client_id one is generated, so a retry is stored once.
//! let sent = client.send(room.id, "hello, world", None).await?;
//! println!("message #{} in {}", sent.seq, room.name);
//!
//! // 5. Read the newest page of history (oldest first), by id or by name.
//! let page = client.history("lobby", HistoryQuery::new().limit(20)).await?;
//! for message in &page.chat_history {
//!     println!("[{}] {}: {}", message.seq, message.sender_name, message.body);
//! }
//!
//! // 6. Errors: decide by kind, or by the server's code.
//! if let Err(e) = client.send(room.id, "   ", None).await {
//!     assert_eq!(e.code(), Some(ErrorCode::EmptyBody));
//!     assert!(!e.is_retryable());
//! }
//!
//! // 7. End the session on the server.
//! client.logout().await?;
//! # Ok(()) }
//! ```
//!
//! The access token is refreshed by the client itself: before a call when it
//! has less than [`ClientOptions::refresh_margin`] left, and once when the
//! server answers 401 `unauthorized`.
//!
//! # Attachments
//!
//! Files go up first, then with a message: [`ChatClient::upload_file`] (or
//! [`upload_bytes`](ChatClient::upload_bytes),
//! [`upload_reader`](ChatClient::upload_reader)) answers an [`Attachment`]
//! whose id [`SendOptions::attachments`] sends; each [`Message`] lists its
//! `attachments`, which [`ChatClient::download`] and
//! [`download_to_file`](ChatClient::download_to_file) fetch. Both directions
//! stream (a file is never whole in memory) and report [`Progress`].
//!
//! ```no_run
//! use chat_client::SendOptions;
//!
//! # async fn files(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
//! let plan = client.upload_file("plan.pdf", None).await?;
//! client
//!     .send_with("lobby", "the plan", None, SendOptions::new().attachments([plan.id]))
//!     .await?;
//! let page = client.history("lobby", Default::default()).await?;
//! for file in page.chat_history.iter().flat_map(|m| &m.attachments) {
//!     client.download_to_file(file.id, &file.name, None).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`ChatClient`] (`client.rs`): construction, session, the request helper.
//! - `api/`: the typed calls, one file per resource (users and tokens, rooms,
//!   messages, conversations, attachments), as `impl ChatClient` blocks.
//! - [`Connection`] (`connection/`): the live socket, its background task
//!   (cursors, gap fill, offline queue, reconnect) and the handshake.
//! - [`ClientOptions`] (`options.rs`): timeouts, TLS trust, user agent.
//! - [`Tokens`] (`auth.rs`): the session and its single-flight refresh.
//! - [`ClientError`], [`ErrorKind`] (`error.rs`).

mod api;
mod auth;
mod client;
mod connection;
mod error;
mod model;
mod options;

pub use api::{HistoryQuery, Progress, SendOptions, Transfer};
pub use auth::Tokens;
pub use client::ChatClient;
pub use connection::{ConnectOptions, Connection, ConnectionState, Event};
pub use error::{ClientError, ErrorKind};
pub use model::RoomMessages;
pub use options::ClientOptions;

/// The wire types, for matching on what the calls return.
pub use chat_core;
pub use chat_core::admin::{Report, ReportRequest, ReportsQuery, ReportsResponse};
pub use chat_core::api::{CreateRoomRequest, HistoryResponse, RegisterRequest, SendResponse};
pub use chat_core::attachment::{
    Attachment, AttachmentInfo, AttachmentLink, Thumbnail, UploadUsage,
};
pub use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationResponse,
};
pub use chat_core::frame::PresenceStatus;
pub use chat_core::moderation::{
    Ban, DirectoryResponse, DirectoryRoom, ModerateRequest, ModerationAction, Role, RoomSettings,
    RoomUpdate,
};
pub use chat_core::push::Device;
pub use chat_core::room::{JoinedRoom, Room, RoomListItem};
pub use chat_core::user::BlockedUser;
pub use chat_core::{
    AttachmentId, ErrorCode, Message, MessageId, RoomId, RoomRef, RoomType, Seq, User, UserId,
};
