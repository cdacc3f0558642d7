//! Accounts and tokens: register, log in, refresh (rotating), log out, look
//! users up.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chat_core::api::{
    ListUsersQuery, RefreshRequest, RegisterRequest, TokenRequest, TokenResponse,
};
use chat_core::{ErrorCode, Timestamp, User, UserId};

use super::ChatService;
use super::throttle::AccountKey;
use crate::auth::{self, AccessToken, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::identity::AuthError;
use crate::storage::{Conflict, NewUser, StorageError, TokenUse, UserRecord};

const MAX_PAGE: u32 = 200;

impl ChatService {
    /// Verifies an access token for HTTP (`refusal` = `unauthorized`) or a
    /// socket's `auth` frame (`invalid_token`): its signature and expiry,
    /// then its user's account (one cached read, `accounts.rs`): a user
    /// that exists, is not deactivated (403 `account_deactivated`), and
    /// has not revoked tokens this old (`refusal`).
    pub(crate) async fn authenticate(
        &self,
        token: &str,
        refusal: ErrorCode,
    ) -> ApiResult<AccessToken> {
        let mut access = match self.tokens.verify_access(token) {
            Ok(access) => access,
            Err(e) => match &self.authenticator {
                // An API key is never a user's token, nor the host's to see.
                Some(authenticator)
                    if e.is_foreign() && !token.starts_with(super::server_api::API_KEY_PREFIX) =>
                {
                    let identity =
                        authenticator
                            .authenticate(token)
                            .await
                            .map_err(|e| match e {
                                AuthError::Refused(why) => {
                                    tracing::debug!(%why, "host token refused");
                                    ApiError::new(refusal)
                                }
                                AuthError::Unavailable(why) => {
                                    tracing::warn!(%why, "authenticator unavailable");
                                    ApiError::new(ErrorCode::AuthUnavailable)
                                }
                            })?;
                    // Bots are the server API's: no host token speaks
                    // for one.
                    if identity.subject.starts_with(super::server_api::BOT_PREFIX) {
                        tracing::debug!(subject = %identity.subject, "host token for a bot refused");
                        return Err(ApiError::new(refusal));
                    }
                    AccessToken {
                        user: self.provision(&identity).await?,
                        // None, or centuries away: a socket never closes
                        // for it (expiry_deadline caps it).
                        expires_at: identity.expires_at.unwrap_or(u64::MAX),
                        external: true,
                        version: 0,
                    }
                }
                _ => {
                    tracing::debug!(error = %e, "access token refused");
                    return Err(ApiError::new(refusal));
                }
            },
        };
        let Some(account) = self
            .accounts
            .state(self.storage.as_ref(), access.user)
            .await?
        else {
            tracing::debug!(user = %access.user, "token for an unknown user");
            return Err(ApiError::new(refusal));
        };
        if account.deactivated {
            return Err(ApiError::new(ErrorCode::AccountDeactivated));
        }
        if access.external {
            // The host's token has no version of ours: it stands for the
            // account as it is now, so that a socket opened with it closes
            // on a later revocation, not on one made before it.
            access.version = account.version;
        } else if access.version < account.version {
            tracing::debug!(user = %access.user, "revoked access token");
            return Err(ApiError::new(refusal));
        }
        Ok(access)
    }

    /// Whether a socket of `user` whose token has `version` still stands,
    /// by the cached account: a socket asks once it listens for
    /// revocations, so one published between its handshake and then is
    /// not missed (the cache drops an entry before the channel tells).
    pub(crate) async fn session_current(&self, user: UserId, version: i64) -> bool {
        match self.accounts.state(self.storage.as_ref(), user).await {
            Ok(Some(a)) => !a.deactivated && version >= a.version,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Whether a socket of `user` opened with a token of `version` may go
    /// on (the account as it stands now, read afresh).
    pub(crate) async fn session_valid(&self, user: UserId, version: i64) -> bool {
        match self.storage.user(user).await {
            Ok(Some(u)) => u.deactivated_at.is_none() && version >= u.token_version,
            Ok(None) => false,
            // Storage down: keep the socket; the next request will tell.
            Err(_) => true,
        }
    }

    /// `POST /api/users/logout-all/`: every token of the caller stops
    /// working, this one included, and their sockets close with 4403.
    pub(crate) async fn logout_everywhere(&self, user: UserId) -> ApiResult<()> {
        let version = self
            .storage
            .revoke_sessions(user)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        tracing::info!(%user, "logged out everywhere");
        self.accounts.forget(user);
        super::accounts::Accounts::publish(&self.hub, super::accounts::Revoked { user, version });
        Ok(())
    }

    /// `POST /api/users/register/`.
    pub(crate) async fn register(&self, req: RegisterRequest) -> ApiResult<User> {
        let username = req.username.trim().to_owned();
        let email = req.email.trim().to_lowercase();
        let display_name = req
            .display_name
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(&username)
            .to_owned();
        let mut fields = BTreeMap::new();
        if let Err(why) = validate_username(&username) {
            fields.insert("username".to_owned(), why);
        }
        if !is_valid_email(&email) {
            fields.insert("email".to_owned(), "Enter a valid email address".to_owned());
        }
        if req.password.chars().count() < 8 {
            fields.insert(
                "password".to_owned(),
                "Password must be at least 8 characters".to_owned(),
            );
        } else if req.password.len() > 1024 {
            fields.insert(
                "password".to_owned(),
                "Password must be at most 1024 bytes".to_owned(),
            );
        }
        if display_name.chars().count() > 64 || display_name.chars().any(char::is_control) {
            fields.insert(
                "display_name".to_owned(),
                "Display name must be at most 64 printable characters".to_owned(),
            );
        }
        if !fields.is_empty() {
            return Err(ApiError::invalid_fields(fields));
        }
        // Cheap checks first so that a taken name costs no argon2 run; the
        // unique indexes still decide races.
        if self.storage.user_by_username(&username).await?.is_some() {
            return Err(ApiError::new(ErrorCode::UsernameTaken));
        }
        if self.storage.user_by_email(&email).await?.is_some() {
            return Err(ApiError::new(ErrorCode::EmailTaken));
        }
        let password_hash = auth::hash_password(req.password).await.map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::new(ErrorCode::Internal)
        })?;
        let record = self
            .storage
            .create_user(NewUser {
                username,
                email,
                display_name,
                password_hash,
                created_at: Timestamp::now(),
            })
            .await
            .map_err(|e| match e {
                StorageError::Conflict(Conflict::Username) => {
                    ApiError::new(ErrorCode::UsernameTaken)
                }
                StorageError::Conflict(Conflict::Email) => ApiError::new(ErrorCode::EmailTaken),
                other => other.into(),
            })?;
        tracing::info!(user = %record.id, username = %record.username, "user registered");
        Ok(private_view(&record))
    }

    /// `POST /api/users/token/`. Unknown user and wrong password get the same
    /// answer, after the same amount of work. Failed attempts are counted
    /// per account and per client address; while either is locked the
    /// answer is 429 `rate_limited`, whatever the password, and no password
    /// is checked.
    pub(crate) async fn login(
        &self,
        req: TokenRequest,
        client: Option<IpAddr>,
    ) -> ApiResult<TokenResponse> {
        if let Some(wait) = self.login_throttle.address_locked(client).await {
            return Err(login_locked(wait));
        }
        let (user, key) = match (&req.username, &req.email) {
            (Some(name), _) => {
                let name = name.trim();
                (
                    self.storage.user_by_username(name).await?,
                    AccountKey::Username(name.to_owned()),
                )
            }
            (None, Some(email)) => {
                let email = email.trim().to_lowercase();
                (
                    self.storage.user_by_email(&email).await?,
                    AccountKey::Email(email),
                )
            }
            (None, None) => {
                return Err(ApiError::invalid_field(
                    "username",
                    "Give a username or an email",
                ));
            }
        };
        let key = user.as_ref().map_or(key, |u| AccountKey::User(u.id));
        if let Some(wait) = self.login_throttle.account_locked(&key).await {
            return Err(login_locked(wait));
        }
        // A user of the host's (no password here) costs the same dummy
        // hash as an unknown one, so timing tells them apart from nobody.
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .filter(|h| !h.is_empty());
        if !auth::verify_password(req.password, hash).await {
            self.login_throttle.failed(&key, client).await;
            return Err(ApiError::new(ErrorCode::InvalidCredentials));
        }
        let user = user.ok_or_else(|| ApiError::new(ErrorCode::InvalidCredentials))?;
        if user.deactivated_at.is_some() {
            return Err(ApiError::new(ErrorCode::AccountDeactivated));
        }
        let family = uuid::Uuid::new_v4().simple().to_string();
        self.issue_tokens(&user, &family).await
    }

    /// `POST /api/users/token/refresh/`: spends the refresh token and issues
    /// a new pair in the same family. Presenting a spent token again means it
    /// leaked, so the whole family is revoked.
    pub(crate) async fn refresh(&self, req: RefreshRequest) -> ApiResult<TokenResponse> {
        let claims = self
            .tokens
            .verify(&req.refresh, TokenKind::Refresh)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken))?;
        match self.storage.use_refresh_token(&claims.jti).await? {
            TokenUse::Live(record) => {
                let Some(user) = self.storage.user(record.user).await? else {
                    return Err(ApiError::new(ErrorCode::InvalidToken));
                };
                if user.deactivated_at.is_some() {
                    return Err(ApiError::new(ErrorCode::AccountDeactivated));
                }
                self.issue_tokens(&user, &record.family).await
            }
            TokenUse::Spent(record) => {
                tracing::warn!(user = %record.user, family = %record.family,
                    "spent refresh token presented again, revoking its family");
                self.storage.revoke_refresh_family(&record.family).await?;
                Err(ApiError::new(ErrorCode::InvalidToken))
            }
            TokenUse::Unknown => Err(ApiError::new(ErrorCode::InvalidToken)),
        }
    }

    /// `POST /api/users/logout/`: the refresh token stops working. Logging
    /// out twice is not an error.
    pub(crate) async fn logout(&self, req: RefreshRequest) -> ApiResult<()> {
        let claims = self
            .tokens
            .verify(&req.refresh, TokenKind::Refresh)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken))?;
        match self.storage.use_refresh_token(&claims.jti).await? {
            TokenUse::Live(_) | TokenUse::Spent(_) => Ok(()),
            TokenUse::Unknown => Err(ApiError::new(ErrorCode::InvalidToken)),
        }
    }

    pub(crate) async fn issue_tokens(
        &self,
        user: &UserRecord,
        family: &str,
    ) -> ApiResult<TokenResponse> {
        let sign_failed = |e: auth::TokenError| {
            tracing::error!(error = %e, "token signing failed");
            ApiError::new(ErrorCode::Internal)
        };
        let access = self
            .tokens
            .issue_access(user.id, user.token_version)
            .map_err(sign_failed)?;
        let (refresh, record) = self
            .tokens
            .issue_refresh(user.id, family)
            .map_err(sign_failed)?;
        self.storage.insert_refresh_token(record).await?;
        Ok(TokenResponse {
            access,
            refresh,
            token_type: "Bearer".to_owned(),
            expires_in: self.tokens.access_ttl().as_secs(),
        })
    }

    /// `GET /api/users/me/`.
    pub(crate) async fn me(&self, user: UserId) -> ApiResult<User> {
        let record = self
            .storage
            .user(user)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        Ok(private_view(&record))
    }

    /// `GET /api/users/`: ordered by id, paged by `after`.
    pub(crate) async fn list_users(
        &self,
        viewer: UserId,
        q: ListUsersQuery,
    ) -> ApiResult<Vec<User>> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1..={MAX_PAGE}"),
            ));
        }
        let users = self.storage.users(q.after, limit).await?;
        Ok(users.iter().map(|u| view_for(u, viewer)).collect())
    }
}

/// The answer while an account or address is locked.
fn login_locked(wait: std::time::Duration) -> ApiError {
    ApiError {
        message: "Too many failed login attempts, try again later".into(),
        ..ApiError::rate_limited(wait)
    }
}

/// A user as they see themself.
pub(crate) fn private_view(u: &UserRecord) -> User {
    User {
        id: u.id,
        username: u.username.clone(),
        // A host's user may have none.
        email: (!u.email.is_empty()).then(|| u.email.clone()),
        display_name: u.display_name.clone(),
        created_at: Some(u.created_at),
        bot: u.is_bot,
    }
}

/// A user as `viewer` sees them: email and creation time only for oneself.
pub(crate) fn view_for(u: &UserRecord, viewer: UserId) -> User {
    if u.id == viewer {
        return private_view(u);
    }
    User {
        id: u.id,
        username: u.username.clone(),
        email: None,
        display_name: u.display_name.clone(),
        created_at: None,
        bot: u.is_bot,
    }
}

fn validate_username(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(3..=32).contains(&len) {
        return Err("Username must be 3 to 32 characters".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err("Username may contain only letters, digits, '_', '.' and '-'".to_owned());
    }
    Ok(())
}

/// A deliberately plain check: one `@`, something before it, a dotted domain
/// after it, no spaces. Deliverability is the mail server's business.
fn is_valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        assert!(validate_username("ann").is_ok());
        assert!(validate_username("a.b-c_9").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
        assert!(validate_username("ann smith").is_err());
        assert!(validate_username("ännä").is_err());
    }

    #[test]
    fn emails_are_checked_plainly() {
        assert!(is_valid_email("ann@example.com"));
        assert!(!is_valid_email("ann@localhost"));
        assert!(!is_valid_email("ann.example.com"));
        assert!(!is_valid_email("@example.com"));
        assert!(!is_valid_email("ann@@example.com"));
        assert!(!is_valid_email("ann @example.com"));
    }
}
