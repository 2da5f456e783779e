//! The tunnel idle timeout: one sleep, one activity stamp, no per-read timer resets.
//!
//! Transfers only stamp [`IdleClock::touch`]. When the sleep fires, the clock
//! checks whether anything moved since it was armed: if so it re-arms the
//! sleep to `last_activity + timeout`, otherwise the tunnel is idle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Tracks the last moment a byte moved through a tunnel.
#[derive(Debug)]
pub(crate) struct IdleClock {
    timeout: Duration,
    last_activity: Instant,
}

impl IdleClock {
    /// Starts the clock at `now`; arm a sleep with [`IdleClock::deadline`].
    pub(crate) fn new(timeout: Duration, now: Instant) -> Self {
        IdleClock {
            timeout,
            last_activity: now,
        }
    }

    /// How long a tunnel may stay idle.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the tunnel times out if nothing else moves.
    pub(crate) fn deadline(&self) -> Instant {
        self.last_activity + self.timeout
    }

    /// Records that bytes moved at `now`.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// `Ready` once the timeout has passed with no activity. `sleep` must have
    /// been created for [`IdleClock::deadline`]; it is re-armed here as needed.
    pub(crate) fn poll_expired(
        &self,
        cx: &mut Context<'_>,
        mut sleep: Pin<&mut Sleep>,
    ) -> Poll<()> {
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.deadline();
            if deadline <= sleep.deadline() {
                return Poll::Ready(());
            }
            // Activity since the sleep was armed: push it out and poll again
            // so the new deadline is registered with the timer.
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    async fn expire(clock: &IdleClock, sleep: Pin<&mut Sleep>) {
        let mut sleep = sleep;
        poll_fn(|cx| clock.poll_expired(cx, sleep.as_mut())).await
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clock_expires_after_timeout_without_activity() {
        let start = Instant::now();
        let clock = IdleClock::new(Duration::from_secs(60), start);
        let sleep = tokio::time::sleep_until(clock.deadline());
        tokio::pin!(sleep);
        expire(&clock, sleep.as_mut()).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clock_activity_pushes_deadline_out() {
        let start = Instant::now();
        let mut clock = IdleClock::new(Duration::from_secs(60), start);
        let sleep = tokio::time::sleep_until(clock.deadline());
        tokio::pin!(sleep);
        tokio::time::advance(Duration::from_secs(50)).await;
        clock.touch(Instant::now());
        tokio::time::advance(Duration::from_secs(20)).await;
        clock.touch(Instant::now());
        expire(&clock, sleep.as_mut()).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(130));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clock_not_expired_while_pending() {
        let clock = IdleClock::new(Duration::from_secs(60), Instant::now());
        let sleep = tokio::time::sleep_until(clock.deadline());
        tokio::pin!(sleep);
        tokio::time::advance(Duration::from_secs(59)).await;
        let polled = poll_fn(|cx| Poll::Ready(clock.poll_expired(cx, sleep.as_mut()))).await;
        assert!(polled.is_pending());
    }
}
