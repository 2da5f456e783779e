//! The health checker: one task per target group, checks spread over the interval,
//! each on a fresh connection, outcomes fed to the targets' state machines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::health_state::CheckOutcome;
use super::probe;
use super::registry::{Target, TargetGroupState};

/// Check `group`'s targets until `cancel` fires. Each target is checked once per
/// interval; targets seen together are spread evenly over the interval, and a check
/// never overlaps the next one of the same target (the timeout is shorter than the
/// interval).
pub async fn run_checker(group: Arc<TargetGroupState>, cancel: CancellationToken) {
    // The checker is restarted when these settings change.
    let hc = group.settings().health_check.clone();
    let tls = probe::tls_connector();
    let mut due: HashMap<SocketAddr, Instant> = HashMap::new();
    let mut checks: JoinSet<(Arc<Target>, CheckOutcome)> = JoinSet::new();
    loop {
        // Follow membership: new targets get a slot, removed or draining ones lose it.
        let targets = group.targets();
        due.retain(|addr, _| targets.iter().any(|t| t.addr == *addr && !is_draining(t)));
        let fresh: Vec<&Arc<Target>> = targets
            .iter()
            .filter(|t| !is_draining(t) && !due.contains_key(&t.addr))
            .collect();
        let now = Instant::now();
        let n = fresh.len() as u32;
        for (i, t) in fresh.into_iter().enumerate() {
            due.insert(t.addr, now + hc.interval * (i as u32 + 1) / (n + 1));
        }

        let next = due.values().min().copied();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = group.changed.notified() => continue,
            Some(done) = checks.join_next(), if !checks.is_empty() => {
                if let Ok((target, outcome)) = done {
                    if !is_draining(&target) {
                        group.observe(&target, outcome);
                    }
                }
            }
            _ = sleep => {
                let now = Instant::now();
                for t in targets.iter() {
                    let Some(at) = due.get_mut(&t.addr) else { continue };
                    if *at > now {
                        continue;
                    }
                    *at += hc.interval;
                    if *at <= now {
                        *at = now + hc.interval;
                    }
                    group.checking(t);
                    let (t, hc, tls) = (t.clone(), hc.clone(), tls.clone());
                    checks.spawn(async move {
                        let outcome = probe::check(t.addr, &hc, &tls).await;
                        tracing::debug!(target = %t.addr, ?outcome, "Health check finished.");
                        (t, outcome)
                    });
                }
            }
        }
    }
    checks.abort_all();
}

fn is_draining(t: &Target) -> bool {
    t.drain_token().is_cancelled()
        || t.health().state() == super::health_state::HealthState::Draining
}
