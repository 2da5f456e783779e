//! Load balancer and target group attributes under ALB's keys, and their place in the
//! config file.
//!
//! Every key ALB describes is described, with the running value where albatross has the
//! setting and ALB's default where it does not. A key albatross has no setting for
//! accepts only its default value; anything else is refused with
//! `InvalidConfigurationRequest`, never silently ignored.

use toml::{Table, Value};

use super::xml::seconds;
use crate::admin::query::ApiError;
use crate::config::model::{
    Algorithm, Config, DesyncMitigationMode, Stickiness, TargetGroup, XffMode,
};

/// What the load balancer describes, key by key.
pub fn load_balancer(config: &Config) -> Vec<(&'static str, String)> {
    let lb = &config.load_balancer;
    let b = |v: bool| v.to_string();
    let mut out: Vec<(&'static str, String)> = FIXED_LB
        .iter()
        .map(|(k, v)| (*k, fixed_lb_default(config, k, v)))
        .collect();
    out.extend([
        (
            "idle_timeout.timeout_seconds",
            seconds(lb.idle_timeout).to_string(),
        ),
        (
            "client_keep_alive.seconds",
            seconds(lb.client_keep_alive).to_string(),
        ),
        (
            "routing.http.desync_mitigation_mode",
            match lb.desync_mitigation_mode {
                DesyncMitigationMode::Monitor => "monitor",
                DesyncMitigationMode::Defensive => "defensive",
                DesyncMitigationMode::Strictest => "strictest",
            }
            .to_string(),
        ),
        (
            "routing.http.drop_invalid_header_fields.enabled",
            b(lb.drop_invalid_header_fields),
        ),
        (
            "routing.http.preserve_host_header.enabled",
            b(lb.preserve_host_header),
        ),
        (
            "routing.http.xff_client_port.enabled",
            b(lb.xff_client_port),
        ),
        (
            "routing.http.xff_header_processing.mode",
            match lb.xff_header_processing {
                XffMode::Append => "append",
                XffMode::Preserve => "preserve",
                XffMode::Remove => "remove",
            }
            .to_string(),
        ),
        ("routing.http2.enabled", b(lb.http2_enabled)),
    ]);
    out
}

/// Load balancer keys albatross has no setting for, with ALB's default.
const FIXED_LB: &[(&str, &str)] = &[
    ("deletion_protection.enabled", "false"),
    ("load_balancing.cross_zone.enabled", "true"),
    ("access_logs.s3.enabled", "false"),
    ("access_logs.s3.bucket", ""),
    ("access_logs.s3.prefix", ""),
    ("connection_logs.s3.enabled", "false"),
    ("connection_logs.s3.bucket", ""),
    ("connection_logs.s3.prefix", ""),
    ("health_check_logs.s3.enabled", "false"),
    ("health_check_logs.s3.bucket", ""),
    ("health_check_logs.s3.prefix", ""),
    ("ipv6.deny_all_igw_traffic", ""),
    ("zonal_shift.config.enabled", "false"),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
    ),
    ("waf.fail_open.enabled", "false"),
];

/// `ipv6.deny_all_igw_traffic` defaults to false for an internet-facing load balancer
/// and true for an internal one.
fn fixed_lb_default(config: &Config, key: &str, value: &str) -> String {
    if key == "ipv6.deny_all_igw_traffic" {
        let internal = config.listeners.iter().all(|l| l.address.is_loopback());
        return internal.to_string();
    }
    value.to_string()
}

/// Apply ModifyLoadBalancerAttributes to the `[load_balancer]` table.
pub fn edit_load_balancer(
    config: &Config,
    table: &mut Table,
    attributes: &[(String, String)],
) -> Result<(), ApiError> {
    for (key, value) in attributes {
        let (file_key, v) = match key.as_str() {
            "idle_timeout.timeout_seconds" => ("idle_timeout", int(key, value, 1, 4000)?),
            "client_keep_alive.seconds" => ("client_keep_alive", int(key, value, 60, 604_800)?),
            "routing.http.desync_mitigation_mode" => (
                "desync_mitigation_mode",
                one_of(key, value, &["monitor", "defensive", "strictest"])?,
            ),
            "routing.http.drop_invalid_header_fields.enabled" => {
                ("drop_invalid_header_fields", boolean(key, value)?)
            }
            "routing.http.preserve_host_header.enabled" => {
                ("preserve_host_header", boolean(key, value)?)
            }
            "routing.http.xff_client_port.enabled" => ("xff_client_port", boolean(key, value)?),
            "routing.http.xff_header_processing.mode" => (
                "xff_header_processing",
                one_of(key, value, &["append", "preserve", "remove"])?,
            ),
            "routing.http2.enabled" => ("http2_enabled", boolean(key, value)?),
            _ => {
                let Some((_, default)) = FIXED_LB.iter().find(|(k, _)| *k == key) else {
                    return Err(unknown_key(key));
                };
                let default = fixed_lb_default(config, key, default);
                if *value != default {
                    return Err(unsupported(key, value, &default));
                }
                continue;
            }
        };
        table.insert(file_key.to_string(), v);
    }
    Ok(())
}

/// What a target group describes, key by key.
pub fn target_group(g: &TargetGroup) -> Vec<(&'static str, String)> {
    const DAY: &str = "86400";
    let (enabled, kind, lb_duration, app_name, app_duration) = match &g.stickiness {
        None => (
            false,
            "lb_cookie",
            DAY.to_string(),
            String::new(),
            DAY.to_string(),
        ),
        Some(Stickiness::LbCookie { duration }) => (
            true,
            "lb_cookie",
            seconds(*duration).to_string(),
            String::new(),
            DAY.to_string(),
        ),
        Some(Stickiness::AppCookie {
            cookie_name,
            duration,
        }) => (
            true,
            "app_cookie",
            DAY.to_string(),
            cookie_name.clone(),
            seconds(*duration).to_string(),
        ),
    };
    let mut out = vec![
        ("stickiness.enabled", enabled.to_string()),
        (
            "deregistration_delay.timeout_seconds",
            seconds(g.deregistration_delay).to_string(),
        ),
        ("stickiness.type", kind.to_string()),
        ("stickiness.lb_cookie.duration_seconds", lb_duration),
        ("stickiness.app_cookie.cookie_name", app_name),
        ("stickiness.app_cookie.duration_seconds", app_duration),
        (
            "slow_start.duration_seconds",
            seconds(g.slow_start).to_string(),
        ),
        (
            "load_balancing.algorithm.type",
            algorithm_name(g.algorithm).to_string(),
        ),
    ];
    out.extend(FIXED_TG.iter().map(|(k, v)| (*k, v.to_string())));
    out
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round_robin",
        Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
        Algorithm::WeightedRandom => "weighted_random",
    }
}

/// Target group keys albatross has no setting for, with ALB's default.
const FIXED_TG: &[(&str, &str)] = &[
    ("load_balancing.algorithm.anomaly_mitigation", "off"),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
    ),
];

/// Apply ModifyTargetGroupAttributes to the group's `[[target_group]]` table; `g` is
/// the group as it runs.
pub fn edit_target_group(
    g: &TargetGroup,
    table: &mut Table,
    attributes: &[(String, String)],
) -> Result<(), ApiError> {
    // Stickiness is one table in the file and five keys here: start from what runs.
    let (mut enabled, mut kind, mut lb_duration, mut app_name, mut app_duration) =
        match &g.stickiness {
            None => (false, "lb_cookie", 86_400, None, 86_400),
            Some(Stickiness::LbCookie { duration }) => {
                (true, "lb_cookie", seconds(*duration) as i64, None, 86_400)
            }
            Some(Stickiness::AppCookie {
                cookie_name,
                duration,
            }) => (
                true,
                "app_cookie",
                86_400,
                Some(cookie_name.clone()),
                seconds(*duration) as i64,
            ),
        };
    let mut stickiness_touched = false;
    for (key, value) in attributes {
        match key.as_str() {
            "deregistration_delay.timeout_seconds" => {
                table.insert("deregistration_delay".into(), int(key, value, 0, 3600)?);
            }
            "slow_start.duration_seconds" => {
                let v = int(key, value, 0, 900)?;
                if matches!(v, Value::Integer(n) if n != 0 && n < 30) {
                    return Err(ApiError::validation(format!(
                        "The value of '{key}' must be 0 (off) or between 30 and 900 seconds; \
                         got '{value}'."
                    )));
                }
                table.insert("slow_start".into(), v);
            }
            "load_balancing.algorithm.type" => {
                table.insert(
                    "algorithm".into(),
                    one_of(
                        key,
                        value,
                        &[
                            "round_robin",
                            "least_outstanding_requests",
                            "weighted_random",
                        ],
                    )?,
                );
            }
            "stickiness.enabled" => {
                enabled = matches!(boolean(key, value)?, Value::Boolean(true));
                stickiness_touched = true;
            }
            "stickiness.type" => {
                kind = match value.as_str() {
                    "lb_cookie" => "lb_cookie",
                    "app_cookie" => "app_cookie",
                    _ => {
                        return Err(ApiError::validation(format!(
                            "The value of 'stickiness.type' must be 'lb_cookie' or 'app_cookie' \
                             for an Application Load Balancer's target group; got '{value}'."
                        )))
                    }
                };
                stickiness_touched = true;
            }
            "stickiness.lb_cookie.duration_seconds" => {
                lb_duration = integer(key, value, 1, 604_800)?;
                stickiness_touched = true;
            }
            "stickiness.app_cookie.duration_seconds" => {
                app_duration = integer(key, value, 1, 604_800)?;
                stickiness_touched = true;
            }
            "stickiness.app_cookie.cookie_name" => {
                app_name = (!value.is_empty()).then(|| value.clone());
                stickiness_touched = true;
            }
            _ => {
                let Some((_, default)) = FIXED_TG.iter().find(|(k, _)| *k == key) else {
                    return Err(unknown_key(key));
                };
                let accepted = *value == *default
                    || (key == "load_balancing.cross_zone.enabled" && value == "true");
                if !accepted {
                    return Err(unsupported(key, value, default));
                }
            }
        }
    }
    if stickiness_touched {
        if !enabled {
            table.remove("stickiness");
        } else {
            let mut s = Table::new();
            s.insert("type".into(), Value::String(kind.into()));
            if kind == "app_cookie" {
                let Some(name) = app_name else {
                    return Err(ApiError::sender(
                        "InvalidConfigurationRequest",
                        "Application cookie stickiness needs 'stickiness.app_cookie.cookie_name'.",
                    ));
                };
                s.insert("cookie_name".into(), Value::String(name));
                s.insert("duration".into(), Value::Integer(app_duration));
            } else {
                s.insert("duration".into(), Value::Integer(lb_duration));
            }
            table.insert("stickiness".into(), Value::Table(s));
        }
    }
    Ok(())
}

fn integer(key: &str, value: &str, lo: i64, hi: i64) -> Result<i64, ApiError> {
    match value.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(ApiError::validation(format!(
            "The value of '{key}' must be an integer between {lo} and {hi}; got '{value}'."
        ))),
    }
}

fn int(key: &str, value: &str, lo: i64, hi: i64) -> Result<Value, ApiError> {
    integer(key, value, lo, hi).map(Value::Integer)
}

fn boolean(key: &str, value: &str) -> Result<Value, ApiError> {
    match value {
        "true" => Ok(Value::Boolean(true)),
        "false" => Ok(Value::Boolean(false)),
        _ => Err(ApiError::validation(format!(
            "The value of '{key}' must be 'true' or 'false'; got '{value}'."
        ))),
    }
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<Value, ApiError> {
    if allowed.contains(&value) {
        Ok(Value::String(value.to_string()))
    } else {
        Err(ApiError::validation(format!(
            "The value of '{key}' must be one of {}; got '{value}'.",
            allowed
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn unknown_key(key: &str) -> ApiError {
    ApiError::validation(format!("Attribute key '{key}' is not recognized."))
}

fn unsupported(key: &str, value: &str, default: &str) -> ApiError {
    ApiError::sender(
        "InvalidConfigurationRequest",
        format!(
            "albatross has no setting behind '{key}'; it accepts only ALB's default \
             '{default}', not '{value}'."
        ),
    )
}
