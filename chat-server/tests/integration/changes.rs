//! Editing and deleting messages, over HTTP and WebSocket: the stored
//! state, the timeline events every subscriber gets in order, history's
//! tombstones, unread counts, and resuming past changes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, TestUser, WsClient, each_backend};

each_backend!(
    edit_and_delete_over_http,
    edit_and_delete_over_websocket,
    resume_replays_changes_once_in_order,
    reactions_over_http_and_websocket,
    pins_over_http_and_websocket,
    search_over_http
);

/// Sends over HTTP; returns the message's id and seq.
async fn send(s: &TestServer, user: &TestUser, room: i64, body: &str) -> (i64, i64) {
    let (status, sent) = s
        .post(
            "/chat/send/",
            &user.access,
            json!({"room": room, "message": body}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "send: {sent}");
    (
        sent["id"].as_i64().expect("id"),
        sent["seq"].as_i64().expect("seq"),
    )
}

async fn patch(
    s: &TestServer,
    user: &TestUser,
    id: impl std::fmt::Display,
    body: &str,
) -> (StatusCode, Value) {
    s.call(
        "PATCH",
        &format!("/chat/messages/{id}/"),
        Some(&user.access),
        Some(json!({"body": body})),
    )
    .await
}

async fn delete(s: &TestServer, user: &TestUser, id: i64) -> (StatusCode, Value) {
    s.call(
        "DELETE",
        &format!("/chat/messages/{id}/"),
        Some(&user.access),
        None,
    )
    .await
}

async fn unread(s: &TestServer, user: &TestUser) -> i64 {
    let (status, body) = s.get("/api/chats/unread-count/", &user.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["unread_count"].as_i64().expect("unread_count")
}

async fn joined(s: &TestServer, user: &TestUser, room: i64) {
    let (status, body) = s
        .post("/chat/join-room/", &user.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK, "join: {body}");
}

async fn edit_and_delete_over_http(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_message_chars = 20).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let mut watcher = s.ws("/ws/", &bob).await;
    watcher.subscribe(json!(lobby), None).await;

    let (id, seq) = send(&s, &ann, lobby, "helo").await;
    assert_eq!(watcher.expect("message").await["message"]["id"], id);

    let (status, edited) = patch(&s, &ann, id, "hello").await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["body"], "hello");
    assert_eq!(edited["seq"], seq, "the message keeps its place");
    assert_eq!(edited["version"], 1);
    assert!(edited["edited_at"].is_string(), "{edited}");
    let event = watcher.expect("message_edited").await;
    assert_eq!(event["seq"], seq + 1, "the edit takes the next seq");
    assert_eq!(event["user"], ann.id);
    assert_eq!(event["message"]["body"], "hello");
    assert_eq!(event["message"]["version"], 1);

    // Refusals, each with its code; nothing changes.
    let (status, body) = patch(&s, &bob, id, "mine").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_sender"))
    );
    for (who, target) in [
        (&eve, id.to_string()),
        (&ann, "999999999".to_owned()),
        (&ann, "x".to_owned()),
    ] {
        let (status, body) = patch(&s, who, &target, "x").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{target}: {body}");
        assert_eq!(
            body,
            json!({"error": "Message not found", "code": "message_not_found"})
        );
    }
    let (status, body) = patch(&s, &ann, id, " ").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("empty_body"))
    );
    let (status, body) = patch(&s, &ann, id, &"x".repeat(21)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body_too_long"))
    );
    let (status, body) = s
        .call(
            "PATCH",
            &format!("/chat/messages/{id}/"),
            Some(&ann.access),
            Some(json!({"text": "no body field"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The same body again: answered, no new event, no new version.
    let (status, same) = patch(&s, &ann, id, "hello").await;
    assert_eq!((status, &same["version"]), (StatusCode::OK, &json!(1)));
    watcher.expect_quiet().await;

    // Bob's unread count holds Ann's next message until it is deleted.
    let (unread_id, _) = send(&s, &ann, lobby, "oops").await;
    watcher.expect("message").await;
    assert_eq!(unread(&s, &bob).await, 2);
    let (status, body) = delete(&s, &bob, unread_id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_sender"))
    );
    let (status, tombstone) = delete(&s, &ann, unread_id).await;
    assert_eq!(status, StatusCode::OK, "{tombstone}");
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["body"], "");
    let event = watcher.expect("message_deleted").await;
    assert_eq!(event["message"]["id"], unread_id);
    assert_eq!(event["message"]["deleted"], true);
    assert_eq!(unread(&s, &bob).await, 1, "a deleted message is not unread");
    // Twice: the same answer, no event.
    let (status, again) = delete(&s, &ann, unread_id).await;
    assert_eq!((status, &again), (StatusCode::OK, &tombstone));
    watcher.expect_quiet().await;
    let (status, body) = patch(&s, &ann, unread_id, "back").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::CONFLICT,
            json!({"error": "The message was deleted", "code": "message_deleted"})
        )
    );

    // The creator moderates: Bob's message goes.
    let (bobs, _) = send(&s, &bob, lobby, "spam").await;
    watcher.expect("message").await;
    let (status, body) = delete(&s, &ann, bobs).await;
    assert_eq!((status, &body["deleted"]), (StatusCode::OK, &json!(true)));
    assert_eq!(watcher.expect("message_deleted").await["user"], ann.id);

    // History: current bodies and tombstones in their places.
    let (_, history) = s
        .get(&format!("/chat/history/?room={lobby}"), &bob.access)
        .await;
    let bodies: Vec<(&str, bool)> = history["chat_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| (m["body"].as_str().unwrap_or("?"), m["deleted"] == true))
        .collect();
    assert_eq!(bodies, vec![("hello", false), ("", true), ("", true)]);
    // The timeline: every change as an event of its kind.
    let (_, timeline) = s
        .get(&format!("/chat/rooms/{lobby}/events/"), &bob.access)
        .await;
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "member",
            "message",
            "message_edited",
            "message",
            "message_deleted",
            "message",
            "message_deleted"
        ]
    );
    // The room list shows the newest message as a tombstone.
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    let last = &rooms.as_array().expect("rooms")[0]["last_message"];
    assert_eq!(
        (&last["body"], &last["deleted"]),
        (&json!(""), &json!(true)),
        "{rooms}"
    );
}

/// Sends `frame` and reads up to the pong of a ping sent after it.
async fn exchange(ws: &mut WsClient, frame: Value) -> Vec<Value> {
    ws.send(frame).await;
    ws.send(json!({"type": "ping"})).await;
    let mut frames = Vec::new();
    loop {
        let f = ws.frame().await;
        if f["type"] == "pong" {
            return frames;
        }
        frames.push(f);
    }
}

async fn edit_and_delete_over_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let (id, _) = send(&s, &ann, lobby, "first").await;
    let (bobs, _) = send(&s, &bob, lobby, "bob's").await;

    // A socket listening to the room: the event comes before the pong.
    let mut ann_ws = s.ws("/ws/", &ann).await;
    ann_ws.subscribe(json!(lobby), None).await;
    let frames = exchange(
        &mut ann_ws,
        json!({"type": "edit", "message_id": id, "body": "first!"}),
    )
    .await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "message_edited");
    assert_eq!(frames[0]["message"]["body"], "first!");
    // Refused: an error frame, nothing else.
    let frames = exchange(
        &mut ann_ws,
        json!({"type": "edit", "message_id": bobs, "body": "not mine"}),
    )
    .await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "error", "code": "not_sender", "error": "Only the message's sender (or a moderator, to delete) can do this"})
        ]
    );
    let frames = exchange(
        &mut ann_ws,
        json!({"type": "edit", "message_id": id, "body": ""}),
    )
    .await;
    assert_eq!(frames[0]["code"], "empty_body", "{frames:?}");
    let frames = exchange(
        &mut ann_ws,
        json!({"type": "edit", "message_id": "x", "body": "y"}),
    )
    .await;
    assert_eq!(frames[0]["code"], "invalid_input", "{frames:?}");
    // The moderator deletes Bob's message.
    let frames = exchange(&mut ann_ws, json!({"type": "delete", "message_id": bobs})).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "message_deleted");
    assert_eq!(frames[0]["message"]["id"], bobs);
    // Again: nothing changes, nothing is said.
    let frames = exchange(&mut ann_ws, json!({"type": "delete", "message_id": bobs})).await;
    assert!(frames.is_empty(), "{frames:?}");

    // A socket that does not listen to the room hears only refusals.
    let mut bob_ws = s.ws("/ws/", &bob).await;
    let frames = exchange(&mut bob_ws, json!({"type": "delete", "message_id": id})).await;
    assert_eq!(frames[0]["code"], "not_sender", "{frames:?}");
    let (own, _) = send(&s, &bob, lobby, "bob again").await;
    ann_ws.expect("message").await;
    let frames = exchange(
        &mut bob_ws,
        json!({"type": "edit", "message_id": own, "body": "bob, edited"}),
    )
    .await;
    assert!(frames.is_empty(), "{frames:?}");
    // Ann's socket, listening, gets Bob's edit.
    let event = ann_ws.expect("message_edited").await;
    assert_eq!(event["user"], bob.id);
    assert_eq!(event["message"]["body"], "bob, edited");
}

/// A client away while messages were edited and deleted resumes with
/// `after_seq` and gets each change once, in order, showing the messages as
/// they stand; the tombstone holds no trace of the body.
async fn resume_replays_changes_once_in_order(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let mut bob_ws = s.ws("/ws/", &bob).await;
    let (_, sub) = bob_ws.subscribe(json!(lobby), None).await;
    let (id, _) = send(&s, &ann, lobby, "draft").await;
    let seen = bob_ws.expect("message").await["message"]["seq"]
        .as_i64()
        .expect("seq");
    assert!(seen > sub["last_seq"].as_i64().expect("last_seq"));
    bob_ws.close().await;

    let (status, _) = patch(&s, &ann, id, "final").await;
    assert_eq!(status, StatusCode::OK);
    let (other, _) = send(&s, &ann, lobby, "secret words").await;
    let (status, _) = delete(&s, &ann, other).await;
    assert_eq!(status, StatusCode::OK);

    let mut bob_ws = s.ws("/ws/", &bob).await;
    let (replayed, sub) = bob_ws.subscribe(json!(lobby), Some(seen)).await;
    // Messages come as the message itself, changes as their frame.
    let kinds: Vec<(&str, i64)> = replayed
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap_or("message"),
                f["seq"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("message_edited", seen + 1),
            ("message", seen + 2),
            ("message_deleted", seen + 3),
        ],
        "{replayed:?}"
    );
    assert_eq!(sub["last_seq"], seen + 3);
    assert_eq!(replayed[0]["message"]["body"], "final");
    assert_eq!(replayed[1]["deleted"], true, "as it stands now");
    assert!(
        !serde_json::to_string(&replayed)
            .expect("json")
            .contains("secret words"),
        "the deleted body is gone everywhere"
    );
    bob_ws.expect_quiet().await;
}

async fn put_reaction(
    s: &TestServer,
    user: &TestUser,
    id: i64,
    key: &str,
    method: &str,
) -> (StatusCode, Value) {
    let key = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    s.call(
        method,
        &format!("/chat/messages/{id}/reactions/{key}/"),
        Some(&user.access),
        None,
    )
    .await
}

async fn reactions_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let (id, seq) = send(&s, &ann, lobby, "react to this").await;
    let mut watcher = s.ws("/ws/", &ann).await;
    watcher.subscribe(json!(lobby), None).await;

    let (status, message) = put_reaction(&s, &bob, id, "👍", "PUT").await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(
        message["reactions"],
        json!([{"key": "👍", "count": 1, "me": true}])
    );
    let event = watcher.expect("reaction").await;
    assert_eq!(event["key"], "👍");
    assert_eq!(event["added"], true);
    assert_eq!(event["user"], bob.id);
    assert_eq!(event["seq"], seq + 1);
    assert_eq!(
        event["message"]["reactions"],
        json!([{"key": "👍", "count": 1}]),
        "`me` is nobody's in a shared frame"
    );
    // Again: the same answer, no event.
    let (status, again) = put_reaction(&s, &bob, id, "👍", "PUT").await;
    assert_eq!(
        (status, &again["reactions"]),
        (StatusCode::OK, &message["reactions"])
    );
    watcher.expect_quiet().await;

    // Over the socket: Ann reacts too; the event comes before the pong.
    let frames = exchange(
        &mut watcher,
        json!({"type": "react", "message_id": id, "key": "👍"}),
    )
    .await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["message"]["reactions"][0]["count"], 2);
    // History shows each viewer's own.
    let (_, history) = s
        .get(&format!("/chat/history/?room={lobby}"), &bob.access)
        .await;
    assert_eq!(
        history["chat_history"][0]["reactions"],
        json!([{"key": "👍", "count": 2, "me": true}])
    );
    let (_, timeline) = s
        .get(&format!("/chat/rooms/{lobby}/events/"), &eve.access)
        .await;
    assert_eq!(
        timeline["code"], "room_not_found",
        "a stranger reads nothing"
    );

    // Refusals: bad keys, strangers, unknown messages.
    for key in ["", "two words", &"x".repeat(33)] {
        let (status, body) = s
            .call(
                "PUT",
                &format!(
                    "/chat/messages/{id}/reactions/{}/",
                    percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                ),
                Some(&bob.access),
                None,
            )
            .await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{key:?}: {status} {body}"
        );
        assert!(
            body["code"] == "invalid_input" || body["code"] == "not_found",
            "{key:?}: {body}"
        );
    }
    let (status, body) = put_reaction(&s, &eve, id, "👍", "PUT").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("message_not_found"))
    );
    let frames = exchange(
        &mut watcher,
        json!({"type": "react", "message_id": id, "key": "a b"}),
    )
    .await;
    assert_eq!(frames[0]["code"], "invalid_input", "{frames:?}");

    // Taken back.
    let (status, message) = put_reaction(&s, &bob, id, "👍", "DELETE").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        message["reactions"],
        json!([{"key": "👍", "count": 1}]),
        "Ann's is left, not Bob's"
    );
    let event = watcher.expect("reaction").await;
    assert_eq!(event["added"], false);
    // Deleted: reactions go with the message.
    let (status, tombstone) = delete(&s, &ann, id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(tombstone.get("reactions").is_none(), "{tombstone}");
    watcher.expect("message_deleted").await;
    let (status, body) = put_reaction(&s, &bob, id, "👍", "PUT").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("message_deleted"))
    );
}

async fn pins_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    joined(&s, &bob, lobby).await;
    let (first, _) = send(&s, &bob, lobby, "worth keeping").await;
    let (second, _) = send(&s, &bob, lobby, "also").await;
    let mut watcher = s.ws("/ws/", &bob).await;
    watcher.subscribe(json!(lobby), None).await;

    let (status, pinned) = s
        .call(
            "PUT",
            &format!("/chat/messages/{first}/pin/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(
        (status, &pinned["pinned"]),
        (StatusCode::OK, &json!(true)),
        "{pinned}"
    );
    let event = watcher.expect("message_pinned").await;
    assert_eq!(event["message"]["id"], first);
    assert_eq!(event["user"], ann.id);
    // Bob is a member, not the moderator.
    let (status, body) = s
        .call(
            "PUT",
            &format!("/chat/messages/{second}/pin/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "Only whoever moderates the room can do this", "code": "not_moderator"})
        )
    );
    // Over the socket, Ann pins the second: the event before the pong.
    let mut ann_ws = s.ws("/ws/", &ann).await;
    ann_ws.subscribe(json!(lobby), None).await;
    assert_eq!(watcher.expect("presence").await["user"], ann.id);
    let frames = exchange(&mut ann_ws, json!({"type": "pin", "message_id": second})).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "message_pinned");
    watcher.expect("message_pinned").await;

    let (status, pins) = s
        .get(&format!("/chat/rooms/{lobby}/pins/"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = pins["pins"]
        .as_array()
        .expect("pins")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&json!(second), &json!(first)],
        "the latest pin first"
    );
    let (status, body) = s
        .get(&format!("/chat/rooms/{lobby}/pins/"), &eve.access)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );

    let frames = exchange(&mut ann_ws, json!({"type": "unpin", "message_id": first})).await;
    assert_eq!(frames[0]["type"], "message_unpinned", "{frames:?}");
    assert_eq!(frames[0]["message"].get("pinned"), None);
    let (_, pins) = s
        .get(&format!("/chat/rooms/{lobby}/pins/"), &bob.access)
        .await;
    assert_eq!(pins["pins"].as_array().map(Vec::len), Some(1));
}

async fn search_over_http(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let secret = s.room(&ann, "secret", "private", &[]).await;
    joined(&s, &bob, lobby).await;
    let (fox, fox_seq) = send(&s, &ann, lobby, "The quick brown fox").await;
    send(&s, &bob, lobby, "quick, said Bob").await;
    send(&s, &ann, secret, "quick secret plans").await;
    let (gone, _) = send(&s, &ann, lobby, "quick but deleted").await;
    let (status, _) = delete(&s, &ann, gone).await;
    assert_eq!(status, StatusCode::OK);

    let (status, found) = s.get("/chat/search/?q=QUICK", &bob.access).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let bodies: Vec<&str> = found["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["message"]["body"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(bodies, vec!["quick, said Bob", "The quick brown fox"]);
    assert_eq!(found["has_more"], false);
    let (_, found) = s
        .get("/chat/search/?q=brown%20fox!&limit=1", &ann.access)
        .await;
    let hit = &found["hits"][0];
    assert_eq!(
        (
            &hit["room"],
            &hit["room_name"],
            &hit["seq"],
            &hit["message"]["id"]
        ),
        (&json!(lobby), &json!("lobby"), &json!(fox_seq), &json!(fox))
    );
    let (_, found) = s
        .get(&format!("/chat/search/?q=quick&room={secret}"), &ann.access)
        .await;
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1));
    // A room the caller is not in answers as one that does not exist.
    let (status, body) = s
        .get(&format!("/chat/search/?q=quick&room={secret}"), &bob.access)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );
    let (_, found) = s.get("/chat/search/?q=quick", &eve.access).await;
    assert_eq!(found["hits"], json!([]), "a stranger finds nothing");
    for bad in [
        "/chat/search/?q=%20!!%20",
        "/chat/search/",
        "/chat/search/?q=x&limit=0",
    ] {
        let (status, body) = s.get(bad, &bob.access).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{bad}: {body}"
        );
    }
}
