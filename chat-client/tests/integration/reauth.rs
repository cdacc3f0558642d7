//! A [`Connection`] outliving its access tokens: it renews the socket's
//! token with `auth` frames before each expires, so the server never closes
//! it with 4401; without a known expiry it falls back to the 4401 close,
//! a refresh and a reconnect.

use std::time::Duration;

use chat_client::{
    ChatClient, ClientOptions, ConnectionState, CreateRoomRequest, Event, RoomId, RoomType, Tokens,
};

use crate::support::TestServer;

const WAIT: Duration = Duration::from_secs(30);

/// Servers whose access tokens live 2 s (plus the server's 5 s leeway).
async fn short_tokens() -> TestServer {
    TestServer::start_with(|c| {
        c.rate_limit = 0;
        c.access_token_ttl = Duration::from_secs(2);
    })
    .await
}

async fn public_room(client: &ChatClient, name: &str) -> RoomId {
    client
        .create_room(CreateRoomRequest {
            name: Some(name.into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create a public room")
        .id
}

/// Whether the server still accepts `token` (checked on `/api/users/me/`).
async fn accepted(server: &TestServer, token: &str) -> bool {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/users/me/", server.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    resp.status().is_success()
}

/// Sends from `bob` over HTTP until the server refuses `first_token` (so a
/// socket opened with it and never renewed would have been closed by now),
/// then two more; returns the last seq.
async fn send_past_expiry(
    server: &TestServer,
    bob: &ChatClient,
    room: RoomId,
    first_token: &str,
) -> i64 {
    let mut n = 0;
    let mut last = 0;
    let mut extra = 2;
    while extra > 0 {
        if !accepted(server, first_token).await {
            extra -= 1;
        }
        n += 1;
        last = bob
            .send(room, &format!("message {n}"), None)
            .await
            .expect("bob sends")
            .seq;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

#[tokio::test]
async fn a_connection_renews_its_token_without_reconnecting() {
    let server = short_tokens().await;
    let options = ClientOptions::default().refresh_margin(Duration::from_secs(1));
    let (alice, _) = server.user_with("alice", options).await;
    let (bob, _) = server.user("bob").await;
    let lobby = public_room(&alice, "lobby").await;
    bob.join_room(lobby).await.expect("bob joins");

    let first_token = alice.tokens().expect("logged in").access;
    let mut conn = alice.connect().await.expect("alice connects");
    conn.subscribe(lobby).await.expect("subscribe");

    let last = send_past_expiry(&server, &bob, lobby, &first_token).await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s| *s < last) {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("an event within the bound")
            .expect("the connection is open");
        match event {
            Event::Message(m) => seen.push(m.seq),
            Event::StateChanged(state) => panic!("the socket was replaced: {state:?}"),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        (2..=last).collect::<Vec<_>>(), // seq 1 is bob's join
        "every message, in order"
    );
    assert_eq!(conn.state(), ConnectionState::Connected);
    // The socket opened with a token the server no longer accepts, and still
    // carries sends.
    assert!(!accepted(&server, &first_token).await);
    let mine = conn.send(lobby, "still here").await.expect("send");
    assert_eq!(mine.seq, last + 1);
}

#[tokio::test]
async fn without_a_known_expiry_4401_refreshes_and_reconnects() {
    let server = short_tokens().await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let lobby = public_room(&alice, "lobby").await;
    bob.join_room(lobby).await.expect("bob joins");
    // A restored session whose expiry the client does not know: nothing to
    // renew ahead of, so the server's close is what tells it.
    let tokens = alice.tokens().expect("logged in");
    let first_token = tokens.access.clone();
    alice.set_tokens(Some(Tokens::new(tokens.access, tokens.refresh, None)));

    let mut conn = alice.connect().await.expect("alice connects");
    conn.subscribe(lobby).await.expect("subscribe");
    let last = send_past_expiry(&server, &bob, lobby, &first_token).await;
    let mut seen = Vec::new();
    let mut states = Vec::new();
    while seen.last().is_none_or(|s| *s < last) {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("an event within the bound")
            .expect("the connection is open");
        match event {
            Event::Message(m) => seen.push(m.seq),
            Event::StateChanged(state) => states.push(state),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        (2..=last).collect::<Vec<_>>(), // seq 1 is bob's join
        "every message, in order"
    );
    assert!(
        states.contains(&ConnectionState::Connected),
        "closed with 4401 and reconnected: {states:?}"
    );
    assert_ne!(alice.tokens().expect("logged in").access, first_token);
}
