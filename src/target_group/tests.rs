//! Picks over a group's registry: health, fail-open, 503, draining, stickiness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::health_state::CheckOutcome;
use super::*;
use crate::config::model::{Algorithm, HealthCheck, Protocol, TargetGroup};

fn group(algorithm: Algorithm, addrs: &[u16]) -> Arc<TargetGroupState> {
    let cfg = TargetGroup {
        name: "t".into(),
        protocol: Protocol::Http,
        algorithm,
        deregistration_delay: Duration::from_secs(300),
        slow_start: Duration::ZERO,
        stickiness: None,
        targets: vec![],
        health_check: HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            ..HealthCheck::default()
        },
    };
    let g = Arc::new(TargetGroupState::new(&cfg, true, Shutdown::new()));
    for p in addrs {
        g.register(addr(*p), Origin::Config).unwrap();
    }
    g
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn observe(g: &TargetGroupState, port: u16, outcome: CheckOutcome) {
    let targets = g.targets();
    let t = targets.iter().find(|t| t.addr.port() == port).unwrap();
    g.observe(t, outcome);
}

fn picks(g: &TargetGroupState, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| g.pick(None).unwrap().0.addr.port())
        .collect()
}

#[tokio::test]
async fn only_healthy_targets_are_picked() {
    let g = group(Algorithm::RoundRobin, &[1, 2, 3]);
    observe(&g, 1, CheckOutcome::Pass);
    observe(&g, 3, CheckOutcome::Pass);
    assert_eq!(picks(&g, 4), [1, 3, 1, 3]);
}

#[tokio::test]
async fn no_healthy_target_fails_open_to_initial_and_unhealthy() {
    let g = group(Algorithm::RoundRobin, &[1, 2]);
    observe(&g, 1, CheckOutcome::Timeout);
    observe(&g, 1, CheckOutcome::Timeout);
    assert_eq!(g.describe()[0].state, HealthState::Unhealthy);
    assert_eq!(picks(&g, 4), [1, 2, 1, 2]);
}

#[tokio::test]
async fn draining_targets_are_never_picked_and_none_left_is_none() {
    let g = group(Algorithm::RoundRobin, &[1, 2]);
    g.deregister(addr(1)).unwrap();
    assert_eq!(picks(&g, 3), [2, 2, 2]);
    g.deregister(addr(2)).unwrap();
    assert!(g.pick(None).is_none());
    assert_eq!(
        g.register(addr(2), Origin::Api),
        Err(TargetsError::Draining(addr(2)))
    );
    assert_eq!(
        g.deregister(addr(9)),
        Err(TargetsError::NotRegistered(addr(9)))
    );
}

#[tokio::test]
async fn a_sticky_target_is_honoured_only_while_it_may_take_traffic() {
    let g = group(Algorithm::RoundRobin, &[1, 2]);
    observe(&g, 1, CheckOutcome::Pass);
    observe(&g, 2, CheckOutcome::Pass);
    let (t, honoured) = g.pick(Some(addr(2))).unwrap();
    assert_eq!((t.addr, honoured), (addr(2), true));
    observe(&g, 2, CheckOutcome::Failed);
    observe(&g, 2, CheckOutcome::Failed);
    let (t, honoured) = g.pick(Some(addr(2))).unwrap();
    assert_eq!((t.addr, honoured), (addr(1), false));
}

#[tokio::test]
async fn least_outstanding_counts_what_is_in_flight() {
    let g = group(Algorithm::LeastOutstandingRequests, &[1, 2]);
    let (busy, _) = g.pick(None).unwrap();
    let _held = InFlight::new(busy.clone());
    for _ in 0..3 {
        assert_ne!(g.pick(None).unwrap().0.addr, busy.addr);
    }
}
