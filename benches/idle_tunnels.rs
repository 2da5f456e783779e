//! Heap held per idle tunnel.
//!
//! Opens N loopback tunnels in-process, pushes one byte each way through every
//! tunnel (so each has borrowed and returned a copy buffer), lets them go idle
//! and reports the live heap per tunnel, as counted by a global allocator: the
//! tunnel's future and task, and its entry in a tunnel registry, as the proxy
//! keeps one for every open tunnel. For
//! contrast it then does the same with `tokio::io::copy_bidirectional`. The
//! spliced path (`tunnel::splice_tcp`) is measured the same way; for each it
//! also prints the descriptors open beyond the sockets (pipes an idle tunnel
//! would still hold).
//!
//! Run: `cargo bench --bench idle_tunnels [-- N]` (default N = 2000; each
//! tunnel uses four sockets).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use albatross::tunnel::{
    splice, splice_tcp, CopyPath, EndRequest, NewTunnel, Supervisor, TunnelEnd, TunnelHandle,
    TunnelReport, TunnelTarget, Tunnels,
};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The echo target every tunnel joins.
#[derive(Debug)]
struct EchoTarget(Arc<str>);

impl TunnelTarget for EchoTarget {
    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9))
    }
    fn group(&self) -> &Arc<str> {
        &self.0
    }
    fn key(&self) -> u64 {
        1
    }
}

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Descriptors open in this process.
fn open_fds() -> isize {
    std::fs::read_dir("/proc/self/fd").map_or(-1, |dir| dir.count() as isize)
}

/// The test's client end, the proxy's two sockets, and the test's target end.
struct Legs {
    client: TcpStream,
    proxy_client: TcpStream,
    proxy_target: TcpStream,
    target: TcpStream,
}

async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("local addr");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

async fn legs(listener: &TcpListener) -> Legs {
    let (client, proxy_client) = pair(listener).await;
    let (proxy_target, target) = pair(listener).await;
    Legs {
        client,
        proxy_client,
        proxy_target,
        target,
    }
}

/// One byte each way through every tunnel, then time to park on both reads.
async fn ping(ends: &mut [(TcpStream, TcpStream)]) {
    let mut byte = [0u8; 1];
    for (client, target) in ends.iter_mut() {
        client.write_all(b"c").await.expect("write");
        target.read_exact(&mut byte).await.expect("read");
        target.write_all(b"t").await.expect("write");
        client.read_exact(&mut byte).await.expect("read");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Opens `n` tunnels with `open`, returns the live heap per idle tunnel.
async fn measure<F, Fut>(name: &str, listener: &TcpListener, n: usize, open: F)
where
    F: Fn(TcpStream, TcpStream, Arc<TunnelHandle>) -> Fut,
    Fut: Future<Output = TunnelReport> + Send + 'static,
{
    let tunnels = Arc::new(Tunnels::new());
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(legs(listener).await);
    }
    let mut ends = Vec::with_capacity(n);
    let mut tasks: Vec<JoinHandle<TunnelReport>> = Vec::with_capacity(n);
    let mut future_size = 0;
    let mut registrations = Vec::with_capacity(n);
    // One registered target for every tunnel, as the proxy shares its target's record.
    let target: Arc<dyn TunnelTarget> = Arc::new(EchoTarget(Arc::from("app")));

    // Counted from here: the futures, their tasks, their registry entries and whatever
    // they keep.
    let fds_before = open_fds();
    let before = live();
    let mut futures = Vec::with_capacity(n);
    for legs in all {
        let registration = tunnels.open(NewTunnel {
            listener_port: 443,
            client: legs.client.local_addr().expect("address"),
            target: target.clone(),
            path: CopyPath::Buffered,
        });
        let fut = open(
            legs.proxy_client,
            legs.proxy_target,
            registration.handle().clone(),
        );
        registrations.push(registration);
        future_size = std::mem::size_of_val(&fut);
        futures.push(fut);
        ends.push((legs.client, legs.target));
    }
    for fut in futures {
        tasks.push(tokio::spawn(fut));
    }
    ping(&mut ends).await;
    let held = live() - before;
    let extra_fds = open_fds() - fds_before;

    println!(
        "{name}: {n} idle tunnels: {:.0} B heap per tunnel (task + future, future = {future_size} B); \
         {extra_fds} descriptors beyond the sockets",
        held as f64 / n as f64,
    );

    tunnels.close(EndRequest::Shutdown);
    for task in tasks {
        let report = task.await.expect("tunnel task");
        assert_eq!(report.end, TunnelEnd::Ended(EndRequest::Shutdown), "{name}");
    }
}

async fn run(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");

    // Per-socket cost, for context: four sockets per tunnel, two of them the proxy's.
    let before = live();
    let sample = legs(&listener).await;
    println!(
        "sockets: {} B heap for the 4 tokio TcpStreams of one tunnel (before any tunnel state)",
        live() - before
    );
    drop(sample);

    // Warm the copy-buffer free list so it is not counted per tunnel.
    measure("warm-up", &listener, 1, |c, t, end| {
        splice(
            c,
            Bytes::new(),
            t,
            Bytes::new(),
            Duration::from_secs(600),
            end,
        )
    })
    .await;

    measure("tunnel::splice", &listener, n, |c, t, end| {
        splice(
            c,
            Bytes::new(),
            t,
            Bytes::new(),
            Duration::from_secs(600),
            end,
        )
    })
    .await;

    // splice(2): warm its per-thread pipe pool the same way.
    measure("warm-up", &listener, 1, |c, t, end| {
        splice_tcp(
            c,
            Bytes::new(),
            t,
            Bytes::new(),
            Duration::from_secs(600),
            end,
        )
    })
    .await;

    measure("tunnel::splice_tcp", &listener, n, |c, t, end| {
        splice_tcp(
            c,
            Bytes::new(),
            t,
            Bytes::new(),
            Duration::from_secs(600),
            end,
        )
    })
    .await;

    measure("copy_bidirectional", &listener, n, |mut c, mut t, end| async move {
        tokio::select! {
            res = tokio::io::copy_bidirectional(&mut c, &mut t) => {
                let (up, down) = res.unwrap_or_default();
                TunnelReport { client_to_target: up, target_to_client: down, end: TunnelEnd::ClientClosed }
            }
            why = std::future::poll_fn(|cx| end.poll_end(cx)) => {
                TunnelReport { client_to_target: 0, target_to_client: 0, end: TunnelEnd::Ended(why) }
            }
        }
    })
    .await;
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(2000);
    // One thread, so the buffer free list warmed above is the one every tunnel uses.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(n));
}
