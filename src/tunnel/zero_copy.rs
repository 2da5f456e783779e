//! The plaintext TCP → TCP direction: recv/send for small messages, splice(2)
//! for bulk, switching between the two as the traffic changes.
//!
//! **Why adaptive.** splice(2) moves bytes socket → pipe → socket inside the
//! kernel and never copies them through user space, which pays off for bulk
//! streams (64 KiB WebSocket frames). For a small message (a 64-byte ping, a
//! chat line) it costs more than a copy: two splices plus an extra splice that
//! ends in `EAGAIN`, each walking the pipe and socket machinery
//! (`do_splice`, `tcp_splice_read`, `splice_to_socket`), where a copy is one
//! recv and one send of a few bytes. So, like HAProxy's splice-auto, each
//! direction starts in **copy mode** ([`BufferedCopy`]: a pooled buffer held
//! only while bytes are in flight) and moves to **splice mode** once the
//! traffic looks like bulk, then back after a run of small reads.
//!
//! **The switch rule.** Copy → splice after [`BULK_AFTER_FULL_READS`]
//! consecutive reads that filled the whole 64 KiB buffer; splice → copy after
//! [`COPY_AFTER_SMALL_FILLS`] consecutive splices from the socket that moved
//! fewer than [`SMALL_FILL`] bytes. The constants' comments give the
//! measurements behind them. Both switches happen only with nothing held: the
//! copy buffer is written out before splicing starts, and the pipe is drained
//! before copying resumes, so bytes stay in order.
//!
//! **Readiness.** Copy mode reads and writes through tokio's
//! `TcpStream::poll_read`/`poll_write`, which clear the readiness after a
//! short read or write (on epoll a short read means the socket is drained),
//! so a small message costs one recv and one send and no `EAGAIN`. Splice mode
//! runs each step under `poll_read_ready` + `try_io(READABLE)` for socket →
//! pipe and `poll_write_ready` + `try_io(WRITABLE)` for pipe → socket, so an
//! `EAGAIN` clears the readiness and the next poll registers the waker. A
//! short splice into the pipe does not show the socket is drained (the pipe
//! may be full), so splice mode keeps its one `EAGAIN` splice per burst, paid
//! once per ≥ 64 KiB there. Like the buffered copy it fills once, drains
//! fully, then fills again.
//!
//! **Pipes.** A pipe is taken from a per-thread pool ([`super::pipe`]) when the
//! reading socket turns readable in splice mode, kept while the direction
//! streams, and given back as soon as it is empty and the socket would block.
//! So an idle tunnel holds no pipe and no copy buffer: only its two sockets.
//! The trade-off is a pool push/pop (no syscall) per burst; the alternative,
//! two pipes per tunnel for its lifetime, would cost four descriptors per idle
//! tunnel and ~10 000 idle tunnels would not fit a 20 000-descriptor limit. A
//! pipe still holding bytes when a tunnel ends is closed, never pooled.
//!
//! **Fallback.** If splice is not supported (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`)
//! or no pipe can be created (out of descriptors), the direction copies for
//! the rest of the tunnel and never tries splice again; both happen only with
//! the pipe empty, so no byte is lost or reordered.
//!
//! A write to a peer that has gone away returns `EPIPE`; std's runtime ignores
//! `SIGPIPE`, as it must for ordinary writes too.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use super::direction::{BufferedCopy, Copied, Direction, Fault};
use super::pipe::{self, PipeLease};

/// Copy → splice after this many consecutive reads that filled the whole
/// 64 KiB copy buffer.
///
/// One is enough. Measured with `strace -c` on the release build (wsbench,
/// one proxy thread): the handshake and rtt scenarios (64-byte messages, a
/// close frame) never fill the buffer, so they never take a pipe; the 64 KiB
/// throughput scenario fills it on the first read of each direction and then
/// splices, so the whole 3 s run made 5 recvfrom calls next to ~31 splices
/// per MB, the same splice count as splicing from the first byte. A larger
/// threshold would only copy more bulk bytes through user space first; a
/// single large message switching by mistake costs one splice round (about
/// one syscall more than a copy) before [`COPY_AFTER_SMALL_FILLS`] brings the
/// direction back.
pub(crate) const BULK_AFTER_FULL_READS: u32 = 1;

/// A splice from the socket that moved fewer bytes than this counts as small.
pub(crate) const SMALL_FILL: usize = 4096;

/// Splice → copy after this many consecutive small splices from the socket.
///
/// In the 64 KiB throughput scenario (strace of every splice in a 3 s run),
/// 27 131 of 27 236 socket → pipe splices moved ≥ 64 KiB, 59 moved < 1 KiB,
/// and never two in a row moved < 4 KiB; so a run of 16 small ones does not
/// happen in a bulk stream, while a tunnel back to chat-sized messages pays
/// splice's extra call for at most 16 of them.
pub(crate) const COPY_AFTER_SMALL_FILLS: u32 = 16;

/// Phase of a spliced direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The reader hit EOF: shut the writer down.
    Eof,
    /// The writer is shut down.
    Done,
}

/// State of splice mode.
struct Spliced {
    /// Held only while bytes are in flight.
    pipe: Option<PipeLease>,
    phase: Phase,
    transferred: u64,
    /// Consecutive splices from the socket that moved fewer than [`SMALL_FILL`] bytes.
    small_fills: u32,
}

enum Mode {
    /// recv/send through a pooled buffer; with `bulk_after` set it hands over
    /// to splice mode, without it (splice unsupported) it copies for good.
    Copy(BufferedCopy),
    /// splice(2) through a pooled pipe.
    Splice(Spliced),
}

/// Copies TCP → TCP, by recv/send for small messages and splice(2) for bulk.
pub(crate) struct SpliceCopy {
    mode: Mode,
    /// The other direction is done (see [`Direction::last_open`]): EOF is
    /// passed on by dropping the writer, whose close sends the FIN.
    eof_by_drop: bool,
}

/// What stopped splice mode.
enum Stop {
    Fault(Fault),
    /// Splice cannot be used; the pipe is empty, copy from now on.
    Unsupported(io::Error),
    /// A run of small reads; the pipe is empty, back to copy mode.
    Small,
}

#[cfg(test)]
thread_local! {
    /// Switches copy → splice and splice → copy on this thread (tests only).
    static SWITCHES: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts a switch (tests only).
fn count_switch(_to_splice: bool) {
    #[cfg(test)]
    SWITCHES.with(|s| {
        let (to_splice, to_copy) = s.get();
        s.set(if _to_splice {
            (to_splice + 1, to_copy)
        } else {
            (to_splice, to_copy + 1)
        });
    });
}

/// Switches (copy → splice, splice → copy) made on this thread (tests only).
#[cfg(test)]
pub(crate) fn switches_on_this_thread() -> (u64, u64) {
    SWITCHES.with(|s| s.get())
}

impl SpliceCopy {
    /// A direction that first writes `prefix`, starting in copy mode.
    pub(crate) fn new(prefix: Bytes) -> Self {
        SpliceCopy {
            mode: Mode::Copy(BufferedCopy::new(prefix).bulk_after(BULK_AFTER_FULL_READS)),
            eof_by_drop: false,
        }
    }
}

impl Spliced {
    fn resume(transferred: u64) -> Self {
        Spliced {
            pipe: None,
            phase: Phase::Open,
            transferred,
            small_fills: 0,
        }
    }

    /// `eof_by_drop`: on EOF skip the writer's shutdown, it is dropped right
    /// after (see [`Direction::last_open`]).
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        activity: &mut bool,
        eof_by_drop: bool,
    ) -> Poll<Result<(), Stop>> {
        let from_fd = from.as_raw_fd();
        let to_fd = to.as_raw_fd();
        loop {
            // 1. Drain the pipe into the writer.
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
                // The writer is dropped right after; its close sends the FIN.
                Phase::Eof if eof_by_drop => {
                    self.phase = Phase::Done;
                    return Poll::Ready(Ok(()));
                }
                // 2. EOF: pass it on as a write shutdown (FIN).
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

            // The pipe is empty: after a run of small reads, copy instead.
            if self.small_fills >= COPY_AFTER_SMALL_FILLS {
                self.pipe = None;
                return Poll::Ready(Err(Stop::Small));
            }

            // 3. Fill the (empty) pipe from the reader.
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
                Ok(n) => {
                    *activity = true;
                    if n < SMALL_FILL {
                        self.small_fills += 1;
                    } else {
                        self.small_fills = 0;
                    }
                }
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
        loop {
            match &mut self.mode {
                Mode::Copy(copy) => match copy.poll_copy(cx, from, to, activity) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Copied::Done)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(fault)) => return Poll::Ready(Err(fault)),
                    Poll::Ready(Ok(Copied::Bulk)) => {
                        // Nothing held: every byte read so far is written.
                        count_switch(true);
                        let transferred = Direction::<TcpStream, TcpStream>::transferred(copy);
                        self.mode = Mode::Splice(Spliced::resume(transferred));
                    }
                },
                Mode::Splice(spliced) => {
                    match spliced.poll_transfer(cx, from, to, activity, self.eof_by_drop) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                        Poll::Ready(Err(Stop::Fault(fault))) => return Poll::Ready(Err(fault)),
                        Poll::Ready(Err(Stop::Small)) => {
                            // The pipe is drained and given back.
                            count_switch(false);
                            let mut copy = BufferedCopy::resume(spliced.transferred)
                                .bulk_after(BULK_AFTER_FULL_READS);
                            if self.eof_by_drop {
                                copy.leave_eof_to_drop();
                            }
                            self.mode = Mode::Copy(copy);
                        }
                        Poll::Ready(Err(Stop::Unsupported(err))) => {
                            tracing::debug!(
                                "splice not possible ({err}); copying through user space"
                            );
                            let mut copy = BufferedCopy::resume(spliced.transferred);
                            if self.eof_by_drop {
                                copy.leave_eof_to_drop();
                            }
                            self.mode = Mode::Copy(copy);
                        }
                    }
                }
            }
        }
    }

    fn transferred(&self) -> u64 {
        match &self.mode {
            Mode::Splice(spliced) => spliced.transferred,
            Mode::Copy(copy) => Direction::<TcpStream, TcpStream>::transferred(copy),
        }
    }

    fn saw_eof(&self) -> bool {
        match &self.mode {
            Mode::Splice(spliced) => spliced.phase != Phase::Open,
            Mode::Copy(copy) => Direction::<TcpStream, TcpStream>::saw_eof(copy),
        }
    }

    fn is_done(&self) -> bool {
        match &self.mode {
            Mode::Splice(spliced) => spliced.phase == Phase::Done,
            Mode::Copy(copy) => Direction::<TcpStream, TcpStream>::is_done(copy),
        }
    }

    /// Both ends are plain TCP, so dropping the writer sends the FIN.
    fn last_open(&mut self) {
        if !self.eof_by_drop {
            self.eof_by_drop = true;
            if let Mode::Copy(copy) = &mut self.mode {
                copy.leave_eof_to_drop();
            }
        }
    }
}
