//! Listeners turn sockets into client streams: accept (with a backoff when the kernel
//! refuses, e.g. out of descriptors), TCP_NODELAY, and on HTTPS listeners the TLS
//! handshake, bounded by `tls_handshake_timeout`. Each stream, plain TCP or TLS over
//! TCP, goes with the peer's address and the listener's context to [`proxy::serve()`];
//! this module never looks at HTTP. A failed handshake or a broken connection ends
//! only its own task; the accept loop never stops for one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::proxy::{self, ListenerContext};
use crate::tls::{TlsAcceptor, TlsError, TlsStream};

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
        let span = tracing::debug_span!("conn", client = %peer, port = ctx.port);
        let _ = stream.set_nodelay(true);
        match &tls {
            None => span.in_scope(|| proxy::serve(stream, peer, ctx.clone())),
            Some(acceptor) => {
                let handshake = handshake_then_serve(stream, peer, ctx.clone(), acceptor.clone());
                shutdown.tracker.spawn(handshake.instrument(span));
            }
        }
    }
}

/// Complete the TLS handshake (bounded), then hand the stream over; it is served in a
/// task of its own, so the handshake's state is freed before serving.
async fn handshake_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    acceptor: TlsAcceptor,
) {
    let timeout = ctx.runtime.config.load_balancer.tls_handshake_timeout;
    match handshake(&acceptor, stream, timeout).await {
        Ok(tls_stream) => proxy::serve(tls_stream, peer, ctx),
        Err(e) => tracing::debug!("{e}"),
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
