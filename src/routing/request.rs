//! The parts of a request head the conditions look at, borrowed, never copied.

use std::net::IpAddr;

use http::request::Parts;

/// One request as the matchers see it.
pub(crate) struct RequestView<'a> {
    pub(crate) head: &'a Parts,
    /// Host name without port; `None` when the request names no host.
    pub(crate) host: Option<&'a [u8]>,
    /// The raw path, never the query, never percent-decoded.
    pub(crate) path: &'a [u8],
    /// The raw query (after `?`), empty when absent.
    pub(crate) query: &'a [u8],
    /// The TCP peer.
    pub(crate) source: IpAddr,
}

impl<'a> RequestView<'a> {
    pub(crate) fn new(head: &'a Parts, source: IpAddr) -> RequestView<'a> {
        RequestView {
            head,
            host: host(head),
            path: head.uri.path().as_bytes(),
            query: head.uri.query().unwrap_or("").as_bytes(),
            source,
        }
    }

    /// `(key, value)` pairs of the query, raw: split on `&`, then on the first `=`.
    /// Empty pieces (`a=1&&b=2`) are skipped; a piece without `=` has an empty value.
    pub(crate) fn query_pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.query
            .split(|&b| b == b'&')
            .filter(|piece| !piece.is_empty())
            .map(|piece| match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &piece[piece.len()..]),
            })
    }
}

/// The host a request names, without port: the URI's authority when the request
/// line is in absolute form (or the HTTP/2 `:authority`), else the first `Host`.
fn host(head: &Parts) -> Option<&[u8]> {
    if let Some(authority) = head.uri.authority() {
        return Some(authority.host().as_bytes());
    }
    let value = head.headers.get(http::header::HOST)?.as_bytes();
    Some(strip_port(value))
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    let end = if host.first() == Some(&b'[') {
        host.iter().position(|&b| b == b']').map(|i| i + 1)
    } else {
        host.iter().position(|&b| b == b':')
    };
    &host[..end.unwrap_or(host.len())]
}
