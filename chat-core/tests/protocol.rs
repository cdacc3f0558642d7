//! Every JSON shape of `PROTOCOL.md`, written out with realistic values: it
//! must parse into the right chat-core type with the right values, and
//! serialize back to the same JSON (compared as `serde_json::Value`, so key
//! order does not matter).

use std::collections::BTreeMap;
use std::fmt::Debug;

use chat_core::api::{
    ComponentState, CreateRoomRequest, EditRequest, Health, HistoryResponse, InviteRequest,
    JoinRoomRequest, RefreshRequest, RegisterRequest, SendRequest, SendResponse, TokenRequest,
    TokenResponse,
};
use chat_core::conversation::{
    ConversationDetail, ConversationSummary, CreateConversationRequest, CreateConversationResponse,
    UnreadCount,
};
use chat_core::frame::{ClientFrame, PresenceStatus, ServerFrame};
use chat_core::message::{LastMessage, Reaction, ReplyPreview};
use chat_core::moderation::{
    BansResponse, DirectoryResponse, ModerateRequest, ModerateResponse, ModerationAction, Role,
    RoomSettings,
};
use chat_core::room::{JoinedRoom, Membership, Room, RoomListItem};
use chat_core::timeline::{
    MemberChange, MemberEvent, MessageUpdate, PinsResponse, ReactionEvent, ThreadResponse,
    TimelineEvent, TimelineQuery, TimelineResponse,
};
use chat_core::user::OtherUser;
use chat_core::{
    CloseCode, ErrorBody, ErrorCode, Message, MessageId, RoomId, RoomRef, RoomType, Timestamp,
    User, UserId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Parses `json` as `T`, serializes it back, checks that both JSON texts are
/// the same value, and returns the parsed value for field checks.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(json: &str) -> T {
    let type_name = std::any::type_name::<T>();
    let expected: Value = serde_json::from_str(json).expect("the test's JSON text is valid JSON");
    let parsed: T = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{json} should parse as {type_name}: {e}"));
    let back = serde_json::to_value(&parsed).expect("a parsed value serializes");
    assert_eq!(
        back, expected,
        "{type_name} does not serialize back to {json}"
    );
    let again: T = serde_json::from_value(back).expect("the serialized form parses again");
    assert_eq!(
        again, parsed,
        "{type_name} changes over a second round trip"
    );
    parsed
}

/// [`round_trip`] for client frames, also checking that the server's entry
/// point `ClientFrame::from_json` agrees with the serde impl.
fn client_frame(json: &str) -> ClientFrame {
    let frame: ClientFrame = round_trip(json);
    let direct = ClientFrame::from_json(json).expect("from_json accepts what serde accepts");
    assert_eq!(
        direct, frame,
        "from_json and Deserialize disagree on {json}"
    );
    frame
}

/// The error code `ClientFrame::from_json` refuses `json` with.
fn frame_error(json: &str) -> ErrorCode {
    let err = ClientFrame::from_json(json)
        .expect_err("the frame should be refused")
        .code;
    assert!(
        serde_json::from_str::<ClientFrame>(json).is_err(),
        "Deserialize should refuse {json} too"
    );
    err
}

/// The helper itself: a field the type does not know is dropped on
/// re-serialization, and that must fail the round trip.
#[test]
#[should_panic(expected = "does not serialize back")]
fn round_trip_catches_a_dropped_field() {
    round_trip::<UnreadCount>(r#"{"unread_count": 5, "unread_rooms": 2}"#);
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("the test's timestamp is RFC 3339")
}

/// The PROTOCOL.md example time.
const T0: &str = "2026-02-24T10:30:00Z";
const T1: &str = "2026-02-24T10:31:15Z";

/// `message` as every answer and frame that carries one shows it.
const MESSAGE: &str = r#"{
    "id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
    "body": "Hello, world!", "created_at": "2026-02-24T10:30:00Z",
    "is_read": false, "client_id": "c-0001"
}"#;

/// A message sent without a `client_id` (the field is still there, as null).
const MESSAGE_NO_CLIENT_ID: &str = r#"{
    "id": 43, "room": 7, "seq": 4, "sender": 2, "sender_name": "Bob",
    "body": "Hi Alice", "created_at": "2026-02-24T10:31:15Z",
    "is_read": true, "client_id": null
}"#;

fn message() -> Message {
    Message {
        id: MessageId(42),
        room: RoomId(7),
        seq: 3,
        sender: UserId(1),
        sender_name: "Alice".to_owned(),
        body: "Hello, world!".to_owned(),
        created_at: ts(T0),
        is_read: false,
        client_id: Some("c-0001".to_owned()),
        edited_at: None,
        version: 0,
        deleted: false,
        reactions: Vec::new(),
        pinned: false,
        reply_to: None,
        thread_root: None,
        thread: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
    }
}

fn message_no_client_id() -> Message {
    Message {
        id: MessageId(43),
        room: RoomId(7),
        seq: 4,
        sender: UserId(2),
        sender_name: "Bob".to_owned(),
        body: "Hi Alice".to_owned(),
        created_at: ts(T1),
        is_read: true,
        client_id: None,
        edited_at: None,
        version: 0,
        deleted: false,
        reactions: Vec::new(),
        pinned: false,
        reply_to: None,
        thread_root: None,
        thread: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------
// General rules: times and ids
// ---------------------------------------------------------------------------

#[test]
fn timestamp_is_rfc3339_utc() {
    let t: Timestamp = round_trip(&format!("\"{T0}\""));
    assert_eq!(t.to_string(), T0);
    assert_eq!(t.as_offset_date_time().unix_timestamp(), 1_771_929_000);
}

#[test]
fn ids_are_bare_integers() {
    assert_eq!(round_trip::<UserId>("1"), UserId(1));
    assert_eq!(round_trip::<RoomId>("7"), RoomId(7));
    assert_eq!(
        round_trip::<MessageId>("9007199254740993"),
        MessageId(9_007_199_254_740_993)
    );
}

// ---------------------------------------------------------------------------
// Users and tokens
// ---------------------------------------------------------------------------

#[test]
fn register_request_with_display_name() {
    let req: RegisterRequest = round_trip(
        r#"{"username": "alice", "email": "alice@example.com",
            "password": "correct horse battery", "display_name": "Alice"}"#,
    );
    assert_eq!(
        req,
        RegisterRequest {
            username: "alice".to_owned(),
            email: "alice@example.com".to_owned(),
            password: "correct horse battery".to_owned(),
            display_name: Some("Alice".to_owned()),
        }
    );
}

#[test]
fn register_request_without_display_name() {
    let req: RegisterRequest = round_trip(
        r#"{"username": "bob", "email": "bob@example.com", "password": "hunter2hunter2"}"#,
    );
    assert_eq!(req.username, "bob");
    assert_eq!(req.email, "bob@example.com");
    assert_eq!(req.password, "hunter2hunter2");
    assert_eq!(req.display_name, None);
}

#[test]
fn token_request_by_username() {
    let req: TokenRequest =
        round_trip(r#"{"username": "alice", "password": "correct horse battery"}"#);
    assert_eq!(
        req,
        TokenRequest {
            username: Some("alice".to_owned()),
            email: None,
            password: "correct horse battery".to_owned(),
        }
    );
}

#[test]
fn token_request_by_email() {
    let req: TokenRequest =
        round_trip(r#"{"email": "alice@example.com", "password": "correct horse battery"}"#);
    assert_eq!(
        req,
        TokenRequest {
            username: None,
            email: Some("alice@example.com".to_owned()),
            password: "correct horse battery".to_owned(),
        }
    );
}

/// The answer of both `POST /api/users/token/` and `.../token/refresh/`.
#[test]
fn token_response() {
    let res: TokenResponse = round_trip(
        r#"{"access": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "refresh": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwicmVmIjoxfQ.c2ln",
            "token_type": "Bearer", "expires_in": 900}"#,
    );
    assert_eq!(
        res,
        TokenResponse {
            access: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl".to_owned(),
            refresh: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwicmVmIjoxfQ.c2ln".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 900,
        }
    );
}

/// The body of both `POST /api/users/token/refresh/` and `.../logout/`.
#[test]
fn refresh_and_logout_request() {
    let req: RefreshRequest = round_trip(r#"{"refresh": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}"#);
    assert_eq!(req.refresh, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
}

/// `GET /api/users/me/` and the 201 of register: the user sees everything.
#[test]
fn user_as_seen_by_themself() {
    let user: User = round_trip(
        r#"{"id": 1, "username": "alice", "email": "alice@example.com",
            "display_name": "Alice", "created_at": "2026-02-24T10:30:00Z"}"#,
    );
    assert_eq!(
        user,
        User {
            id: UserId(1),
            username: "alice".to_owned(),
            email: Some("alice@example.com".to_owned()),
            display_name: "Alice".to_owned(),
            created_at: Some(ts(T0)),
            bot: false,
        }
    );
}

/// Others see only `id, username, display_name`.
#[test]
fn user_as_seen_by_others() {
    let user: User = round_trip(r#"{"id": 2, "username": "bob", "display_name": "Bob"}"#);
    assert_eq!(
        user,
        User {
            id: UserId(2),
            username: "bob".to_owned(),
            email: None,
            display_name: "Bob".to_owned(),
            created_at: None,
            bot: false,
        }
    );
    let bot: User = round_trip(
        r#"{"id": 3, "username": "reminders", "display_name": "Reminders", "bot": true}"#,
    );
    assert!(bot.bot);
}

/// `GET /api/users/`: `[user]` ordered by id, the caller in full.
#[test]
fn user_list() {
    let users: Vec<User> = round_trip(
        r#"[
            {"id": 1, "username": "alice", "email": "alice@example.com",
             "display_name": "Alice", "created_at": "2026-02-24T10:30:00Z"},
            {"id": 2, "username": "bob", "display_name": "Bob"},
            {"id": 3, "username": "carol.b", "display_name": "carol.b"}
        ]"#,
    );
    let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
    assert_eq!(ids, [UserId(1), UserId(2), UserId(3)]);
    assert_eq!(users[0].email.as_deref(), Some("alice@example.com"));
    assert_eq!(users[1].email, None);
    assert_eq!(users[2].username, "carol.b");
}

// ---------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------

#[test]
fn room_type_wire_names() {
    for (json, kind) in [
        (r#""public""#, RoomType::Public),
        (r#""private""#, RoomType::Private),
        (r#""game""#, RoomType::Game),
        (r#""direct""#, RoomType::Direct),
    ] {
        assert_eq!(round_trip::<RoomType>(json), kind);
        assert_eq!(format!("\"{kind}\""), json);
        assert_eq!(RoomType::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(RoomType::default(), RoomType::Private, "default type");
    assert!(serde_json::from_str::<RoomType>(r#""secret""#).is_err());
}

#[test]
fn create_room_request_full() {
    let req: CreateRoomRequest =
        round_trip(r#"{"name": "lobby", "type": "public", "invited_users": [2, 3]}"#);
    assert_eq!(
        req,
        CreateRoomRequest {
            name: Some("lobby".to_owned()),
            kind: Some(RoomType::Public),
            invited_users: vec![UserId(2), UserId(3)],
        }
    );
}

#[test]
fn create_room_request_name_only() {
    let req: CreateRoomRequest = round_trip(r#"{"name": "book-club"}"#);
    assert_eq!(
        req,
        CreateRoomRequest {
            name: Some("book-club".to_owned()),
            kind: None,
            invited_users: vec![],
        }
    );
}

/// A body without `name` still parses, so the server can answer
/// `room_name_required` instead of a generic parse error.
#[test]
fn create_room_request_without_name_parses() {
    let req: CreateRoomRequest =
        serde_json::from_str(r#"{"type": "game"}"#).expect("name is checked by the server");
    assert_eq!(req.name, None);
    assert_eq!(req.kind, Some(RoomType::Game));
}

/// The 201 of `POST /chat/create-room/`, also `GET /chat/rooms/{id}/` and the
/// 200 of `POST /chat/rooms/{id}/invite/`.
#[test]
fn room() {
    let room: Room = round_trip(
        r#"{"id": 7, "name": "lobby", "type": "private", "creator": "alice",
            "invited_users": ["bob", "carol"], "members": ["alice"],
            "created_at": "2026-02-24T10:30:00Z", "owner": "alice", "admins": []}"#,
    );
    assert_eq!(
        room,
        Room {
            id: RoomId(7),
            name: "lobby".to_owned(),
            kind: RoomType::Private,
            creator: "alice".to_owned(),
            invited_users: strings(&["bob", "carol"]),
            members: strings(&["alice"]),
            created_at: ts(T0),
            owner: Some("alice".to_owned()),
            admins: Vec::new(),
            topic: None,
            description: None,
            avatar_url: None,
            announcement: false,
            slow_mode_seconds: 0,
        }
    );
}

#[test]
fn join_room_request() {
    let req: JoinRoomRequest = round_trip(r#"{"room_id": 7}"#);
    assert_eq!(req.room_id, RoomId(7));
}

#[test]
fn joined_room_response() {
    let joined: JoinedRoom =
        round_trip(r#"{"id": 7, "name": "lobby", "type": "public", "members": ["alice", "bob"]}"#);
    assert_eq!(
        joined,
        JoinedRoom {
            id: RoomId(7),
            name: "lobby".to_owned(),
            kind: RoomType::Public,
            members: strings(&["alice", "bob"]),
        }
    );
}

/// `GET /chat/rooms/`. PROTOCOL.md only requires `unread_count` and
/// `last_message` on each room; the rest is the shape chat-core implements.
#[test]
fn room_list() {
    let rooms: Vec<RoomListItem> = round_trip(
        r#"[
            {"id": 7, "name": "lobby", "type": "public", "creator": "alice",
             "membership": "member", "member_count": 3, "unread_count": 2, "mention_count": 0,
             "last_message": {"body": "Hello, world!", "created_at": "2026-02-24T10:30:00Z",
                              "sender_id": 1, "is_read": false},
             "created_at": "2026-02-24T10:30:00Z", "role": "admin",
             "muted_until": "2026-02-24T11:30:00Z", "muted": true},
            {"id": 8, "name": "poker-night", "type": "game", "creator": "carol",
             "membership": "invited", "member_count": 1, "unread_count": 0, "mention_count": 0,
             "last_message": null, "created_at": "2026-02-24T10:31:15Z"}
        ]"#,
    );
    assert_eq!(
        rooms,
        [
            RoomListItem {
                id: RoomId(7),
                name: "lobby".to_owned(),
                kind: RoomType::Public,
                creator: "alice".to_owned(),
                membership: Membership::Member,
                member_count: 3,
                unread_count: 2,
                mention_count: 0,
                last_message: Some(LastMessage {
                    body: "Hello, world!".to_owned(),
                    created_at: ts(T0),
                    sender_id: UserId(1),
                    is_read: false,
                    deleted: false,
                }),
                created_at: ts(T0),
                role: Some(Role::Admin),
                muted_until: Some(ts("2026-02-24T11:30:00Z")),
                muted: true,
            },
            RoomListItem {
                id: RoomId(8),
                name: "poker-night".to_owned(),
                kind: RoomType::Game,
                creator: "carol".to_owned(),
                membership: Membership::Invited,
                member_count: 1,
                unread_count: 0,
                mention_count: 0,
                last_message: None,
                created_at: ts(T1),
                role: None,
                muted_until: None,
                muted: false,
            },
        ]
    );
}

#[test]
fn invite_request() {
    let req: InviteRequest = round_trip(r#"{"user_ids": [2, 3]}"#);
    assert_eq!(req.user_ids, [UserId(2), UserId(3)]);
}

/// `message` as PROTOCOL.md defines it, with and without a `client_id`.
#[test]
fn message_shape() {
    assert_eq!(round_trip::<Message>(MESSAGE), message());
    assert_eq!(
        round_trip::<Message>(MESSAGE_NO_CLIENT_ID),
        message_no_client_id()
    );
}

#[test]
fn last_message_from_message() {
    let last = LastMessage::from(&message());
    assert_eq!(
        serde_json::to_value(&last).expect("serializes"),
        serde_json::json!({
            "body": "Hello, world!", "created_at": T0, "sender_id": 1, "is_read": false
        })
    );
}

/// `GET /chat/history/`: oldest first.
#[test]
fn history_response() {
    let page: HistoryResponse = round_trip(&format!(
        r#"{{"chat_history": [{MESSAGE}, {MESSAGE_NO_CLIENT_ID}], "has_more": true}}"#
    ));
    assert_eq!(
        page,
        HistoryResponse {
            chat_history: vec![message(), message_no_client_id()],
            has_more: true,
        }
    );
}

#[test]
fn history_response_empty() {
    let page: HistoryResponse = round_trip(r#"{"chat_history": [], "has_more": false}"#);
    assert!(page.chat_history.is_empty());
    assert!(!page.has_more);
}

#[test]
fn send_request_by_room_id() {
    let req: SendRequest = round_trip(r#"{"room": 7, "message": "Hello, world!"}"#);
    assert_eq!(
        req,
        SendRequest {
            room: RoomRef::Id(RoomId(7)),
            message: "Hello, world!".to_owned(),
            client_id: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

#[test]
fn send_request_by_room_name_with_client_id() {
    let req: SendRequest =
        round_trip(r#"{"room": "lobby", "message": "Hello, world!", "client_id": "c-0001"}"#);
    assert_eq!(
        req,
        SendRequest {
            room: RoomRef::Name("lobby".to_owned()),
            message: "Hello, world!".to_owned(),
            client_id: Some("c-0001".to_owned()),
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

#[test]
fn send_response() {
    let res: SendResponse = round_trip(r#"{"message": "Message sent!", "id": 42, "seq": 3}"#);
    assert_eq!(
        res,
        SendResponse {
            message: "Message sent!".to_owned(),
            id: MessageId(42),
            seq: 3,
        }
    );
}

// ---------------------------------------------------------------------------
// Room references: `"room": <id or name>`
// ---------------------------------------------------------------------------

#[test]
fn room_ref_number_is_an_id() {
    let room: RoomRef = round_trip("7");
    assert_eq!(room, RoomRef::Id(RoomId(7)));
    assert_eq!(room.as_id(), Some(RoomId(7)));
}

#[test]
fn room_ref_string_is_a_name() {
    let room: RoomRef = round_trip(r#""lobby""#);
    assert_eq!(room, RoomRef::Name("lobby".to_owned()));
    assert_eq!(room.as_id(), None);
}

/// Room names may not be all digits, so `"7"` can only mean room 7. It stays
/// a string on the wire (so it round-trips) but resolves as an id.
#[test]
fn room_ref_digit_string_is_an_id() {
    let room: RoomRef = round_trip(r#""7""#);
    assert_eq!(room, RoomRef::Name("7".to_owned()));
    assert_eq!(room.as_id(), Some(RoomId(7)));
}

#[test]
fn room_ref_parse_of_path_segments() {
    assert_eq!(RoomRef::parse("7"), RoomRef::Id(RoomId(7)));
    assert_eq!(RoomRef::parse("lobby"), RoomRef::Name("lobby".to_owned()));
    assert_eq!(RoomRef::parse("+7"), RoomRef::Name("+7".to_owned()));
    assert_eq!(RoomRef::from("12").as_id(), Some(RoomId(12)));
}

// ---------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------

#[test]
fn conversation_list() {
    let list: Vec<ConversationSummary> = round_trip(
        r#"[
            {"id": 12, "other_user": {"id": 2, "name": "Bob", "email": "bob@example.com"},
             "last_message": {"body": "Hi Alice", "created_at": "2026-02-24T10:31:15Z",
                              "sender_id": 2, "is_read": false},
             "unread_count": 1, "mention_count": 0, "created_at": "2026-02-24T10:30:00Z"},
            {"id": 13, "other_user": {"id": 3, "name": "Carol", "email": ""},
             "last_message": null, "unread_count": 0, "mention_count": 0, "created_at": "2026-02-24T10:30:00Z"}
        ]"#,
    );
    assert_eq!(
        list,
        [
            ConversationSummary {
                id: RoomId(12),
                other_user: OtherUser {
                    id: UserId(2),
                    name: "Bob".to_owned(),
                    email: "bob@example.com".to_owned(),
                },
                last_message: Some(LastMessage {
                    body: "Hi Alice".to_owned(),
                    created_at: ts(T1),
                    sender_id: UserId(2),
                    is_read: false,
                    deleted: false,
                }),
                unread_count: 1,
                mention_count: 0,
                created_at: ts(T0),
            },
            ConversationSummary {
                id: RoomId(13),
                other_user: OtherUser {
                    id: UserId(3),
                    name: "Carol".to_owned(),
                    email: String::new(),
                },
                last_message: None,
                unread_count: 0,
                mention_count: 0,
                created_at: ts(T0),
            },
        ]
    );
}

#[test]
fn conversation_detail() {
    let detail: ConversationDetail = round_trip(&format!(
        r#"{{"id": 7, "other_user": {{"id": 2, "name": "Bob", "email": "bob@example.com"}},
            "messages": [{MESSAGE}, {MESSAGE_NO_CLIENT_ID}],
            "created_at": "2026-02-24T10:30:00Z"}}"#
    ));
    assert_eq!(
        detail,
        ConversationDetail {
            id: RoomId(7),
            other_user: OtherUser {
                id: UserId(2),
                name: "Bob".to_owned(),
                email: "bob@example.com".to_owned(),
            },
            messages: vec![message(), message_no_client_id()],
            created_at: ts(T0),
        }
    );
}

#[test]
fn create_conversation_request() {
    let req: CreateConversationRequest = round_trip(r#"{"user_id": 2}"#);
    assert_eq!(req.user_id, UserId(2));
}

/// PROTOCOL.md fixes only `"created"`; the other fields are chat-core's.
#[test]
fn create_conversation_response_created() {
    let res: CreateConversationResponse = round_trip(
        r#"{"id": 12, "other_user": {"id": 2, "name": "Bob", "email": "bob@example.com"},
            "created": true, "created_at": "2026-02-24T10:30:00Z"}"#,
    );
    assert_eq!(
        res,
        CreateConversationResponse {
            id: RoomId(12),
            other_user: OtherUser {
                id: UserId(2),
                name: "Bob".to_owned(),
                email: "bob@example.com".to_owned(),
            },
            created: true,
            created_at: ts(T0),
        }
    );
}

#[test]
fn create_conversation_response_existing() {
    let res: CreateConversationResponse = round_trip(
        r#"{"id": 12, "other_user": {"id": 2, "name": "Bob", "email": "bob@example.com"},
            "created": false, "created_at": "2026-02-24T10:30:00Z"}"#,
    );
    assert_eq!(res.id, RoomId(12));
    assert!(!res.created);
}

#[test]
fn unread_count() {
    let res: UnreadCount = round_trip(r#"{"unread_count": 5}"#);
    assert_eq!(res, UnreadCount { unread_count: 5 });
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Every variant with its snake_case wire name.
const ALL_CODES: [(ErrorCode, &str); 23] = [
    (ErrorCode::InvalidInput, "invalid_input"),
    (ErrorCode::UsernameTaken, "username_taken"),
    (ErrorCode::EmailTaken, "email_taken"),
    (ErrorCode::InvalidCredentials, "invalid_credentials"),
    (ErrorCode::InvalidToken, "invalid_token"),
    (ErrorCode::Unauthorized, "unauthorized"),
    (ErrorCode::RoomNameRequired, "room_name_required"),
    (ErrorCode::RoomNameTaken, "room_name_taken"),
    (ErrorCode::RoomNotFound, "room_not_found"),
    (ErrorCode::NotAuthorized, "not_authorized"),
    (ErrorCode::NotMember, "not_member"),
    (ErrorCode::UserNotFound, "user_not_found"),
    (ErrorCode::EmptyBody, "empty_body"),
    (ErrorCode::BodyTooLong, "body_too_long"),
    (ErrorCode::InvalidJson, "invalid_json"),
    (ErrorCode::UnknownType, "unknown_type"),
    (ErrorCode::RateLimited, "rate_limited"),
    (ErrorCode::NotFound, "not_found"),
    (ErrorCode::MethodNotAllowed, "method_not_allowed"),
    (ErrorCode::PayloadTooLarge, "payload_too_large"),
    (ErrorCode::StorageUnavailable, "storage_unavailable"),
    (ErrorCode::Internal, "internal"),
    (ErrorCode::Unknown, "unknown"),
];

#[test]
fn error_code_strings_round_trip() {
    for (code, wire) in ALL_CODES {
        assert_eq!(round_trip::<ErrorCode>(&format!("\"{wire}\"")), code);
        assert_eq!(code.as_str(), wire);
        assert_eq!(code.to_string(), wire);
    }
}

/// A code from a newer server does not break an older client.
#[test]
fn unknown_error_code_parses_as_unknown() {
    let code: ErrorCode =
        serde_json::from_str(r#""a_code_from_the_future""#).expect("unknown codes are accepted");
    assert_eq!(code, ErrorCode::Unknown);

    let body: ErrorBody = serde_json::from_str(
        r#"{"error": "You are over quota", "code": "a_code_from_the_future"}"#,
    )
    .expect("an error body with an unknown code parses");
    assert_eq!(body.code, ErrorCode::Unknown);
    assert_eq!(body.error, "You are over quota");
}

/// The sentences PROTOCOL.md quotes are exact.
#[test]
fn quoted_sentences_are_default_messages() {
    for (code, sentence) in [
        (
            ErrorCode::InvalidCredentials,
            "Invalid username or password",
        ),
        (ErrorCode::RoomNameRequired, "Room name is required"),
        (ErrorCode::RoomNameTaken, "Room name already exists"),
        (ErrorCode::RoomNotFound, "Room not found"),
        (
            ErrorCode::NotAuthorized,
            "You are not authorized to join this room",
        ),
        (ErrorCode::EmptyBody, "Message body cannot be empty"),
    ] {
        assert_eq!(code.default_message(), sentence, "sentence of {code}");
    }
    // `POST /chat/send/` answers this literal text on success.
    let ok: SendResponse = round_trip(r#"{"message": "Message sent!", "id": 1, "seq": 1}"#);
    assert_eq!(ok.message, "Message sent!");
}

/// The statuses PROTOCOL.md gives for the codes it names.
#[test]
fn http_status_of_contract_codes() {
    for (code, status) in [
        (ErrorCode::InvalidInput, 400),
        (ErrorCode::RoomNameRequired, 400),
        (ErrorCode::EmptyBody, 400),
        (ErrorCode::BodyTooLong, 400),
        (ErrorCode::Unauthorized, 401),
        (ErrorCode::InvalidCredentials, 401),
        (ErrorCode::InvalidToken, 401),
        (ErrorCode::NotAuthorized, 403),
        (ErrorCode::RoomNotFound, 404),
        (ErrorCode::UserNotFound, 404),
        (ErrorCode::UsernameTaken, 409),
        (ErrorCode::EmailTaken, 409),
        (ErrorCode::RoomNameTaken, 409),
    ] {
        assert_eq!(code.http_status(), status, "HTTP status of {code}");
    }
}

/// Codes PROTOCOL.md names without a status (WebSocket-only ones, or the
/// unqualified "403" of send), and chat-core's own codes: pins what the code
/// implements so a change is deliberate.
#[test]
fn http_status_of_codes_the_contract_leaves_open() {
    for (code, status) in [
        (ErrorCode::InvalidJson, 400),
        (ErrorCode::UnknownType, 400),
        (ErrorCode::NotMember, 403),
        (ErrorCode::NotFound, 404),
        (ErrorCode::MethodNotAllowed, 405),
        (ErrorCode::PayloadTooLarge, 413),
        (ErrorCode::RateLimited, 429),
        (ErrorCode::Internal, 500),
        (ErrorCode::Unknown, 500),
        (ErrorCode::StorageUnavailable, 503),
        (ErrorCode::NotSender, 403),
        (ErrorCode::MessageNotFound, 404),
        (ErrorCode::MessageDeleted, 409),
    ] {
        assert_eq!(code.http_status(), status, "HTTP status of {code}");
    }
}

#[test]
fn error_body_without_fields() {
    let body: ErrorBody = round_trip(r#"{"error": "Room not found", "code": "room_not_found"}"#);
    assert_eq!(
        body,
        ErrorBody {
            error: "Room not found".to_owned(),
            code: ErrorCode::RoomNotFound,
            fields: None,
        }
    );
    assert_eq!(body, ErrorBody::new(ErrorCode::RoomNotFound));
}

#[test]
fn error_body_with_fields() {
    let body: ErrorBody = round_trip(
        r#"{"error": "Invalid input", "code": "invalid_input",
            "fields": {"username": "3 to 32 characters of A-Z a-z 0-9 _ . -",
                       "password": "at least 8 characters"}}"#,
    );
    assert_eq!(body.error, "Invalid input");
    assert_eq!(body.code, ErrorCode::InvalidInput);
    let fields = body.fields.expect("fields are present");
    assert_eq!(
        fields,
        BTreeMap::from([
            (
                "username".to_owned(),
                "3 to 32 characters of A-Z a-z 0-9 _ . -".to_owned()
            ),
            ("password".to_owned(), "at least 8 characters".to_owned()),
        ])
    );
}

#[test]
fn error_bodies_with_quoted_sentences() {
    for (json, code) in [
        (
            r#"{"error": "Invalid username or password", "code": "invalid_credentials"}"#,
            ErrorCode::InvalidCredentials,
        ),
        (
            r#"{"error": "Room name is required", "code": "room_name_required"}"#,
            ErrorCode::RoomNameRequired,
        ),
        (
            r#"{"error": "Room name already exists", "code": "room_name_taken"}"#,
            ErrorCode::RoomNameTaken,
        ),
        (
            r#"{"error": "You are not authorized to join this room", "code": "not_authorized"}"#,
            ErrorCode::NotAuthorized,
        ),
        (
            r#"{"error": "Message body cannot be empty", "code": "empty_body"}"#,
            ErrorCode::EmptyBody,
        ),
    ] {
        let body: ErrorBody = round_trip(json);
        assert_eq!(body, ErrorBody::new(code));
    }
}

// ---------------------------------------------------------------------------
// Operations: GET /healthz
// ---------------------------------------------------------------------------

/// PROTOCOL.md says only "storage and broker state"; this is chat-core's shape.
#[test]
fn health_ok() {
    let health: Health =
        round_trip(r#"{"status": "ok", "storage": "ok", "broker": "ok", "version": "0.1.0"}"#);
    assert_eq!(
        health,
        Health {
            status: "ok".to_owned(),
            storage: ComponentState::Ok,
            broker: ComponentState::Ok,
            version: "0.1.0".to_owned(),
        }
    );
}

#[test]
fn health_degraded() {
    let health: Health = round_trip(
        r#"{"status": "degraded", "storage": "unavailable", "broker": "ok", "version": "0.1.0"}"#,
    );
    assert_eq!(health.status, "degraded");
    assert_eq!(health.storage, ComponentState::Unavailable);
    assert_eq!(health.broker, ComponentState::Ok);
}

// ---------------------------------------------------------------------------
// WebSocket: client frames
// ---------------------------------------------------------------------------

/// `{"message": "text"}`: the documents' form, for a bound socket.
#[test]
fn client_text_frame() {
    assert_eq!(
        client_frame(r#"{"message": "Hello, world!"}"#),
        ClientFrame::Text {
            message: "Hello, world!".to_owned()
        }
    );
}

#[test]
fn client_send_with_room_and_client_id() {
    assert_eq!(
        client_frame(
            r#"{"type": "send", "room": "lobby", "body": "Hello, world!", "client_id": "c-0001"}"#
        ),
        ClientFrame::Send {
            room: Some(RoomRef::Name("lobby".to_owned())),
            body: "Hello, world!".to_owned(),
            client_id: Some("c-0001".to_owned()),
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

#[test]
fn client_send_with_room_id_only() {
    assert_eq!(
        client_frame(r#"{"type": "send", "room": 7, "body": "Hello, world!"}"#),
        ClientFrame::Send {
            room: Some(RoomRef::Id(RoomId(7))),
            body: "Hello, world!".to_owned(),
            client_id: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

/// Without `room`: only valid on a bound socket.
#[test]
fn client_send_without_room() {
    assert_eq!(
        client_frame(r#"{"type": "send", "body": "Hello, world!"}"#),
        ClientFrame::Send {
            room: None,
            body: "Hello, world!".to_owned(),
            client_id: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
    assert_eq!(
        client_frame(r#"{"type": "send", "body": "Hello again", "client_id": "c-0002"}"#),
        ClientFrame::Send {
            room: None,
            body: "Hello again".to_owned(),
            client_id: Some("c-0002".to_owned()),
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

#[test]
fn client_subscribe_with_after_seq() {
    assert_eq!(
        client_frame(r#"{"type": "subscribe", "room": "lobby", "after_seq": 41}"#),
        ClientFrame::Subscribe {
            room: RoomRef::Name("lobby".to_owned()),
            after_seq: Some(41),
        }
    );
}

#[test]
fn client_subscribe_without_after_seq() {
    assert_eq!(
        client_frame(r#"{"type": "subscribe", "room": 7}"#),
        ClientFrame::Subscribe {
            room: RoomRef::Id(RoomId(7)),
            after_seq: None,
        }
    );
}

#[test]
fn client_unsubscribe() {
    assert_eq!(
        client_frame(r#"{"type": "unsubscribe", "room": 7}"#),
        ClientFrame::Unsubscribe {
            room: RoomRef::Id(RoomId(7))
        }
    );
}

#[test]
fn client_read() {
    assert_eq!(
        client_frame(r#"{"type": "read", "room": 7, "seq": 3}"#),
        ClientFrame::Read {
            room: RoomRef::Id(RoomId(7)),
            seq: 3,
        }
    );
}

#[test]
fn client_typing() {
    assert_eq!(
        client_frame(r#"{"type": "typing", "room": "lobby"}"#),
        ClientFrame::Typing {
            room: RoomRef::Name("lobby".to_owned())
        }
    );
}

#[test]
fn client_ping() {
    assert_eq!(client_frame(r#"{"type": "ping"}"#), ClientFrame::Ping);
}

#[test]
fn client_auth() {
    assert_eq!(
        client_frame(r#"{"type": "auth", "token": "eyJ.a.b"}"#),
        ClientFrame::Auth {
            token: "eyJ.a.b".to_owned()
        }
    );
}

#[test]
fn client_auth_hides_its_token_from_debug() {
    let frame = ClientFrame::Auth {
        token: "secret.jwt.value".to_owned(),
    };
    let shown = format!("{frame:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("Auth"));
}

#[test]
fn client_auth_needs_a_string_token() {
    assert_eq!(frame_error(r#"{"type": "auth"}"#), ErrorCode::InvalidInput);
    assert_eq!(
        frame_error(r#"{"type": "auth", "token": 5}"#),
        ErrorCode::InvalidInput
    );
}

// ---------------------------------------------------------------------------
// WebSocket: client frames that are refused (the socket stays open)
// ---------------------------------------------------------------------------

#[test]
fn malformed_json_is_invalid_json() {
    assert_eq!(
        ClientFrame::from_json(r#"{"type": "ping""#)
            .expect_err("truncated JSON")
            .code,
        ErrorCode::InvalidJson
    );
    assert_eq!(
        ClientFrame::from_json("hello").expect_err("not JSON").code,
        ErrorCode::InvalidJson
    );
    assert_eq!(
        ClientFrame::from_json("").expect_err("empty frame").code,
        ErrorCode::InvalidJson
    );
}

#[test]
fn json_that_is_not_an_object_is_invalid_json() {
    assert_eq!(frame_error(r#"[{"type": "ping"}]"#), ErrorCode::InvalidJson);
    assert_eq!(frame_error("5"), ErrorCode::InvalidJson);
    assert_eq!(frame_error(r#""ping""#), ErrorCode::InvalidJson);
    assert_eq!(frame_error("null"), ErrorCode::InvalidJson);
}

#[test]
fn unknown_type_is_unknown_type() {
    assert_eq!(
        frame_error(r#"{"type": "shout", "room": 7}"#),
        ErrorCode::UnknownType
    );
    // The server's frame names are not client frames.
    assert_eq!(frame_error(r#"{"type": "pong"}"#), ErrorCode::UnknownType);
}

#[test]
fn missing_or_mistyped_fields_are_invalid_input() {
    for json in [
        r#"{"type": "subscribe"}"#,
        r#"{"type": "subscribe", "after_seq": 3}"#,
        r#"{"type": "unsubscribe"}"#,
        r#"{"type": "send", "room": 7}"#,
        r#"{"type": "read", "room": 7}"#,
        r#"{"type": "typing"}"#,
        r#"{"type": "read", "room": 7, "seq": "3"}"#,
        r#"{"type": "send", "room": 7, "body": 5}"#,
        r#"{"type": "subscribe", "room": true}"#,
        r#"{"type": 5}"#,
        r#"{}"#,
    ] {
        assert_eq!(frame_error(json), ErrorCode::InvalidInput, "{json}");
    }
}

#[test]
fn non_string_message_is_invalid_input() {
    assert_eq!(frame_error(r#"{"message": 5}"#), ErrorCode::InvalidInput);
    assert_eq!(frame_error(r#"{"message": null}"#), ErrorCode::InvalidInput);
}

// ---------------------------------------------------------------------------
// WebSocket: server frames
// ---------------------------------------------------------------------------

#[test]
fn server_message() {
    let frame: ServerFrame = round_trip(&format!(r#"{{"type": "message", "message": {MESSAGE}}}"#));
    assert_eq!(frame, ServerFrame::Message { message: message() });
}

#[test]
fn server_ack_with_client_id() {
    let frame: ServerFrame = round_trip(&format!(
        r#"{{"type": "ack", "client_id": "c-0001", "message": {MESSAGE}}}"#
    ));
    assert_eq!(
        frame,
        ServerFrame::Ack {
            client_id: Some("c-0001".to_owned()),
            message: message(),
        }
    );
}

/// PROTOCOL.md lists `client_id` without `?` on `ack`: a send without one is
/// acknowledged with `"client_id": null`.
#[test]
fn server_ack_without_client_id() {
    let frame: ServerFrame = round_trip(&format!(
        r#"{{"type": "ack", "client_id": null, "message": {MESSAGE_NO_CLIENT_ID}}}"#
    ));
    assert_eq!(
        frame,
        ServerFrame::Ack {
            client_id: None,
            message: message_no_client_id(),
        }
    );
}

/// `room` is always the id here, even when the client subscribed by name.
#[test]
fn server_subscribed() {
    let frame: ServerFrame = round_trip(r#"{"type": "subscribed", "room": 7, "last_seq": 41}"#);
    assert_eq!(
        frame,
        ServerFrame::Subscribed {
            room: RoomId(7),
            last_seq: 41,
        }
    );
}

#[test]
fn server_read() {
    let frame: ServerFrame = round_trip(r#"{"type": "read", "room": 7, "user": 2, "seq": 3}"#);
    assert_eq!(
        frame,
        ServerFrame::Read {
            room: RoomId(7),
            user: UserId(2),
            seq: 3,
        }
    );
}

#[test]
fn server_typing() {
    let frame: ServerFrame = round_trip(r#"{"type": "typing", "room": 7, "user": 2}"#);
    assert_eq!(
        frame,
        ServerFrame::Typing {
            room: RoomId(7),
            user: UserId(2),
        }
    );
}

#[test]
fn server_presence_online_and_offline() {
    let online: ServerFrame =
        round_trip(r#"{"type": "presence", "room": 7, "user": 2, "status": "online"}"#);
    assert_eq!(
        online,
        ServerFrame::Presence {
            room: RoomId(7),
            user: UserId(2),
            status: PresenceStatus::Online,
        }
    );
    let offline: ServerFrame =
        round_trip(r#"{"type": "presence", "room": 7, "user": 2, "status": "offline"}"#);
    assert_eq!(
        offline,
        ServerFrame::Presence {
            room: RoomId(7),
            user: UserId(2),
            status: PresenceStatus::Offline,
        }
    );
}

#[test]
fn server_room_deleted() {
    let frame: ServerFrame = round_trip(r#"{"type": "room_deleted", "room": 7}"#);
    assert_eq!(frame, ServerFrame::RoomDeleted { room: RoomId(7) });
}

#[test]
fn server_member() {
    let frame: ServerFrame = round_trip(
        r#"{"type": "member", "room": 7, "seq": 12, "user": 3, "change": "left",
            "created_at": "2026-02-24T10:30:00Z"}"#,
    );
    assert_eq!(
        frame,
        ServerFrame::Member(MemberEvent {
            room: RoomId(7),
            seq: 12,
            user: UserId(3),
            change: MemberChange::Left,
            created_at: ts("2026-02-24T10:30:00Z"),
            by: None,
            reason: None,
            role: None,
            until: None,
        })
    );
    let joined: MemberChange = round_trip(r#""joined""#);
    assert_eq!(joined, MemberChange::Joined);
}

#[test]
fn timeline_page_lists_each_kind_as_its_frame() {
    let page: TimelineResponse = round_trip(&format!(
        r#"{{"events": [
            {{"type": "member", "room": 1, "seq": 1, "user": 2, "change": "joined",
              "created_at": "2026-02-24T10:30:00Z"}},
            {{"type": "message", "message": {}}}
        ], "has_more": false}}"#,
        serde_json::to_string(&message()).expect("message")
    ));
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.events[0].seq(), 1);
    assert_eq!(page.events[1].seq(), message().seq);
    assert!(matches!(&page.events[1], TimelineEvent::Message { message: m } if *m == message()));
    let query: TimelineQuery = round_trip(r#"{"after": 4, "limit": 20}"#);
    assert_eq!(query.after, Some(4));
}

#[test]
fn server_pong() {
    let frame: ServerFrame = round_trip(r#"{"type": "pong"}"#);
    assert_eq!(frame, ServerFrame::Pong);
}

#[test]
fn server_authenticated() {
    let frame: ServerFrame =
        round_trip(r#"{"type": "authenticated", "expires_at": "2026-02-24T10:45:00Z"}"#);
    assert_eq!(
        frame,
        ServerFrame::Authenticated {
            expires_at: ts("2026-02-24T10:45:00Z")
        }
    );
}

#[test]
fn server_error_with_client_id() {
    let frame: ServerFrame = round_trip(
        r#"{"type": "error", "code": "empty_body", "error": "Message body cannot be empty",
            "client_id": "c-0003"}"#,
    );
    assert_eq!(
        frame,
        ServerFrame::Error {
            code: ErrorCode::EmptyBody,
            error: "Message body cannot be empty".to_owned(),
            client_id: Some("c-0003".to_owned()),
        }
    );
}

#[test]
fn server_error_without_client_id() {
    let frame: ServerFrame =
        round_trip(r#"{"type": "error", "code": "invalid_json", "error": "Invalid JSON"}"#);
    assert_eq!(
        frame,
        ServerFrame::Error {
            code: ErrorCode::InvalidJson,
            error: "Invalid JSON".to_owned(),
            client_id: None,
        }
    );
    assert_eq!(frame, ServerFrame::error(ErrorCode::InvalidJson));
}

/// Every code PROTOCOL.md lists for `error` frames.
#[test]
fn server_error_codes_of_the_contract() {
    for (wire, code) in [
        ("invalid_json", ErrorCode::InvalidJson),
        ("unknown_type", ErrorCode::UnknownType),
        ("empty_body", ErrorCode::EmptyBody),
        ("body_too_long", ErrorCode::BodyTooLong),
        ("not_member", ErrorCode::NotMember),
        ("room_not_found", ErrorCode::RoomNotFound),
        ("rate_limited", ErrorCode::RateLimited),
    ] {
        let sentence = code.default_message();
        let frame: ServerFrame = round_trip(&format!(
            r#"{{"type": "error", "code": "{wire}", "error": "{sentence}"}}"#
        ));
        assert_eq!(frame, ServerFrame::error(code));
    }
}

// ---------------------------------------------------------------------------
// WebSocket: close codes
// ---------------------------------------------------------------------------

#[test]
fn close_codes_of_the_contract() {
    for (number, code) in [
        (1001, CloseCode::GoingAway),
        (1002, CloseCode::ProtocolError),
        (1007, CloseCode::InvalidPayload),
        (1009, CloseCode::TooLarge),
        (4401, CloseCode::TokenExpired),
        (4408, CloseCode::TooSlow),
        (4409, CloseCode::RoomDeleted),
    ] {
        assert_eq!(code.code(), number, "{code:?}");
        assert_eq!(CloseCode::from_code(number), Some(code));
    }
}

#[test]
fn close_codes_round_trip() {
    for code in [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::TooLarge,
        CloseCode::TokenExpired,
        CloseCode::TooSlow,
        CloseCode::RoomDeleted,
        CloseCode::SessionRevoked,
    ] {
        assert_eq!(CloseCode::from_code(code.code()), Some(code));
        assert!(!code.reason().is_empty(), "{code:?} has a reason");
        // RFC 6455 limits the close reason to 123 bytes.
        assert!(
            code.reason().len() <= 123,
            "{code:?} reason fits a close frame"
        );
    }
    assert_eq!(CloseCode::Normal.code(), 1000);
    assert_eq!(CloseCode::from_code(1003), None);
    assert_eq!(CloseCode::from_code(4000), None);
}

/// Extra keys are ignored, so a newer client's additions do not break an
/// older server.
#[test]
fn unknown_keys_in_client_frames_are_ignored() {
    let frame = ClientFrame::from_json(r#"{"type":"ping","id":1}"#).expect("extra key ignored");
    assert_eq!(frame, ClientFrame::Ping);
    let frame = ClientFrame::from_json(r#"{"type":"send","room":3,"body":"hi","trace":"x"}"#)
        .expect("extra key ignored");
    assert_eq!(
        frame,
        ClientFrame::Send {
            room: Some(RoomRef::Id(RoomId(3))),
            body: "hi".to_owned(),
            client_id: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        }
    );
}

// ---------------------------------------------------------------------------
// Changes to messages: edits and deletions
// ---------------------------------------------------------------------------

/// A message never changed keeps the shape it always had (no new keys); an
/// edited one carries `edited_at` and `version`, a tombstone `deleted`.
#[test]
fn message_changes_add_fields_only_when_set() {
    let plain = serde_json::to_value(message()).expect("serializes");
    for key in ["edited_at", "version", "deleted"] {
        assert!(plain.get(key).is_none(), "{key} on an unchanged message");
    }
    let edited: Message = round_trip(
        r#"{"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
            "body": "Hello, world!!", "created_at": "2026-02-24T10:30:00Z",
            "is_read": false, "client_id": "c-0001",
            "edited_at": "2026-02-24T10:31:15Z", "version": 1}"#,
    );
    assert_eq!(edited.edited_at, Some(ts(T1)));
    assert_eq!(edited.version, 1);
    assert!(!edited.deleted);
    let tombstone: Message = round_trip(
        r#"{"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
            "body": "", "created_at": "2026-02-24T10:30:00Z",
            "is_read": false, "client_id": "c-0001", "version": 2, "deleted": true}"#,
    );
    assert!(tombstone.deleted);
    assert_eq!(tombstone.body, "");
}

#[test]
fn server_message_edited_and_deleted() {
    let edited: ServerFrame = round_trip(
        r#"{"type": "message_edited", "room": 7, "seq": 9, "user": 1,
            "created_at": "2026-02-24T10:31:15Z",
            "message": {"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
                "body": "Hello!", "created_at": "2026-02-24T10:30:00Z", "is_read": false,
                "client_id": null, "edited_at": "2026-02-24T10:31:15Z", "version": 1}}"#,
    );
    let ServerFrame::MessageEdited(update) = &edited else {
        panic!("{edited:?}");
    };
    assert_eq!((update.seq, update.message.seq), (9, 3));
    assert_eq!(update.message.body, "Hello!");
    let deleted: ServerFrame = round_trip(
        r#"{"type": "message_deleted", "room": 7, "seq": 10, "user": 5,
            "created_at": "2026-02-24T10:31:15Z",
            "message": {"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
                "body": "", "created_at": "2026-02-24T10:30:00Z", "is_read": false,
                "client_id": null, "edited_at": "2026-02-24T10:31:15Z", "version": 2,
                "deleted": true}}"#,
    );
    assert!(matches!(
        &deleted,
        ServerFrame::MessageDeleted(MessageUpdate { user, message, .. })
            if *user == UserId(5) && message.deleted
    ));
    // The same JSON in the timeline endpoint.
    let page: TimelineResponse = round_trip(&format!(
        r#"{{"events": [{}, {}], "has_more": false}}"#,
        serde_json::to_string(&edited).expect("json"),
        serde_json::to_string(&deleted).expect("json")
    ));
    assert_eq!(
        page.events
            .iter()
            .map(TimelineEvent::seq)
            .collect::<Vec<_>>(),
        vec![9, 10]
    );
    assert!(matches!(page.events[0], TimelineEvent::MessageEdited(_)));
    assert!(matches!(page.events[1], TimelineEvent::MessageDeleted(_)));
}

#[test]
fn client_edit_and_delete() {
    assert_eq!(
        client_frame(r#"{"type": "edit", "message_id": 42, "body": "fixed"}"#),
        ClientFrame::Edit {
            message_id: MessageId(42),
            body: "fixed".to_owned(),
        }
    );
    assert_eq!(
        client_frame(r#"{"type": "delete", "message_id": 42}"#),
        ClientFrame::Delete {
            message_id: MessageId(42)
        }
    );
    for bad in [
        r#"{"type": "edit", "message_id": 42}"#,
        r#"{"type": "edit", "body": "x"}"#,
        r#"{"type": "edit", "message_id": "42", "body": "x"}"#,
        r#"{"type": "delete"}"#,
    ] {
        assert_eq!(frame_error(bad), ErrorCode::InvalidInput, "{bad}");
    }
}

#[test]
fn edit_request() {
    let req: EditRequest = round_trip(r#"{"body": "fixed"}"#);
    assert_eq!(req.body, "fixed");
}

#[test]
fn change_error_codes() {
    for (code, wire) in [
        (ErrorCode::NotSender, "not_sender"),
        (ErrorCode::MessageNotFound, "message_not_found"),
        (ErrorCode::MessageDeleted, "message_deleted"),
    ] {
        let body: ErrorBody = round_trip(&format!(
            r#"{{"error": "{}", "code": "{wire}"}}"#,
            code.default_message()
        ));
        assert_eq!(body.code, code);
        assert_eq!(code.as_str(), wire);
    }
}

#[test]
fn last_message_of_a_deleted_message() {
    let last: LastMessage = round_trip(
        r#"{"body": "", "created_at": "2026-02-24T10:30:00Z", "sender_id": 1,
            "is_read": false, "deleted": true}"#,
    );
    assert!(last.deleted);
}

#[test]
fn reactions_on_a_message_and_as_an_event() {
    let message: Message = round_trip(
        r#"{"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
            "body": "Hello", "created_at": "2026-02-24T10:30:00Z", "is_read": false,
            "client_id": null, "version": 2,
            "reactions": [{"key": "👍", "count": 2, "me": true}, {"key": "+1", "count": 1}]}"#,
    );
    assert_eq!(
        message.reactions,
        vec![
            Reaction {
                key: "👍".to_owned(),
                count: 2,
                me: true
            },
            Reaction {
                key: "+1".to_owned(),
                count: 1,
                me: false
            }
        ]
    );
    let frame: ServerFrame = round_trip(&format!(
        r#"{{"type": "reaction", "room": 7, "seq": 11, "user": 5,
            "created_at": "2026-02-24T10:31:15Z", "key": "👍", "added": false,
            "message": {}}}"#,
        serde_json::to_string(&message).expect("json")
    ));
    assert!(matches!(
        &frame,
        ServerFrame::Reaction(ReactionEvent { key, added: false, seq: 11, .. }) if key == "👍"
    ));
    let event: TimelineEvent =
        serde_json::from_value(serde_json::to_value(&frame).expect("json")).expect("event");
    assert_eq!(event.seq(), 11);
}

#[test]
fn client_react_and_unreact() {
    assert_eq!(
        client_frame(r#"{"type": "react", "message_id": 42, "key": "👍"}"#),
        ClientFrame::React {
            message_id: MessageId(42),
            key: "👍".to_owned()
        }
    );
    assert_eq!(
        client_frame(r#"{"type": "unreact", "message_id": 42, "key": "👍"}"#),
        ClientFrame::Unreact {
            message_id: MessageId(42),
            key: "👍".to_owned()
        }
    );
    assert_eq!(
        frame_error(r#"{"type": "react", "message_id": 42}"#),
        ErrorCode::InvalidInput
    );
}

#[test]
fn pins_and_pin_frames() {
    let pinned: ServerFrame = round_trip(
        r#"{"type": "message_pinned", "room": 7, "seq": 12, "user": 1,
            "created_at": "2026-02-24T10:31:15Z",
            "message": {"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
                "body": "Hello", "created_at": "2026-02-24T10:30:00Z", "is_read": false,
                "client_id": null, "version": 1, "pinned": true}}"#,
    );
    assert!(matches!(&pinned, ServerFrame::MessagePinned(u) if u.message.pinned));
    let unpinned: ServerFrame = round_trip(
        r#"{"type": "message_unpinned", "room": 7, "seq": 13, "user": 1,
            "created_at": "2026-02-24T10:31:15Z",
            "message": {"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
                "body": "Hello", "created_at": "2026-02-24T10:30:00Z", "is_read": false,
                "client_id": null, "version": 2}}"#,
    );
    assert!(matches!(&unpinned, ServerFrame::MessageUnpinned(u) if !u.message.pinned));
    let pins: PinsResponse = round_trip(&format!(r#"{{"pins": [{MESSAGE}]}}"#));
    assert_eq!(pins.pins, vec![message()]);
    assert_eq!(
        client_frame(r#"{"type": "pin", "message_id": 42}"#),
        ClientFrame::Pin {
            message_id: MessageId(42)
        }
    );
    assert_eq!(
        client_frame(r#"{"type": "unpin", "message_id": 42}"#),
        ClientFrame::Unpin {
            message_id: MessageId(42)
        }
    );
    assert_eq!(ErrorCode::NotModerator.http_status(), 403);
    assert_eq!(ErrorCode::NotModerator.as_str(), "not_moderator");
}

// ---------------------------------------------------------------------------
// Replies, threads and mentions
// ---------------------------------------------------------------------------

/// A reply carries its target's preview (a deleted target: `deleted`,
/// empty snippet), a thread reply its root, a root its summary, a message
/// its mentions; a message with none of them keeps its old shape.
#[test]
fn replies_threads_and_mentions_on_a_message() {
    let reply: Message = round_trip(
        r#"{"id": 43, "room": 7, "seq": 4, "sender": 2, "sender_name": "Bob",
            "body": "noon", "created_at": "2026-02-24T10:31:00Z", "is_read": false,
            "client_id": null,
            "reply_to": {"id": 42, "seq": 3, "sender": 1, "snippet": "lunch?"},
            "thread_root": 42, "mentions": [1, 3]}"#,
    );
    let preview = reply.reply_to.as_ref().expect("a reply");
    assert_eq!(
        (preview.id, preview.seq, preview.sender, preview.deleted),
        (MessageId(42), 3, UserId(1), false)
    );
    assert_eq!(reply.thread_root, Some(MessageId(42)));
    assert_eq!(reply.mentions, vec![UserId(1), UserId(3)]);
    let gone: ReplyPreview =
        round_trip(r#"{"id": 42, "seq": 3, "sender": 1, "snippet": "", "deleted": true}"#);
    assert!(gone.deleted && gone.snippet.is_empty());
    let root: Message = round_trip(
        r#"{"id": 42, "room": 7, "seq": 3, "sender": 1, "sender_name": "Alice",
            "body": "lunch?", "created_at": "2026-02-24T10:30:00Z", "is_read": true,
            "client_id": null,
            "thread": {"reply_count": 2, "last_reply_at": "2026-02-24T10:31:00Z"}}"#,
    );
    assert_eq!(root.thread.map(|t| t.reply_count), Some(2));
    let plain = serde_json::to_value(message()).expect("serializes");
    for key in ["reply_to", "thread_root", "thread", "mentions"] {
        assert!(plain.get(key).is_none(), "{key} is absent when unused");
    }
}

#[test]
fn sending_a_reply_in_a_thread_with_mentions() {
    let req: SendRequest = round_trip(
        r#"{"room": 7, "message": "noon", "client_id": "c-2",
            "reply_to": 42, "thread_root": 42, "mentions": [1]}"#,
    );
    assert_eq!(
        (req.reply_to, req.thread_root, req.mentions),
        (Some(MessageId(42)), Some(MessageId(42)), vec![UserId(1)])
    );
    assert_eq!(
        client_frame(
            r#"{"type": "send", "room": 7, "body": "noon", "reply_to": 42,
                "thread_root": 42, "mentions": [1, 3]}"#
        ),
        ClientFrame::Send {
            room: Some(RoomRef::Id(RoomId(7))),
            body: "noon".to_owned(),
            client_id: None,
            reply_to: Some(MessageId(42)),
            thread_root: Some(MessageId(42)),
            mentions: vec![UserId(1), UserId(3)],
            attachments: Vec::new(),
        }
    );
}

#[test]
fn a_thread_page() {
    let thread: ThreadResponse = round_trip(&format!(
        r#"{{"root": {MESSAGE}, "replies": [{MESSAGE}], "has_more": false}}"#
    ));
    assert_eq!(thread.root, message());
    assert_eq!(thread.replies.len(), 1);
}

#[test]
fn mention_counts_in_lists() {
    let rooms: Vec<RoomListItem> = round_trip(
        r#"[{"id": 7, "name": "lobby", "type": "public", "creator": "alice",
             "membership": "member", "member_count": 3, "unread_count": 4,
             "mention_count": 2, "last_message": null,
             "created_at": "2026-02-24T10:30:00Z"}]"#,
    );
    assert_eq!((rooms[0].unread_count, rooms[0].mention_count), (4, 2));
    // From a server without mentions: 0.
    let older: RoomListItem = serde_json::from_str(
        r#"{"id": 7, "name": "lobby", "type": "public", "creator": "alice",
            "membership": "member", "member_count": 3, "unread_count": 4,
            "last_message": null, "created_at": "2026-02-24T10:30:00Z"}"#,
    )
    .expect("parses");
    assert_eq!(older.mention_count, 0);
}

// ---------------------------------------------------------------------------
// Moderation
// ---------------------------------------------------------------------------

/// A moderator's member events carry who, why, until when and the new
/// role; a join keeps its old shape.
#[test]
fn moderation_member_events() {
    let banned: ServerFrame = round_trip(
        r#"{"type": "member", "room": 7, "seq": 12, "user": 3, "change": "banned",
            "created_at": "2026-02-24T10:31:00Z", "by": 1, "reason": "spam",
            "until": "2026-02-25T10:31:00Z"}"#,
    );
    let ServerFrame::Member(event) = &banned else {
        panic!("a member frame: {banned:?}");
    };
    assert_eq!(event.change, MemberChange::Banned);
    assert_eq!(event.by, Some(UserId(1)));
    assert_eq!(event.reason.as_deref(), Some("spam"));
    assert!(event.until.is_some() && event.change.removes());
    let promoted: ServerFrame = round_trip(
        r#"{"type": "member", "room": 7, "seq": 13, "user": 3, "change": "role_changed",
            "created_at": "2026-02-24T10:31:00Z", "by": 1, "role": "admin"}"#,
    );
    assert!(matches!(&promoted, ServerFrame::Member(e) if e.role == Some(Role::Admin)));
    for change in [
        "joined",
        "left",
        "invited",
        "kicked",
        "banned",
        "unbanned",
        "role_changed",
        "muted",
        "unmuted",
    ] {
        let parsed = MemberChange::parse(change).expect("a member change");
        assert_eq!(parsed.as_str(), change);
        assert_eq!(
            serde_json::to_value(parsed).expect("serializes"),
            serde_json::json!(change)
        );
    }
    assert!(!MemberChange::Muted.removes() && MemberChange::Kicked.removes());
}

/// The moderate call and frame, the bans list, the new error codes.
#[test]
fn moderation_requests() {
    let req: ModerateRequest = round_trip(
        r#"{"user_id": 3, "action": "ban", "reason": "spam", "until": "2026-02-25T10:31:00Z"}"#,
    );
    assert_eq!(req.action, ModerationAction::Ban);
    let req: ModerateRequest =
        round_trip(r#"{"user_id": 3, "action": "set_role", "role": "admin"}"#);
    assert_eq!(req.role, Some(Role::Admin));
    assert_eq!(
        client_frame(r#"{"type": "moderate", "room": 7, "user_id": 3, "action": "kick"}"#),
        ClientFrame::Moderate {
            room: RoomRef::Id(RoomId(7)),
            request: ModerateRequest {
                user_id: UserId(3),
                action: ModerationAction::Kick,
                reason: None,
                until: None,
                role: None,
            },
        }
    );
    let frame = ClientFrame::from_json(r#"{"type": "moderate", "room": 7, "action": "kick"}"#)
        .expect_err("no user");
    assert_eq!(frame.code, ErrorCode::InvalidInput);
    let response: ModerateResponse = round_trip(r#"{"event": null}"#);
    assert!(response.event.is_none());
    let bans: BansResponse = round_trip(
        r#"{"bans": [{"room": 7, "user_id": 3, "username": "eve", "by": 1, "reason": "spam",
            "until": null, "created_at": "2026-02-24T10:31:00Z"}]}"#,
    );
    assert_eq!(bans.bans[0].user_id, UserId(3));
    for (code, status) in [
        (ErrorCode::InsufficientRole, 403),
        (ErrorCode::Banned, 403),
        (ErrorCode::Muted, 403),
        (ErrorCode::NotInRoom, 404),
    ] {
        assert_eq!(code.http_status(), status);
    }
    assert!(Role::Owner > Role::Admin && Role::Admin > Role::Member);
}

/// Room settings: the PATCH body and frame, the `room_updated` event, the
/// directory, the new codes.
#[test]
fn room_settings_and_directory() {
    let settings: RoomSettings = round_trip(
        r#"{"name": "hall", "type": "public", "topic": "", "announcement": true,
            "slow_mode_seconds": 30}"#,
    );
    assert_eq!(settings.topic.as_deref(), Some(""));
    assert!(!settings.is_empty() && RoomSettings::default().is_empty());
    assert_eq!(
        client_frame(r#"{"type": "update_room", "room": "lobby", "topic": "news"}"#),
        ClientFrame::UpdateRoom {
            room: RoomRef::Name("lobby".to_owned()),
            settings: RoomSettings {
                topic: Some("news".to_owned()),
                ..RoomSettings::default()
            },
        }
    );
    let event: ServerFrame = round_trip(
        r#"{"type": "room_updated", "room": 7, "seq": 9, "user": 1,
            "created_at": "2026-02-24T10:31:00Z", "settings": {"slow_mode_seconds": 0}}"#,
    );
    assert!(
        matches!(&event, ServerFrame::RoomUpdated(u) if u.settings.slow_mode_seconds == Some(0))
    );
    let page: DirectoryResponse = round_trip(
        r#"{"rooms": [{"id": 7, "name": "hall", "topic": "news", "member_count": 3,
            "last_activity_at": "2026-02-24T10:31:00Z", "created_at": "2026-02-24T10:30:00Z"}],
            "has_more": false}"#,
    );
    assert_eq!(page.rooms[0].member_count, 3);
    assert_eq!(ErrorCode::SlowMode.http_status(), 429);
    assert_eq!(ErrorCode::AnnouncementOnly.http_status(), 403);
}

/// Reports and account control: the shapes, the codes, the close code.
#[test]
fn reports_and_accounts() {
    let req: chat_core::admin::ReportRequest =
        round_trip(r#"{"message_id": 42, "reason": "insults"}"#);
    assert_eq!(req.message_id, Some(MessageId(42)));
    let report: chat_core::admin::Report = round_trip(
        r#"{"id": 3, "reporter": 1, "user_id": 2, "message_id": 42, "room": 7,
            "reason": "insults", "created_at": "2026-02-24T10:31:00Z",
            "message_body": "something rude", "message_deleted": true,
            "resolved_at": "2026-02-24T11:00:00Z", "resolved_by": 9, "resolution": "warned"}"#,
    );
    assert!(report.message_deleted && report.resolved_by == Some(UserId(9)));
    for (code, status) in [
        (ErrorCode::AccountDeactivated, 403),
        (ErrorCode::NotAdmin, 403),
        (ErrorCode::ReportNotFound, 404),
    ] {
        assert_eq!(code.http_status(), status);
    }
    assert_eq!(CloseCode::SessionRevoked.code(), 4403);
    assert_eq!(CloseCode::from_code(4403), Some(CloseCode::SessionRevoked));
}

/// Blocking and reporting over a socket.
#[test]
fn block_and_report_frames() {
    assert_eq!(
        client_frame(r#"{"type": "block", "user_id": 3}"#),
        ClientFrame::Block {
            user_id: UserId(3),
            block: true
        }
    );
    assert_eq!(
        client_frame(r#"{"type": "unblock", "user_id": 3}"#),
        ClientFrame::Block {
            user_id: UserId(3),
            block: false
        }
    );
    assert!(matches!(
        client_frame(r#"{"type": "report", "message_id": 9, "reason": "spam"}"#),
        ClientFrame::Report { request } if request.message_id == Some(MessageId(9))
    ));
}

#[test]
fn attachments_on_the_wire() {
    use chat_core::AttachmentId;
    use chat_core::attachment::{
        Attachment, AttachmentInfo, AttachmentLink, Thumbnail, UploadUsage,
    };

    let photo: Attachment = round_trip(
        r#"{"id":7,"name":"beach.jpg","size":183201,"content_type":"image/jpeg",
            "width":4000,"height":3000,
            "thumbnail":{"width":320,"height":240,"content_type":"image/jpeg","size":9120},
            "created_at":"2026-12-07T10:00:00Z"}"#,
    );
    assert_eq!(photo.id, AttachmentId(7));
    assert_eq!(
        photo.thumbnail,
        Some(Thumbnail {
            width: 320,
            height: 240,
            content_type: "image/jpeg".to_owned(),
            size: 9120
        })
    );
    // A file that is no image has no dimensions and no thumbnail.
    let file: Attachment = round_trip(
        r#"{"id":8,"name":"notes.txt","size":12,"content_type":"text/plain; charset=utf-8",
            "created_at":"2026-12-07T10:00:00Z"}"#,
    );
    assert_eq!((file.width, &file.thumbnail), (None, &None));

    let info: AttachmentInfo = round_trip(
        r#"{"id":8,"name":"notes.txt","size":12,"content_type":"text/plain; charset=utf-8",
            "created_at":"2026-12-07T10:00:00Z","message_id":31,"room":4}"#,
    );
    assert_eq!(info.attachment, file);
    let unsent: AttachmentInfo = round_trip(
        r#"{"id":8,"name":"notes.txt","size":12,"content_type":"text/plain; charset=utf-8",
            "created_at":"2026-12-07T10:00:00Z"}"#,
    );
    assert_eq!(unsent.message_id, None);

    let _: UploadUsage = round_trip(r#"{"used":10,"quota":1073741824,"max_file":26214400}"#);
    let _: AttachmentLink = round_trip(
        r#"{"url":"/chat/attachments/7/content/?user=1&expires=1796637600&sig=ab",
            "thumbnail_url":"/chat/attachments/7/thumbnail/?user=1&expires=1796637600&sig=ab",
            "expires_at":"2026-12-07T10:05:00Z"}"#,
    );

    // A message carries them; a send names uploads by id.
    let sent: SendRequest = round_trip(r#"{"room":4,"message":"","attachments":[7,8]}"#);
    assert_eq!(sent.attachments, vec![AttachmentId(7), AttachmentId(8)]);
    let frame = client_frame(r#"{"type":"send","room":4,"body":"look","attachments":[7]}"#);
    assert!(
        matches!(frame, ClientFrame::Send { ref attachments, .. } if attachments == &[AttachmentId(7)])
    );
    let mut with = message();
    with.attachments = vec![photo];
    let json = serde_json::to_value(&with).expect("serializes");
    assert_eq!(json["attachments"][0]["thumbnail"]["width"], 320);
    let back: Message = serde_json::from_value(json).expect("parses");
    assert_eq!(back, with);
}
