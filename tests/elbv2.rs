//! The ELBv2 API through a real AWS client (boto3 and aws-cli): every operation, its
//! errors, pagination and waiters, and what each change does to traffic.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use albatross::ProxyHandle;
use serde_json::{json, Value};
use support::aws::Aws;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP listener (0) answering `default` itself with a `/api*` rule (priority 10)
/// forwarding to `blue`, an HTTPS listener (1) forwarding to `blue`; groups `blue`
/// (`blue_targets`) and `green` (`green_targets`), health checked every 200 ms.
fn config(
    pki: &Pki,
    blue_targets: &[SocketAddr],
    green_targets: &[SocketAddr],
    extra: &str,
) -> String {
    let cert = pki.leaf("api", &["localhost"]);
    let list = |t: &[SocketAddr]| {
        t.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "fixed_response", status_code = 200, content_type = "text/plain", message_body = "default" }}

[[listener.rule]]
priority = 10
conditions = [ {{ path_pattern = ["/api*"] }} ]
action = {{ type = "forward", target_group = "blue" }}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{cert}", key = "{key}" }} ]
default_action = {{ type = "forward", target_group = "blue" }}

[[target_group]]
name = "blue"
targets = [ {blue} ]
health_check = {{ path = "/health", interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }}

[[target_group]]
name = "green"
targets = [ {green} ]
health_check = {{ path = "/health", interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }}
{extra}
"#,
        cert = cert.0.display(),
        key = cert.1.display(),
        blue = list(blue_targets),
        green = list(green_targets),
    )
}

const HEALTH_CHECK: &str = "health_check = { path = \"/health\", interval = \"200ms\", timeout = \"100ms\", healthy_threshold = 2, unhealthy_threshold = 2 }";
const DEFAULT_ACTION: &str = "default_action = { type = \"fixed_response\", status_code = 200, content_type = \"text/plain\", message_body = \"default\" }";

async fn client(proxy: &ProxyHandle) -> Option<Aws> {
    Aws::start(proxy.admin_addr().expect("an admin listener"), None).await
}

/// GET `path` on `addr`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let resp = raw_exchange(stream, request.as_bytes()).await;
    (status_of(&resp), body_of(&resp).to_string())
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// A target's (state, reason) in DescribeTargetHealth.
async fn health(aws: &mut Aws, group: &str, targets: &Value) -> (String, String) {
    let h = aws
        .ok(
            "describe_target_health",
            json!({ "TargetGroupArn": group, "Targets": targets }),
        )
        .await;
    let h = &h["TargetHealthDescriptions"][0]["TargetHealth"];
    (
        s(&h["State"]),
        h["Reason"].as_str().unwrap_or("").to_string(),
    )
}

/// The value of attribute `key` in an `Attributes` result.
fn attribute(attrs: &Value, key: &str) -> String {
    let all = attrs["Attributes"].as_array().unwrap();
    s(&all
        .iter()
        .find(|a| a["Key"] == key)
        .unwrap_or_else(|| panic!("{key} missing: {attrs}"))["Value"])
}

async fn lb_arn(aws: &mut Aws) -> String {
    s(&aws.ok("describe_load_balancers", json!({})).await["LoadBalancers"][0]["LoadBalancerArn"])
}

async fn tg_arn(aws: &mut Aws, name: &str) -> String {
    s(&aws
        .ok("describe_target_groups", json!({ "Names": [name] }))
        .await["TargetGroups"][0]["TargetGroupArn"])
}

async fn listener_arns(aws: &mut Aws) -> Vec<String> {
    let lb = lb_arn(aws).await;
    let l = aws
        .ok("describe_listeners", json!({ "LoadBalancerArn": lb }))
        .await;
    l["Listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["ListenerArn"]))
        .collect()
}

#[tokio::test]
async fn load_balancer_listeners_and_attributes() {
    let pki = Pki::new();
    let proxy = start_proxy(&pki, &config(&pki, &[], &[], "")).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };

    let lbs = aws.ok("describe_load_balancers", json!({})).await;
    let lb = &lbs["LoadBalancers"][0];
    let arn = s(&lb["LoadBalancerArn"]);
    assert!(
        arn.starts_with(
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/albatross/"
        ),
        "{arn}"
    );
    assert_eq!(lb["LoadBalancerName"], "albatross");
    assert_eq!(lb["State"]["Code"], "active");
    assert_eq!(lb["Type"], "application");
    assert_eq!(lb["Scheme"], "internal", "every listener is on loopback");
    for field in [
        "DNSName",
        "CanonicalHostedZoneId",
        "CreatedTime",
        "VpcId",
        "AvailabilityZones",
        "SecurityGroups",
        "IpAddressType",
    ] {
        assert!(!lb[field].is_null(), "{field} missing: {lb}");
    }
    aws.fails(
        "describe_load_balancers",
        json!({ "Names": ["other"] }),
        "LoadBalancerNotFound",
    )
    .await;
    let e = aws
        .fails(
            "describe_load_balancers",
            json!({ "LoadBalancerArns": [arn.replace("albatross", "other")] }),
            "LoadBalancerNotFound",
        )
        .await;
    assert_eq!(e.exception, "LoadBalancerNotFoundException");
    aws.wait(
        "load_balancer_available",
        json!({ "LoadBalancerArns": [arn] }),
    )
    .await
    .unwrap();

    // Attributes: every key ALB has, the running values under ALB's names.
    let attrs = aws
        .ok(
            "describe_load_balancer_attributes",
            json!({ "LoadBalancerArn": arn }),
        )
        .await;
    assert_eq!(attribute(&attrs, "idle_timeout.timeout_seconds"), "60");
    assert_eq!(
        attribute(&attrs, "routing.http.xff_header_processing.mode"),
        "append"
    );
    assert_eq!(
        attribute(&attrs, "routing.http.desync_mitigation_mode"),
        "defensive"
    );
    assert_eq!(attribute(&attrs, "deletion_protection.enabled"), "false");
    assert_eq!(
        attribute(&attrs, "load_balancing.cross_zone.enabled"),
        "true"
    );
    assert_eq!(attribute(&attrs, "access_logs.s3.bucket"), "");
    let changed = aws
        .ok(
            "modify_load_balancer_attributes",
            json!({ "LoadBalancerArn": arn, "Attributes": [
                { "Key": "idle_timeout.timeout_seconds", "Value": "120" },
                { "Key": "routing.http.xff_header_processing.mode", "Value": "preserve" },
            ]}),
        )
        .await;
    assert_eq!(attribute(&changed, "idle_timeout.timeout_seconds"), "120");
    assert_eq!(
        proxy.config().load_balancer.idle_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(
        proxy.config().load_balancer.xff_header_processing,
        albatross::config::model::XffMode::Preserve
    );
    let e = aws
        .fails(
            "modify_load_balancer_attributes",
            json!({ "LoadBalancerArn": arn, "Attributes": [
            { "Key": "idle_timeout.timeout_seconds", "Value": "5000" }]}),
            "ValidationError",
        )
        .await;
    assert!(e.message.contains("between 1 and 4000"), "{}", e.message);
    aws.fails(
        "modify_load_balancer_attributes",
        json!({ "LoadBalancerArn": arn, "Attributes": [
        { "Key": "deletion_protection.enabled", "Value": "true" }]}),
        "InvalidConfigurationRequest",
    )
    .await;
    aws.fails(
        "modify_load_balancer_attributes",
        json!({ "LoadBalancerArn": arn, "Attributes": [
        { "Key": "no.such.key", "Value": "1" }]}),
        "ValidationError",
    )
    .await;
    assert_eq!(
        proxy.config().load_balancer.idle_timeout,
        Duration::from_secs(120),
        "a refused change changes nothing"
    );

    // Listeners: both, with their bound ports; the HTTPS one with policy and certificate.
    let listeners = aws
        .ok("describe_listeners", json!({ "LoadBalancerArn": arn }))
        .await;
    let all = listeners["Listeners"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["Port"], proxy.listener_addr(0).port());
    assert_eq!(all[0]["Protocol"], "HTTP");
    assert_eq!(all[1]["Port"], proxy.listener_addr(1).port());
    assert_eq!(all[1]["Protocol"], "HTTPS");
    assert_eq!(all[1]["SslPolicy"], "ELBSecurityPolicy-TLS13-1-2-2021-06");
    assert!(s(&all[1]["Certificates"][0]["CertificateArn"])
        .starts_with("arn:aws:acm:us-east-1:000000000000:certificate/"));
    assert_eq!(all[1]["DefaultActions"][0]["Type"], "forward");
    let http = s(&all[0]["ListenerArn"]);
    let one = aws
        .ok("describe_listeners", json!({ "ListenerArns": [http] }))
        .await;
    assert_eq!(one["Listeners"][0]["Port"], all[0]["Port"]);
    aws.fails(
        "describe_listeners",
        json!({ "ListenerArns": [format!("{http}0")] }),
        "ListenerNotFound",
    )
    .await;
    aws.fails("describe_listeners", json!({}), "ValidationError")
        .await;
    let (pages, items) = aws
        .paginate(
            "describe_listeners",
            json!({ "LoadBalancerArn": arn, "PaginationConfig": { "PageSize": 1 } }),
            "Listeners",
        )
        .await;
    assert_eq!((pages, items.len()), (2, 2));

    // ModifyListener: the default action changes for the next request.
    assert_eq!(
        get(proxy.listener_addr(0), "/").await,
        (200, "default".into())
    );
    let modified = aws
        .ok("modify_listener", json!({ "ListenerArn": http, "DefaultActions": [
            { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "503", "ContentType": "text/plain", "MessageBody": "maintenance" } }]}))
        .await;
    assert_eq!(
        modified["Listeners"][0]["DefaultActions"][0]["FixedResponseConfig"]["MessageBody"],
        "maintenance"
    );
    assert_eq!(
        get(proxy.listener_addr(0), "/").await,
        (503, "maintenance".into())
    );
    aws.fails("modify_listener", json!({ "ListenerArn": http, "DefaultActions": [
        { "Type": "forward", "TargetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nope/0000000000000000" }]}), "TargetGroupNotFound").await;
    aws.fails(
        "modify_listener",
        json!({ "ListenerArn": s(&all[1]["ListenerArn"]), "SslPolicy": "ELBSecurityPolicy-Nope" }),
        "SSLPolicyNotFound",
    )
    .await;
    aws.ok("modify_listener", json!({ "ListenerArn": s(&all[1]["ListenerArn"]), "SslPolicy": "ELBSecurityPolicy-TLS13-1-3-2021-06" })).await;
    assert_eq!(
        proxy.config().listeners[1].tls.as_ref().unwrap().ssl_policy,
        "ELBSecurityPolicy-TLS13-1-3-2021-06"
    );

    // SSL policies and tags.
    let policies = aws
        .ok(
            "describe_ssl_policies",
            json!({ "Names": ["ELBSecurityPolicy-TLS13-1-2-2021-06"] }),
        )
        .await;
    let p = &policies["SslPolicies"][0];
    assert_eq!(p["SslProtocols"], json!(["TLSv1.2", "TLSv1.3"]));
    assert_eq!(p["Ciphers"][0]["Name"], "TLS_AES_128_GCM_SHA256");
    aws.fails(
        "describe_ssl_policies",
        json!({ "Names": ["ELBSecurityPolicy-Nope"] }),
        "SSLPolicyNotFound",
    )
    .await;
    let tags = aws
        .ok("describe_tags", json!({ "ResourceArns": [arn, http] }))
        .await;
    assert_eq!(tags["TagDescriptions"].as_array().unwrap().len(), 2);
    aws.fails("describe_tags", json!({ "ResourceArns": ["arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nope/0000000000000000"] }), "TargetGroupNotFound").await;

    // aws-cli speaks the same API.
    let cli = aws
        .cli(&["elbv2", "describe-load-balancers", "--names", "albatross"])
        .await
        .unwrap();
    assert_eq!(cli["LoadBalancers"][0]["LoadBalancerArn"], json!(arn));
    let cli = aws
        .cli(&[
            "elbv2",
            "describe-load-balancer-attributes",
            "--load-balancer-arn",
            &arn,
        ])
        .await
        .unwrap();
    assert!(cli["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["Key"] == "idle_timeout.timeout_seconds" && a["Value"] == "120"));
}

#[tokio::test]
async fn rules_are_created_modified_reordered_and_deleted() {
    let pki = Pki::new();
    let blue = id_target("blue").await;
    let proxy = start_proxy(&pki, &config(&pki, &[blue.addr], &[], "")).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let http = listener_arns(&mut aws).await.remove(0);
    let addr = proxy.listener_addr(0);

    let rules = aws
        .ok("describe_rules", json!({ "ListenerArn": http }))
        .await;
    let rules = rules["Rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["Priority"], "10");
    assert_eq!(rules[0]["IsDefault"], false);
    assert_eq!(rules[0]["Conditions"][0]["Field"], "path-pattern");
    assert_eq!(
        rules[0]["Conditions"][0]["PathPatternConfig"]["Values"],
        json!(["/api*"])
    );
    assert_eq!(rules[1]["Priority"], "default");
    assert_eq!(rules[1]["IsDefault"], true);
    let api_rule = s(&rules[0]["RuleArn"]);
    assert!(
        api_rule.contains(":listener-rule/app/albatross/"),
        "{api_rule}"
    );

    // CreateRule: served at once.
    let created = aws
        .ok("create_rule", json!({ "ListenerArn": http, "Priority": 20,
            "Conditions": [ { "Field": "path-pattern", "PathPatternConfig": { "Values": ["/new*"] } },
                            { "Field": "http-request-method", "HttpRequestMethodConfig": { "Values": ["GET"] } } ],
            "Actions": [ { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "200", "MessageBody": "new" } } ] }))
        .await;
    let new_rule = s(&created["Rules"][0]["RuleArn"]);
    assert_eq!(created["Rules"][0]["Priority"], "20");
    assert_eq!(get(addr, "/new/x").await, (200, "new".into()));
    let e = aws
        .fails("create_rule", json!({ "ListenerArn": http, "Priority": 20,
            "Conditions": [ { "Field": "path-pattern", "Values": ["/x"] } ],
            "Actions": [ { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "200" } } ] }), "PriorityInUse")
        .await;
    assert_eq!(e.exception, "PriorityInUseException");
    // Refused with the config validator's words.
    let e = aws
        .fails("create_rule", json!({ "ListenerArn": http, "Priority": 30,
            "Conditions": [ { "Field": "path-pattern", "Values": ["/a<b"] } ],
            "Actions": [ { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "200" } } ] }), "ValidationError")
        .await;
    assert!(
        e.message.contains("`<` is not allowed in a path pattern"),
        "{}",
        e.message
    );
    aws.fails("create_rule", json!({ "ListenerArn": format!("{http}0"), "Priority": 31,
        "Conditions": [ { "Field": "path-pattern", "Values": ["/x"] } ],
        "Actions": [ { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "200" } } ] }), "ListenerNotFound").await;
    aws.fails("create_rule", json!({ "ListenerArn": http, "Priority": 32,
        "Conditions": [ { "Field": "path-pattern", "Values": ["/x"] } ],
        "Actions": [ { "Type": "authenticate-cognito", "AuthenticateCognitoConfig": { "UserPoolArn": "a", "UserPoolClientId": "b", "UserPoolDomain": "c" } } ] }), "InvalidLoadBalancerAction").await;
    aws.fails("create_rule", json!({ "ListenerArn": http, "Priority": 33,
        "Conditions": [ { "Field": "path-pattern", "Values": ["/x"] } ],
        "Actions": [ { "Type": "fixed-response", "FixedResponseConfig": { "StatusCode": "200" } } ],
        "Transforms": [ { "Type": "url-rewrite", "UrlRewriteConfig": { "Rewrites": [ { "Regex": "^/x$", "Replace": "/y" } ] } } ] }), "InvalidConfigurationRequest").await;

    // ModifyRule: new action, same ARN.
    let modified = aws
        .ok("modify_rule", json!({ "RuleArn": new_rule,
            "Actions": [ { "Type": "redirect", "RedirectConfig": { "Path": "/moved", "StatusCode": "HTTP_302" } } ] }))
        .await;
    assert_eq!(modified["Rules"][0]["RuleArn"], json!(new_rule));
    assert_eq!(
        modified["Rules"][0]["Actions"][0]["RedirectConfig"]["StatusCode"],
        "HTTP_302"
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    let resp = raw_exchange(
        stream,
        b"GET /new HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 302, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("location: http://localhost:"),
        "{resp}"
    );

    // SetRulePriorities: swapped, ARNs kept, evaluation order follows.
    let swapped = aws
        .ok(
            "set_rule_priorities",
            json!({ "RulePriorities": [
            { "RuleArn": api_rule, "Priority": 20 }, { "RuleArn": new_rule, "Priority": 10 } ] }),
        )
        .await;
    assert_eq!(swapped["Rules"].as_array().unwrap().len(), 2);
    let rules = aws
        .ok("describe_rules", json!({ "ListenerArn": http }))
        .await;
    assert_eq!(rules["Rules"][0]["RuleArn"], json!(new_rule));
    assert_eq!(rules["Rules"][0]["Priority"], "10");
    assert_eq!(rules["Rules"][1]["RuleArn"], json!(api_rule));
    assert_eq!(rules["Rules"][1]["Priority"], "20");
    let one = aws
        .ok("describe_rules", json!({ "RuleArns": [api_rule] }))
        .await;
    assert_eq!(one["Rules"][0]["Priority"], "20");
    aws.fails(
        "set_rule_priorities",
        json!({ "RulePriorities": [ { "RuleArn": api_rule, "Priority": 10 } ] }),
        "PriorityInUse",
    )
    .await;
    let (pages, items) = aws
        .paginate(
            "describe_rules",
            json!({ "ListenerArn": http, "PaginationConfig": { "PageSize": 1 } }),
            "Rules",
        )
        .await;
    assert_eq!((pages, items.len()), (3, 3));

    // DeleteRule: gone; the default rule stays.
    aws.ok("delete_rule", json!({ "RuleArn": new_rule })).await;
    assert_eq!(get(addr, "/new").await, (200, "default".into()));
    aws.fails(
        "describe_rules",
        json!({ "RuleArns": [new_rule] }),
        "RuleNotFound",
    )
    .await;
    aws.fails(
        "delete_rule",
        json!({ "RuleArn": new_rule }),
        "RuleNotFound",
    )
    .await;
    let default_rule = s(&rules["Rules"][2]["RuleArn"]);
    aws.fails(
        "delete_rule",
        json!({ "RuleArn": default_rule }),
        "OperationNotPermitted",
    )
    .await;
    // The file's rule still forwards under its moved priority.
    assert_eq!(get(addr, "/api").await, (200, "blue".into()));

    // aws-cli creates a rule as well.
    let cli = aws
        .cli(&[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &http,
            "--priority",
            "40",
            "--conditions",
            "Field=host-header,Values=cli.example",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=200,MessageBody=cli}",
        ])
        .await
        .unwrap();
    assert_eq!(cli["Rules"][0]["Priority"], "40");
    let stream = TcpStream::connect(addr).await.unwrap();
    let resp = raw_exchange(
        stream,
        b"GET / HTTP/1.1\r\nHost: cli.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&resp), "cli");
}

#[tokio::test]
async fn target_groups_attributes_and_health_checks() {
    let pki = Pki::new();
    let blue = id_target("blue").await;
    let proxy = start_proxy(&pki, &config(&pki, &[blue.addr], &[], "")).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let lb = lb_arn(&mut aws).await;

    let all = aws.ok("describe_target_groups", json!({})).await;
    let groups = all["TargetGroups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let g = &groups[0];
    assert_eq!(g["TargetGroupName"], "blue");
    assert_eq!(g["Protocol"], "HTTP");
    assert_eq!(g["Port"], blue.addr.port());
    assert_eq!(g["TargetType"], "ip");
    assert_eq!(g["HealthCheckPath"], "/health");
    assert_eq!(g["HealthCheckPort"], "traffic-port");
    assert_eq!(
        g["HealthCheckIntervalSeconds"], 1,
        "200ms rounds up to a whole second"
    );
    assert_eq!(g["HealthyThresholdCount"], 2);
    assert_eq!(g["Matcher"]["HttpCode"], "200");
    assert_eq!(g["LoadBalancerArns"], json!([lb]));
    assert_eq!(
        groups[1]["LoadBalancerArns"],
        json!([]),
        "green serves no listener"
    );
    let blue_arn = s(&g["TargetGroupArn"]);
    assert!(blue_arn.contains(":targetgroup/blue/"), "{blue_arn}");
    let by_lb = aws
        .ok("describe_target_groups", json!({ "LoadBalancerArn": lb }))
        .await;
    assert_eq!(by_lb["TargetGroups"].as_array().unwrap().len(), 1);
    let (pages, items) = aws
        .paginate(
            "describe_target_groups",
            json!({ "PaginationConfig": { "PageSize": 1 } }),
            "TargetGroups",
        )
        .await;
    assert_eq!((pages, items.len()), (2, 2));
    let e = aws
        .fails(
            "describe_target_groups",
            json!({ "Names": ["nope"] }),
            "TargetGroupNotFound",
        )
        .await;
    assert_eq!(e.exception, "TargetGroupNotFoundException");
    aws.fails(
        "describe_target_groups",
        json!({ "TargetGroupArns": [blue_arn.replace("/blue/", "/nope/")] }),
        "TargetGroupNotFound",
    )
    .await;

    // Attributes under ALB's keys.
    let attrs = aws
        .ok(
            "describe_target_group_attributes",
            json!({ "TargetGroupArn": blue_arn }),
        )
        .await;
    assert_eq!(
        attribute(&attrs, "deregistration_delay.timeout_seconds"),
        "300"
    );
    assert_eq!(attribute(&attrs, "stickiness.enabled"), "false");
    assert_eq!(attribute(&attrs, "stickiness.type"), "lb_cookie");
    assert_eq!(
        attribute(&attrs, "load_balancing.algorithm.type"),
        "round_robin"
    );
    let changed = aws
        .ok(
            "modify_target_group_attributes",
            json!({ "TargetGroupArn": blue_arn, "Attributes": [
            { "Key": "deregistration_delay.timeout_seconds", "Value": "7" },
            { "Key": "stickiness.enabled", "Value": "true" },
            { "Key": "stickiness.lb_cookie.duration_seconds", "Value": "600" },
            { "Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests" } ] }),
        )
        .await;
    assert_eq!(
        attribute(&changed, "deregistration_delay.timeout_seconds"),
        "7"
    );
    assert_eq!(attribute(&changed, "stickiness.enabled"), "true");
    assert_eq!(
        attribute(&changed, "stickiness.lb_cookie.duration_seconds"),
        "600"
    );
    let running = proxy.config();
    let g = &running.target_groups[0];
    assert_eq!(g.deregistration_delay, Duration::from_secs(7));
    assert!(
        matches!(g.stickiness, Some(albatross::config::model::Stickiness::LbCookie { duration }) if duration == Duration::from_secs(600))
    );
    // The sticky cookie is issued from the next request on.
    let stream = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let resp = raw_exchange(
        stream,
        b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("AWSALB="), "{resp}");
    aws.fails(
        "modify_target_group_attributes",
        json!({ "TargetGroupArn": blue_arn, "Attributes": [
        { "Key": "deregistration_delay.timeout_seconds", "Value": "3601" } ] }),
        "ValidationError",
    )
    .await;
    aws.fails(
        "modify_target_group_attributes",
        json!({ "TargetGroupArn": blue_arn, "Attributes": [
        { "Key": "load_balancing.cross_zone.enabled", "Value": "false" } ] }),
        "InvalidConfigurationRequest",
    )
    .await;
    aws.fails(
        "modify_target_group_attributes",
        json!({ "TargetGroupArn": blue_arn.replace("/blue/", "/nope/"), "Attributes": [
        { "Key": "deregistration_delay.timeout_seconds", "Value": "1" } ] }),
        "TargetGroupNotFound",
    )
    .await;

    // ModifyTargetGroup: health-check settings, checked at the new path from then on.
    let modified = aws
        .ok("modify_target_group", json!({ "TargetGroupArn": blue_arn, "HealthCheckPath": "/health/deep",
            "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2, "Matcher": { "HttpCode": "200-299" } }))
        .await;
    let g = &modified["TargetGroups"][0];
    assert_eq!(g["HealthCheckPath"], "/health/deep");
    assert_eq!(g["HealthCheckIntervalSeconds"], 5);
    assert_eq!(g["Matcher"]["HttpCode"], "200-299");
    eventually("a health check at the new path", || {
        blue.last_health_head
            .lock()
            .unwrap()
            .starts_with("GET /health/deep ")
    })
    .await;
    aws.fails(
        "modify_target_group",
        json!({ "TargetGroupArn": blue_arn, "HealthCheckIntervalSeconds": 301 }),
        "ValidationError",
    )
    .await;
    let e = aws
        .fails(
            "modify_target_group",
            json!({ "TargetGroupArn": blue_arn, "HealthCheckTimeoutSeconds": 10 }),
            "ValidationError",
        )
        .await;
    assert!(
        e.message.contains("timeout"),
        "the validator's words: {}",
        e.message
    );

    // Targets: ALB's errors for ids and registrations.
    aws.fails(
        "register_targets",
        json!({ "TargetGroupArn": blue_arn, "Targets": [ { "Id": "i-0123456789", "Port": 80 } ] }),
        "InvalidTarget",
    )
    .await;
    aws.fails(
        "deregister_targets",
        json!({ "TargetGroupArn": blue_arn, "Targets": [ { "Id": "127.0.0.9", "Port": 80 } ] }),
        "InvalidTarget",
    )
    .await;
    aws.fails(
        "describe_target_health",
        json!({ "TargetGroupArn": blue_arn.replace("/blue/", "/nope/") }),
        "TargetGroupNotFound",
    )
    .await;
    let one = aws
        .ok(
            "describe_target_health",
            json!({ "TargetGroupArn": blue_arn, "Targets": [ { "Id": "127.0.0.9", "Port": 80 } ] }),
        )
        .await;
    assert_eq!(
        one["TargetHealthDescriptions"][0]["TargetHealth"]["State"],
        "unused"
    );
    assert_eq!(
        one["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"],
        "Target.NotRegistered"
    );
    let cli = aws
        .cli(&[
            "elbv2",
            "describe-target-health",
            "--target-group-arn",
            &blue_arn,
        ])
        .await
        .unwrap();
    assert_eq!(
        cli["TargetHealthDescriptions"][0]["Target"]["Port"],
        blue.addr.port()
    );
}

/// RegisterTargets → initial → healthy (the waiter) → traffic; DeregisterTargets →
/// draining (no new requests, the open tunnel lives until the delay) → unused (the
/// waiter).
#[tokio::test]
async fn registered_targets_get_traffic_once_healthy_and_drain_when_deregistered() {
    let pki = Pki::new();
    let proxy = start_proxy(&pki, &config(&pki, &[], &[], "")).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let blue_arn = tg_arn(&mut aws, "blue").await;
    let addr = proxy.listener_addr(0);
    assert_eq!(get(addr, "/api").await.0, 503, "an empty group");

    let target = id_target("t1").await;
    target.set_health(500);
    let t = json!([{ "Id": "127.0.0.1", "Port": target.addr.port() }]);
    aws.ok(
        "register_targets",
        json!({ "TargetGroupArn": blue_arn, "Targets": t }),
    )
    .await;
    assert_eq!(
        health(&mut aws, &blue_arn, &t).await,
        (
            "initial".to_string(),
            "Elb.RegistrationInProgress".to_string()
        )
    );
    // Failing its checks it never turns healthy; the waiter gives up.
    eventually("unhealthy", || {
        proxy.target_health_of("blue", target.addr).unwrap().state
            == albatross::HealthState::Unhealthy
    })
    .await;
    target.set_health(200);
    let waited = aws
        .wait(
            "target_in_service",
            json!({ "TargetGroupArn": blue_arn, "Targets": t }),
        )
        .await
        .unwrap();
    assert!(waited["seconds"].as_f64().unwrap() < 10.0, "{waited}");
    assert_eq!(get(addr, "/api").await, (200, "t1".into()));

    // A tunnel to it, then deregistration with a 2 s delay.
    aws.ok(
        "modify_target_group_attributes",
        json!({ "TargetGroupArn": blue_arn, "Attributes": [
        { "Key": "deregistration_delay.timeout_seconds", "Value": "2" } ] }),
    )
    .await;
    let mut tunnel = TcpStream::connect(addr).await.unwrap();
    tunnel
        .write_all(upgrade_request("localhost", "/api/ws").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tunnel).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    aws.ok(
        "deregister_targets",
        json!({ "TargetGroupArn": blue_arn, "Targets": t }),
    )
    .await;
    assert_eq!(
        health(&mut aws, &blue_arn, &t).await,
        (
            "draining".to_string(),
            "Target.DeregistrationInProgress".to_string()
        )
    );
    let before = target.request_count();
    assert_eq!(
        get(addr, "/api").await.0,
        503,
        "no new requests to a draining target"
    );
    assert_eq!(target.request_count(), before);
    tunnel.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    within("the echo while draining", tunnel.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"still here");
    let waited = aws
        .wait(
            "target_deregistered",
            json!({ "TargetGroupArn": blue_arn, "Targets": t }),
        )
        .await
        .unwrap();
    assert!(
        waited["seconds"].as_f64().unwrap() >= 1.0,
        "draining lasts the delay: {waited}"
    );
    let mut rest = Vec::new();
    let _ = within(
        "the tunnel closed at the end of the delay",
        tunnel.read_to_end(&mut rest),
    )
    .await;
    assert!(rest.is_empty(), "nothing more came through the tunnel");
    assert_eq!(
        health(&mut aws, &blue_arn, &t).await,
        ("unused".to_string(), "Target.NotRegistered".to_string())
    );
}

/// CodeDeploy's blue/green shift: forward weights 100/0 → 0/100 through ModifyListener.
#[tokio::test]
async fn forward_weights_shift_new_requests_between_groups() {
    let pki = Pki::new();
    let blue = id_target("blue").await;
    let green = id_target("green").await;
    let proxy = start_proxy(&pki, &config(&pki, &[blue.addr], &[green.addr], "")).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let http = listener_arns(&mut aws).await.remove(0);
    let blue_arn = tg_arn(&mut aws, "blue").await;
    let green_arn = tg_arn(&mut aws, "green").await;
    let weights = |b: u32, g: u32| {
        json!([{ "Type": "forward", "ForwardConfig": { "TargetGroups": [
        { "TargetGroupArn": blue_arn, "Weight": b }, { "TargetGroupArn": green_arn, "Weight": g } ] } }])
    };
    // Green serves no listener yet: its target is `unused` until the listener forwards to it.
    let green_target = json!([{ "Id": "127.0.0.1", "Port": green.addr.port() }]);
    let health = aws
        .ok(
            "describe_target_health",
            json!({ "TargetGroupArn": green_arn, "Targets": green_target }),
        )
        .await;
    assert_eq!(
        health["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"],
        "Target.NotInUse"
    );
    aws.ok(
        "modify_listener",
        json!({ "ListenerArn": http, "DefaultActions": weights(100, 0) }),
    )
    .await;
    aws.wait(
        "target_in_service",
        json!({ "TargetGroupArn": green_arn, "Targets": green_target }),
    )
    .await
    .unwrap();
    aws.wait("target_in_service", json!({ "TargetGroupArn": blue_arn }))
        .await
        .unwrap();
    let addr = proxy.listener_addr(0);
    for (b, g, expect) in [(100, 0, "blue"), (0, 100, "green"), (100, 0, "blue")] {
        aws.ok(
            "modify_listener",
            json!({ "ListenerArn": http, "DefaultActions": weights(b, g) }),
        )
        .await;
        for _ in 0..10 {
            assert_eq!(
                get(addr, "/").await,
                (200, expect.to_string()),
                "weights {b}/{g}"
            );
        }
    }
    let l = aws
        .ok("describe_listeners", json!({ "ListenerArns": [http] }))
        .await;
    let tgs = &l["Listeners"][0]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"];
    assert_eq!(tgs[0]["Weight"], 100);
    assert_eq!(tgs[1]["Weight"], 0);
}

/// The idle timeout changed through the API applies to tunnels opened afterwards; an
/// open tunnel keeps the one it started with.
#[tokio::test]
async fn idle_timeout_from_the_api_applies_to_new_tunnels() {
    let pki = Pki::new();
    let mut target = raw_upgrade_target().await;
    let proxy = start_proxy(
        &pki,
        &config(
            &pki,
            &[target.addr],
            &[],
            "[load_balancer]\nidle_timeout = 1\n",
        )
        .replace(HEALTH_CHECK, "health_check = { enabled = false }")
        .replace(
            DEFAULT_ACTION,
            "default_action = { type = \"forward\", target_group = \"blue\" }",
        ),
    )
    .await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let lb = lb_arn(&mut aws).await;
    let addr = proxy.listener_addr(0);
    let (mut old_client, _old_server) = target.tunnel(addr).await;
    aws.ok(
        "modify_load_balancer_attributes",
        json!({ "LoadBalancerArn": lb, "Attributes": [
        { "Key": "idle_timeout.timeout_seconds", "Value": "3" } ] }),
    )
    .await;
    let (mut new_client, _new_server) = target.tunnel(addr).await;
    let opened = std::time::Instant::now();
    let mut buf = [0u8; 1];
    // The old tunnel closes after its 1 s of silence.
    let n = within("the old tunnel's idle close", old_client.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        opened.elapsed() < Duration::from_millis(2500),
        "closed at {:?}",
        opened.elapsed()
    );
    // The new one lives until its 3 s.
    let n = within("the new tunnel's idle close", new_client.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        opened.elapsed() >= Duration::from_millis(2800),
        "closed at {:?}",
        opened.elapsed()
    );
}

fn admin_config(extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{extra}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
{DEFAULT_ACTION}
"#
    )
}

/// A raw request to the admin listener: (status, whole response).
async fn admin_raw(admin: SocketAddr, request: &str) -> (u16, String) {
    let stream = TcpStream::connect(admin).await.unwrap();
    let resp = raw_exchange(stream, request.as_bytes()).await;
    (status_of(&resp), resp)
}

#[tokio::test]
async fn signatures_are_checked_when_credentials_are_set() {
    let pki = Pki::new();
    let proxy = start_proxy(
        &pki,
        &admin_config("credentials = { access_key_id = \"AKIDTEST\", secret_access_key = \"s3cret/key+value\" }"),
    )
    .await;
    let admin = proxy.admin_addr().unwrap();
    let Some(mut good) = Aws::start(admin, Some(("AKIDTEST", "s3cret/key+value"))).await else {
        return;
    };
    let lbs = good.ok("describe_load_balancers", json!({})).await;
    assert_eq!(lbs["LoadBalancers"][0]["LoadBalancerName"], "albatross");
    let arn = s(&lbs["LoadBalancers"][0]["LoadBalancerArn"]);
    // A signed change, and a signed GET with a query string (aws-cli).
    good.ok(
        "modify_load_balancer_attributes",
        json!({ "LoadBalancerArn": arn, "Attributes": [
        { "Key": "idle_timeout.timeout_seconds", "Value": "90" } ] }),
    )
    .await;
    let cli = good
        .cli(&[
            "elbv2",
            "describe-load-balancer-attributes",
            "--load-balancer-arn",
            &arn,
        ])
        .await
        .unwrap();
    assert!(cli["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["Value"] == "90"));
    // Stale: signed 20 minutes ago.
    let e = good
        .request(json!({ "stale": "describe_load_balancers" }))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.status),
        ("SignatureDoesNotMatch", Some(403)),
        "{e:?}"
    );
    assert!(e.message.contains("Signature expired"), "{}", e.message);

    let mut wrong_secret = Aws::start(admin, Some(("AKIDTEST", "not-the-secret")))
        .await
        .unwrap();
    let e = wrong_secret
        .fails(
            "describe_load_balancers",
            json!({}),
            "SignatureDoesNotMatch",
        )
        .await;
    assert_eq!(e.status, Some(403));
    let e = wrong_secret
        .cli(&["elbv2", "describe-load-balancers"])
        .await
        .unwrap_err();
    assert!(e.message.contains("SignatureDoesNotMatch"), "{e:?}");
    let mut unknown_key = Aws::start(admin, Some(("AKIDOTHER", "s3cret/key+value")))
        .await
        .unwrap();
    let e = unknown_key
        .fails("describe_load_balancers", json!({}), "InvalidClientTokenId")
        .await;
    assert_eq!(e.status, Some(403));
    assert_eq!(
        proxy.config().load_balancer.idle_timeout,
        Duration::from_secs(90),
        "refused calls changed nothing"
    );

    // Unsigned: 403 MissingAuthenticationToken; other paths want Basic auth.
    let body = "Action=DescribeLoadBalancers&Version=2015-12-01";
    let (status, resp) = admin_raw(admin, &format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())).await;
    assert_eq!(status, 403, "{resp}");
    assert!(
        resp.contains("<Code>MissingAuthenticationToken</Code>"),
        "{resp}"
    );
    let (status, resp) = admin_raw(
        admin,
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{resp}"
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("AKIDTEST:s3cret/key+value");
    let (status, resp) = admin_raw(admin, &format!(
        "POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn malformed_and_oversized_calls_get_clear_errors() {
    let pki = Pki::new();
    let proxy = start_proxy(&pki, &admin_config("")).await;
    let admin = proxy.admin_addr().unwrap();
    let post = |body: String| {
        format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    for (body, code, mention) in [
        ("Version=2015-12-01", "MissingAction", ""),
        (
            "Action=DescribeLoadBalancers&Version=2012-06-01",
            "InvalidAction",
            "",
        ),
        (
            "Action=CreateLoadBalancer&Version=2015-12-01",
            "InvalidAction",
            "",
        ),
        (
            "Action=DescribeTargetHealth&Version=2015-12-01&%ff%fe=%zz",
            "ValidationError",
            "targetGroupArn",
        ),
        (
            "Action=DescribeSSLPolicies&Version=2015-12-01&PageSize=0",
            "ValidationError",
            "pageSize",
        ),
    ] {
        let (status, resp) = admin_raw(admin, &post(body.into())).await;
        assert_eq!(status, 400, "{resp}");
        assert!(
            resp.contains(&format!("<Type>Sender</Type><Code>{code}</Code>")),
            "{resp}"
        );
        assert!(resp.contains(mention), "{resp}");
    }
    // GET with a query string is the Query protocol too.
    let (status, resp) = admin_raw(admin, "GET /?Action=DescribeLoadBalancers&Version=2015-12-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("<DescribeLoadBalancersResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">"), "{resp}");
    // A body over the limit is refused before it is read whole; a head over the limit too.
    let big = "a".repeat(albatross::admin::MAX_BODY + 1);
    let (status, _) = admin_raw(admin, &post(big)).await;
    assert_eq!(status, 413);
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(2 * albatross::admin::MAX_HEAD)
    );
    let (status, _) = admin_raw(admin, &long_header).await;
    assert_eq!(status, 431);
    // Unknown paths: 404; the admin listener still serves.
    let (status, _) = admin_raw(
        admin,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin_raw(
        admin,
        &post("Action=DescribeSSLPolicies&Version=2015-12-01".into()),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn post_reload_reads_the_file_again_and_names_its_errors() {
    let pki = Pki::new();
    let mut target = raw_upgrade_target().await;
    let path = pki.dir.path().join("albatross.toml");
    let target_addr = target.addr;
    let write = |body: &str| {
        let text = format!(
            "{}\n[[listener.rule]]\npriority = 5\nconditions = [ {{ path_pattern = [\"/ws\"] }} ]\naction = {{ type = \"forward\", target_group = \"t\" }}\n\n[[target_group]]\nname = \"t\"\ntargets = [\"{}\"]\nhealth_check = {{ enabled = false }}\n",
            admin_config("").replace("\"default\"", &format!("\"{body}\"")),
            target_addr
        );
        std::fs::write(&path, text).unwrap();
    };
    write("one");
    let proxy = albatross::Proxy::start_file(&path).await.unwrap();
    let admin = proxy.admin_addr().unwrap();
    let addr = proxy.listener_addr(0);
    assert_eq!(get(addr, "/").await, (200, "one".into()));
    let (mut client, mut server) = target.tunnel(addr).await;
    let reload =
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    write("two");
    let (status, resp) = admin_raw(admin, reload).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        body_of(&resp),
        "Configuration reloaded: 1 listeners, 1 rules, 1 target groups.\n"
    );
    assert_eq!(get(addr, "/").await, (200, "two".into()));

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("priority = 5", "priority = 0")
            .replace("port = 0\n", "port = 0\nbogus = 1\n"),
    )
    .unwrap();
    let (status, resp) = admin_raw(admin, reload).await;
    assert_eq!(status, 400, "{resp}");
    let errors: Vec<&str> = body_of(&resp).lines().collect();
    assert_eq!(errors.len(), 2, "one error per line: {resp}");
    let file = path.display().to_string();
    for e in &errors {
        assert!(e.starts_with(&format!("{file}:")), "FILE:LINE:COL: {e}");
    }
    assert!(errors.iter().any(|e| e.contains("bogus")), "{resp}");
    assert!(errors.iter().any(|e| e.contains("priority")), "{resp}");
    assert_eq!(
        get(addr, "/").await,
        (200, "two".into()),
        "the old config still serves"
    );

    // The tunnel opened before both reloads still echoes.
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("bytes at the target", server.read_exact(&mut buf))
        .await
        .unwrap();
    server.write_all(b"pong").await.unwrap();
    within("bytes at the client", client.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"pong");
}

/// 1,000 API changes while 100 clients send requests and 100 tunnels echo: no request
/// fails and no tunnel drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_changes_under_load_lose_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let pki = Pki::new();
    let blue = id_target("blue").await;
    let green = id_target("green").await;
    let text = config(&pki, &[blue.addr], &[green.addr], "")
        .replace(HEALTH_CHECK, "health_check = { enabled = false }")
        .replace(DEFAULT_ACTION, "default_action = { type = \"forward\", target_groups = [ { name = \"blue\", weight = 50 }, { name = \"green\", weight = 50 } ] }");
    let proxy = start_proxy(&pki, &text).await;
    let Some(mut aws) = client(&proxy).await else {
        return;
    };
    let addr = proxy.listener_addr(0);
    let lb = lb_arn(&mut aws).await;
    let http = listener_arns(&mut aws).await.remove(0);
    let blue_arn = tg_arn(&mut aws, "blue").await;
    let green_arn = tg_arn(&mut aws, "green").await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                stream
                    .write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
                let resp = read_response(&mut stream).await;
                if status_of(&resp) != 200 {
                    failed.lock().unwrap().push(resp);
                    return;
                }
                served.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let mut tunnels = Vec::new();
    for _ in 0..100 {
        let mut t = TcpStream::connect(addr).await.unwrap();
        t.write_all(upgrade_request("localhost", "/ws").as_bytes())
            .await
            .unwrap();
        let head = within("101", read_head(&mut t)).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        tunnels.push(t);
    }
    let echoes = async {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            for t in tunnels.iter_mut() {
                t.write_all(b"echo").await.unwrap();
                let mut buf = [0u8; 4];
                within("an echo during the changes", t.read_exact(&mut buf))
                    .await
                    .unwrap();
                assert_eq!(&buf, b"echo");
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rounds
    };
    let weights = |b: u32, g: u32| {
        json!({ "op": "modify_listener", "args": { "ListenerArn": http, "DefaultActions": [{ "Type": "forward", "ForwardConfig": { "TargetGroups": [
        { "TargetGroupArn": blue_arn, "Weight": b }, { "TargetGroupArn": green_arn, "Weight": g } ] } }] } })
    };
    let idle = |s: u32| {
        json!({ "op": "modify_load_balancer_attributes", "args": { "LoadBalancerArn": lb, "Attributes": [
        { "Key": "idle_timeout.timeout_seconds", "Value": s.to_string() } ] } })
    };
    let delay = |s: u32| {
        json!({ "op": "modify_target_group_attributes", "args": { "TargetGroupArn": green_arn, "Attributes": [
        { "Key": "deregistration_delay.timeout_seconds", "Value": s.to_string() } ] } })
    };
    let burst = json!({ "burst": [weights(30, 70), idle(61), delay(10), weights(70, 30), idle(60), delay(20)], "times": 1000 });
    let changes = async {
        let result = aws.request(burst).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        result
    };
    let (result, rounds) = tokio::join!(changes, echoes);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(result["calls"], 1000);
    assert_eq!(result["failures"], json!([]), "every API change applied");
    assert_eq!(
        failed.lock().unwrap().as_slice(),
        &[] as &[String],
        "no request failed"
    );
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "requests flowed during the changes"
    );
    assert!(rounds > 0);
    for t in tunnels.iter_mut() {
        t.write_all(b"last").await.unwrap();
        let mut buf = [0u8; 4];
        within("an echo after the changes", t.read_exact(&mut buf))
            .await
            .unwrap();
    }
    assert_eq!(proxy.tunnels().len(), 100, "no tunnel dropped");
}

/// The same changes from the Rust handle, for suites that embed albatross.
#[tokio::test]
async fn the_handle_makes_the_same_changes_in_process() {
    let pki = Pki::new();
    let t = id_target("t").await;
    let proxy = start_proxy(
        &pki,
        &config(&pki, &[], &[], "").replace(HEALTH_CHECK, "health_check = { enabled = false }"),
    )
    .await;
    proxy
        .modify_load_balancer_attributes(&[
            ("idle_timeout.timeout_seconds", "30"),
            ("routing.http.xff_client_port.enabled", "true"),
        ])
        .await
        .unwrap();
    let lb = proxy.config().load_balancer.clone();
    assert_eq!(
        (lb.idle_timeout, lb.xff_client_port),
        (Duration::from_secs(30), true)
    );
    proxy
        .modify_target_group_attributes("blue", &[("slow_start.duration_seconds", "30")])
        .await
        .unwrap();
    assert_eq!(
        proxy.config().target_groups[0].slow_start,
        Duration::from_secs(30)
    );
    let e = proxy
        .modify_target_group_attributes("blue", &[("slow_start.duration_seconds", "10")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");
    assert!(e.to_string().contains("between 30 and 900"), "{e}");
    let e = proxy
        .modify_target_group_attributes("nope", &[("slow_start.duration_seconds", "30")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "TargetGroupNotFound");
    proxy.register_target("blue", t.addr).unwrap();
    assert_eq!(get(proxy.listener_addr(0), "/api").await, (200, "t".into()));
    // A reload keeps the API registration, drops the API attribute changes.
    proxy.reload().await.unwrap();
    assert_eq!(
        proxy.config().load_balancer.idle_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(get(proxy.listener_addr(0), "/api").await, (200, "t".into()));
}
