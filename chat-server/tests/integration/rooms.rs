//! Rooms over HTTP: create, join, list, detail, invite, leave, delete, with
//! every error of the contract.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    create_room_and_its_errors,
    join_rules,
    list_detail_invite_leave,
    delete_room
);

fn err(body: &Value) -> (&str, &str) {
    (
        body["code"].as_str().unwrap_or(""),
        body["error"].as_str().unwrap_or(""),
    )
}

async fn create_room_and_its_errors(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;

    let (status, room) = s
        .post(
            "/chat/create-room/",
            &ann.access,
            json!({"name": "Room Name", "invited_users": [bob.id]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(room["name"], "Room Name");
    assert_eq!(room["type"], "private", "private by default");
    assert_eq!(room["creator"], "ann");
    assert_eq!(room["invited_users"], json!(["bob"]));
    assert_eq!(room["members"], json!(["ann"]));
    assert!(room["created_at"].is_string());

    let (status, body) = s
        .post(
            "/chat/create-room/",
            &ann.access,
            json!({"name": "Room Name"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err(&body), ("room_name_taken", "Room name already exists"));

    for missing in [json!({}), json!({"name": ""}), json!({"name": "   "})] {
        let (status, body) = s.post("/chat/create-room/", &ann.access, missing).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err(&body), ("room_name_required", "Room name is required"));
    }
    for bad in [
        json!({"name": "x", "type": "secret"}),
        json!({"name": "x", "type": "direct"}),
        json!({"name": "x", "invited_users": [9999]}),
        json!({"name": "12345"}),
        json!({"name": "a".repeat(65)}),
    ] {
        let (status, body) = s.post("/chat/create-room/", &ann.access, bad.clone()).await;
        assert_eq!(
            (status, err(&body).0),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{bad}"
        );
    }
}

async fn join_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let public = s.room(&ann, "lobby", "public", &[]).await;
    let private = s.room(&ann, "secret", "private", &[&bob]).await;
    let game = s.room(&ann, "chess", "game", &[]).await;

    let (status, joined) = s
        .post("/chat/join-room/", &eve.access, json!({"room_id": public}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        joined,
        json!({"id": public, "name": "lobby", "type": "public", "members": ["ann", "eve"]})
    );

    // Not invited: answered like a room that does not exist, so that
    // join-room cannot probe which ids are private rooms.
    for room in [private, game] {
        let (status, body) = s
            .post("/chat/join-room/", &eve.access, json!({"room_id": room}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(err(&body), ("room_not_found", "Room not found"));
    }
    // The creator who left a private room knows it exists: refused plainly.
    let (status, _) = s
        .call(
            "POST",
            &format!("/chat/rooms/{game}/leave/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .post("/chat/join-room/", &ann.access, json!({"room_id": game}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        err(&body),
        ("not_authorized", "You are not authorized to join this room")
    );

    let (status, joined) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": private}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["members"], json!(["ann", "bob"]));
    // Joining again is harmless.
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": private}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": 424242}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err(&body), ("room_not_found", "Room not found"));
    let (status, body) = s
        .post("/chat/join-room/", &bob.access, json!({"room": 1}))
        .await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
}

async fn list_detail_invite_leave(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let team = s.room(&ann, "team", "private", &[&bob]).await;
    s.send(&ann, team, "hello team").await;

    // Bob is invited to team: listed without its messages, no unread.
    let (status, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(status, StatusCode::OK);
    let rooms = rooms.as_array().expect("array");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(rooms[0]["id"], team);
    assert_eq!(rooms[0]["membership"], "invited");
    assert_eq!(rooms[0]["unread_count"], 0);
    assert_eq!(rooms[0]["last_message"], Value::Null);

    // Detail: members, and anyone for a public room; not an invitee of a
    // private one (the contract: 404 for non-members of non-public rooms).
    let (status, detail) = s.get(&format!("/chat/rooms/{team}/"), &ann.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["members"], json!(["ann"]));
    assert_eq!(detail["invited_users"], json!(["bob"]));
    let (status, body) = s.get(&format!("/chat/rooms/{team}/"), &bob.access).await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::NOT_FOUND, "room_not_found"),
        "an invitee is not a member"
    );
    let (status, body) = s.get(&format!("/chat/rooms/{team}/"), &eve.access).await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::NOT_FOUND, "room_not_found"),
        "hidden from strangers"
    );
    let (status, _) = s.get(&format!("/chat/rooms/{lobby}"), &eve.access).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get("/chat/rooms/abc/", &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Invite: members only.
    let (status, body) = s
        .post(
            &format!("/chat/rooms/{team}/invite/"),
            &bob.access,
            json!({"user_ids": [eve.id]}),
        )
        .await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::FORBIDDEN, "not_member")
    );
    let (status, body) = s
        .post(
            &format!("/chat/rooms/{team}/invite/"),
            &eve.access,
            json!({"user_ids": [eve.id]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a stranger learns nothing: {body}"
    );
    let (status, room) = s
        .post(
            &format!("/chat/rooms/{team}/invite/"),
            &ann.access,
            json!({"user_ids": [eve.id, bob.id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room["invited_users"], json!(["bob", "eve"]));

    // Bob joins: the room lists with unread 0 (he joined after the message)
    // and its last message.
    s.post("/chat/join-room/", &bob.access, json!({"room_id": team}))
        .await;
    s.send(&ann, team, "welcome bob").await;
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    let team_entry = rooms
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["id"] == team)
        .expect("team listed")
        .clone();
    assert_eq!(team_entry["membership"], "member");
    assert_eq!(team_entry["unread_count"], 1);
    assert_eq!(team_entry["member_count"], 2);
    assert_eq!(team_entry["last_message"]["body"], "welcome bob");
    assert_eq!(team_entry["last_message"]["sender_id"], ann.id);
    assert_eq!(team_entry["last_message"]["is_read"], false);

    // Leave: 204, then the room is no longer readable nor listed.
    let (status, body) = s
        .call(
            "POST",
            &format!("/chat/rooms/{team}/leave/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = s
        .get(&format!("/chat/history/?room={team}"), &bob.access)
        .await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let (_, rooms) = s.get("/chat/rooms/", &bob.access).await;
    assert!(
        rooms
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["id"] != team)
    );
}

async fn delete_room(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "doomed", "public", &[]).await;
    s.post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    s.send(&ann, room, "last words").await;

    let (status, body) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::FORBIDDEN, "not_authorized")
    );
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(
        (status, err(&body).0),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The name is free again, and the new room starts at seq 1.
    let again = s.room(&ann, "doomed", "public", &[]).await;
    assert_eq!(s.send(&ann, again, "fresh start").await, 1);
}
