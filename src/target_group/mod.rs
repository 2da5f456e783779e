//! Target groups at run time, as ALB runs them: registered targets and their health
//! (`initial`, `healthy`, `unhealthy`, `draining`, `unused` with ALB's reason codes),
//! one health checker per group, fail-open routing, the balancing algorithms, sticky
//! sessions, slow start, deregistration with draining, and DNS discovery.
//!
//! | file | job |
//! | --- | --- |
//! | [`health_state`] | the per-target health state machine (pure) |
//! | [`health`] / [`probe`] | the checker task / one health check |
//! | [`balancer`] | round robin, least outstanding, weighted, slow-start ramp (pure) |
//! | [`registry`] | one group's targets: register, deregister, pick, describe |
//! | [`select`] | request → group → target, stickiness cookies on the answer |
//! | [`sticky`] | ALB's cookies and their sealed values |
//! | [`dns`] | DNS targets and the resolver seam |
//!
//! It answers questions (which target now, what is its health) and holds no HTTP client
//! or connection: beyond its own health checks it reads request cookies and writes
//! `Set-Cookie`. Each registration of a target has a [`TargetId`]; what other modules keep
//! per target (keep-alive pools, tunnels) is keyed by it, and [`TargetGroups::departures`]
//! tells when a target has left its group so they can let go of it.

pub mod balancer;
pub mod dns;
pub mod health;
pub mod health_state;
pub mod probe;
pub mod registry;
pub mod select;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::model::{Action, Config, Forward, TargetGroupId, TargetSpec};
use crate::shutdown::Shutdown;

pub use dns::{Resolve, StaticResolver, SystemResolver};
pub use health_state::{HealthState, Reason};
pub use registry::{
    InFlight, Origin, Target, TargetGroupState, TargetHealthDescription, TargetId, TargetsError,
};
pub use select::Selection;
pub use sticky::StickyKey;

/// Every target group of a config, and the stickiness key.
#[derive(Debug)]
pub struct TargetGroups {
    /// Indexed by [`TargetGroupId`].
    pub groups: Vec<Arc<TargetGroupState>>,
    pub sticky: StickyKey,
    /// Targets that left their group, for the one taker of [`TargetGroups::departures`].
    departures: Mutex<Option<mpsc::UnboundedReceiver<Arc<Target>>>>,
}

impl TargetGroups {
    /// Build the groups and register their configured targets; DNS targets are resolved
    /// here once through `resolver`.
    pub async fn new(config: &Config, shutdown: &Shutdown, resolver: &dyn Resolve) -> Self {
        let sticky = match &config.load_balancer.stickiness_secret {
            Some(secret) => StickyKey::from_secret(secret.expose()),
            None => StickyKey::random(),
        };
        let (departed, departures) = mpsc::unbounded_channel();
        let mut groups = Vec::with_capacity(config.target_groups.len());
        for (i, g) in config.target_groups.iter().enumerate() {
            let id = TargetGroupId(i);
            let in_use = is_in_use(config, id);
            let state = Arc::new(
                TargetGroupState::new(id, g, in_use, shutdown.clone())
                    .with_departures(departed.clone()),
            );
            for spec in &g.targets {
                if let TargetSpec::Addr(a) = spec {
                    let _ = state.register(*a, Origin::Config);
                }
            }
            dns::refresh(&state, resolver).await;
            groups.push(state);
        }
        TargetGroups {
            groups,
            sticky,
            departures: Mutex::new(Some(departures)),
        }
    }

    /// Every target that leaves its group from now on (its deregistration delay ended),
    /// in order. There is one such stream: the first call takes it, later calls get `None`.
    pub fn departures(&self) -> Option<mpsc::UnboundedReceiver<Arc<Target>>> {
        self.departures.lock().ok()?.take()
    }

    /// Start a health checker for every group a listener uses (with checks enabled) and
    /// a DNS refresher for every group with DNS targets, all stopping with `shutdown`.
    pub fn start(&self, shutdown: &Shutdown, resolver: Arc<dyn Resolve>, dns_refresh: Duration) {
        for g in &self.groups {
            if g.in_use && g.config.health_check.enabled {
                let cancel = shutdown.stop_accepting.clone();
                shutdown
                    .tracker
                    .spawn(health::run_checker(g.clone(), cancel));
            }
            if g.config
                .targets
                .iter()
                .any(|t| matches!(t, TargetSpec::Dns { .. }))
            {
                let cancel = shutdown.stop_accepting.clone();
                shutdown.tracker.spawn(dns::run_refresh(
                    g.clone(),
                    resolver.clone(),
                    dns_refresh,
                    cancel,
                ));
            }
        }
    }

    /// The group named `name`.
    pub fn by_name(&self, name: &str) -> Result<&Arc<TargetGroupState>, TargetsError> {
        self.groups
            .iter()
            .find(|g| &*g.name == name)
            .ok_or_else(|| TargetsError::UnknownGroup(name.to_string()))
    }

    pub fn register(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        self.by_name(group)?.register(addr, Origin::Api)
    }

    pub fn deregister(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        self.by_name(group)?.deregister(addr)
    }
}

/// Whether a listener's default action or rule forwards to `id`.
fn is_in_use(config: &Config, id: TargetGroupId) -> bool {
    let forwards_to = |a: &Action| match a {
        Action::Forward(f) => f.target_groups.iter().any(|g| g.id == id),
        _ => false,
    };
    config
        .listeners
        .iter()
        .any(|l| forwards_to(&l.default_action) || l.rules.iter().any(|r| forwards_to(&r.action)))
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
mod tests;
