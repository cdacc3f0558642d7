//! The per-socket send path: what one message costs for each socket that
//! receives it, in three layers.
//!
//! - `hub_deliver`: the hub puts one message event on 1,000 sockets' queues
//!   (the queues are drained outside the timing).
//! - `ws_frame`: tungstenite frames one `message` frame into a socket's write
//!   buffer and flushes it (to a writer that discards), as every session
//!   does for every delivery.
//! - `end_to_end`: an in-process chat-server (memory storage, local broker)
//!   with 100 subscribed sockets over loopback TCP; one iteration is one
//!   `send` from another socket until all 100 have the message (up to 32
//!   messages in flight). It holds the whole path: parse, append, publish,
//!   hub, session loop, framing, the kernel, and the clients reading.
//!
//! Throughput is per delivery, so criterion prints deliveries per second.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::frame::ServerFrame;
use chat_core::{Message, MessageId, RoomId, Timestamp, UserId};
use chat_server::broker::{ConnId, Event, EventKind, EventSink as _, Frame};
use chat_server::hub::{Fanout, Subscriber};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_util::sync::CancellationToken;

const HUB_SOCKETS: usize = 1_000;
const E2E_SOCKETS: usize = 100;
const E2E_IN_FLIGHT: u64 = 32;

fn message_frame(seq: i64) -> ServerFrame {
    let mut body = String::new();
    chat_bench::wire::write_body(&mut body, 1_234_567, 3, 42, 100);
    ServerFrame::Message {
        message: Message {
            id: MessageId(seq),
            room: RoomId(1),
            seq,
            sender: UserId(7),
            sender_name: "benchmark_user".to_owned(),
            body,
            created_at: Timestamp::now(),
            is_read: false,
            client_id: None,
            edited_at: None,
            version: 0,
            deleted: false,
            reactions: Vec::new(),
            pinned: false,
            reply_to: None,
            thread_root: None,
            thread: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        },
    }
}

/// The frame as the session writes it (tungstenite's text type).
fn ws_text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

fn hub_deliver(c: &mut Criterion) {
    let fanout = Fanout::new();
    let room = RoomId(1);
    let mut queues = Vec::with_capacity(HUB_SOCKETS);
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("no runtime: {e}"),
    };
    // Joining goes through the hub, which the benchmark keeps alive (and
    // whose outbox task needs a runtime).
    let hub = {
        let _runtime = rt.enter();
        chat_server::hub::Hub::new(
            fanout.clone(),
            Arc::new(chat_server::broker::local::LocalBroker::new(fanout.clone())),
        )
    };
    rt.block_on(async {
        for i in 0..HUB_SOCKETS {
            let (tx, rx) = mpsc::channel(1_024);
            let sub = Subscriber {
                conn: ConnId(i as u64),
                user: UserId(i as i64 % 50),
                queue: tx,
                too_slow: CancellationToken::new(),
            };
            if let Err(e) = hub.join(room, sub).await {
                eprintln!("join failed: {e}");
            }
            queues.push(rx);
        }
    });
    let frame = Frame::encode(&message_frame(1));
    let mut seq = 0;
    let mut g = c.benchmark_group("send_path");
    g.throughput(Throughput::Elements(HUB_SOCKETS as u64));
    g.bench_function("hub_deliver_1000_sockets", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                seq += 1;
                let event = Arc::new(Event {
                    room,
                    origin: None,
                    kind: EventKind::Timeline {
                        seq,
                        frame: frame.clone(),
                        leaves: None,
                    },
                });
                let start = Instant::now();
                fanout.deliver(event);
                spent += start.elapsed();
                for q in &mut queues {
                    while q.try_recv().is_ok() {}
                }
            }
            spent
        })
    });
    g.finish();
}

/// A socket that takes every byte and never has any to read.
struct Discard;

impl Read for Discard {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ws_frame(c: &mut Criterion) {
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024);
    let mut ws = WebSocket::from_raw_socket(Discard, Role::Server, Some(config));
    let frame = ws_text(&message_frame(1));
    let mut g = c.benchmark_group("send_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ws_frame_write_flush", |b| {
        b.iter(|| ws.send(WsMessage::Text(frame.clone())))
    });
    let batch: Vec<Utf8Bytes> = (0..16).map(|seq| ws_text(&message_frame(seq))).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("ws_frame_16_then_flush", |b| {
        b.iter(|| {
            for f in &batch {
                let _ = ws.write(WsMessage::Text(f.clone()));
            }
            ws.flush()
        })
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("no runtime: {e}"),
    };
    let setup = rt.block_on(e2e_setup());
    let (server, mut sender, delivered, progress, room) = match setup {
        Ok(s) => s,
        Err(e) => return eprintln!("end_to_end setup failed: {e:#}"),
    };
    let mut sent = 0u64;
    let mut g = c.benchmark_group("send_path");
    g.throughput(Throughput::Elements(E2E_SOCKETS as u64));
    g.sample_size(20);
    g.bench_function("end_to_end_100_sockets", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let base = delivered.load(Ordering::Acquire);
                for i in 0..iters {
                    // Keep a window of messages in flight, as a busy room has.
                    if i >= E2E_IN_FLIGHT {
                        let due = base + (i - E2E_IN_FLIGHT) * E2E_SOCKETS as u64;
                        wait_for(&delivered, &progress, due).await;
                    }
                    sent += 1;
                    let frame = format!(
                        r#"{{"type":"send","room":{room},"body":"bench {sent}","client_id":"b{sent}"}}"#
                    );
                    if sender.send(WsMessage::text(frame)).await.is_err() {
                        break;
                    }
                }
                wait_for(&delivered, &progress, base + iters * E2E_SOCKETS as u64).await;
                start.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async {
        let _ = sender.close().await;
        let _ = server.shutdown().await;
    });
}

async fn wait_for(delivered: &AtomicU64, progress: &Notify, target: u64) {
    loop {
        let notified = progress.notified();
        if delivered.load(Ordering::Acquire) >= target {
            return;
        }
        // A lost socket would stall the benchmark: give up after a while.
        if tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .is_err()
        {
            eprintln!("deliveries stalled at {delivered:?} of {target}");
            return;
        }
    }
}

type SenderSink = futures_util::stream::SplitSink<chat_bench::sockets::Ws, WsMessage>;

async fn e2e_setup() -> anyhow::Result<(
    chat_server::Server,
    SenderSink,
    Arc<AtomicU64>,
    Arc<Notify>,
    i64,
)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = chat_server::Config {
        listen: "127.0.0.1:0".parse()?,
        storage_url: "memory://".into(),
        broker_url: "local://".into(),
        jwt_secret: Some("send-path-bench-secret-0123456789".into()),
        rate_limit: 0,
        user_rate_limit: 0,
        ..chat_server::Config::default()
    };
    let server = chat_server::Server::start(config).await?;
    let base = format!("http://{}", server.local_addr());
    let ws_base = format!("ws://{}", server.local_addr());
    let http = reqwest::Client::new();
    let tokens = chat_bench::http::register_users(&http, &base, "sp", 4, 4).await?;
    let rooms = chat_bench::http::create_rooms(&http, &base, &tokens[0], "sp", 1).await?;
    chat_bench::http::join_all(&http, &base, &tokens, &rooms, 4).await?;
    let room = rooms[0];
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    for i in 0..E2E_SOCKETS {
        let mut ws = chat_bench::sockets::connect(&ws_base, &tokens[1 + i % 3]).await?;
        chat_bench::sockets::subscribe(&mut ws, room, Duration::from_secs(10)).await?;
        let delivered = delivered.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let WsMessage::Text(t) = frame
                    && chat_bench::wire::is_message(t.as_str())
                {
                    delivered.fetch_add(1, Ordering::Release);
                    progress.notify_one();
                }
            }
        });
    }
    let ws = chat_bench::sockets::connect(&ws_base, &tokens[0]).await?;
    let (sink, mut stream) = ws.split();
    // Acks come back on the sender's socket; read them so it never blocks.
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    Ok((server, sink, delivered, progress, room))
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = hub_deliver, ws_frame, end_to_end
}
criterion_main!(benches);
