//! Sending and history over HTTP: validation, idempotency, paging, read
//! state.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    send_validates_and_is_idempotent,
    history_paging_edges,
    read_marks_and_is_read
);

async fn send_validates_and_is_idempotent(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_message_chars = 10).await;
    let ann = s.user("ann").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let secret = s.room(&ann, "secret", "private", &[]).await;

    let (status, sent) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": "lobby", "message": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sent["message"], "Message sent!");
    assert_eq!(sent["seq"], 1);
    assert!(sent["id"].as_i64().expect("id") > 0);

    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "  "}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "Message body cannot be empty", "code": "empty_body"})
    );
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "x".repeat(11)}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body_too_long"))
    );
    // Ten characters of multi-byte text fit.
    let (status, _) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "é".repeat(10)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = s
        .post(
            "/chat/send/",
            &eve.access,
            json!({"room": lobby, "message": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_member"))
    );
    let (status, body) = s
        .post(
            "/chat/send/",
            &eve.access,
            json!({"room": secret, "message": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": "nowhere", "message": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );

    // A retried client_id stores once and answers with the original.
    let first = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "once", "client_id": "c-1"}),
        )
        .await;
    let again = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "once", "client_id": "c-1"}),
        )
        .await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, again);
    let (_, history) = s
        .get(&format!("/chat/history/?room={lobby}"), &ann.access)
        .await;
    let bodies: Vec<&str> = history["chat_history"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, vec!["hi", "éééééééééé", "once"]);
    assert_eq!(history["chat_history"][2]["client_id"], "c-1");
}

async fn history_paging_edges(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let eve = s.user("eve").await;
    let room = s.room(&ann, "log", "private", &[]).await;

    let (status, empty) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"chat_history": [], "has_more": false}));

    for i in 1..=7 {
        assert_eq!(s.send(&ann, room, &format!("m{i}")).await, i);
    }
    let seqs = |v: &Value| -> Vec<i64> {
        v["chat_history"]
            .as_array()
            .expect("array")
            .iter()
            .map(|m| m["seq"].as_i64().expect("seq"))
            .collect()
    };
    let page = |q: String| {
        let s = &s;
        let token = ann.access.clone();
        async move {
            let (status, body) = s
                .get(&format!("/chat/history/?room={room}{q}"), &token)
                .await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            body
        }
    };
    let all = page(String::new()).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(all["has_more"], false);
    let newest = page("&limit=3".into()).await;
    assert_eq!(
        (seqs(&newest), newest["has_more"].clone()),
        (vec![5, 6, 7], json!(true))
    );
    let older = page("&limit=3&before=5".into()).await;
    assert_eq!(
        (seqs(&older), older["has_more"].clone()),
        (vec![2, 3, 4], json!(true))
    );
    let oldest = page("&limit=3&before=2".into()).await;
    assert_eq!(
        (seqs(&oldest), oldest["has_more"].clone()),
        (vec![1], json!(false))
    );
    let after = page("&after=2&limit=3".into()).await;
    assert_eq!(
        (seqs(&after), after["has_more"].clone()),
        (vec![3, 4, 5], json!(true))
    );
    let tail = page("&after=4&limit=3".into()).await;
    assert_eq!(
        (seqs(&tail), tail["has_more"].clone()),
        (vec![5, 6, 7], json!(false))
    );
    let none = page("&after=7".into()).await;
    assert_eq!(
        (seqs(&none), none["has_more"].clone()),
        (vec![], json!(false))
    );
    let window = page("&after=2&before=6".into()).await;
    assert_eq!(
        (seqs(&window), window["has_more"].clone()),
        (vec![3, 4, 5], json!(false))
    );
    let by_name = s.get("/chat/history/?room=log&limit=1", &ann.access).await;
    assert_eq!(seqs(&by_name.1), vec![7]);

    for bad in ["&limit=0", "&limit=201", "&limit=x", "&before=-1"] {
        let (status, body) = s
            .get(&format!("/chat/history/?room={room}{bad}"), &ann.access)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{bad}"
        );
    }
    let (status, _) = s.get("/chat/history/", &ann.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "room is required");
    let (status, body) = s
        .get(&format!("/chat/history/?room={room}"), &eve.access)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );
}

async fn read_marks_and_is_read(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "pair", "private", &[&bob]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    for i in 1..=3 {
        s.send(&ann, room, &format!("a{i}")).await;
    }
    let is_read = |v: &Value| -> Vec<bool> {
        v["chat_history"]
            .as_array()
            .expect("array")
            .iter()
            .map(|m| m["is_read"].as_bool().expect("bool"))
            .collect()
    };
    let (_, h) = s
        .get(&format!("/chat/history/?room={room}"), &bob.access)
        .await;
    assert_eq!(is_read(&h), vec![false, false, false]);
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["unread_count"], 3);

    // Bob reads up to a2 (seq 3: his join is seq 1) over a socket.
    let mut ws = s.ws("/ws/", &bob).await;
    ws.send(json!({"type": "read", "room": room, "seq": 3}))
        .await;
    ws.expect_quiet().await;
    let (_, h) = s
        .get(&format!("/chat/history/?room={room}"), &bob.access)
        .await;
    assert_eq!(
        is_read(&h),
        vec![true, true, false],
        "bob's view of ann's messages"
    );
    let (_, h) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(
        is_read(&h),
        vec![true, true, false],
        "ann sees bob read her first two"
    );
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["unread_count"], 1);

    // Sending moves the sender's own mark: bob replying reads the room.
    s.send(&bob, room, "b1").await;
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["unread_count"], 0);
    let (_, rooms) = s.get("/chat/rooms/", &ann.access).await;
    assert_eq!(rooms[0]["unread_count"], 1, "ann has bob's reply unread");
    assert_eq!(rooms[0]["last_message"]["body"], "b1");
    assert_eq!(rooms[0]["last_message"]["is_read"], false);
}
