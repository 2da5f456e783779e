//! Listeners turn sockets into client streams: accept (with a backoff when the kernel
//! refuses, e.g. out of descriptors), TCP_NODELAY, and on HTTPS listeners the TLS
//! handshake, bounded by `tls_handshake_timeout`. Each stream, plain TCP or TLS over
//! TCP, goes with the peer's address and the listener's context to [`proxy::serve()`];
//! this module never looks at HTTP. A failed handshake or a broken connection ends
//! only its own task; the accept loop never stops for one.
//!
//! [`Listeners`] keeps the listeners of a running load balancer matched to its config:
//! a config change keeps the sockets of listeners it keeps (they serve the new view and
//! TLS settings from the next connection or handshake), binds new ones first (a port
//! that cannot be bound fails the change before anything moved), and stops removed ones.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::model::{Config, Protocol};
use crate::proxy::limit::ConnectionSlot;
use crate::proxy::{self, ListenerContext, ListenerView, Model, Runtime};
use crate::tls::{self, TlsAcceptor, TlsError, TlsStream};

/// One listener as it is bound.
#[derive(Debug, Clone, Copy)]
pub struct BoundListener {
    /// The address actually bound (the real port when the config said 0).
    pub local_addr: SocketAddr,
    pub protocol: Protocol,
    pub configured_port: u16,
}

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("Cannot listen on {addr}: {source}.")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A configured listener across configs: its address and configured port, its protocol,
/// and its rank among listeners alike (several may ask for port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenerKey {
    addr: SocketAddr,
    protocol: Protocol,
    nth: usize,
}

/// The keys of `config`'s listeners, in config order.
fn keys(config: &Config) -> Vec<ListenerKey> {
    let mut keys: Vec<ListenerKey> = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let addr = SocketAddr::new(l.address, l.port);
        let nth = keys
            .iter()
            .filter(|k| k.addr == addr && k.protocol == l.protocol)
            .count();
        keys.push(ListenerKey {
            addr,
            protocol: l.protocol,
            nth,
        });
    }
    keys
}

/// A listener that accepts connections.
struct Serving {
    key: ListenerKey,
    ctx: Arc<ListenerContext>,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    local_addr: SocketAddr,
}

/// The listeners of a running load balancer (see the module docs).
#[derive(Default)]
pub struct Listeners {
    serving: Mutex<Vec<Serving>>,
}

/// Sockets bound for the listeners a config adds, not accepting yet; dropping them
/// closes them.
pub struct Bound {
    /// (index of the listener in the config, socket, its bound address)
    sockets: Vec<(usize, TcpListener, SocketAddr)>,
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Bind the listeners of `config` that are not serving yet. Nothing changes for the
    /// serving ones; on an error every socket bound here is closed again.
    pub async fn bind(&self, config: &Config) -> Result<Bound, BindError> {
        let serving: Vec<ListenerKey> = lock(&self.serving).iter().map(|s| s.key.clone()).collect();
        let mut sockets = Vec::new();
        for (i, key) in keys(config).into_iter().enumerate() {
            if serving.contains(&key) {
                continue;
            }
            let listener = bind_listener(key.addr).map_err(|source| BindError {
                addr: key.addr,
                source,
            })?;
            let local_addr = listener.local_addr().map_err(|source| BindError {
                addr: key.addr,
                source,
            })?;
            sockets.push((i, listener, local_addr));
        }
        Ok(Bound { sockets })
    }

    /// Serve `model`: listeners it keeps take their new view and TLS settings, the ones
    /// `bound` holds start accepting, and the ones it no longer has stop accepting (their
    /// connections finish the request under way; their tunnels live on).
    pub fn serve(&self, model: &Arc<Model>, bound: Bound, runtime: &Arc<Runtime>) {
        let config = &model.config;
        let mut serving = lock(&self.serving);
        let mut old = std::mem::take(&mut *serving);
        let mut fresh = bound.sockets;
        for (i, key) in keys(config).into_iter().enumerate() {
            let l = &config.listeners[i];
            let acceptor = l
                .tls
                .as_ref()
                .map(|t| Arc::new(tls::acceptor(t.server_config.clone())));
            if let Some(pos) = old.iter().position(|s| s.key == key) {
                let kept = old.remove(pos);
                kept.ctx.set_view(ListenerView::new(model.clone(), i));
                kept.tls.store(acceptor);
                serving.push(kept);
                continue;
            }
            let Some(pos) = fresh.iter().position(|(index, _, _)| *index == i) else {
                continue;
            };
            let (_, socket, local_addr) = fresh.swap_remove(pos);
            let ctx = Arc::new(ListenerContext::new(
                runtime.clone(),
                l.protocol,
                local_addr.port(),
                ListenerView::new(model.clone(), i),
                runtime.shutdown.stop_accepting.child_token(),
            ));
            let tls = Arc::new(ArcSwapOption::new(acceptor));
            runtime
                .shutdown
                .tracker
                .spawn(run_accept_loop(socket, ctx.clone(), tls.clone()));
            tracing::info!(
                "{} listener on {}://{local_addr}",
                l.protocol,
                l.protocol.scheme()
            );
            serving.push(Serving {
                key,
                ctx,
                tls,
                local_addr,
            });
        }
        for gone in old {
            tracing::info!(
                "{} listener on {} is no longer configured; it stops accepting.",
                gone.ctx.protocol,
                gone.local_addr
            );
            gone.ctx.stop.cancel();
        }
    }

    /// The serving listeners, in config order.
    pub fn list(&self) -> Vec<BoundListener> {
        lock(&self.serving)
            .iter()
            .map(|s| BoundListener {
                local_addr: s.local_addr,
                protocol: s.ctx.protocol,
                configured_port: s.key.addr.port(),
            })
            .collect()
    }
}

/// Accept connections until the listener stops. Each connection runs in its own tracked
/// task; on an HTTPS listener the handshake uses the TLS settings current when the
/// connection arrived.
pub async fn run_accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerContext>,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
) {
    let shutdown = ctx.runtime.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => break,
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
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Past `max_connections` the connection is closed at once, with an RST (no
        // TIME_WAIT kept for it), and counted; what is open is not touched.
        let Some(slot) = ctx.runtime.connections.try_acquire() else {
            crate::observe::metrics::inc(&ctx.runtime.metrics.rejected_connections);
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        };
        crate::observe::metrics::inc(&ctx.runtime.metrics.new_connections);
        let span = tracing::debug_span!("conn", client = %peer, port = ctx.port);
        let _ = stream.set_nodelay(true);
        match tls.load_full() {
            None => span.in_scope(|| proxy::serve(stream, peer, ctx.clone(), None, slot)),
            Some(acceptor) => {
                let handshake = handshake_then_serve(stream, peer, ctx.clone(), acceptor, slot);
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
    acceptor: Arc<TlsAcceptor>,
    slot: ConnectionSlot,
) {
    let (timeout, log) = {
        let view = ctx.view();
        (
            view.model.config.load_balancer.tls_handshake_timeout,
            view.model.logs.connection.clone(),
        )
    };
    let trace_id = log.as_ref().map(|_| crate::observe::ConnTraceId::random());
    let started = std::time::Instant::now();
    let outcome = handshake(&acceptor, stream, timeout).await;
    // Taken at once, in the poll that saw a certificate refused, logged or not.
    let refused_leaf = outcome
        .is_err()
        .then(crate::tls::mtls::take_refused_leaf)
        .flatten();
    if let (Some(log), Some(trace_id)) = (log, trace_id) {
        // ALB's connection log: one line per attempt, failures included.
        let (protocol, cipher) = match &outcome {
            Ok(s) => crate::tls::policy::openssl_names(s.get_ref().1),
            Err(_) => (None, None),
        };
        let client_certificate = match &outcome {
            Ok(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(crate::tls::client_certificate),
            Err(_) => refused_leaf,
        }
        .map(Arc::new);
        log.write(crate::observe::ConnectionRecord {
            time: std::time::SystemTime::now(),
            client: peer,
            listener_port: ctx.port,
            tls_protocol: protocol,
            tls_cipher: cipher,
            tls_handshake_latency: outcome.is_ok().then(|| started.elapsed()),
            client_certificate,
            tls_verify_status: match &outcome {
                Ok(_) => "Success".to_string(),
                Err(e) => format!("Failed:{}", e.reason_code()),
            },
            conn_trace_id: trace_id,
        });
    }
    match outcome {
        Ok(tls_stream) => proxy::serve(tls_stream, peer, ctx, trace_id, slot),
        Err(e) => {
            crate::observe::metrics::inc(&ctx.runtime.metrics.client_tls_negotiation_errors);
            tracing::debug!("{e}")
        }
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

/// How many connections the kernel holds for a listener until they are accepted (it caps
/// the number at `net.core.somaxconn`). The standard library's 128 overflows when a
/// burst of clients connects at once: overflowing connections wait for a SYN
/// retransmission or are reset.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` (`SO_REUSEADDR`, as the standard library sets it) with
/// [`LISTEN_BACKLOG`].
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
