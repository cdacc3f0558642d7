//! `sqlite://PATH`: the embedded default backend, on sqlx.
//!
//! The file is created if missing and migrated at connect from
//! `migrations/sqlite/` (embedded at build time). It runs in WAL mode, where
//! readers never block the writer nor each other, with `synchronous=NORMAL`
//! (durable across application crashes; a power loss may drop the last
//! commits but never corrupts the file).
//!
//! SQLite admits one writer at a time. Rather than let several pooled
//! connections race for that lock and fail with `SQLITE_BUSY`, every write
//! but the committer's goes through a pool of exactly one connection, so
//! writers queue in the pool, in order; reads use a separate pool of
//! read-only connections. The busy timeout is only for another process
//! sharing the file.
//!
//! `sqlite://:memory:` works too, for throwaway runs: a private database in
//! a temporary directory, removed when the storage is dropped (a file
//! rather than SQLite's in-memory database, which lives on one connection
//! where this backend opens several).
//!
//! Concurrent appends are group-committed (`super::group_commit`): the
//! appends queued while one write transaction runs share the next one
//! (`sqlite/batch.rs`), so they pay for taking the write lock and writing a
//! commit record once. The committer writes its batches on a connection of
//! its own, in-process (rusqlite); it and the write pool take turns
//! (`sql/turns.rs`).
//!
//! Everything but connecting, error mapping and the batch statements is the
//! one SQL backend ([`super::sql`]): [`SqliteStorage`] is
//! `SqlStorage<SqliteDialect>`. SQLite's single writer serializes what
//! PostgreSQL needs row locks for, so its "locks" are plain reads.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::group_commit::GroupCommit;
use super::sql::rows::conflict_of;
use super::sql::statements;
use super::sql::turns::WriteTurns;
use super::sql::{Dialect, SqlStorage};
use super::{StorageError, StorageOptions};

mod batch;
mod checkpoint;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite backend: one write connection, a pool of read connections.
pub type SqliteStorage = SqlStorage<SqliteDialect>;

/// SQLite's side of the one SQL backend.
#[derive(Debug, Clone, Copy)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    // The write transaction holds the database's one write lock already.
    const LOCK_ROOM: &'static str = statements::ROOM_EXISTS;
    const LOCK_DIRECT_PAIR: &'static str = statements::USER_EXISTS;
    const MEMBER_READ_MARK: &'static str = statements::MEMBER_READ_MARK;
    const SEARCH: &'static str = statements::SQLITE_SEARCH;

    /// FTS5's query syntax: each word quoted (a phrase of one word),
    /// juxtaposed for AND.
    fn search_text(terms: &[String]) -> String {
        terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn rows_affected(result: &<Sqlite as sqlx::Database>::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn map_err(error: sqlx::Error) -> StorageError {
        map_err(error)
    }
}

/// Why the database file could not be opened, naming it once: SQLite's
/// own message ("unable to open database file") names neither the path
/// nor the cause.
fn open_failure(options: &SqliteConnectOptions, e: sqlx::Error) -> StorageError {
    let path = options.get_filename();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let why = match std::fs::metadata(dir) {
        Err(_) => format!("directory {} does not exist", dir.display()),
        Ok(meta) if !meta.is_dir() => format!("{} is not a directory", dir.display()),
        Ok(_) => match &e {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        },
    };
    StorageError::Unavailable(
        format!("cannot open SQLite database {}: {why}", path.display()).into(),
    )
}

impl SqlStorage<SqliteDialect> {
    /// Opens (creating it if needed) and migrates the database at
    /// `sqlite://PATH`, or a fresh throwaway one for `sqlite://:memory:`.
    /// The read pool holds up to `options.max_connections` connections.
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        // A throwaway database is a file in a directory of its own, removed
        // when the storage is dropped: the committer writes on a connection
        // of its own, and an in-memory database lives on one connection.
        let scratch = if is_in_memory(url) {
            Some(tempfile::tempdir().map_err(|e| StorageError::Unavailable(Box::new(e)))?)
        } else {
            None
        };
        let (url, synchronous) = durability(url)?;
        let base = match &scratch {
            Some(dir) => SqliteConnectOptions::new().filename(dir.path().join("chat.db")),
            None => SqliteConnectOptions::from_str(&url).map_err(map_err)?,
        }
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(synchronous);

        // One connection that is never retired: it saves reopening the
        // writer.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // A ping is a round trip to the connection's thread, and an
            // in-process database has no link to break.
            .test_before_acquire(false);

        let write = writer
            .connect_with(
                base.clone()
                    .journal_mode(SqliteJournalMode::Wal)
                    // See `sqlite/checkpoint.rs`.
                    .pragma("wal_autocheckpoint", "0"),
            )
            .await
            .map_err(|e| open_failure(&base, e))?;
        MIGRATOR.run(&write).await.map_err(migrate_err)?;
        // Opened after the writer has switched the file to WAL (a setting
        // stored in the file), and read-only so that no write can slip
        // past the single writer.
        let read = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(base.clone().read_only(true))
            .await
            .map_err(map_err)?;
        let turns = WriteTurns::single_writer();
        let appender = batch::SqliteAppender::open(
            base.get_filename(),
            write.clone(),
            turns.clone(),
            scratch,
            matches!(synchronous, SqliteSynchronous::Full),
        )?;
        Ok(Self {
            appends: GroupCommit::start(move || appender),
            write,
            read,
            turns,
            reach: std::sync::Arc::default(),
        })
    }
}

/// The URL without our `synchronous` parameter, and the setting it asks
/// for. `normal` (the default) in WAL mode loses nothing a process crash
/// can reach: a commit is in the WAL file, written before the answer, and
/// survives `kill -9`. It is not fsynced at each commit, so a power loss
/// or kernel crash may lose the last commits (never corrupt the file).
/// `full` fsyncs the WAL at every commit and survives both, at the cost
/// measured in `benches/results/` (W4 on SQLite).
fn durability(url: &str) -> Result<(String, SqliteSynchronous), StorageError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SqliteSynchronous::Normal));
    };
    let mut synchronous = SqliteSynchronous::Normal;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "normal" => SqliteSynchronous::Normal,
                    "full" => SqliteSynchronous::Full,
                    other => {
                        return Err(StorageError::Backend(
                            format!("sqlite synchronous={other:?}: expected normal or full").into(),
                        ));
                    }
                };
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, synchronous))
}

fn is_in_memory(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.starts_with(":memory:") || rest.contains("mode=memory")
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
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            if is_unavailable(code) {
                StorageError::Unavailable(db.into_error())
            } else {
                StorageError::Backend(db.into_error())
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => StorageError::Unavailable(Box::new(error)),
        other => StorageError::Backend(Box::new(other)),
    }
}

/// SQLite result codes (the low byte of an extended code) that say the
/// database cannot be used right now rather than that the request is wrong:
/// locked by another process past the busy timeout, I/O failure, disk full,
/// file that cannot be opened.
fn is_unavailable(code: i32) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    matches!(code & 0xff, BUSY | LOCKED | IOERR | FULL | CANTOPEN)
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
mod tests {
    use super::SqliteStorage;
    use crate::storage::conformance::TestStore;
    use crate::storage::{self, NewUser, Storage, StorageOptions};
    use chat_core::Timestamp;
    use std::str::FromStr;

    crate::storage_conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let store = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("connect");
        TestStore::with_guard(store, dir)
    });

    /// `?synchronous=full` reaches every connection (the reads' and the
    /// committer's); without it, `normal`; anything else is refused.
    #[tokio::test]
    async fn synchronous_is_chosen_by_the_url() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chat.db");
        for (query, expected) in [
            ("", 1),
            ("?synchronous=full", 2),
            ("?synchronous=NORMAL", 1),
        ] {
            let url = format!("sqlite://{}{query}", path.display());
            let store = SqliteStorage::connect(&url, &StorageOptions::default())
                .await
                .expect("connect");
            for pool in [&store.read, &store.write] {
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(pool)
                    .await
                    .expect("pragma");
                assert_eq!(level, expected, "{query}");
            }
        }
        let url = format!("sqlite://{}?synchronous=off", path.display());
        assert!(
            SqliteStorage::connect(&url, &StorageOptions::default())
                .await
                .is_err()
        );
    }

    fn alice() -> NewUser {
        NewUser {
            username: "alice".to_owned(),
            email: "alice@example.com".to_owned(),
            display_name: "Alice".to_owned(),
            password_hash: "hash".to_owned(),
            created_at: Timestamp::from_unix_micros(1_770_000_000_123_456),
        }
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_skips_applied_migrations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested-name.db");
        assert!(!path.exists());
        let url = format!("sqlite://{}", path.display());

        let first = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("connect creates the file");
        let created = first.create_user(alice()).await.expect("create");
        first.write.close().await;
        first.read.close().await;
        assert!(path.exists());

        let second = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("reconnect");
        assert_eq!(
            second.user(created.id).await.expect("user"),
            Some(created),
            "microsecond timestamps survive the file"
        );
    }

    #[tokio::test]
    async fn journal_is_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let store = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("connect");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.read)
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.write)
            .await
            .expect("pragma");
        assert_eq!(fk, 1);
    }

    #[tokio::test]
    async fn reads_cannot_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let store = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("connect");
        let result = sqlx::query("INSERT INTO server_secrets (name, value) VALUES ('a', 'b')")
            .execute(&store.read)
            .await;
        assert!(result.is_err(), "the read pool is read-only");
    }

    #[tokio::test]
    async fn in_memory_url_works_through_connect() {
        let store = storage::connect("sqlite://:memory:", &StorageOptions::default())
            .await
            .expect("connect");
        let created = store.create_user(alice()).await.expect("create");
        assert_eq!(
            store.user_by_username("alice").await.expect("user"),
            Some(created)
        );
        // A second in-memory store is a different database.
        let other = storage::connect("sqlite://:memory:", &StorageOptions::default())
            .await
            .expect("connect");
        assert_eq!(other.user_by_username("alice").await.expect("user"), None);
    }

    #[tokio::test]
    async fn unopenable_path_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}",
            dir.path().join("missing-dir").join("chat.db").display()
        );
        let err = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect_err("the directory does not exist");
        assert!(
            matches!(err, storage::StorageError::Unavailable(_)),
            "got {err:?}"
        );
    }

    /// 0007 rebuilds `messages` (to drop the CHECK on `kind`) outside
    /// sqlx's transaction: a database made by 0001-0006 keeps every
    /// message, reaction and search entry, and takes the new kinds.
    #[tokio::test]
    async fn the_messages_rebuild_keeps_reactions_and_search() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("pool");
        super::MIGRATOR.run_to(6, &pool).await.expect("up to 0006");
        for statement in [
            "INSERT INTO users (id, username, email, display_name, password_hash, created_at) \
             VALUES (1, 'ann', 'ann@x', 'Ann', 'h', 0)",
            "INSERT INTO rooms (id, name, kind, creator_id, created_at, last_seq, msg_count, \
             last_message_seq) VALUES (1, 'lobby', 'public', 1, 0, 2, 2, 2)",
            "INSERT INTO room_members (room_id, user_id, state, read_seq, read_no, position) \
             VALUES (1, 1, 'member', 2, 2, 1)",
            "INSERT INTO messages (room_id, seq, sender_id, body, created_at, msg_no) \
             VALUES (1, 1, 1, 'hello rebuilt world', 0, 1)",
            "INSERT INTO messages (room_id, seq, sender_id, body, kind, created_at, msg_no, \
             target_id) VALUES (1, 2, 1, '+1', 'reacted', 0, 1, 1)",
            "INSERT INTO reactions (message_id, user_id, key, seq, created_at) \
             VALUES (1, 1, '+1', 2, 0)",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect(statement);
        }
        super::MIGRATOR.run(&pool).await.expect("0007");
        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .expect(sql)
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM messages").await, 2);
        assert_eq!(count("SELECT COUNT(*) FROM reactions").await, 1, "kept");
        assert_eq!(
            count("SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'rebuilt'").await,
            1
        );
        assert_eq!(count("SELECT owner_id FROM rooms WHERE id = 1").await, 1);
        assert_eq!(count("PRAGMA foreign_keys").await, 1, "back on");
        sqlx::query(
            "INSERT INTO messages (room_id, seq, sender_id, body, kind, created_at, msg_no) \
             VALUES (1, 3, 1, '', 'banned', 0, 1)",
        )
        .execute(&pool)
        .await
        .expect("a new kind needs no new CHECK");
        let fk_target: String = sqlx::query_scalar(
            "SELECT \"table\" FROM pragma_foreign_key_list('reactions') WHERE \"from\" = 'message_id'",
        )
        .fetch_one(&pool)
        .await
        .expect("fk");
        assert_eq!(fk_target, "messages");
        // The rebuilt table's triggers index new messages and drop deleted ones.
        sqlx::query(
            "INSERT INTO messages (room_id, seq, sender_id, body, created_at, msg_no) \
             VALUES (1, 4, 1, 'fresh words', 0, 2)",
        )
        .execute(&pool)
        .await
        .expect("insert");
        assert_eq!(
            count("SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'fresh'").await,
            1
        );
        sqlx::query("DELETE FROM messages WHERE id = 1")
            .execute(&pool)
            .await
            .expect("delete");
        assert_eq!(
            count("SELECT COUNT(*) FROM reactions").await,
            0,
            "the cascade holds"
        );
    }

    /// 0008 rebuilds `users` (to make the email rule a partial index): a
    /// database made by 0001-0007 keeps every user with their id, admin
    /// flag and token version, every table referring to users still does,
    /// the id sequence goes on, and emails may then be empty.
    #[tokio::test]
    async fn the_users_rebuild_keeps_users_and_their_references() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("pool");
        super::MIGRATOR.run_to(7, &pool).await.expect("up to 0007");
        for statement in [
            "INSERT INTO users (id, username, email, display_name, password_hash, created_at, \
             is_admin, token_version) VALUES (7, 'ann', 'ann@x', 'Ann', 'h', 0, 1, 3)",
            "INSERT INTO rooms (id, name, kind, creator_id, created_at, last_seq, msg_count, \
             last_message_seq, owner_id) VALUES (1, 'lobby', 'public', 7, 0, 1, 1, 1, 7)",
            "INSERT INTO room_members (room_id, user_id, state, read_seq, read_no, position) \
             VALUES (1, 7, 'member', 1, 1, 1)",
            "INSERT INTO messages (room_id, seq, sender_id, body, created_at, msg_no) \
             VALUES (1, 1, 7, 'kept', 0, 1)",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect(statement);
        }
        super::MIGRATOR.run(&pool).await.expect("0008");
        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .expect(sql)
            }
        };
        assert_eq!(
            count("SELECT is_admin * 10 + token_version FROM users WHERE id = 7").await,
            13
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM messages WHERE sender_id = 7").await,
            1
        );
        assert_eq!(count("PRAGMA foreign_keys").await, 1, "back on");
        let fk_target: String = sqlx::query_scalar(
            "SELECT \"table\" FROM pragma_foreign_key_list('room_members') WHERE \"from\" = 'user_id'",
        )
        .fetch_one(&pool)
        .await
        .expect("fk");
        assert_eq!(fk_target, "users");
        for statement in [
            "INSERT INTO users (username, email, display_name, password_hash, created_at) \
             VALUES ('bob', '', 'Bob', '', 0)",
            "INSERT INTO users (username, email, display_name, password_hash, created_at) \
             VALUES ('cat', '', 'Cat', '', 0)",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect("two users without an email");
        }
        assert_eq!(
            count("SELECT MIN(id) FROM users WHERE username IN ('bob', 'cat')").await,
            8,
            "ids go on after the old ones"
        );
        let taken = sqlx::query(
            "INSERT INTO users (username, email, display_name, password_hash, created_at) \
             VALUES ('dan', 'ann@x', 'Dan', '', 0)",
        )
        .execute(&pool)
        .await;
        assert!(taken.is_err(), "a non-empty email is still unique");
        // Deleting a user still cascades into their memberships.
        sqlx::query("DELETE FROM messages WHERE sender_id = 7")
            .execute(&pool)
            .await
            .expect("messages");
        sqlx::query("UPDATE rooms SET owner_id = NULL, creator_id = 8")
            .execute(&pool)
            .await
            .expect("rooms");
        sqlx::query("DELETE FROM users WHERE id = 7")
            .execute(&pool)
            .await
            .expect("delete");
        assert_eq!(
            count("SELECT COUNT(*) FROM room_members").await,
            0,
            "cascade"
        );
    }
}
