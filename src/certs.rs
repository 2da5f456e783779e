//! The self-signed localhost certificate used by the embedded default config.
//!
//! Generated on first use into a directory (by default `certs/`, git-ignored), then reused as
//! is: delete the two files to get a new one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The certificate file name inside the directory.
pub const LOCALHOST_CERT_FILE: &str = "localhost.pem";
/// The private key file name inside the directory.
pub const LOCALHOST_KEY_FILE: &str = "localhost-key.pem";
/// The names of the localhost certificate.
const LOCALHOST_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// How long a generated certificate is valid.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How far back a generated certificate's validity starts, for clocks that lag a little.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Make sure `dir/localhost.pem` and `dir/localhost-key.pem` exist, generating a
/// self-signed certificate for `localhost`, `127.0.0.1` and `::1` when they do not
/// (both are rewritten if only one of them exists). Returns the two paths (certificate, key).
pub fn ensure_localhost_cert(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(LOCALHOST_CERT_FILE);
    let key_path = dir.join(LOCALHOST_KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let (cert_pem, key_pem) = self_signed(LOCALHOST_NAMES).map_err(io::Error::other)?;
    fs::create_dir_all(dir)?;
    // The key first: if writing the certificate fails, the next run generates both again.
    write_private(&key_path, key_pem.as_bytes())?;
    fs::write(&cert_path, cert_pem)?;
    tracing::info!(
        cert = %cert_path.display(),
        key = %key_path.display(),
        "generated a self-signed certificate for localhost"
    );
    Ok((cert_path, key_path))
}

/// A new self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses; the first
/// is also the common name), valid for a year, as PEM: (certificate, PKCS#8 private key).
pub fn self_signed(names: &[&str]) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    let mut subject = DistinguishedName::new();
    if let Some(first) = names.first() {
        subject.push(DnType::CommonName, *first);
    }
    params.distinguished_name = subject;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write a file readable by its owner only (on Unix).
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; tighten an existing file too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_pem() {
        let (cert, key) = self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn a_bad_name_is_an_error() {
        assert!(self_signed(&["caf\u{e9}.test"]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = ensure_localhost_cert(&dir.path().join("certs")).unwrap();
        let mode = fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
