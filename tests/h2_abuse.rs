//! HTTP/2 abuse affects only the abuser: a client that opens and resets streams as fast
//! as it can (CVE-2023-44487, "rapid reset"), one that floods PING frames without
//! reading the answers, and one that opens its 128 streams and stalls them. Meanwhile
//! another client's requests are timed against the same requests on a quiet proxy.
//!
//! The abusers run on a thread and runtime of their own, so that they compete with the
//! proxy only for the CPU, as a remote client would.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// `/upload` goes to `silent` (a target that never answers), the rest to `app`.
fn config(
    cert: &(std::path::PathBuf, std::path::PathBuf, Vec<u8>),
    app: SocketAddr,
    silent: SocketAddr,
) -> String {
    format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{}", key = "{}" }} ]
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 1
conditions = [ {{ path_pattern = ["/upload"] }} ]
action = {{ type = "forward", target_group = "silent" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]

[[target_group]]
name = "silent"
targets = [ "{silent}" ]
"#,
        cert.0.display(),
        cert.1.display()
    )
}

fn get() -> http::Request<()> {
    http::Request::builder()
        .uri("https://localhost/ok")
        .body(())
        .unwrap()
}

/// The median time of `n` sequential requests on one connection.
async fn median_latency(client: &mut h2::client::SendRequest<Bytes>, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (resp, _) = within("ready", client.clone().ready())
            .await
            .unwrap()
            .send_request(get(), true)
            .unwrap();
        let resp = within("a normal client's response", resp).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        while let Some(chunk) = within("body", body.data()).await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// Run `abuse` on a thread and runtime of its own; returns its handle.
fn on_own_thread<F, T>(abuse: F) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(abuse)
    })
}

struct Setup {
    pki: Pki,
    addr: SocketAddr,
    _proxy: albatross::ProxyHandle,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let cert = pki.leaf("localhost", &["localhost"]);
    let app = echo_head_target().await;
    let silent = silent_target().await;
    let proxy = start_proxy(&pki, &config(&cert, app, silent)).await;
    Setup {
        addr: proxy.listener_addr(0),
        _proxy: proxy,
        pki,
    }
}

/// The normal client's median latency while the abuse `start` starts runs, against the
/// quiet figure taken before it.
async fn while_abused(
    s: &Setup,
    what: &str,
    start: impl FnOnce() -> std::thread::JoinHandle<String>,
) -> String {
    let mut normal = h2_client(&s.pki, s.addr).await;
    let quiet = median_latency(&mut normal, 50).await;
    let abuse = start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = median_latency(&mut normal, 50).await;
    let outcome = abuse.join().expect("the abuser's thread");
    eprintln!("{what}: {outcome}; normal client's median {quiet:?} quiet, {during:?} during");
    // A small factor, with a floor for timer and scheduling noise on a loaded machine.
    let bound = (quiet * 10).max(Duration::from_millis(25));
    assert!(
        during <= bound,
        "{what}: a normal client's median went from {quiet:?} to {during:?} ({outcome})"
    );
    // And the proxy still takes new connections.
    let mut fresh = h2_client(&s.pki, s.addr).await;
    median_latency(&mut fresh, 3).await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_affects_only_the_abuser() {
    let s = setup().await;
    let (pki_dir, addr) = (s.pki.dir.path().to_path_buf(), s.addr);
    let client_config = s.pki.client_config(&[b"h2"]);
    let start = move || {
        on_own_thread(async move {
            let _ = pki_dir;
            // Reconnect as soon as cut off, for 2 s, as an attacker would.
            let started = Instant::now();
            let (mut connections, mut streams, mut cut_off) = (0u32, 0u32, Vec::new());
            while started.elapsed() < Duration::from_secs(2) {
                connections += 1;
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let tls = TlsConnector::from(client_config.clone())
                    .connect(name, tcp)
                    .await
                    .unwrap();
                let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
                let conn = tokio::spawn(conn);
                let ended = loop {
                    if started.elapsed() > Duration::from_secs(2) {
                        break None;
                    }
                    client = match client.ready().await {
                        Ok(c) => c,
                        Err(e) => break Some(e.to_string()),
                    };
                    match client.send_request(get(), false) {
                        Ok((_, mut stream)) => {
                            // Let the connection write the HEADERS, then reset the
                            // stream: on the wire, HEADERS and RST_STREAM back to back.
                            tokio::task::yield_now().await;
                            stream.send_reset(h2::Reason::CANCEL)
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                    streams += 1;
                };
                conn.abort();
                cut_off.extend(ended);
            }
            let reasons: std::collections::BTreeSet<&String> = cut_off.iter().collect();
            format!(
                "{streams} streams opened and reset over {connections} connections in {:?}, {} cut off ({reasons:?})",
                started.elapsed(),
                cut_off.len()
            )
        })
    };
    let outcome = while_abused(&s, "rapid reset", start).await;
    assert!(
        outcome.contains("too_many_resets"),
        "the abuser was not sent away: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_reads_nothing_is_held_back() {
    let s = setup().await;
    let (addr, client_config) = (s.addr, s.pki.client_config(&[b"h2"]));
    let start = move || {
        on_own_thread(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = TlsConnector::from(client_config)
                .connect(name, tcp)
                .await
                .unwrap();
            // The preface, empty SETTINGS, then PING after PING, never reading an ACK.
            let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            flood.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            let ping = [0u8, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            let mut batch = Vec::new();
            for _ in 0..1000 {
                batch.extend_from_slice(&ping);
            }
            let started = Instant::now();
            let mut sent = 0usize;
            let _ = tls.write_all(&flood).await;
            let ended = loop {
                if sent >= 5_000_000 || started.elapsed() > Duration::from_secs(3) {
                    break format!("{sent} PINGs written in {:?}", started.elapsed());
                }
                match tokio::time::timeout(Duration::from_secs(1), tls.write_all(&batch)).await {
                    Ok(Ok(())) => sent += 1000,
                    Ok(Err(e)) => break format!("closed after {sent} PINGs: {e}"),
                    Err(_) => {
                        break format!("held back after {sent} PINGs (the proxy stopped reading)")
                    }
                }
            };
            ended
        })
    };
    let outcome = while_abused(&s, "PING flood", start).await;
    assert!(
        outcome.contains("held back") || outcome.contains("closed"),
        "the flood went on unchecked: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_take_only_the_abusers_connection() {
    let s = setup().await;
    let (addr, client_config) = (s.addr, s.pki.client_config(&[b"h2"]));
    let (held_tx, held_rx) = std::sync::mpsc::channel::<(u32, u32)>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let abuse = on_own_thread(async move {
        let _ = go_rx.await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(client_config)
            .connect(name, tcp)
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        // 200 requests whose bodies never come, sent before the server's SETTINGS are
        // read: past its 128 concurrent streams the server refuses them.
        let mut waiting = Vec::new();
        let mut bodies = Vec::new();
        for _ in 0..200 {
            let mut c = client.clone().ready().await.unwrap();
            let (resp, body) = c
                .send_request(
                    http::Request::post("https://localhost/upload")
                        .body(())
                        .unwrap(),
                    false,
                )
                .unwrap();
            bodies.push(body);
            waiting.push(tokio::spawn(tokio::time::timeout(
                Duration::from_secs(1),
                resp,
            )));
        }
        let (mut refused, mut held) = (0, 0);
        for w in waiting {
            match w.await.unwrap() {
                Err(_) => held += 1,
                Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => refused += 1,
                Ok(other) => panic!("a stalled stream ended otherwise: {other:?}"),
            }
        }
        let _ = held_tx.send((held, refused));
        // Hold them while the normal client works.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(bodies);
        conn.abort();
        format!("{held} streams held open, {refused} refused")
    });
    let start = move || {
        let _ = go_tx.send(());
        let (held, refused) = tokio::task::block_in_place(|| {
            held_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the abuser opened its streams")
        });
        assert_eq!(
            (held, refused),
            (128, 72),
            "ALB's 128 streams per connection"
        );
        abuse
    };
    while_abused(&s, "stalled streams", start).await;
}
