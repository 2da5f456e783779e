//! The validated runtime model. Everything here is immutable once built, and every
//! value has already been checked: ids resolve, ranges hold, certificates load.
//!
//! Nothing outside `config` sees TOML; the rest of the crate receives these types.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub load_balancer: LoadBalancer,
    /// `[admin]`; `None` means no admin listener.
    pub admin: Option<Admin>,
    /// `[access_log]`; `None` means no access log.
    pub access_log: Option<AccessLog>,
    /// `[connection_log]`; `None` means no connection log.
    pub connection_log: Option<AccessLog>,
    pub listeners: Vec<Listener>,
    /// Indexed by [`TargetGroupId`].
    pub target_groups: Vec<TargetGroup>,
    /// Heartbeat backends this process starts (`[[backend]]`).
    pub backends: Vec<Backend>,
    /// Where the config came from (`None` for a string without a name).
    pub source: Option<PathBuf>,
}

impl Config {
    pub fn target_group(&self, id: TargetGroupId) -> &TargetGroup {
        &self.target_groups[id.0]
    }
}

/// Load-balancer attributes (ALB's `idle_timeout.timeout_seconds`, `routing.http.*`).
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    /// `idle_timeout`, default 60 s, ALB range 1–4000 s (shorter accepted with a warning).
    pub idle_timeout: Duration,
    pub xff_header_processing: XffMode,
    /// `xff_client_port`, default false.
    pub xff_client_port: bool,
    pub preserve_host_header: bool,
    pub drop_invalid_header_fields: bool,
    pub desync_mitigation_mode: DesyncMitigationMode,
    /// `http2_enabled` (ALB `routing.http2.enabled`), default true: HTTPS listeners offer
    /// `h2` by ALPN; requests still reach targets as HTTP/1.1.
    pub http2_enabled: bool,
    /// `client_keep_alive`, default 3600 s: hard lifetime of a client HTTP connection.
    pub client_keep_alive: Duration,
    /// Time allowed for a client's TLS handshake (not an ALB setting; default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Time allowed to read a request's headers (not an ALB setting; default 60 s like ALB's idle timeout).
    pub header_read_timeout: Duration,
    /// TCP connect timeout toward targets (ALB: 10 s, answered with 504).
    pub connect_timeout: Duration,
    /// How long graceful shutdown lets requests and tunnels finish (not an ALB setting; default 30 s).
    pub shutdown_timeout: Duration,
    /// Client connections open at once (not an ALB setting); `None`: half the process's
    /// descriptor limit less a reserve (`proxy::limit`).
    pub max_connections: Option<usize>,
    /// Key material of stickiness cookies (not an ALB setting); `None` = random per start.
    pub stickiness_secret: Option<Secret>,
    /// ALB's `LoadBalancerName` (default `albatross`): ARNs derive from it.
    pub name: String,
    /// The region in ARNs (default `us-east-1`).
    pub region: String,
    /// The account in ARNs (default `000000000000`).
    pub account_id: String,
}

/// A secret from the config; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            idle_timeout: Duration::from_secs(60),
            xff_header_processing: XffMode::Append,
            xff_client_port: false,
            preserve_host_header: false,
            drop_invalid_header_fields: false,
            desync_mitigation_mode: DesyncMitigationMode::Defensive,
            http2_enabled: true,
            client_keep_alive: Duration::from_secs(3600),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: None,
            stickiness_secret: None,
            name: "albatross".to_string(),
            region: "us-east-1".to_string(),
            account_id: "000000000000".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XffMode {
    Append,
    Preserve,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesyncMitigationMode {
    Monitor,
    Defensive,
    Strictest,
}

/// `[admin]`: the operators' and test suites' listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Default `127.0.0.1:9900`; on loopback unless `credentials` are set.
    pub listen: SocketAddr,
    pub credentials: Option<Credentials>,
}

/// The one key the admin listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Absolute (resolved against the config file's folder).
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    /// `http` / `https`, as in X-Forwarded-Proto and `#{protocol}`.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
        })
    }
}

/// One `[[listener]]`.
#[derive(Clone)]
pub struct Listener {
    /// Bind address; default 0.0.0.0.
    pub address: IpAddr,
    /// Port as configured (0 = pick a free port, for tests).
    pub port: u16,
    pub protocol: Protocol,
    /// Present exactly when `protocol` is HTTPS.
    pub tls: Option<Tls>,
    /// Rules in evaluation order (ascending priority).
    pub rules: Vec<Rule>,
    pub default_action: Action,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .field("rules", &self.rules)
            .field("default_action", &self.default_action)
            .finish()
    }
}

/// TLS settings of an HTTPS listener.
#[derive(Clone)]
pub struct Tls {
    pub ssl_policy: String,
    /// Certificate files in order; the first is the default certificate.
    pub certificates: Vec<CertificateFiles>,
    /// Ready-to-use server config (SNI resolver, protocol versions, ALPN, tickets,
    /// client certificates).
    pub server_config: Arc<rustls::ServerConfig>,
    /// ALB's `MutualAuthentication`.
    pub mutual_authentication: MutualAuthentication,
}

/// A listener's mutual TLS (`off` by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutualAuthentication {
    pub mode: crate::tls::MtlsMode,
    /// The CA bundle of `verify`.
    pub trust_store: Option<PathBuf>,
    pub ignore_client_certificate_expiry: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ssl_policy", &self.ssl_policy)
            .field("certificates", &self.certificates)
            .field("mutual_authentication", &self.mutual_authentication)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One listener rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1–50000, unique per listener.
    pub priority: u32,
    /// AND-ed; each condition's values are OR-ed.
    pub conditions: Vec<Condition>,
    pub action: Action,
}

/// A rule condition, as configured (values validated, not yet compiled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    HostHeader(Vec<String>),
    PathPattern(Vec<String>),
    HttpHeader {
        name: String,
        values: Vec<String>,
    },
    HttpRequestMethod(Vec<String>),
    /// `(key, value)` pairs; `None` key matches any key.
    QueryString(Vec<(Option<String>, String)>),
    SourceIp(Vec<ipnet::IpNet>),
}

#[derive(Debug, Clone)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

impl Action {
    /// ALB's name for the action, as in the access log's `actions_executed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Forward(_) => "forward",
            Action::Redirect(_) => "redirect",
            Action::FixedResponse(_) => "fixed-response",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetGroupId(pub usize);

#[derive(Debug, Clone)]
pub struct Forward {
    /// One or more groups (up to 5), weights 0–999.
    pub target_groups: Vec<WeightedTargetGroup>,
    /// Group-level stickiness duration (`AWSALBTG`), if enabled.
    pub stickiness: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct WeightedTargetGroup {
    pub id: TargetGroupId,
    pub weight: u16,
}

/// Redirect parts; each is a template that may hold `#{protocol}`, `#{host}`,
/// `#{port}`, `#{path}` and `#{query}`. Defaults reproduce the original component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub path: String,
    pub query: String,
    /// 301 or 302.
    pub status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponse {
    /// 2XX, 4XX or 5XX.
    pub status_code: u16,
    pub content_type: Option<String>,
    pub message_body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
    WeightedRandom,
}

/// One `[[target_group]]`.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    /// ≤32 chars, alphanumerics and hyphens.
    pub name: String,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    /// default 300 s, 0–3600.
    pub deregistration_delay: Duration,
    /// `Duration::ZERO` = off; otherwise 30–900 s.
    pub slow_start: Duration,
    pub stickiness: Option<Stickiness>,
    pub targets: Vec<TargetSpec>,
    pub health_check: HealthCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stickiness {
    /// `AWSALB` / `AWSALBCORS`; duration default 1 day, 1 s–7 days.
    LbCookie { duration: Duration },
    /// `AWSALBAPP-*` following the application's cookie.
    AppCookie {
        cookie_name: String,
        duration: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Addr(SocketAddr),
    /// `{ dns = "host:port" }`, resolved at start and periodically.
    Dns {
        host: String,
        port: u16,
    },
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Addr(a) => write!(f, "{a}"),
            TargetSpec::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// ALB: always on for instance/ip targets; `enabled = false` is an albatross extension.
    pub enabled: bool,
    pub protocol: Protocol,
    /// default "/"
    pub path: String,
    pub port: HealthCheckPort,
    /// default 30 s (ALB 5–300)
    pub interval: Duration,
    /// default 5 s (ALB 2–120)
    pub timeout: Duration,
    /// default 5 (2–10)
    pub healthy_threshold: u32,
    /// default 2 (2–10)
    pub unhealthy_threshold: u32,
    /// Inclusive status ranges; default `[(200, 200)]`.
    pub matcher: Vec<(u16, u16)>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            protocol: Protocol::Http,
            path: "/".to_string(),
            port: HealthCheckPort::TrafficPort,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: vec![(200, 200)],
        }
    }
}

impl HealthCheck {
    pub fn matches(&self, status: u16) -> bool {
        self.matcher
            .iter()
            .any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckPort {
    TrafficPort,
    Port(u16),
}

/// One `[[backend]]`: a heartbeat backend started by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub listen: SocketAddr,
    /// Defaults to the listen address.
    pub id: String,
    /// `None` = no pings (0 in the file). Default 25 s.
    pub ping_interval: Option<Duration>,
    /// `None` = never time out (0 in the file). Default 20 s.
    pub ping_timeout: Option<Duration>,
    pub redis: Option<String>,
}
