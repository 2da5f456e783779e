//! The forwarded request's headers written straight into the head
//! ([`Forwarded::write_headers`], the raw exchange's way) are the headers
//! [`Forwarded::apply`] leaves in the map (hyper's way), for any client headers and any
//! listener settings: the same names with the same values in the same order per name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use albatross::config::model::{Protocol, XffMode};
use albatross::proxy::headers::{host_value, Forwarded, MtlsHeaders};
use albatross::tls::{ClientCertificate, MtlsMode};
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use proptest::prelude::*;

/// Names the load balancer rewrites, in any case, and a few it leaves alone.
fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "host",
        "Host",
        "expect",
        "x-forwarded-for",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-amzn-trace-id",
        "x-amzn-mtls-clientcert",
        "x-amzn-mtls-clientcert-leaf",
        "accept",
        "user-agent",
        "x-custom",
        "cookie",
    ])
}

/// Values as clients send them: hosts in any case with or without ports, address
/// lists, trace ids, blanks and bytes a header value may hold.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9.-]{0,12}(:[0-9]{1,5})?".prop_map(String::into_bytes),
        "\\[[0-9a-f:]{2,10}\\](:[0-9]{1,4})?".prop_map(String::into_bytes),
        "( ?[0-9.]{1,15} ?,?){0,3}".prop_map(String::into_bytes),
        "(Root=1-[0-9a-f]{8}-[0-9a-f]{4}|Self=1-2-3|Parent=[0-9a-f]{4}|Sampled=1)(;(Root=1-aa-bb|Sampled=0| ))?"
            .prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn mtls() -> Arc<MtlsHeaders> {
    let cert = ClientCertificate {
        serial_number: "0A".into(),
        issuer: "CN=ca".into(),
        subject: "CN=client".into(),
        validity: "NotBefore=2024-01-02T19:17:20Z;NotAfter=2024-04-02T19:17:20Z".into(),
        leaf: "-----BEGIN%20CERTIFICATE-----".into(),
        chain: "-----BEGIN%20CERTIFICATE-----".into(),
    };
    Arc::new(MtlsHeaders::new(MtlsMode::Verify, Some(&cert)))
}

/// Each name's values, in order.
type Lines = BTreeMap<String, Vec<Vec<u8>>>;

fn from_map(headers: &HeaderMap) -> Lines {
    let mut lines = Lines::new();
    for (n, v) in headers {
        lines
            .entry(n.as_str().to_string())
            .or_default()
            .push(v.as_bytes().to_vec());
    }
    lines
}

fn from_head(head: &[u8]) -> Lines {
    let mut lines = Lines::new();
    for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("CRLF");
        let colon = line.iter().position(|&b| b == b':').expect("a colon");
        let value = line[colon + 1..].strip_prefix(b" ").expect("a space");
        lines
            .entry(String::from_utf8(line[..colon].to_vec()).expect("a name"))
            .or_default()
            .push(value.to_vec());
    }
    lines
}

proptest! {
    #![proptest_config(crate::config())]

    #[test]
    fn written_headers_are_applied_headers(
        sent in prop::collection::vec((name(), value()), 0..10),
        mode in prop::sample::select(vec![XffMode::Append, XffMode::Preserve, XffMode::Remove]),
        with_port in any::<bool>(),
        preserve_host in any::<bool>(),
        port in prop::sample::select(vec![80u16, 443, 8080]),
        https in any::<bool>(),
        trace in prop::option::of(Just(HeaderValue::from_static("Root=1-5f0a1b2c-0123456789abcdef01234567"))),
        with_mtls in any::<bool>(),
        authority in prop::option::of("[a-zA-Z0-9.-]{1,12}(:[0-9]{1,5})?"),
        client in any::<SocketAddr>(),
        default_host in prop::option::of(any::<SocketAddr>()),
    ) {
        let mut headers = HeaderMap::new();
        for (n, v) in &sent {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(HeaderName::from_bytes(n.as_bytes()).expect("name"), v);
            }
        }
        // Without a trace id of its own, each way makes a fresh one: compare with one given.
        let trace = trace.or_else(|| Some(HeaderValue::from_static("Root=1-00000000-000000000000000000000000")));
        let fwd = Forwarded {
            client,
            protocol: if https { Protocol::Https } else { Protocol::Http },
            port,
            port_value: HeaderValue::from(port),
            xff_mode: mode,
            xff_client_port: with_port,
            preserve_host_header: preserve_host,
            trace,
            mtls: with_mtls.then(mtls),
        };

        let mut applied = headers.clone();
        fwd.apply(&mut applied, authority.as_deref());
        if let (false, Some(t)) = (applied.contains_key(HOST), default_host) {
            applied.insert(HOST, host_value(t));
        }
        let mut written = Vec::new();
        fwd.write_headers(&headers, authority.as_deref(), default_host, &mut written);
        prop_assert_eq!(from_head(&written), from_map(&applied));
    }
}
