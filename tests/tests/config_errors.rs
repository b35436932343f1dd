//! Issue 7, configuration: every environment variable of the README's configuration table (and
//! the ones added since) with invalid values makes the daemon exit 2 at start-up with a
//! message naming the variable and the bad value. Configuration is checked before any
//! privilege or BPF work, so these cases need neither root nor the kernel; a value that is
//! wrongly accepted would start the daemon, which is then killed and reported.
//!
//! `cargo test -p beyla-rs-tests --test config_errors`.

use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon};

/// (variable, bad value, other variables the case needs).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const EP: &[(&str, &str)] = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
const NONE: &[(&str, &str)] = &[];

const CASES: &[Case] = &[
    ("BEYLA_OPEN_PORT", "9-3", NONE),
    ("BEYLA_OPEN_PORT", "abc", NONE),
    ("BEYLA_OPEN_PORT", "70000", NONE),
    ("BEYLA_OPEN_PORT", "0", NONE),
    ("BEYLA_OPEN_PORT", "80,,81", NONE),
    ("BEYLA_OPEN_PORT", "80;81", NONE),
    ("BEYLA_AUTO_TARGET_EXE", "[unclosed", NONE),
    ("OTEL_GO_AUTO_TARGET_EXE", "[unclosed", NONE),
    ("BEYLA_EXECUTABLE_NAME", "(unclosed", NONE),
    ("BEYLA_TARGET_PID", "abc", NONE),
    ("BEYLA_TARGET_PID", "0", NONE),
    ("BEYLA_TARGET_PID", "-1", NONE),
    ("BEYLA_TARGET_PID", "99999999999", NONE),
    ("OTEL_RESOURCE_ATTRIBUTES", "novalue", NONE),
    ("OTEL_RESOURCE_ATTRIBUTES", "=x", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://127.0.0.1:4318", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:99999", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:port", NONE),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a b:4318", NONE),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "localhost", NONE),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://[::1:4318/v1/traces",
        NONE,
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp", EP),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http", EP),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", EP),
    ("OTEL_EXPORTER_OTLP_HEADERS", "=v", EP),
    ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v", EP),
    ("OTEL_EXPORTER_OTLP_HEADERS", "k=line%0Abreak", EP),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue", EP),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", EP),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1", EP),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", EP),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10 s", EP),
    ("OTEL_BSP_SCHEDULE_DELAY", "abc", EP),
    ("OTEL_BSP_SCHEDULE_DELAY", "-5", EP),
    ("OTEL_BSP_SCHEDULE_DELAY", "0", EP),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0", EP),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "x", EP),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0", EP),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", EP),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999", EP),
    ("BEYLA_QUEUE_SIZE", "lots", EP),
    ("BEYLA_TRACE_PRINTER", "xml", NONE),
    ("BEYLA_LOG_LEVEL", "loud", NONE),
    ("BEYLA_CAPTURE_BYTES", "63", NONE),
    ("BEYLA_CAPTURE_BYTES", "4097", NONE),
    ("BEYLA_CAPTURE_BYTES", "1k", NONE),
    ("BEYLA_RINGBUF_SIZE", "65535", NONE),
    ("BEYLA_RINGBUF_SIZE", "100000", NONE),
    ("BEYLA_RINGBUF_SIZE", "32768", NONE),
    ("BEYLA_RINGBUF_SIZE", "4M", NONE),
    ("BEYLA_ENFORCE_SYS_CAPS", "maybe", NONE),
    ("BEYLA_CAPTURE_BACKEND", "ebpf", NONE),
    // Added after the README's first table (traces/metrics/sampling/routes).
    ("OTEL_TRACES_EXPORTER", "zipkin", NONE),
    ("BEYLA_TRACES_ENABLED", "perhaps", NONE),
    ("OTEL_TRACES_SAMPLER", "sometimes", NONE),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "1.5",
        &[("OTEL_TRACES_SAMPLER", "traceidratio")],
    ),
    ("BEYLA_ROUTES_PATTERNS", "users/{id}", NONE),
    ("BEYLA_ROUTES_MAX", "0", NONE),
    ("OTEL_METRICS_EXPORTER", "statsd", NONE),
    ("BEYLA_METRICS_INTERVAL", "soon", EP),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-1", EP),
    ("BEYLA_PROMETHEUS_PORT", "70000", NONE),
    (
        "BEYLA_PROMETHEUS_ADDRESS",
        "localhost:9",
        &[("BEYLA_PROMETHEUS_PORT", "9400")],
    ),
    ("BEYLA_INTERNAL_METRICS_EXPORTER", "graphite", NONE),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "nowhere", NONE),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp", EP),
];

/// Free-text variables: no value is invalid (documented, not tested for rejection).
const FREE_TEXT: &[&str] = &["BEYLA_SERVICE_NAME", "OTEL_SERVICE_NAME"];

#[test]
fn every_invalid_value_is_rejected_with_exit_2_naming_the_variable() {
    daemon::daemon_bin();
    let _lock = beyla_rs_tests::global_lock();
    let mut failures = Vec::new();
    let t = Instant::now();
    for (var, value, extra) in CASES {
        let mut b = Daemon::builder().no_wait().env("BEYLA_LOG_LEVEL", "info");
        if *var != "BEYLA_OPEN_PORT" {
            b = b.open_port("18080");
        }
        for (k, v) in *extra {
            b = b.env(*k, *v);
        }
        let mut d = b.env(*var, *value).start();
        let started = Instant::now();
        while d.is_running() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if d.is_running() {
            let exit = d.stop();
            failures.push(format!(
                "{var}={value:?} was accepted (the daemon started):\n    {}",
                exit.stderr
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
            continue;
        }
        let exit = d.stop();
        let code = exit.status.code();
        let msg = exit.stderr.trim().to_string();
        if code != Some(2) {
            failures.push(format!("{var}={value:?}: exit {code:?} (want 2): {msg}"));
        } else if !msg.contains(var) {
            failures.push(format!("{var}={value:?}: message does not name it: {msg}"));
        } else if !msg
            .lines()
            .next()
            .is_some_and(|l| l.contains(var) && l.contains(value.trim()))
        {
            failures.push(format!(
                "{var}={value:?}: the first line does not name the variable and value: {msg}"
            ));
        }
    }
    eprintln!(
        "[measured] configuration: {} invalid values over {} variables checked in {:.1?}; \
         {} failures; free-text (no invalid value): {FREE_TEXT:?}",
        CASES.len(),
        CASES
            .iter()
            .map(|c| c.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        t.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} invalid values were not rejected properly:\n  {}",
        failures.len(),
        CASES.len(),
        failures.join("\n  ")
    );
}

#[test]
fn nothing_selected_is_a_clear_error() {
    daemon::daemon_bin();
    let mut d = Daemon::builder().no_wait().start();
    let started = Instant::now();
    while d.is_running() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let exit = d.stop();
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("BEYLA_OPEN_PORT"),
        "the message says how to select something: {}",
        exit.stderr
    );
}
