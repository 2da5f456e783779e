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
//! echoes stops being read from, and memory stays near two messages.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument, Span};

use super::server::Backend;
use super::MAX_MESSAGE_SIZE;

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

/// How the writer task ended.
enum WriterEnd {
    /// The reader stopped, or a close frame was sent on its behalf.
    Finished,
    PingTimeout(Duration),
    Shutdown,
    Failed(io::Error),
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

/// Read frames until the connection ends; echo messages, note pongs.
async fn read_messages(
    reader: &mut Reader,
    control: mpsc::Sender<Outbound>,
    echoes: mpsc::Sender<Frame<'static>>,
    pongs: watch::Sender<()>,
) -> EndReason {
    let mut send_control = |frame: Frame<'static>| {
        let control = control.clone();
        async move {
            control
                .send(Outbound::Control(frame))
                .await
                .map_err(|_| "the writer task stopped")
        }
    };
    // A fragmented message being reassembled.
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    loop {
        let frame = match reader.read_frame(&mut send_control).await {
            Ok(frame) => frame,
            Err(e) => return reader_error(e, &control).await,
        };
        let message = match (frame.opcode, frame.fin, partial.as_mut()) {
            (OpCode::Close, _, _) => return close_received(&frame.payload),
            (OpCode::Pong, _, _) => {
                pongs.send_replace(());
                continue;
            }
            (OpCode::Text | OpCode::Binary, true, None) => {
                Frame::new(true, frame.opcode, None, owned(frame.payload))
            }
            (OpCode::Text | OpCode::Binary, false, None) => {
                partial = Some((frame.opcode, frame.payload.to_vec()));
                continue;
            }
            (OpCode::Continuation, fin, Some((_, buffer))) => {
                if buffer.len() + frame.payload.len() > MAX_MESSAGE_SIZE {
                    let e = format!("a message is larger than {MAX_MESSAGE_SIZE} bytes");
                    return protocol_error(e, 1009, &control).await;
                }
                buffer.extend_from_slice(&frame.payload);
                if !fin {
                    continue;
                }
                let Some((opcode, buffer)) = partial.take() else {
                    continue;
                };
                if opcode == OpCode::Text && std::str::from_utf8(&buffer).is_err() {
                    let e = "invalid UTF-8 in a text message".to_owned();
                    return protocol_error(e, 1007, &control).await;
                }
                Frame::new(true, opcode, None, Payload::Owned(buffer))
            }
            // Pings are answered by auto-pong and never returned.
            (OpCode::Ping, _, _) => continue,
            (OpCode::Continuation, _, None) => {
                let e = "a continuation frame without a message to continue".to_owned();
                return protocol_error(e, 1002, &control).await;
            }
            (OpCode::Text | OpCode::Binary, _, Some(_)) => {
                let e = "a new message started inside a fragmented one".to_owned();
                return protocol_error(e, 1002, &control).await;
            }
        };
        if echoes.send(message).await.is_err() {
            return EndReason::Io(io::Error::other("the writer task stopped"));
        }
    }
}

fn close_received(payload: &[u8]) -> EndReason {
    // fastwebsockets has checked the length, the code and the UTF-8.
    match payload {
        [hi, lo, reason @ ..] => EndReason::CloseReceived {
            code: Some(u16::from_be_bytes([*hi, *lo])),
            reason: String::from_utf8_lossy(reason).into_owned(),
        },
        _ => EndReason::CloseReceived {
            code: None,
            reason: String::new(),
        },
    }
}

async fn reader_error(e: WebSocketError, control: &mpsc::Sender<Outbound>) -> EndReason {
    match e {
        WebSocketError::UnexpectedEOF => EndReason::Eof,
        WebSocketError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => EndReason::Eof,
        WebSocketError::IoError(e) => EndReason::Io(e),
        WebSocketError::SendError(e) => EndReason::Io(io::Error::other(e)),
        // fastwebsockets has already queued a 1002 close.
        WebSocketError::InvalidCloseCode => {
            EndReason::Protocol("a close frame carried an invalid code".to_owned())
        }
        WebSocketError::InvalidUTF8 => {
            protocol_error("invalid UTF-8 in a text message".to_owned(), 1007, control).await
        }
        WebSocketError::FrameTooLarge => {
            let e = format!("a frame is larger than {MAX_MESSAGE_SIZE} bytes");
            protocol_error(e, 1009, control).await
        }
        e => protocol_error(e.to_string(), 1002, control).await,
    }
}

/// Queue a close frame with `code` and return the reason to log.
async fn protocol_error(error: String, code: u16, control: &mpsc::Sender<Outbound>) -> EndReason {
    let _ = control
        .send(Outbound::Control(Frame::close(code, error.as_bytes())))
        .await;
    EndReason::Protocol(error)
}

/// A payload that no longer borrows the reader's buffer.
fn owned(payload: Payload<'_>) -> Payload<'static> {
    match payload {
        Payload::Bytes(bytes) => Payload::Bytes(bytes),
        Payload::Owned(vec) => Payload::Owned(vec),
        other => Payload::Owned(other.to_vec()),
    }
}

#[derive(Clone, Copy)]
struct Heartbeat {
    interval: Option<Duration>,
    timeout: Option<Duration>,
}

enum WriterEvent {
    Shutdown,
    PingTimeout,
    Pong,
    PongsClosed,
    Send(Outbound),
    Echo(Frame<'static>),
    ReaderDone,
    Ping,
}

/// Send the hello, pings, echoes and notifications until the connection ends.
async fn run_writer(
    mut ws: Writer,
    mut control: mpsc::Receiver<Outbound>,
    mut echoes: mpsc::Receiver<Frame<'static>>,
    mut pongs: watch::Receiver<()>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> WriterEnd {
    let mut ticker = heartbeat.interval.map(|period| {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let mut pong_deadline: Option<Instant> = None;
    let mut pongs_open = true;
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => WriterEvent::Shutdown,
            _ = sleep_until_some(pong_deadline), if pong_deadline.is_some() => WriterEvent::PingTimeout,
            changed = pongs.changed(), if pongs_open => match changed {
                Ok(()) => WriterEvent::Pong,
                Err(_) => WriterEvent::PongsClosed,
            },
            message = control.recv() => message.map_or(WriterEvent::ReaderDone, WriterEvent::Send),
            frame = echoes.recv() => frame.map_or(WriterEvent::ReaderDone, WriterEvent::Echo),
            _ = tick(&mut ticker) => WriterEvent::Ping,
        };
        let sent = match event {
            WriterEvent::Shutdown => {
                let _ = send(&mut ws, Frame::close(1001, b"server shutdown")).await;
                return WriterEnd::Shutdown;
            }
            WriterEvent::PingTimeout => {
                return WriterEnd::PingTimeout(heartbeat.timeout.unwrap_or_default())
            }
            WriterEvent::Pong => {
                pong_deadline = None;
                Ok(())
            }
            WriterEvent::PongsClosed => {
                pongs_open = false;
                Ok(())
            }
            WriterEvent::Ping => {
                if let (None, Some(timeout)) = (pong_deadline, heartbeat.timeout) {
                    pongs.mark_unchanged();
                    pong_deadline = Some(Instant::now() + timeout);
                }
                let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]));
                send(&mut ws, ping).await
            }
            WriterEvent::Echo(frame) => send(&mut ws, frame).await,
            WriterEvent::Send(outbound) => match send_outbound(&mut ws, outbound).await {
                Ok(true) => return WriterEnd::Finished,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            WriterEvent::ReaderDone => {
                // Send what the reader queued last, typically a close reply.
                while let Ok(outbound) = control.try_recv() {
                    match send_outbound(&mut ws, outbound).await {
                        Ok(false) => {}
                        Ok(true) => break,
                        Err(e) => return WriterEnd::Failed(e),
                    }
                }
                return WriterEnd::Finished;
            }
        };
        if let Err(e) = sent {
            return WriterEnd::Failed(e);
        }
    }
}

/// Send one queued item; `Ok(true)` when it was a close frame.
async fn send_outbound(ws: &mut Writer, outbound: Outbound) -> io::Result<bool> {
    match outbound {
        Outbound::Text(text) => {
            send(ws, Frame::text(Payload::Borrowed(&text))).await?;
            Ok(false)
        }
        Outbound::Control(frame) => {
            let is_close = frame.opcode == OpCode::Close;
            send(ws, frame).await?;
            Ok(is_close)
        }
    }
}

async fn send(ws: &mut Writer, frame: Frame<'_>) -> io::Result<()> {
    ws.write_frame(frame).await.map_err(into_io)?;
    ws.flush().await.map_err(into_io)
}

fn into_io(e: WebSocketError) -> io::Error {
    match e {
        WebSocketError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_read_as_sentences() {
        let close = close_received(&[0x03, 0xe8, b'b', b'y', b'e']);
        assert_eq!(
            close.to_string(),
            "close frame received with code 1000 and reason \"bye\""
        );
        assert_eq!(
            close_received(&[]).to_string(),
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
