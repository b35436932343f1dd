//! The daemon's own health metrics (`BEYLA_INTERNAL_METRICS_EXPORTER=prometheus|otel`), from
//! [`Stats`]: what an operator reads when spans are missing. Each counter names a reason:
//! records lost in the kernel (ring buffer full), connections dropped as not HTTP, parse
//! failures by protocol, spans not sampled, spans dropped by the export queue, export errors.

use std::{fmt::Write as _, sync::Arc};

use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_sdk::metrics::{SdkMeterProvider, data::ResourceMetrics, reader::MetricReader};

use super::{SharedReader, manual_provider, prom};
use crate::{resource::GlobalResource, stats::Stats};

/// Family (without `_total`), labels and help of a [`Stats`] counter.
fn describe(name: &str) -> (String, Vec<(&'static str, &'static str)>, &'static str) {
    let fam = |f: &str| format!("beyla_{f}");
    match name {
        "events_read" => (fam(name), vec![], "Kernel ring buffer records read"),
        "events_malformed" => (fam(name), vec![], "Ring buffer records that did not decode"),
        "events_lost_kernel" => (
            fam("events_lost"),
            vec![("reason", "ringbuf_full")],
            "Records lost in the kernel because the ring buffer was full (raise BEYLA_RINGBUF_SIZE)",
        ),
        "kernel_capture_faults" => (
            fam("kernel_capture_faults"),
            vec![],
            "Copies of syscall buffers from user memory that faulted in the kernel",
        ),
        "kernel_conn_map_full" => (
            fam("kernel_conn_map_full"),
            vec![],
            "Connections the kernel could not follow because its connection map was full",
        ),
        "kernel_conn_contended" => (
            fam("kernel_conn_contended"),
            vec![],
            "Connection-map updates the kernel gave up because other CPUs kept changing the entry",
        ),
        "kernel_pid_map_full" => (
            fam("kernel_pid_map_full"),
            vec![],
            "Processes the kernel could not track because its process map was full",
        ),
        "kernel_bpf_ns_capture" | "kernel_bpf_ns_tls" => (
            fam("kernel_bpf_run_nanoseconds"),
            vec![(
                "programs",
                if name.ends_with("tls") {
                    "tls"
                } else {
                    "capture"
                },
            )],
            "Time the kernel spent in the daemon's eBPF programs (counted while kernel.bpf_stats_enabled=1)",
        ),
        "kernel_bpf_runs_capture" | "kernel_bpf_runs_tls" => (
            fam("kernel_bpf_runs"),
            vec![(
                "programs",
                if name.ends_with("tls") {
                    "tls"
                } else {
                    "capture"
                },
            )],
            "Runs of the daemon's eBPF programs (counted while kernel.bpf_stats_enabled=1)",
        ),
        "kernel_tls_unbound" => (
            fam("kernel_tls_unbound"),
            vec![],
            "TLS plaintext the kernel did not send: its session was not tied to a tracked connection",
        ),
        "connections_resynced" => (
            fam(name),
            vec![],
            "Connections joined anew after the kernel lost a record of their bytes",
        ),
        "connections_tls" => (
            fam(name),
            vec![],
            "Connections followed through their TLS library's plaintext",
        ),
        "connections_tls_uncovered" => (
            fam("connections_dropped"),
            vec![("reason", "tls_uncovered")],
            "Connections no longer followed: not HTTP, TLS that no probe covers, or evicted",
        ),
        "tls_libraries_probed" => (
            fam(name),
            vec![],
            "Library files (libssl, executables with OpenSSL linked in) the TLS probes were attached to",
        ),
        "processes_instrumented" => (fam(name), vec![], "Processes instrumented since start"),
        "connections_opened" => (
            fam(name),
            vec![],
            "Connections opened by instrumented processes",
        ),
        "connections_not_http" => (
            fam("connections_dropped"),
            vec![("reason", "not_http")],
            "Connections no longer followed: not HTTP, TLS that no probe covers, or evicted",
        ),
        "connections_evicted" => (
            fam("connections_dropped"),
            vec![("reason", "evicted")],
            "Connections no longer followed: not HTTP, TLS that no probe covers, or evicted",
        ),
        "http1_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "http1")],
            "Parse failures that forced a resync, by protocol",
        ),
        "http2_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "http2")],
            "Parse failures that forced a resync, by protocol",
        ),
        "postgres_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "postgresql")],
            "Parse failures that forced a resync, by protocol",
        ),
        "mysql_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "mysql")],
            "Parse failures that forced a resync, by protocol",
        ),
        "redis_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "redis")],
            "Parse failures that forced a resync, by protocol",
        ),
        "memcached_parse_errors" => (
            fam("parse_errors"),
            vec![("protocol", "memcached")],
            "Parse failures that forced a resync, by protocol",
        ),
        "spans_created" => (fam(name), vec![], "Spans built and sampled in"),
        "spans_not_sampled" => (
            fam(name),
            vec![],
            "Spans not exported because of the sampler or the caller's not-sampled flag",
        ),
        "spans_ignored" => (
            fam(name),
            vec![],
            "Spans not built because the request's route is ignored (routes.ignored_patterns)",
        ),
        "spans_exported" => (fam(name), vec![], "Spans the OTLP exporter delivered"),
        "spans_dropped" => (
            fam(name),
            vec![],
            "Spans dropped: export queue full (collector down or slow) or retries exhausted",
        ),
        "export_errors" => (
            fam("export_errors"),
            vec![("signal", "traces")],
            "Failed OTLP export requests, by signal",
        ),
        "metrics_export_errors" => (
            fam("export_errors"),
            vec![("signal", "metrics")],
            "Failed OTLP export requests, by signal",
        ),
        "metrics_exports" => (fam(name), vec![], "OTLP metrics export requests sent"),
        other => (fam(other), vec![], "beyla-rs internal counter"),
    }
}

/// Counters the kernel side feeds: they carry the capture backend as a label (`backend`:
/// `fentry`, `kprobe`, `syscall`), so that a dashboard shows which hooks a host runs.
fn labels_of(name: &str) -> (String, Vec<(&'static str, &'static str)>, &'static str) {
    let (fam, mut labels, help) = describe(name);
    let from_kernel = matches!(
        name,
        "events_read"
            | "events_malformed"
            | "events_lost_kernel"
            | "kernel_capture_faults"
            | "kernel_conn_map_full"
            | "kernel_conn_contended"
            | "kernel_pid_map_full"
            | "kernel_tls_unbound"
            | "kernel_bpf_ns_capture"
            | "kernel_bpf_runs_capture"
            | "kernel_bpf_ns_tls"
            | "kernel_bpf_runs_tls"
    );
    if let (true, Some(b)) = (from_kernel, crate::capture::active_backend()) {
        labels.push(("backend", b.label()));
    }
    (fam, labels, help)
}

/// Prometheus text of the internal counters.
pub fn render_prometheus(stats: &Stats) -> String {
    let mut fams: Vec<(String, &'static str, Vec<String>)> = Vec::new();
    for (name, v) in stats.snapshot().pairs() {
        let (fam, labels, help) = labels_of(name);
        let fam = format!("{fam}_total");
        let mut line = fam.clone();
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", prom::escape_label(val));
            }
            line.push('}');
        }
        let _ = write!(line, " {v}");
        match fams.iter_mut().find(|(f, _, _)| *f == fam) {
            Some((_, _, lines)) => lines.push(line),
            None => fams.push((fam, help, vec![line])),
        }
    }
    let mut out = String::new();
    for (fam, help, lines) in fams {
        let base = fam.trim_end_matches("_total");
        let _ = writeln!(out, "# HELP {base} {help}");
        let _ = writeln!(out, "# TYPE {base} counter");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    if let Some(u) = SelfUsage::read() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory of the daemon, in bytes\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n\
             # HELP process_cpu_seconds Total user and system CPU time of the daemon, in seconds\n\
             # TYPE process_cpu_seconds counter\n\
             process_cpu_seconds_total {}",
            u.rss_bytes, u.cpu_seconds
        );
    }
    out
}

/// The daemon's own resident memory and CPU time, from /proc/self. The names are the
/// Prometheus client libraries' (`process_resident_memory_bytes`, `process_cpu_seconds_total`);
/// the OTLP instruments are named so that Mimir's translation gives the same names.
struct SelfUsage {
    rss_bytes: u64,
    cpu_seconds: f64,
}

impl SelfUsage {
    fn read() -> Option<Self> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        Some(Self {
            rss_bytes: stat.rss * procfs::page_size(),
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks.max(1.0),
        })
    }
}

/// The internal counters as OpenTelemetry observable counters, resource `service.name=beyla-rs`.
pub struct InternalOtel {
    _provider: SdkMeterProvider,
    reader: SharedReader,
}

impl InternalOtel {
    pub fn new(stats: Arc<Stats>, global: &GlobalResource) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let mut attrs = vec![
            KeyValue::new("service.name", "beyla-rs"),
            KeyValue::new(
                "service.instance.id",
                format!("{host}-{}", std::process::id()),
            ),
            KeyValue::new("host.name", host),
            KeyValue::new("process.pid", std::process::id() as i64),
            KeyValue::new("telemetry.sdk.name", "beyla-rs"),
            KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ];
        for (k, v) in &global.attributes {
            if k != "service.name" {
                attrs.push(KeyValue::new(k.clone(), v.clone()));
            }
        }
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(attrs)
            .build();
        let (provider, reader) = manual_provider(resource);
        let meter = provider.meter("beyla-rs.internal");
        let mut fams: Vec<String> = Vec::new();
        for (name, _) in stats.snapshot().pairs() {
            let (fam, _, help) = describe(name);
            if fams.contains(&fam) {
                continue;
            }
            fams.push(fam.clone());
            let stats = stats.clone();
            let me = fam.clone();
            meter
                .u64_observable_counter(fam)
                .with_description(help)
                .with_callback(move |obs| {
                    for (n, v) in stats.snapshot().pairs() {
                        let (f, labels, _) = labels_of(n);
                        if f == me {
                            let attrs: Vec<KeyValue> =
                                labels.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
                            obs.observe(v, &attrs);
                        }
                    }
                })
                .build();
        }
        meter
            .u64_observable_gauge("process.resident_memory")
            .with_unit("By")
            .with_description("Resident memory of the daemon, in bytes")
            .with_callback(|obs| {
                if let Some(u) = SelfUsage::read() {
                    obs.observe(u.rss_bytes, &[]);
                }
            })
            .build();
        meter
            .f64_observable_counter("process.cpu")
            .with_unit("s")
            .with_description("Total user and system CPU time of the daemon, in seconds")
            .with_callback(|obs| {
                if let Some(u) = SelfUsage::read() {
                    obs.observe(u.cpu_seconds, &[]);
                }
            })
            .build();
        Self {
            _provider: provider,
            reader,
        }
    }

    pub fn collect(&self) -> Option<ResourceMetrics> {
        let mut rm = ResourceMetrics::default();
        self.reader.collect(&mut rm).ok().map(|_| rm)
    }
}
