//! Issue 5, metrics: N requests with known statuses → the `http.server.request.duration`
//! histogram counts, per attribute set, equal N at the OTLP receiver and on `/metrics`
//! (parsed by the `prometheus-client` Python package's text parser), recorded even when every
//! span is sampled out; Beyla's buckets; no `url.path` / `client.address`; the internal
//! metrics endpoint; and a route-cardinality bound under 10,000 distinct paths.
//!
//! Needs root, the daemon binary and `python3 -m pip install prometheus-client`
//! (tests/setup.sh); run serially:
//! `cargo test -p beyla-rs-tests --test metrics -- --test-threads=1`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use beyla_rs_tests::counters::{self, Counters};
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures;
use beyla_rs_tests::otlp::{self, AttrValue, OtlpReceiver, attrs_to_map};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, quiet, require_root, settle, span_timeout, wait_until};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

const BEYLA_BUCKETS: [f64; 15] = [
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One sample parsed by prometheus_client: (sample name, labels, value).
type Sample = (String, BTreeMap<String, String>, f64);
/// Counts per (method, status, route).
type Counts = BTreeMap<(String, String, String), u64>;

const PARSER: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = "\t".join("%s=%s" % (k, v) for k, v in sorted(s.labels.items()))
        print("%s\t%s\t%s\t%s" % (fam.type, s.name, repr(float(s.value)), labels))
"#;

/// Parse a Prometheus text exposition with the real `prometheus_client` parser.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut child = Command::new(fixtures::python_exe())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition (pip install prometheus-client?): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let _type = f.next().unwrap();
            let name = f.next().unwrap().to_owned();
            let value: f64 = f.next().unwrap().parse().unwrap();
            let labels = f
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            (name, labels, value)
        })
        .collect()
}

fn scrape(port: u16, path: &str) -> String {
    let r = rawhttp::keepalive(port, &[Request::get(path)]);
    assert_eq!(r[0].status, 200, "GET {path}: {}", r[0].body_str());
    assert!(
        r[0].header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r[0].headers
    );
    r[0].body_str()
}

/// (method, status, route) → count of `http_server_request_duration_seconds_count` samples
/// of `service`.
fn prom_counts(samples: &[Sample], service: &str) -> Counts {
    let mut m = BTreeMap::new();
    for (name, l, v) in samples {
        if name == "http_server_request_duration_seconds_count"
            && l.get("service_name").map(String::as_str) == Some(service)
        {
            let key = (
                l["http_request_method"].clone(),
                l["http_response_status_code"].clone(),
                l["http_route"].clone(),
            );
            *m.entry(key).or_insert(0) += *v as u64;
        }
    }
    m
}

/// The same from the last OTLP request carrying the process's server histogram (cumulative).
fn otlp_counts(reqs: &[ExportMetricsServiceRequest], pid: u32) -> Counts {
    let mut m = BTreeMap::new();
    for req in reqs.iter().rev() {
        for rm in &req.resource_metrics {
            let res = attrs_to_map(
                &rm.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            );
            if res.get("process.pid").and_then(AttrValue::as_int) != Some(pid as i64) {
                continue;
            }
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    if metric.name != "http.server.request.duration" {
                        continue;
                    }
                    assert_eq!(metric.unit, "s");
                    let Some(Data::Histogram(h)) = &metric.data else {
                        panic!("{} is not a histogram", metric.name)
                    };
                    for dp in &h.data_points {
                        assert_eq!(dp.explicit_bounds, BEYLA_BUCKETS, "Beyla's buckets");
                        assert_eq!(dp.bucket_counts.iter().sum::<u64>(), dp.count);
                        let a = attrs_to_map(&dp.attributes);
                        let keys: Vec<&str> = a.keys().map(String::as_str).collect();
                        assert_eq!(
                            keys,
                            [
                                "http.request.method",
                                "http.response.status_code",
                                "http.route"
                            ],
                            "default attribute set only"
                        );
                        let key = (
                            a["http.request.method"].as_str().unwrap().to_owned(),
                            a["http.response.status_code"].as_int().unwrap().to_string(),
                            a["http.route"].as_str().unwrap().to_owned(),
                        );
                        m.insert(key, dp.count);
                    }
                    return m;
                }
            }
        }
    }
    m
}

/// The requests with the status each must be answered, and the counts they must give.
fn expected() -> (Vec<(Request, u16)>, Counts) {
    let mut reqs = Vec::new();
    let mut want = BTreeMap::new();
    let mut add = |method: &str, target: &str, status: u16, route: &str, n: usize| {
        for _ in 0..n {
            reqs.push((Request::new(method, target), status));
        }
        *want
            .entry((method.to_owned(), status.to_string(), route.to_owned()))
            .or_insert(0) += n as u64;
    };
    add("GET", "/hello", 200, "/hello", 7);
    add("GET", "/status?respond=404", 404, "/status", 4);
    add("GET", "/status?respond=503", 503, "/status", 3);
    add("POST", "/echo", 200, "/echo", 2);
    // A configured pattern names the route; the heuristic would say /users/{id} too.
    add("GET", "/users/17", 404, "/users/{uid}", 1);
    add("GET", "/users/18", 404, "/users/{uid}", 1);
    (reqs, want)
}

#[test]
fn red_metrics_count_every_request_at_otlp_and_prometheus() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let srv = fixtures::python_with(
        port,
        &fixtures::ServerOpts::default().env("OTEL_SERVICE_NAME", "shop"),
    );
    let prom_port = free_port();
    let d = Daemon::builder()
        .open_ports(&[port])
        .otlp(&rx)
        .env("BEYLA_PROMETHEUS_PORT", prom_port.to_string())
        .env("BEYLA_INTERNAL_METRICS_EXPORTER", "prometheus")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300ms")
        .env("BEYLA_ROUTES_PATTERNS", "/users/{uid}")
        // Every span sampled out: metrics must still count every request.
        .env("OTEL_TRACES_SAMPLER", "always_off")
        .start();
    assert!(
        d.logs()
            .contains("serving Prometheus metrics on http://127.0.0.1:")
    );
    std::thread::sleep(settle());

    let (reqs, want) = expected();
    let n: u64 = want.values().sum();
    for chunk in reqs.chunks(5) {
        let sent: Vec<Request> = chunk.iter().map(|(r, _)| r.clone()).collect();
        for (r, (req, status)) in rawhttp::keepalive(port, &sent).iter().zip(chunk) {
            assert_eq!(r.status, *status, "{} {}", req.method, req.target);
        }
    }

    // Prometheus: wait until all N are counted, then compare per attribute set.
    let mut samples = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        samples = parse_prometheus(&scrape(prom_port, "/metrics"));
        prom_counts(&samples, "shop").values().sum::<u64>() >= n
    });
    assert!(
        ok,
        "metrics never reached {n}: {:?}",
        prom_counts(&samples, "shop")
    );
    assert_eq!(prom_counts(&samples, "shop"), want);
    // Buckets: Beyla's, cumulative, +Inf = count.
    let les: Vec<String> = samples
        .iter()
        .filter(|(name, l, _)| {
            name == "http_server_request_duration_seconds_bucket"
                && l.get("http_route").map(String::as_str) == Some("/hello")
        })
        .map(|(_, l, _)| l["le"].clone())
        .collect();
    let mut want_les: Vec<String> = BEYLA_BUCKETS.iter().map(|b| format!("{b}")).collect();
    want_les.push("+Inf".into());
    assert_eq!(les, want_les);
    for (name, l, _) in &samples {
        assert!(
            !l.contains_key("url_path") && !l.contains_key("client_address"),
            "high-cardinality label on {name}: {l:?}"
        );
    }
    let sizes: f64 = samples
        .iter()
        .filter(|(name, l, _)| {
            name == "http_server_response_body_size_bytes_sum"
                && l.get("http_route").map(String::as_str) == Some("/hello")
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(sizes, 7.0 * 6.0, "7 × \"hello\\n\"");
    assert!(samples.iter().any(|(name, l, _)| name == "target_info"
        && l.get("process_pid").map(String::as_str) == Some(&srv.pid().to_string())));

    // OTLP: the same counts, Beyla's buckets, the default attribute set.
    let ok = wait_until(Duration::from_secs(15), || {
        otlp_counts(&rx.metrics(), srv.pid()).values().sum::<u64>() >= n
    });
    assert!(
        ok,
        "OTLP metrics never reached {n}: {:?}",
        otlp_counts(&rx.metrics(), srv.pid())
    );
    assert_eq!(otlp_counts(&rx.metrics(), srv.pid()), want);
    let svc = rx
        .metrics()
        .iter()
        .flat_map(|r| r.resource_metrics.clone())
        .find_map(|rm| {
            let res = attrs_to_map(&rm.resource?.attributes);
            (res.get("process.pid").and_then(AttrValue::as_int) == Some(srv.pid() as i64))
                .then(|| {
                    res.get("service.name")
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .flatten()
        });
    assert_eq!(svc.as_deref(), Some("shop"));

    // No spans (always_off), and the internal metrics say why. Read once the daemon is idle
    // (every record read), so that they can be compared with its exit summary below.
    rx.assert_quiet(otlp::any_span, 0, quiet());
    let read_internal = || {
        Counters::parse(&scrape(prom_port, "/internal/metrics")).unwrap_or_else(|e| panic!("{e}"))
    };
    counters::wait_idle(read_internal, span_timeout())
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
    let internal = parse_prometheus(&scrape(prom_port, "/internal/metrics"));
    let get = |name: &str| -> f64 {
        internal
            .iter()
            .filter(|(s, _, _)| s == name)
            .map(|(_, _, v)| v)
            .sum()
    };
    // One span per request, each sampled out; none built, none exported.
    assert_eq!(get("beyla_spans_not_sampled_total"), n as f64);
    assert_eq!(get("beyla_spans_created_total"), 0.0);
    assert_eq!(get("beyla_spans_exported_total"), 0.0);
    // How many records a request costs depends on how TCP delivered its bytes to Python
    // (a POST body may come with its head or in a read of its own): not exact, but every
    // request is at least its read and its response's write.
    assert!(
        get("beyla_events_read_total") >= 2.0 * n as f64,
        "{} records for {n} requests",
        get("beyla_events_read_total")
    );
    // Well-formed requests: no parse error, and the series exists with its label.
    let http1_errors: Vec<f64> = internal
        .iter()
        .filter(|(s, l, _)| {
            s == "beyla_parse_errors_total"
                && l.get("protocol").map(String::as_str) == Some("http1")
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(http1_errors, [0.0]);
    rx.assert_no_errors();
    // The endpoint serves what the daemon counted: with no traffic since the scrape, its
    // counters equal those the daemon logs at exit (the log lists the nonzero ones).
    let exit = d.stop_ok();
    let line = exit
        .stderr
        .lines()
        .rev()
        .find(|l| l.contains("stopped:"))
        .expect("a stopped: line");
    for (name, series) in [
        ("events_read", "beyla_events_read_total"),
        ("spans_not_sampled", "beyla_spans_not_sampled_total"),
        ("connections_opened", "beyla_connections_opened_total"),
        (
            "processes_instrumented",
            "beyla_processes_instrumented_total",
        ),
    ] {
        assert!(
            line.contains(&format!(" {name}={} ", get(series) as u64))
                || line.ends_with(&format!(" {name}={}", get(series) as u64)),
            "{series} = {} on the endpoint, at exit: {line}",
            get(series)
        );
    }
}

#[test]
fn traces_off_metrics_on_and_printer_stays_quiet() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let _srv = fixtures::python(port);
    let d = Daemon::builder()
        .open_ports(&[port])
        .otlp(&rx)
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("BEYLA_METRICS_INTERVAL", "300ms")
        .start();
    std::thread::sleep(settle());
    rawhttp::keepalive(port, &[Request::get("/hello"), Request::get("/hello")]);
    let ok = wait_until(Duration::from_secs(10), || {
        rx.metrics().iter().any(|r| {
            r.resource_metrics.iter().any(|rm| {
                rm.scope_metrics.iter().any(|sm| {
                    sm.metrics.iter().any(|m| match &m.data {
                        Some(Data::Histogram(h)) => {
                            m.name == "http.server.request.duration"
                                && h.data_points.iter().map(|d| d.count).sum::<u64>() == 2
                        }
                        _ => false,
                    })
                })
            })
        })
    });
    assert!(ok, "no metrics for the 2 requests");
    rx.assert_quiet(otlp::any_span, 0, quiet());
    let exit = d.stop_ok();
    assert!(
        exit.stdout.is_empty(),
        "printer must stay off: {}",
        exit.stdout
    );
}

#[test]
fn ten_thousand_distinct_paths_give_bounded_routes() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let port = free_port();
    let _srv = fixtures::python(port);
    let prom_port = free_port();
    let d = Daemon::builder()
        .open_ports(&[port])
        .otlp(&rx)
        .env("BEYLA_PROMETHEUS_PORT", prom_port.to_string())
        .env("BEYLA_ROUTES_MAX", "100")
        .env("OTEL_TRACES_EXPORTER", "none")
        .start();
    std::thread::sleep(settle());
    // 5,000 numeric ids (the heuristic folds them) and 5,000 distinct words it cannot tell
    // from real routes (the cap folds those).
    let word = |mut i: usize| {
        let mut w = String::from("w");
        loop {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                break w;
            }
        }
    };
    let reqs: Vec<Request> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                Request::get(&format!("/users/{i}"))
            } else {
                Request::get(&format!("/tag/{}", word(i)))
            }
        })
        .collect();
    std::thread::scope(|s| {
        for chunk in reqs.chunks(2_500) {
            s.spawn(move || rawhttp::keepalive(port, chunk));
        }
    });
    let mut samples = Vec::new();
    let ok = wait_until(Duration::from_secs(20), || {
        samples = parse_prometheus(&scrape(prom_port, "/metrics"));
        samples
            .iter()
            .filter(|(n, _, _)| n == "http_server_request_duration_seconds_count")
            .map(|(_, _, v)| *v as u64)
            .sum::<u64>()
            >= 10_000
    });
    assert!(ok, "not all 10,000 requests counted");
    let routes: std::collections::BTreeSet<String> = samples
        .iter()
        .filter(|(n, _, _)| n == "http_server_request_duration_seconds_count")
        .map(|(_, l, _)| l["http_route"].clone())
        .collect();
    assert!(routes.contains("/users/{id}"), "{routes:?}");
    assert!(routes.contains("/**"), "overflow route");
    // The cap (100) and the overflow route.
    assert_eq!(routes.len(), 101, "{routes:?}");
    let count = |route: &str| -> u64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == "http_server_request_duration_seconds_count" && l["http_route"] == route
            })
            .map(|(_, _, v)| *v as u64)
            .sum()
    };
    assert_eq!(count("/users/{id}"), 5_000);
    assert_eq!(
        count("/**"),
        5_000 - 99,
        "100 routes max: /users/{{id}} and 99 words"
    );
    d.stop_ok();
}
