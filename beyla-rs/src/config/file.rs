//! The YAML configuration file (`--config FILE`, `BEYLA_CONFIG_PATH`), with Beyla's key names.
//!
//! Most keys stand for an environment variable (`log_level` for `BEYLA_LOG_LEVEL`,
//! `otel_traces_export.endpoint` for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, …): the file
//! yields their values with the line each came from, and the configuration is then read
//! exactly as from the environment, the environment first. A value from the file fails with
//! the variable's own reason, reported at its line and key. The structured sections
//! (`discovery`, `attributes.select`, histogram buckets) have no variable and are returned
//! as they are, still with their lines.
//!
//! Pure: text in, [`FileConfig`] out; the fuzz target compiles this module on its own.

use super::yaml::{self, Node, Value};

/// A bad file: where and why. `key` is the dotted path (`discovery.instrument[1].open_ports`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub key: String,
    pub reason: String,
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spot {
    pub line: usize,
    pub key: String,
}

/// A file value standing for an environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileVar {
    pub var: &'static str,
    pub value: String,
    pub at: Spot,
}

/// One `discovery.instrument` / `exclude_instrument` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntrySpec {
    pub line: usize,
    pub key: String,
    /// `open_ports`: a number or a list like `80,443,8000-8999`.
    pub open_ports: Option<(String, Spot)>,
    /// `exe_path`: a glob on the executable's path.
    pub exe_path: Option<(String, Spot)>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// One `attributes.select` section: the metric name (may hold `*`) and its lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectSpec {
    pub metric: String,
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
    pub at: Spot,
}

/// Which histogram a `buckets` list is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketKind {
    Duration,
    Size,
}

/// A `buckets.duration_histogram` / `buckets.request_size_histogram` list.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketSpec {
    pub kind: BucketKind,
    pub bounds: Vec<f64>,
    pub at: Spot,
}

/// What a file says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    pub vars: Vec<FileVar>,
    pub instrument: Option<Vec<EntrySpec>>,
    pub exclude: Option<Vec<EntrySpec>>,
    /// `None`: the built-in exclusions; `Some(empty)`: none.
    pub default_exclude: Option<Vec<EntrySpec>>,
    pub select: Vec<SelectSpec>,
    pub buckets: Vec<BucketSpec>,
}

impl FileConfig {
    /// The file's value for `var`, if it has one.
    pub fn var(&self, var: &str) -> Option<&FileVar> {
        self.vars.iter().find(|v| v.var == var)
    }
}

/// What a key holds.
enum Kind {
    /// A scalar standing for an environment variable.
    Var(&'static str),
    /// A list (or one scalar) standing for a comma-separated variable.
    List(&'static str),
    /// A mapping of names to values standing for a `k=v,k2=v2` variable.
    Pairs(&'static str),
    /// An OTLP endpoint: a URL without a path gets the signal's path (`/v1/traces`) unless the
    /// protocol is gRPC, as Beyla's exporters do ([`resolve_endpoints`]).
    Endpoint(&'static str),
    Section(&'static [(&'static str, Kind)]),
    Entries(Entries),
    Select,
    Buckets,
}

#[derive(Clone, Copy)]
enum Entries {
    Instrument,
    Exclude,
    DefaultExclude,
}

const BUCKETS: &[(&str, Kind)] = &[
    ("duration_histogram", Kind::Buckets),
    ("request_size_histogram", Kind::Buckets),
];

/// Every key the file may hold.
const ROOT: &[(&str, Kind)] = &[
    ("log_level", Kind::Var("BEYLA_LOG_LEVEL")),
    ("trace_printer", Kind::Var("BEYLA_TRACE_PRINTER")),
    ("enforce_sys_caps", Kind::Var("BEYLA_ENFORCE_SYS_CAPS")),
    ("open_port", Kind::Var("BEYLA_OPEN_PORT")),
    ("auto_target_exe", Kind::Var("BEYLA_AUTO_TARGET_EXE")),
    ("executable_name", Kind::Var("BEYLA_EXECUTABLE_NAME")),
    ("service_name", Kind::Var("BEYLA_SERVICE_NAME")),
    ("service_namespace", Kind::Var("BEYLA_SERVICE_NAMESPACE")),
    (
        "discovery",
        Kind::Section(&[
            ("instrument", Kind::Entries(Entries::Instrument)),
            ("exclude_instrument", Kind::Entries(Entries::Exclude)),
            (
                "default_exclude_instrument",
                Kind::Entries(Entries::DefaultExclude),
            ),
        ]),
    ),
    (
        "routes",
        Kind::Section(&[
            ("patterns", Kind::List("BEYLA_ROUTES_PATTERNS")),
            (
                "ignored_patterns",
                Kind::List("BEYLA_ROUTES_IGNORED_PATTERNS"),
            ),
            ("ignore_mode", Kind::Var("BEYLA_ROUTES_IGNORE_MODE")),
            ("unmatched", Kind::Var("BEYLA_ROUTES_UNMATCHED")),
            ("max_routes", Kind::Var("BEYLA_ROUTES_MAX")),
        ]),
    ),
    ("attributes", Kind::Section(&[("select", Kind::Select)])),
    (
        "otel_traces_export",
        Kind::Section(&[
            (
                "endpoint",
                Kind::Endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            ),
            ("protocol", Kind::Var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")),
            ("headers", Kind::Pairs("OTEL_EXPORTER_OTLP_TRACES_HEADERS")),
            ("timeout", Kind::Var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")),
            ("enabled", Kind::Var("BEYLA_TRACES_ENABLED")),
            (
                "sampler",
                Kind::Section(&[
                    ("name", Kind::Var("OTEL_TRACES_SAMPLER")),
                    ("arg", Kind::Var("OTEL_TRACES_SAMPLER_ARG")),
                ]),
            ),
            ("max_queue_size", Kind::Var("OTEL_BSP_MAX_QUEUE_SIZE")),
            (
                "max_export_batch_size",
                Kind::Var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
            ),
            ("schedule_delay", Kind::Var("OTEL_BSP_SCHEDULE_DELAY")),
        ]),
    ),
    (
        "otel_metrics_export",
        Kind::Section(&[
            (
                "endpoint",
                Kind::Endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            ),
            ("protocol", Kind::Var("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")),
            ("headers", Kind::Pairs("OTEL_EXPORTER_OTLP_METRICS_HEADERS")),
            ("timeout", Kind::Var("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")),
            ("interval", Kind::Var("BEYLA_METRICS_INTERVAL")),
            ("buckets", Kind::Section(BUCKETS)),
        ]),
    ),
    (
        "prometheus_export",
        Kind::Section(&[
            ("port", Kind::Var("BEYLA_PROMETHEUS_PORT")),
            ("address", Kind::Var("BEYLA_PROMETHEUS_ADDRESS")),
            ("path", Kind::Var("BEYLA_PROMETHEUS_PATH")),
            ("buckets", Kind::Section(BUCKETS)),
        ]),
    ),
    (
        "internal_metrics",
        Kind::Section(&[
            ("exporter", Kind::Var("BEYLA_INTERNAL_METRICS_EXPORTER")),
            (
                "prometheus",
                Kind::Section(&[
                    ("port", Kind::Var("BEYLA_INTERNAL_METRICS_PROMETHEUS_PORT")),
                    ("path", Kind::Var("BEYLA_INTERNAL_METRICS_PROMETHEUS_PATH")),
                ]),
            ),
        ]),
    ),
    (
        "ebpf",
        Kind::Section(&[
            ("capture_bytes", Kind::Var("BEYLA_CAPTURE_BYTES")),
            ("ringbuf_size", Kind::Var("BEYLA_RINGBUF_SIZE")),
            ("capture_backend", Kind::Var("BEYLA_CAPTURE_BACKEND")),
        ]),
    ),
];

const ENTRY_KEYS: &[&str] = &["open_ports", "exe_path", "name", "namespace"];
const SELECT_KEYS: &[&str] = &["include", "exclude"];

/// Every environment variable the file can stand for (for `--print-config` and the docs).
pub fn file_vars() -> Vec<(String, &'static str)> {
    fn walk(prefix: &str, keys: &[(&str, Kind)], out: &mut Vec<(String, &'static str)>) {
        for (k, kind) in keys {
            let path = join(prefix, k);
            match kind {
                Kind::Var(v) | Kind::List(v) | Kind::Pairs(v) | Kind::Endpoint(v) => {
                    out.push((path, v))
                }
                Kind::Section(inner) => walk(&path, inner, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", ROOT, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn fail(line: usize, key: &str, reason: impl Into<String>) -> FileError {
    FileError {
        line,
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// "unknown key", with the closest known key when one is close.
fn unknown(line: usize, path: &str, name: &str, known: &[&str]) -> FileError {
    let best = known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(name, k), *k))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let reason = match best {
        Some((score, k)) if score >= 0.5 => {
            format!("unknown key {name:?}; did you mean {k:?}?")
        }
        _ => format!(
            "unknown key {name:?}; known keys here: {}",
            known.join(", ")
        ),
    };
    fail(line, path, reason)
}

fn scalar<'a>(node: &'a Node, path: &str) -> Result<&'a str, FileError> {
    node.scalar().ok_or_else(|| {
        fail(
            node.line,
            path,
            format!("expected a value, found {}", node.kind()),
        )
    })
}

fn map<'a>(node: &'a Node, path: &str) -> Result<&'a [(Node, Node)], FileError> {
    match &node.value {
        Value::Map(entries) => Ok(entries),
        _ if node.is_null() => Ok(&[]),
        _ => Err(fail(
            node.line,
            path,
            format!("expected a mapping, found {}", node.kind()),
        )),
    }
}

/// A list of scalars; one scalar is a list of one.
fn strings(node: &Node, path: &str) -> Result<Vec<String>, FileError> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| scalar(n, &format!("{path}[{i}]")).map(str::to_owned))
            .collect(),
        _ if node.is_null() => Ok(Vec::new()),
        Value::Scalar { text, .. } => Ok(vec![text.clone()]),
        Value::Map(_) => Err(fail(node.line, path, "expected a list, found a mapping")),
    }
}

/// Characters that would split a `k=v,k2=v2` value, percent-encoded.
fn encode_pair_part(s: &str) -> String {
    s.replace('%', "%25")
        .replace(',', "%2C")
        .replace('=', "%3D")
}

/// Parse a configuration file's text.
pub fn parse(text: &str) -> Result<FileConfig, FileError> {
    let root = yaml::parse(text).map_err(|e| fail(e.line, "(file)", e.message))?;
    let mut out = FileConfig::default();
    if root.is_null() {
        return Ok(out);
    }
    section(&root, "", ROOT, &mut out)?;
    resolve_endpoints(&mut out);
    Ok(out)
}

fn section(
    node: &Node,
    prefix: &str,
    keys: &[(&str, Kind)],
    out: &mut FileConfig,
) -> Result<(), FileError> {
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    let where_ = if prefix.is_empty() { "(file)" } else { prefix };
    for (k, v) in map(node, where_)? {
        let name = scalar(k, where_)?;
        let path = join(prefix, name);
        let Some((_, kind)) = keys.iter().find(|(n, _)| *n == name) else {
            return Err(unknown(k.line, &path, name, &names));
        };
        let at = Spot {
            line: v.line,
            key: path.clone(),
        };
        match kind {
            Kind::Var(var) | Kind::Endpoint(var) => {
                if !v.is_null() {
                    out.vars.push(FileVar {
                        var,
                        value: scalar(v, &path)?.to_owned(),
                        at,
                    });
                }
            }
            Kind::List(var) => {
                let items = strings(v, &path)?;
                if let Some((i, bad)) = items.iter().enumerate().find(|(_, s)| s.contains(',')) {
                    return Err(fail(
                        v.line,
                        &format!("{path}[{i}]"),
                        format!("{bad:?}: one entry per list item (no commas)"),
                    ));
                }
                out.vars.push(FileVar {
                    var,
                    value: items.join(","),
                    at,
                });
            }
            Kind::Pairs(var) => {
                let mut pairs = Vec::new();
                for (hk, hv) in map(v, &path)? {
                    let hname = scalar(hk, &path)?;
                    let value = scalar(hv, &join(&path, hname))?;
                    pairs.push(format!(
                        "{}={}",
                        encode_pair_part(hname),
                        encode_pair_part(value)
                    ));
                }
                out.vars.push(FileVar {
                    var,
                    value: pairs.join(","),
                    at,
                });
            }
            Kind::Section(inner) => section(v, &path, inner, out)?,
            Kind::Entries(which) => {
                let entries = entries(v, &path)?;
                match which {
                    Entries::Instrument => out.instrument = Some(entries),
                    Entries::Exclude => out.exclude = Some(entries),
                    Entries::DefaultExclude => out.default_exclude = Some(entries),
                }
            }
            Kind::Select => out.select = select(v, &path)?,
            Kind::Buckets => {
                let kind = if name == "duration_histogram" {
                    BucketKind::Duration
                } else {
                    BucketKind::Size
                };
                out.buckets.push(BucketSpec {
                    kind,
                    bounds: bounds(v, &path)?,
                    at,
                });
            }
        }
    }
    Ok(())
}

fn entries(node: &Node, path: &str) -> Result<Vec<EntrySpec>, FileError> {
    let items = match &node.value {
        Value::Seq(items) => items.as_slice(),
        _ if node.is_null() => &[],
        _ => {
            return Err(fail(
                node.line,
                path,
                format!("expected a list of entries, found {}", node.kind()),
            ));
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let epath = format!("{path}[{i}]");
        let mut e = EntrySpec {
            line: item.line,
            key: epath.clone(),
            ..Default::default()
        };
        for (k, v) in map(item, &epath)? {
            let name = scalar(k, &epath)?;
            let kpath = join(&epath, name);
            let at = Spot {
                line: v.line,
                key: kpath.clone(),
            };
            let value = || scalar(v, &kpath).map(str::to_owned);
            match name {
                "open_ports" => e.open_ports = Some((value()?, at)),
                "exe_path" => e.exe_path = Some((value()?, at)),
                "name" => e.name = Some(value()?),
                "namespace" => e.namespace = Some(value()?),
                _ => return Err(unknown(k.line, &kpath, name, ENTRY_KEYS)),
            }
        }
        if e.open_ports.is_none() && e.exe_path.is_none() {
            return Err(fail(
                item.line,
                &epath,
                "an entry needs open_ports or exe_path (or both)",
            ));
        }
        out.push(e);
    }
    Ok(out)
}

fn select(node: &Node, path: &str) -> Result<Vec<SelectSpec>, FileError> {
    let mut out = Vec::new();
    for (k, v) in map(node, path)? {
        let metric = scalar(k, path)?.to_owned();
        let mpath = join(path, &metric);
        let mut spec = SelectSpec {
            metric,
            include: None,
            exclude: Vec::new(),
            at: Spot {
                line: k.line,
                key: mpath.clone(),
            },
        };
        for (lk, lv) in map(v, &mpath)? {
            let name = scalar(lk, &mpath)?;
            let lpath = join(&mpath, name);
            match name {
                "include" => spec.include = Some(strings(lv, &lpath)?),
                "exclude" => spec.exclude = strings(lv, &lpath)?,
                _ => return Err(unknown(lk.line, &lpath, name, SELECT_KEYS)),
            }
        }
        out.push(spec);
    }
    Ok(out)
}

/// Histogram bounds: numbers, strictly increasing, at most 64.
fn bounds(node: &Node, path: &str) -> Result<Vec<f64>, FileError> {
    let Value::Seq(items) = &node.value else {
        return Err(fail(
            node.line,
            path,
            format!("expected a list of numbers, found {}", node.kind()),
        ));
    };
    if items.is_empty() || items.len() > 64 {
        return Err(fail(node.line, path, "needs between 1 and 64 bounds"));
    }
    let mut out: Vec<f64> = Vec::with_capacity(items.len());
    for (i, n) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let s = scalar(n, &ipath)?;
        let x: f64 = s
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| fail(n.line, &ipath, format!("{s:?} is not a number")))?;
        if out.last().is_some_and(|&prev| x <= prev) {
            return Err(fail(n.line, &ipath, "bounds must be strictly increasing"));
        }
        out.push(x);
    }
    Ok(out)
}

/// `endpoint: http://collector:4318` means the signal's path on that collector, unless the
/// protocol is gRPC (`grpc`, or port 4317 with no protocol given).
fn resolve_endpoints(out: &mut FileConfig) {
    let protocols = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "/v1/traces",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "/v1/metrics",
        ),
    ];
    for (evar, pvar, suffix) in protocols {
        let protocol = out.var(pvar).map(|v| v.value.trim().to_owned());
        let Some(ep) = out.vars.iter_mut().find(|v| v.var == evar) else {
            continue;
        };
        let url = ep.value.trim().trim_end_matches('/');
        let Some((_, rest)) = url.split_once("://") else {
            continue; // refused later, with the variable's reason
        };
        let has_path = rest.contains('/');
        let grpc = match protocol.as_deref() {
            Some(p) => p == "grpc",
            None => rest.ends_with(":4317"),
        };
        if !has_path && !grpc {
            ep.value = format!("{url}{suffix}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FileError {
        parse(text).unwrap_err()
    }

    #[test]
    fn vars_carry_their_line_and_key() {
        let f = parse(
            "log_level: debug\n\
             otel_traces_export:\n  endpoint: http://c:4318\n  sampler:\n    name: always_off\n\
             routes:\n  patterns: [\"/a/{id}\", /b]\n\
             otel_metrics_export:\n  endpoint: http://c:4317\n  headers:\n    X-Scope-OrgID: a,b=c\n",
        )
        .unwrap();
        let v = |var| f.var(var).unwrap().clone();
        assert_eq!(
            v("BEYLA_LOG_LEVEL"),
            FileVar {
                var: "BEYLA_LOG_LEVEL",
                value: "debug".into(),
                at: Spot {
                    line: 1,
                    key: "log_level".into()
                }
            }
        );
        let ep = v("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        assert_eq!(ep.value, "http://c:4318/v1/traces");
        assert_eq!(
            (ep.at.line, ep.at.key.as_str()),
            (3, "otel_traces_export.endpoint")
        );
        assert_eq!(v("OTEL_TRACES_SAMPLER").at.line, 5);
        assert_eq!(v("BEYLA_ROUTES_PATTERNS").value, "/a/{id},/b");
        // 4317 without a protocol is gRPC: no path appended.
        assert_eq!(
            v("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").value,
            "http://c:4317"
        );
        assert_eq!(
            v("OTEL_EXPORTER_OTLP_METRICS_HEADERS").value,
            "X-Scope-OrgID=a%2Cb%3Dc"
        );
    }

    #[test]
    fn endpoints_with_a_path_or_grpc_are_kept() {
        for (text, want) in [
            (
                "otel_traces_export: {endpoint: http://c:4318/x/v1/traces}",
                "http://c:4318/x/v1/traces",
            ),
            (
                "otel_traces_export: {endpoint: http://c:4318, protocol: grpc}",
                "http://c:4318",
            ),
            (
                "otel_traces_export: {endpoint: 'http://c:4318/'}",
                "http://c:4318/v1/traces",
            ),
        ] {
            let f = parse(text).unwrap();
            assert_eq!(
                f.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").unwrap().value,
                want
            );
        }
    }

    #[test]
    fn discovery_entries() {
        let f = parse(
            "discovery:\n  instrument:\n    - open_ports: 8080\n      name: a\n    - exe_path: \"*/python3*\"\n      open_ports: 9000-9001\n      namespace: shop\n  default_exclude_instrument: []\n",
        )
        .unwrap();
        let i = f.instrument.unwrap();
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].open_ports.as_ref().unwrap().0, "8080");
        assert_eq!(i[0].name.as_deref(), Some("a"));
        assert_eq!(i[1].line, 5);
        assert_eq!(i[1].exe_path.as_ref().unwrap().0, "*/python3*");
        assert_eq!(
            i[1].open_ports.as_ref().unwrap().1.key,
            "discovery.instrument[1].open_ports"
        );
        assert_eq!(f.default_exclude, Some(Vec::new()));
        assert_eq!(f.exclude, None);
    }

    #[test]
    fn select_and_buckets() {
        let f = parse(
            "attributes:\n  select:\n    http_server_request_duration:\n      include: [\"*\"]\n      exclude: [url.path]\n    \"*\":\n      exclude: server.port\n\
             prometheus_export:\n  buckets:\n    duration_histogram: [0, 0.1, 1]\n",
        )
        .unwrap();
        assert_eq!(f.select.len(), 2);
        assert_eq!(f.select[0].include.as_deref(), Some(&["*".to_owned()][..]));
        assert_eq!(f.select[1].exclude, vec!["server.port".to_owned()]);
        assert_eq!(f.select[1].include, None);
        assert_eq!(f.buckets[0].bounds, vec![0.0, 0.1, 1.0]);
        assert_eq!(f.buckets[0].kind, BucketKind::Duration);
    }

    #[test]
    fn bad_files_name_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "otel_trace_export:\n  endpoint: x\n",
                1,
                "otel_trace_export",
                "did you mean \"otel_traces_export\"",
            ),
            (
                "ebpf:\n  capture_byte: 10\n",
                2,
                "ebpf.capture_byte",
                "did you mean \"capture_bytes\"",
            ),
            ("zzz: 1\n", 1, "zzz", "known keys here: log_level"),
            (
                "log_level: [debug]\n",
                1,
                "log_level",
                "expected a value, found a list",
            ),
            (
                "routes: 5\n",
                1,
                "routes",
                "expected a mapping, found a scalar",
            ),
            (
                "discovery:\n  instrument:\n    - name: x\n",
                3,
                "discovery.instrument[0]",
                "needs open_ports or exe_path",
            ),
            (
                "discovery:\n  instrument:\n    - open_port: 80\n",
                3,
                "discovery.instrument[0].open_port",
                "did you mean \"open_ports\"",
            ),
            (
                "discovery:\n  instrument: {open_ports: 80}\n",
                2,
                "discovery.instrument",
                "expected a list of entries",
            ),
            (
                "attributes:\n  select:\n    x:\n      includes: [a]\n",
                4,
                "attributes.select.x.includes",
                "did you mean \"include\"",
            ),
            (
                "prometheus_export:\n  buckets:\n    duration_histogram: [1, 0.5]\n",
                3,
                "prometheus_export.buckets.duration_histogram[1]",
                "strictly increasing",
            ),
            (
                "prometheus_export:\n  buckets:\n    duration_histogram: [1, x]\n",
                3,
                "prometheus_export.buckets.duration_histogram[1]",
                "not a number",
            ),
            (
                "prometheus_export:\n  buckets:\n    request_size_histogram: 5\n",
                3,
                "prometheus_export.buckets.request_size_histogram",
                "list of numbers",
            ),
            (
                "routes:\n  patterns: [\"/a,/b\"]\n",
                2,
                "routes.patterns[0]",
                "no commas",
            ),
            (
                "log_level: info\nlog_level: debug\n",
                2,
                "(file)",
                "appears twice",
            ),
            ("a: [\n", 2, "(file)", ""),
            (
                "- 1\n- 2\n",
                1,
                "(file)",
                "expected a mapping, found a list",
            ),
        ];
        for (text, line, key, reason) in cases {
            let e = err(text);
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{text:?}: {e:?}");
            assert!(e.reason.contains(reason), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn every_var_is_named_once() {
        let vars = file_vars();
        let mut names: Vec<_> = vars.iter().map(|(_, v)| *v).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), vars.len());
    }
}
