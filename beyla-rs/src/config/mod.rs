//! Configuration from the environment and the YAML file, with Beyla's and OpenTelemetry's
//! names. The environment overrides the file, variable by variable.
//!
//! Every bad value is a [`ConfigError`] naming the variable (or the file, line and key) and
//! the offending token; `main` turns it into exit code 2. Only [`Config::load`] reads a file:
//! [`Config::from_sources`] takes a lookup function so the parsing is unit-tested without
//! mutating the process environment.

pub mod discovery;
pub mod file;
mod print;
pub mod select;
mod values;
pub mod yaml;

use std::time::Duration;

use beyla_rs_common::MAX_CAPTURE;

pub use discovery::{Selection, Selector};
pub use select::{AttributeSelect, SelectRule};
pub use values::{
    ConfigError, PortSet, invalid, parse_bool, parse_duration, parse_headers, parse_pairs,
    parse_timeout, parse_u64, parse_url,
};

const MIN_CAPTURE: u32 = 64;

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

impl OtlpProtocol {
    fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            "grpc" => Ok(Self::Grpc),
            _ => Err(invalid(
                var,
                value,
                "expected one of grpc, http/protobuf, http/json",
            )),
        }
    }
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL that receives trace exports (`…/v1/traces` for HTTP).
    pub traces_endpoint: String,
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS` pairs.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// `BEYLA_TRACE_PRINTER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracePrinter {
    Disabled,
    Text,
    Json,
    JsonIndent,
}

/// The daemon's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file read (`--config`, `BEYLA_CONFIG_PATH`), if any.
    pub file: Option<String>,
    /// `discovery.*` entries, then the environment's selectors as one more entry.
    pub selection: Selection,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// `None`: no OTLP export configured.
    pub otlp: Option<OtlpConfig>,
    pub printer: TracePrinter,
    pub log_level: log::LevelFilter,
    /// Bytes copied per data syscall (`BEYLA_CAPTURE_BYTES`).
    pub capture_bytes: u32,
    /// Kernel ring buffer size in bytes (`BEYLA_RINGBUF_SIZE`), a power of two.
    pub ringbuf_bytes: u32,
    /// `BEYLA_CAPTURE_BACKEND`: which kernel hooks capture.
    pub capture_backend: CaptureBackend,
    /// Delay between export batches (`OTEL_BSP_SCHEDULE_DELAY`, ms).
    pub export_interval: Duration,
    /// Spans held while the collector is unreachable (`OTEL_BSP_MAX_QUEUE_SIZE`); the oldest
    /// are dropped, and counted, past this bound.
    pub queue_size: usize,
    /// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch_size: usize,
    /// `BEYLA_ENFORCE_SYS_CAPS`: a missing capability is fatal (default) or only a warning.
    pub enforce_caps: bool,
    /// Metrics: OTLP, Prometheus, internal metrics.
    pub metrics: MetricsConfig,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: crate::sampler::Sampler,
    /// `BEYLA_ROUTES_PATTERNS`.
    pub routes: Vec<crate::route::Pattern>,
    /// `BEYLA_ROUTES_IGNORED_PATTERNS`: requests not reported.
    pub routes_ignored: Vec<crate::route::Pattern>,
    /// `BEYLA_ROUTES_IGNORE_MODE`: what ignored requests do not produce.
    pub routes_ignore_mode: crate::route::IgnoreMode,
    /// `BEYLA_ROUTES_UNMATCHED`: the route of a path no pattern matches.
    pub routes_unmatched: crate::route::Unmatched,
    /// `BEYLA_ROUTES_MAX`: distinct heuristic routes per service.
    pub max_routes: usize,
}

/// `BEYLA_CAPTURE_BACKEND`: the kernel hooks the capture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureBackend {
    /// The first that loads and attaches: fentry, then kprobe, then syscall.
    Auto,
    /// fentry/fexit on the TCP socket layer.
    Fentry,
    /// kprobes/kretprobes on the TCP socket layer.
    Kprobe,
    /// Raw tracepoints on syscall exit.
    Syscall,
}

/// `BEYLA_INTERNAL_METRICS_EXPORTER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InternalMetrics {
    Disabled,
    Prometheus,
    Otel,
}

/// Where RED metrics go.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// OTLP metrics export (`traces_endpoint` holds the metrics URL, `…/v1/metrics`).
    pub otlp: Option<OtlpConfig>,
    /// `BEYLA_METRICS_INTERVAL` / `OTEL_METRIC_EXPORT_INTERVAL`.
    pub interval: Duration,
    /// `BEYLA_PROMETHEUS_ADDRESS`:`BEYLA_PROMETHEUS_PORT`.
    pub prometheus: Option<std::net::SocketAddr>,
    /// `BEYLA_PROMETHEUS_PATH` (`/metrics`).
    pub prometheus_path: String,
    /// `attributes.select`.
    pub select: AttributeSelect,
    /// Histogram bounds of the durations (seconds) and body sizes (bytes).
    pub duration_buckets: Vec<f64>,
    pub size_buckets: Vec<f64>,
    pub internal: InternalMetrics,
    /// Where Prometheus internal metrics are served: address and path.
    pub internal_prometheus: Option<(std::net::SocketAddr, String)>,
}

impl MetricsConfig {
    /// Any application metrics consumer configured.
    pub fn enabled(&self) -> bool {
        self.otlp.is_some() || self.prometheus.is_some()
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

struct SignalVars {
    endpoint: &'static str,
    protocol: &'static str,
    headers: &'static str,
    timeout: &'static str,
    path: &'static str,
}

impl Signal {
    fn vars(self) -> SignalVars {
        match self {
            Signal::Traces => SignalVars {
                endpoint: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                headers: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                path: "/v1/traces",
            },
            Signal::Metrics => SignalVars {
                endpoint: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                protocol: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                headers: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                timeout: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                path: "/v1/metrics",
            },
        }
    }
}

impl Config {
    /// The environment only (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_sources(get, None)
    }

    /// Read the configuration: the file named by `path` (else `BEYLA_CONFIG_PATH`), overridden
    /// by the environment `env`. A value the file supplied fails at its line and key.
    pub fn load(
        path: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let Some(path) = path.map(str::to_owned).or_else(|| env("BEYLA_CONFIG_PATH")) else {
            return Self::from_sources(env, None);
        };
        let file_err = |line, key: &str, reason: String| ConfigError::File {
            path: path.clone(),
            line,
            key: key.to_owned(),
            reason,
        };
        let text = read_limited(&path).map_err(|e| file_err(0, "(file)", e))?;
        let file = file::parse(&text).map_err(|e| file_err(e.line, &e.key, e.reason))?;
        let get = |k: &str| {
            env(k).or_else(|| {
                // A variable set in the environment hides the file's value of every variable
                // that stands for the same thing (the generic OTLP endpoint hides the file's
                // signal endpoint: the environment wins as a whole).
                let hidden_by = match k {
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                    | "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => Some("OTEL_EXPORTER_OTLP_ENDPOINT"),
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                    | "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL" => Some("OTEL_EXPORTER_OTLP_PROTOCOL"),
                    _ => None,
                };
                if hidden_by.is_some_and(|h| env(h).is_some()) {
                    return None;
                }
                file.var(k).map(|v| v.value.clone())
            })
        };
        let mut config = Self::from_sources(get, Some(&file)).map_err(|e| match e {
            // The value came from the file: say where.
            ConfigError::Invalid { var, value, reason } if env(var).is_none() => {
                match file.var(var) {
                    Some(fv) => file_err(
                        fv.at.line,
                        &fv.at.key,
                        format!("invalid value {value:?} ({var}): {reason}"),
                    ),
                    None => ConfigError::Invalid { var, value, reason },
                }
            }
            ConfigError::File {
                line, key, reason, ..
            } => file_err(line, &key, reason),
            e => e,
        })?;
        config.file = Some(path);
        Ok(config)
    }

    /// The configuration from a variable lookup (environment first, then the file's values)
    /// and the file's structured sections.
    pub fn from_sources(
        get: impl Fn(&str) -> Option<String>,
        file: Option<&file::FileConfig>,
    ) -> Result<Self, ConfigError> {
        // Unset and empty mean the same, as in the OpenTelemetry SDKs.
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());

        let mut env_sel = Selector::default();
        if let Some(v) = get("BEYLA_OPEN_PORT") {
            env_sel.open_ports = PortSet::parse("BEYLA_OPEN_PORT", &v)?;
        }
        let exe_glob = get("BEYLA_AUTO_TARGET_EXE")
            .map(|v| ("BEYLA_AUTO_TARGET_EXE", v))
            .or_else(|| get("OTEL_GO_AUTO_TARGET_EXE").map(|v| ("OTEL_GO_AUTO_TARGET_EXE", v)));
        if let Some((var, v)) = exe_glob {
            env_sel.exe_glob = Some(
                glob::Pattern::new(&v).map_err(|e| invalid(var, &v, format!("bad glob: {e}")))?,
            );
        }
        if let Some(v) = get("BEYLA_EXECUTABLE_NAME") {
            env_sel.exe_regex =
                Some(regex::Regex::new(&v).map_err(|e| {
                    invalid("BEYLA_EXECUTABLE_NAME", &v, format!("bad regex: {e}"))
                })?);
        }
        if let Some(v) = get("BEYLA_TARGET_PID") {
            let pid = parse_u64("BEYLA_TARGET_PID", &v)?;
            if pid == 0 || pid > i32::MAX as u64 {
                return Err(invalid("BEYLA_TARGET_PID", &v, "not a process id"));
            }
            env_sel.target_pid = Some(pid as u32);
        }
        let service_name = get("BEYLA_SERVICE_NAME").or_else(|| get("OTEL_SERVICE_NAME"));
        let service_namespace = get("BEYLA_SERVICE_NAMESPACE");
        let selection = Self::selection(env_sel, service_name, service_namespace, file)?;

        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
            None => Vec::new(),
        };

        let otlp = Self::signal_otlp(&get, Signal::Traces)?;
        let mut traces_enabled = match get("OTEL_TRACES_EXPORTER") {
            Some(v) => match v.trim() {
                "none" => false,
                "otlp" => true,
                _ => return Err(invalid("OTEL_TRACES_EXPORTER", &v, "expected otlp or none")),
            },
            None => true,
        };
        if let Some(v) = get("BEYLA_TRACES_ENABLED") {
            traces_enabled &= parse_bool("BEYLA_TRACES_ENABLED", &v)?;
        }
        let metrics = Self::metrics(&get)?;

        let printer = match get("BEYLA_TRACE_PRINTER") {
            Some(v) => match v.trim() {
                "disabled" | "false" | "none" => TracePrinter::Disabled,
                "text" | "true" => TracePrinter::Text,
                "json" => TracePrinter::Json,
                "json_indent" => TracePrinter::JsonIndent,
                _ => {
                    return Err(invalid(
                        "BEYLA_TRACE_PRINTER",
                        &v,
                        "expected disabled, text, json or json_indent",
                    ));
                }
            },
            // With nowhere to send spans, show them: the first run should show something.
            None if otlp.is_none() && traces_enabled && !metrics.enabled() => TracePrinter::Text,
            None => TracePrinter::Disabled,
        };

        let log_level = match get("BEYLA_LOG_LEVEL") {
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "debug" => log::LevelFilter::Debug,
                "trace" => log::LevelFilter::Trace,
                "info" => log::LevelFilter::Info,
                "warn" | "warning" => log::LevelFilter::Warn,
                "error" => log::LevelFilter::Error,
                _ => {
                    return Err(invalid(
                        "BEYLA_LOG_LEVEL",
                        &v,
                        "expected trace, debug, info, warn or error",
                    ));
                }
            },
            None => log::LevelFilter::Info,
        };

        let capture_bytes = match get("BEYLA_CAPTURE_BYTES") {
            Some(v) => {
                let n = parse_u64("BEYLA_CAPTURE_BYTES", &v)?;
                if n < MIN_CAPTURE as u64 || n > MAX_CAPTURE as u64 {
                    return Err(invalid(
                        "BEYLA_CAPTURE_BYTES",
                        &v,
                        format!("must be between {MIN_CAPTURE} and {MAX_CAPTURE}"),
                    ));
                }
                n as u32
            }
            None => 1024,
        };

        let capture_backend = match get("BEYLA_CAPTURE_BACKEND") {
            Some(v) => match v.trim() {
                "auto" => CaptureBackend::Auto,
                "fentry" => CaptureBackend::Fentry,
                "kprobe" => CaptureBackend::Kprobe,
                "syscall" => CaptureBackend::Syscall,
                _ => {
                    return Err(invalid(
                        "BEYLA_CAPTURE_BACKEND",
                        &v,
                        "expected auto, fentry, kprobe or syscall",
                    ));
                }
            },
            None => CaptureBackend::Auto,
        };

        let ringbuf_bytes = match get("BEYLA_RINGBUF_SIZE") {
            Some(v) => {
                let n = parse_u64("BEYLA_RINGBUF_SIZE", &v)?;
                if !n.is_power_of_two() || !(65536..=(1 << 30)).contains(&n) {
                    return Err(invalid(
                        "BEYLA_RINGBUF_SIZE",
                        &v,
                        "must be a power of two between 65536 and 1073741824",
                    ));
                }
                n as u32
            }
            // 1 MiB: about 100 ms of events at 20k HTTP requests/s; the kernel wakes the reader
            // when a quarter of it is pending. The data pages are mapped twice (wrap-around), so
            // each MiB here is two MiB of the daemon's RSS.
            None => 1 << 20,
        };

        let ms = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                // Zero would make the export task spin.
                Some(v) => parse_timeout(var, &v),
                None => Ok(Duration::from_millis(default)),
            }
        };
        let export_interval = ms("OTEL_BSP_SCHEDULE_DELAY", 1000)?;
        let count = |var: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(var) {
                Some(v) => {
                    let n = parse_u64(var, &v)?;
                    if n == 0 || n > 10_000_000 {
                        return Err(invalid(var, &v, "must be between 1 and 10000000"));
                    }
                    Ok(n as usize)
                }
                None => Ok(default),
            }
        };
        let queue_size = match get("BEYLA_QUEUE_SIZE") {
            Some(_) => count("BEYLA_QUEUE_SIZE", 0)?,
            // About 1 KiB per span: the default bounds the outage backlog near 8 MiB.
            None => count("OTEL_BSP_MAX_QUEUE_SIZE", 8192)?,
        };
        let batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1024)?;
        let enforce_caps = match get("BEYLA_ENFORCE_SYS_CAPS") {
            Some(v) => parse_bool("BEYLA_ENFORCE_SYS_CAPS", &v)?,
            None => true,
        };

        let sampler = match get("OTEL_TRACES_SAMPLER") {
            Some(v) => {
                let arg = get("OTEL_TRACES_SAMPLER_ARG");
                crate::sampler::Sampler::parse(&v, arg.as_deref()).map_err(|reason| {
                    if reason.starts_with("OTEL_TRACES_SAMPLER_ARG") {
                        invalid(
                            "OTEL_TRACES_SAMPLER_ARG",
                            arg.as_deref().unwrap_or(""),
                            reason,
                        )
                    } else {
                        invalid("OTEL_TRACES_SAMPLER", &v, reason)
                    }
                })?
            }
            None => Default::default(),
        };
        let max_routes = match get("BEYLA_ROUTES_MAX") {
            Some(_) => count("BEYLA_ROUTES_MAX", 0)?,
            None => crate::route::DEFAULT_MAX_ROUTES,
        };

        let mut metrics = metrics;
        if let Some(f) = file {
            Self::file_metrics(f, &mut metrics)?;
        }
        let pattern_list = |var: &'static str| -> Result<Vec<crate::route::Pattern>, ConfigError> {
            let Some(v) = get(var) else {
                return Ok(Vec::new());
            };
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    crate::route::Pattern::parse(p)
                        .ok_or_else(|| invalid(var, &v, format!("{p:?} does not start with /")))
                })
                .collect()
        };
        let routes = pattern_list("BEYLA_ROUTES_PATTERNS")?;
        let routes_ignored = pattern_list("BEYLA_ROUTES_IGNORED_PATTERNS")?;
        let routes_ignore_mode = match get("BEYLA_ROUTES_IGNORE_MODE") {
            Some(v) => crate::route::IgnoreMode::parse(&v).ok_or_else(|| {
                invalid(
                    "BEYLA_ROUTES_IGNORE_MODE",
                    &v,
                    "expected all, traces or metrics",
                )
            })?,
            None => crate::route::IgnoreMode::All,
        };
        let routes_unmatched = match get("BEYLA_ROUTES_UNMATCHED") {
            Some(v) => crate::route::Unmatched::parse(&v).ok_or_else(|| {
                invalid(
                    "BEYLA_ROUTES_UNMATCHED",
                    &v,
                    "expected heuristic, path, wildcard or unset",
                )
            })?,
            None => crate::route::Unmatched::Heuristic,
        };

        Ok(Self {
            file: None,
            selection,
            resource_attributes,
            otlp: if traces_enabled { otlp } else { None },
            printer,
            log_level,
            capture_bytes,
            ringbuf_bytes,
            capture_backend,
            export_interval,
            queue_size,
            batch_size: batch_size.min(queue_size),
            enforce_caps,
            metrics,
            sampler,
            routes,
            routes_ignored,
            routes_ignore_mode,
            routes_unmatched,
            max_routes,
        })
    }

    /// The file's `discovery` entries, then the environment's selectors as one more entry
    /// (Beyla appends its top-level selection the same way), and the exclusions.
    fn selection(
        mut env_sel: Selector,
        service_name: Option<String>,
        service_namespace: Option<String>,
        file: Option<&file::FileConfig>,
    ) -> Result<Selection, ConfigError> {
        let mut selection = Selection::default();
        let entries = |list: &[file::EntrySpec]| -> Result<Vec<Selector>, ConfigError> {
            list.iter().map(selector_of).collect()
        };
        if let Some(list) = file.and_then(|f| f.instrument.as_deref()) {
            selection.instrument = entries(list)?;
        }
        if env_sel.is_empty() {
            // Without selectors of its own, the global name names the unnamed entries.
            for s in &mut selection.instrument {
                s.name = s.name.take().or_else(|| service_name.clone());
                s.namespace = s.namespace.take().or_else(|| service_namespace.clone());
            }
        } else {
            env_sel.name = service_name;
            env_sel.namespace = service_namespace;
            selection.instrument.push(env_sel);
        }
        if selection.instrument.is_empty() {
            return Err(ConfigError::NothingSelected);
        }
        if let Some(list) = file.and_then(|f| f.exclude.as_deref()) {
            selection.exclude = entries(list)?;
        }
        match file.and_then(|f| f.default_exclude.as_deref()) {
            Some(list) => selection.exclude.extend(entries(list)?),
            None => selection
                .exclude
                .extend(discovery::DEFAULT_EXCLUDE_EXE.iter().map(|g| Selector {
                    exe_glob: glob::Pattern::new(g).ok(),
                    ..Default::default()
                })),
        }
        Ok(selection)
    }

    /// `attributes.select` and the histogram buckets (one set serves Prometheus and OTLP).
    fn file_metrics(f: &file::FileConfig, metrics: &mut MetricsConfig) -> Result<(), ConfigError> {
        metrics.select = AttributeSelect {
            rules: f
                .select
                .iter()
                .map(|s| SelectRule {
                    metric: s.metric.clone(),
                    include: s.include.clone(),
                    exclude: s.exclude.clone(),
                })
                .collect(),
        };
        for kind in [file::BucketKind::Duration, file::BucketKind::Size] {
            let mut given = f.buckets.iter().filter(|b| b.kind == kind);
            let Some(first) = given.next() else { continue };
            if let Some(other) = given.find(|b| b.bounds != first.bounds) {
                return Err(ConfigError::File {
                    path: String::new(),
                    line: other.at.line,
                    key: other.at.key.clone(),
                    reason: format!(
                        "differs from {} (line {}): one histogram serves the Prometheus \
                         endpoint and OTLP, so the buckets must be the same",
                        first.at.key, first.at.line
                    ),
                });
            }
            match kind {
                file::BucketKind::Duration => metrics.duration_buckets = first.bounds.clone(),
                file::BucketKind::Size => metrics.size_buckets = first.bounds.clone(),
            }
        }
        Ok(())
    }

    fn metrics(get: &impl Fn(&str) -> Option<String>) -> Result<MetricsConfig, ConfigError> {
        let exporter_on = match get("OTEL_METRICS_EXPORTER") {
            Some(v) => match v.trim() {
                "none" => false,
                "otlp" => true,
                _ => {
                    return Err(invalid(
                        "OTEL_METRICS_EXPORTER",
                        &v,
                        "expected otlp or none",
                    ));
                }
            },
            None => true,
        };
        let otlp = if exporter_on {
            Self::signal_otlp(get, Signal::Metrics)?
        } else {
            None
        };
        let interval = match get("BEYLA_METRICS_INTERVAL")
            .map(|v| ("BEYLA_METRICS_INTERVAL", v))
            .or_else(|| {
                get("OTEL_METRIC_EXPORT_INTERVAL").map(|v| ("OTEL_METRIC_EXPORT_INTERVAL", v))
            }) {
            Some((var, v)) => parse_duration(var, &v)?,
            None => Duration::from_secs(60),
        };
        let port = |var: &'static str| -> Result<Option<u16>, ConfigError> {
            match get(var) {
                Some(v) => match v.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Ok(Some(p)),
                    _ => Err(invalid(var, &v, "expected a port number 1-65535")),
                },
                None => Ok(None),
            }
        };
        let ip = match get("BEYLA_PROMETHEUS_ADDRESS") {
            Some(v) => v
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .map_err(|_| invalid("BEYLA_PROMETHEUS_ADDRESS", &v, "expected an IP address"))?,
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let prom_port = port("BEYLA_PROMETHEUS_PORT")?;
        let prometheus = prom_port.map(|p| std::net::SocketAddr::new(ip, p));
        let internal = match get("BEYLA_INTERNAL_METRICS_EXPORTER") {
            Some(v) => match v.trim() {
                "prometheus" => InternalMetrics::Prometheus,
                "otel" | "otlp" => InternalMetrics::Otel,
                "disabled" | "none" => InternalMetrics::Disabled,
                _ => {
                    return Err(invalid(
                        "BEYLA_INTERNAL_METRICS_EXPORTER",
                        &v,
                        "expected prometheus, otel or disabled",
                    ));
                }
            },
            None => InternalMetrics::Disabled,
        };
        let internal_prometheus = if internal == InternalMetrics::Prometheus {
            let p = port("BEYLA_INTERNAL_METRICS_PROMETHEUS_PORT")?
                .or(prom_port)
                .ok_or_else(|| {
                    invalid(
                        "BEYLA_INTERNAL_METRICS_EXPORTER",
                        "prometheus",
                        "needs BEYLA_INTERNAL_METRICS_PROMETHEUS_PORT or BEYLA_PROMETHEUS_PORT",
                    )
                })?;
            let path = get("BEYLA_INTERNAL_METRICS_PROMETHEUS_PATH")
                .unwrap_or_else(|| "/internal/metrics".to_owned());
            let app_path = get("BEYLA_PROMETHEUS_PATH");
            let app_path = app_path.as_deref().map_or("/metrics", str::trim);
            if !path.starts_with('/') || path == app_path && Some(p) == prom_port {
                return Err(invalid(
                    "BEYLA_INTERNAL_METRICS_PROMETHEUS_PATH",
                    &path,
                    "must start with / and differ from /metrics on the same port",
                ));
            }
            Some((std::net::SocketAddr::new(ip, p), path))
        } else {
            None
        };
        if internal == InternalMetrics::Otel && otlp.is_none() {
            return Err(invalid(
                "BEYLA_INTERNAL_METRICS_EXPORTER",
                "otel",
                "needs an OTLP metrics endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or \
                 OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)",
            ));
        }
        let prometheus_path = match get("BEYLA_PROMETHEUS_PATH") {
            Some(p) if p.trim().starts_with('/') => p.trim().to_owned(),
            Some(p) => return Err(invalid("BEYLA_PROMETHEUS_PATH", &p, "must start with /")),
            None => "/metrics".to_owned(),
        };
        Ok(MetricsConfig {
            otlp,
            interval,
            prometheus,
            prometheus_path,
            select: AttributeSelect::default(),
            duration_buckets: crate::metrics::DURATION_BUCKETS.to_vec(),
            size_buckets: crate::metrics::SIZE_BUCKETS.to_vec(),
            internal,
            internal_prometheus,
        })
    }

    /// The OTLP settings of one signal: its own variables first, then the generic ones.
    fn signal_otlp(
        get: &impl Fn(&str) -> Option<String>,
        signal: Signal,
    ) -> Result<Option<OtlpConfig>, ConfigError> {
        let v = signal.vars();
        let (var, raw, full) = if let Some(x) = get(v.endpoint) {
            (v.endpoint, x, true)
        } else if let Some(x) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", x, false)
        } else {
            return Ok(None);
        };
        let (_, port, _path) = parse_url(var, &raw)?;
        let protocol = match get(v.protocol).map(|x| (v.protocol, x)).or_else(|| {
            get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|x| ("OTEL_EXPORTER_OTLP_PROTOCOL", x))
        }) {
            Some((pvar, x)) => OtlpProtocol::parse(pvar, &x)?,
            // As Beyla: port 4317 means gRPC, anything else HTTP with protobuf.
            None if port == 4317 => OtlpProtocol::Grpc,
            None => OtlpProtocol::HttpProtobuf,
        };
        let base = raw.trim().trim_end_matches('/');
        let endpoint = if full || protocol == OtlpProtocol::Grpc {
            base.to_owned()
        } else {
            // The base URL's path, if any, is kept: `http://h/otlp` → `http://h/otlp/v1/traces`.
            format!("{base}{}", v.path)
        };
        let headers = match get(v.headers).map(|x| (v.headers, x)).or_else(|| {
            get("OTEL_EXPORTER_OTLP_HEADERS").map(|x| ("OTEL_EXPORTER_OTLP_HEADERS", x))
        }) {
            Some((hvar, x)) => parse_headers(hvar, &x)?,
            None => Vec::new(),
        };
        let timeout = match get(v.timeout).map(|x| (v.timeout, x)).or_else(|| {
            get("OTEL_EXPORTER_OTLP_TIMEOUT").map(|x| ("OTEL_EXPORTER_OTLP_TIMEOUT", x))
        }) {
            Some((tvar, x)) => parse_timeout(tvar, &x)?,
            None => Duration::from_secs(10),
        };
        Ok(Some(OtlpConfig {
            traces_endpoint: endpoint,
            protocol,
            headers,
            timeout,
        }))
    }
}

/// A discovery entry of the file, checked as the environment's selectors are.
fn selector_of(e: &file::EntrySpec) -> Result<Selector, ConfigError> {
    let at = |spot: &file::Spot, value: &str, reason: String| ConfigError::File {
        path: String::new(),
        line: spot.line,
        key: spot.key.clone(),
        reason: format!("invalid value {value:?}: {reason}"),
    };
    let mut s = Selector {
        name: e.name.clone(),
        namespace: e.namespace.clone(),
        ..Default::default()
    };
    if let Some((ports, spot)) = &e.open_ports {
        s.open_ports = PortSet::parse("open_ports", ports).map_err(|err| match err {
            ConfigError::Invalid { reason, .. } => at(spot, ports, reason),
            other => other,
        })?;
    }
    if let Some((g, spot)) = &e.exe_path {
        s.exe_glob =
            Some(glob::Pattern::new(g).map_err(|err| at(spot, g, format!("bad glob: {err}")))?);
    }
    Ok(s)
}

/// Configuration files are small; a larger one is a mistake (or not a configuration file).
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_limited(path: &str) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    fn err_var(pairs: &[(&str, &str)]) -> (&'static str, String) {
        match cfg(pairs) {
            Err(ConfigError::Invalid { var, value, .. }) => (var, value),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn capture_backend() {
        let backend = |v: Option<&str>| {
            let mut pairs = vec![("BEYLA_OPEN_PORT", "80")];
            if let Some(v) = v {
                pairs.push(("BEYLA_CAPTURE_BACKEND", v));
            }
            cfg(&pairs).unwrap().capture_backend
        };
        assert_eq!(backend(None), CaptureBackend::Auto);
        assert_eq!(backend(Some("auto")), CaptureBackend::Auto);
        assert_eq!(backend(Some("fentry")), CaptureBackend::Fentry);
        assert_eq!(backend(Some(" kprobe ")), CaptureBackend::Kprobe);
        assert_eq!(backend(Some("syscall")), CaptureBackend::Syscall);
        // Empty is unset (auto), as for every variable.
        assert_eq!(backend(Some("")), CaptureBackend::Auto);
        for bad in ["ebpf", "Fentry", "kprobes"] {
            let (var, value) =
                err_var(&[("BEYLA_OPEN_PORT", "80"), ("BEYLA_CAPTURE_BACKEND", bad)]);
            assert_eq!((var, value.as_str()), ("BEYLA_CAPTURE_BACKEND", bad));
        }
    }

    #[test]
    fn port_lists_and_ranges() {
        let p = PortSet::parse("X", "80,443, 8000-8002").unwrap();
        assert!(p.contains(80) && p.contains(443) && p.contains(8001) && !p.contains(8003));
        assert_eq!(p.ports().len(), 5);
    }

    #[test]
    fn bad_ports_name_the_variable_and_token() {
        for bad in ["abc", "70000", "9-3", "0", "80,,81", "1-", "-5", "80;81"] {
            let (var, value) = err_var(&[("BEYLA_OPEN_PORT", bad)]);
            assert_eq!(var, "BEYLA_OPEN_PORT");
            assert_eq!(value, bad);
        }
        let msg = cfg(&[("BEYLA_OPEN_PORT", "9-3")]).unwrap_err().to_string();
        assert!(
            msg.contains("BEYLA_OPEN_PORT") && msg.contains("9-3"),
            "{msg}"
        );
        let msg = cfg(&[("BEYLA_OPEN_PORT", "abc")]).unwrap_err().to_string();
        assert!(msg.contains("\"abc\" is not a port number"), "{msg}");
    }

    #[test]
    fn nothing_selected_is_an_error() {
        assert_eq!(cfg(&[]).unwrap_err(), ConfigError::NothingSelected);
        assert_eq!(
            cfg(&[("BEYLA_OPEN_PORT", " ")]).unwrap_err(),
            ConfigError::NothingSelected
        );
    }

    #[test]
    fn printer_defaults_to_text_without_endpoint() {
        let c = cfg(&[("BEYLA_OPEN_PORT", "80")]).unwrap();
        assert_eq!(c.printer, TracePrinter::Text);
        assert!(c.otlp.is_none());
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ])
        .unwrap();
        assert_eq!(c.printer, TracePrinter::Disabled);
        let o = c.otlp.unwrap();
        assert_eq!(o.traces_endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        let (var, _) = err_var(&[("BEYLA_OPEN_PORT", "80"), ("BEYLA_TRACE_PRINTER", "xml")]);
        assert_eq!(var, "BEYLA_TRACE_PRINTER");
    }

    #[test]
    fn endpoints_and_protocols() {
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://alloy:4317"),
        ])
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        assert_eq!(o.traces_endpoint, "http://alloy:4317");
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318/"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/custom",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20abc, x=y",
            ),
        ])
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.traces_endpoint, "http://other:9999/custom");
        assert_eq!(o.headers[0], ("Authorization".into(), "Basic abc".into()));
        for bad in [
            "localhost:4318",
            "ftp://x:1",
            "http://:4318",
            "http://h:port",
            "http://",
        ] {
            let (var, _) = err_var(&[
                ("BEYLA_OPEN_PORT", "80"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", bad),
            ]);
            assert_eq!(var, "OTEL_EXPORTER_OTLP_ENDPOINT", "{bad}");
        }
        let (var, _) = err_var(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
        ]);
        assert_eq!(var, "OTEL_EXPORTER_OTLP_PROTOCOL");
    }

    #[test]
    fn numeric_settings_are_bounded() {
        for (var, bad) in [
            ("BEYLA_CAPTURE_BYTES", "10"),
            ("BEYLA_CAPTURE_BYTES", "99999"),
            ("BEYLA_CAPTURE_BYTES", "x"),
            ("BEYLA_RINGBUF_SIZE", "1000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("BEYLA_TARGET_PID", "0"),
            ("BEYLA_LOG_LEVEL", "loud"),
            ("BEYLA_ENFORCE_SYS_CAPS", "maybe"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("BEYLA_EXECUTABLE_NAME", "(unclosed"),
            ("BEYLA_AUTO_TARGET_EXE", "[bad"),
        ] {
            let (v, value) = err_var(&[("BEYLA_OPEN_PORT", "80"), (var, bad)]);
            assert_eq!((v, value.as_str()), (var, bad));
        }
    }

    #[test]
    fn resource_attributes() {
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%2Cb",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.resource_attributes,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a,b".into())
            ]
        );
    }

    #[test]
    fn metrics_sampler_and_routes() {
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("BEYLA_METRICS_INTERVAL", "30s"),
            ("BEYLA_PROMETHEUS_PORT", "9400"),
            ("BEYLA_INTERNAL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ("BEYLA_ROUTES_PATTERNS", "/users/{id}, /api/*"),
        ])
        .unwrap();
        let m = &c.metrics;
        assert_eq!(
            m.otlp.as_ref().unwrap().traces_endpoint,
            "http://h:4318/v1/metrics"
        );
        assert_eq!(m.interval, Duration::from_secs(30));
        assert_eq!(m.prometheus, Some("127.0.0.1:9400".parse().unwrap()));
        assert_eq!(
            m.internal_prometheus,
            Some((
                "127.0.0.1:9400".parse().unwrap(),
                "/internal/metrics".into()
            ))
        );
        assert_eq!(c.routes.len(), 2);
        assert!(c.otlp.is_some());
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/x"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])
        .unwrap();
        assert!(c.otlp.is_none(), "traces off");
        assert_eq!(c.printer, TracePrinter::Disabled);
        assert_eq!(c.metrics.otlp.unwrap().traces_endpoint, "http://m:9/x");
        assert_eq!(c.metrics.interval, Duration::from_millis(1500));
        let c = cfg(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .unwrap();
        assert!(c.metrics.otlp.is_none() && c.otlp.is_some());
        assert_eq!(parse_duration("X", "1m"), Ok(Duration::from_secs(60)));
        for (var, bad) in [
            ("BEYLA_METRICS_INTERVAL", "soon"),
            ("BEYLA_METRICS_INTERVAL", "5d"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
            ("BEYLA_PROMETHEUS_PORT", "70000"),
            ("BEYLA_PROMETHEUS_ADDRESS", "localhost"),
            ("BEYLA_INTERNAL_METRICS_EXPORTER", "statsd"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("BEYLA_TRACES_ENABLED", "perhaps"),
            ("BEYLA_ROUTES_PATTERNS", "/ok,users"),
            ("BEYLA_ROUTES_MAX", "0"),
        ] {
            let (v, value) = err_var(&[("BEYLA_OPEN_PORT", "80"), (var, bad)]);
            assert_eq!((v, value.as_str()), (var, bad));
        }
        let (v, _) = err_var(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]);
        assert_eq!(v, "OTEL_TRACES_SAMPLER_ARG");
        let (v, _) = err_var(&[
            ("BEYLA_OPEN_PORT", "80"),
            ("BEYLA_INTERNAL_METRICS_EXPORTER", "prometheus"),
        ]);
        assert_eq!(v, "BEYLA_INTERNAL_METRICS_EXPORTER");
    }

    /// `Config::load` of `text` written to a temporary file, with `env` as the environment.
    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "beyla-rs-config-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        let m: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = Config::load(path.to_str(), |k| m.get(k).cloned());
        std::fs::remove_file(&path).unwrap();
        r.map_err(|e| match e {
            // The temporary name is not part of what the tests compare.
            ConfigError::File {
                line, key, reason, ..
            } => ConfigError::File {
                path: "F".into(),
                line,
                key,
                reason,
            },
            e => e,
        })
    }

    fn file_err(text: &str, env: &[(&str, &str)]) -> (usize, String, String) {
        match load(text, env) {
            Err(ConfigError::File {
                line, key, reason, ..
            }) => (line, key, reason),
            other => panic!("{text:?}: expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn file_values_fail_like_the_variables_at_their_line() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "open_port: 80\nebpf:\n  capture_backend: ebpf\n",
                3,
                "ebpf.capture_backend",
                "expected auto, fentry, kprobe or syscall",
            ),
            ("open_port: 80-70\n", 1, "open_port", "reversed"),
            (
                "open_port: 80\nlog_level: loud\n",
                2,
                "log_level",
                "expected trace, debug, info, warn or error",
            ),
            (
                "open_port: 80\notel_traces_export:\n  endpoint: ftp://x\n",
                3,
                "otel_traces_export.endpoint",
                "unsupported scheme",
            ),
            (
                "open_port: 80\notel_traces_export:\n  sampler: {name: sometimes}\n",
                3,
                "otel_traces_export.sampler.name",
                "expected always_on",
            ),
            (
                "open_port: 80\nebpf: {ringbuf_size: 1000}\n",
                2,
                "ebpf.ringbuf_size",
                "power of two",
            ),
            (
                "discovery:\n  instrument:\n    - open_ports: 99999\n",
                3,
                "discovery.instrument[0].open_ports",
                "outside 1-65535",
            ),
            (
                "discovery:\n  instrument:\n    - exe_path: \"[\"\n",
                3,
                "discovery.instrument[0].exe_path",
                "bad glob",
            ),
            (
                "open_port: 80\nroutes: {patterns: [users]}\n",
                2,
                "routes.patterns",
                "does not start with /",
            ),
            (
                "open_port: 80\nroutes: {unmatched: guess}\n",
                2,
                "routes.unmatched",
                "heuristic, path, wildcard or unset",
            ),
            (
                "open_port: 80\nprometheus_export: {port: 9400, path: metrics}\n",
                2,
                "prometheus_export.path",
                "must start with /",
            ),
            (
                "open_port: 80\nprometheus_export:\n  port: 9400\n  buckets: {duration_histogram: [1, 2]}\notel_metrics_export:\n  endpoint: http://c:4318\n  buckets: {duration_histogram: [1, 3]}\n",
                7,
                "otel_metrics_export.buckets.duration_histogram",
                "must be the same",
            ),
            (
                "open_prt: 80\n",
                1,
                "open_prt",
                "did you mean \"open_port\"",
            ),
        ];
        for (text, line, key, reason) in cases {
            let (l, k, r) = file_err(text, &[]);
            assert_eq!((l, k.as_str()), (*line, *key), "{text:?}: {r}");
            assert!(r.contains(reason), "{text:?}: {r}");
        }
        // A missing file names the file.
        let e = Config::load(Some("/nonexistent/beyla.yaml"), |_| None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/beyla.yaml:0: (file): cannot open"),
            "{e}"
        );
        // Nothing selected anywhere.
        assert_eq!(
            load("log_level: debug\n", &[]).unwrap_err(),
            ConfigError::NothingSelected
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let text = "open_port: 80\nlog_level: debug\nebpf: {capture_bytes: 512}\n\
                    otel_traces_export:\n  endpoint: http://file:4318\n";
        let c = load(text, &[]).unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.capture_bytes, 512);
        assert_eq!(
            c.otlp.as_ref().unwrap().traces_endpoint,
            "http://file:4318/v1/traces"
        );
        let c = load(
            text,
            &[
                ("BEYLA_LOG_LEVEL", "warn"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ],
        )
        .unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.capture_bytes, 512);
        assert_eq!(c.otlp.unwrap().traces_endpoint, "http://env:4318/v1/traces");
        // A bad value in the environment is the variable's error, even when the file is fine.
        assert!(matches!(
            load(text, &[("BEYLA_CAPTURE_BYTES", "1")]),
            Err(ConfigError::Invalid {
                var: "BEYLA_CAPTURE_BYTES",
                ..
            })
        ));
    }

    #[test]
    fn discovery_entries_and_the_environment_entry() {
        let text = "discovery:\n  instrument:\n    - open_ports: 8080\n      name: checkout\n      namespace: shop\n    - exe_path: \"*/node\"\n  exclude_instrument:\n    - exe_path: \"*/python2*\"\n";
        let c = load(text, &[]).unwrap();
        let s = &c.selection;
        assert_eq!(s.instrument.len(), 2);
        assert_eq!(s.instrument[0].name.as_deref(), Some("checkout"));
        assert_eq!(s.instrument[0].namespace.as_deref(), Some("shop"));
        assert!(s.uses_exe());
        // The user's exclusion plus the six defaults.
        assert_eq!(s.exclude.len(), 1 + discovery::DEFAULT_EXCLUDE_EXE.len());
        // The environment's selection is one more entry, named by BEYLA_SERVICE_NAME.
        let c = load(
            text,
            &[("BEYLA_OPEN_PORT", "9000"), ("BEYLA_SERVICE_NAME", "env")],
        )
        .unwrap();
        assert_eq!(c.selection.instrument.len(), 3);
        assert_eq!(c.selection.instrument[2].name.as_deref(), Some("env"));
        assert!(c.selection.ports().contains(9000) && c.selection.ports().contains(8080));
        // Without selectors of its own, the global name names the unnamed entries.
        let c = load(text, &[("BEYLA_SERVICE_NAME", "env")]).unwrap();
        assert_eq!(c.selection.instrument[0].name.as_deref(), Some("checkout"));
        assert_eq!(c.selection.instrument[1].name.as_deref(), Some("env"));
        // An empty default list drops the default exclusions.
        let c = load(
            "open_port: 80\ndiscovery: {default_exclude_instrument: []}\n",
            &[],
        )
        .unwrap();
        assert!(c.selection.exclude.is_empty());
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let text = "discovery:\n  instrument:\n    - {open_ports: \"8080,9000-9001\", name: a, namespace: n}\n    - {exe_path: \"*/node\"}\n\
                    routes:\n  patterns: [\"/u/{id}\"]\n  ignored_patterns: [/health]\n  ignore_mode: traces\n  unmatched: wildcard\n\
                    attributes:\n  select:\n    http_server_request_duration: {include: [\"*\"], exclude: [url.path]}\n\
                    otel_traces_export:\n  endpoint: http://c:4318\n  headers: {Authorization: \"Bearer s3cret\"}\n  sampler: {name: parentbased_traceidratio, arg: \"0.25\"}\n\
                    otel_metrics_export:\n  endpoint: http://c:4317\n  interval: 15s\n\
                    prometheus_export:\n  port: 9400\n  path: /m\n  buckets: {duration_histogram: [0.1, 1], request_size_histogram: [10, 100]}\n\
                    ebpf: {capture_bytes: 256, capture_backend: kprobe}\n";
        let printed = load(text, &[]).unwrap().to_yaml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("\"Authorization\": \"***\""), "{printed}");
        // Masked secrets aside, the output is a configuration file for the same daemon.
        let again = load(&printed, &[]).unwrap().to_yaml();
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("# file:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&printed), strip(&again));
        for want in [
            "open_ports: \"8080,9000-9001\"",
            "name: \"a\"",
            "exe_path: \"*/node\"",
            "ignore_mode: \"traces\"",
            "unmatched: \"wildcard\"",
            "endpoint: \"http://c:4318/v1/traces\"",
            "endpoint: \"http://c:4317\"",
            "arg: \"0.25\"",
            "interval: \"15000ms\"",
            "duration_histogram: [0.1, 1]",
            "capture_backend: \"kprobe\"",
            "path: \"/m\"",
        ] {
            assert!(printed.contains(want), "{want} in\n{printed}");
        }
    }
}
