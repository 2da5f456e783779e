//! One target's health as ALB tracks it: a pure state machine fed with health-check
//! outcomes. No I/O and no clock of its own; callers pass the time.
//!
//! ```text
//!  register ─► initial (Elb.RegistrationInProgress)
//!                │ first check sent
//!                ▼
//!              initial (Elb.InitialHealthChecking) ── 1 pass ──► healthy
//!                │ unhealthy_threshold failures                  │  ▲
//!                ▼                                               │  │ healthy_threshold passes
//!              unhealthy (Target.*) ◄── unhealthy_threshold ─────┘  │
//!                └──────────────────────────────────────────────────┘
//!  deregister (any state) ─► draining (Target.DeregistrationInProgress) ─► removed
//! ```

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// ALB's target health states (`TargetHealth.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl HealthState {
    /// ALB's spelling, as DescribeTargetHealth returns it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unused => "unused",
            HealthState::Draining => "draining",
            HealthState::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ALB's reason codes (`TargetHealth.Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    RegistrationInProgress,
    InitialHealthChecking,
    /// The last check answered this status, which the matcher rejects.
    ResponseCodeMismatch(u16),
    Timeout,
    FailedHealthChecks,
    NotRegistered,
    NotInUse,
    DeregistrationInProgress,
}

impl Reason {
    /// ALB's code, such as `Target.ResponseCodeMismatch`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::RegistrationInProgress => "Elb.RegistrationInProgress",
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::ResponseCodeMismatch(_) => "Target.ResponseCodeMismatch",
            Reason::Timeout => "Target.Timeout",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::NotRegistered => "Target.NotRegistered",
            Reason::NotInUse => "Target.NotInUse",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
        }
    }

    /// ALB's human-readable `Description` for the reason.
    pub fn description(self) -> String {
        match self {
            Reason::RegistrationInProgress => "Target registration is in progress".into(),
            Reason::InitialHealthChecking => "Initial health checks in progress".into(),
            Reason::ResponseCodeMismatch(code) => {
                format!("Health checks failed with these codes: [{code}]")
            }
            Reason::Timeout => "Request timed out".into(),
            Reason::FailedHealthChecks => "Health checks failed".into(),
            Reason::NotRegistered => "Target is not registered to the target group".into(),
            Reason::NotInUse => {
                "Target group is not configured to receive traffic from the load balancer".into()
            }
            Reason::DeregistrationInProgress => "Target deregistration is in progress".into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What one health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The status matched the matcher.
    Pass,
    /// The target answered a status the matcher rejects.
    ResponseCodeMismatch(u16),
    /// No answer within the health-check timeout.
    Timeout,
    /// Connection refused or reset, or a malformed answer.
    Failed,
}

impl CheckOutcome {
    fn reason(self) -> Option<Reason> {
        match self {
            CheckOutcome::Pass => None,
            CheckOutcome::ResponseCodeMismatch(c) => Some(Reason::ResponseCodeMismatch(c)),
            CheckOutcome::Timeout => Some(Reason::Timeout),
            CheckOutcome::Failed => Some(Reason::FailedHealthChecks),
        }
    }
}

/// The thresholds of a group's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// A change of state or reason, to be logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub reason: Option<Reason>,
}

/// One target's health: state, reason, the consecutive-result counters, when the
/// state last changed and, while draining, when the deregistration delay ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    state: HealthState,
    reason: Option<Reason>,
    passes: u32,
    failures: u32,
    since: Instant,
    drain_until: Option<Instant>,
}

impl TargetHealth {
    /// A target just registered: `initial` / `Elb.RegistrationInProgress`.
    pub fn new(now: Instant) -> TargetHealth {
        TargetHealth::with(
            HealthState::Initial,
            Some(Reason::RegistrationInProgress),
            now,
        )
    }

    /// A target of a group no listener uses: `unused` / `Target.NotInUse`.
    pub fn not_in_use(now: Instant) -> TargetHealth {
        TargetHealth::with(HealthState::Unused, Some(Reason::NotInUse), now)
    }

    /// A target of a group whose checks are off (albatross extension): `healthy`.
    pub fn assumed_healthy(now: Instant) -> TargetHealth {
        TargetHealth::with(HealthState::Healthy, None, now)
    }

    fn with(state: HealthState, reason: Option<Reason>, now: Instant) -> TargetHealth {
        TargetHealth {
            state,
            reason,
            passes: 0,
            failures: 0,
            since: now,
            drain_until: None,
        }
    }

    /// When the current state began (for slow start: when the target became healthy).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// While draining: the end of the deregistration delay.
    pub fn drain_until(&self) -> Option<Instant> {
        self.drain_until
    }

    /// Draining and the deregistration delay has run out: time to remove the target.
    pub fn drain_over(&self, now: Instant) -> bool {
        self.drain_until.is_some_and(|until| now >= until)
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    pub fn is_healthy(&self) -> bool {
        self.state == HealthState::Healthy
    }

    /// The first check is on its way: `Elb.RegistrationInProgress` → `Elb.InitialHealthChecking`.
    pub fn checking(&mut self, now: Instant) -> Option<Transition> {
        if self.state == HealthState::Initial && self.reason == Some(Reason::RegistrationInProgress)
        {
            return self.set(
                HealthState::Initial,
                Some(Reason::InitialHealthChecking),
                now,
            );
        }
        None
    }

    /// Feed one check's outcome; returns the transition when state or reason changed.
    pub fn observe(
        &mut self,
        outcome: CheckOutcome,
        t: Thresholds,
        now: Instant,
    ) -> Option<Transition> {
        match self.state {
            HealthState::Draining | HealthState::Unused | HealthState::Unavailable => return None,
            HealthState::Initial | HealthState::Healthy | HealthState::Unhealthy => {}
        }
        if self.state == HealthState::Initial && self.reason == Some(Reason::RegistrationInProgress)
        {
            self.reason = Some(Reason::InitialHealthChecking);
        }
        let reason = outcome.reason();
        if reason.is_none() {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        match (self.state, reason) {
            // ALB: a new target needs to pass one check only.
            (HealthState::Initial, None) => self.set(HealthState::Healthy, None, now),
            (HealthState::Initial | HealthState::Healthy, Some(r))
                if self.failures >= t.unhealthy =>
            {
                self.set(HealthState::Unhealthy, Some(r), now)
            }
            (HealthState::Unhealthy, None) if self.passes >= t.healthy => {
                self.set(HealthState::Healthy, None, now)
            }
            // Still unhealthy: the reason follows the latest failure.
            (HealthState::Unhealthy, Some(r)) => self.set(HealthState::Unhealthy, Some(r), now),
            _ => None,
        }
    }

    /// Deregistered: `draining` / `Target.DeregistrationInProgress`, whatever it was.
    /// The state shows `draining` until `delay` has passed, even when nothing is in flight.
    pub fn drain(&mut self, now: Instant, delay: Duration) -> Option<Transition> {
        self.passes = 0;
        self.failures = 0;
        if self.state != HealthState::Draining {
            self.drain_until = Some(now + delay);
        }
        self.set(
            HealthState::Draining,
            Some(Reason::DeregistrationInProgress),
            now,
        )
    }

    fn set(
        &mut self,
        state: HealthState,
        reason: Option<Reason>,
        now: Instant,
    ) -> Option<Transition> {
        if self.state == state && self.reason == reason {
            return None;
        }
        if self.state != state {
            self.since = now;
        }
        let from = self.state;
        self.state = state;
        self.reason = reason;
        Some(Transition {
            from,
            to: state,
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
