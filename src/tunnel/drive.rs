//! The tunnel driver: one future polls both directions, the idle clock and the
//! tunnel's end signal, then closes what is left.
//!
//! [`Drive`] is written out by hand rather than as an `async fn`: it is the whole
//! state of an idle tunnel, and a generated state machine would also keep the
//! arguments, the references its inner closures capture and one slot per await
//! point. Every byte here is paid once per open tunnel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::control::{DisconnectMode, EndRequest, Supervisor};
use super::direction::{Direction, Fault, Faulty};
use super::idle::IdleClock;
use super::{Resettable, TunnelEnd, TunnelReport};

/// How long closing a tunnel may wait for the write shutdowns (a TLS
/// close_notify to a peer that is not reading) before just dropping the sockets.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Which end of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Target,
}

/// Where a [`Drive`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Moving bytes; the side whose EOF came first, once one has.
    Running { first_eof: Option<Side> },
    /// A network drop: nothing is read or written either way until the idle timeout
    /// has passed since the drop (or another end is requested).
    Dropped,
    /// The tunnel ended with `end`; shutting down the write halves still open,
    /// for at most [`SHUTDOWN_GRACE`], after reading and discarding what waits in their
    /// receive buffers when `drain` (a socket closed with unread bytes would send an RST
    /// instead of a FIN).
    Closing {
        end: TunnelEnd,
        client_open: bool,
        target_open: bool,
        drain: bool,
    },
    /// The report was returned.
    Finished,
}

pin_project_lite::pin_project! {
    /// A running tunnel: `up` copies client → target, `down` target → client.
    /// Resolves to the [`TunnelReport`] once both sockets are done with.
    #[project = DriveProj]
    pub(crate) struct Drive<C, T, Up, Down, E> {
        client: C,
        target: T,
        up: Up,
        down: Down,
        clock: IdleClock,
        // The idle deadline while running, the shutdown grace while closing.
        #[pin]
        sleep: Sleep,
        end: E,
        stage: Stage,
    }
}

/// Runs a tunnel: `up` copies client → target, `down` target → client.
pub(crate) fn drive<C, T, Up, Down, E>(
    client: C,
    target: T,
    up: Up,
    down: Down,
    idle_timeout: Duration,
    end: E,
) -> Drive<C, T, Up, Down, E>
where
    C: AsyncRead + AsyncWrite + Resettable + Unpin,
    T: AsyncRead + AsyncWrite + Resettable + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
{
    let clock = IdleClock::new(idle_timeout, Instant::now());
    Drive {
        client,
        target,
        up,
        down,
        sleep: tokio::time::sleep_until(clock.deadline()),
        clock,
        end,
        stage: Stage::Running { first_eof: None },
    }
}

impl<C, T, Up, Down, E> Future for Drive<C, T, Up, Down, E>
where
    C: AsyncRead + AsyncWrite + Resettable + Unpin,
    T: AsyncRead + AsyncWrite + Resettable + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
    E: Supervisor,
{
    type Output = TunnelReport;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TunnelReport> {
        let mut this = self.project();
        loop {
            match *this.stage {
                Stage::Running { first_eof } => {
                    let end = match poll_running(&mut this, first_eof, cx) {
                        Poll::Ready(end) => end,
                        Poll::Pending => return Poll::Pending,
                    };
                    match end {
                        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::NetworkDrop)) => {
                            let since_drop = Instant::now() + this.clock.timeout();
                            this.sleep.as_mut().reset(since_drop);
                            *this.stage = Stage::Dropped;
                        }
                        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::Reset)) => {
                            reset(this.client, this.target);
                            return Poll::Ready(finish(this, end));
                        }
                        end => start_closing(&mut this, end, end),
                    }
                }
                Stage::Dropped => {
                    let dropped =
                        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::NetworkDrop));
                    // Whatever ends a dropped tunnel, its cause stays the drop.
                    match this
                        .end
                        .poll_end_after(cx, EndRequest::Disconnect(DisconnectMode::NetworkDrop))
                    {
                        Poll::Ready(EndRequest::Disconnect(DisconnectMode::Reset)) => {
                            reset(this.client, this.target);
                            return Poll::Ready(finish(this, dropped));
                        }
                        Poll::Ready(_) => start_closing(&mut this, dropped, TunnelEnd::IdleTimeout),
                        Poll::Pending => {
                            if this.sleep.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            start_closing(&mut this, dropped, TunnelEnd::IdleTimeout);
                        }
                    }
                }
                Stage::Closing {
                    end,
                    mut client_open,
                    mut target_open,
                    drain,
                } => {
                    if drain {
                        if client_open {
                            drain_unread(cx, this.client);
                        }
                        if target_open {
                            drain_unread(cx, this.target);
                        }
                    }
                    if client_open && poll_close(cx, this.client).is_ready() {
                        client_open = false;
                    }
                    if target_open && poll_close(cx, this.target).is_ready() {
                        target_open = false;
                    }
                    if (client_open || target_open) && this.sleep.as_mut().poll(cx).is_pending() {
                        *this.stage = Stage::Closing {
                            end,
                            client_open,
                            target_open,
                            drain,
                        };
                        return Poll::Pending;
                    }
                    return Poll::Ready(finish(this, end));
                }
                Stage::Finished => panic!("a tunnel was polled after it finished"),
            }
        }
    }
}

/// Moves `this` to closing, recording `end` as how the tunnel ended and shutting down
/// the sockets as an end `how` calls for: the write halves still open on healthy sides
/// (a failed side is just dropped).
fn start_closing<C, T, Up, Down, E>(
    this: &mut DriveProj<'_, C, T, Up, Down, E>,
    end: TunnelEnd,
    how: TunnelEnd,
) where
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
{
    let (close_client, close_target) = match how {
        TunnelEnd::ClientClosed | TunnelEnd::TargetClosed => (false, false),
        TunnelEnd::IdleTimeout | TunnelEnd::Ended(_) => (true, true),
        TunnelEnd::ClientError(_) => (false, true),
        TunnelEnd::TargetError(_) => (true, false),
    };
    let client_open = close_client && !this.down.is_done();
    let target_open = close_target && !this.up.is_done();
    if client_open || target_open {
        this.sleep.as_mut().reset(Instant::now() + SHUTDOWN_GRACE);
    }
    *this.stage = Stage::Closing {
        end,
        client_open,
        target_open,
        // Only a tunnel closed while bytes may still be on their way has unread ones.
        drain: matches!(how, TunnelEnd::IdleTimeout | TunnelEnd::Ended(_)),
    };
}

/// The report of a tunnel that ended as `end`; the stage becomes `Finished`.
fn finish<C, T, Up, Down, E>(this: DriveProj<'_, C, T, Up, Down, E>, end: TunnelEnd) -> TunnelReport
where
    Up: Direction<C, T>,
    Down: Direction<T, C>,
{
    *this.stage = Stage::Finished;
    let report = TunnelReport {
        client_to_target: this.up.transferred(),
        target_to_client: this.down.transferred(),
        end,
    };
    tracing::debug!(
        client_to_target = report.client_to_target,
        target_to_client = report.target_to_client,
        end = ?report.end,
        "tunnel ended"
    );
    report
}

/// Both sockets will send an RST when they are dropped (right after this).
fn reset<C: Resettable, T: Resettable>(client: &C, target: &T) {
    client.reset_on_close();
    target.reset_on_close();
}

/// Reads and discards what `stream` has received, without waiting, so that closing it
/// sends a FIN (the kernel answers a close with unread bytes with an RST). Bounded: a
/// peer that keeps sending gets its RST.
fn drain_unread<S: AsyncRead + Unpin>(cx: &mut Context<'_>, stream: &mut S) {
    let mut scratch = [0u8; 2048];
    for _ in 0..32 {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
            _ => return,
        }
    }
}

/// Polls the end signal, both directions and the idle clock; `Ready` with how the
/// tunnel ended.
fn poll_running<C, T, Up, Down, E>(
    this: &mut DriveProj<'_, C, T, Up, Down, E>,
    mut first_eof: Option<Side>,
    cx: &mut Context<'_>,
) -> Poll<TunnelEnd>
where
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
    E: Supervisor,
{
    if let Poll::Ready(why) = this.end.poll_end(cx) {
        return Poll::Ready(TunnelEnd::Ended(why));
    }
    let mut activity = false;
    let down_done = this.down.is_done();
    if let Some(end) = poll_direction(
        this.up,
        down_done,
        cx,
        this.client,
        this.target,
        &mut activity,
        Side::Client,
    ) {
        return Poll::Ready(end);
    }
    let up_done = this.up.is_done();
    if let Some(end) = poll_direction(
        this.down,
        up_done,
        cx,
        this.target,
        this.client,
        &mut activity,
        Side::Target,
    ) {
        return Poll::Ready(end);
    }
    if first_eof.is_none() {
        if this.up.saw_eof() {
            first_eof = Some(Side::Client);
        } else if this.down.saw_eof() {
            first_eof = Some(Side::Target);
        }
        *this.stage = Stage::Running { first_eof };
    }
    if this.up.is_done() && this.down.is_done() {
        return Poll::Ready(match first_eof {
            Some(Side::Target) => TunnelEnd::TargetClosed,
            _ => TunnelEnd::ClientClosed,
        });
    }
    if activity {
        let now = Instant::now();
        this.clock.touch(now);
        this.end
            .progress(this.up.transferred(), this.down.transferred(), now);
    }
    this.clock
        .poll_expired(cx, this.sleep.as_mut())
        .map(|()| TunnelEnd::IdleTimeout)
}

/// Polls the direction reading from the `reader` side unless it is done, first telling
/// it when the other direction is; `Some` with how the tunnel ended if it failed.
fn poll_direction<D, R, W>(
    direction: &mut D,
    other_done: bool,
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    activity: &mut bool,
    reader: Side,
) -> Option<TunnelEnd>
where
    D: Direction<R, W>,
{
    if direction.is_done() {
        return None;
    }
    if other_done {
        direction.last_open();
    }
    match direction.poll_transfer(cx, from, to, activity) {
        Poll::Ready(Err(fault)) => Some(blame(fault, reader)),
        _ => None,
    }
}

/// Names the side at fault for an error in the direction reading from `reader`.
fn blame(fault: Fault, reader: Side) -> TunnelEnd {
    let side = match (fault.stream, reader) {
        (Faulty::Reader, side) => side,
        (Faulty::Writer, Side::Client) => Side::Target,
        (Faulty::Writer, Side::Target) => Side::Client,
    };
    match side {
        Side::Client => TunnelEnd::ClientError(fault.kind),
        Side::Target => TunnelEnd::TargetError(fault.kind),
    }
}

/// Best-effort write shutdown; errors are ignored because the tunnel is over.
fn poll_close<S: AsyncWrite + Unpin>(cx: &mut Context<'_>, stream: &mut S) -> Poll<()> {
    Pin::new(stream)
        .poll_shutdown(cx)
        .map(|res: io::Result<()>| drop(res))
}
