//! Slow and abusive clients: a head trickled byte by byte is answered within the header
//! timeout of its first byte, and the connection limit refuses what is past it while
//! everything open keeps working.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use albatross::ProxyHandle;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

[admin]
listen = "127.0.0.1:0"
"#,
        targets.join(", ")
    )
}

/// One counter's value from `/metrics`.
async fn counter(proxy: &ProxyHandle, name: &str) -> f64 {
    let stream = TcpStream::connect(proxy.admin_addr().unwrap())
        .await
        .unwrap();
    let resp = raw_exchange(
        stream,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let prefix = format!("{name} ");
    resp.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{resp}"))
}

/// A served request on `s` (kept alive); false when the connection was closed or reset.
async fn served(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match within("a response head", s.read(&mut byte)).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut body = vec![0u8; content_length(&head)];
    s.read_exact(&mut body).await.is_ok() && head.starts_with("HTTP/1.1 200")
}

/// How a trickling client's connection ended, and when (from its first byte).
#[derive(Debug)]
enum Trickled {
    /// The load balancer answered (its status line) and closed.
    Answered(String, Duration),
    /// Closed with nothing said (the time is read only in failure messages).
    Closed(#[allow(dead_code)] Duration),
    /// Still open when the client gave up.
    Open,
}

/// Send a request line, then one header byte every `every`, for at most `budget`;
/// stop at the load balancer's answer or close.
async fn trickle(addr: SocketAddr, every: Duration, budget: Duration) -> Trickled {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let first = Instant::now();
    if s.write_all(b"GET / HTTP/1.1\r\n").await.is_err() {
        return Trickled::Closed(first.elapsed());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while first.elapsed() < budget {
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let text = String::from_utf8_lossy(&got).to_string();
                return match text.lines().next() {
                    Some(line) => Trickled::Answered(line.to_string(), first.elapsed()),
                    None => Trickled::Closed(first.elapsed()),
                };
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                // One more byte of a header that never ends.
                let _ = s.write_all(b"x").await;
            }
        }
    }
    Trickled::Open
}

/// Slowloris: 1,000 clients each send a request line and then one header byte every
/// 100 ms. Each is answered 408 and closed within `header_read_timeout` (1 s) of its
/// first byte, however long it would go on; a normal client is served meanwhile. Before
/// the head had a deadline of its own, each byte restarted the clock and every one of
/// them stayed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_answered_within_the_header_timeout() {
    // Two descriptors per client in this process (its socket and the proxy's).
    albatross::proxy::limit::raise_descriptor_limit();
    let clients = albatross::proxy::limit::descriptor_limit()
        .map_or(1000, |n| ((n.saturating_sub(256)) / 2).min(1000)) as usize;
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(
        &pki,
        &config("idle_timeout = 10\nheader_read_timeout = \"1s\"", &[target]),
    )
    .await;
    let addr = proxy.listener_addr(0);

    let every = Duration::from_millis(100);
    let budget = Duration::from_secs(6);
    let slow: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(trickle(addr, every, budget)))
        .collect();
    // Meanwhile a client that sends its request at once is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut normal = TcpStream::connect(addr).await.unwrap();
    let asked = Instant::now();
    assert!(within("the normal client", served(&mut normal)).await);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    let mut latest = Duration::ZERO;
    for (i, t) in slow.into_iter().enumerate() {
        match t.await.unwrap() {
            Trickled::Answered(line, after) => {
                assert_eq!(line, "HTTP/1.1 408 Request Time-out", "client {i}");
                latest = latest.max(after);
            }
            other => panic!("client {i} of {clients}: {other:?}"),
        }
    }
    // The deadline is 1 s from the first byte; the timer's granularity and a loaded
    // machine add a little, a clock restarted by each byte would add the whole budget.
    assert!(
        latest < Duration::from_millis(2500),
        "the last trickling client was answered {latest:?} after its first byte"
    );
    // Still serving.
    assert!(served(&mut normal).await);
}

/// A head that arrives in pieces within the deadline is served as usual.
#[tokio::test]
async fn a_head_in_pieces_within_the_deadline_is_served() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("header_read_timeout = \"1s\"", &[target])).await;
    let mut s = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    for piece in [
        &b"GET /p HTTP/1.1\r\n"[..],
        b"Host: a\r\n",
        b"X-A: b\r\n",
        b"\r\n",
    ] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // The next head on the same connection gets a deadline of its own.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for piece in [&b"GET /q HTTP/1.1\r\n"[..], b"Host: a\r\n\r\n"] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
}

/// `max_connections = 3`: a fourth client connection is closed at once and counted;
/// the three open ones keep working, and once one closes a new one is served.
#[tokio::test]
async fn the_connection_past_the_limit_is_closed_and_counted() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let proxy = start_proxy(&pki, &config("max_connections = 3", &[target])).await;
    let addr = proxy.listener_addr(0);

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(served(&mut s).await);
        open.push(s);
    }
    assert_eq!(
        counter(&proxy, "albatross_rejected_connection_count_total").await,
        0.0
    );

    let mut refused = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = within("the refused connection's close", refused.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the fourth connection was not closed: {read:?}"
    );
    assert_eq!(
        counter(&proxy, "albatross_rejected_connection_count_total").await,
        1.0
    );

    // The three are untouched.
    for s in &mut open {
        assert!(served(s).await);
    }
    // A place given back is taken by the next connection.
    drop(open.pop());
    let mut next = eventually_served(addr).await;
    assert!(served(&mut next).await);
}

/// A connection that closes gives its place back, asynchronously: try until served.
async fn eventually_served(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if served(&mut s).await {
            return s;
        }
        assert!(Instant::now() < deadline, "no place was given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A limit lowered by a reload refuses new connections and closes none.
#[tokio::test]
async fn a_reload_changes_the_limit_without_closing_anything() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let text = config("max_connections = 10", &[target]);
    let proxy = start_proxy(&pki, &text).await;
    let addr = proxy.listener_addr(0);
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut a).await);
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut b).await);

    proxy
        .reload_str(&text.replace("max_connections = 10", "max_connections = 1"))
        .await
        .expect("reload");
    assert!(served(&mut a).await && served(&mut b).await);
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(!served(&mut c).await, "a third connection was served");
    assert!(counter(&proxy, "albatross_rejected_connection_count_total").await >= 1.0);
}
