//! Storage append throughput: N concurrent writers appending through the
//! `Storage` trait, exactly as the server does for every message.
//!
//! ```sh
//! cargo run --release -p chat-bench --bin append-bench -- \
//!     --storage postgres://postgres@127.0.0.1:5432/test --writers 50 --messages 200
//! ```
//!
//! Two rounds: every writer in ONE room (appends to a room are serialized by
//! its seq, so this is the worst case for one busy room), then each writer in
//! its OWN room (how a server with many active rooms loads the database). A
//! PostgreSQL URL gets a fresh schema, dropped at the end; a SQLite URL gets a
//! fresh file next to the given path. Prints a table and one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_core::room::RoomType;
use chat_core::{RoomId, Timestamp, UserId};
use chat_server::storage::{self, NewMessage, NewRoom, NewUser, Storage, StorageOptions};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(about = "Concurrent append throughput of a chat-rs storage backend")]
struct Args {
    /// postgres://… or sqlite://PATH (memory:// works too, as a baseline).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    storage: String,
    /// Concurrent writers.
    #[arg(long, default_value_t = 50)]
    writers: usize,
    /// Appends per writer and round.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Pooled connections (default: one per writer).
    #[arg(long)]
    pool: Option<u32>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
}

struct Round {
    name: &'static str,
    appends: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, cleanup) = isolate(&args.storage).await?;
    let pool = args.pool.unwrap_or(args.writers as u32);
    let store = storage::connect(
        &url,
        &StorageOptions {
            max_connections: pool,
        },
    )
    .await
    .with_context(|| format!("connecting to {}", args.storage))?;

    let user = store
        .create_user(NewUser {
            username: format!("bench{}", rand::random::<u32>()),
            email: format!("bench{}@example.com", rand::random::<u32>()),
            display_name: "bench".into(),
            password_hash: "x".into(),
            created_at: Timestamp::now(),
        })
        .await?;
    let room = |name: String| NewRoom {
        name,
        kind: RoomType::Public,
        creator: user.id,
        invited: Vec::new(),
        created_at: Timestamp::now(),
    };
    let shared = store.create_room(room("bench-shared".into())).await?.id;
    let mut own = Vec::new();
    for w in 0..args.writers {
        own.push(store.create_room(room(format!("bench-own-{w}"))).await?.id);
    }
    let body = "x".repeat(args.body);

    let one_room = run(
        &store,
        "one room",
        vec![shared; args.writers],
        user.id,
        args.messages,
        &body,
    )
    .await?;
    let many_rooms = run(
        &store,
        "room per writer",
        own,
        user.id,
        args.messages,
        &body,
    )
    .await?;

    println!(
        "storage: {}  writers: {}  pool: {pool}  appends per writer: {}",
        redact(&args.storage),
        args.writers,
        args.messages
    );
    println!(
        "{:<18} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "round", "appends", "appends/s", "p50 ms", "p99 ms", "max ms"
    );
    for r in [&one_room, &many_rooms] {
        println!(
            "{:<18} {:>10} {:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            r.name,
            r.appends,
            r.rate(),
            r.latency.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency.value_at_quantile(0.99) as f64 / 1000.0,
            r.latency.max() as f64 / 1000.0,
        );
    }
    let json = serde_json::json!({
        "bench": "append",
        "storage": redact(&args.storage),
        "writers": args.writers,
        "pool": pool,
        "one_room_appends_per_s": one_room.rate().round(),
        "one_room_p99_ms": one_room.latency.value_at_quantile(0.99) as f64 / 1000.0,
        "room_per_writer_appends_per_s": many_rooms.rate().round(),
        "room_per_writer_p99_ms": many_rooms.latency.value_at_quantile(0.99) as f64 / 1000.0,
    });
    println!("{json}");
    drop(store);
    cleanup.await;
    Ok(())
}

/// Runs `rooms.len()` writers, writer `i` appending to `rooms[i]`, and checks
/// the result is gap-free.
async fn run(
    store: &Arc<dyn Storage>,
    name: &'static str,
    rooms: Vec<RoomId>,
    sender: UserId,
    messages: usize,
    body: &str,
) -> anyhow::Result<Round> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for room in rooms.iter().copied() {
        let store = store.clone();
        let body = body.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for _ in 0..messages {
                let t = Instant::now();
                store
                    .append(NewMessage::new(room, sender, body.clone()))
                    .await?;
                latency.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(latency)
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    let mut distinct = rooms.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for room in distinct {
        let last = store.room(room).await?.context("room")?.last_seq;
        let expected = (rooms.iter().filter(|r| **r == room).count() * messages) as i64;
        if last < expected {
            bail!("room {room}: last seq {last}, expected at least {expected}");
        }
    }
    Ok(Round {
        name,
        appends: rooms.len() * messages,
        elapsed,
        latency,
    })
}

/// A fresh place to write: a new schema for PostgreSQL, a new file for
/// SQLite. Returns the URL to use and the cleanup to run at the end.
async fn isolate(
    url: &str,
) -> anyhow::Result<(
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        let schema = format!("chat_bench_{:08x}", rand::random::<u32>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{sep}options[search_path]={schema}");
        let base = url.to_owned();
        let cleanup = Box::pin(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&mut conn)
                    .await;
            }
        });
        Ok((scoped, cleanup))
    } else if let Some(rest) = url.strip_prefix("sqlite://") {
        // The file is fresh; the URL's parameters (`?synchronous=full`) stay.
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, format!("?{query}")),
            None => (rest, String::new()),
        };
        let fresh = format!("{path}.bench-{:08x}", rand::random::<u32>());
        let cleanup_path = fresh.clone();
        let cleanup = Box::pin(async move {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{cleanup_path}{suffix}"));
            }
        });
        Ok((format!("sqlite://{fresh}{query}"), cleanup))
    } else {
        Ok((url.to_owned(), Box::pin(async {})))
    }
}

fn redact(url: &str) -> String {
    chat_server::redact_url(url)
}
