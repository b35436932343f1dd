//! Issue 2: HTTP/1.x SERVER spans from Python `http.server`, Go `net/http`, a Rust hyper server
//! and Node `http`, driven by curl (keep-alive, several URLs per invocation) and the raw-socket
//! client (keep-alive, pipelining, split writes, ~8 KiB headers, chunked bodies,
//! `Expect: 100-continue`, HEAD/204/304, HTTP/1.0). Exact counts, attributes, resource,
//! durations, and no secret in the export.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests -- --test-threads=1`.

use std::time::Duration;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{check_server_spans, expect_spans};
use beyla_rs_tests::fixtures::{self, ServerKind, ServerOpts};
use beyla_rs_tests::otlp::{self, OtlpReceiver};
use beyla_rs_tests::{free_port, require_root, scenarios};

fn server_spans_test(kind: ServerKind) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let svc = format!("{}-svc", kind.name());
    let srv = fixtures::start(
        kind,
        port,
        &ServerOpts::default().env("OTEL_SERVICE_NAME", svc.clone()),
    );
    let exe = srv.exe_name();
    let mut d = Daemon::start(&[port], &rx);

    let mut expected = scenarios::raw_cases(port);
    expected.extend(scenarios::curl_cases(port));
    let spans = expect_spans(&rx, otlp::server_of(srv.pid()), &expected);
    check_server_spans(&spans, port, srv.pid(), &exe);
    for s in &spans {
        assert_eq!(
            s.service_name(),
            Some(svc.as_str()),
            "service.name must come from the target's own OTEL_SERVICE_NAME: {}",
            s.summary()
        );
    }
    let slow = spans
        .iter()
        .find(|s| s.attr_str("url.path") == Some("/sleep"))
        .unwrap();
    assert!(
        slow.duration() >= Duration::from_millis(200) && slow.duration() < Duration::from_secs(5),
        "GET /sleep?ms=200 must last >= 200 ms: {}",
        slow.summary()
    );
    // Nothing else was selected: no span from the test process, curl, or anything else.
    rx.assert_quiet(otlp::any_span, expected.len(), Duration::ZERO);
    rx.assert_no_secrets(scenarios::CURL_SECRETS);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

#[test]
fn python_http_server_spans() {
    server_spans_test(ServerKind::Python);
}

#[test]
fn go_net_http_server_spans() {
    server_spans_test(ServerKind::Go);
}

#[test]
fn rust_hyper_server_spans() {
    server_spans_test(ServerKind::Rust);
}

#[test]
fn node_http_server_spans() {
    server_spans_test(ServerKind::Node);
}
