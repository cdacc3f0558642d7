//! `postgres://` and `postgresql://`: the server backend, on sqlx, for
//! several instances sharing one database.
//!
//! The URL is libpq's: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
//! with `?sslmode=require` (or `verify-ca`, `verify-full`) for TLS through
//! rustls. `verify-*` check the server against the Mozilla roots built into
//! the binary (webpki-roots), not the system store; a private CA is named
//! with `sslrootcert=PATH`. Without `sslmode`, TLS is tried and plain TCP
//! accepted (`prefer`). `options=-c%20search_path%3DSCHEMA` puts the tables
//! in a schema of their own.
//!
//! Connecting applies the migrations of `migrations/postgres/` (embedded at
//! build time) that the database lacks; [`PostgresStorage::migrate`] does
//! only that, for a deploy step. Several instances starting at once are
//! safe: sqlx's migrator holds an advisory lock while it works (see
//! `run_migrations` below).
//!
//! One pool of `max_connections` serves reads and every write but appends;
//! appends go through the group committer's own connection (`batch.rs`).
//! Acquiring waits at most [`ACQUIRE_TIMEOUT`], so a database that is down
//! shows as `Unavailable` within seconds rather than as a hang, and every
//! pooled connection is pinged before it is handed out, so the pool drops
//! the connections a restarted or failed-over database killed and opens
//! fresh ones by itself; the committer's connection is checked after an
//! error and replaced the same way. Instances × (pool size + 1) must stay
//! below the server's `max_connections` (100 by default, a few kept for
//! superusers): past it,
//! new sessions are refused (SQLSTATE 53300) and requests see
//! `Unavailable`. Sessions run with `jit=off` unless the URL sets `jit`
//! (why: `connect_options`).
//!
//! Transactions run at PostgreSQL's default, read committed. The DML is the
//! one [`super::sql`] shares with SQLite; where SQLite's single writer
//! serializes for free, a row lock (the `sql::PG_…` statements) does it
//! here. What each write relies on:
//! - `append`: its first statement, `NEXT_SEQ`, updates the room row and so
//!   holds the room's row lock until commit. Every append to a room, from
//!   any connection of any instance, queues there and then reads the
//!   committed `last_seq`: seqs are 1, 2, 3… with no gap or duplicate, and
//!   commit in seq order, so a reader never sees seq `n + 1` before `n`.
//!   A repeated `(sender, client_id)` makes the insert do nothing (after
//!   waiting for a concurrent insert of the same pair to commit or roll
//!   back) and the transaction rolls back, seq increment included.
//!   Concurrent appends of one instance are group-committed
//!   (`group_commit.rs`, `postgres/batch.rs`): a batch locks its rooms in id
//!   order, then numbers, inserts and commits all its messages at once,
//!   with the same guarantees and one commit for the lot.
//! - `join_room`, `invite`: lock the room row first (`PG_LOCK_ROOM`).
//! - `mark_read`: locks the member row while it reads the old mark
//!   (`PG_MEMBER_READ_MARK`).
//! - `direct_room`: locks the pair's lower user (`PG_LOCK_DIRECT_PAIR`).
//! - Single statements (`use_refresh_token`, `server_secret`'s insert,
//!   `leave_room`) are atomic on their own: an `UPDATE` that waited for a
//!   row lock re-checks its `WHERE` on the row as committed.
//!
//! Locks are always taken room before member row, and `mark_read` and
//! `leave_room` take only the member row, so no two writes wait on each
//! other in a cycle.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::room::RoomType;
use chat_core::{RoomId, Seq, Timestamp, UserId};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use super::group_commit::GroupCommit;
use super::sql::{
    self, Columns, member_state, message_from, person_from, prefixed_user_from, read_mark_from,
    room_from, state_text, token_from, user_from, user_room_from,
};
use super::{
    Appended, CommitListener, Conversation, HistoryPage, HistoryQuery, MemberState, NewMessage,
    NewRoom, NewUser, ReadMark, RefreshTokenRecord, RoomKey, RoomPerson, RoomRecord, Storage,
    StorageError, StorageOptions, TokenUse, UserRecord, UserRoom,
};

mod batch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The longest wait for a pooled connection, opening one included. Short,
/// so that requests fail fast with `Unavailable` while the database is down
/// instead of piling up; long enough for a busy pool under a burst.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the sessions are called in `pg_stat_activity` unless the URL says
/// `application_name=…`.
const APPLICATION_NAME: &str = "chat-server";

/// The PostgreSQL backend: one pool for reads and writes, and the append
/// committer's own.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    /// Appends go through group commit (see `group_commit.rs`).
    appends: GroupCommit,
}

impl PostgresStorage {
    /// Connects to the database at `url`, applies the migrations it lacks,
    /// and pools up to `options.max_connections` connections.
    /// `Unavailable` if the database cannot be reached within
    /// [`ACQUIRE_TIMEOUT`].
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let connect = connect_options(url)?;
        run_migrations(&connect).await?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The default, stated because recovery depends on it: an idle
            // connection is pinged before use, and one the server has
            // dropped is replaced rather than handed out to fail.
            .test_before_acquire(true)
            // Connections open on demand; the migration above has shown
            // that the database answers.
            .connect_lazy_with(connect.clone());
        // Appends have a connection of their own, opened on the committer's
        // thread (a socket answers to the runtime that opened it): reads
        // never take a connection an append is waiting for, and a batch's
        // round trip does not wait on the server's runtime.
        let appends = GroupCommit::start(move || batch::PgAppender::new(connect));
        Ok(Self { pool, appends })
    }

    /// Applies the migrations the database at `url` lacks, and nothing else.
    pub async fn migrate(url: &str) -> Result<(), StorageError> {
        run_migrations(&connect_options(url)?).await
    }

    async fn room_where(
        &self,
        query: &'static str,
        key: impl for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    ) -> Result<Option<RoomRecord>, StorageError> {
        let row = sqlx::query(query)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(room_from).transpose()
    }

    async fn user_where(
        &self,
        query: &'static str,
        key: impl for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    ) -> Result<Option<UserRecord>, StorageError> {
        let row = sqlx::query(query)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(user_from).transpose()
    }

    /// A read-committed transaction (the server's default isolation).
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StorageError> {
        self.pool.begin().await.map_err(map_err)
    }
}

/// One append in its own transaction; what group commit falls back to.
async fn append_one(
    conn: &mut sqlx::PgConnection,
    message: NewMessage,
) -> Result<Appended, StorageError> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(map_err)?;
    // First statement: the room's row lock, held to commit, serializes
    // every append to this room (see the module doc).
    let seq: Option<Seq> = sqlx::query_scalar(sql::NEXT_SEQ)
        .bind(message.room.get())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let Some(seq) = seq else {
        tx.rollback().await.map_err(map_err)?;
        return Err(StorageError::NotFound);
    };

    // An error here (an unknown sender) drops `tx`, which rolls back
    // the seq with it.
    let id: Option<i64> = sqlx::query_scalar(sql::INSERT_MESSAGE)
        .bind(message.room.get())
        .bind(seq)
        .bind(message.sender.get())
        .bind(&message.body)
        .bind(message.client_id.as_deref())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let Some(id) = id else {
        // A repeat of `(sender, client_id)`: the insert waited for any
        // concurrent holder of the pair to commit, so this statement's
        // fresh snapshot sees the original. Rolling back gives the seq
        // back, so the room keeps no gap.
        let original = sqlx::query(sql::MESSAGE_BY_CLIENT_ID)
            .bind(message.sender.get())
            .bind(message.client_id.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.rollback().await.map_err(map_err)?;
        return Ok(Appended {
            message: message_from(&original)?,
            created: false,
        });
    };

    sqlx::query(sql::ADVANCE_SENDER_MARK)
        .bind(message.room.get())
        .bind(message.sender.get())
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let stored = sqlx::query(sql::MESSAGE_BY_ID)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    let stored = message_from(&stored)?;
    tx.commit().await.map_err(map_err)?;
    Ok(Appended {
        message: stored,
        created: true,
    })
}

/// The connect options `url` names, with our defaults for what it leaves
/// unsaid: the application name, and `jit=off`.
///
/// PostgreSQL compiles a query to machine code (JIT) once its estimated
/// cost passes `jit_above_cost`, which pays off for long analytical
/// queries only. The room list of a user in thousands of rooms is
/// estimated far above that (the correlated member counts are costed
/// pessimistically): in the scale test (`postgres/scale_tests.rs`) the
/// room list of a user in 10,000 rooms took 227 ms with JIT, most of it
/// compiling, and 56 ms without.
/// Every query here is short, so JIT only costs. A URL that sets `jit`
/// itself (`options=-c%20jit%3Don`) keeps its choice.
fn connect_options(url: &str) -> Result<PgConnectOptions, StorageError> {
    let mut options = PgConnectOptions::from_str(url).map_err(map_err)?;
    if options.get_application_name().is_none() {
        options = options.application_name(APPLICATION_NAME);
    }
    if !options.get_options().is_some_and(|o| o.contains("jit")) {
        options = options.options([("jit", "off")]);
    }
    Ok(options)
}

/// Applies the pending migrations, on a pool of one connection of its own.
///
/// sqlx's PostgreSQL migrator (`sqlx-postgres` 0.9, `migrate.rs`, and
/// `Migrator::run_direct` in `sqlx-core`) takes `pg_advisory_lock(id)`, id
/// derived from the database name, before it even creates
/// `_sqlx_migrations`, and holds it until every migration is applied, each
/// in its own transaction together with its bookkeeping row. A second
/// instance migrating at the same time waits on the lock, then finds the
/// versions recorded and applies nothing. The lock is per database, so
/// migrations of different schemas of one database also take turns.
///
/// The lock belongs to the session, and sqlx only releases it on success. A
/// failed migration would leave it held by a pooled connection that lives
/// on, and every later instance would wait on it forever; so the migration
/// gets a pool of its own that is closed afterwards, whatever happened,
/// which ends the session and with it the lock.
async fn run_migrations(options: &PgConnectOptions) -> Result<(), StorageError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options.clone());
    let result = MIGRATOR.run(&pool).await.map_err(migrate_err);
    pool.close().await;
    result
}

/// Maps sqlx's errors onto the storage contract.
fn map_err(error: sqlx::Error) -> StorageError {
    match error {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation()
                && let Some(conflict) = sql::conflict_of(&*db)
            {
                return StorageError::Conflict(conflict);
            }
            if db.code().is_some_and(|code| is_unavailable(&code)) {
                StorageError::Unavailable(db.into_error())
            } else {
                StorageError::Backend(db.into_error())
            }
        }
        // rustls reports a failed handshake (an untrusted certificate, a
        // name mismatch) as invalid data; like `Tls` (no TLS on the
        // server), that is configuration, and retrying will not fix it.
        sqlx::Error::Io(ref io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) =>
        {
            StorageError::Backend(Box::new(error))
        }
        // Refused, reset or dropped connections, a pool that could not get
        // a connection in time (the database down or overloaded), a pool
        // shut down. A protocol error is the wire breaking mid-exchange: a
        // connection cut during the startup's SSLRequest reads as an
        // "unexpected response" byte, not as an I/O error.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StorageError::Unavailable(Box::new(error)),
        other => StorageError::Backend(Box::new(other)),
    }
}

/// SQLSTATEs that say the database cannot serve right now rather than that
/// the request is wrong: class 08 (connection exception), 57P01..57P03
/// (admin shutdown, crash shutdown, cannot connect now: a restart or
/// failover), class 53 (insufficient resources: too many connections,
/// disk full, out of memory).
fn is_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

fn migrate_err(error: sqlx::migrate::MigrateError) -> StorageError {
    match error {
        sqlx::migrate::MigrateError::Execute(inner) => map_err(inner),
        other => StorageError::Backend(Box::new(other)),
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, StorageError> {
        let email = user.email.to_lowercase();
        let id: i64 = sqlx::query_scalar(sql::INSERT_USER)
            .bind(&user.username)
            .bind(&email)
            .bind(&user.display_name)
            .bind(&user.password_hash)
            .bind(user.created_at.unix_micros())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(UserRecord {
            id: UserId(id),
            username: user.username,
            email,
            display_name: user.display_name,
            password_hash: user.password_hash,
            created_at: user.created_at,
        })
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StorageError> {
        self.user_where(sql::USER_BY_ID, id.get()).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StorageError> {
        self.user_where(sql::USER_BY_USERNAME, username.to_owned())
            .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StorageError> {
        self.user_where(sql::USER_BY_EMAIL, email.to_lowercase())
            .await
    }

    async fn users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StorageError> {
        let rows = sqlx::query(sql::USERS_AFTER)
            .bind(after.map_or(i64::MIN, UserId::get))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(user_from).collect()
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StorageError> {
        let mut ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut users = Vec::with_capacity(ids.len());
        // Sorted chunks come back in order when each is read in id order.
        for chunk in ids.chunks(sql::IDS_PER_QUERY) {
            let mut query = sqlx::query(AssertSqlSafe(sql::users_by_ids(chunk.len())));
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&self.pool).await.map_err(map_err)?;
            for row in &rows {
                users.push(user_from(row)?);
            }
        }
        Ok(users)
    }

    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StorageError> {
        sqlx::query(sql::INSERT_REFRESH_TOKEN)
            .bind(&token.id)
            .bind(token.user.get())
            .bind(&token.family)
            .bind(token.expires_at.unix_micros())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn use_refresh_token(&self, id: &str) -> Result<TokenUse, StorageError> {
        // Of two concurrent spends, the second waits for the first's row
        // lock, re-checks `NOT spent` on the committed row and matches
        // nothing.
        let spent = sqlx::query(sql::SPEND_REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        if let Some(row) = spent {
            return Ok(TokenUse::Live(token_from(id, &row)?));
        }
        // Not live: spent before, or never there. A token is never unspent,
        // so reading after the failed update cannot see it live again.
        let existing = sqlx::query(sql::REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(match existing {
            Some(row) => TokenUse::Spent(token_from(id, &row)?),
            None => TokenUse::Unknown,
        })
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<(), StorageError> {
        sqlx::query(sql::REVOKE_REFRESH_FAMILY)
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StorageError> {
        // A concurrent insert of the same name makes this one wait for it
        // to commit and then do nothing; the read, a new statement under
        // read committed, sees the winner's value.
        let mut tx = self.begin().await?;
        sqlx::query(sql::INSERT_SERVER_SECRET)
            .bind(name)
            .bind(candidate)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let value: String = sqlx::query_scalar(sql::SERVER_SECRET)
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(value)
    }

    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StorageError> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(sql::INSERT_ROOM)
            .bind(&room.name)
            .bind(room.kind.as_str())
            .bind(room.creator.get())
            .bind(room.created_at.unix_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;

        let mut people = vec![(room.creator, MemberState::Member)];
        for &user in &room.invited {
            if !people.iter().any(|(u, _)| *u == user) {
                people.push((user, MemberState::Invited));
            }
        }
        for (position, (user, state)) in (1_i64..).zip(people) {
            sqlx::query(sql::INSERT_MEMBER)
                .bind(id)
                .bind(user.get())
                .bind(state_text(state))
                .bind(0_i64)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(RoomRecord {
            id: RoomId(id),
            name: room.name,
            kind: room.kind,
            creator: room.creator,
            created_at: room.created_at,
            last_seq: 0,
        })
    }

    async fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StorageError> {
        self.room_where(sql::ROOM_BY_ID, id.get()).await
    }

    async fn room_by_name(&self, name: &str) -> Result<Option<RoomRecord>, StorageError> {
        self.room_where(sql::ROOM_BY_NAME, name.to_owned()).await
    }

    async fn delete_room(&self, id: RoomId) -> Result<bool, StorageError> {
        // Takes the room's row lock like an append, so it waits for appends
        // in flight, and appends after it find no room (`NotFound`).
        let done = sqlx::query(sql::DELETE_ROOM)
            .bind(id.get())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn room_people(&self, room: RoomId) -> Result<Vec<RoomPerson>, StorageError> {
        let rows = sqlx::query(sql::ROOM_PEOPLE)
            .bind(room.get())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(person_from).collect()
    }

    async fn membership(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<Option<MemberState>, StorageError> {
        let state: Option<String> = sqlx::query_scalar(sql::MEMBERSHIP)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        state.as_deref().map(member_state).transpose()
    }

    async fn room_for(
        &self,
        room: RoomKey<'_>,
        user: UserId,
    ) -> Result<Option<(RoomRecord, Option<MemberState>)>, StorageError> {
        let query = match room {
            RoomKey::Id(id) => sqlx::query(sql::ROOM_FOR_BY_ID).bind(id.get()),
            RoomKey::Name(name) => sqlx::query(sql::ROOM_FOR_BY_NAME).bind(name.to_owned()),
        };
        let row = query
            .bind(user.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(sql::room_for_from).transpose()
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        // See `sql::PG_LOCK_ROOM`: the mark starts at the last committed
        // seq, and the position is unique.
        let locked = sqlx::query(sql::PG_LOCK_ROOM)
            .bind(room.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if locked.is_none() {
            tx.rollback().await.map_err(map_err)?;
            return Err(StorageError::NotFound);
        }
        // No row back: already a member.
        let changed = sqlx::query(sql::JOIN_ROOM)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(changed.is_some())
    }

    async fn invite(&self, room: RoomId, users: &[UserId]) -> Result<(), StorageError> {
        let mut tx = self.begin().await?;
        // See `sql::PG_LOCK_ROOM`: positions stay unique.
        let locked = sqlx::query(sql::PG_LOCK_ROOM)
            .bind(room.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if locked.is_none() {
            tx.rollback().await.map_err(map_err)?;
            return Err(StorageError::NotFound);
        }
        for user in users {
            sqlx::query(sql::INVITE)
                .bind(room.get())
                .bind(user.get())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn leave_room(&self, room: RoomId, user: UserId) -> Result<bool, StorageError> {
        let done = sqlx::query(sql::LEAVE_ROOM)
            .bind(room.get())
            .bind(user.get())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_rooms(&self, user: UserId) -> Result<Vec<UserRoom>, StorageError> {
        let rows = sqlx::query(sql::USER_ROOMS)
            .bind(user.get())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(user_room_from).collect()
    }

    async fn direct_room(
        &self,
        a: UserId,
        b: UserId,
        created_at: Timestamp,
    ) -> Result<(RoomRecord, bool), StorageError> {
        let (lo, hi) = super::direct_pair(a, b).ok_or_else(super::self_conversation)?;
        let name = super::direct_name(lo, hi);
        let mut tx = self.begin().await?;
        // See `sql::PG_LOCK_DIRECT_PAIR`: creations of one pair take turns.
        sqlx::query(sql::PG_LOCK_DIRECT_PAIR)
            .bind(lo.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let id: Option<i64> = sqlx::query_scalar(sql::INSERT_DIRECT_ROOM)
            .bind(&name)
            .bind(a.get())
            .bind(created_at.unix_micros())
            .bind(lo.get())
            .bind(hi.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(id) = id else {
            let row = sqlx::query(sql::DIRECT_ROOM_BY_PAIR)
                .bind(lo.get())
                .bind(hi.get())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.rollback().await.map_err(map_err)?;
            return Ok((room_from(&row)?, false));
        };
        for (position, user) in (1_i64..).zip([a, b]) {
            sqlx::query(sql::INSERT_MEMBER)
                .bind(id)
                .bind(user.get())
                .bind(state_text(MemberState::Member))
                .bind(0_i64)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        let room = RoomRecord {
            id: RoomId(id),
            name,
            kind: RoomType::Direct,
            creator: a,
            created_at,
            last_seq: 0,
        };
        Ok((room, true))
    }

    async fn find_direct_room(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<Option<RoomRecord>, StorageError> {
        let Some((lo, hi)) = super::direct_pair(a, b) else {
            return Ok(None);
        };
        let row = sqlx::query(sql::DIRECT_ROOM_BY_PAIR)
            .bind(lo.get())
            .bind(hi.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(room_from).transpose()
    }

    async fn user_conversations(&self, user: UserId) -> Result<Vec<Conversation>, StorageError> {
        let rows = sqlx::query(sql::USER_CONVERSATIONS)
            .bind(user.get())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(Conversation {
                    room: user_room_from(row)?,
                    other: prefixed_user_from(row, "p_")?,
                })
            })
            .collect()
    }

    fn listen(&self, listener: Arc<dyn CommitListener>) {
        self.appends.listen(listener);
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StorageError> {
        self.appends.append(message).await
    }

    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StorageError>> {
        self.appends.append_many(messages).await
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError> {
        let fetch = i64::from(query.limit) + 1;
        let before = query.before.unwrap_or(Seq::MAX);
        let rows = match query.after {
            Some(after) => {
                sqlx::query(sql::HISTORY_AFTER)
                    .bind(room.get())
                    .bind(after)
                    .bind(before)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query(sql::HISTORY_BEFORE)
                    .bind(room.get())
                    .bind(before)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(map_err)?;
        sql::history_page(&rows, &query)
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        seq: Seq,
    ) -> Result<ReadMark, StorageError> {
        let mut tx = self.begin().await?;
        // Locks the member row: see `sql::PG_MEMBER_READ_MARK`.
        let Some(row) = sqlx::query(sql::PG_MEMBER_READ_MARK)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
        else {
            tx.rollback().await.map_err(map_err)?;
            return Err(StorageError::NotFound);
        };
        let previous: Seq = row.int("read_seq")?;
        let last_seq: Seq = row.int("last_seq")?;
        let target = seq.min(last_seq);
        if target <= previous {
            tx.rollback().await.map_err(map_err)?;
            return Ok(ReadMark {
                previous,
                current: previous,
            });
        }
        sqlx::query(sql::ADVANCE_READ_MARK)
            .bind(room.get())
            .bind(user.get())
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(ReadMark {
            previous,
            current: target,
        })
    }

    async fn read_marks(&self, room: RoomId) -> Result<Vec<(UserId, Seq)>, StorageError> {
        let rows = sqlx::query(sql::READ_MARKS)
            .bind(room.get())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(read_mark_from).collect()
    }

    async fn unread_total(&self, user: UserId) -> Result<u64, StorageError> {
        let total: i64 = sqlx::query_scalar(sql::UNREAD_TOTAL)
            .bind(user.get())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query(sql::PING)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod scale_tests;

#[cfg(test)]
mod tests;
