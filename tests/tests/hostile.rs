//! Issue 7, hostile input to selected servers: garbage, TLS handshakes, a 1 MiB header line,
//! 10,000 headers, invalid methods, requests without CRLF, binary noise after an HTTP/2
//! preface. The daemon must stay up, give no span for non-HTTP bytes, keep the spans of
//! oversized HTTP bounded and well-formed, count what it rejected, and still trace normal
//! requests afterwards.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests --test hostile -- --test-threads=1`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use beyla_rs_tests::counters::{HTTP1_PARSE_ERRORS, NOT_HTTP, SPANS_CREATED, SPANS_EXPORTED};
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{ExpectedSpan, expect_spans};
use beyla_rs_tests::fixtures::{self, ServerProcess};
use beyla_rs_tests::otlp::{self, AttrValue, OtlpReceiver};
use beyla_rs_tests::rawhttp::{self, RawConn, Request};
use beyla_rs_tests::require_root;
use common::*;

/// Connects, writes everything it can (the server may close early), half-closes and reads
/// until the server closes or `timeout`. Never panics on I/O errors.
fn blast(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break,
        }
    }
    out
}

/// Bytes that are not HTTP at all: no span may come out of them.
fn not_http() -> Vec<(&'static str, Vec<u8>)> {
    let mut preface_noise = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface_noise.extend(rawhttp::garbage(4000));
    vec![
        ("garbage", rawhttp::garbage(4096)),
        ("tls client hello", rawhttp::tls_client_hello()),
        ("redis ping", rawhttp::REDIS_PING.to_vec()),
        (
            "method with (",
            b"GE(T /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "method with NUL",
            b"G\0T /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "method 0xff",
            b"\xffGET /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("no method", b" /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("http2 preface + noise", preface_noise),
    ]
}

/// HTTP, but hostile: one span each, bounded and well-formed. Case `i` requests `/o<i>` (the
/// 60 KB target starts so), which tells its span apart: spans do not arrive in the order of
/// the connections (a request that never ended is reported when its connection closes, and
/// Go closes a connection it refused only 500 ms after half-closing it). The bool says
/// whether the head ends at all (the client half-closes right after these bytes).
fn oversized_http() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut mib = b"GET /o0 HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    mib.extend(std::iter::repeat_n(b'a', 1 << 20));
    mib.extend(b"\r\n\r\n");
    let mut many = b"GET /o1 HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        many.extend(format!("X-H{i}: v{i}\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    let mut long_target = b"GET /o2".to_vec();
    long_target.extend(std::iter::repeat_n(b'p', 60_000));
    long_target.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    vec![
        ("1 MiB header line", mib, true),
        ("10000 headers", many, true),
        ("60 KB target", long_target, true),
        ("no CRLF at all", b"GET /o3 HTTP/1.1".to_vec(), false),
        ("bare LF", b"GET /o4 HTTP/1.1\nHost: x\n\n".to_vec(), true),
        (
            "unterminated head",
            b"GET /o5 HTTP/1.1\r\nHost: x\r\n".to_vec(),
            false,
        ),
    ]
}

/// Which case of [`oversized_http`] a span's `url.path` belongs to.
fn oversized_case(path: &str) -> Option<usize> {
    let i: usize = path.strip_prefix("/o")?.get(..1)?.parse().ok()?;
    let rest = &path[3..];
    (rest.is_empty() || i == 2 && rest.bytes().all(|b| b == b'p')).then_some(i)
}

/// The status code of the first status line in `answer` (what the client was told).
fn answered_status(answer: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn longest_attr(s: &beyla_rs_tests::ReceivedSpan) -> usize {
    s.attrs
        .values()
        .map(|v| match v {
            AttrValue::Str(s) => s.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
        .max(s.name.len())
}

#[test]
fn hostile_input_gives_no_spans_for_non_http_and_daemon_survives() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let servers: Vec<ServerProcess> = vec![
        fixtures::python(beyla_rs_tests::free_port()),
        fixtures::go(beyla_rs_tests::free_port()),
        fixtures::node(beyla_rs_tests::free_port()),
    ];
    let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    let mut d = Daemon::builder()
        .open_ports(&ports)
        .otlp(&rx)
        .internal_metrics()
        .start();

    // 1. Not HTTP: no span at all, and each connection dropped as not HTTP exactly once.
    let cases = not_http();
    for srv in &servers {
        for (_, bytes) in &cases {
            blast(srv.port(), bytes, Duration::from_secs(2));
        }
    }
    let idle = d.wait_idle();
    d.assert_running();
    rx.assert_quiet(otlp::any_span, 0, Duration::ZERO);
    let non_http_conns = cases.len() * servers.len();
    assert_eq!(idle.get(SPANS_CREATED), 0, "{idle:?}");
    assert_eq!(idle.get(NOT_HTTP), non_http_conns as u64, "{idle:?}");
    // Dropped at the first bytes, never parsed.
    assert_eq!(idle.get(HTTP1_PARSE_ERRORS), 0, "{idle:?}");

    // 2. Oversized or malformed HTTP: one bounded, well-formed span per connection, with the
    // status the client was answered.
    let oversized = oversized_http();
    let mut answers = Vec::new();
    for srv in &servers {
        for (name, bytes, _) in &oversized {
            let answer = blast(srv.port(), bytes, Duration::from_secs(3));
            let st = answered_status(&answer).unwrap_or_else(|| {
                panic!(
                    "{} did not answer {name}: {:?}",
                    srv.name(),
                    String::from_utf8_lossy(&answer)
                )
            });
            answers.push(st);
        }
    }
    // Every record read and every span exported: no late span can escape the checks below or
    // reach the receiver after it is cleared.
    let idle = d.wait_idle();
    d.assert_running();
    let hostile_spans = rx.spans();
    assert_eq!(hostile_spans.len() as u64, idle.get(SPANS_EXPORTED));
    let mut answer = answers.iter();
    for srv in &servers {
        // One span per connection, told apart by path.
        let spans = rx.spans_matching(otlp::server_of(srv.pid()));
        let mut cases: Vec<usize> = spans
            .iter()
            .map(|s| {
                oversized_case(s.attr_str("url.path").unwrap_or(""))
                    .unwrap_or_else(|| panic!("{}: not a case's span: {}", srv.name(), s.summary()))
            })
            .collect();
        cases.sort_unstable();
        assert_eq!(
            cases,
            (0..oversized.len()).collect::<Vec<_>>(),
            "{}: one span per oversized request:\n{}",
            srv.name(),
            otlp::dump_spans(&spans)
        );
        let answered: Vec<i64> = answer.by_ref().take(oversized.len()).copied().collect();
        for s in &spans {
            let i = oversized_case(s.attr_str("url.path").unwrap_or("")).unwrap();
            let (name, _, head_ends) = &oversized[i];
            let answered = answered[i];
            let what = format!("{} {name}: {:.400}", srv.name(), s.summary());
            assert!(s.method() == "GET", "{what}");
            assert!(
                longest_attr(s) <= 8192,
                "an attribute of {} bytes made it into a span: {what}",
                longest_attr(s)
            );
            let incomplete = s.attr("beyla.incomplete").and_then(|v| v.as_bool()) == Some(true);
            if *head_ends {
                assert_eq!((s.http_status(), incomplete), (answered, false), "{what}");
            } else {
                // The request never ended, so no response can be paired with it: reported as
                // incomplete, with no status (not the one the server sent anyway).
                assert_eq!((s.http_status(), incomplete), (-1, true), "{what}");
            }
        }
    }
    // The three heads longer than a segment's capture are cut: one resync each. No oversized
    // HTTP connection is dropped as not HTTP.
    assert_eq!(
        idle.get(HTTP1_PARSE_ERRORS),
        3 * servers.len() as u64,
        "{idle:?}"
    );
    assert_eq!(idle.get(NOT_HTTP), non_http_conns as u64, "{idle:?}");
    rx.clear();

    // 3. Normal requests still give exactly their spans.
    for srv in &servers {
        let r = RawConn::connect(srv.port()).request(&Request::get("/status?respond=202"));
        assert_eq!(r.status, 202);
        expect_spans(
            &rx,
            otlp::server_of(srv.pid()),
            &[ExpectedSpan::server("GET", "/status", 202).port(srv.port())],
        );
    }
    rx.assert_quiet(otlp::any_span, servers.len(), Duration::ZERO);
    d.assert_running();
    let exit = d.stop_ok();
    let c = stop_counters(&exit.stderr);
    let summary: Vec<String> = hostile_spans
        .iter()
        .map(|s| {
            format!(
                "{} {} path_len={}",
                s.name,
                s.http_status(),
                s.attr_str("url.path").map_or(0, str::len)
            )
        })
        .collect();
    eprintln!(
        "[measured] hostile input to python, go, node: {non_http_conns} non-HTTP connections → \
         0 spans; oversized/malformed HTTP → {} bounded spans {summary:?}; daemon alive; \
         counters {c:?}",
        hostile_spans.len()
    );
    // The normal requests add nothing to either count.
    assert_eq!(
        counter(&c, "connections_not_http"),
        non_http_conns as u64,
        "{c:?}"
    );
    assert_eq!(
        counter(&c, "http1_parse_errors"),
        3 * servers.len() as u64,
        "{c:?}"
    );
}

/// A non-HTTP connection is dropped from capture by its (pid, fd); the server closes it and
/// the next connection gets the same fd at once. That next connection must still be traced.
#[test]
fn http_right_after_non_http_on_a_reused_fd_is_traced() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let srv = fixtures::node(beyla_rs_tests::free_port());
    let d = Daemon::start(&[srv.port()], &rx);
    const N: usize = 40;
    for i in 0..N {
        blast(srv.port(), &rawhttp::garbage(512), Duration::from_secs(2));
        let r = RawConn::connect(srv.port())
            .request(&Request::get(&format!("/status?respond={}", 200 + i)));
        assert_eq!(r.status, 200 + i as u16);
    }
    let expected: Vec<ExpectedSpan> = (0..N)
        .map(|i| ExpectedSpan::server("GET", "/status", 200 + i as u16).port(srv.port()))
        .collect();
    let got = eventually(Duration::from_secs(10), || {
        rx.span_count(otlp::server_of(srv.pid())) >= N
    });
    let n = rx.span_count(otlp::server_of(srv.pid()));
    let exit = d.stop_ok();
    eprintln!(
        "[measured] {N} × (garbage connection, then HTTP on the reused fd): {n} of {N} HTTP \
         requests traced; counters {:?}",
        stop_counters(&exit.stderr)
    );
    assert!(
        got,
        "only {n} of {N} requests after a non-HTTP connection were traced"
    );
    expect_spans(&rx, otlp::server_of(srv.pid()), &expected);
}
