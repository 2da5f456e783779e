//! The access and connection logs: ALB's fields, one line per request (the load
//! balancer's own answers included) and one per tunnel when it closes, parsed field by
//! field; reopening after a rename.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use albatross::ProxyHandle;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn config(pki: &Pki, app: SocketAddr, slow: SocketAddr, refused: SocketAddr) -> String {
    let cert = pki.leaf("localhost", &["localhost"]);
    format!(
        r#"
[load_balancer]
idle_timeout = "1s"

[access_log]
path = "logs/access.log"

[connection_log]
path = "logs/connection.log"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 1
conditions = [ {{ path_pattern = ["/fixed"] }} ]
action = {{ type = "fixed_response", status_code = 200, content_type = "text/plain", message_body = "fixed" }}

[[listener.rule]]
priority = 2
conditions = [ {{ path_pattern = ["/moved"] }} ]
action = {{ type = "redirect", path = "/elsewhere", status_code = "HTTP_302" }}

[[listener.rule]]
priority = 3
conditions = [ {{ path_pattern = ["/broken"] }} ]
action = {{ type = "forward", target_group = "broken" }}

[[listener.rule]]
priority = 4
conditions = [ {{ path_pattern = ["/empty"] }} ]
action = {{ type = "forward", target_group = "empty" }}

[[listener.rule]]
priority = 5
conditions = [ {{ path_pattern = ["/slow"] }} ]
action = {{ type = "forward", target_group = "slow" }}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{cert}", key = "{key}" }} ]
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]
health_check = {{ enabled = false }}

[[target_group]]
name = "slow"
targets = [ "{slow}" ]
health_check = {{ enabled = false }}

[[target_group]]
name = "broken"
targets = [ "{refused}" ]
health_check = {{ enabled = false }}

[[target_group]]
name = "empty"
"#,
        cert = cert.0.display(),
        key = cert.1.display(),
    )
}

/// Split a line as Athena's regex reads it: quoted fields whole (escapes undone),
/// the others at spaces.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut field = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next()),
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
    }
    out
}

/// ALB's field names, in order (1-based in ALB's docs).
const NAMES: [&str; 33] = [
    "type",
    "time",
    "elb",
    "client:port",
    "target:port",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target:port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
    "transformed_host",
    "transformed_uri",
    "request_transform_status",
];

/// One parsed line: field by ALB's name.
struct Entry(Vec<String>);

impl Entry {
    fn parse(line: &str) -> Entry {
        let f = fields(line);
        assert_eq!(f.len(), 33, "33 fields in {line}");
        Entry(f)
    }

    fn get(&self, name: &str) -> &str {
        let i = NAMES
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no field {name}"));
        &self.0[i]
    }

    fn num(&self, name: &str) -> u64 {
        self.get(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} = {}", self.get(name)))
    }

    /// Every field that has a fixed expected value here.
    fn check(&self, expected: &[(&str, &str)]) {
        for (name, value) in expected {
            assert_eq!(self.get(name), *value, "field {name} of {:?}", self.0);
        }
    }

    fn check_times(&self, dispatched: bool) {
        for name in [
            "request_processing_time",
            "target_processing_time",
            "response_processing_time",
        ] {
            let v = self.get(name);
            if dispatched {
                let secs: f64 = v.parse().unwrap_or_else(|_| panic!("{name} = {v}"));
                assert!(
                    (0.0..10.0).contains(&secs) && v.split('.').nth(1).map(str::len) == Some(3),
                    "{name} = {v}"
                );
            } else {
                assert_eq!(v, "-1", "{name}");
            }
        }
        for name in ["time", "request_creation_time"] {
            let t = self.get(name);
            assert!(
                humantime::parse_rfc3339(t).is_ok() && t.len() == 27 && t.ends_with('Z'),
                "{name} = {t} (microseconds, UTC)"
            );
        }
    }
}

struct Logs {
    dir: PathBuf,
}

impl Logs {
    fn read(&self, name: &str, proxy: &ProxyHandle) -> Vec<String> {
        proxy.flush_logs();
        read_lines(&self.dir.join(name))
    }

    /// The one line whose `request` field contains `needle`.
    fn entry(&self, proxy: &ProxyHandle, needle: &str) -> Entry {
        let lines: Vec<String> = self
            .read("access.log", proxy)
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        assert_eq!(lines.len(), 1, "one line with {needle}: {lines:#?}");
        Entry::parse(&lines[0])
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Send `request` on a new connection and read to the end; (status, whole response,
/// the client's local address).
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String, SocketAddr) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let resp = raw_exchange(stream, request.as_bytes()).await;
    (status_of(&resp), resp, local)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test-agent/1.0\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn every_kind_of_request_gets_albs_line() {
    let pki = Pki::new();
    let app = id_target("app").await;
    let (slow, _arrived) = delayed_target(Duration::from_secs(3)).await;
    let refused = closed_port().await;
    let proxy = start_proxy(&pki, &config(&pki, app.addr, slow, refused)).await;
    let logs = Logs {
        dir: pki.dir.path().join("logs"),
    };
    let http = proxy.listener_addr(0);
    let port = http.port();
    let elb = albatross::arn::Arns::new(&proxy.config().load_balancer).lb_dimension();
    let app_arn = albatross::arn::Arns::new(&proxy.config().load_balancer).target_group("app");

    // http, forwarded.
    let (status, resp, local) = exchange(http, &get("/page?q=1")).await;
    assert_eq!(status, 200);
    let e = logs.entry(&proxy, "/page?q=1");
    let request_line = format!("GET http://localhost:{port}/page?q=1 HTTP/1.1");
    let client = local.to_string();
    let target = app.addr.to_string();
    e.check(&[
        ("type", "http"),
        ("elb", &elb),
        ("client:port", &client),
        ("target:port", &target),
        ("elb_status_code", "200"),
        ("target_status_code", "200"),
        ("request", &request_line),
        ("user_agent", "test-agent/1.0"),
        ("ssl_cipher", "-"),
        ("ssl_protocol", "-"),
        ("target_group_arn", &app_arn),
        ("domain_name", "-"),
        ("chosen_cert_arn", "-"),
        ("matched_rule_priority", "0"),
        ("actions_executed", "forward"),
        ("redirect_url", "-"),
        ("error_reason", "-"),
        ("target:port_list", &target),
        ("target_status_code_list", "200"),
        ("classification", "-"),
        ("classification_reason", "-"),
        ("transformed_host", "-"),
        ("transformed_uri", "-"),
        ("request_transform_status", "-"),
    ]);
    e.check_times(true);
    assert_eq!(e.num("received_bytes"), get("/page?q=1").len() as u64);
    assert_eq!(
        e.num("sent_bytes"),
        resp.len() as u64,
        "the whole response, head included"
    );
    assert!(
        e.get("trace_id").starts_with("Root=1-"),
        "{}",
        e.get("trace_id")
    );
    assert!(e.get("conn_trace_id").starts_with("TID_") && e.get("conn_trace_id").len() == 36);

    // A client's trace id: the line carries the header the target got (ALB's `Self=`
    // added before the client's fields).
    let traced = "GET /traced HTTP/1.1\r\nHost: localhost\r\nX-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678;Sampled=1\r\nConnection: close\r\n\r\n";
    let (status, _, _) = exchange(http, traced).await;
    assert_eq!(status, 200);
    let e = logs.entry(&proxy, "/traced ");
    let trace = e.get("trace_id");
    assert!(
        trace.starts_with("Self=1-")
            && trace.ends_with(";Root=1-67891233-abcdef012345678912345678;Sampled=1"),
        "{trace}"
    );

    // The load balancer's own answers: fixed response, redirect, 502, 503, 504, 400.
    let (_, resp, _) = exchange(http, &get("/fixed")).await;
    let e = logs.entry(&proxy, "/fixed ");
    e.check(&[
        ("elb_status_code", "200"),
        ("target_status_code", "-"),
        ("target:port", "-"),
        ("matched_rule_priority", "1"),
        ("actions_executed", "fixed-response"),
        ("target_group_arn", "-"),
        ("target:port_list", "-"),
        ("target_status_code_list", "-"),
    ]);
    e.check_times(false);
    assert_eq!(e.num("sent_bytes"), resp.len() as u64);

    let (status, resp, _) = exchange(http, &get("/moved?x=1")).await;
    assert_eq!(status, 302);
    let location = resp
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap()
        .to_string();
    let e = logs.entry(&proxy, "/moved?x=1");
    e.check(&[
        ("elb_status_code", "302"),
        ("matched_rule_priority", "2"),
        ("actions_executed", "redirect"),
        ("redirect_url", &location),
        ("target:port", "-"),
    ]);
    e.check_times(false);

    let (status, _, _) = exchange(http, &get("/broken")).await;
    assert_eq!(status, 502);
    let refused_s = refused.to_string();
    let e = logs.entry(&proxy, "/broken");
    e.check(&[
        ("elb_status_code", "502"),
        ("target_status_code", "-"),
        ("target:port", &refused_s),
        ("matched_rule_priority", "3"),
        ("actions_executed", "forward"),
    ]);

    let (status, _, _) = exchange(http, &get("/empty")).await;
    assert_eq!(status, 503);
    let e = logs.entry(&proxy, "/empty");
    e.check(&[
        ("elb_status_code", "503"),
        ("target:port", "-"),
        ("target_group_arn", "-"),
        ("matched_rule_priority", "4"),
    ]);
    e.check_times(false);

    let (status, _, _) = exchange(http, &get("/slow")).await;
    assert_eq!(status, 504, "the target answers after the 1 s idle timeout");
    let e = logs.entry(&proxy, "/slow");
    let slow_s = slow.to_string();
    e.check(&[
        ("elb_status_code", "504"),
        ("target_status_code", "-"),
        ("target:port", &slow_s),
        ("matched_rule_priority", "5"),
    ]);

    let bad = "GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n";
    let (status, _, local) = exchange(http, bad).await;
    assert_eq!(status, 400);
    let client = local.to_string();
    let lines = logs.read("access.log", &proxy);
    let line = lines
        .iter()
        .find(|l| l.contains(&format!(" {client} ")))
        .expect("a line for the 400");
    let e = Entry::parse(line);
    e.check(&[
        ("elb_status_code", "400"),
        ("request", "- - - "),
        ("target:port", "-"),
        ("matched_rule_priority", "-"),
        ("actions_executed", "-"),
        ("user_agent", "-"),
    ]);
    assert_eq!(e.num("received_bytes"), bad.len() as u64);

    // 460: the client leaves before the answer.
    let mut gone = TcpStream::connect(http).await.unwrap();
    gone.write_all(get("/slow?leaving").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gone);
    let mut found = None;
    within("the 460 line", async {
        loop {
            proxy.flush_logs();
            if let Some(l) = read_lines(&logs.dir.join("access.log"))
                .into_iter()
                .find(|l| l.contains("/slow?leaving"))
            {
                found = Some(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let e = Entry::parse(&found.unwrap());
    e.check(&[
        ("elb_status_code", "460"),
        ("target_status_code", "-"),
        ("sent_bytes", "0"),
    ]);
}

#[tokio::test]
async fn https_h2_ws_and_wss_lines_and_the_connection_log() {
    let pki = Pki::new();
    let app = id_target("app").await;
    let refused = closed_port().await;
    let proxy = start_proxy(&pki, &config(&pki, app.addr, refused, refused)).await;
    let logs = Logs {
        dir: pki.dir.path().join("logs"),
    };
    let http = proxy.listener_addr(0);
    let https = proxy.listener_addr(1);

    // https over HTTP/1.1.
    let connector = TlsConnector::from(pki.client_config(&[b"http/1.1"]));
    let tcp = TcpStream::connect(https).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (protocol, cipher) = {
        let c = tls.get_ref().1;
        (
            format!("{:?}", c.protocol_version().unwrap()),
            format!("{:?}", c.negotiated_cipher_suite().unwrap().suite()),
        )
    };
    assert_eq!(protocol, "TLSv1_3");
    assert_eq!(cipher, "TLS13_AES_128_GCM_SHA256");
    let resp = raw_exchange(tls, get("/secure").as_bytes()).await;
    assert_eq!(status_of(&resp), 200);
    let e = logs.entry(&proxy, "/secure");
    e.check(&[
        ("type", "https"),
        ("ssl_protocol", "TLSv1.3"),
        ("ssl_cipher", "TLS_AES_128_GCM_SHA256"),
        ("domain_name", "localhost"),
        ("elb_status_code", "200"),
    ]);
    assert!(
        e.get("request").starts_with("GET https://localhost:"),
        "{}",
        e.get("request")
    );
    // Its connection-log line, linked by conn_trace_id.
    let conn_lines = logs.read("connection.log", &proxy);
    let conn = conn_lines
        .iter()
        .find(|l| l.split(' ').nth(2) == Some(&local.port().to_string()))
        .expect("a connection-log line for the connection");
    let c: Vec<&str> = conn.split(' ').collect();
    assert_eq!(c.len(), 12, "{conn}");
    assert_eq!(
        &c[1..7],
        &[
            "127.0.0.1",
            &local.port().to_string(),
            &https.port().to_string(),
            "TLSv1.3",
            "TLS_AES_128_GCM_SHA256",
            c[6]
        ]
    );
    assert!(
        c[6].parse::<f64>().unwrap() >= 0.0,
        "handshake latency {}",
        c[6]
    );
    assert_eq!(&c[7..11], &["\"-\"", "-", "-", "Success"]);
    assert_eq!(c[11], e.get("conn_trace_id"));

    // A failed handshake is in the connection log too.
    let mut junk = TcpStream::connect(https).await.unwrap();
    let junk_port = junk.local_addr().unwrap().port().to_string();
    junk.write_all(b"this is not TLS\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = within("the refused handshake", junk.read_to_end(&mut rest)).await;
    let mut failed = None;
    within("the failed handshake's line", async {
        loop {
            if let Some(l) = logs
                .read("connection.log", &proxy)
                .into_iter()
                .find(|l| l.split(' ').nth(2) == Some(junk_port.as_str()))
            {
                failed = Some(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let failed = failed.unwrap();
    let f: Vec<&str> = failed.split(' ').collect();
    assert_eq!(&f[4..7], &["-", "-", "-1"], "{failed}");
    assert!(f[10].starts_with("Failed:"), "{failed}");

    // h2.
    let connector = TlsConnector::from(pki.client_config(&[b"h2"]));
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("https://localhost/over-h2")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(within("h2 response", resp).await.unwrap().status(), 200);
    let e = logs.entry(&proxy, "/over-h2");
    e.check(&[
        ("type", "h2"),
        ("elb_status_code", "200"),
        ("ssl_protocol", "TLSv1.3"),
    ]);
    assert!(
        e.get("request").ends_with(" HTTP/2.0"),
        "{}",
        e.get("request")
    );

    // ws: no line while the tunnel is open; one with the whole tunnel's bytes once closed.
    let mut ws = TcpStream::connect(http).await.unwrap();
    let upgrade = upgrade_request("localhost", "/chat");
    ws.write_all(upgrade.as_bytes()).await.unwrap();
    let head = read_head(&mut ws).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.write_all(b"hello tunnel").await.unwrap();
    let mut echo = [0u8; 12];
    within("the echo", ws.read_exact(&mut echo)).await.unwrap();
    proxy.flush_logs();
    assert!(
        !logs
            .read("access.log", &proxy)
            .iter()
            .any(|l| l.contains("/chat")),
        "no line before the tunnel closes"
    );
    drop(ws);
    eventually("the tunnel closed", || proxy.tunnels().is_empty()).await;
    let e = logs.entry(&proxy, "/chat");
    let target = app.addr.to_string();
    e.check(&[
        ("type", "ws"),
        ("elb_status_code", "101"),
        ("target_status_code", "101"),
        ("target:port", &target),
        ("actions_executed", "forward"),
    ]);
    assert_eq!(
        e.num("received_bytes"),
        (upgrade.len() + 12) as u64,
        "the head and the tunnel's bytes"
    );
    assert_eq!(
        e.num("sent_bytes"),
        (head.len() + 12) as u64,
        "the 101 and the tunnel's bytes"
    );

    // wss.
    let connector = TlsConnector::from(pki.client_config(&[b"http/1.1"]));
    let tcp = TcpStream::connect(https).await.unwrap();
    let mut wss = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    wss.write_all(upgrade_request("localhost", "/secure-chat").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut wss).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    wss.write_all(b"abc").await.unwrap();
    let mut echo = [0u8; 3];
    within("the echo", wss.read_exact(&mut echo)).await.unwrap();
    drop(wss);
    eventually("the tunnel closed", || proxy.tunnels().is_empty()).await;
    let e = logs.entry(&proxy, "/secure-chat");
    e.check(&[
        ("type", "wss"),
        ("elb_status_code", "101"),
        ("ssl_protocol", "TLSv1.3"),
        ("domain_name", "localhost"),
    ]);
}

#[tokio::test]
async fn reopening_after_a_rename_starts_a_new_file() {
    let pki = Pki::new();
    let app = id_target("app").await;
    let refused = closed_port().await;
    let proxy = start_proxy(&pki, &config(&pki, app.addr, refused, refused)).await;
    let dir = pki.dir.path().join("logs");
    let http = proxy.listener_addr(0);
    exchange(http, &get("/before")).await;
    proxy.flush_logs();
    std::fs::rename(dir.join("access.log"), dir.join("access.log.1")).unwrap();
    exchange(http, &get("/after-rename")).await;
    proxy.flush_logs();
    proxy.reopen_logs();
    exchange(http, &get("/after-reopen")).await;
    proxy.flush_logs();
    let old = read_lines(&dir.join("access.log.1"));
    assert!(
        old.iter().any(|l| l.contains("/before"))
            && old.iter().any(|l| l.contains("/after-rename")),
        "{old:#?}"
    );
    let new = read_lines(&dir.join("access.log"));
    assert_eq!(new.len(), 1, "{new:#?}");
    assert!(new[0].contains("/after-reopen"));
}
