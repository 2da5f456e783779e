//! Property tests for every parser of untrusted input: request heads, the config
//! loader, stickiness cookies, X-Forwarded-For, redirect templates, listener rules,
//! the ELBv2 Query form decoder and SigV4 `Authorization` headers. Each module states
//! its properties in the doc comments of its tests.
//!
//! Every property runs proptest's default of 256 cases, which is what CI runs (about
//! 7 s in debug on two cores). The `PROPTEST_CASES` environment variable sets another
//! count for every property (and `PROPTEST_RNG_SEED` a fixed seed). The deep run, in
//! release, with half the cases for the config grammar, which is the slowest by far
//! (about 15 minutes on two cores in all):
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test --release --test properties -- --skip config_loader_grammar
//! PROPTEST_CASES=500000 cargo test --release --test properties config_loader_grammar
//! ```
//!
//! Failures are not written to `proptest-regressions/`: a case that once found a bug is
//! kept as a plain `#[test]` beside its property instead.

use proptest::test_runner::Config as ProptestConfig;

#[path = "properties/config.rs"]
mod config_loader;
#[path = "properties/forwarded.rs"]
mod forwarded;
#[path = "properties/head.rs"]
mod head;
#[path = "properties/query.rs"]
mod query;
#[path = "properties/redirect.rs"]
mod redirect;
#[path = "properties/routing.rs"]
mod routing;
#[path = "properties/sigv4.rs"]
mod sigv4;
#[path = "properties/sticky.rs"]
mod sticky;
#[path = "properties/xff.rs"]
mod xff;

/// proptest's defaults (256 cases, or `PROPTEST_CASES`), without regression files.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
