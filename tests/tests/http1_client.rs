//! Issue 2: a selected server acting as an HTTP client (its `/proxy/` route calls an upstream
//! that is NOT selected) gives CLIENT spans with `url.full` (sensitive query values replaced by
//! `REDACTED`), `server.address`/`server.port` of the upstream, status ERROR iff >= 400 — from
//! Go's `net/http` client (required by the issue), Python's `http.client`, Node's `http` agent
//! and hyper's client.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests -- --test-threads=1`.

use std::time::Duration;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{ExpectedSpan, check_client_spans, check_server_spans, expect_spans};
use beyla_rs_tests::fixtures::{self, ServerKind, ServerOpts};
use beyla_rs_tests::otlp::{self, OtlpReceiver};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, require_root};

fn client_spans_test(kind: ServerKind) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let up = fixtures::python(free_port());
    let port = free_port();
    let srv = fixtures::start(kind, port, &ServerOpts::default().upstream_port(up.port()));
    let exe = srv.exe_name();
    let mut d = Daemon::start(&[port], &rx);

    let reqs = vec![
        Request::get("/proxy/hello?user=bob&password=hunter2&token=t0psecret"),
        Request::get("/proxy/status?respond=404"),
        Request::new("POST", "/proxy/echo").body("twelve bytes"),
        Request::new("DELETE", "/proxy/status?respond=503"),
        Request::new("PUT", "/proxy/status?respond=201").body("x"),
    ];
    let r = rawhttp::keepalive(port, &reqs);
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 404, 200, 503, 201]);

    let u = |p: &str| format!("http://127.0.0.1:{}{p}", up.port());
    let c = |m: &str, p: &str, st: u16| ExpectedSpan::client(m, &u(p), st).port(up.port());
    let expected_client = vec![
        c(
            "GET",
            "/hello?user=bob&password=REDACTED&token=REDACTED",
            200,
        ),
        c("GET", "/status?respond=404", 404),
        c("POST", "/echo", 200),
        c("DELETE", "/status?respond=503", 503),
        c("PUT", "/status?respond=201", 201),
    ];
    let s = |m: &str, p: &str, st: u16| ExpectedSpan::server(m, p, st).port(port);
    let expected_server = vec![
        s("GET", "/proxy/hello", 200),
        s("GET", "/proxy/status", 404),
        s("POST", "/proxy/echo", 200).req_body(12).resp_body(12),
        s("DELETE", "/proxy/status", 503),
        s("PUT", "/proxy/status", 201).req_body(1),
    ];
    let client = expect_spans(&rx, otlp::client_of(srv.pid()), &expected_client);
    let server = expect_spans(&rx, otlp::server_of(srv.pid()), &expected_server);
    check_client_spans(&client, up.port(), srv.pid(), &exe);
    check_server_spans(&server, port, srv.pid(), &exe);
    for s in &client {
        assert_eq!(
            s.attr_str("server.address"),
            Some("127.0.0.1"),
            "{}",
            s.summary()
        );
    }
    // The upstream is not selected: exactly the 10 spans above.
    rx.assert_quiet(otlp::any_span, 10, Duration::ZERO);
    rx.assert_no_secrets(&["hunter2", "t0psecret"]);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

#[test]
fn go_server_as_client_gives_client_spans() {
    client_spans_test(ServerKind::Go);
}

#[test]
fn python_server_as_client_gives_client_spans() {
    client_spans_test(ServerKind::Python);
}

#[test]
fn node_server_as_client_gives_client_spans() {
    client_spans_test(ServerKind::Node);
}

#[test]
fn rust_server_as_client_gives_client_spans() {
    client_spans_test(ServerKind::Rust);
}
