//! Rate limits that span connections: failed logins per account and per
//! client address, and messages per user.
//!
//! The buckets live in the broker ([`Broker::rate`]), so that every instance
//! sharing a Redis counts against the same ones: a user cannot send five
//! times the limit through five instances, nor guess passwords at each. With
//! the default `local://` broker they live in memory. While the broker is
//! unreachable each instance counts alone, in a bucket of its own, rather
//! than refusing everybody or letting everybody through.
//!
//! Account names and emails are keys only as SHA-256 digests: they come from
//! clients (any length) and an email is not for Redis to keep.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::UserId;

use super::server_api::hash_key;
use crate::broker::local::Buckets;
use crate::broker::{Broker, Quota, RateCheck};

/// Who a login attempt is for: the account when it exists (so its username
/// and its email share one count), else the name as storage would match it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AccountKey {
    User(UserId),
    /// Trimmed, exact (usernames are matched case-sensitively).
    Username(String),
    /// Trimmed, lowercased (emails are matched that way).
    Email(String),
}

impl AccountKey {
    fn bucket(&self) -> String {
        match self {
            Self::User(id) => format!("login:account:user:{}", id.0),
            Self::Username(name) => format!("login:account:name:{}", hash_key(name)),
            Self::Email(email) => format!("login:account:email:{}", hash_key(email)),
        }
    }
}

/// Token buckets in the broker, or in memory while it is unreachable.
struct Counter {
    broker: Arc<dyn Broker>,
    fallback: Buckets,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").finish_non_exhaustive()
    }
}

impl Counter {
    async fn check(&self, key: &str, quota: Quota, check: RateCheck) -> Option<Duration> {
        match self.broker.rate(key, quota, check).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e, "rate limit counted on this instance only");
                self.fallback.check(key, quota, check)
            }
        }
    }
}

/// `n` per minute, `n` at once.
fn per_minute(n: u32) -> Option<Quota> {
    (n > 0).then(|| Quota {
        burst: n,
        interval: Duration::from_secs(60) / n,
    })
}

/// Counts failed logins; a key with no failures left is locked until its
/// bucket gives one back, and while locked even the right password is
/// refused without being checked.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    counter: Counter,
    account: Option<Quota>,
    address: Option<Quota>,
}

impl LoginThrottle {
    /// `per_account` and `per_address` failures per minute (burst: as many);
    /// 0 turns that side off.
    pub(crate) fn new(broker: Arc<dyn Broker>, per_account: u32, per_address: u32) -> Self {
        Self {
            counter: Counter {
                broker,
                fallback: Buckets::default(),
            },
            account: per_minute(per_account),
            address: per_minute(per_address),
        }
    }

    /// How long the address is locked for, if it is.
    pub(crate) async fn address_locked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let (quota, addr) = (self.address?, addr?);
        let key = format!("login:address:{}", address_key(addr));
        self.counter.check(&key, quota, RateCheck::Peek).await
    }

    /// How long the account is locked for, if it is.
    pub(crate) async fn account_locked(&self, key: &AccountKey) -> Option<Duration> {
        let quota = self.account?;
        self.counter
            .check(&key.bucket(), quota, RateCheck::Peek)
            .await
    }

    /// Counts a failed attempt against both keys.
    pub(crate) async fn failed(&self, key: &AccountKey, addr: Option<IpAddr>) {
        if let Some(quota) = self.account {
            self.counter
                .check(&key.bucket(), quota, RateCheck::Take)
                .await;
        }
        if let (Some(quota), Some(addr)) = (self.address, addr) {
            let key = format!("login:address:{}", address_key(addr));
            self.counter.check(&key, quota, RateCheck::Take).await;
        }
    }
}

/// One address per IPv4 host; an IPv6 host usually holds a whole /64, so
/// that is its key.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Messages per user across all their sockets and HTTP sends, on every
/// instance.
#[derive(Debug)]
pub(crate) struct UserRate {
    counter: Counter,
    quota: Option<Quota>,
}

impl UserRate {
    /// `per_second` messages per user, with a burst of five seconds' worth;
    /// 0 turns the limit off.
    pub(crate) fn new(broker: Arc<dyn Broker>, per_second: u32) -> Self {
        Self {
            counter: Counter {
                broker,
                fallback: Buckets::default(),
            },
            quota: (per_second > 0).then(|| Quota {
                burst: per_second.saturating_mul(5),
                interval: Duration::from_secs(1) / per_second,
            }),
        }
    }

    /// Whether `user` may send one more message now; if not, how long
    /// until they may.
    pub(crate) async fn check(&self, user: UserId) -> Result<(), Duration> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let key = format!("send:{}", user.0);
        match self.counter.check(&key, quota, RateCheck::Take).await {
            None => Ok(()),
            Some(wait) => Err(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::local::LocalBroker;

    fn broker() -> Arc<dyn Broker> {
        struct Nowhere;
        impl crate::broker::EventSink for Nowhere {
            fn deliver(&self, _: Arc<crate::event::Event>) {}
            fn resync(&self) {}
        }
        Arc::new(LocalBroker::new(Arc::new(Nowhere)))
    }

    #[tokio::test]
    async fn the_failure_that_spends_the_last_cell_locks() {
        let t = LoginThrottle::new(broker(), 3, 0);
        let key = AccountKey::Username("ann".into());
        for _ in 0..2 {
            t.failed(&key, None).await;
            assert_eq!(t.account_locked(&key).await, None);
        }
        t.failed(&key, None).await;
        let wait = t
            .account_locked(&key)
            .await
            .expect("locked after 3 failures");
        // One cell comes back every 20 s at 3 per minute.
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(
            t.account_locked(&AccountKey::Username("Ann".into())).await,
            None,
            "another key is not locked"
        );
    }

    #[tokio::test]
    async fn zero_turns_a_side_off() {
        let t = LoginThrottle::new(broker(), 0, 0);
        let key = AccountKey::Email("ann@example.com".into());
        let addr: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..100 {
            t.failed(&key, Some(addr)).await;
        }
        assert_eq!(t.account_locked(&key).await, None);
        assert_eq!(t.address_locked(Some(addr)).await, None);
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(
            address_key(mapped),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[tokio::test]
    async fn user_rate_is_per_user() {
        let r = UserRate::new(broker(), 1);
        let (ann, bob) = (UserId(1), UserId(2));
        for _ in 0..5 {
            assert!(
                r.check(ann).await.is_ok(),
                "the burst is five seconds' worth"
            );
        }
        assert!(r.check(ann).await.is_err());
        assert!(r.check(bob).await.is_ok());
        assert!(UserRate::new(broker(), 0).check(ann).await.is_ok());
    }

    #[test]
    fn names_are_keys_only_as_digests() {
        let key = AccountKey::Email("ann@example.com".into()).bucket();
        assert!(!key.contains("ann"), "{key}");
        assert_eq!(key.len(), "login:account:email:".len() + 64);
    }
}
