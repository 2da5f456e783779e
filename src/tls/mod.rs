//! TLS settings for HTTPS listeners: PEM loading, SNI certificate choice, ALB's security
//! policies, ALPN and session resumption, built into a rustls `ServerConfig`.
//!
//! A listener's `ServerConfig` is built once, while the config is validated, from its
//! certificate list and `SslPolicy` ([`server_config_with_alpn`]); the listener then runs
//! each accepted socket's handshake with it (`listener::handshake`). This module owns no
//! socket and never looks at HTTP: `config` uses it to validate, `listener` to accept.
//!
//! - `pem`: [`load_certified_key`], the certificate chain and key files.
//! - `sni`: which certificate a ClientHello gets.
//! - [`policy`]: ALB security policy names → rustls versions and suites (the mapping table is
//!   there), OpenSSL names for the access log.

pub mod mtls;
mod pem;
pub mod policy;
pub mod records;
mod sni;

use std::io;
use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;
use rustls::sign::CertifiedKey;
pub use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

pub use mtls::{client_certificate, load_trust_store, ClientAuth, ClientCertificate, MtlsMode};
pub use pem::load_certified_key;
pub use policy::{
    openssl_names, openssl_suite_name, openssl_version_name, ssl_policy_names, DEFAULT_SSL_POLICY,
};

/// ALPN protocols for HTTP/1.1 only (what albatross serves today).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// ALPN protocols once HTTP/2 is served: `h2` preferred, `http/1.1` otherwise.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Sessions kept per listener for stateful resumption (session IDs / TLS 1.3 stateful tickets).
const SESSION_CACHE_SIZE: usize = 4096;

/// Why a certificate, key, policy or handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    /// A file is not well-formed PEM.
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{path} contains no PEM certificate (expected CERTIFICATE blocks, leaf first)")]
    NoCertificate { path: String },
    /// The key file holds no private key block.
    #[error(
        "{path} contains no PEM private key (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoPrivateKey { path: String },
    /// The private key is of a kind rustls cannot sign with.
    #[error("the private key in {path} is not supported: {source}")]
    UnsupportedKey { path: String, source: rustls::Error },
    /// The leaf certificate cannot be parsed.
    #[error("the certificate in {path} cannot be used: {source}")]
    BadCertificate { path: String, source: rustls::Error },
    /// The private key does not belong to the leaf certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    /// A listener was given no certificate at all.
    #[error("an HTTPS listener needs at least one certificate")]
    NoCertificates,
    /// A key in the certificate list has an empty chain.
    #[error("certificate {index} of the listener has no certificate in its chain")]
    EmptyChain { index: usize },
    /// The names of a listed certificate cannot be read.
    #[error("cannot read the names of certificate {index} of the listener: {source}")]
    CertificateNames { index: usize, source: webpki::Error },
    /// The SSL policy name is not one of ALB's.
    #[error("unknown SSL policy {name:?}; valid policies are {}", ssl_policy_names().collect::<Vec<_>>().join(", "))]
    UnknownPolicy { name: String },
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The client did not finish the handshake within the handshake timeout.
    #[error("the TLS handshake did not complete within the handshake timeout")]
    HandshakeTimeout,
    /// The handshake failed (protocol error, no shared version or suite, connection reset...).
    #[error("the TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    /// Anything else, as a sentence.
    #[error("{0}")]
    Invalid(String),
}

impl TlsError {
    /// A short reason for the connection log's `tls_verify_status` (`Failed:<reason>`).
    pub fn reason_code(&self) -> &'static str {
        match self {
            TlsError::HandshakeTimeout => "HandshakeTimeout",
            TlsError::Handshake(e) if e.kind() == io::ErrorKind::UnexpectedEof => "ClientClosed",
            TlsError::Handshake(e) => e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(mtls::verify_failure_reason)
                .unwrap_or("HandshakeError"),
            _ => "ConfigurationError",
        }
    }
}

/// Build a server config for a listener that serves HTTP/1.1: the first key is the default
/// certificate (see [`server_config_with_alpn`]).
pub fn server_config(
    keys: Vec<Arc<CertifiedKey>>,
    ssl_policy: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with_alpn(keys, ssl_policy, ALPN_HTTP1, &ClientAuth::Off)
}

/// Build a server config for a listener:
/// - certificates chosen by SNI among `keys`: no SNI or no match → the first key (the default);
///   a match on a DNS subjectAltName (or the common name of a certificate without any), where
///   `*.example.com` covers one label, ignoring case; several matches → the ones whose key
///   the client can use first, then ECDSA before RSA, then the order of `keys`;
/// - versions and cipher suites of the ALB policy `ssl_policy` (see [`policy`] for what each
///   name maps to), in server preference order as ALB does;
/// - ALPN `alpn`, in preference order (e.g. [`ALPN_HTTP1`], [`ALPN_H2_HTTP1`]);
/// - session resumption by a per-listener session cache and by stateless tickets (TLS 1.2
///   tickets and TLS 1.3 PSKs), whose key rotates every 6 hours;
/// - client certificates as `client_auth` says ([`mtls`]); with mutual TLS, as with ALB,
///   no session is resumed.
pub fn server_config_with_alpn(
    keys: Vec<Arc<CertifiedKey>>,
    ssl_policy: &str,
    alpn: &[&[u8]],
    client_auth: &ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let policy = policy::lookup(ssl_policy).ok_or_else(|| TlsError::UnknownPolicy {
        name: ssl_policy.to_owned(),
    })?;
    let resolver = sni::SniResolver::new(keys)?;
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: policy.cipher_suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(policy.versions)
        .map_err(TlsError::Config)?;
    let verifier = mtls::verifier(client_auth, &provider)?;
    let mutual = verifier.is_some();
    let mut config = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    }
    .with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = true;
    // A wss tunnel's records are protected by `records::RecordStream` once the upgrade
    // is done, with the secrets rustls hands over.
    config.enable_secret_extraction = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if mutual {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    } else {
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Config)?;
    }
    Ok(Arc::new(config))
}

/// The acceptor for a listener's config.
pub fn acceptor(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(der)
            .unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing))
    }

    #[test]
    fn every_policy_builds_a_config() {
        for name in ssl_policy_names() {
            let config = server_config(vec![key()], &name).unwrap();
            assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
            assert!(config.ticketer.enabled());
        }
    }

    #[test]
    fn alpn_is_a_parameter() {
        let config = server_config_with_alpn(
            vec![key()],
            DEFAULT_SSL_POLICY,
            ALPN_H2_HTTP1,
            &ClientAuth::Off,
        )
        .unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn unknown_policy_lists_the_valid_names() {
        let err = server_config(vec![key()], "ELBSecurityPolicy-Nope").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"ELBSecurityPolicy-Nope\""), "{text}");
        assert!(
            text.contains("ELBSecurityPolicy-TLS13-1-2-2021-06"),
            "{text}"
        );
        assert!(text.contains("ELBSecurityPolicy-TLS-1-0-2015-04"), "{text}");
    }

    #[test]
    fn no_certificate_is_an_error() {
        let err = server_config(vec![], DEFAULT_SSL_POLICY).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates), "{err}");
    }
}
