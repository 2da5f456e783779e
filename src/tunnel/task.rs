//! A tunnel as a task: the splice future, the tunnel's registration, and whatever must
//! live exactly as long as the tunnel; when the splice ends, the record is made and
//! logged and the tunnel leaves the registry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::registry::Registration;
use super::TunnelReport;

pin_project_lite::pin_project! {
    /// One open tunnel's whole task. Spawn it; it resolves once the tunnel has ended and
    /// its record is written (see [`Registration::finish`]).
    pub struct Tunnel<F, G> {
        #[pin]
        splice: F,
        registration: Option<Registration>,
        // Dropped when the tunnel ends (e.g. the target's in-flight count).
        held: Option<G>,
    }
}

impl<F, G> Tunnel<F, G>
where
    F: Future<Output = TunnelReport>,
{
    /// `splice` (made with the registration's handle as its end signal), listed in the
    /// registry by `registration`, holding `held` until it ends.
    pub fn new(splice: F, registration: Registration, held: G) -> Self {
        Tunnel {
            splice,
            registration: Some(registration),
            held: Some(held),
        }
    }
}

impl<F, G> Future for Tunnel<F, G>
where
    F: Future<Output = TunnelReport>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let report = std::task::ready!(this.splice.poll(cx));
        drop(this.held.take());
        if let Some(registration) = this.registration.take() {
            registration.finish(report);
        }
        Poll::Ready(())
    }
}
