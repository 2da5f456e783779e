//! The heartbeat backend over real sockets on 127.0.0.1, port 0.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use albatross::backend::{self, BackendHandle, BackendOptions};
use bytes::Bytes;
use fastwebsockets::{handshake, Frame, OpCode, Payload, WebSocket};
use http_body_util::{Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use support::{http_client, send_request};

type Client = WebSocket<TokioIo<Upgraded>>;

/// A safety net only: every test finishes on events, not on time.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the test did not finish in time")
}

struct Running {
    handle: BackendHandle,
    cancel: CancellationToken,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start_with(ping_interval: Option<Duration>, ping_timeout: Option<Duration>) -> Running {
    start_options(BackendOptions {
        id: "b1".to_owned(),
        ping_interval,
        ping_timeout,
        redis: None,
    })
    .await
}

/// Logs go to the test's captured output (shown when it fails).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("albatross=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

async fn start_options(options: BackendOptions) -> Running {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = CancellationToken::new();
    let handle = backend::start(listener, options, cancel.clone())
        .await
        .unwrap();
    Running { handle, cancel }
}

async fn start() -> Running {
    start_with(None, None).await
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

async fn connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .header("Host", addr.to_string())
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (ws, _) = handshake::client(&SpawnExecutor, request, stream)
        .await
        .unwrap();
    ws
}

async fn next_text(ws: &mut Client) -> String {
    let frame = ws.read_frame().await.unwrap();
    assert_eq!(frame.opcode, OpCode::Text);
    String::from_utf8(frame.payload.to_vec()).unwrap()
}

async fn next_json(ws: &mut Client) -> serde_json::Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

async fn send_text(ws: &mut Client, text: &str) {
    ws.write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
        .await
        .unwrap();
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

async fn request(
    client: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> Answer {
    let (status, content_type, body) = send_request(client, method, path, body).await;
    Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn request_once(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    request(&mut http_client(addr).await, method, path, body).await
}

#[tokio::test]
async fn hello_names_backend_and_user() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws?user=alice").await;
        let hello = next_json(&mut ws).await;
        assert_eq!(
            hello,
            serde_json::json!({ "type": "hello", "backend": "b1", "user": "alice" })
        );
        assert_eq!(backend.handle.connections(), 1);

        let mut anonymous = connect(backend.addr(), "/ws").await;
        let hello = next_json(&mut anonymous).await;
        assert_eq!(hello["user"], "anonymous");
        assert_eq!(backend.handle.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn echoes_text_and_a_1_mib_binary_message() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws?user=echo").await;
        next_text(&mut ws).await;

        send_text(&mut ws, "hello, echo").await;
        assert_eq!(next_text(&mut ws).await, "hello, echo");

        let data: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(31) >> 3) as u8)
            .collect();
        ws.write_frame(Frame::binary(Payload::Owned(data.clone())))
            .await
            .unwrap();
        let frame = ws.read_frame().await.unwrap();
        assert_eq!(frame.opcode, OpCode::Binary);
        assert_eq!(frame.payload.len(), data.len());
        assert!(frame.payload[..] == data[..], "the echo differs");
    })
    .await;
}

#[tokio::test]
async fn echoes_a_16_mib_message() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        let data: Vec<u8> = (0..backend::MAX_MESSAGE_SIZE)
            .map(|i| (i % 251) as u8)
            .collect();
        ws.write_frame(Frame::binary(Payload::Owned(data.clone())))
            .await
            .unwrap();
        let frame = ws.read_frame().await.unwrap();
        assert_eq!(frame.opcode, OpCode::Binary);
        assert!(frame.payload[..] == data[..], "the echo differs");
    })
    .await;
}

#[tokio::test]
async fn reassembles_a_fragmented_message() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        let parts: [(bool, OpCode, &[u8]); 3] = [
            (false, OpCode::Text, b"hel"),
            (false, OpCode::Continuation, b"lo, \xc3"),
            (true, OpCode::Continuation, b"\xa9t\xc3\xa9"),
        ];
        for (fin, opcode, payload) in parts {
            let frame = Frame::new(fin, opcode, None, Payload::Owned(payload.to_vec()));
            ws.write_frame(frame).await.unwrap();
        }
        assert_eq!(next_text(&mut ws).await, "hello, été");
    })
    .await;
}

#[tokio::test]
async fn close_frame_is_answered_and_counted_out() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        ws.write_frame(Frame::close(1000, b"bye")).await.unwrap();
        let frame = ws.read_frame().await.unwrap();
        assert_eq!(frame.opcode, OpCode::Close);
        assert_eq!(&frame.payload[..2], &1000u16.to_be_bytes());
        assert_eq!(&frame.payload[2..], b"bye");
        // The server closes the TCP connection after the close handshake,
        // and stops counting the socket before that.
        assert!(ws.read_frame().await.is_err());
        assert_eq!(backend.handle.connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn pings_arrive_at_the_interval_and_pongs_keep_the_connection() {
    let interval = Duration::from_millis(100);
    let backend = start_with(Some(interval), Some(Duration::from_millis(250))).await;
    within(async {
        let before_connect = Instant::now();
        let mut ws = connect(backend.addr(), "/ws").await;
        ws.set_auto_pong(false);
        next_text(&mut ws).await;

        let mut ping_times = Vec::new();
        while ping_times.len() < 5 {
            let frame = ws.read_frame().await.unwrap();
            assert_eq!(frame.opcode, OpCode::Ping);
            ping_times.push(Instant::now());
            ws.write_frame(Frame::pong(frame.payload)).await.unwrap();
        }
        // The fifth ping is due five intervals after the socket opened.
        assert!(ping_times[4] - before_connect >= interval * 5 - Duration::from_millis(10));
        let average = (ping_times[4] - ping_times[0]) / 4;
        assert!(average < interval * 3, "pings every {average:?}");

        // 500 ms > ping timeout: only the pongs kept the socket open.
        send_text(&mut ws, "still here").await;
        loop {
            let frame = ws.read_frame().await.unwrap();
            match frame.opcode {
                OpCode::Ping => ws.write_frame(Frame::pong(frame.payload)).await.unwrap(),
                OpCode::Text => {
                    assert_eq!(&frame.payload[..], b"still here");
                    break;
                }
                other => panic!("unexpected {other:?} frame"),
            }
        }
        assert_eq!(backend.handle.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_pongs_is_dropped_after_the_ping_timeout() {
    let interval = Duration::from_millis(50);
    let timeout = Duration::from_millis(150);
    let backend = start_with(Some(interval), Some(timeout)).await;
    within(async {
        let before_connect = Instant::now();
        let mut ws = connect(backend.addr(), "/ws").await;
        ws.set_auto_pong(false);
        next_text(&mut ws).await;

        let mut pings = 0;
        let error = loop {
            match ws.read_frame().await {
                Ok(frame) => {
                    assert_eq!(frame.opcode, OpCode::Ping, "only pings, no close frame");
                    pings += 1;
                }
                Err(e) => break e,
            }
        };
        let lifetime = before_connect.elapsed();
        assert!(pings >= 1);
        assert!(
            lifetime >= interval + timeout - Duration::from_millis(10),
            "dropped after {lifetime:?} ({error})"
        );
        assert_eq!(backend.handle.connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn notify_reaches_every_socket_of_the_user_only() {
    let backend = start_options(BackendOptions {
        id: "b1".to_owned(),
        ping_interval: None,
        ping_timeout: None,
        // Without Redis: delivered in process, not published.
        redis: None,
    })
    .await;
    within(async {
        let mut a1 = connect(backend.addr(), "/ws?user=a").await;
        let mut a2 = connect(backend.addr(), "/ws?user=a").await;
        let mut b = connect(backend.addr(), "/ws?user=b").await;
        for ws in [&mut a1, &mut a2, &mut b] {
            next_text(ws).await;
        }

        let answer = request_once(backend.addr(), "POST", "/notify/a", "hi \"there\"").await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.content_type, "application/json");
        let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({ "delivered": 2, "published": false })
        );

        let expected = serde_json::json!({ "type": "notify", "data": "hi \"there\"" });
        assert_eq!(next_json(&mut a1).await, expected);
        assert_eq!(next_json(&mut a2).await, expected);
        // A notification for b would have been queued before this echo.
        send_text(&mut b, "probe").await;
        assert_eq!(next_text(&mut b).await, "probe");

        let answer = request_once(backend.addr(), "POST", "/notify/nobody", "x").await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.body, r#"{"delivered":0,"published":false}"#);
    })
    .await;
}

#[tokio::test]
async fn health_status_switches_by_library_call_and_by_put() {
    let backend = start().await;
    within(async {
        // One keep-alive connection for every request.
        let mut client = http_client(backend.addr()).await;
        let answer = request(&mut client, "GET", "/health", "").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.content_type, "application/json");
        assert_eq!(answer.body, r#"{"status":200,"redis":"off"}"#);

        backend.handle.set_health_status(503).unwrap();
        assert_eq!(backend.handle.health_status(), 503);
        let answer = request(&mut client, "GET", "/health", "").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body, r#"{"status":503,"redis":"off"}"#);
        assert!(backend.handle.set_health_status(42).is_err());

        let answer = request(&mut client, "PUT", "/health", "200\n").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert_eq!(
            request(&mut client, "GET", "/health", "").await.status,
            StatusCode::OK
        );

        let answer = request(&mut client, "PUT", "/health", "502").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert_eq!(
            request(&mut client, "GET", "/health", "").await.status,
            StatusCode::BAD_GATEWAY
        );

        for bad in ["abc", "42", "", "2000000"] {
            let answer = request(&mut client, "PUT", "/health", bad).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "body {bad:?}");
        }
        assert_eq!(backend.handle.health_status(), 502);
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_404() {
    let backend = start().await;
    within(async {
        let mut client = http_client(backend.addr()).await;
        for (method, path) in [
            ("GET", "/nope"),
            ("POST", "/"),
            ("GET", "/notify/a"),
            ("POST", "/notify/"),
            ("DELETE", "/health"),
        ] {
            let answer = request(&mut client, method, path, "").await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        }
        let answer = request(&mut client, "GET", "/ws", "").await;
        assert_eq!(answer.status, StatusCode::UPGRADE_REQUIRED);
    })
    .await;
}

#[tokio::test]
async fn demo_page_is_self_contained() {
    let backend = start().await;
    within(async {
        let answer = request_once(backend.addr(), "GET", "/", "").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.content_type.starts_with("text/html"));
        let page = answer.body;
        assert!(page.contains("new WebSocket("));
        assert!(page.contains("/ws?user="));
        assert!(page.contains("wss:"));
        assert!(page.contains("onclose"));
        assert!(!page.contains("src=\"http"));
        assert!(!page.contains("<link"));
    })
    .await;
}

#[tokio::test]
async fn half_closed_and_malformed_requests_are_answered() {
    let backend = start().await;
    within(async {
        let mut stream = TcpStream::connect(backend.addr()).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: backend\r\n\r\n")
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(r#"{"status":200,"redis":"off"}"#),
            "{response}"
        );

        let mut stream = TcpStream::connect(backend.addr()).await.unwrap();
        stream.write_all(b"\x00\x01 garbage\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");

        // Still serving.
        let answer = request_once(backend.addr(), "GET", "/health", "").await;
        assert_eq!(answer.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn cancel_closes_sockets_and_stops_the_server() {
    let backend = start_with(Some(Duration::from_secs(30)), None).await;
    let addr = backend.addr();
    within(async {
        let mut ws = connect(addr, "/ws").await;
        next_text(&mut ws).await;
        let mut idle_http = http_client(addr).await;
        assert_eq!(
            request(&mut idle_http, "GET", "/health", "").await.status,
            StatusCode::OK
        );

        backend.cancel.cancel();
        let frame = ws.read_frame().await.unwrap();
        assert_eq!(frame.opcode, OpCode::Close);
        assert_eq!(&frame.payload[..2], &1001u16.to_be_bytes());

        backend.handle.stopped().await;
        assert_eq!(backend.handle.connections(), 0);
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await;
}

/// Send two maximum-size messages and never read: the echoes fill the TCP
/// buffers and the server's writer blocks. On a slow machine a short ping timeout
/// may drop the connection while we are still writing; that ends the stall too.
async fn stall_the_writer(ws: &mut Client) {
    let data = vec![7u8; backend::MAX_MESSAGE_SIZE];
    for _ in 0..2 {
        if ws
            .write_frame(Frame::binary(Payload::Owned(data.clone())))
            .await
            .is_err()
        {
            break;
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_ping_timeout() {
    let interval = Duration::from_millis(50);
    let timeout = Duration::from_millis(150);
    let backend = start_with(Some(interval), Some(timeout)).await;
    within(async {
        let before_connect = Instant::now();
        let mut ws = connect(backend.addr(), "/ws").await;
        ws.set_auto_pong(false);
        next_text(&mut ws).await;
        stall_the_writer(&mut ws).await;
        // Not reading: the writer stays blocked until the server drops us.
        backend.handle.wait_for_connections(0).await;
        let lifetime = before_connect.elapsed();
        assert!(
            lifetime >= interval + timeout - Duration::from_millis(10),
            "dropped after {lifetime:?}"
        );
        // What was buffered arrives, then EOF without a close frame.
        while let Ok(frame) = ws.read_frame().await {
            assert_ne!(frame.opcode, OpCode::Close);
        }
    })
    .await;
}

#[tokio::test]
async fn cancel_is_not_held_up_by_a_client_that_stops_reading() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        stall_the_writer(&mut ws).await;
        backend.cancel.cancel();
        backend.handle.stopped().await;
        assert_eq!(backend.handle.connections(), 0);
    })
    .await;
}

async fn expect_close(ws: &mut Client, code: u16) {
    let frame = ws.read_frame().await.unwrap();
    assert_eq!(frame.opcode, OpCode::Close);
    assert_eq!(&frame.payload[..2], &code.to_be_bytes());
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        let frame = Frame::new(true, OpCode::Text, None, Payload::Owned(vec![b'a', 0xff]));
        ws.write_frame(frame).await.unwrap();
        expect_close(&mut ws, 1007).await;
        backend.handle.wait_for_connections(0).await;
    })
    .await;
}

#[tokio::test]
async fn a_fragmented_message_over_16_mib_is_closed_with_1009() {
    let backend = start().await;
    within(async {
        let mut ws = connect(backend.addr(), "/ws").await;
        next_text(&mut ws).await;
        let half = vec![1u8; backend::MAX_MESSAGE_SIZE / 2 + 1];
        for (fin, opcode) in [(false, OpCode::Binary), (true, OpCode::Continuation)] {
            let frame = Frame::new(fin, opcode, None, Payload::Owned(half.clone()));
            ws.write_frame(frame).await.unwrap();
        }
        expect_close(&mut ws, 1009).await;
        backend.handle.wait_for_connections(0).await;
    })
    .await;
}
