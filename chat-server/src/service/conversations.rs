//! One-to-one conversations: rooms of type `direct` with exactly two
//! members, at most one per pair (the storage enforces it). Every room rule
//! applies to them; strangers get "not found", never a hint they exist.

use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationResponse, UnreadCount,
};
use chat_core::room::RoomType;
use chat_core::user::OtherUser;
use chat_core::{ErrorCode, RoomId, Seq, Timestamp, UserId};

use super::ChatService;
use super::rooms::{last_message_view, room_not_found};
use crate::error::{ApiError, ApiResult};
use crate::storage::{self, RoomRecord, UserRecord};

const DEFAULT_PAGE: u32 = 50;

/// A conversation opened for a caller.
#[derive(Debug, Clone)]
pub(crate) struct OpenedConversation {
    pub(crate) room: RoomRecord,
    pub(crate) other: UserRecord,
    /// Whether this call created it.
    pub(crate) created: bool,
}

impl ChatService {
    /// Create-or-get the conversation between `user` and `other`.
    pub(crate) async fn open_conversation(
        &self,
        user: UserId,
        other: UserId,
    ) -> ApiResult<OpenedConversation> {
        if other == user {
            return Err(ApiError::invalid_field(
                "user_id",
                "You cannot start a conversation with yourself",
            ));
        }
        let other = self
            .storage
            .user(other)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound))?;
        // Blocked by them: they are as good as absent.
        if self.storage.is_blocked(other.id, user).await? {
            return Err(ApiError::new(ErrorCode::UserNotFound));
        }
        let (room, created) = self
            .storage
            .direct_room(user, other.id, Timestamp::now())
            .await?;
        if created {
            tracing::info!(room = %room.id, a = %user, b = %other.id, "conversation created");
        }
        Ok(OpenedConversation {
            room,
            other,
            created,
        })
    }

    /// `POST /api/chats/conversations/create/`.
    pub(crate) async fn create_conversation(
        &self,
        user: UserId,
        other: UserId,
    ) -> ApiResult<CreateConversationResponse> {
        let opened = self.open_conversation(user, other).await?;
        Ok(CreateConversationResponse {
            id: opened.room.id,
            other_user: other_user(&opened.other),
            created: opened.created,
            created_at: opened.room.created_at,
        })
    }

    /// `GET /api/chats/conversations/`: most recent activity first.
    pub(crate) async fn conversations(&self, user: UserId) -> ApiResult<Vec<ConversationSummary>> {
        let list = self.storage.user_conversations(user).await?;
        Ok(list
            .into_iter()
            .map(|c| ConversationSummary {
                id: c.room.room.id,
                other_user: other_user(&c.other),
                last_message: last_message_view(user, &c.room),
                unread_count: c.room.unread,
                mention_count: c.room.mentions,
                created_at: c.room.room.created_at,
            })
            .collect())
    }

    /// `GET /api/chats/conversations/{id}/`: the newest page of messages
    /// below `before`, oldest first. 404 unless the caller takes part.
    pub(crate) async fn conversation(
        &self,
        user: UserId,
        id: RoomId,
        before: Option<Seq>,
        limit: Option<u32>,
    ) -> ApiResult<ConversationDetail> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=super::messages::MAX_HISTORY_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1..={}", super::messages::MAX_HISTORY_PAGE),
            ));
        }
        if before.is_some_and(|b| b < 1) {
            return Err(ApiError::invalid_field("before", "must be at least 1"));
        }
        let room = self
            .storage
            .room(id)
            .await?
            .filter(|r| r.kind == RoomType::Direct)
            .ok_or_else(room_not_found)?;
        let people = self.storage.room_people(room.id).await?;
        if !people.iter().any(|p| p.user == user) {
            return Err(room_not_found());
        }
        let other_id = people.iter().find(|p| p.user != user).map(|p| p.user);
        let other = match other_id {
            Some(id) => self.storage.user(id).await?,
            None => None,
        }
        .ok_or_else(room_not_found)?;
        let (messages, _) = self
            .page(
                user,
                room.id,
                storage::HistoryQuery {
                    before,
                    after: None,
                    limit,
                },
            )
            .await?;
        Ok(ConversationDetail {
            id: room.id,
            other_user: other_user(&other),
            messages,
            created_at: room.created_at,
        })
    }

    /// `GET /api/chats/unread-count/`: over every room and conversation.
    pub(crate) async fn unread_count(&self, user: UserId) -> ApiResult<UnreadCount> {
        Ok(UnreadCount {
            unread_count: self.storage.unread_total(user).await?,
        })
    }
}

/// The other participant as the documents showed it. Participants of a
/// conversation see each other's email, as the contract's shape has it.
fn other_user(u: &UserRecord) -> OtherUser {
    OtherUser {
        id: u.id,
        name: u.display_name.clone(),
        email: u.email.clone(),
    }
}
