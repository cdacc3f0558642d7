//! A bot that answers commands: `/roll [NdM]`, `/time`, `/help`.
//!
//! ```sh
//! cargo run --example command_bot -- --username dicebot --password dice-secret --room lobby
//! ```

use chat_client::Event;
use chat_examples::{SessionArgs, ensure_room, login};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Answers /roll, /time and /help in a room")]
struct Cli {
    #[command(flatten)]
    session: SessionArgs,
}

/// The bot's answer to a message, if it is a command.
fn answer(body: &str) -> Option<String> {
    let mut words = body.split_whitespace();
    match words.next()? {
        "/help" => Some("commands: /roll [NdM] (default 1d6), /time, /help".to_owned()),
        "/time" => {
            let now = time::OffsetDateTime::now_utc();
            let text = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| "unknown".to_owned());
            Some(format!("it is {text} (UTC)"))
        }
        "/roll" => Some(roll(words.next().unwrap_or("1d6"))),
        _ => None,
    }
}

/// `NdM`: N dice of M faces, 1 ≤ N ≤ 100, 2 ≤ M ≤ 1000.
fn roll(spec: &str) -> String {
    let parsed = spec.split_once('d').and_then(|(n, m)| {
        Some((
            if n.is_empty() {
                1
            } else {
                n.parse::<u32>().ok()?
            },
            m.parse::<u32>().ok()?,
        ))
    });
    match parsed {
        Some((n, m)) if (1..=100).contains(&n) && (2..=1000).contains(&m) => {
            let dice: Vec<u32> = (0..n).map(|_| rand::random_range(1..=m)).collect();
            let total: u32 = dice.iter().sum();
            format!("{spec}: {dice:?} = {total}")
        }
        _ => format!("cannot roll {spec:?}: use NdM, like 2d6"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = login(&cli.session).await?;
    let me = client.me().await?;
    let room = ensure_room(&client, &cli.session.room).await?;
    let mut conn = client.connect().await?;
    let room = conn.subscribe(room).await?;
    println!(
        "command bot {} ready in room {room}; try /help",
        me.username
    );
    while let Some(event) = conn.next_event().await {
        let Event::Message(m) = event else { continue };
        if m.sender == me.id || m.room != room {
            continue;
        }
        if let Some(reply) = answer(&m.body)
            && let Err(e) = conn.send(room, reply).await
        {
            eprintln!("could not answer message {}: {e}", m.seq);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_answered_and_chatter_is_not() {
        assert!(answer("/help").is_some_and(|a| a.contains("/roll")));
        assert!(answer("/time").is_some_and(|a| a.contains("UTC")));
        assert!(answer("hello there").is_none());
        assert!(answer("").is_none());
    }

    #[test]
    fn dice_stay_in_range() {
        for _ in 0..100 {
            let text = roll("3d4");
            let total: u32 = text
                .rsplit("= ")
                .next()
                .and_then(|t| t.parse().ok())
                .expect("a total");
            assert!((3..=12).contains(&total), "{text}");
        }
        assert!(roll("0d6").starts_with("cannot roll"));
        assert!(roll("2d1").starts_with("cannot roll"));
        assert!(roll("banana").starts_with("cannot roll"));
        assert!(roll("d20").starts_with("d20: "));
    }
}
