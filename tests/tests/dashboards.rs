//! The Grafana dashboards in `dashboards/` against what the daemon really exports.
//!
//! A dashboard that names a metric or a label the daemon does not emit shows "No data" and
//! nothing else: nobody notices until the day it is needed. So every PromQL expression of
//! every panel and every variable query is read here, and each metric name and label name it
//! uses (selectors `{…}`, `by`/`without`/`on`/`ignoring`/`group_*` lists, `label_replace`
//! sources, `label_values(metric, label)`) is looked up in what a real daemon exported after
//! real traffic (legends and variable regexes are held to the labels their query keeps):
//!
//! - the Prometheus endpoint (`GET /metrics`, `GET /internal/metrics`), after HTTP server and
//!   client traffic (a Python server whose `/proxy/` calls an upstream) and gRPC traffic with
//!   OK and failing codes (the tonic server and client);
//! - the same metrics over OTLP, translated as Prometheus' and Mimir's OTLP receivers do
//!   (dots → `_`, unit suffix, `_total` for counters; resource `service.name` → `job`,
//!   `service.instance.id` → `instance`, the rest → `target_info`), and the daemon's own
//!   counters over OTLP from a second, idle daemon (`BEYLA_INTERNAL_METRICS_EXPORTER=otel`).
//!
//! The RED dashboard works with both labellings because each of its queries has one branch
//! per labelling: a "Prometheus" selector (`service_name=~"$service",
//! service_instance_id=~"$instance"`) and an "OTLP" selector (`service_name="",
//! job=~"$service", instance=~"$instance"`). `dashboards_are_well_formed` (no root needed)
//! holds every panel to that, so that no panel works on one path only; the OTLP check skips
//! the Prometheus branches (they cannot match there) and the Prometheus check reads all.
//! `job` and `instance` are accepted everywhere: the scraper or the OTLP receiver adds them.
//! The other way round, every metric family the daemon exports must appear on some panel, so
//! that a new counter gets one.
//!
//! Needs root, the daemon binary and python3 (tests/setup.sh); about 3 s. Run:
//! `cargo test -p beyla-rs-tests --test dashboards -- --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::exposition::{self, Sample};
use beyla_rs_tests::fixtures::{self, ServerOpts};
use beyla_rs_tests::otlp::{AttrValue, OtlpReceiver, attrs_to_map};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, require_root, settle, span_timeout, wait_until};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::Value;

// ------------------------------------------------------------------------------------------
// The dashboards and their queries.

struct Dashboard {
    /// `dashboards/<name>.json`, for messages.
    file: String,
    /// The file name without `.json`: the dashboard's uid must be this (links and
    /// provisioning refer to it, so it never changes by accident).
    stem: String,
    json: Value,
}

fn load_dashboards() -> Vec<Dashboard> {
    let dir = beyla_rs_tests::workspace_root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dashboards/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let file = format!("dashboards/{name}");
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{file}: {e}"));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            Dashboard {
                file,
                stem: name.trim_end_matches(".json").to_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, those inside rows (collapsed rows keep theirs in `panels`) included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

fn is_datasource_var(ds: &Value) -> bool {
    ds["type"] == "prometheus"
        && matches!(ds["uid"].as_str(), Some("${datasource}" | "$datasource"))
}

/// The query string of a variable (Grafana 10/11 store `{ "query": "...", "qryType": … }`,
/// older dashboards a plain string).
fn variable_query(v: &Value) -> Option<&str> {
    v["query"]["query"].as_str().or(v["query"].as_str())
}

/// One query to check: a panel target or a variable.
struct Query {
    /// `dashboards/x.json, panel "…" (query A)` or `dashboards/x.json, variable "…"`.
    place: String,
    /// A panel target (held to the dashboards' label conventions) or a variable query.
    panel: bool,
    refs: Refs,
    legend: Option<String>,
    /// `query_result(…)` variables: the label their regex extracts from each result.
    regex_label: Option<String>,
}

/// Every query of every dashboard, analysed; or the reasons some could not be.
fn queries(dashboards: &[Dashboard]) -> (Vec<Query>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for d in dashboards {
        for p in panels(&d.json) {
            let title = p["title"].as_str().unwrap_or("<untitled>");
            for t in p["targets"].as_array().into_iter().flatten() {
                let place = format!(
                    "{}, panel {title:?} (query {})",
                    d.file,
                    t["refId"].as_str().unwrap_or("?")
                );
                let Some(expr) = t["expr"].as_str() else {
                    problems.push(format!("{place}: no `expr`"));
                    continue;
                };
                match analyse(expr) {
                    Ok(refs) => out.push(Query {
                        place,
                        panel: true,
                        refs,
                        legend: t["legendFormat"].as_str().map(str::to_owned),
                        regex_label: None,
                    }),
                    Err(e) => problems.push(format!("{place}: {e}\n    in: {expr}")),
                }
            }
        }
        for v in variables(&d.json) {
            if v["type"] != "query" {
                continue;
            }
            let place = format!(
                "{}, variable {:?}",
                d.file,
                v["name"].as_str().unwrap_or("?")
            );
            let Some(q) = variable_query(v) else {
                problems.push(format!("{place}: no query"));
                continue;
            };
            match analyse_variable(q) {
                Ok(refs) => {
                    let regex_label = q.trim_start().starts_with("query_result(").then(|| {
                        // `/label="(…)"/`: the label the value is cut from.
                        let r = v["regex"].as_str().unwrap_or("").trim_start_matches('/');
                        r.chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                    });
                    out.push(Query {
                        place,
                        panel: false,
                        refs,
                        legend: None,
                        regex_label,
                    })
                }
                Err(e) => problems.push(format!("{place}: {e}\n    in: {q}")),
            }
        }
    }
    (out, problems)
}

/// Grafana's Prometheus variable queries: `label_values(expr, label)`, `label_values(label)`,
/// `query_result(expr)`.
fn analyse_variable(q: &str) -> Result<Refs, String> {
    let q = q.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(args) = inner("label_values(") {
        let (expr, label) = match args.rsplit_once(',') {
            Some((e, l)) => (e.trim(), l.trim()),
            None => ("", args),
        };
        if !is_label_name(label) {
            return Err(format!("label_values: {label:?} is not a label name"));
        }
        let mut refs = if expr.is_empty() {
            Refs::default()
        } else {
            analyse(expr)?
        };
        refs.labels.push(LabelRef {
            label: label.to_owned(),
            how: "label_values",
            scope: 0..usize::MAX,
        });
        return Ok(refs);
    }
    if let Some(expr) = inner("query_result(") {
        return analyse(expr);
    }
    Err("unsupported variable query (expected label_values(…) or query_result(…))".into())
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

// ------------------------------------------------------------------------------------------
// PromQL, as far as names go: a lexer and a walk over its tokens that finds every metric and
// label name with the part of the expression it applies to. Not a full parser: enough to be
// exact about names, and strict enough to refuse what it does not understand (a regex over
// metric names, an unbalanced bracket) instead of silently checking less.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    /// A Grafana variable (`$__rate_interval`, `${datasource}`).
    Var,
    Op(String),
    Open(char),
    Close(char),
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '(' | '{' | '[' => {
                out.push(Tok::Open(c));
                i += 1;
            }
            ')' | '}' | ']' => {
                out.push(Tok::Close(c));
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '"' | '\'' | '`' => {
                let mut v = String::new();
                i += 1;
                loop {
                    let Some(&ch) = b.get(i) else {
                        return Err(format!("unterminated string in {s:?}"));
                    };
                    i += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\\' && c != '`' {
                        let Some(&e) = b.get(i) else {
                            return Err(format!("unterminated string in {s:?}"));
                        };
                        i += 1;
                        v.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        v.push(ch);
                    }
                }
                out.push(Tok::Str(v));
            }
            '$' => {
                i += 1;
                if b.get(i) == Some(&'{') {
                    while i < b.len() && b[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                        i += 1;
                    }
                }
                out.push(Tok::Var);
            }
            _ if c.is_ascii_digit()
                || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations (`0.95`, `5m`, `1h30m`).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num);
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                    i += 1;
                }
                out.push(Tok::Ident(b[start..i].iter().collect()));
            }
            _ => {
                let two: String = b[i..(i + 2).min(b.len())].iter().collect();
                if ["==", "!=", "=~", "!~", "<=", ">="].contains(&two.as_str()) {
                    out.push(Tok::Op(two));
                    i += 2;
                } else if "=<>+-*/%^@:".contains(c) {
                    out.push(Tok::Op(c.to_string()));
                    i += 1;
                } else {
                    return Err(format!("unexpected character {c:?}"));
                }
            }
        }
    }
    Ok(out)
}

/// A series selector: the metric and its label matchers.
#[derive(Clone, Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
    /// Token index, to place it in the scopes of label references.
    pos: usize,
}

#[derive(Clone, Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

impl Selector {
    fn has(&self, label: &str, op: &str, value: &str) -> bool {
        self.matchers
            .iter()
            .any(|m| m.label == label && m.op == op && m.value == value)
    }

    /// The branch of a query for the daemon's Prometheus endpoint: the service in a
    /// `service_name` label (a variable's `service_name!=""` says the same).
    fn prometheus_form(&self) -> bool {
        self.has("service_name", "=~", "$service") || self.has("service_name", "!=", "")
    }

    /// The branch for OTLP ingested by Prometheus or Mimir: no `service_name` label, the
    /// service in `job`.
    fn otlp_form(&self) -> bool {
        self.has("service_name", "=", "")
    }
}

/// A label name used outside a selector, and the tokens it applies to.
#[derive(Clone, Debug)]
struct LabelRef {
    label: String,
    how: &'static str,
    scope: Range<usize>,
}

#[derive(Debug, Default)]
struct Refs {
    selectors: Vec<Selector>,
    labels: Vec<LabelRef>,
    /// Labels an expression creates (`label_replace`/`label_join` destinations), where.
    defined: Vec<(String, usize)>,
    /// Labels of `by (…)` clauses: what an aggregation leaves for legends.
    grouped: BTreeSet<String>,
}

const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];

fn analyse(expr: &str) -> Result<Refs, String> {
    let t = lex(expr)?;
    // Matching brackets, and the innermost open bracket around each token.
    let mut matching = vec![usize::MAX; t.len()];
    let mut parent = vec![usize::MAX; t.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        parent[i] = stack.last().copied().unwrap_or(usize::MAX);
        match tok {
            Tok::Open(_) => stack.push(i),
            Tok::Close(c) => {
                let o = stack.pop().ok_or_else(|| format!("unbalanced {c:?}"))?;
                let want = match t[o] {
                    Tok::Open('(') => ')',
                    Tok::Open('{') => '}',
                    _ => ']',
                };
                if *c != want {
                    return Err(format!("{c:?} closes a {:?}", t[o]));
                }
                matching[o] = i;
                matching[i] = o;
            }
            _ => {}
        }
    }
    if let Some(&o) = stack.last() {
        return Err(format!("unclosed {:?}", t[o]));
    }
    let mut refs = Refs::default();
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Ident(name) => {
                let name = name.as_str();
                let next = t.get(i + 1);
                let paren_next = next == Some(&Tok::Open('('));
                if matches!(
                    name,
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    if !paren_next {
                        if name.starts_with("group_") {
                            i += 1;
                            continue;
                        }
                        return Err(format!("`{name}` without a label list"));
                    }
                    let close = matching[i + 1];
                    let labels = label_list(&t[i + 2..close])?;
                    let scope = match name {
                        // `sum by (l) (expr)` or `sum (expr) by (l)`: the aggregated expression.
                        "by" | "without" => {
                            if i > 0 && t[i - 1] == Tok::Close(')') {
                                matching[i - 1]..i
                            } else if t.get(close + 1) == Some(&Tok::Open('(')) {
                                close + 1..matching[close + 1]
                            } else {
                                return Err(format!("cannot tell what `{name}` aggregates"));
                            }
                        }
                        // Vector matching: both operands; the whole expression is close enough.
                        _ => 0..t.len(),
                    };
                    for l in labels {
                        if name == "by" {
                            refs.grouped.insert(l.clone());
                        }
                        refs.labels.push(LabelRef {
                            label: l,
                            how: match name {
                                "by" => "by (…)",
                                "without" => "without (…)",
                                "on" => "on (…)",
                                "ignoring" => "ignoring (…)",
                                _ => "group_left/right (…)",
                            },
                            scope: scope.clone(),
                        });
                    }
                    i = close + 1;
                    continue;
                }
                if KEYWORDS.contains(&name) {
                    i += 1;
                    if name == "offset" {
                        if t.get(i) == Some(&Tok::Op("-".into())) {
                            i += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                if AGGREGATORS.contains(&name) || paren_next {
                    if matches!(name, "label_replace" | "label_join") {
                        label_function(name, &t, i + 1, &matching, &parent, &mut refs)?;
                    }
                    i += 1;
                    continue;
                }
                // A metric name, with or without matchers.
                let (matchers, end) = if next == Some(&Tok::Open('{')) {
                    let close = matching[i + 1];
                    (matchers(&t[i + 2..close])?, close)
                } else {
                    (Vec::new(), i)
                };
                refs.selectors.push(Selector {
                    metric: name.to_owned(),
                    matchers,
                    pos: i,
                });
                i = end + 1;
            }
            Tok::Open('{') => {
                // `{__name__=…}`: the metric names are in the matchers.
                let close = matching[i];
                let ms = matchers(&t[i + 1..close])?;
                let names: Vec<&Matcher> = ms.iter().filter(|m| m.label == "__name__").collect();
                let [m] = names.as_slice() else {
                    return Err("a selector without a metric name".into());
                };
                let metrics: Vec<String> = match m.op.as_str() {
                    "=" => vec![m.value.clone()],
                    "=~" => m
                        .value
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .split('|')
                        .map(str::to_owned)
                        .collect(),
                    _ => return Err(format!("cannot list the metrics of __name__{}", m.op)),
                };
                if let Some(bad) = metrics.iter().find(|n| !is_metric_name(n)) {
                    return Err(format!(
                        "__name__ matches {bad:?}: only plain names (a|b|c) can be checked"
                    ));
                }
                let rest: Vec<Matcher> = ms.into_iter().filter(|m| m.label != "__name__").collect();
                for metric in metrics {
                    refs.selectors.push(Selector {
                        metric,
                        matchers: rest.clone(),
                        pos: i,
                    });
                }
                i = close + 1;
            }
            // Ranges, subqueries: durations and variables only.
            Tok::Open('[') => i = matching[i] + 1,
            _ => i += 1,
        }
    }
    Ok(refs)
}

/// `label_replace(v, dst, replacement, src, regex)`, `label_join(v, dst, sep, src…)`: `dst` is
/// created, the sources must exist on `v`.
fn label_function(
    name: &str,
    t: &[Tok],
    open: usize,
    matching: &[usize],
    parent: &[usize],
    refs: &mut Refs,
) -> Result<(), String> {
    let close = matching[open];
    let mut args: Vec<Range<usize>> = Vec::new();
    let mut start = open + 1;
    for j in open + 1..close {
        if t[j] == Tok::Comma && parent[j] == open {
            args.push(start..j);
            start = j + 1;
        }
    }
    args.push(start..close);
    let string = |r: &Range<usize>| match &t[r.clone()] {
        [Tok::Str(s)] => Ok(s.clone()),
        _ => Err(format!("{name}: expected a string argument")),
    };
    let sources = match name {
        "label_replace" if args.len() == 5 => vec![string(&args[3])?],
        "label_join" if args.len() >= 3 => {
            args[3..].iter().map(string).collect::<Result<_, _>>()?
        }
        _ => return Err(format!("{name}: wrong number of arguments")),
    };
    refs.defined.push((string(&args[1])?, open));
    for s in sources {
        refs.labels.push(LabelRef {
            label: s,
            how: "label_replace/label_join source",
            scope: args[0].clone(),
        });
    }
    Ok(())
}

fn label_list(t: &[Tok]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (k, tok) in t.iter().enumerate() {
        match (k % 2, tok) {
            (0, Tok::Ident(l)) if is_label_name(l) => out.push(l.clone()),
            (1, Tok::Comma) => {}
            _ => return Err(format!("bad label list {t:?}")),
        }
    }
    Ok(out)
}

fn matchers(t: &[Tok]) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < t.len() {
        match (&t[k], t.get(k + 1), t.get(k + 2)) {
            (Tok::Ident(l), Some(Tok::Op(op)), Some(Tok::Str(v)))
                if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
            {
                out.push(Matcher {
                    label: l.clone(),
                    op: op.clone(),
                    value: v.clone(),
                });
            }
            _ => return Err(format!("bad label matcher in {t:?}")),
        }
        k += 3;
        match t.get(k) {
            None => {}
            Some(Tok::Comma) => k += 1,
            Some(other) => return Err(format!("expected `,` in a selector, got {other:?}")),
        }
    }
    Ok(out)
}

/// `{{label}}` placeholders of a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_owned()))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Checks that need no daemon: JSON, datasources, the label conventions, legends.

#[test]
fn dashboards_are_well_formed() {
    let dashboards = load_dashboards();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for d in &dashboards {
        problems.extend(structure_problems(d));
        if !uids.insert(d.json["uid"].as_str().unwrap_or("").to_owned()) {
            problems.push(format!("{}: uid used twice", d.file));
        }
    }
    let (queries, parse_problems) = queries(&dashboards);
    problems.extend(parse_problems);
    for q in &queries {
        problems.extend(convention_problems(q));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in dashboards/:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    assert!(queries.iter().any(|q| q.panel), "no panel query found");
}

/// The checker itself, on known input: it accepts what is right and names each mistake, so
/// that a green run of the daemon test means something.
#[test]
fn checker_finds_each_mistake() {
    let exposition = r#"
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route="/a",service_instance_id="h-1",service_name="s",le="+Inf"} 1
http_server_request_duration_seconds_count{http_route="/a",service_instance_id="h-1",service_name="s"} 1
target_info{host_name="h",service_instance_id="h-1",service_name="s"} 1
"#;
    let mut model = Model {
        source: "the test input",
        ..Model::default()
    };
    for s in exposition::parse(exposition).unwrap() {
        model.add(&s.name, s.labels);
    }
    let query = |expr: &str| Query {
        place: "q".into(),
        panel: true,
        refs: analyse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")),
        legend: None,
        regex_label: None,
    };
    let check = |expr: &str, otlp: bool| missing(&query(expr), &model, otlp);
    for ok in [
        r#"histogram_quantile(0.95, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{service_name=~"$service"}[$__rate_interval])))"#,
        // job and instance come from the scraper.
        "sum(rate(http_server_request_duration_seconds_count[5m] offset 1m)) by (job, instance)",
        // A label made by label_replace can be aggregated on.
        r#"sum by (svc) (label_replace(http_server_request_duration_seconds_count, "svc", "$1", "service_name", "(.*)"))"#,
        r#"group by (host_name) ({__name__=~"target_info|http_server_request_duration_seconds_count"})"#,
    ] {
        assert_eq!(check(ok, false), Vec::<String>::new(), "{ok}");
    }
    for (bad, needle) in [
        (
            "rate(http_server_request_duration_seconds_total[5m])",
            "metric `http_server_request_duration_seconds_total`",
        ),
        (
            r#"http_server_request_duration_seconds_count{http_path="/a"}"#,
            "label `http_path`",
        ),
        (
            r#"http_server_request_duration_seconds_count{http_route="/b"}"#,
            r#"http_route="/b""#,
        ),
        // host_name is on target_info, not on what is aggregated.
        (
            "sum by (host_name) (http_server_request_duration_seconds_count) * on () group_left target_info",
            "label `host_name`",
        ),
        // le is on the buckets only.
        (
            "sum(http_server_request_duration_seconds_count) by (le)",
            "label `le`",
        ),
        (
            r#"label_replace(http_server_request_duration_seconds_count, "x", "$1", "service", "(.*)")"#,
            "label `service`",
        ),
        (
            "target_info * on (service_name, host) group_left http_server_request_duration_seconds_count",
            "label `host`",
        ),
    ] {
        let p = check(bad, false);
        assert!(p.len() == 1 && p[0].contains(needle), "{bad}: {p:?}");
    }
    // The OTLP check skips the Prometheus branch, and holds the OTLP branch to the absence of
    // service_name (here it is present: that branch would select nothing).
    let both = r#"sum by (service_name) (http_server_request_duration_seconds_count{service_name=~"$service"}) or http_server_request_duration_seconds_count{service_name="", job=~"$service"}"#;
    let p = check(both, true);
    assert!(p.len() == 1 && p[0].contains("selects nothing"), "{p:?}");
    // A panel with one branch only works on one path.
    let one = query(
        r#"sum by (service_name) (rate(http_server_request_duration_seconds_count{service_name=~"$service", service_instance_id=~"$instance"}[1m]))"#,
    );
    let p = convention_problems(&one);
    assert!(p.len() == 1 && p[0].contains("needs its twin"), "{p:?}");
    // What the walk cannot vouch for is refused, not skipped.
    for bad in [
        r#"{__name__=~"http_.*"}"#,
        "sum(rate(x[5m])",
        r#"x{a="b" c="d"}"#,
        "sum by (a b) (x)",
    ] {
        assert!(analyse(bad).is_err(), "{bad}");
    }
}

fn structure_problems(d: &Dashboard) -> Vec<String> {
    let mut out = Vec::new();
    let j = &d.json;
    let f = &d.file;
    if j["uid"].as_str() != Some(d.stem.as_str()) {
        out.push(format!(
            "{f}: uid {} is not the file's name {:?} (uids must stay fixed)",
            j["uid"], d.stem
        ));
    }
    if j["title"].as_str().is_none_or(str::is_empty) {
        out.push(format!("{f}: no title"));
    }
    // Provisioned from files: an import placeholder would stay unresolved.
    if j.get("__inputs").is_some() || j.get("__requires").is_some() {
        out.push(format!(
            "{f}: has __inputs/__requires (export for sharing); provisioning needs neither"
        ));
    }
    if !j["schemaVersion"]
        .as_u64()
        .is_some_and(|v| (36..=41).contains(&v))
    {
        out.push(format!(
            "{f}: schemaVersion {} is not Grafana 10/11's",
            j["schemaVersion"]
        ));
    }
    let vars = variables(j);
    if !vars.iter().any(|v| {
        v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
    }) {
        out.push(format!(
            "{f}: no `datasource` variable of type datasource (prometheus)"
        ));
    }
    for v in &vars {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("?");
        if !is_datasource_var(&v["datasource"]) {
            out.push(format!(
                "{f}, variable {name:?}: datasource is {}, not ${{datasource}}",
                v["datasource"]
            ));
        }
        if v["definition"].as_str() != variable_query(v) {
            out.push(format!(
                "{f}, variable {name:?}: `definition` differs from the query"
            ));
        }
    }
    let mut ids = BTreeSet::new();
    for p in panels(j) {
        let title = p["title"].as_str().unwrap_or("<untitled>");
        if !ids.insert(p["id"].as_u64()) {
            out.push(format!("{f}, panel {title:?}: id {} used twice", p["id"]));
        }
        if p["type"] == "row" {
            continue;
        }
        if !is_datasource_var(&p["datasource"]) {
            out.push(format!(
                "{f}, panel {title:?}: datasource is {}, not ${{datasource}}",
                p["datasource"]
            ));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            out.push(format!("{f}, panel {title:?}: no query"));
        }
        for t in targets {
            if t.get("datasource").is_some() && !is_datasource_var(&t["datasource"]) {
                out.push(format!(
                    "{f}, panel {title:?} (query {}): datasource is {}, not ${{datasource}}",
                    t["refId"], t["datasource"]
                ));
            }
        }
    }
    out
}

/// The dashboards' own rules, which make them work on both the Prometheus and the OTLP path.
fn convention_problems(q: &Query) -> Vec<String> {
    let mut out = Vec::new();
    let r = &q.refs;
    for s in r.selectors.iter().filter(|_| q.panel) {
        let ok = if s.metric.starts_with("beyla_") || s.metric.starts_with("process_") {
            // The daemon's own counters (and its RSS and CPU): per daemon, chosen by job and
            // instance.
            s.has("job", "=~", "$job") && s.has("instance", "=~", "$instance")
        } else if s.prometheus_form() {
            s.has("service_name", "=~", "$service")
                && s.has("service_instance_id", "=~", "$instance")
        } else if s.otlp_form() {
            s.has("job", "=~", "$service") && s.has("instance", "=~", "$instance")
        } else {
            false
        };
        if !ok {
            out.push(format!(
                "{}: the selector of {} does not filter by the dashboard's variables \
                 (Prometheus form: service_name=~\"$service\", service_instance_id=~\"$instance\"; \
                 OTLP form: service_name=\"\", job=~\"$service\", instance=~\"$instance\"; \
                 daemon counters: job=~\"$job\", instance=~\"$instance\")",
                q.place, s.metric
            ));
        }
    }
    // One branch per labelling, for every metric: a query with only one works on one path.
    let mut forms: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &r.selectors {
        let e = forms.entry(&s.metric).or_default();
        e.0 += usize::from(s.prometheus_form());
        e.1 += usize::from(s.otlp_form());
    }
    for (m, (p, o)) in forms {
        if p != o {
            out.push(format!(
                "{}: {m} has {p} Prometheus-labelled selector(s) but {o} OTLP-labelled one(s); \
                 each branch needs its twin",
                q.place
            ));
        }
    }
    let outputs: BTreeSet<&str> = r
        .grouped
        .iter()
        .map(String::as_str)
        .chain(r.defined.iter().map(|(l, _)| l.as_str()))
        .collect();
    for l in q.legend.as_deref().map(legend_labels).unwrap_or_default() {
        // Grafana prints the placeholder itself for a missing label.
        if !outputs.contains(l.as_str()) {
            out.push(format!(
                "{}: the legend uses {{{{{l}}}}}, which the query does not keep (by: {outputs:?})",
                q.place
            ));
        }
    }
    if let Some(l) = &q.regex_label
        && !outputs.contains(l.as_str())
    {
        out.push(format!(
            "{}: the regex reads label {l:?}, which the query does not keep ({outputs:?})",
            q.place
        ));
    }
    out
}

// ------------------------------------------------------------------------------------------
// What the daemon exported: sample names → label names → values.

#[derive(Default)]
struct Model {
    /// Where it came from, for messages.
    source: &'static str,
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// Labels the scraper (`job`, `instance`) or the OTLP receiver (from the resource) adds to
/// every series: never in the daemon's own output.
const ADDED_BY_INGESTION: &[&str] = &["job", "instance"];

impl Model {
    fn add(&mut self, name: &str, labels: impl IntoIterator<Item = (String, String)>) {
        let m = self.samples.entry(name.to_owned()).or_default();
        for (k, v) in labels {
            m.entry(k).or_default().insert(v);
        }
    }

    fn has_label(&self, metric: &str, label: &str) -> bool {
        self.samples
            .get(metric)
            .is_some_and(|m| ADDED_BY_INGESTION.contains(&label) || m.contains_key(label))
    }

    fn labels_of(&self, metric: &str) -> Vec<&str> {
        self.samples
            .get(metric)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// `x_bucket`, `x_sum`, `x_count` of a histogram are one family `x`.
    fn family<'a>(&self, sample: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && self.samples.contains_key(&format!("{base}_bucket"))
            {
                return base;
            }
        }
        sample
    }
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Double(d) => d.to_string(),
        other => other.to_string(),
    }
}

/// `http.server.request.duration` → `http_server_request_duration`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The OTLP metrics as Prometheus' and Mimir's OTLP receivers store them (their default
/// translation, underscores and suffixes).
fn otlp_model(reqs: &[ExportMetricsServiceRequest]) -> Model {
    let mut model = Model {
        source: "the OTLP export as stored by Prometheus/Mimir's OTLP receiver",
        ..Model::default()
    };
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let res = attrs_to_map(
            &rm.resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default(),
        );
        let get = |k: &str| res.get(k).map(attr_text);
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n,
            (_, None) => String::new(),
        };
        let ident = [
            ("job".to_owned(), job),
            (
                "instance".to_owned(),
                get("service.instance.id").unwrap_or_default(),
            ),
        ];
        model.add(
            "target_info",
            res.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "service.name" | "service.namespace" | "service.instance.id"
                    )
                })
                .map(|(k, v)| (sanitize(k), attr_text(v)))
                .chain(ident.clone()),
        );
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let mut base = sanitize(&m.name);
            let unit = match m.unit.as_str() {
                "s" => "_seconds",
                "ms" => "_milliseconds",
                "By" => "_bytes",
                _ => "",
            };
            if !base.ends_with(unit) {
                base.push_str(unit);
            }
            let point = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                attrs_to_map(attrs)
                    .iter()
                    .map(|(k, v)| (sanitize(k), attr_text(v)))
                    .chain(ident.clone())
                    .collect::<Vec<_>>()
            };
            match &m.data {
                Some(Data::Histogram(h)) => {
                    for dp in &h.data_points {
                        let l = point(&dp.attributes);
                        for le in dp
                            .explicit_bounds
                            .iter()
                            .map(f64::to_string)
                            .chain(["+Inf".to_owned()])
                        {
                            let mut with_le = l.clone();
                            with_le.push(("le".to_owned(), le));
                            model.add(&format!("{base}_bucket"), with_le);
                        }
                        model.add(&format!("{base}_sum"), l.clone());
                        model.add(&format!("{base}_count"), l);
                    }
                }
                Some(Data::Sum(s)) => {
                    let name = if s.is_monotonic && !base.ends_with("_total") {
                        format!("{base}_total")
                    } else {
                        base.clone()
                    };
                    for dp in &s.data_points {
                        model.add(&name, point(&dp.attributes));
                    }
                }
                Some(Data::Gauge(g)) => {
                    for dp in &g.data_points {
                        model.add(&base, point(&dp.attributes));
                    }
                }
                // Not produced by the daemon; a dashboard naming it fails as "not exported".
                _ => {}
            }
        }
    }
    model
}

/// What `q` uses that `model` lacks. `otlp`: skip the Prometheus-labelled branches (they
/// match nothing there by design; their OTLP twins are checked).
fn missing(q: &Query, model: &Model, otlp: bool) -> Vec<String> {
    let mut out = Vec::new();
    let r = &q.refs;
    let counts = |s: &Selector| !(otlp && s.prometheus_form());
    for s in r.selectors.iter().filter(|s| counts(s)) {
        if !model.samples.contains_key(&s.metric) {
            out.push(format!(
                "{}: metric `{}` is not in {}",
                q.place, s.metric, model.source
            ));
            continue;
        }
        for m in &s.matchers {
            if m.op == "=" && m.value.is_empty() {
                // `label=""` selects series without the label: what the OTLP branches rely on
                // (`service_name=""`), so there it must really be absent.
                if otlp
                    && model.samples[&s.metric]
                        .get(&m.label)
                        .is_some_and(|v| !v.contains(""))
                {
                    out.push(format!(
                        "{}: {}{{{}=\"\"}} selects nothing in {}: every series has the label",
                        q.place, s.metric, m.label, model.source
                    ));
                }
                continue;
            }
            if !model.has_label(&s.metric, &m.label) {
                out.push(format!(
                    "{}: label `{}` (in {}{{…}}) is not on that metric in {}, which has {:?}",
                    q.place,
                    m.label,
                    s.metric,
                    model.source,
                    model.labels_of(&s.metric)
                ));
            } else if m.op == "="
                && !m.value.is_empty()
                && !m.value.contains('$')
                && !ADDED_BY_INGESTION.contains(&m.label.as_str())
                && !model.samples[&s.metric][&m.label].contains(&m.value)
            {
                out.push(format!(
                    "{}: no {}{{{}=\"{}\"}} in {}; values: {:?}",
                    q.place,
                    s.metric,
                    m.label,
                    m.value,
                    model.source,
                    model.samples[&s.metric][&m.label]
                ));
            }
        }
    }
    for l in &r.labels {
        let in_scope: Vec<&Selector> = r
            .selectors
            .iter()
            .filter(|s| l.scope.contains(&s.pos))
            .collect();
        if otlp && !in_scope.is_empty() && in_scope.iter().all(|s| s.prometheus_form()) {
            continue;
        }
        let defined = r
            .defined
            .iter()
            .any(|(d, pos)| *d == l.label && l.scope.contains(pos));
        let found = ADDED_BY_INGESTION.contains(&l.label.as_str())
            || defined
            // `label_values(label)`: any series will do.
            || (in_scope.is_empty() && model.samples.values().any(|m| m.contains_key(&l.label)))
            || in_scope
                .iter()
                .filter(|s| counts(s))
                .any(|s| model.has_label(&s.metric, &l.label));
        if !found {
            let metrics: BTreeSet<&str> = in_scope.iter().map(|s| s.metric.as_str()).collect();
            out.push(format!(
                "{}: label `{}` ({}) is on none of {metrics:?} in {}",
                q.place, l.label, l.how, model.source
            ));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// The daemon, real traffic, and the check.

const HTTP_SERVICE: &str = "dash-http";
const GRPC_SERVER: &str = "dash-grpc-server";
const GRPC_CLIENT: &str = "dash-grpc-client";

fn tonic(service: &str) -> Command {
    let mut c = Command::new(fixtures::tonic_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("BEYLA_") {
            c.env_remove(&*k);
        }
    }
    c.env("OTEL_SERVICE_NAME", service);
    c
}

/// Sum of the `metric` samples of `service` on the Prometheus endpoint.
fn prom_count(samples: &[Sample], metric: &str, service: &str) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == metric && s.labels.get("service_name").is_some_and(|v| v == service))
        .map(|s| s.value as u64)
        .sum()
}

/// The histogram count of `metric` for `service` in the newest OTLP request that has it
/// (cumulative temporality: the newest is the total).
fn otlp_count(reqs: &[ExportMetricsServiceRequest], metric: &str, service: &str) -> u64 {
    for rm in reqs
        .iter()
        .rev()
        .flat_map(|r| r.resource_metrics.iter().rev())
    {
        let res = attrs_to_map(
            &rm.resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default(),
        );
        if res.get("service.name").and_then(AttrValue::as_str) != Some(service) {
            continue;
        }
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if m.name == metric
                && let Some(Data::Histogram(h)) = &m.data
            {
                return h.data_points.iter().map(|d| d.count).sum();
            }
        }
    }
    0
}

fn scrape(port: u16, path: &str) -> String {
    beyla_rs_tests::counters::scrape(port, path, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("scraping {path}: {e}"))
}

#[test]
fn dashboards_use_only_what_the_daemon_exports() {
    let _guard = require_root();
    let t0 = Instant::now();
    daemon::daemon_bin();
    // A dashboard that does not parse fails here, before anything starts.
    let dashboards = load_dashboards();
    let (queries, problems) = queries(&dashboards);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let rx = OtlpReceiver::start();
    // The upstream is not selected: only the server's own client calls to it are measured.
    let upstream = fixtures::python(free_port());
    let http_port = free_port();
    let _http = fixtures::python_with(
        http_port,
        &ServerOpts::default()
            .upstream_port(upstream.port())
            .env("OTEL_SERVICE_NAME", HTTP_SERVICE),
    );
    let grpc_port = free_port();
    let mut cmd = tonic(GRPC_SERVER);
    cmd.args(["server", "--port", &grpc_port.to_string()]);
    let _grpc = fixtures::spawn_server("tonic gRPC", cmd, grpc_port, None);
    // The client binds this selected port before it connects, so it is instrumented too.
    let grpc_listen = free_port();
    let prom_port = free_port();
    let d = Daemon::builder()
        .open_ports(&[http_port, grpc_port, grpc_listen])
        .otlp(&rx)
        .env("BEYLA_PROMETHEUS_PORT", prom_port.to_string())
        .env("BEYLA_INTERNAL_METRICS_EXPORTER", "prometheus")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300ms")
        .env("OTEL_TRACES_EXPORTER", "none")
        .start();
    std::thread::sleep(settle());

    // Every status class the error queries tell apart, on both sides: server 2xx, 4xx, 5xx;
    // client (the /proxy/ calls) 2xx, 4xx, 5xx; bodies both ways.
    let reqs = [
        (Request::get("/hello"), 200),
        (Request::get("/status?respond=404"), 404),
        (Request::get("/status?respond=503"), 503),
        (Request::post("/echo", "ping"), 200),
        (Request::get("/proxy/hello"), 200),
        (Request::get("/proxy/status?respond=404"), 404),
        (
            Request::new("POST", "/proxy/status?respond=503").body("x"),
            503,
        ),
    ];
    let sent: Vec<Request> = reqs.iter().map(|(r, _)| r.clone()).collect();
    for (resp, (req, status)) in rawhttp::keepalive(http_port, &sent).iter().zip(&reqs) {
        assert_eq!(resp.status, *status, "{} {}", req.method, req.target);
    }
    // gRPC: NOT_FOUND, INTERNAL, UNAVAILABLE, INVALID_ARGUMENT, OK (server errors and not).
    let mut client = tonic(GRPC_CLIENT);
    client
        .args([
            "client",
            "--target",
            &format!("127.0.0.1:{grpc_port}"),
            "--listen",
            &grpc_listen.to_string(),
            "errors",
        ])
        .stdin(Stdio::null());
    beyla_rs_tests::die_with_parent(&mut client, libc::SIGKILL);
    let out = client.output().expect("tonic client");
    assert!(
        out.status.success(),
        "tonic client: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Exactly what was sent, on both paths, before anything is compared.
    let want = [
        (
            "http_server_request_duration_seconds_count",
            "http.server.request.duration",
            HTTP_SERVICE,
            7,
        ),
        (
            "http_client_request_duration_seconds_count",
            "http.client.request.duration",
            HTTP_SERVICE,
            3,
        ),
        (
            "rpc_server_duration_seconds_count",
            "rpc.server.duration",
            GRPC_SERVER,
            5,
        ),
        (
            "rpc_client_duration_seconds_count",
            "rpc.client.duration",
            GRPC_CLIENT,
            5,
        ),
    ];
    let mut metrics_text = String::new();
    let counts = |text: &str, reqs: &[ExportMetricsServiceRequest]| -> Vec<(u64, u64)> {
        let samples = exposition::parse(text).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        want.iter()
            .map(|(p, o, svc, _)| (prom_count(&samples, p, svc), otlp_count(reqs, o, svc)))
            .collect()
    };
    let expected: Vec<(u64, u64)> = want.iter().map(|w| (w.3, w.3)).collect();
    let ok = wait_until(span_timeout(), || {
        metrics_text = scrape(prom_port, "/metrics");
        counts(&metrics_text, &rx.metrics()) == expected
    });
    let got = counts(&metrics_text, &rx.metrics());
    assert!(
        ok,
        "counts (Prometheus, OTLP) per {:?}: {got:?}, want {expected:?}\n{}",
        want.map(|w| w.0),
        d.logs()
    );
    let internal_text = scrape(prom_port, "/internal/metrics");
    let app_otlp = rx.metrics();
    d.stop_ok();

    // The daemon's own counters over OTLP: a second daemon, idle (every counter is reported,
    // zeros included).
    let rx2 = OtlpReceiver::start();
    let d2 = Daemon::builder()
        .open_ports(&[free_port()])
        .otlp(&rx2)
        .env("BEYLA_INTERNAL_METRICS_EXPORTER", "otel")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300ms")
        .env("OTEL_TRACES_EXPORTER", "none")
        .start();
    let has_internal = |reqs: &[ExportMetricsServiceRequest]| {
        otlp_model(reqs)
            .samples
            .get("beyla_events_read_total")
            .is_some_and(|l| l.contains_key("backend"))
    };
    assert!(
        wait_until(span_timeout(), || has_internal(&rx2.metrics())),
        "no beyla_events_read (with its backend) over OTLP from BEYLA_INTERNAL_METRICS_EXPORTER=otel\n{}",
        d2.logs()
    );
    let internal_otlp = rx2.metrics();
    d2.stop_ok();

    let mut prom = Model {
        source: "the Prometheus endpoint (GET /metrics and /internal/metrics)",
        ..Model::default()
    };
    for text in [&metrics_text, &internal_text] {
        for s in exposition::parse(text).unwrap_or_else(|e| panic!("{e}")) {
            prom.add(&s.name, s.labels);
        }
    }
    let otlp = otlp_model(&[app_otlp, internal_otlp].concat());

    let mut problems = Vec::new();
    for q in &queries {
        problems.extend(missing(q, &prom, false));
        problems.extend(missing(q, &otlp, true));
    }
    // And the other way round: everything the daemon exports has a panel.
    let used: BTreeSet<&str> = queries
        .iter()
        .flat_map(|q| &q.refs.selectors)
        .map(|s| prom.family(&s.metric))
        .collect();
    for name in prom.samples.keys() {
        let fam = prom.family(name);
        if !used.contains(fam) {
            problems.push(format!(
                "the daemon exports `{fam}` but no dashboard shows it: add a panel"
            ));
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{} problem(s) with dashboards/ against the daemon's output:\n  {}\n\nGET /metrics:\n{metrics_text}\nGET /internal/metrics:\n{internal_text}",
        problems.len(),
        problems.join("\n  ")
    );
    eprintln!(
        "{} queries of {} dashboards checked against {} Prometheus and {} OTLP sample names in {:.1?}",
        queries.len(),
        dashboards.len(),
        prom.samples.len(),
        otlp.samples.len(),
        t0.elapsed()
    );
}
