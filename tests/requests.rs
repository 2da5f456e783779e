//! ALB's request semantics end to end: the errors the load balancer makes itself (each
//! provoked by a real misbehaving client or target), the headers targets receive under
//! each setting, `Expect: 100-continue`, and keep-alive toward targets.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP listener (index 0) forwarding to `targets`, with extra `[load_balancer]` lines.
fn config(lb: &str, targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
[load_balancer]
{lb}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ {} ]
"#,
        targets.join(", ")
    )
}

fn assert_elb_page(resp: &str, status_line: &str) {
    assert!(
        resp.starts_with(status_line),
        "want {status_line:?}, got {resp}"
    );
    assert!(resp.contains("server: awselb/2.0\r\n"), "{resp}");
    assert!(resp.contains("content-type: text/html\r\n"), "{resp}");
    let title = status_line.trim_start_matches("HTTP/1.1 ").trim_end();
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    assert!(resp.ends_with(&page), "{resp}");
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    raw_exchange(stream, bytes).await
}

#[tokio::test]
async fn malformed_heads_get_albs_pages() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("", &[target])).await;
    let addr = proxy.listener_addr(0);

    // Not HTTP at all, and a header line without a colon: 400 with ALB's page.
    for bad in [
        &b"\x16\x03\x01 not http at all\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    ] {
        assert_elb_page(&exchange(addr, bad).await, "HTTP/1.1 400 Bad Request\r\n");
    }

    // Request line over 16 K: 414, answered before the head is even complete.
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(17 * 1024));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(long.as_bytes()).await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(
        resp.starts_with("HTTP/1.1 414 Request-URI Too Large\r\n"),
        "{resp}"
    );

    // One header over 16 K, and a head over 64 K: 400.
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    assert_elb_page(
        &exchange(addr, big_header.as_bytes()).await,
        "HTTP/1.1 400 Bad Request\r\n",
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..9 {
        many.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(8 * 1024)));
    }
    many.push_str("\r\n");
    assert_elb_page(
        &exchange(addr, many.as_bytes()).await,
        "HTTP/1.1 400 Bad Request\r\n",
    );
    // Just under the limits is forwarded.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(15 * 1024)
    );
    assert!(exchange(addr, fine.as_bytes())
        .await
        .starts_with("HTTP/1.1 200"));

    // Unsupported Transfer-Encoding: 501.
    let te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert_elb_page(
        &exchange(addr, te).await,
        "HTTP/1.1 501 Not Implemented\r\n",
    );

    // The HTTP/2 preface, and HTTP/3.0, on an HTTP/1 connection: 505.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_elb_page(
        &exchange(addr, preface).await,
        "HTTP/1.1 505 HTTP Version Not Supported\r\n",
    );
    let v3 = b"GET / HTTP/3.0\r\nHost: a\r\n\r\n";
    assert_elb_page(
        &exchange(addr, v3).await,
        "HTTP/1.1 505 HTTP Version Not Supported\r\n",
    );

    // More than 30 X-Forwarded-For addresses: 463.
    let xff: Vec<String> = (0..31).map(|i| format!("10.0.0.{i}")).collect();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {}\r\nConnection: close\r\n\r\n",
        xff.join(", ")
    );
    let resp = exchange(addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 463 "), "{resp}");
    assert!(resp.contains("server: awselb/2.0"), "{resp}");
}

#[tokio::test]
async fn a_bad_request_after_good_ones_answers_them_and_then_closes() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("", &[target])).await;
    // Two pipelined requests, the second malformed: the first is served, the second
    // gets 400 and the connection closes; nothing after it is interpreted.
    let resp = exchange(
        proxy.listener_addr(0),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nBad Header\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 1, "{resp}");
    assert!(resp.contains("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(resp.contains("connection: close\r\n"), "{resp}");
    assert!(!resp.contains("get /three"), "{resp}");
}

#[tokio::test]
async fn silent_clients_get_408_and_idle_kept_alive_ones_are_closed() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("idle_timeout = \"300ms\"", &[target])).await;
    let addr = proxy.listener_addr(0);

    // Connected, sent nothing.
    let start = Instant::now();
    let resp = raw_exchange(TcpStream::connect(addr).await.unwrap(), b"").await;
    assert_elb_page(&resp, "HTTP/1.1 408 Request Time-out\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(280),
        "{:?}",
        start.elapsed()
    );

    // Started a head, then went quiet.
    let resp = raw_exchange(
        TcpStream::connect(addr).await.unwrap(),
        b"GET / HTTP/1.1\r\nHo",
    )
    .await;
    assert_elb_page(&resp, "HTTP/1.1 408 Request Time-out\r\n");

    // A kept-alive connection that served a request and went idle is closed quietly.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    within("the idle close", s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn a_slow_target_is_not_a_silent_client() {
    let pki = Pki::new();
    let (target, _arrived) = delayed_target(Duration::from_millis(400)).await;
    let proxy = start_proxy(
        &pki,
        &config(
            "idle_timeout = \"600ms\"\nheader_read_timeout = \"200ms\"",
            &[target],
        ),
    )
    .await;
    let resp = exchange(
        proxy.listener_addr(0),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("slow"), "{resp}");
}

#[tokio::test]
async fn a_client_that_leaves_early_does_not_disturb_others() {
    let pki = Pki::new();
    let (target, mut arrived) = delayed_target(Duration::from_millis(300)).await;
    let proxy = start_proxy(&pki, &config("", &[target])).await;
    let addr = proxy.listener_addr(0);
    // The client sends a request and closes before the answer (ALB logs 460, sends nothing).
    let mut gone = TcpStream::connect(addr).await.unwrap();
    gone.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    within("the request at the target", arrived.recv()).await;
    drop(gone);
    let resp = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
}

/// What the target received for one request through a proxy with `lb` settings.
async fn head_at_target(lb: &str, request: &str) -> String {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config(lb, &[target])).await;
    let resp = exchange(proxy.listener_addr(0), request.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    body_of(&resp).to_ascii_lowercase()
}

#[tokio::test]
async fn x_forwarded_for_in_each_mode() {
    let with_xff = "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n";
    let without = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

    let head = head_at_target("", with_xff).await;
    assert!(
        head.contains("\r\nx-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{head}"
    );
    let head = head_at_target("", without).await;
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );

    let head = head_at_target("xff_client_port = true", with_xff).await;
    let entry = head
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: 203.0.113.9, 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no ip:port entry in {head}"));
    assert!(entry.trim().parse::<u16>().is_ok(), "{head}");

    let head = head_at_target(
        "xff_header_processing = \"preserve\"\nxff_client_port = true",
        with_xff,
    )
    .await;
    assert!(
        head.contains("\r\nx-forwarded-for: 203.0.113.9\r\n"),
        "{head}"
    );
    let head = head_at_target("xff_header_processing = \"preserve\"", without).await;
    assert!(!head.contains("x-forwarded-for"), "{head}");

    let head = head_at_target("xff_header_processing = \"remove\"", with_xff).await;
    assert!(!head.contains("x-forwarded-for"), "{head}");
}

#[tokio::test]
async fn trace_id_is_added_or_gets_a_self_field() {
    let head = head_at_target("", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let line = head
        .lines()
        .find(|l| l.starts_with("x-amzn-trace-id: "))
        .unwrap();
    let id = line.strip_prefix("x-amzn-trace-id: root=1-").unwrap();
    let (epoch, random) = id.split_once('-').unwrap();
    assert_eq!(epoch.len(), 8, "{line}");
    assert_eq!(random.len(), 24, "{line}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let epoch = u64::from_str_radix(epoch, 16).unwrap();
    assert!(now.abs_diff(epoch) < 60, "{line}");

    let head = head_at_target(
        "",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: Root=1-63441c4a-abcdef012345678912345678;CalledFrom=app\r\nConnection: close\r\n\r\n",
    )
    .await;
    let line = head
        .lines()
        .find(|l| l.starts_with("x-amzn-trace-id: "))
        .unwrap();
    assert!(line.starts_with("x-amzn-trace-id: self=1-"), "{line}");
    assert!(
        line.ends_with(";root=1-63441c4a-abcdef012345678912345678;calledfrom=app"),
        "{line}"
    );
}

#[tokio::test]
async fn preserve_host_header_on_and_off() {
    let req = "GET / HTTP/1.1\r\nHost: Example.COM\r\nConnection: close\r\n\r\n";
    let head = head_at_target("", req).await;
    assert!(
        head.contains("\r\nhost: example.com:"),
        "port appended on a non-80/443 listener: {head}"
    );
    let head = head_at_target("preserve_host_header = true", req).await;
    assert!(head.contains("\r\nhost: example.com\r\n"), "{head}");
    // Absolute form: the request line's authority wins unless the header is preserved.
    let abs = "GET http://dns.test/x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let head = head_at_target("", abs).await;
    assert!(head.contains("\r\nhost: dns.test:"), "{head}");
    let head = head_at_target("preserve_host_header = true", abs).await;
    assert!(head.contains("\r\nhost: example.com\r\n"), "{head}");
}

#[tokio::test]
async fn invalid_header_fields_are_dropped_only_when_asked() {
    let req = "GET / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\nX.Dot: 2\r\nX-Fine-9: 3\r\nConnection: close\r\n\r\n";
    let head = head_at_target("", req).await;
    assert!(head.contains("\r\nx_under: 1\r\n"), "{head}");
    assert!(head.contains("\r\nx.dot: 2\r\n"), "{head}");
    let head = head_at_target("drop_invalid_header_fields = true", req).await;
    assert!(!head.contains("x_under"), "{head}");
    assert!(!head.contains("x.dot"), "{head}");
    assert!(head.contains("\r\nx-fine-9: 3\r\n"), "{head}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_load_balancer() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("", &[target])).await;
    let mut s = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = within("100 Continue", read_head(&mut s)).await.unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let head = body_of(&resp).to_ascii_lowercase();
    assert!(
        !head.contains("expect"),
        "Expect reached the target: {head}"
    );
    assert!(head.starts_with("post /up http/1.1\r\n"), "{head}");
}

/// A target whose keep-alive timeout (100 ms) is shorter than the load balancer's idle
/// timeout. It notices an expired connection only when the next request arrives on it,
/// and closes it then, the way a FIN crosses a request on the wire.
async fn short_keep_alive_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut last: Option<Instant> = None;
                while read_head(&mut s).await.is_some() {
                    if last.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
                        return; // keep-alive expired: close without answering
                    }
                    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    last = Some(Instant::now());
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_target_with_a_shorter_keep_alive_gives_intermittent_502s() {
    let pki = Pki::new();
    let target = short_keep_alive_target().await;
    let proxy = start_proxy(&pki, &config("idle_timeout = \"5s\"", &[target])).await;
    let addr = proxy.listener_addr(0);
    let get = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    // Back to back, the pooled connection is reused and fine.
    assert!(exchange(addr, get).await.starts_with("HTTP/1.1 200"));
    assert!(exchange(addr, get).await.starts_with("HTTP/1.1 200"));
    // After the target's keep-alive ran out (but not the load balancer's idle timeout),
    // the pooled connection is reused, the target closes it, and the client gets a 502:
    // no silent retry, as with ALB.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = exchange(addr, get).await;
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
    // The next request opens a fresh connection.
    assert!(exchange(addr, get).await.starts_with("HTTP/1.1 200"));
}
