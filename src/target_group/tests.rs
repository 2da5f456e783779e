//! Picks over a group's registry: health, fail-open, 503, draining, stickiness.
