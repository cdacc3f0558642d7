//! The server API: what a host's backend does with an API key. Users are
//! named by the host's id for them (`external_id`), as its tokens name
//! them; a bot is the user `bot:{name}`, made on first use.
//!
//! An API key is `chat_key_` and 64 hex digits (256 random bits), shown
//! once at creation; storage keeps its SHA-256 (a secret that long needs
//! no slow hash, and a hash lookup finds it in one indexed read).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chat_core::api::TokenResponse;
use chat_core::room::{Room, RoomType};
use chat_core::server_api::{
    ChangeMembersRequest, ServerCreateRoomRequest, ServerSendRequest, ServerUser,
    SetMembersRequest, UpsertUserRequest,
};
use chat_core::timeline::{TimelineQuery, TimelineResponse};
use chat_core::{ErrorCode, Message, RoomId, RoomRef, Timestamp, UserId};

use super::ChatService;
use super::messages::Draft;
use super::users::private_view;
use crate::error::{ApiError, ApiResult};
use crate::identity::Identity;
use crate::storage::{
    ApiKeyRecord, Conflict, MemberState, NewRoom, Storage, StorageError, UserRecord,
};

/// Every API key starts so: a bearer token that does is never taken for a
/// user's token (nor shown to the authenticator).
pub(crate) const API_KEY_PREFIX: &str = "chat_key_";

/// The external ids of bots: `bot:{name}`. No host token may name one.
pub(crate) const BOT_PREFIX: &str = "bot:";

/// How often a key's `last_used_at` is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The longest external id, in bytes.
const MAX_EXTERNAL_ID_BYTES: usize = 255;

/// Why an API key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// Empty, longer than 64 characters, or with control characters.
    #[error("an API key's name is 1 to 64 characters without control characters")]
    InvalidName,
    /// A live key has the name.
    #[error("a live API key is already named {0:?}")]
    Taken(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A new key: its record and the key itself, to show once.
pub(crate) async fn create_api_key(
    storage: &dyn Storage,
    name: &str,
) -> Result<(ApiKeyRecord, String), ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiKeyError::InvalidName);
    }
    let secret: [u8; 32] = rand::random();
    let key = format!(
        "{API_KEY_PREFIX}{}",
        secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let record = storage
        .create_api_key(name, &hash_key(&key), Timestamp::now())
        .await
        .map_err(|e| match e {
            StorageError::Conflict(Conflict::ApiKeyName) => ApiKeyError::Taken(name.to_owned()),
            other => other.into(),
        })?;
    Ok((record, key))
}

/// SHA-256 of a key, in hex, as storage keeps it.
pub(super) fn hash_key(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When each key's use was last written.
#[derive(Debug, Default)]
pub(crate) struct KeyUse {
    touched: Mutex<HashMap<i64, Instant>>,
}

impl KeyUse {
    /// Whether `key`'s use should be written now.
    fn due(&self, key: i64) -> bool {
        let mut touched = self
            .touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match touched.get(&key) {
            Some(at) if at.elapsed() < TOUCH_EVERY => false,
            _ => {
                touched.insert(key, Instant::now());
                true
            }
        }
    }
}

fn api_key_required() -> ApiError {
    ApiError::with_message(
        ErrorCode::Unauthorized,
        "This call needs a live API key: Authorization: Bearer chat_key_…",
    )
}

fn user_not_found(external_id: &str) -> ApiError {
    ApiError::with_message(
        ErrorCode::UserNotFound,
        format!("No user with external id {external_id:?}"),
    )
}

fn valid_external_id(external_id: &str) -> ApiResult<()> {
    if external_id.is_empty()
        || external_id.len() > MAX_EXTERNAL_ID_BYTES
        || external_id.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "external_id",
            "An external id is 1 to 255 bytes without control characters",
        ));
    }
    Ok(())
}

impl ChatService {
    /// The live API key `token` is; a user's token, a revoked or unknown
    /// key all get 401.
    pub(crate) async fn api_key(&self, token: &str) -> ApiResult<ApiKeyRecord> {
        if !token.starts_with(API_KEY_PREFIX) {
            return Err(api_key_required());
        }
        let key = self
            .storage
            .api_key_by_hash(&hash_key(token))
            .await?
            .ok_or_else(api_key_required)?;
        if self.key_use.due(key.id) {
            // Bookkeeping: a failed write must not fail the call.
            if let Err(e) = self.storage.touch_api_key(key.id, Timestamp::now()).await {
                tracing::warn!(key = key.id, error = %e, "could not record an API key's use");
            }
        }
        Ok(key)
    }

    /// `PUT /server/users/{external_id}/`.
    pub(crate) async fn server_upsert_user(
        &self,
        external_id: &str,
        req: UpsertUserRequest,
    ) -> ApiResult<ServerUser> {
        valid_external_id(external_id)?;
        let bot = external_id.starts_with(BOT_PREFIX);
        if req.bot && !bot {
            return Err(ApiError::invalid_field(
                "bot",
                "a bot's external id is bot:{name}",
            ));
        }
        let display_name = match req.display_name.as_deref().map(str::trim) {
            Some(name) if name.is_empty() || name.chars().count() > 64 => {
                return Err(ApiError::invalid_field(
                    "display_name",
                    "A display name is 1 to 64 characters",
                ));
            }
            other => other.map(str::to_owned),
        };
        let identity = Identity {
            subject: external_id.to_owned(),
            display_name,
            username: req.username,
            email: req.email,
            expires_at: None,
        };
        let record = self.provision_user(&identity, bot).await?;
        Ok(server_user(&record))
    }

    /// `POST /server/users/{external_id}/tokens/`: an access and a refresh
    /// token of the server's own, for the host's login to hand out.
    pub(crate) async fn server_mint_tokens(&self, external_id: &str) -> ApiResult<TokenResponse> {
        let user = self.external_user(external_id).await?;
        if user.deactivated_at.is_some() {
            return Err(ApiError::new(ErrorCode::AccountDeactivated));
        }
        let family = uuid::Uuid::new_v4().simple().to_string();
        self.issue_tokens(&user, &family).await
    }

    /// `POST /server/rooms/`.
    pub(crate) async fn server_create_room(&self, req: ServerCreateRoomRequest) -> ApiResult<Room> {
        let name = super::rooms::validate_room_name(Some(&req.name))?;
        let kind = req.kind.unwrap_or_default();
        if kind == RoomType::Direct {
            return Err(ApiError::invalid_field(
                "type",
                "must be public, private or game",
            ));
        }
        let owner = self.external_user(&req.owner).await?;
        let members = self.external_users(&req.members).await?;
        let record = self
            .storage
            .create_room(NewRoom {
                name,
                kind,
                creator: owner.id,
                invited: Vec::new(),
                created_at: Timestamp::now(),
            })
            .await
            .map_err(super::rooms::name_taken)?;
        for member in members.iter().filter(|m| m.id != owner.id) {
            self.storage.join_room(record.id, member.id).await?;
        }
        tracing::info!(room = %record.id, name = %record.name, "room created by the server API");
        self.room_view(&record).await
    }

    /// `PUT /server/rooms/{id}/members/`: the members become exactly
    /// `req.members` and the owner; invitations are left alone.
    pub(crate) async fn server_set_members(
        &self,
        room: RoomId,
        req: SetMembersRequest,
    ) -> ApiResult<Room> {
        let record = self.group_room(room).await?;
        let wanted: HashSet<UserId> = self
            .external_users(&req.members)
            .await?
            .iter()
            .map(|u| u.id)
            .chain([record.owner])
            .collect();
        let people = self.storage.room_people(record.id).await?;
        let members: HashSet<UserId> = people
            .iter()
            .filter(|p| p.state == MemberState::Member)
            .map(|p| p.user)
            .collect();
        let mut leaving: Vec<UserId> = members.difference(&wanted).copied().collect();
        leaving.sort_unstable();
        for user in leaving {
            self.storage.leave_room(record.id, user).await?;
        }
        let mut joining: Vec<UserId> = wanted.difference(&members).copied().collect();
        joining.sort_unstable();
        for user in joining {
            self.storage.join_room(record.id, user).await?;
        }
        self.room_view(&record).await
    }

    /// `POST /server/rooms/{id}/members/`: `add` join, `remove` leave.
    pub(crate) async fn server_change_members(
        &self,
        room: RoomId,
        req: ChangeMembersRequest,
    ) -> ApiResult<Room> {
        let record = self.group_room(room).await?;
        let add = self.external_users(&req.add).await?;
        let remove = self.external_users(&req.remove).await?;
        if remove.iter().any(|u| u.id == record.owner) {
            return Err(ApiError::invalid_field(
                "remove",
                "the owner stays in the room (hand it over first)",
            ));
        }
        for user in &add {
            if self.storage.membership(record.id, user.id).await? != Some(MemberState::Member) {
                self.storage.join_room(record.id, user.id).await?;
            }
        }
        for user in &remove {
            if self.storage.membership(record.id, user.id).await? == Some(MemberState::Member) {
                self.storage.leave_room(record.id, user.id).await?;
            }
        }
        self.room_view(&record).await
    }

    /// `POST /server/rooms/{id}/messages/`: as a member, or as a bot (made a
    /// member first). Every rule of sending applies.
    pub(crate) async fn server_send(
        &self,
        room: RoomId,
        req: ServerSendRequest,
    ) -> ApiResult<(Message, bool)> {
        let record = self.group_room(room).await?;
        let sender = match (&req.user, &req.bot) {
            (Some(user), None) => {
                let user = self.external_user(user).await?;
                // The backend knows the room: no hiding it as from a stranger.
                if self.storage.membership(record.id, user.id).await? != Some(MemberState::Member) {
                    return Err(ApiError::new(ErrorCode::NotMember));
                }
                user
            }
            (None, Some(bot)) => {
                let name = bot.trim();
                let fits = (3..=32).contains(&name.chars().count())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !fits {
                    return Err(ApiError::invalid_field(
                        "bot",
                        "A bot's name is 3 to 32 of letters, digits, '_', '.' and '-'",
                    ));
                }
                let mut identity = Identity::new(format!("{BOT_PREFIX}{name}"));
                // A new bot is shown by its name; an existing one keeps
                // the name it was given (a display name set by upsert).
                identity.username = Some(name.to_owned());
                let bot = self.provision_user(&identity, true).await?;
                let member =
                    self.storage.membership(record.id, bot.id).await? == Some(MemberState::Member);
                if !member {
                    self.storage.join_room(record.id, bot.id).await?;
                }
                bot
            }
            _ => {
                return Err(ApiError::invalid_field(
                    "user",
                    "Give exactly one of `user` and `bot`",
                ));
            }
        };
        if sender.deactivated_at.is_some() {
            return Err(ApiError::new(ErrorCode::AccountDeactivated));
        }
        let draft = Draft {
            body: req.message,
            client_id: req.client_id,
            reply_to: req.reply_to,
            ..Draft::default()
        };
        let sent = self
            .send(sender.id, &RoomRef::Id(record.id), draft, None)
            .await?;
        Ok((sent.message, sent.created))
    }

    /// `GET /server/rooms/{id}/events/`: the room's timeline, every kind of
    /// event, whoever is in it.
    pub(crate) async fn server_events(
        &self,
        room: RoomId,
        q: TimelineQuery,
    ) -> ApiResult<TimelineResponse> {
        let query = super::messages::page_query(q.before, q.after, q.limit)?;
        let record = self
            .storage
            .room(room)
            .await?
            .ok_or_else(super::rooms::room_not_found)?;
        // No viewer: `is_read` says whether anyone but the sender read it.
        let (events, has_more) = self.timeline_page(UserId(0), record.id, query).await?;
        Ok(TimelineResponse { events, has_more })
    }

    async fn group_room(&self, room: RoomId) -> ApiResult<crate::storage::RoomRecord> {
        let record = self
            .storage
            .room(room)
            .await?
            .ok_or_else(super::rooms::room_not_found)?;
        if record.kind == RoomType::Direct {
            return Err(ApiError::invalid_field(
                "room",
                "a conversation's members are its two users",
            ));
        }
        Ok(record)
    }

    async fn external_user(&self, external_id: &str) -> ApiResult<UserRecord> {
        valid_external_id(external_id)?;
        self.storage
            .user_by_external_id(external_id)
            .await?
            .ok_or_else(|| user_not_found(external_id))
    }

    async fn external_users(&self, ids: &[String]) -> ApiResult<Vec<UserRecord>> {
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            users.push(self.external_user(id).await?);
        }
        Ok(users)
    }
}

/// A user as the server API shows them: the private view (email, creation
/// time) and the host's id.
fn server_user(record: &UserRecord) -> ServerUser {
    ServerUser {
        user: private_view(record),
        external_id: record.external_id.clone(),
        bot: record.is_bot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_hex() {
        let hash = hash_key("chat_key_abc");
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, hash_key("chat_key_abd"));
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
