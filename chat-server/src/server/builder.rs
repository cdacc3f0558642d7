//! Building a server from its parts: the configuration, and whatever of
//! storage, broker and authentication the embedder hands in instead of
//! what the configuration names.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer as _;
use tower_http::normalize_path::NormalizePathLayer;

use super::{AppState, ConnIds, ServerLimits, StartError, redact_url};
use crate::auth::Tokens;
use crate::blobs::BlobStore;
use crate::broker::{self, Broker, BrokerError, EventSink};
use crate::config::Config;
use crate::hooks::{Hooks, HttpHook};
use crate::hub::{Fanout, Hub};
use crate::identity::{Authenticator, JwtAuthenticator, JwtOptions};
use crate::service::attachments::{FileLimits, Files};
use crate::service::{ChatService, Limits};
use crate::storage::{self, Storage, StorageOptions};

type OpenBroker = Box<
    dyn FnOnce(Arc<dyn EventSink>) -> BoxFuture<'static, Result<Arc<dyn Broker>, BrokerError>>
        + Send,
>;

/// Builds a chat server: [`Builder::start`] serves it on the configured
/// address, [`Builder::build`] gives a [`Chat`] whose router the host
/// mounts in its own axum app.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use chat_server::{Builder, Config};
/// use chat_server::storage::memory::MemoryStorage;
///
/// let chat = Builder::new(Config::default())
///     .storage(Arc::new(MemoryStorage::new()))
///     .build()
///     .await?;
/// let app = axum::Router::new().nest("/chat", chat.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let closing = chat.clone();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         closing.shutdown();
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct Builder {
    config: Config,
    storage: Option<Arc<dyn Storage>>,
    broker: Option<OpenBroker>,
    authenticator: Option<Arc<dyn Authenticator>>,
    hooks: Option<Arc<dyn Hooks>>,
    blobs: Option<Arc<dyn BlobStore>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("storage", &self.storage.is_some())
            .field("broker", &self.broker.is_some())
            .field("authenticator", &self.authenticator.is_some())
            .field("hooks", &self.hooks.is_some())
            .field("blobs", &self.blobs.is_some())
            .finish()
    }
}

impl Builder {
    /// A server with `config`, its storage and broker opened from
    /// `config.storage_url` and `config.broker_url` unless given.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            storage: None,
            broker: None,
            authenticator: None,
            hooks: None,
            blobs: None,
        }
    }

    /// Keeps attachments' bytes in `blobs` instead of the store
    /// `config.attachments_url` names (or its default). Every instance
    /// sharing the storage must share the blob store too.
    pub fn blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Uses `storage` instead of opening `config.storage_url` (which is then
    /// only used in logs). A storage is shared by every instance of one
    /// deployment; it must be migrated already (the built-in backends
    /// migrate when they connect).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Uses the broker `open` returns instead of opening
    /// `config.broker_url`. A broker delivers what other instances publish
    /// to a sink the server makes, so the server hands it over: `open` gets
    /// the sink and connects.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use chat_server::broker::{Broker, local::LocalBroker};
    ///
    /// let chat = chat_server::Builder::new(chat_server::Config::default())
    ///     .broker(|sink| async move { Ok(Arc::new(LocalBroker::new(sink)) as Arc<dyn Broker>) })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn broker<F, Fut>(mut self, open: F) -> Self
    where
        F: FnOnce(Arc<dyn EventSink>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<dyn Broker>, BrokerError>> + Send + 'static,
    {
        self.broker = Some(Box::new(move |sink| open(sink).boxed()));
        self
    }

    /// Says who the tokens are that the server's own accounts do not
    /// recognise (see [`crate::identity`]), instead of the
    /// [`JwtAuthenticator`] `config.jwt_public_key` / `config.jwt_jwks`
    /// would make. Its users are provisioned on first sight.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// The embedder's [`Hooks`] (before-send decisions, after-event
    /// notifications), instead of the [`HttpHook`] `config.hook_url` would
    /// make.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Opens storage and broker and builds the service, without listening:
    /// mount [`Chat::router`] in the host's app. The host's server
    /// terminates TLS (`config.tls` and `config.listen` are not used).
    pub async fn build(self) -> Result<Chat, StartError> {
        let config = self.config;
        config.validate()?;
        // One rustls crypto provider for the process (ring): the redis client
        // builds its TLS config from the process default. Already installed
        // (by an embedding application or an earlier server) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::metrics::init();
        if !crate::auth::hashing_threads(config.password_hash_threads) {
            tracing::debug!(
                "password hashing already running in this process; keeping its threads"
            );
        }
        let storage = match self.storage {
            Some(storage) => storage,
            None => {
                storage::connect(
                    &config.storage_url,
                    &StorageOptions {
                        max_connections: config.storage_pool_size,
                    },
                )
                .await?
            }
        };
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
        let fanout = Fanout::new();
        let broker = match self.broker {
            Some(open) => open(fanout.clone()).await?,
            None => {
                broker::connect(
                    &config.broker_url,
                    &broker::BrokerOptions {
                        prefix: config.broker_prefix.clone(),
                        tls_ca: config.broker_tls_ca.clone(),
                    },
                    fanout.clone(),
                )
                .await?
            }
        };
        let hub = Arc::new(Hub::new(fanout, broker));
        let tokens = Tokens::new(
            secret.as_bytes(),
            config.access_token_ttl,
            config.refresh_token_ttl,
        );
        let authenticator = match self.authenticator {
            Some(authenticator) => Some(authenticator),
            None => configured_authenticator(&config)?,
        };
        let hooks = match self.hooks {
            Some(hooks) => Some(hooks),
            None => match &config.hook_url {
                Some(url) => {
                    let hook = HttpHook::new(
                        url,
                        config.hook_timeout,
                        config.hook_failure,
                        config.hook_secret.clone(),
                    )
                    .map_err(|why| StartError::Config(crate::config::ConfigError::Invalid(why)))?;
                    tracing::info!(url = %redact_url(url), failure = ?config.hook_failure,
                        timeout = ?config.hook_timeout, "messages are vetted by the before-send hook");
                    Some(Arc::new(hook) as Arc<dyn Hooks>)
                }
                None => None,
            },
        };
        let blobs = match self.blobs {
            Some(blobs) => blobs,
            None => {
                let url = attachments_url(&config);
                let blobs = crate::blobs::open(&url)
                    .await
                    .map_err(|e| StartError::Files(redact_url(&url), e))?;
                tracing::info!(url = %redact_url(&url), "attachments are kept here");
                blobs
            }
        };
        let link_candidate = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let link_secret = storage
            .server_secret("attachment-links", &link_candidate)
            .await?;
        let files = Files::new(
            blobs,
            FileLimits {
                max_file: config.max_upload_bytes,
                quota: config.upload_quota_bytes,
                grace: config.upload_grace,
                ..FileLimits::default()
            },
            link_secret.as_bytes(),
        );
        let service = Arc::new(ChatService::new(
            storage,
            hub,
            tokens,
            authenticator,
            hooks,
            Limits {
                max_message_chars: config.max_message_chars,
                auto_create_rooms: config.auto_create_rooms,
                user_rate_limit: config.user_rate_limit,
                login_attempts_per_account: config.login_attempts_per_account,
                login_attempts_per_address: config.login_attempts_per_address,
            },
            files,
        ));
        service.start_sweeper(sweep_interval(config.upload_grace));
        let state = AppState {
            service,
            limits: Arc::new(ServerLimits {
                max_request_bytes: config.max_request_bytes,
                max_frame_bytes: config.max_frame_bytes,
                socket_queue: config.socket_queue,
                rate_limit: config.rate_limit,
                allowed_origins: crate::http::origin::normalize(config.allowed_origins.as_deref()),
                trusted_proxies: config
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| crate::http::proxies::parse(p))
                    .collect(),
            }),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            conn_ids: Arc::new(ConnIds::new()),
        };
        state.service.start_accounts(state.next_conn_id()).await;
        state
            .service
            .start_outbox(
                outbox_sinks(&config)?,
                config.webhook_backoff,
                state.shutdown.clone(),
            )
            .await?;
        Ok(Chat { state })
    }

    /// Builds the server and serves it on `config.listen` (with TLS when
    /// `config.tls` says so), in the background. Bind to port 0 to get a
    /// free port ([`super::Server::local_addr`]).
    pub async fn start(self) -> Result<super::Server, StartError> {
        // Before storage: a bad certificate path should fail fast, not after
        // migrations.
        let tls = self
            .config
            .tls
            .as_ref()
            .map(crate::tls::Tls::new)
            .transpose()?;
        // Before storage too: a port in use should fail before a database
        // file, its migrations or a generated secret are left behind.
        let listener = super::bind(self.config.listen).await?;
        let config = self.config.clone();
        let chat = self.build().await?;
        super::Server::serve(chat, &config, tls, listener)
    }
}

/// A built chat service: its routes, and the handles that stop it. Clones
/// share the service.
#[derive(Debug, Clone)]
pub struct Chat {
    pub(super) state: AppState,
}

impl Chat {
    /// Every route of the contract (REST, WebSocket, `/healthz`,
    /// `/metrics`, `/docs`), to serve as is or nest under a prefix of the
    /// host's app (`Router::nest("/chat", chat.router())`). Trailing
    /// slashes are optional, as on the built-in server. Client addresses
    /// (for the per-address login limit) come from the host's
    /// `ConnectInfo<SocketAddr>` when it serves with
    /// `into_make_service_with_connect_info`; without, that limit is off.
    pub fn router(&self) -> axum::Router {
        let normalized = NormalizePathLayer::trim_trailing_slash()
            .layer(crate::http::router(self.state.clone()));
        axum::Router::new().fallback_service(normalized)
    }

    /// The storage the service runs on (the one given, or the one the
    /// configuration named).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        self.state.service.storage()
    }

    /// Closes every WebSocket with 1001 (going away) and ends the
    /// service's background work: call it when the host shuts down, before
    /// or while its server drains (sockets would otherwise hold a graceful
    /// shutdown open until they drop).
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Waits until every WebSocket session has ended, after
    /// [`Chat::shutdown`]: each has sent its close frame (1001) and
    /// finished the send it was storing. A host awaits this after its own
    /// server stopped accepting, under a deadline of its choosing.
    pub async fn closed(&self) {
        self.state.sessions.close();
        self.state.sessions.wait().await;
    }

    /// Creates an API key of the server API (as `chat-server api-key
    /// create` does): the key, to keep in the backend's secrets, and its
    /// record. Only its hash is stored.
    pub async fn create_api_key(
        &self,
        name: &str,
    ) -> Result<(String, crate::storage::ApiKeyRecord), crate::ApiKeyError> {
        crate::service::server_api::create_api_key(self.storage().as_ref(), name)
            .await
            .map(|(record, key)| (key, record))
    }

    /// A token cancelled when the service shuts down; cancelling it shuts
    /// the service down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }
}

/// The [`JwtAuthenticator`] `jwt_public_key` or `jwt_jwks` names, if one
/// does: a key that cannot be used stops the start.
fn configured_authenticator(config: &Config) -> Result<Option<Arc<dyn Authenticator>>, StartError> {
    let options = JwtOptions {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        subject_claim: config.jwt_subject_claim.clone(),
        name_claim: config.jwt_name_claim.clone(),
    };
    let invalid = |setting: &str, path: &std::path::Path, why: String| {
        StartError::Config(crate::config::ConfigError::Invalid(format!(
            "{setting} {}: {why}",
            path.display()
        )))
    };
    let (authenticator, path) = if let Some(path) = &config.jwt_public_key {
        let pem =
            std::fs::read(path).map_err(|e| invalid("jwt_public_key", path, e.to_string()))?;
        let authenticator = JwtAuthenticator::from_pem(&pem, options)
            .map_err(|e| invalid("jwt_public_key", path, e.to_string()))?;
        (authenticator, path)
    } else if let Some(path) = &config.jwt_jwks {
        let authenticator = JwtAuthenticator::from_jwks_file(path, options)
            .map_err(|e| invalid("jwt_jwks", path, e.to_string()))?;
        (authenticator, path)
    } else {
        return Ok(None);
    };
    tracing::info!(algorithms = ?authenticator.algorithms(), path = %path.display(),
        "accepting the identity service's access tokens; their users are provisioned");
    Ok(Some(Arc::new(authenticator)))
}

/// The outbox's sinks the configuration names: its webhook endpoints and
/// its push gateway.
fn outbox_sinks(config: &Config) -> Result<Vec<Arc<dyn crate::service::outbox::Sink>>, StartError> {
    let client = reqwest::Client::builder()
        .timeout(config.webhook_timeout)
        .build()
        .map_err(|e| StartError::Config(crate::config::ConfigError::Invalid(e.to_string())))?;
    let mut sinks: Vec<Arc<dyn crate::service::outbox::Sink>> = config
        .webhooks
        .iter()
        .map(|w| {
            Arc::new(crate::service::webhooks::WebhookSink {
                url: w.url.clone(),
                secret: w.secret.clone(),
                client: client.clone(),
            }) as Arc<dyn crate::service::outbox::Sink>
        })
        .collect();
    if let Some(gateway) = &config.push_gateway {
        tracing::info!(gateway = %redact_url(gateway), body = ?config.push_body,
            "notifying members without a socket through the push gateway");
        sinks.push(Arc::new(crate::service::push::PushSink {
            gateway: gateway.clone(),
            body: config.push_body,
            client,
        }));
    }
    Ok(sinks)
}

/// Where attachments go when the configuration does not say: beside a
/// SQLite file (`chat.db` → `chat.db.attachments/`), in memory beside
/// `memory://` storage, else `./chat-attachments/`.
fn attachments_url(config: &Config) -> String {
    if let Some(url) = &config.attachments_url {
        return url.clone();
    }
    let storage = config.storage_url.as_str();
    if storage.starts_with("memory:") {
        return "memory://".to_owned();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let dir = match storage
        .strip_prefix("sqlite://")
        .or(storage.strip_prefix("sqlite:"))
    {
        Some(rest) => {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path.contains(":memory:") {
                return "memory://".to_owned();
            }
            cwd.join(format!("{path}.attachments"))
        }
        None => cwd.join("chat-attachments"),
    };
    format!("file://{}", dir.display())
}

/// How often the sweeper looks for files to delete besides when woken: a
/// tenth of the grace period, between 1 s and a minute.
fn sweep_interval(grace: std::time::Duration) -> std::time::Duration {
    (grace / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    )
}
