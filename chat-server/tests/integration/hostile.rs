//! Hostile input: tokens for nobody, NUL bytes, lying headers, paths made
//! to look like traversals, connections that never finish a request or
//! never say anything. Each gets the contract's JSON error or a closed
//! connection, and the server keeps serving everyone else.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Backend, TestServer, each_backend};

const SECRET: &str = "hostile-input-test-secret-0123456789";

each_backend!(
    a_token_for_nobody_is_refused_everywhere,
    nul_is_refused_in_every_text
);

/// An access token signed with the server's own secret for a user that
/// does not exist: 401 over HTTP and at every WebSocket handshake.
async fn a_token_for_nobody_is_refused_everywhere(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.jwt_secret = Some(SECRET.to_owned())).await;
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "987654", "iat": now, "nbf": now, "exp": now + 600, "jti": "x", "typ": "access"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    let (status, body) = s.get("/api/users/me/", &token).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    for path in [
        "/ws/",
        "/ws/chat/lobby/",
        "/ws/chat/1/",
        &format!("/ws/users/{}/", ann.id),
    ] {
        match s.ws_raw(&format!("{path}?token={token}")).await {
            Err((status, body)) => {
                assert_eq!(status, 401, "{path}: {body}");
                assert_eq!(body["code"], "unauthorized", "{path}");
            }
            Ok(_) => panic!("{path} upgraded a token for nobody"),
        }
    }
    // Everyone else is served.
    assert_eq!(s.get("/api/users/me/", &ann.access).await.0, StatusCode::OK);
}

/// NUL (U+0000) in a message body, a client_id, a username, a room name or
/// a query: 400 `invalid_input` on every backend (PostgreSQL cannot store
/// it; the rule is the same everywhere), over HTTP and WebSocket.
async fn nul_is_refused_in_every_text(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let refused = |(status, body): (StatusCode, Value), what: &str| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["code"], "invalid_input", "{what}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("NUL")),
            "{what}: {body}"
        );
    };
    refused(
        s.post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "a\u{0}b"}),
        )
        .await,
        "body",
    );
    refused(
        s.post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "ok", "client_id": "c\u{0}"}),
        )
        .await,
        "client_id",
    );
    refused(
        s.call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "nul\u{0}", "email": "n@example.com", "password": "password-nul"})),
        )
        .await,
        "username",
    );
    refused(
        s.post(
            "/chat/create-room/",
            &ann.access,
            json!({"name": "r\u{0}", "type": "public"}),
        )
        .await,
        "room name",
    );
    refused(
        s.get("/chat/history/?room=lob%00by", &ann.access).await,
        "query",
    );
    refused(s.get("/chat/directory/?q=%00", &ann.access).await, "query");
    refused(s.get("/chat/rooms/lob%00by/", &ann.access).await, "path");
    match s
        .ws_raw(&format!("/ws/chat/lob%00by/?token={}", ann.access))
        .await
    {
        Err((400, body)) => assert_eq!(body["code"], "invalid_input"),
        other => panic!("a NUL in a socket's room: {:?}", other.map(|_| "upgraded")),
    }
    let mut ws = s.ws("/ws/", &ann).await;
    ws.send(json!({"type": "send", "room": room, "body": "x\u{0}y", "client_id": "k"}))
        .await;
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "invalid_input", "{error}");
    // Nothing was stored, and the socket still serves.
    ws.send(json!({"type": "send", "room": room, "body": "fine", "client_id": "k2"}))
        .await;
    assert_eq!(ws.expect("ack").await["message"]["body"], "fine");
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    let bodies: Vec<&Value> = history["chat_history"]
        .as_array()
        .expect("chat_history")
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(bodies, vec!["fine"]);
}

/// Writes a raw request and reads the whole answer (the server closes or
/// answers within `limit`).
async fn raw(s: &TestServer, request: &[u8], limit: Duration) -> (Duration, String) {
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let started = Instant::now();
    tcp.write_all(request).await.expect("request written");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => panic!(
                "no answer within {limit:?}: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// A body declared far over the limit is refused at once with the JSON
/// 413, without waiting for bytes that will never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_body_is_refused_at_once() {
    let s = TestServer::start(Backend::Memory).await;
    let (_, answer) = raw(
        &s,
        b"POST /api/users/register/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{\"a\":1}",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
}

/// The API docs' file server answers odd paths with the contract's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_paths_answer_json() {
    let s = TestServer::start(Backend::Memory).await;
    for path in [
        "/schema/swagger-ui/..%2f..%2fetc%2fpasswd",
        "/schema/swagger-ui/%2e%2e/%2e%2e/etc/passwd",
        "/schema/swagger-ui/nope.js",
    ] {
        let resp = reqwest::get(s.url(path)).await.expect("answer");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_client_error(), "{path}: {status}");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text:?}"));
        assert!(body["code"].is_string(), "{path}: {body}");
    }
}

/// Connections that never finish their headers, or never send a byte,
/// are closed after the header timeout; a connection cap turns the rest
/// away at the door, and `/healthz` answers once they have gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_bounded() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.max_connections = Some(20);
    })
    .await;
    // Half-sent requests and silent connections fill the cap.
    let mut held = Vec::new();
    for i in 0..20 {
        let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
        if i % 2 == 0 {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a request");
        }
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the cap: closed on arrival, before any answer.
    let (_, answer) = raw(
        &s,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(answer, "", "a connection past the cap is closed unanswered");
    // Every held connection is closed by the server within the timeout.
    for (i, tcp) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} still open after 5 s"));
        // A half-sent request may get a 408 first; either way it ends.
        if let Ok(n) = read
            && n > 0
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 408"), "{i}: {text}");
        }
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A `client_id` is its sender's idempotency key: other members never see
/// it, live or in history; the sender does (its ack, its history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_are_the_senders_alone() {
    let s = TestServer::start(Backend::Sqlite).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "keys", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert!(status.is_success());
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.send(json!({"type": "send", "room": room, "body": "hi", "client_id": "ann-secret-key"}))
        .await;
    let ack = a.expect("ack").await;
    assert_eq!(ack["client_id"], "ann-secret-key");
    let live = b.expect("message").await;
    assert!(live["message"]["client_id"].is_null(), "{live}");
    let history = |token: String| {
        let s = &s;
        async move {
            let (_, h) = s.get(&format!("/chat/history/?room={room}"), &token).await;
            h["chat_history"][0].clone()
        }
    };
    assert!(history(bob.access.clone()).await["client_id"].is_null());
    assert_eq!(
        history(ann.access.clone()).await["client_id"],
        "ann-secret-key"
    );
    let (_, events) = s
        .get(&format!("/chat/rooms/{room}/events/"), &bob.access)
        .await;
    assert!(!events.to_string().contains("ann-secret-key"), "{events}");
}

/// Query bounds are refused with `invalid_input` naming the field, as the
/// OpenAPI document states them (docs.rs checks the document's side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_bounds_name_their_field() {
    let s = TestServer::start(Backend::Memory).await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    for (path, field) in [
        (format!("/chat/history/?room={room}&after=-1"), "after"),
        (format!("/chat/history/?room={room}&before=0"), "before"),
        (format!("/chat/history/?room={room}&limit=201"), "limit"),
        (format!("/chat/rooms/{room}/events/?after=-1"), "after"),
        ("/chat/search/?q=hi&before=0".to_owned(), "before"),
        ("/chat/search/?q=hi&limit=0".to_owned(), "limit"),
        ("/chat/directory/?limit=101".to_owned(), "limit"),
        ("/api/users/?limit=0".to_owned(), "limit"),
    ] {
        let (status, body) = s.get(&path, &ann.access).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], "invalid_input", "{path}");
        assert!(body["fields"][field].is_string(), "{path}: {body}");
    }
}

/// A body is a JSON object: an array that serde would read as the same
/// struct (`["x"]` for `{"message": "x"}`) or any other JSON value is
/// `invalid_input`, and nothing is stored; broken JSON stays `invalid_json`.
/// A path id below 1 answers as an id that names nothing (user ids too:
/// unblocking user 0 was a 204).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_objects_and_path_ids_start_at_one() {
    let s = TestServer::start(Backend::Memory).await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    for (body, code) in [
        (json!([room, "sneaked in"]), "invalid_input"),
        (json!("text"), "invalid_input"),
        (json!(null), "invalid_input"),
        (json!(42), "invalid_input"),
    ] {
        let (status, answer) = s
            .call("POST", "/chat/send/", Some(&ann.access), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}");
    }
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    assert_eq!(history["chat_history"], json!([]), "nothing stored");

    for (path, code) in [
        ("/chat/rooms/0/".to_owned(), "room_not_found"),
        ("/chat/rooms/-3/".to_owned(), "room_not_found"),
        ("/chat/rooms/0/events/".to_owned(), "room_not_found"),
    ] {
        let (status, answer) = s.get(&path, &ann.access).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_eq!(answer["code"], code, "{path}");
    }
    let (status, answer) = s
        .call("DELETE", "/api/users/0/block/", Some(&ann.access), None)
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
}
