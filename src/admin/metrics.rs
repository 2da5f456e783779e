//! `GET /metrics`: CloudWatch's `AWS/ApplicationELB` metrics in Prometheus' text format
//! (OpenMetrics, through `prometheus-client`), named `albatross_` + the CloudWatch name
//! in snake case (counters end in `_total`), with CloudWatch's dimensions as labels:
//! `load_balancer` (`app/{name}/{id}`) everywhere, `target_group`
//! (`targetgroup/{name}/{id}`) on a group's series.
//!
//! The request path only adds to atomics (`observe`); what the running state already
//! knows (healthy hosts, open tunnels, connections in use) is read here, per scrape.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::arn::Arns;
use crate::control::Control;
use crate::target_group::HealthState;

/// The metrics of the running load balancer as of now, in Prometheus' text format.
pub fn render(control: &Control) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::take(control)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Labels = Vec<(&'static str, String)>;

/// One family: name (without `_total`), help, type, and its series.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, Value)>,
}

#[derive(Debug)]
enum Value {
    Count(u64),
    Gauge(i64),
    /// sum (seconds), count, each bucket's own count (the encoder accumulates).
    Histogram(f64, u64, Vec<(f64, u64)>),
}

/// Every number, read once per scrape.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Snapshot {
    fn take(control: &Control) -> Snapshot {
        let model = control.model();
        let runtime = control.runtime();
        let m = &runtime.metrics;
        let arns = Arns::new(&model.config.load_balancer);
        let lb = || -> Labels { vec![("load_balancer", arns.lb_dimension())] };
        let count = |c: &AtomicU64| Value::Count(c.load(Relaxed));
        let tunnels = runtime.tunnels.len() as u64;

        let mut in_flight = 0;
        let mut requests = vec![(lb(), count(&m.requests))];
        let mut target_codes = Vec::new();
        let mut response_time = Vec::new();
        let mut healthy = Vec::new();
        let mut unhealthy = Vec::new();
        let mut connection_errors = Vec::new();
        for g in &model.groups.groups {
            let arn = arns.target_group(&g.name);
            let dimension = arn
                .find("targetgroup/")
                .map_or(arn.as_str(), |i| &arn[i..])
                .to_string();
            let labels = || -> Labels {
                vec![
                    ("load_balancer", arns.lb_dimension()),
                    ("target_group", dimension.clone()),
                ]
            };
            let stats = &g.stats;
            let targets = g.targets();
            in_flight += targets.iter().map(|t| t.outstanding() as u64).sum::<u64>();
            // One read of each target's health, for both counts.
            let states: Vec<HealthState> = targets.iter().map(|t| t.health().state()).collect();
            let state_count = |s: HealthState| states.iter().filter(|&&x| x == s).count() as i64;
            healthy.push((labels(), Value::Gauge(state_count(HealthState::Healthy))));
            unhealthy.push((labels(), Value::Gauge(state_count(HealthState::Unhealthy))));
            requests.push((labels(), count(&stats.requests)));
            for (i, c) in stats.target_codes.iter().enumerate() {
                let mut l = labels();
                l.push(("class", format!("{}XX", i + 1)));
                target_codes.push((l, count(c)));
            }
            let (sum, n, buckets) = stats.response_time.snapshot();
            response_time.push((labels(), Value::Histogram(sum, n, buckets)));
            connection_errors.push((labels(), count(&stats.connection_errors)));
        }
        // A client connection serving HTTP, a tunnel's two sides, a target connection
        // idle in a pool or carrying a request.
        let active = m.active_client_connections.load(Relaxed)
            + tunnels
            + runtime.upstream.idle_count() as u64
            + in_flight;
        let elb_codes = m
            .elb_statuses()
            .into_iter()
            .map(|(code, n)| {
                let mut l = lb();
                l.push(("code", code.to_string()));
                (l, Value::Count(n))
            })
            .collect();
        let closed = runtime
            .tunnels
            .ended()
            .into_iter()
            .map(|(cause, n)| {
                let mut l = lb();
                l.push(("cause", cause.as_str().to_string()));
                (l, Value::Count(n))
            })
            .collect();

        let mut dropped = Vec::new();
        if let Some(l) = &model.logs.access {
            let mut labels = lb();
            labels.push(("log", "access".to_string()));
            dropped.push((labels, Value::Count(l.dropped())));
        }
        if let Some(l) = &model.logs.connection {
            let mut labels = lb();
            labels.push(("log", "connection".to_string()));
            dropped.push((labels, Value::Count(l.dropped())));
        }

        use MetricType::{Counter, Gauge, Histogram};
        let one = |v| vec![(lb(), v)];
        let family = |name, help, kind, series| Family {
            name,
            help,
            kind,
            series,
        };
        Snapshot(vec![
            family("albatross_request_count", "RequestCount: requests for which a target was chosen (series with target_group: that group's).", Counter, requests),
            family("albatross_new_connection_count", "NewConnectionCount: new TCP connections from clients and to targets.", Counter, one(Value::Count(m.new_connections.load(Relaxed) + runtime.upstream.connects()))),
            family("albatross_active_connection_count", "ActiveConnectionCount: TCP connections open now, from clients and to targets.", Gauge, one(Value::Gauge(active as i64))),
            family("albatross_rejected_connection_count", "RejectedConnectionCount: client connections refused at the connection limit.", Counter, one(count(&m.rejected_connections))),
            family("albatross_processed_bytes", "ProcessedBytes: bytes from and to clients (HTTP heads and bodies, tunnels), counted when a connection or tunnel ends.", Counter, one(Value::Count(m.processed_bytes.load(Relaxed) + runtime.tunnels.ended_bytes()))),
            family("albatross_client_tls_negotiation_error_count", "ClientTLSNegotiationErrorCount: client TLS handshakes that failed.", Counter, one(count(&m.client_tls_negotiation_errors))),
            family("albatross_httpcode_elb_count", "HTTPCode_ELB_{code}_Count: responses the load balancer made itself, by status code.", Counter, elb_codes),
            family("albatross_http_fixed_response_count", "HTTP_Fixed_Response_Count: fixed-response actions run.", Counter, one(count(&m.fixed_responses))),
            family("albatross_http_redirect_count", "HTTP_Redirect_Count: redirect actions run.", Counter, one(count(&m.redirects))),
            family("albatross_http_redirect_url_limit_exceeded_count", "HTTP_Redirect_Url_Limit_Exceeded_Count: redirects not served because their Location was longer than 8 K.", Counter, one(count(&m.redirect_url_limit_exceeded))),
            family("albatross_httpcode_target_count", "HTTPCode_Target_{class}_Count: responses targets made, by status class.", Counter, target_codes),
            family("albatross_target_response_time_seconds", "TargetResponseTime: from sending a request to a target to its response head.", Histogram, response_time),
            family("albatross_healthy_host_count", "HealthyHostCount: healthy targets of the group.", Gauge, healthy),
            family("albatross_unhealthy_host_count", "UnHealthyHostCount: unhealthy targets of the group.", Gauge, unhealthy),
            family("albatross_target_connection_error_count", "TargetConnectionErrorCount: connections to targets that could not be made.", Counter, connection_errors),
            family("albatross_active_tunnel_count", "WebSocket (upgraded) tunnels open now.", Gauge, one(Value::Gauge(tunnels as i64))),
            family("albatross_tunnel_closed_count", "Tunnels that ended, by cause.", Counter, closed),
            family("albatross_log_dropped_lines", "Log lines dropped because the log's queue was full (the disk did not keep up).", Counter, dropped),
        ])
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut family = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.series {
                let mut series = family.encode_family(labels)?;
                match value {
                    Value::Count(n) => {
                        series.encode_counter::<Labels, _, u64>(n, None)?;
                    }
                    Value::Gauge(n) => series.encode_gauge(n)?,
                    Value::Histogram(sum, count, buckets) => {
                        series.encode_histogram::<Labels>(*sum, *count, buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}
