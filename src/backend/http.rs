//! Answers one HTTP request: health, demo page (and its favicon), WebSocket
//! upgrade, notify.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, info, info_span, Instrument};

use super::fanout::Notification;
use super::server::Backend;
use super::socket;

/// The demo page served on `GET /`.
const PAGE: &str = include_str!("page.html");

/// The largest accepted `POST /notify/ID` body.
const MAX_NOTIFY_BODY: usize = 1 << 20;

/// The largest accepted `PUT /health` body.
const MAX_HEALTH_BODY: usize = 64;

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The user of a socket opened without `?user=`.
const ANONYMOUS: &str = "anonymous";

type Body = Full<Bytes>;

/// The hyper service of the backend.
pub(super) async fn handle(
    backend: Arc<Backend>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let method = request.method();
    let response = if path == "/health" && (method == Method::GET || method == Method::HEAD) {
        health(&backend)
    } else if path == "/health" && method == Method::PUT {
        put_health(&backend, request).await
    } else if path == "/" && (method == Method::GET || method == Method::HEAD) {
        page()
    } else if path == "/favicon.ico" && (method == Method::GET || method == Method::HEAD) {
        // Browsers ask for it with the page; no content instead of a 404.
        empty(StatusCode::NO_CONTENT)
    } else if path == "/ws" && method == Method::GET {
        websocket(backend, request)
    } else if let (Some(user), true) = (path.strip_prefix("/notify/"), method == Method::POST) {
        let user = percent_decode(user, false);
        if user.is_empty() {
            not_found()
        } else {
            notify(&backend, &user, request).await
        }
    } else {
        not_found()
    };
    Ok(response)
}

/// The health status, and how the link to Redis is (which never changes the
/// status: a Redis outage must not take every instance out of service).
fn health(backend: &Backend) -> Response<Body> {
    let status = StatusCode::from_u16(backend.health.load(Ordering::Relaxed))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        r#"{{"status":{},"redis":"{}"}}"#,
        status.as_u16(),
        backend.redis_state()
    );
    json(status, body)
}

async fn put_health(backend: &Backend, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request, MAX_HEALTH_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let status = std::str::from_utf8(&body)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok());
    let Some(status) = status else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body must be a status code between 200 and 599\n",
        );
    };
    match backend.set_health_status(status) {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn page() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn websocket(backend: Arc<Backend>, mut request: Request<Incoming>) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only\n",
        );
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    let user = query_param(request.uri().query().unwrap_or(""), "user")
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| ANONYMOUS.to_owned());
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket request: {e}\n"),
            )
        }
    };
    let span = info_span!("ws", %user);
    let tracker = backend.tracker.clone();
    tracker.spawn(
        async move {
            let upgraded = tokio::select! {
                upgraded = upgrade => upgraded,
                _ = backend.cancel.cancelled() => return,
            };
            match upgraded {
                Ok(ws) => socket::run(backend, ws, user).await,
                Err(e) => debug!("The WebSocket upgrade did not complete: {e}."),
            }
        }
        .instrument(span),
    );
    response.map(|_| Full::default())
}

async fn notify(backend: &Backend, user: &str, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request, MAX_NOTIFY_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(data) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "the body must be UTF-8 text\n");
    };
    let fanout = backend.fanout.as_ref();
    let notification = Notification::new(fanout.map(|f| f.instance()), user, data);
    // Local sockets first: they get it even while Redis is down.
    let delivered = backend.registry.deliver(user, notification.message());
    let published = match fanout {
        Some(fanout) => {
            let published = fanout.publish(&notification).await;
            let to_others = if published {
                "published to Redis"
            } else {
                "not published (Redis is down or did not confirm in time)"
            };
            info!("Notification for user {user} delivered to {delivered} socket(s) here; {to_others}.");
            published
        }
        None => {
            info!("Notification for user {user} delivered to {delivered} socket(s).");
            false
        }
    };
    json(
        StatusCode::ACCEPTED,
        format!(r#"{{"delivered":{delivered},"published":{published}}}"#),
    )
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// Read the whole body, or the error response to send instead.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    let collect = Limited::new(request.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, collect).await else {
        return Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time\n",
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes\n"),
        )),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("reading the body failed: {e}\n"),
        )),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = text(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

/// The decoded value of the first `name=value` pair of a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true) == name).then(|| percent_decode(value, true))
    })
}

/// Decode `%XX` escapes (and `+` as a space when `plus_is_space`). Invalid
/// escapes are kept as they are; invalid UTF-8 becomes U+FFFD.
fn percent_decode(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte written as two hex digits.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |d: u8| (d as char).to_digit(16);
    Some((digit(digits[0])? * 16 + digit(digits[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("alice", true), "alice");
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%C3%A9t%C3%A9", false), "été");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%+1", false), "%+1");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("user=bob", "user").as_deref(), Some("bob"));
        assert_eq!(
            query_param("x=1&user=a%26b&user=c", "user").as_deref(),
            Some("a&b")
        );
        assert_eq!(query_param("user", "user").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "user"), None);
        assert_eq!(query_param("", "user"), None);
    }
}
