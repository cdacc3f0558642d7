//! [`ClientOptions`]: timeouts, TLS trust and the user agent of a
//! [`ChatClient`](crate::ChatClient).

use std::time::Duration;

/// How a [`ChatClient`](crate::ChatClient) talks to the server. Start from
/// [`ClientOptions::default`] and chain the setters.
///
/// ```
/// use std::time::Duration;
/// use chat_client::ClientOptions;
///
/// let options = ClientOptions::default()
///     .timeout(Duration::from_secs(10))
///     .user_agent("my-app/1.0")
///     .refresh_margin(Duration::from_secs(60));
/// assert_eq!(options.get_refresh_margin(), Duration::from_secs(60));
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) root_ca_pem: Vec<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) user_agent: String,
    pub(crate) refresh_margin: Duration,
}

impl Default for ClientOptions {
    /// 30 s per request, 10 s to connect, the system's trust store, a
    /// `chat-client/<version>` user agent, a 30 s refresh margin.
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            root_ca_pem: Vec::new(),
            danger_accept_invalid_certs: false,
            user_agent: concat!("chat-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            refresh_margin: Duration::from_secs(30),
        }
    }
}

// By hand: the PEM bytes are noise in a debug print.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("root_cas", &self.root_ca_pem.len())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("user_agent", &self.user_agent)
            .field("refresh_margin", &self.refresh_margin)
            .finish()
    }
}

impl ClientOptions {
    /// Limit on a whole request, from connecting to the last byte of the
    /// answer. `None` waits forever. Default 30 s.
    ///
    /// Uploads and downloads of attachments take as long as they need: for
    /// them this limits how long no byte moves (and how long the server
    /// takes to answer once it has the whole upload).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ClientOptions::default().timeout(Duration::from_secs(5));
    /// # let _ = o;
    /// ```
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Limit on establishing a connection (TCP and TLS). Default 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ClientOptions::default().connect_timeout(Duration::from_secs(2));
    /// # let _ = o;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Also trusts the certificate authorities in this PEM text (one or
    /// several certificates), besides the system's trust store: for a server
    /// with a private CA or a self-signed certificate. May be called more
    /// than once. A PEM that does not parse fails
    /// [`ChatClient::with_options`](crate::ChatClient::with_options).
    ///
    /// ```no_run
    /// let pem = std::fs::read("ca.pem").expect("CA file");
    /// let o = chat_client::ClientOptions::default().root_ca_pem(pem);
    /// # let _ = o;
    /// ```
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem.push(pem.into());
        self
    }

    /// **Development only.** Accepts any server certificate, valid or not,
    /// for any host name. Anyone on the network path can then read and
    /// change the traffic, tokens included. Prefer
    /// [`root_ca_pem`](Self::root_ca_pem) with the server's certificate.
    ///
    /// ```
    /// let o = chat_client::ClientOptions::default().danger_accept_invalid_certs(true);
    /// # let _ = o;
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }

    /// The `User-Agent` header. Default `chat-client/<version>`.
    ///
    /// ```
    /// let o = chat_client::ClientOptions::default().user_agent("my-app/1.0");
    /// # let _ = o;
    /// ```
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Refresh the access token before a call when it has less than this
    /// left. Default 30 s; zero refreshes only once it has expired (or when
    /// the server answers 401).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ClientOptions::default().refresh_margin(Duration::ZERO);
    /// # let _ = o;
    /// ```
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// The refresh margin set by [`refresh_margin`](Self::refresh_margin).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = chat_client::ClientOptions::default();
    /// assert_eq!(o.get_refresh_margin(), Duration::from_secs(30));
    /// ```
    pub fn get_refresh_margin(&self) -> Duration {
        self.refresh_margin
    }

    /// Builds the HTTP client these options describe.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, crate::ClientError> {
        // reqwest is built without a default rustls provider so that the
        // process has exactly one (ring); an application or a server in the
        // same process may have installed it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent.clone())
            .tls_danger_accept_invalid_certs(self.danger_accept_invalid_certs);
        if let Some(t) = self.timeout {
            builder = builder.timeout(t);
        }
        let mut certs = Vec::new();
        for pem in &self.root_ca_pem {
            let bundle = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| crate::ClientError::Config(format!("root CA PEM: {e}")))?;
            if bundle.is_empty() {
                return Err(crate::ClientError::Config(
                    "root CA PEM holds no certificate".to_owned(),
                ));
            }
            certs.extend(bundle);
        }
        if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map_err(|e| crate::ClientError::Config(format!("HTTP client: {e}")))
    }
}
