//! A PostgreSQL schema of its own for each test, so that tests running in
//! parallel against the machine's one server never see each other's rows.
//!
//! Available to other crates' tests with chat-server's `testing` feature:
//!
//! ```no_run
//! # async fn run() {
//! use chat_server::storage::postgres::testing::TestSchema;
//! let schema = TestSchema::create().await; // panics if PostgreSQL is down
//! let url = schema.url(); // give it to `storage::connect` or a server
//! // … the schema is dropped with `schema`.
//! # }
//! ```

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

/// Where the tests find PostgreSQL, unless `CHAT_TEST_POSTGRES_URL` says
/// otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long creating or dropping a schema may take before the test gives
/// up.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The base URL: `CHAT_TEST_POSTGRES_URL`, or [`DEFAULT_URL`].
pub fn base_url() -> String {
    std::env::var("CHAT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh, empty schema `chat_test_<random>` in the base URL's database,
/// dropped with everything in it when this value is.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
    base: String,
}

impl TestSchema {
    /// Creates the schema.
    ///
    /// # Panics
    ///
    /// If PostgreSQL cannot be reached, with a message that says how to
    /// start it: a test that needs it must fail, never pass without it.
    pub async fn create() -> Self {
        let base = base_url();
        let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin(&base).await;
        let created = tokio::time::timeout(
            TIMEOUT,
            conn.execute(AssertSqlSafe(format!("CREATE SCHEMA {name}"))),
        )
        .await;
        match created {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("cannot create schema {name} at {base}: {e}"),
            Err(_) => panic!("creating schema {name} at {base} took over {TIMEOUT:?}"),
        }
        let _ = conn.close().await;
        Self { name, base }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL with the schema as `search_path`, so that migrations
    /// and queries land in it, and the schema's name as `application_name`,
    /// so that a test can find its sessions in `pg_stat_activity`.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{name}&application_name={name}",
            self.base,
            name = self.name
        )
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow (and maybe
        // while a panic unwinds), so the schema goes on a thread of its own
        // with a runtime of its own. Failing here must not panic: it would
        // abort an unwinding test. A leftover schema is only clutter.
        let base = self.base.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || drop_schema(&base, &name)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!("dropping test schema {} panicked", self.name),
        }
    }
}

/// A plain connection to the base URL.
///
/// # Panics
///
/// If PostgreSQL cannot be reached, saying how to start it.
pub async fn admin(base: &str) -> PgConnection {
    match tokio::time::timeout(TIMEOUT, PgConnection::connect(base)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", unreachable_message(base, &e.to_string())),
        Err(_) => panic!(
            "{}",
            unreachable_message(base, &format!("no answer within {TIMEOUT:?}"))
        ),
    }
}

fn unreachable_message(base: &str, error: &str) -> String {
    format!(
        "cannot reach PostgreSQL at {base} ({error}). These tests need it. Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
         (see SERVICES.md), or point CHAT_TEST_POSTGRES_URL at another server."
    )
}

fn drop_schema(base: &str, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let work = async {
            let mut conn = PgConnection::connect(base).await?;
            // A session of the test's pool may still be closing and hold a
            // lock for a moment; wait for it, but not forever.
            conn.execute("SET lock_timeout = '10s'").await?;
            conn.execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .await?;
            conn.close().await
        };
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
        }
    })
}
