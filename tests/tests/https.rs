//! HTTPS: the plaintext that OpenSSL's `SSL_read`/`SSL_write` see (the shared `libssl.so.3`
//! of nginx and Python, the OpenSSL linked into Node's executable; Go's `crypto/tls` later)
//! goes through the same HTTP parsers, so an HTTPS request gives exactly the span a plaintext
//! one does, with `url.scheme` = `https` on SERVER spans and `https://` in the `url.full` of
//! CLIENT spans. Exact counts everywhere:
//!
//! - nginx `listen … ssl` (master + 2 workers): curl on one keep-alive connection and Python
//!   urllib on new connections; a plaintext `listen` of the same server keeps `http`;
//! - nginx `proxy_pass https://` to a Python HTTPS upstream: nginx SERVER and CLIENT spans and
//!   the upstream's SERVER spans;
//! - Python, Node (and, ignored for now, Go) HTTPS servers driven by an HTTPS client of the
//!   same language that is itself selected (it binds a listener on a selected port): SERVER
//!   spans of the server, CLIENT spans of the client, CLIENT spans of the server's `/proxy/`
//!   calls to an HTTPS upstream that is not selected;
//! - grpcio over TLS: unary calls give the SERVER and CLIENT spans of `tests/grpc.rs`;
//! - TLS that carries no HTTP, and handshakes that are cut short or carry nothing, give no
//!   span, no HTTP parse error, and the daemon stays up (positive control in the same run).
//!
//! Fixtures: `src/tls.rs` (test CA, servers, clients, probes). Needs root, the daemon binary,
//! nginx, curl, openssl, python3 with grpcio, node, go (tests/setup.sh); run serially:
//! `cargo test -p beyla-rs-tests --test https -- --test-threads=1`.

use std::time::Duration;

use beyla_rs_tests::counters::{HTTP1_PARSE_ERRORS, HTTP2_PARSE_ERRORS, NOT_HTTP, SPANS_CREATED};
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::expect::{self, ExpectedSpan, check_server_spans, expect_spans};
use beyla_rs_tests::fixtures::{self, ServerKind, ServerOpts};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::tls::{
    self, ClientKind, ClientPlan, HeldClient, NginxTlsOpts, TestCa, check_https_server_spans,
    https_url,
};
use beyla_rs_tests::{free_port, procs, quiet, require_root, span_timeout};

/// One call of a client plan and what it must give.
struct Call {
    method: &'static str,
    /// Path and query as sent.
    target: &'static str,
    status: u16,
    /// Response body length.
    resp: usize,
    /// What the server's `/proxy/` route asks its upstream for (path and query).
    upstream: Option<&'static str>,
}

const fn call(method: &'static str, target: &'static str, status: u16, resp: usize) -> Call {
    Call {
        method,
        target,
        status,
        resp,
        upstream: None,
    }
}

const fn proxied(
    method: &'static str,
    target: &'static str,
    status: u16,
    resp: usize,
    upstream: &'static str,
) -> Call {
    Call {
        method,
        target,
        status,
        resp,
        upstream: Some(upstream),
    }
}

impl Call {
    /// `url.path` of the server's span.
    fn path(&self) -> &'static str {
        self.target.split('?').next().unwrap()
    }
    fn req_body(&self) -> usize {
        if matches!(self.method, "POST" | "PUT") {
            tls::CLIENT_BODY.len()
        } else {
            0
        }
    }
    fn server_span(&self, port: u16) -> ExpectedSpan {
        ExpectedSpan::server(self.method, self.path(), self.status)
            .port(port)
            .req_body(self.req_body())
            .resp_body(self.resp)
    }
    fn client_span(&self, port: u16) -> ExpectedSpan {
        ExpectedSpan::client(self.method, &https_url(port, self.target), self.status).port(port)
    }
    /// The CLIENT span of the server's call to its upstream, if it makes one.
    fn upstream_client_span(&self, up_port: u16) -> Option<ExpectedSpan> {
        self.upstream.map(|t| {
            ExpectedSpan::client(self.method, &https_url(up_port, t), self.status).port(up_port)
        })
    }
    /// The upstream's SERVER span, if the server calls it.
    fn upstream_server_span(&self, up_port: u16) -> Option<ExpectedSpan> {
        self.upstream.map(|t| {
            ExpectedSpan::server(self.method, t.split('?').next().unwrap(), self.status)
                .port(up_port)
                .req_body(self.req_body())
                .resp_body(self.resp)
        })
    }
}

fn plan(new: &[Call], keepalive: &[Call]) -> ClientPlan {
    let items = |calls: &[Call]| {
        calls
            .iter()
            .map(|c| format!("{}:{}", c.method, c.target))
            .collect()
    };
    ClientPlan {
        new: items(new),
        keepalive: items(keepalive),
    }
}

fn answers(calls: &[Call]) -> Vec<(u16, usize)> {
    calls.iter().map(|c| (c.status, c.resp)).collect()
}

fn in_pids(pids: &[u32]) -> impl Fn(&ReceivedSpan) -> bool + '_ {
    move |s| s.pid().is_some_and(|p| pids.contains(&p))
}

/// Every nginx span comes from a worker, never the master, named after the executable.
fn check_nginx_pids(spans: &[ReceivedSpan], master: u32) {
    for s in spans {
        assert_ne!(
            s.pid(),
            Some(master),
            "the master serves nothing: {}",
            s.summary()
        );
        assert_eq!(
            s.service_name(),
            Some("nginx"),
            "default service.name is the executable name: {}",
            s.summary()
        );
    }
}

#[test]
fn nginx_https_keepalive_and_new_connections() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let ca = TestCa::new();
    let port = free_port();
    let plain_port = free_port();
    let ng = tls::nginx_https(
        port,
        &ca,
        &NginxTlsOpts {
            upstream_port: None,
            workers: Some(2),
            plain_port: Some(plain_port),
        },
    );
    let master = ng.master_pid();
    let workers = ng.worker_pids();
    assert_eq!(workers.len(), 2);
    let mut d = Daemon::start(&[port, plain_port], &rx);

    // curl: five URLs on one keep-alive TLS connection.
    let curl_calls = [
        call("GET", "/hello", 200, 6),
        call("GET", "/status?respond=404", 404, 11),
        call("GET", "/status?respond=503", 503, 11),
        call("GET", "/nope", 404, 10),
        call("GET", "/hello", 200, 6),
    ];
    let urls: Vec<String> = curl_calls
        .iter()
        .map(|c| https_url(port, c.target))
        .collect();
    let r = rawhttp::curl_many("GET", &urls, &["--cacert", &ca.ca_str()]);
    assert_eq!(r.statuses, vec![200, 404, 503, 404, 200], "curl: {r:?}");
    assert_eq!(
        r.connects,
        vec![1, 0, 0, 0, 0],
        "curl did not reuse its connection: {r:?}"
    );
    // Python urllib: one new TLS connection per request.
    let new_calls = [
        call("GET", "/hello", 200, 6),
        call("GET", "/status?respond=201", 201, 11),
        call("HEAD", "/hello", 200, 0),
        call("GET", "/nope", 404, 10),
    ];
    let r = tls::run_https_client(ClientKind::Python, &ca, port, &plan(&new_calls, &[]));
    assert_eq!(r.new, answers(&new_calls), "urllib: {r:?}");
    // One keep-alive connection with idle gaps between its requests: nginx peeks at the first
    // octet of a TLS connection, which once got the connection dropped as not HTTP a moment
    // later (only requests right behind the first were seen then).
    let gaps = [
        call("GET", "/hello", 200, 6),
        call("GET", "/hello", 200, 6),
        call("GET", "/hello", 200, 6),
    ];
    let script = format!(
        "import http.client, ssl, time\n\
         c = http.client.HTTPSConnection('127.0.0.1', {port}, \
         context=ssl.create_default_context(cafile={ca:?}))\n\
         for i in range(3):\n    \
         time.sleep(0.5)\n    \
         c.request('GET', '/hello')\n    \
         r = c.getresponse()\n    \
         r.read()\n    \
         print(r.status)\n",
        ca = ca.ca_str()
    );
    let out = std::process::Command::new(fixtures::python_exe())
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["200", "200", "200"],
        "keep-alive client with gaps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same server's plaintext listener: spans with url.scheme http.
    let plain = rawhttp::keepalive(
        plain_port,
        &[Request::get("/hello"), Request::get("/status?respond=404")],
    );
    assert_eq!((plain[0].status, plain[1].status), (200, 404));

    let https_expected: Vec<ExpectedSpan> = curl_calls
        .iter()
        .chain(&new_calls)
        .chain(&gaps)
        .map(|c| c.server_span(port))
        .collect();
    let on_tls_port = |s: &ReceivedSpan| s.attr_int("server.port") == Some(port as i64);
    let spans = expect_spans(
        &rx,
        |s| s.is_server() && in_pids(&workers)(s) && on_tls_port(s),
        &https_expected,
    );
    check_https_server_spans(&spans, port, None, "nginx");
    check_nginx_pids(&spans, master);
    let plain_expected = [
        ExpectedSpan::server("GET", "/hello", 200)
            .port(plain_port)
            .resp_body(6),
        ExpectedSpan::server("GET", "/status", 404)
            .port(plain_port)
            .resp_body(11),
    ];
    let plain_spans = expect_spans(
        &rx,
        |s| s.is_server() && in_pids(&workers)(s) && !on_tls_port(s),
        &plain_expected,
    );
    for s in &plain_spans {
        check_server_spans(
            std::slice::from_ref(s),
            plain_port,
            s.pid().unwrap(),
            "nginx",
        );
    }
    // 12 + 2, nothing else (curl and the Python clients are not selected).
    rx.assert_quiet(otlp::any_span, https_expected.len() + 2, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

#[test]
fn nginx_proxy_pass_https_upstream() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let ca = TestCa::new();
    let up = tls::python_https(free_port(), &ca);
    let port = free_port();
    let ng = tls::nginx_https(
        port,
        &ca,
        &NginxTlsOpts {
            upstream_port: Some(up.port()),
            workers: Some(2),
            plain_port: None,
        },
    );
    let master = ng.master_pid();
    let workers = ng.worker_pids();
    assert_eq!(workers.len(), 2);
    let mut d = Daemon::start(&[port, up.port()], &rx);

    // curl, one keep-alive connection: three proxied GETs and one nginx answers itself.
    let curl_gets = [
        proxied("GET", "/proxy/hello", 200, 6, "/hello"),
        proxied(
            "GET",
            "/proxy/status?respond=404",
            404,
            11,
            "/status?respond=404",
        ),
        call("GET", "/hello", 200, 6),
        proxied(
            "GET",
            "/proxy/status?respond=503",
            503,
            11,
            "/status?respond=503",
        ),
    ];
    let urls: Vec<String> = curl_gets
        .iter()
        .map(|c| https_url(port, c.target))
        .collect();
    let r = rawhttp::curl_many("GET", &urls, &["--cacert", &ca.ca_str()]);
    assert_eq!(
        r.statuses,
        vec![200, 404, 200, 503],
        "curl: {r:?}\n{}",
        ng.error_log()
    );
    assert_eq!(
        r.connects,
        vec![1, 0, 0, 0],
        "curl did not reuse its connection: {r:?}"
    );
    // curl POST /echo (nginx proxies it to the upstream's /echo), 8 bytes.
    let r = rawhttp::curl_many(
        "POST",
        &[https_url(port, "/echo")],
        &["--cacert", &ca.ca_str(), "--data-binary", "a=1&b=22"],
    );
    assert_eq!(
        r.statuses,
        vec![200],
        "curl POST: {r:?}\n{}",
        ng.error_log()
    );
    // Python urllib, new connections.
    let new_calls = [
        proxied("POST", "/proxy/echo", 200, 12, "/echo"),
        proxied(
            "GET",
            "/proxy/status?respond=201",
            201,
            11,
            "/status?respond=201",
        ),
    ];
    let r = tls::run_https_client(ClientKind::Python, &ca, port, &plan(&new_calls, &[]));
    assert_eq!(
        r.new,
        answers(&new_calls),
        "urllib: {r:?}\n{}",
        ng.error_log()
    );

    let calls: Vec<&Call> = curl_gets.iter().chain(&new_calls).collect();
    let mut server_expected: Vec<ExpectedSpan> =
        calls.iter().map(|c| c.server_span(port)).collect();
    server_expected.push(
        ExpectedSpan::server("POST", "/echo", 200)
            .port(port)
            .req_body(8)
            .resp_body(8),
    );
    let mut client_expected: Vec<ExpectedSpan> = calls
        .iter()
        .filter_map(|c| c.upstream_client_span(up.port()))
        .collect();
    client_expected
        .push(ExpectedSpan::client("POST", &https_url(up.port(), "/echo"), 200).port(up.port()));
    let mut upstream_expected: Vec<ExpectedSpan> = calls
        .iter()
        .filter_map(|c| c.upstream_server_span(up.port()))
        .collect();
    upstream_expected.push(
        ExpectedSpan::server("POST", "/echo", 200)
            .port(up.port())
            .req_body(8)
            .resp_body(8),
    );
    assert_eq!(
        (
            server_expected.len(),
            client_expected.len(),
            upstream_expected.len()
        ),
        (7, 6, 6)
    );

    let server = expect_spans(
        &rx,
        |s| s.is_server() && in_pids(&workers)(s),
        &server_expected,
    );
    let client = expect_spans(
        &rx,
        |s| s.is_client() && in_pids(&workers)(s),
        &client_expected,
    );
    let upstream = expect_spans(&rx, otlp::server_of(up.pid()), &upstream_expected);
    let mut v = tls::https_server_spans_violations(&server, port, None, "nginx");
    v.extend(tls::https_client_spans_violations(
        &client,
        up.port(),
        None,
        "nginx",
    ));
    v.extend(tls::https_server_spans_violations(
        &upstream,
        up.port(),
        Some(up.pid()),
        &up.exe_name(),
    ));
    tls::assert_no_violations(v, "HTTPS span contract");
    check_nginx_pids(&server, master);
    check_nginx_pids(&client, master);
    for s in &client {
        assert_eq!(
            s.attr_str("server.address"),
            Some("127.0.0.1"),
            "{}",
            s.summary()
        );
    }
    // 7 + 6 + 6, nothing else (the upstream makes no calls; curl and Python are not selected).
    rx.assert_quiet(otlp::any_span, 19, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

/// New connections (5 calls, one proxied) and one keep-alive connection (6 calls, two
/// proxied) from the client to the server.
const APP_NEW: [Call; 5] = [
    call("GET", "/hello", 200, 6),
    call("GET", "/status?respond=404", 404, 11),
    call("GET", "/nope", 404, 10),
    call("POST", "/echo", 200, 12),
    proxied(
        "GET",
        "/proxy/status?respond=201",
        201,
        11,
        "/status?respond=201",
    ),
];
const APP_KEEPALIVE: [Call; 6] = [
    call("GET", "/hello", 200, 6),
    call("GET", "/status?respond=503", 503, 11),
    call("POST", "/echo", 200, 12),
    proxied("GET", "/proxy/hello", 200, 6, "/hello"),
    proxied(
        "PUT",
        "/proxy/status?respond=404",
        404,
        11,
        "/status?respond=404",
    ),
    call("GET", "/hello", 200, 6),
];

/// An HTTPS server of `server` (selected) whose `/proxy/` calls a Python HTTPS upstream (not
/// selected), driven by an HTTPS client of `client` that binds a listener on a second
/// selected port, so that it is instrumented too: SERVER spans of the server, CLIENT spans of
/// the client, CLIENT spans of the server's upstream calls; exactly those.
fn https_server_and_client(server: ServerKind, client: ClientKind) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let ca = TestCa::new();
    let up = tls::python_https(free_port(), &ca);
    let port = free_port();
    let srv = tls::start_https(
        server,
        port,
        &ca,
        &ServerOpts::default().upstream(tls::https_upstream(up.port())),
    );
    let srv_exe = srv.exe_name();
    let listen = free_port();
    let mut cli = HeldClient::https(client, &ca, port, &plan(&APP_NEW, &APP_KEEPALIVE), listen);
    let cli_exe = procs::exe_name(cli.pid()).unwrap_or_default();
    let mut d = Daemon::start(&[port, listen], &rx);

    let r = cli.go_report();
    eprintln!(
        "[info] libssl of the {} server: {}; of the {} client: {}",
        server.name(),
        tls::libssl_of(srv.pid()),
        client.name(),
        tls::libssl_of(cli.pid())
    );
    assert_eq!(r.new, answers(&APP_NEW), "{} client: {r:?}", client.name());
    assert_eq!(
        r.keepalive,
        answers(&APP_KEEPALIVE),
        "{} client: {r:?}",
        client.name()
    );
    assert_eq!(
        r.keepalive_connections, 1,
        "the keep-alive calls did not share one connection: {r:?}"
    );

    let calls: Vec<&Call> = APP_NEW.iter().chain(&APP_KEEPALIVE).collect();
    let server_expected: Vec<ExpectedSpan> = calls.iter().map(|c| c.server_span(port)).collect();
    let client_expected: Vec<ExpectedSpan> = calls.iter().map(|c| c.client_span(port)).collect();
    let upstream_expected: Vec<ExpectedSpan> = calls
        .iter()
        .filter_map(|c| c.upstream_client_span(up.port()))
        .collect();
    assert_eq!(
        (
            server_expected.len(),
            client_expected.len(),
            upstream_expected.len()
        ),
        (11, 11, 3)
    );
    let server_spans = expect_spans(&rx, otlp::server_of(srv.pid()), &server_expected);
    let client_spans = expect_spans(&rx, otlp::client_of(cli.pid()), &client_expected);
    let upstream_spans = expect_spans(&rx, otlp::client_of(srv.pid()), &upstream_expected);
    let mut v = tls::https_server_spans_violations(&server_spans, port, Some(srv.pid()), &srv_exe);
    v.extend(tls::https_client_spans_violations(
        &client_spans,
        port,
        Some(cli.pid()),
        &cli_exe,
    ));
    v.extend(tls::https_client_spans_violations(
        &upstream_spans,
        up.port(),
        Some(srv.pid()),
        &srv_exe,
    ));
    tls::assert_no_violations(v, "HTTPS span contract");
    // 11 + 11 + 3, nothing else (the upstream is not selected).
    rx.assert_quiet(otlp::any_span, 25, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    cli.finish();
    d.stop_ok();
}

#[test]
fn python_https_server_and_client() {
    https_server_and_client(ServerKind::Python, ClientKind::Python);
}

/// Node's OpenSSL is linked into its executable (`/usr/bin/node` exports `SSL_read` and
/// `SSL_write`), not the shared libssl.
#[test]
fn node_https_server_and_client() {
    https_server_and_client(ServerKind::Node, ClientKind::Node);
}

#[test]
fn go_https_server_and_client() {
    https_server_and_client(ServerKind::Go, ClientKind::Go);
}

const GRPC_SERVICE: &str = "beyla.test.Echo";

/// 20 sequential unary calls over one TLS channel: 20 SERVER spans of the grpcio server and
/// 20 CLIENT spans of the grpcio client (selected by its listener), as `tests/grpc.rs` gets
/// them in plaintext. Debian's grpcio (under Debian's Python) encrypts through the system
/// libssl, on memory buffers: the sessions are tied by the handshake's first write.
#[test]
fn grpcio_tls_unary_calls() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let ca = TestCa::new();
    let port = free_port();
    let srv = tls::grpcio_tls_server(port, &ca);
    let listen = free_port();
    let n = 20;
    let mut cli = HeldClient::grpcio_tls(&ca, port, listen, "unary", n);
    let mut d = Daemon::start(&[port, listen], &rx);

    let v = cli.go();
    assert_eq!(v["ok"].as_u64(), Some(n as u64), "grpcio client: {v}");
    let server_spans = rx.wait_for_exact_spans(
        otlp::server_of(srv.pid()),
        n,
        span_timeout(),
        Duration::ZERO,
    );
    let client_spans =
        rx.wait_for_exact_spans(otlp::client_of(cli.pid()), n, span_timeout(), quiet());
    rx.assert_quiet(otlp::any_span, 2 * n, Duration::ZERO);
    for s in server_spans.iter().chain(&client_spans) {
        expect::check_grpc_span(s, GRPC_SERVICE, "Unary", 0, port);
    }
    rx.assert_no_errors();
    d.assert_running();
    cli.finish();
    d.stop_ok();
}

/// A TLS echo server speaking no HTTP and a Python HTTPS server, both selected: lines over TLS
/// to the echo server, ClientHellos cut after 10 and 100 bytes and complete handshakes with no
/// data after them to both give no span and no HTTP parse error, and the daemon stays up.
/// Positive control in the same run: one HTTPS request to the same HTTPS server afterwards is
/// exactly one span.
#[test]
fn tls_without_http_and_aborted_handshake_give_no_span() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let ca = TestCa::new();
    let mut echo = tls::tls_echo_server(free_port(), &ca);
    let mut web = tls::python_https(free_port(), &ca);
    let mut d = Daemon::builder()
        .open_ports(&[echo.port(), web.port()])
        .otlp(&rx)
        .internal_metrics()
        .start();

    let ca_path = ca.ca_str();
    let echo_port = echo.port().to_string();
    for text in [
        "PING beyla-rs, this is not HTTP",
        "HELLO over TLS: still no HTTP",
    ] {
        let v = tls::tls_probe(&[
            "line", "--port", &echo_port, "--ca", &ca_path, "--text", text,
        ]);
        assert_eq!(
            v["echo"].as_str(),
            Some(format!("echo: {text}").as_str()),
            "{v}"
        );
    }
    let mut tls_conns = 2;
    for port in [echo.port(), web.port()] {
        let p = port.to_string();
        for bytes in ["10", "100"] {
            let v = tls::tls_probe(&["half-hello", "--port", &p, "--bytes", bytes]);
            assert_eq!(v["sent"].to_string(), bytes, "{v}");
        }
        let v = tls::tls_probe(&["handshake-only", "--port", &p, "--ca", &ca_path]);
        assert!(
            v["version"]
                .as_str()
                .is_some_and(|s| s.starts_with("TLSv1")),
            "{v}"
        );
        tls_conns += 3;
    }
    let idle = d.wait_idle();
    d.assert_running();
    assert!(echo.is_running() && web.is_running());
    rx.assert_quiet(otlp::any_span, 0, Duration::ZERO);
    assert_eq!(idle.get(SPANS_CREATED), 0, "{idle:?}");
    // Not HTTP is dropped at the first bytes, never parsed as broken HTTP.
    assert_eq!(idle.get(HTTP1_PARSE_ERRORS), 0, "{idle:?}");
    assert_eq!(idle.get(HTTP2_PARSE_ERRORS), 0, "{idle:?}");
    eprintln!(
        "[measured] {tls_conns} TLS connections without HTTP → 0 spans; connections dropped \
         as not HTTP: {}",
        idle.get(NOT_HTTP)
    );

    // Positive control: HTTPS to the same server is traced.
    let hello = [call("GET", "/hello", 200, 6)];
    let r = tls::run_https_client(ClientKind::Python, &ca, web.port(), &plan(&hello, &[]));
    assert_eq!(r.new, answers(&hello));
    let spans = expect_spans(
        &rx,
        otlp::server_of(web.pid()),
        &[hello[0].server_span(web.port())],
    );
    check_https_server_spans(&spans, web.port(), Some(web.pid()), &web.exe_name());
    // And plaintext-free TLS still gives nothing after it.
    let v = tls::tls_probe(&[
        "line", "--port", &echo_port, "--ca", &ca_path, "--text", "bye",
    ]);
    assert_eq!(v["echo"].as_str(), Some("echo: bye"));
    let idle = d.wait_idle();
    assert_eq!(idle.get(SPANS_CREATED), 1, "{idle:?}");
    assert_eq!(idle.get(HTTP1_PARSE_ERRORS), 0, "{idle:?}");
    rx.assert_quiet(otlp::any_span, 1, Duration::ZERO);
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}
