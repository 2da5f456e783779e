//! Test harness: certificates made per test with rcgen, heartbeat backends and the
//! proxy started in-process on port 0, TLS and WebSocket clients, raw targets; a real
//! AWS client (`aws`), a headless browser (`browser`) and a real Redis (`redis`).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use albatross::backend::{self, BackendHandle, BackendOptions};
use albatross::config::{self, Origin};
use albatross::{Proxy, ProxyHandle};
use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, WebSocket};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// Generous upper bound for anything a test waits on; the real timings come from config.
pub const SAFETY: Duration = Duration::from_secs(10);

/// Fail the test instead of hanging when `fut` does not finish within [`SAFETY`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(SAFETY, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A test CA, and files of leaf certificates it signed, in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "albatross test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Write a leaf for `names` (ECDSA P-256) as `<stem>.pem` / `<stem>-key.pem`; returns
    /// both paths and the leaf's DER.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        self.leaf_with_key(stem, names, KeyPair::generate().unwrap())
    }

    /// Like [`Pki::leaf`], with an RSA 2048 key (for the `ECDHE-RSA-*` suites).
    pub fn rsa_leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        use aws_lc_rs::encoding::AsDer;
        // rcgen's ring backend cannot generate RSA keys; aws-lc-rs can, and rcgen signs with it.
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 =
            rustls::pki_types::PrivatePkcs8KeyDer::from(rsa.as_der().unwrap().as_ref().to_vec());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
        self.leaf_with_key(stem, names, key)
    }

    fn leaf_with_key(
        &self,
        stem: &str,
        names: &[&str],
        key: KeyPair,
    ) -> (PathBuf, PathBuf, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().to_vec())
    }

    /// The CA's certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// Connect over TLS to `addr` with SNI `server_name`, offering http/1.1.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> TlsStream<TcpStream> {
        self.connect_alpn(addr, server_name, &[b"http/1.1"]).await
    }

    /// Connect over TLS to `addr` with SNI `server_name`, offering `alpn`.
    pub async fn connect_alpn(
        &self,
        addr: SocketAddr,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> TlsStream<TcpStream> {
        let connector = TlsConnector::from(self.client_config(alpn));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(server_name.to_string()).unwrap();
        within("TLS handshake", connector.connect(name, tcp))
            .await
            .expect("TLS handshake with the proxy")
    }
}

/// An HTTP/2 client connection over TLS (ALPN `h2`, SNI `localhost`) to `addr`, its
/// connection task spawned.
pub async fn h2_client(pki: &Pki, addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tls = pki.connect_alpn(addr, "localhost", &[b"h2"]).await;
    let (client, conn) = within("h2 handshake", h2::client::handshake(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A keep-alive HTTP/1.1 client connection to `addr` (its connection task spawned).
pub async fn http_client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// `method path` with `body` (`Host: backend`) on `client`: the status, the
/// content type (empty when absent) and the whole body.
pub async fn send_request(
    client: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> (hyper::StatusCode, String, Bytes) {
    use http_body_util::BodyExt;
    client.ready().await.unwrap();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "backend")
        .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body)
}

/// A heartbeat backend on 127.0.0.1:0; it stops when the returned token is dropped
/// together with the handle (the guard cancels on drop).
pub struct TestBackend {
    pub handle: BackendHandle,
    pub addr: SocketAddr,
    _cancel: tokio_util::sync::DropGuard,
}

pub async fn start_backend(
    id: &str,
    ping_interval: Option<Duration>,
    ping_timeout: Option<Duration>,
) -> TestBackend {
    start_backend_with(BackendOptions {
        id: id.to_string(),
        ping_interval,
        ping_timeout,
        redis: None,
    })
    .await
}

/// A heartbeat backend on 127.0.0.1:0 with any options (a Redis URL, say).
pub async fn start_backend_with(options: BackendOptions) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let handle = backend::start(listener, options, cancel.clone())
        .await
        .unwrap();
    TestBackend {
        handle,
        addr,
        _cancel: cancel.drop_guard(),
    }
}

/// Config text: an HTTPS listener (index 0) and an HTTP listener (index 1) on port 0,
/// both forwarding to target group `app` with `targets`.
pub fn forward_config(
    pki: &Pki,
    cert: &(PathBuf, PathBuf, Vec<u8>),
    idle_timeout: &str,
    targets: &[SocketAddr],
) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let _ = pki;
    format!(
        r#"
[load_balancer]
idle_timeout = "{idle_timeout}"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{cert}", key = "{key}" }} ]
default_action = {{ type = "forward", target_group = "app" }}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ {targets} ]
"#,
        cert = cert.0.display(),
        key = cert.1.display(),
        targets = targets.join(", "),
    )
}

/// Validate `text` with relative paths resolved in the PKI's folder, then start.
pub async fn start_proxy(pki: &Pki, text: &str) -> ProxyHandle {
    let origin = Origin {
        name: "test.toml".to_string(),
        base_dir: pki.dir.path().to_path_buf(),
    };
    let cfg = match config::from_str(text, &origin) {
        Ok(c) => c,
        Err(e) => panic!("test config rejected:\n{e}\n---\n{text}"),
    };
    // A reload validates the text again (certificates read again).
    let source = albatross::control::ConfigSource::Text(text.to_string());
    Proxy::start_from(cfg, origin, source, albatross::ProxyOptions::default())
        .await
        .expect("proxy starts")
}

/// A WebSocket client handshake over `stream` (plain or TLS).
pub async fn ws_handshake<S>(stream: S, host: &str, path: &str) -> WebSocket<TokioIo<Upgraded>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("Host", host)
        .header("Upgrade", "websocket")
        .header("Connection", "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (mut ws, _resp) = within(
        "WebSocket handshake",
        fastwebsockets::handshake::client(&SpawnExecutor, req, stream),
    )
    .await
    .expect("WebSocket handshake through the proxy");
    ws.set_max_message_size(64 << 20);
    ws
}

/// Read frames until a text message arrives; returns it parsed as JSON.
pub async fn next_json<S>(ws: &mut FragmentCollector<S>) -> serde_json::Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = within("a text message", ws.read_frame())
            .await
            .expect("read frame");
        if frame.opcode == OpCode::Text {
            return serde_json::from_slice(&frame.payload).expect("JSON message");
        }
    }
}

/// How a WebSocket ended from the client's point of view.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEnd {
    /// A close frame arrived with this code.
    Close(u16),
    /// The connection dropped without a close frame: what browsers report as 1006.
    Abnormal1006,
}

/// Read (answering pings automatically) until the socket ends.
pub async fn read_until_end<S>(ws: &mut FragmentCollector<S>) -> WsEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.read_frame().await {
            Ok(f) if f.opcode == OpCode::Close => {
                let code = if f.payload.len() >= 2 {
                    u16::from_be_bytes([f.payload[0], f.payload[1]])
                } else {
                    1005
                };
                return WsEnd::Close(code);
            }
            Ok(_) => continue,
            Err(_) => return WsEnd::Abnormal1006,
        }
    }
}

pub fn text(s: &str) -> Frame<'_> {
    Frame::text(fastwebsockets::Payload::Borrowed(s.as_bytes()))
}

struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::task::spawn(fut);
    }
}

/// Send raw bytes and read the whole answer until the server closes.
pub async fn raw_exchange<S>(mut stream: S, request: &[u8]) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = within("the response", stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one HTTP/1.1 response (head and Content-Length body) from a kept-alive stream.
pub async fn read_response<S>(stream: &mut S) -> String
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = within("response head", stream.read(&mut byte))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = content_length(&head);
    let mut body = vec![0u8; len];
    within("response body", stream.read_exact(&mut body))
        .await
        .unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// The `Content-Length` of a message head (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// A target that answers every upgrade with a 101 and then hands the raw TCP stream
/// to the test, so the test sees exactly what the proxy does to the target side.
pub struct RawUpgradeTarget {
    pub addr: SocketAddr,
    pub streams: tokio::sync::mpsc::Receiver<TcpStream>,
}

pub async fn raw_upgrade_target() -> RawUpgradeTarget {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(resp.as_bytes()).await.is_ok() {
                    let _ = tx.send(s).await;
                }
            });
        }
    });
    RawUpgradeTarget { addr, streams: rx }
}

impl RawUpgradeTarget {
    /// Open a tunnel through the proxy's listener at `proxy` to this target: send an
    /// upgrade request, read the 101, and return (client side, target side).
    pub async fn tunnel(&mut self, proxy: SocketAddr) -> (TcpStream, TcpStream) {
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(upgrade_request("localhost", "/ws").as_bytes())
            .await
            .unwrap();
        let head = within("101", read_head(&mut client)).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let server = within("target stream", self.streams.recv()).await.unwrap();
        (client, server)
    }
}

/// Read a request or response head byte by byte (so nothing past it is consumed).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A raw upgrade request for `path`.
pub fn upgrade_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A target that answers every request with a fixed raw response, then closes.
pub async fn fixed_target(response: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A target that accepts connections and reads, but never answers.
pub async fn silent_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An address on which nothing listens (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A keep-alive target that answers each request with `200` and the request head it
/// received as the body, so tests can see the headers the proxy sent.
pub async fn echo_head_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
                        head.len()
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

/// A target that answers each request with `200 slow` after `delay`; the receiver gets
/// a message as soon as a request head has arrived.
pub async fn delayed_target(delay: Duration) -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    let _ = tx.send(()).await;
                    tokio::time::sleep(delay).await;
                    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow";
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A keep-alive HTTP target that says who it is: every answer carries `X-Target: <id>`
/// and ordinary requests get the id as body. `/health*` answers a settable status and
/// closes (as a health check expects); `/login` also sets `session=<id>`; an upgrade
/// gets a 101 and then echoes bytes. Ordinary requests wait `delay` first.
#[derive(Clone)]
pub struct IdTarget {
    pub addr: SocketAddr,
    pub id: &'static str,
    health: Arc<std::sync::atomic::AtomicU16>,
    /// Ordinary requests and upgrades received (health checks not counted).
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
    /// Health checks received.
    pub health_checks: Arc<std::sync::atomic::AtomicUsize>,
    /// The head of the latest health check.
    pub last_health_head: Arc<std::sync::Mutex<String>>,
    /// Signalled whenever an ordinary request head arrives.
    pub arrived: Arc<tokio::sync::Notify>,
}

impl IdTarget {
    /// Answer `/health` with `status` from now on.
    pub fn set_health(&self, status: u16) {
        self.health
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn health_check_count(&self) -> usize {
        self.health_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// An [`IdTarget`] on 127.0.0.1:0 answering at once.
pub async fn id_target(id: &'static str) -> IdTarget {
    id_target_on("127.0.0.1:0".parse().unwrap(), id, Duration::ZERO).await
}

/// An [`IdTarget`] bound to `addr` whose ordinary answers wait `delay`.
pub async fn id_target_on(addr: SocketAddr, id: &'static str, delay: Duration) -> IdTarget {
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind(addr).await.unwrap();
    let t = IdTarget {
        addr: listener.local_addr().unwrap(),
        id,
        health: Arc::new(std::sync::atomic::AtomicU16::new(200)),
        requests: Arc::default(),
        health_checks: Arc::default(),
        last_health_head: Arc::default(),
        arrived: Arc::default(),
    };
    let shared = t.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let t = shared.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    if path.starts_with("/health") {
                        t.health_checks.fetch_add(1, Ordering::Relaxed);
                        *t.last_health_head.lock().unwrap() = head;
                        let code = t.health.load(Ordering::Relaxed);
                        let resp = format!(
                            "HTTP/1.1 {code} Status\r\nX-Target: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            t.id
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                        return;
                    }
                    t.requests.fetch_add(1, Ordering::Relaxed);
                    t.arrived.notify_waiters();
                    let lower = head.to_ascii_lowercase();
                    if lower.contains("\r\nupgrade:") {
                        let resp = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Target: {}\r\n\r\n",
                            t.id
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let cookie = if path.starts_with("/login") {
                        format!("Set-Cookie: session={}; Path=/\r\n", t.id)
                    } else {
                        String::new()
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nX-Target: {id}\r\n{cookie}Content-Length: {}\r\n\r\n{id}",
                        t.id.len(),
                        id = t.id
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    t
}

/// Poll `cond` every 10 ms until it holds; fail after [`SAFETY`].
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Collects everything logged through `tracing` on this thread while the guard lives.
pub struct LogCapture {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// A second dispatcher alive for the whole test process. With a single one, tracing
/// decides whether a new callsite is ever enabled from the default of the thread that
/// hits it first (`has_just_one`), so an event first logged by a test without a capture
/// would stay off for a capturing test on another thread. With two, it asks every
/// dispatcher, captures included.
static BYSTANDER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();

impl LogCapture {
    pub fn start() -> LogCapture {
        BYSTANDER.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::new()));
        let buf: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let writer = CaptureWriter(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        LogCapture {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct CaptureWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A keep-alive target that answers every request with `200` and `name` as the body,
/// so a test can tell which target (or target group) served it. Unlike [`id_target`]
/// it answers upgrades with a plain 200 too.
pub async fn named_target(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
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

/// The body of a response read by [`read_response`] or [`raw_exchange`].
pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The status code of a raw response (0 when there is none).
pub fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub mod aws;
pub mod browser;
pub mod redis;
