//! Authentication hardening end to end: sockets closed with 4401 when their
//! token expires unless an `auth` frame renews it, login throttling. Tokens
//! of another issuer are in `identity.rs`.
//!
//! Token lifetimes are whole seconds and the server allows 5 s of leeway,
//! so the expiry tests take several seconds each; they run on memory only
//! (nothing here depends on the storage backend).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Spends `refresh`; returns the new access and refresh tokens.
async fn refresh_access(s: &TestServer, refresh: &str) -> (String, String) {
    let (status, tokens) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "refresh: {tokens}");
    (
        tokens["access"].as_str().expect("access").to_owned(),
        tokens["refresh"].as_str().expect("refresh").to_owned(),
    )
}

// ---- sockets and expiry ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_close_4401_when_their_token_expires() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let mut multi = s.ws("/ws/", &ann).await;
    let mut bound = s.ws("/ws/chat/lobby/", &ann).await;
    bound.expect("subscribed").await;
    let mut direct = s.ws(&format!("/ws/users/{}/", bob.id), &ann).await;
    direct.expect("subscribed").await;
    // Working until then.
    multi.expect_quiet().await;
    for socket in [&mut multi, &mut bound, &mut direct] {
        assert_eq!(socket.close_code().await, Some(4401));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_frame_keeps_the_socket_open_past_the_first_expiry() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(2);
    })
    .await;
    let ann = s.user("ann").await;
    let lobby = s.room(&ann, "lobby", "public", &[]).await;
    let mut stays = s.ws("/ws/chat/lobby/", &ann).await;
    stays.expect("subscribed").await;
    // Opened with the same token, never renewed: it marks the first expiry.
    let mut goes = s.ws("/ws/", &ann).await;
    let first_exp = unix_now() + 2;

    // A token that expires later than the first (lifetimes are whole seconds).
    let mut refresh = ann.refresh.clone();
    loop {
        let (access, next) = refresh_access(&s, &refresh).await;
        refresh = next;
        stays
            .send(json!({"type": "auth", "token": access.clone()}))
            .await;
        let answer = stays.expect("authenticated").await;
        let expires_at = answer["expires_at"].as_str().expect("expires_at");
        let expires_at =
            time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        if expires_at.unix_timestamp() > first_exp as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    assert_eq!(goes.close_code().await, Some(4401));
    // Past the first expiry: the renewed socket still answers and delivers.
    stays.expect_quiet().await;
    let (access, _) = refresh_access(&s, &refresh).await;
    let (status, body) = s
        .post(
            "/chat/send/",
            &access,
            json!({"room": lobby, "message": "still here"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        stays.expect("message").await["message"]["body"],
        "still here"
    );
    // Until its renewed token expires in turn.
    assert_eq!(stays.close_code().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_auth_frames_keep_the_old_expiry() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    a.expect("subscribed").await;
    let (_, ann_refresh) = refresh_access(&s, &ann.refresh).await;
    for token in [
        bob.access.clone(),
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        ann_refresh,
        String::new(),
    ] {
        a.send(json!({"type": "auth", "token": token})).await;
        let err = a.expect("error").await;
        assert_eq!(err["code"], "invalid_token", "{err}");
        assert_eq!(err["error"], "Token is invalid or expired");
    }
    // Still working...
    a.send(json!({"message": "after the refusals"})).await;
    assert_eq!(a.expect("ack").await["message"]["seq"], 1);
    // ...until its own token expires.
    assert_eq!(a.close_code().await, Some(4401));
}

// ---- login throttling -----------------------------------------------------

async fn login(
    http: &reqwest::Client,
    s: &TestServer,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let resp = http
        .post(s.url("/api/users/token/"))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.expect("JSON body");
    (status, body, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_account_and_then_the_address() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.login_attempts_per_account = 5;
        c.login_attempts_per_address = 12;
    })
    .await;
    let _ann = s.user("ann").await;
    let _bob = s.user("bob").await;
    let here = reqwest::Client::new();
    let wrong = json!({"username": "ann", "password": "wrong password"});
    let right = json!({"username": "ann", "password": "password-ann"});
    for attempt in 1..=5 {
        let (status, body, _) = login(&here, &s, wrong.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
            "attempt {attempt}"
        );
    }
    for (body, why) in [
        (wrong.clone(), "a 6th wrong password"),
        (right.clone(), "the right password"),
        (
            json!({"email": "ANN@example.com", "password": "password-ann"}),
            "the same account by email",
        ),
    ] {
        let (status, body, retry_after) = login(&here, &s, body).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{why}: {body}");
        assert_eq!(body["code"], "rate_limited", "{why}");
        assert!(body["error"].is_string());
        let secs: u64 = retry_after
            .expect("Retry-After")
            .parse()
            .expect("whole seconds");
        assert!((1..=60).contains(&secs), "{secs}");
    }

    // Another account from the same address still works...
    let bob = json!({"username": "bob", "password": "password-bob"});
    assert_eq!(login(&here, &s, bob.clone()).await.0, StatusCode::OK);
    // ...until the address has failed 12 times (5 for ann so far).
    for n in 0..7 {
        let (status, _, _) = login(
            &here,
            &s,
            json!({"username": format!("nobody{n}"), "password": "x"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body, _) = login(&here, &s, bob.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );

    // Another address: bob is fine, ann's account is still locked.
    let there = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    assert_eq!(login(&there, &s, bob).await.0, StatusCode::OK);
    assert_eq!(
        login(&there, &s, right).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_logins_are_not_counted() {
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.login_attempts_per_account = 2;
        c.login_attempts_per_address = 2;
    })
    .await;
    let _ann = s.user("ann").await;
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let (status, body, _) = login(
            &http,
            &s,
            json!({"username": "ann", "password": "password-ann"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Behind a trusted proxy each client counts on its own address (the one
/// `X-Forwarded-For` names); without `trusted_proxies` the header is
/// ignored and every client shares the peer's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_throttled_apart() {
    for trusted in [true, false] {
        let s = TestServer::start_with(Backend::Memory, |c| {
            c.login_attempts_per_account = 0;
            c.login_attempts_per_address = 2;
            if trusted {
                c.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
            }
        })
        .await;
        let attempt = |client: &'static str| {
            let url = s.url("/api/users/token/");
            async move {
                reqwest::Client::new()
                    .post(url)
                    .header("X-Forwarded-For", client)
                    .json(&json!({"username": "nobody", "password": "wrong-password"}))
                    .send()
                    .await
                    .expect("answer")
                    .status()
            }
        };
        for _ in 0..2 {
            assert_eq!(attempt("203.0.113.1").await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(attempt("203.0.113.1").await, StatusCode::TOO_MANY_REQUESTS);
        // Another client behind the same proxy.
        let other = attempt("198.51.100.2").await;
        if trusted {
            assert_eq!(other, StatusCode::UNAUTHORIZED, "counted apart");
        } else {
            assert_eq!(
                other,
                StatusCode::TOO_MANY_REQUESTS,
                "the header is not trusted"
            );
        }
    }
}
