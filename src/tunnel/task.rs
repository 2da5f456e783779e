//! A tunnel as a task: the splice future, the tunnel's registration, and whatever must
//! live exactly as long as the tunnel; when the splice ends, the record is made and
//! logged and the tunnel leaves the registry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::record::TunnelRecord;
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

/// What a tunnel holds is told how it ended, with its record, when it ends.
pub trait OnEnd {
    fn ended(self, record: &TunnelRecord);
}

impl<F, G> Future for Tunnel<F, G>
where
    F: Future<Output = TunnelReport>,
    G: OnEnd,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let report = std::task::ready!(this.splice.poll(cx));
        let held = this.held.take();
        if let Some(registration) = this.registration.take() {
            let record = registration.finish(report);
            if let Some(held) = held {
                held.ended(&record);
            }
        }
        Poll::Ready(())
    }
}
