//! How the process stops: the one place that owns the cancellation tokens, the task
//! tracker every spawned task is on, and the order of a shutdown.
//!
//! [`Shutdown::run`] is the whole sequence, bounded by one deadline (`shutdown_timeout`):
//!
//! 1. **Stop accepting** (`stop_accepting` fires). Accept loops end; HTTP/1 connections
//!    finish the request under way and close, HTTP/2 connections send GOAWAY and finish
//!    their streams; health checkers, DNS refreshers and the keep-alive pool upkeep stop
//!    (idle target connections are closed); the in-process backends stop, so their
//!    WebSockets end with close code 1001, which travels through the tunnels.
//! 2. **Drain**, all of it at once: wait until every tracked task (connections,
//!    tunnels, target connections) has ended and the in-process backends have stopped,
//!    or until the deadline.
//! 3. **Close** what is left at the deadline (`close_all` fires): HTTP connections are
//!    dropped where they stand and every open tunnel is ended with cause `shutdown`.
//! 4. **Let the closes finish**: wait at most [`CLOSE_GRACE`] for those tasks to drop
//!    their sockets (a TLS tunnel sends its close_notify first).
//!
//! A drained proxy returns at step 2; one with connections left returns at most
//! [`CLOSE_GRACE`] after the deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long step 4 waits for closed tasks to finish: the tunnels' own bound on their
/// write shutdowns.
pub const CLOSE_GRACE: Duration = crate::tunnel::SHUTDOWN_GRACE;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Step 1: stop accepting; HTTP connections close after their current request;
    /// background tasks stop. In-process backends hold a child of it.
    pub stop_accepting: CancellationToken,
    /// Step 3: HTTP connections are dropped and requests still waiting for a target
    /// are cut. Cancelling it also cancels `stop_accepting`.
    pub close_all: CancellationToken,
    /// Every connection, tunnel and background task.
    pub tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let close_all = CancellationToken::new();
        Shutdown {
            // Closing everything also stops accepting.
            stop_accepting: close_all.child_token(),
            close_all,
            tracker: TaskTracker::new(),
        }
    }

    /// Run the shutdown sequence (see the module docs) within `timeout`. `draining`
    /// completes when whatever stops beside the tracked tasks has stopped (the
    /// in-process backends); `close` ends what the tokens do not reach (the tunnels).
    pub async fn run<F, C>(&self, timeout: Duration, draining: F, close: C)
    where
        F: Future<Output = ()>,
        C: FnOnce(),
    {
        let deadline = Instant::now() + timeout;
        // 1. Stop accepting.
        self.stop_accepting.cancel();
        self.tracker.close();
        // 2. Drain, bounded by the deadline.
        let drained = async {
            tokio::join!(draining, self.tracker.wait());
        };
        if tokio::time::timeout_at(deadline, drained).await.is_ok() {
            return;
        }
        // 3. Close what is left.
        tracing::info!(
            "Shutdown deadline of {} reached; closing {} remaining connections and tunnels.",
            humantime::format_duration(timeout),
            self.tracker.len()
        );
        self.close_all.cancel();
        close();
        // 4. Let the closes finish.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.tracker.wait()).await;
    }
}
