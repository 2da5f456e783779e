//! The config file as written: a serde mirror of the TOML, key for key.
//!
//! Nothing here is checked beyond TOML types. Fields that validation has to locate are
//! [`Spanned`], so every error can point at the offending value. Optional keys are
//! `Option`s here; their defaults are filled in by `validate`, and the documented default
//! of every key is on its field. Unknown keys are reported by the reader (`document`),
//! which deserializes these types through `serde_ignored`: that way every unknown key is
//! reported, not only the first one.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    /// `[load_balancer]`: load-balancer attributes.
    pub load_balancer: Option<LoadBalancerConfig>,
    /// `[admin]`: absent means no admin listener.
    pub admin: Option<AdminConfig>,
    /// `[access_log]`: absent means no access log.
    pub access_log: Option<AccessLogConfig>,
    /// `[connection_log]`: absent means no connection log.
    pub connection_log: Option<AccessLogConfig>,
    /// `[[listener]]`: at least one.
    #[serde(default)]
    pub listener: Vec<Spanned<ListenerConfig>>,
    /// `[[target_group]]`.
    #[serde(default)]
    pub target_group: Vec<Spanned<TargetGroupConfig>>,
    /// `[[backend]]`: heartbeat backends this process starts.
    #[serde(default)]
    pub backend: Vec<Spanned<BackendConfig>>,
}

/// `[load_balancer]`.
#[derive(Debug, Default, Deserialize)]
pub struct LoadBalancerConfig {
    /// Default 60 s; ALB range 1–4000 s (shorter accepted with a warning).
    pub idle_timeout: Option<Spanned<DurationValue>>,
    /// `append` (default) | `preserve` | `remove`.
    pub xff_header_processing: Option<Spanned<String>>,
    /// Default false.
    pub xff_client_port: Option<bool>,
    /// Default false.
    pub preserve_host_header: Option<bool>,
    /// Default false.
    pub drop_invalid_header_fields: Option<bool>,
    /// `monitor` | `defensive` (default) | `strictest`.
    pub desync_mitigation_mode: Option<Spanned<String>>,
    /// ALB's `routing.http2.enabled`: offer HTTP/2 (ALPN `h2`) on HTTPS listeners. Default true.
    pub http2_enabled: Option<bool>,
    /// Default 3600 s; ALB range 60 s–7 d (shorter accepted with a warning).
    pub client_keep_alive: Option<Spanned<DurationValue>>,
    /// albatross extension, default 10 s.
    pub tls_handshake_timeout: Option<Spanned<DurationValue>>,
    /// albatross extension, default 60 s.
    pub header_read_timeout: Option<Spanned<DurationValue>>,
    /// albatross extension, default 10 s.
    pub connect_timeout: Option<Spanned<DurationValue>>,
    /// albatross extension, default 30 s.
    pub shutdown_timeout: Option<Spanned<DurationValue>>,
    /// albatross extension: client connections open at once, past which new ones are
    /// closed at once. Default: from the descriptor limit.
    pub max_connections: Option<Spanned<i64>>,
    /// albatross extension: the key of stickiness cookies, shared by nodes behind one
    /// DNS name; at least 16 characters. Default: a random key per start.
    pub stickiness_secret: Option<Spanned<String>>,
    /// ALB's `LoadBalancerName`: ARNs and `app/<name>/<id>` derive from it. Default
    /// `albatross`; ≤ 32 alphanumerics and hyphens, no hyphen at either end.
    pub name: Option<Spanned<String>>,
    /// The region in ARNs. Default `us-east-1`.
    pub region: Option<Spanned<String>>,
    /// The account in ARNs, 12 digits. Default `000000000000`.
    pub account_id: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
pub struct AdminConfig {
    /// `ip:port`, default `127.0.0.1:9900`. Not on loopback only with `credentials`.
    pub listen: Option<Spanned<String>>,
    /// When set, API calls need a SigV4 signature for this key, and other admin paths
    /// HTTP Basic auth with it.
    pub credentials: Option<Spanned<CredentialsConfig>>,
}

/// `[admin] credentials`.
#[derive(Debug, Deserialize)]
pub struct CredentialsConfig {
    /// Required.
    pub access_key_id: Spanned<String>,
    /// Required.
    pub secret_access_key: Spanned<String>,
}

/// `[access_log]` and `[connection_log]`.
#[derive(Debug, Deserialize)]
pub struct AccessLogConfig {
    /// Required; relative to the config file's folder.
    pub path: Spanned<String>,
}

/// `[[listener]]`.
#[derive(Debug, Deserialize)]
pub struct ListenerConfig {
    /// Default `0.0.0.0`.
    pub address: Option<Spanned<String>>,
    /// Required, 0–65535 (0 picks a free port).
    pub port: Spanned<i64>,
    /// `HTTP` | `HTTPS`, required.
    pub protocol: Spanned<String>,
    /// HTTPS only; default `ELBSecurityPolicy-TLS13-1-2-2021-06` (ALB console default).
    pub ssl_policy: Option<Spanned<String>>,
    /// HTTPS only, at least one; the first is the default certificate.
    pub certificates: Option<Spanned<Vec<Spanned<CertificateConfig>>>>,
    /// HTTPS only: ALB's mutual TLS. Default off.
    pub mutual_authentication: Option<Spanned<MutualAuthConfig>>,
    /// Required.
    pub default_action: Spanned<ActionConfig>,
    /// `[[listener.rule]]`.
    #[serde(default)]
    pub rule: Vec<Spanned<RuleConfig>>,
}

/// One entry of `certificates`.
#[derive(Debug, Deserialize)]
pub struct CertificateConfig {
    /// PEM certificate chain, relative to the config file's folder.
    pub cert: Spanned<String>,
    /// PEM private key, relative to the config file's folder.
    pub key: Spanned<String>,
}

/// A listener's `mutual_authentication`.
#[derive(Debug, Deserialize)]
pub struct MutualAuthConfig {
    /// `off` | `verify` | `passthrough`, required.
    pub mode: Spanned<String>,
    /// `verify` only (and required there): PEM bundle of trusted CA certificates,
    /// relative to the config file's folder.
    pub trust_store: Option<Spanned<String>>,
    /// `verify` only; default false.
    pub ignore_client_certificate_expiry: Option<Spanned<bool>>,
}

/// `[[listener.rule]]`.
#[derive(Debug, Deserialize)]
pub struct RuleConfig {
    /// Required, 1–50000, unique per listener.
    pub priority: Spanned<i64>,
    /// Required, at least one.
    pub conditions: Spanned<Vec<Spanned<ConditionConfig>>>,
    /// Required.
    pub action: Spanned<ActionConfig>,
}

/// One condition: a table with exactly one of these keys.
#[derive(Debug, Default, Deserialize)]
pub struct ConditionConfig {
    pub host_header: Option<Spanned<Vec<Spanned<String>>>>,
    pub path_pattern: Option<Spanned<Vec<Spanned<String>>>>,
    pub http_header: Option<Spanned<HttpHeaderConditionConfig>>,
    pub http_request_method: Option<Spanned<Vec<Spanned<String>>>>,
    pub query_string: Option<Spanned<Vec<Spanned<QueryStringPairConfig>>>>,
    pub source_ip: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `http_header = { name, values }`.
#[derive(Debug, Deserialize)]
pub struct HttpHeaderConditionConfig {
    pub name: Spanned<String>,
    pub values: Spanned<Vec<Spanned<String>>>,
}

/// One `query_string` entry: `{ key?, value }`.
#[derive(Debug, Deserialize)]
pub struct QueryStringPairConfig {
    pub key: Option<Spanned<String>>,
    pub value: Spanned<String>,
}

/// An action. ALB's three kinds share one table; `validate` checks that only the keys of
/// the chosen `type` are present.
#[derive(Debug, Deserialize)]
pub struct ActionConfig {
    /// `forward` | `redirect` | `fixed_response`, required.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    // forward
    /// One target group (or use `target_groups`).
    pub target_group: Option<Spanned<String>>,
    /// Weighted target groups, 1–5.
    pub target_groups: Option<Spanned<Vec<Spanned<WeightedTargetGroupConfig>>>>,
    /// Target-group stickiness (`AWSALBTG`).
    pub stickiness: Option<Spanned<ForwardStickinessConfig>>,
    // redirect
    /// Default `#{protocol}`.
    pub protocol: Option<Spanned<String>>,
    /// Default `#{host}`.
    pub host: Option<Spanned<String>>,
    /// Default `#{port}`.
    pub port: Option<Spanned<StringOrInt>>,
    /// Default `/#{path}`.
    pub path: Option<Spanned<String>>,
    /// Default `#{query}`.
    pub query: Option<Spanned<String>>,
    // redirect and fixed_response
    /// Redirect: `HTTP_301` | `HTTP_302`; fixed response: a 2XX, 4XX or 5XX code.
    pub status_code: Option<Spanned<StringOrInt>>,
    // fixed_response
    /// One of ALB's content types; default none.
    pub content_type: Option<Spanned<String>>,
    /// At most 1024 characters; default empty.
    pub message_body: Option<Spanned<String>>,
}

/// One entry of `target_groups`.
#[derive(Debug, Deserialize)]
pub struct WeightedTargetGroupConfig {
    pub name: Spanned<String>,
    /// 0–999, default 1.
    pub weight: Option<Spanned<i64>>,
}

/// A forward action's `stickiness = { duration, enabled }`.
#[derive(Debug, Deserialize)]
pub struct ForwardStickinessConfig {
    /// Default true.
    pub enabled: Option<bool>,
    /// Required when enabled; 1 s–7 d.
    pub duration: Option<Spanned<DurationValue>>,
}

/// `[[target_group]]`.
#[derive(Debug, Deserialize)]
pub struct TargetGroupConfig {
    /// Required; ≤32 characters, alphanumerics and hyphens, unique.
    pub name: Spanned<String>,
    /// `HTTP` (default) | `HTTPS`.
    pub protocol: Option<Spanned<String>>,
    /// `round_robin` (default) | `least_outstanding_requests` | `weighted_random`.
    pub algorithm: Option<Spanned<String>>,
    /// Default 300 s, 0–3600 s.
    pub deregistration_delay: Option<Spanned<DurationValue>>,
    /// Default 0 (off), else 30–900 s.
    pub slow_start: Option<Spanned<DurationValue>>,
    /// Default: no stickiness.
    pub stickiness: Option<Spanned<StickinessConfig>>,
    /// `"ip:port"` or `{ dns = "host:port" }`; default none (register at run time).
    #[serde(default)]
    pub targets: Vec<Spanned<TargetConfig>>,
    /// Default: every health-check default.
    pub health_check: Option<Spanned<HealthCheckConfig>>,
}

/// A target group's `stickiness`.
#[derive(Debug, Deserialize)]
pub struct StickinessConfig {
    /// `lb_cookie` (default) | `app_cookie`.
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// Default 1 d, 1 s–7 d.
    pub duration: Option<Spanned<DurationValue>>,
    /// Required for `app_cookie`.
    pub cookie_name: Option<Spanned<String>>,
    /// Default true (the table's presence turns stickiness on).
    pub enabled: Option<bool>,
}

/// One entry of `targets`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    deny_unknown_fields,
    expecting = "a target: \"ip:port\" or { dns = \"host:port\" }"
)]
pub enum TargetConfig {
    Addr(String),
    Dns { dns: String },
}

/// A target group's `health_check`.
#[derive(Debug, Default, Deserialize)]
pub struct HealthCheckConfig {
    /// Default true.
    pub enabled: Option<bool>,
    /// `HTTP` (default) | `HTTPS`.
    pub protocol: Option<Spanned<String>>,
    /// Default `/`.
    pub path: Option<Spanned<String>>,
    /// `traffic-port` (default) or 1–65535.
    pub port: Option<Spanned<StringOrInt>>,
    /// Default 30 s, ALB 5–300 s (shorter accepted with a warning).
    pub interval: Option<Spanned<DurationValue>>,
    /// Default 5 s, ALB 2–120 s (shorter accepted with a warning); less than `interval`.
    pub timeout: Option<Spanned<DurationValue>>,
    /// Default 5, 2–10.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Default 2, 2–10.
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// Default `"200"`; codes 200–499 as `"200"`, `"200,202"`, `"200-299"`.
    pub matcher: Option<Spanned<StringOrInt>>,
}

/// `[[backend]]`.
#[derive(Debug, Deserialize)]
pub struct BackendConfig {
    /// `ip:port`, required.
    pub listen: Spanned<String>,
    /// Default: the listen address.
    pub id: Option<Spanned<String>>,
    /// Default 25 s; 0 disables pings.
    pub ping_interval: Option<Spanned<DurationValue>>,
    /// Default 20 s; 0 disables the timeout.
    pub ping_timeout: Option<Spanned<DurationValue>>,
    /// Redis URL for cross-instance notifications; default none.
    pub redis: Option<Spanned<String>>,
}

/// A duration as written: integer seconds or a string such as `"250ms"`, `"60s"`, `"1h30m"`.
/// It is read leniently and converted by `validate` (with [`super::duration::parse`]), so a bad
/// duration is reported at its place without hiding the other problems of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationValue {
    Seconds(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration: integer seconds or a string such as \"250ms\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A value ALB writes as a string that people often write as a number (ports, status
/// codes, matchers): either is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringOrInt {
    Int(i64),
    Str(String),
}

impl StringOrInt {
    /// The value as text, as ALB would see it.
    pub fn text(&self) -> String {
        match self {
            StringOrInt::Int(i) => i.to_string(),
            StringOrInt::Str(s) => s.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for StringOrInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StringOrInt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringOrInt, E> {
                Ok(StringOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StringOrInt, E> {
                Ok(StringOrInt::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrInt, E> {
                Ok(StringOrInt::Str(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}
