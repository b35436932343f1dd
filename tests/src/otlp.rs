//! An in-test OTLP receiver.
//!
//! Accepts `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with `application/x-protobuf` or
//! `application/json` (OTLP/JSON) bodies (optionally `Content-Encoding: gzip`), and, once
//! [`OtlpReceiver::start_grpc`] is called, the OTLP/gRPC trace and metrics services on a port
//! of their own. It decodes requests with `opentelemetry-proto` and keeps:
//! a flat list of [`ReceivedSpan`]s, the decoded metrics/logs requests, and every raw request
//! (so a test can grep the bytes for secrets). Fault knobs: answer with a status (e.g. 500, or
//! 429 with `Retry-After`) for the next N requests or until cleared, delay every answer, stop
//! the listener (all connections are reset) and restart it on the same port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An attribute value, decoded from OTLP's `AnyValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AttrValue>),
    KvList(BTreeMap<String, AttrValue>),
    Empty,
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_double(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            _ => None,
        }
    }

    fn from_any(v: Option<&AnyValue>) -> AttrValue {
        let Some(v) = v.and_then(|v| v.value.as_ref()) else {
            return AttrValue::Empty;
        };
        match v {
            any_value::Value::StringValue(s) => AttrValue::Str(s.clone()),
            any_value::Value::BoolValue(b) => AttrValue::Bool(*b),
            any_value::Value::IntValue(i) => AttrValue::Int(*i),
            any_value::Value::DoubleValue(d) => AttrValue::Double(*d),
            any_value::Value::BytesValue(b) => AttrValue::Bytes(b.clone()),
            any_value::Value::ArrayValue(a) => AttrValue::Array(
                a.values
                    .iter()
                    .map(|v| AttrValue::from_any(Some(v)))
                    .collect(),
            ),
            any_value::Value::KvlistValue(kv) => AttrValue::KvList(attrs_to_map(&kv.values)),
            // Dictionary-encoded strings only appear in profiles; keep the index visible.
            any_value::Value::StringValueStrindex(i) => AttrValue::Str(format!("<strindex {i}>")),
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => write!(f, "{s:?}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            AttrValue::Bytes(b) => write!(f, "bytes[{}]", b.len()),
            AttrValue::Array(a) => write!(f, "{a:?}"),
            AttrValue::KvList(m) => write!(f, "{m:?}"),
            AttrValue::Empty => write!(f, "<empty>"),
        }
    }
}

/// Decodes a list of OTLP key-values into a sorted map (later duplicates win).
pub fn attrs_to_map(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), AttrValue::from_any(kv.value.as_ref())))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
    Unknown(i32),
}

impl From<i32> for SpanKind {
    fn from(v: i32) -> Self {
        match v {
            0 => SpanKind::Unspecified,
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            x => SpanKind::Unknown(x),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
    Unknown(i32),
}

impl From<i32> for SpanStatus {
    fn from(v: i32) -> Self {
        match v {
            0 => SpanStatus::Unset,
            1 => SpanStatus::Ok,
            2 => SpanStatus::Error,
            x => SpanStatus::Unknown(x),
        }
    }
}

/// One span as received, flattened with its resource and scope.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: SpanKind,
    /// Lower-case hex; empty when the field was empty.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status_code: SpanStatus,
    pub status_message: String,
    pub attrs: BTreeMap<String, AttrValue>,
    pub resource: BTreeMap<String, AttrValue>,
    pub scope_name: String,
    pub scope_version: String,
    pub events: usize,
    pub links: usize,
    /// Index of the export request this span came in (0-based, over accepted trace requests).
    pub request_index: usize,
    /// When the receiver decoded it.
    pub received_at: Instant,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).and_then(AttrValue::as_str)
    }
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        self.attrs.get(key).and_then(AttrValue::as_int)
    }
    pub fn res_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(AttrValue::as_str)
    }
    pub fn res_int(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(AttrValue::as_int)
    }
    /// The resource's `process.pid`.
    pub fn pid(&self) -> Option<u32> {
        self.res_int("process.pid").map(|p| p as u32)
    }
    pub fn service_name(&self) -> Option<&str> {
        self.res_str("service.name")
    }
    /// `end - start` (zero when end < start; check [`Self::end_ns`] >= start yourself).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns))
    }
    pub fn is_server(&self) -> bool {
        self.kind == SpanKind::Server
    }
    pub fn is_client(&self) -> bool {
        self.kind == SpanKind::Client
    }
    /// `http.request.method` (empty when missing).
    pub fn method(&self) -> &str {
        self.attr_str("http.request.method").unwrap_or("")
    }
    /// `http.response.status_code` (-1 when missing).
    pub fn http_status(&self) -> i64 {
        self.attr_int("http.response.status_code").unwrap_or(-1)
    }

    /// One line for failure reports.
    pub fn summary(&self) -> String {
        let attrs: Vec<String> = self.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "[{:?} {:?} pid={} svc={}] {:?} {:.1}ms {{{}}}",
            self.kind,
            self.status_code,
            self.pid()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into()),
            self.service_name().unwrap_or("?"),
            self.name,
            self.duration().as_secs_f64() * 1000.0,
            attrs.join(", ")
        )
    }
}

/// Predicate: SERVER spans of process `pid`.
pub fn server_of(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.kind == SpanKind::Server && s.pid() == Some(pid)
}
/// Predicate: CLIENT spans of process `pid`.
pub fn client_of(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.kind == SpanKind::Client && s.pid() == Some(pid)
}
/// Predicate: any span of process `pid`.
pub fn of_pid(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.pid() == Some(pid)
}
/// Predicate: every span.
pub fn any_span(_: &ReceivedSpan) -> bool {
    true
}

/// One HTTP request the receiver got (any path), as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Body bytes as sent on the wire (possibly gzip).
    pub raw_body: Vec<u8>,
    /// Body after `Content-Encoding` was undone (equal to `raw_body` when not encoded).
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub status: u16,
    pub at: Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A fault the receiver injects instead of accepting export requests.
#[derive(Clone, Debug)]
pub struct Fault {
    pub status: u16,
    pub retry_after_secs: Option<u32>,
    /// Apply to this many requests, then accept again (`None`: until cleared).
    pub times: Option<u32>,
}

impl Fault {
    /// Answer every export request with `status` (no body is decoded or stored as spans).
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            retry_after_secs: None,
            times: None,
        }
    }
    /// Add a `Retry-After: <secs>` header (for 429/503).
    pub fn retry_after(mut self, secs: u32) -> Fault {
        self.retry_after_secs = Some(secs);
        self
    }
    /// Only the next `n` requests fail.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    trace_requests: usize,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    requests: Vec<RecordedRequest>,
    errors: Vec<String>,
    fault: Option<Fault>,
    delay: Duration,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The receiver. Dropping it stops the server.
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
    port: u16,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl OtlpReceiver {
    /// Starts on 127.0.0.1 with a kernel-chosen port.
    pub fn start() -> OtlpReceiver {
        Self::start_on(0)
    }

    /// Starts on 127.0.0.1:`port` (0: kernel-chosen).
    pub fn start_on(port: u16) -> OtlpReceiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = rt
            .block_on(TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("OTLP receiver: bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let rx = OtlpReceiver {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            rt,
            port,
            accept_task: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        rx.spawn_accept(listener);
        rx
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let conns = self.conns.clone();
        let task = self.rt.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), peer, req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
                c.retain(|h| !h.is_finished());
                c.push(conn);
            }
        });
        *self.accept_task.lock().unwrap() = Some(task);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the OTLP/gRPC trace and metrics services on another 127.0.0.1 port; returns its
    /// endpoint (`http://127.0.0.1:<port>`). Requests land in the same store as HTTP ones
    /// (recorded with the gRPC method path and the metadata as headers). Faults and delays
    /// apply to HTTP only.
    pub fn start_grpc(&self) -> String {
        use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = self
            .rt
            .block_on(TcpListener::bind(("127.0.0.1", 0)))
            .unwrap_or_else(|e| panic!("OTLP gRPC receiver: bind: {e}"));
        let port = listener.local_addr().unwrap().port();
        let sink = GrpcSink {
            shared: self.shared.clone(),
        };
        let task = self.rt.spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
            if let Err(e) = r {
                eprintln!("OTLP gRPC receiver stopped: {e}");
            }
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        format!("http://127.0.0.1:{port}")
    }

    /// Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Full traces URL (`<endpoint>/v1/traces`).
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint())
    }

    /// Stops listening and resets every open connection. Data received so far is kept.
    pub fn stop(&self) {
        if let Some(t) = self.accept_task.lock().unwrap().take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in conns {
            c.abort();
            let _ = self.rt.block_on(c);
        }
    }

    /// Listens again on the same port after [`Self::stop`].
    pub fn restart(&self) {
        self.stop();
        let port = self.port;
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        let listener = loop {
            match self.rt.block_on(TcpListener::bind(("127.0.0.1", port))) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("OTLP receiver restart: bind {port}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("OTLP receiver restart: bind 127.0.0.1:{port}: {e}"),
            }
        };
        self.spawn_accept(listener);
    }

    /// Injects a fault (or clears it with `None`).
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().fault = fault;
    }

    /// Delays every answer by `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Forgets every span, metric, log and request received so far.
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.spans.clear();
        st.metrics.clear();
        st.logs.clear();
        st.requests.clear();
        st.errors.clear();
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Spans matching `pred`, in arrival order.
    pub fn spans_matching(&self, pred: impl Fn(&ReceivedSpan) -> bool) -> Vec<ReceivedSpan> {
        self.shared
            .lock()
            .spans
            .iter()
            .filter(|s| pred(s))
            .cloned()
            .collect()
    }

    pub fn span_count(&self, pred: impl Fn(&ReceivedSpan) -> bool) -> usize {
        self.shared.lock().spans.iter().filter(|s| pred(s)).count()
    }

    /// Accepted `/v1/traces` requests so far.
    pub fn trace_request_count(&self) -> usize {
        self.shared.lock().trace_requests
    }

    /// Decoded `/v1/metrics` requests.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.shared.lock().metrics.clone()
    }

    /// Decoded `/v1/logs` requests.
    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.shared.lock().logs.clone()
    }

    /// Every HTTP request received (accepted, rejected by a fault, or malformed).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Decode/protocol errors seen (bad content type, undecodable protobuf, unknown path, ...).
    pub fn errors(&self) -> Vec<String> {
        self.shared.lock().errors.clone()
    }

    /// Panics if any received request had a decoding/protocol error.
    pub fn assert_no_errors(&self) {
        let errs = self.errors();
        assert!(
            errs.is_empty(),
            "OTLP receiver saw errors:\n{}",
            errs.join("\n")
        );
    }

    /// Panics if any of `needles` occurs in any request (raw or decoded body, or header value).
    pub fn assert_no_secrets(&self, needles: &[&str]) {
        for r in self.requests() {
            for n in needles {
                let nb = n.as_bytes();
                let hit = contains(&r.raw_body, nb)
                    || contains(&r.body, nb)
                    || r.headers.iter().any(|(_, v)| v.contains(n));
                assert!(
                    !hit,
                    "secret {n:?} found in an OTLP request to {} ({} bytes)",
                    r.path,
                    r.body.len()
                );
            }
        }
    }

    /// Waits until at least `n` spans match `pred`; returns the matching spans. Panics on
    /// timeout with a dump of everything received.
    pub fn wait_for_spans(
        &self,
        pred: impl Fn(&ReceivedSpan) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let count = st.spans.iter().filter(|s| pred(s)).count();
            if count >= n {
                return st.spans.iter().filter(|s| pred(s)).cloned().collect();
            }
            let now = Instant::now();
            if now >= deadline {
                let dump = dump_spans(&st.spans);
                let errors = st.errors.join("\n");
                drop(st);
                panic!(
                    "timed out after {timeout:?} waiting for {n} matching spans, got {count}.\n\
                     receiver errors: [{errors}]\nall spans received:\n{dump}"
                );
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for `n` matching spans, then for `quiet`, and asserts exactly `n` match.
    pub fn wait_for_exact_spans(
        &self,
        pred: impl Fn(&ReceivedSpan) -> bool,
        n: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<ReceivedSpan> {
        if n > 0 {
            self.wait_for_spans(&pred, n, timeout);
        }
        self.assert_quiet(&pred, n, quiet)
    }

    /// Waits `quiet` and asserts that exactly `expected` spans match `pred` at every moment of
    /// it (fails as soon as one more arrives). Returns the matching spans.
    pub fn assert_quiet(
        &self,
        pred: impl Fn(&ReceivedSpan) -> bool,
        expected: usize,
        quiet: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + quiet;
        let mut st = self.shared.lock();
        loop {
            let matching: Vec<&ReceivedSpan> = st.spans.iter().filter(|s| pred(s)).collect();
            if matching.len() != expected {
                let dump = dump_spans(&st.spans);
                panic!(
                    "expected exactly {expected} matching spans, got {}.\nall spans received:\n{dump}",
                    matching.len()
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return matching.into_iter().cloned().collect();
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until at least `n` metrics export requests arrived.
    pub fn wait_for_metrics_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<ExportMetricsServiceRequest> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.metrics.len() >= n {
                return st.metrics.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {n} metrics requests, got {}",
                st.metrics.len()
            );
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until at least `n` HTTP requests (of any kind) arrived.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.requests.len() >= n {
                return st.requests.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {n} requests, got {}",
                st.requests.len()
            );
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Multi-line dump of spans for failure messages (at most 400 lines).
pub fn dump_spans(spans: &[ReceivedSpan]) -> String {
    let mut out: Vec<String> = spans.iter().take(400).map(|s| s.summary()).collect();
    if spans.len() > 400 {
        out.push(format!("... and {} more", spans.len() - 400));
    }
    if out.is_empty() {
        return "  (none)".into();
    }
    out.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flatten_traces(req: &ExportTraceServiceRequest, request_index: usize) -> Vec<ReceivedSpan> {
    let now = Instant::now();
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attrs_to_map(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let (scope_name, scope_version) = ss
                .scope
                .as_ref()
                .map(|s| (s.name.clone(), s.version.clone()))
                .unwrap_or_default();
            for sp in &ss.spans {
                let (status_code, status_message) = sp
                    .status
                    .as_ref()
                    .map(|s| (SpanStatus::from(s.code), s.message.clone()))
                    .unwrap_or((SpanStatus::Unset, String::new()));
                out.push(ReceivedSpan {
                    name: sp.name.clone(),
                    kind: SpanKind::from(sp.kind),
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    trace_state: sp.trace_state.clone(),
                    flags: sp.flags,
                    start_ns: sp.start_time_unix_nano,
                    end_ns: sp.end_time_unix_nano,
                    status_code,
                    status_message,
                    attrs: attrs_to_map(&sp.attributes),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                    events: sp.events.len(),
                    links: sp.links.len(),
                    request_index,
                    received_at: now,
                });
            }
        }
    }
    out
}

/// The OTLP/gRPC services of [`OtlpReceiver::start_grpc`].
#[derive(Clone)]
struct GrpcSink {
    shared: Arc<Shared>,
}

impl GrpcSink {
    fn record<T: Message>(&self, path: &str, req: &tonic::Request<T>, f: impl FnOnce(&mut State)) {
        let headers = req
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = req.get_ref().encode_to_vec();
        let mut st = self.shared.lock();
        f(&mut st);
        st.requests.push(RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            headers,
            raw_body: body.clone(),
            body,
            status: 200,
            at: Instant::now(),
        });
        self.shared.changed.notify_all();
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for GrpcSink
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.record(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            &request,
            |st| {
                let idx = st.trace_requests;
                st.trace_requests += 1;
                st.spans.extend(flatten_traces(request.get_ref(), idx));
            },
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService
    for GrpcSink
{
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.record(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &request,
            |st| st.metrics.push(request.get_ref().clone()),
        );
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn proto_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A successful export answer in the request's encoding.
fn ok_response<T: Message + serde::Serialize>(json: bool, msg: T) -> Response<Full<Bytes>> {
    if json {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&msg).unwrap())))
            .unwrap()
    } else {
        proto_response(StatusCode::OK, msg.encode_to_vec())
    }
}

/// An export request body: protobuf, or OTLP/JSON when `json`.
fn decode_body<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    json: bool,
) -> Result<T, String> {
    if json {
        serde_json::from_slice(body).map_err(|e| format!("undecodable OTLP/JSON: {e}"))
    } else {
        T::decode(body).map_err(|e| format!("undecodable protobuf: {e}"))
    }
}

fn text_response(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(msg.to_string())))
        .unwrap()
}

async fn handle(
    shared: Arc<Shared>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let raw_body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            shared
                .lock()
                .errors
                .push(format!("{method} {path}: reading body: {e}"));
            return Ok(text_response(StatusCode::BAD_REQUEST, "body read error"));
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };

    let delay = shared.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut record = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        raw_body: raw_body.clone(),
        body: raw_body.clone(),
        status: 200,
        at: Instant::now(),
    };

    // Fault injection first: a failed request is recorded but its payload is not accepted.
    {
        let mut st = shared.lock();
        if let Some(f) = st.fault.clone() {
            let mut resp = text_response(
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "injected fault",
            );
            if let Some(s) = f.retry_after_secs {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            match f.times {
                Some(n) if n <= 1 => st.fault = None,
                Some(n) => st.fault.as_mut().unwrap().times = Some(n - 1),
                None => {}
            }
            record.status = f.status;
            st.requests.push(record);
            shared.changed.notify_all();
            return Ok(resp);
        }
    }

    let finish = |mut record: RecordedRequest,
                  status: StatusCode,
                  err: Option<String>,
                  f: &mut dyn FnMut(&mut State)| {
        let mut st = shared.lock();
        record.status = status.as_u16();
        if let Some(e) = err {
            st.errors.push(e);
        } else {
            f(&mut st);
        }
        st.requests.push(record);
        shared.changed.notify_all();
    };

    if method != "POST" {
        let e = format!("{method} {path}: only POST is accepted");
        finish(record, StatusCode::METHOD_NOT_ALLOWED, Some(e), &mut |_| {});
        return Ok(text_response(StatusCode::METHOD_NOT_ALLOWED, "POST only"));
    }
    let ctype = header("content-type").unwrap_or_default();
    let json = ctype.starts_with("application/json");
    if !json
        && !ctype.starts_with("application/x-protobuf")
        && !ctype.starts_with("application/protobuf")
    {
        let e = format!("{method} {path}: unsupported content-type {ctype:?}");
        finish(
            record,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(e),
            &mut |_| {},
        );
        return Ok(text_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only application/x-protobuf or application/json",
        ));
    }
    let body = match header("content-encoding").as_deref() {
        None | Some("") | Some("identity") => raw_body,
        Some("gzip") => {
            let mut out = Vec::new();
            match flate2::read::GzDecoder::new(&raw_body[..]).read_to_end(&mut out) {
                Ok(_) => out,
                Err(e) => {
                    let e = format!("{method} {path}: bad gzip body: {e}");
                    finish(record, StatusCode::BAD_REQUEST, Some(e), &mut |_| {});
                    return Ok(text_response(StatusCode::BAD_REQUEST, "bad gzip"));
                }
            }
        }
        Some(other) => {
            let e = format!("{method} {path}: unsupported content-encoding {other:?}");
            finish(
                record,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some(e),
                &mut |_| {},
            );
            return Ok(text_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad encoding",
            ));
        }
    };
    record.body = body.clone();

    match path.as_str() {
        "/v1/traces" => match decode_body::<ExportTraceServiceRequest>(&body, json) {
            Ok(req) => {
                finish(record, StatusCode::OK, None, &mut |st| {
                    let idx = st.trace_requests;
                    st.trace_requests += 1;
                    st.spans.extend(flatten_traces(&req, idx));
                });
                Ok(ok_response(json, ExportTraceServiceResponse::default()))
            }
            Err(e) => {
                let e = format!("POST /v1/traces: {e}");
                finish(record, StatusCode::BAD_REQUEST, Some(e), &mut |_| {});
                Ok(text_response(StatusCode::BAD_REQUEST, "undecodable body"))
            }
        },
        "/v1/metrics" => match decode_body::<ExportMetricsServiceRequest>(&body, json) {
            Ok(req) => {
                finish(record, StatusCode::OK, None, &mut |st| {
                    st.metrics.push(req.clone())
                });
                Ok(ok_response(json, ExportMetricsServiceResponse::default()))
            }
            Err(e) => {
                let e = format!("POST /v1/metrics: {e}");
                finish(record, StatusCode::BAD_REQUEST, Some(e), &mut |_| {});
                Ok(text_response(StatusCode::BAD_REQUEST, "undecodable body"))
            }
        },
        "/v1/logs" => match decode_body::<ExportLogsServiceRequest>(&body, json) {
            Ok(req) => {
                finish(record, StatusCode::OK, None, &mut |st| {
                    st.logs.push(req.clone())
                });
                Ok(ok_response(json, ExportLogsServiceResponse::default()))
            }
            Err(e) => {
                let e = format!("POST /v1/logs: {e}");
                finish(record, StatusCode::BAD_REQUEST, Some(e), &mut |_| {});
                Ok(text_response(StatusCode::BAD_REQUEST, "undecodable body"))
            }
        },
        _ => {
            let e = format!("POST {path}: unknown path");
            finish(record, StatusCode::NOT_FOUND, Some(e), &mut |_| {});
            Ok(text_response(StatusCode::NOT_FOUND, "unknown path"))
        }
    }
}
