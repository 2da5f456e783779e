//! The splice(2) direction for plaintext TCP → TCP: bytes go socket → pipe →
//! socket inside the kernel and never enter user space.
//!
//! Each step runs under tokio's readiness: `poll_read_ready` + `try_io(READABLE)`
//! for socket → pipe, `poll_write_ready` + `try_io(WRITABLE)` for pipe →
//! socket, so an `EAGAIN` clears the readiness and the next poll registers the
//! waker, exactly as a buffered read or write would. Like the buffered copy it
//! fills once, drains fully, then fills again.
//!
//! **Pipes.** A pipe is taken from a per-thread pool ([`super::pipe`]) when the
//! reading socket turns readable, kept while the direction streams, and given
//! back as soon as it is empty and the socket would block. So an idle tunnel
//! holds no pipe and no copy buffer: only its two sockets. The trade-off is a
//! pool push/pop (no syscall) per burst, plus one extra spurious splice per
//! burst that ends in `EAGAIN`; the alternative, two pipes per tunnel for its
//! lifetime, would cost four descriptors per idle tunnel and ~10 000 idle
//! tunnels would not fit a 20 000-descriptor limit. A pipe still holding bytes
//! when a tunnel ends is closed, never pooled.
//!
//! **Fallback.** If splice is not supported (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`)
//! or no pipe can be created (out of descriptors), the direction switches to
//! [`BufferedCopy`] for the rest of the tunnel; both happen only with the pipe
//! empty, so no byte is lost or reordered.
//!
//! A write to a peer that has gone away returns `EPIPE`; std's runtime ignores
//! `SIGPIPE`, as it must for ordinary writes too.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use super::direction::{BufferedCopy, Direction, Fault};
use super::pipe::{self, PipeLease};

/// Phase of a spliced direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The reader hit EOF: shut the writer down.
    Eof,
    /// The writer is shut down.
    Done,
}

/// State of the splice path.
struct Spliced {
    /// Bytes read before the tunnel started; written with ordinary writes first.
    prefix: Bytes,
    /// Held only while bytes are in flight.
    pipe: Option<PipeLease>,
    phase: Phase,
    transferred: u64,
}

enum Mode {
    Splice(Spliced),
    /// Splice was not possible; copy through user space instead.
    Buffered(BufferedCopy),
}

/// Copies TCP → TCP through a lazily taken kernel pipe.
pub(crate) struct SpliceCopy {
    mode: Mode,
}

/// What stopped the splice path.
enum Stop {
    Fault(Fault),
    /// Splice cannot be used; the pipe is empty, switch to buffered.
    Unsupported(io::Error),
}

impl SpliceCopy {
    /// A spliced copy that first writes `prefix`.
    pub(crate) fn new(prefix: Bytes) -> Self {
        SpliceCopy {
            mode: Mode::Splice(Spliced {
                prefix,
                pipe: None,
                phase: Phase::Open,
                transferred: 0,
            }),
        }
    }
}

impl Spliced {
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        activity: &mut bool,
    ) -> Poll<Result<(), Stop>> {
        let from_fd = from.as_raw_fd();
        let to_fd = to.as_raw_fd();
        loop {
            // 1. Bytes read past the HTTP head go first, with plain writes.
            if !self.prefix.is_empty() {
                match Pin::new(&mut *to).poll_write(cx, &self.prefix) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        let err = io::Error::from(io::ErrorKind::WriteZero);
                        return Poll::Ready(Err(Stop::Fault(Fault::writer(&err))));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.prefix.advance(n);
                        if self.prefix.is_empty() {
                            // Let go of the prefix's allocation, not just its bytes.
                            self.prefix = Bytes::new();
                        }
                        self.transferred += n as u64;
                        *activity = true;
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Err(Stop::Fault(Fault::writer(&err))))
                    }
                }
            }

            // 2. Drain the pipe into the writer.
            if let Some(lease) = self.pipe.as_mut().filter(|p| p.len() > 0) {
                match to.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Err(Stop::Fault(Fault::writer(&err))))
                    }
                    Poll::Ready(Ok(())) => {}
                }
                match to.try_io(Interest::WRITABLE, || lease.drain_to(to_fd)) {
                    Ok(n) => {
                        self.transferred += n as u64;
                        *activity = true;
                    }
                    // Readiness cleared; the next poll_write_ready registers the waker.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Poll::Ready(Err(Stop::Fault(Fault::writer(&err)))),
                }
                continue;
            }

            match self.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                // 3. EOF: pass it on as a write shutdown (FIN).
                Phase::Eof => {
                    return match Pin::new(&mut *to).poll_shutdown(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(err)) if err.kind() != io::ErrorKind::NotConnected => {
                            Poll::Ready(Err(Stop::Fault(Fault::writer(&err))))
                        }
                        Poll::Ready(_) => {
                            self.phase = Phase::Done;
                            Poll::Ready(Ok(()))
                        }
                    };
                }
                Phase::Open => {}
            }

            // 4. Fill the (empty) pipe from the reader.
            match from.poll_read_ready(cx) {
                Poll::Pending => {
                    // Empty and nothing to read: idle, so hold no pipe.
                    self.pipe = None;
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(Stop::Fault(Fault::reader(&err)))),
                Poll::Ready(Ok(())) => {}
            }
            let lease = match &mut self.pipe {
                Some(lease) => lease,
                None => match PipeLease::take() {
                    Ok(lease) => self.pipe.insert(lease),
                    Err(err) => return Poll::Ready(Err(Stop::Unsupported(err))),
                },
            };
            match from.try_io(Interest::READABLE, || lease.fill_from(from_fd)) {
                Ok(0) => {
                    self.pipe = None;
                    self.phase = Phase::Eof;
                }
                Ok(_) => *activity = true,
                // Readiness cleared; the next poll_read_ready registers the waker.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if pipe::is_unsupported(&err) => {
                    self.pipe = None;
                    return Poll::Ready(Err(Stop::Unsupported(err)));
                }
                Err(err) => return Poll::Ready(Err(Stop::Fault(Fault::reader(&err)))),
            }
        }
    }
}

impl Direction<TcpStream, TcpStream> for SpliceCopy {
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        activity: &mut bool,
    ) -> Poll<Result<(), Fault>> {
        let spliced = match &mut self.mode {
            Mode::Buffered(copy) => return copy.poll_transfer(cx, from, to, activity),
            Mode::Splice(spliced) => spliced,
        };
        match spliced.poll_transfer(cx, from, to, activity) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(Stop::Fault(fault))) => Poll::Ready(Err(fault)),
            Poll::Ready(Err(Stop::Unsupported(err))) => {
                tracing::debug!("splice not possible ({err}); copying through user space");
                self.mode = Mode::Buffered(BufferedCopy::resume(spliced.transferred));
                self.poll_transfer(cx, from, to, activity)
            }
        }
    }

    fn transferred(&self) -> u64 {
        match &self.mode {
            Mode::Splice(spliced) => spliced.transferred,
            Mode::Buffered(copy) => Direction::<TcpStream, TcpStream>::transferred(copy),
        }
    }

    fn saw_eof(&self) -> bool {
        match &self.mode {
            Mode::Splice(spliced) => spliced.phase != Phase::Open,
            Mode::Buffered(copy) => Direction::<TcpStream, TcpStream>::saw_eof(copy),
        }
    }

    fn is_done(&self) -> bool {
        match &self.mode {
            Mode::Splice(spliced) => spliced.phase == Phase::Done,
            Mode::Buffered(copy) => Direction::<TcpStream, TcpStream>::is_done(copy),
        }
    }
}
