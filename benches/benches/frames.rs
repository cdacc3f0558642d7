//! The hot frames of chat-core: parsing what clients send (`send`,
//! `subscribe`), serializing what the server sends for every delivery
//! (`message`, `ack`), parsing a delivery as the SDK does, and the load
//! generator's own allocation-free reading of a delivery.

use std::hint::black_box;
use std::time::Duration;

use chat_core::frame::{ClientFrame, ServerFrame};
use chat_core::{Message, MessageId, RoomId, Timestamp, UserId};
use criterion::{Criterion, criterion_group, criterion_main};

fn message(body_bytes: usize) -> Message {
    let mut body = String::new();
    chat_bench::wire::write_body(&mut body, 1_234_567, 3, 42, body_bytes);
    Message {
        id: MessageId(123_456),
        room: RoomId(17),
        seq: 9_876,
        sender: UserId(4_321),
        sender_name: "benchmark_user".to_owned(),
        body,
        created_at: Timestamp::now(),
        is_read: false,
        client_id: Some("3-42".to_owned()),
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

fn frames(c: &mut Criterion) {
    let msg = message(100);
    let send = format!(
        r#"{{"type":"send","room":17,"body":"{}","client_id":"3-42"}}"#,
        msg.body
    );
    let subscribe = r#"{"type":"subscribe","room":17,"after_seq":41}"#;
    let delivered = serde_json::to_string(&ServerFrame::Message {
        message: msg.clone(),
    })
    .expect("serializes");

    let mut g = c.benchmark_group("client_frame_parse");
    g.bench_function("send_100B", |b| {
        b.iter(|| ClientFrame::from_json(black_box(&send)))
    });
    g.bench_function("subscribe", |b| {
        b.iter(|| ClientFrame::from_json(black_box(subscribe)))
    });
    g.finish();

    let mut g = c.benchmark_group("server_frame_serialize");
    g.bench_function("message_100B", |b| {
        b.iter(|| {
            serde_json::to_string(&ServerFrame::Message {
                message: black_box(&msg).clone(),
            })
        })
    });
    let big = message(4_000);
    g.bench_function("message_4000B", |b| {
        b.iter(|| {
            serde_json::to_string(&ServerFrame::Message {
                message: black_box(&big).clone(),
            })
        })
    });
    g.bench_function("ack_100B", |b| {
        b.iter(|| {
            serde_json::to_string(&ServerFrame::Ack {
                client_id: Some("3-42".to_owned()),
                message: black_box(&msg).clone(),
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("server_frame_parse");
    g.bench_function("message_100B_serde", |b| {
        b.iter(|| serde_json::from_str::<ServerFrame>(black_box(&delivered)))
    });
    g.bench_function("message_100B_chat_load_scan", |b| {
        b.iter(|| chat_bench::wire::parse_delivery(black_box(&delivered)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = frames
}
criterion_main!(benches);
