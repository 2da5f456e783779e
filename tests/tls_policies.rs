//! The security policies as a real TLS scanner sees them: testssl.sh scans one HTTPS
//! listener per policy class (TLS 1.2 + 1.3, TLS 1.2 only, TLS 1.3 only), with an ECDSA and
//! an RSA certificate where the TLS 1.2 suites depend on it (and both on one listener, chosen
//! per ClientHello), and every protocol and cipher suite it finds offered must be exactly
//! what `describe()` (DescribeSSLPolicies) lists.
//!
//! The scanner is `$TESTSSL`, else `testssl.sh` (upstream's name) or `testssl` (Debian's)
//! on `PATH`. Without one, the test says so and passes, except under `CI=true`, where a
//! missing scanner is a failure (`.ci/run` installs it). The scans run in parallel, each
//! in its own process group, killed if it outlives [`SCAN_TIMEOUT`].

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use albatross::tls::{openssl_suite_name, policy};
use rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES;
use serde_json::Value;
use tokio::process::Command;

use support::{start_proxy, Pki};

/// Time allowed for one scan (15–70 s each, six at once on two shared cores).
const SCAN_TIMEOUT: Duration = Duration::from_secs(150);

/// testssl.sh's options, before `--jsonfile <file> localhost:<port>`: protocols (`-p`) and
/// each cipher per protocol (`-E`), both by raw sockets where OpenSSL lacks a protocol or
/// suite; SNI `localhost` sent to 127.0.0.1 without any DNS lookup; no colours, no banner;
/// stop at the first scan problem.
const TESTSSL_ARGS: &[&str] = &[
    "-p",
    "-E",
    "--ip",
    "127.0.0.1",
    "--nodns",
    "none",
    "--quiet",
    "--color",
    "0",
    "--warnings",
    "batch",
];

/// The protocols testssl.sh checks, by its JSON ids, and the name `describe()` gives each.
const PROTOCOLS: &[(&str, &str)] = &[
    ("SSLv2", "SSLv2"),
    ("SSLv3", "SSLv3"),
    ("TLS1", "TLSv1"),
    ("TLS1_1", "TLSv1.1"),
    ("TLS1_2", "TLSv1.2"),
    ("TLS1_3", "TLSv1.3"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Ecdsa,
    Rsa,
    /// An RSA certificate (the default) and an ECDSA one for the same name.
    Both,
}

impl Key {
    fn describe(self) -> &'static str {
        match self {
            Key::Ecdsa => "an ECDSA certificate",
            Key::Rsa => "an RSA certificate",
            Key::Both => "an RSA and an ECDSA certificate",
        }
    }
}

/// One listener per policy class, and per key type where the TLS 1.2 suites depend on it.
const LISTENERS: &[(&str, Key)] = &[
    ("ELBSecurityPolicy-TLS13-1-2-2021-06", Key::Ecdsa),
    ("ELBSecurityPolicy-TLS13-1-2-2021-06", Key::Rsa),
    ("ELBSecurityPolicy-TLS13-1-2-2021-06", Key::Both),
    ("ELBSecurityPolicy-2016-08", Key::Ecdsa),
    ("ELBSecurityPolicy-2016-08", Key::Rsa),
    ("ELBSecurityPolicy-TLS13-1-3-2021-06", Key::Ecdsa),
];

/// A cipher suite as testssl.sh reports it: protocol (`TLSv1.2`, `describe()`'s name),
/// hex code (`xc02b`), OpenSSL name, IANA name.
type Suite = (String, String, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_exactly_the_policy_protocols_and_suites() {
    let Some(testssl) = testssl_available() else {
        return;
    };
    let started = Instant::now();
    let pki = Pki::new();
    let ecdsa = pki.leaf("ecdsa", &["localhost"]);
    let rsa = pki.rsa_leaf("rsa", &["localhost"]);
    let mut config = String::new();
    for (policy, key) in LISTENERS {
        let pem = |leaf: &(PathBuf, PathBuf, Vec<u8>)| {
            format!(
                r#"{{ cert = "{}", key = "{}" }}"#,
                leaf.0.display(),
                leaf.1.display()
            )
        };
        let certificates = match key {
            Key::Ecdsa => pem(&ecdsa),
            Key::Rsa => pem(&rsa),
            Key::Both => format!("{}, {}", pem(&rsa), pem(&ecdsa)),
        };
        config += &format!(
            r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
ssl_policy = "{policy}"
certificates = [ {certificates} ]
default_action = {{ type = "fixed_response", status_code = 200, message_body = "ok" }}
"#
        );
    }
    let proxy = start_proxy(&pki, &config).await;
    let out = tempfile::tempdir().unwrap();

    let scans: Vec<_> = (0..LISTENERS.len())
        .map(|i| {
            let json = out.path().join(format!("listener-{i}.json"));
            tokio::spawn(scan(testssl.clone(), proxy.listener_addr(i), json))
        })
        .collect();
    let mut results = Vec::new();
    for scan in scans {
        results.push(scan.await.expect("the scan task"));
    }
    let scanned = started.elapsed();

    let mut failures = Vec::new();
    let mut summary = String::new();
    for ((policy, key), scan) in LISTENERS.iter().zip(results) {
        let what = format!("{policy} with {}", key.describe());
        let findings = match scan {
            Ok(findings) => findings,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        let (versions, _) = policy::describe(policy).expect("a known policy");
        let expected = expected_suites(policy, *key);
        let found = Found::parse(&findings);
        failures.extend(found.problems.iter().map(|p| format!("{what}: {p}")));

        for (id, name) in PROTOCOLS {
            let want = versions.contains(name);
            match found.protocols.get(*id) {
                None => failures.push(format!("{what}: testssl.sh said nothing about {name}")),
                Some(finding) => {
                    let offered = finding.starts_with("offered");
                    let refused = finding.starts_with("not offered");
                    if (want && !offered) || (!want && !refused) {
                        failures.push(format!(
                            "{what}: {name} should {}be offered; testssl.sh: {finding:?}",
                            if want { "" } else { "not " }
                        ));
                    }
                }
            }
        }
        for extra in found.suites.difference(&expected) {
            failures.push(format!("{what}: offered, not in the policy: {extra:?}"));
        }
        for missing in expected.difference(&found.suites) {
            failures.push(format!("{what}: in the policy, not offered: {missing:?}"));
        }

        summary += &format!("{what}:\n");
        for (id, name) in PROTOCOLS {
            let finding = found.protocols.get(*id).map_or("-", String::as_str);
            summary += &format!("  {name}: {finding}\n");
        }
        for (version, hex, openssl, iana) in &found.suites {
            summary += &format!("  {version} {hex} {openssl} {iana}\n");
        }
    }
    eprintln!(
        "{} ({} scans in parallel, {:.1?} with the proxy's start):\n{summary}",
        testssl_version(&testssl).await,
        LISTENERS.len(),
        scanned
    );
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
    proxy.shutdown().await;
}

/// The suites `policy` should offer on a listener with `key` certificates: its TLS 1.3
/// suites, and those of its TLS 1.2 suites that sign with such a key.
fn expected_suites(policy: &str, key: Key) -> BTreeSet<Suite> {
    let (_, names) = policy::describe(policy).expect("a known policy");
    let mut suites = BTreeSet::new();
    for name in names {
        let suite = ALL_CIPHER_SUITES
            .iter()
            .find(|s| openssl_suite_name(s.suite()) == Some(name))
            .unwrap_or_else(|| panic!("{policy} lists {name}, which rustls does not have"));
        let version = match suite.version().version {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => {
                let usable = match key {
                    Key::Ecdsa => name.starts_with("ECDHE-ECDSA-"),
                    Key::Rsa => name.starts_with("ECDHE-RSA-"),
                    Key::Both => true,
                };
                if !usable {
                    continue;
                }
                "TLSv1.2"
            }
            other => panic!("{name} is a {other:?} suite"),
        };
        // rustls calls the TLS 1.3 suites `TLS13_…`; IANA calls them `TLS_…`.
        let rustls_name = suite.suite().as_str().expect("a named suite");
        let iana = match rustls_name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => rustls_name.to_string(),
        };
        suites.insert((
            version.to_string(),
            format!("x{:x}", u16::from(suite.suite())),
            name.to_string(),
            iana,
        ));
    }
    suites
}

/// What one scan found.
#[derive(Default)]
struct Found {
    /// testssl.sh's protocol id (`TLS1_2`) → its finding (`offered`, `not offered`, …).
    protocols: BTreeMap<String, String>,
    suites: BTreeSet<Suite>,
    /// Scan problems and findings that could not be read.
    problems: Vec<String>,
}

impl Found {
    /// Read testssl.sh's flat JSON findings (`--jsonfile`).
    fn parse(findings: &[Value]) -> Found {
        let mut found = Found::default();
        for f in findings {
            let id = f["id"].as_str().unwrap_or_default();
            let severity = f["severity"].as_str().unwrap_or_default();
            let finding = f["finding"].as_str().unwrap_or_default();
            if matches!(severity, "WARN" | "FATAL") || id == "scanProblem" {
                found.problems.push(format!("testssl.sh: {f}"));
            } else if PROTOCOLS.iter().any(|(p, _)| *p == id) {
                found.protocols.insert(id.to_string(), finding.to_string());
            } else if let Some(rest) = id.strip_prefix("cipher-") {
                // `cipher-tls1_2_xc02b`: "TLS 1.2   xc02b   ECDHE-ECDSA-AES128-GCM-SHA256
                // ECDH 253   AESGCM   128   TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
                match Found::suite(rest, finding) {
                    Some(suite) => {
                        found.suites.insert(suite);
                    }
                    None => found
                        .problems
                        .push(format!("unreadable cipher finding: {f}")),
                }
            }
        }
        found
    }

    fn suite(id: &str, finding: &str) -> Option<Suite> {
        let (protocol, hex) = id.rsplit_once('_')?;
        let version = match protocol {
            "ssl2" => "SSLv2",
            "ssl3" => "SSLv3",
            "tls1" => "TLSv1",
            "tls1_1" => "TLSv1.1",
            "tls1_2" => "TLSv1.2",
            "tls1_3" => "TLSv1.3",
            _ => return None,
        };
        let words: Vec<&str> = finding.split_whitespace().collect();
        let at = words.iter().position(|w| *w == hex)?;
        let openssl = words.get(at + 1)?;
        let iana = words.last()?;
        Some((
            version.to_string(),
            hex.to_string(),
            openssl.to_string(),
            iana.to_string(),
        ))
    }
}

/// Scan `addr` into `json`; the findings, or what went wrong with the scan.
async fn scan(testssl: PathBuf, addr: SocketAddr, json: PathBuf) -> Result<Vec<Value>, String> {
    let child = Command::new(&testssl)
        .args(TESTSSL_ARGS)
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("localhost:{}", addr.port()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", testssl.display()))?;
    let group = child.id().and_then(|p| i32::try_from(p).ok());
    let output = match tokio::time::timeout(SCAN_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| format!("testssl.sh failed: {e}"))?,
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: kill(2) of the process group this test started; no memory involved.
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
            return Err(format!("the scan of {addr} took over {SCAN_TIMEOUT:?}"));
        }
    };
    let said = || {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    if !output.status.success() {
        return Err(format!("testssl.sh {}:\n{}", output.status, said()));
    }
    let text = std::fs::read_to_string(&json)
        .map_err(|e| format!("no JSON from testssl.sh ({e}):\n{}", said()))?;
    serde_json::from_str(&text).map_err(|e| format!("testssl.sh wrote bad JSON ({e}):\n{text}"))
}

/// The scanner: `$TESTSSL`, else `testssl.sh` or `testssl` on `PATH`; without one, a note
/// (a failure under `CI=true`).
fn testssl_available() -> Option<PathBuf> {
    let found = match std::env::var_os("TESTSSL") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|path| {
            ["testssl.sh", "testssl"].iter().find_map(|name| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        }),
    };
    if found.is_some() {
        return found;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "testssl.sh is needed for the TLS policy scans and is missing: apt-get install \
         testssl.sh (or set TESTSSL to its path)"
    );
    eprintln!("SKIPPED: testssl.sh is missing (apt-get install testssl.sh)");
    None
}

/// `testssl.sh 3.0.8`: the version the scanner's banner states.
async fn testssl_version(testssl: &Path) -> String {
    let banner = Command::new(testssl)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "    testssl.sh       3.0.8 from https://testssl.sh/" (with escapes around it)
    banner
        .lines()
        .filter(|l| l.contains(" from "))
        .flat_map(str::split_whitespace)
        .find(|w| {
            w.split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|v| format!("testssl.sh {v}"))
        .unwrap_or_else(|| format!("{} (version unknown)", testssl.display()))
}
