//! Keep-alive HTTP/1.1 connections to targets.
//!
//! Each target keeps a small LIFO list of idle connections ([`IdleConns`], held by
//! [`crate::target_group::Target`]), so a request takes one without hashing or a
//! pool-wide lock. A request on a fresh connection [`connect`]s and runs the connection in
//! a task of its own; the response body ([`PooledBody`]) gives the connection back to its
//! list once the target's response has been read to the end. A connection is never given
//! back while a response is still streaming, after an error, or when the target asked to
//! close it (hyper then reports it closed and it is dropped at the next take).
//!
//! Idle connections live at most the load balancer's idle timeout: [`IdleConns::take`]
//! skips older ones, and [`IdleConns::evict_idle`] (called periodically) closes them
//! when no request comes.
//!
//! A request without a body does not need hyper's client: [`exchange_raw`] writes its
//! head and reads the answer's head itself, in the request's own task, and `RawBody`
//! reads a `Content-Length` body. Such connections wait in the list as bare streams
//! ([`Conn::Raw`]). Answers it does not read itself (chunked or close-delimited bodies,
//! interim `1xx`, anything malformed) are handed to a hyper connection made over the
//! same stream and the bytes already received ([`handshake_primed`]), which then reads
//! them exactly as it would have; that connection stays a hyper one ([`Conn::Hyper`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The sending half of one HTTP/1.1 connection to a target.
pub type Sender = http1::SendRequest<Incoming>;

/// One keep-alive connection to a target.
pub enum Conn {
    /// Run by hyper in a task of its own.
    Hyper(Sender),
    /// A bare stream between exchanges of [`exchange_raw`].
    Raw(TcpStream),
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An idle bare stream is usable when nothing can be read from it: readable means the
/// target closed it (or sent something unasked). Tokio's readiness answers without a
/// system call; only when it is stale does a read tell.
fn raw_is_usable(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// A target's idle keep-alive connections, most recently used last.
#[derive(Default)]
pub struct IdleConns {
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConns")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdleConns {
    /// The most recently used connection that can take a request now; closed ones and
    /// ones idle for `idle_timeout` or longer are dropped on the way.
    pub fn take(&self, idle_timeout: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        // Connections whose previous exchange is still winding down (rare) stay listed.
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if now.saturating_duration_since(c.since) >= idle_timeout {
                continue;
            }
            match c.conn {
                Conn::Hyper(sender) => {
                    if sender.is_closed() {
                        continue;
                    }
                    if sender.is_ready() {
                        found = Some(Conn::Hyper(sender));
                        break;
                    }
                    busy.push(Idle {
                        conn: Conn::Hyper(sender),
                        since: c.since,
                    });
                }
                Conn::Raw(stream) => {
                    if raw_is_usable(&stream) {
                        found = Some(Conn::Raw(stream));
                        break;
                    }
                }
            }
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    /// List `conn` as idle from now on.
    pub fn put(&self, conn: Conn) {
        if let Conn::Hyper(sender) = &conn {
            if sender.is_closed() {
                return;
            }
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Close connections idle for `idle_timeout` or longer, and closed ones.
    pub fn evict_idle(&self, idle_timeout: Duration) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| {
                let open = match &c.conn {
                    Conn::Hyper(sender) => !sender.is_closed(),
                    Conn::Raw(_) => true,
                };
                open && now.saturating_duration_since(c.since) < idle_timeout
            });
        }
    }

    /// Close every idle connection.
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Connections listed.
    pub fn len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How opening a connection to a target failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused, reset, unreachable...
    Io(std::io::Error),
    /// No answer within the connect timeout.
    Timeout,
    /// The HTTP/1.1 handshake (setting up the connection's state) failed.
    Handshake(hyper::Error),
}

/// Open a new HTTP/1.1 connection to `addr` (TCP_NODELAY) and run it in its own task
/// until it closes or its [`Sender`] is dropped.
pub async fn connect(
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
) -> Result<Sender, ConnectError> {
    handshake(connect_tcp(addr, connect_timeout).await?).await
}

/// Open a TCP connection to `addr` (TCP_NODELAY).
pub async fn connect_tcp(
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Run an HTTP/1.1 client connection over `stream` in a task of its own.
pub async fn handshake(stream: TcpStream) -> Result<Sender, ConnectError> {
    handshake_io(stream).await
}

/// A hyper client connection over `stream` to which a request was already written and
/// from which `received` was already read: the first request sent on it goes nowhere
/// (it stands for the one written), and hyper reads its answer from `received`, then
/// the stream. Later requests go out as usual.
pub async fn handshake_primed(stream: TcpStream, received: Bytes) -> Result<Sender, ConnectError> {
    handshake_io(Primed {
        stream,
        received,
        flushed: false,
        reader: None,
    })
    .await
}

async fn handshake_io<T>(io: T) -> Result<Sender, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("A connection to a target ended with an error: {e}.");
        }
    });
    Ok(sender)
}

/// See [`handshake_primed`]: writes are dropped until the first flush (hyper's stand-in
/// request), and nothing is readable before it, or hyper would take the answer for an
/// unsolicited one.
struct Primed {
    stream: TcpStream,
    received: Bytes,
    flushed: bool,
    reader: Option<std::task::Waker>,
}

impl AsyncRead for Primed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.flushed {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !self.received.is_empty() {
            let n = self.received.len().min(buf.remaining());
            let head = self.received.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Primed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.flushed {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.flushed {
            self.flushed = true;
            if let Some(w) = self.reader.take() {
                w.wake();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Upper bound on a response head read without hyper: by [`exchange_raw`] (larger ones
/// go to hyper) and for an upgrade's answer (a WebSocket `101` is a few hundred bytes).
pub(crate) const MAX_RAW_HEAD: usize = 64 * 1024;
/// Headers in a response head read without hyper (hyper's client default; past it
/// [`exchange_raw`] hands over to hyper, which refuses).
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;

/// How [`exchange_raw`] failed.
#[derive(Debug)]
pub enum RawError {
    /// The target closed the connection before any byte of an answer.
    Closed,
    Io(std::io::Error),
}

/// What [`exchange_raw`] got back.
pub enum RawAnswer {
    /// A response it reads itself: the head, and a body of `length` bytes of which
    /// `rest` (everything read after the head) holds the start.
    Read {
        head: http::response::Parts,
        length: u64,
        stream: TcpStream,
        rest: BytesMut,
    },
    /// One for hyper ([`handshake_primed`]): the stream and all bytes received.
    ForHyper(TcpStream, BytesMut),
}

/// The request head as hyper's client writes it for a request without a body.
pub fn encode_request_head(parts: &http::request::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(64 + parts.headers.len() * 48);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    head.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Write `head` (a request without a body) on `stream` and read the response head. A
/// final HTTP/1.1 answer framed by one `Content-Length` (or with no body: `HEAD`, `204`,
/// `304`) is read here; anything else is left to hyper, which reads it exactly as it
/// would have on a connection of its own.
///
/// `recycled` (emptied) becomes the response's header map: hyper's server parses the
/// next request of the client connection into it, and that request's map comes back
/// here, so no map is made or freed per request (hyper's client does the same).
pub async fn exchange_raw(
    mut stream: TcpStream,
    head: &[u8],
    method: &Method,
    mut recycled: http::HeaderMap,
) -> Result<RawAnswer, RawError> {
    stream.write_all(head).await.map_err(RawError::Io)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = std::future::poll_fn(|cx| poll_read_into(&mut stream, cx, &mut buf))
            .await
            .map_err(RawError::Io)?;
        if n == 0 {
            if buf.is_empty() {
                return Err(RawError::Closed);
            }
            return Ok(RawAnswer::ForHyper(stream, buf));
        }
        let mut spans =
            [const { std::mem::MaybeUninit::<(Span, Span)>::uninit() }; MAX_RESPONSE_HEADERS];
        let p = match parse_response_head(&buf, method, &mut spans) {
            Parsed::Partial if buf.len() <= MAX_RAW_HEAD => continue,
            Parsed::Partial | Parsed::ForHyper => return Ok(RawAnswer::ForHyper(stream, buf)),
            Parsed::Complete(p) => p,
        };
        let raw = buf.split_to(p.len).freeze();
        let mut out = http::Response::new(());
        *out.status_mut() = p.status;
        *out.version_mut() = Version::HTTP_11;
        recycled.clear();
        *out.headers_mut() = recycled;
        let headers = out.headers_mut();
        headers.reserve(p.count);
        for span in &spans[..p.count] {
            // SAFETY: `parse_response_head` wrote the first `count` spans.
            let (name, value) = unsafe { span.assume_init() };
            // Both were checked by `parse_response_head`.
            let Ok(name) = HeaderName::from_bytes(&raw[name.0..name.1]) else {
                continue;
            };
            let Ok(value) = HeaderValue::from_maybe_shared(raw.slice(value.0..value.1)) else {
                continue;
            };
            headers.append(name, value);
        }
        if let Some(reason) = p.reason {
            if let Ok(r) = hyper::ext::ReasonPhrase::try_from(raw.slice(reason.0..reason.1)) {
                out.extensions_mut().insert(r);
            }
        }
        return Ok(RawAnswer::Read {
            head: out.into_parts().0,
            length: p.length,
            stream,
            rest: buf,
        });
    }
}

type Span = (usize, usize);

struct ParsedHead {
    len: usize,
    status: StatusCode,
    /// A reason phrase other than the status's canonical one.
    reason: Option<Span>,
    /// Headers (name and value spans) written to the caller's array.
    count: usize,
    length: u64,
}

enum Parsed {
    Partial,
    ForHyper,
    Complete(ParsedHead),
}

/// The rule of `HeaderValue::from_bytes`, checked without making one.
fn is_header_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// Is this a name `HeaderName::from_bytes` takes (httparse checked the characters)?
fn is_header_name(n: &[u8]) -> bool {
    !n.is_empty() && n.len() <= 0xffff
}

fn parse_response_head(
    buf: &[u8],
    method: &Method,
    spans: &mut [std::mem::MaybeUninit<(Span, Span)>; MAX_RESPONSE_HEADERS],
) -> Parsed {
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::ForHyper,
    };
    let (Some(1), Some(code)) = (resp.version, resp.code) else {
        return Parsed::ForHyper;
    };
    let Ok(status) = StatusCode::from_u16(code) else {
        return Parsed::ForHyper;
    };
    if status.is_informational() {
        return Parsed::ForHyper;
    }
    let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    let mut length = None;
    for (h, span) in resp.headers.iter().zip(spans.iter_mut()) {
        let name = h.name.as_bytes();
        if !is_header_name(name) || !is_header_value(h.value) {
            return Parsed::ForHyper;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::ForHyper;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // One plain decimal value; lists and repeats are hyper's to judge.
            if length.is_some()
                || h.value.is_empty()
                || h.value.len() > 18
                || !h.value.iter().all(u8::is_ascii_digit)
            {
                return Parsed::ForHyper;
            }
            length = Some(
                h.value
                    .iter()
                    .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
            );
        }
        let n = offset(name);
        let v = offset(h.value);
        span.write(((n, n + name.len()), (v, v + h.value.len())));
    }
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = if no_body {
        0
    } else {
        match length {
            Some(n) => n,
            // Close-delimited: hyper reads it.
            None => return Parsed::ForHyper,
        }
    };
    let reason = resp
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .map(|r| {
            let start = offset(r.as_bytes());
            (start, start + r.len())
        });
    Parsed::Complete(ParsedHead {
        len,
        status,
        reason,
        count: resp.headers.len(),
        length,
    })
}

/// Read from `stream` into `buf`'s spare capacity (no zeroing); the bytes read.
fn poll_read_into(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let start = spare.as_ptr();
    let mut rb = ReadBuf::uninit(spare);
    match Pin::new(stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => return Poll::Pending,
    }
    let n = rb.filled().len();
    if rb.filled().as_ptr() != start.cast() {
        return Poll::Ready(Err(std::io::Error::other(
            "the reader replaced the read buffer",
        )));
    }
    // SAFETY: the stream initialised the first `n` bytes of the spare capacity (a
    // `ReadBuf` only counts initialised bytes as filled, and it still points there).
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// A target's response body that gives its connection back to `home` once read to the
/// end (or at once, for a response without a body).
pub struct PooledBody {
    inner: Inner,
}

enum Inner {
    Hyper {
        body: Incoming,
        conn: Option<(Sender, Arc<IdleConns>)>,
    },
    Raw(RawBody),
}

/// Errors of a response body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl PooledBody {
    /// `body` of a response that came on `sender`; `reuse` false keeps the connection
    /// out of the list (it closes once the exchange is over).
    pub fn new(body: Incoming, sender: Sender, home: Arc<IdleConns>, reuse: bool) -> PooledBody {
        let mut b = PooledBody {
            inner: Inner::Hyper {
                body,
                conn: reuse.then_some((sender, home)),
            },
        };
        if b.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A body that does not belong to a pooled connection.
    pub fn unpooled(body: Incoming) -> PooledBody {
        PooledBody {
            inner: Inner::Hyper { body, conn: None },
        }
    }

    /// A `length`-byte body read from `stream` by [`RawBody`], `rest` holding its start;
    /// `reuse` false closes the stream at the end instead of listing it in `home`.
    pub fn raw(
        stream: TcpStream,
        rest: BytesMut,
        length: u64,
        home: Arc<IdleConns>,
        reuse: bool,
    ) -> PooledBody {
        let mut raw = RawBody {
            stream: Some(stream),
            buf: rest,
            left: length,
            home: reuse.then_some(home),
        };
        if length == 0 {
            raw.finish();
        }
        PooledBody {
            inner: Inner::Raw(raw),
        }
    }

    fn give_back(&mut self) {
        if let Inner::Hyper { conn, .. } = &mut self.inner {
            if let Some((sender, home)) = conn.take() {
                home.put(Conn::Hyper(sender));
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let (body, conn) = match &mut this.inner {
            Inner::Raw(raw) => return raw.poll_frame(cx),
            Inner::Hyper { body, conn } => (body, conn),
        };
        let r = Pin::new(&mut *body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.give_back(),
            // A broken body leaves the connection unusable: drop it.
            Poll::Ready(Some(Err(_))) => *conn = None,
            _ => {}
        }
        r.map(|o| o.map(|r| r.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Raw(raw) => raw.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Raw(raw) => SizeHint::with_exact(raw.left),
        }
    }
}

/// A `Content-Length` body read straight from the target's stream; the stream goes back
/// to the list once the last byte is read (and nothing more came).
struct RawBody {
    stream: Option<TcpStream>,
    /// Read, not yet passed on.
    buf: BytesMut,
    left: u64,
    home: Option<Arc<IdleConns>>,
}

/// How much one read of a body asks for at most.
const BODY_READ: usize = 64 * 1024;

impl RawBody {
    fn finish(&mut self) {
        let stream = self.stream.take();
        if let (Some(stream), Some(home)) = (stream, self.home.take()) {
            // Bytes beyond the body: the target is not speaking HTTP/1.1 as we are.
            if self.buf.is_empty() {
                home.put(Conn::Raw(stream));
            }
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.left == 0 {
                self.finish();
                return Poll::Ready(None);
            }
            if !self.buf.is_empty() {
                let n = self.left.min(self.buf.len() as u64) as usize;
                self.left -= n as u64;
                let data = self.buf.split_to(n).freeze();
                if self.left == 0 {
                    self.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(Some(Err("the response body was cut short".into())));
            };
            if self.buf.capacity() < 1024 {
                self.buf
                    .reserve(self.left.min(BODY_READ as u64).max(1024) as usize);
            }
            match poll_read_into(stream, cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.stream = None;
                    self.home = None;
                    return Poll::Ready(Some(Err(
                        "the target closed the connection before the end of the response body"
                            .into(),
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.stream = None;
                    self.home = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}
