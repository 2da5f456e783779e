//! ALB's ARNs, with ids derived from names so they stay the same across restarts and
//! reloads: the load balancer's from its name, a target group's from its name, a
//! listener's from its port, a rule's from its listener and the priority it had when it
//! was created (rules created through the API get a random id instead). The API, the
//! metrics and the access log all name things with these.

use crate::config::model::LoadBalancer;

/// Builds and reads the ARNs of one load balancer.
#[derive(Debug, Clone)]
pub struct Arns {
    prefix: String,
    name: String,
    lb_id: String,
}

impl Arns {
    pub fn new(lb: &LoadBalancer) -> Arns {
        Arns {
            prefix: format!(
                "arn:aws:elasticloadbalancing:{}:{}:",
                lb.region, lb.account_id
            ),
            name: lb.name.clone(),
            lb_id: id16(&["loadbalancer", &lb.name]),
        }
    }

    /// `app/{name}/{id}`, the load balancer's CloudWatch dimension.
    pub fn lb_dimension(&self) -> String {
        format!("app/{}/{}", self.name, self.lb_id)
    }

    pub fn load_balancer(&self) -> String {
        format!("{}loadbalancer/{}", self.prefix, self.lb_dimension())
    }

    pub fn target_group(&self, name: &str) -> String {
        format!(
            "{}targetgroup/{name}/{}",
            self.prefix,
            id16(&["targetgroup", name])
        )
    }

    /// The trust store read from the file named `stem` (`truststore/{stem}/{id}`).
    pub fn trust_store(&self, stem: &str) -> String {
        format!(
            "{}truststore/{stem}/{}",
            self.prefix,
            id16(&["truststore", stem])
        )
    }

    /// The id of the listener on `port`.
    pub fn listener_id(&self, port: u16) -> String {
        id16(&["listener", &port.to_string()])
    }

    pub fn listener(&self, port: u16) -> String {
        format!(
            "{}listener/{}/{}",
            self.prefix,
            self.lb_dimension(),
            self.listener_id(port)
        )
    }

    /// The derived id of the rule created with `priority` on the listener on `port`.
    pub fn derived_rule_id(&self, port: u16, priority: u32) -> String {
        id16(&["rule", &port.to_string(), &priority.to_string()])
    }

    pub fn rule(&self, port: u16, rule_id: &str) -> String {
        format!(
            "{}listener-rule/{}/{}/{rule_id}",
            self.prefix,
            self.lb_dimension(),
            self.listener_id(port)
        )
    }

    /// The target group name in one of this load balancer's target group ARNs.
    pub fn target_group_name<'a>(&self, arn: &'a str) -> Option<&'a str> {
        let rest = arn
            .strip_prefix(&self.prefix)?
            .strip_prefix("targetgroup/")?;
        let (name, id) = rest.split_once('/')?;
        (id == id16(&["targetgroup", name])).then_some(name)
    }

    /// Whether `arn` is this load balancer's.
    pub fn is_load_balancer(&self, arn: &str) -> bool {
        arn == self.load_balancer()
    }

    /// The listener id in one of this load balancer's listener ARNs.
    pub fn listener_id_of<'a>(&self, arn: &'a str) -> Option<&'a str> {
        let rest = arn
            .strip_prefix(&self.prefix)?
            .strip_prefix("listener/")?
            .strip_prefix(&self.lb_dimension())?
            .strip_prefix('/')?;
        (!rest.contains('/')).then_some(rest)
    }

    /// The listener id and rule id in one of this load balancer's rule ARNs.
    pub fn rule_ids_of<'a>(&self, arn: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = arn
            .strip_prefix(&self.prefix)?
            .strip_prefix("listener-rule/")?
            .strip_prefix(&self.lb_dimension())?
            .strip_prefix('/')?;
        let (listener, rule) = rest.split_once('/')?;
        (!rule.contains('/')).then_some((listener, rule))
    }

    /// A fresh random rule id (for rules created through the API).
    pub fn random_rule_id() -> String {
        let b: [u8; 8] = rand::random();
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// 16 hex digits derived from `parts` (SHA-256).
fn id16(parts: &[&str]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(b"/");
    }
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_have_albs_shapes_and_read_back() {
        let lb = LoadBalancer::default();
        let arns = Arns::new(&lb);
        let lb_arn = arns.load_balancer();
        assert!(lb_arn.starts_with(
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/albatross/"
        ));
        assert_eq!(lb_arn.rsplit('/').next().unwrap().len(), 16);
        assert_eq!(
            arns.load_balancer(),
            Arns::new(&lb).load_balancer(),
            "stable"
        );

        let tg = arns.target_group("app");
        assert!(tg.contains(":targetgroup/app/"), "{tg}");
        assert_eq!(arns.target_group_name(&tg), Some("app"));
        assert_eq!(
            arns.target_group_name(&tg.replace("/app/", "/other/")),
            None
        );

        let l = arns.listener(8443);
        assert_eq!(
            arns.listener_id_of(&l),
            Some(arns.listener_id(8443).as_str())
        );
        let r = arns.rule(8443, &arns.derived_rule_id(8443, 10));
        let (lid, rid) = arns.rule_ids_of(&r).unwrap();
        assert_eq!(lid, arns.listener_id(8443));
        assert_eq!(rid, arns.derived_rule_id(8443, 10));
        assert_ne!(
            arns.derived_rule_id(8443, 10),
            arns.derived_rule_id(8443, 20)
        );
    }
}
