//! chat-server inside a host's axum app: the router nested under a prefix
//! beside the host's own routes, served by the host, driven by the
//! project's client; storage and broker handed in; the host's shutdown
//! closing every socket with 1001 and draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_client::{ChatClient, ConnectionState, CreateRoomRequest, Event, RegisterRequest};
use chat_server::broker::local::LocalBroker;
use chat_server::broker::{Broker, BrokerError};
use chat_server::storage::Storage as _;
use chat_server::storage::memory::MemoryStorage;
use chat_server::{Builder, Config};
use reqwest::StatusCode;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

async fn user(base: &str, name: &str) -> ChatClient {
    let client = ChatClient::new(base).expect("client");
    client
        .register(RegisterRequest {
            username: name.to_owned(),
            email: format!("{name}@example.com"),
            password: format!("password-{name}"),
            display_name: None,
        })
        .await
        .expect("register");
    client
        .login(name, &format!("password-{name}"))
        .await
        .expect("login");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_app_mounts_chat_under_a_prefix() {
    let storage = Arc::new(MemoryStorage::new());
    let chat = Builder::new(Config {
        storage_url: "memory://".to_owned(),
        ..Config::default()
    })
    .storage(storage.clone())
    .broker(|sink| async move {
        Ok::<_, BrokerError>(Arc::new(LocalBroker::new(sink)) as Arc<dyn Broker>)
    })
    .build()
    .await
    .expect("chat builds");
    assert!(
        Arc::ptr_eq(
            chat.storage(),
            &(storage.clone() as Arc<dyn chat_server::storage::Storage>)
        ),
        "the storage handed in is the one in use"
    );

    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "the host's own route" }),
        )
        .nest("/chat", chat.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = chat.shutdown_token();
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
    });

    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
    let hello = get("/hello").await.expect("host route");
    assert_eq!(hello.text().await.expect("text"), "the host's own route");
    // Trailing slashes optional under the prefix too; chat's own errors.
    for path in ["/chat/healthz", "/chat/healthz/"] {
        assert_eq!(get(path).await.expect("health").status(), StatusCode::OK);
    }
    let missing = get("/chat/nothing/here/").await.expect("404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.expect("json error");
    assert_eq!(body["code"], "not_found");
    // The host's routes stay the host's: outside the prefix, axum's 404.
    assert_eq!(
        get("/api/users/me/").await.expect("outside").status(),
        StatusCode::NOT_FOUND
    );

    let base = format!("http://{addr}/chat");
    let ann = user(&base, "ann").await;
    let bob = user(&base, "bob").await;
    let room = ann
        .create_room(CreateRoomRequest {
            name: Some("mounted".to_owned()),
            kind: Some(chat_core::room::RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create room");
    bob.join_room(room.id).await.expect("join");
    let mut bobs = bob.connect().await.expect("bob connects");
    bobs.subscribe(room.id).await.expect("subscribe");
    let anns = ann.connect().await.expect("ann connects");
    let sent = anns.send(room.id, "through the host").await.expect("send");
    let heard = tokio::time::timeout(WAIT, async {
        loop {
            match bobs.next_event().await {
                Some(Event::Message(m)) => break m,
                Some(_) => continue,
                None => panic!("bob's events ended"),
            }
        }
    })
    .await
    .expect("bob hears it");
    assert_eq!(
        (heard.id, heard.body.as_str()),
        (sent.id, "through the host")
    );
    assert_eq!(
        storage
            .user_by_username("bob")
            .await
            .expect("read")
            .map(|u| u.username),
        Some("bob".to_owned())
    );

    // The host shuts down: chat closes its sockets (1001) and the host's
    // graceful shutdown completes instead of waiting on them.
    chat.shutdown();
    tokio::time::timeout(WAIT, served)
        .await
        .expect("the host's server drains")
        .expect("task")
        .expect("serve");
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match bobs.next_event().await {
                Some(Event::StateChanged(state)) if state != ConnectionState::Connected => break,
                None => break,
                Some(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "bob's socket was closed");
}
