//! The operations that change the load balancer.
//!
//! Registrations go to the target groups. Everything else edits the running config's
//! document and goes through [`Control::edit`]: the edited config is validated whole, by
//! the same validator as the file, and applied like a reload, or refused with nothing
//! changed. The edit resolves ARNs against the running state under the change lock, so
//! two calls at once cannot interleave.

use toml::{Table, Value};

use super::{attributes, read, RuleRef, View};
use crate::admin::arn::Arns;
use crate::admin::query::{ApiError, Params};
use crate::config::model::Config;
use crate::control::{ChangeError, Control, EditError};
use crate::target_group::{HealthState, TargetsError};

/// ALB's quota of targets per target group.
const MAX_TARGETS: usize = 1000;
/// ALB's quota of rules per load balancer (default rules not counted).
const MAX_RULES: usize = 100;

/// The group and targets a Register/DeregisterTargets call names, and the group's
/// targets now.
struct Asked<'a> {
    arn: &'a str,
    group: &'a crate::config::model::TargetGroup,
    addrs: Vec<std::net::SocketAddr>,
    current: std::sync::Arc<Vec<std::sync::Arc<crate::target_group::Target>>>,
}

fn asked_targets<'a>(v: &'a View<'_>, p: &'a Params) -> Result<Asked<'a>, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let group = v.target_group(arn)?;
    let asked = p.members("Targets");
    if asked.is_empty() {
        p.required("Targets.member.1.Id")?;
    }
    let addrs = asked
        .iter()
        .map(|t| read::target_addr(group, t))
        .collect::<Result<Vec<_>, _>>()?;
    let state = v
        .control
        .runtime()
        .targets
        .by_name(&group.name)
        .map_err(|e| targets_error(arn, e))?;
    Ok(Asked {
        arn,
        group,
        addrs,
        current: state.targets(),
    })
}

pub fn register_targets(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let Asked {
        arn,
        group: g,
        addrs,
        current,
    } = asked_targets(v, p)?;
    let targets = &v.control.runtime().targets;
    let new = addrs
        .iter()
        .filter(|a| !current.iter().any(|t| t.addr == **a))
        .count();
    if current.len() + new > MAX_TARGETS {
        return Err(ApiError::sender(
            "TooManyTargets",
            format!("You've reached the limit on the number of targets ({MAX_TARGETS}) per target group."),
        ));
    }
    // All or nothing: a target still draining refuses the whole call.
    if let Some(t) = current
        .iter()
        .find(|t| addrs.contains(&t.addr) && t.health().state() == HealthState::Draining)
    {
        return Err(targets_error(arn, TargetsError::Draining(t.addr)));
    }
    for a in addrs {
        targets
            .register(&g.name, a)
            .map_err(|e| targets_error(arn, e))?;
    }
    Ok(String::new())
}

pub fn deregister_targets(v: &View<'_>, p: &Params) -> Result<String, ApiError> {
    let Asked {
        arn,
        group: g,
        addrs,
        current,
    } = asked_targets(v, p)?;
    let targets = &v.control.runtime().targets;
    let missing: Vec<String> = addrs
        .iter()
        .filter(|a| !current.iter().any(|t| t.addr == **a))
        .map(|a| format!("Id={},Port={}", a.ip(), a.port()))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::sender(
            "InvalidTarget",
            format!(
                "The following targets are not registered in target group '{}': {}",
                g.name,
                missing.join("; ")
            ),
        ));
    }
    for a in addrs {
        targets
            .deregister(&g.name, a)
            .map_err(|e| targets_error(arn, e))?;
    }
    Ok(String::new())
}

fn targets_error(arn: &str, e: TargetsError) -> ApiError {
    match e {
        TargetsError::UnknownGroup(_) => super::target_group_not_found(arn),
        other => ApiError::sender("InvalidTarget", other.to_string()),
    }
}

/// Apply `edit` to the running config through the control plane.
async fn edit(
    control: &Control,
    edit: impl FnOnce(&mut Table, &Config) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    match control.edit(edit).await {
        Ok(_) => Ok(()),
        Err(EditError::Refused(e)) => Err(e),
        Err(EditError::Change(ChangeError::Config(errors))) => {
            let words: Vec<&str> = errors.0.iter().map(|e| e.message.as_str()).collect();
            Err(ApiError::validation(words.join(" ")))
        }
        Err(e) => Err(ApiError::sender(
            "InvalidConfigurationRequest",
            e.to_string(),
        )),
    }
}

/// `doc[key]` as a table, made when missing.
fn table<'a>(doc: &'a mut Table, key: &str) -> Result<&'a mut Table, ApiError> {
    doc.entry(key.to_string())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| malformed(key))
}

/// The `i`th `[[listener]]` table.
fn listener_table(doc: &mut Table, i: usize) -> Result<&mut Table, ApiError> {
    doc.get_mut("listener")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.get_mut(i))
        .and_then(Value::as_table_mut)
        .ok_or_else(|| malformed("listener"))
}

/// A listener's `[[listener.rule]]` tables.
fn rules_array(listener: &mut Table) -> Result<&mut Vec<Value>, ApiError> {
    listener
        .entry("rule")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| malformed("listener.rule"))
}

/// The position of the rule with `priority` among a listener's rule tables.
fn rule_position(rules: &[Value], priority: u32) -> Result<usize, ApiError> {
    rules
        .iter()
        .position(|r| r.get("priority").and_then(Value::as_integer) == Some(i64::from(priority)))
        .ok_or_else(|| malformed("listener.rule"))
}

/// The `[[target_group]]` table named `name`.
fn target_group_table<'a>(doc: &'a mut Table, name: &str) -> Result<&'a mut Table, ApiError> {
    doc.get_mut("target_group")
        .and_then(Value::as_array_mut)
        .and_then(|a| {
            a.iter_mut()
                .filter_map(Value::as_table_mut)
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        })
        .ok_or_else(|| malformed("target_group"))
}

/// The running document does not have the shape its own config had (it cannot happen
/// for a document that validated; said plainly rather than panicking).
fn malformed(key: &str) -> ApiError {
    ApiError::new(
        500,
        "InternalFailure",
        format!("The running configuration has no `{key}` where its model has one."),
    )
}

/// `Attributes.member.N.{Key,Value}`, at least one and at most `max`.
fn key_values(p: &Params, max: usize) -> Result<Vec<(String, String)>, ApiError> {
    let members = p.members("Attributes");
    if members.is_empty() {
        p.required("Attributes.member.1.Key")?;
    }
    if members.len() > max {
        return Err(ApiError::validation(format!(
            "At most {max} attributes can be given in one call."
        )));
    }
    members
        .iter()
        .map(|m| {
            Ok((
                m.required("Key")?.to_string(),
                m.get("Value").unwrap_or("").to_string(),
            ))
        })
        .collect()
}

pub async fn load_balancer_attributes(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    View::new(api, control).check_load_balancer(p.required("LoadBalancerArn")?)?;
    let attrs = key_values(p, 20)?;
    modify_load_balancer_attributes(control, &attrs).await?;
    Ok(read::load_balancer_attributes_of(&View::new(api, control)))
}

/// Set load balancer attributes (ALB's keys and values) on the running config.
pub async fn modify_load_balancer_attributes(
    control: &Control,
    attrs: &[(String, String)],
) -> Result<(), ApiError> {
    edit(control, |doc, config| {
        attributes::edit_load_balancer(config, table(doc, "load_balancer")?, attrs)
    })
    .await
}

/// Set the attributes (ALB's keys and values) of the target group named `name`.
pub async fn modify_target_group_attributes(
    control: &Control,
    name: &str,
    attrs: &[(String, String)],
) -> Result<(), ApiError> {
    edit(control, |doc, config| {
        let g = config
            .target_groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| {
                ApiError::sender(
                    "TargetGroupNotFound",
                    format!("There is no target group named '{name}'."),
                )
            })?;
        attributes::edit_target_group(g, target_group_table(doc, name)?, attrs)
    })
    .await
}

pub async fn listener(api: &super::Api, control: &Control, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("ListenerArn")?;
    let actions = p.members("DefaultActions");
    let ssl_policy = p.get("SslPolicy").map(str::to_string);
    let mut li = 0;
    edit(control, |doc, _| {
        let v = View::new(api, control);
        li = v.listener_index(arn)?;
        let l = v.listener(li);
        if let Some(port) = p.int("Port", 1, 65535)? {
            if port as u16 != v.ports[li] {
                return Err(file_only("a listener's port"));
            }
        }
        if let Some(protocol) = p.get("Protocol") {
            if protocol != l.protocol.to_string() {
                return Err(file_only("a listener's protocol"));
            }
        }
        if p.has("Certificates") {
            return Err(file_only("a listener's certificates"));
        }
        let default_action = if actions.is_empty() {
            None
        } else {
            Some(action_toml(&v, &actions)?)
        };
        if ssl_policy.is_some() && l.tls.is_none() {
            return Err(ApiError::validation(
                "An SSL policy can be set only on an HTTPS listener.",
            ));
        }
        let t = listener_table(doc, li)?;
        if let Some(a) = default_action {
            t.insert("default_action".into(), a);
        }
        if let Some(policy) = ssl_policy {
            if crate::tls::policy::describe(&policy).is_none() {
                return Err(ApiError::sender(
                    "SSLPolicyNotFound",
                    format!("SSL policy '{policy}' not found"),
                ));
            }
            t.insert("ssl_policy".into(), Value::String(policy));
        }
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    Ok(read::listeners_xml(&v, &[li], None))
}

fn file_only(what: &str) -> ApiError {
    ApiError::sender(
        "InvalidConfigurationRequest",
        format!(
            "albatross changes {what} through its config file (and a reload), not through the API."
        ),
    )
}

/// Rule transforms (host header and URL rewrites) are not run here: refused, not ignored.
fn no_transforms(p: &Params) -> Result<(), ApiError> {
    if p.has("Transforms") {
        return Err(ApiError::sender(
            "InvalidConfigurationRequest",
            "albatross does not run rule transforms (host header and URL rewrites).",
        ));
    }
    Ok(())
}

fn priority(p: &Params) -> Result<u32, ApiError> {
    p.required("Priority")?;
    Ok(p.int("Priority", 1, 50_000)?.unwrap_or(1) as u32)
}

pub async fn create_rule(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    no_transforms(p)?;
    let arn = p.required("ListenerArn")?;
    let priority = priority(p)?;
    let conditions = p.members("Conditions");
    let actions = p.members("Actions");
    if actions.is_empty() {
        p.required("Actions.member.1.Type")?;
    }
    let mut li = 0;
    edit(control, |doc, config| {
        let v = View::new(api, control);
        li = v.listener_index(arn)?;
        if v.rule(li, priority).is_some() {
            return Err(ApiError::sender(
                "PriorityInUse",
                format!("Priority '{priority}' is currently in use"),
            ));
        }
        let rules: usize = config.listeners.iter().map(|l| l.rules.len()).sum();
        if rules >= MAX_RULES {
            return Err(ApiError::sender(
                "TooManyRules",
                format!("You've reached the limit on the number of rules ({MAX_RULES}) per load balancer."),
            ));
        }
        let mut rule = Table::new();
        rule.insert("priority".into(), Value::Integer(i64::from(priority)));
        rule.insert("conditions".into(), conditions_toml(&conditions)?);
        rule.insert("action".into(), action_toml(&v, &actions)?);
        rules_array(listener_table(doc, li)?)?.push(Value::Table(rule));
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    let port = v.ports[li];
    api.note_rules(
        control,
        &v.arns,
        &[],
        Some((port, priority, Arns::random_rule_id())),
        None,
    );
    Ok(read::rules_xml(
        &v,
        &[(li, RuleRef::Priority(priority))],
        None,
    ))
}

pub async fn modify_rule(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    no_transforms(p)?;
    let arn = p.required("RuleArn")?;
    let conditions = p.members("Conditions");
    let actions = p.members("Actions");
    let mut found = (0, RuleRef::Default);
    edit(control, |doc, _| {
        let v = View::new(api, control);
        let (li, which) = v.rule_of(arn)?;
        found = (li, which);
        let RuleRef::Priority(priority) = which else {
            return Err(ApiError::sender(
                "OperationNotPermitted",
                "The default rule cannot be modified; change a listener's default actions with ModifyListener.",
            ));
        };
        let action = if actions.is_empty() {
            None
        } else {
            Some(action_toml(&v, &actions)?)
        };
        let conditions = if conditions.is_empty() {
            None
        } else {
            Some(conditions_toml(&conditions)?)
        };
        let rules = rules_array(listener_table(doc, li)?)?;
        let pos = rule_position(rules, priority)?;
        let rule = rules[pos].as_table_mut().ok_or_else(|| malformed("listener.rule"))?;
        if let Some(a) = action {
            rule.insert("action".into(), a);
        }
        if let Some(c) = conditions {
            rule.insert("conditions".into(), c);
        }
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    Ok(read::rules_xml(&v, &[found], None))
}

pub async fn delete_rule(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    let arn = p.required("RuleArn")?;
    let mut deleted = (0, 0);
    edit(control, |doc, _| {
        let v = View::new(api, control);
        let (li, which) = v.rule_of(arn)?;
        let RuleRef::Priority(priority) = which else {
            return Err(ApiError::sender(
                "OperationNotPermitted",
                "A default rule cannot be deleted.",
            ));
        };
        deleted = (v.ports[li], priority);
        let rules = rules_array(listener_table(doc, li)?)?;
        let pos = rule_position(rules, priority)?;
        rules.remove(pos);
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    api.note_rules(control, &v.arns, &[], None, Some(deleted));
    Ok(String::new())
}

pub async fn rule_priorities(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    let asked = p.members("RulePriorities");
    if asked.is_empty() {
        p.required("RulePriorities.member.1.RuleArn")?;
    }
    // (listener, old priority, new priority)
    let mut moves: Vec<(usize, u32, u32)> = Vec::new();
    edit(control, |doc, _| {
        let v = View::new(api, control);
        for a in &asked {
            let (li, which) = v.rule_of(a.required("RuleArn")?)?;
            let RuleRef::Priority(old) = which else {
                return Err(ApiError::sender(
                    "OperationNotPermitted",
                    "The default rule's priority cannot be changed.",
                ));
            };
            moves.push((li, old, priority(a)?));
        }
        // The priorities after the change must stay unique on each listener.
        for &(li, _, new) in &moves {
            let kept = v.listener(li).rules.iter().any(|r| {
                r.priority == new
                    && !moves
                        .iter()
                        .any(|&(l, old, _)| l == li && old == r.priority)
            });
            let twice = moves
                .iter()
                .filter(|&&(l, _, n)| l == li && n == new)
                .count()
                > 1;
            if kept || twice {
                return Err(ApiError::sender(
                    "PriorityInUse",
                    format!("Priority '{new}' is currently in use"),
                ));
            }
        }
        // Find every table first, then renumber: swaps must not see their own writes.
        let mut positions = Vec::with_capacity(moves.len());
        for &(li, old, _) in &moves {
            let rules = rules_array(listener_table(doc, li)?)?;
            positions.push(rule_position(rules, old)?);
        }
        for (&(li, _, new), pos) in moves.iter().zip(positions) {
            let rules = rules_array(listener_table(doc, li)?)?;
            if let Some(t) = rules[pos].as_table_mut() {
                t.insert("priority".into(), Value::Integer(i64::from(new)));
            }
        }
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    let by_port: Vec<(u16, u32, u32)> = moves
        .iter()
        .map(|&(li, old, new)| (v.ports[li], old, new))
        .collect();
    api.note_rules(control, &v.arns, &by_port, None, None);
    let items: Vec<(usize, RuleRef)> = moves
        .iter()
        .map(|&(li, _, new)| (li, RuleRef::Priority(new)))
        .collect();
    Ok(read::rules_xml(&v, &items, None))
}

pub async fn target_group_attributes(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let attrs = key_values(p, usize::MAX)?;
    let name = View::new(api, control).target_group(arn)?.name.clone();
    modify_target_group_attributes(control, &name, &attrs)
        .await
        .map_err(|e| match e.code {
            "TargetGroupNotFound" => super::target_group_not_found(arn),
            _ => e,
        })?;
    let v = View::new(api, control);
    Ok(read::target_group_attributes_of(v.target_group(arn)?))
}

pub async fn target_group(
    api: &super::Api,
    control: &Control,
    p: &Params,
) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let mut hc = Table::new();
    if let Some(v) = p.get("HealthCheckProtocol") {
        if v != "HTTP" && v != "HTTPS" {
            return Err(ApiError::validation(format!(
                "The health check protocol of an Application Load Balancer's target group must \
                 be HTTP or HTTPS; got '{v}'."
            )));
        }
        hc.insert("protocol".into(), Value::String(v.into()));
    }
    if let Some(v) = p.get("HealthCheckPort") {
        let port = if v == "traffic-port" {
            Value::String(v.into())
        } else {
            match v.parse::<u16>() {
                Ok(n) if n > 0 => Value::Integer(i64::from(n)),
                _ => {
                    return Err(ApiError::validation(format!(
                        "The health check port must be 'traffic-port' or a port from 1 to 65535; got '{v}'."
                    )))
                }
            }
        };
        hc.insert("port".into(), port);
    }
    if let Some(v) = p.get("HealthCheckPath") {
        if v.is_empty() || v.len() > 1024 {
            return Err(ApiError::validation(
                "The health check path must have 1 to 1024 characters.",
            ));
        }
        hc.insert("path".into(), Value::String(v.into()));
    }
    if let Some(v) = p.bool("HealthCheckEnabled")? {
        hc.insert("enabled".into(), Value::Boolean(v));
    }
    for (key, file_key, lo, hi) in [
        ("HealthCheckIntervalSeconds", "interval", 5, 300),
        ("HealthCheckTimeoutSeconds", "timeout", 2, 120),
        ("HealthyThresholdCount", "healthy_threshold", 2, 10),
        ("UnhealthyThresholdCount", "unhealthy_threshold", 2, 10),
    ] {
        if let Some(n) = p.int(key, lo, hi)? {
            hc.insert(file_key.into(), Value::Integer(n));
        }
    }
    if p.get("Matcher.GrpcCode").is_some() {
        return Err(ApiError::sender(
            "InvalidConfigurationRequest",
            "albatross target groups speak HTTP1; a gRPC matcher does not apply.",
        ));
    }
    if let Some(v) = p.get("Matcher.HttpCode") {
        hc.insert("matcher".into(), Value::String(v.into()));
    }
    let mut name = String::new();
    edit(control, |doc, _| {
        let v = View::new(api, control);
        let g = v.target_group(arn)?;
        name.clone_from(&g.name);
        let t = table(target_group_table(doc, &g.name)?, "health_check")?;
        t.extend(hc);
        Ok(())
    })
    .await?;
    let v = View::new(api, control);
    let g = v.target_group(arn)?;
    Ok(read::target_groups_xml(&v, &[g], None))
}

/// `Actions.member.N` as the file's action table.
fn action_toml(v: &View<'_>, actions: &[Params]) -> Result<Value, ApiError> {
    let [a] = actions else {
        return Err(if actions.is_empty() {
            ApiError::validation("At least one action must be given.")
        } else {
            ApiError::sender(
                "TooManyActions",
                "albatross runs one action per rule: forward, redirect or fixed-response.",
            )
        });
    };
    let mut t = Table::new();
    let s = |v: &str| Value::String(v.to_string());
    match a.required("Type")? {
        "forward" => {
            t.insert("type".into(), s("forward"));
            let forward = a.structure("ForwardConfig");
            let listed = forward.members("TargetGroups");
            let mut groups = Vec::new();
            if listed.is_empty() {
                let arn = a.required("TargetGroupArn")?;
                groups.push((v.target_group(arn)?.name.clone(), 1));
            } else {
                for g in &listed {
                    let name = v.target_group(g.required("TargetGroupArn")?)?.name.clone();
                    groups.push((name, g.int("Weight", 0, 999)?.unwrap_or(1)));
                }
            }
            let sticky = forward.structure("TargetGroupStickinessConfig");
            let sticky_on = sticky.bool("Enabled")?.unwrap_or(false);
            if groups.len() == 1 && !sticky_on && listed.is_empty() {
                t.insert("target_group".into(), s(&groups[0].0));
            } else {
                let list = groups
                    .into_iter()
                    .map(|(name, weight)| {
                        let mut g = Table::new();
                        g.insert("name".into(), Value::String(name));
                        g.insert("weight".into(), Value::Integer(weight));
                        Value::Table(g)
                    })
                    .collect();
                t.insert("target_groups".into(), Value::Array(list));
            }
            if sticky_on {
                let duration = sticky.int("DurationSeconds", 1, 604_800)?.ok_or_else(|| {
                    ApiError::validation(
                        "Target group stickiness needs 'DurationSeconds' when it is enabled.",
                    )
                })?;
                let mut st = Table::new();
                st.insert("enabled".into(), Value::Boolean(true));
                st.insert("duration".into(), Value::Integer(duration));
                t.insert("stickiness".into(), Value::Table(st));
            }
        }
        "redirect" => {
            t.insert("type".into(), s("redirect"));
            let r = a.structure("RedirectConfig");
            t.insert("status_code".into(), s(r.required("StatusCode")?));
            for (key, file_key) in [
                ("Protocol", "protocol"),
                ("Port", "port"),
                ("Host", "host"),
                ("Path", "path"),
                ("Query", "query"),
            ] {
                if let Some(val) = r.get(key) {
                    t.insert(file_key.into(), s(val));
                }
            }
        }
        "fixed-response" => {
            t.insert("type".into(), s("fixed_response"));
            let f = a.structure("FixedResponseConfig");
            t.insert("status_code".into(), s(f.required("StatusCode")?));
            if let Some(ct) = f.get("ContentType") {
                t.insert("content_type".into(), s(ct));
            }
            if let Some(body) = f.get("MessageBody") {
                t.insert("message_body".into(), s(body));
            }
        }
        other @ ("authenticate-oidc" | "authenticate-cognito" | "jwt-validation") => {
            return Err(ApiError::sender(
                "InvalidLoadBalancerAction",
                format!("albatross does not run the '{other}' action."),
            ))
        }
        other => {
            return Err(ApiError::validation(format!(
                "Value '{other}' at 'actions.1.member.type' failed to satisfy constraint: Member \
                 must satisfy enum value set: [forward, authenticate-oidc, authenticate-cognito, \
                 redirect, fixed-response, jwt-validation]"
            )))
        }
    }
    Ok(Value::Table(t))
}

/// `Conditions.member.N` as the file's condition tables.
fn conditions_toml(conditions: &[Params]) -> Result<Value, ApiError> {
    let strings = |values: Vec<&str>| {
        Value::Array(
            values
                .into_iter()
                .map(|v| Value::String(v.into()))
                .collect(),
        )
    };
    let mut out = Vec::with_capacity(conditions.len());
    for c in conditions {
        if c.has("RegexValues") {
            return Err(ApiError::sender(
                "InvalidConfigurationRequest",
                "albatross does not match regular expressions in conditions (RegexValues).",
            ));
        }
        let field = c.required("Field")?;
        // Each kind's values come in its own config, or in the older `Values`.
        let values = |config: &str| {
            let v = c.list(&format!("{config}.Values"));
            if v.is_empty() {
                c.list("Values")
            } else {
                v
            }
        };
        let mut t = Table::new();
        match field {
            "host-header" => {
                t.insert("host_header".into(), strings(values("HostHeaderConfig")));
            }
            "path-pattern" => {
                t.insert("path_pattern".into(), strings(values("PathPatternConfig")));
            }
            "http-request-method" => {
                t.insert(
                    "http_request_method".into(),
                    strings(values("HttpRequestMethodConfig")),
                );
            }
            "source-ip" => {
                t.insert("source_ip".into(), strings(values("SourceIpConfig")));
            }
            "http-header" => {
                let h = c.structure("HttpHeaderConfig");
                let mut inner = Table::new();
                inner.insert(
                    "name".into(),
                    Value::String(h.required("HttpHeaderName")?.into()),
                );
                inner.insert("values".into(), strings(h.list("Values")));
                t.insert("http_header".into(), Value::Table(inner));
            }
            "query-string" => {
                let pairs = c
                    .structure("QueryStringConfig")
                    .members("Values")
                    .iter()
                    .map(|m| {
                        let mut pair = Table::new();
                        if let Some(k) = m.get("Key") {
                            pair.insert("key".into(), Value::String(k.into()));
                        }
                        pair.insert(
                            "value".into(),
                            Value::String(m.get("Value").unwrap_or("").into()),
                        );
                        Value::Table(pair)
                    })
                    .collect();
                t.insert("query_string".into(), Value::Array(pairs));
            }
            other => {
                return Err(ApiError::validation(format!(
                    "Condition field '{other}' must be one of [http-header, http-request-method, \
                     host-header, path-pattern, query-string, source-ip]"
                )))
            }
        }
        out.push(Value::Table(t));
    }
    Ok(Value::Array(out))
}
