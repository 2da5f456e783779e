//! Tunnels as the proxy keeps them: listed while open with what they join, and ended
//! with one record whose cause tells how (FIN or RST, from which side); upgrades whose
//! request has a body, and refusals the target frames in chunks.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use albatross::ProxyHandle;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy on plain HTTP (listener 1 of [`forward_config`]) in front of a target that
/// answers every upgrade with a 101.
async fn tunnel_proxy() -> (Pki, ProxyHandle, RawUpgradeTarget) {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = raw_upgrade_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target.addr])).await;
    (pki, proxy, target)
}

#[tokio::test]
async fn open_tunnels_are_listed_with_what_they_join_until_they_close() {
    let (_pki, proxy, mut target) = tunnel_proxy().await;
    let listener = proxy.listener_addr(1);
    let (mut client, mut server) = target.tunnel(listener).await;
    eventually("the tunnel to be listed", || proxy.tunnels().len() == 1).await;

    let listed = proxy.tunnels().remove(0);
    assert_eq!(listed.listener_port, listener.port());
    assert_eq!(listed.client, client.local_addr().unwrap());
    assert_eq!(listed.target_addr(), target.addr);
    assert_eq!(&**listed.target_group(), "app");
    assert!(listed.opened_at() <= std::time::SystemTime::now());

    let (mut second, _second_server) = target.tunnel(listener).await;
    eventually("both tunnels to be listed", || proxy.tunnels().len() == 2).await;
    let ids: Vec<_> = proxy.tunnels().iter().map(|t| t.id).collect();
    assert_ne!(ids[0], ids[1]);

    // Both sides close: the tunnel leaves the list; the other one stays.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("EOF at the target", server.read_to_end(&mut rest))
        .await
        .unwrap();
    drop(server);
    let mut b = [0u8; 1];
    assert_eq!(
        within("EOF at the client", client.read(&mut b))
            .await
            .unwrap(),
        0
    );
    eventually("the closed tunnel to leave the list", || {
        proxy.tunnels().len() == 1
    })
    .await;
    assert_ne!(proxy.tunnels()[0].id, listed.id);
    second.shutdown().await.unwrap();
}

/// How a test ends a tunnel, and the cause its record must name.
#[derive(Clone, Copy, Debug)]
enum Ending {
    ClientFin,
    TargetFin,
    ClientRst,
    TargetRst,
}

fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

async fn end_one_tunnel(ending: Ending) -> String {
    let logs = LogCapture::start();
    let (_pki, proxy, mut target) = tunnel_proxy().await;
    let (mut client, mut server) = target.tunnel(proxy.listener_addr(1)).await;
    // One byte each way first, so both directions have moved bytes.
    client.write_all(b"c").await.unwrap();
    let mut b = [0u8; 1];
    within("byte at the target", server.read_exact(&mut b))
        .await
        .unwrap();
    server.write_all(b"t").await.unwrap();
    within("byte at the client", client.read_exact(&mut b))
        .await
        .unwrap();
    eventually("the tunnel to be listed", || proxy.tunnels().len() == 1).await;
    match ending {
        Ending::ClientFin => {
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = within("EOF at the target", server.read_to_end(&mut rest)).await;
            drop(server);
        }
        Ending::TargetFin => {
            server.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = within("EOF at the client", client.read_to_end(&mut rest)).await;
            drop(client);
        }
        Ending::ClientRst => reset(client),
        Ending::TargetRst => reset(server),
    }
    eventually("the tunnel to close", || proxy.tunnels().is_empty()).await;

    eventually("the close line", || logs.text().contains("Tunnel closed")).await;
    logs.text()
}

#[tokio::test]
async fn each_end_is_recorded_with_its_cause_and_bytes() {
    let cases = [
        (Ending::ClientFin, "client_close"),
        (Ending::TargetFin, "target_close"),
        (Ending::ClientRst, "client_reset"),
        (Ending::TargetRst, "target_reset"),
    ];
    for (ending, cause) in cases {
        let text = end_one_tunnel(ending).await;
        let line = text
            .lines()
            .find(|l| l.contains("Tunnel closed"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains(&format!("cause=\"{cause}\"")),
            "{ending:?}: {line}"
        );
        assert!(line.contains("bytes_from_client=1"), "{ending:?}: {line}");
        assert!(line.contains("bytes_to_client=1"), "{ending:?}: {line}");
        assert!(line.contains("target_group=\"app\""), "{ending:?}: {line}");
        assert!(line.contains("path=\"splice\""), "{ending:?}: {line}");
    }
}

/// A target that reads an upgrade request with a `Content-Length` body, answers 101 and
/// then echoes; the body it got is echoed first.
async fn body_upgrade_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let mut body = vec![0u8; content_length(&head)];
                if s.read_exact(&mut body).await.is_err() {
                    return;
                }
                let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(resp.as_bytes()).await.is_err() || s.write_all(&body).await.is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upgrade_request_with_a_body_opens_a_tunnel() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = body_upgrade_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;

    for listener in [proxy.listener_addr(1), proxy.listener_addr(0)] {
        let request = "POST /up HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello";
        let mut got = Vec::new();
        if listener == proxy.listener_addr(1) {
            let mut client = TcpStream::connect(listener).await.unwrap();
            client.write_all(request.as_bytes()).await.unwrap();
            exchange_through(&mut client, &mut got).await;
        } else {
            let mut client = pki.connect(listener, "localhost").await;
            client.write_all(request.as_bytes()).await.unwrap();
            exchange_through(&mut client, &mut got).await;
        }
        assert_eq!(got, b"hello, tunnel");
    }
}

/// Read the 101, then the echoed request body and an echo of what is written after it.
async fn exchange_through<S>(client: &mut S, got: &mut Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head = within("101", read_head(client)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    got.resize(5, 0);
    within("the echoed body", client.read_exact(got))
        .await
        .unwrap();
    client.write_all(b", tunnel").await.unwrap();
    let mut more = [0u8; 8];
    within("the echo", client.read_exact(&mut more))
        .await
        .unwrap();
    got.extend_from_slice(&more);
}

#[tokio::test]
async fn a_refusal_in_chunks_is_relayed_and_opens_no_tunnel() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = fixed_target(
        "HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\nX-From: target\r\n\r\n5\r\nnope!\r\n0\r\n\r\n",
    )
    .await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;

    let client = TcpStream::connect(proxy.listener_addr(1)).await.unwrap();
    let mut request = upgrade_request("localhost", "/ws");
    request = request.replace("Connection: Upgrade", "Connection: Upgrade, close");
    let resp = raw_exchange(client, request.as_bytes()).await;
    assert_eq!(status_of(&resp), 426, "{resp}");
    assert!(resp.contains("x-from: target"), "{resp}");
    assert!(body_of(&resp).contains("nope!"), "{resp}");
    assert!(proxy.tunnels().is_empty());
}
