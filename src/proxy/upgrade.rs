//! HTTP Upgrade: send the request to the target on a connection of its own; on `101`
//! relay the response and hand both raw connections to `tunnel::splice`; on anything
//! else relay the answer as an ordinary response.

use std::any::Any;
use std::net::SocketAddr;
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
use crate::tunnel;

/// Relay an upgrade request to `target`. The client connection's stream type is `S`.
pub async fn upgrade<S>(
    mut req: Request<Incoming>,
    target: SocketAddr,
    fwd: &Forwarded,
    ctx: &Arc<ListenerContext>,
) -> Result<Response<ProxyBody>, TargetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
            http_body_util::Either::Left(body),
        ));
    }

    let target_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);

    let span = tracing::info_span!("tunnel", client = %fwd.client, %target);
    let idle_timeout = lb.idle_timeout;
    let cancel = ctx.runtime.shutdown.close_all.child_token();
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
            tracing::info!(
                end = ?report.end,
                client_to_target = report.client_to_target,
                target_to_client = report.target_to_client,
                duration_ms = started.elapsed().as_millis() as u64,
                "Tunnel closed: {}.",
                describe_end(report.end)
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
/// A plaintext TCP client with a TCP target takes the zero-copy `tunnel::splice_tcp`;
/// everything else (TLS clients) the buffered `tunnel::splice`.
async fn splice_upgraded<S>(
    client: Upgraded,
    target: Upgraded,
    idle_timeout: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> tunnel::TunnelReport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = client
        .downcast::<TokioIo<S>>()
        .map(|parts| (parts.io.into_inner(), parts.read_buf));
    let target = target
        .downcast::<TokioIo<TcpStream>>()
        .map(|parts| (parts.io.into_inner(), parts.read_buf));
    let (client, client_prefix, target, target_prefix) = match (client, target) {
        (Ok((client, client_prefix)), Ok((target, target_prefix))) => {
            match downcast_owned::<S, TcpStream>(client) {
                Ok(client) => {
                    return tunnel::splice_tcp(
                        client,
                        client_prefix,
                        target,
                        target_prefix,
                        idle_timeout,
                        cancel,
                    )
                    .await;
                }
                Err(client) => (
                    Either::Left(client),
                    client_prefix,
                    Either::Left(target),
                    target_prefix,
                ),
            }
        }
        (client, target) => {
            let (client, client_prefix) = match client {
                Ok((client, prefix)) => (Either::Left(client), prefix),
                Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
            };
            let (target, target_prefix) = match target {
                Ok((target, prefix)) => (Either::Left(target), prefix),
                Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
            };
            (client, client_prefix, target, target_prefix)
        }
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

/// `value` as a `U` if `T` is `U`, without boxing; otherwise `value` back.
fn downcast_owned<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("slot was just filled")),
        None => Err(slot.expect("slot was not taken")),
    }
}

fn describe_end(end: tunnel::TunnelEnd) -> String {
    use tunnel::TunnelEnd::*;
    match end {
        ClientClosed => "the client closed it".into(),
        TargetClosed => "the target closed it".into(),
        IdleTimeout => "no byte moved for the idle timeout".into(),
        Cancelled => "the load balancer is shutting down".into(),
        ClientError(k) => format!("client connection error ({k})"),
        TargetError(k) => format!("target connection error ({k})"),
    }
}
