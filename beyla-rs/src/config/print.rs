//! `beyla-rs --print-config`: the effective configuration (file, environment and defaults
//! together) as a configuration file, with Beyla's keys. Header values are masked; the output
//! read back with `--config` configures the same daemon.

use std::fmt::Write;

use super::{
    CaptureBackend, Config, InternalMetrics, OtlpConfig, OtlpProtocol, Selector, TracePrinter,
};
use crate::sampler::{Root, Sampler};

/// Every string is written double-quoted (JSON strings are YAML scalars), so no value can
/// change the document's structure.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn protocol(p: OtlpProtocol) -> &'static str {
    match p {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http/protobuf",
        OtlpProtocol::HttpJson => "http/json",
    }
}

fn sampler(s: Sampler) -> (&'static str, Option<f64>) {
    match s {
        Sampler::AlwaysOn => ("always_on", None),
        Sampler::AlwaysOff => ("always_off", None),
        Sampler::TraceIdRatio(r) => ("traceidratio", Some(r)),
        Sampler::ParentBased(Root::AlwaysOn) => ("parentbased_always_on", None),
        Sampler::ParentBased(Root::AlwaysOff) => ("parentbased_always_off", None),
        Sampler::ParentBased(Root::TraceIdRatio(r)) => ("parentbased_traceidratio", Some(r)),
    }
}

fn entries(out: &mut String, key: &str, list: &[Selector]) {
    if list.is_empty() {
        let _ = writeln!(out, "  {key}: []");
        return;
    }
    let _ = writeln!(out, "  {key}:");
    for s in list {
        let mut lines = Vec::new();
        if !s.open_ports.is_empty() {
            lines.push(format!("open_ports: {}", q(&s.open_ports.to_list())));
        }
        if let Some(g) = &s.exe_glob {
            lines.push(format!("exe_path: {}", q(g.as_str())));
        }
        if let Some(r) = &s.exe_regex {
            // No per-entry key: only the top-level selection has a regex (`executable_name`).
            lines.push(format!("# executable_name (regex): {}", q(r.as_str())));
        }
        if let Some(p) = s.target_pid {
            lines.push(format!("# BEYLA_TARGET_PID: {p}"));
        }
        if let Some(n) = &s.name {
            lines.push(format!("name: {}", q(n)));
        }
        if let Some(n) = &s.namespace {
            lines.push(format!("namespace: {}", q(n)));
        }
        for (i, l) in lines.iter().enumerate() {
            let lead = if i == 0 { "    - " } else { "      " };
            let _ = writeln!(out, "{lead}{l}");
        }
    }
}

fn otlp(out: &mut String, o: &OtlpConfig) {
    let _ = writeln!(out, "  endpoint: {}", q(&o.traces_endpoint));
    let _ = writeln!(out, "  protocol: {}", q(protocol(o.protocol)));
    let _ = writeln!(out, "  timeout: {}", o.timeout.as_millis());
    if !o.headers.is_empty() {
        let _ = writeln!(out, "  headers:");
        for (k, _) in &o.headers {
            // Header values are credentials more often than not.
            let _ = writeln!(out, "    {}: \"***\"", q(k));
        }
    }
}

fn floats(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl Config {
    /// The effective configuration as YAML.
    pub fn to_yaml(&self) -> String {
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(
            w,
            "# beyla-rs {} effective configuration",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(f) = &self.file {
            let _ = writeln!(w, "# file: {f} (overridden by the environment)");
        }
        let level = self.log_level.as_str().to_ascii_lowercase();
        let _ = writeln!(w, "log_level: {}", q(&level));
        let printer = match self.printer {
            TracePrinter::Disabled => "disabled",
            TracePrinter::Text => "text",
            TracePrinter::Json => "json",
            TracePrinter::JsonIndent => "json_indent",
        };
        let _ = writeln!(w, "trace_printer: {}", q(printer));
        let _ = writeln!(w, "enforce_sys_caps: {}", self.enforce_caps);

        let _ = writeln!(w, "discovery:");
        entries(w, "instrument", &self.selection.instrument);
        // Exclusions are printed whole (the defaults included): set as they are, the output
        // configures the same.
        entries(w, "exclude_instrument", &[]);
        entries(w, "default_exclude_instrument", &self.selection.exclude);

        let _ = writeln!(w, "routes:");
        let pats = |p: &[crate::route::Pattern]| {
            let v: Vec<String> = p.iter().map(|p| q(p.as_str())).collect();
            format!("[{}]", v.join(", "))
        };
        let _ = writeln!(w, "  patterns: {}", pats(&self.routes));
        let _ = writeln!(w, "  ignored_patterns: {}", pats(&self.routes_ignored));
        let _ = writeln!(w, "  ignore_mode: {}", q(self.routes_ignore_mode.as_str()));
        let _ = writeln!(w, "  unmatched: {}", q(self.routes_unmatched.as_str()));
        let _ = writeln!(w, "  max_routes: {}", self.max_routes);

        let m = &self.metrics;
        if !m.select.rules.is_empty() {
            let _ = writeln!(w, "attributes:\n  select:");
            for r in &m.select.rules {
                let _ = writeln!(w, "    {}:", q(&r.metric));
                let list = |v: &[String]| {
                    let v: Vec<String> = v.iter().map(|s| q(s)).collect();
                    format!("[{}]", v.join(", "))
                };
                if let Some(i) = &r.include {
                    let _ = writeln!(w, "      include: {}", list(i));
                }
                let _ = writeln!(w, "      exclude: {}", list(&r.exclude));
            }
        }

        let _ = writeln!(w, "otel_traces_export:");
        let _ = writeln!(w, "  enabled: {}", self.otlp.is_some());
        if let Some(t) = &self.otlp {
            otlp(w, t);
        }
        let (name, arg) = sampler(self.sampler);
        let _ = writeln!(w, "  sampler:\n    name: {}", q(name));
        if let Some(a) = arg {
            let _ = writeln!(w, "    arg: {}", q(&a.to_string()));
        }
        let _ = writeln!(w, "  max_queue_size: {}", self.queue_size);
        let _ = writeln!(w, "  max_export_batch_size: {}", self.batch_size);
        let _ = writeln!(w, "  schedule_delay: {}", self.export_interval.as_millis());

        let buckets = |w: &mut String| {
            let _ = writeln!(w, "  buckets:");
            let _ = writeln!(w, "    duration_histogram: {}", floats(&m.duration_buckets));
            let _ = writeln!(w, "    request_size_histogram: {}", floats(&m.size_buckets));
        };
        let interval = format!("{}ms", m.interval.as_millis());
        match &m.otlp {
            Some(mo) => {
                let _ = writeln!(w, "otel_metrics_export:");
                otlp(w, mo);
                let _ = writeln!(w, "  interval: {}", q(&interval));
                buckets(w);
            }
            None => {
                let _ = writeln!(w, "# otel_metrics_export: not configured");
            }
        }
        match m.prometheus {
            Some(a) => {
                let _ = writeln!(w, "prometheus_export:");
                let _ = writeln!(w, "  address: {}", q(&a.ip().to_string()));
                let _ = writeln!(w, "  port: {}", a.port());
                let _ = writeln!(w, "  path: {}", q(&m.prometheus_path));
                buckets(w);
            }
            None => {
                let _ = writeln!(w, "# prometheus_export: not configured");
            }
        }
        let exporter = match m.internal {
            InternalMetrics::Disabled => "disabled",
            InternalMetrics::Prometheus => "prometheus",
            InternalMetrics::Otel => "otel",
        };
        let _ = writeln!(w, "internal_metrics:\n  exporter: {}", q(exporter));
        if let Some((a, path)) = &m.internal_prometheus {
            let _ = writeln!(
                w,
                "  prometheus:\n    port: {}\n    path: {}",
                a.port(),
                q(path)
            );
        }
        let backend = match self.capture_backend {
            CaptureBackend::Auto => "auto",
            CaptureBackend::Fentry => "fentry",
            CaptureBackend::Kprobe => "kprobe",
            CaptureBackend::Syscall => "syscall",
        };
        let _ = writeln!(w, "ebpf:");
        let _ = writeln!(w, "  capture_bytes: {}", self.capture_bytes);
        let _ = writeln!(w, "  ringbuf_size: {}", self.ringbuf_bytes);
        let _ = writeln!(w, "  capture_backend: {}", q(backend));
        o
    }
}
