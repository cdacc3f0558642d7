//! The chat-rs wire protocol: every type that crosses the network between the
//! server, the client SDK and the C ABI. It is the code form of `PROTOCOL.md`.
//!
//! serde only: no sockets, no runtime, no storage. Anything that speaks the
//! protocol (server, client, FFI, benches, tests) depends on this crate and on
//! nothing else to agree on the format.
//!
//! The optional feature `schema` derives `utoipa::ToSchema` and
//! `schemars::JsonSchema` on the wire types, for the server's OpenAPI
//! (`/schema/`) and frame JSON Schema (`/schema/ws/`). Ids are integers ≥ 1,
//! [`Timestamp`] a `date-time` string, [`frame::ClientFrame`] `oneOf` the
//! `{"message"}` form and each typed frame.
//!
//! Layout:
//! - [`ids`]: typed ids and the per-room sequence number.
//! - [`time`]: [`Timestamp`], RFC 3339 UTC on the wire.
//! - [`user`], [`room`], [`message`], [`conversation`]: the resources.
//! - [`attachment`]: uploaded files and what messages show of them.
//! - [`timeline`]: a room's numbered events (messages, membership changes).
//! - [`api`]: REST request and response bodies.
//! - [`push`]: push devices.
//! - [`server_api`]: the bodies of the server API (a host's backend, with an API key).
//! - [`frame`]: WebSocket frames in both directions.
//! - [`error`]: the `{"error","code"}` body, error codes and close codes.
//!
//! ```
//! use chat_core::frame::{ClientFrame, ServerFrame};
//!
//! let frame = ClientFrame::from_json(r#"{"type":"subscribe","room":"lobby","after_seq":41}"#)
//!     .expect("valid frame");
//! assert!(matches!(frame, ClientFrame::Subscribe { after_seq: Some(41), .. }));
//!
//! let pong = serde_json::to_string(&ServerFrame::Pong).expect("serializes");
//! assert_eq!(pong, r#"{"type":"pong"}"#);
//! ```

pub mod admin;
pub mod api;
pub mod attachment;
pub mod conversation;
pub mod error;
pub mod frame;
pub mod ids;
pub mod message;
pub mod moderation;
#[cfg(feature = "schema")]
mod openapi;
pub mod push;
pub mod room;
pub mod server_api;
pub mod text;
pub mod time;
pub mod timeline;
pub mod user;

pub use attachment::Attachment;
pub use error::{CloseCode, ErrorBody, ErrorCode};
pub use ids::{AttachmentId, MessageId, RoomId, Seq, UserId};
pub use message::Message;
pub use room::{RoomRef, RoomType};
pub use time::Timestamp;
pub use user::User;
