//! A real S3-compatible server for tests: moto (`moto[server]` from PyPI,
//! pinned and installed by `.ci/moto` into `~/.cache/chat-rs/moto`).
//!
//! One `moto_server` per test process, started on first use on a free
//! 127.0.0.1 port; every caller gets a bucket of its own. The server runs
//! under a small shell watchdog whose stdin is a pipe only this process
//! writes to: when the process ends, however it ends (even SIGKILL), the
//! pipe closes and the watchdog stops moto, so no server outlives the
//! tests. `CHAT_TEST_MOTO` names another `moto_server` binary.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;

/// Dummy credentials: moto checks none, object_store signs with these.
const CREDENTIALS: &str = "access_key_id=test&secret_access_key=test";

/// A fresh, empty bucket on this test process's moto server, as an
/// `s3://` URL that [`open`](crate::blobs::open) takes (endpoint, region
/// and dummy credentials in its query). Starts the server on first use,
/// and installs moto first if it is not (`.ci/moto`, from PyPI).
///
/// # Panics
/// If moto cannot be installed or started, saying how to install it: a
/// test that needs S3 never passes without one.
pub async fn moto_s3_url() -> String {
    static PLAIN: OnceCell<Moto> = OnceCell::const_new();
    let moto = PLAIN.get_or_init(|| Moto::start(false)).await;
    let bucket = moto.bucket().await;
    format!(
        "s3://{bucket}?endpoint={}&region=us-east-1&allow_http=true&{CREDENTIALS}",
        moto.endpoint
    )
}

/// Like [`moto_s3_url`], on a second server that speaks HTTPS only (moto's
/// self-signed certificate, which the URL says to accept).
#[cfg(test)]
pub(crate) async fn moto_tls_s3_url() -> String {
    static TLS: OnceCell<Moto> = OnceCell::const_new();
    let moto = TLS.get_or_init(|| Moto::start(true)).await;
    let bucket = moto.bucket().await;
    format!(
        "s3://{bucket}?endpoint={}&region=us-east-1&allow_invalid_certificates=true&{CREDENTIALS}",
        moto.endpoint
    )
}

/// The keys of the multipart uploads in progress in the bucket of a URL
/// made by [`moto_s3_url`].
#[cfg(test)]
pub(crate) async fn multipart_uploads(url: &str) -> Vec<String> {
    let url = url::Url::parse(url).expect("a moto URL");
    let bucket = url.host_str().expect("a bucket");
    let endpoint = url
        .query_pairs()
        .find_map(|(k, v)| (k == "endpoint").then(|| v.into_owned()))
        .expect("an endpoint");
    let listing = client()
        .get(format!("{endpoint}/{bucket}?uploads"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("moto lists multipart uploads")
        .text()
        .await
        .expect("the listing");
    listing
        .split("<Upload>")
        .skip(1)
        .map(|upload| {
            let key = upload.split_once("<Key>").map_or("", |(_, rest)| rest);
            key.split_once("</Key>")
                .map_or(key, |(key, _)| key)
                .to_owned()
        })
        .collect()
}

/// An HTTP client for moto's own calls, which need no signature.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// A running moto server.
#[derive(Debug)]
struct Moto {
    endpoint: String,
    // The watchdog; its stdin is the pipe whose closing stops the server.
    _watchdog: Child,
}

/// Starts moto on `$2` (127.0.0.1), its extra arguments after; stops it
/// when the pipe on fd 0 (kept as fd 3 for the watcher: a background job's
/// stdin is /dev/null) reaches end of file, that is when the test process
/// is gone; exits when moto does.
const WATCHDOG: &str = r#"
bin=$1 port=$2
shift 2
exec 3<&0
"$bin" -H 127.0.0.1 -p "$port" "$@" </dev/null >&2 3<&- &
moto=$!
(while read -r _ <&3; do :; done; kill "$moto" 2>/dev/null) &
wait "$moto"
"#;

impl Moto {
    async fn start(tls: bool) -> Moto {
        let binary = tokio::task::spawn_blocking(binary)
            .await
            .expect("finding moto_server");
        let mut failures = Vec::new();
        // A free port may be taken between the probe and moto's bind.
        for _ in 0..3 {
            match Self::launch(&binary, tls).await {
                Ok(moto) => return moto,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "moto_server ({}) did not start: {}\n(.ci/moto installs it; CHAT_TEST_MOTO names \
             another moto_server)",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    async fn launch(binary: &std::path::Path, tls: bool) -> Result<Moto, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut command = Command::new("sh");
        command
            .args(["-c", WATCHDOG, "moto-watchdog"])
            .arg(binary)
            .arg(port.to_string());
        if tls {
            command.arg("-s");
        }
        let mut watchdog = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        // moto logs every request: drained for as long as it runs, the
        // last few KiB kept for a failure's message.
        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        if let Some(mut stderr) = watchdog.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.extend_from_slice(&buf[..n]);
                    let excess = log.len().saturating_sub(8192);
                    log.drain(..excess);
                }
            });
        }
        let tail = || {
            String::from_utf8_lossy(&log.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        };

        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{port}");
        let client = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = watchdog.try_wait() {
                return Err(format!("moto_server exited ({status}):\n{}", tail()));
            }
            if client.get(&endpoint).send().await.is_ok() {
                return Ok(Moto {
                    endpoint,
                    _watchdog: watchdog,
                });
            }
            if tokio::time::Instant::now() > deadline {
                // Dropping the watchdog's stdin stops moto.
                drop(watchdog.stdin.take());
                return Err(format!("no answer at {endpoint} after 30 s:\n{}", tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a bucket of its own for the caller (moto takes an unsigned
    /// `PUT /bucket`).
    async fn bucket(&self) -> String {
        let bucket = format!("chat-{}", uuid::Uuid::new_v4().simple());
        let created = client()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(e) = created {
            panic!(
                "moto at {} did not create bucket {bucket}: {e}",
                self.endpoint
            );
        }
        bucket
    }
}

/// The moto_server to run: `CHAT_TEST_MOTO`, or the one `.ci/moto`
/// installs (running it, which installs moto on first use).
fn binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("CHAT_TEST_MOTO") {
        return binary.into();
    }
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/moto"));
    let how = "install moto with `.ci/moto` (python3 -m venv and pip install moto[server] \
               from PyPI into ~/.cache/chat-rs/moto), or set CHAT_TEST_MOTO to a moto_server";
    if !script.exists() {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let installed = home.join(".cache/chat-rs/moto/bin/moto_server");
        if installed.exists() {
            return installed;
        }
        panic!("moto (the S3 server of the s3:// tests) is not installed: {how}");
    }
    match Command::new(&script).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let path = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(path.lines().last().unwrap_or_default().trim())
        }
        Ok(out) => panic!(
            "moto (the S3 server of the s3:// tests) is not installed and {} failed ({}):\n{}\n{how}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "moto (the S3 server of the s3:// tests) is not installed and {} did not run: {e}; {how}",
            script.display()
        ),
    }
}
