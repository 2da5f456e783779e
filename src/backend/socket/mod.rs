//! One WebSocket connection: hello, heartbeat, echo, notifications.
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so reading is never raced
//! against a timer. The connection task reads frames; a writer task owns the
//! write half and the heartbeat and takes everything it sends from channels:
//!
//! ```text
//!   reader ──control (pong, close reply)──▶ writer ◀── hello, notifications
//!          ──echo (one message at a time)─▶        ◀── ping ticker, cancel
//!          ──pong seen (watch)────────────▶
//! ```
//!
//! The echo channel holds one message, so a client that does not read its
//! echoes stops being read from, and memory stays near two messages. The
//! writer keeps watching the cancel token and the pong deadline while a write
//! is blocked, so a client that stops reading cannot hold the task forever.

mod reader;
mod writer;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, WebSocket, WebSocketRead, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn, Instrument, Span};

use super::server::Backend;
use super::MAX_MESSAGE_SIZE;
use reader::read_messages;
use writer::{run_writer, Heartbeat, WriterEnd};

/// Room in a socket's control queue (hello, notifications, pongs, close).
const CONTROL_QUEUE: usize = 64;

/// How long the writer may take to send what the reader queued last (the
/// reply to a close frame) once the reader has stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// After sending 1001 on shutdown, how long to wait for the client's close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

type Stream = TokioIo<Upgraded>;
type Reader = WebSocketRead<ReadHalf<Stream>>;
type Writer = WebSocketWrite<WriteHalf<Stream>>;

/// What the writer task is asked to send.
pub(super) enum Outbound {
    /// A text message: the hello or a notification.
    Text(Bytes),
    /// A frame the protocol requires: a Pong or a Close.
    Control(Frame<'static>),
}

/// Why a WebSocket connection ended; logged once per connection.
#[derive(Debug)]
enum EndReason {
    CloseReceived { code: Option<u16>, reason: String },
    Eof,
    PingTimeout(Duration),
    Io(io::Error),
    Protocol(String),
    Shutdown,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::CloseReceived { code: None, .. } => {
                write!(f, "close frame received without a status code")
            }
            EndReason::CloseReceived {
                code: Some(code),
                reason,
            } => write!(
                f,
                "close frame received with code {code} and reason {reason:?}"
            ),
            EndReason::Eof => write!(f, "EOF without a close frame"),
            EndReason::PingTimeout(timeout) => {
                write!(f, "ping timeout: no pong within {timeout:?} of a ping")
            }
            EndReason::Io(e) => write!(f, "I/O error: {e}"),
            EndReason::Protocol(e) => write!(f, "protocol error: {e}"),
            EndReason::Shutdown => write!(f, "server shutdown"),
        }
    }
}

/// Serve one upgraded WebSocket until it ends; logs why it ended.
pub(super) async fn run(backend: Arc<Backend>, ws: WebSocket<Stream>, user: String) {
    let started = Instant::now();
    let (mut reader, writer) = ws.split(tokio::io::split);
    reader.set_auto_close(true);
    reader.set_auto_pong(true);
    // fastwebsockets rejects frames of `max` bytes or more.
    reader.set_max_message_size(MAX_MESSAGE_SIZE + 1);

    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (echo_tx, echo_rx) = mpsc::channel(1);
    let (pong_tx, pong_rx) = watch::channel(());

    let registration = backend.registry.register(&user, control_tx.clone());
    let hello = serde_json::json!({ "type": "hello", "backend": backend.options.id, "user": user });
    // The queue is empty and its receiver alive, so this cannot fail.
    let _ = control_tx.try_send(Outbound::Text(Bytes::from(hello.to_string())));
    info!("WebSocket connection opened.");

    let heartbeat = Heartbeat {
        interval: backend.options.ping_interval.filter(|d| !d.is_zero()),
        timeout: backend.options.ping_timeout.filter(|d| !d.is_zero()),
    };
    let mut writing = backend.tracker.spawn(
        run_writer(
            writer,
            control_rx,
            echo_rx,
            pong_rx,
            heartbeat,
            backend.cancel.clone(),
        )
        .instrument(Span::current()),
    );
    let reading = read_messages(&mut reader, control_tx, echo_tx, pong_tx);
    tokio::pin!(reading);

    let reason = tokio::select! {
        biased;
        writer_end = &mut writing => {
            let writer_end = writer_end.unwrap_or_else(|e| {
                WriterEnd::Failed(io::Error::other(format!("the writer task failed: {e}")))
            });
            match writer_end {
                WriterEnd::Shutdown => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut reading).await;
                    EndReason::Shutdown
                }
                WriterEnd::PingTimeout(timeout) => EndReason::PingTimeout(timeout),
                WriterEnd::Failed(e) => EndReason::Io(e),
                // The writer sent a close frame the reader queued just before
                // it returned.
                WriterEnd::Finished => tokio::time::timeout(CLOSE_TIMEOUT, &mut reading)
                    .await
                    .unwrap_or_else(|_| EndReason::Io(io::Error::other("the reader did not stop"))),
            }
        }
        reason = &mut reading => {
            // Let the writer send what the reader queued (the close reply).
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut writing).await.is_err() {
                writing.abort();
            }
            reason
        }
    };

    // Stop counting the socket before its TCP connection closes (when
    // `reader`, the last half, is dropped).
    drop(registration);
    let elapsed = started.elapsed();
    match reason {
        EndReason::Io(_) | EndReason::Protocol(_) | EndReason::PingTimeout(_) => {
            warn!("WebSocket connection ended after {elapsed:.1?}: {reason}.")
        }
        _ => info!("WebSocket connection ended after {elapsed:.1?}: {reason}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_read_as_sentences() {
        let close = reader::close_received(&[0x03, 0xe8, b'b', b'y', b'e']);
        assert_eq!(
            close.to_string(),
            "close frame received with code 1000 and reason \"bye\""
        );
        assert_eq!(
            reader::close_received(&[]).to_string(),
            "close frame received without a status code"
        );
        assert_eq!(EndReason::Eof.to_string(), "EOF without a close frame");
        assert_eq!(
            EndReason::PingTimeout(Duration::from_millis(300)).to_string(),
            "ping timeout: no pong within 300ms of a ping"
        );
        assert_eq!(EndReason::Shutdown.to_string(), "server shutdown");
    }
}
