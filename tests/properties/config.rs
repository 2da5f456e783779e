//! The config loader: [`config::from_str`] on any text, on TOML built from the real keys
//! with random (often wrong) values, and on valid configs mangled byte by byte.
//!
//! Texts are validated against a fresh folder, so relative paths lead nowhere and no
//! certificate loads: every HTTPS listener is an error, never a panic.

use std::collections::HashSet;

use albatross::config::model::{Action, Config, Protocol};
use albatross::config::{self, validate, ConfigError, Origin};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

/// The valid configs of the test suite, mangled by the mutation property.
const VALID: [&str; 4] = [
    include_str!("../config/valid/every-feature-http.toml"),
    include_str!("../config/valid/minimal.toml"),
    include_str!("../config/valid/fast-timings.toml"),
    config::DEFAULT_CONFIG,
];

/// Run `property` on texts from `strategy`, each validated with the origin of a config
/// file in an empty temporary folder.
fn check_texts(
    strategy: impl Strategy<Value = String>,
    property: impl Fn(&str, &Origin) -> Result<(), TestCaseError>,
) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let origin = Origin {
        name: "props.toml".to_string(),
        base_dir: dir.path().to_path_buf(),
    };
    let mut runner = TestRunner::new(crate::config());
    if let Err(e) = runner.run(&strategy, |text| property(&text, &origin)) {
        panic!("{e}");
    }
}

/// Validate `text` and check what must hold whatever it is: every error and warning
/// located inside the text, with a message; a valid text gives a model that keeps the
/// model's promises. Returns whether the text was valid.
fn load(text: &str, origin: &Origin) -> Result<bool, TestCaseError> {
    // `from_str` is `validate` with the warnings logged; validating quietly returns them.
    let v = validate::validate_quietly(text, origin);
    located(text, &v.warnings)?;
    match v.result {
        Ok(c) => {
            valid_model(&c)?;
            Ok(true)
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "an error list without errors");
            located(text, &errors.0)?;
            // Displaying them never fails either.
            let _ = errors.to_string();
            Ok(false)
        }
    }
}

/// Every located problem points at a line of `text`, and at a column of that line or
/// just past its end.
fn located(text: &str, problems: &[ConfigError]) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    for e in problems {
        prop_assert!(!e.message.trim().is_empty(), "an empty message: {:?}", e);
        match (e.line, e.column) {
            (None, None) => {}
            (None, Some(_)) => prop_assert!(false, "a column without a line: {:?}", e),
            (Some(line), column) => {
                prop_assert!(
                    (1..=lines.len()).contains(&line),
                    "line {} of {}: {:?}",
                    line,
                    lines.len(),
                    e
                );
                if let Some(column) = column {
                    let width = lines[line - 1].chars().count();
                    prop_assert!(
                        (1..=width + 1).contains(&column),
                        "column {} of a line of {} characters: {:?}",
                        column,
                        width,
                        e
                    );
                }
            }
        }
    }
    Ok(())
}

/// What the model promises (config/model.rs): at least one listener; TLS exactly on
/// HTTPS listeners (never here: no certificate loads); rules in ascending, unique
/// priorities 1–50000, each with a condition; actions within ALB's ranges and naming
/// target groups that exist; unique target group names of ALB's shape; health-check
/// timeouts below their intervals.
fn valid_model(c: &Config) -> Result<(), TestCaseError> {
    prop_assert!(!c.listeners.is_empty());
    for l in &c.listeners {
        prop_assert_eq!(l.tls.is_some(), l.protocol == Protocol::Https);
        prop_assert!(l.tls.is_none(), "a certificate loaded from an empty folder");
        for pair in l.rules.windows(2) {
            prop_assert!(pair[0].priority < pair[1].priority);
        }
        for r in &l.rules {
            prop_assert!((1..=50_000).contains(&r.priority));
            prop_assert!(!r.conditions.is_empty());
            valid_action(c, &r.action)?;
        }
        valid_action(c, &l.default_action)?;
    }
    let mut names = HashSet::new();
    for tg in &c.target_groups {
        prop_assert!(names.insert(tg.name.as_str()), "{} twice", tg.name);
        prop_assert!(!tg.name.is_empty() && tg.name.len() <= 32);
        prop_assert!(tg
            .name
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_alphanumeric()));
        prop_assert!(tg.health_check.timeout < tg.health_check.interval);
    }
    Ok(())
}

fn valid_action(c: &Config, a: &Action) -> Result<(), TestCaseError> {
    match a {
        Action::Forward(f) => {
            prop_assert!((1..=5).contains(&f.target_groups.len()));
            prop_assert!(f.target_groups.iter().any(|w| w.weight > 0));
            for w in &f.target_groups {
                prop_assert!(w.id.0 < c.target_groups.len());
                prop_assert!(w.weight <= 999);
            }
        }
        Action::Redirect(r) => prop_assert!(r.status_code == 301 || r.status_code == 302),
        Action::FixedResponse(f) => {
            prop_assert!(matches!(f.status_code / 100, 2 | 4 | 5) && f.status_code < 600);
            prop_assert!(f.message_body.chars().count() <= 1024);
        }
    }
    Ok(())
}

/// Any text: printable-ish noise, TOML punctuation soup, and any string at all.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\",.'#a-z_0-9 \\t\\n\\r-]{0,300}",
        "\\PC{0,200}",
    ]
}

/// A key of a table: its name, whether a valid table needs it, values that are valid
/// on their own (the first ones most likely) and values that are not.
struct Key {
    name: &'static str,
    required: bool,
    good: &'static [&'static str],
    bad: &'static [&'static str],
}

const fn key(
    name: &'static str,
    required: bool,
    good: &'static [&'static str],
    bad: &'static [&'static str],
) -> Key {
    Key {
        name,
        required,
        good,
        bad,
    }
}

const DURATION: &[&str] = &["60", "\"2m\"", "\"250ms\"", "\"1h30m\"", "1", "\"1s\""];
const BAD_DURATION: &[&str] = &[
    "0",
    "-1",
    "100000",
    "\"0s\"",
    "\"-5s\"",
    "\"1x\"",
    "\"99999999999999h\"",
    "1.5",
    "\"\"",
];
const BOOL: &[&str] = &["true", "false"];
const BAD_BOOL: &[&str] = &["\"true\"", "1"];

const LOAD_BALANCER: &[Key] = &[
    key("idle_timeout", false, DURATION, BAD_DURATION),
    key(
        "xff_header_processing",
        false,
        &["\"append\"", "\"preserve\"", "\"remove\""],
        &["\"Append\""],
    ),
    key("xff_client_port", false, BOOL, BAD_BOOL),
    key("preserve_host_header", false, BOOL, BAD_BOOL),
    key("drop_invalid_header_fields", false, BOOL, BAD_BOOL),
    key(
        "desync_mitigation_mode",
        false,
        &["\"monitor\"", "\"defensive\"", "\"strictest\""],
        &["\"off\""],
    ),
    key("http2_enabled", false, BOOL, BAD_BOOL),
    key(
        "client_keep_alive",
        false,
        &["3600", "\"1h\"", "60"],
        BAD_DURATION,
    ),
    key("tls_handshake_timeout", false, DURATION, BAD_DURATION),
    key("header_read_timeout", false, DURATION, BAD_DURATION),
    key("connect_timeout", false, DURATION, BAD_DURATION),
    key("shutdown_timeout", false, DURATION, BAD_DURATION),
    key(
        "max_connections",
        false,
        &["1", "100"],
        &["0", "-1", "9223372036854775807"],
    ),
    key(
        "stickiness_secret",
        false,
        &["\"a shared secret of enough length\""],
        &["\"short\"", "\"\""],
    ),
    key(
        "name",
        false,
        &["\"albatross\"", "\"a-b\""],
        &["\"-bad-\"", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""],
    ),
    key(
        "region",
        false,
        &["\"us-east-1\"", "\"eu-west-3\""],
        &["\"\"", "\"eu west\""],
    ),
    key(
        "account_id",
        false,
        &["\"000000000000\"", "\"123456789012\""],
        &["\"123\"", "\"abcdefghijkl\""],
    ),
];

const ADMIN: &[Key] = &[
    key(
        "listen",
        false,
        &["\"127.0.0.1:0\"", "\"[::1]:0\""],
        &["\"0.0.0.0:9900\"", "\"nonsense\""],
    ),
    key(
        "credentials",
        false,
        &["{ access_key_id = \"AKID\", secret_access_key = \"secret\" }"],
        &[
            "{ access_key_id = \"AKID\" }",
            "{}",
            "{ access_key_id = \"\", secret_access_key = \"s\" }",
        ],
    ),
];

const LOG: &[Key] = &[key(
    "path",
    true,
    &["\"logs/access.log\"", "\"a/../b.log\""],
    &["\"\"", "\" \""],
)];

const LISTENER: &[Key] = &[
    key(
        "address",
        false,
        &["\"127.0.0.1\"", "\"0.0.0.0\"", "\"::1\""],
        &["\"bogus\"", "\"127.0.0.1:80\""],
    ),
    key("port", true, &["0"], &["80", "65535", "65536", "-1"]),
    key("protocol", true, &["\"HTTP\""], &["\"HTTPS\"", "\"http\""]),
    key(
        "ssl_policy",
        false,
        &[],
        &["\"ELBSecurityPolicy-TLS13-1-2-2021-06\"", "\"bogus\""],
    ),
    key(
        "certificates",
        false,
        &[],
        &[
            "[ { cert = \"missing/c.pem\", key = \"missing/k.pem\" } ]",
            "[ { cert = \".\", key = \"\" } ]",
            "[]",
        ],
    ),
];

const FORWARD: &[Key] = &[
    key(
        "target_group",
        true,
        &["\"app\""],
        &["\"canary\"", "\"nope\"", "\"\""],
    ),
    key(
        "target_groups",
        false,
        &["[ { name = \"app\", weight = 1 }, { name = \"canary\", weight = 3 } ]"],
        &[
            "[ { name = \"app\", weight = 0 } ]",
            "[ { name = \"app\", weight = 1000 } ]",
            "[ { name = \"app\" }, { name = \"app\" } ]",
            "[]",
        ],
    ),
    key(
        "stickiness",
        false,
        &["{ duration = \"1h\" }", "{ enabled = false }"],
        &["{ duration = 0 }", "{ enabled = true }"],
    ),
];

const REDIRECT: &[Key] = &[
    key(
        "protocol",
        true,
        &["\"HTTPS\"", "\"#{protocol}\""],
        &["\"ftp\"", "\"\""],
    ),
    key(
        "host",
        false,
        &["\"#{host}\"", "\"www.#{host}\""],
        &["\"#{\"", "\"\""],
    ),
    key(
        "port",
        true,
        &["\"8443\"", "443"],
        &["\"0\"", "70000", "\"#{path}\""],
    ),
    key(
        "path",
        false,
        &["\"/#{path}\"", "\"/new/#{path}\""],
        &["\"nopath\"", "\"/#{unknown}\""],
    ),
    key("query", false, &["\"#{query}\"", "\"a=b\""], &["\"?a\""]),
    key(
        "status_code",
        true,
        &["\"HTTP_301\"", "\"HTTP_302\""],
        &["301", "\"HTTP_303\""],
    ),
];

const FIXED: &[Key] = &[
    key(
        "status_code",
        true,
        &["200", "\"503\"", "404"],
        &["600", "\"abc\"", "199", "302"],
    ),
    key(
        "content_type",
        false,
        &["\"text/plain\"", "\"application/json\""],
        &["\"x/y\""],
    ),
    key(
        "message_body",
        false,
        &["\"\"", "\"hello\"", "\"é\""],
        &["\"\\u0000\""],
    ),
];

/// Conditions: each a table with one of these keys.
const CONDITION: &[Key] = &[
    key(
        "host_header",
        true,
        &[
            "[\"*.example.com\"]",
            "[\"EXAMPLE.com\", \"x?y.example.com\"]",
        ],
        &["[]", "[\"a b\"]"],
    ),
    key(
        "path_pattern",
        true,
        &["[\"/api/*\"]", "[\"/a?c\"]"],
        &["[\"/é\"]", "[]"],
    ),
    key(
        "http_header",
        true,
        &["{ name = \"X-A\", values = [\"on\"] }"],
        &[
            "{ name = \"bad name\", values = [\"x\"] }",
            "{ name = \"X-A\" }",
        ],
    ),
    key(
        "http_request_method",
        true,
        &["[\"GET\"]", "[\"POST\", \"X_Y-Z\"]"],
        &["[\"get\"]"],
    ),
    key(
        "query_string",
        true,
        &[
            "[ { key = \"v\", value = \"2\" } ]",
            "[ { value = \"*\" } ]",
        ],
        &["[ { key = \"\", value = \"\" } ]", "[]"],
    ),
    key(
        "source_ip",
        true,
        &["[\"10.0.0.0/8\"]", "[\"::1/128\"]"],
        &["[\"300.0.0.0/8\"]", "[\"10.0.0.1\"]"],
    ),
];

const TARGET_GROUP: &[Key] = &[
    key("protocol", false, &["\"HTTP\"", "\"HTTPS\""], &["\"TCP\""]),
    key(
        "algorithm",
        false,
        &[
            "\"round_robin\"",
            "\"least_outstanding_requests\"",
            "\"weighted_random\"",
        ],
        &["\"x\""],
    ),
    key(
        "deregistration_delay",
        false,
        &["0", "30", "\"5m\""],
        &["3601", "-1"],
    ),
    key("slow_start", false, &["0", "30", "\"1m\""], &["10", "1000"]),
    key(
        "stickiness",
        false,
        &[
            "{ type = \"lb_cookie\", duration = \"1d\" }",
            "{ type = \"app_cookie\", cookie_name = \"S\", duration = \"12h\" }",
            "{ enabled = false }",
        ],
        &[
            "{ type = \"app_cookie\" }",
            "{ type = \"app_cookie\", cookie_name = \"AWSALB\" }",
            "{ duration = \"8d\" }",
        ],
    ),
    key(
        "targets",
        false,
        &[
            "[ \"127.0.0.1:9001\" ]",
            "[ { dns = \"localhost:9003\" }, \"[::1]:9004\" ]",
        ],
        &["[ { dns = \"nope\" } ]", "[ \"bogus\" ]", "[ 1 ]"],
    ),
    key(
        "health_check",
        false,
        &[
            "{ path = \"/health\", interval = 10, timeout = 5 }",
            "{ matcher = \"200-299\", port = \"traffic-port\" }",
            "{ port = 9999, matcher = \"200,204\", healthy_threshold = 2 }",
        ],
        &[
            "{ timeout = 30, interval = 10 }",
            "{ matcher = \"299-200\" }",
            "{ matcher = \"200,,x\" }",
            "{ port = 0 }",
            "{ healthy_threshold = 1, unhealthy_threshold = 11 }",
            "{ path = \"no-slash\" }",
        ],
    ),
];

const BACKEND: &[Key] = &[
    key("listen", true, &["\"127.0.0.1:0\""], &["\"bogus\""]),
    key("id", false, &["\"b1\""], &["\"\""]),
    key(
        "ping_interval",
        false,
        &["0", "25", "\"25s\""],
        &["-1", "\"1x\""],
    ),
    key("ping_timeout", false, &["0", "20", "\"20s\""], &["-1"]),
    key(
        "redis",
        false,
        &["\"redis://127.0.0.1:6379\""],
        &["\"rediss://x\"", "\"http://x\""],
    ),
];

/// A value of any TOML type, for any key.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,20}",
        "\"[ -!#-\\[\\]-~]{0,12}\"",
        Just("true".to_string()),
        Just("1.5".to_string()),
        Just("nan".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{}".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

/// How one key of a table is written, if at all.
#[derive(Debug, Clone)]
struct Choice {
    present: u8,
    value: u8,
    pick: Index,
    other: String,
}

fn choice() -> impl Strategy<Value = Choice> {
    (0u8..100, 0u8..100, any::<Index>(), any_value()).prop_map(|(present, value, pick, other)| {
        Choice {
            present,
            value,
            pick,
            other,
        }
    })
}

/// A value for key `k`: mostly a valid one, sometimes one invalid for the key, rarely
/// one of any type.
fn value(k: &Key, c: &Choice) -> String {
    match c.value {
        0..=96 if !k.good.is_empty() => c.pick.get(k.good).to_string(),
        0..=98 if !k.bad.is_empty() => c.pick.get(k.bad).to_string(),
        _ => c.other.clone(),
    }
}

/// `key = value` pairs of a table: required keys nearly always, optional ones now and
/// then, each with a [`value`]; rarely a key twice or a key no table has.
fn pairs(keys: &'static [Key]) -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::collection::vec(choice(), keys.len()),
        0u8..100,
        any_value(),
    )
        .prop_map(move |(choices, extra, other)| {
            let mut out = Vec::new();
            for (k, c) in keys.iter().zip(choices) {
                // Keys with no valid value (TLS keys on HTTP listeners) only rarely.
                let present = match (k.good.is_empty(), k.required) {
                    (true, _) => c.present < 2,
                    (false, true) => c.present < 98,
                    (false, false) => c.present < 30,
                };
                if present {
                    out.push((k.name.to_string(), value(k, &c)));
                }
            }
            match extra {
                0 => out.push(("bogus_key".to_string(), other)),
                1 if !out.is_empty() => out.push(out[0].clone()),
                _ => {}
            }
            out
        })
}

/// `{ k = v, … }`.
fn inline(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", items.join(", "))
}

/// A table's lines `k = v`.
fn lines(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// An action table: a type and that type's keys, now and then a key of another type
/// or a type that does not exist.
fn action() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        14 => pairs(FORWARD).prop_map(|p| ("\"forward\"", p)),
        7 => pairs(REDIRECT).prop_map(|p| ("\"redirect\"", p)),
        7 => pairs(FIXED).prop_map(|p| ("\"fixed_response\"", p)),
        1 => pairs(FIXED).prop_map(|p| ("\"redirect\"", p)),
        1 => pairs(REDIRECT).prop_map(|p| ("\"bogus\"", p)),
    ];
    kind.prop_map(|(kind, mut p)| {
        p.insert(0, ("type".to_string(), kind.to_string()));
        inline(&p)
    })
}

/// A rule's conditions: one to three of different kinds, each a table with one key;
/// rarely none, an empty table, two of a kind or two keys in one table.
fn conditions() -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence((0..CONDITION.len()).collect::<Vec<_>>(), 1..=3),
        prop::collection::vec(choice(), 3),
        0u8..100,
    )
        .prop_map(|(kinds, choices, odd)| {
            let mut tables: Vec<Vec<(String, String)>> = kinds
                .iter()
                .zip(&choices)
                .map(|(&i, c)| vec![(CONDITION[i].name.to_string(), value(&CONDITION[i], c))])
                .collect();
            match odd {
                0 => tables.clear(),
                1 => tables.push(Vec::new()),
                2 => tables.push(tables[0].clone()),
                3 if tables.len() > 1 => {
                    let second = tables.remove(1);
                    tables[0].extend(second);
                }
                _ => {}
            }
            let items: Vec<String> = tables.iter().map(|t| inline(t)).collect();
            format!("[ {} ]", items.join(", "))
        })
}

/// A rule with a priority unique in its listener unless the value is a wrong one.
fn rule(priority: usize) -> impl Strategy<Value = String> {
    (0u8..100, conditions(), 0u8..100, action()).prop_map(
        move |(how, conditions, has_action, action)| {
            let priority = match how {
                0..=96 => priority.to_string(),
                97 => "0".to_string(),
                98 => "50001".to_string(),
                _ => "1".to_string(),
            };
            let mut text = format!("[[listener.rule]]\npriority = {priority}\n");
            if how != 99 {
                text.push_str(&format!("conditions = {conditions}\n"));
            }
            if has_action < 95 {
                text.push_str(&format!("action = {action}\n"));
            }
            text
        },
    )
}

fn listener() -> impl Strategy<Value = String> {
    (
        pairs(LISTENER),
        0u8..100,
        action(),
        (0..4usize).prop_flat_map(|n| (1..=n).map(|i| rule(i * 10)).collect::<Vec<_>>()),
    )
        .prop_map(|(p, how, default_action, rules)| {
            // Now and then a `[listener]` table where an array of tables belongs.
            let header = if how < 3 {
                "[listener]"
            } else {
                "[[listener]]"
            };
            let mut text = format!("{header}\n{}", lines(&p));
            if how < 97 {
                text.push_str(&format!("default_action = {default_action}\n"));
            }
            for r in rules {
                text.push_str(&r);
            }
            text
        })
}

/// Target groups `app` and `canary` (the names actions use), sometimes a third or a
/// name twice.
fn target_groups() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        8 => Just(None),
        1 => Just(Some("\"app\"")),
        1 => Just(Some("\"-bad\"")),
    ];
    (
        pairs(TARGET_GROUP),
        pairs(TARGET_GROUP),
        prop::option::weighted(0.1, (name, pairs(TARGET_GROUP))),
    )
        .prop_map(|(app, canary, third)| {
            let mut text = format!("[[target_group]]\nname = \"app\"\n{}", lines(&app));
            text.push_str(&format!(
                "[[target_group]]\nname = \"canary\"\n{}",
                lines(&canary)
            ));
            if let Some((name, p)) = third {
                text.push_str("[[target_group]]\n");
                if let Some(n) = name {
                    text.push_str(&format!("name = {n}\n"));
                }
                text.push_str(&lines(&p));
            }
            text
        })
}

/// A config from the real keys: each table present or not, listeners with rules,
/// target groups and backends, in any order.
fn grammar_config() -> impl Strategy<Value = String> {
    let table = |name: &'static str, keys: &'static [Key]| {
        prop::option::of(pairs(keys).prop_map(move |p| format!("[{name}]\n{}", lines(&p))))
    };
    (
        table("load_balancer", LOAD_BALANCER),
        table("admin", ADMIN),
        table("access_log", LOG),
        table("connection_log", LOG),
        // Rarely no listener at all.
        prop_oneof![1 => Just(0usize), 19 => 1usize..3]
            .prop_flat_map(|n| prop::collection::vec(listener(), n)),
        prop::option::weighted(0.95, target_groups()),
        prop::collection::vec(
            pairs(BACKEND).prop_map(|p| format!("[[backend]]\n{}", lines(&p))),
            0..=2,
        ),
        any::<Index>(),
    )
        .prop_map(
            |(lb, admin, log, clog, listeners, groups, backends, seed)| {
                let mut parts: Vec<String> = [lb, admin, log, clog, groups]
                    .into_iter()
                    .flatten()
                    .collect();
                parts.extend(listeners);
                parts.extend(backends);
                // The tables in another order (rules stay under their listener).
                let k = seed.index(parts.len().max(1)).min(parts.len());
                parts.rotate_left(k);
                parts.join("\n")
            },
        )
}

/// One change to a text's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copy a range of the text to another place (duplicating keys and tables).
    Copy(Index, usize, Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..4),
        "[\\[\\]{}=\",.'#\\n 0-9a-z]{1,4}".prop_map(String::into_bytes),
    ];
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        3 => (any::<Index>(), bytes).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1usize..200, any::<Index>()).prop_map(|(i, n, to)| Mutation::Copy(i, n, to)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut b = text.as_bytes().to_vec();
    for m in mutations {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match m {
            Mutation::Replace(i, byte) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] = *byte;
            }
            Mutation::Replace(..) => {}
            Mutation::Insert(i, bytes) => {
                let i = at(i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Copy(i, n, to) => {
                let i = at(i, b.len());
                let piece = b[i..(i + n).min(b.len())].to_vec();
                let to = at(to, b.len());
                b.splice(to..to, piece);
            }
            Mutation::Truncate(i) => {
                let i = at(i, b.len());
                b.truncate(i);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// The fixtures are valid as they are, so the properties below start from valid texts
/// (the embedded default is not: its certificate is not in the empty folder).
#[test]
fn config_loader_fixtures_are_valid() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let origin = Origin {
        name: "props.toml".to_string(),
        base_dir: dir.path().to_path_buf(),
    };
    for text in &VALID[..3] {
        assert!(config::from_str(text, &origin).is_ok(), "{text}");
    }
    assert!(config::from_str(config::DEFAULT_CONFIG, &origin).is_err());
}

/// Any text: `from_str` returns (never panics), and its errors are located inside the
/// text.
#[test]
fn config_loader_any_text() {
    check_texts(any_text(), |text, origin| {
        let valid = load(text, origin)?;
        prop_assert_eq!(config::from_str(text, origin).is_ok(), valid);
        Ok(())
    });
}

/// TOML written with the real tables and keys and random, often wrong, values: a
/// valid model or located errors, never a panic.
#[test]
fn config_loader_grammar() {
    check_texts(grammar_config(), |text, origin| {
        load(text, origin).map(|_| ())
    });
}

/// Valid configs with bytes replaced, inserted, deleted, copied elsewhere or cut off:
/// a valid model or located errors, never a panic.
#[test]
fn config_loader_mutations() {
    let strategy = (any::<Index>(), prop::collection::vec(mutation(), 1..6))
        .prop_map(|(which, mutations)| mutate(VALID[which.index(VALID.len())], &mutations));
    check_texts(strategy, |text, origin| load(text, origin).map(|_| ()));
}
