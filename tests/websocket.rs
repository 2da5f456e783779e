//! WebSocket through the proxy end to end: wss to heartbeat backends, big messages,
//! idle timeout on both sides, keep-alive by traffic, half-close, non-101 answers.

mod support;

use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn wss_reaches_both_backends_in_turn() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let b1 = start_backend("one", None, None).await;
    let b2 = start_backend("two", None, None).await;
    let proxy = start_proxy(
        &pki,
        &forward_config(&pki, &cert, "60s", &[b1.addr, b2.addr]),
    )
    .await;
    let addr = proxy.listener_addr(0);

    let mut seen = Vec::new();
    for i in 0..4 {
        let tls = pki.connect(addr, "localhost").await;
        let ws = ws_handshake(tls, "localhost", &format!("/ws?user=u{i}")).await;
        let mut ws = FragmentCollector::new(ws);
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["user"], format!("u{i}"));
        seen.push(hello["backend"].as_str().unwrap().to_string());
        ws.write_frame(text("ping?")).await.unwrap();
        let echo = within("echo", ws.read_frame()).await.unwrap();
        assert_eq!(echo.opcode, OpCode::Text);
        assert_eq!(&echo.payload[..], b"ping?");
    }
    assert_eq!(seen, ["one", "two", "one", "two"]);
}

#[tokio::test]
async fn one_mebibyte_message_arrives_intact() {
    let logs = LogCapture::start();
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let b = start_backend("big", None, None).await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[b.addr])).await;

    let tls = pki.connect(proxy.listener_addr(0), "localhost").await;
    let mut ws = FragmentCollector::new(ws_handshake(tls, "localhost", "/ws").await);
    let _hello = next_json(&mut ws).await;
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    ws.write_frame(Frame::binary(Payload::Borrowed(&payload)))
        .await
        .unwrap();
    let echo = within("1 MiB echo", ws.read_frame()).await.unwrap();
    assert_eq!(echo.opcode, OpCode::Binary);
    assert_eq!(echo.payload.len(), payload.len());
    assert!(
        echo.payload[..] == payload[..],
        "payload altered in transit"
    );

    // A TLS client's records are protected by albatross with the keys rustls handed over.
    drop(echo);
    drop(ws);
    within("tunnel log line", async {
        while !logs.text().contains("Tunnel closed") {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        logs.text().contains("path=\"tls_records\""),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn idle_tunnel_is_closed_on_both_sides() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let idle = Duration::from_millis(300);
    let b = start_backend("quiet", None, None).await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "300ms", &[b.addr])).await;

    let tls = pki.connect(proxy.listener_addr(0), "localhost").await;
    let mut ws = FragmentCollector::new(ws_handshake(tls, "localhost", "/ws?user=idle").await);
    let _hello = next_json(&mut ws).await;
    let quiet_since = Instant::now();
    assert_eq!(b.handle.connections(), 1);

    // The client sees the connection drop without a close frame (a browser's 1006).
    let end = within("idle close", read_until_end(&mut ws)).await;
    let waited = quiet_since.elapsed();
    assert_eq!(end, WsEnd::Abnormal1006);
    assert!(
        waited >= idle - Duration::from_millis(20),
        "closed early: {waited:?}"
    );
    assert!(
        waited < idle + Duration::from_secs(2),
        "closed late: {waited:?}"
    );

    // The backend sees its side end too.
    within("backend side to close", async {
        while b.handle.connections() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn target_sees_eof_and_client_sees_eof_at_idle_timeout() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let mut target = raw_upgrade_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "250ms", &[target.addr])).await;

    let (mut client, mut server) = target.tunnel(proxy.listener_addr(1)).await;
    let start = Instant::now();

    let mut buf = [0u8; 16];
    let n = within("target EOF", server.read(&mut buf)).await.unwrap();
    assert_eq!(n, 0, "target must see a clean EOF");
    let n = within("client EOF", client.read(&mut buf)).await.unwrap();
    assert_eq!(n, 0, "client must see the connection close");
    assert!(start.elapsed() >= Duration::from_millis(230));
}

#[tokio::test]
async fn traffic_in_either_direction_keeps_the_tunnel_open() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let mut target = raw_upgrade_target().await;
    let idle = Duration::from_millis(300);
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "300ms", &[target.addr])).await;

    let (mut client, mut server) = target.tunnel(proxy.listener_addr(1)).await;

    // Client → target only, for three idle periods.
    let mut b = [0u8; 1];
    let start = Instant::now();
    while start.elapsed() < idle * 3 {
        client.write_all(b"c").await.unwrap();
        server.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(idle / 3).await;
    }
    // Target → client only, for three more.
    let start = Instant::now();
    while start.elapsed() < idle * 3 {
        server.write_all(b"t").await.unwrap();
        client.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(idle / 3).await;
    }
    // Silence: now it closes.
    let n = within("idle EOF", client.read(&mut b)).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn backend_pings_keep_the_tunnel_open() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    // Pings every 100 ms, idle timeout 400 ms: the auto-pong answers count as traffic.
    let b = start_backend(
        "pinger",
        Some(Duration::from_millis(100)),
        Some(Duration::from_secs(5)),
    )
    .await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "400ms", &[b.addr])).await;
    let tls = pki.connect(proxy.listener_addr(0), "localhost").await;
    let mut ws = FragmentCollector::new(ws_handshake(tls, "localhost", "/ws").await);
    let _hello = next_json(&mut ws).await;

    let start = Instant::now();
    let outlived = tokio::time::timeout(Duration::from_millis(1500), read_until_end(&mut ws)).await;
    assert!(
        outlived.is_err(),
        "tunnel ended after {:?} although pings flowed",
        start.elapsed()
    );
    // Still usable.
    ws.write_frame(text("still here")).await.unwrap();
    loop {
        let f = within("echo", ws.read_frame()).await.unwrap();
        if f.opcode == OpCode::Text {
            assert_eq!(&f.payload[..], b"still here");
            break;
        }
    }
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let logs = LogCapture::start();
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let mut target = raw_upgrade_target().await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target.addr])).await;

    let mut client = tokio::net::TcpStream::connect(proxy.listener_addr(1))
        .await
        .unwrap();
    let mut req = upgrade_request("localhost", "/ws").into_bytes();
    req.extend_from_slice(b"early"); // bytes right behind the head must not be lost
    client.write_all(&req).await.unwrap();
    within("101", read_head(&mut client)).await.unwrap();
    let mut server = within("target stream", target.streams.recv())
        .await
        .unwrap();

    client.write_all(b" and late").await.unwrap();
    client.shutdown().await.unwrap(); // FIN from the client
    let mut got = Vec::new();
    within("target reads to EOF", server.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"early and late");

    // The other direction still works after the client's FIN.
    server.write_all(b"reply after FIN").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("client reads to EOF", client.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, b"reply after FIN");

    // A plaintext client and target are spliced with splice(2), not copied.
    within("tunnel log line", async {
        while !logs.text().contains("Tunnel closed") {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(logs.text().contains("path=\"splice\""), "{}", logs.text());
}

#[tokio::test]
async fn non_101_answer_is_relayed() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let target = fixed_target(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nX-From: target\r\nConnection: close\r\n\r\nnope!\n",
    )
    .await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[target])).await;
    let client = tokio::net::TcpStream::connect(proxy.listener_addr(1))
        .await
        .unwrap();
    let mut req = upgrade_request("localhost", "/ws");
    req = req.replace("Connection: Upgrade", "Connection: Upgrade, close");
    let resp = raw_exchange(client, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
    assert!(resp.contains("x-from: target"), "{resp}");
    assert!(resp.ends_with("nope!\n"), "{resp}");
}

/// A TLS 1.2 client (AES-256-GCM, explicit nonces) through a wss tunnel whose records
/// albatross protects: messages both ways arrive intact, and the close log names the path.
#[tokio::test]
async fn a_tls12_client_tunnels_through_albatross_records() {
    use std::sync::Arc;

    let logs = LogCapture::start();
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let b = start_backend("tls12", None, None).await;
    let proxy = start_proxy(&pki, &forward_config(&pki, &cert, "60s", &[b.addr])).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(proxy.listener_addr(0))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut ws = FragmentCollector::new(ws_handshake(tls, "localhost", "/ws").await);
    let _hello = next_json(&mut ws).await;
    for i in 0..20u32 {
        let payload: Vec<u8> = (0..(1000 + i * 4000)).map(|j| (j % 253) as u8).collect();
        ws.write_frame(Frame::binary(Payload::Borrowed(&payload)))
            .await
            .unwrap();
        let echo = within("echo", ws.read_frame()).await.unwrap();
        assert!(echo.payload[..] == payload[..], "message {i} altered");
    }
    drop(ws);
    within("tunnel log line", async {
        while !logs.text().contains("Tunnel closed") {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let text = logs.text();
    assert!(text.contains("path=\"tls_records\""), "{text}");
    assert!(text.contains("cause=\"client_close\""), "{text}");
}
