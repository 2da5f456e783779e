//! Ending a tunnel from outside: a one-byte request and a waker, polled by the tunnel's
//! driver beside its two directions. Whatever ends tunnels (a target's deregistration
//! delay running out, the shutdown deadline, a disconnect asked for by a test suite) does
//! it through this, one tunnel at a time.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use tokio::time::Instant;

/// How to end a tunnel on demand: each mode provokes one way a real WebSocket ends
/// behind a load balancer (DESIGN.md, "Disconnects on demand").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectMode {
    /// A browser tab closed: the target gets a FIN, the client's connection is closed.
    ClientClose,
    /// The network is gone: nothing more reaches either side, no byte, no FIN, no RST;
    /// what is still open is closed with a FIN once the idle timeout has passed since.
    NetworkDrop,
    /// The idle timeout, now: both sides closed with a FIN.
    IdleTimeout,
    /// A container stopped: the client's side is closed as if the target had sent a FIN,
    /// and the target's connection too.
    TargetClose,
    /// A crash or a middlebox: both sides get an RST.
    Reset,
}

impl DisconnectMode {
    /// Every mode, in the order the admin listener lists them.
    pub const ALL: [DisconnectMode; 5] = [
        DisconnectMode::ClientClose,
        DisconnectMode::NetworkDrop,
        DisconnectMode::IdleTimeout,
        DisconnectMode::TargetClose,
        DisconnectMode::Reset,
    ];

    /// The mode's name, as `?mode=` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectMode::ClientClose => "client_close",
            DisconnectMode::NetworkDrop => "network_drop",
            DisconnectMode::IdleTimeout => "idle_timeout",
            DisconnectMode::TargetClose => "target_close",
            DisconnectMode::Reset => "reset",
        }
    }
}

impl fmt::Display for DisconnectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is none of [`DisconnectMode::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a disconnect mode; the modes are ", self.0)?;
        for (i, mode) in DisconnectMode::ALL.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == DisconnectMode::ALL.len() => " and ",
                _ => ", ",
            };
            write!(f, "{sep}{mode}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for DisconnectMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<DisconnectMode, UnknownMode> {
        DisconnectMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

/// Why a tunnel was asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndRequest {
    /// Its target's deregistration delay ended.
    Deregistration,
    /// The load balancer's shutdown deadline passed.
    Shutdown,
    /// A disconnect was asked for (admin listener, Rust handle).
    Disconnect(DisconnectMode),
}

impl EndRequest {
    /// The request as one byte (0 means none).
    fn to_u8(self) -> u8 {
        match self {
            EndRequest::Deregistration => 1,
            EndRequest::Shutdown => 2,
            EndRequest::Disconnect(mode) => 3 + mode as u8,
        }
    }

    pub(super) fn from_u8(v: u8) -> Option<EndRequest> {
        match v {
            1 => Some(EndRequest::Deregistration),
            2 => Some(EndRequest::Shutdown),
            v => DisconnectMode::ALL
                .get(usize::from(v.checked_sub(3)?))
                .map(|&m| EndRequest::Disconnect(m)),
        }
    }
}

/// What outside a tunnel watches it through: the driver polls it to learn that the
/// tunnel must end, and tells it how far the tunnel got whenever bytes moved.
pub trait Supervisor {
    /// `Ready` once an end was requested; registers the task's waker otherwise.
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest>;

    /// `Ready` once an end other than `seen` was requested (a later request replaces a
    /// [`DisconnectMode::NetworkDrop`], see [`TunnelControl::end`]); registers the
    /// task's waker otherwise.
    fn poll_end_after(&self, cx: &mut Context<'_>, seen: EndRequest) -> Poll<EndRequest>;

    /// Bytes moved at `at`: `up` written client → target so far, `down` target → client.
    /// Called once per poll that moved bytes, never per byte.
    fn progress(&self, up: u64, down: u64, at: Instant) {
        let _ = (up, down, at);
    }
}

/// The end request of one tunnel: the first request wins and later ones change nothing,
/// except that any request replaces a network drop (a dropped tunnel can still be
/// closed, reset or shut down).
#[derive(Debug, Default)]
pub struct TunnelControl {
    requested: AtomicU8,
    waker: AtomicWaker,
}

impl TunnelControl {
    pub const fn new() -> TunnelControl {
        TunnelControl {
            requested: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// Ask the tunnel to end for `why`. True when this request took effect.
    pub fn end(&self, why: EndRequest) -> bool {
        request(&self.requested, &self.waker, why)
    }

    /// The request made, if any.
    pub fn requested(&self) -> Option<EndRequest> {
        requested(&self.requested)
    }
}

impl Supervisor for TunnelControl {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        poll_requested(&self.requested, &self.waker, cx, None)
    }

    fn poll_end_after(&self, cx: &mut Context<'_>, seen: EndRequest) -> Poll<EndRequest> {
        poll_requested(&self.requested, &self.waker, cx, Some(seen))
    }
}

const NETWORK_DROP: u8 = 3 + DisconnectMode::NetworkDrop as u8;

/// Record `why` in `requested` unless a request is there already (a network drop may be
/// replaced by anything but another drop), and wake the tunnel. True when recorded.
pub(super) fn request(requested: &AtomicU8, waker: &AtomicWaker, why: EndRequest) -> bool {
    let new = why.to_u8();
    let recorded = requested
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            (current == 0 || (current == NETWORK_DROP && new != NETWORK_DROP)).then_some(new)
        })
        .is_ok();
    waker.wake();
    recorded
}

/// The request recorded in `requested`, if any.
pub(super) fn requested(requested: &AtomicU8) -> Option<EndRequest> {
    EndRequest::from_u8(requested.load(Ordering::Acquire))
}

/// `Ready` with the request recorded in `requested` unless it is `seen`; else the task's
/// waker is left in `waker` for [`request`].
pub(super) fn poll_requested(
    requested_end: &AtomicU8,
    waker: &AtomicWaker,
    cx: &mut Context<'_>,
    seen: Option<EndRequest>,
) -> Poll<EndRequest> {
    let seen = seen.map_or(0, EndRequest::to_u8);
    let news = || match requested_end.load(Ordering::Acquire) {
        v if v == seen => None,
        v => EndRequest::from_u8(v),
    };
    if let Some(why) = news() {
        return Poll::Ready(why);
    }
    waker.register(cx.waker());
    // A request made between the load and the registration woke nobody.
    match news() {
        Some(why) => Poll::Ready(why),
        None => Poll::Pending,
    }
}

impl<T: Supervisor + ?Sized> Supervisor for Arc<T> {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        (**self).poll_end(cx)
    }

    fn poll_end_after(&self, cx: &mut Context<'_>, seen: EndRequest) -> Poll<EndRequest> {
        (**self).poll_end_after(cx, seen)
    }

    fn progress(&self, up: u64, down: u64, at: Instant) {
        (**self).progress(up, down, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn the_first_request_wins_and_wakes_the_tunnel() {
        let control = Arc::new(TunnelControl::new());
        let waiting = tokio::spawn({
            let control = control.clone();
            async move { poll_fn(|cx| control.poll_end(cx)).await }
        });
        tokio::task::yield_now().await;
        assert!(control.end(EndRequest::Deregistration));
        assert!(!control.end(EndRequest::Shutdown));
        assert_eq!(waiting.await.unwrap(), EndRequest::Deregistration);
        assert_eq!(control.requested(), Some(EndRequest::Deregistration));
    }

    #[tokio::test]
    async fn a_network_drop_is_replaced_by_a_later_request_and_wakes_the_tunnel_again() {
        let drop = EndRequest::Disconnect(DisconnectMode::NetworkDrop);
        let control = Arc::new(TunnelControl::new());
        assert!(control.end(drop));
        assert!(!control.end(drop));
        let waiting = tokio::spawn({
            let control = control.clone();
            async move { poll_fn(|cx| control.poll_end_after(cx, drop)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let reset = EndRequest::Disconnect(DisconnectMode::Reset);
        assert!(control.end(reset));
        assert!(!control.end(EndRequest::Shutdown));
        assert_eq!(waiting.await.unwrap(), reset);
    }

    #[test]
    fn requests_round_trip_through_their_byte_and_modes_through_their_names() {
        let mut all = vec![EndRequest::Deregistration, EndRequest::Shutdown];
        all.extend(DisconnectMode::ALL.map(EndRequest::Disconnect));
        for why in all {
            assert_eq!(EndRequest::from_u8(why.to_u8()), Some(why));
        }
        assert_eq!(EndRequest::from_u8(0), None);
        assert_eq!(EndRequest::from_u8(200), None);
        for mode in DisconnectMode::ALL {
            assert_eq!(mode.as_str().parse(), Ok(mode));
        }
        let err = "drop".parse::<DisconnectMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`drop` is not a disconnect mode; the modes are client_close, network_drop, \
             idle_timeout, target_close and reset"
        );
    }
}
