//! [`ChatClient`]: the HTTP side of the SDK, and the request helper every
//! typed call goes through (bearer token, refresh, error decoding).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chat_core::ErrorCode;
use chat_core::api::{RefreshRequest, TokenResponse};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::{AuthState, Tokens};
use crate::{ClientError, ClientOptions};

/// A client of one chat-rs server: typed calls for every HTTP operation of
/// the protocol, and the session (access and refresh tokens) they use.
///
/// Cloning is cheap and every clone shares the connection pool and the
/// session: log in once, hand clones to tasks. The access token is refreshed
/// automatically, shortly before it expires
/// ([`ClientOptions::refresh_margin`]) and when the server answers 401; the
/// refresh is single-flight, so concurrent calls spend the refresh token once.
///
/// The typed calls are grouped by resource: users and tokens
/// ([`register`](Self::register), [`login`](Self::login), …), rooms
/// ([`create_room`](Self::create_room), …), messages
/// ([`history`](Self::history), [`send`](Self::send)), conversations
/// ([`create_conversation`](Self::create_conversation), …) and attachments
/// ([`upload_file`](Self::upload_file), [`download`](Self::download), …).
///
/// ```no_run
/// use chat_client::ChatClient;
///
/// # async fn demo() -> Result<(), chat_client::ClientError> {
/// let client = ChatClient::new("https://chat.example.com")?;
/// client.login("alice", "correct horse battery staple").await?;
/// println!("hello, {}", client.me().await?.display_name);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ChatClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Always ends with `/`, so that joining a relative path keeps any prefix
    /// the server is mounted under.
    base: Url,
    options: ClientOptions,
    auth: AuthState,
}

impl ChatClient {
    /// A client for the server at `base_url` (`http://` or `https://`, with
    /// an optional path prefix) with default [`ClientOptions`].
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("http://127.0.0.1:8000").expect("valid URL");
    /// assert_eq!(client.base_url().as_str(), "http://127.0.0.1:8000/");
    /// ```
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_options(base_url, ClientOptions::default())
    }

    /// A client for the server at `base_url` with these options.
    ///
    /// Fails with [`ErrorKind::Config`](crate::ErrorKind::Config) for a URL
    /// that is not `http`/`https` or a root CA that does not parse.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chat_client::{ChatClient, ClientOptions};
    ///
    /// let client = ChatClient::with_options(
    ///     "https://chat.example.com/prefix",
    ///     ClientOptions::default().timeout(Duration::from_secs(5)),
    /// )
    /// .expect("valid options");
    /// assert_eq!(client.base_url().as_str(), "https://chat.example.com/prefix/");
    /// assert!(ChatClient::new("ftp://example.com").is_err());
    /// ```
    pub fn with_options(base_url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let mut base = Url::parse(base_url)
            .map_err(|e| ClientError::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "base URL {base_url:?}: the scheme must be http or https"
            )));
        }
        if base.cannot_be_a_base() {
            return Err(ClientError::Config(format!(
                "base URL {base_url:?} cannot be a base"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = options.http_client()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                options,
                auth: AuthState::new(),
            }),
        })
    }

    /// The server's base URL, ending with `/`.
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("http://localhost:8000").expect("valid URL");
    /// assert_eq!(client.base_url().host_str(), Some("localhost"));
    /// ```
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The options the client was built with.
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("http://localhost:8000").expect("valid URL");
    /// assert_eq!(client.options().get_refresh_margin().as_secs(), 30);
    /// ```
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The current session's tokens, to persist them; `None` when logged out.
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("http://localhost:8000").expect("valid URL");
    /// assert!(client.tokens().is_none());
    /// ```
    pub fn tokens(&self) -> Option<Tokens> {
        self.inner.auth.get()
    }

    /// Restores a saved session (or, with `None`, forgets the current one
    /// locally without telling the server; see [`logout`](Self::logout)).
    /// An expired access token is fine: the next call refreshes it.
    ///
    /// ```
    /// use chat_client::{ChatClient, Tokens};
    ///
    /// let client = ChatClient::new("http://localhost:8000").expect("valid URL");
    /// client.set_tokens(Some(Tokens::new("saved access", "saved refresh", None)));
    /// assert!(client.is_logged_in());
    /// ```
    pub fn set_tokens(&self, tokens: Option<Tokens>) {
        self.inner.auth.set(tokens);
    }

    /// Whether the client holds a session (it may still be rejected by the
    /// server if it was revoked).
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("http://localhost:8000").expect("valid URL");
    /// assert!(!client.is_logged_in());
    /// ```
    pub fn is_logged_in(&self) -> bool {
        self.inner.auth.get().is_some()
    }

    /// The shared session state.
    pub(crate) fn auth(&self) -> &AuthState {
        &self.inner.auth
    }

    /// An access token that does not expire within the refresh margin,
    /// refreshing first if needed. (What a WebSocket connection presents.)
    pub(crate) async fn access_token(&self) -> Result<String, ClientError> {
        self.fresh_tokens().await.map(|t| t.access)
    }

    /// The session's tokens, refreshed first if the access token expires
    /// within the refresh margin (single-flight, like every refresh).
    pub(crate) async fn fresh_tokens(&self) -> Result<Tokens, ClientError> {
        let tokens = self.inner.auth.get().ok_or(ClientError::NotLoggedIn)?;
        if !tokens.expires_within(self.inner.options.refresh_margin) {
            return Ok(tokens);
        }
        match self.refresh_after(Some(&tokens.access)).await {
            Ok(fresh) => Ok(fresh),
            // A proactive refresh that could not reach the server: the old
            // token still works until it actually expires.
            Err(e) if e.is_retryable() && !tokens.expires_within(std::time::Duration::ZERO) => {
                tracing::debug!(error = %e, "token refresh failed; using the current token");
                Ok(tokens)
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes the session, unless another caller already replaced the
    /// access token `stale` while this one waited for the lock. `None`
    /// refreshes unconditionally.
    pub(crate) async fn refresh_after(&self, stale: Option<&str>) -> Result<Tokens, ClientError> {
        let _flight = self.inner.auth.refresh_lock.lock().await;
        let current = self.inner.auth.get().ok_or(ClientError::NotLoggedIn)?;
        if let Some(stale) = stale
            && current.access != stale
        {
            return Ok(current);
        }
        tracing::debug!("refreshing the access token");
        let now = SystemTime::now();
        let req = Req::post("api/users/token/refresh/")
            .public()
            .json(&RefreshRequest {
                refresh: current.refresh,
            })?;
        let bytes = self.fetch(&req, None).await?;
        let fresh = Tokens::from_response(decode::<TokenResponse>(&bytes)?, now);
        self.inner.auth.set(Some(fresh.clone()));
        Ok(fresh)
    }

    /// Runs `req` and decodes its JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(&self, req: Req) -> Result<T, ClientError> {
        let bytes = self.execute(&req).await?;
        decode(&bytes)
    }

    /// Runs `req`, whose answer has no body worth reading (204).
    pub(crate) async fn call_empty(&self, req: Req) -> Result<(), ClientError> {
        self.execute(&req).await.map(drop)
    }

    /// Runs `req` with the session's token; on a 401 `unauthorized` refreshes
    /// once and retries once.
    async fn execute(&self, req: &Req) -> Result<Vec<u8>, ClientError> {
        let resp = self.open(req).await?;
        read_body(resp).await
    }

    /// Like [`execute`](Self::execute), but answers the response of a 2xx
    /// with its body unread (a download streams it).
    pub(crate) async fn open(&self, req: &Req) -> Result<reqwest::Response, ClientError> {
        if !req.auth {
            return self.exchange(req, None, None).await;
        }
        let token = self.access_token().await?;
        match self.exchange(req, Some(&token), None).await {
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) => {
                tracing::debug!("access token rejected; refreshing and retrying once");
                let fresh = self.refresh_after(Some(&token)).await?;
                self.exchange(req, Some(&fresh.access), None).await
            }
            other => other,
        }
    }

    /// One HTTP exchange: the body of a 2xx answer, or the error.
    async fn fetch(&self, req: &Req, token: Option<&str>) -> Result<Vec<u8>, ClientError> {
        let resp = self.exchange(req, token, None).await?;
        read_body(resp).await
    }

    /// One HTTP exchange: the response of a 2xx answer with its body
    /// unread, or the error. `upload`, when given, is the body instead of
    /// `req`'s JSON (an upload, which cannot be sent twice from one `Body`).
    pub(crate) async fn exchange(
        &self,
        req: &Req,
        token: Option<&str>,
        upload: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut url = self
            .inner
            .base
            .join(&req.path)
            .map_err(|e| ClientError::Config(format!("path {:?}: {e}", req.path)))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        let mut builder = self.inner.http.request(req.method.clone(), url);
        if req.transfer {
            // A transfer takes as long as it needs; what limits it is how
            // long no byte moves (`api/attachments.rs`).
            builder = builder.timeout(Duration::MAX);
        }
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = upload {
            builder = builder.body(body);
        } else if let Some(body) = &req.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let resp = builder.send().await.map_err(ClientError::network)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(ClientError::network)?;
        Err(ClientError::from_response(
            status.as_u16(),
            status.canonical_reason(),
            &bytes,
        ))
    }
}

pub(crate) async fn read_body(resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let bytes = resp.bytes().await.map_err(ClientError::network)?;
    Ok(bytes.to_vec())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ClientError::protocol(None, format!("undecodable response body: {e}")))
}

/// A request before it is sent: kept whole so that it can be sent again
/// after a refresh.
#[derive(Debug)]
pub(crate) struct Req {
    method: Method,
    /// Relative to the base URL (no leading `/`).
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Vec<(reqwest::header::HeaderName, String)>,
    body: Option<Vec<u8>>,
    auth: bool,
    /// An upload or a download: no limit on the whole request.
    transfer: bool,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            auth: true,
            transfer: false,
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub(crate) fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    pub(crate) fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    pub(crate) fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
    }

    pub(crate) fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    /// Sent without a token (register, login, refresh, logout).
    pub(crate) fn public(mut self) -> Self {
        self.auth = false;
        self
    }

    /// Adds `key=value` to the query string when `value` is present.
    pub(crate) fn query(mut self, key: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.query.push((key, v.to_string()));
        }
        self
    }

    /// Adds a header.
    pub(crate) fn header(
        mut self,
        name: reqwest::header::HeaderName,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// An upload or a download: [`ClientOptions::timeout`] does not limit
    /// the whole request (the transfer limits how long no byte moves).
    pub(crate) fn transfer(mut self) -> Self {
        self.transfer = true;
        self
    }

    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::protocol(None, format!("request body: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }
}
