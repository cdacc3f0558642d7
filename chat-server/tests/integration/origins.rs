//! `--allowed-origins`: WebSocket handshakes from pages of other sites are
//! refused with 403, CORS answers only listed origins, clients that send no
//! `Origin` (apps, curl, the SDK) are unaffected, and without a list any
//! origin is allowed.

use reqwest::StatusCode;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{Backend, TestServer, TestUser, WsClient};

async fn with_list() -> TestServer {
    TestServer::start_with(Backend::Memory, |c| {
        // Written the way people write them; browsers send no trailing slash.
        c.allowed_origins = Some(vec![
            "https://chat.example".to_owned(),
            "http://localhost:3000/".to_owned(),
        ]);
    })
    .await
}

/// Opens `/ws/` as `user` with `Origin: origin` (none if `None`).
async fn ws_from(
    s: &TestServer,
    token: &str,
    origin: Option<&str>,
) -> Result<WsClient, (u16, Value)> {
    let mut request = s
        .ws_url(&format!("/ws/?token={token}"))
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).expect("origin"));
    }
    s.ws_request(request).await
}

fn refused_origin(result: Result<WsClient, (u16, Value)>) {
    match result {
        Err((403, body)) => {
            assert_eq!(body["code"], "not_authorized", "{body}");
            assert_eq!(body["error"], "Origin not allowed", "{body}");
        }
        Err(other) => panic!("expected 403, got {other:?}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
}

async fn opens(result: Result<WsClient, (u16, Value)>) {
    match result {
        Ok(mut ws) => ws.expect_quiet().await,
        Err(e) => panic!("handshake refused: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_follow_the_allow_list() {
    let s = with_list().await;
    let ann: TestUser = s.user("ann").await;
    opens(ws_from(&s, &ann.access, Some("https://chat.example")).await).await;
    opens(ws_from(&s, &ann.access, Some("http://localhost:3000")).await).await;
    // Without Origin: not a browser page, so not this rule's business.
    opens(ws_from(&s, &ann.access, None).await).await;

    refused_origin(ws_from(&s, &ann.access, Some("https://evil.example")).await);
    refused_origin(ws_from(&s, &ann.access, Some("http://chat.example")).await);
    refused_origin(ws_from(&s, &ann.access, Some("https://chat.example.evil")).await);
    refused_origin(ws_from(&s, &ann.access, Some("null")).await);
    // The origin is checked first: a foreign page learns nothing about the
    // token it holds.
    refused_origin(ws_from(&s, "not-a-token", Some("https://evil.example")).await);
    // The bound endpoints too.
    s.room(&ann, "lobby", "public", &[]).await;
    let mut request = s
        .ws_url(&format!("/ws/chat/lobby/?token={}", ann.access))
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static("https://evil.example"));
    refused_origin(s.ws_request(request).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_list_any_origin_opens_a_websocket() {
    let s = TestServer::start(Backend::Memory).await;
    let ann = s.user("ann").await;
    opens(ws_from(&s, &ann.access, Some("https://anywhere.example")).await).await;
    opens(ws_from(&s, &ann.access, None).await).await;
}

/// A CORS preflight for `POST /api/users/token/` from `origin`.
async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url("/api/users/token/"))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "content-type,authorization")
        .send()
        .await
        .expect("preflight answered")
}

async fn get_from(s: &TestServer, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url("/healthz"))
        .header(ORIGIN, origin)
        .send()
        .await
        .expect("answered")
}

fn allow_origin(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().expect("ASCII header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_listed_origins_only() {
    let s = with_list().await;
    let ok = preflight(&s, "https://chat.example").await;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(allow_origin(&ok), Some("https://chat.example"));
    let methods = ok
        .headers()
        .get(ACCESS_CONTROL_ALLOW_METHODS)
        .and_then(|v| v.to_str().ok())
        .expect("allowed methods");
    assert!(methods.contains("POST"), "{methods}");
    let ok = preflight(&s, "http://localhost:3000").await;
    assert_eq!(allow_origin(&ok), Some("http://localhost:3000"));

    let foreign = preflight(&s, "https://evil.example").await;
    assert_eq!(allow_origin(&foreign), None);
    let foreign = preflight(&s, "https://chat.example.evil").await;
    assert_eq!(allow_origin(&foreign), None);

    // Plain calls: the header only for listed origins (the answer itself
    // is the same; the browser withholds it from foreign pages).
    let ok = get_from(&s, "https://chat.example").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(allow_origin(&ok), Some("https://chat.example"));
    let foreign = get_from(&s, "https://evil.example").await;
    assert_eq!(allow_origin(&foreign), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_any_origin_by_default() {
    let s = TestServer::start(Backend::Memory).await;
    let resp = preflight(&s, "https://anywhere.example").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(allow_origin(&resp), Some("*"));
    assert_eq!(
        allow_origin(&get_from(&s, "https://anywhere.example").await),
        Some("*")
    );
}
