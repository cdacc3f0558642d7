//! A TCP proxy that a test can cut and restore, to drop a client's socket
//! (copied from chat-server's tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections to `upstream` while up.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Cancelled to kill every forwarded connection at once.
    cut: std::sync::Mutex<CancellationToken>,
    stop: CancellationToken,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Arc::new(Self {
            addr: listener.local_addr().expect("proxy addr"),
            up: Arc::new(AtomicBool::new(true)),
            cut: std::sync::Mutex::new(CancellationToken::new()),
            stop: CancellationToken::new(),
        });
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    () = p.stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                if !p.up.load(Ordering::SeqCst) {
                    // Refused: the client sees its connection closed at once.
                    drop(client);
                    continue;
                }
                let cut = p.cut.lock().expect("cut token").clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        proxy
    }

    /// The server goes away: open connections die, new ones are refused.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().expect("cut token");
        cut.cancel();
        *cut = CancellationToken::new();
    }

    /// The server comes back.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
