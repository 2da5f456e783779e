//! The heartbeat WebSocket backend.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Options of one backend instance.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub id: String,
    /// `None` disables pings.
    pub ping_interval: Option<Duration>,
    /// `None` disables the pong deadline.
    pub ping_timeout: Option<Duration>,
    pub redis: Option<String>,
}

/// A running backend.
pub struct BackendHandle {
    pub local_addr: SocketAddr,
}

/// Serve on an already bound listener until `cancel` fires.
pub async fn start(
    listener: TcpListener,
    options: BackendOptions,
    cancel: CancellationToken,
) -> std::io::Result<BackendHandle> {
    let _ = (options, cancel);
    Ok(BackendHandle {
        local_addr: listener.local_addr()?,
    })
}
