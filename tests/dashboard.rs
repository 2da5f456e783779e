//! The admin listener's live dashboard: `GET /dashboard.json` read directly, and the page
//! (`GET /`) watched in a real headless Chromium over the DevTools protocol
//! (`support::browser`) while a tunnel opens and closes. Without Chromium the browser
//! tests say so and pass, except under `CI=true`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use support::browser::Browser;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How soon the page must show a tunnel that opened or closed (it polls every second).
const LIVE: Duration = Duration::from_secs(3);

/// An admin listener (with `admin_extra` in `[admin]`), one HTTP listener with three
/// rules, and three target groups: `app` (checks off: healthy), `down` (checked every
/// 200 ms, nothing listening: unhealthy) and `spare` (no listener forwards to it:
/// unused). The header rule's value looks like markup, which the page must show as text.
fn config(admin_extra: &str, app: SocketAddr, down: SocketAddr, spare: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{admin_extra}

[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTP"
default_action = {{ type = "forward", target_group = "app" }}

[[listener.rule]]
priority = 30
conditions = [ {{ host_header = ["old.example.com"] }} ]
action = {{ type = "redirect", host = "new.example.com", status_code = "HTTP_301" }}

[[listener.rule]]
priority = 10
conditions = [ {{ path_pattern = ["/down/*"] }} ]
action = {{ type = "forward", target_group = "down" }}

[[listener.rule]]
priority = 20
conditions = [ {{ http_header = {{ name = "X-Env", values = ["<b>dev</b>"] }} }}, {{ http_request_method = ["PUT"] }} ]
action = {{ type = "fixed_response", status_code = 503, content_type = "text/plain", message_body = "maintenance" }}

[[target_group]]
name = "app"
targets = [ "{app}" ]
health_check = {{ enabled = false }}

[[target_group]]
name = "down"
targets = [ "{down}" ]
health_check = {{ path = "/health", interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }}

[[target_group]]
name = "spare"
targets = [ "{spare}" ]
"#
    )
}

/// A `GET path` to the admin listener with `headers` (CRLF-terminated lines): the
/// status, the head and the body.
async fn get(admin: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let stream = TcpStream::connect(admin).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{headers}Connection: close\r\n\r\n");
    let response = raw_exchange(stream, request.as_bytes()).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        status_of(&response),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// `GET /dashboard.json`, parsed.
async fn snapshot(admin: SocketAddr, headers: &str) -> Value {
    let (status, head, body) = get(admin, "/dashboard.json", headers).await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).expect("the dashboard's data is JSON")
}

/// Poll `GET /dashboard.json` until `accept` takes it; fail after [`SAFETY`].
async fn snapshot_until(admin: SocketAddr, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    within(what, async {
        loop {
            let s = snapshot(admin, "").await;
            if accept(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Exchange a few bytes each way: 5 from the client, 6 to it.
async fn talk(client: &mut TcpStream, server: &mut TcpStream) {
    client.write_all(b"hello").await.unwrap();
    let mut five = [0u8; 5];
    within("bytes at the target", server.read_exact(&mut five))
        .await
        .unwrap();
    server.write_all(b"world!").await.unwrap();
    let mut six = [0u8; 6];
    within("bytes at the client", client.read_exact(&mut six))
        .await
        .unwrap();
}

/// Close the tunnel from the client's side: its FIN reaches the target, which closes too.
async fn client_close(client: TcpStream, mut server: TcpStream) {
    drop(client);
    let mut rest = Vec::new();
    let _ = within("EOF at the target", server.read_to_end(&mut rest)).await;
    drop(server);
}

#[tokio::test]
async fn the_json_tells_listeners_groups_and_tunnels() {
    let pki = Pki::new();
    let mut app = raw_upgrade_target().await;
    let (down, spare) = (closed_port().await, closed_port().await);
    let proxy = start_proxy(&pki, &config("", app.addr, down, spare)).await;
    let admin = proxy.admin_addr().expect("an admin listener");

    let (status, head, body) = get(admin, "/", "").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'sha256-"),
        "{head}"
    );
    assert!(
        body.contains("<title>albatross dashboard</title>"),
        "{body}"
    );
    let (status, _, _) = get(admin, "/?Action=DescribeLoadBalancers", "").await;
    assert_ne!(
        status, 200,
        "GET /?Action=… is still the API (unsigned: refused)"
    );

    let s = snapshot(admin, "").await;
    let listener = &s["listeners"][0];
    assert_eq!(listener["protocol"], "HTTP");
    assert_eq!(listener["port"], proxy.listener_addr(0).port());
    let priorities: Vec<&Value> = listener["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["priority"])
        .collect();
    assert_eq!(priorities, [10, 20, 30], "rules in evaluation order");
    assert_eq!(listener["rules"][0]["conditions"][0], "path is /down/*");
    assert_eq!(listener["rules"][0]["action"]["type"], "forward");
    assert_eq!(
        listener["rules"][0]["action"]["target_groups"][0]["name"],
        "down"
    );
    assert_eq!(listener["rules"][1]["action"]["type"], "fixed-response");
    assert_eq!(listener["rules"][2]["action"]["type"], "redirect");
    assert_eq!(listener["default_action"]["text"], "forward to app");

    let names: Vec<&Value> = s["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["name"])
        .collect();
    assert_eq!(names, ["app", "down", "spare"]);
    let spare_row = &s["target_groups"][2]["targets"][0];
    let described = &proxy.target_health("spare").unwrap()[0];
    assert_eq!(spare_row["address"], spare.to_string());
    assert_eq!(spare_row["state"], described.state.as_str());
    assert_eq!(spare_row["reason"], described.reason.unwrap().code());
    assert_eq!(
        spare_row["description"],
        described.description.clone().unwrap()
    );

    // A tunnel: listed open with what it joins, counted on its target.
    let (client, server) = app.tunnel(proxy.listener_addr(0)).await;
    let client_addr = client.local_addr().unwrap().to_string();
    let s = snapshot_until(admin, "the tunnel in the JSON", |s| {
        s["open_tunnels"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["client"] == client_addr.as_str()))
    })
    .await;
    let open = &s["open_tunnels"][0];
    assert_eq!(open["target"], app.addr.to_string());
    assert_eq!(open["target_group"], "app");
    assert_eq!(open["listener_port"], proxy.listener_addr(0).port());
    let target = &s["target_groups"][0]["targets"][0];
    assert_eq!(target["state"], "healthy");
    assert_eq!(
        (
            &target["tunnels"],
            &target["outstanding"],
            &target["requests"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1))
    );

    // Bytes moved: the open tunnel shows them, and how long it has been idle since.
    let (mut client, mut server) = (client, server);
    talk(&mut client, &mut server).await;
    let s = snapshot_until(admin, "the tunnel's bytes in the JSON", |s| {
        s["open_tunnels"][0]["bytes_from_client"] == 5
            && s["open_tunnels"][0]["bytes_to_client"] == 6
    })
    .await;
    let idle_ms = s["open_tunnels"][0]["idle_for_ms"].as_u64().unwrap();
    let age_ms = s["open_tunnels"][0]["age_ms"].as_u64().unwrap();
    assert!(idle_ms <= age_ms, "idle {idle_ms} ms in {age_ms} ms");

    // Closed by the client: gone from the open list, recorded with cause and bytes.
    let id = open["id"].clone();
    client_close(client, server).await;
    let s = snapshot_until(admin, "the tunnel among the closed ones", |s| {
        s["open_tunnels"].as_array().is_some_and(|t| t.is_empty())
            && s["closed_tunnels"][0]["id"] == id
    })
    .await;
    let closed = &s["closed_tunnels"][0];
    assert_eq!(closed["cause"], "client_close");
    assert_eq!(closed["bytes_from_client"], 5);
    assert_eq!(closed["bytes_to_client"], 6);
    assert_eq!(closed["client"], client_addr.as_str());
    let ended = s["ended"].as_array().unwrap();
    assert_eq!(ended.len(), 13, "every cause is counted: {ended:?}");
    assert!(
        ended
            .iter()
            .any(|e| e["cause"] == "client_close" && e["count"] == 1),
        "{ended:?}"
    );
    assert_eq!(s["target_groups"][0]["targets"][0]["tunnels"], 0);
}

#[tokio::test]
async fn the_page_follows_tunnels_live_in_a_browser() {
    let pki = Pki::new();
    let mut app = raw_upgrade_target().await;
    let (down, spare) = (closed_port().await, closed_port().await);
    let proxy = start_proxy(&pki, &config("", app.addr, down, spare)).await;
    let admin = proxy.admin_addr().expect("an admin listener");
    let listener = proxy.listener_addr(0);
    let Some(mut browser) = Browser::open(&format!("http://{admin}/")).await else {
        return;
    };

    browser
        .wait_until(
            "the page's first refresh",
            SAFETY,
            "document.body.dataset.status === 'ok' && Number(document.body.dataset.refreshes) >= 1",
            |v| v.as_bool().filter(|ok| *ok),
        )
        .await;
    // Refreshes must not reload the page: this mark would go.
    browser
        .evaluate("window.stillTheSamePage = true")
        .await
        .unwrap();

    // (a) The listener with its rules in evaluation order, markup shown as text.
    let shown = browser
        .evaluate(
            "[...document.querySelectorAll('[data-listener-port]')].map(l => ({
                port: Number(l.dataset.listenerPort),
                protocol: l.dataset.protocol,
                rules: [...l.querySelectorAll('li[data-priority]')]
                    .map(r => [Number(r.dataset.priority), r.textContent]),
                fallback: l.querySelector('li[data-default] [data-action]').textContent,
                elements: l.querySelectorAll('ol b').length,
            }))",
        )
        .await
        .unwrap();
    let listeners = shown.as_array().unwrap();
    assert_eq!(listeners.len(), 1, "{shown}");
    let l = &listeners[0];
    assert_eq!(
        (l["port"].as_u64(), l["protocol"].as_str()),
        (Some(listener.port().into()), Some("HTTP")),
        "{l}"
    );
    let rules = l["rules"].as_array().unwrap();
    let priorities: Vec<&Value> = rules.iter().map(|r| &r[0]).collect();
    assert_eq!(priorities, [10, 20, 30], "{l}");
    let text = |i: usize| rules[i][1].as_str().unwrap_or_default().to_string();
    assert!(
        text(0).contains("path is /down/*") && text(0).contains("forward to down"),
        "{l}"
    );
    assert!(text(1).contains("header X-Env is <b>dev</b>"), "{l}");
    assert!(
        text(1).contains("method is PUT") && text(1).contains("fixed response 503"),
        "{l}"
    );
    assert!(
        text(2).contains("host is old.example.com") && text(2).contains("redirect 301"),
        "{l}"
    );
    assert!(
        l["fallback"]
            .as_str()
            .unwrap_or_default()
            .contains("forward to app"),
        "{l}"
    );
    assert_eq!(
        l["elements"], 0,
        "a value that looks like markup is text: {l}"
    );

    // (a) Every target group, each target as DescribeTargetHealth words it; `down` turns
    // unhealthy after two failed checks 200 ms apart.
    let groups = browser
        .wait_until(
            "the target groups and their targets' health",
            SAFETY,
            "Object.fromEntries([...document.querySelectorAll('[data-target-group]')].map(g => [
                g.dataset.targetGroup,
                [...g.querySelectorAll('tr[data-target]')].map(r => Object.assign(
                    { address: r.dataset.target, state: r.dataset.state, reason: r.dataset.reason },
                    Object.fromEntries([...r.cells].map(c => [c.dataset.label, c.textContent])))),
            ]))",
            |v| (v["down"][0]["state"] == "unhealthy").then(|| v.clone()),
        )
        .await;
    for name in ["app", "down", "spare"] {
        let rows = groups[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {groups}"));
        let described = proxy.target_health(name).unwrap();
        assert_eq!(rows.len(), described.len(), "{name}: {groups}");
        for d in described {
            let address = SocketAddr::new(d.target, d.port).to_string();
            let row = rows
                .iter()
                .find(|r| r["address"] == address.as_str())
                .unwrap_or_else(|| panic!("{name} {address}: {groups}"));
            let reason = d.reason.map(|r| r.code()).unwrap_or_default();
            assert_eq!(row["state"], d.state.as_str(), "{name}: {row}");
            assert_eq!(row["State"], d.state.as_str(), "{name}: {row}");
            assert_eq!(row["reason"], reason, "{name}: {row}");
            assert_eq!(
                row["Reason"],
                if reason.is_empty() { "—" } else { reason },
                "{name}: {row}"
            );
            let description = d.description.unwrap_or_else(|| "—".to_string());
            assert_eq!(row["Description"], description.as_str(), "{name}: {row}");
            assert_eq!(
                row["Health check port"],
                d.health_check_port.to_string(),
                "{name}: {row}"
            );
        }
    }
    assert_eq!(groups["app"][0]["state"], "healthy", "{groups}");
    assert_eq!(groups["spare"][0]["reason"], "Target.NotInUse", "{groups}");

    // (b) A tunnel opened now appears within LIVE, with what it joins and on its target.
    let (client, server) = app.tunnel(listener).await;
    let client_addr = client.local_addr().unwrap();
    let opened = tokio::time::Instant::now();
    eventually("the tunnel to be registered", || {
        proxy.tunnels().iter().any(|t| t.client == client_addr)
    })
    .await;
    let id = proxy
        .tunnels()
        .iter()
        .find(|t| t.client == client_addr)
        .map(|t| t.id.0)
        .unwrap();
    let row_of = |id: u64| {
        format!(
            "(() => {{
                const row = document.querySelector('tr[data-tunnel-id=\"{id}\"]');
                return row && Object.fromEntries([...row.cells].map(c => [c.dataset.label, c.textContent]));
            }})()"
        )
    };
    let row = browser
        .wait_until(
            "the open tunnel on the page",
            LIVE.saturating_sub(opened.elapsed()),
            &row_of(id),
            |v| v.is_object().then(|| v.clone()),
        )
        .await;
    assert_eq!(row["Id"], id.to_string(), "{row}");
    assert_eq!(row["Listener port"], listener.port().to_string(), "{row}");
    assert_eq!(row["Client"], client_addr.to_string(), "{row}");
    assert_eq!(row["Target"], app.addr.to_string(), "{row}");
    assert_eq!(row["Target group"], "app", "{row}");
    let counters = format!(
        "(() => {{
            const row = document.querySelector('[data-target-group=\"app\"] tr[data-target=\"{}\"]');
            return row && Object.fromEntries([...row.cells].map(c => [c.dataset.label, c.textContent]));
        }})()",
        app.addr
    );
    let counted = browser
        .wait_until("the tunnel counted on its target", LIVE, &counters, |v| {
            (v["Tunnels"] == "1").then(|| v.clone())
        })
        .await;
    assert_eq!(
        (&counted["In flight"], &counted["Requests"]),
        (&"1".into(), &"1".into()),
        "{counted}"
    );

    // Bytes moved through the open tunnel show on its row within LIVE, with its idle time.
    let (mut client, mut server) = (client, server);
    let talked = tokio::time::Instant::now();
    talk(&mut client, &mut server).await;
    let moved = format!(
        "(() => {{
            const row = document.querySelector('tr[data-tunnel-id=\"{id}\"]');
            const n = (a) => row && Number(row.querySelector(`[${{a}}]`).getAttribute(a));
            return row && [n('data-bytes-from-client'), n('data-bytes-to-client'), n('data-idle-ms')];
        }})()"
    );
    let shown = browser
        .wait_until(
            "the tunnel's bytes on the page",
            LIVE.saturating_sub(talked.elapsed()),
            &moved,
            |v| (v[0] == 5 && v[1] == 6).then(|| v.clone()),
        )
        .await;
    assert!(shown[2].as_u64().is_some(), "idle time shown: {shown}");

    // (c) Closed by the client: gone from the open list and listed closed, with its
    // cause and bytes, within LIVE.
    let closing = tokio::time::Instant::now();
    client_close(client, server).await;
    let closed = browser
        .wait_until(
            "the tunnel to move from open to closed",
            LIVE.saturating_sub(closing.elapsed()),
            &format!(
                "(() => {{
                    const open = document.querySelector('tr[data-tunnel-id=\"{id}\"]');
                    const row = document.querySelector('tr[data-closed-id=\"{id}\"]');
                    const ended = document.querySelector('[data-ended-cause=\"client_close\"]');
                    return !open && row && Object.assign(
                        {{ cause: row.dataset.cause, ended: ended && ended.dataset.count,
                           bytes: [...row.querySelectorAll('[data-bytes]')].map(c => c.dataset.bytes) }},
                        Object.fromEntries([...row.cells].map(c => [c.dataset.label, c.textContent])));
                }})()"
            ),
            |v| v.is_object().then(|| v.clone()),
        )
        .await;
    assert_eq!(closed["cause"], "client_close", "{closed}");
    assert_eq!(closed["Cause"], "client_close", "{closed}");
    assert_eq!(closed["bytes"], serde_json::json!(["5", "6"]), "{closed}");
    assert_eq!(closed["Client"], client_addr.to_string(), "{closed}");
    assert_eq!(closed["Target group"], "app", "{closed}");
    assert_eq!(closed["ended"], "1", "{closed}");
    let open_rows = browser
        .evaluate("document.querySelectorAll('tr[data-tunnel-id]').length")
        .await
        .unwrap();
    assert_eq!(open_rows, 0);

    // Readable on a narrow window: nothing wider than 360 px.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({ "width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    let widths = browser
        .evaluate(
            "({ page: document.documentElement.scrollWidth, body: document.body.scrollWidth,
                viewport: document.documentElement.clientWidth })",
        )
        .await
        .unwrap();
    assert_eq!(widths["viewport"], 360, "{widths}");
    assert!(
        widths["page"].as_u64() <= Some(360),
        "horizontal overflow: {widths}"
    );
    assert!(
        widths["body"].as_u64() <= Some(360),
        "horizontal overflow: {widths}"
    );

    let same = browser
        .evaluate("window.stillTheSamePage === true")
        .await
        .unwrap();
    assert_eq!(same, true, "the page was reloaded");
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );
}

#[tokio::test]
async fn credentials_guard_the_dashboard() {
    let pki = Pki::new();
    let app = raw_upgrade_target().await;
    let (down, spare) = (closed_port().await, closed_port().await);
    let credentials =
        "credentials = { access_key_id = \"AKIDDASH\", secret_access_key = \"s3cret\" }";
    let proxy = start_proxy(&pki, &config(credentials, app.addr, down, spare)).await;
    let admin = proxy.admin_addr().expect("an admin listener");

    for path in ["/", "/dashboard.json"] {
        let (status, head, _) = get(admin, path, "").await;
        assert_eq!(status, 401, "{path}: {head}");
        assert!(head.contains("www-authenticate: basic"), "{path}: {head}");
        let wrong = base64::engine::general_purpose::STANDARD.encode("AKIDDASH:wrong");
        let (status, _, _) = get(admin, path, &format!("Authorization: Basic {wrong}\r\n")).await;
        assert_eq!(status, 401, "{path} with a wrong secret");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode("AKIDDASH:s3cret");
    let auth = format!("Authorization: Basic {basic}\r\n");
    let (status, head, _) = get(admin, "/", &auth).await;
    assert_eq!(status, 200, "{head}");
    let s = snapshot(admin, &auth).await;
    assert_eq!(s["target_groups"][0]["name"], "app");

    // In a browser: the credentials in the URL answer the page's challenge, and the
    // page's own requests for its data carry them too.
    let Some(mut browser) = Browser::open(&format!("http://AKIDDASH:s3cret@{admin}/")).await else {
        return;
    };
    browser
        .wait_until(
            "the page to refresh with the credentials",
            SAFETY,
            "document.body && document.body.dataset.status === 'ok'
                && Number(document.body.dataset.refreshes) >= 2
                && document.querySelectorAll('[data-target-group]').length",
            |v| (v == 3).then_some(()),
        )
        .await;
}
