//! HTTP Upgrade: send the request to the target on a connection of its own; on `101`
//! relay the response and hand both raw connections to `tunnel::splice`; on anything
//! else relay the answer as an ordinary response.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::Instrument;

use super::headers::{strip_hop_by_hop, Forwarded};
use super::{ListenerContext, ProxyBody, TargetError};
use crate::target_group::InFlight;
use crate::tunnel;
use crate::upstream::PooledBody;

/// Relay an upgrade request to the target held by `in_flight`; a resulting tunnel keeps
/// it in flight (outstanding) until it closes. The client connection's stream type is `S`.
pub async fn upgrade<S>(
    mut req: Request<Incoming>,
    in_flight: InFlight,
    fwd: &Forwarded,
    ctx: &Arc<ListenerContext>,
) -> Result<Response<ProxyBody>, TargetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = in_flight.addr();
    let lb = &ctx.runtime.config.load_balancer;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_hop_by_hop(&mut parts.headers, true);
    fwd.apply(&mut parts.headers, authority.as_deref());
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| "/".parse().expect("valid")),
        None => "/".parse().expect("valid"),
    };
    parts.version = Version::HTTP_11;

    let stream = match tokio::time::timeout(lb.connect_timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(TargetError::ConnectTimeout),
        Ok(Err(e)) => return Err(TargetError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TargetError::Exchange(e.to_string()))?;
    ctx.runtime.shutdown.tracker.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("Upgrade connection to target ended: {e}");
        }
    });

    let request = Request::from_parts(parts, body);
    let mut resp = match tokio::time::timeout(lb.idle_timeout, sender.send_request(request)).await {
        Err(_) => return Err(TargetError::ResponseTimeout),
        Ok(Err(e)) => return Err(TargetError::Exchange(e.to_string())),
        Ok(Ok(r)) => r,
    };

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        return Ok(Response::from_parts(
            parts,
            http_body_util::Either::Left(PooledBody::unpooled(body)),
        ));
    }

    let target_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);

    let span = tracing::info_span!("tunnel", client = %fwd.client, %target);
    let idle_timeout = lb.idle_timeout;
    // The target's drain token is a child of the shutdown's: either closes the tunnel,
    // and which one fired tells deregistration from shutdown.
    let cancel = in_flight.target().drain_token().child_token();
    let shutting_down = ctx.runtime.shutdown.close_all.clone();
    ctx.runtime.shutdown.tracker.spawn(
        async move {
            let started = Instant::now();
            let (client, target) = match tokio::join!(client_upgrade, target_upgrade) {
                (Ok(c), Ok(t)) => (c, t),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::info!("The upgrade did not complete: {e}.");
                    return;
                }
            };
            let report = splice_upgraded::<S>(client, target, idle_timeout, cancel).await;
            let cause = CloseCause::of(report.end, shutting_down.is_cancelled());
            drop(in_flight);
            tracing::info!(
                cause = cause.as_str(),
                end = ?report.end,
                client_to_target = report.client_to_target,
                target_to_client = report.target_to_client,
                duration_ms = started.elapsed().as_millis() as u64,
                "Tunnel closed ({}): {}.",
                cause.as_str(),
                describe_end(report.end, cause)
            );
        }
        .instrument(span),
    );
    Ok(Response::from_parts(
        parts,
        http_body_util::Either::Right(Full::new(Bytes::new())),
    ))
}

/// Recover the raw streams (and bytes hyper already read past the heads) so the tunnel
/// holds no HTTP state; fall back to the upgraded wrappers if a downcast fails.
async fn splice_upgraded<S>(
    client: Upgraded,
    target: Upgraded,
    idle_timeout: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> tunnel::TunnelReport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, client_prefix) = match client.downcast::<TokioIo<S>>() {
        Ok(parts) => (Either::Left(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
    };
    let (target, target_prefix) = match target.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (Either::Left(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
    };
    tunnel::splice(
        client,
        client_prefix,
        target,
        target_prefix,
        idle_timeout,
        cancel,
    )
    .await
}

/// The one recorded reason a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    ClientClosed,
    TargetClosed,
    IdleTimeout,
    /// The target was deregistered and its deregistration delay ended.
    TargetDeregistered,
    Shutdown,
    Error,
}

impl CloseCause {
    /// `end` as a cause; a cancellation is a shutdown when the shutdown token fired,
    /// else the target's drain.
    pub fn of(end: tunnel::TunnelEnd, shutting_down: bool) -> CloseCause {
        use tunnel::TunnelEnd::*;
        match end {
            ClientClosed => CloseCause::ClientClosed,
            TargetClosed => CloseCause::TargetClosed,
            IdleTimeout => CloseCause::IdleTimeout,
            Cancelled if shutting_down => CloseCause::Shutdown,
            Cancelled => CloseCause::TargetDeregistered,
            ClientError(_) | TargetError(_) => CloseCause::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::ClientClosed => "client_closed",
            CloseCause::TargetClosed => "target_closed",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::TargetDeregistered => "target_deregistered",
            CloseCause::Shutdown => "shutdown",
            CloseCause::Error => "error",
        }
    }
}

fn describe_end(end: tunnel::TunnelEnd, cause: CloseCause) -> String {
    use tunnel::TunnelEnd::*;
    match end {
        ClientClosed => "the client closed it".into(),
        TargetClosed => "the target closed it".into(),
        IdleTimeout => "no byte moved for the idle timeout".into(),
        Cancelled if cause == CloseCause::TargetDeregistered => {
            "the target's deregistration delay ended".into()
        }
        Cancelled => "the load balancer is shutting down".into(),
        ClientError(k) => format!("client connection error ({k})"),
        TargetError(k) => format!("target connection error ({k})"),
    }
}
