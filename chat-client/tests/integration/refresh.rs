//! The session: automatic refresh before expiry and on 401, restoring a
//! saved session, logout.

use std::time::Duration;

use chat_client::{ClientOptions, ErrorCode, ErrorKind, Tokens};

use crate::support::{TestServer, wait};

#[tokio::test]
async fn refreshes_an_expired_access_token_before_the_call() {
    let server = TestServer::start_with(|c| c.access_token_ttl = Duration::from_secs(1)).await;
    let (alice, user) = server
        .user_with(
            "alice",
            ClientOptions::default().refresh_margin(Duration::ZERO),
        )
        .await;
    let before = alice.tokens().expect("logged in");

    wait(Duration::from_millis(1_500)).await;
    assert!(
        before.expires_within(Duration::ZERO),
        "the token has expired"
    );
    let me = alice
        .me()
        .await
        .expect("the client refreshes and the call succeeds");
    assert_eq!(me.id, user.id);
    let after = alice.tokens().expect("still logged in");
    assert_ne!(after.access, before.access);
    assert_ne!(after.refresh, before.refresh);
}

#[tokio::test]
async fn concurrent_calls_refresh_once() {
    let server = TestServer::start_with(|c| c.access_token_ttl = Duration::from_secs(1)).await;
    let (alice, _) = server
        .user_with(
            "alice",
            ClientOptions::default().refresh_margin(Duration::ZERO),
        )
        .await;
    wait(Duration::from_millis(1_500)).await;

    // Were the refresh token spent twice, the server would revoke the
    // session and some of these calls would fail.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = alice.clone();
            tokio::spawn(async move { client.me().await })
        })
        .collect();
    for call in calls {
        call.await
            .expect("task completes")
            .expect("every call succeeds with one refresh");
    }
    alice.me().await.expect("the session is still valid");
}

#[tokio::test]
async fn refreshes_once_on_401_then_retries() {
    let server = TestServer::start().await;
    let (alice, user) = server.user("alice").await;
    let saved = alice.tokens().expect("logged in");

    // A restored session whose access token the server rejects, with no
    // known expiry: only the 401 tells the client to refresh.
    let restored = server.client();
    restored.set_tokens(Some(Tokens::new(
        "garbage.access.token",
        saved.refresh.clone(),
        None,
    )));
    let me = restored.me().await.expect("succeeds after one refresh");
    assert_eq!(me.id, user.id);
    let now = restored.tokens().expect("refreshed session");
    assert_ne!(now.access, "garbage.access.token");
    assert_ne!(now.refresh, saved.refresh);
    assert!(now.expires_at.is_some());
}

#[tokio::test]
async fn a_rejected_refresh_token_surfaces_invalid_token() {
    let server = TestServer::start().await;
    let client = server.client();
    client.set_tokens(Some(Tokens::new("garbage", "also garbage", None)));
    let e = client.me().await.expect_err("no valid token at all");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.code(), Some(ErrorCode::InvalidToken));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn logout_makes_the_refresh_token_invalid() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let saved = alice.tokens().expect("logged in");

    alice.logout().await.expect("logout");
    assert!(!alice.is_logged_in());
    let e = alice.refresh().await.expect_err("no session left");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);

    alice.set_tokens(Some(saved));
    let e = alice.refresh().await.expect_err("logged-out refresh token");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.code(), Some(ErrorCode::InvalidToken));
}
