//! The counters behind `/metrics`.
//!
//! Load-balancer-wide counts live in one [`Metrics`]; a target group's in its
//! [`GroupStats`], which the group and each of its targets share (a request counts
//! through the target it was sent to, with no lookup). Gauges that can be read off the
//! running state (healthy hosts, open tunnels) are not kept here: `/metrics` computes
//! them when it is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the response-time histogram's buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram of durations: one count per bucket of [`BUCKETS`] (not cumulative) and
/// one above the last, with the sum in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// (sum in seconds, count, the count of each bucket by its upper bound: those of
    /// [`BUCKETS`], then `f64::MAX` for the rest; not cumulative).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .chain(std::iter::once(&f64::MAX))
            .zip(&self.counts)
            .map(|(&bound, c)| (bound, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// What CloudWatch counts per target group.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// `RequestCount` (TargetGroup dimension): requests and upgrades sent to a target.
    pub requests: AtomicU64,
    /// `HTTPCode_Target_{1..5}XX_Count`, by the first digit of the target's status.
    pub target_codes: [AtomicU64; 5],
    /// `TargetConnectionErrorCount`: connections to a target that could not be made.
    pub connection_errors: AtomicU64,
    /// `TargetResponseTime`: request sent → response head received.
    pub response_time: Histogram,
}

impl GroupStats {
    /// Count a status a target answered.
    pub fn target_status(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.target_codes.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Load-balancer-wide counts.
#[derive(Debug)]
pub struct Metrics {
    /// `RequestCount`: requests for which a target was chosen.
    pub requests: AtomicU64,
    /// `NewConnectionCount`: client connections accepted, and connections made to
    /// targets.
    pub new_connections: AtomicU64,
    /// `ActiveConnectionCount` (client side): client connections open now.
    pub active_client_connections: AtomicU64,
    /// `ActiveConnectionCount` (target side): connections to targets open now.
    pub active_target_connections: AtomicU64,
    /// `RejectedConnectionCount`.
    pub rejected_connections: AtomicU64,
    /// `ClientTLSNegotiationErrorCount`.
    pub client_tls_negotiation_errors: AtomicU64,
    /// `ProcessedBytes`: bytes from and to clients, heads included.
    pub processed_bytes: AtomicU64,
    /// `HTTP_Fixed_Response_Count`.
    pub fixed_responses: AtomicU64,
    /// `HTTP_Redirect_Count`.
    pub redirects: AtomicU64,
    /// `HTTP_Redirect_Url_Limit_Exceeded_Count`.
    pub redirect_url_limit_exceeded: AtomicU64,
    /// `HTTPCode_ELB_{code}_Count`: statuses the load balancer made itself, by code
    /// (index `code - 100`).
    elb_codes: [AtomicU64; 500],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: AtomicU64::new(0),
            new_connections: AtomicU64::new(0),
            active_client_connections: AtomicU64::new(0),
            active_target_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            client_tls_negotiation_errors: AtomicU64::new(0),
            processed_bytes: AtomicU64::new(0),
            fixed_responses: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            redirect_url_limit_exceeded: AtomicU64::new(0),
            elb_codes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// Count a status the load balancer made itself.
    pub fn elb_status(&self, status: u16) {
        if let Some(c) = status
            .checked_sub(100)
            .and_then(|i| self.elb_codes.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every status the load balancer made, with its count (codes never made left out).
    pub fn elb_statuses(&self) -> Vec<(u16, u64)> {
        self.elb_codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }
}

/// One more of `c`.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Decrease a gauge.
pub fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_per_bucket_with_a_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(30));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 30.0205).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[4], (0.025, 1));
        assert_eq!(buckets[BUCKETS.len() - 1], (10.0, 0));
        assert_eq!(buckets.last().unwrap(), &(f64::MAX, 1));
    }

    #[test]
    fn statuses_count_by_code_and_class() {
        let m = Metrics::default();
        m.elb_status(502);
        m.elb_status(502);
        m.elb_status(460);
        m.elb_status(42);
        assert_eq!(m.elb_statuses(), [(460, 1), (502, 2)]);
        let g = GroupStats::default();
        g.target_status(204);
        g.target_status(503);
        g.target_status(99);
        assert_eq!(g.target_codes[1].load(Ordering::Relaxed), 1);
        assert_eq!(g.target_codes[4].load(Ordering::Relaxed), 1);
    }
}
