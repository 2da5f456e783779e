//! Desync mitigation: AWS's classified request corpus (tests/desync-corpus) as a table of
//! raw heads with their class and the verdict in each mode, then the three modes end to
//! end with real sockets.

mod support;

use std::net::SocketAddr;

use albatross::config::model::DesyncMitigationMode::*;
use albatross::proxy::desync::{self, Mitigation, RequestSafetyTier};
use albatross::proxy::error::RequestError;
use albatross::proxy::head::{assess, HeadAction};
use support::*;
use tokio::net::TcpStream;
use yaml_rust2::{Yaml, YamlLoader};

/// The corpus' own escape convention: `\xNN` inside single-quoted YAML strings.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
            }
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => unescape(s),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        other => panic!("unexpected YAML value {other:?}"),
    }
}

struct Case {
    file: String,
    name: String,
    raw: Vec<u8>,
    tier: String,
}

/// Every case of the corpus as a raw head, built the way the library's own tests build it.
fn corpus() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/desync-corpus");
    let mut cases = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in docs[0].as_vec().unwrap() {
            let mut raw = format!(
                "{} {} {}\r\n",
                text(&case["method"]),
                text(&case["uri"]),
                text(&case["version"])
            );
            if let Some(headers) = case["headers"].as_vec() {
                for h in headers {
                    raw.push_str(&format!("{}: {}\r\n", text(&h["name"]), text(&h["value"])));
                }
            }
            raw.push_str("\r\n");
            cases.push(Case {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                name: text(&case["name"]),
                raw: raw.into_bytes(),
                tier: text(&case["expected"]["tier"]),
            });
        }
    }
    cases
}

#[test]
fn corpus_verdicts_follow_albs_table_in_every_mode() {
    let cases = corpus();
    assert!(cases.len() > 150, "only {} cases", cases.len());
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        let class = desync::classify(&case.raw);
        // The class comes from the library on the raw head; the corpus states the class of
        // the parsed request, which differs only where raw parsing itself changes the
        // picture (the library's own tests allow the same).
        let tier = format!("{:?}", class.tier);
        if tier != case.tier {
            *counts
                .entry(format!("raw class differs ({})", case.file))
                .or_default() += 1;
        }
        for mode in [Monitor, Defensive, Strictest] {
            let a = assess(&case.raw, mode);
            assert_eq!(a.classification, class, "{}", case.name);
            let what = format!("{}: {:?} in {mode:?}", case.name, class);
            match (desync::mitigation(mode, class.tier), a.action) {
                (Mitigation::Block, HeadAction::Reject(e)) => {
                    assert!(
                        matches!(
                            e,
                            RequestError::BadRequest
                                | RequestError::UriTooLong
                                | RequestError::VersionNotSupported
                        ),
                        "{what}: {e:?}"
                    );
                }
                (Mitigation::Block, other) => panic!("{what} must be blocked, got {other:?}"),
                (Mitigation::AllowThenClose, HeadAction::Serve { close_after }) => {
                    assert!(close_after, "{what}")
                }
                (Mitigation::Allow, HeadAction::Serve { close_after }) => {
                    assert!(!close_after, "{what}")
                }
                // Allowed by the mode, refused anyway: heads no HTTP/1.1 server can frame
                // (bad or conflicting Content-Length, header syntax httparse refuses), an
                // unsupported Transfer-Encoding (501) or version (505). A compliant one only
                // when it cannot be parsed at all (e.g. an empty URI).
                (_, HeadAction::Reject(e)) => {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let unparsable = httparse::Request::new(&mut headers)
                        .parse(&case.raw)
                        .is_err();
                    assert!(
                        class.tier != RequestSafetyTier::Compliant
                            || unparsable
                            || matches!(
                                e,
                                RequestError::NotImplemented | RequestError::VersionNotSupported
                            ),
                        "{what} was refused with {e:?}"
                    );
                    *counts
                        .entry(format!(
                            "{:?} refused in {mode:?} with {}",
                            class.tier,
                            e.status()
                        ))
                        .or_default() += 1;
                }
            }
        }
    }
    // The summary shows up with --nocapture.
    println!("{} corpus cases", cases.len());
    for (k, v) in counts {
        println!("{v:>4}  {k}");
    }
}

fn config(mode: &str, target: SocketAddr) -> String {
    format!(
        r#"
[load_balancer]
desync_mitigation_mode = "{mode}"

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ "{target}" ]
"#
    )
}

/// Send `head` and then a compliant request on the same connection; return everything
/// the client received until the proxy closed (or the safety timeout of the second read).
async fn send(addr: SocketAddr, head: &str) -> (String, bool) {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let first = read_response(&mut s).await;
    // Is the connection still open? A second request tells.
    let _ = s
        .write_all(b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let rest = raw_exchange(s, b"").await;
    (first, rest.starts_with("HTTP/1.1 200"))
}

#[tokio::test]
async fn each_mode_end_to_end() {
    let pki = Pki::new();
    let target = echo_head_target().await;
    let compliant = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    // Acceptable (GetHeadZeroContentLength).
    let acceptable = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    // Ambiguous (DuplicateContentLength).
    let ambiguous =
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
    // Severe (BothTeClPresent is ambiguous; a chunked TE spelled twice is severe).
    let severe = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    for (name, head) in [
        ("acceptable", acceptable),
        ("ambiguous", ambiguous),
        ("severe", severe),
    ] {
        let c = desync::classify(
            head.split("\r\n\r\n")
                .next()
                .map(|h| format!("{h}\r\n\r\n"))
                .unwrap()
                .as_bytes(),
        );
        assert_eq!(format!("{:?}", c.tier).to_ascii_lowercase(), name, "{c:?}");
    }

    // (mode, head, status, client connection kept open)
    let table: &[(&str, &str, u16, bool)] = &[
        ("monitor", compliant, 200, true),
        ("monitor", acceptable, 200, true),
        ("monitor", ambiguous, 200, true),
        ("monitor", severe, 200, true),
        ("defensive", compliant, 200, true),
        ("defensive", acceptable, 200, true),
        ("defensive", ambiguous, 200, false),
        ("defensive", severe, 400, false),
        ("strictest", compliant, 200, true),
        ("strictest", acceptable, 400, false),
        ("strictest", ambiguous, 400, false),
        ("strictest", severe, 400, false),
    ];
    for &(mode, head, status, kept) in table {
        let proxy = start_proxy(&pki, &config(mode, target)).await;
        let (resp, still_open) = send(proxy.listener_addr(0), head).await;
        let what = format!("{mode} {head:?}");
        assert_eq!(status_of(&resp), status, "{what}: {resp}");
        assert_eq!(still_open, kept, "{what}: connection kept open? {resp}");
        if status == 400 {
            assert!(resp.contains("server: awselb/2.0"), "{what}: {resp}");
            assert!(resp.contains("connection: close"), "{what}: {resp}");
        } else {
            // Ambiguous in defensive mode: the target connection is not reused either.
            let to_target = body_of(&resp).to_ascii_lowercase();
            let closes_target = to_target.contains("\r\nconnection: close\r\n");
            assert_eq!(
                closes_target,
                mode == "defensive" && head == ambiguous,
                "{what}: {to_target}"
            );
        }
    }
}
