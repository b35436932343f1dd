//! The direct encoder against the generated OTLP types: every field decoded and checked, the
//! whole request compared with what the opentelemetry SDK's conversion made of the same spans,
//! and (ignored, print only) the cost per span of both.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Array, KeyValue, StringValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::{
    tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, ArrayValue, any_value},
        trace::v1::{ResourceSpans, Span, status::StatusCode},
    },
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message as _;

use super::*;
use crate::resource::resource_for;

fn process(pid: u32, name: &str, extra: &[(&str, &str)]) -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        pid,
        exe_path: format!("/usr/bin/{name}"),
        exe_name: name.to_owned(),
        service_name: name.to_owned(),
        service_namespace: None,
        instance_id: format!("host-{pid}"),
        host_name: "host".to_owned(),
        extra_resource: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// A string attribute as the span builder makes it (shared `Arc<str>`).
fn shared(key: &'static str, v: &str) -> KeyValue {
    KeyValue::new(key, Value::String(Arc::<str>::from(v).into()))
}

fn global() -> GlobalResource {
    GlobalResource {
        attributes: vec![
            ("deployment.environment".to_owned(), "test".to_owned()),
            // Overrides the detected host name, in its place.
            ("host.name".to_owned(), "override".to_owned()),
            // Never overrides the process's own service name.
            ("service.name".to_owned(), "ignored".to_owned()),
        ],
    }
}

/// Two processes, interleaved: server and client spans, root, local and remote parents, an
/// error, every attribute value kind, a timestamp at the epoch (omitted on the wire).
fn batch() -> Vec<SpanRecord> {
    let a = process(10, "api", &[]);
    let b = process(
        20,
        "db",
        &[("k8s.pod.name", "db-0"), ("host.name", "pod-host")],
    );
    vec![
        SpanRecord {
            process: a.clone(),
            kind: SpanKind::Server,
            name: "GET /users/{id}".into(),
            trace_id: TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128),
            span_id: SpanId::from(0x1112_1314_1516_1718_u64),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            start: at(1_700_000_000_000_000_001),
            end: at(1_700_000_000_250_000_000),
            attributes: vec![
                shared("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("test.negative", -5_i64),
                KeyValue::new("beyla.partial", true),
                KeyValue::new("test.false", false),
                KeyValue::new("test.double", 1.5_f64),
                KeyValue::new("test.empty", ""),
                KeyValue::new("test.static", "static str"),
                KeyValue::new(
                    "test.strings",
                    Value::Array(Array::String(vec![
                        StringValue::from("a"),
                        StringValue::from(""),
                    ])),
                ),
                KeyValue::new("test.ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            ],
            error: false,
        },
        SpanRecord {
            process: b.clone(),
            kind: SpanKind::Server,
            name: "/db.Store/Get".into(),
            trace_id: TraceId::from(0xaa_u128),
            span_id: SpanId::from(0xbb_u64),
            parent_span_id: SpanId::from(0xcc_u64),
            parent_is_remote: true,
            start: at(2_000),
            end: at(3_000),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.grpc.status_code", 0_i64),
            ],
            error: false,
        },
        SpanRecord {
            process: a.clone(),
            kind: SpanKind::Client,
            name: "GET".into(),
            trace_id: TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128),
            span_id: SpanId::from(0x2122_2324_2526_2728_u64),
            parent_span_id: SpanId::from(0x1112_1314_1516_1718_u64),
            parent_is_remote: false,
            start: at(1_700_000_000_100_000_000),
            end: at(1_700_000_000_200_000_000),
            attributes: vec![
                shared("url.full", "http://db:8080/x?token=REDACTED"),
                KeyValue::new("http.response.status_code", 503_i64),
            ],
            error: true,
        },
        SpanRecord {
            process: a,
            kind: SpanKind::Internal,
            name: "".into(),
            trace_id: TraceId::from(u128::MAX),
            span_id: SpanId::from(u64::MAX),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            start: UNIX_EPOCH,
            end: at(1),
            attributes: vec![],
            error: true,
        },
    ]
}

fn encode(batch: &mut [SpanRecord]) -> ExportTraceServiceRequest {
    let mut encoder = Encoder::new();
    let mut resources = Resources::new();
    encode_batch(&mut encoder, &mut resources, &global(), batch);
    assert_eq!(encoder.span_count(), batch.len());
    match ExportTraceServiceRequest::decode(encoder.bytes()) {
        Ok(r) => r,
        Err(e) => panic!("our request does not decode: {e}"),
    }
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_owned())),
    })
}

fn i(v: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    })
}

fn b(v: bool) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::BoolValue(v)),
    })
}

fn attrs(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> Vec<(&str, Option<AnyValue>)> {
    kvs.iter()
        .map(|kv| {
            assert_eq!(kv.key_strindex, 0);
            (kv.key.as_str(), kv.value.clone())
        })
        .collect()
}

fn assert_plain(sp: &Span) {
    assert_eq!(sp.trace_state, "");
    assert_eq!(sp.dropped_attributes_count, 0);
    assert!(sp.events.is_empty());
    assert_eq!(sp.dropped_events_count, 0);
    assert!(sp.links.is_empty());
    assert_eq!(sp.dropped_links_count, 0);
}

#[test]
fn every_field_decodes_as_written() {
    let req = encode(&mut batch());
    assert_eq!(req.resource_spans.len(), 2, "one ResourceSpans per process");

    // Process 10 (first by pid), its three spans in their original order.
    let rs = &req.resource_spans[0];
    assert_eq!(rs.schema_url, "");
    let res = rs.resource.as_ref().expect("resource");
    assert_eq!(res.dropped_attributes_count, 0);
    assert!(res.entity_refs.is_empty());
    assert_eq!(
        attrs(&res.attributes),
        vec![
            ("service.name", s("api")),
            ("service.instance.id", s("host-10")),
            ("host.name", s("override")),
            ("process.pid", i(10)),
            ("process.executable.name", s("api")),
            ("process.executable.path", s("/usr/bin/api")),
            ("telemetry.sdk.name", s("beyla-rs")),
            ("telemetry.sdk.version", s(env!("CARGO_PKG_VERSION"))),
            ("telemetry.distro.name", s("beyla-rs")),
            ("deployment.environment", s("test")),
        ]
    );
    assert_eq!(rs.scope_spans.len(), 1);
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.schema_url, "");
    let scope = ss.scope.as_ref().expect("scope");
    assert_eq!(scope.name, "beyla-rs");
    assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    assert!(scope.attributes.is_empty());
    assert_eq!(scope.dropped_attributes_count, 0);
    assert_eq!(ss.spans.len(), 3);

    let server = &ss.spans[0];
    assert_plain(server);
    assert_eq!(
        server.trace_id,
        (1..=16).collect::<Vec<u8>>(),
        "trace id, big-endian"
    );
    assert_eq!(server.span_id, (0x11..=0x18).collect::<Vec<u8>>());
    assert!(server.parent_span_id.is_empty(), "root: no parent bytes");
    assert_eq!(server.flags, 0x101, "sampled | has-is-remote");
    assert_eq!(server.name, "GET /users/{id}");
    assert_eq!(server.kind, 2);
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_000_001);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_250_000_000);
    let status = server.status.as_ref().expect("status is always present");
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Unset as i32, "")
    );
    let array = |values: Vec<Option<AnyValue>>| {
        Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: values.into_iter().flatten().collect(),
            })),
        })
    };
    assert_eq!(
        attrs(&server.attributes),
        vec![
            ("http.request.method", s("GET")),
            ("http.response.status_code", i(200)),
            ("test.negative", i(-5)),
            ("beyla.partial", b(true)),
            ("test.false", b(false)),
            (
                "test.double",
                Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(1.5)),
                })
            ),
            ("test.empty", s("")),
            ("test.static", s("static str")),
            ("test.strings", array(vec![s("a"), s("")])),
            ("test.ints", array(vec![i(1), i(-1), i(0)])),
        ]
    );

    let client = &ss.spans[1];
    assert_plain(client);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.span_id, (0x21..=0x28).collect::<Vec<u8>>());
    assert_eq!(client.parent_span_id, server.span_id, "local parent");
    assert_eq!(client.flags, 0x101, "local parent: not remote");
    assert_eq!((client.name.as_str(), client.kind), ("GET", 3));
    assert_eq!(client.start_time_unix_nano, 1_700_000_000_100_000_000);
    assert_eq!(client.end_time_unix_nano, 1_700_000_000_200_000_000);
    let status = client.status.as_ref().expect("status");
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "")
    );
    assert_eq!(
        attrs(&client.attributes),
        vec![
            ("url.full", s("http://db:8080/x?token=REDACTED")),
            ("http.response.status_code", i(503)),
        ]
    );

    let internal = &ss.spans[2];
    assert_plain(internal);
    assert_eq!(internal.trace_id, vec![0xff; 16]);
    assert_eq!(internal.span_id, vec![0xff; 8]);
    assert!(internal.parent_span_id.is_empty());
    assert_eq!((internal.name.as_str(), internal.kind), ("", 1));
    assert_eq!(
        internal.start_time_unix_nano, 0,
        "at the epoch: omitted, reads 0"
    );
    assert_eq!(internal.end_time_unix_nano, 1);
    assert!(internal.attributes.is_empty());
    assert_eq!(
        internal.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    // Process 20: its own attributes, a later duplicate replacing in place.
    let rs = &req.resource_spans[1];
    let res = rs.resource.as_ref().expect("resource");
    assert_eq!(
        attrs(&res.attributes),
        vec![
            ("service.name", s("db")),
            ("service.instance.id", s("host-20")),
            ("host.name", s("pod-host")),
            ("process.pid", i(20)),
            ("process.executable.name", s("db")),
            ("process.executable.path", s("/usr/bin/db")),
            ("telemetry.sdk.name", s("beyla-rs")),
            ("telemetry.sdk.version", s(env!("CARGO_PKG_VERSION"))),
            ("telemetry.distro.name", s("beyla-rs")),
            ("deployment.environment", s("test")),
            ("k8s.pod.name", s("db-0")),
        ]
    );
    assert_eq!(rs.scope_spans.len(), 1);
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    let remote = &spans[0];
    assert_plain(remote);
    let mut trace_id = vec![0; 16];
    trace_id[15] = 0xaa;
    assert_eq!(remote.trace_id, trace_id);
    assert_eq!(remote.span_id, vec![0, 0, 0, 0, 0, 0, 0, 0xbb]);
    assert_eq!(remote.parent_span_id, vec![0, 0, 0, 0, 0, 0, 0, 0xcc]);
    assert_eq!(remote.flags, 0x301, "sampled | has-is-remote | is-remote");
    assert_eq!((remote.name.as_str(), remote.kind), ("/db.Store/Get", 2));
    assert_eq!(
        (remote.start_time_unix_nano, remote.end_time_unix_nano),
        (2_000, 3_000)
    );
    assert_eq!(
        remote.status.as_ref().map(|s| s.code),
        Some(StatusCode::Unset as i32)
    );
    assert_eq!(
        attrs(&remote.attributes),
        vec![("rpc.system", s("grpc")), ("rpc.grpc.status_code", i(0))]
    );
}

#[test]
fn encoder_is_reusable_and_resources_follow_process_changes() {
    let mut encoder = Encoder::new();
    let mut resources = Resources::new();
    let mut first = batch();
    encode_batch(&mut encoder, &mut resources, &global(), &mut first);
    let first_bytes = encoder.bytes().to_vec();
    // The same batch again: identical bytes, nothing left over from the first request.
    encode_batch(&mut encoder, &mut resources, &global(), &mut batch());
    assert_eq!(encoder.bytes(), &first_bytes[..]);

    // pid 10 exec'd into another program: its resource is rebuilt.
    let mut span = batch().swap_remove(0);
    span.process = process(10, "worker", &[]);
    encode_batch(
        &mut encoder,
        &mut resources,
        &global(),
        std::slice::from_mut(&mut span),
    );
    let req = ExportTraceServiceRequest::decode(encoder.bytes()).expect("decodes");
    assert_eq!(req.resource_spans.len(), 1);
    let res = req.resource_spans[0].resource.as_ref().expect("resource");
    assert_eq!(res.attributes[0].value, s("worker"));

    encoder.clear();
    assert!(encoder.bytes().is_empty());
    assert_eq!(encoder.span_count(), 0);
    encoder.push_group(&resources[&10].1, &[]);
    assert!(encoder.bytes().is_empty(), "an empty group writes nothing");
}

/// The trace path before this encoder: `SpanRecord` → SDK `SpanData` → opentelemetry-proto.
fn to_span_data(s: &SpanRecord, scope: &opentelemetry::InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            s.trace_id,
            s.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: s.parent_span_id,
        parent_span_is_remote: s.parent_is_remote,
        span_kind: s.kind.clone(),
        name: s.name.as_str().to_owned().into(),
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes.clone(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if s.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

fn sdk_scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("beyla-rs")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// What the SDK sent for one process's spans (one request each, as the old loop did).
fn sdk_resource_spans(
    spans: &[SpanRecord],
    global: &GlobalResource,
    scope: &opentelemetry::InstrumentationScope,
) -> Vec<ResourceSpans> {
    let resource = resource_for(&spans[0].process, global);
    let data = spans.iter().map(|s| to_span_data(s, scope)).collect();
    group_spans_by_resource_and_scope(data, &ResourceAttributesWithSchema::from(&resource))
}

#[test]
fn same_request_as_the_sdk_conversion() {
    let global = global();
    let scope = sdk_scope();
    let mut spans = batch();
    let mut ours = encode(&mut spans);
    // `encode` sorted `spans` by process.
    let mut sdk = ExportTraceServiceRequest {
        resource_spans: spans
            .chunk_by(|a, b| a.process.pid == b.process.pid)
            .flat_map(|g| sdk_resource_spans(g, &global, &scope))
            .collect(),
    };
    // The SDK's resource is a hash map: its attribute order is arbitrary.
    for req in [&mut ours, &mut sdk] {
        for rs in &mut req.resource_spans {
            if let Some(r) = &mut rs.resource {
                r.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
    }
    assert_eq!(ours, sdk);
}

/// A typical HTTP server span as the span builder makes it.
fn http_server_span(process: &Arc<ProcessInfo>, n: u64) -> SpanRecord {
    SpanRecord {
        process: process.clone(),
        kind: SpanKind::Server,
        name: "GET /users/{id}".into(),
        trace_id: TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128 + u128::from(n)),
        span_id: SpanId::from(0x00f0_67aa_0ba9_02b7 + n),
        parent_span_id: SpanId::from(0x1234_5678_9abc_def0 + n),
        parent_is_remote: true,
        start: at(1_700_000_000_000_000_000 + n * 1_000),
        end: at(1_700_000_000_000_500_000 + n * 1_000),
        attributes: vec![
            shared("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 200_i64),
            shared("url.path", "/users/12345"),
            shared("url.scheme", "http"),
            KeyValue::new("http.request.body.size", 0_i64),
            KeyValue::new("http.response.body.size", 612_i64),
            shared("server.address", "api.example.internal"),
            KeyValue::new("server.port", 8080_i64),
            shared("client.address", "10.1.2.3"),
        ],
        error: false,
    }
}

/// `cargo test --release -p beyla-rs --lib encode_cost -- --ignored --nocapture`
#[test]
#[ignore = "measurement, prints only"]
fn encode_cost_per_span() {
    const SPANS: usize = 1024;
    const ROUNDS: u32 = 200;
    let global = GlobalResource::default();
    let p = process(4242, "api", &[]);
    let spans: Vec<SpanRecord> = (0..SPANS as u64).map(|n| http_server_span(&p, n)).collect();
    let scope = sdk_scope();
    let resource = resource_for(&p, &global);
    let resource = ResourceAttributesWithSchema::from(&resource);

    let per_span = |d: Duration| d.as_nanos() as f64 / f64::from(ROUNDS) / SPANS as f64;
    let mut sdk_bytes = 0;
    let sdk = {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            let data = spans.iter().map(|s| to_span_data(s, &scope)).collect();
            let req = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(data, &resource),
            };
            sdk_bytes = std::hint::black_box(req.encode_to_vec()).len();
        }
        per_span(t.elapsed())
    };
    let mut encoder = Encoder::new();
    let mut resources = Resources::new();
    let mut batch = spans.clone();
    let direct = {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            encode_batch(&mut encoder, &mut resources, &global, &mut batch);
            std::hint::black_box(encoder.bytes());
        }
        per_span(t.elapsed())
    };
    assert_eq!(encoder.bytes().len(), sdk_bytes, "same request size");
    eprintln!(
        "[measured] OTLP encode of {SPANS} HTTP server spans (9 attributes): \
         SDK path (SpanData + opentelemetry-proto + prost) {sdk:.0} ns/span, \
         direct encoder {direct:.0} ns/span ({:.1}x), {} bytes/span",
        sdk / direct,
        sdk_bytes / SPANS
    );
}
