//! Business rules, in one place that HTTP and WebSocket both call: who may do
//! what in which room, validation of names and bodies, tokens, and how stored
//! rows become what a given viewer sees (`is_read`, unread counts).
//!
//! - [`users`]: accounts and tokens.
//! - [`rooms`]: rooms, membership and the access rule.
//! - [`messages`]: send, history and read marks.
//! - [`moderation`]: kick, ban, mute, roles.
//! - [`conversations`]: one-to-one rooms and unread totals.
//! - [`attachments`]: uploads, who may read them, the sweeper of files.

use std::sync::Arc;

use crate::auth::Tokens;
use crate::hooks::Hooks;
use crate::hub::Hub;
use crate::identity::Authenticator;
use crate::storage::Storage;

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod attachments;
pub(crate) mod blocks;
pub(crate) mod conversations;
pub(crate) mod devices;
pub(crate) mod messages;
pub(crate) mod moderation;
pub(crate) mod outbox;
pub(crate) mod provision;
pub(crate) mod push;
pub(crate) mod rooms;
pub(crate) mod server_api;
pub(crate) mod throttle;
pub(crate) mod users;
pub(crate) mod vetting;
pub(crate) mod webhooks;

pub(crate) use rooms::Access;

/// Limits the rules enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Longest message body, in characters.
    pub(crate) max_message_chars: usize,
    /// Whether a bound socket to an unknown room name creates it.
    pub(crate) auto_create_rooms: bool,
    /// Messages per second per user (all sockets and HTTP); 0 = off.
    pub(crate) user_rate_limit: u32,
    /// Failed logins per minute per account; 0 = off.
    pub(crate) login_attempts_per_account: u32,
    /// Failed logins per minute per client address; 0 = off.
    pub(crate) login_attempts_per_address: u32,
}

/// The chat service: storage, fan-out and tokens behind the contract's
/// operations.
pub(crate) struct ChatService {
    storage: Arc<dyn Storage>,
    hub: Arc<Hub>,
    tokens: Tokens,
    limits: Limits,
    login_throttle: throttle::LoginThrottle,
    user_rate: throttle::UserRate,
    accounts: Arc<accounts::Accounts>,
    /// Who the host's tokens are, for tokens not of our own accounts.
    authenticator: Option<Arc<dyn Authenticator>>,
    provisioned: provision::Provisioned,
    key_use: server_api::KeyUse,
    /// The embedder's hooks, if any.
    hooks: Option<Arc<dyn Hooks>>,
    /// Where the commit listener nudges the outbox's tasks.
    outbox: Arc<std::sync::OnceLock<outbox::Nudges>>,
    /// Attachments' bytes and limits.
    files: attachments::Files,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    /// A service over the given parts.
    /// Wires the storage's commits to the hub: every message is published
    /// from its commit point (see [`messages::Publisher`]).
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        hub: Arc<Hub>,
        tokens: Tokens,
        authenticator: Option<Arc<dyn Authenticator>>,
        hooks: Option<Arc<dyn Hooks>>,
        limits: Limits,
        files: attachments::Files,
    ) -> Self {
        let outbox = Arc::new(std::sync::OnceLock::new());
        storage.listen(Arc::new(messages::Publisher {
            hub: hub.clone(),
            after: hooks.clone().map(vetting::after_events),
            outbox: outbox.clone(),
        }));
        let broker = hub.broker().clone();
        Self {
            storage,
            hub,
            tokens,
            login_throttle: throttle::LoginThrottle::new(
                broker.clone(),
                limits.login_attempts_per_account,
                limits.login_attempts_per_address,
            ),
            user_rate: throttle::UserRate::new(broker, limits.user_rate_limit),
            limits,
            accounts: Arc::new(accounts::Accounts::default()),
            authenticator,
            provisioned: provision::Provisioned::default(),
            key_use: server_api::KeyUse::default(),
            hooks,
            outbox,
            files,
        }
    }

    /// Starts listening on the hub's account channel (see
    /// [`accounts`]); `conn` names the listener among the hub's
    /// subscribers.
    pub(crate) async fn start_accounts(&self, conn: crate::event::ConnId) {
        self.accounts.clone().listen(self.hub.clone(), conn).await;
    }

    /// Starts delivering room events to `sinks` (webhooks, push; on tasks
    /// of their own, until `stop`).
    pub(crate) async fn start_outbox(
        self: &Arc<Self>,
        sinks: Vec<Arc<dyn outbox::Sink>>,
        backoff: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::storage::StorageError> {
        if sinks.is_empty() {
            return Ok(());
        }
        let nudges = outbox::start(self.clone(), sinks, backoff, stop).await?;
        let _ = self.outbox.set(nudges);
        Ok(())
    }

    /// Revocations of sessions, for sockets to close on.
    pub(crate) fn revocations(&self) -> tokio::sync::broadcast::Receiver<accounts::Revoked> {
        self.accounts.subscribe()
    }

    /// The durable store.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Local fan-out and the broker behind it.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }
}
