//! Push: members without a socket in the room are notified through a
//! Matrix push gateway on 127.0.0.1 that fails first and then answers; a
//! member with a socket is not; a token the gateway rejects is forgotten;
//! `--push-body none` sends no content.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(offline_members_are_notified);

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Gateway {
    failing: Mutex<bool>,
    notifications: Mutex<Vec<Value>>,
    /// Push keys answered as rejected.
    dead: Vec<String>,
}

async fn notify(
    State(gateway): State<Arc<Gateway>>,
    Json(body): Json<Value>,
) -> (AxumStatus, Json<Value>) {
    if *gateway.failing.lock().expect("lock") {
        return (AxumStatus::BAD_GATEWAY, Json(json!({})));
    }
    let rejected: Vec<&Value> = body["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| &d["pushkey"])
        .filter(|k| gateway.dead.iter().any(|dead| *k == dead.as_str()))
        .collect();
    let answer = json!({ "rejected": rejected });
    gateway
        .notifications
        .lock()
        .expect("lock")
        .push(body["notification"].clone());
    (AxumStatus::OK, Json(answer))
}

async fn gateway(failing: bool, dead: &[&str]) -> (SocketAddr, Arc<Gateway>) {
    let gateway = Arc::new(Gateway {
        failing: Mutex::new(failing),
        notifications: Mutex::new(Vec::new()),
        dead: dead.iter().map(|d| (*d).to_owned()).collect(),
    });
    let app = axum::Router::new()
        .route("/_matrix/push/v1/notify", axum::routing::post(notify))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, gateway)
}

async fn register(s: &TestServer, user: &TestUser, token: &str, platform: &str) -> Value {
    let (status, device) = s
        .post(
            "/api/push/devices/",
            &user.access,
            json!({"platform": platform, "token": token, "app_id": "com.example.chat"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    device
}

/// Waits for a notification whose devices include `pushkey`.
async fn notification_for(gateway: &Gateway, pushkey: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let found = gateway
                .notifications
                .lock()
                .expect("lock")
                .iter()
                .find(|n| {
                    n["devices"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["pushkey"] == pushkey))
                })
                .cloned();
            if let Some(n) = found {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("a notification in time")
}

async fn offline_members_are_notified(backend: Backend) {
    let (addr, gw) = gateway(true, &["dead-token"]).await;
    let s = TestServer::start_with(backend, move |c| {
        c.push_gateway = Some(format!("http://{addr}/_matrix/push/v1/notify"));
        c.webhook_backoff = Duration::from_millis(50);
        c.webhook_timeout = Duration::from_millis(500);
    })
    .await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;
    let room = s.room(&ann, "pushed", "public", &[]).await;
    for user in [&bob, &cat] {
        let (status, _) = s
            .post("/chat/join-room/", &user.access, json!({"room_id": room}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    register(&s, &ann, "ann-phone", "fcm").await;
    register(&s, &bob, "bob-phone", "fcm").await;
    register(&s, &bob, "bob-tablet", "apns").await;
    register(&s, &cat, "dead-token", "fcm").await;
    let (_, devices) = s.get("/api/push/devices/", &bob.access).await;
    assert_eq!(devices.as_array().map(Vec::len), Some(2), "{devices}");
    assert!(
        devices[0].get("token").is_none(),
        "tokens are not shown back"
    );

    // Ann is here (a socket in the room); Bob and Cat are away.
    let mut anns = s.ws(&format!("/ws/chat/{room}/"), &ann).await;
    anns.expect("subscribed").await;
    s.send(&cat, room, "hi all").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.notifications.lock().expect("lock").is_empty(),
        "the gateway fails"
    );
    *gw.failing.lock().expect("lock") = false;

    let to_bob = notification_for(&gw, "bob-phone").await;
    let keys: Vec<&str> = to_bob["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["pushkey"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["bob-phone", "bob-tablet"],
        "all of bob's devices at once"
    );
    assert_eq!(to_bob["content"]["body"], "hi all");
    assert_eq!(to_bob["room_name"], "pushed");
    assert_eq!(to_bob["room_id"], room.to_string());
    assert_eq!(to_bob["counts"]["unread"], 1);
    assert_eq!(to_bob["devices"][0]["app_id"], "com.example.chat");

    // Bob answers: Cat's token is dead, and forgotten.
    s.send(&bob, room, "hey cat").await;
    notification_for(&gw, "dead-token").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, devices) = s.get("/api/push/devices/", &cat.access).await;
            if devices.as_array().is_some_and(Vec::is_empty) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the rejected token is forgotten");

    // Ann, here all along, was never notified; nobody of their own words.
    let all = gw.notifications.lock().expect("lock").clone();
    assert!(
        all.iter().all(|n| n["devices"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["pushkey"] != "ann-phone"))),
        "{all:?}"
    );

    // Unregistering: only one's own.
    let (_, devices) = s.get("/api/push/devices/", &bob.access).await;
    let id = devices[0]["id"].as_i64().expect("id");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/push/devices/{id}/"),
            Some(&cat.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/push/devices/{id}/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .post(
            "/api/push/devices/",
            &bob.access,
            json!({"platform": "", "token": "t", "app_id": "a"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_content_when_asked() {
    let (addr, gw) = gateway(false, &[]).await;
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.push_gateway = Some(format!("http://{addr}/_matrix/push/v1/notify"));
        c.push_body = chat_server::PushBody::None;
    })
    .await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "quiet", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK);
    register(&s, &bob, "bob-phone", "fcm").await;
    s.send(&ann, room, "a secret").await;
    let n = notification_for(&gw, "bob-phone").await;
    assert!(
        n.get("content").is_none() && n.get("sender_display_name").is_none(),
        "{n}"
    );
    assert!(
        n["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{room}:")))
    );
}

/// A gateway that is down (nothing listens) while the server restarts on
/// the same SQLite file: the notification owed is sent once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_down_across_a_restart() {
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let tune = move |c: &mut chat_server::Config| {
        c.push_gateway = Some(format!("http://{addr}/_matrix/push/v1/notify"));
        c.webhook_backoff = Duration::from_millis(50);
        c.webhook_timeout = Duration::from_millis(500);
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let mut s =
        TestServer::start_on(url.clone(), None, tempfile::tempdir().expect("dir"), tune).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "restarted", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK);
    register(&s, &bob, "bob-phone", "fcm").await;
    s.send(&ann, room, "while the gateway is down").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stop().await;
    let s = TestServer::start_on(url, None, tempfile::tempdir().expect("dir"), tune).await;

    // The gateway comes up where the server expects it.
    let gw = Arc::new(Gateway {
        failing: Mutex::new(false),
        notifications: Mutex::new(Vec::new()),
        dead: Vec::new(),
    });
    let app = axum::Router::new()
        .route("/_matrix/push/v1/notify", axum::routing::post(notify))
        .with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind again");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let n = notification_for(&gw, "bob-phone").await;
    assert_eq!(n["content"]["body"], "while the gateway is down");
    drop(s);
}
