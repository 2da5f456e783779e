//! ALB security policies mapped onto what rustls can offer, and OpenSSL-style names for the
//! negotiated version and cipher suite (as ALB writes them in its access log).
//!
//! rustls speaks only TLS 1.2 and TLS 1.3, and only AEAD suites with forward secrecy: there is
//! no TLS 1.0/1.1, no CBC, no SHA-1 MAC and no static-RSA key exchange. Every policy therefore
//! maps to one of three shapes:
//!
//! | Policy (`ELBSecurityPolicy-` prefix optional) | ALB versions | albatross versions |
//! |---|---|---|
//! | `TLS13-1-2-2021-06` (default), `TLS13-1-2-Res-2021-06`, `TLS13-1-2-Ext1-2021-06`, `TLS13-1-2-Ext2-2021-06` | 1.2–1.3 | 1.2–1.3 |
//! | `TLS13-1-1-2021-06`, `TLS13-1-0-2021-06` | 1.1–1.3 / 1.0–1.3 | 1.2–1.3 |
//! | `TLS13-1-3-2021-06` | 1.3 | 1.3 |
//! | `2016-08`, `2015-05` | 1.0–1.2 | 1.2 |
//! | `FS-1-2-Res-2020-10`, `FS-1-2-Res-2019-08`, `FS-1-2-2019-08` | 1.2 | 1.2 |
//! | `FS-1-1-2019-08`, `FS-2018-06` | 1.1–1.2 / 1.0–1.2 | 1.2 |
//! | `TLS-1-2-Ext-2018-06`, `TLS-1-2-2017-01` | 1.2 | 1.2 |
//! | `TLS-1-1-2017-01`, `TLS-1-0-2015-04` | 1.1–1.2 / 1.0–1.2 | 1.2 |
//!
//! Cipher suites, whatever the policy:
//! - TLS 1.3: `TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`, `TLS_CHACHA20_POLY1305_SHA256`
//!   (the same three ALB offers).
//! - TLS 1.2: `ECDHE-ECDSA-AES128-GCM-SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`,
//!   `ECDHE-ECDSA-AES256-GCM-SHA384`, `ECDHE-RSA-AES256-GCM-SHA384` (the ECDHE-GCM core every
//!   ALB policy shares; ALB's extra CBC, SHA-1 and static-RSA suites are not available, and
//!   ChaCha20 is not offered on 1.2 because no ALB policy offers it there).
//!
//! So a client that can only do TLS 1.0/1.1, or only CBC/static-RSA suites, is refused where ALB
//! would accept it. Policies without TLS 1.3 at ALB stay without TLS 1.3 here.

use rustls::crypto::aws_lc_rs::cipher_suite as suite;
use rustls::{CipherSuite, ProtocolVersion, SupportedCipherSuite, SupportedProtocolVersion};

/// The policy of an HTTPS listener that names none: ALB's console default (the API's
/// default is the older `ELBSecurityPolicy-2016-08`).
pub const DEFAULT_SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

const PREFIX: &str = "ELBSecurityPolicy-";

/// Which protocol versions a policy offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Versions {
    Tls12And13,
    Tls12Only,
    Tls13Only,
}

/// Every known policy name (without the prefix) and what it maps to.
const POLICIES: &[(&str, Versions)] = &[
    ("TLS13-1-2-2021-06", Versions::Tls12And13),
    ("TLS13-1-2-Res-2021-06", Versions::Tls12And13),
    ("TLS13-1-2-Ext1-2021-06", Versions::Tls12And13),
    ("TLS13-1-2-Ext2-2021-06", Versions::Tls12And13),
    ("TLS13-1-1-2021-06", Versions::Tls12And13),
    ("TLS13-1-0-2021-06", Versions::Tls12And13),
    ("TLS13-1-3-2021-06", Versions::Tls13Only),
    ("2016-08", Versions::Tls12Only),
    ("2015-05", Versions::Tls12Only),
    ("FS-1-2-Res-2020-10", Versions::Tls12Only),
    ("FS-1-2-Res-2019-08", Versions::Tls12Only),
    ("FS-1-2-2019-08", Versions::Tls12Only),
    ("FS-1-1-2019-08", Versions::Tls12Only),
    ("FS-2018-06", Versions::Tls12Only),
    ("TLS-1-2-Ext-2018-06", Versions::Tls12Only),
    ("TLS-1-2-2017-01", Versions::Tls12Only),
    ("TLS-1-1-2017-01", Versions::Tls12Only),
    ("TLS-1-0-2015-04", Versions::Tls12Only),
];

/// TLS 1.3 suites, in server preference order.
fn tls13_suites() -> [SupportedCipherSuite; 3] {
    [
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]
}

/// TLS 1.2 suites, in ALB's priority order.
fn tls12_suites() -> [SupportedCipherSuite; 4] {
    [
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

static TLS12_AND_13: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];
static TLS12_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

/// A resolved security policy: the protocol versions and cipher suites to offer.
#[derive(Clone, Debug)]
pub(super) struct SecurityPolicy {
    pub(super) versions: &'static [&'static SupportedProtocolVersion],
    pub(super) cipher_suites: Vec<SupportedCipherSuite>,
}

/// All accepted policy names, with the `ELBSecurityPolicy-` prefix.
pub fn ssl_policy_names() -> impl Iterator<Item = String> {
    POLICIES.iter().map(|(name, _)| format!("{PREFIX}{name}"))
}

/// What a policy offers, in OpenSSL's names as DescribeSSLPolicies lists them: its
/// protocol versions (`TLSv1.2`) and cipher suites in priority order.
pub fn describe(name: &str) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    let policy = lookup(name)?;
    let mut versions: Vec<&'static str> = policy
        .versions
        .iter()
        .filter_map(|v| openssl_version_name(v.version))
        .collect();
    versions.sort_unstable();
    let suites = policy
        .cipher_suites
        .iter()
        .filter_map(|s| openssl_suite_name(s.suite()))
        .collect();
    Some((versions, suites))
}

/// Look a policy up by its ALB name; the `ELBSecurityPolicy-` prefix is optional.
pub(super) fn lookup(name: &str) -> Option<SecurityPolicy> {
    let short = name.strip_prefix(PREFIX).unwrap_or(name);
    let (_, versions) = POLICIES.iter().find(|(n, _)| *n == short)?;
    let (versions, suites): (&'static [&'static SupportedProtocolVersion], Vec<_>) = match versions
    {
        Versions::Tls12And13 => (
            &TLS12_AND_13,
            tls13_suites().into_iter().chain(tls12_suites()).collect(),
        ),
        Versions::Tls12Only => (&TLS12_ONLY, tls12_suites().to_vec()),
        Versions::Tls13Only => (&TLS13_ONLY, tls13_suites().to_vec()),
    };
    Some(SecurityPolicy {
        versions,
        cipher_suites: suites,
    })
}

/// OpenSSL's name for a protocol version (`TLSv1.2`), as in ALB's access log `ssl_protocol`.
pub fn openssl_version_name(version: ProtocolVersion) -> Option<&'static str> {
    Some(match version {
        ProtocolVersion::TLSv1_0 => "TLSv1",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => return None,
    })
}

/// OpenSSL's name for a cipher suite (`ECDHE-RSA-AES128-GCM-SHA256`, `TLS_AES_128_GCM_SHA256`),
/// as in ALB's access log `ssl_cipher`. Covers every suite rustls can negotiate.
pub fn openssl_suite_name(suite: CipherSuite) -> Option<&'static str> {
    use CipherSuite as C;
    Some(match suite {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// The negotiated protocol version and cipher suite of a connection, in OpenSSL notation;
/// `None` before the handshake has got that far.
pub fn openssl_names(
    conn: &rustls::ServerConnection,
) -> (Option<&'static str>, Option<&'static str>) {
    (
        conn.protocol_version().and_then(openssl_version_name),
        conn.negotiated_cipher_suite()
            .and_then(|s| openssl_suite_name(s.suite())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_resolves_with_or_without_prefix() {
        for name in ssl_policy_names() {
            assert!(lookup(&name).is_some(), "{name}");
            let short = name.strip_prefix(PREFIX).unwrap();
            assert!(lookup(short).is_some(), "{short}");
        }
        assert!(lookup(DEFAULT_SSL_POLICY).is_some());
    }

    #[test]
    fn unknown_policy_is_none() {
        assert!(lookup("ELBSecurityPolicy-TLS13-9-9-2099-01").is_none());
        assert!(lookup("").is_none());
        assert!(lookup("elbsecuritypolicy-tls13-1-2-2021-06").is_none());
    }

    #[test]
    fn versions_follow_the_policy() {
        let both = lookup("ELBSecurityPolicy-TLS13-1-0-2021-06").unwrap();
        assert_eq!(both.versions.len(), 2);
        assert_eq!(both.cipher_suites.len(), 7);

        let only13 = lookup("ELBSecurityPolicy-TLS13-1-3-2021-06").unwrap();
        assert_eq!(only13.versions, &[&rustls::version::TLS13]);
        assert!(only13
            .cipher_suites
            .iter()
            .all(|s| s.version() == &rustls::version::TLS13));

        let only12 = lookup("ELBSecurityPolicy-2016-08").unwrap();
        assert_eq!(only12.versions, &[&rustls::version::TLS12]);
        assert!(only12
            .cipher_suites
            .iter()
            .all(|s| s.version() == &rustls::version::TLS12));
    }

    #[test]
    fn every_offered_suite_has_an_openssl_name() {
        for s in rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES {
            assert!(openssl_suite_name(s.suite()).is_some(), "{:?}", s.suite());
        }
        assert_eq!(
            openssl_suite_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            Some("ECDHE-RSA-AES128-GCM-SHA256")
        );
        assert_eq!(
            openssl_suite_name(CipherSuite::TLS13_AES_128_GCM_SHA256),
            Some("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(
            openssl_version_name(ProtocolVersion::TLSv1_3),
            Some("TLSv1.3")
        );
        assert_eq!(
            openssl_version_name(ProtocolVersion::TLSv1_2),
            Some("TLSv1.2")
        );
    }
}
