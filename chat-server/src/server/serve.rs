//! The accept loop of the built-in server: hyper's connection builder
//! with the bounds axum's `serve` does not expose, and a shutdown that
//! waits for upgraded sockets.
//!
//! - At most `max_connections` connections at once (plain, or TLS once
//!   its handshake is done; handshakes have their own 10 s limit); past
//!   that a connection is closed as soon as it is accepted, so the process
//!   never runs out of descriptors and the connections it has (storage,
//!   files, `/healthz` once a slot frees) keep working.
//! - A connection that sends nothing for `header_timeout` after it opens,
//!   or does not finish a request's headers within it, is closed.
//! - On shutdown: stop accepting, let HTTP requests in flight finish,
//!   close every WebSocket with 1001 (its session flushes the close frame
//!   and whatever in-flight send it awaits), and wait for all of it up to
//!   `shutdown_timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Descriptors kept free of client connections for storage pools, the
/// broker, webhook and push clients, files and logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The bounds of the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeOptions {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// The connection cap when none is configured: the descriptor limit less
/// a reserve (`RLIMIT_NOFILE` on Unix).
pub(crate) fn default_max_connections() -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        && soft != nix::sys::resource::RLIM_INFINITY
    {
        let free = soft.saturating_sub(RESERVED_DESCRIPTORS).max(16);
        return usize::try_from(free).unwrap_or(usize::MAX);
    }
    65_536
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits
/// for connections and `sessions` (WebSocket tasks) as described above.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    options: ServeOptions,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    // WebSockets over HTTP/2 (RFC 8441), which browsers use after ALPN h2.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        let (io, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            if refused_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                refused_logged = Some(tokio::time::Instant::now());
                tracing::warn!(
                    max_connections = options.max_connections,
                    "connection limit reached: closing new connections"
                );
            }
            drop(io);
            continue;
        };
        let io = Guarded::new(io, slot, options.header_timeout);
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                // Client addresses reach handlers as axum's own `serve`
                // gives them.
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = shutdown.cancelled() => {
                    // Requests in flight finish; idle keep-alives close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Closing the listening socket: new connections are refused from now.
    drop(listener);
    connections.close();
    sessions.close();
    let drained = async {
        connections.wait().await;
        sessions.wait().await;
    };
    if tokio::time::timeout(options.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            sockets = sessions.len(),
            connections = connections.len(),
            timeout = ?options.shutdown_timeout,
            "shutdown deadline passed; dropping what is still open"
        );
    } else {
        tracing::info!("all connections closed");
    }
}

/// A connection holding its slot, and closed if it sends nothing within
/// the first-byte deadline.
struct Guarded<T> {
    io: T,
    first_byte: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> Guarded<T> {
    fn new(io: T, slot: OwnedSemaphorePermit, deadline: Duration) -> Self {
        Self {
            io,
            first_byte: Some(Box::pin(tokio::time::sleep(deadline))),
            _slot: slot,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.first_byte = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.first_byte {
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
