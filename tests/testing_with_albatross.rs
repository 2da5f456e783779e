//! The README's "Testing with albatross" example, as it is printed there: start albatross
//! in-process on a free port, register a heartbeat backend, open a WebSocket through it,
//! drop the network under it, and check that the backend's heartbeat noticed while the
//! client heard nothing until albatross closed what was left.

use std::time::Duration;

use albatross::backend::{self, BackendOptions};
use albatross::{Mode, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_backend_notices_a_dropped_network_by_its_heartbeat(
) -> Result<(), Box<dyn std::error::Error>> {
    // A heartbeat backend: a Ping every second, the socket dropped when no Pong
    // follows within 300 ms.
    let stop_backend = CancellationToken::new();
    let backend = backend::start(
        TcpListener::bind("127.0.0.1:0").await?,
        BackendOptions {
            id: "b1".into(),
            ping_interval: Some(Duration::from_secs(1)),
            ping_timeout: Some(Duration::from_millis(300)),
            redis: None,
        },
        stop_backend.clone(),
    )
    .await?;

    // albatross on a free port, its target group empty until the test registers one.
    let proxy = Proxy::start_str(
        r#"
        [load_balancer]
        idle_timeout = "3s"

        [[listener]]
        address = "127.0.0.1"
        port = 0
        protocol = "HTTP"
        default_action = { type = "forward", target_group = "app" }

        [[target_group]]
        name = "app"
        targets = []
        "#,
    )
    .await?;
    proxy.register_target("app", backend.local_addr())?;

    // A WebSocket through the proxy: the handshake, then the backend's hello.
    let mut client = TcpStream::connect(proxy.listener_addr(0)).await?;
    client
        .write_all(
            b"GET /ws?user=alice HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await?;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(r#""type":"hello""#) {
        let n = timeout(Duration::from_secs(5), client.read(&mut buf)).await??;
        assert!(n > 0, "the tunnel closed early");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101 "));

    // Drop the network under the tunnel.
    let tunnel = proxy.tunnels().pop().expect("the tunnel is listed");
    proxy.disconnect(tunnel.id, Mode::NetworkDrop);
    let dropped = Instant::now();

    // The backend's Ping gets no Pong: its heartbeat ends the socket.
    timeout(Duration::from_secs(5), backend.wait_for_connections(0)).await?;

    // The client hears nothing (no Ping, no close) until albatross closes what is left,
    // with a FIN, one idle timeout after the drop.
    let n = timeout(Duration::from_secs(10), client.read(&mut buf)).await??;
    assert_eq!(n, 0, "the client got bytes after the drop");
    assert!(dropped.elapsed() >= Duration::from_secs(3));

    proxy.shutdown().await;
    stop_backend.cancel();
    Ok(())
}
