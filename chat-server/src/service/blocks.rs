//! Blocking users: a blocked user cannot open a conversation with the
//! blocker (404 `user_not_found`, as for a user that does not exist) nor
//! send in an existing one (404 `room_not_found`, as for a conversation
//! that does not exist: checked inside the append), so the blocker hears
//! nothing from them in direct rooms. Group rooms are not filtered.

use chat_core::user::BlockedUser;
use chat_core::{ErrorCode, Timestamp, UserId};

use super::ChatService;
use crate::error::{ApiError, ApiResult};

impl ChatService {
    /// `POST /api/users/{id}/block/`; blocking twice is not an error.
    pub(crate) async fn block(&self, user: UserId, other: UserId) -> ApiResult<()> {
        if other == user {
            return Err(ApiError::invalid_field("id", "you cannot block yourself"));
        }
        if self.storage.user(other).await?.is_none() {
            return Err(ApiError::new(ErrorCode::UserNotFound));
        }
        if self
            .storage
            .block_user(user, other, Timestamp::now())
            .await?
        {
            tracing::info!(%user, blocked = %other, "user blocked");
        }
        Ok(())
    }

    /// `DELETE /api/users/{id}/block/`; unblocking someone not blocked is
    /// not an error.
    pub(crate) async fn unblock(&self, user: UserId, other: UserId) -> ApiResult<()> {
        self.storage.unblock_user(user, other).await?;
        Ok(())
    }

    /// `GET /api/users/blocked/`: the newest block first.
    pub(crate) async fn blocked(&self, user: UserId) -> ApiResult<Vec<BlockedUser>> {
        Ok(self
            .storage
            .blocked_users(user)
            .await?
            .into_iter()
            .map(|(u, at)| BlockedUser {
                id: u.id,
                username: u.username,
                display_name: u.display_name,
                blocked_at: at,
            })
            .collect())
    }
}
