//! Config fixtures and examples: every file in `tests/config/valid/` loads, every file in
//! `tests/config/invalid/` fails with exactly the errors its header announces, and every
//! example in `config/` (the embedded default included) is parsed.
//!
//! Expectation headers in invalid fixtures: `# expect: LINE:COL: message`, or
//! `# expect: -: message` for an error with no place. `{dir}` stands for the fixture's folder;
//! a message ending in `...` matches as a prefix (for OS error texts).

use std::fs;
use std::path::{Path, PathBuf};

use albatross::config::{self, Origin};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new("tests/config").join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn valid_fixtures_load() {
    for path in fixtures("valid") {
        if let Err(e) = config::load_file(&path) {
            panic!("{} should be valid:\n{e}", path.display());
        }
    }
}

#[test]
fn invalid_fixtures_fail_with_the_announced_errors() {
    for path in fixtures("invalid") {
        let text = fs::read_to_string(&path).unwrap();
        let dir = path.parent().unwrap().display().to_string();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| {
                let e = e.replace("{dir}", &dir);
                match e.strip_prefix("-: ") {
                    Some(msg) => format!("{}: {msg}", path.display()),
                    None => format!("{}:{e}", path.display()),
                }
            })
            .collect();
        assert!(
            !expected.is_empty(),
            "{} announces no error",
            path.display()
        );
        let got: Vec<String> = match config::load_file(&path) {
            Ok(_) => panic!("{} should be invalid", path.display()),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        let matches = |exp: &str, got: &str| match exp.strip_suffix("...") {
            Some(prefix) => got.starts_with(prefix),
            None => got == exp,
        };
        let same =
            expected.len() == got.len() && expected.iter().zip(&got).all(|(e, g)| matches(e, g));
        assert!(
            same,
            "{}:\nexpected:\n  {}\ngot:\n  {}",
            path.display(),
            expected.join("\n  "),
            got.join("\n  ")
        );
    }
}

#[test]
fn an_unreadable_file_is_one_error_naming_it() {
    let path = Path::new("tests/config/no-such-file.toml");
    let errs = config::load_file(path).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    let shown = errs.to_string();
    assert!(
        shown.starts_with("tests/config/no-such-file.toml: cannot read the config file: "),
        "{shown}"
    );
}

#[test]
fn load_file_records_the_source_and_resolves_paths_against_its_folder() {
    let path = Path::new("tests/config/valid/every-feature-http.toml");
    let c = config::load_file(path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path));
    assert_eq!(
        c.access_log.unwrap().path,
        Path::new("tests/config/valid/logs/access.log")
    );
}

#[test]
fn warnings_are_returned_for_sub_minimum_durations() {
    let v = config::check_file(Path::new("tests/config/valid/fast-timings.toml"));
    assert!(v.result.is_ok());
    let shown: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "tests/config/valid/fast-timings.toml:3:16: `idle_timeout` is 300ms, below ALB's minimum of 1s; accepted",
            "tests/config/valid/fast-timings.toml:15:29: `interval` is 200ms, below ALB's minimum of 5s; accepted",
            "tests/config/valid/fast-timings.toml:15:48: `timeout` is 100ms, below ALB's minimum of 2s; accepted",
        ]
    );
}

#[test]
fn describe_shows_the_effective_model() {
    let c = config::load_file(Path::new("tests/config/valid/every-feature-http.toml")).unwrap();
    let text = config::describe(&c);
    // rules in evaluation order, then the default action
    let order: Vec<usize> = ["rule 10 ", "rule 20 ", "rule 30 ", "rule 40 ", "default "]
        .iter()
        .map(|r| {
            text.find(r)
                .unwrap_or_else(|| panic!("no `{r}` in:\n{text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    for line in [
        "listener 127.0.0.1:8080 HTTP",
        "then forward to app (weight 90), canary (weight 10)",
        "then redirect HTTP_302 to #{protocol}://#{host}:#{port}/new/#{path}?#{query}&from=old",
        "then fixed_response 503 (application/json, 2 characters)",
        "if host_header \"status.*\" and query_string \"v=2\" or \"*=beta\"",
        "target_group canary",
        "  slow_start                        1m",
        "  stickiness                        off",
        "  health_check.port                 9999",
        "  health_check.matcher              200,204",
        "  health_check.interval             30s",
        "backend backend-1 listen 127.0.0.1:9001 ping_interval 25s ping_timeout 20s redis none",
        "backend 127.0.0.1:9002 listen 127.0.0.1:9002 ping_interval off ping_timeout off redis redis://127.0.0.1:6379",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

/// A folder holding `certs/localhost.pem` and `certs/localhost-key.pem`, as the examples expect.
fn folder_with_certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    fs::create_dir(&certs).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    fs::write(certs.join("localhost.pem"), ck.cert.pem()).unwrap();
    fs::write(
        certs.join("localhost-key.pem"),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    dir
}

fn examples() -> Vec<(String, String)> {
    let mut out = vec![(
        "config/default.toml".to_string(),
        config::DEFAULT_CONFIG.to_string(),
    )];
    for entry in fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") && !path.ends_with("default.toml") {
            out.push((
                path.display().to_string(),
                fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(out.len() > 1, "no examples besides the default");
    out
}

#[test]
fn the_embedded_default_is_config_default_toml() {
    assert_eq!(
        config::DEFAULT_CONFIG,
        fs::read_to_string("config/default.toml").unwrap()
    );
}

#[test]
fn default_config_without_certificates_names_the_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin {
        name: "default.toml".to_string(),
        base_dir: dir.path().to_path_buf(),
    };
    let errs = config::from_str(config::DEFAULT_CONFIG, &origin).unwrap_err();
    let shown: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
    let d = dir.path().display();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(
        shown[0].starts_with(&format!(
            "default.toml:22:27: cannot read certificate file `{d}/certs/localhost.pem`: "
        )),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with(&format!(
            "default.toml:22:56: cannot read key file `{d}/certs/localhost-key.pem`: "
        )),
        "{shown:#?}"
    );
}

/// Every example in config/ loads, with certificates generated for it.
#[test]
fn examples_load_with_generated_certificates() {
    let dir = folder_with_certificates();
    for (name, text) in examples() {
        let origin = Origin {
            name: name.clone(),
            base_dir: dir.path().to_path_buf(),
        };
        match config::from_str(&text, &origin) {
            Ok(c) => {
                let https = c.listeners.iter().find(|l| l.tls.is_some());
                if let Some(l) = https {
                    let tls = l.tls.as_ref().unwrap();
                    assert_eq!(tls.ssl_policy, "ELBSecurityPolicy-TLS13-1-2-2021-06");
                    assert_eq!(
                        tls.certificates[0].cert,
                        dir.path().join("certs/localhost.pem")
                    );
                }
                assert!(!config::describe(&c).is_empty());
            }
            Err(e) => panic!("{name}:\n{e}"),
        }
    }
}

/// A key that belongs to another certificate.
#[test]
fn a_key_of_another_certificate_is_reported_at_the_entry() {
    let dir = folder_with_certificates();
    let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
    fs::write(
        dir.path().join("other-key.pem"),
        other.signing_key.serialize_pem(),
    )
    .unwrap();
    let text = "[[listener]]\nport = 443\nprotocol = \"HTTPS\"\ncertificates = [ { cert = \"certs/localhost.pem\", key = \"other-key.pem\" } ]\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n";
    let origin = Origin {
        name: "t.toml".to_string(),
        base_dir: dir.path().to_path_buf(),
    };
    let errs = config::from_str(text, &origin).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    assert!(
        errs.to_string()
            .starts_with("t.toml:4:18: cannot use certificate `"),
        "{errs}"
    );
}
