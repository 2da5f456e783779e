//! The Describe operations.

use std::net::{IpAddr, SocketAddr};

use super::{attributes, page, target_group_not_found, xml, RuleRef, View};
use crate::admin::query::{ApiError, Params, Xml};
use crate::config::model::TargetGroup;
use crate::target_group::TargetHealthDescription;

/// Page sizes the paginated operations accept (ALB: 1–400).
const MAX_PAGE: i64 = 400;

pub fn load_balancers(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let name = &v.config().load_balancer.name;
    let arns = p.list("LoadBalancerArns");
    let names = p.list("Names");
    if !arns.is_empty() && !names.is_empty() {
        return Err(ApiError::validation(
            "Load balancer names and load balancer ARNs cannot be specified at the same time",
        ));
    }
    if let Some(arn) = arns.iter().find(|a| !v.arns.is_load_balancer(a)) {
        return Err(ApiError::sender(
            "LoadBalancerNotFound",
            format!("One or more load balancers not found: '{arn}'"),
        ));
    }
    if let Some(n) = names.iter().find(|n| *n != name) {
        return Err(ApiError::sender(
            "LoadBalancerNotFound",
            format!("One or more load balancers not found: '{n}'"),
        ));
    }
    let (items, next) = page(vec![()], p, MAX_PAGE)?;
    let mut x = Xml::new();
    x.list("LoadBalancers", items, |x, ()| xml::load_balancer(x, v));
    x.leaf_opt("NextMarker", next.as_deref());
    Ok(x.finish())
}

fn attributes_xml(attrs: &[(&'static str, String)]) -> String {
    let mut x = Xml::new();
    x.list("Attributes", attrs, |x, (k, val)| {
        x.leaf("Key", k);
        x.leaf("Value", val);
    });
    x.finish()
}

pub fn load_balancer_attributes(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    v.check_load_balancer(p.required("LoadBalancerArn")?)?;
    Ok(attributes_xml(&attributes::load_balancer(v.config())))
}

/// The load balancer's attributes as a result document (for Modify, too).
pub fn load_balancer_attributes_of(v: &View<'_>) -> String {
    attributes_xml(&attributes::load_balancer(v.config()))
}

pub fn listeners(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let lb = p.get("LoadBalancerArn");
    let arns = p.list("ListenerArns");
    let chosen: Vec<usize> = match (lb, arns.is_empty()) {
        (Some(lb), true) => {
            v.check_load_balancer(lb)?;
            (0..v.ports.len()).collect()
        }
        (None, false) => arns
            .iter()
            .map(|a| v.listener_index(a))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::validation(
                "You must specify either listener ARNs or a load balancer ARN",
            ))
        }
    };
    let (items, next) = page(chosen, p, MAX_PAGE)?;
    Ok(listeners_xml(v, &items, next))
}

pub fn listeners_xml(v: &View<'_>, items: &[usize], next: Option<String>) -> String {
    let mut x = Xml::new();
    x.list("Listeners", items, |x, &i| xml::listener(x, v, i));
    x.leaf_opt("NextMarker", next.as_deref());
    x.finish()
}

pub fn rules(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let listener = p.get("ListenerArn");
    let arns = p.list("RuleArns");
    let chosen: Vec<(usize, RuleRef)> = match (listener, arns.is_empty()) {
        (Some(l), true) => {
            let li = v.listener_index(l)?;
            let l = v.listener(li);
            l.rules
                .iter()
                .map(|r| (li, RuleRef::Priority(r.priority)))
                .chain(std::iter::once((li, RuleRef::Default)))
                .collect()
        }
        (None, false) => arns
            .iter()
            .map(|a| v.rule_of(a))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::validation(
                "You must specify either listener ARN or rule ARNs",
            ))
        }
    };
    let (items, next) = page(chosen, p, MAX_PAGE)?;
    Ok(rules_xml(v, &items, next))
}

pub fn rules_xml(v: &View<'_>, items: &[(usize, RuleRef)], next: Option<String>) -> String {
    let mut x = Xml::new();
    x.list("Rules", items, |x, &(li, r)| xml::rule(x, v, li, r));
    x.leaf_opt("NextMarker", next.as_deref());
    x.finish()
}

pub fn target_groups(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let groups = &v.config().target_groups;
    let arns = p.list("TargetGroupArns");
    let names = p.list("Names");
    let chosen: Vec<&TargetGroup> = if let Some(lb) = p.get("LoadBalancerArn") {
        v.check_load_balancer(lb)?;
        groups.iter().filter(|g| in_use(v, &g.name)).collect()
    } else if !arns.is_empty() {
        arns.iter()
            .map(|a| v.target_group(a))
            .collect::<Result<_, _>>()?
    } else if !names.is_empty() {
        names
            .iter()
            .map(|n| {
                groups.iter().find(|g| g.name == *n).ok_or_else(|| {
                    ApiError::sender(
                        "TargetGroupNotFound",
                        format!("One or more target groups not found: '{n}'"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        groups.iter().collect()
    };
    let (items, next) = page(chosen, p, MAX_PAGE)?;
    Ok(target_groups_xml(v, &items, next))
}

fn in_use(v: &View<'_>, name: &str) -> bool {
    v.model
        .groups
        .by_name(name)
        .map(|g| g.in_use())
        .unwrap_or(false)
}

pub fn target_groups_xml(v: &View<'_>, items: &[&TargetGroup], next: Option<String>) -> String {
    let mut x = Xml::new();
    x.list("TargetGroups", items, |x, g| {
        xml::target_group(x, v, g, in_use(v, &g.name))
    });
    x.leaf_opt("NextMarker", next.as_deref());
    x.finish()
}

pub fn target_group_attributes(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let g = v.target_group(p.required("TargetGroupArn")?)?;
    Ok(attributes_xml(&attributes::target_group(g)))
}

/// A target group's attributes as a result document (for Modify, too).
pub fn target_group_attributes_of(g: &TargetGroup) -> String {
    attributes_xml(&attributes::target_group(g))
}

/// A target of a request, `Id` (an IP address) and `Port` (the group's when absent).
pub fn target_addr(g: &TargetGroup, t: &Params) -> Result<SocketAddr, ApiError> {
    let id = t.required("Id")?;
    let ip: IpAddr = id.parse().map_err(|_| {
        ApiError::sender(
            "InvalidTarget",
            format!(
                "The target Id '{id}' is not a valid IP address; albatross target groups \
                 have the 'ip' target type."
            ),
        )
    })?;
    let port = match t.int("Port", 1, 65535)? {
        Some(p) => p as u16,
        None => xml::target_group_port(g),
    };
    Ok(SocketAddr::new(ip, port))
}

pub fn target_health(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let g = v.target_group(arn)?;
    let state = v
        .model
        .groups
        .by_name(&g.name)
        .map_err(|_| target_group_not_found(arn))?;
    let asked = p.members("Targets");
    let descriptions: Vec<TargetHealthDescription> = if asked.is_empty() {
        state.describe()
    } else {
        asked
            .iter()
            .map(|t| target_addr(g, t).map(|a| state.describe_target(a)))
            .collect::<Result<_, _>>()?
    };
    let mut x = Xml::new();
    x.list("TargetHealthDescriptions", &descriptions, |x, d| {
        x.open("Target");
        x.leaf("Id", &d.target.to_string());
        x.leaf("Port", &d.port.to_string());
        x.close("Target");
        x.leaf("HealthCheckPort", &d.health_check_port.to_string());
        x.open("TargetHealth");
        x.leaf("State", d.state.as_str());
        x.leaf_opt("Reason", d.reason.map(|r| r.code()));
        x.leaf_opt("Description", d.description.as_deref());
        x.close("TargetHealth");
    });
    Ok(x.finish())
}

pub fn ssl_policies(p: &Params) -> Result<String, ApiError> {
    if let Some(t) = p.get("LoadBalancerType") {
        if t != "application" {
            return Err(ApiError::validation(format!(
                "albatross is an Application Load Balancer; it has no '{t}' security policies."
            )));
        }
    }
    let names = p.list("Names");
    let chosen: Vec<String> = if names.is_empty() {
        crate::tls::policy::ssl_policy_names().collect()
    } else {
        let known: Vec<String> = crate::tls::policy::ssl_policy_names().collect();
        names
            .iter()
            .map(|n| {
                known.iter().find(|k| k == n).cloned().ok_or_else(|| {
                    ApiError::sender(
                        "SSLPolicyNotFound",
                        format!("One or more SSL policies not found: '{n}'"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let (items, next) = page(chosen, p, MAX_PAGE)?;
    let mut x = Xml::new();
    x.list("SslPolicies", &items, |x, name| {
        let (protocols, ciphers) = crate::tls::policy::describe(name).unwrap_or_default();
        x.strings("SslProtocols", protocols);
        x.list("Ciphers", ciphers.iter().enumerate(), |x, (i, c)| {
            x.leaf("Name", c);
            x.leaf("Priority", &(i + 1).to_string());
        });
        x.leaf("Name", name);
        x.strings("SupportedLoadBalancerTypes", ["application"]);
    });
    x.leaf_opt("NextMarker", next.as_deref());
    Ok(x.finish())
}

pub fn tags(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let arns = p.list("ResourceArns");
    if arns.is_empty() {
        return Err(p.required("ResourceArns.member.1").unwrap_err());
    }
    for arn in &arns {
        if v.arns.is_load_balancer(arn) {
            continue;
        }
        if arn.contains(":targetgroup/") {
            v.target_group(arn)?;
        } else if arn.contains(":listener-rule/") {
            v.rule_of(arn)?;
        } else if arn.contains(":listener/") {
            v.listener_index(arn)?;
        } else {
            return Err(ApiError::sender(
                "LoadBalancerNotFound",
                format!("Load balancer '{arn}' not found"),
            ));
        }
    }
    let mut x = Xml::new();
    x.list("TagDescriptions", &arns, |x, arn| {
        x.leaf("ResourceArn", arn);
        x.open("Tags").close("Tags");
    });
    Ok(x.finish())
}
