//! All of HTTP: serving the client connections the listener hands over (HTTP/1.1 with
//! ALB's own head reading and upgrades, HTTP/2), and for each request asking `routing`
//! for the action and `target_group` for a target, then forwarding the request over the
//! target's keep-alive pool (`forward`, `upstream`) or relaying the upgrade and opening
//! the tunnel (`upgrade`, then `tunnel`). Errors become ALB's status codes in `error`.
//!
//! | file | job |
//! | --- | --- |
//! | [`serve`](mod@serve) | the entry point: one client connection, HTTP/1.1 or HTTP/2, its tunnel |
//! | [`client_io`] / [`head`] / [`desync`] | the HTTP/1 client stream: ALB's limits, 408, desync verdicts |
//! | `respond` | one request: checks, rule action, target, answer |
//! | [`actions`] | `redirect` and `fixed_response` |
//! | [`forward`] | plain requests to a target |
//! | [`upgrade`] | upgrade requests: `101` relayed, tunnel left with the connection |
//! | [`upstream`] | connections to targets: per-target pools, the raw exchange, bodies |
//! | [`headers`] | hop-by-hop headers, X-Forwarded-*, Host, trace id |
//! | [`error`] | causes, the one mapping to ALB's status codes, ALB's error pages |
//!
//! It never touches sockets before a listener has accepted them, nor bytes after a
//! tunnel has opened.

pub mod actions;
pub mod client_io;
pub mod desync;
pub mod error;
pub mod forward;
pub mod head;
pub mod headers;
mod respond;
pub mod serve;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::{Either, Full};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::model::{Config, Protocol};
use crate::routing::Router;
use crate::shutdown::Shutdown;
use crate::target_group::{Resolve, Target, TargetGroups};
use crate::tunnel::{EndRequest, Tunnels};
use upstream::{PooledBody, Upstream};

pub use serve::{serve, ClientStream};

/// Response body: a target's streamed body, or one the load balancer made.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// Everything requests of one config need, shared by all its listeners.
pub struct Runtime {
    pub config: Arc<Config>,
    /// Target groups with their targets and health, and the stickiness key.
    pub targets: Arc<TargetGroups>,
    /// Keep-alive pools and new connections to targets.
    pub upstream: Arc<Upstream>,
    /// The open tunnels.
    pub tunnels: Arc<Tunnels>,
    pub shutdown: Shutdown,
}

impl Runtime {
    /// Build the runtime; DNS targets are resolved once through `resolver`. Starts the
    /// task that follows targets leaving their groups and keeps the pools trim.
    pub async fn new(config: Arc<Config>, shutdown: Shutdown, resolver: &dyn Resolve) -> Runtime {
        let targets = Arc::new(TargetGroups::new(&config, &shutdown, resolver).await);
        let lb = &config.load_balancer;
        let upstream = Arc::new(Upstream::new(
            shutdown.tracker.clone(),
            lb.connect_timeout,
            lb.idle_timeout,
        ));
        let tunnels = Arc::new(Tunnels::new());
        if let Some(departures) = targets.departures() {
            shutdown.tracker.spawn(follow_targets(
                departures,
                upstream.clone(),
                tunnels.clone(),
                shutdown.stop_accepting.clone(),
            ));
        }
        Runtime {
            config,
            targets,
            upstream,
            tunnels,
            shutdown,
        }
    }
}

/// Until shutdown begins: when a target leaves its group (its deregistration delay
/// ended), drop its keep-alive pool and end its tunnels (cause `deregistration`); every
/// so often, close keep-alive connections idle for the idle timeout. When shutdown
/// begins, close every idle connection.
async fn follow_targets(
    mut departures: mpsc::UnboundedReceiver<Arc<Target>>,
    upstream: Arc<Upstream>,
    tunnels: Arc<Tunnels>,
    stop: CancellationToken,
) {
    let every =
        (upstream.idle_timeout() / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => upstream.evict_idle(),
            Some(target) = departures.recv() => {
                upstream.remove(target.id);
                tunnels.end_target(target.id.0, EndRequest::Deregistration);
            }
        }
    }
    upstream.clear();
}

/// One listener's view: its compiled rules and the port clients connected to.
pub struct ListenerContext {
    pub runtime: Arc<Runtime>,
    pub router: Router,
    pub protocol: Protocol,
    /// The bound port (differs from the configured one when that was 0).
    pub port: u16,
    /// `port` as the X-Forwarded-Port value.
    pub port_value: HeaderValue,
}
