//! From the file's serde mirror (`config::file`) to the runtime [`Config`]: defaults filled in, ALB's ranges and
//! rules enforced, names resolved, certificates loaded. Every problem is collected with its
//! place in the text; nothing stops at the first one.
//!
//! Durations below one of ALB's minimums (health-check interval 5 s, timeout 2 s, idle
//! timeout 1 s, …) are accepted with a warning, so that test suites can run fast.

mod listener;
mod rules;
mod target_group;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::document::{self, Read, Source};
use super::file::{AdminConfig, BackendConfig, DurationValue, LoadBalancerConfig};
use super::model::{
    AccessLog, Admin, Backend, Config, Credentials, DesyncMitigationMode, LoadBalancer, Secret,
    TargetGroupId, XffMode,
};
use super::{duration, ConfigError, ConfigErrors, Origin};

/// The outcome of validating a text: the model or every error, plus the warnings.
pub struct Validated {
    pub result: Result<Config, ConfigErrors>,
    pub warnings: Vec<ConfigError>,
}

/// Validate a config text; warnings are logged too.
pub fn validate(text: &str, origin: &Origin) -> Validated {
    validate_with(text, origin, true)
}

/// Validate a config text without logging its warnings (they are still returned): for
/// texts validated again and again, such as the running config changed through the API.
pub fn validate_quietly(text: &str, origin: &Origin) -> Validated {
    validate_with(text, origin, false)
}

fn validate_with(text: &str, origin: &Origin, log_warnings: bool) -> Validated {
    let src = Source {
        name: &origin.name,
        text,
    };
    let mut cx = Cx {
        src,
        base_dir: &origin.base_dir,
        errors: Vec::new(),
        warnings: Vec::new(),
        log_warnings,
    };
    let mut read_errors = Vec::new();
    let read = document::read(&cx.src, &mut read_errors);
    cx.errors.append(&mut read_errors);
    let config = read.and_then(|r| build(&mut cx, r));
    cx.errors.sort_by_key(|e| (e.line, e.column));
    cx.warnings.sort_by_key(|e| (e.line, e.column));
    let result = match config {
        Some(c) if cx.errors.is_empty() => Ok(c),
        _ => {
            if cx.errors.is_empty() {
                // Defensive: a part failed without saying why.
                cx.errors.push(ConfigError {
                    file: origin.name.clone(),
                    line: None,
                    column: None,
                    message: "the configuration is not valid".to_string(),
                });
            }
            Err(ConfigErrors(cx.errors))
        }
    };
    Validated {
        result,
        warnings: cx.warnings,
    }
}

/// The validation context: where errors and warnings go.
pub(crate) struct Cx<'a> {
    src: Source<'a>,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    log_warnings: bool,
}

/// How a duration key is checked.
pub(crate) struct DurationRule {
    pub key: &'static str,
    pub default: Duration,
    /// Zero is allowed (it means "off").
    pub zero_ok: bool,
    /// ALB's minimum: shorter values are accepted with a warning.
    pub alb_min: Duration,
    /// ALB's maximum: longer values are errors.
    pub max: Option<Duration>,
}

impl DurationRule {
    pub const fn new(key: &'static str, default_secs: u64) -> Self {
        DurationRule {
            key,
            default: Duration::from_secs(default_secs),
            zero_ok: false,
            alb_min: Duration::ZERO,
            max: None,
        }
    }
    pub const fn zero_ok(mut self) -> Self {
        self.zero_ok = true;
        self
    }
    pub const fn range(mut self, min_secs: u64, max_secs: u64) -> Self {
        self.alb_min = Duration::from_secs(min_secs);
        self.max = Some(Duration::from_secs(max_secs));
        self
    }
}

impl Cx<'_> {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.src.at(span, message);
        self.errors.push(e);
    }

    /// An error about the file as a whole, with no place in the text.
    pub fn error_in_file(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.src.name.to_string(),
            line: None,
            column: None,
            message: message.into(),
        });
    }

    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let w = self.src.at(span, message);
        if !self.log_warnings {
            self.warnings.push(w);
            return;
        }
        tracing::warn!(
            "{}:{}:{}: warning: {}",
            w.file,
            w.line.unwrap_or(0),
            w.column.unwrap_or(0),
            w.message
        );
        self.warnings.push(w);
    }

    /// Whether an error was already reported inside `span` (to avoid saying the same twice).
    pub fn has_error_within(&self, span: Range<usize>) -> bool {
        let (start, end) = (self.src.position(span.start), self.src.position(span.end));
        self.errors.iter().any(|e| match (e.line, e.column) {
            (Some(l), Some(c)) => start <= (l, c) && (l, c) <= end,
            _ => false,
        })
    }

    /// Line of a span, to point back at an earlier definition.
    pub fn line_of(&self, span: Range<usize>) -> usize {
        self.src.position(span.start).0
    }

    /// A path from the file, resolved against the config's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A duration with its default, range and warnings.
    pub fn duration(
        &mut self,
        value: Option<&Spanned<DurationValue>>,
        rule: &DurationRule,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(rule.default);
        };
        let span = value.span();
        let d = match value.get_ref().to_duration() {
            Ok(d) => d,
            Err(e) => {
                self.error(span, format!("`{}`: {e}", rule.key));
                return None;
            }
        };
        let shown = duration::display(d);
        if d.is_zero() {
            if rule.zero_ok {
                return Some(d);
            }
            self.error(span, format!("`{}` must be greater than 0", rule.key));
            return None;
        }
        if let Some(max) = rule.max {
            if d > max {
                self.error(
                    span,
                    format!(
                        "`{}` is {shown}, above ALB's maximum of {}",
                        rule.key,
                        duration::display(max)
                    ),
                );
                return None;
            }
        }
        if d < rule.alb_min {
            self.warn(
                span,
                format!(
                    "`{}` is {shown}, below ALB's minimum of {}; accepted",
                    rule.key,
                    duration::display(rule.alb_min)
                ),
            );
        }
        Some(d)
    }

    /// An integer within an inclusive range.
    pub fn int_in(&mut self, value: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let v = *value.get_ref();
        if v < lo || v > hi {
            self.error(
                value.span(),
                format!("`{key}` must be between {lo} and {hi} (got {v})"),
            );
            return None;
        }
        Some(v)
    }

    /// One of a fixed set of words.
    pub fn one_of<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        let Some(value) = value else {
            return Some(default);
        };
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.error(
            value.span(),
            format!(
                "`{key}` must be one of {} (got `{}`)",
                names.join(", "),
                value.get_ref()
            ),
        );
        None
    }

    /// A socket address `ip:port`.
    pub fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    value.span(),
                    format!(
                        "`{key}` must be an address such as \"127.0.0.1:9900\" (got `{}`)",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// Everything after reading: each part validated, then assembled when all went well.
fn build(cx: &mut Cx<'_>, read: Read) -> Option<Config> {
    let file = read.file;
    let load_balancer = load_balancer(cx, file.load_balancer.unwrap_or_default());
    let admin_listen_span = file
        .admin
        .as_ref()
        .and_then(|a| a.listen.as_ref().map(|l| l.span()));
    let admin = file.admin.and_then(|a| admin(cx, a));
    let mut log = |a: crate::config::file::AccessLogConfig, what: &str| {
        if a.path.get_ref().trim().is_empty() {
            cx.error(
                a.path.span(),
                format!("`path` of the {what} cannot be empty"),
            );
            return None;
        }
        Some(AccessLog {
            path: cx.resolve(a.path.get_ref()),
        })
    };
    let access_log = file.access_log.and_then(|a| log(a, "access log"));
    let connection_log = file.connection_log.and_then(|a| log(a, "connection log"));

    let (target_groups, ids) = target_group::target_groups(cx, &file.target_group);
    let ids = TargetGroupNames {
        ids,
        unreadable: read.unreadable_target_groups,
    };
    let http2 = load_balancer.as_ref().is_none_or(|lb| lb.http2_enabled);
    let listeners = listener::listeners(cx, &file.listener, &ids, http2);
    let backends: Vec<Option<Backend>> = file.backend.iter().map(|b| backend(cx, b)).collect();
    // Bind conflicts are checked on every address that parses, even when other parts of
    // its table are wrong.
    let mut binds = Binds::default();
    for l in &file.listener {
        let l = l.get_ref();
        let ip = match &l.address {
            None => Some(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            Some(a) => a.get_ref().parse().ok(),
        };
        if let (Some(ip), Ok(port)) = (ip, u16::try_from(*l.port.get_ref())) {
            binds.claim(cx, SocketAddr::new(ip, port), l.port.span(), "listener");
        }
    }
    for b in &file.backend {
        if let Ok(addr) = b.get_ref().listen.get_ref().parse() {
            binds.claim(cx, addr, b.get_ref().listen.span(), "backend");
        }
    }
    if let (Some(a), Some(listen)) = (&admin, admin_listen_span) {
        binds.claim(cx, a.listen, listen, "admin listener");
    }

    if read.listeners_in_text == 0 {
        cx.error_in_file("no listener is configured; add at least one [[listener]]");
    }
    let listeners: Option<Vec<_>> = listeners.into_iter().collect();
    let target_groups: Option<Vec<_>> = target_groups.into_iter().collect();
    let backends: Option<Vec<_>> = backends.into_iter().collect();
    Some(Config {
        load_balancer: load_balancer?,
        admin,
        access_log,
        connection_log,
        listeners: listeners?,
        target_groups: target_groups?,
        backends: backends?,
        source: None,
    })
}

/// Names of target groups, resolved to ids.
pub(crate) type TargetGroupIds = HashMap<String, TargetGroupId>;

/// Target group names as actions see them: the valid ones, and those whose table could not
/// be read (a reference to one of those is not reported again).
pub(crate) struct TargetGroupNames {
    pub ids: TargetGroupIds,
    pub unreadable: Vec<String>,
}

/// Addresses the process binds, to catch two listeners (or a listener and a backend) on the
/// same port of the same address. Port 0 never collides.
#[derive(Default)]
struct Binds {
    seen: Vec<(SocketAddr, usize, &'static str)>,
}

impl Binds {
    fn claim(&mut self, cx: &mut Cx<'_>, addr: SocketAddr, span: Range<usize>, what: &'static str) {
        if addr.port() == 0 {
            return;
        }
        let overlaps = |a: &SocketAddr| {
            a.port() == addr.port()
                && a.is_ipv4() == addr.is_ipv4()
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        };
        if let Some((other, line, other_what)) = self.seen.iter().find(|(a, _, _)| overlaps(a)) {
            cx.error(
                span.clone(),
                format!(
                    "port {} on {} is already used by the {other_what} on {other} (line {line})",
                    addr.port(),
                    addr.ip()
                ),
            );
            return;
        }
        let line = cx.line_of(span);
        self.seen.push((addr, line, what));
    }
}

/// `[admin]`: where it listens, and the key it asks for. A listener reachable from other
/// machines without a key would let anyone change the load balancer.
fn admin(cx: &mut Cx<'_>, a: AdminConfig) -> Option<Admin> {
    let listen = match &a.listen {
        Some(l) => cx.socket_addr(l, "listen")?,
        None => SocketAddr::from(([127, 0, 0, 1], 9900)),
    };
    let credentials = match &a.credentials {
        None => None,
        Some(c) => {
            let (id, secret) = (&c.get_ref().access_key_id, &c.get_ref().secret_access_key);
            let mut ok = true;
            if id.get_ref().is_empty()
                || !id
                    .get_ref()
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                cx.error(
                    id.span(),
                    "`access_key_id` must be letters, digits or underscores, such as \"AKIDEXAMPLE\"",
                );
                ok = false;
            }
            if secret.get_ref().is_empty() {
                cx.error(secret.span(), "`secret_access_key` cannot be empty");
                ok = false;
            }
            if !ok {
                return None;
            }
            Some(Credentials {
                access_key_id: id.get_ref().clone(),
                secret_access_key: Secret::new(secret.get_ref().clone()),
            })
        }
    };
    if !listen.ip().is_loopback() && credentials.is_none() {
        let span = a.listen.as_ref().map(|l| l.span()).unwrap_or(0..0);
        cx.error(
            span,
            format!(
                "the admin listener on {listen} is reachable from other machines; set \
                 `credentials = {{ access_key_id = \"…\", secret_access_key = \"…\" }}` \
                 or listen on a loopback address such as 127.0.0.1"
            ),
        );
        return None;
    }
    Some(Admin {
        listen,
        credentials,
    })
}

fn load_balancer(cx: &mut Cx<'_>, lb: LoadBalancerConfig) -> Option<LoadBalancer> {
    let d = LoadBalancer::default();
    let idle = cx.duration(
        lb.idle_timeout.as_ref(),
        &DurationRule::new("idle_timeout", 60).range(1, 4000),
    );
    let keep_alive = cx.duration(
        lb.client_keep_alive.as_ref(),
        &DurationRule::new("client_keep_alive", 3600).range(60, 604_800),
    );
    let tls = cx.duration(
        lb.tls_handshake_timeout.as_ref(),
        &DurationRule::new("tls_handshake_timeout", 10),
    );
    let header = cx.duration(
        lb.header_read_timeout.as_ref(),
        &DurationRule::new("header_read_timeout", 60),
    );
    let connect = cx.duration(
        lb.connect_timeout.as_ref(),
        &DurationRule::new("connect_timeout", 10),
    );
    let shutdown = cx.duration(
        lb.shutdown_timeout.as_ref(),
        &DurationRule::new("shutdown_timeout", 30),
    );
    let max_connections = match &lb.max_connections {
        None => Some(None),
        Some(n) => cx
            .int_in(n, "max_connections", 1, MAX_CONNECTIONS)
            .map(|n| Some(n as usize)),
    };
    let xff = cx.one_of(
        lb.xff_header_processing.as_ref(),
        "xff_header_processing",
        &[
            ("append", XffMode::Append),
            ("preserve", XffMode::Preserve),
            ("remove", XffMode::Remove),
        ],
        d.xff_header_processing,
    );
    let desync = cx.one_of(
        lb.desync_mitigation_mode.as_ref(),
        "desync_mitigation_mode",
        &[
            ("monitor", DesyncMitigationMode::Monitor),
            ("defensive", DesyncMitigationMode::Defensive),
            ("strictest", DesyncMitigationMode::Strictest),
        ],
        d.desync_mitigation_mode,
    );
    let secret = match &lb.stickiness_secret {
        None => Some(None),
        Some(s) if s.get_ref().chars().count() < 16 => {
            cx.error(
                s.span(),
                "`stickiness_secret` must be at least 16 characters long",
            );
            None
        }
        Some(s) => Some(Some(Secret::new(s.get_ref().clone()))),
    };
    let name = lb.name.as_ref().map_or(Some(d.name.clone()), |n| {
        let v = n.get_ref();
        let ok = !v.is_empty()
            && v.len() <= 32
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !v.starts_with('-')
            && !v.ends_with('-')
            && !v.starts_with("internal-");
        if !ok {
            cx.error(
                n.span(),
                format!(
                    "`name` must be 1 to 32 letters, digits and hyphens, without a hyphen at \
                     either end and not starting with `internal-` (got `{v}`)"
                ),
            );
            return None;
        }
        Some(v.clone())
    });
    let region = lb.region.as_ref().map_or(Some(d.region.clone()), |r| {
        let v = r.get_ref();
        let ok = !v.is_empty()
            && v.len() <= 32
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if !ok {
            cx.error(
                r.span(),
                format!("`region` must look like `us-east-1` (got `{v}`)"),
            );
            return None;
        }
        Some(v.clone())
    });
    let account_id = lb
        .account_id
        .as_ref()
        .map_or(Some(d.account_id.clone()), |a| {
            let v = a.get_ref();
            if v.len() != 12 || !v.chars().all(|c| c.is_ascii_digit()) {
                cx.error(
                    a.span(),
                    format!("`account_id` must be 12 digits (got `{v}`)"),
                );
                return None;
            }
            Some(v.clone())
        });
    Some(LoadBalancer {
        name: name?,
        region: region?,
        account_id: account_id?,
        stickiness_secret: secret?,
        idle_timeout: idle?,
        xff_header_processing: xff?,
        xff_client_port: lb.xff_client_port.unwrap_or(d.xff_client_port),
        preserve_host_header: lb.preserve_host_header.unwrap_or(d.preserve_host_header),
        drop_invalid_header_fields: lb
            .drop_invalid_header_fields
            .unwrap_or(d.drop_invalid_header_fields),
        desync_mitigation_mode: desync?,
        http2_enabled: lb.http2_enabled.unwrap_or(d.http2_enabled),
        client_keep_alive: keep_alive?,
        tls_handshake_timeout: tls?,
        header_read_timeout: header?,
        connect_timeout: connect?,
        shutdown_timeout: shutdown?,
        max_connections: max_connections?,
    })
}

/// The largest `max_connections` accepted (a process cannot hold more descriptors).
const MAX_CONNECTIONS: i64 = 100_000_000;

fn backend(cx: &mut Cx<'_>, b: &Spanned<BackendConfig>) -> Option<Backend> {
    let b = b.get_ref();
    let listen = cx.socket_addr(&b.listen, "listen");
    let interval = cx.duration(
        b.ping_interval.as_ref(),
        &DurationRule::new("ping_interval", 25).zero_ok(),
    );
    let timeout = cx.duration(
        b.ping_timeout.as_ref(),
        &DurationRule::new("ping_timeout", 20).zero_ok(),
    );
    let mut ok = true;
    if let Some(id) = &b.id {
        if id.get_ref().trim().is_empty() {
            cx.error(id.span(), "a backend `id` cannot be empty");
            ok = false;
        }
    }
    if let Some(r) = &b.redis {
        let url = r.get_ref();
        if url.starts_with("rediss://") {
            cx.error(
                r.span(),
                "`redis` over TLS (rediss://) is not supported by the heartbeat backend; use a redis:// URL",
            );
            ok = false;
        } else if !url.starts_with("redis://") {
            cx.error(
                r.span(),
                format!("`redis` must be a redis:// URL (got `{url}`)"),
            );
            ok = false;
        }
    }
    let listen = listen?;
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    let (interval, timeout) = (interval?, timeout?);
    ok.then(|| Backend {
        listen,
        id: b
            .id
            .as_ref()
            .map_or_else(|| listen.to_string(), |i| i.get_ref().clone()),
        ping_interval: nonzero(interval),
        ping_timeout: nonzero(timeout),
        redis: b.redis.as_ref().map(|r| r.get_ref().clone()),
    })
}
