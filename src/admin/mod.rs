//! The admin listener: the door operators and test suites use to change a running load
//! balancer.
//!
//! | path | what |
//! | --- | --- |
//! | `POST /`, `GET /?Action=…` | the ELBv2 Query API (`elbv2`) |
//! | `POST /reload` | read the config file again ([`Control::reload`]) |
//! | `GET /`, `GET /dashboard.json` | the live dashboard and its data (`dashboard`) |
//! | `GET /metrics` | Prometheus metrics with CloudWatch's names (`metrics`) |
//! | `GET /tunnels`, `POST …/disconnect?mode=` | list tunnels, end them on demand (`tunnels`) |
//!
//! It is loopback by default (a config with another address needs `credentials`). With
//! `[admin] credentials`, an API call needs a SigV4 signature for that key (`sigv4`) and
//! every other path HTTP Basic auth with it. What it accepts is bounded: at most
//! [`MAX_CONNECTIONS`] connections at once, heads of [`MAX_HEAD`] bytes, bodies of
//! [`MAX_BODY`] bytes, each read within [`READ_TIMEOUT`].
//!
//! The admin listener changes the running state only through the control plane
//! ([`Control::edit`], [`Control::reload`], [`Control::disconnect`]) and the target
//! groups' registrations.

pub use crate::arn;
mod dashboard;
mod elbv2;
mod metrics;
pub mod query;
pub mod sigv4;
mod tunnels;

pub use elbv2::{modify_load_balancer_attributes, modify_target_group_attributes};
pub use query::ApiError;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::model::Credentials;
use crate::control::{AdminSocket, ChangeError, Control};

/// Connections served at once; more are closed on arrival.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head (request line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest request body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time allowed for a request head, and then for its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle keep-alive connection stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The admin server's shared state.
struct Admin {
    control: Arc<Control>,
    api: elbv2::Api,
    permits: Arc<Semaphore>,
}

/// Serve the admin listener: each socket the control plane hands over (a reload may
/// move it) until the process stops accepting.
pub async fn run(control: Arc<Control>, mut sockets: mpsc::UnboundedReceiver<AdminSocket>) {
    let shutdown = control.runtime().shutdown.clone();
    let admin = Arc::new(Admin {
        api: elbv2::Api::new(),
        control,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    let mut serving: Option<CancellationToken> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.stop_accepting.cancelled() => break,
            next = sockets.recv() => next,
        };
        if let Some(stop) = serving.take() {
            stop.cancel();
        }
        match next {
            None => break,
            Some(None) => {}
            Some(Some((listener, addr))) => {
                let stop = shutdown.stop_accepting.child_token();
                serving = Some(stop.clone());
                shutdown
                    .tracker
                    .spawn(accept_loop(admin.clone(), listener, addr, stop));
            }
        }
    }
    if let Some(stop) = serving {
        stop.cancel();
    }
}

async fn accept_loop(
    admin: Arc<Admin>,
    listener: TcpListener,
    addr: SocketAddr,
    stop: CancellationToken,
) {
    let tracker = admin.control.runtime().shutdown.tracker.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = admin.permits.clone().try_acquire_owned() else {
                    debug!(%peer, "The admin listener is serving {MAX_CONNECTIONS} connections; closing a new one.");
                    continue;
                };
                let span = tracing::info_span!("admin", %peer);
                let admin = admin.clone();
                let stop = stop.clone();
                tracker.spawn(
                    async move {
                        serve_connection(admin, stream, stop).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                warn!("Accepting an admin connection failed: {e}.");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    info!("The admin listener on http://{addr} stopped accepting connections.");
}

async fn serve_connection(admin: Arc<Admin>, stream: TcpStream, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = {
        let admin = admin.clone();
        service_fn(move |request| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(handle(&admin, request).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(KEEP_ALIVE, connection.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        debug!("The admin connection ended with an error: {e}.");
    }
}

type Answer = Response<Full<Bytes>>;

/// Route one request.
async fn handle(admin: &Admin, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let credentials = admin
        .control
        .config()
        .admin
        .as_ref()
        .and_then(|a| a.credentials.clone());
    let path = parts.uri.path();
    let is_api = path == "/"
        && (parts.method == Method::POST
            || (parts.method == Method::GET
                && parts.uri.query().is_some_and(|q| q.contains("Action="))));
    if is_api {
        return admin
            .api
            .call(
                &admin.control,
                &parts,
                &body,
                credentials.as_ref(),
                SystemTime::now(),
            )
            .await;
    }
    if let Some(credentials) = &credentials {
        if !basic_auth_ok(&parts.headers, credentials) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Basic realm=\"albatross admin\", charset=\"UTF-8\"")
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from_static(
                    b"This admin listener needs HTTP Basic auth: the access key id as user, the secret access key as password.\n",
                )))
                .unwrap_or_default();
        }
    }
    if let Some(answer) = tunnels::route(&admin.control, &parts.method, path, parts.uri.query()) {
        return answer;
    }
    match (&parts.method, path) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics::render(&admin.control))))
            .unwrap_or_default(),
        (&Method::POST, "/reload") => reload(&admin.control).await,
        (_, "/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Use POST /reload to read the configuration file again.\n".to_string(),
        ),
        (&Method::GET, "/") => dashboard::page(),
        (&Method::GET, "/dashboard.json") => dashboard::json(&admin.control),
        _ => text(
            StatusCode::NOT_FOUND,
            format!(
                "There is nothing at {} {path} on the admin listener.\n",
                parts.method
            ),
        ),
    }
}

/// Read a body of at most [`MAX_BODY`] bytes within [`READ_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Bytes, Answer> {
    let collect = Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(READ_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than {MAX_BODY} bytes.\n"),
            ))
        }
        Ok(Err(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("The request body could not be read: {e}.\n"),
        )),
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} s.\n",
                READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// `POST /reload`: 200 with a summary, or 400 with every error, one per line.
async fn reload(control: &Control) -> Answer {
    match control.reload().await {
        Ok(a) => text(
            StatusCode::OK,
            format!(
                "Configuration reloaded: {} listeners, {} rules, {} target groups.\n",
                a.listeners, a.rules, a.target_groups
            ),
        ),
        Err(ChangeError::Config(errors)) => text(StatusCode::BAD_REQUEST, format!("{errors}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Whether `headers` carry HTTP Basic auth with `credentials`, compared in constant time.
fn basic_auth_ok(headers: &http::HeaderMap, credentials: &Credentials) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
    else {
        return false;
    };
    let expected = format!(
        "{}:{}",
        credentials.access_key_id,
        credentials.secret_access_key.expose()
    );
    aws_lc_rs::constant_time::verify_slices_are_equal(&given, expected.as_bytes()).is_ok()
}

fn text(status: StatusCode, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
