//! Listeners turn sockets into byte streams (plain, or TLS after a bounded handshake)
//! and serve HTTP/1.1 on them, or HTTP/2 when TLS negotiated `h2`, with the `proxy`
//! service. A failed handshake or a broken connection ends only its own task; the
//! accept loop never stops for one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::proxy::client_io::{ClientIo, ConnState};
use crate::proxy::{self, head, ListenerContext};
use crate::shutdown::Shutdown;
use crate::tls::{TlsError, TlsStream};

/// ALB serves up to 128 concurrent streams on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 128;

/// Accept connections until shutdown begins. Each connection runs in its own tracked task.
pub async fn run_accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerContext>,
    tls: Option<TlsAcceptor>,
) {
    let shutdown = ctx.runtime.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.stop_accepting.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => {
                backoff = Duration::from_millis(5);
                ok
            }
            Err(e) => {
                // Out of descriptors or a transient kernel error: wait, then go on.
                tracing::warn!("Accepting a connection failed: {e}; retrying in {backoff:?}.");
                tokio::select! {
                    _ = shutdown.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("conn", client = %peer, port = ctx.port);
        let _ = stream.set_nodelay(true);
        // Each kind of connection is its own task, sized for what it holds: a plain
        // connection's task never carries room for a TLS stream or an HTTP/2 server.
        match tls {
            None => {
                shutdown
                    .tracker
                    .spawn(serve_http1(stream, peer, ctx).instrument(span));
            }
            Some(acceptor) => {
                shutdown
                    .tracker
                    .spawn(handshake_then_serve(stream, peer, ctx, acceptor).instrument(span));
            }
        }
    }
}

/// Complete the TLS handshake (bounded), then serve the connection in a task of its own
/// with the protocol ALPN chose, so the handshake's state is freed before serving.
async fn handshake_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    acceptor: TlsAcceptor,
) {
    let timeout = ctx.runtime.config.load_balancer.tls_handshake_timeout;
    let tls_stream = match handshake(&acceptor, stream, timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("{e}");
            return;
        }
    };
    let tracker = &ctx.runtime.shutdown.tracker;
    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        tracker.spawn(serve_http2(tls_stream, peer, ctx.clone()).in_current_span());
    } else {
        tracker.spawn(serve_http1(tls_stream, peer, ctx.clone()).in_current_span());
    }
}

/// Run the server side of a TLS handshake on `stream`, giving up after
/// `handshake_timeout`.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    stream: IO,
    handshake_timeout: Duration,
) -> Result<TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(TlsError::Handshake(e)),
        Err(_) => Err(TlsError::HandshakeTimeout),
    }
}

/// Serve HTTP/1.1 (with upgrades) on one client connection until it closes, or until
/// shutdown asks it to finish its current request. Request heads are read through
/// [`ClientIo`], which applies ALB's limits, idle timeout and desync verdicts.
async fn serve_http1<S>(io: S, peer: SocketAddr, ctx: Arc<ListenerContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = ctx.runtime.shutdown.clone();
    let lb = &ctx.runtime.config.load_balancer;
    let idle = lb.header_read_timeout.min(lb.idle_timeout);
    let conn_state = Arc::new(ConnState::default());
    let io = ClientIo::new(io, conn_state.clone(), lb.desync_mitigation_mode, idle);
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        proxy::handle_http1::<ClientIo<S>>(req, svc_ctx.clone(), peer, conn_state.clone())
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // ClientIo measures idle time and head sizes; hyper's own limits sit above ALB's.
        .header_read_timeout(None)
        .max_buf_size(head::MAX_HEAD * 2)
        .max_headers(head::MAX_HEADERS)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = until_shutdown(conn, &shutdown, |c| c.graceful_shutdown()).await;
    if let Err(e) = result {
        tracing::debug!("Client connection ended with an error: {e}.");
    }
}

/// Serve HTTP/2 (negotiated by ALPN on an HTTPS listener). Requests reach targets as
/// HTTP/1.1. Extended CONNECT (RFC 8441) is not offered, so browsers open WebSockets on
/// a separate HTTP/1.1 connection, as they do with ALB.
async fn serve_http2<S>(io: S, peer: SocketAddr, ctx: Arc<ListenerContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = ctx.runtime.shutdown.clone();
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| proxy::handle::<S>(req, svc_ctx.clone(), peer));
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(head::MAX_HEAD as u32)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = until_shutdown(conn, &shutdown, |c| c.graceful_shutdown()).await;
    if let Err(e) = result {
        tracing::debug!("HTTP/2 client connection ended with an error: {e}.");
    }
}

/// Drive one client connection to its end. When shutdown stops accepting, the
/// connection is asked to finish gracefully (its current requests complete, nothing new
/// is read); when shutdown closes everything, it is dropped where it stands.
async fn until_shutdown<C, E>(
    mut conn: Pin<&mut C>,
    shutdown: &Shutdown,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.stop_accepting.cancelled() => {
            graceful(conn.as_mut());
            tokio::select! {
                r = conn => r,
                _ = shutdown.close_all.cancelled() => Ok(()),
            }
        }
    }
}
