//! Sending, history and read marks. A message is appended to storage (which
//! assigns its seq) before anyone is told about it; the broadcast goes through
//! the broker, never around it.

use chat_core::api::{HistoryQuery, HistoryResponse, SearchHit, SearchQuery, SearchResponse};
use chat_core::frame::ServerFrame;
use chat_core::message::{Message, Reaction, ReplyPreview, ThreadSummary};
use chat_core::timeline::{
    MemberEvent, MessageUpdate, PinsResponse, ReactionEvent, ThreadResponse, TimelineEvent,
    TimelineQuery, TimelineResponse,
};
use chat_core::{AttachmentId, ErrorCode, MessageId, RoomId, RoomRef, Seq, Timestamp, UserId};

use super::ChatService;
use crate::error::{ApiError, ApiResult};
use crate::event::{ConnId, Event};
use crate::hooks::RoomEvent;
use crate::hub::Hub;
use crate::storage::{
    self, Authority, ChangeOp, CommitListener, Committed, MessageChange, NewMessage, ReactionCount,
    ReadMark, RoomRecord, StoredEvent, StoredMember, StoredMessage, StoredUpdate, UpdateKind,
};

/// Page size bounds of `GET /chat/history/`.
pub(crate) const MAX_HISTORY_PAGE: u32 = 200;
const DEFAULT_HISTORY_PAGE: u32 = 50;
const MAX_CLIENT_ID_CHARS: usize = 128;

/// The contract's `is_read`, in one place. For a message someone else sent:
/// whether the viewer has read it (`own_mark`). For the viewer's own
/// message: whether another member has (`others_mark`, the highest mark
/// among the other members).
pub(crate) fn is_read(
    viewer: UserId,
    sender: UserId,
    seq: Seq,
    own_mark: Seq,
    others_mark: Seq,
) -> bool {
    if sender == viewer {
        others_mark >= seq
    } else {
        own_mark >= seq
    }
}

/// Everyone's read marks in a room, to tell each viewer what is read.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadMarks(Vec<(UserId, Seq)>);

impl ReadMarks {
    /// [`is_read`] for `viewer` with the room's marks.
    pub(crate) fn is_read(&self, viewer: UserId, m: &StoredMessage) -> bool {
        let own = self
            .0
            .iter()
            .find(|(u, _)| *u == viewer)
            .map_or(0, |(_, s)| *s);
        let others = self
            .0
            .iter()
            .filter(|(u, _)| *u != viewer)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0);
        is_read(viewer, m.sender, m.seq, own, others)
    }
}

/// A stored message as `viewer` sees it (`None`: every member alike, as
/// on the live stream). Its `client_id` is its sender's idempotency key,
/// shown to the sender alone.
pub(crate) fn to_wire(m: StoredMessage, is_read: bool, viewer: Option<UserId>) -> Message {
    let client_id = m.client_id.filter(|_| viewer == Some(m.sender));
    Message {
        id: m.id,
        room: m.room,
        seq: m.seq,
        sender: m.sender,
        sender_name: m.sender_name,
        body: m.body,
        created_at: m.created_at,
        is_read,
        client_id,
        edited_at: m.edited_at,
        version: m.version,
        deleted: m.deleted,
        reactions: Vec::new(),
        pinned: m.pinned,
        reply_to: m.reply.map(|r| ReplyPreview {
            id: r.id,
            seq: r.seq,
            sender: r.sender,
            deleted: r.snippet.is_none(),
            snippet: r.snippet.unwrap_or_default(),
        }),
        thread_root: m.thread_root,
        thread: m.last_reply_at.map(|last_reply_at| ThreadSummary {
            reply_count: m.reply_count,
            last_reply_at,
        }),
        mentions: m.mentions,
        attachments: m.attachments,
    }
}

fn reactions_to_wire(counts: Vec<ReactionCount>) -> Vec<Reaction> {
    counts
        .into_iter()
        .map(|c| Reaction {
            key: c.key,
            count: c.count,
            me: c.mine,
        })
        .collect()
}

/// The message a timeline event carries, if any, to fill in per viewer.
fn message_of(event: &mut TimelineEvent) -> Option<&mut Message> {
    match event {
        TimelineEvent::Message { message } => Some(message),
        TimelineEvent::MessageEdited(u)
        | TimelineEvent::MessageDeleted(u)
        | TimelineEvent::MessagePinned(u)
        | TimelineEvent::MessageUnpinned(u) => Some(&mut u.message),
        TimelineEvent::Reaction(r) => Some(&mut r.message),
        TimelineEvent::Member(_) | TimelineEvent::RoomUpdated(_) => None,
    }
}

/// A change to a message as its timeline event's frame, the same for
/// every viewer (see [`MessageUpdate`] on `is_read`).
pub(crate) fn update_to_wire(u: &StoredUpdate) -> TimelineEvent {
    let mut message = to_wire(u.message.clone(), false, None);
    message.reactions = reactions_to_wire(u.reactions.clone());
    let update = MessageUpdate {
        room: u.room,
        seq: u.seq,
        user: u.user,
        created_at: u.created_at,
        message,
    };
    match &u.kind {
        UpdateKind::Edited => TimelineEvent::MessageEdited(update),
        UpdateKind::Deleted => TimelineEvent::MessageDeleted(update),
        UpdateKind::Pinned { pinned: true } => TimelineEvent::MessagePinned(update),
        UpdateKind::Pinned { pinned: false } => TimelineEvent::MessageUnpinned(update),
        UpdateKind::Reacted { key, added } => TimelineEvent::Reaction(ReactionEvent {
            room: update.room,
            seq: update.seq,
            user: update.user,
            created_at: update.created_at,
            key: key.clone(),
            added: *added,
            message: update.message,
        }),
    }
}

/// The server frame of a timeline event: the same JSON on the WebSocket
/// as in `GET /chat/rooms/{id}/events/`.
pub(crate) fn timeline_frame(event: TimelineEvent) -> ServerFrame {
    match event {
        TimelineEvent::Message { message } => ServerFrame::Message { message },
        TimelineEvent::Member(member) => ServerFrame::Member(member),
        TimelineEvent::MessageEdited(update) => ServerFrame::MessageEdited(update),
        TimelineEvent::MessageDeleted(update) => ServerFrame::MessageDeleted(update),
        TimelineEvent::Reaction(reaction) => ServerFrame::Reaction(reaction),
        TimelineEvent::MessagePinned(update) => ServerFrame::MessagePinned(update),
        TimelineEvent::MessageUnpinned(update) => ServerFrame::MessageUnpinned(update),
        TimelineEvent::RoomUpdated(update) => ServerFrame::RoomUpdated(update),
    }
}

/// Publishes each timeline event at its commit point: one JSON encoding for
/// every socket, queued on this instance's sockets before whoever stored it
/// hears back (see [`CommitListener`]). A new kind of event is one more arm
/// here, with its frame.
pub(crate) struct Publisher {
    pub(crate) hub: std::sync::Arc<Hub>,
    /// The embedder's after-event hook, fed without waiting (see
    /// [`crate::hooks`]).
    pub(crate) after: Option<tokio::sync::mpsc::Sender<RoomEvent>>,
    /// The outbox's tasks (webhooks, push), once started.
    pub(crate) outbox: std::sync::Arc<std::sync::OnceLock<super::outbox::Nudges>>,
}

impl CommitListener for Publisher {
    fn committed(&self, event: Committed<'_>, origin: Option<ConnId>) {
        let (room, seq, leaves, event) = match event {
            Committed::Message(message) => {
                metrics::counter!(crate::metrics::MESSAGES_STORED).increment(1);
                // A new message: nobody else has read it yet.
                let event = TimelineEvent::Message {
                    message: to_wire(message.clone(), false, None),
                };
                (message.room, message.seq, None, event)
            }
            Committed::Member(member) => {
                let leaves = member.change.removes().then_some(member.user);
                let event = TimelineEvent::Member(member_to_wire(member));
                (member.room, member.seq, leaves, event)
            }
            Committed::Update(update) => (update.room, update.seq, None, update_to_wire(update)),
            Committed::Room(update) => {
                let event = TimelineEvent::RoomUpdated(room_update_to_wire(update));
                (update.room, update.seq, None, event)
            }
        };
        let frame = match &self.after {
            None => timeline_frame(event),
            Some(after) => {
                let frame = timeline_frame(event.clone());
                if after.try_send(RoomEvent { room, seq, event }).is_err() {
                    metrics::counter!(crate::metrics::HOOK_EVENTS_DROPPED).increment(1);
                }
                frame
            }
        };
        self.hub
            .publish(Event::timeline(room, seq, origin, &frame, leaves));
        if let Some(outbox) = self.outbox.get() {
            outbox.nudge(room);
        }
    }
}

/// The bounds of a history or timeline page, checked: `limit` 1..=200
/// (default 50), no negative seq.
pub(crate) fn page_query(
    before: Option<Seq>,
    after: Option<Seq>,
    limit: Option<u32>,
) -> ApiResult<storage::HistoryQuery> {
    let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1..={MAX_HISTORY_PAGE}"),
        ));
    }
    if before.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid_field("before", "must be at least 1"));
    }
    if after.is_some_and(|a| a < 0) {
        return Err(ApiError::invalid_field("after", "must not be negative"));
    }
    Ok(storage::HistoryQuery {
        before,
        after,
        limit,
    })
}

/// A stored change to a room's settings as the wire has it.
pub(crate) fn room_update_to_wire(
    r: &storage::StoredRoomUpdate,
) -> chat_core::moderation::RoomUpdate {
    chat_core::moderation::RoomUpdate {
        room: r.room,
        seq: r.seq,
        user: r.user,
        created_at: r.created_at,
        settings: r.settings.clone(),
    }
}

/// A stored membership change as the wire has it.
pub(crate) fn member_to_wire(m: &StoredMember) -> MemberEvent {
    MemberEvent {
        room: m.room,
        seq: m.seq,
        user: m.user,
        change: m.change,
        created_at: m.created_at,
        by: m.by,
        reason: m.reason.clone(),
        role: m.role,
        until: m.until,
    }
}

/// Reaction keys: 1 to 32 characters (an emoji with its modifiers, a short
/// name such as `+1`), none of them whitespace, a control character or `/`
/// (keys appear in paths).
pub(crate) const MAX_REACTION_KEY_CHARS: usize = 32;

fn check_reaction_key(key: &str) -> ApiResult<()> {
    let chars = key.chars().count();
    if chars == 0
        || chars > MAX_REACTION_KEY_CHARS
        || key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(ApiError::invalid_field(
            "key",
            format!(
                "must be 1 to {MAX_REACTION_KEY_CHARS} characters, without spaces, control \
                 characters or '/'"
            ),
        ));
    }
    Ok(())
}

/// Page size bounds of `GET /chat/search/`.
pub(crate) const MAX_SEARCH_PAGE: u32 = 100;
const DEFAULT_SEARCH_PAGE: u32 = 20;
const MAX_SEARCH_CHARS: usize = 200;
const MAX_SEARCH_TERMS: usize = 20;

/// The words of a search: runs of letters and digits, lowercased, each
/// once, as the storage indexes split and fold them. Anything else in `q`
/// (punctuation, operators of a query language) only separates words, so
/// no input can reach an index's own syntax.
fn search_terms(q: &str) -> ApiResult<Vec<String>> {
    let q = q.trim();
    if q.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::invalid_field(
            "q",
            format!("must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    let mut terms: Vec<String> = Vec::new();
    for word in q.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if !word.is_empty() && !terms.contains(&word) {
            terms.push(word);
        }
    }
    if terms.is_empty() {
        return Err(ApiError::invalid_field("q", "needs at least one word"));
    }
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(ApiError::invalid_field(
            "q",
            format!("at most {MAX_SEARCH_TERMS} words"),
        ));
    }
    Ok(terms)
}

/// What a change to a message came to.
#[derive(Debug, Clone)]
pub(crate) struct MessageChanged {
    /// The message as the caller now sees it.
    pub(crate) message: Message,
    /// The seq of the change's timeline event; `None` if nothing changed.
    pub(crate) seq: Option<Seq>,
}

/// The most users one message mentions.
pub(crate) const MAX_MENTIONS: usize = 50;

/// What a client sends: the text and what it refers to, not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) body: String,
    pub(crate) client_id: Option<String>,
    /// A message of the same room to reply to.
    pub(crate) reply_to: Option<MessageId>,
    /// A message of the same room in whose thread to post (a reply in a
    /// thread stands for its root).
    pub(crate) thread_root: Option<MessageId>,
    /// Members of the room to mention.
    pub(crate) mentions: Vec<UserId>,
    /// The sender's uploads to send with it.
    pub(crate) attachments: Vec<AttachmentId>,
}

impl Draft {
    /// Plain text, with an idempotency key if given.
    pub(crate) fn text(body: impl Into<String>, client_id: Option<String>) -> Self {
        Self {
            body: body.into(),
            client_id,
            ..Self::default()
        }
    }

    fn refers(&self) -> bool {
        self.reply_to.is_some() || self.thread_root.is_some() || !self.mentions.is_empty()
    }
}

/// A message to send to a room whose access was checked.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) room: RoomId,
    pub(crate) draft: Draft,
}

/// What a draft refers to, once checked.
#[derive(Debug, Default)]
struct Refs {
    reply_to: Option<MessageId>,
    thread_root: Option<MessageId>,
    mentions: Vec<UserId>,
    /// The sender's uploads, as the message shows them.
    attachments: Vec<chat_core::attachment::Attachment>,
}

/// The result of a send.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// The message as its sender sees it.
    pub(crate) message: Message,
    /// `false` when the client_id was seen before and this is the original.
    pub(crate) created: bool,
}

impl ChatService {
    /// Sends `body` to a room the caller is a member of. `origin` is the
    /// sending socket, which gets an ack instead of the broadcast.
    pub(crate) async fn send(
        &self,
        user: UserId,
        room: &RoomRef,
        draft: Draft,
        origin: Option<ConnId>,
    ) -> ApiResult<Sent> {
        let record = self.room_as_member(user, room).await?;
        self.send_to(user, &record, draft, origin).await
    }

    /// Like [`send`](Self::send) for a room already checked.
    pub(crate) async fn send_to(
        &self,
        user: UserId,
        room: &RoomRecord,
        draft: Draft,
        origin: Option<ConnId>,
    ) -> ApiResult<Sent> {
        let outgoing = Outgoing {
            room: room.id,
            draft,
        };
        self.send_many(user, vec![outgoing], origin)
            .await
            .pop()
            .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal)))
    }

    /// Sends several messages of one user, to rooms already checked, as if
    /// by one [`send_to`](Self::send_to) after the other: stored in their
    /// order and answered in it, each on its own (one refused message does
    /// not stop the others). They are appended together, so a socket's
    /// burst waits for one commit.
    pub(crate) async fn send_many(
        &self,
        user: UserId,
        outgoing: Vec<Outgoing>,
        origin: Option<ConnId>,
    ) -> Vec<ApiResult<Sent>> {
        let mut results: Vec<Option<ApiResult<Sent>>> = Vec::with_capacity(outgoing.len());
        let mut admitted = Vec::with_capacity(outgoing.len());
        let mut messages = Vec::with_capacity(outgoing.len());
        for out in outgoing {
            let admitted_refs = match self.admit(user, &out).await {
                Ok(()) if out.draft.refers() => self.check_refs(user, out.room, &out.draft).await,
                Ok(()) => Ok(Refs::default()),
                Err(e) => Err(e),
            };
            let admitted_refs = match admitted_refs {
                Ok(mut refs) => self
                    .check_attachments(user, &out.draft.attachments, out.draft.client_id.as_deref())
                    .await
                    .map(|attachments| {
                        refs.attachments = attachments;
                        refs
                    }),
                Err(e) => Err(e),
            };
            // The hook last: it sees only what the server would store.
            let vetted = match admitted_refs {
                Ok(refs) => match self.vet_message(user, out.room, &out.draft).await {
                    Ok(body) => Ok((refs, body)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match vetted {
                Ok((refs, rewritten)) => {
                    admitted.push((results.len(), out.room));
                    results.push(None);
                    messages.push(NewMessage {
                        room: out.room,
                        sender: user,
                        body: rewritten.unwrap_or(out.draft.body),
                        client_id: out.draft.client_id,
                        created_at: Timestamp::now(),
                        origin,
                        reply_to: refs.reply_to,
                        thread_root: refs.thread_root,
                        mentions: refs.mentions,
                        attachments: refs.attachments,
                    });
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let appended = self.storage.append_many(messages).await;
        for ((slot, room), result) in admitted.into_iter().zip(appended) {
            let sent = self.delivered(user, room, result).await;
            if let Some(r) = results.get_mut(slot) {
                *r = Some(sent);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal))))
            .collect()
    }

    /// What a draft refers to, checked: the sender a member of the room
    /// (first, so that nothing here tells a stranger which messages a room
    /// holds), the messages it replies to and posts under in the room and
    /// not deleted, a thread reply standing for its thread's root, the
    /// mentioned users members, each once. Rooms and messages never move,
    /// so these hold at the commit; a target deleted meanwhile shows as
    /// deleted, a user who left meanwhile is mentioned to no effect.
    async fn check_refs(&self, user: UserId, room: RoomId, draft: &Draft) -> ApiResult<Refs> {
        self.room_as_member(user, &RoomRef::Id(room)).await?;
        let target = |id: MessageId, what: &'static str| async move {
            match self.storage.message(id).await? {
                Some(m) if m.room == room && m.deleted => Err(ApiError::with_message(
                    ErrorCode::MessageDeleted,
                    format!("The message to {what} was deleted"),
                )),
                Some(m) if m.room == room => Ok(m),
                _ => Err(ApiError::with_message(
                    ErrorCode::MessageNotFound,
                    format!("No message to {what} in this room"),
                )),
            }
        };
        let reply_to = match draft.reply_to {
            Some(id) => Some(target(id, "reply to").await?.id),
            None => None,
        };
        let thread_root = match draft.thread_root {
            Some(id) => {
                let root = target(id, "post in the thread of").await?;
                Some(root.thread_root.unwrap_or(root.id))
            }
            None => None,
        };
        let mut mentions: Vec<UserId> = Vec::with_capacity(draft.mentions.len());
        for user in &draft.mentions {
            if !mentions.contains(user) {
                mentions.push(*user);
            }
        }
        if mentions.len() > MAX_MENTIONS {
            return Err(ApiError::invalid_field(
                "mentions",
                format!("at most {MAX_MENTIONS} users"),
            ));
        }
        if !mentions.is_empty() {
            let members = self.storage.members_among(room, &mentions).await?;
            if let Some(stranger) = mentions.iter().find(|u| !members.contains(u)) {
                return Err(ApiError::invalid_field(
                    "mentions",
                    format!("user {stranger} is not a member of this room"),
                ));
            }
        }
        Ok(Refs {
            reply_to,
            thread_root,
            mentions,
            attachments: Vec::new(),
        })
    }

    /// The checks a message passes before it is stored.
    async fn admit(&self, user: UserId, out: &Outgoing) -> ApiResult<()> {
        let out = &out.draft;
        if out.attachments.is_empty() || !out.body.is_empty() {
            // With attachments a message may have no text, but not blank text.
            self.check_body(&out.body)?;
        }
        if let Some(id) = &out.client_id
            && (id.is_empty() || id.chars().count() > MAX_CLIENT_ID_CHARS)
        {
            return Err(ApiError::invalid_field(
                "client_id",
                format!("must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
            ));
        }
        if let Err(wait) = self.user_rate.check(user).await {
            return Err(ApiError::rate_limited(wait));
        }
        Ok(())
    }

    /// What an append means for its sender: a new message as stored (the
    /// room heard of it at the commit, from [`Publisher`]), a repeat
    /// answered with the original.
    async fn delivered(
        &self,
        user: UserId,
        room: RoomId,
        appended: Result<storage::Appended, storage::StorageError>,
    ) -> ApiResult<Sent> {
        let appended = appended.map_err(|e| match e {
            storage::StorageError::NotFound => super::rooms::room_not_found(),
            storage::StorageError::NotMember { kind, state } => {
                super::rooms::refused_append(kind, state)
            }
            other => other.into(),
        })?;
        if !appended.created {
            // The contract makes `client_id` unique per sender, not per room:
            // acknowledging another room's message would tell the client its
            // new message was stored when it was not.
            if appended.message.room != room {
                return Err(ApiError::invalid_field(
                    "client_id",
                    "already used for a message in another room",
                ));
            }
            let marks = ReadMarks(self.storage.read_marks(room).await?);
            let is_read = marks.is_read(user, &appended.message);
            let mut message = to_wire(appended.message, is_read, Some(user));
            self.with_reactions(user, [&mut message]).await?;
            return Ok(Sent {
                message,
                created: false,
            });
        }
        // A new message: nobody else has read it yet.
        Ok(Sent {
            message: to_wire(appended.message, false, Some(user)),
            created: true,
        })
    }

    pub(super) fn check_body(&self, body: &str) -> ApiResult<()> {
        if body.trim().is_empty() {
            return Err(ApiError::new(ErrorCode::EmptyBody));
        }
        let max = self.limits.max_message_chars;
        if body.chars().count() > max {
            return Err(ApiError::with_message(
                ErrorCode::BodyTooLong,
                format!("Message body is too long (at most {max} characters)"),
            ));
        }
        Ok(())
    }

    /// `GET /chat/history/`.
    pub(crate) async fn history(
        &self,
        user: UserId,
        q: HistoryQuery,
    ) -> ApiResult<HistoryResponse> {
        let query = page_query(q.before, q.after, q.limit)?;
        let record = self.room_to_read(user, &q.room).await?;
        let (messages, has_more) = self.page(user, record.id, query).await?;
        Ok(HistoryResponse {
            chat_history: messages,
            has_more,
        })
    }

    /// `GET /chat/rooms/{id}/events/`: a page of the room's timeline, every
    /// kind of event; for members only, like history.
    pub(crate) async fn timeline(
        &self,
        user: UserId,
        room: RoomId,
        q: TimelineQuery,
    ) -> ApiResult<TimelineResponse> {
        let query = page_query(q.before, q.after, q.limit)?;
        let record = self.room_to_read(user, &RoomRef::Id(room)).await?;
        let (events, has_more) = self.timeline_page(user, record.id, query).await?;
        Ok(TimelineResponse { events, has_more })
    }

    /// A room whose history the caller may read: the contract answers 404
    /// to every non-member here, even one who may see the room (an invitee,
    /// anyone for a public room).
    async fn room_to_read(&self, user: UserId, room: &RoomRef) -> ApiResult<RoomRecord> {
        self.room_as_member(user, room)
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotMember => super::rooms::room_not_found(),
                _ => e,
            })
    }

    /// A page of a room's timeline as `viewer` sees it, without access
    /// checks (the caller made them).
    pub(crate) async fn timeline_page(
        &self,
        viewer: UserId,
        room: RoomId,
        q: storage::HistoryQuery,
    ) -> ApiResult<(Vec<TimelineEvent>, bool)> {
        let page = self.storage.timeline(room, q).await?;
        let marks = if page
            .events
            .iter()
            .any(|e| matches!(e, StoredEvent::Message(_)))
        {
            ReadMarks(self.storage.read_marks(room).await?)
        } else {
            ReadMarks::default()
        };
        let mut events: Vec<TimelineEvent> = page
            .events
            .into_iter()
            .map(|event| match event {
                StoredEvent::Message(m) => {
                    let is_read = marks.is_read(viewer, &m);
                    TimelineEvent::Message {
                        message: to_wire(m, is_read, Some(viewer)),
                    }
                }
                StoredEvent::Member(m) => TimelineEvent::Member(member_to_wire(&m)),
                StoredEvent::Update(u) => update_to_wire(&u),
                StoredEvent::Room(r) => TimelineEvent::RoomUpdated(room_update_to_wire(&r)),
            })
            .collect();
        self.with_reactions(viewer, events.iter_mut().filter_map(message_of))
            .await?;
        Ok((events, page.has_more))
    }

    /// A page of a room's history as `viewer` sees it, without access checks
    /// (the caller made them).
    pub(crate) async fn page(
        &self,
        viewer: UserId,
        room: RoomId,
        q: storage::HistoryQuery,
    ) -> ApiResult<(Vec<Message>, bool)> {
        let page = self.storage.history(room, q).await?;
        if page.messages.is_empty() {
            return Ok((Vec::new(), page.has_more));
        }
        let marks = ReadMarks(self.storage.read_marks(room).await?);
        let mut messages: Vec<Message> = page
            .messages
            .into_iter()
            .map(|m| {
                let is_read = marks.is_read(viewer, &m);
                to_wire(m, is_read, Some(viewer))
            })
            .collect();
        self.with_reactions(viewer, messages.iter_mut()).await?;
        Ok((messages, page.has_more))
    }

    /// `PATCH /chat/messages/{id}/`, WS `edit`: the sender replaces the
    /// body of a message. The same body again changes nothing.
    pub(crate) async fn edit_message(
        &self,
        user: UserId,
        message: MessageId,
        body: String,
    ) -> ApiResult<MessageChanged> {
        self.check_body(&body)?;
        let body = self.vet_edit(user, message, &body).await?.unwrap_or(body);
        self.change_message(user, message, ChangeOp::Edit { body }, Authority::Sender)
            .await
    }

    /// `DELETE /chat/messages/{id}/`, WS `delete`: the sender, or whoever
    /// moderates the room, deletes a message. Deleting it again answers
    /// the same.
    pub(crate) async fn delete_message(
        &self,
        user: UserId,
        message: MessageId,
    ) -> ApiResult<MessageChanged> {
        let changed = self
            .change_message(
                user,
                message,
                ChangeOp::Delete,
                Authority::SenderOrModerator,
            )
            .await?;
        // Its attachments were doomed with it: their files go now.
        self.sweep_files();
        Ok(changed)
    }

    /// `PUT` / `DELETE /chat/messages/{id}/reactions/{key}/`, WS `react` /
    /// `unreact`: a member adds or takes back their reaction `key`.
    /// Reacting as one already has changes nothing.
    pub(crate) async fn react(
        &self,
        user: UserId,
        message: MessageId,
        key: String,
        add: bool,
    ) -> ApiResult<MessageChanged> {
        check_reaction_key(&key)?;
        self.change_message(
            user,
            message,
            ChangeOp::React { key, add },
            Authority::Member,
        )
        .await
    }

    /// `PUT` / `DELETE /chat/messages/{id}/pin/`, WS `pin` / `unpin`:
    /// whoever moderates the room (either participant of a conversation)
    /// pins a message or unpins it.
    pub(crate) async fn pin(
        &self,
        user: UserId,
        message: MessageId,
        pin: bool,
    ) -> ApiResult<MessageChanged> {
        self.change_message(user, message, ChangeOp::Pin { pin }, Authority::Moderator)
            .await
    }

    /// `GET /chat/search/`: the messages of the caller's rooms (or of one
    /// of them) holding every word of `q`, newest first.
    pub(crate) async fn search(&self, user: UserId, q: SearchQuery) -> ApiResult<SearchResponse> {
        let terms = search_terms(&q.q)?;
        let limit = q.limit.unwrap_or(DEFAULT_SEARCH_PAGE);
        if !(1..=MAX_SEARCH_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1..={MAX_SEARCH_PAGE}"),
            ));
        }
        if q.before.is_some_and(|b| b.get() < 1) {
            return Err(ApiError::invalid_field("before", "must be at least 1"));
        }
        let room = match q.room {
            // A room the caller may not read answers as one that does not
            // exist, as its history does.
            Some(room) => Some(self.room_to_read(user, &RoomRef::Id(room)).await?.id),
            None => None,
        };
        let page = self
            .storage
            .search(&storage::SearchRequest {
                viewer: user,
                terms,
                room,
                before: q.before,
                limit,
            })
            .await?;
        // Read marks per room found, read once each.
        let mut marks: Vec<(RoomId, ReadMarks)> = Vec::new();
        let mut hits = Vec::with_capacity(page.hits.len());
        for (message, room_name) in page.hits {
            let room = message.room;
            if !marks.iter().any(|(r, _)| *r == room) {
                marks.push((room, ReadMarks(self.storage.read_marks(room).await?)));
            }
            let is_read = marks
                .iter()
                .find(|(r, _)| *r == room)
                .is_some_and(|(_, m)| m.is_read(user, &message));
            hits.push(SearchHit {
                room,
                room_name,
                seq: message.seq,
                message: to_wire(message, is_read, Some(user)),
            });
        }
        self.with_reactions(user, hits.iter_mut().map(|h| &mut h.message))
            .await?;
        Ok(SearchResponse {
            hits,
            has_more: page.has_more,
        })
    }

    /// `GET /chat/messages/{id}/thread/`: a thread's root and a page of its
    /// replies, by seq, for members of its room (a reply in the thread
    /// stands for its root).
    pub(crate) async fn thread(
        &self,
        user: UserId,
        root: MessageId,
        q: TimelineQuery,
    ) -> ApiResult<ThreadResponse> {
        let query = page_query(q.before, q.after, q.limit)?;
        let not_found = || ApiError::new(ErrorCode::MessageNotFound);
        let mut found = self.storage.message(root).await?.ok_or_else(not_found)?;
        if let Some(actual) = found.thread_root {
            found = self.storage.message(actual).await?.ok_or_else(not_found)?;
        }
        // A room the caller may not read: as if there were no message.
        self.room_to_read(user, &RoomRef::Id(found.room))
            .await
            .map_err(|_| not_found())?;
        let page = self.storage.thread(found.id, query).await?;
        let marks = ReadMarks(self.storage.read_marks(found.room).await?);
        let is_read = marks.is_read(user, &found);
        let mut root = to_wire(found, is_read, Some(user));
        let mut replies: Vec<Message> = page
            .messages
            .into_iter()
            .map(|m| {
                let is_read = marks.is_read(user, &m);
                to_wire(m, is_read, Some(user))
            })
            .collect();
        self.with_reactions(user, std::iter::once(&mut root).chain(replies.iter_mut()))
            .await?;
        Ok(ThreadResponse {
            root,
            replies,
            has_more: page.has_more,
        })
    }

    /// `GET /chat/rooms/{id}/pins/`: a room's pinned messages, for members.
    pub(crate) async fn pins(&self, user: UserId, room: RoomId) -> ApiResult<PinsResponse> {
        let record = self.room_to_read(user, &RoomRef::Id(room)).await?;
        let pinned = self.storage.pins(record.id).await?;
        if pinned.is_empty() {
            return Ok(PinsResponse { pins: Vec::new() });
        }
        let marks = ReadMarks(self.storage.read_marks(record.id).await?);
        let mut pins: Vec<Message> = pinned
            .into_iter()
            .map(|m| {
                let is_read = marks.is_read(user, &m);
                to_wire(m, is_read, Some(user))
            })
            .collect();
        self.with_reactions(user, pins.iter_mut()).await?;
        Ok(PinsResponse { pins })
    }

    /// Fills in the reactions of `messages` as `viewer` sees them (with
    /// `me`), in one read.
    pub(crate) async fn with_reactions<'m>(
        &self,
        viewer: UserId,
        messages: impl IntoIterator<Item = &'m mut Message>,
    ) -> ApiResult<()> {
        let mut messages: Vec<&mut Message> = messages.into_iter().collect();
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        for (id, counts) in self.storage.reactions(&ids, viewer).await? {
            let wire = reactions_to_wire(counts);
            for message in messages.iter_mut().filter(|m| m.id == id) {
                message.reactions.clone_from(&wire);
            }
        }
        Ok(())
    }

    /// A change to a message, checked and made by storage under the room's
    /// lock. A message of a room the caller is not a member of answers as
    /// one that does not exist: they may not read its history either.
    async fn change_message(
        &self,
        user: UserId,
        message: MessageId,
        op: ChangeOp,
        allowed: Authority,
    ) -> ApiResult<MessageChanged> {
        if message.get() < 1 {
            return Err(ApiError::new(ErrorCode::MessageNotFound));
        }
        if let Err(wait) = self.user_rate.check(user).await {
            return Err(ApiError::rate_limited(wait));
        }
        // Storage finds the message's room (and answers an id that names
        // no message) before the committer.
        let changed = self
            .storage
            .change_message(MessageChange {
                message,
                room: None,
                user,
                op,
                allowed,
                created_at: Timestamp::now(),
            })
            .await
            .map_err(|e| match e {
                storage::StorageError::NotFound | storage::StorageError::NotMember { .. } => {
                    ApiError::new(ErrorCode::MessageNotFound)
                }
                other => other.into(),
            })?;
        let seq = changed.event.as_ref().map(|e| e.seq);
        // As the caller sees it, from the storage's answer.
        let seen = match changed.seen {
            Some(seen) => seen,
            None => storage::read_seen(&*self.storage, &changed.message, user).await?,
        };
        let m = &changed.message;
        let is_read = is_read(user, m.sender, m.seq, seen.own_mark, seen.others_mark);
        let mut message = to_wire(changed.message, is_read, Some(user));
        message.reactions = reactions_to_wire(seen.reactions);
        Ok(MessageChanged { seq, message })
    }

    /// Tells the room that `user` is typing (a signal, not stored).
    pub(crate) async fn typing(
        &self,
        user: UserId,
        room: &RoomRecord,
        origin: ConnId,
    ) -> ApiResult<()> {
        // A conversation's other participant who blocked the typist hears
        // nothing from them.
        if let Some(other) = storage::direct_other(room, user)
            && self.storage.is_blocked(other, user).await?
        {
            return Ok(());
        }
        let frame = ServerFrame::Typing {
            room: room.id,
            user,
        };
        self.hub
            .publish(Event::signal(room.id, Some(origin), &frame));
        Ok(())
    }

    /// Marks a room read up to `seq` and, if the mark moved, tells the room.
    pub(crate) async fn mark_read(
        &self,
        user: UserId,
        room: RoomId,
        seq: Seq,
        origin: Option<ConnId>,
    ) -> ApiResult<ReadMark> {
        if seq < 0 {
            return Err(ApiError::invalid_field("seq", "must not be negative"));
        }
        let mark = self
            .storage
            .mark_read(room, user, seq)
            .await
            .map_err(|e| match e {
                storage::StorageError::NotFound => ApiError::new(ErrorCode::NotMember),
                other => other.into(),
            })?;
        if mark.advanced() {
            let frame = ServerFrame::Read {
                room,
                user,
                seq: mark.current,
            };
            self.hub.publish(Event::signal(room, origin, &frame));
        }
        Ok(mark)
    }
}
