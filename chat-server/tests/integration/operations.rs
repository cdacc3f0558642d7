//! Operations endpoints: health and Prometheus metrics.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, TestServer};

/// The value of an unlabelled series in Prometheus text, or 0.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_deliveries_connections_and_latency() {
    let s = TestServer::start(Backend::Memory).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;

    let fetch = || async {
        let resp = reqwest::get(s.url("/metrics")).await.expect("metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/plain"),
            "Prometheus text format"
        );
        resp.text().await.expect("body")
    };
    // Series are process-wide and other tests run alongside: compare
    // before and after, and only ever expect growth.
    let before = fetch().await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    s.send(&ann, room, "counted").await;
    b.expect("message").await;
    let during = fetch().await;
    assert!(
        series(&during, "chat_messages_stored_total")
            >= series(&before, "chat_messages_stored_total") + 1.0
    );
    assert!(
        series(&during, "chat_deliveries_total") >= series(&before, "chat_deliveries_total") + 1.0
    );
    assert!(series(&during, "chat_connections") >= 1.0, "{during}");
    assert!(
        during.contains("# TYPE http_request_duration_seconds histogram"),
        "{during}"
    );
    assert!(
        during.contains(r#"route="/chat/send""#)
            && during.contains("http_request_duration_seconds_bucket"),
        "latency labelled by route, not by raw path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_storage_and_broker() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (status, health) = s.call("GET", "/healthz/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["storage"], "ok");
    assert_eq!(health["broker"], "ok");
    assert!(health["version"].is_string());
}
