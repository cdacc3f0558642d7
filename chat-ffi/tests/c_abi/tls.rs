//! `tests/c/tls.c`: the C ABI over HTTPS and WSS against a server with the
//! self-signed development certificate.

use std::process::Command;

use chat_server::TlsConfig;

use crate::support::{TestServer, build_c, show};

#[test]
fn c_program_over_https_and_wss() {
    let program = build_c("tests/c/tls.c", "chat-ffi-tls", &[]);
    let server = TestServer::start(Some(TlsConfig::SelfSigned));
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );
    let ca = server
        .server
        .tls_ca_pem()
        .expect("a self-signed server has a development CA");
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), ca).expect("write the CA");
    let output = Command::new(&program)
        .arg(&server.base_url)
        .arg(ca_file.path())
        .arg("c-tls-room")
        .output()
        .expect("tls runs");
    show(&output);
    assert!(output.status.success(), "tls.c failed: {:?}", output.status);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("tls: all checks passed"),
        "tls.c did not reach its end"
    );
}
