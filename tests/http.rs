//! Plain HTTP through the proxy: forwarding headers, ALB's own error codes, redirects,
//! fixed responses, SNI, and the embedded default config.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn forwards_with_albs_headers() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;
    let port = proxy.listener_addr(1).port();

    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let req = "GET /a/b?c=d HTTP/1.1\r\nHost: Example.COM\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\n\r\n";
    let resp = raw_exchange(stream, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap().to_ascii_lowercase();
    assert!(body.starts_with("get /a/b?c=d http/1.1\r\n"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http\r\n"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-port: {port}\r\n")),
        "{body}"
    );
    assert!(
        body.contains(&format!("host: example.com:{port}\r\n")),
        "{body}"
    );
    assert!(body.contains("x-amzn-trace-id: root=1-"), "{body}");
    assert!(!body.contains("x-drop"), "hop-by-hop header leaked: {body}");
    assert!(
        !body.contains("keep-alive: timeout"),
        "hop-by-hop header leaked: {body}"
    );

    // Over TLS the proto is https.
    let tls = pki.connect(proxy.listener_addr(0), "localhost").await;
    let resp = raw_exchange(tls, get("/", "localhost").as_bytes()).await;
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{resp}"
    );
}

#[tokio::test]
async fn refused_target_gives_502() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let dead = closed_port().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[dead])).await;
    for request in [get("/", "localhost"), upgrade_request("localhost", "/ws")] {
        let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
        let mut req = request.clone();
        if !req.contains("Connection: close") {
            req = req.replace("Connection: Upgrade", "Connection: Upgrade, close");
        }
        let resp = raw_exchange(stream, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
        assert!(resp.contains("server: awselb/2.0"), "{resp}");
        assert!(resp.contains("content-length: 122"), "{resp}");
        assert!(
            resp.ends_with("<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
        );
    }
}

#[tokio::test]
async fn resetting_target_gives_502() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let mut s = s;
            let _ = read_head(&mut s).await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s); // RST
        }
    });
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;
    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let resp = raw_exchange(stream, get("/", "localhost").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
}

#[tokio::test]
async fn silent_target_gives_504_after_the_idle_timeout() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = silent_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "300ms", &[target])).await;
    for request in [get("/", "localhost"), upgrade_request("localhost", "/ws")] {
        let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
        let req = request.replace("Connection: Upgrade", "Connection: Upgrade, close");
        let start = Instant::now();
        let resp = raw_exchange(stream, req.as_bytes()).await;
        assert!(
            resp.starts_with("HTTP/1.1 504 Gateway Time-out\r\n"),
            "{resp}"
        );
        assert!(
            start.elapsed() >= Duration::from_millis(280),
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn malformed_request_gets_400_and_others_are_still_served() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;

    // A keep-alive connection that stays open across the bad one.
    let mut steady = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    steady
        .write_all(b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut steady).await.starts_with("HTTP/1.1 200"));

    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n"[..],
        b"\x16\x03\x01 not http at all\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
        let resp = raw_exchange(stream, garbage).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{garbage:?} → {resp}");
    }

    steady
        .write_all(b"GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut steady).await.starts_with("HTTP/1.1 200"));
    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let resp = raw_exchange(stream, get("/three", "localhost").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn trace_gets_405() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;
    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let resp = raw_exchange(
        stream,
        get("/", "localhost").replace("GET", "TRACE").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{resp}"
    );
}

#[tokio::test]
async fn empty_target_group_gives_503() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[])).await;
    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let resp = raw_exchange(stream, get("/", "localhost").as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 503 Service Temporarily Unavailable\r\n"),
        "{resp}"
    );
    assert!(resp.contains("content-length: 162"), "{resp}");
}

#[tokio::test]
async fn redirect_and_fixed_response() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let text = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "redirect", protocol = "HTTPS", port = "8443", status_code = "HTTP_301" }}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "redirect", host = "new.example.com", path = "/moved/#{{path}}", query = "from=#{{host}}&#{{query}}", status_code = "HTTP_302" }}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{}", key = "{}" }} ]
default_action = {{ type = "fixed_response", status_code = 418, content_type = "application/json", message_body = "{{\"ok\":false}}" }}
"#,
        cert.0.display(),
        cert.1.display()
    );
    let proxy = start_proxy(&pki, &text).await;

    let stream = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let resp = raw_exchange(stream, get("/a/b?x=1", "Localhost:8080").as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("location: https://Localhost:8443/a/b?x=1\r\n"),
        "{resp}"
    );
    assert!(resp.contains("server: awselb/2.0"), "{resp}");

    let port = proxy.listener_addr(1).port();
    let stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let resp = raw_exchange(stream, get("/old", "example.com").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 302 "), "{resp}");
    assert!(
        resp.contains(&format!(
            "location: http://new.example.com:{port}/moved/old?from=example.com&\r\n"
        )),
        "{resp}"
    );

    let tls = pki.connect(proxy.listener_addr(2), "localhost").await;
    let resp = raw_exchange(tls, get("/", "localhost").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 418 "), "{resp}");
    assert!(resp.contains("content-type: application/json"), "{resp}");
    assert!(resp.ends_with("{\"ok\":false}"), "{resp}");
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let pki = Pki::new();
    let default = pki.leaf("default", &["default.test"]);
    let a = pki.leaf("a", &["a.test"]);
    let wild = pki.leaf("wild", &["*.b.test"]);
    let text = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ]
default_action = {{ type = "fixed_response", status_code = 200, content_type = "text/plain", message_body = "ok" }}
"#,
        default.0.display(),
        default.1.display(),
        a.0.display(),
        a.1.display(),
        wild.0.display(),
        wild.1.display()
    );
    let proxy = start_proxy(&pki, &text).await;
    let addr = proxy.listener_addr(0);
    for (sni, want) in [
        ("a.test", &a.2),
        ("x.b.test", &wild.2),
        ("default.test", &default.2),
    ] {
        let tls = pki.connect(addr, sni).await;
        let (_, conn) = tls.get_ref();
        let presented = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
        assert_eq!(&presented, want, "SNI {sni}");
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

#[tokio::test]
async fn embedded_default_config_parses_with_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = albatross::certs::ensure_localhost_cert(&dir.path().join("certs")).unwrap();
    let first = std::fs::read(&cert).unwrap();
    assert!(key.exists());
    // A second call keeps the existing files.
    albatross::certs::ensure_localhost_cert(&dir.path().join("certs")).unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), first);

    let origin = albatross::config::Origin {
        name: "<embedded default>".into(),
        base_dir: dir.path().to_path_buf(),
    };
    let cfg = albatross::config::from_str(albatross::config::DEFAULT_CONFIG, &origin)
        .unwrap_or_else(|e| panic!("embedded default rejected:\n{e}"));
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.listeners[0].port, 8080);
    assert_eq!(cfg.listeners[1].port, 8443);
    assert!(cfg.listeners[1].tls.is_some());
    assert_eq!(cfg.backends.len(), 2);
    assert_eq!(cfg.target_groups[0].targets.len(), 2);
}

/// ALB's `client_keep_alive`: a connection that has lived past it still gets its next
/// request served, with `Connection: close`, and is then closed; before that, requests
/// keep it open.
#[tokio::test]
async fn client_keep_alive_makes_the_next_request_the_last() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = echo_head_target().await;
    let text = forward_config(&pki, &cert, "60s", &[target]).replacen(
        "[load_balancer]\n",
        "[load_balancer]\nclient_keep_alive = \"500ms\"\n",
        1,
    );
    let proxy = start_proxy(&pki, &text).await;
    let request = b"GET /k HTTP/1.1\r\nHost: example.com\r\n\r\n";

    let mut stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let opened = Instant::now();
    stream.write_all(request).await.unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );

    // Past the configured lifetime: one more request is served, and it is the last.
    tokio::time::sleep_until((opened + Duration::from_millis(600)).into()).await;
    let last = raw_exchange(&mut stream, request).await;
    assert!(last.starts_with("HTTP/1.1 200 OK\r\n"), "{last}");
    assert!(
        last.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{last}"
    );
    assert_eq!(status_of(&last), 200);

    // A new connection starts a new lifetime.
    let mut stream = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let fresh = read_response(&mut stream).await;
    assert!(
        !fresh.to_ascii_lowercase().contains("connection: close"),
        "{fresh}"
    );
}
