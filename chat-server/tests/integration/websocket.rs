//! The WebSocket half: chatting, handshake refusals, bad frames, resume by
//! seq, replay racing live sends, slow sockets, deleted rooms, shutdown.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, Incoming, TestServer, each_backend};

each_backend!(
    two_users_chat_in_a_bound_room,
    multi_room_socket,
    handshake_refusals,
    bad_frames_are_answered_and_the_socket_stays_open,
    oversized_frame_closes_1009,
    resume_after_disconnect_loses_nothing,
    replay_racing_live_sends_has_no_gap_or_duplicate,
    client_id_is_idempotent_over_websocket,
    a_burst_of_sends_is_answered_in_order,
    a_listening_sender_gets_its_acks_in_the_rooms_order,
    membership_changes_are_timeline_events,
    deleted_room_notifies_and_closes_bound_sockets,
    auto_create_rooms,
    shutdown_closes_1001,
    rate_limit,
    resubscribing_never_repeats_an_event,
);

async fn two_users_chat_in_a_bound_room(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "testroom", "private", &[&bob]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;

    // Bob's join is the room's first timeline event.
    let mut a = s.ws("/ws/chat/testroom/", &ann).await;
    assert_eq!(a.expect("subscribed").await["last_seq"], 1);
    let mut b = s.ws(&format!("/ws/chat/{room}/"), &bob).await;
    b.expect("subscribed").await;
    assert_eq!(
        b.expect("presence").await,
        json!({"type": "presence", "room": room, "user": ann.id, "status": "online"}),
        "who is already here"
    );
    assert_eq!(
        a.expect("presence").await,
        json!({"type": "presence", "room": room, "user": bob.id, "status": "online"})
    );

    a.send(json!({"message": "Hello, World!"})).await;
    let ack = a.expect("ack").await;
    assert_eq!(ack["client_id"], Value::Null);
    assert_eq!(ack["message"]["body"], "Hello, World!");
    assert_eq!(ack["message"]["seq"], 2);

    let got = b.expect("message").await["message"].clone();
    assert_eq!(got["body"], "Hello, World!");
    assert_eq!(got["sender"], ann.id);
    assert_eq!(got["sender_name"], "ann");
    assert_eq!(got["room"], room);
    assert_eq!(got["seq"], 2);
    assert_eq!(got["is_read"], false);
    assert_eq!(got["id"], ack["message"]["id"]);

    b.send(json!({"type": "send", "body": "hi ann", "client_id": "b-1"}))
        .await;
    assert_eq!(b.expect("ack").await["client_id"], "b-1");
    assert_eq!(a.expect("message").await["message"]["body"], "hi ann");
    // Neither got its own message back.
    a.expect_quiet().await;
    b.expect_quiet().await;

    // HTTP sends reach sockets too.
    s.send(&ann, room, "via http").await;
    assert_eq!(b.expect("message").await["message"]["body"], "via http");
    assert_eq!(
        a.expect("message").await["message"]["body"],
        "via http",
        "no socket sent it"
    );

    // A read receipt reaches the other side. (Bob's own send already moved
    // his mark to 3, so reading 3 again would change nothing.)
    b.send(json!({"type": "read", "room": room, "seq": 4}))
        .await;
    let read = a.expect("read").await;
    assert_eq!(
        read,
        json!({"type": "read", "room": room, "user": bob.id, "seq": 4})
    );
    b.send(json!({"type": "read", "room": room, "seq": 3}))
        .await;
    b.expect_quiet().await;
    a.expect_quiet().await;

    b.send(json!({"type": "typing", "room": room})).await;
    assert_eq!(
        a.expect("typing").await,
        json!({"type": "typing", "room": room, "user": bob.id})
    );
}

async fn multi_room_socket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let one = s.room(&ann, "one", "public", &[]).await;
    let two = s.room(&ann, "two", "public", &[]).await;

    let mut b = s.ws("/ws/", &bob).await;
    // Subscribing to a public room joins it: the join is its seq 1.
    let (_, sub) = b.subscribe(json!(one), None).await;
    assert_eq!(
        sub,
        json!({"type": "subscribed", "room": one, "last_seq": 1})
    );
    let (_, sub) = b.subscribe(json!("two"), None).await;
    assert_eq!(sub["room"], two);
    let (_, detail) = s.get(&format!("/chat/rooms/{one}/"), &ann.access).await;
    assert_eq!(detail["members"], json!(["ann", "bob"]));

    s.send(&ann, one, "in one").await;
    s.send(&ann, two, "in two").await;
    let m1 = b.expect("message").await;
    let m2 = b.expect("message").await;
    assert_eq!(
        (m1["message"]["room"].clone(), m2["message"]["room"].clone()),
        (json!(one), json!(two))
    );

    b.send(json!({"type": "unsubscribe", "room": one})).await;
    b.expect_quiet().await;
    s.send(&ann, one, "not for bob's socket").await;
    s.send(&ann, two, "still for bob").await;
    assert_eq!(
        b.expect("message").await["message"]["body"],
        "still for bob"
    );

    // Sending on /ws/ needs a room; the documents' form needs a bound socket.
    b.send(json!({"type": "send", "body": "where?"})).await;
    assert_eq!(b.expect("error").await["code"], "invalid_input");
    b.send(json!({"message": "where?"})).await;
    assert_eq!(b.expect("error").await["code"], "invalid_input");
    b.send(json!({"type": "send", "room": two, "body": "to two", "client_id": "x"}))
        .await;
    assert_eq!(b.expect("ack").await["message"]["seq"], 4);
}

async fn handshake_refusals(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    s.room(&ann, "private-room", "private", &[&bob]).await;

    let status = |r: Result<crate::support::WsClient, (u16, Value)>| match r {
        Ok(_) => panic!("handshake should be refused"),
        Err((status, body)) => (status, body["code"].as_str().unwrap_or("").to_owned()),
    };
    assert_eq!(status(s.ws_raw("/ws/").await), (401, "unauthorized".into()));
    assert_eq!(
        status(s.ws_raw("/ws/?token=garbage").await),
        (401, "unauthorized".into())
    );
    assert_eq!(
        status(s.ws_raw("/ws/chat/private-room/").await),
        (401, "unauthorized".into())
    );
    let with = |u: &crate::support::TestUser, path: &str| format!("{path}?token={}", u.access);
    // Invited but not joined: forbidden.
    assert_eq!(
        status(s.ws_raw(&with(&bob, "/ws/chat/private-room/")).await),
        (403, "not_member".into())
    );
    // A stranger to a private room learns nothing more than "not found".
    assert_eq!(
        status(s.ws_raw(&with(&eve, "/ws/chat/private-room/")).await),
        (404, "room_not_found".into())
    );
    assert_eq!(
        status(s.ws_raw(&with(&eve, "/ws/chat/no-such-room/")).await),
        (404, "room_not_found".into())
    );

    // On /ws/, the same rules answer as error frames.
    let mut e = s.ws("/ws/", &eve).await;
    e.send(json!({"type": "subscribe", "room": "private-room"}))
        .await;
    assert_eq!(e.expect("error").await["code"], "room_not_found");
    e.send(json!({"type": "send", "room": "private-room", "body": "let me in"}))
        .await;
    assert_eq!(e.expect("error").await["code"], "room_not_found");
    e.send(json!({"type": "read", "room": "private-room", "seq": 1}))
        .await;
    assert_eq!(e.expect("error").await["code"], "room_not_found");
    let mut b = s.ws("/ws/", &bob).await;
    b.send(json!({"type": "subscribe", "room": "private-room"}))
        .await;
    assert_eq!(b.expect("error").await["code"], "not_member");

    // The token can also come in the Authorization header.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = s.ws_url("/ws/").into_client_request().expect("request");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", ann.access).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("header auth works");
    use futures_util::{SinkExt as _, StreamExt as _};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"ping"}"#,
    ))
    .await
    .expect("send");
    let pong = ws.next().await.expect("frame").expect("ok");
    assert_eq!(
        pong.into_text().expect("text").as_str(),
        r#"{"type":"pong"}"#
    );
}

async fn bad_frames_are_answered_and_the_socket_stays_open(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_message_chars = 20).await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    a.expect("subscribed").await;

    let cases: [(&str, &str); 10] = [
        ("{not json", "invalid_json"),
        ("[1,2,3]", "invalid_json"),
        ("42", "invalid_json"),
        (r#"{"type":"shout","room":1}"#, "unknown_type"),
        (r#"{"type":"subscribe"}"#, "invalid_input"),
        (r#"{"type":"read","room":1,"seq":"x"}"#, "invalid_input"),
        (r#"{"message": 5}"#, "invalid_input"),
        (r#"{"message": "   "}"#, "empty_body"),
        (
            r#"{"message": "this body is far longer than twenty characters"}"#,
            "body_too_long",
        ),
        (r#"{"type":"subscribe","room":"nowhere"}"#, "room_not_found"),
    ];
    for (text, code) in cases {
        a.send_text(text).await;
        let err = a.expect("error").await;
        assert_eq!(err["code"], code, "for {text}: {err}");
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    a.send(json!({"type": "send", "body": "", "client_id": "c-9"}))
        .await;
    let err = a.expect("error").await;
    assert_eq!(
        err,
        json!({"type": "error", "code": "empty_body", "error": "Message body cannot be empty", "client_id": "c-9"})
    );

    use futures_util::SinkExt as _;
    a.stream
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .expect("send binary");
    assert_eq!(a.expect("error").await["code"], "invalid_json");

    // Still open and working, and nothing bad was stored.
    a.send(json!({"message": "still here"})).await;
    assert_eq!(a.expect("ack").await["message"]["seq"], 1);
    let (_, h) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(h["chat_history"].as_array().expect("array").len(), 1);
}

async fn oversized_frame_closes_1009(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_frame_bytes = 1024).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    a.expect("subscribed").await;
    let mut b = s.ws("/ws/chat/lobby/", &bob).await;
    b.expect("subscribed").await;
    assert_eq!(b.expect("presence").await["status"], "online");
    // Over the 1 KiB limit (and under the 4x ceiling past which the server
    // stops reading mid-frame and the close may arrive as a reset).
    a.send(json!({"message": "x".repeat(3000)})).await;
    assert_eq!(a.close_code().await, Some(1009));
    assert_eq!(
        b.expect("presence").await["status"],
        "offline",
        "ann's socket is gone"
    );
    // Everyone else carries on.
    s.send(&ann, 1, "after").await;
    assert_eq!(b.expect("message").await["message"]["body"], "after");
}

async fn resume_after_disconnect_loses_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;

    // Bob's join is seq 1; message mN is seq N + 1.
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    for i in 1..=3 {
        s.send(&ann, room, &format!("m{i}")).await;
    }
    let mut last = 0;
    for i in 1..=3 {
        let m = b.expect("message").await;
        assert_eq!(m["message"]["seq"], i + 1);
        last = m["message"]["seq"].as_i64().expect("seq");
    }
    b.close().await;

    for i in 4..=9 {
        s.send(&ann, room, &format!("m{i}")).await;
    }
    let mut b = s.ws("/ws/", &bob).await;
    let (replayed, sub) = b.subscribe(json!(room), Some(last)).await;
    let seqs: Vec<i64> = replayed
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![5, 6, 7, 8, 9, 10]);
    assert_eq!(replayed[0]["body"], "m4");
    assert_eq!(sub["last_seq"], 10);
    s.send(&ann, room, "m10").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 11);
    b.expect_quiet().await;

    // A bound socket resumes the same way.
    let mut c = s.ws(&format!("/ws/chat/{room}/?after_seq=9"), &bob).await;
    assert_eq!(c.expect("message").await["message"]["seq"], 10);
    assert_eq!(c.expect("message").await["message"]["seq"], 11);
    assert_eq!(c.expect("subscribed").await["last_seq"], 11);
}

async fn replay_racing_live_sends_has_no_gap_or_duplicate(backend: Backend) {
    const TOTAL: i64 = 300;
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "busy", "public", &[]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;

    // Four writers over HTTP while bob subscribes from the start mid-burst.
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = s.url("/chat/send/");
        let token = ann.access.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..TOTAL / 4 {
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"room": room, "message": format!("w{w}-{i}")}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let mut b = s.ws("/ws/", &bob).await;
    let (replayed, sub) = b.subscribe(json!(room), Some(1)).await;
    let mut seqs: Vec<i64> = replayed
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(sub["last_seq"], seqs.last().copied().unwrap_or(1));
    while seqs.len() < TOTAL as usize {
        let m = b.expect("message").await;
        seqs.push(m["message"]["seq"].as_i64().expect("seq"));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Bob's join is seq 1: the messages are 2..=TOTAL + 1.
    assert_eq!(
        seqs,
        (2..=TOTAL + 1).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    b.expect_quiet().await;
}

async fn client_id_is_idempotent_over_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.send(json!({"type": "send", "room": room, "body": "once", "client_id": "k1"}))
        .await;
    let first = a.expect("ack").await;
    // A retry, e.g. after a lost ack, on a new socket.
    let mut a2 = s.ws("/ws/", &ann).await;
    a2.send(json!({"type": "send", "room": room, "body": "once", "client_id": "k1"}))
        .await;
    let second = a2.expect("ack").await;
    assert_eq!(first["message"]["id"], second["message"]["id"]);
    assert_eq!(first["message"]["seq"], second["message"]["seq"]);
    assert_eq!(b.expect("message").await["message"]["body"], "once");
    b.expect_quiet().await;

    // The same client_id in another room is refused, not acknowledged with
    // the first room's message (which would pass for a stored send).
    let other = s.room(&ann, "elsewhere", "public", &[]).await;
    a2.send(json!({"type": "send", "room": other, "body": "twice", "client_id": "k1"}))
        .await;
    let refused = a2.expect("error").await;
    assert_eq!(refused["code"], "invalid_input");
    assert_eq!(refused["client_id"], "k1");
    let (status, body) = s
        .call(
            "POST",
            "/chat/send/",
            Some(&ann.access),
            Some(json!({"room": other, "message": "twice", "client_id": "k1"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_input");
    let (_, history) = s
        .get(&format!("/chat/history/?room={other}"), &ann.access)
        .await;
    assert_eq!(history["chat_history"], json!([]), "nothing stored");
}

/// Frames that arrive together are stored together, but answered exactly
/// as if one by one: in order, each its own answer, the frames that are
/// not sends answered between the sends around them.
async fn a_burst_of_sends_is_answered_in_order(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let hidden = s.room(&bob, "bobs", "private", &[]).await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    let mut a = s.ws("/ws/", &ann).await;

    let send = |i: u32| {
        json!({"type": "send", "room": room, "body": format!("m{i}"), "client_id": format!("c-{i}")})
            .to_string()
    };
    let mut burst: Vec<String> = (0..5).map(send).collect();
    burst.push(
        json!({"type": "send", "room": hidden, "body": "psst", "client_id": "c-x"}).to_string(),
    );
    burst.push(json!({"type": "ping"}).to_string());
    burst.extend((5..10).map(send));
    burst.push(send(2));
    burst.push("{not json".to_owned());
    burst.push(send(10));
    a.send_burst(&burst).await;

    // Bob's join is seq 1: message mi is seq i + 2.
    for i in 0..5 {
        let ack = a.expect("ack").await;
        assert_eq!(ack["client_id"], format!("c-{i}"));
        assert_eq!(ack["message"]["seq"], i + 2);
    }
    let refused = a.frame().await;
    assert_eq!(
        (&refused["type"], &refused["code"], &refused["client_id"]),
        (&json!("error"), &json!("room_not_found"), &json!("c-x")),
        "{refused}"
    );
    assert_eq!(a.frame().await["type"], "pong");
    for i in 5..10 {
        let ack = a.frame().await;
        assert_eq!(
            (&ack["type"], &ack["client_id"]),
            (&json!("ack"), &json!(format!("c-{i}")))
        );
        assert_eq!(ack["message"]["seq"], i + 2);
    }
    let repeat = a.frame().await;
    assert_eq!(repeat["type"], "ack", "{repeat}");
    assert_eq!(repeat["message"]["seq"], 4, "the original of c-2");
    assert_eq!(a.frame().await["code"], "invalid_json");
    let last = a.frame().await;
    assert_eq!(
        (&last["type"], &last["message"]["seq"]),
        (&json!("ack"), &json!(12))
    );
    a.expect_quiet().await;

    for i in 0..11 {
        let m = b.expect("message").await;
        assert_eq!(m["message"]["seq"], i + 2);
        assert_eq!(m["message"]["body"], format!("m{i}"));
    }
    b.expect_quiet().await;
}

/// A sender that listens to the room it writes to sees one stream in seq
/// order: everyone else's messages and its own acks, each seq once, no gap,
/// while another user writes at the same time; and every frame is still
/// answered in the order it came (the pong between two sends comes between
/// their acks).
async fn a_listening_sender_gets_its_acks_in_the_rooms_order(backend: Backend) {
    const BURSTS: usize = 20;
    const PER_BURST: usize = 5;
    const OTHERS: usize = 100;
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "busy", "public", &[]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(room), None).await;

    // Bob writes over HTTP meanwhile, so that group commit mixes the two.
    let url = s.url("/chat/send/");
    let token = bob.access.clone();
    let writer = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for i in 0..OTHERS {
            let resp = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"room": room, "message": format!("bob-{i}")}))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        }
    });
    for burst in 0..BURSTS {
        let mut frames: Vec<String> = Vec::new();
        for i in 0..PER_BURST {
            let id = format!("a-{burst}-{i}");
            frames.push(
                json!({"type": "send", "room": room, "body": id, "client_id": id}).to_string(),
            );
            if i == 2 {
                frames.push(json!({"type": "ping"}).to_string());
            }
        }
        a.send_burst(&frames).await;
    }
    writer.await.expect("writer");

    let total = BURSTS * PER_BURST + OTHERS;
    let (mut seqs, mut acks, mut pongs) = (Vec::new(), Vec::new(), 0);
    let mut acked_in_burst = 0;
    while seqs.len() < total {
        let f = a.frame().await;
        match f["type"].as_str() {
            Some("message") => {
                assert_eq!(f["message"]["sender"], json!(bob.id), "never its own: {f}");
                seqs.push(f["message"]["seq"].as_i64().expect("seq"));
            }
            Some("ack") => {
                seqs.push(f["message"]["seq"].as_i64().expect("seq"));
                acks.push(f["client_id"].as_str().expect("client_id").to_owned());
                acked_in_burst += 1;
            }
            Some("pong") => {
                assert_eq!(
                    acked_in_burst % PER_BURST,
                    3,
                    "the pong follows the third send's ack"
                );
                pongs += 1;
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    // Bob's join is seq 1.
    assert_eq!(
        seqs,
        (2..=total as i64 + 1).collect::<Vec<_>>(),
        "one stream, in order"
    );
    let expected: Vec<String> = (0..BURSTS)
        .flat_map(|b| (0..PER_BURST).map(move |i| format!("a-{b}-{i}")))
        .collect();
    assert_eq!(acks, expected, "acks in the order sent");
    assert_eq!(pongs, BURSTS);
    a.expect_quiet().await;
}

/// Joining and leaving are timeline events: live to every socket in the
/// room (the leaver's too, which then stops receiving the room), replayed
/// on resume, listed by the room's timeline endpoint, left out of the
/// message history, and never counted as unread.
async fn membership_changes_are_timeline_events(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/", &ann).await.with_members();
    a.subscribe(json!(room), None).await;

    // Subscribing joins the public room: bob's socket starts after his
    // join (live only), ann's hears it.
    let mut b = s.ws("/ws/", &bob).await.with_members();
    b.send(json!({"type": "subscribe", "room": room})).await;
    assert_eq!(b.expect("subscribed").await["last_seq"], 1);
    assert_eq!(b.expect("presence").await["user"], ann.id);
    let joined = a.expect("member").await;
    assert_eq!(
        (&joined["seq"], &joined["user"], &joined["change"]),
        (&json!(1), &json!(bob.id), &json!("joined")),
        "{joined}"
    );
    assert_eq!(a.expect("presence").await["user"], bob.id);

    s.send(&ann, room, "hello bob").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 2);
    assert_eq!(a.expect("message").await["message"]["seq"], 2);
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["unread_count"], 1, "the message, not the join");

    let (status, _) = s
        .call(
            "POST",
            &format!("/chat/rooms/{room}/leave/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left = a.expect("member").await;
    assert_eq!(
        (&left["seq"], &left["user"], &left["change"]),
        (&json!(3), &json!(bob.id), &json!("left"))
    );
    assert_eq!(b.expect("member").await, left, "the leaver hears it too");
    s.send(&ann, room, "bye").await;
    assert_eq!(a.expect("presence").await["status"], "offline");
    assert_eq!(a.expect("message").await["message"]["seq"], 4);
    b.expect_quiet().await;

    // The timeline lists every kind; history only messages.
    let (status, page) = s
        .get(&format!("/chat/rooms/{room}/events/"), &ann.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<(i64, &str)> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let seq = e["seq"].as_i64().or(e["message"]["seq"].as_i64());
            (seq.expect("seq"), e["type"].as_str().expect("type"))
        })
        .collect();
    assert_eq!(
        kinds,
        vec![(1, "member"), (2, "message"), (3, "member"), (4, "message")]
    );
    assert_eq!(page["has_more"], false);
    let (_, older) = s
        .get(
            &format!("/chat/rooms/{room}/events/?before=3&limit=1"),
            &ann.access,
        )
        .await;
    assert_eq!(older["events"][0]["message"]["body"], "hello bob");
    assert_eq!(older["has_more"], true);
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    let seqs: Vec<i64> = history["chat_history"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![2, 4]);
    let (status, body) = s
        .get(&format!("/chat/rooms/{room}/events/"), &bob.access)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("room_not_found")),
        "no longer a member"
    );
    let (status, _) = s
        .get(&format!("/chat/rooms/{room}/events/?limit=0"), &ann.access)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A resume replays every kind, in order.
    let mut again = s.ws("/ws/", &ann).await.with_members();
    again
        .send(json!({"type": "subscribe", "room": room, "after_seq": 0}))
        .await;
    let mut replayed = Vec::new();
    loop {
        let f = again.frame().await;
        match f["type"].as_str() {
            Some("subscribed") => break,
            Some(t) => replayed.push(t.to_owned()),
            None => panic!("untyped {f}"),
        }
    }
    assert_eq!(replayed, ["member", "message", "member", "message"]);
}

async fn deleted_room_notifies_and_closes_bound_sockets(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "doomed", "public", &[]).await;
    let other = s.room(&ann, "survivor", "public", &[]).await;
    let mut bound = s.ws("/ws/chat/doomed/", &bob).await;
    bound.expect("subscribed").await;
    let mut multi = s.ws("/ws/", &bob).await;
    multi.subscribe(json!(room), None).await;
    multi.subscribe(json!(other), None).await;

    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(
        bound.expect("room_deleted").await,
        json!({"type": "room_deleted", "room": room})
    );
    assert_eq!(bound.close_code().await, Some(4409));
    assert_eq!(multi.expect("room_deleted").await["room"], room);
    // The multi-room socket stays open for its other rooms.
    s.send(&ann, other, "still here").await;
    assert_eq!(
        multi.expect("message").await["message"]["body"],
        "still here"
    );
}

async fn auto_create_rooms(backend: Backend) {
    let off = TestServer::start(backend).await;
    let ann = off.user("ann").await;
    assert!(matches!(
        off.ws_raw(&format!("/ws/chat/brand-new/?token={}", ann.access))
            .await,
        Err((404, _))
    ));

    let on = TestServer::start_with(backend, |c| c.auto_create_rooms = true).await;
    let ann = on.user("ann").await;
    let bob = on.user("bob").await;
    let mut a = on.ws("/ws/chat/brand-new/", &ann).await;
    a.expect("subscribed").await;
    let mut b = on.ws("/ws/chat/brand-new/", &bob).await;
    b.expect("subscribed").await;
    b.expect("presence").await;
    a.expect("presence").await;
    a.send(json!({"message": "first!"})).await;
    a.expect("ack").await;
    assert_eq!(b.expect("message").await["message"]["body"], "first!");
    let (_, rooms) = on.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["name"], "brand-new");
    assert_eq!(rooms[0]["type"], "public");
    // Ids are never auto-created.
    assert!(matches!(
        on.ws_raw(&format!("/ws/chat/999/?token={}", ann.access))
            .await,
        Err((404, _))
    ));
}

async fn shutdown_closes_1001(backend: Backend) {
    let mut s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    a.expect("subscribed").await;
    let mut m = s.ws("/ws/", &ann).await;
    s.stop().await;
    assert_eq!(a.close_code().await, Some(1001));
    assert!(matches!(m.next().await, Incoming::Closed(Some(c)) if u16::from(c.code) == 1001));
}

async fn rate_limit(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.rate_limit = 2).await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/", &ann).await;
    // Burst of five seconds' worth: 10 pass, the rest are refused.
    for i in 0..15 {
        a.send(json!({"type": "send", "room": room, "body": format!("m{i}"), "client_id": format!("c{i}")})).await;
    }
    let mut acked = BTreeSet::new();
    let mut limited = BTreeSet::new();
    for _ in 0..15 {
        let f = a.frame().await;
        let id = f["client_id"].as_str().expect("client_id").to_owned();
        match f["type"].as_str() {
            Some("ack") => acked.insert(id),
            Some("error") => {
                assert_eq!(f["code"], "rate_limited");
                limited.insert(id)
            }
            _ => panic!("unexpected {f}"),
        };
    }
    assert!((10..=11).contains(&acked.len()), "acked {acked:?}");
    assert_eq!(acked.len() + limited.len(), 15);
    let (_, h) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(
        h["chat_history"].as_array().expect("array").len(),
        acked.len()
    );
}

/// A socket whose client stops reading is closed with 4408 once its queue
/// fills; it got a gap-free prefix, and resuming from its last seq delivers
/// the rest: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_socket_closes_4408_and_resumes_without_loss() {
    const WRITERS: i64 = 4;
    const PER_WRITER: i64 = 750;
    let s = TestServer::start_with(Backend::Memory, |c| c.socket_queue = 4).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "firehose", "public", &[]).await;
    let mut slow = s.ws(&format!("/ws/chat/{room}/"), &bob).await;
    let subscribed_at = slow.expect("subscribed").await["last_seq"]
        .as_i64()
        .expect("last_seq");

    // ~12 MB of frames: more than the kernel buffers between server and
    // client hold, so the server's writes block and the queue overflows.
    let filler = "x".repeat(3_900);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = s.url("/chat/send/");
        let token = ann.access.clone();
        let filler = filler.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..PER_WRITER {
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"room": room, "message": format!("{w}-{i}-{filler}")}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }

    let mut seqs = Vec::new();
    let code = loop {
        match slow.next().await {
            Incoming::Frame(f) if f["type"] == "message" => {
                seqs.push(f["message"]["seq"].as_i64().expect("seq"))
            }
            Incoming::Frame(f) => panic!("unexpected {f}"),
            Incoming::Closed(c) => break c.map(|c| u16::from(c.code)),
        }
    };
    assert_eq!(code, Some(4408));
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let slow = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_slow_sockets_closed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        slow.is_some_and(|n| n >= 1.0),
        "the drop is counted: {slow:?}"
    );
    let total = WRITERS * PER_WRITER;
    assert!((seqs.len() as i64) < total, "the socket was cut short");
    // Bob's join was the room's only event before the messages.
    assert_eq!(subscribed_at, 1);
    assert_eq!(
        seqs,
        (2..=seqs.len() as i64 + 1).collect::<Vec<_>>(),
        "a gap-free prefix"
    );

    let mut resumed = s.ws("/ws/", &bob).await;
    // The client resumes from the last seq it saw; if the queue overflowed
    // before anything was written, that is where it subscribed.
    let resume_from = seqs.last().copied().unwrap_or(subscribed_at);
    let (replayed, sub) = resumed.subscribe(json!(room), Some(resume_from)).await;
    seqs.extend(replayed.iter().map(|m| m["seq"].as_i64().expect("seq")));
    assert_eq!(sub["last_seq"], total + 1);
    assert_eq!(
        seqs,
        (2..=total + 1).collect::<Vec<_>>(),
        "everything, once, in order"
    );
}

/// A socket subscribed already that subscribes again with `after_seq` =
/// the last seq it read, while the next event is on its way, gets that
/// event once: the cursor of a subscribed room never moves back.
async fn resubscribing_never_repeats_an_event(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "again", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert!(status.is_success(), "{status}");
    let mut a = s.ws("/ws/", &ann).await;
    let (_, sub) = a.subscribe(json!(room), None).await;
    let mut read = sub["last_seq"].as_i64().expect("last_seq");
    for i in 0..5 {
        let seq = s.send(&bob, room, &format!("m{i}")).await;
        a.send(json!({"type": "subscribe", "room": room, "after_seq": read}))
            .await;
        a.send(json!({"type": "ping"})).await;
        let mut seen = Vec::new();
        let mut subscribed = None;
        loop {
            let f = a.frame().await;
            match f["type"].as_str() {
                Some("message") => seen.push(f["message"]["seq"].as_i64().expect("seq")),
                Some("subscribed") => subscribed = Some(f["last_seq"].clone()),
                Some("pong") => break,
                _ => {}
            }
        }
        assert_eq!(seen, vec![seq], "round {i}: each event once");
        assert_eq!(subscribed, Some(json!(seq)), "round {i}");
        read = seq;
    }
    // Asking for less than the socket was given does not replay either.
    let (replayed, sub) = a.subscribe(json!(room), Some(0)).await;
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(sub["last_seq"], read);
}
