//! OTLP trace export, one resource per instrumented process.
//!
//! Spans are encoded straight into protobuf ([`encode`]) and sent by a thin [`Transport`]
//! (OTLP/HTTP protobuf or JSON, OTLP/gRPC); the opentelemetry SDK is not on this path (the
//! metrics exporter still uses it). Each batch is one request with one `ResourceSpans` per
//! process. A batch that fails with a retryable error is kept, already encoded, and retried
//! with a growing pause (or the collector's `Retry-After`) while new spans wait in the bounded
//! [`Queue`]; the outage is logged when it starts, at most once a minute while it lasts, and
//! when it ends. A batch the collector refuses outright (HTTP 4xx but 429, the gRPC
//! equivalents) is dropped and counted at once: sending it again would be refused again.

pub mod encode;
pub mod transport;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::sync::watch;

use self::encode::{EncodedResource, Encoder};
pub use self::transport::Transport;
use super::Queue;
use crate::{
    config::{OtlpConfig, OtlpProtocol},
    process::ProcessInfo,
    resource::{GlobalResource, resource_attributes},
    span::SpanRecord,
    stats::Stats,
};

#[derive(Debug, Error)]
pub enum ExportError {
    /// Start-up: opentelemetry-otlp could not build the metrics exporter.
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Build {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Start-up: the trace transport cannot be set up for this endpoint.
    #[error("OTLP trace endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// No answer, or a failure the collector may recover from: retried.
    #[error("{0}")]
    Unavailable(String),
    /// The collector asked to wait (`Retry-After`): retried after that.
    #[error("HTTP status {status}, retry after {after:?}")]
    Throttled { status: u16, after: Duration },
    /// The collector refused the request itself: not retried.
    #[error("refused: {0}")]
    Rejected(String),
    /// The request could not be put in the configured wire format: not retried.
    #[error("encoding the request: {0}")]
    Encode(String),
}

impl ExportError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Throttled { .. })
    }

    /// The delay the collector asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { after, .. } => Some(*after),
            _ => None,
        }
    }
}

/// How long a failing batch is retried before it is dropped (and counted).
const MAX_BATCH_RETRY: Duration = Duration::from_secs(300);
/// First pause after a failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between retries of a failing batch (a `Retry-After` may ask for more).
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

/// The opentelemetry-otlp protocol of an HTTP transport (metrics exporter).
pub(crate) fn http_protocol(p: OtlpProtocol) -> opentelemetry_otlp::Protocol {
    if p == OtlpProtocol::HttpJson {
        opentelemetry_otlp::Protocol::HttpJson
    } else {
        opentelemetry_otlp::Protocol::HttpBinary
    }
}

/// The trace transport for `cfg`; fails only on a configuration it cannot serve.
pub fn build_exporter(cfg: &OtlpConfig) -> Result<Transport, ExportError> {
    Transport::new(cfg)
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

/// Each process's encoded resource, by pid; replaced when the process's description changes
/// (an exec under the same pid).
type Resources = HashMap<u32, (Arc<ProcessInfo>, EncodedResource)>;

/// `batch` as one request in `encoder`: one `ResourceSpans` per process.
fn encode_batch(
    encoder: &mut Encoder,
    resources: &mut Resources,
    global: &GlobalResource,
    batch: &mut [SpanRecord],
) {
    // The sort is stable (spans keep their order within a process) and nearly free for the
    // usual batch of a single process.
    batch.sort_by_key(|s| s.process.pid);
    encoder.clear();
    for group in batch.chunk_by(|a, b| a.process.pid == b.process.pid) {
        let Some(process) = group.first().map(|s| &s.process) else {
            continue;
        };
        let entry = resources.entry(process.pid).or_insert_with(|| {
            let attrs = resource_attributes(process, global);
            (process.clone(), EncodedResource::new(&attrs))
        });
        if !Arc::ptr_eq(&entry.0, process) && *entry.0 != **process {
            let attrs = resource_attributes(process, global);
            *entry = (process.clone(), EncodedResource::new(&attrs));
        }
        encoder.push_group(&entry.1, group);
    }
}

/// The export task. Runs until `shutdown` flips to true, then flushes what is queued within
/// `flush_timeout` and returns.
#[expect(clippy::too_many_arguments, reason = "the task's whole context")]
pub async fn run(
    mut transport: Transport,
    endpoint: String,
    queue: Arc<Queue>,
    global: GlobalResource,
    interval: Duration,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
    flush_timeout: Duration,
) {
    let mut resources = Resources::new();
    let mut encoder = Encoder::new();
    let mut outage = Outage {
        since: None,
        last_log: None,
        failures: 0,
    };
    let mut rejection_logged = false;
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
            let mut batch = queue.take_batch();
            if batch.is_empty() {
                break;
            }
            encode_batch(&mut encoder, &mut resources, &global, &mut batch);
            // The request is complete: the spans themselves are not needed for retries.
            drop(batch);
            let count = encoder.span_count() as u64;
            let started = Instant::now();
            let mut backoff = INITIAL_BACKOFF;
            loop {
                let attempt = transport.send(encoder.bytes());
                let result = match deadline {
                    Some(d) => tokio::time::timeout_at(d, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(ExportError::Unavailable(
                                "flush timed out at shutdown".to_owned(),
                            ))
                        }),
                    None => attempt.await,
                };
                match result {
                    Ok(()) => {
                        Stats::add(&stats.spans_exported, count);
                        outage.recovered(&endpoint);
                        break;
                    }
                    Err(e) if !e.is_retryable() => {
                        Stats::inc(&stats.export_errors);
                        Stats::add(&stats.spans_dropped, count);
                        // A refusal repeats for every batch (bad credentials, wrong path):
                        // say it once, the counters tell the rest.
                        if !std::mem::replace(&mut rejection_logged, true) {
                            log::warn!(
                                "OTLP export to {endpoint}: {e}; the request's {count} spans \
                                 are dropped, not retried (later refusals are only counted \
                                 in export_errors and spans_dropped)"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        Stats::inc(&stats.export_errors);
                        outage.failed(&endpoint, &e.to_string(), queue.len(), &stats);
                        let past_deadline =
                            deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                        if past_deadline || started.elapsed() >= MAX_BATCH_RETRY {
                            Stats::add(&stats.spans_dropped, count);
                            break;
                        }
                        let wait = e.retry_after().unwrap_or(backoff);
                        let pause = match deadline {
                            Some(d) => wait.min(d - tokio::time::Instant::now()),
                            None => wait,
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
            if deadline.is_none() && queue.len() < queue.batch {
                break;
            }
        }
        if let Some(d) = deadline
            && (queue.is_empty() || tokio::time::Instant::now() >= d)
        {
            let left = queue.take_all_count();
            if left > 0 {
                Stats::add(&stats.spans_dropped, left as u64);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests;
