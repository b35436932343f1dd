//! The trace export protocols other than the default http/protobuf: OTLP/gRPC and OTLP/HTTP
//! with JSON bodies, each against the in-test receiver, with exact span counts and the
//! fields that the JSON mapping could get wrong (ids, 64-bit integers, enums).
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests --test export_protocols -- --test-threads=1`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use beyla_rs_tests::counters::{SPANS_CREATED, SPANS_DROPPED};
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures;
use beyla_rs_tests::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, SpanStatus};
use beyla_rs_tests::rawhttp::{RawConn, Request};
use beyla_rs_tests::{free_port, quiet, require_root, scaled};
use common::*;

const REQUESTS: usize = 25;

fn hello_of(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.is_server() && s.pid() == Some(pid) && s.name == "GET /hello"
}

/// `REQUESTS` requests on fresh connections, then exactly that many server spans, each with
/// the fields a wrong wire mapping would break.
fn send_and_check(rx: &OtlpReceiver, d: Daemon, pid: u32, port: u16) {
    for _ in 0..REQUESTS {
        let r = RawConn::connect(port).request(&Request::get("/hello"));
        assert_eq!(r.status, 200);
    }
    let spans = rx.wait_for_exact_spans(hello_of(pid), REQUESTS, Duration::from_secs(20), quiet());
    rx.assert_no_errors();
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), REQUESTS, "duplicate span ids");
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.trace_id.len(), 32, "{}", s.summary());
        assert_ne!(s.trace_id, "0".repeat(32));
        assert_eq!(s.span_id.len(), 16, "{}", s.summary());
        assert_eq!(s.parent_span_id, "", "root span: {}", s.summary());
        assert_eq!(s.flags, 0x101, "sampled | has-is-remote: {}", s.summary());
        assert_eq!(s.status_code, SpanStatus::Unset);
        assert_eq!(s.attr_str("http.request.method"), Some("GET"));
        assert_eq!(s.attr_int("http.response.status_code"), Some(200));
        assert_eq!(s.attr_int("server.port"), Some(i64::from(port)));
        assert!(s.start_ns > 1_600_000_000_000_000_000, "{}", s.summary());
        assert!(s.end_ns >= s.start_ns);
        assert_eq!(s.res_int("process.pid"), Some(i64::from(pid)));
        assert_eq!(s.res_str("telemetry.sdk.name"), Some("beyla-rs"));
        assert_eq!(s.scope_name, "beyla-rs");
        assert_eq!((s.events, s.links), (0, 0));
    }
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    assert_eq!(counter(&c, "spans_dropped"), 0, "{c:?}");
    assert_eq!(counter(&c, "export_errors"), 0, "{c:?}");
    // Every span the daemon counts as exported arrived (the fixture's own start-up probe may
    // add spans other than `GET /hello`).
    assert_eq!(
        counter(&c, "spans_exported"),
        rx.spans().len() as u64,
        "{c:?}"
    );
}

#[test]
fn grpc_export_delivers_every_span() {
    let _g = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let grpc = rx.start_grpc();
    let srv = fixtures::rust(free_port());
    let d = Daemon::builder()
        .open_ports(&[srv.port()])
        .endpoint(grpc)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=t1")
        .env("OTEL_METRICS_EXPORTER", "none")
        .start();
    send_and_check(&rx, d, srv.pid(), srv.port());
    let reqs = rx.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            r.path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(r.header("x-test-tenant"), Some("t1"), "metadata: {r:?}");
    }
}

#[test]
fn http_json_export_delivers_every_span() {
    let _g = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let srv = fixtures::rust(free_port());
    let d = Daemon::builder()
        .open_ports(&[srv.port()])
        .otlp(&rx)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=t1")
        .env("OTEL_METRICS_EXPORTER", "none")
        .start();
    send_and_check(&rx, d, srv.pid(), srv.port());
    let reqs = rx.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-test-tenant"), Some("t1"));
        // OTLP/JSON, not protobuf: hex ids and decimal-string timestamps in the text.
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.starts_with("{\"resourceSpans\":"), "{body:.200}");
        assert!(body.contains("\"startTimeUnixNano\":\""), "{body:.400}");
    }
}

/// A collector that refuses the request itself (HTTP 400): each batch is sent once, dropped
/// and counted, and the refusal is logged once however many batches follow.
#[test]
fn collector_400_drops_each_batch_once_and_logs_once() {
    use beyla_rs_tests::otlp::Fault;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    let _g = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let srv = fixtures::rust(free_port());
    let d = Daemon::builder()
        .open_ports(&[srv.port()])
        .otlp(&rx)
        .internal_metrics()
        .env("OTEL_METRICS_EXPORTER", "none")
        .start();
    rx.set_fault(Some(Fault::status(400)));
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 5;
    for round in 1..=ROUNDS {
        for _ in 0..PER_ROUND {
            let r = RawConn::connect(srv.port()).request(&Request::get("/hello"));
            assert_eq!(r.status, 200);
        }
        rx.wait_for_requests(round, scaled(Duration::from_secs(10)));
    }
    // Once the daemon is idle (every span built has left its queue, nothing moves) a retry
    // can no longer come: every span must then have been sent in exactly one request.
    let idle = d.wait_idle();
    let reqs = rx.requests();
    assert!(reqs.len() >= ROUNDS, "{reqs:?}");
    let mut span_ids = HashSet::new();
    for r in &reqs {
        assert_eq!(r.status, 400);
        let req = ExportTraceServiceRequest::decode(&r.body[..]).expect("protobuf body");
        for sp in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            assert!(span_ids.insert(sp.span_id.clone()), "span sent twice");
        }
    }
    let refused_spans = span_ids.len();
    assert_eq!(
        refused_spans,
        ROUNDS * PER_ROUND,
        "one span per request, each sent once: {idle:?}, {} requests",
        reqs.len()
    );
    assert_eq!(
        (idle.get(SPANS_CREATED), idle.get(SPANS_DROPPED)),
        (refused_spans as u64, refused_spans as u64),
        "{idle:?}"
    );
    assert!(rx.spans().is_empty(), "refused spans are not stored");
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    assert_eq!(counter(&c, "spans_dropped"), refused_spans as u64, "{c:?}");
    assert_eq!(counter(&c, "export_errors"), reqs.len() as u64, "{c:?}");
    assert_eq!(counter(&c, "spans_exported"), 0, "{c:?}");
    let lines = exit
        .stderr
        .lines()
        .filter(|l| l.contains("not retried"))
        .count();
    assert_eq!(lines, 1, "the refusal is logged once:\n{}", exit.stderr);
}
