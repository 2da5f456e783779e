//! The live dashboard on the admin listener: what a person watches while provoking an
//! idle timeout or a failover.
//!
//! | path | what |
//! | --- | --- |
//! | `GET /` | one HTML page ([`PAGE`], inline CSS and JS, no external asset) |
//! | `GET /dashboard.json` | the running state the page polls about once a second |
//!
//! The JSON is a snapshot of the control plane's model and the runtime: listeners with
//! their rules in evaluation order, target groups with each target's health as
//! DescribeTargetHealth words it and its counters, the open tunnels, the last closed
//! tunnels (newest first) and how many tunnels ended by cause. It is built from what the
//! runtime already keeps; reading it moves nothing.
//!
//! The page inserts every string as text (never as markup) and is served with a Content
//! Security Policy that allows only its own inline script and style (by hash) and
//! `fetch` to the admin listener itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::Answer;
use crate::config::duration::display as dur;
use crate::config::model::{Action, Condition, Config, HealthCheckPort, Listener};
use crate::control::Control;
use crate::listener::BoundListener;
use crate::proxy::Model;
use crate::tunnel::Tunnels;

/// The dashboard page, embedded in the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the dashboard page.
pub fn page() -> Answer {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_SECURITY_POLICY, content_security_policy())
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
        .unwrap_or_default()
}

/// `GET /dashboard.json`: a snapshot of the running state (see the module docs).
pub fn json(control: &Control) -> Answer {
    let snapshot = snapshot(
        &control.model(),
        &control.listeners(),
        &control.runtime().tunnels,
        SystemTime::now(),
    );
    // Serialising a `Value` cannot fail; should it, the page shows the 500 it gets.
    match serde_json::to_vec(&snapshot) {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(e) => super::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("The dashboard's data could not be written as JSON: {e}.\n"),
        ),
    }
}

/// The state the page shows: `model`'s config and groups, the listeners as `bound` (in
/// config order), the open and recently closed `tunnels`, ages counted to `now`.
pub fn snapshot(
    model: &Model,
    bound: &[BoundListener],
    tunnels: &Tunnels,
    now: SystemTime,
) -> Value {
    let config = &model.config;
    let open = tunnels.infos();

    // Open tunnels per (target address, group name), for the targets' rows.
    let mut per_target: HashMap<(SocketAddr, &str), usize> = HashMap::new();
    for t in &open {
        *per_target
            .entry((t.target_addr(), &**t.target_group()))
            .or_default() += 1;
    }

    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| listener(config, l, bound.get(i)))
        .collect();

    let target_groups: Vec<Value> = model
        .groups
        .groups
        .iter()
        .map(|group| {
            let settings = group.settings_full();
            let counters: HashMap<SocketAddr, (u64, usize)> = group
                .targets()
                .iter()
                .map(|t| (t.addr, (t.requests(), t.outstanding())))
                .collect();
            let targets: Vec<Value> = group
                .describe()
                .into_iter()
                .map(|d| {
                    let addr = SocketAddr::new(d.target, d.port);
                    let (requests, outstanding) = counters.get(&addr).copied().unwrap_or_default();
                    json!({
                        "target": d.target.to_string(),
                        "port": d.port,
                        "address": addr.to_string(),
                        "health_check_port": d.health_check_port,
                        "state": d.state.as_str(),
                        "reason": d.reason.map(|r| r.code()),
                        "description": d.description,
                        "requests": requests,
                        "outstanding": outstanding,
                        "tunnels": per_target.get(&(addr, &*group.name)).copied().unwrap_or(0),
                    })
                })
                .collect();
            let h = &settings.health_check;
            let health_check = if h.enabled {
                let port = match h.port {
                    HealthCheckPort::TrafficPort => "traffic port".to_string(),
                    HealthCheckPort::Port(p) => format!("port {p}"),
                };
                format!(
                    "{} {} on the {port} every {}, timeout {}, healthy after {}, unhealthy after {}",
                    h.protocol,
                    h.path,
                    dur(h.interval),
                    dur(h.timeout),
                    h.healthy_threshold,
                    h.unhealthy_threshold
                )
            } else {
                "off".to_string()
            };
            json!({
                "name": &*group.name,
                "protocol": settings.protocol.to_string(),
                "in_use": group.in_use(),
                "health_check": health_check,
                "deregistration_delay": dur(settings.deregistration_delay),
                "targets": targets,
            })
        })
        .collect();

    let open_tunnels: Vec<Value> = open
        .iter()
        .map(|t| {
            json!({
                "id": t.id.0,
                "listener_port": t.listener_port,
                "client": t.client.to_string(),
                "target": t.target_addr().to_string(),
                "target_group": &**t.target_group(),
                "opened_at_ms": millis_since_epoch(t.opened_at()),
                "age_ms": millis(now.duration_since(t.opened_at()).unwrap_or_default()),
                "bytes_from_client": t.bytes_from_client,
                "bytes_to_client": t.bytes_to_client,
                "idle_for_ms": millis(t.idle_for),
            })
        })
        .collect();

    let closed_tunnels: Vec<Value> = tunnels
        .recent()
        .iter()
        .map(|r| {
            json!({
                "id": r.id.0,
                "listener_port": r.listener_port,
                "client": r.client.to_string(),
                "target": r.target.to_string(),
                "target_group": &*r.target_group,
                "opened_at_ms": millis_since_epoch(r.opened_at),
                "closed_at_ms": millis_since_epoch(r.closed_at),
                "duration_ms": millis(r.closed_at.duration_since(r.opened_at).unwrap_or_default()),
                "bytes_from_client": r.bytes_from_client,
                "bytes_to_client": r.bytes_to_client,
                "cause": r.cause.as_str(),
                "path": r.path.as_str(),
            })
        })
        .collect();

    let ended: Vec<Value> = tunnels
        .ended()
        .iter()
        .map(|(cause, count)| json!({ "cause": cause.as_str(), "count": count }))
        .collect();

    json!({
        "now_ms": millis_since_epoch(now),
        "load_balancer": {
            "name": &config.load_balancer.name,
            "idle_timeout": dur(config.load_balancer.idle_timeout),
            "idle_timeout_ms": millis(config.load_balancer.idle_timeout),
        },
        "listeners": listeners,
        "target_groups": target_groups,
        "open_tunnels": open_tunnels,
        "closed_tunnels": closed_tunnels,
        "ended": ended,
    })
}

/// One listener: where it is bound (when it is), its rules in evaluation order and its
/// default action.
fn listener(config: &Config, l: &Listener, bound: Option<&BoundListener>) -> Value {
    // A reload may have moved the listener list between reading the model and the
    // bound addresses; a listener that does not match its bound entry shows the
    // configured address.
    let bound = bound.filter(|b| b.protocol == l.protocol && b.configured_port == l.port);
    let address = match bound {
        Some(b) => b.local_addr,
        None => SocketAddr::new(l.address, l.port),
    };
    let rules: Vec<Value> = l
        .rules
        .iter()
        .map(|r| {
            json!({
                "priority": r.priority,
                "conditions": r.conditions.iter().map(condition).collect::<Vec<_>>(),
                "action": action(config, &r.action),
            })
        })
        .collect();
    json!({
        "protocol": l.protocol.to_string(),
        "address": address.to_string(),
        "port": address.port(),
        "configured_port": l.port,
        "rules": rules,
        "default_action": action(config, &l.default_action),
    })
}

/// A rule condition in short text, e.g. `path is /api/* or /v2/*`.
fn condition(c: &Condition) -> String {
    let or = |values: &[String]| values.join(" or ");
    match c {
        Condition::HostHeader(v) => format!("host is {}", or(v)),
        Condition::PathPattern(v) => format!("path is {}", or(v)),
        Condition::HttpHeader { name, values } => format!("header {name} is {}", or(values)),
        Condition::HttpRequestMethod(v) => format!("method is {}", or(v)),
        Condition::QueryString(pairs) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={v}", k.as_deref().unwrap_or("*")))
                .collect();
            format!("query has {}", or(&pairs))
        }
        Condition::SourceIp(nets) => {
            let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
            format!("source IP in {}", or(&nets))
        }
    }
}

/// An action: its kind (ALB's name), a short text, and for a forward its groups with
/// their weights.
fn action(config: &Config, a: &Action) -> Value {
    match a {
        Action::Forward(f) => {
            let groups: Vec<Value> = f
                .target_groups
                .iter()
                .map(|w| json!({ "name": config.target_group(w.id).name, "weight": w.weight }))
                .collect();
            let sticky = f
                .stickiness
                .map(|d| format!(", sticky for {}", dur(d)))
                .unwrap_or_default();
            json!({
                "type": a.kind(),
                "text": format!(
                    "forward to {}{sticky}",
                    crate::config::forward_groups(config, f)
                ),
                "target_groups": groups,
            })
        }
        Action::Redirect(r) => {
            let query = if r.query.is_empty() {
                String::new()
            } else {
                format!("?{}", r.query)
            };
            json!({
                "type": a.kind(),
                "text": format!(
                    "redirect {} to {}://{}:{}{}{query}",
                    r.status_code, r.protocol, r.host, r.port, r.path
                ),
            })
        }
        Action::FixedResponse(f) => {
            let content_type = f
                .content_type
                .as_deref()
                .map(|t| format!(", {t}"))
                .unwrap_or_default();
            json!({
                "type": a.kind(),
                "text": format!(
                    "fixed response {}{content_type}, {} characters",
                    f.status_code,
                    f.message_body.chars().count()
                ),
            })
        }
    }
}

/// The page's Content Security Policy: its own inline script and style by hash, `fetch`
/// to the admin listener, nothing else.
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(PAGE, "script"),
            inline_hash(PAGE, "style"),
        )
    })
}

/// The CSP source of the first inline `<tag>` element of `page`: `'sha256-…'` of its
/// text, or `'none'` when there is no such element.
fn inline_hash(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let Some(start) = page.find(&open).map(|i| i + open.len()) else {
        return "'none'".to_string();
    };
    let Some(len) = page[start..].find(&close) else {
        return "'none'".to_string();
    };
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &page.as_bytes()[start..start + len],
    );
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    millis(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{FixedResponse, Forward, TargetGroupId, WeightedTargetGroup};

    #[test]
    fn the_page_has_one_inline_script_and_style_and_no_external_asset() {
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "{tag}");
            assert!(inline_hash(PAGE, tag).starts_with("'sha256-"), "{tag}");
        }
        for external in ["src=", "href=\"http", "@import", "innerHTML"] {
            assert!(!PAGE.contains(external), "{external}");
        }
        let csp = content_security_policy();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn inline_hashes_are_of_the_element_text() {
        // echo -n 'a' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            inline_hash("<p><script>a</script>", "script"),
            "'sha256-ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs='"
        );
        assert_eq!(inline_hash("<p>no script", "script"), "'none'");
        assert_eq!(inline_hash("<script>unclosed", "script"), "'none'");
    }

    #[test]
    fn conditions_read_as_short_text() {
        assert_eq!(
            condition(&Condition::PathPattern(vec!["/a/*".into(), "/b".into()])),
            "path is /a/* or /b"
        );
        assert_eq!(
            condition(&Condition::HttpHeader {
                name: "X-Env".into(),
                values: vec!["dev*".into()]
            }),
            "header X-Env is dev*"
        );
        assert_eq!(
            condition(&Condition::QueryString(vec![
                (Some("v".into()), "2".into()),
                (None, "x".into())
            ])),
            "query has v=2 or *=x"
        );
        assert_eq!(
            condition(&Condition::SourceIp(vec!["10.0.0.0/8".parse().unwrap()])),
            "source IP in 10.0.0.0/8"
        );
    }

    #[test]
    fn actions_name_their_groups_and_weights() {
        let text = r#"
[[listener]]
port = 0
protocol = "HTTP"
default_action = { type = "forward", target_groups = [ { name = "blue", weight = 80 }, { name = "green", weight = 20 } ] }

[[target_group]]
name = "blue"

[[target_group]]
name = "green"
"#;
        let origin = crate::config::Origin {
            name: "test.toml".to_string(),
            base_dir: std::env::temp_dir(),
        };
        let config = crate::config::from_str(text, &origin).expect("a valid config");
        let forward = action(&config, &config.listeners[0].default_action);
        assert_eq!(forward["type"], "forward");
        assert_eq!(
            forward["text"],
            "forward to blue (weight 80), green (weight 20)"
        );
        assert_eq!(forward["target_groups"][1]["name"], "green");
        assert_eq!(forward["target_groups"][1]["weight"], 20);

        let one = Action::Forward(Forward {
            target_groups: vec![WeightedTargetGroup {
                id: TargetGroupId(0),
                weight: 1,
            }],
            stickiness: Some(Duration::from_secs(60)),
        });
        assert_eq!(
            action(&config, &one)["text"],
            "forward to blue, sticky for 1m"
        );
        let fixed = Action::FixedResponse(FixedResponse {
            status_code: 503,
            content_type: Some("text/plain".into()),
            message_body: "down".into(),
        });
        assert_eq!(
            action(&config, &fixed),
            json!({ "type": "fixed-response", "text": "fixed response 503, text/plain, 4 characters" })
        );
    }
}
