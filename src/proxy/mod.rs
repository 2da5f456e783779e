//! The hyper service: route, pick, forward or upgrade.
