//! One-to-one conversations: create-or-get (also racing from both sides),
//! list, detail, the bound `/ws/users/{id}/` socket, unread totals, and
//! strangers who must learn nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    create_or_get_and_its_errors,
    concurrent_create_from_both_sides_makes_one,
    list_and_detail,
    strangers_learn_nothing,
    user_socket_chat_and_read_state,
    unread_count_over_rooms_and_conversations,
);

async fn create_or_get_and_its_errors(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;

    let (status, c) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c["created"], true);
    assert_eq!(
        c["other_user"],
        json!({"id": bob.id, "name": "bob", "email": "bob@example.com"})
    );
    assert!(c["created_at"].is_string());
    let id = c["id"].clone();

    let (status, again) = s
        .post(
            "/api/chats/conversations/create",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(
        (status, again["created"].clone(), again["id"].clone()),
        (StatusCode::OK, json!(false), id.clone())
    );
    let (status, theirs) = s
        .post(
            "/api/chats/conversations/create/",
            &bob.access,
            json!({"user_id": ann.id}),
        )
        .await;
    assert_eq!((status, theirs["id"].clone()), (StatusCode::OK, id));
    assert_eq!(theirs["other_user"]["name"], "ann");

    let (status, err) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": ann.id}),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, err) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": 9999}),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
    let (status, err) = s
        .post("/api/chats/conversations/create/", &ann.access, json!({}))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );

    // A conversation is not a group room: not in /chat/rooms/, cannot be
    // left, invited to or joined by anyone else.
    let (_, rooms) = s.get("/chat/rooms/", &ann.access).await;
    assert_eq!(rooms, json!([]));
}

async fn concurrent_create_from_both_sides_makes_one(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let (token, other) = if i % 2 == 0 {
            (ann.access.clone(), bob.id)
        } else {
            (bob.access.clone(), ann.id)
        };
        let url = s.url("/api/chats/conversations/create/");
        calls.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"user_id": other}))
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body: Value = resp.json().await.expect("json");
            (status, body)
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for c in calls {
        let (status, body) = c.await.expect("task");
        if status == StatusCode::CREATED {
            created += 1;
            assert_eq!(body["created"], true);
        } else {
            assert_eq!(
                (status, body["created"].clone()),
                (StatusCode::OK, json!(false)),
                "{body}"
            );
        }
        ids.push(body["id"].as_i64().expect("id"));
    }
    assert_eq!(created, 1, "exactly one call created it");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one conversation: {ids:?}"
    );
}

async fn list_and_detail(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;
    let open = |token: &str, other: i64| {
        let s = &s;
        let token = token.to_owned();
        async move {
            let (_, c) = s
                .post(
                    "/api/chats/conversations/create/",
                    &token,
                    json!({"user_id": other}),
                )
                .await;
            c["id"].as_i64().expect("id")
        }
    };
    let with_bob = open(&ann.access, bob.id).await;
    let with_cat = open(&ann.access, cat.id).await;
    s.send(&bob, with_bob, "hello ann").await;
    s.send(&bob, with_bob, "are you there?").await;
    s.send(&cat, with_cat, "hi from cat").await;

    let (status, list) = s.get("/api/chats/conversations/", &ann.access).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], with_cat, "most recent activity first");
    assert_eq!(list[0]["other_user"]["name"], "cat");
    assert_eq!(list[0]["unread_count"], 1);
    assert_eq!(list[1]["id"], with_bob);
    assert_eq!(list[1]["unread_count"], 2);
    assert_eq!(
        list[1]["last_message"],
        json!({"body": "are you there?", "created_at": list[1]["last_message"]["created_at"], "sender_id": bob.id, "is_read": false})
    );

    // Ann answers Bob: Bob's conversation now leads Ann's list, read.
    s.send(&ann, with_bob, "yes!").await;
    let (_, list) = s.get("/api/chats/conversations/", &ann.access).await;
    assert_eq!(list[0]["id"], with_bob);
    assert_eq!(list[0]["unread_count"], 0);
    assert_eq!(
        list[0]["last_message"]["is_read"], false,
        "bob has not read ann's answer"
    );
    let (_, bobs) = s.get("/api/chats/conversations/", &bob.access).await;
    assert_eq!(bobs.as_array().expect("array").len(), 1);
    assert_eq!(bobs[0]["other_user"]["name"], "ann");
    assert_eq!(bobs[0]["unread_count"], 1);

    let (status, detail) = s
        .get(
            &format!("/api/chats/conversations/{with_bob}/"),
            &ann.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["id"], with_bob);
    assert_eq!(detail["other_user"]["id"], bob.id);
    let bodies: Vec<&str> = detail["messages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, vec!["hello ann", "are you there?", "yes!"]);
    assert_eq!(
        detail["messages"][0]["is_read"], true,
        "ann's reply moved her read mark"
    );
    let (_, page) = s
        .get(
            &format!("/api/chats/conversations/{with_bob}/?before=3&limit=1"),
            &ann.access,
        )
        .await;
    assert_eq!(page["messages"][0]["body"], "are you there?");
    let (status, _) = s
        .get(
            &format!("/api/chats/conversations/{with_bob}/?limit=0"),
            &ann.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, none) = s
        .get("/api/chats/conversations/", &s.user("dan").await.access)
        .await;
    assert_eq!(none, json!([]));
}

async fn strangers_learn_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let (_, c) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    let id = c["id"].as_i64().expect("id");
    s.send(&ann, id, "private words").await;
    let group = s.room(&ann, "group", "public", &[]).await;

    let not_found = |status: StatusCode, body: &Value| {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["code"], "room_not_found");
    };
    let (st, b) = s
        .get(&format!("/api/chats/conversations/{id}/"), &eve.access)
        .await;
    not_found(st, &b);
    let (st, b) = s
        .get(
            &format!("/api/chats/conversations/{}/", id + 1000),
            &eve.access,
        )
        .await;
    not_found(st, &b);
    let (st, b) = s
        .get(&format!("/api/chats/conversations/{group}/"), &ann.access)
        .await;
    not_found(st, &b);
    let (st, b) = s
        .get(&format!("/chat/history/?room={id}"), &eve.access)
        .await;
    not_found(st, &b);
    let (st, b) = s
        .post(
            "/chat/send/",
            &eve.access,
            json!({"room": id, "message": "hi"}),
        )
        .await;
    not_found(st, &b);
    let (st, b) = s
        .post("/chat/join-room/", &eve.access, json!({"room_id": id}))
        .await;
    not_found(st, &b);
    let (st, b) = s.get(&format!("/chat/rooms/{id}/"), &eve.access).await;
    not_found(st, &b);
    let (st, _) = s
        .post(
            &format!("/chat/rooms/{id}/invite/"),
            &ann.access,
            json!({"user_ids": [eve.id]}),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "a conversation has exactly two members"
    );
    assert!(matches!(
        s.ws_raw(&format!("/ws/chat/{id}/?token={}", eve.access))
            .await,
        Err((404, _))
    ));
    let mut e = s.ws("/ws/", &eve).await;
    e.send(json!({"type": "subscribe", "room": id})).await;
    assert_eq!(e.expect("error").await["code"], "room_not_found");
}

async fn user_socket_chat_and_read_state(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;

    // Connecting creates the conversation.
    let mut a = s.ws(&format!("/ws/users/{}/", bob.id), &ann).await;
    let sub = a.expect("subscribed").await;
    let id = sub["room"].as_i64().expect("room");
    let (_, list) = s.get("/api/chats/conversations/", &bob.access).await;
    assert_eq!(list[0]["id"], id);

    a.send(json!({"message": "Hello, how are you?"})).await;
    assert_eq!(a.expect("ack").await["message"]["room"], id);
    let (_, count) = s.get("/api/chats/unread-count/", &bob.access).await;
    assert_eq!(count, json!({"unread_count": 1}));

    // Bob's side of the same conversation; connecting reads it.
    let mut b = s.ws(&format!("/ws/users/{}/", ann.id), &bob).await;
    assert_eq!(b.expect("subscribed").await["room"], id);
    assert_eq!(b.expect("presence").await["user"], ann.id, "ann is here");
    assert_eq!(
        a.expect("read").await,
        json!({"type": "read", "room": id, "user": bob.id, "seq": 1})
    );
    assert_eq!(a.expect("presence").await["status"], "online");
    let (_, count) = s.get("/api/chats/unread-count/", &bob.access).await;
    assert_eq!(count, json!({"unread_count": 0}));
    let (_, detail) = s
        .get(&format!("/api/chats/conversations/{id}/"), &ann.access)
        .await;
    assert_eq!(
        detail["messages"][0]["is_read"], true,
        "bob read ann's message"
    );

    b.send(json!({"message": "Fine, thanks!"})).await;
    b.expect("ack").await;
    let m = a.expect("message").await;
    assert_eq!(m["message"]["body"], "Fine, thanks!");
    assert_eq!(m["message"]["sender_name"], "bob");

    // Refusals: yourself, nobody, not a number, no token.
    assert!(matches!(
        s.ws_raw(&format!("/ws/users/{}/?token={}", ann.id, ann.access))
            .await,
        Err((400, _))
    ));
    assert!(matches!(
        s.ws_raw(&format!("/ws/users/9999/?token={}", ann.access))
            .await,
        Err((404, _))
    ));
    assert!(matches!(
        s.ws_raw(&format!("/ws/users/bob/?token={}", ann.access))
            .await,
        Err((404, _))
    ));
    assert!(matches!(
        s.ws_raw(&format!("/ws/users/{}/", bob.id)).await,
        Err((401, _))
    ));
}

async fn unread_count_over_rooms_and_conversations(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let secret = s.room(&ann, "secret", "private", &[&bob]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": lobby}))
        .await;
    let (_, c) = s
        .post(
            "/api/chats/conversations/create/",
            &cat.access,
            json!({"user_id": bob.id}),
        )
        .await;
    let dm = c["id"].as_i64().expect("id");

    for i in 0..3 {
        s.send(&ann, lobby, &format!("l{i}")).await;
    }
    s.send(&ann, secret, "not counted: bob is only invited")
        .await;
    for i in 0..2 {
        s.send(&cat, dm, &format!("d{i}")).await;
    }
    let (status, count) = s.get("/api/chats/unread-count/", &bob.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count, json!({"unread_count": 5}));
    let (_, ann_count) = s.get("/api/chats/unread-count/", &ann.access).await;
    assert_eq!(
        ann_count,
        json!({"unread_count": 0}),
        "own messages are never unread"
    );

    // Bob's join is the lobby's seq 1, l0..l2 are 2..4: reading to 3 reads
    // two messages, and unread counts messages, not seqs.
    let mut b = s.ws("/ws/", &bob).await;
    b.send(json!({"type": "read", "room": lobby, "seq": 3}))
        .await;
    b.expect_quiet().await;
    let (_, count) = s.get("/api/chats/unread-count/", &bob.access).await;
    assert_eq!(count, json!({"unread_count": 3}));
    let (status, _) = s.call("GET", "/api/chats/unread-count/", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
