//! The load balancer's connection limit, `[load_balancer] max_connections`: how many
//! client connections (HTTP, HTTP/2 and the client sides of tunnels) are open at once.
//! Past it the listener closes a new connection as soon as it is accepted and counts it
//! (CloudWatch's `RejectedConnectionCount`); what is open already is not touched.
//!
//! Without a configured limit it is worked out from the process's descriptor limit
//! (`RLIMIT_NOFILE`): each client connection may hold two descriptors (its own and its
//! target connection or tunnel's target side), after [`RESERVED_DESCRIPTORS`] kept for
//! listeners, log files, health checks, the admin listener and idle splice pipes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Descriptors kept out of the default limit's sums.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// The limit and the connections open under it, shared by every listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    open: AtomicUsize,
    /// Set while connections are being refused, so that reaching the limit is logged
    /// once, not once per refused connection.
    refusing: AtomicBool,
    /// Connections refused since the limit was last reached.
    refused_lately: AtomicU64,
}

/// One client connection's place under the limit, given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: AtomicUsize::new(max.max(1)),
            open: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            refused_lately: AtomicU64::new(0),
        }
    }

    /// The limit a config asks for, or the one the descriptor limit allows.
    pub fn set_max(&self, configured: Option<usize>) {
        let max = configured.unwrap_or_else(default_max_connections).max(1);
        if self.max.swap(max, Ordering::AcqRel) != max {
            tracing::info!("At most {max} client connections are served at once.");
        }
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more client connection; `None` at the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.max();
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            if self.refusing.swap(false, Ordering::AcqRel) {
                let refused = self.refused_lately.swap(0, Ordering::AcqRel);
                tracing::info!(
                    "Accepting client connections again, after refusing {refused} at the limit of {max}."
                );
            }
            Some(ConnectionSlot(self.clone()))
        } else {
            self.refused_lately.fetch_add(1, Ordering::AcqRel);
            if !self.refusing.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    "{max} client connections are open, the limit (`max_connections`): new ones are closed at once until some end."
                );
            }
            None
        }
    }
}

/// The default limit: half of the descriptors the process may open, less
/// [`RESERVED_DESCRIPTORS`] (at least 1).
pub fn default_max_connections() -> usize {
    let descriptors = descriptor_limit().unwrap_or(1024);
    (descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(1) as usize
}

/// The process's `RLIMIT_NOFILE`, soft and hard.
fn nofile() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// The process's soft `RLIMIT_NOFILE`, `None` when it cannot be read or is unlimited.
pub fn descriptor_limit() -> Option<u64> {
    let limit = nofile()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Raise the soft descriptor limit to the hard one (what a server is allowed to use;
/// systemd's soft default of 1024 would hold 448 connections). Returns the new soft
/// limit. Only the binary does this: an embedding process keeps its own limits.
pub fn raise_descriptor_limit() -> Option<u64> {
    let limit = nofile()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one valid `rlimit`; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_refused_at_the_limit_and_given_back_when_dropped() {
        let limit = Arc::new(ConnectionLimit::new(2));
        let a = limit.try_acquire().expect("first");
        let b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none(), "a third past the limit");
        assert_eq!(limit.open(), 2);
        assert_eq!(limit.refused_lately.load(Ordering::Relaxed), 1);
        drop(a);
        let c = limit.try_acquire().expect("a place was given back");
        assert_eq!(limit.refused_lately.load(Ordering::Relaxed), 0);
        limit.set_max(Some(3));
        let d = limit.try_acquire().expect("the limit was raised");
        limit.set_max(Some(1));
        assert!(limit.try_acquire().is_none(), "lowered below what is open");
        assert_eq!(limit.open(), 3, "a lower limit closes nothing");
        drop((b, c, d));
        assert_eq!(limit.open(), 0);
    }

    #[test]
    fn the_default_keeps_two_descriptors_per_connection() {
        let Some(descriptors) = descriptor_limit() else {
            return;
        };
        let expected = (descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(1);
        assert_eq!(default_max_connections() as u64, expected);
        let limit = ConnectionLimit::new(5);
        limit.set_max(None);
        assert_eq!(limit.max() as u64, expected);
    }
}
