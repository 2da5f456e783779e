//! TLS for HTTPS listeners: PEM loading, SNI certificate choice, security policies, ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

/// Why a certificate, key or policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Load a PEM certificate chain and its private key, checking that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let _ = (cert, key);
    Err(TlsError::Invalid("not implemented".into()))
}

/// Build a server config for a listener: the first key is the default certificate.
pub fn server_config(
    keys: Vec<Arc<CertifiedKey>>,
    ssl_policy: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let _ = (keys, ssl_policy);
    Err(TlsError::Invalid("not implemented".into()))
}
