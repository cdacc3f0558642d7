//! A terminal chat client: type lines to send them, see the room live.
//!
//! ```sh
//! cargo run --example terminal_chat -- --username ann --password password-ann --room lobby
//! ```
//!
//! It prints the last messages first, then everything as it happens
//! (including reconnects, typing and presence). Ctrl-D quits.

use std::collections::HashMap;

use chat_client::{ConnectionState, Event, HistoryQuery, UserId};
use chat_examples::{SessionArgs, ensure_room, login};
use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[derive(Debug, Parser)]
#[command(about = "Chat in a room from the terminal")]
struct Cli {
    #[command(flatten)]
    session: SessionArgs,
    /// How many earlier messages to show on start.
    #[arg(long, default_value_t = 20)]
    last: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = login(&cli.session).await?;
    let me = client.me().await?;
    let room = ensure_room(&client, &cli.session.room).await?;
    let mut conn = client.connect().await?;
    let room = conn.subscribe(room).await?;

    // Subscribing joins a public room and starts the live stream; the page
    // fetched after it may overlap the first live messages, which are then
    // skipped by seq.
    let page = client
        .history(room, HistoryQuery::new().limit(cli.last))
        .await?;
    // Names for presence and typing lines (the first page of users is
    // plenty for a demo; senders of messages are learned as they come).
    let mut names: HashMap<UserId, String> = client
        .users(None, Some(200))
        .await
        .map(|users| users.into_iter().map(|u| (u.id, u.display_name)).collect())
        .unwrap_or_default();
    for m in &page.chat_history {
        names.insert(m.sender, m.sender_name.clone());
        println!("[{}] {}: {}", m.seq, m.sender_name, m.body);
    }
    let shown = page.chat_history.last().map_or(0, |m| m.seq);
    println!(
        "-- {} in room {room}; type to send, Ctrl-D to quit --",
        me.username
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(text) if text.trim().is_empty() => {}
                Some(text) => {
                    if let Err(e) = conn.send(room, text).await {
                        eprintln!("!! not sent: {e}");
                    }
                }
                None => break,
            },
            event = conn.next_event() => match event {
                Some(Event::Message(m)) if m.seq <= shown => {}
                Some(Event::Message(m)) => {
                    names.insert(m.sender, m.sender_name.clone());
                    let who = if m.sender == me.id { "you" } else { m.sender_name.as_str() };
                    println!("[{}] {who}: {}", m.seq, m.body);
                }
                Some(Event::Typing { user, .. }) if user != me.id => {
                    println!("   {} is typing…", names.get(&user).map_or("someone", String::as_str));
                }
                Some(Event::Presence { user, status, .. }) if user != me.id => {
                    println!("   {} is {status:?}", names.get(&user).cloned().unwrap_or_else(|| format!("user {user}")));
                }
                Some(Event::RoomDeleted { .. }) => {
                    println!("-- the room was deleted --");
                    break;
                }
                Some(Event::StateChanged(ConnectionState::Reconnecting { attempt })) => {
                    println!("-- connection lost, reconnecting (attempt {attempt}) --");
                }
                Some(Event::StateChanged(ConnectionState::Connected)) => println!("-- connected --"),
                Some(_) => {}
                None => {
                    println!("-- connection closed --");
                    break;
                }
            },
        }
    }
    conn.close().await;
    Ok(())
}
