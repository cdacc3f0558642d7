//! The whole API, happy path.

use chat_client::chat_core::room::Membership;
use chat_client::chat_core::timeline::{MemberChange, TimelineEvent};
use chat_client::{CreateRoomRequest, HistoryQuery, RoomRef, RoomType};

use crate::support::{TestServer, password};

#[tokio::test]
async fn users_and_tokens() {
    let server = TestServer::start().await;
    let (alice, alice_user) = server.user("alice").await;
    let (_bob, bob_user) = server.user("bob").await;

    let me = alice.me().await.expect("me");
    assert_eq!(me.id, alice_user.id);
    assert_eq!(me.email.as_deref(), Some("alice@example.com"));
    assert_eq!(me.display_name, "alice display");

    let all = alice.users(None, None).await.expect("users");
    let names: Vec<_> = all.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(all[1].email, None, "others' emails are hidden");
    let page = alice
        .users(Some(alice_user.id), Some(1))
        .await
        .expect("second page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, bob_user.id);

    // Login by email gives a working session too.
    let by_email = server.client();
    by_email
        .login_with_email("bob@example.com", &password("bob"))
        .await
        .expect("login by email");
    assert_eq!(by_email.me().await.expect("me").id, bob_user.id);

    // An explicit refresh replaces both tokens.
    let before = alice.tokens().expect("logged in");
    let after = alice.refresh().await.expect("refresh");
    assert_ne!(before.refresh, after.refresh);
    assert_eq!(alice.tokens(), Some(after));
    alice.me().await.expect("the refreshed session works");

    alice.logout().await.expect("logout");
    assert!(alice.tokens().is_none());
    alice.logout().await.expect("logging out twice is a no-op");
}

#[tokio::test]
async fn rooms_messages_and_conversations() {
    let server = TestServer::start().await;
    let (alice, alice_user) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let (carol, carol_user) = server.user("carol").await;

    // A public room: created, joined by bob.
    let lobby = alice
        .create_room(CreateRoomRequest {
            name: Some("lobby".into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create lobby");
    assert_eq!(lobby.kind, RoomType::Public);
    assert_eq!(lobby.creator, "alice");
    assert_eq!(lobby.members, ["alice"]);
    let joined = bob.join_room(lobby.id).await.expect("join a public room");
    assert_eq!(joined.id, lobby.id);
    assert!(joined.members.contains(&"bob".to_owned()));

    // A private room with an invitation at creation and one later.
    let den = alice
        .create_room(CreateRoomRequest {
            name: Some("den".into()),
            invited_users: vec![bob_user.id],
            ..Default::default()
        })
        .await
        .expect("create den");
    assert_eq!(den.kind, RoomType::Private);
    assert_eq!(den.invited_users, ["bob"]);
    let den = alice
        .invite(den.id, &[carol_user.id])
        .await
        .expect("invite carol");
    assert!(den.invited_users.contains(&"carol".to_owned()));
    let carol_rooms = carol.rooms().await.expect("carol's rooms");
    assert_eq!(carol_rooms.len(), 1);
    assert_eq!(carol_rooms[0].membership, Membership::Invited);
    carol
        .leave_room(den.id)
        .await
        .expect("decline the invitation");
    assert!(carol.rooms().await.expect("carol's rooms").is_empty());
    bob.join_room(den.id).await.expect("join when invited");
    assert_eq!(
        alice.room(den.id).await.expect("room detail").members,
        ["alice", "bob"]
    );

    // Messages: by id and by name, idempotent with a client_id.
    let first = alice
        .send(lobby.id, "hello", None)
        .await
        .expect("send by id");
    // Bob's join is the lobby's first timeline event.
    assert_eq!(first.seq, 2);
    assert_eq!(first.message, "Message sent!");
    let second = bob
        .send("lobby", "hi alice", Some("bob-1".into()))
        .await
        .expect("send by name");
    let again = bob
        .send("lobby", "hi alice", Some("bob-1".into()))
        .await
        .expect("repeat the same client_id");
    assert_eq!((again.id, again.seq), (second.id, second.seq));
    for i in 3..=5 {
        alice
            .send(lobby.id, &format!("message {i}"), None)
            .await
            .expect("send");
    }

    let newest = bob
        .history(lobby.id, HistoryQuery::new().limit(2))
        .await
        .expect("newest page");
    let seqs: Vec<_> = newest.chat_history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [5, 6]);
    assert!(newest.has_more);
    let older = bob
        .history(
            RoomRef::from("lobby"),
            HistoryQuery::new().before(5).limit(10),
        )
        .await
        .expect("older page");
    let seqs: Vec<_> = older.chat_history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert!(!older.has_more);
    assert_eq!(older.chat_history[1].client_id.as_deref(), Some("bob-1"));
    // A client_id is its sender's: bob does not see alice's, alice does
    // (one was generated, as none was given).
    assert_eq!(older.chat_history[0].client_id, None);
    let hers = alice
        .history(
            RoomRef::from("lobby"),
            HistoryQuery::new().before(3).limit(1),
        )
        .await
        .expect("alice's page");
    assert!(
        hers.chat_history[0].client_id.is_some(),
        "a client_id is generated when none is given"
    );
    let after = bob
        .history(lobby.id, HistoryQuery::new().after(4))
        .await
        .expect("catch-up page");
    let seqs: Vec<_> = after.chat_history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [5, 6]);
    // The timeline has the join too, in its place.
    let timeline = bob
        .timeline(lobby.id, HistoryQuery::new().after(0).limit(3))
        .await
        .expect("timeline page");
    assert!(matches!(
        &timeline.events[0],
        TimelineEvent::Member(m) if m.user == bob_user.id && m.change == MemberChange::Joined
    ));
    assert!(matches!(&timeline.events[1], TimelineEvent::Message { message } if message.seq == 2));
    assert!(timeline.has_more);

    // Unread counts: sending moved bob's read mark to his own message (seq
    // 3), so alice's three after it are unread.
    assert_eq!(bob.unread_count().await.expect("unread"), 3);
    let bob_lobby = bob
        .rooms()
        .await
        .expect("bob's rooms")
        .into_iter()
        .find(|r| r.id == lobby.id)
        .expect("lobby listed");
    assert_eq!(bob_lobby.unread_count, 3);
    assert_eq!(
        bob_lobby.last_message.expect("last message").body,
        "message 5"
    );

    // Conversations: created once, then found.
    let conv = alice
        .create_conversation(carol_user.id)
        .await
        .expect("create conversation");
    assert!(conv.created);
    assert_eq!(conv.other_user.id, carol_user.id);
    let same = carol
        .create_conversation(alice_user.id)
        .await
        .expect("get conversation");
    assert!(!same.created);
    assert_eq!(same.id, conv.id);
    for i in 1..=3 {
        alice
            .send(conv.id, &format!("dm {i}"), None)
            .await
            .expect("send to the conversation");
    }
    let list = carol.conversations().await.expect("conversations");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].unread_count, 3);
    assert_eq!(list[0].other_user.id, alice_user.id);
    let detail = carol
        .conversation(conv.id, None, Some(2))
        .await
        .expect("conversation detail");
    let bodies: Vec<_> = detail.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["dm 2", "dm 3"]);
    let earlier = carol
        .conversation(conv.id, Some(2), None)
        .await
        .expect("earlier page");
    let bodies: Vec<_> = earlier.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["dm 1"]);

    // Leaving and deleting.
    bob.leave_room(lobby.id).await.expect("leave");
    assert!(
        bob.rooms()
            .await
            .expect("bob's rooms")
            .iter()
            .all(|r| r.id != lobby.id)
    );
    alice
        .delete_room(lobby.id)
        .await
        .expect("delete by creator");
    let gone = alice.room(lobby.id).await.expect_err("deleted room");
    assert_eq!(gone.kind(), chat_client::ErrorKind::NotFound);
}

#[tokio::test]
async fn moderation() {
    use chat_client::{ErrorCode, ModerateRequest, ModerationAction, Role};

    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let (carol, carol_user) = server.user("carol").await;
    let lobby = alice
        .create_room(CreateRoomRequest {
            name: Some("lobby".into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create lobby");
    bob.join_room(lobby.id).await.expect("join");
    carol.join_room(lobby.id).await.expect("join");

    let promote = ModerateRequest {
        role: Some(Role::Admin),
        ..ModerateRequest::new(bob_user.id, ModerationAction::SetRole)
    };
    let event = alice
        .moderate(lobby.id, &promote)
        .await
        .expect("promote")
        .expect("an event");
    assert_eq!(
        (event.change, event.role),
        (MemberChange::RoleChanged, Some(Role::Admin))
    );
    let ban = ModerateRequest {
        reason: Some("spam".to_owned()),
        ..ModerateRequest::new(carol_user.id, ModerationAction::Ban)
    };
    bob.moderate(lobby.id, &ban).await.expect("ban");
    let err = carol.join_room(lobby.id).await.expect_err("banned");
    assert_eq!(err.code(), Some(ErrorCode::Banned));
    let bans = bob.bans(lobby.id).await.expect("bans");
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].reason.as_deref(), Some("spam"));
    let err = carol
        .moderate(
            lobby.id,
            &ModerateRequest::new(bob_user.id, ModerationAction::Kick),
        )
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    let unban = ModerateRequest::new(carol_user.id, ModerationAction::Unban);
    assert!(
        bob.moderate(lobby.id, &unban)
            .await
            .expect("unban")
            .is_some()
    );
    assert!(
        bob.moderate(lobby.id, &unban)
            .await
            .expect("again")
            .is_none()
    );
    assert_eq!(alice.room(lobby.id).await.expect("detail").admins, ["bob"]);

    let settings = chat_client::RoomSettings {
        topic: Some("news".to_owned()),
        ..Default::default()
    };
    let room = bob
        .update_room(lobby.id, &settings)
        .await
        .expect("settings");
    assert_eq!(room.topic.as_deref(), Some("news"));
    let page = carol
        .directory(Some("LOB"), None, None)
        .await
        .expect("directory");
    assert_eq!(page.rooms.len(), 1);
    assert_eq!(page.rooms[0].topic.as_deref(), Some("news"));

    alice.block(carol_user.id).await.expect("block");
    assert_eq!(alice.blocked().await.expect("blocked")[0].id, carol_user.id);
    alice.unblock(carol_user.id).await.expect("unblock");
    assert!(alice.blocked().await.expect("blocked").is_empty());
}

#[tokio::test]
async fn reports_and_logging_out_everywhere() {
    use chat_client::{ErrorCode, ReportRequest};

    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (_bob, bob_user) = server.user("bob").await;
    let report = ReportRequest {
        message_id: None,
        user_id: Some(bob_user.id),
        reason: "spam".to_owned(),
    };
    let filed = alice.report(&report).await.expect("report");
    assert_eq!(filed.user_id, bob_user.id);
    let err = alice
        .admin_reports(&Default::default())
        .await
        .expect_err("not an admin");
    assert_eq!(err.code(), Some(ErrorCode::NotAdmin));
    alice.logout_everywhere().await.expect("logout everywhere");
    let err = alice.me().await.expect_err("every token revoked");
    // The access token is refused, and so is the refresh the SDK tries.
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{err:?}");
}

/// Push devices: registered, listed without their tokens, moved with their
/// token to whoever registers it next, unregistered by their owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_devices() {
    let server = TestServer::start().await;
    let (ann, _) = server.user("ann").await;
    let (bob, _) = server.user("bob").await;
    let phone = ann
        .register_device("fcm", "token-1", "com.example.chat")
        .await
        .expect("register");
    assert_eq!(
        (phone.platform.as_str(), phone.app_id.as_str()),
        ("fcm", "com.example.chat")
    );
    assert_eq!(ann.devices().await.expect("devices"), vec![phone.clone()]);
    let moved = bob
        .register_device("fcm", "token-1", "com.example.chat")
        .await
        .expect("the same token, another user");
    assert_eq!(moved.id, phone.id);
    assert!(ann.devices().await.expect("devices").is_empty());
    let not_hers = ann.unregister_device(moved.id).await.expect_err("bob's");
    assert_eq!(not_hers.kind(), chat_client::ErrorKind::NotFound);
    bob.unregister_device(moved.id).await.expect("unregister");
    assert!(bob.devices().await.expect("devices").is_empty());
}
