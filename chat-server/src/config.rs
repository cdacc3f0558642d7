//! Server configuration from a TOML file (`--config`), the environment and
//! flags, flags winning over the environment and both over the file. The
//! names of `PROTOCOL.md` are fixed; the rest follow the same pattern.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything the server needs to start. [`Config::default`] is the embedded
/// default (`sqlite://chat.db`, `local://`, `127.0.0.1:8000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the built-in server listens on (not used by [`crate::Chat::router`]).
    pub listen: SocketAddr,
    /// `sqlite://PATH`, `memory://`, `postgres://USER@HOST/DB` (also
    /// `postgresql://`; `?sslmode=require` for TLS).
    pub storage_url: String,
    /// `local://`, `redis://…`, `rediss://…`.
    pub broker_url: String,
    /// Prefix of the broker's keys and channels.
    pub broker_prefix: String,
    /// CA certificate (PEM) for a `rediss://` broker with a private CA.
    pub broker_tls_ca: Option<PathBuf>,
    /// HS256 secret. `None`: one is generated once and kept in storage, so
    /// every instance sharing the storage agrees on it.
    pub jwt_secret: Option<String>,
    /// PEM public key of the host's identity service, whose access tokens
    /// are accepted too (their users provisioned on first sight): an RSA
    /// key verifies RS256, an EC P-256 key ES256.
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file of the host's identity service (its RS256/ES256 keys,
    /// chosen by `kid`), instead of `jwt_public_key`; reread when a token
    /// names a key it lacks.
    pub jwt_jwks: Option<PathBuf>,
    /// The claim of those tokens naming the user (their id in the host).
    pub jwt_subject_claim: String,
    /// The claim of those tokens holding the display name.
    pub jwt_name_claim: String,
    /// The `iss` those tokens must carry, if set.
    pub jwt_issuer: Option<String>,
    /// The `aud` those tokens must carry, if set.
    pub jwt_audience: Option<String>,
    /// Failed logins per minute per account (burst: as many) before
    /// `POST /api/users/token/` answers 429; 0 turns the limit off.
    pub login_attempts_per_account: u32,
    /// Failed logins per minute per client address (burst: as many); 0 = off.
    pub login_attempts_per_address: u32,
    /// Origins allowed to open WebSockets and make CORS calls; `None` allows
    /// any.
    pub allowed_origins: Option<Vec<String>>,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// names the client: the client address (for the per-address login
    /// limit) is the rightmost address in it that is not one of these.
    /// Empty: the TCP peer is the client and the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// HTTPS and WSS instead of plain HTTP and WS; `None` serves plain.
    pub tls: Option<TlsConfig>,
    /// Whether connecting to an unknown room name creates it (as `public`).
    pub auto_create_rooms: bool,
    /// Messages per second per connection (burst: five seconds' worth);
    /// 0 turns the limit off.
    pub rate_limit: u32,
    /// Messages per second per user over all their sockets and HTTP sends on
    /// this instance (burst: five seconds' worth); 0 turns the limit off.
    pub user_rate_limit: u32,
    /// How long an access token of this server's lives.
    pub access_token_ttl: Duration,
    /// How long a refresh token lives (each refresh issues a new one).
    pub refresh_token_ttl: Duration,
    /// Longest message body, in characters.
    pub max_message_chars: usize,
    /// Largest WebSocket frame accepted, in bytes; bigger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes (uploads have their own limit).
    pub max_request_bytes: usize,
    /// Where attachments' bytes go: `file:///dir`, `memory://` or (feature
    /// `s3`) `s3://bucket/prefix?endpoint=…`. `None`: beside the SQLite
    /// file (`<file>.attachments/`), in memory for `memory://` storage, in
    /// `./chat-attachments/` otherwise.
    pub attachments_url: Option<String>,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Most bytes one user's uploads may add up to.
    pub upload_quota_bytes: u64,
    /// How long an upload waits to be sent before it is deleted.
    pub upload_grace: Duration,
    /// Events queued per socket before it counts as too slow (closed 4408).
    pub socket_queue: usize,
    /// Connections served at once by the built-in server (HTTP and
    /// WebSocket alike; with TLS, from the end of the handshake); more are
    /// closed on arrival. `None`: the process's descriptor limit less 256.
    pub max_connections: Option<usize>,
    /// How long a new connection may take to send a request's headers,
    /// and a kept-alive one its next request's (built-in server).
    pub header_timeout: Duration,
    /// How long a shutdown waits for requests in flight and for every
    /// WebSocket to take its close frame (built-in server).
    pub shutdown_timeout: Duration,
    /// Pooled storage connections.
    pub storage_pool_size: u32,
    /// Threads that hash passwords, each holding one argon2 block (19 MiB)
    /// for the life of the process.
    pub password_hash_threads: usize,
    /// An HTTP endpoint that decides on every message and edit before it is
    /// stored (see [`crate::hooks::HttpHook`]); `None`: no hook.
    pub hook_url: Option<String>,
    /// How long a send waits for the hook's answer.
    pub hook_timeout: Duration,
    /// What a hook that fails or does not answer in time means.
    pub hook_failure: crate::hooks::FailurePolicy,
    /// Secret that signs the requests to the hook (`X-Chat-Signature`).
    pub hook_secret: Option<String>,
    /// Endpoints every room event is POSTed to (see `README.md`,
    /// "Webhooks").
    pub webhooks: Vec<WebhookConfig>,
    /// How long a webhook POST may take before it counts as failed.
    pub webhook_timeout: Duration,
    /// The wait after a first failed delivery, doubled after each further
    /// one (at most 10 minutes); webhooks and push alike.
    pub webhook_backoff: Duration,
    /// A Matrix push gateway (`…/_matrix/push/v1/notify`) that members
    /// without a socket in a room are notified through; `None`: no push.
    pub push_gateway: Option<String>,
    /// What notifications say of the message.
    pub push_body: PushBody,
}

/// What a push notification says of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushBody {
    /// The sender's name, the room's, and the start of the body.
    Preview,
    /// Only which room and event (the app fetches the rest): the Matrix
    /// `event_id_only` format, for bodies that must not pass through the
    /// push services.
    None,
}

/// One webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https). Its cursor in storage is
    /// keyed by this URL: a new URL starts from the present.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Chat-Signature` (at least 16 bytes).
    pub secret: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            storage_url: "sqlite://chat.db".to_owned(),
            broker_url: "local://".to_owned(),
            broker_prefix: "chat".to_owned(),
            broker_tls_ca: None,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_jwks: None,
            jwt_subject_claim: "sub".to_owned(),
            jwt_name_claim: "name".to_owned(),
            jwt_issuer: None,
            jwt_audience: None,
            login_attempts_per_account: 5,
            login_attempts_per_address: 20,
            allowed_origins: None,
            trusted_proxies: Vec::new(),
            tls: None,
            auto_create_rooms: false,
            rate_limit: 50,
            user_rate_limit: 0,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            max_message_chars: 4_000,
            max_frame_bytes: 64 * 1024,
            max_request_bytes: 256 * 1024,
            attachments_url: None,
            max_upload_bytes: 25 * 1024 * 1024,
            upload_quota_bytes: 1024 * 1024 * 1024,
            upload_grace: Duration::from_secs(24 * 3600),
            socket_queue: 1_024,
            max_connections: None,
            header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            storage_pool_size: 8,
            password_hash_threads: 1,
            hook_url: None,
            hook_timeout: Duration::from_millis(2_000),
            hook_failure: crate::hooks::FailurePolicy::Open,
            hook_secret: None,
            webhooks: Vec::new(),
            webhook_timeout: Duration::from_secs(10),
            webhook_backoff: Duration::from_secs(1),
            push_gateway: None,
            push_body: PushBody::Preview,
        }
    }
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// A PEM certificate chain (leaf first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), read at start and again on
    /// [`Server::reload_tls`](crate::Server::reload_tls).
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// A development CA and a `localhost` certificate it signs, generated at
    /// start and never reloaded.
    SelfSigned,
}

/// The command line. Every option also reads an environment variable.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "A real-time chat server (HTTP + WebSocket)."
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file; its keys are the long flag names with `_`.
    #[arg(long, env = "CHAT_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long, env = "CHAT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Storage URL: sqlite://PATH, postgres://USER@HOST/DB or memory:// [default: sqlite://chat.db].
    #[arg(
        long = "storage",
        env = "CHAT_STORAGE_URL",
        value_name = "URL",
        global = true
    )]
    pub storage_url: Option<String>,
    /// Broker URL: local://, redis://… or rediss://… [default: local://].
    #[arg(long = "broker", env = "CHAT_BROKER_URL", value_name = "URL")]
    pub broker_url: Option<String>,
    /// Prefix of every broker key and channel, to share one Redis [default: chat].
    #[arg(long, env = "CHAT_BROKER_PREFIX", value_name = "PREFIX")]
    pub broker_prefix: Option<String>,
    /// CA certificate (PEM) that signs a rediss:// broker's certificate [default: system roots].
    #[arg(long, env = "CHAT_BROKER_TLS_CA", value_name = "FILE")]
    pub broker_tls_ca: Option<PathBuf>,
    /// JWT signing secret [default: generated once and kept in storage].
    #[arg(
        long,
        env = "CHAT_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA → RS256, EC P-256 → ES256) of an identity service whose access tokens are accepted too; their users are provisioned.
    #[arg(long, env = "CHAT_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file of an identity service (RS256/ES256 keys by `kid`), instead of --jwt-public-key.
    #[arg(long, env = "CHAT_JWT_JWKS", value_name = "FILE")]
    pub jwt_jwks: Option<PathBuf>,
    /// Claim of identity-service tokens naming the user [default: sub].
    #[arg(long, env = "CHAT_JWT_SUBJECT_CLAIM", value_name = "CLAIM")]
    pub jwt_subject_claim: Option<String>,
    /// Claim of identity-service tokens holding the display name [default: name].
    #[arg(long, env = "CHAT_JWT_NAME_CLAIM", value_name = "CLAIM")]
    pub jwt_name_claim: Option<String>,
    /// Issuer (`iss`) that public-key tokens must carry [default: not checked].
    #[arg(long, env = "CHAT_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Audience (`aud`) that public-key tokens must carry [default: not checked].
    #[arg(long, env = "CHAT_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Failed logins per minute per account before 429, burst as many; 0 = off [default: 5].
    #[arg(long, env = "CHAT_LOGIN_ATTEMPTS_PER_ACCOUNT", value_name = "N")]
    pub login_attempts_per_account: Option<u32>,
    /// Failed logins per minute per client address before 429, burst as many; 0 = off [default: 20].
    #[arg(long, env = "CHAT_LOGIN_ATTEMPTS_PER_ADDRESS", value_name = "N")]
    pub login_attempts_per_address: Option<u32>,
    /// Comma-separated origins allowed for WebSocket and CORS [default: any].
    #[arg(
        long,
        env = "CHAT_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client [default: none, the TCP peer is the client].
    #[arg(
        long,
        env = "CHAT_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// PEM certificate chain (leaf first) for HTTPS and WSS; needs --tls-key [default: plain HTTP].
    #[arg(long, env = "CHAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); reread with the certificate on SIGHUP.
    #[arg(long, env = "CHAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a development certificate for localhost, generated at start.
    #[arg(long, env = "CHAT_TLS_SELF_SIGNED", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub tls_self_signed: Option<bool>,
    /// Create unknown rooms (as public) when a bound socket connects to them.
    #[arg(long, env = "CHAT_AUTO_CREATE_ROOMS", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub auto_create_rooms: Option<bool>,
    /// Messages per second per connection, burst of 5 s worth; 0 = off [default: 50].
    #[arg(long, env = "CHAT_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Messages per second per user over all their sockets and HTTP sends, burst of 5 s worth; 0 = off [default: 0].
    #[arg(long, env = "CHAT_USER_RATE_LIMIT", value_name = "N")]
    pub user_rate_limit: Option<u32>,
    /// Access token lifetime in seconds [default: 900].
    #[arg(long, env = "CHAT_ACCESS_TOKEN_TTL", value_name = "SECS")]
    pub access_token_ttl: Option<u64>,
    /// Refresh token lifetime in seconds [default: 604800].
    #[arg(long, env = "CHAT_REFRESH_TOKEN_TTL", value_name = "SECS")]
    pub refresh_token_ttl: Option<u64>,
    /// Longest message body in characters [default: 4000].
    #[arg(long, env = "CHAT_MAX_MESSAGE_CHARS", value_name = "N")]
    pub max_message_chars: Option<usize>,
    /// Largest WebSocket frame in bytes [default: 65536].
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", value_name = "N")]
    pub max_frame_bytes: Option<usize>,
    /// Largest HTTP request body in bytes [default: 262144].
    #[arg(long, env = "CHAT_MAX_REQUEST_BYTES", value_name = "N")]
    pub max_request_bytes: Option<usize>,
    /// Where attachments' bytes go: file:///DIR, memory:// or s3://BUCKET[/PREFIX]?endpoint=…&region=… [default: beside the SQLite file, in memory for memory://, ./chat-attachments/ otherwise].
    #[arg(long = "attachments", env = "CHAT_ATTACHMENTS_URL", value_name = "URL")]
    pub attachments_url: Option<String>,
    /// Largest upload in bytes [default: 26214400].
    #[arg(long, env = "CHAT_MAX_UPLOAD_BYTES", value_name = "N")]
    pub max_upload_bytes: Option<u64>,
    /// Most bytes one user's uploads may add up to [default: 1073741824].
    #[arg(long, env = "CHAT_UPLOAD_QUOTA_BYTES", value_name = "N")]
    pub upload_quota_bytes: Option<u64>,
    /// Seconds an upload may wait to be sent before it is deleted [default: 86400].
    #[arg(long, env = "CHAT_UPLOAD_GRACE", value_name = "SECS")]
    pub upload_grace: Option<u64>,
    /// Events queued per socket before it is closed as too slow [default: 1024].
    #[arg(long, env = "CHAT_SOCKET_QUEUE", value_name = "N")]
    pub socket_queue: Option<usize>,
    /// Connections served at once; more are closed on arrival [default: the descriptor limit less 256].
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a connection may take to send a request's headers [default: 10].
    #[arg(long, env = "CHAT_HEADER_TIMEOUT", value_name = "SECS")]
    pub header_timeout: Option<u64>,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for requests and sockets to close [default: 10].
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
    /// Pooled storage connections [default: 8].
    #[arg(long, env = "CHAT_STORAGE_POOL_SIZE", value_name = "N")]
    pub storage_pool_size: Option<u32>,
    /// Threads that hash passwords (sign-ups and logins per second grow with
    /// them; each keeps 19 MiB) [default: 1].
    #[arg(long, env = "CHAT_PASSWORD_HASH_THREADS", value_name = "N")]
    pub password_hash_threads: Option<usize>,
    /// HTTP endpoint asked to allow, reject or rewrite every message and edit before it is stored.
    #[arg(long, env = "CHAT_HOOK_URL", value_name = "URL")]
    pub hook_url: Option<String>,
    /// Milliseconds a send waits for the hook [default: 2000].
    #[arg(long, env = "CHAT_HOOK_TIMEOUT", value_name = "MS")]
    pub hook_timeout: Option<u64>,
    /// A failed or late hook: `open` stores the message, `closed` refuses it with 503 hook_unavailable [default: open].
    #[arg(long, env = "CHAT_HOOK_FAILURE", value_name = "open|closed")]
    pub hook_failure: Option<String>,
    /// Secret that signs requests to the hook (X-Chat-Signature) [default: unsigned].
    #[arg(
        long,
        env = "CHAT_HOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub hook_secret: Option<String>,
    /// An endpoint every room event is POSTed to (more in the config file's `[[webhooks]]`).
    #[arg(long, env = "CHAT_WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,
    /// Secret that signs the --webhook-url requests (X-Chat-Signature).
    #[arg(
        long,
        env = "CHAT_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Seconds a webhook POST may take [default: 10].
    #[arg(long, env = "CHAT_WEBHOOK_TIMEOUT", value_name = "SECS")]
    pub webhook_timeout: Option<u64>,
    /// Milliseconds before retrying a failed delivery, doubled each time up to 10 min [default: 1000].
    #[arg(long, env = "CHAT_WEBHOOK_BACKOFF", value_name = "MS")]
    pub webhook_backoff: Option<u64>,
    /// Matrix push gateway URL (…/_matrix/push/v1/notify) for members with no socket in the room.
    #[arg(long, env = "CHAT_PUSH_GATEWAY", value_name = "URL")]
    pub push_gateway: Option<String>,
    /// What a notification shows: `preview` (sender, room, start of the body) or `none` [default: preview].
    #[arg(long, env = "CHAT_PUSH_BODY", value_name = "preview|none")]
    pub push_body: Option<String>,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Apply pending storage migrations and exit. Safe to run from several
    /// instances at once: PostgreSQL migrations take an advisory lock, and
    /// SQLite serializes writers. `serve` applies them too.
    Migrate,
    /// Server admins: `admin grant USER` / `admin revoke USER` (a username
    /// or an id) on the configured storage.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// API keys of the server API, on the configured storage: `api-key
    /// create NAME` (the key is printed once), `api-key list`, `api-key
    /// revoke NAME`.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
}

/// `chat-server api-key …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once and only its hash is kept.
    Create {
        /// A name for the key (unique among live keys), e.g. the backend
        /// that uses it.
        name: String,
    },
    /// List the keys: names, creation, last use, revocation.
    List,
    /// Revoke a key: calls with it get 401 at once.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// `chat-server admin …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AdminCommand {
    /// Make a user a server admin.
    Grant {
        /// A username, or a user id.
        user: String,
    },
    /// Make a server admin a user again.
    Revoke {
        /// A username, or a user id.
        user: String,
    },
}

/// The TOML file: the same settings as the flags, snake_case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    storage: Option<String>,
    broker: Option<String>,
    broker_prefix: Option<String>,
    broker_tls_ca: Option<PathBuf>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    jwt_jwks: Option<PathBuf>,
    jwt_subject_claim: Option<String>,
    jwt_name_claim: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    login_attempts_per_account: Option<u32>,
    login_attempts_per_address: Option<u32>,
    allowed_origins: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_self_signed: Option<bool>,
    auto_create_rooms: Option<bool>,
    rate_limit: Option<u32>,
    user_rate_limit: Option<u32>,
    access_token_ttl: Option<u64>,
    refresh_token_ttl: Option<u64>,
    max_message_chars: Option<usize>,
    max_frame_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    attachments: Option<String>,
    max_upload_bytes: Option<u64>,
    upload_quota_bytes: Option<u64>,
    upload_grace: Option<u64>,
    socket_queue: Option<usize>,
    max_connections: Option<usize>,
    header_timeout: Option<u64>,
    shutdown_timeout: Option<u64>,
    storage_pool_size: Option<u32>,
    password_hash_threads: Option<usize>,
    hook_url: Option<String>,
    hook_timeout: Option<u64>,
    hook_failure: Option<String>,
    hook_secret: Option<String>,
    webhooks: Option<Vec<WebhookConfig>>,
    webhook_timeout: Option<u64>,
    webhook_backoff: Option<u64>,
    push_gateway: Option<String>,
    push_body: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML of known keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: toml::de::Error,
    },
    /// A setting out of its range, or settings that do not go together.
    #[error("invalid setting {0}")]
    Invalid(String),
}

impl Config {
    /// Merges flags and environment (already in `cli`, flags first) over the
    /// file named by `--config`, over the defaults.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Self::default();
        let secs =
            |v: Option<u64>, default: Duration| v.map(Duration::from_secs).unwrap_or(default);
        let config = Self {
            listen: cli.listen.or(file.listen).unwrap_or(d.listen),
            storage_url: cli.storage_url.or(file.storage).unwrap_or(d.storage_url),
            broker_url: cli.broker_url.or(file.broker).unwrap_or(d.broker_url),
            broker_prefix: cli
                .broker_prefix
                .or(file.broker_prefix)
                .unwrap_or(d.broker_prefix),
            broker_tls_ca: cli.broker_tls_ca.or(file.broker_tls_ca),
            jwt_secret: cli.jwt_secret.or(file.jwt_secret),
            jwt_public_key: cli.jwt_public_key.or(file.jwt_public_key),
            jwt_jwks: cli.jwt_jwks.or(file.jwt_jwks),
            jwt_subject_claim: cli
                .jwt_subject_claim
                .or(file.jwt_subject_claim)
                .unwrap_or(d.jwt_subject_claim),
            jwt_name_claim: cli
                .jwt_name_claim
                .or(file.jwt_name_claim)
                .unwrap_or(d.jwt_name_claim),
            jwt_issuer: cli.jwt_issuer.or(file.jwt_issuer),
            jwt_audience: cli.jwt_audience.or(file.jwt_audience),
            login_attempts_per_account: cli
                .login_attempts_per_account
                .or(file.login_attempts_per_account)
                .unwrap_or(d.login_attempts_per_account),
            login_attempts_per_address: cli
                .login_attempts_per_address
                .or(file.login_attempts_per_address)
                .unwrap_or(d.login_attempts_per_address),
            allowed_origins: cli
                .allowed_origins
                .or(file.allowed_origins)
                .filter(|o| !o.is_empty()),
            trusted_proxies: cli
                .trusted_proxies
                .or(file.trusted_proxies)
                .unwrap_or_default(),
            tls: tls_config(
                cli.tls_cert.or(file.tls_cert),
                cli.tls_key.or(file.tls_key),
                cli.tls_self_signed
                    .or(file.tls_self_signed)
                    .unwrap_or(false),
            )?,
            auto_create_rooms: cli
                .auto_create_rooms
                .or(file.auto_create_rooms)
                .unwrap_or(d.auto_create_rooms),
            rate_limit: cli.rate_limit.or(file.rate_limit).unwrap_or(d.rate_limit),
            user_rate_limit: cli
                .user_rate_limit
                .or(file.user_rate_limit)
                .unwrap_or(d.user_rate_limit),
            access_token_ttl: secs(
                cli.access_token_ttl.or(file.access_token_ttl),
                d.access_token_ttl,
            ),
            refresh_token_ttl: secs(
                cli.refresh_token_ttl.or(file.refresh_token_ttl),
                d.refresh_token_ttl,
            ),
            max_message_chars: cli
                .max_message_chars
                .or(file.max_message_chars)
                .unwrap_or(d.max_message_chars),
            max_frame_bytes: cli
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(d.max_frame_bytes),
            max_request_bytes: cli
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(d.max_request_bytes),
            attachments_url: cli.attachments_url.or(file.attachments),
            max_upload_bytes: cli
                .max_upload_bytes
                .or(file.max_upload_bytes)
                .unwrap_or(d.max_upload_bytes),
            upload_quota_bytes: cli
                .upload_quota_bytes
                .or(file.upload_quota_bytes)
                .unwrap_or(d.upload_quota_bytes),
            upload_grace: secs(cli.upload_grace.or(file.upload_grace), d.upload_grace),
            socket_queue: cli
                .socket_queue
                .or(file.socket_queue)
                .unwrap_or(d.socket_queue),
            max_connections: cli.max_connections.or(file.max_connections),
            header_timeout: secs(cli.header_timeout.or(file.header_timeout), d.header_timeout),
            shutdown_timeout: secs(
                cli.shutdown_timeout.or(file.shutdown_timeout),
                d.shutdown_timeout,
            ),
            storage_pool_size: cli
                .storage_pool_size
                .or(file.storage_pool_size)
                .unwrap_or(d.storage_pool_size),
            password_hash_threads: cli
                .password_hash_threads
                .or(file.password_hash_threads)
                .unwrap_or(d.password_hash_threads),
            hook_url: cli.hook_url.or(file.hook_url),
            hook_timeout: cli
                .hook_timeout
                .or(file.hook_timeout)
                .map_or(d.hook_timeout, Duration::from_millis),
            hook_failure: match cli.hook_failure.or(file.hook_failure).as_deref() {
                None => d.hook_failure,
                Some("open") => crate::hooks::FailurePolicy::Open,
                Some("closed") => crate::hooks::FailurePolicy::Closed,
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "hook_failure {other:?}: expected open or closed"
                    )));
                }
            },
            hook_secret: cli.hook_secret.or(file.hook_secret),
            webhooks: {
                let mut webhooks = file.webhooks.unwrap_or_default();
                match (cli.webhook_url, cli.webhook_secret) {
                    (Some(url), Some(secret)) => webhooks.push(WebhookConfig { url, secret }),
                    (None, None) => {}
                    _ => {
                        return Err(ConfigError::Invalid(
                            "webhook_url and webhook_secret go together".into(),
                        ));
                    }
                }
                webhooks
            },
            webhook_timeout: secs(
                cli.webhook_timeout.or(file.webhook_timeout),
                d.webhook_timeout,
            ),
            webhook_backoff: cli
                .webhook_backoff
                .or(file.webhook_backoff)
                .map_or(d.webhook_backoff, Duration::from_millis),
            push_gateway: cli.push_gateway.or(file.push_gateway),
            push_body: match cli.push_body.or(file.push_body).as_deref() {
                None => d.push_body,
                Some("preview") => PushBody::Preview,
                Some("none") => PushBody::None,
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "push_body {other:?}: expected preview or none"
                    )));
                }
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings the server cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_message_chars", self.max_message_chars),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_request_bytes", self.max_request_bytes),
            ("socket_queue", self.socket_queue),
            ("max_connections", self.max_connections.unwrap_or(1)),
            ("header_timeout", self.header_timeout.as_secs() as usize),
            ("storage_pool_size", self.storage_pool_size as usize),
            ("password_hash_threads", self.password_hash_threads),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        for proxy in &self.trusted_proxies {
            if crate::http::proxies::parse(proxy).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "trusted_proxies: {proxy:?} is not an IP address or CIDR block"
                )));
            }
        }
        if self.access_token_ttl.is_zero() || self.refresh_token_ttl.is_zero() {
            return Err(ConfigError::Invalid(
                "token lifetimes must be at least 1 second".into(),
            ));
        }
        if self.jwt_public_key.is_some() && self.jwt_jwks.is_some() {
            return Err(ConfigError::Invalid(
                "jwt_public_key and jwt_jwks: give one of them".into(),
            ));
        }
        if self.jwt_public_key.is_none()
            && self.jwt_jwks.is_none()
            && (self.jwt_issuer.is_some() || self.jwt_audience.is_some())
        {
            return Err(ConfigError::Invalid(
                "jwt_issuer and jwt_audience apply to identity-service tokens: set \
                 jwt_public_key or jwt_jwks"
                    .into(),
            ));
        }
        if self.jwt_subject_claim.is_empty() || self.jwt_name_claim.is_empty() {
            return Err(ConfigError::Invalid(
                "jwt_subject_claim and jwt_name_claim must name a claim".into(),
            ));
        }
        for hook in &self.webhooks {
            match url::Url::parse(&hook.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "webhook url {:?}: an http or https URL",
                        crate::redact_url(&hook.url)
                    )));
                }
            }
            if hook.secret.len() < 16 {
                return Err(ConfigError::Invalid(
                    "a webhook secret must be at least 16 bytes".into(),
                ));
            }
        }
        let mut urls: Vec<&str> = self.webhooks.iter().map(|w| w.url.as_str()).collect();
        urls.sort_unstable();
        if urls.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid("a webhook url is listed twice".into()));
        }
        if self.webhook_timeout > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "webhook_timeout is at most 60 s".into(),
            ));
        }
        if self.webhook_timeout.is_zero() || self.webhook_backoff.is_zero() {
            return Err(ConfigError::Invalid(
                "webhook_timeout and webhook_backoff must be positive".into(),
            ));
        }
        if self.hook_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "hook_timeout must be at least 1 ms".into(),
            ));
        }
        if self.hook_url.is_none() && self.hook_secret.is_some() {
            return Err(ConfigError::Invalid(
                "hook_secret signs requests to hook_url: set hook_url".into(),
            ));
        }
        if matches!(&self.jwt_secret, Some(s) if s.len() < 16) {
            return Err(ConfigError::Invalid(
                "jwt_secret must be at least 16 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// The TLS settings, merged: a certificate and its key, or self-signed, or
/// neither.
fn tls_config(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: bool,
) -> Result<Option<TlsConfig>, ConfigError> {
    match (cert, key, self_signed) {
        (None, None, false) => Ok(None),
        (None, None, true) => Ok(Some(TlsConfig::SelfSigned)),
        (Some(cert), Some(key), false) => Ok(Some(TlsConfig::Files { cert, key })),
        (Some(_), None, _) => Err(ConfigError::Invalid(
            "tls_cert needs tls_key (the certificate's private key)".into(),
        )),
        (None, Some(_), _) => Err(ConfigError::Invalid(
            "tls_key needs tls_cert (the certificate chain it belongs to)".into(),
        )),
        (Some(_), Some(_), true) => Err(ConfigError::Invalid(
            "tls_self_signed cannot be combined with tls_cert and tls_key: choose one".into(),
        )),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("chat-server").chain(args.iter().copied()))
            .expect("valid args")
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_cli(parse(&[])).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.storage_url, "sqlite://chat.db");
        assert_eq!(c.broker_url, "local://");
        assert!(!c.auto_create_rooms);
        assert_eq!(c.rate_limit, 50);
        assert_eq!(c.allowed_origins, None);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nstorage = \"memory://\"\nrate_limit = 7\nauto_create_rooms = true\n",
        )
        .expect("write");
        let path = path.to_str().expect("utf-8 path");
        let c = Config::from_cli(parse(&["--config", path, "--rate-limit", "9"])).expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.storage_url, "memory://");
        assert_eq!(c.rate_limit, 9);
        assert!(c.auto_create_rooms);
    }

    #[test]
    fn boolean_flag_without_value_is_true() {
        let c = Config::from_cli(parse(&["--auto-create-rooms"])).expect("valid");
        assert!(c.auto_create_rooms);
        let c = Config::from_cli(parse(&["--auto-create-rooms", "false"])).expect("valid");
        assert!(!c.auto_create_rooms);
    }

    #[test]
    fn origins_are_comma_separated() {
        let c = Config::from_cli(parse(&[
            "--allowed-origins",
            "https://a.example,https://b.example",
        ]))
        .expect("valid");
        assert_eq!(
            c.allowed_origins,
            Some(vec![
                "https://a.example".to_owned(),
                "https://b.example".to_owned()
            ])
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.toml");
        std::fs::write(&path, "lisen = \"0.0.0.0:9000\"\n").expect("write");
        let path = path.to_str().expect("utf-8 path");
        assert!(matches!(
            Config::from_cli(parse(&["--config", path])),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn admin_grant_and_revoke_parse() {
        let cli = parse(&["admin", "grant", "alice", "--storage", "memory://"]);
        assert_eq!(
            cli.command,
            Some(Command::Admin(AdminCommand::Grant {
                user: "alice".to_owned()
            }))
        );
        let cli = parse(&["admin", "revoke", "7"]);
        assert_eq!(
            cli.command,
            Some(Command::Admin(AdminCommand::Revoke {
                user: "7".to_owned()
            }))
        );
    }

    #[test]
    fn migrate_takes_the_storage_flag_after_it() {
        let cli = parse(&["migrate", "--storage", "memory://"]);
        assert_eq!(cli.command, Some(Command::Migrate));
        assert_eq!(
            Config::from_cli(cli).expect("valid").storage_url,
            "memory://"
        );
        assert_eq!(parse(&[]).command, None);
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key() {
        let c =
            Config::from_cli(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])).expect("valid");
        assert_eq!(
            c.tls,
            Some(TlsConfig::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let c = Config::from_cli(parse(&["--tls-self-signed"])).expect("valid");
        assert_eq!(c.tls, Some(TlsConfig::SelfSigned));
        assert_eq!(Config::from_cli(parse(&[])).expect("valid").tls, None);
    }

    #[test]
    fn tls_halves_and_mixtures_are_refused() {
        let err = |args: &[&str]| match Config::from_cli(parse(args)) {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("{args:?} should be refused, got {other:?}"),
        };
        assert!(err(&["--tls-cert", "c.pem"]).contains("tls_key"));
        assert!(err(&["--tls-key", "k.pem"]).contains("tls_cert"));
        assert!(
            err(&[
                "--tls-self-signed",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem"
            ])
            .contains("tls_self_signed")
        );
    }

    #[test]
    fn tls_from_the_file_and_flags_over_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/etc/chat/cert.pem\"\ntls_key = \"/etc/chat/key.pem\"\n",
        )
        .expect("write");
        let path = path.to_str().expect("utf-8 path");
        let c = Config::from_cli(parse(&["--config", path])).expect("valid");
        assert_eq!(
            c.tls,
            Some(TlsConfig::Files {
                cert: "/etc/chat/cert.pem".into(),
                key: "/etc/chat/key.pem".into()
            })
        );
        let c =
            Config::from_cli(parse(&["--config", path, "--tls-cert", "other.pem"])).expect("valid");
        assert!(
            matches!(c.tls, Some(TlsConfig::Files { cert, .. }) if cert == Path::new("other.pem"))
        );
    }

    #[test]
    fn auth_settings_from_file_env_style_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.toml");
        std::fs::write(
            &path,
            "jwt_public_key = \"/etc/chat/issuer.pem\"\njwt_issuer = \"https://id.example\"\n\
             login_attempts_per_account = 3\nuser_rate_limit = 4\n",
        )
        .expect("write");
        let path = path.to_str().expect("utf-8 path");
        let c = Config::from_cli(parse(&[
            "--config",
            path,
            "--jwt-audience",
            "chat",
            "--login-attempts-per-address",
            "0",
        ]))
        .expect("valid");
        assert_eq!(
            c.jwt_public_key,
            Some(PathBuf::from("/etc/chat/issuer.pem"))
        );
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://id.example"));
        assert_eq!(c.jwt_audience.as_deref(), Some("chat"));
        assert_eq!(c.login_attempts_per_account, 3);
        assert_eq!(c.login_attempts_per_address, 0);
        assert_eq!(c.user_rate_limit, 4);
        let d = Config::from_cli(parse(&[])).expect("valid");
        assert_eq!(
            (
                d.login_attempts_per_account,
                d.login_attempts_per_address,
                d.user_rate_limit
            ),
            (5, 20, 0)
        );
    }

    #[test]
    fn issuer_without_public_key_is_refused() {
        assert!(Config::from_cli(parse(&["--jwt-issuer", "https://id.example"])).is_err());
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(Config::from_cli(parse(&["--jwt-secret", "short"])).is_err());
    }
}
