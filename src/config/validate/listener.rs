//! `[[listener]]`: address, port, protocol, TLS (certificates loaded, policy applied), rules
//! sorted by priority, default action.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::{rules, Cx, TargetGroupNames};
use crate::config::file::{CertificateConfig, ListenerConfig, MutualAuthConfig};
use crate::config::model::{CertificateFiles, Listener, MutualAuthentication, Protocol, Tls};
use crate::tls;

pub(super) fn listeners(
    cx: &mut Cx<'_>,
    listeners: &[Spanned<ListenerConfig>],
    ids: &TargetGroupNames,
    http2: bool,
) -> Vec<Option<Listener>> {
    listeners
        .iter()
        .map(|l| listener(cx, l.get_ref(), ids, http2))
        .collect()
}

pub(super) fn protocol(cx: &mut Cx<'_>, value: &Spanned<String>, key: &str) -> Option<Protocol> {
    cx.one_of(
        Some(value),
        key,
        &[("HTTP", Protocol::Http), ("HTTPS", Protocol::Https)],
        Protocol::Http,
    )
}

fn listener(
    cx: &mut Cx<'_>,
    l: &ListenerConfig,
    ids: &TargetGroupNames,
    http2: bool,
) -> Option<Listener> {
    let address = match &l.address {
        None => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(a) => match a.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                cx.error(
                    a.span(),
                    format!(
                        "`address` must be an IP address such as \"127.0.0.1\" or \"::\", without a port (got `{}`)",
                        a.get_ref()
                    ),
                );
                None
            }
        },
    };
    let port = cx.int_in(&l.port, "port", 0, 65535).map(|p| p as u16);
    let protocol = protocol(cx, &l.protocol, "protocol");

    let tls = match protocol {
        Some(Protocol::Https) => Some(tls_settings(cx, l, http2)),
        Some(Protocol::Http) => {
            if let Some(p) = &l.ssl_policy {
                cx.error(p.span(), "`ssl_policy` applies only to HTTPS listeners");
            }
            if let Some(c) = &l.certificates {
                cx.error(
                    c.span(),
                    "an HTTP listener takes no `certificates`; use protocol = \"HTTPS\"",
                );
            }
            if let Some(m) = &l.mutual_authentication {
                cx.error(
                    m.span(),
                    "`mutual_authentication` applies only to HTTPS listeners",
                );
            }
            None
        }
        None => None,
    };

    let mut rules_ok = true;
    let mut built = Vec::new();
    let mut seen: Vec<(u32, usize)> = Vec::new();
    for r in &l.rule {
        let priority = r.get_ref().priority.get_ref();
        if let Ok(p) = u32::try_from(*priority) {
            if let Some((_, line)) = seen.iter().find(|(q, _)| *q == p) {
                let line = *line;
                cx.error(
                    r.get_ref().priority.span(),
                    format!("priority {p} is already used by the rule at line {line}; priorities are unique per listener"),
                );
                rules_ok = false;
            } else {
                let line = cx.line_of(r.get_ref().priority.span());
                seen.push((p, line));
            }
        }
        match rules::rule(cx, r, protocol, port, ids) {
            Some(rule) => built.push(rule),
            None => rules_ok = false,
        }
    }
    built.sort_by_key(|r| r.priority);
    let default_action = rules::action(cx, &l.default_action, protocol, port, ids);

    let tls = match tls {
        Some(Some(t)) => Some(t),
        Some(None) => return None,
        None => None,
    };
    if !rules_ok {
        return None;
    }
    Some(Listener {
        address: address?,
        port: port?,
        protocol: protocol?,
        tls,
        rules: built,
        default_action: default_action?,
    })
}

/// Certificates and policy of an HTTPS listener, loaded into a rustls server config.
/// `http2` (the load balancer's `http2_enabled`) decides whether ALPN offers `h2`.
fn tls_settings(cx: &mut Cx<'_>, l: &ListenerConfig, http2: bool) -> Option<Tls> {
    let ssl_policy = l
        .ssl_policy
        .as_ref()
        .map_or(tls::DEFAULT_SSL_POLICY.to_string(), |p| p.get_ref().clone());
    let certs = match &l.certificates {
        Some(c) if !c.get_ref().is_empty() => c,
        Some(c) => {
            cx.error(
                c.span(),
                "an HTTPS listener needs at least one certificate in `certificates`",
            );
            return None;
        }
        None => {
            cx.error(
                l.protocol.span(),
                "an HTTPS listener needs `certificates = [ { cert = \"…\", key = \"…\" } ]`",
            );
            return None;
        }
    };
    let mut files = Vec::new();
    let mut keys = Vec::new();
    let mut ok = true;
    for c in certs.get_ref() {
        match certificate(cx, c) {
            Some((f, key)) => {
                files.push(f);
                keys.push(key);
            }
            None => ok = false,
        }
    }
    let mutual = match &l.mutual_authentication {
        None => Some((MutualAuthentication::default(), tls::ClientAuth::Off)),
        Some(m) => mutual_authentication(cx, m),
    };
    let (mutual_authentication, client_auth) = mutual?;
    if !ok {
        return None;
    }
    let alpn = if http2 {
        tls::ALPN_H2_HTTP1
    } else {
        tls::ALPN_HTTP1
    };
    match tls::server_config_with_alpn(keys, &ssl_policy, alpn, &client_auth) {
        Ok(server_config) => Some(Tls {
            ssl_policy,
            certificates: files,
            server_config,
            mutual_authentication,
        }),
        Err(e) => {
            let span = l
                .ssl_policy
                .as_ref()
                .map_or_else(|| certs.span(), |p| p.span());
            cx.error(
                span,
                format!("cannot set up TLS with policy `{ssl_policy}`: {e}"),
            );
            None
        }
    }
}

/// `mutual_authentication = { mode, trust_store, ignore_client_certificate_expiry }`: the
/// model's settings and what the server config needs (the trust store loaded).
fn mutual_authentication(
    cx: &mut Cx<'_>,
    m: &Spanned<MutualAuthConfig>,
) -> Option<(MutualAuthentication, tls::ClientAuth)> {
    let c = m.get_ref();
    let mode = cx.one_of(
        Some(&c.mode),
        "mode",
        &[
            ("off", tls::MtlsMode::Off),
            ("verify", tls::MtlsMode::Verify),
            ("passthrough", tls::MtlsMode::Passthrough),
        ],
        tls::MtlsMode::Off,
    )?;
    let ignore_expiry = c
        .ignore_client_certificate_expiry
        .as_ref()
        .map(|v| (*v.get_ref(), v.span()));
    if mode != tls::MtlsMode::Verify {
        if let Some(t) = &c.trust_store {
            cx.error(
                t.span(),
                format!(
                    "`trust_store` is used only with mode = \"verify\" (this listener's mode is \"{}\")",
                    mode.as_str()
                ),
            );
            return None;
        }
        if let Some((_, span)) = ignore_expiry {
            cx.error(
                span,
                "`ignore_client_certificate_expiry` is used only with mode = \"verify\"",
            );
            return None;
        }
    }
    match mode {
        tls::MtlsMode::Off => Some((MutualAuthentication::default(), tls::ClientAuth::Off)),
        tls::MtlsMode::Passthrough => Some((
            MutualAuthentication {
                mode,
                ..MutualAuthentication::default()
            },
            tls::ClientAuth::Passthrough,
        )),
        tls::MtlsMode::Verify => {
            let Some(t) = &c.trust_store else {
                cx.error(
                    m.span(),
                    "mode = \"verify\" needs `trust_store`, a PEM file of the CA certificates client certificates must chain to",
                );
                return None;
            };
            let path = readable(cx, t, "trust store")?;
            match tls::load_trust_store(&path) {
                Ok(roots) => {
                    let ignore_expiry = ignore_expiry.is_some_and(|(v, _)| v);
                    Some((
                        MutualAuthentication {
                            mode,
                            trust_store: Some(path),
                            ignore_client_certificate_expiry: ignore_expiry,
                        },
                        tls::ClientAuth::Verify {
                            roots,
                            ignore_expiry,
                        },
                    ))
                }
                Err(e) => {
                    cx.error(t.span(), format!("cannot use the trust store: {e}"));
                    None
                }
            }
        }
    }
}

/// One `{ cert, key }` pair: both files readable, then loaded and matched.
fn certificate(
    cx: &mut Cx<'_>,
    c: &Spanned<CertificateConfig>,
) -> Option<(CertificateFiles, Arc<rustls::sign::CertifiedKey>)> {
    let cert = readable(cx, &c.get_ref().cert, "certificate");
    let key = readable(cx, &c.get_ref().key, "key");
    let (cert, key) = (cert?, key?);
    match tls::load_certified_key(&cert, &key) {
        Ok(k) => Some((CertificateFiles { cert, key }, k)),
        Err(e) => {
            cx.error(
                c.span(),
                format!(
                    "cannot use certificate `{}` with key `{}`: {e}",
                    cert.display(),
                    key.display()
                ),
            );
            None
        }
    }
}

/// A file path from the config, resolved and checked for reading.
fn readable(cx: &mut Cx<'_>, value: &Spanned<String>, what: &str) -> Option<PathBuf> {
    if value.get_ref().trim().is_empty() {
        cx.error(
            value.span(),
            format!("the {what} file path cannot be empty"),
        );
        return None;
    }
    let path = cx.resolve(value.get_ref());
    match File::open(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            cx.error(
                value.span(),
                format!("cannot read {what} file `{}`: {e}", path.display()),
            );
            None
        }
    }
}
