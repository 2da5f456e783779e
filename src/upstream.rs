//! Keep-alive HTTP/1.1 connections to targets.
//!
//! Each target keeps a small LIFO list of idle connections ([`IdleConns`], held by
//! [`crate::target_group::Target`]), so a request takes one without hashing or a
//! pool-wide lock. A request on a fresh connection [`connect`]s and runs the connection in
//! a task of its own; the response body ([`PooledBody`]) gives the connection back to its
//! list once the target's response has been read to the end. A connection is never given
//! back while a response is still streaming, after an error, or when the target asked to
//! close it (hyper then reports it closed and it is dropped at the next take).
//!
//! Idle connections live at most the load balancer's idle timeout: [`IdleConns::take`]
//! skips older ones, and [`IdleConns::evict_idle`] (called periodically) closes them
//! when no request comes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The sending half of one HTTP/1.1 connection to a target.
pub type Sender = http1::SendRequest<Incoming>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A target's idle keep-alive connections, most recently used last.
#[derive(Default)]
pub struct IdleConns {
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConns")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdleConns {
    /// The most recently used connection that can take a request now; closed ones and
    /// ones idle for `idle_timeout` or longer are dropped on the way.
    pub fn take(&self, idle_timeout: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        // Connections whose previous exchange is still winding down (rare) stay listed.
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if c.sender.is_closed() || now.saturating_duration_since(c.since) >= idle_timeout {
                continue;
            }
            if c.sender.is_ready() {
                found = Some(c.sender);
                break;
            }
            busy.push(c);
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    /// List `sender` as idle from now on.
    pub fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Close connections idle for `idle_timeout` or longer, and closed ones.
    pub fn evict_idle(&self, idle_timeout: Duration) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| {
                !c.sender.is_closed() && now.saturating_duration_since(c.since) < idle_timeout
            });
        }
    }

    /// Close every idle connection.
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Connections listed.
    pub fn len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How opening a connection to a target failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused, reset, unreachable...
    Io(std::io::Error),
    /// No answer within the connect timeout.
    Timeout,
    /// The HTTP/1.1 handshake (setting up the connection's state) failed.
    Handshake(hyper::Error),
}

/// Open a new HTTP/1.1 connection to `addr` (TCP_NODELAY) and run it in its own task
/// until it closes or its [`Sender`] is dropped.
pub async fn connect(
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("A connection to a target ended with an error: {e}.");
        }
    });
    Ok(sender)
}

/// A target's response body that gives its connection back to `home` once read to the
/// end (or at once, for a response without a body).
pub struct PooledBody {
    body: Incoming,
    conn: Option<(Sender, Arc<IdleConns>)>,
}

impl PooledBody {
    /// `body` of a response that came on `sender`; `reuse` false keeps the connection
    /// out of the list (it closes once the exchange is over).
    pub fn new(body: Incoming, sender: Sender, home: Arc<IdleConns>, reuse: bool) -> PooledBody {
        let mut b = PooledBody {
            body,
            conn: reuse.then_some((sender, home)),
        };
        if b.body.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A body that does not belong to a pooled connection.
    pub fn unpooled(body: Incoming) -> PooledBody {
        PooledBody { body, conn: None }
    }

    fn give_back(&mut self) {
        if let Some((sender, home)) = self.conn.take() {
            home.put(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            // A broken body leaves the connection unusable: drop it.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
