//! Starting a real server from the library on a free port, and real HTTP and
//! WebSocket clients to drive it.

use std::time::Duration;

use std::sync::Arc;

use chat_server::{Builder, Config, Server, TlsConfig};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Which storage a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Memory,
    Sqlite,
    /// The machine's PostgreSQL, in a schema of the test's own.
    Postgres,
}

/// The PostgreSQL the tests use (`CHAT_TEST_POSTGRES_URL`, default the
/// machine's `test` database).
pub(crate) fn postgres_base_url() -> String {
    std::env::var("CHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema created for one test and dropped when the test ends.
pub(crate) struct PgSchema {
    pub(crate) name: String,
}

impl PgSchema {
    /// Creates a fresh schema; panics with how to start PostgreSQL if it
    /// does not answer.
    pub(crate) async fn create() -> Self {
        use sqlx::Connection as _;
        let base = postgres_base_url();
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {base} does not answer ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 or point CHAT_TEST_POSTGRES_URL at one."
                )
            });
        let name = format!("chat_e2e_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create schema");
        Self { name }
    }

    /// A storage URL whose connections live in this schema.
    pub(crate) fn url(&self) -> String {
        self.url_via(&postgres_base_url())
    }

    /// The same, through another base URL (e.g. a proxy's).
    pub(crate) fn url_via(&self, base: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options[search_path]={}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on its own
        // futures: do the cleanup on a thread with a runtime of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_base_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Runs each named `async fn(Backend)` once per storage backend.
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::support::Backend::Memory).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}
pub(crate) use each_backend;

/// A running server and a client for it.
pub(crate) struct TestServer {
    server: Option<Server>,
    pub(crate) addr: std::net::SocketAddr,
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS (a name,
    /// so that clients check the certificate against it).
    base: String,
    /// The CA the test clients trust, with TLS.
    ca_pem: Option<String>,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
    // Declared after `server` so the schema outlives the server's pool.
    _schema: Option<PgSchema>,
}

impl TestServer {
    /// A server on `backend` with the default configuration.
    pub(crate) async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server on `backend` after `tune` adjusts the configuration.
    pub(crate) async fn start_with(backend: Backend, tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_built(backend, tune, |b| b).await
    }

    /// [`Self::start_with`], with `build` handing parts to the builder.
    pub(crate) async fn start_built(
        backend: Backend,
        tune: impl FnOnce(&mut Config),
        build: impl FnOnce(Builder) -> Builder,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // `RUST_LOG=chat_server=debug cargo test …` shows the server's side.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let (storage_url, schema) = match backend {
            Backend::Memory => ("memory://".to_owned(), None),
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("chat.db").display()),
                None,
            ),
            Backend::Postgres => {
                let schema = PgSchema::create().await;
                (schema.url(), Some(schema))
            }
        };
        Self::start_built_on(storage_url, schema, dir, tune, build).await
    }

    /// A server on memory storage serving HTTPS and WSS with `tls`; the test
    /// clients trust `ca_pem`, or the generated CA when self-signed.
    pub(crate) async fn start_tls(
        tls: TlsConfig,
        ca_pem: Option<String>,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_on("memory://".to_owned(), None, dir, |c| {
            c.tls = Some(tls);
            tune(c);
        })
        .await;
        let ca = ca_pem
            .or_else(|| server.server().tls_ca_pem().map(str::to_owned))
            .expect("a CA to trust");
        server.http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA PEM")])
            .build()
            .expect("HTTPS client");
        server.ca_pem = Some(ca);
        server
    }

    /// The test's own directory (the SQLite file and, beside it, the
    /// attachments).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The test's directory, kept for a server started after this one
    /// stopped (a restart on the same files).
    pub(crate) fn into_dir(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"))
    }

    /// The running server.
    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// The CA the test clients trust (TLS servers only).
    pub(crate) fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().expect("a TLS server")
    }

    /// A server on an explicit storage URL (the schema, if any, is dropped
    /// with the server).
    pub(crate) async fn start_on(
        storage_url: String,
        schema: Option<PgSchema>,
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_built_on(storage_url, schema, dir, tune, |b| b).await
    }

    /// [`Self::start_on`], with `build` handing parts to the builder.
    pub(crate) async fn start_built_on(
        storage_url: String,
        schema: Option<PgSchema>,
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
        build: impl FnOnce(Builder) -> Builder,
    ) -> Self {
        // PostgreSQL's default would be a directory beside the tests'
        // working directory: the test's own directory instead.
        let attachments_url = storage_url
            .starts_with("postgres")
            .then(|| format!("file://{}", dir.path().join("attachments").display()));
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            storage_url,
            attachments_url,
            ..Config::default()
        };
        tune(&mut config);
        let server = build(Server::builder(config))
            .start()
            .await
            .expect("server starts");
        let addr = server.local_addr();
        let base = match server.tls() {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        Self {
            server: Some(server),
            addr,
            base,
            ca_pem: None,
            http: reqwest::Client::new(),
            _dir: dir,
            _schema: schema,
        }
    }

    /// Shuts the server down gracefully.
    pub(crate) async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws{}{path}", self.base.trim_start_matches("http"))
    }

    /// Any HTTP call; returns the status and the JSON body (`Null` if none).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"))
        };
        (status, value)
    }

    /// Uploads `bytes` as the file `name` (`POST /chat/attachments/`).
    pub(crate) async fn upload(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(&format!(
                "/chat/attachments/?name={}",
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
            )))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await
            .expect("upload sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("non-JSON upload answer {text:?}: {e}"));
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Registers `name` (password `password-<name>`) and logs in.
    pub(crate) async fn user(&self, name: &str) -> TestUser {
        let (status, user) = self
            .call(
                "POST",
                "/api/users/register/",
                None,
                Some(json!({"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {name}: {user}");
        let (status, tokens) = self
            .call(
                "POST",
                "/api/users/token/",
                None,
                Some(json!({"username": name, "password": format!("password-{name}")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {name}: {tokens}");
        TestUser {
            id: user["id"].as_i64().expect("id"),
            access: tokens["access"].as_str().expect("access").to_owned(),
            refresh: tokens["refresh"].as_str().expect("refresh").to_owned(),
        }
    }

    /// Creates a room as `owner`; returns its id.
    pub(crate) async fn room(
        &self,
        owner: &TestUser,
        name: &str,
        kind: &str,
        invited: &[&TestUser],
    ) -> i64 {
        let ids: Vec<i64> = invited.iter().map(|u| u.id).collect();
        let (status, room) = self
            .post(
                "/chat/create-room/",
                &owner.access,
                json!({"name": name, "type": kind, "invited_users": ids}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create room: {room}");
        room["id"].as_i64().expect("room id")
    }

    /// Sends over HTTP; returns the seq.
    pub(crate) async fn send(&self, user: &TestUser, room: i64, body: &str) -> i64 {
        let (status, sent) = self
            .post(
                "/chat/send/",
                &user.access,
                json!({"room": room, "message": body}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "send: {sent}");
        sent["seq"].as_i64().expect("seq")
    }

    /// Opens a WebSocket at `path` with `?token=`.
    pub(crate) async fn ws(&self, path: &str, user: &TestUser) -> WsClient {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.ws_raw(&format!("{path}{sep}token={}", user.access))
            .await
            .expect("websocket opens")
    }

    /// Opens a WebSocket, returning the HTTP status of a refused handshake.
    pub(crate) async fn ws_raw(&self, path_and_query: &str) -> Result<WsClient, (u16, Value)> {
        self.ws_request(self.ws_url(path_and_query)).await
    }

    /// Opens a WebSocket with a request of the test's making (extra
    /// headers), trusting the test CA on a TLS server.
    pub(crate) async fn ws_request(
        &self,
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<WsClient, (u16, Value)> {
        let connector = self
            .ca_pem
            .as_deref()
            .map(|ca| tokio_tungstenite::Connector::Rustls(tls_client(ca, &[])));
        match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
            .await
        {
            Ok((stream, _)) => Ok(WsClient::new(stream)),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.shutdown_token().cancel();
        }
    }
}

/// A rustls client trusting only `ca_pem` (not the system's roots),
/// offering `alpn`.
pub(crate) fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub(crate) struct TestUser {
    pub(crate) id: i64,
    pub(crate) access: String,
    pub(crate) refresh: String,
}

/// How long a test waits for a frame that should come.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket client speaking JSON frames.
///
/// `member` frames (someone joined or left: timeline events that take
/// seqs) are set aside in `members` rather than handed to the test, unless
/// [`Self::with_members`] asks for them: most tests are about other
/// frames, and those about membership read them explicitly.
pub(crate) struct WsClient {
    pub(crate) stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read ahead (past a barrier) and not yet consumed.
    pending: std::collections::VecDeque<Value>,
    /// The `member` frames set aside, in arrival order.
    pub(crate) members: Vec<Value>,
    /// Hand `member` frames to the test like any other.
    pass_members: bool,
}

/// What the next thing on a socket was.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Value),
    Closed(Option<CloseFrame>),
}

impl WsClient {
    pub(crate) fn new(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            stream,
            pending: Default::default(),
            members: Vec::new(),
            pass_members: false,
        }
    }

    /// This socket hands `member` frames to the test like any other.
    pub(crate) fn with_members(mut self) -> Self {
        self.pass_members = true;
        self
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.stream
            .send(WsMessage::text(text))
            .await
            .expect("frame sent");
    }

    /// Sends several frames in one write, so that the server reads them
    /// together.
    pub(crate) async fn send_burst(&mut self, frames: &[String]) {
        for text in frames {
            self.stream
                .feed(WsMessage::text(text.as_str()))
                .await
                .expect("frame queued");
        }
        self.stream.flush().await.expect("burst sent");
    }

    /// The next frame or close, skipping control frames.
    pub(crate) async fn next(&mut self) -> Incoming {
        if let Some(f) = self.pending.pop_front() {
            return Incoming::Frame(f);
        }
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.stream.next())
                .await
                .expect("a frame within the timeout");
            match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    let frame: Value = serde_json::from_str(&t).expect("server frames are JSON");
                    if frame["type"] == "member" && !self.pass_members {
                        self.members.push(frame);
                        continue;
                    }
                    return Incoming::Frame(frame);
                }
                Some(Ok(WsMessage::Close(frame))) => return Incoming::Closed(frame),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return Incoming::Closed(None),
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub(crate) async fn frame(&mut self) -> Value {
        match self.next().await {
            Incoming::Frame(v) => v,
            Incoming::Closed(c) => panic!("socket closed ({c:?}) while a frame was expected"),
        }
    }

    /// The next frame, which must have `"type": ty`.
    pub(crate) async fn expect(&mut self, ty: &str) -> Value {
        let f = self.frame().await;
        assert_eq!(f["type"], ty, "expected a {ty} frame, got {f}");
        f
    }

    /// The close code the server ends with (skipping frames before it).
    pub(crate) async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Incoming::Frame(_) => {}
                Incoming::Closed(c) => return c.map(|c| u16::from(c.code)),
            }
        }
    }

    /// Asserts nothing arrives for a while (a ping round trip proves the
    /// server processed everything sent before it).
    pub(crate) async fn expect_quiet(&mut self) {
        self.send(json!({"type": "ping"})).await;
        let f = self.frame().await;
        assert_eq!(
            f["type"], "pong",
            "expected nothing before the pong, got {f}"
        );
    }

    /// Subscribes and returns the `subscribed` frame, collecting replayed
    /// messages into `replayed`. The presence snapshot that follows is
    /// consumed (see [`Self::subscribe_seeing`]).
    pub(crate) async fn subscribe(
        &mut self,
        room: Value,
        after_seq: Option<i64>,
    ) -> (Vec<Value>, Value) {
        let (replayed, sub, _online) = self.subscribe_seeing(room, after_seq).await;
        (replayed, sub)
    }

    /// Like [`Self::subscribe`], also returning the `presence` frames of the
    /// users already online, read up to a ping barrier.
    pub(crate) async fn subscribe_seeing(
        &mut self,
        room: Value,
        after_seq: Option<i64>,
    ) -> (Vec<Value>, Value, Vec<Value>) {
        let mut frame = json!({"type": "subscribe", "room": room});
        if let Some(a) = after_seq {
            frame["after_seq"] = json!(a);
        }
        self.send(frame).await;
        let mut replayed = Vec::new();
        let sub = loop {
            let f = self.frame().await;
            match f["type"].as_str() {
                Some("message") => replayed.push(f["message"].clone()),
                // Changes to messages come whole (they carry `type`).
                Some("message_edited" | "message_deleted") => replayed.push(f),
                Some("subscribed") => break f,
                _ => panic!("unexpected frame while subscribing: {f}"),
            }
        };
        (replayed, sub, self.presence_snapshot().await)
    }

    /// The `presence` frames already sent, read up to a ping barrier; live
    /// frames met on the way stay queued for [`Self::next`].
    pub(crate) async fn presence_snapshot(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping"})).await;
        let mut online = Vec::new();
        let mut live = Vec::new();
        loop {
            let f = self.frame().await;
            match f["type"].as_str() {
                Some("presence") if live.is_empty() => online.push(f),
                Some("pong") => break,
                _ => live.push(f),
            }
        }
        self.pending.extend(live);
        online
    }

    pub(crate) async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
