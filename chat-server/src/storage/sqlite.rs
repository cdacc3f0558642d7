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
//! goes through a pool of exactly one connection, so writers queue in the
//! pool, in order; reads use a separate pool of read-only connections. The
//! busy timeout is only for another process sharing the file.
//!
//! `sqlite://:memory:` works too, for throwaway runs: a private in-memory
//! database on a single connection that serves reads and writes and is
//! never closed, since the database lives only as long as a connection to
//! it does.
//!
//! Concurrent appends are group-committed (`super::group_commit`): the
//! appends queued while one write transaction runs share the next one
//! (`sqlite/batch.rs`), so they pay for taking the write lock and writing a
//! commit record once.
//!
//! The DML lives in [`super::sql`], shared with the other SQL backends.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::room::RoomType;
use chat_core::{RoomId, Seq, Timestamp, UserId};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::group_commit::GroupCommit;
use super::sql::{
    self, Columns, member_state, person_from, prefixed_user_from, read_mark_from, room_from,
    state_text, token_from, user_from, user_room_from,
};
use super::{
    Appended, CommitListener, Conversation, HistoryPage, HistoryQuery, MemberState, NewMessage,
    NewRoom, NewUser, ReadMark, RefreshTokenRecord, RoomKey, RoomPerson, RoomRecord, Storage,
    StorageError, StorageOptions, TokenUse, UserRecord, UserRoom,
};

mod batch;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite backend: one write connection, a pool of read connections.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    write: SqlitePool,
    read: SqlitePool,
    appends: GroupCommit,
}

impl SqliteStorage {
    /// Opens (creating it if needed) and migrates the database at
    /// `sqlite://PATH`, or a fresh in-memory one for `sqlite://:memory:`.
    /// The read pool holds up to `options.max_connections` connections.
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(map_err)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);

        // One connection that is never retired: for `:memory:` it *is* the
        // database, and for a file it saves reopening the writer.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);

        if is_in_memory(url) {
            let pool = writer.connect_with(base).await.map_err(map_err)?;
            MIGRATOR.run(&pool).await.map_err(migrate_err)?;
            return Ok(Self {
                appends: {
                    let write = pool.clone();
                    GroupCommit::start(move || batch::SqliteAppender { write })
                },
                write: pool.clone(),
                read: pool,
            });
        }

        let write = writer
            .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&write).await.map_err(migrate_err)?;
        // Opened after the writer has switched the file to WAL (a setting
        // stored in the file), and read-only so that no write can slip
        // past the single writer.
        let read = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(base.read_only(true))
            .await
            .map_err(map_err)?;
        let appends = {
            // sqlx runs each SQLite connection on a thread of its own, so
            // the committer's thread can share the write pool.
            let write = write.clone();
            GroupCommit::start(move || batch::SqliteAppender { write })
        };
        Ok(Self {
            write,
            read,
            appends,
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StorageError> {
        begin_write(&self.write).await
    }

    async fn room_where(
        &self,
        query: &'static str,
        key: impl for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Send,
    ) -> Result<Option<RoomRecord>, StorageError> {
        let row = sqlx::query(query)
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(map_err)?;
        row.as_ref().map(room_from).transpose()
    }

    async fn user_where(
        &self,
        query: &'static str,
        key: impl for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Send,
    ) -> Result<Option<UserRecord>, StorageError> {
        let row = sqlx::query(query)
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(map_err)?;
        row.as_ref().map(user_from).transpose()
    }
}

fn is_in_memory(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.starts_with(":memory:") || rest.contains("mode=memory")
}

/// Maps sqlx's errors onto the storage contract.
/// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front: a
/// deferred transaction that reads before writing could otherwise find the
/// lock taken by another process when it upgrades, and fail with
/// `SQLITE_BUSY` without waiting.
async fn begin_write(write: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StorageError> {
    write.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
}

fn map_err(error: sqlx::Error) -> StorageError {
    match error {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation()
                && let Some(conflict) = sql::conflict_of(&*db)
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

#[async_trait]
impl Storage for SqliteStorage {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, StorageError> {
        let email = user.email.to_lowercase();
        let id: i64 = sqlx::query_scalar(sql::INSERT_USER)
            .bind(&user.username)
            .bind(&email)
            .bind(&user.display_name)
            .bind(&user.password_hash)
            .bind(user.created_at.unix_micros())
            .fetch_one(&self.write)
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
            .fetch_all(&self.read)
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
            let text = sql::users_by_ids(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(text));
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&self.read).await.map_err(map_err)?;
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
            .execute(&self.write)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn use_refresh_token(&self, id: &str) -> Result<TokenUse, StorageError> {
        let spent = sqlx::query(sql::SPEND_REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(map_err)?;
        if let Some(row) = spent {
            return Ok(TokenUse::Live(token_from(id, &row)?));
        }
        // Not live: spent before, or never there. A token is never unspent,
        // so reading after the failed update cannot see it live again.
        let existing = sqlx::query(sql::REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&self.write)
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
            .execute(&self.write)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StorageError> {
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
        let done = sqlx::query(sql::DELETE_ROOM)
            .bind(id.get())
            .execute(&self.write)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn room_people(&self, room: RoomId) -> Result<Vec<RoomPerson>, StorageError> {
        let rows = sqlx::query(sql::ROOM_PEOPLE)
            .bind(room.get())
            .fetch_all(&self.read)
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
            .fetch_optional(&self.read)
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
            .fetch_optional(&self.read)
            .await
            .map_err(map_err)?;
        row.as_ref().map(sql::room_for_from).transpose()
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(sql::JOIN_ROOM)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if changed.is_some() {
            tx.commit().await.map_err(map_err)?;
            return Ok(true);
        }
        // Nothing changed: already a member, or no such room.
        let exists = sqlx::query(sql::ROOM_EXISTS)
            .bind(room.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.rollback().await.map_err(map_err)?;
        if exists.is_some() {
            Ok(false)
        } else {
            Err(StorageError::NotFound)
        }
    }

    async fn invite(&self, room: RoomId, users: &[UserId]) -> Result<(), StorageError> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query(sql::ROOM_EXISTS)
            .bind(room.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
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
            .execute(&self.write)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_rooms(&self, user: UserId) -> Result<Vec<UserRoom>, StorageError> {
        let rows = sqlx::query(sql::USER_ROOMS)
            .bind(user.get())
            .fetch_all(&self.read)
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
            .fetch_optional(&self.read)
            .await
            .map_err(map_err)?;
        row.as_ref().map(room_from).transpose()
    }

    async fn user_conversations(&self, user: UserId) -> Result<Vec<Conversation>, StorageError> {
        let rows = sqlx::query(sql::USER_CONVERSATIONS)
            .bind(user.get())
            .fetch_all(&self.read)
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
                    .fetch_all(&self.read)
                    .await
            }
            None => {
                sqlx::query(sql::HISTORY_BEFORE)
                    .bind(room.get())
                    .bind(before)
                    .bind(fetch)
                    .fetch_all(&self.read)
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
        let row = sqlx::query(sql::MEMBER_READ_MARK)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StorageError::NotFound)?;
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
            .fetch_all(&self.read)
            .await
            .map_err(map_err)?;
        rows.iter().map(read_mark_from).collect()
    }

    async fn unread_total(&self, user: UserId) -> Result<u64, StorageError> {
        let total: i64 = sqlx::query_scalar(sql::UNREAD_TOTAL)
            .bind(user.get())
            .fetch_one(&self.read)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        // Both pools: a healthy reader says nothing about the writer.
        for pool in [&self.write, &self.read] {
            sqlx::query(sql::PING)
                .execute(pool)
                .await
                .map_err(map_err)?;
        }
        Ok(())
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

    crate::storage_conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let store = SqliteStorage::connect(&url, &StorageOptions::default())
            .await
            .expect("connect");
        TestStore::with_guard(store, dir)
    });

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
}
