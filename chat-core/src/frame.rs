//! WebSocket frames, client to server ([`ClientFrame`]) and server to client
//! ([`ServerFrame`]). Every frame is one JSON text message.

use serde::{Deserialize, Serialize};

use crate::admin::ReportRequest;
use crate::error::ErrorCode;
use crate::message::Message;
use crate::moderation::{ModerateRequest, RoomSettings, RoomUpdate};
use crate::room::RoomRef;
use crate::timeline::{MemberEvent, MessageUpdate, ReactionEvent};
use crate::{AttachmentId, MessageId, RoomId, Seq, Timestamp, UserId};

/// A frame a client sends.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `{"message": "text"}`: the documents' form, sending to the socket's
    /// bound room.
    Text { message: String },
    /// `{"type":"send","room"?,"body","client_id"?}`. `room` is required on
    /// `/ws/`; a repeated `client_id` acknowledges the original message.
    Send {
        room: Option<RoomRef>,
        body: String,
        client_id: Option<String>,
        /// `"reply_to"?`: the message (same room) this one replies to.
        reply_to: Option<MessageId>,
        /// `"thread_root"?`: post in this message's thread.
        thread_root: Option<MessageId>,
        /// `"mentions"?`: members of the room to mention.
        mentions: Vec<UserId>,
        /// `"attachments"?`: ids of the sender's uploads to send with it.
        attachments: Vec<AttachmentId>,
    },
    /// `{"type":"subscribe","room","after_seq"?}`: replay everything above
    /// `after_seq`, then live messages, with no gap and no duplicate.
    Subscribe {
        room: RoomRef,
        after_seq: Option<Seq>,
    },
    /// `{"type":"unsubscribe","room"}`.
    Unsubscribe { room: RoomRef },
    /// `{"type":"read","room","seq"}`: mark read up to `seq`.
    Read { room: RoomRef, seq: Seq },
    /// `{"type":"typing","room"}`.
    Typing { room: RoomRef },
    /// `{"type":"edit","message_id","body"}`: replace the body of one of
    /// the sender's own messages.
    Edit { message_id: MessageId, body: String },
    /// `{"type":"delete","message_id"}`: delete a message (the sender's own,
    /// or any in a room the caller moderates).
    Delete { message_id: MessageId },
    /// `{"type":"react","message_id","key"}`: add the caller's reaction.
    React { message_id: MessageId, key: String },
    /// `{"type":"unreact","message_id","key"}`: take it back.
    Unreact { message_id: MessageId, key: String },
    /// `{"type":"pin","message_id"}`: pin a message to its room.
    Pin { message_id: MessageId },
    /// `{"type":"unpin","message_id"}`.
    Unpin { message_id: MessageId },
    /// `{"type":"moderate","room","user_id","action",...}`: kick, ban,
    /// mute, promote (see [`ModerateRequest`]).
    Moderate {
        room: RoomRef,
        request: ModerateRequest,
    },
    /// `{"type":"update_room","room",...}`: change the room's settings
    /// (see [`RoomSettings`]).
    UpdateRoom {
        room: RoomRef,
        settings: RoomSettings,
    },
    /// `{"type":"block","user_id"}` / `{"type":"unblock","user_id"}`.
    Block { user_id: UserId, block: bool },
    /// `{"type":"report","message_id" or "user_id","reason"}`.
    Report { request: ReportRequest },
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"auth","token"}`: a fresh access token for this socket, so
    /// that it outlives the token it was opened with (else it is closed
    /// with 4401 when that one expires).
    Auth { token: String },
}

// By hand: an `auth` frame's token is a secret and must not reach logs.
impl std::fmt::Debug for ClientFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text { message } => f.debug_struct("Text").field("message", message).finish(),
            Self::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            } => f
                .debug_struct("Send")
                .field("room", room)
                .field("body", body)
                .field("client_id", client_id)
                .field("reply_to", reply_to)
                .field("thread_root", thread_root)
                .field("mentions", mentions)
                .field("attachments", attachments)
                .finish(),
            Self::Subscribe { room, after_seq } => f
                .debug_struct("Subscribe")
                .field("room", room)
                .field("after_seq", after_seq)
                .finish(),
            Self::Unsubscribe { room } => {
                f.debug_struct("Unsubscribe").field("room", room).finish()
            }
            Self::Read { room, seq } => f
                .debug_struct("Read")
                .field("room", room)
                .field("seq", seq)
                .finish(),
            Self::Typing { room } => f.debug_struct("Typing").field("room", room).finish(),
            Self::Edit { message_id, body } => f
                .debug_struct("Edit")
                .field("message_id", message_id)
                .field("body", body)
                .finish(),
            Self::Delete { message_id } => f
                .debug_struct("Delete")
                .field("message_id", message_id)
                .finish(),
            Self::Pin { message_id } => f
                .debug_struct("Pin")
                .field("message_id", message_id)
                .finish(),
            Self::Unpin { message_id } => f
                .debug_struct("Unpin")
                .field("message_id", message_id)
                .finish(),
            Self::React { message_id, key } => f
                .debug_struct("React")
                .field("message_id", message_id)
                .field("key", key)
                .finish(),
            Self::Unreact { message_id, key } => f
                .debug_struct("Unreact")
                .field("message_id", message_id)
                .field("key", key)
                .finish(),
            Self::Moderate { room, request } => f
                .debug_struct("Moderate")
                .field("room", room)
                .field("request", request)
                .finish(),
            Self::UpdateRoom { room, settings } => f
                .debug_struct("UpdateRoom")
                .field("room", room)
                .field("settings", settings)
                .finish(),
            Self::Block { user_id, block } => f
                .debug_struct("Block")
                .field("user_id", user_id)
                .field("block", block)
                .finish(),
            Self::Report { request } => f.debug_struct("Report").field("request", request).finish(),
            Self::Ping => f.write_str("Ping"),
            Self::Auth { .. } => f
                .debug_struct("Auth")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// The typed frames as serde sees them; [`ClientFrame`] adds the untyped
/// `{"message"}` form on top.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
// Unknown keys are ignored, so newer clients can add fields without
// breaking older servers.
#[serde(tag = "type", rename_all = "snake_case")]
// The doc comments below are what the frame schema shows.
enum Typed {
    /// Send a message. `room` is required on `/ws/`; a repeated `client_id`
    /// stores nothing new and acknowledges the original message.
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomRef>,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// Reply to this message of the same room: the message carries a
        /// snippet of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// Post in the thread of this message of the same room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_root: Option<MessageId>,
        /// Members of the room to mention (at most 50).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<UserId>,
        /// Ids of the sender's own uploads not yet sent, at most 10; with
        /// attachments the body may be empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentId>,
    },
    /// Start receiving a room. With `after_seq`, every stored message above it
    /// comes first, in order, then live ones, with no gap and no duplicate.
    Subscribe {
        room: RoomRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "schema", schema(value_type = Option<i64>))]
        after_seq: Option<Seq>,
    },
    /// Stop receiving a room.
    Unsubscribe { room: RoomRef },
    /// Mark a room read up to `seq`.
    Read {
        room: RoomRef,
        #[cfg_attr(feature = "schema", schema(value_type = i64))]
        seq: Seq,
    },
    /// Tell the room the sender is typing.
    Typing { room: RoomRef },
    /// Replace the body of one of your messages. Done, the room gets a
    /// `message_edited` event, which this socket receives before any later
    /// frame is answered if it listens to the room; refused, an `error`.
    /// Nothing else answers it (send `ping` after it to know it was
    /// handled); the same body again changes nothing.
    Edit { message_id: MessageId, body: String },
    /// Delete a message: your own, or any in a room you moderate. Answered
    /// like `edit`, with a `message_deleted` event; deleting a deleted
    /// message changes nothing.
    Delete { message_id: MessageId },
    /// React to a message of a room you are a member of with `key` (such
    /// as an emoji; at most once per key). Answered like `edit`, with a
    /// `reaction` event; reacting again with the same key changes nothing.
    React { message_id: MessageId, key: String },
    /// Take your reaction `key` back. Answered like `react`.
    Unreact { message_id: MessageId, key: String },
    /// Pin a message to its room: whoever moderates the room (its creator;
    /// either participant of a conversation). Answered like `edit`, with a
    /// `message_pinned` event; pinning a pinned message changes nothing.
    Pin { message_id: MessageId },
    /// Unpin it. Answered like `pin`, with `message_unpinned`.
    Unpin { message_id: MessageId },
    /// Kick, ban, unban, mute, unmute a user of `room`, change a member's
    /// role or hand the room over (the fields of `POST
    /// /chat/rooms/{id}/moderate/`). Answered like `edit`, with the
    /// `member` event it appended; an action that changes nothing (a
    /// second unmute) is answered by nothing.
    Moderate {
        room: RoomRef,
        #[serde(flatten)]
        request: ModerateRequest,
    },
    /// Change `room`'s settings (the fields of `PATCH /chat/rooms/{id}/`):
    /// admins and the owner. Answered like `edit`, with the
    /// `room_updated` event; settings that change nothing are answered by
    /// nothing.
    UpdateRoom {
        room: RoomRef,
        #[serde(flatten)]
        settings: RoomSettings,
    },
    /// Block a user (`POST /api/users/{id}/block/`). Answered by nothing
    /// (send `ping` after it to know it was handled), or an `error`.
    Block { user_id: UserId },
    /// Unblock a user. Answered like `block`.
    Unblock { user_id: UserId },
    /// Report a message or a user (the fields of `POST /chat/reports/`).
    /// Answered like `block`.
    Report {
        #[serde(flatten)]
        request: ReportRequest,
    },
    /// Answered with `pong`.
    Ping,
    /// Re-authenticate the socket with a fresh access token of the same
    /// user before the current one expires. Answered with `authenticated`,
    /// or an `invalid_token` error (the socket keeps its old expiry).
    Auth { token: String },
}

const TYPES: &[&str] = &[
    "send",
    "subscribe",
    "unsubscribe",
    "read",
    "typing",
    "edit",
    "delete",
    "react",
    "unreact",
    "pin",
    "unpin",
    "moderate",
    "update_room",
    "block",
    "unblock",
    "report",
    "ping",
    "auth",
];

/// Why a client frame was refused; the server answers it with an `error`
/// frame and keeps the socket open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientFrame {
    /// Parses a text frame, telling malformed JSON (`invalid_json`), an
    /// unknown `type` (`unknown_type`) and missing or mistyped fields
    /// (`invalid_input`) apart.
    pub fn from_json(text: &str) -> Result<Self, FrameError> {
        if crate::text::json_has_nul(text.as_bytes()) {
            return Err(invalid(crate::text::NUL_REFUSED));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
            code: ErrorCode::InvalidJson,
            message: format!("Invalid JSON: {e}"),
        })?;
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, FrameError> {
        let Some(object) = value.as_object() else {
            return Err(FrameError {
                code: ErrorCode::InvalidJson,
                message: "Invalid JSON: a frame must be a JSON object".to_owned(),
            });
        };
        match object.get("type") {
            None => match object.get("message") {
                Some(serde_json::Value::String(text)) => Ok(Self::Text {
                    message: text.clone(),
                }),
                Some(_) => Err(invalid("\"message\" must be a string")),
                None => Err(invalid(
                    "a frame needs a \"type\", or a \"message\" to send to the bound room",
                )),
            },
            Some(serde_json::Value::String(t)) if !TYPES.contains(&t.as_str()) => Err(FrameError {
                code: ErrorCode::UnknownType,
                message: format!("Unknown frame type \"{t}\""),
            }),
            Some(serde_json::Value::String(_)) => serde_json::from_value::<Typed>(value)
                .map(Self::from)
                .map_err(|e| invalid(&e.to_string())),
            Some(_) => Err(invalid("\"type\" must be a string")),
        }
    }
}

fn invalid(why: &str) -> FrameError {
    FrameError {
        code: ErrorCode::InvalidInput,
        message: format!("Invalid frame: {why}"),
    }
}

impl From<Typed> for ClientFrame {
    fn from(t: Typed) -> Self {
        match t {
            Typed::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            } => Self::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            },
            Typed::Subscribe { room, after_seq } => Self::Subscribe { room, after_seq },
            Typed::Unsubscribe { room } => Self::Unsubscribe { room },
            Typed::Read { room, seq } => Self::Read { room, seq },
            Typed::Typing { room } => Self::Typing { room },
            Typed::Edit { message_id, body } => Self::Edit { message_id, body },
            Typed::Delete { message_id } => Self::Delete { message_id },
            Typed::React { message_id, key } => Self::React { message_id, key },
            Typed::Unreact { message_id, key } => Self::Unreact { message_id, key },
            Typed::Pin { message_id } => Self::Pin { message_id },
            Typed::Unpin { message_id } => Self::Unpin { message_id },
            Typed::Moderate { room, request } => Self::Moderate { room, request },
            Typed::UpdateRoom { room, settings } => Self::UpdateRoom { room, settings },
            Typed::Block { user_id } => Self::Block {
                user_id,
                block: true,
            },
            Typed::Unblock { user_id } => Self::Block {
                user_id,
                block: false,
            },
            Typed::Report { request } => Self::Report { request },
            Typed::Ping => Self::Ping,
            Typed::Auth { token } => Self::Auth { token },
        }
    }
}

impl Serialize for ClientFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Text<'a> {
            message: &'a str,
        }
        let typed = match self.clone() {
            Self::Text { message } => return Text { message: &message }.serialize(s),
            Self::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            } => Typed::Send {
                room,
                body,
                client_id,
                reply_to,
                thread_root,
                mentions,
                attachments,
            },
            Self::Subscribe { room, after_seq } => Typed::Subscribe { room, after_seq },
            Self::Unsubscribe { room } => Typed::Unsubscribe { room },
            Self::Read { room, seq } => Typed::Read { room, seq },
            Self::Typing { room } => Typed::Typing { room },
            Self::Edit { message_id, body } => Typed::Edit { message_id, body },
            Self::Delete { message_id } => Typed::Delete { message_id },
            Self::React { message_id, key } => Typed::React { message_id, key },
            Self::Unreact { message_id, key } => Typed::Unreact { message_id, key },
            Self::Pin { message_id } => Typed::Pin { message_id },
            Self::Unpin { message_id } => Typed::Unpin { message_id },
            Self::Moderate { room, request } => Typed::Moderate { room, request },
            Self::UpdateRoom { room, settings } => Typed::UpdateRoom { room, settings },
            Self::Block {
                user_id,
                block: true,
            } => Typed::Block { user_id },
            Self::Block {
                user_id,
                block: false,
            } => Typed::Unblock { user_id },
            Self::Report { request } => Typed::Report { request },
            Self::Ping => Typed::Ping,
            Self::Auth { token } => Typed::Auth { token },
        };
        typed.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Self::from_value(value).map_err(|e| serde::de::Error::custom(e.message))
    }
}

// By hand, like the serde impls: `oneOf` the untyped `{"message"}` form and
// each typed frame, the typed ones taken from the derive on `Typed`.
#[cfg(feature = "schema")]
const CLIENT_FRAME_DOC: &str = "A frame a client sends: `{\"message\": \"text\"}` (send to the socket's bound room) or one of the typed frames. Unknown keys are ignored.";

#[cfg(feature = "schema")]
const TEXT_FRAME_DOC: &str = "Send `message` to the socket's bound room (`/ws/chat/{room}/`, `/ws/users/{user_id}/`). The form of the documents' clients: it has no `type`.";

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for ClientFrame {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
        let text = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("message", ObjectBuilder::new().schema_type(Type::String))
            .required("message")
            .description(Some(TEXT_FRAME_DOC));
        let mut frames = OneOfBuilder::new()
            .description(Some(CLIENT_FRAME_DOC))
            .item(text);
        match <Typed as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::OneOf(typed)) => {
                for item in typed.items {
                    frames = frames.item(item);
                }
            }
            other => frames = frames.item(other),
        }
        frames.into()
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for ClientFrame {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <Typed as utoipa::ToSchema>::schemas(schemas);
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ClientFrame {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientFrame".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let text = serde_json::json!({
            "description": TEXT_FRAME_DOC,
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
            // With a `type` the frame is read as a typed frame, whatever
            // `message` holds; this keeps the `oneOf` branches disjoint.
            "not": {"required": ["type"]},
        });
        let typed = <Typed as schemars::JsonSchema>::json_schema(generator).to_value();
        let mut frames = vec![text];
        match typed.get("oneOf").and_then(serde_json::Value::as_array) {
            Some(variants) => frames.extend(variants.iter().cloned()),
            None => frames.push(typed),
        }
        schemars::json_schema!({
            "description": CLIENT_FRAME_DOC,
            "oneOf": frames,
        })
    }
}

/// Whether a user is connected to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A new message, to every subscribed socket except the sending one.
    Message { message: Message },
    /// To the sending socket, once the message is stored.
    Ack {
        client_id: Option<String>,
        message: Message,
    },
    /// After a subscribe and its replay.
    Subscribed {
        room: RoomId,
        #[cfg_attr(feature = "schema", schema(value_type = i64))]
        last_seq: Seq,
    },
    /// `user` has read `room` up to `seq`.
    Read {
        room: RoomId,
        user: UserId,
        #[cfg_attr(feature = "schema", schema(value_type = i64))]
        seq: Seq,
    },
    /// `user` is typing in `room`.
    Typing { room: RoomId, user: UserId },
    /// `user` came online or went offline in `room`.
    Presence {
        room: RoomId,
        user: UserId,
        status: PresenceStatus,
    },
    /// A membership changed: joined, left, invited, kicked, banned,
    /// unbanned, role changed, muted, unmuted (a timeline event, with its
    /// seq). To a removed member's own sockets too (left, kicked,
    /// banned), which then stop receiving the room.
    Member(MemberEvent),
    /// A message was edited (a timeline event with its own seq; see
    /// [`MessageUpdate`]).
    MessageEdited(MessageUpdate),
    /// A message was deleted; `message` is its tombstone.
    MessageDeleted(MessageUpdate),
    /// A reaction was added or taken back (a timeline event; see
    /// [`ReactionEvent`]).
    Reaction(ReactionEvent),
    /// A message was pinned to the room (a timeline event; `message` shows
    /// `pinned`).
    MessagePinned(MessageUpdate),
    /// A message was unpinned.
    MessageUnpinned(MessageUpdate),
    /// The room's settings changed (a timeline event with its seq):
    /// `settings` holds what changed.
    RoomUpdated(RoomUpdate),
    /// The room is gone; its subscription ends.
    RoomDeleted { room: RoomId },
    /// The answer to `ping`.
    Pong,
    /// The answer to `auth`: the socket now lives until `expires_at` (plus
    /// a few seconds of leeway) unless another `auth` extends it.
    Authenticated { expires_at: Timestamp },
    /// A refused frame; the socket stays open.
    Error {
        code: ErrorCode,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

impl ServerFrame {
    /// An `error` frame with the code's standard sentence.
    pub fn error(code: ErrorCode) -> Self {
        Self::Error {
            code,
            error: code.default_message().to_owned(),
            client_id: None,
        }
    }
}
