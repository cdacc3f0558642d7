//! Whether the database answers, known ahead of the calls that need it.
//!
//! While PostgreSQL is down, sqlx's pool retries refused connections until
//! its acquire timeout (5 s): every request, handshake and socket frame
//! that reads would wait that long before answering 503, and a socket
//! executing a burst of such frames would not answer pings for as many
//! times 5 s. A monitor task asks the database once a second instead (a
//! pooled ping; a direct connection when the pool is only busy); while the
//! answer is no, every call fails at once with `Unavailable`, and the
//! first yes lets calls through again. SQLite has no monitor: a file does
//! not go away.

use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "postgres")]
use std::sync::{Arc, Weak};
#[cfg(feature = "postgres")]
use std::time::Duration;

use crate::storage::StorageError;

/// How often the monitor asks, and how long each try may take.
#[cfg(feature = "postgres")]
const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Reach {
    down: AtomicBool,
}

impl Reach {
    /// `Unavailable` while the database is known to be unreachable.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StorageError::Unavailable(
                "the database does not answer (retrying in the background)".into(),
            ));
        }
        Ok(())
    }

    #[cfg(feature = "postgres")]
    fn set(&self, reachable: bool) {
        let was_down = self.down.swap(!reachable, Ordering::Relaxed);
        match (was_down, reachable) {
            (false, false) => {
                tracing::warn!("database unreachable: calls fail at once until it answers")
            }
            (true, true) => tracing::info!("database reachable again"),
            _ => {}
        }
    }
}

/// Watches a PostgreSQL pool for as long as `reach` lives (the storage
/// holds the only strong reference).
#[cfg(feature = "postgres")]
pub(crate) fn watch_postgres(
    reach: &Arc<Reach>,
    pool: sqlx::PgPool,
    direct: sqlx::postgres::PgConnectOptions,
) {
    let reach: Weak<Reach> = Arc::downgrade(reach);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(reach) = reach.upgrade() else { return };
            let reachable = answers(&pool, &direct).await;
            reach.set(reachable);
        }
    });
}

/// A pooled ping within the probe time; if the pool cannot hand out a
/// connection that fast (busy, or down), a connection of its own decides.
#[cfg(feature = "postgres")]
async fn answers(pool: &sqlx::PgPool, direct: &sqlx::postgres::PgConnectOptions) -> bool {
    use sqlx::Connection as _;
    let pooled = async {
        let mut conn = pool.acquire().await?;
        conn.ping().await
    };
    if let Ok(result) = tokio::time::timeout(PROBE_EVERY, pooled).await {
        return result.is_ok();
    }
    let opened = async {
        let conn = sqlx::PgConnection::connect_with(direct).await?;
        conn.close().await
    };
    matches!(tokio::time::timeout(PROBE_EVERY, opened).await, Ok(Ok(())))
}
