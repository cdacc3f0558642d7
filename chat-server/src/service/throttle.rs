//! Rate limits that span connections: failed logins per account and per
//! client address, and messages per user.
//!
//! Keyed governor limiters hold the counts. Their keys come from clients,
//! so every limiter is swept ([`RateLimiter::retain_recent`]) at most once a
//! minute, on use: a key whose bucket has refilled is indistinguishable from
//! a fresh one and is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chat_core::UserId;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often the limiters drop the keys that have refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

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

/// Counts failed logins; a key with no failures left is locked until its
/// bucket gives one back, and while locked even the right password is
/// refused without being checked.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    account: Option<FailureGate<AccountKey>>,
    address: Option<FailureGate<IpAddr>>,
}

impl LoginThrottle {
    /// `per_account` and `per_address` failures per minute (burst: as many);
    /// 0 turns that side off.
    pub(crate) fn new(per_account: u32, per_address: u32) -> Self {
        Self {
            account: NonZeroU32::new(per_account).map(FailureGate::per_minute),
            address: NonZeroU32::new(per_address).map(FailureGate::per_minute),
        }
    }

    /// How long the address is locked for, if it is.
    pub(crate) fn address_locked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let (gate, addr) = (self.address.as_ref()?, addr?);
        gate.locked_for(&address_key(addr))
    }

    /// How long the account is locked for, if it is.
    pub(crate) fn account_locked(&self, key: &AccountKey) -> Option<Duration> {
        self.account.as_ref()?.locked_for(key)
    }

    /// Counts a failed attempt against both keys.
    pub(crate) fn failed(&self, key: &AccountKey, addr: Option<IpAddr>) {
        if let Some(gate) = &self.account {
            gate.failed(key);
        }
        if let (Some(gate), Some(addr)) = (&self.address, addr) {
            gate.failed(&address_key(addr));
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

type InfoLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

#[derive(Debug)]
struct FailureGate<K: Hash + Eq + Clone> {
    failures: InfoLimiter<K>,
    /// Keys whose last failure emptied their bucket, and until when. A std
    /// lock: never held across an `.await`.
    locked: Mutex<HashMap<K, Instant>>,
    last_sweep: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> FailureGate<K> {
    fn per_minute(n: NonZeroU32) -> Self {
        Self {
            failures: RateLimiter::keyed(Quota::per_minute(n))
                .with_middleware::<StateInformationMiddleware>(),
            locked: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    fn locked_for(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let mut locked = lock(&self.locked);
        match locked.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                locked.remove(key);
                None
            }
            None => None,
        }
    }

    fn failed(&self, key: &K) {
        // governor cannot be asked without counting, so the failure that
        // spends the last cell records the lock for the next attempt.
        let wait = match self.failures.check_key(key) {
            Ok(state) if state.remaining_burst_capacity() == 0 => {
                Some(state.quota().replenish_interval())
            }
            Ok(_) => None,
            Err(not_until) => Some(not_until.wait_time_from(self.failures.clock().now())),
        };
        if let Some(wait) = wait {
            lock(&self.locked).insert(key.clone(), Instant::now() + wait);
        }
        self.sweep();
    }

    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = lock(&self.last_sweep);
            if now.duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.failures.retain_recent();
        lock(&self.locked).retain(|_, until| *until > now);
    }
}

/// Messages per user across all their sockets and HTTP sends on this
/// instance.
#[derive(Debug)]
pub(crate) struct UserRate {
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    last_sweep: Mutex<Instant>,
}

impl UserRate {
    /// `per_second` messages per user, with a burst of five seconds' worth;
    /// 0 turns the limit off.
    pub(crate) fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(5)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Whether `user` may send one more message now; if not, how long
    /// until they may.
    pub(crate) fn check(&self, user: UserId) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let allowed = limiter
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()));
        let now = Instant::now();
        let due = {
            let mut last = lock(&self.last_sweep);
            let due = now.duration_since(*last) >= SWEEP_EVERY;
            if due {
                *last = now;
            }
            due
        };
        if due {
            limiter.retain_recent();
        }
        allowed
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_that_spends_the_last_cell_locks() {
        let t = LoginThrottle::new(3, 0);
        let key = AccountKey::Username("ann".into());
        for _ in 0..2 {
            t.failed(&key, None);
            assert_eq!(t.account_locked(&key), None);
        }
        t.failed(&key, None);
        let wait = t.account_locked(&key).expect("locked after 3 failures");
        // One cell comes back every 20 s at 3 per minute.
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(
            t.account_locked(&AccountKey::Username("Ann".into())),
            None,
            "another key is not locked"
        );
    }

    #[test]
    fn zero_turns_a_side_off() {
        let t = LoginThrottle::new(0, 0);
        let key = AccountKey::Email("ann@example.com".into());
        let addr: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..100 {
            t.failed(&key, Some(addr));
        }
        assert_eq!(t.account_locked(&key), None);
        assert_eq!(t.address_locked(Some(addr)), None);
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

    #[test]
    fn user_rate_is_per_user() {
        let r = UserRate::new(1);
        let (ann, bob) = (UserId(1), UserId(2));
        for _ in 0..5 {
            assert!(r.check(ann).is_ok(), "the burst is five seconds' worth");
        }
        assert!(r.check(ann).is_err());
        assert!(r.check(bob).is_ok());
        assert!(UserRate::new(0).check(ann).is_ok());
    }
}
