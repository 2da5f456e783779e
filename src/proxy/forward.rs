//! Plain HTTP forwarding over keep-alive connections to targets ([`super::upstream`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Parts, Uri};
use http::{Method, Request, Response, Version};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::client_io::{BodyClock, BodyWatch, RequestBody};
use super::error::TargetError;
use super::headers::{
    close_target_connection, connection_has, host_value, strip_hop_by_hop, Forwarded,
};
use super::upstream::{self, Conn, Expect, PooledBody, RawAnswer, Sender, Upstream};
use super::ProxyBody;
use crate::target_group::InFlight;

/// Send `req` to the target held by `in_flight` and return its response, hop-by-hop
/// headers removed. Waiting for the response is bounded by the idle timeout counted from
/// the request's last byte (504 when it runs out, measured by `timer`; `client_body` tells how
/// the client's body is arriving, when the reader follows it: a body that stops
/// arriving for the idle timeout ends the exchange with 408) and by the end of the
/// target's deregistration delay (502, as ALB).
pub async fn forward(
    req: Request<Incoming>,
    in_flight: &InFlight,
    fwd: &Forwarded,
    upstream: &Upstream,
    timer: &mut ResponseTimer,
    client_body: BodyWatch<'_>,
) -> Result<Response<ProxyBody>, TargetError> {
    let target = in_flight.target();
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_hop_by_hop(&mut parts.headers, false);
    // `Connection: close` toward the target (desync mitigation): not reused afterwards.
    let reuse = !close_target_connection(&parts.extensions, &mut parts.headers);
    request_target(&mut parts.uri, &parts.method, target.addr);
    parts.version = Version::HTTP_11;
    // A request without a body needs no hyper client (see `upstream`).
    let bodiless = body.is_end_stream() && parts.method != Method::CONNECT;
    let pool = upstream.pool(target);
    let stream_clock = match client_body {
        BodyWatch::Stream(clock) => Some(Arc::clone(clock)),
        _ => None,
    };
    let body = RequestBody::new(body, stream_clock);

    // Made in place, pinned: `select!` then holds a pointer instead of copying the
    // future (a large one) into its own state.
    let exchange = std::pin::pin!(async {
        let taken = pool.take(upstream.idle_timeout());
        if bodiless && !matches!(taken, Some(Conn::Hyper(_))) {
            // Written straight into the head: X-Forwarded-*, the trace id, Host.
            let head = upstream::encode_request_head(&parts, |out| {
                fwd.write_headers(&parts.headers, authority.as_deref(), Some(target.addr), out)
            });
            let (stream, reused) = match taken {
                Some(Conn::Raw(stream)) => (stream, true),
                _ => (upstream.connect(target.addr).await?, false),
            };
            return exchange_raw(upstream, stream, &head, parts, body, reused).await;
        }
        // X-Forwarded-For/-Proto/-Port, X-Amzn-Trace-Id and maybe Host: grow the map once.
        parts.headers.reserve(5);
        fwd.apply(&mut parts.headers, authority.as_deref());
        if !parts.headers.contains_key(HOST) {
            // A request without Host (HTTP/1.0) names the target, as an HTTP client would.
            parts.headers.insert(HOST, host_value(target.addr));
        }
        let (mut sender, reused, req) = match taken {
            Some(Conn::Hyper(sender)) => (sender, true, Request::from_parts(parts, body)),
            Some(Conn::Raw(stream)) => {
                let sender = upstream.handshake(stream).await?;
                (sender, true, Request::from_parts(parts, body))
            }
            None => {
                let stream = upstream.connect(target.addr).await?;
                let sender = upstream.handshake(stream).await?;
                (sender, false, Request::from_parts(parts, body))
            }
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| TargetError::hyper(e, reused))?;
        let (head, body) = resp.into_parts();
        Ok::<_, TargetError>((head, Answer::Hyper(body, sender)))
    });
    let idle = upstream.idle_timeout();
    let mut deadline = timer.arm(idle);
    let mut exchange = exchange;
    let (mut parts, answer) = loop {
        tokio::select! {
            // An answer that is ready wins over a timer that ran out at the same time.
            biased;
            r = &mut exchange => break r?,
            () = deadline.as_mut() => {
                // Idle means no byte either way: while the client's body arrives, the
                // target is not late, and the wait counts from the body's last byte.
                let Some((arriving, last_read)) = client_body.clock().map(BodyClock::state) else {
                    return Err(TargetError::ResponseTimeout);
                };
                let until = last_read + idle;
                if until > Instant::now() {
                    deadline.as_mut().reset(until);
                } else if arriving {
                    return Err(TargetError::ClientBodyTimeout);
                } else {
                    return Err(TargetError::ResponseTimeout);
                }
            }
            () = target.drain_token().cancelled() => return Err(TargetError::Deregistered),
        }
    };
    let reuse = reuse && !connection_has(&parts.headers, "close");
    strip_hop_by_hop(&mut parts.headers, false);
    let home = reuse.then(|| pool.clone());
    let body = match answer {
        Answer::Hyper(body, sender) => PooledBody::new(body, sender, home),
        Answer::Raw {
            stream,
            rest,
            length,
        } => PooledBody::raw(stream, rest, length, home),
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

/// A target's answer: read by hyper, or by the raw exchange.
enum Answer {
    Hyper(Incoming, Sender),
    Raw {
        stream: TcpStream,
        rest: bytes::BytesMut,
        length: u64,
    },
}

/// Send a request without a body on a bare stream; hyper reads the answers the raw
/// exchange leaves to it.
async fn exchange_raw(
    upstream: &Upstream,
    stream: TcpStream,
    head: &[u8],
    mut parts: http::request::Parts,
    body: RequestBody,
    reused: bool,
) -> Result<(http::response::Parts, Answer), TargetError> {
    let headers = std::mem::take(&mut parts.headers);
    let answer = upstream::exchange(
        stream,
        head,
        &parts.method,
        Expect::Response,
        headers,
        reused,
    )
    .await?;
    match answer {
        RawAnswer::Read {
            head,
            length,
            stream,
            rest,
        } => Ok((
            head,
            Answer::Raw {
                stream,
                rest,
                length,
            },
        )),
        RawAnswer::ForHyper(stream, received) => {
            let (head, body, sender) = upstream
                .read_with_hyper(stream, received, parts.method, body, reused)
                .await?;
            Ok((head, Answer::Hyper(body, sender)))
        }
        RawAnswer::Switched { .. } => {
            unreachable!("the raw exchange answers `Switched` only to an upgrade")
        }
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
