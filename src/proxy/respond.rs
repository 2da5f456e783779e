//! One request, from its head to the response: the verdict its head got, ALB's checks,
//! the rule's action, then the target's answer (forward or upgrade) or the load
//! balancer's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::HeaderValue;
use http::{Method, Request, Response, Version};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};

use super::client_io::{BodyWatch, ConnState};
use super::desync::Classification;
use super::error::{elb_response, Chain, ProxyError, RequestError};
use super::forward::{self, ResponseTimer};
use super::headers::{self, is_upgrade, xff_entries, CloseTarget, Forwarded, MAX_XFF_ENTRIES};
use super::serve::ConnInfo;
use super::upgrade::{self, PendingTunnel};
use super::{actions, head, ListenerContext, ListenerView, ProxyBody};
use crate::config::model::Action;
use crate::observe::access_log::{RequestLine, TraceId};
use crate::observe::metrics::{self, Metrics};
use crate::observe::{AccessRecord, Kind, LogFile};

/// Handle one request of an HTTP/2 connection.
pub(super) async fn http2(
    req: Request<Incoming>,
    ctx: Arc<ListenerContext>,
    client: SocketAddr,
    conn: Arc<ConnInfo>,
) -> Result<Response<ProxyBody>, Infallible> {
    let metrics = &ctx.runtime.metrics;
    let view = ctx.view();
    let mut waiting = ClientWaiting::new(client, metrics);
    waiting.line = line_for(&view, &ctx, &req, client, &conn, None, 0);
    // A stream's body is followed by a clock of its own (none when it has no body).
    let stream_clock = BodyWatch::stream_clock(req.body());
    let from = Client {
        addr: client,
        info: &conn,
        body: stream_clock
            .as_ref()
            .map_or(BodyWatch::None, BodyWatch::Stream),
    };
    let (resp, _) = respond(
        req,
        &ctx,
        &view,
        from,
        &mut ResponseTimer::default(),
        false,
        &mut waiting.line,
    )
    .await;
    count_elb(metrics, &resp);
    if let Some((log, mut record)) = waiting.answered() {
        // HTTP/2 frames are not counted: the line carries the bodies' declared lengths.
        record.kind = Kind::H2;
        record.sent_bytes = resp.body().size_hint().exact().unwrap_or(0);
        complete(&mut record, &resp);
        log.write(record);
    }
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
    // The previous request's response is out whole: its access-log line can go.
    conn.write_pending();
    let (verdict, _in_flight) = conn.next_verdict();
    let view = ctx.view();
    let last = conn.outlived(view.model.config.load_balancer.client_keep_alive);
    let metrics = &ctx.runtime.metrics;
    let close_after = match verdict.action {
        head::HeadAction::Reject(e) => {
            let mut resp = elb(&ProxyError::Request(e));
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            count_elb(metrics, &resp);
            // What hyper read is a stand-in: the request itself is unknown.
            if let Some((log, mut record)) = line_for(
                &view,
                &ctx,
                &req,
                client,
                &conn.info,
                Some(verdict.classification),
                verdict.received,
            ) {
                record.request = None;
                record.texts.clear();
                record.trace_id = None;
                record.matched_rule_priority = None;
                complete(&mut record, &resp);
                conn.hold_line(record, log);
            }
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
    let mut waiting = ClientWaiting::new(client, metrics);
    waiting.line = line_for(
        &view,
        &ctx,
        &req,
        client,
        &conn.info,
        Some(verdict.classification),
        verdict.received,
    );
    let mut timer = conn.take_response_timer();
    let from = Client {
        addr: client,
        info: &conn.info,
        body: BodyWatch::Connection(&conn.body),
    };
    let (mut resp, tunnel) =
        respond(req, &ctx, &view, from, &mut timer, true, &mut waiting.line).await;
    conn.keep_response_timer(timer);
    count_elb(metrics, &resp);
    if let Some((log, mut record)) = waiting.answered() {
        complete(&mut record, &resp);
        if tunnel.is_some() {
            record.kind = if conn.info.tls.is_some() {
                Kind::Wss
            } else {
                Kind::Ws
            };
        }
        // Written once the response is out (the tunnel's: once the tunnel closes).
        conn.hold_line(record, log);
    }
    if let Some(tunnel) = tunnel {
        conn.leave_tunnel(tunnel);
    }
    // A request the client stopped sending (408) leaves the connection mid-body; one
    // past `client_keep_alive` is the connection's last (not a `101`: the tunnel is the
    // connection's from then on).
    let last = last && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
    if close_after || last || resp.status() == http::StatusCode::REQUEST_TIMEOUT {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// A request's access-log line under construction, with the log it goes to.
type LogLine = Option<(Arc<LogFile<Box<AccessRecord>>>, Box<AccessRecord>)>;

/// The access-log line of `req` as far as its arrival tells (`None` without an access
/// log): what the client sent, over which connection.
fn line_for(
    view: &ListenerView,
    ctx: &ListenerContext,
    req: &Request<Incoming>,
    client: SocketAddr,
    conn: &ConnInfo,
    classification: Option<Classification>,
    received: u64,
) -> LogLine {
    let log = view.model.logs.access.as_ref()?;
    let now = SystemTime::now();
    let tls = conn.tls.as_ref();
    // A written record's box and text buffer, when one waits to be used again.
    let mut spare = log.spare();
    let mut texts = spare
        .as_mut()
        .map(|r| std::mem::take(&mut r.texts))
        .unwrap_or_default();
    texts.set(
        request_host_bytes(req),
        req.uri()
            .path_and_query()
            .map_or(&b"/"[..], |pq| pq.as_str().as_bytes()),
        req.headers()
            .get(http::header::USER_AGENT)
            .map_or(&[][..], HeaderValue::as_bytes),
    );
    let classification = classification.filter(|c| !c.is_compliant());
    let record = AccessRecord {
        kind: if tls.is_some() {
            Kind::Https
        } else {
            Kind::Http
        },
        time: now,
        elb: view.model.names.elb.clone(),
        client,
        target: None,
        request_processing_time: None,
        target_processing_time: None,
        response_processing_time: None,
        elb_status_code: None,
        target_status_code: None,
        received_bytes: received,
        sent_bytes: 0,
        request: Some(RequestLine {
            method: req.method().clone(),
            scheme: ctx.protocol.scheme(),
            port: ctx.port,
            version: req.version(),
        }),
        texts,
        ssl_cipher: tls.and_then(|t| t.cipher),
        ssl_protocol: tls.and_then(|t| t.protocol),
        target_group_arn: None,
        trace_id: None,
        domain_name: tls.and_then(|t| t.sni.clone()),
        chosen_cert_arn: None,
        matched_rule_priority: None,
        request_creation_time: now,
        actions_executed: None,
        redirect_url: None,
        error_reason: None,
        classification: classification.map(|c| c.class_field()),
        classification_reason: classification.map(|c| c.reason_field()),
        conn_trace_id: conn
            .trace_id
            .unwrap_or_else(crate::observe::ConnTraceId::random),
        held: None,
    };
    let boxed = match spare {
        Some(mut spare) => {
            *spare = record;
            spare
        }
        None => Box::new(record),
    };
    Some((log.clone(), boxed))
}

/// Fill in what the response tells: the status the client got and, for an answer the
/// load balancer made itself, when (a target's answer has its time already).
fn complete(record: &mut AccessRecord, resp: &Response<ProxyBody>) {
    record.elb_status_code = Some(resp.status().as_u16());
    if record.target_processing_time.is_none() {
        record.time = SystemTime::now();
    }
    if record.actions_executed == Some("redirect") {
        record.redirect_url = resp.headers().get(http::header::LOCATION).cloned();
    }
}

/// Notices a client that goes away before its response: ALB records such a request
/// as 460 in the access log and sends nothing.
struct ClientWaiting<'a> {
    client: SocketAddr,
    metrics: &'a Metrics,
    line: LogLine,
    answered: bool,
}

impl<'a> ClientWaiting<'a> {
    fn new(client: SocketAddr, metrics: &'a Metrics) -> ClientWaiting<'a> {
        ClientWaiting {
            client,
            metrics,
            line: None,
            answered: false,
        }
    }

    /// The response is ready; the line, to complete.
    fn answered(mut self) -> LogLine {
        self.answered = true;
        self.line.take()
    }
}

impl Drop for ClientWaiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics.elb_status(460);
            if let Some((log, mut record)) = self.line.take() {
                record.elb_status_code = Some(460);
                record.time = SystemTime::now();
                log.write(record);
            }
            tracing::info!(
                client = %self.client,
                elb_status_code = 460,
                "The client closed the connection before the load balancer answered (460)."
            );
        }
    }
}

/// The client connection a request came on, as [`respond`] needs it.
struct Client<'a> {
    addr: SocketAddr,
    info: &'a ConnInfo,
    /// How its request body arrives.
    body: BodyWatch<'a>,
}

/// The response to `req`, and the tunnel to open once it is out when the target
/// switched protocols (only where `upgrades` are possible: HTTP/1.1).
#[allow(clippy::too_many_arguments)]
async fn respond(
    req: Request<Incoming>,
    ctx: &Arc<ListenerContext>,
    view: &ListenerView,
    from: Client<'_>,
    timer: &mut ResponseTimer,
    upgrades: bool,
    line: &mut LogLine,
) -> (Response<ProxyBody>, Option<Box<PendingTunnel>>) {
    let Client {
        addr: client,
        info: conn,
        body: client_body,
    } = from;
    // Only the access log's request_processing_time needs the arrival instant.
    let received = line.as_ref().map(|_| std::time::Instant::now());
    let mut req = req;
    // ALB sets the trace id as the request arrives; the log carries it, and the request
    // is forwarded with it.
    let mut trace = None;
    if let Some((_, record)) = line {
        let (value, made) = headers::trace_value(req.headers().get(&headers::X_AMZN_TRACE_ID));
        record.trace_id = Some(match made {
            Some(made) => TraceId::Made(made),
            None => {
                record.texts.set_trace_id(value.as_bytes());
                TraceId::Sent
            }
        });
        trace = Some(value);
    }
    if req.method() == Method::TRACE {
        return (elb(&RequestError::MethodNotAllowed.into()), None);
    }
    if xff_entries(req.headers()) > MAX_XFF_ENTRIES {
        return (elb(&RequestError::TooManyForwardedFor.into()), None);
    }
    // The config this request is served with, to its end.
    let lb = &view.model.config.load_balancer;
    if lb.drop_invalid_header_fields {
        headers::drop_invalid_header_fields(req.headers_mut());
    }
    if req.version() == Version::HTTP_2 {
        headers::host_from_authority(&mut req);
    }
    let (parts, body) = req.into_parts();
    let matched = view.router.route(&parts, client.ip());
    let req = Request::from_parts(parts, body);
    if let Some((_, record)) = line {
        record.matched_rule_priority = Some(matched.priority.unwrap_or(0));
        record.actions_executed = Some(matched.action.kind());
    }
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
            let metrics = &ctx.runtime.metrics;
            let resp = match actions::redirect_response(redirect, &input) {
                Ok(resp) => {
                    metrics::inc(&metrics.redirects);
                    resp.map(Either::Right)
                }
                Err(failed) => {
                    if failed == actions::RedirectFailed::UrlTooLong {
                        metrics::inc(&metrics.redirect_url_limit_exceeded);
                    }
                    tracing::debug!(?failed, "A redirect was not served (500).");
                    elb_response(500).map(Either::Right)
                }
            };
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
    if let Some((_, record)) = line {
        record.target = Some(target);
        record.target_group_arn = view
            .model
            .names
            .group_arn(&selection.in_flight.target().group)
            .cloned();
    }
    let sent = std::time::Instant::now();
    if let Some((_, record)) = line {
        record.request_processing_time = received.map(|r| sent.saturating_duration_since(r));
    }
    let fwd = Forwarded {
        client,
        protocol: ctx.protocol,
        port: ctx.port,
        port_value: ctx.port_value.clone(),
        xff_mode: lb.xff_header_processing,
        xff_client_port: lb.xff_client_port,
        preserve_host_header: lb.preserve_host_header,
        trace,
        mtls: conn.mtls.clone(),
    };
    // hyper switches only HTTP/1.1 connections (as `head` frames only those as tunnels).
    let result = if upgrades && req.version() == Version::HTTP_11 && is_upgrade(req.headers()) {
        upgrade::upgrade(req, selection.in_flight, &fwd, ctx, lb.idle_timeout).await
    } else {
        let upstream = &ctx.runtime.upstream;
        forward::forward(
            req,
            &selection.in_flight,
            &fwd,
            upstream,
            timer,
            client_body,
        )
        .await
        .map(|resp| (resp, None))
    };
    match result {
        Ok((mut resp, tunnel)) => {
            let waited = sent.elapsed();
            stats.response_time.observe(waited);
            stats.target_status(resp.status().as_u16());
            if let Some((_, record)) = line {
                record.target_processing_time = Some(waited);
                record.response_processing_time = Some(std::time::Duration::ZERO);
                record.target_status_code = Some(resp.status().as_u16());
                // The response goes out as the target's arrives: its time is the
                // arrival's, from the clock readings already taken.
                record.time = record.request_creation_time
                    + record.request_processing_time.unwrap_or_default()
                    + waited;
            }
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

/// The host a request addressed: absolute-form authority, else the Host header (empty
/// when there is neither).
fn request_host_bytes<B>(req: &Request<B>) -> &[u8] {
    match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(http::header::HOST)
            .map_or(&[][..], HeaderValue::as_bytes),
    }
}

/// [`request_host_bytes`] as text (empty when there is none or it is not UTF-8).
fn request_host<B>(req: &Request<B>) -> String {
    std::str::from_utf8(request_host_bytes(req))
        .map(str::to_string)
        .unwrap_or_default()
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
