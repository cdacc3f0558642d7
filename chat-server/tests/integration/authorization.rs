//! Who may do what: every HTTP call and WebSocket path that names a room,
//! tried by every role on every kind of room, each answer checked against
//! one table (`expected`) derived from PROTOCOL.md.
//!
//! Roles: a stranger (registered, unrelated), an invitee who never joined, a
//! member, an admin (a member the creator, who owns the room, promoted), a removed member (joined, then left with
//! `POST /chat/rooms/{id}/leave/`; the contract has no kick), the creator,
//! and the creator after leaving their own room. Kinds: public, private, game
//! and direct. A conversation has only its two participants (the one who
//! opened it is its creator, the other its member); nobody is invited to
//! one, and nobody leaves one (400 `invalid_input`), so the invitee, removed
//! and left-creator rows do not exist for it.
//!
//! The rules, PROTOCOL.md first and, where it is silent, the answer that
//! leaks nothing:
//!
//! - A private, game or direct room the caller does not belong to is
//!   *hidden*: every call answers exactly what it answers for an id or name
//!   that does not exist (same status, code, sentence, handshake status,
//!   error frame). `404 room_not_found` "Room not found" everywhere. The
//!   matrix compares each such answer with the one for a nonexistent id
//!   and a nonexistent name (`direct/{a}/{b}` of two users without a
//!   conversation included: those names are guessable).
//! - Leaving erases the membership, so a removed member is a stranger again:
//!   the server keeps no trace to answer them differently.
//! - `POST /chat/join-room/` lists both 404 `room_not_found` and 403
//!   `not_authorized` "You are not authorized to join this room". A 403 for
//!   a hidden room next to a 404 for a missing one would tell a stranger
//!   which ids are private rooms, so a hidden room answers 404. The 403 is
//!   kept for the one caller who can be refused without learning anything:
//!   the creator of a private or game room who left it (not invited, so not
//!   allowed back, and they know the room exists).
//! - `GET /chat/rooms/{id}/`: 404 for non-members of non-public rooms, as the
//!   contract says, invitees included (their list shows the room).
//! - `GET /chat/history/`: 404 `room_not_found` for every non-member, as the
//!   contract says ("404 room_not_found / not a member"), public rooms
//!   included. `POST /chat/send/` and the `send`, `read`, `typing` frames:
//!   403 `not_member` for a room the caller may see (public, or invited),
//!   404 for a hidden one.
//! - Invite: 403 `not_member` unless a member, for a room the caller may see;
//!   404 when hidden; 400 `invalid_input` for a conversation.
//! - Leave: 204 for anyone who may see the room (idempotent); 404 when
//!   hidden; 400 `invalid_input` for a conversation.
//! - Delete: 204 for the creator (even after leaving), 403 `not_authorized`
//!   for anyone else who may see the room, 404 when hidden.
//! - `GET /api/chats/conversations/{id}/`: 404 unless a participant, and for
//!   any id that is not a conversation.
//! - WebSocket: `/ws/chat/{room}/` and `subscribe` join a public room
//!   (invitees too: anyone may join a public room); an invitee of another
//!   room gets 403 / `not_member`; hidden is 404 / `room_not_found`.
//!   `unsubscribe` of a room one is not subscribed to is a silent no-op,
//!   except that a hidden room answers `room_not_found` like a missing one.
//! - A message (`PATCH`/`DELETE /chat/messages/{id}/`, the `edit` and
//!   `delete` frames, here on the creator's message): its sender edits and
//!   deletes it; another member gets 403 `not_sender` (the creator
//!   moderates deletions, but the matrix's message is the creator's own;
//!   nobody moderates a conversation); anyone not in the room gets 404
//!   `message_not_found`, the same bytes as for an id that names no
//!   message, as they may not read the room's history. Any member reacts
//!   (`PUT /chat/messages/{id}/reactions/{key}/`, the `react` frame) and
//!   takes a reaction back (`DELETE`, `unreact`); whoever moderates pins
//!   and unpins (the creator, either participant of a conversation; 403
//!   `not_moderator` for another member); the pins of a
//!   room are for its members, like its history, and so is a thread
//!   (`GET /chat/messages/{id}/thread/`: 404 `message_not_found` to
//!   anyone else). A send that replies, posts in a thread and mentions
//!   answers as a plain send: what it refers to is checked only for a
//!   member, so it tells a stranger nothing of the room's messages.
//! - Lists show a room only to its members and invitees (`GET /chat/rooms/`,
//!   without content for invitees), a conversation only to its participants,
//!   and the unread total counts only memberships.
//! - A refused socket never receives a room's messages, read marks, typing
//!   or presence, and a member's socket stops receiving them when they
//!   leave (a bound one is closed).
//!
//! - The server API (`/server/…`) answers only a live API key: no token, a
//!   user's access token (ours or another issuer's), a made-up key and a
//!   revoked key all get 401 `unauthorized`, on every server call; and an
//!   API key is no user: every user call and socket refuses it with 401.
//!
//! Known and contract-fixed: room names are one namespace, so
//! `POST /chat/create-room/` answers 409 `room_name_taken` for a private
//! room's name, and with `auto_create_rooms` on, `/ws/chat/{name}/` creates
//! a missing name but answers 404 for a hidden one; ids are sequential.
//! None of these tells what kind of room it is or who is in it.

use serde_json::{Value, json};

use reqwest::StatusCode;

use crate::support::{Backend, TestServer, TestUser, WsClient, each_backend};

each_backend!(
    http_matrix,
    ws_matrix,
    refused_sockets_hear_nothing,
    lists,
    server_calls_and_api_keys
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Private,
    Game,
    Direct,
}

const KINDS: [Kind; 4] = [Kind::Public, Kind::Private, Kind::Game, Kind::Direct];

impl Kind {
    fn wire(self) -> &'static str {
        match self {
            Kind::Public => "public",
            Kind::Private => "private",
            Kind::Game => "game",
            Kind::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stranger,
    Invited,
    Member,
    /// A member the creator (the owner) made an admin.
    Admin,
    Removed,
    Creator,
    LeftCreator,
}

impl Role {
    fn of(kind: Kind) -> &'static [Role] {
        match kind {
            Kind::Direct => &[Role::Stranger, Role::Member, Role::Creator],
            _ => &[
                Role::Stranger,
                Role::Invited,
                Role::Member,
                Role::Admin,
                Role::Removed,
                Role::Creator,
                Role::LeftCreator,
            ],
        }
    }
}

/// How the contract sees a role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Member,
    Invited,
    /// Not in a public room: may see and join it.
    Outsider,
    /// Not in any other room: it does not exist for them.
    Hidden,
}

fn standing(kind: Kind, role: Role) -> Standing {
    match (role, kind) {
        (Role::Member | Role::Admin | Role::Creator, _) => Standing::Member,
        (Role::Invited, _) => Standing::Invited,
        (Role::Stranger | Role::Removed | Role::LeftCreator, Kind::Public) => Standing::Outsider,
        (Role::Stranger | Role::Removed | Role::LeftCreator, _) => Standing::Hidden,
    }
}

/// How a call names its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Id,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Detail,
    Join,
    Invite,
    Leave,
    Delete,
    Conversation,
    History(By),
    Send(By),
    /// The handshake of `/ws/chat/{room}/`.
    Bound(By),
    /// Frames on `/ws/`.
    Subscribe(By),
    SubscribeAfterSeq(By),
    Unsubscribe(By),
    SendFrame(By),
    Read(By),
    Typing(By),
    /// `PATCH` and `DELETE /chat/messages/{id}/` of the creator's message.
    EditMessage,
    DeleteMessage,
    /// The `edit` and `delete` frames, on the same message.
    EditFrame,
    DeleteFrame,
    /// `PUT /chat/messages/{id}/reactions/👍/` and the `react` frame;
    /// `DELETE` and `unreact` (nothing to take back: the same answers).
    React,
    ReactFrame,
    Unreact,
    UnreactFrame,
    /// `PUT /chat/messages/{id}/pin/` and the `pin` frame; `GET
    /// /chat/rooms/{id}/pins/`.
    Pin,
    PinFrame,
    /// `DELETE /chat/messages/{id}/pin/` and the `unpin` frame.
    Unpin,
    UnpinFrame,
    Pins,
    /// `GET /chat/search/?q=…&room={id}`, for the creator's message.
    Search,
    /// `GET /chat/messages/{id}/thread/` of the creator's message.
    Thread,
    /// `POST /chat/send/` by id, replying to the creator's message in its
    /// thread and mentioning the creator.
    Reply,
    /// `POST /chat/rooms/{id}/moderate/` and the `moderate` frame: unban
    /// the guest (never banned: done, nothing changes); `GET
    /// /chat/rooms/{id}/bans/`.
    Moderate,
    ModerateFrame,
    Bans,
    /// `GET /chat/rooms/{id}/online/`: members only, like history.
    Online,
    /// `PATCH /chat/rooms/{id}/` and the `update_room` frame: a new topic.
    Settings,
    SettingsFrame,
    /// `GET /chat/attachments/{id}/` and `…/content/` of the attachment
    /// the creator sent with the room's message: whoever may read the
    /// room's history.
    Attachment,
    AttachmentContent,
    /// An upload of the caller's, then `POST /chat/send/` with it: a send.
    SendAttachment,
}

const HTTP_CALLS: [Call; 27] = [
    Call::Detail,
    Call::Join,
    Call::Invite,
    Call::Leave,
    Call::Delete,
    Call::Conversation,
    Call::History(By::Id),
    Call::History(By::Name),
    Call::Send(By::Id),
    Call::Send(By::Name),
    Call::EditMessage,
    Call::DeleteMessage,
    Call::React,
    Call::Unreact,
    Call::Pin,
    Call::Unpin,
    Call::Pins,
    Call::Search,
    Call::Thread,
    Call::Reply,
    Call::Moderate,
    Call::Bans,
    Call::Online,
    Call::Settings,
    Call::Attachment,
    Call::AttachmentContent,
    Call::SendAttachment,
];

const WS_CALLS: [Call; 22] = [
    Call::Bound(By::Id),
    Call::Bound(By::Name),
    Call::Subscribe(By::Id),
    Call::Subscribe(By::Name),
    Call::SubscribeAfterSeq(By::Id),
    Call::SubscribeAfterSeq(By::Name),
    Call::Unsubscribe(By::Id),
    Call::Unsubscribe(By::Name),
    Call::SendFrame(By::Id),
    Call::SendFrame(By::Name),
    Call::Read(By::Id),
    Call::Read(By::Name),
    Call::Typing(By::Id),
    Call::Typing(By::Name),
    Call::EditFrame,
    Call::DeleteFrame,
    Call::ReactFrame,
    Call::UnreactFrame,
    Call::PinFrame,
    Call::UnpinFrame,
    Call::ModerateFrame,
    Call::SettingsFrame,
];

/// What a cell must answer: a success status (101 for a handshake, 200 for
/// a frame answered without error) or a refusal with its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok(u16),
    Err(u16, &'static str),
}

const NOT_FOUND: Expect = Expect::Err(404, "room_not_found");
const NOT_MEMBER: Expect = Expect::Err(403, "not_member");
const MESSAGE_NOT_FOUND: Expect = Expect::Err(404, "message_not_found");
const ATTACHMENT_NOT_FOUND: Expect = Expect::Err(404, "attachment_not_found");

/// The table: (kind, role, call) → answer.
fn expected(kind: Kind, role: Role, call: Call) -> Expect {
    use Standing as S;
    let st = standing(kind, role);
    let direct = kind == Kind::Direct;
    let public = kind == Kind::Public;
    match call {
        Call::Detail => match st {
            S::Member => Expect::Ok(200),
            S::Invited | S::Outsider if public => Expect::Ok(200),
            _ => NOT_FOUND,
        },
        Call::Join => match st {
            S::Hidden if role == Role::LeftCreator => Expect::Err(403, "not_authorized"),
            S::Hidden => NOT_FOUND,
            _ => Expect::Ok(200),
        },
        Call::Invite => match st {
            S::Member if direct => Expect::Err(400, "invalid_input"),
            S::Member => Expect::Ok(200),
            S::Invited | S::Outsider => NOT_MEMBER,
            S::Hidden => NOT_FOUND,
        },
        Call::Leave => match st {
            S::Member if direct => Expect::Err(400, "invalid_input"),
            S::Hidden => NOT_FOUND,
            _ => Expect::Ok(204),
        },
        Call::Delete => match (role, st) {
            (Role::Creator | Role::LeftCreator, _) => Expect::Ok(204),
            (_, S::Hidden) => NOT_FOUND,
            _ => Expect::Err(403, "not_authorized"),
        },
        Call::Conversation => match st {
            S::Member if direct => Expect::Ok(200),
            _ => NOT_FOUND,
        },
        Call::History(_) | Call::Online => match st {
            S::Member => Expect::Ok(200),
            _ => NOT_FOUND,
        },
        Call::Send(_) => match st {
            S::Member => Expect::Ok(201),
            S::Hidden => NOT_FOUND,
            _ => NOT_MEMBER,
        },
        Call::Bound(_) | Call::Subscribe(_) | Call::SubscribeAfterSeq(_) => {
            let ok = if matches!(call, Call::Bound(_)) {
                101
            } else {
                200
            };
            match st {
                S::Member | S::Outsider => Expect::Ok(ok),
                S::Invited if public => Expect::Ok(ok),
                S::Invited => NOT_MEMBER,
                S::Hidden => NOT_FOUND,
            }
        }
        Call::Unsubscribe(_) => match st {
            S::Hidden => NOT_FOUND,
            _ => Expect::Ok(200),
        },
        Call::SendFrame(_) | Call::Read(_) | Call::Typing(_) => match st {
            S::Member => Expect::Ok(200),
            S::Hidden => NOT_FOUND,
            _ => NOT_MEMBER,
        },
        // The creator's message: its sender edits it and deletes it (and
        // moderates group rooms, which changes nothing here); the other
        // member may do neither (nobody moderates a conversation); for
        // anyone not in the room it does not exist, as its history does
        // not.
        Call::EditMessage | Call::DeleteMessage | Call::EditFrame | Call::DeleteFrame => {
            let deletes = matches!(call, Call::DeleteMessage | Call::DeleteFrame);
            match (role, st) {
                (Role::Creator, _) => Expect::Ok(200),
                // Admins delete others' messages; nobody edits them.
                (Role::Admin, _) if deletes => Expect::Ok(200),
                (_, S::Member) => Expect::Err(403, "not_sender"),
                _ => MESSAGE_NOT_FOUND,
            }
        }
        // Whoever moderates: the creator; either participant of a
        // conversation.
        Call::Pin | Call::PinFrame | Call::Unpin | Call::UnpinFrame => match (role, st) {
            (Role::Creator | Role::Admin, _) => Expect::Ok(200),
            (_, S::Member) if direct => Expect::Ok(200),
            (_, S::Member) => Expect::Err(403, "not_moderator"),
            _ => MESSAGE_NOT_FOUND,
        },
        Call::Pins | Call::Search => match st {
            S::Member => Expect::Ok(200),
            _ => NOT_FOUND,
        },
        // A thread is read like history, its root named like a message.
        Call::Thread => match st {
            S::Member => Expect::Ok(200),
            _ => MESSAGE_NOT_FOUND,
        },
        // A send's answers: what it refers to tells a stranger nothing.
        Call::Reply | Call::SendAttachment => match st {
            S::Member => Expect::Ok(201),
            S::Hidden => NOT_FOUND,
            _ => NOT_MEMBER,
        },
        Call::Attachment | Call::AttachmentContent => match st {
            S::Member => Expect::Ok(200),
            _ => ATTACHMENT_NOT_FOUND,
        },
        // The owner (the creator) moderates; a conversation takes no
        // moderation; the rest as for any room call.
        Call::Moderate
        | Call::ModerateFrame
        | Call::Bans
        | Call::Settings
        | Call::SettingsFrame => match (role, st) {
            (_, S::Member) if direct => Expect::Err(400, "invalid_input"),
            (Role::Creator | Role::Admin, S::Member) => Expect::Ok(200),
            (_, S::Member) => Expect::Err(403, "not_moderator"),
            (_, S::Invited | S::Outsider) => NOT_MEMBER,
            (_, S::Hidden) => NOT_FOUND,
        },
        // Any member reacts.
        Call::React | Call::ReactFrame | Call::Unreact | Call::UnreactFrame => match st {
            S::Member => Expect::Ok(200),
            _ => MESSAGE_NOT_FOUND,
        },
    }
}

/// The sentences PROTOCOL.md fixes for the codes the matrix meets.
fn sentence(call: Call, code: &str) -> Option<&'static str> {
    match (call, code) {
        (_, "room_not_found") => Some("Room not found"),
        (_, "message_not_found") => Some("Message not found"),
        (_, "attachment_not_found") => Some("Attachment not found"),
        (Call::Join, "not_authorized") => Some("You are not authorized to join this room"),
        _ => None,
    }
}

/// Everyone the matrix needs, registered once per test.
struct World {
    s: TestServer,
    creator: TestUser,
    invited: TestUser,
    member: TestUser,
    admin: TestUser,
    removed: TestUser,
    stranger: TestUser,
    /// Only ever the target of invitations and of the moderation cells.
    guest: TestUser,
    rooms_made: std::cell::Cell<u32>,
    /// The cell running: a fresh `client_id` for each (a repeated one would
    /// only be acknowledged, not sent).
    cell: std::cell::Cell<u32>,
}

/// A room as a call names it.
#[derive(Debug, Clone)]
struct Target {
    id: i64,
    name: String,
    /// The creator's message in it.
    message: i64,
    /// The attachment the creator sent with it.
    attachment: i64,
}

/// What came back, in one shape for HTTP and WebSocket: the status (101 for
/// an accepted handshake; for a frame, the HTTP status of its error code, or
/// 200) and the body (the error frames, for a frame).
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    body: Value,
    /// Frame types of a successful WebSocket exchange, for its checks.
    frames: Vec<String>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let s = TestServer::start(backend).await;
        Self {
            creator: s.user("creator").await,
            invited: s.user("invited").await,
            member: s.user("member").await,
            admin: s.user("admin").await,
            removed: s.user("removed").await,
            stranger: s.user("stranger").await,
            guest: s.user("guest").await,
            s,
            rooms_made: std::cell::Cell::new(0),
            cell: std::cell::Cell::new(0),
        }
    }

    fn user(&self, role: Role) -> &TestUser {
        match role {
            Role::Stranger => &self.stranger,
            Role::Invited => &self.invited,
            Role::Member => &self.member,
            Role::Admin => &self.admin,
            Role::Removed => &self.removed,
            Role::Creator | Role::LeftCreator => &self.creator,
        }
    }

    /// A fresh room of `kind` where each role stands as its name says, with
    /// one message from the creator. There is one conversation per pair, so
    /// the creator deletes the previous one to start afresh.
    async fn room(&self, kind: Kind, role: Role) -> Target {
        let s = &self.s;
        if kind == Kind::Direct {
            let open = || {
                s.post(
                    "/api/chats/conversations/create/",
                    &self.creator.access,
                    json!({"user_id": self.member.id}),
                )
            };
            let (_, mut conv) = open().await;
            if conv["created"] == false {
                let old = &conv["id"];
                let (status, body) = s
                    .call(
                        "DELETE",
                        &format!("/chat/rooms/{old}/"),
                        Some(&self.creator.access),
                        None,
                    )
                    .await;
                assert_eq!(status, 204, "delete the old conversation: {body}");
                conv = open().await.1;
            }
            assert_eq!(conv["created"], true, "a fresh conversation: {conv}");
            let id = conv["id"].as_i64().expect("conversation id");
            let (message, attachment) = self.send(id, "between us").await;
            let (lo, hi) = sorted(self.creator.id, self.member.id);
            return Target {
                id,
                name: format!("direct/{lo}/{hi}"),
                message,
                attachment,
            };
        }
        let n = self.rooms_made.get() + 1;
        self.rooms_made.set(n);
        let name = format!("{}-{n}", kind.wire());
        let id = s
            .room(
                &self.creator,
                &name,
                kind.wire(),
                &[&self.invited, &self.member, &self.admin, &self.removed],
            )
            .await;
        for who in [&self.member, &self.admin, &self.removed] {
            let (status, body) = s
                .post("/chat/join-room/", &who.access, json!({"room_id": id}))
                .await;
            assert_eq!(status, 200, "join {name}: {body}");
        }
        let (status, body) = s
            .post(
                &format!("/chat/rooms/{id}/moderate/"),
                &self.creator.access,
                json!({"user_id": self.admin.id, "action": "set_role", "role": "admin"}),
            )
            .await;
        assert_eq!(status, 200, "promote in {name}: {body}");
        let (message, attachment) = self.send(id, "members only").await;
        let mut leavers = vec![&self.removed];
        if role == Role::LeftCreator {
            leavers.push(&self.creator);
        }
        for who in leavers {
            let (status, body) = s
                .call(
                    "POST",
                    &format!("/chat/rooms/{id}/leave/"),
                    Some(&who.access),
                    None,
                )
                .await;
            assert_eq!(status, 204, "leave {name}: {body}");
        }
        Target {
            id,
            name,
            message,
            attachment,
        }
    }

    /// The creator sends `body` to `room` with a file; returns the
    /// message's id and the attachment's.
    async fn send(&self, room: i64, body: &str) -> (i64, i64) {
        let (status, uploaded) = self
            .s
            .upload(&self.creator.access, "minutes.txt", b"the minutes".to_vec())
            .await;
        assert_eq!(status, 201, "upload: {uploaded}");
        let attachment = uploaded["id"].as_i64().expect("attachment id");
        let (status, sent) = self
            .s
            .post(
                "/chat/send/",
                &self.creator.access,
                json!({"room": room, "message": body, "attachments": [attachment]}),
            )
            .await;
        assert_eq!(status, 201, "send: {sent}");
        (sent["id"].as_i64().expect("id"), attachment)
    }

    /// Rooms that do not exist, by id and by name: a plain name, and the
    /// name a conversation between two users without one would have.
    fn ghosts(&self) -> Vec<Target> {
        let (lo, hi) = sorted(self.stranger.id, self.guest.id);
        vec![
            Target {
                id: 999_999_999,
                name: "no-such-room".to_owned(),
                message: 999_999_999,
                attachment: 999_999_999,
            },
            Target {
                id: 999_999_998,
                name: format!("direct/{lo}/{hi}"),
                message: 999_999_998,
                attachment: 999_999_998,
            },
        ]
    }

    async fn http(&self, user: &TestUser, call: Call, t: &Target) -> Answer {
        let s = &self.s;
        let id = t.id;
        let by = |by: By| match by {
            By::Id => json!(id),
            By::Name => json!(t.name),
        };
        let (status, body) = match call {
            Call::Detail => s.get(&format!("/chat/rooms/{id}/"), &user.access).await,
            Call::Join => {
                s.post("/chat/join-room/", &user.access, json!({"room_id": id}))
                    .await
            }
            Call::Invite => {
                s.post(
                    &format!("/chat/rooms/{id}/invite/"),
                    &user.access,
                    json!({"user_ids": [self.guest.id]}),
                )
                .await
            }
            Call::Leave => {
                s.call(
                    "POST",
                    &format!("/chat/rooms/{id}/leave/"),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Delete => {
                s.call(
                    "DELETE",
                    &format!("/chat/rooms/{id}/"),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Conversation => {
                s.get(&format!("/api/chats/conversations/{id}/"), &user.access)
                    .await
            }
            Call::History(b) => {
                let room = match b {
                    By::Id => id.to_string(),
                    By::Name => t.name.replace('/', "%2F"),
                };
                s.get(&format!("/chat/history/?room={room}"), &user.access)
                    .await
            }
            Call::Send(b) => {
                s.post(
                    "/chat/send/",
                    &user.access,
                    json!({"room": by(b), "message": "knock knock"}),
                )
                .await
            }
            Call::EditMessage => {
                s.call(
                    "PATCH",
                    &format!("/chat/messages/{}/", t.message),
                    Some(&user.access),
                    Some(json!({"body": "edited by the matrix"})),
                )
                .await
            }
            Call::DeleteMessage => {
                s.call(
                    "DELETE",
                    &format!("/chat/messages/{}/", t.message),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Pin => {
                s.call(
                    "PUT",
                    &format!("/chat/messages/{}/pin/", t.message),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Pins => {
                s.get(&format!("/chat/rooms/{id}/pins/"), &user.access)
                    .await
            }
            Call::Search => {
                // A word of the creator's message ("between us" in a
                // conversation, "members only" elsewhere).
                let word = if t.name.starts_with("direct/") {
                    "between"
                } else {
                    "members"
                };
                s.get(&format!("/chat/search/?q={word}&room={id}"), &user.access)
                    .await
            }
            Call::Thread => {
                s.get(
                    &format!("/chat/messages/{}/thread/", t.message),
                    &user.access,
                )
                .await
            }
            Call::Reply => {
                s.post(
                    "/chat/send/",
                    &user.access,
                    json!({"room": id, "message": "a reply", "reply_to": t.message,
                           "thread_root": t.message, "mentions": [user.id]}),
                )
                .await
            }
            Call::Unpin => {
                s.call(
                    "DELETE",
                    &format!("/chat/messages/{}/pin/", t.message),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Unreact => {
                s.call(
                    "DELETE",
                    &format!("/chat/messages/{}/reactions/%F0%9F%91%8D/", t.message),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::React => {
                s.call(
                    "PUT",
                    &format!("/chat/messages/{}/reactions/%F0%9F%91%8D/", t.message),
                    Some(&user.access),
                    None,
                )
                .await
            }
            Call::Moderate => {
                s.post(
                    &format!("/chat/rooms/{id}/moderate/"),
                    &user.access,
                    json!({"user_id": self.guest.id, "action": "unban"}),
                )
                .await
            }
            Call::Bans => {
                s.get(&format!("/chat/rooms/{id}/bans/"), &user.access)
                    .await
            }
            Call::Online => {
                s.get(&format!("/chat/rooms/{id}/online/"), &user.access)
                    .await
            }
            Call::Attachment => {
                s.get(
                    &format!("/chat/attachments/{}/", t.attachment),
                    &user.access,
                )
                .await
            }
            Call::AttachmentContent => {
                let resp = s
                    .http
                    .get(s.url(&format!("/chat/attachments/{}/content/", t.attachment)))
                    .bearer_auth(&user.access)
                    .send()
                    .await
                    .expect("download");
                let status = resp.status();
                let bytes = resp.bytes().await.expect("body");
                let body = if status.is_success() {
                    // The bytes, as text: the matrix compares answers.
                    json!(String::from_utf8_lossy(&bytes))
                } else {
                    serde_json::from_slice(&bytes).expect("an error body")
                };
                (status, body)
            }
            Call::SendAttachment => {
                let (status, uploaded) = s.upload(&user.access, "mine.txt", b"mine".to_vec()).await;
                assert_eq!(status, 201, "upload: {uploaded}");
                s.post(
                    "/chat/send/",
                    &user.access,
                    json!({"room": id, "message": "with a file", "attachments": [uploaded["id"]]}),
                )
                .await
            }
            Call::Settings => {
                s.call(
                    "PATCH",
                    &format!("/chat/rooms/{id}/"),
                    Some(&user.access),
                    Some(json!({"topic": "set by the matrix"})),
                )
                .await
            }
            _ => unreachable!("{call:?} is a WebSocket call"),
        };
        Answer {
            status: status.as_u16(),
            body,
            frames: Vec::new(),
        }
    }

    async fn ws(&self, user: &TestUser, call: Call, t: &Target) -> Answer {
        let room = |by: By| match by {
            By::Id => json!(t.id),
            By::Name => json!(t.name),
        };
        let frame = match call {
            Call::Bound(b) => {
                let room = match b {
                    By::Id => t.id.to_string(),
                    By::Name => t.name.replace('/', "%2F"),
                };
                let path = format!("/ws/chat/{room}/?token={}", user.access);
                return match self.s.ws_raw(&path).await {
                    Ok(socket) => {
                        socket.close().await;
                        Answer {
                            status: 101,
                            body: Value::Null,
                            frames: Vec::new(),
                        }
                    }
                    Err((status, body)) => Answer {
                        status,
                        body,
                        frames: Vec::new(),
                    },
                };
            }
            Call::Subscribe(b) => json!({"type": "subscribe", "room": room(b)}),
            Call::SubscribeAfterSeq(b) => {
                json!({"type": "subscribe", "room": room(b), "after_seq": 0})
            }
            Call::Unsubscribe(b) => json!({"type": "unsubscribe", "room": room(b)}),
            Call::SendFrame(b) => {
                json!({"type": "send", "room": room(b), "body": "knock knock", "client_id": format!("k{}", self.cell.get())})
            }
            Call::Read(b) => json!({"type": "read", "room": room(b), "seq": 1}),
            Call::Typing(b) => json!({"type": "typing", "room": room(b)}),
            Call::EditFrame => {
                json!({"type": "edit", "message_id": t.message, "body": "edited by the matrix"})
            }
            Call::DeleteFrame => json!({"type": "delete", "message_id": t.message}),
            Call::ReactFrame => json!({"type": "react", "message_id": t.message, "key": "👍"}),
            Call::PinFrame => json!({"type": "pin", "message_id": t.message}),
            Call::UnreactFrame => {
                json!({"type": "unreact", "message_id": t.message, "key": "👍"})
            }
            Call::UnpinFrame => json!({"type": "unpin", "message_id": t.message}),
            Call::SettingsFrame => {
                json!({"type": "update_room", "room": t.id, "topic": "set by the matrix"})
            }
            Call::ModerateFrame => {
                json!({"type": "moderate", "room": t.id, "user_id": self.guest.id, "action": "unban"})
            }
            _ => unreachable!("{call:?} is an HTTP call"),
        };
        let mut socket = self.s.ws("/ws/", user).await;
        socket.send(frame).await;
        let frames = until_pong(&mut socket).await;
        socket.close().await;
        let errors: Vec<&Value> = frames.iter().filter(|f| f["type"] == "error").collect();
        match errors.first() {
            Some(e) => Answer {
                status: frame_status(e["code"].as_str().unwrap_or("")),
                body: Value::Array(frames.clone()),
                frames: Vec::new(),
            },
            None => Answer {
                status: 200,
                body: Value::Null,
                frames: frames
                    .iter()
                    .map(|f| f["type"].as_str().unwrap_or("").to_owned())
                    .collect(),
            },
        }
    }

    async fn answer(&self, user: &TestUser, call: Call, t: &Target) -> Answer {
        if HTTP_CALLS.contains(&call) {
            self.http(user, call, t).await
        } else {
            self.ws(user, call, t).await
        }
    }

    /// Runs every cell of `calls`: a fresh room per cell (calls change
    /// membership), the answer against the table, and for every "not found"
    /// cell the answer for rooms that do not exist.
    async fn run(&self, calls: &[Call]) {
        let mut cells = 0;
        let mut wrong = Vec::new();
        for kind in KINDS {
            for &role in Role::of(kind) {
                for &call in calls {
                    self.cell.set(self.cell.get() + 1);
                    let cell = format!("{kind:?} room, {role:?}, {call:?}");
                    let target = self.room(kind, role).await;
                    let user = self.user(role);
                    let got = self.answer(user, call, &target).await;
                    let want = expected(kind, role, call);
                    if let Err(what) = check(call, want, &got) {
                        wrong.push(format!("{cell}: expected {want:?}, got {what}"));
                    }
                    if want == NOT_FOUND
                        || want == MESSAGE_NOT_FOUND
                        || want == ATTACHMENT_NOT_FOUND
                    {
                        for ghost in self.ghosts() {
                            let missing = self.answer(user, call, &ghost).await;
                            if got != missing {
                                wrong.push(format!(
                                    "{cell}: differs from a room that does not exist: {got:?} here, {missing:?} for {ghost:?}"
                                ));
                            }
                        }
                    }
                    cells += 1;
                }
            }
        }
        assert_eq!(cells, 24 * calls.len(), "every cell ran");
        assert!(
            wrong.is_empty(),
            "{} of {cells} cells are wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

fn sorted(a: i64, b: i64) -> (i64, i64) {
    (a.min(b), a.max(b))
}

/// The HTTP status a frame's error code stands for.
fn frame_status(code: &str) -> u16 {
    match code {
        "invalid_input" => 400,
        "not_member" | "not_authorized" | "not_sender" | "not_moderator" | "insufficient_role" => {
            403
        }
        "room_not_found" | "message_not_found" => 404,
        _ => 0,
    }
}

/// Frames up to the answer to a ping sent now (which proves the server
/// handled everything sent before it).
async fn until_pong(socket: &mut WsClient) -> Vec<Value> {
    socket.send(json!({"type": "ping"})).await;
    let mut frames = Vec::new();
    loop {
        let f = socket.frame().await;
        if f["type"] == "pong" {
            return frames;
        }
        frames.push(f);
    }
}

/// What is wrong with an answer, if anything.
fn check(call: Call, want: Expect, got: &Answer) -> Result<(), String> {
    let ensure = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    match want {
        Expect::Ok(status) => {
            ensure(got.status == status, format!("{} {}", got.status, got.body))?;
            let frames: Vec<&str> = got.frames.iter().map(String::as_str).collect();
            let frames_ok = match call {
                Call::Subscribe(_) => frames == ["subscribed"],
                // The creator's message, replayed before `subscribed`.
                Call::SubscribeAfterSeq(_) => frames == ["message", "subscribed"],
                Call::SendFrame(_) => frames == ["ack"],
                // Not subscribed: the change's event goes to the room's
                // sockets, and this one is not among them.
                Call::Unsubscribe(_)
                | Call::Read(_)
                | Call::Typing(_)
                | Call::EditFrame
                | Call::DeleteFrame
                | Call::ReactFrame
                | Call::UnreactFrame
                | Call::PinFrame
                | Call::UnpinFrame => frames.is_empty(),
                _ => true,
            };
            ensure(frames_ok, format!("frames {frames:?}"))?;
            match call {
                // The creator's message, after the joins (timeline events
                // that history leaves out).
                Call::History(_) => ensure(
                    ["members only", "between us"]
                        .iter()
                        .any(|b| got.body["chat_history"][0]["body"] == *b)
                        && got.body["chat_history"].as_array().map(Vec::len) == Some(1),
                    format!("history {}", got.body),
                ),
                Call::Online => ensure(
                    got.body["room"].is_i64() && got.body["users"].is_array(),
                    format!("online {}", got.body),
                ),
                Call::Attachment => ensure(
                    got.body["name"] == "minutes.txt"
                        && got.body["content_type"] == "text/plain; charset=utf-8"
                        && got.body["message_id"].is_i64(),
                    format!("attachment {}", got.body),
                ),
                Call::AttachmentContent => {
                    ensure(got.body == "the minutes", format!("content {}", got.body))
                }
                Call::Detail => ensure(
                    got.body["members"].is_array(),
                    format!("detail {}", got.body),
                ),
                Call::EditMessage => ensure(
                    got.body["body"] == "edited by the matrix" && got.body["version"] == 1,
                    format!("edited {}", got.body),
                ),
                Call::DeleteMessage => ensure(
                    got.body["deleted"] == true && got.body["body"] == "",
                    format!("deleted {}", got.body),
                ),
                Call::Pin => ensure(got.body["pinned"] == true, format!("pinned {}", got.body)),
                // Nothing was there to take back: the message as it was.
                Call::Unpin => ensure(
                    got.body.get("pinned").is_none() && got.body["id"].is_i64(),
                    format!("unpinned {}", got.body),
                ),
                Call::Unreact => ensure(
                    got.body.get("reactions").is_none() && got.body["id"].is_i64(),
                    format!("unreacted {}", got.body),
                ),
                Call::Search => ensure(
                    got.body["hits"].as_array().map(Vec::len) == Some(1),
                    format!("search {}", got.body),
                ),
                Call::Pins => ensure(got.body["pins"] == json!([]), format!("pins {}", got.body)),
                Call::Thread => ensure(
                    ["members only", "between us"]
                        .iter()
                        .any(|b| got.body["root"]["body"] == *b)
                        && got.body["replies"] == json!([]),
                    format!("thread {}", got.body),
                ),
                Call::React => ensure(
                    got.body["reactions"] == json!([{"key": "👍", "count": 1, "me": true}]),
                    format!("reacted {}", got.body),
                ),
                _ => Ok(()),
            }
        }
        Expect::Err(status, code) => {
            ensure(got.status == status, format!("{} {}", got.status, got.body))?;
            // An HTTP body, or the error frame, alone, of a WebSocket call.
            let body = match &got.body {
                Value::Array(frames) => {
                    ensure(
                        frames.len() == 1,
                        format!("more than the error: {frames:?}"),
                    )?;
                    frames[0].clone()
                }
                other => other.clone(),
            };
            ensure(body["code"] == code, format!("{body}"))?;
            ensure(body["error"].is_string(), format!("{body}"))?;
            match sentence(call, code) {
                Some(text) => ensure(body["error"] == text, format!("{body}")),
                None => Ok(()),
            }
        }
    }
}

async fn http_matrix(backend: Backend) {
    World::new(backend).await.run(&HTTP_CALLS).await;
}

async fn ws_matrix(backend: Backend) {
    World::new(backend).await.run(&WS_CALLS).await;
}

/// Sockets of refused roles (and of a member who then leaves) never receive
/// a room's messages, read marks, typing or presence, while a member's
/// socket sees each of them.
async fn refused_sockets_hear_nothing(backend: Backend) {
    let w = World::new(backend).await;
    let s = &w.s;
    for kind in KINDS {
        let t = w.room(kind, Role::Member).await;
        let mut deaf: Vec<(String, WsClient)> = Vec::new();
        // A member who leaves: their /ws/ socket drops the room, their
        // bound socket is closed.
        if kind != Kind::Direct {
            let (status, _) = s
                .post(
                    &format!("/chat/rooms/{}/invite/", t.id),
                    &w.creator.access,
                    json!({"user_ids": [w.removed.id]}),
                )
                .await;
            assert_eq!(status, 200);
            let (status, _) = s
                .post(
                    "/chat/join-room/",
                    &w.removed.access,
                    json!({"room_id": t.id}),
                )
                .await;
            assert_eq!(status, 200);
            let mut multi = s.ws("/ws/", &w.removed).await;
            multi.subscribe(json!(t.id), None).await;
            let mut bound = s.ws(&format!("/ws/chat/{}/", t.id), &w.removed).await;
            bound.expect("subscribed").await;
            let (status, _) = s
                .call(
                    "POST",
                    &format!("/chat/rooms/{}/leave/", t.id),
                    Some(&w.removed.access),
                    None,
                )
                .await;
            assert_eq!(status, 204);
            assert_eq!(
                bound.close_code().await,
                Some(1000),
                "{kind:?}: a bound socket of a member who left is closed"
            );
            // Past this barrier the socket has dropped the room (and its
            // presence went out before the member below subscribes).
            let heard = until_pong(&mut multi).await;
            assert!(heard.is_empty(), "{kind:?}: leaving is silent: {heard:?}");
            deaf.push((format!("{kind:?}: removed member's /ws/"), multi));
        }
        // Refused subscribers: they try by id and by name, and stay.
        for &role in Role::of(kind) {
            if matches!(expected(kind, role, Call::Subscribe(By::Id)), Expect::Ok(_))
                || role == Role::LeftCreator
            {
                continue;
            }
            let user = w.user(role);
            let mut socket = s.ws("/ws/", user).await;
            for room in [json!(t.id), json!(t.name)] {
                socket
                    .send(json!({"type": "subscribe", "room": room}))
                    .await;
                let refusal = socket.expect("error").await;
                assert!(
                    ["room_not_found", "not_member"]
                        .contains(&refusal["code"].as_str().unwrap_or("")),
                    "{kind:?}, {role:?}: {refusal}"
                );
            }
            deaf.push((format!("{kind:?}: {role:?} refused on /ws/"), socket));
        }
        // A stranger's own conversations with each participant.
        for other in [&w.creator, &w.member] {
            let mut socket = s.ws(&format!("/ws/users/{}/", other.id), &w.stranger).await;
            let sub = socket.expect("subscribed").await;
            assert_ne!(sub["room"], t.id, "a different conversation");
            deaf.push((
                format!("{kind:?}: stranger on /ws/users/{}/", other.id),
                socket,
            ));
        }
        // While a participant's /ws/users/{other}/ is bound to this one.
        if kind == Kind::Direct {
            let mut socket = s
                .ws(&format!("/ws/users/{}/", w.creator.id), &w.member)
                .await;
            assert_eq!(socket.expect("subscribed").await["room"], t.id);
            socket.close().await;
        }

        // The member watches while the creator comes online, writes, types
        // and leaves, and the member's other socket reads.
        let mut watch = s.ws("/ws/", &w.member).await;
        watch.subscribe(json!(t.id), None).await;
        let mut creator = s.ws("/ws/", &w.creator).await;
        creator.subscribe(json!(t.id), None).await;
        let online = watch.expect("presence").await;
        assert_eq!(online["status"], "online", "{online}");
        creator
            .send(json!({"type": "send", "room": t.id, "body": "secret plans", "client_id": format!("{kind:?}")}))
            .await;
        let ack = creator.expect("ack").await;
        let seq = ack["message"]["seq"].as_i64().expect("seq");
        assert_eq!(
            watch.expect("message").await["message"]["body"],
            "secret plans"
        );
        let mut reader = s.ws("/ws/", &w.member).await;
        reader
            .send(json!({"type": "read", "room": t.id, "seq": seq}))
            .await;
        assert_eq!(watch.expect("read").await["seq"], seq);
        creator.send(json!({"type": "typing", "room": t.id})).await;
        watch.expect("typing").await;
        creator.close().await;
        let offline = watch.expect("presence").await;
        assert_eq!(offline["status"], "offline", "{offline}");

        // Every event was delivered to the member: anything meant for the
        // deaf sockets is queued before their pong.
        for (who, mut socket) in deaf {
            let heard = until_pong(&mut socket).await;
            assert!(heard.is_empty(), "{who} heard {heard:?}");
            socket.close().await;
        }
        reader.close().await;
        watch.close().await;
    }
}

/// The room list, the conversation list and the unread total show a room
/// only to those the contract lets see it.
async fn lists(backend: Backend) {
    let w = World::new(backend).await;
    let s = &w.s;
    for kind in KINDS {
        for &role in Role::of(kind) {
            let cell = format!("{kind:?} room, {role:?}");
            let t = w.room(kind, role).await;
            let user = w.user(role);
            let unread = || async {
                let (status, body) = s.get("/api/chats/unread-count/", &user.access).await;
                assert_eq!(status, 200, "{body}");
                body["unread_count"].as_i64().expect("unread_count")
            };
            let before = unread().await;
            // From someone else than a member asking (sending moves one's
            // own read mark): each member has exactly one more unread.
            let sender = if role == Role::Member {
                &w.creator
            } else {
                &w.member
            };
            s.send(sender, t.id, "news").await;
            let after = unread().await;
            let counts = standing(kind, role) == Standing::Member;
            assert_eq!(after - before, i64::from(counts), "{cell}: unread total");

            let (status, rooms) = s.get("/chat/rooms/", &user.access).await;
            assert_eq!(status, 200);
            let listed: Vec<&Value> = rooms
                .as_array()
                .expect("array")
                .iter()
                .filter(|r| r["id"] == t.id)
                .collect();
            let (status, convs) = s.get("/api/chats/conversations/", &user.access).await;
            assert_eq!(status, 200);
            let conversations = convs
                .as_array()
                .expect("array")
                .iter()
                .filter(|c| c["id"] == t.id)
                .count();
            let st = standing(kind, role);
            match (kind, st) {
                (Kind::Direct, Standing::Member) => {
                    assert!(
                        listed.is_empty(),
                        "{cell}: conversations have their own list"
                    );
                    assert_eq!(conversations, 1, "{cell}");
                }
                (_, Standing::Member) => {
                    assert_eq!(listed.len(), 1, "{cell}");
                    assert_eq!(listed[0]["membership"], "member", "{cell}");
                    assert_eq!(listed[0]["last_message"]["body"], "news", "{cell}");
                    assert_eq!(conversations, 0, "{cell}");
                }
                (_, Standing::Invited) => {
                    assert_eq!(listed.len(), 1, "{cell}");
                    assert_eq!(listed[0]["membership"], "invited", "{cell}");
                    assert_eq!(listed[0]["last_message"], Value::Null, "{cell}: no content");
                    assert_eq!(listed[0]["unread_count"], 0, "{cell}");
                    assert_eq!(conversations, 0, "{cell}");
                }
                (_, Standing::Outsider | Standing::Hidden) => {
                    assert!(listed.is_empty(), "{cell}: {listed:?}");
                    assert_eq!(conversations, 0, "{cell}");
                }
            }
        }
    }
}

/// Every server call with every credential but a live key: 401; with the
/// live key: done. And an API key on user calls and sockets: 401.
async fn server_calls_and_api_keys(backend: Backend) {
    let s = TestServer::start(backend).await;
    let chat = s.server().chat().clone();
    let (live, _) = chat.create_api_key("live").await.expect("key");
    let (revoked, _) = chat.create_api_key("revoked").await.expect("key");
    assert!(
        chat.storage()
            .revoke_api_key("revoked", chat_core::Timestamp::now())
            .await
            .expect("revoke")
    );
    let user = s.user("someone").await;
    let (status, _) = s
        .call(
            "PUT",
            "/server/users/owner/",
            Some(&live),
            Some(json!({"display_name": "Owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, room) = s
        .call(
            "POST",
            "/server/rooms/",
            Some(&live),
            Some(json!({"name": "server-room", "owner": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let id = room["id"].as_i64().expect("id");
    let made_up = format!("chat_key_{}", "0".repeat(64));
    let calls: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
        (
            "PUT",
            "/server/users/someone-else/".into(),
            Some(json!({})),
            StatusCode::OK,
        ),
        (
            "POST",
            "/server/users/owner/tokens/".into(),
            None,
            StatusCode::CREATED,
        ),
        (
            "POST",
            "/server/rooms/".into(),
            Some(json!({"name": "another", "owner": "owner"})),
            StatusCode::CREATED,
        ),
        (
            "PUT",
            format!("/server/rooms/{id}/members/"),
            Some(json!({"members": []})),
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/server/rooms/{id}/members/"),
            Some(json!({"add": ["someone-else"]})),
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/server/rooms/{id}/messages/"),
            Some(json!({"user": "owner", "message": "hello"})),
            StatusCode::CREATED,
        ),
        (
            "GET",
            format!("/server/rooms/{id}/events/"),
            None,
            StatusCode::OK,
        ),
    ];
    let refused: [(&str, Option<&str>); 5] = [
        ("no credential", None),
        ("a user's access token", Some(&user.access)),
        ("a made-up key", Some(&made_up)),
        ("a revoked key", Some(&revoked)),
        ("a user's refresh token", Some(&user.refresh)),
    ];
    for (method, path, body, done) in &calls {
        for (who, credential) in refused {
            let (status, answer) = s.call(method, path, credential, body.clone()).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("unauthorized")),
                "{method} {path} with {who}: {answer}"
            );
        }
        let (status, answer) = s.call(method, path, Some(&live), body.clone()).await;
        assert_eq!(status, *done, "{method} {path} with the live key: {answer}");
    }

    for (method, path, body) in [
        ("GET", "/api/users/me/".to_owned(), None),
        ("GET", "/chat/rooms/".to_owned(), None),
        ("GET", format!("/chat/rooms/{id}/"), None),
        (
            "POST",
            "/chat/send/".to_owned(),
            Some(json!({"room": id, "message": "as a key"})),
        ),
        ("POST", "/api/users/logout-all/".to_owned(), None),
        ("GET", "/api/push/devices/".to_owned(), None),
        (
            "POST",
            "/api/push/devices/".to_owned(),
            Some(json!({"platform": "fcm", "token": "t", "app_id": "a"})),
        ),
    ] {
        let (status, answer) = s.call(method, &path, Some(&live), body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{method} {path} with an API key: {answer}"
        );
    }
    let refused = s.ws_raw(&format!("/ws/?token={live}")).await;
    assert!(matches!(refused, Err((401, _))), "a socket with an API key");
}
