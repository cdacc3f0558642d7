//! The host's users: tokens of its identity service (RS256/ES256, a PEM
//! key or a JWKS file) and of an authenticator the embedder hands in; their
//! users provisioned on first sight and renamed when the host renames them;
//! the attacks on such tokens refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chat_server::identity::{AuthError, Authenticator, Identity};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(host_users_are_provisioned_and_renamed);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

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

fn claims(sub: &str, tune: impl FnOnce(&mut Value)) -> Value {
    let now = unix_now();
    let mut c = json!({
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "iss": "https://id.example",
        "aud": "chat",
    });
    tune(&mut c);
    c
}
/// `GET /api/users/me/` with `token`.
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

/// A host user acting with `token`, as the helpers want one.
async fn host_user(s: &TestServer, token: &str) -> TestUser {
    let (status, body) = me(s, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    TestUser {
        id: body["id"].as_i64().expect("id"),
        access: token.to_owned(),
        refresh: String::new(),
    }
}

async fn host_users_are_provisioned_and_renamed(backend: Backend) {
    let rsa = key_pair("rsa");
    let public = rsa.public_path.clone();
    let s = TestServer::start_with(backend, move |c| {
        c.jwt_public_key = Some(public);
        c.jwt_issuer = Some("https://id.example".to_owned());
        c.jwt_audience = Some("chat".to_owned());
    })
    .await;
    let key = EncodingKey::from_rsa_pem(&rsa.private_pem).expect("RSA key");
    // An own account named like the host user's handle: the host user
    // gets another username, the own account is untouched.
    let own = s.user("ann").await;

    let token = sign(
        Algorithm::RS256,
        &key,
        &claims("auth0|ann-1", |c| {
            c["name"] = json!("Ann Host");
            c["preferred_username"] = json!("ann");
            c["email"] = json!("Ann@Host.example");
        }),
    );
    let (status, body) = me(&s, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "ann-2");
    assert_eq!(body["display_name"], "Ann Host");
    assert_eq!(body["email"], "ann@host.example");
    let ann = host_user(&s, &token).await;
    assert_ne!(ann.id, own.id);
    // The same subject is the same user, whatever the token.
    let (_, again) = me(
        &s,
        &sign(Algorithm::RS256, &key, &claims("auth0|ann-1", |_| {})),
    )
    .await;
    assert_eq!(
        (again["id"].as_i64(), again["display_name"].as_str()),
        (Some(ann.id), Some("Ann Host")),
        "no name claim keeps the name"
    );

    // A host user is a user like any other: rooms, messages, sockets.
    let room = s.room(&ann, "host-room", "public", &[]).await;
    s.send(&ann, room, "from the host").await;
    let mut socket = s.ws(&format!("/ws/chat/{room}/"), &ann).await;
    socket.expect("subscribed").await;

    // Renamed in the host: the next token carries the new name, and
    // history shows it.
    let renamed = sign(
        Algorithm::RS256,
        &key,
        &claims("auth0|ann-1", |c| c["name"] = json!("Ann Renamed")),
    );
    let (_, body) = me(&s, &renamed).await;
    assert_eq!(body["display_name"], "Ann Renamed");
    let (status, history) = s
        .get(&format!("/chat/history/?room={room}"), &renamed)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(
        history["chat_history"][0]["sender_name"], "Ann Renamed",
        "{history}"
    );

    // An unknown subject, a number for a subject: new users, no email.
    let (status, bob) = me(&s, &sign(Algorithm::RS256, &key, &claims("42", |_| {}))).await;
    assert_eq!(status, StatusCode::OK, "{bob}");
    assert_eq!(
        (bob["username"].as_str(), bob["display_name"].as_str()),
        (Some("42_"), Some("42_"))
    );
    let numeric = sign(
        Algorithm::RS256,
        &key,
        &claims("ignored", |c| c["sub"] = json!(42)),
    );
    assert_eq!(me(&s, &numeric).await.1["id"], bob["id"]);

    // Logging out everywhere revokes nothing of the host's tokens' future:
    // a socket opened with one afterwards stays open.
    let (status, body) = s
        .call("POST", "/api/users/logout-all/", Some(&renamed), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut after = s
        .ws_raw(&format!("/ws/?token={renamed}"))
        .await
        .expect("a host token opens a socket after a revocation");
    after.expect_quiet().await;

    // A host user cannot log in with a password: there is none.
    let (status, body) = s
        .call(
            "POST",
            "/api/users/token/",
            None,
            Some(json!({"username": "ann-2", "password": "any password"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{body}"
    );
    // Deactivation reaches host users too, whatever token they bring.
    let storage = s.server().chat().storage().clone();
    assert!(
        storage
            .set_admin(chat_core::UserId(own.id), true)
            .await
            .expect("grant")
    );
    let (status, body) = s
        .call(
            "POST",
            &format!("/admin/users/{}/deactivate/", ann.id),
            Some(&own.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = me(&s, &renamed).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_deactivated")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_and_the_attacks_on_them() {
    let rsa = key_pair("rsa");
    let ec = key_pair("ec");
    let public = rsa.public_path.clone();
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.jwt_public_key = Some(public);
        c.jwt_issuer = Some("https://id.example".to_owned());
        c.jwt_audience = Some("chat".to_owned());
    })
    .await;
    let own = s.user("own").await;
    let key = EncodingKey::from_rsa_pem(&rsa.private_pem).expect("RSA key");

    let good = sign(Algorithm::RS256, &key, &claims("host-ann", |_| {}));
    let (status, body) = me(&s, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut socket = s
        .ws_raw(&format!("/ws/?token={good}"))
        .await
        .expect("opens");
    socket.expect_quiet().await;
    // An identity-service token renews a socket too.
    socket.send(json!({"type": "auth", "token": good})).await;
    socket.expect("authenticated").await;
    // The server's own tokens still work.
    assert_eq!(me(&s, &own.access).await.0, StatusCode::OK);

    // Within the 5 s leeway.
    let now = unix_now();
    for (c, why) in [
        (
            claims("host-ann", |c| c["exp"] = json!(now - 2)),
            "exp 2 s ago",
        ),
        (
            claims("host-ann", |c| c["nbf"] = json!(now + 2)),
            "nbf in 2 s",
        ),
    ] {
        let (status, body) = me(&s, &sign(Algorithm::RS256, &key, &c)).await;
        assert_eq!(status, StatusCode::OK, "{why}: {body}");
    }

    let refused = [
        (
            claims("host-ann", |c| c["exp"] = json!(now - 30)),
            "expired",
        ),
        (
            claims("host-ann", |c| c["nbf"] = json!(now + 30)),
            "not yet valid",
        ),
        (
            claims("host-ann", |c| c["iss"] = json!("https://evil.example")),
            "wrong issuer",
        ),
        (
            claims("host-ann", |c| c["aud"] = json!("other")),
            "wrong audience",
        ),
        (
            claims("host-ann", |c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            "no audience",
        ),
        (
            claims("host-ann", |c| {
                c.as_object_mut().expect("object").remove("iss");
            }),
            "no issuer",
        ),
        (
            claims("host-ann", |c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            "no expiry",
        ),
        (
            claims("host-ann", |c| {
                c.as_object_mut().expect("object").remove("sub");
            }),
            "no subject",
        ),
        (claims("", |_| {}), "empty subject"),
        (claims(&"x".repeat(300), |_| {}), "subject too long"),
        (
            claims("host-ann", |c| c["typ"] = json!("refresh")),
            "a refresh token",
        ),
    ];
    for (c, why) in &refused {
        assert_refused(&s, &sign(Algorithm::RS256, &key, c), why).await;
    }

    let c = claims("host-ann", |_| {});
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
    // Issuers put a `kid` in their headers; a PEM key serves any.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("issuer-key-2026".to_owned());
    let with_kid = jsonwebtoken::encode(&header, &c, &key).expect("signs");
    assert_eq!(me(&s, &with_kid).await.0, StatusCode::OK);
    // Bots are the server API's: no host token speaks for one.
    assert_refused(
        &s,
        &sign(Algorithm::RS256, &key, &claims("bot:alerts", |_| {})),
        "a bot's subject",
    )
    .await;
    // A token of the server's own kind with a claimed subject it did not
    // sign is neither its own nor the identity service's.
    assert_refused(
        &s,
        &sign(Algorithm::HS256, &EncodingKey::from_secret(b"guess"), &c),
        "HS256 with another secret",
    )
    .await;
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
async fn es256_tokens_with_claims_mapped() {
    let ec = key_pair("ec");
    let rsa = key_pair("rsa");
    let public = ec.public_path.clone();
    // No issuer or audience configured: neither is checked. The user is
    // named by `uid`, the display name by `nickname`.
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.jwt_public_key = Some(public);
        c.jwt_subject_claim = "uid".to_owned();
        c.jwt_name_claim = "nickname".to_owned();
    })
    .await;
    let key = EncodingKey::from_ec_pem(&ec.private_pem).expect("EC key");
    let c = claims("not-the-subject", |c| {
        let o = c.as_object_mut().expect("object");
        o.remove("iss");
        o.remove("nbf");
        o.insert("uid".into(), json!("u-77"));
        o.insert("nickname".into(), json!("Seventy-Seven"));
        o.insert("name".into(), json!("not the name"));
    });
    let good = sign(Algorithm::ES256, &key, &c);
    let (status, body) = me(&s, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["username"].as_str(), body["display_name"].as_str()),
        (Some("u-77"), Some("Seventy-Seven"))
    );
    let user = host_user(&s, &good).await;
    s.room(&user, "lobby", "public", &[]).await;
    let mut socket = s
        .ws_raw(&format!("/ws/chat/lobby/?token={good}"))
        .await
        .expect("opens");
    socket.expect("subscribed").await;
    socket.send(json!({"message": "signed elsewhere"})).await;
    assert_eq!(socket.expect("ack").await["message"]["sender"], user.id);

    let no_uid = claims("u-77", |c| {
        c.as_object_mut().expect("object").remove("iss");
    });
    assert_refused(&s, &sign(Algorithm::ES256, &key, &no_uid), "no uid claim").await;
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
    let mut expired = c.clone();
    expired["exp"] = json!(unix_now() - 30);
    assert_refused(&s, &sign(Algorithm::ES256, &key, &expired), "expired").await;
}

/// A JWKS document of `keys` (private PEM, algorithm, kid).
fn jwks(keys: &[(&[u8], Algorithm, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(pem, alg, kid)| {
            let encoding = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
                _ => EncodingKey::from_ec_pem(pem),
            }
            .expect("private key");
            let mut jwk = Jwk::from_encoding_key(&encoding, *alg).expect("JWK");
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("JWKS")
}

fn sign_kid(alg: Algorithm, pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .expect("private key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_keys_by_id_and_rotation() {
    let rsa = key_pair("rsa");
    let ec = key_pair("ec");
    let next = key_pair("rsa");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jwks.json");
    std::fs::write(
        &file,
        jwks(&[
            (&rsa.private_pem, Algorithm::RS256, "rsa-1"),
            (&ec.private_pem, Algorithm::ES256, "ec-1"),
        ]),
    )
    .expect("write JWKS");
    let path = file.clone();
    let s = TestServer::start_with(Backend::Memory, move |c| {
        c.jwt_jwks = Some(path);
        c.jwt_issuer = Some("https://id.example".to_owned());
    })
    .await;
    let c = claims("jwks-user", |_| {});
    let by_rsa = sign_kid(Algorithm::RS256, &rsa.private_pem, "rsa-1", &c);
    let by_ec = sign_kid(Algorithm::ES256, &ec.private_pem, "ec-1", &c);
    let (_, first) = me(&s, &by_rsa).await;
    let (_, second) = me(&s, &by_ec).await;
    assert_eq!(first["id"], second["id"], "{first} {second}");
    assert!(first["id"].as_i64().is_some(), "{first}");

    // The issuer rotates: the file gains the next key and drops the EC
    // one. A token under the new id makes the server read the file again.
    std::fs::write(
        &file,
        jwks(&[
            (&rsa.private_pem, Algorithm::RS256, "rsa-1"),
            (&next.private_pem, Algorithm::RS256, "rsa-2"),
        ]),
    )
    .expect("rewrite JWKS");
    let (status, body) = me(
        &s,
        &sign_kid(Algorithm::RS256, &next.private_pem, "rsa-2", &c),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "rotated key: {body}");
    assert_eq!(body["id"], first["id"]);
    assert_refused(&s, &by_ec, "a key the file dropped").await;

    // A key id the file lacks (and no reread for 10 s: made-up ids do not
    // make every request read the file); a key id naming another key.
    let other = key_pair("rsa");
    assert_refused(
        &s,
        &sign_kid(Algorithm::RS256, &other.private_pem, "rsa-3", &c),
        "unknown kid",
    )
    .await;
    assert_refused(
        &s,
        &sign_kid(Algorithm::ES256, &ec.private_pem, "rsa-1", &c),
        "kid of an RSA key on an ES256 token",
    )
    .await;
    assert_refused(
        &s,
        &sign_kid(Algorithm::RS256, &other.private_pem, "rsa-1", &c),
        "another key under a known kid",
    )
    .await;
    assert_eq!(me(&s, &by_rsa).await.0, StatusCode::OK);
}

/// Tokens of the form `host:<subject>:<name>`, and `down` for an identity
/// service that cannot be reached.
#[derive(Debug)]
struct HostTokens;

#[async_trait::async_trait]
impl Authenticator for HostTokens {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        if token == "down" {
            return Err(AuthError::Unavailable("session store unreachable".into()));
        }
        let mut parts = token.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("host"), Some(subject), name) => {
                let mut identity = Identity::new(subject);
                identity.display_name = name.map(str::to_owned);
                Ok(identity)
            }
            _ => Err(AuthError::Refused("not a host token".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_authenticator() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = TestServer::start_built_on(
        "memory://".to_owned(),
        None,
        dir,
        |_| {},
        |b| b.authenticator(Arc::new(HostTokens)),
    )
    .await;
    let (status, body) = me(&s, "host:session-9:Nine").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["username"].as_str(), body["display_name"].as_str()),
        (Some("session-9"), Some("Nine"))
    );
    let nine = host_user(&s, "host:session-9:Nine").await;
    let room = s.room(&nine, "nines", "public", &[]).await;
    let mut socket = s.ws(&format!("/ws/chat/{room}/"), &nine).await;
    socket.expect("subscribed").await;
    // The server's own accounts go on working beside it.
    let own = s.user("own").await;
    assert_eq!(me(&s, &own.access).await.0, StatusCode::OK);

    assert_refused(&s, "something-else", "refused by the authenticator").await;
    let (status, body) = me(&s, "down").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("auth_unavailable")),
        "{body}"
    );
    let refused = s.ws_raw("/ws/?token=down").await;
    assert!(matches!(refused, Err((503, _))), "{:?}", refused.err());
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
