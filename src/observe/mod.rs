//! What the load balancer counts, as CloudWatch's `AWS/ApplicationELB` metrics define
//! them: counters and histograms kept as atomics, so the request path takes no lock and
//! allocates nothing to count. `/metrics` on the admin listener reads them. Log files
//! are written by a thread of their own from a bounded queue (`log_file`).

pub mod access_log;
pub mod log_file;
pub mod metrics;

pub use log_file::{Line, LogFile};
pub use metrics::{GroupStats, Histogram, Metrics};
