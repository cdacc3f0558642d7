//! A profanity filter as an in-process hook: chat-server embedded with
//! `Builder::hooks`, rewriting listed words to asterisks in every message
//! and edit before it is stored, and logging every stored event.
//!
//! ```sh
//! cargo run --example profanity_rewrite -- --listen 127.0.0.1:8000
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use chat_server::hooks::{Decision, HookError, Hooks, Pending, RoomEvent};
use chat_server::{Builder, Config};
use clap::Parser;

/// The words masked (lower case; matched whole, case-insensitively).
const WORDS: &[&str] = &["darn", "heck", "frak"];

#[derive(Debug, Parser)]
#[command(about = "chat-server with a profanity-masking hook")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Storage URL.
    #[arg(long, default_value = "sqlite://chat.db")]
    storage: String,
}

/// `body` with every listed word masked (first letter kept), or `None` if
/// there is none.
fn masked(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut word = String::new();
    let mut changed = false;
    let mut flush = |word: &mut String, out: &mut String| {
        if WORDS.contains(&word.to_lowercase().as_str()) {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.push(first);
                out.extend(chars.map(|_| '*'));
            }
            changed = true;
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in body.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    changed.then_some(out)
}

/// The hook: masks, and logs what was stored.
pub(crate) struct Profanity;

#[async_trait::async_trait]
impl Hooks for Profanity {
    async fn before_send(&self, message: &Pending) -> Result<Decision, HookError> {
        Ok(match masked(&message.body) {
            Some(body) => Decision::Rewrite { body },
            None => Decision::Allow,
        })
    }

    async fn after_event(&self, event: &RoomEvent) {
        println!("room {} #{}: stored", event.room, event.seq);
    }
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = Builder::new(Config {
        listen: cli.listen,
        storage_url: cli.storage,
        ..Config::default()
    })
    .hooks(Arc::new(Profanity))
    .start()
    .await?;
    println!(
        "chat on http://{}/ with profanity masked",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_words_are_masked_whole_and_in_any_case() {
        assert_eq!(masked("oh darn it"), Some("oh d*** it".to_owned()));
        assert_eq!(masked("Heck! HECK."), Some("H***! H***.".to_owned()));
        assert_eq!(masked("darned good"), None, "whole words only");
        assert_eq!(masked("all fine here"), None);
        assert_eq!(masked("frak"), Some("f***".to_owned()));
    }
}
