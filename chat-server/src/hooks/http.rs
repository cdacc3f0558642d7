//! The before-send decision over HTTP (`--hook-url`): the server POSTs the
//! pending message and waits for the answer, at most `--hook-timeout`.
//!
//! Request body: `{"type": "before_send", "message": Pending}`, signed as
//! webhooks are when `--hook-secret` is set. Answer: 200 with a
//! [`Decision`] (`{"action": "allow"}`, `{"action": "reject", "reason":
//! "…"}`, `{"action": "rewrite", "body": "…"}`). Anything else (no answer
//! in time, another status, another body) is a failure, and
//! [`FailurePolicy`] says what it means.

use std::time::Duration;

use async_trait::async_trait;

use super::{Decision, HookError, Hooks, Pending};
use crate::signature;

/// What a failed call to the hook means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Fail open: the message is stored as sent (availability first; a
    /// filter that is down lets messages through).
    Open,
    /// Fail closed: the send is refused with 503 `hook_unavailable`
    /// (nothing unchecked is ever stored; the sender retries).
    Closed,
}

/// The before-send hook of an HTTP endpoint.
pub struct HttpHook {
    url: url::Url,
    timeout: Duration,
    failure: FailurePolicy,
    secret: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHook")
            .field("url", &crate::redact_url(self.url.as_str()))
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpHook {
    /// A hook at `url` (http or https), waited for at most `timeout`,
    /// signing its requests with `secret` if given.
    pub fn new(
        url: &str,
        timeout: Duration,
        failure: FailurePolicy,
        secret: Option<String>,
    ) -> Result<Self, String> {
        let url = url::Url::parse(url).map_err(|e| format!("hook URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("hook URL: the scheme must be http or https".into());
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("hook client: {e}"))?;
        Ok(Self {
            url,
            timeout,
            failure,
            secret,
            client,
        })
    }

    async fn ask(&self, message: &Pending) -> Result<Decision, String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "before_send",
            "message": message,
        }))
        .map_err(|e| e.to_string())?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            let now = crate::auth::unix_now();
            request = request
                .header(signature::TIMESTAMP_HEADER, now.to_string())
                .header(
                    signature::SIGNATURE_HEADER,
                    signature::sign(secret.as_bytes(), now, &body),
                );
        }
        let answer = request.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                e.to_string()
            }
        })?;
        let status = answer.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not a decision: {e}"))
    }
}

#[async_trait]
impl Hooks for HttpHook {
    async fn before_send(&self, message: &Pending) -> Result<Decision, HookError> {
        match self.ask(message).await {
            Ok(decision) => Ok(decision),
            Err(why) => {
                metrics::counter!(crate::metrics::HOOK_FAILURES).increment(1);
                match self.failure {
                    FailurePolicy::Open => {
                        tracing::warn!(%why, room = %message.room,
                            "before-send hook failed; failing open, the message goes through");
                        Ok(Decision::Allow)
                    }
                    FailurePolicy::Closed => {
                        tracing::warn!(%why, room = %message.room,
                            "before-send hook failed; failing closed, the send is refused");
                        Err(HookError(why))
                    }
                }
            }
        }
    }
}
