//! Keep-alive connections to targets: reused across client connections, closed after
//! the idle timeout or when their target leaves its group, never reused after a
//! response the client did not read to the end.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Counts of a target's connections: opened, and closed by the other side.
#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// Larger than what loopback socket buffers absorb, so a client that stops reading
/// leaves the answer unfinished.
const BIG: usize = 32 * 1024 * 1024;

/// A target on a port of its own that counts the connections it accepts and serves
/// each with `serve`.
async fn target_with<F, Fut>(serve: F) -> (SocketAddr, Arc<Counts>)
where
    F: Fn(TcpStream, Arc<Counts>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c.opened.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, c.clone()));
        }
    });
    (addr, counts)
}

/// A keep-alive target answering `ok`, or a [`BIG`] body for `/big`.
async fn counting_target() -> (SocketAddr, Arc<Counts>) {
    target_with(|mut s, c| async move {
        while let Some(head) = read_head(&mut s).await {
            let body = if head.starts_with("GET /big ") {
                "x".repeat(BIG)
            } else {
                "ok".to_string()
            };
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if s.write_all(resp.as_bytes()).await.is_err()
                || s.write_all(body.as_bytes()).await.is_err()
            {
                break;
            }
        }
        c.closed.fetch_add(1, Ordering::SeqCst);
    })
    .await
}

fn config(target: SocketAddr) -> String {
    format!(
        r#"
[load_balancer]
idle_timeout = "1s"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ "{target}" ]
health_check = {{ enabled = false }}
"#
    )
}

async fn get(proxy: SocketAddr, path: &str) -> String {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    raw_exchange(stream, req.as_bytes()).await
}

#[tokio::test]
async fn target_connections_are_reused_then_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let (target, counts) = counting_target().await;
    let proxy = start_proxy(&pki, &config(target)).await;
    let addr = proxy.listener_addr(0);

    for _ in 0..3 {
        let resp = get(addr, "/").await;
        assert_eq!(status_of(&resp), 200, "{resp}");
        assert_eq!(body_of(&resp), "ok");
    }
    assert_eq!(
        counts.opened.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );

    // Idle for the idle timeout (1 s): the load balancer closes it.
    eventually("the idle target connection is closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let resp = get(addr, "/").await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_response_the_client_abandons_does_not_return_its_connection() {
    let pki = Pki::new();
    let (target, counts) = counting_target().await;
    let proxy = start_proxy(&pki, &config(target)).await;
    let addr = proxy.listener_addr(0);

    // The client reads only the head of a large answer and goes away.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = within("head", read_head(&mut stream)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(stream);

    // The half-read connection is not reused: the next request gets a fresh one and
    // its own complete answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = get(addr, "/").await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(body_of(&resp), "ok");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

/// A keep-alive target whose answers to bodiless requests are framed in every way an
/// HTTP/1.1 server may frame them: `Content-Length`, after an interim `100`, chunked, and
/// close-delimited (then it closes).
async fn framing_target() -> (SocketAddr, Arc<Counts>) {
    target_with(|mut s, _| async move {
        while let Some(head) = read_head(&mut s).await {
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let resp: &[u8] = match path.as_str() {
                "/interim" => {
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                }
                "/chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                }
                "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            };
            if s.write_all(resp).await.is_err() || path == "/close" {
                break;
            }
        }
    })
    .await
}

#[tokio::test]
async fn answers_to_bodiless_requests_are_relayed_however_they_are_framed() {
    let pki = Pki::new();
    let (target, counts) = framing_target().await;
    let proxy = start_proxy(&pki, &config(target)).await;
    let addr = proxy.listener_addr(0);

    for path in ["/", "/", "/interim", "/chunked", "/", "/chunked", "/"] {
        let resp = get(addr, path).await;
        assert_eq!(status_of(&resp), 200, "{path}: {resp}");
        let body = body_of(&resp);
        if path == "/chunked" {
            assert_eq!(body, "2\r\nok\r\n0\r\n\r\n", "{path}: {resp}");
        } else {
            assert_eq!(body, "ok", "{path}: {resp}");
        }
    }
    assert_eq!(
        counts.opened.load(Ordering::SeqCst),
        1,
        "one connection, kept whatever the framing"
    );

    // A close-delimited answer ends its connection; the next request opens another.
    let resp = get(addr, "/close").await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(body_of(&resp).contains("ok"), "{resp}");
    let resp = get(addr, "/").await;
    assert_eq!(body_of(&resp), "ok", "{resp}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_targets_pool_is_dropped_when_it_leaves_its_group() {
    let pki = Pki::new();
    let (target, counts) = counting_target().await;
    // An idle timeout far beyond the test: only the target's departure closes its pool.
    let text = config(target)
        .replace("idle_timeout = \"1s\"", "idle_timeout = 600")
        .replace(
            "health_check = { enabled = false }",
            "health_check = { enabled = false }\nderegistration_delay = \"200ms\"",
        );
    let proxy = start_proxy(&pki, &text).await;
    let addr = proxy.listener_addr(0);

    let resp = get(addr, "/").await;
    assert_eq!(body_of(&resp), "ok", "{resp}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0, "kept alive");

    proxy.deregister_target("app", target).unwrap();
    eventually("the departed target's pooled connection is closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the target to leave its group", || {
        proxy.target_health("app").unwrap().is_empty()
    })
    .await;

    // Registered again, it is a new target with a pool of its own.
    proxy.register_target("app", target).unwrap();
    let resp = get(addr, "/").await;
    assert_eq!(body_of(&resp), "ok", "{resp}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}
