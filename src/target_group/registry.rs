//! One target group at run time: its registered targets, their health, registration
//! and deregistration (draining), and the choice of a target for a request.
//!
//! The target list is an immutable snapshot swapped on every membership change, so a
//! pick reads it without a lock and without allocating.

use crate::observe::GroupStats;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::balancer;
use super::health_state::{
    CheckOutcome, HealthState, Reason, TargetHealth, Thresholds, Transition,
};
use crate::config::model::{Algorithm, HealthCheckPort, TargetGroup};
use crate::shutdown::Shutdown;

/// How a target may be routed to, mirrored from its health for lock-free picks.
const ROUTE_HEALTHY: u8 = 0;
/// Initial or unhealthy: routed only when the group fails open.
const ROUTE_FAIL_OPEN: u8 = 1;
/// Draining: never routed.
const ROUTE_NEVER: u8 = 2;

/// Who registered a target; DNS discovery only deregisters what it registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Dns,
    Api,
}

/// Names one registration of a target for the life of the process: a target registered
/// again after it left its group has a new id. What other modules keep per target (keep-
/// alive connections, tunnels) is keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u64);

impl TargetId {
    fn next() -> TargetId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TargetId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A registered target.
#[derive(Debug)]
pub struct Target {
    pub id: TargetId,
    pub addr: SocketAddr,
    /// The name of the group it is registered in.
    pub group: Arc<str>,
    pub origin: Origin,
    health: Mutex<TargetHealth>,
    route: AtomicU8,
    /// Nanoseconds after the group's epoch when slow start began, plus one; 0 = none.
    slow_start_from: AtomicU64,
    outstanding: AtomicUsize,
    /// Cancelled when the deregistration delay ends: closes the target's tunnels and
    /// cuts requests still waiting for it. A child of the shutdown's `close_all`.
    drain: CancellationToken,
    /// Requests and upgrades sent to it since it registered.
    requests: AtomicU64,
    /// Its group's counters (shared by the group and all its targets).
    pub stats: Arc<GroupStats>,
}

impl Target {
    /// Requests and upgrades sent to this target since it registered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests and tunnels in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Cancelled when the target's deregistration delay has ended.
    pub fn drain_token(&self) -> &CancellationToken {
        &self.drain
    }

    pub fn health(&self) -> TargetHealth {
        lock(&self.health).clone()
    }

    fn route(&self) -> u8 {
        self.route.load(Ordering::Relaxed)
    }

    fn sync_route(&self, h: &TargetHealth) {
        let r = match h.state() {
            HealthState::Healthy => ROUTE_HEALTHY,
            HealthState::Initial | HealthState::Unhealthy | HealthState::Unused => ROUTE_FAIL_OPEN,
            HealthState::Draining | HealthState::Unavailable => ROUTE_NEVER,
        };
        self.route.store(r, Ordering::Relaxed);
    }
}

/// A request or tunnel in flight to a target; counts as outstanding until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Target>);

impl InFlight {
    pub fn new(target: Arc<Target>) -> InFlight {
        target.outstanding.fetch_add(1, Ordering::Relaxed);
        target.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(target)
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a registration change was refused (ALB's `InvalidTarget`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetsError {
    #[error("There is no target group named `{0}`.")]
    UnknownGroup(String),
    #[error("Target {0} is still draining; it can be registered again when its deregistration delay ends.")]
    Draining(SocketAddr),
    #[error("Target {0} is not registered.")]
    NotRegistered(SocketAddr),
}

/// One target's entry in DescribeTargetHealth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthDescription {
    /// The target's id (its IP address, as for ALB `ip` targets).
    pub target: std::net::IpAddr,
    pub port: u16,
    pub health_check_port: u16,
    pub state: HealthState,
    pub reason: Option<Reason>,
    pub description: Option<String>,
}

/// One target group's run-time state. It outlives configs: a reload or an API change
/// that keeps the group's name keeps this state (targets, health, counters) and swaps
/// its settings.
pub struct TargetGroupState {
    pub name: Arc<str>,
    /// The group's settings; swapped whole when a config change touches them.
    settings: ArcSwap<TargetGroup>,
    /// Whether any listener forwards to this group (else targets are `unused`).
    in_use: AtomicBool,
    targets: ArcSwap<Vec<Arc<Target>>>,
    /// Serialises membership changes (snapshot swaps).
    write: Mutex<()>,
    next: AtomicUsize,
    epoch: Instant,
    /// Wakes the health checker when targets come or go.
    pub(super) changed: Notify,
    /// Told of each target whose deregistration delay ended (it has left the group).
    departures: Option<mpsc::UnboundedSender<Arc<Target>>>,
    /// Addresses of the config's targets that were deregistered through the API: the
    /// config does not register them again while the group exists.
    api_deregistered: Mutex<HashSet<SocketAddr>>,
    /// Stops the group's health checker and DNS refresher (replaced when the settings
    /// they follow change, cancelled when the group leaves the config).
    pub(super) tasks: Mutex<Option<CancellationToken>>,
    shutdown: Shutdown,
    /// What CloudWatch counts for the group; it lives as long as the group.
    pub stats: Arc<GroupStats>,
}

impl std::fmt::Debug for TargetGroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetGroupState")
            .field("name", &self.name)
            .field("targets", &self.targets.load().len())
            .finish_non_exhaustive()
    }
}

impl TargetGroupState {
    pub fn new(config: &TargetGroup, in_use: bool, shutdown: Shutdown) -> Self {
        TargetGroupState {
            name: Arc::from(config.name.as_str()),
            settings: ArcSwap::from_pointee(config.clone()),
            in_use: AtomicBool::new(in_use),
            targets: ArcSwap::from_pointee(Vec::new()),
            write: Mutex::new(()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            changed: Notify::new(),
            departures: None,
            api_deregistered: Mutex::default(),
            tasks: Mutex::default(),
            shutdown,
            stats: Arc::default(),
        }
    }

    /// The group's current settings.
    pub fn settings(&self) -> Guard<Arc<TargetGroup>> {
        self.settings.load()
    }

    /// The group's current settings, to hold across an await.
    pub fn settings_full(&self) -> Arc<TargetGroup> {
        self.settings.load_full()
    }

    /// Whether a listener forwards to the group.
    pub fn in_use(&self) -> bool {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Take `config` as the group's settings from now on, and whether a listener uses
    /// the group. Targets follow what changed: a group no listener uses has `unused`
    /// targets; one whose checks are off has `healthy` ones; a group that starts being
    /// used or checked starts its targets over in `initial`. Draining targets keep
    /// draining. True when what the health checker follows changed.
    pub fn reconfigure(&self, config: Arc<TargetGroup>, in_use: bool) -> bool {
        let old = self.settings.swap(config.clone());
        let was_used = self.in_use.swap(in_use, Ordering::Relaxed);
        let checked = |used: bool, hc: bool| used && hc;
        let before = checked(was_used, old.health_check.enabled);
        let after = checked(in_use, config.health_check.enabled);
        if (was_used, before) != (in_use, after) {
            let now = Instant::now();
            for t in self.targets.load().iter() {
                let mut h = lock(&t.health);
                if h.state() == HealthState::Draining {
                    continue;
                }
                *h = if !in_use {
                    TargetHealth::not_in_use(now)
                } else if !config.health_check.enabled {
                    TargetHealth::assumed_healthy(now)
                } else {
                    TargetHealth::new(now)
                };
                t.sync_route(&h);
            }
            self.changed.notify_one();
        }
        (was_used, before) != (in_use, after) || old.health_check != config.health_check
    }

    /// Whether the config's target `addr` was deregistered through the API (and so is
    /// not registered again from the config while the group exists).
    pub fn deregistered_by_api(&self, addr: SocketAddr) -> bool {
        lock(&self.api_deregistered).contains(&addr)
    }

    /// Remember (or, for a registration, forget) an API deregistration of `addr`.
    pub fn note_api_change(&self, addr: SocketAddr, deregistered: bool) {
        let mut set = lock(&self.api_deregistered);
        if deregistered {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }

    /// Send each target that leaves the group (its deregistration delay ended) to
    /// `departures`, so that what is kept for it elsewhere can go too.
    pub fn with_departures(mut self, departures: mpsc::UnboundedSender<Arc<Target>>) -> Self {
        self.departures = Some(departures);
        self
    }

    /// The current targets (draining ones included).
    pub fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.load_full()
    }

    pub fn thresholds(&self) -> Thresholds {
        let settings = self.settings();
        Thresholds {
            healthy: settings.health_check.healthy_threshold,
            unhealthy: settings.health_check.unhealthy_threshold,
        }
    }

    /// Register `addr`. Registering a registered target again is a no-op (as ALB);
    /// a draining one is refused until its deregistration delay ends.
    pub fn register(&self, addr: SocketAddr, origin: Origin) -> Result<(), TargetsError> {
        let _w = lock(&self.write);
        let current = self.targets.load_full();
        if let Some(t) = current.iter().find(|t| t.addr == addr) {
            return if t.route() == ROUTE_NEVER {
                Err(TargetsError::Draining(addr))
            } else {
                Ok(())
            };
        }
        let now = Instant::now();
        let health = if !self.in_use() {
            TargetHealth::not_in_use(now)
        } else if !self.settings().health_check.enabled {
            TargetHealth::assumed_healthy(now)
        } else {
            TargetHealth::new(now)
        };
        let target = Arc::new(Target {
            id: TargetId::next(),
            addr,
            group: self.name.clone(),
            origin,
            route: AtomicU8::new(ROUTE_FAIL_OPEN),
            health: Mutex::new(health.clone()),
            slow_start_from: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            drain: self.shutdown.close_all.child_token(),
            requests: AtomicU64::new(0),
            stats: self.stats.clone(),
        });
        target.sync_route(&health);
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(target);
        self.targets.store(Arc::new(next));
        tracing::info!(
            target_group = %self.name,
            target = %addr,
            state = %health.state(),
            reason = health.reason().map(Reason::code),
            "Target {addr} registered in target group {}; its state is {}{}.",
            self.name,
            health.state(),
            reason_suffix(health.reason())
        );
        self.changed.notify_one();
        Ok(())
    }

    /// Deregister `addr`: it takes no new requests or tunnels at once and shows
    /// `draining` until the deregistration delay ends; then its tunnels are closed and
    /// it is removed.
    pub fn deregister(self: &Arc<Self>, addr: SocketAddr) -> Result<(), TargetsError> {
        let target = {
            let _w = lock(&self.write);
            let current = self.targets.load();
            let Some(t) = current.iter().find(|t| t.addr == addr) else {
                return Err(TargetsError::NotRegistered(addr));
            };
            t.clone()
        };
        let delay = self.settings().deregistration_delay;
        let transition = {
            let mut h = lock(&target.health);
            let tr = h.drain(Instant::now(), delay);
            target.sync_route(&h);
            tr
        };
        let Some(transition) = transition else {
            return Ok(()); // already draining
        };
        target.slow_start_from.store(0, Ordering::Relaxed);
        self.log_transition(addr, transition);
        let group = self.clone();
        let stop = self.shutdown.stop_accepting.clone();
        self.shutdown.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // At shutdown the tunnels close with the shutdown's own deadline.
                _ = stop.cancelled() => return,
            }
            let open = target.outstanding();
            target.drain.cancel();
            group.remove(&target);
            if let Some(departures) = &group.departures {
                let _ = departures.send(target.clone());
            }
            tracing::info!(
                target_group = %group.name,
                target = %target.addr,
                in_flight = open,
                "The deregistration delay of target {} in target group {} ended; it is removed{}.",
                target.addr,
                group.name,
                if open == 0 { String::new() } else { format!(" and its {open} open requests and tunnels are closed") }
            );
        });
        Ok(())
    }

    fn remove(&self, target: &Arc<Target>) {
        let _w = lock(&self.write);
        let current = self.targets.load_full();
        let next: Vec<Arc<Target>> = current
            .iter()
            .filter(|t| !Arc::ptr_eq(t, target))
            .cloned()
            .collect();
        self.targets.store(Arc::new(next));
        self.changed.notify_one();
    }

    /// The first check of `target` is on its way.
    pub(super) fn checking(&self, target: &Target) {
        let tr = lock(&target.health).checking(Instant::now());
        if let Some(tr) = tr {
            self.log_transition(target.addr, tr);
        }
    }

    /// Feed a health-check outcome into `target`'s state machine.
    pub(super) fn observe(&self, target: &Target, outcome: CheckOutcome) {
        let now = Instant::now();
        let tr = {
            let mut h = lock(&target.health);
            let tr = h.observe(outcome, self.thresholds(), now);
            target.sync_route(&h);
            tr
        };
        let Some(tr) = tr else { return };
        if tr.to == HealthState::Healthy {
            self.maybe_slow_start(target, now);
        } else if tr.from == HealthState::Healthy {
            target.slow_start_from.store(0, Ordering::Relaxed);
        }
        self.log_transition(target.addr, tr);
    }

    /// ALB: a target becoming healthy slow-starts only when another healthy target
    /// that is not itself in slow start already takes traffic.
    fn maybe_slow_start(&self, target: &Target, now: Instant) {
        let d = self.settings().slow_start;
        if d.is_zero() {
            return;
        }
        let others = self.targets.load();
        let established = others.iter().any(|t| {
            !std::ptr::eq(Arc::as_ptr(t), target)
                && t.route() == ROUTE_HEALTHY
                && self.slow_start_weight(t, now) >= 1.0
        });
        if established {
            let nanos = now.saturating_duration_since(self.epoch).as_nanos() as u64;
            target.slow_start_from.store(nanos + 1, Ordering::Relaxed);
            tracing::info!(
                target_group = %self.name,
                target = %target.addr,
                "Target {} in target group {} starts slowly over {}.",
                target.addr,
                self.name,
                humantime::format_duration(d)
            );
        }
    }

    fn slow_start_weight(&self, t: &Target, now: Instant) -> f64 {
        let from = t.slow_start_from.load(Ordering::Relaxed);
        if from == 0 {
            return 1.0;
        }
        let since = self.epoch + std::time::Duration::from_nanos(from - 1);
        let w = balancer::slow_start_weight(since, now, self.settings().slow_start);
        if w >= 1.0 {
            t.slow_start_from.store(0, Ordering::Relaxed);
        }
        w
    }

    fn log_transition(&self, addr: SocketAddr, tr: Transition) {
        tracing::info!(
            target_group = %self.name,
            target = %addr,
            state = %tr.to,
            reason = tr.reason.map(Reason::code),
            "Target {addr} in target group {} is now {}{}.",
            self.name,
            tr.to,
            reason_suffix(tr.reason)
        );
    }

    /// DescribeTargetHealth for every registered target.
    pub fn describe(&self) -> Vec<TargetHealthDescription> {
        self.targets
            .load()
            .iter()
            .map(|t| {
                let h = lock(&t.health);
                self.description(t.addr, h.state(), h.reason())
            })
            .collect()
    }

    /// DescribeTargetHealth for one target; not registered → `unused` / `Target.NotRegistered`.
    pub fn describe_target(&self, addr: SocketAddr) -> TargetHealthDescription {
        match self.targets.load().iter().find(|t| t.addr == addr) {
            Some(t) => {
                let h = lock(&t.health);
                self.description(addr, h.state(), h.reason())
            }
            None => self.description(addr, HealthState::Unused, Some(Reason::NotRegistered)),
        }
    }

    fn description(
        &self,
        addr: SocketAddr,
        state: HealthState,
        reason: Option<Reason>,
    ) -> TargetHealthDescription {
        TargetHealthDescription {
            target: addr.ip(),
            port: addr.port(),
            health_check_port: match self.settings().health_check.port {
                HealthCheckPort::TrafficPort => addr.port(),
                HealthCheckPort::Port(p) => p,
            },
            state,
            reason,
            description: reason.map(Reason::description),
        }
    }

    /// Choose a target for a new request or tunnel: `sticky` when it may still take
    /// traffic, else by the group's algorithm among healthy targets, or among every
    /// registered, non-draining target when none is healthy (fail open). `None` when
    /// nothing can take traffic (503). The flag tells whether `sticky` was honoured.
    pub fn pick(&self, sticky: Option<SocketAddr>) -> Option<(Arc<Target>, bool)> {
        self.pick_with(sticky, &self.settings())
    }

    /// [`TargetGroupState::pick`] with the algorithm and slow start of `settings` (the
    /// group's settings in the config a request is served with).
    pub fn pick_with(
        &self,
        sticky: Option<SocketAddr>,
        settings: &TargetGroup,
    ) -> Option<(Arc<Target>, bool)> {
        let snapshot = self.targets.load();
        let fail_open = !snapshot.iter().any(|t| t.route() == ROUTE_HEALTHY);
        let eligible = |t: &&Arc<Target>| match t.route() {
            ROUTE_HEALTHY => true,
            ROUTE_FAIL_OPEN => fail_open,
            _ => false,
        };
        if let Some(addr) = sticky {
            if let Some(t) = snapshot.iter().filter(eligible).find(|t| t.addr == addr) {
                return Some((t.clone(), true));
            }
        }
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = || snapshot.iter().filter(eligible);
        let index = match settings.algorithm {
            Algorithm::LeastOutstandingRequests => {
                balancer::least_outstanding(candidates().map(|t| t.outstanding()), counter)
            }
            Algorithm::RoundRobin | Algorithm::WeightedRandom => {
                let slow = !settings.slow_start.is_zero()
                    && candidates().any(|t| t.slow_start_from.load(Ordering::Relaxed) != 0);
                let random = settings.algorithm == Algorithm::WeightedRandom;
                if slow || random {
                    let roll = if random {
                        balancer::random_roll()
                    } else {
                        balancer::spread_roll(counter)
                    };
                    // The clock is read only where a weight needs it.
                    let now = Instant::now();
                    let weights = candidates().map(|t| self.slow_start_weight(t, now));
                    balancer::weighted(weights, roll)
                } else {
                    balancer::round_robin(candidates().count(), counter)
                }
            }
        };
        // The snapshot may have changed health under us; fall back to any candidate.
        let chosen = index
            .and_then(|i| candidates().nth(i))
            .or_else(|| candidates().next())?;
        Some((chosen.clone(), false))
    }
}

fn reason_suffix(reason: Option<Reason>) -> String {
    match reason {
        Some(r) => format!(" ({}: {})", r.code(), r.description()),
        None => String::new(),
    }
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
