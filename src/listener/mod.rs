//! Listeners: bind, accept, TLS; hands byte streams to `proxy`.

pub mod tls;
