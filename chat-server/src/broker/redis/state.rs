//! What instances agree on through Redis: presence and rate-limit buckets.
//!
//! Each is one Lua script, so that a decision ("was anyone else here?",
//! "is there a cell left?") and its write are one atomic step however many
//! instances race, and Redis's own clock (`TIME`) is the one every instance
//! reads.
//!
//! Keys, under the broker's prefix:
//! - `{prefix}:presence:{room}`: sorted set of the room's online users, each
//!   scored with the latest expiry (ms) of its entries.
//! - `{prefix}:presence:{room}:{user}`: sorted set of the instances that
//!   have the user in the room, scored with their expiry. An instance
//!   refreshes its entries every [`PRESENCE_REFRESH`]; a dead one's expire
//!   after [`PRESENCE_TTL`] and the next refresh of a live instance in the
//!   room sweeps them and reports the users gone.
//! - `{prefix}:rate:{key}`: a token bucket's theoretical arrival time (µs),
//!   the same generic cell rate rule as the local `Buckets`.
//!
//! The refresh script derives the per-user keys from the room's, which a
//! Redis Cluster would refuse; the broker targets one Redis (or a
//! primary with replicas), as its pub/sub does.

use std::sync::LazyLock;
use std::time::Duration;

use chat_core::{RoomId, UserId};
use redis::Script;

use crate::broker::{BrokerError, Quota, RateCheck};
#[cfg(doc)]
use crate::broker::{PRESENCE_REFRESH, PRESENCE_TTL};

use super::RedisBroker;

/// Redis's clock in ms, as `now` (every script starts with it).
macro_rules! now_ms {
    () => {
        "local t = redis.call('TIME')\n\
         local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}

/// KEYS: room set, user's entries. ARGV: instance, ttl (ms), user.
/// Returns 1 when no other instance had the user in the room.
static PRESENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        r"
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local others = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then others = others - 1 end
local expiry = now + ttl
redis.call('ZADD', KEYS[2], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
if others == 0 then return 1 end
return 0
"
    ))
});

/// KEYS: room set, user's entries. ARGV: instance, user. Returns 1 when no
/// instance has the user in the room any more.
static ABSENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        r"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 1
end
redis.call('ZADD', KEYS[1], last[2], ARGV[2])
return 0
"
    ))
});

/// KEYS: room set. Returns the users whose entries have not all expired.
static ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        r"
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"
    ))
});

/// KEYS: room sets. ARGV: instance, ttl (ms), then for each room the number
/// of users this instance has there followed by their ids. Refreshes them,
/// then removes the users whose every entry expired and returns them as
/// pairs (room's index in KEYS, user).
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        r"
local ttl = tonumber(ARGV[2])
local expiry = now + ttl
local gone = {}
local a = 3
for r = 1, #KEYS do
  local room = KEYS[r]
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = 1, n do
    local entries = room .. ':' .. ARGV[a]
    redis.call('ZADD', entries, expiry, ARGV[1])
    redis.call('PEXPIRE', entries, ttl)
    redis.call('ZADD', room, 'GT', expiry, ARGV[a])
    a = a + 1
  end
  if n > 0 then redis.call('PEXPIRE', room, ttl) end
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', room, '-inf', '(' .. now)) do
    local entries = room .. ':' .. user
    redis.call('ZREMRANGEBYSCORE', entries, '-inf', now)
    local last = redis.call('ZRANGE', entries, -1, -1, 'WITHSCORES')
    if #last == 0 then
      redis.call('ZREM', room, user)
      table.insert(gone, r)
      table.insert(gone, user)
    else
      redis.call('ZADD', room, last[2], user)
    end
  end
end
return gone
"
    ))
});

/// Rooms per refresh script: one round trip per this many, each call short
/// enough not to hold Redis up.
const REFRESH_BATCH: usize = 256;

/// KEYS: bucket. ARGV: interval (µs), burst, 1 to take. Returns 0 when a
/// cell was there, else the wait in µs. Times are µs since the epoch (below
/// 2^53, exact in Lua's doubles) and written with `%d`, since Lua's default
/// number format would round them.
static RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + interval - (now + interval * tonumber(ARGV[2]))
if wait > 0 then return wait end
if ARGV[3] == '1' then
  local next = tat + interval
  redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000))
end
return 0
",
    )
});

fn room_key(broker: &RedisBroker, room: RoomId) -> String {
    format!("{}:presence:{}", broker.prefix, room.0)
}

fn entries_key(broker: &RedisBroker, room: RoomId, user: UserId) -> String {
    format!("{}:presence:{}:{}", broker.prefix, room.0, user.0)
}

fn instance(broker: &RedisBroker) -> String {
    format!("{:016x}", broker.instance)
}

fn ttl_ms() -> u64 {
    crate::broker::PRESENCE_TTL.as_millis() as u64
}

pub(super) async fn present(
    broker: &RedisBroker,
    room: RoomId,
    user: UserId,
) -> Result<bool, BrokerError> {
    let mut invocation = PRESENT.prepare_invoke();
    invocation
        .key(room_key(broker, room))
        .key(entries_key(broker, room, user))
        .arg(instance(broker))
        .arg(ttl_ms())
        .arg(user.0);
    let first: i64 = broker
        .command(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    Ok(first == 1)
}

pub(super) async fn absent(
    broker: &RedisBroker,
    room: RoomId,
    user: UserId,
) -> Result<bool, BrokerError> {
    let mut invocation = ABSENT.prepare_invoke();
    invocation
        .key(room_key(broker, room))
        .key(entries_key(broker, room, user))
        .arg(instance(broker))
        .arg(user.0);
    let last: i64 = broker
        .command(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    Ok(last == 1)
}

pub(super) async fn online(broker: &RedisBroker, room: RoomId) -> Result<Vec<UserId>, BrokerError> {
    let mut invocation = ONLINE.prepare_invoke();
    invocation.key(room_key(broker, room));
    let users: Vec<i64> = broker
        .command(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    let mut users: Vec<UserId> = users.into_iter().map(UserId).collect();
    users.sort_unstable();
    Ok(users)
}

pub(super) async fn refresh_presence(
    broker: &RedisBroker,
    here: &[(RoomId, Vec<UserId>)],
) -> Result<Vec<(RoomId, UserId)>, BrokerError> {
    let mut gone = Vec::new();
    for batch in here.chunks(REFRESH_BATCH) {
        let mut invocation = REFRESH.prepare_invoke();
        invocation.arg(instance(broker)).arg(ttl_ms());
        for (room, users) in batch {
            invocation.key(room_key(broker, *room)).arg(users.len());
            for user in users {
                invocation.arg(user.0);
            }
        }
        let expired: Vec<i64> = broker
            .command(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        for pair in expired.chunks_exact(2) {
            // Lua indexes from 1.
            let room = usize::try_from(pair[0] - 1).ok().and_then(|i| batch.get(i));
            if let Some((room, _)) = room {
                gone.push((*room, UserId(pair[1])));
            }
        }
    }
    Ok(gone)
}

pub(super) async fn rate(
    broker: &RedisBroker,
    key: &str,
    quota: Quota,
    check: RateCheck,
) -> Result<Option<Duration>, BrokerError> {
    let mut invocation = RATE.prepare_invoke();
    invocation
        .key(format!("{}:rate:{key}", broker.prefix))
        .arg(quota.interval.as_micros().max(1) as u64)
        .arg(quota.burst)
        .arg(u8::from(check == RateCheck::Take));
    let wait: i64 = broker
        .command(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    Ok((wait > 0).then(|| Duration::from_micros(wait as u64)))
}

#[cfg(test)]
mod tests {
    /// A dead instance's entry (an expiry in the past) is swept by a live
    /// instance's refresh, which reports its user gone, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_instances_users_are_swept_by_the_next_refresh() {
        use chat_core::{RoomId, UserId};
        use redis::AsyncCommands as _;

        use crate::broker::conformance::{Bus as _, RecordingSink};

        let bus = super::super::tests::SharedRedisBus::new();
        let live = bus
            .broker(std::sync::Arc::new(RecordingSink::default()))
            .await;
        let (room, ann, bob) = (RoomId(7), UserId(1), UserId(2));
        assert!(live.present(room, ann).await.expect("present"));
        // Bob's only entry belongs to an instance that stopped refreshing a
        // while ago.
        let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let room_key = format!("{}:presence:7", bus.prefix);
        let _: () = conn
            .zadd(format!("{room_key}:2"), "dead", 1_000)
            .await
            .expect("zadd");
        let _: () = conn.zadd(&room_key, 2, 1_000).await.expect("zadd");
        assert_eq!(live.online(room).await.expect("online"), vec![ann]);

        // Another room first, so that the answer must name the right one.
        let gone = live
            .refresh_presence(&[(RoomId(8), vec![ann]), (room, vec![ann])])
            .await
            .expect("refresh");
        assert_eq!(gone, vec![(room, bob)]);
        let again = live
            .refresh_presence(&[(room, vec![ann])])
            .await
            .expect("refresh");
        assert!(again.is_empty(), "reported once: {again:?}");
        assert_eq!(live.online(room).await.expect("online"), vec![ann]);
    }
}
