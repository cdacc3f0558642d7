//! Random interleavings of send, subscribe, unsubscribe, disconnect and
//! resume, by three sockets spread over two instances (PostgreSQL and
//! Redis shared): every subscriber gets each event exactly once, in seq
//! order, from where its subscription starts until the end.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use reqwest::StatusCode;
use serde_json::json;

use crate::cluster::two_instances;
use crate::support::{TestServer, TestUser, WsClient};

const SOCKETS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A message over HTTP, through instance `via`.
    Send {
        via: usize,
    },
    /// `subscribe` again (or first), with `after_seq` this far behind what
    /// the socket has seen (`None`: live only).
    Subscribe {
        socket: usize,
        behind: Option<i64>,
    },
    Unsubscribe {
        socket: usize,
    },
    Disconnect {
        socket: usize,
    },
    /// Reconnects (to instance `via`) and subscribes after what it has seen.
    Resume {
        socket: usize,
        via: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize).prop_map(|via| Op::Send { via }),
        2 => (0..SOCKETS, proptest::option::of(0..3i64))
            .prop_map(|(socket, behind)| Op::Subscribe { socket, behind }),
        1 => (0..SOCKETS).prop_map(|socket| Op::Unsubscribe { socket }),
        1 => (0..SOCKETS).prop_map(|socket| Op::Disconnect { socket }),
        1 => (0..SOCKETS, 0..2usize).prop_map(|(socket, via)| Op::Resume { socket, via }),
    ]
}

/// One socket and what the model expects of it.
struct Socket {
    ws: Option<WsClient>,
    /// Subscribed to the room (its events must come, contiguously).
    subscribed: bool,
    /// The newest seq this socket has been given in the room; every
    /// message it gets while subscribed must be `seen + 1`.
    seen: Option<i64>,
}

impl Socket {
    /// Takes the socket's frames up to a ping's pong (or, with `until`,
    /// until it has seen that seq), checking each message against the
    /// model.
    async fn drain(&mut self, room: i64, until: Option<i64>) {
        let Some(ws) = self.ws.as_mut() else { return };
        if until.is_none() {
            ws.send(json!({"type": "ping"})).await;
        }
        loop {
            if let Some(u) = until
                && self.seen >= Some(u)
            {
                return;
            }
            let f = ws.frame().await;
            match f["type"].as_str() {
                Some("message") => {
                    let seq = f["message"]["seq"].as_i64().expect("seq");
                    assert_eq!(f["message"]["room"], room);
                    assert!(self.subscribed, "a message after unsubscribing: {f}");
                    if let Some(seen) = self.seen {
                        assert_eq!(
                            seq,
                            seen + 1,
                            "each event once, in order (after {seen}): {f}"
                        );
                    }
                    self.seen = Some(seq);
                }
                Some("subscribed") => {
                    let last = f["last_seq"].as_i64().expect("last_seq");
                    match self.seen {
                        // Everything up to `last_seq` came before it.
                        Some(seen) => assert_eq!(last, seen, "subscribed after {seen}: {f}"),
                        None => self.seen = Some(last),
                    }
                }
                Some("pong") if until.is_none() => return,
                Some("pong" | "presence" | "typing" | "read") => {}
                _ => panic!("unexpected frame {f}"),
            }
        }
    }
}

async fn connect(server: &TestServer, user: &TestUser) -> WsClient {
    server.ws("/ws/", user).await
}

async fn run(ops: Vec<Op>, servers: &[TestServer; 2], users: &[TestUser], owner: &TestUser) {
    let name = format!("mix-{:08x}", rand::random::<u32>());
    let room = servers[0].room(owner, &name, "public", &[]).await;
    for u in users {
        let (status, _) = servers[0]
            .post("/chat/join-room/", &u.access, json!({"room_id": room}))
            .await;
        assert!(status.is_success());
    }
    let mut sockets: Vec<Socket> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        sockets.push(Socket {
            ws: Some(connect(&servers[i % 2], u).await),
            subscribed: false,
            seen: None,
        });
    }
    let mut last = 0;
    for op in ops {
        match op {
            Op::Send { via } => {
                last = servers[via].send(owner, room, "m").await;
            }
            Op::Subscribe { socket, behind } => {
                let s = &mut sockets[socket];
                let Some(ws) = s.ws.as_mut() else { continue };
                let mut frame = json!({"type": "subscribe", "room": room});
                // A socket that has seen nothing yet subscribes live.
                if let (Some(behind), Some(seen)) = (behind, s.seen) {
                    frame["after_seq"] = json!((seen - behind).max(0));
                    if !s.subscribed {
                        // A fresh subscription replays from after_seq.
                        s.seen = Some((seen - behind).max(0));
                    }
                } else if !s.subscribed {
                    s.seen = None;
                }
                ws.send(frame).await;
                s.subscribed = true;
                s.drain(room, None).await;
            }
            Op::Unsubscribe { socket } => {
                let s = &mut sockets[socket];
                let Some(ws) = s.ws.as_mut() else { continue };
                ws.send(json!({"type": "unsubscribe", "room": room})).await;
                // What was on its way before the unsubscribe still counts.
                s.drain(room, None).await;
                s.subscribed = false;
            }
            Op::Disconnect { socket } => {
                let s = &mut sockets[socket];
                if s.subscribed {
                    s.drain(room, None).await;
                }
                if let Some(ws) = s.ws.take() {
                    ws.close().await;
                }
                s.subscribed = false;
            }
            Op::Resume { socket, via } => {
                let s = &mut sockets[socket];
                if s.ws.is_some() {
                    continue;
                }
                let mut ws = connect(&servers[via], &users[socket]).await;
                let mut frame = json!({"type": "subscribe", "room": room});
                if let Some(seen) = s.seen {
                    frame["after_seq"] = json!(seen);
                }
                ws.send(frame).await;
                s.ws = Some(ws);
                s.subscribed = true;
                s.drain(room, None).await;
            }
        }
    }
    // The end: every subscribed socket gets up to the last message.
    for s in &mut sockets {
        if s.subscribed {
            tokio::time::timeout(Duration::from_secs(20), s.drain(room, Some(last)))
                .await
                .expect("every event reaches every subscriber");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_event_once_in_order() {
    let redis = std::env::var("CHAT_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let (a, b) = two_instances(&redis).await;
    let owner = a.user("owner").await;
    let mut users = Vec::new();
    for i in 0..SOCKETS {
        users.push(a.user(&format!("user{i}")).await);
    }
    let servers = [a, b];
    let (status, _) = servers[1].get("/api/users/me/", &owner.access).await;
    assert_eq!(status, StatusCode::OK);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 24,
        max_shrink_iters: 64,
        ..RunnerConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        tokio::task::block_in_place(|| handle.block_on(run(ops, &servers, &users, &owner)));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
