//! wsbench: the WebSocket load generator and echo target of the proxy benchmark.
//!
//! Not a CI benchmark: `cargo bench --no-run` only compiles it, and running it
//! without arguments prints the usage and exits. `benches/run.sh` drives it:
//!
//! ```text
//! wsbench echo --listen 127.0.0.1:19000 --tls-listen 127.0.0.1:19001 --cert C --key K
//! wsbench run --scenario handshake|rtt|throughput|idle|http|probe|mixed|drain|h2
//!             --target HOST:PORT [--tls]
//!             [--conns N] [--duration S] [--warmup S] [--hold S] [--rate R]
//!             [--proxy-pids P1,P2] [--echo-pid P] [--label TEXT]
//! ```
//!
//! `echo --id NAME` adds `x-echo-id: NAME` to every answer (the 101 included), so a
//! client knows which target it reached; `echo --delay-ms N` makes every plain HTTP
//! answer but `/health` slow (head after N/2 ms, a 64 KiB body over the other half).
//! `--rate` paces `handshake` and `mixed` (operations per second over all
//! connections). `mixed` (HTTP load beside WebSocket tunnels that echo now and then,
//! counting every status and every failure by kind and target) and `drain` (SIGTERM to
//! the proxy with requests in flight) are the soak suite's (`benches/soak.sh`).
//!
//! `run` prints one JSON object on stdout with the scenario's figures and, when
//! `--proxy-pids` is given, the proxy's CPU time (utime + stime from
//! `/proc/PID/stat`) and resident memory (`VmRSS` from `/proc/PID/status`)
//! over the measured window. The echo target answers WebSocket upgrades on any
//! path by echoing every text and binary message, and any other request with a
//! 3-byte `ok\n` body (keep-alive). The client speaks HTTP/1.1 and RFC 6455
//! directly (masked frames, no extensions); for wss it offers TLS 1.3 with
//! X25519 only, never resumes sessions and does not verify the certificate.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use hdrhistogram::Histogram;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// Any client stream: plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Pin<Box<dyn Io>>;

const USAGE: &str = "usage: wsbench echo --listen ADDR [--tls-listen ADDR --cert PEM --key PEM] [--id NAME] [--delay-ms N]\n       wsbench run --scenario handshake|rtt|throughput|idle|http|probe|mixed|drain|h2 --target HOST:PORT [--tls] [--conns N] [--duration S] [--warmup S] [--hold S] [--rate R] [--proxy-pids P,..] [--echo-pid P] [--label TEXT]\n           mixed: [--paths /a,/b] [--tunnels T] [--tunnel-interval S]\n           drain: [--path /slow] [--tunnels T] [--signal-after S] [--probe ADDR,..] [--expect-bytes N]\n           h2: [--paths /a,/b] [--streams S] (TLS with ALPN h2 always)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; without a subcommand there is nothing to do.
    let Some(cmd) = args.first().filter(|a| !a.starts_with('-')).cloned() else {
        eprintln!("wsbench: not run by `cargo bench`; see benches/run.sh.\n{USAGE}");
        return;
    };
    let opts = Opts::parse(&args[1..]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cmd.as_str() {
        "echo" => rt.block_on(echo_main(opts)),
        "run" => rt.block_on(run_main(opts)),
        _ => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!("wsbench: {e}");
        std::process::exit(1);
    }
}

#[derive(Default)]
struct Opts {
    kv: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut o = Opts::default();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].trim_start_matches("--").to_string();
            if a == "tls" || a == "bench" {
                o.flags.push(a);
                i += 1;
            } else if i + 1 < args.len() {
                o.kv.push((a, args[i + 1].clone()));
                i += 2;
            } else {
                eprintln!("wsbench: option --{a} needs a value\n{USAGE}");
                std::process::exit(2);
            }
        }
        o
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.kv
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        self.get(k)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("--{k}: bad number {v}"))
            })
            .unwrap_or(default)
    }
    fn flag(&self, k: &str) -> bool {
        self.flags.iter().any(|f| f == k)
    }
}

// ---------------------------------------------------------------- echo target

/// What the echo target adds to its answers (`--id`, `--delay-ms`).
struct EchoCfg {
    /// Sent as `x-echo-id` on every response, the 101 included.
    id: Option<HeaderValue>,
    /// Plain HTTP responses other than `/health` take this long: the head after half of
    /// it, then a body of [`SLOW_CHUNKS`] × [`SLOW_CHUNK`] bytes of `z` spread over the
    /// other half.
    delay: Duration,
}

static ECHO: std::sync::OnceLock<EchoCfg> = std::sync::OnceLock::new();

const SLOW_CHUNKS: u32 = 4;
const SLOW_CHUNK: usize = 16 * 1024;

async fn echo_main(opts: Opts) -> Res<()> {
    let listen: SocketAddr = opts.get("listen").ok_or("--listen")?.parse()?;
    let id = match opts.get("id") {
        Some(id) => Some(HeaderValue::from_str(id)?),
        None => None,
    };
    let delay = Duration::from_millis(opts.num("delay-ms", 0u64));
    let _ = ECHO.set(EchoCfg { id, delay });
    let plain = listener(listen)?;
    let tls = match opts.get("tls-listen") {
        Some(addr) => {
            let cert = opts.get("cert").ok_or("--cert")?;
            let key = opts.get("key").ok_or("--key")?;
            Some((listener(addr.parse()?)?, tls_acceptor(cert, key)?))
        }
        None => None,
    };
    if let Some((l, acceptor)) = tls {
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve_http(tls).await;
                    }
                });
            }
        });
    }
    eprintln!("wsbench echo: listening on {listen}");
    loop {
        let Ok((s, _)) = plain.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(serve_http(s));
    }
}

fn listener(addr: SocketAddr) -> Res<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    Ok(s.listen(8192)?)
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(s: S) {
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(s), hyper::service::service_fn(handle))
        .with_upgrades()
        .await;
}

type EchoBody = BoxBody<Bytes, Infallible>;

async fn handle(mut req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let cfg = ECHO.get();
    let mut resp = if fastwebsockets::upgrade::is_upgrade_request(&req) {
        match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok((resp, fut)) => {
                tokio::spawn(async move {
                    if let Ok(ws) = fut.await {
                        let _ = echo_ws(ws).await;
                    }
                });
                resp.map(|_| Full::new(Bytes::new()).boxed())
            }
            Err(_) => Response::builder()
                .status(400)
                .body(Full::new(Bytes::new()).boxed())
                .expect("response"),
        }
    } else if let Some(delay) = cfg
        .map(|c| c.delay)
        .filter(|d| !d.is_zero() && req.uri().path() != "/health")
    {
        tokio::time::sleep(delay / 2).await;
        Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, SLOW_CHUNKS as usize * SLOW_CHUNK)
            .body(SlowBody::new(delay / 2 / SLOW_CHUNKS).boxed())
            .expect("response")
    } else {
        Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(b"ok\n")).boxed())
            .expect("response")
    };
    if let Some(id) = cfg.and_then(|c| c.id.clone()) {
        resp.headers_mut().insert("x-echo-id", id);
    }
    Ok(resp)
}

/// The slow answer's body: [`SLOW_CHUNKS`] chunks of `z`, one every `every`.
struct SlowBody {
    left: u32,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl SlowBody {
    fn new(every: Duration) -> SlowBody {
        SlowBody {
            left: SLOW_CHUNKS,
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl hyper::body::Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::future::Future as _;
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![
            b'z';
            SLOW_CHUNK
        ])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left as u64 * SLOW_CHUNK as u64)
    }
}

async fn echo_ws<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
) -> Result<(), fastwebsockets::WebSocketError> {
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(1 << 20);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                let reply = Frame::new(true, frame.opcode, None, frame.payload);
                ws.write_frame(reply).await?;
            }
            _ => {}
        }
    }
}

fn tls_acceptor(cert: &str, key: &str) -> Res<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

// ---------------------------------------------------------------- client

struct Client {
    target: SocketAddr,
    host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    next_src: AtomicUsize,
}

impl Client {
    fn new(target: &str, tls: bool) -> Res<Client> {
        let addr: SocketAddr = target.parse()?;
        Ok(Client {
            target: addr,
            host: target.to_string(),
            tls: tls.then(tls_connector),
            next_src: AtomicUsize::new(0),
        })
    }

    /// TCP connect from the next source address in 127.0.0.2..=127.0.0.251, so
    /// that tens of thousands of connections do not run out of ephemeral ports.
    async fn tcp(&self) -> Res<TcpStream> {
        let n = self.next_src.fetch_add(1, Ordering::Relaxed);
        let src = Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8);
        let sock = TcpSocket::new_v4()?;
        bind_no_port(&sock);
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        let s = sock.connect(self.target).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn stream(&self) -> Res<Conn> {
        let tcp = self.tcp().await?;
        Ok(match &self.tls {
            Some(c) => {
                let name = rustls_pki_types::ServerName::IpAddress(self.target.ip().into());
                Box::pin(c.connect(name, tcp).await?)
            }
            None => Box::pin(tcp),
        })
    }

    /// Connect, upgrade, and hand back the WebSocket.
    async fn ws(&self) -> Res<WebSocket<Conn>> {
        Ok(self.ws_id().await?.0)
    }

    /// [`Client::ws`], with the `x-echo-id` of the target that answered (if it sent one).
    async fn ws_id(&self) -> Res<(WebSocket<Conn>, Option<String>)> {
        let mut s = self.stream().await?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.host
        );
        s.write_all(req.as_bytes()).await?;
        s.flush().await?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err("connection closed during the upgrade".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if !buf.starts_with(b"HTTP/1.1 101") {
                    let line = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
                    return Err(format!("upgrade refused: {line}").into());
                }
                if end + 4 != buf.len() {
                    return Err("bytes after the 101 response".into());
                }
                break;
            }
            if buf.len() > 16 * 1024 {
                return Err("response head too long".into());
            }
        }
        let id = header_value(&buf, "x-echo-id");
        let mut ws = WebSocket::after_handshake(s, Role::Client);
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        Ok((ws, id))
    }
}

#[cfg(target_os = "linux")]
fn bind_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_no_port(_sock: &TcpSocket) {}

fn tls_connector() -> tokio_rustls::TlsConnector {
    tls_connector_alpn(b"http/1.1")
}

/// A TLS 1.3 client that accepts any certificate and offers `alpn`.
fn tls_connector_alpn(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

const MSG: [u8; 64] = [b'x'; 64];

/// Send one 64-byte binary message and wait for its echo.
async fn echo_once(ws: &mut WebSocket<Conn>) -> Res<()> {
    ws.write_frame(Frame::binary(Payload::Borrowed(&MSG)))
        .await?;
    ws.flush().await?;
    loop {
        let f = ws.read_frame().await?;
        match f.opcode {
            OpCode::Binary | OpCode::Text => {
                if f.payload.len() != MSG.len() {
                    return Err("echo of the wrong length".into());
                }
                return Ok(());
            }
            OpCode::Close => return Err("closed by the peer".into()),
            _ => {}
        }
    }
}

/// Close handshake: send Close, wait for the peer's Close (or EOF).
async fn close(mut ws: WebSocket<Conn>) -> Res<()> {
    ws.write_frame(Frame::close(1000, b"")).await?;
    ws.flush().await?;
    loop {
        match ws.read_frame().await {
            Ok(f) if f.opcode == OpCode::Close => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let mut s = ws.into_inner();
    let _ = s.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------- /proc

fn parse_pids(s: Option<&str>) -> Vec<u32> {
    s.map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// utime + stime in microseconds, summed over the processes.
fn cpu_us(pids: &[u32]) -> Option<f64> {
    cpu_split_us(pids).map(|(user, sys)| user + sys)
}

/// (utime, stime) in microseconds, summed over the processes.
fn cpu_split_us(pids: &[u32]) -> Option<(f64, f64)> {
    if pids.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut user, mut sys) = (0.0, 0.0);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); `rest` starts at field 3.
        user += f[11].parse::<f64>().ok()? / hz * 1e6;
        sys += f[12].parse::<f64>().ok()? / hz * 1e6;
    }
    Some((user, sys))
}

/// VmRSS in bytes, summed over the processes.
fn rss_bytes(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        total += kib * 1024;
    }
    Some(total)
}

/// This process's own CPU time in microseconds.
fn self_cpu_us() -> f64 {
    cpu_us(&[std::process::id()]).unwrap_or(0.0)
}

/// CPU of the proxy, the client and the echo target over a window.
struct CpuWindow {
    proxy: Vec<u32>,
    echo: Vec<u32>,
    t0: Instant,
    proxy0: Option<(f64, f64)>,
    client0: f64,
    echo0: Option<f64>,
}

impl CpuWindow {
    fn start(proxy: &[u32], echo: &[u32]) -> CpuWindow {
        CpuWindow {
            proxy: proxy.to_vec(),
            echo: echo.to_vec(),
            t0: Instant::now(),
            proxy0: cpu_split_us(proxy),
            client0: self_cpu_us(),
            echo0: cpu_us(echo),
        }
    }
    /// Adds proxy_cpu_us, proxy_cpu_pct, proxy_sys_pct (the kernel's share of the
    /// proxy's CPU) and client_cpu_pct (client + echo) to `out`.
    fn finish(&self, out: &mut serde_json::Map<String, Value>) {
        let wall = self.t0.elapsed().as_secs_f64() * 1e6;
        if let (Some((u0, s0)), Some((u1, s1))) = (self.proxy0, cpu_split_us(&self.proxy)) {
            let (user, sys) = (u1 - u0, s1 - s0);
            out.insert("proxy_cpu_us".into(), json!(user + sys));
            out.insert("proxy_cpu_pct".into(), json!(100.0 * (user + sys) / wall));
            if user + sys > 0.0 {
                out.insert("proxy_sys_pct".into(), json!(100.0 * sys / (user + sys)));
            }
        }
        let mut client = self_cpu_us() - self.client0;
        if let (Some(a), Some(b)) = (self.echo0, cpu_us(&self.echo)) {
            client += b - a;
        }
        out.insert("client_cpu_pct".into(), json!(100.0 * client / wall));
    }
}

// ---------------------------------------------------------------- scenarios

async fn run_main(opts: Opts) -> Res<()> {
    let scenario = opts.get("scenario").ok_or("--scenario")?.to_string();
    let target = opts.get("target").ok_or("--target")?.to_string();
    let tls = opts.flag("tls");
    let duration = Duration::from_secs_f64(opts.num("duration", 10.0));
    let warmup = Duration::from_secs_f64(opts.num("warmup", 1.0));
    let proxy = parse_pids(opts.get("proxy-pids"));
    let echo = parse_pids(opts.get("echo-pid"));
    let client = Arc::new(Client::new(&target, tls)?);
    let mut out = serde_json::Map::new();
    out.insert("scenario".into(), json!(scenario));
    out.insert("tls".into(), json!(tls));
    if let Some(label) = opts.get("label") {
        out.insert("label".into(), json!(label));
    }
    let w = Window {
        warmup,
        duration,
        proxy,
        echo,
    };
    match scenario.as_str() {
        "handshake" => {
            let pacer = Arc::new(Pacer::new(opts.num("rate", 0.0)));
            handshake(&client, opts.num("conns", 32), &pacer, &w, &mut out).await?
        }
        "rtt" => rtt(&client, opts.num("conns", 100), &w, &mut out).await?,
        "throughput" => throughput(&client, opts.num("frame", 65536), &w, &mut out).await?,
        "idle" => {
            let hold = Duration::from_secs_f64(opts.num("hold", 10.0));
            idle(&client, opts.num("conns", 9900), hold, &w, &mut out).await?
        }
        "http" => http(&target, opts.num("conns", 64), &w, &mut out).await?,
        "probe" => probe(&client, opts.num("duration", 15.0), &mut out).await?,
        "mixed" => mixed(&client, &opts, &w, &mut out).await?,
        "drain" => drain(&client, &opts, &w, &mut out).await?,
        "h2" => h2_load(&client, &opts, &w, &mut out).await?,
        other => return Err(format!("unknown scenario {other}").into()),
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", Value::Object(out))?;
    Ok(())
}

struct Window {
    warmup: Duration,
    duration: Duration,
    proxy: Vec<u32>,
    echo: Vec<u32>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn q(h: &Histogram<u64>, p: f64) -> u64 {
    h.value_at_quantile(p)
}

/// C loops of connect → upgrade → one echo → close.
async fn handshake(
    client: &Arc<Client>,
    conns: usize,
    pacer: &Arc<Pacer>,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let t0 = Instant::now();
    let start = t0 + w.warmup;
    let end = start + w.duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let client = client.clone();
        let errors = errors.clone();
        let pacer = pacer.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut done = 0u64;
            loop {
                if !pacer.wait(end).await {
                    break;
                }
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = async {
                    let mut ws = client.ws().await?;
                    echo_once(&mut ws).await?;
                    close(ws).await
                };
                match tokio::time::timeout(Duration::from_secs(10), r).await {
                    Ok(Ok(())) => {
                        let e = Instant::now();
                        if t >= start && e <= end {
                            done += 1;
                            let _ = h.record((e - t).as_micros() as u64);
                        }
                    }
                    r => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(Err(e)) = r {
                            eprintln!("wsbench handshake: {e}");
                        } else {
                            eprintln!("wsbench handshake: timeout");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (h, done)
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu = CpuWindow::start(&w.proxy, &w.echo);
    tokio::time::sleep_until(end.into()).await;
    cpu.finish(out);
    let mut h = hist();
    let mut done = 0;
    for t in tasks {
        let (th, d) = t.await?;
        h.add(th)?;
        done += d;
    }
    let secs = w.duration.as_secs_f64();
    out.insert("conns".into(), json!(conns));
    out.insert("handshakes".into(), json!(done));
    out.insert("rate".into(), json!(done as f64 / secs));
    out.insert("p50_ms".into(), json!(q(&h, 0.5) as f64 / 1000.0));
    out.insert("p99_ms".into(), json!(q(&h, 0.99) as f64 / 1000.0));
    out.insert("errors".into(), json!(errors.load(Ordering::Relaxed)));
    per_unit(out, done as f64, "proxy_us_per_handshake");
    Ok(())
}

fn per_unit(out: &mut serde_json::Map<String, Value>, units: f64, name: &str) {
    if let Some(cpu) = out.get("proxy_cpu_us").and_then(Value::as_f64) {
        if units > 0.0 {
            out.insert(name.into(), json!(cpu / units));
        }
    }
}

/// C connections ping-ponging 64-byte messages.
async fn rtt(
    client: &Arc<Client>,
    conns: usize,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(client.ws().await?);
    }
    let t0 = Instant::now();
    let start = t0 + w.warmup;
    let end = start + w.duration;
    let mut tasks = Vec::new();
    for mut ws in sockets {
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut done = 0u64;
            let mut err = None;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                if let Err(e) = echo_once(&mut ws).await {
                    err = Some(e.to_string());
                    break;
                }
                let e = Instant::now();
                if t >= start && e <= end {
                    done += 1;
                    let _ = h.record((e - t).as_nanos().max(1) as u64 / 1000 + 1);
                }
            }
            let _ = close(ws).await;
            (h, done, err)
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu = CpuWindow::start(&w.proxy, &w.echo);
    tokio::time::sleep_until(end.into()).await;
    cpu.finish(out);
    let mut h = hist();
    let mut done = 0;
    let mut errors = 0;
    for t in tasks {
        let (th, d, e) = t.await?;
        h.add(th)?;
        done += d;
        if let Some(e) = e {
            errors += 1;
            eprintln!("wsbench rtt: {e}");
        }
    }
    let secs = w.duration.as_secs_f64();
    out.insert("conns".into(), json!(conns));
    out.insert("messages".into(), json!(done));
    out.insert("rate".into(), json!(done as f64 / secs));
    out.insert("p50_us".into(), json!(q(&h, 0.5)));
    out.insert("p99_us".into(), json!(q(&h, 0.99)));
    out.insert("p999_us".into(), json!(q(&h, 0.999)));
    out.insert("errors".into(), json!(errors));
    per_unit(out, done as f64, "proxy_us_per_message");
    Ok(())
}

/// One connection streaming binary frames of `frame` bytes; a second task reads the echoes.
async fn throughput(
    client: &Arc<Client>,
    frame: usize,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let ws = client.ws().await?;
    let stream = ws.into_inner();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // One masked client frame, written again and again.
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut bytes = Vec::with_capacity(frame + 14);
    bytes.push(0x82); // FIN + binary
    if frame < 126 {
        bytes.push(0x80 | frame as u8);
    } else if frame < 65536 {
        bytes.push(0x80 | 126);
        bytes.extend_from_slice(&(frame as u16).to_be_bytes());
    } else {
        bytes.push(0x80 | 127);
        bytes.extend_from_slice(&(frame as u64).to_be_bytes());
    }
    bytes.extend_from_slice(&mask);
    bytes.extend((0..frame).map(|i| (i as u8) ^ mask[i % 4]));
    let t0 = Instant::now();
    let start = t0 + w.warmup;
    let end = start + w.duration;
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= start {
                sent += frame as u64;
            }
        }
        (sent, wr)
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        // Frame parser state: header bytes collected, payload bytes still to skip.
        let mut head = Vec::with_capacity(14);
        let mut remaining = 0u64;
        loop {
            let n = match tokio::time::timeout_at(end.into(), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            };
            let in_window = Instant::now() >= start;
            let mut i = 0;
            while i < n {
                if remaining > 0 {
                    let take = remaining.min((n - i) as u64);
                    remaining -= take;
                    i += take as usize;
                    if in_window {
                        got += take;
                    }
                    continue;
                }
                head.push(buf[i]);
                i += 1;
                if head.len() >= 2 {
                    let len7 = head[1] & 0x7f;
                    let need = match len7 {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                    if head.len() == need {
                        remaining = match len7 {
                            126 => u16::from_be_bytes([head[2], head[3]]) as u64,
                            127 => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
                            l => l as u64,
                        };
                        head.clear();
                    }
                }
            }
        }
        got
    });
    tokio::time::sleep_until(start.into()).await;
    let cpu = CpuWindow::start(&w.proxy, &w.echo);
    tokio::time::sleep_until(end.into()).await;
    cpu.finish(out);
    let got = reader.await?;
    let (sent, _wr) = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .map_err(|_| "writer stuck")??;
    let secs = w.duration.as_secs_f64();
    out.insert("frame".into(), json!(frame));
    out.insert("sent_mb_s".into(), json!(sent as f64 / 1e6 / secs));
    out.insert("echoed_mb_s".into(), json!(got as f64 / 1e6 / secs));
    per_unit(out, sent as f64 / 1e6, "proxy_us_per_mb");
    Ok(())
}

/// Open N tunnels (one echo each), hold them idle, then check every one still echoes.
async fn idle(
    client: &Arc<Client>,
    conns: usize,
    hold: Duration,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let rss0 = rss_bytes(&w.proxy);
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                let mut ws = client.ws().await?;
                echo_once(&mut ws).await?;
                Ok::<_, BoxError>(ws)
            })
            .await;
            drop(permit);
            match r {
                Ok(Ok(ws)) => Ok(ws),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".to_string()),
            }
        }));
    }
    let mut sockets = Vec::with_capacity(conns);
    let mut open_errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                open_errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    let rss_open = rss_bytes(&w.proxy);
    tokio::time::sleep(hold).await;
    let rss_held = rss_bytes(&w.proxy);
    // Every tunnel still echoing?
    let opened = sockets.len();
    let mut checks = Vec::with_capacity(opened);
    for mut ws in sockets {
        let permit = sem.clone().acquire_owned().await?;
        checks.push(tokio::spawn(async move {
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(10), echo_once(&mut ws)).await,
                Ok(Ok(()))
            );
            drop(permit);
            (ok, ws)
        }));
    }
    let mut alive = 0;
    let mut keep = Vec::with_capacity(opened);
    for c in checks {
        let (ok, ws) = c.await?;
        alive += ok as usize;
        keep.push(ws);
    }
    let rss_after_echo = rss_bytes(&w.proxy);
    drop(keep);
    out.insert("conns".into(), json!(conns));
    out.insert("opened".into(), json!(opened));
    out.insert("open_errors".into(), json!(open_errors));
    if let Some(e) = first_error {
        out.insert("first_error".into(), json!(e));
    }
    out.insert("open_secs".into(), json!(open_secs));
    out.insert("hold_secs".into(), json!(hold.as_secs_f64()));
    out.insert("alive".into(), json!(alive));
    if let (Some(a), Some(b), Some(c), Some(d)) = (rss0, rss_open, rss_held, rss_after_echo) {
        out.insert("rss_before_kib".into(), json!(a / 1024));
        out.insert("rss_open_kib".into(), json!(b / 1024));
        out.insert("rss_held_kib".into(), json!(c / 1024));
        out.insert("rss_after_echo_kib".into(), json!(d / 1024));
        if opened > 0 {
            let per = (c as f64 - a as f64) / opened as f64;
            out.insert("rss_bytes_per_conn".into(), json!(per));
            out.insert("rss_kib_per_conn".into(), json!(per / 1024.0));
        }
    }
    Ok(())
}

/// Wait until one upgrade + echo + close succeeds (the proxy is up and routes).
async fn probe(
    client: &Arc<Client>,
    secs: f64,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let r = tokio::time::timeout(Duration::from_secs(2), async {
            let mut ws = client.ws().await?;
            echo_once(&mut ws).await?;
            close(ws).await
        })
        .await;
        match r {
            Ok(Ok(())) => {
                out.insert("ready".into(), json!(true));
                return Ok(());
            }
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => return Err("probe timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Keep-alive GETs with wrk (one thread, C connections); wrk inherits the CPU pin.
async fn http(
    target: &str,
    conns: usize,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let url = format!("http://{target}/health");
    let wrk = |secs: f64| {
        std::process::Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{}s", secs.max(1.0) as u64),
            ])
            .args(["--latency", &url])
            .output()
    };
    if !w.warmup.is_zero() {
        wrk(w.warmup.as_secs_f64())?;
    }
    let cpu = CpuWindow::start(&w.proxy, &w.echo);
    let o = wrk(w.duration.as_secs_f64())?;
    let mut cpu_out = serde_json::Map::new();
    cpu.finish(&mut cpu_out);
    // wrk is a child: its CPU is not in ours; take it from the wall time instead.
    cpu_out.remove("client_cpu_pct");
    out.extend(cpu_out);
    let text = String::from_utf8_lossy(&o.stdout);
    let mut total = None;
    let mut rate = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rate = v.trim().parse::<f64>().ok();
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = parse_wrk_time(v.trim());
        } else if l.contains("requests in") {
            total = l
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok());
        } else if l.starts_with("Non-2xx") || l.starts_with("Socket errors") {
            errors += l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    let rate = rate.ok_or_else(|| format!("wrk output not understood: {text}"))?;
    out.insert("conns".into(), json!(conns));
    out.insert("rate".into(), json!(rate));
    if let Some(p) = p99 {
        out.insert("p99_ms".into(), json!(p));
    }
    out.insert("errors".into(), json!(errors));
    let requests = total.unwrap_or(rate * w.duration.as_secs_f64());
    per_unit(out, requests, "proxy_us_per_request");
    Ok(())
}

/// "1.25ms" → 1.25 (milliseconds).
fn parse_wrk_time(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

// ---------------------------------------------------------------- soak (benches/soak.sh)

/// The value of header `name` (lower case) in a response head, if present.
fn header_value(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// An error's kind as a short word for the tallies: the I/O error kind when there is
/// one, else the message.
fn error_kind(e: &BoxError) -> String {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => format!("{:?}", io.kind()),
        None => e.to_string(),
    }
}

/// One response read by [`HttpConn::get`].
struct HttpResp {
    status: u16,
    body_len: usize,
    /// Every body byte is `z` (the echo target's slow answer).
    body_z: bool,
    echo_id: Option<String>,
    /// The server closes the connection after this response.
    close: bool,
}

/// A keep-alive HTTP/1.1 client connection: requests written by hand, responses read
/// with Content-Length, chunked or read-to-close framing.
struct HttpConn {
    s: Conn,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(s: Conn) -> HttpConn {
        HttpConn {
            s,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Read more into the buffer; `Ok(0)` at EOF. Errors are tally words.
    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) => Err(format!("{:?}", e.kind())),
        }
    }

    /// Make sure `n` bytes are buffered; `what` names the place for an early EOF.
    async fn need(&mut self, n: usize, what: &str) -> Result<(), String> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(format!("eof_in_{what}"));
            }
        }
        Ok(())
    }

    /// GET `path`; the error is a tally word (`eof_before_response`, `ConnectionReset`, …).
    async fn get(&mut self, host: &str, path: &str) -> Result<HttpResp, String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wsbench\r\n\r\n");
        if let Err(e) = self.s.write_all(req.as_bytes()).await {
            return Err(format!("write_{:?}", e.kind()));
        }
        if let Err(e) = self.s.flush().await {
            return Err(format!("write_{:?}", e.kind()));
        }
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err("head_too_long".into());
            }
            let empty = self.buf.is_empty();
            if self.fill().await? == 0 {
                return Err(if empty {
                    "eof_before_response".into()
                } else {
                    "eof_in_head".into()
                });
            }
        };
        let head = self.buf[..head_end].to_vec();
        let text = String::from_utf8_lossy(&head);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("malformed_status_line")?;
        let len = header_value(&head, "content-length");
        let chunked = header_value(&head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut close =
            header_value(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let echo_id = header_value(&head, "x-echo-id");
        self.buf.drain(..head_end);
        let mut body = Vec::new();
        if let Some(len) = len {
            let n: usize = len.parse().map_err(|_| "bad_content_length")?;
            self.need(n, "body").await?;
            body.extend(self.buf.drain(..n));
        } else if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if self.fill().await? == 0 {
                        return Err("eof_in_body".into());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| "bad_chunk_size")?;
                self.buf.drain(..line_end + 2);
                self.need(size + 2, "body").await?;
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else if !(status < 200 || status == 204 || status == 304) {
            while self.fill().await? > 0 {}
            body.append(&mut self.buf);
            close = true;
        }
        Ok(HttpResp {
            status,
            body_z: body.iter().all(|b| *b == b'z'),
            body_len: body.len(),
            echo_id,
            close,
        })
    }
}

/// Spreads operations evenly at `rate` per second over all the tasks that share it
/// (rate 0: no pacing).
struct Pacer {
    start: Instant,
    every: Option<Duration>,
    n: AtomicU64,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            start: Instant::now(),
            every: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            n: AtomicU64::new(0),
        }
    }

    /// Wait for the next slot; false when it falls at or after `end`.
    async fn wait(&self, end: Instant) -> bool {
        let Some(every) = self.every else {
            return Instant::now() < end;
        };
        let at = self.start + every * self.n.fetch_add(1, Ordering::Relaxed) as u32;
        if at >= end {
            return false;
        }
        tokio::time::sleep_until(at.into()).await;
        true
    }
}

/// Counts by key, shared by the tasks.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, key: impl Into<String>) {
        *self.0.lock().expect("tally").entry(key.into()).or_default() += 1;
    }
    fn total(&self) -> u64 {
        self.0.lock().expect("tally").values().sum()
    }
    fn json(&self) -> Value {
        json!(*self.0.lock().expect("tally"))
    }
}

/// The first events worth reading afterwards (errors, failures), with their time.
struct Events {
    t0: Instant,
    list: std::sync::Mutex<Vec<Value>>,
}

impl Events {
    fn new() -> Events {
        Events {
            t0: Instant::now(),
            list: std::sync::Mutex::new(Vec::new()),
        }
    }
    fn add(&self, what: String) {
        let mut l = self.list.lock().expect("events");
        if l.len() < 40 {
            l.push(json!([
                (self.t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                what
            ]));
        }
    }
    fn json(&self) -> Value {
        json!(*self.list.lock().expect("events"))
    }
}

#[derive(Default)]
struct MixedStats {
    statuses: Tally,
    http_errors: Tally,
    by_target: Tally,
    server_closes: AtomicU64,
    tunnel_failures_by_target: Tally,
    tunnel_failure_kinds: Tally,
    tunnel_open_errors: Tally,
    reopen_errors: Tally,
    echoes_ok: AtomicU64,
    reopened: AtomicU64,
    final_ok: AtomicU64,
    final_failed: Tally,
}

/// `--paths /a,/b` (default `/`), to take in rotation.
fn paths_opt(opts: &Opts) -> Arc<Vec<String>> {
    Arc::new(
        opts.get("paths")
            .unwrap_or("/")
            .split(',')
            .map(str::to_string)
            .collect(),
    )
}

/// HTTP GETs over keep-alive connections (paced, paths in rotation) beside T WebSocket
/// tunnels that each echo every interval; a tunnel that fails is counted by its target
/// and the kind of failure, and opened again. At the end every tunnel echoes once more.
async fn mixed(
    client: &Arc<Client>,
    opts: &Opts,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let conns: usize = opts.num("conns", 8);
    let rate: f64 = opts.num("rate", 0.0);
    let tunnels: usize = opts.num("tunnels", 0);
    let interval = Duration::from_secs_f64(opts.num("tunnel-interval", 2.0));
    let paths = paths_opt(opts);
    let stats = Arc::new(MixedStats::default());
    let events = Arc::new(Events::new());
    // Tunnels first, so that the HTTP load runs beside all of them.
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut opening = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        opening.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                let (mut ws, id) = client.ws_id().await?;
                echo_once(&mut ws).await?;
                Ok::<_, BoxError>((ws, id))
            })
            .await;
            drop(permit);
            match r {
                Ok(Ok(t)) => Ok(t),
                Ok(Err(e)) => Err(error_kind(&e)),
                Err(_) => Err("timeout".to_string()),
            }
        }));
    }
    let mut open = Vec::with_capacity(tunnels);
    for o in opening {
        match o.await? {
            Ok(t) => open.push(Some(t)),
            Err(e) => {
                stats.tunnel_open_errors.add(e);
                open.push(None);
            }
        }
    }
    let opened = open.iter().filter(|t| t.is_some()).count();
    let t0 = Instant::now();
    let end = t0 + w.duration;
    let pacer = Arc::new(Pacer::new(rate));
    let host = client.host.clone();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (client, stats, events, pacer, paths, host) = (
            client.clone(),
            stats.clone(),
            events.clone(),
            pacer.clone(),
            paths.clone(),
            host.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<HttpConn> = None;
            let mut k = i;
            while pacer.wait(end).await {
                if conn.is_none() {
                    match tokio::time::timeout(Duration::from_secs(10), client.stream()).await {
                        Ok(Ok(s)) => conn = Some(HttpConn::new(s)),
                        r => {
                            let kind = match r {
                                Ok(Err(e)) => format!("connect_{}", error_kind(&e)),
                                _ => "connect_timeout".to_string(),
                            };
                            events.add(format!("http {kind}"));
                            stats.http_errors.add(kind);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else {
                    continue;
                };
                let path = &paths[k % paths.len()];
                k += 1;
                match tokio::time::timeout(Duration::from_secs(15), c.get(&host, path)).await {
                    Ok(Ok(r)) => {
                        stats.statuses.add(r.status.to_string());
                        stats
                            .by_target
                            .add(r.echo_id.unwrap_or_else(|| "-".to_string()));
                        if r.status >= 400 {
                            events.add(format!("http {} {path}", r.status));
                        }
                        if r.close {
                            stats.server_closes.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                    r => {
                        let kind = match r {
                            Ok(Err(e)) => e,
                            _ => "timeout".to_string(),
                        };
                        events.add(format!("http {kind} {path}"));
                        stats.http_errors.add(kind);
                        conn = None;
                    }
                }
            }
        }));
    }
    for (n, slot) in open.into_iter().enumerate() {
        let (client, stats, events) = (client.clone(), stats.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut tunnel = slot;
            // Spread the echoes over the interval.
            let phase = interval.mul_f64((n % 100) as f64 / 100.0);
            let mut next = Instant::now() + phase;
            loop {
                if tunnel.is_none() {
                    // (Re)open until it works or the run ends.
                    while Instant::now() < end {
                        let r = tokio::time::timeout(Duration::from_secs(10), async {
                            let (mut ws, id) = client.ws_id().await?;
                            echo_once(&mut ws).await?;
                            Ok::<_, BoxError>((ws, id))
                        })
                        .await;
                        match r {
                            Ok(Ok(t)) => {
                                stats.reopened.fetch_add(1, Ordering::Relaxed);
                                tunnel = Some(t);
                                break;
                            }
                            r => {
                                let kind = match r {
                                    Ok(Err(e)) => error_kind(&e),
                                    _ => "timeout".to_string(),
                                };
                                stats.reopen_errors.add(kind);
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                        }
                    }
                }
                next = (next + interval).max(Instant::now());
                if next >= end {
                    break;
                }
                tokio::time::sleep_until(next.into()).await;
                let Some((ws, id)) = tunnel.as_mut() else {
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(5), echo_once(ws)).await {
                    Ok(Ok(())) => {
                        stats.echoes_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    r => {
                        let kind = match r {
                            Ok(Err(e)) => error_kind(&e),
                            _ => "echo_timeout".to_string(),
                        };
                        let id = id.clone().unwrap_or_else(|| "-".to_string());
                        events.add(format!("tunnel to {id}: {kind}"));
                        stats.tunnel_failures_by_target.add(id);
                        stats.tunnel_failure_kinds.add(kind);
                        tunnel = None;
                    }
                }
            }
            tokio::time::sleep_until(end.into()).await;
            // The final check: every tunnel held at the end still echoes.
            match tunnel {
                Some((mut ws, id)) => {
                    match tokio::time::timeout(Duration::from_secs(10), echo_once(&mut ws)).await {
                        Ok(Ok(())) => {
                            stats.final_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        r => {
                            let kind = match r {
                                Ok(Err(e)) => error_kind(&e),
                                _ => "echo_timeout".to_string(),
                            };
                            let id = id.unwrap_or_else(|| "-".to_string());
                            events.add(format!("final echo to {id}: {kind}"));
                            stats.final_failed.add(kind);
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), close(ws)).await;
                }
                None => stats.final_failed.add("not_open"),
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let s = &stats;
    out.insert("duration_secs".into(), json!(w.duration.as_secs_f64()));
    out.insert(
        "http".into(),
        json!({
            "conns": conns,
            "rate": rate,
            "paths": *paths,
            "requests": s.statuses.total(),
            "statuses": s.statuses.json(),
            "errors": s.http_errors.json(),
            "by_target": s.by_target.json(),
            "server_closes": s.server_closes.load(Ordering::Relaxed),
        }),
    );
    out.insert(
        "tunnels".into(),
        json!({
            "requested": tunnels,
            "opened": opened,
            "open_errors": s.tunnel_open_errors.json(),
            "echoes_ok": s.echoes_ok.load(Ordering::Relaxed),
            "failures_by_target": s.tunnel_failures_by_target.json(),
            "failure_kinds": s.tunnel_failure_kinds.json(),
            "reopened": s.reopened.load(Ordering::Relaxed),
            "reopen_errors": s.reopen_errors.json(),
            "final_ok": s.final_ok.load(Ordering::Relaxed),
            "final_failed": s.final_failed.json(),
        }),
    );
    out.insert("events".into(), events.json());
    Ok(())
}

#[derive(Default)]
struct H2Stats {
    statuses: Tally,
    errors: Tally,
    /// Connections opened, and those the server ended with a clean `GOAWAY`.
    connections: AtomicU64,
    goaways: AtomicU64,
    /// Connections whose client side failed a write after the server's `GOAWAY`
    /// (its FIN or RST raced the client's last WINDOW_UPDATE or PING acknowledgement);
    /// every stream had its answer by then.
    goaway_then_io: AtomicU64,
    /// Requests answered on each connection the server ended, fewest and most.
    per_ended_conn: std::sync::Mutex<Option<(u64, u64)>>,
}

impl H2Stats {
    fn ended(&self, answered: u64) {
        self.goaways.fetch_add(1, Ordering::Relaxed);
        let mut range = self.per_ended_conn.lock().expect("range");
        *range = Some(match *range {
            None => (answered, answered),
            Some((lo, hi)) => (lo.min(answered), hi.max(answered)),
        });
    }
}

/// How a stream or a connection of the h2 scenario ended badly, or `None` for the
/// server's clean `GOAWAY` (the connection is then opened again).
fn h2_failure(e: &h2::Error) -> Option<String> {
    if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return None;
    }
    Some(match e.reason() {
        Some(r) => format!("h2_{r:?}").to_lowercase(),
        None if e.is_io() => format!("io_{:?}", e.get_io().map(std::io::Error::kind)),
        None => e.to_string(),
    })
}

/// One stream at a time on an h2 connection of the `h2` scenario.
struct H2Lane {
    send: h2::client::SendRequest<Bytes>,
    stats: Arc<H2Stats>,
    events: Arc<Events>,
    pacer: Arc<Pacer>,
    paths: Arc<Vec<String>>,
    /// The server's clean `GOAWAY` was seen on the connection.
    goaway: Arc<std::sync::atomic::AtomicBool>,
    /// Requests answered on the connection.
    answered: Arc<AtomicU64>,
}

impl H2Lane {
    /// GETs (paths in rotation from the `k`th) in the pacer's slots until `end` or
    /// until the connection is done.
    async fn run(self, mut k: usize, end: Instant) {
        while self.pacer.wait(end).await {
            let path = &self.paths[k % self.paths.len()];
            k += 1;
            let answer = tokio::time::timeout(Duration::from_secs(15), self.get(path)).await;
            match answer {
                Ok(Ok(status)) => {
                    self.stats.statuses.add(status.to_string());
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    if status >= 400 {
                        self.events.add(format!("h2 {status} {path}"));
                    }
                }
                Ok(Err(e)) => {
                    match h2_failure(&e) {
                        Some(kind) => {
                            self.events.add(format!("h2 {kind} {path}"));
                            self.stats.errors.add(kind);
                        }
                        None => self.goaway.store(true, Ordering::Relaxed),
                    }
                    // The connection is done: open another.
                    return;
                }
                Err(_) => {
                    self.events.add(format!("h2 timeout {path}"));
                    self.stats.errors.add("timeout");
                    return;
                }
            }
        }
    }

    /// One GET of `path`, its body read whole: the status.
    async fn get(&self, path: &str) -> Result<u16, h2::Error> {
        let req = Request::get(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        let mut ready = self.send.clone().ready().await?;
        let (resp, _) = ready.send_request(req, true)?;
        let resp = resp.await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok(status)
    }
}

/// HTTP/2 GETs over TLS (ALPN `h2`) on `conns` connections with `streams` requests in
/// flight on each, paced to `rate` in all, paths in rotation. A connection the server
/// ends cleanly with `GOAWAY` (ALB's 10,000 requests, or `client_keep_alive`) is counted
/// and opened again; every other end of a stream is an error. Each answer's body is read
/// whole.
async fn h2_load(
    client: &Arc<Client>,
    opts: &Opts,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let conns: usize = opts.num("conns", 4);
    let streams: usize = opts.num("streams", 8);
    let rate: f64 = opts.num("rate", 0.0);
    let paths = paths_opt(opts);
    let connector = tls_connector_alpn(b"h2");
    let stats = Arc::new(H2Stats::default());
    let events = Arc::new(Events::new());
    let pacer = Arc::new(Pacer::new(rate));
    let end = Instant::now() + w.duration;
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (client, connector, stats, events, pacer, paths) = (
            client.clone(),
            connector.clone(),
            stats.clone(),
            events.clone(),
            pacer.clone(),
            paths.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            while Instant::now() < end {
                let opened = tokio::time::timeout(Duration::from_secs(10), async {
                    let tls = connector.connect(name.clone(), client.tcp().await?).await?;
                    Ok::<_, BoxError>(h2::client::handshake(tls).await?)
                })
                .await;
                let (send, conn) = match opened {
                    Ok(Ok(c)) => c,
                    r => {
                        let kind = match r {
                            Ok(Err(e)) => format!("connect_{}", error_kind(&e)),
                            _ => "connect_timeout".to_string(),
                        };
                        events.add(format!("h2 {kind}"));
                        stats.errors.add(kind);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let conn = tokio::spawn(conn);
                let goaway = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let answered = Arc::new(AtomicU64::new(0));
                let mut lanes = Vec::with_capacity(streams);
                for n in 0..streams {
                    let lane = H2Lane {
                        send: send.clone(),
                        stats: stats.clone(),
                        events: events.clone(),
                        pacer: pacer.clone(),
                        paths: paths.clone(),
                        goaway: goaway.clone(),
                        answered: answered.clone(),
                    };
                    lanes.push(tokio::spawn(lane.run(i * streams + n, end)));
                }
                for lane in lanes {
                    let _ = lane.await;
                }
                drop(send);
                // Lanes that saw no GOAWAY stopped because the run's paced slots ran
                // out: the run is over for this connection.
                if Instant::now() >= end || !goaway.load(Ordering::Relaxed) {
                    conn.abort();
                    break;
                }
                let answered = answered.load(Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(10), conn).await {
                    Ok(Ok(Ok(()))) => stats.ended(answered),
                    Ok(Ok(Err(e))) => match h2_failure(&e) {
                        None => stats.ended(answered),
                        Some(_) if e.is_io() && goaway.load(Ordering::Relaxed) => {
                            stats.ended(answered);
                            stats.goaway_then_io.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(kind) => {
                            events.add(format!("h2 connection {kind}"));
                            stats.errors.add(format!("connection_{kind}"));
                        }
                    },
                    _ => {
                        events.add("h2 connection did not end".to_string());
                        stats.errors.add("connection_not_ended");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let s = &stats;
    out.insert("duration_secs".into(), json!(w.duration.as_secs_f64()));
    out.insert("conns".into(), json!(conns));
    out.insert("streams".into(), json!(streams));
    out.insert("rate".into(), json!(rate));
    out.insert("requests".into(), json!(s.statuses.total()));
    out.insert("statuses".into(), s.statuses.json());
    out.insert("errors".into(), s.errors.json());
    out.insert(
        "connections".into(),
        json!(s.connections.load(Ordering::Relaxed)),
    );
    out.insert("goaways".into(), json!(s.goaways.load(Ordering::Relaxed)));
    out.insert(
        "requests_per_ended_conn".into(),
        json!(*s.per_ended_conn.lock().expect("range")),
    );
    out.insert(
        "goaway_then_io".into(),
        json!(s.goaway_then_io.load(Ordering::Relaxed)),
    );
    out.insert("events".into(), events.json());
    Ok(())
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn proc_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// A new connection to `addr` during a drain: refused, or accepted and then what.
async fn drain_probe(addr: SocketAddr) -> &'static str {
    let s = match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
        Err(_) => return "connect_timeout",
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return "refused",
        Ok(Err(_)) => return "connect_error",
        Ok(Ok(s)) => s,
    };
    let mut s = s;
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return "accepted_then_write_failed";
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Err(_) => "accepted_no_answer",
        Ok(Ok(0)) => "accepted_then_closed",
        Ok(Ok(_)) => "accepted_and_answered",
        Ok(Err(_)) => "accepted_then_reset",
    }
}

/// SIGTERM while requests are in flight: C connections each send one request for a
/// slow answer (the echo target's `--delay-ms`), T WebSocket tunnels are open; after
/// `--signal-after` seconds the proxy (the first of `--proxy-pids`) gets SIGTERM. Then:
/// does every in-flight request get its whole answer, do the tunnels still echo two
/// seconds into the drain and when do they end, are new connections to `--probe`
/// (addresses, comma-separated) refused, and when has the process exited.
async fn drain(
    client: &Arc<Client>,
    opts: &Opts,
    w: &Window,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let conns: usize = opts.num("conns", 50);
    let tunnels: usize = opts.num("tunnels", 0);
    let path = opts.get("path").unwrap_or("/slow").to_string();
    let expect: usize = opts.num("expect-bytes", SLOW_CHUNKS as usize * SLOW_CHUNK);
    let signal_after = Duration::from_secs_f64(opts.num("signal-after", 1.5));
    let pid = *w
        .proxy
        .first()
        .ok_or("--proxy-pids: the process to signal")?;
    let probes: Vec<SocketAddr> = opts
        .get("probe")
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut tws = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        let mut ws = client.ws().await?;
        echo_once(&mut ws).await?;
        tws.push(ws);
    }
    let host = client.host.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let mut reqs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (client, host, path, done) = (client.clone(), host.clone(), path.clone(), done.clone());
        reqs.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(90), async {
                let s = client
                    .stream()
                    .await
                    .map_err(|e| format!("connect_{}", error_kind(&e)))?;
                let mut c = HttpConn::new(s);
                c.get(&host, &path).await
            })
            .await;
            done.fetch_add(1, Ordering::Relaxed);
            (
                Instant::now(),
                r.unwrap_or_else(|_| Err("timeout".to_string())),
            )
        }));
    }
    tokio::time::sleep(signal_after).await;
    let in_flight = conns - done.load(Ordering::Relaxed);
    let t_sig = Instant::now();
    // SAFETY: kill(2) with a pid and a signal number.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
        return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()).into());
    }
    // The tunnels: one echo 2 s into the drain, then wait for their end.
    let mut ends = Vec::with_capacity(tunnels);
    for mut ws in tws {
        ends.push(tokio::spawn(async move {
            tokio::time::sleep_until((t_sig + Duration::from_secs(2)).into()).await;
            let echoed = matches!(
                tokio::time::timeout(Duration::from_secs(3), echo_once(&mut ws)).await,
                Ok(Ok(()))
            );
            let how = match tokio::time::timeout(Duration::from_secs(90), ws.read_frame()).await {
                Err(_) => "still_open".to_string(),
                Ok(Ok(f)) if f.opcode == OpCode::Close => "close_frame".to_string(),
                Ok(Ok(_)) => "unexpected_frame".to_string(),
                Ok(Err(e)) => {
                    let t = e.to_string();
                    if t.to_ascii_lowercase().contains("eof") {
                        "eof".to_string()
                    } else {
                        t
                    }
                }
            };
            (echoed, how, t_sig.elapsed().as_secs_f64())
        }));
    }
    // New connections while draining, every 100 ms until the process is gone.
    let probe_task = tokio::spawn(async move {
        let outcomes = Tally::default();
        let mut first_answered_after_grace = None;
        let grace = Duration::from_millis(250);
        while !proc_exited(pid) && t_sig.elapsed() < Duration::from_secs(120) {
            for &a in &probes {
                let at = t_sig.elapsed();
                let o = drain_probe(a).await;
                let late = at >= grace;
                outcomes.add(format!("{}{o}", if late { "" } else { "first_250ms_" }));
                if late && o != "refused" && first_answered_after_grace.is_none() {
                    first_answered_after_grace = Some(at.as_secs_f64());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (outcomes.json(), first_answered_after_grace)
    });
    // The exit, to 10 ms.
    let mut exit_secs = None;
    while t_sig.elapsed() < Duration::from_secs(120) {
        if proc_exited(pid) {
            exit_secs = Some(t_sig.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let results = Tally::default();
    let mut complete = 0;
    let mut last_done = 0.0f64;
    for r in reqs {
        let (at, r) = r.await?;
        let after = at.saturating_duration_since(t_sig).as_secs_f64();
        match r {
            Ok(r) if r.status == 200 && r.body_len == expect && r.body_z => {
                complete += 1;
                last_done = last_done.max(after);
            }
            Ok(r) => results.add(format!("status_{}_body_{}", r.status, r.body_len)),
            Err(e) => results.add(e),
        }
    }
    let mut tunnel_echo_ok = 0;
    let tunnel_ends = Tally::default();
    let mut tunnel_end_secs: Option<(f64, f64)> = None;
    for e in ends {
        let (echoed, how, at) = e.await?;
        tunnel_echo_ok += echoed as usize;
        tunnel_ends.add(how);
        tunnel_end_secs = Some(match tunnel_end_secs {
            None => (at, at),
            Some((a, b)) => (a.min(at), b.max(at)),
        });
    }
    let (probe_outcomes, accepted_after_grace) = probe_task.await?;
    out.insert("conns".into(), json!(conns));
    out.insert("in_flight_at_signal".into(), json!(in_flight));
    out.insert("complete".into(), json!(complete));
    out.insert("incomplete".into(), results.json());
    out.insert("last_response_after_signal_secs".into(), json!(last_done));
    out.insert("exit_secs".into(), json!(exit_secs));
    out.insert("probes".into(), probe_outcomes);
    out.insert(
        "first_accepted_after_250ms_secs".into(),
        json!(accepted_after_grace),
    );
    out.insert("tunnels".into(), json!(tunnels));
    out.insert("tunnel_echo_during_drain_ok".into(), json!(tunnel_echo_ok));
    out.insert("tunnel_ends".into(), tunnel_ends.json());
    if let Some((a, b)) = tunnel_end_secs {
        out.insert("tunnel_end_secs".into(), json!([a, b]));
    }
    Ok(())
}
