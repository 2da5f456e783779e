//! What the load balancer decides about one HTTP/1 request head before hyper sees it:
//! ALB's size limits (414, 400), the HTTP version (505), desync classification and the
//! mode's verdict (400 or close), unsupported `Transfer-Encoding` (501), and how long the
//! body is, so the next head on a kept-alive connection can be found.
//!
//! The rules mirror hyper's own request parsing (httparse with the same header limit,
//! the same `Content-Length`/`Transfer-Encoding` rules), so a head this module passes is
//! one hyper accepts, and anything hyper would refuse gets ALB's page from us instead of
//! hyper's bare `400`.

use super::desync::{self, Classification, Mitigation};
use super::error::RequestError;
use crate::config::model::DesyncMitigationMode;

/// ALB's limit on the request line (longer → 414).
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
/// ALB's limit on one header line (longer → 400).
pub const MAX_HEADER_LINE: usize = 16 * 1024;
/// ALB's limit on the whole head (longer → 400).
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers per request; hyper is configured with the same number.
pub const MAX_HEADERS: usize = 256;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 when there is no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// An upgrade or CONNECT: whatever follows is no longer HTTP/1 to us.
    Tunnel,
}

/// What to do with a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadAction {
    /// Hand it to hyper; with `close_after`, close both connections after the response
    /// (desync `Ambiguous` in defensive mode).
    Serve { close_after: bool },
    /// Answer with this ALB error and close the client connection.
    Reject(RequestError),
}

/// The decision about one head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub classification: Classification,
    pub action: HeadAction,
    pub framing: Framing,
    /// The head to give hyper when it differs from the one received (a
    /// `Transfer-Encoding: identity` line removed).
    pub rewritten: Option<Vec<u8>>,
}

impl Assessment {
    fn reject(classification: Classification, e: RequestError) -> Assessment {
        Assessment {
            classification,
            action: HeadAction::Reject(e),
            framing: Framing::Length(0),
            rewritten: None,
        }
    }
}

/// Finds where a head ends while it arrives, and applies ALB's size limits to it on the
/// way. Each byte is looked at once, however slowly the head trickles in.
#[derive(Debug, Default)]
pub struct HeadScan {
    scanned: usize,
    line_start: usize,
    request_line_seen: bool,
    request_line_len: usize,
}

impl HeadScan {
    /// Nothing of the current head has been looked at yet.
    pub fn is_fresh(&self) -> bool {
        self.scanned == 0
    }

    /// Look at `buf` (the same buffer, grown since the last call): the index after the
    /// head's empty line once it is there, or the error for a head over a limit.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, RequestError> {
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if b != b'\n' {
                continue;
            }
            let line = &buf[self.line_start..i];
            // A line over its limit is refused as soon as it ends, not only while it is
            // the last line received: otherwise the answer would depend on how the
            // bytes were split into reads.
            if !self.request_line_seen {
                self.request_line_seen = true;
                self.request_line_len = i;
                if i > MAX_REQUEST_LINE {
                    return Err(RequestError::UriTooLong);
                }
            } else if line.is_empty() || line == b"\r" {
                *self = HeadScan::default();
                return Ok(Some(i + 1));
            } else if line.len() > MAX_HEADER_LINE {
                return Err(RequestError::BadRequest);
            }
            self.line_start = i + 1;
        }
        self.scanned = buf.len();
        let request_line_len = if self.request_line_seen {
            self.request_line_len
        } else {
            buf.len()
        };
        if request_line_len > MAX_REQUEST_LINE {
            return Err(RequestError::UriTooLong);
        }
        if buf.len() > MAX_HEAD
            || (self.request_line_seen && buf.len() - self.line_start > MAX_HEADER_LINE)
        {
            return Err(RequestError::BadRequest);
        }
        Ok(None)
    }
}

/// Decide about a complete `head` under `mode`.
pub fn assess(head: &[u8], mode: DesyncMitigationMode) -> Assessment {
    let classification = desync::classify(head);
    let reject = |e| Assessment::reject(classification, e);

    // Sizes first: ALB refuses these before looking at anything else.
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    if request_line.len() > MAX_REQUEST_LINE {
        return reject(RequestError::UriTooLong);
    }
    if head.len() > MAX_HEAD || lines.any(|l| l.len() > MAX_HEADER_LINE) {
        return reject(RequestError::BadRequest);
    }
    if is_unsupported_version(request_line) {
        return reject(RequestError::VersionNotSupported);
    }

    // Uninitialised: a head has a few headers, and initialising all 256 slots cost
    // more than parsing them.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        // Not HTTP/1 that hyper (or anyone) can forward: 400 whatever the mode.
        _ => return reject(RequestError::BadRequest),
    }
    let mitigation = desync::mitigation(mode, classification.tier);
    if mitigation == Mitigation::Block {
        return reject(RequestError::BadRequest);
    }

    let http11 = req.version == Some(1);
    let mut te_seen = false;
    let mut te_chunked_last = false;
    let mut te_only_identity = true;
    let mut length: Option<u64> = None;
    let mut upgrade = false;
    let mut connection_upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            let mut last = None;
            for coding in h.value.split(|&b| b == b',').map(trim) {
                if coding.is_empty() {
                    continue;
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    te_only_identity = false;
                } else if !coding.eq_ignore_ascii_case(b"identity") {
                    return reject(RequestError::NotImplemented);
                }
                last = Some(coding);
            }
            te_chunked_last = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // hyper's rule: digits only, and repeated values must agree.
            let Some(n) = parse_length(h.value) else {
                return reject(RequestError::BadRequest);
            };
            if length.is_some_and(|prev| prev != n) {
                return reject(RequestError::BadRequest);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= h
                .value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"upgrade"));
        }
    }

    let mut rewritten = None;
    let framing = if te_seen && te_only_identity {
        // `identity` means "no coding": ALB accepts it; hyper would not, so drop the line.
        rewritten = Some(without_header(head, b"transfer-encoding"));
        Framing::Length(length.unwrap_or(0))
    } else if te_seen {
        if !http11 || !te_chunked_last {
            return reject(RequestError::BadRequest);
        }
        Framing::Chunked
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    let framing = match framing {
        Framing::Length(0) if req.method == Some("CONNECT") => Framing::Tunnel,
        Framing::Length(0) if http11 && upgrade && connection_upgrade => Framing::Tunnel,
        f => f,
    };
    Assessment {
        classification,
        action: HeadAction::Serve {
            close_after: mitigation == Mitigation::AllowThenClose,
        },
        framing,
        rewritten,
    }
}

/// `HTTP/<digit>.<digit>` other than 1.0 and 1.1 (the HTTP/2 preface says `HTTP/2.0`).
fn is_unsupported_version(request_line: &[u8]) -> bool {
    let line = trim(request_line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] => {
            major.is_ascii_digit()
                && minor.is_ascii_digit()
                && !(*major == b'1' && (*minor == b'0' || *minor == b'1'))
        }
        _ => false,
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// `head` without the lines of header `name`.
fn without_header(head: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    for line in head.split_inclusive(|&b| b == b'\n') {
        let is_it = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| line[..c].eq_ignore_ascii_case(name));
        if !is_it {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DesyncMitigationMode::*;

    fn action(head: &str, mode: DesyncMitigationMode) -> HeadAction {
        assess(head.as_bytes(), mode).action
    }

    #[test]
    fn limits_and_versions() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(17000));
        assert_eq!(
            action(&long_uri, Monitor),
            HeadAction::Reject(RequestError::UriTooLong)
        );
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(17000));
        assert_eq!(
            action(&long_header, Monitor),
            HeadAction::Reject(RequestError::BadRequest)
        );
        assert_eq!(
            action("PRI * HTTP/2.0\r\n\r\n", Monitor),
            HeadAction::Reject(RequestError::VersionNotSupported)
        );
        let scan = |buf: &[u8]| HeadScan::default().scan(buf);
        assert_eq!(scan(&[b'a'; 16 * 1024 + 1]), Err(RequestError::UriTooLong));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        many.extend(std::iter::repeat_n(b'x', 16 * 1024 + 1));
        assert_eq!(scan(&many), Err(RequestError::BadRequest));
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    }

    #[test]
    fn framing() {
        let a = assess(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Defensive);
        assert_eq!(a.framing, Framing::Length(5));
        let a = assess(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            Defensive,
        );
        assert_eq!(a.framing, Framing::Chunked);
        let a = assess(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n",
            Defensive,
        );
        assert_eq!(a.framing, Framing::Length(2));
        assert_eq!(
            a.rewritten.as_deref(),
            Some(&b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"[..])
        );
        assert_eq!(
            action(
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Defensive
            ),
            HeadAction::Reject(RequestError::NotImplemented)
        );
        let a = assess(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            Defensive,
        );
        assert_eq!(a.framing, Framing::Tunnel);
    }

    #[test]
    fn head_end() {
        let scan = |buf: &[u8]| HeadScan::default().scan(buf);
        assert_eq!(scan(b"GET / HTTP/1.1\r\n\r\nrest"), Ok(Some(18)));
        assert_eq!(scan(b"GET / HTTP/1.1\n\nrest"), Ok(Some(16)));
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        // Byte by byte, the end is found at the same place.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nnext";
        let mut s = HeadScan::default();
        let found = (1..=head.len()).find_map(|n| s.scan(&head[..n]).unwrap());
        assert_eq!(found, Some(27));
    }
}
