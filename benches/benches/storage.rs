//! One append through the `Storage` trait, as the server does for every
//! message, in each backend that needs no setup: memory, SQLite in a
//! temporary file, and PostgreSQL at `CHAT_BENCH_POSTGRES` (default the
//! local trust server) in a fresh schema when it answers. An unreachable
//! PostgreSQL is skipped with a message, not failed: a micro-benchmark run
//! on a laptop should still measure the rest.

use std::sync::Arc;
use std::time::Duration;

use chat_core::room::RoomType;
use chat_core::{RoomId, Timestamp, UserId};
use chat_server::storage::{self, NewMessage, NewRoom, NewUser, Storage, StorageOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::Connection as _;

struct Target {
    store: Arc<dyn Storage>,
    room: RoomId,
    user: UserId,
}

async fn prepare(url: &str) -> Result<Target, Box<dyn std::error::Error>> {
    let store = storage::connect(url, &StorageOptions { max_connections: 4 }).await?;
    let user = store
        .create_user(NewUser {
            username: "bench".into(),
            email: "bench@example.com".into(),
            display_name: "bench".into(),
            password_hash: "x".into(),
            created_at: Timestamp::now(),
        })
        .await?;
    let room = store
        .create_room(NewRoom {
            name: "bench".into(),
            kind: RoomType::Public,
            creator: user.id,
            invited: Vec::new(),
            created_at: Timestamp::now(),
        })
        .await?
        .id;
    Ok(Target {
        store,
        room,
        user: user.id,
    })
}

fn bench_append(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, t: &Target) {
    let body = "x".repeat(100);
    c.bench_function(&format!("append_100B/{name}"), |b| {
        b.iter(|| {
            rt.block_on(
                t.store
                    .append(NewMessage::new(t.room, t.user, body.clone())),
            )
        })
    });
}

fn appends(c: &mut Criterion) {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no tokio runtime: {e}");
            return;
        }
    };
    match rt.block_on(prepare("memory://")) {
        Ok(t) => bench_append(c, &rt, "memory", &t),
        Err(e) => eprintln!("memory storage failed: {e}"),
    }

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no temporary directory: {e}");
            return;
        }
    };
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    match rt.block_on(prepare(&sqlite)) {
        Ok(t) => bench_append(c, &rt, "sqlite", &t),
        Err(e) => eprintln!("SQLite storage failed: {e}"),
    }

    let pg = std::env::var("CHAT_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("chat_microbench_{:08x}", rand::random::<u32>());
    let created = rt.block_on(async {
        let mut conn =
            tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&pg))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    match created {
        Err(e) => eprintln!("PostgreSQL at {pg} unreachable ({e}): append/postgres skipped"),
        Ok(()) => {
            let sep = if pg.contains('?') { '&' } else { '?' };
            let scoped = format!("{pg}{sep}options[search_path]={schema}");
            match rt.block_on(prepare(&scoped)) {
                Ok(t) => bench_append(c, &rt, "postgres", &t),
                Err(e) => eprintln!("PostgreSQL storage failed: {e}"),
            }
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg).await {
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                            .execute(&mut conn)
                            .await;
                }
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = appends
}
criterion_main!(benches);
