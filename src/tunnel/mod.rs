//! The post-101 byte pipe: copy both ways untouched, pass half-closes on, close on idle.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both directions finished (the client closed first).
    ClientClosed,
    /// Both directions finished (the target closed first).
    TargetClosed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// The cancellation token fired (shutdown, drain expiry).
    Cancelled,
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

/// Splice `client` and `target`.
pub async fn splice<C, T>(
    client: C,
    client_prefix: Bytes,
    target: T,
    target_prefix: Bytes,
    idle_timeout: Duration,
    cancel: CancellationToken,
) -> TunnelReport
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let _ = (
        client,
        client_prefix,
        target,
        target_prefix,
        idle_timeout,
        cancel,
    );
    TunnelReport {
        client_to_target: 0,
        target_to_client: 0,
        end: TunnelEnd::Cancelled,
    }
}
