//! Moderating rooms over HTTP and WebSocket: roles, kicks, bans, mutes and
//! handovers, each error with its code, the member events every socket of
//! the room gets (a removed member's sockets last), and the effect on a
//! second instance behind the same Redis.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::two_instances;
use crate::support::{Backend, TestServer, TestUser, WsClient, each_backend};

each_backend!(
    moderation_over_http_and_websocket,
    banned_users_see_a_private_room_as_missing,
    room_settings_over_http_and_websocket,
    the_public_directory,
    blocking_users
);

async fn moderate(s: &TestServer, by: &TestUser, room: i64, body: Value) -> (StatusCode, Value) {
    s.post(&format!("/chat/rooms/{room}/moderate/"), &by.access, body)
        .await
}

/// Moderates and expects it done: the event.
async fn done(s: &TestServer, by: &TestUser, room: i64, body: Value) -> Value {
    let (status, answer) = moderate(s, by, room, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["event"].clone()
}

async fn refused(
    s: &TestServer,
    by: &TestUser,
    room: i64,
    body: Value,
    status: StatusCode,
    code: &str,
) {
    let (got, answer) = moderate(s, by, room, body.clone()).await;
    assert_eq!(
        (got, answer["code"].as_str()),
        (status, Some(code)),
        "{body} answered {answer}"
    );
}

/// The next member event on a socket (presence skipped), as the HTTP
/// answer has it (without the frame's `type`).
async fn member(ws: &mut WsClient) -> Value {
    let mut f = next(ws, "member").await;
    f.as_object_mut().expect("an object").remove("type");
    f
}

/// The next frame but presence, which must be a `ty`.
async fn next(ws: &mut WsClient, ty: &str) -> Value {
    loop {
        let f = ws.frame().await;
        if f["type"] != "presence" {
            assert_eq!(f["type"], ty, "{f}");
            return f;
        }
    }
}

/// The room frames (messages, member events) a socket has before the
/// answer to a ping.
async fn room_frames(ws: &mut WsClient) -> Vec<Value> {
    ws.send(json!({"type": "ping"})).await;
    let mut seen = Vec::new();
    loop {
        let f = ws.frame().await;
        match f["type"].as_str() {
            Some("pong") => return seen,
            Some("message" | "member") => seen.push(f),
            _ => {}
        }
    }
}

async fn join(s: &TestServer, user: &TestUser, room: i64) -> (StatusCode, Value) {
    s.post("/chat/join-room/", &user.access, json!({"room_id": room}))
        .await
}

async fn moderation_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    for u in [&bob, &cat] {
        assert_eq!(join(&s, u, lobby).await.0, StatusCode::OK);
    }
    let mut a = s.ws("/ws/", &ann).await.with_members();
    a.subscribe(json!(lobby), None).await;
    let mut c = s.ws("/ws/", &cat).await.with_members();
    c.subscribe(json!(lobby), None).await;

    // Bad requests, each with its code.
    let kick_cat = json!({"user_id": cat.id, "action": "kick"});
    refused(
        &s,
        &bob,
        lobby,
        kick_cat.clone(),
        StatusCode::FORBIDDEN,
        "not_moderator",
    )
    .await;
    refused(
        &s,
        &eve,
        lobby,
        kick_cat.clone(),
        StatusCode::FORBIDDEN,
        "not_member",
    )
    .await;
    refused(
        &s,
        &ann,
        987_654,
        kick_cat.clone(),
        StatusCode::NOT_FOUND,
        "room_not_found",
    )
    .await;
    refused(
        &s,
        &ann,
        lobby,
        json!({"user_id": 987_654, "action": "kick"}),
        StatusCode::NOT_FOUND,
        "user_not_found",
    )
    .await;
    refused(
        &s,
        &ann,
        lobby,
        json!({"user_id": eve.id, "action": "kick"}),
        StatusCode::NOT_FOUND,
        "not_in_room",
    )
    .await;
    refused(
        &s,
        &ann,
        lobby,
        json!({"user_id": ann.id, "action": "mute"}),
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    for bad in [
        json!({"user_id": cat.id, "action": "ban", "until": "2001-01-01T00:00:00Z"}),
        json!({"user_id": cat.id, "action": "kick", "until": "2999-01-01T00:00:00Z"}),
        json!({"user_id": cat.id, "action": "mute", "reason": "no"}),
        json!({"user_id": cat.id, "action": "kick", "reason": "x".repeat(501)}),
        json!({"user_id": cat.id, "action": "set_role"}),
        json!({"user_id": cat.id, "action": "set_role", "role": "owner"}),
        json!({"user_id": cat.id, "action": "explode"}),
        json!({"action": "kick"}),
    ] {
        refused(
            &s,
            &ann,
            lobby,
            bad,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
    }

    // The owner names an admin: every socket hears it.
    let event = done(
        &s,
        &ann,
        lobby,
        json!({"user_id": bob.id, "action": "set_role", "role": "admin"}),
    )
    .await;
    assert_eq!(
        (&event["change"], &event["role"], &event["by"]),
        (&json!("role_changed"), &json!("admin"), &json!(ann.id))
    );
    assert_eq!(member(&mut a).await, event);
    assert_eq!(member(&mut c).await, event);
    let (_, detail) = s.get(&format!("/chat/rooms/{lobby}/"), &cat.access).await;
    assert_eq!(
        (&detail["owner"], &detail["admins"]),
        (&json!("ann"), &json!(["bob"]))
    );
    refused(
        &s,
        &bob,
        lobby,
        json!({"user_id": ann.id, "action": "kick"}),
        StatusCode::FORBIDDEN,
        "insufficient_role",
    )
    .await;
    refused(
        &s,
        &bob,
        lobby,
        json!({"user_id": cat.id, "action": "set_role", "role": "admin"}),
        StatusCode::FORBIDDEN,
        "insufficient_role",
    )
    .await;

    // An admin mutes over the socket: sends are refused, nothing else.
    let mut b = s.ws("/ws/", &bob).await.with_members();
    b.subscribe(json!(lobby), None).await;
    b.send(
        json!({"type": "moderate", "room": lobby, "user_id": cat.id, "action": "mute",
        "until": "2999-01-01T00:00:00Z"}),
    )
    .await;
    let muted = member(&mut b).await;
    assert_eq!(
        (&muted["change"], &muted["until"]),
        (&json!("muted"), &json!("2999-01-01T00:00:00Z"))
    );
    assert_eq!(member(&mut c).await, muted);
    assert_eq!(member(&mut a).await, muted);
    let (status, body) = s
        .post(
            "/chat/send/",
            &cat.access,
            json!({"room": lobby, "message": "hush"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("muted")),
        "{body}"
    );
    c.send(json!({"type": "send", "room": lobby, "body": "hush", "client_id": "h1"}))
        .await;
    let error = next(&mut c, "error").await;
    assert_eq!(
        (&error["code"], &error["client_id"]),
        (&json!("muted"), &json!("h1"))
    );
    let (_, rooms) = s.get("/chat/rooms/", &cat.access).await;
    assert_eq!(
        (
            &rooms[0]["muted"],
            &rooms[0]["muted_until"],
            &rooms[0]["role"]
        ),
        (
            &json!(true),
            &json!("2999-01-01T00:00:00Z"),
            &json!("member")
        )
    );
    let unmuted = done(
        &s,
        &ann,
        lobby,
        json!({"user_id": cat.id, "action": "unmute"}),
    )
    .await;
    assert_eq!(unmuted["change"], "unmuted");
    let (_, again) = moderate(
        &s,
        &ann,
        lobby,
        json!({"user_id": cat.id, "action": "unmute"}),
    )
    .await;
    assert_eq!(again, json!({"event": null}), "nothing to lift");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(member(ws).await["change"], "unmuted");
    }

    // A kick over the socket: the kicked hears why, then nothing more.
    b.send(
        json!({"type": "moderate", "room": lobby, "user_id": cat.id, "action": "kick",
        "reason": "off topic"}),
    )
    .await;
    let kicked = member(&mut b).await;
    assert_eq!(
        (&kicked["change"], &kicked["reason"], &kicked["by"]),
        (&json!("kicked"), &json!("off topic"), &json!(bob.id))
    );
    assert_eq!(member(&mut c).await, kicked, "the kicked hears it");
    assert_eq!(member(&mut a).await, kicked);
    s.send(&ann, lobby, "after the kick").await;
    assert_eq!(
        next(&mut a, "message").await["message"]["body"],
        "after the kick"
    );
    assert_eq!(
        room_frames(&mut c).await,
        Vec::<Value>::new(),
        "the kicked socket hears nothing more"
    );
    let (status, body) = s
        .post(
            "/chat/send/",
            &cat.access,
            json!({"room": lobby, "message": "hey"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_member"))
    );

    // A ban keeps out, is listed to admins, and lifts.
    assert_eq!(
        join(&s, &cat, lobby).await.0,
        StatusCode::OK,
        "a kick lets back in"
    );
    let banned = done(
        &s,
        &bob,
        lobby,
        json!({"user_id": cat.id, "action": "ban", "reason": "again", "until": "2999-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(banned["change"], "banned");
    let (status, body) = join(&s, &cat, lobby).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("banned"))
    );
    let (status, body) = s
        .post(
            &format!("/chat/rooms/{lobby}/invite/"),
            &ann.access,
            json!({"user_ids": [cat.id]}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("banned"))
    );
    let mut rejoin = s.ws("/ws/", &cat).await;
    rejoin
        .send(json!({"type": "subscribe", "room": lobby}))
        .await;
    assert_eq!(next(&mut rejoin, "error").await["code"], "banned");
    let (status, bans) = s
        .get(&format!("/chat/rooms/{lobby}/bans/"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{bans}");
    assert_eq!(
        (
            &bans["bans"][0]["user_id"],
            &bans["bans"][0]["reason"],
            &bans["bans"][0]["by"]
        ),
        (&json!(cat.id), &json!("again"), &json!(bob.id))
    );
    let (status, body) = s
        .get(&format!("/chat/rooms/{lobby}/bans/"), &eve.access)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_member"))
    );
    done(
        &s,
        &ann,
        lobby,
        json!({"user_id": cat.id, "action": "unban"}),
    )
    .await;
    assert_eq!(join(&s, &cat, lobby).await.0, StatusCode::OK);
    let (status, body) = s
        .get(&format!("/chat/rooms/{lobby}/bans/"), &cat.access)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_moderator"))
    );

    // A handover: the old owner stays as an admin and may no longer delete.
    let handed = done(
        &s,
        &ann,
        lobby,
        json!({"user_id": bob.id, "action": "transfer_ownership"}),
    )
    .await;
    assert_eq!(
        (&handed["change"], &handed["role"]),
        (&json!("role_changed"), &json!("owner"))
    );
    let (_, detail) = s.get(&format!("/chat/rooms/{lobby}/"), &ann.access).await;
    assert_eq!(
        (&detail["owner"], &detail["admins"]),
        (&json!("bob"), &json!(["ann"]))
    );
    let (status, body) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{lobby}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_authorized"))
    );
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(rooms[0]["role"], "owner");

    // History and resume carry every member event, in order.
    let (_, page) = s
        .get(
            &format!("/chat/rooms/{lobby}/events/?after=0&limit=200"),
            &bob.access,
        )
        .await;
    let changes: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "member" && e.get("by").is_some())
        .map(|e| e["change"].as_str().expect("change"))
        .collect();
    assert_eq!(
        changes,
        [
            "role_changed",
            "muted",
            "unmuted",
            "kicked",
            "banned",
            "unbanned",
            "role_changed"
        ]
    );

    // Conversations take none of it.
    let (_, conversation) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    let direct = conversation["id"].as_i64().expect("id");
    refused(
        &s,
        &ann,
        direct,
        json!({"user_id": bob.id, "action": "kick"}),
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
}

/// A banned user is a stranger to a private room: every call answers as
/// for a room that does not exist.
async fn banned_users_see_a_private_room_as_missing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let cat = s.user("cat").await;
    let vault = s.room(&ann, "vault", "private", &[&cat]).await;
    assert_eq!(join(&s, &cat, vault).await.0, StatusCode::OK);
    done(&s, &ann, vault, json!({"user_id": cat.id, "action": "ban"})).await;
    let (_, missing) = s.get("/chat/rooms/987654/", &cat.access).await;
    let (status, body) = s.get(&format!("/chat/rooms/{vault}/"), &cat.access).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &missing));
    let (status, body) = join(&s, &cat, vault).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &missing));
    let (status, body) = s
        .get(&format!("/chat/history/?room={vault}"), &cat.access)
        .await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &missing));
}

/// Two instances behind one Redis: a kick made on one stops the kicked
/// member's socket on the other at once, and a role given on one counts
/// on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_one_instance_takes_effect_on_the_other() {
    let (a, b) = two_instances("redis://127.0.0.1:6379").await;
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let cat = b.user("cat").await;
    let room = a.room(&ann, "shared", "public", &[]).await;
    assert_eq!(join(&b, &cat, room).await.0, StatusCode::OK);
    assert_eq!(join(&a, &bob, room).await.0, StatusCode::OK);
    let mut on_b = b.ws("/ws/", &cat).await.with_members();
    on_b.subscribe(json!(room), None).await;

    done(
        &a,
        &ann,
        room,
        json!({"user_id": bob.id, "action": "set_role", "role": "admin"}),
    )
    .await;
    assert_eq!(member(&mut on_b).await["change"], "role_changed");
    // The role given on A is what B judges by.
    let kicked = done(&b, &bob, room, json!({"user_id": cat.id, "action": "kick"})).await;
    assert_eq!(member(&mut on_b).await, kicked);
    a.send(&ann, room, "after").await;
    assert_eq!(room_frames(&mut on_b).await, Vec::<Value>::new());
    let (status, body) = a
        .post(
            "/chat/send/",
            &cat.access,
            json!({"room": room, "message": "hey"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_member"))
    );
    // A ban made through B keeps the user out when joining through A.
    done(&b, &bob, room, json!({"user_id": cat.id, "action": "ban"})).await;
    let (status, body) = join(&a, &cat, room).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("banned"))
    );
}

async fn patch_room(s: &TestServer, by: &TestUser, room: i64, body: Value) -> (StatusCode, Value) {
    s.call(
        "PATCH",
        &format!("/chat/rooms/{room}/"),
        Some(&by.access),
        Some(body),
    )
    .await
}

/// Settings change by admins and the owner, reach every socket as
/// `room_updated`, and the rule of sending reads them: announcement mode
/// and slow mode refuse with their codes.
async fn room_settings_over_http_and_websocket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    s.room(&ann, "taken", "public", &[]).await;
    for u in [&bob, &cat] {
        assert_eq!(join(&s, u, lobby).await.0, StatusCode::OK);
    }
    done(
        &s,
        &ann,
        lobby,
        json!({"user_id": bob.id, "action": "set_role", "role": "admin"}),
    )
    .await;
    let mut c = s.ws("/ws/", &cat).await.with_members();
    c.subscribe(json!(lobby), None).await;

    for (body, status, code) in [
        (json!({}), StatusCode::BAD_REQUEST, "invalid_input"),
        (
            json!({"name": "123"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"name": "taken"}),
            StatusCode::CONFLICT,
            "room_name_taken",
        ),
        (
            json!({"type": "game"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"topic": "x".repeat(251)}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"avatar_url": "javascript:alert(1)"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"slow_mode_seconds": 21_601}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ] {
        let (got, answer) = patch_room(&s, &ann, lobby, body.clone()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, body) = patch_room(&s, &cat, lobby, json!({"topic": "mine"})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_moderator"))
    );

    let (status, room) = patch_room(
        &s,
        &bob,
        lobby,
        json!({"name": "hall", "topic": "news", "avatar_url": "https://example.com/a.png"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(
        (&room["name"], &room["topic"], &room["avatar_url"]),
        (
            &json!("hall"),
            &json!("news"),
            &json!("https://example.com/a.png")
        )
    );
    let updated = next(&mut c, "room_updated").await;
    assert_eq!(
        (&updated["user"], &updated["settings"]),
        (
            &json!(bob.id),
            &json!({"name": "hall", "topic": "news", "avatar_url": "https://example.com/a.png"})
        )
    );

    // Announcement mode over the socket: members' sends are refused.
    let mut b = s.ws("/ws/", &bob).await.with_members();
    b.subscribe(json!(lobby), None).await;
    b.send(json!({"type": "update_room", "room": lobby, "announcement": true}))
        .await;
    assert_eq!(
        next(&mut b, "room_updated").await["settings"],
        json!({"announcement": true})
    );
    assert_eq!(
        next(&mut c, "room_updated").await["settings"],
        json!({"announcement": true})
    );
    let (status, body) = s
        .post(
            "/chat/send/",
            &cat.access,
            json!({"room": lobby, "message": "hi"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("announcement_only"))
    );
    s.send(&bob, lobby, "an announcement").await;

    // Slow mode: one message, then 429 until the time the error names.
    let (status, _) = patch_room(
        &s,
        &ann,
        lobby,
        json!({"announcement": false, "slow_mode_seconds": 3600}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    s.send(&cat, lobby, "one").await;
    let (status, body) = s
        .post(
            "/chat/send/",
            &cat.access,
            json!({"room": lobby, "message": "two"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("slow_mode"))
    );
    c.send(json!({"type": "send", "room": lobby, "body": "two", "client_id": "t2"}))
        .await;
    loop {
        let f = c.frame().await;
        if f["type"] == "error" {
            assert_eq!(
                (&f["code"], &f["client_id"]),
                (&json!("slow_mode"), &json!("t2"))
            );
            break;
        }
    }
    s.send(&bob, lobby, "admins are not slowed").await;
    s.send(&bob, lobby, "at all").await;
    let (_, detail) = s.get(&format!("/chat/rooms/{lobby}/"), &cat.access).await;
    assert_eq!(detail["slow_mode_seconds"], 3600);

    // A public room made private leaves the directory.
    let (_, listed) = s.get("/chat/directory/?q=hall", &cat.access).await;
    assert_eq!(listed["rooms"][0]["name"], "hall");
    patch_room(&s, &ann, lobby, json!({"type": "private"})).await;
    let (_, listed) = s.get("/chat/directory/?q=hall", &cat.access).await;
    assert_eq!(listed["rooms"], json!([]));
}

/// The directory: public rooms only, by name, prefix, paged.
async fn the_public_directory(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let eve = s.user("eve").await;
    for (name, kind) in [
        ("alpha", "public"),
        ("alps", "public"),
        ("beta", "public"),
        ("alcove", "private"),
        ("alley", "game"),
    ] {
        s.room(&ann, name, kind, &[]).await;
    }
    let (status, page) = s.get("/chat/directory/?q=AL&limit=1", &eve.access).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (&page["rooms"][0]["name"], &page["has_more"]),
        (&json!("alpha"), &json!(true))
    );
    assert_eq!(page["rooms"][0]["member_count"], 1);
    let (_, next_page) = s
        .get("/chat/directory/?q=al&after=alpha", &eve.access)
        .await;
    let names: Vec<&str> = next_page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        (names, &next_page["has_more"]),
        (vec!["alps"], &json!(false))
    );
    let (status, body) = s.get("/chat/directory/?limit=0", &eve.access).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_input"))
    );
    let (status, _) = s.call("GET", "/chat/directory/", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn block(s: &TestServer, by: &TestUser, who: i64) -> (StatusCode, Value) {
    s.call(
        "POST",
        &format!("/api/users/{who}/block/"),
        Some(&by.access),
        None,
    )
    .await
}

/// A blocked user cannot open a conversation with the blocker nor send in
/// it, and gets the answers of a user and a conversation that do not
/// exist; the blocker hears nothing from them; unblocking restores it.
async fn blocking_users(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let (status, opened) = s
        .post(
            "/api/chats/conversations/create/",
            &ann.access,
            json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let direct = opened["id"].as_i64().expect("id");
    assert_eq!(block(&s, &ann, bob.id).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        block(&s, &ann, bob.id).await.0,
        StatusCode::NO_CONTENT,
        "twice is fine"
    );
    let (status, body) = block(&s, &ann, ann.id).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_input"))
    );
    let (status, body) = block(&s, &ann, 987_654).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("user_not_found"))
    );
    let (_, listed) = s.get("/api/users/blocked/", &ann.access).await;
    assert_eq!(listed["blocked"][0]["id"], bob.id);

    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(direct), None).await;
    // Bob's answers are those of things that do not exist.
    let (_, no_user) = s
        .post(
            "/api/chats/conversations/create/",
            &bob.access,
            json!({"user_id": 987_654}),
        )
        .await;
    let (status, body) = s
        .post(
            "/api/chats/conversations/create/",
            &bob.access,
            json!({"user_id": ann.id}),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &no_user));
    let (_, no_room) = s
        .post(
            "/chat/send/",
            &bob.access,
            json!({"room": 987_654, "message": "hi"}),
        )
        .await;
    let (status, body) = s
        .post(
            "/chat/send/",
            &bob.access,
            json!({"room": direct, "message": "hi"}),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &no_room));
    let mut b = s.ws("/ws/", &bob).await;
    b.send(json!({"type": "send", "room": direct, "body": "hi", "client_id": "x"}))
        .await;
    assert_eq!(next(&mut b, "error").await["code"], "room_not_found");
    b.send(json!({"type": "typing", "room": direct})).await;
    assert_eq!(
        room_frames(&mut a).await,
        Vec::<Value>::new(),
        "ann hears nothing"
    );
    // Group rooms are not filtered; ann still writes to bob.
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    assert_eq!(join(&s, &bob, lobby).await.0, StatusCode::OK);
    s.send(&bob, lobby, "in a group").await;
    s.send(&ann, direct, "ann may still write").await;

    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/users/{}/block/", bob.id),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.send(&bob, direct, "unblocked").await;
    let (_, listed) = s.get("/api/users/blocked/", &ann.access).await;
    assert_eq!(listed["blocked"], json!([]));

    // The same over a socket: block, unblock, report; errors as frames.
    let mut a = s.ws("/ws/", &ann).await;
    a.send(json!({"type": "block", "user_id": bob.id})).await;
    a.send(json!({"type": "block", "user_id": ann.id})).await;
    assert_eq!(next(&mut a, "error").await["code"], "invalid_input");
    a.send(json!({"type": "ping"})).await;
    assert_eq!(next(&mut a, "pong").await["type"], "pong");
    let (_, listed) = s.get("/api/users/blocked/", &ann.access).await;
    assert_eq!(listed["blocked"][0]["id"], bob.id);
    a.send(json!({"type": "unblock", "user_id": bob.id})).await;
    a.send(json!({"type": "report", "user_id": bob.id, "reason": "over a socket"}))
        .await;
    a.send(json!({"type": "report", "user_id": bob.id})).await;
    assert_eq!(next(&mut a, "error").await["code"], "invalid_input");
    a.send(json!({"type": "ping"})).await;
    assert_eq!(next(&mut a, "pong").await["type"], "pong");
    let (_, listed) = s.get("/api/users/blocked/", &ann.access).await;
    assert_eq!(listed["blocked"], json!([]));
}
