//! Moderating a room: kick, ban, unban, mute, unmute, roles and handing a
//! room over. The service checks what it can before (the caller's access to
//! the room, the request's fields); the rule itself (`storage::roles`) is
//! judged by storage under the room's lock, so a moderator racing another
//! is judged on what the other did.

use chat_core::moderation::{
    Ban, ModerateRequest, ModerationAction, Role, RoomSettings, RoomUpdate,
};
use chat_core::room::Room;
use chat_core::room::RoomType;
use chat_core::timeline::{MemberChange, MemberEvent};
use chat_core::{ErrorCode, RoomRef, Timestamp, UserId};

use super::ChatService;
use super::messages::{member_to_wire, room_update_to_wire};
use crate::error::{ApiError, ApiResult};
use crate::storage::{MemberState, MemberUpdate, RoomChange, roles};

/// The longest reason a kick or a ban takes, in characters.
pub(crate) const MAX_REASON_CHARS: usize = 500;

impl ChatService {
    /// `POST /chat/rooms/{id}/moderate/` and the `moderate` frame: the
    /// member event it appended, `None` if nothing changed.
    pub(crate) async fn moderate(
        &self,
        user: UserId,
        room: &RoomRef,
        req: ModerateRequest,
    ) -> ApiResult<Option<MemberEvent>> {
        let record = self.room_as_member(user, room).await?;
        let now = Timestamp::now();
        let (change, role) = check(&req, now)?;
        if self.storage.user(req.user_id).await?.is_none() {
            return Err(ApiError::new(ErrorCode::UserNotFound));
        }
        let update = MemberUpdate {
            reason: req.reason,
            role,
            until: req.until,
            created_at: now,
            ..MemberUpdate::new(record.id, req.user_id, change, Some(user))
        };
        let event = self.storage.update_member(update).await?;
        if let Some(event) = &event {
            tracing::info!(room = %record.id, by = %user, user = %event.user,
                change = event.change.as_str(), "member moderated");
        }
        Ok(event.as_ref().map(member_to_wire))
    }

    /// `PATCH /chat/rooms/{id}/` and the `update_room` frame: the room as it
    /// now stands and the event (`None` if nothing changed).
    pub(crate) async fn update_room(
        &self,
        user: UserId,
        room: &RoomRef,
        settings: RoomSettings,
    ) -> ApiResult<(Room, Option<RoomUpdate>)> {
        let record = self.room_as_member(user, room).await?;
        let settings = check_settings(settings, record.kind)?;
        let change = RoomChange {
            room: record.id,
            by: user,
            settings,
            created_at: Timestamp::now(),
        };
        let event = self
            .storage
            .update_room(change)
            .await
            .map_err(super::rooms::name_taken)?;
        let record = self
            .storage
            .room(record.id)
            .await?
            .ok_or_else(super::rooms::room_not_found)?;
        if event.is_some() {
            tracing::info!(room = %record.id, by = %user, "room settings changed");
        }
        let view = self.room_view(&record).await?;
        Ok((view, event.as_ref().map(room_update_to_wire)))
    }

    /// `GET /chat/rooms/{id}/bans/`: the bans in force; the room's admins
    /// and owner only.
    pub(crate) async fn bans(&self, user: UserId, room: &RoomRef) -> ApiResult<Vec<Ban>> {
        let record = self.room_as_member(user, room).await?;
        if record.kind == RoomType::Direct {
            return Err(ApiError::with_message(
                ErrorCode::InvalidInput,
                "Conversations have no roles and take no moderation",
            ));
        }
        let people = self.storage.room_people(record.id).await?;
        let role = people
            .iter()
            .find(|p| p.user == user && p.state == MemberState::Member)
            .map_or(Role::Member, |p| p.role);
        if !roles::moderates(record.kind, role) {
            return Err(ApiError::new(ErrorCode::NotModerator));
        }
        Ok(self
            .storage
            .bans(record.id, Timestamp::now())
            .await?
            .into_iter()
            .map(|b| Ban {
                room: b.room,
                user_id: b.user,
                username: b.username,
                by: b.by,
                reason: b.reason,
                until: b.until,
                created_at: b.created_at,
            })
            .collect())
    }
}

/// The request's fields, checked: the member event it asks for and the
/// role it sets.
fn check(req: &ModerateRequest, now: Timestamp) -> ApiResult<(MemberChange, Option<Role>)> {
    use ModerationAction as A;
    let timed = matches!(req.action, A::Ban | A::Mute);
    match req.until {
        Some(_) if !timed => {
            return Err(ApiError::invalid_field(
                "until",
                "only a ban or a mute takes an end",
            ));
        }
        Some(until) if until <= now => {
            return Err(ApiError::invalid_field("until", "must be in the future"));
        }
        _ => {}
    }
    if let Some(reason) = &req.reason {
        if !matches!(req.action, A::Kick | A::Ban) {
            return Err(ApiError::invalid_field(
                "reason",
                "only a kick or a ban takes a reason",
            ));
        }
        if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "reason",
                format!("at most {MAX_REASON_CHARS} characters, no control characters"),
            ));
        }
    }
    if req.role.is_some() && req.action != A::SetRole {
        return Err(ApiError::invalid_field(
            "role",
            "only set_role takes a role",
        ));
    }
    Ok(match req.action {
        A::Kick => (MemberChange::Kicked, None),
        A::Ban => (MemberChange::Banned, None),
        A::Unban => (MemberChange::Unbanned, None),
        A::Mute => (MemberChange::Muted, None),
        A::Unmute => (MemberChange::Unmuted, None),
        A::SetRole => match req.role {
            Some(role @ (Role::Admin | Role::Member)) => (MemberChange::RoleChanged, Some(role)),
            Some(Role::Owner) => {
                return Err(ApiError::invalid_field(
                    "role",
                    "hand a room over with transfer_ownership",
                ));
            }
            None => return Err(ApiError::invalid_field("role", "admin or member")),
        },
        A::TransferOwnership => (MemberChange::RoleChanged, Some(Role::Owner)),
    })
}

/// The longest topic, description and avatar URL, in characters.
pub(crate) const MAX_TOPIC_CHARS: usize = 250;
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub(crate) const MAX_AVATAR_URL_CHARS: usize = 2_000;
/// The longest slow mode, in seconds (6 hours).
pub(crate) const MAX_SLOW_MODE_SECONDS: u32 = 21_600;

/// The settings, checked for a room of `kind`: the name by the rules of
/// creation, the type public or private (of a public or private room),
/// text lengths, an http(s) avatar URL, slow mode's bound.
fn check_settings(mut settings: RoomSettings, kind: RoomType) -> ApiResult<RoomSettings> {
    if settings.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidInput,
            "Give at least one setting to change",
        ));
    }
    if kind == RoomType::Direct {
        return Err(ApiError::with_message(
            ErrorCode::InvalidInput,
            "Conversations have no roles and take no moderation",
        ));
    }
    if let Some(name) = settings.name.take() {
        settings.name = Some(super::rooms::validate_room_name(Some(&name))?);
    }
    if let Some(new) = settings.kind {
        let group = |k| matches!(k, RoomType::Public | RoomType::Private);
        if !group(new) || !group(kind) {
            return Err(ApiError::invalid_field(
                "type",
                "a public room can become private and back; game rooms keep their type",
            ));
        }
    }
    let text = |field: &str, value: &Option<String>, max: usize, lines: bool| -> ApiResult<()> {
        match value {
            Some(v) if v.chars().count() > max => Err(ApiError::invalid_field(
                field,
                format!("at most {max} characters"),
            )),
            Some(v) if v.chars().any(|c| c.is_control() && !(lines && c == '\n')) => {
                Err(ApiError::invalid_field(field, "no control characters"))
            }
            _ => Ok(()),
        }
    };
    text("topic", &settings.topic, MAX_TOPIC_CHARS, false)?;
    text(
        "description",
        &settings.description,
        MAX_DESCRIPTION_CHARS,
        true,
    )?;
    text(
        "avatar_url",
        &settings.avatar_url,
        MAX_AVATAR_URL_CHARS,
        false,
    )?;
    if let Some(avatar) = settings.avatar_url.as_deref().filter(|a| !a.is_empty()) {
        let parsed = url::Url::parse(avatar).ok();
        if !parsed.is_some_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host()) {
            return Err(ApiError::invalid_field("avatar_url", "an http(s) URL"));
        }
    }
    if settings
        .slow_mode_seconds
        .is_some_and(|s| s > MAX_SLOW_MODE_SECONDS)
    {
        return Err(ApiError::invalid_field(
            "slow_mode_seconds",
            format!("0..={MAX_SLOW_MODE_SECONDS}"),
        ));
    }
    Ok(settings)
}
