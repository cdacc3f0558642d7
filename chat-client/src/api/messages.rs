//! Messages over HTTP: `/chat/history/`, `/chat/send/` and
//! `/chat/messages/{id}/`.

use chat_core::api::{EditRequest, HistoryResponse, SearchResponse, SendRequest, SendResponse};
use chat_core::message::Message;
use chat_core::timeline::{PinsResponse, ThreadResponse, TimelineResponse};
use chat_core::{AttachmentId, MessageId, RoomId, RoomRef, Seq, UserId};

use crate::client::Req;
use crate::{ChatClient, ClientError};

/// What a message carries besides its text: the message it replies to,
/// the thread it is posted in, the members it mentions, the files sent with
/// it. Used by [`ChatClient::send_with`] and
/// [`Connection::send_with`](crate::Connection::send_with).
///
/// ```
/// use chat_client::{AttachmentId, SendOptions, UserId};
/// # let (question, root) = (chat_client::MessageId(7), chat_client::MessageId(3));
/// let options = SendOptions::new()
///     .reply_to(question)
///     .in_thread(root)
///     .mention(UserId(42))
///     .attachments([AttachmentId(5), AttachmentId(6)]);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    pub(crate) reply_to: Option<MessageId>,
    pub(crate) thread_root: Option<MessageId>,
    pub(crate) mentions: Vec<UserId>,
    pub(crate) attachments: Vec<AttachmentId>,
}

impl SendOptions {
    /// A plain message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reply to `message`, of the same room: the message carries a
    /// snippet of it (`reply_to`).
    #[must_use]
    pub fn reply_to(mut self, message: MessageId) -> Self {
        self.reply_to = Some(message);
        self
    }

    /// Post in the thread of `root`, of the same room (a reply in a thread
    /// stands for its root). Thread replies are left out of
    /// [`ChatClient::history`]; page them with [`ChatClient::thread`].
    #[must_use]
    pub fn in_thread(mut self, root: MessageId) -> Self {
        self.thread_root = Some(root);
        self
    }

    /// Mention `user`, a member of the room (at most 50 per message).
    #[must_use]
    pub fn mention(mut self, user: UserId) -> Self {
        self.mentions.push(user);
        self
    }

    /// Send these uploads with the message (ids from
    /// [`ChatClient::upload_file`] and the other uploads): the caller's
    /// own, not sent yet, at most 10 per message, each once. Adds to those
    /// already given. With attachments the body may be empty.
    ///
    /// Once sent, an upload belongs to the message: whoever may read the
    /// room may download it, and it cannot go with another message.
    #[must_use]
    pub fn attachments(mut self, ids: impl IntoIterator<Item = AttachmentId>) -> Self {
        self.attachments.extend(ids);
        self
    }
}

/// Which page of a room's history [`ChatClient::history`] fetches. The
/// default is the newest 50 messages.
///
/// ```
/// use chat_client::HistoryQuery;
///
/// // The 20 messages before seq 100 (scrolling back).
/// let older = HistoryQuery::new().before(100).limit(20);
/// // Everything after seq 41, in pages of 200 (catching up).
/// let newer = HistoryQuery::new().after(41).limit(200);
/// # let _ = (older, newer);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    before: Option<Seq>,
    after: Option<Seq>,
    limit: Option<u32>,
}

impl HistoryQuery {
    /// The newest page, of the server's default size (50).
    ///
    /// ```
    /// assert_eq!(chat_client::HistoryQuery::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Only messages with `seq` below this.
    ///
    /// ```
    /// let q = chat_client::HistoryQuery::new().before(10);
    /// # let _ = q;
    /// ```
    pub fn before(mut self, seq: Seq) -> Self {
        self.before = Some(seq);
        self
    }

    /// Only messages with `seq` above this.
    ///
    /// ```
    /// let q = chat_client::HistoryQuery::new().after(10);
    /// # let _ = q;
    /// ```
    pub fn after(mut self, seq: Seq) -> Self {
        self.after = Some(seq);
        self
    }

    /// At most this many messages (1..=200).
    ///
    /// ```
    /// let q = chat_client::HistoryQuery::new().limit(100);
    /// # let _ = q;
    /// ```
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

impl ChatClient {
    /// One page of a room's messages, oldest first, and whether more lie
    /// beyond it in the direction paged (`GET /chat/history/`). `room` is an
    /// id or a name.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) with
    /// `room_not_found` for an unknown room or one the caller is not in.
    ///
    /// ```no_run
    /// use chat_client::HistoryQuery;
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// // Scroll back through the whole room.
    /// let mut page = client.history("lobby", HistoryQuery::new()).await?;
    /// while page.has_more {
    ///     let oldest = page.chat_history[0].seq;
    ///     page = client.history("lobby", HistoryQuery::new().before(oldest)).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn history(
        &self,
        room: impl Into<RoomRef>,
        query: HistoryQuery,
    ) -> Result<HistoryResponse, ClientError> {
        self.call(
            Req::get("chat/history/")
                .query("room", Some(room.into()))
                .query("before", query.before)
                .query("after", query.after)
                .query("limit", query.limit),
        )
        .await
    }

    /// A page of a room's timeline (`GET /chat/rooms/{id}/events/`): every
    /// kind of event (messages, members joining and leaving), oldest first,
    /// paged like [`history`](Self::history) by seq. Members only.
    pub async fn timeline(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<TimelineResponse, ClientError> {
        self.call(
            Req::get(format!("chat/rooms/{room}/events/"))
                .query("before", query.before)
                .query("after", query.after)
                .query("limit", query.limit),
        )
        .await
    }

    /// Sends a message over HTTP (`POST /chat/send/`); `room` is an id or a
    /// name. Returns the stored message's id and `seq`.
    ///
    /// `client_id` is the idempotency key: the server stores a repeated
    /// `client_id` from the same user once and answers with the original
    /// message. When `None`, a random one (a UUID v4) is generated for this
    /// call and reused by the client's own refresh-and-retry, so that retry
    /// never duplicates the message. To retry after an error yourself, pass
    /// your own `client_id` and send it again with the same one.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) with
    /// `empty_body` or `body_too_long`; [`Forbidden`](crate::ErrorKind::Forbidden)
    /// or [`NotFound`](crate::ErrorKind::NotFound) for a room the caller is
    /// not in.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let sent = client.send("lobby", "hello, world", Some("my-key-1".into())).await?;
    /// println!("stored as #{} in the room", sent.seq);
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        room: impl Into<RoomRef>,
        body: &str,
        client_id: Option<String>,
    ) -> Result<SendResponse, ClientError> {
        self.send_with(room, body, client_id, SendOptions::new())
            .await
    }

    /// [`send`](Self::send) a reply, a thread reply, a message with
    /// mentions or with attachments (see [`SendOptions`]).
    ///
    /// Errors, besides those of `send`: [`NotFound`](crate::ErrorKind::NotFound)
    /// with `message_not_found` when the message replied to (or the
    /// thread's root) is not in the room; [`Conflict`](crate::ErrorKind::Conflict)
    /// with `message_deleted` when it was deleted;
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a mention of
    /// someone who is not a member, or more than 50;
    /// [`NotFound`](crate::ErrorKind::NotFound) with `attachment_not_found`
    /// for an attachment that is not the caller's upload,
    /// [`Conflict`](crate::ErrorKind::Conflict) with `attachment_in_use`
    /// for one already sent.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, bob: chat_client::UserId) -> Result<(), chat_client::ClientError> {
    /// use chat_client::SendOptions;
    /// let question = client.send("lobby", "lunch?", None).await?;
    /// let options = SendOptions::new().in_thread(question.id).mention(bob);
    /// client.send_with("lobby", "yes, noon", None, options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_with(
        &self,
        room: impl Into<RoomRef>,
        body: &str,
        client_id: Option<String>,
        options: SendOptions,
    ) -> Result<SendResponse, ClientError> {
        let request = SendRequest {
            room: room.into(),
            message: body.to_owned(),
            client_id: Some(client_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
            reply_to: options.reply_to,
            thread_root: options.thread_root,
            mentions: options.mentions,
            attachments: options.attachments,
        };
        self.call(Req::post("chat/send/").json(&request)?).await
    }

    /// A thread (`GET /chat/messages/{id}/thread/`): its root, with its
    /// reply count, and a page of its replies, oldest first, paged by seq
    /// like [`timeline`](Self::timeline). `root` may be any reply in the
    /// thread. Members of its room only; others get
    /// [`NotFound`](crate::ErrorKind::NotFound) `message_not_found`.
    pub async fn thread(
        &self,
        root: MessageId,
        query: HistoryQuery,
    ) -> Result<ThreadResponse, ClientError> {
        self.call(
            Req::get(format!("chat/messages/{root}/thread/"))
                .query("before", query.before)
                .query("after", query.after)
                .query("limit", query.limit),
        )
        .await
    }

    /// Replaces the body of one of the caller's messages
    /// (`PATCH /chat/messages/{id}/`) and returns the message as it now
    /// stands (`edited_at` set, `version` one higher). The room hears a
    /// `message_edited` event. Sending the same body again changes nothing,
    /// so retrying is safe.
    ///
    /// Errors: [`Forbidden`](crate::ErrorKind::Forbidden) with `not_sender`
    /// for someone else's message; [`NotFound`](crate::ErrorKind::NotFound)
    /// with `message_not_found` for an unknown message or one of a room the
    /// caller is not in; [`Conflict`](crate::ErrorKind::Conflict) with
    /// `message_deleted`; [`InvalidInput`](crate::ErrorKind::InvalidInput)
    /// with `empty_body` or `body_too_long`.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let sent = client.send("lobby", "helo", None).await?;
    /// let fixed = client.edit_message(sent.id, "hello").await?;
    /// assert_eq!(fixed.version, 1);
    /// # Ok(()) }
    /// ```
    pub async fn edit_message(
        &self,
        message: MessageId,
        body: &str,
    ) -> Result<Message, ClientError> {
        let request = EditRequest {
            body: body.to_owned(),
        };
        self.call(Req::patch(format!("chat/messages/{message}/")).json(&request)?)
            .await
    }

    /// Deletes a message (`DELETE /chat/messages/{id}/`): the caller's own,
    /// or any in a room the caller moderates (its creator). Returns the
    /// tombstone (`deleted: true`, empty body): the message keeps its seq,
    /// its text is gone from the server, and the room hears a
    /// `message_deleted` event. Deleting it again answers the same.
    ///
    /// Errors: [`Forbidden`](crate::ErrorKind::Forbidden) with `not_sender`;
    /// [`NotFound`](crate::ErrorKind::NotFound) with `message_not_found`.
    pub async fn delete_message(&self, message: MessageId) -> Result<Message, ClientError> {
        self.call(Req::delete(format!("chat/messages/{message}/")))
            .await
    }

    /// Adds the caller's reaction `key` (an emoji or a short name, 1–32
    /// characters without spaces or `/`) to a message
    /// (`PUT /chat/messages/{id}/reactions/{key}/`) and returns the message
    /// with its `reactions` (`me` marks the caller's). Reacting again with
    /// the same key changes nothing, so retrying is safe. The room hears a
    /// `reaction` event.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) for a bad
    /// key or a message with 20 different reactions already;
    /// [`NotFound`](crate::ErrorKind::NotFound) with `message_not_found`;
    /// [`Conflict`](crate::ErrorKind::Conflict) with `message_deleted`.
    pub async fn react(&self, message: MessageId, key: &str) -> Result<Message, ClientError> {
        self.call(Req::put(reaction_path(message, key))).await
    }

    /// Takes the caller's reaction `key` back
    /// (`DELETE /chat/messages/{id}/reactions/{key}/`); not having it
    /// changes nothing.
    pub async fn unreact(&self, message: MessageId, key: &str) -> Result<Message, ClientError> {
        self.call(Req::delete(reaction_path(message, key))).await
    }

    /// Pins a message to its room (`PUT /chat/messages/{id}/pin/`) or
    /// unpins it (`DELETE`): whoever moderates the room (its creator; either
    /// participant of a conversation). Returns the message; doing it twice
    /// changes nothing. The room hears `message_pinned` / `message_unpinned`.
    ///
    /// Errors: [`Forbidden`](crate::ErrorKind::Forbidden) with
    /// `not_moderator`; [`NotFound`](crate::ErrorKind::NotFound) with
    /// `message_not_found`; [`Conflict`](crate::ErrorKind::Conflict) with
    /// `message_deleted`.
    pub async fn pin(&self, message: MessageId, pin: bool) -> Result<Message, ClientError> {
        let path = format!("chat/messages/{message}/pin/");
        let request = if pin {
            Req::put(path)
        } else {
            Req::delete(path)
        };
        self.call(request).await
    }

    /// Full-text search over the messages of the caller's rooms
    /// (`GET /chat/search/`), newest first: every word of `q` must appear
    /// (case and punctuation ignored). `room` narrows it to one room;
    /// `before` (a message id: the last hit's) pages back.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let found = client.search("release notes", None, None).await?;
    /// for hit in &found.hits {
    ///     println!("{} #{}: {}", hit.room_name, hit.seq, hit.message.body);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn search(
        &self,
        q: &str,
        room: Option<RoomId>,
        before: Option<MessageId>,
    ) -> Result<SearchResponse, ClientError> {
        self.call(
            Req::get("chat/search/")
                .query("q", Some(q))
                .query("room", room)
                .query("before", before),
        )
        .await
    }

    /// A room's pinned messages, the most recently pinned first
    /// (`GET /chat/rooms/{id}/pins/`). Members only.
    pub async fn pins(&self, room: RoomId) -> Result<PinsResponse, ClientError> {
        self.call(Req::get(format!("chat/rooms/{room}/pins/")))
            .await
    }
}

/// The path of a reaction, its key percent-encoded as one path segment
/// (everything but unreserved characters, so `+`, `/` or a space stay in
/// the key and never change the path).
fn reaction_path(message: MessageId, key: &str) -> String {
    let key = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    format!("chat/messages/{message}/reactions/{key}/")
}
