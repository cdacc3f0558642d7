//! chat-soak: the server's memory under churn. Starts a chat-server (or
//! attaches to one), samples its memory every second, and runs virtual
//! clients that connect, subscribe, send, read, unsubscribe, close and
//! reconnect for `--duration`, logging in again and creating and deleting
//! rooms now and then, so that about `--sockets` are open at any time while
//! connections, subscriptions, logins and rooms come and go. Then every
//! socket closes and the memory is sampled for `--settle` seconds more.
//!
//! ```sh
//! # the full soak: 2,000 sockets for 10 minutes, server on core 0
//! taskset -c 1 chat-soak --server-cpu 0 --sockets 2000 --duration 600 --settle 60
//! # a short try
//! chat-soak --sockets 200 --duration 40 --settle 15 --out /tmp/soak
//! # attach to a running server (its limits raised as `run.sh` does)
//! chat-soak --url http://127.0.0.1:8000 --pid "$(pgrep -n chat-server)"
//! ```
//!
//! Phases: `start` (the fresh server, `--idle` s), `setup` (users and rooms
//! over HTTP), `baseline` (`--idle` s idle), `churn` (`--duration` s),
//! `drain` (every socket closes, then `--settle` s idle). Writes
//! `samples.csv`, `soak.svg` (RSS and open sockets over time),
//! `summary.txt`, `summary.json` and `server.log` into `--out`, prints the
//! summary and one line `RESULT {json}`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chat_bench::sockets::{self, Ws};
use chat_bench::stats::{self, ProcMemory};
use chat_bench::{http, wire};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "chat-soak-secret-0123456789abcdef";

#[derive(Debug, Parser)]
#[command(about = "Soak: chat-server's memory under connection, subscription and login churn")]
struct Args {
    /// chat-server binary to start [default: next to this binary, else
    /// $CARGO_TARGET_DIR/release/chat-server, else target/release/chat-server].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Storage of the started server [default: a SQLite file in a temporary
    /// directory, removed at the end].
    #[arg(long)]
    storage: Option<String>,
    /// One more argument for the started server (repeat), e.g.
    /// `--server-arg=--socket-queue=4096`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Pin the started server to this core (`taskset -c N`).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Password hashing threads of the started server (each keeps 19 MiB).
    #[arg(long, default_value_t = 1)]
    hash_threads: usize,
    /// Attach to this running server instead of starting one (start it
    /// without rate and login limits and with a long access token TTL).
    #[arg(long)]
    url: Option<String>,
    /// The attached server's process id, for the memory samples.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// Sockets open at any time during the churn.
    #[arg(long, default_value_t = 2000)]
    sockets: usize,
    /// Registered users; sockets share them round-robin.
    #[arg(long, default_value_t = 500)]
    users: usize,
    /// Public rooms created at setup, shared by every socket.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// Each connection subscribes to 1 to this many of the rooms.
    #[arg(long, default_value_t = 3)]
    rooms_per_socket: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Seconds sampled after the last socket closed.
    #[arg(long, default_value_t = 45.0)]
    settle: f64,
    /// Seconds idle on the fresh server, and again after setup (baseline).
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    /// Seconds over which the first connections are spread.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Shortest stay of a connection, seconds.
    #[arg(long, default_value_t = 5.0)]
    stay_min: f64,
    /// Longest stay of a connection, seconds.
    #[arg(long, default_value_t = 30.0)]
    stay_max: f64,
    /// Mean seconds between a connection's sends (each wait 0.5-1.5 times it).
    #[arg(long, default_value_t = 10.0)]
    send_interval: f64,
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Share of cycles that first log in again with the password (a new
    /// refresh family; the client's previous one is logged out).
    #[arg(long, default_value_t = 0.1)]
    login_share: f64,
    /// Share of cycles that create a room of their own, subscribe to it,
    /// send into it and delete it before leaving.
    #[arg(long, default_value_t = 0.02)]
    room_share: f64,
    /// Share of cycles that end by dropping the TCP connection, without
    /// unsubscribing or a close handshake.
    #[arg(long, default_value_t = 0.1)]
    abrupt_share: f64,
    /// Seconds to wait for an ack, `subscribed` or `room_deleted`.
    #[arg(long, default_value_t = 10.0)]
    ack_timeout: f64,
    /// Registrations in flight at once during setup.
    #[arg(long, default_value_t = 4)]
    register_parallel: usize,
    /// Output directory [default: benches/results/soak-<date>-<time>/].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Setup,
    Baseline,
    Churn,
    Drain,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Start,
        Phase::Setup,
        Phase::Baseline,
        Phase::Churn,
        Phase::Drain,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Setup => "setup",
            Phase::Baseline => "baseline",
            Phase::Churn => "churn",
            Phase::Drain => "drain",
        }
    }

    fn from_u8(v: u8) -> Phase {
        Phase::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Phase::Drain)
    }
}

/// What the clients count, shared by all of them.
#[derive(Debug, Default)]
struct Tally {
    open: AtomicI64,
    connects: AtomicU64,
    connect_failed: AtomicU64,
    subscribes: AtomicU64,
    subscribe_failed: AtomicU64,
    unsubscribes: AtomicU64,
    logins: AtomicU64,
    login_failed: AtomicU64,
    logouts: AtomicU64,
    logout_failed: AtomicU64,
    rooms_created: AtomicU64,
    rooms_deleted: AtomicU64,
    room_failed: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    ack_missing: AtomicU64,
    delivered: AtomicU64,
    other_frames: AtomicU64,
    error_frames: AtomicU64,
    server_closed: AtomicU64,
    clean_closes: AtomicU64,
    close_timeouts: AtomicU64,
    abrupt: AtomicU64,
    /// The first distinct error descriptions.
    examples: Mutex<Vec<String>>,
}

const EXAMPLES: usize = 12;

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn note(&self, what: &str, detail: impl std::fmt::Display) {
        let mut line = format!("{what}: {detail}");
        if line.len() > 240 {
            let mut cut = 240;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        if let Ok(mut ex) = self.examples.lock()
            && ex.len() < EXAMPLES
            && !ex.contains(&line)
        {
            ex.push(line);
        }
    }

    fn errors(&self) -> u64 {
        [
            &self.connect_failed,
            &self.subscribe_failed,
            &self.login_failed,
            &self.logout_failed,
            &self.room_failed,
            &self.ack_missing,
            &self.error_frames,
            &self.server_closed,
            &self.close_timeouts,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One second's sample.
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    phase: Phase,
    mem: Option<ProcMemory>,
    fds: Option<u64>,
    open: i64,
    connects: u64,
    logins: u64,
    sent: u64,
    acked: u64,
    delivered: u64,
    errors: u64,
    bench_rss_kib: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (name, share) in [
        ("--login-share", args.login_share),
        ("--room-share", args.room_share),
        ("--abrupt-share", args.abrupt_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("{name} must be between 0 and 1");
        }
    }
    if args.sockets == 0 || args.users == 0 || args.rooms == 0 || args.rooms_per_socket == 0 {
        bail!("--sockets, --users, --rooms and --rooms-per-socket need at least one");
    }
    if !(args.stay_min > 0.0 && args.stay_max >= args.stay_min && args.send_interval > 0.0) {
        bail!("need 0 < --stay-min <= --stay-max and --send-interval > 0");
    }
    raise_nofile(args.sockets);
    // One thread, as chat-load: pin it with taskset, away from the server.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            tokio::select! {
                r = run(args) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
        })
}

/// Raises this process's descriptor limit to its hard limit; a server
/// started from here inherits it (its default connection cap is that
/// limit less 256).
fn raise_nofile(sockets: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard
                && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            {
                eprintln!("cannot raise the descriptor limit from {soft} to {hard}: {e}");
            }
            let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |l| l.0);
            // Each socket takes a descriptor here and one in the server,
            // whose connection cap is the limit less 256; HTTP calls and
            // the storage take more.
            if (now as usize) < sockets + 512 {
                eprintln!(
                    "warning: descriptor limit {now} (hard {hard}) is low for {sockets} sockets: \
                     raise it (ulimit -n) or expect failed connects"
                );
            }
        }
        Err(e) => eprintln!("cannot read the descriptor limit: {e}"),
    }
}

/// A chat-server started by this process: stopped with SIGTERM at the end,
/// killed if the run fails.
#[derive(Debug)]
struct Server {
    child: Child,
    /// Holds the SQLite file until the server is gone.
    _dir: Option<tempfile::TempDir>,
    storage: String,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to `wait` for the exit; its status.
    fn stop(&mut self, wait: Duration) -> String {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return "unknown pid".into();
        };
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            return format!("SIGTERM failed: {e}");
        }
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return format!(
                        "{status} {:.2} s after SIGTERM",
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(None) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return format!("still running {} s after SIGTERM: killed", wait.as_secs());
                }
                Err(e) => return format!("cannot wait: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The chat-server binary: the flag, else next to this binary, else in the
/// target directory.
fn server_binary(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("chat-server"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    candidates.push(target.join("release/chat-server"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no chat-server binary in {candidates:?}: build it \
                 (cargo build --release -p chat-server --bin chat-server) or pass --server-bin"
            )
        })
}

/// A storage URL without its password, to print.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts chat-server without rate or login limits, with access tokens
/// that outlive the run, its output in `log`.
fn start_server(args: &Args, log: &Path) -> anyhow::Result<(Server, String)> {
    let bin = server_binary(args.server_bin.as_deref())?;
    let port = free_port()?;
    let (dir, storage) = match &args.storage {
        Some(s) => (None, s.clone()),
        None => {
            let dir = tempfile::Builder::new().prefix("chat-soak").tempdir()?;
            let storage = format!("sqlite://{}", dir.path().join("soak.db").display());
            (Some(dir), storage)
        }
    };
    let ttl = (args.duration + args.settle + 2.0 * args.idle) as u64 + 3600;
    let mut cmd = match args.server_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--storage", &storage])
        .args(["--broker", "local://"])
        .args(["--jwt-secret", SECRET])
        // A soak's clients must not meet the limits meant for abuse: sends
        // per socket and per user, failed logins (none should fail).
        .args(["--rate-limit", "0", "--user-rate-limit", "0"])
        .args(["--login-attempts-per-account", "0"])
        .args(["--login-attempts-per-address", "0"])
        .args(["--access-token-ttl", &ttl.to_string()])
        .args(["--password-hash-threads", &args.hash_threads.to_string()])
        .args(&args.server_args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    eprintln!(
        "started {} (pid {}) on 127.0.0.1:{port}, storage {}",
        bin.display(),
        child.id(),
        redact(&storage)
    );
    Ok((
        Server {
            child,
            _dir: dir,
            storage: redact(&storage),
        },
        format!("http://127.0.0.1:{port}"),
    ))
}

async fn wait_healthy(
    http: &reqwest::Client,
    base: &str,
    server: &mut Option<Server>,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(s) = server
            && let Ok(Some(status)) = s.child.try_wait()
        {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("chat-server exited ({status}):\n{tail}");
        }
        if Instant::now() > deadline {
            bail!("no answer from {base}/healthz in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything a virtual client needs.
#[derive(Debug)]
struct Shared {
    base: String,
    ws_base: String,
    http: reqwest::Client,
    prefix: String,
    rooms: Vec<i64>,
    users: usize,
    rooms_per_socket: usize,
    stay: (f64, f64),
    send_interval: f64,
    body_bytes: usize,
    login_share: f64,
    room_share: f64,
    abrupt_share: f64,
    ack_timeout: Duration,
    /// When the churn ends: no connection outlives it.
    end: tokio::time::Instant,
    tally: Arc<Tally>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    wire::now_micros();
    let t0 = Instant::now();
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_out_dir(),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let log = out.join("server.log");
    let http_client = reqwest::Client::builder()
        // Idle keep-alive connections are server memory too: close them
        // soon, so the baseline and the drain do not carry them.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .build()?;

    let (mut server, base, pid) = match &args.url {
        Some(url) => (None, url.trim_end_matches('/').to_owned(), args.pid),
        None => {
            let (s, base) = start_server(&args, &log)?;
            let pid = s.pid();
            (Some(s), base, Some(pid))
        }
    };
    wait_healthy(&http_client, &base, &mut server, &log).await?;
    let storage = server
        .as_ref()
        .map_or_else(|| "(attached)".to_owned(), |s| s.storage.clone());
    if pid.is_none() {
        eprintln!("warning: no --pid: no memory samples, only sockets");
    }

    let tally = Arc::new(Tally::default());
    let phase = Arc::new(AtomicU8::new(Phase::Start as u8));
    let mut phases: Vec<(Phase, f64)> = vec![(Phase::Start, 0.0)];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample(pid, phase.clone(), tally.clone(), t0, stop_rx));
    let enter = |p: Phase, phases: &mut Vec<(Phase, f64)>| {
        phase.store(p as u8, Ordering::Relaxed);
        phases.push((p, t0.elapsed().as_secs_f64()));
        eprintln!("-- {} at {:.0} s", p.name(), t0.elapsed().as_secs_f64());
    };

    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    enter(Phase::Setup, &mut phases);
    let prefix = format!("s{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let setup = Instant::now();
    let tokens = http::register_users(
        &http_client,
        &base,
        &prefix,
        args.users,
        args.register_parallel,
    )
    .await
    .context("registering users")?;
    let rooms = http::create_rooms(&http_client, &base, &tokens[0], &prefix, args.rooms)
        .await
        .context("creating rooms")?;
    eprintln!(
        "setup: {} users, {} rooms in {:.1} s",
        tokens.len(),
        rooms.len(),
        setup.elapsed().as_secs_f64()
    );
    enter(Phase::Baseline, &mut phases);
    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;

    enter(Phase::Churn, &mut phases);
    let cpu_at = || {
        (
            pid.and_then(stats::cpu_ticks),
            stats::cpu_ticks(std::process::id()),
            Instant::now(),
        )
    };
    let cpu0 = cpu_at();
    let churn_start = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        ws_base: base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1),
        base: base.clone(),
        http: http_client.clone(),
        prefix: prefix.clone(),
        rooms,
        users: args.users,
        rooms_per_socket: args.rooms_per_socket,
        stay: (args.stay_min, args.stay_max),
        send_interval: args.send_interval,
        body_bytes: args.body_bytes,
        login_share: args.login_share,
        room_share: args.room_share,
        abrupt_share: args.abrupt_share,
        ack_timeout: Duration::from_secs_f64(args.ack_timeout),
        end: churn_start + Duration::from_secs_f64(args.duration),
        tally: tally.clone(),
    });
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..args.sockets {
        let delay = Duration::from_secs_f64(args.ramp * id as f64 / args.sockets as f64);
        let token = tokens[id % tokens.len()].clone();
        clients.spawn(client(id, token, shared.clone(), delay));
    }
    drop(tokens);
    tokio::time::sleep_until(shared.end).await;

    enter(Phase::Drain, &mut phases);
    let cpu1 = cpu_at();
    // Linux counts CPU time in USER_HZ ticks, 100 a second.
    let pct = |a: Option<u64>, b: Option<u64>| {
        a.zip(b)
            .map(|(a, b)| b.saturating_sub(a) as f64 / (cpu1.2 - cpu0.2).as_secs_f64().max(0.001))
    };
    let cpu = (pct(cpu0.0, cpu1.0), pct(cpu0.1, cpu1.1));
    // Clients finish their connection: acks, unsubscribes, close handshake.
    let grace = shared.ack_timeout * 3 + Duration::from_secs(15);
    let stuck = match tokio::time::timeout(grace, async {
        while clients.join_next().await.is_some() {}
    })
    .await
    {
        Ok(()) => 0,
        Err(_) => {
            let n = clients.len();
            clients.abort_all();
            while clients.join_next().await.is_some() {}
            n
        }
    };
    if stuck > 0 {
        tally.note(
            "drain",
            format!("{stuck} clients still busy after {grace:?}: aborted"),
        );
    }
    drop(shared);
    drop(http_client);
    let all_closed = t0.elapsed().as_secs_f64();
    eprintln!(
        "every socket closed {:.1} s after the churn ended",
        all_closed - phases.last().map_or(0.0, |p| p.1)
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let _ = stop_tx.send(true);
    let samples = sampler.await.context("sampler")?;

    // After the last sample: what the server thinks is still open.
    let connections_left = server_connections(&base).await;
    let stopped = server.as_mut().map(|s| s.stop(Duration::from_secs(20)));

    let report = Report {
        args: &args,
        storage: &storage,
        pid,
        samples: &samples,
        phases: &phases,
        all_closed,
        tally: &tally,
        connections_left,
        stopped,
        stuck,
        churn_secs: args.duration,
        cpu,
    };
    let summary = report.summary();
    let csv = out.join("samples.csv");
    let svg = out.join("soak.svg");
    let txt = out.join("summary.txt");
    let js = out.join("summary.json");
    write_csv(&csv, &samples)?;
    plot(&svg, &report).context("plotting")?;
    let result = report.json();
    std::fs::write(&txt, &summary)?;
    std::fs::write(&js, serde_json::to_string_pretty(&result)?)?;
    print!("{summary}");
    println!("files:");
    for f in [&csv, &svg, &txt, &js, &log] {
        if f.exists() {
            println!("  {}", f.display());
        }
    }
    println!("RESULT {result}");
    Ok(())
}

/// `benches/results/soak-YYYY-MM-DD-HHMMSS` (UTC).
fn default_out_dir() -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86_400;
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "results/soak-{y:04}-{m:02}-{d:02}-{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `chat_connections` from `/metrics`, on a connection of its own.
async fn server_connections(base: &str) -> Option<f64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("chat_connections "))
        .and_then(|v| v.trim().parse().ok())
}

/// Samples the server every second until told to stop; a progress line
/// every ten.
async fn sample(
    pid: Option<u32>,
    phase: Arc<AtomicU8>,
    tally: Arc<Tally>,
    t0: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        let s = Sample {
            t: t0.elapsed().as_secs_f64(),
            phase: Phase::from_u8(phase.load(Ordering::Relaxed)),
            mem: pid.and_then(stats::proc_memory),
            fds: pid.and_then(stats::open_fds),
            open: tally.open.load(Ordering::Relaxed),
            connects: Tally::get(&tally.connects),
            logins: Tally::get(&tally.logins),
            sent: Tally::get(&tally.sent),
            acked: Tally::get(&tally.acked),
            delivered: Tally::get(&tally.delivered),
            errors: tally.errors(),
            bench_rss_kib: stats::own_rss().map(|b| b / 1024),
        };
        if samples.len() % 10 == 0 {
            eprintln!(
                "t={:>5.0} s {:<8} rss {:>7} MiB  open {:>5}  connects {:>7}  sent {:>7}  acked {:>7}  delivered {:>9}  errors {}",
                s.t,
                s.phase.name(),
                s.mem
                    .map_or("n/a".into(), |m| format!("{:.1}", mib(m.rss_kib))),
                s.open,
                s.connects,
                s.sent,
                s.acked,
                s.delivered,
                s.errors
            );
        }
        samples.push(s);
        if *stop.borrow() {
            return samples;
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One virtual client: cycles of connect, subscribe, send and read, leave,
/// until the churn ends.
async fn client(id: usize, mut access: String, sh: Arc<Shared>, delay: Duration) {
    let mut rng = SmallRng::from_os_rng();
    let user = http::username(&sh.prefix, id % sh.users);
    let mut refresh: Option<String> = None;
    let mut must_login = false;
    let mut counter = 0u64;
    tokio::time::sleep(delay).await;
    let mut cycle = 0u64;
    while tokio::time::Instant::now() < sh.end {
        cycle += 1;
        if must_login || rng.random_bool(sh.login_share) {
            match http::login(&sh.http, &sh.base, &user).await {
                Ok(t) => {
                    Tally::add(&sh.tally.logins);
                    access = t.access;
                    must_login = false;
                    if let Some(old) = refresh.replace(t.refresh) {
                        match http::logout(&sh.http, &sh.base, &old).await {
                            Ok(()) => Tally::add(&sh.tally.logouts),
                            Err(e) => {
                                Tally::add(&sh.tally.logout_failed);
                                sh.tally.note("logout", format!("{e:#}"));
                            }
                        }
                    }
                }
                Err(e) => {
                    Tally::add(&sh.tally.login_failed);
                    sh.tally.note("login", format!("{e:#}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let own = if rng.random_bool(sh.room_share) {
            let name = format!("{}c{id}n{cycle}", sh.prefix);
            match http::create_room(&sh.http, &sh.base, &access, &name).await {
                Ok(room) => {
                    Tally::add(&sh.tally.rooms_created);
                    Some(room)
                }
                Err(e) => {
                    Tally::add(&sh.tally.room_failed);
                    sh.tally.note("create room", format!("{e:#}"));
                    None
                }
            }
        } else {
            None
        };
        match visit(id, &access, own, &sh, &mut rng, &mut counter).await {
            Visit::Done => {}
            Visit::Unauthorized => must_login = true,
            Visit::Failed => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        // A client that left comes back within a second.
        tokio::time::sleep(Duration::from_secs_f64(rng.random_range(0.0..1.0))).await;
    }
    if let Some(old) = refresh {
        let _ = http::logout(&sh.http, &sh.base, &old).await;
    }
}

enum Visit {
    Done,
    /// The handshake was refused 401: log in again.
    Unauthorized,
    /// Connecting or subscribing failed: wait before the next try.
    Failed,
}

/// What a frame from the server was, once counted.
enum Seen {
    Subscribed(i64),
    RoomDeleted(i64),
    Error,
    Closed(String),
    Other,
}

/// One open socket and the sends it waits for acks of.
struct Conn<'a> {
    ws: Ws,
    tally: &'a Tally,
    pending: VecDeque<(String, tokio::time::Instant)>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.tally.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<'a> Conn<'a> {
    fn new(ws: Ws, tally: &'a Tally) -> Self {
        tally.open.fetch_add(1, Ordering::Relaxed);
        Tally::add(&tally.connects);
        Self {
            ws,
            tally,
            pending: VecDeque::new(),
        }
    }

    async fn next(&mut self) -> Seen {
        match self.ws.next().await {
            Some(Ok(Message::Text(t))) => self.on_text(t.as_str()),
            Some(Ok(Message::Close(c))) => Seen::Closed(format!("close frame {c:?}")),
            Some(Ok(_)) => Seen::Other,
            Some(Err(e)) => Seen::Closed(format!("read: {e}")),
            None => Seen::Closed("socket ended".into()),
        }
    }

    fn on_text(&mut self, t: &str) -> Seen {
        if wire::is_message(t) {
            Tally::add(&self.tally.delivered);
            return Seen::Other;
        }
        if wire::is_ack(t) {
            Tally::add(&self.tally.acked);
            self.answered(t);
            return Seen::Other;
        }
        if wire::is_error(t) {
            Tally::add(&self.tally.error_frames);
            self.tally.note("error frame", t);
            // An error answers the send it names: counted here, not as a
            // missing ack.
            self.answered(t);
            return Seen::Error;
        }
        if wire::is_subscribed(t) || t.starts_with(r#"{"type":"room_deleted""#) {
            let room = serde_json::from_str::<Value>(t)
                .ok()
                .and_then(|v| v["room"].as_i64())
                .unwrap_or(0);
            return if wire::is_subscribed(t) {
                Seen::Subscribed(room)
            } else {
                Seen::RoomDeleted(room)
            };
        }
        Tally::add(&self.tally.other_frames);
        Seen::Other
    }

    /// Drops the pending send an ack or error names.
    fn answered(&mut self, t: &str) {
        const KEY: &str = r#""client_id":""#;
        let Some(start) = t.find(KEY).map(|i| i + KEY.len()) else {
            return;
        };
        let Some(len) = t[start..].find('"') else {
            return;
        };
        let cid = &t[start..start + len];
        if let Some(i) = self.pending.iter().position(|(c, _)| c == cid) {
            self.pending.remove(i);
        }
    }

    /// Counts the sends unanswered past `timeout` as missing acks.
    fn expire(&mut self, timeout: Duration) {
        let now = tokio::time::Instant::now();
        while let Some((cid, at)) = self.pending.front() {
            if now.duration_since(*at) < timeout {
                break;
            }
            Tally::add(&self.tally.ack_missing);
            self.tally
                .note("missing ack", format!("{cid} unanswered after {timeout:?}"));
            self.pending.pop_front();
        }
    }

    /// Reads until a frame `want` accepts, the socket closes or `timeout`.
    async fn expect(
        &mut self,
        timeout: Duration,
        want: impl Fn(&Seen) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return Err(format!("nothing in {timeout:?}")),
                Ok(Seen::Closed(why)) => return Err(why),
                Ok(seen) if want(&seen) => return Ok(()),
                Ok(_) => {}
            }
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| format!("write: {e}"))
    }
}

/// One connection: open, subscribe, stay (sending and reading), leave.
async fn visit(
    id: usize,
    access: &str,
    own: Option<i64>,
    sh: &Shared,
    rng: &mut SmallRng,
    counter: &mut u64,
) -> Visit {
    let tally = &*sh.tally;
    let ws = match tokio::time::timeout(
        Duration::from_secs(15),
        sockets::connect(&sh.ws_base, access),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            Tally::add(&tally.connect_failed);
            let unauthorized = e.chain().any(|c| {
                matches!(c.downcast_ref::<tungstenite::Error>(),
                    Some(tungstenite::Error::Http(r)) if r.status() == 401)
            });
            tally.note("connect", format!("{e:#}"));
            if let Some(room) = own {
                delete_own(sh, access, room).await;
            }
            return if unauthorized {
                Visit::Unauthorized
            } else {
                Visit::Failed
            };
        }
        Err(_) => {
            Tally::add(&tally.connect_failed);
            tally.note("connect", "no handshake in 15 s");
            if let Some(room) = own {
                delete_own(sh, access, room).await;
            }
            return Visit::Failed;
        }
    };
    let mut conn = Conn::new(ws, tally);

    let k = rng.random_range(1..=sh.rooms_per_socket.min(sh.rooms.len()));
    let mut rooms: Vec<i64> = rand::seq::index::sample(rng, sh.rooms.len(), k)
        .into_iter()
        .map(|i| sh.rooms[i])
        .collect();
    rooms.extend(own);
    for &room in &rooms {
        let sent = conn
            .send_text(format!(r#"{{"type":"subscribe","room":{room}}}"#))
            .await;
        let r = match sent {
            Ok(()) => {
                conn.expect(sh.ack_timeout, |s| {
                    matches!(s, Seen::Subscribed(r) if *r == room) || matches!(s, Seen::Error)
                })
                .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => Tally::add(&tally.subscribes),
            Err(why) => {
                Tally::add(&tally.subscribe_failed);
                tally.note("subscribe", why);
                drop(conn);
                if let Some(room) = own {
                    delete_own(sh, access, room).await;
                }
                return Visit::Failed;
            }
        }
    }

    let now = tokio::time::Instant::now();
    let stay = Duration::from_secs_f64(rng.random_range(sh.stay.0..=sh.stay.1));
    let leave_at = (now + stay).min(sh.end);
    let gap =
        |rng: &mut SmallRng| Duration::from_secs_f64(sh.send_interval * rng.random_range(0.5..1.5));
    let mut next_send = now + gap(rng);
    let mut body = String::with_capacity(sh.body_bytes + 32);
    loop {
        tokio::select! {
            seen = conn.next() => {
                if let Seen::Closed(why) = seen {
                    // The server ended the socket (4408 too slow, 4401 token
                    // expired, a restart…): a failure of the soak.
                    Tally::add(&tally.server_closed);
                    tally.note("closed by the server", why);
                    return Visit::Failed;
                }
            }
            () = tokio::time::sleep_until(next_send), if next_send < leave_at => {
                let room = rooms[rng.random_range(0..rooms.len())];
                *counter += 1;
                wire::write_body(&mut body, wire::now_micros(), id as u32, *counter as u32, sh.body_bytes);
                let cid = format!("c{id}-{counter}");
                let frame = format!(
                    r#"{{"type":"send","room":{room},"body":"{body}","client_id":"{cid}"}}"#
                );
                if let Err(why) = conn.send_text(frame).await {
                    Tally::add(&tally.server_closed);
                    tally.note("send", why);
                    return Visit::Failed;
                }
                Tally::add(&tally.sent);
                conn.pending.push_back((cid, tokio::time::Instant::now()));
                next_send += gap(rng);
            }
            () = tokio::time::sleep_until(leave_at) => break,
        }
        conn.expire(sh.ack_timeout);
    }

    // Leaving: the last acks first.
    let deadline = tokio::time::Instant::now() + sh.ack_timeout;
    while !conn.pending.is_empty() {
        match tokio::time::timeout_at(deadline, conn.next()).await {
            Err(_) => break,
            Ok(Seen::Closed(why)) => {
                Tally::add(&tally.server_closed);
                tally.note("closed by the server", why);
                return Visit::Failed;
            }
            Ok(_) => {}
        }
    }
    conn.expire(Duration::ZERO);
    // A room of its own is deleted while subscribed: the socket hears
    // `room_deleted`.
    if let Some(room) = own {
        if delete_own(sh, access, room).await
            && let Err(why) = conn
                .expect(
                    sh.ack_timeout,
                    |s| matches!(s, Seen::RoomDeleted(r) if *r == room),
                )
                .await
        {
            Tally::add(&tally.room_failed);
            tally.note("no room_deleted", why);
        }
        rooms.pop();
    }
    if rng.random_bool(sh.abrupt_share) {
        // Gone without a word: the server finds out from the TCP close.
        Tally::add(&tally.abrupt);
        return Visit::Done;
    }
    for room in rooms {
        if conn
            .send_text(format!(r#"{{"type":"unsubscribe","room":{room}}}"#))
            .await
            .is_ok()
        {
            Tally::add(&tally.unsubscribes);
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        conn.ws
            .close(None)
            .await
            .map_err(|e| format!("close: {e}"))?;
        // Read to the server's close frame and the end of the stream.
        while let Some(frame) = conn.ws.next().await {
            match frame {
                Ok(Message::Text(t)) => {
                    conn.on_text(t.as_str());
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => return Err(format!("closing: {e}")),
            }
        }
        Ok(())
    })
    .await;
    match closed {
        Ok(Ok(())) => Tally::add(&tally.clean_closes),
        Ok(Err(why)) => {
            Tally::add(&tally.close_timeouts);
            tally.note("close", why);
        }
        Err(_) => {
            Tally::add(&tally.close_timeouts);
            tally.note("close", "no close answer in 10 s");
        }
    }
    Visit::Done
}

/// Deletes a room the client created; whether it worked.
async fn delete_own(sh: &Shared, access: &str, room: i64) -> bool {
    match http::delete_room(&sh.http, &sh.base, access, room).await {
        Ok(()) => {
            Tally::add(&sh.tally.rooms_deleted);
            true
        }
        Err(e) => {
            Tally::add(&sh.tally.room_failed);
            sh.tally.note("delete room", format!("{e:#}"));
            false
        }
    }
}

fn write_csv(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "t_s,phase,rss_kib,hwm_kib,anon_kib,statm_size_kib,statm_resident_kib,statm_shared_kib,\
         threads,fds,open_sockets,connects,logins,sent,acked,delivered,errors,bench_rss_kib"
    )?;
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        let m = s.mem;
        writeln!(
            f,
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.t,
            s.phase.name(),
            opt(m.map(|m| m.rss_kib)),
            opt(m.map(|m| m.hwm_kib)),
            opt(m.map(|m| m.anon_kib)),
            opt(m.map(|m| m.statm_size_kib)),
            opt(m.map(|m| m.statm_resident_kib)),
            opt(m.map(|m| m.statm_shared_kib)),
            opt(m.map(|m| m.threads)),
            opt(s.fds),
            s.open,
            s.connects,
            s.logins,
            s.sent,
            s.acked,
            s.delivered,
            s.errors,
            opt(s.bench_rss_kib),
        )?;
    }
    f.flush()?;
    Ok(())
}

/// The figures of a finished run.
struct Report<'a> {
    args: &'a Args,
    storage: &'a str,
    pid: Option<u32>,
    samples: &'a [Sample],
    phases: &'a [(Phase, f64)],
    all_closed: f64,
    tally: &'a Tally,
    connections_left: Option<f64>,
    stopped: Option<String>,
    stuck: usize,
    churn_secs: f64,
    /// CPU % of one core during the churn: the server's, this process's.
    cpu: (Option<f64>, Option<f64>),
}

/// A sample's figure: its time and value.
#[derive(Debug, Clone, Copy)]
struct At {
    t: f64,
    kib: u64,
}

impl Report<'_> {
    fn in_phase(&self, p: Phase) -> impl DoubleEndedIterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.phase == p)
    }

    fn last_rss(&self, p: Phase) -> Option<At> {
        self.in_phase(p).rev().find_map(|s| {
            s.mem.map(|m| At {
                t: s.t,
                kib: m.rss_kib,
            })
        })
    }

    fn last_of(&self, p: Phase, f: impl Fn(&Sample) -> Option<u64>) -> Option<u64> {
        self.in_phase(p).rev().find_map(f)
    }

    /// The highest RSS during churn and drain.
    fn peak(&self) -> Option<At> {
        self.samples
            .iter()
            .filter(|s| matches!(s.phase, Phase::Churn | Phase::Drain))
            .filter_map(|s| {
                s.mem.map(|m| At {
                    t: s.t,
                    kib: m.rss_kib,
                })
            })
            .max_by_key(|a| a.kib)
    }

    /// Least-squares slope of the RSS over the second half of the churn,
    /// in KiB per minute: what still grows once the sockets are all open.
    fn late_slope(&self) -> Option<f64> {
        let churn: Vec<(f64, f64)> = self
            .in_phase(Phase::Churn)
            .filter_map(|s| s.mem.map(|m| (s.t, m.rss_kib as f64)))
            .collect();
        let half = &churn[churn.len() / 2..];
        if half.len() < 3 {
            return None;
        }
        let n = half.len() as f64;
        let mt = half.iter().map(|p| p.0).sum::<f64>() / n;
        let mr = half.iter().map(|p| p.1).sum::<f64>() / n;
        let num: f64 = half.iter().map(|p| (p.0 - mt) * (p.1 - mr)).sum();
        let den: f64 = half.iter().map(|p| (p.0 - mt).powi(2)).sum();
        (den > 0.0).then(|| num / den * 60.0)
    }

    fn open_during_churn(&self) -> (i64, f64) {
        let churn: Vec<i64> = self.in_phase(Phase::Churn).map(|s| s.open).collect();
        let max = churn.iter().copied().max().unwrap_or(0);
        // The mean after the ramp (the first tenth of the churn).
        let tail = &churn[churn.len() / 10..];
        let mean = if tail.is_empty() {
            0.0
        } else {
            tail.iter().sum::<i64>() as f64 / tail.len() as f64
        };
        (max, mean)
    }

    fn summary(&self) -> String {
        let t = self.tally;
        let g = Tally::get;
        let a = self.args;
        let mut s = String::new();
        let show = |x: Option<At>| x.map_or("n/a".to_owned(), |x| format!("{:8.1}", mib(x.kib)));
        let _ = writeln!(
            s,
            "chat-soak: {} sockets ({} users, {} rooms, 1-{} rooms per socket), {:.0} s churn, {:.0} s settle; \
             server pid {}, storage {}",
            a.sockets,
            a.users,
            a.rooms,
            a.rooms_per_socket,
            a.duration,
            a.settle,
            self.pid.map_or("n/a".into(), |p| p.to_string()),
            self.storage
        );
        let start = self.last_rss(Phase::Start);
        let base = self.last_rss(Phase::Baseline);
        let peak = self.peak();
        let end = self.last_rss(Phase::Churn);
        let drained = self.last_rss(Phase::Drain);
        let _ = writeln!(s, "server RSS (MiB):");
        let _ = writeln!(s, "  start                 {}", show(start));
        let _ = writeln!(s, "  baseline (after setup){}", show(base));
        let _ = writeln!(
            s,
            "  peak                  {}{}",
            show(peak),
            peak.map_or(String::new(), |p| format!("  at t = {:.0} s", p.t))
        );
        let _ = writeln!(s, "  end of churn          {}", show(end));
        let _ = writeln!(s, "  after drain           {}", show(drained));
        if let (Some(b), Some(d)) = (base, drained) {
            let diff = mib(d.kib) - mib(b.kib);
            let _ = writeln!(s, "  drain - baseline      {diff:+8.1}");
            if let Some(p) = peak
                && p.kib > b.kib
            {
                let back = (p.kib as f64 - d.kib as f64) / (p.kib as f64 - b.kib as f64);
                let _ = writeln!(
                    s,
                    "  given back            {:8.0} % of the growth from baseline to peak",
                    back * 100.0
                );
            }
        }
        if let Some(slope) = self.late_slope() {
            let _ = writeln!(
                s,
                "  churn, second half    {:+8.2} MiB/min (least-squares slope)",
                slope / 1024.0
            );
        }
        let fds = |p| self.last_of(p, |s| s.fds);
        let threads = |p| self.last_of(p, |s| s.mem.map(|m| m.threads));
        let o = |v: Option<u64>| v.map_or("n/a".into(), |v| v.to_string());
        let _ = writeln!(
            s,
            "server descriptors: baseline {}, end of churn {}, after drain {}; threads: baseline {}, after drain {}",
            o(fds(Phase::Baseline)),
            o(fds(Phase::Churn)),
            o(fds(Phase::Drain)),
            o(threads(Phase::Baseline)),
            o(threads(Phase::Drain)),
        );
        let _ = writeln!(
            s,
            "server chat_connections after drain: {}; server stop: {}",
            self.connections_left
                .map_or("n/a".into(), |c| format!("{c}")),
            self.stopped
                .as_deref()
                .unwrap_or("(attached, left running)")
        );
        let (max_open, mean_open) = self.open_during_churn();
        let connects = g(&t.connects);
        let pct = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{c:.0} %"));
        let _ = writeln!(
            s,
            "CPU during the churn (of one core): server {}, chat-soak {}",
            pct(self.cpu.0),
            pct(self.cpu.1)
        );
        let _ = writeln!(
            s,
            "sockets: {max_open} open at most, {mean_open:.0} on average after the ramp; every socket closed {:.1} s after the churn",
            self.all_closed
                - self
                    .phases
                    .iter()
                    .find(|p| p.0 == Phase::Drain)
                    .map_or(0.0, |p| p.1)
        );
        let _ = writeln!(
            s,
            "totals: {connects} connections opened ({:.1}/s), {} closed cleanly, {} dropped without a close; \
             {} subscribes, {} unsubscribes",
            connects as f64 / self.churn_secs,
            g(&t.clean_closes),
            g(&t.abrupt),
            g(&t.subscribes),
            g(&t.unsubscribes)
        );
        let _ = writeln!(
            s,
            "        {} logins during churn (+{} at setup), {} logouts; {} rooms created, {} deleted",
            g(&t.logins),
            a.users,
            g(&t.logouts),
            g(&t.rooms_created),
            g(&t.rooms_deleted)
        );
        let _ = writeln!(
            s,
            "        messages: {} sent, {} acked, {} delivered; {} other frames (presence, members…)",
            g(&t.sent),
            g(&t.acked),
            g(&t.delivered),
            g(&t.other_frames)
        );
        let _ = writeln!(
            s,
            "errors: {} (connects failed {}, subscribes failed {}, logins failed {}, logouts failed {}, \
             room ops failed {}, missing acks {}, error frames {}, closed by the server {}, close handshakes failed {}{})",
            t.errors(),
            g(&t.connect_failed),
            g(&t.subscribe_failed),
            g(&t.login_failed),
            g(&t.logout_failed),
            g(&t.room_failed),
            g(&t.ack_missing),
            g(&t.error_frames),
            g(&t.server_closed),
            g(&t.close_timeouts),
            if self.stuck > 0 {
                format!(", {} clients aborted at drain", self.stuck)
            } else {
                String::new()
            }
        );
        if let Ok(ex) = t.examples.lock() {
            for e in ex.iter() {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    fn json(&self) -> Value {
        let t = self.tally;
        let g = Tally::get;
        let kib = |x: Option<At>| x.map(|x| x.kib);
        let (max_open, mean_open) = self.open_during_churn();
        let mut v = json!({
            "sockets": self.args.sockets, "users": self.args.users, "rooms": self.args.rooms,
            "duration_s": self.args.duration, "settle_s": self.args.settle,
            "storage": self.storage, "server_pid": self.pid,
            "rss_start_kib": kib(self.last_rss(Phase::Start)),
            "rss_baseline_kib": kib(self.last_rss(Phase::Baseline)),
            "rss_peak_kib": kib(self.peak()),
            "rss_end_of_churn_kib": kib(self.last_rss(Phase::Churn)),
            "rss_after_drain_kib": kib(self.last_rss(Phase::Drain)),
            "rss_late_churn_slope_kib_per_min": self.late_slope(),
            "fds_baseline": self.last_of(Phase::Baseline, |s| s.fds),
            "fds_after_drain": self.last_of(Phase::Drain, |s| s.fds),
            "server_connections_after_drain": self.connections_left,
            "open_max": max_open, "open_mean": mean_open,
            "phases": self.phases.iter().map(|(p, t)| json!({"phase": p.name(), "t_s": t})).collect::<Vec<_>>(),
            "all_closed_t_s": self.all_closed,
            "server_cpu_pct": self.cpu.0, "soak_cpu_pct": self.cpu.1,
        });
        // json! in two parts: one object this long passes the macro's
        // recursion limit.
        let totals = json!({
            "connects": g(&t.connects), "clean_closes": g(&t.clean_closes), "abrupt_closes": g(&t.abrupt),
            "subscribes": g(&t.subscribes), "unsubscribes": g(&t.unsubscribes),
            "logins": g(&t.logins), "logouts": g(&t.logouts),
            "rooms_created": g(&t.rooms_created), "rooms_deleted": g(&t.rooms_deleted),
            "sent": g(&t.sent), "acked": g(&t.acked), "delivered": g(&t.delivered),
            "errors": t.errors(), "connect_failed": g(&t.connect_failed),
            "subscribe_failed": g(&t.subscribe_failed), "login_failed": g(&t.login_failed),
            "logout_failed": g(&t.logout_failed), "room_failed": g(&t.room_failed),
            "ack_missing": g(&t.ack_missing), "error_frames": g(&t.error_frames),
            "server_closed": g(&t.server_closed), "close_failed": g(&t.close_timeouts),
            "clients_aborted": self.stuck,
        });
        if let (Some(o), Value::Object(more)) = (v.as_object_mut(), totals) {
            o.extend(more);
        }
        v
    }
}

/// RSS (MiB, left axis) and open sockets (right axis) over time, the
/// phases shaded and named, the baseline RSS dashed, the moment every
/// socket had closed dotted.
fn plot(path: &Path, r: &Report<'_>) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e:?}");
    let samples = r.samples;
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.mem.map(|m| (s.t, mib(m.rss_kib))))
        .collect();
    let open: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.open as f64)).collect();
    // Headroom above the lines for the phase names.
    let rss_top = rss.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let open_top = open.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;

    let root = SVGBackend::new(path, (1200, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let title = format!(
        "chat-soak: {} sockets, {} users, {} rooms, {:.0} s churn, {:.0} s settle, on {}",
        r.args.sockets,
        r.args.users,
        r.args.rooms,
        r.args.duration,
        r.args.settle,
        r.storage.split("://").next().unwrap_or(r.storage)
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rss_top)
        .map_err(e)?
        .set_secondary_coord(0.0..t_max, 0.0..open_top);

    let shades = [
        RGBColor(200, 200, 200),
        RGBColor(255, 210, 150),
        RGBColor(170, 210, 255),
        RGBColor(180, 235, 180),
        RGBColor(235, 190, 235),
    ];
    for (i, (phase, start)) in r.phases.iter().enumerate() {
        let end = r.phases.get(i + 1).map_or(t_max, |p| p.1);
        let shade = shades[i % shades.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*start, 0.0), (end, rss_top)],
                shade.mix(0.35).filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*start, 0.0), (*start, rss_top)],
                BLACK.mix(0.5).stroke_width(1),
            )))
            .map_err(e)?;
        // Short phases lie side by side: their names on three rows.
        let row = (i % 3) as f64;
        chart
            .draw_series(std::iter::once(Text::new(
                phase.name().to_owned(),
                (*start + t_max * 0.003, rss_top * (0.985 - 0.04 * row)),
                ("sans-serif", 14).into_font().color(&BLACK),
            )))
            .map_err(e)?;
    }
    chart
        .configure_mesh()
        .x_desc("seconds since the server started")
        .y_desc("server RSS (MiB)")
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    chart
        .configure_secondary_axes()
        .y_desc("open sockets")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    if let Some(b) = r.last_rss(Phase::Baseline) {
        let y = mib(b.kib);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, y), (t_max, y)],
                6,
                4,
                RGBColor(120, 0, 0).mix(0.7).stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("baseline RSS {y:.1} MiB"))
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    RGBColor(120, 0, 0).stroke_width(1),
                )
            });
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(r.all_closed, 0.0), (r.all_closed, rss_top)],
            2,
            3,
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label("every socket closed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    if !rss.is_empty() {
        chart
            .draw_series(LineSeries::new(rss, RED.stroke_width(2)))
            .map_err(e)?
            .label("server RSS (MiB, left)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .draw_secondary_series(LineSeries::new(open, BLUE.stroke_width(1)))
        .map_err(e)?
        .label("open sockets (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(1)));
    // Bottom right, a little above the axis: the drain, where the sockets
    // are at zero and the RSS well above the box.
    let (w, h) = chart.plotting_area().dim_in_pixel();
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(
            w as i32 - 240,
            h as i32 - 120,
        ))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, redact};

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://bench:secret@127.0.0.1:5432/test?x=y@z"),
            "postgres://bench@127.0.0.1:5432/test?x=y@z"
        );
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        assert_eq!(redact("memory://"), "memory://");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
