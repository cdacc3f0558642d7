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
//! One pool of `max_connections` serves reads and every write but the
//! timeline's; appends and changes go through the group committer's own
//! connections (`batch.rs`).
//! Acquiring waits at most [`ACQUIRE_TIMEOUT`], so a database that is down
//! shows as `Unavailable` within seconds rather than as a hang, and every
//! pooled connection is pinged before it is handed out, so the pool drops
//! the connections a restarted or failed-over database killed and opens
//! fresh ones by itself; the committer's four connections are checked
//! after an error and replaced the same way. Instances × (pool size + 4) must stay
//! below the server's `max_connections` (100 by default, a few kept for
//! superusers): past it,
//! new sessions are refused (SQLSTATE 53300) and requests see
//! `Unavailable`. Sessions run with `jit=off` unless the URL sets `jit`
//! (why: `connect_options`).
//!
//! Everything but connecting, migrations, error mapping, the batch
//! statement and the committer's one-statement change to a message
//! (`change.rs`) is the one SQL backend ([`super::sql`]): [`PostgresStorage`] is
//! `SqlStorage<PgDialect>`, its read and write pools the same pool.
//!
//! Transactions run at PostgreSQL's default, read committed. Where SQLite's
//! single writer serializes for free, a row lock (the dialect's locks, the
//! `statements::PG_…` statements) does it here. What each write relies on:
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
//! - `change_message` (`change.rs`): judged on a read without locks, then
//!   written (in the batch's statement, or one of its own for a deletion)
//!   under the room's row lock, with its next seq, only if the room has had
//!   no event but messages since the read; every row the rule read changes
//!   only with such an event, so the change was judged on the room as it
//!   stands, and otherwise it is read and judged again.
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
use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use futures_util::future::BoxFuture;

use super::group_commit::GroupCommit;
use super::sql::Ahead;
use super::sql::reach::Reach;
use super::sql::rows::conflict_of;
use super::sql::statements;
use super::sql::turns::WriteTurns;
use super::sql::{Dialect, SqlStorage};
use super::{MessageChange, StorageError, StorageOptions};

mod batch;
mod change;
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
/// committer's own connection.
pub type PostgresStorage = SqlStorage<PgDialect>;

/// PostgreSQL's side of the one SQL backend.
#[derive(Debug, Clone, Copy)]
pub struct PgDialect;

impl Dialect for PgDialect {
    type Db = Postgres;
    const BEGIN: &'static str = "BEGIN";
    const LOCK_ROOM: &'static str = statements::PG_LOCK_ROOM;
    const LOCK_DIRECT_PAIR: &'static str = statements::PG_LOCK_DIRECT_PAIR;
    const MEMBER_READ_MARK: &'static str = statements::PG_MEMBER_READ_MARK;
    const SEARCH: &'static str = statements::PG_SEARCH;

    /// `plainto_tsquery` takes plain text and ANDs its words.
    fn search_text(terms: &[String]) -> String {
        terms.join(" ")
    }

    fn rows_affected(result: &<Postgres as sqlx::Database>::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn map_err(error: sqlx::Error) -> StorageError {
        map_err(error)
    }

    fn judge_ahead<'a>(
        pool: &'a sqlx::PgPool,
        change: &'a MessageChange,
    ) -> BoxFuture<'a, Result<Ahead, StorageError>> {
        Box::pin(change::judge_ahead(pool, change))
    }
}

impl SqlStorage<PgDialect> {
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
        let reach = std::sync::Arc::new(Reach::default());
        super::sql::reach::watch_postgres(&reach, pool.clone(), connect.clone());
        let appends = GroupCommit::start(move || batch::PgAppender::new(connect));
        Ok(Self {
            read: pool.clone(),
            write: pool,
            appends,
            turns: WriteTurns::concurrent(),
            reach,
        })
    }

    /// Applies the migrations the database at `url` lacks, and nothing else.
    pub async fn migrate(url: &str) -> Result<(), StorageError> {
        run_migrations(&connect_options(url)?).await
    }
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
                && let Some(conflict) = conflict_of(&*db)
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

#[cfg(test)]
mod scale_tests;

#[cfg(test)]
mod tests;
