//! The ELBv2 Query API (`Version=2015-12-01`), as aws-cli and boto3 speak it.
//!
//! Reads answer from the running model; changes edit the running config's document and
//! go through the control plane like a reload (validated whole by the config
//! validator, so a rule refused in a file is refused here with the same words), except
//! target registrations, which go to the target groups directly. `read` writes the
//! results, `change` makes the changes.

mod attributes;
mod change;
mod read;

pub use change::{modify_load_balancer_attributes, modify_target_group_attributes};
mod xml;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

use super::arn::Arns;
use super::query::{self, ApiError, Params};
use super::sigv4;
use crate::config::model::{Config, Credentials, Listener, Rule, TargetGroup};
use crate::control::Control;
use crate::proxy::Model;

/// The API's own state: when it started and the ids of rules whose id is not derived
/// from their priority (moved by SetRulePriorities, or created through the API).
pub struct Api {
    started: SystemTime,
    rule_ids: Mutex<RuleIds>,
}

/// Rule ids that are not derived, by (listener port, current priority). A reload makes
/// the file the running state again, and with it the derived ids.
#[derive(Default)]
struct RuleIds {
    reloads: u64,
    ids: HashMap<(u16, u32), String>,
}

impl Api {
    pub fn new() -> Api {
        Api {
            started: SystemTime::now(),
            rule_ids: Mutex::new(RuleIds::default()),
        }
    }

    /// Answer one API call (the request's parts and body, already read).
    pub async fn call(
        &self,
        control: &Control,
        parts: &http::request::Parts,
        body: &[u8],
        credentials: Option<&Credentials>,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let request_id = query::request_id();
        let (status, xml) = match self.answer(control, parts, body, credentials, now).await {
            Ok((action, result)) => (
                StatusCode::OK,
                query::response(&action, &result, &request_id),
            ),
            Err(e) => {
                tracing::debug!("API call refused: {e}");
                (
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    e.to_xml(&request_id),
                )
            }
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/xml")
            .header("x-amzn-RequestId", request_id)
            .body(Full::new(Bytes::from(xml)))
            .unwrap_or_default()
    }

    async fn answer(
        &self,
        control: &Control,
        parts: &http::request::Parts,
        body: &[u8],
        credentials: Option<&Credentials>,
        now: SystemTime,
    ) -> Result<(String, String), ApiError> {
        if let Some(credentials) = credentials {
            sigv4::verify(parts, body, credentials, now)?;
        }
        let params = Params::parse(parts.uri.query(), body);
        let action = params
            .get("Action")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                ApiError::sender(
                    "MissingAction",
                    "The request must contain the parameter Action.",
                )
            })?
            .to_string();
        match params.get("Version") {
            Some("2015-12-01") => {}
            Some(v) => {
                return Err(ApiError::sender(
                    "InvalidAction",
                    format!("Could not find operation {action} for version {v}."),
                ))
            }
            None => {
                return Err(ApiError::sender(
                    "MissingParameter",
                    "The request must contain the parameter Version.",
                ))
            }
        }
        let result = self.dispatch(control, &action, &params).await?;
        Ok((action, result))
    }

    async fn dispatch(
        &self,
        control: &Control,
        action: &str,
        p: &Params,
    ) -> Result<String, ApiError> {
        let view = || View::new(self, control);
        match action {
            "DescribeLoadBalancers" => read::load_balancers(&view(), p),
            "DescribeLoadBalancerAttributes" => read::load_balancer_attributes(&view(), p),
            "DescribeListeners" => read::listeners(&view(), p),
            "DescribeRules" => read::rules(&view(), p),
            "DescribeTargetGroups" => read::target_groups(&view(), p),
            "DescribeTargetGroupAttributes" => read::target_group_attributes(&view(), p),
            "DescribeTargetHealth" => read::target_health(&view(), p),
            "DescribeSSLPolicies" => read::ssl_policies(p),
            "DescribeTags" => read::tags(&view(), p),
            "RegisterTargets" => change::register_targets(&view(), p),
            "DeregisterTargets" => change::deregister_targets(&view(), p),
            "ModifyLoadBalancerAttributes" => {
                change::load_balancer_attributes(self, control, p).await
            }
            "ModifyListener" => change::listener(self, control, p).await,
            "CreateRule" => change::create_rule(self, control, p).await,
            "ModifyRule" => change::modify_rule(self, control, p).await,
            "DeleteRule" => change::delete_rule(self, control, p).await,
            "SetRulePriorities" => change::rule_priorities(self, control, p).await,
            "ModifyTargetGroupAttributes" => {
                change::target_group_attributes(self, control, p).await
            }
            "ModifyTargetGroup" => change::target_group(self, control, p).await,
            other => Err(ApiError::sender(
                "InvalidAction",
                format!(
                    "Could not find operation {other} for version 2015-12-01 (albatross \
                     implements the operations its README lists)."
                ),
            )),
        }
    }

    /// The id of the rule at `priority` on the listener on `port`.
    fn rule_id(&self, control: &Control, arns: &Arns, port: u16, priority: u32) -> String {
        let mut ids = lock(&self.rule_ids);
        let reloads = control.reloads();
        if ids.reloads != reloads {
            ids.ids.clear();
            ids.reloads = reloads;
        }
        ids.ids
            .get(&(port, priority))
            .cloned()
            .unwrap_or_else(|| arns.derived_rule_id(port, priority))
    }

    /// Record the ids of rules whose priority changed (`moves`: port, old priority, new
    /// priority) and of rules created (`created`: port, priority, id), after the change
    /// applied.
    fn note_rules(
        &self,
        control: &Control,
        arns: &Arns,
        moves: &[(u16, u32, u32)],
        created: Option<(u16, u32, String)>,
        deleted: Option<(u16, u32)>,
    ) {
        let old_ids: Vec<String> = moves
            .iter()
            .map(|&(port, from, _)| self.rule_id(control, arns, port, from))
            .collect();
        let mut ids = lock(&self.rule_ids);
        for &(port, from, _) in moves {
            ids.ids.remove(&(port, from));
        }
        for (&(port, _, to), id) in moves.iter().zip(old_ids) {
            ids.ids.insert((port, to), id);
        }
        if let Some((port, priority)) = deleted {
            ids.ids.remove(&(port, priority));
        }
        if let Some((port, priority, id)) = created {
            ids.ids.insert((port, priority), id);
        }
    }
}

/// One consistent look at the running state: the model and the listeners' ports.
struct View<'a> {
    api: &'a Api,
    control: &'a Control,
    model: Arc<Model>,
    /// The bound port of each listener, in config order (ARNs derive from it).
    ports: Vec<u16>,
    arns: Arns,
}

/// Which rule of a listener: one by priority, or the default rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleRef {
    Default,
    Priority(u32),
}

impl<'a> View<'a> {
    fn new(api: &'a Api, control: &'a Control) -> View<'a> {
        let model = control.model();
        let bound = control.listeners();
        let ports = model
            .config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| bound.get(i).map_or(l.port, |b| b.local_addr.port()))
            .collect();
        let arns = Arns::new(&model.config.load_balancer);
        View {
            api,
            control,
            model,
            ports,
            arns,
        }
    }

    fn config(&self) -> &Config {
        &self.model.config
    }

    fn listener_arn(&self, i: usize) -> String {
        self.arns.listener(self.ports[i])
    }

    /// The index of the listener `arn` names.
    fn listener_index(&self, arn: &str) -> Result<usize, ApiError> {
        let not_found =
            || ApiError::sender("ListenerNotFound", format!("Listener '{arn}' not found"));
        let id = self.arns.listener_id_of(arn).ok_or_else(not_found)?;
        self.ports
            .iter()
            .position(|&port| self.arns.listener_id(port) == id)
            .ok_or_else(not_found)
    }

    fn rule_id(&self, listener: usize, rule: RuleRef) -> String {
        let port = self.ports[listener];
        match rule {
            RuleRef::Default => self.arns.derived_rule_id(port, 0),
            RuleRef::Priority(p) => self.api.rule_id(self.control, &self.arns, port, p),
        }
    }

    fn rule_arn(&self, listener: usize, rule: RuleRef) -> String {
        self.arns
            .rule(self.ports[listener], &self.rule_id(listener, rule))
    }

    /// The listener and rule `arn` names.
    fn rule_of(&self, arn: &str) -> Result<(usize, RuleRef), ApiError> {
        let not_found = || {
            ApiError::sender(
                "RuleNotFound",
                format!("One or more rules not found: '{arn}'"),
            )
        };
        let (listener_id, rule_id) = self.arns.rule_ids_of(arn).ok_or_else(not_found)?;
        let li = self
            .ports
            .iter()
            .position(|&port| self.arns.listener_id(port) == listener_id)
            .ok_or_else(not_found)?;
        let listener = &self.config().listeners[li];
        std::iter::once(RuleRef::Default)
            .chain(listener.rules.iter().map(|r| RuleRef::Priority(r.priority)))
            .find(|&r| self.rule_id(li, r) == rule_id)
            .map(|r| (li, r))
            .ok_or_else(not_found)
    }

    fn rule(&self, listener: usize, priority: u32) -> Option<&Rule> {
        self.config().listeners[listener]
            .rules
            .iter()
            .find(|r| r.priority == priority)
    }

    fn listener(&self, i: usize) -> &Listener {
        &self.config().listeners[i]
    }

    /// The target group `arn` names.
    fn target_group(&self, arn: &str) -> Result<&TargetGroup, ApiError> {
        self.arns
            .target_group_name(arn)
            .and_then(|name| self.config().target_groups.iter().find(|g| g.name == name))
            .ok_or_else(|| target_group_not_found(arn))
    }

    fn check_load_balancer(&self, arn: &str) -> Result<(), ApiError> {
        if self.arns.is_load_balancer(arn) {
            Ok(())
        } else {
            Err(ApiError::sender(
                "LoadBalancerNotFound",
                format!("Load balancer '{arn}' not found"),
            ))
        }
    }
}

fn target_group_not_found(arn: &str) -> ApiError {
    ApiError::sender(
        "TargetGroupNotFound",
        format!("One or more target groups not found: '{arn}'"),
    )
}

/// One page of `items` by `Marker` and `PageSize` (at most `max`), and the marker of the
/// next page.
fn page<T>(items: Vec<T>, p: &Params, max: i64) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = p.int("PageSize", 1, max)?.unwrap_or(max) as usize;
    let start = match p.get("Marker") {
        None | Some("") => 0,
        Some(m) => decode_marker(m)
            .filter(|&n| n <= items.len())
            .ok_or_else(|| ApiError::validation(format!("The marker '{m}' is not valid.")))?,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| encode_marker(end));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

fn encode_marker(offset: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("albatross:{offset}"))
}

fn decode_marker(marker: &str) -> Option<usize> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(marker)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("albatross:")?
        .parse()
        .ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_markers_to_the_end() {
        let items: Vec<u32> = (0..5).collect();
        let p = Params::parse(Some("PageSize=2"), b"");
        let (first, next) = page(items.clone(), &p, 400).unwrap();
        assert_eq!(first, [0, 1]);
        let next = next.unwrap();
        let p = Params::parse(
            Some(&format!("PageSize=2&Marker={}", urlencode(&next))),
            b"",
        );
        let (second, next) = page(items.clone(), &p, 400).unwrap();
        assert_eq!(second, [2, 3]);
        let p = Params::parse(
            Some(&format!("PageSize=2&Marker={}", urlencode(&next.unwrap()))),
            b"",
        );
        let (third, next) = page(items.clone(), &p, 400).unwrap();
        assert_eq!((third, next), (vec![4], None));
        let bad = Params::parse(Some("Marker=nope"), b"");
        assert_eq!(
            page(items.clone(), &bad, 400).unwrap_err().code,
            "ValidationError"
        );
        let too_big = Params::parse(Some("PageSize=401"), b"");
        assert_eq!(
            page(items, &too_big, 400).unwrap_err().code,
            "ValidationError"
        );
    }

    fn urlencode(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }
}
