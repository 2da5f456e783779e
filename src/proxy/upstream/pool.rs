//! One target's idle keep-alive connections: a small LIFO list, so a request takes the
//! most recently used connection without hashing or a pool-wide lock.

use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http1;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The sending half of one HTTP/1.1 connection to a target, run by hyper in a task.
pub type Sender = http1::SendRequest<crate::proxy::client_io::RequestBody>;

/// One keep-alive connection to a target.
pub enum Conn {
    /// Run by hyper in a task of its own.
    Hyper(Sender),
    /// A bare stream between exchanges read without hyper (see `exchange`).
    Raw(TcpStream),
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An idle bare stream is usable when nothing can be read from it: readable means the
/// target closed it (or sent something unasked). Tokio's readiness answers without a
/// system call; only when it is stale does a read tell.
fn raw_is_usable(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
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
    pub fn take(&self, idle_timeout: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        // Connections whose previous exchange is still winding down (rare) stay listed.
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if now.saturating_duration_since(c.since) >= idle_timeout {
                continue;
            }
            match c.conn {
                Conn::Hyper(sender) => {
                    if sender.is_closed() {
                        continue;
                    }
                    if sender.is_ready() {
                        found = Some(Conn::Hyper(sender));
                        break;
                    }
                    busy.push(Idle {
                        conn: Conn::Hyper(sender),
                        since: c.since,
                    });
                }
                Conn::Raw(stream) => {
                    if raw_is_usable(&stream) {
                        found = Some(Conn::Raw(stream));
                        break;
                    }
                }
            }
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    /// List `conn` as idle from now on.
    pub fn put(&self, conn: Conn) {
        if let Conn::Hyper(sender) = &conn {
            if sender.is_closed() {
                return;
            }
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Close connections idle for `idle_timeout` or longer, and closed ones.
    pub fn evict_idle(&self, idle_timeout: Duration) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| {
                let open = match &c.conn {
                    Conn::Hyper(sender) => !sender.is_closed(),
                    Conn::Raw(_) => true,
                };
                open && now.saturating_duration_since(c.since) < idle_timeout
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
