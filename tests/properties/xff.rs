//! X-Forwarded-For: counting the addresses a request brings ([`xff_entries`], for ALB's
//! 463 past 30) and writing the client in ([`Forwarded::apply`]) in each mode.

use std::net::{IpAddr, SocketAddr};

use albatross::config::model::{Protocol, XffMode};
use albatross::proxy::headers::{xff_entries, Forwarded, X_AMZN_TRACE_ID, X_FORWARDED_FOR};
use http::header::{HeaderMap, HeaderValue, HOST};
use proptest::prelude::*;

/// Header values from visible bytes, spaces and tabs, commas and obs-text, as a client
/// may send them (anything `HeaderValue::from_bytes` takes).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => 0x21u8..0x7f,
        2 => Just(b','),
        2 => Just(b' '),
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..60)
}

/// An address as a client or proxy writes it in the list.
fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        any::<SocketAddr>().prop_map(|a| a.to_string()),
        "[a-z0-9.:-]{1,20}",
    ]
}

/// A well-formed list: addresses joined by commas with optional spaces around them.
fn list() -> impl Strategy<Value = (String, usize)> {
    prop::collection::vec((address(), " {0,2}", " {0,2}"), 1..8).prop_map(|entries| {
        let n = entries.len();
        let parts: Vec<String> = entries
            .into_iter()
            .map(|(a, before, after)| format!("{before}{a}{after}"))
            .collect();
        (parts.join(","), n)
    })
}

fn forwarded(client: SocketAddr, mode: XffMode, with_port: bool) -> Forwarded {
    Forwarded {
        client,
        protocol: Protocol::Https,
        port: 443,
        port_value: HeaderValue::from_static("443"),
        xff_mode: mode,
        xff_client_port: with_port,
        preserve_host_header: false,
        trace: None,
    }
}

/// The client as X-Forwarded-For lists it, written the plain way: IPv4 (an IPv4-mapped
/// IPv6 peer as IPv4) as `a.b.c.d[:port]`, IPv6 as `v6` or `[v6]:port`.
fn client_entry(client: SocketAddr, with_port: bool) -> String {
    match (client.ip().to_canonical(), with_port) {
        (IpAddr::V4(v4), false) => v4.to_string(),
        (IpAddr::V4(v4), true) => format!("{v4}:{}", client.port()),
        (IpAddr::V6(v6), false) => v6.to_string(),
        (IpAddr::V6(v6), true) => format!("[{v6}]:{}", client.port()),
    }
}

/// The entries of the values `Forwarded` keeps: those that are text.
fn text_entries(values: &[HeaderValue]) -> usize {
    values
        .iter()
        .filter(|v| v.to_str().is_ok())
        .map(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .filter(|s| s.iter().any(|b| !b.is_ascii_whitespace()))
                .count()
        })
        .sum()
}

const MODES: [XffMode; 3] = [XffMode::Append, XffMode::Preserve, XffMode::Remove];

proptest! {
    #![proptest_config(crate::config())]

    /// Any X-Forwarded-For values (and any Host and X-Amzn-Trace-Id), in every mode,
    /// with or without the client port: nothing panics. `append` leaves one value
    /// ending with the client's address, holding one entry more than the text values
    /// it had; `preserve` leaves the values as they were; `remove` leaves none.
    #[test]
    fn xff_apply_any_values(
        values in prop::collection::vec(header_bytes(), 0..4),
        host in header_bytes(),
        trace in header_bytes(),
        authority in prop::option::of("[a-zA-Z0-9.:\\[\\]-]{0,30}"),
        client in any::<SocketAddr>(),
    ) {
        let values: Vec<HeaderValue> = values
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(v).ok())
            .collect();
        for mode in MODES {
            for with_port in [false, true] {
                let mut headers = HeaderMap::new();
                for v in &values {
                    headers.append(&X_FORWARDED_FOR, v.clone());
                }
                if let Ok(h) = HeaderValue::from_bytes(&host) {
                    headers.insert(HOST, h);
                }
                if let Ok(t) = HeaderValue::from_bytes(&trace) {
                    headers.insert(&X_AMZN_TRACE_ID, t);
                }
                let before = xff_entries(&headers);
                forwarded(client, mode, with_port).apply(&mut headers, authority.as_deref());
                let after: Vec<&HeaderValue> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
                match mode {
                    XffMode::Append => {
                        prop_assert_eq!(after.len(), 1);
                        let me = client_entry(client, with_port);
                        let got = after[0].to_str().expect("text");
                        prop_assert!(got.ends_with(&me), "{:?} does not end with {:?}", got, me);
                        prop_assert_eq!(xff_entries(&headers), text_entries(&values) + 1);
                    }
                    XffMode::Preserve => {
                        prop_assert_eq!(after, values.iter().collect::<Vec<_>>());
                        prop_assert_eq!(xff_entries(&headers), before);
                    }
                    XffMode::Remove => prop_assert!(after.is_empty()),
                }
            }
        }
    }

    /// Well-formed lists over one or more headers are counted as a split on commas
    /// counts them.
    #[test]
    fn xff_entries_count_well_formed_lists(lists in prop::collection::vec(list(), 0..5)) {
        let mut headers = HeaderMap::new();
        let mut want = 0;
        for (text, n) in &lists {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(text).expect("a valid value"));
            want += n;
        }
        prop_assert_eq!(xff_entries(&headers), want);
    }
}
