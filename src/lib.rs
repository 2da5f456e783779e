//! albatross: a Layer-7, WebSocket-aware reverse proxy that behaves like an AWS
//! Application Load Balancer.
//!
//! ```text
//!  client ──TCP──► listener ──(TLS)──► proxy::serve ──► routing ──► action
//!                  (accept, handshake)  (HTTP/1.1, h2)  (rules)       │
//!                                                                     │
//!             redirect / fixed_response ◄─────────────────────────────┤
//!                                                                     ▼
//!                          target_group::select ──► proxy::forward ──► target's keep-alive
//!                          (group, target, cookies)      │             pool (proxy::upstream)
//!                                                        │
//!                                        proxy::upgrade ─┴─► 101 ──► tunnel (bytes, idle,
//!                                                                    registry, record)
//! ```
//!
//! Each module has one job, and the arrows point one way: `listener` → `proxy` →
//! `routing` / `target_group` (pure answers) → `tunnel` (bytes). `config` and `tls` are
//! leaves that the others read; `shutdown` owns how everything stops.
//!
//! | module | job | uses |
//! | --- | --- | --- |
//! | [`config`] | TOML → validated, immutable [`config::Config`]; errors with locations | `tls` |
//! | [`tls`] | PEM, ALB security policies, SNI, ALPN → rustls configs; no sockets | |
//! | [`listener`] | bind, accept, TLS handshakes; hands typed streams to `proxy`; no HTTP | `proxy`, `tls` |
//! | [`proxy`] | all HTTP: serving clients, forwarding, upgrades, per-target keep-alive pools, ALB's headers and errors | `routing`, `target_group`, `tunnel` |
//! | [`routing`] | listener rules compiled into matchers; no I/O | `config` |
//! | [`target_group`] | targets, health checks, balancing, stickiness, draining, DNS; no HTTP client | `config` |
//! | [`tunnel`] | the post-101 byte pipe with idle timeout; the registry of open tunnels and their records | |
//! | [`backend`] | the heartbeat WebSocket backend | |
//! | [`shutdown`] | cancellation tokens, the task tracker, the order of a shutdown | `tunnel` |
//!
//! Start a proxy in-process with [`Proxy::start`] (any listener may use port 0) and
//! read the bound addresses from the returned [`ProxyHandle`].

pub mod admin;
pub mod arn;
pub mod backend;
pub mod certs;
pub mod config;
pub mod control;
pub mod listener;
pub mod observe;
pub mod proxy;
pub mod routing;
pub mod shutdown;
pub mod target_group;
pub mod tls;
pub mod tunnel;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use config::{Config, ConfigErrors, Origin};
use control::{ConfigSource, Control};
pub use listener::BoundListener;
use proxy::Runtime;
use shutdown::Shutdown;
pub use target_group::{HealthState, Reason, TargetHealthDescription, TargetsError};
/// DESIGN.md's name for the disconnect modes: `handle.disconnect(id, Mode::NetworkDrop)`.
pub use tunnel::DisconnectMode as Mode;
pub use tunnel::{DisconnectMode, TunnelId, TunnelInfo};

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("Cannot listen on {addr}: {source}.")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A heartbeat backend could not start (e.g. its Redis URL cannot be used).
    #[error("Cannot start the heartbeat backend on {addr}: {source}.")]
    Backend {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<listener::BindError> for StartError {
    fn from(e: listener::BindError) -> StartError {
        StartError::Bind {
            addr: e.addr,
            source: e.source,
        }
    }
}

/// Entry point of the library.
pub struct Proxy;

/// How a proxy discovers DNS targets; the defaults are the machine's resolver and a
/// refresh every 5 s.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Resolves `{ dns = "name:port" }` targets (tests pass a [`target_group::StaticResolver`]).
    pub resolver: Arc<dyn target_group::Resolve>,
    /// How often DNS targets are resolved again.
    pub dns_refresh_interval: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            resolver: Arc::new(target_group::SystemResolver),
            dns_refresh_interval: target_group::dns::DEFAULT_REFRESH_INTERVAL,
        }
    }
}

impl Proxy {
    /// Bind every listener and backend of `config`, then start serving.
    /// Returns once all sockets are bound, so the addresses are ready to use. A reload
    /// reads the config's file again (a config built from a string has none: use
    /// [`Proxy::start_str`] or [`ProxyHandle::reload_str`]).
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        Proxy::start_with(config, ProxyOptions::default()).await
    }

    /// [`Proxy::start`] with explicit [`ProxyOptions`].
    pub async fn start_with(
        config: Config,
        options: ProxyOptions,
    ) -> Result<ProxyHandle, StartError> {
        let (origin, source) = match &config.source {
            Some(path) => (Origin::file(path), ConfigSource::File(path.clone())),
            None => (
                Origin {
                    name: "<config>".to_string(),
                    base_dir: std::env::current_dir().unwrap_or_default(),
                },
                ConfigSource::Value,
            ),
        };
        Proxy::start_from(config, origin, source, options).await
    }

    /// Start `config`, which came from `source` (read again by a reload); relative paths
    /// resolve against `origin`.
    pub async fn start_from(
        config: Config,
        origin: Origin,
        source: ConfigSource,
        options: ProxyOptions,
    ) -> Result<ProxyHandle, StartError> {
        let shutdown = Shutdown::new();
        // Bind everything first: a taken port fails the start before anything runs.
        let mut backend_listeners = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let listener =
                TcpListener::bind(b.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: b.listen,
                        source,
                    })?;
            backend_listeners.push(listener);
        }
        let backend_configs = config.backends.clone();
        let runtime = Arc::new(Runtime::new(
            shutdown.clone(),
            options.resolver.clone(),
            options.dns_refresh_interval,
        ));
        let (admin_sockets, admin_socket) = tokio::sync::mpsc::unbounded_channel();
        let control = match Control::start(runtime, config, origin, source, admin_sockets).await {
            Ok(control) => Arc::new(control),
            Err(e) => {
                shutdown.close_all.cancel();
                return Err(e.into());
            }
        };
        shutdown
            .tracker
            .spawn(admin::run(control.clone(), admin_socket));

        // Backends stop when the proxy stops accepting, and drain beside it. Their
        // sockets are bound: anything arriving first waits in the accept queue.
        let mut backends = Vec::with_capacity(backend_configs.len());
        for (b, listener) in backend_configs.iter().zip(backend_listeners) {
            let options = backend::BackendOptions {
                id: b.id.clone(),
                ping_interval: b.ping_interval,
                ping_timeout: b.ping_timeout,
                redis: b.redis.clone(),
            };
            let cancel = shutdown.stop_accepting.child_token();
            let handle = backend::start(listener, options, cancel)
                .await
                .map_err(|source| StartError::Backend {
                    addr: b.listen,
                    source,
                })?;
            backends.push(handle);
        }

        Ok(ProxyHandle {
            control,
            backends,
            shutdown,
        })
    }

    /// Validate `text` (relative paths resolve against the current directory) and start.
    /// A reload validates the same text again.
    pub async fn start_str(text: &str) -> Result<ProxyHandle, StartError> {
        let origin = Origin {
            name: "<config>".to_string(),
            base_dir: std::env::current_dir().unwrap_or_default(),
        };
        let config = config::from_str(text, &origin)?;
        let source = ConfigSource::Text(text.to_string());
        Proxy::start_from(config, origin, source, ProxyOptions::default()).await
    }

    /// Load and validate a config file, then start.
    pub async fn start_file(path: &Path) -> Result<ProxyHandle, StartError> {
        Proxy::start(config::load_file(path)?).await
    }
}

/// A running proxy. Dropping it closes everything at once; [`ProxyHandle::shutdown`]
/// drains gracefully.
pub struct ProxyHandle {
    control: Arc<Control>,
    backends: Vec<backend::BackendHandle>,
    shutdown: Shutdown,
}

impl ProxyHandle {
    /// Listeners in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.control.listeners()
    }

    /// The bound address of the `index`th listener (config order).
    pub fn listener_addr(&self, index: usize) -> SocketAddr {
        self.control.listeners()[index].local_addr
    }

    /// The admin listener's address; `None` when `[admin]` is absent.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.control.admin_addr()
    }

    /// The heartbeat backends this proxy started, in config order.
    pub fn backends(&self) -> &[backend::BackendHandle] {
        &self.backends
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.control.config()
    }

    /// Read the config again from where it came from (its file, or the text it was
    /// started from) and apply it: see [`control`]. A config with errors changes nothing.
    pub async fn reload(&self) -> Result<control::Applied, control::ChangeError> {
        self.control.reload().await
    }

    /// Apply the config `text`, as a reload would.
    pub async fn reload_str(&self, text: &str) -> Result<control::Applied, control::ChangeError> {
        self.control.reload_str(text).await
    }

    /// RegisterTargets: add `addr` to target group `group`. It starts `initial` and
    /// takes traffic once it passes a health check (or when the group fails open).
    pub fn register_target(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        self.control.runtime().targets.register(group, addr)
    }

    /// DeregisterTargets: `addr` takes no new requests or tunnels; it shows `draining`
    /// until the group's `deregistration_delay` ends, when its tunnels are closed.
    pub fn deregister_target(&self, group: &str, addr: SocketAddr) -> Result<(), TargetsError> {
        self.control.runtime().targets.deregister(group, addr)
    }

    /// DescribeTargetHealth: every registered target of `group` (draining ones included).
    pub fn target_health(&self, group: &str) -> Result<Vec<TargetHealthDescription>, TargetsError> {
        Ok(self.control.runtime().targets.by_name(group)?.describe())
    }

    /// DescribeTargetHealth for one target; one that is not registered is reported as
    /// `unused` / `Target.NotRegistered`, as ALB does.
    pub fn target_health_of(
        &self,
        group: &str,
        addr: SocketAddr,
    ) -> Result<TargetHealthDescription, TargetsError> {
        Ok(self
            .control
            .runtime()
            .targets
            .by_name(group)?
            .describe_target(addr))
    }

    /// ModifyLoadBalancerAttributes in-process: ALB's keys and values, e.g.
    /// `("idle_timeout.timeout_seconds", "120")`, validated and applied as the API does
    /// (connections and tunnels opened afterwards get the new values).
    pub async fn modify_load_balancer_attributes(
        &self,
        attributes: &[(&str, &str)],
    ) -> Result<(), admin::ApiError> {
        admin::modify_load_balancer_attributes(&self.control, &owned(attributes)).await
    }

    /// ModifyTargetGroupAttributes in-process for the group named `group`, e.g.
    /// `("deregistration_delay.timeout_seconds", "5")`.
    pub async fn modify_target_group_attributes(
        &self,
        group: &str,
        attributes: &[(&str, &str)],
    ) -> Result<(), admin::ApiError> {
        admin::modify_target_group_attributes(&self.control, group, &owned(attributes)).await
    }

    /// Close the access and connection logs and open their paths again (what `SIGUSR1`
    /// does, after logrotate renamed them).
    pub fn reopen_logs(&self) {
        self.control.runtime().reopen_logs();
    }

    /// Wait until every access- and connection-log line queued so far is written
    /// (blocking; for tests and tools, not for a runtime worker's hot path).
    pub fn flush_logs(&self) {
        let logs = self.control.model().logs.clone();
        if let Some(l) = &logs.access {
            l.flush();
        }
        if let Some(l) = &logs.connection {
            l.flush();
        }
    }

    /// The open tunnels, by id: what each joins, the bytes it carried so far each way
    /// and how long it has been idle (as `GET /tunnels` lists them).
    pub fn tunnels(&self) -> Vec<tunnel::TunnelInfo> {
        self.control.tunnels()
    }

    /// End tunnel `id` the way `mode` says (DESIGN.md, "Disconnects on demand"); what
    /// the tunnel was, or `None` when no such tunnel is open. The tunnel's close is
    /// recorded with cause `disconnect_<mode>`.
    pub fn disconnect(
        &self,
        id: tunnel::TunnelId,
        mode: DisconnectMode,
    ) -> Option<tunnel::TunnelInfo> {
        self.control.disconnect(id, mode)
    }

    /// [`ProxyHandle::disconnect`] for every open tunnel to `target` in `group`; what
    /// they were. An unknown group, or a target neither registered there nor with an
    /// open tunnel, is an error.
    pub fn disconnect_target(
        &self,
        group: &str,
        target: SocketAddr,
        mode: DisconnectMode,
    ) -> Result<Vec<tunnel::TunnelInfo>, TargetsError> {
        self.control.disconnect_target(group, target, mode)
    }

    /// Stop within the configured `shutdown_timeout`: stop accepting, let in-flight
    /// requests, tunnels and the in-process backends finish, then close what is left at
    /// the deadline (see [`shutdown`] for the order).
    pub async fn shutdown(self) {
        let deadline = self.control.config().load_balancer.shutdown_timeout;
        self.shutdown_within(deadline).await;
    }

    /// [`ProxyHandle::shutdown`] with an explicit deadline.
    ///
    /// The in-process backends stop with the listeners, so their WebSockets end with a
    /// close frame (1001) that travels through the tunnels, rather than being cut at the
    /// deadline.
    pub async fn shutdown_within(self, deadline: Duration) {
        // All are stopping at once; waiting for them in turn costs no extra time.
        let backends_stopped = async {
            for b in &self.backends {
                b.stopped().await;
            }
        };
        let tunnels = &self.control.runtime().tunnels;
        self.shutdown
            .run(deadline, backends_stopped, || {
                tunnels.close(tunnel::EndRequest::Shutdown);
            })
            .await;
    }

    /// Resolves when a shutdown has begun (for callers that wait on the proxy).
    pub async fn stopping(&self) {
        self.shutdown.stop_accepting.cancelled().await
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // Also stops accepting, and with it the in-process backends.
        self.shutdown.close_all.cancel();
        self.control
            .runtime()
            .tunnels
            .close(tunnel::EndRequest::Shutdown);
    }
}
