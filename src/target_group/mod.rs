//! Target groups at run time: the registered targets of each group and the choice of
//! one for a request. Health checks, stickiness and draining build on this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::model::{Forward, TargetGroup, TargetGroupId, TargetSpec};

/// One target group's registered targets and balancing state.
#[derive(Debug)]
pub struct TargetGroupState {
    pub name: String,
    targets: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl TargetGroupState {
    /// Register the group's configured targets. DNS targets are resolved once here.
    pub async fn new(group: &TargetGroup) -> TargetGroupState {
        let mut targets = Vec::new();
        for spec in &group.targets {
            match spec {
                TargetSpec::Addr(a) => targets.push(*a),
                TargetSpec::Dns { host, port } => {
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(addrs) => targets.extend(addrs),
                        Err(e) => tracing::warn!(
                            target_group = %group.name,
                            "Could not resolve target {host}:{port}: {e}."
                        ),
                    }
                }
            }
        }
        TargetGroupState {
            name: group.name.clone(),
            targets,
            next: AtomicUsize::new(0),
        }
    }

    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// The next target in round-robin order; `None` when no target is registered.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.targets.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        Some(self.targets[i])
    }
}

/// Choose the target group of a forward action by weight (share = weight / sum).
pub fn pick_group(forward: &Forward) -> Option<TargetGroupId> {
    match forward.target_groups.as_slice() {
        [] => None,
        [only] => Some(only.id),
        groups => {
            let total: u32 = groups.iter().map(|g| u32::from(g.weight)).sum();
            if total == 0 {
                return None;
            }
            let mut roll = rand::random_range(0..total);
            for g in groups {
                let w = u32::from(g.weight);
                if roll < w {
                    return Some(g.id);
                }
                roll -= w;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles() {
        let s = TargetGroupState {
            name: "t".into(),
            targets: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            next: AtomicUsize::new(0),
        };
        let picks: Vec<u16> = (0..4).map(|_| s.pick().unwrap().port()).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        let empty = TargetGroupState {
            name: "e".into(),
            targets: vec![],
            next: AtomicUsize::new(0),
        };
        assert_eq!(empty.pick(), None);
    }
}
