//! A real AWS client for the ELBv2 API tests: boto3 (and aws-cli) in a Python process
//! (`tests/elbv2/driver.py`) that takes one JSON request per line.
//!
//! Without boto3 on the machine the tests that need it say so and pass, except under
//! `CI=true`, where a missing client is a failure (`.ci/run` installs it).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one client request may take (waiters poll for up to 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// An error the API answered, as botocore saw it.
#[derive(Debug, Clone)]
pub struct AwsError {
    pub code: String,
    pub message: String,
    pub status: Option<u64>,
    pub exception: String,
}

pub struct Aws {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Whether boto3 and aws-cli are here; without them, `None` and a note (a failure
/// under `CI=true`).
fn client_available() -> bool {
    let boto3 = std::process::Command::new("python3")
        .args(["-c", "import boto3, botocore"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let cli = std::process::Command::new("aws")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if boto3 && cli {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "boto3 and aws-cli are needed for the ELBv2 API tests: pip install boto3 awscli"
    );
    eprintln!("SKIPPED: boto3 or aws-cli is missing (pip install boto3 awscli)");
    false
}

impl Aws {
    /// A client for the admin listener at `admin`, signing with `credentials` (any key
    /// when `None`). `None` when no AWS client is installed (see the module docs).
    pub async fn start(admin: SocketAddr, credentials: Option<(&str, &str)>) -> Option<Aws> {
        if !client_available() {
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/elbv2/driver.py");
        let (key, secret) = credentials.unwrap_or(("AKIDALBATROSS", "any-secret"));
        let mut child = Command::new("python3")
            .arg(script)
            .arg(format!("http://{admin}"))
            .arg(key)
            .arg(secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(CALL_TIMEOUT, lines.next_line())
            .await
            .expect("the AWS client starts")
            .unwrap()
            .expect("the AWS client says it is ready");
        assert!(ready.contains("ready"), "{ready}");
        Some(Aws {
            _child: child,
            stdin,
            lines,
        })
    }

    /// Send one request line; its answer.
    pub async fn request(&mut self, request: Value) -> Result<Value, AwsError> {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(CALL_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {request} within {CALL_TIMEOUT:?}"))
            .unwrap()
            .expect("the AWS client answers");
        let mut answer: Value = serde_json::from_str(&answer).unwrap();
        if let Some(e) = answer.get("error") {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            return Err(AwsError {
                code: text("code"),
                message: text("message"),
                status: e["status"].as_u64(),
                exception: text("exception"),
            });
        }
        Ok(answer["ok"].take())
    }

    /// A boto3 call, e.g. `call("describe_rules", json!({"ListenerArn": arn}))`.
    pub async fn call(&mut self, op: &str, args: Value) -> Result<Value, AwsError> {
        self.request(json!({ "op": op, "args": args })).await
    }

    /// A boto3 call that must succeed.
    pub async fn ok(&mut self, op: &str, args: Value) -> Value {
        match self.call(op, args.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{op}({args}) failed: {e:?}"),
        }
    }

    /// A boto3 call that must fail with `code`; its message.
    pub async fn fails(&mut self, op: &str, args: Value, code: &str) -> AwsError {
        match self.call(op, args.clone()).await {
            Ok(v) => panic!("{op}({args}) succeeded with {v}; expected {code}"),
            Err(e) => {
                assert_eq!(e.code, code, "{op}({args}): {e:?}");
                e
            }
        }
    }

    /// A botocore waiter polling every second.
    pub async fn wait(&mut self, waiter: &str, args: Value) -> Result<Value, AwsError> {
        self.request(json!({ "wait": waiter, "args": args })).await
    }

    /// A paginator run to the end: (pages, items).
    pub async fn paginate(&mut self, op: &str, args: Value, key: &str) -> (u64, Vec<Value>) {
        let v = self
            .request(json!({ "paginate": op, "args": args, "key": key }))
            .await
            .unwrap_or_else(|e| panic!("paginating {op}: {e:?}"));
        (
            v["pages"].as_u64().unwrap(),
            v["items"].as_array().unwrap().clone(),
        )
    }

    /// aws-cli with this endpoint, e.g. `cli(&["elbv2", "describe-load-balancers"])`.
    pub async fn cli(&mut self, argv: &[&str]) -> Result<Value, AwsError> {
        self.request(json!({ "cli": argv })).await
    }
}
