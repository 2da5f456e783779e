//! One test (at least) per validation rule. Errors are compared as `LINE:COL: message`.

use std::path::PathBuf;
use std::time::Duration;

use super::validate;
use crate::config::model::*;
use crate::config::{Config, Origin};

fn origin() -> Origin {
    Origin {
        name: "t.toml".to_string(),
        base_dir: PathBuf::from("/nonexistent-albatross-base"),
    }
}

/// A listener on port 80 forwarding to target group `app`, then `extra`.
fn with(extra: &str) -> String {
    format!(
        "[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = {{ type = \"forward\", target_group = \"app\" }}\n\n[[target_group]]\nname = \"app\"\n\n{extra}"
    )
}

/// A listener with one rule made of `conditions` and `action` (the rule starts on line 6).
fn rule(conditions: &str, action: &str) -> String {
    format!(
        "[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = {{ type = \"forward\", target_group = \"app\" }}\n[[listener.rule]]\npriority = 1\nconditions = {conditions}\naction = {action}\n\n[[target_group]]\nname = \"app\"\n"
    )
}

fn ok(text: &str) -> Config {
    match validate(text, &origin()).result {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- text:\n{text}"),
    }
}

/// Errors as `LINE:COL: message` (or just the message when unlocated).
fn errors(text: &str) -> Vec<String> {
    match validate(text, &origin()).result {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => {
            e.0.iter()
                .map(|e| match (e.line, e.column) {
                    (Some(l), Some(c)) => format!("{l}:{c}: {}", e.message),
                    _ => e.message.clone(),
                })
                .collect()
        }
    }
}

fn warnings(text: &str) -> Vec<String> {
    validate(text, &origin())
        .warnings
        .iter()
        .map(|e| format!("{}:{}: {}", e.line.unwrap(), e.column.unwrap(), e.message))
        .collect()
}

fn has(errs: &[String], expected: &str) {
    assert!(
        errs.iter().any(|e| e == expected),
        "expected `{expected}` among {errs:#?}"
    );
}

fn has_containing(errs: &[String], needle: &str) {
    assert!(
        errs.iter().any(|e| e.contains(needle)),
        "expected an error containing `{needle}` among {errs:#?}"
    );
}

// ---- whole config, defaults -------------------------------------------------------------

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(&with(""));
    let lb = &c.load_balancer;
    assert_eq!(lb.idle_timeout, Duration::from_secs(60));
    assert_eq!(lb.xff_header_processing, XffMode::Append);
    assert_eq!(lb.desync_mitigation_mode, DesyncMitigationMode::Defensive);
    assert_eq!(lb.client_keep_alive, Duration::from_secs(3600));
    assert_eq!(lb.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(lb.header_read_timeout, Duration::from_secs(60));
    assert_eq!(lb.connect_timeout, Duration::from_secs(10));
    assert_eq!(lb.shutdown_timeout, Duration::from_secs(30));
    assert!(c.admin.is_none() && c.access_log.is_none() && c.backends.is_empty());
    let l = &c.listeners[0];
    assert_eq!(l.address.to_string(), "0.0.0.0");
    assert_eq!((l.port, l.protocol), (80, Protocol::Http));
    assert!(l.tls.is_none());
    let tg = &c.target_groups[0];
    assert_eq!(tg.protocol, Protocol::Http);
    assert_eq!(tg.algorithm, Algorithm::RoundRobin);
    assert_eq!(tg.deregistration_delay, Duration::from_secs(300));
    assert_eq!(tg.slow_start, Duration::ZERO);
    assert!(tg.stickiness.is_none() && tg.targets.is_empty());
    assert_eq!(tg.health_check, HealthCheck::default());
    match &l.default_action {
        Action::Forward(f) => {
            assert_eq!(f.target_groups.len(), 1);
            assert_eq!(f.target_groups[0].id, TargetGroupId(0));
            assert!(f.stickiness.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_balancer_keys_are_read() {
    let c = ok(&with("[load_balancer]\nidle_timeout = \"2m\"\nxff_header_processing = \"remove\"\nxff_client_port = true\npreserve_host_header = true\ndrop_invalid_header_fields = true\ndesync_mitigation_mode = \"strictest\"\nclient_keep_alive = \"1h\"\ntls_handshake_timeout = \"3s\"\nheader_read_timeout = 7\nconnect_timeout = \"250ms\"\nshutdown_timeout = \"1m\"\nmax_connections = 5000\n"));
    let lb = &c.load_balancer;
    assert_eq!(lb.max_connections, Some(5000));
    assert_eq!(lb.idle_timeout, Duration::from_secs(120));
    assert_eq!(lb.xff_header_processing, XffMode::Remove);
    assert!(lb.xff_client_port && lb.preserve_host_header && lb.drop_invalid_header_fields);
    assert_eq!(lb.desync_mitigation_mode, DesyncMitigationMode::Strictest);
    assert_eq!(lb.tls_handshake_timeout, Duration::from_secs(3));
    assert_eq!(lb.header_read_timeout, Duration::from_secs(7));
    assert_eq!(lb.connect_timeout, Duration::from_millis(250));
    assert_eq!(lb.shutdown_timeout, Duration::from_secs(60));
}

#[test]
fn max_connections_is_at_least_one() {
    assert_eq!(ok(&with("")).load_balancer.max_connections, None);
    assert_eq!(
        errors(&with("[load_balancer]\nmax_connections = 0\n")),
        vec!["10:19: `max_connections` must be between 1 and 100000000 (got 0)"]
    );
    let errs = errors(&with("[load_balancer]\nmax_connections = \"many\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("10:19: ") && errs[0].contains("expected an integer"),
        "{errs:?}"
    );
}

#[test]
fn no_listener_is_an_error() {
    let errs = errors("[[target_group]]\nname = \"app\"\n");
    assert_eq!(
        errs,
        vec!["no listener is configured; add at least one [[listener]]"]
    );
    assert_eq!(
        errors(""),
        vec!["no listener is configured; add at least one [[listener]]"]
    );
}

#[test]
fn every_error_is_reported() {
    let text = "[load_balancer]\nidle_timeout = 0\nxff_header_processing = \"append!\"\n\n[[listener]]\nport = 70000\nprotocol = \"HTTP\"\ndefault_action = { type = \"forward\", target_group = \"nope\" }\n\n[[target_group]]\nname = \"bad name\"\nfoo = 1\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        vec![
            "2:16: `idle_timeout` must be greater than 0",
            "3:25: `xff_header_processing` must be one of append, preserve, remove (got `append!`)",
            "6:8: `port` must be between 0 and 65535 (got 70000)",
            "8:53: forward to undefined target group `nope`",
            "11:8: target group name `bad name` may hold only letters, digits and hyphens",
            "12:1: unknown key `foo` in `target_group[0]`",
        ]
    );
}

#[test]
fn type_errors_are_located_and_do_not_hide_others() {
    let text = with("[[backend]]\nlisten = 5\n\n[[backend]]\nlisten = \"bad\"\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("10:10: in `backend[0]`: invalid type: integer `5`"),
        "{errs:#?}"
    );
    assert_eq!(
        errs[1],
        "13:10: `listen` must be an address such as \"127.0.0.1:9900\" (got `bad`)"
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let errs = errors("[[listener]]\nport = = 80\n");
    assert!(errs[0].starts_with("2:8: invalid TOML"), "{errs:#?}");
}

// ---- durations and ranges -----------------------------------------------------------------

#[test]
fn bad_durations_are_located() {
    let errs = errors(&with(
        "[load_balancer]\nidle_timeout = \"soon\"\nconnect_timeout = -3\n",
    ));
    assert_eq!(errs.len(), 2);
    assert!(
        errs[0].starts_with("10:16: `idle_timeout`: `soon` is not a duration"),
        "{errs:#?}"
    );
    assert_eq!(
        errs[1],
        "11:19: `connect_timeout`: a duration cannot be negative (got -3)"
    );
}

#[test]
fn idle_timeout_range() {
    has(
        &errors(&with("[load_balancer]\nidle_timeout = 4001\n")),
        "10:16: `idle_timeout` is 1h 6m 41s, above ALB's maximum of 1h 6m 40s",
    );
    let text = with("[load_balancer]\nidle_timeout = \"300ms\"\n");
    assert_eq!(
        ok(&text).load_balancer.idle_timeout,
        Duration::from_millis(300)
    );
    assert_eq!(
        warnings(&text),
        vec!["10:16: `idle_timeout` is 300ms, below ALB's minimum of 1s; accepted"]
    );
}

#[test]
fn client_keep_alive_range() {
    has(
        &errors(&with("[load_balancer]\nclient_keep_alive = \"8d\"\n")),
        "10:21: `client_keep_alive` is 8days, above ALB's maximum of 7days",
    );
    assert_eq!(
        warnings(&with("[load_balancer]\nclient_keep_alive = 30\n")).len(),
        1
    );
}

#[test]
fn sub_minimum_health_check_timings_warn() {
    let text = with("[[target_group]]\nname = \"fast\"\nhealth_check = { interval = \"1s\", timeout = \"200ms\" }\n");
    let c = ok(&text);
    assert_eq!(
        c.target_groups[1].health_check.interval,
        Duration::from_secs(1)
    );
    assert_eq!(
        warnings(&text),
        vec![
            "11:29: `interval` is 1s, below ALB's minimum of 5s; accepted",
            "11:45: `timeout` is 200ms, below ALB's minimum of 2s; accepted",
        ]
    );
}

#[test]
fn health_check_ranges_and_order() {
    let errs = errors(&with("[[target_group]]\nname = \"b\"\nhealth_check = { interval = 301, timeout = 121, healthy_threshold = 1, unhealthy_threshold = 11 }\n"));
    assert_eq!(
        errs,
        vec![
            "11:29: `interval` is 5m 1s, above ALB's maximum of 5m",
            "11:44: `timeout` is 2m 1s, above ALB's maximum of 2m",
            "11:69: `healthy_threshold` must be between 2 and 10 (got 1)",
            "11:94: `unhealthy_threshold` must be between 2 and 10 (got 11)",
        ]
    );
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nhealth_check = { interval = 10, timeout = 10 }\n",
        )),
        "11:43: health check `timeout` (10s) must be shorter than `interval` (10s)",
    );
    // the default timeout (5 s) against a short interval
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nhealth_check = { interval = 5 }\n",
        )),
        "11:29: health check `timeout` (5s) must be shorter than `interval` (5s)",
    );
}

#[test]
fn health_check_fields() {
    let c = ok(&with("[[target_group]]\nname = \"b\"\nhealth_check = { enabled = false, protocol = \"HTTPS\", path = \"/health\", port = 8081, matcher = \"200,202,300-399\" }\n"));
    let h = &c.target_groups[1].health_check;
    assert!(!h.enabled);
    assert_eq!(h.protocol, Protocol::Https);
    assert_eq!(h.path, "/health");
    assert_eq!(h.port, HealthCheckPort::Port(8081));
    assert_eq!(h.matcher, vec![(200, 200), (202, 202), (300, 399)]);
    let c = ok(&with("[[target_group]]\nname = \"b\"\nhealth_check = { port = \"traffic-port\", matcher = 204 }\n"));
    assert_eq!(
        c.target_groups[1].health_check.port,
        HealthCheckPort::TrafficPort
    );
    assert_eq!(c.target_groups[1].health_check.matcher, vec![(204, 204)]);

    let errs = errors(&with("[[target_group]]\nname = \"b\"\nhealth_check = { path = \"health\", port = \"other\", protocol = \"TCP\" }\n"));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    has_containing(&errs, "health check `path` must start with `/`");
    has_containing(
        &errs,
        "health check `port` must be \"traffic-port\" or 1 to 65535 (got `other`)",
    );
    has_containing(&errs, "`protocol` must be one of HTTP, HTTPS (got `TCP`)");
}

#[test]
fn matcher_forms() {
    use super::target_group::matcher;
    assert_eq!(matcher("200"), Ok(vec![(200, 200)]));
    assert_eq!(matcher("200,202"), Ok(vec![(200, 200), (202, 202)]));
    assert_eq!(matcher("200-299"), Ok(vec![(200, 299)]));
    assert_eq!(matcher("200-204, 404"), Ok(vec![(200, 204), (404, 404)]));
    for bad in ["", "199", "500", "200-500", "299-200", "abc", "200,", "2OO"] {
        assert!(matcher(bad).is_err(), "{bad:?}");
    }
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nhealth_check = { matcher = \"200-600\" }\n",
        )),
        "11:28: health check `matcher`: `600` is not an HTTP code from 200 to 499",
    );
}

#[test]
fn deregistration_delay_and_slow_start() {
    let c = ok(&with(
        "[[target_group]]\nname = \"b\"\nderegistration_delay = 0\nslow_start = \"45s\"\n",
    ));
    assert_eq!(c.target_groups[1].deregistration_delay, Duration::ZERO);
    assert_eq!(c.target_groups[1].slow_start, Duration::from_secs(45));
    let errs = errors(&with(
        "[[target_group]]\nname = \"b\"\nderegistration_delay = 3601\nslow_start = 901\n",
    ));
    assert_eq!(
        errs,
        vec![
            "11:24: `deregistration_delay` is 1h 1s, above ALB's maximum of 1h",
            "12:14: `slow_start` is 15m 1s, above ALB's maximum of 15m",
        ]
    );
    assert_eq!(
        warnings(&with("[[target_group]]\nname = \"b\"\nslow_start = 10\n")),
        vec!["11:14: `slow_start` is 10s, below ALB's minimum of 30s; accepted"]
    );
    has(
        &errors(&with("[[target_group]]\nname = \"b\"\nalgorithm = \"least_outstanding_requests\"\nslow_start = 30\n")),
        "12:14: slow_start cannot be combined with the least_outstanding_requests algorithm",
    );
}

// ---- target groups ---------------------------------------------------------------------------

#[test]
fn target_group_names() {
    for (name, why) in [
        ("", "must be 1 to 32 characters long"),
        (
            "abcdefghijabcdefghijabcdefghijabc",
            "must be 1 to 32 characters long",
        ),
        ("a_b", "may hold only letters, digits and hyphens"),
        ("-ab", "cannot begin or end with a hyphen"),
        ("ab-", "cannot begin or end with a hyphen"),
    ] {
        let errs = errors(&with(&format!("[[target_group]]\nname = \"{name}\"\n")));
        has(&errs, &format!("10:8: target group name `{name}` {why}"));
    }
    ok(&with("[[target_group]]\nname = \"Blue-2\"\n"));
}

#[test]
fn duplicate_target_group_name() {
    has(
        &errors(&with("[[target_group]]\nname = \"app\"\n")),
        "10:8: target group `app` is already defined at line 7; names are unique",
    );
}

#[test]
fn targets_are_parsed() {
    let c = ok(&with("[[target_group]]\nname = \"b\"\ntargets = [ \"127.0.0.1:9001\", \"[::1]:9002\", { dns = \"backend.local:9000\" } ]\n"));
    let t = &c.target_groups[1].targets;
    assert_eq!(t[0], TargetSpec::Addr("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(t[1], TargetSpec::Addr("[::1]:9002".parse().unwrap()));
    assert_eq!(
        t[2],
        TargetSpec::Dns {
            host: "backend.local".into(),
            port: 9000
        }
    );

    let errs = errors(&with("[[target_group]]\nname = \"b\"\ntargets = [ \"backend:9000\", \"10.0.0.1\", { dns = \"x\" }, \"127.0.0.1:1\", \"127.0.0.1:1\", { dns = \"a:1\", port = 2 } ]\n"));
    assert_eq!(errs.len(), 1, "a type error stops the table: {errs:#?}");
    let errs = errors(&with("[[target_group]]\nname = \"b\"\ntargets = [ \"backend:9000\", \"10.0.0.1\", { dns = \"x\" }, \"127.0.0.1:1\", \"127.0.0.1:1\" ]\n"));
    assert_eq!(
        errs,
        vec![
            "11:13: target `backend:9000` is not an ip:port address; for a host name write { dns = \"host:port\" }",
            "11:29: target `10.0.0.1` is not an ip:port address; add the port, as in \"10.0.0.1:8080\"",
            "11:41: dns target `x` must be \"host:port\" with a port from 1 to 65535",
            "11:71: target `127.0.0.1:1` is listed twice",
        ]
    );
}

#[test]
fn target_group_stickiness() {
    let c = ok(&with("[[target_group]]\nname = \"b\"\nstickiness = { type = \"lb_cookie\" }\n[[target_group]]\nname = \"c\"\nstickiness = { type = \"app_cookie\", cookie_name = \"SESSION\", duration = \"1h\" }\n[[target_group]]\nname = \"d\"\nstickiness = { enabled = false }\n"));
    assert_eq!(
        c.target_groups[1].stickiness,
        Some(Stickiness::LbCookie {
            duration: Duration::from_secs(86_400)
        })
    );
    assert_eq!(
        c.target_groups[2].stickiness,
        Some(Stickiness::AppCookie {
            cookie_name: "SESSION".into(),
            duration: Duration::from_secs(3600)
        })
    );
    assert_eq!(c.target_groups[3].stickiness, None);

    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nstickiness = { type = \"app_cookie\" }\n",
        )),
        "11:14: app_cookie stickiness needs the application's `cookie_name`",
    );
    for prefix in ["AWSALB", "AWSALBAPP", "AWSALBTG"] {
        has(
            &errors(&with(&format!("[[target_group]]\nname = \"b\"\nstickiness = {{ type = \"app_cookie\", cookie_name = \"{prefix}x\" }}\n"))),
            &format!("11:51: `cookie_name` cannot start with `{prefix}`, which ALB reserves for its own cookies"),
        );
    }
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nstickiness = { cookie_name = \"S\" }\n",
        )),
        "11:30: `cookie_name` applies only to app_cookie stickiness",
    );
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nstickiness = { duration = \"8d\" }\n",
        )),
        "11:27: `duration` is 8days, above ALB's maximum of 7days",
    );
    has(
        &errors(&with(
            "[[target_group]]\nname = \"b\"\nstickiness = { type = \"cookie\" }\n",
        )),
        "11:23: `type` must be one of lb_cookie, app_cookie (got `cookie`)",
    );
}

// ---- listeners -------------------------------------------------------------------------------

#[test]
fn duplicate_listener_ports() {
    let l = |addr: &str, port: u16| {
        format!("[[listener]]\naddress = \"{addr}\"\nport = {port}\nprotocol = \"HTTP\"\ndefault_action = {{ type = \"fixed_response\", status_code = 200 }}\n")
    };
    has(
        &errors(&format!("{}{}", l("127.0.0.1", 80), l("127.0.0.1", 80))),
        "8:8: port 80 on 127.0.0.1 is already used by the listener on 127.0.0.1:80 (line 3)",
    );
    has(
        &errors(&format!("{}{}", l("0.0.0.0", 80), l("127.0.0.1", 80))),
        "8:8: port 80 on 127.0.0.1 is already used by the listener on 0.0.0.0:80 (line 3)",
    );
    ok(&format!("{}{}", l("127.0.0.1", 80), l("127.0.0.2", 80)));
    ok(&format!("{}{}", l("127.0.0.1", 0), l("127.0.0.1", 0)));
    ok(&format!("{}{}", l("0.0.0.0", 80), l("::1", 80)));
    has(
        &errors(&format!(
            "{}[[backend]]\nlisten = \"127.0.0.1:80\"\n",
            l("127.0.0.1", 80)
        )),
        "7:10: port 80 on 127.0.0.1 is already used by the listener on 127.0.0.1:80 (line 3)",
    );
}

#[test]
fn listener_address_and_protocol() {
    let errs = errors("[[listener]]\naddress = \"127.0.0.1:80\"\nport = 80\nprotocol = \"http\"\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n");
    assert_eq!(
        errs,
        vec![
            "2:11: `address` must be an IP address such as \"127.0.0.1\" or \"::\", without a port (got `127.0.0.1:80`)",
            "4:12: `protocol` must be one of HTTP, HTTPS (got `http`)",
        ]
    );
    let c = ok("[[listener]]\naddress = \"::1\"\nport = 0\nprotocol = \"HTTP\"\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n");
    assert_eq!(c.listeners[0].address.to_string(), "::1");
}

#[test]
fn https_needs_certificates_and_http_takes_none() {
    let base = "default_action = { type = \"fixed_response\", status_code = 200 }\n";
    has(
        &errors(&format!(
            "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\n{base}"
        )),
        "3:12: an HTTPS listener needs `certificates = [ { cert = \"…\", key = \"…\" } ]`",
    );
    has(
        &errors(&format!(
            "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\ncertificates = []\n{base}"
        )),
        "4:16: an HTTPS listener needs at least one certificate in `certificates`",
    );
    let errs = errors(&format!("[[listener]]\nport = 80\nprotocol = \"HTTP\"\nssl_policy = \"ELBSecurityPolicy-2016-08\"\ncertificates = [ {{ cert = \"a.pem\", key = \"a.key\" }} ]\n{base}"));
    assert_eq!(
        errs,
        vec![
            "4:14: `ssl_policy` applies only to HTTPS listeners",
            "5:16: an HTTP listener takes no `certificates`; use protocol = \"HTTPS\"",
        ]
    );
}

#[test]
fn missing_certificate_files_are_named_at_their_place() {
    let text = "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\ncertificates = [ { cert = \"certs/a.pem\", key = \"/abs/a-key.pem\" } ]\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "4:27: cannot read certificate file `/nonexistent-albatross-base/certs/a.pem`: "
        ),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("4:48: cannot read key file `/abs/a-key.pem`: "),
        "{errs:#?}"
    );
}

#[test]
fn tls_errors_are_reported_at_the_certificate_entry() {
    // Files that exist but are not PEM: whatever the TLS module says, it is reported at the
    // `{ cert, key }` entry, naming both files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("k.pem"), "not a key").unwrap();
    let text = "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\ncertificates = [ { cert = \"c.pem\", key = \"k.pem\" } ]\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n";
    let origin = Origin {
        name: "t.toml".into(),
        base_dir: dir.path().to_path_buf(),
    };
    let errs = validate(text, &origin).result.unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].line, errs[0].column), (Some(4), Some(18)));
    assert!(
        errs[0].message.starts_with("cannot use certificate `"),
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("c.pem` with key `"), "{errs:#?}");
}

#[test]
fn rules_are_sorted_and_priorities_unique() {
    let action = "{ type = \"fixed_response\", status_code = 200 }";
    let text = format!("[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = {action}\n[[listener.rule]]\npriority = 20\nconditions = [ {{ path_pattern = [\"/b\"] }} ]\naction = {action}\n[[listener.rule]]\npriority = 5\nconditions = [ {{ path_pattern = [\"/a\"] }} ]\naction = {action}\n");
    let c = ok(&text);
    let p: Vec<u32> = c.listeners[0].rules.iter().map(|r| r.priority).collect();
    assert_eq!(p, vec![5, 20]);

    let dup = text.replace("priority = 5", "priority = 20");
    has(&errors(&dup), "10:12: priority 20 is already used by the rule at line 6; priorities are unique per listener");
    has(
        &errors(&text.replace("priority = 5", "priority = 0")),
        "10:12: `priority` must be between 1 and 50000 (got 0)",
    );
    has(
        &errors(&text.replace("priority = 5", "priority = 50001")),
        "10:12: `priority` must be between 1 and 50000 (got 50001)",
    );
}

// ---- conditions ------------------------------------------------------------------------------

const FIXED: &str = "{ type = \"fixed_response\", status_code = 200 }";

#[test]
fn every_condition_kind_is_read() {
    let c = ok(&rule(
        "[ { host_header = [\"*.example.com\"] }, { path_pattern = [\"/api/*\"] }, { http_header = { name = \"X-Env\", values = [\"dev\"] } } ]",
        FIXED,
    ));
    assert_eq!(
        c.listeners[0].rules[0].conditions,
        vec![
            Condition::HostHeader(vec!["*.example.com".into()]),
            Condition::PathPattern(vec!["/api/*".into()]),
            Condition::HttpHeader {
                name: "X-Env".into(),
                values: vec!["dev".into()]
            },
        ]
    );
    let c = ok(&rule(
        "[ { http_request_method = [\"GET\", \"POST\"] }, { query_string = [ { key = \"v\", value = \"2\" }, { value = \"beta\" } ] }, { source_ip = [\"10.0.0.0/8\"] } ]",
        FIXED,
    ));
    assert_eq!(
        c.listeners[0].rules[0].conditions,
        vec![
            Condition::HttpRequestMethod(vec!["GET".into(), "POST".into()]),
            Condition::QueryString(vec![(Some("v".into()), "2".into()), (None, "beta".into())]),
            Condition::SourceIp(vec!["10.0.0.0/8".parse().unwrap()]),
        ]
    );
}

#[test]
fn condition_shape() {
    has(
        &errors(&rule("[]", FIXED)),
        "7:14: a rule needs at least one condition",
    );
    has(
        &errors(&rule("[ {} ]", FIXED)),
        "7:16: a condition needs one of host_header, path_pattern, http_header, http_request_method, query_string or source_ip",
    );
    has(
        &errors(&rule("[ { host_header = [\"a.com\"], path_pattern = [\"/\"] } ]", FIXED)),
        "7:16: a condition has exactly one kind, this one has host_header and path_pattern; write one condition per kind",
    );
    has(
        &errors(&rule(
            "[ { host_header = [\"a.com\"] }, { host_header = [\"b.com\"] } ]",
            FIXED,
        )),
        "7:45: a rule can have only one host_header condition; put all values in one list",
    );
    // http_header and query_string may repeat
    ok(&rule(
        "[ { http_header = { name = \"A\", values = [\"1\"] } }, { http_header = { name = \"B\", values = [\"2\"] } } ]",
        FIXED,
    ));
    has(
        &errors(&rule("[ { path_pattern = [] } ]", FIXED)),
        "7:33: a path_pattern condition needs at least one value",
    );
}

#[test]
fn condition_values() {
    let long = "a".repeat(126);
    let cases = [
        ("{ host_header = [\"\"] }", "host_header value ``: a condition value cannot be empty"),
        ("{ host_header = [\"exa_mple.com\"] }", "host_header value `exa_mple.com`: `_` is not allowed; a host name holds letters, digits, `-`, `.` and the wildcards `*` and `?`"),
        ("{ host_header = [\"localhost\"] }", "host_header value `localhost`: a host name must contain at least one `.`"),
        ("{ host_header = [\"a.b1\"] }", "host_header value `a.b1`: only letters may follow the last `.` of a host name"),
        ("{ path_pattern = [\"/a b\"] }", "path_pattern value `/a b`: ` ` is not allowed in a path pattern (allowed: letters, digits, _ - . $ / ~ \" ' @ : + & and the wildcards * ?)"),
        ("{ http_request_method = [\"get\"] }", "http_request_method value `get`: `g` is not allowed; a method holds upper-case letters, `-` and `_` (matching is case-sensitive)"),
    ];
    for (cond, msg) in cases {
        let errs = errors(&rule(&format!("[ {cond} ]"), FIXED));
        assert!(errs.iter().any(|e| e.ends_with(msg)), "{cond}: {errs:#?}");
        assert!(errs.iter().all(|e| e.starts_with("7:")), "{errs:#?}");
    }
    let long_value = format!("[ {{ path_pattern = [\"/{long}ab\"] }} ]");
    has_containing(
        &errors(&rule(&long_value, FIXED)),
        "a condition value is at most 128 characters",
    );
    ok(&rule(
        &format!("[ {{ path_pattern = [\"/{long}a\"] }} ]"),
        FIXED,
    ));
    ok(&rule("[ { host_header = [\"status.*\"] } ]", FIXED));
}

#[test]
fn http_header_names() {
    let cases = [
        ("Host", "cannot be `Host`; use a host_header condition"),
        (
            "X Y",
            "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        ),
        (&"x".repeat(41), "is at most 40 characters"),
    ];
    for (name, why) in cases {
        let errs = errors(&rule(
            &format!("[ {{ http_header = {{ name = \"{name}\", values = [\"1\"] }} }} ]"),
            FIXED,
        ));
        has(&errs, &format!("7:41: the http_header name `{name}` {why}"));
    }
}

#[test]
fn source_ips() {
    let errs = errors(&rule(
        "[ { source_ip = [\"10.0.0.1\", \"255.255.255.255/32\", \"::1/128\"] } ]",
        FIXED,
    ));
    assert_eq!(
        errs,
        vec![
            "7:31: source_ip `10.0.0.1` is not a CIDR block such as \"10.0.0.0/8\" or \"::1/128\"",
            "7:43: source_ip `255.255.255.255/32` is not allowed by ALB",
        ]
    );
}

#[test]
fn query_string_values() {
    let errs = errors(&rule(
        "[ { query_string = [ { key = \"\", value = \"x\" }, { value = \"\\u0001\" } ] } ]",
        FIXED,
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    has_containing(
        &errs,
        "query_string key ``: a condition value cannot be empty",
    );
    has_containing(&errs, "query_string value `\u{1}`: '\\u{1}' is not allowed");
}

#[test]
fn per_rule_limits() {
    has(
        &errors(&rule("[ { path_pattern = [\"/a\", \"/b\", \"/c\"] }, { host_header = [\"a.com\", \"b.com\", \"c.com\"] } ]", FIXED)),
        "7:14: a rule can hold at most 5 condition values in total (ALB's limit); this one has 6",
    );
    has(
        &errors(&rule("[ { path_pattern = [\"/*/*/*\"] }, { host_header = [\"*.?.*\"] } ]", FIXED)),
        "7:14: a rule can hold at most 5 wildcard characters (`*`, `?`) in total (ALB's limit); this one has 6",
    );
    // escaped wildcards in a query string are literal
    ok(&rule(
        "[ { path_pattern = [\"/*/*/*\"] }, { query_string = [ { value = \"a\\\\*\\\\?*\" } ] } ]",
        FIXED,
    ));
}

// ---- actions ---------------------------------------------------------------------------------

#[test]
fn action_type_and_foreign_keys() {
    has(
        &errors(&rule("[ { path_pattern = [\"/\"] } ]", "{ type = \"fixed-response\", status_code = 200 }")),
        "8:19: action `type` must be forward, redirect or fixed_response (got `fixed-response`) (write fixed_response with an underscore)",
    );
    has(
        &errors(&rule(
            "[ { path_pattern = [\"/\"] } ]",
            "{ type = \"forward\", target_group = \"app\", message_body = \"x\" }",
        )),
        "8:67: `message_body` does not apply to a forward action",
    );
}

#[test]
fn forward_actions() {
    let c = ok(&with("[[target_group]]\nname = \"canary\"\n[[listener]]\nport = 81\nprotocol = \"HTTP\"\ndefault_action = { type = \"forward\", target_groups = [ { name = \"app\", weight = 90 }, { name = \"canary\", weight = 10 } ], stickiness = { duration = \"1h\" } }\n"));
    match &c.listeners[1].default_action {
        Action::Forward(f) => {
            let w: Vec<(usize, u16)> = f.target_groups.iter().map(|w| (w.id.0, w.weight)).collect();
            assert_eq!(w, vec![(0, 90), (1, 10)]);
            assert_eq!(f.stickiness, Some(Duration::from_secs(3600)));
        }
        other => panic!("{other:?}"),
    }
    let fwd = |a: &str| errors(&rule("[ { path_pattern = [\"/\"] } ]", a));
    has(&fwd("{ type = \"forward\" }"), "8:10: a forward action needs `target_group = \"name\"` or `target_groups = [ { name, weight } ]`");
    has(
        &fwd("{ type = \"forward\", target_group = \"app\", target_groups = [] }"),
        "8:45: a forward action takes `target_group` or `target_groups`, not both",
    );
    has(
        &fwd("{ type = \"forward\", target_groups = [] }"),
        "8:46: a forward action names 1 to 5 target groups (got 0)",
    );
    has(
        &fwd("{ type = \"forward\", target_groups = [ { name = \"app\", weight = 1000 } ] }"),
        "8:73: `weight` must be between 0 and 999 (got 1000)",
    );
    has(
        &fwd("{ type = \"forward\", target_groups = [ { name = \"app\", weight = 0 } ] }"),
        "8:46: at least one target group of a forward action needs a weight above 0",
    );
    has(
        &fwd("{ type = \"forward\", target_groups = [ { name = \"app\" }, { name = \"app\" } ] }"),
        "8:75: target group `app` is listed twice in this forward action",
    );
    has(
        &fwd("{ type = \"forward\", target_groups = [ { name = \"ghost\" } ] }"),
        "8:57: forward to undefined target group `ghost`",
    );
    let six = (0..6)
        .map(|_| "{ name = \"app\" }")
        .collect::<Vec<_>>()
        .join(", ");
    has(
        &fwd(&format!(
            "{{ type = \"forward\", target_groups = [ {six} ] }}"
        )),
        "8:46: a forward action names 1 to 5 target groups (got 6)",
    );
    has(
        &fwd("{ type = \"forward\", target_group = \"app\", stickiness = { enabled = true } }"),
        "8:65: forward stickiness needs a `duration` (1s to 7d) when enabled",
    );
    has(
        &fwd("{ type = \"forward\", target_group = \"app\", stickiness = { duration = \"8d\" } }"),
        "8:78: `duration` is 8days, above ALB's maximum of 7days",
    );
}

#[test]
fn fixed_response_actions() {
    let c = ok(&rule("[ { path_pattern = [\"/\"] } ]", "{ type = \"fixed_response\", status_code = \"503\", content_type = \"application/json\", message_body = \"{}\" }"));
    match &c.listeners[0].rules[0].action {
        Action::FixedResponse(f) => {
            assert_eq!(f.status_code, 503);
            assert_eq!(f.content_type.as_deref(), Some("application/json"));
            assert_eq!(f.message_body, "{}");
        }
        other => panic!("{other:?}"),
    }
    let fixed = |a: &str| errors(&rule("[ { path_pattern = [\"/\"] } ]", a));
    has(
        &fixed("{ type = \"fixed_response\" }"),
        "8:10: a fixed_response needs a `status_code` (2XX, 4XX or 5XX)",
    );
    has(
        &fixed("{ type = \"fixed_response\", status_code = 302 }"),
        "8:51: fixed_response `status_code` must be a 2XX, 4XX or 5XX code (got `302`)",
    );
    has(&fixed("{ type = \"fixed_response\", status_code = 200, content_type = \"text/xml\" }"), "8:71: fixed_response `content_type` must be one of text/plain, text/css, text/html, application/javascript, application/json (got `text/xml`)");
    let body = "x".repeat(1025);
    has(
        &fixed(&format!(
            "{{ type = \"fixed_response\", status_code = 200, message_body = \"{body}\" }}"
        )),
        "8:71: fixed_response `message_body` is at most 1024 characters (got 1025)",
    );
}

#[test]
fn redirect_actions() {
    let c = ok(&rule(
        "[ { path_pattern = [\"/\"] } ]",
        "{ type = \"redirect\", protocol = \"HTTPS\", port = 443, status_code = \"HTTP_302\" }",
    ));
    match &c.listeners[0].rules[0].action {
        Action::Redirect(r) => assert_eq!(
            r,
            &Redirect {
                protocol: "HTTPS".into(),
                host: "#{host}".into(),
                port: "443".into(),
                path: "/#{path}".into(),
                query: "#{query}".into(),
                status_code: 302,
            }
        ),
        other => panic!("{other:?}"),
    }
    let redirect = |a: &str| errors(&rule("[ { path_pattern = [\"/\"] } ]", a));
    has(
        &redirect("{ type = \"redirect\", host = \"x.com\" }"),
        "8:10: a redirect needs `status_code = \"HTTP_301\"` or `\"HTTP_302\"`",
    );
    has(
        &redirect("{ type = \"redirect\", host = \"x.com\", status_code = \"HTTP_303\" }"),
        "8:61: redirect `status_code` must be \"HTTP_301\" or \"HTTP_302\" (got `HTTP_303`)",
    );
    has(&redirect("{ type = \"redirect\", status_code = \"HTTP_301\" }"), "8:10: a redirect must change at least one of protocol, host, port or path, or it would loop");
    // naming the listener's own protocol and port changes nothing either
    has(&redirect("{ type = \"redirect\", protocol = \"HTTP\", port = \"80\", status_code = \"HTTP_301\" }"), "8:10: a redirect must change at least one of protocol, host, port or path, or it would loop");
    has(
        &redirect("{ type = \"redirect\", protocol = \"FTP\", status_code = \"HTTP_301\" }"),
        "8:42: redirect `protocol` must be HTTP, HTTPS or #{protocol} (got `FTP`)",
    );
    has(
        &redirect("{ type = \"redirect\", port = 0, status_code = \"HTTP_301\" }"),
        "8:38: redirect `port` must be 1 to 65535 or #{port} (got `0`)",
    );
    has(
        &redirect("{ type = \"redirect\", host = \"#{path}.com\", status_code = \"HTTP_301\" }"),
        "8:38: redirect `host` cannot use #{path}; it may use #{host}",
    );
    has(
        &redirect("{ type = \"redirect\", path = \"x\", status_code = \"HTTP_301\" }"),
        "8:38: redirect `path` must start with `/`",
    );
    has(
        &redirect("{ type = \"redirect\", path = \"/#{query}\", status_code = \"HTTP_301\" }"),
        "8:38: redirect `path` cannot use #{query}; it may use #{host}, #{path}, #{port}",
    );
    has(&redirect("{ type = \"redirect\", host = \"a.com\", query = \"?a=1\", status_code = \"HTTP_301\" }"), "8:55: redirect `query` is written without its leading `?`");
    ok(&rule("[ { path_pattern = [\"/\"] } ]", "{ type = \"redirect\", path = \"/new/#{path}\", query = \"#{query}&from=#{host}\", status_code = \"HTTP_301\" }"));
}

#[test]
fn https_listener_cannot_redirect_to_http() {
    let text = "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\ncertificates = [ { cert = \"c.pem\", key = \"k.pem\" } ]\ndefault_action = { type = \"redirect\", protocol = \"HTTP\", status_code = \"HTTP_301\" }\n";
    has(
        &errors(text),
        "5:50: an HTTPS listener cannot redirect to HTTP (ALB forbids HTTPS to HTTP redirects)",
    );
}

// ---- admin, access log, backends ---------------------------------------------------------------

#[test]
fn admin_and_access_log() {
    let c = ok(&with(
        "[admin]\nlisten = \"127.0.0.1:9900\"\n[access_log]\npath = \"logs/access.log\"\n[connection_log]\npath = \"logs/conn.log\"\n",
    ));
    assert_eq!(
        c.connection_log.clone().unwrap().path,
        PathBuf::from("/nonexistent-albatross-base/logs/conn.log")
    );
    assert_eq!(c.admin.unwrap().listen.to_string(), "127.0.0.1:9900");
    assert_eq!(
        c.access_log.unwrap().path,
        PathBuf::from("/nonexistent-albatross-base/logs/access.log")
    );
    has(
        &errors(&with("[admin]\nlisten = \"localhost\"\n")),
        "10:10: `listen` must be an address such as \"127.0.0.1:9900\" (got `localhost`)",
    );
}

#[test]
fn admin_defaults_to_loopback_and_needs_credentials_elsewhere() {
    let c = ok(&with("[admin]\n"));
    let admin = c.admin.unwrap();
    assert_eq!(admin.listen.to_string(), "127.0.0.1:9900");
    assert!(admin.credentials.is_none());

    has(
        &errors(&with("[admin]\nlisten = \"0.0.0.0:9900\"\n")),
        "10:10: the admin listener on 0.0.0.0:9900 is reachable from other machines; set \
         `credentials = { access_key_id = \"…\", secret_access_key = \"…\" }` or listen on a \
         loopback address such as 127.0.0.1",
    );
    let c = ok(&with(
        "[admin]\nlisten = \"0.0.0.0:9900\"\ncredentials = { access_key_id = \"AKIDEXAMPLE\", secret_access_key = \"s3cr3t\" }\n",
    ));
    let creds = c.admin.unwrap().credentials.unwrap();
    assert_eq!(creds.access_key_id, "AKIDEXAMPLE");
    assert_eq!(creds.secret_access_key.expose(), "s3cr3t");
    assert!(
        !format!("{creds:?}").contains("s3cr3t"),
        "the secret never shows"
    );

    has_containing(
        &errors(&with(
            "[admin]\ncredentials = { access_key_id = \"AK ID\", secret_access_key = \"\" }\n",
        )),
        "`access_key_id` must be letters, digits or underscores",
    );
    has_containing(
        &errors(&with(
            "[admin]\ncredentials = { access_key_id = \"AKID\", secret_access_key = \"\" }\n",
        )),
        "`secret_access_key` cannot be empty",
    );
}

#[test]
fn load_balancer_name_region_and_account() {
    let c = ok(&with(""));
    let lb = &c.load_balancer;
    assert_eq!(
        (lb.name.as_str(), lb.region.as_str(), lb.account_id.as_str()),
        ("albatross", "us-east-1", "000000000000")
    );
    let c = ok(&with(
        "[load_balancer]\nname = \"my-alb\"\nregion = \"eu-west-3\"\naccount_id = \"123456789012\"\n",
    ));
    assert_eq!(c.load_balancer.name, "my-alb");
    assert_eq!(c.load_balancer.region, "eu-west-3");
    assert_eq!(c.load_balancer.account_id, "123456789012");
    for (text, want) in [
        ("name = \"-bad\"", "`name` must be 1 to 32 letters"),
        ("name = \"internal-x\"", "not starting with `internal-`"),
        ("name = \"a_b\"", "`name` must be 1 to 32 letters"),
        (
            "region = \"US East\"",
            "`region` must look like `us-east-1`",
        ),
        (
            "account_id = \"1234\"",
            "`account_id` must be 12 digits (got `1234`)",
        ),
    ] {
        has_containing(&errors(&with(&format!("[load_balancer]\n{text}\n"))), want);
    }
}

#[test]
fn backends() {
    let c = ok(&with("[[backend]]\nlisten = \"127.0.0.1:9001\"\n[[backend]]\nlisten = \"127.0.0.1:9002\"\nid = \"two\"\nping_interval = \"300ms\"\nping_timeout = 0\nredis = \"redis://127.0.0.1:6379\"\n"));
    assert_eq!(
        c.backends[0],
        Backend {
            listen: "127.0.0.1:9001".parse().unwrap(),
            id: "127.0.0.1:9001".into(),
            ping_interval: Some(Duration::from_secs(25)),
            ping_timeout: Some(Duration::from_secs(20)),
            redis: None,
        }
    );
    assert_eq!(c.backends[1].id, "two");
    assert_eq!(
        c.backends[1].ping_interval,
        Some(Duration::from_millis(300))
    );
    assert_eq!(c.backends[1].ping_timeout, None);
    assert_eq!(
        c.backends[1].redis.as_deref(),
        Some("redis://127.0.0.1:6379")
    );

    let errs = errors(&with("[[backend]]\nlisten = \"127.0.0.1:9001\"\nid = \"\"\nredis = \"localhost\"\n[[backend]]\nlisten = \"127.0.0.1:9001\"\n"));
    assert_eq!(
        errs,
        vec![
            "11:6: a backend `id` cannot be empty",
            "12:9: `redis` must be a redis:// URL (got `localhost`)",
            "14:10: port 9001 on 127.0.0.1 is already used by the backend on 127.0.0.1:9001 (line 10)",
        ]
    );
    let errs = errors(&with(
        "[[backend]]\nlisten = \"127.0.0.1:9001\"\nredis = \"rediss://:secret@cache:6380\"\n",
    ));
    assert_eq!(
        errs,
        vec!["11:9: `redis` over TLS (rediss://) is not supported by the heartbeat backend; use a redis:// URL"]
    );
}

// ---- one problem, one error ---------------------------------------------------------------------

#[test]
fn a_reference_to_an_unreadable_target_group_is_not_reported_again() {
    let errs = errors("[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = { type = \"forward\", target_group = \"app\" }\n[[target_group]]\nname = \"app\"\ntargets = 5\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("7:11: in `target_group[0]`: invalid type"),
        "{errs:#?}"
    );
}

#[test]
fn an_unreadable_listener_still_counts_as_a_listener() {
    let errs = errors("[[listener]]\nport = \"80\"\nprotocol = \"HTTP\"\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n");
    assert_eq!(
        errs,
        vec!["2:8: in `listener[0]`: invalid type: string \"80\", expected an integer"]
    );
}

#[test]
fn a_misspelt_condition_kind_is_reported_once() {
    let errs = errors(&rule("[ { path = [\"/\"] } ]", FIXED));
    assert_eq!(
        errs,
        vec!["7:18: unknown key `path` in `listener[0].rule[0].conditions[0]`"]
    );
}
