//! A real `redis-server` for the fan-out tests, on a free port of 127.0.0.1,
//! without persistence, killed when the [`RedisServer`] is dropped.
//!
//! The server is `$REDIS_SERVER` or `redis-server` on the PATH. Without one,
//! [`RedisServer::start`] says so and returns `None` (the test passes), except
//! under `CI=true`, where a missing server is a failure (`.ci/run` installs
//! it). [`RedisServer::kill`] and [`RedisServer::restart`] take it away and
//! bring it back on the same port, for the tests of an outage.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use super::within;

/// How often [`RedisServer::start`] checks whether the server answers.
const POLL: Duration = Duration::from_millis(20);

/// Ports tried before giving up (another process may take a free port first).
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    program: String,
    port: u16,
    /// `None` while killed.
    child: Option<Child>,
}

fn program() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Whether the server program is here; without it, a note (a failure under
/// `CI=true`).
fn server_available(program: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "redis-server is needed for the Redis fan-out tests: apt-get install redis-server"
    );
    eprintln!("SKIPPED: redis-server is missing (apt-get install redis-server)");
    false
}

/// A port nothing listens on right now.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

impl RedisServer {
    /// A fresh server on a free port, answering PING; `None` when
    /// `redis-server` is not installed (see the module docs).
    pub async fn start() -> Option<RedisServer> {
        let program = program();
        if !server_available(&program) {
            return None;
        }
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                program: program.clone(),
                port: free_port().await,
                child: None,
            };
            if server.launch().await {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// The URL the backends are given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: clients see their connections drop) and wait
    /// until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = within("redis-server to exit", child.wait()).await;
        }
    }

    /// Start the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        assert!(
            self.launch().await,
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Start the server on `self.port`; whether it answers PING. `false` when
    /// it exited first (the port was taken).
    async fn launch(&mut self) -> bool {
        let mut child = Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let answered = within("redis-server to answer PING", async {
            loop {
                if ping(self.port).await {
                    return true;
                }
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        if answered {
            self.child = Some(child);
        }
        answered
    }
}

/// Whether a Redis server on `port` answers PING with PONG.
async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut answer)).await,
        Ok(Ok(_)) if &answer == b"+PONG\r\n"
    )
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
