//! Desync mitigation as ALB does it: every HTTP/1 request head is classified by AWS's
//! `http_desync_guardian` (Compliant, Acceptable, Ambiguous, Severe, with a reason), and
//! `desync_mitigation_mode` decides what happens to it (ALB's table):
//!
//! | class      | monitor | defensive                         | strictest |
//! |------------|---------|-----------------------------------|-----------|
//! | Compliant  | allow   | allow                             | allow     |
//! | Acceptable | allow   | allow                             | block 400 |
//! | Ambiguous  | allow   | allow, then close client + target | block 400 |
//! | Severe     | allow   | block 400 + close client          | block 400 |
//!
//! A non-compliant classification travels with the request as a [`Classification`]
//! extension so the access log can write `classification` and `classification_reason`;
//! a request without one is compliant.

use http_desync_guardian::request_analyzer::HttpRequestData;
pub use http_desync_guardian::{ClassificationReason, RequestSafetyTier};

use crate::config::model::DesyncMitigationMode;

/// How a request was classified, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub tier: RequestSafetyTier,
    pub reason: ClassificationReason,
}

impl Classification {
    pub const COMPLIANT: Classification = Classification {
        tier: RequestSafetyTier::Compliant,
        reason: ClassificationReason::Compliant,
    };

    pub fn is_compliant(&self) -> bool {
        self.tier == RequestSafetyTier::Compliant
    }

    /// The access log's `classification` field: `-` when compliant, else the class.
    pub fn class_field(&self) -> &'static str {
        match self.tier {
            RequestSafetyTier::Compliant => "-",
            RequestSafetyTier::Acceptable => "Acceptable",
            RequestSafetyTier::Ambiguous => "Ambiguous",
            RequestSafetyTier::Severe => "Severe",
        }
    }

    /// The access log's `classification_reason`: `-` when compliant, else ALB's code.
    pub fn reason_field(&self) -> String {
        if self.is_compliant() {
            "-".to_string()
        } else {
            format!("{:?}", self.reason)
        }
    }
}

/// What the mode does with a request of some class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mitigation {
    /// Serve it normally.
    Allow,
    /// Serve it, then close the client connection and do not reuse the target connection.
    AllowThenClose,
    /// Answer 400 and close the client connection.
    Block,
}

/// Classify one raw request head (request line and headers, ending with the empty line).
pub fn classify(head: &[u8]) -> Classification {
    let result = HttpRequestData::analyze_raw_request(head);
    Classification {
        tier: result.tier,
        reason: result.reason,
    }
}

/// ALB's table: what `mode` does with a request of class `tier`.
pub fn mitigation(mode: DesyncMitigationMode, tier: RequestSafetyTier) -> Mitigation {
    use DesyncMitigationMode::*;
    use RequestSafetyTier::*;
    match (mode, tier) {
        (_, Compliant) | (Monitor, _) => Mitigation::Allow,
        (Defensive, Acceptable) => Mitigation::Allow,
        (Defensive, Ambiguous) => Mitigation::AllowThenClose,
        (Defensive, Severe) | (Strictest, _) => Mitigation::Block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn albs_table() {
        use DesyncMitigationMode::*;
        use Mitigation::*;
        use RequestSafetyTier::*;
        let want = [
            (Compliant, [Allow, Allow, Allow]),
            (Acceptable, [Allow, Allow, Block]),
            (Ambiguous, [Allow, AllowThenClose, Block]),
            (Severe, [Allow, Block, Block]),
        ];
        for (tier, actions) in want {
            for (mode, action) in [Monitor, Defensive, Strictest].into_iter().zip(actions) {
                assert_eq!(mitigation(mode, tier), action, "{tier:?} in {mode:?}");
            }
        }
    }

    #[test]
    fn raw_heads_are_classified() {
        let c = classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c, Classification::COMPLIANT);
        let c =
            classify(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(c.tier, RequestSafetyTier::Ambiguous);
        assert_eq!(c.reason_field(), "BothTeClPresent");
    }
}
