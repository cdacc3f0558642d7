//! The C ABI seen from C: the committed header is fresh, and a C program
//! built with the system compiler drives a real server through it (under
//! valgrind when the machine has it).

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_client::{ChatClient, CreateRoomRequest, RegisterRequest, RoomType};
use chat_server::{Config, Server};

const ROOM: &str = "c-lobby";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the cdylib: `<target>/<profile>/`, where the test binary
/// is in `<target>/<profile>/deps/`. `cargo test` builds the crate as an
/// rlib only, so the cdylib is built (or found up to date) here with the
/// same cargo, target directory and profile.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under <profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "chat-ffi",
            "--lib",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(crate_dir());
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p chat-ffi --lib failed");
    assert!(
        profile_dir.join("libchat_ffi.so").exists(),
        "libchat_ffi.so not found in {}",
        profile_dir.display()
    );
    profile_dir
}

#[test]
fn header_is_fresh() {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let fresh = tempfile::NamedTempFile::new().expect("temp file");
    cbindgen::generate_with_config(crate_dir(), config)
        .expect("cbindgen generates the header")
        .write_to_file(fresh.path());
    let fresh = std::fs::read_to_string(fresh.path()).expect("fresh header");
    let committed =
        std::fs::read_to_string(crate_dir().join("include/chat.h")).expect("committed header");
    assert!(
        fresh == committed,
        "chat-ffi/include/chat.h is stale: build chat-ffi outside CI (`cargo build -p chat-ffi` without `CI` set regenerates it) and commit it"
    );
}

async fn register(base_url: &str, name: &str) -> ChatClient {
    let client = ChatClient::new(base_url).expect("client");
    client
        .register(RegisterRequest {
            username: name.to_owned(),
            email: format!("{name}@example.com"),
            password: format!("password-{name}"),
            display_name: None,
        })
        .await
        .expect("registration");
    client
        .login(name, &format!("password-{name}"))
        .await
        .expect("login");
    client
}

/// Builds `tests/c/smoke.c` against the cdylib as `name` (one per test, as
/// tests run in parallel); returns the executable.
fn build_smoke(name: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib_dir = lib_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/smoke.c"))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lchat_ffi")
        .arg("-lpthread")
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "tests/c/smoke.c does not compile");
    out
}

/// Starts a fresh server with "alice" and "bob" members of the public room
/// [`ROOM`], runs the C program against it (behind `wrapper`, e.g.
/// valgrind) and returns its output.
fn run_smoke(smoke: &Path, wrapper: &[&str]) -> std::process::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(async {
        Server::start(Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            storage_url: "memory://".to_owned(),
            jwt_secret: Some("ffi-tests-secret".to_owned()),
            ..Config::default()
        })
        .await
        .expect("server starts")
    });
    let base_url = format!("http://{}", server.local_addr());
    runtime.block_on(async {
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
        .output()
        .expect("smoke runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn c_program_against_a_real_server() {
    let smoke = build_smoke("chat-ffi-smoke");
    let output = run_smoke(&smoke, &[]);
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
    let smoke = build_smoke("chat-ffi-smoke-valgrind");
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
    );
    assert!(
        output.status.success(),
        "smoke.c under valgrind failed: {:?}",
        output.status
    );
}
