//! The post-101 byte pipe: copy both ways untouched, pass half-closes on, close on idle.
//!
//! A tunnel is one future that polls both directions itself (`drive`); it
//! never spawns and never parses what it carries. Each direction borrows a
//! copy buffer from a per-thread pool (`pool`) only while bytes are in
//! flight, so an idle tunnel holds no buffer. The idle timeout is one sleep
//! plus an activity stamp (`idle`). Directions sit behind a small trait
//! (`direction::Direction`): [`splice`] copies any stream pair through user
//! space, and [`splice_tcp`] copies plaintext TCP↔TCP bytes the same way
//! while messages are small and moves bulk with splice(2) through a kernel
//! pipe that a direction holds only while bytes are in flight (`zero_copy`,
//! `pipe`), falling back to the buffered copy where splice is not available.
//!
//! This module owns shutting down and dropping both sockets once a tunnel
//! ends; it never writes WebSocket frames (an idle close sends no close frame,
//! as with ALB).
//!
//! Around the bytes: every open tunnel is listed in a [`Tunnels`] registry
//! with what it joins, and is ended from outside only through its handle
//! ([`TunnelHandle`]: deregistration, shutdown). A tunnel's task ([`Tunnel`])
//! makes one [`TunnelRecord`] when it ends (cause, bytes each way, times) and
//! writes its close line from it. Nothing is counted or published per byte.

mod control;
mod direction;
mod drive;
pub(crate) mod idle;
#[cfg(target_os = "linux")]
mod pipe;
mod pool;
mod record;
mod registry;
mod task;
#[cfg(target_os = "linux")]
mod zero_copy;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use direction::BufferedCopy;

pub use control::{DisconnectMode, EndRequest, Supervisor, TunnelControl, UnknownMode};
pub use drive::SHUTDOWN_GRACE;
pub use pool::BUF_SIZE;
pub use record::{CloseCause, CopyPath, TunnelRecord};
pub use registry::{
    NewTunnel, Registration, TunnelHandle, TunnelId, TunnelInfo, TunnelTarget, Tunnels,
};
pub use task::{OnEnd, Tunnel};

/// A tunnel's socket, which can be made to close with an RST (`SO_LINGER` 0) for the
/// `reset` disconnect. A stream that is no socket closes as it always does.
pub trait Resettable {
    /// Make the next close of the socket send an RST; best effort.
    fn reset_on_close(&self);
}

impl Resettable for TcpStream {
    fn reset_on_close(&self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!("SO_LINGER 0 could not be set: {e}.");
        }
    }
}

impl<S: Resettable + ?Sized> Resettable for Box<S> {
    fn reset_on_close(&self) {
        (**self).reset_on_close()
    }
}

impl Resettable for crate::tls::records::RecordStream {
    fn reset_on_close(&self) {
        self.tcp().reset_on_close();
    }
}

impl<S: Resettable> Resettable for tokio_rustls::server::TlsStream<S> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close()
    }
}

impl<S: Resettable> Resettable for tokio_rustls::client::TlsStream<S> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close()
    }
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both directions finished (the client closed first).
    ClientClosed,
    /// Both directions finished (the target closed first).
    TargetClosed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// The end signal asked for it (deregistration, shutdown, a disconnect). A tunnel
    /// whose network was dropped ends so whatever closes it afterwards.
    Ended(EndRequest),
    /// An I/O error on the client side.
    ClientError(std::io::ErrorKind),
    /// An I/O error on the target side.
    TargetError(std::io::ErrorKind),
}

/// What a finished tunnel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelReport {
    /// Bytes copied client → target (prefix included).
    pub client_to_target: u64,
    /// Bytes copied target → client (prefix included).
    pub target_to_client: u64,
    pub end: TunnelEnd,
}

/// Splice `client` and `target` until both directions end, one side fails,
/// nothing moves for `idle_timeout`, or `end` asks for it (a disconnect ends the
/// tunnel as its [`DisconnectMode`] says).
///
/// `client_prefix` (bytes read from the client past the request head) is
/// written to the target first; `target_prefix` (bytes read from the target
/// past the 101 head) is written to the client first. An EOF from one side is
/// passed on as a write shutdown (FIN, or close_notify + FIN over TLS) of the
/// other, and the other direction keeps flowing. On idle timeout or an end
/// request both sides are shut down; on an I/O error the healthy side is
/// shut down. Both sockets are dropped when this returns.
///
/// Call it as an `async fn`. The returned future does not need its own task: it polls both directions
/// itself and holds a copy buffer only while bytes are in flight.
pub fn splice<C, T, E>(
    client: C,
    client_prefix: Bytes,
    target: T,
    target_prefix: Bytes,
    idle_timeout: Duration,
    end: E,
) -> impl Future<Output = TunnelReport>
where
    C: AsyncRead + AsyncWrite + Resettable + Unpin,
    T: AsyncRead + AsyncWrite + Resettable + Unpin,
    E: Supervisor,
{
    // A plain `fn` rather than `async fn`: an `async fn` wrapper would store
    // its arguments next to the inner future, making every idle tunnel bigger.
    drive::drive(
        client,
        target,
        BufferedCopy::new(detached(client_prefix)),
        BufferedCopy::new(detached(target_prefix)),
        idle_timeout,
        end,
    )
}

/// `prefix` in an allocation of its own. A prefix is usually a slice of the read
/// buffer its head came in (kilobytes); keeping the slice would keep that whole buffer
/// for the tunnel's life.
fn detached(prefix: Bytes) -> Bytes {
    if prefix.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&prefix)
    }
}

/// [`splice`] for a plaintext TCP client and a TCP target: same contract and
/// report, but on Linux each direction adapts to its traffic. It starts
/// copying through a pooled buffer (one recv and one send per small message)
/// and, once a read fills the whole buffer, moves bytes socket → pipe →
/// socket with splice(2) so bulk never enters user space; after a run of
/// small reads it copies again (see `zero_copy` for the rule). A direction
/// holds a buffer or a pipe only while bytes are in flight, so an idle tunnel
/// holds neither. Where splice is unsupported, or no pipe can be had, the
/// affected direction copies for the rest of the tunnel.
pub fn splice_tcp<E: Supervisor>(
    client: TcpStream,
    client_prefix: Bytes,
    target: TcpStream,
    target_prefix: Bytes,
    idle_timeout: Duration,
    end: E,
) -> impl Future<Output = TunnelReport> {
    #[cfg(target_os = "linux")]
    let (up, down) = (
        zero_copy::SpliceCopy::new(detached(client_prefix)),
        zero_copy::SpliceCopy::new(detached(target_prefix)),
    );
    #[cfg(not(target_os = "linux"))]
    let (up, down) = (
        BufferedCopy::new(detached(client_prefix)),
        BufferedCopy::new(detached(target_prefix)),
    );
    drive::drive(client, target, up, down, idle_timeout, end)
}
