//! Connections handed from the process that accepted them to another one over a Unix socket
//! (`SCM_RIGHTS`): a Node `cluster` with round-robin scheduling (its primary accepts and
//! passes each connection to a worker) and a Python listener that passes each connection to
//! a handler process with `socket.send_fds`. Every request is a span of the process that
//! served it (its pid), exact counts, keep-alive and new-connection load.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests -- --test-threads=1`.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures::{self, ServerOpts, ServerProcess};
use beyla_rs_tests::otlp::{OtlpReceiver, ReceivedSpan, SpanKind};
use beyla_rs_tests::rawhttp::{RawConn, Request};
use beyla_rs_tests::{free_port, procs, quiet, require_root, scaled, settle, span_timeout};

/// Keep-alive clients × requests each, then requests on a connection of their own.
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 25;
const NEW_CONNS: usize = 40;

/// Drives the load and counts the answers by the pid that served them (`X-Served-By`).
fn drive(port: u16) -> BTreeMap<u32, usize> {
    let served_by = |r: &beyla_rs_tests::rawhttp::Response| -> u32 {
        r.header("X-Served-By")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no X-Served-By in {r:?}"))
    };
    let keep_alive: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = RawConn::connect(port);
                (0..PER_CLIENT)
                    .map(|i| {
                        let st = [200, 201, 404, 500, 503][(c * PER_CLIENT + i) % 5];
                        let r = conn.request(&Request::get(&format!("/status?respond={st}")));
                        assert_eq!(r.status, st);
                        served_by(&r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_pid = BTreeMap::new();
    for t in keep_alive {
        for pid in t.join().unwrap() {
            *by_pid.entry(pid).or_insert(0) += 1;
        }
    }
    for _ in 0..NEW_CONNS {
        let r =
            RawConn::connect(port).request(&Request::get("/hello").header("Connection", "close"));
        assert_eq!(r.status, 200);
        *by_pid.entry(served_by(&r)).or_insert(0) += 1;
    }
    by_pid
}

/// Every answer is a SERVER span of the process that gave it, and nothing else is.
fn check(rx: &OtlpReceiver, workers: &[u32], by_pid: &BTreeMap<u32, usize>) {
    let total = CLIENTS * PER_CLIENT + NEW_CONNS;
    assert_eq!(by_pid.values().sum::<usize>(), total);
    for pid in by_pid.keys() {
        assert!(
            workers.contains(pid),
            "served by {pid}, not a worker {workers:?}"
        );
    }
    let server = |s: &ReceivedSpan| s.kind == SpanKind::Server;
    let spans = rx.wait_for_exact_spans(server, total, span_timeout(), quiet());
    let mut spans_by_pid = BTreeMap::new();
    for s in &spans {
        let pid = s
            .pid()
            .unwrap_or_else(|| panic!("no process.pid: {}", s.summary()));
        *spans_by_pid.entry(pid).or_insert(0) += 1;
    }
    assert_eq!(
        &spans_by_pid, by_pid,
        "spans per pid must be the answers per serving pid"
    );
    let hello = spans
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/hello"))
        .count();
    assert_eq!(hello, NEW_CONNS);
    rx.assert_no_errors();
}

/// Waits until the daemon says it instruments each of `pids`: a worker started before its
/// primary opened the port is taken when the daemon handles the bind, moments later.
fn wait_instrumented(d: &Daemon, pids: &[u32]) {
    for pid in pids {
        assert!(
            d.wait_for_log(
                &format!("instrumenting pid {pid} "),
                scaled(Duration::from_secs(10))
            ),
            "pid {pid} not instrumented:\n{}",
            d.logs()
        );
    }
}

/// Waits until the server says all of it is ready (`listening on` in its output).
fn wait_ready(srv: &ServerProcess, what: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    while !srv.output().contains(what) {
        assert!(Instant::now() < deadline, "not ready: {}", srv.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn node_cluster_round_robin_workers_are_followed() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let d = Daemon::start(&[port], &rx);
    let srv = fixtures::node_with(port, &ServerOpts::default().arg("--cluster").arg("2"));
    wait_ready(&srv, &format!("listening on 127.0.0.1:{port}"));
    let workers = procs::children_of(srv.pid());
    assert_eq!(workers.len(), 2, "{}", srv.output());
    wait_instrumented(&d, &workers);
    std::thread::sleep(settle());
    let by_pid = drive(port);
    assert_eq!(
        by_pid.len(),
        2,
        "round-robin must use both workers: {by_pid:?}"
    );
    check(&rx, &workers, &by_pid);
    let exit = d.stop_ok();
    eprintln!(
        "[measured] Node cluster (2 workers, round-robin): answers and spans per worker pid {by_pid:?}"
    );
    assert!(
        !exit.stderr.contains("panicked"),
        "daemon log: {}",
        exit.stderr
    );
}

fn fd_passing(handler_after_bind: bool) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let d = Daemon::start(&[port], &rx);
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg(beyla_rs_tests::tests_dir().join("servers/fd_passing_server.py"))
        .args(["--port", &port.to_string()]);
    if handler_after_bind {
        cmd.arg("--handler-after-bind");
    }
    let srv = fixtures::spawn_server("fd-passing", cmd, port, None);
    wait_ready(&srv, "ready");
    let workers = procs::children_of(srv.pid());
    assert_eq!(workers.len(), 1, "{}", srv.output());
    wait_instrumented(&d, &workers);
    std::thread::sleep(settle());
    let by_pid = drive(port);
    check(&rx, &workers, &by_pid);
    d.stop_ok();
    eprintln!(
        "[measured] Python send_fds/recv_fds (handler started {} the bind): spans per pid {by_pid:?}",
        if handler_after_bind {
            "after"
        } else {
            "before"
        }
    );
}

/// The handler was started before the listener bound the selected port: it is taken with it
/// (a child running the same program).
#[test]
fn python_send_fds_to_a_handler_started_before_the_bind() {
    fd_passing(false);
}

/// The handler is forked and executed by the already selected listener.
#[test]
fn python_send_fds_to_a_handler_started_after_the_bind() {
    fd_passing(true);
}
