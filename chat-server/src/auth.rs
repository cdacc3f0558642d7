//! Passwords (argon2) and tokens (JWT): issuing, verifying, and the claims
//! they carry. Refresh tokens are also recorded in storage so that logout and
//! rotation can revoke them; access tokens are stateless and short-lived.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use chat_core::{Timestamp, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::storage::RefreshTokenRecord;

/// Which job a token does; an access token is refused where a refresh token
/// is expected and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TokenKind {
    Access,
    Refresh,
}

/// JWT claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user id, as a string per RFC 7519.
    pub(crate) sub: String,
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) jti: String,
    pub(crate) typ: TokenKind,
    /// The refresh token family (refresh tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fam: Option<String>,
    /// The user's token version when it was issued (access tokens; absent
    /// means 0): a token older than the user's version is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ver: Option<i64>,
}

impl Claims {
    /// The user the token speaks for.
    pub(crate) fn user(&self) -> Option<UserId> {
        self.sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(UserId)
    }

    /// When the token stops being valid.
    pub(crate) fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_micros((self.exp as i64).saturating_mul(1_000_000))
    }
}

/// A verified access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccessToken {
    pub(crate) user: UserId,
    /// Unix seconds.
    pub(crate) expires_at: u64,
    /// Vouched for by the host's authenticator rather than issued here:
    /// revocation (a token version) cannot reach it; deactivation does.
    pub(crate) external: bool,
    /// The user's token version it was issued under (0 for another
    /// service's, which revocation cannot reach; deactivation still does).
    pub(crate) version: i64,
}

/// Why a token was refused. The reason is for logs; clients only learn
/// `unauthorized` / `invalid_token`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("malformed, badly signed or expired token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("a {0:?} token where another kind was expected")]
    WrongKind(TokenKind),
    #[error("token subject is not a user id")]
    BadSubject,
    #[error("could not sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Issues and verifies the server's own tokens: HS256 with one secret.
/// Other issuers' tokens are the [`crate::identity::Authenticator`]'s.
#[derive(Clone)]
pub(crate) struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

/// Seconds of clock skew tolerated on `exp` and `nbf` (also the grace a
/// socket gets past its token's expiry).
pub(crate) const LEEWAY_SECS: u64 = 5;

impl Tokens {
    /// Tokens signed with `secret` (HS256 only: the algorithm is pinned, so a
    /// token claiming `none` or another algorithm is refused).
    pub(crate) fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// How long access tokens live.
    pub(crate) fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// A new access token for `user`, whose token version is `version`.
    pub(crate) fn issue_access(&self, user: UserId, version: i64) -> Result<String, TokenError> {
        self.sign(
            user,
            TokenKind::Access,
            self.access_ttl,
            None,
            Some(version),
        )
        .map(|(t, _)| t)
    }

    /// A new refresh token for `user` in `family`, with the record storage
    /// keeps for it.
    pub(crate) fn issue_refresh(
        &self,
        user: UserId,
        family: &str,
    ) -> Result<(String, RefreshTokenRecord), TokenError> {
        let (token, claims) = self.sign(
            user,
            TokenKind::Refresh,
            self.refresh_ttl,
            Some(family.to_owned()),
            None,
        )?;
        let record = RefreshTokenRecord {
            id: claims.jti.clone(),
            user,
            family: family.to_owned(),
            expires_at: claims.expires_at(),
        };
        Ok((token, record))
    }

    fn sign(
        &self,
        user: UserId,
        typ: TokenKind,
        ttl: Duration,
        fam: Option<String>,
        ver: Option<i64>,
    ) -> Result<(String, Claims), TokenError> {
        let now = unix_now();
        let claims = Claims {
            sub: user.0.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            typ,
            fam,
            ver: ver.filter(|v| *v != 0),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Sign)?;
        Ok((token, claims))
    }

    /// Verifies signature, expiry and kind of one of this server's own
    /// (HS256) tokens.
    pub(crate) fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.typ != kind {
            return Err(TokenError::WrongKind(data.claims.typ));
        }
        if data.claims.user().is_none() {
            return Err(TokenError::BadSubject);
        }
        Ok(data.claims)
    }

    /// Verifies one of this server's own access tokens. Only HS256 is
    /// accepted (the algorithm is pinned, never read from the header), so
    /// a token "signed" with `none` or any other algorithm is refused.
    pub(crate) fn verify_access(&self, token: &str) -> Result<AccessToken, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm(header.alg));
        }
        let claims = self.verify(token, TokenKind::Access)?;
        let user = claims.user().ok_or(TokenError::BadSubject)?;
        Ok(AccessToken {
            user,
            expires_at: claims.exp,
            external: false,
            version: claims.ver.unwrap_or(0),
        })
    }
}

impl TokenError {
    /// Whether the token is not one of ours at all (another issuer's, to
    /// ask the authenticator about), rather than one of ours that expired,
    /// is of the wrong kind or was tampered with in its claims.
    pub(crate) fn is_foreign(&self) -> bool {
        use jsonwebtoken::errors::ErrorKind;
        match self {
            Self::Algorithm(_) => true,
            Self::Invalid(e) => matches!(
                e.kind(),
                ErrorKind::InvalidToken
                    | ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_)
            ),
            Self::WrongKind(_) | Self::BadSubject | Self::Sign(_) => false,
        }
    }
}

/// Unix seconds as a timestamp.
pub(crate) fn unix_timestamp(secs: u64) -> Timestamp {
    Timestamp::from_unix_micros(
        i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
    )
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Password hashing runs on a fixed set of threads of its own, each with
/// one argon2 memory block (19 MiB with the default parameters) that it
/// allocates on its first job and reuses for every later one. On the
/// blocking pool each hash allocated its block anew, and the allocator kept
/// the freed block in that thread's arena: a server grew by 19 MiB for
/// every thread that ever hashed. A fixed pool makes the cost
/// `threads × 19 MiB`, once. Callers queue for a thread; hashing is
/// CPU-bound, so more threads than cores would only share them.
struct HashPool {
    jobs: tokio::sync::mpsc::Sender<HashJob>,
}

enum HashJob {
    Hash(
        String,
        tokio::sync::oneshot::Sender<Result<String, PasswordError>>,
    ),
    Verify(String, String, tokio::sync::oneshot::Sender<bool>),
}

static HASH_POOL: std::sync::OnceLock<HashPool> = std::sync::OnceLock::new();

/// Sets how many threads hash passwords (at least one), if hashing has not
/// started yet; the pool is per process, so the first server's setting
/// holds. `false` if it was already running (with its own size).
pub(crate) fn hashing_threads(threads: usize) -> bool {
    let mut fresh = false;
    HASH_POOL.get_or_init(|| {
        fresh = true;
        HashPool::start(threads)
    });
    fresh
}

impl HashPool {
    fn start(threads: usize) -> Self {
        let (jobs, queue) = tokio::sync::mpsc::channel::<HashJob>(1_024);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("chat-hash-{n}"))
                .spawn(move || {
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .blocking_recv();
                        match job {
                            Some(HashJob::Hash(password, reply)) => {
                                let _ = reply.send(hash_with(&mut memory, password.as_bytes()));
                            }
                            Some(HashJob::Verify(password, hash, reply)) => {
                                let _ = reply.send(verify_with(
                                    &mut memory,
                                    password.as_bytes(),
                                    &hash,
                                ));
                            }
                            None => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    fn get() -> &'static Self {
        HASH_POOL.get_or_init(|| Self::start(1))
    }
}

/// Hashes with argon2id, the default parameters and a random salt, in
/// `memory` (grown to the parameters' size on first use).
fn hash_with(memory: &mut Vec<argon2::Block>, password: &[u8]) -> Result<String, PasswordError> {
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    let fail = |e: &dyn std::fmt::Display| PasswordError(e.to_string());
    let argon = Argon2::default();
    let params = argon.params();
    let salt_bytes: [u8; 16] = rand::random();
    let salt = Salt::new(&salt_bytes).map_err(|e| fail(&e))?;
    let mut out = vec![
        0u8;
        params
            .output_len()
            .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN)
    ];
    memory.resize(params.block_count(), argon2::Block::default());
    argon
        .hash_password_into_with_memory(password, &salt_bytes, &mut out, &mut memory[..])
        .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string, with the string's own
/// parameters, in `memory`. Anything unparsable is a mismatch.
fn verify_with(memory: &mut Vec<argon2::Block>, password: &[u8], hash: &str) -> bool {
    use argon2::password_hash::phc::Output;
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(parsed.algorithm.as_str()),
        argon2::Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(argon2::Version::default()), argon2::Version::try_from);
    let (Ok(version), Some(salt), Some(expected)) = (version, &parsed.salt, &parsed.hash) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    memory.resize(argon.params().block_count(), argon2::Block::default());
    argon
        .hash_password_into_with_memory(password, salt.as_ref(), &mut out, &mut memory[..])
        .is_ok()
        // Output's equality is constant-time.
        && Output::new(&out).is_ok_and(|out| out == *expected)
}

/// Hashes a password with argon2id and a random salt. CPU-heavy (tens of
/// milliseconds by design), so it runs on the hashing threads.
pub(crate) async fn hash_password(password: String) -> Result<String, PasswordError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let gone = || PasswordError("the password hashing threads stopped".into());
    HashPool::get()
        .jobs
        .send(HashJob::Hash(password, reply))
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// Checks a password against a stored hash. With no hash (unknown user) it
/// checks against a fixed dummy hash, so that the answer takes as long
/// whether or not the user exists.
pub(crate) async fn verify_password(password: String, hash: Option<String>) -> bool {
    let known = hash.is_some();
    let hash = match hash {
        Some(hash) => hash,
        None => match dummy_hash().await {
            Some(dummy) => dummy.to_owned(),
            None => return false,
        },
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if HashPool::get()
        .jobs
        .send(HashJob::Verify(password, hash, reply))
        .await
        .is_err()
    {
        return false;
    }
    answer.await.unwrap_or(false) && known
}

/// The hash of a random password nobody knows, made with the same
/// parameters as real hashes so that checking it costs the same. Made once,
/// on the hashing threads.
async fn dummy_hash() -> Option<&'static str> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| hash_password(uuid::Uuid::new_v4().to_string()))
        .await
        .ok()
        .map(String::as_str)
}

/// Hashing failed (only on resource exhaustion).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub(crate) struct PasswordError(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(
            b"test-secret",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn access_token_round_trips() {
        let t = tokens();
        let token = t.issue_access(UserId(7), 0).expect("signs");
        assert_eq!(t.verify_access(&token).expect("verifies").user, UserId(7));
    }

    #[test]
    fn refresh_token_is_not_an_access_token() {
        let t = tokens();
        let (token, record) = t.issue_refresh(UserId(7), "fam").expect("signs");
        assert!(matches!(
            t.verify_access(&token),
            Err(TokenError::WrongKind(TokenKind::Refresh))
        ));
        let claims = t.verify(&token, TokenKind::Refresh).expect("verifies");
        assert_eq!(claims.jti, record.id);
        assert_eq!(claims.fam.as_deref(), Some("fam"));
    }

    #[test]
    fn other_secret_is_refused() {
        let token = tokens().issue_access(UserId(7), 0).expect("signs");
        let other = Tokens::new(b"other", Duration::from_secs(60), Duration::from_secs(60));
        assert!(matches!(
            other.verify_access(&token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn expired_token_is_refused() {
        let t = tokens();
        let now = unix_now();
        let claims = Claims {
            sub: "7".into(),
            iat: now - 100,
            nbf: now - 100,
            exp: now - 50,
            jti: "x".into(),
            typ: TokenKind::Access,
            fam: None,
            ver: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &t.encoding)
            .expect("signs");
        assert!(matches!(
            t.verify_access(&token),
            Err(TokenError::Invalid(_))
        ));
    }

    fn own_claims(exp_offset: i64, nbf_offset: i64) -> Claims {
        let now = unix_now() as i64;
        Claims {
            sub: "7".into(),
            iat: now as u64,
            nbf: (now + nbf_offset) as u64,
            exp: (now + exp_offset) as u64,
            jti: "x".into(),
            typ: TokenKind::Access,
            fam: None,
            ver: None,
        }
    }

    #[test]
    fn expiry_and_not_before_get_a_small_leeway() {
        let t = tokens();
        let sign = |c: &Claims| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), c, &t.encoding).expect("signs")
        };
        assert!(
            t.verify_access(&sign(&own_claims(-2, -10))).is_ok(),
            "exp 2 s ago"
        );
        assert!(
            t.verify_access(&sign(&own_claims(60, 2))).is_ok(),
            "nbf in 2 s"
        );
        assert!(
            t.verify_access(&sign(&own_claims(-30, -60))).is_err(),
            "exp 30 s ago"
        );
        assert!(
            t.verify_access(&sign(&own_claims(90, 30))).is_err(),
            "nbf in 30 s"
        );
    }

    #[test]
    fn other_hmac_algorithms_are_refused_even_with_the_secret() {
        let t = tokens();
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(&Header::new(alg), &own_claims(60, 0), &t.encoding)
                .expect("signs");
            assert!(
                matches!(t.verify_access(&token), Err(TokenError::Algorithm(a)) if a == alg),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn public_key_algorithms_without_a_key_are_refused() {
        // The header alone must not pick a verifier: with no public key
        // configured an RS256 header is refused before any signature check.
        use base64::Engine as _;
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = serde_json::to_string(&own_claims(60, 0)).expect("json");
        for header in [
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"ES256","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{}.{}", encode(header), encode(&claims), encode("sig"));
            assert!(matches!(
                tokens().verify_access(&token),
                Err(TokenError::Algorithm(_))
            ));
        }
    }

    #[test]
    fn unsigned_token_is_refused() {
        // {"alg":"none"} header with valid-looking claims and no signature.
        let t = tokens();
        let now = unix_now();
        let claims = format!(
            r#"{{"sub":"7","iat":{now},"nbf":{now},"exp":{},"jti":"x","typ":"access"}}"#,
            now + 60
        );
        use base64::Engine as _;
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.",
            encode(r#"{"alg":"none","typ":"JWT"}"#),
            encode(&claims)
        );
        assert!(t.verify_access(&token).is_err());
    }

    #[tokio::test]
    async fn password_hash_verifies() {
        let hash = hash_password("correct horse".into()).await.expect("hashes");
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse".into(), Some(hash)).await);
        assert!(!verify_password("correct horse".into(), None).await);
    }

    /// The pool's hashes are plain argon2 PHC strings: stored hashes made
    /// by the argon2 crate's own hasher (every earlier version of this
    /// server) still verify, and ours verify with it; other parameters
    /// than the defaults are read from the string.
    #[tokio::test]
    async fn pool_hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let ours = hash_password("tr0ub4dor".into()).await.expect("hashes");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).expect("parses");
        assert!(
            Argon2::default()
                .verify_password(b"tr0ub4dor", &parsed)
                .is_ok()
        );

        let stock = Argon2::default()
            .hash_password(b"tr0ub4dor")
            .expect("stock hash")
            .to_string();
        assert!(verify_password("tr0ub4dor".into(), Some(stock.clone())).await);
        assert!(!verify_password("tr0ub4dor!".into(), Some(stock)).await);

        let cheap = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).expect("params"),
        )
        .hash_password(b"tr0ub4dor")
        .expect("cheap hash")
        .to_string();
        assert!(verify_password("tr0ub4dor".into(), Some(cheap)).await);
        assert!(!verify_password("tr0ub4dor".into(), Some("$argon2id$garbage".into())).await);
    }
}
