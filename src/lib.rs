//! albatross: a Layer-7, WebSocket-aware reverse proxy that behaves like an AWS ALB.

pub mod backend;
pub mod certs;
pub mod config;
pub mod listener;
pub mod proxy;
pub mod routing;
pub mod target_group;
pub mod tunnel;
