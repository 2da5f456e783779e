//! A target's response body that gives its connection back to the target's pool once
//! it has been read to the end: never while a response is still streaming, after an
//! error, or when the connection must not be reused.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::net::TcpStream;

use super::pool::{Conn, IdleConns, Sender};

/// Errors of a response body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A target's response body (see the module docs).
pub struct PooledBody {
    inner: Inner,
}

enum Inner {
    Hyper {
        body: Incoming,
        conn: Option<(Sender, Arc<IdleConns>)>,
    },
    Raw(RawBody),
}

impl PooledBody {
    /// `body` of a response that came on `sender`; without `home` the connection is
    /// not reused (it closes once the exchange is over).
    pub fn new(body: Incoming, sender: Sender, home: Option<Arc<IdleConns>>) -> PooledBody {
        let mut b = PooledBody {
            inner: Inner::Hyper {
                body,
                conn: home.map(|home| (sender, home)),
            },
        };
        if b.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A body that does not belong to a pooled connection.
    pub fn unpooled(body: Incoming) -> PooledBody {
        PooledBody {
            inner: Inner::Hyper { body, conn: None },
        }
    }

    /// A `length`-byte body read straight from `stream`, `rest` holding its start;
    /// without `home` the stream is closed at the end instead of being listed there.
    pub fn raw(
        stream: TcpStream,
        rest: BytesMut,
        length: u64,
        home: Option<Arc<IdleConns>>,
    ) -> PooledBody {
        let mut raw = RawBody {
            stream: Some(stream),
            buf: rest,
            left: length,
            home,
        };
        if length == 0 {
            raw.finish();
        }
        PooledBody {
            inner: Inner::Raw(raw),
        }
    }

    fn give_back(&mut self) {
        if let Inner::Hyper { conn, .. } = &mut self.inner {
            if let Some((sender, home)) = conn.take() {
                home.put(Conn::Hyper(sender));
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let (body, conn) = match &mut this.inner {
            Inner::Raw(raw) => return raw.poll_frame(cx),
            Inner::Hyper { body, conn } => (body, conn),
        };
        let r = Pin::new(&mut *body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.give_back(),
            // A broken body leaves the connection unusable: drop it.
            Poll::Ready(Some(Err(_))) => *conn = None,
            _ => {}
        }
        r.map(|o| o.map(|r| r.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Raw(raw) => raw.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Raw(raw) => SizeHint::with_exact(raw.left),
        }
    }
}

/// A `Content-Length` body read straight from the target's stream; the stream goes back
/// to the pool once the last byte is read (and nothing more came).
struct RawBody {
    stream: Option<TcpStream>,
    /// Read, not yet passed on.
    buf: BytesMut,
    left: u64,
    home: Option<Arc<IdleConns>>,
}

/// How much one read of a body asks for at most.
const BODY_READ: usize = 64 * 1024;

impl RawBody {
    fn finish(&mut self) {
        let stream = self.stream.take();
        if let (Some(stream), Some(home)) = (stream, self.home.take()) {
            // Bytes beyond the body: the target is not speaking HTTP/1.1 as we are.
            if self.buf.is_empty() {
                home.put(Conn::Raw(stream));
            }
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.left == 0 {
                self.finish();
                return Poll::Ready(None);
            }
            if !self.buf.is_empty() {
                let n = self.left.min(self.buf.len() as u64) as usize;
                self.left -= n as u64;
                let data = self.buf.split_to(n).freeze();
                if self.left == 0 {
                    self.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(Some(Err("the response body was cut short".into())));
            };
            if self.buf.capacity() < 1024 {
                self.buf
                    .reserve(self.left.min(BODY_READ as u64).max(1024) as usize);
            }
            match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.stream = None;
                    self.home = None;
                    return Poll::Ready(Some(Err(
                        "the target closed the connection before the end of the response body"
                            .into(),
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.stream = None;
                    self.home = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}
