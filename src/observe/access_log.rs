//! One ALB access-log entry and its line: ALB's fields 1–30 in ALB's order with ALB's
//! quoting and missing-value conventions, then fields 31–33 (request transforms, which
//! albatross does not run) as `"-"`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};

use super::log_file::Line;

/// Field 13 as the client sent it, kept raw: the writer formats it. Its host and path
/// are in the record's [`RequestTexts`].
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub method: Method,
    /// `http` / `https`.
    pub scheme: &'static str,
    /// The listener's port (it replaces the Host header's).
    pub port: u16,
    pub version: Version,
}

impl RequestLine {
    /// The line, escaped for its quotes.
    fn write_escaped(&self, texts: &RequestTexts, out: &mut Vec<u8>) {
        push_str(out, self.method.as_str());
        out.push(b' ');
        push_str(out, self.scheme);
        push_str(out, "://");
        escaped_bytes(out, host_only(texts.host()));
        out.push(b':');
        int(out, self.port);
        match texts.path() {
            [] => out.push(b'/'),
            path => escaped_bytes(out, path),
        }
        out.push(b' ');
        push_str(
            out,
            match self.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
        );
    }
}

/// The texts a line takes from the request: the host (or the absolute-form authority),
/// the path and query, the user agent and the trace id the client sent. Copied as the
/// request arrives, not shared: a header value shares the connection's read buffer, and
/// a line waiting for the log's thread would keep hyper from reusing that buffer for
/// the next request. A recycled record keeps the buffer, so copying allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct RequestTexts {
    buf: Vec<u8>,
    /// Where the host, the path, the user agent and the trace id end in `buf`.
    ends: [usize; 4],
}

impl RequestTexts {
    /// The request's texts; no trace id yet.
    pub fn set(&mut self, host: &[u8], path: &[u8], user_agent: &[u8]) {
        self.buf.clear();
        for (i, text) in [host, path, user_agent].into_iter().enumerate() {
            self.buf.extend_from_slice(text);
            self.ends[i] = self.buf.len();
        }
        self.ends[3] = self.buf.len();
    }

    /// The trace id the client sent (as forwarded), for [`TraceId::Sent`].
    pub fn set_trace_id(&mut self, trace_id: &[u8]) {
        self.buf.truncate(self.ends[2]);
        self.buf.extend_from_slice(trace_id);
        self.ends[3] = self.buf.len();
    }

    /// Forget the texts (the request could not be read), keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends = [0; 4];
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.buf.get(start..self.ends[i]).unwrap_or_default()
    }

    fn host(&self) -> &[u8] {
        self.part(0)
    }

    fn path(&self) -> &[u8] {
        self.part(1)
    }

    fn user_agent(&self) -> &[u8] {
        self.part(2)
    }

    fn trace_id(&self) -> &[u8] {
        self.part(3)
    }
}

/// `host` without its port (`[::1]:80` → `[::1]`).
fn host_only(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |i| &host[..=i]);
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// Field 18, `trace_id`: the `X-Amzn-Trace-Id` the target was sent.
#[derive(Debug, Clone)]
pub enum TraceId {
    /// One the load balancer made (`Root=1-…`), inline.
    Made([u8; MADE_TRACE_ID_LEN]),
    /// The client sent one: the header as it went out is in [`RequestTexts`].
    Sent,
}

/// The length of a trace id the load balancer makes (`Root=1-{8 hex}-{24 hex}`).
pub const MADE_TRACE_ID_LEN: usize = 40;

/// Field 1, `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Https,
    H2,
    Ws,
    Wss,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::H2 => "h2",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }
}

/// Everything one line says. `None` is ALB's missing value for the field (`-`, `"-"`
/// or `-1` as ALB writes it).
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub kind: Kind,
    /// When the response was sent (a tunnel: when it closed).
    pub time: SystemTime,
    /// `app/{name}/{id}`.
    pub elb: Arc<str>,
    pub client: SocketAddr,
    pub target: Option<SocketAddr>,
    pub request_processing_time: Option<Duration>,
    pub target_processing_time: Option<Duration>,
    pub response_processing_time: Option<Duration>,
    pub elb_status_code: Option<u16>,
    pub target_status_code: Option<u16>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// `METHOD scheme://host:port/uri HTTP/x.y`; `None` when the request could not be
    /// parsed (`"- - - "`).
    pub request: Option<RequestLine>,
    /// The request's host, path, user agent (empty: `"-"`) and client-sent trace id.
    pub texts: RequestTexts,
    pub ssl_cipher: Option<&'static str>,
    pub ssl_protocol: Option<&'static str>,
    pub target_group_arn: Option<Arc<str>>,
    pub trace_id: Option<TraceId>,
    /// The SNI host name.
    pub domain_name: Option<Arc<str>>,
    pub chosen_cert_arn: Option<Arc<str>>,
    /// 0 for the default rule.
    pub matched_rule_priority: Option<u32>,
    pub request_creation_time: SystemTime,
    /// `forward`, `redirect`, `fixed-response`.
    pub actions_executed: Option<&'static str>,
    pub redirect_url: Option<HeaderValue>,
    pub error_reason: Option<&'static str>,
    pub classification: Option<&'static str>,
    pub classification_reason: Option<String>,
    pub conn_trace_id: super::ConnTraceId,
    /// A tunnel's line written when it opened ([`AccessRecord::hold`]); when set, the
    /// line is this one with the time, byte counts and error reason filled in.
    pub held: Option<HeldLine>,
}

impl AccessRecord {
    /// The target's text, from the few targets this thread wrote last.
    fn target_text(&self) -> Option<Rc<[u8]>> {
        self.target
            .map(|t| RECENT_TARGETS.with(|c| c.borrow_mut().text(t)))
    }

    /// Field 1 and its space.
    fn write_kind(&self, out: &mut Vec<u8>) {
        push_str(out, self.kind.as_str());
        out.push(b' ');
    }

    /// Fields 3–10, between the time and the byte counts, with their spaces.
    fn write_before_bytes(&self, out: &mut Vec<u8>, target: Option<&[u8]>) {
        let r = self;
        out.push(b' ');
        push_str(out, &r.elb);
        out.push(b' ');
        addr(out, r.client);
        out.push(b' ');
        match target {
            Some(t) => out.extend_from_slice(t),
            None => out.push(b'-'),
        }
        for d in [
            r.request_processing_time,
            r.target_processing_time,
            r.response_processing_time,
        ] {
            out.push(b' ');
            match d {
                Some(d) => seconds3(out, d),
                None => push_str(out, "-1"),
            }
        }
        for code in [r.elb_status_code, r.target_status_code] {
            out.push(b' ');
            match code {
                Some(c) => int(out, c),
                None => out.push(b'-'),
            }
        }
        out.push(b' ');
    }

    /// Fields 11 and 12.
    fn write_bytes(&self, out: &mut Vec<u8>) {
        int(out, self.received_bytes);
        out.push(b' ');
        int(out, self.sent_bytes);
    }

    /// Fields 13–24, between the byte counts and the error reason, with their spaces.
    fn write_before_reason(&self, out: &mut Vec<u8>) {
        let r = self;
        out.push(b' ');
        match &r.request {
            Some(line) => {
                out.push(b'"');
                line.write_escaped(&r.texts, out);
                out.push(b'"');
            }
            None => push_str(out, "\"- - - \""),
        }
        out.push(b' ');
        bytes_or_dash(out, r.texts.user_agent());
        out.push(b' ');
        push_str(out, r.ssl_cipher.unwrap_or("-"));
        out.push(b' ');
        push_str(out, r.ssl_protocol.unwrap_or("-"));
        out.push(b' ');
        push_str(out, r.target_group_arn.as_deref().unwrap_or("-"));
        out.push(b' ');
        match &r.trace_id {
            Some(TraceId::Made(made)) => {
                out.push(b'"');
                out.extend_from_slice(made);
                out.push(b'"');
            }
            Some(TraceId::Sent) => bytes_or_dash(out, r.texts.trace_id()),
            None => push_str(out, "\"-\""),
        }
        out.push(b' ');
        quoted_or_dash(out, r.domain_name.as_deref());
        out.push(b' ');
        quoted_or_dash(out, r.chosen_cert_arn.as_deref());
        out.push(b' ');
        match r.matched_rule_priority {
            Some(p) => int(out, p),
            None => out.push(b'-'),
        }
        out.push(b' ');
        time(out, r.request_creation_time);
        out.push(b' ');
        quoted_name_or_dash(out, r.actions_executed);
        out.push(b' ');
        header_or_dash(out, r.redirect_url.as_ref());
        out.push(b' ');
    }

    /// Fields 26 to the end, after the error reason.
    fn write_rest(&self, out: &mut Vec<u8>, target: Option<&[u8]>) {
        let r = self;
        out.push(b' ');
        // target:port_list and target_status_code_list: one entry each (as ALB today).
        match target {
            Some(t) => {
                out.push(b'"');
                out.extend_from_slice(t);
                out.push(b'"');
            }
            None => push_str(out, "\"-\""),
        }
        out.push(b' ');
        match r.target_status_code {
            Some(c) => {
                out.push(b'"');
                int(out, c);
                out.push(b'"');
            }
            None => push_str(out, "\"-\""),
        }
        out.push(b' ');
        quoted_name_or_dash(out, r.classification);
        out.push(b' ');
        quoted_or_dash(out, r.classification_reason.as_deref());
        out.push(b' ');
        r.conn_trace_id.write_to(out);
        push_str(out, " \"-\" \"-\" \"-\"");
    }

    /// The line of a tunnel that just opened, written but for what its close decides
    /// (the time, the byte counts, the error reason), in a buffer of its exact size:
    /// an open tunnel holds this instead of the whole record.
    pub fn hold(&self) -> HeldLine {
        let target = self.target_text();
        let mut text = Vec::with_capacity(512);
        self.write_kind(&mut text);
        let a = text.len();
        self.write_before_bytes(&mut text, target.as_deref());
        let b = text.len();
        self.write_before_reason(&mut text);
        let c = text.len();
        self.write_rest(&mut text, target.as_deref());
        HeldLine {
            text: text.into_boxed_slice(),
            at: [a, b, c].map(|i| u32::try_from(i).unwrap_or(u32::MAX)),
        }
    }

    /// A record that carries `held`'s line: [`Line::write_line`] writes it with this
    /// record's time, byte counts and error reason, and reads nothing else.
    pub fn from_held(held: HeldLine) -> AccessRecord {
        AccessRecord {
            kind: Kind::Ws,
            time: SystemTime::UNIX_EPOCH,
            elb: Arc::clone(no_name()),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            target: None,
            request_processing_time: None,
            target_processing_time: None,
            response_processing_time: None,
            elb_status_code: None,
            target_status_code: None,
            received_bytes: 0,
            sent_bytes: 0,
            request: None,
            texts: RequestTexts::default(),
            ssl_cipher: None,
            ssl_protocol: None,
            target_group_arn: None,
            trace_id: None,
            domain_name: None,
            chosen_cert_arn: None,
            matched_rule_priority: None,
            request_creation_time: SystemTime::UNIX_EPOCH,
            actions_executed: None,
            redirect_url: None,
            error_reason: None,
            classification: None,
            classification_reason: None,
            conn_trace_id: super::ConnTraceId::from_bytes([0; 16]),
            held: Some(held),
        }
    }
}

/// An empty name, shared.
fn no_name() -> &'static Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(""))
}

/// A line written in advance but for its time, byte counts and error reason, which go
/// at the offsets `at` (see [`AccessRecord::hold`]).
#[derive(Debug, Clone)]
pub struct HeldLine {
    text: Box<[u8]>,
    at: [u32; 3],
}

impl Line for AccessRecord {
    /// Written piece by piece (no `format!` machinery): this runs once per request.
    fn write_line(&self, out: &mut Vec<u8>) {
        if let Some(held) = &self.held {
            // A tunnel's line: all but its close was written when it opened.
            let [a, b, c] = held.at.map(|i| i as usize);
            out.extend_from_slice(&held.text[..a]);
            time(out, self.time);
            out.extend_from_slice(&held.text[a..b]);
            self.write_bytes(out);
            out.extend_from_slice(&held.text[b..c]);
            quoted_name_or_dash(out, self.error_reason);
            out.extend_from_slice(&held.text[c..]);
            return;
        }
        let target = self.target_text();
        self.write_kind(out);
        time(out, self.time);
        self.write_before_bytes(out, target.as_deref());
        self.write_bytes(out);
        self.write_before_reason(out);
        quoted_name_or_dash(out, self.error_reason);
        self.write_rest(out, target.as_deref());
    }

    /// Drops what the record shares with requests and the running model: the header
    /// values and URI (which hold a request's buffers), names and ARNs.
    fn recycle(&mut self) -> bool {
        self.held = None;
        self.request = None;
        self.texts.clear();
        self.target_group_arn = None;
        self.trace_id = None;
        self.domain_name = None;
        self.chosen_cert_arn = None;
        self.redirect_url = None;
        self.classification_reason = None;
        true
    }
}

/// The texts of the last few targets a log thread wrote (`ip:port`): a load balancer's
/// lines name few targets, each twice per line. Shared with `Rc`: the cache never leaves
/// its thread.
struct RecentTargets {
    entries: Vec<(SocketAddr, Rc<[u8]>)>,
    next: usize,
}

/// How many targets a log thread remembers.
const RECENT_TARGETS_KEPT: usize = 8;

impl RecentTargets {
    const fn new() -> RecentTargets {
        RecentTargets {
            entries: Vec::new(),
            next: 0,
        }
    }

    fn text(&mut self, a: SocketAddr) -> Rc<[u8]> {
        if let Some((_, text)) = self.entries.iter().find(|(k, _)| *k == a) {
            return text.clone();
        }
        let mut text = Vec::with_capacity(24);
        addr(&mut text, a);
        let text: Rc<[u8]> = Rc::from(text);
        if self.entries.len() < RECENT_TARGETS_KEPT {
            self.entries.push((a, text.clone()));
        } else {
            self.entries[self.next] = (a, text.clone());
            self.next = (self.next + 1) % RECENT_TARGETS_KEPT;
        }
        text
    }
}

std::thread_local! {
    static RECENT_TARGETS: std::cell::RefCell<RecentTargets> =
        const { std::cell::RefCell::new(RecentTargets::new()) };
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    push_str(out, itoa::Buffer::new().format(n));
}

/// `ip:port`, `[ipv6]:port`. An IPv4 address is put together on the stack and appended
/// once.
fn addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let mut text = [0u8; 21];
            let mut len = 0;
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                len += small_decimal(&mut text[len..len + 3], octet);
            }
            text[len] = b':';
            len += 1;
            let port = match v4.port() {
                0..=9 => 1,
                10..=99 => 2,
                100..=999 => 3,
                1_000..=9_999 => 4,
                _ => 5,
            };
            fixed_digits(&mut text[len..len + port], u64::from(v4.port()));
            len += port;
            out.extend_from_slice(&text[..len]);
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}]:", v6.ip());
            int(out, v6.port());
        }
    }
}

/// `n` in decimal at the start of `digits` (room for three); how many digits.
fn small_decimal(digits: &mut [u8], n: u8) -> usize {
    if n >= 100 {
        digits[0] = b'0' + n / 100;
        digits[1] = b'0' + n / 10 % 10;
        digits[2] = b'0' + n % 10;
        3
    } else if n >= 10 {
        digits[0] = b'0' + n / 10;
        digits[1] = b'0' + n % 10;
        2
    } else {
        digits[0] = b'0' + n;
        1
    }
}

/// Seconds with three decimals (`0.001`), rounded to the millisecond.
fn seconds3(out: &mut Vec<u8>, d: Duration) {
    let ms = (d.as_secs() * 1_000_000 + u64::from(d.subsec_micros()) + 500) / 1000;
    int(out, ms / 1000);
    let mut frac = *b".000";
    fixed_digits(&mut frac[1..], ms % 1000);
    out.extend_from_slice(&frac);
}

/// `n` in decimal, zero-padded to fill `digits` (its higher digits dropped).
fn fixed_digits(digits: &mut [u8], mut n: u64) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

std::thread_local! {
    /// The last second formatted, and its text (`2018-07-02T22:23:00`): lines come in
    /// bursts within one second.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 19])> =
        const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// ISO-8601 in UTC with microseconds, as ALB writes times: put together on the stack
/// and appended once.
fn time(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let (last, seconds) = LAST_SECOND.get();
    if last == secs {
        text[..19].copy_from_slice(&seconds);
    } else {
        let formatted = humantime::format_rfc3339_seconds(t).to_string();
        if let Some(seconds) = formatted.as_bytes().get(..19) {
            text[..19].copy_from_slice(seconds);
            LAST_SECOND.set((secs, text[..19].try_into().unwrap_or([b'0'; 19])));
        }
    }
    fixed_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    out.extend_from_slice(&text);
}

fn header_or_dash(out: &mut Vec<u8>, value: Option<&HeaderValue>) {
    bytes_or_dash(out, value.map_or(&[], |v| v.as_bytes()))
}

/// `"value"` escaped, or `"-"` for an empty value.
fn bytes_or_dash(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        push_str(out, "\"-\"");
        return;
    }
    out.push(b'"');
    escaped_bytes(out, value);
    out.push(b'"');
}

/// A name albatross itself gives (`forward`, a reason code): nothing in it to escape.
fn quoted_name_or_dash(out: &mut Vec<u8>, value: Option<&'static str>) {
    match value {
        Some(name) => {
            debug_assert!(name.bytes().all(|b| AS_IS[usize::from(b)] == ASCII));
            out.push(b'"');
            push_str(out, name);
            out.push(b'"');
        }
        None => push_str(out, "\"-\""),
    }
}

fn quoted_or_dash(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) if !v.is_empty() => quoted(out, v),
        _ => push_str(out, "\"-\""),
    }
}

/// `"value"`, with `"` and `\` escaped by a backslash and control bytes as `\xNN`, so a
/// line stays one line and its fields stay apart.
fn quoted(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escaped(out, value);
    out.push(b'"');
}

/// How a byte goes into a quoted field: [`ASCII`] as it is; [`UTF8`] as it is within
/// valid UTF-8 text; anything else escaped (`"`, `\\`, control bytes).
const AS_IS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'"' | b'\\' | 0x7f => 0,
            0x20..=0x7e => ASCII,
            0x80..=0xff => UTF8,
            _ => 0,
        };
        b += 1;
    }
    table
};
const ASCII: u8 = 1;
const UTF8: u8 = 2;

fn escaped(out: &mut Vec<u8>, value: &str) {
    // Valid UTF-8 text: anything but `"`, `\` and control bytes goes as it is.
    if value.bytes().all(|b| AS_IS[usize::from(b)] != 0) {
        push_str(out, value);
        return;
    }
    escaped_bytes(out, value.as_bytes())
}

/// [`escaped`] for bytes that may not be UTF-8 (header values): invalid sequences are
/// written as U+FFFD.
fn escaped_bytes(out: &mut Vec<u8>, value: &[u8]) {
    // Usual case, one pass: printable ASCII with nothing to escape.
    if value.iter().all(|&b| AS_IS[usize::from(b)] == ASCII) {
        out.extend_from_slice(value);
        return;
    }
    for c in String::from_utf8_lossy(value).chars() {
        match c {
            '"' => push_str(out, "\\\""),
            '\\' => push_str(out, "\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => push_str(out, c.encode_utf8(&mut [0; 4])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn target_texts_are_right_whether_remembered_or_not() {
        let longest: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let mut recent = RecentTargets::new();
        // Twenty targets, twice over: more than are remembered.
        for _ in 0..2 {
            for port in 9000..9020u16 {
                let a = SocketAddr::from(([10, 0, 0, 1], port));
                assert_eq!(&*recent.text(a), a.to_string().as_bytes());
            }
        }
        assert_eq!(&*recent.text(longest), longest.to_string().as_bytes());
        assert_eq!(recent.entries.len(), RECENT_TARGETS_KEPT);
    }

    #[test]
    fn numbers_addresses_and_times_are_written_as_alb_writes_them() {
        let written = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.2.30.4:8080",
            "[::1]:443",
        ] {
            assert_eq!(written(&|o| addr(o, a.parse().unwrap())), a);
        }
        for (us, text) in [
            (0, "0.000"),
            (499, "0.000"),
            (500, "0.001"),
            (1_999_600, "2.000"),
            (62_345_678, "62.346"),
        ] {
            assert_eq!(written(&|o| seconds3(o, Duration::from_micros(us))), text);
        }
        assert_eq!(
            written(&|o| time(o, at(1_530_570_168_000_007))),
            "2018-07-02T22:22:48.000007Z"
        );
    }

    fn at(us: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(us)
    }

    /// A line held for a tunnel and finished at its close is the line the whole record
    /// would have written, whatever the close's time, byte counts and error reason.
    #[test]
    fn a_held_line_is_the_records_line() {
        let mut record = sample();
        record.kind = Kind::Wss;
        let held = record.hold();
        for (time, received, sent, reason) in [
            (at(1_530_570_999_000_001), 34, 366, None),
            (
                at(1_600_000_000_123_456),
                12_345_678,
                9,
                Some("disconnect_reset"),
            ),
        ] {
            record.time = time;
            record.received_bytes = received;
            record.sent_bytes = sent;
            record.error_reason = reason;
            let mut finished = AccessRecord::from_held(held.clone());
            finished.time = time;
            finished.received_bytes = received;
            finished.sent_bytes = sent;
            finished.error_reason = reason;
            let (mut whole, mut from_held) = (Vec::new(), Vec::new());
            record.write_line(&mut whole);
            finished.write_line(&mut from_held);
            assert_eq!(
                String::from_utf8(from_held).unwrap(),
                String::from_utf8(whole).unwrap()
            );
        }
    }

    /// ALB's documented example of an http line.
    fn sample() -> AccessRecord {
        AccessRecord {
            kind: Kind::Http,
            time: at(1_530_570_180_186_641),
            elb: Arc::from("app/my-lb/50dc6c495c0c9188"),
            client: "192.168.131.39:2817".parse().unwrap(),
            target: Some("10.0.0.1:80".parse().unwrap()),
            request_processing_time: Some(Duration::ZERO),
            target_processing_time: Some(Duration::from_millis(1)),
            response_processing_time: Some(Duration::ZERO),
            elb_status_code: Some(200),
            target_status_code: Some(200),
            received_bytes: 34,
            sent_bytes: 366,
            request: Some(RequestLine {
                method: Method::GET,
                scheme: "http",
                port: 80,
                version: Version::HTTP_11,
            }),
            texts: texts(b"www.example.com:8080", b"", b"curl/7.46.0"),
            ssl_cipher: None,
            ssl_protocol: None,
            target_group_arn: Some(Arc::from("arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067")),
            trace_id: Some(TraceId::Made(*b"Root=1-58337262-36d228ad5d99923122bbe354")),
            domain_name: None,
            chosen_cert_arn: None,
            matched_rule_priority: Some(0),
            request_creation_time: at(1_530_570_168_364_000),
            actions_executed: Some("forward"),
            redirect_url: None,
            error_reason: None,
            classification: None,
            classification_reason: None,
            conn_trace_id: crate::observe::ConnTraceId::from_bytes([0xab; 16]),
            held: None,
        }
    }

    #[test]
    fn an_http_line_has_albs_fields_in_albs_order() {
        let mut line = Vec::new();
        sample().write_line(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            "http 2018-07-02T22:23:00.186641Z app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \
             \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \
             \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 2018-07-02T22:22:48.364000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" TID_abababababababababababababababab \"-\" \"-\" \"-\""
        );
        // 33 fields once the quoted ones are taken whole.
        let fields = split_fields(&line);
        assert_eq!(fields.len(), 33, "{fields:?}");
    }

    #[test]
    fn missing_values_and_quotes_inside_fields() {
        let record = AccessRecord {
            kind: Kind::Https,
            time: at(0),
            elb: Arc::from("app/a/b"),
            client: "[::1]:5000".parse().unwrap(),
            target: None,
            request_processing_time: None,
            target_processing_time: None,
            response_processing_time: None,
            elb_status_code: Some(400),
            target_status_code: None,
            received_bytes: 10,
            sent_bytes: 0,
            request: None,
            texts: texts(b"", b"", b"say \"hi\"\t"),
            ssl_cipher: Some("ECDHE-RSA-AES128-GCM-SHA256"),
            ssl_protocol: Some("TLSv1.2"),
            target_group_arn: None,
            trace_id: None,
            domain_name: Some(Arc::from("example.com")),
            chosen_cert_arn: None,
            matched_rule_priority: None,
            request_creation_time: at(0),
            actions_executed: None,
            redirect_url: None,
            error_reason: None,
            classification: Some("Severe"),
            classification_reason: Some("BadHeader".into()),
            conn_trace_id: crate::observe::ConnTraceId::from_bytes([0xab; 16]),
            held: None,
        };
        let mut line = Vec::new();
        record.write_line(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with("https 1970-01-01T00:00:00.000000Z app/a/b [::1]:5000 - -1 -1 -1 400 - 10 0 \"- - - \" \"say \\\"hi\\\"\\x09\" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 - \"-\" \"example.com\" \"-\" - "), "{line}");
        assert!(
            line.ends_with(" \"-\" \"-\" \"Severe\" \"BadHeader\" TID_abababababababababababababababab \"-\" \"-\" \"-\""),
            "{line}"
        );
        assert_eq!(split_fields(&line).len(), 33);
    }

    fn texts(host: &[u8], path: &[u8], user_agent: &[u8]) -> RequestTexts {
        let mut texts = RequestTexts::default();
        texts.set(host, path, user_agent);
        texts
    }

    #[test]
    fn request_texts_are_kept_apart_and_a_sent_trace_id_follows_them() {
        let mut t = texts(b"[::1]:443", b"/a?b=\"c\"", b"");
        assert_eq!(
            (t.host(), t.path(), t.user_agent()),
            (&b"[::1]:443"[..], &b"/a?b=\"c\""[..], &b""[..])
        );
        assert_eq!(t.trace_id(), b"");
        t.set_trace_id(b"Self=1-1-1;Root=1-2-3");
        t.set_trace_id(b"Root=1-4-5");
        assert_eq!(t.trace_id(), b"Root=1-4-5");
        assert_eq!(t.user_agent(), b"");
        let kept = t.buf.capacity();
        t.clear();
        assert_eq!(
            (t.host(), t.path(), t.trace_id()),
            (&b""[..], &b""[..], &b""[..])
        );
        assert_eq!(t.buf.capacity(), kept, "clearing keeps the buffer");

        let line = |t: &RequestTexts, trace: Option<TraceId>| {
            let mut record = sample();
            record.texts = t.clone();
            record.trace_id = trace;
            let mut out = Vec::new();
            record.write_line(&mut out);
            split_fields(&String::from_utf8(out).unwrap())
        };
        let mut t = texts(b"[::1]:443", b"/a?b=\"c\"", b"");
        t.set_trace_id(b"Self=1-1-1;Root=1-2-3");
        let fields = line(&t, Some(TraceId::Sent));
        assert_eq!(fields[12], "GET http://[::1]:80/a?b=\"c\" HTTP/1.1");
        assert_eq!(fields[13], "-", "an empty user agent is ALB's \"-\"");
        assert_eq!(fields[17], "Self=1-1-1;Root=1-2-3");
        let fields = line(&texts(b"h", b"", b"ua"), None);
        assert_eq!(
            fields[12], "GET http://h:80/ HTTP/1.1",
            "an empty path is /"
        );
        assert_eq!(fields[13], "ua");
        assert_eq!(fields[17], "-");
    }

    /// Split a line as Athena's regex does: quoted fields whole, others by spaces.
    fn split_fields(line: &str) -> Vec<String> {
        let mut fields = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c == ' ' {
                chars.next();
                continue;
            }
            let mut field = String::new();
            if c == '"' {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                field.push(n);
                            }
                        }
                        '"' => break,
                        c => field.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    field.push(c);
                    chars.next();
                }
            }
            fields.push(field);
        }
        fields
    }
}
