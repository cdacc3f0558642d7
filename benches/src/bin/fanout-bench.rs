//! Fan-out across instances: N sockets spread over one or two servers (each
//! started from the library in this process, on shared storage and broker),
//! S senders sending timestamped messages; reports deliveries per second and
//! end-to-end latency, and checks nothing is lost or duplicated.
//!
//! ```sh
//! # one instance (local broker) vs two instances over Redis, on PostgreSQL:
//! cargo run --release -p chat-bench --bin fanout-bench -- --instances 1
//! cargo run --release -p chat-bench --bin fanout-bench -- --instances 2
//! ```
//!
//! The load generator shares the process (and the machine's two cores) with
//! the servers, so compare runs of this tool with each other, not with
//! numbers taken with the generator on its own core.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Deliveries per second and latency across chat-rs instances")]
struct Args {
    /// Server instances sharing storage and broker.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Storage; a PostgreSQL URL gets a fresh schema.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    storage: String,
    /// Broker; `local://` only works with one instance.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    broker: String,
    /// Receiving sockets, spread evenly over the instances.
    #[arg(long, default_value_t = 200)]
    sockets: usize,
    /// Sending sockets, spread evenly over the instances.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 20)]
    rate: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.instances > 1 && args.broker.starts_with("local") {
        bail!("several instances need a shared broker (redis://…)");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (storage_url, cleanup) = scoped_storage(&args.storage).await?;
    let prefix = format!("bench-{:08x}", rand::random::<u32>());
    let mut servers = Vec::new();
    for _ in 0..args.instances {
        let config = chat_server::Config {
            listen: "127.0.0.1:0".parse()?,
            storage_url: storage_url.clone(),
            broker_url: args.broker.clone(),
            broker_prefix: prefix.clone(),
            jwt_secret: Some("fanout-bench-secret-0123456789".into()),
            rate_limit: 0,
            storage_pool_size: 16,
            ..chat_server::Config::default()
        };
        servers.push(chat_server::Server::start(config).await?);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
    let http = reqwest::Client::new();

    // A few users; each holds many sockets (passwords are hashed on purpose
    // slowly, so one user per socket would make setup dominate).
    let token = register(&http, addrs[0], "owner").await?;
    let room = create_room(&http, addrs[0], &token).await?;
    let mut tokens = Vec::new();
    for i in 0..8 {
        let t = register(&http, addrs[i % addrs.len()], &format!("reader{i}")).await?;
        join(&http, addrs[0], &t, room).await?;
        tokens.push(t);
    }

    let origin = Instant::now();
    let total = args.senders * args.messages;
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for i in 0..args.sockets {
        let addr = addrs[i % addrs.len()];
        let token = tokens[i % tokens.len()].clone();
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/?token={token}")).await?;
        ws.send(Message::text(
            json!({"type": "subscribe", "room": room}).to_string(),
        ))
        .await?;
        loop {
            let msg = ws
                .next()
                .await
                .context("socket closed while subscribing")??;
            let f: Value = serde_json::from_str(msg.to_text()?)?;
            if f["type"] == "subscribed" {
                break;
            }
        }
        let latency = latency.clone();
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            let mut seqs: HashMap<i64, u32> = HashMap::new();
            let mut last = 0;
            let mut out_of_order = 0u64;
            while seqs.len() < total {
                let Some(Ok(msg)) = ws.next().await else {
                    break;
                };
                let Ok(text) = msg.to_text() else { continue };
                let Ok(f) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if f["type"] != "message" {
                    continue;
                }
                let seq = f["message"]["seq"].as_i64().unwrap_or(0);
                if seq <= last {
                    out_of_order += 1;
                }
                last = last.max(seq);
                *seqs.entry(seq).or_default() += 1;
                if let Some(sent) = f["message"]["body"]
                    .as_str()
                    .and_then(|b| b.split(':').next())
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let now = origin.elapsed().as_micros() as u64;
                    if let Ok(mut h) = latency.lock() {
                        let _ = h.record(now.saturating_sub(sent).max(1));
                    }
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            let dups = seqs.values().filter(|c| **c > 1).count();
            (seqs.len(), dups, out_of_order)
        }));
    }

    // Senders: one socket each, paced at `rate`, acks awaited in the
    // background so that sends pipeline.
    let start = Instant::now();
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let addr = addrs[s % addrs.len()];
        let token = register(&http, addr, &format!("sender{s}")).await?;
        join(&http, addr, &token, room).await?;
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/?token={token}")).await?;
        let (mut tx, mut rx) = ws.split();
        let messages = args.messages;
        let period = Duration::from_micros(1_000_000 / args.rate.max(1));
        senders.push(tokio::spawn(async move {
            let acks = tokio::spawn(async move {
                let mut acked = 0;
                while acked < messages {
                    let Some(Ok(msg)) = rx.next().await else { break };
                    if msg.to_text().is_ok_and(|t| t.contains(r#""type":"ack""#)) {
                        acked += 1;
                    }
                }
                acked
            });
            let mut tick = tokio::time::interval(period);
            for i in 0..messages {
                tick.tick().await;
                let body = format!("{}:{s}-{i}:{}", origin.elapsed().as_micros(), "x".repeat(64));
                let frame = json!({"type": "send", "room": room, "body": body, "client_id": format!("{s}-{i}")});
                if tx.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
            }
            acks.await.unwrap_or(0)
        }));
    }
    let mut acked = 0;
    for s in senders {
        acked += s.await?;
    }
    let mut lost = 0;
    let mut dups = 0;
    let mut disorder = 0;
    for r in receivers {
        match tokio::time::timeout(Duration::from_secs(30), r).await {
            Ok(Ok((got, d, o))) => {
                lost += total - got;
                dups += d;
                disorder += o;
            }
            _ => lost += total,
        }
    }
    let elapsed = start.elapsed();
    let deliveries = delivered.load(Ordering::Relaxed);
    let h = latency
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "instances {}  sockets {}  senders {} x {} msgs @ {}/s  broker {}",
        args.instances, args.sockets, args.senders, args.messages, args.rate, args.broker
    );
    println!(
        "acked {acked}/{total}  deliveries {deliveries} in {:.2} s = {:.0}/s  lost {lost}  duplicated {dups}  out of order {disorder}",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    println!(
        "{}",
        json!({"bench": "fanout", "instances": args.instances, "sockets": args.sockets, "senders": args.senders,
            "rate": args.rate, "deliveries_per_s": (deliveries as f64 / elapsed.as_secs_f64()).round(),
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
            "lost": lost, "duplicated": dups, "out_of_order": disorder})
    );
    for s in servers {
        s.shutdown().await?;
    }
    cleanup.await;
    Ok(())
}

async fn register(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    name: &str,
) -> anyhow::Result<String> {
    let name = format!("{name}{:06x}", rand::random::<u32>() & 0xFFFFFF);
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "bench-password"});
    let r = http
        .post(format!("http://{addr}/api/users/register/"))
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("register: {}", r.text().await?);
    }
    let t: Value = http
        .post(format!("http://{addr}/api/users/token/"))
        .json(&json!({"username": name, "password": "bench-password"}))
        .send()
        .await?
        .json()
        .await?;
    t["access"]
        .as_str()
        .map(str::to_owned)
        .context("no access token")
}

async fn create_room(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
) -> anyhow::Result<i64> {
    let r: Value = http
        .post(format!("http://{addr}/chat/create-room/"))
        .bearer_auth(token)
        .json(&json!({"name": format!("bench-{:08x}", rand::random::<u32>()), "type": "public"}))
        .send()
        .await?
        .json()
        .await?;
    r["id"].as_i64().context("no room id")
}

async fn join(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    room: i64,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("http://{addr}/chat/join-room/"))
        .bearer_auth(token)
        .json(&json!({"room_id": room}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("join: {}", r.text().await?);
    }
    Ok(())
}

/// A fresh schema for a PostgreSQL URL (dropped at the end); other URLs as
/// given.
async fn scoped_storage(
    url: &str,
) -> anyhow::Result<(
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
)> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_owned(), Box::pin(async {})));
    }
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    let schema = format!("chat_bench_{:08x}", rand::random::<u32>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let base = url.to_owned();
    let scoped = format!("{url}{sep}options[search_path]={schema}");
    Ok((
        scoped,
        Box::pin(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&mut conn)
                    .await;
            }
        }),
    ))
}
