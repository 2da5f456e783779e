//! One health check: a fresh connection, `GET <path>` with `Connection: close` and ALB's
//! `User-Agent: ELB-HealthChecker/2.0`, and the status line of the answer. Over HTTPS
//! the target's certificate is not verified, as ALB does not verify it either.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::health_state::CheckOutcome;
use crate::config::model::{HealthCheck, HealthCheckPort, Protocol};

/// ALB's health checker user agent.
pub const USER_AGENT: &str = "ELB-HealthChecker/2.0";

/// Check `target` once with `hc`; the whole exchange is bounded by `hc.timeout`.
pub async fn check(target: SocketAddr, hc: &HealthCheck, tls: &TlsConnector) -> CheckOutcome {
    let addr = match hc.port {
        HealthCheckPort::TrafficPort => target,
        HealthCheckPort::Port(p) => SocketAddr::new(target.ip(), p),
    };
    match tokio::time::timeout(hc.timeout, exchange(addr, hc, tls)).await {
        Err(_) => CheckOutcome::Timeout,
        Ok(None) => CheckOutcome::Failed,
        Ok(Some(status)) if hc.matches(status) => CheckOutcome::Pass,
        Ok(Some(status)) => CheckOutcome::ResponseCodeMismatch(status),
    }
}

async fn exchange(addr: SocketAddr, hc: &HealthCheck, tls: &TlsConnector) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n",
        hc.path
    );
    match hc.protocol {
        Protocol::Http => status(tcp, request.as_bytes()).await,
        Protocol::Https => {
            let name = ServerName::IpAddress(addr.ip().into());
            let stream = tls.connect(name, tcp).await.ok()?;
            status(stream, request.as_bytes()).await
        }
    }
}

/// Send the request and read the status code from the first line of the answer.
async fn status<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> Option<u16> {
    s.write_all(request).await.ok()?;
    let mut buf = [0u8; 256];
    let mut n = 0;
    while !buf[..n].contains(&b'\n') {
        if n == buf.len() {
            return None;
        }
        let read = s.read(&mut buf[n..]).await.ok()?;
        if read == 0 {
            return None;
        }
        n += read;
    }
    let line = std::str::from_utf8(&buf[..n]).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

/// A TLS client for HTTPS health checks that accepts any target certificate.
pub fn tls_connector() -> TlsConnector {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => TlsConnector::from(Arc::new(c)),
        Err(e) => {
            tracing::warn!("HTTPS health checks cannot be set up: {e}.");
            TlsConnector::from(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ))
        }
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
