//! The session: [`Tokens`] and the shared state that keeps them fresh.
//!
//! One [`AuthState`] lives behind an `Arc` in every clone of a
//! [`ChatClient`](crate::ChatClient) (and, later, in its connections), so a
//! refresh done by one is seen by all.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use chat_core::api::TokenResponse;

/// An access and a refresh token, and when the access token expires.
///
/// Persist them (e.g. in the system keychain) to restore a session with
/// [`ChatClient::set_tokens`](crate::ChatClient::set_tokens) without asking
/// for the password again.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use chat_client::Tokens;
///
/// let tokens = Tokens::new("access…", "refresh…", Some(SystemTime::now() + Duration::from_secs(900)));
/// assert!(!tokens.expires_within(Duration::from_secs(60)));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The access token (a JWT) sent as `Authorization: Bearer`.
    pub access: String,
    /// The refresh token. Each refresh spends it and returns a new one.
    pub refresh: String,
    /// When `access` expires; `None` if unknown (the client then refreshes
    /// only when the server answers 401).
    pub expires_at: Option<SystemTime>,
}

impl Tokens {
    /// Tokens from their parts.
    ///
    /// ```
    /// let tokens = chat_client::Tokens::new("a", "r", None);
    /// assert_eq!(tokens.refresh, "r");
    /// ```
    pub fn new(
        access: impl Into<String>,
        refresh: impl Into<String>,
        expires_at: Option<SystemTime>,
    ) -> Self {
        Self {
            access: access.into(),
            refresh: refresh.into(),
            expires_at,
        }
    }

    /// Whether the access token expires within `margin` from now (or already
    /// has). `false` when the expiry is unknown.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let t = chat_client::Tokens::new("a", "r", Some(SystemTime::now()));
    /// assert!(t.expires_within(Duration::ZERO));
    /// ```
    pub fn expires_within(&self, margin: Duration) -> bool {
        match self.expires_at {
            Some(at) => SystemTime::now() + margin >= at,
            None => false,
        }
    }

    /// Tokens from a token or refresh answer received at `now`.
    pub(crate) fn from_response(r: TokenResponse, now: SystemTime) -> Self {
        Self {
            access: r.access,
            refresh: r.refresh,
            expires_at: Some(now + Duration::from_secs(r.expires_in)),
        }
    }
}

// By hand: tokens are secrets and must not end up in logs.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &"<redacted>")
            .field("refresh", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The current session, shared by the clones of a client.
#[derive(Debug)]
pub(crate) struct AuthState {
    // A std lock: it is only held to copy or replace the tokens, never across
    // an `.await`.
    tokens: RwLock<Option<Tokens>>,
    /// Held for the whole of a refresh, so that concurrent callers that all
    /// find the token stale refresh it once: the server spends a refresh
    /// token on use and revokes the session if a spent one comes back.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
}

impl AuthState {
    pub(crate) fn new() -> Self {
        Self {
            tokens: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn get(&self) -> Option<Tokens> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, tokens: Option<Tokens>) {
        match self.tokens.write() {
            Ok(mut t) => *t = tokens,
            Err(poisoned) => *poisoned.into_inner() = tokens,
        }
    }
}
