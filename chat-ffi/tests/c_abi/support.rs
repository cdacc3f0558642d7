//! What the C tests share: the built library, a C compiler, a real server.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_client::{ChatClient, RegisterRequest};
use chat_server::{Config, Server, TlsConfig};
use tokio::runtime::Runtime;

pub(crate) fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the cdylib: `<target>/<profile>/`, where the test binary
/// is in `<target>/<profile>/deps/`. `cargo test` builds the crate as an
/// rlib only, so the cdylib is built (or found up to date) here with the
/// same cargo, target directory and profile.
///
/// The nested cargo must see the build as `cargo test` did, or each
/// invocation rebuilds what the other just built: `--tests` resolves
/// dependency features with the dev-dependencies, and the variables cargo
/// set for this test process are removed (a build script that watches
/// `CARGO_MANIFEST_DIR`, as ring's does, would otherwise see it change).
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
            "--tests",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(crate_dir());
    for (name, _) in std::env::vars_os() {
        // What cargo sets for a test process (the cargo reference,
        // "Environment variables Cargo sets for crates"); the user's own
        // CARGO_* configuration stays.
        let set_for_tests = name.to_str().is_some_and(|name| {
            matches!(
                name,
                "OUT_DIR"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            ) || name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
        });
        if set_for_tests {
            cargo.env_remove(name);
        }
    }
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p chat-ffi --lib --tests failed"
    );
    assert!(
        profile_dir.join("libchat_ffi.so").exists(),
        "libchat_ffi.so not found in {}",
        profile_dir.display()
    );
    profile_dir
}

/// Compiles the C program `source` (relative to the crate) against the
/// cdylib as `name` (one per test, as tests run in parallel), with `extra`
/// compiler flags; returns the executable.
pub(crate) fn build_c(source: &str, name: &str, extra: &[&str]) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib_dir = lib_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(extra)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join(source))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lchat_ffi")
        .arg("-lpthread")
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "{source} does not compile");
    out
}

/// A real server on a loopback port, with the runtime it runs on.
pub(crate) struct TestServer {
    pub(crate) runtime: Runtime,
    pub(crate) server: Server,
    pub(crate) base_url: String,
}

impl TestServer {
    /// Plain HTTP, or HTTPS with `tls`; in-memory storage either way.
    pub(crate) fn start(tls: Option<TlsConfig>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let https = tls.is_some();
        let server = runtime.block_on(async {
            Server::start(Config {
                listen: "127.0.0.1:0".parse().expect("literal address"),
                storage_url: "memory://".to_owned(),
                jwt_secret: Some("ffi-tests-secret".to_owned()),
                tls,
                ..Config::default()
            })
            .await
            .expect("server starts")
        });
        // The development certificate names `localhost`, so TLS clients use
        // that name and its checks are real.
        let port = server.local_addr().port();
        let base_url = if https {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        Self {
            runtime,
            server,
            base_url,
        }
    }
}

/// A registered, logged-in client of `base_url`; password `password-<name>`.
pub(crate) async fn register(base_url: &str, name: &str) -> ChatClient {
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

/// Prints a finished program's output, for the test log.
pub(crate) fn show(output: &std::process::Output) {
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
}

/// Whether the C compiler can build and run a program with
/// AddressSanitizer and UBSan (the runtime libraries are a separate
/// package on some systems).
pub(crate) fn sanitizers_available() -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&source, "int main(void) { return 0; }\n").expect("write probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(cc)
        .arg("-fsanitize=address,undefined")
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .status()
        .is_ok_and(|s| s.success());
    built && Command::new(&exe).status().is_ok_and(|s| s.success())
}
