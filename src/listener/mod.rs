//! Listeners turn sockets into byte streams (plain, or TLS after a bounded handshake)
//! and serve HTTP/1.1 on them with the `proxy` service. A failed handshake or a broken
//! connection ends only its own task; the accept loop never stops for one.

pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::proxy::{self, ListenerContext};

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
        shutdown
            .tracker
            .spawn(handle_connection(stream, peer, ctx, tls).instrument(span));
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    tls: Option<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve(stream, peer, ctx).await,
        Some(acceptor) => {
            let timeout = ctx.runtime.config.load_balancer.tls_handshake_timeout;
            match tls::accept(&acceptor, stream, timeout).await {
                Ok(tls_stream) => serve(tls_stream, peer, ctx).await,
                Err(e) => tracing::debug!("{e}"),
            }
        }
    }
}

/// Serve HTTP/1.1 (with upgrades) on one client connection until it closes, or until
/// shutdown asks it to finish its current request.
async fn serve<S>(io: S, peer: SocketAddr, ctx: Arc<ListenerContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = ctx.runtime.shutdown.clone();
    let lb = &ctx.runtime.config.load_balancer;
    let header_read_timeout = lb.header_read_timeout.min(lb.idle_timeout);
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| proxy::handle::<S>(req, svc_ctx.clone(), peer));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.stop_accepting.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.close_all.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("Client connection ended with an error: {e}.");
    }
}
