//! What the load balancer counts, as CloudWatch's `AWS/ApplicationELB` metrics define
//! them: counters and histograms kept as atomics, so the request path takes no lock and
//! allocates nothing to count. `/metrics` on the admin listener reads them. Log files
//! are written by a thread of their own from a bounded queue (`log_file`).

pub mod access_log;
pub mod connection_log;
pub mod log_file;
pub mod metrics;

pub use access_log::{AccessRecord, Kind};
pub use connection_log::ConnectionRecord;
pub use log_file::{Line, LogFile};

use std::sync::Arc;

pub use metrics::{GroupStats, Histogram, Metrics};

/// A new connection's `conn_trace_id` (`TID_` and 32 hex digits), which links its
/// connection-log line to the access-log lines of its requests.
pub fn conn_trace_id() -> Arc<str> {
    use std::fmt::Write as _;
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(36);
    id.push_str("TID_");
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    Arc::from(id)
}
