//! Reload: a new config is swapped in whole, a bad one changes nothing, listeners come
//! and go, certificates rotate for new handshakes, targets keep their health and API
//! registrations, and no reload closes an open tunnel.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use albatross::control::ChangeError;
use albatross::{HealthState, ProxyHandle};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config with one HTTP listener (port 0) answering `body` itself, and a forward rule
/// for `/ws*` to group `app` with `targets`.
fn config(body: &str, targets: &[SocketAddr], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "fixed_response", status_code = 200, content_type = "text/plain", message_body = "{body}" }}

[[listener.rule]]
priority = 10
conditions = [ {{ path_pattern = ["/ws*"] }} ]
action = {{ type = "forward", target_group = "app" }}

[[target_group]]
name = "app"
targets = [ {targets} ]
health_check = {{ enabled = false }}
{extra}
"#,
        targets = targets.join(", "),
    )
}

async fn get(addr: SocketAddr) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    raw_exchange(
        stream,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// Send `msg` through an open tunnel and read the echo back (the raw upgrade target's
/// side echoes by hand).
async fn echo_through(client: &mut TcpStream, server: &mut TcpStream, msg: &[u8]) {
    client.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    within("bytes at the target", server.read_exact(&mut got))
        .await
        .unwrap();
    server.write_all(&got).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within("bytes back at the client", client.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, msg);
}

async fn start(pki: &Pki, text: &str) -> ProxyHandle {
    start_proxy(pki, text).await
}

#[tokio::test]
async fn a_new_config_is_served_and_an_open_tunnel_survives_every_reload() {
    let pki = Pki::new();
    let mut target = raw_upgrade_target().await;
    let proxy = start(&pki, &config("one", &[target.addr], "")).await;
    let addr = proxy.listener_addr(0);
    assert_eq!(body_of(&get(addr).await), "one");
    let (mut client, mut server) = target.tunnel(addr).await;

    // A changed fixed response, and a changed load-balancer attribute.
    let applied = proxy
        .reload_str(&config(
            "two",
            &[target.addr],
            "[load_balancer]\nidle_timeout = 120\n",
        ))
        .await
        .unwrap();
    assert_eq!((applied.listeners, applied.rules), (1, 1));
    assert_eq!(body_of(&get(addr).await), "two");
    assert_eq!(
        proxy.config().load_balancer.idle_timeout,
        Duration::from_secs(120)
    );
    echo_through(&mut client, &mut server, b"after the first reload").await;

    // The tunnel's rule and group are gone from the config: it still lives.
    let fixed_only = r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = { type = "fixed_response", status_code = 200, message_body = "three" }
"#;
    proxy.reload_str(fixed_only).await.unwrap();
    assert_eq!(body_of(&get(addr).await), "three");
    echo_through(&mut client, &mut server, b"after the group left").await;
    assert_eq!(proxy.tunnels().len(), 1);
}

#[tokio::test]
async fn a_bad_config_changes_nothing_and_names_each_error() {
    let pki = Pki::new();
    let proxy = start(&pki, &config("kept", &[], "")).await;
    let addr = proxy.listener_addr(0);

    let bad = config("never", &[], "").replace("priority = 10", "priority = 0");
    let err = proxy.reload_str(&bad).await.unwrap_err();
    let ChangeError::Config(errors) = &err else {
        panic!("{err}");
    };
    let text = errors.to_string();
    assert!(text.contains("priority"), "{text}");
    assert!(
        text.lines().all(|l| l.split(':').count() >= 4),
        "FILE:LINE:COL: message per line: {text}"
    );
    assert_eq!(body_of(&get(addr).await), "kept");

    // A port that cannot be bound fails the reload the same way.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let extra = format!(
        "[[listener]]\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"HTTP\"\n\
         default_action = {{ type = \"fixed_response\", status_code = 200 }}\n"
    );
    let err = proxy
        .reload_str(&format!("{}{extra}", config("never", &[], "")))
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeError::Bind(_)), "{err}");
    assert_eq!(proxy.listeners().len(), 1);
    assert_eq!(body_of(&get(addr).await), "kept");
}

#[tokio::test]
async fn listeners_are_added_and_removed_while_the_kept_one_serves() {
    let pki = Pki::new();
    let base = config("base", &[], "");
    let proxy = start(&pki, &base).await;
    let first = proxy.listener_addr(0);
    let second = r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = { type = "fixed_response", status_code = 200, message_body = "added" }
"#;
    proxy.reload_str(&format!("{base}{second}")).await.unwrap();
    let listeners = proxy.listeners();
    assert_eq!(listeners.len(), 2);
    assert_eq!(
        listeners[0].local_addr, first,
        "the kept listener keeps its socket"
    );
    let added = listeners[1].local_addr;
    assert_eq!(body_of(&get(added).await), "added");

    // A kept-alive connection on the listener about to go.
    let mut kept_alive = TcpStream::connect(added).await.unwrap();
    kept_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(body_of(&read_response(&mut kept_alive).await), "added");

    proxy.reload_str(&base).await.unwrap();
    assert_eq!(proxy.listeners().len(), 1);
    assert_eq!(body_of(&get(first).await), "base");
    eventually("the removed listener to stop accepting", || {
        std::net::TcpStream::connect(added).is_err()
    })
    .await;
    // Its kept-alive connection is closed once idle (it finished its request).
    let mut rest = Vec::new();
    let n = within(
        "the removed listener's connection to close",
        kept_alive.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_handshakes() {
    let pki = Pki::new();
    let (cert, key, first_der) = pki.leaf("site", &["localhost"]);
    let https = format!(
        r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{}", key = "{}" }} ]
default_action = {{ type = "fixed_response", status_code = 200, message_body = "tls" }}
"#,
        cert.display(),
        key.display()
    );
    let proxy = start(&pki, &https).await;
    let addr = proxy.listener_addr(0);
    let before = pki.connect(addr, "localhost").await;
    assert_eq!(peer_certificate(&before), first_der);

    // The same files, new contents (as certbot or a secret mount rotates them).
    let (_, _, second_der) = pki.leaf("site", &["localhost"]);
    assert_ne!(first_der, second_der);
    proxy.reload().await.unwrap();
    let after = pki.connect(addr, "localhost").await;
    assert_eq!(peer_certificate(&after), second_der);
}

fn peer_certificate(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn targets_keep_their_health_and_api_registrations_across_reloads() {
    let pki = Pki::new();
    let a = id_target("a").await;
    let b = id_target("b").await;
    let checks = "health_check = { interval = \"200ms\", timeout = \"100ms\", healthy_threshold = 2, unhealthy_threshold = 2 }";
    let text = config("x", &[a.addr], "").replace("health_check = { enabled = false }", checks);
    let proxy = start(&pki, &text).await;
    let state = |addr: SocketAddr| proxy.target_health_of("app", addr).unwrap().state;
    eventually("a to be healthy", || state(a.addr) == HealthState::Healthy).await;
    proxy.register_target("app", b.addr).unwrap();
    eventually("b to be healthy", || state(b.addr) == HealthState::Healthy).await;

    // Another change to the group's settings: both stay healthy, b stays registered.
    let changed = text.replace("name = \"app\"", "name = \"app\"\nderegistration_delay = 1");
    proxy.reload_str(&changed).await.unwrap();
    assert_eq!(state(a.addr), HealthState::Healthy);
    assert_eq!(state(b.addr), HealthState::Healthy);

    // A target of the file deregistered through the API stays out after a reload.
    proxy.deregister_target("app", a.addr).unwrap();
    eventually("a to leave", || state(a.addr) == HealthState::Unused).await;
    proxy.reload_str(&changed).await.unwrap();
    assert_eq!(state(a.addr), HealthState::Unused);
    assert_eq!(state(b.addr), HealthState::Healthy);
}

#[tokio::test]
async fn reload_reads_the_file_again() {
    let pki = Pki::new();
    let path = pki.dir.path().join("albatross.toml");
    std::fs::write(&path, config("from the file", &[], "")).unwrap();
    let proxy = albatross::Proxy::start_file(&path).await.unwrap();
    let addr = proxy.listener_addr(0);
    assert_eq!(body_of(&get(addr).await), "from the file");
    std::fs::write(&path, config("edited", &[], "")).unwrap();
    proxy.reload().await.unwrap();
    assert_eq!(body_of(&get(addr).await), "edited");
    // A file that no longer parses leaves the running config in place.
    std::fs::write(&path, "[[listener]\n").unwrap();
    let err = proxy.reload().await.unwrap_err();
    assert!(err.to_string().contains("albatross.toml:1:"), "{err}");
    assert_eq!(body_of(&get(addr).await), "edited");
}
