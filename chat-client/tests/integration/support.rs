//! A real server on a free port, and logged-in clients for it.

use std::time::Duration;

use chat_client::{ChatClient, ClientOptions, RegisterRequest, User};
use chat_server::{Config, Server};

/// A running server; shut down when the test ends (the runtime drops its
/// task).
pub(crate) struct TestServer {
    server: Server,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server after `tune` adjusts its configuration.
    pub(crate) async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            storage_url: "memory://".to_owned(),
            jwt_secret: Some("client-tests-secret".to_owned()),
            ..Config::default()
        };
        tune(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Self { server }
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// Stops the server: its sockets are closed with 1001.
    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await.expect("server shuts down");
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// A client with default options.
    pub(crate) fn client(&self) -> ChatClient {
        ChatClient::new(&self.base_url()).expect("client for a valid URL")
    }

    pub(crate) fn client_with(&self, options: ClientOptions) -> ChatClient {
        ChatClient::with_options(&self.base_url(), options).expect("client for a valid URL")
    }

    /// Registers `name` (password `password-<name>`) and logs a new client in.
    pub(crate) async fn user(&self, name: &str) -> (ChatClient, User) {
        self.user_with(name, ClientOptions::default()).await
    }

    pub(crate) async fn user_with(&self, name: &str, options: ClientOptions) -> (ChatClient, User) {
        let client = self.client_with(options);
        let user = client
            .register(RegisterRequest {
                username: name.to_owned(),
                email: format!("{name}@example.com"),
                password: password(name),
                display_name: Some(format!("{name} display")),
            })
            .await
            .expect("registration of a fresh user");
        client
            .login(name, &password(name))
            .await
            .expect("login with the registered password");
        (client, user)
    }
}

pub(crate) fn password(name: &str) -> String {
    format!("password-{name}")
}

/// A short pause used only to let a token expire (a wait, not a timed
/// assertion).
pub(crate) async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}
