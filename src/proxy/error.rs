//! Why the load balancer answered a request itself, the one mapping from that to ALB's
//! status code ([`ProxyError::status`]), and the responses it makes, in ALB's exact
//! shape: nginx-style HTML with CRLF line endings, `Server: awselb/2.0`, and nginx's
//! reason phrases.
//!
//! Causes are kept as typed values with their sources ([`TargetError`] holds the I/O,
//! httparse or hyper error underneath), so a log line can show the whole chain
//! ([`Chain`]) and the status code is decided in one function.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};
use http_body_util::Full;

/// `Server` header value on every response the load balancer generates.
pub const SERVER_NAME: HeaderValue = HeaderValue::from_static("awselb/2.0");

/// Why the load balancer answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request was refused before it was routed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The chosen target group has no target that can take the request.
    #[error("the target group has no registered target that can take the request")]
    NoTarget,
    /// Talking to the chosen target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl ProxyError {
    /// The status code ALB answers with: the one place where causes become codes.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::Request(e) => match e {
                RequestError::BadRequest => 400,
                RequestError::MethodNotAllowed => 405,
                RequestError::RequestTimeout => 408,
                RequestError::UriTooLong => 414,
                RequestError::TooManyForwardedFor => 463,
                RequestError::NotImplemented => 501,
                RequestError::VersionNotSupported => 505,
            },
            ProxyError::NoTarget => 503,
            ProxyError::Target(e) => match e {
                TargetError::ClientBodyTimeout => 408,
                TargetError::ConnectTimeout | TargetError::ResponseTimeout => 504,
                TargetError::Refused(_)
                | TargetError::Connect(_)
                | TargetError::Reset(_)
                | TargetError::Io(_)
                | TargetError::ClosedBeforeAnswer { .. }
                | TargetError::MalformedHead(_)
                | TargetError::InvalidHead(_)
                | TargetError::HeadTooLarge
                | TargetError::Http(_)
                | TargetError::Deregistered => 502,
            },
        }
    }
}

/// Why a request was refused before routing. Each kind has one ALB status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Malformed request (400).
    #[error("the request is malformed")]
    BadRequest,
    /// TRACE (405).
    #[error("the TRACE method is not allowed")]
    MethodNotAllowed,
    /// The client opened a connection or began a request head and then sent nothing
    /// for the idle timeout (408).
    #[error("the client sent no complete request head within the idle timeout")]
    RequestTimeout,
    /// The request line is longer than 16 K (414).
    #[error("the request line is longer than 16 KiB")]
    UriTooLong,
    /// More than 30 addresses in X-Forwarded-For (463).
    #[error("X-Forwarded-For holds more than 30 addresses")]
    TooManyForwardedFor,
    /// Unsupported `Transfer-Encoding` (501).
    #[error("the Transfer-Encoding is not supported")]
    NotImplemented,
    /// An HTTP version other than 1.0/1.1 on an HTTP/1 connection, e.g. the HTTP/2
    /// preface on a connection that did not negotiate `h2` (505).
    #[error("the HTTP version is not supported")]
    VersionNotSupported,
}

impl RequestError {
    /// The status code this refusal gets (see [`ProxyError::status`]).
    pub fn status(self) -> u16 {
        ProxyError::Request(self).status()
    }
}

/// Why talking to a target failed, with the failure underneath as the source.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the target refused the connection")]
    Refused(#[source] io::Error),
    #[error("connecting to the target failed")]
    Connect(#[source] io::Error),
    #[error("connecting to the target timed out")]
    ConnectTimeout,
    #[error("the target did not answer within the idle timeout")]
    ResponseTimeout,
    #[error("the target reset the connection")]
    Reset(#[source] io::Error),
    #[error("the connection to the target failed")]
    Io(#[source] io::Error),
    /// The classic keep-alive race when `reused`: ALB answers 502 and so do we (no retry).
    #[error("the target closed the connection before answering{}", race_hint(.reused))]
    ClosedBeforeAnswer { reused: bool },
    #[error("the target's response head is not valid HTTP/1.1")]
    MalformedHead(#[source] httparse::Error),
    #[error("the target's response head has an invalid header")]
    InvalidHead(#[source] http::Error),
    #[error("the target's response head is larger than 64 KiB")]
    HeadTooLarge,
    #[error("the HTTP exchange with the target failed")]
    Http(#[source] hyper::Error),
    #[error("the target was deregistered and its deregistration delay ended")]
    Deregistered,
    /// Not the target's doing: the client stopped sending its request body for the
    /// idle timeout while the target waited for it (408, as for a silent client).
    #[error("the client sent no byte of its request body for the idle timeout")]
    ClientBodyTimeout,
}

impl TargetError {
    /// Whether no connection to the target could be made (CloudWatch's
    /// `TargetConnectionErrorCount`).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            TargetError::Refused(_) | TargetError::Connect(_) | TargetError::ConnectTimeout
        )
    }
}

/// What a close before the answer on a reused connection most likely means.
fn race_hint(reused: &bool) -> &'static str {
    if *reused {
        " on a reused keep-alive connection; when this recurs, the target's keep-alive \
         timeout is shorter than the load balancer's idle timeout"
    } else {
        ""
    }
}

impl TargetError {
    /// An I/O error on an established connection to the target: resets are told apart.
    pub fn io(e: io::Error) -> TargetError {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => TargetError::Reset(e),
            _ => TargetError::Io(e),
        }
    }

    /// A failed connect: refused, timed out, or anything else.
    pub fn connect(e: io::Error) -> TargetError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => TargetError::Refused(e),
            io::ErrorKind::TimedOut => TargetError::ConnectTimeout,
            _ => TargetError::Connect(e),
        }
    }

    /// A failure reported by hyper's client; `reused` tells whether the connection had
    /// served an exchange before.
    pub fn hyper(e: hyper::Error, reused: bool) -> TargetError {
        if e.is_incomplete_message() || e.is_canceled() {
            return TargetError::ClosedBeforeAnswer { reused };
        }
        TargetError::Http(e)
    }
}

/// An error and its causes as one sentence: "The target refused the connection:
/// connection refused (os error 111)."
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.0.to_string();
        let mut chars = first.chars();
        if let Some(c) = chars.next() {
            write!(f, "{}{}", c.to_uppercase(), chars.as_str())?;
        }
        let mut last = first;
        let mut source = self.0.source();
        while let Some(s) = source {
            last = s.to_string();
            write!(f, ": {last}")?;
            source = s.source();
        }
        if !last.ends_with(['.', '!', '?']) {
            f.write_str(".")?;
        }
        Ok(())
    }
}

/// The reason phrase ALB (nginx underneath) writes for a status it generates.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Time-out",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        463 => "",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        505 => "HTTP Version Not Supported",
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
    }
}

/// The nginx-style page ALB sends with its own status codes.
pub fn error_body(status: u16) -> String {
    let reason = reason_phrase(status);
    let title = if reason.is_empty() {
        status.to_string()
    } else {
        format!("{status} {reason}")
    };
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
}

/// A complete load-balancer response for `status` with the HTML page as body.
pub fn elb_response(status: u16) -> Response<Full<Bytes>> {
    let mut resp = html_response(status, error_body(status));
    set_reason(&mut resp, status);
    resp
}

/// A response from the load balancer with an HTML body (errors, redirects).
pub fn html_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let len = body.len();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(SERVER, SERVER_NAME);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Make hyper write nginx's reason phrase (e.g. "Service Temporarily Unavailable").
pub fn set_reason<B>(resp: &mut Response<B>, status: u16) {
    let phrase = reason_phrase(status);
    let canonical = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    if !phrase.is_empty() && Some(phrase) != canonical {
        if let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase.as_bytes()) {
            resp.extensions_mut().insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_albs_status_codes() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ProxyError::from(TargetError::connect(refused)).status(),
            502
        );
        let slow = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(ProxyError::from(TargetError::connect(slow)).status(), 504);
        assert_eq!(ProxyError::from(TargetError::ResponseTimeout).status(), 504);
        assert_eq!(ProxyError::NoTarget.status(), 503);
        assert_eq!(RequestError::TooManyForwardedFor.status(), 463);
        assert_eq!(RequestError::RequestTimeout.status(), 408);
    }

    #[test]
    fn a_chain_reads_as_one_sentence_with_its_causes() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
        let e = ProxyError::from(TargetError::io(reset));
        assert!(matches!(e, ProxyError::Target(TargetError::Reset(_))));
        assert_eq!(
            Chain(&e).to_string(),
            "The target reset the connection: connection reset by peer."
        );
        let race = TargetError::ClosedBeforeAnswer { reused: true };
        assert!(Chain(&race).to_string().contains("keep-alive timeout"));
    }

    #[test]
    fn bodies_have_albs_lengths() {
        assert_eq!(error_body(502).len(), 122);
        assert_eq!(error_body(503).len(), 162);
        assert!(error_body(504).contains("<title>504 Gateway Time-out</title>"));
    }

    #[test]
    fn response_headers() {
        let r = elb_response(503);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[SERVER], "awselb/2.0");
        assert_eq!(r.headers()[CONTENT_LENGTH], "162");
        assert_eq!(
            r.extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|p| p.as_bytes()),
            Some(&b"Service Temporarily Unavailable"[..])
        );
    }
}
