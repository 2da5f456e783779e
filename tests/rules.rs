//! Listener rules end to end: every condition kind, priority order, an upgrade routed by
//! a path rule to its own target group, and weighted forwarding between two groups.

mod support;

use fastwebsockets::FragmentCollector;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One HTTP listener with a rule per condition kind. Rules are written out of priority
/// order on purpose: evaluation follows `priority`, not the file.
fn rules_config(
    app: std::net::SocketAddr,
    img: std::net::SocketAddr,
    ws: std::net::SocketAddr,
) -> String {
    format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 20
conditions = [ {{ path_pattern = ["/p/*"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "twenty" }}

[[listener.rule]]
priority = 5
conditions = [ {{ path_pattern = ["/p/x"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "five" }}

[[listener.rule]]
priority = 1
conditions = [ {{ host_header = ["*.example.com"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "host" }}

[[listener.rule]]
priority = 2
conditions = [ {{ path_pattern = ["/img/*"] }} ]
action = {{ type = "forward", target_group = "img" }}

[[listener.rule]]
priority = 3
conditions = [ {{ http_header = {{ name = "X-Env", values = ["dev*"] }} }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "header" }}

[[listener.rule]]
priority = 4
conditions = [ {{ http_request_method = ["PUT"] }} ]
action = {{ type = "fixed_response", status_code = 201, message_body = "method" }}

[[listener.rule]]
priority = 6
conditions = [ {{ query_string = [ {{ key = "v", value = "2" }} ] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "query" }}

[[listener.rule]]
priority = 7
conditions = [ {{ source_ip = ["10.0.0.0/8"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "source-10" }}

[[listener.rule]]
priority = 8
conditions = [ {{ source_ip = ["127.0.0.0/8"] }}, {{ path_pattern = ["/src"] }} ]
action = {{ type = "fixed_response", status_code = 200, message_body = "source-127" }}

[[listener.rule]]
priority = 9
conditions = [ {{ path_pattern = ["/ws"] }} ]
action = {{ type = "forward", target_group = "ws" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]

[[target_group]]
name = "img"
targets = [ "{img}" ]

[[target_group]]
name = "ws"
targets = [ "{ws}" ]
"#
    )
}

#[tokio::test]
async fn each_condition_kind_routes_and_priority_wins_over_file_order() {
    let pki = Pki::new();
    let app = named_target("app").await;
    let img = named_target("img").await;
    let backend = start_backend("ws-backend", None, None).await;
    let proxy = start_proxy(&pki, &rules_config(app, img, backend.addr)).await;
    let addr = proxy.listener_addr(0);

    // (request line start, header lines, status, body)
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET /p/x", "Host: localhost\r\n", 200, "five"),
        ("GET /p/y", "Host: localhost\r\n", 200, "twenty"),
        ("GET /", "Host: API.Example.com\r\n", 200, "host"),
        ("GET /", "Host: example.com\r\n", 200, "app"),
        ("GET /img/a.png", "Host: localhost\r\n", 200, "img"),
        ("GET /Img/a.png", "Host: localhost\r\n", 200, "app"),
        (
            "GET /",
            "Host: localhost\r\nx-env: DEVELOP\r\n",
            200,
            "header",
        ),
        (
            "PUT /",
            "Host: localhost\r\nContent-Length: 0\r\n",
            201,
            "method",
        ),
        (
            "put /",
            "Host: localhost\r\nContent-Length: 0\r\n",
            200,
            "app",
        ),
        ("GET /q?a=1&V=2", "Host: localhost\r\n", 200, "query"),
        ("GET /q?v=3", "Host: localhost\r\n", 200, "app"),
        ("GET /src", "Host: localhost\r\n", 200, "source-127"),
        ("GET /src?v=2", "Host: localhost\r\n", 200, "query"),
    ];

    let mut conn = TcpStream::connect(addr).await.unwrap();
    for (line, headers, status, body) in cases {
        let req = format!("{line} HTTP/1.1\r\n{headers}\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let resp = read_response(&mut conn).await;
        assert_eq!(status_of(&resp), *status, "{line} {headers:?} → {resp}");
        assert_eq!(body_of(&resp), *body, "{line} {headers:?} → {resp}");
    }
}

#[tokio::test]
async fn an_upgrade_is_routed_by_a_path_rule_to_its_own_group() {
    let pki = Pki::new();
    let app = named_target("app").await;
    let img = named_target("img").await;
    let backend = start_backend("ws-backend", None, None).await;
    let proxy = start_proxy(&pki, &rules_config(app, img, backend.addr)).await;

    let stream = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let ws = ws_handshake(stream, "localhost", "/ws?user=u1").await;
    let mut ws = FragmentCollector::new(ws);
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["backend"], "ws-backend");
    assert_eq!(hello["user"], "u1");

    // The same upgrade on another path follows the default action to a target that
    // does not speak WebSocket: its 200 is relayed as an ordinary response.
    let stream = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let req = upgrade_request("localhost", "/other")
        .replace("Connection: Upgrade", "Connection: Upgrade, close");
    let resp = raw_exchange(stream, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(body_of(&resp), "app");
}

/// Weighted forwarding 80/20 over 1000 requests. The count for the 20 % group is
/// binomial (n = 1000, p = 0.2): mean 200, σ = √(n·p·(1−p)) ≈ 12.6. The test accepts
/// 200 ± 4σ (149..=251), so a correct implementation fails it about once in 15 000 runs.
#[tokio::test]
async fn weighted_forward_splits_80_20() {
    let pki = Pki::new();
    let a = named_target("a").await;
    let b = named_target("b").await;
    let text = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_groups = [ {{ name = "a", weight = 80 }}, {{ name = "b", weight = 20 }} ] }}

[[target_group]]
name = "a"
targets = [ "{a}" ]

[[target_group]]
name = "b"
targets = [ "{b}" ]
"#
    );
    let proxy = start_proxy(&pki, &text).await;
    let mut conn = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let (mut count_a, mut count_b) = (0u32, 0u32);
    for _ in 0..1000 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let resp = read_response(&mut conn).await;
        match body_of(&resp) {
            "a" => count_a += 1,
            "b" => count_b += 1,
            other => panic!("unexpected answer {other:?}: {resp}"),
        }
    }
    assert_eq!(count_a + count_b, 1000);
    assert!(
        (149..=251).contains(&count_b),
        "group b got {count_b} of 1000 (expected 200 ± 4σ)"
    );
}

#[tokio::test]
async fn redirect_expands_every_placeholder() {
    let pki = Pki::new();
    let text = r##"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = { type = "redirect", protocol = "#{protocol}", host = "#{host}.moved.test", port = "#{port}", path = "/new/#{path}/#{host}/#{port}", query = "p=#{protocol}&h=#{host}&o=#{port}&a=#{path}&#{query}", status_code = "HTTP_302" }
"##;
    let proxy = start_proxy(&pki, text).await;
    let port = proxy.listener_addr(0).port();
    let stream = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let resp = raw_exchange(
        stream,
        b"GET /old/page?x=1 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 302 Moved Temporarily\r\n"),
        "{resp}"
    );
    let want = format!(
        "location: http://site.test.moved.test:{port}/new/old/page/site.test/{port}?p=http&h=site.test&o={port}&a=old/page&x=1\r\n"
    );
    assert!(resp.contains(&want), "want {want}\n got {resp}");
}
