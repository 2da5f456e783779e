//! Throughput of one tunnel over loopback: buffered copy vs splice(2) vs no proxy.
//!
//! One connection streams N MiB (default 256) client → target, in-process, on
//! a two-worker runtime. "direct" is the same sender and receiver on one
//! loopback connection with no tunnel in between; "buffered" is
//! `tunnel::splice` and "splice" is `tunnel::splice_tcp` between two loopback
//! connections. Each case runs `ROUNDS` times; the median and best are printed.
//!
//! Run: `cargo bench --bench tunnel_throughput [-- MiB] [direct|buffered|splice]`.

use std::time::{Duration, Instant};

use albatross::tunnel::{splice, splice_tcp, TunnelEnd};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 7;
/// Size of the sender's writes and the receiver's reads.
const IO_SIZE: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Direct,
    Buffered,
    Splice,
}

async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("local addr");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (a, b) = (connected.expect("connect"), accepted.expect("accept").0);
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

/// Streams `total` bytes through `case`; returns the time until the receiver has them all.
async fn run_once(listener: &TcpListener, case: Case, total: usize) -> Duration {
    let (mut sender, mut receiver, tunnel) = match case {
        Case::Direct => {
            let (s, r) = pair(listener).await;
            (s, r, None)
        }
        Case::Buffered | Case::Splice => {
            let (client, proxy_client) = pair(listener).await;
            let (proxy_target, target) = pair(listener).await;
            let idle = Duration::from_secs(60);
            let end = std::sync::Arc::new(albatross::tunnel::TunnelControl::new());
            let task = if case == Case::Splice {
                tokio::spawn(splice_tcp(
                    proxy_client,
                    Bytes::new(),
                    proxy_target,
                    Bytes::new(),
                    idle,
                    end,
                ))
            } else {
                tokio::spawn(splice(
                    proxy_client,
                    Bytes::new(),
                    proxy_target,
                    Bytes::new(),
                    idle,
                    end,
                ))
            };
            (client, target, Some(task))
        }
    };

    let started = Instant::now();
    let send = tokio::spawn(async move {
        let chunk = vec![0x5au8; IO_SIZE];
        let mut left = total;
        while left > 0 {
            let n = left.min(IO_SIZE);
            sender.write_all(&chunk[..n]).await.expect("send");
            left -= n;
        }
        sender.shutdown().await.expect("shutdown");
        sender
    });
    let mut buf = vec![0u8; IO_SIZE];
    let mut got = 0;
    loop {
        let n = receiver.read(&mut buf).await.expect("receive");
        if n == 0 {
            break;
        }
        got += n;
    }
    let elapsed = started.elapsed();
    assert_eq!(got, total, "{case:?}: bytes lost");
    let sender = send.await.expect("sender");

    if let Some(task) = tunnel {
        drop(receiver);
        drop(sender);
        let report = task.await.expect("tunnel");
        assert_eq!(report.client_to_target, total as u64, "{case:?}");
        assert!(
            matches!(
                report.end,
                TunnelEnd::ClientClosed | TunnelEnd::TargetClosed
            ),
            "{case:?}: {:?}",
            report.end
        );
    }
    elapsed
}

async fn run(mib: usize, only: Option<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let total = mib << 20;
    let cases: Vec<Case> = [Case::Direct, Case::Buffered, Case::Splice]
        .into_iter()
        .filter(|case| {
            only.as_ref()
                .is_none_or(|name| format!("{case:?}").eq_ignore_ascii_case(name))
        })
        .collect();
    println!("one connection, {mib} MiB client → target, loopback, {ROUNDS} interleaved rounds");
    // Warm-up round (pools, TCP autotuning), not counted.
    for &case in &cases {
        run_once(&listener, case, total.min(32 << 20)).await;
    }
    // Rounds interleave the cases, so load from elsewhere hits all of them alike.
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, &case) in cases.iter().enumerate() {
            let elapsed = run_once(&listener, case, total).await;
            rates[i].push(total as f64 / 1e6 / elapsed.as_secs_f64());
        }
    }
    let mut direct = f64::NAN;
    for (case, mut rates) in cases.into_iter().zip(rates) {
        rates.sort_by(|a, b| a.total_cmp(b));
        let median = rates[ROUNDS / 2];
        let best = rates[ROUNDS - 1];
        if case == Case::Direct {
            direct = median;
        }
        let ratio = if direct.is_nan() {
            String::new()
        } else {
            format!(" ({:.2}× direct)", median / direct)
        };
        println!(
            "{:>10}: median {median:>6.0} MB/s{ratio}, best {best:>6.0} MB/s",
            format!("{case:?}"),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mib = args.iter().find_map(|arg| arg.parse().ok()).unwrap_or(256);
    let only = args.into_iter().find(|arg| arg.parse::<usize>().is_err());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(mib, only));
}
