//! Loading a certificate chain and its private key from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Load a PEM certificate chain (every `CERTIFICATE` block, leaf first) and its private key
/// (`PRIVATE KEY` / PKCS#8, `RSA PRIVATE KEY` / PKCS#1 or `EC PRIVATE KEY` / SEC1; the first one
/// in the file), checking that the key belongs to the leaf. Both may be the same file.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = || cert.display().to_string();
    let key_path = || key.display().to_string();

    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path() });
    }

    let key_der = match PrivateKeyDer::from_pem_slice(&read(key)?) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoPrivateKey { path: key_path() }),
        Err(source) => {
            return Err(TlsError::Pem {
                path: key_path(),
                source,
            })
        }
    };
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::UnsupportedKey {
            path: key_path(),
            source,
        })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path(),
                key: key_path(),
            })
        }
        Err(source) => {
            return Err(TlsError::BadCertificate {
                path: cert_path(),
                source,
            })
        }
    }
    Ok(Arc::new(certified))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}
