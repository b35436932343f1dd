//! RED metrics from every finished exchange (sampled out or not), with Beyla's names,
//! buckets and default attributes (`shared/docs/beyla-compat.md`):
//!
//! | metric | unit | attributes |
//! |---|---|---|
//! | `http.server.request.duration` | s | `http.request.method`, `http.response.status_code`, `http.route` |
//! | `http.client.request.duration` | s | `http.request.method`, `http.response.status_code`, `server.address`, `server.port` |
//! | `http.{server,client}.{request,response}.body.size` | By | as the durations |
//! | `rpc.server.duration`, `rpc.client.duration` | s | `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//! | `db.client.operation.duration` | s | `db.system.name`, `db.operation.name`, `db.collection.name`, `db.namespace`, `db.response.status_code`, `server.address`, `server.port` |
//! | `db.server.operation.duration` | s | as the client's, without `server.address`/`server.port` (the database's own side; not a semantic-conventions name) |
//!
//! `service.name` and the rest of the process's resource are the OTLP resource (one
//! OpenTelemetry `SdkMeterProvider` per instrumented process, read by a `ManualReader`), and
//! labels (`service_name`, `service_instance_id`) plus `target_info` in Prometheus. `url.path`
//! and `client.address` are never metric attributes (cardinality); `http.route` is the
//! route table's low-cardinality route (configured pattern, else heuristic, capped per
//! service).

pub mod internal;
pub mod otlp;
pub mod prom;
pub mod server;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::{
    KeyValue, StringValue,
    metrics::{BoundHistogram, Histogram, MeterProvider as _},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, reader::MetricReader,
    },
};

use crate::{
    config::AttributeSelect,
    process::ProcessInfo,
    resource::{GlobalResource, resource_for},
    stats::Stats,
};

/// Beyla's duration buckets, seconds.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Beyla's body size buckets, bytes.
pub const SIZE_BUCKETS: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A [`ManualReader`] shared between the provider (which owns its reader) and us.
#[derive(Clone)]
pub(crate) struct SharedReader(Arc<ManualReader>);

impl fmt::Debug for SharedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedReader")
    }
}

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

pub(crate) fn manual_provider(
    resource: opentelemetry_sdk::Resource,
) -> (SdkMeterProvider, SharedReader) {
    let reader = SharedReader(Arc::new(
        ManualReader::builder()
            .with_temporality(Temporality::Cumulative)
            .build(),
    ));
    let provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader.clone())
        .build();
    (provider, reader)
}

struct Instruments {
    http_server_duration: Histogram<f64>,
    http_client_duration: Histogram<f64>,
    http_server_request_size: Histogram<f64>,
    http_server_response_size: Histogram<f64>,
    http_client_request_size: Histogram<f64>,
    http_client_response_size: Histogram<f64>,
    rpc_server_duration: Histogram<f64>,
    rpc_client_duration: Histogram<f64>,
    db_server_duration: Histogram<f64>,
    db_client_duration: Histogram<f64>,
}

/// The three kinds of series: which instruments and families a measurement goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Http,
    Rpc,
    Db,
}

impl Instruments {
    fn new(provider: &SdkMeterProvider, shape: &Shape) -> Self {
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder("beyla-rs")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let duration = |name: &'static str, desc: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(desc)
                .with_boundaries(shape.duration_buckets.clone())
                .build()
        };
        let size = |name: &'static str, desc: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("By")
                .with_description(desc)
                .with_boundaries(shape.size_buckets.clone())
                .build()
        };
        Self {
            http_server_duration: duration(
                "http.server.request.duration",
                "Duration of HTTP service calls from the server side, in seconds",
            ),
            http_client_duration: duration(
                "http.client.request.duration",
                "Duration of HTTP service calls from the client side, in seconds",
            ),
            http_server_request_size: size(
                "http.server.request.body.size",
                "Size, in bytes, of the HTTP request body as received at the server side",
            ),
            http_server_response_size: size(
                "http.server.response.body.size",
                "Size, in bytes, of the HTTP response body as sent by the server side",
            ),
            http_client_request_size: size(
                "http.client.request.body.size",
                "Size, in bytes, of the HTTP request body as sent from the client side",
            ),
            http_client_response_size: size(
                "http.client.response.body.size",
                "Size, in bytes, of the HTTP response body as received at the client side",
            ),
            rpc_server_duration: duration(
                "rpc.server.duration",
                "Duration of RPC service calls from the server side, in seconds",
            ),
            rpc_client_duration: duration(
                "rpc.client.duration",
                "Duration of GRPC service calls from the client side, in seconds",
            ),
            db_server_duration: duration(
                "db.server.operation.duration",
                "Duration of database and cache operations as served by the database, in seconds",
            ),
            db_client_duration: duration(
                "db.client.operation.duration",
                "Duration of database and cache client operations, in seconds",
            ),
        }
    }

    fn http(&self, server: bool) -> [&Histogram<f64>; 3] {
        if server {
            [
                &self.http_server_duration,
                &self.http_server_request_size,
                &self.http_server_response_size,
            ]
        } else {
            [
                &self.http_client_duration,
                &self.http_client_request_size,
                &self.http_client_response_size,
            ]
        }
    }

    /// The one duration histogram of RPC and database series.
    fn duration(&self, family: Family, server: bool) -> &Histogram<f64> {
        match (family, server) {
            (Family::Rpc, true) => &self.rpc_server_duration,
            (Family::Rpc, false) => &self.rpc_client_duration,
            (Family::Db, true) => &self.db_server_duration,
            (Family::Db, false) => &self.db_client_duration,
            (Family::Http, _) => self.http(server)[0],
        }
    }

    fn bind(&self, family: Family, server: bool, attrs: &[KeyValue], shape: &Shape) -> Bound {
        let fam = families(family, server);
        if family != Family::Http {
            return Bound::Duration(
                self.duration(family, server)
                    .bind(&shape.filter(fam[0], attrs)),
            );
        }
        let [d, rq, rs] = self.http(server);
        Bound::Http {
            duration: d.bind(&shape.filter(fam[0], attrs)),
            request_size: rq.bind(&shape.filter(fam[1], attrs)),
            response_size: rs.bind(&shape.filter(fam[2], attrs)),
        }
    }

    /// Record without a bound handle (past [`MAX_BOUND`]).
    fn record(
        &self,
        (family, server): (Family, bool),
        attrs: &[KeyValue],
        shape: &Shape,
        secs: f64,
        sizes: (f64, f64),
    ) {
        let fam = families(family, server);
        if family != Family::Http {
            self.duration(family, server)
                .record(secs, &shape.filter(fam[0], attrs));
            return;
        }
        let [d, rq, rs] = self.http(server);
        d.record(secs, &shape.filter(fam[0], attrs));
        rq.record(sizes.0, &shape.filter(fam[1], attrs));
        rs.record(sizes.1, &shape.filter(fam[2], attrs));
    }
}

/// The metric families, by index into [`Shape::allowed`].
const FAMILIES: [(&str, &str); 10] = [
    ("http.server.request.duration", "_seconds"),
    ("http.server.request.body.size", "_bytes"),
    ("http.server.response.body.size", "_bytes"),
    ("http.client.request.duration", "_seconds"),
    ("http.client.request.body.size", "_bytes"),
    ("http.client.response.body.size", "_bytes"),
    ("rpc.server.duration", "_seconds"),
    ("rpc.client.duration", "_seconds"),
    ("db.server.operation.duration", "_seconds"),
    ("db.client.operation.duration", "_seconds"),
];

/// Family indexes of one series kind: duration, request size, response size.
fn families(family: Family, server: bool) -> [usize; 3] {
    match (family, server) {
        (Family::Http, true) => [0, 1, 2],
        (Family::Http, false) => [3, 4, 5],
        (Family::Rpc, true) => [6, 6, 6],
        (Family::Rpc, false) => [7, 7, 7],
        (Family::Db, true) => [8, 8, 8],
        (Family::Db, false) => [9, 9, 9],
    }
}

/// Every attribute a metric may carry. Those in [`OPTIONAL`] for a family are off unless
/// `attributes.select` includes them; the span builder fills them only then ([`Extras`]).
const KEYS: [&str; 16] = [
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "server.address",
    "server.port",
    "url.path",
    "client.address",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system.name",
    "db.operation.name",
    "db.collection.name",
    "db.namespace",
    "db.response.status_code",
];

/// Off by default (cardinality), per family.
fn optional(family: usize, key: &str) -> bool {
    match family {
        0..=2 => matches!(
            key,
            "url.path" | "client.address" | "server.port" | "server.address"
        ),
        3..=5 => key == "url.path",
        6 | 8 => matches!(key, "client.address" | "server.port" | "server.address"),
        7 => matches!(key, "server.address" | "server.port"),
        // The database's address is part of the client's series by default (conventions).
        _ => false,
    }
}

/// Which optional values the span builder must put into the [`Series`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub url_path: bool,
    pub client_address: bool,
    /// `server.port` on the server side, `server.address`/`server.port` on RPC clients.
    pub server: bool,
}

/// Buckets and attribute selection: the shape of every process's histograms.
#[derive(Clone, Debug)]
pub struct Shape {
    pub duration_buckets: Vec<f64>,
    pub size_buckets: Vec<f64>,
    /// `allowed[family][key]`, from `attributes.select`.
    allowed: [[bool; KEYS.len()]; FAMILIES.len()],
    /// Any attribute removed from some family: filter before binding.
    filtering: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self::new(
            DURATION_BUCKETS.to_vec(),
            SIZE_BUCKETS.to_vec(),
            &AttributeSelect::default(),
        )
    }
}

impl Shape {
    pub fn new(
        duration_buckets: Vec<f64>,
        size_buckets: Vec<f64>,
        select: &AttributeSelect,
    ) -> Self {
        let mut allowed = [[true; KEYS.len()]; FAMILIES.len()];
        let mut filtering = false;
        for (f, (name, suffix)) in FAMILIES.iter().enumerate() {
            for (k, key) in KEYS.iter().enumerate() {
                let on = select.allowed(name, suffix, key, !optional(f, key));
                allowed[f][k] = on;
                filtering |= !on;
            }
        }
        Self {
            duration_buckets,
            size_buckets,
            allowed,
            filtering,
        }
    }

    /// What the span builder must collect for the metrics.
    pub fn extras(&self) -> Extras {
        let any = |key: &str| {
            let k = KEYS.iter().position(|x| *x == key).unwrap_or(0);
            (0..FAMILIES.len()).any(|f| optional(f, key) && self.allowed[f][k])
        };
        Extras {
            url_path: any("url.path"),
            client_address: any("client.address"),
            server: any("server.port") || any("server.address"),
        }
    }

    /// The attributes `family` keeps.
    fn filter<'a>(&self, family: usize, attrs: &'a [KeyValue]) -> std::borrow::Cow<'a, [KeyValue]> {
        if !self.filtering {
            return attrs.into();
        }
        attrs
            .iter()
            .filter(|kv| {
                KEYS.iter()
                    .position(|k| *k == kv.key.as_str())
                    .is_none_or(|i| self.allowed[family][i])
            })
            .cloned()
            .collect::<Vec<_>>()
            .into()
    }
}

/// The histograms one attribute set records into, bound to it once: recording through a bound
/// handle skips the SDK's per-call attribute lookup (three SipHash lookups of the attribute
/// set per HTTP exchange otherwise, about 13 % of the daemon's CPU under load).
enum Bound {
    Http {
        duration: BoundHistogram<f64>,
        request_size: BoundHistogram<f64>,
        response_size: BoundHistogram<f64>,
    },
    /// RPC and database series: a duration only.
    Duration(BoundHistogram<f64>),
}

impl Bound {
    fn record(&self, seconds: f64, sizes: (f64, f64)) {
        match self {
            Bound::Duration(d) => d.record(seconds),
            Bound::Http {
                duration,
                request_size,
                response_size,
            } => {
                duration.record(seconds);
                request_size.record(sizes.0);
                response_size.record(sizes.1);
            }
        }
    }
}

/// Attribute sets bound per process at most; the rest record unbound (the SDK's own
/// cardinality limit, 2000 per instrument, still applies to both).
const MAX_BOUND: usize = 1024;

/// The metric attributes of one finished exchange, typed. The span builder fills it from the
/// values it already holds, so recording neither scans the span's attributes nor allocates;
/// it is also the key of the bound histograms. `server` keeps server and client sets apart
/// (an HTTP set without route or address is `[method, status]` for both).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Series {
    Http {
        server: bool,
        method: StringValue,
        status: Option<u16>,
        /// `http.route` (server side).
        route: Option<Arc<str>>,
        /// `server.address` and `server.port` (client side; server side when selected).
        address: Option<StringValue>,
        port: Option<u16>,
        /// `url.path` and `client.address`: only when `attributes.select` includes them.
        url_path: Option<StringValue>,
        client_address: Option<StringValue>,
    },
    Rpc {
        server: bool,
        service: StringValue,
        method: StringValue,
        /// `rpc.grpc.status_code`.
        status: Option<u32>,
        /// Only when `attributes.select` includes them.
        address: Option<StringValue>,
        port: Option<u16>,
        client_address: Option<StringValue>,
    },
    Db {
        server: bool,
        /// `db.system.name`.
        system: &'static str,
        operation: Option<StringValue>,
        collection: Option<StringValue>,
        namespace: Option<StringValue>,
        /// `db.response.status_code` (errors only).
        status: Option<StringValue>,
        /// The database's `server.address` and `server.port` (client side).
        address: Option<StringValue>,
        port: Option<u16>,
    },
}

impl Series {
    /// The attribute set, in Beyla's order.
    pub(crate) fn attributes(&self) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(4);
        let status = |out: &mut Vec<KeyValue>, key, s: Option<u32>| {
            if let Some(s) = s {
                out.push(KeyValue::new(key, i64::from(s)));
            }
        };
        match self {
            Series::Http {
                method,
                status: code,
                route,
                address,
                port,
                url_path,
                client_address,
                ..
            } => {
                out.push(KeyValue::new("http.request.method", method.clone()));
                status(&mut out, "http.response.status_code", code.map(u32::from));
                if let Some(r) = route {
                    out.push(KeyValue::new("http.route", StringValue::from(r.clone())));
                }
                peers(&mut out, address, port, client_address);
                if let Some(p) = url_path {
                    out.push(KeyValue::new("url.path", p.clone()));
                }
            }
            Series::Rpc {
                service,
                method,
                status: code,
                address,
                port,
                client_address,
                ..
            } => {
                out.push(KeyValue::new("rpc.system", "grpc"));
                out.push(KeyValue::new("rpc.service", service.clone()));
                out.push(KeyValue::new("rpc.method", method.clone()));
                status(&mut out, "rpc.grpc.status_code", *code);
                peers(&mut out, address, port, client_address);
            }
            Series::Db {
                system,
                operation,
                collection,
                namespace,
                status: code,
                address,
                port,
                ..
            } => {
                out.push(KeyValue::new("db.system.name", *system));
                let opt = |out: &mut Vec<KeyValue>, key, v: &Option<StringValue>| {
                    if let Some(v) = v {
                        out.push(KeyValue::new(key, v.clone()));
                    }
                };
                opt(&mut out, "db.operation.name", operation);
                opt(&mut out, "db.collection.name", collection);
                opt(&mut out, "db.namespace", namespace);
                opt(&mut out, "db.response.status_code", code);
                peers(&mut out, address, port, &None);
            }
        }
        out
    }

    /// Set the optional peer attributes (`attributes.select`); `None` leaves one unset.
    pub fn set_peers(
        &mut self,
        server_address: Option<StringValue>,
        server_port: Option<u16>,
        client: Option<StringValue>,
    ) {
        let (a, p, c) = match self {
            Series::Http {
                address,
                port,
                client_address,
                ..
            }
            | Series::Rpc {
                address,
                port,
                client_address,
                ..
            } => (address, port, client_address),
            // The database side's series carry no peers (their cardinality is the clients').
            Series::Db { .. } => return,
        };
        if server_address.is_some() {
            *a = server_address;
        }
        if server_port.is_some() {
            *p = server_port;
        }
        if client.is_some() {
            *c = client;
        }
    }

    /// Which instruments the series records into, and whether on the server side.
    pub(crate) fn family(&self) -> (Family, bool) {
        match self {
            Series::Http { server, .. } => (Family::Http, *server),
            Series::Rpc { server, .. } => (Family::Rpc, *server),
            Series::Db { server, .. } => (Family::Db, *server),
        }
    }
}

fn peers(
    out: &mut Vec<KeyValue>,
    address: &Option<StringValue>,
    port: &Option<u16>,
    client_address: &Option<StringValue>,
) {
    if let Some(a) = address {
        out.push(KeyValue::new("server.address", a.clone()));
    }
    if let Some(p) = port {
        out.push(KeyValue::new("server.port", i64::from(*p)));
    }
    if let Some(c) = client_address {
        out.push(KeyValue::new("client.address", c.clone()));
    }
}

/// What the RED metrics take from one finished exchange.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub series: Series,
    pub seconds: f64,
    /// Body sizes in bytes (HTTP only).
    pub request_size: u64,
    pub response_size: u64,
}

struct ProcMetrics {
    process: Arc<ProcessInfo>,
    provider: SdkMeterProvider,
    reader: SharedReader,
    inst: Instruments,
    bound: HashMap<Series, Bound, foldhash::fast::RandomState>,
    /// The process exited: dropped after the next OTLP export (or, with Prometheus only,
    /// [`GONE_TTL`] later).
    gone: Option<std::time::Instant>,
}

/// How long the series of an exited process stay on `/metrics` without an OTLP exporter.
pub const GONE_TTL: Duration = Duration::from_secs(300);

/// One collection: a process (or the daemon itself, `None`) and its metrics.
pub struct Collected {
    pub process: Option<Arc<ProcessInfo>>,
    pub metrics: ResourceMetrics,
}

/// The metrics of every instrumented process.
pub struct Metrics {
    procs: Mutex<HashMap<u32, ProcMetrics, foldhash::fast::RandomState>>,
    global: GlobalResource,
    shape: Shape,
    internal: Option<internal::InternalOtel>,
}

impl Metrics {
    /// `internal_otel`: also export the daemon's own counters over OTLP.
    pub fn new(global: GlobalResource, internal_otel: Option<Arc<Stats>>) -> Self {
        Self::with_shape(global, internal_otel, Shape::default())
    }

    /// With configured buckets and attribute selection.
    pub fn with_shape(
        global: GlobalResource,
        internal_otel: Option<Arc<Stats>>,
        shape: Shape,
    ) -> Self {
        Self {
            shape,
            procs: Mutex::new(HashMap::default()),
            internal: internal_otel.map(|s| internal::InternalOtel::new(s, &global)),
            global,
        }
    }

    /// Record one finished exchange of `process`.
    pub fn record(&self, process: &Arc<ProcessInfo>, m: &Measurement) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let pid = process.pid;
        let stale = procs
            .get(&pid)
            .is_some_and(|p| !Arc::ptr_eq(&p.process, process) && *p.process != **process);
        if stale || !procs.contains_key(&pid) {
            let (provider, reader) = manual_provider(resource_for(process, &self.global));
            let inst = Instruments::new(&provider, &self.shape);
            procs.insert(
                pid,
                ProcMetrics {
                    process: process.clone(),
                    provider,
                    reader,
                    inst,
                    bound: HashMap::default(),
                    gone: None,
                },
            );
        }
        let Some(p) = procs.get_mut(&pid) else { return };
        let sizes = (m.request_size as f64, m.response_size as f64);
        let (family, server) = m.series.family();
        if let Some(b) = p.bound.get(&m.series) {
            b.record(m.seconds, sizes);
            return;
        }
        let attrs = m.series.attributes();
        if p.bound.len() < MAX_BOUND {
            let b = p.inst.bind(family, server, &attrs, &self.shape);
            b.record(m.seconds, sizes);
            p.bound.insert(m.series.clone(), b);
        } else {
            p.inst
                .record((family, server), &attrs, &self.shape, m.seconds, sizes);
        }
    }

    /// The process exited; its metrics go out once more, then are dropped.
    pub fn process_gone(&self, pid: u32) {
        if let Some(p) = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&pid)
        {
            p.gone.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// Cumulative metrics of every process (and the daemon's own with `internal`).
    /// `drop_gone`: forget exited processes after this collection (the OTLP exporter does).
    pub fn collect(&self, internal: bool, drop_gone: bool) -> Vec<Collected> {
        let mut out = Vec::new();
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.values() {
            let mut rm = ResourceMetrics::default();
            if p.reader.collect(&mut rm).is_ok() {
                out.push(Collected {
                    process: Some(p.process.clone()),
                    metrics: rm,
                });
            }
        }
        procs.retain(|_, p| {
            let drop = p.gone.is_some_and(|t| drop_gone || t.elapsed() >= GONE_TTL);
            if drop {
                let _ = p.provider.shutdown();
            }
            !drop
        });
        drop(procs);
        if internal
            && let Some(i) = &self.internal
            && let Some(rm) = i.collect()
        {
            out.push(Collected {
                process: None,
                metrics: rm,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
