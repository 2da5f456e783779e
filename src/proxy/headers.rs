//! Header rewriting toward targets and back: hop-by-hop headers, X-Forwarded-*,
//! Host, X-Amzn-Trace-Id and X-Amzn-Mtls-*, as ALB does it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

use crate::config::model::{Protocol, XffMode};
use crate::observe::access_log::MADE_TRACE_ID_LEN;
use crate::tls::{ClientCertificate, MtlsMode};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// A request extension set by the desync verdict (`Ambiguous` in defensive mode): the
/// request goes to the target with `Connection: close`, so the target connection is not
/// reused after it (see [`close_target_connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseTarget;

/// Ask the target to close its connection after this request when the request carries
/// [`CloseTarget`] (and no `Connection` header of its own). Returns whether it asks.
pub fn close_target_connection(extensions: &http::Extensions, headers: &mut HeaderMap) -> bool {
    if extensions.get::<CloseTarget>().is_some() && !headers.contains_key(CONNECTION) {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        return true;
    }
    false
}

/// ALB answers 463 when X-Forwarded-For already holds more than this many addresses.
pub const MAX_XFF_ENTRIES: usize = 30;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop list (RFC 9110 §7.6.1 and the usual extras), besides
/// `Connection`, `Upgrade` and the headers `Connection` names.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    name == TRANSFER_ENCODING
        || name == TE
        || name == TRAILER
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

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
    // One pass over the names finds which kinds are present, so only those are
    // removed: most messages carry none, an upgrade only `Connection` and `Upgrade`.
    let (mut connection, mut upgrade, mut fixed) = (false, false, false);
    for name in headers.keys() {
        if name == CONNECTION {
            connection = true;
        } else if name == UPGRADE {
            upgrade = true;
        } else if is_fixed_hop_by_hop(name) {
            fixed = true;
        }
    }
    if connection {
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
    }
    if fixed {
        for name in [
            &TRANSFER_ENCODING,
            &TE,
            &TRAILER,
            &PROXY_AUTHENTICATE,
            &PROXY_AUTHORIZATION,
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
        ] {
            headers.remove(name);
        }
    }
    if upgrade && !keep_upgrade {
        headers.remove(UPGRADE);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
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
    /// `port` as a header value (made once per listener).
    pub port_value: HeaderValue,
    pub xff_mode: XffMode,
    pub xff_client_port: bool,
    pub preserve_host_header: bool,
    /// The trace id worked out when the request arrived (for the access log), to send
    /// as it is; `None`: work it out now.
    pub trace: Option<HeaderValue>,
    /// On a listener with mutual TLS: the connection's `X-Amzn-Mtls-*` headers.
    pub mtls: Option<Arc<MtlsHeaders>>,
}

/// The `X-Amzn-Mtls-*` headers of one connection on a listener with mutual TLS, worked
/// out once when it opens. Whatever `X-Amzn-Mtls-*` headers a client sends there are
/// removed first, so a target can trust the ones it gets.
#[derive(Debug, Default)]
pub struct MtlsHeaders(Vec<(HeaderName, HeaderValue)>);

impl MtlsHeaders {
    /// ALB's headers for `mode` and the client's certificate: in `verify` mode the
    /// leaf's serial number, issuer, subject, validity and PEM; in `passthrough` mode
    /// the whole chain (none without a certificate).
    pub fn new(mode: MtlsMode, cert: Option<&ClientCertificate>) -> MtlsHeaders {
        let Some(c) = cert else {
            return MtlsHeaders::default();
        };
        let fields: Vec<(&'static str, &str)> = match mode {
            MtlsMode::Off => Vec::new(),
            MtlsMode::Passthrough => vec![("x-amzn-mtls-clientcert", &c.chain)],
            MtlsMode::Verify => vec![
                ("x-amzn-mtls-clientcert-serial-number", &c.serial_number),
                ("x-amzn-mtls-clientcert-issuer", &c.issuer),
                ("x-amzn-mtls-clientcert-subject", &c.subject),
                ("x-amzn-mtls-clientcert-validity", &c.validity),
                ("x-amzn-mtls-clientcert-leaf", &c.leaf),
            ],
        };
        MtlsHeaders(
            fields
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_static(name),
                        HeaderValue::from_bytes(value.as_bytes()).ok()?,
                    ))
                })
                .collect(),
        )
    }

    fn apply(&self, headers: &mut HeaderMap) {
        let sent: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-amzn-mtls-"))
            .cloned()
            .collect();
        for name in sent {
            headers.remove(name);
        }
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

impl Forwarded {
    /// Apply X-Forwarded-For/-Proto/-Port, the Host rule and the trace id.
    /// `authority` is the absolute-form URI's authority, when the request line had one.
    pub fn apply(&self, headers: &mut HeaderMap, authority: Option<&str>) {
        // The load balancer answered `100 Continue` itself (hyper does, as soon as the
        // body is read for forwarding); the target must not wait for its own.
        headers.remove(EXPECT);
        match self.xff_mode {
            XffMode::Preserve => {}
            XffMode::Remove => {
                headers.remove(&X_FORWARDED_FOR);
            }
            // One lookup of the name, whether the header is there or not.
            XffMode::Append => match headers.entry(&X_FORWARDED_FOR) {
                Entry::Vacant(e) => {
                    if let Some(v) = self.xff_value(std::iter::empty()) {
                        e.insert(v);
                    }
                }
                Entry::Occupied(mut e) => {
                    if let Some(v) = self.xff_value(e.iter()) {
                        e.insert(v);
                    }
                }
            },
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.protocol.scheme()),
        );
        headers.insert(X_FORWARDED_PORT.clone(), self.port_value.clone());
        if !self.preserve_host_header {
            if let Some(host) = self.rewritten_host(headers.get(HOST), authority) {
                headers.insert(HOST, host);
            }
        }
        match headers.entry(&X_AMZN_TRACE_ID) {
            Entry::Vacant(e) => {
                e.insert(self.trace_for(None));
            }
            Entry::Occupied(mut e) => {
                let value = self.trace_for(Some(e.get()));
                e.insert(value);
            }
        }
        if let Some(mtls) = &self.mtls {
            mtls.apply(headers);
        }
    }

    /// Write `headers` as HTTP/1 header lines into `out`, with the changes
    /// [`Forwarded::apply`] makes, without changing the map: the raw exchange's way, which
    /// spares the map the insertions and their hashing. A header `apply` replaces is
    /// written in the client's header's place; one the client did not send, after the
    /// client's headers, in `apply`'s order. `default_host`: the `Host` to send (the
    /// target's address, see [`host_value`]) when the request has none.
    pub fn write_headers(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        default_host: Option<SocketAddr>,
        out: &mut Vec<u8>,
    ) {
        let (mut xff, mut proto, mut port, mut trace) = (false, false, false, false);
        // Host: seen yet, and whether the client's values go out as they are.
        let (mut host_seen, mut host_kept) = (false, true);
        for (name, value) in headers {
            match self.role(name) {
                Role::Keep => header_line(out, name.as_str(), value.as_bytes()),
                Role::Drop => {}
                Role::Xff => {
                    if !std::mem::replace(&mut xff, true) {
                        let sent = headers.get_all(&X_FORWARDED_FOR);
                        if let Some(v) = self.xff_value(sent.iter()) {
                            header_line(out, name.as_str(), v.as_bytes());
                        }
                    }
                }
                Role::Proto => {
                    if !std::mem::replace(&mut proto, true) {
                        header_line(out, name.as_str(), self.protocol.scheme().as_bytes());
                    }
                }
                Role::Port => {
                    if !std::mem::replace(&mut port, true) {
                        header_line(out, name.as_str(), self.port_value.as_bytes());
                    }
                }
                Role::Trace => {
                    if !std::mem::replace(&mut trace, true) {
                        let v = self.trace_for(Some(value));
                        header_line(out, name.as_str(), v.as_bytes());
                    }
                }
                Role::Host => {
                    if !std::mem::replace(&mut host_seen, true) && !self.preserve_host_header {
                        if let Some(v) = self.rewritten_host(Some(value), authority) {
                            header_line(out, name.as_str(), v.as_bytes());
                            host_kept = false;
                        }
                    }
                    if host_kept {
                        header_line(out, name.as_str(), value.as_bytes());
                    }
                }
            }
        }
        if self.xff_mode == XffMode::Append && !xff {
            if let Some(v) = self.xff_value(std::iter::empty()) {
                header_line(out, X_FORWARDED_FOR.as_str(), v.as_bytes());
            }
        }
        if !proto {
            header_line(
                out,
                X_FORWARDED_PROTO.as_str(),
                self.protocol.scheme().as_bytes(),
            );
        }
        if !port {
            header_line(out, X_FORWARDED_PORT.as_str(), self.port_value.as_bytes());
        }
        if !host_seen && !self.preserve_host_header {
            if let Some(v) = self.rewritten_host(None, authority) {
                header_line(out, HOST.as_str(), v.as_bytes());
                host_seen = true;
            }
        }
        if !trace {
            header_line(
                out,
                X_AMZN_TRACE_ID.as_str(),
                self.trace_for(None).as_bytes(),
            );
        }
        if let Some(mtls) = &self.mtls {
            for (name, value) in &mtls.0 {
                header_line(out, name.as_str(), value.as_bytes());
            }
        }
        if let (false, Some(target)) = (host_seen, default_host) {
            header_line(out, HOST.as_str(), host_value(target).as_bytes());
        }
    }

    /// What [`Forwarded::write_headers`] does with a header of this name.
    fn role(&self, name: &HeaderName) -> Role {
        if name == HOST {
            Role::Host
        } else if name == EXPECT {
            Role::Drop
        } else if *name == X_FORWARDED_FOR {
            match self.xff_mode {
                XffMode::Preserve => Role::Keep,
                XffMode::Remove => Role::Drop,
                XffMode::Append => Role::Xff,
            }
        } else if *name == X_FORWARDED_PROTO {
            Role::Proto
        } else if *name == X_FORWARDED_PORT {
            Role::Port
        } else if *name == X_AMZN_TRACE_ID {
            Role::Trace
        } else if self.mtls.is_some() && name.as_str().starts_with("x-amzn-mtls-") {
            Role::Drop
        } else {
            Role::Keep
        }
    }

    /// X-Forwarded-For in append mode: the addresses the client sent, then its own.
    fn xff_value<'a>(&self, sent: impl Iterator<Item = &'a HeaderValue>) -> Option<HeaderValue> {
        let mut buf = [0u8; 64];
        let me = client_address(&mut buf, self.client, self.xff_client_port);
        let mut joined: Option<Vec<u8>> = None;
        for v in sent {
            if let Ok(s) = v.to_str() {
                let s = s.trim();
                if !s.is_empty() {
                    let j = joined.get_or_insert_with(|| Vec::with_capacity(64));
                    j.extend_from_slice(s.as_bytes());
                    j.extend_from_slice(b", ");
                }
            }
        }
        match joined {
            None => HeaderValue::from_bytes(me).ok(),
            Some(mut j) => {
                j.extend_from_slice(me);
                HeaderValue::from_maybe_shared(bytes::Bytes::from(j)).ok()
            }
        }
    }

    /// The X-Amzn-Trace-Id to send for a request that came with `sent`, as ALB sets it:
    /// `Root=` when none came; when a Root came, `Self=` put (or replaced) in front and
    /// the rest kept. The one worked out when the request arrived, when there is one.
    fn trace_for(&self, sent: Option<&HeaderValue>) -> HeaderValue {
        match &self.trace {
            Some(value) => value.clone(),
            None => trace_value(sent).0,
        }
    }

    /// ALB's Host rule with `preserve_host_header` off: lower-case the host; on ports 80
    /// and 443 strip any port, on other listener ports append `:<port>` when absent.
    /// An absolute-form request line wins over the Host header. `None`: the client's
    /// Host (`current`) goes as it is.
    fn rewritten_host(
        &self,
        current: Option<&HeaderValue>,
        authority: Option<&str>,
    ) -> Option<HeaderValue> {
        let bare_port = self.port == 80 || self.port == 443;
        let host = match authority {
            Some(a) => a,
            None => {
                let h = current?.to_str().ok()?;
                // Already in the rule's shape (the usual case): nothing to rewrite.
                if !h.bytes().any(|b| b.is_ascii_uppercase())
                    && split_host_port(h).1.is_some() != bare_port
                {
                    return None;
                }
                h
            }
        };
        let (name, port) = split_host_port(host);
        let name = name.to_ascii_lowercase();
        let value = if bare_port {
            name
        } else {
            match port {
                Some(p) => format!("{name}:{p}"),
                None => format!("{name}:{}", self.port),
            }
        };
        HeaderValue::from_str(&value).ok()
    }
}

/// What [`Forwarded::write_headers`] does with one of the client's headers.
#[derive(Clone, Copy)]
enum Role {
    Keep,
    Drop,
    Xff,
    Proto,
    Port,
    Trace,
    Host,
}

/// One `name: value` line of an HTTP/1 head.
fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `Host` naming a target: `ip:port`, or the bare address on port 80 (as an HTTP client
/// writes it for a request that has none, HTTP/1.0's).
pub fn host_value(target: SocketAddr) -> HeaderValue {
    let text = if target.port() == 80 {
        match target.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        }
    } else {
        target.to_string()
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
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
    let mut buf = [0u8; TRACE_ID_LEN];
    write_trace_id(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

const TRACE_ID_LEN: usize = 35;
const _: () = assert!(5 + TRACE_ID_LEN == MADE_TRACE_ID_LEN);

/// Write a fresh trace id into `out`.
fn write_trace_id(out: &mut [u8; TRACE_ID_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    let r: u128 = rand::random::<u128>() & ((1u128 << 96) - 1);
    out[0] = b'1';
    out[1] = b'-';
    for i in 0..8 {
        out[2 + i] = HEX[((secs >> (28 - 4 * i)) & 0xf) as usize];
    }
    out[10] = b'-';
    for i in 0..24 {
        out[11 + i] = HEX[((r >> (92 - 4 * i)) & 0xf) as usize];
    }
}

/// The client's address as X-Forwarded-For lists it (`ip`, or `ip:port` /
/// `[ipv6]:port`), written into `buf`.
fn client_address(buf: &mut [u8; 64], client: SocketAddr, with_port: bool) -> &[u8] {
    use std::io::Write as _;
    let ip = client.ip().to_canonical();
    let mut len = 0;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                len += write_decimal(&mut buf[len..], u32::from(octet));
            }
            if with_port {
                buf[len] = b':';
                len += 1;
                len += write_decimal(&mut buf[len..], u32::from(client.port()));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let mut w = &mut buf[..];
            let _ = if with_port {
                write!(w, "[{v6}]:{}", client.port())
            } else {
                write!(w, "{v6}")
            };
            len = 64 - w.len();
        }
    }
    &buf[..len]
}

/// Write `n` in decimal at the start of `out`; returns the length.
fn write_decimal(out: &mut [u8], mut n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// The X-Amzn-Trace-Id to send for a request that came with `existing`, and the id's
/// text when the load balancer made it whole (no trace id came).
pub fn trace_value(
    existing: Option<&HeaderValue>,
) -> (HeaderValue, Option<[u8; MADE_TRACE_ID_LEN]>) {
    let made = || {
        let mut value = [0u8; MADE_TRACE_ID_LEN];
        value[..5].copy_from_slice(b"Root=");
        let id: &mut [u8; TRACE_ID_LEN] = (&mut value[5..]).try_into().expect("length");
        write_trace_id(id);
        value
    };
    let Some(existing) = existing else {
        let value = made();
        // Letters, digits, `=` and `-`: always a valid value.
        let header = HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static("-"));
        return (header, Some(value));
    };
    let derived = match existing.to_str() {
        Ok(v) if v.split(';').any(|f| f.trim_start().starts_with("Root=")) => {
            let rest: Vec<&str> = v
                .split(';')
                .map(str::trim)
                .filter(|f| !f.starts_with("Self=") && !f.is_empty())
                .collect();
            format!("Self={};{}", new_trace_id(), rest.join(";"))
        }
        _ => format!("Root={}", new_trace_id()),
    };
    match HeaderValue::from_str(&derived) {
        Ok(v) => (v, None),
        Err(_) => trace_value(None),
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
            port_value: HeaderValue::from(port),
            xff_mode: mode,
            xff_client_port: false,
            preserve_host_header: false,
            trace: None,
            mtls: None,
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
    fn xff_addresses_as_written() {
        let cases = [
            ("10.1.2.3:5555", false, "10.1.2.3"),
            ("10.1.2.3:5555", true, "10.1.2.3:5555"),
            ("0.0.0.0:0", true, "0.0.0.0:0"),
            ("255.255.255.255:65535", true, "255.255.255.255:65535"),
            ("[::ffff:1.2.3.4]:80", true, "1.2.3.4:80"),
            ("[2001:db8::1]:443", false, "2001:db8::1"),
            ("[2001:db8::1]:443", true, "[2001:db8::1]:443"),
        ];
        for (client, with_port, want) in cases {
            let mut buf = [0u8; 64];
            let got = client_address(&mut buf, client.parse().unwrap(), with_port);
            assert_eq!(
                std::str::from_utf8(got).unwrap(),
                want,
                "{client} {with_port}"
            );
        }
    }

    #[test]
    fn hop_by_hop_fixed_list_without_connection() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-bar"));

        let mut h = HeaderMap::new();
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[CONNECTION], "upgrade");
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
            (8443, "[::1]:9", "[::1]:9"),
            (443, "example.com", "example.com"),
            (8080, "Example.com:9", "example.com:9"),
            (80, "EXAMPLE.com", "example.com"),
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
        fwd(XffMode::Preserve, 443).apply(&mut h, None);
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
        fwd(XffMode::Preserve, 443).apply(&mut h, None);
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
