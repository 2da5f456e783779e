//! The access log's formatter: one line of a proxied HTTP request, as the log's thread
//! writes it (`Line::write_line` into a reused buffer), and the same record's `ws`
//! line. The proxy benchmark (`run.sh`) measures what logging costs a request as a
//! whole; this isolates the formatting, the largest part of it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use albatross::observe::access_log::{RequestLine, RequestTexts, TraceId};
use albatross::observe::{AccessRecord, Kind, Line};
use criterion::{criterion_group, Criterion};
use http::{Method, Version};

fn record() -> AccessRecord {
    let now = SystemTime::now();
    let mut texts = RequestTexts::default();
    texts.set(b"127.0.0.1:19301", b"/health", b"curl/8.5.0");
    AccessRecord {
        kind: Kind::Http,
        time: now,
        elb: Arc::from("app/albatross/d3f935875d24dd9c"),
        client: "127.0.0.79:55848".parse().unwrap(),
        target: Some("127.0.0.1:19000".parse().unwrap()),
        request_processing_time: Some(Duration::from_micros(12)),
        target_processing_time: Some(Duration::from_micros(640)),
        response_processing_time: Some(Duration::from_micros(9)),
        elb_status_code: Some(200),
        target_status_code: Some(200),
        received_bytes: 48,
        sent_bytes: 129,
        request: Some(RequestLine {
            method: Method::GET,
            scheme: "http",
            port: 19301,
            version: Version::HTTP_11,
        }),
        texts,
        ssl_cipher: None,
        ssl_protocol: None,
        target_group_arn: Some(Arc::from(
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/echo/0eddef69644fdcf8",
        )),
        trace_id: Some(TraceId::Made(*b"Root=1-6b12e592-f62860f56367e6b022be03c2")),
        domain_name: None,
        chosen_cert_arn: None,
        matched_rule_priority: Some(0),
        request_creation_time: now - Duration::from_micros(700),
        actions_executed: Some("forward"),
        redirect_url: None,
        error_reason: None,
        classification: None,
        classification_reason: None,
        conn_trace_id: albatross::observe::ConnTraceId::from_bytes([0x5b; 16]),
        held: None,
    }
}

fn write_line(c: &mut Criterion) {
    let http = record();
    let mut https = record();
    https.kind = Kind::Https;
    https.ssl_cipher = Some("TLS_AES_128_GCM_SHA256");
    https.ssl_protocol = Some("TLSv1.3");
    https.domain_name = Some(Arc::from("www.example.com"));
    let mut out = Vec::with_capacity(1024);
    for (name, r) in [("http line", &http), ("https line", &https)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(r).write_line(&mut out);
                black_box(&out);
            })
        });
    }
}

criterion_group!(benches, write_line);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
