//! Target groups end to end: health checks against real targets, routing by health and
//! fail-open, 503, algorithms, stickiness over HTTP and upgrades, slow start, draining
//! of live tunnels with the close cause, and DNS discovery through a controlled resolver.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use albatross::config::{self, Origin};
use albatross::target_group::StaticResolver;
use albatross::{HealthState, Proxy, ProxyHandle, ProxyOptions};
use fastwebsockets::FragmentCollector;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP listener (index 0) forwarding to group `app`, whose body is `group`.
fn config(lb: &str, group: &str) -> String {
    format!(
        r#"
[load_balancer]
idle_timeout = "30s"
{lb}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
{group}
"#
    )
}

fn targets(list: &[SocketAddr]) -> String {
    let items: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
    format!("targets = [ {} ]", items.join(", "))
}

async fn start(text: &str, options: ProxyOptions) -> ProxyHandle {
    let origin = Origin {
        name: "test.toml".to_string(),
        base_dir: std::env::current_dir().unwrap(),
    };
    let cfg = match config::from_str(text, &origin) {
        Ok(c) => c,
        Err(e) => panic!("test config rejected:\n{e}\n---\n{text}"),
    };
    Proxy::start_with(cfg, options).await.expect("proxy starts")
}

/// One response: status, head lines, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }
    fn target(&self) -> &str {
        self.header("x-target").unwrap_or("")
    }
    /// The value a `Set-Cookie` line gives cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.header_all("set-cookie").into_iter().find_map(|l| {
            let (k, rest) = l.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_string())
        })
    }
    fn set_cookie_line(&self, name: &str) -> Option<&str> {
        self.header_all("set-cookie")
            .into_iter()
            .find(|l| l.split_once('=').is_some_and(|(k, _)| k == name))
    }
}

/// `GET path` on a fresh connection with `Connection: close` and optional cookies.
async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{cookie}Connection: close\r\n\r\n");
    let text = raw_exchange(stream, req.as_bytes()).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// An upgrade through the proxy on a raw connection; returns the 101 head and the stream.
async fn upgrade(addr: SocketAddr, cookie: Option<&str>) -> (Answer, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = upgrade_request("app.test", "/ws");
    if let Some(c) = cookie {
        req = req.replace("\r\n\r\n", &format!("\r\nCookie: {c}\r\n\r\n"));
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let head = within("101", read_head(&mut s)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (
        Answer {
            status: 101,
            head,
            body: String::new(),
        },
        s,
    )
}

async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    within("echo", s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, msg);
}

fn state_of(proxy: &ProxyHandle, addr: SocketAddr) -> (HealthState, Option<&'static str>) {
    let d = proxy.target_health_of("app", addr).unwrap();
    (d.state, d.reason.map(|r| r.code()))
}

async fn wait_state(proxy: &ProxyHandle, addr: SocketAddr, state: HealthState) {
    eventually(&format!("{addr} to be {state}"), || {
        state_of(proxy, addr).0 == state
    })
    .await;
}

const FAST_CHECKS: &str = r#"health_check = { path = "/health", interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
const NO_CHECKS: &str = "health_check = { enabled = false }";

#[tokio::test]
async fn health_checks_look_like_albs() {
    let a = id_target("a").await;
    let proxy = start(
        &config("", &format!("{}\n{FAST_CHECKS}", targets(&[a.addr]))),
        ProxyOptions::default(),
    )
    .await;
    let (state, reason) = state_of(&proxy, a.addr);
    assert_eq!(state, HealthState::Initial);
    assert!(
        matches!(
            reason,
            Some("Elb.RegistrationInProgress" | "Elb.InitialHealthChecking")
        ),
        "{reason:?}"
    );
    wait_state(&proxy, a.addr, HealthState::Healthy).await;
    assert_eq!(a.health_check_count(), 1, "one passing check is enough");
    let head = a.last_health_head.lock().unwrap().clone();
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: {}\r\n", a.addr)),
        "{head}"
    );
    assert!(
        head.contains("\r\nUser-Agent: ELB-HealthChecker/2.0\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert_eq!(a.request_count(), 0, "checks are not traffic");
    let d = &proxy.target_health("app").unwrap()[0];
    assert_eq!(
        (d.target, d.port, d.health_check_port),
        (a.addr.ip(), a.addr.port(), a.addr.port())
    );
    assert_eq!((d.reason, d.description.clone()), (None, None));
}

#[tokio::test]
async fn a_failing_backend_stops_getting_tunnels_and_comes_back() {
    let one = start_backend("one", None, None).await;
    let two = start_backend("two", None, None).await;
    let proxy = start(
        &config(
            "",
            &format!("{}\n{FAST_CHECKS}", targets(&[one.addr, two.addr])),
        ),
        ProxyOptions::default(),
    )
    .await;
    let addr = proxy.listener_addr(0);
    wait_state(&proxy, one.addr, HealthState::Healthy).await;
    wait_state(&proxy, two.addr, HealthState::Healthy).await;
    let hello_from = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut ws = FragmentCollector::new(ws_handshake(tcp, "app.test", "/ws").await);
        next_json(&mut ws).await["backend"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let interval = Duration::from_millis(200);
    one.handle.set_health_status(500).unwrap();
    let flipped = Instant::now();
    wait_state(&proxy, one.addr, HealthState::Unhealthy).await;
    let took = flipped.elapsed();
    assert!(
        took <= interval * 3 + Duration::from_millis(300),
        "unhealthy after {took:?}"
    );
    assert_eq!(
        proxy
            .target_health_of("app", one.addr)
            .unwrap()
            .description
            .as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    for _ in 0..4 {
        assert_eq!(
            hello_from().await,
            "two",
            "no new work for an unhealthy target"
        );
    }

    one.handle.set_health_status(200).unwrap();
    let fixed = Instant::now();
    wait_state(&proxy, one.addr, HealthState::Healthy).await;
    let took = fixed.elapsed();
    assert!(took >= interval, "back after a single check: {took:?}");
    assert!(
        took <= interval * 3 + Duration::from_millis(300),
        "healthy after {took:?}"
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(hello_from().await);
    }
    assert!(seen.iter().any(|s| s == "one"), "{seen:?}");
}

#[tokio::test]
async fn every_target_unhealthy_fails_open() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    a.set_health(500);
    b.set_health(500);
    let proxy = start(
        &config(
            "",
            &format!("{}\n{FAST_CHECKS}", targets(&[a.addr, b.addr])),
        ),
        ProxyOptions::default(),
    )
    .await;
    wait_state(&proxy, a.addr, HealthState::Unhealthy).await;
    wait_state(&proxy, b.addr, HealthState::Unhealthy).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = get(proxy.listener_addr(0), "/", None).await;
        assert_eq!(r.status, 200);
        seen.push(r.body);
    }
    assert_eq!(seen, ["a", "b", "a", "b"], "fail open to every target");
}

#[tokio::test]
async fn initial_targets_take_traffic_when_none_is_healthy() {
    let a = id_target("a").await;
    // A 30 s interval: the target stays initial for the whole test.
    let proxy = start(&config("", &targets(&[a.addr])), ProxyOptions::default()).await;
    assert_eq!(state_of(&proxy, a.addr).0, HealthState::Initial);
    assert_eq!(get(proxy.listener_addr(0), "/", None).await.body, "a");
}

#[tokio::test]
async fn no_registered_target_is_503() {
    let proxy = start(&config("", "targets = []"), ProxyOptions::default()).await;
    let r = get(proxy.listener_addr(0), "/", None).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("503 Service Temporarily Unavailable"));
}

#[tokio::test]
async fn only_draining_targets_is_503() {
    let a = id_target("a").await;
    let proxy = start(
        &config("", &format!("{}\n{NO_CHECKS}", targets(&[a.addr]))),
        ProxyOptions::default(),
    )
    .await;
    assert_eq!(get(proxy.listener_addr(0), "/", None).await.status, 200);
    proxy.deregister_target("app", a.addr).unwrap();
    assert_eq!(
        state_of(&proxy, a.addr),
        (
            HealthState::Draining,
            Some("Target.DeregistrationInProgress")
        )
    );
    assert_eq!(get(proxy.listener_addr(0), "/", None).await.status, 503);
}

#[tokio::test]
async fn matcher_forms() {
    let ok202 = id_target("ok202").await;
    let ok204 = id_target("ok204").await;
    let bad = id_target("bad").await;
    ok202.set_health(202);
    ok204.set_health(204);
    bad.set_health(202);
    let group = |name: &str, t: SocketAddr, matcher: &str| {
        format!(
            r#"
[[target_group]]
name = "{name}"
targets = [ "{t}" ]
health_check = {{ path = "/health", interval = "100ms", timeout = "50ms", unhealthy_threshold = 2, matcher = "{matcher}" }}
"#
        )
    };
    let text = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_groups = [ {{ name = "list", weight = 1 }}, {{ name = "range", weight = 1 }}, {{ name = "single", weight = 1 }} ] }}
{}{}{}"#,
        group("list", ok202.addr, "200,202"),
        group("range", ok204.addr, "200-299"),
        group("single", bad.addr, "200"),
    );
    let proxy = start(&text, ProxyOptions::default()).await;
    let state = |g: &str, a: SocketAddr| proxy.target_health_of(g, a).unwrap();
    eventually("list and range matchers to pass", || {
        state("list", ok202.addr).state == HealthState::Healthy
            && state("range", ok204.addr).state == HealthState::Healthy
    })
    .await;
    eventually("the single-code matcher to fail", || {
        state("single", bad.addr).state == HealthState::Unhealthy
    })
    .await;
    let d = state("single", bad.addr);
    assert_eq!(
        d.reason.map(|r| r.code()),
        Some("Target.ResponseCodeMismatch")
    );
    assert_eq!(
        d.description.as_deref(),
        Some("Health checks failed with these codes: [202]")
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_have_their_reasons() {
    let silent = silent_target().await;
    let closed = closed_port().await;
    let proxy = start(
        &config(
            "",
            &format!(
                "{}\nhealth_check = {{ interval = \"100ms\", timeout = \"50ms\", unhealthy_threshold = 2 }}",
                targets(&[silent, closed])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    wait_state(&proxy, silent, HealthState::Unhealthy).await;
    wait_state(&proxy, closed, HealthState::Unhealthy).await;
    assert_eq!(state_of(&proxy, silent).1, Some("Target.Timeout"));
    assert_eq!(
        state_of(&proxy, closed).1,
        Some("Target.FailedHealthChecks")
    );
}

#[tokio::test]
async fn unused_group_targets_are_not_in_use() {
    let a = id_target("a").await;
    let text = format!(
        "{}\n[[target_group]]\nname = \"spare\"\ntargets = [ \"{}\" ]\n",
        config("", "targets = []"),
        a.addr
    );
    let proxy = start(&text, ProxyOptions::default()).await;
    let d = proxy.target_health_of("spare", a.addr).unwrap();
    assert_eq!(d.state, HealthState::Unused);
    assert_eq!(d.reason.map(|r| r.code()), Some("Target.NotInUse"));
    let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let d = proxy.target_health_of("app", other).unwrap();
    assert_eq!(
        (d.state, d.reason.map(|r| r.code())),
        (HealthState::Unused, Some("Target.NotRegistered"))
    );
    assert!(proxy.target_health("nope").is_err());
}

#[tokio::test]
async fn least_outstanding_requests_favours_the_fast_target() {
    let fast = id_target("fast").await;
    let slow = id_target_on(
        "127.0.0.1:0".parse().unwrap(),
        "slow",
        Duration::from_secs(3),
    )
    .await;
    let proxy = start(
        &config(
            "",
            &format!(
                "algorithm = \"least_outstanding_requests\"\n{}\n{NO_CHECKS}",
                targets(&[slow.addr, fast.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    let addr = proxy.listener_addr(0);
    let mut pending = Vec::new();
    for _ in 0..20 {
        // Send the next request once this one is done or is waiting on the slow target.
        let arrived = slow.arrived.notified();
        let req = tokio::spawn(get(addr, "/", None));
        tokio::pin!(arrived);
        let mut req = req;
        tokio::select! {
            r = &mut req => assert_eq!(r.unwrap().status, 200),
            _ = &mut arrived => pending.push(req),
        }
    }
    assert!(
        fast.request_count() >= 18,
        "fast {} slow {}",
        fast.request_count(),
        slow.request_count()
    );
    assert!(slow.request_count() <= 2);
    drop(pending);
}

#[tokio::test]
async fn round_robin_over_healthy_targets_only() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    let c = id_target("c").await;
    c.set_health(500);
    let proxy = start(
        &config(
            "",
            &format!("{}\n{FAST_CHECKS}", targets(&[a.addr, b.addr, c.addr])),
        ),
        ProxyOptions::default(),
    )
    .await;
    wait_state(&proxy, a.addr, HealthState::Healthy).await;
    wait_state(&proxy, b.addr, HealthState::Healthy).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(proxy.listener_addr(0), "/", None).await.body);
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 3, "{seen:?}");
}

fn check_expires(line: &str) {
    let expires = line
        .split("; ")
        .find_map(|p| p.strip_prefix("Expires="))
        .unwrap_or_else(|| panic!("no Expires in {line}"));
    let at = httpdate::parse_http_date(expires).unwrap();
    let week = SystemTime::now() + Duration::from_secs(7 * 24 * 3600);
    let diff = week.duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(5), "{line}");
    assert!(!line.contains("Max-Age"), "{line}");
}

#[tokio::test]
async fn lb_cookie_sticks_over_http_and_upgrades() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    let proxy = start(
        &config(
            "stickiness_secret = \"sixteen chars or more\"",
            &format!(
                "stickiness = {{ type = \"lb_cookie\", duration = \"1h\" }}\n{}\n{NO_CHECKS}",
                targets(&[a.addr, b.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    let addr = proxy.listener_addr(0);
    let first = get(addr, "/", None).await;
    let value = first.cookie("AWSALB").expect("AWSALB set");
    let alb = first.set_cookie_line("AWSALB").unwrap();
    let cors = first.set_cookie_line("AWSALBCORS").unwrap();
    assert!(alb.ends_with("; Path=/"), "{alb}");
    assert!(
        alb.starts_with(&format!("AWSALB={value}; Expires=")),
        "{alb}"
    );
    assert!(
        cors.starts_with(&format!("AWSALBCORS={value}; Expires="))
            && cors.ends_with("; Path=/; SameSite=None; Secure"),
        "{cors}"
    );
    check_expires(alb);
    check_expires(cors);
    assert!(value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)));

    let stuck = first.body.clone();
    let cookie = format!("AWSALB={value}");
    for _ in 0..4 {
        let r = get(addr, "/", Some(&cookie)).await;
        assert_eq!(r.body, stuck);
        assert!(r.cookie("AWSALB").is_some(), "refreshed on every response");
    }
    // A browser's CORS request may carry only AWSALBCORS.
    let r = get(addr, "/", Some(&format!("AWSALBCORS={value}"))).await;
    assert_eq!(r.body, stuck);
    for _ in 0..3 {
        let (head, mut s) = upgrade(addr, Some(&cookie)).await;
        assert_eq!(head.target(), stuck, "the upgrade follows the cookie");
        echo(&mut s, b"hi").await;
    }

    // A forged cookie is ignored: requests are balanced again.
    let mut forged = value.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("AWSALB={}", String::from_utf8(forged).unwrap());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = get(addr, "/", Some(&forged)).await;
        assert_ne!(r.cookie("AWSALB").unwrap(), value);
        seen.push(r.body);
    }
    assert!(
        seen.iter().any(|s| *s == "a") && seen.iter().any(|s| *s == "b"),
        "{seen:?}"
    );

    // The sticky target leaves: the session moves and the cookie is rewritten.
    let gone = if stuck == "a" { a.addr } else { b.addr };
    proxy.deregister_target("app", gone).unwrap();
    let r = get(addr, "/", Some(&cookie)).await;
    assert_ne!(r.body, stuck);
    let moved = r.cookie("AWSALB").unwrap();
    let other = r.body.clone();
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/", Some(&format!("AWSALB={moved}"))).await.body,
            other
        );
    }
}

#[tokio::test]
async fn nodes_sharing_the_secret_read_each_others_cookies() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    let text = config(
        "stickiness_secret = \"sixteen chars or more\"",
        &format!(
            "stickiness = {{ type = \"lb_cookie\" }}\n{}\n{NO_CHECKS}",
            targets(&[a.addr, b.addr])
        ),
    );
    let one = start(&text, ProxyOptions::default()).await;
    let two = start(&text, ProxyOptions::default()).await;
    let first = get(one.listener_addr(0), "/", None).await;
    let cookie = format!("AWSALB={}", first.cookie("AWSALB").unwrap());
    // Round robin alone would alternate; node two follows node one's cookie.
    for _ in 0..3 {
        assert_eq!(
            get(two.listener_addr(0), "/", Some(&cookie)).await.body,
            first.body
        );
    }
}

#[tokio::test]
async fn app_cookie_follows_the_applications_cookie() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    let proxy = start(
        &config(
            "",
            &format!(
                "stickiness = {{ type = \"app_cookie\", cookie_name = \"session\", duration = \"1h\" }}\n{}\n{NO_CHECKS}",
                targets(&[a.addr, b.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    let addr = proxy.listener_addr(0);
    let plain = get(addr, "/", None).await;
    assert_eq!(
        plain.cookie("AWSALBAPP-0"),
        None,
        "only after the app sets its cookie"
    );

    let login = get(addr, "/login", None).await;
    let app = login
        .cookie("session")
        .expect("the app's cookie passes untouched");
    assert_eq!(app, login.body);
    let line = login
        .set_cookie_line("AWSALBAPP-0")
        .expect("AWSALBAPP-0 set");
    assert!(line.ends_with("; Path=/"), "{line}");
    check_expires(line);
    assert_eq!(login.cookie("AWSALBAPP-1").as_deref(), Some("_remove_"));
    let lb = login.cookie("AWSALBAPP-0").unwrap();

    let both = format!("session={app}; AWSALBAPP-0={lb}");
    for _ in 0..4 {
        assert_eq!(get(addr, "/", Some(&both)).await.body, login.body);
    }
    let (head, mut s) = upgrade(addr, Some(&both)).await;
    assert_eq!(head.target(), login.body);
    echo(&mut s, b"x").await;

    // Without the application's cookie there is no session to stick to.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            get(addr, "/", Some(&format!("AWSALBAPP-0={lb}")))
                .await
                .body,
        );
    }
    assert!(
        seen.iter().any(|s| *s == "a") && seen.iter().any(|s| *s == "b"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn weighted_forward_sticks_to_a_group_with_awsalbtg() {
    let blue = id_target("blue").await;
    let green = id_target("green").await;
    let text = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_groups = [ {{ name = "blue", weight = 1 }}, {{ name = "green", weight = 1 }} ], stickiness = {{ duration = "1h" }} }}

[[target_group]]
name = "blue"
targets = [ "{}" ]
{NO_CHECKS}

[[target_group]]
name = "green"
targets = [ "{}" ]
{NO_CHECKS}
"#,
        blue.addr, green.addr
    );
    let proxy = start(&text, ProxyOptions::default()).await;
    let addr = proxy.listener_addr(0);
    let first = get(addr, "/", None).await;
    let tg = first.cookie("AWSALBTG").expect("AWSALBTG set");
    let cors = first.set_cookie_line("AWSALBTGCORS").unwrap();
    assert!(cors.ends_with("; Path=/; SameSite=None; Secure"), "{cors}");
    check_expires(cors);
    for _ in 0..8 {
        assert_eq!(
            get(addr, "/", Some(&format!("AWSALBTG={tg}"))).await.body,
            first.body
        );
    }
}

#[tokio::test]
async fn slow_start_ramps_a_new_targets_share() {
    let a = id_target("a").await;
    let b = id_target("b").await;
    let ramp = Duration::from_millis(1500);
    let proxy = start(
        &config(
            "",
            &format!(
                "slow_start = \"1500ms\"\n{}\nhealth_check = {{ path = \"/health\", interval = \"100ms\", timeout = \"50ms\" }}",
                targets(&[a.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    wait_state(&proxy, a.addr, HealthState::Healthy).await;
    proxy.register_target("app", b.addr).unwrap();
    wait_state(&proxy, b.addr, HealthState::Healthy).await;
    let healthy_at = Instant::now();
    let addr = proxy.listener_addr(0);
    let (mut early, mut early_b, mut late, mut late_b) = (0, 0, 0, 0);
    while healthy_at.elapsed() < ramp + Duration::from_millis(600) {
        let at = healthy_at.elapsed();
        let to_b = get(addr, "/", None).await.body == "b";
        if at < ramp / 4 {
            early += 1;
            early_b += usize::from(to_b);
        } else if at > ramp {
            late += 1;
            late_b += usize::from(to_b);
        }
    }
    let early_share = early_b as f64 / early.max(1) as f64;
    let late_share = late_b as f64 / late.max(1) as f64;
    assert!(
        early >= 10 && late >= 10,
        "too few requests: {early} {late}"
    );
    assert!(
        early_share < 0.25,
        "early share {early_share} ({early_b}/{early})"
    );
    assert!(
        (0.35..=0.65).contains(&late_share),
        "late share {late_share} ({late_b}/{late})"
    );
}

#[tokio::test]
async fn draining_keeps_live_tunnels_until_the_delay_then_closes_them() {
    let logs = LogCapture::start();
    let a = id_target("a").await;
    let b = id_target("b").await;
    let delay = Duration::from_millis(800);
    let proxy = start(
        &config(
            "",
            &format!(
                "deregistration_delay = \"800ms\"\n{}\n{NO_CHECKS}",
                targets(&[a.addr, b.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    let addr = proxy.listener_addr(0);
    let (head, mut tunnel) = upgrade(addr, None).await;
    assert_eq!(head.target(), "a");
    echo(&mut tunnel, b"before").await;

    proxy.deregister_target("app", a.addr).unwrap();
    let deregistered = Instant::now();
    assert_eq!(
        state_of(&proxy, a.addr),
        (
            HealthState::Draining,
            Some("Target.DeregistrationInProgress")
        )
    );
    echo(&mut tunnel, b"still up").await;
    for _ in 0..3 {
        let (head, mut s) = upgrade(addr, None).await;
        assert_eq!(head.target(), "b", "no new tunnel to a draining target");
        echo(&mut s, b"b").await;
    }
    assert_eq!(get(addr, "/", None).await.body, "b");

    let mut buf = [0u8; 16];
    let n = within("drain close", tunnel.read(&mut buf))
        .await
        .unwrap_or(0);
    let closed_after = deregistered.elapsed();
    assert_eq!(n, 0, "the tunnel is closed");
    assert!(
        closed_after >= delay - Duration::from_millis(20),
        "{closed_after:?}"
    );
    assert!(
        closed_after < delay + Duration::from_secs(2),
        "{closed_after:?}"
    );

    eventually("the target to be removed", || {
        proxy.target_health("app").unwrap().len() == 1
    })
    .await;
    assert_eq!(
        state_of(&proxy, a.addr),
        (HealthState::Unused, Some("Target.NotRegistered"))
    );
    eventually("the close cause to be logged", || {
        logs.text().contains("cause=\"deregistration\"")
    })
    .await;
    assert!(logs.text().contains("Target ") && logs.text().contains("is now draining"));
}

#[tokio::test]
async fn an_idle_target_still_shows_draining_until_the_delay_ends() {
    let a = id_target("a").await;
    let proxy = start(
        &config(
            "",
            &format!(
                "deregistration_delay = \"300ms\"\n{}\n{NO_CHECKS}",
                targets(&[a.addr])
            ),
        ),
        ProxyOptions::default(),
    )
    .await;
    proxy.deregister_target("app", a.addr).unwrap();
    let at = Instant::now();
    assert_eq!(state_of(&proxy, a.addr).0, HealthState::Draining);
    assert!(
        proxy.register_target("app", a.addr).is_err(),
        "not while draining"
    );
    eventually("removal", || {
        state_of(&proxy, a.addr).0 == HealthState::Unused
    })
    .await;
    assert!(at.elapsed() >= Duration::from_millis(280));
    proxy.register_target("app", a.addr).unwrap();
    assert_eq!(
        state_of(&proxy, a.addr).0,
        HealthState::Healthy,
        "checks are off"
    );
}

#[tokio::test]
async fn shutdown_is_recorded_as_the_cause() {
    let logs = LogCapture::start();
    let a = id_target("a").await;
    let proxy = start(
        &config("", &format!("{}\n{NO_CHECKS}", targets(&[a.addr]))),
        ProxyOptions::default(),
    )
    .await;
    let (_, mut tunnel) = upgrade(proxy.listener_addr(0), None).await;
    echo(&mut tunnel, b"x").await;
    proxy.shutdown_within(Duration::from_millis(100)).await;
    assert!(
        logs.text().contains("cause=\"shutdown\""),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn dns_targets_follow_the_resolver() {
    let port_holder = id_target_on("127.0.0.2:0".parse().unwrap(), "two", Duration::ZERO).await;
    let port = port_holder.addr.port();
    let three = id_target_on(
        SocketAddr::new("127.0.0.3".parse().unwrap(), port),
        "three",
        Duration::ZERO,
    )
    .await;
    let resolver = StaticResolver::new();
    resolver.set("svc.test", &["127.0.0.2".parse().unwrap()]);
    let options = ProxyOptions {
        resolver: Arc::new(resolver.clone()),
        dns_refresh_interval: Duration::from_millis(100),
    };
    let proxy = start(
        &config(
            "",
            &format!(
                "deregistration_delay = 0\ntargets = [ {{ dns = \"svc.test:{port}\" }} ]\n{FAST_CHECKS}"
            ),
        ),
        options,
    )
    .await;
    // Resolved at start.
    let listed = proxy.target_health("app").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target, port_holder.addr.ip());

    resolver.set(
        "svc.test",
        &["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
    );
    eventually("the new address to be registered", || {
        proxy.target_health("app").unwrap().len() == 2
    })
    .await;
    assert_ne!(state_of(&proxy, three.addr).0, HealthState::Unused);
    wait_state(&proxy, three.addr, HealthState::Healthy).await;

    // A failing lookup keeps what was there.
    resolver.remove("svc.test");
    resolver.set("svc.test", &["127.0.0.3".parse().unwrap()]);
    eventually("the vanished address to leave", || {
        state_of(&proxy, port_holder.addr).0 != HealthState::Healthy
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(proxy.listener_addr(0), "/", None).await.body, "three");
    }
}
