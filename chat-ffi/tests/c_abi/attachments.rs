//! `tests/c/attachments.c`: uploads, sends and downloads from C against a
//! plain-HTTP server, as is, under valgrind, and built with
//! AddressSanitizer.

use std::path::Path;
use std::process::{Command, Output};

use chat_client::{CreateRoomRequest, RoomType};

use crate::support::{TestServer, build_c, crate_dir, register, sanitizers_available, show};

const ROOM: &str = "c-files";

/// Starts a fresh server with "alice" and "bob" members of the public room
/// [`ROOM`] and "carol" outside it, runs the C program against it (behind
/// `wrapper`, with `env` set) in a fresh directory, and returns its output.
fn run_attachments(program: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Output {
    let server = TestServer::start(None);
    let base_url = server.base_url.clone();
    server.runtime.block_on(async {
        let alice = register(&base_url, "alice").await;
        let bob = register(&base_url, "bob").await;
        register(&base_url, "carol").await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = match wrapper.split_first() {
        Some((first, args)) => {
            let mut command = Command::new(first);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    };
    let output = command
        .arg(&base_url)
        .arg(ROOM)
        .arg(dir.path())
        .envs(env.iter().copied())
        .output()
        .expect("attachments runs");
    show(&output);
    output
}

fn assert_passed(output: &Output, how: &str) {
    assert!(
        output.status.success(),
        "attachments.c {how} failed: {:?}",
        output.status
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("attachments: all checks passed"),
        "attachments.c {how} did not reach its end"
    );
}

#[test]
fn c_attachments_against_a_real_server() {
    let program = build_c("tests/c/attachments.c", "chat-ffi-attachments", &[]);
    let output = run_attachments(&program, &[], &[]);
    assert_passed(&output, "as is");
}

/// No leak (definite or possible), no invalid read or write; fails when
/// valgrind is missing.
#[test]
fn c_attachments_under_valgrind() {
    let valgrind = Path::new("/usr/bin/valgrind");
    assert!(
        valgrind.exists(),
        "valgrind not found at /usr/bin/valgrind; install it (apt-get install valgrind)"
    );
    let program = build_c(
        "tests/c/attachments.c",
        "chat-ffi-attachments-valgrind",
        &[],
    );
    let suppressions = crate_dir().join("tests/c/valgrind.supp");
    let suppressions = format!("--suppressions={}", suppressions.display());
    let output = run_attachments(
        &program,
        &[
            "/usr/bin/valgrind",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,possible",
            "--error-exitcode=3",
            &suppressions,
        ],
        &[],
    );
    assert_passed(&output, "under valgrind");
}

/// Built with `-fsanitize=address,undefined` (see `smoke.rs`); skipped,
/// saying why, only when the toolchain cannot build with sanitizers.
#[test]
fn c_attachments_under_address_sanitizer() {
    if !sanitizers_available() {
        eprintln!(
            "SKIPPED: the C compiler cannot build with -fsanitize=address,undefined (install libasan/libubsan, e.g. the gcc package's)"
        );
        return;
    }
    let program = build_c(
        "tests/c/attachments.c",
        "chat-ffi-attachments-asan",
        &[
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ],
    );
    let output = run_attachments(
        &program,
        &[],
        &[
            ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=4"),
            ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Sanitizer"),
        "attachments.c under AddressSanitizer reported an error"
    );
    assert_passed(&output, "under AddressSanitizer");
}
