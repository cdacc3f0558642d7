//! Input limits and the per-user send rate, end to end: what is refused,
//! with which code, and that nothing refused is stored.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    user_rate_limit_spans_sockets_and_http,
    oversized_request_body_is_413,
    message_length_counts_characters,
    room_name_rules,
    username_rules,
);

async fn user_rate_limit_spans_sockets_and_http(backend: Backend) {
    // Each socket alone stays far under its own limit; together they pass
    // the user's (1 per second, burst 5).
    let s = TestServer::start_with(backend, |c| {
        c.rate_limit = 100;
        c.user_rate_limit = 1;
    })
    .await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let mut a1 = s.ws("/ws/chat/lobby/", &ann).await;
    a1.expect("subscribed").await;
    let mut a2 = s.ws("/ws/", &ann).await;

    let mut acked = 0;
    let mut limited = Vec::new();
    for i in 0..6 {
        for (socket, name) in [(&mut a1, "a1"), (&mut a2, "a2")] {
            let client_id = format!("{name}-{i}");
            socket
                .send(json!({"type": "send", "room": lobby, "body": client_id, "client_id": client_id}))
                .await;
            let answer = loop {
                let f = socket.frame().await;
                if matches!(f["type"].as_str(), Some("ack" | "error")) {
                    break f;
                }
            };
            match answer["type"].as_str() {
                Some("ack") => acked += 1,
                _ => {
                    assert_eq!(answer["code"], "rate_limited", "{answer}");
                    assert_eq!(answer["client_id"], client_id.as_str());
                    limited.push(client_id);
                }
            }
        }
    }
    assert!(acked >= 5, "the burst goes through ({acked})");
    assert!(!limited.is_empty(), "12 sends at once pass a burst of 5");

    // HTTP sends count against the same user.
    let mut refused = None;
    for _ in 0..12 {
        let resp = reqwest::Client::new()
            .post(s.url("/chat/send/"))
            .bearer_auth(&ann.access)
            .json(&json!({"room": lobby, "message": "over http"}))
            .send()
            .await
            .expect("sent");
        if resp.status() == StatusCode::CREATED {
            acked += 1;
            continue;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key(reqwest::header::RETRY_AFTER));
        refused = Some(resp.json::<serde_json::Value>().await.expect("JSON"));
        break;
    }
    let refused = refused.expect("HTTP sends are limited too");
    assert_eq!(refused["code"], "rate_limited");

    // Other users are not affected.
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": lobby}))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.send(&bob, lobby, "bob is fine").await;
    // Nothing refused was stored.
    let (_, history) = s
        .get(
            &format!("/chat/history/?room={lobby}&limit=200"),
            &bob.access,
        )
        .await;
    let stored = history["chat_history"].as_array().expect("array");
    let from_ann = stored.iter().filter(|m| m["sender"] == ann.id).count();
    assert_eq!(from_ann, acked);
    for id in &limited {
        assert!(
            !stored.iter().any(|m| m["body"] == id.as_str()),
            "{id} was rate limited and must not be stored"
        );
    }
}

async fn oversized_request_body_is_413(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_request_bytes = 1024).await;
    let ann = s.user("ann").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        json!({"error": "Request is too large", "code": "payload_too_large"})
    );
    let (status, body) = s
        .call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "big", "email": "big@example.com", "password": "x".repeat(2000)})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let (_, history) = s
        .get(&format!("/chat/history/?room={lobby}"), &ann.access)
        .await;
    assert_eq!(history["chat_history"], json!([]));
    let (_, users) = s.get("/api/users/", &ann.access).await;
    assert_eq!(users.as_array().expect("array").len(), 1);
}

async fn message_length_counts_characters(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_message_chars = 10).await;
    let ann = s.user("ann").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    a.expect("subscribed").await;
    // Ten characters of four bytes each fit; eleven do not.
    a.send(json!({"type": "send", "body": "😀".repeat(10), "client_id": "fits"}))
        .await;
    assert_eq!(a.expect("ack").await["message"]["body"], "😀".repeat(10));
    a.send(json!({"type": "send", "body": "😀".repeat(11), "client_id": "long"}))
        .await;
    let err = a.expect("error").await;
    assert_eq!(
        (err["code"].as_str(), err["client_id"].as_str()),
        (Some("body_too_long"), Some("long"))
    );
    a.send(json!({"message": "é".repeat(11)})).await;
    assert_eq!(a.expect("error").await["code"], "body_too_long");
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": lobby, "message": "ü".repeat(11)}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body_too_long"))
    );
    let (_, history) = s
        .get(&format!("/chat/history/?room={lobby}"), &ann.access)
        .await;
    assert_eq!(history["chat_history"].as_array().expect("array").len(), 1);
}

async fn room_name_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let create = |name: serde_json::Value| {
        let s = &s;
        let token = ann.access.clone();
        async move {
            s.post(
                "/chat/create-room/",
                &token,
                json!({"name": name, "type": "public"}),
            )
            .await
        }
    };
    // 64 characters, 128 bytes: fine.
    let (status, room) = create(json!("é".repeat(64))).await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["name"], "é".repeat(64));
    for (name, code) in [
        (json!(""), "room_name_required"),
        (json!("   "), "room_name_required"),
        (json!("é".repeat(65)), "invalid_input"),
        (json!("a".repeat(65)), "invalid_input"),
        (json!("0042"), "invalid_input"),
        (json!("a/b"), "invalid_input"),
        (json!("tab\there"), "invalid_input"),
    ] {
        let (status, body) = create(name.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{name}: {body}"
        );
    }
    let (_, rooms) = s.get("/chat/rooms/", &ann.access).await;
    assert_eq!(rooms.as_array().expect("array").len(), 1, "{rooms}");
}

async fn username_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    for name in [
        "ab".to_owned(),
        "a".repeat(33),
        "ann smith".to_owned(),
        "ann!".to_owned(),
        "ann@home".to_owned(),
        "ännä".to_owned(),
        "名前です".to_owned(),
        "ann\u{200b}x".to_owned(),
    ] {
        let (status, body) = s
            .call(
                "POST",
                "/api/users/register/",
                None,
                Some(
                    json!({"username": name, "email": "x@example.com", "password": "long enough"}),
                ),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{name:?}: {body}"
        );
        assert!(body["fields"]["username"].is_string(), "{body}");
    }
    // The edges are fine.
    for name in ["abc".to_owned(), "a".repeat(32), "A.b-c_9".to_owned()] {
        let (status, body) = s
            .call(
                "POST",
                "/api/users/register/",
                None,
                Some(json!({"username": name, "email": format!("{}@example.com", name.to_lowercase()), "password": "long enough"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    let (_, users) = s.get("/api/users/", &ann.access).await;
    assert_eq!(users.as_array().expect("array").len(), 4, "{users}");
}
