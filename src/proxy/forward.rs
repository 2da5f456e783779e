//! Plain HTTP forwarding over keep-alive connections to targets ([`crate::upstream`]).

use std::error::Error as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, HOST};
use http::uri::{Parts, Uri};
use http::{Method, Request, Response, Version};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};
use tokio::time::{Instant, Sleep};

use super::headers::{connection_has, strip_hop_by_hop, Forwarded};
use super::{ProxyBody, TargetError};
use crate::target_group::InFlight;
use crate::upstream::{self, Conn, ConnectError, PooledBody, RawAnswer, RawError, Sender};

/// Send `req` to the target held by `in_flight` and return its response, hop-by-hop
/// headers removed. Waiting for the response is bounded by the idle timeout (504 when it
/// runs out, measured by `timer`) and by the end of the target's deregistration delay
/// (502, as ALB).
pub async fn forward(
    req: Request<Incoming>,
    in_flight: &InFlight,
    fwd: &Forwarded,
    connect_timeout: Duration,
    idle_timeout: Duration,
    timer: &mut ResponseTimer,
) -> Result<Response<ProxyBody>, TargetError> {
    let target = in_flight.target();
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_hop_by_hop(&mut parts.headers, false);
    // X-Forwarded-For/-Proto/-Port, X-Amzn-Trace-Id and maybe Host: grow the map once.
    parts.headers.reserve(5);
    fwd.apply(&mut parts.headers, authority.as_deref());
    if !parts.headers.contains_key(HOST) {
        // A request without Host (HTTP/1.0) names the target, as an HTTP client would.
        parts.headers.insert(HOST, host_value(target.addr));
    }
    request_target(&mut parts.uri, &parts.method, target.addr);
    parts.version = Version::HTTP_11;
    // `Connection: close` toward the target (desync mitigation): not reused afterwards.
    let reuse = !parts.headers.contains_key(CONNECTION);
    // A request without a body needs no hyper client (see `upstream`).
    let bodiless = body.is_end_stream() && parts.method != Method::CONNECT;

    // Made in place, pinned: `select!` then holds a pointer instead of copying the
    // future (a large one) into its own state.
    let exchange = std::pin::pin!(async {
        let taken = target.conns().take(idle_timeout);
        let (mut sender, req) = match (taken, bodiless) {
            (Some(Conn::Raw(stream)), true) => return exchange_raw(stream, parts, body).await,
            (None, true) => {
                let stream = upstream::connect_tcp(target.addr, connect_timeout)
                    .await
                    .map_err(connect_error)?;
                return exchange_raw(stream, parts, body).await;
            }
            (taken, _) => {
                let sender = match taken {
                    Some(Conn::Hyper(s)) => s,
                    Some(Conn::Raw(stream)) => {
                        upstream::handshake(stream).await.map_err(connect_error)?
                    }
                    None => upstream::connect(target.addr, connect_timeout)
                        .await
                        .map_err(connect_error)?,
                };
                (sender, Request::from_parts(parts, body))
            }
        };
        let resp = sender.send_request(req).await.map_err(exchange_error)?;
        let (head, body) = resp.into_parts();
        Ok::<_, TargetError>((head, Answer::Hyper(body, sender)))
    });
    let deadline = timer.arm(idle_timeout);
    let (mut parts, answer) = tokio::select! {
        // An answer that is ready wins over a timer that ran out at the same time.
        biased;
        r = exchange => r?,
        () = deadline => return Err(TargetError::ResponseTimeout),
        () = target.drain_token().cancelled() => {
            return Err(TargetError::Exchange(
                "the target was deregistered and its deregistration delay ended".to_string(),
            ))
        }
    };
    let reuse = reuse && !connection_has(&parts.headers, "close");
    strip_hop_by_hop(&mut parts.headers, false);
    let home = target.conns().clone();
    let body = match answer {
        Answer::Hyper(body, sender) => PooledBody::new(body, sender, home, reuse),
        Answer::Raw {
            stream,
            rest,
            length,
        } => PooledBody::raw(stream, rest, length, home, reuse),
    };
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// The timer bounding the wait for a target's answer, reused by the successive requests
/// of a client connection. Moving a registered timer to a later deadline leaves the
/// timer wheel alone (it is put back in place only if it fires early), where a timer per
/// request would be registered and removed each time.
#[derive(Debug, Default)]
pub struct ResponseTimer(Option<Pin<Box<Sleep>>>);

impl ResponseTimer {
    /// Set the timer to run out `timeout` from now; the result completes then.
    fn arm(&mut self, timeout: Duration) -> Pin<&mut Sleep> {
        let deadline = Instant::now() + timeout;
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.0.as_mut().map(Pin::as_mut).expect("set above")
    }
}

/// A target's answer: read by hyper, or by [`upstream::exchange_raw`].
enum Answer {
    Hyper(Incoming, Sender),
    Raw {
        stream: tokio::net::TcpStream,
        rest: bytes::BytesMut,
        length: u64,
    },
}

/// Send a request without a body on a bare stream; hyper reads answers
/// [`upstream::exchange_raw`] leaves to it.
async fn exchange_raw(
    stream: tokio::net::TcpStream,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Result<(http::response::Parts, Answer), TargetError> {
    let head = upstream::encode_request_head(&parts);
    let headers = std::mem::take(&mut parts.headers);
    match upstream::exchange_raw(stream, &head, &parts.method, headers).await {
        Ok(RawAnswer::Read {
            head,
            length,
            stream,
            rest,
        }) => Ok((
            head,
            Answer::Raw {
                stream,
                rest,
                length,
            },
        )),
        Ok(RawAnswer::ForHyper(stream, received)) => {
            let mut sender = upstream::handshake_primed(stream, received.freeze())
                .await
                .map_err(connect_error)?;
            // Stands for the request already written: only its method matters (the
            // framing of the answer to a HEAD).
            let mut stand_in = Request::new(body);
            *stand_in.method_mut() = parts.method;
            let resp = sender
                .send_request(stand_in)
                .await
                .map_err(exchange_error)?;
            let (head, body) = resp.into_parts();
            Ok((head, Answer::Hyper(body, sender)))
        }
        Err(RawError::Closed) => Err(TargetError::Exchange(KEEP_ALIVE_RACE.to_string())),
        Err(RawError::Io(e)) => Err(TargetError::Exchange(e.to_string())),
    }
}

/// The request target as a client sends it to a server: origin-form (`/path?query`),
/// or the target's authority for CONNECT. An origin-form URI is kept as it is.
fn request_target(uri: &mut Uri, method: &Method, target: SocketAddr) {
    if method == Method::CONNECT {
        let mut parts = Parts::default();
        parts.authority = target.to_string().parse().ok();
        if let Ok(u) = Uri::from_parts(parts) {
            *uri = u;
        }
        return;
    }
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
}

/// `Host` naming the target: `ip:port`, or the bare address on port 80.
fn host_value(target: SocketAddr) -> HeaderValue {
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

fn connect_error(e: ConnectError) -> TargetError {
    match e {
        ConnectError::Timeout => TargetError::ConnectTimeout,
        ConnectError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            TargetError::ConnectTimeout
        }
        ConnectError::Io(io) => TargetError::Connect(io),
        ConnectError::Handshake(h) => TargetError::Exchange(h.to_string()),
    }
}

/// Why a target connection closed before an answer, most likely.
const KEEP_ALIVE_RACE: &str = "the target closed the connection as the request was sent on it; \
    when this happens on reused connections, the target's keep-alive timeout is shorter than \
    the load balancer's idle timeout";

fn exchange_error(e: hyper::Error) -> TargetError {
    if e.is_incomplete_message() || e.is_canceled() {
        // The classic keep-alive race: ALB answers 502 and so do we (no retry).
        return TargetError::Exchange(KEEP_ALIVE_RACE.to_string());
    }
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    TargetError::Exchange(msg)
}
