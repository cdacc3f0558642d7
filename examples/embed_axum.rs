//! A host application with chat inside: an axum app with its own users and
//! login that mounts chat under `/chat`, hands out chat tokens minted with
//! the server API, and runs a bot.
//!
//! ```sh
//! cargo run --example embed_axum -- --listen 127.0.0.1:8080
//! # The host's own login answers chat tokens for the chat client:
//! curl -s -XPOST localhost:8080/login -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-secret"}'
//! # {"chat_url":"http://127.0.0.1:8080/chat/","access":"…","refresh":"…"}
//! ```
//!
//! Clients use `http://HOST/chat/` as chat's base URL, with those tokens;
//! in the room `lobby`, `!ping` gets a `pong` from the bot and `!who` the
//! members. The host talks to chat only through the server API (an API key
//! it makes at start), as a backend in another process would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_client::chat_core::api::TokenResponse;
use chat_client::{ChatClient, Event, Tokens};
use chat_server::{Builder, Chat, Config};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

/// The room the host puts every user in.
pub(crate) const LOBBY: &str = "lobby";
/// The bot's name.
pub(crate) const BOT: &str = "helper";
/// The bot as the server API names it: bots are `bot:{name}`.
const BOT_ID: &str = "bot:helper";

#[derive(Debug, Parser)]
#[command(about = "A host app with chat mounted under /chat")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Chat's storage.
    #[arg(long, default_value = "sqlite://embed.db")]
    storage: String,
}

/// The host's own users (a real app has its own database and password
/// hashing; this is about the chat side).
fn host_users() -> HashMap<String, String> {
    [("alice", "alice-secret"), ("bob", "bob-secret")]
        .into_iter()
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}

/// What the host's handlers need.
#[derive(Clone)]
struct Host {
    users: Arc<HashMap<String, String>>,
    /// Found or made on first need (the server API it takes is served by
    /// this very app, so not before it serves).
    lobby: Arc<tokio::sync::OnceCell<i64>>,
    /// Chat's base URL as clients reach it.
    chat_url: String,
    /// The server API, with the host's key.
    chat_api: ServerApi,
}

/// The server API over HTTP (the host could be another process).
#[derive(Clone)]
pub(crate) struct ServerApi {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ServerApi {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        anyhow::ensure!(status.is_success(), "server API {path}: {status} {body}");
        Ok(body)
    }

    /// Creates or updates the host's user `id` in chat.
    pub(crate) async fn upsert_user(
        &self,
        id: &str,
        name: &str,
        bot: bool,
    ) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::PUT,
            &format!("server/users/{id}/"),
            json!({"display_name": name, "username": id.trim_start_matches("bot:"), "bot": bot}),
        )
        .await
    }

    /// Chat tokens for the host's user `id`.
    pub(crate) async fn tokens(&self, id: &str) -> anyhow::Result<Tokens> {
        let body: TokenResponse = serde_json::from_value(
            self.call(
                reqwest::Method::POST,
                &format!("server/users/{id}/tokens/"),
                json!({}),
            )
            .await?,
        )?;
        let expires_at = SystemTime::now() + Duration::from_secs(body.expires_in);
        Ok(Tokens::new(body.access, body.refresh, Some(expires_at)))
    }

    /// The lobby, owned by the bot: made on the first run, found on the
    /// next ones (the bot is in it); its id.
    pub(crate) async fn lobby(&self) -> anyhow::Result<i64> {
        let made = self
            .call(
                reqwest::Method::POST,
                "server/rooms/",
                json!({"name": LOBBY, "type": "public", "owner": BOT_ID}),
            )
            .await;
        if let Ok(room) = made {
            return room["id"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("no room id in {room}"));
        }
        let bot = ChatClient::new(&self.base)?;
        bot.set_tokens(Some(self.tokens(BOT_ID).await?));
        let rooms = bot.rooms().await?;
        let lobby = rooms
            .iter()
            .find(|r| r.name == LOBBY)
            .ok_or_else(|| anyhow::anyhow!("no lobby: {made:?}"))?;
        Ok(lobby.id.0)
    }

    /// Makes the host's user `id` a member of `room`.
    pub(crate) async fn add_member(&self, room: i64, id: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("server/rooms/{room}/members/"),
            json!({"add": [id]}),
        )
        .await
        .map(drop)
    }

    /// The usernames of `room`'s members.
    async fn members(&self, room: i64) -> anyhow::Result<Vec<String>> {
        let bot = ChatClient::new(&self.base)?;
        bot.set_tokens(Some(self.tokens(BOT_ID).await?));
        Ok(bot
            .room(chat_client::chat_core::RoomId(room))
            .await?
            .members)
    }

    /// Posts as the bot.
    pub(crate) async fn say(&self, room: i64, text: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("server/rooms/{room}/messages/"),
            json!({"bot": BOT, "message": text}),
        )
        .await
        .map(drop)
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// The host's login: its own check, then chat tokens for the chat client.
async fn login(State(host): State<Host>, Json(req): Json<Login>) -> (StatusCode, Json<Value>) {
    if host.users.get(&req.username) != Some(&req.password) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "wrong username or password"})),
        );
    }
    let minted = async {
        host.chat_api
            .upsert_user(&req.username, &capitalized(&req.username), false)
            .await?;
        let lobby = *host.lobby.get_or_try_init(|| host.chat_api.lobby()).await?;
        host.chat_api.add_member(lobby, &req.username).await?;
        host.chat_api.tokens(&req.username).await
    };
    match minted.await {
        Ok(tokens) => (
            StatusCode::OK,
            Json(json!({
                "chat_url": host.chat_url,
                "access": tokens.access,
                "refresh": tokens.refresh,
            })),
        ),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": format!("chat: {e}")})),
        ),
    }
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The host's app: its pages and login, and chat under `/chat`.
pub(crate) fn app(chat: &Chat, chat_url: String, chat_api: ServerApi) -> Router {
    let host = Host {
        users: Arc::new(host_users()),
        lobby: Arc::default(),
        chat_url,
        chat_api,
    };
    Router::new()
        .route(
            "/",
            get(|| async { "The host app. POST /login for chat tokens." }),
        )
        .route("/login", post(login))
        .with_state(host)
        .nest("/chat", chat.router())
}

/// Builds chat on `storage_url`, mounts it in the host's app, serves that
/// on `listener` and starts the bot; everything stops when `chat` shuts
/// down.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    storage_url: String,
) -> anyhow::Result<(Chat, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let addr = listener.local_addr()?;
    let chat = Builder::new(Config {
        storage_url,
        ..Config::default()
    })
    .build()
    .await?;
    // One key per host; a restart replaces it.
    chat.storage()
        .revoke_api_key("embed-host", chat_client::chat_core::Timestamp::now())
        .await?;
    let (key, _) = chat.create_api_key("embed-host").await?;
    let chat_url = format!("http://{addr}/chat/");
    let chat_api = ServerApi {
        http: reqwest::Client::new(),
        base: chat_url.clone(),
        key,
    };
    let router = app(&chat, chat_url, chat_api.clone());
    let closing = chat.shutdown_token();
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { closing.cancelled().await })
        .await?;
        Ok(())
    });
    chat_api.upsert_user(BOT_ID, "Helper", true).await?;
    let lobby = chat_api.lobby().await?;
    // Listening before anyone can log in, so that it misses nothing.
    let bot = Bot::connect(chat_api, lobby).await?;
    let stop = chat.shutdown_token();
    tokio::spawn(async move {
        if let Err(e) = bot.run(stop).await {
            eprintln!("the bot stopped: {e}");
        }
    });
    Ok((chat, served))
}

/// The bot: listens on a socket of its own (tokens minted for it) and
/// answers commands in the lobby through the server API.
struct Bot {
    api: ServerApi,
    room: i64,
    me: chat_client::chat_core::UserId,
    conn: chat_client::Connection,
}

impl Bot {
    async fn connect(api: ServerApi, room: i64) -> anyhow::Result<Self> {
        let client = ChatClient::new(&api.base)?;
        client.set_tokens(Some(api.tokens(BOT_ID).await?));
        let me = client.me().await?.id;
        let conn = client.connect().await?;
        conn.subscribe(chat_client::chat_core::RoomId(room)).await?;
        Ok(Self {
            api,
            room,
            me,
            conn,
        })
    }

    async fn run(mut self, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                event = self.conn.next_event() => event,
            };
            let Some(event) = event else { return Ok(()) };
            let Event::Message(m) = event else { continue };
            if m.sender == self.me {
                continue;
            }
            let reply = match m.body.trim() {
                "!ping" => "pong".to_owned(),
                "!who" => format!(
                    "in the lobby: {}",
                    self.api.members(self.room).await?.join(", ")
                ),
                _ => continue,
            };
            if let Err(e) = self.api.say(self.room, &reply).await {
                eprintln!("the bot could not answer: {e}");
            }
        }
    }
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let (chat, served) = serve(listener, cli.storage).await?;
    println!(
        "host on http://{}/, chat on http://{}/chat/",
        cli.listen, cli.listen
    );
    tokio::signal::ctrl_c().await?;
    chat.shutdown();
    served.await??;
    Ok(())
}
