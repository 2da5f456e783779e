//! Listener rules compiled into matchers: which action answers a request head. No I/O.
//!
//! Semantics follow ALB's listener rules:
//! - rules are tried by ascending priority; the first whose conditions all hold
//!   (AND) wins, else the listener's default action; a condition holds when any
//!   of its values matches (OR);
//! - `*` matches zero or more bytes (across `/` and `.`), `?` exactly one, and a
//!   pattern is anchored to the whole value (`/img/*` does not match `/images`,
//!   `*.example.com` does not match `example.com`);
//! - `host_header`: case-insensitive, against the host without its port, taken from
//!   the URI authority (absolute-form request line, HTTP/2 `:authority`) or else the
//!   first `Host` header; a request naming no host matches no host condition;
//! - `path_pattern`: case-sensitive, against the path as received: never the
//!   query, and not percent-decoded (`/a%20b` is matched by `/a%20b`, not `/a b`);
//! - `http_header`: name and values case-insensitive; every occurrence of a
//!   repeated header is tried;
//! - `http_request_method`: exact and case-sensitive;
//! - `query_string`: case-insensitive globs against each `key=value` of the query
//!   (split on `&`, then on the first `=`; a parameter without `=` has an empty
//!   value); a pair without key matches any parameter's value. Request keys and
//!   values are percent-decoded (`%HH`) on the fly after splitting, so `%26` never
//!   splits; `+` stays `+`. In patterns `\` makes the next character literal
//!   (`\*`, `\?`) and `%HH` is a literal byte;
//! - `source_ip`: the TCP peer (never `X-Forwarded-For`); an IPv4-mapped IPv6 peer
//!   matches IPv4 CIDRs.
//!
//! Patterns compare bytes (`?` is one byte). Routing a request never allocates.

mod glob;
mod request;
mod rule;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use crate::config::model::{Action, Listener};
use request::RequestView;
use rule::CompiledRule;

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub action: &'a Action,
    /// The matching rule's priority; `None` for the default action (logged as 0).
    pub priority: Option<u32>,
}

/// A listener's rules, compiled.
#[derive(Debug)]
pub struct Router {
    /// Ascending priority.
    rules: Box<[CompiledRule]>,
    default_action: Action,
}

impl Router {
    pub fn new(listener: &Listener) -> Router {
        let mut rules: Vec<CompiledRule> = listener.rules.iter().map(CompiledRule::new).collect();
        // Config validation already orders them; sorting again costs nothing here.
        rules.sort_by_key(|rule| rule.priority);
        Router {
            rules: rules.into_boxed_slice(),
            default_action: listener.default_action.clone(),
        }
    }

    /// The action for a request: the first rule (ascending priority) whose conditions
    /// all match, else the listener's default action.
    pub fn route<'a>(&'a self, head: &http::request::Parts, source: IpAddr) -> Matched<'a> {
        let request = RequestView::new(head, source);
        match self.rules.iter().find(|rule| rule.matches(&request)) {
            Some(rule) => Matched {
                action: &rule.action,
                priority: Some(rule.priority),
            },
            None => Matched {
                action: &self.default_action,
                priority: None,
            },
        }
    }
}
