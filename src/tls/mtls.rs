//! ALB's mutual TLS on HTTPS listeners (`mutual_authentication`):
//!
//! - `verify`: the client must present a certificate that chains to the listener's trust
//!   store (a PEM bundle of CA certificates); otherwise the handshake fails. With
//!   `ignore_client_certificate_expiry`, a certificate outside its validity period is
//!   still accepted when it chains to the trust store. The target gets the leaf's
//!   serial number, issuer, subject, validity and PEM in `X-Amzn-Mtls-Clientcert-*`.
//! - `passthrough`: a client certificate is asked for but not required and not
//!   validated (the client must still prove it holds the key); the target gets the
//!   whole chain as URL-encoded PEM in `X-Amzn-Mtls-Clientcert`.
//!
//! As with ALB, sessions are not resumed on these listeners (a resumed session would
//! carry no certificate to forward). This module works out the header values as text;
//! `proxy` puts them on requests.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use super::TlsError;

/// How a listener treats client certificates (ALB's `MutualAuthentication.Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    #[default]
    Off,
    Verify,
    Passthrough,
}

impl MtlsMode {
    /// ALB's word for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Off => "off",
            MtlsMode::Verify => "verify",
            MtlsMode::Passthrough => "passthrough",
        }
    }
}

/// What a server config needs for client certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// Required and validated against `roots`.
    Verify {
        roots: Arc<RootCertStore>,
        ignore_expiry: bool,
    },
    /// Asked for, optional, not validated.
    Passthrough,
}

/// The CA certificates of a trust store file (PEM, one or more `CERTIFICATE` blocks).
pub fn load_trust_store(path: &std::path::Path) -> Result<Arc<RootCertStore>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|source| TlsError::Pem {
            path: shown.clone(),
            source,
        })?;
        roots.add(cert).map_err(|e| {
            TlsError::Invalid(format!(
                "a certificate in the trust store {shown} cannot be used as a CA: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate { path: shown });
    }
    Ok(Arc::new(roots))
}

/// The client certificate verifier for `auth` (`None`: no client authentication).
pub(super) fn verifier(
    auth: &ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    match auth {
        ClientAuth::Off => Ok(None),
        ClientAuth::Passthrough => Ok(Some(Arc::new(Passthrough {
            provider: provider.clone(),
        }))),
        ClientAuth::Verify {
            roots,
            ignore_expiry,
        } => {
            // ALB does not advertise its trust store's CA names unless asked to.
            let inner =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .clear_root_hint_subjects()
                    .build()
                    .map_err(|e| TlsError::Invalid(format!("cannot use the trust store: {e}")))?;
            Ok(Some(Arc::new(Verify {
                inner,
                ignore_expiry: *ignore_expiry,
            })))
        }
    }
}

/// Passthrough: any chain is accepted, but the handshake signature is still checked
/// against the leaf's key, so a client cannot present a certificate it does not hold.
#[derive(Debug)]
struct Passthrough {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for Passthrough {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

std::thread_local! {
    /// The leaf of the last certificate refused on this thread. The refusal happens in
    /// the poll of the handshake that ends with its error, so the listener takes it
    /// right after (`take_refused_leaf`) for the connection log, as ALB logs the
    /// certificate of a refused handshake.
    static REFUSED_LEAF: std::cell::RefCell<Option<CertificateDer<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The leaf of the certificate whose refusal ended the handshake just polled on this
/// thread, if the handshake ended that way.
pub fn take_refused_leaf() -> Option<ClientCertificate> {
    let leaf = REFUSED_LEAF.with(|l| l.borrow_mut().take())?;
    client_certificate(&[leaf])
}

/// `verify`: rustls's WebPKI verifier with ALB's `ignore_client_certificate_expiry` (a
/// chain refused only for the leaf's validity period is checked again as of a moment
/// inside that period), remembering a refused leaf for the connection log.
#[derive(Debug)]
struct Verify {
    inner: Arc<dyn ClientCertVerifier>,
    ignore_expiry: bool,
}

impl ClientCertVerifier for Verify {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let mut verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        let out_of_period = matches!(
            verdict,
            Err(Error::InvalidCertificate(
                CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. },
            ))
        );
        if self.ignore_expiry && out_of_period {
            verdict = match validity_secs(end_entity) {
                Some((not_before, not_after)) => {
                    let inside = not_before + not_after.saturating_sub(not_before) / 2;
                    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(inside));
                    self.inner.verify_client_cert(end_entity, intermediates, at)
                }
                None => Err(Error::InvalidCertificate(CertificateError::BadEncoding)),
            };
        }
        if verdict.is_err() {
            let leaf = end_entity.clone().into_owned();
            REFUSED_LEAF.with(|l| *l.borrow_mut() = Some(leaf));
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The leaf's notBefore and notAfter in seconds since the epoch (0 for earlier times).
fn validity_secs(cert: &CertificateDer<'_>) -> Option<(u64, u64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Some((
        secs(parsed.validity().not_before),
        secs(parsed.validity().not_after),
    ))
}

/// What a client certificate tells the target and the connection log, as ALB words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The leaf's serial number in hex (upper case, two digits per byte: `02`).
    pub serial_number: String,
    /// The leaf's issuer and subject as RFC 2253 strings (`CN=a,O=b,C=US`).
    pub issuer: String,
    pub subject: String,
    /// `NotBefore=2024-01-02T19:17:20Z;NotAfter=2024-04-02T19:17:20Z`.
    pub validity: String,
    /// The leaf as URL-encoded PEM (`+`, `=`, `/` left as they are).
    pub leaf: String,
    /// The whole chain as presented, leaf first, as URL-encoded PEM.
    pub chain: String,
}

/// The fields of the chain a client presented (leaf first); `None` without one or when
/// the leaf cannot be parsed.
pub fn client_certificate(chain: &[CertificateDer<'_>]) -> Option<ClientCertificate> {
    let leaf = chain.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let serial_number = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let validity = format!(
        "NotBefore={};NotAfter={}",
        iso8601(parsed.validity().not_before),
        iso8601(parsed.validity().not_after)
    );
    let mut chain_text = String::new();
    for cert in chain {
        chain_text.push_str(&url_encoded_pem(cert));
    }
    Some(ClientCertificate {
        serial_number,
        issuer: rfc2253(parsed.issuer()),
        subject: rfc2253(parsed.subject()),
        validity,
        leaf: url_encoded_pem(leaf),
        chain: chain_text,
    })
}

/// `2024-01-02T19:17:20Z`.
fn iso8601(t: x509_parser::time::ASN1Time) -> String {
    let secs = u64::try_from(t.timestamp()).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// A distinguished name as RFC 2253 writes it: the last RDN first, `,` between RDNs and
/// `+` inside one, short names for the usual attributes and the dotted OID with the
/// value in hex (`1.2.3=#0c03616263`) for the others, special characters escaped.
pub fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = match oid.as_str() {
                "2.5.4.3" => Some("CN"),
                "2.5.4.7" => Some("L"),
                "2.5.4.8" => Some("ST"),
                "2.5.4.10" => Some("O"),
                "2.5.4.11" => Some("OU"),
                "2.5.4.6" => Some("C"),
                "2.5.4.9" => Some("STREET"),
                "0.9.2342.19200300.100.1.25" => Some("DC"),
                "0.9.2342.19200300.100.1.1" => Some("UID"),
                _ => None,
            };
            match (short, atv.as_str()) {
                (Some(short), Ok(value)) => {
                    out.push_str(short);
                    out.push('=');
                    escape_rfc2253(&mut out, value);
                }
                _ => {
                    out.push_str(&oid);
                    out.push_str("=#");
                    use x509_parser::asn1_rs::ToDer as _;
                    for b in atv.attr_value().to_der_vec().unwrap_or_default() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// RFC 2253 §2.4: `,` `+` `"` `\` `<` `>` `;` escaped with a backslash, and a leading
/// `#` or space and a trailing space too.
fn escape_rfc2253(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A certificate as PEM, URL-encoded as ALB does it: letters, digits, `-._~` and
/// `+=/` as they are, every other byte (spaces, line ends) as `%XX`.
pub fn url_encoded_pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() + 64);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+=/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The connection log's `tls_verify_status` reason for a handshake refused over the
/// client's certificate (ALB's `Failed:<reason>` words), `None` for other failures.
pub fn verify_failure_reason(e: &rustls::Error) -> Option<&'static str> {
    Some(match e {
        Error::NoCertificatesPresented => "ClientCertMissing",
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "ClientCertExpired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "ClientCertNotYetValid"
            }
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::Revoked
            | CertificateError::InvalidPurpose
            | CertificateError::InvalidPurposeContext { .. }
            | CertificateError::ApplicationVerificationFailure => "ClientCertUntrusted",
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "ClientCertTypeUnsupported"
            }
            _ => "ClientCertInvalid",
        },
        _ => return None,
    })
}
