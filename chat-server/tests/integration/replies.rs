//! Replies, threads and mentions end to end: what a send may refer to and
//! each refusal's answer, what subscribers and history see, paging a
//! thread, and mention counts in the room and conversation lists.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(
    replies_over_http_and_websocket,
    threads_over_http_and_websocket,
    mentions_counted_in_lists
);

/// Sends `extra` merged into a send body; returns the status and answer.
async fn send_with(
    s: &TestServer,
    user: &TestUser,
    room: i64,
    body: &str,
    extra: Value,
) -> (StatusCode, Value) {
    let mut request = json!({"room": room, "message": body});
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    s.post("/chat/send/", &user.access, request).await
}

/// Like [`send_with`], expecting it stored; returns its id.
async fn sent(s: &TestServer, user: &TestUser, room: i64, body: &str, extra: Value) -> i64 {
    let (status, answer) = send_with(s, user, room, body, extra).await;
    assert_eq!(status, StatusCode::CREATED, "send: {answer}");
    answer["id"].as_i64().expect("id")
}

async fn joined(s: &TestServer, user: &TestUser, room: i64) {
    let (status, body) = s
        .post("/chat/join-room/", &user.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK, "join: {body}");
}

async fn history(s: &TestServer, user: &TestUser, room: i64) -> Vec<Value> {
    let (status, body) = s
        .get(&format!("/chat/history/?room={room}"), &user.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["chat_history"].as_array().expect("history").clone()
}

async fn replies_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let other = s.room(&ann, "other", "public", &[]).await;
    let secret = s.room(&eve, "secret", "private", &[]).await;
    joined(&s, &bob, lobby).await;
    let mut watcher = s.ws("/ws/", &bob).await;
    watcher.subscribe(json!(lobby), None).await;
    let mut listener = s.ws("/ws/", &ann).await;
    listener.subscribe(json!(lobby), None).await;
    assert_eq!(watcher.expect("presence").await["user"], ann.id);

    let long = "word ".repeat(40);
    let question = sent(&s, &ann, lobby, &long, json!({})).await;
    watcher.expect("message").await;
    listener.expect("message").await;
    // Over the WebSocket: the sender's ack and every subscriber's frame
    // carry it.
    watcher
        .send(json!({"type": "send", "room": lobby, "body": "an answer",
                     "client_id": "r-1", "reply_to": question}))
        .await;
    let ack = watcher.expect("ack").await;
    let live = listener.expect("message").await;
    let preview = &live["message"]["reply_to"];
    assert_eq!(preview["id"], question);
    assert_eq!(preview["sender"], ann.id);
    assert_eq!(preview["seq"], 2, "after bob's join");
    assert_eq!(
        preview["snippet"].as_str().map(|t| t.chars().count()),
        Some(100),
        "the snippet is the first 100 characters: {preview}"
    );
    assert_eq!(ack["message"]["reply_to"], *preview);
    let answer = ack["message"]["id"].as_i64().expect("id");
    let in_history = history(&s, &bob, lobby).await;
    assert_eq!(in_history[1]["reply_to"], *preview, "history shows it too");

    // Refusals, each with its answer; nothing stored.
    for (who, room, target, status, code) in [
        (
            &ann,
            lobby,
            json!(999_999_999),
            StatusCode::NOT_FOUND,
            "message_not_found",
        ),
        (
            &ann,
            other,
            json!(question),
            StatusCode::NOT_FOUND,
            "message_not_found",
        ),
        (
            &ann,
            lobby,
            json!("x"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        // A stranger learns nothing of the room's messages.
        (
            &ann,
            secret,
            json!(question),
            StatusCode::NOT_FOUND,
            "room_not_found",
        ),
        (
            &eve,
            lobby,
            json!(question),
            StatusCode::FORBIDDEN,
            "not_member",
        ),
    ] {
        let (got, body) = send_with(&s, who, room, "x", json!({"reply_to": target})).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
    }
    watcher.expect_quiet().await;

    // The target deleted: its text leaves every reply.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{question}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    watcher.expect("message_deleted").await;
    let in_history = history(&s, &bob, lobby).await;
    let reply = in_history
        .iter()
        .find(|m| m["id"] == answer)
        .expect("the reply");
    assert_eq!(reply["reply_to"]["deleted"], true, "{reply}");
    assert_eq!(reply["reply_to"]["snippet"], "");
    let (status, body) = send_with(&s, &bob, lobby, "x", json!({"reply_to": question})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::CONFLICT,
            json!({"error": "The message to reply to was deleted", "code": "message_deleted"})
        )
    );
}

async fn threads_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let mut watcher = s.ws("/ws/", &bob).await;
    watcher.subscribe(json!(lobby), None).await;

    let root = sent(&s, &ann, lobby, "lunch?", json!({})).await;
    watcher.expect("message").await;
    let first = sent(&s, &bob, lobby, "noon", json!({"thread_root": root})).await;
    let live = watcher.expect("message").await;
    assert_eq!(live["message"]["thread_root"], root, "{live}");
    // A reply in the thread stands for its root.
    watcher
        .send(json!({"type": "send", "room": lobby, "body": "ok", "thread_root": first}))
        .await;
    let second = watcher.expect("ack").await;
    assert_eq!(second["message"]["thread_root"], root);
    let after = sent(&s, &ann, lobby, "back in the room", json!({})).await;
    watcher.expect("message").await;

    // History: the root with its count, no replies.
    let in_history = history(&s, &bob, lobby).await;
    let ids: Vec<&Value> = in_history.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, vec![&json!(root), &json!(after)]);
    assert_eq!(in_history[0]["thread"]["reply_count"], 2);
    assert!(in_history[0]["thread"]["last_reply_at"].is_string());

    // The thread, whole and paged, from the root or from a reply.
    for id in [root, first] {
        let (status, thread) = s
            .get(&format!("/chat/messages/{id}/thread/"), &bob.access)
            .await;
        assert_eq!(status, StatusCode::OK, "{thread}");
        assert_eq!(thread["root"]["id"], root);
        assert_eq!(thread["root"]["thread"]["reply_count"], 2);
        let bodies: Vec<&Value> = thread["replies"]
            .as_array()
            .expect("replies")
            .iter()
            .map(|m| &m["body"])
            .collect();
        assert_eq!(bodies, vec!["noon", "ok"]);
        assert_eq!(thread["has_more"], false);
    }
    let (_, page) = s
        .get(
            &format!("/chat/messages/{root}/thread/?after=0&limit=1"),
            &bob.access,
        )
        .await;
    assert_eq!(page["replies"][0]["body"], "noon");
    assert_eq!(page["has_more"], true);
    // Members only; the same answer as for no message at all.
    for (who, id) in [(&eve, root), (&bob, 999_999_999)] {
        let (status, body) = s
            .get(&format!("/chat/messages/{id}/thread/"), &who.access)
            .await;
        assert_eq!(
            (status, body),
            (
                StatusCode::NOT_FOUND,
                json!({"error": "Message not found", "code": "message_not_found"})
            )
        );
    }
    let (status, body) = s
        .get(
            &format!("/chat/messages/{root}/thread/?limit=0"),
            &bob.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A deleted reply leaves the count; the timeline has every reply.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{first}/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let deleted = watcher.expect("message_deleted").await;
    assert_eq!(deleted["message"]["thread_root"], root);
    assert_eq!(
        history(&s, &bob, lobby).await[0]["thread"]["reply_count"],
        1
    );
    let (_, timeline) = s
        .get(&format!("/chat/rooms/{lobby}/events/"), &bob.access)
        .await;
    let threaded = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "message" && e["message"]["thread_root"] == root)
        .count();
    assert_eq!(threaded, 2);
}

async fn mentions_counted_in_lists(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let mut watcher = s.ws("/ws/", &bob).await;
    watcher.subscribe(json!(lobby), None).await;

    let counts = |user: &TestUser| {
        let access = user.access.clone();
        let s = &s;
        async move {
            let (_, rooms) = s.get("/chat/rooms/", &access).await;
            let room = rooms
                .as_array()
                .expect("rooms")
                .iter()
                .find(|r| r["id"] == lobby)
                .cloned()
                .expect("listed");
            (room["unread_count"].clone(), room["mention_count"].clone())
        }
    };
    sent(&s, &ann, lobby, "hi all", json!({})).await;
    sent(
        &s,
        &ann,
        lobby,
        "@bob",
        json!({"mentions": [bob.id, bob.id]}),
    )
    .await;
    let live = watcher.expect("message").await;
    assert!(live["message"].get("mentions").is_none(), "none: {live}");
    let live = watcher.expect("message").await;
    assert_eq!(live["message"]["mentions"], json!([bob.id]), "once each");
    assert_eq!(counts(&bob).await, (json!(2), json!(1)));
    assert_eq!(counts(&ann).await, (json!(0), json!(0)));

    // A mention of someone outside the room is refused, nothing stored.
    let (status, body) = send_with(&s, &ann, lobby, "@eve", json!({"mentions": [eve.id]})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input")),
        "{body}"
    );
    let too_many: Vec<i64> = (0..51).collect();
    let (status, _) = send_with(&s, &ann, lobby, "x", json!({"mentions": too_many})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    watcher.expect_quiet().await;

    // Reading clears it.
    watcher
        .send(json!({"type": "read", "room": lobby, "seq": 3}))
        .await;
    watcher.send(json!({"type": "ping"})).await;
    loop {
        if watcher.frame().await["type"] == "pong" {
            break;
        }
    }
    assert_eq!(counts(&bob).await, (json!(0), json!(0)));

    // Conversations count them too.
    let (status, conversation) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    assert!(status.is_success(), "{conversation}");
    let direct = conversation["id"].as_i64().expect("id");
    sent(&s, &ann, direct, "psst @bob", json!({"mentions": [bob.id]})).await;
    let (_, list) = s.get("/api/chats/conversations/", &bob.access).await;
    let entry = &list[0];
    assert_eq!(
        (&entry["unread_count"], &entry["mention_count"]),
        (&json!(1), &json!(1)),
        "{list}"
    );
}
