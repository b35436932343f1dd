//! Issue 3: gRPC spans from real gRPC stacks on the real kernel — a grpcio (Python, C core)
//! server and client and a tonic (hyper/h2) server and client (`servers/grpc/`,
//! `src/bin/beyla-grpc-tonic.rs`), both serving `servers/grpc/echo.proto`:
//!
//! - sequential unary calls;
//! - 50 concurrent unary calls multiplexed on one channel (one HTTP/2 connection), each
//!   sleeping 300 ms in the server so that all 50 streams are open at once;
//! - failing calls (NOT_FOUND, INTERNAL, UNAVAILABLE, INVALID_ARGUMENT, then OK): the right
//!   `rpc.grpc.status_code`, and ERROR per side (server: 2,4,12,13,14,15; client: non-zero);
//! - a server-streaming call (5 messages, 80 ms apart) and a bidi call (4 requests answered
//!   after 100 ms each): one span each whose duration covers the whole stream;
//! - unary calls with 64 KiB and 1 MiB requests and responses.
//!
//! The server process is selected by its port; the client process binds a listener on a
//! second selected port (`--listen`) before it connects, so it is instrumented too and every
//! call is checked as exactly one SERVER span and exactly one CLIENT span.
//!
//! Needs root, the daemon binary, `python3` with `grpcio` + `grpcio-tools` (tests/setup.sh);
//! run serially: `cargo test -p beyla-rs-tests --test grpc -- --test-threads=1`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect;
use beyla_rs_tests::fixtures::{self, ServerProcess};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::{
    free_port, procs, quiet, require_root, scaled, settle, span_timeout, time_scale,
};

const SERVICE: &str = "beyla.test.Echo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// grpcio: gRPC's C core under Python.
    Grpcio,
    /// tonic over hyper/h2.
    Tonic,
}

fn grpcio_script() -> PathBuf {
    beyla_rs_tests::tests_dir().join("servers/grpc/grpcio_fixture.py")
}

fn command(stack: Stack) -> Command {
    match stack {
        Stack::Grpcio => {
            let mut c = Command::new(fixtures::python_exe());
            c.arg("-u").arg(grpcio_script());
            c
        }
        Stack::Tonic => Command::new(fixtures::tonic_bin()),
    }
}

fn start_server(stack: Stack, port: u16) -> ServerProcess {
    let mut cmd = command(stack);
    cmd.args(["server", "--port", &port.to_string()]);
    fixtures::spawn_server(&format!("{stack:?} gRPC"), cmd, port, None)
}

/// What the client reported (its one JSON line, picked apart without a JSON parser).
struct ClientRun {
    pid: u32,
    line: String,
}

impl ClientRun {
    fn num(&self, key: &str) -> f64 {
        let pat = format!("\"{key}\": ");
        let i = self
            .line
            .find(&pat)
            .unwrap_or_else(|| panic!("{key} missing in client output {:?}", self.line));
        let rest = &self.line[i + pat.len()..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {:?}: {e}", self.line))
    }

    fn codes(&self) -> Vec<u32> {
        let i = self.line.find("\"codes\": [").expect("codes") + 10;
        let rest = &self.line[i..];
        let end = rest.find(']').expect("codes end");
        rest[..end]
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect()
    }
}

/// Runs the client to completion (it binds `listen` first so that the daemon selects it).
fn run_client(stack: Stack, port: u16, listen: u16, scenario: &str, n: usize) -> ClientRun {
    let mut cmd = command(stack);
    cmd.args([
        "client",
        "--target",
        &format!("127.0.0.1:{port}"),
        "--listen",
        &listen.to_string(),
        scenario,
        &n.to_string(),
    ]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("BEYLA_") {
            cmd.env_remove(&*k);
        }
    }
    // Except the time scale: the `concurrent` scenario stretches its server-side sleep by it.
    cmd.env("BEYLA_TEST_TIME_SCALE", time_scale().to_string());
    beyla_rs_tests::die_with_parent(&mut cmd, libc::SIGKILL);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {stack:?} client: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stack:?} client {scenario} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from the client: {stdout}"))
        .to_string();
    ClientRun { pid, line }
}

/// One run: server and daemon up, the client scenario done, both sides' spans collected
/// (exactly `n` each, and nothing more during the quiet period).
struct Run {
    server_port: u16,
    client: ClientRun,
    server_spans: Vec<ReceivedSpan>,
    client_spans: Vec<ReceivedSpan>,
}

fn run(
    server: Stack,
    client: Stack,
    scenario: &str,
    n: usize,
    expected_spans: usize,
    env: &[(&str, &str)],
) -> Run {
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let listen = free_port();
    let srv = start_server(server, port);
    let mut b = Daemon::builder().open_ports(&[port, listen]).otlp(&rx);
    for (k, v) in env {
        b = b.env(*k, *v);
    }
    let mut d = b.start();
    std::thread::sleep(settle());
    let c = run_client(client, port, listen, scenario, n);
    let server_spans = rx.wait_for_exact_spans(
        otlp::server_of(srv.pid()),
        expected_spans,
        span_timeout(),
        Duration::ZERO,
    );
    let client_spans = rx.wait_for_exact_spans(
        otlp::client_of(c.pid),
        expected_spans,
        span_timeout(),
        quiet(),
    );
    // Nothing else: no span from other processes, no extra span from these two.
    rx.assert_quiet(otlp::any_span, 2 * expected_spans, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
    Run {
        server_port: port,
        client: c,
        server_spans,
        client_spans,
    }
}

fn check_all(r: &Run, method: &str, code: u32) {
    for s in r.server_spans.iter().chain(&r.client_spans) {
        expect::check_grpc_span(s, SERVICE, method, code, r.server_port);
    }
}

fn unary_sequential(server: Stack, client: Stack) {
    let _guard = require_root();
    let n = 20;
    let r = run(server, client, "unary", n, n, &[]);
    assert_eq!(r.client.num("ok") as usize, n);
    check_all(&r, "Unary", 0);
}

/// 50 calls in flight on one connection. Each HEADERS frame of a call after the first is
/// ~25-35 octets and the stacks coalesce all 50 into one `sendmsg`/`writev` (~1.5 KiB): the
/// kernel widens the capture of HTTP/2 connections (it sees the client preface) to 4096
/// bytes, so the default BEYLA_CAPTURE_BYTES=1024 must be enough.
fn concurrent_50(server: Stack, client: Stack) {
    let _guard = require_root();
    let n = 50;
    let r = run(server, client, "concurrent", n, n, &[]);
    assert_eq!(r.client.num("ok") as usize, n);
    check_all(&r, "Unary", 0);
    for spans in [&r.server_spans, &r.client_spans] {
        // Truly concurrent: every call started before any ended, each lasted the 300 ms the
        // server sleeps (scaled in emulated guests, as the fixtures scale it).
        let sleep = scaled(Duration::from_millis(300));
        let first_end = spans.iter().map(|s| s.end_ns).min().unwrap();
        let last_start = spans.iter().map(|s| s.start_ns).max().unwrap();
        assert!(
            last_start < first_end,
            "the 50 streams did not overlap (last start {last_start} >= first end {first_end})"
        );
        for s in spans {
            assert!(
                s.duration() >= sleep - Duration::from_millis(5),
                "each call sleeps {sleep:?}: {}",
                s.summary()
            );
        }
    }
}

fn errors(server: Stack, client: Stack) {
    let _guard = require_root();
    let codes = [5u32, 13, 14, 3, 0];
    let r = run(server, client, "errors", 1, codes.len(), &[]);
    assert_eq!(r.client.codes(), codes.to_vec());
    for spans in [&r.server_spans, &r.client_spans] {
        let mut got: Vec<u32> = spans
            .iter()
            .map(|s| s.attr_int("rpc.grpc.status_code").unwrap_or(-1) as u32)
            .collect();
        got.sort_unstable();
        let mut want = codes.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{}", otlp::dump_spans(spans));
        for s in spans {
            let code = s.attr_int("rpc.grpc.status_code").unwrap() as u32;
            expect::check_grpc_span(s, SERVICE, "Unary", code, r.server_port);
        }
    }
}

fn streaming(server: Stack, client: Stack) {
    let _guard = require_root();
    let r = run(server, client, "stream", 1, 2, &[]);
    assert_eq!(r.client.num("server_stream_msgs"), 5.0);
    assert_eq!(r.client.num("bidi_msgs"), 4.0);
    for spans in [&r.server_spans, &r.client_spans] {
        for (method, min_ms) in [("ServerStream", 400), ("Bidi", 400)] {
            let s = spans
                .iter()
                .find(|s| s.attr_str("rpc.method") == Some(method))
                .unwrap_or_else(|| panic!("no {method} span: {}", otlp::dump_spans(spans)));
            expect::check_grpc_span(s, SERVICE, method, 0, r.server_port);
            assert!(
                s.duration() >= Duration::from_millis(min_ms)
                    && s.duration() < Duration::from_secs(5),
                "the {method} span must cover the whole stream (>= {min_ms} ms): {}",
                s.summary()
            );
        }
    }
}

fn big_messages(server: Stack, client: Stack) {
    let _guard = require_root();
    let r = run(server, client, "big", 1, 2, &[]);
    assert_eq!(r.client.num("ok"), 2.0);
    check_all(&r, "Unary", 0);
}

#[test]
fn grpcio_unary_sequential() {
    unary_sequential(Stack::Grpcio, Stack::Grpcio);
}

#[test]
fn grpcio_50_concurrent_calls_on_one_connection() {
    concurrent_50(Stack::Grpcio, Stack::Grpcio);
}

#[test]
fn grpcio_error_codes() {
    errors(Stack::Grpcio, Stack::Grpcio);
}

#[test]
fn grpcio_server_streaming_and_bidi_durations() {
    streaming(Stack::Grpcio, Stack::Grpcio);
}

/// grpcio writes HEADERS, every DATA frame of a 64 KiB or 1 MiB message and the trailers of a
/// response in one `sendmsg` of many iovecs, and its peer reads them in chunks: the frame
/// headers past the captured head (and the trailers with `grpc-status`) arrive only because
/// the kernel follows the frame boundaries (`beyla-rs-ebpf/src/h2walk.rs`).
#[test]
fn grpcio_64k_and_1m_messages() {
    big_messages(Stack::Grpcio, Stack::Grpcio);
}

#[test]
fn tonic_unary_sequential() {
    unary_sequential(Stack::Tonic, Stack::Tonic);
}

#[test]
fn tonic_50_concurrent_calls_on_one_connection() {
    concurrent_50(Stack::Tonic, Stack::Tonic);
}

#[test]
fn tonic_error_codes() {
    errors(Stack::Tonic, Stack::Tonic);
}

#[test]
fn tonic_server_streaming_and_bidi_durations() {
    streaming(Stack::Tonic, Stack::Tonic);
}

#[test]
fn tonic_64k_and_1m_messages() {
    big_messages(Stack::Tonic, Stack::Tonic);
}

/// Each stack's client against the other's server.
#[test]
fn grpcio_client_tonic_server_errors() {
    errors(Stack::Tonic, Stack::Grpcio);
}

#[test]
fn tonic_client_grpcio_server_errors() {
    errors(Stack::Grpcio, Stack::Tonic);
}

/// Throughput: 5,000 unary calls as fast as the tonic client goes ("load": one at a time;
/// "flood": 64 in flight on the one connection, which the concurrency-50 capture note applies
/// to, hence 4096 capture bytes); every call must be exactly one SERVER span. Prints the
/// sustained rate (spans over the time from the client's start to the arrival of the last
/// span at the receiver) and the daemon's RSS.
fn throughput(scenario: &str, env: &[(&str, &str)]) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let listen = free_port();
    let srv = start_server(Stack::Tonic, port);
    let mut b = Daemon::builder().open_ports(&[port]).otlp(&rx);
    for (k, v) in env {
        b = b.env(*k, *v);
    }
    let mut d = b.start();
    std::thread::sleep(settle());
    // `BEYLA_TEST_GRPC_CALLS` makes a longer run for measurements.
    let n = std::env::var("BEYLA_TEST_GRPC_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let cpu0 = procs::cpu_ticks(d.pid()).unwrap_or(0);
    let t0 = Instant::now();
    let c = run_client(Stack::Tonic, port, listen, scenario, n);
    assert_eq!(c.num("ok") as usize, n);
    let client_s = c.num("elapsed_s");
    let spans = rx.wait_for_exact_spans(
        otlp::server_of(srv.pid()),
        n,
        Duration::from_secs(60),
        quiet(),
    );
    let last = spans.iter().map(|s| s.received_at).max().unwrap();
    let wall = last.duration_since(t0).as_secs_f64();
    for s in &spans {
        assert_eq!(s.name, "/beyla.test.Echo/Unary", "{}", s.summary());
        assert_eq!(
            s.attr_int("rpc.grpc.status_code"),
            Some(0),
            "{}",
            s.summary()
        );
        assert!(s.attr("beyla.partial").is_none(), "{}", s.summary());
    }
    let cpu = procs::cpu_ticks(d.pid()).unwrap_or(0) - cpu0;
    eprintln!(
        "throughput ({scenario}): {n} unary calls in {client_s:.2} s ({:.0} calls/s at the \
         client); all {n} spans at the receiver {wall:.2} s after the start ({:.0} spans/s); \
         daemon CPU {:.2} s (clock ticks / 100), RSS {:?} KiB",
        n as f64 / client_s,
        n as f64 / wall,
        cpu as f64 / 100.0,
        d.rss_kib()
    );
    d.assert_running();
    d.stop_ok();
}

#[test]
fn tonic_unary_5000_sequential_calls_throughput() {
    throughput("load", &[]);
}

#[test]
fn tonic_unary_5000_calls_64_in_flight_throughput() {
    throughput("flood", &[("BEYLA_CAPTURE_BYTES", "4096")]);
}

/// Memory per HTTP/2 connection: 500 tonic connections (one call each) held open at once;
/// the daemon's RSS with them open minus its RSS before, per connection. Also checks the 500
/// calls are 500 SERVER spans. Prints the number; asserts a generous bound (64 KiB each).
#[test]
fn tonic_500_connections_memory() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let srv = start_server(Stack::Tonic, port);
    let mut d = Daemon::start(&[port], &rx);
    std::thread::sleep(settle());
    // One warm-up connection so that one-time allocations are in the baseline.
    run_client(Stack::Tonic, port, free_port(), "unary", 1);
    rx.wait_for_spans(otlp::server_of(srv.pid()), 1, span_timeout());
    std::thread::sleep(Duration::from_millis(500));
    let before = d.rss_kib().unwrap();
    let n = 500;
    let hold = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(fixtures::tonic_bin());
    cmd.args([
        "client",
        "--target",
        &format!("127.0.0.1:{port}"),
        "conns",
        &n.to_string(),
    ])
    .env("HOLD_UNTIL_GONE", hold.path())
    .stdout(Stdio::piped());
    beyla_rs_tests::die_with_parent(&mut cmd, libc::SIGKILL);
    let mut child = cmd.spawn().unwrap();
    let spans = rx.wait_for_spans(otlp::server_of(srv.pid()), n + 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let during = d.rss_kib().unwrap();
    drop(hold);
    let out = child.wait().unwrap();
    assert!(out.success());
    rx.assert_quiet(otlp::server_of(srv.pid()), n + 1, quiet());
    assert_eq!(spans.len(), n + 1);
    let per_conn = (during.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    eprintln!(
        "memory: daemon RSS {before} KiB before, {during} KiB with {n} HTTP/2 connections \
         open: {per_conn:.0} bytes per connection"
    );
    assert!(per_conn < 64.0 * 1024.0, "{per_conn} bytes per connection");
    d.assert_running();
    d.stop_ok();
}
