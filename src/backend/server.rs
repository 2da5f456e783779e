//! The accept loop and the HTTP/1.1 connections.
//!
//! Every task runs on the backend's [`TaskTracker`] and watches its
//! cancellation token. On cancel the accept loop stops (closing the
//! listener), HTTP connections finish their current request, and WebSockets
//! send a 1001 close frame.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::fanout::{self, Fanout, InvalidRedisUrl};
use super::registry::Registry;
use super::{http, BackendOptions, InvalidHealthStatus};

/// How long a connection may take to send a request head; this also bounds
/// how long an idle keep-alive connection is kept. Longer than the load
/// balancer's default idle timeout (60 s), as AWS recommends for targets.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);

/// How long an HTTP connection may take to finish its request after cancel.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// State shared by every task of one backend instance.
pub(super) struct Backend {
    pub(super) options: BackendOptions,
    pub(super) health: AtomicU16,
    pub(super) registry: Registry,
    /// Present when a Redis URL is set.
    pub(super) fanout: Option<Fanout>,
    pub(super) tracker: TaskTracker,
    pub(super) cancel: CancellationToken,
}

impl Backend {
    pub(super) fn new(
        options: BackendOptions,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, InvalidRedisUrl> {
        let fanout = options.redis.as_deref().map(Fanout::new).transpose()?;
        Ok(Arc::new(Backend {
            options,
            health: AtomicU16::new(200),
            registry: Registry::default(),
            fanout,
            tracker: TaskTracker::new(),
            cancel,
        }))
    }

    /// How `GET /health` describes the link to Redis.
    pub(super) fn redis_state(&self) -> &'static str {
        match &self.fanout {
            None => "off",
            Some(fanout) if fanout.is_connected() => "connected",
            Some(_) => "disconnected",
        }
    }

    pub(super) fn set_health_status(&self, status: u16) -> Result<(), InvalidHealthStatus> {
        if !(200..=599).contains(&status) {
            return Err(InvalidHealthStatus(status));
        }
        let old = self.health.swap(status, Ordering::Relaxed);
        if old != status {
            info!(backend = %self.options.id, "Health status changed from {old} to {status}.");
        }
        Ok(())
    }
}

/// Spawn the accept loop, and the Redis fan-out when there is one, on the
/// backend's tracker.
pub(super) fn spawn_accept_loop(backend: Arc<Backend>, listener: TcpListener, addr: SocketAddr) {
    let span = info_span!("backend", id = %backend.options.id);
    let tracker = backend.tracker.clone();
    if backend.fanout.is_some() {
        tracker.spawn(fanout::run(backend.clone()).instrument(span.clone()));
    }
    tracker.spawn(run_accept_loop(backend, listener, addr).instrument(span));
}

async fn run_accept_loop(backend: Arc<Backend>, listener: TcpListener, addr: SocketAddr) {
    info!("Heartbeat backend listening on {addr}.");
    let cancel = backend.cancel.clone();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = info_span!("http", %peer);
                backend
                    .tracker
                    .spawn(serve_connection(backend.clone(), stream).instrument(span));
            }
            Err(e) => {
                warn!("Accepting a connection failed: {e}.");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    backend.tracker.close();
    info!("Heartbeat backend on {addr} stopped accepting connections.");
}

async fn serve_connection(backend: Arc<Backend>, stream: TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!("Could not disable Nagle's algorithm: {e}.");
    }
    let service = {
        let backend = backend.clone();
        service_fn(move |request| http::handle(backend.clone(), request))
    };
    let connection = http1::Builder::new()
        .half_close(true)
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);

    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = backend.cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN_TIMEOUT, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    debug!("The HTTP connection did not finish within {DRAIN_TIMEOUT:?} of shutdown; dropping it.");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!("The HTTP connection ended with an error: {e}.");
    }
}
