//! Plain HTTP forwarding over pooled keep-alive connections to targets.

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::headers::{strip_hop_by_hop, Forwarded};
use super::{ProxyBody, TargetError};
use crate::target_group::InFlight;

/// Send `req` to the target held by `in_flight` and return its response, hop-by-hop
/// headers removed. Waiting for the response is bounded by the idle timeout (504 when it
/// runs out) and by the end of the target's deregistration delay (502, as ALB).
pub async fn forward(
    req: Request<Incoming>,
    in_flight: &InFlight,
    fwd: &Forwarded,
    client: &Client<HttpConnector, Incoming>,
    idle_timeout: Duration,
) -> Result<Response<ProxyBody>, TargetError> {
    let target = in_flight.addr();
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_hop_by_hop(&mut parts.headers, false);
    fwd.apply(&mut parts.headers, authority.as_deref());
    parts.uri = target_uri(&parts.uri, target)?;
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, body);

    let exchange = tokio::time::timeout(idle_timeout, client.request(req));
    let resp = tokio::select! {
        r = exchange => match r {
            Err(_) => return Err(TargetError::ResponseTimeout),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(resp)) => resp,
        },
        _ = in_flight.target().drain_token().cancelled() => {
            return Err(TargetError::Exchange(
                "the target was deregistered and its deregistration delay ended".to_string(),
            ))
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// `http://<target><path?query>`.
pub fn target_uri(uri: &Uri, target: SocketAddr) -> Result<Uri, TargetError> {
    let authority = Authority::try_from(target.to_string())
        .map_err(|e| TargetError::Exchange(e.to_string()))?;
    let mut b = Uri::builder().scheme(Scheme::HTTP).authority(authority);
    b = match uri.path_and_query() {
        Some(pq) => b.path_and_query(pq.clone()),
        None => b.path_and_query("/"),
    };
    b.build().map_err(|e| TargetError::Exchange(e.to_string()))
}

fn classify(e: hyper_util::client::legacy::Error) -> TargetError {
    if e.is_connect() {
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return TargetError::ConnectTimeout;
                }
                return TargetError::Connect(std::io::Error::new(io.kind(), io.to_string()));
            }
            source = s.source();
        }
        return TargetError::Connect(std::io::Error::other(e.to_string()));
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
        {
            // The classic keep-alive race: ALB answers 502 and so do we (no retry).
            return TargetError::Exchange(
                "the target closed the connection as the request was sent on it; when this \
                 happens on reused connections, the target's keep-alive timeout is shorter \
                 than the load balancer's idle timeout"
                    .to_string(),
            );
        }
        source = s.source();
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
