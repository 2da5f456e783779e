//! Rule matching on a listener with 100 rules of mixed kinds (ALB's per-listener
//! limit): a request matching the first rule, one matching the last, and one that
//! falls through to the default action.
//!
//! Before measuring, it checks that `Router::route` allocates nothing, with a
//! counting global allocator (which is why this lives in its own binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use albatross::config::model::{Action, Condition, FixedResponse, Listener, Protocol, Rule};
use albatross::routing::Router;
use criterion::{criterion_group, Criterion};
use http::request::Parts;

struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

fn fixed(body: String) -> Action {
    Action::FixedResponse(FixedResponse {
        status_code: 200,
        content_type: Some("text/plain".to_string()),
        message_body: body,
    })
}

/// Rule `i` of 100, its kind chosen by `i % 5`.
fn rule(i: u32) -> Rule {
    let conditions = match i % 5 {
        0 => vec![Condition::HostHeader(vec![
            format!("svc{i}.example.com"),
            format!("*.svc{i}.internal"),
        ])],
        1 => vec![Condition::PathPattern(vec![
            format!("/api/v{i}/*"),
            format!("/static/{i}/*.png"),
        ])],
        2 => vec![
            Condition::HttpRequestMethod(vec!["GET".to_string(), "HEAD".to_string()]),
            Condition::HttpHeader {
                name: "X-Tenant".to_string(),
                values: vec![format!("tenant-{i}"), format!("t{i}-*")],
            },
        ],
        3 => vec![Condition::QueryString(vec![
            (Some("version".to_string()), format!("{i}")),
            (None, format!("beta-{i}*")),
        ])],
        _ => vec![
            Condition::SourceIp(vec![format!("10.{i}.0.0/16").parse().unwrap()]),
            Condition::PathPattern(vec!["/internal/*".to_string()]),
        ],
    };
    Rule {
        priority: i * 10,
        conditions,
        action: fixed(format!("rule {i}")),
    }
}

fn listener() -> Listener {
    Listener {
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 80,
        protocol: Protocol::Http,
        tls: None,
        rules: (1..=100).map(rule).collect(),
        default_action: fixed("default".to_string()),
    }
}

fn request(uri: &str, host: &str) -> Parts {
    http::Request::builder()
        .method("GET")
        .uri(uri)
        .header("host", host)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("x-tenant", "tenant-none")
        .header("cookie", "AWSALB=abcdef; session=123")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// (name, request, expected priority)
fn cases() -> Vec<(&'static str, Parts, Option<u32>)> {
    vec![
        (
            "early",
            request("/api/v1/users?page=2", "www.example.com"),
            Some(10),
        ),
        (
            "late",
            request("/home?page=2&version=none", "svc100.example.com:8080"),
            Some(1000),
        ),
        (
            "default",
            request("/home?page=2&version=none&q=a%20b", "www.example.com"),
            None,
        ),
    ]
}

fn assert_no_allocations(router: &Router) {
    for (name, head, expected) in cases() {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let matched = router.route(black_box(&head), PEER);
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(matched.priority, expected, "{name}");
        assert_eq!(after - before, 0, "{name}: route allocated");
    }
}

fn bench_rules(c: &mut Criterion) {
    let router = Router::new(&listener());
    let mut group = c.benchmark_group("route_100_rules");
    for (name, head, _) in cases() {
        group.bench_function(name, |b| {
            b.iter(|| router.route(black_box(&head), black_box(PEER)).priority)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_rules);

fn main() {
    assert_no_allocations(&Router::new(&listener()));
    benches();
    Criterion::default().configure_from_args().final_summary();
}
