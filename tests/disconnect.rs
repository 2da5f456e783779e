//! Disconnects on demand: every mode, provoked through the admin listener or the Rust
//! handle on a real WebSocket between a fastwebsockets client and the heartbeat backend
//! (sub-second pings), observed from both sides: what the client's socket got (FIN,
//! RST, nothing) and when, and why the backend says its connection ended. Also the
//! tunnel listing's bytes, per-target disconnects, and the errors.
//!
//! The tests run on the current-thread runtime so that the backend's log lines are
//! captured with the test's own (`LogCapture`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use albatross::{Mode, ProxyHandle};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::*;

/// The backend's heartbeat: a Ping every PING, the socket dropped when no Pong follows
/// within PING_TIMEOUT.
const PING: Duration = Duration::from_millis(200);
const PING_TIMEOUT: Duration = Duration::from_millis(300);
/// The load balancer's idle timeout: well past the backend's heartbeat, so that only a
/// disconnect (or a drop's own timeout) ends a tunnel.
const IDLE: Duration = Duration::from_secs(2);

type Ws = FragmentCollector<TokioIo<Upgraded>>;

struct Setup {
    pki: Pki,
    proxy: ProxyHandle,
    backends: Vec<TestBackend>,
    logs: LogCapture,
}

impl Setup {
    /// The proxy (HTTPS listener 0, HTTP listener 1, admin on port 0) in front of `n`
    /// heartbeat backends, pinging or not.
    async fn start(n: usize, pings: bool) -> Setup {
        let logs = LogCapture::start();
        let pki = Pki::new();
        let mut backends = Vec::new();
        for i in 0..n {
            let (interval, timeout) = if pings {
                (Some(PING), Some(PING_TIMEOUT))
            } else {
                (None, None)
            };
            backends.push(start_backend(&format!("b{}", i + 1), interval, timeout).await);
        }
        let cert = pki.leaf("proxy", &["localhost"]);
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        let text = forward_config(&pki, &cert, &format!("{}ms", IDLE.as_millis()), &addrs)
            + "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[access_log]\npath = \"access.log\"\n";
        let proxy = start_proxy(&pki, &text).await;
        Setup {
            pki,
            proxy,
            backends,
            logs,
        }
    }

    fn admin(&self) -> SocketAddr {
        self.proxy.admin_addr().expect("an admin listener")
    }

    /// A WebSocket as `user` through the HTTP listener; returns it after the backend's
    /// hello, with the hello.
    async fn ws(&self, user: &str) -> (Ws, Value) {
        let tcp = TcpStream::connect(self.proxy.listener_addr(1))
            .await
            .unwrap();
        let mut ws = FragmentCollector::new(
            ws_handshake(tcp, "localhost", &format!("/ws?user={user}")).await,
        );
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello", "{hello}");
        (ws, hello)
    }

    /// The same through the HTTPS listener.
    async fn wss(&self, user: &str) -> FragmentCollector<TokioIo<Upgraded>> {
        let tls = self
            .pki
            .connect(self.proxy.listener_addr(0), "localhost")
            .await;
        let mut ws = FragmentCollector::new(
            ws_handshake(tls, "localhost", &format!("/ws?user={user}")).await,
        );
        assert_eq!(next_json(&mut ws).await["type"], "hello");
        ws
    }

    /// The id of the only open tunnel.
    async fn only_tunnel(&self) -> albatross::TunnelId {
        eventually("one tunnel listed", || self.proxy.tunnels().len() == 1).await;
        self.proxy.tunnels()[0].id
    }

    /// Wait until the backend's socket has ended; the reason it logged.
    async fn backend_end(&self, backend: usize) -> String {
        within(
            "the backend's socket to end",
            self.backends[backend].handle.wait_for_connections(0),
        )
        .await;
        let logs = self.logs.text();
        logs.lines()
            .find_map(|l| {
                l.split_once("WebSocket connection ended after ")
                    .map(|(_, r)| r.to_string())
            })
            .unwrap_or_else(|| panic!("the backend logged no end:\n{logs}"))
    }

    /// Wait for the tunnel's close line with `cause`, and check the cause was counted
    /// once in `/metrics`.
    async fn closed_once(&self, cause: &str) {
        let needle = format!("Tunnel closed ({cause})");
        eventually(&format!("the tunnel's close line ({cause})"), || {
            self.logs.text().contains(&needle)
        })
        .await;
        assert_eq!(closed_count(self.admin(), cause).await, 1);
    }

    /// `POST /tunnels/{id}/disconnect?mode=…`: the 200's JSON (the tunnel).
    async fn disconnect(&self, id: albatross::TunnelId, mode: &str) -> Value {
        let (status, body) = post(
            self.admin(),
            &format!("/tunnels/{id}/disconnect?mode={mode}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// What the client's socket got once the tunnel was ended.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The connection closed with a FIN and no close frame (a browser reports 1006).
    Fin,
    /// The connection was reset.
    Reset,
    /// A close frame with this code.
    Close(u16),
    Other(String),
}

/// Read until the socket ends: what ended it, and how many frames came first.
async fn client_end<S>(ws: &mut FragmentCollector<S>) -> (Seen, usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut frames = 0;
    loop {
        let seen = match ws.read_frame().await {
            Ok(f) if f.opcode == OpCode::Close => Seen::Close(
                f.payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
            ),
            Ok(_) => {
                frames += 1;
                continue;
            }
            Err(WebSocketError::UnexpectedEOF) => Seen::Fin,
            Err(WebSocketError::IoError(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Seen::Reset
            }
            Err(e) => Seen::Other(e.to_string()),
        };
        return (seen, frames);
    }
}

/// `POST path` on the admin listener: status and body.
async fn post(admin: SocketAddr, path: &str) -> (u16, String) {
    request(admin, "POST", path).await
}

async fn request(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let response = raw_exchange(stream, head.as_bytes()).await;
    (status_of(&response), body_of(&response).to_string())
}

/// `GET /tunnels`, parsed.
async fn tunnels(admin: SocketAddr) -> Vec<Value> {
    let (status, body) = request(admin, "GET", "/tunnels").await;
    assert_eq!(status, 200, "{body}");
    match serde_json::from_str(&body) {
        Ok(Value::Array(list)) => list,
        other => panic!("GET /tunnels is no JSON array: {other:?}\n{body}"),
    }
}

/// The value of the tunnel-close counter for `cause` in `GET /metrics`.
async fn closed_count(admin: SocketAddr, cause: &str) -> u64 {
    let (status, body) = request(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let label = format!("cause=\"{cause}\"");
    body.lines()
        .find(|l| l.starts_with("albatross_tunnel_closed_count_total{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no closed count for {cause}:\n{body}"))
}

/// `client_close`, `idle_timeout` and `target_close` through the admin listener: the
/// client's connection gets a FIN with no close frame at once (1006 in a browser), the
/// backend reads EOF without a close frame, and the end is counted under its mode.
async fn closes_with_fins(mode: &str) {
    let s = Setup::start(1, true).await;
    let (mut ws, _) = s.ws("u1").await;
    let id = s.only_tunnel().await;

    let asked = Instant::now();
    let answered = s.disconnect(id, mode).await;
    assert_eq!(answered["id"], id.to_string(), "{answered}");

    let (seen, _) = within("the client's end", client_end(&mut ws)).await;
    assert_eq!(seen, Seen::Fin);
    assert!(
        asked.elapsed() < PING_TIMEOUT,
        "the FIN took {:?}",
        asked.elapsed()
    );
    let reason = s.backend_end(0).await;
    assert!(reason.ends_with(": EOF without a close frame."), "{reason}");
    let cause = format!("disconnect_{mode}");
    s.closed_once(&cause).await;
    eventually("the tunnel unlisted", || s.proxy.tunnels().is_empty()).await;
    // The tunnel's access-log line names the provoked end as its error_reason.
    s.proxy.flush_logs();
    let log = std::fs::read_to_string(s.pki.dir.path().join("access.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("ws "))
        .expect("the tunnel's line");
    assert!(line.contains(&format!(" \"{cause}\" ")), "{line}");
}

#[tokio::test]
async fn client_close_sends_fins_both_ways() {
    closes_with_fins("client_close").await;
}

#[tokio::test]
async fn idle_timeout_closes_both_sides_now() {
    closes_with_fins("idle_timeout").await;
}

#[tokio::test]
async fn target_close_closes_the_client_as_a_target_fin_would() {
    closes_with_fins("target_close").await;
}

/// `reset` through the Rust handle, on a wss tunnel: both sides get an RST.
#[tokio::test]
async fn reset_sends_rsts_both_ways() {
    let s = Setup::start(1, true).await;
    let mut ws = s.wss("u1").await;
    let id = s.only_tunnel().await;

    let listed = s
        .proxy
        .disconnect(id, Mode::Reset)
        .expect("the tunnel is open");
    assert_eq!(listed.id, id);
    let (seen, _) = within("the client's end", client_end(&mut ws)).await;
    assert_eq!(seen, Seen::Reset);
    let reason = s.backend_end(0).await;
    assert!(
        reason.contains("I/O error") && reason.contains("reset"),
        "{reason}"
    );
    s.closed_once("disconnect_reset").await;
}

/// `network_drop`: the client's bytes go nowhere and it hears nothing, not even the
/// backend's pings or its hang-up; the backend finds out only by its ping timeout; once
/// the idle timeout has passed since the drop, the client's connection gets a FIN.
#[tokio::test]
async fn network_drop_is_a_black_hole_until_the_idle_timeout() {
    let s = Setup::start(1, true).await;
    let (mut ws, _) = s.ws("u1").await;
    let id = s.only_tunnel().await;

    s.disconnect(id, "network_drop").await;
    let dropped = Instant::now();
    ws.write_frame(text("is anyone there?")).await.unwrap();

    let reason = s.backend_end(0).await;
    let noticed = dropped.elapsed();
    assert!(reason.contains("ping timeout"), "{reason}");
    assert!(noticed < IDLE, "the backend noticed after {noticed:?}");
    // Still listed: albatross holds what is left until the idle timeout.
    assert_eq!(s.proxy.tunnels().len(), 1);

    let (seen, frames) = within("the client's end", client_end(&mut ws)).await;
    let ended = dropped.elapsed();
    assert_eq!(seen, Seen::Fin);
    assert_eq!(frames, 0, "the client heard something after the drop");
    assert!(
        ended >= IDLE,
        "the client's connection closed {ended:?} after the drop"
    );
    s.closed_once("disconnect_network_drop").await;
}

/// A disconnect of a target ends only the tunnels to that target.
#[tokio::test]
async fn a_target_disconnect_ends_only_that_targets_tunnels() {
    let s = Setup::start(2, false).await;
    let (mut first, hello) = s.ws("u1").await;
    let (mut second, _) = s.ws("u2").await;
    let (first_backend, other_backend) = if hello["backend"] == "b1" {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(
        s.backends[other_backend].handle.connections(),
        1,
        "one tunnel per target"
    );
    let target = s.backends[first_backend].addr;

    let path = format!("/target-groups/app/targets/{target}/disconnect?mode=client_close");
    let (status, body) = post(s.admin(), &path).await;
    assert_eq!(status, 200, "{body}");
    let ended: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(ended.len(), 1, "{body}");
    assert_eq!(ended[0]["target"], target.to_string());

    assert_eq!(
        within("the first client's end", client_end(&mut first))
            .await
            .0,
        Seen::Fin
    );
    let listed = tunnels(s.admin()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["target"],
        s.backends[other_backend].addr.to_string()
    );
    // The other tunnel still carries messages both ways.
    second.write_frame(text("still here")).await.unwrap();
    let echo = within("the echo", second.read_frame()).await.unwrap();
    assert_eq!(&echo.payload[..], b"still here");

    // The Rust handle does the same, and tells an unknown target from an idle one.
    let other = s.backends[other_backend].addr;
    let ended = s
        .proxy
        .disconnect_target("app", other, Mode::TargetClose)
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(
        within("the second client's end", client_end(&mut second))
            .await
            .0,
        Seen::Fin
    );
    eventually("no tunnel left", || s.proxy.tunnels().is_empty()).await;
    assert_eq!(
        s.proxy
            .disconnect_target("app", other, Mode::Reset)
            .unwrap()
            .len(),
        0
    );
    let unknown: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = s
        .proxy
        .disconnect_target("app", unknown, Mode::Reset)
        .unwrap_err();
    assert_eq!(err.to_string(), "Target 127.0.0.1:9 is not registered.");
    assert!(s
        .proxy
        .disconnect_target("nope", other, Mode::Reset)
        .is_err());
}

/// `GET /tunnels` lists each open tunnel with DESIGN.md's fields; its byte counts are
/// the bytes that went through, frames included, and its idle time grows while nothing
/// moves.
#[tokio::test]
async fn the_listing_shows_what_went_through() {
    let s = Setup::start(1, false).await;
    let (mut ws, hello) = s.ws("u1").await;
    let message = "hello through the tunnel";
    ws.write_frame(text(message)).await.unwrap();
    let echo = within("the echo", ws.read_frame()).await.unwrap();
    assert_eq!(&echo.payload[..], message.as_bytes());

    // Client → target: one masked text frame (2 + 4 + payload). Target → client: the
    // hello and the echo, unmasked (2 + payload each).
    let hello_len = hello.to_string().len();
    let from_client = (6 + message.len()) as u64;
    let to_client = (2 + hello_len + 2 + message.len()) as u64;
    let admin = s.admin();
    let mut listed = Vec::new();
    for _ in 0..200 {
        listed = tunnels(admin).await;
        if listed.len() == 1 && listed[0]["bytes_to_client"] == to_client {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = &listed[0];
    assert_eq!(t["bytes_from_client"], from_client, "{t}");
    assert_eq!(t["bytes_to_client"], to_client, "{t}");
    let handle_view = &s.proxy.tunnels()[0];
    assert_eq!(t["id"], handle_view.id.to_string(), "ids are strings");
    assert_eq!(t["listener_port"], s.proxy.listener_addr(1).port());
    assert_eq!(t["target"], s.backends[0].addr.to_string());
    assert_eq!(t["target_group"], "app");
    assert_eq!(t["client"], handle_view.client.to_string());
    let opened = humantime::parse_rfc3339(t["opened_at"].as_str().unwrap()).expect("RFC 3339");
    assert_eq!(
        opened
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        handle_view
            .opened_at()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let idle_before = t["idle_for_ms"].as_u64().expect("idle_for_ms");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_after = tunnels(admin).await[0]["idle_for_ms"].as_u64().unwrap();
    assert!(
        idle_after >= idle_before + 300,
        "{idle_before} → {idle_after}"
    );
    assert_eq!(handle_view.bytes_from_client, from_client);
}

/// Bad disconnects get clear errors and change nothing.
#[tokio::test]
async fn bad_disconnects_are_refused_clearly_and_change_nothing() {
    let s = Setup::start(1, false).await;
    let (mut ws, _) = s.ws("u1").await;
    let id = s.only_tunnel().await;
    let admin = s.admin();

    let cases = [
        ("POST", "/tunnels/999999/disconnect?mode=reset".to_string(), 404, "There is no open tunnel with id `999999`"),
        ("POST", "/tunnels/abc/disconnect?mode=reset".to_string(), 404, "There is no open tunnel with id `abc`"),
        ("POST", format!("/tunnels/{id}/disconnect?mode=explode"), 400, "`explode` is not a disconnect mode; the modes are client_close, network_drop, idle_timeout, target_close and reset"),
        ("POST", format!("/tunnels/{id}/disconnect"), 400, "A disconnect needs ?mode=M"),
        ("GET", format!("/tunnels/{id}/disconnect?mode=reset"), 405, "Use POST"),
        ("POST", "/tunnels".to_string(), 405, "GET /tunnels"),
        ("POST", "/target-groups/nope/targets/127.0.0.1:1/disconnect?mode=reset".to_string(), 404, "There is no target group named `nope`."),
        ("POST", "/target-groups/app/targets/127.0.0.1:9/disconnect?mode=reset".to_string(), 404, "Target 127.0.0.1:9 is not registered."),
        ("POST", "/target-groups/app/targets/localhost/disconnect?mode=reset".to_string(), 400, "is not a target address"),
    ];
    for (method, path, status, says) in cases {
        let (got, body) = request(admin, method, &path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body.contains(says), "{method} {path}: {body}");
    }
    assert_eq!(
        s.proxy
            .disconnect(albatross::TunnelId(999_999), Mode::Reset)
            .map(|t| t.id),
        None
    );

    // The tunnel is untouched.
    ws.write_frame(text("still fine")).await.unwrap();
    let echo = within("the echo", ws.read_frame()).await.unwrap();
    assert_eq!(&echo.payload[..], b"still fine");
    assert_eq!(s.proxy.tunnels().len(), 1);
}
