//! DNS targets (`{ dns = "name:port" }`): every address a name resolves to is a target.
//! Names are resolved at start and again every refresh interval; new addresses are
//! registered (they start `initial`), vanished ones drain. Resolution goes through the
//! [`Resolve`] trait so tests can answer for names themselves.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::{Origin, TargetGroupState};
use crate::config::model::TargetSpec;

/// How often DNS targets are resolved again unless told otherwise.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The future a resolver returns.
pub type Resolution<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Something that turns `host:port` into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolution<'a>;
}

/// The machine's resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolution<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A resolver answering from a map that can be changed at run time; unknown names fail
/// (it never asks the machine). Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
}

impl StaticResolver {
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Answer `host` with `addrs` from now on (an empty list: the name has no address).
    pub fn set(&self, host: &str, addrs: &[IpAddr]) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), addrs.to_vec());
    }

    /// Forget `host`: resolving it fails again.
    pub fn remove(&self, host: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&host.to_ascii_lowercase());
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolution<'a> {
        let answer = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host.to_ascii_lowercase())
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        Box::pin(async move {
            answer.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"))
            })
        })
    }
}

/// Resolve the group's DNS targets once and make the registrations match: register new
/// addresses, deregister (drain) DNS-registered ones that vanished. When a name fails to
/// resolve its previous addresses are kept.
pub async fn refresh(group: &Arc<TargetGroupState>, resolver: &dyn Resolve) {
    let mut wanted: HashSet<SocketAddr> = HashSet::new();
    let mut failed = false;
    let settings = group.settings_full();
    for spec in &settings.targets {
        let TargetSpec::Dns { host, port } = spec else {
            continue;
        };
        match resolver.resolve(host, *port).await {
            Ok(addrs) => wanted.extend(addrs),
            Err(e) => {
                failed = true;
                tracing::warn!(
                    target_group = %group.name,
                    "Could not resolve target {host}:{port}: {e}; keeping its previous addresses."
                );
            }
        }
    }
    let current = group.targets();
    for addr in &wanted {
        if !current.iter().any(|t| t.addr == *addr) {
            // A draining address comes back on a later refresh, once removed.
            let _ = group.register(*addr, Origin::Dns);
        }
    }
    if failed {
        return;
    }
    for t in current.iter() {
        if t.origin == Origin::Dns && !wanted.contains(&t.addr) {
            tracing::info!(
                target_group = %group.name,
                target = %t.addr,
                "Target {} no longer resolves for target group {}; deregistering it.",
                t.addr,
                group.name
            );
            let _ = group.deregister(t.addr);
        }
    }
}

/// Refresh the group's DNS targets every `interval` until `cancel` fires.
pub async fn run_refresh(
    group: Arc<TargetGroupState>,
    resolver: Arc<dyn Resolve>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => refresh(&group, resolver.as_ref()).await,
        }
    }
}
