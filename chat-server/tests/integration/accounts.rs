//! Account control and reports: server admins deactivate and reactivate
//! accounts, users log out everywhere; every token revoked stops working at
//! once, on HTTP and on open sockets (closed 4403), on every instance;
//! reports keep what they reported.

use chat_core::UserId;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::two_instances;
use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(
    deactivation_revokes_every_token_and_socket,
    logging_out_everywhere,
    reports_from_filing_to_resolution
);

/// Makes `user` a server admin, as `chat-server admin grant` does.
async fn grant_admin(s: &TestServer, user: &TestUser) {
    let storage = s.server().chat().storage().clone();
    assert!(
        storage
            .set_admin(UserId(user.id), true)
            .await
            .expect("grant")
    );
}

async fn login(s: &TestServer, name: &str) -> (StatusCode, Value) {
    s.call(
        "POST",
        "/api/users/token/",
        None,
        Some(json!({"username": name, "password": format!("password-{name}")})),
    )
    .await
}

async fn deactivation_revokes_every_token_and_socket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let root = s.user("root").await;
    let bob = s.user("bob").await;
    let ann = s.user("ann").await;
    grant_admin(&s, &root).await;
    let deactivate = |by: &TestUser, who: i64| {
        let path = format!("/admin/users/{who}/deactivate/");
        let token = by.access.clone();
        let s = &s;
        async move { s.call("POST", &path, Some(&token), None).await }
    };
    let (status, body) = deactivate(&ann, bob.id).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_admin"))
    );
    let (status, body) = deactivate(&root, 987_654).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("user_not_found"))
    );
    let (status, _) = deactivate(&root, root.id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut socket = s.ws("/ws/", &bob).await;
    let (status, _) = s.get("/api/users/me/", &bob.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deactivate(&root, bob.id).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        socket.close_code().await,
        Some(4403),
        "the open socket closes at once"
    );
    let (status, body) = s.get("/api/users/me/", &bob.access).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("account_deactivated"))
    );
    let (status, body) = login(&s, "bob").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("account_deactivated"))
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": bob.refresh})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refresh token was spent"
    );
    let refused = s.ws_raw(&format!("/ws/?token={}", bob.access)).await;
    assert!(matches!(refused, Err((403, _))), "no new socket");

    let (status, _) = s
        .call(
            "POST",
            &format!("/admin/users/{}/reactivate/", bob.id),
            Some(&root.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, tokens) = login(&s, "bob").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let fresh = tokens["access"].as_str().expect("access");
    assert_eq!(s.get("/api/users/me/", fresh).await.0, StatusCode::OK);
    let (status, _) = s.get("/api/users/me/", &bob.access).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "tokens from before stay revoked"
    );
}

async fn logging_out_everywhere(backend: Backend) {
    let s = TestServer::start(backend).await;
    let cat = s.user("cat").await;
    let (_, second) = login(&s, "cat").await;
    let second_access = second["access"].as_str().expect("access").to_owned();
    let mut socket = s.ws("/ws/", &cat).await;
    let (status, _) = s
        .call("POST", "/api/users/logout-all/", Some(&second_access), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(socket.close_code().await, Some(4403));
    for token in [&cat.access, &second_access] {
        let (status, body) = s.get("/api/users/me/", token).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
        );
    }
    let (status, _) = s
        .call(
            "POST",
            "/api/users/token/refresh/",
            None,
            Some(json!({"refresh": second["refresh"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, tokens) = login(&s, "cat").await;
    assert_eq!(status, StatusCode::OK);
    let fresh = tokens["access"].as_str().expect("access");
    assert_eq!(s.get("/api/users/me/", fresh).await.0, StatusCode::OK);
    let mut again = s
        .ws_raw(&format!("/ws/?token={fresh}"))
        .await
        .expect("a new socket");
    again.send(json!({"type": "ping"})).await;
    assert_eq!(again.expect("pong").await["type"], "pong");
}

async fn reports_from_filing_to_resolution(backend: Backend) {
    let s = TestServer::start(backend).await;
    let root = s.user("root").await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    grant_admin(&s, &root).await;
    let lobby = s.room(&ann, "lobby", "private", &[&bob]).await;
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": lobby}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rude = s.send(&bob, lobby, "something rude").await;

    for (body, status, code) in [
        (
            json!({"message_id": rude}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            json!({"message_id": rude, "reason": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"message_id": rude, "user_id": bob.id, "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"user_id": ann.id, "reason": "me"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"user_id": 987_654, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
    ] {
        let (got, answer) = s.post("/chat/reports/", &ann.access, body.clone()).await;
        if code.is_empty() {
            assert!(got.is_client_error(), "{body}: {answer}");
        } else {
            assert_eq!(
                (got, answer["code"].as_str()),
                (status, Some(code)),
                "{body}: {answer}"
            );
        }
    }
    let (status, body) = s
        .post(
            "/chat/reports/",
            &eve.access,
            json!({"message_id": rude, "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("message_not_found")),
        "a stranger cannot report what they cannot read"
    );
    let (status, filed) = s
        .post(
            "/chat/reports/",
            &ann.access,
            json!({"message_id": rude, "reason": "insults"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(
        (&filed["user_id"], filed.get("message_body")),
        (&json!(bob.id), None)
    );
    let id = filed["id"].as_i64().expect("id");
    let (status, _) = s
        .post(
            "/chat/reports/",
            &ann.access,
            json!({"user_id": bob.id, "reason": "spam"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{rude}/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = s.get("/admin/reports/", &ann.access).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("not_admin"))
    );
    let (status, page) = s.get("/admin/reports/?limit=1", &root.access).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["has_more"], true);
    let (_, report) = s.get(&format!("/admin/reports/{id}/"), &root.access).await;
    assert_eq!(
        (
            &report["message_body"],
            &report["message_deleted"],
            &report["reason"]
        ),
        (&json!("something rude"), &json!(true), &json!("insults")),
        "the reported text outlives its deletion, for admins"
    );
    let (status, resolved) = s
        .post(
            &format!("/admin/reports/{id}/resolve/"),
            &root.access,
            json!({"resolution": "warned bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(
        (&resolved["resolution"], &resolved["resolved_by"]),
        (&json!("warned bob"), &json!(root.id))
    );
    let (_, open) = s.get("/admin/reports/", &root.access).await;
    assert_eq!(open["reports"].as_array().map(Vec::len), Some(1));
    let (_, done) = s.get("/admin/reports/?status=resolved", &root.access).await;
    assert_eq!(done["reports"][0]["id"], id);
    let (status, body) = s.get("/admin/reports/987654/", &root.access).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("report_not_found"))
    );
    let (status, _) = s.get("/admin/reports/?status=maybe", &root.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Two instances behind one Redis: a deactivation made on one closes the
/// user's socket on the other and the other refuses their token at once
/// (its cache of the account dropped by the broker's message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_on_one_instance_holds_on_the_other() {
    let (a, b) = two_instances("redis://127.0.0.1:6379").await;
    let root = a.user("root").await;
    let bob = b.user("bob").await;
    grant_admin(&a, &root).await;
    // B has bob's account cached, and a socket of his.
    assert_eq!(b.get("/api/users/me/", &bob.access).await.0, StatusCode::OK);
    let mut socket = b.ws("/ws/", &bob).await;
    socket.send(json!({"type": "ping"})).await;
    assert_eq!(socket.expect("pong").await["type"], "pong");
    let (status, _) = a
        .call(
            "POST",
            &format!("/admin/users/{}/deactivate/", bob.id),
            Some(&root.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(socket.close_code().await, Some(4403));
    let (status, body) = b.get("/api/users/me/", &bob.access).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("account_deactivated"))
    );
}
