//! The hook examples against a real server: `spam_filter` as its
//! `--hook-url` (signed requests), `profanity_rewrite`'s hook in process.

#[allow(dead_code)]
#[path = "../spam_filter.rs"]
mod spam_filter;

#[allow(dead_code)]
#[path = "../profanity_rewrite.rs"]
mod profanity_rewrite;

use std::sync::Arc;

use chat_client::{ChatClient, CreateRoomRequest, RegisterRequest};
use chat_server::{Builder, Config, Server};

async fn start(build: impl FnOnce(Builder) -> Builder) -> Server {
    build(Builder::new(Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        storage_url: "memory://".into(),
        ..Config::default()
    }))
    .start()
    .await
    .expect("server starts")
}

async fn user_in_room(server: &Server) -> (ChatClient, chat_client::chat_core::RoomId) {
    let client = ChatClient::new(&format!("http://{}", server.local_addr())).expect("client");
    client
        .register(RegisterRequest {
            username: "ann".into(),
            email: "ann@example.com".into(),
            password: "password-ann".into(),
            display_name: None,
        })
        .await
        .expect("register");
    client.login("ann", "password-ann").await.expect("login");
    let room = client
        .create_room(CreateRoomRequest {
            name: Some("filtered".into()),
            ..Default::default()
        })
        .await
        .expect("room");
    (client, room.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spam_filter_as_the_servers_hook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let filter = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, spam_filter::router(Some("s3cret".into()))).await;
    });
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        storage_url: "memory://".into(),
        ..Config::default()
    };
    config.hook_url = Some(format!("http://{filter}/hook"));
    config.hook_secret = Some("s3cret".into());
    config.hook_failure = chat_server::hooks::FailurePolicy::Closed;
    let server = Builder::new(config).start().await.expect("server starts");
    let (ann, room) = user_in_room(&server).await;
    let ok = ann.send(room, "docs at https://docs.rs/tokio", None).await;
    assert!(ok.is_ok(), "{ok:?}");
    let refused = ann
        .send(room, "cheap: https://cheap-pills.example/now", None)
        .await
        .expect_err("spam is refused");
    assert_eq!(
        refused.code(),
        Some(chat_client::chat_core::ErrorCode::MessageRejected),
        "{refused}"
    );
    assert!(refused.to_string().contains("blocked site"), "{refused}");

    // Signed with another secret, every request is refused by the filter:
    // failing closed, nothing is stored.
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        storage_url: "memory://".into(),
        ..Config::default()
    };
    config.hook_url = Some(format!("http://{filter}/hook"));
    config.hook_secret = Some("wrong".into());
    config.hook_failure = chat_server::hooks::FailurePolicy::Closed;
    let server = Builder::new(config).start().await.expect("server starts");
    let (ann, room) = user_in_room(&server).await;
    let refused = ann.send(room, "hello", None).await.expect_err("unchecked");
    assert_eq!(
        refused.code(),
        Some(chat_client::chat_core::ErrorCode::HookUnavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profanity_hook_in_process() {
    let server = start(|b| b.hooks(Arc::new(profanity_rewrite::Profanity))).await;
    let (ann, room) = user_in_room(&server).await;
    ann.send(room, "well, darn", None).await.expect("stored");
    let history = ann
        .history(room, chat_client::HistoryQuery::new())
        .await
        .expect("history");
    assert_eq!(history.chat_history[0].body, "well, d***");
}
