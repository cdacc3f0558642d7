//! A spam filter as chat's before-send hook, out of process: a small HTTP
//! service that chat-server asks about every message and edit.
//!
//! ```sh
//! cargo run --example spam_filter -- --listen 127.0.0.1:9000 --secret hook-secret
//! chat-server --hook-url http://127.0.0.1:9000/hook --hook-secret hook-secret --hook-failure open
//! ```
//!
//! It rejects messages with more than three links, links to blocked
//! domains, or long shouting, and the same body sent again and again by one
//! sender within a minute; it checks the request's signature
//! (`X-Chat-Signature`) and refuses stale or unsigned requests when given a
//! secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};

/// Domains whose links are never welcome.
const BLOCKED_DOMAINS: &[&str] = &["cheap-pills.example", "free-crypto.example"];
/// The most links one message may carry.
const MAX_LINKS: usize = 3;
/// Upper-case letters in a row that count as shouting.
const SHOUTING: usize = 20;
/// How many times one sender may send the same body in a minute.
const MAX_REPEATS: usize = 3;
/// How old a signed request may be.
const MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, Parser)]
#[command(about = "A spam filter for chat-server's --hook-url")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The --hook-secret chat-server signs with; unsigned requests are
    /// refused when set.
    #[arg(long, env = "CHAT_HOOK_SECRET")]
    secret: Option<String>,
}

/// Why a body is spam, if it is (repeats aside).
fn spam_reason(body: &str) -> Option<&'static str> {
    let links: Vec<&str> = body
        .split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .collect();
    if links.len() > MAX_LINKS {
        return Some("too many links");
    }
    if links
        .iter()
        .any(|l| BLOCKED_DOMAINS.iter().any(|d| l.contains(d)))
    {
        return Some("links to a blocked site");
    }
    let mut run = 0;
    for c in body.chars() {
        if c.is_uppercase() {
            run += 1;
            if run >= SHOUTING {
                return Some("please do not shout");
            }
        } else if c.is_alphabetic() {
            run = 0;
        }
    }
    None
}

/// Recent bodies per sender, for repeats.
#[derive(Default)]
struct Recent {
    sent: Mutex<HashMap<(i64, String), Vec<Instant>>>,
}

impl Recent {
    /// Records one more send; whether it is one too many.
    fn repeated(&self, sender: i64, body: &str) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let times = sent.entry((sender, body.to_owned())).or_default();
        times.retain(|t| t.elapsed() < Duration::from_secs(60));
        times.push(Instant::now());
        times.len() > MAX_REPEATS
    }
}

struct Filter {
    secret: Option<String>,
    recent: Recent,
}

/// Whether the request is signed with `secret` and fresh.
fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp = header("x-chat-timestamp");
    let Ok(sent) = timestamp.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(sent) > MAX_AGE.as_secs() {
        return false;
    }
    let Some(hex) = header("x-chat-signature").strip_prefix("v1=") else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = timestamp.as_bytes().to_vec();
    message.push(b'.');
    message.extend_from_slice(body);
    // Constant time.
    ring::hmac::verify(&key, &message, &tag).is_ok()
}

/// The hook protocol: `{"type": "before_send", "message": {...}}` in, a
/// decision out.
async fn hook(
    State(filter): State<Arc<Filter>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if let Some(secret) = &filter.secret
        && !signed(secret, &headers, &body)
    {
        return (StatusCode::UNAUTHORIZED, "bad signature".to_owned());
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".to_owned());
    };
    let message = &request["message"];
    let text = message["body"].as_str().unwrap_or_default();
    let sender = message["sender"].as_i64().unwrap_or_default();
    let decision = match spam_reason(text) {
        Some(reason) => json!({"action": "reject", "reason": reason}),
        None if filter.recent.repeated(sender, text) => {
            json!({"action": "reject", "reason": "you said that already"})
        }
        None => json!({"action": "allow"}),
    };
    (StatusCode::OK, decision.to_string())
}

/// The filter's service: `POST /hook`.
pub(crate) fn router(secret: Option<String>) -> Router {
    let filter = Arc::new(Filter {
        secret,
        recent: Recent::default(),
    });
    Router::new().route("/hook", post(hook)).with_state(filter)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let app = router(cli.secret);
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("spam filter on http://{}/hook", cli.listen);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spam_is_told_from_chat() {
        assert_eq!(spam_reason("see you at 5, ok?"), None);
        assert_eq!(spam_reason("docs at https://docs.rs/tokio"), None);
        assert_eq!(
            spam_reason("https://a.example https://b.example https://c.example https://d.example"),
            Some("too many links")
        );
        assert_eq!(
            spam_reason("deal: https://cheap-pills.example/now"),
            Some("links to a blocked site")
        );
        assert_eq!(
            spam_reason("WHY IS NOBODY ANSWERING ME"),
            Some("please do not shout")
        );
        assert_eq!(spam_reason("NASA and the ESA"), None, "acronyms are fine");
    }

    #[test]
    fn the_fourth_repeat_in_a_minute_is_refused() {
        let recent = Recent::default();
        let repeats: Vec<bool> = (0..5).map(|_| recent.repeated(7, "hello?")).collect();
        assert_eq!(repeats, [false, false, false, true, true]);
        assert!(!recent.repeated(8, "hello?"), "per sender");
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"type":"before_send"}"#;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let sign = |secret: &str, at: u64| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            let mut m = at.to_string().into_bytes();
            m.push(b'.');
            m.extend_from_slice(body);
            let tag = ring::hmac::sign(&key, &m);
            let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            let mut headers = HeaderMap::new();
            headers.insert("x-chat-timestamp", at.to_string().parse().expect("header"));
            headers.insert(
                "x-chat-signature",
                format!("v1={hex}").parse().expect("header"),
            );
            headers
        };
        assert!(signed("s", &sign("s", now), body));
        assert!(!signed("s", &sign("other", now), body), "another secret");
        assert!(!signed("s", &sign("s", now - 3_600), body), "an hour old");
        assert!(!signed("s", &HeaderMap::new(), body), "unsigned");
    }
}
