//! Connections to targets: per-target keep-alive pools, opening connections, and the
//! HTTP/1.1 exchange on them, shared by forwarding and upgrades.
//!
//! | file | job |
//! | --- | --- |
//! | `pool` | one target's idle connections ([`IdleConns`]) |
//! | [`exchange`](mod@exchange) | the raw exchange: write a request head, read the answer's head |
//! | `primed` | a hyper connection joining an exchange the raw one began ([`Primed`]) |
//! | `body` | response bodies that give their connection back ([`PooledBody`]) |
//!
//! [`Upstream`] keeps one pool per target, keyed by the target's id: made on the first
//! request to the target, dropped (its connections closed) when the target leaves its
//! group. A request takes the most recently used idle connection or opens one; the
//! response body gives it back once the answer has been read to the end. Idle
//! connections live at most the idle timeout: [`IdleConns::take`] skips older ones and
//! [`Upstream::evict_idle`] (run periodically) closes them when no request comes.
//!
//! A request without a body needs no hyper client: its head is written and the answer's
//! head read by [`exchange()`] in the request's own task, a `Content-Length` body read
//! by [`PooledBody`], and the connection waits in the pool as a bare stream
//! ([`Conn::Raw`]). What the raw exchange does not read itself goes to a hyper client
//! connection over the same stream and bytes ([`Upstream::read_with_hyper`]); that
//! connection stays a hyper one ([`Conn::Hyper`]). Every hyper connection runs in a task
//! on the shutdown's tracker.

mod body;
pub mod exchange;
mod pool;
mod primed;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::client_io::RequestBody;
use super::error::TargetError;
use crate::target_group::{Target, TargetId};

pub use body::{BodyError, PooledBody};
pub use exchange::{encode_request_head, exchange, Expect, RawAnswer};
pub use pool::{Conn, IdleConns, Sender};
pub use primed::Primed;

/// The load balancer's side of its targets: keep-alive pools and new connections.
pub struct Upstream {
    /// One pool per target; swapped whole when a target comes or goes, so a request
    /// finds its pool without a lock (and, target ids being small integers, without
    /// SipHash).
    pools: ArcSwap<FxHashMap<TargetId, Arc<IdleConns>>>,
    /// Serialises pool additions and removals.
    write: Mutex<()>,
    /// Where hyper's client connections run.
    tracker: TaskTracker,
    /// The load balancer's timeouts, in nanoseconds; a config change sets them.
    connect_timeout: AtomicU64,
    idle_timeout: AtomicU64,
    /// Connections made to targets since the start.
    connects: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("pools", &self.pools.load().len())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Connections opened within `connect_timeout`, kept idle at most `idle_timeout`,
    /// hyper's connection tasks on `tracker`.
    pub fn new(tracker: TaskTracker, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Upstream {
            connects: AtomicU64::new(0),
            pools: ArcSwap::from_pointee(FxHashMap::default()),
            write: Mutex::new(()),
            tracker,
            connect_timeout: AtomicU64::new(nanos(connect_timeout)),
            idle_timeout: AtomicU64::new(nanos(idle_timeout)),
        }
    }

    /// Use these timeouts from now on (a config change).
    pub fn set_timeouts(&self, connect_timeout: Duration, idle_timeout: Duration) {
        self.connect_timeout
            .store(nanos(connect_timeout), Ordering::Relaxed);
        self.idle_timeout
            .store(nanos(idle_timeout), Ordering::Relaxed);
    }

    /// How long a connection may stay idle (the load balancer's idle timeout).
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout.load(Ordering::Relaxed))
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_nanos(self.connect_timeout.load(Ordering::Relaxed))
    }

    /// The tracker hyper's connection tasks run on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The keep-alive pool of `target`, made on first use. A target that has left its
    /// group gets a pool of its own that is not kept (its connections close after use).
    pub fn pool(&self, target: &Target) -> Arc<IdleConns> {
        if let Some(pool) = self.pools.load().get(&target.id) {
            return pool.clone();
        }
        let _w = lock(&self.write);
        let current = self.pools.load_full();
        if let Some(pool) = current.get(&target.id) {
            return pool.clone();
        }
        let pool = Arc::new(IdleConns::default());
        // Its departure (sent after the drain token fires) may have been handled already.
        if !target.drain_token().is_cancelled() {
            let mut next = FxHashMap::clone(&current);
            next.insert(target.id, pool.clone());
            self.pools.store(Arc::new(next));
        }
        pool
    }

    /// Drop the pool of a target that left its group, closing its idle connections.
    pub fn remove(&self, target: TargetId) {
        let _w = lock(&self.write);
        let current = self.pools.load_full();
        if let Some(pool) = current.get(&target) {
            pool.clear();
            let mut next = FxHashMap::clone(&current);
            next.remove(&target);
            self.pools.store(Arc::new(next));
        }
    }

    /// Close connections idle for the idle timeout, in every pool.
    pub fn evict_idle(&self) {
        let idle_timeout = self.idle_timeout();
        for pool in self.pools.load().values() {
            pool.evict_idle(idle_timeout);
        }
    }

    /// Close every idle connection (at shutdown).
    pub fn clear(&self) {
        for pool in self.pools.load().values() {
            pool.clear();
        }
    }

    /// Open a TCP connection to `addr` (TCP_NODELAY) within the connect timeout.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, TargetError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout(), TcpStream::connect(addr)).await {
                Err(_) => return Err(TargetError::ConnectTimeout),
                Ok(Err(e)) => return Err(TargetError::connect(e)),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// Connections made to targets since the start (CloudWatch's `NewConnectionCount`
    /// counts them beside client connections).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Keep-alive connections to targets idle in the pools now.
    pub fn idle_count(&self) -> usize {
        self.pools.load().values().map(|p| p.len()).sum()
    }

    /// Run a hyper HTTP/1.1 client connection over `stream` in a task of its own.
    pub async fn handshake(&self, stream: TcpStream) -> Result<Sender, TargetError> {
        self.handshake_io(stream).await
    }

    /// Let hyper read the answer to a request already written on `stream`, of which
    /// `received` was already read (see [`Primed`]): the answer's head, its body, and
    /// the connection's sender (for later requests on it). The stand-in request hyper
    /// believes it sends carries `method` (it decides the framing of the answer) and
    /// `body` (an empty one). `reused` tells whether the stream served an exchange
    /// before.
    pub async fn read_with_hyper(
        &self,
        stream: TcpStream,
        received: BytesMut,
        method: http::Method,
        body: RequestBody,
        reused: bool,
    ) -> Result<(http::response::Parts, Incoming, Sender), TargetError> {
        let mut sender = self
            .handshake_io(Primed::new(stream, received.freeze()))
            .await?;
        let mut stand_in = http::Request::new(body);
        *stand_in.method_mut() = method;
        let resp = sender
            .send_request(stand_in)
            .await
            .map_err(|e| TargetError::hyper(e, reused))?;
        let (head, body) = resp.into_parts();
        Ok((head, body, sender))
    }

    async fn handshake_io<T>(&self, io: T) -> Result<Sender, TargetError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| TargetError::hyper(e, false))?;
        self.tracker.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(
                    "A connection to a target ended with an error: {}",
                    super::error::Chain(&e)
                );
            }
        });
        Ok(sender)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
