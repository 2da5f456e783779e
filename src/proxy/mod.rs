//! The hyper service, the only module that speaks HTTP: for each request it asks
//! `routing` for the action, `target_group` for a target, then forwards the request
//! (`forward`) or relays the upgrade and hands the two connections to `tunnel`
//! (`upgrade`). Errors become ALB's status codes in `error`.

pub mod actions;
pub mod client_io;
pub mod desync;
pub mod error;
pub mod forward;
pub mod head;
pub mod headers;
pub mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::model::{Action, Config, Protocol};
use crate::routing::Router;
use crate::shutdown::Shutdown;
use crate::target_group::{Resolve, TargetGroups};
use crate::upstream::PooledBody;
use error::{elb_response, ElbError};
use forward::ResponseTimer;
use headers::{is_upgrade, xff_entries, Forwarded, MAX_XFF_ENTRIES};

/// Response body: a target's streamed body, or one the load balancer made.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// Everything requests of one config need, shared by all its listeners.
pub struct Runtime {
    pub config: Arc<Config>,
    /// Target groups with their targets and health, and the stickiness key.
    pub targets: Arc<TargetGroups>,
    pub shutdown: Shutdown,
}

impl Runtime {
    /// Build the runtime; DNS targets are resolved once through `resolver`.
    pub async fn new(config: Arc<Config>, shutdown: Shutdown, resolver: &dyn Resolve) -> Runtime {
        let targets = Arc::new(TargetGroups::new(&config, &shutdown, resolver).await);
        let idle_timeout = config.load_balancer.idle_timeout;
        shutdown.tracker.spawn(close_idle_target_connections(
            targets.clone(),
            idle_timeout,
            shutdown.stop_accepting.clone(),
        ));
        Runtime {
            config,
            targets,
            shutdown,
        }
    }
}

/// Close keep-alive connections to targets that stayed idle for the idle timeout, until
/// shutdown begins (then close them all).
async fn close_idle_target_connections(
    targets: Arc<TargetGroups>,
    idle_timeout: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = (idle_timeout / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for g in &targets.groups {
            for t in g.targets().iter() {
                t.conns().evict_idle(idle_timeout);
            }
        }
    }
    for g in &targets.groups {
        for t in g.targets().iter() {
            t.conns().clear();
        }
    }
}

/// One listener's view: its compiled rules and the port clients connected to.
pub struct ListenerContext {
    pub runtime: Arc<Runtime>,
    pub router: Router,
    pub protocol: Protocol,
    /// The bound port (differs from the configured one when that was 0).
    pub port: u16,
    /// `port` as the X-Forwarded-Port value.
    pub port_value: HeaderValue,
}

/// Handle one request on a client connection whose stream type is `S` (HTTP/2 streams,
/// and HTTP/1 connections whose heads were not read by [`client_io::ClientIo`]).
pub async fn handle<S>(
    req: Request<Incoming>,
    ctx: Arc<ListenerContext>,
    client: SocketAddr,
) -> Result<Response<ProxyBody>, Infallible>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let waiting = ClientWaiting::new(client);
    let resp = respond::<S>(req, &ctx, client, &mut ResponseTimer::default()).await;
    waiting.answered();
    Ok(resp)
}

/// Handle one request of an HTTP/1 connection read through [`client_io::ClientIo`]:
/// apply the verdict its head got (ALB's error page, or close after the response).
pub async fn handle_http1<S>(
    mut req: Request<Incoming>,
    ctx: Arc<ListenerContext>,
    client: SocketAddr,
    conn: Arc<client_io::ConnState>,
) -> Result<Response<ProxyBody>, Infallible>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (verdict, _in_flight) = conn.next_verdict();
    let close_after = match verdict.action {
        head::HeadAction::Reject(e) => {
            let mut resp = elb(e);
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(resp);
        }
        head::HeadAction::Serve { close_after } => close_after,
    };
    if !verdict.classification.is_compliant() {
        // Absent means compliant: most requests carry no extension (no allocation).
        req.extensions_mut().insert(verdict.classification);
    }
    req.headers_mut().remove(&headers::X_ALBATROSS_CLOSE_TARGET);
    if close_after {
        // Desync `Ambiguous` in defensive mode: the target connection is not reused
        // (headers::Forwarded::apply turns this into `Connection: close`).
        req.headers_mut().insert(
            headers::X_ALBATROSS_CLOSE_TARGET.clone(),
            HeaderValue::from_static("1"),
        );
    }
    let waiting = ClientWaiting::new(client);
    let mut timer = conn.take_response_timer();
    let mut resp = respond::<S>(req, &ctx, client, &mut timer).await;
    conn.keep_response_timer(timer);
    waiting.answered();
    if close_after {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Notices a client that goes away before its response: ALB records such a request
/// as 460 in the access log and sends nothing.
struct ClientWaiting {
    client: SocketAddr,
    answered: bool,
}

impl ClientWaiting {
    fn new(client: SocketAddr) -> ClientWaiting {
        ClientWaiting {
            client,
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for ClientWaiting {
    fn drop(&mut self) {
        if !self.answered {
            tracing::info!(
                client = %self.client,
                elb_status_code = 460,
                "The client closed the connection before the load balancer answered (460)."
            );
        }
    }
}

async fn respond<S>(
    req: Request<Incoming>,
    ctx: &Arc<ListenerContext>,
    client: SocketAddr,
    timer: &mut ResponseTimer,
) -> Response<ProxyBody>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if req.method() == Method::TRACE {
        return elb(ElbError::MethodNotAllowed);
    }
    if xff_entries(req.headers()) > MAX_XFF_ENTRIES {
        return elb(ElbError::TooManyForwardedFor);
    }
    let mut req = req;
    if ctx.runtime.config.load_balancer.drop_invalid_header_fields {
        headers::drop_invalid_header_fields(req.headers_mut());
    }
    if req.version() == http::Version::HTTP_2 {
        headers::host_from_authority(&mut req);
    }
    let (parts, body) = req.into_parts();
    let matched = ctx.router.route(&parts, client.ip());
    let req = Request::from_parts(parts, body);
    match matched.action {
        Action::FixedResponse(fixed) => actions::fixed_response(fixed).map(Either::Right),
        Action::Redirect(redirect) => {
            let host = request_host(&req);
            let input = actions::RedirectInput {
                protocol: ctx.protocol.scheme(),
                host: headers::split_host_port(&host).0,
                port: ctx.port,
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
            };
            actions::redirect_response(redirect, &input).map(Either::Right)
        }
        Action::Forward(forward) => {
            let Some(selection) = ctx.runtime.targets.select(forward, req.headers()) else {
                return elb(ElbError::NoTargets);
            };
            let target = selection.in_flight.addr();
            let lb = &ctx.runtime.config.load_balancer;
            let fwd = Forwarded {
                client,
                protocol: ctx.protocol,
                port: ctx.port,
                port_value: ctx.port_value.clone(),
                xff_mode: lb.xff_header_processing,
                xff_client_port: lb.xff_client_port,
                preserve_host_header: lb.preserve_host_header,
            };
            let result = if is_upgrade(req.headers()) {
                upgrade::upgrade::<S>(req, selection.in_flight, &fwd, ctx).await
            } else {
                let in_flight = selection.in_flight;
                let (connect, idle) = (lb.connect_timeout, lb.idle_timeout);
                forward::forward(req, &in_flight, &fwd, connect, idle, timer).await
            };
            match result {
                Ok(mut resp) => {
                    selection.cookies.apply(resp.headers_mut());
                    resp
                }
                Err(e) => {
                    tracing::warn!(%client, %target, "{e}");
                    elb(e.elb_error())
                }
            }
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

fn elb(e: ElbError) -> Response<ProxyBody> {
    elb_response(e.status()).map(Either::Right)
}

/// Why talking to a target failed; decides the status code the client sees.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("The target refused or reset the connection: {0}.")]
    Connect(std::io::Error),
    #[error("Connecting to the target timed out.")]
    ConnectTimeout,
    #[error("The target did not answer within the idle timeout.")]
    ResponseTimeout,
    #[error("The target closed the connection or answered something malformed: {0}.")]
    Exchange(String),
}

impl TargetError {
    pub fn elb_error(&self) -> ElbError {
        match self {
            TargetError::ConnectTimeout | TargetError::ResponseTimeout => ElbError::GatewayTimeout,
            TargetError::Connect(_) | TargetError::Exchange(_) => ElbError::BadGateway,
        }
    }
}
