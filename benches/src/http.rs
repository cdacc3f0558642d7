//! Setup through the chat-rs HTTP API: users and their access tokens, public
//! rooms, memberships. Calls run in parallel up to a bound, because the
//! server hashes passwords on purpose slowly and setup should not dominate.

use anyhow::{Context, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

const PASSWORD: &str = "load-password-0123";

/// Registers `count` users named `<prefix>u<i>` and logs each in; returns
/// their access tokens in order.
pub async fn register_users(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    futures_util::stream::iter(0..count)
        .map(|i| register(http, base, format!("{prefix}u{i}")))
        .buffered(parallel.max(1))
        .try_collect()
        .await
}

async fn register(http: &reqwest::Client, base: &str, name: String) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/api/users/register/"))
        .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}))
        .send()
        .await
        .context("register")?;
    if !r.status().is_success() {
        bail!("register {name}: {} {}", r.status(), r.text().await?);
    }
    let r = http
        .post(format!("{base}/api/users/token/"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .context("token")?;
    if !r.status().is_success() {
        bail!("token {name}: {} {}", r.status(), r.text().await?);
    }
    let t: Value = r.json().await?;
    t["access"]
        .as_str()
        .map(str::to_owned)
        .context("token answer without `access`")
}

/// Creates `count` public rooms named `<prefix>r<i>`; returns their ids.
pub async fn create_rooms(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let r = http
            .post(format!("{base}/chat/create-room/"))
            .bearer_auth(token)
            .json(&json!({"name": format!("{prefix}r{i}"), "type": "public"}))
            .send()
            .await
            .context("create-room")?;
        if !r.status().is_success() {
            bail!("create-room: {} {}", r.status(), r.text().await?);
        }
        let v: Value = r.json().await?;
        ids.push(v["id"].as_i64().context("room answer without `id`")?);
    }
    Ok(ids)
}

/// Makes every user a member of every room, so that any of them may send
/// (subscribing on `/ws/` would join too, but a sending socket must not
/// subscribe or it would receive the others' messages).
pub async fn join_all(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    rooms: &[i64],
    parallel: usize,
) -> anyhow::Result<()> {
    let pairs = tokens
        .iter()
        .flat_map(|t| rooms.iter().map(move |r| (t.as_str(), *r)));
    futures_util::stream::iter(pairs)
        .map(|(token, room)| async move {
            let r = http
                .post(format!("{base}/chat/join-room/"))
                .bearer_auth(token)
                .json(&json!({"room_id": room}))
                .send()
                .await
                .context("join-room")?;
            if !r.status().is_success() {
                bail!("join-room {room}: {} {}", r.status(), r.text().await?);
            }
            Ok(())
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<()>()
        .await
}
