//! A headless Chromium driven over the DevTools protocol (CDP), for tests of pages the
//! proxy serves: no npm and no driver crate, only a WebSocket client speaking CDP's JSON.
//!
//! [`Browser::open`] starts Chromium on a URL with a fresh profile, reads where its
//! DevTools endpoint listens from its stderr, finds the page through
//! `GET /json/list` and connects to the page's WebSocket. [`Browser::evaluate`] runs a
//! JavaScript expression in the page and returns its value as JSON;
//! [`Browser::wait_until`] polls one until it is what the test wants, within a bound.
//!
//! The browser is `$CHROMIUM` or `/usr/bin/chromium`. Without one, [`Browser::open`]
//! says so and returns `None` (the test passes), except under `CI=true`, where a
//! missing browser is a failure (`.ci/run` installs it). Chromium runs in its own
//! process group, killed when the [`Browser`] is dropped.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Time allowed for Chromium to start and show its page target.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one DevTools call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Browser::wait_until`] evaluates its expression again.
const POLL: Duration = Duration::from_millis(50);
/// Lines of Chromium's stderr kept for failure messages.
const STDERR_LINES: usize = 40;

/// The browser to use: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether the browser is here; without it, a note (a failure under `CI=true`).
fn chromium_available() -> Option<PathBuf> {
    let path = chromium_path();
    if path.is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "Chromium is needed for the browser tests and {} is missing: apt-get install chromium \
         (or set CHROMIUM to its path)",
        path.display()
    );
    eprintln!("SKIPPED: chromium is missing (apt-get install chromium)");
    None
}

/// A headless Chromium showing one page, and a DevTools connection to that page.
pub struct Browser {
    page: FragmentCollector<TokioIo<Upgraded>>,
    /// Declared before the profile: the browser is killed before its folder goes.
    chromium: Chromium,
    /// The last lines Chromium wrote to stderr, for failure messages.
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
    /// Exceptions the page threw and errors it logged since the connection.
    errors: Vec<String>,
    /// The profile folder; removed after the browser is killed.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium on `url` and connect to its page; `None` when there is no browser
    /// (see the module docs).
    pub async fn open(url: &str) -> Option<Browser> {
        let path = chromium_available()?;
        let profile = tempfile::tempdir().expect("a temporary profile folder");
        let mut chromium = Chromium(
            Command::new(&path)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not start: {e}", path.display())),
        );

        // Read stderr until DevTools says where it listens; keep reading it afterwards
        // (a full pipe would stall the browser), remembering the last lines.
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let mut lines = BufReader::new(chromium.0.stderr.take().expect("piped stderr")).lines();
        let (found, endpoint) = tokio::sync::oneshot::channel();
        let kept = stderr.clone();
        tokio::spawn(async move {
            let mut found = Some(found);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(ws.trim().to_string());
                    }
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let fail = |what: &str| -> ! {
            let said: Vec<String> = stderr.lock().unwrap().iter().cloned().collect();
            panic!("{what}\nChromium said:\n{}", said.join("\n"))
        };
        let endpoint = match tokio::time::timeout(START_TIMEOUT, endpoint).await {
            Ok(Ok(endpoint)) => endpoint,
            Ok(Err(_)) => fail("Chromium ended before its DevTools endpoint listened."),
            Err(_) => fail("Chromium's DevTools endpoint did not listen in time."),
        };
        // ws://127.0.0.1:PORT/devtools/browser/ID
        let Some(host) = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string)
        else {
            fail(&format!("Unexpected DevTools endpoint {endpoint}."))
        };

        let page_ws = match tokio::time::timeout(START_TIMEOUT, page_target(&host)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => fail(&e),
            Err(_) => fail("Chromium listed no page target in time."),
        };
        let page = match connect(&page_ws).await {
            Ok(page) => page,
            Err(e) => fail(&e),
        };
        let mut browser = Browser {
            page,
            chromium,
            stderr,
            next_id: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        // Report the page's exceptions and logged errors from now on.
        browser.call("Runtime.enable", json!({})).await;
        browser.call("Log.enable", json!({})).await;
        Some(browser)
    }

    /// Call the DevTools method `method` on the page; its result. Fails the test on an
    /// error or after [`CALL_TIMEOUT`].
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match tokio::time::timeout(CALL_TIMEOUT, self.try_call(method, params)).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => self.fail(&format!("{method}: {e}")),
            Err(_) => self.fail(&format!("{method}: no answer within {CALL_TIMEOUT:?}")),
        }
    }

    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page
            .write_frame(Frame::text(Payload::Owned(message.into_bytes())))
            .await
            .map_err(|e| format!("the DevTools connection failed: {e}"))?;
        loop {
            let frame = self
                .page
                .read_frame()
                .await
                .map_err(|e| format!("the DevTools connection failed: {e}"))?;
            match frame.opcode {
                OpCode::Text => {}
                OpCode::Close => return Err("the DevTools connection closed".to_string()),
                _ => continue,
            }
            let message: Value = serde_json::from_slice(&frame.payload)
                .map_err(|e| format!("DevTools sent something other than JSON: {e}"))?;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    return Err(format!("DevTools answered an error: {error}"));
                }
                return Ok(message["result"].clone());
            }
            self.note_event(&message);
        }
    }

    /// Keep the page's exceptions and logged errors.
    fn note_event(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("an exception");
                self.errors.push(format!("exception: {text}"));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.errors
                    .push(format!("console.error: {}", params["args"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors
                    .push(format!("log: {}", params["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// Errors the page threw or logged so far (exceptions, `console.error`, errors the
    /// browser logged for it such as refused resources or CSP violations).
    pub fn page_errors(&self) -> &[String] {
        &self.errors
    }

    /// Evaluate the JavaScript `expression` in the page; its value as JSON (`Null` for
    /// `undefined`), or the exception it threw.
    pub async fn evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("an exception");
            return Err(text.to_string());
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Evaluate `expression` every [`POLL`] until `accept` takes its value; what it made
    /// of it. Fails the test, with the last value, when `limit` passes first.
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        expression: &str,
        mut accept: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            match tokio::time::timeout_at(deadline, self.evaluate(expression)).await {
                Ok(Ok(value)) => {
                    if let Some(accepted) = accept(&value) {
                        return accepted;
                    }
                    last = value;
                }
                Ok(Err(exception)) => last = Value::String(format!("exception: {exception}")),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what}: not within {limit:?}; the page last gave {last}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fail the test with `what`, the page's errors and the end of Chromium's stderr.
    pub fn fail(&self, what: &str) -> ! {
        let said: Vec<String> = self.stderr.lock().unwrap().iter().cloned().collect();
        panic!(
            "{what}\nPage errors: {:?}\nChromium said:\n{}",
            self.errors,
            said.join("\n")
        )
    }
}

/// The Chromium process this test started, leading its own process group.
struct Chromium(Child);

impl Drop for Chromium {
    fn drop(&mut self) {
        // Chromium forks helpers (zygote, renderers, …) into its process group: end them
        // all, then reap the browser so that its profile folder can go.
        if let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) of the process group this test started; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.0.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The DevTools WebSocket URL of the first page target of the browser whose DevTools
/// endpoint is at `host` (`127.0.0.1:PORT`), polling until it is listed.
async fn page_target(host: &str) -> Result<String, String> {
    loop {
        let list = get_json(host, "/json/list").await?;
        let page = list.as_array().and_then(|targets| {
            targets
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        });
        if let Some(ws) = page {
            return Ok(ws.to_string());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `GET http://{host}{path}`, parsed as JSON.
async fn get_json(host: &str, path: &str) -> Result<Value, String> {
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot connect to DevTools at {host}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP to DevTools at {host} failed: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build GET {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} from DevTools failed: {e}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {path} from DevTools failed: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("GET {path} from DevTools: not JSON: {e}"))
}

/// Open the DevTools WebSocket `url` (`ws://127.0.0.1:PORT/devtools/page/ID`).
async fn connect(url: &str) -> Result<FragmentCollector<TokioIo<Upgraded>>, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("unexpected DevTools page URL {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot connect to DevTools at {host}: {e}"))?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the WebSocket request: {e}"))?;
    let (mut ws, _) = fastwebsockets::handshake::client(&super::SpawnExecutor, request, stream)
        .await
        .map_err(|e| format!("the DevTools WebSocket handshake failed: {e}"))?;
    ws.set_max_message_size(64 << 20);
    Ok(FragmentCollector::new(ws))
}
