//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds
//! `migrations/` at compile time, and cargo cannot see that dependency by
//! itself on stable Rust.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
