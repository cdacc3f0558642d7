//! The typed calls, one file per resource of `PROTOCOL.md`, each an
//! `impl ChatClient` block.

mod admin;
mod attachments;
mod conversations;
mod devices;
mod messages;
mod rooms;
mod users;

pub use attachments::{Progress, Transfer};
pub use messages::{HistoryQuery, SendOptions};
