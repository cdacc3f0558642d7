//! Broker publish throughput: how many messages one instance hands to the
//! broker per second, exactly as the hub does for every stored message (one
//! `publish` per message; the Redis broker pipelines concurrent publishes on
//! one multiplexed connection, one `PUBLISH` each).
//!
//! ```sh
//! cargo run --release -p chat-bench --bin publish-bench -- --broker redis://127.0.0.1:6379
//! ```
//!
//! A second broker instance subscribes to every room published to and
//! counts what arrives, so the figure is of messages that made it through
//! Redis, not merely of commands sent. Prints a table and one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_core::RoomId;
use chat_server::broker::local::{LocalBroker, LocalBus};
use chat_server::broker::{self, Broker, BrokerOptions, Event, EventKind, EventSink, Frame};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Publishes per second through a chat-rs broker")]
struct Args {
    /// redis://… (local:// works too, as a baseline).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    broker: String,
    /// Concurrent publishers (sessions sending at once).
    #[arg(long, default_value_t = 256)]
    publishers: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Rooms the messages spread over.
    #[arg(long, default_value_t = 10)]
    rooms: i64,
    /// Frame size in bytes (a 100 B body makes a ~250 B message frame).
    #[arg(long, default_value_t = 250)]
    frame_bytes: usize,
}

/// Counts what the subscribing instance receives.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl EventSink for Counter {
    fn deliver(&self, _event: Arc<Event>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn resync(&self) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.publishers == 0 || args.rooms <= 0 {
        bail!("--publishers and --rooms must be positive");
    }
    // A prefix of our own, so that a running server sharing the Redis sees
    // none of this.
    let options = BrokerOptions {
        prefix: format!("publish-bench-{}", std::process::id()),
        tls_ca: None,
    };
    let received = Arc::new(Counter::default());
    // Two instances, as between two servers: a broker never hands an
    // instance its own events. Local brokers share one in-process bus.
    let (listener, publisher): (Arc<dyn Broker>, Arc<dyn Broker>) =
        if args.broker.starts_with("local://") {
            let bus = LocalBus::new();
            (
                Arc::new(LocalBroker::on_bus(&bus, received.clone())),
                Arc::new(LocalBroker::on_bus(&bus, Arc::new(Counter::default()))),
            )
        } else {
            (
                broker::connect(&args.broker, &options, received.clone())
                    .await
                    .context("subscribing broker")?,
                broker::connect(&args.broker, &options, Arc::new(Counter::default()))
                    .await
                    .context("publishing broker")?,
            )
        };
    for room in 1..=args.rooms {
        listener.subscribe(RoomId(room)).await?;
    }

    let frame = Frame::from_utf8(
        format!(
            "{{\"type\":\"message\",\"body\":\"{}\"}}",
            "x".repeat(args.frame_bytes.saturating_sub(30))
        )
        .into(),
    )?;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.publishers)
        .map(|_| {
            let (publisher, next, failed, frame) = (
                publisher.clone(),
                next.clone(),
                failed.clone(),
                frame.clone(),
            );
            let (total, rooms) = (args.messages, args.rooms);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let room = RoomId(1 + (n as i64 % rooms));
                    let event = Event {
                        room,
                        origin: None,
                        kind: EventKind::Timeline {
                            seq: 1 + (n / rooms as u64) as i64,
                            frame: frame.clone(),
                            leaves: None,
                        },
                    };
                    if publisher.publish(Arc::new(event)).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let published = start.elapsed();
    let failed = failed.load(Ordering::Relaxed);
    let expected = args.messages - failed;
    // Redis delivers asynchronously: wait for the tail (or give up).
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.0.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let through = start.elapsed();
    let got = received.0.load(Ordering::Relaxed);

    let publish_rate = args.messages as f64 / published.as_secs_f64();
    let end_to_end_rate = got as f64 / through.as_secs_f64();
    println!(
        "broker: {}  publishers: {}  rooms: {}  frame: {} B",
        args.broker, args.publishers, args.rooms, args.frame_bytes
    );
    println!("{:<28}{:>14}", "messages", args.messages);
    println!("{:<28}{:>14.0}", "publishes/s (acknowledged)", publish_rate);
    println!(
        "{:<28}{:>14.0}",
        "received/s (other instance)", end_to_end_rate
    );
    println!("{:<28}{:>14}", "failed publishes", failed);
    println!("{:<28}{:>14}", "lost", expected.saturating_sub(got));
    println!(
        "{}",
        serde_json::json!({
            "bench": "publish",
            "broker": args.broker,
            "publishers": args.publishers,
            "messages": args.messages,
            "publishes_per_s": publish_rate.round(),
            "received_per_s": end_to_end_rate.round(),
            "failed": failed,
            "lost": expected.saturating_sub(got),
        })
    );
    if got < expected {
        bail!("{} of {expected} messages never arrived", expected - got);
    }
    Ok(())
}
