//! Issue 2, "done when": nginx (master + 2 workers) with keep-alive and `proxy_pass` to a
//! keep-alive upstream (Python, also selected): 200 requests of mixed methods and statuses give
//! exactly 200 nginx SERVER spans, exactly one nginx CLIENT span per proxied call, and the
//! upstream's SERVER spans; every nginx span carries its worker's pid.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests -- --test-threads=1`.

use std::time::Duration;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{check_client_spans, check_server_spans, expect_spans};
use beyla_rs_tests::fixtures::{self, Nginx, NginxOpts};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::{free_port, require_root, scenarios};

#[test]
fn nginx_keepalive_proxy_pass_200_mixed_requests() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let up = fixtures::python(free_port());
    let ng = Nginx::start(
        free_port(),
        &NginxOpts {
            upstream_port: Some(up.port()),
            workers: Some(2),
        },
    );
    let master = ng.master_pid();
    let workers = ng.worker_pids();
    assert_eq!(workers.len(), 2);
    let mut d = Daemon::start(&[ng.port(), up.port()], &rx);

    let mix = scenarios::nginx_mix(ng.port(), up.port(), 200, 4);
    assert_eq!(
        (mix.server.len(), mix.client.len(), mix.upstream.len()),
        (200, 40, 40)
    );

    let in_workers = |s: &ReceivedSpan| s.pid().is_some_and(|p| workers.contains(&p));
    let server = expect_spans(&rx, |s| s.is_server() && in_workers(s), &mix.server);
    let client = expect_spans(&rx, |s| s.is_client() && in_workers(s), &mix.client);
    let upstream = expect_spans(&rx, otlp::server_of(up.pid()), &mix.upstream);

    for s in &server {
        check_server_spans(
            std::slice::from_ref(s),
            ng.port(),
            s.pid().unwrap(),
            "nginx",
        );
    }
    for s in &client {
        check_client_spans(
            std::slice::from_ref(s),
            up.port(),
            s.pid().unwrap(),
            "nginx",
        );
    }
    check_server_spans(&upstream, up.port(), up.pid(), &up.exe_name());
    for s in server.iter().chain(&client) {
        assert_ne!(
            s.pid(),
            Some(master),
            "the master serves nothing: {}",
            s.summary()
        );
        assert_eq!(
            s.service_name(),
            Some("nginx"),
            "default service.name is the executable name"
        );
    }
    // 200 + 40 + 40, nothing else (the upstream makes no client calls; nothing else selected).
    rx.assert_quiet(otlp::any_span, 280, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}
