//! The raw HTTP/1.1 exchange on a target stream, without hyper: write a request head
//! (a request without a body), read the answer's head with httparse into a header map.
//! Forwarding reads a final answer framed by one `Content-Length` (or without a body)
//! here; an upgrade reads its `101` here. Anything else is handed over, with every byte
//! received, to a hyper connection over the same stream (`Primed`), which reads it
//! exactly as it would have on a connection of its own.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy::error::TargetError;

/// Upper bound on a response head read without hyper. Forwarding hands larger ones to
/// hyper; an upgrade's answer (a WebSocket `101` is a few hundred bytes) fails.
pub const MAX_RAW_HEAD: usize = 64 * 1024;
/// Headers in a response head read without hyper (hyper's client default).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// What the request written expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A final response; interim answers are hyper's to skip.
    Response,
    /// `101 Switching Protocols`, or a final response refusing the upgrade; interim
    /// answers other than `101` are skipped here.
    Upgrade,
}

/// What [`exchange`] got back.
pub enum RawAnswer {
    /// A final response read here: the head, and a body of `length` bytes of which
    /// `rest` (everything read after the head) holds the start.
    Read {
        head: http::response::Parts,
        length: u64,
        stream: TcpStream,
        rest: BytesMut,
    },
    /// `101` to an upgrade ([`Expect::Upgrade`] only): the head, the stream, and the
    /// bytes that followed the head.
    Switched {
        head: http::response::Parts,
        stream: TcpStream,
        rest: Bytes,
    },
    /// One for hyper: the stream and every byte received.
    ForHyper(TcpStream, BytesMut),
}

/// The request head as hyper's client writes it for a request without a body: the
/// request line of `parts`, then the header lines `write_headers` writes (for a
/// forwarded request, [`Forwarded::write_headers`](crate::proxy::headers::Forwarded::write_headers)),
/// then the empty line.
pub fn encode_request_head(
    parts: &http::request::Parts,
    write_headers: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    // Room for the client's headers and the five or so the load balancer adds.
    let mut head = Vec::with_capacity(320 + parts.headers.len() * 48);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    head.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    head.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&mut head);
    head.extend_from_slice(b"\r\n");
    head
}

/// Write `head` (a request without a body) on `stream` and read the answer's head.
///
/// `recycled` (emptied) becomes the answer's header map: hyper's server parses the next
/// request of the client connection into it, and that request's map comes back here, so
/// no map is made or freed per request (hyper's client does the same). `reused` tells
/// whether the stream served an exchange before (for the error when it closes at once).
pub async fn exchange(
    mut stream: TcpStream,
    head: &[u8],
    method: &Method,
    expect: Expect,
    recycled: HeaderMap,
    reused: bool,
) -> Result<RawAnswer, TargetError> {
    stream.write_all(head).await.map_err(TargetError::io)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut stream), cx, &mut buf))
            .await
            .map_err(TargetError::io)?;
        if n == 0 {
            if buf.is_empty() || expect == Expect::Upgrade {
                return Err(TargetError::ClosedBeforeAnswer { reused });
            }
            return Ok(RawAnswer::ForHyper(stream, buf));
        }
        // A buffer may hold interim answers before the one that matters.
        loop {
            let mut spans = [const { MaybeUninit::<(Span, Span)>::uninit() }; MAX_RESPONSE_HEADERS];
            let p = match parse_response_head(&buf, method, &mut spans) {
                Parsed::Partial if buf.len() <= MAX_RAW_HEAD => break,
                Parsed::Partial => {
                    return match expect {
                        Expect::Response => Ok(RawAnswer::ForHyper(stream, buf)),
                        Expect::Upgrade => Err(TargetError::HeadTooLarge),
                    }
                }
                Parsed::Invalid(e) => {
                    return match expect {
                        Expect::Response => Ok(RawAnswer::ForHyper(stream, buf)),
                        Expect::Upgrade => Err(TargetError::MalformedHead(e)),
                    }
                }
                Parsed::Complete(p) => p,
            };
            if p.status.is_informational() {
                match expect {
                    Expect::Upgrade if p.status == StatusCode::SWITCHING_PROTOCOLS => {
                        let raw = buf.split_to(p.len).freeze();
                        let head = response_head(&raw, &p, &spans, recycled)?;
                        return Ok(RawAnswer::Switched {
                            head,
                            stream,
                            rest: buf.freeze(),
                        });
                    }
                    // Skipped, as an HTTP client does (`100 Continue`, `103 Early Hints`).
                    Expect::Upgrade => {
                        buf.advance(p.len);
                        continue;
                    }
                    Expect::Response => return Ok(RawAnswer::ForHyper(stream, buf)),
                }
            }
            let Some(length) = p.length.filter(|_| p.valid) else {
                return Ok(RawAnswer::ForHyper(stream, buf));
            };
            let raw = buf.split_to(p.len).freeze();
            let head = response_head(&raw, &p, &spans, recycled)?;
            return Ok(RawAnswer::Read {
                head,
                length,
                stream,
                rest: buf,
            });
        }
    }
}

type Span = (usize, usize);

struct ParsedHead {
    len: usize,
    status: StatusCode,
    /// A reason phrase other than the status's canonical one.
    reason: Option<Span>,
    /// Headers (name and value spans) written to the caller's array.
    count: usize,
    /// Every header name and value is one the `http` crate takes.
    valid: bool,
    /// The body's length when it is framed by one plain `Content-Length` (0 when the
    /// answer has no body); `None` when hyper must work it out.
    length: Option<u64>,
}

enum Parsed {
    Partial,
    Invalid(httparse::Error),
    Complete(ParsedHead),
}

/// The rule of `HeaderValue::from_bytes`, checked without making one.
fn is_header_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// Is this a name `HeaderName::from_bytes` takes (httparse checked the characters)?
fn is_header_name(n: &[u8]) -> bool {
    !n.is_empty() && n.len() <= 0xffff
}

fn parse_response_head(
    buf: &[u8],
    method: &Method,
    spans: &mut [MaybeUninit<(Span, Span)>; MAX_RESPONSE_HEADERS],
) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(e),
    };
    let (Some(1), Some(code)) = (resp.version, resp.code) else {
        return Parsed::Invalid(httparse::Error::Version);
    };
    let Ok(status) = StatusCode::from_u16(code) else {
        return Parsed::Invalid(httparse::Error::Status);
    };
    let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    let mut valid = true;
    let mut length = None;
    let mut framed = true;
    for (h, span) in resp.headers.iter().zip(spans.iter_mut()) {
        let name = h.name.as_bytes();
        valid &= is_header_name(name) && is_header_value(h.value);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            framed = false;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // One plain decimal value; lists and repeats are hyper's to judge.
            let plain = length.is_none()
                && !h.value.is_empty()
                && h.value.len() <= 18
                && h.value.iter().all(u8::is_ascii_digit);
            if plain {
                length = Some(
                    h.value
                        .iter()
                        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
                );
            } else {
                framed = false;
            }
        }
        let n = offset(name);
        let v = offset(h.value);
        span.write(((n, n + name.len()), (v, v + h.value.len())));
    }
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = if no_body {
        Some(0)
    } else if framed {
        // Without Content-Length the body is close-delimited: hyper reads it.
        length
    } else {
        None
    };
    let reason = resp
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .map(|r| {
            let start = offset(r.as_bytes());
            (start, start + r.len())
        });
    Parsed::Complete(ParsedHead {
        len,
        status,
        reason,
        count: resp.headers.len(),
        valid,
        length,
    })
}

/// The head `p` parsed from `raw` as response parts, its header map made from
/// `recycled`; values share `raw`'s allocation.
fn response_head(
    raw: &Bytes,
    p: &ParsedHead,
    spans: &[MaybeUninit<(Span, Span)>; MAX_RESPONSE_HEADERS],
    mut recycled: HeaderMap,
) -> Result<http::response::Parts, TargetError> {
    let mut out = http::Response::new(());
    *out.status_mut() = p.status;
    *out.version_mut() = Version::HTTP_11;
    recycled.clear();
    *out.headers_mut() = recycled;
    let headers = out.headers_mut();
    headers.reserve(p.count);
    for span in &spans[..p.count] {
        // SAFETY: `parse_response_head` wrote the first `count` spans.
        let (name, value) = unsafe { span.assume_init() };
        let name = HeaderName::from_bytes(&raw[name.0..name.1])
            .map_err(|e| TargetError::InvalidHead(e.into()))?;
        let value = HeaderValue::from_maybe_shared(raw.slice(value.0..value.1))
            .map_err(|e| TargetError::InvalidHead(e.into()))?;
        headers.append(name, value);
    }
    if let Some(reason) = p.reason {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(raw.slice(reason.0..reason.1)) {
            out.extensions_mut().insert(r);
        }
    }
    Ok(out.into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], method: &Method) -> Parsed {
        let mut spans = [const { MaybeUninit::<(Span, Span)>::uninit() }; MAX_RESPONSE_HEADERS];
        parse_response_head(text, method, &mut spans)
    }

    #[test]
    fn framing_decides_who_reads_the_body() {
        let length = |text: &[u8], method: &Method| match parse(text, method) {
            Parsed::Complete(p) => p.length,
            _ => panic!("not complete: {}", String::from_utf8_lossy(text)),
        };
        let get = Method::GET;
        assert_eq!(
            length(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &get),
            Some(5)
        );
        assert_eq!(length(b"HTTP/1.1 200 OK\r\n\r\n", &get), None);
        assert_eq!(length(b"HTTP/1.1 204 No Content\r\n\r\n", &get), Some(0));
        assert_eq!(
            length(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            ),
            Some(0)
        );
        assert_eq!(
            length(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &get
            ),
            None
        );
        assert_eq!(
            length(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                &get
            ),
            None
        );
        assert_eq!(
            length(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", &get),
            Some(0)
        );
        assert!(matches!(parse(b"HTTP/1.1 200", &get), Parsed::Partial));
        assert!(matches!(
            parse(b"HTTP/2 200\r\n\r\n", &get),
            Parsed::Invalid(_)
        ));
    }
}
