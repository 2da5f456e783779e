//! The running model in ELBv2's XML shapes: `LoadBalancer`, `Listener`, `Rule`,
//! `Action`, `RuleCondition`, `TargetGroup`.

use std::time::Duration;

use super::{RuleRef, View};
use crate::admin::query::Xml;
use crate::config::model::{
    Action, Condition, HealthCheckPort, Protocol, Rule, TargetGroup, TargetSpec,
};

/// ALB's hosted zone for load balancers in us-east-1 (the region does not change what
/// a local load balancer can be reached at).
const HOSTED_ZONE_ID: &str = "Z35SXDOTRQ7X7K";

/// Whole seconds, rounded up (a `"500ms"` timeout describes as 1).
pub fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "HTTP",
        Protocol::Https => "HTTPS",
    }
}

pub fn load_balancer(x: &mut Xml, v: &View<'_>) {
    let lb = &v.config().load_balancer;
    let internal = v.config().listeners.iter().all(|l| l.address.is_loopback());
    let id = v.arns.lb_dimension();
    let short_id = &id[id.len() - 8..];
    let dns = format!(
        "{}{}-{}.{}.elb.localhost",
        if internal { "internal-" } else { "" },
        lb.name,
        u32::from_str_radix(short_id, 16).unwrap_or(0),
        lb.region
    );
    x.leaf("LoadBalancerArn", &v.arns.load_balancer());
    x.leaf("DNSName", &dns);
    x.leaf("CanonicalHostedZoneId", HOSTED_ZONE_ID);
    x.leaf(
        "CreatedTime",
        &humantime::format_rfc3339_millis(v.api.started).to_string(),
    );
    x.leaf("LoadBalancerName", &lb.name);
    x.leaf(
        "Scheme",
        if internal {
            "internal"
        } else {
            "internet-facing"
        },
    );
    x.leaf("VpcId", &vpc_id(v));
    x.open("State").leaf("Code", "active").close("State");
    x.leaf("Type", "application");
    x.list("AvailabilityZones", ["a", "b"], |x, zone| {
        x.leaf("ZoneName", &format!("{}{zone}", lb.region));
        x.leaf("SubnetId", &format!("subnet-{}{zone}", &short_id));
        x.open("LoadBalancerAddresses")
            .close("LoadBalancerAddresses");
    });
    x.strings("SecurityGroups", [format!("sg-{short_id}").as_str()]);
    let dualstack = v.config().listeners.iter().any(|l| l.address.is_ipv6());
    x.leaf(
        "IpAddressType",
        if dualstack { "dualstack" } else { "ipv4" },
    );
}

fn vpc_id(v: &View<'_>) -> String {
    let id = v.arns.lb_dimension();
    format!("vpc-{}", &id[id.len() - 16..id.len() - 8])
}

pub fn listener(x: &mut Xml, v: &View<'_>, i: usize) {
    let l = v.listener(i);
    x.leaf("ListenerArn", &v.listener_arn(i));
    x.leaf("LoadBalancerArn", &v.arns.load_balancer());
    x.leaf("Port", &v.ports[i].to_string());
    x.leaf("Protocol", protocol(l.protocol));
    if let Some(tls) = &l.tls {
        x.list("Certificates", tls.certificates.first(), |x, c| {
            x.leaf(
                "CertificateArn",
                &certificate_arn(v, &c.cert.to_string_lossy()),
            );
        });
        x.leaf("SslPolicy", &tls.ssl_policy);
    }
    x.list("DefaultActions", [&l.default_action], |x, a| {
        action(x, v, a)
    });
    if let Some(tls) = &l.tls {
        let m = &tls.mutual_authentication;
        x.open("MutualAuthentication").leaf("Mode", m.mode.as_str());
        if let Some(store) = &m.trust_store {
            let stem = store
                .file_stem()
                .map_or_else(|| "truststore".into(), |s| s.to_string_lossy());
            x.leaf("TrustStoreArn", &v.arns.trust_store(&stem))
                .leaf(
                    "IgnoreClientCertificateExpiry",
                    if m.ignore_client_certificate_expiry {
                        "true"
                    } else {
                        "false"
                    },
                )
                .leaf("AdvertiseTrustStoreCaNames", "off");
        }
        x.close("MutualAuthentication");
    }
}

/// A stable ACM-shaped ARN for a certificate file.
pub fn certificate_arn(v: &View<'_>, path: &str) -> String {
    let lb = &v.config().load_balancer;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, path.as_bytes());
    let h: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "arn:aws:acm:{}:{}:certificate/{}-{}-{}-{}-{}",
        lb.region,
        lb.account_id,
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn action(x: &mut Xml, v: &View<'_>, a: &Action) {
    let tg_arn = |id| v.arns.target_group(&v.config().target_group(id).name);
    match a {
        Action::Forward(f) => {
            x.leaf("Type", "forward");
            if let [only] = f.target_groups.as_slice() {
                x.leaf("TargetGroupArn", &tg_arn(only.id));
            }
            x.leaf("Order", "1");
            x.open("ForwardConfig");
            x.list("TargetGroups", &f.target_groups, |x, g| {
                x.leaf("TargetGroupArn", &tg_arn(g.id));
                x.leaf("Weight", &g.weight.to_string());
            });
            x.open("TargetGroupStickinessConfig");
            x.leaf(
                "Enabled",
                if f.stickiness.is_some() {
                    "true"
                } else {
                    "false"
                },
            );
            if let Some(d) = f.stickiness {
                x.leaf("DurationSeconds", &seconds(d).to_string());
            }
            x.close("TargetGroupStickinessConfig");
            x.close("ForwardConfig");
        }
        Action::Redirect(r) => {
            x.leaf("Type", "redirect");
            x.leaf("Order", "1");
            x.open("RedirectConfig");
            x.leaf("Protocol", &r.protocol);
            x.leaf("Port", &r.port);
            x.leaf("Host", &r.host);
            x.leaf("Path", &r.path);
            x.leaf("Query", &r.query);
            x.leaf("StatusCode", &format!("HTTP_{}", r.status_code));
            x.close("RedirectConfig");
        }
        Action::FixedResponse(f) => {
            x.leaf("Type", "fixed-response");
            x.leaf("Order", "1");
            x.open("FixedResponseConfig");
            x.leaf("MessageBody", &f.message_body);
            x.leaf("StatusCode", &f.status_code.to_string());
            x.leaf_opt("ContentType", f.content_type.as_deref());
            x.close("FixedResponseConfig");
        }
    }
}

pub fn rule(x: &mut Xml, v: &View<'_>, li: usize, which: RuleRef) {
    x.leaf("RuleArn", &v.rule_arn(li, which));
    match which {
        RuleRef::Default => {
            x.leaf("Priority", "default");
            x.open("Conditions").close("Conditions");
            x.list("Actions", [&v.listener(li).default_action], |x, a| {
                action(x, v, a)
            });
            x.leaf("IsDefault", "true");
        }
        RuleRef::Priority(p) => {
            let Some(r) = v.rule(li, p) else { return };
            rule_body(x, v, r);
        }
    }
}

fn rule_body(x: &mut Xml, v: &View<'_>, r: &Rule) {
    x.leaf("Priority", &r.priority.to_string());
    x.list("Conditions", &r.conditions, condition);
    x.list("Actions", [&r.action], |x, a| action(x, v, a));
    x.leaf("IsDefault", "false");
}

pub fn condition(x: &mut Xml, c: &Condition) {
    let values = |x: &mut Xml, field: &str, config: &str, values: &[String]| {
        x.leaf("Field", field);
        x.strings("Values", values.iter().map(String::as_str));
        x.open(config);
        x.strings("Values", values.iter().map(String::as_str));
        x.close(config);
    };
    match c {
        Condition::HostHeader(v) => values(x, "host-header", "HostHeaderConfig", v),
        Condition::PathPattern(v) => values(x, "path-pattern", "PathPatternConfig", v),
        Condition::HttpRequestMethod(v) => {
            x.leaf("Field", "http-request-method");
            x.open("HttpRequestMethodConfig");
            x.strings("Values", v.iter().map(String::as_str));
            x.close("HttpRequestMethodConfig");
        }
        Condition::HttpHeader { name, values } => {
            x.leaf("Field", "http-header");
            x.open("HttpHeaderConfig");
            x.leaf("HttpHeaderName", name);
            x.strings("Values", values.iter().map(String::as_str));
            x.close("HttpHeaderConfig");
        }
        Condition::QueryString(pairs) => {
            x.leaf("Field", "query-string");
            x.open("QueryStringConfig");
            x.list("Values", pairs, |x, (k, val)| {
                x.leaf_opt("Key", k.as_deref());
                x.leaf("Value", val);
            });
            x.close("QueryStringConfig");
        }
        Condition::SourceIp(nets) => {
            let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            x.leaf("Field", "source-ip");
            x.open("SourceIpConfig");
            x.strings("Values", nets.iter().map(String::as_str));
            x.close("SourceIpConfig");
        }
    }
}

/// The port a target group describes with (ALB's `Port`): its first target's, else the
/// protocol's.
pub fn target_group_port(g: &TargetGroup) -> u16 {
    g.targets
        .iter()
        .map(|t| match t {
            TargetSpec::Addr(a) => a.port(),
            TargetSpec::Dns { port, .. } => *port,
        })
        .next()
        .unwrap_or(match g.protocol {
            Protocol::Http => 80,
            Protocol::Https => 443,
        })
}

/// A health-check matcher as ALB writes it: `200`, `200,202`, `200-299`.
pub fn matcher(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn target_group(x: &mut Xml, v: &View<'_>, g: &TargetGroup, in_use: bool) {
    let hc = &g.health_check;
    x.leaf("TargetGroupArn", &v.arns.target_group(&g.name));
    x.leaf("TargetGroupName", &g.name);
    x.leaf("Protocol", protocol(g.protocol));
    x.leaf("Port", &target_group_port(g).to_string());
    x.leaf("VpcId", &vpc_id(v));
    x.leaf("HealthCheckProtocol", protocol(hc.protocol));
    x.leaf(
        "HealthCheckPort",
        &match hc.port {
            HealthCheckPort::TrafficPort => "traffic-port".to_string(),
            HealthCheckPort::Port(p) => p.to_string(),
        },
    );
    x.leaf(
        "HealthCheckEnabled",
        if hc.enabled { "true" } else { "false" },
    );
    x.leaf(
        "HealthCheckIntervalSeconds",
        &seconds(hc.interval).to_string(),
    );
    x.leaf(
        "HealthCheckTimeoutSeconds",
        &seconds(hc.timeout).to_string(),
    );
    x.leaf("HealthyThresholdCount", &hc.healthy_threshold.to_string());
    x.leaf(
        "UnhealthyThresholdCount",
        &hc.unhealthy_threshold.to_string(),
    );
    x.leaf("HealthCheckPath", &hc.path);
    x.open("Matcher")
        .leaf("HttpCode", &matcher(&hc.matcher))
        .close("Matcher");
    let lb = v.arns.load_balancer();
    x.strings("LoadBalancerArns", in_use.then_some(lb.as_str()));
    x.leaf("TargetType", "ip");
    x.leaf("ProtocolVersion", "HTTP1");
    x.leaf("IpAddressType", "ipv4");
}
