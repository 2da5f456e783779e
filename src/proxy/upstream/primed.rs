//! A target stream for a hyper client connection that joins an exchange already under
//! way: the request was written and the start of the answer read (`received`) by the raw
//! exchange, which hands over what it does not read itself (chunked or close-delimited
//! bodies, interim `1xx`, anything malformed, a refused upgrade's answer).
//!
//! hyper's first request on it stands for the one already written: its bytes are
//! dropped until the first flush, and nothing is readable before that flush, or hyper
//! would take the answer for an unsolicited one. Then hyper reads `received`, then the
//! stream, exactly as it would have on a connection of its own; later requests go out
//! as usual.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct Primed {
    stream: TcpStream,
    received: Bytes,
    flushed: bool,
    reader: Option<Waker>,
}

impl Primed {
    pub fn new(stream: TcpStream, received: Bytes) -> Primed {
        Primed {
            stream,
            received,
            flushed: false,
            reader: None,
        }
    }
}

impl AsyncRead for Primed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.flushed {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !self.received.is_empty() {
            let n = self.received.len().min(buf.remaining());
            let head = self.received.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Primed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.flushed {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.flushed {
            self.flushed = true;
            if let Some(w) = self.reader.take() {
                w.wake();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
