//! The `chat-server` binary: parse configuration, set up logs, run the
//! library's server until SIGINT or SIGTERM (or `migrate` and exit).

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    let cli = chat_server::Cli::parse();
    let command = cli.command.clone().unwrap_or(chat_server::Command::Serve);
    let config = chat_server::Config::from_cli(cli)?;
    if command == chat_server::Command::Migrate {
        chat_server::server::migrate(&config).await?;
        return Ok(());
    }
    let server = chat_server::Server::start(config).await?;
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing sockets with 1001");
        shutdown.cancel();
    });
    server.wait().await?;
    Ok(())
}

/// `RUST_LOG` picks what to log (default `info`); `CHAT_LOG_FORMAT=json`
/// switches to one JSON object per line for log shippers.
fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("CHAT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
