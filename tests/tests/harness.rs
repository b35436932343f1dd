//! Self-tests of the harness that need no daemon (and no root, except `require_root_*`):
//! the OTLP receiver decodes real exports and injects faults, the fixtures start and answer,
//! the raw client and curl scenarios pass against every server, and the daemon wrapper
//! behaves (with a fake daemon script).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::fixtures::{self, Nginx, NginxOpts, ServerKind, ServerOpts};
use beyla_rs_tests::otlp::{self, AttrValue, Fault, OtlpReceiver, SpanKind, SpanStatus};
use beyla_rs_tests::rawhttp::{self, RawConn, Request};
use beyla_rs_tests::{free_port, procs, scenarios};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn panic_message(r: std::thread::Result<()>) -> String {
    match r {
        Ok(()) => panic!("expected a panic"),
        Err(e) => e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn one_span_request(name: &str, pid: i64) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", any_value::Value::StringValue("svc".into())),
                    kv("process.pid", any_value::Value::IntValue(pid)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: name.into(),
                    kind: 2,
                    start_time_unix_nano: 1_000,
                    end_time_unix_nano: 5_000,
                    attributes: vec![kv(
                        "http.response.status_code",
                        any_value::Value::IntValue(200),
                    )],
                    status: Some(Status {
                        code: 0,
                        message: String::new(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post(port: u16, path: &str, body: Vec<u8>, gzip: bool) -> rawhttp::Response {
    let mut req = Request::post(path, body).header("Content-Type", "application/x-protobuf");
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        if let rawhttp::Body::Fixed(b) = &req.body {
            enc.write_all(b).unwrap();
        }
        req = req
            .body(enc.finish().unwrap())
            .header("Content-Encoding", "gzip");
    }
    RawConn::connect(port).request(&req)
}

#[test]
fn receiver_decodes_python_sdk_export() {
    let rx = OtlpReceiver::start();
    for comp in ["none", "gzip"] {
        rx.clear();
        let out = Command::new(fixtures::python_exe())
            .arg(beyla_rs_tests::tests_dir().join("servers/otlp_export.py"))
            .arg(rx.traces_url())
            .arg(comp)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "otlp_export.py failed (run tests/setup.sh for the OpenTelemetry SDK): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spans = rx.wait_for_exact_spans(
            otlp::any_span,
            2,
            Duration::from_secs(10),
            Duration::from_millis(300),
        );
        rx.assert_no_errors();
        let srv = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
        let cli = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
        assert_eq!(srv.name, "GET /hello");
        assert_eq!(srv.method(), "GET");
        assert_eq!(srv.http_status(), 503);
        assert_eq!(srv.attr_str("url.path"), Some("/hello"));
        assert_eq!(srv.attr("flag"), Some(&AttrValue::Bool(true)));
        assert_eq!(srv.attr("ratio"), Some(&AttrValue::Double(0.5)));
        assert_eq!(
            srv.attr("tags"),
            Some(&AttrValue::Array(vec![
                AttrValue::Str("a".into()),
                AttrValue::Str("b".into())
            ]))
        );
        assert_eq!(srv.status_code, SpanStatus::Error);
        assert_eq!(srv.service_name(), Some("py-selftest"));
        assert_eq!(srv.pid(), Some(4242));
        assert!(srv.res_str("telemetry.sdk.name").is_some());
        assert_eq!(srv.scope_name, "selftest-scope");
        assert_eq!(srv.scope_version, "1.2.3");
        assert_eq!(srv.trace_id.len(), 32);
        assert_eq!(srv.span_id.len(), 16);
        assert!(srv.parent_span_id.is_empty());
        assert_eq!(cli.trace_id, srv.trace_id, "child shares the trace");
        assert_eq!(
            cli.parent_span_id, srv.span_id,
            "child's parent is the server span"
        );
        assert_eq!(cli.name, "GET");
        assert_eq!(cli.attr_int("server.port"), Some(1));
        assert!(srv.end_ns >= srv.start_ns && srv.start_ns > 0);
        beyla_rs_tests::expect::assert_times_sane(srv);
        let reqs = rx.requests();
        let gz = reqs
            .iter()
            .any(|r| r.header("content-encoding") == Some("gzip"));
        assert_eq!(gz, comp == "gzip", "content-encoding seen: {reqs:?}");
        rx.assert_no_secrets(&["hunter2"]);
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            rx.assert_no_secrets(&["selftest-scope"])
        })));
        assert!(msg.contains("selftest-scope"), "{msg}");
    }
}

#[test]
fn receiver_decodes_prost_gzip_metrics_and_rejects_bad_payloads() {
    let rx = OtlpReceiver::start();
    let body = one_span_request("GET /a", 7).encode_to_vec();
    assert_eq!(
        post(rx.port(), "/v1/traces", body.clone(), false).status,
        200
    );
    assert_eq!(post(rx.port(), "/v1/traces", body, true).status, 200);
    let spans = rx.wait_for_spans(|s| s.name == "GET /a", 2, Duration::from_secs(5));
    assert_eq!(spans[0].pid(), Some(7));
    assert_eq!(spans[1].request_index, 1);
    assert_eq!(rx.trace_request_count(), 2);
    assert_eq!(spans[0].duration(), Duration::from_nanos(4000));

    let m = ExportMetricsServiceRequest::default().encode_to_vec();
    assert_eq!(post(rx.port(), "/v1/metrics", m, true).status, 200);
    assert_eq!(
        rx.wait_for_metrics_requests(1, Duration::from_secs(5))
            .len(),
        1
    );
    rx.assert_no_errors();

    // Wrong content type, undecodable protobuf, unknown path, bad gzip, bad JSON.
    let r = RawConn::connect(rx.port())
        .request(&Request::post("/v1/traces", "{}").header("Content-Type", "text/plain"));
    assert_eq!(r.status, 415);
    let r = RawConn::connect(rx.port()).request(
        &Request::post("/v1/traces", "{\"resourceSpans\": 1}")
            .header("Content-Type", "application/json"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        post(rx.port(), "/v1/traces", vec![0xff, 0xff, 0xff], false).status,
        400
    );
    assert_eq!(post(rx.port(), "/v1/nope", vec![], false).status, 404);
    let r = RawConn::connect(rx.port()).request(
        &Request::post("/v1/traces", "notgzip")
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "gzip"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(rx.errors().len(), 5, "{:?}", rx.errors());
    assert_eq!(rx.spans().len(), 2);
}

#[test]
fn receiver_decodes_otlp_json_and_grpc() {
    let rx = OtlpReceiver::start();
    let json = serde_json::to_vec(&one_span_request("GET /json", 8)).unwrap();
    let r = RawConn::connect(rx.port())
        .request(&Request::post("/v1/traces", json).header("Content-Type", "application/json"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let s = &rx.wait_for_spans(|s| s.name == "GET /json", 1, Duration::from_secs(5))[0];
    assert_eq!(s.pid(), Some(8));
    assert_eq!(s.trace_id, "01".repeat(16));
    assert_eq!(s.attr_int("http.response.status_code"), Some(200));

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let endpoint = rx.start_grpc();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
        let mut req = tonic::Request::new(one_span_request("GET /grpc", 9));
        req.metadata_mut().insert("x-tenant", "t".parse().unwrap());
        client.export(req).await.unwrap();
    });
    let s = &rx.wait_for_spans(|s| s.name == "GET /grpc", 1, Duration::from_secs(5))[0];
    assert_eq!(s.pid(), Some(9));
    let reqs = rx.requests();
    let last = reqs.last().unwrap();
    assert_eq!(
        last.path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(last.header("x-tenant"), Some("t"));
    assert_eq!(rx.trace_request_count(), 2);
    rx.assert_no_errors();
}

#[test]
fn receiver_faults_delay_stop_restart() {
    let rx = OtlpReceiver::start();
    let body = one_span_request("GET /f", 1).encode_to_vec();
    rx.set_fault(Some(Fault::status(500).times(2)));
    assert_eq!(
        post(rx.port(), "/v1/traces", body.clone(), false).status,
        500
    );
    assert_eq!(
        post(rx.port(), "/v1/traces", body.clone(), false).status,
        500
    );
    assert_eq!(
        post(rx.port(), "/v1/traces", body.clone(), false).status,
        200
    );
    assert_eq!(rx.spans().len(), 1, "failed requests must not store spans");

    rx.set_fault(Some(Fault::status(429).retry_after(3)));
    let r = post(rx.port(), "/v1/traces", body.clone(), false);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    rx.set_fault(None);
    let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 200, 429]);

    rx.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(
        post(rx.port(), "/v1/traces", body.clone(), false).status,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    rx.set_delay(Duration::ZERO);

    // A connection kept open across stop() is reset; new connections are refused.
    let mut kept = RawConn::connect(rx.port());
    rx.stop();
    assert!(!beyla_rs_tests::port_accepts(rx.port()));
    let req = Request::post("/v1/traces", body.clone())
        .header("Content-Type", "application/x-protobuf")
        .to_bytes("x");
    // The write itself may already fail with ECONNRESET.
    let _ = kept.stream().write_all(&req);
    assert!(kept.read_until_close(Duration::from_secs(2)).is_empty());
    rx.restart();
    assert_eq!(post(rx.port(), "/v1/traces", body, false).status, 200);
    assert_eq!(rx.spans().len(), 3);
}

#[test]
fn receiver_exact_counts_detect_late_extra_spans() {
    let rx = OtlpReceiver::start();
    let port = rx.port();
    let body = one_span_request("GET /x", 1).encode_to_vec();
    post(port, "/v1/traces", body.clone(), false);
    // One more span arrives during the quiet period: the exact-count wait must fail.
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        post(port, "/v1/traces", body, false);
    });
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        rx.wait_for_exact_spans(
            otlp::any_span,
            1,
            Duration::from_secs(5),
            Duration::from_secs(2),
        );
    })));
    late.join().unwrap();
    assert!(
        msg.contains("expected exactly 1 matching spans, got 2"),
        "{msg}"
    );
    // And a timeout reports what did arrive.
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        rx.wait_for_spans(otlp::any_span, 5, Duration::from_millis(200));
    })));
    assert!(msg.contains("got 2") && msg.contains("GET /x"), "{msg}");
}

fn write_fake_daemon(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("fake-beyla-rs");
    std::fs::write(
        &p,
        "#!/bin/sh\n\
         echo \"starting ports=$BEYLA_OPEN_PORT endpoint=$OTEL_EXPORTER_OTLP_ENDPOINT \
         proto=$OTEL_EXPORTER_OTLP_PROTOCOL delay=$OTEL_BSP_SCHEDULE_DELAY extra=$FAKE_EXTRA\" >&2\n\
         case \"$FAKE_MODE\" in exit) echo 'fatal: boom' >&2; exit 3;; hang) exec sleep 30;; esac\n\
         trap 'echo flushed >&2; exit 0' TERM\n\
         echo 'span line'\n\
         echo 'INFO beyla-rs ready (1 process)' >&2\n\
         while :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn daemon_wrapper_with_fake_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write_fake_daemon(dir.path());
    let rx = OtlpReceiver::start();

    let mut d = Daemon::builder()
        .bin(&fake)
        .open_ports(&[8080, 9090])
        .otlp(&rx)
        .env("FAKE_EXTRA", "x1")
        .start();
    d.assert_running();
    assert!(d.wait_for_log("beyla-rs ready", Duration::from_secs(1)));
    let logs = d.logs();
    assert!(logs.contains("ports=8080,9090"), "{logs}");
    assert!(
        logs.contains(&format!("endpoint={}", rx.endpoint())),
        "{logs}"
    );
    assert!(
        logs.contains("proto=http/protobuf delay=200 extra=x1"),
        "{logs}"
    );
    let exit = d.stop_ok();
    assert!(exit.stderr.contains("flushed"), "{}", exit.stderr);
    assert_eq!(exit.stdout.trim(), "span line");

    let msg = panic_message(catch_unwind(|| {
        Daemon::builder()
            .bin(&fake)
            .env("FAKE_MODE", "exit")
            .start();
    }));
    assert!(
        msg.contains("exited with exit status: 3") && msg.contains("fatal: boom"),
        "{msg}"
    );

    let t = Instant::now();
    let msg = panic_message(catch_unwind(|| {
        Daemon::builder()
            .bin(&fake)
            .env("FAKE_MODE", "hang")
            .ready_timeout(Duration::from_secs(1))
            .start();
    }));
    assert!(
        msg.contains("did not log \"beyla-rs ready\" within 1s"),
        "{msg}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "drop must not wait for the hung child"
    );

    let msg = panic_message(catch_unwind(|| {
        daemon::check_daemon_bin(dir.path().join("nope"));
    }));
    assert!(
        msg.contains("binary missing") && msg.contains("cargo xtask build --release"),
        "{msg}"
    );
    assert!(
        daemon::daemon_bin_path().ends_with("target/release/beyla-rs")
            || std::env::var_os("BEYLA_RS_BIN").is_some()
    );
}

#[test]
fn require_root_passes_here() {
    // The suite runs as root (CI too); this checks the BPF probe and the lock work.
    let _g = beyla_rs_tests::require_root();
}

#[test]
fn free_ports_are_free_and_below_the_ephemeral_range() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    for p in &ports {
        assert!((20000..30000).contains(p));
        assert!(std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
    }
}

/// Every single-process fixture: routes, proxying (to a Python upstream), raw-client cases,
/// curl keep-alive, and non-HTTP garbage that must not kill it.
fn fixture_selftest(kind: ServerKind) {
    let up = fixtures::python(free_port());
    let port = free_port();
    let mut srv = fixtures::start(kind, port, &ServerOpts::default().upstream_port(up.port()));
    assert!(procs::alive(srv.pid()));
    let exp = scenarios::raw_cases(port);
    assert_eq!(exp.len(), 19);
    scenarios::curl_cases(port);

    let reqs = vec![
        Request::get("/proxy/hello?user=bob&password=hunter2"),
        Request::get("/proxy/status?respond=503"),
        Request::new("POST", "/proxy/echo").body("abc"),
        Request::get("/nope"),
    ];
    let r = rawhttp::keepalive(port, &reqs);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 503, 200, 404],
        "{r:?}"
    );
    assert_eq!(r[0].body_str(), "hello\n");
    assert_eq!(r[2].body_str(), "abc");

    for junk in [
        rawhttp::garbage(300),
        rawhttp::tls_client_hello(),
        rawhttp::REDIS_PING.to_vec(),
    ] {
        rawhttp::send_raw(port, &junk, Duration::from_secs(2));
    }
    assert!(srv.is_running(), "{} died on junk", kind.name());
    let r = RawConn::connect(port).request(&Request::get("/hello"));
    assert_eq!(r.status, 200);
}

#[test]
fn fixture_python() {
    fixture_selftest(ServerKind::Python);
}

#[test]
fn fixture_go() {
    fixture_selftest(ServerKind::Go);
}

#[test]
fn fixture_rust() {
    fixture_selftest(ServerKind::Rust);
}

#[test]
fn fixture_node() {
    fixture_selftest(ServerKind::Node);
}

#[test]
fn fixture_nginx_workers_mix_and_proxy() {
    let up = fixtures::python(free_port());
    let ng = Nginx::start(
        free_port(),
        &NginxOpts {
            upstream_port: Some(up.port()),
            workers: None,
        },
    );
    let workers = ng.worker_pids();
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(procs::ppid(*w), Some(ng.master_pid()));
        assert_eq!(procs::exe_name(*w).as_deref(), Some("nginx"));
    }
    let mix = scenarios::nginx_mix(ng.port(), up.port(), 200, 4);
    assert_eq!(mix.server.len(), 200);
    assert_eq!(mix.client.len(), 40);
    assert_eq!(mix.upstream.len(), 40);
    let ok = beyla_rs_tests::wait_until(Duration::from_secs(5), || {
        ng.access_log().lines().count() == 200
    });
    assert!(ok, "access log:\n{}", ng.access_log());
    for (path, status) in [("/status/204", 204), ("/status/304", 304), ("/nope", 404)] {
        let r = RawConn::connect(ng.port()).request(&Request::get(path));
        assert_eq!(r.status, status);
    }
    let r = RawConn::connect(ng.port()).request(&Request::post("/echo", "xyz"));
    assert_eq!((r.status, r.body_str().as_str()), (200, "xyz"));
    let err = ng.error_log();
    assert!(!err.contains("[emerg]") && !err.contains("[crit]"), "{err}");
}
