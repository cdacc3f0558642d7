//! Starting and stopping a server: build the service ([`builder`]: connect
//! storage and broker, resolve the JWT secret), bind, serve, and shut down
//! gracefully (sockets close 1001).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{BrokerError, ConnId};
use crate::config::Config;
use crate::service::ChatService;
use crate::storage::{self, StorageError};
use crate::tls::{Tls, TlsError};

mod builder;
mod serve;

pub use builder::{Builder, Chat};

/// Limits the HTTP and WebSocket layers enforce.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    pub(crate) max_request_bytes: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) socket_queue: usize,
    pub(crate) rate_limit: u32,
    /// In the form browsers send (see `http::origin`); `None` allows any.
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) service: Arc<ChatService>,
    pub(crate) limits: Arc<ServerLimits>,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Every WebSocket session, so that a shutdown can wait for them.
    pub(crate) sessions: TaskTracker,
    conn_ids: Arc<ConnIds>,
}

impl AppState {
    /// A fresh connection id.
    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.conn_ids.next()
    }
}

/// Connection ids unique across instances: a random instance prefix in the
/// high 32 bits and a counter in the low 32.
#[derive(Debug)]
struct ConnIds {
    prefix: u64,
    counter: AtomicU64,
}

impl ConnIds {
    fn new() -> Self {
        Self {
            prefix: u64::from(rand::random::<u32>()) << 32,
            counter: AtomicU64::new(1),
        }
    }

    fn next(&self) -> ConnId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF;
        ConnId(self.prefix | n)
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The storage cannot be opened or migrated.
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    /// The broker cannot be opened.
    #[error("cannot open broker: {0}")]
    Broker(#[from] BrokerError),
    /// The listening socket cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS cannot be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    /// `chat-server admin` named a user the storage does not have.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// `chat-server api-key` was given a name it cannot use.
    #[error("{0}")]
    ApiKey(String),
    /// The attachments' blob store (its URL, redacted) cannot be opened.
    #[error("cannot open the attachments store {0}: {1}")]
    Files(String, crate::blobs::BlobError),
}

/// A running server: a [`Chat`] served on its own listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    chat: Chat,
    tls: Option<Tls>,
    task: JoinHandle<()>,
}

impl Server {
    /// Opens storage and broker, binds `config.listen` and starts serving in
    /// the background. Bind to port 0 to get a free port ([`Self::local_addr`]).
    /// The same as `Builder::new(config).start()`.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Builder::new(config).start().await
    }

    /// A [`Builder`], to hand in storage, broker or authentication, or to
    /// get a router to mount instead of a server.
    pub fn builder(config: Config) -> Builder {
        Builder::new(config)
    }

    fn serve(
        chat: Chat,
        config: &Config,
        tls: Option<Tls>,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let app = chat.router();
        let options = serve::ServeOptions {
            max_connections: config
                .max_connections
                .unwrap_or_else(serve::default_max_connections),
            header_timeout: config.header_timeout,
            shutdown_timeout: config.shutdown_timeout,
        };
        let shutdown = chat.state.shutdown.clone();
        let sessions = chat.state.sessions.clone();
        let task = match &tls {
            None => {
                // Frames are batched and flushed by the session already;
                // Nagle would only hold the last write of a batch back.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::spawn(serve::serve(listener, app, shutdown, sessions, options))
            }
            Some(tls) => {
                let listener = tls.listen(listener).map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
                tokio::spawn(serve::serve(listener, app, shutdown, sessions, options))
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, %scheme, storage = %redact_url(&config.storage_url), broker = %redact_url(&config.broker_url),
            "chat-server listening");
        if let Some(tls) = &tls {
            log_certificate(tls, addr);
        }
        Ok(Self {
            addr,
            chat,
            tls,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service it serves.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// Stops accepting, closes every socket with 1001 and waits for the
    /// server task to end.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.chat.shutdown();
        self.wait().await
    }

    /// Waits until the server stops (after [`Self::shutdown`] or a fatal
    /// error).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)
    }

    /// The TLS state (`None` when serving plain HTTP): a handle that reloads
    /// the certificate, e.g. from a SIGHUP handler, while the server runs.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Rereads `--tls-cert` and `--tls-key`: new connections get the new
    /// certificate, open ones keep going. On error the old certificate
    /// stays. Returns the new certificate's SHA-256 fingerprint.
    pub fn reload_tls(&self) -> Result<String, TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Err(TlsError::NotConfigured),
        }
    }

    /// The development CA (PEM) a client must trust with
    /// `--tls-self-signed`; `None` otherwise.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().and_then(Tls::ca_pem)
    }

    /// SHA-256 fingerprint of the certificate new connections get.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(Tls::fingerprint)
    }

    /// A token that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.chat.shutdown_token()
    }
}

/// Binds the listening socket, naming the address when it cannot.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Logs what a client needs to check the certificate: its fingerprint and,
/// for the development certificate, where its CA was written.
fn log_certificate(tls: &Tls, addr: SocketAddr) {
    let fingerprint = tls.fingerprint();
    let Some(ca) = tls.ca_pem() else {
        tracing::info!(sha256 = %fingerprint, "TLS certificate loaded");
        return;
    };
    // One file per port, so that several development servers do not
    // overwrite each other's CA.
    let path = std::env::temp_dir().join(format!("chat-server-dev-ca-{}.pem", addr.port()));
    match std::fs::write(&path, ca) {
        Ok(()) => tracing::warn!(sha256 = %fingerprint, ca = %path.display(),
            "TLS with a self-signed development certificate for localhost: not for production; \
             clients trust it with the CA file (curl --cacert FILE https://localhost:{}/healthz)",
            addr.port()),
        Err(e) => tracing::warn!(sha256 = %fingerprint, error = %e, ca = %path.display(),
            "TLS with a self-signed development certificate; its CA could not be written"),
    }
}

/// Applies the storage's pending migrations and checks the database
/// answers: `chat-server migrate`.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    storage::migrate(&config.storage_url).await?;
    tracing::info!(storage = %redact_url(&config.storage_url), "storage migrated");
    Ok(())
}

/// `chat-server admin grant|revoke USER`: makes `user` (a username, or an
/// id) a server admin or not, on the configured storage; the username.
pub async fn set_admin(config: &Config, user: &str, admin: bool) -> Result<String, StartError> {
    let storage =
        storage::connect(&config.storage_url, &storage::StorageOptions::default()).await?;
    let record = match storage.user_by_username(user).await? {
        Some(record) => Some(record),
        None => match user.parse::<i64>() {
            Ok(id) => storage.user(chat_core::UserId(id)).await?,
            Err(_) => None,
        },
    };
    let Some(record) = record else {
        return Err(StartError::NoSuchUser(user.to_owned()));
    };
    storage.set_admin(record.id, admin).await?;
    tracing::info!(user = %record.id, username = %record.username, admin, "server admin changed");
    Ok(record.username)
}

/// `chat-server api-key create|list|revoke` on the configured storage;
/// what to print.
pub async fn api_keys(
    config: &Config,
    command: &crate::config::ApiKeyCommand,
) -> Result<String, StartError> {
    use crate::config::ApiKeyCommand;
    let storage =
        storage::connect(&config.storage_url, &storage::StorageOptions::default()).await?;
    match command {
        ApiKeyCommand::Create { name } => {
            let (record, key) = crate::service::server_api::create_api_key(storage.as_ref(), name)
                .await
                .map_err(|e| StartError::ApiKey(e.to_string()))?;
            tracing::info!(key = record.id, name = %record.name, "API key created");
            Ok(format!(
                "{key}\n\nAPI key {:?} created. This is the only time it is shown: keep it \
                 in your backend's secrets and send it as `Authorization: Bearer {key}`.",
                record.name
            ))
        }
        ApiKeyCommand::List => {
            let keys = storage.api_keys().await?;
            if keys.is_empty() {
                return Ok("no API keys".to_owned());
            }
            let when =
                |t: Option<chat_core::Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
            let mut out = format!(
                "{:<6} {:<24} {:<28} {:<28} revoked",
                "id", "name", "created", "last used"
            );
            for k in keys {
                out.push_str(&format!(
                    "\n{:<6} {:<24} {:<28} {:<28} {}",
                    k.id,
                    k.name,
                    k.created_at.to_string(),
                    when(k.last_used_at),
                    when(k.revoked_at)
                ));
            }
            Ok(out)
        }
        ApiKeyCommand::Revoke { name } => {
            if storage
                .revoke_api_key(name, chat_core::Timestamp::now())
                .await?
            {
                tracing::info!(%name, "API key revoked");
                Ok(format!("API key {name:?} revoked"))
            } else {
                Err(StartError::ApiKey(format!(
                    "no live API key named {name:?}"
                )))
            }
        }
    }
}

/// A URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
