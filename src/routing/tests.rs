use std::net::{IpAddr, Ipv4Addr};

use http::request::Parts;

use super::glob::{matches_uri_component, Case, Glob, Syntax};
use super::Router;
use crate::config::model::{Action, Condition, FixedResponse, Listener, Protocol, Rule};

/// Request headers in a table row.
type Headers<'a> = &'a [(&'a str, &'a str)];

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

fn fixed(body: &str) -> Action {
    Action::FixedResponse(FixedResponse {
        status_code: 200,
        content_type: None,
        message_body: body.to_string(),
    })
}

fn rule(priority: u32, conditions: Vec<Condition>) -> Rule {
    Rule {
        priority,
        conditions,
        action: fixed(&format!("rule {priority}")),
    }
}

fn listener(rules: Vec<Rule>) -> Listener {
    Listener {
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 80,
        protocol: Protocol::Http,
        tls: None,
        rules,
        default_action: fixed("default"),
    }
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn get(uri: &str) -> Parts {
    head("GET", uri, &[])
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// Whether a one-rule listener with `condition` picks the rule for this request.
fn matches(condition: Condition, request: &Parts, source: IpAddr) -> bool {
    let router = Router::new(&listener(vec![rule(1, vec![condition])]));
    router.route(request, source).priority == Some(1)
}

fn body(action: &Action) -> &str {
    match action {
        Action::FixedResponse(f) => &f.message_body,
        other => panic!("unexpected action {other:?}"),
    }
}

#[test]
fn glob_wildcards() {
    let rows: &[(&str, &str, bool)] = &[
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("abc", "ab", false),
        ("", "", true),
        ("", "a", false),
        ("*", "", true),
        ("*", "anything/at.all", true),
        ("**", "", true),
        ("a*", "a", true),
        ("a*", "abc", true),
        ("a*", "ba", false),
        ("*c", "c", true),
        ("*c", "abc", true),
        ("*c", "abcd", false),
        ("a*c", "ac", true),
        ("a*c", "a/b.c", true),
        ("a*c", "ab", false),
        ("*b*", "b", true),
        ("*b*", "abc", true),
        ("*b*", "ac", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "acb", false),
        ("a*b*b*c", "abbc", true),
        ("a*b*b*c", "abc", false),
        ("*ab*ab*", "abab", true),
        ("*ab*ab*", "aba", false),
        ("*aab", "aaab", true),
        ("?", "a", true),
        ("?", "", false),
        ("?", "ab", false),
        ("a?c", "abc", true),
        ("a?c", "a/c", true),
        ("a?c", "ac", false),
        ("??*", "ab", true),
        ("??*", "a", false),
        ("*?", "", false),
        ("*?", "x", true),
        ("a*?c", "abc", true),
        ("a*?c", "ac", false),
        ("*.example.com", "www.example.com", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", ".example.com", true),
        ("/img/*", "/img/", true),
        ("/img/*", "/img/a/b.png", true),
        ("/img/*", "/images", false),
        ("/img/*", "/img", false),
    ];
    for &(pattern, text, expected) in rows {
        let glob = Glob::new(pattern, Case::Sensitive, Syntax::Plain);
        assert_eq!(
            glob.matches(text.as_bytes()),
            expected,
            "{pattern:?} vs {text:?}"
        );
    }
}

#[test]
fn glob_case_folding() {
    let rows: &[(&str, Case, &str, bool)] = &[
        ("Example.COM", Case::Insensitive, "example.com", true),
        ("example.com", Case::Insensitive, "EXAMPLE.Com", true),
        ("*.Example.com", Case::Insensitive, "WWW.EXAMPLE.COM", true),
        ("/Api/*", Case::Sensitive, "/api/x", false),
        ("/api/*", Case::Sensitive, "/API/x", false),
        ("/api/*", Case::Sensitive, "/api/X", true),
    ];
    for &(pattern, case, text, expected) in rows {
        let glob = Glob::new(pattern, case, Syntax::Plain);
        assert_eq!(
            glob.matches(text.as_bytes()),
            expected,
            "{pattern:?} vs {text:?}"
        );
    }
}

#[test]
fn glob_query_syntax_escapes_and_decoding() {
    let rows: &[(&str, &str, bool)] = &[
        (r"a\*b", "a*b", true),
        (r"a\*b", "axb", false),
        (r"a\?", "a?", true),
        (r"a\?", "ab", false),
        (r"\\*", r"\anything", true),
        (r"a\", r"a\", true),
        ("a*", "a%2Fb", true),
        ("a b", "a%20b", true),
        ("a%20b", "a%20b", true),
        ("a%20b", "a b", true),
        ("a%2ab", "a*b", true),
        ("a%2ab", "axb", false),
        ("a?c", "a%41c", true),
        ("a?c", "a%4", false),
        ("100%", "100%", true),
        ("a%zz", "a%zz", true),
        ("a+b", "a+b", true),
        ("a b", "a+b", false),
        ("*%", "x%25", true),
        ("*b", "a%62", true),
        ("A*", "%61bc", true),
    ];
    for &(pattern, raw, expected) in rows {
        let glob = Glob::new(pattern, Case::Insensitive, Syntax::Query);
        assert_eq!(
            matches_uri_component(&glob, raw.as_bytes()),
            expected,
            "{pattern:?} vs {raw:?}"
        );
    }
}

#[test]
fn glob_has_no_backtracking_blowup() {
    // A naive recursive matcher takes exponential time on these.
    let mut text = vec![b'a'; 100_000];
    text.push(b'x');
    let started = std::time::Instant::now();
    let miss = Glob::new("*a*aaaaaaaaaab*x", Case::Sensitive, Syntax::Plain);
    assert!(!miss.matches(&text[..]));
    let hit = Glob::new("*a*a*a*a*a*a*x", Case::Insensitive, Syntax::Plain);
    assert!(hit.matches(&text[..]));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn host_header() {
    let h = |values: &[&str]| Condition::HostHeader(strings(values));
    let rows: &[(&[&str], &str, Headers, bool)] = &[
        (&["example.com"], "/", &[("host", "example.com")], true),
        (&["example.com"], "/", &[("host", "EXAMPLE.com")], true),
        (&["EXAMPLE.COM"], "/", &[("host", "example.com")], true),
        (&["example.com"], "/", &[("host", "example.com:8080")], true),
        (&["example.com"], "/", &[("host", "www.example.com")], false),
        (
            &["*.example.com"],
            "/",
            &[("host", "www.example.com")],
            true,
        ),
        (&["*.example.com"], "/", &[("host", "example.com")], false),
        (
            &["*.example.com"],
            "/",
            &[("host", "a.example.com:443")],
            true,
        ),
        (&["status.*"], "/", &[("host", "status.internal.net")], true),
        (
            &["app?.example.com"],
            "/",
            &[("host", "app1.example.com")],
            true,
        ),
        (
            &["app?.example.com"],
            "/",
            &[("host", "app.example.com")],
            false,
        ),
        (&["a.com", "b.com"], "/", &[("host", "b.com")], true),
        (&["a.com", "b.com"], "/", &[("host", "c.com")], false),
        // The port is not part of the host: a pattern naming it never matches.
        (
            &["example.com:8080"],
            "/",
            &[("host", "example.com:8080")],
            false,
        ),
        // Absolute form: the request line's authority wins over Host.
        (
            &["dns.example.com"],
            "http://dns.example.com/x",
            &[("host", "other.com")],
            true,
        ),
        (
            &["other.com"],
            "http://dns.example.com/x",
            &[("host", "other.com")],
            false,
        ),
        (
            &["dns.example.com"],
            "http://dns.example.com:8080/x",
            &[],
            true,
        ),
        (&["*"], "/", &[("host", "[::1]:8080")], true),
        // Only the first Host header counts.
        (
            &["b.com"],
            "/",
            &[("host", "a.com"), ("host", "b.com")],
            false,
        ),
        (
            &["a.com"],
            "/",
            &[("host", "a.com"), ("host", "b.com")],
            true,
        ),
        // No host at all: no host condition holds.
        (&["*"], "/", &[], false),
    ];
    for &(values, uri, headers, expected) in rows {
        let request = head("GET", uri, headers);
        assert_eq!(
            matches(h(values), &request, PEER),
            expected,
            "{values:?} vs {uri} {headers:?}"
        );
    }
}

#[test]
fn host_from_http2_authority() {
    let mut request = get("https://api.example.com/v1");
    request.version = http::Version::HTTP_2;
    let condition = Condition::HostHeader(strings(&["API.example.com"]));
    assert!(matches(condition, &request, PEER));
}

#[test]
fn path_pattern() {
    let p = |values: &[&str]| Condition::PathPattern(strings(values));
    let rows: &[(&[&str], &str, bool)] = &[
        (&["/"], "/", true),
        (&["/api/*"], "/api/v1/users", true),
        (&["/api/*"], "/api/", true),
        (&["/api/*"], "/api", false),
        (&["/api/*"], "/API/v1", false),
        (&["/API/*"], "/api/v1", false),
        (&["/img/*"], "/images", false),
        (&["/img/*"], "/img/a.png", true),
        (&["*.png"], "/a/b/c.png", true),
        (&["*.png"], "/a/b/c.PNG", false),
        (&["/a?c"], "/abc", true),
        (&["/a?c"], "/ac", false),
        (&["/*/edit"], "/users/7/edit", true),
        // Never the query.
        (&["/search"], "/search?q=1", true),
        (&["*q=1"], "/search?q=1", false),
        (&["/search*"], "/search?q=1", true),
        // Raw, not percent-decoded.
        (&["/a%20b"], "/a%20b", true),
        (&["/a b"], "/a%20b", false),
        // Absolute form: the path only.
        (&["/x"], "http://example.com/x?y=1", true),
        (&["/x", "/y"], "/y", true),
        (&["/x", "/y"], "/z", false),
    ];
    for &(values, uri, expected) in rows {
        assert_eq!(
            matches(p(values), &get(uri), PEER),
            expected,
            "{values:?} vs {uri}"
        );
    }
}

#[test]
fn http_header() {
    let c = |name: &str, values: &[&str]| Condition::HttpHeader {
        name: name.to_string(),
        values: strings(values),
    };
    let rows: &[(&str, &[&str], Headers, bool)] = &[
        ("X-Canary", &["on"], &[("x-canary", "on")], true),
        ("x-canary", &["on"], &[("X-CANARY", "ON")], true),
        ("X-Canary", &["ON"], &[("x-canary", "on")], true),
        ("X-Canary", &["on"], &[("x-canary", "off")], false),
        ("X-Canary", &["on"], &[], false),
        ("X-Canary", &["*"], &[("x-canary", "")], true),
        ("X-Env", &["dev*"], &[("x-env", "Dev-eu")], true),
        ("X-Env", &["dev*"], &[("x-env", "prod")], false),
        ("X-Env", &["*prod", "dev"], &[("x-env", "eu-PROD")], true),
        (
            "User-Agent",
            &["*Mobile*"],
            &[("user-agent", "Mozilla (mobile) x")],
            true,
        ),
        (
            "User-Agent",
            &["*Mobile*"],
            &[("user-agent", "Mozilla desktop")],
            false,
        ),
        // Each occurrence of a repeated header is tried.
        ("X-Tag", &["b"], &[("x-tag", "a"), ("x-tag", "b")], true),
        ("X-Tag", &["c"], &[("x-tag", "a"), ("x-tag", "b")], false),
        // One occurrence with a comma list is one value, not two.
        ("X-Tag", &["b"], &[("x-tag", "a, b")], false),
        ("X-Tag", &["*b"], &[("x-tag", "a, b")], true),
        // Another header's value is not looked at.
        ("X-Tag", &["a"], &[("x-other", "a")], false),
    ];
    for &(name, values, headers, expected) in rows {
        let request = head("GET", "/", headers);
        assert_eq!(
            matches(c(name, values), &request, PEER),
            expected,
            "{name}: {values:?} vs {headers:?}"
        );
    }
}

#[test]
fn http_request_method() {
    let m = |values: &[&str]| Condition::HttpRequestMethod(strings(values));
    let rows: &[(&[&str], &str, bool)] = &[
        (&["GET"], "GET", true),
        (&["GET"], "get", false),
        (&["get"], "GET", false),
        (&["GET", "POST"], "POST", true),
        (&["GET", "POST"], "PUT", false),
        (&["PURGE"], "PURGE", true),
        (&["PURGE"], "Purge", false),
        (&["CUSTOM_VERB"], "CUSTOM_VERB", true),
        (&["G*"], "GET", false),
    ];
    for &(values, method, expected) in rows {
        let request = head(method, "/", &[]);
        assert_eq!(
            matches(m(values), &request, PEER),
            expected,
            "{values:?} vs {method}"
        );
    }
}

#[test]
fn query_string() {
    let q = |pairs: &[(Option<&str>, &str)]| {
        Condition::QueryString(
            pairs
                .iter()
                .map(|(k, v)| (k.map(str::to_string), v.to_string()))
                .collect(),
        )
    };
    type Row<'a> = (&'a [(Option<&'a str>, &'a str)], &'a str, bool);
    let rows: &[Row] = &[
        (&[(Some("v"), "2")], "/?v=2", true),
        (&[(Some("v"), "2")], "/?v=3", false),
        (&[(Some("v"), "2")], "/?w=2", false),
        (&[(Some("v"), "2")], "/", false),
        (&[(Some("v"), "2")], "/?a=1&v=2&b=3", true),
        (&[(Some("V"), "beta")], "/?v=BETA", true),
        (&[(Some("lang"), "en*")], "/?lang=en-GB", true),
        (&[(Some("lang"), "en?")], "/?lang=en", false),
        (&[(Some("l*"), "fr")], "/?locale=fr", true),
        // Key omitted: any parameter's value.
        (&[(None, "beta")], "/?x=1&feature=beta", true),
        (&[(None, "beta")], "/?beta=1", false),
        (&[(None, "*example*")], "/?q=an-example-here", true),
        // Any pair of the condition suffices.
        (&[(Some("v"), "2"), (None, "beta")], "/?z=beta", true),
        (&[(Some("v"), "2"), (None, "beta")], "/?z=alpha", false),
        // Key and value must come from the same parameter.
        (&[(Some("a"), "2")], "/?a=1&b=2", false),
        // Splitting: on `&`, then the first `=`; empty pieces ignored.
        (&[(Some("a"), "1=2")], "/?a=1=2", true),
        (&[(Some("b"), "2")], "/?a=1&&b=2&", true),
        (&[(Some("flag"), "")], "/?flag", true),
        (&[(Some("flag"), "*")], "/?flag", true),
        (&[(Some("flag"), "?*")], "/?flag", false),
        (&[(Some("flag"), "")], "/?flag=", true),
        // Percent-decoded after splitting; `+` is not a space.
        (&[(Some("q"), "a b")], "/?q=a%20b", true),
        (&[(Some("q"), "a&b")], "/?q=a%26b", true),
        (&[(Some("my key"), "1")], "/?my%20key=1", true),
        (&[(Some("q"), "a b")], "/?q=a+b", false),
        (&[(Some("q"), "a+b")], "/?q=a+b", true),
        // Escaped wildcards are literal.
        (&[(Some("q"), r"\*")], "/?q=*", true),
        (&[(Some("q"), r"\*")], "/?q=x", false),
        (&[(Some("q"), r"what\?")], "/?q=what%3F", true),
        (&[(Some("q"), r"what\?")], "/?q=whatx", false),
    ];
    for &(pairs, uri, expected) in rows {
        assert_eq!(
            matches(q(pairs), &get(uri), PEER),
            expected,
            "{pairs:?} vs {uri}"
        );
    }
}

#[test]
fn source_ip() {
    let s =
        |cidrs: &[&str]| Condition::SourceIp(cidrs.iter().map(|c| c.parse().unwrap()).collect());
    let rows: &[(&[&str], &str, bool)] = &[
        (&["10.0.0.0/8"], "10.1.2.3", true),
        (&["10.0.0.0/8"], "11.1.2.3", false),
        (&["192.0.2.10/32"], "192.0.2.10", true),
        (&["192.0.2.10/32"], "192.0.2.11", false),
        (&["10.0.0.0/8", "::1/128"], "::1", true),
        (&["2001:db8::/32"], "2001:db8::42", true),
        (&["2001:db8::/32"], "2001:db9::42", false),
        // IPv4-mapped IPv6 peer against an IPv4 CIDR.
        (&["10.0.0.0/8"], "::ffff:10.9.8.7", true),
        (&["10.0.0.0/8"], "::ffff:11.9.8.7", false),
        (&["::ffff:0:0/96"], "::ffff:10.9.8.7", true),
        // A plain IPv4 peer never matches an IPv6 CIDR.
        (&["::/0"], "10.1.2.3", false),
        (&["0.0.0.0/0"], "2001:db8::1", false),
    ];
    for &(cidrs, peer, expected) in rows {
        let peer: IpAddr = peer.parse().unwrap();
        assert_eq!(
            matches(s(cidrs), &get("/"), peer),
            expected,
            "{cidrs:?} vs {peer}"
        );
    }
}

#[test]
fn source_ip_ignores_forwarded_headers() {
    let condition = Condition::SourceIp(vec!["10.0.0.0/8".parse().unwrap()]);
    let request = head("GET", "/", &[("x-forwarded-for", "10.0.0.1")]);
    assert!(!matches(condition, &request, PEER));
}

#[test]
fn conditions_are_anded_values_ored() {
    let router = Router::new(&listener(vec![rule(
        10,
        vec![
            Condition::PathPattern(strings(&["/api/*", "/v2/*"])),
            Condition::HttpHeader {
                name: "X-Canary".to_string(),
                values: strings(&["on", "yes"]),
            },
            Condition::HttpRequestMethod(strings(&["GET", "POST"])),
        ],
    )]));
    let rows: &[(&str, &str, Headers, Option<u32>)] = &[
        ("GET", "/api/x", &[("x-canary", "on")], Some(10)),
        ("POST", "/v2/x", &[("x-canary", "YES")], Some(10)),
        ("GET", "/api/x", &[], None),
        ("GET", "/other", &[("x-canary", "on")], None),
        ("PUT", "/api/x", &[("x-canary", "on")], None),
    ];
    for &(method, uri, headers, expected) in rows {
        let request = head(method, uri, headers);
        assert_eq!(
            router.route(&request, PEER).priority,
            expected,
            "{method} {uri} {headers:?}"
        );
    }
}

#[test]
fn lowest_priority_wins_regardless_of_file_order() {
    let router = Router::new(&listener(vec![
        rule(30, vec![Condition::PathPattern(strings(&["*"]))]),
        rule(5, vec![Condition::PathPattern(strings(&["/api/*"]))]),
        rule(20, vec![Condition::PathPattern(strings(&["/api/v1/*"]))]),
    ]));
    let rows: &[(&str, u32)] = &[("/api/v1/x", 5), ("/api/y", 5), ("/other", 30)];
    for &(uri, expected) in rows {
        let matched = router.route(&get(uri), PEER);
        assert_eq!(matched.priority, Some(expected), "{uri}");
        assert_eq!(body(matched.action), format!("rule {expected}"), "{uri}");
    }
}

#[test]
fn default_action_when_nothing_matches() {
    let router = Router::new(&listener(vec![
        rule(1, vec![Condition::HostHeader(strings(&["a.example.com"]))]),
        rule(2, vec![Condition::PathPattern(strings(&["/only"]))]),
    ]));
    let request = head("GET", "/elsewhere", &[("host", "b.example.com")]);
    let matched = router.route(&request, PEER);
    assert_eq!(matched.priority, None);
    assert_eq!(body(matched.action), "default");

    let empty = Router::new(&listener(Vec::new()));
    let matched = empty.route(&request, PEER);
    assert_eq!(matched.priority, None);
    assert_eq!(body(matched.action), "default");
}

#[test]
fn rule_without_conditions_always_matches() {
    let router = Router::new(&listener(vec![rule(7, Vec::new())]));
    assert_eq!(router.route(&get("/anything"), PEER).priority, Some(7));
}
