//! Webhooks: every room event POSTed to an endpoint, through the outbox
//! ([`super::outbox`]): batches of one room's events, oldest first,
//! signed (`X-Chat-Timestamp`, `X-Chat-Signature`), each with its id
//! (`{room}:{seq}`) to drop repeats (delivery is at least once).

use async_trait::async_trait;
use chat_core::timeline::TimelineEvent;
use chat_core::{RoomId, Seq};
use serde::Serialize;

use super::ChatService;
use super::outbox::Sink;
use crate::signature;

/// One configured endpoint.
pub(crate) struct WebhookSink {
    pub(crate) url: String,
    pub(crate) secret: String,
    pub(crate) client: reqwest::Client,
}

/// One event as POSTed.
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    /// `{room}:{seq}`: the same event always has the same id.
    id: String,
    room: RoomId,
    seq: Seq,
    event: &'a TimelineEvent,
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.url.clone()
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    /// One POST of the batch; `Err` unless the endpoint answered 2xx.
    async fn deliver(
        &self,
        _: &ChatService,
        room: RoomId,
        events: &[TimelineEvent],
    ) -> Result<(), String> {
        let outgoing: Vec<Outgoing<'_>> = events
            .iter()
            .map(|event| Outgoing {
                id: format!("{}:{}", room, event.seq()),
                room,
                seq: event.seq(),
                event,
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "events": outgoing }))
            .map_err(|e| e.to_string())?;
        let now = crate::auth::unix_now();
        let answer = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::TIMESTAMP_HEADER, now.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(self.secret.as_bytes(), now, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}
