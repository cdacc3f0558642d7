//! Error kinds, codes and retryability as the real server produces them.

use std::time::Duration;

use chat_client::{
    ChatClient, ClientError, ClientOptions, CreateRoomRequest, ErrorCode, ErrorKind, HistoryQuery,
    RoomId, UserId,
};

use crate::support::TestServer;

fn room(name: &str) -> CreateRoomRequest {
    CreateRoomRequest {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

#[track_caller]
fn assert_error(e: &ClientError, kind: ErrorKind, code: ErrorCode, status: u16) {
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(e.code(), Some(code), "{e}");
    assert_eq!(e.status(), Some(status), "{e}");
    assert!(!e.is_retryable(), "{e}");
}

#[tokio::test]
async fn server_errors_keep_kind_code_and_sentence() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (stranger, stranger_user) = server.user("stranger").await;

    let e = server
        .client()
        .login("alice", "not the password")
        .await
        .expect_err("wrong password");
    assert_error(
        &e,
        ErrorKind::Unauthorized,
        ErrorCode::InvalidCredentials,
        401,
    );
    assert_eq!(e.message(), "Invalid username or password");

    let e = server
        .client()
        .login("nobody", "whatever-password")
        .await
        .expect_err("unknown user");
    assert_error(
        &e,
        ErrorKind::Unauthorized,
        ErrorCode::InvalidCredentials,
        401,
    );

    let e = server
        .client()
        .register(chat_client::RegisterRequest {
            username: "x".into(),
            email: "not an email".into(),
            password: "short".into(),
            display_name: None,
        })
        .await
        .expect_err("invalid registration");
    assert_error(&e, ErrorKind::InvalidInput, ErrorCode::InvalidInput, 400);
    assert!(
        e.fields().is_some_and(|f| f.contains_key("username")),
        "{:?}",
        e.fields()
    );

    let den = alice.create_room(room("den")).await.expect("create den");
    let e = alice.create_room(room("den")).await.expect_err("duplicate");
    assert_error(&e, ErrorKind::Conflict, ErrorCode::RoomNameTaken, 409);
    assert_eq!(e.message(), "Room name already exists");

    let e = alice
        .create_room(CreateRoomRequest::default())
        .await
        .expect_err("no name");
    assert_error(
        &e,
        ErrorKind::InvalidInput,
        ErrorCode::RoomNameRequired,
        400,
    );

    let e = alice
        .join_room(RoomId(9_999))
        .await
        .expect_err("unknown room");
    assert_error(&e, ErrorKind::NotFound, ErrorCode::RoomNotFound, 404);
    let e = alice
        .history(RoomId(9_999), HistoryQuery::new())
        .await
        .expect_err("history of an unknown room");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // A stranger to a private room.
    // Not invited: the same answer as for a room that does not exist.
    let e = stranger.join_room(den.id).await.expect_err("not invited");
    assert_error(&e, ErrorKind::NotFound, ErrorCode::RoomNotFound, 404);
    let e = stranger.room(den.id).await.expect_err("not a member");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = stranger
        .send(den.id, "let me in", None)
        .await
        .expect_err("sending to a room one is not in");
    assert!(
        matches!(e.kind(), ErrorKind::Forbidden | ErrorKind::NotFound),
        "{e}"
    );
    let e = stranger
        .delete_room(den.id)
        .await
        .expect_err("only the creator deletes");
    assert!(
        matches!(e.kind(), ErrorKind::Forbidden | ErrorKind::NotFound),
        "{e}"
    );

    let e = alice
        .send(den.id, "  ", None)
        .await
        .expect_err("empty body");
    assert_error(&e, ErrorKind::InvalidInput, ErrorCode::EmptyBody, 400);
    assert_eq!(e.message(), "Message body cannot be empty");

    let e = alice
        .create_conversation(UserId(9_999))
        .await
        .expect_err("unknown user");
    assert_error(&e, ErrorKind::NotFound, ErrorCode::UserNotFound, 404);
    let e = stranger
        .create_conversation(stranger_user.id)
        .await
        .expect_err("a conversation with oneself");
    assert_error(&e, ErrorKind::InvalidInput, ErrorCode::InvalidInput, 400);
}

#[tokio::test]
async fn no_session_is_unauthorized_without_a_request() {
    let server = TestServer::start().await;
    let e = server.client().me().await.expect_err("not logged in");
    assert!(matches!(e, ClientError::NotLoggedIn), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn connection_refused_is_a_retryable_network_error() {
    // Bind a port, then free it: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local address").port()
    };
    let client = ChatClient::with_options(
        &format!("http://127.0.0.1:{port}"),
        ClientOptions::default().connect_timeout(Duration::from_secs(2)),
    )
    .expect("client");
    let e = client
        .login("alice", "password")
        .await
        .expect_err("nothing listens");
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(e.is_retryable());
    assert_eq!(e.code(), None);
    assert_eq!(e.status(), None);
}

#[tokio::test]
async fn bad_options_are_config_errors() {
    let e = ChatClient::new("ws://example.com").expect_err("not http");
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = ChatClient::new("not a url").expect_err("not a URL");
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = ChatClient::with_options(
        "https://example.com",
        ClientOptions::default().root_ca_pem(b"not a certificate".to_vec()),
    )
    .expect_err("bad PEM");
    assert_eq!(e.kind(), ErrorKind::Config);
}
