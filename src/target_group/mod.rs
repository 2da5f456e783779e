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

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::model::{Action, Config, Forward, TargetGroup, TargetGroupId, TargetSpec};
use crate::shutdown::Shutdown;

pub use dns::{Resolve, StaticResolver, SystemResolver};
pub use health_state::{HealthState, Reason};
pub use registry::{
    InFlight, Origin, Target, TargetGroupState, TargetHealthDescription, TargetId, TargetsError,
};
pub use select::Selection;

pub use sticky::StickyKey;

/// The target groups of one config, indexed by its [`TargetGroupId`]s, with their
/// settings as that config has them and the stickiness key: what a request chooses its
/// target from. Registrations and health are the groups' live state; the settings are
/// this config's, so a request sees one config's rules and group settings together.
#[derive(Debug)]
pub struct GroupSet {
    pub groups: Vec<Arc<TargetGroupState>>,
    /// `settings[i]` is `groups[i]`'s settings in this config.
    pub settings: Vec<Arc<TargetGroup>>,
    pub sticky: Arc<StickyKey>,
}

impl GroupSet {
    /// The group named `name`.
    pub fn by_name(&self, name: &str) -> Result<&Arc<TargetGroupState>, TargetsError> {
        self.groups
            .iter()
            .find(|g| &*g.name == name)
            .ok_or_else(|| TargetsError::UnknownGroup(name.to_string()))
    }
}

/// Every target group of a running load balancer, across configs. [`TargetGroups::apply`]
/// makes the groups match a config: a group whose name stays keeps its state (targets,
/// health, API registrations) and takes the new settings; a new group starts; a group
/// that left the config drains its targets and stops its checks.
pub struct TargetGroups {
    current: ArcSwap<GroupSet>,
    /// Serialises applies (which resolve DNS targets, so hold it across awaits).
    applying: tokio::sync::Mutex<()>,
    departed: mpsc::UnboundedSender<Arc<Target>>,
    /// Targets that left their group, for the one taker of [`TargetGroups::departures`].
    departures: Mutex<Option<mpsc::UnboundedReceiver<Arc<Target>>>>,
    /// The stickiness key of configs without `stickiness_secret`: drawn once per process,
    /// so a reload does not invalidate the cookies clients hold.
    random_key: Arc<StickyKey>,
    resolver: Arc<dyn Resolve>,
    dns_refresh: Duration,
    shutdown: Shutdown,
}

impl std::fmt::Debug for TargetGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetGroups")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl TargetGroups {
    /// No groups yet; DNS targets will resolve through `resolver` every `dns_refresh`, and
    /// every task stops with `shutdown`.
    pub fn new(shutdown: &Shutdown, resolver: Arc<dyn Resolve>, dns_refresh: Duration) -> Self {
        let (departed, departures) = mpsc::unbounded_channel();
        TargetGroups {
            current: ArcSwap::from_pointee(GroupSet {
                groups: Vec::new(),
                settings: Vec::new(),
                sticky: Arc::new(StickyKey::random()),
            }),
            applying: tokio::sync::Mutex::new(()),
            departed,
            departures: Mutex::new(Some(departures)),
            random_key: Arc::new(StickyKey::random()),
            resolver,
            dns_refresh,
            shutdown: shutdown.clone(),
        }
    }

    /// Make the groups match `config` (see the type's docs) and return them, indexed by
    /// `config`'s ids; they are also the [`TargetGroups::current`] ones from now on. The
    /// config's targets are registered (except those deregistered through the API), ones
    /// it no longer lists drain, DNS targets are resolved once.
    pub async fn apply(&self, config: &Config) -> Arc<GroupSet> {
        let _applying = self.applying.lock().await;
        let old = self.current.load_full();
        let mut groups = Vec::with_capacity(config.target_groups.len());
        let mut settings = Vec::with_capacity(config.target_groups.len());
        for (i, g) in config.target_groups.iter().enumerate() {
            let in_use = is_in_use(config, TargetGroupId(i));
            let snapshot = Arc::new(g.clone());
            let (state, checks_changed, dns_changed) = match old.by_name(&g.name) {
                Ok(state) => {
                    let dns_changed = dns_specs(&state.settings()) != dns_specs(g);
                    let checks_changed = state.reconfigure(snapshot.clone(), in_use);
                    (state.clone(), checks_changed, dns_changed)
                }
                Err(_) => {
                    let state = TargetGroupState::new(g, in_use, self.shutdown.clone())
                        .with_departures(self.departed.clone());
                    (Arc::new(state), true, true)
                }
            };
            self.register_configured(&state, g);
            if dns_changed {
                dns::refresh(&state, self.resolver.as_ref()).await;
            }
            if checks_changed || dns_changed {
                self.restart_tasks(&state);
            }
            groups.push(state);
            settings.push(snapshot);
        }
        for gone in old.groups.iter() {
            if !groups.iter().any(|g| Arc::ptr_eq(g, gone)) {
                self.retire(gone);
            }
        }
        let sticky = match &config.load_balancer.stickiness_secret {
            Some(secret) => Arc::new(StickyKey::from_secret(secret.expose())),
            None => self.random_key.clone(),
        };
        let set = Arc::new(GroupSet {
            groups,
            settings,
            sticky,
        });
        self.current.store(set.clone());
        set
    }

    /// Register the targets `g` lists; drain the config's targets it no longer lists.
    fn register_configured(&self, state: &Arc<TargetGroupState>, g: &TargetGroup) {
        let listed: Vec<SocketAddr> = g
            .targets
            .iter()
            .filter_map(|t| match t {
                TargetSpec::Addr(a) => Some(*a),
                TargetSpec::Dns { .. } => None,
            })
            .collect();
        for addr in &listed {
            if !state.deregistered_by_api(*addr) {
                // A target still draining from before comes back at the next apply.
                let _ = state.register(*addr, Origin::Config);
            }
        }
        for t in state.targets().iter() {
            if t.origin == Origin::Config && !listed.contains(&t.addr) {
                let _ = state.deregister(t.addr);
            }
        }
    }

    /// (Re)start the group's health checker (when a listener uses it and checks are on)
    /// and DNS refresher (when it has DNS targets), stopping the previous ones.
    fn restart_tasks(&self, state: &Arc<TargetGroupState>) {
        let cancel = self.shutdown.stop_accepting.child_token();
        if let Some(previous) = lock(&state.tasks).replace(cancel.clone()) {
            previous.cancel();
        }
        let settings = state.settings_full();
        if state.in_use() && settings.health_check.enabled {
            self.shutdown
                .tracker
                .spawn(health::run_checker(state.clone(), cancel.clone()));
        }
        if !dns_specs(&settings).is_empty() {
            self.shutdown.tracker.spawn(dns::run_refresh(
                state.clone(),
                self.resolver.clone(),
                self.dns_refresh,
                cancel,
            ));
        }
    }

    /// A group that left the config: its checks stop and its targets drain.
    fn retire(&self, state: &Arc<TargetGroupState>) {
        if let Some(tasks) = lock(&state.tasks).take() {
            tasks.cancel();
        }
        for t in state.targets().iter() {
            let _ = state.deregister(t.addr);
        }
        tracing::info!(
            target_group = %state.name,
            "Target group {} is no longer configured; its targets drain.",
            state.name
        );
    }

    /// The groups of the config applied last.
    pub fn current(&self) -> Arc<GroupSet> {
        self.current.load_full()
    }

    /// Every target that leaves its group from now on (its deregistration delay ended),
    /// in order. There is one such stream: the first call takes it, later calls get `None`.
    pub fn departures(&self) -> Option<mpsc::UnboundedReceiver<Arc<Target>>> {
        self.departures.lock().ok()?.take()
    }

    /// The current group named `name`.
    pub fn by_name(&self, name: &str) -> Result<Arc<TargetGroupState>, TargetsError> {
        self.current.load().by_name(name).cloned()
    }

    /// RegisterTargets: `addr` joins `group` (as ALB, registering it again is a no-op).
    pub fn register(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        let state = self.by_name(group)?;
        state.register(addr, Origin::Api)?;
        state.note_api_change(addr, false);
        Ok(())
    }

    /// DeregisterTargets: `addr` drains; a target the config lists stays deregistered
    /// across reloads while the group exists.
    pub fn deregister(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        let state = self.by_name(group)?;
        state.deregister(addr)?;
        state.note_api_change(addr, true);
        Ok(())
    }
}

/// The DNS targets of a group's settings.
fn dns_specs(g: &TargetGroup) -> Vec<&TargetSpec> {
    g.targets
        .iter()
        .filter(|t| matches!(t, TargetSpec::Dns { .. }))
        .collect()
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
