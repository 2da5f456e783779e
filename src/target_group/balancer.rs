//! The balancing algorithms as pure functions over the eligible targets of a pick:
//! round robin, least outstanding requests, weighted random, and the slow-start weight.
//! Callers pass iterators over what they already hold, so a pick allocates nothing.

use std::time::Duration;

use tokio::time::Instant;

/// Smallest share a target in slow start gets, so that its first requests do arrive.
const SLOW_START_FLOOR: f64 = 0.01;

/// Round robin: the `counter`th of `n` eligible targets.
pub fn round_robin(n: usize, counter: usize) -> Option<usize> {
    (n > 0).then(|| counter % n)
}

/// Least outstanding requests: the position of the eligible target with the fewest
/// requests in flight; ties rotate with `counter` so equal targets share the load.
pub fn least_outstanding<I>(outstanding: I, counter: usize) -> Option<usize>
where
    I: Iterator<Item = usize> + Clone,
{
    let min = outstanding.clone().min()?;
    let ties = outstanding.clone().filter(|&o| o == min).count();
    let nth = counter % ties;
    outstanding
        .enumerate()
        .filter(|&(_, o)| o == min)
        .nth(nth)
        .map(|(i, _)| i)
}

/// Weighted choice: `roll` in [0, 1) falls into one target's share of the total weight.
pub fn weighted<I>(weights: I, roll: f64) -> Option<usize>
where
    I: Iterator<Item = f64> + Clone,
{
    let total: f64 = weights.clone().sum();
    if total <= 0.0 {
        return None;
    }
    let mut left = roll.clamp(0.0, 1.0) * total;
    let mut last = None;
    for (i, w) in weights.enumerate() {
        if w <= 0.0 {
            continue;
        }
        if left < w {
            return Some(i);
        }
        left -= w;
        last = Some(i);
    }
    last
}

/// An evenly spread, deterministic roll for the `counter`th pick (golden-ratio
/// sequence): weighted round robin without shared mutable weights.
pub fn spread_roll(counter: usize) -> f64 {
    const PHI_FRAC: f64 = 0.618_033_988_749_894_9;
    (counter as f64 * PHI_FRAC).fract()
}

/// A uniformly random roll for `weighted_random`.
pub fn random_roll() -> f64 {
    rand::random::<f64>()
}

/// A target's relative weight during slow start: a linear ramp from the moment it
/// became healthy (`since`) to full weight after `duration`.
pub fn slow_start_weight(since: Instant, now: Instant, duration: Duration) -> f64 {
    if duration.is_zero() {
        return 1.0;
    }
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    (elapsed / duration.as_secs_f64()).clamp(SLOW_START_FLOOR, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_over_the_eligible() {
        let picks: Vec<usize> = (0..5).filter_map(|c| round_robin(3, c)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1]);
        assert_eq!(round_robin(0, 7), None);
    }

    #[test]
    fn least_outstanding_prefers_the_idlest_and_rotates_ties() {
        let o = [3usize, 1, 4, 1];
        assert_eq!(least_outstanding(o.iter().copied(), 0), Some(1));
        assert_eq!(least_outstanding(o.iter().copied(), 1), Some(3));
        assert_eq!(least_outstanding(o.iter().copied(), 2), Some(1));
        assert_eq!(least_outstanding([].iter().copied(), 0), None);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let w = [1.0, 3.0];
        assert_eq!(weighted(w.iter().copied(), 0.0), Some(0));
        assert_eq!(weighted(w.iter().copied(), 0.24), Some(0));
        assert_eq!(weighted(w.iter().copied(), 0.26), Some(1));
        assert_eq!(weighted(w.iter().copied(), 1.0), Some(1));
        assert_eq!(weighted([0.0, 0.0].iter().copied(), 0.5), None);
        let mut counts = [0usize; 2];
        for c in 0..1000 {
            counts[weighted(w.iter().copied(), spread_roll(c)).unwrap()] += 1;
        }
        assert!((240..=260).contains(&counts[0]), "{counts:?}");
    }

    #[tokio::test]
    async fn slow_start_ramps_linearly() {
        tokio::time::pause();
        let since = Instant::now();
        let d = Duration::from_secs(30);
        assert_eq!(slow_start_weight(since, since, d), SLOW_START_FLOOR);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!((slow_start_weight(since, Instant::now(), d) - 0.5).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(slow_start_weight(since, Instant::now(), d), 1.0);
        assert_eq!(slow_start_weight(since, since, Duration::ZERO), 1.0);
    }
}
