//! The heartbeat WebSocket backend.
//!
//! A small HTTP/1.1 server that stands in for the application containers
//! behind the load balancer. It owns its listener, its connections and a map
//! of the WebSocket users connected to it; it knows nothing about the proxy.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health` | the current health status (200 unless switched); body `{"status":200,"redis":R}`, R = `connected`, `disconnected` or `off` |
//! | `PUT /health` | body = a status code (200–599); 204, or 400 on a bad body |
//! | `GET /` | a self-contained demo page that opens `/ws` |
//! | `GET /ws?user=ID` | WebSocket: hello, Ping every `ping_interval`, echo |
//! | `POST /notify/ID` | body sent to user ID's sockets on every instance; 202 `{"delivered":N,"published":P}` |
//! | anything else | 404 |
//!
//! Layout: `server` accepts and serves HTTP connections, `http` answers
//! requests, `socket` runs one WebSocket (a reader task and a
//! writer/heartbeat task joined by channels, because fastwebsockets'
//! `read_frame` is not cancel-safe), `registry` maps users to sockets, and
//! `fanout` carries notifications to the other instances through Redis
//! pub/sub.
//!
//! A notification is delivered to this instance's sockets at once; N counts
//! them. With a Redis URL it is then published on [`REDIS_CHANNEL`] for the
//! other instances, and P says whether Redis confirmed it (false without
//! Redis, while Redis is down, or when it did not confirm in time). The health
//! status never depends on Redis, so a Redis outage does not take the targets
//! out of their groups; `/health` only reports it.

mod fanout;
mod http;
mod registry;
mod server;
mod socket;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use fanout::{InvalidRedisUrl, CHANNEL as REDIS_CHANNEL};
use server::Backend;

/// The largest WebSocket message (after reassembly of fragments) that is
/// echoed; a larger one closes the connection with 1009.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Options of one backend instance.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// The name the backend reports in its hello message and its logs.
    pub id: String,
    /// Time between two Ping frames on each socket. `None` (or zero) disables
    /// pings.
    pub ping_interval: Option<Duration>,
    /// How long after a Ping a Pong must arrive before the socket is dropped.
    /// `None` (or zero) disables the pong deadline.
    pub ping_timeout: Option<Duration>,
    /// Redis URL (`redis://[user:password@]host[:port][/db]`) for fan-out of
    /// `POST /notify/ID` across instances through pub/sub. `None`: each
    /// instance reaches only its own sockets. While Redis is unreachable the
    /// backend keeps delivering locally and reconnects in the background.
    /// TLS (`rediss://`) is not built in.
    pub redis: Option<String>,
}

/// The health status given to [`BackendHandle::set_health_status`] or
/// `PUT /health` is outside 200–599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHealthStatus(pub u16);

impl fmt::Display for InvalidHealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health status {} is not between 200 and 599", self.0)
    }
}

impl std::error::Error for InvalidHealthStatus {}

/// A running backend. Dropping it does not stop the backend: cancel the token
/// given to [`start`] (or call [`BackendHandle::shutdown`]).
pub struct BackendHandle {
    local_addr: SocketAddr,
    backend: Arc<Backend>,
}

impl BackendHandle {
    /// The address the backend listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend id given in the options.
    pub fn id(&self) -> &str {
        &self.backend.options.id
    }

    /// Make `GET /health` answer `status` from now on.
    pub fn set_health_status(&self, status: u16) -> Result<(), InvalidHealthStatus> {
        self.backend.set_health_status(status)
    }

    /// The status `GET /health` answers now.
    pub fn health_status(&self) -> u16 {
        self.backend.health.load(Ordering::Relaxed)
    }

    /// The number of currently open WebSocket connections. A socket stops
    /// counting before its TCP connection is closed.
    pub fn connections(&self) -> usize {
        self.backend.registry.open_sockets()
    }

    /// Wait until exactly `count` WebSocket connections are open.
    pub async fn wait_for_connections(&self, count: usize) {
        let mut open = self.backend.registry.watch_open_sockets();
        // The sender lives as long as the backend, which `self` holds.
        let _ = open.wait_for(|&open| open == count).await;
    }

    /// Wait until the backend has stopped: the accept loop has ended and every
    /// connection is closed. Returns only after the cancellation token fired.
    pub async fn stopped(&self) {
        self.backend.tracker.wait().await;
    }

    /// Cancel the backend's token and wait until it has stopped.
    pub async fn shutdown(self) {
        self.backend.cancel.cancel();
        self.stopped().await;
    }
}

/// Serve on an already bound listener until `cancel` fires.
///
/// Spawns the accept loop (and the Redis subscriber when `options.redis` is
/// set) and returns at once, without waiting for Redis; the backend runs on
/// the current tokio runtime. Fails with [`std::io::ErrorKind::InvalidInput`]
/// (wrapping an [`InvalidRedisUrl`]) when the Redis URL cannot be used.
pub async fn start(
    listener: TcpListener,
    options: BackendOptions,
    cancel: CancellationToken,
) -> std::io::Result<BackendHandle> {
    let local_addr = listener.local_addr()?;
    let backend = Backend::new(options, cancel)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    server::spawn_accept_loop(backend.clone(), listener, local_addr);
    Ok(BackendHandle {
        local_addr,
        backend,
    })
}
