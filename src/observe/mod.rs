//! What the load balancer counts, as CloudWatch's `AWS/ApplicationELB` metrics define
//! them: counters and histograms kept as atomics, so the request path takes no lock and
//! allocates nothing to count. `/metrics` on the admin listener reads them.

pub mod metrics;

pub use metrics::{GroupStats, Histogram, Metrics};
