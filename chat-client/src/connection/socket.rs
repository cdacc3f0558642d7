//! Opening the socket: the `/ws/` URL, the bearer token, TLS trust.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream, tungstenite};

use crate::{ChatClient, ClientError, ClientOptions};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/ws/` with a fresh access token, returning the socket and the
/// token it used. With `stale` (the token the server refused with 4401) the
/// session is refreshed first. A handshake refused with 401 refreshes once
/// and tries again.
pub(super) async fn open(
    client: &ChatClient,
    stale: Option<&str>,
) -> Result<(Ws, String), ClientError> {
    if let Some(stale) = stale {
        client.refresh_after(Some(stale)).await?;
    }
    let token = client.access_token().await?;
    match handshake(client, &token).await {
        Err(e) if e.status() == Some(401) => {
            tracing::debug!("socket handshake refused the token; refreshing once");
            let fresh = client.refresh_after(Some(&token)).await?;
            let ws = handshake(client, &fresh.access).await?;
            Ok((ws, fresh.access))
        }
        Ok(ws) => Ok((ws, token)),
        Err(e) => Err(e),
    }
}

async fn handshake(client: &ChatClient, token: &str) -> Result<Ws, ClientError> {
    let mut url = client
        .base_url()
        .join("ws/")
        .map_err(|e| ClientError::Config(format!("socket URL: {e}")))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| ClientError::Config(format!("socket URL {url}: cannot use {scheme}")))?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Config(format!("socket URL {url}: {e}")))?;
    let options = client.options();
    let headers = request.headers_mut();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ClientError::protocol(None, format!("access token: {e}")))?,
    );
    if let Ok(agent) = HeaderValue::from_str(&options.user_agent) {
        headers.insert(USER_AGENT, agent);
    }
    let connector = if scheme == "wss" {
        tls_connector(options)?
    } else {
        None
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    match tokio::time::timeout(options.connect_timeout, connect).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            Err(ClientError::from_response(
                status.as_u16(),
                status.canonical_reason(),
                body,
            ))
        }
        Ok(Err(e)) => Err(ClientError::Network {
            timeout: false,
            source: Box::new(e),
        }),
        Err(elapsed) => Err(ClientError::Network {
            timeout: true,
            source: Box::new(elapsed),
        }),
    }
}

/// The rustls configuration for `wss://`: `None` (tokio-tungstenite's own,
/// the system's roots) unless the options add root CAs or accept any
/// certificate.
fn tls_connector(options: &ClientOptions) -> Result<Option<Connector>, ClientError> {
    if options.root_ca_pem.is_empty() && !options.danger_accept_invalid_certs {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?;
    let config = if options.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is skipped, as reqwest does.
            let _ = roots.add(cert);
        }
        for pem in &options.root_ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::Config(format!("root CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Config(format!("root CA: {e}")))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

/// `danger_accept_invalid_certs`: any certificate, any name; signatures are
/// still checked so that the handshake itself is sound.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
