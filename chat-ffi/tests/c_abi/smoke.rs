//! `tests/c/smoke.c`: the whole API from C against a plain-HTTP server, as
//! is, under valgrind, and built with AddressSanitizer.

use std::path::Path;
use std::process::{Command, Output};

use chat_client::{CreateRoomRequest, RoomType};

use crate::support::{TestServer, build_c, crate_dir, register, sanitizers_available, show};

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

/// The same program built with `-fsanitize=address,undefined`: the C side is
/// instrumented, and ASan's allocator also sees every allocation of the
/// (uninstrumented) Rust library, so LeakSanitizer checks both and
/// use-after-free of a library string by C is caught. Skipped, saying
/// why, only when the toolchain cannot build with sanitizers.
#[test]
fn c_program_under_address_sanitizer() {
    if !sanitizers_available() {
        eprintln!(
            "SKIPPED: the C compiler cannot build with -fsanitize=address,undefined (install libasan/libubsan, e.g. the gcc package's)"
        );
        return;
    }
    let smoke = build_c(
        "tests/c/smoke.c",
        "chat-ffi-smoke-asan",
        &[
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ],
    );
    let output = run_smoke(
        &smoke,
        &[],
        &[
            ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=4"),
            ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("Sanitizer"),
        "smoke.c under AddressSanitizer failed: {:?}",
        output.status
    );
}
