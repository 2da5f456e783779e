//! `[[target_group]]`: name, attributes with ALB's defaults and ranges, stickiness,
//! targets and health check.

use std::net::SocketAddr;

use toml::Spanned;

use super::listener::protocol;
use super::{Cx, DurationRule, TargetGroupIds};
use crate::config::file::{
    HealthCheckConfig, StickinessConfig, StringOrInt, TargetConfig, TargetGroupConfig,
};
use crate::config::model::{
    Algorithm, HealthCheck, HealthCheckPort, Protocol, Stickiness, TargetGroup, TargetGroupId,
    TargetSpec,
};

/// Validate every target group; ids are positions in the list, names map to them.
pub(super) fn target_groups(
    cx: &mut Cx<'_>,
    groups: &[Spanned<TargetGroupConfig>],
) -> (Vec<Option<TargetGroup>>, TargetGroupIds) {
    let mut ids = TargetGroupIds::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let name = &g.get_ref().name;
        let line = cx.line_of(name.span());
        if let Some(first) = ids.get(name.get_ref()) {
            let first_line = lines[first.0];
            cx.error(
                name.span(),
                format!(
                    "target group `{}` is already defined at line {first_line}; names are unique",
                    name.get_ref()
                ),
            );
            out.push(None);
        } else {
            ids.insert(name.get_ref().clone(), TargetGroupId(i));
            out.push(target_group(cx, g.get_ref()));
        }
        lines.push(line);
    }
    (out, ids)
}

fn check_name(cx: &mut Cx<'_>, name: &Spanned<String>) -> bool {
    let n = name.get_ref();
    let problem = if n.is_empty() || n.len() > 32 {
        Some("must be 1 to 32 characters long")
    } else if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Some("may hold only letters, digits and hyphens")
    } else if n.starts_with('-') || n.ends_with('-') {
        Some("cannot begin or end with a hyphen")
    } else {
        None
    };
    if let Some(p) = problem {
        cx.error(name.span(), format!("target group name `{n}` {p}"));
    }
    problem.is_none()
}

fn target_group(cx: &mut Cx<'_>, g: &TargetGroupConfig) -> Option<TargetGroup> {
    let name_ok = check_name(cx, &g.name);
    let protocol = match &g.protocol {
        Some(p) => protocol(cx, p, "protocol"),
        None => Some(Protocol::Http),
    };
    let algorithm = cx.one_of(
        g.algorithm.as_ref(),
        "algorithm",
        &[
            ("round_robin", Algorithm::RoundRobin),
            (
                "least_outstanding_requests",
                Algorithm::LeastOutstandingRequests,
            ),
            ("weighted_random", Algorithm::WeightedRandom),
        ],
        Algorithm::RoundRobin,
    );
    let deregistration_delay = cx.duration(
        g.deregistration_delay.as_ref(),
        &DurationRule::new("deregistration_delay", 300)
            .zero_ok()
            .range(0, 3600),
    );
    let slow_start = cx.duration(
        g.slow_start.as_ref(),
        &DurationRule::new("slow_start", 0).zero_ok().range(30, 900),
    );
    let mut ok = name_ok;
    if let (Some(Algorithm::LeastOutstandingRequests), Some(d), Some(s)) =
        (algorithm, slow_start, &g.slow_start)
    {
        if !d.is_zero() {
            cx.error(
                s.span(),
                "slow_start cannot be combined with the least_outstanding_requests algorithm",
            );
            ok = false;
        }
    }
    let stickiness = match &g.stickiness {
        Some(s) => stickiness(cx, s),
        None => Some(None),
    };
    let targets = targets(cx, &g.targets);
    let health_check = match &g.health_check {
        Some(h) => health_check(cx, h.get_ref()),
        None => Some(HealthCheck::default()),
    };
    let tg = TargetGroup {
        name: g.name.get_ref().clone(),
        protocol: protocol?,
        algorithm: algorithm?,
        deregistration_delay: deregistration_delay?,
        slow_start: slow_start?,
        stickiness: stickiness?,
        targets: targets?,
        health_check: health_check?,
    };
    ok.then_some(tg)
}

fn stickiness(cx: &mut Cx<'_>, s: &Spanned<StickinessConfig>) -> Option<Option<Stickiness>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Lb,
        App,
    }
    let cfg = s.get_ref();
    let kind = cx.one_of(
        cfg.kind.as_ref(),
        "type",
        &[("lb_cookie", Kind::Lb), ("app_cookie", Kind::App)],
        Kind::Lb,
    );
    let duration = cx.duration(
        cfg.duration.as_ref(),
        &DurationRule::new("duration", 86_400).range(1, 604_800),
    );
    let cookie_name = match (kind?, &cfg.cookie_name) {
        (Kind::Lb, None) => None,
        (Kind::Lb, Some(c)) => {
            cx.error(
                c.span(),
                "`cookie_name` applies only to app_cookie stickiness",
            );
            return None;
        }
        (Kind::App, None) => {
            cx.error(
                s.span(),
                "app_cookie stickiness needs the application's `cookie_name`",
            );
            return None;
        }
        (Kind::App, Some(c)) => {
            let n = c.get_ref();
            if n.is_empty()
                || !n
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch))
            {
                cx.error(
                    c.span(),
                    format!("`cookie_name` `{n}` is not a valid cookie name"),
                );
                return None;
            }
            if let Some(p) = ["AWSALBAPP", "AWSALBTG", "AWSALB"]
                .iter()
                .find(|p| n.starts_with(*p))
            {
                cx.error(c.span(), format!("`cookie_name` cannot start with `{p}`, which ALB reserves for its own cookies"));
                return None;
            }
            Some(n.clone())
        }
    };
    let duration = duration?;
    if !cfg.enabled.unwrap_or(true) {
        return Some(None);
    }
    Some(Some(match cookie_name {
        None => Stickiness::LbCookie { duration },
        Some(cookie_name) => Stickiness::AppCookie {
            cookie_name,
            duration,
        },
    }))
}

fn targets(cx: &mut Cx<'_>, list: &[Spanned<TargetConfig>]) -> Option<Vec<TargetSpec>> {
    let mut ok = true;
    let mut out: Vec<TargetSpec> = Vec::new();
    for t in list {
        let spec = match t.get_ref() {
            TargetConfig::Addr(a) => match a.parse::<SocketAddr>() {
                Ok(addr) if addr.port() != 0 => Some(TargetSpec::Addr(addr)),
                Ok(_) => {
                    cx.error(
                        t.span(),
                        format!("target `{a}` needs a port from 1 to 65535"),
                    );
                    None
                }
                Err(_) => {
                    let hint = if a.parse::<std::net::IpAddr>().is_ok() {
                        "add the port, as in \"10.0.0.1:8080\""
                    } else {
                        "for a host name write { dns = \"host:port\" }"
                    };
                    cx.error(
                        t.span(),
                        format!("target `{a}` is not an ip:port address; {hint}"),
                    );
                    None
                }
            },
            TargetConfig::Dns { dns } => {
                let parsed = dns
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p != 0)?)))
                    .filter(|(h, _)| {
                        !h.is_empty()
                            && h.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    });
                match parsed {
                    Some((host, port)) => Some(TargetSpec::Dns {
                        host: host.to_string(),
                        port,
                    }),
                    None => {
                        cx.error(t.span(), format!("dns target `{dns}` must be \"host:port\" with a port from 1 to 65535"));
                        None
                    }
                }
            }
        };
        match spec {
            Some(s) if out.contains(&s) => {
                cx.error(t.span(), format!("target `{s}` is listed twice"));
                ok = false;
            }
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn health_check(cx: &mut Cx<'_>, h: &HealthCheckConfig) -> Option<HealthCheck> {
    let d = HealthCheck::default();
    let mut ok = true;
    let protocol = match &h.protocol {
        Some(p) => protocol(cx, p, "protocol"),
        None => Some(d.protocol),
    };
    if let Some(p) = &h.path {
        let n = p.get_ref().chars().count();
        if !p.get_ref().starts_with('/') || n > 1024 {
            cx.error(
                p.span(),
                "health check `path` must start with `/` and be at most 1024 characters",
            );
            ok = false;
        }
    }
    let port = match &h.port {
        None => Some(HealthCheckPort::TrafficPort),
        Some(p) => {
            match p.get_ref() {
                StringOrInt::Str(s) if s == "traffic-port" => Some(HealthCheckPort::TrafficPort),
                other => match other.text().parse::<u16>() {
                    Ok(n) if n != 0 => Some(HealthCheckPort::Port(n)),
                    _ => {
                        cx.error(
                        p.span(),
                        format!("health check `port` must be \"traffic-port\" or 1 to 65535 (got `{}`)", other.text()),
                    );
                        None
                    }
                },
            }
        }
    };
    let interval = cx.duration(
        h.interval.as_ref(),
        &DurationRule::new("interval", 30).range(5, 300),
    );
    let timeout = cx.duration(
        h.timeout.as_ref(),
        &DurationRule::new("timeout", 5).range(2, 120),
    );
    if let (Some(i), Some(t)) = (interval, timeout) {
        if t >= i {
            let span = h
                .timeout
                .as_ref()
                .or(h.interval.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0);
            cx.error(
                span,
                format!(
                    "health check `timeout` ({}) must be shorter than `interval` ({})",
                    crate::config::duration::display(t),
                    crate::config::duration::display(i)
                ),
            );
            ok = false;
        }
    }
    let threshold = |cx: &mut Cx<'_>, v: &Option<Spanned<i64>>, key: &str, default: u32| match v {
        Some(v) => cx.int_in(v, key, 2, 10).map(|n| n as u32),
        None => Some(default),
    };
    let healthy = threshold(
        cx,
        &h.healthy_threshold,
        "healthy_threshold",
        d.healthy_threshold,
    );
    let unhealthy = threshold(
        cx,
        &h.unhealthy_threshold,
        "unhealthy_threshold",
        d.unhealthy_threshold,
    );
    let matcher = match &h.matcher {
        None => Some(d.matcher.clone()),
        Some(m) => match matcher(&m.get_ref().text()) {
            Ok(ranges) => Some(ranges),
            Err(e) => {
                cx.error(m.span(), format!("health check `matcher`: {e}"));
                None
            }
        },
    };
    let hc = HealthCheck {
        enabled: h.enabled.unwrap_or(d.enabled),
        protocol: protocol?,
        path: h.path.as_ref().map_or(d.path, |p| p.get_ref().clone()),
        port: port?,
        interval: interval?,
        timeout: timeout?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
        matcher: matcher?,
    };
    ok.then_some(hc)
}

/// ALB's HTTP code matcher: `"200"`, `"200,202"`, `"200-299"` and combinations, codes 200–499.
pub(crate) fn matcher(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        match s.parse::<u16>() {
            Ok(c) if (200..=499).contains(&c) => Ok(c),
            _ => Err(format!("`{s}` is not an HTTP code from 200 to 499")),
        }
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(format!(
                "`{text}` has an empty entry; write codes as \"200\", \"200,202\" or \"200-299\""
            ));
        }
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("range `{}` goes backwards", part.trim()));
                }
                out.push((lo, hi));
            }
            None => {
                let c = code(part)?;
                out.push((c, c));
            }
        }
    }
    Ok(out)
}
