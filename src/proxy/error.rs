//! Responses the load balancer makes itself, in ALB's exact shape: nginx-style HTML
//! with CRLF line endings, `Server: awselb/2.0`, and nginx's reason phrases.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};
use http_body_util::Full;

/// `Server` header value on every response the load balancer generates.
pub const SERVER_NAME: HeaderValue = HeaderValue::from_static("awselb/2.0");

/// Why the load balancer answered by itself. Each variant maps to one ALB status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElbError {
    /// Malformed request (400).
    BadRequest,
    /// TRACE (405).
    MethodNotAllowed,
    /// The client opened a connection or began a request head and then sent nothing
    /// for the idle timeout (408).
    RequestTimeout,
    /// The request line is longer than 16 K (414).
    UriTooLong,
    /// An HTTP version other than 1.0/1.1 on an HTTP/1 connection, e.g. the HTTP/2
    /// preface on a connection that did not negotiate `h2` (505).
    VersionNotSupported,
    /// Unsupported `Transfer-Encoding` (501).
    NotImplemented,
    /// The target refused, reset, or answered something malformed (502).
    BadGateway,
    /// No registered target in the group (503).
    NoTargets,
    /// Connecting to the target timed out, or it was silent for the idle timeout (504).
    GatewayTimeout,
    /// More than 30 addresses in X-Forwarded-For (463).
    TooManyForwardedFor,
}

impl ElbError {
    pub fn status(self) -> u16 {
        match self {
            ElbError::BadRequest => 400,
            ElbError::MethodNotAllowed => 405,
            ElbError::RequestTimeout => 408,
            ElbError::UriTooLong => 414,
            ElbError::VersionNotSupported => 505,
            ElbError::NotImplemented => 501,
            ElbError::BadGateway => 502,
            ElbError::NoTargets => 503,
            ElbError::GatewayTimeout => 504,
            ElbError::TooManyForwardedFor => 463,
        }
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
