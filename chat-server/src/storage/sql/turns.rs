//! Writers' turns on a database with a single writer.
//!
//! SQLite admits one write transaction at a time. Its writers are the
//! write pool's one connection and the group committer's own connection
//! (`sqlite/batch.rs`). Left to meet at SQLite's lock, the one that finds it
//! taken sleeps in SQLite's busy handler (1 ms, then 2, 5, 10…) instead of
//! waiting for the release, and a batch of messages would pay that in its
//! latency. So they take turns here first: a fair queue, woken the moment
//! the turn before ends. PostgreSQL's writers run concurrently and take no
//! turns.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::Dialect;
use crate::storage::StorageError;

/// Where a storage's writers queue for their turn, if they have to.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteTurns(Option<Arc<Mutex<()>>>);

/// One writer's turn: the next waits until it is dropped.
pub(crate) type Turn = Option<OwnedMutexGuard<()>>;

impl WriteTurns {
    /// For a database with one writer at a time (SQLite).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn single_writer() -> Self {
        Self(Some(Arc::new(Mutex::new(()))))
    }

    /// For a database whose writers run concurrently (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn concurrent() -> Self {
        Self(None)
    }

    /// Waits for this writer's turn.
    pub(crate) async fn take(&self) -> Turn {
        match &self.0 {
            Some(turns) => Some(turns.clone().lock_owned().await),
            None => None,
        }
    }

    /// A write transaction on `pool`, in its turn.
    pub(crate) async fn begin<D: Dialect>(
        &self,
        pool: &Pool<D::Db>,
    ) -> Result<WriteTx<D>, StorageError> {
        let turn = self.take().await;
        let tx = pool.begin_with(D::BEGIN).await.map_err(D::map_err)?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// A connection of `pool` to write on, in its turn.
    pub(crate) async fn writer<D: Dialect>(
        &self,
        pool: &Pool<D::Db>,
    ) -> Result<Writer<D>, StorageError> {
        let turn = self.take().await;
        let conn = pool.acquire().await.map_err(D::map_err)?;
        Ok(Writer { conn, _turn: turn })
    }
}

/// A write transaction holding its turn until it commits or is dropped
/// (rolled back). Derefs to the connection, like sqlx's `Transaction`.
pub(crate) struct WriteTx<D: Dialect> {
    tx: Transaction<'static, D::Db>,
    // Declared after `tx`: dropped after it.
    _turn: Turn,
}

impl<D: Dialect> WriteTx<D> {
    pub(crate) async fn commit(self) -> Result<(), StorageError> {
        self.tx.commit().await.map_err(D::map_err)
    }

    pub(crate) async fn rollback(self) -> Result<(), StorageError> {
        self.tx.rollback().await.map_err(D::map_err)
    }
}

impl<D: Dialect> Deref for WriteTx<D> {
    type Target = <D::Db as Database>::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<D: Dialect> DerefMut for WriteTx<D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// A pooled connection holding a writer's turn until dropped.
pub(crate) struct Writer<D: Dialect> {
    conn: PoolConnection<D::Db>,
    _turn: Turn,
}

impl<D: Dialect> Deref for Writer<D> {
    type Target = <D::Db as Database>::Connection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<D: Dialect> DerefMut for Writer<D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}
