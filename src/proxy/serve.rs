//! Serving a client connection the listener handed over: HTTP/1.1 with ALB's own head
//! reading ([`ClientIo`]) and upgrades, or HTTP/2 when TLS negotiated `h2`; and, when an
//! HTTP/1.1 connection switched protocols, opening its tunnel with the raw stream.
//!
//! A connection that switched is taken apart with hyper's `into_parts`, which gives the
//! connection's own IO type back (`ClientIo<S>` over the listener's stream `S`), so the
//! tunnel receives the raw stream by type: no downcast, nothing to fall back on.

use crate::observe::metrics::{self, Metrics};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use super::client_io::{join, ClientIo, ConnState};
use super::error::Chain;
use super::limit::ConnectionSlot;
use super::{head, respond, ListenerContext};
use crate::observe::ConnTraceId;
use crate::tls::{records, MtlsMode};
use crate::tunnel::{self, CopyPath, TunnelHandle, TunnelReport};
use futures_util::future::Either;

/// ALB serves up to 128 concurrent streams on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 128;

/// What the access log says of a client connection: its `conn_trace_id` and, on TLS,
/// the version, cipher and SNI name.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Made when a log is on as the connection opens (a line of a connection accepted
    /// before the access log was turned on gets one of its own).
    pub trace_id: Option<ConnTraceId>,
    pub tls: Option<TlsInfo>,
    /// On a listener with mutual TLS: what its requests carry to targets.
    pub mtls: Option<Arc<super::headers::MtlsHeaders>>,
}

/// A TLS connection's negotiated parameters, in OpenSSL's names.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub protocol: Option<&'static str>,
    pub cipher: Option<&'static str>,
    pub sni: Option<Arc<str>>,
}

/// A client connection as the listener hands it over: plain TCP, or TLS over TCP. Each
/// kind says whether it negotiated HTTP/2 and how its tunnel moves bytes.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// How this stream's tunnel will copy.
    fn copy_path(&self) -> CopyPath;

    /// Whether ALPN chose HTTP/2.
    fn is_h2(&self) -> bool;

    /// The negotiated TLS version, cipher and SNI name (`None` for plain TCP).
    fn tls(&self) -> Option<TlsInfo>;

    /// The certificate the client presented (mutual TLS), `None` without one.
    fn client_certificate(&self) -> Option<crate::tls::ClientCertificate> {
        None
    }

    /// The tunnel between this client stream and a target (see [`tunnel::splice`]).
    fn splice(
        self,
        prefix: Bytes,
        target: TcpStream,
        target_prefix: Bytes,
        idle_timeout: Duration,
        end: Arc<TunnelHandle>,
    ) -> impl Future<Output = TunnelReport> + Send + 'static;
}

impl ClientStream for TcpStream {
    fn copy_path(&self) -> CopyPath {
        CopyPath::Splice
    }

    fn is_h2(&self) -> bool {
        false
    }

    fn tls(&self) -> Option<TlsInfo> {
        None
    }

    /// Plain TCP on both sides: recv/send for small messages, splice(2) for bulk.
    fn splice(
        self,
        prefix: Bytes,
        target: TcpStream,
        target_prefix: Bytes,
        idle_timeout: Duration,
        end: Arc<TunnelHandle>,
    ) -> impl Future<Output = TunnelReport> + Send + 'static {
        tunnel::splice_tcp(self, prefix, target, target_prefix, idle_timeout, end)
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn copy_path(&self) -> CopyPath {
        if records::can_take_over(self) {
            CopyPath::TlsRecords
        } else {
            CopyPath::Buffered
        }
    }

    fn is_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }

    fn client_certificate(&self) -> Option<crate::tls::ClientCertificate> {
        crate::tls::client_certificate(self.get_ref().1.peer_certificates()?)
    }

    fn tls(&self) -> Option<TlsInfo> {
        let conn = self.get_ref().1;
        let (protocol, cipher) = crate::tls::policy::openssl_names(conn);
        Some(TlsInfo {
            protocol,
            cipher,
            sni: conn.server_name().map(Arc::from),
        })
    }

    /// TLS on the client side: bytes go through user space to be decrypted, by
    /// albatross itself with the keys rustls hands over ([`records::RecordStream`], a
    /// few hundred bytes while idle), or else by rustls. A rustls stream (1.2 KiB, most
    /// of it its connection state) moves to an allocation of its own, so the tunnel's
    /// task stays small.
    fn splice(
        self,
        prefix: Bytes,
        target: TcpStream,
        target_prefix: Bytes,
        idle_timeout: Duration,
        end: Arc<TunnelHandle>,
    ) -> impl Future<Output = TunnelReport> + Send + 'static {
        match records::RecordStream::take_over(Box::new(self), prefix) {
            Ok((client, prefix)) => Either::Left(tunnel::splice(
                client,
                prefix,
                target,
                target_prefix,
                idle_timeout,
                end,
            )),
            Err((client, prefix)) => Either::Right(tunnel::splice(
                client,
                prefix,
                target,
                target_prefix,
                idle_timeout,
                end,
            )),
        }
    }
}

/// Serve `stream`, accepted from `peer` by the listener `ctx`, in a task of its own on
/// the shutdown's tracker (in the current span). Each kind of connection is its own
/// task, sized for what it holds: a plain connection's task never carries room for a
/// TLS stream or an HTTP/2 server.
pub fn serve<S: ClientStream>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    trace_id: Option<ConnTraceId>,
    slot: ConnectionSlot,
) {
    let tracker = ctx.runtime.shutdown.tracker.clone();
    let active = Active::new(&ctx.runtime.metrics);
    // What only the access log reads is made only when there is one.
    let (logging, mtls_mode) = {
        let view = ctx.view();
        (view.model.logs.access.is_some(), view.mtls)
    };
    let mtls = (mtls_mode != MtlsMode::Off).then(|| {
        let cert = stream.client_certificate();
        Arc::new(super::headers::MtlsHeaders::new(mtls_mode, cert.as_ref()))
    });
    let info = if logging {
        ConnInfo {
            trace_id: Some(trace_id.unwrap_or_else(ConnTraceId::random)),
            tls: stream.tls(),
            mtls,
        }
    } else {
        ConnInfo {
            trace_id,
            tls: None,
            mtls,
        }
    };
    if stream.is_h2() {
        tracker.spawn(
            async move {
                let _held = (active, slot);
                serve_http2(stream, peer, ctx, Arc::new(info)).await
            }
            .in_current_span(),
        );
    } else {
        tracker.spawn(
            async move {
                let _held = (active, slot);
                serve_http1(stream, peer, ctx, info).await
            }
            .in_current_span(),
        );
    }
}

/// Adds a connection's HTTP bytes to CloudWatch's `ProcessedBytes` when its HTTP ends
/// (a tunnel's bytes are added when the tunnel ends).
struct Processed<'a>(&'a ConnState, &'a Metrics);

impl Drop for Processed<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.0.received.load(Relaxed) + self.0.sent.load(Relaxed);
        self.1.processed_bytes.fetch_add(n, Relaxed);
    }
}

/// Counts a client connection as active while HTTP is served on it (a tunnel it becomes
/// is counted from the tunnel registry instead).
struct Active(Arc<Metrics>);

impl Active {
    fn new(metrics: &Arc<Metrics>) -> Active {
        metrics::inc(&metrics.active_client_connections);
        Active(metrics.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::dec(&self.0.active_client_connections);
    }
}

/// Serve HTTP/1.1 on one client connection until it closes, shutdown asks it to finish
/// its current request, or it switches protocols (then its tunnel opens). Request heads
/// are read through [`ClientIo`], which applies ALB's limits, idle timeout and desync
/// verdicts.
async fn serve_http1<S: ClientStream>(
    io: S,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    info: ConnInfo,
) {
    // Connection-wide settings come from the config current when it opened.
    let (idle, desync) = {
        let view = ctx.view();
        let lb = &view.model.config.load_balancer;
        (
            lb.header_read_timeout.min(lb.idle_timeout),
            lb.desync_mitigation_mode,
        )
    };
    let conn_state = Arc::new(ConnState::new(info));
    let _processed = Processed(&conn_state, &ctx.runtime.metrics);
    let io = ClientIo::new(io, conn_state.clone(), desync, idle);
    let svc_ctx = ctx.clone();
    let svc_state = conn_state.clone();
    let service =
        service_fn(move |req| respond::http1(req, svc_ctx.clone(), peer, svc_state.clone()));
    // Without `with_upgrades`: when the connection switches, hyper leaves its IO as it
    // is and `into_parts` gives it back, typed.
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // ClientIo measures idle time and head sizes; hyper's own limits sit above ALB's.
        .header_read_timeout(None)
        .max_buf_size(head::MAX_HEAD * 2)
        .max_headers(head::MAX_HEADERS)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    // `client_keep_alive` ends it by a `Connection: close` on a response (respond::http1).
    let ended = until_stopped(Pin::new(&mut conn), &ctx, std::future::pending(), |c| {
        c.graceful_shutdown()
    })
    .await;
    if let Some(Err(e)) = &ended {
        tracing::debug!("Client connection ended with an error: {}", Chain(e));
    }
    // A tunnel is left only when the service relayed a `101`, which ends hyper's part.
    let pending = match ended {
        Some(Ok(())) => conn_state.take_tunnel(),
        _ => None,
    };
    let Some(pending) = pending else {
        // The last response is out (or never will be): its access-log line goes now.
        conn_state.write_pending();
        return;
    };
    // The `101` is out; the line is written when the tunnel closes.
    let line = conn_state.take_pending().map(Box::new);
    let parts = conn.into_parts();
    let (client, unread) = parts.io.into_inner().into_inner();
    pending
        .open(client, join(parts.read_buf, unread), &ctx.runtime, line)
        .await;
}

/// Serve HTTP/2 (negotiated by ALPN on an HTTPS listener). Requests reach targets as
/// HTTP/1.1. Extended CONNECT (RFC 8441) is not offered, so browsers open WebSockets on
/// a separate HTTP/1.1 connection, as they do with ALB.
async fn serve_http2<S: ClientStream>(
    io: S,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    info: Arc<ConnInfo>,
) {
    let lifetime = Arc::new(H2Lifetime::new());
    let svc_ctx = ctx.clone();
    let svc_lifetime = lifetime.clone();
    let service = service_fn(move |req| {
        svc_lifetime.request(&svc_ctx);
        respond::http2(req, svc_ctx.clone(), peer, info.clone())
    });
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(head::MAX_HEAD as u32)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // GOAWAY once the connection has lived its lifetime: its current streams complete.
    let ending = lifetime.ending.notified();
    if let Some(Err(e)) = until_stopped(conn, &ctx, ending, |c| c.graceful_shutdown()).await {
        tracing::debug!(
            "HTTP/2 client connection ended with an error: {}",
            Chain(&e)
        );
    }
}

/// ALB's requests per HTTP/2 client connection: the one that reaches it is served, then
/// `GOAWAY`.
pub const MAX_H2_REQUESTS: u32 = 10_000;

/// How long an HTTP/2 client connection has lived: its age and its requests. A request
/// that finds it past `client_keep_alive`, or that is its [`MAX_H2_REQUESTS`]th, is
/// served and then the connection ends with `GOAWAY`, as ALB does.
struct H2Lifetime {
    opened: std::time::Instant,
    requests: std::sync::atomic::AtomicU32,
    ending: tokio::sync::Notify,
}

impl H2Lifetime {
    fn new() -> H2Lifetime {
        H2Lifetime {
            opened: std::time::Instant::now(),
            requests: std::sync::atomic::AtomicU32::new(0),
            ending: tokio::sync::Notify::new(),
        }
    }

    /// Count a request arriving; ask for the end when it is the last one.
    fn request(&self, ctx: &ListenerContext) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.requests.fetch_add(1, Relaxed).saturating_add(1);
        let keep_alive = ctx.view().model.config.load_balancer.client_keep_alive;
        if n >= MAX_H2_REQUESTS || self.opened.elapsed() >= keep_alive {
            tracing::debug!(
                requests = n,
                "The HTTP/2 connection ends after this request (GOAWAY)."
            );
            self.ending.notify_one();
        }
    }
}

/// Drive one client connection to its end (`Some` with how it ended). When `ending`
/// completes (the connection has lived its lifetime) or its listener stops (removed by a
/// config change, or shutdown begins), the connection is asked to finish gracefully (its
/// current requests complete, nothing new is read); when shutdown closes everything, it
/// is left where it stands (`None`) and dropped by the caller.
async fn until_stopped<C, E>(
    mut conn: Pin<&mut C>,
    ctx: &ListenerContext,
    ending: impl Future<Output = ()>,
    graceful: impl Fn(Pin<&mut C>),
) -> Option<Result<(), E>>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(ending);
    let mut asked = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return Some(r),
            () = &mut ending, if !asked => {
                asked = true;
                graceful(conn.as_mut());
            }
            _ = ctx.stop.cancelled() => break,
        }
    }
    graceful(conn.as_mut());
    tokio::select! {
        r = conn => Some(r),
        _ = ctx.runtime.shutdown.close_all.cancelled() => None,
    }
}
