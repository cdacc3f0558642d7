//! Starting and stopping a server: connect storage and broker, resolve the
//! JWT secret, bind, serve, and shut down gracefully (sockets close 1001).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::ServiceExt;
use axum::extract::Request;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;
use tower_http::normalize_path::NormalizePathLayer;

use crate::auth::Tokens;
use crate::broker::{self, BrokerError, ConnId};
use crate::config::Config;
use crate::hub::{Fanout, Hub};
use crate::service::{ChatService, Limits};
use crate::storage::{self, StorageError, StorageOptions};

/// Limits the HTTP and WebSocket layers enforce.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_request_bytes: usize,
    pub max_frame_bytes: usize,
    pub socket_queue: usize,
    pub rate_limit: u32,
    pub allowed_origins: Option<Vec<String>>,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<ChatService>,
    pub limits: Arc<ServerLimits>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    conn_ids: Arc<ConnIds>,
}

impl AppState {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
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
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot open broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Opens storage and broker, binds `config.listen` and starts serving in
    /// the background. Bind to port 0 to get a free port ([`Self::local_addr`]).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        // One rustls crypto provider for the process (ring): the redis client
        // builds its TLS config from the process default. Already installed
        // (by an embedding application or an earlier server) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::metrics::init();
        let storage = storage::connect(
            &config.storage_url,
            &StorageOptions {
                max_connections: config.storage_pool_size,
            },
        )
        .await?;
        let secret = match &config.jwt_secret {
            Some(s) => s.clone(),
            None => {
                let candidate = format!(
                    "{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                );
                let secret = storage.server_secret("jwt", &candidate).await?;
                tracing::warn!(
                    "no --jwt-secret given: using the secret generated once and kept in the storage \
                     ({}); set CHAT_JWT_SECRET to control it",
                    redact_url(&config.storage_url)
                );
                secret
            }
        };
        let fanout = Arc::new(Fanout::default());
        let broker = broker::connect(
            &config.broker_url,
            &broker::BrokerOptions {
                prefix: config.broker_prefix.clone(),
                tls_ca: config.broker_tls_ca.clone(),
            },
            fanout.clone(),
        )
        .await?;
        let hub = Arc::new(Hub::new(fanout, broker));
        let tokens = Tokens::new(
            secret.as_bytes(),
            config.access_token_ttl,
            config.refresh_token_ttl,
        );
        let service = Arc::new(ChatService::new(
            storage,
            hub,
            tokens,
            Limits {
                max_message_chars: config.max_message_chars,
                auto_create_rooms: config.auto_create_rooms,
            },
        ));
        let state = AppState {
            service,
            limits: Arc::new(ServerLimits {
                max_request_bytes: config.max_request_bytes,
                max_frame_bytes: config.max_frame_bytes,
                socket_queue: config.socket_queue,
                rate_limit: config.rate_limit,
                allowed_origins: config.allowed_origins.clone(),
            }),
            shutdown: CancellationToken::new(),
            conn_ids: Arc::new(ConnIds::new()),
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let app =
            NormalizePathLayer::trim_trailing_slash().layer(crate::http::router(state.clone()));
        let shutdown = state.shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        });
        tracing::info!(%addr, storage = %redact_url(&config.storage_url), broker = %redact_url(&config.broker_url),
            "chat-server listening");
        Ok(Self { addr, state, task })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (service, limits), for embedding and tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, closes every socket with 1001 and waits for the
    /// server task to end.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.state.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after [`Self::shutdown`] or a fatal
    /// error).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// A token that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }
}

/// Applies the storage's pending migrations and checks the database
/// answers: `chat-server migrate`.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    storage::migrate(&config.storage_url).await?;
    tracing::info!(storage = %redact_url(&config.storage_url), "storage migrated");
    Ok(())
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
