//! Generates `include/chat.h` from the crate's sources with cbindgen.
//!
//! The header is committed; the test `header_is_fresh` fails when it differs
//! from a fresh generation, so a stale one cannot reach CI unnoticed.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("chat-ffi/cbindgen.toml is valid");
    match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => {
            bindings.write_to_file(crate_dir.join("include/chat.h"));
        }
        // A source that does not parse fails in rustc with a better message.
        Err(e) => println!("cargo:warning=cbindgen could not generate chat.h: {e}"),
    }
}
