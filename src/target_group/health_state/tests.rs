//! Every transition and reason code, with paused time standing in for the checker's clock.

use std::time::Duration;

use tokio::time::{advance, pause, Instant};

use super::*;

const T: Thresholds = Thresholds {
    healthy: 3,
    unhealthy: 2,
};
const INTERVAL: Duration = Duration::from_secs(30);

/// Observe `outcome` one interval later, as the checker would.
async fn check(h: &mut TargetHealth, outcome: CheckOutcome) -> Option<Transition> {
    advance(INTERVAL).await;
    h.observe(outcome, T, Instant::now())
}

async fn healthy_target() -> TargetHealth {
    let mut h = TargetHealth::new(Instant::now());
    check(&mut h, CheckOutcome::Pass).await;
    assert!(h.is_healthy());
    h
}

#[tokio::test]
async fn new_target_is_initial_while_registering_then_checking() {
    pause();
    let mut h = TargetHealth::new(Instant::now());
    assert_eq!(h.state(), HealthState::Initial);
    assert_eq!(h.reason(), Some(Reason::RegistrationInProgress));
    assert_eq!(
        h.reason().unwrap().code(),
        "Elb.RegistrationInProgress",
        "ALB's spelling"
    );
    let t = h.checking(Instant::now()).unwrap();
    assert_eq!(t.from, HealthState::Initial);
    assert_eq!(t.to, HealthState::Initial);
    assert_eq!(t.reason, Some(Reason::InitialHealthChecking));
    assert_eq!(h.reason().unwrap().code(), "Elb.InitialHealthChecking");
    assert_eq!(h.checking(Instant::now()), None, "reported once");
}

#[tokio::test]
async fn one_passing_check_makes_a_new_target_healthy() {
    pause();
    let start = Instant::now();
    let mut h = TargetHealth::new(start);
    let t = check(&mut h, CheckOutcome::Pass).await.unwrap();
    assert_eq!(t.to, HealthState::Healthy);
    assert_eq!(t.reason, None);
    assert_eq!(
        h.since(),
        start + INTERVAL,
        "healthy since the passing check"
    );
}

#[tokio::test]
async fn initial_target_failing_goes_unhealthy_after_the_unhealthy_threshold() {
    pause();
    let mut h = TargetHealth::new(Instant::now());
    assert_eq!(check(&mut h, CheckOutcome::Timeout).await, None);
    assert_eq!(h.state(), HealthState::Initial);
    assert_eq!(h.reason(), Some(Reason::InitialHealthChecking));
    let t = check(&mut h, CheckOutcome::Timeout).await.unwrap();
    assert_eq!(t.to, HealthState::Unhealthy);
    assert_eq!(h.reason().unwrap().code(), "Target.Timeout");
    assert_eq!(h.reason().unwrap().description(), "Request timed out");
}

#[tokio::test]
async fn healthy_to_unhealthy_on_response_code_mismatch() {
    pause();
    let mut h = healthy_target().await;
    assert_eq!(
        check(&mut h, CheckOutcome::ResponseCodeMismatch(500)).await,
        None
    );
    assert!(h.is_healthy(), "one failure is below the threshold");
    let t = check(&mut h, CheckOutcome::ResponseCodeMismatch(500))
        .await
        .unwrap();
    assert_eq!(t.from, HealthState::Healthy);
    assert_eq!(t.to, HealthState::Unhealthy);
    let r = h.reason().unwrap();
    assert_eq!(r.code(), "Target.ResponseCodeMismatch");
    assert_eq!(
        r.description(),
        "Health checks failed with these codes: [500]"
    );
}

#[tokio::test]
async fn healthy_to_unhealthy_on_timeout() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Timeout).await;
    let t = check(&mut h, CheckOutcome::Timeout).await.unwrap();
    assert_eq!(t.reason, Some(Reason::Timeout));
}

#[tokio::test]
async fn healthy_to_unhealthy_on_connection_failure() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Failed).await;
    let t = check(&mut h, CheckOutcome::Failed).await.unwrap();
    assert_eq!(t.reason, Some(Reason::FailedHealthChecks));
    assert_eq!(h.reason().unwrap().code(), "Target.FailedHealthChecks");
}

#[tokio::test]
async fn failures_must_be_consecutive() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Failed).await;
    check(&mut h, CheckOutcome::Pass).await;
    assert_eq!(check(&mut h, CheckOutcome::Failed).await, None);
    assert!(h.is_healthy());
}

#[tokio::test]
async fn unhealthy_back_to_healthy_after_the_healthy_threshold() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Failed).await;
    check(&mut h, CheckOutcome::Failed).await;
    assert_eq!(h.state(), HealthState::Unhealthy);
    assert_eq!(check(&mut h, CheckOutcome::Pass).await, None);
    assert_eq!(check(&mut h, CheckOutcome::Pass).await, None);
    let before = Instant::now();
    let t = check(&mut h, CheckOutcome::Pass).await.unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (HealthState::Unhealthy, HealthState::Healthy, None)
    );
    assert_eq!(h.since(), before + INTERVAL);
}

#[tokio::test]
async fn unhealthy_reason_follows_the_latest_failure() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Timeout).await;
    check(&mut h, CheckOutcome::Timeout).await;
    let t = check(&mut h, CheckOutcome::ResponseCodeMismatch(503))
        .await
        .unwrap();
    assert_eq!(t.to, HealthState::Unhealthy);
    assert_eq!(t.reason, Some(Reason::ResponseCodeMismatch(503)));
    assert_eq!(
        check(&mut h, CheckOutcome::ResponseCodeMismatch(503)).await,
        None,
        "no change, nothing to log"
    );
}

#[tokio::test]
async fn a_pass_between_failures_resets_recovery() {
    pause();
    let mut h = healthy_target().await;
    check(&mut h, CheckOutcome::Failed).await;
    check(&mut h, CheckOutcome::Failed).await;
    check(&mut h, CheckOutcome::Pass).await;
    check(&mut h, CheckOutcome::Pass).await;
    check(&mut h, CheckOutcome::Failed).await;
    check(&mut h, CheckOutcome::Pass).await;
    check(&mut h, CheckOutcome::Pass).await;
    assert_eq!(h.state(), HealthState::Unhealthy);
    check(&mut h, CheckOutcome::Pass).await;
    assert!(h.is_healthy());
}

#[tokio::test]
async fn draining_shows_until_the_delay_ends_and_ignores_checks() {
    pause();
    let mut h = healthy_target().await;
    let delay = Duration::from_secs(300);
    let t = h.drain(Instant::now(), delay).unwrap();
    assert_eq!(t.to, HealthState::Draining);
    assert_eq!(
        h.reason().unwrap().code(),
        "Target.DeregistrationInProgress"
    );
    assert_eq!(h.drain(Instant::now(), delay), None, "draining once");
    assert_eq!(check(&mut h, CheckOutcome::Pass).await, None);
    assert_eq!(h.state(), HealthState::Draining);
    assert!(!h.drain_over(Instant::now()));
    advance(delay - INTERVAL - Duration::from_millis(1)).await;
    assert!(!h.drain_over(Instant::now()));
    advance(Duration::from_millis(1)).await;
    assert!(h.drain_over(Instant::now()));
}

#[tokio::test]
async fn initial_and_unhealthy_targets_drain_too() {
    pause();
    let mut h = TargetHealth::new(Instant::now());
    assert_eq!(
        h.drain(Instant::now(), Duration::ZERO).unwrap().from,
        HealthState::Initial
    );
    assert!(h.drain_over(Instant::now()), "a zero delay ends at once");
}

#[tokio::test]
async fn unused_and_not_registered_reasons() {
    pause();
    let h = TargetHealth::not_in_use(Instant::now());
    assert_eq!(h.state().as_str(), "unused");
    assert_eq!(h.reason().unwrap().code(), "Target.NotInUse");
    assert_eq!(Reason::NotRegistered.code(), "Target.NotRegistered");
    let mut h = h;
    assert_eq!(h.observe(CheckOutcome::Pass, T, Instant::now()), None);
}

#[tokio::test]
async fn disabled_checks_count_as_healthy() {
    pause();
    let h = TargetHealth::assumed_healthy(Instant::now());
    assert!(h.is_healthy());
    assert_eq!(h.reason(), None);
}
