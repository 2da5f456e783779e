//! The client leg over TLS, as on an HTTPS listener.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A TLS client stream (the test's end) and the proxy's server end.
async fn tls_pair() -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    tokio_rustls::server::TlsStream<TcpStream>,
) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let (client_tcp, proxy_tcp) = tcp_pair().await;
    let name = ServerName::try_from("localhost").unwrap();
    let (client, proxy) = tokio::join!(
        TlsConnector::from(Arc::new(client)).connect(name, client_tcp),
        TlsAcceptor::from(Arc::new(server)).accept(proxy_tcp),
    );
    (client.unwrap(), proxy.unwrap())
}

/// A TLS client, a plain target and the tunnel between them (30 s idle timeout).
async fn tls_tunnel() -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    TcpStream,
    tokio::task::JoinHandle<TunnelReport>,
) {
    let (client, proxy_client) = tls_pair().await;
    let (proxy_target, target) = tcp_pair().await;
    let task = tokio::spawn(splice(
        proxy_client,
        Bytes::new(),
        proxy_target,
        Bytes::new(),
        Duration::from_secs(30),
        Arc::new(TunnelControl::new()),
    ));
    (client, target, task)
}

/// On idle timeout a TLS client gets close_notify and then EOF, so its read
/// ends cleanly (without close_notify tokio-rustls reports UnexpectedEof).
#[tokio::test]
async fn tls_client_gets_close_notify_on_idle_timeout() {
    let idle = Duration::from_millis(250);
    let (mut client, proxy_client) = tls_pair().await;
    let (proxy_target, mut target) = tcp_pair().await;
    let task = tokio::spawn(splice(
        proxy_client,
        Bytes::new(),
        proxy_target,
        Bytes::from_static(b"tail "),
        idle,
        Arc::new(TunnelControl::new()),
    ));

    client.write_all(b"over tls").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_exact_n(&mut target, 8).await, b"over tls");
    target.write_all(b"plain").await.unwrap();
    assert_eq!(read_exact_n(&mut client, 10).await, b"tail plain");

    let (client_end, target_end) = tokio::join!(read_to_eof(&mut client), read_to_eof(&mut target));
    assert_eq!(client_end.expect("clean TLS close"), b"");
    assert_eq!(target_end.unwrap(), b"");
    let r = report(task).await;
    assert_eq!(r.end, TunnelEnd::IdleTimeout);
    assert_eq!((r.client_to_target, r.target_to_client), (8, 10));
}

/// A TLS client's close_notify + FIN reaches the target as a FIN, and the
/// target's reply still reaches the client.
#[tokio::test]
async fn tls_client_half_close_reaches_target() {
    let (mut client, mut target, task) = tls_tunnel().await;

    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut target).await.unwrap(), b"last words");
    target.write_all(b"noted").await.unwrap();
    target.shutdown().await.unwrap();
    assert_eq!(
        read_to_eof(&mut client).await.expect("clean TLS close"),
        b"noted"
    );

    let r = report(task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (10, 5));
}

/// The target closes first; the client then drops its TCP connection without a
/// close_notify (as browsers often do). The tunnel ended as the target closed it.
#[tokio::test]
async fn target_close_then_client_tcp_drop_is_a_target_close() {
    let (mut client, mut target, task) = tls_tunnel().await;

    target.write_all(b"bye").await.unwrap();
    target.shutdown().await.unwrap();
    assert_eq!(
        read_to_eof(&mut client).await.expect("clean TLS close"),
        b"bye"
    );
    let (mut tcp, _) = client.into_inner();
    tcp.shutdown().await.unwrap();
    drop(tcp);
    assert_eq!(read_to_eof(&mut target).await.unwrap(), b"");

    let r = report(task).await;
    assert_eq!(r.end, TunnelEnd::TargetClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (0, 3));
}

/// A client that drops its TCP connection without close_notify has closed its
/// side: the target gets a FIN and the bytes sent before it, and can still answer
/// until the tunnel ends as the client closed it.
#[tokio::test]
async fn client_tcp_drop_without_close_notify_is_a_client_close() {
    let (mut client, mut target, task) = tls_tunnel().await;

    client.write_all(b"last").await.unwrap();
    client.flush().await.unwrap();
    let (mut tcp, _) = client.into_inner();
    tcp.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut target).await.unwrap(), b"last");
    target.shutdown().await.unwrap();
    // The proxy's close_notify and FIN, unread by a TLS client that has gone.
    read_to_eof(&mut tcp).await.unwrap();

    let r = report(task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (4, 0));
}
