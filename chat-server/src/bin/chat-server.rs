//! The `chat-server` binary: parse configuration, set up logs, run the
//! library's server until SIGINT or SIGTERM (or `migrate` and exit); SIGHUP
//! reloads the TLS certificate.

use clap::Parser;
use tracing_subscriber::EnvFilter;

// See the `jemalloc` feature in Cargo.toml.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // jemalloc purges pages freed for its decay time (10 s) only when a
    // thread allocates again; its background thread does it on its own, so
    // an idle server shrinks too.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc's background thread: {e}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: most errors here
/// already include their source's text in their own.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run() -> anyhow::Result<()> {
    init_logs();
    let cli = chat_server::Cli::parse();
    let command = cli.command.clone().unwrap_or(chat_server::Command::Serve);
    let config = chat_server::Config::from_cli(cli)?;
    match command {
        chat_server::Command::Migrate => {
            chat_server::migrate(&config).await?;
            return Ok(());
        }
        chat_server::Command::Admin(admin) => {
            let (user, grant) = match admin {
                chat_server::AdminCommand::Grant { user } => (user, true),
                chat_server::AdminCommand::Revoke { user } => (user, false),
            };
            let who = chat_server::set_admin(&config, &user, grant).await?;
            println!(
                "{who} is {}a server admin",
                if grant { "" } else { "no longer " }
            );
            return Ok(());
        }
        chat_server::Command::ApiKey(command) => {
            println!("{}", chat_server::api_keys(&config, &command).await?);
            return Ok(());
        }
        chat_server::Command::Serve => {}
    }
    let server = chat_server::Server::start(config).await?;
    #[cfg(unix)]
    reload_on_sighup(server.tls().cloned())?;
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
    // Colour only for a person at a terminal: log files and collectors
    // get plain text (and NO_COLOR is honoured).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if std::env::var("CHAT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Rereads the certificate files on every SIGHUP; a bad file is logged and
/// the old certificate kept. Without TLS the signal is only logged (rather
/// than ending the process, SIGHUP's default).
#[cfg(unix)]
fn reload_on_sighup(tls: Option<chat_server::Tls>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.as_ref().map(chat_server::Tls::reload) {
                Some(Ok(sha256)) => tracing::info!(%sha256, "SIGHUP: TLS certificate reloaded"),
                Some(Err(chat_server::TlsError::NotReloadable)) => {
                    tracing::info!(
                        "SIGHUP: the self-signed development certificate is not reloaded"
                    );
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; keeping the old one");
                }
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
            }
        }
    });
    Ok(())
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
