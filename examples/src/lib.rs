//! Helpers the examples share: command-line options for a chat session, and
//! logging in (registering first if the account does not exist yet).
//!
//! The examples themselves sit next to this crate's `Cargo.toml`:
//! `echo_bot.rs`, `command_bot.rs`, `terminal_chat.rs`; run them with
//! `cargo run --example NAME -- --help`.

use chat_client::{ChatClient, ClientError, ErrorKind, RegisterRequest, RoomRef};
use clap::Args;

/// Where to connect and as whom.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Server base URL.
    #[arg(long, env = "CHAT_SERVER", default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Username (registered on first use).
    #[arg(long)]
    pub username: String,
    /// Password (at least 8 characters).
    #[arg(long, env = "CHAT_PASSWORD")]
    pub password: String,
    /// Room to join, by name or id (created as public if missing).
    #[arg(long, default_value = "lobby")]
    pub room: String,
}

/// Logs in, registering the account first if login says it does not exist.
pub async fn login(args: &SessionArgs) -> Result<ChatClient, ClientError> {
    let client = ChatClient::new(&args.server)?;
    match client.login(&args.username, &args.password).await {
        Ok(_) => return Ok(client),
        Err(e) if e.kind() == ErrorKind::Unauthorized => {}
        Err(e) => return Err(e),
    }
    client
        .register(RegisterRequest {
            username: args.username.clone(),
            email: format!("{}@example.invalid", args.username),
            password: args.password.clone(),
            display_name: None,
        })
        .await?;
    client.login(&args.username, &args.password).await?;
    Ok(client)
}

/// The room named on the command line, created as a public room if it does
/// not exist yet. Subscribing to a public room joins it.
pub async fn ensure_room(client: &ChatClient, room: &str) -> Result<RoomRef, ClientError> {
    let reference = RoomRef::parse(room);
    if let RoomRef::Name(name) = &reference {
        let created = client
            .create_room(chat_client::CreateRoomRequest {
                name: Some(name.clone()),
                kind: Some(chat_client::RoomType::Public),
                invited_users: Vec::new(),
            })
            .await;
        match created {
            Ok(_) => {}
            // Someone made it already: fine.
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reference)
}
