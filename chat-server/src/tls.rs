//! TLS termination: the certificate (PEM files, or a development CA and a
//! `localhost` certificate generated at start), its reload, and the listener
//! that hands finished TLS handshakes to `axum::serve`.
//!
//! The rustls configuration is built once; its certificate resolver holds
//! the current certificate behind a lock, so a reload changes what *new*
//! handshakes present while established connections (and their WebSockets)
//! keep going untouched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// A client that has not finished its TLS handshake by then is dropped, so
/// idle half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server to take them.
const ACCEPTED_QUEUE: usize = 256;

/// Why TLS could not be set up or reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file cannot be read as PEM.
    #[error("cannot read {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key is unusable or belongs to another certificate.
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls refused the pair.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The development certificate could not be generated.
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A reload of the development certificate, which is made once.
    #[error(
        "the self-signed development certificate is not reloaded (start with --tls-cert/--tls-key to reload)"
    )]
    NotReloadable,
    /// A reload on a server without TLS.
    #[error("the server runs without TLS")]
    NotConfigured,
}

/// The server's TLS state: where the certificate comes from and the one in
/// use. Cheap to clone (an `Arc`); every clone reloads the same server.
#[derive(Debug, Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: TlsConfig,
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
    /// The development CA (PEM) when self-signed.
    ca_pem: Option<String>,
}

impl Tls {
    /// Loads the certificate files, or generates the development
    /// certificate, and builds the rustls configuration (ring, TLS 1.2 and
    /// 1.3, ALPN `h2` and `http/1.1`).
    pub(crate) fn new(source: &TlsConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, ca_pem) = match source {
            TlsConfig::Files { cert, key } => (load(&provider, cert, key)?, None),
            TlsConfig::SelfSigned => {
                let dev = generate_dev_certificate()?;
                let key = CertifiedKey::from_der(vec![dev.leaf], dev.key, &provider)?;
                (key, Some(dev.ca_pem))
            }
        };
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // h2 for HTTP calls; WebSockets work over both (HTTP/1.1 upgrade, or
        // the extended CONNECT of RFC 8441 that axum::serve enables on h2).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            inner: Arc::new(Inner {
                source: source.clone(),
                current,
                config: Arc::new(config),
                ca_pem,
            }),
        })
    }

    /// Reads the certificate and key files again and presents them to every
    /// new connection; connections already open keep theirs. On any error
    /// (unreadable file, key not matching the certificate) the certificate
    /// in use stays. Returns the new certificate's fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let TlsConfig::Files { cert, key } = &self.inner.source else {
            return Err(TlsError::NotReloadable);
        };
        let provider = rustls::crypto::ring::default_provider();
        let loaded = Arc::new(load(&provider, cert, key)?);
        let fingerprint = fingerprint(&loaded.cert[0]);
        *self
            .inner
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(fingerprint)
    }

    /// SHA-256 of the certificate new connections get, as browsers show it
    /// (`AB:CD:…`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.inner.current.get().cert[0])
    }

    /// The development CA certificate (PEM) with `--tls-self-signed`, for
    /// clients to trust; `None` with certificate files.
    pub fn ca_pem(&self) -> Option<&str> {
        self.inner.ca_pem.as_deref()
    }

    /// Accepts TCP connections on `tcp` and does their TLS handshakes in
    /// tasks of their own, so one slow client never holds up the others.
    pub(crate) fn listen(&self, tcp: TcpListener) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        let acceptor = TlsAcceptor::from(self.inner.config.clone());
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener { rx, addr })
    }
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reads a PEM chain (leaf first) and its key, and checks they belong
/// together.
fn load(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys alike.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// A fresh development CA and a certificate it signs for `localhost`,
/// `127.0.0.1` and `::1`.
struct DevCertificate {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn generate_dev_certificate() -> Result<DevCertificate, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "chat-server development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf = leaf.signed_by(&key, &ca)?;
    Ok(DevCertificate {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

/// SHA-256 of a certificate, uppercase hex pairs joined by colons.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// TLS connections ready for HTTP, for `axum::serve`.
#[derive(Debug)]
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            // The server stopped serving: stop accepting.
            () = tx.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // As axum::serve does: errors of one connection are that
                // connection's; anything else (out of file descriptors)
                // needs a pause before trying again.
                if !is_connection_error(&e) {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // As on the plain listener: the session batches its writes.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    #[test]
    fn fingerprint_is_colon_separated_uppercase_hex() {
        // printf chat | sha256sum
        assert_eq!(
            fingerprint(&CertificateDer::from(b"chat".to_vec())),
            "31:E0:6F:7D:89:FE:B9:9A:0E:6C:0A:FF:E1:98:74:8C:\
             3B:B5:BE:F5:E3:CC:92:D9:5C:B9:E9:96:19:7D:3F:C3"
        );
    }

    #[test]
    fn reload_keeps_the_certificate_when_the_files_are_bad() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let first =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        std::fs::write(&cert, first.cert.pem()).expect("write");
        std::fs::write(&key, first.signing_key.serialize_pem()).expect("write");
        let tls = Tls::new(&TlsConfig::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("loads");
        let before = tls.fingerprint();
        assert_eq!(before, fingerprint(first.cert.der()));

        // A key of another certificate: refused, the old one stays.
        let other =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        std::fs::write(&key, other.signing_key.serialize_pem()).expect("write");
        assert!(matches!(tls.reload(), Err(TlsError::Key { .. })));
        // No certificate in the file.
        std::fs::write(&cert, "not a certificate\n").expect("write");
        assert!(matches!(tls.reload(), Err(TlsError::NoCertificate { .. })));
        std::fs::remove_file(&cert).expect("remove");
        assert!(matches!(tls.reload(), Err(TlsError::Pem { .. })));
        assert_eq!(tls.fingerprint(), before);

        std::fs::write(&cert, other.cert.pem()).expect("write");
        assert_eq!(
            tls.reload().expect("reloads"),
            fingerprint(other.cert.der())
        );
        assert_eq!(tls.fingerprint(), fingerprint(other.cert.der()));
    }

    /// Runs `openssl` (the machine's; the test says so if it is missing).
    fn openssl(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("this test needs the openssl command to write keys in other formats");
        assert!(status.success(), "openssl {args:?}");
    }

    #[test]
    fn keys_in_every_pem_format_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let provider = rustls::crypto::ring::default_provider();
        // PKCS#1 ("RSA PRIVATE KEY").
        openssl(d, &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
        // SEC1 ("EC PRIVATE KEY").
        openssl(
            d,
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec.key",
            ],
        );
        // PKCS#8 ("PRIVATE KEY").
        openssl(
            d,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "ec8.key",
            ],
        );
        for (key, header) in [
            ("rsa.key", "-----BEGIN RSA PRIVATE KEY-----"),
            ("ec.key", "-----BEGIN EC PRIVATE KEY-----"),
            ("ec8.key", "-----BEGIN PRIVATE KEY-----"),
        ] {
            let text = std::fs::read_to_string(d.join(key)).expect("key");
            assert!(text.starts_with(header), "{key}: {text}");
            let cert = format!("{key}.crt");
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-x509",
                    "-key",
                    key,
                    "-out",
                    &cert,
                    "-days",
                    "1",
                    "-subj",
                    "/CN=localhost",
                ],
            );
            load(&provider, &d.join(&cert), &d.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn self_signed_certificate_verifies_against_its_ca_for_localhost() {
        let dev = generate_dev_certificate().expect("generates");
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(dev.ca_pem.as_bytes()) {
            roots.add(ca.expect("CA PEM")).expect("CA");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let name = rustls::pki_types::ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(&dev.leaf, &[], &name, &[], now)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let elsewhere = rustls::pki_types::ServerName::try_from("example.com").expect("name");
        assert!(
            verifier
                .verify_server_cert(&dev.leaf, &[], &elsewhere, &[], now)
                .is_err()
        );
    }
}
