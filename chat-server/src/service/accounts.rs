//! Account control: server admins, deactivation, "log out everywhere", and
//! the check every request and socket makes against them.
//!
//! An access token carries the token version its user had when it was
//! issued (`ver`); deactivating a user, or their logging out everywhere,
//! moves the version on (and spends their refresh tokens), so every token
//! issued before stops working at once, not at its expiry. Checking that
//! costs one cached read per request: [`Accounts`] keeps each user's
//! version and state in memory; a miss reads the user's row once. A change
//! is published on the hub's account channel ([`ACCOUNTS`], a reserved
//! room id that no room takes): every instance (this one too, through the
//! same path) drops its cached entry and tells its sockets, and the
//! sockets of that user opened with an older token close with 4403. If the
//! broker lost the message, an entry is read again after [`CACHE_TTL`]; a
//! broker reconnect clears the cache at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_core::{RoomId, UserId};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::event::{ConnId, Event, EventKind, Frame};
use crate::hub::{Delivery, Hub, Subscriber};
use crate::storage::{Storage, StorageError, UserRecord};

/// The hub's account channel: a room id no room has (ids start at 1).
pub(crate) const ACCOUNTS: RoomId = RoomId(0);

/// How long a cached account is trusted without a word from the broker.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);

/// The sessions of `user` opened with a token older than `version` are
/// revoked (`version` unchanged: the account changed otherwise, e.g. was
/// reactivated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Revoked {
    pub(crate) user: UserId,
    pub(crate) version: i64,
}

/// What a request's check needs of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountState {
    pub(crate) version: i64,
    pub(crate) deactivated: bool,
    pub(crate) admin: bool,
}

impl From<&UserRecord> for AccountState {
    fn from(u: &UserRecord) -> Self {
        Self {
            version: u.token_version,
            deactivated: u.deactivated_at.is_some(),
            admin: u.is_admin,
        }
    }
}

/// The cache of account states, and the channel sockets hear revocations
/// on.
#[derive(Debug)]
pub(crate) struct Accounts {
    cache: Mutex<HashMap<UserId, (Instant, AccountState)>>,
    revoked: broadcast::Sender<Revoked>,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            cache: Mutex::new(HashMap::new()),
            revoked: broadcast::channel(1024).0,
        }
    }
}

impl Accounts {
    /// `user`'s state: cached, or read (`None`: no such user).
    pub(crate) async fn state(
        &self,
        storage: &dyn Storage,
        user: UserId,
    ) -> Result<Option<AccountState>, StorageError> {
        if let Some(state) = self.cached(user) {
            return Ok(Some(state));
        }
        let Some(record) = storage.user(user).await? else {
            return Ok(None);
        };
        let state = AccountState::from(&record);
        self.lock().insert(user, (Instant::now(), state));
        Ok(Some(state))
    }

    fn cached(&self, user: UserId) -> Option<AccountState> {
        let cache = self.lock();
        let (at, state) = cache.get(&user)?;
        (at.elapsed() < CACHE_TTL).then_some(*state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, (Instant, AccountState)>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops `user`'s cached entry: this instance reads the account afresh
    /// from the next request on (done at once where the change is made,
    /// before its answer, and again when the channel brings it).
    pub(crate) fn forget(&self, user: UserId) {
        self.lock().remove(&user);
    }

    /// Sockets listen here for revocations of their user.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    /// Tells every instance (this one through the hub too) that `user`'s
    /// account changed.
    pub(crate) fn publish(hub: &Hub, revoked: Revoked) {
        let frame = Frame::from_utf8(serde_json::to_vec(&revoked).unwrap_or_default().into());
        if let Ok(frame) = frame {
            hub.publish(Event {
                room: ACCOUNTS,
                origin: None,
                kind: EventKind::Signal { frame },
            });
        }
    }

    /// Listens on the hub's account channel for as long as the hub lives:
    /// each change drops the cached entry and reaches this instance's
    /// sockets; a broker reconnect (messages may have been lost) clears
    /// the cache.
    pub(crate) async fn listen(self: Arc<Self>, hub: Arc<Hub>, conn: ConnId) {
        let (queue, mut inbox) = mpsc::channel(4096);
        let subscriber = Subscriber {
            conn,
            user: UserId(0),
            queue,
            too_slow: CancellationToken::new(),
        };
        if let Err(e) = hub.join(ACCOUNTS, subscriber).await {
            tracing::warn!(error = %e, "account channel: broker subscribe failed; \
                other instances' account changes reach this one after the cache's TTL");
        }
        tokio::spawn(async move {
            while let Some(delivery) = inbox.recv().await {
                match delivery {
                    Delivery::Event(event) => {
                        let EventKind::Signal { frame } = &event.kind else {
                            continue;
                        };
                        match serde_json::from_slice::<Revoked>(frame.bytes()) {
                            Ok(revoked) => {
                                self.lock().remove(&revoked.user);
                                let _ = self.revoked.send(revoked);
                            }
                            Err(e) => tracing::warn!(error = %e, "account channel: bad message"),
                        }
                    }
                    Delivery::CatchUp(_) => self.lock().clear(),
                }
            }
        });
    }
}
