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

/// A real PostgreSQL restart (a server of the test's own, stopped with
/// `pg_ctl -m fast` and started again) under traffic. While it is down,
/// every call answers at once: `/healthz` 503, sends an error frame with
/// their `client_id` (a burst of ten by room name included, each of which
/// would have waited out the pool), pings their pong, HTTP 503. After it
/// is back the server recovers by itself and the retried sends are stored
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_traffic_answers_at_once_and_recovers() {
    let pg = crate::pg_server::PgServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let s = TestServer::start_on(pg.url(), None, dir, |_| {}).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(room), None).await;
    b.expect("presence").await;
    let send = |id: &str| {
        json!({"type": "send", "room": "lobby", "body": format!("body {id}"), "client_id": id})
            .to_string()
    };
    let mut acked = Vec::new();
    for i in 0..3 {
        a.send_text(&send(&format!("before{i}"))).await;
        acked.push(
            a.expect("ack").await["message"]["seq"]
                .as_i64()
                .expect("seq"),
        );
    }

    let stopped = std::time::Instant::now();
    pg.stop();
    // The monitor notices within a probe or two; until then a call may
    // still wait on the pool.
    let mut health = None;
    for _ in 0..100 {
        let t = std::time::Instant::now();
        let (status, body) = s.call("GET", "/healthz", None, None).await;
        // A fast 503 is the monitor's (a slow one, a ping that timed out).
        if status == StatusCode::SERVICE_UNAVAILABLE && t.elapsed() < Duration::from_millis(500) {
            health = Some((body, t.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (body, took) = health.expect("healthz turns 503 while the database is down");
    assert_eq!(body["storage"], "unavailable");
    eprintln!(
        "down noticed {:?} after the stop; healthz answered in {took:?}",
        stopped.elapsed()
    );

    // Ten sends by name and a ping in one write: each answered at once.
    let burst: Vec<String> = (0..10)
        .map(|i| send(&format!("during{i}")))
        .chain([json!({"type": "ping"}).to_string()])
        .collect();
    let t = std::time::Instant::now();
    a.send_burst(&burst).await;
    for i in 0..10 {
        let err = a.expect("error").await;
        assert_eq!(
            (err["code"].as_str(), err["client_id"].as_str()),
            (
                Some("storage_unavailable"),
                Some(format!("during{i}").as_str())
            )
        );
    }
    a.expect("pong").await;
    eprintln!(
        "burst of 10 sends + ping answered in {:?} while down",
        t.elapsed()
    );
    // Bob's socket answers too (after the messages stored before).
    let mut live = Vec::new();
    b.send(json!({"type": "ping"})).await;
    loop {
        let f = b.frame().await;
        match f["type"].as_str() {
            Some("message") => live.push(f["message"]["seq"].as_i64().expect("seq")),
            Some("pong") => break,
            _ => panic!("unexpected {f}"),
        }
    }
    for (path, token) in [
        ("/chat/rooms/", &bob.access),
        ("/api/users/me/", &ann.access),
    ] {
        let (status, body) = s.get(path, token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
            "{path}"
        );
    }

    pg.resume();
    let restarted = std::time::Instant::now();
    let mut healthy = false;
    for _ in 0..150 {
        if s.call("GET", "/healthz", None, None).await.0 == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthz back to 200 after the database returned");
    eprintln!(
        "recovered {:?} after the database started",
        restarted.elapsed()
    );

    for i in 0..10 {
        a.send_text(&send(&format!("during{i}"))).await;
        acked.push(
            a.expect("ack").await["message"]["seq"]
                .as_i64()
                .expect("seq"),
        );
    }
    let first = acked[0];
    assert_eq!(acked, (first..first + 13).collect::<Vec<_>>(), "no gap");
    while live.len() < acked.len() {
        live.push(
            b.expect("message").await["message"]["seq"]
                .as_i64()
                .expect("seq"),
        );
    }
    assert_eq!(live, acked, "bob got every message once, in order");
}
