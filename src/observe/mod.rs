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

pub use metrics::{GroupStats, Histogram, Metrics};

/// A connection's `conn_trace_id`, which links its connection-log line to the
/// access-log lines of its requests: 16 random bytes, written as `TID_` and 32 hex
/// digits. Kept as bytes (copied, never allocated) until a log writer writes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConnTraceId([u8; 16]);

impl ConnTraceId {
    /// A new random id, from a fast generator of this thread's own seeded from the
    /// operating system (an id only needs to be unique; one per connection, so the
    /// cryptographic generator's cost is not paid per connection).
    pub fn random() -> ConnTraceId {
        use rand::{RngCore, SeedableRng};
        std::thread_local! {
            static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
                std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
        }
        let mut bytes = [0u8; 16];
        IDS.with(|ids| ids.borrow_mut().fill_bytes(&mut bytes));
        ConnTraceId(bytes)
    }

    /// The id made of `bytes`.
    pub const fn from_bytes(bytes: [u8; 16]) -> ConnTraceId {
        ConnTraceId(bytes)
    }

    /// The id as its log field writes it.
    pub fn to_text(self) -> [u8; 36] {
        let mut text = *b"TID_00000000000000000000000000000000";
        for (pair, b) in text[4..].chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        text
    }

    /// Append the id as its log field writes it.
    pub fn write_to(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_text());
    }
}

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 15]];
        b += 1;
    }
    pairs
};

impl std::fmt::Display for ConnTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_text()).unwrap_or_default())
    }
}

impl std::fmt::Debug for ConnTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::ConnTraceId;

    #[test]
    fn a_conn_trace_id_is_tid_and_32_hex_digits() {
        let id = ConnTraceId([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3, 4, 5, 6, 0xff,
        ]);
        assert_eq!(id.to_string(), "TID_0123456789abcdef00010203040506ff");
        let mut out = b"x ".to_vec();
        id.write_to(&mut out);
        assert_eq!(out, b"x TID_0123456789abcdef00010203040506ff");
        let ids: std::collections::HashSet<[u8; 36]> = (0..10_000)
            .map(|_| ConnTraceId::random().to_text())
            .collect();
        assert_eq!(ids.len(), 10_000, "ids repeat");
        let other_thread = std::thread::spawn(ConnTraceId::random).join().unwrap();
        assert!(!ids.contains(&other_thread.to_text()));
    }
}
