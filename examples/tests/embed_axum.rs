//! The `embed_axum` example end to end: its own login hands out chat
//! tokens minted with the server API, the project's client uses them on the
//! chat mounted under `/chat`, and the bot answers in the lobby.

#[allow(dead_code)]
#[path = "../embed_axum.rs"]
mod host;

use std::time::Duration;

use chat_client::{ChatClient, ConnectionState, Event, Message, Tokens};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn host_login(base: &str, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("the host answers")
}

/// Logs in at the host; a chat client holding the minted tokens.
async fn chat_user(base: &str, user: &str) -> ChatClient {
    let answer = host_login(base, user, &format!("{user}-secret")).await;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    let client = ChatClient::new(body["chat_url"].as_str().expect("chat_url")).expect("client");
    client.set_tokens(Some(Tokens::new(
        body["access"].as_str().expect("access"),
        body["refresh"].as_str().expect("refresh"),
        None,
    )));
    client
}

async fn next_message(conn: &mut chat_client::Connection) -> Message {
    tokio::time::timeout(WAIT, async {
        loop {
            match conn.next_event().await {
                Some(Event::Message(m)) => return m,
                Some(_) => continue,
                None => panic!("the connection ended"),
            }
        }
    })
    .await
    .expect("a message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_app_its_login_and_its_bot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let storage = format!("sqlite://{}", dir.path().join("embed.db").display());
    let (chat, served) = host::serve(listener, storage)
        .await
        .expect("the host starts");

    // The host's own login decides; chat never sees a password.
    let refused = host_login(&base, "alice", "wrong").await;
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);

    let alice = chat_user(&base, "alice").await;
    let bob = chat_user(&base, "bob").await;
    let me = alice.me().await.expect("me");
    assert_eq!(
        (me.username.as_str(), me.display_name.as_str()),
        ("alice", "Alice")
    );
    let rooms = alice.rooms().await.expect("rooms");
    let lobby = rooms
        .iter()
        .find(|r| r.name == host::LOBBY)
        .expect("the host put alice in the lobby")
        .id;

    let mut bobs = bob.connect().await.expect("bob connects");
    bobs.subscribe(lobby).await.expect("subscribe");
    let mut alices = alice.connect().await.expect("alice connects");
    alices.subscribe(lobby).await.expect("subscribe");
    alices.send(lobby, "!ping").await.expect("send");
    assert_eq!(next_message(&mut bobs).await.body, "!ping");
    // Alice's own stream has her message too.
    let pong = loop {
        let m = next_message(&mut alices).await;
        if m.sender != me.id {
            break m;
        }
    };
    assert_eq!(pong.body, "pong");
    assert_eq!(next_message(&mut bobs).await.body, "pong");
    let users = alice.users(None, None).await.expect("users");
    let bot = users
        .iter()
        .find(|u| u.id == pong.sender)
        .expect("the bot is a user");
    assert!(bot.bot, "{bot:?}");

    alices.send(lobby, "!who").await.expect("send");
    let who = loop {
        let m = next_message(&mut alices).await;
        if m.sender == pong.sender {
            break m;
        }
    };
    assert!(
        who.body.contains("alice") && who.body.contains("bob") && who.body.contains(host::BOT),
        "{}",
        who.body
    );

    // The host shuts down: sockets close, the host's server drains.
    chat.shutdown();
    tokio::time::timeout(WAIT, served)
        .await
        .expect("drains")
        .expect("task")
        .expect("serve");
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match alices.next_event().await {
                Some(Event::StateChanged(s)) if s != ConnectionState::Connected => break,
                None => break,
                Some(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "alice's socket was closed");
}
