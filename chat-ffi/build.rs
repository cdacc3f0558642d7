//! Generates the C header `include/chat.h` from the crate's sources with
//! cbindgen.
//!
//! The header is committed. Outside CI a build rewrites it, so that a
//! developer's change to the ABI shows up in `git diff`. In CI (`CI` set,
//! as `.ci/run` does) the build writes only into `OUT_DIR` and leaves the
//! committed header alone: the test `header_is_fresh` then compares it with
//! a fresh generation and fails when it is stale. (A build that rewrote it
//! in CI too would make that test pass vacuously.)

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("chat-ffi/cbindgen.toml is valid");
    let bindings = match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => bindings,
        Err(e) => {
            // A source that does not parse fails in rustc with a better message.
            println!("cargo:warning=cbindgen could not generate chat.h: {e}");
            return;
        }
    };
    bindings.write_to_file(out_dir.join("chat.h"));
    if env::var_os("CI").is_none() {
        bindings.write_to_file(crate_dir.join("include/chat.h"));
    }
}
