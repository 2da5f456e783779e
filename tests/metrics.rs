//! `GET /metrics`: CloudWatch's metrics in Prometheus' text format, parsed by a
//! Prometheus text parser, each moving with the traffic that should move it.

mod support;

use std::net::SocketAddr;

use albatross::ProxyHandle;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(app: SocketAddr, refused: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 1
conditions = [ {{ path_pattern = ["/fixed"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "fixed" }}

[[listener.rule]]
priority = 2
conditions = [ {{ path_pattern = ["/moved"] }} ]
action = {{ type = "redirect", path = "/elsewhere", status_code = "HTTP_302" }}

[[listener.rule]]
priority = 3
conditions = [ {{ path_pattern = ["/broken"] }} ]
action = {{ type = "forward", target_group = "broken" }}

[[listener.rule]]
priority = 4
conditions = [ {{ path_pattern = ["/empty"] }} ]
action = {{ type = "forward", target_group = "empty" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]
health_check = {{ path = "/health", interval = "100ms", timeout = "50ms", healthy_threshold = 2, unhealthy_threshold = 2 }}

[[target_group]]
name = "broken"
targets = [ "{refused}" ]
health_check = {{ enabled = false }}

[[target_group]]
name = "empty"
"#
    )
}

type Labels = Vec<(String, String)>;

/// Every sample of a scrape: (name, labels, value).
struct Scrape(Vec<(String, Labels, f64)>);

impl Scrape {
    async fn of(proxy: &ProxyHandle) -> Scrape {
        let stream = TcpStream::connect(proxy.admin_addr().unwrap())
            .await
            .unwrap();
        let resp = raw_exchange(
            stream,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&resp), 200, "{resp}");
        let text = body_of(&resp);
        assert!(
            text.trim_end().ends_with("# EOF"),
            "OpenMetrics text ends with # EOF"
        );
        let parsed =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let samples = parsed
            .samples
            .into_iter()
            .flat_map(|s| {
                let labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => vec![(s.metric, labels, v)],
                    prometheus_parse::Value::Histogram(buckets) => buckets
                        .into_iter()
                        .map(|b| {
                            let mut l = labels.clone();
                            l.push(("le".into(), b.less_than.to_string()));
                            (format!("{}_bucket", s.metric), l, b.count)
                        })
                        .collect(),
                    prometheus_parse::Value::Summary(_) => vec![],
                }
            })
            .collect();
        Scrape(samples)
    }

    /// The value of `name` whose labels include all of `labels` and no `target_group`
    /// unless asked for; 0 when there is no such series.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wants_group = labels.iter().any(|(k, _)| *k == "target_group");
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                    && (wants_group || !l.iter().any(|(k, _)| k == "target_group"))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} series",
            found.len()
        );
        found.first().copied().unwrap_or(0.0)
    }

    fn group(&self, name: &str, group: &str, more: &[(&str, &str)]) -> f64 {
        let dimension = self
            .0
            .iter()
            .flat_map(|(_, l, _)| l.iter())
            .find(|(k, v)| k == "target_group" && v.starts_with(&format!("targetgroup/{group}/")))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no series for group {group}"));
        let mut labels = vec![("target_group", dimension.as_str())];
        labels.extend_from_slice(more);
        self.get(name, &labels)
    }
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    status_of(&raw_exchange(stream, request.as_bytes()).await)
}

#[tokio::test]
async fn metrics_move_with_the_traffic_that_should_move_them() {
    let pki = Pki::new();
    let app = id_target("app").await;
    let refused = closed_port().await;
    let proxy = start_proxy(&pki, &config(app.addr, refused)).await;
    let addr = proxy.listener_addr(0);
    eventually("app healthy", || {
        proxy.target_health_of("app", app.addr).unwrap().state == albatross::HealthState::Healthy
    })
    .await;

    let before = Scrape::of(&proxy).await;
    let lb_label = before
        .0
        .iter()
        .flat_map(|(_, l, _)| l.iter())
        .find(|(k, _)| k == "load_balancer")
        .unwrap()
        .1
        .clone();
    assert!(lb_label.starts_with("app/albatross/"), "{lb_label}");
    assert_eq!(
        before.group("albatross_healthy_host_count", "app", &[]),
        1.0
    );
    assert_eq!(
        before.group("albatross_unhealthy_host_count", "app", &[]),
        0.0
    );

    // N requests to a target: RequestCount +N (and the group's), 2XX +N, N response times.
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await, 200);
    }
    // Answered by the load balancer: fixed response, redirect, 502 (refused), 503 (empty).
    assert_eq!(get(addr, "/fixed").await, 200);
    assert_eq!(get(addr, "/moved").await, 302);
    // A redirect whose Location would pass 8 K is not served (500), and counted.
    let long = format!("/moved?{}", "q".repeat(9000));
    assert_eq!(get(addr, &long).await, 500);
    assert_eq!(get(addr, "/broken").await, 502);
    assert_eq!(get(addr, "/empty").await, 503);
    let after = Scrape::of(&proxy).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let group_delta = |name: &str, group: &str, more: &[(&str, &str)]| {
        after.group(name, group, more) - before.group(name, group, more)
    };
    // RequestCount excludes the requests answered before a target was chosen.
    assert_eq!(
        delta("albatross_request_count_total", &[]),
        6.0,
        "5 to app, 1 to the refusing target"
    );
    assert_eq!(
        group_delta("albatross_request_count_total", "app", &[]),
        5.0
    );
    assert_eq!(
        group_delta("albatross_request_count_total", "broken", &[]),
        1.0
    );
    assert_eq!(
        group_delta(
            "albatross_httpcode_target_count_total",
            "app",
            &[("class", "2XX")]
        ),
        5.0
    );
    assert_eq!(
        group_delta("albatross_target_response_time_seconds_count", "app", &[]),
        5.0
    );
    assert_eq!(
        group_delta(
            "albatross_target_connection_error_count_total",
            "broken",
            &[]
        ),
        1.0
    );
    assert_eq!(
        delta("albatross_httpcode_elb_count_total", &[("code", "502")]),
        1.0
    );
    assert_eq!(
        delta("albatross_httpcode_elb_count_total", &[("code", "503")]),
        1.0
    );
    assert_eq!(
        delta("albatross_httpcode_elb_count_total", &[("code", "302")]),
        1.0
    );
    assert_eq!(
        delta("albatross_httpcode_elb_count_total", &[("code", "200")]),
        1.0,
        "the fixed response"
    );
    assert_eq!(delta("albatross_http_fixed_response_count_total", &[]), 1.0);
    assert_eq!(delta("albatross_http_redirect_count_total", &[]), 1.0);
    assert_eq!(
        delta(
            "albatross_http_redirect_url_limit_exceeded_count_total",
            &[]
        ),
        1.0
    );
    assert_eq!(
        delta("albatross_httpcode_elb_count_total", &[("code", "500")]),
        1.0
    );
    assert!(
        delta("albatross_new_connection_count_total", &[]) >= 9.0,
        "9 client connections and the target's"
    );
    assert!(
        delta("albatross_processed_bytes_total", &[]) > 9.0 * 40.0,
        "heads both ways"
    );

    // A health flip moves the host counts.
    app.set_health(500);
    let mut flipped = Scrape::of(&proxy).await;
    within("unhealthy in the metrics", async {
        while flipped.group("albatross_unhealthy_host_count", "app", &[]) != 1.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            flipped = Scrape::of(&proxy).await;
        }
    })
    .await;
    assert_eq!(
        flipped.group("albatross_healthy_host_count", "app", &[]),
        0.0
    );
    app.set_health(200);

    // A tunnel: the gauge while it is open, the cause counter once it ends.
    let mut tunnel = TcpStream::connect(addr).await.unwrap();
    tunnel
        .write_all(upgrade_request("localhost", "/ws").as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut tunnel)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 101"));
    let open = Scrape::of(&proxy).await;
    assert_eq!(open.get("albatross_active_tunnel_count", &[]), 1.0);
    assert!(
        open.get("albatross_active_connection_count", &[]) >= 2.0,
        "a tunnel's two sides"
    );
    assert_eq!(
        open.group(
            "albatross_httpcode_target_count_total",
            "app",
            &[("class", "1XX")]
        ),
        1.0
    );
    drop(tunnel);
    eventually("the tunnel ended", || proxy.tunnels().is_empty()).await;
    let closed = Scrape::of(&proxy).await;
    assert_eq!(closed.get("albatross_active_tunnel_count", &[]), 0.0);
    assert_eq!(
        closed.get(
            "albatross_tunnel_closed_count_total",
            &[("cause", "client_close")]
        ),
        1.0
    );
    assert_eq!(
        closed.get(
            "albatross_tunnel_closed_count_total",
            &[("cause", "idle_timeout")]
        ),
        0.0
    );
}
