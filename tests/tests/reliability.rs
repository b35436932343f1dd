//! Issue 7, faults: collector outage / slow / 500 / 429, target churn, daemon restart, ring
//! buffer overflow, many idle connections. Each test prints its measured outcome
//! (`[measured] …`, visible with `--nocapture`).
//!
//! Knob: `BEYLA_TEST_OUTAGE_SECS` (default 60) is how long the collector stays down under
//! steady traffic in `collector_outage_then_recovery_delivers_every_span`.
//!
//! Needs root, the daemon binary and `bpftool`; when no bpf filesystem is mounted at
//! `/sys/fs/bpf` the SIGKILL test mounts one for its pinning check (and unmounts it after); run
//! serially:
//! `cargo test -p beyla-rs-tests --test reliability -- --test-threads=1`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use beyla_rs_tests::counters::{SPANS_CREATED, SPANS_DROPPED, SPANS_EXPORTED};
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{ExpectedSpan, expect_spans};
use beyla_rs_tests::fixtures;
use beyla_rs_tests::otlp::{self, Fault, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::rawhttp::{RawConn, Request};
use beyla_rs_tests::{free_port, quiet, require_root, scaled, span_timeout};
use common::*;

fn setup() -> (beyla_rs_tests::TestGuard, OtlpReceiver) {
    let g = require_root();
    daemon::daemon_bin();
    (g, OtlpReceiver::start())
}

fn hello_of(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.is_server() && s.pid() == Some(pid) && s.name == "GET /hello"
}

fn outage_secs() -> u64 {
    std::env::var("BEYLA_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// Lines of the daemon log reporting the export outage.
fn outage_lines(log: &str) -> (usize, usize) {
    let failing = log
        .lines()
        .filter(|l| l.contains("OTLP export to") && l.contains("failing"))
        .count();
    let recovered = log
        .lines()
        .filter(|l| l.contains("OTLP export to") && l.contains("recovered"))
        .count();
    (failing, recovered)
}

/// Documented bound: the daemon's peak RSS with the default queue (65536 spans) while the
/// collector is down under steady traffic.
const OUTAGE_RSS_BOUND_KIB: u64 = 96 * 1024;

#[test]
fn collector_outage_then_recovery_delivers_every_span() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    let mut d = Daemon::start(&[srv.port()], &rx);
    let traffic = Traffic::start(srv.port(), "/hello", 1, Duration::from_millis(20));
    rx.wait_for_spans(hello_of(srv.pid()), 20, Duration::from_secs(15));
    let rss_before = d.rss_kib().unwrap_or(0);

    let outage = Duration::from_secs(outage_secs());
    rx.stop();
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(500));
        d.assert_running();
        rss_max = rss_max.max(d.rss_kib().unwrap_or(0));
    }
    rx.restart();
    std::thread::sleep(Duration::from_secs(1));
    let (sent, errors) = traffic.stop();
    assert_eq!(errors, 0, "the server failed requests");

    // Every span (well within the 65536 bound) arrives after recovery, exactly once.
    let t_recover = Instant::now();
    rx.wait_for_spans(hello_of(srv.pid()), sent as usize, Duration::from_secs(60));
    let recovery = t_recover.elapsed();
    let spans = rx.assert_quiet(hello_of(srv.pid()), sent as usize, quiet());
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "duplicate spans after retries");

    let hwm = hwm_kib(d.pid()).unwrap_or(0);
    d.assert_running();
    let (failing, recovered) = outage_lines(&d.logs());
    let max_lines = outage.as_secs() / 60 + 1;
    assert!(
        (1..=max_lines as usize).contains(&failing),
        "outage logged {failing} times (expected 1..={max_lines}):\n{}",
        d.logs()
    );
    assert_eq!(recovered, 1, "recovery logged once:\n{}", d.logs());
    assert!(
        hwm < OUTAGE_RSS_BOUND_KIB,
        "peak RSS {hwm} KiB over the {OUTAGE_RSS_BOUND_KIB} KiB bound"
    );
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    assert_eq!(counter(&c, "spans_dropped"), 0, "{c:?}");
    assert!(counter(&c, "export_errors") > 0, "{c:?}");
    eprintln!(
        "[measured] collector outage {}s: {sent} requests, {} spans delivered after recovery \
         (all of them, {recovery:.1?} after restart), 0 dropped, {} failed export requests, \
         outage logged {failing}x + recovered {recovered}x, RSS {rss_before} KiB before, \
         {rss_max} KiB max during, peak (VmHWM) {hwm} KiB",
        outage.as_secs(),
        spans.len(),
        counter(&c, "export_errors"),
    );
}

#[test]
fn queue_bound_drops_oldest_and_counts_them() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    const QUEUE: usize = 50;
    const BATCH: usize = 10;
    const N: usize = 300;
    rx.stop();
    let d = Daemon::builder()
        .open_ports(&[srv.port()])
        .otlp(&rx)
        .internal_metrics()
        .env("OTEL_BSP_MAX_QUEUE_SIZE", QUEUE.to_string())
        .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", BATCH.to_string())
        .start();
    // Distinct paths (404s) so the survivors can be identified.
    let mut c = RawConn::connect(srv.port());
    for i in 0..N {
        let r = c.request(&Request::get(&format!("/missing-{i:04}")));
        assert_eq!(r.status, 404);
    }
    drop(c);
    // The daemon has built all N spans (the queue overflowed) before the collector returns.
    let built = eventually(span_timeout(), || {
        d.counters().get(SPANS_CREATED) == N as u64
    });
    assert!(
        built,
        "the daemon did not build {N} spans: {:?}",
        d.counters()
    );
    rx.restart();
    // Then every span is delivered or counted as dropped, and the counters stop moving; the
    // export backoff after the outage can be long, hence the longer deadline.
    let idle = d.wait_idle_within(scaled(Duration::from_secs(60)));
    let pred = otlp::server_of(srv.pid());
    let spans = rx.assert_quiet(&pred, idle.get(SPANS_EXPORTED) as usize, quiet());
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    let dropped = counter(&c, "spans_dropped") as usize;
    let delivered = spans.len();
    assert_eq!(idle.get(SPANS_CREATED), N as u64, "{idle:?}");
    assert_eq!(
        (delivered, dropped),
        (
            idle.get(SPANS_EXPORTED) as usize,
            idle.get(SPANS_DROPPED) as usize
        ),
        "the counters at idle and at exit disagree ({c:?})"
    );
    let mut paths: Vec<String> = spans
        .iter()
        .filter_map(|s| s.attr_str("url.path").map(str::to_string))
        .collect();
    paths.sort();
    eprintln!(
        "[measured] queue bound {QUEUE} (+ one in-flight batch of {BATCH}), {N} spans during \
         an outage: {delivered} delivered after recovery, {dropped} dropped and counted \
         (spans_dropped), newest delivered {:?}",
        paths.last()
    );
    assert_eq!(
        delivered + dropped,
        N,
        "every span is either delivered or counted as dropped ({c:?})"
    );
    assert!(
        delivered <= QUEUE + BATCH,
        "{delivered} delivered: more than the queue bound {QUEUE} plus one batch {BATCH} was held"
    );
    assert!(delivered >= QUEUE, "only {delivered} delivered");
    assert_eq!(
        paths.last().map(String::as_str),
        Some(format!("/missing-{:04}", N - 1).as_str()),
        "the oldest are dropped, so the newest span must survive"
    );
    let (failing, _) = outage_lines(&exit.stderr);
    assert!((1..=2).contains(&failing), "outage logged {failing} times");
}

#[test]
fn slow_collector_answering_after_5s_loses_nothing() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    let mut d = Daemon::start(&[srv.port()], &rx);
    rx.set_delay(Duration::from_secs(5));
    let traffic = Traffic::start(srv.port(), "/hello", 1, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(12));
    let (sent, _) = traffic.stop();
    d.assert_running();
    let t = Instant::now();
    let spans = rx.wait_for_spans(hello_of(srv.pid()), sent as usize, Duration::from_secs(60));
    let took = t.elapsed();
    rx.set_delay(Duration::ZERO);
    let spans_final = rx.assert_quiet(hello_of(srv.pid()), sent as usize, quiet());
    let ids: HashSet<&str> = spans_final.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "duplicate spans");
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    assert_eq!(counter(&c, "spans_dropped"), 0, "{c:?}");
    eprintln!(
        "[measured] collector answering after 5 s: {sent} requests in 12 s, all {} spans \
         delivered ({took:.1?} after traffic stopped), {} export requests, 0 dropped",
        spans.len(),
        rx.trace_request_count()
    );
}

#[test]
fn collector_500_and_429_retry_after_are_retried_without_loss() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    let d = Daemon::start(&[srv.port()], &rx);

    // 500 for 8 s under traffic.
    rx.set_fault(Some(Fault::status(500)));
    let traffic = Traffic::start(srv.port(), "/hello", 1, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(8));
    let n500 = rx.requests().iter().filter(|r| r.status == 500).count();
    rx.set_fault(None);
    let (sent, _) = traffic.stop();
    rx.wait_for_spans(hello_of(srv.pid()), sent as usize, Duration::from_secs(40));
    let spans = rx.assert_quiet(hello_of(srv.pid()), sent as usize, quiet());
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "duplicate spans");
    assert!(
        (2..=40).contains(&n500),
        "{n500} export attempts in 8 s of 500s: expected retries with backoff"
    );

    // 429 with Retry-After: 3 once: the next attempt waits at least that long.
    rx.clear();
    rx.set_fault(Some(Fault::status(429).retry_after(3).times(1)));
    for _ in 0..5 {
        RawConn::connect(srv.port()).request(&Request::get("/hello"));
    }
    rx.wait_for_spans(hello_of(srv.pid()), 5, Duration::from_secs(30));
    rx.assert_quiet(hello_of(srv.pid()), 5, quiet());
    let reqs = rx.requests();
    let i429 = reqs
        .iter()
        .position(|r| r.status == 429)
        .expect("the receiver answered 429 once");
    let next = reqs.get(i429 + 1).expect("an export request after the 429");
    let waited = next.at - reqs[i429].at;
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    eprintln!(
        "[measured] 500 for 8 s: {n500} attempts (backoff), {sent} spans all delivered once; \
         429 + Retry-After: 3 → next attempt after {waited:.2?}; counters {c:?}"
    );
    assert!(
        waited >= Duration::from_millis(2900),
        "Retry-After: 3 not honoured: next attempt {waited:?} after the 429"
    );
    assert_eq!(counter(&c, "spans_dropped"), 0);
}

#[test]
fn target_churn_20_restarts_resumes_spans_and_maps_return_to_idle() {
    let (_guard, rx) = setup();
    let port = free_port();
    let mut d = Daemon::builder()
        .open_ports(&[port])
        .otlp(&rx)
        .internal_metrics()
        .start();
    let tracked = daemon_map(d.pid(), "TRACKED");
    let conns = daemon_map(d.pid(), "CONNS");
    // Idle: no process tracked (nothing selected runs yet), no connection followed.
    let idle = (tracked_pids(tracked), map_entries(conns));
    assert_eq!(idle, (vec![], 0), "TRACKED/CONNS before any server");
    let traffic = Traffic::start(port, "/hello", 2, Duration::from_millis(10));
    let mut pids = Vec::new();
    let mut peak: (usize, usize) = (0, 0);
    for _ in 0..20 {
        let srv = fixtures::rust(port);
        // Spans resume for the new pid: three requests on a fresh connection.
        let mut c = RawConn::connect(port);
        for _ in 0..3 {
            assert_eq!(c.request(&Request::get("/status?respond=201")).status, 201);
        }
        drop(c);
        rx.wait_for_spans(status_201_of(srv.pid()), 3, span_timeout());
        // The positive control for "back to idle" below: the live instance is tracked.
        let now_tracked = tracked_pids(tracked);
        assert!(
            now_tracked.contains(&srv.pid()),
            "instance {} traced but not in TRACKED {now_tracked:?}",
            srv.pid()
        );
        peak.0 = peak.0.max(now_tracked.len());
        peak.1 = peak.1.max(map_entries(conns));
        pids.push(srv.pid());
        drop(srv); // SIGKILL, under traffic
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, errors) = traffic.stop();
    d.assert_running();
    // Exactly three spans per instance: none lost, none doubled by a pid reused or a late
    // close, once nothing more is in flight.
    d.wait_idle();
    for &pid in &pids {
        assert_eq!(
            rx.span_count(status_201_of(pid)),
            3,
            "instance {pid}: {}",
            otlp::dump_spans(&rx.spans_matching(status_201_of(pid)))
        );
    }
    // Back to idle: the kernel maps hold no process and no connection of the dead servers.
    let back = eventually(scaled(Duration::from_secs(15)), || {
        (tracked_pids(tracked), map_entries(conns)) == idle
    });
    let now = (tracked_pids(tracked), map_entries(conns));
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    eprintln!(
        "[measured] churn: 20 server instances ({} distinct pids), background traffic {ok} ok / \
         {errors} failed requests, spans resumed for every pid; tracked processes / CONNS \
         entries idle {idle:?}, peak {peak:?}, after {now:?}",
        distinct.len()
    );
    assert_eq!(distinct.len(), 20);
    assert!(
        back,
        "TRACKED/CONNS entries did not return to idle {idle:?}: now {now:?}"
    );
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    // Each instance is one process, found once (at bind): nothing else is selected.
    assert_eq!(counter(&c, "processes_instrumented"), 20, "{c:?}");
}

/// SERVER spans of `pid` answered 201 (the churn test's own requests, not the background's).
fn status_201_of(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.is_server() && s.pid() == Some(pid) && s.http_status() == 201
}

#[test]
fn sigterm_under_load_exits_zero_and_flushes() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    let d = Daemon::start(&[srv.port()], &rx);
    const CONNS: u64 = 8;
    let traffic = Traffic::start(srv.port(), "/hello", CONNS as usize, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(3));
    // Every request answered before SIGTERM was served while the daemon ran: each is a span.
    let answered_before = traffic.ok();
    let t = Instant::now();
    let exit = d.stop();
    let took = t.elapsed();
    // After the exit no request can become a span; each of the CONNS clients may have had one
    // request answered by the server (and traced) but not yet read when the daemon exited.
    let answered_at_exit = traffic.ok();
    let (ok, errors) = traffic.stop();
    assert_eq!(errors, 0, "the server failed requests");
    exit.assert_success();
    let c = stop_counters(&exit.stderr);
    let created = counter(&c, "spans_created");
    eprintln!(
        "[measured] SIGTERM under load ({ok} requests in ~3 s, {answered_before} answered \
         before SIGTERM, {answered_at_exit} at exit): exit 0 after {took:.2?}, {} spans \
         received, counters {c:?}",
        rx.span_count(hello_of(srv.pid()))
    );
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    assert!(
        (answered_before..=answered_at_exit + CONNS).contains(&created),
        "{created} spans built for {answered_before} requests answered before SIGTERM and \
         {answered_at_exit} (+ up to {CONNS} in flight) at exit: {c:?}"
    );
    // Not asserted: no span dropped. This load is unthrottled, and whether the exporter and
    // the test's receiver keep up with it depends on the machine (0 of ~155k dropped in three
    // runs, 16.5k of 164k in a fourth, export queue full): drops are counted, which the next
    // assertions check.
    // Nothing vanishes silently: every span built was exported or counted as dropped.
    assert_eq!(
        counter(&c, "spans_created"),
        counter(&c, "spans_exported") + counter(&c, "spans_dropped"),
        "{c:?}"
    );
    assert_eq!(
        rx.span_count(hello_of(srv.pid())) as u64,
        counter(&c, "spans_exported"),
        "the receiver got a different number of spans than were exported"
    );
}

#[test]
fn sigkill_leaves_no_programs_and_a_fresh_daemon_works_at_once() {
    let (_guard, rx) = setup();
    let srv = fixtures::rust(free_port());
    let _bpffs = BpfFs::ensure();
    let pinned_before = bpffs_entries();
    let mut d = Daemon::start(&[srv.port()], &rx);
    let objs = bpf_objects_of(d.pid());
    assert!(
        !objs.prog_ids.is_empty() && !objs.map_ids.is_empty(),
        "no BPF objects found for the daemon: {objs:?}"
    );
    let traffic = Traffic::start(srv.port(), "/hello", 4, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(2));
    d.signal(libc::SIGKILL);
    assert!(eventually(Duration::from_secs(5), || !d.is_running()));
    let gone = eventually(Duration::from_secs(5), || {
        objs.prog_ids.iter().all(|&id| !prog_exists(id))
            && objs.map_ids.iter().all(|&id| !map_exists(id))
    });
    let left: Vec<u32> = objs
        .prog_ids
        .iter()
        .copied()
        .filter(|&id| prog_exists(id))
        .collect();
    assert!(
        gone,
        "after SIGKILL programs {left:?} still loaded (all: {:?})",
        all_prog_names()
    );
    // Nothing pinned (a pin would have kept its object alive, so the check above covers the
    // daemon's own objects; this one any other it might have created).
    assert_eq!(bpffs_entries(), pinned_before, "pinned leftovers");
    drop(d);

    // A fresh daemon at once, still under traffic.
    let rx2 = OtlpReceiver::start();
    let t = Instant::now();
    let d2 = Daemon::start(&[srv.port()], &rx2);
    let ready = t.elapsed();
    rx2.wait_for_spans(hello_of(srv.pid()), 10, Duration::from_secs(15));
    let (ok, _) = traffic.stop();
    d2.stop_ok();
    eprintln!(
        "[measured] SIGKILL under load ({ok} requests): {} programs and {} maps gone, nothing \
         pinned; fresh daemon ready in {ready:.2?} and exporting",
        objs.prog_ids.len(),
        objs.map_ids.len()
    );
}

#[test]
fn ring_buffer_overflow_is_counted_and_later_spans_are_correct() {
    let (_guard, rx) = setup();
    let srv = fixtures::go(free_port());
    let d = Daemon::builder()
        .open_ports(&[srv.port()])
        .otlp(&rx)
        .internal_metrics()
        .env("BEYLA_RINGBUF_SIZE", "65536")
        .env("BEYLA_CAPTURE_BYTES", "4096")
        .start();
    // Burst: 64 clients × 40 keep-alive requests with ~3.5 KiB of headers each, at once.
    let port = srv.port();
    let burst: Vec<_> = (0..64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let req = |i: usize| {
                    Request::get(&format!("/burst-{t}-{i}"))
                        .filler_headers(7, 500)
                        .header("X-Client", &t.to_string())
                };
                let all: Vec<u8> = (0..40)
                    .flat_map(|i| req(i).to_bytes(&format!("127.0.0.1:{port}")))
                    .collect();
                c.send(&all);
                for _ in 0..40 {
                    assert_eq!(c.read_response("GET").status, 404);
                }
                c
            })
        })
        .collect();
    let mut burst_conns: Vec<RawConn> = burst.into_iter().map(|b| b.join().unwrap()).collect();
    let sent = 64 * 40;
    // Every record of the burst read, every span built exported: nothing can arrive after the
    // receiver is cleared below, and every burst span goes through the corruption check.
    let idle = d.wait_idle();
    let burst_spans = rx.spans_matching(otlp::server_of(srv.pid()));
    assert_eq!(
        rx.spans().len() as u64,
        idle.get(SPANS_EXPORTED),
        "the receiver holds other spans than the daemon exported: {idle:?}"
    );
    assert_eq!(
        burst_spans.len(),
        rx.spans().len(),
        "spans of another process"
    );
    // No corruption: every span from the burst is one of the requests sent, with its status.
    // A span whose response was lost says so (`beyla.incomplete`) instead of inventing one.
    let mut incomplete = 0;
    for s in &burst_spans {
        let p = s.attr_str("url.path").unwrap_or("");
        let marked = s.attr("beyla.incomplete").and_then(|v| v.as_bool()) == Some(true);
        incomplete += usize::from(marked);
        assert!(
            p.starts_with("/burst-")
                && s.method() == "GET"
                && (s.http_status() == 404 || s.http_status() == -1 && marked),
            "corrupted span after overflow: {}",
            s.summary()
        );
    }
    // Later requests give exactly their spans, correct: on the burst's own connections,
    // whose records the kernel lost (it flags them, and the daemon joins them anew instead of
    // dropping them as not HTTP), and on a new one.
    rx.clear();
    let after = 2;
    let mut expected = Vec::new();
    for (t, c) in burst_conns.iter_mut().enumerate() {
        for i in 0..after {
            assert_eq!(
                c.request(&Request::get(&format!("/after-{t}-{i}"))).status,
                404
            );
            expected.push(ExpectedSpan::server("GET", &format!("/after-{t}-{i}"), 404));
        }
    }
    let mut c = RawConn::connect(srv.port());
    for i in 0..10 {
        let st = 200 + i;
        assert_eq!(
            c.request(&Request::get(&format!("/status?respond={st}")))
                .status,
            st
        );
        expected.push(ExpectedSpan::server("GET", "/status", st).port(srv.port()));
    }
    let pid = srv.pid();
    let is_burst = |s: &ReceivedSpan| {
        s.attr_str("url.path")
            .is_some_and(|p| p.starts_with("/burst-"))
    };
    expect_spans(
        &rx,
        move |s: &ReceivedSpan| otlp::server_of(pid)(s) && !is_burst(s),
        &expected,
    );
    // A burst request whose response records were lost was still in flight on its connection:
    // the next record, flagged, sends it out incomplete.
    let late: Vec<_> = rx.spans_matching(is_burst);
    for s in &late {
        assert!(
            s.attr("beyla.incomplete").and_then(|v| v.as_bool()) == Some(true),
            "a burst span after the burst must be one flushed as incomplete: {}",
            s.summary()
        );
    }
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    let lost = counter(&c, "events_lost_kernel");
    assert_eq!(
        counter(&c, "connections_not_http"),
        0,
        "a connection that lost records was dropped as not HTTP: {c:?}"
    );
    eprintln!(
        "[measured] 64 KiB ring buffer, burst of {sent} requests with 3.5 KiB heads: \
         {lost} records lost (counted), {} burst spans exported, all well-formed ({incomplete} \
         marked beyla.incomplete, {} more flushed incomplete by the next request), {} \
         connections joined anew after a loss; the {} later \
         requests on the burst's connections and 10 on a new one gave exactly their correct \
         spans; counters {c:?}",
        burst_spans.len(),
        late.len(),
        counter(&c, "connections_resynced"),
        64 * after,
    );
    assert!(
        lost > 0,
        "the burst did not overflow the ring buffer: {c:?}"
    );
    assert!(
        exit.stderr.contains("ring buffer overflowed")
            || exit.stderr.contains("events_lost_kernel"),
        "the loss is reported in the log"
    );
}

/// Documented bound: RSS growth of the daemon for 10,000 idle keep-alive connections.
const IDLE_CONNS_RSS_GROWTH_BOUND_KIB: u64 = 40 * 1024;

#[test]
fn ten_thousand_idle_keepalive_connections_stay_within_bound() {
    let (_guard, rx) = setup();
    raise_nofile(30_000);
    let srv = fixtures::go(free_port());
    let mut d = Daemon::start(&[srv.port()], &rx);
    let conns_map = daemon_map(d.pid(), "CONNS");
    // Warm up allocator and exporter.
    for _ in 0..20 {
        RawConn::connect(srv.port()).request(&Request::get("/hello"));
    }
    // Exact: a connection whose fd was reused before the previous close returned used to be
    // lost here (fixed; see `fd_reused_before_close_returns_loses_nothing`).
    let warm = 20;
    rx.wait_for_exact_spans(hello_of(srv.pid()), warm, span_timeout(), quiet());
    let rss0 = d.rss_kib().unwrap();
    const N: usize = 10_000;
    let mut conns = Vec::with_capacity(N);
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..N {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(try_get(&mut s, "/hello", &mut buf).unwrap(), 200);
        conns.push(s);
    }
    let opened = t.elapsed();
    // Exactly one span per request, and nothing more while the connections stay open.
    rx.wait_for_exact_spans(
        hello_of(srv.pid()),
        warm + N,
        scaled(Duration::from_secs(60)),
        quiet(),
    );
    d.assert_running();
    let rss1 = d.rss_kib().unwrap();
    let in_map = map_entries(conns_map);
    drop(conns);
    let back = eventually(Duration::from_secs(15), || map_entries(conns_map) == 0);
    let after = map_entries(conns_map);
    let rss2 = d.rss_kib().unwrap();
    let hwm = hwm_kib(d.pid()).unwrap();
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    eprintln!(
        "[measured] {N} idle keep-alive connections (opened in {opened:.1?}): daemon RSS \
         {rss0} KiB → {rss1} KiB with all open (+{} KiB), {rss2} KiB after closing, peak \
         {hwm} KiB; CONNS entries {in_map} open → {after} closed; counters {c:?}",
        rss1.saturating_sub(rss0)
    );
    assert!(
        rss1.saturating_sub(rss0) < IDLE_CONNS_RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB for {N} idle connections (bound {IDLE_CONNS_RSS_GROWTH_BOUND_KIB} KiB)",
        rss1 - rss0
    );
    // One entry per open connection of the server: the warm-up connections are closed, the
    // client side (this test process) is not selected.
    assert_eq!(
        in_map, N,
        "CONNS held {in_map} entries for {N} open connections"
    );
    assert!(
        back,
        "CONNS still holds {after} entries after every connection closed"
    );
}
