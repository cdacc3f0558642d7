//! Authentication hardening end to end: sockets closed with 4401 when their
//! token expires unless an `auth` frame renews it, access tokens of another
//! issuer (RS256/ES256) and the attacks on them, login throttling.
//!
//! Token lifetimes are whole seconds and the server allows 5 s of leeway,
//! so the expiry tests take several seconds each; they run on memory only
//! (nothing here depends on the storage backend).

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
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

// ---- another issuer's tokens ----------------------------------------------

/// A key pair made by the system's openssl: the private PEM (PKCS#8) and
/// the public PEM (SPKI) path.
struct KeyPair {
    private_pem: Vec<u8>,
    public_path: PathBuf,
    public_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (install the openssl command)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_pair(kind: &str) -> KeyPair {
    let dir = tempfile::tempdir().expect("temp dir");
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let p = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &p(&private),
        ]),
        "ec" => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &p(&private),
        ]),
        "ec384" => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            &p(&private),
        ]),
        other => panic!("unknown key kind {other}"),
    }
    openssl(&["pkey", "-in", &p(&private), "-pubout", "-out", &p(&public)]);
    KeyPair {
        private_pem: std::fs::read(&private).expect("private key"),
        public_pem: std::fs::read(&public).expect("public key"),
        public_path: public,
        _dir: dir,
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signs")
}

fn claims(sub: i64, tune: impl FnOnce(&mut Value)) -> Value {
    let now = unix_now();
    let mut c = json!({
        "sub": sub.to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "iss": "https://id.example",
        "aud": "chat",
    });
    tune(&mut c);
    c
}

/// `GET /api/users/me/` with `token`: the status and, on success, the
/// username.
async fn me(s: &TestServer, token: &str) -> (StatusCode, Value) {
    s.get("/api/users/me/", token).await
}

async fn assert_refused(s: &TestServer, token: &str, why: &str) {
    let (status, body) = me(s, token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "{why}: {body}"
    );
    let refused = s.ws_raw(&format!("/ws/?token={token}")).await;
    assert!(
        matches!(refused, Err((401, _))),
        "{why}: the socket handshake is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_of_another_issuer() {
    let rsa = key_pair("rsa");
    let ec = key_pair("ec");
    let public = rsa.public_path.clone();
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.jwt_public_key = Some(public);
        c.jwt_issuer = Some("https://id.example".to_owned());
        c.jwt_audience = Some("chat".to_owned());
    })
    .await;
    let ann = s.user("ann").await;
    let key = EncodingKey::from_rsa_pem(&rsa.private_pem).expect("RSA key");

    let good = sign(Algorithm::RS256, &key, &claims(ann.id, |_| {}));
    let (status, body) = me(&s, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "ann");
    let mut socket = s
        .ws_raw(&format!("/ws/?token={good}"))
        .await
        .expect("opens");
    socket.expect_quiet().await;
    // An external token renews a socket too.
    socket.send(json!({"type": "auth", "token": good})).await;
    socket.expect("authenticated").await;
    // The server's own tokens still work.
    assert_eq!(me(&s, &ann.access).await.0, StatusCode::OK);

    // Within the 5 s leeway.
    let now = unix_now();
    for (c, why) in [
        (claims(ann.id, |c| c["exp"] = json!(now - 2)), "exp 2 s ago"),
        (claims(ann.id, |c| c["nbf"] = json!(now + 2)), "nbf in 2 s"),
    ] {
        let (status, body) = me(&s, &sign(Algorithm::RS256, &key, &c)).await;
        assert_eq!(status, StatusCode::OK, "{why}: {body}");
    }

    let refused = [
        (claims(ann.id, |c| c["exp"] = json!(now - 30)), "expired"),
        (
            claims(ann.id, |c| c["nbf"] = json!(now + 30)),
            "not yet valid",
        ),
        (
            claims(ann.id, |c| c["iss"] = json!("https://evil.example")),
            "wrong issuer",
        ),
        (
            claims(ann.id, |c| c["aud"] = json!("other")),
            "wrong audience",
        ),
        (
            claims(ann.id, |c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            "no audience",
        ),
        (
            claims(ann.id, |c| {
                c.as_object_mut().expect("object").remove("iss");
            }),
            "no issuer",
        ),
        (claims(999_999, |_| {}), "unknown user"),
        (
            claims(ann.id, |c| c["sub"] = json!("ann")),
            "subject not an id",
        ),
        (
            claims(ann.id, |c| c["typ"] = json!("refresh")),
            "a refresh token",
        ),
    ];
    for (c, why) in &refused {
        assert_refused(&s, &sign(Algorithm::RS256, &key, c), why).await;
    }

    let c = claims(ann.id, |_| {});
    // Algorithm confusion: HS256 "signed" with the public key as the secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&rsa.public_pem),
        &c,
    );
    assert_refused(&s, &confused, "HS256 with the public key as secret").await;
    // Same RSA key, an algorithm not on the list.
    assert_refused(&s, &sign(Algorithm::RS384, &key, &c), "RS384").await;
    assert_refused(&s, &sign(Algorithm::PS256, &key, &c), "PS256").await;
    // ES256 while the configured key is RSA.
    let ec_key = EncodingKey::from_ec_pem(&ec.private_pem).expect("EC key");
    assert_refused(&s, &sign(Algorithm::ES256, &ec_key, &c), "ES256 vs RSA key").await;
    // No signature at all.
    assert_refused(&s, &unsigned(&c), "alg none").await;
}

/// `{"alg":"none"}` with the claims and an empty signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_of_another_issuer() {
    let ec = key_pair("ec");
    let rsa = key_pair("rsa");
    let public = ec.public_path.clone();
    // No issuer or audience configured: neither is checked.
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.jwt_public_key = Some(public);
    })
    .await;
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let key = EncodingKey::from_ec_pem(&ec.private_pem).expect("EC key");
    let c = claims(ann.id, |c| {
        let o = c.as_object_mut().expect("object");
        o.remove("iss");
        o.remove("nbf");
    });
    let good = sign(Algorithm::ES256, &key, &c);
    let (status, body) = me(&s, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut socket = s
        .ws_raw(&format!("/ws/chat/lobby/?token={good}"))
        .await
        .expect("opens");
    socket.expect("subscribed").await;
    socket.send(json!({"message": "signed elsewhere"})).await;
    assert_eq!(socket.expect("ack").await["message"]["sender"], ann.id);

    let rsa_key = EncodingKey::from_rsa_pem(&rsa.private_pem).expect("RSA key");
    assert_refused(&s, &sign(Algorithm::RS256, &rsa_key, &c), "RS256 vs EC key").await;
    let p384 = key_pair("ec384");
    let p384 = EncodingKey::from_ec_pem(&p384.private_pem).expect("P-384 key");
    assert_refused(&s, &sign(Algorithm::ES384, &p384, &c), "ES384").await;
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&ec.public_pem),
        &c,
    );
    assert_refused(&s, &confused, "HS256 with the public key as secret").await;
    let expired = claims(ann.id, |c| c["exp"] = json!(unix_now() - 30));
    assert_refused(&s, &sign(Algorithm::ES256, &key, &expired), "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_public_key_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("key.pem");
    std::fs::write(&junk, "not a key").expect("write");
    // A P-384 key is not an ES256 key.
    let p384 = key_pair("ec384");
    for path in [
        junk,
        p384.public_path.clone(),
        dir.path().join("missing.pem"),
    ] {
        let config = chat_server::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            storage_url: "memory://".to_owned(),
            jwt_public_key: Some(path.clone()),
            ..chat_server::Config::default()
        };
        assert!(
            chat_server::Server::start(config).await.is_err(),
            "{path:?} is refused"
        );
    }
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
