//! The embedder's before-send hook on the send and edit paths, and the
//! task that feeds its after-event hook (see [`crate::hooks`]).

use std::sync::Arc;

use chat_core::{ErrorCode, MessageId, RoomId, UserId};
use tokio::sync::mpsc;

use super::ChatService;
use super::messages::Draft;
use crate::error::{ApiError, ApiResult};
use crate::hooks::{Decision, HookError, Hooks, Pending, PendingKind, RoomEvent};

/// The longest rejection reason passed on to the sender, in characters.
const MAX_REASON_CHARS: usize = 500;

/// Starts the task that hands stored events to `hooks.after_event`, in
/// order; the sender side goes to the commit listener.
pub(crate) fn after_events(hooks: Arc<dyn Hooks>) -> mpsc::Sender<RoomEvent> {
    let (tx, mut rx) = mpsc::channel::<RoomEvent>(crate::hooks::AFTER_EVENT_QUEUE);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            hooks.after_event(&event).await;
        }
    });
    tx
}

impl ChatService {
    /// The hook's say on a new message of `user` to `room`: the body to
    /// store, or why not. A repeat of a stored `client_id` is not asked
    /// about: storage answers it with the original, whatever a hook would
    /// say now.
    pub(crate) async fn vet_message(
        &self,
        user: UserId,
        room: RoomId,
        draft: &Draft,
    ) -> ApiResult<Option<String>> {
        let Some(hooks) = &self.hooks else {
            return Ok(None);
        };
        if let Some(client_id) = &draft.client_id
            && self
                .storage
                .message_by_client_id(user, client_id)
                .await?
                .is_some()
        {
            return Ok(None);
        }
        let pending = Pending {
            kind: PendingKind::Message,
            room,
            sender: user,
            body: draft.body.clone(),
            message: None,
            reply_to: draft.reply_to,
            client_id: draft.client_id.clone(),
        };
        self.decide(hooks.as_ref(), &pending).await
    }

    /// The hook's say on `user`'s new body for `message`: the body to
    /// store. A message that is not there is left to the edit to refuse.
    pub(crate) async fn vet_edit(
        &self,
        user: UserId,
        message: MessageId,
        body: &str,
    ) -> ApiResult<Option<String>> {
        let Some(hooks) = &self.hooks else {
            return Ok(None);
        };
        // Only an edit the rule would allow is shown to the hook (the
        // sender's own message, in a room they are in); any other is left
        // to the edit to refuse, exactly as without a hook.
        let Some(target) = self.storage.message(message).await? else {
            return Ok(None);
        };
        if target.sender != user
            || target.deleted
            || self.storage.membership(target.room, user).await?
                != Some(crate::storage::MemberState::Member)
        {
            return Ok(None);
        }
        let pending = Pending {
            kind: PendingKind::Edit,
            room: target.room,
            sender: user,
            body: body.to_owned(),
            message: Some(message),
            reply_to: None,
            client_id: None,
        };
        self.decide(hooks.as_ref(), &pending).await
    }

    /// `None`: store the body as sent; `Some(body)`: store that instead.
    async fn decide(&self, hooks: &dyn Hooks, pending: &Pending) -> ApiResult<Option<String>> {
        match hooks.before_send(pending).await {
            Ok(Decision::Allow) => Ok(None),
            Ok(Decision::Rewrite { body }) => {
                self.check_body(&body)?;
                Ok(Some(body))
            }
            Ok(Decision::Reject { reason }) => {
                metrics::counter!(crate::metrics::HOOK_REJECTIONS).increment(1);
                let reason: String = reason.trim().chars().take(MAX_REASON_CHARS).collect();
                Err(if reason.is_empty() {
                    ApiError::new(ErrorCode::MessageRejected)
                } else {
                    ApiError::with_message(ErrorCode::MessageRejected, reason)
                })
            }
            Err(HookError(why)) => {
                tracing::debug!(%why, "before-send hook could not decide");
                Err(ApiError::new(ErrorCode::HookUnavailable))
            }
        }
    }
}
