//! Issue 3: plain (non-gRPC) HTTP/2 with prior knowledge (h2c) gives HTTP spans like HTTP/1.x:
//! Debian's nginx with `listen ... http2` (h2c) on the server side, `curl
//! --http2-prior-knowledge` on the client side; and the `Upgrade: h2c` path (curl `--http2`
//! against `servers/h2c_upgrade_server.py`, Python's `h2`), where the HTTP/1.1 upgrade request
//! becomes HTTP/2 stream 1.
//! Detection is by the connection preface, not the port.
//!
//! Needs root, the daemon binary, nginx, curl and Python's `h2` (tests/setup.sh); run serially:
//! `cargo test -p beyla-rs-tests --test http2 -- --test-threads=1`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures::{self, NginxOpts, ServerProcess};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan, SpanKind, SpanStatus};
use beyla_rs_tests::{free_port, procs, quiet, require_root, settle, span_timeout};

/// nginx (one worker) serving the fixture routes over h2c on `port`.
fn nginx_h2c(port: u16) -> (ServerProcess, tempfile::TempDir) {
    let nginx = fixtures::which("nginx").expect("nginx: run tests/setup.sh");
    let dir = tempfile::Builder::new()
        .prefix("beyla-nginx-h2c-")
        .tempdir()
        .unwrap();
    let prefix = dir.path();
    fs::set_permissions(prefix, fs::Permissions::from_mode(0o755)).unwrap();
    for sub in [
        "logs",
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ] {
        let p = prefix.join(sub);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let opts = NginxOpts {
        workers: Some(1),
        ..Default::default()
    };
    let listen = format!("listen 127.0.0.1:{port};");
    let conf = fixtures::nginx_conf(prefix, port, &opts);
    assert!(conf.contains(&listen), "unexpected nginx.conf:\n{conf}");
    let conf = conf.replace(&listen, &format!("listen 127.0.0.1:{port} http2;"));
    fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(prefix.join("logs/error.log"));
    let p = fixtures::spawn_server("nginx-h2c", cmd, port, None);
    (p, dir)
}

/// `curl --http2-prior-knowledge`, one invocation (one h2c connection) per URL: Debian 12's
/// curl 7.88 fails re-using an h2c prior-knowledge connection for a second URL ("Error in the
/// HTTP2 framing layer"), so several URLs per invocation are not an option. curl reads the
/// URL from its stdin (`-K -`), given `delay` after it started: a daemon selecting curl by
/// executable then tracks it (from its `execve`) before it connects. Returns the statuses and
/// the HTTP versions curl used.
fn curl_h2(urls: &[String], delay: Duration) -> (Vec<u16>, Vec<String>) {
    let mut statuses = Vec::new();
    let mut versions = Vec::new();
    for u in urls {
        let mut child = Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
            .args([
                "-w",
                "%{http_code} %{http_version}",
                "-o",
                "/dev/null",
                "-K",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl: run tests/setup.sh");
        std::thread::sleep(delay);
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "url = \"{u}\"").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut it = stdout.split_whitespace();
        statuses.push(it.next().and_then(|s| s.parse().ok()).unwrap_or(0));
        versions.push(it.next().unwrap_or("").to_string());
    }
    (statuses, versions)
}

/// (path with query, expected url.path, status)
const CASES: &[(&str, &str, u16)] = &[
    ("/hello", "/hello", 200),
    ("/status?respond=404", "/status", 404),
    ("/status?respond=503", "/status", 503),
    ("/nowhere", "/nowhere", 404),
    ("/hello?x=1", "/hello", 200),
];

fn check_http_span(s: &ReceivedSpan, path: &str, status: u16, port: u16) {
    let mut bad = Vec::new();
    let (want_kind, want_name) = match s.kind {
        SpanKind::Server => (SpanKind::Server, format!("GET {path}")),
        _ => (SpanKind::Client, "GET".to_string()),
    };
    if s.kind != want_kind || s.name != want_name {
        bad.push(format!("name {:?}, want {want_name:?}", s.name));
    }
    if s.method() != "GET" {
        bad.push("http.request.method".into());
    }
    if s.http_status() != i64::from(status) {
        bad.push(format!("http.response.status_code {}", s.http_status()));
    }
    if s.attr("rpc.system").is_some() {
        bad.push("rpc.system set on a plain HTTP/2 span".into());
    }
    if s.attr_int("server.port") != Some(i64::from(port)) {
        bad.push(format!("server.port {:?}", s.attr_int("server.port")));
    }
    for k in ["beyla.partial", "beyla.incomplete"] {
        if s.attr(k).is_some() {
            bad.push(format!("{k} set"));
        }
    }
    let error = if s.is_server() {
        status >= 500
    } else {
        status >= 400
    };
    if (s.status_code == SpanStatus::Error) != error {
        bad.push(format!("status {:?}", s.status_code));
    }
    if s.is_server() {
        if s.attr_str("url.path") != Some(path) {
            bad.push(format!("url.path {:?}", s.attr_str("url.path")));
        }
    } else {
        let full = s.attr_str("url.full").unwrap_or("");
        if !full.starts_with(&format!("http://127.0.0.1:{port}{path}")) {
            bad.push(format!("url.full {full:?}"));
        }
    }
    assert!(bad.is_empty(), "{}: {}", s.summary(), bad.join("; "));
}

fn sorted_keys(spans: &[ReceivedSpan]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = spans
        .iter()
        .map(|s| {
            let p = s
                .attr_str("url.path")
                .map(str::to_string)
                .or_else(|| {
                    s.attr_str("url.full").map(|f| {
                        let rest = f.splitn(4, '/').nth(3).unwrap_or("");
                        format!("/{}", rest.split('?').next().unwrap_or(""))
                    })
                })
                .unwrap_or_default();
            (p, s.http_status())
        })
        .collect();
    v.sort();
    v
}

fn expected_keys() -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = CASES
        .iter()
        .map(|(_, p, st)| (p.to_string(), i64::from(*st)))
        .collect();
    v.sort();
    v
}

/// nginx selected by port: one SERVER span per request.
#[test]
fn nginx_h2c_server_spans_from_curl_prior_knowledge() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let (nginx, _dir) = nginx_h2c(port);
    let mut d = Daemon::start(&[port], &rx);
    std::thread::sleep(settle());
    let urls: Vec<String> = CASES
        .iter()
        .map(|(p, _, _)| format!("http://127.0.0.1:{port}{p}"))
        .collect();
    let (statuses, versions) = curl_h2(&urls, Duration::ZERO);
    let want: Vec<u16> = CASES.iter().map(|c| c.2).collect();
    assert_eq!(statuses, want);
    assert!(versions.iter().all(|v| v == "2"), "curl used {versions:?}");
    let workers = procs::children_of(nginx.pid());
    let spans = rx.wait_for_exact_spans(
        |s: &ReceivedSpan| s.is_server(),
        CASES.len(),
        span_timeout(),
        quiet(),
    );
    assert_eq!(
        sorted_keys(&spans),
        expected_keys(),
        "{}",
        otlp::dump_spans(&spans)
    );
    for s in &spans {
        assert!(
            workers.contains(&s.pid().unwrap()),
            "span not from an nginx worker {workers:?}: {}",
            s.summary()
        );
        let (_, path, status) = CASES
            .iter()
            .find(|(_, p, st)| {
                s.attr_str("url.path") == Some(p) && s.http_status() == i64::from(*st)
            })
            .unwrap();
        check_http_span(s, path, *status, port);
        assert!(s.duration() < Duration::from_secs(5), "{}", s.summary());
    }
    rx.assert_quiet(otlp::any_span, CASES.len(), Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

/// curl selected by its executable: one CLIENT span per request, `url.full` with the query,
/// ERROR at >= 400. nginx is not selected.
#[test]
fn curl_h2c_prior_knowledge_client_spans() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let (_nginx, _dir) = nginx_h2c(port);
    let mut d = Daemon::builder()
        .env("BEYLA_EXECUTABLE_NAME", "/curl$")
        .otlp(&rx)
        .start();
    std::thread::sleep(settle());
    let urls: Vec<String> = CASES
        .iter()
        .map(|(p, _, _)| format!("http://127.0.0.1:{port}{p}"))
        .collect();
    let (statuses, _) = curl_h2(&urls, Duration::from_millis(300));
    let want: Vec<u16> = CASES.iter().map(|c| c.2).collect();
    assert_eq!(statuses, want);
    let spans = rx.wait_for_exact_spans(
        |s: &ReceivedSpan| s.is_client(),
        CASES.len(),
        span_timeout(),
        quiet(),
    );
    assert_eq!(
        sorted_keys(&spans),
        expected_keys(),
        "{}",
        otlp::dump_spans(&spans)
    );
    for s in &spans {
        let full = s.attr_str("url.full").unwrap_or("");
        let (_, path, status) = CASES
            .iter()
            .find(|(q, _, st)| {
                full == format!("http://127.0.0.1:{port}{q}") && s.http_status() == i64::from(*st)
            })
            .unwrap_or_else(|| panic!("unexpected span {}", s.summary()));
        check_http_span(s, path, *status, port);
        assert_eq!(s.attr_str("server.address"), Some("127.0.0.1"));
    }
    rx.assert_quiet(otlp::any_span, CASES.len(), Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

/// `Upgrade: h2c`: curl `--http2` sends an HTTP/1.1 request asking for h2c, the server
/// answers 101, its SETTINGS and the response on stream 1 in one write. Each request is one
/// SERVER span with the final status (not 101).
#[test]
fn h2c_upgrade_server_spans() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg("-u")
        .arg(beyla_rs_tests::tests_dir().join("servers/h2c_upgrade_server.py"))
        .args(["--port", &port.to_string()]);
    let srv = fixtures::spawn_server("h2c-upgrade", cmd, port, None);
    let mut d = Daemon::start(&[port], &rx);
    std::thread::sleep(settle());
    let cases: &[(&str, &str, u16)] = &[
        ("/hello", "/hello", 200),
        ("/status?respond=503", "/status", 503),
        ("/nowhere", "/nowhere", 404),
    ];
    for (q, _, want) in cases {
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{http_version}"])
            .arg(format!("http://127.0.0.1:{port}{q}"))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{want} 2"),
            "curl --http2 {q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let spans = rx.wait_for_exact_spans(
        otlp::server_of(srv.pid()),
        cases.len(),
        span_timeout(),
        quiet(),
    );
    for (_, path, status) in cases {
        let s = spans
            .iter()
            .find(|s| s.attr_str("url.path") == Some(path))
            .unwrap_or_else(|| panic!("no span for {path}: {}", otlp::dump_spans(&spans)));
        check_http_span(s, path, *status, port);
    }
    rx.assert_quiet(otlp::any_span, cases.len(), Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}
