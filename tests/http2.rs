//! HTTP/2 toward clients on HTTPS listeners (ALPN `h2`), forwarded to targets as
//! HTTP/1.1; no extended CONNECT, so WebSockets stay on HTTP/1.1 connections.

mod support;

use std::net::SocketAddr;

use fastwebsockets::FragmentCollector;
use rustls::pki_types::ServerName;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn config(
    cert: &(std::path::PathBuf, std::path::PathBuf, Vec<u8>),
    lb: &str,
    app: SocketAddr,
    ws: SocketAddr,
) -> String {
    format!(
        r#"
[load_balancer]
{lb}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{}", key = "{}" }} ]
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 1
conditions = [ {{ path_pattern = ["/ws"] }} ]
action = {{ type = "forward", target_group = "ws" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]

[[target_group]]
name = "ws"
targets = [ "{ws}" ]
"#,
        cert.0.display(),
        cert.1.display()
    )
}

async fn connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(pki.client_config(alpn));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    within("TLS handshake", connector.connect(name, tcp))
        .await
        .unwrap()
}

#[tokio::test]
async fn h2_is_negotiated_and_forwarded_as_http11_without_extended_connect() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let app = echo_head_target().await;
    let backend = start_backend("ws-1", None, None).await;
    let proxy = start_proxy(&pki, &config(&cert, "", app, backend.addr)).await;
    let addr = proxy.listener_addr(0);

    let tls = connect(&pki, addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, conn) = within("h2 handshake", h2::client::handshake(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    let req = http::Request::builder()
        .method("GET")
        .uri("https://Localhost/page?q=1")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = within("h2 response", resp).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut head = Vec::new();
    while let Some(chunk) = within("h2 body", body.data()).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        head.extend_from_slice(&chunk);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /page?q=1 http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nhost: localhost:{}\r\n", addr.port())),
        "{head}"
    );
    assert!(head.contains("\r\nx-forwarded-proto: https\r\n"), "{head}");

    // The server's SETTINGS did not enable RFC 8441, so a browser will not try a
    // WebSocket over this connection.
    assert!(!client.is_extended_connect_protocol_enabled());

    // On the same listener, an HTTP/1.1 client upgrades to a WebSocket as usual.
    let tls = connect(&pki, addr, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut ws = FragmentCollector::new(ws_handshake(tls, "localhost", "/ws?user=u7").await);
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["backend"], "ws-1");
    assert_eq!(hello["user"], "u7");
}

#[tokio::test]
async fn http2_enabled_false_offers_only_http11() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let app = echo_head_target().await;
    let proxy = start_proxy(&pki, &config(&cert, "http2_enabled = false", app, app)).await;
    let tls = connect(&pki, proxy.listener_addr(0), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // An HTTP/2 preface on that HTTP/1.1 connection gets 505.
    let resp = raw_exchange(tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        "{resp}"
    );
}

/// An HTTP/2 connection to the HTTPS listener at `addr`, and its connection task (to
/// watch it end).
async fn h2_connection(
    pki: &Pki,
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = connect(pki, addr, &[b"h2"]).await;
    let (client, conn) = within("h2 handshake", h2::client::handshake(tls))
        .await
        .unwrap();
    (client, tokio::spawn(conn))
}

/// The connection task ends, without an error: the load balancer's GOAWAY and close.
async fn ended_cleanly(conn: tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let ended = within("the connection's end", conn).await.unwrap();
    assert!(ended.is_ok(), "a GOAWAY ends it cleanly: {ended:?}");
}

/// `n` GET requests on `client`, up to 100 at a time; each must get a 200.
async fn h2_gets(client: &mut h2::client::SendRequest<bytes::Bytes>, n: usize) {
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let req = http::Request::builder()
            .uri(format!("https://localhost/r{i}"))
            .body(())
            .unwrap();
        let mut ready = within("h2 stream capacity", client.clone().ready())
            .await
            .unwrap();
        let (resp, _) = ready.send_request(req, true).unwrap();
        pending.push_back(resp);
        if pending.len() >= 100 || i + 1 == n {
            while let Some(resp) = pending.pop_front() {
                let resp = within("h2 response", resp).await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
    }
}

/// ALB ends an HTTP/2 connection with GOAWAY once it has served 10,000 requests; every
/// one of them is answered.
#[tokio::test]
async fn h2_connection_ends_with_goaway_after_10000_requests() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let app = named_target("app").await;
    let proxy = start_proxy(&pki, &config(&cert, "", app, app)).await;
    let (mut client, conn) = h2_connection(&pki, proxy.listener_addr(0)).await;

    h2_gets(&mut client, 9_999).await;
    assert!(
        !conn.is_finished(),
        "the connection ended before 10,000 requests"
    );
    // The 10,000th is served, then the load balancer says GOAWAY and closes.
    h2_gets(&mut client, 1).await;
    ended_cleanly(conn).await;
    let req = http::Request::builder()
        .uri("https://localhost/after")
        .body(())
        .unwrap();
    assert!(client.send_request(req, true).is_err());
}

/// ALB's `client_keep_alive` on HTTP/2: a request on a connection past it is served,
/// then the connection ends with GOAWAY.
#[tokio::test]
async fn h2_client_keep_alive_ends_with_goaway_after_the_next_request() {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let app = named_target("app").await;
    let lb = "client_keep_alive = \"500ms\"";
    let proxy = start_proxy(&pki, &config(&cert, lb, app, app)).await;
    let opened = std::time::Instant::now();
    let (mut client, conn) = h2_connection(&pki, proxy.listener_addr(0)).await;

    h2_gets(&mut client, 3).await;
    assert!(!conn.is_finished());
    tokio::time::sleep_until((opened + std::time::Duration::from_millis(600)).into()).await;
    assert!(
        !conn.is_finished(),
        "an idle connection past its lifetime stays open"
    );
    h2_gets(&mut client, 1).await;
    ended_cleanly(conn).await;
}
