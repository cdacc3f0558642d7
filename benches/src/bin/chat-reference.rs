//! The reference server: the least a WebSocket broadcast server can do on
//! this machine, the ceiling chat-rs is measured against. No auth, no
//! storage, no HTTP API: it accepts any handshake on any path, understands
//! `subscribe`, `send` and `ping`, and answers with the very frames chat-rs
//! sends (built from chat-core's types), so `chat-load --reference` reads
//! them with the same code.
//!
//! ```sh
//! chat-reference --listen 127.0.0.1:8100
//! ```
//!
//! Writes are batched (feed every queued frame, flush once), buffers are
//! small, and a frame is serialized once per message and shared by every
//! socket of the room.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chat_core::frame::{ClientFrame, ServerFrame};
use chat_core::{Message, MessageId, RoomId, RoomRef, Timestamp, UserId};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

#[derive(Debug, Parser)]
#[command(about = "Minimal WebSocket broadcast server speaking the chat-rs frames")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
    /// Frames queued per socket; a socket that falls this far behind is
    /// dropped (chat-rs closes it with 4408).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
}

/// Frames fed before one flush, as chat-rs does, so one busy room cannot
/// starve a socket's reads.
const MAX_BATCH: usize = 64;

#[derive(Debug, Default)]
struct Room {
    seq: i64,
    members: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
}

#[derive(Debug, Default)]
struct Hub {
    rooms: Mutex<HashMap<i64, Room>>,
    next_conn: AtomicU64,
    next_id: AtomicU64,
    dropped_slow: AtomicU64,
}

impl Hub {
    fn subscribe(&self, room: i64, conn: u64, queue: &mpsc::Sender<Utf8Bytes>) -> i64 {
        let Ok(mut rooms) = self.rooms.lock() else {
            return 0;
        };
        let r = rooms.entry(room).or_default();
        if !r.members.iter().any(|(c, _)| *c == conn) {
            r.members.push((conn, queue.clone()));
        }
        r.seq
    }

    fn leave_all(&self, conn: u64, joined: &[i64]) {
        if let Ok(mut rooms) = self.rooms.lock() {
            for room in joined {
                if let Some(r) = rooms.get_mut(room) {
                    r.members.retain(|(c, _)| *c != conn);
                }
            }
        }
    }

    /// Numbers the message, sends its frame to every other member and
    /// returns the message for the ack.
    fn publish(&self, room: i64, conn: u64, body: String, client_id: Option<String>) -> Message {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut rooms) = self.rooms.lock() else {
            return message(id, room, 0, body, client_id);
        };
        let r = rooms.entry(room).or_default();
        r.seq += 1;
        let msg = message(id, room, r.seq, body, client_id);
        let frame: Utf8Bytes = match serde_json::to_string(&ServerFrame::Message {
            message: msg.clone(),
        }) {
            Ok(s) => s.into(),
            Err(_) => return msg,
        };
        let before = r.members.len();
        // A full queue drops the member (its writer sees the channel close),
        // like chat-rs's 4408 for a socket too slow to keep up.
        r.members
            .retain(|(c, q)| *c == conn || q.try_send(frame.clone()).is_ok());
        let dropped = before - r.members.len();
        if dropped > 0 {
            self.dropped_slow
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        msg
    }
}

fn message(id: u64, room: i64, seq: i64, body: String, client_id: Option<String>) -> Message {
    Message {
        id: MessageId(id as i64),
        room: RoomId(room),
        seq,
        sender: UserId(1),
        sender_name: "reference".to_owned(),
        body,
        created_at: Timestamp::now(),
        is_read: false,
        client_id,
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
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("chat-reference listening on {}", listener.local_addr()?);
    let hub = Arc::new(Hub::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            // Out of descriptors and the like: keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let hub = hub.clone();
        tokio::spawn(serve(tcp, hub, args.queue));
    }
}

async fn serve(tcp: TcpStream, hub: Arc<Hub>, queue_len: usize) {
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (queue, mut events) = mpsc::channel::<Utf8Bytes>(queue_len.max(1));
    let mut joined: Vec<i64> = Vec::new();
    let mut out: Vec<Utf8Bytes> = Vec::new();
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(first) = ev else { break };
                out.push(first);
                while out.len() < MAX_BATCH {
                    match events.try_recv() {
                        Ok(f) => out.push(f),
                        Err(_) => break,
                    }
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Text(t))) => {
                    if let Some(answer) = on_text(&hub, conn, &queue, &mut joined, t.as_str()) {
                        out.push(answer);
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
        let mut failed = false;
        for f in out.drain(..) {
            if sink.feed(WsMessage::Text(f)).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || sink.flush().await.is_err() {
            break;
        }
    }
    hub.leave_all(conn, &joined);
}

fn room_id(room: &RoomRef) -> Option<i64> {
    match room {
        RoomRef::Id(id) => Some(id.0),
        RoomRef::Name(name) => name.parse().ok(),
    }
}

fn on_text(
    hub: &Hub,
    conn: u64,
    queue: &mpsc::Sender<Utf8Bytes>,
    joined: &mut Vec<i64>,
    text: &str,
) -> Option<Utf8Bytes> {
    let frame = match ClientFrame::from_json(text) {
        Ok(f) => f,
        Err(e) => {
            return encode(&ServerFrame::Error {
                code: e.code,
                error: e.message,
                client_id: None,
            });
        }
    };
    match frame {
        ClientFrame::Subscribe { room, .. } => {
            let room = room_id(&room)?;
            let last_seq = hub.subscribe(room, conn, queue);
            if !joined.contains(&room) {
                joined.push(room);
            }
            encode(&ServerFrame::Subscribed {
                room: RoomId(room),
                last_seq,
            })
        }
        ClientFrame::Send {
            room: Some(room),
            body,
            client_id,
            ..
        } => {
            let room = room_id(&room)?;
            let message = hub.publish(room, conn, body, client_id.clone());
            encode(&ServerFrame::Ack { client_id, message })
        }
        ClientFrame::Ping => encode(&ServerFrame::Pong),
        _ => None,
    }
}

fn encode(frame: &ServerFrame) -> Option<Utf8Bytes> {
    serde_json::to_string(frame).ok().map(Utf8Bytes::from)
}
