//! One request, from its head to the response: the verdict its head got, ALB's checks,
//! the rule's action, then the target's answer (forward or upgrade) or the load
//! balancer's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::client_io::ConnState;
use super::error::{elb_response, Chain, ProxyError, RequestError};
use super::forward::{self, ResponseTimer};
use super::headers::{self, is_upgrade, xff_entries, CloseTarget, Forwarded, MAX_XFF_ENTRIES};
use super::upgrade::{self, PendingTunnel};
use super::{actions, head, ListenerContext, ProxyBody};
use crate::config::model::Action;
use crate::observe::metrics::{self, Metrics};

/// Handle one request of an HTTP/2 connection.
pub(super) async fn http2(
    req: Request<Incoming>,
    ctx: Arc<ListenerContext>,
    client: SocketAddr,
) -> Result<Response<ProxyBody>, Infallible> {
    let metrics = &ctx.runtime.metrics;
    let waiting = ClientWaiting::new(client, metrics);
    let (resp, _) = respond(req, &ctx, client, &mut ResponseTimer::default(), false).await;
    waiting.answered();
    count_elb(metrics, &resp);
    Ok(resp)
}

/// Handle one request of an HTTP/1 connection read through
/// [`super::client_io::ClientIo`]: apply the verdict its head got (ALB's error page, or
/// close after the response), and leave a tunnel with the connection when the target
/// switched protocols.
pub(super) async fn http1(
    mut req: Request<Incoming>,
    ctx: Arc<ListenerContext>,
    client: SocketAddr,
    conn: Arc<ConnState>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (verdict, _in_flight) = conn.next_verdict();
    let close_after = match verdict.action {
        head::HeadAction::Reject(e) => {
            let mut resp = elb(&ProxyError::Request(e));
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            count_elb(&ctx.runtime.metrics, &resp);
            return Ok(resp);
        }
        head::HeadAction::Serve { close_after } => close_after,
    };
    if !verdict.classification.is_compliant() {
        // Absent means compliant: most requests carry no extension (no allocation).
        req.extensions_mut().insert(verdict.classification);
    }
    if close_after {
        // Desync `Ambiguous` in defensive mode: the target connection is not reused.
        req.extensions_mut().insert(CloseTarget);
    }
    let metrics = &ctx.runtime.metrics;
    let waiting = ClientWaiting::new(client, metrics);
    let mut timer = conn.take_response_timer();
    let (mut resp, tunnel) = respond(req, &ctx, client, &mut timer, true).await;
    conn.keep_response_timer(timer);
    waiting.answered();
    count_elb(metrics, &resp);
    if let Some(tunnel) = tunnel {
        conn.leave_tunnel(tunnel);
    }
    if close_after {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Notices a client that goes away before its response: ALB records such a request
/// as 460 in the access log and sends nothing.
struct ClientWaiting<'a> {
    client: SocketAddr,
    metrics: &'a Metrics,
    answered: bool,
}

impl<'a> ClientWaiting<'a> {
    fn new(client: SocketAddr, metrics: &'a Metrics) -> ClientWaiting<'a> {
        ClientWaiting {
            client,
            metrics,
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for ClientWaiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics.elb_status(460);
            tracing::info!(
                client = %self.client,
                elb_status_code = 460,
                "The client closed the connection before the load balancer answered (460)."
            );
        }
    }
}

/// The response to `req`, and the tunnel to open once it is out when the target
/// switched protocols (only where `upgrades` are possible: HTTP/1.1).
async fn respond(
    req: Request<Incoming>,
    ctx: &Arc<ListenerContext>,
    client: SocketAddr,
    timer: &mut ResponseTimer,
    upgrades: bool,
) -> (Response<ProxyBody>, Option<Box<PendingTunnel>>) {
    if req.method() == Method::TRACE {
        return (elb(&RequestError::MethodNotAllowed.into()), None);
    }
    if xff_entries(req.headers()) > MAX_XFF_ENTRIES {
        return (elb(&RequestError::TooManyForwardedFor.into()), None);
    }
    // The config this request is served with, to its end.
    let view = ctx.view();
    let lb = &view.model.config.load_balancer;
    let mut req = req;
    if lb.drop_invalid_header_fields {
        headers::drop_invalid_header_fields(req.headers_mut());
    }
    if req.version() == Version::HTTP_2 {
        headers::host_from_authority(&mut req);
    }
    let (parts, body) = req.into_parts();
    let matched = view.router.route(&parts, client.ip());
    let req = Request::from_parts(parts, body);
    let forward = match matched.action {
        Action::FixedResponse(fixed) => {
            metrics::inc(&ctx.runtime.metrics.fixed_responses);
            return (actions::fixed_response(fixed).map(Either::Right), None);
        }
        Action::Redirect(redirect) => {
            let host = request_host(&req);
            let input = actions::RedirectInput {
                protocol: ctx.protocol.scheme(),
                host: headers::split_host_port(&host).0,
                port: ctx.port,
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
            };
            let resp = actions::redirect_response(redirect, &input).map(Either::Right);
            metrics::inc(&ctx.runtime.metrics.redirects);
            return (resp, None);
        }
        Action::Forward(forward) => forward,
    };
    let Some(selection) = view.model.groups.select(forward, req.headers()) else {
        return (elb(&ProxyError::NoTarget), None);
    };
    let target = selection.in_flight.addr();
    // CloudWatch's RequestCount: a target was chosen.
    metrics::inc(&ctx.runtime.metrics.requests);
    let stats = selection.in_flight.target().stats.clone();
    metrics::inc(&stats.requests);
    let sent = std::time::Instant::now();
    let fwd = Forwarded {
        client,
        protocol: ctx.protocol,
        port: ctx.port,
        port_value: ctx.port_value.clone(),
        xff_mode: lb.xff_header_processing,
        xff_client_port: lb.xff_client_port,
        preserve_host_header: lb.preserve_host_header,
    };
    // hyper switches only HTTP/1.1 connections (as `head` frames only those as tunnels).
    let result = if upgrades && req.version() == Version::HTTP_11 && is_upgrade(req.headers()) {
        upgrade::upgrade(req, selection.in_flight, &fwd, ctx, lb.idle_timeout).await
    } else {
        let upstream = &ctx.runtime.upstream;
        forward::forward(req, &selection.in_flight, &fwd, upstream, timer)
            .await
            .map(|resp| (resp, None))
    };
    match result {
        Ok((mut resp, tunnel)) => {
            stats.response_time.observe(sent.elapsed());
            stats.target_status(resp.status().as_u16());
            selection.cookies.apply(resp.headers_mut());
            (resp, tunnel)
        }
        Err(e) => {
            if e.is_connection_error() {
                metrics::inc(&stats.connection_errors);
            }
            let e = ProxyError::Target(e);
            tracing::warn!(%client, %target, status = e.status(), "{}", Chain(&e));
            (elb(&e), None)
        }
    }
}

/// The host a request addressed: absolute-form authority, else the Host header.
fn request_host<B>(req: &Request<B>) -> String {
    if let Some(a) = req.uri().authority() {
        return a.as_str().to_string();
    }
    req.headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Count a response the load balancer made itself (its own pages, fixed responses,
/// redirects), CloudWatch's `HTTPCode_ELB_*_Count`; a target's answer has a target body.
fn count_elb(metrics: &Metrics, resp: &Response<ProxyBody>) {
    if matches!(resp.body(), Either::Right(_)) {
        metrics.elb_status(resp.status().as_u16());
    }
}

/// The load balancer's own answer for `e`.
fn elb(e: &ProxyError) -> Response<ProxyBody> {
    elb_response(e.status()).map(Either::Right)
}
