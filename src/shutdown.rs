//! How the process stops: one place that owns the cancellation tokens and the task
//! tracker every long-lived task is spawned on.
//!
//! Order: stop accepting (accept loops end, HTTP connections finish their current
//! request) → wait for tracked tasks up to the deadline → close everything still open
//! (tunnels included) → wait briefly for those tasks to notice.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Fired first: stop accepting; HTTP connections close after their current request.
    pub stop_accepting: CancellationToken,
    /// Fired at the deadline: tunnels and anything left are closed.
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

    /// Run the shutdown sequence; returns when every tracked task has ended (or a
    /// short grace after the deadline has passed).
    pub async fn drain(&self, deadline: Duration) {
        self.stop_accepting.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(
                "Shutdown deadline of {} reached; closing {} remaining connections and tunnels.",
                humantime::format_duration(deadline),
                self.tracker.len()
            );
        }
        self.close_all.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}
