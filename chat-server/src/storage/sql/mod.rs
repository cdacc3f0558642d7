//! The one SQL backend: the [`Storage`] glue for SQLite and PostgreSQL,
//! written once against a [`Dialect`]. What differs between the two is only
//! SQL text, locking and error mapping, which each dialect supplies
//! (`sqlite.rs`, `postgres.rs`), with its own connecting, migrations and
//! batch append statement.
//!
//! - `statements`: the DML both run unchanged.
//! - `rows`: rows into records, for either backend's row type.
//! - `append`: the append rule for SQL (one message in its transaction).
//! - `dialect`: the trait.
//!
//! A storage has a read pool and a write pool. On PostgreSQL they are the
//! same pool; on SQLite the write pool is one connection, so that writers
//! queue in it instead of racing for the database's single write lock.
//! Appends go through group commit (`group_commit.rs`) on the committer's
//! own thread and connection.

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::room::RoomType;
use chat_core::{AttachmentId, MessageId, RoomId, Seq, Timestamp, UserId};
use sqlx::{AssertSqlSafe, Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::group_commit::GroupCommit;
use super::{
    ApiKeyRecord, Appended, AttachmentRecord, BanRecord, Changed, CommitListener, Conflict,
    Conversation, DeviceRecord, ExternalUser, HistoryPage, HistoryQuery, MemberState, MemberUpdate,
    MessageChange, NewAttachment, NewMessage, NewReport, NewRoom, NewUser, OutboxBacklog,
    OutboxCursor, PublicRoom, ReactionCount, ReadMark, RefreshTokenRecord, ReportRecord,
    ReportStatus, RoomChange, RoomKey, RoomPerson, RoomProfile, RoomRecord, SearchPage,
    SearchRequest, Storage, StorageError, StoredMember, StoredMessage, StoredRoomUpdate,
    TimelinePage, TokenUse, UserRecord, UserRoom,
};

pub(crate) mod append;
pub(crate) mod change;
mod dialect;
pub(crate) mod reach;
pub(crate) mod rows;
pub(crate) mod statements;
pub(crate) mod turns;

pub use dialect::{Ahead, Dialect};
use reach::Reach;
use rows::{
    Columns, attachment_from, member_state, person_from, prefixed_user_from, read_mark_from,
    room_from, state_text, token_from, user_from, user_room_from,
};
use turns::{WriteTurns, WriteTx, Writer};

/// A SQL database behind the [`Storage`] trait.
#[derive(Debug, Clone)]
pub struct SqlStorage<D: Dialect> {
    /// Where reads go.
    pub(crate) read: Pool<D::Db>,
    /// Where writes go: SQLite's single writer, PostgreSQL's one pool.
    pub(crate) write: Pool<D::Db>,
    /// Appends go through group commit (see `group_commit.rs`).
    pub(crate) appends: GroupCommit,
    /// Where writers wait for their turn, on SQLite (see `turns.rs`).
    pub(crate) turns: WriteTurns,
    /// Whether the database answers (see `reach.rs`): while it does not,
    /// every call fails at once instead of waiting out the pool.
    pub(crate) reach: std::sync::Arc<Reach>,
}

impl<D: Dialect> SqlStorage<D> {
    /// A write transaction, in its turn.
    async fn begin(&self) -> Result<WriteTx<D>, StorageError> {
        self.reach.check()?;
        self.turns.begin::<D>(&self.write).await
    }

    /// The read pool, unless the database is known to be unreachable.
    fn reader(&self) -> Result<&Pool<D::Db>, StorageError> {
        self.reach.check()?;
        Ok(&self.read)
    }

    /// A connection for one write statement, in its turn.
    async fn writer(&self) -> Result<Writer<D>, StorageError> {
        self.reach.check()?;
        self.turns.writer::<D>(&self.write).await
    }
}

/// The record a one-key query finds, if any, decoded by `decode`.
async fn one_where<D: Dialect, T>(
    pool: &Pool<D::Db>,
    query: &'static str,
    key: impl for<'q> Encode<'q, D::Db> + Type<D::Db> + Send,
    decode: fn(&<D::Db as Database>::Row) -> Result<T, StorageError>,
) -> Result<Option<T>, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
{
    let row = sqlx::query(query)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(D::map_err)?;
    row.as_ref().map(decode).transpose()
}

/// The `limit + 1` rows of a page (see [`HistoryQuery`]) of the events of
/// `key` (a room, or a thread's root): `after` runs the first statement
/// (upward from `after`), else the second (downward from `before`).
async fn page_rows<D: Dialect>(
    pool: &Pool<D::Db>,
    (upward, downward): (&'static str, &'static str),
    key: i64,
    query: &HistoryQuery,
) -> Result<Vec<<D::Db as Database>::Row>, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
{
    let fetch = i64::from(query.limit) + 1;
    let before = query.before.unwrap_or(Seq::MAX);
    match query.after {
        Some(after) => {
            sqlx::query(upward)
                .bind(key)
                .bind(after)
                .bind(before)
                .bind(fetch)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query(downward)
                .bind(key)
                .bind(before)
                .bind(fetch)
                .fetch_all(pool)
                .await
        }
    }
    .map_err(D::map_err)
}

#[async_trait]
impl<D: Dialect> Storage for SqlStorage<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'r> (i64,): FromRow<'r, <D::Db as Database>::Row>,
    for<'r> (String,): FromRow<'r, <D::Db as Database>::Row>,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q String: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Type<D::Db>,
{
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, StorageError> {
        let email = user.email.to_lowercase();
        let id: i64 = sqlx::query_scalar(statements::INSERT_USER)
            .bind(&user.username)
            .bind(&email)
            .bind(&user.display_name)
            .bind(&user.password_hash)
            .bind(user.created_at.unix_micros())
            .fetch_one(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        Ok(UserRecord {
            id: UserId(id),
            username: user.username,
            email,
            display_name: user.display_name,
            password_hash: user.password_hash,
            created_at: user.created_at,
            is_admin: false,
            deactivated_at: None,
            token_version: 0,
            external_id: None,
            is_bot: false,
        })
    }

    async fn user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<UserRecord>, StorageError> {
        one_where::<D, _>(
            self.reader()?,
            statements::USER_BY_EXTERNAL_ID,
            external_id.to_owned(),
            user_from,
        )
        .await
    }

    async fn provision_user(&self, user: &ExternalUser) -> Result<UserRecord, StorageError> {
        let existing = one_where::<D, _>(
            self.reader()?,
            statements::USER_BY_EXTERNAL_ID,
            user.external_id.clone(),
            user_from,
        )
        .await?;
        if let Some(record) = existing {
            return match &user.display_name {
                Some(name) if *name != record.display_name => {
                    let row = sqlx::query(statements::RENAME_EXTERNAL_USER)
                        .bind(&user.external_id)
                        .bind(name)
                        .fetch_one(&mut *self.writer().await?)
                        .await
                        .map_err(D::map_err)?;
                    user_from(&row)
                }
                _ => Ok(record),
            };
        }
        let email = user.email.to_lowercase();
        let display_name = user.display_name.as_ref().unwrap_or(&user.username);
        let inserted: Option<i64> = sqlx::query_scalar(statements::INSERT_EXTERNAL_USER)
            .bind(&user.username)
            .bind(&email)
            .bind(display_name)
            .bind(user.created_at.unix_micros())
            .bind(&user.external_id)
            .bind(i64::from(user.bot))
            .fetch_optional(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        match inserted {
            Some(id) => Ok(UserRecord {
                id: UserId(id),
                username: user.username.clone(),
                email,
                display_name: display_name.clone(),
                password_hash: String::new(),
                created_at: user.created_at,
                is_admin: false,
                deactivated_at: None,
                token_version: 0,
                external_id: Some(user.external_id.clone()),
                is_bot: user.bot,
            }),
            // Another instance provisioned them in between.
            None => one_where::<D, _>(
                self.reader()?,
                statements::USER_BY_EXTERNAL_ID,
                user.external_id.clone(),
                user_from,
            )
            .await?
            .ok_or(StorageError::NotFound),
        }
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StorageError> {
        one_where::<D, _>(self.reader()?, statements::USER_BY_ID, id.get(), user_from).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StorageError> {
        one_where::<D, _>(
            self.reader()?,
            statements::USER_BY_USERNAME,
            username.to_owned(),
            user_from,
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StorageError> {
        one_where::<D, _>(
            self.reader()?,
            statements::USER_BY_EMAIL,
            email.to_lowercase(),
            user_from,
        )
        .await
    }

    async fn users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StorageError> {
        let rows = sqlx::query(statements::USERS_AFTER)
            .bind(after.map_or(i64::MIN, UserId::get))
            .bind(i64::from(limit))
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(user_from).collect()
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StorageError> {
        let mut ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut users = Vec::with_capacity(ids.len());
        // Sorted chunks come back in order when each is read in id order.
        for chunk in ids.chunks(statements::IDS_PER_QUERY) {
            let mut query = sqlx::query(AssertSqlSafe(statements::users_by_ids(chunk.len())));
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(self.reader()?).await.map_err(D::map_err)?;
            for row in &rows {
                users.push(user_from(row)?);
            }
        }
        Ok(users)
    }

    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StorageError> {
        sqlx::query(statements::INSERT_REFRESH_TOKEN)
            .bind(&token.id)
            .bind(token.user.get())
            .bind(&token.family)
            .bind(token.expires_at.unix_micros())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn use_refresh_token(&self, id: &str) -> Result<TokenUse, StorageError> {
        // One statement: of two concurrent spends, the second waits for the
        // first's row lock (PostgreSQL) or the write lock (SQLite), re-checks
        // `NOT spent` on the committed row and matches nothing.
        let spent = sqlx::query(statements::SPEND_REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        if let Some(row) = spent {
            return Ok(TokenUse::Live(token_from(id, &row)?));
        }
        // Not live: spent before, or never there. A token is never unspent,
        // so reading after the failed update cannot see it live again.
        let existing = sqlx::query(statements::REFRESH_TOKEN)
            .bind(id)
            .fetch_optional(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        Ok(match existing {
            Some(row) => TokenUse::Spent(token_from(id, &row)?),
            None => TokenUse::Unknown,
        })
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<(), StorageError> {
        sqlx::query(statements::REVOKE_REFRESH_FAMILY)
            .bind(family)
            .execute(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StorageError> {
        // A concurrent insert of the same name makes this one wait for it
        // to commit and then do nothing; the read, a new statement under
        // read committed (or after SQLite's single writer), sees the
        // winner's value.
        let mut tx = self.begin().await?;
        sqlx::query(statements::INSERT_SERVER_SECRET)
            .bind(name)
            .bind(candidate)
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        let value: String = sqlx::query_scalar(statements::SERVER_SECRET)
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(D::map_err)?;
        tx.commit().await?;
        Ok(value)
    }

    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StorageError> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(statements::INSERT_ROOM)
            .bind(&room.name)
            .bind(room.kind.as_str())
            .bind(room.creator.get())
            .bind(room.created_at.unix_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(D::map_err)?;

        let mut people = vec![(room.creator, MemberState::Member)];
        for &user in &room.invited {
            if !people.iter().any(|(u, _)| *u == user) {
                people.push((user, MemberState::Invited));
            }
        }
        for (position, (user, state)) in (1_i64..).zip(people) {
            sqlx::query(statements::INSERT_MEMBER)
                .bind(id)
                .bind(user.get())
                .bind(state_text(state))
                .bind(0_i64)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        tx.commit().await?;
        Ok(RoomRecord {
            id: RoomId(id),
            name: room.name,
            kind: room.kind,
            creator: room.creator,
            owner: room.creator,
            profile: RoomProfile::default(),
            created_at: room.created_at,
            last_seq: 0,
            last_message_seq: 0,
        })
    }

    async fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StorageError> {
        one_where::<D, _>(self.reader()?, statements::ROOM_BY_ID, id.get(), room_from).await
    }

    async fn room_by_name(&self, name: &str) -> Result<Option<RoomRecord>, StorageError> {
        one_where::<D, _>(
            self.reader()?,
            statements::ROOM_BY_NAME,
            name.to_owned(),
            room_from,
        )
        .await
    }

    async fn delete_room(&self, id: RoomId) -> Result<bool, StorageError> {
        // Takes the room's row lock (or the write lock) like an append, so
        // it waits for appends in flight, and appends after it find no room
        // (`NotFound`). Its attachments are doomed after the room is gone,
        // in the same transaction: an append that linked one while the
        // deletion waited for it has committed by then, and is seen.
        let mut tx = self.begin().await?;
        let done = sqlx::query(statements::DELETE_ROOM)
            .bind(id.get())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        if D::rows_affected(&done) == 0 {
            return Ok(false);
        }
        sqlx::query(statements::DOOM_ROOM_ATTACHMENTS)
            .bind(id.get())
            .bind(Timestamp::now().unix_micros())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn room_people(&self, room: RoomId) -> Result<Vec<RoomPerson>, StorageError> {
        let rows = sqlx::query(statements::ROOM_PEOPLE)
            .bind(room.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(person_from).collect()
    }

    async fn membership(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<Option<MemberState>, StorageError> {
        let state: Option<String> = sqlx::query_scalar(statements::MEMBERSHIP)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        state.as_deref().map(member_state).transpose()
    }

    async fn room_for(
        &self,
        room: RoomKey<'_>,
        user: UserId,
    ) -> Result<Option<(RoomRecord, Option<MemberState>)>, StorageError> {
        let query = match room {
            RoomKey::Id(id) => sqlx::query(statements::ROOM_FOR_BY_ID).bind(id.get()),
            RoomKey::Name(name) => sqlx::query(statements::ROOM_FOR_BY_NAME).bind(name.to_owned()),
        };
        let row = query
            .bind(user.get())
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        row.as_ref().map(rows::room_for_from).transpose()
    }

    async fn update_member(
        &self,
        update: MemberUpdate,
    ) -> Result<Option<StoredMember>, StorageError> {
        // Through the committer: the event takes a seq, and this instance
        // publishes in commit order (`sql/append.rs`).
        self.appends.change_membership(update).await
    }

    async fn update_room(
        &self,
        change: RoomChange,
    ) -> Result<Option<StoredRoomUpdate>, StorageError> {
        self.appends.change_room(change).await
    }

    async fn public_rooms(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PublicRoom>, StorageError> {
        let pattern = format!("{}%", like_escaped(&prefix.unwrap_or("").to_lowercase()));
        let rows = sqlx::query(statements::PUBLIC_ROOMS)
            .bind(pattern)
            .bind(after.unwrap_or("").to_owned())
            .bind(i64::from(limit))
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(rows::public_room_from).collect()
    }

    async fn outbox_start(&self, endpoint: &str, at: Timestamp) -> Result<bool, StorageError> {
        let mut tx = self.write.begin().await.map_err(D::map_err)?;
        let done = sqlx::query(statements::OUTBOX_SINK)
            .bind(endpoint)
            .bind(at.unix_micros())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        let new = D::rows_affected(&done) > 0;
        if new {
            sqlx::query(statements::OUTBOX_CURSORS_NOW)
                .bind(endpoint)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        tx.commit().await.map_err(D::map_err)?;
        Ok(new)
    }

    async fn outbox_backlog(
        &self,
        endpoint: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxBacklog>, StorageError> {
        let rows = sqlx::query(statements::OUTBOX_BACKLOG)
            .bind(endpoint)
            .bind(now.unix_micros())
            .bind(i64::from(limit))
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter()
            .map(|row| {
                Ok(OutboxBacklog {
                    room: RoomId(row.int("room_id")?),
                    last_seq: row.int("last_seq")?,
                    delivered: row.int("delivered_seq")?,
                })
            })
            .collect()
    }

    async fn outbox_claim(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<OutboxCursor>, StorageError> {
        let row = sqlx::query(statements::OUTBOX_CLAIM)
            .bind(endpoint)
            .bind(room.get())
            .bind(owner)
            .bind(until.unix_micros())
            .bind(now.unix_micros())
            .fetch_optional(&self.write)
            .await
            .map_err(D::map_err)?;
        row.map(|row| {
            Ok(OutboxCursor {
                delivered: row.int("delivered_seq")?,
                attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
                next_attempt_at: row
                    .opt_int("next_attempt_at")?
                    .map(Timestamp::from_unix_micros),
            })
        })
        .transpose()
    }

    async fn outbox_delivered(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        seq: Seq,
    ) -> Result<(), StorageError> {
        sqlx::query(statements::OUTBOX_ADVANCE)
            .bind(endpoint)
            .bind(room.get())
            .bind(owner)
            .bind(seq)
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn outbox_failed(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
        attempts: u32,
        next: Timestamp,
    ) -> Result<(), StorageError> {
        sqlx::query(statements::OUTBOX_FAILURE)
            .bind(endpoint)
            .bind(room.get())
            .bind(owner)
            .bind(i64::from(attempts))
            .bind(next.unix_micros())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn outbox_release(
        &self,
        endpoint: &str,
        room: RoomId,
        owner: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(statements::OUTBOX_RELEASE)
            .bind(endpoint)
            .bind(room.get())
            .bind(owner)
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn register_device(
        &self,
        user: UserId,
        platform: &str,
        token: &str,
        app_id: &str,
        at: Timestamp,
    ) -> Result<DeviceRecord, StorageError> {
        let id: i64 = sqlx::query_scalar(statements::REGISTER_DEVICE)
            .bind(user.get())
            .bind(platform)
            .bind(token)
            .bind(app_id)
            .bind(at.unix_micros())
            .fetch_one(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(DeviceRecord {
            id,
            user,
            platform: platform.to_owned(),
            token: token.to_owned(),
            app_id: app_id.to_owned(),
            created_at: at,
        })
    }

    async fn devices(&self, users: &[UserId]) -> Result<Vec<DeviceRecord>, StorageError> {
        let mut devices = Vec::new();
        for chunk in users.chunks(statements::IDS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "{}{}) ORDER BY id",
                statements::DEVICES_PREFIX,
                placeholders.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for user in chunk {
                query = query.bind(user.get());
            }
            let rows = query.fetch_all(self.reader()?).await.map_err(D::map_err)?;
            for row in &rows {
                devices.push(DeviceRecord {
                    id: row.int("id")?,
                    user: UserId(row.int("user_id")?),
                    platform: row.text("platform")?,
                    token: row.text("token")?,
                    app_id: row.text("app_id")?,
                    created_at: Timestamp::from_unix_micros(row.int("created_at")?),
                });
            }
        }
        devices.sort_by_key(|d| d.id);
        Ok(devices)
    }

    async fn delete_device(&self, user: UserId, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::DELETE_DEVICE)
            .bind(id)
            .bind(user.get())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn delete_device_token(&self, app_id: &str, token: &str) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::DELETE_DEVICE_TOKEN)
            .bind(app_id)
            .bind(token)
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn create_api_key(
        &self,
        name: &str,
        key_hash: &str,
        created_at: Timestamp,
    ) -> Result<ApiKeyRecord, StorageError> {
        let id: i64 = sqlx::query_scalar(statements::INSERT_API_KEY)
            .bind(name)
            .bind(key_hash)
            .bind(created_at.unix_micros())
            .fetch_one(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(ApiKeyRecord {
            id,
            name: name.to_owned(),
            created_at,
            last_used_at: None,
            revoked_at: None,
        })
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StorageError> {
        let rows = sqlx::query(statements::API_KEYS)
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(rows::api_key_from).collect()
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        one_where::<D, _>(
            self.reader()?,
            statements::API_KEY_BY_HASH,
            key_hash.to_owned(),
            rows::api_key_from,
        )
        .await
    }

    async fn revoke_api_key(&self, name: &str, at: Timestamp) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::REVOKE_API_KEY)
            .bind(name)
            .bind(at.unix_micros())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn touch_api_key(&self, id: i64, at: Timestamp) -> Result<(), StorageError> {
        sqlx::query(statements::TOUCH_API_KEY)
            .bind(id)
            .bind(at.unix_micros())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(())
    }

    async fn set_admin(&self, user: UserId, admin: bool) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::SET_ADMIN)
            .bind(user.get())
            .bind(i64::from(admin))
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn set_deactivated(
        &self,
        user: UserId,
        at: Option<Timestamp>,
    ) -> Result<Option<i64>, StorageError> {
        let mut tx = self.begin().await?;
        let version: Option<i64> = sqlx::query_scalar(statements::SET_DEACTIVATED)
            .bind(user.get())
            .bind(at.map(|t| t.unix_micros()))
            .bind(i64::from(at.is_some()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::map_err)?;
        if at.is_some() {
            sqlx::query(statements::SPEND_USER_TOKENS)
                .bind(user.get())
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        tx.commit().await?;
        Ok(version)
    }

    async fn revoke_sessions(&self, user: UserId) -> Result<Option<i64>, StorageError> {
        let mut tx = self.begin().await?;
        let version: Option<i64> = sqlx::query_scalar(statements::REVOKE_SESSIONS)
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::map_err)?;
        sqlx::query(statements::SPEND_USER_TOKENS)
            .bind(user.get())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        tx.commit().await?;
        Ok(version)
    }

    async fn create_report(&self, report: NewReport) -> Result<i64, StorageError> {
        sqlx::query_scalar(statements::INSERT_REPORT)
            .bind(report.reporter.get())
            .bind(report.user.get())
            .bind(report.message.map(MessageId::get))
            .bind(report.room.map(RoomId::get))
            .bind(report.reason)
            .bind(report.message_body)
            .bind(report.created_at.unix_micros())
            .fetch_one(&self.write)
            .await
            .map_err(D::map_err)
    }

    async fn report(&self, id: i64) -> Result<Option<ReportRecord>, StorageError> {
        one_where::<D, _>(self.reader()?, statements::REPORT, id, rows::report_from).await
    }

    async fn reports(
        &self,
        status: ReportStatus,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ReportRecord>, StorageError> {
        let status = match status {
            ReportStatus::Open => 0_i64,
            ReportStatus::Resolved => 1,
            ReportStatus::All => 2,
        };
        let rows = sqlx::query(statements::REPORTS)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .bind(status)
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(rows::report_from).collect()
    }

    async fn resolve_report(
        &self,
        id: i64,
        by: UserId,
        resolution: &str,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::RESOLVE_REPORT)
            .bind(id)
            .bind(at.unix_micros())
            .bind(by.get())
            .bind(resolution.to_owned())
            .fetch_optional(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(done.is_some())
    }

    async fn block_user(
        &self,
        blocker: UserId,
        blocked: UserId,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::BLOCK_USER)
            .bind(blocker.get())
            .bind(blocked.get())
            .bind(at.unix_micros())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn unblock_user(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::UNBLOCK_USER)
            .bind(blocker.get())
            .bind(blocked.get())
            .execute(&self.write)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> Result<bool, StorageError> {
        let found = sqlx::query(statements::IS_BLOCKED)
            .bind(blocker.get())
            .bind(blocked.get())
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        Ok(found.is_some())
    }

    async fn blocked_users(
        &self,
        blocker: UserId,
    ) -> Result<Vec<(UserRecord, Timestamp)>, StorageError> {
        let rows = sqlx::query(statements::BLOCKED_USERS)
            .bind(blocker.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter()
            .map(|row| {
                Ok((
                    user_from(row)?,
                    Timestamp::from_unix_micros(row.int("blocked_at")?),
                ))
            })
            .collect()
    }

    async fn bans(&self, room: RoomId, now: Timestamp) -> Result<Vec<BanRecord>, StorageError> {
        let rows = sqlx::query(statements::BANS)
            .bind(room.get())
            .bind(now.unix_micros())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(rows::ban_from).collect()
    }

    async fn change_message(&self, mut change: MessageChange) -> Result<Changed, StorageError> {
        // Through the committer, like a membership change (`sql/change.rs`),
        // judged first where the committer can use it, and with its room
        // named: the committer runs changes of different rooms side by
        // side, and one of unknown room alone.
        let judged = match D::judge_ahead(self.reader()?, &change).await? {
            Ahead::Missing => return Err(StorageError::NotFound),
            Ahead::Read { room, judgement } => {
                // The room read wins: the committer must hold the room the
                // write goes to.
                change.room = Some(room);
                judgement
            }
            Ahead::Skipped => None,
        };
        if change.room.is_none() {
            let room = one_where::<D, _>(
                self.reader()?,
                statements::MESSAGE_ROOM,
                change.message.get(),
                |row| row.int("room_id"),
            )
            .await?
            .ok_or(StorageError::NotFound)?;
            change.room = Some(RoomId(room));
        }
        self.appends.change_message(change, judged).await
    }

    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, StorageError> {
        let rows = sqlx::query(D::SEARCH)
            .bind(D::search_text(&request.terms))
            .bind(request.viewer.get())
            .bind(request.before.map_or(i64::MAX, MessageId::get))
            .bind(request.room.map_or(0, RoomId::get))
            .bind(i64::from(request.limit) + 1)
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let hits = rows
            .iter()
            .take(limit)
            .map(|row| Ok((rows::message_from(row)?, row.text("room_name")?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(SearchPage {
            hits,
            has_more: rows.len() > limit,
        })
    }

    async fn pins(&self, room: RoomId) -> Result<Vec<StoredMessage>, StorageError> {
        let rows = sqlx::query(statements::PINNED)
            .bind(room.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(rows::message_from).collect()
    }

    async fn reactions(
        &self,
        messages: &[MessageId],
        viewer: UserId,
    ) -> Result<Vec<(MessageId, Vec<ReactionCount>)>, StorageError> {
        let mut ids: Vec<i64> = messages.iter().map(|id| id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found: Vec<(MessageId, Vec<ReactionCount>)> = Vec::new();
        for chunk in ids.chunks(statements::IDS_PER_QUERY) {
            let mut query = sqlx::query(AssertSqlSafe(statements::reactions_of(chunk.len())))
                .bind(viewer.get());
            for id in chunk {
                query = query.bind(*id);
            }
            // Rows come by message, each message's keys in order.
            for row in &query.fetch_all(self.reader()?).await.map_err(D::map_err)? {
                let message = MessageId(row.int("message_id")?);
                let count = rows::reaction_count_from(row)?;
                match found.last_mut() {
                    Some((last, counts)) if *last == message => counts.push(count),
                    _ => found.push((message, vec![count])),
                }
            }
        }
        Ok(found)
    }

    async fn user_rooms(&self, user: UserId) -> Result<Vec<UserRoom>, StorageError> {
        let rows = sqlx::query(statements::USER_ROOMS)
            .bind(user.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
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
        // See `Dialect::LOCK_DIRECT_PAIR`: creations of one pair take turns.
        sqlx::query(D::LOCK_DIRECT_PAIR)
            .bind(lo.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::map_err)?;
        let id: Option<i64> = sqlx::query_scalar(statements::INSERT_DIRECT_ROOM)
            .bind(&name)
            .bind(a.get())
            .bind(created_at.unix_micros())
            .bind(lo.get())
            .bind(hi.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::map_err)?;
        let Some(id) = id else {
            let row = sqlx::query(statements::DIRECT_ROOM_BY_PAIR)
                .bind(lo.get())
                .bind(hi.get())
                .fetch_one(&mut *tx)
                .await
                .map_err(D::map_err)?;
            tx.rollback().await?;
            return Ok((room_from(&row)?, false));
        };
        for (position, user) in (1_i64..).zip([a, b]) {
            sqlx::query(statements::INSERT_MEMBER)
                .bind(id)
                .bind(user.get())
                .bind(state_text(MemberState::Member))
                .bind(0_i64)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        tx.commit().await?;
        let room = RoomRecord {
            id: RoomId(id),
            name,
            kind: RoomType::Direct,
            creator: a,
            owner: a,
            profile: RoomProfile::default(),
            created_at,
            last_seq: 0,
            last_message_seq: 0,
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
        let row = sqlx::query(statements::DIRECT_ROOM_BY_PAIR)
            .bind(lo.get())
            .bind(hi.get())
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        row.as_ref().map(room_from).transpose()
    }

    async fn user_conversations(&self, user: UserId) -> Result<Vec<Conversation>, StorageError> {
        let rows = sqlx::query(statements::USER_CONVERSATIONS)
            .bind(user.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
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
        let bounds = (statements::HISTORY_AFTER, statements::HISTORY_BEFORE);
        let rows = page_rows::<D>(self.reader()?, bounds, room.get(), &query).await?;
        rows::history_page(&rows, &query)
    }

    async fn thread(
        &self,
        root: MessageId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError> {
        let bounds = (statements::THREAD_AFTER, statements::THREAD_BEFORE);
        let rows = page_rows::<D>(self.reader()?, bounds, root.get(), &query).await?;
        rows::history_page(&rows, &query)
    }

    async fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StorageError> {
        let row = sqlx::query(statements::MESSAGE_BY_ID)
            .bind(id.get())
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        match row {
            Some(row) if row.text("kind")? == "message" => rows::message_from(&row).map(Some),
            _ => Ok(None),
        }
    }

    async fn message_by_client_id(
        &self,
        sender: UserId,
        client_id: &str,
    ) -> Result<Option<StoredMessage>, StorageError> {
        let row = sqlx::query(statements::MESSAGE_BY_CLIENT_ID)
            .bind(sender.get())
            .bind(client_id)
            .fetch_optional(self.reader()?)
            .await
            .map_err(D::map_err)?;
        row.map(|row| rows::message_from(&row)).transpose()
    }

    async fn members_among(
        &self,
        room: RoomId,
        users: &[UserId],
    ) -> Result<Vec<UserId>, StorageError> {
        let mut found = Vec::new();
        for chunk in users.chunks(statements::IDS_PER_QUERY) {
            let mut query =
                sqlx::query(AssertSqlSafe(statements::members_among(chunk.len()))).bind(room.get());
            for user in chunk {
                query = query.bind(user.get());
            }
            for row in &query.fetch_all(self.reader()?).await.map_err(D::map_err)? {
                found.push(UserId(row.int("user_id")?));
            }
        }
        Ok(found)
    }

    async fn timeline(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<TimelinePage, StorageError> {
        let bounds = (statements::TIMELINE_AFTER, statements::TIMELINE_BEFORE);
        let rows = page_rows::<D>(self.reader()?, bounds, room.get(), &query).await?;
        rows::timeline_page(&rows, &query)
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        seq: Seq,
    ) -> Result<ReadMark, StorageError> {
        let mut tx = self.begin().await?;
        // Locks the member row where writers are concurrent: see
        // `Dialect::MEMBER_READ_MARK`.
        let Some(row) = sqlx::query(D::MEMBER_READ_MARK)
            .bind(room.get())
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::map_err)?
        else {
            tx.rollback().await?;
            return Err(StorageError::NotFound);
        };
        let previous: Seq = row.int("read_seq")?;
        let last_seq: Seq = row.int("last_seq")?;
        let target = seq.min(last_seq);
        if target <= previous {
            tx.rollback().await?;
            return Ok(ReadMark {
                previous,
                current: previous,
            });
        }
        sqlx::query(statements::ADVANCE_READ_MARK)
            .bind(room.get())
            .bind(user.get())
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
        tx.commit().await?;
        Ok(ReadMark {
            previous,
            current: target,
        })
    }

    async fn read_marks(&self, room: RoomId) -> Result<Vec<(UserId, Seq)>, StorageError> {
        let rows = sqlx::query(statements::READ_MARKS)
            .bind(room.get())
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(read_mark_from).collect()
    }

    async fn unread_total(&self, user: UserId) -> Result<u64, StorageError> {
        let total: i64 = sqlx::query_scalar(statements::UNREAD_TOTAL)
            .bind(user.get())
            .fetch_one(self.reader()?)
            .await
            .map_err(D::map_err)?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn create_attachment(
        &self,
        new: NewAttachment,
    ) -> Result<AttachmentRecord, StorageError> {
        let pixels = |n: Option<u32>| n.map(i64::from);
        let thumb = new.thumbnail.as_ref();
        let row = sqlx::query(statements::INSERT_ATTACHMENT)
            .bind(new.owner.get())
            .bind(new.name.as_str())
            .bind(i64::try_from(new.size).unwrap_or(i64::MAX))
            .bind(new.content_type.as_str())
            .bind(pixels(new.dimensions.map(|d| d.0)))
            .bind(pixels(new.dimensions.map(|d| d.1)))
            .bind(pixels(thumb.map(|t| t.width)))
            .bind(pixels(thumb.map(|t| t.height)))
            .bind(thumb.map(|t| t.content_type.as_str()))
            .bind(thumb.map(|t| i64::try_from(t.size).unwrap_or(i64::MAX)))
            .bind(new.blob_key.as_str())
            .bind(new.created_at.unix_micros())
            .fetch_one(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        attachment_from(&row)
    }

    async fn attachments(
        &self,
        ids: &[AttachmentId],
    ) -> Result<Vec<AttachmentRecord>, StorageError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(statements::IDS_PER_QUERY) {
            let mut query = sqlx::query(AssertSqlSafe(statements::attachments_by_ids(chunk.len())));
            for id in chunk {
                query = query.bind(id.get());
            }
            let rows = query.fetch_all(self.reader()?).await.map_err(D::map_err)?;
            for row in &rows {
                found.push(attachment_from(row)?);
            }
        }
        Ok(found)
    }

    async fn upload_usage(&self, owner: UserId) -> Result<u64, StorageError> {
        let used: i64 = sqlx::query_scalar(statements::UPLOAD_USAGE)
            .bind(owner.get())
            .fetch_one(self.reader()?)
            .await
            .map_err(D::map_err)?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    async fn doom_upload(&self, owner: UserId, id: AttachmentId) -> Result<bool, StorageError> {
        let done = sqlx::query(statements::DOOM_UPLOAD)
            .bind(owner.get())
            .bind(id.get())
            .bind(Timestamp::now().unix_micros())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        if D::rows_affected(&done) > 0 {
            return Ok(true);
        }
        // Why not: a row that stays says so.
        let standing = sqlx::query(statements::UPLOAD_STANDING)
            .bind(owner.get())
            .bind(id.get())
            .fetch_optional(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        match standing {
            Some(row) if row.int("sent")? != 0 => {
                Err(StorageError::Conflict(Conflict::AttachmentSent))
            }
            _ => Ok(false),
        }
    }

    async fn doom_unsent(&self, before: Timestamp) -> Result<u64, StorageError> {
        let done = sqlx::query(statements::DOOM_UNSENT)
            .bind(before.unix_micros())
            .bind(Timestamp::now().unix_micros())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(D::map_err)?;
        Ok(D::rows_affected(&done))
    }

    async fn doomed_attachments(&self, limit: u32) -> Result<Vec<AttachmentRecord>, StorageError> {
        let rows = sqlx::query(statements::DOOMED_ATTACHMENTS)
            .bind(i64::from(limit))
            .fetch_all(self.reader()?)
            .await
            .map_err(D::map_err)?;
        rows.iter().map(attachment_from).collect()
    }

    async fn forget_attachments(&self, ids: &[AttachmentId]) -> Result<(), StorageError> {
        for chunk in ids.chunks(statements::IDS_PER_QUERY) {
            let mut query = sqlx::query(AssertSqlSafe(statements::forget_attachments(chunk.len())));
            for id in chunk {
                query = query.bind(id.get());
            }
            query
                .execute(&mut *self.writer().await?)
                .await
                .map_err(D::map_err)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.reach.check()?;
        // Both pools (one on PostgreSQL): a healthy reader says nothing
        // about the writer.
        for pool in [&self.write, &self.read] {
            sqlx::query(statements::PING)
                .execute(pool)
                .await
                .map_err(D::map_err)?;
        }
        Ok(())
    }
}

/// `text` with `LIKE`'s wildcards and its escape (`\\`) escaped.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
