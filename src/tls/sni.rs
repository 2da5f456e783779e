//! Certificate choice by SNI, as an ALB listener's certificate list does it.
//!
//! The names of every certificate are read once, when the listener's config is built:
//! the DNS names of the leaf's subjectAltName extension, or its subject common name when it
//! has no DNS names at all (the RFC 6125 fallback). `*.example.com` matches exactly one label
//! (`a.example.com`, not `example.com` nor `a.b.example.com`). Matching ignores ASCII case and a
//! trailing dot.
//!
//! Choice, for each ClientHello:
//! - no SNI, or no certificate matches: the first certificate (the listener's default);
//! - otherwise, among the certificates that match (exactly or by wildcard) and whose key can
//!   sign with a scheme the client offers: ECDSA keys before any other kind, then the order of the
//!   list. If the client supports none of the matches, the same order applies to all matches.
//!
//! ALB then prefers SHA over MD5 signatures, longer keys and validity; those criteria are not
//! applied here.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;
use rustls_pki_types::{CertificateDer, DnsName};

use super::TlsError;

/// A `ResolvesServerCert` over a listener's certificate list; the first key is the default.
#[derive(Debug)]
pub(super) struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    /// Preference rank of each key (lower is better).
    ranks: Vec<u8>,
    /// Lower-case name → indices of the keys whose certificate holds it.
    exact: HashMap<String, Vec<usize>>,
    /// Lower-case parent domain of a `*.` name → indices of the keys.
    wildcard: HashMap<String, Vec<usize>>,
}

impl SniResolver {
    /// Index the names of every key's leaf certificate.
    pub(super) fn new(keys: Vec<Arc<CertifiedKey>>) -> Result<Self, TlsError> {
        if keys.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        let mut ranks = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let leaf = key
                .end_entity_cert()
                .map_err(|_| TlsError::EmptyChain { index })?;
            let names = certificate_names(leaf)
                .map_err(|source| TlsError::CertificateNames { index, source })?;
            for name in names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_default().push(index),
                    None => exact.entry(name).or_default().push(index),
                }
            }
            ranks.push(match key.key.algorithm() {
                SignatureAlgorithm::ECDSA => 0,
                _ => 1,
            });
        }
        Ok(Self {
            keys,
            ranks,
            exact,
            wildcard,
        })
    }

    /// The key for `host` (the SNI), preferring keys for which `supported` holds.
    pub(super) fn select(
        &self,
        host: Option<&str>,
        supported: impl Fn(&CertifiedKey) -> bool,
    ) -> &Arc<CertifiedKey> {
        let default = &self.keys[0];
        let Some(host) = host else {
            return default;
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let exact = self.exact.get(&host).map_or(&[][..], Vec::as_slice);
        let wild = host
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .map_or(&[][..], Vec::as_slice);
        let best = |usable: &dyn Fn(usize) -> bool| {
            exact
                .iter()
                .chain(wild)
                .copied()
                .filter(|&i| usable(i))
                .min_by_key(|&i| (self.ranks[i], i))
        };
        best(&|i| supported(&self.keys[i]))
            .or_else(|| best(&|_| true))
            .map_or(default, |i| &self.keys[i])
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let key = self.select(hello.server_name(), |k| {
            k.key.choose_scheme(schemes).is_some()
        });
        Some(Arc::clone(key))
    }
}

/// The lower-case host names a leaf certificate is valid for (see the module docs).
fn certificate_names(der: &CertificateDer<'_>) -> Result<Vec<String>, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(der)?;
    let mut names: Vec<String> = cert
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    if names.is_empty() {
        if let Some(cn) = common_name(cert.subject()).filter(|cn| is_host_name(cn)) {
            names.push(cn.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// A DNS name, or `*.` followed by one.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    DnsName::try_from(name).is_ok()
}

/// The first common name (OID 2.5.4.3) of a DER subject (the contents of its SEQUENCE).
fn common_name(subject: &[u8]) -> Option<&str> {
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;

    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_item(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = der_item(attributes)?;
            attributes = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = der_item(attribute)?;
            if tag == OID && oid == OID_COMMON_NAME {
                let (tag, text, _) = der_item(value)?;
                if matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
                    return std::str::from_utf8(text).ok();
                }
            }
        }
    }
    None
}

/// Split one DER item off `input`: (tag, contents, rest).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use rustls::sign::{Signer, SigningKey};
    use rustls::SignatureScheme;
    use rustls_pki_types::PrivateKeyDer;

    /// A signing key that claims to be RSA; it never signs (tests only pick certificates).
    #[derive(Debug)]
    struct FakeRsa;

    impl SigningKey for FakeRsa {
        fn choose_scheme(&self, _: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
            None
        }
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::RSA
        }
    }

    fn cert(names: &[&str], cn: &str) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        (params.self_signed(&key).unwrap().der().clone(), key)
    }

    fn ecdsa(names: &[&str]) -> Arc<CertifiedKey> {
        let (der, key) = cert(names, "test");
        let der_key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = provider.key_provider.load_private_key(der_key).unwrap();
        Arc::new(CertifiedKey::new(vec![der], key))
    }

    fn rsa(names: &[&str]) -> Arc<CertifiedKey> {
        let (der, _) = cert(names, "test");
        Arc::new(CertifiedKey::new(vec![der], Arc::new(FakeRsa)))
    }

    fn pick(r: &SniResolver, host: Option<&str>) -> usize {
        let key = r.select(host, |_| true);
        r.keys.iter().position(|k| Arc::ptr_eq(k, key)).unwrap()
    }

    #[test]
    fn exact_wildcard_and_default() {
        let r = SniResolver::new(vec![
            ecdsa(&["default.test"]),
            ecdsa(&["a.test"]),
            ecdsa(&["*.b.test"]),
        ])
        .unwrap();
        assert_eq!(pick(&r, None), 0);
        assert_eq!(pick(&r, Some("default.test")), 0);
        assert_eq!(pick(&r, Some("a.test")), 1);
        assert_eq!(pick(&r, Some("A.Test")), 1);
        assert_eq!(pick(&r, Some("a.test.")), 1);
        assert_eq!(pick(&r, Some("x.b.test")), 2);
        assert_eq!(pick(&r, Some("X.B.TEST")), 2);
        assert_eq!(pick(&r, Some("b.test")), 0, "a wildcard needs one label");
        assert_eq!(
            pick(&r, Some("y.x.b.test")),
            0,
            "a wildcard covers one label only"
        );
        assert_eq!(pick(&r, Some(".b.test")), 0);
        assert_eq!(pick(&r, Some("unknown.test")), 0);
    }

    #[test]
    fn ecdsa_is_preferred_over_rsa_then_list_order() {
        let r = SniResolver::new(vec![
            ecdsa(&["default.test"]),
            rsa(&["a.test"]),
            ecdsa(&["a.test"]),
            ecdsa(&["a.test", "c.test"]),
            rsa(&["c.test"]),
            rsa(&["*.d.test"]),
            ecdsa(&["*.d.test"]),
            rsa(&["x.d.test"]),
        ])
        .unwrap();
        assert_eq!(pick(&r, Some("a.test")), 2);
        assert_eq!(pick(&r, Some("c.test")), 3);
        assert_eq!(
            pick(&r, Some("x.d.test")),
            6,
            "ECDSA wildcard beats RSA exact"
        );
        assert_eq!(pick(&r, Some("y.d.test")), 6);
    }

    #[test]
    fn keys_the_client_cannot_use_come_last() {
        let r = SniResolver::new(vec![
            ecdsa(&["default.test"]),
            ecdsa(&["a.test"]),
            rsa(&["a.test"]),
        ])
        .unwrap();
        let only_rsa = |k: &CertifiedKey| k.key.algorithm() == SignatureAlgorithm::RSA;
        assert!(Arc::ptr_eq(r.select(Some("a.test"), only_rsa), &r.keys[2]));
        let none = |_: &CertifiedKey| false;
        assert!(Arc::ptr_eq(r.select(Some("a.test"), none), &r.keys[1]));
    }

    #[test]
    fn common_name_is_used_only_without_dns_names() {
        let (der, _) = cert(&[], "CN.Test");
        assert_eq!(certificate_names(&der).unwrap(), vec!["cn.test"]);
        let (der, _) = cert(&["san.test", "*.Wild.Test"], "cn.test");
        assert_eq!(
            certificate_names(&der).unwrap(),
            vec!["*.wild.test", "san.test"]
        );
        let (der, _) = cert(&[], "not a host name");
        assert!(certificate_names(&der).unwrap().is_empty());
        let (der, _) = cert(&["127.0.0.1"], "*.wild.test");
        assert_eq!(certificate_names(&der).unwrap(), vec!["*.wild.test"]);
    }

    #[test]
    fn der_items_are_bounded() {
        assert_eq!(
            der_item(&[0x04, 0x02, 1, 2, 3]),
            Some((4, &[1, 2][..], &[3][..]))
        );
        assert_eq!(der_item(&[0x04, 0x03, 1, 2]), None);
        assert_eq!(
            der_item(&[0x04, 0x81, 0x01, 9]),
            Some((4, &[9][..], &[][..]))
        );
        assert_eq!(der_item(&[0x04, 0x80]), None);
        assert_eq!(der_item(&[0x04]), None);
        assert_eq!(common_name(&[0x31, 0x05, 0x30]), None);
    }

    #[test]
    fn an_empty_list_is_an_error() {
        assert!(matches!(
            SniResolver::new(vec![]),
            Err(TlsError::NoCertificates)
        ));
    }
}
