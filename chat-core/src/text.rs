//! Rules every text of the protocol follows, whatever field holds it.

/// What a client is told when a text holds U+0000.
pub const NUL_REFUSED: &str = "Text may not contain the NUL character (\\u0000)";

/// Whether a JSON document holds the escape `\u0000` inside a string (a raw
/// NUL byte is not valid JSON at all). PostgreSQL cannot store NUL in text
/// and no chat text needs it, so the server refuses it in every field,
/// on every backend alike, before parsing.
///
/// An escape is real when an odd number of backslashes precedes `u0000`
/// (`\\u0000` is a backslash followed by the text `u0000`).
pub fn json_has_nul(json: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"u0000";
    let mut from = 0;
    while let Some(at) = json
        .get(from..)
        .and_then(|rest| rest.windows(ESCAPE.len()).position(|w| w == ESCAPE))
    {
        let at = from + at;
        let backslashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Whether a percent-encoded URI (path and query) decodes to a NUL.
pub fn uri_has_nul(uri: &str) -> bool {
    uri.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_real_nul_escapes() {
        assert!(json_has_nul(br#"{"message":"a\u0000b"}"#));
        assert!(json_has_nul(br#"{"a":"\\\u0000"}"#));
        assert!(!json_has_nul(br#"{"message":"a\\u0000b"}"#));
        assert!(!json_has_nul(br#"{"message":"u0000"}"#));
        assert!(!json_has_nul(b""));
    }

    #[test]
    fn finds_percent_encoded_nul() {
        assert!(uri_has_nul("/chat/history?room=a%00b"));
        assert!(!uri_has_nul("/chat/history?room=a%20b"));
        assert!(!uri_has_nul("/chat/history?room=%2500"));
    }
}
