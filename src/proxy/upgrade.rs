//! HTTP Upgrade: send the request to the target on a connection of its own, and on
//! `101` relay the response and leave the tunnel with the client connection,
//! which opens it once hyper has written the `101` and handed the raw stream back
//! (`serve`). Anything else is relayed as an ordinary response.
//!
//! Both sides reach the tunnel by type: the target side is the `TcpStream` this module
//! connected (read with the raw exchange, or handed back by the hyper connection that
//! carried a request with a body), the client side the listener's stream recovered from
//! hyper's connection parts.

use super::client_io::{PendingLine, RequestBody};
use crate::tunnel::{CloseCause, TunnelRecord};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::error::TargetError;
use super::headers::{strip_hop_by_hop, Forwarded};
use super::serve::ClientStream;
use super::upstream::{self, Expect, PooledBody, RawAnswer};
use super::{ListenerContext, ProxyBody, Runtime};
use crate::observe::access_log::HeldLine;
use crate::observe::{AccessRecord, LogFile};
use crate::target_group::{InFlight, Target};
use crate::tunnel::{NewTunnel, Tunnel, TunnelTarget};
use std::sync::Arc;

/// A tunnel whose `101` was relayed, waiting for the client connection's raw stream.
#[derive(Debug)]
pub struct PendingTunnel {
    target: TargetSide,
    /// Keeps the target outstanding (least outstanding requests) while the tunnel lives.
    in_flight: InFlight,
    listener_port: u16,
    client: SocketAddr,
    idle_timeout: Duration,
}

/// The target end of a switched connection.
#[derive(Debug)]
enum TargetSide {
    /// Read by the raw exchange: the stream and the bytes that followed the `101`.
    Ready(TcpStream, Bytes),
    /// Still with the hyper connection that carried a request with a body; it hands the
    /// stream back once it is done with the `101`.
    Handed(oneshot::Receiver<hyper::Result<(TcpStream, Bytes)>>),
}

/// Relay an upgrade request to the target held by `in_flight`, waiting at most
/// `idle_timeout` for the answer. On `101` the tunnel (which keeps that idle timeout) is
/// returned beside the response, to be opened when the response is out.
pub async fn upgrade(
    req: Request<Incoming>,
    in_flight: InFlight,
    fwd: &Forwarded,
    ctx: &ListenerContext,
    idle_timeout: Duration,
) -> Result<(Response<ProxyBody>, Option<Box<PendingTunnel>>), TargetError> {
    let upstream = &ctx.runtime.upstream;
    let target = in_flight.addr();
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_hop_by_hop(&mut parts.headers, true);
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| "/".parse().expect("valid")),
        None => "/".parse().expect("valid"),
    };
    parts.version = Version::HTTP_11;

    let stream = upstream.connect(target).await?;
    let (head, target_side) = if body.is_end_stream() {
        // The usual upgrade (a WebSocket handshake has no body): write the head and read
        // the answer's head here, without an HTTP client connection and its task.
        // Written straight into the head: X-Forwarded-*, the trace id, Host.
        let request_head = upstream::encode_request_head(&parts, |out| {
            fwd.write_headers(&parts.headers, authority.as_deref(), None, out)
        });
        let headers = std::mem::take(&mut parts.headers);
        let exchange = upstream::exchange(
            stream,
            &request_head,
            &parts.method,
            Expect::Upgrade,
            headers,
            false,
        );
        let answer = match tokio::time::timeout(idle_timeout, exchange).await {
            Err(_) => return Err(TargetError::ResponseTimeout),
            Ok(answer) => answer?,
        };
        match answer {
            RawAnswer::Switched { head, stream, rest } => (head, TargetSide::Ready(stream, rest)),
            RawAnswer::Read {
                head,
                length,
                stream,
                rest,
            } => {
                let body = PooledBody::raw(stream, rest, length, None);
                return Ok((refused(head, body), None));
            }
            RawAnswer::ForHyper(stream, received) => {
                let body = RequestBody::new(body, None);
                let read = upstream.read_with_hyper(stream, received, parts.method, body, false);
                let (head, body, _sender) = match tokio::time::timeout(idle_timeout, read).await {
                    Err(_) => return Err(TargetError::ResponseTimeout),
                    Ok(r) => r?,
                };
                return Ok((refused(head, PooledBody::unpooled(body)), None));
            }
        }
    } else {
        // A request with a body goes through a hyper client connection, which hands the
        // stream back (typed) once it has read the `101`.
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TargetError::hyper(e, false))?;
        let (handed, handed_back) = oneshot::channel();
        upstream.tracker().spawn(async move {
            let parts = conn.without_shutdown().await;
            let _ = handed.send(parts.map(|p| (p.io.into_inner(), p.read_buf)));
        });
        fwd.apply(&mut parts.headers, authority.as_deref());
        let request = Request::from_parts(parts, body);
        let resp = match tokio::time::timeout(idle_timeout, sender.send_request(request)).await {
            Err(_) => return Err(TargetError::ResponseTimeout),
            Ok(r) => r.map_err(|e| TargetError::hyper(e, false))?,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (head, body) = resp.into_parts();
            return Ok((refused(head, PooledBody::unpooled(body)), None));
        }
        (resp.into_parts().0, TargetSide::Handed(handed_back))
    };
    let mut head = head;
    strip_hop_by_hop(&mut head.headers, true);
    // Boxed: every request's answer carries room for it, and few are upgrades.
    let pending = Box::new(PendingTunnel {
        target: target_side,
        listener_port: ctx.port,
        client: fwd.client,
        in_flight,
        idle_timeout,
    });
    let response = Response::from_parts(head, Either::Right(Full::new(Bytes::new())));
    Ok((response, Some(pending)))
}

/// The target's answer other than `101`, relayed as an ordinary response.
fn refused(mut head: http::response::Parts, body: PooledBody) -> Response<ProxyBody> {
    strip_hop_by_hop(&mut head.headers, false);
    Response::from_parts(head, Either::Left(body))
}

impl PendingTunnel {
    /// Open the tunnel between `client` (the raw client stream, `prefix` the bytes read
    /// from it past the request head) and the target, as a task of its own: listed in
    /// the registry, ended through its handle, its record written when it closes.
    pub async fn open<S: ClientStream>(
        self,
        client: S,
        prefix: Bytes,
        runtime: &Runtime,
        line: Option<Box<PendingLine>>,
    ) {
        let (target, target_prefix) = match self.target {
            TargetSide::Ready(stream, rest) => (stream, rest),
            TargetSide::Handed(handed_back) => {
                match tokio::time::timeout(self.idle_timeout, handed_back).await {
                    Ok(Ok(Ok(side))) => side,
                    Ok(Ok(Err(e))) => {
                        tracing::info!(
                            client = %self.client,
                            target = %self.in_flight.addr(),
                            "The upgrade did not complete: {}",
                            super::error::Chain(&TargetError::hyper(e, false))
                        );
                        return;
                    }
                    Ok(Err(_)) | Err(_) => {
                        tracing::info!(
                            client = %self.client,
                            target = %self.in_flight.addr(),
                            "The upgrade did not complete: the target connection did not hand its stream back."
                        );
                        return;
                    }
                }
            }
        };
        let registration = runtime.tunnels.open(NewTunnel {
            listener_port: self.listener_port,
            client: self.client,
            target: self.in_flight.target().clone(),
            path: client.copy_path(),
        });
        let splice = client.splice(
            prefix,
            target,
            target_prefix,
            self.idle_timeout,
            registration.handle().clone(),
        );
        let held = Held {
            _in_flight: self.in_flight,
            line: line.map(|p| {
                Box::new(TunnelLine {
                    line: p.record.hold(),
                    received_bytes: p.record.received_bytes,
                    sent_bytes: p.record.sent_bytes,
                    log: p.log,
                })
            }),
        };
        runtime
            .shutdown
            .tracker
            .spawn(Tunnel::new(splice, registration, held));
    }
}

/// What a tunnel holds until it ends: the target's in-flight count, and its
/// access-log line (the upgrade's, written with the bytes of the tunnel's whole life).
struct Held {
    _in_flight: InFlight,
    // Boxed: an idle tunnel's task stays as small without an access log as before.
    line: Option<Box<TunnelLine>>,
}

/// An open tunnel's access-log line: written when the tunnel opened but for what its
/// close decides, in a buffer of its exact size (a few hundred bytes, where the whole
/// record with its texts took about 0.8 KiB for the tunnel's life).
struct TunnelLine {
    line: HeldLine,
    /// The upgrade's request and `101`.
    received_bytes: u64,
    sent_bytes: u64,
    log: Arc<LogFile<Box<AccessRecord>>>,
}

impl crate::tunnel::OnEnd for Held {
    fn ended(self, record: &TunnelRecord) {
        if let Some(t) = self.line {
            let mut line = t.log.boxed(AccessRecord::from_held(t.line));
            line.time = record.closed_at;
            line.received_bytes = t.received_bytes + record.bytes_from_client;
            line.sent_bytes = t.sent_bytes + record.bytes_to_client;
            // Beyond ALB: a provoked end says so in `error_reason` (ALB writes `-` for
            // a tunnel, as albatross does for every other end).
            if let CloseCause::Disconnect(_) = record.cause {
                line.error_reason = Some(record.cause.as_str());
            }
            t.log.write(line);
        }
    }
}

/// A tunnel's target is the registered target itself: its address, its group, and the
/// registration whose departure ends the tunnel.
impl TunnelTarget for Target {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    fn group(&self) -> &std::sync::Arc<str> {
        &self.group
    }

    fn key(&self) -> u64 {
        self.id.0
    }
}
