//! Who a request is: the host's users, recognised by the host's tokens.
//!
//! Every request and WebSocket handshake carries a bearer token. The
//! server's own accounts (register, login, and the tokens the server API
//! mints) are always recognised first. A token they do not recognise goes
//! to the [`Authenticator`] the embedder configured, if any, which says who
//! the user is *in the host's terms* ([`Identity`]): chat then provisions
//! that user on first sight (a user row of its own, keyed by the host's
//! id) and updates their display name whenever the host's changes.
//!
//! Shipped: [`JwtAuthenticator`], for JWTs another issuer signs (RS256 or
//! ES256), verified with a PEM public key or a JWKS file, its claims mapped
//! to an identity. `--jwt-public-key` / `--jwt-jwks` configure one without
//! code.

use async_trait::async_trait;

mod jwt;

pub use jwt::{JwtAuthenticator, JwtOptions, KeyError};

/// A user as the host knows them, from one of its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's id in the host (a JWT's `sub`): stable and unique among
    /// the host's users, at most 255 bytes. Chat keeps a numeric id of its
    /// own for the user and maps this one to it.
    pub subject: String,
    /// The name shown beside the user's messages. `None` keeps the one chat
    /// has (for a new user: the username).
    pub display_name: Option<String>,
    /// The username a new user gets (made to fit chat's rules: 3 to 32
    /// letters, digits, `_`, `.`, `-`; made unique with a suffix); `None`
    /// derives it from the subject. Never changed afterwards.
    pub username: Option<String>,
    /// A new user's email, if the host shares it.
    pub email: Option<String>,
    /// When the token stops being valid (Unix seconds): a WebSocket opened
    /// with it closes then unless renewed. `None`: it does not expire.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// An identity with only its subject.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            display_name: None,
            username: None,
            email: None,
            expires_at: None,
        }
    }
}

/// Why an authenticator did not say who a token is.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a token of this authenticator, or one it refuses (bad
    /// signature, expired, wrong issuer or audience). The client gets 401
    /// `unauthorized` (4401 on a socket); the reason goes to the logs only.
    #[error("token refused: {0}")]
    Refused(String),
    /// The authenticator could not decide (its identity service is
    /// unreachable). The client gets 503 `auth_unavailable` and may retry.
    #[error("authenticator unavailable: {0}")]
    Unavailable(String),
}

/// Says who a bearer token is, for tokens the server's own accounts do not
/// recognise. Called on every HTTP request and WebSocket handshake carrying
/// such a token, so it should answer from memory (verify a signature, look
/// in a cache) rather than call out each time.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity `token` proves, or why not.
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}
