//! The server API: a backend with an API key upserts the host's users,
//! mints their tokens, makes rooms and sets their members, sends as users
//! and bots and reads timelines; keys from the library and from
//! `chat-server api-key`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(a_backend_runs_users_rooms_and_bots);

/// An API key made the way an embedder makes one.
pub(crate) async fn api_key(s: &TestServer, name: &str) -> String {
    s.server()
        .chat()
        .create_api_key(name)
        .await
        .expect("API key")
        .0
}

/// A server call with `key`.
pub(crate) async fn server_call(
    s: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    s.call(method, path, Some(key), body).await
}

async fn a_backend_runs_users_rooms_and_bots(backend: Backend) {
    let s = TestServer::start(backend).await;
    let key = api_key(&s, "backend").await;
    assert!(key.starts_with("chat_key_") && key.len() == 9 + 64, "{key}");

    // Users by the host's id.
    let (status, ann) = server_call(
        &s,
        &key,
        "PUT",
        "/server/users/host%7Cann/",
        Some(json!({"display_name": "Ann", "username": "ann"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ann}");
    assert_eq!(
        (
            ann["username"].as_str(),
            ann["display_name"].as_str(),
            ann["external_id"].as_str(),
            ann["bot"].as_bool()
        ),
        (Some("ann"), Some("Ann"), Some("host|ann"), Some(false))
    );
    let (_, renamed) = server_call(
        &s,
        &key,
        "PUT",
        "/server/users/host%7Cann/",
        Some(json!({"display_name": "Ann B."})),
    )
    .await;
    assert_eq!(
        (renamed["id"].clone(), renamed["display_name"].as_str()),
        (ann["id"].clone(), Some("Ann B."))
    );
    for (id, name) in [("host|bob", "Bob"), ("host|carol", "Carol")] {
        let path = format!("/server/users/{}/", id.replace('|', "%7C"));
        let (status, body) =
            server_call(&s, &key, "PUT", &path, Some(json!({"display_name": name}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = server_call(
        &s,
        &key,
        "PUT",
        "/server/users/host%7Cdan/",
        Some(json!({"display_name": "   "})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );

    // Bots are named bot:{name}, and a bot:{name} is a bot.
    let (status, body) = server_call(
        &s,
        &key,
        "PUT",
        "/server/users/host%7Czed/",
        Some(json!({"bot": true})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, body) = server_call(
        &s,
        &key,
        "PUT",
        "/server/users/bot:watcher/",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, body["bot"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );

    // Tokens the host's login hands out: they work and refresh like any.
    let (status, tokens) =
        server_call(&s, &key, "POST", "/server/users/host%7Cbob/tokens/", None).await;
    assert_eq!(status, StatusCode::CREATED, "{tokens}");
    let bob = TestUser {
        id: 0,
        access: tokens["access"].as_str().expect("access").to_owned(),
        refresh: tokens["refresh"].as_str().expect("refresh").to_owned(),
    };
    let (status, me) = s.get("/api/users/me/", &bob.access).await;
    assert_eq!(
        (status, me["display_name"].as_str()),
        (StatusCode::OK, Some("Bob"))
    );
    let bob = TestUser {
        id: me["id"].as_i64().expect("id"),
        ..bob
    };
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": bob.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server_call(&s, &key, "POST", "/server/users/nobody/tokens/", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );

    // A room made by the backend: its members are in at once.
    let (status, room) = server_call(
        &s,
        &key,
        "POST",
        "/server/rooms/",
        Some(
            json!({"name": "ops", "type": "private", "owner": "host|ann", "members": ["host|bob"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["members"].as_array().map(Vec::len), Some(2), "{room}");
    assert_eq!(room["owner"], "ann");
    let id = room["id"].as_i64().expect("room id");
    for (body, code, why) in [
        (
            json!({"name": "ops", "owner": "host|ann"}),
            StatusCode::CONFLICT,
            "name taken",
        ),
        (
            json!({"name": "ops-2", "owner": "host|nobody"}),
            StatusCode::NOT_FOUND,
            "unknown owner",
        ),
        (
            json!({"name": "ops-3", "owner": "host|ann", "members": ["host|nobody"]}),
            StatusCode::NOT_FOUND,
            "unknown member",
        ),
        (
            json!({"name": "12345", "owner": "host|ann"}),
            StatusCode::BAD_REQUEST,
            "all digits",
        ),
    ] {
        let (status, answer) = server_call(&s, &key, "POST", "/server/rooms/", Some(body)).await;
        assert_eq!(status, code, "{why}: {answer}");
    }

    // Bob listens; the backend sends as Bob and as a bot.
    let mut socket = s.ws(&format!("/ws/chat/{id}/"), &bob).await.with_members();
    socket.expect("subscribed").await;
    let messages = format!("/server/rooms/{id}/messages/");
    let send = |body: Value| server_call(&s, &key, "POST", &messages, Some(body));
    let (status, sent) =
        send(json!({"user": "host|bob", "message": "from the backend", "client_id": "b-1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["sender"], bob.id);
    let (status, again) =
        send(json!({"user": "host|bob", "message": "from the backend", "client_id": "b-1"})).await;
    assert_eq!(
        (status, again["id"].clone()),
        (StatusCode::OK, sent["id"].clone()),
        "a repeat is the original"
    );
    // Bob's own socket is not the sender's: it hears the message.
    assert_eq!(
        socket.expect("message").await["message"]["body"],
        "from the backend"
    );

    let (status, bot_message) = send(json!({"bot": "reminders", "message": "stand-up in 5"})).await;
    assert_eq!(status, StatusCode::CREATED, "{bot_message}");
    let joined = socket.expect("member").await;
    assert_eq!(joined["change"], "joined", "{joined}");
    assert_eq!(
        socket.expect("message").await["message"]["body"],
        "stand-up in 5"
    );
    let (_, detail) = s.get(&format!("/chat/rooms/{id}/"), &bob.access).await;
    assert!(
        detail["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m == "reminders"),
        "{detail}"
    );
    let (status, second) = send(json!({"bot": "reminders", "message": "stand-up now"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["sender"], bot_message["sender"], "one bot user");
    assert_eq!(
        socket.expect("message").await["message"]["body"],
        "stand-up now"
    );
    let (_, users) = s.get("/api/users/", &bob.access).await;
    let bot = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == "reminders")
        .expect("the bot is a user")
        .clone();
    assert_eq!(bot["bot"], true, "{bot}");

    for (body, code, why) in [
        (
            json!({"message": "no sender"}),
            "invalid_input",
            "neither user nor bot",
        ),
        (
            json!({"user": "host|bob", "bot": "reminders", "message": "both"}),
            "invalid_input",
            "both",
        ),
        (
            json!({"bot": "a b", "message": "x"}),
            "invalid_input",
            "bad bot name",
        ),
        (
            json!({"user": "host|carol", "message": "x"}),
            "not_member",
            "not a member",
        ),
        (
            json!({"user": "host|bob", "message": ""}),
            "empty_body",
            "empty",
        ),
    ] {
        let (_, answer) = send(body).await;
        assert_eq!(answer["code"], code, "{why}: {answer}");
    }

    // The members become Carol (and the owner): Bob and the bot leave.
    let (status, after) = server_call(
        &s,
        &key,
        "PUT",
        &format!("/server/rooms/{id}/members/"),
        Some(json!({"members": ["host|carol"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let mut members: Vec<String> = after["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().unwrap_or_default().to_owned())
        .collect();
    members.sort();
    assert_eq!(members, ["ann", "host_carol"]);
    // Bob hears his own leaving (the bot's too, if it went first).
    loop {
        let left = socket.expect("member").await;
        assert_eq!(left["change"], "left", "{left}");
        if left["user"] == bob.id {
            break;
        }
    }

    // Some in, some out, the rest stay; the owner cannot be taken out.
    let (status, changed) = server_call(
        &s,
        &key,
        "POST",
        &format!("/server/rooms/{id}/members/"),
        Some(json!({"add": ["host|bob", "host|carol"], "remove": ["host|carol"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let mut members: Vec<&str> = changed["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["ann", "host_bob"]);
    let (status, body) = server_call(
        &s,
        &key,
        "POST",
        &format!("/server/rooms/{id}/members/"),
        Some(json!({"remove": ["host|ann"]})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );

    // The backend reads the whole timeline, whoever is in the room.
    let (status, events) = server_call(
        &s,
        &key,
        "GET",
        &format!("/server/rooms/{id}/events/?limit=50"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let events = events["events"].as_array().expect("events");
    let messages: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["message"]["body"].as_str())
        .collect();
    assert_eq!(
        messages,
        ["from the backend", "stand-up in 5", "stand-up now"]
    );
    let seqs: Vec<i64> = events
        .iter()
        .filter_map(|e| e["seq"].as_i64().or(e["message"]["seq"].as_i64()))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {seqs:?}"
    );
    let (status, _) = server_call(&s, &key, "GET", "/server/rooms/999999/events/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `chat-server api-key create|list|revoke` on the storage of a running
/// server: the key it prints works at once, and stops at once when revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let s =
        TestServer::start_on(url.clone(), None, tempfile::tempdir().expect("dir"), |_| {}).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(args)
            .args(["--storage", &url])
            .env("RUST_LOG", "warn")
            .output()
            .expect("chat-server runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["api-key", "create", "ci-backend"]);
    assert!(ok, "{err}");
    let key = out.lines().next().expect("the key first").trim().to_owned();
    assert!(key.starts_with("chat_key_"), "{out}");
    let (ok, _, err) = cli(&["api-key", "create", "ci-backend"]);
    assert!(!ok && err.contains("already named"), "a live name: {err}");

    let (status, body) =
        server_call(&s, &key, "PUT", "/server/users/cli-user/", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (ok, list, err) = cli(&["api-key", "list"]);
    assert!(ok, "{err}");
    assert!(list.contains("ci-backend"), "{list}");
    assert!(!list.contains(&key), "the key is never listed");

    let (ok, _, err) = cli(&["api-key", "revoke", "ci-backend"]);
    assert!(ok, "{err}");
    let (status, body) =
        server_call(&s, &key, "PUT", "/server/users/cli-user/", Some(json!({}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (ok, _, err) = cli(&["api-key", "revoke", "ci-backend"]);
    assert!(!ok && err.contains("no live API key"), "{err}");
}
