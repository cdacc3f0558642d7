//! Rooms and membership, and the one access rule every room operation goes
//! through.
//!
//! Every lookup of a room for a caller is one of one family, named for what
//! the caller may do with the answer:
//! - [`ChatService::room_with_access`]: the room and the caller's standing,
//!   `None` if there is no such room (the caller decides).
//! - [`ChatService::room_as_member`]: to read or write it; 404 if hidden,
//!   403 `not_member` otherwise.
//! - [`ChatService::room_as_viewer`]: to see it (details, leaving); 404 if
//!   hidden.
//! - [`ChatService::room_to_listen`]: to subscribe a socket; joins public
//!   rooms on the way, creates unknown names under `auto_create_rooms`.
//! - [`ChatService::access_to`]: the standing towards a room already found.

use std::collections::{BTreeSet, HashMap};

use chat_core::api::{CreateRoomRequest, InviteRequest};
use chat_core::message::LastMessage;
use chat_core::moderation::{DirectoryQuery, DirectoryResponse, DirectoryRoom, Role};
use chat_core::room::{JoinedRoom, Membership, Room, RoomListItem, RoomType};
use chat_core::{ErrorCode, RoomId, RoomRef, Timestamp, UserId};

use super::ChatService;
use crate::error::{ApiError, ApiResult};
use crate::event::Event;
use crate::storage::roles::MUTED_FOR_GOOD;
use crate::storage::{Conflict, MemberState, NewRoom, RoomKey, RoomRecord, StorageError, UserRoom};

/// How a user stands towards a room, which decides every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Member,
    /// Invited, not joined: may see the room and join it, not read or write.
    Invited,
    /// Not in the room, which is public: may see and join it.
    PublicStranger,
    /// Not in a private, game or direct room: gets "not found", so that no
    /// call reveals whether such a room exists.
    Hidden,
}

/// The access rule: how a user in `state` (if any) stands towards a room of
/// type `kind`.
fn access_of(kind: RoomType, state: Option<MemberState>) -> Access {
    match state {
        Some(MemberState::Member) => Access::Member,
        Some(MemberState::Invited) => Access::Invited,
        None if kind == RoomType::Public => Access::PublicStranger,
        None => Access::Hidden,
    }
}

/// Why someone who is not a member may not read or write a room: 404 if it
/// is hidden from them, 403 `not_member` otherwise.
fn not_member(access: Access) -> ApiError {
    match access {
        Access::Hidden => room_not_found(),
        Access::Member | Access::Invited | Access::PublicStranger => {
            ApiError::new(ErrorCode::NotMember)
        }
    }
}

/// An append refused by storage (`StorageError::NotMember`), answered as
/// [`ChatService::room_as_member`] would have.
pub(crate) fn refused_append(kind: RoomType, state: Option<MemberState>) -> ApiError {
    not_member(access_of(kind, state))
}

impl ChatService {
    /// The caller's access to a room.
    pub(crate) async fn access_to(&self, user: UserId, room: &RoomRecord) -> ApiResult<Access> {
        let state = self.storage.membership(room.id, user).await?;
        Ok(access_of(room.kind, state))
    }

    /// Finds a room by id or name with the caller's access to it, in one
    /// storage read.
    pub(crate) async fn room_with_access(
        &self,
        user: UserId,
        room: &RoomRef,
    ) -> ApiResult<Option<(RoomRecord, Access)>> {
        // A name made of digits is an id: names may not be all digits.
        let key = match (room.as_id(), room) {
            (Some(id), _) => RoomKey::Id(id),
            (None, RoomRef::Name(name)) => RoomKey::Name(name),
            (None, RoomRef::Id(id)) => RoomKey::Id(*id),
        };
        Ok(self
            .storage
            .room_for(key, user)
            .await?
            .map(|(record, state)| {
                let access = access_of(record.kind, state);
                (record, access)
            }))
    }

    /// A room the caller is a member of, for reading and writing: 404 if it
    /// does not exist or is hidden from the caller, 403 `not_member` if the
    /// caller could see it but has not joined.
    pub(crate) async fn room_as_member(
        &self,
        user: UserId,
        room: &RoomRef,
    ) -> ApiResult<RoomRecord> {
        let (record, access) = self
            .room_with_access(user, room)
            .await?
            .ok_or_else(room_not_found)?;
        match access {
            Access::Member => Ok(record),
            other => Err(not_member(other)),
        }
    }

    /// A room a socket may listen to: members get it, public rooms are joined
    /// on the way, unknown names are created when `auto_create` is on.
    pub(crate) async fn room_to_listen(
        &self,
        user: UserId,
        room: &RoomRef,
        auto_create: bool,
    ) -> ApiResult<RoomRecord> {
        let (record, access) = match self.room_with_access(user, room).await? {
            Some(found) => found,
            None => match room {
                RoomRef::Name(name) if auto_create && room.as_id().is_none() => {
                    let record = self.auto_create(user, name).await?;
                    let access = self.access_to(user, &record).await?;
                    (record, access)
                }
                _ => return Err(room_not_found()),
            },
        };
        match access {
            Access::Member => Ok(record),
            // Anyone may join a public room, whether invited to it or not.
            Access::PublicStranger | Access::Invited if record.kind == RoomType::Public => {
                self.storage.join_room(record.id, user).await?;
                Ok(record)
            }
            Access::Invited | Access::PublicStranger => Err(ApiError::new(ErrorCode::NotMember)),
            Access::Hidden => Err(room_not_found()),
        }
    }

    async fn auto_create(&self, user: UserId, name: &str) -> ApiResult<RoomRecord> {
        let name = validate_room_name(Some(name))?;
        let created = self
            .storage
            .create_room(NewRoom {
                name: name.clone(),
                kind: RoomType::Public,
                creator: user,
                invited: Vec::new(),
                created_at: Timestamp::now(),
            })
            .await;
        match created {
            Ok(r) => {
                tracing::info!(room = %r.id, %name, "room auto-created");
                Ok(r)
            }
            // Someone else created it a moment ago.
            Err(StorageError::Conflict(Conflict::RoomName)) => self
                .storage
                .room_by_name(&name)
                .await?
                .ok_or_else(room_not_found),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /chat/create-room/`.
    pub(crate) async fn create_room(
        &self,
        user: UserId,
        req: CreateRoomRequest,
    ) -> ApiResult<Room> {
        let name = validate_room_name(req.name.as_deref())?;
        let kind = req.kind.unwrap_or_default();
        if kind == RoomType::Direct {
            return Err(ApiError::invalid_field(
                "type",
                "must be public, private or game; conversations are created with /api/chats/conversations/create/",
            ));
        }
        let invited = self
            .existing_users(&req.invited_users, "invited_users")
            .await?;
        let record = self
            .storage
            .create_room(NewRoom {
                name,
                kind,
                creator: user,
                invited,
                created_at: Timestamp::now(),
            })
            .await
            .map_err(super::rooms::name_taken)?;
        tracing::info!(room = %record.id, name = %record.name, creator = %user, "room created");
        self.room_view(&record).await
    }

    /// `POST /chat/join-room/`.
    pub(crate) async fn join_room(&self, user: UserId, room: RoomId) -> ApiResult<JoinedRoom> {
        let record = self.storage.room(room).await?.ok_or_else(room_not_found)?;
        match self.access_to(user, &record).await? {
            Access::Member => {}
            Access::Invited | Access::PublicStranger => {
                self.storage.join_room(record.id, user).await?;
            }
            // The owner knows the room exists (they left it): telling
            // them they may not come back reveals nothing.
            Access::Hidden if record.owner == user => {
                return Err(ApiError::new(ErrorCode::NotAuthorized));
            }
            // Answered exactly like a room that does not exist: 403 here
            // would tell a stranger that a private room has this id.
            Access::Hidden => return Err(room_not_found()),
        }
        let view = self.room_view(&record).await?;
        Ok(JoinedRoom {
            id: view.id,
            name: view.name,
            kind: view.kind,
            members: view.members,
        })
    }

    /// `GET /chat/rooms/`: group rooms the caller is in or invited to, newest
    /// activity first. Conversations have their own list.
    pub(crate) async fn list_rooms(&self, user: UserId) -> ApiResult<Vec<RoomListItem>> {
        let rooms = self.storage.user_rooms(user).await?;
        let now = Timestamp::now();
        let creators: Vec<UserId> = rooms.iter().map(|r| r.room.creator).collect();
        let names = self.usernames(&creators).await?;
        let mut out = Vec::with_capacity(rooms.len());
        for r in rooms
            .into_iter()
            .filter(|r| r.room.kind != RoomType::Direct)
        {
            let member = r.state == MemberState::Member;
            let last_message = if member {
                last_message_view(user, &r)
            } else {
                None
            };
            out.push(RoomListItem {
                id: r.room.id,
                name: r.room.name.clone(),
                kind: r.room.kind,
                creator: names.get(&r.room.creator).cloned().unwrap_or_default(),
                membership: if member {
                    Membership::Member
                } else {
                    Membership::Invited
                },
                member_count: r.member_count,
                // Storage's count: messages only, 0 for invitees.
                unread_count: r.unread,
                mention_count: r.mentions,
                last_message,
                created_at: r.room.created_at,
                role: member.then_some(r.role),
                muted_until: r.muted_until.filter(|until| {
                    member && *until > now && until.unix_micros() != MUTED_FOR_GOOD
                }),
                muted: member && r.muted_until.is_some_and(|until| until > now),
            });
        }
        Ok(out)
    }

    /// `GET /chat/rooms/{id}/`: members, and anyone for a public room; 404
    /// for non-members of other rooms, invitees included (the contract's
    /// rule; an invitee has the room in its list and gets it from joining).
    pub(crate) async fn room_detail(&self, user: UserId, room: RoomId) -> ApiResult<Room> {
        let record = self.storage.room(room).await?.ok_or_else(room_not_found)?;
        if record.kind != RoomType::Public && self.access_to(user, &record).await? != Access::Member
        {
            return Err(room_not_found());
        }
        self.room_view(&record).await
    }

    /// `GET /chat/rooms/{id}/online/`: members only, like history; everyone
    /// with a socket in the room on any instance.
    pub(crate) async fn online(&self, user: UserId, room: RoomId) -> ApiResult<Vec<UserId>> {
        let record = self
            .room_as_member(user, &RoomRef::Id(room))
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotMember => room_not_found(),
                _ => e,
            })?;
        Ok(self.hub.online(record.id).await)
    }

    /// `POST /chat/rooms/{id}/invite/`: members only.
    pub(crate) async fn invite(
        &self,
        user: UserId,
        room: RoomId,
        req: InviteRequest,
    ) -> ApiResult<Room> {
        let record = self.room_as_viewer(user, room).await?;
        if self.access_to(user, &record).await? != Access::Member {
            return Err(ApiError::new(ErrorCode::NotMember));
        }
        if record.kind == RoomType::Direct {
            return Err(ApiError::invalid_field(
                "user_ids",
                "a conversation has exactly two members",
            ));
        }
        let users = self.existing_users(&req.user_ids, "user_ids").await?;
        // Storage refuses a banned user under the room's lock, and stops
        // there; asking first keeps the call all or nothing.
        let bans = self.storage.bans(record.id, Timestamp::now()).await?;
        if let Some(ban) = bans.iter().find(|b| users.contains(&b.user)) {
            return Err(ApiError::with_message(
                ErrorCode::Banned,
                format!("{} is banned from this room", ban.username),
            ));
        }
        self.storage.invite(record.id, user, &users).await?;
        self.room_view(&record).await
    }

    /// `POST /chat/rooms/{id}/leave/`: members and invitees leave; the
    /// caller's sockets stop receiving the room.
    pub(crate) async fn leave_room(&self, user: UserId, room: RoomId) -> ApiResult<()> {
        let record = self.room_as_viewer(user, room).await?;
        if record.kind == RoomType::Direct {
            return Err(ApiError::invalid_field(
                "room",
                "a conversation cannot be left",
            ));
        }
        // The `left` event, published at its commit, takes the room away
        // from the caller's sockets.
        self.storage.leave_room(record.id, user).await?;
        Ok(())
    }

    /// `DELETE /chat/rooms/{id}/`: the owner deletes the room and its
    /// history; connected sockets get `room_deleted`.
    pub(crate) async fn delete_room(&self, user: UserId, room: RoomId) -> ApiResult<()> {
        let record = self.storage.room(room).await?.ok_or_else(room_not_found)?;
        // The owner may delete even after leaving; anyone else must see
        // the room to be told they may not.
        if record.owner != user {
            if self.access_to(user, &record).await? == Access::Hidden {
                return Err(room_not_found());
            }
            return Err(ApiError::with_message(
                ErrorCode::NotAuthorized,
                "You are not authorized to delete this room",
            ));
        }
        if self.storage.delete_room(record.id).await? {
            tracing::info!(room = %record.id, by = %user, "room deleted");
            self.hub.publish(Event::room_deleted(record.id));
            self.sweep_files();
        }
        Ok(())
    }

    async fn room_as_viewer(&self, user: UserId, room: RoomId) -> ApiResult<RoomRecord> {
        let record = self.storage.room(room).await?.ok_or_else(room_not_found)?;
        match self.access_to(user, &record).await? {
            Access::Hidden => Err(room_not_found()),
            _ => Ok(record),
        }
    }

    /// `GET /chat/directory/`: public rooms by name, never private, game or
    /// direct ones, whoever asks.
    pub(crate) async fn directory(&self, query: DirectoryQuery) -> ApiResult<DirectoryResponse> {
        let limit = query.limit.unwrap_or(DEFAULT_DIRECTORY_PAGE);
        if !(1..=MAX_DIRECTORY_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1..={MAX_DIRECTORY_PAGE}"),
            ));
        }
        for (field, value) in [("q", &query.q), ("after", &query.after)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > 64) {
                return Err(ApiError::invalid_field(field, "at most 64 characters"));
            }
        }
        let mut found = self
            .storage
            .public_rooms(query.q.as_deref(), query.after.as_deref(), limit + 1)
            .await?;
        let has_more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok(DirectoryResponse {
            rooms: found
                .into_iter()
                .map(|p| DirectoryRoom {
                    id: p.room.id,
                    name: p.room.name,
                    topic: p.room.profile.topic,
                    description: p.room.profile.description,
                    avatar_url: p.room.profile.avatar_url,
                    member_count: p.member_count,
                    last_activity_at: p.last_activity_at,
                    created_at: p.room.created_at,
                })
                .collect(),
            has_more,
        })
    }

    pub(crate) async fn room_view(&self, record: &RoomRecord) -> ApiResult<Room> {
        let people = self.storage.room_people(record.id).await?;
        let creator = match people.iter().find(|p| p.user == record.creator) {
            Some(p) => p.username.clone(),
            None => self
                .usernames(&[record.creator])
                .await?
                .remove(&record.creator)
                .unwrap_or_default(),
        };
        let direct = record.kind == RoomType::Direct;
        let owner = match people.iter().find(|p| p.user == record.owner) {
            Some(p) => p.username.clone(),
            None => self
                .usernames(&[record.owner])
                .await?
                .remove(&record.owner)
                .unwrap_or_default(),
        };
        let admins = people
            .iter()
            .filter(|p| !direct && p.state == MemberState::Member && p.role == Role::Admin)
            .map(|p| p.username.clone())
            .collect();
        let (members, invited): (Vec<_>, Vec<_>) = people
            .into_iter()
            .partition(|p| p.state == MemberState::Member);
        Ok(Room {
            id: record.id,
            name: record.name.clone(),
            kind: record.kind,
            creator,
            invited_users: invited.into_iter().map(|p| p.username).collect(),
            members: members.into_iter().map(|p| p.username).collect(),
            created_at: record.created_at,
            owner: (!direct).then_some(owner),
            admins,
            topic: record.profile.topic.clone(),
            description: record.profile.description.clone(),
            avatar_url: record.profile.avatar_url.clone(),
            announcement: record.profile.announcement,
            slow_mode_seconds: record.profile.slow_mode,
        })
    }

    async fn usernames(&self, ids: &[UserId]) -> ApiResult<HashMap<UserId, String>> {
        let unique: BTreeSet<UserId> = ids.iter().copied().collect();
        let ids: Vec<UserId> = unique.into_iter().collect();
        Ok(self
            .storage
            .users_by_ids(&ids)
            .await?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect())
    }

    /// The ids, deduplicated, after checking each names a user.
    async fn existing_users(&self, ids: &[UserId], field: &str) -> ApiResult<Vec<UserId>> {
        let unique: BTreeSet<UserId> = ids.iter().copied().collect();
        let wanted: Vec<UserId> = unique.into_iter().collect();
        let found: BTreeSet<UserId> = self
            .storage
            .users_by_ids(&wanted)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !found.contains(id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid_field(
                field,
                format!("unknown user id {}", missing.join(", ")),
            ));
        }
        Ok(wanted)
    }
}

/// The directory's page size: default and largest.
pub(crate) const DEFAULT_DIRECTORY_PAGE: u32 = 50;
pub(crate) const MAX_DIRECTORY_PAGE: u32 = 100;

/// The newest message of a listed room as `viewer` sees it.
pub(crate) fn last_message_view(viewer: UserId, r: &UserRoom) -> Option<LastMessage> {
    r.last_message.as_ref().map(|m| LastMessage {
        body: m.body.clone(),
        created_at: m.created_at,
        sender_id: m.sender,
        is_read: super::messages::is_read(viewer, m.sender, m.seq, r.read_seq, r.others_read_seq),
        deleted: m.deleted,
    })
}

/// A storage error as the API tells it, a taken room name as
/// `room_name_taken`.
pub(crate) fn name_taken(e: StorageError) -> ApiError {
    match e {
        StorageError::Conflict(Conflict::RoomName) => ApiError::new(ErrorCode::RoomNameTaken),
        other => other.into(),
    }
}

pub(crate) fn room_not_found() -> ApiError {
    ApiError::new(ErrorCode::RoomNotFound)
}

/// 1–64 characters after trimming, not all digits (they would read as an
/// id), no `/` (rooms appear in paths) and no control characters.
pub(crate) fn validate_room_name(name: Option<&str>) -> ApiResult<String> {
    let name = name.map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::new(ErrorCode::RoomNameRequired));
    }
    let why = if name.chars().count() > 64 {
        Some("Room name must be at most 64 characters")
    } else if name.chars().all(|c| c.is_ascii_digit()) {
        Some("Room name cannot be all digits")
    } else if name.chars().any(|c| c == '/' || c.is_control()) {
        Some("Room name cannot contain '/' or control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(ApiError::invalid_field("name", why)),
        None => Ok(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_contract() {
        assert_eq!(
            validate_room_name(Some("  lobby ")).expect("valid"),
            "lobby"
        );
        assert_eq!(
            validate_room_name(None).expect_err("missing").code,
            ErrorCode::RoomNameRequired
        );
        assert_eq!(
            validate_room_name(Some("   ")).expect_err("blank").code,
            ErrorCode::RoomNameRequired
        );
        assert_eq!(
            validate_room_name(Some("123")).expect_err("digits").code,
            ErrorCode::InvalidInput
        );
        assert!(validate_room_name(Some("room 42")).is_ok());
        assert!(validate_room_name(Some(&"x".repeat(65))).is_err());
        assert!(validate_room_name(Some("a/b")).is_err());
    }
}
