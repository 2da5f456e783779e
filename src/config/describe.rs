//! The effective model as text, for `albatross check`: every setting with its value,
//! defaults filled in, rules in evaluation order.

use std::fmt::Write;
use std::time::Duration;

use super::duration::display as dur;
use super::model::{
    Action, Algorithm, Condition, Config, DesyncMitigationMode, HealthCheckPort, Stickiness,
    XffMode,
};

/// A human-readable description of the effective model.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_config(&mut out, config);
    out
}

fn write_config(out: &mut String, c: &Config) -> std::fmt::Result {
    let lb = &c.load_balancer;
    writeln!(out, "load_balancer")?;
    let xff = match lb.xff_header_processing {
        XffMode::Append => "append",
        XffMode::Preserve => "preserve",
        XffMode::Remove => "remove",
    };
    let desync = match lb.desync_mitigation_mode {
        DesyncMitigationMode::Monitor => "monitor",
        DesyncMitigationMode::Defensive => "defensive",
        DesyncMitigationMode::Strictest => "strictest",
    };
    for (k, v) in [
        ("name", lb.name.clone()),
        ("region", lb.region.clone()),
        ("account_id", lb.account_id.clone()),
        ("idle_timeout", dur(lb.idle_timeout)),
        ("xff_header_processing", xff.to_string()),
        ("xff_client_port", lb.xff_client_port.to_string()),
        ("preserve_host_header", lb.preserve_host_header.to_string()),
        (
            "drop_invalid_header_fields",
            lb.drop_invalid_header_fields.to_string(),
        ),
        ("desync_mitigation_mode", desync.to_string()),
        ("http2_enabled", lb.http2_enabled.to_string()),
        ("client_keep_alive", dur(lb.client_keep_alive)),
        ("tls_handshake_timeout", dur(lb.tls_handshake_timeout)),
        ("header_read_timeout", dur(lb.header_read_timeout)),
        ("connect_timeout", dur(lb.connect_timeout)),
        ("shutdown_timeout", dur(lb.shutdown_timeout)),
        (
            "max_connections",
            lb.max_connections.map_or_else(
                || "(half the descriptor limit, less 128)".to_string(),
                |n| n.to_string(),
            ),
        ),
        (
            "stickiness_secret",
            if lb.stickiness_secret.is_some() {
                "(set)".to_string()
            } else {
                "(random per start)".to_string()
            },
        ),
    ] {
        writeln!(out, "  {k:<28}{v}")?;
    }
    match &c.admin {
        Some(a) => match &a.credentials {
            Some(c) => writeln!(
                out,
                "admin listen {} (SigV4 / Basic auth for key {})",
                a.listen, c.access_key_id
            )?,
            None => writeln!(out, "admin listen {} (no credentials)", a.listen)?,
        },
        None => writeln!(out, "admin: none")?,
    }
    match &c.access_log {
        Some(a) => writeln!(out, "access_log {}", a.path.display())?,
        None => writeln!(out, "access_log: none")?,
    }
    match &c.connection_log {
        Some(a) => writeln!(out, "connection_log {}", a.path.display())?,
        None => writeln!(out, "connection_log: none")?,
    }

    for l in &c.listeners {
        writeln!(out)?;
        writeln!(
            out,
            "listener {}:{} {}",
            fmt_ip(l.address),
            l.port,
            l.protocol
        )?;
        if let Some(tls) = &l.tls {
            writeln!(out, "  ssl_policy {}", tls.ssl_policy)?;
            for (i, cert) in tls.certificates.iter().enumerate() {
                let default = if i == 0 { " (default)" } else { "" };
                writeln!(
                    out,
                    "  certificate {} key {}{default}",
                    cert.cert.display(),
                    cert.key.display()
                )?;
            }
        }
        for r in &l.rules {
            let conds: Vec<String> = r.conditions.iter().map(condition).collect();
            writeln!(out, "  rule {:<6} if {}", r.priority, conds.join(" and "))?;
            writeln!(out, "              then {}", action(c, &r.action))?;
        }
        writeln!(out, "  default     then {}", action(c, &l.default_action))?;
    }

    for tg in &c.target_groups {
        writeln!(out)?;
        writeln!(out, "target_group {}", tg.name)?;
        let algorithm = match tg.algorithm {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
            Algorithm::WeightedRandom => "weighted_random",
        };
        let stickiness = match &tg.stickiness {
            None => "off".to_string(),
            Some(Stickiness::LbCookie { duration }) => format!("lb_cookie for {}", dur(*duration)),
            Some(Stickiness::AppCookie {
                cookie_name,
                duration,
            }) => format!("app_cookie `{cookie_name}` for {}", dur(*duration)),
        };
        let slow_start = if tg.slow_start.is_zero() {
            "off".to_string()
        } else {
            dur(tg.slow_start)
        };
        let targets = if tg.targets.is_empty() {
            "none (register at run time)".to_string()
        } else {
            tg.targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let h = &tg.health_check;
        let port = match h.port {
            HealthCheckPort::TrafficPort => "traffic-port".to_string(),
            HealthCheckPort::Port(p) => p.to_string(),
        };
        let matcher: Vec<String> = h
            .matcher
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        for (k, v) in [
            ("protocol", tg.protocol.to_string()),
            ("algorithm", algorithm.to_string()),
            ("deregistration_delay", dur(tg.deregistration_delay)),
            ("slow_start", slow_start),
            ("stickiness", stickiness),
            ("targets", targets),
            ("health_check.enabled", h.enabled.to_string()),
            ("health_check.protocol", h.protocol.to_string()),
            ("health_check.path", h.path.clone()),
            ("health_check.port", port),
            ("health_check.interval", dur(h.interval)),
            ("health_check.timeout", dur(h.timeout)),
            (
                "health_check.healthy_threshold",
                h.healthy_threshold.to_string(),
            ),
            (
                "health_check.unhealthy_threshold",
                h.unhealthy_threshold.to_string(),
            ),
            ("health_check.matcher", matcher.join(",")),
        ] {
            writeln!(out, "  {k:<34}{v}")?;
        }
    }

    if !c.backends.is_empty() {
        writeln!(out)?;
    }
    for b in &c.backends {
        let ping = |d: Option<Duration>| d.map_or("off".to_string(), dur);
        writeln!(
            out,
            "backend {} listen {} ping_interval {} ping_timeout {} redis {}",
            b.id,
            b.listen,
            ping(b.ping_interval),
            ping(b.ping_timeout),
            b.redis.as_deref().map_or("none".into(), redacted)
        )?;
    }
    Ok(())
}

fn fmt_ip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

fn list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn condition(c: &Condition) -> String {
    match c {
        Condition::HostHeader(v) => format!("host_header {}", list(v)),
        Condition::PathPattern(v) => format!("path_pattern {}", list(v)),
        Condition::HttpHeader { name, values } => format!("http_header {name}: {}", list(values)),
        Condition::HttpRequestMethod(v) => format!("http_request_method {}", list(v)),
        Condition::QueryString(pairs) => {
            let p: Vec<String> = pairs
                .iter()
                .map(|(k, v)| match k {
                    Some(k) => format!("\"{k}={v}\""),
                    None => format!("\"*={v}\""),
                })
                .collect();
            format!("query_string {}", p.join(" or "))
        }
        Condition::SourceIp(nets) => {
            let n: Vec<String> = nets.iter().map(ToString::to_string).collect();
            format!("source_ip {}", n.join(" or "))
        }
    }
}

/// A forward action's groups: the name alone, or each with its weight when there are
/// several (`blue (weight 80), green (weight 20)`).
pub fn forward_groups(c: &Config, f: &crate::config::model::Forward) -> String {
    let groups: Vec<String> = f
        .target_groups
        .iter()
        .map(|w| {
            let name = &c.target_group(w.id).name;
            if f.target_groups.len() == 1 {
                name.clone()
            } else {
                format!("{name} (weight {})", w.weight)
            }
        })
        .collect();
    groups.join(", ")
}

fn action(c: &Config, a: &Action) -> String {
    match a {
        Action::Forward(f) => {
            let sticky = f
                .stickiness
                .map(|d| format!(", target group stickiness {}", dur(d)))
                .unwrap_or_default();
            format!("forward to {}{sticky}", forward_groups(c, f))
        }
        Action::Redirect(r) => {
            let query = if r.query.is_empty() {
                String::new()
            } else {
                format!("?{}", r.query)
            };
            format!(
                "redirect HTTP_{} to {}://{}:{}{}{query}",
                r.status_code, r.protocol, r.host, r.port, r.path
            )
        }
        Action::FixedResponse(f) => {
            let ct = f.content_type.as_deref().unwrap_or("no content type");
            format!(
                "fixed_response {} ({ct}, {} characters)",
                f.status_code,
                f.message_body.chars().count()
            )
        }
    }
}

/// A URL with the password of its user info (`redis://user:secret@host`) replaced by `***`.
fn redacted(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}").into()
        }
        _ => url.into(),
    }
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn a_urls_password_is_not_printed() {
        assert_eq!(
            super::redacted("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            super::redacted("redis://app:hunter2@h"),
            "redis://app:***@h"
        );
        assert_eq!(
            super::redacted("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
