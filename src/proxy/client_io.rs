//! The client side of an HTTP/1 connection as hyper reads it: every request head passes
//! through [`head::assess`] before hyper sees a byte of it, so ALB's limits, desync
//! verdicts and error pages apply even to requests hyper itself would refuse with a bare
//! `400`. Bodies are only measured (to find the next head), never buffered.
//!
//! A rejected head never reaches hyper. In its place hyper reads a small well-formed
//! stand-in request, and the service, which takes verdicts in order from [`ConnState`],
//! answers it with ALB's page and `Connection: close`. Reading then stops, so nothing
//! after the bad head is ever interpreted.
//!
//! Idle time is measured here too: no byte either way for the idle timeout while
//! waiting for a head → `408` when the connection has not sent a request yet or sent
//! part of a head, else a quiet close (a kept-alive connection going idle). A head
//! must also be whole within that time of its first byte, however its bytes trickle
//! in (`408`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::desync::Classification;
use super::error::RequestError;
use super::forward::ResponseTimer;
use super::head::{self, Framing, HeadAction};
use super::serve::ConnInfo;
use super::upgrade::PendingTunnel;
use crate::config::model::DesyncMitigationMode;
use crate::observe::{AccessRecord, LogFile};
use crate::tunnel::idle::IdleClock;

/// How much a read from the client asks for at most.
const READ_SIZE: usize = 8192;

/// The request hyper reads in place of a rejected head.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: rejected.invalid\r\n\r\n";

/// The verdict about one head, taken by the service in request order.
#[derive(Debug, Clone, Copy)]
pub struct HeadVerdict {
    pub classification: Classification,
    pub action: HeadAction,
    /// The head's bytes and its body's declared length (`Content-Length`; 0 for a
    /// chunked body, whose length is not known up front): the request's
    /// `received_bytes` in the access log.
    pub received: u64,
}

/// When a client connection last sent a byte, and whether a request body is still
/// arriving on it. The wait for a target's answer counts from the request's last byte
/// (ALB's idle timeout: no byte either way), and a body that stops arriving for the
/// idle timeout is the client's silence (408), not the target's (504).
#[derive(Debug, Default)]
pub struct BodyClock {
    /// Microseconds from [`epoch`] to the last read from the client.
    last_read_us: AtomicU64,
    arriving: AtomicBool,
}

/// The time base of [`BodyClock`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl BodyClock {
    fn read_at(&self, now: Instant) {
        let us = now.saturating_duration_since(epoch()).as_micros() as u64;
        self.last_read_us.store(us, Ordering::Relaxed);
    }

    fn set_arriving(&self, arriving: bool) {
        self.arriving.store(arriving, Ordering::Relaxed);
    }

    /// Whether a request body is still arriving, and when the client last sent a byte.
    pub fn state(&self) -> (bool, Instant) {
        let last = epoch() + Duration::from_micros(self.last_read_us.load(Ordering::Relaxed));
        (self.arriving.load(Ordering::Relaxed), last)
    }
}

/// How a request's body is followed while its target's answer is awaited.
#[derive(Debug, Clone, Copy)]
pub enum BodyWatch<'a> {
    /// Not followed: the wait for the answer counts from when the request was sent.
    None,
    /// An HTTP/1 connection's clock, kept by its [`ClientIo`].
    Connection(&'a BodyClock),
    /// An HTTP/2 stream's clock, kept by its [`RequestBody`].
    Stream(&'a Arc<BodyClock>),
}

impl BodyWatch<'_> {
    /// A clock for an HTTP/2 request whose body is still to come (`None` when it has
    /// none: nothing to follow, nothing allocated).
    pub fn stream_clock(body: &hyper::body::Incoming) -> Option<Arc<BodyClock>> {
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return None;
        }
        let clock = BodyClock::default();
        clock.read_at(Instant::now());
        clock.set_arriving(true);
        Some(Arc::new(clock))
    }

    pub fn clock(&self) -> Option<&BodyClock> {
        match *self {
            BodyWatch::None => None,
            BodyWatch::Connection(clock) => Some(clock),
            BodyWatch::Stream(clock) => Some(clock),
        }
    }
}

/// A client's request body on its way to a target. An HTTP/2 stream's body keeps its
/// stream's [`BodyClock`] (an HTTP/1 connection's reader keeps the connection's).
#[derive(Debug)]
pub struct RequestBody {
    inner: hyper::body::Incoming,
    clock: Option<Arc<BodyClock>>,
}

impl RequestBody {
    pub fn new(inner: hyper::body::Incoming, clock: Option<Arc<BodyClock>>) -> RequestBody {
        RequestBody { inner, clock }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(clock) = &self.clock {
            match &polled {
                Poll::Ready(Some(Ok(_))) => {
                    clock.read_at(Instant::now());
                    // The last frame: whoever reads this body may not poll it again.
                    if self.inner.is_end_stream() {
                        clock.set_arriving(false);
                    }
                }
                Poll::Ready(_) => clock.set_arriving(false),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the reader, the service and the connection task of one connection share.
#[derive(Debug)]
pub struct ConnState {
    /// The connection's trace id and TLS parameters, for the access log.
    pub info: ConnInfo,
    /// The access-log record of the request answered last, written once its response
    /// has gone out whole (when the next request begins or the connection ends), with
    /// the bytes sent by then.
    pending_log: Mutex<Option<PendingLine>>,
    verdicts: Mutex<VecDeque<HeadVerdict>>,
    in_flight: AtomicUsize,
    /// Kept between the connection's requests, which use it one after another.
    response_timer: Mutex<ResponseTimer>,
    /// The tunnel to open once hyper has written a `101` and let go of the stream.
    tunnel: Mutex<Option<Box<PendingTunnel>>>,
    /// Bytes read from and written to the client while it spoke HTTP (heads included).
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// When serving began: `client_keep_alive` counts from here.
    opened: Instant,
    /// How the current request body is arriving.
    pub body: BodyClock,
}

/// A request's access-log record waiting for its response to be sent.
#[derive(Debug)]
pub struct PendingLine {
    pub record: Box<AccessRecord>,
    pub log: Arc<LogFile<Box<AccessRecord>>>,
    /// `sent` when the response began.
    pub sent_before: u64,
}

impl ConnState {
    pub fn new(info: ConnInfo) -> ConnState {
        ConnState {
            info,
            pending_log: Mutex::new(None),
            verdicts: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            response_timer: Mutex::default(),
            tunnel: Mutex::default(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            opened: Instant::now(),
            body: BodyClock::default(),
        }
    }

    /// Has the connection lived past `keep_alive` (ALB's `client_keep_alive`)? Its next
    /// request is then its last: served, and answered with `Connection: close`.
    /// Measured at the request's last byte read (the reader's reading, no clock read
    /// of its own per request).
    pub fn outlived(&self, keep_alive: Duration) -> bool {
        let (_, last_read) = self.body.state();
        last_read.saturating_duration_since(self.opened) >= keep_alive
    }

    /// Hold `record` until its response is out (see [`ConnState::write_pending`]).
    pub fn hold_line(&self, record: Box<AccessRecord>, log: Arc<LogFile<Box<AccessRecord>>>) {
        let sent_before = self.sent.load(Ordering::Relaxed);
        let previous = self.pending_log.lock().ok().and_then(|mut p| {
            p.replace(PendingLine {
                record,
                log,
                sent_before,
            })
        });
        if let Some(p) = previous {
            self.write(p);
        }
    }

    /// Write the held record, its `sent_bytes` being what went out since its response
    /// began.
    pub fn write_pending(&self) {
        if let Some(p) = self.take_pending() {
            p.log.write(p.record);
        }
    }

    /// The held record with its `sent_bytes` (for a tunnel to finish: its response, the
    /// `101`, is out).
    pub fn take_pending(&self) -> Option<PendingLine> {
        let p = self.pending_log.lock().ok()?.take()?;
        Some(self.sent_so_far(p))
    }

    fn write(&self, p: PendingLine) {
        let p = self.sent_so_far(p);
        p.log.write(p.record);
    }

    /// `p` with what went out since its response began as its `sent_bytes`.
    fn sent_so_far(&self, mut p: PendingLine) -> PendingLine {
        p.record.sent_bytes = self.sent.load(Ordering::Relaxed) - p.sent_before;
        p
    }

    /// The verdict for the next request hyper hands the service (compliant when the
    /// reader did not see it, e.g. after a refused upgrade).
    pub fn next_verdict(self: &Arc<Self>) -> (HeadVerdict, InFlight) {
        let v = self
            .verdicts
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .unwrap_or(HeadVerdict {
                classification: Classification::COMPLIANT,
                action: HeadAction::Serve { close_after: false },
                received: 0,
            });
        (v, InFlight(self.clone()))
    }

    /// The response timer of the connection's previous request, if any.
    pub fn take_response_timer(&self) -> ResponseTimer {
        self.response_timer
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Keep `timer` for the connection's next request.
    pub fn keep_response_timer(&self, timer: ResponseTimer) {
        if let Ok(mut t) = self.response_timer.lock() {
            *t = timer;
        }
    }

    /// Leave `tunnel` for the connection task, which opens it once hyper has written
    /// the `101` that ends its part.
    pub fn leave_tunnel(&self, tunnel: Box<PendingTunnel>) {
        if let Ok(mut t) = self.tunnel.lock() {
            *t = Some(tunnel);
        }
    }

    /// The tunnel left by [`ConnState::leave_tunnel`], if any.
    pub fn take_tunnel(&self) -> Option<Box<PendingTunnel>> {
        self.tunnel.lock().ok()?.take()
    }

    fn push(&self, v: HeadVerdict) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut q) = self.verdicts.lock() {
            q.push_back(v);
        }
    }
}

/// Held while the service works on a request; the idle timer does not close the
/// connection under a request in flight.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum ReadState {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Inside a body of this many remaining bytes.
    Length(u64),
    Chunked(Chunk),
    /// After an upgrade or CONNECT, or a body we could not follow: bytes pass as they are.
    Passthrough,
    /// A head was rejected: hyper gets nothing more.
    Rejected,
    /// The client closed its side.
    Eof,
}

/// A chunked body, followed only far enough to find where it ends.
#[derive(Clone, Copy)]
enum Chunk {
    Size { size: u64, in_ext: bool },
    Data(u64),
    DataEnd,
    TrailerStart,
    TrailerLine,
    End,
}

/// The client stream as hyper sees it.
pub struct ClientIo<S> {
    inner: S,
    /// Received, not yet assessed.
    pending: BytesMut,
    /// Assessed, for hyper.
    ready: Bytes,
    state: ReadState,
    conn: Arc<ConnState>,
    mode: DesyncMitigationMode,
    /// When a byte last moved either way, and the idle timeout.
    clock: IdleClock,
    /// Armed for the clock's deadline or earlier; re-armed lazily when it fires (no
    /// timer reset per read or write). Dropped once the connection is a tunnel.
    deadline: Option<Pin<Box<Sleep>>>,
    heads: u64,
    scan: head::HeadScan,
}

impl<S> ClientIo<S> {
    /// `n` bytes went to the client.
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.conn.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
    }

    pub fn new(
        inner: S,
        conn: Arc<ConnState>,
        mode: DesyncMitigationMode,
        idle_timeout: Duration,
    ) -> ClientIo<S> {
        ClientIo {
            inner,
            pending: BytesMut::new(),
            ready: Bytes::new(),
            state: ReadState::Head,
            conn,
            mode,
            clock: IdleClock::new(idle_timeout, Instant::now()),
            deadline: Some(Box::pin(tokio::time::sleep(idle_timeout))),
            heads: 0,
            scan: head::HeadScan::default(),
        }
    }

    /// The raw stream, and the bytes read from it that hyper has not been given, in
    /// order. After an upgrade the tunnel takes these and no HTTP framing is needed.
    pub fn into_inner(self) -> (S, Bytes) {
        (self.inner, join(self.ready, self.pending.freeze()))
    }

    fn touch(&mut self) {
        self.clock.touch(Instant::now());
    }

    /// `Ready` once nothing has moved for the idle timeout (the same lazy re-arming as
    /// a tunnel's idle timeout: [`IdleClock`]).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.deadline.as_mut() {
            Some(deadline) => self.clock.poll_expired(cx, deadline.as_mut()),
            None => Poll::Pending,
        }
    }

    /// Read from the client into `pending`'s spare capacity (no zeroing, no copy).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>>
    where
        S: AsyncRead + Unpin,
    {
        if self.pending.capacity() - self.pending.len() < READ_SIZE / 4 {
            self.pending.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.pending)
    }

    /// Answer the head with ALB's error `e`; `received` bytes of it had arrived.
    fn reject(&mut self, e: RequestError, classification: Classification, received: u64) {
        tracing::info!(
            status = e.status(),
            classification = classification.class_field(),
            classification_reason = %classification.reason_field(),
            "Rejected a request head with {}.",
            e.status()
        );
        self.conn.push(HeadVerdict {
            classification,
            action: HeadAction::Reject(e),
            received,
        });
        self.pending.clear();
        self.ready = Bytes::from_static(STAND_IN);
        self.state = ReadState::Rejected;
    }

    /// Move what can be decided from `pending` to `ready`. Returns false when more
    /// input is needed.
    fn advance(&mut self) -> bool {
        match &mut self.state {
            ReadState::Head => {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                if self.scan.is_fresh() {
                    let blank = self
                        .pending
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    self.pending.advance(blank);
                }
                let end = match self.scan.scan(&self.pending) {
                    Ok(Some(end)) => end,
                    Ok(None) => return false,
                    Err(e) => {
                        let c = super::desync::classify(&self.pending);
                        self.reject(e, c, self.pending.len() as u64);
                        return true;
                    }
                };
                let received = self.pending.split_to(end).freeze();
                let a = head::assess(&received, self.mode);
                self.heads += 1;
                if let HeadAction::Reject(e) = a.action {
                    self.reject(e, a.classification, received.len() as u64);
                    return true;
                }
                if !a.classification.is_compliant() {
                    tracing::info!(
                        classification = a.classification.class_field(),
                        classification_reason = %a.classification.reason_field(),
                        "A non-compliant request was let through by desync mitigation."
                    );
                }
                let body = match a.framing {
                    Framing::Length(n) => n,
                    Framing::Chunked | Framing::Tunnel => 0,
                };
                self.conn.push(HeadVerdict {
                    classification: a.classification,
                    action: a.action,
                    received: received.len() as u64 + body,
                });
                self.ready = match a.rewritten {
                    Some(v) => Bytes::from(v),
                    None => received,
                };
                self.state = match a.framing {
                    Framing::Length(0) => ReadState::Head,
                    Framing::Length(n) => ReadState::Length(n),
                    Framing::Chunked => ReadState::Chunked(Chunk::Size {
                        size: 0,
                        in_ext: false,
                    }),
                    Framing::Tunnel => ReadState::Passthrough,
                };
                self.conn.body.set_arriving(matches!(
                    self.state,
                    ReadState::Length(_) | ReadState::Chunked(_)
                ));
                true
            }
            ReadState::Length(left) => {
                if self.pending.is_empty() {
                    return false;
                }
                let n = (*left).min(self.pending.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = ReadState::Head;
                    self.conn.body.set_arriving(false);
                }
                self.ready = self.pending.split_to(n).freeze();
                true
            }
            ReadState::Chunked(chunk) => {
                if self.pending.is_empty() {
                    return false;
                }
                let (used, next) = follow_chunks(*chunk, &self.pending);
                self.state = match next {
                    Some(Chunk::End) => ReadState::Head,
                    Some(c) => ReadState::Chunked(c),
                    // Malformed framing: hyper will refuse it; stop interpreting.
                    None => ReadState::Passthrough,
                };
                if !matches!(self.state, ReadState::Chunked(_)) {
                    self.conn.body.set_arriving(false);
                }
                self.ready = self.pending.split_to(used).freeze();
                true
            }
            ReadState::Passthrough => {
                if self.pending.is_empty() {
                    return false;
                }
                self.ready = self.pending.split().freeze();
                true
            }
            ReadState::Rejected | ReadState::Eof => false,
        }
    }
}

/// `first` then `second`, copying only when both hold bytes.
pub(crate) fn join(first: Bytes, second: Bytes) -> Bytes {
    match (first.is_empty(), second.is_empty()) {
        (_, true) => first,
        (true, false) => second,
        (false, false) => {
            let mut joined = BytesMut::with_capacity(first.len() + second.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&second);
            joined.freeze()
        }
    }
}

/// Walk chunked framing over `buf` from state `c`: bytes used and the state after them
/// (`None` when the framing is malformed).
fn follow_chunks(mut c: Chunk, buf: &[u8]) -> (usize, Option<Chunk>) {
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        c = match c {
            Chunk::Size { size, in_ext } => match b {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(size),
                b'\r' => Chunk::Size { size, in_ext },
                _ if in_ext => c,
                b';' | b' ' | b'\t' => Chunk::Size { size, in_ext: true },
                _ => match (b as char).to_digit(16) {
                    Some(d) if size >> 59 == 0 => Chunk::Size {
                        size: size * 16 + u64::from(d),
                        in_ext,
                    },
                    _ => return (i, None),
                },
            },
            Chunk::Data(n) => {
                let take = n.min((buf.len() - i) as u64) as usize;
                i += take;
                c = if take as u64 == n {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(n - take as u64)
                };
                continue;
            }
            Chunk::DataEnd => match b {
                b'\r' => Chunk::DataEnd,
                b'\n' => Chunk::Size {
                    size: 0,
                    in_ext: false,
                },
                _ => return (i, None),
            },
            Chunk::TrailerStart => match b {
                b'\r' => Chunk::TrailerStart,
                b'\n' => {
                    i += 1;
                    return (i, Some(Chunk::End));
                }
                _ => Chunk::TrailerLine,
            },
            Chunk::TrailerLine => match b {
                b'\n' => Chunk::TrailerStart,
                _ => Chunk::TrailerLine,
            },
            Chunk::End => return (i, Some(Chunk::End)),
        };
        i += 1;
    }
    (i, Some(c))
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                if this.ready.is_empty() {
                    // Let go of `pending`'s buffer so the next read can reuse it.
                    this.ready = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.advance() {
                continue;
            }
            match this.state {
                ReadState::Rejected => return Poll::Pending,
                ReadState::Eof => return Poll::Ready(Ok(())),
                ReadState::Passthrough => {
                    // Nothing left to look at: read straight into the caller's buffer.
                    // Idle time no longer counts here (tunnels have their own clock), so
                    // an idle tunnel keeps neither the read buffer nor the timer.
                    if this.deadline.is_some() {
                        this.deadline = None;
                        this.pending = BytesMut::new();
                    }
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                _ => {}
            }
            // A head must be whole within the timeout of its first byte: bytes of a head
            // already begun do not restart the clock, so a client trickling a head a
            // byte at a time is answered on time, not kept forever.
            let head_begun = matches!(this.state, ReadState::Head) && !this.pending.is_empty();
            match this.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    // The client closed its side: hand hyper what is left, then EOF.
                    this.ready = this.pending.split().freeze();
                    this.state = ReadState::Eof;
                }
                Poll::Ready(Ok(n)) => {
                    this.conn.received.fetch_add(n as u64, Ordering::Relaxed);
                    let now = Instant::now();
                    this.conn.body.read_at(now);
                    if !head_begun {
                        this.clock.touch(now);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !matches!(this.state, ReadState::Head) {
                        return Poll::Pending;
                    }
                    if this.poll_idle(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if this.conn.in_flight.load(Ordering::Relaxed) > 0 {
                        // A slow target is not the client's idleness.
                        this.touch();
                        let _ = this.poll_idle(cx);
                        return Poll::Pending;
                    }
                    if this.heads == 0 || !this.pending.is_empty() {
                        let c = super::desync::classify(&this.pending);
                        let received = this.pending.len() as u64;
                        this.reject(RequestError::RequestTimeout, c, received);
                    } else {
                        tracing::debug!(
                            "Closing a kept-alive client connection idle for the idle timeout."
                        );
                        this.state = ReadState::Eof;
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.wrote(n);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.wrote(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing_finds_the_end() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let start = Chunk::Size {
            size: 0,
            in_ext: false,
        };
        let (used, next) = follow_chunks(start, body);
        assert!(matches!(next, Some(Chunk::End)));
        assert_eq!(&body[used..], b"GET /next");

        // Byte by byte gives the same answer.
        let mut c = start;
        let mut total = 0;
        for b in body.chunks(1) {
            let (used, next) = follow_chunks(c, b);
            total += used;
            c = next.unwrap();
            if matches!(c, Chunk::End) {
                break;
            }
        }
        assert_eq!(total, used);

        assert!(follow_chunks(start, b"zz\r\n").1.is_none());
    }
}
