//! `examples/c/chat_terminal.c`, built with the system compiler and run
//! against a real server with its stdin piped: another user's message shows
//! on its stdout, and a line written to its stdin reaches the other user.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chat_client::{CreateRoomRequest, Event, RoomType};

use crate::support::{TestServer, build_c, register};

const ROOM: &str = "terminal";
const WAIT: Duration = Duration::from_secs(15);

/// Kills the example if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a stdout line satisfying `want`; every line seen so far is in
/// `seen`, for the failure message.
fn expect_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
    what: &str,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = want(&line);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!("chat_terminal never printed {what}; its stdout: {seen:#?}"),
        }
    }
}

#[test]
fn the_c_terminal_example_chats_with_another_user() {
    let program = build_c(
        "../examples/c/chat_terminal.c",
        "chat-terminal-example",
        &[],
    );
    let server = TestServer::start(None);
    let base_url = server.base_url.clone();
    // Bob owns the public room and listens; Ann (the example) is not a
    // member until the example joins it.
    let mut bob_conn = server.runtime.block_on(async {
        let bob = register(&base_url, "bob").await;
        register(&base_url, "ann").await;
        bob.create_room(CreateRoomRequest {
            name: Some(ROOM.to_owned()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("room");
        let conn = bob.connect().await.expect("bob connects");
        conn.subscribe(ROOM).await.expect("bob subscribes");
        conn
    });

    let child = Command::new(&program)
        .args([&base_url, "ann", "password-ann", ROOM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chat_terminal starts");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    expect_line(
        &lines,
        &mut seen,
        |l| l.starts_with("joined #terminal"),
        "that it joined",
    );

    // Another user's message is printed by the example's event callback.
    server
        .runtime
        .block_on(bob_conn.send(ROOM, "hello from bob"))
        .expect("bob sends");
    expect_line(
        &lines,
        &mut seen,
        |l| l == "bob: hello from bob",
        "bob's message",
    );

    // A stdin line is sent, reaches Bob, and is stored as Ann's.
    let mut stdin = child.0.stdin.take().expect("piped stdin");
    writeln!(stdin, "hello from the C terminal").expect("write to stdin");
    stdin.flush().expect("flush stdin");
    let heard = server.runtime.block_on(async {
        tokio::time::timeout(WAIT, async {
            loop {
                match bob_conn.next_event().await {
                    Some(Event::Message(m)) if m.body == "hello from the C terminal" => break m,
                    Some(_) => continue,
                    None => panic!("bob's connection closed"),
                }
            }
        })
        .await
        .expect("bob hears the line from the example's stdin")
    });
    assert_eq!(heard.sender_name, "ann");
    expect_line(
        &lines,
        &mut seen,
        |l| l == "ann: hello from the C terminal",
        "its own message in the room's order",
    );

    // EOF ends it cleanly.
    drop(stdin);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "chat_terminal did not exit on EOF"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "chat_terminal exited with {status:?}");
    server.runtime.block_on(bob_conn.close());
}
