//! Tunnels for test suites: list them, and end one, or every one to a target, the way a
//! real WebSocket ends (DESIGN.md, "Disconnects on demand").
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /tunnels` | 200, a JSON array of the open tunnels, by id |
//! | `POST /tunnels/{id}/disconnect?mode=M` | 200 with the tunnel's JSON; 404 for an unknown id |
//! | `POST /target-groups/{name}/targets/{ip:port}/disconnect?mode=M` | 200 with the JSON array of the tunnels ended; 404 for an unknown group or target |
//!
//! An unknown or missing mode is a 400 that lists the modes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use super::{text, Answer};
use crate::control::Control;
use crate::tunnel::{DisconnectMode, TunnelId, TunnelInfo};

/// The answer to `method path?query` when `path` is one of this module's, else `None`.
pub fn route(
    control: &Control,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Answer> {
    if path == "/tunnels" {
        return Some(match *method {
            Method::GET => json_answer(&Value::Array(
                control.tunnels().iter().map(tunnel_json).collect(),
            )),
            _ => not_allowed("GET /tunnels lists the open tunnels."),
        });
    }
    if let Some(id) = path
        .strip_prefix("/tunnels/")
        .and_then(|rest| rest.strip_suffix("/disconnect"))
    {
        return Some(match *method {
            Method::POST => disconnect(control, id, query),
            _ => not_allowed("Use POST to disconnect a tunnel."),
        });
    }
    let (group, target) = path
        .strip_prefix("/target-groups/")?
        .strip_suffix("/disconnect")?
        .split_once("/targets/")?;
    Some(match *method {
        Method::POST => disconnect_target(control, group, target, query),
        _ => not_allowed("Use POST to disconnect a target's tunnels."),
    })
}

/// One tunnel as `GET /tunnels` lists it.
pub fn tunnel_json(t: &TunnelInfo) -> Value {
    json!({
        "id": t.id.to_string(),
        "listener_port": t.listener_port,
        "client": t.client.to_string(),
        "target": t.target_addr().to_string(),
        "target_group": &**t.target_group(),
        "opened_at": humantime::format_rfc3339_millis(t.opened_at()).to_string(),
        "bytes_from_client": t.bytes_from_client,
        "bytes_to_client": t.bytes_to_client,
        "idle_for_ms": u64::try_from(t.idle_for.as_millis()).unwrap_or(u64::MAX),
    })
}

fn disconnect(control: &Control, id: &str, query: Option<&str>) -> Answer {
    let mode = match mode(query) {
        Ok(mode) => mode,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let id = decoded(id);
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|n| control.disconnect(TunnelId(n), mode));
    match found {
        Some(tunnel) => json_answer(&tunnel_json(&tunnel)),
        None => text(
            StatusCode::NOT_FOUND,
            format!("There is no open tunnel with id `{id}`; GET /tunnels lists the open ones.\n"),
        ),
    }
}

fn disconnect_target(control: &Control, group: &str, target: &str, query: Option<&str>) -> Answer {
    let mode = match mode(query) {
        Ok(mode) => mode,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let (group, target) = (decoded(group), decoded(target));
    let Ok(addr) = target.parse::<SocketAddr>() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("`{target}` is not a target address; write it as ip:port (e.g. 127.0.0.1:9001 or [::1]:9001).\n"),
        );
    };
    match control.disconnect_target(&group, addr, mode) {
        Ok(ended) => json_answer(&Value::Array(ended.iter().map(tunnel_json).collect())),
        Err(e) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
    }
}

/// The `mode` query parameter, or why there is none (the 400's words).
fn mode(query: Option<&str>) -> Result<DisconnectMode, String> {
    let given = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned());
    match given {
        Some(m) => m.parse().map_err(|e| format!("{e}.\n")),
        None => Err(format!(
            "A disconnect needs ?mode=M, one of {}.\n",
            DisconnectMode::ALL.map(|m| m.as_str()).join(", ")
        )),
    }
}

/// A path segment with its percent-escapes decoded (`%5B::1%5D%3A9001`).
fn decoded(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn json_answer(value: &Value) -> Answer {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

fn not_allowed(what: &str) -> Answer {
    text(StatusCode::METHOD_NOT_ALLOWED, format!("{what}\n"))
}
