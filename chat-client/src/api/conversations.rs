//! One-to-one conversations: `/api/chats/…`.

use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationRequest, CreateConversationResponse,
    UnreadCount,
};
use chat_core::{RoomId, Seq, UserId};

use crate::client::Req;
use crate::{ChatClient, ClientError};

impl ChatClient {
    /// The conversation with `user`, created if there is none yet
    /// (`POST /api/chats/conversations/create/`); `created` tells which.
    /// A conversation is a room: send to it and read its history with its
    /// `id`.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) for
    /// yourself; [`NotFound`](crate::ErrorKind::NotFound) with
    /// `user_not_found`.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let conv = client.create_conversation(chat_client::UserId(2)).await?;
    /// client.send(conv.id, "hi!", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_conversation(
        &self,
        user: UserId,
    ) -> Result<CreateConversationResponse, ClientError> {
        let body = CreateConversationRequest { user_id: user };
        self.call(Req::post("api/chats/conversations/create/").json(&body)?)
            .await
    }

    /// The caller's conversations, most recent activity first
    /// (`GET /api/chats/conversations/`).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// for c in client.conversations().await? {
    ///     println!("{}: {} unread", c.other_user.name, c.unread_count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        self.call(Req::get("api/chats/conversations/")).await
    }

    /// A conversation with one page of its messages, oldest first
    /// (`GET /api/chats/conversations/{id}/`): the newest `limit` (1..=200,
    /// server default 50), or those with `seq` below `before`.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) for a conversation
    /// the caller is not part of.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let detail = client.conversation(chat_client::RoomId(9), None, Some(20)).await?;
    /// for m in &detail.messages {
    ///     println!("{}: {}", m.sender_name, m.body);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn conversation(
        &self,
        id: RoomId,
        before: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<ConversationDetail, ClientError> {
        self.call(
            Req::get(format!("api/chats/conversations/{id}/"))
                .query("before", before)
                .query("limit", limit),
        )
        .await
    }

    /// Unread messages over every room and conversation of the caller
    /// (`GET /api/chats/unread-count/`).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// println!("{} unread", client.unread_count().await?);
    /// # Ok(()) }
    /// ```
    pub async fn unread_count(&self) -> Result<u64, ClientError> {
        let answer: UnreadCount = self.call(Req::get("api/chats/unread-count/")).await?;
        Ok(answer.unread_count)
    }
}
