//! Request heads: [`HeadScan::scan`] finding where a head ends while it arrives, then
//! [`head::assess`] deciding about it under each desync mitigation mode, called the way
//! the connection reader (`proxy::client_io`) calls them.

use albatross::config::model::DesyncMitigationMode::{self, Defensive, Monitor, Strictest};
use albatross::proxy::desync::{self, Mitigation, RequestSafetyTier};
use albatross::proxy::error::RequestError;
use albatross::proxy::head::{
    self, Assessment, Framing, HeadAction, HeadScan, MAX_HEAD, MAX_HEADER_LINE, MAX_REQUEST_LINE,
};
use proptest::prelude::*;

const MODES: [DesyncMitigationMode; 3] = [Monitor, Defensive, Strictest];

/// What the reader decides about the bytes received so far, for each mode.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// No complete head yet, and no limit passed.
    Waiting,
    /// A complete head of `end` bytes after `skipped` blank-line bytes, with the
    /// assessment of each mode in [`MODES`] order.
    Head {
        skipped: usize,
        end: usize,
        assessments: Vec<Assessment>,
    },
    /// Refused before the head was complete: the same answer in every mode.
    Refused(RequestError),
}

/// What one mode answers: the served head (skipped bytes, end, assessment) or the error.
type Answer = Result<(usize, usize, Assessment), RequestError>;

impl Verdict {
    /// The answer of each mode: the error, or the served head's assessment. A head
    /// refused while it arrived and the same head refused once complete are the same
    /// answer to the client.
    fn answers(&self) -> Option<Vec<Answer>> {
        match self {
            Verdict::Waiting => None,
            Verdict::Refused(e) => Some(vec![Err(*e); MODES.len()]),
            Verdict::Head {
                skipped,
                end,
                assessments,
            } => Some(
                assessments
                    .iter()
                    .map(|a| match a.action {
                        HeadAction::Reject(e) => Err(e),
                        HeadAction::Serve { .. } => Ok((*skipped, *end, a.clone())),
                    })
                    .collect(),
            ),
        }
    }
}

/// The connection reader's head state: blank lines before a request line are skipped
/// while nothing of the head has been scanned, then the scanner looks at the whole
/// pending buffer each time it grows; a complete head is assessed, a refused one
/// classified for the log.
#[derive(Default)]
struct Reader {
    pending: Vec<u8>,
    skipped: usize,
    scan: HeadScan,
}

impl Reader {
    fn feed(&mut self, bytes: &[u8]) -> Verdict {
        self.pending.extend_from_slice(bytes);
        if self.scan.is_fresh() {
            let blank = self
                .pending
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.pending.drain(..blank);
            self.skipped += blank;
        }
        match self.scan.scan(&self.pending) {
            Ok(None) => Verdict::Waiting,
            Ok(Some(end)) => {
                assert!(
                    end <= self.pending.len(),
                    "end {end} past the buffer ({} bytes)",
                    self.pending.len()
                );
                let head = &self.pending[..end];
                Verdict::Head {
                    skipped: self.skipped,
                    end,
                    assessments: MODES.iter().map(|&m| head::assess(head, m)).collect(),
                }
            }
            Err(e) => {
                desync::classify(&self.pending);
                Verdict::Refused(e)
            }
        }
    }
}

/// Feed `bytes` cut at `cuts` (indices, any order, out of range ones clamped), stopping
/// at the first decision, as the reader does when they arrive in pieces.
fn feed_in_pieces(bytes: &[u8], cuts: &[usize]) -> Verdict {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut reader = Reader::default();
    let mut from = 0;
    let mut verdict = Verdict::Waiting;
    for to in cuts {
        verdict = reader.feed(&bytes[from..to]);
        from = to;
        if verdict != Verdict::Waiting {
            break;
        }
    }
    verdict
}

fn feed_whole(bytes: &[u8]) -> Verdict {
    Reader::default().feed(bytes)
}

/// Bytes that look like parts of heads: request lines, header names the assessment
/// reads, line ends, digits, separators, and any byte at all.
fn head_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => any::<u8>().prop_map(|b| vec![b]),
        3 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\r\n\r\n".to_vec()),
        1 => Just(b"GET / HTTP/1.1".to_vec()),
        1 => Just(b"POST /a?b=c HTTP/1.0".to_vec()),
        1 => Just(b"CONNECT h:1 HTTP/1.1".to_vec()),
        1 => Just(b"PRI * HTTP/2.0".to_vec()),
        1 => Just(b"HTTP/".to_vec()),
        2 => Just(b"Content-Length:".to_vec()),
        2 => Just(b"Transfer-Encoding:".to_vec()),
        1 => Just(b"chunked".to_vec()),
        1 => Just(b"identity".to_vec()),
        1 => Just(b"Upgrade: websocket".to_vec()),
        1 => Just(b"Connection: upgrade".to_vec()),
        1 => Just(b"Host: a".to_vec()),
        2 => "[0-9]{1,22}".prop_map(String::into_bytes),
        2 => Just(b" ".to_vec()),
        1 => Just(b"\t".to_vec()),
        1 => Just(b",".to_vec()),
        1 => Just(b":".to_vec()),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        head_like_bytes(),
        prop::collection::vec(any::<u8>(), 0..600),
    ]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..2048, 0..12)
}

/// How a generated well-formed head says where its body ends.
#[derive(Debug, Clone)]
enum Body {
    None,
    Length(u64),
    Chunked,
    /// Both headers: ambiguous to a desync analyser, chunked to hyper.
    LengthAndChunked(u64),
}

/// A well-formed head, its method and how its body is delimited.
#[derive(Debug, Clone)]
struct WellFormed {
    bytes: Vec<u8>,
    method: String,
    body: Body,
}

fn well_formed() -> impl Strategy<Value = WellFormed> {
    let method = prop_oneof![
        4 => Just("GET".to_string()),
        2 => Just("POST".to_string()),
        1 => Just("CONNECT".to_string()),
        3 => "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,11}",
    ];
    let path = "/[A-Za-z0-9._~!$&'()*+,;=:@/%-]{0,40}(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,30})?";
    // Header names outside the ones the assessment reads; values of visible ASCII with
    // inner spaces, never starting or ending with whitespace.
    let header = ("[Xx]-[A-Za-z0-9-]{1,20}", "[!-~]([ -~]{0,60}[!-~])?|");
    let body = prop_oneof![
        Just(Body::None),
        any::<u64>().prop_map(|n| Body::Length(n % 1_000_000_000_000_000_000)),
        (0u64..100).prop_map(Body::Length),
        Just(Body::Chunked),
        (0u64..100).prop_map(Body::LengthAndChunked),
    ];
    (
        method,
        path,
        any::<bool>(),
        prop::option::of("[a-z0-9.-]{1,30}(:[0-9]{1,5})?"),
        prop::collection::vec(header, 0..20),
        body,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(method, path, http11, host, headers, body, at)| {
            // Chunked needs HTTP/1.1 (hyper's rule).
            let http11 = http11 || matches!(body, Body::Chunked | Body::LengthAndChunked(_));
            let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
            let mut lines: Vec<String> = headers
                .into_iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            if let Some(h) = host {
                lines.push(format!("Host: {h}"));
            }
            let framing: Vec<String> = match body {
                Body::None => vec![],
                Body::Length(n) => vec![format!("Content-Length: {n}")],
                Body::Chunked => vec!["Transfer-Encoding: chunked".to_string()],
                Body::LengthAndChunked(n) => vec![
                    format!("Content-Length: {n}"),
                    "Transfer-Encoding: chunked".to_string(),
                ],
            };
            // The framing headers anywhere among the others.
            let at = at.index(lines.len() + 1);
            for (i, f) in framing.into_iter().enumerate() {
                lines.insert(at + i, f);
            }
            let mut text = format!("{method} {path} {version}\r\n");
            for l in lines {
                text.push_str(&l);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            WellFormed {
                bytes: text.into_bytes(),
                method,
                body,
            }
        })
}

/// Which limit a generated head passes.
#[derive(Debug, Clone, Copy)]
enum Over {
    RequestLine,
    HeaderLine,
    Head,
}

/// A head over one of ALB's limits (and within the others where the limit allows), and
/// the error it must get.
fn over_limits() -> impl Strategy<Value = (Vec<u8>, RequestError)> {
    let kind = prop_oneof![
        Just(Over::RequestLine),
        Just(Over::HeaderLine),
        Just(Over::Head)
    ];
    (
        kind,
        1usize..4000,
        1usize..(MAX_HEADER_LINE - 100),
        any::<bool>(),
    )
        .prop_map(|(kind, excess, size, complete)| {
            let mut head = Vec::new();
            let error = match kind {
                Over::RequestLine => {
                    // `GET /aaa… HTTP/1.1\r` is the line (its `\r` counts).
                    let path = MAX_REQUEST_LINE + excess - "GET / HTTP/1.1\r".len();
                    head.extend_from_slice(b"GET /");
                    head.extend(std::iter::repeat_n(b'a', path));
                    head.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n");
                    RequestError::UriTooLong
                }
                Over::HeaderLine => {
                    let value = MAX_HEADER_LINE + excess - "X: \r".len();
                    head.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\nX: ");
                    head.extend(std::iter::repeat_n(b'v', value));
                    head.extend_from_slice(b"\r\n");
                    RequestError::BadRequest
                }
                Over::Head => {
                    // Lines of `size` bytes each, every one within the line limit,
                    // until the head is past its limit.
                    head.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n");
                    let mut i = 0;
                    while head.len() <= MAX_HEAD + excess {
                        let line = format!("X-{i}: ");
                        head.extend_from_slice(line.as_bytes());
                        head.extend(std::iter::repeat_n(b'v', size.max(1)));
                        head.extend_from_slice(b"\r\n");
                        i += 1;
                    }
                    RequestError::BadRequest
                }
            };
            if complete {
                head.extend_from_slice(b"\r\nbody");
            }
            (head, error)
        })
}

/// What `assess` must do with a well-formed head of desync class `tier` under `mode`.
fn expected_action(mode: DesyncMitigationMode, tier: RequestSafetyTier) -> HeadAction {
    match desync::mitigation(mode, tier) {
        Mitigation::Allow => HeadAction::Serve { close_after: false },
        Mitigation::AllowThenClose => HeadAction::Serve { close_after: true },
        Mitigation::Block => HeadAction::Reject(RequestError::BadRequest),
    }
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any bytes at all: the reader never panics, a head's end is inside the buffer
    /// (checked in `Reader::feed`), and bytes arriving in pieces get the same answer
    /// as the same bytes arriving at once.
    #[test]
    fn head_arbitrary_bytes(bytes in arbitrary_bytes(), cuts in cuts()) {
        let whole = feed_whole(&bytes);
        let pieces = feed_in_pieces(&bytes, &cuts);
        let byte_by_byte = feed_in_pieces(&bytes, &(0..bytes.len()).collect::<Vec<_>>());
        prop_assert_eq!(whole.answers(), pieces.answers());
        prop_assert_eq!(whole.answers(), byte_by_byte.answers());
        if let Verdict::Head { skipped, end, .. } = whole {
            prop_assert!(skipped + end <= bytes.len());
        }
    }

    /// A well-formed head (any method token, path, valid header names and values,
    /// optional Content-Length / Transfer-Encoding), followed by body bytes, is found
    /// to end exactly where it ends, whole or in pieces; monitor mode serves it, the
    /// other modes serve it unless ALB's table blocks its desync class (compliant
    /// without framing headers; `GET` with `Content-Length: 0` is merely acceptable and
    /// both headers ambiguous); and its framing is the one its headers say.
    #[test]
    fn head_well_formed_is_accepted(head in well_formed(), body in prop::collection::vec(any::<u8>(), 0..40), cuts in cuts()) {
        let mut bytes = head.bytes.clone();
        bytes.extend_from_slice(&body);
        for verdict in [feed_whole(&bytes), feed_in_pieces(&bytes, &cuts)] {
            let Verdict::Head { skipped, end, assessments } = verdict else {
                return Err(TestCaseError::fail(format!("not a complete head: {verdict:?}")));
            };
            prop_assert_eq!(skipped, 0);
            prop_assert_eq!(end, head.bytes.len());
            for (mode, a) in MODES.iter().zip(&assessments) {
                if matches!(head.body, Body::None) {
                    prop_assert_eq!(a.classification.tier, RequestSafetyTier::Compliant, "{:?}", a.classification);
                }
                prop_assert_eq!(a.action, expected_action(*mode, a.classification.tier), "{:?}", mode);
                if *mode == Monitor {
                    prop_assert_eq!(a.action, HeadAction::Serve { close_after: false });
                }
                prop_assert_eq!(&a.rewritten, &None);
                let framing = match head.body {
                    Body::Chunked | Body::LengthAndChunked(_) => Framing::Chunked,
                    Body::Length(n) if n > 0 => Framing::Length(n),
                    _ if head.method == "CONNECT" => Framing::Tunnel,
                    Body::Length(n) => Framing::Length(n),
                    Body::None => Framing::Length(0),
                };
                if matches!(a.action, HeadAction::Serve { .. }) {
                    prop_assert_eq!(a.framing, framing);
                }
            }
        }
    }

    /// A head whose request line passes 16 K is refused with 414, one whose header line
    /// passes 16 K or whose whole head passes 64 K with 400, in every mode, whole or in
    /// pieces, complete or still arriving, and never served.
    #[test]
    fn head_over_limits_is_refused((bytes, error) in over_limits(), cuts in prop::collection::vec(0usize..80_000, 0..8)) {
        for verdict in [feed_whole(&bytes), feed_in_pieces(&bytes, &cuts)] {
            prop_assert_eq!(verdict.answers(), Some(vec![Err(error); MODES.len()]));
        }
    }
}

/// Found by `head_over_limits_is_refused`: a header line over 16 K that arrived whole,
/// with nothing after it yet, was let wait (the scanner only measured the line still
/// arriving) where the same bytes in two reads were refused with 400.
#[test]
fn a_whole_header_line_over_the_limit_is_refused_at_once() {
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'v', MAX_HEADER_LINE));
    head.extend_from_slice(b"\r\n");
    assert_eq!(
        HeadScan::default().scan(&head),
        Err(RequestError::BadRequest)
    );
    assert_eq!(
        feed_whole(&head),
        Verdict::Refused(RequestError::BadRequest)
    );
}
