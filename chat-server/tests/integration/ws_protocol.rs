//! The WebSocket protocol at its edges (RFC 6455), in the manner of the
//! Autobahn test suite's server cases: raw frames written to a real
//! socket, each case answered as the RFC requires (a reply, a pong, or a
//! close with the code it names). The table this prints is the one in
//! SECURITY.md.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::{Backend, TestServer, WsClient};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One frame as a client writes it (masked unless said otherwise).
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, rsv, opcode, payload, true)
}

fn raw_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// One thing the server did after a case's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A JSON frame of this `type` (`{"type":"ping"}` answers `pong`).
    Frame(&'static str),
    /// A pong carrying these bytes.
    Pong(Vec<u8>),
    /// The frame sent after the case was answered: the socket still serves.
    Served,
    /// A close frame with this code (`None`: a close without a code).
    Close(Option<u16>),
}

struct Case {
    id: &'static str,
    what: &'static str,
    bytes: Vec<u8>,
    answer: Vec<Seen>,
}

const JSON_PING: &[u8] = br#"{"type":"ping"}"#;

fn cases() -> Vec<Case> {
    let big = vec![b'x'; 126];
    let ping_json_halves = JSON_PING.split_at(7);
    let e_acute = r#"{"type":"ping","x":"é"}"#.as_bytes();
    let at = e_acute.iter().position(|&b| b == 0xC3).expect("é") + 1;
    let (utf8_a, utf8_b) = e_acute.split_at(at);
    vec![
        Case {
            id: "1.1",
            what: "text message",
            bytes: frame(true, 0, TEXT, JSON_PING),
            answer: vec![Seen::Frame("pong"), Seen::Served],
        },
        Case {
            id: "1.2",
            what: "binary message (the protocol is JSON text)",
            bytes: frame(true, 0, BINARY, JSON_PING),
            answer: vec![Seen::Frame("error"), Seen::Served],
        },
        Case {
            id: "1.3",
            what: "empty text message",
            bytes: frame(true, 0, TEXT, b""),
            answer: vec![Seen::Frame("error"), Seen::Served],
        },
        Case {
            id: "2.1",
            what: "ping with a payload",
            bytes: frame(true, 0, PING, b"hello"),
            answer: vec![Seen::Pong(b"hello".to_vec()), Seen::Served],
        },
        Case {
            id: "2.2",
            what: "ping with a 125-byte payload",
            bytes: frame(true, 0, PING, &big[..125]),
            answer: vec![Seen::Pong(big[..125].to_vec()), Seen::Served],
        },
        Case {
            id: "2.3",
            what: "ping with a 126-byte payload",
            bytes: frame(true, 0, PING, &big),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "2.4",
            what: "unsolicited pong",
            bytes: frame(true, 0, PONG, b"x"),
            answer: vec![Seen::Served],
        },
        Case {
            id: "3.1",
            what: "RSV1 set",
            bytes: frame(true, 0b100, TEXT, JSON_PING),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "3.2",
            what: "RSV2 set",
            bytes: frame(true, 0b010, TEXT, JSON_PING),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "3.3",
            what: "RSV3 set on a ping",
            bytes: frame(true, 0b001, PING, b""),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "4.1",
            what: "reserved data opcode 3",
            bytes: frame(true, 0, 0x3, b""),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "4.2",
            what: "reserved control opcode 0xB",
            bytes: frame(true, 0, 0xB, b""),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "5.1",
            what: "text in two fragments",
            bytes: [
                frame(false, 0, TEXT, ping_json_halves.0),
                frame(true, 0, CONTINUATION, ping_json_halves.1),
            ]
            .concat(),
            answer: vec![Seen::Frame("pong"), Seen::Served],
        },
        Case {
            id: "5.2",
            what: "ping between fragments",
            bytes: [
                frame(false, 0, TEXT, ping_json_halves.0),
                frame(true, 0, PING, b"mid"),
                frame(true, 0, CONTINUATION, ping_json_halves.1),
            ]
            .concat(),
            answer: vec![
                Seen::Pong(b"mid".to_vec()),
                Seen::Frame("pong"),
                Seen::Served,
            ],
        },
        Case {
            id: "5.3",
            what: "continuation with nothing to continue",
            bytes: frame(true, 0, CONTINUATION, JSON_PING),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "5.4",
            what: "fragmented ping",
            bytes: frame(false, 0, PING, b"x"),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "5.5",
            what: "new text message inside a fragmented one",
            bytes: [frame(false, 0, TEXT, b"{"), frame(true, 0, TEXT, JSON_PING)].concat(),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "6.1",
            what: "text that is not UTF-8",
            bytes: frame(true, 0, TEXT, b"{\"type\":\"\xff\xfe\"}"),
            answer: vec![Seen::Close(Some(1007))],
        },
        Case {
            id: "6.2",
            what: "UTF-8 split across fragments, valid",
            bytes: [
                frame(false, 0, TEXT, utf8_a),
                frame(true, 0, CONTINUATION, utf8_b),
            ]
            .concat(),
            answer: vec![Seen::Frame("pong"), Seen::Served],
        },
        Case {
            id: "6.3",
            what: "invalid UTF-8 in the last fragment",
            bytes: [
                frame(false, 0, TEXT, b"{\"a\":\""),
                frame(true, 0, CONTINUATION, b"\xc3\x28\"}"),
            ]
            .concat(),
            answer: vec![Seen::Close(Some(1007))],
        },
        Case {
            id: "7.1",
            what: "close 1000 is echoed",
            bytes: frame(true, 0, CLOSE, &close_payload(1000, b"bye")),
            answer: vec![Seen::Close(Some(1000))],
        },
        Case {
            id: "7.2",
            what: "close without a body is echoed",
            bytes: frame(true, 0, CLOSE, b""),
            answer: vec![Seen::Close(None)],
        },
        Case {
            id: "7.3",
            what: "close 3000 (registered) is echoed",
            bytes: frame(true, 0, CLOSE, &close_payload(3000, b"")),
            answer: vec![Seen::Close(Some(3000))],
        },
        Case {
            id: "7.4",
            what: "close 4000 (private) is echoed",
            bytes: frame(true, 0, CLOSE, &close_payload(4000, b"")),
            answer: vec![Seen::Close(Some(4000))],
        },
        Case {
            id: "7.5",
            what: "close with a 1-byte body",
            bytes: frame(true, 0, CLOSE, b"\x03"),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "7.6",
            what: "close code 999 (invalid)",
            bytes: frame(true, 0, CLOSE, &close_payload(999, b"")),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "7.7",
            what: "close code 1005 (never sent)",
            bytes: frame(true, 0, CLOSE, &close_payload(1005, b"")),
            answer: vec![Seen::Close(Some(1002))],
        },
        Case {
            id: "7.8",
            what: "close reason that is not UTF-8",
            bytes: frame(true, 0, CLOSE, &close_payload(1000, b"\xff")),
            answer: vec![Seen::Close(Some(1007))],
        },
        Case {
            id: "7.9",
            what: "text after close is not served",
            bytes: [
                frame(true, 0, CLOSE, &close_payload(1000, b"")),
                frame(true, 0, TEXT, JSON_PING),
            ]
            .concat(),
            answer: vec![Seen::Close(Some(1000))],
        },
        Case {
            id: "9.1",
            what: "unmasked frame",
            bytes: raw_frame(true, 0, TEXT, JSON_PING, false),
            answer: vec![Seen::Close(Some(1002))],
        },
    ]
}

/// A frame no case answers like: its `room_not_found` error marks the end
/// of what the case itself caused.
const FOLLOW_UP: &[u8] = br#"{"type":"unsubscribe","room":"no-such-room"}"#;

/// What the socket did after the case's bytes and the follow-up frame.
async fn observe(ws: &mut WsClient, bytes: &[u8]) -> Vec<Seen> {
    let MaybeTlsStream::Plain(tcp) = ws.stream.get_mut() else {
        panic!("a plain socket");
    };
    let written = [bytes.to_vec(), frame(true, 0, TEXT, FOLLOW_UP)].concat();
    tcp.write_all(&written).await.expect("case written");
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.stream.next())
            .await
            .expect("an answer within 5 s");
        match next {
            Some(Ok(WsMessage::Pong(p))) => seen.push(Seen::Pong(p.to_vec())),
            Some(Ok(WsMessage::Text(t))) => {
                let frame: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                if frame["code"] == "room_not_found" {
                    seen.push(Seen::Served);
                    return seen;
                }
                seen.push(Seen::Frame(match frame["type"].as_str() {
                    Some("pong") => "pong",
                    Some("error") => "error",
                    _ => "other",
                }));
            }
            Some(Ok(WsMessage::Close(frame))) => {
                seen.push(Seen::Close(frame.map(|f| u16::from(f.code))));
                return seen;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("client read failed after {seen:?}: {e}"),
            None => panic!("the connection ended without a close frame after {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_at_the_edges_of_rfc_6455() {
    let s = TestServer::start(Backend::Memory).await;
    let ann = s.user("ann").await;
    let mut table = vec![
        "| case | frames sent | expected | observed |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    let mut failed = Vec::new();
    for case in cases() {
        let mut ws = s.ws("/ws/", &ann).await;
        let observed = observe(&mut ws, &case.bytes).await;
        table.push(format!(
            "| {} | {} | {:?} | {:?} |",
            case.id, case.what, case.answer, observed
        ));
        if observed != case.answer {
            failed.push(case.id);
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failed.is_empty(),
        "cases failed: {failed:?}\n{}",
        table.join("\n")
    );
}

/// A client that closes gets its close frame back, and the server then
/// ends the TCP connection (no reset, no EOF in place of the reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered_and_the_connection_ends() {
    let s = TestServer::start(Backend::Sqlite).await;
    let ann = s.user("ann").await;
    let mut ws = s.ws("/ws/", &ann).await;
    use futures_util::SinkExt as _;
    ws.stream
        .send(WsMessage::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "done".into(),
            },
        )))
        .await
        .expect("close sent");
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.stream.next())
        .await
        .expect("a reply within 5 s");
    match reply {
        Some(Ok(WsMessage::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(5), ws.stream.next())
        .await
        .expect("the connection ends");
    assert!(end.is_none(), "{end:?}");
}
