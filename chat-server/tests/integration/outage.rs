//! The database goes away mid-conversation: clients get a clear
//! `storage_unavailable` (HTTP 503, or an error frame on a socket that stays
//! open), the server recovers by itself when the database is back, and no
//! acknowledged message is lost or duplicated by the retries.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::proxy::Proxy;
use crate::support::{PgSchema, TestServer, postgres_base_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_recovers_without_loss() {
    let base = url::Url::parse(&postgres_base_url()).expect("postgres url");
    let upstream = format!(
        "{}:{}",
        base.host_str().expect("host"),
        base.port().unwrap_or(5432)
    );
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let proxy = Proxy::start(upstream).await;
    let schema = PgSchema::create().await;
    let mut via_proxy = base.clone();
    via_proxy.set_host(Some("127.0.0.1")).expect("host");
    via_proxy.set_port(Some(proxy.addr.port())).expect("port");
    let url = schema.url_via(via_proxy.as_str());
    let dir = tempfile::tempdir().expect("temp dir");
    let s = TestServer::start_on(url, Some(schema), dir, |c| c.storage_pool_size = 4).await;

    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(room), None).await;
    b.expect("presence").await;

    let send = |id: &str| json!({"type": "send", "room": room, "body": format!("body {id}"), "client_id": id});
    let mut acked = Vec::new();
    for i in 1..=5 {
        a.send(send(&format!("c{i}"))).await;
        let ack = a.expect("ack").await;
        acked.push(ack["message"]["seq"].as_i64().expect("seq"));
    }

    proxy.cut();

    let (status, body) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "during", "client_id": "h1"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "storage_unavailable");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));

    a.send(send("c6")).await;
    let err = a.expect("error").await;
    assert_eq!(
        (err["code"].as_str(), err["client_id"].as_str()),
        (Some("storage_unavailable"), Some("c6"))
    );
    a.send(json!({"type": "ping"})).await;
    assert_eq!(
        a.expect("pong").await["type"],
        "pong",
        "the socket stays open"
    );

    let (status, health) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (health["status"].as_str(), health["storage"].as_str()),
        (Some("degraded"), Some("unavailable"))
    );
    let (status, body) = s.get("/chat/rooms/", &bob.access).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable"))
    );

    proxy.restore();

    // The server recovers by itself: nothing is restarted or reconfigured.
    let mut healthy = false;
    for _ in 0..100 {
        let (status, _) = s.call("GET", "/healthz", None, None).await;
        if status == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthz back to 200 after the database returned");

    // The clients retry what failed, with the same client_ids.
    a.send(send("c6")).await;
    acked.push(
        a.expect("ack").await["message"]["seq"]
            .as_i64()
            .expect("seq"),
    );
    let (status, first) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "during", "client_id": "h1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, again) = s
        .post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": "during", "client_id": "h1"}),
        )
        .await;
    assert_eq!(first, again, "a second retry stores nothing new");
    acked.push(first["seq"].as_i64().expect("seq"));

    // Bob's join (subscribing joins the public room) is seq 1.
    assert_eq!(
        acked,
        (2..=8).collect::<Vec<_>>(),
        "every acknowledged message has its own seq, no gap"
    );
    let mut live = Vec::new();
    while live.len() < 7 {
        let m = b.expect("message").await;
        live.push(m["message"]["seq"].as_i64().expect("seq"));
    }
    assert_eq!(live, acked, "bob got every message once, in order");
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &bob.access)
        .await;
    let stored: Vec<i64> = history["chat_history"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(stored, acked, "nothing acknowledged is lost");
}
