//! Several server instances behind one address: they share PostgreSQL and
//! Redis, and clients on different instances chat in one room as if there
//! were one server.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::redis_server::RedisServer;
use crate::support::{PgSchema, TestServer, TestUser, WsClient};

/// Two servers on one PostgreSQL schema and one Redis (own prefix).
pub(crate) async fn two_instances(redis_url: &str) -> (TestServer, TestServer) {
    two_instances_with(redis_url, |_| {}).await
}

/// [`two_instances`], both configured by `more` too.
pub(crate) async fn two_instances_with(
    redis_url: &str,
    more: impl Fn(&mut chat_server::Config),
) -> (TestServer, TestServer) {
    let schema = PgSchema::create().await;
    let url = schema.url();
    let prefix = format!("chat-test-{:08x}", rand::random::<u32>());
    let tune = |c: &mut chat_server::Config| {
        c.broker_url = redis_url.to_owned();
        c.broker_prefix = prefix.clone();
        more(c);
    };
    // Started one after the other, so the second finds the JWT secret the
    // first stored and both accept each other's tokens.
    let a = TestServer::start_on(
        url.clone(),
        Some(schema),
        tempfile::tempdir().expect("dir"),
        tune,
    )
    .await;
    let b = TestServer::start_on(url, None, tempfile::tempdir().expect("dir"), tune).await;
    (a, b)
}

/// Sends over a socket and returns the acknowledged seq.
async fn send_acked(ws: &mut WsClient, room: i64, body: &str) -> i64 {
    ws.send(json!({"type": "send", "room": room, "body": body, "client_id": body}))
        .await;
    loop {
        let f = ws.frame().await;
        if f["type"] == "ack" {
            return f["message"]["seq"].as_i64().expect("seq");
        }
        assert_ne!(f["type"], "error", "{f}");
    }
}

/// Reads messages until `n` arrived; returns (seq, body) in arrival order.
async fn messages(ws: &mut WsClient, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = ws.frame().await;
        if f["type"] == "message" {
            let m = &f["message"];
            out.push((
                m["seq"].as_i64().expect("seq"),
                m["body"].as_str().expect("body").to_owned(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_instances_get_every_message_once_in_order() {
    let (a, b) = two_instances("redis://127.0.0.1:6379").await;
    let ann = a.user("ann").await;
    let bob = b.user("bob").await;
    let cat = a.user("cat").await;
    let room = a.room(&ann, "shared", "public", &[]).await;

    let mut ann_ws = a.ws("/ws/", &ann).await;
    let mut bob_ws = b.ws("/ws/", &bob).await;
    let mut cat_ws = b.ws("/ws/", &cat).await;
    let mut watch_a = a.ws("/ws/", &cat).await;
    for ws in [&mut ann_ws, &mut bob_ws, &mut cat_ws, &mut watch_a] {
        ws.subscribe(json!(room), None).await;
    }

    // Both instances publish at once: ann's sends go through A, bob's
    // through B, interleaved.
    const EACH: usize = 60;
    let sender = |s: &TestServer, u: &TestUser, tag: &'static str| {
        let url = s.url("/chat/send/");
        let token = u.access.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..EACH {
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"room": room, "message": format!("{tag}{i}")}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), StatusCode::CREATED);
            }
        })
    };
    let s1 = sender(&a, &ann, "a");
    let s2 = sender(&b, &bob, "b");
    s1.await.expect("sender");
    s2.await.expect("sender");

    // Bob's and cat's joins (subscribing to a public room joins it) are
    // seqs 1 and 2.
    let expected: Vec<i64> = (3..=(2 * EACH) as i64 + 2).collect();
    let mut seen = HashMap::new();
    for (name, ws) in [
        ("ann@A", &mut ann_ws),
        ("bob@B", &mut bob_ws),
        ("cat@B", &mut cat_ws),
        ("cat@A", &mut watch_a),
    ] {
        let got = messages(ws, 2 * EACH).await;
        let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, expected, "{name}: every message once, in seq order");
        ws.expect_quiet().await;
        seen.insert(name, got);
    }
    // And everyone saw the same message at each seq.
    assert!(seen.values().all(|v| *v == seen["ann@A"]));
    // Each sender's own messages keep their order.
    let order = |tag: &str| -> Vec<usize> {
        seen["ann@A"]
            .iter()
            .filter(|(_, b)| b.starts_with(tag))
            .map(|(_, b)| b[1..].parse().expect("index"))
            .collect()
    };
    assert_eq!(order("a"), (0..EACH).collect::<Vec<_>>());
    assert_eq!(order("b"), (0..EACH).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_sockets_and_catches_up_when_back() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis.url()).await;
    let ann = a.user("ann").await;
    let bob = b.user("bob").await;
    let room = a.room(&ann, "lobby", "public", &[]).await;
    let mut on_a = a.ws("/ws/", &bob).await;
    on_a.subscribe(json!(room), None).await;
    let mut on_b = b.ws("/ws/", &bob).await;
    on_b.subscribe(json!(room), None).await;
    let mut sender = a.ws("/ws/", &ann).await;
    sender.subscribe(json!(room), None).await;

    // Bob's join is seq 1.
    assert_eq!(send_acked(&mut sender, room, "before").await, 2);
    assert_eq!(messages(&mut on_a, 1).await[0].0, 2);
    assert_eq!(messages(&mut on_b, 1).await[0].0, 2);

    redis.kill();
    let mut down = false;
    for _ in 0..100 {
        let (_, health) = a.call("GET", "/healthz", None, None).await;
        if health["broker"] == "unavailable" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "healthz reports the broker down");
    let (status, _) = a.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Sends still store and acknowledge; this instance's sockets still get
    // them; every socket stays open.
    assert_eq!(send_acked(&mut sender, room, "during-1").await, 3);
    assert_eq!(send_acked(&mut sender, room, "during-2").await, 4);
    let local: Vec<i64> = messages(&mut on_a, 2).await.iter().map(|m| m.0).collect();
    assert_eq!(local, vec![3, 4]);

    redis.restart().await;
    // B never heard of 3 and 4 over Redis: its broker reconnects, resyncs,
    // and its socket catches up from storage, in order.
    let caught_up: Vec<i64> = messages(&mut on_b, 2).await.iter().map(|m| m.0).collect();
    assert_eq!(caught_up, vec![3, 4]);
    // Each instance backs off on its own: wait for both to be back.
    for s in [&a, &b] {
        let mut back = false;
        for _ in 0..100 {
            let (status, health) = s.call("GET", "/healthz", None, None).await;
            if status == StatusCode::OK && health["broker"] == "ok" {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "healthz back to ok on every instance");
    }
    // And live delivery across instances works again.
    assert_eq!(send_acked(&mut sender, room, "after").await, 5);
    assert_eq!(messages(&mut on_b, 1).await[0].0, 5);
    assert_eq!(messages(&mut on_a, 1).await[0].0, 5);
    on_a.expect_quiet().await;
    on_b.expect_quiet().await;
}

/// A real Redis restart (SIGKILL, then a new redis-server on the same port)
/// under steady traffic: Ann sends every 20 ms through instance A while Bob
/// listens on instance B. Sends never stop being acknowledged; Bob gets
/// every acknowledged message exactly once, in seq order, those of the
/// outage from storage once B's broker is back. Prints how long each step
/// of the recovery took (SECURITY.md, "Faults", quotes a run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_traffic_loses_nothing() {
    use std::time::Instant;

    let mut redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis.url()).await;
    let ann = a.user("ann").await;
    let bob = b.user("bob").await;
    let room = a.room(&ann, "lobby", "public", &[]).await;
    let mut listener = b.ws("/ws/", &bob).await;
    listener.subscribe(json!(room), None).await;
    let mut sender = a.ws("/ws/", &ann).await;
    sender.subscribe(json!(room), None).await;

    // Bob's socket, read on a task of its own: each message's seq and when
    // it arrived.
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let f = listener.frame().await;
            if f["type"] == "message" {
                let seq = f["message"]["seq"].as_i64().expect("seq");
                if arrived.send((seq, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    let mut acked = Vec::new();
    let mut n = 0;
    let mut send_for = async |span: Duration, acked: &mut Vec<i64>| {
        let until = Instant::now() + span;
        while Instant::now() < until {
            n += 1;
            acked.push(send_acked(&mut sender, room, &format!("m{n}")).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    send_for(Duration::from_millis(500), &mut acked).await;
    redis.kill();
    let killed = Instant::now();
    let before_outage = acked.len();
    send_for(Duration::from_secs(2), &mut acked).await;
    let during_outage = acked.len() - before_outage;
    let last_of_outage = *acked.last().expect("sent");
    redis.restart().await;
    let restarted = Instant::now();
    // B's health, polled beside the traffic.
    let health_url = b.url("/healthz");
    let health = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(&health_url).send().await
                && r.status() == StatusCode::OK
            {
                return restarted.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    send_for(Duration::from_secs(2), &mut acked).await;

    let mut got = Vec::new();
    let mut caught_up = None;
    while got.len() < acked.len() {
        let (seq, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .unwrap_or_else(|_| panic!("B delivered {} of {} acknowledged", got.len(), acked.len()))
            .expect("reader runs");
        if seq == last_of_outage {
            caught_up = Some(at.saturating_duration_since(restarted));
        }
        got.push(seq);
    }
    assert_eq!(got, acked, "every acknowledged message once, in order");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(arrivals.try_recv().is_err(), "nothing more");
    reader.abort();
    let healthy = tokio::time::timeout(Duration::from_secs(10), health)
        .await
        .expect("B healthy again")
        .expect("poller");
    eprintln!(
        "redis restart under traffic: {} messages acked ({during_outage} during the {:?} outage); \
         after the restart B's /healthz was ok in {healthy:?} and its socket had every \
         message of the outage {:?} after it",
        acked.len(),
        restarted.duration_since(killed),
        caught_up.expect("the outage's last message arrived"),
    );
}

/// A member who leaves while Redis is down: the instance holding their
/// socket never hears of it over the broker, so when Redis is back the
/// catch-up must check membership instead of replaying what was said
/// after they left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_during_a_redis_outage_hears_nothing_after() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis.url()).await;
    let ann = a.user("ann").await;
    let bob = b.user("bob").await;
    let cat = b.user("cat").await;
    let room = a.room(&ann, "inner", "private", &[&bob, &cat]).await;
    for u in [&bob, &cat] {
        let (status, _) = b
            .post("/chat/join-room/", &u.access, json!({"room_id": room}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut bob_on_b = b.ws("/ws/", &bob).await;
    bob_on_b.subscribe(json!(room), None).await;
    let mut bob_bound_on_b = b.ws(&format!("/ws/chat/{room}/"), &bob).await;
    bob_bound_on_b.expect("subscribed").await;
    let mut cat_on_b = b.ws("/ws/", &cat).await;
    cat_on_b.subscribe(json!(room), None).await;
    let mut sender = a.ws("/ws/", &ann).await;
    sender.subscribe(json!(room), None).await;
    // The two joins are seqs 1 and 2.
    assert_eq!(send_acked(&mut sender, room, "before").await, 3);
    assert_eq!(messages(&mut bob_on_b, 1).await[0].0, 3);
    assert_eq!(messages(&mut cat_on_b, 1).await[0].0, 3);

    redis.kill();
    let mut down = false;
    for _ in 0..100 {
        let (_, health) = a.call("GET", "/healthz", None, None).await;
        if health["broker"] == "unavailable" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "healthz reports the broker down");
    // Bob leaves through A: B's sockets of his cannot hear of it.
    let (status, _) = a
        .call(
            "POST",
            &format!("/chat/rooms/{room}/leave/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // His leaving took seq 4.
    assert_eq!(send_acked(&mut sender, room, "after bob left").await, 5);

    redis.restart().await;
    // Cat, still a member on B, catches up: B has resynced every socket.
    assert_eq!(
        messages(&mut cat_on_b, 1).await[0].1,
        "after bob left".to_owned()
    );
    // Bob's bound socket is closed as if he had heard himself leave, and his
    // /ws/ socket heard nothing.
    assert_eq!(bob_bound_on_b.close_code().await, Some(1000));
    bob_on_b.expect_quiet().await;
}

/// A user is online in a room while they have a socket in it on any
/// instance: a second socket on the other instance announces nothing, the
/// first one closing announces nothing, the last one closing announces
/// `offline` to everybody, and the online list (on subscribe and over HTTP)
/// is the same from either instance. Typing notices cross too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_the_online_list_span_instances() {
    let (a, b) = two_instances("redis://127.0.0.1:6379").await;
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let cat = b.user("cat").await;
    let room = a.room(&ann, "lobby", "public", &[]).await;
    for (s, user) in [(&a, &bob), (&b, &cat)] {
        let (status, body) = s
            .post("/chat/join-room/", &user.access, json!({"room_id": room}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let online = |user: &TestUser| json!({"type": "presence", "room": room, "user": user.id, "status": "online"});
    let offline = |user: &TestUser| json!({"type": "presence", "room": room, "user": user.id, "status": "offline"});

    // Ann watches from instance A.
    let mut watcher = a.ws("/ws/", &ann).await;
    watcher.subscribe(json!(room), None).await;

    let mut bob_on_b = b.ws("/ws/", &bob).await;
    bob_on_b.subscribe(json!(room), None).await;
    assert_eq!(watcher.expect("presence").await, online(&bob));
    let mut bob_on_a = a.ws("/ws/", &bob).await;
    let (_, _, here) = bob_on_a.subscribe_seeing(json!(room), None).await;
    assert_eq!(
        here,
        vec![online(&ann)],
        "bob's own sockets are not news to him"
    );
    watcher.expect_quiet().await;

    // Cat, subscribing on B, learns of everyone, wherever their sockets are.
    let mut cat_on_b = b.ws("/ws/", &cat).await;
    let (_, _, here) = cat_on_b.subscribe_seeing(json!(room), None).await;
    assert_eq!(here, vec![online(&ann), online(&bob)]);
    assert_eq!(watcher.expect("presence").await, online(&cat));
    for (s, who) in [(&a, &ann), (&b, &cat)] {
        let (status, body) = s
            .get(&format!("/chat/rooms/{room}/online/"), &who.access)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"room": room, "users": [ann.id, bob.id, cat.id]})
        );
    }

    // Typing crosses instances like presence.
    cat_on_b.send(json!({"type": "typing", "room": room})).await;
    assert_eq!(
        watcher.expect("typing").await,
        json!({"type": "typing", "room": room, "user": cat.id})
    );

    // Bob's socket on A goes: he is still on B.
    bob_on_a.close().await;
    watcher.expect_quiet().await;
    cat_on_b.expect_quiet().await;
    let (_, body) = a
        .get(&format!("/chat/rooms/{room}/online/"), &ann.access)
        .await;
    assert_eq!(body["users"], json!([ann.id, bob.id, cat.id]));
    // His last socket goes: everyone hears it, on both instances, once.
    bob_on_b.close().await;
    assert_eq!(watcher.expect("presence").await, offline(&bob));
    assert_eq!(cat_on_b.expect("presence").await, offline(&bob));
    watcher.expect_quiet().await;
    cat_on_b.expect_quiet().await;
    let (_, body) = b
        .get(&format!("/chat/rooms/{room}/online/"), &cat.access)
        .await;
    assert_eq!(body["users"], json!([ann.id, cat.id]));
}

/// The per-user message limit and the failed-login throttle count once
/// across instances: spreading sends or password guesses over two
/// instances gains nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_login_throttles_span_instances() {
    let (a, b) = two_instances_with("redis://127.0.0.1:6379", |c| {
        // 1 message per second with a burst of 5; 3 failed logins a minute.
        c.user_rate_limit = 1;
        c.login_attempts_per_account = 3;
        c.login_attempts_per_address = 0;
    })
    .await;
    let ann = a.user("ann").await;
    let room = a.room(&ann, "lobby", "public", &[]).await;
    let send = async |s: &TestServer, n: usize| {
        s.post(
            "/chat/send/",
            &ann.access,
            json!({"room": room, "message": format!("m{n}")}),
        )
        .await
    };
    for n in 0..5 {
        let s = if n % 2 == 0 { &a } else { &b };
        let (status, body) = send(s, n).await;
        assert_eq!(status, StatusCode::CREATED, "send {n}: {body}");
    }
    for s in [&a, &b] {
        let (status, body) = send(s, 9).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["code"], "rate_limited");
    }

    let login = async |s: &TestServer, password: &str| {
        s.call(
            "POST",
            "/api/users/token/",
            None,
            Some(json!({"username": "ann", "password": password})),
        )
        .await
    };
    for (s, n) in [(&a, 1), (&b, 2), (&a, 3)] {
        let (status, body) = login(s, "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {n}: {body}");
    }
    for s in [&b, &a] {
        let (status, body) = login(s, "password-ann").await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "locked on every instance, even with the right password: {body}"
        );
        assert_eq!(body["code"], "rate_limited");
    }
}
