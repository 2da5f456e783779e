//! Listener rules: [`Router::route`] against a reference matcher written from the
//! semantics documented in `routing` (ALB's): the lowest priority whose conditions all
//! hold wins, a condition holds when any of its values matches, else the default action.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use albatross::config::model::{Action, Condition, FixedResponse, Listener, Protocol, Rule};
use albatross::routing::Router;
use http::request::Parts;
use ipnet::IpNet;
use proptest::prelude::*;

/// One position of a pattern: a byte, `?` or `*`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Byte(u8),
    One,
    Any,
}

/// A pattern read as documented: `*` and `?` are wildcards; in query-string patterns
/// `\` makes the next byte literal and `%HH` is the byte it encodes, literally.
fn units(pattern: &str, query: bool) -> Vec<Unit> {
    let b = pattern.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let unit = match b[i] {
            b'*' => Unit::Any,
            b'?' => Unit::One,
            b'\\' if query && i + 1 < b.len() => {
                i += 1;
                Unit::Byte(b[i])
            }
            b'%' if query => match percent(&b[i..]) {
                Some(byte) => {
                    i += 2;
                    Unit::Byte(byte)
                }
                None => Unit::Byte(b'%'),
            },
            byte => Unit::Byte(byte),
        };
        out.push(unit);
        i += 1;
    }
    out
}

fn percent(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', hi, lo, ..] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

/// `%HH` escapes decoded; a `%` without two hex digits stays, `+` stays `+`.
fn decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        match percent(&raw[i..]) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whole-text glob matching by dynamic programming (a different algorithm from the
/// router's on purpose), with ASCII case folding when `fold`.
fn glob(units: &[Unit], text: &[u8], fold: bool) -> bool {
    let eq = |p: u8, t: u8| {
        if fold {
            p.eq_ignore_ascii_case(&t)
        } else {
            p == t
        }
    };
    // m[j]: the first i units match the first j bytes.
    let mut m = vec![false; text.len() + 1];
    m[0] = true;
    for u in units {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match u {
                Unit::Any => m[j] || (j > 0 && next[j - 1]),
                Unit::One => j > 0 && m[j - 1],
                Unit::Byte(p) => j > 0 && m[j - 1] && eq(*p, text[j - 1]),
            };
        }
        m = next;
    }
    m[text.len()]
}

/// A request as generated, with what each condition reads from it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// The host without port, as the request names it.
    host: Option<String>,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    source: IpAddr,
    parts: Parts,
}

fn host_matches(patterns: &[String], r: &Request) -> bool {
    let Some(host) = &r.host else {
        return false;
    };
    patterns
        .iter()
        .any(|p| glob(&units(p, false), host.as_bytes(), true))
}

fn condition_holds(c: &Condition, r: &Request) -> bool {
    match c {
        Condition::HostHeader(patterns) => host_matches(patterns, r),
        Condition::PathPattern(patterns) => patterns
            .iter()
            .any(|p| glob(&units(p, false), r.path.as_bytes(), false)),
        Condition::HttpHeader { name, values } => r.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(name)
                && values
                    .iter()
                    .any(|p| glob(&units(p, false), v.as_bytes(), true))
        }),
        Condition::HttpRequestMethod(methods) => methods.contains(&r.method),
        Condition::QueryString(pairs) => {
            let query = r.query.as_deref().unwrap_or("");
            query.split('&').filter(|p| !p.is_empty()).any(|piece| {
                let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
                let (key, value) = (decode(key.as_bytes()), decode(value.as_bytes()));
                pairs.iter().any(|(k, v)| {
                    k.as_ref().is_none_or(|k| glob(&units(k, true), &key, true))
                        && glob(&units(v, true), &value, true)
                })
            })
        }
        Condition::SourceIp(nets) => nets.iter().any(|net| match (net, r.source) {
            (IpNet::V4(n), _) => match r.source.to_canonical() {
                IpAddr::V4(a) => n.contains(&a),
                IpAddr::V6(_) => false,
            },
            (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
            (IpNet::V6(_), IpAddr::V4(_)) => false,
        }),
    }
}

/// The reference outcome: the priority of the rule that answers, `None` for the
/// default action.
fn reference(rules: &[Rule], r: &Request) -> Option<u32> {
    rules
        .iter()
        .filter(|rule| rule.conditions.iter().all(|c| condition_holds(c, r)))
        .map(|rule| rule.priority)
        .min()
}

/// Patterns built from pieces that often match the generated requests.
fn pattern(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..5).prop_map(|p| p.concat())
}

const HOST_PIECES: &[&str] = &[
    "example", "EXAMPLE", ".", "com", "*", "?", "api", "a", "[::1]",
];
const PATH_PIECES: &[&str] = &["/", "a", "A", "b", "*", "?", ".", "%20", "x"];
const HEADER_PIECES: &[&str] = &["a", "A", "*", "?", "1", "-", " "];
const QUERY_PIECES: &[&str] = &[
    "a", "A", "b", "*", "?", "%2A", "%2a", "\\*", "\\", "%", "2", "+",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "get", "PATCH", "X_Y-Z"];
const HEADER_NAMES: &[&str] = &["x-a", "X-A", "x-b", "bad name"];
const NETS: &[&str] = &[
    "10.0.0.0/8",
    "192.0.2.0/24",
    "::1/128",
    "::/0",
    "0.0.0.0/0",
    "2001:db8::/32",
    "::ffff:0:0/96",
];
const SOURCES: &[&str] = &[
    "10.1.2.3",
    "192.0.2.1",
    "::1",
    "::ffff:10.1.2.3",
    "2001:db8::1",
    "203.0.113.9",
];

fn values<S: Strategy<Value = String>>(s: S) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(s, 1..3)
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        values(pattern(HOST_PIECES)).prop_map(Condition::HostHeader),
        values(pattern(PATH_PIECES)).prop_map(Condition::PathPattern),
        (
            prop::sample::select(HEADER_NAMES),
            values(pattern(HEADER_PIECES))
        )
            .prop_map(|(name, values)| Condition::HttpHeader {
                name: name.to_string(),
                values,
            }),
        prop::sample::subsequence(METHODS, 1..3)
            .prop_map(|m| Condition::HttpRequestMethod(m.iter().map(|s| s.to_string()).collect())),
        prop::collection::vec(
            (
                prop::option::of(pattern(QUERY_PIECES)),
                pattern(QUERY_PIECES)
            ),
            1..3
        )
        .prop_map(Condition::QueryString),
        prop::sample::subsequence(NETS, 1..3).prop_map(|nets| Condition::SourceIp(
            nets.iter().map(|n| n.parse().expect("a CIDR")).collect()
        )),
    ]
}

fn fixed(text: &str) -> Action {
    Action::FixedResponse(FixedResponse {
        status_code: 200,
        content_type: None,
        message_body: text.to_string(),
    })
}

/// Rules with unique priorities, in no particular order.
fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (1u32..=50_000, prop::collection::vec(condition(), 0..4)),
        0..8,
    )
    .prop_map(|rules| {
        let mut seen = HashSet::new();
        rules
            .into_iter()
            .filter(|(p, _)| seen.insert(*p))
            .map(|(priority, conditions)| Rule {
                priority,
                conditions,
                action: fixed(&priority.to_string()),
            })
            .collect()
    })
}

fn request() -> impl Strategy<Value = Request> {
    let host = prop::option::of((
        prop::sample::select(vec![
            "example.com",
            "EXAMPLE.com",
            "api.example.com",
            "a.b",
            "x.y.example.com",
            "[::1]",
            "exampleacom",
        ]),
        prop::option::of(0u16..10_000),
    ));
    (
        prop::sample::select(METHODS),
        host,
        any::<bool>(),
        "/[a-zA-Z0-9/._%*-]{0,10}",
        prop::option::of("[ab=&%2A6*+.\\-]{0,14}"),
        prop::collection::vec(
            (
                prop::sample::select(&HEADER_NAMES[..3]),
                "[a-zA-Z0-9 *?.-]{0,6}",
            ),
            0..4,
        ),
        prop::sample::select(SOURCES),
    )
        .prop_map(|(method, host, absolute, path, query, headers, source)| {
            let authority = host.map(|(h, port)| match port {
                Some(p) => (h.to_string(), format!("{h}:{p}")),
                None => (h.to_string(), h.to_string()),
            });
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            // An absolute-form request line names the host in the URI; otherwise it
            // travels in the Host header.
            let uri = match (&authority, absolute) {
                (Some((_, a)), true) => format!("http://{a}{target}"),
                _ => target,
            };
            let mut b = http::Request::builder().method(method).uri(&uri);
            if let (Some((_, a)), false) = (&authority, absolute) {
                b = b.header(http::header::HOST, a.as_str());
            }
            for (n, v) in &headers {
                b = b.header(*n, v.as_str());
            }
            let parts = b.body(()).expect("a valid request").into_parts().0;
            Request {
                method: method.to_string(),
                host: authority.map(|(h, _)| h),
                path,
                query,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect(),
                source: source.parse().expect("an address"),
                parts,
            }
        })
}

proptest! {
    #![proptest_config(crate::config())]

    /// Random rules of every condition kind, random requests: routing never panics and
    /// picks what the reference picks (the default action when no rule matches).
    #[test]
    fn routing_matches_reference(rules in rules(), request in request()) {
        let listener = Listener {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 80,
            protocol: Protocol::Http,
            tls: None,
            rules: rules.clone(),
            default_action: fixed("default"),
        };
        let router = Router::new(&listener);
        let matched = router.route(&request.parts, request.source);
        let want = reference(&rules, &request);
        prop_assert_eq!(matched.priority, want);
        let body = match matched.action {
            Action::FixedResponse(f) => f.message_body.clone(),
            other => return Err(TestCaseError::fail(format!("unexpected action {other:?}"))),
        };
        let want_body = want.map_or("default".to_string(), |p| p.to_string());
        prop_assert_eq!(body, want_body);
    }
}
