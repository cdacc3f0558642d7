//! How rows of either backend become records, and how a broken unique
//! rule is recognised.
//!
//! Both schemas keep every column to an integer, text or boolean of the same
//! meaning (times are integer microseconds on both), so one set of row
//! decoders, generic over the backend's row type, serves both.

use chat_core::attachment::{Attachment, Thumbnail};
use chat_core::moderation::{Role, RoomSettings};
use chat_core::room::RoomType;
use chat_core::timeline::MemberChange;
use chat_core::{AttachmentId, MessageId, RoomId, Timestamp, UserId};
use sqlx::error::DatabaseError;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::storage::{
    ApiKeyRecord, AttachmentRecord, BanRecord, Conflict, HistoryPage, HistoryQuery, MemberState,
    MemberUpdate, PublicRoom, ReactionCount, RefreshTokenRecord, ReportRecord, RoomPerson,
    RoomProfile, RoomRecord, StorageError, StoredEvent, StoredMember, StoredMessage, StoredReply,
    StoredRoomUpdate, StoredUpdate, TimelinePage, UpdateKind, UserRecord, UserRoom, roles,
};

/// The page for `query` from the rows [`HISTORY_AFTER`](super::statements::HISTORY_AFTER) or
/// [`HISTORY_BEFORE`](super::statements::HISTORY_BEFORE) returned when asked for `limit + 1`.
pub(crate) fn history_page(
    rows: &[impl Columns],
    query: &HistoryQuery,
) -> Result<HistoryPage, StorageError> {
    let (messages, has_more) = page_of(rows, query, message_from)?;
    Ok(HistoryPage { messages, has_more })
}

/// The page of `limit + 1` rows read from the starting bound outward,
/// decoded, oldest first, and whether there is more.
fn page_of<C: Columns, T>(
    rows: &[C],
    query: &HistoryQuery,
    decode: impl Fn(&C) -> Result<T, StorageError>,
) -> Result<(Vec<T>, bool), StorageError> {
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    // The extra row only tells that there is more; it is the farthest from
    // the starting bound in both directions, so dropping the tail keeps the
    // page adjacent to the bound.
    let has_more = rows.len() > limit;
    let mut items = rows
        .iter()
        .take(limit)
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    if query.after.is_none() {
        items.reverse();
    }
    Ok((items, has_more))
}

/// Which rule a unique violation broke, from the constraint name (Postgres
/// reports it) or the message (SQLite names `table.column`). `None` for a
/// rule the API has no conflict for, such as a reused token id.
pub(crate) fn conflict_of(error: &dyn DatabaseError) -> Option<Conflict> {
    let text = error.constraint().unwrap_or_else(|| error.message());
    let names = |key: &str, column: &str| text.contains(key) || text.contains(column);
    if names("users_username_key", "users.username") {
        Some(Conflict::Username)
    } else if names("users_email_key", "users.email") {
        Some(Conflict::Email)
    } else if names("rooms_name_key", "rooms.name") {
        Some(Conflict::RoomName)
    } else if names("api_keys_name_key", "api_keys.name") {
        Some(Conflict::ApiKeyName)
    } else {
        None
    }
}

// Rows

/// Typed column access over either backend's rows: every column of both
/// schemas is an integer or a text, possibly NULL.
pub(crate) trait Columns {
    fn int(&self, column: &str) -> Result<i64, StorageError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StorageError>;
    fn text(&self, column: &str) -> Result<String, StorageError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StorageError>;
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64, StorageError> {
        self.try_get(column).map_err(decode_err)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StorageError> {
        self.try_get(column).map_err(decode_err)
    }

    fn text(&self, column: &str) -> Result<String, StorageError> {
        self.try_get(column).map_err(decode_err)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StorageError> {
        self.try_get(column).map_err(decode_err)
    }
}

/// A column missing or of the wrong type: the schema and the code disagree.
fn decode_err(error: sqlx::Error) -> StorageError {
    StorageError::Backend(Box::new(error))
}

fn corrupt(what: String) -> StorageError {
    StorageError::Backend(what.into())
}

pub(crate) fn user_from(row: &impl Columns) -> Result<UserRecord, StorageError> {
    prefixed_user_from(row, "")
}

/// A user whose columns are aliased `{prefix}id`, `{prefix}username`…, for
/// a row that also carries another table's `id`.
pub(crate) fn prefixed_user_from(
    row: &impl Columns,
    prefix: &str,
) -> Result<UserRecord, StorageError> {
    let get = |column: &str| format!("{prefix}{column}");
    Ok(UserRecord {
        id: UserId(row.int(&get("id"))?),
        username: row.text(&get("username"))?,
        email: row.text(&get("email"))?,
        display_name: row.text(&get("display_name"))?,
        password_hash: row.text(&get("password_hash"))?,
        created_at: Timestamp::from_unix_micros(row.int(&get("created_at"))?),
        is_admin: row.int(&get("is_admin"))? != 0,
        deactivated_at: row
            .opt_int(&get("deactivated_at"))?
            .map(Timestamp::from_unix_micros),
        token_version: row.int(&get("token_version"))?,
        external_id: row.opt_text(&get("external_id"))?,
        is_bot: row.int(&get("is_bot"))? != 0,
    })
}

pub(crate) fn room_kind(text: &str) -> Result<RoomType, StorageError> {
    RoomType::parse(text).ok_or_else(|| corrupt(format!("unknown room kind {text:?}")))
}

pub(crate) fn member_state(text: &str) -> Result<MemberState, StorageError> {
    match text {
        "member" => Ok(MemberState::Member),
        "invited" => Ok(MemberState::Invited),
        _ => Err(corrupt(format!("unknown member state {text:?}"))),
    }
}

/// What an append's access check found (a row of
/// [`APPEND_ACCESS`](super::statements::APPEND_ACCESS), or the same two
/// columns as `kind` and `state`): `None` if the sender is a member, else
/// the refusal.
pub(crate) fn refusal_from(row: &impl Columns) -> Result<Option<StorageError>, StorageError> {
    let kind = room_kind(&row.text("kind")?)?;
    match row
        .opt_text("state")?
        .as_deref()
        .map(member_state)
        .transpose()?
    {
        Some(MemberState::Member) => Ok(None),
        state => Ok(Some(StorageError::NotMember { kind, state })),
    }
}

/// What the rule of sending reads (a row of
/// [`APPEND_ACCESS`](super::statements::APPEND_ACCESS)).
pub(crate) fn gate_from(row: &impl Columns) -> Result<roles::Gate, StorageError> {
    Ok(roles::Gate {
        kind: room_kind(&row.text("kind")?)?,
        role: role(&row.text("role")?)?,
        muted_until: row.opt_int("muted_until")?,
        announcement: row.int("announcement")? != 0,
        slow_mode: row.int("slow_mode")?,
        last_sent_at: row.opt_int("last_sent_at")?,
        blocked: row.int("blocked")? != 0,
    })
}

/// Whether the rule of sending refuses an append at `at` (see
/// [`gate_from`]).
pub(crate) fn send_refused(
    row: &impl Columns,
    at: i64,
) -> Result<Option<StorageError>, StorageError> {
    Ok(roles::send_refusal(&gate_from(row)?, at).map(StorageError::Refused))
}

/// A row of [`REPORT`](super::statements::REPORT) or
/// [`REPORTS`](super::statements::REPORTS).
pub(crate) fn report_from(row: &impl Columns) -> Result<ReportRecord, StorageError> {
    Ok(ReportRecord {
        id: row.int("id")?,
        reporter: UserId(row.int("reporter_id")?),
        user: UserId(row.int("user_id")?),
        message: row.opt_int("message_id")?.map(MessageId),
        room: row.opt_int("room_id")?.map(RoomId),
        reason: row.text("reason")?,
        message_body: row.opt_text("message_body")?,
        message_deleted: row.int("message_deleted")? != 0,
        created_at: Timestamp::from_unix_micros(row.int("created_at")?),
        resolved_at: row.opt_int("resolved_at")?.map(Timestamp::from_unix_micros),
        resolved_by: row.opt_int("resolved_by")?.map(UserId),
        resolution: row.opt_text("resolution")?,
    })
}

/// A row of [`PUBLIC_ROOMS`](super::statements::PUBLIC_ROOMS).
pub(crate) fn public_room_from(row: &impl Columns) -> Result<PublicRoom, StorageError> {
    Ok(PublicRoom {
        room: room_from(row)?,
        member_count: u64::try_from(row.int("member_count")?).unwrap_or(0),
        last_activity_at: Timestamp::from_unix_micros(row.int("last_activity_at")?),
    })
}

/// The `body` of a `room_updated` event: what changed.
pub(crate) fn settings_text(settings: &RoomSettings) -> String {
    serde_json::to_string(settings).unwrap_or_default()
}

/// How a [`MemberState`] is stored in `room_members.state`.
pub(crate) fn state_text(state: MemberState) -> &'static str {
    match state {
        MemberState::Member => "member",
        MemberState::Invited => "invited",
    }
}

pub(crate) fn room_from(row: &impl Columns) -> Result<RoomRecord, StorageError> {
    Ok(RoomRecord {
        id: RoomId(row.int("id")?),
        name: row.text("name")?,
        kind: room_kind(&row.text("kind")?)?,
        creator: UserId(row.int("creator_id")?),
        owner: UserId(row.int("owner_id")?),
        profile: RoomProfile {
            topic: row.opt_text("topic")?,
            description: row.opt_text("description")?,
            avatar_url: row.opt_text("avatar_url")?,
            announcement: row.int("announcement")? != 0,
            slow_mode: u32::try_from(row.int("slow_mode")?).unwrap_or(0),
        },
        created_at: Timestamp::from_unix_micros(row.int("created_at")?),
        last_seq: row.int("last_seq")?,
        last_message_seq: row.int("last_message_seq")?,
    })
}

/// A row of [`ROOM_FOR_BY_ID`](super::statements::ROOM_FOR_BY_ID) or [`ROOM_FOR_BY_NAME`](super::statements::ROOM_FOR_BY_NAME).
pub(crate) fn room_for_from(
    row: &impl Columns,
) -> Result<(RoomRecord, Option<MemberState>), StorageError> {
    let state = row.opt_text("member_state")?;
    Ok((
        room_from(row)?,
        state.as_deref().map(member_state).transpose()?,
    ))
}

pub(crate) fn message_from(row: &impl Columns) -> Result<StoredMessage, StorageError> {
    prefixed_message_from(row, "")
}

/// A message whose columns are aliased `{prefix}id`, `{prefix}seq`…: the
/// last message of a room list (`l_`), the message a change changed
/// (`t_`).
fn prefixed_message_from(row: &impl Columns, prefix: &str) -> Result<StoredMessage, StorageError> {
    let get = |column: &str| format!("{prefix}{column}");
    Ok(StoredMessage {
        id: MessageId(row.int(&get("id"))?),
        room: RoomId(row.int(&get("room_id"))?),
        seq: row.int(&get("seq"))?,
        sender: UserId(row.int(&get("sender_id"))?),
        sender_name: row.text(&get("sender_name"))?,
        body: row.text(&get("body"))?,
        created_at: Timestamp::from_unix_micros(row.int(&get("created_at"))?),
        client_id: row.opt_text(&get("client_id"))?,
        edited_at: row
            .opt_int(&get("edited_at"))?
            .map(Timestamp::from_unix_micros),
        version: u32::try_from(row.int(&get("version"))?).unwrap_or(u32::MAX),
        deleted: row.opt_int(&get("deleted_at"))?.is_some(),
        pinned: row.opt_int(&get("pinned_at"))?.is_some(),
        reply: match row.opt_int(&get("reply_to"))? {
            None => None,
            Some(id) => Some(StoredReply {
                id: MessageId(id),
                seq: row.opt_int(&get("reply_seq"))?.unwrap_or(0),
                sender: UserId(row.opt_int(&get("reply_sender_id"))?.unwrap_or(0)),
                snippet: row.opt_text(&get("reply_snippet"))?,
            }),
        },
        thread_root: row.opt_int(&get("thread_root"))?.map(MessageId),
        reply_count: u32::try_from(row.int(&get("reply_count"))?).unwrap_or(0),
        last_reply_at: row
            .opt_int(&get("last_reply_at"))?
            .map(Timestamp::from_unix_micros),
        mentions: mentions_from(row.opt_text(&get("mentions"))?.as_deref())?,
        attachments: attachments_from(row.opt_text(&get("attachments"))?.as_deref())?,
    })
}

/// How a message's attachments are stored in `messages.attachments`: a
/// JSON array of their wire form as sent, NULL for none.
pub(crate) fn attachments_text(attachments: &[Attachment]) -> Option<String> {
    if attachments.is_empty() {
        return None;
    }
    serde_json::to_string(attachments).ok()
}

fn attachments_from(text: Option<&str>) -> Result<Vec<Attachment>, StorageError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    serde_json::from_str(text).map_err(|e| {
        corrupt(format!(
            "attachments {text:?} are not a list of attachments: {e}"
        ))
    })
}

/// A row of the `attachments` table.
pub(crate) fn attachment_from(row: &impl Columns) -> Result<AttachmentRecord, StorageError> {
    let size = |column: &str| -> Result<u64, StorageError> {
        u64::try_from(row.int(column)?).map_err(|_| corrupt(format!("a negative {column}")))
    };
    let pixels = |column: &str| -> Result<Option<u32>, StorageError> {
        Ok(row.opt_int(column)?.and_then(|n| u32::try_from(n).ok()))
    };
    let thumbnail = match (
        pixels("thumb_width")?,
        pixels("thumb_height")?,
        row.opt_text("thumb_type")?,
        row.opt_int("thumb_size")?,
    ) {
        (Some(width), Some(height), Some(content_type), Some(bytes)) => Some(Thumbnail {
            width,
            height,
            content_type,
            size: u64::try_from(bytes).unwrap_or(0),
        }),
        _ => None,
    };
    Ok(AttachmentRecord {
        attachment: Attachment {
            id: AttachmentId(row.int("id")?),
            name: row.text("name")?,
            size: size("size")?,
            content_type: row.text("content_type")?,
            width: pixels("width")?,
            height: pixels("height")?,
            thumbnail,
            created_at: Timestamp::from_unix_micros(row.int("created_at")?),
        },
        owner: UserId(row.int("owner_id")?),
        blob_key: row.text("blob_key")?,
        sent: match (row.opt_int("room_id")?, row.opt_int("message_id")?) {
            (Some(room), Some(message)) => Some((RoomId(room), MessageId(message))),
            _ => None,
        },
        doomed: row.opt_int("doomed_at")?.is_some(),
    })
}

/// How a message's mentions are stored in `messages.mentions`: a JSON
/// array of user ids, NULL for none.
pub(crate) fn mentions_text(mentions: &[UserId]) -> Option<String> {
    if mentions.is_empty() {
        return None;
    }
    let ids: Vec<i64> = mentions.iter().map(|u| u.get()).collect();
    serde_json::to_string(&ids).ok()
}

fn mentions_from(text: Option<&str>) -> Result<Vec<UserId>, StorageError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let ids: Vec<i64> = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("mentions {text:?} are not a list of ids: {e}")))?;
    Ok(ids.into_iter().map(UserId).collect())
}

/// A row of [`TIMELINE_AFTER`](super::statements::TIMELINE_AFTER) or
/// [`TIMELINE_BEFORE`](super::statements::TIMELINE_BEFORE): a message, a
/// membership change (its member in `sender_id`), or a change to a message
/// (who made it in `sender_id`, the message in the `t_` columns).
pub(crate) fn event_from(row: &impl Columns) -> Result<StoredEvent, StorageError> {
    let update = |kind| {
        Ok(StoredEvent::Update(StoredUpdate {
            reactions: Vec::new(),
            room: RoomId(row.int("room_id")?),
            seq: row.int("seq")?,
            user: UserId(row.int("sender_id")?),
            kind,
            created_at: Timestamp::from_unix_micros(row.int("created_at")?),
            message: prefixed_message_from(row, "t_")?,
        }))
    };
    let kind = row.text("kind")?;
    let change = match kind.as_str() {
        "message" => return message_from(row).map(StoredEvent::Message),
        "room_updated" => {
            return Ok(StoredEvent::Room(StoredRoomUpdate {
                room: RoomId(row.int("room_id")?),
                seq: row.int("seq")?,
                user: UserId(row.int("sender_id")?),
                created_at: Timestamp::from_unix_micros(row.int("created_at")?),
                settings: serde_json::from_str(&row.text("body")?)
                    .map_err(|e| corrupt(format!("room_updated settings: {e}")))?,
            }));
        }
        "edited" => return update(UpdateKind::Edited),
        "deleted" => return update(UpdateKind::Deleted),
        "pinned" => return update(UpdateKind::Pinned { pinned: true }),
        "unpinned" => return update(UpdateKind::Pinned { pinned: false }),
        "reacted" | "unreacted" => {
            return update(UpdateKind::Reacted {
                key: row.text("body")?,
                added: row.text("kind")? == "reacted",
            });
        }
        other => MemberChange::parse(other)
            .ok_or_else(|| corrupt(format!("unknown event kind {other:?}")))?,
    };
    let detail = member_detail_from(&row.text("body")?)?;
    Ok(StoredEvent::Member(StoredMember {
        room: RoomId(row.int("room_id")?),
        seq: row.int("seq")?,
        user: UserId(row.int("sender_id")?),
        change,
        created_at: Timestamp::from_unix_micros(row.int("created_at")?),
        by: detail.by.map(UserId),
        reason: detail.reason,
        role: detail.role,
        until: detail.until.map(Timestamp::from_unix_micros),
    }))
}

/// What a member event keeps beside its member: who made it and why,
/// stored as JSON in the event row's `body` (empty when there is none).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct MemberDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
}

/// The `body` of `update`'s event.
pub(crate) fn member_detail(update: &MemberUpdate) -> String {
    let detail = MemberDetail {
        by: update.by.filter(|by| *by != update.user).map(UserId::get),
        reason: update.reason.clone(),
        role: update.role,
        until: update.until.map(|t| t.unix_micros()),
    };
    if detail.by.is_none()
        && detail.reason.is_none()
        && detail.role.is_none()
        && detail.until.is_none()
    {
        return String::new();
    }
    serde_json::to_string(&detail).unwrap_or_default()
}

fn member_detail_from(body: &str) -> Result<MemberDetail, StorageError> {
    if body.is_empty() {
        return Ok(MemberDetail::default());
    }
    serde_json::from_str(body).map_err(|e| corrupt(format!("member event detail: {e}")))
}

/// How a change to a message is stored in `messages.kind`.
pub(crate) fn update_text(kind: &UpdateKind) -> &'static str {
    match kind {
        UpdateKind::Edited => "edited",
        UpdateKind::Deleted => "deleted",
        UpdateKind::Reacted { added: true, .. } => "reacted",
        UpdateKind::Reacted { added: false, .. } => "unreacted",
        UpdateKind::Pinned { pinned: true } => "pinned",
        UpdateKind::Pinned { pinned: false } => "unpinned",
    }
}

/// A row of [`REACTION_COUNTS`](super::statements::REACTION_COUNTS) or of
/// [`reactions_of`](super::statements::reactions_of).
pub(crate) fn reaction_count_from(row: &impl Columns) -> Result<ReactionCount, StorageError> {
    Ok(ReactionCount {
        key: row.text("key")?,
        count: u32::try_from(row.int("n")?).unwrap_or(u32::MAX),
        mine: row.int("mine")? != 0,
    })
}

/// The page for `query` from the rows [`TIMELINE_AFTER`](super::statements::TIMELINE_AFTER)
/// or [`TIMELINE_BEFORE`](super::statements::TIMELINE_BEFORE) returned when
/// asked for `limit + 1` (see [`history_page`]).
pub(crate) fn timeline_page(
    rows: &[impl Columns],
    query: &HistoryQuery,
) -> Result<TimelinePage, StorageError> {
    let (events, has_more) = page_of(rows, query, event_from)?;
    Ok(TimelinePage { events, has_more })
}

/// A row of [`USER_ROOMS`](super::statements::USER_ROOMS) or [`USER_CONVERSATIONS`](super::statements::USER_CONVERSATIONS).
pub(crate) fn user_room_from(row: &impl Columns) -> Result<UserRoom, StorageError> {
    let room = room_from(row)?;
    let last_message = match row.opt_int("l_id")? {
        None => None,
        Some(_) => Some(prefixed_message_from(row, "l_")?),
    };
    Ok(UserRoom {
        state: member_state(&row.text("state")?)?,
        read_seq: row.int("read_seq")?,
        role: role(&row.text("role")?)?,
        muted_until: row.opt_int("muted_until")?.map(Timestamp::from_unix_micros),
        unread: u64::try_from(row.int("unread")?).unwrap_or(0),
        mentions: u64::try_from(row.int("mention_count")?).unwrap_or(0),
        member_count: u64::try_from(row.int("member_count")?).unwrap_or(0),
        others_read_seq: row.int("others_read_seq")?,
        last_message,
        room,
    })
}

/// A row of [`ROOM_PEOPLE`](super::statements::ROOM_PEOPLE).
pub(crate) fn person_from(row: &impl Columns) -> Result<RoomPerson, StorageError> {
    Ok(RoomPerson {
        user: UserId(row.int("user_id")?),
        username: row.text("username")?,
        state: member_state(&row.text("state")?)?,
        read_seq: row.int("read_seq")?,
        role: role(&row.text("role")?)?,
    })
}

/// A role as read (`owner` worked out from the room's `owner_id`).
pub(crate) fn role(text: &str) -> Result<Role, StorageError> {
    Role::parse(text).ok_or_else(|| corrupt(format!("unknown role {text:?}")))
}

/// A row of [`BANS`](super::statements::BANS).
pub(crate) fn ban_from(row: &impl Columns) -> Result<BanRecord, StorageError> {
    Ok(BanRecord {
        room: RoomId(row.int("room_id")?),
        user: UserId(row.int("user_id")?),
        username: row.text("username")?,
        by: UserId(row.int("by_id")?),
        reason: row.opt_text("reason")?,
        until: row.opt_int("until")?.map(Timestamp::from_unix_micros),
        created_at: Timestamp::from_unix_micros(row.int("created_at")?),
    })
}

/// What the membership rule reads, from a row of
/// [`MEMBER_STANDING`](super::statements::MEMBER_STANDING).
pub(crate) fn member_standing_from(row: &impl Columns) -> Result<roles::Standing, StorageError> {
    let place = |prefix: &str| -> Result<Option<roles::Place>, StorageError> {
        let Some(state) = row.opt_text(&format!("{prefix}_state"))? else {
            return Ok(None);
        };
        Ok(Some(roles::Place {
            state: member_state(&state)?,
            role: role(&row.text(&format!("{prefix}_role"))?)?,
        }))
    };
    Ok(roles::Standing {
        kind: room_kind(&row.text("kind")?)?,
        actor: place("a")?,
        target: place("t")?,
        banned: match row.opt_int("banned")? {
            Some(_) => Some(row.opt_int("ban_until")?),
            None => None,
        },
        muted: row.opt_int("muted_until")?,
    })
}

/// A row of [`READ_MARKS`](super::statements::READ_MARKS).
pub(crate) fn read_mark_from(row: &impl Columns) -> Result<(UserId, i64), StorageError> {
    Ok((UserId(row.int("user_id")?), row.int("read_seq")?))
}

/// A row of [`SPEND_REFRESH_TOKEN`](super::statements::SPEND_REFRESH_TOKEN) or [`REFRESH_TOKEN`](super::statements::REFRESH_TOKEN) for token `id`.
pub(crate) fn token_from(id: &str, row: &impl Columns) -> Result<RefreshTokenRecord, StorageError> {
    Ok(RefreshTokenRecord {
        id: id.to_owned(),
        user: UserId(row.int("user_id")?),
        family: row.text("family")?,
        expires_at: Timestamp::from_unix_micros(row.int("expires_at")?),
    })
}

pub(crate) fn api_key_from(row: &impl Columns) -> Result<ApiKeyRecord, StorageError> {
    Ok(ApiKeyRecord {
        id: row.int("id")?,
        name: row.text("name")?,
        created_at: Timestamp::from_unix_micros(row.int("created_at")?),
        last_used_at: row
            .opt_int("last_used_at")?
            .map(Timestamp::from_unix_micros),
        revoked_at: row.opt_int("revoked_at")?.map(Timestamp::from_unix_micros),
    })
}
