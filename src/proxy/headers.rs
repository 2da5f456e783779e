//! Header rewriting toward targets and back: hop-by-hop headers, X-Forwarded-*,
//! Host, and X-Amzn-Trace-Id, as ALB does it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, HOST, TE, TRAILER, UPGRADE,
};

use crate::config::model::{Protocol, XffMode};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
/// Internal marker between the desync verdict and [`Forwarded::apply`]: send
/// `Connection: close` so the target connection is not reused. Never leaves the process.
pub static X_ALBATROSS_CLOSE_TARGET: HeaderName =
    HeaderName::from_static("x-albatross-close-target");

/// ALB answers 463 when X-Forwarded-For already holds more than this many addresses.
pub const MAX_XFF_ENTRIES: usize = 30;

const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "te",
];

/// Is this an HTTP/1.1 upgrade request (`Connection: upgrade` plus an `Upgrade` header)?
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

/// Does any `Connection` header list `token` (case-insensitive)?
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): the fixed list, `Trailer`, and every
/// header named in `Connection`. With `keep_upgrade`, `Connection: upgrade` and
/// `Upgrade` survive, so an upgrade handshake can pass through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    headers.remove(TRAILER);
    for name in HOP_BY_HOP {
        if name == "te" {
            headers.remove(TE);
        } else {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// ALB's `drop_invalid_header_fields`: remove headers whose names are not `[-A-Za-z0-9]+`.
pub fn drop_invalid_header_fields(headers: &mut HeaderMap) {
    let is_valid = |n: &HeaderName| {
        n.as_str()
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_alphanumeric())
    };
    if headers.keys().all(is_valid) {
        return;
    }
    let invalid: Vec<HeaderName> = headers.keys().filter(|n| !is_valid(n)).cloned().collect();
    for name in invalid {
        tracing::debug!(header = %name, "Dropped an invalid header field.");
        headers.remove(name);
    }
}

/// HTTP/2 requests carry the host in `:authority`; targets speak HTTP/1.1 and need a
/// `Host` header, which ALB writes from it.
pub fn host_from_authority<B>(req: &mut http::Request<B>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    let value = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(v) = value {
        req.headers_mut().insert(HOST, v);
    }
}

/// Count the addresses in every X-Forwarded-For header.
pub fn xff_entries(headers: &HeaderMap) -> usize {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .filter(|s| s.iter().any(|b| !b.is_ascii_whitespace()))
                .count()
        })
        .sum()
}

/// What ALB adds toward the target for one request.
pub struct Forwarded {
    pub client: SocketAddr,
    pub protocol: Protocol,
    /// The listener port the client connected to.
    pub port: u16,
    pub xff_mode: XffMode,
    pub xff_client_port: bool,
    pub preserve_host_header: bool,
}

impl Forwarded {
    /// Apply X-Forwarded-For/-Proto/-Port, the Host rule and the trace id.
    /// `authority` is the absolute-form URI's authority, when the request line had one.
    pub fn apply(&self, headers: &mut HeaderMap, authority: Option<&str>) {
        if headers.remove(&X_ALBATROSS_CLOSE_TARGET).is_some() && !headers.contains_key(CONNECTION)
        {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // The load balancer answered `100 Continue` itself (hyper does, as soon as the
        // body is read for forwarding); the target must not wait for its own.
        headers.remove(EXPECT);
        self.apply_xff(headers);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.protocol.scheme()),
        );
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(self.port));
        if !self.preserve_host_header {
            self.rewrite_host(headers, authority);
        }
        apply_trace_id(headers);
    }

    fn apply_xff(&self, headers: &mut HeaderMap) {
        match self.xff_mode {
            XffMode::Preserve => {}
            XffMode::Remove => {
                headers.remove(&X_FORWARDED_FOR);
            }
            XffMode::Append => {
                let ip = self.client.ip().to_canonical();
                let me = match (self.xff_client_port, ip) {
                    (false, ip) => ip.to_string(),
                    (true, std::net::IpAddr::V4(v4)) => format!("{v4}:{}", self.client.port()),
                    (true, std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", self.client.port()),
                };
                let mut joined = String::new();
                for v in headers.get_all(&X_FORWARDED_FOR) {
                    if let Ok(s) = v.to_str() {
                        let s = s.trim();
                        if !s.is_empty() {
                            joined.push_str(s);
                            joined.push_str(", ");
                        }
                    }
                }
                joined.push_str(&me);
                if let Ok(v) = HeaderValue::from_str(&joined) {
                    headers.insert(X_FORWARDED_FOR.clone(), v);
                }
            }
        }
    }

    /// ALB's Host rule with `preserve_host_header` off: lower-case the host; on ports 80
    /// and 443 strip any port, on other listener ports append `:<port>` when absent.
    /// An absolute-form request line wins over the Host header.
    fn rewrite_host(&self, headers: &mut HeaderMap, authority: Option<&str>) {
        let host = match authority {
            Some(a) => a.to_string(),
            None => match headers.get(HOST).and_then(|v| v.to_str().ok()) {
                Some(h) => h.to_string(),
                None => return,
            },
        };
        let (name, port) = split_host_port(&host);
        let name = name.to_ascii_lowercase();
        let value = if self.port == 80 || self.port == 443 {
            name
        } else {
            match port {
                Some(p) => format!("{name}:{p}"),
                None => format!("{name}:{}", self.port),
            }
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HOST, v);
        }
    }
}

/// Split `host[:port]`, keeping IPv6 literals in brackets intact.
pub fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => {
                let rest = &host[end + 1..];
                (&host[..=end], rest.strip_prefix(':'))
            }
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (host, None),
        }
    }
}

/// A fresh trace id `1-<8 hex epoch seconds>-<24 hex random>`.
pub fn new_trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    let r: u128 = rand::random::<u128>() & ((1u128 << 96) - 1);
    format!("1-{secs:08x}-{r:024x}")
}

/// X-Amzn-Trace-Id as ALB sets it: add `Root=` when absent; when a Root arrives, put
/// (or replace) `Self=` in front and keep the rest.
pub fn apply_trace_id(headers: &mut HeaderMap) {
    let existing = headers
        .get(&X_AMZN_TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let value = match existing {
        Some(v) if v.split(';').any(|f| f.trim_start().starts_with("Root=")) => {
            let rest: Vec<&str> = v
                .split(';')
                .map(str::trim)
                .filter(|f| !f.starts_with("Self=") && !f.is_empty())
                .collect();
            format!("Self={};{}", new_trace_id(), rest.join(";"))
        }
        _ => format!("Root={}", new_trace_id()),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_AMZN_TRACE_ID.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(mode: XffMode, port: u16) -> Forwarded {
        Forwarded {
            client: "10.1.2.3:5555".parse().unwrap(),
            protocol: Protocol::Https,
            port,
            xff_mode: mode,
            xff_client_port: false,
            preserve_host_header: false,
        }
    }

    #[test]
    fn xff_append_preserve_remove() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        fwd(XffMode::Append, 443).apply(&mut h, None);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PORT], "443");

        let mut h = HeaderMap::new();
        fwd(XffMode::Preserve, 443).apply(&mut h, None);
        assert!(!h.contains_key(&X_FORWARDED_FOR));

        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        fwd(XffMode::Remove, 443).apply(&mut h, None);
        assert!(!h.contains_key(&X_FORWARDED_FOR));
    }

    #[test]
    fn xff_client_port_brackets_ipv6() {
        let mut f = fwd(XffMode::Append, 80);
        f.xff_client_port = true;
        f.client = "[::1]:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        f.apply(&mut h, None);
        assert_eq!(h[&X_FORWARDED_FOR], "[::1]:4000");
    }

    #[test]
    fn host_rule() {
        let cases = [
            (443, "Example.com", "example.com"),
            (80, "example.com:80", "example.com"),
            (8080, "example.com", "example.com:8080"),
            (8080, "example.com:9", "example.com:9"),
            (8443, "[::1]", "[::1]:8443"),
        ];
        for (port, given, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_str(given).unwrap());
            fwd(XffMode::Append, port).apply(&mut h, None);
            assert_eq!(h[HOST], want, "port {port} host {given}");
        }
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("example.com"));
        fwd(XffMode::Append, 443).apply(&mut h, Some("dns_name"));
        assert_eq!(h[HOST], "dns_name");
    }

    #[test]
    fn trace_id_format_and_self() {
        let mut h = HeaderMap::new();
        apply_trace_id(&mut h);
        let v = h[&X_AMZN_TRACE_ID].to_str().unwrap().to_string();
        let id = v.strip_prefix("Root=1-").unwrap();
        let (epoch, rand) = id.split_once('-').unwrap();
        assert_eq!(epoch.len(), 8);
        assert_eq!(rand.len(), 24);
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));

        let mut h = HeaderMap::new();
        h.insert(
            &X_AMZN_TRACE_ID,
            HeaderValue::from_static(
                "Self=1-0-0;Root=1-63441c4a-abcdef012345678912345678;CalledFrom=app",
            ),
        );
        apply_trace_id(&mut h);
        let v = h[&X_AMZN_TRACE_ID].to_str().unwrap();
        assert!(v.starts_with("Self=1-"));
        assert!(v.ends_with(";Root=1-63441c4a-abcdef012345678912345678;CalledFrom=app"));
        assert_eq!(v.matches("Self=").count(), 1);
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
        assert!(!h.contains_key(CONNECTION));
        assert!(!h.contains_key("keep-alive"));
        assert!(h.contains_key("x-bar"));

        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn xff_count() {
        let mut h = HeaderMap::new();
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("3.3.3.3"));
        assert_eq!(xff_entries(&h), 3);
    }
}
