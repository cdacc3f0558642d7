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
        .map(|i| register(http, base, username(prefix, i)))
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
    Ok(login(http, base, &name).await?.access)
}

/// The name [`register_users`] gives its `i`-th user.
pub fn username(prefix: &str, i: usize) -> String {
    format!("{prefix}u{i}")
}

/// An access token and the refresh token of its family.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

/// Logs a user registered by [`register_users`] in with its password (a
/// new refresh family; the server hashes the password).
pub async fn login(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<Tokens> {
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
    let field = |k: &str| {
        t[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("token answer without `{k}`"))
    };
    Ok(Tokens {
        access: field("access")?,
        refresh: field("refresh")?,
    })
}

/// Ends a refresh family (`POST /api/users/logout/`).
pub async fn logout(http: &reqwest::Client, base: &str, refresh: &str) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/api/users/logout/"))
        .json(&json!({"refresh": refresh}))
        .send()
        .await
        .context("logout")?;
    if !r.status().is_success() {
        bail!("logout: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

/// Creates one public room; returns its id.
pub async fn create_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> anyhow::Result<i64> {
    let r = http
        .post(format!("{base}/chat/create-room/"))
        .bearer_auth(token)
        .json(&json!({"name": name, "type": "public"}))
        .send()
        .await
        .context("create-room")?;
    if !r.status().is_success() {
        bail!("create-room: {} {}", r.status(), r.text().await?);
    }
    let v: Value = r.json().await?;
    v["id"].as_i64().context("room answer without `id`")
}

/// Deletes a room (its creator only); subscribed sockets get
/// `room_deleted`.
pub async fn delete_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: i64,
) -> anyhow::Result<()> {
    let r = http
        .delete(format!("{base}/chat/rooms/{room}/"))
        .bearer_auth(token)
        .send()
        .await
        .context("delete-room")?;
    if !r.status().is_success() {
        bail!("delete-room {room}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
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
        ids.push(create_room(http, base, token, &format!("{prefix}r{i}")).await?);
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
