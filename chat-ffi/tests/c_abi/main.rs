//! The C ABI seen from C: the committed header is fresh, and C programs
//! built with the system compiler drive a real server through it (plain,
//! over TLS, under valgrind and AddressSanitizer), as does the C example.

mod attachments;
mod example;
mod smoke;
mod support;
mod tls;

use support::crate_dir;

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
