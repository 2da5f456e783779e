//! The `redirect` and `fixed_response` actions.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SERVER};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::error::{error_body, html_response, set_reason, SERVER_NAME};
use crate::config::model::{FixedResponse, Redirect};

/// What a redirect's `#{...}` placeholders expand to for one request.
pub struct RedirectInput<'a> {
    /// `http` or `https` (lower case).
    pub protocol: &'a str,
    /// Host without port.
    pub host: &'a str,
    /// The listener port the client connected to.
    pub port: u16,
    /// The path with its leading `/`.
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: &'a str,
}

/// `template` with each placeholder replaced by its input, in one pass: text that came
/// with the request (a `Host` of `#{query}`, say) is copied, never expanded in turn.
fn expand(template: &str, input: &RedirectInput<'_>) -> String {
    let path = input.path.strip_prefix('/').unwrap_or(input.path);
    let port = input.port.to_string();
    let placeholders = [
        ("#{protocol}", input.protocol),
        ("#{host}", input.host),
        ("#{port}", port.as_str()),
        ("#{path}", path),
        ("#{query}", input.query),
    ];
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("#{") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match placeholders
            .iter()
            .find_map(|(name, value)| Some((rest.strip_prefix(name)?, *value)))
        {
            Some((after, value)) => {
                out.push_str(value);
                rest = after;
            }
            // Not a placeholder: the `#{` is text.
            None => {
                out.push_str("#{");
                rest = &rest[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The Location of a redirect: `protocol://host:port/path?query` (ALB always writes
/// the port; the `?` is left out when the query is empty).
pub fn location(redirect: &Redirect, input: &RedirectInput<'_>) -> String {
    let protocol = expand(&redirect.protocol, input).to_ascii_lowercase();
    let host = expand(&redirect.host, input);
    let port = expand(&redirect.port, input);
    let mut path = expand(&redirect.path, input);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let query = expand(&redirect.query, input);
    let mut loc = format!("{protocol}://{host}:{port}{path}");
    if !query.is_empty() {
        loc.push('?');
        loc.push_str(&query);
    }
    loc
}

/// ALB serves no redirect whose Location is longer than this (8 K).
pub const MAX_LOCATION: usize = 8 * 1024;

/// Why a redirect was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectFailed {
    /// The Location is longer than [`MAX_LOCATION`] (CloudWatch's
    /// `HTTP_Redirect_Url_Limit_Exceeded_Count`).
    UrlTooLong,
    /// The Location is not a valid header value.
    Invalid,
}

/// The redirect's response, or why it cannot be served (ALB answers 500).
pub fn redirect_response(
    redirect: &Redirect,
    input: &RedirectInput<'_>,
) -> Result<Response<Full<Bytes>>, RedirectFailed> {
    let loc = location(redirect, input);
    if loc.len() > MAX_LOCATION {
        return Err(RedirectFailed::UrlTooLong);
    }
    let value = HeaderValue::from_str(&loc).map_err(|_| RedirectFailed::Invalid)?;
    let status = redirect.status_code;
    let mut resp = html_response(status, error_body(status));
    set_reason(&mut resp, status);
    resp.headers_mut().insert(LOCATION, value);
    Ok(resp)
}

pub fn fixed_response(fixed: &FixedResponse) -> Response<Full<Bytes>> {
    let body = Bytes::from(fixed.message_body.clone());
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(fixed.status_code).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(SERVER, SERVER_NAME);
    if let Some(ct) = fixed
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(CONTENT_TYPE, ct);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(protocol: &str, port: &str) -> Redirect {
        Redirect {
            protocol: protocol.into(),
            host: "#{host}".into(),
            port: port.into(),
            path: "/#{path}".into(),
            query: "#{query}".into(),
            status_code: 301,
        }
    }

    #[test]
    fn http_to_https() {
        let input = RedirectInput {
            protocol: "http",
            host: "localhost",
            port: 8080,
            path: "/a/b",
            query: "x=1",
        };
        assert_eq!(
            location(&redirect("HTTPS", "8443"), &input),
            "https://localhost:8443/a/b?x=1"
        );
        let input = RedirectInput {
            query: "",
            path: "/",
            ..input
        };
        assert_eq!(
            location(&redirect("#{protocol}", "#{port}"), &input),
            "http://localhost:8080/"
        );
    }

    #[test]
    fn custom_path_uses_placeholders() {
        let mut r = redirect("HTTPS", "443");
        r.path = "/new/#{path}".into();
        r.host = "www.#{host}".into();
        let input = RedirectInput {
            protocol: "http",
            host: "example.com",
            port: 80,
            path: "/old",
            query: "",
        };
        assert_eq!(location(&r, &input), "https://www.example.com:443/new/old");
    }

    /// A Location of exactly 8 K is served; one byte more is not.
    #[test]
    fn location_longer_than_8k_is_not_served() {
        let r = redirect("HTTPS", "443");
        // "https://h:443/" is 14 bytes, "?" one more.
        let fits = "q".repeat(MAX_LOCATION - 15);
        let input = RedirectInput {
            protocol: "http",
            host: "h",
            port: 80,
            path: "/",
            query: &fits,
        };
        let resp = redirect_response(&r, &input).expect("8 K exactly is served");
        assert_eq!(resp.headers()[LOCATION].len(), MAX_LOCATION);
        let over = "q".repeat(MAX_LOCATION - 14);
        let input = RedirectInput {
            query: &over,
            ..input
        };
        assert_eq!(
            redirect_response(&r, &input).unwrap_err(),
            RedirectFailed::UrlTooLong
        );
    }
}
