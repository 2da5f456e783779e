//! Ending a tunnel from outside: a one-byte request and a waker, polled by the tunnel's
//! driver beside its two directions. Whatever ends tunnels (a target's deregistration
//! delay running out, the shutdown deadline) does it through this, one tunnel at a time.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// Why a tunnel was asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndRequest {
    /// Its target's deregistration delay ended.
    Deregistration = 1,
    /// The load balancer's shutdown deadline passed.
    Shutdown = 2,
}

impl EndRequest {
    pub(super) fn from_u8(v: u8) -> Option<EndRequest> {
        match v {
            1 => Some(EndRequest::Deregistration),
            2 => Some(EndRequest::Shutdown),
            _ => None,
        }
    }
}

/// Something a tunnel's driver polls to learn that it must end.
pub trait EndSignal {
    /// `Ready` once an end was requested; registers the task's waker otherwise.
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest>;
}

/// The end request of one tunnel: the first request wins, later ones change nothing.
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

    /// Ask the tunnel to end for `why`. True when this was the first request.
    pub fn end(&self, why: EndRequest) -> bool {
        request(&self.requested, &self.waker, why)
    }

    /// The request made, if any.
    pub fn requested(&self) -> Option<EndRequest> {
        requested(&self.requested)
    }
}

impl EndSignal for TunnelControl {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        poll_requested(&self.requested, &self.waker, cx)
    }
}

/// Record `why` in `requested` unless a request is there already, and wake the tunnel.
pub(super) fn request(requested: &AtomicU8, waker: &AtomicWaker, why: EndRequest) -> bool {
    let first = requested
        .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    waker.wake();
    first
}

/// The request recorded in `requested`, if any.
pub(super) fn requested(requested: &AtomicU8) -> Option<EndRequest> {
    EndRequest::from_u8(requested.load(Ordering::Acquire))
}

/// `Ready` with the request recorded in `requested`; else the task's waker is left in
/// `waker` for [`request`].
pub(super) fn poll_requested(
    requested_end: &AtomicU8,
    waker: &AtomicWaker,
    cx: &mut Context<'_>,
) -> Poll<EndRequest> {
    if let Some(why) = requested(requested_end) {
        return Poll::Ready(why);
    }
    waker.register(cx.waker());
    // A request made between the load and the registration woke nobody.
    match requested(requested_end) {
        Some(why) => Poll::Ready(why),
        None => Poll::Pending,
    }
}

impl<T: EndSignal + ?Sized> EndSignal for Arc<T> {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        (**self).poll_end(cx)
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
}
