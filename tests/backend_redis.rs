//! `POST /notify/ID` fanned out to every heartbeat backend through a real
//! Redis (`support::redis`), including Redis going away and coming back.
//! Backends run in-process on port 0; every wait polls briefly under a bound.

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use albatross::backend::{self, BackendOptions};
use bytes::Bytes;
use fastwebsockets::OpCode;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use support::redis::RedisServer;
use support::*;

/// How long a test waits for Redis to be reported back after a restart.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two polls.
const POLL: Duration = Duration::from_millis(20);

fn options(id: &str, redis: Option<String>) -> BackendOptions {
    BackendOptions {
        id: id.to_owned(),
        ping_interval: None,
        ping_timeout: None,
        redis,
    }
}

/// `count` backends on `redis`, each reporting it connected.
async fn backends_on(redis: &RedisServer, count: usize) -> Vec<TestBackend> {
    let mut backends = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("b{i}");
        backends.push(start_backend_with(options(&id, Some(redis.url()))).await);
    }
    for backend in &backends {
        wait_for_redis(backend.addr, "connected", SAFETY).await;
    }
    backends
}

/// A keep-alive HTTP/1.1 client.
struct Http(SendRequest<Full<Bytes>>);

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Http {
        Http(http_client(addr).await)
    }

    async fn send(&mut self, method: &str, path: &str, body: &str) -> Answer {
        let (status, content_type, body) = within(
            &format!("{method} {path}"),
            send_request(&mut self.0, method, path, body),
        )
        .await;
        Answer {
            status,
            content_type,
            body: serde_json::from_slice(&body).expect("a JSON body"),
        }
    }

    /// `POST /notify/USER`; the 202's JSON body.
    async fn notify(&mut self, user: &str, data: &str) -> Value {
        let answer = self.send("POST", &format!("/notify/{user}"), data).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.content_type, "application/json");
        answer.body
    }

    /// `GET /health`; its status and JSON body.
    async fn health(&mut self) -> (StatusCode, Value) {
        let answer = self.send("GET", "/health", "").await;
        assert_eq!(answer.content_type, "application/json");
        (answer.status, answer.body)
    }
}

/// Poll `GET /health` until it reports Redis as `state`, within `limit`. The
/// status stays 200 all along.
async fn wait_for_redis(addr: SocketAddr, state: &str, limit: Duration) {
    let mut http = Http::connect(addr).await;
    let polling = async {
        loop {
            let (status, body) = http.health().await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["status"], 200, "{body}");
            if body["redis"] == state {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    if tokio::time::timeout(limit, polling).await.is_err() {
        panic!("/health on {addr} did not report redis {state:?} within {limit:?}");
    }
}

/// The text messages of one WebSocket client, read by a task of their own
/// (so that waiting for one with a timeout never cuts a frame in half).
struct Inbox {
    messages: mpsc::UnboundedReceiver<String>,
    reader: AbortHandle,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Inbox {
    /// A socket of `user` on `addr`, its hello already read.
    async fn open(addr: SocketAddr, user: &str) -> Inbox {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut ws = ws_handshake(stream, "backend", &format!("/ws?user={user}")).await;
        let (tx, messages) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(frame) = ws.read_frame().await {
                match frame.opcode {
                    OpCode::Text => {
                        let text = String::from_utf8(frame.payload.to_vec()).unwrap();
                        if tx.send(text).is_err() {
                            break;
                        }
                    }
                    OpCode::Close => break,
                    _ => {}
                }
            }
        })
        .abort_handle();
        let mut inbox = Inbox { messages, reader };
        let hello: Value = serde_json::from_str(&inbox.next().await).unwrap();
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["user"], user);
        inbox
    }

    /// The next text message.
    async fn next(&mut self) -> String {
        within("a message on the socket", self.messages.recv())
            .await
            .expect("the socket stays open")
    }

    /// The next text message if one arrives within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The text a socket receives for a notification of `data`: the same bytes
/// whichever instance the request reached.
fn notification(data: &str) -> String {
    format!(r#"{{"type":"notify","data":{}}}"#, json!(data))
}

#[tokio::test]
async fn a_notification_reaches_a_user_on_another_instance() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let backends = backends_on(&redis, 2).await;
    let (a, b) = (&backends[0], &backends[1]);
    let mut alice = Inbox::open(a.addr, "alice").await;
    let mut on_a = Http::connect(a.addr).await;
    let mut on_b = Http::connect(b.addr).await;

    let answer = on_b.notify("alice", "from b \"quoted\"").await;
    assert_eq!(answer, json!({ "delivered": 0, "published": true }));
    assert_eq!(alice.next().await, notification("from b \"quoted\""));

    // Delivered locally, published, and not delivered again when the
    // instance's own message comes back from Redis.
    let answer = on_a.notify("alice", "from a").await;
    assert_eq!(answer, json!({ "delivered": 1, "published": true }));
    assert_eq!(alice.next().await, notification("from a"));
    on_b.notify("alice", "marker").await;
    assert_eq!(alice.next().await, notification("marker"));

    // A user connected nowhere: nothing delivered, still published.
    let answer = on_a.notify("nobody", "x").await;
    assert_eq!(answer, json!({ "delivered": 0, "published": true }));
}

#[tokio::test]
async fn redis_going_away_keeps_local_delivery_and_fan_out_resumes_after_it_returns() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let logs = LogCapture::start();
    let backends = backends_on(&redis, 2).await;
    let (a, b) = (&backends[0], &backends[1]);
    let mut alice = Inbox::open(a.addr, "alice").await;
    let mut on_a = Http::connect(a.addr).await;
    let mut on_b = Http::connect(b.addr).await;

    redis.kill().await;
    wait_for_redis(a.addr, "disconnected", SAFETY).await;
    wait_for_redis(b.addr, "disconnected", SAFETY).await;

    // No waiting on a Redis that is known to be down.
    let started = tokio::time::Instant::now();
    let answer = on_a.notify("alice", "while down").await;
    let took = started.elapsed();
    assert_eq!(answer, json!({ "delivered": 1, "published": false }));
    assert!(took < Duration::from_millis(400), "notify took {took:?}");
    assert_eq!(alice.next().await, notification("while down"));
    let answer = on_b.notify("alice", "lost").await;
    assert_eq!(answer, json!({ "delivered": 0, "published": false }));
    let (status, body) = on_a.health().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": 200, "redis": "disconnected" }));

    redis.restart().await;
    // Poll until a notification published on B reaches alice on A: B may
    // publish before A has subscribed again, and those are lost.
    let resumed = async {
        for attempt in 0.. {
            let data = format!("after restart {attempt}");
            let answer = on_b.notify("alice", &data).await;
            if answer["published"] == true {
                if let Some(text) = alice.next_within(Duration::from_millis(200)).await {
                    let text: Value = serde_json::from_str(&text).unwrap();
                    let data = text["data"].as_str().unwrap();
                    assert!(data.starts_with("after restart "), "{text}");
                    return;
                }
            } else {
                tokio::time::sleep(POLL).await;
            }
        }
    };
    if tokio::time::timeout(RECOVERY_TIMEOUT, resumed)
        .await
        .is_err()
    {
        panic!("fan-out did not resume within {RECOVERY_TIMEOUT:?} of the restart");
    }
    wait_for_redis(a.addr, "connected", SAFETY).await;
    wait_for_redis(b.addr, "connected", SAFETY).await;

    // One line when Redis went away and one when it was back, per backend.
    let text = logs.text();
    assert_eq!(
        text.matches("Lost the connection to Redis").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("Reconnected to Redis").count(), 2, "{text}");
    assert!(!text.contains("Cannot connect to Redis"), "{text}");
}

#[tokio::test]
async fn a_thousand_notifications_across_three_instances_arrive_exactly_once() {
    const NOTIFICATIONS: usize = 1000;
    const INSTANCES: usize = 3;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let backends = backends_on(&redis, INSTANCES).await;
    // User i is connected to instance i, and notified through instance i - 1.
    let mut inboxes = Vec::with_capacity(INSTANCES);
    for (i, backend) in backends.iter().enumerate() {
        inboxes.push(Inbox::open(backend.addr, &format!("user{i}")).await);
    }

    let mut senders = Vec::with_capacity(INSTANCES);
    for (i, backend) in backends.iter().enumerate() {
        let addr = backend.addr;
        let user = format!("user{}", (i + 1) % INSTANCES);
        senders.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await;
            for n in (i..NOTIFICATIONS).step_by(INSTANCES) {
                let answer = http.notify(&user, &n.to_string()).await;
                assert_eq!(answer, json!({ "delivered": 0, "published": true }));
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }

    for (i, inbox) in inboxes.iter_mut().enumerate() {
        let sender = (i + INSTANCES - 1) % INSTANCES;
        let expected: Vec<usize> = (sender..NOTIFICATIONS).step_by(INSTANCES).collect();
        let mut counts = BTreeMap::new();
        for _ in 0..expected.len() {
            let text: Value = serde_json::from_str(&inbox.next().await).unwrap();
            assert_eq!(text["type"], "notify");
            let n: usize = text["data"].as_str().unwrap().parse().unwrap();
            *counts.entry(n).or_insert(0) += 1;
        }
        let received: Vec<usize> = counts.keys().copied().collect();
        assert_eq!(received, expected, "user{i} missed notifications");
        assert!(counts.values().all(|&c| c == 1), "user{i}: {counts:?}");

        // Redis keeps one publisher's order: nothing more was on its way.
        let mut http = Http::connect(backends[sender].addr).await;
        http.notify(&format!("user{i}"), "end").await;
        assert_eq!(inbox.next().await, notification("end"));
    }
}

#[tokio::test]
async fn health_reports_redis_off_without_a_url() {
    let backend = start_backend_with(options("solo", None)).await;
    let mut http = Http::connect(backend.addr).await;
    let (status, body) = http.health().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": 200, "redis": "off" }));

    backend.handle.set_health_status(503).unwrap();
    let (status, body) = http.health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({ "status": 503, "redis": "off" }));

    let answer = http.notify("nobody", "x").await;
    assert_eq!(answer, json!({ "delivered": 0, "published": false }));
}

#[tokio::test]
async fn an_unreachable_redis_leaves_health_at_200_and_delivery_local() {
    let backend = start_backend_with(options(
        "alone",
        Some(format!("redis://{}", closed_port().await)),
    ))
    .await;
    let mut alice = Inbox::open(backend.addr, "alice").await;
    let mut http = Http::connect(backend.addr).await;
    let (status, body) = http.health().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": 200, "redis": "disconnected" }));

    let answer = http.notify("alice", "local").await;
    assert_eq!(answer, json!({ "delivered": 1, "published": false }));
    assert_eq!(alice.next().await, notification("local"));
}

#[tokio::test]
async fn a_redis_url_that_cannot_be_used_fails_the_start() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = options("tls", Some("rediss://:secret@127.0.0.1:6380".to_owned()));
    let error = backend::start(listener, options, CancellationToken::new())
        .await
        .err()
        .expect("the start fails");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let message = error.to_string();
    assert!(message.contains("Redis URL"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}
