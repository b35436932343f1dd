//! Configuration from the environment, with Beyla's and OpenTelemetry's variable names.
//!
//! Every bad value is a [`ConfigError`] naming the variable and the offending token; `main`
//! turns it into exit code 2. Nothing here touches the system: [`Config::from_lookup`] takes a
//! lookup function so the parsing is unit-tested without mutating the process environment.

use std::{collections::BTreeSet, time::Duration};

use thiserror::Error;

use beyla_rs_common::MAX_CAPTURE;

/// A configuration value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "no process is selected: set BEYLA_OPEN_PORT (e.g. \"80,443,8000-8999\"), \
         BEYLA_AUTO_TARGET_EXE, BEYLA_EXECUTABLE_NAME or BEYLA_TARGET_PID"
    )]
    NothingSelected,
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A set of TCP ports, from `80,443,8000-8999`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    pub fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        let mut ranges = Vec::new();
        for token in value.split(',') {
            let token = token.trim();
            if token.is_empty() {
                return Err(invalid(var, value, "empty entry in the port list"));
            }
            let port = |t: &str| -> Result<u16, ConfigError> {
                let t = t.trim();
                let n: u32 = t
                    .parse()
                    .map_err(|_| invalid(var, value, format!("{t:?} is not a port number")))?;
                if n == 0 || n > 65535 {
                    return Err(invalid(var, value, format!("port {n} is outside 1-65535")));
                }
                Ok(n as u16)
            };
            let (lo, hi) = match token.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(token)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(invalid(
                    var,
                    value,
                    format!("range {token:?} is reversed (start above end)"),
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(Self { ranges })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Every port in the set, in order, without duplicates.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }
}

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

/// Which processes to instrument. Several selectors set: a process must match all of them.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub open_ports: PortSet,
    pub exe_glob: Option<glob::Pattern>,
    pub exe_regex: Option<regex::Regex>,
    pub target_pid: Option<u32>,
}

impl Selection {
    /// True when selection depends on the executable (so exec events must be watched).
    pub fn uses_exe(&self) -> bool {
        self.exe_glob.is_some() || self.exe_regex.is_some()
    }
}

/// The daemon's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub selection: Selection,
    /// Global service name override (`BEYLA_SERVICE_NAME`, else `OTEL_SERVICE_NAME`).
    pub service_name: Option<String>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// OTLP metrics export (`traces_endpoint` holds the metrics URL, `…/v1/metrics`).
    pub otlp: Option<OtlpConfig>,
    /// `BEYLA_METRICS_INTERVAL` / `OTEL_METRIC_EXPORT_INTERVAL`.
    pub interval: Duration,
    /// `BEYLA_PROMETHEUS_ADDRESS`:`BEYLA_PROMETHEUS_PORT`.
    pub prometheus: Option<std::net::SocketAddr>,
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

/// `30s`, `1m`, `500ms`, `2h`, or a plain number of milliseconds.
pub fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| invalid(var, value, "expected a duration like 30s, 1m, 500ms"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        _ => return Err(invalid(var, value, "unit must be ms, s, m or h")),
    };
    if !(1.0..=86_400_000.0).contains(&ms) {
        return Err(invalid(var, value, "must be between 1ms and 24h"));
    }
    Ok(Duration::from_micros((ms * 1e3) as u64))
}

const MIN_CAPTURE: u32 = 64;

fn parse_u64(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(var, value, "expected a non-negative whole number"))
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(var, value, "expected true or false")),
    }
}

/// Milliseconds, at least 1 (a zero export timeout fails every request; a zero schedule
/// delay spins).
fn parse_timeout(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match parse_u64(var, value)? {
        0 => Err(invalid(var, value, "must be at least 1 (milliseconds)")),
        n => Ok(Duration::from_millis(n)),
    }
}

/// [`parse_pairs`] for HTTP headers: names must be tokens and values free of control
/// characters, or every export request would fail (or the header be silently dropped).
fn parse_headers(var: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let pairs = parse_pairs(var, value)?;
    for (k, v) in &pairs {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if !k.chars().all(token) {
            return Err(invalid(
                var,
                value,
                format!("{k:?} is not a valid header name"),
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(invalid(
                var,
                value,
                format!("the value of {k:?} contains control characters"),
            ));
        }
    }
    Ok(pairs)
}

/// `k=v,k2=v2` as used by `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`
/// (values may be percent-encoded).
pub fn parse_pairs(var: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| invalid(var, value, format!("{item:?} is not key=value")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(invalid(var, value, format!("{item:?} has an empty key")));
        }
        out.push((k.to_owned(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validate an endpoint URL: `http(s)://host[:port][/path]`.
fn parse_url(var: &'static str, value: &str) -> Result<(String, u16, String), ConfigError> {
    let v = value.trim();
    let (scheme, rest) = v
        .split_once("://")
        .ok_or_else(|| invalid(var, value, "expected a URL like http://127.0.0.1:4318"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(invalid(
                var,
                value,
                format!("unsupported scheme {scheme:?}"),
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid(var, value, "the URL has no host"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| invalid(var, value, "unterminated IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| invalid(var, value, "bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(invalid(var, value, "bad authority")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| invalid(var, value, format!("{p:?} is not a port")))?;
                (h.to_owned(), port)
            }
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(invalid(var, value, "bad host"));
    }
    Ok((host, port, path.to_owned()))
}

#[derive(Clone, Copy)]
enum Signal {
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
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Unset and empty mean the same, as in the OpenTelemetry SDKs.
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());

        let mut selection = Selection::default();
        if let Some(v) = get("BEYLA_OPEN_PORT") {
            selection.open_ports = PortSet::parse("BEYLA_OPEN_PORT", &v)?;
        }
        let exe_glob = get("BEYLA_AUTO_TARGET_EXE")
            .map(|v| ("BEYLA_AUTO_TARGET_EXE", v))
            .or_else(|| get("OTEL_GO_AUTO_TARGET_EXE").map(|v| ("OTEL_GO_AUTO_TARGET_EXE", v)));
        if let Some((var, v)) = exe_glob {
            selection.exe_glob = Some(
                glob::Pattern::new(&v).map_err(|e| invalid(var, &v, format!("bad glob: {e}")))?,
            );
        }
        if let Some(v) = get("BEYLA_EXECUTABLE_NAME") {
            selection.exe_regex =
                Some(regex::Regex::new(&v).map_err(|e| {
                    invalid("BEYLA_EXECUTABLE_NAME", &v, format!("bad regex: {e}"))
                })?);
        }
        if let Some(v) = get("BEYLA_TARGET_PID") {
            let pid = parse_u64("BEYLA_TARGET_PID", &v)?;
            if pid == 0 || pid > i32::MAX as u64 {
                return Err(invalid("BEYLA_TARGET_PID", &v, "not a process id"));
            }
            selection.target_pid = Some(pid as u32);
        }
        if selection.open_ports.is_empty()
            && !selection.uses_exe()
            && selection.target_pid.is_none()
        {
            return Err(ConfigError::NothingSelected);
        }

        let service_name = get("BEYLA_SERVICE_NAME").or_else(|| get("OTEL_SERVICE_NAME"));
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
            None => Vec::new(),
        };

        let otlp = Self::otlp(&get)?;
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
                        "expected debug, info, warn or error",
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
        let mut routes = Vec::new();
        if let Some(v) = get("BEYLA_ROUTES_PATTERNS") {
            for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                routes.push(crate::route::Pattern::parse(p).ok_or_else(|| {
                    invalid(
                        "BEYLA_ROUTES_PATTERNS",
                        &v,
                        format!("{p:?} does not start with /"),
                    )
                })?);
            }
        }
        let max_routes = match get("BEYLA_ROUTES_MAX") {
            Some(_) => count("BEYLA_ROUTES_MAX", 0)?,
            None => crate::route::DEFAULT_MAX_ROUTES,
        };

        Ok(Self {
            selection,
            service_name,
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
            max_routes,
        })
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
            if !path.starts_with('/') || path == "/metrics" && Some(p) == prom_port {
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
        Ok(MetricsConfig {
            otlp,
            interval,
            prometheus,
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
            None if port == 4317 => OtlpProtocol::Grpc,
            None => OtlpProtocol::HttpProtobuf,
        };
        let base = raw.trim().trim_end_matches('/');
        let endpoint = if full || protocol == OtlpProtocol::Grpc {
            base.to_owned()
        } else {
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

    fn otlp(get: &impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, ConfigError> {
        let (var, raw, full) = if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v, true)
        } else if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", v, false)
        } else {
            return Ok(None);
        };
        let (_, port, _path) = parse_url(var, &raw)?;
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
            .or_else(|| {
                get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
            }) {
            Some((pvar, v)) => OtlpProtocol::parse(pvar, &v)?,
            // As Beyla: port 4317 means gRPC, anything else HTTP with protobuf.
            None if port == 4317 => OtlpProtocol::Grpc,
            None => OtlpProtocol::HttpProtobuf,
        };
        let base = raw.trim().trim_end_matches('/');
        let traces_endpoint = if full || protocol == OtlpProtocol::Grpc {
            base.to_owned()
        } else {
            // The base URL's path, if any, is kept: `http://h/otlp` → `http://h/otlp/v1/traces`.
            format!("{base}/v1/traces")
        };
        let headers = match get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", v))
            .or_else(|| {
                get("OTEL_EXPORTER_OTLP_HEADERS").map(|v| ("OTEL_EXPORTER_OTLP_HEADERS", v))
            }) {
            Some((hvar, v)) => parse_headers(hvar, &v)?,
            None => Vec::new(),
        };
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", v))
            .or_else(|| {
                get("OTEL_EXPORTER_OTLP_TIMEOUT").map(|v| ("OTEL_EXPORTER_OTLP_TIMEOUT", v))
            }) {
            Some((tvar, v)) => parse_timeout(tvar, &v)?,
            None => Duration::from_secs(10),
        };
        Ok(Some(OtlpConfig {
            traces_endpoint,
            protocol,
            headers,
            timeout,
        }))
    }
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
}
