//! The writing side of one socket: hello, pings, echoes, notifications.
//!
//! Every write is raced against the cancel token and the heartbeat (the write
//! future itself is polled to completion, never dropped and retried), so a
//! peer that stops reading is dropped by the pong deadline or on shutdown
//! instead of holding the task.

use std::io;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use tokio::sync::watch::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Outbound, Writer};

/// How long the 1001 close frame may take to leave on shutdown.
const SHUTDOWN_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// When to ping, and how long a pong may take. `None` disables either.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heartbeat {
    pub(super) interval: Option<Duration>,
    pub(super) timeout: Option<Duration>,
}

/// How the writer task ended.
pub(super) enum WriterEnd {
    /// The reader stopped, or a close frame was sent on its behalf.
    Finished,
    PingTimeout(Duration),
    Shutdown,
    Failed(io::Error),
}

/// Send the hello, pings, echoes and notifications until the connection ends.
pub(super) async fn run_writer(
    ws: Writer,
    mut control: mpsc::Receiver<Outbound>,
    mut echoes: mpsc::Receiver<Frame<'static>>,
    pongs: watch::Receiver<()>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> WriterEnd {
    let mut task = WriterTask {
        ws,
        pacer: Pacer::new(heartbeat, pongs),
        cancel,
    };
    match task.serve(&mut control, &mut echoes).await {
        Ok(()) => WriterEnd::Finished,
        Err(end) => end,
    }
}

struct WriterTask {
    ws: Writer,
    pacer: Pacer,
    cancel: CancellationToken,
}

enum Event {
    Shutdown,
    PingTimeout,
    Pong(Result<(), RecvError>),
    Tick,
    Send(Outbound),
    Echo(Frame<'static>),
    ReaderDone,
}

impl WriterTask {
    /// `Ok` when the reader is done and its last frames are sent.
    async fn serve(
        &mut self,
        control: &mut mpsc::Receiver<Outbound>,
        echoes: &mut mpsc::Receiver<Frame<'static>>,
    ) -> Result<(), WriterEnd> {
        loop {
            if self.pacer.ping_due {
                self.pacer.ping_due = false;
                let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]));
                self.write(ping).await?;
            }
            let Self { pacer, cancel, .. } = self;
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => Event::Shutdown,
                _ = sleep_until_some(pacer.deadline), if pacer.deadline.is_some() => Event::PingTimeout,
                changed = pacer.pongs.changed(), if pacer.pongs_open => Event::Pong(changed),
                message = control.recv() => message.map_or(Event::ReaderDone, Event::Send),
                frame = echoes.recv() => frame.map_or(Event::ReaderDone, Event::Echo),
                _ = tick(&mut pacer.ticker) => Event::Tick,
            };
            match event {
                Event::Shutdown => {
                    let close = Frame::close(1001, b"server shutdown");
                    let _ = tokio::time::timeout(SHUTDOWN_CLOSE_TIMEOUT, send(&mut self.ws, close))
                        .await;
                    return Err(WriterEnd::Shutdown);
                }
                Event::PingTimeout => return Err(self.pacer.timed_out()),
                Event::Pong(changed) => self.pacer.on_pong(changed),
                Event::Tick => self.pacer.on_tick(),
                Event::Echo(frame) => self.write(frame).await?,
                Event::Send(outbound) => {
                    if self.write_outbound(outbound).await? {
                        return Ok(());
                    }
                }
                Event::ReaderDone => {
                    // Send what the reader queued last, typically a close reply.
                    while let Ok(outbound) = control.try_recv() {
                        if self.write_outbound(outbound).await? {
                            break;
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Write one queued item; `true` when it was a close frame.
    async fn write_outbound(&mut self, outbound: Outbound) -> Result<bool, WriterEnd> {
        match outbound {
            Outbound::Text(text) => {
                self.write(Frame::text(Payload::Borrowed(&text))).await?;
                Ok(false)
            }
            Outbound::Control(frame) => {
                let is_close = frame.opcode == OpCode::Close;
                self.write(frame).await?;
                Ok(is_close)
            }
        }
    }

    /// Write and flush one frame while still watching cancel and the heartbeat.
    async fn write(&mut self, frame: Frame<'_>) -> Result<(), WriterEnd> {
        let Self { ws, pacer, cancel } = self;
        let timeout = pacer.timeout;
        let write = send(ws, frame);
        tokio::pin!(write);
        loop {
            let event = tokio::select! {
                biased;
                result = &mut write => return result.map_err(WriterEnd::Failed),
                // Mid-frame: no close frame can be sent any more.
                _ = cancel.cancelled() => return Err(WriterEnd::Shutdown),
                _ = sleep_until_some(pacer.deadline), if pacer.deadline.is_some() => {
                    return Err(WriterEnd::PingTimeout(timeout.unwrap_or_default()))
                }
                changed = pacer.pongs.changed(), if pacer.pongs_open => Event::Pong(changed),
                _ = tick(&mut pacer.ticker) => Event::Tick,
            };
            match event {
                Event::Pong(changed) => pacer.on_pong(changed),
                _ => pacer.on_tick(),
            }
        }
    }
}

/// The heartbeat: when the next ping is due and by when a pong must arrive.
struct Pacer {
    ticker: Option<Interval>,
    timeout: Option<Duration>,
    /// Set when a ping is due and no earlier ping is awaiting its pong.
    deadline: Option<Instant>,
    pongs: watch::Receiver<()>,
    pongs_open: bool,
    ping_due: bool,
}

impl Pacer {
    fn new(heartbeat: Heartbeat, pongs: watch::Receiver<()>) -> Self {
        let ticker = heartbeat.interval.map(|period| {
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        });
        Pacer {
            ticker,
            timeout: heartbeat.timeout,
            deadline: None,
            pongs,
            pongs_open: true,
            ping_due: false,
        }
    }

    /// A ping is due. The pong deadline starts now, even if the ping waits
    /// behind a blocked write: a peer that does not read is not answering.
    fn on_tick(&mut self) {
        self.ping_due = true;
        if let (None, Some(timeout)) = (self.deadline, self.timeout) {
            self.pongs.mark_unchanged();
            self.deadline = Some(Instant::now() + timeout);
        }
    }

    fn on_pong(&mut self, changed: Result<(), RecvError>) {
        match changed {
            Ok(()) => self.deadline = None,
            // The reader is gone; the writer ends when its queues drain.
            Err(_) => self.pongs_open = false,
        }
    }

    fn timed_out(&self) -> WriterEnd {
        WriterEnd::PingTimeout(self.timeout.unwrap_or_default())
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
