//! A bot that repeats every message it sees in a room.
//!
//! ```sh
//! cargo run --example echo_bot -- --username echo --password echo-secret --room lobby
//! ```
//!
//! It survives server restarts and network drops: the connection reconnects
//! by itself and resumes where it stopped, so nothing is echoed twice.

use chat_client::Event;
use chat_examples::{SessionArgs, ensure_room, login};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Echoes every message of a room")]
struct Cli {
    #[command(flatten)]
    session: SessionArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = login(&cli.session).await?;
    let me = client.me().await?;
    let room = ensure_room(&client, &cli.session.room).await?;
    let mut conn = client.connect().await?;
    let room = conn.subscribe(room).await?;
    println!("echo bot {} listening in room {room}", me.username);
    while let Some(event) = conn.next_event().await {
        if let Event::Message(m) = event {
            // Our own echoes come back through the stream too.
            if m.sender == me.id || m.room != room {
                continue;
            }
            let reply = format!("echo: {}", m.body);
            if let Err(e) = conn.send(room, reply).await {
                eprintln!("could not echo message {}: {e}", m.seq);
            }
        }
    }
    Ok(())
}
