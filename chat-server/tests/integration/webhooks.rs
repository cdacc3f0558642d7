//! Webhooks against real receivers on 127.0.0.1: one failing, then slow,
//! then down while the server restarts, then back; another always up.
//! Every event arrives, signed, at least once, in room order per endpoint,
//! and the endpoint that is up never waits for the one that is not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use chat_server::WebhookConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, TestServer, each_backend};

each_backend!(every_event_arrives_through_outages);

const SECRET: &str = "webhook-secret-0123456789";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Failing,
    Slow,
}

#[derive(Debug)]
struct Receiver {
    mode: Mutex<Mode>,
    /// Every event received, in arrival order, repeats included.
    events: Mutex<Vec<Value>>,
    posts: Mutex<u32>,
    bad_signatures: Mutex<u32>,
}

impl Receiver {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(mode),
            events: Mutex::new(Vec::new()),
            posts: Mutex::new(0),
            bad_signatures: Mutex::new(0),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    /// The seqs of `room` received, first arrivals only, in arrival order.
    fn seqs(&self, room: i64) -> Vec<i64> {
        let mut seen = std::collections::HashSet::new();
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["room"] == room)
            .filter_map(|e| e["seq"].as_i64())
            .filter(|seq| seen.insert(*seq))
            .collect()
    }

    /// Waits until every seq 1..=`last` of `room` arrived.
    async fn wait_for(&self, room: i64, last: i64) -> Vec<i64> {
        tokio::time::timeout(WAIT, async {
            loop {
                let seqs = self.seqs(room);
                if seqs.len() as i64 >= last {
                    return seqs;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("room {room}: only {:?} of 1..={last}", self.seqs(room)))
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    *receiver.posts.lock().expect("lock") += 1;
    let mode = *receiver.mode.lock().expect("lock");
    match mode {
        Mode::Failing => return AxumStatus::INTERNAL_SERVER_ERROR,
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return AxumStatus::OK;
        }
        Mode::Ok => {}
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("x-chat-timestamp");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = timestamp.into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(&body);
    let tag = ring::hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if header("x-chat-signature") != format!("v1={hex}") {
        *receiver.bad_signatures.lock().expect("lock") += 1;
        return AxumStatus::UNAUTHORIZED;
    }
    let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut events = receiver.events.lock().expect("lock");
    for event in batch["events"].as_array().into_iter().flatten() {
        events.push(event.clone());
    }
    AxumStatus::OK
}

/// Serves `receiver` on `addr` until the token is cancelled (then closes
/// every connection: the port refuses).
async fn serve(addr: SocketAddr, receiver: Arc<Receiver>) -> (CancellationToken, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    (stop, task)
}

async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

fn hooks(addrs: &[SocketAddr]) -> Vec<WebhookConfig> {
    addrs
        .iter()
        .map(|a| WebhookConfig {
            url: format!("http://{a}/hook"),
            secret: SECRET.to_owned(),
        })
        .collect()
}

async fn every_event_arrives_through_outages(backend: Backend) {
    let (flaky_addr, steady_addr) = (free_addr().await, free_addr().await);
    let flaky = Receiver::new(Mode::Failing);
    let steady = Receiver::new(Mode::Ok);
    let (stop_flaky, flaky_task) = serve(flaky_addr, flaky.clone()).await;
    let (_stop_steady, _steady_task) = serve(steady_addr, steady.clone()).await;
    let tune = move |c: &mut chat_server::Config| {
        c.webhooks = hooks(&[flaky_addr, steady_addr]);
        c.webhook_timeout = Duration::from_millis(300);
        c.webhook_backoff = Duration::from_millis(50);
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut s, url) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("chat.db").display());
            let s =
                TestServer::start_on(url.clone(), None, tempfile::tempdir().expect("dir"), tune)
                    .await;
            (s, Some(url))
        }
        _ => (TestServer::start_with(backend, tune).await, None),
    };

    // Events of every kind while the flaky endpoint fails.
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "hooked", "public", &[]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, sent) = s
            .post(
                "/chat/send/",
                &ann.access,
                json!({"room": room, "message": format!("m{n}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(sent["id"].as_i64().expect("id"));
    }
    let (status, _) = s
        .call(
            "PATCH",
            &format!("/chat/messages/{}/", ids[0]),
            Some(&ann.access),
            Some(json!({"body": "m0, edited"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .call(
            "PUT",
            &format!("/chat/messages/{}/reactions/%F0%9F%91%8D/", ids[1]),
            Some(&bob.access),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{}/", ids[2]),
            Some(&ann.access),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    let (status, _) = s
        .post(
            &format!("/chat/rooms/{room}/leave/"),
            &bob.access,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    // joined, 5 messages, edited, reaction, deleted, left.
    let last = 10;

    // The steady endpoint has them all while the flaky one still fails.
    let seqs = steady.wait_for(room, last).await;
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "in room order");
    assert!(flaky.seqs(room).is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        *flaky.posts.lock().expect("lock") >= 2,
        "the flaky endpoint is retried"
    );

    // Slow: timeouts, still nothing acknowledged; then down.
    flaky.set(Mode::Slow);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(flaky.seqs(room).is_empty());
    stop_flaky.cancel();
    flaky_task.await.expect("receiver stops");
    flaky.set(Mode::Ok);

    // More events; the server restarts (on SQLite: the storage outlives
    // it, and so does the outbox).
    for n in 5..8 {
        s.send(&ann, room, &format!("m{n}")).await;
    }
    let last = last + 3;
    if let Some(url) = url {
        s.stop().await;
        s = TestServer::start_on(url, None, tempfile::tempdir().expect("dir"), tune).await;
    }
    s.send(&ann, room, "after the restart, if any").await;
    let last = last + 1;

    // Back: everything arrives, in order, each signed.
    let (_stop, _task) = serve(flaky_addr, flaky.clone()).await;
    let seqs = flaky.wait_for(room, last).await;
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "in room order, none lost"
    );
    assert_eq!(steady.wait_for(room, last).await.len() as i64, last);
    assert_eq!(*flaky.bad_signatures.lock().expect("lock"), 0);
    assert_eq!(*steady.bad_signatures.lock().expect("lock"), 0);

    // Ids name events: repeats (at least once) share them.
    let events = flaky.events.lock().expect("lock").clone();
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for e in &events {
        let id = e["id"].as_str().expect("id").to_owned();
        assert_eq!(id, format!("{}:{}", e["room"], e["seq"]));
        if let Some(earlier) = by_id.insert(id, e.clone()) {
            assert_eq!(earlier["seq"], e["seq"]);
        }
    }
    let kinds: Vec<&str> = by_id
        .values()
        .filter(|e| e["room"] == room)
        .filter_map(|e| e["event"]["type"].as_str())
        .collect();
    for kind in [
        "member",
        "message",
        "message_edited",
        "reaction",
        "message_deleted",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}
