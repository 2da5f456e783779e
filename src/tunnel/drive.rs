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

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::control::EndSignal;
use super::direction::{Direction, Fault, Faulty};
use super::idle::IdleClock;
use super::{TunnelEnd, TunnelReport};

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
    /// The tunnel ended with `end`; shutting down the write halves still open,
    /// for at most [`SHUTDOWN_GRACE`].
    Closing {
        end: TunnelEnd,
        client_open: bool,
        target_open: bool,
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
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
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
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
    E: EndSignal,
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
                    // Shut down the write halves that are still open on healthy
                    // sides; a failed side is just dropped.
                    let (close_client, close_target) = match end {
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
                    };
                }
                Stage::Closing {
                    end,
                    mut client_open,
                    mut target_open,
                } => {
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
                        };
                        return Poll::Pending;
                    }
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
                    return Poll::Ready(report);
                }
                Stage::Finished => panic!("a tunnel was polled after it finished"),
            }
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
    E: EndSignal,
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
        this.clock.touch(Instant::now());
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
