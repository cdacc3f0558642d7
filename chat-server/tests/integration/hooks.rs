//! Hooks: in-process (`Builder::hooks`) and over HTTP (`--hook-url`), a
//! message allowed, rejected and rewritten, on HTTP and WebSocket, edits
//! included; a repeat of an acknowledged message answered with its original
//! whatever the hook says now; a hook that is slow or down under both
//! failure policies; after-event notifications in room order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use chat_server::hooks::{Decision, FailurePolicy, HookError, Hooks, Pending, RoomEvent};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, WsClient, each_backend};

each_backend!(in_process_hooks_allow_reject_rewrite_and_hear);

/// The next frame of `ty`, past presence changes (who comes online is not
/// what these tests are about).
async fn next(socket: &mut WsClient, ty: &str) -> Value {
    loop {
        let frame = socket.frame().await;
        if frame["type"] != "presence" {
            assert_eq!(frame["type"], ty, "expected a {ty} frame, got {frame}");
            return frame;
        }
    }
}

/// Rejects "buy now", rewrites "darn", rejects everything once `strict`;
/// records every event it hears.
#[derive(Default)]
struct Moderator {
    strict: AtomicBool,
    heard: Mutex<Vec<RoomEvent>>,
}

#[async_trait::async_trait]
impl Hooks for Moderator {
    async fn before_send(&self, message: &Pending) -> Result<Decision, HookError> {
        if self.strict.load(Ordering::SeqCst) {
            return Ok(Decision::Reject {
                reason: "the room is closed".into(),
            });
        }
        if message.body.to_lowercase().contains("buy now") {
            return Ok(Decision::Reject {
                reason: "looks like spam".into(),
            });
        }
        if message.body.contains("darn") {
            return Ok(Decision::Rewrite {
                body: message.body.replace("darn", "d**n"),
            });
        }
        if message.body == "blank me" {
            return Ok(Decision::Rewrite { body: "  ".into() });
        }
        Ok(Decision::Allow)
    }

    async fn after_event(&self, event: &RoomEvent) {
        self.heard.lock().expect("lock").push(event.clone());
    }
}

async fn in_process_hooks_allow_reject_rewrite_and_hear(backend: Backend) {
    let moderator = Arc::new(Moderator::default());
    let hooks = moderator.clone();
    let s = TestServer::start_built(backend, |_| {}, move |b| b.hooks(hooks)).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "hooked", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut bobs = s.ws(&format!("/ws/chat/{room}/"), &bob).await;
    bobs.expect("subscribed").await;

    // Allowed: stored as sent.
    let first = s.send(&ann, room, "hello").await;
    assert_eq!(next(&mut bobs, "message").await["message"]["body"], "hello");

    // Rejected over HTTP: 403 with the hook's reason, nothing stored.
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "BUY NOW cheap"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str(), body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("message_rejected"),
            Some("looks like spam")
        )
    );
    // Rejected over the socket: an error frame with the client_id.
    let mut anns = s.ws(&format!("/ws/chat/{room}/"), &ann).await;
    anns.expect("subscribed").await;
    anns.send(json!({"type": "send", "body": "buy now!", "client_id": "spam-1"}))
        .await;
    let error = next(&mut anns, "error").await;
    assert_eq!(
        (error["code"].as_str(), error["client_id"].as_str()),
        (Some("message_rejected"), Some("spam-1")),
        "{error}"
    );

    // Rewritten: stored, acknowledged and broadcast rewritten.
    anns.send(json!({"type": "send", "body": "darn it", "client_id": "r-1"}))
        .await;
    let ack = next(&mut anns, "ack").await;
    assert_eq!(ack["message"]["body"], "d**n it");
    assert_eq!(
        next(&mut bobs, "message").await["message"]["body"],
        "d**n it"
    );
    // A rewrite to nothing is refused like an empty body.
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "blank me"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("empty_body"))
    );

    // Edits are vetted too.
    let id = ack["message"]["id"].as_i64().expect("id");
    let (status, body) = s
        .call(
            "PATCH",
            &format!("/chat/messages/{id}/"),
            Some(&ann.access),
            Some(json!({"body": "buy now, edited in"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("message_rejected")),
        "{body}"
    );
    let (status, body) = s
        .call(
            "PATCH",
            &format!("/chat/messages/{id}/"),
            Some(&ann.access),
            Some(json!({"body": "oh darn"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        next(&mut bobs, "message_edited").await["message"]["body"],
        "oh d**n"
    );

    // An edit the rule refuses is refused as without a hook: the hook
    // never sees another's message.
    let (status, body) = s
        .call(
            "PATCH",
            &format!("/chat/messages/{id}/"),
            Some(&bob.access),
            Some(json!({"body": "buy now from bob"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_sender")),
        "{body}"
    );

    // The room closes: new messages are refused, but a repeat of an
    // acknowledged one is answered with its original.
    next(&mut anns, "message_edited").await;
    moderator.strict.store(true, Ordering::SeqCst);
    anns.send(json!({"type": "send", "body": "darn it", "client_id": "r-1"}))
        .await;
    let again = next(&mut anns, "ack").await;
    assert_eq!(again["message"]["id"], id, "the original: {again}");
    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "anything"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("the room is closed"))
    );

    // History holds what was stored, and only that.
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    let bodies: Vec<&str> = history["chat_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["hello", "oh d**n"]);

    // After-event: every event of the room, in order, the edit included.
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let heard = moderator.heard.lock().expect("lock").clone();
            if heard.iter().any(|e| {
                matches!(
                    e.event,
                    chat_core::timeline::TimelineEvent::MessageEdited(_)
                )
            }) {
                return heard;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the after-event hook hears the edit");
    let in_room: Vec<i64> = heard
        .iter()
        .filter(|e| e.room.0 == room)
        .map(|e| e.seq)
        .collect();
    assert!(
        in_room.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missed: {in_room:?}"
    );
    assert!(
        heard.iter().any(|e| e.seq == first
            && matches!(e.event, chat_core::timeline::TimelineEvent::Message { .. })),
        "{heard:?}"
    );
}

/// What the HTTP hook receiver saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Value>>,
    bad_signatures: Mutex<u32>,
}

/// A hook service on 127.0.0.1: allows, rejects "spam", rewrites "heck",
/// answers "slow" after 3 s, "broken" with 500 and "garbage" with a body
/// that is no decision. Checks each request's signature.
async fn hook_service(secret: &'static str) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = state.clone();
            async move {
                let timestamp = headers
                    .get("x-chat-timestamp")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let signature = headers
                    .get("x-chat-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                let mut signed = timestamp.clone().into_bytes();
                signed.push(b'.');
                signed.extend_from_slice(&body);
                let tag = ring::hmac::sign(&key, &signed);
                let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                if signature != format!("v1={hex}") {
                    *seen.bad_signatures.lock().expect("lock") += 1;
                }
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.requests.lock().expect("lock").push(request.clone());
                let text = request["message"]["body"].as_str().unwrap_or_default();
                let answer = match text {
                    t if t.contains("spam") => {
                        json!({"action": "reject", "reason": "no spam here"})
                    }
                    t if t.contains("heck") => {
                        json!({"action": "rewrite", "body": t.replace("heck", "h*ck")})
                    }
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        json!({"action": "allow"})
                    }
                    "broken" => return (AxumStatus::INTERNAL_SERVER_ERROR, "oops".to_owned()),
                    "garbage" => return (AxumStatus::OK, "{\"action\": \"maybe\"}".to_owned()),
                    _ => json!({"action": "allow"}),
                };
                (AxumStatus::OK, answer.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

async fn send(s: &TestServer, token: &str, room: i64, body: &str) -> (StatusCode, Value) {
    s.post("/chat/send/", token, json!({"room": room, "message": body}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_failing_open() {
    let (addr, seen) = hook_service("hook-secret").await;
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.hook_url = Some(format!("http://{addr}/hook"));
        c.hook_secret = Some("hook-secret".to_owned());
        c.hook_timeout = Duration::from_millis(500);
        c.hook_failure = FailurePolicy::Open;
    })
    .await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "http-hooked", "public", &[]).await;

    assert_eq!(
        send(&s, &ann.access, room, "fine").await.0,
        StatusCode::CREATED
    );
    let (status, body) = send(&s, &ann.access, room, "some spam").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("no spam here"))
    );
    let (status, body) = send(&s, &ann.access, room, "what the heck").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Slow, failing, talking nonsense: failing open, all stored.
    for text in ["slow", "broken", "garbage"] {
        let (status, body) = send(&s, &ann.access, room, text).await;
        assert_eq!(status, StatusCode::CREATED, "{text}: {body}");
    }
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &ann.access)
        .await;
    let bodies: Vec<&str> = history["chat_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        ["fine", "what the h*ck", "slow", "broken", "garbage"]
    );

    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 6);
    assert_eq!(requests[0]["type"], "before_send");
    assert_eq!(requests[0]["message"]["kind"], "message");
    assert_eq!(requests[0]["message"]["room"], room);
    assert_eq!(requests[0]["message"]["sender"], ann.id);
    assert_eq!(
        *seen.bad_signatures.lock().expect("lock"),
        0,
        "every request signed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_failing_closed_and_one_that_is_down() {
    let (addr, _) = hook_service("x").await;
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.hook_url = Some(format!("http://{addr}/hook"));
        c.hook_timeout = Duration::from_millis(500);
        c.hook_failure = FailurePolicy::Closed;
    })
    .await;
    let ann = s.user("ann").await;
    let room = s.room(&ann, "closed-hook", "public", &[]).await;
    assert_eq!(
        send(&s, &ann.access, room, "fine").await.0,
        StatusCode::CREATED
    );
    for text in ["slow", "broken", "garbage"] {
        let (status, body) = send(&s, &ann.access, room, text).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("hook_unavailable")),
            "{text}: {body}"
        );
    }

    // A hook nobody listens on: closed refuses, open stores.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = free.local_addr().expect("addr");
    drop(free);
    for (failure, expected) in [
        (FailurePolicy::Closed, StatusCode::SERVICE_UNAVAILABLE),
        (FailurePolicy::Open, StatusCode::CREATED),
    ] {
        let s = TestServer::start_with(Backend::Memory, move |c| {
            c.hook_url = Some(format!("http://{dead}/hook"));
            c.hook_failure = failure;
        })
        .await;
        let ann = s.user("ann").await;
        let room = s.room(&ann, "dead-hook", "public", &[]).await;
        let (status, body) = send(&s, &ann.access, room, "anyone there?").await;
        assert_eq!(status, expected, "{failure:?}: {body}");
        // Everyone else is still served.
        assert_eq!(s.get("/api/users/me/", &ann.access).await.0, StatusCode::OK);
    }
    let (status, body) = send(&s, &ann.access, room, "fine again").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
