//! The tunnel driver: one future polls both directions, the idle clock and the
//! cancellation token, then closes what is left.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

/// Runs a tunnel: `up` copies client → target, `down` target → client.
pub(crate) async fn drive<C, T, Up, Down>(
    mut client: C,
    mut target: T,
    mut up: Up,
    mut down: Down,
    idle_timeout: Duration,
    cancel: CancellationToken,
) -> TunnelReport
where
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
    Up: Direction<C, T>,
    Down: Direction<T, C>,
{
    let mut clock = IdleClock::new(idle_timeout, Instant::now());
    let sleep = tokio::time::sleep_until(clock.deadline());
    tokio::pin!(sleep);
    let end = {
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let mut first_eof = None;
        poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(TunnelEnd::Cancelled);
            }
            let mut activity = false;
            if !up.is_done() {
                if let Poll::Ready(Err(fault)) =
                    up.poll_transfer(cx, &mut client, &mut target, &mut activity)
                {
                    return Poll::Ready(blame(fault, Side::Client, Side::Target));
                }
            }
            if !down.is_done() {
                if let Poll::Ready(Err(fault)) =
                    down.poll_transfer(cx, &mut target, &mut client, &mut activity)
                {
                    return Poll::Ready(blame(fault, Side::Target, Side::Client));
                }
            }
            if first_eof.is_none() {
                if up.saw_eof() {
                    first_eof = Some(Side::Client);
                } else if down.saw_eof() {
                    first_eof = Some(Side::Target);
                }
            }
            if up.is_done() && down.is_done() {
                return Poll::Ready(match first_eof {
                    Some(Side::Target) => TunnelEnd::TargetClosed,
                    _ => TunnelEnd::ClientClosed,
                });
            }
            if activity {
                clock.touch(Instant::now());
            }
            clock
                .poll_expired(cx, sleep.as_mut())
                .map(|()| TunnelEnd::IdleTimeout)
        })
        .await
    };

    // Shut down the write halves that are still open on healthy sides; a
    // failed side is just dropped.
    let (close_client, close_target) = match end {
        TunnelEnd::ClientClosed | TunnelEnd::TargetClosed => (false, false),
        TunnelEnd::IdleTimeout | TunnelEnd::Cancelled => (true, true),
        TunnelEnd::ClientError(_) => (false, true),
        TunnelEnd::TargetError(_) => (true, false),
    };
    let close_client = close_client && !down.is_done();
    let close_target = close_target && !up.is_done();
    if close_client || close_target {
        sleep.as_mut().reset(Instant::now() + SHUTDOWN_GRACE);
        let mut client_open = close_client;
        let mut target_open = close_target;
        poll_fn(|cx| {
            if client_open && poll_close(cx, &mut client).is_ready() {
                client_open = false;
            }
            if target_open && poll_close(cx, &mut target).is_ready() {
                target_open = false;
            }
            if !client_open && !target_open {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }

    let report = TunnelReport {
        client_to_target: up.transferred(),
        target_to_client: down.transferred(),
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

/// Names the side at fault for an error in the direction `reader → writer`.
fn blame(fault: Fault, reader: Side, writer: Side) -> TunnelEnd {
    let side = match fault.stream {
        Faulty::Reader => reader,
        Faulty::Writer => writer,
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
