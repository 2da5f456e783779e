//! End-to-end tunnel tests over real loopback sockets.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::{
    pipe, pool, splice, splice_tcp, zero_copy, CopyPath, DisconnectMode, EndRequest, NewTunnel,
    Resettable, Supervisor, TunnelControl, TunnelEnd, TunnelReport, TunnelTarget, Tunnels,
};

mod tls;

/// Which tunnel implementation a real-TCP test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// [`splice`]: copies through pooled user-space buffers.
    Buffered,
    /// [`splice_tcp`]: splice(2) through pooled kernel pipes.
    Spliced,
}

/// Runs the test function `name(Path)` once per path, as `name::buffered` and
/// `name::spliced` (on a current-thread runtime, so the per-thread pools and
/// their loan counters are the ones the tunnel uses).
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Path;

            #[tokio::test]
            async fn buffered() {
                super::$name(Path::Buffered).await
            }

            #[tokio::test]
            async fn spliced() {
                super::$name(Path::Spliced).await
            }
        }
    )*};
}

on_both_paths!(
    bytes_flow_both_ways_with_prefixes_first,
    one_mib_each_way_concurrently_without_deadlock,
    sixteen_mib_each_way_concurrently,
    client_half_close_reaches_target_and_replies_still_flow,
    target_half_close_first_reports_target_closed,
    idle_timeout_closes_both_sides_with_eof,
    client_to_target_activity_keeps_tunnel_open,
    target_to_client_activity_keeps_tunnel_open,
    target_reset_closes_client_and_reports_target_error,
    client_reset_closes_target_and_reports_client_error,
    end_request_closes_both_sides,
    idle_tunnel_holds_no_copy_buffer_or_pipe,
    closing_disconnects_send_a_fin_both_ways,
    reset_disconnect_resets_both_sides,
    network_drop_delivers_nothing_then_closes_with_fins_after_the_idle_timeout,
    a_dropped_tunnel_can_still_be_reset,
    progress_is_published_to_the_registry,
);

/// Upper bound for anything a test waits on, so a bug fails instead of hanging.
pub(super) const LIMIT: Duration = Duration::from_secs(20);
/// Slack allowed past an idle timeout on a busy 2-core machine.
pub(super) const MARGIN: Duration = Duration::from_secs(2);

/// Both ends of a connected loopback TCP pair.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

/// A running tunnel and the test's two far ends.
struct Tunnel {
    /// The client's own socket (what a browser would hold).
    client: TcpStream,
    /// The target's own socket (what the backend would hold).
    target: TcpStream,
    control: Arc<TunnelControl>,
    task: JoinHandle<TunnelReport>,
}

impl Tunnel {
    async fn start(
        path: Path,
        client_prefix: &'static [u8],
        target_prefix: &'static [u8],
        idle: Duration,
    ) -> Self {
        let (client, proxy_client) = tcp_pair().await;
        let (proxy_target, target) = tcp_pair().await;
        let control = Arc::new(TunnelControl::new());
        let (client_prefix, target_prefix) = (
            Bytes::from_static(client_prefix),
            Bytes::from_static(target_prefix),
        );
        let task = spawn_tunnel(
            path,
            proxy_client,
            client_prefix,
            proxy_target,
            target_prefix,
            idle,
            control.clone(),
        );
        Tunnel {
            client,
            target,
            control,
            task,
        }
    }
}

/// The tunnel of `path` between the proxy's two sockets, as a task.
fn spawn_tunnel<E: Supervisor + Send + 'static>(
    path: Path,
    proxy_client: TcpStream,
    client_prefix: Bytes,
    proxy_target: TcpStream,
    target_prefix: Bytes,
    idle: Duration,
    end: E,
) -> JoinHandle<TunnelReport> {
    match path {
        Path::Buffered => tokio::spawn(splice(
            proxy_client,
            client_prefix,
            proxy_target,
            target_prefix,
            idle,
            end,
        )),
        Path::Spliced => tokio::spawn(splice_tcp(
            proxy_client,
            client_prefix,
            proxy_target,
            target_prefix,
            idle,
            end,
        )),
    }
}

async fn report(task: JoinHandle<TunnelReport>) -> TunnelReport {
    timeout(LIMIT, task)
        .await
        .expect("tunnel did not end")
        .expect("tunnel task panicked")
}

async fn read_exact_n<R: AsyncRead + Unpin>(reader: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(LIMIT, reader.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

/// Reads until EOF; an error (e.g. a reset) counts as the end too.
async fn read_to_eof<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    timeout(LIMIT, reader.read_to_end(&mut buf))
        .await
        .expect("no EOF")?;
    Ok(buf)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn bytes_flow_both_ways_with_prefixes_first(path: Path) {
    let mut t = Tunnel::start(
        path,
        b"early-client ",
        b"early-target ",
        Duration::from_secs(30),
    )
    .await;
    t.client.write_all(b"hello").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 18).await, b"early-client hello");
    t.target.write_all(b"world").await.unwrap();
    assert_eq!(read_exact_n(&mut t.client, 18).await, b"early-target world");

    close_client_then_target(&mut t).await;

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (18, 18));
}

/// Both sides write `len` bytes before reading anything back; both arrive
/// intact and counted.
async fn each_way_concurrently(path: Path, len: usize) {
    let pipes_before = pipe::taken_on_this_thread();
    let t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    let (mut client_rd, mut client_wr) = t.client.into_split();
    let (mut target_rd, mut target_wr) = t.target.into_split();
    let up = pattern(len, 1);
    let down = pattern(len, 2);

    let up_writer = tokio::spawn({
        let up = up.clone();
        async move {
            client_wr.write_all(&up).await.unwrap();
            client_wr.shutdown().await.unwrap();
        }
    });
    let down_writer = tokio::spawn({
        let down = down.clone();
        async move {
            target_wr.write_all(&down).await.unwrap();
            target_wr.shutdown().await.unwrap();
        }
    });
    let (got_up, got_down) = tokio::join!(read_to_eof(&mut target_rd), read_to_eof(&mut client_rd));
    assert!(got_up.unwrap() == up, "client → target bytes differ");
    assert!(got_down.unwrap() == down, "target → client bytes differ");
    up_writer.await.unwrap();
    down_writer.await.unwrap();

    let r = report(t.task).await;
    assert!(matches!(
        r.end,
        TunnelEnd::ClientClosed | TunnelEnd::TargetClosed
    ));
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (len as u64, len as u64)
    );
    let pipes_taken = pipe::taken_on_this_thread() - pipes_before;
    match path {
        Path::Buffered => assert_eq!(pipes_taken, 0),
        Path::Spliced => assert!(pipes_taken > 0, "the spliced path took no pipe"),
    }
}

async fn one_mib_each_way_concurrently_without_deadlock(path: Path) {
    each_way_concurrently(path, 1 << 20).await;
}

async fn sixteen_mib_each_way_concurrently(path: Path) {
    each_way_concurrently(path, 16 << 20).await;
}

/// The client closes, the target sees EOF with nothing left to read and closes too,
/// and the client sees EOF.
async fn close_client_then_target(t: &mut Tunnel) {
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"");
    t.target.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.client).await.unwrap(), b"");
}

/// The target, having seen the client's EOF, still answers (15 bytes) and closes; the
/// client reads the answer to its EOF.
async fn reply_after_eof(t: &mut Tunnel) {
    t.target.write_all(b"reply after EOF").await.unwrap();
    t.target.shutdown().await.unwrap();
    assert_eq!(
        read_to_eof(&mut t.client).await.unwrap(),
        b"reply after EOF"
    );
}

async fn client_half_close_reaches_target_and_replies_still_flow(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.client.write_all(b"request").await.unwrap();
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"request");

    reply_after_eof(&mut t).await;

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (7, 15));
}

async fn target_half_close_first_reports_target_closed(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.target.write_all(b"bye").await.unwrap();
    t.target.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.client).await.unwrap(), b"bye");
    t.client.write_all(b"ok").await.unwrap();
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"ok");

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::TargetClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (2, 3));
}

async fn idle_timeout_closes_both_sides_with_eof(path: Path) {
    let idle = Duration::from_millis(250);
    let started = Instant::now();
    let mut t = Tunnel::start(path, b"", b"", idle).await;
    let (client_end, target_end) =
        tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
    let elapsed = started.elapsed();
    assert_eq!(client_end.unwrap(), b"", "client must see a clean EOF");
    assert_eq!(target_end.unwrap(), b"", "target must see a clean EOF");
    assert!(
        elapsed >= idle,
        "closed after {elapsed:?}, before the idle timeout"
    );
    assert!(elapsed < idle + MARGIN, "closed only after {elapsed:?}");

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::IdleTimeout);
    assert_eq!((r.client_to_target, r.target_to_client), (0, 0));
}

/// Sends one byte every `idle / 3` for `3 * idle` from `sender` to `receiver`,
/// then stays silent; the tunnel must survive the traffic and close after it.
async fn activity_keeps_tunnel_open(
    sender: &mut TcpStream,
    receiver: &mut TcpStream,
    idle: Duration,
) {
    let started = Instant::now();
    let mut last_sent = started;
    let mut tick = tokio::time::interval(idle / 3);
    for _ in 0..10 {
        tick.tick().await;
        last_sent = Instant::now();
        sender.write_all(b"x").await.unwrap();
        assert_eq!(read_exact_n(receiver, 1).await, b"x");
    }
    assert!(started.elapsed() >= idle * 3);

    let (a, b) = tokio::join!(read_to_eof(sender), read_to_eof(receiver));
    let silent = last_sent.elapsed();
    assert_eq!((a.unwrap(), b.unwrap()), (Vec::new(), Vec::new()));
    assert!(silent >= idle, "closed {silent:?} after the last byte");
    assert!(
        silent < idle + MARGIN,
        "closed only {silent:?} after the last byte"
    );
}

async fn client_to_target_activity_keeps_tunnel_open(path: Path) {
    let idle = Duration::from_millis(300);
    let mut t = Tunnel::start(path, b"", b"", idle).await;
    activity_keeps_tunnel_open(&mut t.client, &mut t.target, idle).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::IdleTimeout);
    assert_eq!((r.client_to_target, r.target_to_client), (10, 0));
}

async fn target_to_client_activity_keeps_tunnel_open(path: Path) {
    let idle = Duration::from_millis(300);
    let mut t = Tunnel::start(path, b"", b"", idle).await;
    activity_keeps_tunnel_open(&mut t.target, &mut t.client, idle).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::IdleTimeout);
    assert_eq!((r.client_to_target, r.target_to_client), (0, 10));
}

fn reset_on_drop(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

async fn target_reset_closes_client_and_reports_target_error(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.target.write_all(b"partial").await.unwrap();
    assert_eq!(read_exact_n(&mut t.client, 7).await, b"partial");
    reset_on_drop(&t.target);
    drop(t.target);

    assert_eq!(
        read_to_eof(&mut t.client).await.unwrap(),
        b"",
        "client must see EOF"
    );
    let r = report(t.task).await;
    assert_eq!(
        r.end,
        TunnelEnd::TargetError(io::ErrorKind::ConnectionReset)
    );
    assert_eq!((r.client_to_target, r.target_to_client), (0, 7));
}

async fn client_reset_closes_target_and_reports_client_error(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    reset_on_drop(&t.client);
    drop(t.client);

    assert_eq!(
        read_to_eof(&mut t.target).await.unwrap(),
        b"",
        "target must see EOF"
    );
    let r = report(t.task).await;
    assert_eq!(
        r.end,
        TunnelEnd::ClientError(io::ErrorKind::ConnectionReset)
    );
}

async fn end_request_closes_both_sides(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 4).await, b"ping");
    t.control.end(EndRequest::Shutdown);

    let (client_end, target_end) =
        tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
    assert_eq!(client_end.unwrap(), b"");
    assert_eq!(target_end.unwrap(), b"");
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::Ended(EndRequest::Shutdown));
    assert_eq!((r.client_to_target, r.target_to_client), (4, 0));
}

/// On a current-thread runtime every buffer and pipe is taken and returned on
/// this thread, so the loan counts show whether an idle tunnel still holds one.
async fn idle_tunnel_holds_no_copy_buffer_or_pipe(path: Path) {
    let lent_before = pool::lent_on_this_thread();
    let pipes_before = pipe::lent_on_this_thread();
    let mut t = Tunnel::start(path, b"prefix", b"", Duration::from_secs(30)).await;
    let big = pattern(300 * 1024, 3);
    let (sent, got) = tokio::join!(
        t.client.write_all(&big),
        read_exact_n(&mut t.target, 6 + big.len())
    );
    sent.unwrap();
    assert!(got[6..] == big[..]);
    t.target.write_all(b"back").await.unwrap();
    assert_eq!(read_exact_n(&mut t.client, 4).await, b"back");
    // Let the tunnel task run until it parks on both reads.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pool::lent_on_this_thread(),
        lent_before,
        "idle tunnel holds a buffer"
    );
    assert_eq!(
        pipe::lent_on_this_thread(),
        pipes_before,
        "idle tunnel holds a pipe"
    );

    // Traffic again after idling takes a pipe again and gives it back.
    t.client.write_all(b"again").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 5).await, b"again");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pipe::lent_on_this_thread(), pipes_before);

    t.control.end(EndRequest::Shutdown);
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::Ended(EndRequest::Shutdown));
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (6 + 300 * 1024 + 5, 4)
    );
    assert_eq!(pool::lent_on_this_thread(), lent_before);
    assert_eq!(pipe::lent_on_this_thread(), pipes_before);
}

/// Where splice(2) is refused (`EINVAL`), the spliced tunnel copies through
/// user space instead, without losing or reordering a byte.
#[tokio::test]
async fn spliced_tunnel_falls_back_to_buffered_when_splice_is_unsupported() {
    pipe::pretend_unsupported(true);
    let switches = zero_copy::switches_on_this_thread();
    let mut t = Tunnel::start(Path::Spliced, b"pre ", b"", Duration::from_secs(30)).await;
    let payload = pattern(200 * 1024, 5);
    let (sent, got) = tokio::join!(
        t.client.write_all(&payload),
        read_exact_n(&mut t.target, 4 + payload.len())
    );
    sent.unwrap();
    assert_eq!(&got[..4], b"pre ");
    assert!(got[4..] == payload[..]);
    // The bulk did try splice (and was refused), and never switched back.
    assert_eq!(switches_since(switches), (1, 0));
    t.target.write_all(b"pong").await.unwrap();
    t.target.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.client).await.unwrap(), b"pong");
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"");
    pipe::pretend_unsupported(false);

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::TargetClosed);
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (4 + payload.len() as u64, 4)
    );
}

/// The target reads nothing while the client keeps sending: the spliced
/// direction holds its full pipe, the idle clock keeps running as for the
/// buffered path, and an end request closes the pipe instead of pooling it.
#[tokio::test]
async fn spliced_tunnel_with_a_stalled_target_closes_its_full_pipe() {
    let pipes_before = pipe::lent_on_this_thread();
    let t = Tunnel::start(Path::Spliced, b"", b"", Duration::from_secs(30)).await;
    let (_client_rd, mut client_wr) = t.client.into_split();
    let chunk = pattern(64 * 1024, 6);
    // Fill the client → target path until writes stop making progress.
    while let Ok(res) = timeout(Duration::from_millis(300), client_wr.write_all(&chunk)).await {
        res.unwrap();
    }
    assert_eq!(pipe::lent_on_this_thread(), pipes_before + 1);
    t.control.end(EndRequest::Shutdown);
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::Ended(EndRequest::Shutdown));
    assert_eq!(pipe::lent_on_this_thread(), pipes_before);
    drop(t.target);
}

#[tokio::test]
async fn works_over_non_tcp_streams() {
    let (mut client, proxy_client) = tokio::io::duplex(1024);
    let (proxy_target, mut target) = tokio::io::duplex(1024);
    let task = tokio::spawn(splice(
        proxy_client,
        Bytes::new(),
        proxy_target,
        Bytes::from_static(b"101-tail "),
        Duration::from_secs(30),
        Arc::new(TunnelControl::new()),
    ));
    let payload = pattern(64 * 1024, 4);
    let (sent, got) = tokio::join!(
        client.write_all(&payload),
        read_exact_n(&mut target, payload.len())
    );
    sent.unwrap();
    assert!(got == payload);
    target.write_all(b"done").await.unwrap();
    target.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut client).await.unwrap(), b"101-tail done");
    client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut target).await.unwrap(), b"");

    let r = report(task).await;
    assert_eq!(r.end, TunnelEnd::TargetClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (64 * 1024, 13));
}

/// Switches copy → splice and splice → copy made since `before`.
fn switches_since(before: (u64, u64)) -> (u64, u64) {
    let now = zero_copy::switches_on_this_thread();
    (now.0 - before.0, now.1 - before.1)
}

/// `count` messages of `len` bytes, each echoed by the target before the next
/// is sent (so the proxy never sees two at once), as a chat or ping would.
async fn ping_pong(t: &mut Tunnel, count: usize, len: usize, seed: u8) {
    for i in 0..count {
        let msg = pattern(len, seed.wrapping_add(i as u8));
        t.client.write_all(&msg).await.unwrap();
        let got = read_exact_n(&mut t.target, len).await;
        assert!(got == msg, "message {i} client → target differs");
        t.target.write_all(&got).await.unwrap();
        let back = read_exact_n(&mut t.client, len).await;
        assert!(back == msg, "message {i} target → client differs");
    }
}

/// Sends `len` bytes client → target while the target reads them.
async fn bulk_up(t: &mut Tunnel, len: usize, seed: u8) {
    let payload = pattern(len, seed);
    let (sent, got) = tokio::join!(
        t.client.write_all(&payload),
        read_exact_n(&mut t.target, len)
    );
    sent.unwrap();
    assert!(got == payload, "bulk bytes client → target differ");
}

/// Small messages are recv'd and sent through the copy buffer: no pipe is
/// ever taken and no direction switches to splice.
#[tokio::test]
async fn adaptive_small_writes_stay_in_copy_mode_and_arrive_intact() {
    let pipes_before = pipe::taken_on_this_thread();
    let switches = zero_copy::switches_on_this_thread();
    let mut t = Tunnel::start(Path::Spliced, b"pre ", b"", Duration::from_secs(30)).await;
    assert_eq!(read_exact_n(&mut t.target, 4).await, b"pre ");
    ping_pong(&mut t, 200, 64, 7).await;
    ping_pong(&mut t, 20, 4000, 8).await;
    assert_eq!(
        pipe::taken_on_this_thread(),
        pipes_before,
        "a pipe was taken"
    );
    assert_eq!(switches_since(switches), (0, 0));

    t.control.end(EndRequest::Shutdown);
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::Ended(EndRequest::Shutdown));
    let small = 200 * 64 + 20 * 4000;
    assert_eq!((r.client_to_target, r.target_to_client), (4 + small, small));
}

/// A bulk stream (8 MiB) fills the copy buffer, switches to splice, and
/// arrives byte for byte.
#[tokio::test]
async fn adaptive_bulk_stream_switches_to_splice_and_arrives_intact() {
    let pipes_before = pipe::taken_on_this_thread();
    let switches = zero_copy::switches_on_this_thread();
    let mut t = Tunnel::start(Path::Spliced, b"pre ", b"", Duration::from_secs(30)).await;
    let len = 8 << 20;
    let payload = pattern(len, 9);
    let (sent, got) = tokio::join!(
        t.client.write_all(&payload),
        read_exact_n(&mut t.target, 4 + len)
    );
    sent.unwrap();
    assert_eq!(&got[..4], b"pre ");
    assert!(got[4..] == payload[..], "bulk bytes differ");
    assert!(
        switches_since(switches).0 >= 1,
        "the bulk stream never switched to splice"
    );
    assert!(pipe::taken_on_this_thread() > pipes_before, "no pipe taken");

    close_client_then_target(&mut t).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (4 + len as u64, 0)
    );
}

/// Small, then bulk, then small again: the direction switches to splice for
/// the bulk, back to copy after a run of small messages (after which no pipe
/// is taken), and then to splice again for the next bulk; every byte arrives
/// in order and is counted.
#[tokio::test]
async fn adaptive_small_then_bulk_then_small_switches_both_ways() {
    let runs = zero_copy::COPY_AFTER_SMALL_FILLS as usize;
    let mut t = Tunnel::start(Path::Spliced, b"", b"", Duration::from_secs(30)).await;
    let switches = zero_copy::switches_on_this_thread();
    ping_pong(&mut t, 50, 64, 1).await;
    assert_eq!(switches_since(switches), (0, 0), "small messages switched");

    let switches = zero_copy::switches_on_this_thread();
    bulk_up(&mut t, 4 << 20, 2).await;
    assert!(
        switches_since(switches).0 >= 1,
        "bulk did not switch to splice"
    );

    // A run of small messages brings the direction back to copy mode...
    let switches = zero_copy::switches_on_this_thread();
    ping_pong(&mut t, 2 * runs, 64, 3).await;
    assert_eq!(switches_since(switches), (0, 1), "no switch back to copy");
    // ... where small messages take no pipe.
    let pipes = pipe::taken_on_this_thread();
    ping_pong(&mut t, 50, 100, 4).await;
    assert_eq!(pipe::taken_on_this_thread(), pipes, "copy mode took a pipe");

    let switches = zero_copy::switches_on_this_thread();
    bulk_up(&mut t, 2 << 20, 5).await;
    assert!(
        switches_since(switches).0 >= 1,
        "second bulk did not splice"
    );
    ping_pong(&mut t, 5, 64, 6).await;

    close_client_then_target(&mut t).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    let small_up = (50 + 2 * runs as u64 + 5) * 64 + 50 * 100;
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (small_up + (4 << 20) + (2 << 20), small_up)
    );
}

/// EOF in copy mode: the FIN reaches the target after the last small
/// message, and replies still flow.
#[tokio::test]
async fn adaptive_half_close_in_copy_mode() {
    let switches = zero_copy::switches_on_this_thread();
    let mut t = Tunnel::start(Path::Spliced, b"", b"", Duration::from_secs(30)).await;
    ping_pong(&mut t, 3, 64, 1).await;
    t.client.write_all(b"last words").await.unwrap();
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"last words");
    reply_after_eof(&mut t).await;
    assert_eq!(switches_since(switches), (0, 0));

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!(
        (r.client_to_target, r.target_to_client),
        (3 * 64 + 10, 3 * 64 + 15)
    );
}

/// EOF in splice mode: a bulk stream followed at once by a FIN arrives whole,
/// then the FIN; the other direction still flows.
#[tokio::test]
async fn adaptive_half_close_in_splice_mode() {
    let switches = zero_copy::switches_on_this_thread();
    let mut t = Tunnel::start(Path::Spliced, b"", b"", Duration::from_secs(30)).await;
    let len = 3 << 20;
    let payload = pattern(len, 11);
    let client = &mut t.client;
    let (sent, got) = tokio::join!(
        async {
            client.write_all(&payload).await?;
            client.shutdown().await
        },
        read_to_eof(&mut t.target)
    );
    sent.unwrap();
    assert!(got.unwrap() == payload, "bulk bytes before EOF differ");
    assert_eq!(
        switches_since(switches).0,
        1,
        "bulk did not switch to splice"
    );

    reply_after_eof(&mut t).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (len as u64, 15));
}

/// Test streams that are no sockets close as they always do.
impl Resettable for tokio::io::DuplexStream {
    fn reset_on_close(&self) {}
}

/// `client_close`, `idle_timeout` and `target_close` close both connections with a FIN,
/// whatever still waits unread on them, and report the mode.
async fn closing_disconnects_send_a_fin_both_ways(path: Path) {
    for mode in [
        DisconnectMode::ClientClose,
        DisconnectMode::IdleTimeout,
        DisconnectMode::TargetClose,
    ] {
        let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
        t.client.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact_n(&mut t.target, 4).await, b"ping");
        t.target.write_all(b"pong").await.unwrap();
        assert_eq!(read_exact_n(&mut t.client, 4).await, b"pong");
        assert!(t.control.end(EndRequest::Disconnect(mode)));

        let (client_end, target_end) =
            tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
        assert_eq!(client_end.unwrap(), b"", "{mode}: the client got no FIN");
        assert_eq!(target_end.unwrap(), b"", "{mode}: the target got no FIN");
        let r = report(t.task).await;
        assert_eq!(r.end, TunnelEnd::Ended(EndRequest::Disconnect(mode)));
        assert_eq!((r.client_to_target, r.target_to_client), (4, 4));
    }
}

/// Both far ends read an RST.
async fn both_reset(t: &mut Tunnel) {
    let (client_end, target_end) =
        tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
    for (side, end) in [("client", client_end), ("target", target_end)] {
        let kind = end.map_err(|e| e.kind());
        assert_eq!(kind, Err(io::ErrorKind::ConnectionReset), "{side}");
    }
}

async fn reset_disconnect_resets_both_sides(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 4).await, b"ping");
    t.control.end(EndRequest::Disconnect(DisconnectMode::Reset));

    both_reset(&mut t).await;
    let r = report(t.task).await;
    assert_eq!(
        r.end,
        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::Reset))
    );
}

/// After a drop, bytes either side sends go nowhere and nothing answers them; a side
/// that hangs up is not heard by the other; once the idle timeout has passed since the
/// drop, what is left is closed with a FIN (not an RST, though bytes wait unread).
async fn network_drop_delivers_nothing_then_closes_with_fins_after_the_idle_timeout(path: Path) {
    let idle = Duration::from_millis(600);
    let mut t = Tunnel::start(path, b"", b"", idle).await;
    t.client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 4).await, b"ping");
    let dropped = Instant::now();
    assert!(t
        .control
        .end(EndRequest::Disconnect(DisconnectMode::NetworkDrop)));

    t.client.write_all(b"lost").await.unwrap();
    t.target.write_all(b"lost too").await.unwrap();
    // The target hangs up its sending side: the client must not hear it.
    t.target.shutdown().await.unwrap();
    let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
    let quiet = idle / 2;
    let (client_heard, target_heard) = tokio::join!(
        timeout(quiet, t.client.read(&mut a)),
        timeout(quiet, t.target.read(&mut b)),
    );
    assert!(client_heard.is_err(), "the client heard {client_heard:?}");
    assert!(target_heard.is_err(), "the target heard {target_heard:?}");

    let (client_end, target_end) =
        tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
    assert_eq!(client_end.unwrap(), b"", "the client got no FIN");
    assert_eq!(target_end.unwrap(), b"", "the target got no FIN");
    assert!(
        dropped.elapsed() >= idle,
        "closed after {:?}",
        dropped.elapsed()
    );
    let r = report(t.task).await;
    assert_eq!(
        r.end,
        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::NetworkDrop))
    );
    assert_eq!((r.client_to_target, r.target_to_client), (4, 0));
}

/// A later disconnect replaces a drop (here a reset, long before the idle timeout); the
/// tunnel still reports the drop as how it ended.
async fn a_dropped_tunnel_can_still_be_reset(path: Path) {
    let mut t = Tunnel::start(path, b"", b"", Duration::from_secs(30)).await;
    t.control
        .end(EndRequest::Disconnect(DisconnectMode::NetworkDrop));
    t.client.write_all(b"lost").await.unwrap();
    tokio::task::yield_now().await;
    assert!(t.control.end(EndRequest::Disconnect(DisconnectMode::Reset)));
    both_reset(&mut t).await;
    let r = report(t.task).await;
    assert_eq!(
        r.end,
        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::NetworkDrop))
    );
}

#[derive(Debug)]
struct AnyTarget(Arc<str>);

impl TunnelTarget for AnyTarget {
    fn addr(&self) -> std::net::SocketAddr {
        "127.0.0.1:9001".parse().unwrap()
    }
    fn group(&self) -> &Arc<str> {
        &self.0
    }
    fn key(&self) -> u64 {
        1
    }
}

/// A registered tunnel's listing shows the bytes moved so far and how long it has been
/// idle; a disconnect through the registry ends it.
async fn progress_is_published_to_the_registry(path: Path) {
    let tunnels = Arc::new(Tunnels::new());
    let registration = tunnels.open(NewTunnel {
        listener_port: 80,
        client: "127.0.0.1:50000".parse().unwrap(),
        target: Arc::new(AnyTarget(Arc::from("app"))),
        path: CopyPath::Splice,
    });
    let handle = registration.handle().clone();
    let (mut client, proxy_client) = tcp_pair().await;
    let (proxy_target, mut target) = tcp_pair().await;
    let task = spawn_tunnel(
        path,
        proxy_client,
        Bytes::from_static(b"ab"),
        proxy_target,
        Bytes::new(),
        Duration::from_secs(30),
        handle.clone(),
    );
    client.write_all(&pattern(5000, 1)).await.unwrap();
    assert_eq!(read_exact_n(&mut target, 5002).await.len(), 5002);
    target.write_all(b"pong").await.unwrap();
    assert_eq!(read_exact_n(&mut client, 4).await, b"pong");
    // The tunnel publishes after its writes, which the reads above may overtake.
    let deadline = Instant::now() + LIMIT;
    let info = loop {
        let info = handle.info();
        if (info.bytes_from_client, info.bytes_to_client) == (5002, 4) {
            break info;
        }
        assert!(Instant::now() < deadline, "listed {info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(info.idle_for < Duration::from_secs(5), "{info:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(handle.info().idle_for >= Duration::from_millis(300));

    let listed = tunnels
        .disconnect(handle.id(), DisconnectMode::ClientClose)
        .expect("the tunnel is listed");
    assert_eq!(listed.bytes_from_client, 5002);
    let r = report(task).await;
    assert_eq!(
        r.end,
        TunnelEnd::Ended(EndRequest::Disconnect(DisconnectMode::ClientClose))
    );
    let record = registration.finish(r);
    assert_eq!(record.cause.as_str(), "disconnect_client_close");
    assert!(tunnels
        .disconnect(handle.id(), DisconnectMode::Reset)
        .is_none());
}
