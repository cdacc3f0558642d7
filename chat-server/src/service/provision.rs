//! Users of the host's identity service: an [`Identity`] becomes a user of
//! ours on first sight, and their display name follows the host's.
//!
//! Every request with a host token asks which user it is, so the answer is
//! cached per subject ([`Provisioned`]): a hit with the same display name
//! costs no storage call; a changed name, or an entry older than
//! [`FRESH`], goes to storage (which renames the user if needed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chat_core::{ErrorCode, Timestamp, UserId};

use super::ChatService;
use crate::error::{ApiError, ApiResult};
use crate::identity::Identity;
use crate::storage::{Conflict, ExternalUser, StorageError, UserRecord};

/// How long a cached subject is trusted before storage is asked again.
const FRESH: Duration = Duration::from_secs(300);

/// Subjects cached at most; past that the cache starts over (a burst of new
/// users costs one storage call each, as on first sight).
const MAX_CACHED: usize = 100_000;

/// Usernames tried for a new user before giving up: the derived one, then
/// with suffixes `-2` … `-9`, then with random ones.
const NAME_TRIES: usize = 12;

/// The display name longest kept, in characters (as at registration).
const MAX_DISPLAY_CHARS: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Provisioned {
    users: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    user: UserId,
    display_name: String,
    at: Instant,
}

impl Provisioned {
    fn get(&self, identity: &Identity) -> Option<UserId> {
        let users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = users.get(&identity.subject)?;
        let same_name = identity
            .display_name
            .as_deref()
            .is_none_or(|n| clean_name(n) == entry.display_name);
        (same_name && entry.at.elapsed() < FRESH).then_some(entry.user)
    }

    fn put(&self, subject: &str, user: UserId, display_name: String) {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.len() >= MAX_CACHED {
            users.clear();
        }
        users.insert(
            subject.to_owned(),
            Entry {
                user,
                display_name,
                at: Instant::now(),
            },
        );
    }
}

impl ChatService {
    /// The user of ours `identity` is, provisioned on first sight, renamed
    /// when the host's name changed.
    pub(crate) async fn provision(&self, identity: &Identity) -> ApiResult<UserId> {
        if let Some(user) = self.provisioned.get(identity) {
            return Ok(user);
        }
        Ok(self.provision_user(identity, false).await?.id)
    }

    /// [`provision`](Self::provision) without the cache, with the whole
    /// record; a new user is a bot if `bot`.
    pub(crate) async fn provision_user(
        &self,
        identity: &Identity,
        bot: bool,
    ) -> ApiResult<UserRecord> {
        let base = username_for(identity);
        let mut last = None;
        for attempt in 0..NAME_TRIES {
            let username = match attempt {
                0 => base.clone(),
                1..=8 => suffixed(&base, &(attempt + 1).to_string()),
                _ => suffixed(&base, &format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF)),
            };
            let mut email = identity
                .email
                .as_deref()
                .map(str::to_lowercase)
                .unwrap_or_default();
            // A taken email is the host's business, not a reason to keep
            // the user out: they come without one.
            if matches!(last, Some(Conflict::Email)) {
                email.clear();
            }
            let wanted = ExternalUser {
                external_id: identity.subject.clone(),
                username,
                email,
                display_name: identity.display_name.as_deref().map(clean_name),
                created_at: Timestamp::now(),
                bot,
            };
            match self.storage.provision_user(&wanted).await {
                Ok(record) => {
                    self.provisioned
                        .put(&identity.subject, record.id, record.display_name.clone());
                    return Ok(record);
                }
                Err(StorageError::Conflict(Conflict::Email)) if last != Some(Conflict::Email) => {
                    last = Some(Conflict::Email);
                }
                Err(StorageError::Conflict(Conflict::Username)) => {
                    last = Some(Conflict::Username);
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(subject = %identity.subject, "no free username for a new user");
        Err(ApiError::new(ErrorCode::Internal))
    }
}

/// A username that fits the rules of registration (3 to 32 of letters,
/// digits, `_`, `.`, `-`), from the host's username or else the subject.
fn username_for(identity: &Identity) -> String {
    let source = identity.username.as_deref().unwrap_or(&identity.subject);
    let mut name: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    while name.chars().count() < 3 {
        name.push('_');
    }
    name
}

/// `base` with `-suffix`, cut to stay within 32 characters.
fn suffixed(base: &str, suffix: &str) -> String {
    let keep = 32usize.saturating_sub(suffix.len() + 1);
    format!("{}-{suffix}", base.chars().take(keep).collect::<String>())
}

/// A display name as kept: trimmed, at most 64 characters.
fn clean_name(name: &str) -> String {
    name.trim().chars().take(MAX_DISPLAY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fit_the_rules() {
        let mut id = Identity::new("auth0|5f1c9e");
        assert_eq!(username_for(&id), "auth0_5f1c9e");
        id.username = Some("Zoë Smith".into());
        assert_eq!(username_for(&id), "Zo__Smith");
        id.username = Some("x".into());
        assert_eq!(username_for(&id), "x__");
        let long = "a".repeat(40);
        id.username = Some(long);
        assert_eq!(username_for(&id).len(), 32);
        assert_eq!(suffixed(&username_for(&id), "2").len(), 32);
        assert!(suffixed(&username_for(&id), "2").ends_with("-2"));
    }
}
