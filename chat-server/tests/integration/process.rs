//! The `chat-server` binary as operators run it, stopped from outside:
//! SIGTERM during traffic (every socket gets its 1001, every ack was
//! stored) and kill -9 during bursts (restarted on the same storage,
//! every acknowledged message is there once, with its id and seq).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::PgSchema;

/// A `chat-server` process on a port of its own.
struct Process {
    child: Child,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Process {
    async fn spawn(storage: &str, extra: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr")
        };
        let child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--storage", storage, "--listen", &addr.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            // Not the default beside the working directory (this crate's).
            .env("CHAT_ATTACHMENTS_URL", "memory://")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chat-server starts");
        let process = Self {
            child,
            addr,
            http: reqwest::Client::new(),
        };
        for _ in 0..300 {
            if let Ok(r) = process.http.get(process.url("/healthz")).send().await
                && r.status() == StatusCode::OK
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chat-server did not answer /healthz within 30 s");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers (first time) and logs `name` in; returns the access token.
    async fn login(&self, name: &str) -> String {
        let password = format!("password-{name}");
        self.call(
            "POST",
            "/api/users/register/",
            None,
            json!({"username": name, "email": format!("{name}@example.com"), "password": password}),
        )
        .await;
        let (status, tokens) = self
            .call(
                "POST",
                "/api/users/token/",
                None,
                json!({"username": name, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens["access"].as_str().expect("access").to_owned()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Every message of `room`, oldest first.
    async fn messages(&self, token: &str, room: i64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self
                .call(
                    "GET",
                    &format!("/chat/history/?room={room}&after={after}&limit=200"),
                    Some(token),
                    Value::Null,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let batch = page["chat_history"].as_array().expect("history").clone();
            let Some(last) = batch.last() else { break };
            after = last["seq"].as_i64().expect("seq");
            all.extend(batch);
            if page["has_more"] != true {
                break;
            }
        }
        all
    }
}

/// What a sending socket saw: the client ids it sent, the acks it got
/// (client id → (id, seq)) and how it ended (the close code, `None` for
/// an end without a close frame).
#[derive(Debug, Default)]
struct Sent {
    sent: Vec<String>,
    acked: BTreeMap<String, (i64, i64)>,
    ended: Option<Option<u16>>,
}

/// A socket that sends bursts of `burst` messages into `room` until the
/// connection ends, reading acks as they come.
async fn sender(
    process: &Process,
    token: &str,
    room: i64,
    name: String,
    burst: usize,
    log: Arc<Mutex<Sent>>,
) -> tokio::task::JoinHandle<()> {
    let url = format!("ws://{}/ws/?token={token}", process.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("socket opens");
    let (mut write, mut read) = ws.split();
    tokio::spawn(async move {
        let mut n = 0;
        let mut reading = true;
        while reading {
            let mut frames = Vec::new();
            for _ in 0..burst {
                let client_id = format!("{name}-{n}");
                n += 1;
                frames.push(json!({"type": "send", "room": room, "body": client_id, "client_id": client_id}));
                log.lock().expect("log").sent.push(client_id);
            }
            for f in frames {
                if write.feed(WsMessage::text(f.to_string())).await.is_err() {
                    break;
                }
            }
            let _ = write.flush().await;
            // Read the burst's acks (or the end).
            let mut acks = 0;
            while acks < burst {
                match tokio::time::timeout(Duration::from_secs(30), read.next()).await {
                    Ok(Some(Ok(WsMessage::Text(t)))) => {
                        let f: Value = serde_json::from_str(&t).expect("JSON");
                        if f["type"] == "ack" {
                            let m = &f["message"];
                            log.lock().expect("log").acked.insert(
                                f["client_id"].as_str().expect("client_id").to_owned(),
                                (
                                    m["id"].as_i64().expect("id"),
                                    m["seq"].as_i64().expect("seq"),
                                ),
                            );
                            acks += 1;
                        }
                    }
                    Ok(Some(Ok(WsMessage::Close(frame)))) => {
                        log.lock().expect("log").ended = Some(frame.map(|f| u16::from(f.code)));
                        reading = false;
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) | Err(_) => {
                        log.lock().expect("log").ended = Some(None);
                        reading = false;
                        break;
                    }
                }
            }
        }
    })
}

/// Waits until the logs hold `n` acks in all.
async fn until_acked(logs: &[Arc<Mutex<Sent>>], n: usize) {
    for _ in 0..600 {
        let acked: usize = logs
            .iter()
            .map(|l| l.lock().expect("log").acked.len())
            .sum();
        if acked >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} acks within 30 s");
}

/// After a restart: every ack is stored once with its id and seq, the
/// room's seqs have no gap, and sending every client id again stores
/// nothing twice (an acked one answers with its original).
async fn check_nothing_lost(process: &Process, room: i64, logs: &[Arc<Mutex<Sent>>]) -> usize {
    let token = process.login("ann").await;
    let stored = process.messages(&token, room).await;
    let mut by_client: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for m in &stored {
        by_client
            .entry(m["client_id"].as_str().expect("client_id").to_owned())
            .or_default()
            .push((
                m["id"].as_i64().expect("id"),
                m["seq"].as_i64().expect("seq"),
            ));
    }
    let mut acked_total = 0;
    for log in logs {
        let log = log.lock().expect("log");
        for (client_id, original) in &log.acked {
            assert_eq!(
                by_client.get(client_id),
                Some(&vec![*original]),
                "{client_id}: acked once, stored once as acked"
            );
            acked_total += 1;
        }
    }
    let seqs: Vec<i64> = stored
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        assert_eq!(
            seqs,
            (*first..=*last).collect::<Vec<_>>(),
            "seqs without a gap"
        );
    }
    // Every client id sent again, acked or not: stored at most once.
    for log in logs {
        let (sent, acked) = {
            let log = log.lock().expect("log");
            (log.sent.clone(), log.acked.clone())
        };
        for client_id in sent {
            let (status, message) = process
                .call(
                    "POST",
                    "/chat/send/",
                    Some(&token),
                    json!({"room": room, "message": client_id, "client_id": client_id}),
                )
                .await;
            assert!(status.is_success(), "{client_id}: {status} {message}");
            if let Some((id, seq)) = acked.get(&client_id) {
                assert_eq!(
                    (message["id"].as_i64(), message["seq"].as_i64()),
                    (Some(*id), Some(*seq)),
                    "{client_id}"
                );
            }
        }
    }
    let again = process.messages(&token, room).await;
    let distinct: BTreeSet<&str> = again
        .iter()
        .map(|m| m["client_id"].as_str().expect("client_id"))
        .collect();
    assert_eq!(distinct.len(), again.len(), "a client id stored twice");
    acked_total
}

async fn kill_9_during_bursts(storage: &str) {
    let process = Process::spawn(storage, &[]).await;
    let token = process.login("ann").await;
    let (status, room) = process
        .call(
            "POST",
            "/chat/create-room/",
            Some(&token),
            json!({"name": "crash", "type": "public"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let room = room["id"].as_i64().expect("room id");
    let logs: Vec<Arc<Mutex<Sent>>> = (0..4).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        tasks.push(sender(&process, &token, room, format!("s{i}"), 25, log.clone()).await);
    }
    until_acked(&logs, 300).await;
    let mut process = process;
    process.child.start_kill().expect("SIGKILL");
    let _ = process.child.wait().await;
    for t in tasks {
        t.await.expect("sender ends");
    }
    let process = Process::spawn(storage, &[]).await;
    let acked = check_nothing_lost(&process, room, &logs).await;
    assert!(acked >= 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bursts_loses_nothing_acknowledged_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let storage = format!("sqlite://{}", dir.path().join("chat.db").display());
    kill_9_during_bursts(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bursts_loses_nothing_acknowledged_postgres() {
    let schema = PgSchema::create().await;
    kill_9_during_bursts(&schema.url()).await;
}

async fn sigterm_closes_every_socket_1001(storage: &str, signal: &str) {
    let mut process = Process::spawn(storage, &["--shutdown-timeout", "10"]).await;
    let token = process.login("ann").await;
    let (_, room) = process
        .call(
            "POST",
            "/chat/create-room/",
            Some(&token),
            json!({"name": "quiet", "type": "public"}),
        )
        .await;
    let room = room["id"].as_i64().expect("room id");
    // Idle subscribed sockets.
    let mut idle = Vec::new();
    for _ in 0..30 {
        let url = format!("ws://{}/ws/chat/{room}/?token={token}", process.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("socket opens");
        idle.push(ws);
    }
    let logs: Vec<Arc<Mutex<Sent>>> = (0..6).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        tasks.push(sender(&process, &token, room, format!("t{i}"), 10, log.clone()).await);
    }
    until_acked(&logs, 120).await;
    process.signal(signal);
    let mut codes = Vec::new();
    for mut ws in idle {
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                Ok(Some(Ok(WsMessage::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                _ => break None,
            }
        };
        codes.push(code);
    }
    assert!(
        codes.iter().all(|c| *c == Some(1001)),
        "idle sockets ended with {codes:?}"
    );
    for t in tasks {
        t.await.expect("sender ends");
    }
    for log in &logs {
        assert_eq!(
            log.lock().expect("log").ended,
            Some(Some(1001)),
            "a sender's socket"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .expect("the process exits")
        .expect("exit status");
    assert!(status.success(), "{status}");
    let process = Process::spawn(storage, &[]).await;
    check_nothing_lost(&process, room, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_1001_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let storage = format!("sqlite://{}", dir.path().join("chat.db").display());
    sigterm_closes_every_socket_1001(&storage, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_every_socket_1001_postgres() {
    let schema = PgSchema::create().await;
    sigterm_closes_every_socket_1001(&schema.url(), "INT").await;
}
