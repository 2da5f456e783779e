//! HTTP Upgrade: send the request to the target on a connection of its own; on `101`
//! relay the response and hand both raw connections to `tunnel::splice`; on anything
//! else relay the answer as an ordinary response.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::client_io::{join, ClientIo};
use super::headers::{strip_hop_by_hop, Forwarded};
use super::{ListenerContext, ProxyBody, TargetError};
use crate::target_group::InFlight;
use crate::tunnel;
use crate::upstream::{PooledBody, MAX_RAW_HEAD, MAX_RESPONSE_HEADERS};
use tokio_rustls::server::TlsStream;

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

    let (parts, target_end) = if body.is_end_stream() {
        // The usual upgrade (a WebSocket handshake has no body): write the head and read
        // the answer's head here, without an HTTP client connection and its task.
        match tokio::time::timeout(lb.idle_timeout, exchange_head(stream, &parts)).await {
            Err(_) => return Err(TargetError::ResponseTimeout),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Exchanged::Switched(head, stream, rest))) => (head, TargetEnd::Raw(stream, rest)),
            Ok(Ok(Exchanged::Answered(stream, received))) => {
                return answer_without_switch(stream, received, parts.method, lb.idle_timeout)
                    .await;
            }
        }
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TargetError::Exchange(e.to_string()))?;
        ctx.runtime.shutdown.tracker.spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("Upgrade connection to target ended: {e}");
            }
        });
        let request = Request::from_parts(parts, body);
        let mut resp =
            match tokio::time::timeout(lb.idle_timeout, sender.send_request(request)).await {
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
        (resp.into_parts().0, TargetEnd::Hyper(target_upgrade))
    };
    let mut parts = parts;
    strip_hop_by_hop(&mut parts.headers, true);

    let span = tracing::info_span!("tunnel", client = %fwd.client, %target);
    let idle_timeout = lb.idle_timeout;
    // The target's drain token is a child of the shutdown's: either closes the tunnel,
    // and which one fired tells deregistration from shutdown.
    let cancel = in_flight.target().drain_token().clone();
    let ending = Ending {
        started: Instant::now(),
        in_flight,
        shutting_down: ctx.runtime.shutdown.close_all.clone(),
    };
    let tracker = ctx.runtime.shutdown.tracker.clone();
    // This task only waits for both upgrades; the tunnel runs in a task of its own,
    // sized for the kind of stream it carries (see `spawn_tunnel`).
    let upgrading = async move {
        let (client, target) = match tokio::join!(client_upgrade, target_end.raw()) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::info!("The upgrade did not complete: {e}.");
                return;
            }
        };
        spawn_tunnel::<S>(&tracker, client, target, idle_timeout, cancel, ending);
    }
    .instrument(span);
    ctx.runtime.shutdown.tracker.spawn(upgrading);
    Ok(Response::from_parts(
        parts,
        http_body_util::Either::Right(Full::new(Bytes::new())),
    ))
}

/// Recover the raw client stream (and the bytes already read past its head, in order)
/// and spawn the tunnel, so it holds no HTTP state: no hyper buffers, no `ClientIo`
/// timer or buffers. The target side comes raw, with the bytes read past the 101. A
/// plaintext TCP client takes `tunnel::splice_tcp` (path `splice`: recv/send for small
/// messages, splice(2) for bulk); a TLS client the buffered `tunnel::splice` (path
/// `buffered`). Should the client downcast ever fail, the upgraded wrapper is spliced
/// as it is.
///
/// Each kind of tunnel is spawned as its own task: the task is the whole memory of an
/// idle tunnel (besides the two sockets' registrations), so it is exactly as large as
/// its kind needs (a TLS stream is kilobytes, a TCP stream 32 bytes) and nothing else
/// is allocated for it.
fn spawn_tunnel<S>(
    tracker: &tokio_util::task::TaskTracker,
    client: Upgraded,
    (target, target_prefix): (TcpStream, Bytes),
    idle_timeout: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
    ending: Ending,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = match client.downcast::<TokioIo<ClientIo<TcpStream>>>() {
        Ok(parts) => {
            let (tcp, unread) = parts.io.into_inner().into_inner();
            let prefix = join(parts.read_buf, unread);
            let splice =
                tunnel::splice_tcp(tcp, prefix, target, target_prefix, idle_timeout, cancel);
            tracker.spawn(Tunnel::new(splice, ending, "splice").in_current_span());
            return;
        }
        Err(upgraded) => upgraded,
    };
    let client = match client.downcast::<TokioIo<ClientIo<TlsStream<TcpStream>>>>() {
        Ok(parts) => {
            let (tls, unread) = parts.io.into_inner().into_inner();
            let prefix = join(parts.read_buf, unread);
            let splice = tunnel::splice(tls, prefix, target, target_prefix, idle_timeout, cancel);
            tracker.spawn(Tunnel::new(splice, ending, "buffered").in_current_span());
            return;
        }
        Err(upgraded) => upgraded,
    };
    match client.downcast::<TokioIo<S>>() {
        Ok(parts) => {
            let (client, prefix) = (parts.io.into_inner(), parts.read_buf);
            let splice =
                tunnel::splice(client, prefix, target, target_prefix, idle_timeout, cancel);
            tracker.spawn(Tunnel::new(splice, ending, "buffered").in_current_span());
        }
        Err(upgraded) => {
            let client = TokioIo::new(upgraded);
            let splice = tunnel::splice(
                client,
                Bytes::new(),
                target,
                target_prefix,
                idle_timeout,
                cancel,
            );
            tracker.spawn(Tunnel::new(splice, ending, "buffered").in_current_span());
        }
    }
}

/// What a tunnel needs once it ends: how long it ran, the in-flight count it holds
/// on its target, and whether the shutdown closed it.
struct Ending {
    started: Instant,
    in_flight: InFlight,
    shutting_down: tokio_util::sync::CancellationToken,
}

pin_project_lite::pin_project! {
    /// A spliced tunnel that logs how it closed and releases its target when done.
    struct Tunnel<F> {
        #[pin]
        splice: F,
        ending: Option<Ending>,
        path: &'static str,
    }
}

impl<F> Tunnel<F> {
    fn new(splice: F, ending: Ending, path: &'static str) -> Self {
        Tunnel {
            splice,
            ending: Some(ending),
            path,
        }
    }
}

impl<F: std::future::Future<Output = tunnel::TunnelReport>> std::future::Future for Tunnel<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        let report = std::task::ready!(this.splice.poll(cx));
        let Some(ending) = this.ending.take() else {
            return std::task::Poll::Ready(());
        };
        let cause = CloseCause::of(report.end, ending.shutting_down.is_cancelled());
        let duration_ms = ending.started.elapsed().as_millis() as u64;
        drop(ending.in_flight);
        tracing::info!(
            cause = cause.as_str(),
            path = *this.path,
            end = ?report.end,
            client_to_target = report.client_to_target,
            target_to_client = report.target_to_client,
            duration_ms,
            "Tunnel closed ({}): {}.",
            cause.as_str(),
            describe_end(report.end, cause)
        );
        std::task::Poll::Ready(())
    }
}

/// The target end of an upgrade once its `101` is in.
enum TargetEnd {
    /// Read by [`exchange_head`]: the stream and the bytes that followed the head.
    Raw(TcpStream, Bytes),
    /// Through a hyper client connection (requests with a body).
    Hyper(hyper::upgrade::OnUpgrade),
}

impl TargetEnd {
    async fn raw(self) -> Result<(TcpStream, Bytes), hyper::Error> {
        match self {
            TargetEnd::Raw(stream, rest) => Ok((stream, rest)),
            TargetEnd::Hyper(on) => {
                let upgraded = on.await?;
                match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => Ok((parts.io.into_inner(), parts.read_buf)),
                    // The connection was made over `TokioIo<TcpStream>` just above.
                    Err(_) => unreachable!("an upgraded target connection is a TcpStream"),
                }
            }
        }
    }
}

/// What the target answered an upgrade request with.
enum Exchanged {
    /// `101`: the head as a response, the stream, and the bytes after the head.
    Switched(http::response::Parts, TcpStream, Bytes),
    /// Anything else: the stream and everything read from it so far.
    Answered(TcpStream, bytes::BytesMut),
}

/// Write the request head `parts` (no body) and read the target's response head.
/// Interim `1xx` answers other than `101` are skipped, as an HTTP client does.
async fn exchange_head(
    mut stream: TcpStream,
    parts: &http::request::Parts,
) -> Result<Exchanged, TargetError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = crate::upstream::encode_request_head(parts);
    let io_error = |e: std::io::Error| TargetError::Exchange(e.to_string());
    stream.write_all(&head).await.map_err(io_error)?;

    let mut buf = bytes::BytesMut::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(0);
                if code == 101 {
                    let parts = response_parts(&resp)?;
                    let rest = buf.split_off(len).freeze();
                    return Ok(Exchanged::Switched(parts, stream, rest));
                }
                if (100..200).contains(&code) {
                    let _ = buf.split_to(len);
                    continue;
                }
                return Ok(Exchanged::Answered(stream, buf));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(TargetError::Exchange(format!(
                    "the target's answer to the upgrade is not HTTP/1.1: {e}"
                )))
            }
        }
        if buf.len() >= MAX_RAW_HEAD {
            return Err(TargetError::Exchange(
                "the target's answer to the upgrade has a head that is too large".to_string(),
            ));
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
            return Err(TargetError::Exchange(
                "the target closed the connection before answering the upgrade".to_string(),
            ));
        }
    }
}

/// A parsed `101` head as response parts (version HTTP/1.1; a reason phrase other than
/// the canonical one is kept, as hyper does).
fn response_parts(resp: &httparse::Response<'_, '_>) -> Result<http::response::Parts, TargetError> {
    let bad = |what: &str| TargetError::Exchange(format!("the target's 101 has {what}"));
    let mut out = Response::new(());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = out.headers_mut();
    headers.reserve(resp.headers.len());
    for h in resp.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad("an invalid header name"))?;
        let value =
            http::HeaderValue::from_bytes(h.value).map_err(|_| bad("an invalid header value"))?;
        headers.append(name, value);
    }
    if let Some(reason) = resp.reason {
        if Some(reason) != StatusCode::SWITCHING_PROTOCOLS.canonical_reason() {
            if let Ok(p) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes()) {
                out.extensions_mut().insert(p);
            }
        }
    }
    Ok(out.into_parts().0)
}

/// Relay a target's answer other than `101` as an ordinary response: hyper reads it
/// (with its body) from the bytes already received and then the stream; the request it
/// believes it sends goes nowhere, since the real one was already written.
async fn answer_without_switch(
    stream: TcpStream,
    received: bytes::BytesMut,
    method: http::Method,
    idle_timeout: std::time::Duration,
) -> Result<Response<ProxyBody>, TargetError> {
    let io = Replayed {
        received: received.freeze(),
        stream,
        sent: false,
        reader: None,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| TargetError::Exchange(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("Connection to target after a refused upgrade ended: {e}");
        }
    });
    let mut request = Request::new(http_body_util::Empty::<Bytes>::new());
    *request.method_mut() = method;
    let resp = match tokio::time::timeout(idle_timeout, sender.send_request(request)).await {
        Err(_) => return Err(TargetError::ResponseTimeout),
        Ok(Err(e)) => return Err(TargetError::Exchange(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(
        parts,
        http_body_util::Either::Left(PooledBody::unpooled(body)),
    ))
}

/// A target stream whose first bytes were already read (`received`); writes are
/// discarded (the request went out before). Nothing is readable until hyper has
/// "sent" its request, or it would take the answer for an unsolicited one.
struct Replayed {
    received: Bytes,
    stream: TcpStream,
    sent: bool,
    reader: Option<std::task::Waker>,
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.sent {
            self.reader = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        if !self.received.is_empty() {
            let n = self.received.len().min(buf.remaining());
            buf.put_slice(&self.received.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.sent = true;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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
