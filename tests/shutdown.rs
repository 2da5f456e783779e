//! Graceful shutdown: stop accepting, finish in-flight requests, close tunnels at the
//! deadline.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn in_flight_request_finishes_and_new_connections_are_refused() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let (target, mut arrived) = delayed_target(Duration::from_millis(300)).await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;
    let addr = proxy.listener_addr(1);

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    within("request at the target", arrived.recv())
        .await
        .unwrap();
    let shutdown = tokio::spawn(proxy.shutdown_within(Duration::from_secs(5)));

    let resp = read_response(&mut client).await;
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.ends_with("slow"), "{resp}");

    within("shutdown to finish", shutdown).await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener must be closed after shutdown"
    );
}

#[tokio::test]
async fn open_tunnels_are_closed_at_the_deadline() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let mut target = raw_upgrade_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target.addr])).await;

    let (mut client, mut server) = target.tunnel(proxy.listener_addr(1)).await;

    let deadline = Duration::from_millis(400);
    let start = Instant::now();
    let shutdown = tokio::spawn(proxy.shutdown_within(deadline));

    // Before the deadline the tunnel still carries bytes.
    client.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    within("byte through the tunnel", server.read_exact(&mut b))
        .await
        .unwrap();

    // At the deadline both sides are closed.
    let n = within("client EOF", client.read(&mut b)).await.unwrap();
    assert_eq!(n, 0);
    let n = within("target EOF", server.read(&mut b)).await.unwrap();
    assert_eq!(n, 0);
    assert!(start.elapsed() >= deadline - Duration::from_millis(20));
    within("shutdown to finish", shutdown).await.unwrap();
}

/// A proxy forwarding to one in-process heartbeat backend (`inproc`, no pings).
async fn proxy_with_an_in_process_backend(pki: &Pki) -> albatross::ProxyHandle {
    let cert = pki.leaf("localhost", &["localhost"]);
    // A free port for the in-process backend (it must be named in the config).
    let port = closed_port().await.port();
    let backend = format!("127.0.0.1:{port}");
    let mut text = forward_config(pki, &cert, "60s", &[backend.parse().unwrap()]);
    text.push_str(&format!(
        "\n[[backend]]\nlisten = \"{backend}\"\nid = \"inproc\"\nping_interval = 0\n"
    ));
    start_proxy(pki, &text).await
}

#[tokio::test]
async fn in_process_backends_close_their_sockets_with_1001_through_the_tunnel() {
    let pki = Pki::new();
    let proxy = proxy_with_an_in_process_backend(&pki).await;
    let tls = pki.connect(proxy.listener_addr(0), "localhost").await;
    let mut ws =
        fastwebsockets::FragmentCollector::new(ws_handshake(tls, "localhost", "/ws").await);
    assert_eq!(next_json(&mut ws).await["backend"], "inproc");

    let start = Instant::now();
    let shutdown = tokio::spawn(proxy.shutdown_within(Duration::from_secs(5)));
    assert_eq!(
        within("close", read_until_end(&mut ws)).await,
        WsEnd::Close(1001)
    );
    drop(ws); // as a browser does after the close handshake
    within("shutdown to finish", shutdown).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_whole_shutdown_fits_in_one_deadline() {
    let pki = Pki::new();
    let proxy = proxy_with_an_in_process_backend(&pki).await;
    // A WebSocket whose client never reads: the backend's close frame (1001) gets no
    // answer, so neither the backend nor the tunnel finishes by itself.
    let plain = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let _ws = ws_handshake(plain, "localhost", "/ws").await;
    eventually("the tunnel to open", || proxy.tunnels().len() == 1).await;

    let deadline = Duration::from_millis(600);
    let start = Instant::now();
    within("shutdown", proxy.shutdown_within(deadline)).await;
    let took = start.elapsed();
    // Backends, connections and tunnels drain together: one deadline, not one each.
    assert!(took >= deadline - Duration::from_millis(20), "{took:?}");
    assert!(took < deadline + Duration::from_millis(400), "{took:?}");
}
