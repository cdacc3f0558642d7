//! Push notifications for members who are not there: every new message of
//! a room, for each member with no socket in it, to the devices they
//! registered, through a push gateway that speaks the Matrix push gateway
//! API (`POST /_matrix/push/v1/notify`). The gateways that reach FCM and
//! APNs (Sygnal, for one) sit outside this project.
//!
//! The room's timeline is read from a cursor like a webhook's (the same
//! outbox, under the endpoint name `push:{gateway}`), so a gateway that is
//! down loses nothing. A batch of events becomes at most one notification
//! per member (their newest message, with their unread count), to all of
//! their devices at once; a token the gateway answers as rejected is
//! forgotten.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chat_core::timeline::TimelineEvent;
use chat_core::{Message, RoomId, UserId};
use serde_json::{Value, json};

use super::ChatService;
use super::outbox::Sink;
use crate::config::PushBody;
use crate::storage::MemberState;

/// The characters of a body a preview shows.
const PREVIEW_CHARS: usize = 200;

/// Notifies a gateway.
pub(crate) struct PushSink {
    pub(crate) gateway: String,
    pub(crate) body: PushBody,
    pub(crate) client: reqwest::Client,
}

#[async_trait]
impl Sink for PushSink {
    fn name(&self) -> String {
        format!("push:{}", self.gateway)
    }

    fn kind(&self) -> &'static str {
        "push"
    }

    async fn deliver(
        &self,
        service: &ChatService,
        room: RoomId,
        events: &[TimelineEvent],
    ) -> Result<(), String> {
        // The newest message of the batch; the sender's own messages and
        // deleted ones tell nobody anything.
        let messages: Vec<&Message> = events
            .iter()
            .filter_map(|e| match e {
                TimelineEvent::Message { message } if !message.deleted => Some(message),
                _ => None,
            })
            .collect();
        if messages.is_empty() {
            return Ok(());
        }
        let storage = service.storage();
        let Some(record) = storage.room(room).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let online = service.hub().online(room).await;
        let people = storage.room_people(room).await.map_err(|e| e.to_string())?;
        let mut newest: BTreeMap<UserId, &Message> = BTreeMap::new();
        for person in people
            .iter()
            .filter(|p| p.state == MemberState::Member && !online.contains(&p.user))
        {
            if let Some(m) = messages.iter().rev().find(|m| m.sender != person.user) {
                newest.insert(person.user, m);
            }
        }
        if newest.is_empty() {
            return Ok(());
        }
        let users: Vec<UserId> = newest.keys().copied().collect();
        let devices = storage.devices(&users).await.map_err(|e| e.to_string())?;
        for (user, message) in newest {
            let mine: Vec<Value> = devices
                .iter()
                .filter(|d| d.user == user)
                .map(|d| {
                    json!({
                        "app_id": d.app_id,
                        "pushkey": d.token,
                        "pushkey_ts": d.created_at.unix_micros() / 1_000_000,
                        "data": {"platform": d.platform},
                    })
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let unread = storage
                .unread_total(user)
                .await
                .map_err(|e| e.to_string())?;
            let mut notification = json!({
                "event_id": format!("{}:{}", room, message.seq),
                "room_id": room.to_string(),
                "type": "m.room.message",
                "prio": "high",
                "counts": {"unread": unread},
                "devices": mine,
            });
            if self.body == PushBody::Preview {
                notification["sender"] = json!(message.sender.to_string());
                notification["sender_display_name"] = json!(message.sender_name);
                notification["room_name"] = json!(record.name);
                notification["content"] = json!({
                    "msgtype": "m.text",
                    "body": message.body.chars().take(PREVIEW_CHARS).collect::<String>(),
                });
            }
            let answer = self
                .client
                .post(&self.gateway)
                .json(&json!({ "notification": notification }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = answer.status();
            if status.is_client_error() {
                // The gateway refuses this notification itself (its data,
                // not its state): retrying cannot help, and must not hold
                // the room's other members back.
                tracing::warn!(user = %user, %status, "push gateway refused a notification");
                continue;
            }
            if !status.is_success() {
                return Err(format!("gateway answered {status}"));
            }
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            for token in body["rejected"].as_array().into_iter().flatten() {
                let Some(token) = token.as_str() else {
                    continue;
                };
                for device in devices
                    .iter()
                    .filter(|d| d.user == user && d.token == token)
                {
                    if let Err(e) = storage.delete_device_token(&device.app_id, token).await {
                        tracing::warn!(error = %e, "a rejected push token was not forgotten");
                    } else {
                        tracing::info!(user = %user, app_id = %device.app_id,
                            "push token rejected by the gateway; forgotten");
                    }
                }
            }
            metrics::counter!(crate::metrics::PUSH_SENT).increment(1);
        }
        Ok(())
    }
}
