//! HTTPS and WSS: the self-signed development certificate, certificate
//! files and their reload (in-process and by SIGHUP to the real binary),
//! HTTP/2 with WebSockets over extended CONNECT, and clients that must
//! refuse a certificate they cannot verify. Clients connect to `localhost`,
//! so name checks are real.

use std::io::BufRead as _;
use std::path::Path;

use chat_client::{ChatClient, ClientOptions, CreateRoomRequest, Event, RegisterRequest, RoomType};
use chat_server::TlsConfig;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{TestServer, WsClient, tls_client};

/// A CA of the test's own and the files of certificates it signs.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chat-rs test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes a fresh `localhost` certificate (chain: leaf, CA) and its key
    /// to `cert` and `key`; returns the leaf's fingerprint.
    fn issue(&self, cert: &Path, key: &Path) -> String {
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let leaf = params.signed_by(&leaf_key, &self.issuer).expect("leaf");
        std::fs::write(cert, format!("{}{}", leaf.pem(), self.pem())).expect("write cert");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write key");
        fingerprint(leaf.der())
    }
}

/// The certificate the server presented on this WebSocket's connection.
fn presented(ws: &WebSocketStream<MaybeTlsStream<TcpStream>>) -> String {
    let MaybeTlsStream::Rustls(tls) = ws.get_ref() else {
        panic!("not a TLS connection");
    };
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates");
    fingerprint(&certs[0])
}

/// Every message in an error's source chain, for asserting on the cause.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn options_trusting(ca: &str) -> ClientOptions {
    ClientOptions::default().root_ca_pem(ca.as_bytes().to_vec())
}

async fn register_and_login(client: &ChatClient, name: &str) {
    client
        .register(RegisterRequest {
            username: name.to_owned(),
            email: format!("{name}@example.com"),
            password: format!("password-{name}"),
            display_name: None,
        })
        .await
        .expect("register over HTTPS");
    client
        .login(name, &format!("password-{name}"))
        .await
        .expect("login over HTTPS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_client_works_over_https_and_wss() {
    let s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    let base = s.url("/");
    assert!(base.starts_with("https://localhost:"), "{base}");
    let ann = ChatClient::with_options(&base, options_trusting(s.ca_pem())).expect("client");
    let bob = ChatClient::with_options(&base, options_trusting(s.ca_pem())).expect("client");
    register_and_login(&ann, "ann").await;
    register_and_login(&bob, "bob").await;
    let lobby = ann
        .create_room(CreateRoomRequest {
            name: Some("lobby".into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create room");

    let mut conn = bob.connect().await.expect("WSS connection");
    assert_eq!(conn.subscribe("lobby").await.expect("subscribe"), lobby.id);
    ann.send(lobby.id, "over https", None).await.expect("send");
    let heard = loop {
        match conn.next_event().await.expect("an event") {
            Event::Message(m) => break m,
            _ => continue,
        }
    };
    assert_eq!(heard.body, "over https");
    let acked = conn.send("lobby", "over wss").await.expect("ack");
    assert_eq!(acked.seq, heard.seq + 1);
    let history = ann
        .history(lobby.id, chat_client::HistoryQuery::new())
        .await
        .expect("history");
    let bodies: Vec<_> = history
        .chat_history
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, ["over https", "over wss"]);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_client_accepting_invalid_certificates_connects() {
    let s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    let client = ChatClient::with_options(
        &s.url("/"),
        ClientOptions::default().danger_accept_invalid_certs(true),
    )
    .expect("client");
    register_and_login(&client, "ann").await;
    let conn = client
        .connect()
        .await
        .expect("WSS without checking the certificate");
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_ca_refuse_the_certificate() {
    let s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    // The project's client with only the system's roots.
    let client = ChatClient::new(&s.url("/")).expect("client");
    let err = client
        .register(RegisterRequest {
            username: "ann".into(),
            email: "ann@example.com".into(),
            password: "password-ann".into(),
            display_name: None,
        })
        .await
        .expect_err("an unknown CA is refused");
    assert_eq!(err.kind(), chat_client::ErrorKind::Network);
    assert!(
        chain(&err).to_lowercase().contains("certificate"),
        "{}",
        chain(&err)
    );

    // tungstenite with a root store that lacks the CA (another CA).
    let other = TestCa::new();
    let connector = tokio_tungstenite::Connector::Rustls(tls_client(&other.pem(), &[]));
    let err = tokio_tungstenite::connect_async_tls_with_config(
        s.ws_url("/ws/"),
        None,
        false,
        Some(connector),
    )
    .await
    .expect_err("an unknown CA is refused");
    assert!(
        matches!(
            &err,
            tokio_tungstenite::tungstenite::Error::Tls(_)
                | tokio_tungstenite::tungstenite::Error::Io(_)
        ) && chain(&err).contains("UnknownIssuer"),
        "{}",
        chain(&err)
    );

    // The right CA, the wrong name: the certificate is for localhost.
    let connector = tokio_rustls::TlsConnector::from(tls_client(s.ca_pem(), &[]));
    let tcp = TcpStream::connect(s.addr).await.expect("tcp");
    let err = connector
        .connect(ServerName::try_from("chat.example").expect("name"), tcp)
        .await
        .expect_err("a certificate for another name is refused");
    let cause = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            cause,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
                    | rustls::CertificateError::NotValidForName
            ))
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tungstenite_and_curl_verify_against_the_generated_ca() {
    let s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;

    // tokio-tungstenite, trusting only the generated CA.
    let mut ws = s.ws("/ws/chat/lobby/", &ann).await;
    ws.expect("subscribed").await;
    assert_eq!(
        presented(&ws.stream),
        s.server().tls_fingerprint().expect("fingerprint")
    );
    ws.send(json!({"type": "send", "body": "hello", "client_id": "c1"}))
        .await;
    assert_eq!(ws.expect("ack").await["message"]["body"], "hello");

    // curl, a client outside the project: verifies with the CA file and
    // negotiates HTTP/2.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, s.ca_pem()).expect("write CA");
    let url = s.url("/healthz");
    let out = curl(&[
        "--cacert",
        path(&ca),
        "--silent",
        "--show-error",
        "--write-out",
        "\n%{http_code} %{http_version}",
        &url,
    ]);
    assert!(out.status.success(), "curl: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, status) = stdout.rsplit_once('\n').expect("body and status");
    assert_eq!(status, "200 2", "{stdout}");
    let health: Value = serde_json::from_str(body).expect("JSON health");
    assert!(health.is_object(), "{health}");

    // Without the CA, curl refuses the certificate (exit 60).
    let out = curl(&["--silent", "--show-error", &url]);
    assert_eq!(out.status.code(), Some(60), "curl: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_serves_calls_and_websockets_over_connect() {
    use axum::body::Body;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;

    let connector = tokio_rustls::TlsConnector::from(tls_client(s.ca_pem(), &[b"h2"]));
    let tcp = TcpStream::connect(s.addr).await.expect("tcp");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);

    // An ordinary call.
    let req = hyper::Request::get(s.url("/chat/rooms/"))
        .header("authorization", format!("Bearer {}", ann.access))
        .body(Body::empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .expect("body");
    let rooms: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(rooms[0]["name"], "lobby");

    // A WebSocket on the same connection (RFC 8441).
    let req = hyper::Request::connect(s.url(&format!("/ws/chat/lobby/?token={}", ann.access)))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .body(Body::empty())
        .expect("request");
    let mut resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("upgraded");
    let mut ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let frame = next_text(&mut ws).await;
    assert_eq!(frame["type"], "subscribed", "{frame}");
    ws.send(WsMessage::text(
        json!({"type": "send", "body": "over h2", "client_id": "h2"}).to_string(),
    ))
    .await
    .expect("send");
    loop {
        let frame = next_text(&mut ws).await;
        if frame["type"] == "ack" {
            assert_eq!(frame["message"]["body"], "over h2");
            break;
        }
        assert_eq!(frame["type"], "presence", "{frame}");
    }
}

async fn next_text<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within the timeout")
            .expect("socket open")
            .expect("frame");
        if let WsMessage::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_gives_new_connections_the_new_certificate_and_keeps_old_ones() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = ca.issue(&cert, &key);
    let s = TestServer::start_tls(
        TlsConfig::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        Some(ca.pem()),
        |_| {},
    )
    .await;
    assert_eq!(s.server().tls_fingerprint(), Some(first.clone()));
    assert_eq!(s.server().tls_ca_pem(), None);
    let ann = s.user("ann").await;
    s.room(&ann, "lobby", "public", &[]).await;
    let mut old = s.ws("/ws/chat/lobby/", &ann).await;
    old.expect("subscribed").await;
    assert_eq!(presented(&old.stream), first);

    let second = ca.issue(&cert, &key);
    assert_eq!(s.server().reload_tls().expect("reloads"), second);
    let mut new = s.ws("/ws/chat/lobby/", &ann).await;
    new.expect("subscribed").await;
    assert_eq!(presented(&new.stream), second);
    exchange(&mut old, &mut new).await;

    // A broken pair (the key of another certificate) is refused and the
    // certificate stays.
    let elsewhere = dir.path().join("other.pem");
    ca.issue(&elsewhere, &key);
    let err = s.server().reload_tls().expect_err("mismatched key");
    assert!(matches!(err, chat_server::TlsError::Key { .. }), "{err}");
    assert_eq!(s.server().tls_fingerprint(), Some(second.clone()));
    let third = s.ws("/ws/", &ann).await;
    assert_eq!(presented(&third.stream), second);
}

/// `from` sends; `to`, subscribed to the same room, hears it; and the other
/// way round.
async fn exchange(from: &mut WsClient, to: &mut WsClient) {
    from.send(json!({"message": "from the old connection"}))
        .await;
    from.expect("ack").await;
    loop {
        let f = to.frame().await;
        if f["type"] == "message" {
            assert_eq!(f["message"]["body"], "from the old connection");
            break;
        }
    }
    to.send(json!({"message": "to the old connection"})).await;
    loop {
        let f = from.frame().await;
        if f["type"] == "message" {
            assert_eq!(f["message"]["body"], "to the old connection");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_over_tls_closes_sockets_with_1001() {
    let mut s = TestServer::start_tls(TlsConfig::SelfSigned, None, |_| {}).await;
    let ann = s.user("ann").await;
    let mut ws = s.ws("/ws/", &ann).await;
    ws.expect_quiet().await;
    s.stop().await;
    assert_eq!(ws.close_code().await, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_its_certificate_on_sighup() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = ca.issue(&cert, &key);
    let mut server = Binary::start(&[
        "--listen",
        "127.0.0.1:0",
        "--storage",
        "memory://",
        "--jwt-secret",
        "sighup-test-secret-0123456789",
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
    ]);
    let line = server.wait_for("chat-server listening");
    let addr = line["fields"]["addr"].as_str().expect("addr in the log");
    let port = addr.rsplit_once(':').expect("host:port").1;
    let base = format!("https://localhost:{port}");
    let line = server.wait_for("TLS certificate loaded");
    assert_eq!(line["fields"]["sha256"], first.as_str());

    let client =
        ChatClient::with_options(&format!("{base}/"), options_trusting(&ca.pem())).expect("client");
    register_and_login(&client, "ann").await;
    client
        .create_room(CreateRoomRequest {
            name: Some("lobby".into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("room");
    let token = client.tokens().expect("logged in").access;
    let ca_pem = ca.pem();
    let open = |path: String| {
        let url = format!("wss://localhost:{port}{path}");
        let connector = tokio_tungstenite::Connector::Rustls(tls_client(&ca_pem, &[]));
        async move {
            let (stream, _) =
                tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                    .await
                    .expect("WSS");
            WsClient::new(stream)
        }
    };
    let mut old = open(format!("/ws/chat/lobby/?token={token}")).await;
    old.expect("subscribed").await;
    assert_eq!(presented(&old.stream), first);

    let second = ca.issue(&cert, &key);
    server.signal("HUP");
    let line = server.wait_for("SIGHUP: TLS certificate reloaded");
    assert_eq!(line["fields"]["sha256"], second.as_str());
    let mut new = open(format!("/ws/chat/lobby/?token={token}")).await;
    new.expect("subscribed").await;
    assert_eq!(presented(&new.stream), second);
    exchange(&mut old, &mut new).await;

    // A bad file: logged, the certificate stays, the server keeps serving.
    std::fs::write(&cert, "garbage\n").expect("write");
    server.signal("HUP");
    server.wait_for("SIGHUP: TLS certificate not reloaded");
    let third = open(format!("/ws/?token={token}")).await;
    assert_eq!(presented(&third.stream), second);

    server.signal("TERM");
    assert_eq!(old.close_code().await, Some(1001));
    assert!(server.wait().success());
}

/// The real `chat-server` binary, logging JSON lines that the test reads.
struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Binary {
    fn start(args: &[&str]) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(args)
            .env("CHAT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("CHAT_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the chat-server binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next log line whose message starts with `message`.
    fn wait_for(&mut self, message: &str) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no log line {message:?} from the binary: {e}"));
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return value;
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the binary")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(args)
        .output()
        .expect("this test needs curl")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// SHA-256 of a certificate, as the server logs and reports it: uppercase
/// hex pairs joined by colons.
fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}
