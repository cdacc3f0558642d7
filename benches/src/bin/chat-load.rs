//! The chat-rs load generator: drives a running server (or several, or the
//! reference server) over HTTP and WebSocket and reports deliveries per
//! second, end-to-end latency, lost and duplicated messages, connect
//! failures and the server's RSS.
//!
//! ```sh
//! # W1 against a server on :8000 started with --rate-limit 0
//! chat-load --url http://127.0.0.1:8000 --rooms 10 --sockets 500 --senders 5 --rate 20 \
//!     --server-pid "$(pgrep -n chat-server)"
//! # W2: raise the rate until p99 > 100 ms or anything is lost
//! chat-load --mode step --rooms 1 --sockets 1000 --senders 10 --rate 10
//! # W3: RSS per idle socket
//! chat-load --mode idle --sockets 10000 --rooms 10
//! # the same against chat-reference (no HTTP setup)
//! chat-load --reference --url http://127.0.0.1:8100 ...
//! ```
//!
//! Modes: `run` (one rate for `--duration`), `step` (multiply the rate by
//! `--step-factor` each step; the saturation is the last step with p99 under
//! `--p99-limit-ms` and nothing lost), `idle` (open sockets, wait, report
//! the server's RSS growth per socket). Prints a table and one line
//! `RESULT {json}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_bench::sockets::{self, Counters, Sender};
use chat_bench::stats::{self, Quantiles};
use chat_bench::{http, wire};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Run,
    Step,
    Idle,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for chat-rs (and its reference server)")]
struct Args {
    /// Server base URL; repeat for several instances (sockets alternate).
    #[arg(long = "url", default_value = "http://127.0.0.1:8000")]
    urls: Vec<String>,
    /// The target is chat-reference: no HTTP setup, rooms are 1..=R.
    #[arg(long)]
    reference: bool,
    #[arg(long, value_enum, default_value_t = Mode::Run)]
    mode: Mode,
    /// Name of the scenario, copied into the JSON line.
    #[arg(long, default_value = "custom")]
    label: String,
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Receiving sockets in all, spread evenly over the rooms.
    #[arg(long, default_value_t = 500)]
    sockets: usize,
    /// Sending sockets per room (not counted in --sockets).
    #[arg(long, default_value_t = 5)]
    senders: usize,
    /// Messages per second per sender (the first step's in step mode).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of sending per run or step.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Registered users; sockets share them round-robin.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 4)]
    register_parallel: usize,
    /// New sockets per second while connecting.
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_parallel: usize,
    /// Seconds to wait for the last deliveries after the last send.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Server process whose RSS and CPU time are reported; repeat for
    /// several instances (figures are summed).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Step mode: rate multiplier per step.
    #[arg(long, default_value_t = 1.5)]
    step_factor: f64,
    /// Step mode: no step beyond this rate per sender.
    #[arg(long, default_value_t = 100_000.0)]
    max_rate: f64,
    /// Step mode: times a failed step is run again at the same rate before
    /// the previous rate counts as the saturation (on a shared machine one
    /// preempted second can fail a step).
    #[arg(long, default_value_t = 1)]
    step_repeats: u32,
    /// Step mode: a step with a p99 above this fails.
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// The share of each sender's ticks that edit or react to (and take
    /// back the reaction to) its newest message instead of sending one:
    /// changes take seqs in the same rooms, and the latency and loss
    /// figures are the messages'.
    #[arg(long, default_value_t = 0.0)]
    change_share: f64,
    /// Idle mode: seconds to hold the sockets open before measuring.
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
}

/// One run or step at one rate.
#[derive(Debug)]
struct Step {
    rate: f64,
    expected: u64,
    received: u64,
    duplicated: u64,
    lost: u64,
    send_errors: u64,
    deliveries_per_s: f64,
    /// Sends acknowledged (stored) per second: W4's figure.
    acks_per_s: f64,
    latency: Quantiles,
    /// Send to ack at the sender: storing, without the fan-out.
    ack_latency: Quantiles,
    server_cpu_pct: Option<f64>,
    /// This process: near 100 % means the generator, not the server, may be
    /// the limit.
    generator_cpu_pct: Option<f64>,
    server_rss: Option<u64>,
}

impl Step {
    fn passes(&self, p99_limit_ms: f64) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.send_errors == 0
            && self.latency.p99 <= p99_limit_ms
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"rate_per_sender": self.rate, "expected": self.expected,
            "received": self.received, "duplicated": self.duplicated, "lost": self.lost,
            "send_errors": self.send_errors, "deliveries_per_s": self.deliveries_per_s.round(),
            "acks_per_s": self.acks_per_s.round(),
            "server_cpu_pct": self.server_cpu_pct, "generator_cpu_pct": self.generator_cpu_pct,
            "server_rss_bytes": self.server_rss});
        if let (Some(o), Value::Object(l)) = (v.as_object_mut(), self.latency.to_json()) {
            o.extend(l);
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("ack_p50_ms".into(), json!(self.ack_latency.p50));
            o.insert("ack_p99_ms".into(), json!(self.ack_latency.p99));
        }
        v
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rooms == 0 || args.users == 0 || args.urls.is_empty() {
        bail!("--rooms, --users and --url need at least one");
    }
    // One thread: the generator is pinned to one core, and a single-threaded
    // runtime spends nothing on work stealing or contended atomics.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    wire::now_micros();
    let ws_bases: Vec<String> = args
        .urls
        .iter()
        .map(|u| {
            let u = u.trim_end_matches('/');
            u.replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        })
        .collect();
    let base = args.urls[0].trim_end_matches('/').to_owned();

    let setup = Instant::now();
    let (tokens, rooms) = if args.reference {
        (
            vec!["reference".to_owned(); args.users],
            (1..=args.rooms as i64).collect::<Vec<_>>(),
        )
    } else {
        let http_client = reqwest::Client::new();
        let prefix = format!("l{:06x}", rand::random::<u32>() & 0xFF_FFFF);
        let tokens = http::register_users(
            &http_client,
            &base,
            &prefix,
            args.users,
            args.register_parallel,
        )
        .await?;
        let rooms =
            http::create_rooms(&http_client, &base, &tokens[0], &prefix, args.rooms).await?;
        http::join_all(&http_client, &base, &tokens, &rooms, 16).await?;
        (tokens, rooms)
    };
    eprintln!(
        "setup: {} users, {} rooms in {:.1} s",
        tokens.len(),
        rooms.len(),
        setup.elapsed().as_secs_f64()
    );

    let counters = Arc::new(Counters::default());
    let sender_ids = if args.mode == Mode::Idle {
        0
    } else {
        args.rooms * args.senders
    };
    let server_rss_before = stats::total_rss(&args.server_pids);
    let own_rss_before = stats::own_rss();

    // Receivers, opened at a steady pace so that the handshakes measure the
    // server rather than a thundering herd.
    let connect_start = Instant::now();
    let bar = ProgressBar::new(args.sockets as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("connecting");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<(usize, anyhow::Result<()>)>(1024);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_parallel.max(1)));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.connect_rate.max(1.0)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let subscribe_timeout = Duration::from_secs(30);
    let mut per_room = vec![0u64; rooms.len()];
    let mut failures = 0u64;
    let mut first_failure: Option<String> = None;
    let mut answered = 0usize;
    let mut note = |(room_idx, r): (usize, anyhow::Result<()>), bar: &ProgressBar| {
        match r {
            Ok(()) => per_room[room_idx] += 1,
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        bar.inc(1);
    };
    for i in 0..args.sockets {
        pace.tick().await;
        while let Ok(r) = ready_rx.try_recv() {
            note(r, &bar);
            answered += 1;
        }
        let room_idx = i % rooms.len();
        let room = rooms[room_idx];
        let token = tokens[i % tokens.len()].clone();
        let ws_base = ws_bases[i % ws_bases.len()].clone();
        let ready = ready_tx.clone();
        let permits = permits.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let opened = async {
                let _permit = permits.acquire().await?;
                let mut ws = sockets::connect(&ws_base, &token).await?;
                sockets::subscribe(&mut ws, room, subscribe_timeout).await?;
                anyhow::Ok(ws)
            }
            .await;
            match opened {
                Ok(ws) => {
                    let _ = ready.send((room_idx, Ok(()))).await;
                    drop(ready);
                    sockets::receive(ws, counters, sender_ids).await;
                }
                Err(e) => {
                    let _ = ready.send((room_idx, Err(e))).await;
                }
            }
        });
    }
    drop(ready_tx);
    while answered < args.sockets {
        let Some(r) = ready_rx.recv().await else {
            break;
        };
        note(r, &bar);
        answered += 1;
    }
    bar.finish_and_clear();
    let connected: u64 = per_room.iter().sum();
    let connect_secs = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "receivers: {connected} connected, {failures} failed in {connect_secs:.1} s{}",
        first_failure
            .as_deref()
            .map(|e| format!(" (first failure: {e})"))
            .unwrap_or_default()
    );

    let target = if args.reference {
        "reference"
    } else {
        "chat-rs"
    };
    let mut result = json!({
        "scenario": args.label, "target": target, "mode": format!("{:?}", args.mode).to_lowercase(),
        "instances": args.urls.len(), "rooms": args.rooms, "sockets": args.sockets,
        "connected": connected, "connect_failures": failures, "connect_secs": connect_secs,
    });

    if args.mode == Mode::Idle {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
        let server_after = stats::total_rss(&args.server_pids);
        let own_after = stats::own_rss();
        let per_socket = |before: Option<u64>, after: Option<u64>| {
            before
                .zip(after)
                // RSS that fell (memory from setup given back, such as
                // password hashing buffers) hides the sockets' share: no
                // figure rather than a wrong one.
                .filter(|(b, a)| connected > 0 && a >= b)
                .map(|(b, a)| (a - b) as f64 / connected as f64)
        };
        let server_per = per_socket(server_rss_before, server_after);
        let own_per = per_socket(own_rss_before, own_after);
        let still_open = connected - counters.receivers_closed.load(Ordering::Relaxed);
        println!(
            "{target}: {connected} idle sockets ({still_open} still open after {:.0} s, {failures} failed)",
            args.idle_secs
        );
        println!(
            "server RSS {} -> {} MiB: {} bytes per socket; generator {} bytes per socket",
            mib(server_rss_before),
            mib(server_after),
            server_per.map_or("n/a".into(), |b| format!("{b:.0}")),
            own_per.map_or("n/a".into(), |b| format!("{b:.0}")),
        );
        if let Some(o) = result.as_object_mut() {
            o.insert("still_open".into(), json!(still_open));
            o.insert("server_rss_before".into(), json!(server_rss_before));
            o.insert("server_rss_after".into(), json!(server_after));
            o.insert(
                "server_bytes_per_socket".into(),
                json!(server_per.map(f64::round)),
            );
            o.insert(
                "generator_bytes_per_socket".into(),
                json!(own_per.map(f64::round)),
            );
        }
        println!("RESULT {result}");
        return Ok(());
    }

    // Senders: their own sockets, never subscribed, so every delivery they
    // cause lands on a receiver.
    let mut senders = Vec::with_capacity(sender_ids);
    for id in 0..sender_ids {
        let room_idx = id / args.senders;
        let ws = sockets::connect(&ws_bases[id % ws_bases.len()], &tokens[id % tokens.len()])
            .await
            .with_context(|| format!("sender {id}"))?;
        senders.push((
            room_idx,
            Sender::new(id as u32, rooms[room_idx], ws, counters.clone()),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "{target}: {} rooms x ({} receivers + {} senders), {} B bodies, {} s per step",
        args.rooms,
        args.sockets / args.rooms,
        args.senders,
        args.body_bytes,
        args.duration
    );
    println!(
        "{:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>7} {:>6} {:>8}",
        "rate/snd",
        "deliv/s",
        "acks/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "ack p99",
        "lost",
        "dup",
        "errs",
        "cpu %",
        "gen %",
        "rss MiB"
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut rate = args.rate;
    let mut repeats_left = args.step_repeats;
    loop {
        let step;
        (senders, step) = run_step(&args, rate, senders, &per_room, &counters).await?;
        println!(
            "{:>9.1} {:>11.0} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>7} {:>6} {:>7} {:>6} {:>8}",
            step.rate,
            step.deliveries_per_s,
            step.acks_per_s,
            step.latency.p50,
            step.latency.p90,
            step.latency.p99,
            step.latency.p999,
            step.latency.max,
            step.ack_latency.p99,
            step.lost,
            step.duplicated,
            step.send_errors,
            step.server_cpu_pct
                .map_or("n/a".into(), |c| format!("{c:.0}")),
            step.generator_cpu_pct
                .map_or("n/a".into(), |c| format!("{c:.0}")),
            mib(step.server_rss),
        );
        let passed = step.passes(args.p99_limit_ms);
        steps.push(step);
        if args.mode == Mode::Step && !passed && repeats_left > 0 {
            repeats_left -= 1;
            println!(
                "{:>9} repeating the rate: one failed step may be another process's noise",
                ""
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        repeats_left = args.step_repeats;
        rate *= args.step_factor;
        if args.mode == Mode::Run || !passed || rate > args.max_rate {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    if let Some(o) = result.as_object_mut() {
        o.insert("senders_per_room".into(), json!(args.senders));
        o.insert("body_bytes".into(), json!(args.body_bytes));
        o.insert("duration_s".into(), json!(args.duration));
        o.insert(
            "receivers_closed".into(),
            json!(counters.receivers_closed.load(Ordering::Relaxed)),
        );
        o.insert(
            "acked".into(),
            json!(counters.acked.load(Ordering::Relaxed)),
        );
        o.insert("sent".into(), json!(counters.sent.load(Ordering::Relaxed)));
        o.insert("change_share".into(), json!(args.change_share));
        o.insert(
            "changes".into(),
            json!(counters.changes.load(Ordering::Relaxed)),
        );
        o.insert(
            "steps".into(),
            Value::Array(steps.iter().map(Step::to_json).collect()),
        );
        let headline = if args.mode == Mode::Step {
            let last_pass = steps.iter().rev().find(|s| s.passes(args.p99_limit_ms));
            o.insert(
                "saturated".into(),
                json!(steps.last().is_some_and(|s| !s.passes(args.p99_limit_ms))),
            );
            o.insert(
                "saturation_rate_per_sender".into(),
                json!(last_pass.map(|s| s.rate)),
            );
            last_pass
        } else {
            steps.last()
        };
        if let Some(h) = headline {
            o.insert("deliveries_per_s".into(), json!(h.deliveries_per_s.round()));
            o.insert("acks_per_s".into(), json!(h.acks_per_s.round()));
            o.insert("ack_p50_ms".into(), json!(h.ack_latency.p50));
            o.insert("ack_p99_ms".into(), json!(h.ack_latency.p99));
            o.insert("lost".into(), json!(h.lost));
            o.insert("duplicated".into(), json!(h.duplicated));
            o.insert("server_cpu_pct".into(), json!(h.server_cpu_pct));
            o.insert("generator_cpu_pct".into(), json!(h.generator_cpu_pct));
            o.insert("server_rss_bytes".into(), json!(h.server_rss));
            if let Value::Object(l) = h.latency.to_json() {
                o.extend(l);
            }
        }
    }
    if args.mode == Mode::Step {
        println!(
            "saturation: {}",
            result["saturation_rate_per_sender"].as_f64().map_or(
                "no step passed".into(),
                |r| format!(
                    "{r:.1} msg/s per sender = {} deliveries/s",
                    result["deliveries_per_s"]
                )
            )
        );
    }
    println!("RESULT {result}");
    Ok(())
}

type Senders = Vec<(usize, Sender)>;

/// Sends for `--duration` at `rate`, waits for the deliveries (at most
/// `--grace` after the last send) and measures.
async fn run_step(
    args: &Args,
    rate: f64,
    senders: Senders,
    receivers_per_room: &[u64],
    counters: &Arc<Counters>,
) -> anyhow::Result<(Senders, Step)> {
    let count = (rate * args.duration).round().max(1.0) as u64;
    let _ = counters.take_latency();
    let _ = counters.take_ack_latency();
    let received0 = counters.received.load(Ordering::Relaxed);
    let dup0 = counters.duplicated.load(Ordering::Relaxed);
    let errors0 = counters.send_errors.load(Ordering::Relaxed);
    let acked0 = counters.acked.load(Ordering::Relaxed);
    let cpu0 = stats::total_cpu_ticks(&args.server_pids);
    let own0 = stats::cpu_ticks(std::process::id());
    let start_us = wire::now_micros();
    let started = Instant::now();
    let total = senders.len().max(1);
    let mut tasks = Vec::with_capacity(senders.len());
    for (i, (room_idx, s)) in senders.into_iter().enumerate() {
        let offset = Duration::from_secs_f64(i as f64 / total as f64 / rate.max(0.001));
        let counters = counters.clone();
        let body = args.body_bytes;
        let share = args.change_share;
        tasks.push(tokio::spawn(async move {
            let (s, r) = s.run(count, rate, offset, body, share, counters).await;
            (room_idx, s, r)
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let mut expected = 0u64;
    for t in tasks {
        let (room_idx, s, r) = t.await.context("sender task")?;
        let messages = r.with_context(|| format!("sender {}", s.id))?;
        expected += messages * receivers_per_room.get(room_idx).copied().unwrap_or(0);
        back.push((room_idx, s));
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs_f64(args.grace);
    while counters.received.load(Ordering::Relaxed) - received0 < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let acked = counters.acked.load(Ordering::Relaxed) - acked0;
    let last_ack = counters.last_ack_us.load(Ordering::Relaxed);
    let ack_span = (last_ack.saturating_sub(start_us) as f64 / 1e6).max(sent_secs);
    let received = counters.received.load(Ordering::Relaxed) - received0;
    let last = counters.last_delivery_us.load(Ordering::Relaxed);
    let span = (last.saturating_sub(start_us) as f64 / 1e6).max(sent_secs);
    // Linux reports CPU time in USER_HZ ticks, 100 per second on every
    // mainstream architecture.
    let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / 100.0 / wall * 100.0;
    let cpu = cpu0
        .zip(stats::total_cpu_ticks(&args.server_pids))
        .map(|(a, b)| pct(a, b));
    let own = own0
        .zip(stats::cpu_ticks(std::process::id()))
        .map(|(a, b)| pct(a, b));
    let step = Step {
        rate,
        expected,
        received,
        duplicated: counters.duplicated.load(Ordering::Relaxed) - dup0,
        lost: expected.saturating_sub(received),
        send_errors: counters.send_errors.load(Ordering::Relaxed) - errors0,
        deliveries_per_s: received as f64 / span,
        acks_per_s: acked as f64 / ack_span,
        latency: Quantiles::of(&counters.take_latency()),
        ack_latency: Quantiles::of(&counters.take_ack_latency()),
        server_cpu_pct: cpu,
        generator_cpu_pct: own,
        server_rss: stats::total_rss(&args.server_pids),
    };
    Ok((back, step))
}

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}
