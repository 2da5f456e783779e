//! End-to-end tunnel tests over real loopback sockets.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::{pool, splice, TunnelEnd, TunnelReport};

mod tls;

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
    cancel: CancellationToken,
    task: JoinHandle<TunnelReport>,
}

impl Tunnel {
    async fn start(
        client_prefix: &'static [u8],
        target_prefix: &'static [u8],
        idle: Duration,
    ) -> Self {
        let (client, proxy_client) = tcp_pair().await;
        let (proxy_target, target) = tcp_pair().await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(splice(
            proxy_client,
            Bytes::from_static(client_prefix),
            proxy_target,
            Bytes::from_static(target_prefix),
            idle,
            cancel.clone(),
        ));
        Tunnel {
            client,
            target,
            cancel,
            task,
        }
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

#[tokio::test]
async fn bytes_flow_both_ways_with_prefixes_first() {
    let mut t = Tunnel::start(b"early-client ", b"early-target ", Duration::from_secs(30)).await;
    t.client.write_all(b"hello").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 18).await, b"early-client hello");
    t.target.write_all(b"world").await.unwrap();
    assert_eq!(read_exact_n(&mut t.client, 18).await, b"early-target world");

    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"");
    t.target.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.client).await.unwrap(), b"");

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (18, 18));
}

#[tokio::test]
async fn one_mib_each_way_concurrently_without_deadlock() {
    const LEN: usize = 1 << 20;
    let t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
    let (mut client_rd, mut client_wr) = t.client.into_split();
    let (mut target_rd, mut target_wr) = t.target.into_split();
    let up = pattern(LEN, 1);
    let down = pattern(LEN, 2);

    // Both sides write everything before reading anything back.
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
        (LEN as u64, LEN as u64)
    );
}

#[tokio::test]
async fn client_half_close_reaches_target_and_replies_still_flow() {
    let mut t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
    t.client.write_all(b"request").await.unwrap();
    t.client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut t.target).await.unwrap(), b"request");

    // The target saw EOF but can still answer.
    t.target.write_all(b"reply after EOF").await.unwrap();
    t.target.shutdown().await.unwrap();
    assert_eq!(
        read_to_eof(&mut t.client).await.unwrap(),
        b"reply after EOF"
    );

    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::ClientClosed);
    assert_eq!((r.client_to_target, r.target_to_client), (7, 15));
}

#[tokio::test]
async fn target_half_close_first_reports_target_closed() {
    let mut t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
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

#[tokio::test]
async fn idle_timeout_closes_both_sides_with_eof() {
    let idle = Duration::from_millis(250);
    let started = Instant::now();
    let mut t = Tunnel::start(b"", b"", idle).await;
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

#[tokio::test]
async fn client_to_target_activity_keeps_tunnel_open() {
    let idle = Duration::from_millis(300);
    let mut t = Tunnel::start(b"", b"", idle).await;
    activity_keeps_tunnel_open(&mut t.client, &mut t.target, idle).await;
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::IdleTimeout);
    assert_eq!((r.client_to_target, r.target_to_client), (10, 0));
}

#[tokio::test]
async fn target_to_client_activity_keeps_tunnel_open() {
    let idle = Duration::from_millis(300);
    let mut t = Tunnel::start(b"", b"", idle).await;
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

#[tokio::test]
async fn target_reset_closes_client_and_reports_target_error() {
    let mut t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
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

#[tokio::test]
async fn client_reset_closes_target_and_reports_client_error() {
    let mut t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
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

#[tokio::test]
async fn cancel_closes_both_sides() {
    let mut t = Tunnel::start(b"", b"", Duration::from_secs(30)).await;
    t.client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_n(&mut t.target, 4).await, b"ping");
    t.cancel.cancel();

    let (client_end, target_end) =
        tokio::join!(read_to_eof(&mut t.client), read_to_eof(&mut t.target));
    assert_eq!(client_end.unwrap(), b"");
    assert_eq!(target_end.unwrap(), b"");
    let r = report(t.task).await;
    assert_eq!(r.end, TunnelEnd::Cancelled);
    assert_eq!((r.client_to_target, r.target_to_client), (4, 0));
}

/// On a current-thread runtime every buffer is taken and returned on this
/// thread, so the loan count shows whether an idle tunnel still holds one.
#[tokio::test(flavor = "current_thread")]
async fn idle_tunnel_holds_no_copy_buffer() {
    let lent_before = pool::lent_on_this_thread();
    let mut t = Tunnel::start(b"prefix", b"", Duration::from_secs(30)).await;
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

    t.cancel.cancel();
    assert_eq!(report(t.task).await.end, TunnelEnd::Cancelled);
    assert_eq!(pool::lent_on_this_thread(), lent_before);
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
        CancellationToken::new(),
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
