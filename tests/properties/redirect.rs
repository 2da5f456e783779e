//! Redirect templates: [`actions::location`] expanding `#{protocol}`, `#{host}`,
//! `#{port}`, `#{path}` and `#{query}` with what the request brought.

use albatross::config::model::Redirect;
use albatross::proxy::actions::{self, RedirectInput};
use http::header::{HeaderValue, LOCATION};
use proptest::prelude::*;

const PLACEHOLDERS: [&str; 5] = ["#{protocol}", "#{host}", "#{port}", "#{path}", "#{query}"];

/// Templates of literal text, placeholders and pieces of them.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[ -~]{0,6}",
        3 => prop::sample::select(PLACEHOLDERS.to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(vec!["#{", "#", "{", "}", "#{#{host}}", "#{unknown}", "/", "?"]).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

/// Input text: what a request may carry, placeholders included.
fn input_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9./%=&-]{0,8}",
        2 => prop::sample::select(PLACEHOLDERS.to_vec()).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|p| p.concat())
}

#[derive(Debug, Clone)]
struct Input {
    protocol: String,
    host: String,
    port: u16,
    path: String,
    query: String,
}

impl Input {
    fn view(&self) -> RedirectInput<'_> {
        RedirectInput {
            protocol: &self.protocol,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: &self.query,
        }
    }
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop_oneof![Just("http".to_string()), Just("https".to_string())],
        input_text(),
        any::<u16>(),
        input_text().prop_map(|p| format!("/{p}")),
        input_text(),
    )
        .prop_map(|(protocol, host, port, path, query)| Input {
            protocol,
            host,
            port,
            path,
            query,
        })
}

/// The reference expansion: one pass over the template, each placeholder replaced by
/// its input (`#{path}` without its leading `/`), text from inputs never read again.
fn expand(template: &str, input: &Input) -> String {
    let port = input.port.to_string();
    let path = input.path.strip_prefix('/').unwrap_or(&input.path);
    let values = [
        input.protocol.as_str(),
        &input.host,
        &port,
        path,
        &input.query,
    ];
    let mut out = String::new();
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (p, v) in PLACEHOLDERS.iter().zip(values) {
            if let Some(after) = rest.strip_prefix(p) {
                out.push_str(v);
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The reference Location: `protocol://host:port/path[?query]`, the protocol lower-case,
/// the path given its `/` when the template left it out.
fn reference_location(r: &Redirect, input: &Input) -> String {
    let protocol = expand(&r.protocol, input).to_ascii_lowercase();
    let host = expand(&r.host, input);
    let port = expand(&r.port, input);
    let mut path = expand(&r.path, input);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let query = expand(&r.query, input);
    let mut loc = format!("{protocol}://{host}:{port}{path}");
    if !query.is_empty() {
        loc.push('?');
        loc.push_str(&query);
    }
    loc
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any templates and any inputs: `location` never panics and equals the reference
    /// (each placeholder replaced by exactly its input, once). The response carries it
    /// as `Location` when it is a valid header value, else it is ALB's 500 page.
    #[test]
    fn redirect_location_matches_reference(
        templates in prop::collection::vec(template(), 5),
        status in prop_oneof![Just(301u16), Just(302u16)],
        input in input(),
    ) {
        let r = Redirect {
            protocol: templates[0].clone(),
            host: templates[1].clone(),
            port: templates[2].clone(),
            path: templates[3].clone(),
            query: templates[4].clone(),
            status_code: status,
        };
        let loc = actions::location(&r, &input.view());
        prop_assert_eq!(&loc, &reference_location(&r, &input));
        let resp = actions::redirect_response(&r, &input.view());
        match (HeaderValue::from_str(&loc), resp) {
            (_, Err(actions::RedirectFailed::UrlTooLong)) => {
                prop_assert!(loc.len() > actions::MAX_LOCATION);
            }
            (Ok(v), Ok(resp)) => {
                prop_assert!(loc.len() <= actions::MAX_LOCATION);
                prop_assert_eq!(resp.status().as_u16(), status);
                prop_assert_eq!(resp.headers().get(LOCATION), Some(&v));
            }
            (Err(_), Err(actions::RedirectFailed::Invalid)) => {}
            (valid, resp) => {
                prop_assert!(false, "{:?} but {:?}", valid.is_ok(), resp.map(|r| r.status()));
            }
        }
    }

    /// A template without placeholders comes back as it is.
    #[test]
    fn redirect_template_without_placeholders_is_kept(text in "[^#]{0,30}", input in input()) {
        let r = Redirect {
            protocol: "https".to_string(),
            host: text.clone(),
            port: "443".to_string(),
            path: format!("/{text}"),
            query: text.clone(),
            status_code: 301,
        };
        let mut want = format!("https://{text}:443/{text}");
        if !text.is_empty() {
            want.push('?');
            want.push_str(&text);
        }
        prop_assert_eq!(actions::location(&r, &input.view()), want);
    }
}

/// Found by `redirect_location_matches_reference`: request text that looks like a
/// placeholder was expanded as well (a query of `#{port}` became the port), because
/// the placeholders were replaced one after another over the growing text.
#[test]
fn placeholders_in_the_request_are_not_expanded() {
    let input = Input {
        protocol: "http".to_string(),
        host: "#{query}".to_string(),
        port: 80,
        path: "/#{port}".to_string(),
        query: "#{host}".to_string(),
    };
    let r = Redirect {
        protocol: "HTTPS".to_string(),
        host: "#{host}".to_string(),
        port: "#{port}".to_string(),
        path: "/#{path}".to_string(),
        query: "#{query}".to_string(),
        status_code: 301,
    };
    assert_eq!(
        actions::location(&r, &input.view()),
        "https://#{query}:80/#{port}?#{host}"
    );
}
