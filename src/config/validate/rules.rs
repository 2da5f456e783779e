//! Listener rules: priority, conditions (ALB's per-kind value rules and per-rule limits)
//! and the three actions.

use std::time::Duration;

use toml::Spanned;

use super::{Cx, DurationRule, TargetGroupNames};
use crate::config::file::{
    ActionConfig, ConditionConfig, ForwardStickinessConfig, RuleConfig, StringOrInt,
    WeightedTargetGroupConfig,
};
use crate::config::model::{
    Action, Condition, FixedResponse, Forward, Protocol, Redirect, Rule, WeightedTargetGroup,
};

/// ALB: at most this many condition values in one rule (quota "condition values per rule").
const MAX_VALUES_PER_RULE: usize = 5;
/// ALB: at most this many `*`/`?` in one rule.
const MAX_WILDCARDS_PER_RULE: usize = 5;
/// ALB: longest condition value.
const MAX_VALUE_LEN: usize = 128;
/// ALB: at most this many target groups in one forward action.
const MAX_FORWARD_GROUPS: usize = 5;
/// Content types a fixed response may declare.
pub const FIXED_RESPONSE_CONTENT_TYPES: [&str; 5] = [
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

pub(super) fn rule(
    cx: &mut Cx<'_>,
    r: &Spanned<RuleConfig>,
    protocol: Option<Protocol>,
    port: Option<u16>,
    ids: &TargetGroupNames,
) -> Option<Rule> {
    let r = r.get_ref();
    let priority = cx.int_in(&r.priority, "priority", 1, 50_000);
    let conditions = conditions(cx, &r.conditions);
    let action = action(cx, &r.action, protocol, port, ids);
    Some(Rule {
        priority: priority? as u32,
        conditions: conditions?,
        action: action?,
    })
}

/// What the per-rule limits have counted so far.
#[derive(Default)]
struct RuleBudget {
    values: usize,
    wildcards: usize,
    single_kinds: Vec<&'static str>,
}

fn conditions(
    cx: &mut Cx<'_>,
    list: &Spanned<Vec<Spanned<ConditionConfig>>>,
) -> Option<Vec<Condition>> {
    if list.get_ref().is_empty() {
        cx.error(list.span(), "a rule needs at least one condition");
        return None;
    }
    let mut budget = RuleBudget::default();
    let mut ok = true;
    let mut out = Vec::new();
    for c in list.get_ref() {
        match condition(cx, c, &mut budget) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    if budget.values > MAX_VALUES_PER_RULE {
        cx.error(
            list.span(),
            format!(
                "a rule can hold at most {MAX_VALUES_PER_RULE} condition values in total (ALB's limit); this one has {}",
                budget.values
            ),
        );
        ok = false;
    }
    if budget.wildcards > MAX_WILDCARDS_PER_RULE {
        cx.error(
            list.span(),
            format!(
                "a rule can hold at most {MAX_WILDCARDS_PER_RULE} wildcard characters (`*`, `?`) in total (ALB's limit); this one has {}",
                budget.wildcards
            ),
        );
        ok = false;
    }
    ok.then_some(out)
}

fn condition(
    cx: &mut Cx<'_>,
    c: &Spanned<ConditionConfig>,
    budget: &mut RuleBudget,
) -> Option<Condition> {
    let cfg = c.get_ref();
    let mut kinds = Vec::new();
    if cfg.host_header.is_some() {
        kinds.push("host_header");
    }
    if cfg.path_pattern.is_some() {
        kinds.push("path_pattern");
    }
    if cfg.http_header.is_some() {
        kinds.push("http_header");
    }
    if cfg.http_request_method.is_some() {
        kinds.push("http_request_method");
    }
    if cfg.query_string.is_some() {
        kinds.push("query_string");
    }
    if cfg.source_ip.is_some() {
        kinds.push("source_ip");
    }
    match kinds.as_slice() {
        [] => {
            if cx.has_error_within(c.span()) {
                // an unknown key, already reported, is probably the misspelt kind
                return None;
            }
            cx.error(
                c.span(),
                "a condition needs one of host_header, path_pattern, http_header, http_request_method, query_string or source_ip",
            );
            return None;
        }
        [kind] => {
            if *kind != "http_header" && *kind != "query_string" {
                if budget.single_kinds.contains(kind) {
                    cx.error(
                        c.span(),
                        format!(
                            "a rule can have only one {kind} condition; put all values in one list"
                        ),
                    );
                    return None;
                }
                budget.single_kinds.push(kind);
            }
        }
        many => {
            cx.error(
                c.span(),
                format!(
                    "a condition has exactly one kind, this one has {}; write one condition per kind",
                    many.join(" and ")
                ),
            );
            return None;
        }
    }

    if let Some(v) = &cfg.host_header {
        let values = values(cx, v, "host_header", budget, check_host)?;
        return Some(Condition::HostHeader(values));
    }
    if let Some(v) = &cfg.path_pattern {
        return values(cx, v, "path_pattern", budget, check_path).map(Condition::PathPattern);
    }
    if let Some(v) = &cfg.http_request_method {
        return values(cx, v, "http_request_method", budget, check_method)
            .map(Condition::HttpRequestMethod);
    }
    if let Some(h) = &cfg.http_header {
        let h = h.get_ref();
        let name_ok = check_header_name(cx, &h.name);
        let vals = values(cx, &h.values, "http_header", budget, check_visible);
        return match (name_ok, vals) {
            (true, Some(values)) => Some(Condition::HttpHeader {
                name: h.name.get_ref().clone(),
                values,
            }),
            _ => None,
        };
    }
    if let Some(q) = &cfg.query_string {
        return query_string(cx, q, budget).map(Condition::QueryString);
    }
    if let Some(s) = &cfg.source_ip {
        return source_ip(cx, s, budget).map(Condition::SourceIp);
    }
    None
}

/// A list of string values, each checked by `check`; counts values and wildcards.
fn values(
    cx: &mut Cx<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    kind: &str,
    budget: &mut RuleBudget,
    check: fn(&str) -> Result<(), String>,
) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        cx.error(
            list.span(),
            format!("a {kind} condition needs at least one value"),
        );
        return None;
    }
    let mut ok = true;
    for v in list.get_ref() {
        budget.values += 1;
        if kind != "http_request_method" {
            budget.wildcards += wildcards(v.get_ref());
        }
        if let Err(e) = value_len(v.get_ref()).and_then(|_| check(v.get_ref())) {
            cx.error(v.span(), format!("{kind} value `{}`: {e}", v.get_ref()));
            ok = false;
        }
    }
    ok.then(|| list.get_ref().iter().map(|v| v.get_ref().clone()).collect())
}

fn wildcards(s: &str) -> usize {
    s.chars().filter(|c| *c == '*' || *c == '?').count()
}

fn value_len(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("a condition value cannot be empty".to_string());
    }
    if s.chars().count() > MAX_VALUE_LEN {
        return Err(format!(
            "a condition value is at most {MAX_VALUE_LEN} characters"
        ));
    }
    Ok(())
}

fn check_host(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?')))
    {
        return Err(format!(
            "`{c}` is not allowed; a host name holds letters, digits, `-`, `.` and the wildcards `*` and `?`"
        ));
    }
    let Some((_, tld)) = s.rsplit_once('.') else {
        return Err("a host name must contain at least one `.`".to_string());
    };
    if tld.is_empty()
        || !tld
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '*' || c == '?')
    {
        return Err("only letters may follow the last `.` of a host name".to_string());
    }
    Ok(())
}

fn check_path(s: &str) -> Result<(), String> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | '-' | '.' | '$' | '/' | '~' | '"' | '\'' | '@' | ':' | '+' | '&' | '*' | '?'
            )
    };
    match s.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!(
            "`{c}` is not allowed in a path pattern (allowed: letters, digits, _ - . $ / ~ \" ' @ : + & and the wildcards * ?)"
        )),
        None => Ok(()),
    }
}

fn check_method(s: &str) -> Result<(), String> {
    if s.chars().count() > 40 {
        return Err("a method is at most 40 characters".to_string());
    }
    match s.chars().find(|c| !(c.is_ascii_uppercase() || *c == '-' || *c == '_')) {
        Some(c) => Err(format!(
            "`{c}` is not allowed; a method holds upper-case letters, `-` and `_` (matching is case-sensitive)"
        )),
        None => Ok(()),
    }
}

/// Visible ASCII and space, as ALB allows in header and query values.
fn check_visible(s: &str) -> Result<(), String> {
    match s.chars().find(|c| !(' '..='~').contains(c)) {
        Some(c) => Err(format!(
            "{c:?} is not allowed; values hold visible ASCII characters"
        )),
        None => Ok(()),
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_header_name(cx: &mut Cx<'_>, name: &Spanned<String>) -> bool {
    let n = name.get_ref();
    let problem = if n.is_empty() {
        Some("cannot be empty".to_string())
    } else if n.chars().count() > 40 {
        Some("is at most 40 characters".to_string())
    } else if !n.chars().all(is_token_char) {
        Some("must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)".to_string())
    } else if n.eq_ignore_ascii_case("host") {
        Some("cannot be `Host`; use a host_header condition".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => {
            cx.error(name.span(), format!("the http_header name `{n}` {p}"));
            false
        }
        None => true,
    }
}

fn query_string(
    cx: &mut Cx<'_>,
    list: &Spanned<Vec<Spanned<crate::config::file::QueryStringPairConfig>>>,
    budget: &mut RuleBudget,
) -> Option<Vec<(Option<String>, String)>> {
    if list.get_ref().is_empty() {
        cx.error(
            list.span(),
            "a query_string condition needs at least one { key, value } pair",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for pair in list.get_ref() {
        let pair = pair.get_ref();
        budget.values += 1;
        let mut check = |v: &Spanned<String>, what: &str| {
            budget.wildcards += unescaped_wildcards(v.get_ref());
            if let Err(e) = value_len(v.get_ref()).and_then(|_| check_visible(v.get_ref())) {
                cx.error(
                    v.span(),
                    format!("query_string {what} `{}`: {e}", v.get_ref()),
                );
                false
            } else {
                true
            }
        };
        let key_ok = pair.key.as_ref().is_none_or(|k| check(k, "key"));
        let value_ok = check(&pair.value, "value");
        ok &= key_ok && value_ok;
        out.push((
            pair.key.as_ref().map(|k| k.get_ref().clone()),
            pair.value.get_ref().clone(),
        ));
    }
    ok.then_some(out)
}

/// Wildcards in a query value, where `\*` and `\?` are literal.
fn unescaped_wildcards(s: &str) -> usize {
    let mut n = 0;
    let mut escaped = false;
    for c in s.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '*' | '?' if !escaped => n += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    n
}

fn source_ip(
    cx: &mut Cx<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    budget: &mut RuleBudget,
) -> Option<Vec<ipnet::IpNet>> {
    if list.get_ref().is_empty() {
        cx.error(
            list.span(),
            "a source_ip condition needs at least one CIDR block",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for v in list.get_ref() {
        budget.values += 1;
        match v.get_ref().parse::<ipnet::IpNet>() {
            Ok(_) if v.get_ref() == "255.255.255.255/32" => {
                cx.error(
                    v.span(),
                    "source_ip `255.255.255.255/32` is not allowed by ALB",
                );
                ok = false;
            }
            Ok(net) => out.push(net),
            Err(_) => {
                cx.error(
                    v.span(),
                    format!(
                        "source_ip `{}` is not a CIDR block such as \"10.0.0.0/8\" or \"::1/128\"",
                        v.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// An action, checked against its `type` and the listener it is on.
pub(super) fn action(
    cx: &mut Cx<'_>,
    a: &Spanned<ActionConfig>,
    protocol: Option<Protocol>,
    port: Option<u16>,
    ids: &TargetGroupNames,
) -> Option<Action> {
    let cfg = a.get_ref();
    let kind = cfg.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "forward" => &["target_group", "target_groups", "stickiness"],
        "redirect" => &["protocol", "host", "port", "path", "query", "status_code"],
        "fixed_response" => &["status_code", "content_type", "message_body"],
        _ => {
            let hint = if kind == "fixed-response" {
                " (write fixed_response with an underscore)"
            } else {
                ""
            };
            cx.error(
                cfg.kind.span(),
                format!("action `type` must be forward, redirect or fixed_response (got `{kind}`){hint}"),
            );
            return None;
        }
    };
    let mut ok = true;
    for (key, span) in present_keys(cfg) {
        if !allowed.contains(&key) {
            cx.error(span, format!("`{key}` does not apply to a {kind} action"));
            ok = false;
        }
    }
    let action = match kind {
        "forward" => forward(cx, a, ids).map(Action::Forward),
        "redirect" => redirect(cx, a, protocol, port).map(Action::Redirect),
        _ => fixed_response(cx, a).map(Action::FixedResponse),
    };
    if ok {
        action
    } else {
        None
    }
}

/// The optional keys an action table sets, with the span of each value.
fn present_keys(a: &ActionConfig) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut add = |key, span: Option<std::ops::Range<usize>>| {
        if let Some(s) = span {
            out.push((key, s));
        }
    };
    add("target_group", a.target_group.as_ref().map(|v| v.span()));
    add("target_groups", a.target_groups.as_ref().map(|v| v.span()));
    add("stickiness", a.stickiness.as_ref().map(|v| v.span()));
    add("protocol", a.protocol.as_ref().map(|v| v.span()));
    add("host", a.host.as_ref().map(|v| v.span()));
    add("port", a.port.as_ref().map(|v| v.span()));
    add("path", a.path.as_ref().map(|v| v.span()));
    add("query", a.query.as_ref().map(|v| v.span()));
    add("status_code", a.status_code.as_ref().map(|v| v.span()));
    add("content_type", a.content_type.as_ref().map(|v| v.span()));
    add("message_body", a.message_body.as_ref().map(|v| v.span()));
    out
}

fn forward(cx: &mut Cx<'_>, a: &Spanned<ActionConfig>, ids: &TargetGroupNames) -> Option<Forward> {
    let cfg = a.get_ref();
    let stickiness = match &cfg.stickiness {
        Some(s) => forward_stickiness(cx, s.get_ref(), s.span()),
        None => Some(None),
    };
    let mut resolve = |cx: &mut Cx<'_>, name: &Spanned<String>| match ids.ids.get(name.get_ref()) {
        Some(id) => Some(*id),
        None if ids.unreadable.contains(name.get_ref()) => None,
        None => {
            cx.error(
                name.span(),
                format!("forward to undefined target group `{}`", name.get_ref()),
            );
            None
        }
    };
    let groups = match (&cfg.target_group, &cfg.target_groups) {
        (Some(one), None) => resolve(cx, one).map(|id| vec![WeightedTargetGroup { id, weight: 1 }]),
        (None, Some(many)) => weighted(cx, many, &mut resolve),
        (Some(one), Some(_)) => {
            cx.error(
                one.span(),
                "a forward action takes `target_group` or `target_groups`, not both",
            );
            None
        }
        (None, None) => {
            cx.error(
                a.span(),
                "a forward action needs `target_group = \"name\"` or `target_groups = [ { name, weight } ]`",
            );
            None
        }
    };
    Some(Forward {
        target_groups: groups?,
        stickiness: stickiness?,
    })
}

fn weighted(
    cx: &mut Cx<'_>,
    many: &Spanned<Vec<Spanned<WeightedTargetGroupConfig>>>,
    resolve: &mut impl FnMut(
        &mut Cx<'_>,
        &Spanned<String>,
    ) -> Option<crate::config::model::TargetGroupId>,
) -> Option<Vec<WeightedTargetGroup>> {
    let list = many.get_ref();
    if list.is_empty() || list.len() > MAX_FORWARD_GROUPS {
        cx.error(
            many.span(),
            format!(
                "a forward action names 1 to {MAX_FORWARD_GROUPS} target groups (got {})",
                list.len()
            ),
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for w in list {
        let w = w.get_ref();
        if names.contains(&w.name.get_ref().as_str()) {
            cx.error(
                w.name.span(),
                format!(
                    "target group `{}` is listed twice in this forward action",
                    w.name.get_ref()
                ),
            );
            ok = false;
        }
        names.push(w.name.get_ref());
        let id = resolve(cx, &w.name);
        let weight = match &w.weight {
            Some(v) => cx.int_in(v, "weight", 0, 999).map(|v| v as u16),
            None => Some(1),
        };
        match (id, weight) {
            (Some(id), Some(weight)) => out.push(WeightedTargetGroup { id, weight }),
            _ => ok = false,
        }
    }
    if ok && out.iter().all(|w| w.weight == 0) {
        cx.error(
            many.span(),
            "at least one target group of a forward action needs a weight above 0",
        );
        ok = false;
    }
    ok.then_some(out)
}

fn forward_stickiness(
    cx: &mut Cx<'_>,
    s: &ForwardStickinessConfig,
    span: std::ops::Range<usize>,
) -> Option<Option<Duration>> {
    let rule = DurationRule::new("duration", 86_400).range(1, 604_800);
    let enabled = s.enabled.unwrap_or(true);
    match &s.duration {
        Some(d) => {
            let d = cx.duration(Some(d), &rule)?;
            Some(enabled.then_some(d))
        }
        None if enabled => {
            cx.error(
                span,
                "forward stickiness needs a `duration` (1s to 7d) when enabled",
            );
            None
        }
        None => Some(None),
    }
}

fn redirect(
    cx: &mut Cx<'_>,
    a: &Spanned<ActionConfig>,
    listener_protocol: Option<Protocol>,
    listener_port: Option<u16>,
) -> Option<Redirect> {
    let cfg = a.get_ref();
    let mut ok = true;

    let protocol = cfg
        .protocol
        .as_ref()
        .map_or("#{protocol}".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &cfg.protocol {
        if !matches!(p.get_ref().as_str(), "HTTP" | "HTTPS" | "#{protocol}") {
            cx.error(
                p.span(),
                format!(
                    "redirect `protocol` must be HTTP, HTTPS or #{{protocol}} (got `{}`)",
                    p.get_ref()
                ),
            );
            ok = false;
        } else if p.get_ref() == "HTTP" && listener_protocol == Some(Protocol::Https) {
            cx.error(
                p.span(),
                "an HTTPS listener cannot redirect to HTTP (ALB forbids HTTPS to HTTP redirects)",
            );
            ok = false;
        }
    }

    let port = cfg
        .port
        .as_ref()
        .map_or("#{port}".to_string(), |p| p.get_ref().text());
    if let Some(p) = &cfg.port {
        let valid =
            port == "#{port}" || port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !valid || matches!(p.get_ref(), StringOrInt::Str(s) if s.starts_with('+')) {
            cx.error(
                p.span(),
                format!("redirect `port` must be 1 to 65535 or #{{port}} (got `{port}`)"),
            );
            ok = false;
        }
    }

    let host = cfg
        .host
        .as_ref()
        .map_or("#{host}".to_string(), |h| h.get_ref().clone());
    if let Some(h) = &cfg.host {
        ok &= component(cx, h, "host", 1, &["host"]);
    }
    let path = cfg
        .path
        .as_ref()
        .map_or("/#{path}".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &cfg.path {
        ok &= component(cx, p, "path", 1, &["host", "path", "port"]);
        if !p.get_ref().starts_with('/') {
            cx.error(p.span(), "redirect `path` must start with `/`");
            ok = false;
        }
    }
    let query = cfg
        .query
        .as_ref()
        .map_or("#{query}".to_string(), |q| q.get_ref().clone());
    if let Some(q) = &cfg.query {
        ok &= component(
            cx,
            q,
            "query",
            0,
            &["protocol", "host", "port", "path", "query"],
        );
        if q.get_ref().starts_with('?') {
            cx.error(
                q.span(),
                "redirect `query` is written without its leading `?`",
            );
            ok = false;
        }
    }

    let status_code = match &cfg.status_code {
        None => {
            cx.error(
                a.span(),
                "a redirect needs `status_code = \"HTTP_301\"` or `\"HTTP_302\"`",
            );
            None
        }
        Some(s) => {
            match s.get_ref() {
                StringOrInt::Str(t) if t == "HTTP_301" => Some(301),
                StringOrInt::Str(t) if t == "HTTP_302" => Some(302),
                other => {
                    cx.error(
                    s.span(),
                    format!("redirect `status_code` must be \"HTTP_301\" or \"HTTP_302\" (got `{}`)", other.text()),
                );
                    None
                }
            }
        }
    };

    let same_protocol =
        protocol == "#{protocol}" || listener_protocol.is_some_and(|p| p.to_string() == protocol);
    let same_port = port == "#{port}" || listener_port.is_some_and(|p| p.to_string() == port);
    if ok && same_protocol && same_port && host == "#{host}" && path == "/#{path}" {
        cx.error(
            a.span(),
            "a redirect must change at least one of protocol, host, port or path, or it would loop",
        );
        ok = false;
    }
    let status_code = status_code?;
    ok.then_some(Redirect {
        protocol,
        host,
        port,
        path,
        query,
        status_code,
    })
}

/// A redirect component: length 1..=128 (0.. for the query) and only the `#{…}` keywords
/// ALB allows there.
fn component(
    cx: &mut Cx<'_>,
    v: &Spanned<String>,
    key: &str,
    min: usize,
    keywords: &[&str],
) -> bool {
    let s = v.get_ref();
    let len = s.chars().count();
    if len < min || len > 128 {
        cx.error(
            v.span(),
            format!("redirect `{key}` must be {min} to 128 characters long"),
        );
        return false;
    }
    let mut rest = s.as_str();
    while let Some(start) = rest.find("#{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            cx.error(v.span(), format!("redirect `{key}` has an unclosed `#{{`"));
            return false;
        };
        let word = &after[..end];
        if !keywords.contains(&word) {
            let allowed: Vec<String> = keywords.iter().map(|k| format!("#{{{k}}}")).collect();
            cx.error(
                v.span(),
                format!(
                    "redirect `{key}` cannot use #{{{word}}}; it may use {}",
                    allowed.join(", ")
                ),
            );
            return false;
        }
        rest = &after[end + 1..];
    }
    true
}

fn fixed_response(cx: &mut Cx<'_>, a: &Spanned<ActionConfig>) -> Option<FixedResponse> {
    let cfg = a.get_ref();
    let mut ok = true;
    let status_code = match &cfg.status_code {
        None => {
            cx.error(
                a.span(),
                "a fixed_response needs a `status_code` (2XX, 4XX or 5XX)",
            );
            None
        }
        Some(s) => {
            let text = s.get_ref().text();
            let code = text
                .parse::<u16>()
                .ok()
                .filter(|c| text.len() == 3 && matches!(c / 100, 2 | 4 | 5));
            if code.is_none() {
                cx.error(
                    s.span(),
                    format!("fixed_response `status_code` must be a 2XX, 4XX or 5XX code (got `{text}`)"),
                );
            }
            code
        }
    };
    if let Some(ct) = &cfg.content_type {
        if !FIXED_RESPONSE_CONTENT_TYPES.contains(&ct.get_ref().as_str()) {
            cx.error(
                ct.span(),
                format!(
                    "fixed_response `content_type` must be one of {} (got `{}`)",
                    FIXED_RESPONSE_CONTENT_TYPES.join(", "),
                    ct.get_ref()
                ),
            );
            ok = false;
        }
    }
    if let Some(body) = &cfg.message_body {
        let n = body.get_ref().chars().count();
        if n > 1024 {
            cx.error(
                body.span(),
                format!("fixed_response `message_body` is at most 1024 characters (got {n})"),
            );
            ok = false;
        }
    }
    let status_code = status_code?;
    ok.then(|| FixedResponse {
        status_code,
        content_type: cfg.content_type.as_ref().map(|c| c.get_ref().clone()),
        message_body: cfg
            .message_body
            .as_ref()
            .map(|b| b.get_ref().clone())
            .unwrap_or_default(),
    })
}
