//! `tests/c/smoke.c`: the whole API from C against a plain-HTTP server, as
//! is and under valgrind.

use std::path::Path;
use std::process::{Command, Output};

use chat_client::{CreateRoomRequest, RoomType};

use crate::support::{TestServer, build_c, crate_dir, register, show};

const ROOM: &str = "c-lobby";

/// Starts a fresh server with "alice" and "bob" members of the public room
/// [`ROOM`], runs the C program against it (behind `wrapper`, e.g.
/// valgrind, with `env` set) and returns its output.
fn run_smoke(smoke: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Output {
    let server = TestServer::start(None);
    let base_url = server.base_url.clone();
    server.runtime.block_on(async {
        let alice = register(&base_url, "alice").await;
        let bob = register(&base_url, "bob").await;
        let room = alice
            .create_room(CreateRoomRequest {
                name: Some(ROOM.to_owned()),
                kind: Some(RoomType::Public),
                ..Default::default()
            })
            .await
            .expect("room");
        bob.join_room(room.id).await.expect("bob joins");
    });
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(smoke);
            command
        }
        None => Command::new(smoke),
    };
    let output = command
        .args([&base_url, ROOM])
        .envs(env.iter().copied())
        .output()
        .expect("smoke runs");
    show(&output);
    output
}

#[test]
fn c_program_against_a_real_server() {
    let smoke = build_c("tests/c/smoke.c", "chat-ffi-smoke", &[]);
    let output = run_smoke(&smoke, &[], &[]);
    assert!(
        output.status.success(),
        "smoke.c failed: {:?}",
        output.status
    );
}

/// The same program under valgrind: no leak (definite or possible), no
/// invalid read or write. Fails (rather than passing silently) when
/// valgrind is missing.
#[test]
fn c_program_under_valgrind() {
    let valgrind = Path::new("/usr/bin/valgrind");
    assert!(
        valgrind.exists(),
        "valgrind not found at /usr/bin/valgrind; install it (apt-get install valgrind)"
    );
    let smoke = build_c("tests/c/smoke.c", "chat-ffi-smoke-valgrind", &[]);
    let suppressions = crate_dir().join("tests/c/valgrind.supp");
    let suppressions = format!("--suppressions={}", suppressions.display());
    let output = run_smoke(
        &smoke,
        &[
            "/usr/bin/valgrind",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,possible",
            "--error-exitcode=3",
            &suppressions,
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "smoke.c under valgrind failed: {:?}",
        output.status
    );
}
