//! Issue 18: connection churn. Many short connections, one request each, from several client
//! threads at once to a Go server: its runtime closes a connection on one thread while another
//! thread's `accept` takes the same fd number, over and over. Every request must be a span.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests --test connections -- --test-threads=1`.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures;
use beyla_rs_tests::otlp::{self, OtlpReceiver};
use beyla_rs_tests::{free_port, quiet, require_root, scaled, settle, span_timeout};
use common::*;

/// CLOCK_MONOTONIC in nanoseconds: the clock of the kernel's record timestamps.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One request on its own connection, as the client saw it.
#[derive(Clone, Debug, Default)]
struct Call {
    local_port: u16,
    status: u16,
    start_ns: u64,
    end_ns: u64,
    error: Option<String>,
}

/// `GET path` with `Connection: close` on a new connection, read to the server's close.
fn call(port: u16, path: &str) -> Call {
    let mut c = Call {
        start_ns: mono_ns(),
        ..Call::default()
    };
    let r = (|| -> std::io::Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        c.local_port = s.local_addr()?.port();
        s.set_read_timeout(Some(scaled(Duration::from_secs(10))))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        Ok(String::from_utf8_lossy(&resp)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    })();
    c.end_ns = mono_ns();
    match r {
        Ok(st) => c.status = st,
        Err(e) => c.error = Some(e.to_string()),
    }
    c
}

fn path_of(i: usize) -> String {
    format!("/hello/{i}")
}

/// Connections opened, one request each.
const CONNECTIONS: usize = 50_000;
/// Client threads opening them: the Go server then accepts and closes on several threads at
/// once, which is what reuses an fd number before the `close` that released it returns.
const THREADS: usize = 8;

/// The syscall backend follows a connection by its fd number, which the process hands out again
/// as soon as a `close` releases it, before that `close` returns (and before the capture sees
/// it): an `accept` on another thread, or a file opened there, gets it first. Every way those
/// interleave, and the kernel map recycling entries under a CPU still looking at them, once
/// lost a connection's records after its accept here (1 in 50,000 to 1 in 1,000,000,
/// depending on load). Each request has its own path, so a shortfall names the requests lost;
/// their client ports and times (`CLOCK_MONOTONIC`, the records' clock) find them in a daemon
/// log taken with `BEYLA_TEST_LOG_LEVEL=trace`, which has every record.
#[test]
fn fifty_thousand_connections_over_eight_threads_lose_nothing() {
    let (_guard, rx) = (require_root(), OtlpReceiver::start());
    daemon::daemon_bin();
    let port = free_port();
    let go = fixtures::go(port);
    let d = Daemon::start(&[port], &rx);
    std::thread::sleep(settle());

    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CONNECTIONS {
                        return done;
                    }
                    done.push((i, call(port, &path_of(i))));
                }
            })
        })
        .collect();
    let mut calls = vec![Call::default(); CONNECTIONS];
    for w in workers {
        for (i, c) in w.join().expect("client thread") {
            calls[i] = c;
        }
    }
    let sent = t.elapsed();
    // The fixture answers 404 to these paths (which the span records all the same).
    let failed: Vec<_> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.error.is_some() || c.status != 404)
        .collect();

    // Spans arrive in export batches: wait while their count moves, then for quiet (the
    // receiver's own waits would dump 50,000 spans on a shortfall).
    let server = otlp::server_of(go.pid());
    let mut last = (0, Instant::now());
    loop {
        let got = rx.span_count(&server);
        if got >= CONNECTIONS || last.1.elapsed() > span_timeout() {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(quiet());
    let waited = t.elapsed() - sent;
    let spans = rx.spans_matching(&server);
    let exit = d.stop_ok();
    let counters = stop_counters(&exit.stderr);
    let seen: HashSet<&str> = spans
        .iter()
        .filter_map(|s| s.attr_str("url.path"))
        .collect();
    let missing: Vec<usize> = (0..CONNECTIONS)
        .filter(|&i| !seen.contains(path_of(i).as_str()))
        .collect();
    eprintln!(
        "[measured] {CONNECTIONS} connections, one request each, over {THREADS} threads in \
         {sent:.1?} ({:.0}/s); spans {:.1?} later: {} spans, {} distinct paths, {} requests \
         without a span, {} client failures; counters {counters:?}",
        CONNECTIONS as f64 / sent.as_secs_f64(),
        waited,
        spans.len(),
        seen.len(),
        missing.len(),
        failed.len()
    );
    if !missing.is_empty() {
        let log = std::env::temp_dir().join(format!("beyla-connections-{}.log", go.pid()));
        let _ = std::fs::write(&log, &exit.stderr);
        for &i in missing.iter().take(20) {
            let c = &calls[i];
            eprintln!(
                "no span for {}: client port {}, {}..{} ns (CLOCK_MONOTONIC), status {}",
                path_of(i),
                c.local_port,
                c.start_ns,
                c.end_ns,
                c.status
            );
        }
        eprintln!("daemon log: {}", log.display());
    }
    assert!(
        failed.is_empty(),
        "{} client failures, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );
    assert!(
        missing.is_empty(),
        "{} of {CONNECTIONS} requests have no span",
        missing.len()
    );
    assert_eq!(spans.len(), CONNECTIONS, "one span per request, no more");
}
