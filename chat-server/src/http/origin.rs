//! The origin allow-list (`--allowed-origins`): one rule for WebSocket
//! handshakes and CORS.
//!
//! Browsers send `Origin` as `scheme://host[:port]`, lowercase, without a
//! path; the configured entries are brought to that form, so
//! `https://Chat.Example/` in the configuration matches what a browser sends.
//! A request without `Origin` does not come from a page of another site (a
//! native app, curl, the SDK) and is not refused by this rule.

use axum::http::HeaderValue;

/// The configured list in the form browsers send; `None` (any origin) when
/// there is no list or it holds `*`.
pub(crate) fn normalize(list: Option<&[String]>) -> Option<Vec<String>> {
    let list = list?;
    let mut origins = Vec::with_capacity(list.len());
    for entry in list {
        let entry = entry.trim().trim_end_matches('/');
        if entry == "*" {
            return None;
        }
        if !entry.is_empty() {
            origins.push(entry.to_ascii_lowercase());
        }
    }
    Some(origins)
}

/// Whether a request with this `Origin` header may proceed. `allowed` is a
/// [`normalize`]d list.
pub(crate) fn allowed(allowed: Option<&[String]>, origin: &HeaderValue) -> bool {
    let Some(list) = allowed else {
        return true;
    };
    origin
        .to_str()
        .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn configured_entries_take_the_browsers_form() {
        let n = normalize(Some(&list(&[
            " https://Chat.Example/ ",
            "http://localhost:3000",
            "",
        ])));
        assert_eq!(
            n,
            Some(list(&["https://chat.example", "http://localhost:3000"]))
        );
        assert_eq!(normalize(Some(&list(&["https://a.example", "*"]))), None);
        assert_eq!(normalize(None), None);
    }

    #[test]
    fn only_listed_origins_pass() {
        let n = normalize(Some(&list(&["https://chat.example"])));
        let ok = |o: &str| allowed(n.as_deref(), &HeaderValue::from_str(o).expect("header"));
        assert!(ok("https://chat.example"));
        assert!(ok("HTTPS://CHAT.EXAMPLE"));
        assert!(!ok("https://chat.example.evil"));
        assert!(!ok("http://chat.example"));
        assert!(!ok("https://chat.example:8443"));
        assert!(!ok("null"));
        assert!(allowed(
            None,
            &HeaderValue::from_static("https://anything.example")
        ));
        // Not visible ASCII: never equal to a configured origin.
        assert!(!allowed(
            n.as_deref(),
            &HeaderValue::from_bytes(b"https://chat.example\xff").expect("header")
        ));
    }
}
