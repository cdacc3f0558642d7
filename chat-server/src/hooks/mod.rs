//! Hooks: the embedder's say on messages before they are stored, and word
//! of every room event after.
//!
//! [`Hooks::before_send`] sees every new message and every edit, after the
//! server's own checks (membership, length, rate) and before the append:
//! it may let it through, reject it (the sender gets 403
//! `message_rejected` with the hook's reason, and nothing is stored), or
//! rewrite its body (the rewritten body is checked again like any body);
//! a hook that cannot decide answers [`HookError`] (503
//! `hook_unavailable`).
//! [`Hooks::after_event`] hears each room event once it is stored and
//! published, in each room's order, on a task of its own: a slow hook
//! never holds the chat up, and one that falls more than
//! [`AFTER_EVENT_QUEUE`] events behind misses the overflow (counted in
//! `chat_hook_events_dropped_total`); what must not be missed belongs in
//! webhooks, which deliver from storage.
//!
//! [`HttpHook`] is the same decision out of process (`--hook-url`).

use async_trait::async_trait;
use chat_core::timeline::TimelineEvent;
use chat_core::{MessageId, RoomId, Seq, UserId};
use serde::{Deserialize, Serialize};

mod http;

pub use http::{FailurePolicy, HttpHook};

/// Events an [`Hooks::after_event`] may lag behind before it misses some.
pub const AFTER_EVENT_QUEUE: usize = 10_000;

/// Whether a [`Pending`] message is new or an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// A new message.
    Message,
    /// A new body for a message already stored.
    Edit,
}

/// A message about to be stored, as [`Hooks::before_send`] sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// New, or an edit.
    pub kind: PendingKind,
    /// The room it goes to.
    pub room: RoomId,
    /// Who sends it.
    pub sender: UserId,
    /// The body, as the sender wrote it (already within the length limit).
    pub body: String,
    /// The message edited (edits only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageId>,
    /// The message it replies to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// The sender's idempotency key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// What a hook decides of a [`Pending`] message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Store it as it is.
    Allow,
    /// Store nothing; the sender gets 403 `message_rejected` with `reason`.
    Reject {
        /// Shown to the sender as the error's sentence.
        reason: String,
    },
    /// Store `body` instead (checked again for emptiness and length).
    Rewrite {
        /// The new body.
        body: String,
    },
}

/// An event of a room's timeline, stored and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// The room.
    pub room: RoomId,
    /// Its place in the room's timeline.
    pub seq: Seq,
    /// The event, as `GET /chat/rooms/{id}/events/` shows it.
    pub event: TimelineEvent,
}

/// A hook that could not decide (its service down or too slow): the
/// sender gets 503 `hook_unavailable` and may retry; nothing is stored.
#[derive(Debug, thiserror::Error)]
#[error("hook unavailable: {0}")]
pub struct HookError(pub String);

/// The embedder's hooks; every method has a default that does nothing, so
/// an implementation overrides only what it needs.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Decides what becomes of a message before it is stored. Runs on the
    /// sender's request, so it adds its time to the send.
    async fn before_send(&self, message: &Pending) -> Result<Decision, HookError> {
        let _ = message;
        Ok(Decision::Allow)
    }

    /// Hears a room event after it is stored and published.
    async fn after_event(&self, event: &RoomEvent) {
        let _ = event;
    }
}
