//! Prometheus text exposition (format 0.0.4) of the SDK's collected metrics.
//!
//! Names follow the OpenTelemetry → Prometheus rules Beyla uses: dots become underscores, the
//! unit is appended (`s` → `_seconds`, `By` → `_bytes`), monotonic sums get `_total`.
//! Attributes become labels the same way; every series also gets `service_name` and
//! `service_instance_id` from its process's resource, and each process a `target_info` series
//! with its resource attributes.

use std::{collections::BTreeMap, fmt::Write as _};

use opentelemetry::Value;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};

use super::Collected;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `a.b-c` → `a_b_c`; a leading digit gets a `_` prefix.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn metric_name(name: &str, unit: &str) -> String {
    let mut n = sanitize(name);
    let suffix = match unit {
        "s" => "_seconds",
        "By" => "_bytes",
        "ms" => "_milliseconds",
        _ => "",
    };
    if !suffix.is_empty() && !n.ends_with(suffix) {
        n.push_str(suffix);
    }
    n
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

struct Family {
    kind: &'static str,
    help: String,
    lines: Vec<String>,
}

fn labels(base: &[(String, String)], attrs: &mut dyn Iterator<Item = (String, String)>) -> String {
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in attrs {
        all.insert(sanitize(&k), v);
    }
    for (k, v) in base {
        all.insert(k.clone(), v.clone());
    }
    let mut s = String::new();
    for (k, v) in all {
        if !s.is_empty() {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(&v));
    }
    s
}

fn with_le(labels: &str, le: &str) -> String {
    if labels.is_empty() {
        format!("le=\"{le}\"")
    } else {
        format!("{labels},le=\"{le}\"")
    }
}

fn kv_pairs<'a>(
    it: impl Iterator<Item = &'a opentelemetry::KeyValue> + 'a,
) -> impl Iterator<Item = (String, String)> + 'a {
    it.map(|kv| (kv.key.as_str().to_owned(), value_str(&kv.value)))
}

fn add_data<T: Num>(
    fams: &mut BTreeMap<String, Family>,
    name: &str,
    unit: &str,
    help: &str,
    data: &MetricData<T>,
    base: &[(String, String)],
) {
    let n = metric_name(name, unit);
    match data {
        MetricData::Histogram(h) => {
            let f = fams.entry(n.clone()).or_insert_with(|| Family {
                kind: "histogram",
                help: help.to_owned(),
                lines: Vec::new(),
            });
            for dp in h.data_points() {
                let l = labels(base, &mut kv_pairs(dp.attributes()));
                let mut cum = 0u64;
                let counts: Vec<u64> = dp.bucket_counts().collect();
                for (i, b) in dp.bounds().enumerate() {
                    cum += counts.get(i).copied().unwrap_or(0);
                    f.lines
                        .push(format!("{n}_bucket{{{}}} {cum}", with_le(&l, &fmt_f64(b))));
                }
                f.lines.push(format!(
                    "{n}_bucket{{{}}} {}",
                    with_le(&l, "+Inf"),
                    dp.count()
                ));
                let brace = |s: &str| {
                    if s.is_empty() {
                        String::new()
                    } else {
                        format!("{{{s}}}")
                    }
                };
                f.lines
                    .push(format!("{n}_sum{} {}", brace(&l), fmt_f64(dp.sum().f())));
                f.lines
                    .push(format!("{n}_count{} {}", brace(&l), dp.count()));
            }
        }
        MetricData::Sum(s) => {
            let (fam, kind, sample) = if s.is_monotonic() {
                let base_name = n.trim_end_matches("_total").to_owned();
                let sample = format!("{base_name}_total");
                (base_name, "counter", sample)
            } else {
                (n.clone(), "gauge", n.clone())
            };
            let f = fams.entry(fam).or_insert_with(|| Family {
                kind,
                help: help.to_owned(),
                lines: Vec::new(),
            });
            for dp in s.data_points() {
                let l = labels(base, &mut kv_pairs(dp.attributes()));
                let l = if l.is_empty() { l } else { format!("{{{l}}}") };
                f.lines
                    .push(format!("{sample}{l} {}", fmt_f64(dp.value().f())));
            }
        }
        MetricData::Gauge(g) => {
            let f = fams.entry(n.clone()).or_insert_with(|| Family {
                kind: "gauge",
                help: help.to_owned(),
                lines: Vec::new(),
            });
            for dp in g.data_points() {
                let l = labels(base, &mut kv_pairs(dp.attributes()));
                let l = if l.is_empty() { l } else { format!("{{{l}}}") };
                f.lines.push(format!("{n}{l} {}", fmt_f64(dp.value().f())));
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn add_resource_metrics(fams: &mut BTreeMap<String, Family>, rm: &ResourceMetrics) {
    let res = rm.resource();
    let get = |k: &str| {
        res.get(&opentelemetry::Key::from(k.to_owned()))
            .map(|v| value_str(&v))
            .unwrap_or_default()
    };
    let base = vec![
        ("service_name".to_owned(), get("service.name")),
        ("service_instance_id".to_owned(), get("service.instance.id")),
    ];
    let info = fams
        .entry("target_info".to_owned())
        .or_insert_with(|| Family {
            kind: "gauge",
            help: "Target metadata".to_owned(),
            lines: Vec::new(),
        });
    let l = labels(
        &base,
        &mut res
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "service.name" | "service.instance.id"))
            .map(|(k, v)| (k.as_str().to_owned(), value_str(v))),
    );
    info.lines.push(format!("target_info{{{l}}} 1"));
    for sm in rm.scope_metrics() {
        for m in sm.metrics() {
            match m.data() {
                AggregatedMetrics::F64(d) => {
                    add_data(fams, m.name(), m.unit(), m.description(), d, &base)
                }
                AggregatedMetrics::U64(d) => {
                    add_data(fams, m.name(), m.unit(), m.description(), d, &base)
                }
                AggregatedMetrics::I64(d) => {
                    add_data(fams, m.name(), m.unit(), m.description(), d, &base)
                }
            }
        }
    }
}

/// Numbers the SDK aggregates, rendered as f64.
trait Num: Copy {
    fn f(self) -> f64;
}
impl Num for f64 {
    fn f(self) -> f64 {
        self
    }
}
impl Num for u64 {
    fn f(self) -> f64 {
        self as f64
    }
}
impl Num for i64 {
    fn f(self) -> f64 {
        self as f64
    }
}

/// Render every collection as one exposition (families sorted by name).
pub fn render(collected: &[Collected]) -> String {
    let mut fams = BTreeMap::new();
    for c in collected {
        add_resource_metrics(&mut fams, &c.metrics);
    }
    let mut out = String::new();
    for (name, f) in fams {
        if f.lines.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "# HELP {name} {}",
            f.help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for l in f.lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}
