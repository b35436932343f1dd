//! OTLP trace export with opentelemetry-otlp, one resource per instrumented process.
//!
//! The SDK's exporter already retries a request with exponential backoff and honours
//! `Retry-After` (within `OTEL_EXPORTER_OTLP_TIMEOUT`). On top of that, a batch that still
//! fails is kept and retried with a growing pause while new spans wait in the bounded
//! [`Queue`]; the outage is logged when it starts, at most once a minute while it lasts, and
//! when it ends.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{
    KeyValue,
    trace::{SpanContext, Status, TraceFlags, TraceState},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use thiserror::Error;
use tokio::sync::watch;

use super::Queue;
use crate::{
    config::{OtlpConfig, OtlpProtocol},
    process::ProcessInfo,
    span::SpanRecord,
    stats::Stats,
};

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Build {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// How long a failing batch is retried before it is dropped (and counted).
const MAX_BATCH_RETRY: Duration = Duration::from_secs(300);
/// Longest pause between retries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Outage log lines: at most one per this interval.
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// `OTEL_EXPORTER_OTLP_HEADERS` as gRPC metadata (lower-case keys); pairs that do not make
/// valid metadata are skipped. Shared by the trace and metric exporters.
pub(crate) fn grpc_metadata(
    headers: &std::collections::HashMap<String, String>,
) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
            v.parse(),
        ) {
            metadata.insert(k, v);
        }
    }
    metadata
}

/// The opentelemetry-otlp protocol of an HTTP transport.
pub(crate) fn http_protocol(p: OtlpProtocol) -> opentelemetry_otlp::Protocol {
    if p == OtlpProtocol::HttpJson {
        opentelemetry_otlp::Protocol::HttpJson
    } else {
        opentelemetry_otlp::Protocol::HttpBinary
    }
}

pub fn build_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let headers: std::collections::HashMap<String, String> = cfg.headers.iter().cloned().collect();
    let err = |source| ExportError::Build {
        endpoint: cfg.traces_endpoint.clone(),
        source,
    };
    let retry = opentelemetry_otlp::RetryPolicy::recommended();
    match cfg.protocol {
        OtlpProtocol::Grpc => {
            let metadata = grpc_metadata(&headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.traces_endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata)
                .build()
                .map_err(err)
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let protocol = http_protocol(cfg.protocol);
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(cfg.traces_endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_headers(headers)
                .with_retry_policy(retry)
                .build()
                .map_err(err)
        }
    }
}

/// Resource attributes shared by every process (`OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Clone, Debug, Default)]
pub struct GlobalResource {
    pub attributes: Vec<(String, String)>,
}

pub fn resource_for(p: &ProcessInfo, global: &GlobalResource) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.name", p.service_name.clone()),
        KeyValue::new("service.instance.id", p.instance_id.clone()),
        KeyValue::new("host.name", p.host_name.clone()),
        KeyValue::new("process.pid", p.pid as i64),
        KeyValue::new("process.executable.name", p.exe_name.clone()),
        KeyValue::new("process.executable.path", p.exe_path.clone()),
        KeyValue::new("telemetry.sdk.name", "beyla-rs"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("telemetry.distro.name", "beyla-rs"),
    ];
    for (k, v) in global.attributes.iter().chain(p.extra_resource.iter()) {
        if k != "service.name" {
            attrs.push(KeyValue::new(k.clone(), v.clone()));
        }
    }
    Resource::builder_empty().with_attributes(attrs).build()
}

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
        name: s.name.clone().into(),
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

/// Rate-limited outage reporting.
struct Outage {
    since: Option<Instant>,
    last_log: Option<Instant>,
    failures: u64,
}

impl Outage {
    fn failed(&mut self, endpoint: &str, err: &str, queued: usize, stats: &Stats) {
        self.failures += 1;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.last_log.is_none_or(|t| now - t >= OUTAGE_LOG_INTERVAL) {
            self.last_log = Some(now);
            let s = stats.snapshot();
            log::warn!(
                "OTLP export to {endpoint} failing for {}s ({} failed requests): {err}; \
                 {queued} spans queued, {} dropped so far; capture continues",
                since.elapsed().as_secs(),
                self.failures,
                s.spans_dropped
            );
        }
    }

    fn recovered(&mut self, endpoint: &str) {
        if let Some(since) = self.since.take() {
            log::info!(
                "OTLP export to {endpoint} recovered after {}s ({} failed requests)",
                since.elapsed().as_secs(),
                self.failures
            );
        }
        self.failures = 0;
        self.last_log = None;
    }
}

/// The export task. Runs until `shutdown` flips to true, then flushes what is queued within
/// `flush_timeout` and returns.
pub async fn run(
    mut exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    queue: Arc<Queue>,
    global: GlobalResource,
    interval: Duration,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
    flush_timeout: Duration,
) {
    let scope = opentelemetry::InstrumentationScope::builder("beyla-rs")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut resources: HashMap<u32, (Arc<ProcessInfo>, Resource)> = HashMap::new();
    let mut outage = Outage {
        since: None,
        last_log: None,
        failures: 0,
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = queue.batch_ready() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                deadline = Some(tokio::time::Instant::now() + flush_timeout);
            }
        }
        loop {
            let batch = queue.take_batch();
            if batch.is_empty() {
                break;
            }
            // Group by process: each group is one request carrying that process's resource.
            let mut groups: Vec<(Arc<ProcessInfo>, Vec<SpanRecord>)> = Vec::new();
            for s in batch {
                match groups
                    .iter_mut()
                    .find(|(p, _)| Arc::ptr_eq(p, &s.process) || p.pid == s.process.pid)
                {
                    Some((_, v)) => v.push(s),
                    None => groups.push((s.process.clone(), vec![s])),
                }
            }
            for (process, spans) in groups {
                let entry = resources
                    .entry(process.pid)
                    .or_insert_with(|| (process.clone(), resource_for(&process, &global)));
                if !Arc::ptr_eq(&entry.0, &process) && *entry.0 != *process {
                    *entry = (process.clone(), resource_for(&process, &global));
                }
                exporter.set_resource(&entry.1);
                let started = Instant::now();
                let mut backoff = Duration::from_millis(500);
                loop {
                    let data: Vec<SpanData> =
                        spans.iter().map(|s| to_span_data(s, &scope)).collect();
                    let result = match deadline {
                        Some(d) => match tokio::time::timeout_at(d, exporter.export(data)).await {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err("flush timed out at shutdown".to_owned()),
                        },
                        None => exporter.export(data).await.map_err(|e| e.to_string()),
                    };
                    match result {
                        Ok(()) => {
                            Stats::add(&stats.spans_exported, spans.len() as u64);
                            outage.recovered(&endpoint);
                            break;
                        }
                        Err(e) => {
                            Stats::inc(&stats.export_errors);
                            outage.failed(&endpoint, &e, queue.len(), &stats);
                            let past_deadline =
                                deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                            if past_deadline || started.elapsed() >= MAX_BATCH_RETRY {
                                Stats::add(&stats.spans_dropped, spans.len() as u64);
                                break;
                            }
                            let pause = match deadline {
                                Some(d) => backoff.min(d - tokio::time::Instant::now()),
                                None => backoff,
                            };
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = shutdown.changed(), if deadline.is_none() => {
                                    deadline = Some(tokio::time::Instant::now() + flush_timeout);
                                }
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
            if deadline.is_none() && queue.len() < queue.batch {
                break;
            }
        }
        if let Some(d) = deadline {
            if queue.is_empty() || tokio::time::Instant::now() >= d {
                let left = queue.take_all_count();
                if left > 0 {
                    Stats::add(&stats.spans_dropped, left as u64);
                }
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}
