//! What a finished tunnel was: one [`TunnelRecord`], made once when it ends, from which
//! the close log line is written (and, later, its access-log line and metrics).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::control::{DisconnectMode, EndRequest};
use super::registry::{TunnelId, TunnelInfo};
use super::{TunnelEnd, TunnelReport};

/// The one recorded reason a tunnel ended, named as DESIGN.md's "Disconnects on demand"
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed its connection (FIN) first.
    ClientClose,
    /// The target closed its connection (FIN) first.
    TargetClose,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// The client reset its connection (RST).
    ClientReset,
    /// The target reset its connection (RST).
    TargetReset,
    /// The target's deregistration delay ended.
    Deregistration,
    /// The load balancer's shutdown deadline passed.
    Shutdown,
    /// Any other failure on either side.
    Error,
    /// A disconnect was asked for, in this mode (whatever closed the sockets in the end:
    /// a dropped tunnel's later idle close included).
    Disconnect(DisconnectMode),
}

impl CloseCause {
    /// Every cause, in the order [`CloseCause::index`] numbers them.
    pub const ALL: [CloseCause; 13] = [
        CloseCause::ClientClose,
        CloseCause::TargetClose,
        CloseCause::IdleTimeout,
        CloseCause::ClientReset,
        CloseCause::TargetReset,
        CloseCause::Deregistration,
        CloseCause::Shutdown,
        CloseCause::Error,
        CloseCause::Disconnect(DisconnectMode::ClientClose),
        CloseCause::Disconnect(DisconnectMode::NetworkDrop),
        CloseCause::Disconnect(DisconnectMode::IdleTimeout),
        CloseCause::Disconnect(DisconnectMode::TargetClose),
        CloseCause::Disconnect(DisconnectMode::Reset),
    ];

    /// The cause's place in [`CloseCause::ALL`].
    pub fn index(self) -> usize {
        match self {
            CloseCause::ClientClose => 0,
            CloseCause::TargetClose => 1,
            CloseCause::IdleTimeout => 2,
            CloseCause::ClientReset => 3,
            CloseCause::TargetReset => 4,
            CloseCause::Deregistration => 5,
            CloseCause::Shutdown => 6,
            CloseCause::Error => 7,
            CloseCause::Disconnect(mode) => 8 + mode as usize,
        }
    }

    /// The cause of `end`; a connection reset (or a write to a connection the peer
    /// already reset) counts as a reset, any other I/O failure as an error.
    pub fn of(end: TunnelEnd) -> CloseCause {
        match end {
            TunnelEnd::ClientClosed => CloseCause::ClientClose,
            TunnelEnd::TargetClosed => CloseCause::TargetClose,
            TunnelEnd::IdleTimeout => CloseCause::IdleTimeout,
            TunnelEnd::Ended(EndRequest::Deregistration) => CloseCause::Deregistration,
            TunnelEnd::Ended(EndRequest::Shutdown) => CloseCause::Shutdown,
            TunnelEnd::Ended(EndRequest::Disconnect(mode)) => CloseCause::Disconnect(mode),
            TunnelEnd::ClientError(kind) if is_reset(kind) => CloseCause::ClientReset,
            TunnelEnd::TargetError(kind) if is_reset(kind) => CloseCause::TargetReset,
            TunnelEnd::ClientError(_) | TunnelEnd::TargetError(_) => CloseCause::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::ClientClose => "client_close",
            CloseCause::TargetClose => "target_close",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::ClientReset => "client_reset",
            CloseCause::TargetReset => "target_reset",
            CloseCause::Deregistration => "deregistration",
            CloseCause::Shutdown => "shutdown",
            CloseCause::Error => "error",
            CloseCause::Disconnect(DisconnectMode::ClientClose) => "disconnect_client_close",
            CloseCause::Disconnect(DisconnectMode::NetworkDrop) => "disconnect_network_drop",
            CloseCause::Disconnect(DisconnectMode::IdleTimeout) => "disconnect_idle_timeout",
            CloseCause::Disconnect(DisconnectMode::TargetClose) => "disconnect_target_close",
            CloseCause::Disconnect(DisconnectMode::Reset) => "disconnect_reset",
        }
    }
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// How a tunnel's bytes were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPath {
    /// Plain TCP on both sides: recv/send for small messages, splice(2) for bulk
    /// (whether or not it ever spliced).
    Splice,
    /// Through user-space buffers, rustls protecting the client's records (a TLS
    /// client whose connection could not be handed over).
    Buffered,
    /// Through user-space buffers, albatross protecting the client's TLS records with
    /// the keys rustls handed over (`tls::records`).
    TlsRecords,
}

impl CopyPath {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyPath::Splice => "splice",
            CopyPath::Buffered => "buffered",
            CopyPath::TlsRecords => "tls_records",
        }
    }
}

/// Everything known about a tunnel once it has ended.
#[derive(Debug, Clone)]
pub struct TunnelRecord {
    pub id: TunnelId,
    /// The listener port the client connected to.
    pub listener_port: u16,
    pub client: SocketAddr,
    pub target: SocketAddr,
    pub target_group: Arc<str>,
    pub opened_at: SystemTime,
    pub closed_at: SystemTime,
    /// Bytes the client sent through the tunnel (bytes read past its request head
    /// included).
    pub bytes_from_client: u64,
    /// Bytes sent to the client through the tunnel (bytes read past the `101` included).
    pub bytes_to_client: u64,
    pub cause: CloseCause,
    /// How it ended, with the I/O error kind when it failed.
    pub end: TunnelEnd,
    pub path: CopyPath,
}

impl TunnelRecord {
    /// The record of the tunnel `info` that ended as `report` says, now.
    pub fn new(info: &TunnelInfo, report: TunnelReport) -> TunnelRecord {
        TunnelRecord {
            id: info.id,
            listener_port: info.listener_port,
            client: info.client,
            target: info.target_addr(),
            target_group: info.target_group().clone(),
            opened_at: info.opened_at(),
            closed_at: SystemTime::now(),
            bytes_from_client: report.client_to_target,
            bytes_to_client: report.target_to_client,
            cause: CloseCause::of(report.end),
            end: report.end,
            path: info.path,
        }
    }

    /// How long the tunnel was open.
    pub fn duration(&self) -> std::time::Duration {
        self.closed_at
            .duration_since(self.opened_at)
            .unwrap_or_default()
    }

    /// Write the tunnel's close line.
    pub fn log(&self) {
        tracing::info!(
            tunnel = self.id.0,
            listener_port = self.listener_port,
            client = %self.client,
            target = %self.target,
            target_group = &*self.target_group,
            cause = self.cause.as_str(),
            path = self.path.as_str(),
            bytes_from_client = self.bytes_from_client,
            bytes_to_client = self.bytes_to_client,
            duration_ms = self.duration().as_millis() as u64,
            "Tunnel closed ({}): {}.",
            self.cause,
            Described(self)
        );
    }
}

/// The close reason of a record as the end of a sentence.
struct Described<'a>(&'a TunnelRecord);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.end {
            TunnelEnd::ClientClosed => f.write_str("the client closed it"),
            TunnelEnd::TargetClosed => f.write_str("the target closed it"),
            TunnelEnd::IdleTimeout => f.write_str("no byte moved for the idle timeout"),
            TunnelEnd::Ended(EndRequest::Deregistration) => {
                f.write_str("the target's deregistration delay ended")
            }
            TunnelEnd::Ended(EndRequest::Shutdown) => {
                f.write_str("the load balancer's shutdown deadline passed")
            }
            TunnelEnd::Ended(EndRequest::Disconnect(mode)) => {
                write!(f, "it was disconnected on demand ({mode})")
            }
            TunnelEnd::ClientError(kind) if is_reset(kind) => {
                write!(f, "the client reset the connection ({kind})")
            }
            TunnelEnd::TargetError(kind) if is_reset(kind) => {
                write!(f, "the target reset the connection ({kind})")
            }
            TunnelEnd::ClientError(kind) => write!(f, "the client connection failed ({kind})"),
            TunnelEnd::TargetError(kind) => write!(f, "the target connection failed ({kind})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_told_apart_from_fins_and_errors() {
        use io::ErrorKind::*;
        let cases = [
            (TunnelEnd::ClientClosed, "client_close"),
            (TunnelEnd::TargetClosed, "target_close"),
            (TunnelEnd::IdleTimeout, "idle_timeout"),
            (TunnelEnd::ClientError(ConnectionReset), "client_reset"),
            (TunnelEnd::TargetError(ConnectionReset), "target_reset"),
            (TunnelEnd::TargetError(BrokenPipe), "target_reset"),
            (TunnelEnd::ClientError(TimedOut), "error"),
            (
                TunnelEnd::Ended(EndRequest::Deregistration),
                "deregistration",
            ),
            (TunnelEnd::Ended(EndRequest::Shutdown), "shutdown"),
            (
                TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::NetworkDrop)),
                "disconnect_network_drop",
            ),
        ];
        for (end, cause) in cases {
            assert_eq!(CloseCause::of(end).as_str(), cause, "{end:?}");
        }
        for (i, cause) in CloseCause::ALL.into_iter().enumerate() {
            assert_eq!(cause.index(), i, "{cause}");
        }
        for mode in DisconnectMode::ALL {
            let cause = CloseCause::Disconnect(mode).to_string();
            assert_eq!(cause, format!("disconnect_{mode}"));
        }
    }
}
