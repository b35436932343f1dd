//! OTLP metrics export: every interval, the cumulative metrics of each process go out as one
//! request carrying that process's resource (as Beyla does), through opentelemetry-otlp's
//! `MetricExporter` (same transports, headers and timeout rules as traces).

use std::{sync::Arc, time::Duration};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{Temporality, exporter::PushMetricExporter};
use tokio::sync::watch;

use super::Metrics;
use crate::{
    config::{OtlpConfig, OtlpProtocol},
    export::otlp::ExportError,
    stats::Stats,
};

pub fn build_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::MetricExporter, ExportError> {
    let headers: std::collections::HashMap<String, String> = cfg.headers.iter().cloned().collect();
    let err = |source| ExportError::Build {
        endpoint: cfg.traces_endpoint.clone(),
        source,
    };
    match cfg.protocol {
        OtlpProtocol::Grpc => {
            let metadata = crate::export::otlp::grpc_metadata(&headers);
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.traces_endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata)
                .with_temporality(Temporality::Cumulative)
                .build()
                .map_err(err)
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let protocol = crate::export::otlp::http_protocol(cfg.protocol);
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(cfg.traces_endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_headers(headers)
                .with_temporality(Temporality::Cumulative)
                .build()
                .map_err(err)
        }
    }
}

async fn export_once(
    exporter: &opentelemetry_otlp::MetricExporter,
    metrics: &Metrics,
    internal: bool,
    stats: &Stats,
    endpoint: &str,
    failing: &mut bool,
) {
    for c in metrics.collect(internal, true) {
        if c.metrics.scope_metrics().next().is_none() {
            continue;
        }
        Stats::inc(&stats.metrics_exports);
        match exporter.export(&c.metrics).await {
            Ok(()) => {
                if std::mem::take(failing) {
                    log::info!("OTLP metrics export to {endpoint} recovered");
                }
            }
            Err(e) => {
                Stats::inc(&stats.metrics_export_errors);
                if !std::mem::replace(failing, true) {
                    log::warn!("OTLP metrics export to {endpoint} failing: {e}");
                }
            }
        }
    }
}

/// Export every `interval` until `shutdown` flips, then once more (bounded by
/// `flush_timeout`).
#[expect(clippy::too_many_arguments, reason = "the task's whole context")]
pub async fn run(
    exporter: opentelemetry_otlp::MetricExporter,
    endpoint: String,
    metrics: Arc<Metrics>,
    internal: bool,
    interval: Duration,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
    flush_timeout: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        export_once(
            &exporter,
            &metrics,
            internal,
            &stats,
            &endpoint,
            &mut failing,
        )
        .await;
    }
    let _ = tokio::time::timeout(
        flush_timeout,
        export_once(
            &exporter,
            &metrics,
            internal,
            &stats,
            &endpoint,
            &mut failing,
        ),
    )
    .await;
    let _ = exporter.shutdown();
}
