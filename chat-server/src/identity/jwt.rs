//! JWTs of another issuer: RS256 or ES256, verified with a PEM public key
//! or the keys of a JWKS file, their claims mapped to an [`Identity`].
//!
//! The key decides the algorithm, never the token: an RSA key verifies
//! RS256 only, an EC P-256 key ES256 only, and a token whose header names
//! anything else (HS256 "signed" with a public key, `none`, RS384…) is
//! refused before any signature check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Authenticator, Identity};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// Length of an uncompressed SEC1 P-256 point (0x04, x, y).
const P256_POINT_LEN: usize = 65;

/// The longest subject accepted, in bytes.
const MAX_SUBJECT_BYTES: usize = 255;

/// A JWKS file is read again for a key id it lacks (the issuer rotated its
/// keys) at most this often, so that tokens with made-up key ids cannot
/// make every request read the file.
const JWKS_REREAD: Duration = Duration::from_secs(10);

/// What tokens must carry and which claims say who the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// The `iss` every token must carry; `None` does not check it.
    pub issuer: Option<String>,
    /// An `aud` every token must carry; `None` does not check it.
    pub audience: Option<String>,
    /// The claim holding the user's id in the host (default `sub`): a
    /// string or an integer.
    pub subject_claim: String,
    /// The claim holding the display name (default `name`). Also read:
    /// `preferred_username` for a new user's username, `email`.
    pub name_claim: String,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            subject_claim: "sub".to_owned(),
            name_claim: "name".to_owned(),
        }
    }
}

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// One verifying key.
#[derive(Clone)]
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// Where the keys come from.
enum Source {
    Fixed,
    File {
        path: PathBuf,
        /// The last reread for an unknown key id; `None` before the first.
        last_read: Mutex<Option<Instant>>,
    },
}

/// Verifies another issuer's RS256/ES256 JWTs and maps their claims to an
/// [`Identity`].
pub struct JwtAuthenticator {
    keys: Mutex<Arc<Vec<Key>>>,
    source: Source,
    options: JwtOptions,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.current();
        f.debug_struct("JwtAuthenticator")
            .field(
                "keys",
                &keys
                    .iter()
                    .map(|k| (k.id.clone(), k.algorithm))
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Verifies with one PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`):
    /// an RSA key RS256 tokens, an EC P-256 key ES256 tokens.
    pub fn from_pem(pem: &[u8], options: JwtOptions) -> Result<Self, KeyError> {
        let key = pem_key(pem)?;
        Ok(Self::with_keys(vec![key], Source::Fixed, options))
    }

    /// Verifies with the RS256/ES256 keys of a JWKS document (`{"keys":
    /// [...]}`, as an issuer publishes at its `jwks_uri`); keys of other
    /// algorithms are skipped. At least one must be usable.
    pub fn from_jwks(json: &str, options: JwtOptions) -> Result<Self, KeyError> {
        let keys = jwks_keys(json)?;
        Ok(Self::with_keys(keys, Source::Fixed, options))
    }

    /// Verifies with the keys of a JWKS file, read now and again when a
    /// token names a key id the file did not have (then at most every
    /// 10 s), so that a rotation is picked up by replacing the file.
    pub fn from_jwks_file(path: impl Into<PathBuf>, options: JwtOptions) -> Result<Self, KeyError> {
        let path = path.into();
        let keys = read_jwks(&path)?;
        Ok(Self::with_keys(
            keys,
            Source::File {
                path,
                last_read: Mutex::new(None),
            },
            options,
        ))
    }

    fn with_keys(keys: Vec<Key>, source: Source, options: JwtOptions) -> Self {
        Self {
            keys: Mutex::new(Arc::new(keys)),
            source,
            options,
        }
    }

    /// The algorithms of the keys in use, for logs.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algorithms: Vec<Algorithm> = self.current().iter().map(|k| k.algorithm).collect();
        algorithms.dedup();
        algorithms
    }

    fn current(&self) -> Arc<Vec<Key>> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rereads a JWKS file for an unknown key id, unless it was read
    /// lately; whether the keys changed.
    async fn reread(&self) -> bool {
        let Source::File { path, last_read } = &self.source else {
            return false;
        };
        {
            let mut last = last_read.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < JWKS_REREAD) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reread the JWKS file");
                return false;
            }
        };
        match jwks_keys(&text) {
            Ok(keys) => {
                tracing::info!(path = %path.display(), keys = keys.len(), "JWKS file reread");
                *self.keys.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "the JWKS file no longer holds a usable key; keeping the keys read before");
                false
            }
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.options.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.options.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The claims of `token` if one of `keys` verifies it.
    fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        keys: &[Key],
    ) -> Result<Map<String, Value>, Verdict> {
        let candidates: Vec<&Key> = keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            // A key without an id (a PEM key) serves whatever `kid` the
            // issuer puts in its tokens.
            .filter(|k| match (&header.kid, &k.id) {
                (Some(wanted), Some(id)) => wanted == id,
                (_, None) | (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(Verdict::NoKey);
        }
        let validation = self.validation(header.alg);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(Verdict::Refused(last.map_or_else(
            || "no key verifies it".to_owned(),
            |e| e.to_string(),
        )))
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        // The server's own refresh tokens, and other issuers' (Keycloak's
        // `typ` is "Refresh"), are not access tokens.
        if claims
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("refresh"))
        {
            return Err(AuthError::Refused("a refresh token".into()));
        }
        let subject = match claims.get(&self.options.subject_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(AuthError::Refused(format!(
                    "no string claim {:?} to name the user",
                    self.options.subject_claim
                )));
            }
        };
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
            return Err(AuthError::Refused(
                "the subject is empty or too long".into(),
            ));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Identity {
            subject,
            display_name: text(&self.options.name_claim),
            username: text("preferred_username"),
            email: text("email"),
            expires_at: claims.get("exp").and_then(Value::as_u64),
        })
    }
}

/// Why no key verified a token.
enum Verdict {
    /// No key of the token's algorithm and key id.
    NoKey,
    Refused(String),
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Refused(format!("not a JWT: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Refused(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let claims = match self.verify(token, &header, &self.current()) {
            Ok(claims) => claims,
            Err(Verdict::NoKey) if self.reread().await => {
                match self.verify(token, &header, &self.current()) {
                    Ok(claims) => claims,
                    Err(Verdict::NoKey) => return Err(no_key(&header)),
                    Err(Verdict::Refused(why)) => return Err(AuthError::Refused(why)),
                }
            }
            Err(Verdict::NoKey) => return Err(no_key(&header)),
            Err(Verdict::Refused(why)) => return Err(AuthError::Refused(why)),
        };
        self.identity(&claims)
    }
}

fn no_key(header: &jsonwebtoken::Header) -> AuthError {
    AuthError::Refused(format!(
        "no {:?} key{}",
        header.alg,
        header
            .kid
            .as_deref()
            .map_or_else(String::new, |k| format!(" with id {k:?}"))
    ))
}

/// A PEM public key; the PEM decides the algorithm.
fn pem_key(pem: &[u8]) -> Result<Key, KeyError> {
    let (algorithm, decoding) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        match key.try_get_as_bytes() {
            Ok(point) if point.len() == P256_POINT_LEN && point[0] == 0x04 => {}
            _ => {
                return Err(KeyError(
                    "the EC public key is not an uncompressed P-256 key (ES256)".into(),
                ));
            }
        }
        (Algorithm::ES256, key)
    } else {
        return Err(KeyError(
            "not a PEM RSA or EC P-256 public key (\"-----BEGIN PUBLIC KEY-----\")".into(),
        ));
    };
    Ok(Key {
        id: None,
        algorithm,
        decoding,
    })
}

fn read_jwks(path: &Path) -> Result<Vec<Key>, KeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
    jwks_keys(&text).map_err(|KeyError(why)| KeyError(format!("{}: {why}", path.display())))
}

/// The RS256 and ES256 keys of a JWKS document.
fn jwks_keys(json: &str) -> Result<Vec<Key>, KeyError> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| KeyError(format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (_, alg) => {
                tracing::warn!(kid = ?jwk.common.key_id, ?alg,
                    "JWKS key skipped: only RSA keys for RS256 and P-256 keys for ES256 are used");
                continue;
            }
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| {
            KeyError(format!(
                "key {:?} cannot be used: {e}",
                jwk.common.key_id.as_deref().unwrap_or("(no kid)")
            ))
        })?;
        keys.push(Key {
            id: jwk.common.key_id.clone(),
            algorithm,
            decoding,
        });
    }
    if keys.is_empty() {
        return Err(KeyError("no RS256 or ES256 key in the JWKS".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_keys_are_refused() {
        assert!(JwtAuthenticator::from_pem(b"junk", JwtOptions::default()).is_err());
        assert!(
            JwtAuthenticator::from_pem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                JwtOptions::default()
            )
            .is_err()
        );
        assert!(JwtAuthenticator::from_jwks("{}", JwtOptions::default()).is_err());
        assert!(JwtAuthenticator::from_jwks(r#"{"keys":[]}"#, JwtOptions::default()).is_err());
        // A symmetric key in a JWKS is never a verifier of another issuer.
        assert!(
            JwtAuthenticator::from_jwks(
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#,
                JwtOptions::default()
            )
            .is_err()
        );
    }
}
