//! The reading side of one socket: frames in, echoes and pongs out.

use std::io;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use tokio::sync::{mpsc, watch};

use super::{EndReason, Outbound, Reader};
use crate::backend::MAX_MESSAGE_SIZE;

/// Read frames until the connection ends; echo messages, note pongs.
pub(super) async fn read_messages(
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

pub(super) fn close_received(payload: &[u8]) -> EndReason {
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
