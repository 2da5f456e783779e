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
    // `name{labels} value`
    resp.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find_map(|l| l.rsplit(' ').next())
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
    /// Closed with nothing said (and how the read ended).
    Closed(Duration, String),
    /// Still open when the client gave up.
    Open,
}

/// Send a request line, then one header byte every `every`, for at most `budget`;
/// stop at the load balancer's answer or close.
async fn trickle(addr: SocketAddr, every: Duration, budget: Duration) -> Trickled {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let first = Instant::now();
    if let Err(e) = s.write_all(b"GET / HTTP/1.1\r\n").await {
        return Trickled::Closed(first.elapsed(), e.to_string());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while first.elapsed() < budget {
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(end @ (Ok(0) | Err(_))) => {
                let text = String::from_utf8_lossy(&got).to_string();
                return match text.lines().next() {
                    Some(line) => Trickled::Answered(line.to_string(), first.elapsed()),
                    None => Trickled::Closed(first.elapsed(), format!("{end:?}")),
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
            Trickled::Closed(after, how) => panic!(
                "client {i} of {clients}: closed {after:?} after its first byte with nothing said ({how})"
            ),
            Trickled::Open => panic!("client {i} of {clients}: still open when it gave up"),
        }
    }
    // The deadline is 1 s from the first byte; the timer's granularity and a loaded
    // machine add a little, a clock restarted by each byte would add the whole budget.
    assert!(
        latest < Duration::from_millis(2500),
        "the last trickling client was answered {latest:?} after its first byte"
    );
    // Still serving (a new connection: the first one has been idle past the timeout).
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut after).await);
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

/// A target that reads each request's whole body (`Content-Length`) before answering
/// `200` with the number of body bytes it got.
async fn body_reading_target() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let mut body = vec![0u8; content_length(&head)];
                    if s.read_exact(&mut body).await.is_err() {
                        break;
                    }
                    let text = body.len().to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An upload that takes four idle timeouts but never pauses for one goes through: the
/// wait for the target's answer counts from the body's last byte. Before, the target
/// was given one idle timeout from the head, and the upload got a 504.
#[tokio::test]
async fn a_slow_steady_upload_is_not_a_timeout() {
    let pki = Pki::new();
    let target = body_reading_target().await;
    let proxy = start_proxy(&pki, &config("idle_timeout = \"500ms\"", &[target])).await;
    let mut s = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(&[b'x'; 100]).await.unwrap();
    }
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n1000"), "{resp}");
    assert!(started.elapsed() >= Duration::from_millis(2000));
}

/// A body that stops arriving for the idle timeout is the client's silence: 408 and
/// the connection closes, where the target's silence after a whole request is a 504.
#[tokio::test]
async fn a_stalled_body_gets_408_and_a_silent_target_504() {
    let pki = Pki::new();
    let target = body_reading_target().await;
    let proxy = start_proxy(&pki, &config("idle_timeout = \"400ms\"", &[target])).await;
    let addr = proxy.listener_addr(0);

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let sent = Instant::now();
    let resp = read_response(&mut s).await;
    let after = sent.elapsed();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(
        after >= Duration::from_millis(380) && after < Duration::from_millis(1500),
        "answered {after:?} after the last byte"
    );
    let mut rest = Vec::new();
    let _ = within("the close after the 408", s.read_to_end(&mut rest)).await;

    // A whole request to a target that never answers: 504 one idle timeout after it.
    let silent = silent_target().await;
    let proxy = start_proxy(&pki, &config("idle_timeout = \"400ms\"", &[silent])).await;
    let mut s = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
}

/// A TLS handshake trickled a byte at a time is cut at `tls_handshake_timeout` counted
/// from its start, however the bytes keep coming.
#[tokio::test]
async fn a_trickled_tls_handshake_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = echo_head_target().await;
    let text = format!(
        "[load_balancer]\ntls_handshake_timeout = \"1s\"\n\n[[listener]]\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"HTTPS\"\ncertificates = [ {{ cert = \"{}\", key = \"{}\" }} ]\ndefault_action = {{ type = \"forward\", target_group = \"app\" }}\n\n[[target_group]]\nname = \"app\"\ntargets = [ \"{target}\" ]\n",
        cert.0.display(),
        cert.1.display()
    );
    let proxy = start_proxy(&pki, &text).await;
    let mut s = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let started = Instant::now();
    // A handshake record announcing 512 bytes of ClientHello, then a byte every 100 ms.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let ended = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still open after 5 s"
        );
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => {
                if s.write_all(&[0]).await.is_err() {
                    break started.elapsed();
                }
            }
        }
    };
    assert!(
        ended >= Duration::from_millis(950) && ended < Duration::from_millis(2500),
        "closed {ended:?} after the first byte"
    );
}

/// Sends a POST of `length` bytes on `client` whose body is sent as `chunks`, one every
/// `every` (the rest of the body never comes); the response's status and body, and
/// the time from the last chunk sent to the response.
async fn h2_upload(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    length: usize,
    chunks: &[&'static [u8]],
    every: Duration,
) -> (u16, String, Duration) {
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/up")
        .header("content-length", length)
        .body(())
        .unwrap();
    let (resp, mut body) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, false)
        .unwrap();
    let sent_all = chunks.iter().map(|c| c.len()).sum::<usize>() == length;
    for (i, chunk) in chunks.iter().enumerate() {
        tokio::time::sleep(every).await;
        let last = sent_all && i + 1 == chunks.len();
        body.send_data(bytes::Bytes::from_static(chunk), last)
            .unwrap();
    }
    let sent = Instant::now();
    let resp = within("the h2 response", resp).await.unwrap();
    let status = resp.status().as_u16();
    let mut recv = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = within("the h2 response body", recv.data()).await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (
        status,
        String::from_utf8_lossy(&text).into_owned(),
        sent.elapsed(),
    )
}

/// Over HTTP/2 a stream's body is followed as an HTTP/1 connection's is: a steady upload
/// longer than the idle timeout gets its 200, a body that stops arriving gets 408 one
/// idle timeout after its last byte (the connection's other streams unaffected), and a
/// silent target after a whole body gets 504. Before, the stalled body got 504 and the
/// steady upload too.
#[tokio::test]
async fn h2_stream_bodies_are_timed_from_their_last_byte() {
    let pki = Pki::new();
    let target = body_reading_target().await;
    let cert = pki.leaf("h2-body", &["localhost"]);
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "400ms", &[target])).await;
    let mut client = h2_client(&pki, proxy.listener_addr(0)).await;

    const PIECE: &[u8] = &[b'x'; 100];
    let (status, body, _) =
        h2_upload(&mut client, 1000, &[PIECE; 10], Duration::from_millis(150)).await;
    assert_eq!((status, body.as_str()), (200, "1000"), "a steady upload");

    let (status, _, after) =
        h2_upload(&mut client, 1000, &[PIECE; 2], Duration::from_millis(10)).await;
    assert_eq!(status, 408, "a stalled body");
    assert!(
        after >= Duration::from_millis(380) && after < Duration::from_millis(1500),
        "answered {after:?} after the body's last byte"
    );

    // The same connection still serves.
    let (status, body, _) = h2_upload(&mut client, 100, &[PIECE], Duration::ZERO).await;
    assert_eq!((status, body.as_str()), (200, "100"), "after the 408");

    let silent = silent_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "400ms", &[silent])).await;
    let mut client = h2_client(&pki, proxy.listener_addr(0)).await;
    let (status, _, _) = h2_upload(&mut client, 100, &[PIECE], Duration::ZERO).await;
    assert_eq!(status, 504, "a silent target after a whole body");
}
