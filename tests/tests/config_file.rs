//! The configuration file: the example file of the README (`packaging/beyla-rs.example.yaml`)
//! run by the daemon against real servers — two services named by their discovery entries, an
//! excluded process and a default-excluded one on selected ports, an ignored route, a route
//! pattern, and `attributes.select` on the Prometheus endpoint — and bad files refused at
//! start-up with exit 2 naming file, line and key.
//!
//! `cargo test -p beyla-rs-tests --test config_file -- --test-threads=1` (root for the first).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::exposition::{self, Sample};
use beyla_rs_tests::fixtures;
use beyla_rs_tests::otlp::OtlpReceiver;
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, quiet, require_root, settle, span_timeout, wait_until};

fn example_path() -> PathBuf {
    beyla_rs_tests::workspace_root().join("packaging/beyla-rs.example.yaml")
}

fn example() -> String {
    std::fs::read_to_string(example_path()).expect("packaging/beyla-rs.example.yaml")
}

#[test]
fn the_example_file_names_services_excludes_and_selects_attributes() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let (checkout_port, payments_port, sidecar_port, alloy_port, prom_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );

    // The README's file, with this run's ports and receiver.
    let text = example()
        .replace(
            "8090-8099",
            &format!("{payments_port},{sidecar_port},{alloy_port}"),
        )
        .replace("8080", &checkout_port.to_string())
        .replace("127.0.0.1:4318", &format!("127.0.0.1:{}", rx.port()))
        .replace("9400", &prom_port.to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beyla-rs.yaml");
    std::fs::write(&file, &text).unwrap();

    let checkout = fixtures::python(checkout_port);
    let payments = fixtures::python(payments_port);
    // The same Go server under the names the exclusions match.
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy(fixtures::go_server_bin(), &p).unwrap();
        p
    };
    let mut sidecar_cmd = Command::new(copy("sidecar"));
    sidecar_cmd.args(["-port", &sidecar_port.to_string()]);
    let sidecar = fixtures::spawn_server("sidecar", sidecar_cmd, sidecar_port, None);
    let mut alloy_cmd = Command::new(copy("alloy"));
    alloy_cmd.args(["-port", &alloy_port.to_string()]);
    let alloy = fixtures::spawn_server("alloy", alloy_cmd, alloy_port, None);

    let d = Daemon::builder()
        .arg("--config")
        .arg(file.to_str().unwrap())
        .start();
    std::thread::sleep(settle());

    let orders: Vec<Request> = (17..22)
        .map(|i| Request::get(&format!("/orders/{i}")))
        .collect();
    let health = vec![Request::get("/health"); 4];
    let hello = vec![Request::get("/hello"); 3];
    for (port, reqs) in [
        (checkout_port, &orders),
        (checkout_port, &health),
        (payments_port, &hello),
        (sidecar_port, &hello),
        (alloy_port, &hello),
    ] {
        let got = rawhttp::keepalive(port, reqs);
        assert_eq!(got.len(), reqs.len(), "answers from port {port}");
    }

    // Spans: 5 checkout, 3 payments; nothing from /health, the sidecar or Alloy.
    let spans = rx.wait_for_exact_spans(|s| s.is_server(), 8, span_timeout(), quiet());
    let of = |name: &str| -> Vec<_> {
        spans
            .iter()
            .filter(|s| s.service_name() == Some(name))
            .collect()
    };
    let checkout_spans = of("checkout");
    assert_eq!(checkout_spans.len(), 5, "{spans:#?}");
    for s in &checkout_spans {
        assert_eq!(s.name, "GET /orders/{id}");
        assert_eq!(s.attr_str("http.route"), Some("/orders/{id}"));
        assert_eq!(s.res_str("service.namespace"), Some("shop"));
        assert_eq!(s.pid(), Some(checkout.pid()));
    }
    let payments_spans = of("payments");
    assert_eq!(payments_spans.len(), 3, "{spans:#?}");
    assert!(
        payments_spans
            .iter()
            .all(|s| s.pid() == Some(payments.pid())
                && s.res_str("service.namespace") == Some("shop"))
    );
    for pid in [sidecar.pid(), alloy.pid()] {
        assert!(
            spans.iter().all(|s| s.pid() != Some(pid)),
            "excluded pid {pid} has spans"
        );
    }
    assert!(
        d.logs().contains("as \"checkout\""),
        "start-up line names the services:\n{}",
        d.logs()
    );

    // Metrics: `include: ["*"]` adds client.address and server.port to the server duration,
    // `exclude: [url.path]` keeps the path out; the body sizes keep their defaults.
    let mut samples = Vec::new();
    let count_of = |samples: &[Sample], svc: &str| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == "http_server_request_duration_seconds_count"
                    && s.labels.get("service_name").map(String::as_str) == Some(svc)
            })
            .map(|s| s.value)
            .sum()
    };
    let ok = wait_until(Duration::from_secs(15), || {
        let r = rawhttp::keepalive(prom_port, &[Request::get("/metrics")]);
        samples =
            exposition::parse(&r[0].body_str()).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        count_of(&samples, "checkout") >= 5.0 && count_of(&samples, "payments") >= 3.0
    });
    assert!(ok, "metrics never counted 5 + 3: {samples:?}");
    assert_eq!(count_of(&samples, "checkout"), 5.0);
    assert_eq!(count_of(&samples, "payments"), 3.0);
    for Sample {
        name, labels: l, ..
    } in &samples
    {
        if !name.starts_with("http_server_") {
            continue;
        }
        assert_ne!(
            l.get("http_route").map(String::as_str),
            Some("/health"),
            "{name} {l:?}"
        );
        assert!(!l.contains_key("url_path"), "{name} {l:?}");
        let svc = l.get("service_name").map(String::as_str);
        assert!(matches!(svc, Some("checkout" | "payments")), "{name} {l:?}");
        let selected = name.starts_with("http_server_request_duration_seconds");
        assert_eq!(
            l.contains_key("client_address") && l.contains_key("server_port"),
            selected,
            "{name} {l:?}"
        );
    }
    // The ignored requests are counted, not lost silently.
    let exit = d.stop();
    exit.assert_success();
    assert!(
        exit.stderr.contains(" spans_ignored=4"),
        "4 ignored /health requests counted:\n{}",
        exit.stderr
    );
}

/// Run the daemon on a file and return (exit code, stderr); it must exit by itself.
fn run_on(text: &str, env: &[(&str, &str)], extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(daemon::daemon_bin());
    cmd.arg("--config").arg(&file).args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("BEYLA_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(file.to_str().unwrap(), "FILE");
    (
        out.status.code().unwrap_or(-1),
        stderr,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn bad_files_exit_2_naming_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "open_port: 80\notel_trace_export:\n  endpoint: http://c:4318\n",
            "FILE:2: otel_trace_export: unknown key \"otel_trace_export\"; did you mean \"otel_traces_export\"?",
        ),
        (
            "open_port: 80\nebpf:\n  capture_bytes: 9999\n",
            "FILE:3: ebpf.capture_bytes: invalid value \"9999\" (BEYLA_CAPTURE_BYTES): must be between 64 and 4096",
        ),
        (
            "discovery:\n  instrument:\n    - open_ports: 80\n    - open_ports: 9-3\n",
            "FILE:4: discovery.instrument[1].open_ports: invalid value \"9-3\": range \"9-3\" is reversed (start above end)",
        ),
        (
            "open_port: 80\nlog_level: [debug]\n",
            "FILE:2: log_level: expected a value, found a list",
        ),
        (
            "open_port: 80\nprometheus_export:\n  port: 9400\n  buckets:\n    duration_histogram: [1, 0.5]\n",
            "FILE:5: prometheus_export.buckets.duration_histogram[1]: bounds must be strictly increasing",
        ),
        (
            "open_port: 80\nopen_port: 81\n",
            "FILE:2: (file): key \"open_port\" appears twice",
        ),
        ("log_level: info\n", "no process is selected"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        let (code, stderr, _) = run_on(text, &[], &[]);
        if code != 2 || !stderr.contains(want) {
            failures.push(format!(
                "{text:?}: exit {code}, stderr:\n{stderr}\nwanted: {want}"
            ));
        }
    }
    // The environment overrides a bad file value; a bad environment value names the variable.
    let (code, stderr, _) = run_on(
        "open_port: 80\nebpf: {capture_backend: ebpf}\n",
        &[("BEYLA_CAPTURE_BACKEND", "syscall")],
        &["--print-config"],
    );
    if code != 0 || !stderr.is_empty() {
        failures.push(format!("env override: exit {code}: {stderr}"));
    }
    let (code, stderr, _) = run_on("open_port: 80\n", &[("BEYLA_LOG_LEVEL", "loud")], &[]);
    if code != 2 || !stderr.contains("invalid BEYLA_LOG_LEVEL=\"loud\"") {
        failures.push(format!("bad env: exit {code}: {stderr}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn print_config_shows_the_effective_configuration_with_secrets_masked() {
    let text = format!(
        "{}\notel_metrics_export:\n  endpoint: http://127.0.0.1:4317\n  headers:\n    Authorization: \"Bearer s3cret\"\n",
        example()
    );
    let (code, stderr, stdout) = run_on(
        &text,
        &[
            ("BEYLA_LOG_LEVEL", "debug"),
            ("BEYLA_CAPTURE_BACKEND", "kprobe"),
        ],
        &["--print-config"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    for want in [
        "log_level: \"debug\"",
        "capture_backend: \"kprobe\"",
        "- open_ports: \"8080\"\n      name: \"checkout\"\n      namespace: \"shop\"",
        "- exe_path: \"*/sidecar\"",
        "- exe_path: \"*alloy\"",
        "endpoint: \"http://127.0.0.1:4318/v1/traces\"",
        "endpoint: \"http://127.0.0.1:4317\"",
        "\"Authorization\": \"***\"",
        "ignored_patterns: [\"/health\"]",
        "port: 9400",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
}

#[test]
fn the_readme_shows_the_example_file() {
    let readme =
        std::fs::read_to_string(beyla_rs_tests::workspace_root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{}```", example())),
        "README.md must show packaging/beyla-rs.example.yaml verbatim in a yaml block"
    );
}

#[test]
fn the_nixos_modules_golden_settings_file_is_accepted() {
    // What `services.beyla-rs.settings` renders in the NixOS golden test: the daemon must take
    // every key of it.
    let path = beyla_rs_tests::workspace_root().join("nix/tests/golden/beyla-rs/settings.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (code, stderr, stdout) = run_on(&text, &[], &["--print-config"]);
    assert_eq!(code, 0, "{}: {stderr}", path.display());
    assert!(stdout.contains("name: \"checkout\""), "{stdout}");
}
