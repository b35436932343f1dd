//! From a request/response [`Exchange`] to a span with OpenTelemetry semantic-convention
//! attributes, as Beyla names them (see `shared/docs/beyla-compat.md`).
//!
//! This is the only place that decides what leaves the host: header values other than the
//! ones named here are never copied, and query values of sensitive keys are replaced.

pub mod context;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use opentelemetry::{
    KeyValue, StringValue, Value,
    trace::{SpanId, SpanKind, TraceId},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::{
    clock::Clock,
    connection::ConnMeta,
    metrics::{Extras, Measurement, Series},
    process::ProcessInfo,
    protocol::{Db, Exchange, Http, Kind, Protocol, Role},
    route::Router,
};

/// A finished span, ready for the exporters.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub process: Arc<ProcessInfo>,
    pub kind: SpanKind,
    /// Shared: names repeat from span to span (method and route, gRPC path).
    pub name: StringValue,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for root spans.
    pub parent_span_id: SpanId,
    pub parent_is_remote: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub error: bool,
}

/// Query keys whose values never leave the host. A key matches when it contains one of these,
/// case-insensitively (`access_token`, `X-Api-Key`, `client_secret`, …).
const SENSITIVE_QUERY_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "token",
    "key",
    "secret",
    "sig",
    "auth",
    "session",
    "credential",
    "code",
];

pub const REDACTED: &str = "REDACTED";

fn sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SENSITIVE_QUERY_KEYS.iter().any(|s| k.contains(s))
}

/// Split a request target into (path, query). Absolute-form targets (`http://h/p?q`, used to
/// talk to proxies) keep only their path part.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let mut t = target;
    if let Some(rest) = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        t = match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        };
    }
    let t = t.split('#').next().unwrap_or(t);
    match t.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (t, None),
    }
}

/// The query string with values of sensitive keys replaced by [`REDACTED`].
pub fn scrub_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if sensitive(k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Host and optional port of a `Host` header / `:authority`.
fn split_authority(a: &str) -> (&str, Option<u16>) {
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    if let Some(rest) = a.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
    {
        return (h, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

/// A parsed W3C `traceparent` (<https://www.w3.org/TR/trace-context/#traceparent-header>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

pub fn parse_traceparent(v: &str) -> Option<TraceParent> {
    let v = v.trim();
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !hex(version) || !hex(trace) || !hex(span) || !hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Why no span was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The caller's trace context says "not sampled".
    NotSampled,
}

/// A span before the sampling and context decisions ([`context::Tracker`]), with what the
/// metrics need.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Trace id and parent from the request's `traceparent`, else a fresh trace id.
    pub span: SpanRecord,
    /// The parsed `traceparent` header, if valid.
    pub header: Option<TraceParent>,
    /// What the RED metrics record of the exchange.
    pub measurement: Measurement,
    /// `routes.ignored_patterns`: what this request leaves out.
    pub ignore: crate::route::Ignore,
}

/// Entries an [`Interner`] keeps before it starts over.
const MAX_INTERNED: usize = 4096;

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Attribute values that repeat from request to request (method, scheme, host names, peer
/// addresses, gRPC service and method) are shared instead of allocated, or formatted, per
/// span. Only bounded-cardinality values go here (never paths); the maps start over when full.
#[derive(Default)]
struct Interner {
    strs: FastMap<Box<str>, StringValue>,
    ips: FastMap<IpAddr, StringValue>,
    /// A span name being looked up (reused).
    scratch: String,
}

impl Interner {
    fn str(&mut self, s: &str) -> StringValue {
        shared(&mut self.strs, s, |s| (s.into(), shared_str(s)))
    }

    /// A method or scheme: the common ones are static strings (no lookup, no reference
    /// count), others are interned.
    fn word(&mut self, s: &str) -> StringValue {
        const WORDS: &[&str] = &[
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "http", "https",
        ];
        match WORDS.iter().find(|w| **w == s) {
            Some(w) => StringValue::from(*w),
            None => self.str(s),
        }
    }

    /// `"{method} {route}"`, shared: routes are bounded per service (the router's cap).
    fn name(&mut self, method: &str, route: &str) -> StringValue {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.push_str(method);
        buf.push(' ');
        buf.push_str(route);
        let v = self.str(&buf);
        self.scratch = buf;
        v
    }

    fn ip(&mut self, ip: IpAddr) -> StringValue {
        shared(&mut self.ips, &ip, |ip| (*ip, shared_str(&ip.to_string())))
    }
}

/// The value interned under `key` in `map`, made (owned key and value) by `make` when missing.
fn shared<K, Q>(
    map: &mut FastMap<K, StringValue>,
    key: &Q,
    make: impl FnOnce(&Q) -> (K, StringValue),
) -> StringValue
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(v) = map.get(key) {
        return v.clone();
    }
    if map.len() >= MAX_INTERNED {
        map.clear();
    }
    let (k, v) = make(key);
    map.insert(k, v.clone());
    v
}

/// A string value backed by an `Arc<str>`.
fn shared_str(s: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(s))
}

fn sv_kv(key: &'static str, value: StringValue) -> KeyValue {
    KeyValue::new(key, Value::String(value))
}

/// Builds spans; holds the id generator, the clock, the route table and shared attribute
/// values.
pub struct SpanBuilder {
    clock: Clock,
    ids: RandomIdGenerator,
    router: Mutex<Router>,
    interner: Mutex<Interner>,
    /// Optional metric attributes `attributes.select` asks for.
    extras: Extras,
}

impl SpanBuilder {
    pub fn new(clock: Clock) -> Self {
        Self::with_router(clock, Router::default())
    }

    pub fn with_router(clock: Clock, router: Router) -> Self {
        Self {
            clock,
            ids: RandomIdGenerator::default(),
            router: Mutex::new(router),
            interner: Mutex::new(Interner::default()),
            extras: Extras::default(),
        }
    }

    /// Fill the optional metric attributes `extras` names.
    pub fn with_extras(mut self, extras: Extras) -> Self {
        self.extras = extras;
        self
    }

    /// [`Self::prepare`] plus the default sampler on the request's own `traceparent`
    /// (no in-process context): what a span of one exchange looks like on its own.
    pub fn build(
        &self,
        role: Role,
        conn: &ConnMeta,
        process: Arc<ProcessInfo>,
        ex: &Exchange,
    ) -> Result<SpanRecord, Skip> {
        let p = self.prepare(role, conn, process, ex);
        if p.header.is_some_and(|h| !h.sampled) {
            return Err(Skip::NotSampled);
        }
        Ok(p.span)
    }

    /// The span and metric measurement of an HTTP or gRPC exchange.
    fn http(
        &self,
        role: Role,
        conn: &ConnMeta,
        process: &ProcessInfo,
        ex: &Http,
        sizes: (u64, u64),
    ) -> Parts {
        let parent = ex.traceparent.as_deref().and_then(parse_traceparent);
        let grpc = ex.protocol == Some(Protocol::Grpc);
        let (path, query) = split_target(&ex.target);
        let authority = ex.authority.as_deref().map(split_authority);
        let scheme = ex.scheme.as_deref().unwrap_or("http");
        let mut intern = self.interner.lock().unwrap_or_else(|e| e.into_inner());
        let mut attrs = Vec::with_capacity(12);
        let (kind, name, error, mut series);
        let mut ignore = crate::route::Ignore::default();
        let extras = self.extras;
        match role {
            Role::Server => {
                kind = SpanKind::Server;
                let server_address = match authority {
                    Some((h, _)) if !h.is_empty() => intern.str(h),
                    _ => intern.str(&process.host_name),
                };
                if grpc {
                    name = intern.str(path);
                    series = rpc_attrs(&mut attrs, &mut intern, path, ex, true);
                    let code = ex.grpc_status.unwrap_or(2);
                    // Server errors per the semantic conventions' list.
                    error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
                } else {
                    let r = {
                        let mut router = self.router.lock().unwrap_or_else(|e| e.into_inner());
                        ignore = router.ignore(path);
                        router.route(&process.service_name, path)
                    };
                    let method = http_attrs(&mut attrs, &mut intern, ex);
                    // `routes.unmatched: unset`: no route at all.
                    let route = (!r.route.is_empty()).then_some(r.route);
                    name = match &route {
                        Some(r) => intern.name(&ex.method, r),
                        None => method.clone(),
                    };
                    if r.configured
                        && let Some(r) = &route
                    {
                        attrs.push(sv_kv("http.route", r.clone().into()));
                    }
                    series = Series::Http {
                        server: true,
                        method,
                        status: ex.status,
                        route,
                        address: None,
                        port: None,
                        url_path: extras.url_path.then(|| shared_str(path)),
                        client_address: None,
                    };
                    attrs.push(str_kv("url.path", path));
                    attrs.push(sv_kv("url.scheme", intern.word(scheme)));
                    attrs.push(KeyValue::new("http.request.body.size", sizes.0 as i64));
                    attrs.push(KeyValue::new("http.response.body.size", sizes.1 as i64));
                    error = ex.status.is_none_or(|s| s >= 500);
                }
                let server_port = conn.local_port.or(authority.and_then(|a| a.1));
                let client_address = conn.peer.map(|peer| intern.ip(peer.ip()));
                if extras.server || extras.client_address {
                    series.set_peers(
                        extras.server.then(|| server_address.clone()),
                        server_port.filter(|_| extras.server),
                        client_address.clone().filter(|_| extras.client_address),
                    );
                }
                attrs.push(sv_kv("server.address", server_address));
                if let Some(p) = server_port {
                    attrs.push(KeyValue::new("server.port", p as i64));
                }
                if let Some(c) = client_address {
                    attrs.push(sv_kv("client.address", c));
                }
            }
            Role::Client => {
                kind = SpanKind::Client;
                let host = match authority {
                    Some((h, _)) if !h.is_empty() => intern.str(h),
                    _ => conn
                        .peer
                        .map(|p| intern.ip(p.ip()))
                        .unwrap_or_else(|| StringValue::from("")),
                };
                let port = conn.peer.map(|p| p.port()).or(authority.and_then(|a| a.1));
                if grpc {
                    name = intern.str(path);
                    series = rpc_attrs(&mut attrs, &mut intern, path, ex, false);
                    if extras.server {
                        series.set_peers(Some(host.clone()), port, None);
                    }
                    error = ex.grpc_status.is_none_or(|c| c != 0);
                } else {
                    ignore = self
                        .router
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .ignore(path);
                    let method = http_attrs(&mut attrs, &mut intern, ex);
                    name = method.clone();
                    series = Series::Http {
                        server: false,
                        method,
                        status: ex.status,
                        route: None,
                        address: Some(host.clone()),
                        port,
                        url_path: extras.url_path.then(|| shared_str(path)),
                        client_address: None,
                    };
                    let h = host.as_str();
                    let hostport = match port {
                        Some(p) if h.contains(':') => format!("[{h}]:{p}"),
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_owned(),
                    };
                    let mut full = format!("{scheme}://{hostport}{path}");
                    if let Some(q) = query {
                        full.push('?');
                        full.push_str(&scrub_query(q));
                    }
                    attrs.push(str_kv("url.full", full));
                    attrs.push(KeyValue::new("http.request.body.size", sizes.0 as i64));
                    attrs.push(KeyValue::new("http.response.body.size", sizes.1 as i64));
                    error = ex.status.is_none_or(|s| s >= 400);
                }
                attrs.push(sv_kv("server.address", host));
                if let Some(p) = port {
                    attrs.push(KeyValue::new("server.port", p as i64));
                }
            }
        }
        drop(intern);
        Parts {
            kind,
            name,
            error,
            series,
            attrs,
            ignore,
            parent,
        }
    }

    /// The span and metric measurement of a database or cache operation.
    fn db(&self, role: Role, conn: &ConnMeta, process: &ProcessInfo, d: &Db) -> Parts {
        let mut intern = self.interner.lock().unwrap_or_else(|e| e.into_inner());
        let mut attrs = Vec::with_capacity(10);
        let system = d.system.name();
        let operation = d.operation.as_deref().map(|o| intern.str(o));
        let collection = d.collection.as_deref().map(|c| intern.str(c));
        let namespace = d.namespace.as_deref().map(|n| intern.str(n));
        let status = d.status_code.as_deref().map(|c| intern.str(c));
        // Per the database conventions: "{operation} {collection}", else the operation, else
        // the system.
        let name = match (&operation, &collection) {
            (Some(o), Some(c)) => intern.name(o.as_str(), c.as_str()),
            (Some(o), None) => o.clone(),
            _ => StringValue::from(system),
        };
        attrs.push(KeyValue::new("db.system.name", system));
        if let Some(o) = &operation {
            attrs.push(sv_kv("db.operation.name", o.clone()));
        }
        if let Some(c) = &collection {
            attrs.push(sv_kv("db.collection.name", c.clone()));
        }
        if let Some(n) = &namespace {
            attrs.push(sv_kv("db.namespace", n.clone()));
        }
        if let Some(q) = &d.query {
            attrs.push(str_kv("db.query.text", q));
        }
        if let Some(s) = &status {
            attrs.push(sv_kv("db.response.status_code", s.clone()));
        }
        let server = role == Role::Server;
        // The database's own address: the peer for a client, this host for the server.
        let (address, port) = if server {
            // As HTTP server spans without a `Host`: this host's name.
            (intern.str(&process.host_name), conn.local_port)
        } else {
            (
                conn.peer
                    .map(|p| intern.ip(p.ip()))
                    .unwrap_or_else(|| StringValue::from("")),
                conn.peer.map(|p| p.port()),
            )
        };
        attrs.push(sv_kv("server.address", address.clone()));
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        if server && let Some(peer) = conn.peer {
            attrs.push(sv_kv("client.address", intern.ip(peer.ip())));
        }
        drop(intern);
        Parts {
            kind: if server {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            name,
            error: d.error,
            series: Series::Db {
                server,
                system,
                operation,
                collection,
                namespace,
                status,
                address: (!server).then_some(address),
                port: port.filter(|_| !server),
            },
            attrs,
            ignore: crate::route::Ignore::default(),
            parent: None,
        }
    }

    pub fn prepare(
        &self,
        role: Role,
        conn: &ConnMeta,
        process: Arc<ProcessInfo>,
        ex: &Exchange,
    ) -> Prepared {
        let mut p = match &ex.kind {
            Kind::Http(h) => {
                self.http(role, conn, &process, h, (ex.request_size, ex.response_size))
            }
            Kind::Db(d) => self.db(role, conn, &process, d),
        };
        let (trace_id, parent_span_id) = match p.parent {
            Some(t) => (t.trace_id, t.span_id),
            None => (self.ids.new_trace_id(), SpanId::INVALID),
        };
        if ex.flags.partial {
            p.attrs.push(KeyValue::new("beyla.partial", true));
        }
        if ex.flags.incomplete {
            p.attrs.push(KeyValue::new("beyla.incomplete", true));
        }
        let end_ns = ex.end_ns.max(ex.start_ns);
        let measurement = Measurement {
            series: p.series,
            seconds: (end_ns - ex.start_ns) as f64 / 1e9,
            request_size: ex.request_size,
            response_size: ex.response_size,
        };
        let span = SpanRecord {
            process,
            kind: p.kind,
            name: p.name,
            trace_id,
            span_id: self.ids.new_span_id(),
            parent_span_id,
            parent_is_remote: p.parent.is_some(),
            start: self.clock.to_system_time(ex.start_ns),
            end: self.clock.to_system_time(end_ns),
            attributes: p.attrs,
            error: p.error,
        };
        Prepared {
            span,
            header: p.parent,
            measurement,
            ignore: p.ignore,
        }
    }
}

/// What one protocol family decides of a span: the rest is common.
struct Parts {
    kind: SpanKind,
    name: StringValue,
    error: bool,
    series: Series,
    attrs: Vec<KeyValue>,
    ignore: crate::route::Ignore,
    /// The request's own `traceparent`, if valid.
    parent: Option<TraceParent>,
}

/// A string attribute whose value is shared (`Arc<str>`): spans are cloned for export retries,
/// and a shared value makes that clone a reference-count increment instead of an allocation.
fn str_kv(key: &'static str, value: impl AsRef<str>) -> KeyValue {
    sv_kv(key, shared_str(value.as_ref()))
}

/// The method and status attributes; returns the shared method.
fn http_attrs(attrs: &mut Vec<KeyValue>, intern: &mut Interner, ex: &Http) -> StringValue {
    let method = intern.word(&ex.method);
    attrs.push(sv_kv("http.request.method", method.clone()));
    if let Some(s) = ex.status {
        attrs.push(KeyValue::new("http.response.status_code", s as i64));
    }
    method
}

/// The `rpc.*` attributes; returns the metric series with the same values.
fn rpc_attrs(
    attrs: &mut Vec<KeyValue>,
    intern: &mut Interner,
    path: &str,
    ex: &Http,
    server: bool,
) -> Series {
    let p = path.trim_start_matches('/');
    let (service, method) = p.rsplit_once('/').unwrap_or((p, ""));
    let (service, method) = (intern.str(service), intern.str(method));
    attrs.push(KeyValue::new("rpc.system", "grpc"));
    attrs.push(sv_kv("rpc.service", service.clone()));
    attrs.push(sv_kv("rpc.method", method.clone()));
    if let Some(c) = ex.grpc_status {
        attrs.push(KeyValue::new("rpc.grpc.status_code", c as i64));
    }
    if let Some(s) = ex.status {
        attrs.push(KeyValue::new("http.response.status_code", s as i64));
    }
    Series::Rpc {
        server,
        service,
        method,
        status: ex.grpc_status,
        address: None,
        port: None,
        client_address: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExchangeFlags, HttpExchange};

    fn process() -> Arc<ProcessInfo> {
        Arc::new(ProcessInfo {
            pid: 42,
            exe_path: "/usr/sbin/nginx".into(),
            exe_name: "nginx".into(),
            service_name: "nginx".into(),
            service_namespace: None,
            instance_id: "host1-42".into(),
            host_name: "host1".into(),
            extra_resource: vec![],
        })
    }

    fn exchange(method: &str, target: &str, status: u16) -> Exchange {
        http_exchange(method, target, status).into()
    }

    fn http_exchange(method: &str, target: &str, status: u16) -> HttpExchange {
        HttpExchange {
            protocol: Some(Protocol::Http1),
            method: method.into(),
            target: target.into(),
            authority: Some("example.com:8080".into()),
            status: Some(status),
            start_ns: 1_000,
            end_ns: 5_000,
            request_body_size: 3,
            response_body_size: 10,
            ..Default::default()
        }
    }

    fn attr<'a>(s: &'a SpanRecord, k: &str) -> Option<&'a opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    #[test]
    fn interner_shares_values_and_stays_bounded() {
        let mut i = Interner::default();
        let a = i.str("GET");
        assert_eq!(a.as_str(), "GET");
        assert_eq!(i.str("GET").as_str(), "GET");
        assert_eq!(i.strs.len(), 1);
        for n in 0..MAX_INTERNED * 2 {
            assert_eq!(i.str(&n.to_string()).as_str(), n.to_string());
            let ip = IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
            assert_eq!(i.ip(ip).as_str(), ip.to_string());
        }
        assert!(i.strs.len() <= MAX_INTERNED && i.ips.len() <= MAX_INTERNED);
        assert_eq!(i.word("GET").as_str(), "GET");
        assert_eq!(i.word("PROPFIND").as_str(), "PROPFIND");
    }

    #[test]
    fn server_span() {
        let b = SpanBuilder::new(Clock::new());
        let conn = ConnMeta {
            tgid: 42,
            peer: Some("10.1.2.3:5555".parse().unwrap()),
            local_port: Some(8080),
            local: None,
        };
        let s = b
            .build(
                Role::Server,
                &conn,
                process(),
                &exchange("GET", "/users/17?password=x", 503),
            )
            .unwrap();
        assert_eq!(s.name.as_str(), "GET /users/{id}");
        assert_eq!(s.kind, SpanKind::Server);
        assert!(s.error);
        assert_eq!(attr(&s, "url.path").unwrap().as_str(), "/users/17");
        assert_eq!(attr(&s, "server.address").unwrap().as_str(), "example.com");
        assert_eq!(
            attr(&s, "server.port"),
            Some(&opentelemetry::Value::I64(8080))
        );
        assert_eq!(attr(&s, "client.address").unwrap().as_str(), "10.1.2.3");
        assert_eq!(
            attr(&s, "http.response.status_code"),
            Some(&opentelemetry::Value::I64(503))
        );
        assert!(s.end > s.start);
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        // No query anywhere in a server span.
        assert!(!format!("{:?}", s.attributes).contains("password"));
    }

    #[test]
    fn client_span_scrubs_query() {
        let b = SpanBuilder::new(Clock::new());
        let conn = ConnMeta {
            tgid: 42,
            peer: Some("127.0.0.1:9000".parse().unwrap()),
            local_port: None,
            local: None,
        };
        let ex = exchange(
            "POST",
            "/login?user=bob&password=hunter2&api_key=K&Token=T",
            404,
        );
        let s = b.build(Role::Client, &conn, process(), &ex).unwrap();
        assert_eq!(s.name.as_str(), "POST");
        assert!(s.error);
        let full = attr(&s, "url.full").unwrap().as_str();
        assert_eq!(
            full,
            "http://example.com:9000/login?user=bob&password=REDACTED&api_key=REDACTED&Token=REDACTED"
        );
        assert_eq!(
            attr(&s, "server.port"),
            Some(&opentelemetry::Value::I64(9000))
        );
    }

    #[test]
    fn traceparent_joins_and_respects_sampling() {
        let b = SpanBuilder::new(Clock::new());
        let conn = ConnMeta::default();
        let mut ex = http_exchange("GET", "/", 200);
        ex.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let s = b
            .build(Role::Server, &conn, process(), &ex.clone().into())
            .unwrap();
        assert_eq!(
            s.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            s.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        ex.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into());
        assert_eq!(
            b.build(Role::Server, &conn, process(), &ex.clone().into())
                .unwrap_err(),
            Skip::NotSampled
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn grpc_spans() {
        let b = SpanBuilder::new(Clock::new());
        let ex = HttpExchange {
            protocol: Some(Protocol::Grpc),
            method: "POST".into(),
            target: "/helloworld.Greeter/SayHello".into(),
            status: Some(200),
            grpc_status: Some(13),
            flags: ExchangeFlags::default(),
            ..Default::default()
        };
        let s = b
            .build(
                Role::Server,
                &ConnMeta::default(),
                process(),
                &ex.clone().into(),
            )
            .unwrap();
        assert_eq!(s.name.as_str(), "/helloworld.Greeter/SayHello");
        assert!(s.error);
        assert_eq!(
            attr(&s, "rpc.service").unwrap().as_str(),
            "helloworld.Greeter"
        );
        assert_eq!(attr(&s, "rpc.method").unwrap().as_str(), "SayHello");
        let mut ok = ex.clone();
        ok.grpc_status = Some(5);
        assert!(
            !b.build(
                Role::Server,
                &ConnMeta::default(),
                process(),
                &ok.clone().into()
            )
            .unwrap()
            .error
        );
        assert!(
            b.build(Role::Client, &ConnMeta::default(), process(), &ok.into())
                .unwrap()
                .error
        );
    }

    #[test]
    fn targets() {
        assert_eq!(split_target("/a?b=c"), ("/a", Some("b=c")));
        assert_eq!(split_target("http://h:1/x?y"), ("/x", Some("y")));
        assert_eq!(split_target("http://h:1"), ("/", None));
        assert_eq!(split_target("/a#frag"), ("/a", None));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("h"), ("h", None));
    }

    #[test]
    fn configured_routes_set_http_route_heuristics_only_name() {
        let router = Router::new(
            vec![crate::route::Pattern::parse("/users/{uid}").unwrap()],
            10,
        );
        let b = SpanBuilder::with_router(Clock::new(), router);
        let p = b.prepare(
            Role::Server,
            &ConnMeta::default(),
            process(),
            &exchange("GET", "/users/17", 200),
        );
        assert_eq!(p.span.name.as_str(), "GET /users/{uid}");
        assert_eq!(
            attr(&p.span, "http.route").unwrap().as_str(),
            "/users/{uid}"
        );
        assert_eq!(attr(&p.span, "url.path").unwrap().as_str(), "/users/17");
        assert_eq!(metric_route(&p), Some("/users/{uid}"));
        let p = b.prepare(
            Role::Server,
            &ConnMeta::default(),
            process(),
            &exchange("GET", "/items/17", 200),
        );
        assert_eq!(p.span.name.as_str(), "GET /items/{id}");
        assert!(attr(&p.span, "http.route").is_none());
        assert_eq!(metric_route(&p), Some("/items/{id}"));
    }

    fn metric_route(p: &Prepared) -> Option<&str> {
        match &p.measurement.series {
            Series::Http { route, .. } => route.as_deref(),
            Series::Rpc { .. } | Series::Db { .. } => None,
        }
    }

    #[test]
    fn measurement_carries_the_span_values() {
        // The metrics record from the typed series, not from the span: every metric attribute
        // must hold what the span says, and high-cardinality ones must never appear.
        let b = SpanBuilder::new(Clock::new());
        let peer = ConnMeta {
            tgid: 42,
            peer: Some("127.0.0.1:9000".parse().unwrap()),
            local_port: Some(8080),
            local: None,
        };
        let grpc: Exchange = HttpExchange {
            protocol: Some(Protocol::Grpc),
            method: "POST".into(),
            target: "/helloworld.Greeter/SayHello".into(),
            status: Some(200),
            grpc_status: Some(5),
            start_ns: 1_000,
            end_ns: 2_501_000,
            ..Default::default()
        }
        .into();
        let http = exchange("GET", "/users/17?password=x", 503);
        for (role, ex, keys) in [
            (Role::Server, &http, 2),
            (Role::Client, &http, 4),
            (Role::Server, &grpc, 4),
            (Role::Client, &grpc, 4),
        ] {
            let p = b.prepare(role, &peer, process(), ex);
            let attrs = p.measurement.series.attributes();
            let mut checked = 0;
            for kv in &attrs {
                assert!(
                    !matches!(kv.key.as_str(), "url.path" | "url.full" | "client.address"),
                    "{kv:?}"
                );
                if kv.key.as_str() == "http.route" {
                    assert_eq!(kv.value.as_str(), "/users/{id}");
                    continue;
                }
                assert_eq!(attr(&p.span, kv.key.as_str()), Some(&kv.value), "{role:?}");
                checked += 1;
            }
            assert_eq!(checked, keys, "{role:?} {attrs:?}");
            let secs = p
                .span
                .end
                .duration_since(p.span.start)
                .unwrap()
                .as_secs_f64();
            assert!((p.measurement.seconds - secs).abs() < 1e-9);
            assert_eq!(p.measurement.request_size, ex.request_size);
            assert_eq!(p.measurement.response_size, ex.response_size);
        }
    }
    #[test]
    fn db_spans() {
        use crate::protocol::{Db, DbSystem};
        let b = SpanBuilder::new(Clock::new());
        let mut d = Db {
            system: DbSystem::Redis,
            operation: Some("SET".into()),
            collection: None,
            namespace: Some("0".into()),
            query: Some("SET user:1".into()),
            status_code: None,
            error: false,
        };
        let ex = |d: &Db| Exchange {
            start_ns: 10,
            end_ns: 20,
            request_size: 30,
            response_size: 5,
            flags: ExchangeFlags::default(),
            kind: Kind::Db(d.clone()),
        };
        let conn = ConnMeta {
            tgid: 42,
            peer: Some("10.0.0.9:6379".parse().unwrap()),
            local_port: None,
            local: None,
        };
        let s = b.build(Role::Client, &conn, process(), &ex(&d)).unwrap();
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.name.as_str(), "SET");
        assert!(!s.error);
        assert_eq!(attr(&s, "db.system.name").unwrap().as_str(), "redis");
        assert_eq!(attr(&s, "db.query.text").unwrap().as_str(), "SET user:1");
        assert_eq!(attr(&s, "db.namespace").unwrap().as_str(), "0");
        assert_eq!(attr(&s, "server.address").unwrap().as_str(), "10.0.0.9");
        assert_eq!(
            attr(&s, "server.port"),
            Some(&opentelemetry::Value::I64(6379))
        );
        assert!(attr(&s, "db.response.status_code").is_none());
        assert!(attr(&s, "http.request.method").is_none());
        // With a table: "{operation} {collection}"; an error carries its code.
        d.system = DbSystem::Postgresql;
        d.operation = Some("SELECT".into());
        d.collection = Some("items".into());
        d.status_code = Some("42P01".into());
        d.error = true;
        let server = ConnMeta {
            tgid: 42,
            peer: Some("10.0.0.1:40000".parse().unwrap()),
            local_port: Some(5432),
            local: None,
        };
        let s = b.build(Role::Server, &server, process(), &ex(&d)).unwrap();
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.name.as_str(), "SELECT items");
        assert!(s.error);
        assert_eq!(
            attr(&s, "db.response.status_code").unwrap().as_str(),
            "42P01"
        );
        assert_eq!(attr(&s, "server.address").unwrap().as_str(), "host1");
        assert_eq!(attr(&s, "client.address").unwrap().as_str(), "10.0.0.1");
        // Neither operation nor table: the system names it.
        d.operation = None;
        d.collection = None;
        let s = b.build(Role::Client, &conn, process(), &ex(&d)).unwrap();
        assert_eq!(s.name.as_str(), "postgresql");
    }
}
