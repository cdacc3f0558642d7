//! What the load generator puts in a message body and reads back out of a
//! delivered frame, without a JSON parser on the receive path.
//!
//! A body is `<sent µs>:<sender>:<counter>:` padded with `x` to the asked
//! size. Senders and receivers share one process, so the timestamp is
//! microseconds since a process-wide origin and needs no clock agreement.

use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call in this process.
pub fn now_micros() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Writes a body into `out` (cleared first), so a sender reuses one buffer.
pub fn write_body(out: &mut String, sent_us: u64, sender: u32, counter: u32, size: usize) {
    use std::fmt::Write as _;
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "{sent_us}:{sender}:{counter}:");
    while out.len() < size {
        out.push('x');
    }
}

/// One message as a receiver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub sent_us: u64,
    pub sender: u32,
    pub counter: u32,
}

/// The start of a `{"type":"message",...}` server frame, as both the
/// chat-rs server and the reference server serialize it (serde writes an
/// internally tagged enum's tag first).
const MESSAGE_PREFIX: &str = r#"{"type":"message""#;
const BODY_KEY: &str = r#""body":""#;

/// Reads a delivery out of a server frame. `None` for other frames and for
/// bodies this generator did not write.
pub fn parse_delivery(frame: &str) -> Option<Delivery> {
    if !frame.starts_with(MESSAGE_PREFIX) {
        return None;
    }
    let start = frame.find(BODY_KEY)? + BODY_KEY.len();
    let mut parts = frame[start..].splitn(4, ':');
    let sent_us = parts.next()?.parse().ok()?;
    let sender = parts.next()?.parse().ok()?;
    let counter = parts.next()?.parse().ok()?;
    // The fourth part (padding and the rest of the frame) must exist, or the
    // body was cut short.
    parts.next()?;
    Some(Delivery {
        sent_us,
        sender,
        counter,
    })
}

/// Whether a frame is a `message` delivery.
pub fn is_message(frame: &str) -> bool {
    frame.starts_with(MESSAGE_PREFIX)
}

/// When the message an `ack` answers was sent (wire clock, µs), if this
/// generator wrote its body.
pub fn ack_sent_us(frame: &str) -> Option<u64> {
    if !is_ack(frame) {
        return None;
    }
    let start = frame.find(BODY_KEY)? + BODY_KEY.len();
    frame[start..].split(':').next()?.parse().ok()
}

/// The id of the message an `ack` answers (`"message":{"id":N`, as the
/// server serializes it: the id first).
pub fn ack_message_id(frame: &str) -> Option<i64> {
    if !is_ack(frame) {
        return None;
    }
    const ID_KEY: &str = r#""message":{"id":"#;
    let start = frame.find(ID_KEY)? + ID_KEY.len();
    let digits = frame[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&frame[start..], |end| &frame[start..start + end]);
    digits.parse().ok()
}

/// Whether a frame is an `ack` (the server stored a sent message).
pub fn is_ack(frame: &str) -> bool {
    frame.starts_with(r#"{"type":"ack""#)
}

/// Whether a frame is an `error` (rate limited, refused, …).
pub fn is_error(frame: &str) -> bool {
    frame.starts_with(r#"{"type":"error""#)
}

/// Whether a frame is the `subscribed` answer to a subscribe.
pub fn is_subscribed(frame: &str) -> bool {
    frame.starts_with(r#"{"type":"subscribed""#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::frame::ServerFrame;
    use chat_core::{Message, MessageId, RoomId, Timestamp, UserId};

    fn frame(body: &str) -> String {
        let message = Message {
            id: MessageId(7),
            room: RoomId(3),
            seq: 9,
            sender: UserId(2),
            sender_name: "load".to_owned(),
            body: body.to_owned(),
            created_at: Timestamp::now(),
            is_read: false,
            client_id: Some("1-2".to_owned()),
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
        };
        serde_json::to_string(&ServerFrame::Message { message }).expect("serializes")
    }

    #[test]
    fn a_body_round_trips_through_a_real_server_frame() {
        let mut body = String::new();
        write_body(&mut body, 123_456, 4, 77, 100);
        assert_eq!(body.len(), 100);
        let d = parse_delivery(&frame(&body)).expect("a delivery");
        assert_eq!(
            d,
            Delivery {
                sent_us: 123_456,
                sender: 4,
                counter: 77
            }
        );
    }

    #[test]
    fn an_acks_message_id_as_the_server_writes_it() {
        let message =
            serde_json::from_str::<serde_json::Value>(&frame("x")).expect("json")["message"]
                .clone();
        assert_eq!(ack_message_id(&frame("x")), None, "not an ack");
        // The server's own serialization puts `id` first.
        let real = serde_json::to_string(&ServerFrame::Ack {
            client_id: None,
            message: serde_json::from_value(message).expect("a message"),
        })
        .expect("serializes");
        assert_eq!(ack_message_id(&real), Some(7));
    }

    #[test]
    fn other_frames_and_foreign_bodies_are_not_deliveries() {
        assert_eq!(parse_delivery(r#"{"type":"pong"}"#), None);
        assert_eq!(parse_delivery(&frame("hello")), None);
        assert_eq!(parse_delivery(&frame("1:2")), None);
        assert!(is_ack(r#"{"type":"ack","client_id":"x","message":{}}"#));
        assert!(is_subscribed(
            r#"{"type":"subscribed","room":1,"last_seq":0}"#
        ));
    }
}
