//! `memory://`: every table in one process-local `State` behind a mutex.
//!
//! Meant for tests and demos: nothing survives the process. It keeps the same
//! rules the SQL backends get from their constraints (unique names, foreign
//! keys, cascades, gap-free `seq`), so code tested against it behaves the
//! same on a database. The conformance suite holds it to that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chat_core::attachment::Attachment;
use chat_core::moderation::Role;
use chat_core::room::RoomType;
use chat_core::timeline::MemberChange;
use chat_core::{AttachmentId, MessageId, RoomId, Seq, Timestamp, UserId};

use super::roles::{self, Effect};
use super::{
    ApiKeyRecord, Appended, AttachmentRecord, BanRecord, ChangeOp, Changed, CommitListener,
    Committed, Conflict, Conversation, DeviceRecord, ExternalUser, HistoryPage, HistoryQuery,
    Listener, MemberState, MemberUpdate, MessageChange, NewAttachment, NewMessage, NewReport,
    NewRoom, NewUser, OutboxBacklog, OutboxCursor, PublicRoom, ReactionCount, ReadMark,
    RefreshTokenRecord, ReportRecord, ReportStatus, RoomChange, RoomPerson, RoomProfile,
    RoomRecord, SearchPage, SearchRequest, Seen, Standing, Storage, StorageError, StoredEvent,
    StoredMember, StoredMessage, StoredReply, StoredRoomUpdate, StoredUpdate, TimelinePage,
    TokenUse, UpdateKind, UserRecord, UserRoom,
};

/// The in-memory backend.
///
/// All state sits behind one `std::sync::Mutex`, not a tokio one: every
/// operation is a short, purely in-memory critical section that never
/// awaits, so a blocking lock is both cheaper and sufficient (the pattern
/// mini-redis `db.rs` explains). Holding it across an `.await` would be a
/// bug, which the workspace's `await_holding_lock` lint rejects. One lock
/// for everything also makes each operation a serializable transaction,
/// which is what gives `seq` its no-gap, no-duplicate guarantee here.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
    listener: Listener,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a bug in this
        // file; every operation validates before it mutates, so the state
        // is still consistent and later callers may keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Default)]
struct State {
    // Ids start at 1 and are never reused, like AUTOINCREMENT keys.
    last_user_id: i64,
    last_room_id: i64,
    last_message_id: i64,
    users: BTreeMap<UserId, UserRecord>,
    usernames: HashMap<String, UserId>,
    /// Non-empty emails only: users without one share ''.
    emails: HashMap<String, UserId>,
    external_ids: HashMap<String, UserId>,
    /// With their hashes, in id order.
    api_keys: Vec<(ApiKeyRecord, String)>,
    outbox_sinks: std::collections::HashSet<String>,
    /// By id.
    devices: BTreeMap<i64, DeviceRecord>,
    last_device_id: i64,
    outbox_cursors: HashMap<(String, RoomId), MemoryCursor>,
    tokens: HashMap<String, TokenRow>,
    secrets: HashMap<String, String>,
    rooms: BTreeMap<RoomId, RoomRow>,
    room_names: HashMap<String, RoomId>,
    /// The unique pair index of conversations, lower id first.
    direct_pairs: HashMap<(UserId, UserId), RoomId>,
    /// The unique `(sender, client_id)` index: where the original lives.
    client_ids: HashMap<(UserId, String), (RoomId, Seq)>,
    /// Where each message lives, by id (messages only, not other events).
    message_ids: HashMap<MessageId, (RoomId, Seq)>,
    /// Per message, who reacted with which key, oldest first.
    reactions: HashMap<MessageId, Vec<(UserId, String)>>,
    /// Blocks by (blocker, blocked): since when.
    blocks: HashMap<(UserId, UserId), Timestamp>,
    /// Reports by id (from 1).
    reports: BTreeMap<i64, ReportRecord>,
    /// Attachments by id (from 1), with when they were doomed.
    attachments: BTreeMap<AttachmentId, (AttachmentRecord, Option<Timestamp>)>,
    last_attachment_id: i64,
}

#[derive(Debug)]
struct TokenRow {
    record: RefreshTokenRecord,
    spent: bool,
}

#[derive(Debug)]
struct RoomRow {
    record: RoomRecord,
    last_message_at: Option<Timestamp>,
    /// The pair, lower id first, for a conversation made by `direct_room`.
    direct: Option<(UserId, UserId)>,
    /// Kept in `position` order, so members and invitees each come out in
    /// the order they joined or were invited.
    members: Vec<MemberRow>,
    last_position: u64,
    /// Bans by user: by whom, why, until when (microseconds; `None`: for
    /// good), since when.
    bans: HashMap<UserId, (UserId, Option<String>, Option<i64>, Timestamp)>,
    /// Mutes by user: until when (microseconds).
    mutes: HashMap<UserId, i64>,
    /// The timeline: `events[i]` has `seq == i + 1`, the gap-free
    /// numbering by construction.
    events: Vec<EventRow>,
    /// Messages in `events`.
    msg_count: i64,
    /// Of those, the deleted ones.
    msg_deleted: i64,
}

#[derive(Debug)]
struct MemberRow {
    user: UserId,
    state: MemberState,
    read_seq: Seq,
    /// The messages not deleted at or below `read_seq`.
    read_no: i64,
    /// As stored: the owner is whoever the room's record names.
    role: Role,
    /// When it last sent a message here (microseconds).
    last_sent_at: Option<i64>,
}

impl MemberRow {
    fn new(user: UserId, state: MemberState) -> Self {
        Self {
            user,
            state,
            read_seq: 0,
            read_no: 0,
            role: Role::Member,
            last_sent_at: None,
        }
    }
}

#[derive(Debug)]
struct EventRow {
    id: MessageId,
    /// The message's sender, or the member whose membership changed.
    sender: UserId,
    kind: EventRowKind,
    created_at: Timestamp,
    /// Messages in the room up to and including this event.
    msg_no: i64,
}

#[derive(Debug)]
enum EventRowKind {
    /// A message, as it stands now.
    Message {
        body: String,
        client_id: Option<String>,
        edited_at: Option<Timestamp>,
        version: u32,
        deleted: bool,
        pinned_at: Option<Timestamp>,
        reply: Option<StoredReply>,
        thread_root: Option<MessageId>,
        reply_count: u32,
        last_reply_at: Option<Timestamp>,
        mentions: Vec<UserId>,
        attachments: Vec<Attachment>,
    },
    /// A membership change, as it was asked for.
    Member(Box<MemberUpdate>),
    /// A change to the room's settings.
    Room(Box<StoredRoomUpdate>),
    /// A change to the message at seq `target` of the same room.
    Update { kind: UpdateKind, target: Seq },
}

/// What a foreign key would reject on a database.
fn missing_reference(what: &str) -> StorageError {
    StorageError::Backend(format!("foreign key violation: no such {what}").into())
}

impl State {
    /// Spends every refresh token of `user`.
    fn spend_tokens(&mut self, user: UserId) {
        for token in self.tokens.values_mut() {
            if token.record.user == user {
                token.spent = true;
            }
        }
    }

    /// `report` with whether its message is deleted now (or gone).
    fn with_message_state(&self, report: &ReportRecord) -> ReportRecord {
        let deleted = report.message.is_some_and(|id| {
            self.message_ids
                .get(&id)
                .and_then(|&(room, seq)| self.message(room, seq))
                .is_none_or(|m| m.deleted)
        });
        ReportRecord {
            message_deleted: deleted,
            ..report.clone()
        }
    }

    fn require_user(&self, user: UserId) -> Result<(), StorageError> {
        if self.users.contains_key(&user) {
            Ok(())
        } else {
            Err(missing_reference("user"))
        }
    }

    fn sender_name(&self, user: UserId) -> String {
        self.users
            .get(&user)
            .map(|u| u.display_name.clone())
            .unwrap_or_default()
    }

    fn stored(&self, room: RoomId, seq: Seq, row: &EventRow) -> Option<StoredEvent> {
        Some(match &row.kind {
            EventRowKind::Message {
                body,
                client_id,
                edited_at,
                version,
                deleted,
                pinned_at,
                reply,
                thread_root,
                reply_count,
                last_reply_at,
                mentions,
                attachments,
            } => StoredEvent::Message(StoredMessage {
                id: row.id,
                room,
                seq,
                sender: row.sender,
                sender_name: self.sender_name(row.sender),
                body: body.clone(),
                created_at: row.created_at,
                client_id: client_id.clone(),
                edited_at: *edited_at,
                version: *version,
                deleted: *deleted,
                pinned: pinned_at.is_some(),
                reply: reply.clone(),
                thread_root: *thread_root,
                reply_count: *reply_count,
                last_reply_at: *last_reply_at,
                mentions: mentions.clone(),
                attachments: attachments.clone(),
            }),
            EventRowKind::Member(update) => StoredEvent::Member(update.event(seq)),
            EventRowKind::Room(update) => StoredEvent::Room(StoredRoomUpdate {
                seq,
                ..(**update).clone()
            }),
            EventRowKind::Update { kind, target } => StoredEvent::Update(StoredUpdate {
                room,
                seq,
                user: row.sender,
                kind: kind.clone(),
                reactions: Vec::new(),
                created_at: row.created_at,
                message: self.message(room, *target)?,
            }),
        })
    }

    fn event(&self, room: RoomId, seq: Seq) -> Option<StoredEvent> {
        let row = self.rooms.get(&room)?;
        self.stored(room, seq, row.event(seq)?)
    }

    fn message(&self, room: RoomId, seq: Seq) -> Option<StoredMessage> {
        match self.event(room, seq)? {
            StoredEvent::Message(m) => Some(m),
            StoredEvent::Member(_) | StoredEvent::Update(_) | StoredEvent::Room(_) => None,
        }
    }

    /// Appends a membership change to `room`'s timeline and tells the
    /// listener, under the lock (the commit point).
    fn member_event(
        &mut self,
        update: &MemberUpdate,
        listener: &Listener,
    ) -> Result<StoredMember, StorageError> {
        self.last_message_id += 1;
        let id = MessageId(self.last_message_id);
        let row = self
            .rooms
            .get_mut(&update.room)
            .ok_or(StorageError::NotFound)?;
        let seq = row.record.last_seq + 1;
        row.record.last_seq = seq;
        row.events.push(EventRow {
            id,
            sender: update.user,
            kind: EventRowKind::Member(Box::new(update.clone())),
            created_at: update.created_at,
            msg_no: row.msg_count,
        });
        let event = update.event(seq);
        listener.committed(Committed::Member(&event), None);
        Ok(event)
    }

    /// A message's reactions per key, in the order of each key's first;
    /// `mine` for `viewer`'s.
    fn reaction_counts(&self, message: MessageId, viewer: Option<UserId>) -> Vec<ReactionCount> {
        let mut counts: Vec<ReactionCount> = Vec::new();
        for (user, key) in self.reactions.get(&message).into_iter().flatten() {
            let mine = Some(*user) == viewer;
            match counts.iter_mut().find(|c| c.key == *key) {
                Some(c) => {
                    c.count += 1;
                    c.mine |= mine;
                }
                None => counts.push(ReactionCount {
                    key: key.clone(),
                    count: 1,
                    mine,
                }),
            }
        }
        counts
    }

    /// What `viewer` sees of `message` of `room` besides the message.
    fn seen(&self, room: RoomId, message: MessageId, viewer: UserId) -> Seen {
        let members = self.rooms.get(&room).map(|r| r.members.as_slice());
        let marks = members
            .into_iter()
            .flatten()
            .filter(|m| m.state == MemberState::Member);
        let (mut own_mark, mut others_mark) = (0, 0);
        for m in marks {
            if m.user == viewer {
                own_mark = m.read_seq;
            } else {
                others_mark = others_mark.max(m.read_seq);
            }
        }
        Seen {
            reactions: self.reaction_counts(message, Some(viewer)),
            own_mark,
            others_mark,
        }
    }

    /// The room list entry of `member` in `room`.
    fn user_room(&self, room: &RoomRow, member: &MemberRow) -> UserRoom {
        let is_member = member.state == MemberState::Member;
        UserRoom {
            room: room.record.clone(),
            state: member.state,
            read_seq: member.read_seq,
            role: room.role(member),
            muted_until: room
                .mutes
                .get(&member.user)
                .map(|until| Timestamp::from_unix_micros(*until)),
            unread: if is_member {
                u64::try_from(room.msg_count - room.msg_deleted - member.read_no).unwrap_or(0)
            } else {
                0
            },
            mentions: if is_member {
                room.mentions_above(member.user, member.read_seq)
            } else {
                0
            },
            member_count: room
                .members
                .iter()
                .filter(|m| m.state == MemberState::Member)
                .count() as u64,
            others_read_seq: if is_member {
                room.members
                    .iter()
                    .filter(|m| m.user != member.user)
                    .map(|m| m.read_seq)
                    .max()
                    .unwrap_or(0)
            } else {
                0
            },
            last_message: if is_member {
                self.message(room.record.id, room.record.last_message_seq)
            } else {
                None
            },
        }
    }

    /// `user`'s rooms among `rooms`, by the SQL backends' order: activity,
    /// newest first, then the newer room first so that ties are
    /// deterministic.
    fn by_activity<'a>(
        rooms: impl Iterator<Item = &'a RoomRow>,
        user: UserId,
    ) -> Vec<(&'a RoomRow, &'a MemberRow)> {
        let mut rooms: Vec<_> = rooms
            .filter_map(|r| r.member(user).map(|m| (r, m)))
            .collect();
        rooms.sort_by(|(a, _), (b, _)| {
            (b.activity(), b.record.id).cmp(&(a.activity(), a.record.id))
        });
        rooms
    }
}

impl RoomRow {
    fn new(record: RoomRecord, direct: Option<(UserId, UserId)>, members: Vec<MemberRow>) -> Self {
        Self {
            record,
            last_message_at: None,
            direct,
            last_position: members.len() as u64,
            members,
            bans: HashMap::new(),
            mutes: HashMap::new(),
            events: Vec::new(),
            msg_count: 0,
            msg_deleted: 0,
        }
    }

    fn member(&self, user: UserId) -> Option<&MemberRow> {
        self.members.iter().find(|m| m.user == user)
    }

    fn role(&self, member: &MemberRow) -> Role {
        roles::role_of(self.record.owner, member.user, member.role)
    }

    /// What the membership rule reads for `update`.
    fn member_standing(&self, update: &MemberUpdate) -> roles::Standing {
        let place = |user| {
            self.member(user).map(|m| roles::Place {
                state: m.state,
                role: self.role(m),
            })
        };
        roles::Standing {
            kind: self.record.kind,
            actor: place(update.by.unwrap_or(update.user)),
            target: place(update.user),
            banned: self.bans.get(&update.user).map(|ban| ban.2),
            muted: self.mutes.get(&update.user).copied(),
        }
    }

    fn event(&self, seq: Seq) -> Option<&EventRow> {
        self.events.get(usize::try_from(seq.checked_sub(1)?).ok()?)
    }

    /// The seqs of a page (see [`HistoryQuery`]) of the events `keep`
    /// accepts, oldest first, and whether there are more.
    fn page(&self, query: &HistoryQuery, keep: impl Fn(&EventRow) -> bool) -> (Vec<Seq>, bool) {
        let last = self.record.last_seq;
        let low = query.after.map_or(1, |a| a.saturating_add(1)).max(1);
        let high = query.before.map_or(last, |b| b.saturating_sub(1)).min(last);
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let wanted = |seq: &Seq| self.event(*seq).is_some_and(&keep);
        let mut seqs: Vec<Seq> = if query.after.is_some() {
            (low..=high).filter(wanted).take(limit + 1).collect()
        } else {
            (low..=high).rev().filter(wanted).take(limit + 1).collect()
        };
        let has_more = seqs.len() > limit;
        seqs.truncate(limit);
        if query.after.is_none() {
            seqs.reverse();
        }
        (seqs, has_more)
    }

    /// Messages not deleted above `seq` that mention `user`.
    fn mentions_above(&self, user: UserId, seq: Seq) -> u64 {
        self.events
            .iter()
            .skip(usize::try_from(seq).unwrap_or(0))
            .filter(|e| match &e.kind {
                EventRowKind::Message {
                    deleted, mentions, ..
                } => !deleted && mentions.contains(&user),
                _ => false,
            })
            .count() as u64
    }

    /// Messages not deleted, up to and including `seq`.
    fn live_up_to(&self, seq: Seq) -> i64 {
        let deleted = self
            .events
            .iter()
            .take(usize::try_from(seq).unwrap_or(0))
            .filter(|e| matches!(e.kind, EventRowKind::Message { deleted: true, .. }))
            .count();
        let counted = self.event(seq).map_or(0, |e| e.msg_no);
        counted - deleted as i64
    }

    fn next_position(&mut self) -> u64 {
        self.last_position += 1;
        self.last_position
    }

    fn activity(&self) -> Timestamp {
        self.last_message_at.unwrap_or(self.record.created_at)
    }
}

/// A webhook endpoint's cursor in a room.
#[derive(Debug, Clone, Default)]
struct MemoryCursor {
    delivered: Seq,
    attempts: u32,
    next_attempt_at: Option<Timestamp>,
    /// Holder and expiry.
    lease: Option<(String, Timestamp)>,
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, StorageError> {
        let mut state = self.lock();
        let email = user.email.to_lowercase();
        if state.usernames.contains_key(&user.username) {
            return Err(StorageError::Conflict(Conflict::Username));
        }
        if state.emails.contains_key(&email) {
            return Err(StorageError::Conflict(Conflict::Email));
        }
        state.last_user_id += 1;
        let record = UserRecord {
            id: UserId(state.last_user_id),
            username: user.username,
            email,
            display_name: user.display_name,
            password_hash: user.password_hash,
            created_at: user.created_at,
            is_admin: false,
            deactivated_at: None,
            token_version: 0,
            external_id: None,
            is_bot: false,
        };
        state.usernames.insert(record.username.clone(), record.id);
        if !record.email.is_empty() {
            state.emails.insert(record.email.clone(), record.id);
        }
        state.users.insert(record.id, record.clone());
        Ok(record)
    }

    async fn user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<UserRecord>, StorageError> {
        let state = self.lock();
        Ok(state
            .external_ids
            .get(external_id)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn provision_user(&self, user: &ExternalUser) -> Result<UserRecord, StorageError> {
        let mut state = self.lock();
        if let Some(id) = state.external_ids.get(&user.external_id).copied() {
            let record = state.users.get_mut(&id).ok_or(StorageError::NotFound)?;
            if let Some(name) = &user.display_name {
                record.display_name.clone_from(name);
            }
            return Ok(record.clone());
        }
        let email = user.email.to_lowercase();
        if state.usernames.contains_key(&user.username) {
            return Err(StorageError::Conflict(Conflict::Username));
        }
        if !email.is_empty() && state.emails.contains_key(&email) {
            return Err(StorageError::Conflict(Conflict::Email));
        }
        state.last_user_id += 1;
        let record = UserRecord {
            id: UserId(state.last_user_id),
            username: user.username.clone(),
            email,
            display_name: user
                .display_name
                .clone()
                .unwrap_or_else(|| user.username.clone()),
            password_hash: String::new(),
            created_at: user.created_at,
            is_admin: false,
            deactivated_at: None,
            token_version: 0,
            external_id: Some(user.external_id.clone()),
            is_bot: user.bot,
        };
        state.usernames.insert(record.username.clone(), record.id);
        if !record.email.is_empty() {
            state.emails.insert(record.email.clone(), record.id);
        }
        state
            .external_ids
            .insert(user.external_id.clone(), record.id);
        state.users.insert(record.id, record.clone());
        Ok(record)
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StorageError> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StorageError> {
        let state = self.lock();
        Ok(state
            .usernames
            .get(username)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StorageError> {
        let state = self.lock();
        Ok(state
            .emails
            .get(&email.to_lowercase())
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StorageError> {
        let state = self.lock();
        let start = after.map_or(i64::MIN, |a| a.0.saturating_add(1));
        Ok(state
            .users
            .range(UserId(start)..)
            .take(limit as usize)
            .map(|(_, u)| u.clone())
            .collect())
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StorageError> {
        let state = self.lock();
        let wanted: HashSet<UserId> = ids.iter().copied().collect();
        // Walking the id-ordered map yields id order and drops duplicates.
        Ok(state
            .users
            .values()
            .filter(|u| wanted.contains(&u.id))
            .cloned()
            .collect())
    }

    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.require_user(token.user)?;
        if state.tokens.contains_key(&token.id) {
            return Err(StorageError::Backend(
                "unique violation: refresh token id already stored".into(),
            ));
        }
        state.tokens.insert(
            token.id.clone(),
            TokenRow {
                record: token,
                spent: false,
            },
        );
        Ok(())
    }

    async fn use_refresh_token(&self, id: &str) -> Result<TokenUse, StorageError> {
        let mut state = self.lock();
        Ok(match state.tokens.get_mut(id) {
            None => TokenUse::Unknown,
            Some(row) if row.spent => TokenUse::Spent(row.record.clone()),
            Some(row) => {
                row.spent = true;
                TokenUse::Live(row.record.clone())
            }
        })
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<(), StorageError> {
        let mut state = self.lock();
        for row in state.tokens.values_mut() {
            if row.record.family == family {
                row.spent = true;
            }
        }
        Ok(())
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StorageError> {
        let mut state = self.lock();
        Ok(state
            .secrets
            .entry(name.to_owned())
            .or_insert_with(|| candidate.to_owned())
            .clone())
    }

    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StorageError> {
        let mut state = self.lock();
        if state.room_names.contains_key(&room.name) {
            return Err(StorageError::Conflict(Conflict::RoomName));
        }
        state.require_user(room.creator)?;
        for &user in &room.invited {
            state.require_user(user)?;
        }
        state.last_room_id += 1;
        let record = RoomRecord {
            id: RoomId(state.last_room_id),
            name: room.name,
            kind: room.kind,
            creator: room.creator,
            owner: room.creator,
            profile: RoomProfile::default(),
            created_at: room.created_at,
            last_seq: 0,
            last_message_seq: 0,
        };
        let mut row = RoomRow::new(
            record.clone(),
            None,
            vec![MemberRow::new(room.creator, MemberState::Member)],
        );
        for user in room.invited {
            if row.member(user).is_none() {
                row.next_position();
                row.members.push(MemberRow::new(user, MemberState::Invited));
            }
        }
        state.room_names.insert(record.name.clone(), record.id);
        state.rooms.insert(record.id, row);
        Ok(record)
    }

    async fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StorageError> {
        Ok(self.lock().rooms.get(&id).map(|r| r.record.clone()))
    }

    async fn room_by_name(&self, name: &str) -> Result<Option<RoomRecord>, StorageError> {
        let state = self.lock();
        Ok(state
            .room_names
            .get(name)
            .and_then(|id| state.rooms.get(id))
            .map(|r| r.record.clone()))
    }

    async fn delete_room(&self, id: RoomId) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let Some(row) = state.rooms.remove(&id) else {
            return Ok(false);
        };
        state.room_names.remove(&row.record.name);
        if let Some(pair) = row.direct {
            state.direct_pairs.remove(&pair);
        }
        // The cascade a database would run: the room's messages take their
        // `(sender, client_id)` entries with them.
        state.client_ids.retain(|_, (room, _)| *room != id);
        state.outbox_cursors.retain(|(_, room), _| *room != id);
        state.message_ids.retain(|_, (room, _)| *room != id);
        let State {
            message_ids,
            reactions,
            ..
        } = &mut *state;
        reactions.retain(|message, _| message_ids.contains_key(message));
        let now = Timestamp::now();
        for (row, doomed) in state.attachments.values_mut() {
            if doomed.is_none() && row.sent.is_some_and(|(room, _)| room == id) {
                *doomed = Some(now);
            }
        }
        Ok(true)
    }

    async fn room_people(&self, room: RoomId) -> Result<Vec<RoomPerson>, StorageError> {
        let state = self.lock();
        let Some(row) = state.rooms.get(&room) else {
            return Ok(Vec::new());
        };
        let person = |m: &MemberRow| RoomPerson {
            user: m.user,
            username: state
                .users
                .get(&m.user)
                .map(|u| u.username.clone())
                .unwrap_or_default(),
            state: m.state,
            read_seq: m.read_seq,
            role: row.role(m),
        };
        let members = row
            .members
            .iter()
            .filter(|m| m.state == MemberState::Member);
        let invitees = row
            .members
            .iter()
            .filter(|m| m.state == MemberState::Invited);
        Ok(members.chain(invitees).map(person).collect())
    }

    async fn membership(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<Option<MemberState>, StorageError> {
        let state = self.lock();
        Ok(state
            .rooms
            .get(&room)
            .and_then(|r| r.member(user))
            .map(|m| m.state))
    }

    async fn update_member(
        &self,
        update: MemberUpdate,
    ) -> Result<Option<StoredMember>, StorageError> {
        let mut state = self.lock();
        let Some(row) = state.rooms.get(&update.room) else {
            return match update.change {
                MemberChange::Left => Ok(None),
                _ => Err(StorageError::NotFound),
            };
        };
        let Some(effect) = roles::judge(&update.request(), &row.member_standing(&update))? else {
            return Ok(None);
        };
        if matches!(effect, Effect::Join | Effect::Invite) {
            state.require_user(update.user)?;
        }
        let by = update.by.unwrap_or(update.user);
        let row = state
            .rooms
            .get_mut(&update.room)
            .ok_or(StorageError::NotFound)?;
        let user = update.user;
        match effect {
            Effect::Join => {
                // Joining takes a new place at the end: members are listed
                // in order of joining, not of invitation.
                let role = row.member(user).map_or(Role::Member, |m| m.role);
                row.members.retain(|m| m.user != user);
                row.next_position();
                row.members.push(MemberRow {
                    user,
                    state: MemberState::Member,
                    read_seq: row.record.last_seq,
                    read_no: row.msg_count - row.msg_deleted,
                    role,
                    last_sent_at: None,
                });
            }
            Effect::Remove => row.members.retain(|m| m.user != user),
            Effect::Invite => {
                row.next_position();
                row.members.push(MemberRow::new(user, MemberState::Invited));
            }
            Effect::Ban => {
                row.members.retain(|m| m.user != user);
                let until = update.until.map(|t| t.unix_micros());
                row.bans
                    .insert(user, (by, update.reason.clone(), until, update.created_at));
            }
            Effect::Unban => {
                row.bans.remove(&user);
            }
            Effect::Mute(Some(until)) => {
                row.mutes.insert(user, until);
            }
            Effect::Mute(None) => {
                row.mutes.remove(&user);
            }
            Effect::SetRole(role) => {
                if let Some(m) = row.members.iter_mut().find(|m| m.user == user) {
                    m.role = role;
                }
            }
            Effect::Transfer => {
                row.record.owner = user;
                if let Some(m) = row.members.iter_mut().find(|m| m.user == by) {
                    m.role = Role::Admin;
                }
            }
        }
        state.member_event(&update, &self.listener).map(Some)
    }

    async fn update_room(
        &self,
        change: RoomChange,
    ) -> Result<Option<StoredRoomUpdate>, StorageError> {
        let mut state = self.lock();
        let row = state
            .rooms
            .get(&change.room)
            .ok_or(StorageError::NotFound)?;
        let actor = row.member(change.by).map(|m| roles::Place {
            state: m.state,
            role: row.role(m),
        });
        roles::judge_settings(row.record.kind, actor)?;
        let Some((name, kind, profile, changed)) =
            row.record
                .profile
                .apply(&row.record.name, row.record.kind, &change.settings)
        else {
            return Ok(None);
        };
        let old_name = row.record.name.clone();
        if name != old_name && state.room_names.contains_key(&name) {
            return Err(StorageError::Conflict(Conflict::RoomName));
        }
        state.last_message_id += 1;
        let id = MessageId(state.last_message_id);
        let row = state
            .rooms
            .get_mut(&change.room)
            .ok_or(StorageError::NotFound)?;
        row.record.name = name.clone();
        row.record.kind = kind;
        row.record.profile = profile;
        let seq = row.record.last_seq + 1;
        row.record.last_seq = seq;
        let event = StoredRoomUpdate {
            room: change.room,
            seq,
            user: change.by,
            created_at: change.created_at,
            settings: changed,
        };
        row.events.push(EventRow {
            id,
            sender: change.by,
            kind: EventRowKind::Room(Box::new(event.clone())),
            created_at: change.created_at,
            msg_no: row.msg_count,
        });
        if name != old_name {
            state.room_names.remove(&old_name);
            state.room_names.insert(name, change.room);
        }
        self.listener.committed(Committed::Room(&event), None);
        Ok(Some(event))
    }

    async fn public_rooms(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PublicRoom>, StorageError> {
        let state = self.lock();
        let prefix = prefix.unwrap_or("").to_lowercase();
        let mut rooms: Vec<&RoomRow> = state
            .rooms
            .values()
            .filter(|r| r.record.kind == RoomType::Public)
            .filter(|r| after.is_none_or(|a| r.record.name.as_str() > a))
            .filter(|r| r.record.name.to_lowercase().starts_with(&prefix))
            .collect();
        rooms.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(rooms
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|r| PublicRoom {
                room: r.record.clone(),
                member_count: r
                    .members
                    .iter()
                    .filter(|m| m.state == MemberState::Member)
                    .count() as u64,
                last_activity_at: r.activity(),
            })
            .collect())
    }

    async fn outbox_start(&self, endpoint: &str, _at: Timestamp) -> Result<bool, StorageError> {
        let mut state = self.lock();
        if !state.outbox_sinks.insert(endpoint.to_owned()) {
            return Ok(false);
        }
        let rooms: Vec<(RoomId, Seq)> = state
            .rooms
            .values()
            .map(|r| (r.record.id, r.record.last_seq))
            .collect();
        for (room, last) in rooms {
            state.outbox_cursors.insert(
                (endpoint.to_owned(), room),
                MemoryCursor {
                    delivered: last,
                    ..MemoryCursor::default()
                },
            );
        }
        Ok(true)
    }

    async fn outbox_backlog(
        &self,
        endpoint: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxBacklog>, StorageError> {
        let state = self.lock();
        let mut rooms: Vec<OutboxBacklog> = state
            .rooms
            .values()
            .filter_map(|r| {
                let cursor = state
                    .outbox_cursors
                    .get(&(endpoint.to_owned(), r.record.id))
                    .cloned()
                    .unwrap_or_default();
                let due = cursor.next_attempt_at.is_none_or(|at| at <= now)
                    && cursor.lease.as_ref().is_none_or(|(_, until)| *until <= now);
                (r.record.last_seq > cursor.delivered && due).then_some(OutboxBacklog {
                    room: r.record.id,
                    last_seq: r.record.last_seq,
                    delivered: cursor.delivered,
                })
            })
            .collect();
        rooms.sort_by_key(|b| b.room);
        rooms.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rooms)
    }

    async fn outbox_claim(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<OutboxCursor>, StorageError> {
        let mut state = self.lock();
        if !state.rooms.contains_key(&room) || !state.outbox_sinks.contains(endpoint) {
            return Ok(None);
        }
        let cursor = state
            .outbox_cursors
            .entry((endpoint.to_owned(), room))
            .or_default();
        let free = cursor
            .lease
            .as_ref()
            .is_none_or(|(holder, expires)| *expires <= now || holder == owner);
        if !free {
            return Ok(None);
        }
        cursor.lease = Some((owner.to_owned(), until));
        Ok(Some(OutboxCursor {
            delivered: cursor.delivered,
            attempts: cursor.attempts,
            next_attempt_at: cursor.next_attempt_at,
        }))
    }

    async fn outbox_delivered(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        seq: Seq,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if let Some(cursor) = state.outbox_cursors.get_mut(&(endpoint.to_owned(), room))
            && cursor
                .lease
                .as_ref()
                .is_some_and(|(holder, _)| holder == owner)
            && cursor.delivered < seq
        {
            cursor.delivered = seq;
            cursor.attempts = 0;
            cursor.next_attempt_at = None;
        }
        Ok(())
    }

    async fn outbox_failed(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        attempts: u32,
        next: Timestamp,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if let Some(cursor) = state.outbox_cursors.get_mut(&(endpoint.to_owned(), room))
            && cursor
                .lease
                .as_ref()
                .is_some_and(|(holder, _)| holder == owner)
        {
            cursor.attempts = attempts;
            cursor.next_attempt_at = Some(next);
            cursor.lease = None;
        }
        Ok(())
    }

    async fn outbox_release(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if let Some(cursor) = state.outbox_cursors.get_mut(&(endpoint.to_owned(), room))
            && cursor
                .lease
                .as_ref()
                .is_some_and(|(holder, _)| holder == owner)
        {
            cursor.lease = None;
        }
        Ok(())
    }

    async fn register_device(
        &self,
        user: UserId,
        platform: &str,
        token: &str,
        app_id: &str,
        at: Timestamp,
    ) -> Result<DeviceRecord, StorageError> {
        let mut state = self.lock();
        if !state.users.contains_key(&user) {
            return Err(StorageError::NotFound);
        }
        let existing = state
            .devices
            .values()
            .find(|d| d.app_id == app_id && d.token == token)
            .map(|d| d.id);
        let id = match existing {
            Some(id) => id,
            None => {
                state.last_device_id += 1;
                state.last_device_id
            }
        };
        let record = DeviceRecord {
            id,
            user,
            platform: platform.to_owned(),
            token: token.to_owned(),
            app_id: app_id.to_owned(),
            created_at: at,
        };
        state.devices.insert(id, record.clone());
        Ok(record)
    }

    async fn devices(&self, users: &[UserId]) -> Result<Vec<DeviceRecord>, StorageError> {
        Ok(self
            .lock()
            .devices
            .values()
            .filter(|d| users.contains(&d.user))
            .cloned()
            .collect())
    }

    async fn delete_device(&self, user: UserId, id: i64) -> Result<bool, StorageError> {
        let mut state = self.lock();
        match state.devices.get(&id) {
            Some(d) if d.user == user => Ok(state.devices.remove(&id).is_some()),
            _ => Ok(false),
        }
    }

    async fn delete_device_token(&self, app_id: &str, token: &str) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let found = state
            .devices
            .values()
            .find(|d| d.app_id == app_id && d.token == token)
            .map(|d| d.id);
        Ok(found.is_some_and(|id| state.devices.remove(&id).is_some()))
    }

    async fn create_api_key(
        &self,
        name: &str,
        key_hash: &str,
        created_at: Timestamp,
    ) -> Result<ApiKeyRecord, StorageError> {
        let mut state = self.lock();
        if state
            .api_keys
            .iter()
            .any(|(k, _)| k.name == name && k.revoked_at.is_none())
        {
            return Err(StorageError::Conflict(Conflict::ApiKeyName));
        }
        if state.api_keys.iter().any(|(_, hash)| hash == key_hash) {
            return Err(StorageError::Backend("duplicate API key hash".into()));
        }
        let record = ApiKeyRecord {
            id: state.api_keys.last().map_or(1, |(k, _)| k.id + 1),
            name: name.to_owned(),
            created_at,
            last_used_at: None,
            revoked_at: None,
        };
        state.api_keys.push((record.clone(), key_hash.to_owned()));
        Ok(record)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StorageError> {
        Ok(self
            .lock()
            .api_keys
            .iter()
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        Ok(self
            .lock()
            .api_keys
            .iter()
            .find(|(k, hash)| hash == key_hash && k.revoked_at.is_none())
            .map(|(k, _)| k.clone()))
    }

    async fn revoke_api_key(&self, name: &str, at: Timestamp) -> Result<bool, StorageError> {
        let mut state = self.lock();
        match state
            .api_keys
            .iter_mut()
            .find(|(k, _)| k.name == name && k.revoked_at.is_none())
        {
            Some((k, _)) => {
                k.revoked_at = Some(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn touch_api_key(&self, id: i64, at: Timestamp) -> Result<(), StorageError> {
        if let Some((k, _)) = self.lock().api_keys.iter_mut().find(|(k, _)| k.id == id) {
            k.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn set_admin(&self, user: UserId, admin: bool) -> Result<bool, StorageError> {
        let mut state = self.lock();
        Ok(match state.users.get_mut(&user) {
            Some(u) => {
                u.is_admin = admin;
                true
            }
            None => false,
        })
    }

    async fn set_deactivated(
        &self,
        user: UserId,
        at: Option<Timestamp>,
    ) -> Result<Option<i64>, StorageError> {
        let mut state = self.lock();
        let Some(u) = state.users.get_mut(&user) else {
            return Ok(None);
        };
        u.deactivated_at = at;
        if at.is_some() {
            u.token_version += 1;
        }
        let version = u.token_version;
        if at.is_some() {
            state.spend_tokens(user);
        }
        Ok(Some(version))
    }

    async fn revoke_sessions(&self, user: UserId) -> Result<Option<i64>, StorageError> {
        let mut state = self.lock();
        let Some(u) = state.users.get_mut(&user) else {
            return Ok(None);
        };
        u.token_version += 1;
        let version = u.token_version;
        state.spend_tokens(user);
        Ok(Some(version))
    }

    async fn create_report(&self, report: NewReport) -> Result<i64, StorageError> {
        let mut state = self.lock();
        state.require_user(report.reporter)?;
        state.require_user(report.user)?;
        let id = state.reports.keys().next_back().map_or(1, |last| last + 1);
        state.reports.insert(
            id,
            ReportRecord {
                id,
                reporter: report.reporter,
                user: report.user,
                message: report.message,
                room: report.room,
                reason: report.reason,
                message_body: report.message_body,
                message_deleted: false,
                created_at: report.created_at,
                resolved_at: None,
                resolved_by: None,
                resolution: None,
            },
        );
        Ok(id)
    }

    async fn report(&self, id: i64) -> Result<Option<ReportRecord>, StorageError> {
        let state = self.lock();
        Ok(state.reports.get(&id).map(|r| state.with_message_state(r)))
    }

    async fn reports(
        &self,
        status: ReportStatus,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ReportRecord>, StorageError> {
        let state = self.lock();
        Ok(state
            .reports
            .range(..before.unwrap_or(i64::MAX))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| match status {
                ReportStatus::Open => r.resolved_at.is_none(),
                ReportStatus::Resolved => r.resolved_at.is_some(),
                ReportStatus::All => true,
            })
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|r| state.with_message_state(r))
            .collect())
    }

    async fn resolve_report(
        &self,
        id: i64,
        by: UserId,
        resolution: &str,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        Ok(match state.reports.get_mut(&id) {
            Some(r) if r.resolved_at.is_none() => {
                r.resolved_at = Some(at);
                r.resolved_by = Some(by);
                r.resolution = Some(resolution.to_owned());
                true
            }
            _ => false,
        })
    }

    async fn block_user(
        &self,
        blocker: UserId,
        blocked: UserId,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        state.require_user(blocker)?;
        state.require_user(blocked)?;
        if state.blocks.contains_key(&(blocker, blocked)) {
            return Ok(false);
        }
        state.blocks.insert((blocker, blocked), at);
        Ok(true)
    }

    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError> {
        Ok(self.lock().blocks.remove(&(blocker, blocked)).is_some())
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError> {
        Ok(self.lock().blocks.contains_key(&(blocker, blocked)))
    }

    async fn blocked_users(
        &self,
        blocker: UserId,
    ) -> Result<Vec<(UserRecord, Timestamp)>, StorageError> {
        let state = self.lock();
        let mut found: Vec<(UserRecord, Timestamp)> = state
            .blocks
            .iter()
            .filter(|((by, _), _)| *by == blocker)
            .filter_map(|((_, blocked), at)| Some((state.users.get(blocked)?.clone(), *at)))
            .collect();
        found.sort_by(|a, b| (b.1, a.0.id).cmp(&(a.1, b.0.id)));
        Ok(found)
    }

    async fn bans(&self, room: RoomId, now: Timestamp) -> Result<Vec<BanRecord>, StorageError> {
        let state = self.lock();
        let Some(row) = state.rooms.get(&room) else {
            return Ok(Vec::new());
        };
        let now = now.unix_micros();
        let mut bans: Vec<BanRecord> = row
            .bans
            .iter()
            .filter(|(_, (_, _, until, _))| until.is_none_or(|u| u > now))
            .map(|(&user, (by, reason, until, at))| BanRecord {
                room,
                user,
                username: state
                    .users
                    .get(&user)
                    .map(|u| u.username.clone())
                    .unwrap_or_default(),
                by: *by,
                reason: reason.clone(),
                until: until.map(Timestamp::from_unix_micros),
                created_at: *at,
            })
            .collect();
        bans.sort_by(|a, b| (b.created_at, a.user).cmp(&(a.created_at, b.user)));
        Ok(bans)
    }

    async fn user_rooms(&self, user: UserId) -> Result<Vec<UserRoom>, StorageError> {
        let state = self.lock();
        Ok(State::by_activity(state.rooms.values(), user)
            .into_iter()
            .map(|(r, m)| state.user_room(r, m))
            .collect())
    }

    async fn direct_room(
        &self,
        a: UserId,
        b: UserId,
        created_at: Timestamp,
    ) -> Result<(RoomRecord, bool), StorageError> {
        let (lo, hi) = super::direct_pair(a, b).ok_or_else(super::self_conversation)?;
        let mut state = self.lock();
        if let Some(existing) = state
            .direct_pairs
            .get(&(lo, hi))
            .and_then(|id| state.rooms.get(id))
        {
            return Ok((existing.record.clone(), false));
        }
        let name = super::direct_name(lo, hi);
        // What the SQL insert would hit: the name is unique too.
        if state.room_names.contains_key(&name) {
            return Err(StorageError::Conflict(Conflict::RoomName));
        }
        state.require_user(a)?;
        state.require_user(b)?;
        state.last_room_id += 1;
        let record = RoomRecord {
            id: RoomId(state.last_room_id),
            name,
            kind: RoomType::Direct,
            creator: a,
            owner: a,
            profile: RoomProfile::default(),
            created_at,
            last_seq: 0,
            last_message_seq: 0,
        };
        let member = |user| MemberRow::new(user, MemberState::Member);
        let row = RoomRow::new(record.clone(), Some((lo, hi)), vec![member(a), member(b)]);
        state.room_names.insert(record.name.clone(), record.id);
        state.direct_pairs.insert((lo, hi), record.id);
        state.rooms.insert(record.id, row);
        Ok((record, true))
    }

    async fn find_direct_room(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<Option<RoomRecord>, StorageError> {
        let Some(pair) = super::direct_pair(a, b) else {
            return Ok(None);
        };
        let state = self.lock();
        Ok(state
            .direct_pairs
            .get(&pair)
            .and_then(|id| state.rooms.get(id))
            .map(|r| r.record.clone()))
    }

    async fn user_conversations(&self, user: UserId) -> Result<Vec<Conversation>, StorageError> {
        let state = self.lock();
        let conversations = state.rooms.values().filter(|r| r.direct.is_some());
        Ok(State::by_activity(conversations, user)
            .into_iter()
            .filter_map(|(r, m)| {
                let (lo, hi) = r.direct?;
                let other = if lo == user { hi } else { lo };
                // An inner join on the SQL side: no row without the user.
                let other = state.users.get(&other)?.clone();
                Some(Conversation {
                    room: state.user_room(r, m),
                    other,
                })
            })
            .collect())
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StorageError> {
        let mut state = self.lock();
        // Same order of checks as the SQL transaction: the room first, its
        // membership, then the duplicate, then the sender's foreign key.
        let Some(room) = state.rooms.get(&message.room) else {
            return Err(StorageError::NotFound);
        };
        let member = match room.member(message.sender) {
            Some(m) if m.state == MemberState::Member => m,
            other => {
                return Err(StorageError::NotMember {
                    kind: room.record.kind,
                    state: other.map(|m| m.state),
                });
            }
        };
        // Applied after a repeat is answered: a retry gets its original.
        let gate = roles::Gate {
            kind: room.record.kind,
            role: room.role(member),
            muted_until: room.mutes.get(&message.sender).copied(),
            announcement: room.record.profile.announcement,
            slow_mode: i64::from(room.record.profile.slow_mode),
            last_sent_at: member.last_sent_at,
            blocked: room.direct.is_some_and(|(lo, hi)| {
                let other = if lo == message.sender { hi } else { lo };
                state.blocks.contains_key(&(other, message.sender))
            }),
        };
        let refused = roles::send_refusal(&gate, message.created_at.unix_micros());
        if let Some(client_id) = &message.client_id
            && let Some(&(room, seq)) = state.client_ids.get(&(message.sender, client_id.clone()))
        {
            let original = state
                .message(room, seq)
                .ok_or_else(|| StorageError::Backend("client_id index out of sync".into()))?;
            return Ok(Appended {
                message: original,
                created: false,
            });
        }
        if let Some(why) = refused {
            return Err(StorageError::Refused(why));
        }
        state.require_user(message.sender)?;

        // The caller checked that both name messages of this room.
        let reply = message.reply_to.and_then(|target| {
            let &(room, seq) = state.message_ids.get(&target)?;
            let replied = state.message(room, seq)?;
            Some(StoredReply {
                id: target,
                seq: replied.seq,
                sender: replied.sender,
                snippet: (!replied.deleted).then(|| super::snippet(&replied.body)),
            })
        });
        let root = message
            .thread_root
            .and_then(|root| state.message_ids.get(&root).copied());

        state.last_message_id += 1;
        let id = MessageId(state.last_message_id);
        let room = state
            .rooms
            .get_mut(&message.room)
            .ok_or(StorageError::NotFound)?;
        if let Some((root_room, root_seq)) = root
            && root_room == message.room
            && let Some(EventRow {
                kind:
                    EventRowKind::Message {
                        reply_count,
                        last_reply_at,
                        ..
                    },
                ..
            }) = room
                .events
                .get_mut(usize::try_from(root_seq - 1).unwrap_or(usize::MAX))
        {
            *reply_count += 1;
            *last_reply_at = Some(message.created_at);
        }
        let seq = room.record.last_seq + 1;
        room.record.last_seq = seq;
        room.msg_count += 1;
        room.record.last_message_seq = seq;
        room.last_message_at = Some(message.created_at);
        room.events.push(EventRow {
            id,
            sender: message.sender,
            kind: EventRowKind::Message {
                body: message.body,
                client_id: message.client_id.clone(),
                edited_at: None,
                version: 0,
                deleted: false,
                pinned_at: None,
                reply,
                thread_root: message.thread_root,
                reply_count: 0,
                last_reply_at: None,
                mentions: message.mentions,
                attachments: message.attachments.clone(),
            },
            created_at: message.created_at,
            msg_no: room.msg_count,
        });
        let live = room.msg_count - room.msg_deleted;
        if let Some(member) = room
            .members
            .iter_mut()
            .find(|m| m.user == message.sender && m.state == MemberState::Member)
            && member.read_seq < seq
        {
            member.read_seq = seq;
            member.read_no = live;
            member.last_sent_at = Some(message.created_at.unix_micros());
        }
        state.message_ids.insert(id, (message.room, seq));
        for attachment in &message.attachments {
            if let Some((row, None)) = state.attachments.get_mut(&attachment.id)
                && row.owner == message.sender
                && row.sent.is_none()
            {
                row.sent = Some((message.room, id));
            }
        }
        if let Some(client_id) = message.client_id {
            state
                .client_ids
                .insert((message.sender, client_id), (message.room, seq));
        }
        let stored = state
            .message(message.room, seq)
            .ok_or_else(|| StorageError::Backend("appended message vanished".into()))?;
        let appended = Appended {
            message: stored,
            created: true,
        };
        // Under the lock: the commit point, so listeners hear a room's
        // messages in seq order.
        self.listener.appended(&appended, message.origin);
        Ok(appended)
    }

    fn listen(&self, listener: Arc<dyn CommitListener>) {
        self.listener.set(listener);
    }

    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, StorageError> {
        let state = self.lock();
        let mut found: Vec<(StoredMessage, String)> = Vec::new();
        for (&room, row) in &state.rooms {
            let member = row
                .member(request.viewer)
                .is_some_and(|m| m.state == MemberState::Member);
            if !member || request.room.is_some_and(|r| r != room) {
                continue;
            }
            for (event, seq) in row.events.iter().zip(1..) {
                let EventRowKind::Message {
                    body,
                    deleted: false,
                    ..
                } = &event.kind
                else {
                    continue;
                };
                if request.before.is_some_and(|b| event.id >= b) {
                    continue;
                }
                // The SQL backends' tokenizers, roughly: words of letters
                // and digits, case folded.
                let words: HashSet<String> = body
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                if request.terms.iter().all(|t| words.contains(t))
                    && let Some(message) = state.message(room, seq)
                {
                    found.push((message, row.record.name.clone()));
                }
            }
        }
        found.sort_unstable_by_key(|(m, _)| std::cmp::Reverse(m.id));
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let has_more = found.len() > limit;
        found.truncate(limit);
        Ok(SearchPage {
            hits: found,
            has_more,
        })
    }

    async fn pins(&self, room: RoomId) -> Result<Vec<StoredMessage>, StorageError> {
        let state = self.lock();
        let Some(row) = state.rooms.get(&room) else {
            return Ok(Vec::new());
        };
        let mut pinned: Vec<(Timestamp, Seq)> = row
            .events
            .iter()
            .zip(1..)
            .filter_map(|(e, seq)| match e.kind {
                EventRowKind::Message {
                    pinned_at: Some(at),
                    ..
                } => Some((at, seq)),
                _ => None,
            })
            .collect();
        pinned.sort_unstable_by(|a, b| b.cmp(a));
        Ok(pinned
            .into_iter()
            .filter_map(|(_, seq)| state.message(room, seq))
            .collect())
    }

    async fn reactions(
        &self,
        messages: &[MessageId],
        viewer: UserId,
    ) -> Result<Vec<(MessageId, Vec<ReactionCount>)>, StorageError> {
        let state = self.lock();
        let mut ids = messages.to_vec();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids
            .into_iter()
            .map(|id| (id, state.reaction_counts(id, Some(viewer))))
            .filter(|(_, counts)| !counts.is_empty())
            .collect())
    }

    async fn change_message(&self, change: MessageChange) -> Result<Changed, StorageError> {
        let mut state = self.lock();
        // The SQL transaction's order: the message's room, the caller's
        // membership, then the rule on the message as it stands.
        let &(room_id, seq) = state
            .message_ids
            .get(&change.message)
            .ok_or(StorageError::NotFound)?;
        let room = state.rooms.get(&room_id).ok_or(StorageError::NotFound)?;
        match room.member(change.user).map(|m| m.state) {
            Some(MemberState::Member) => {}
            other => {
                return Err(StorageError::NotMember {
                    kind: room.record.kind,
                    state: other,
                });
            }
        }
        let mut standing = Standing {
            kind: room.record.kind,
            role: room
                .member(change.user)
                .map_or(Role::Member, |m| room.role(m)),
            reacted: false,
            keys: 0,
            key_present: false,
            pins: 0,
        };
        if let ChangeOp::React { key, .. } = &change.op {
            let given = state.reactions.get(&change.message);
            let given = given.map_or(&[][..], Vec::as_slice);
            standing.keys = given.iter().map(|(_, k)| k).collect::<HashSet<_>>().len();
            standing.key_present = given.iter().any(|(_, k)| k == key);
            standing.reacted = given.iter().any(|(u, k)| *u == change.user && k == key);
        }
        if let ChangeOp::Pin { pin: true } = &change.op {
            standing.pins = room
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventRowKind::Message {
                            pinned_at: Some(_),
                            ..
                        }
                    )
                })
                .count();
        }
        let target = state.message(room_id, seq).ok_or(StorageError::NotFound)?;
        let Some(kind) = change.decide(&target, &standing)? else {
            let seen = state.seen(room_id, change.message, change.user);
            return Ok(Changed {
                message: target,
                event: None,
                seen: Some(seen),
            });
        };

        state.last_message_id += 1;
        let id = MessageId(state.last_message_id);
        let room = state
            .rooms
            .get_mut(&room_id)
            .ok_or(StorageError::NotFound)?;
        let event_seq = room.record.last_seq + 1;
        room.record.last_seq = event_seq;
        let index = usize::try_from(seq - 1).unwrap_or(usize::MAX);
        if let Some(EventRow {
            kind:
                EventRowKind::Message {
                    body,
                    edited_at,
                    version,
                    deleted,
                    pinned_at,
                    reply,
                    mentions,
                    attachments,
                    ..
                },
            ..
        }) = room.events.get_mut(index)
        {
            *version += 1;
            match &change.op {
                ChangeOp::Edit { body: new } => {
                    body.clone_from(new);
                    *edited_at = Some(change.created_at);
                }
                ChangeOp::Delete => {
                    body.clear();
                    *deleted = true;
                    *pinned_at = None;
                    if let Some(reply) = reply {
                        reply.snippet = None;
                    }
                    mentions.clear();
                    attachments.clear();
                }
                ChangeOp::Pin { pin } => {
                    *pinned_at = pin.then_some(change.created_at);
                }
                ChangeOp::React { .. } => {}
            }
        }
        if change.op == ChangeOp::Delete {
            // Its reactions go with it, the keys of its reaction events, the
            // snippets replies keep of it, and a reply off its thread's
            // count.
            for event in &mut room.events {
                match &mut event.kind {
                    EventRowKind::Update {
                        kind: UpdateKind::Reacted { key, .. },
                        target,
                    } if *target == seq => key.clear(),
                    EventRowKind::Message {
                        reply: Some(reply), ..
                    } if reply.id == change.message => reply.snippet = None,
                    EventRowKind::Message { reply_count, .. }
                        if Some(event.id) == target.thread_root =>
                    {
                        *reply_count = reply_count.saturating_sub(1);
                    }
                    _ => {}
                }
            }
        }
        if change.op == ChangeOp::Delete {
            // Unread counts subtract it; marks at or above it had counted
            // it as read.
            room.msg_deleted += 1;
            for member in &mut room.members {
                if member.state == MemberState::Member && member.read_seq >= seq {
                    member.read_no -= 1;
                }
            }
        }
        room.events.push(EventRow {
            id,
            sender: change.user,
            kind: EventRowKind::Update {
                kind: kind.clone(),
                target: seq,
            },
            created_at: change.created_at,
            msg_no: room.msg_count,
        });
        match &change.op {
            ChangeOp::Delete => {
                state.reactions.remove(&change.message);
                for (row, doomed) in state.attachments.values_mut() {
                    if doomed.is_none() && row.sent.is_some_and(|(_, m)| m == change.message) {
                        *doomed = Some(change.created_at);
                    }
                }
            }
            ChangeOp::React { key, add: true } => state
                .reactions
                .entry(change.message)
                .or_default()
                .push((change.user, key.clone())),
            ChangeOp::React { key, add: false } => {
                if let Some(given) = state.reactions.get_mut(&change.message) {
                    given.retain(|(u, k)| !(*u == change.user && k == key));
                }
            }
            ChangeOp::Edit { .. } | ChangeOp::Pin { .. } => {}
        }
        let message = state
            .message(room_id, seq)
            .ok_or_else(|| StorageError::Backend("changed message vanished".into()))?;
        let event = StoredUpdate {
            reactions: state.reaction_counts(change.message, None),
            room: room_id,
            seq: event_seq,
            user: change.user,
            kind,
            created_at: change.created_at,
            message: message.clone(),
        };
        // Under the lock: the commit point.
        self.listener.committed(Committed::Update(&event), None);
        Ok(Changed {
            message,
            event: Some(event),
            seen: Some(state.seen(room_id, change.message, change.user)),
        })
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError> {
        let state = self.lock();
        let Some(row) = state.rooms.get(&room) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        let (seqs, has_more) = row.page(&query, |e| {
            matches!(
                e.kind,
                EventRowKind::Message {
                    thread_root: None,
                    ..
                }
            )
        });
        Ok(HistoryPage {
            messages: seqs
                .into_iter()
                .filter_map(|seq| state.message(room, seq))
                .collect(),
            has_more,
        })
    }

    async fn thread(
        &self,
        root: MessageId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError> {
        let state = self.lock();
        let Some((room, row)) = state
            .message_ids
            .get(&root)
            .and_then(|(room, _)| Some((*room, state.rooms.get(room)?)))
        else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        let (seqs, has_more) = row.page(
            &query,
            |e| matches!(e.kind, EventRowKind::Message { thread_root: Some(r), .. } if r == root),
        );
        Ok(HistoryPage {
            messages: seqs
                .into_iter()
                .filter_map(|seq| state.message(room, seq))
                .collect(),
            has_more,
        })
    }

    async fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StorageError> {
        let state = self.lock();
        Ok(state
            .message_ids
            .get(&id)
            .and_then(|&(room, seq)| state.message(room, seq)))
    }

    async fn message_by_client_id(
        &self,
        sender: UserId,
        client_id: &str,
    ) -> Result<Option<StoredMessage>, StorageError> {
        let state = self.lock();
        Ok(state
            .client_ids
            .get(&(sender, client_id.to_owned()))
            .and_then(|&(room, seq)| state.message(room, seq)))
    }

    async fn members_among(
        &self,
        room: RoomId,
        users: &[UserId],
    ) -> Result<Vec<UserId>, StorageError> {
        let state = self.lock();
        Ok(state.rooms.get(&room).map_or_else(Vec::new, |row| {
            users
                .iter()
                .copied()
                .filter(|u| {
                    row.member(*u)
                        .is_some_and(|m| m.state == MemberState::Member)
                })
                .collect()
        }))
    }

    async fn timeline(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<TimelinePage, StorageError> {
        let state = self.lock();
        let Some(row) = state.rooms.get(&room) else {
            return Ok(TimelinePage {
                events: Vec::new(),
                has_more: false,
            });
        };
        let (seqs, has_more) = row.page(&query, |_| true);
        Ok(TimelinePage {
            events: seqs
                .into_iter()
                .filter_map(|seq| state.event(room, seq))
                .collect(),
            has_more,
        })
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        seq: Seq,
    ) -> Result<ReadMark, StorageError> {
        let mut state = self.lock();
        let row = state.rooms.get_mut(&room).ok_or(StorageError::NotFound)?;
        let last_seq = row.record.last_seq;
        let member = row
            .members
            .iter_mut()
            .find(|m| m.user == user && m.state == MemberState::Member)
            .ok_or(StorageError::NotFound)?;
        let previous = member.read_seq;
        let target = seq.min(last_seq);
        if target > previous {
            let live = row.live_up_to(target);
            let member = row
                .members
                .iter_mut()
                .find(|m| m.user == user && m.state == MemberState::Member)
                .ok_or(StorageError::NotFound)?;
            member.read_seq = target;
            member.read_no = live;
        }
        Ok(ReadMark {
            previous,
            current: target.max(previous),
        })
    }

    async fn read_marks(&self, room: RoomId) -> Result<Vec<(UserId, Seq)>, StorageError> {
        let state = self.lock();
        Ok(state
            .rooms
            .get(&room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| m.state == MemberState::Member)
                    .map(|m| (m.user, m.read_seq))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn unread_total(&self, user: UserId) -> Result<u64, StorageError> {
        let state = self.lock();
        // The same arithmetic as SQL, exact for the reason given there:
        // appending moves the sender's mark, so every message above a mark
        // is someone else's.
        let total: i64 = state
            .rooms
            .values()
            .filter_map(|r| {
                r.member(user)
                    .filter(|m| m.state == MemberState::Member)
                    .map(|m| r.msg_count - r.msg_deleted - m.read_no)
            })
            .sum();
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn create_attachment(
        &self,
        new: NewAttachment,
    ) -> Result<AttachmentRecord, StorageError> {
        let mut state = self.lock();
        state.require_user(new.owner)?;
        state.last_attachment_id += 1;
        let id = AttachmentId(state.last_attachment_id);
        let (width, height) = new.dimensions.unzip();
        let record = AttachmentRecord {
            attachment: Attachment {
                id,
                name: new.name,
                size: new.size,
                content_type: new.content_type,
                width,
                height,
                thumbnail: new.thumbnail,
                created_at: new.created_at,
            },
            owner: new.owner,
            blob_key: new.blob_key,
            sent: None,
            doomed: false,
        };
        state.attachments.insert(id, (record.clone(), None));
        Ok(record)
    }

    async fn attachments(
        &self,
        ids: &[AttachmentId],
    ) -> Result<Vec<AttachmentRecord>, StorageError> {
        let state = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| state.attachments.get(id))
            .map(|(row, doomed)| AttachmentRecord {
                doomed: doomed.is_some(),
                ..row.clone()
            })
            .collect())
    }

    async fn upload_usage(&self, owner: UserId) -> Result<u64, StorageError> {
        let state = self.lock();
        Ok(state
            .attachments
            .values()
            .filter(|(row, doomed)| row.owner == owner && doomed.is_none())
            .map(|(row, _)| {
                row.attachment.size + row.attachment.thumbnail.as_ref().map_or(0, |t| t.size)
            })
            .sum())
    }

    async fn doom_upload(&self, owner: UserId, id: AttachmentId) -> Result<bool, StorageError> {
        let mut state = self.lock();
        match state.attachments.get_mut(&id) {
            Some((row, _)) if row.owner == owner && row.sent.is_some() => {
                Err(StorageError::Conflict(Conflict::AttachmentSent))
            }
            Some((row, doomed @ None)) if row.owner == owner => {
                *doomed = Some(Timestamp::now());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn doom_unsent(&self, before: Timestamp) -> Result<u64, StorageError> {
        let mut state = self.lock();
        let now = Timestamp::now();
        let mut doomed_now = 0;
        for (row, doomed) in state.attachments.values_mut() {
            if doomed.is_none() && row.sent.is_none() && row.attachment.created_at < before {
                *doomed = Some(now);
                doomed_now += 1;
            }
        }
        Ok(doomed_now)
    }

    async fn doomed_attachments(&self, limit: u32) -> Result<Vec<AttachmentRecord>, StorageError> {
        let state = self.lock();
        let mut doomed: Vec<_> = state
            .attachments
            .values()
            .filter_map(|(row, at)| at.map(|at| (at, row)))
            .collect();
        doomed.sort_by_key(|(at, row)| (*at, row.attachment.id));
        Ok(doomed
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(_, row)| AttachmentRecord {
                doomed: true,
                ..row.clone()
            })
            .collect())
    }

    async fn forget_attachments(&self, ids: &[AttachmentId]) -> Result<(), StorageError> {
        let mut state = self.lock();
        for id in ids {
            if state
                .attachments
                .get(id)
                .is_some_and(|(_, at)| at.is_some())
            {
                state.attachments.remove(id);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        drop(self.lock());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStorage;
    use crate::storage::conformance::TestStore;

    crate::storage_conformance_tests!(async { TestStore::new(MemoryStorage::new()) });
}
