//! One direction of a tunnel, and the buffered copy that implements it for any
//! `AsyncRead`/`AsyncWrite` pair.
//!
//! The [`Direction`] trait is the seam for faster transports: the tunnel
//! driver only polls two directions, so a splice(2)-based direction for
//! TCP↔TCP can replace [`BufferedCopy`] without touching the driver.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::PoolBuf;

/// Which stream of a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Faulty {
    Reader,
    Writer,
}

/// An I/O error seen by a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) stream: Faulty,
    pub(crate) kind: io::ErrorKind,
}

impl Fault {
    pub(crate) fn reader(err: &io::Error) -> Self {
        Fault {
            stream: Faulty::Reader,
            kind: err.kind(),
        }
    }

    pub(crate) fn writer(err: &io::Error) -> Self {
        Fault {
            stream: Faulty::Writer,
            kind: err.kind(),
        }
    }
}

/// Moves bytes from an `R` to a `W`, passing EOF on as a write shutdown.
pub(crate) trait Direction<R, W> {
    /// Moves bytes until something would block (`Pending`), or until the
    /// reader hit EOF and the writer's write half is shut down (`Ready(Ok)`).
    /// Sets `*activity` when at least one byte was read or written.
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        activity: &mut bool,
    ) -> Poll<Result<(), Fault>>;

    /// Bytes written to the writer so far.
    fn transferred(&self) -> u64;

    /// The reader has reported EOF.
    fn saw_eof(&self) -> bool;

    /// EOF was passed on and the writer is shut down; nothing more to do.
    fn is_done(&self) -> bool;

    /// The other direction is done, so this one's EOF ends the tunnel and both
    /// sockets are dropped right after. A direction whose writer's close sends
    /// what a write shutdown would may then leave passing EOF on to that drop
    /// (plain TCP: the receive buffer is empty, EOF was read from it, so the
    /// close sends the same FIN and saves a shutdown(2)). Never for TLS, whose
    /// close_notify only a shutdown sends. The driver calls this before each
    /// [`Direction::poll_transfer`] once it holds.
    fn last_open(&mut self) {}
}

/// Bytes read but not yet written.
enum Held {
    Empty,
    /// Bytes read before the tunnel started (past the HTTP head).
    Prefix(Bytes),
    /// A pooled buffer holding `buf[pos..end]` still to write.
    Pooled {
        buf: PoolBuf,
        pos: usize,
        end: usize,
    },
}

impl Held {
    fn pending(&self) -> &[u8] {
        match self {
            Held::Empty => &[],
            Held::Prefix(bytes) => bytes,
            Held::Pooled { buf, pos, end } => &buf.as_slice()[*pos..*end],
        }
    }

    /// Marks `n` bytes written; an emptied buffer goes straight back to the pool.
    fn advance(&mut self, n: usize) {
        let emptied = match self {
            Held::Empty => true,
            Held::Prefix(bytes) => {
                bytes.advance(n);
                bytes.is_empty()
            }
            Held::Pooled { pos, end, .. } => {
                *pos += n;
                *pos >= *end
            }
        };
        if emptied {
            *self = Held::Empty;
        }
    }
}

/// Phase of a [`BufferedCopy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Copying bytes.
    Open,
    /// The reader hit EOF: finish writing, then shut the writer down.
    Eof,
    /// The writer is shut down.
    Done,
}

/// How a [`BufferedCopy::poll_copy`] that returned `Ready(Ok)` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// EOF was passed on and the writer is shut down.
    Done,
    /// `bulk_after` consecutive reads filled the whole buffer and every byte
    /// read so far is written: the stream looks like bulk. The direction is
    /// still open, with nothing held, so another transport can take over.
    Bulk,
}

/// Copies through a buffer borrowed from the pool only while bytes are in flight.
pub(crate) struct BufferedCopy {
    held: Held,
    phase: Phase,
    need_flush: bool,
    transferred: u64,
    /// Stop with [`Copied::Bulk`] after this many consecutive full reads (0: never).
    bulk_after: u32,
    /// Consecutive reads that filled the whole buffer.
    full_reads: u32,
    /// On EOF, skip the writer's shutdown: it is dropped right after (see
    /// [`Direction::last_open`]).
    eof_by_drop: bool,
}

impl BufferedCopy {
    /// A copy that first writes `prefix`.
    pub(crate) fn new(prefix: Bytes) -> Self {
        BufferedCopy {
            held: if prefix.is_empty() {
                Held::Empty
            } else {
                Held::Prefix(prefix)
            },
            phase: Phase::Open,
            need_flush: false,
            transferred: 0,
            bulk_after: 0,
            full_reads: 0,
            eof_by_drop: false,
        }
    }

    /// Makes [`BufferedCopy::poll_copy`] stop with [`Copied::Bulk`] once
    /// `reads` consecutive reads filled the whole buffer (0: never).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn bulk_after(self, reads: u32) -> Self {
        BufferedCopy {
            bulk_after: reads,
            ..self
        }
    }

    /// Makes EOF end the copy without shutting the writer down, because the
    /// writer is dropped right after and its close sends the same FIN (a
    /// plain TCP stream only; see [`Direction::last_open`]).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn leave_eof_to_drop(&mut self) {
        self.eof_by_drop = true;
    }

    /// A copy taking over an open direction that already moved `transferred` bytes.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn resume(transferred: u64) -> Self {
        BufferedCopy {
            transferred,
            ..BufferedCopy::new(Bytes::new())
        }
    }
}

impl BufferedCopy {
    /// [`Direction::poll_transfer`], which can also stop early with
    /// [`Copied::Bulk`] (see [`BufferedCopy::bulk_after`]).
    ///
    /// A read shorter than the buffer clears the reader's readiness (tokio's
    /// `TcpStream::poll_read` does so on epoll), so a small message costs one
    /// read and one write, and no read that ends in `EAGAIN`.
    pub(crate) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        activity: &mut bool,
    ) -> Poll<Result<Copied, Fault>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            // 1. Write out whatever is held.
            let pending = self.held.pending();
            if !pending.is_empty() {
                match Pin::new(&mut *to).poll_write(cx, pending) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        let err = io::Error::from(io::ErrorKind::WriteZero);
                        return Poll::Ready(Err(Fault::writer(&err)));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.held.advance(n);
                        self.transferred += n as u64;
                        self.need_flush = true;
                        *activity = true;
                        continue;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(Fault::writer(&err))),
                }
            }

            match self.phase {
                Phase::Done => return Poll::Ready(Ok(Copied::Done)),
                // The writer is dropped right after; its close sends the FIN.
                Phase::Eof if self.eof_by_drop => {
                    self.phase = Phase::Done;
                    self.need_flush = false;
                    return Poll::Ready(Ok(Copied::Done));
                }
                // 2. EOF: pass it on as a shutdown of the write half (flushes first).
                Phase::Eof => {
                    return match Pin::new(&mut *to).poll_shutdown(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(err)) if err.kind() != io::ErrorKind::NotConnected => {
                            Poll::Ready(Err(Fault::writer(&err)))
                        }
                        // NotConnected: the peer is already fully gone; nothing to pass on.
                        Poll::Ready(_) => {
                            self.phase = Phase::Done;
                            self.need_flush = false;
                            Poll::Ready(Ok(Copied::Done))
                        }
                    };
                }
                Phase::Open => {}
            }
            if self.bulk_after != 0 && self.full_reads >= self.bulk_after {
                // Everything read is written; let a bulk transport take over.
                // (A TCP stream needs no flush.)
                self.full_reads = 0;
                return Poll::Ready(Ok(Copied::Bulk));
            }

            // 3. Read into a borrowed buffer; give it back unless bytes arrived.
            let mut buf = PoolBuf::take();
            let mut read_buf = ReadBuf::new(buf.as_mut_slice());
            match Pin::new(&mut *from).poll_read(cx, &mut read_buf) {
                Poll::Pending => {
                    drop(buf);
                    // Nothing more to read for now: push out what was written.
                    if self.need_flush {
                        match Pin::new(&mut *to).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(err)) => return Poll::Ready(Err(Fault::writer(&err))),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {
                    let end = read_buf.filled().len();
                    if end == read_buf.capacity() {
                        self.full_reads = self.full_reads.saturating_add(1);
                    } else {
                        self.full_reads = 0;
                    }
                    if end == 0 {
                        self.phase = Phase::Eof;
                    } else {
                        self.held = Held::Pooled { buf, pos: 0, end };
                        *activity = true;
                    }
                }
                // A TLS peer that closed its TCP connection without close_notify
                // (browsers often do): rustls calls it a truncation, the peer meant an
                // end of stream, and the other side gets its FIN as for a clean close.
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    drop(buf);
                    self.full_reads = 0;
                    self.phase = Phase::Eof;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(Fault::reader(&err))),
            }
        }
    }
}

impl<R, W> Direction<R, W> for BufferedCopy
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        activity: &mut bool,
    ) -> Poll<Result<(), Fault>> {
        loop {
            match self.poll_copy(cx, from, to, activity) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Copied::Done)) => return Poll::Ready(Ok(())),
                // Only a copy built with `bulk_after` stops for bulk; one
                // polled as a plain direction just keeps copying.
                Poll::Ready(Ok(Copied::Bulk)) => continue,
                Poll::Ready(Err(fault)) => return Poll::Ready(Err(fault)),
            }
        }
    }

    fn transferred(&self) -> u64 {
        self.transferred
    }

    fn saw_eof(&self) -> bool {
        self.phase != Phase::Open
    }

    fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}
