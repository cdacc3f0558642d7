//! Group rooms: `/chat/create-room/`, `/chat/join-room/`, `/chat/rooms/…`.

use chat_core::api::{CreateRoomRequest, InviteRequest, JoinRoomRequest};
use chat_core::moderation::{
    Ban, BansResponse, DirectoryResponse, ModerateRequest, ModerateResponse, RoomSettings,
};
use chat_core::room::{JoinedRoom, OnlineResponse, Room, RoomListItem};
use chat_core::timeline::MemberEvent;
use chat_core::{RoomId, UserId};

use crate::client::Req;
use crate::{ChatClient, ClientError};

impl ChatClient {
    /// Creates a room (`POST /chat/create-room/`); the caller becomes its
    /// creator and first member. The type defaults to `private`.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) with
    /// `room_name_required`, or `invalid_input` for an unknown invited user;
    /// [`Conflict`](crate::ErrorKind::Conflict) with `room_name_taken`.
    ///
    /// ```no_run
    /// use chat_client::{CreateRoomRequest, RoomType};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let room = client
    ///     .create_room(CreateRoomRequest {
    ///         name: Some("lobby".into()),
    ///         kind: Some(RoomType::Public),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("room {} created", room.id);
    /// # Ok(()) }
    /// ```
    pub async fn create_room(&self, request: CreateRoomRequest) -> Result<Room, ClientError> {
        self.call(Req::post("chat/create-room/").json(&request)?)
            .await
    }

    /// Joins a public room, or a private one the caller was invited to
    /// (`POST /chat/join-room/`). Joining a room twice is fine.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) with
    /// `room_not_found` for an unknown room and for a private one the caller
    /// is not invited to (the server does not tell them apart);
    /// [`Forbidden`](crate::ErrorKind::Forbidden) with `not_authorized` for
    /// the creator of a private room who left it.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let joined = client.join_room(chat_client::RoomId(7)).await?;
    /// println!("{} members", joined.members.len());
    /// # Ok(()) }
    /// ```
    pub async fn join_room(&self, room: RoomId) -> Result<JoinedRoom, ClientError> {
        self.call(Req::post("chat/join-room/").json(&JoinRoomRequest { room_id: room })?)
            .await
    }

    /// The rooms the caller is a member of or invited to, with unread counts
    /// and last messages (`GET /chat/rooms/`).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// for room in client.rooms().await? {
    ///     println!("{} ({} unread)", room.name, room.unread_count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rooms(&self) -> Result<Vec<RoomListItem>, ClientError> {
        self.call(Req::get("chat/rooms/")).await
    }

    /// One room with its members and invited users (`GET /chat/rooms/{id}/`).
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) for an unknown room,
    /// or a non-public room the caller is not a member of (invited or not).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let room = client.room(chat_client::RoomId(7)).await?;
    /// println!("{} by {}", room.name, room.creator);
    /// # Ok(()) }
    /// ```
    pub async fn room(&self, room: RoomId) -> Result<Room, ClientError> {
        self.call(Req::get(format!("chat/rooms/{room}/"))).await
    }

    /// Invites users to a room (`POST /chat/rooms/{id}/invite/`); returns
    /// the room as it now is.
    ///
    /// Errors: [`Forbidden`](crate::ErrorKind::Forbidden) unless the caller
    /// is a member; [`InvalidInput`](crate::ErrorKind::InvalidInput) for an
    /// unknown user id.
    ///
    /// ```no_run
    /// use chat_client::{RoomId, UserId};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let room = client.invite(RoomId(7), &[UserId(2), UserId(3)]).await?;
    /// println!("invited: {:?}", room.invited_users);
    /// # Ok(()) }
    /// ```
    pub async fn invite(&self, room: RoomId, users: &[UserId]) -> Result<Room, ClientError> {
        let body = InviteRequest {
            user_ids: users.to_vec(),
        };
        self.call(Req::post(format!("chat/rooms/{room}/invite/")).json(&body)?)
            .await
    }

    /// Moderates a member (`POST /chat/rooms/{id}/moderate/`): kick, ban,
    /// unban, mute, unmute, set a role, hand the room over. Returns the
    /// `member` event it appended, `None` if it changed nothing.
    ///
    /// ```no_run
    /// use chat_client::{ModerateRequest, ModerationAction, RoomId, UserId};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let mut kick = ModerateRequest::new(UserId(3), ModerationAction::Kick);
    /// kick.reason = Some("off topic".to_owned());
    /// client.moderate(RoomId(7), &kick).await?;
    /// # Ok(()) }
    /// ```
    pub async fn moderate(
        &self,
        room: RoomId,
        request: &ModerateRequest,
    ) -> Result<Option<MemberEvent>, ClientError> {
        let answer: ModerateResponse = self
            .call(Req::post(format!("chat/rooms/{room}/moderate/")).json(request)?)
            .await?;
        Ok(answer.event)
    }

    /// Changes a room's settings (`PATCH /chat/rooms/{id}/`): only what is
    /// given changes; an empty string clears a text. Admins and the owner.
    /// Returns the room as it now stands.
    ///
    /// ```no_run
    /// use chat_client::{RoomId, RoomSettings};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let settings = RoomSettings {
    ///     topic: Some("Release day".to_owned()),
    ///     slow_mode_seconds: Some(30),
    ///     ..RoomSettings::default()
    /// };
    /// client.update_room(RoomId(7), &settings).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_room(
        &self,
        room: RoomId,
        settings: &RoomSettings,
    ) -> Result<Room, ClientError> {
        self.call(Req::patch(format!("chat/rooms/{room}/")).json(settings)?)
            .await
    }

    /// A page of the public directory (`GET /chat/directory/`): public
    /// rooms by name whose name starts with `prefix` (case-insensitive),
    /// after the name `after`.
    pub async fn directory(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DirectoryResponse, ClientError> {
        self.call(
            Req::get("chat/directory/")
                .query("q", prefix)
                .query("after", after)
                .query("limit", limit),
        )
        .await
    }

    /// The room's bans in force, newest first (`GET
    /// /chat/rooms/{id}/bans/`): its admins and owner only.
    pub async fn bans(&self, room: RoomId) -> Result<Vec<Ban>, ClientError> {
        let answer: BansResponse = self
            .call(Req::get(format!("chat/rooms/{room}/bans/")))
            .await?;
        Ok(answer.bans)
    }

    /// Who is online in the room now, on any server instance (`GET
    /// /chat/rooms/{id}/online/`): members only.
    pub async fn online(&self, room: RoomId) -> Result<Vec<UserId>, ClientError> {
        let answer: OnlineResponse = self
            .call(Req::get(format!("chat/rooms/{room}/online/")))
            .await?;
        Ok(answer.users)
    }

    /// Leaves a room, or declines an invitation
    /// (`POST /chat/rooms/{id}/leave/`).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// client.leave_room(chat_client::RoomId(7)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn leave_room(&self, room: RoomId) -> Result<(), ClientError> {
        self.call_empty(Req::post(format!("chat/rooms/{room}/leave/")))
            .await
    }

    /// Deletes a room and its history (`DELETE /chat/rooms/{id}/`); only
    /// its creator may.
    ///
    /// Errors: [`Forbidden`](crate::ErrorKind::Forbidden) with
    /// `not_authorized` for anyone but the creator.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// client.delete_room(chat_client::RoomId(7)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_room(&self, room: RoomId) -> Result<(), ClientError> {
        self.call_empty(Req::delete(format!("chat/rooms/{room}/")))
            .await
    }
}
