//! Issue 18, proxies that forward `traceparent` unchanged: nginx `proxy_pass` (in front of
//! Python `http.server`) and HAProxy `mode http` (in front of Go `net/http`) send the upstream
//! the request headers they received. Such a process is a
//! pass-through, not an instrumented app: with or without an incoming `traceparent`, every
//! round is one trace of exactly three spans, proxy SERVER ← proxy CLIENT ← upstream SERVER
//! (caller found by connection), the proxy's SERVER span the child of the test's parent id
//! when it sent one.
//!
//! Needs root and the daemon binary; run serially:
//! `cargo test -p beyla-rs-tests --test proxies -- --test-threads=1`.

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures::{self, HaProxy, Nginx, NginxOpts, ServerKind, ServerOpts};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, quiet, require_root, settle, span_timeout};

const ROUNDS: usize = 4;

fn trace_hex(round: usize) -> String {
    format!("5c0ffee577b34da6a3ce929d0e0e47{round:02x}")
}
fn parent_hex(round: usize) -> String {
    format!("0bad0aa0ba902b{round:02x}")
}

#[derive(Clone, Copy, Debug)]
enum Proxy {
    Nginx,
    HaProxy,
}

fn one<'a>(
    spans: &'a [&'a ReceivedSpan],
    what: &str,
    f: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let m: Vec<&ReceivedSpan> = spans.iter().copied().filter(|s| f(s)).collect();
    assert_eq!(m.len(), 1, "expected exactly one {what}, got {}", m.len());
    m[0]
}

/// `ROUNDS` requests, one connection each, through `proxy` to an `upstream` server;
/// `with_header`: each carries its own `traceparent` (sampled).
fn proxy_chain(proxy: Proxy, upstream: ServerKind, with_header: bool) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let up = fixtures::start(upstream, free_port(), &ServerOpts::default());
    // The process ids whose spans are the proxy's, and the path prefix it is reached by.
    let (_nginx, _haproxy, proxy_port, proxy_pids, prefix) = match proxy {
        Proxy::Nginx => {
            let ng = Nginx::start(
                free_port(),
                &NginxOpts {
                    upstream_port: Some(up.port()),
                    workers: None,
                },
            );
            let (port, workers) = (ng.port(), ng.worker_pids());
            (Some(ng), None, port, workers, "/proxy")
        }
        Proxy::HaProxy => {
            let hp = HaProxy::start(free_port(), up.port());
            let (port, pid) = (hp.port(), hp.pid());
            (None, Some(hp), port, vec![pid], "")
        }
    };
    let d = Daemon::start(&[proxy_port, up.port()], &rx);
    std::thread::sleep(settle());

    for round in 0..ROUNDS {
        let mut req = Request::get(&format!("{prefix}/hello?round={round}"));
        if with_header {
            req = req.header(
                "traceparent",
                &format!("00-{}-{}-01", trace_hex(round), parent_hex(round)),
            );
        }
        let r = rawhttp::keepalive(proxy_port, &[req]);
        assert_eq!(
            (r[0].status, r[0].body_str().as_str()),
            (200, "hello\n"),
            "round {round}"
        );
    }

    // Nothing else is selected: exactly three spans per round.
    let spans = rx.wait_for_exact_spans(otlp::any_span, 3 * ROUNDS, span_timeout(), quiet());
    let dump = otlp::dump_spans(&spans);
    let of_proxy = |s: &ReceivedSpan| s.pid().is_some_and(|p| proxy_pids.contains(&p));
    let mut traces = std::collections::BTreeSet::new();
    for p_srv in spans.iter().filter(|s| s.is_server() && of_proxy(s)) {
        let trace = &p_srv.trace_id;
        let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| &s.trace_id == trace).collect();
        assert_eq!(in_trace.len(), 3, "one trace of three:\n{dump}");
        let p_cli = one(&in_trace, "proxy CLIENT span", |s| {
            s.is_client() && s.pid() == p_srv.pid()
        });
        // SERVER spans carry no query: the round is the one the proxy forwarded.
        let round = p_cli
            .attr_str("url.full")
            .and_then(|u| u.rsplit_once("?round="))
            .and_then(|(_, r)| r.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no round in {}\n{dump}", p_cli.summary()));
        let u_srv = one(&in_trace, "upstream SERVER span", |s| {
            s.is_server() && s.pid() == Some(up.pid())
        });
        if with_header {
            assert_eq!(*trace, trace_hex(round), "{}", p_srv.summary());
            assert_eq!(
                p_srv.parent_span_id,
                parent_hex(round),
                "the caller's child"
            );
        } else {
            assert_eq!(p_srv.parent_span_id, "", "the proxy's span is the root");
        }
        assert_eq!(
            p_cli.parent_span_id, p_srv.span_id,
            "proxy CLIENT <- proxy SERVER, round {round}:\n{dump}"
        );
        assert_eq!(
            u_srv.parent_span_id, p_cli.span_id,
            "upstream SERVER <- proxy CLIENT, round {round}:\n{dump}"
        );
        assert_eq!(u_srv.attr_str("url.path"), Some("/hello"));
        traces.insert((round, trace.clone()));
    }
    assert_eq!(traces.len(), ROUNDS, "each round its own trace:\n{dump}");
    assert!(
        traces.iter().map(|(r, _)| *r).eq(0..ROUNDS),
        "every round once:\n{dump}"
    );
    rx.assert_no_errors();
    d.stop_ok();
}

#[test]
fn nginx_forwarding_the_callers_traceparent_is_a_hop_of_its_trace() {
    proxy_chain(Proxy::Nginx, ServerKind::Python, true);
}

#[test]
fn nginx_chain_without_traceparent_is_one_tree() {
    proxy_chain(Proxy::Nginx, ServerKind::Python, false);
}

#[test]
fn haproxy_forwarding_the_callers_traceparent_is_a_hop_of_its_trace() {
    proxy_chain(Proxy::HaProxy, ServerKind::Go, true);
}

#[test]
fn haproxy_chain_without_traceparent_is_one_tree() {
    proxy_chain(Proxy::HaProxy, ServerKind::Go, false);
}
