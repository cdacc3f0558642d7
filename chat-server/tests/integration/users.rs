//! Accounts and tokens over HTTP.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    register_validates_and_refuses_duplicates,
    login_refresh_logout,
    users_list_and_privacy,
    unauthenticated_calls_are_refused
);

async fn register_validates_and_refuses_duplicates(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (status, user) = s
        .call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "ann", "email": "Ann@Example.com", "password": "password1", "display_name": "Ann A."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(user["username"], "ann");
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["display_name"], "Ann A.");
    assert!(user["id"].as_i64().expect("id") > 0);
    assert!(
        user["created_at"]
            .as_str()
            .expect("created_at")
            .ends_with('Z')
    );
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    // Without the trailing slash too.
    let (status, body) = s
        .call(
            "POST",
            "/api/users/register",
            None,
            Some(json!({"username": "ann", "email": "other@example.com", "password": "password1"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("username_taken"))
    );
    let (status, body) = s
        .call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "ann2", "email": "ANN@example.com", "password": "password1"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_taken"))
    );

    let (status, body) = s
        .call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "a b", "email": "nope", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_input");
    for field in ["username", "email", "password"] {
        assert!(
            body["fields"][field].is_string(),
            "{field} reported: {body}"
        );
    }
    let (status, body) = s
        .call(
            "POST",
            "/api/users/register/",
            None,
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, body) = s
        .call("POST", "/api/users/register/", None, Some(json!("{")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn login_refresh_logout(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;

    // By email, case-insensitively.
    let (status, tokens) = s
        .call(
            "POST",
            "/api/users/token/",
            None,
            Some(json!({"email": "ANN@example.com", "password": "password-ann"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);

    // Wrong password and unknown user: the same answer.
    for body in [
        json!({"username": "ann", "password": "wrong-password"}),
        json!({"username": "nobody", "password": "password-ann"}),
    ] {
        let (status, err) = s.call("POST", "/api/users/token/", None, Some(body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            err,
            json!({"error": "Invalid username or password", "code": "invalid_credentials"})
        );
    }

    let (status, me) = s.get("/api/users/me/", &ann.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "ann");
    assert_eq!(me["email"], "ann@example.com");

    // Refresh rotates: the new pair works, the spent token does not, and
    // presenting it again revokes the family (the new refresh token too).
    let (status, next) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": ann.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let next_refresh = next["refresh"].as_str().expect("refresh").to_owned();
    assert_ne!(next_refresh, ann.refresh);
    let (status, _) = s
        .get("/api/users/me/", next["access"].as_str().expect("access"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": ann.refresh})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": next_refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reuse revoked the family");

    // An access token is not a refresh token.
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": ann.access})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logout: 204, then that refresh token no longer works.
    let (_, fresh) = s
        .call(
            "POST",
            "/api/users/token/",
            None,
            Some(json!({"username": "ann", "password": "password-ann"})),
        )
        .await;
    let refresh = fresh["refresh"].as_str().expect("refresh");
    let (status, body) = s
        .call(
            "POST",
            "/api/users/logout/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::NO_CONTENT, serde_json::Value::Null)
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = s
        .call(
            "POST",
            "/api/users/logout/",
            None,
            Some(json!({"refresh": "garbage"})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
}

async fn users_list_and_privacy(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cat = s.user("cat").await;

    let (status, users) = s.get("/api/users/", &ann.access).await;
    assert_eq!(status, StatusCode::OK);
    let users = users.as_array().expect("array");
    let ids: Vec<i64> = users
        .iter()
        .map(|u| u["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![ann.id, bob.id, cat.id]);
    assert_eq!(users[0]["email"], "ann@example.com", "own email shown");
    assert!(
        users[1].get("email").is_none(),
        "others' email hidden: {}",
        users[1]
    );

    let (_, page) = s
        .get(
            &format!("/api/users/?after={}&limit=1", ann.id),
            &ann.access,
        )
        .await;
    let page = page.as_array().expect("array");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["id"], bob.id);

    let (status, err) = s.get("/api/users/?limit=0", &ann.access).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, err) = s.get("/api/users/?limit=abc", &ann.access).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
}

async fn unauthenticated_calls_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let _ann = s.user("ann").await;
    for (method, path) in [
        ("GET", "/api/users/me/"),
        ("GET", "/api/users/"),
        ("GET", "/chat/rooms/"),
        ("POST", "/chat/create-room/"),
        ("GET", "/chat/history/?room=1"),
        ("POST", "/chat/send/"),
    ] {
        let (status, err) = s.call(method, path, None, Some(json!({}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(err["code"], "unauthorized", "{method} {path}");
        let (status, _) = s
            .call(method, path, Some("not-a-jwt"), Some(json!({})))
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with garbage"
        );
    }
    let (status, err) = s.call("GET", "/no/such/path", None, None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, err) = s.call("DELETE", "/api/users/me/", None, None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    let (status, health) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["storage"], "ok");
    assert_eq!(health["broker"], "ok");
}
