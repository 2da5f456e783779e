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
pub mod limit;
mod respond;
pub mod serve;
pub mod upgrade;
pub mod upstream;

use crate::observe::{AccessRecord, ConnectionRecord, Line, LogFile, Metrics};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::{Either, Full};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use crate::config::model::{Config, Protocol};
use crate::routing::Router;
use crate::shutdown::Shutdown;
use crate::target_group::{GroupSet, Resolve, Target, TargetGroups};
use crate::tunnel::{EndRequest, Tunnels};
use upstream::{PooledBody, Upstream};

pub use serve::{serve, ClientStream};

/// Response body: a target's streamed body, or one the load balancer made.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// Everything requests of one config need, shared by all its listeners.
pub struct Runtime {
    /// Target groups with their targets and health, across configs.
    pub targets: Arc<TargetGroups>,
    /// Keep-alive pools and new connections to targets.
    pub upstream: Arc<Upstream>,
    /// The open tunnels.
    pub tunnels: Arc<Tunnels>,
    /// What CloudWatch would count for the load balancer (`observe`).
    pub metrics: Arc<Metrics>,
    /// Client connections open, under `max_connections`.
    pub connections: Arc<limit::ConnectionLimit>,
    /// The log files open now, reused by the next config when it names the same paths.
    logs: std::sync::Mutex<Logs>,
    pub shutdown: Shutdown,
}

impl Runtime {
    /// Build the runtime, before any config: DNS targets will be resolved through
    /// `resolver` every `dns_refresh`. Starts the task that follows targets leaving their
    /// groups and keeps the pools trim. Configs come with [`Runtime::model`].
    pub fn new(shutdown: Shutdown, resolver: Arc<dyn Resolve>, dns_refresh: Duration) -> Runtime {
        let targets = Arc::new(TargetGroups::new(&shutdown, resolver, dns_refresh));
        let lb = crate::config::model::LoadBalancer::default();
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
            targets,
            upstream,
            tunnels,
            metrics: Arc::default(),
            connections: Arc::new(limit::ConnectionLimit::new(limit::default_max_connections())),
            logs: std::sync::Mutex::default(),
            shutdown,
        }
    }

    /// Make target groups and connections to targets follow `config`, and return the
    /// model requests read from now on (listeners take it through their views).
    pub async fn model(&self, config: Arc<Config>) -> Arc<Model> {
        let groups = self.targets.apply(&config).await;
        let lb = &config.load_balancer;
        self.upstream
            .set_timeouts(lb.connect_timeout, lb.idle_timeout);
        self.connections.set_max(lb.max_connections);
        let logs = self.logs_for(&config);
        let names = Names::new(&config);
        Arc::new(Model {
            config,
            groups,
            logs,
            names,
        })
    }

    /// The log files `config` names: the open ones where the path is the same, newly
    /// opened ones otherwise. A file that cannot be opened is reported, and that log is
    /// off until a config names a path that can be.
    fn logs_for(&self, config: &Config) -> Logs {
        let mut open = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        fn follow<R: Line>(
            current: &Option<Arc<LogFile<R>>>,
            wanted: Option<&crate::config::model::AccessLog>,
            what: &str,
        ) -> Option<Arc<LogFile<R>>> {
            let path = &wanted?.path;
            if let Some(l) = current.as_ref().filter(|l| l.path() == path) {
                return Some(l.clone());
            }
            match LogFile::open(path, LOG_QUEUE) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    tracing::error!(
                        "Cannot open the {what} {}: {e}; it is off until a reload names a file that can be opened.",
                        path.display()
                    );
                    None
                }
            }
        }
        let logs = Logs {
            access: follow(&open.access, config.access_log.as_ref(), "access log"),
            connection: follow(
                &open.connection,
                config.connection_log.as_ref(),
                "connection log",
            ),
        };
        *open = logs.clone();
        logs
    }

    /// Reopen the log files (after a rotation).
    pub fn reopen_logs(&self) {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).reopen();
    }
}

/// One config as requests read it: the config itself and its target groups, indexed by
/// its ids. Immutable; a config change makes a new one, and each request keeps the one
/// it started with.
#[derive(Debug)]
pub struct Model {
    pub config: Arc<Config>,
    pub groups: Arc<GroupSet>,
    /// The log files the config asks for.
    pub logs: Logs,
    /// `app/{name}/{id}` and each group's ARN by name, as log lines write them.
    pub names: Names,
}

/// The access and connection logs of a config (kept open across configs that name the
/// same files).
#[derive(Debug, Clone, Default)]
pub struct Logs {
    pub access: Option<Arc<LogFile<Box<AccessRecord>>>>,
    pub connection: Option<Arc<LogFile<ConnectionRecord>>>,
}

impl Logs {
    /// Close the files and open their paths again (`SIGUSR1`, after a rotation).
    pub fn reopen(&self) {
        if let Some(l) = &self.access {
            l.reopen();
        }
        if let Some(l) = &self.connection {
            l.reopen();
        }
    }
}

/// Names log lines carry, derived once per config.
#[derive(Debug)]
pub struct Names {
    /// `app/{name}/{id}`.
    pub elb: Arc<str>,
    group_arns: FxHashMap<Arc<str>, Arc<str>>,
}

impl Names {
    fn new(config: &Config) -> Names {
        let arns = crate::arn::Arns::new(&config.load_balancer);
        Names {
            elb: Arc::from(arns.lb_dimension()),
            group_arns: config
                .target_groups
                .iter()
                .map(|g| {
                    (
                        Arc::from(g.name.as_str()),
                        Arc::from(arns.target_group(&g.name)),
                    )
                })
                .collect(),
        }
    }

    /// The ARN of the group named `name`.
    pub fn group_arn(&self, name: &str) -> Option<&Arc<str>> {
        self.group_arns.get(name)
    }
}

/// How many records a log's queue holds before it drops them.
const LOG_QUEUE: usize = 16 * 1024;

/// What one listener serves with: the model and the listener's compiled rules. Swapped
/// whole, so a request sees one config or the next, never half of each.
pub struct ListenerView {
    pub model: Arc<Model>,
    pub router: Router,
}

impl ListenerView {
    /// The view of the `index`th listener of `model`'s config.
    pub fn new(model: Arc<Model>, index: usize) -> ListenerView {
        let router = Router::new(&model.config.listeners[index]);
        ListenerView { model, router }
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

/// One bound listener, as its connections see it: the port clients connected to and the
/// current [`ListenerView`].
pub struct ListenerContext {
    pub runtime: Arc<Runtime>,
    pub protocol: Protocol,
    /// The bound port (differs from the configured one when that was 0).
    pub port: u16,
    /// `port` as the X-Forwarded-Port value.
    pub port_value: HeaderValue,
    view: ArcSwap<ListenerView>,
    /// Fires when the listener stops (removed from the config, or shutdown begins): the
    /// accept loop ends and its connections finish their current request. Tunnels live on.
    pub stop: CancellationToken,
}

impl ListenerContext {
    /// A listener bound on `port` serving `view`, stopping with `stop`.
    pub fn new(
        runtime: Arc<Runtime>,
        protocol: Protocol,
        port: u16,
        view: ListenerView,
        stop: CancellationToken,
    ) -> ListenerContext {
        ListenerContext {
            runtime,
            protocol,
            port,
            port_value: HeaderValue::from(port),
            view: ArcSwap::from_pointee(view),
            stop,
        }
    }

    /// What the listener serves with now; a request holds it to its end.
    pub fn view(&self) -> Arc<ListenerView> {
        self.view.load_full()
    }

    /// Serve new requests with `view`.
    pub fn set_view(&self, view: ListenerView) {
        self.view.store(Arc::new(view));
    }
}
