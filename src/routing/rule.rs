//! One listener rule compiled: its conditions as matchers, its priority and action.

use std::net::IpAddr;

use http::{HeaderName, Method};
use ipnet::IpNet;

use super::glob::{matches_uri_component, Case, Glob, Syntax};
use super::request::RequestView;
use crate::config::model::{Action, Condition, Rule};

/// A rule ready to match: all conditions must hold (AND).
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) priority: u32,
    /// Cheapest first; the order never changes the outcome.
    matchers: Box<[Matcher]>,
    pub(crate) action: Action,
}

impl CompiledRule {
    pub(crate) fn new(rule: &Rule) -> CompiledRule {
        let mut matchers: Vec<Matcher> = rule.conditions.iter().map(Matcher::new).collect();
        matchers.sort_by_key(Matcher::cost);
        CompiledRule {
            priority: rule.priority,
            matchers: matchers.into_boxed_slice(),
            action: rule.action.clone(),
        }
    }

    /// Whether every condition holds (a rule without conditions always matches).
    #[inline]
    pub(crate) fn matches(&self, request: &RequestView<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(request))
    }
}

/// One condition compiled: any of its values matching satisfies it (OR).
#[derive(Debug)]
enum Matcher {
    /// Case-insensitive globs against the host without port.
    Host(Box<[Glob]>),
    /// Case-sensitive globs against the raw path.
    Path(Box<[Glob]>),
    /// Case-insensitive globs against each occurrence of the header. `name` is
    /// `None` when it is not a valid header name (then nothing matches).
    Header {
        name: Option<HeaderName>,
        values: Box<[Glob]>,
    },
    /// Exact, case-sensitive methods.
    Method(Box<[Method]>),
    /// Key/value globs; a pair matches if any query parameter matches it.
    Query(Box<[QueryPair]>),
    /// CIDRs containing the TCP peer.
    SourceIp(Box<[IpNet]>),
}

#[derive(Debug)]
struct QueryPair {
    /// `None` matches any key.
    key: Option<Glob>,
    value: Glob,
}

impl Matcher {
    fn new(condition: &Condition) -> Matcher {
        let globs = |values: &[String], case| -> Box<[Glob]> {
            values
                .iter()
                .map(|v| Glob::new(v, case, Syntax::Plain))
                .collect()
        };
        match condition {
            Condition::HostHeader(values) => Matcher::Host(globs(values, Case::Insensitive)),
            Condition::PathPattern(values) => Matcher::Path(globs(values, Case::Sensitive)),
            Condition::HttpHeader { name, values } => Matcher::Header {
                name: HeaderName::from_bytes(name.as_bytes()).ok(),
                values: globs(values, Case::Insensitive),
            },
            Condition::HttpRequestMethod(values) => Matcher::Method(
                values
                    .iter()
                    .filter_map(|v| Method::from_bytes(v.as_bytes()).ok())
                    .collect(),
            ),
            Condition::QueryString(pairs) => Matcher::Query(
                pairs
                    .iter()
                    .map(|(key, value)| QueryPair {
                        key: key
                            .as_deref()
                            .map(|k| Glob::new(k, Case::Insensitive, Syntax::Query)),
                        value: Glob::new(value, Case::Insensitive, Syntax::Query),
                    })
                    .collect(),
            ),
            Condition::SourceIp(nets) => Matcher::SourceIp(nets.as_slice().into()),
        }
    }

    /// A rough evaluation cost, to try cheap conditions first.
    fn cost(&self) -> u8 {
        match self {
            Matcher::Method(_) => 0,
            Matcher::SourceIp(_) => 1,
            Matcher::Host(_) => 2,
            Matcher::Path(_) => 3,
            Matcher::Header { .. } => 4,
            Matcher::Query(_) => 5,
        }
    }

    fn matches(&self, request: &RequestView<'_>) -> bool {
        match self {
            Matcher::Host(globs) => request
                .host
                .is_some_and(|host| globs.iter().any(|g| g.matches(host))),
            Matcher::Path(globs) => globs.iter().any(|g| g.matches(request.path)),
            Matcher::Header { name, values } => name.as_ref().is_some_and(|name| {
                request
                    .head
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|v| values.iter().any(|g| g.matches(v.as_bytes())))
            }),
            Matcher::Method(methods) => methods.contains(&request.head.method),
            // One pass over the query (the pairs are few), trying each pair.
            Matcher::Query(pairs) => request.query_pairs().any(|(key, value)| {
                pairs.iter().any(|pair| {
                    pair.key
                        .as_ref()
                        .is_none_or(|k| matches_uri_component(k, key))
                        && matches_uri_component(&pair.value, value)
                })
            }),
            Matcher::SourceIp(nets) => source_ip_matches(nets, request.source),
        }
    }
}

/// Whether a CIDR holds the peer. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, as a
/// dual-stack socket reports IPv4 clients) is also tried as its IPv4 address; a
/// plain IPv4 peer never matches an IPv6 CIDR.
fn source_ip_matches(nets: &[IpNet], source: IpAddr) -> bool {
    let v4 = match source.to_canonical() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    nets.iter().any(|net| match (net, source) {
        (IpNet::V4(net), _) => v4.is_some_and(|a| net.contains(&a)),
        (IpNet::V6(net), IpAddr::V6(a)) => net.contains(&a),
        (IpNet::V6(_), IpAddr::V4(_)) => false,
    })
}
