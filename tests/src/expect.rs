//! Span expectations: exact multiset matching with readable failure reports, and the
//! attribute contract of issue 2 (see `shared/docs/beyla-compat.md`).

use crate::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, SpanStatus, dump_spans};

/// What one expected span must look like. Unset optional fields are not checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedSpan {
    pub kind: SpanKind,
    pub method: String,
    /// SERVER: `url.path`. CLIENT: not checked (use `url_full`).
    pub path: Option<String>,
    pub status: i64,
    pub url_full: Option<String>,
    pub server_port: Option<i64>,
    pub req_body: Option<i64>,
    pub resp_body: Option<i64>,
    pub pid: Option<u32>,
}

impl ExpectedSpan {
    /// A SERVER span `"<method> <path>"` with `status`.
    pub fn server(method: &str, path: &str, status: u16) -> ExpectedSpan {
        ExpectedSpan {
            kind: SpanKind::Server,
            method: method.to_string(),
            path: Some(path.to_string()),
            status: status as i64,
            url_full: None,
            server_port: None,
            req_body: None,
            resp_body: None,
            pid: None,
        }
    }
    /// A CLIENT span `"<method>"` with `url.full` and `status`.
    pub fn client(method: &str, url_full: &str, status: u16) -> ExpectedSpan {
        ExpectedSpan {
            kind: SpanKind::Client,
            method: method.to_string(),
            path: None,
            status: status as i64,
            url_full: Some(url_full.to_string()),
            server_port: None,
            req_body: None,
            resp_body: None,
            pid: None,
        }
    }
    pub fn req_body(mut self, n: usize) -> Self {
        self.req_body = Some(n as i64);
        self
    }
    pub fn resp_body(mut self, n: usize) -> Self {
        self.resp_body = Some(n as i64);
        self
    }
    pub fn port(mut self, p: u16) -> Self {
        self.server_port = Some(p as i64);
        self
    }
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    pub fn matches(&self, s: &ReceivedSpan) -> bool {
        s.kind == self.kind
            && s.method() == self.method
            && s.http_status() == self.status
            && self
                .path
                .as_ref()
                .is_none_or(|p| s.attr_str("url.path") == Some(p))
            && self
                .url_full
                .as_ref()
                .is_none_or(|u| s.attr_str("url.full") == Some(u))
            && self
                .server_port
                .is_none_or(|p| s.attr_int("server.port") == Some(p))
            && self
                .req_body
                .is_none_or(|n| s.attr_int("http.request.body.size") == Some(n))
            && self
                .resp_body
                .is_none_or(|n| s.attr_int("http.response.body.size") == Some(n))
            && self.pid.is_none_or(|p| s.pid() == Some(p))
    }

    fn describe(&self) -> String {
        let mut s = format!("{:?} {} ", self.kind, self.method);
        if let Some(p) = &self.path {
            s += p;
        }
        if let Some(u) = &self.url_full {
            s += &format!("url.full={u}");
        }
        s += &format!(" -> {}", self.status);
        if let Some(p) = self.server_port {
            s += &format!(" server.port={p}");
        }
        if let Some(n) = self.req_body {
            s += &format!(" req_body={n}");
        }
        if let Some(n) = self.resp_body {
            s += &format!(" resp_body={n}");
        }
        if let Some(p) = self.pid {
            s += &format!(" pid={p}");
        }
        s
    }
}

/// Asserts that `actual` and `expected` match one to one (as multisets).
pub fn assert_spans_match(actual: &[ReceivedSpan], expected: &[ExpectedSpan]) {
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    // Most specific expectations first, so a loose one does not steal a span a strict one needs.
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by_key(|&i| {
        let e = &expected[i];
        std::cmp::Reverse(
            e.req_body.is_some() as u8 + e.resp_body.is_some() as u8 + e.pid.is_some() as u8,
        )
    });
    for i in order {
        let e = &expected[i];
        match (0..actual.len()).find(|&j| !used[j] && e.matches(&actual[j])) {
            Some(j) => used[j] = true,
            None => missing.push(e.describe()),
        }
    }
    let extra: Vec<ReceivedSpan> = actual
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(s, _)| s.clone())
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        panic!(
            "spans do not match: {} expected, {} received.\nmissing ({}):\n  {}\n\
             unexpected ({}):\n{}\nall received:\n{}",
            expected.len(),
            actual.len(),
            missing.len(),
            missing.join("\n  "),
            extra.len(),
            dump_spans(&extra),
            dump_spans(actual)
        );
    }
}

/// The SERVER span contract: name, scheme, addresses, port, sizes, status, times.
pub fn assert_server_span_contract(s: &ReceivedSpan, server_port: u16) {
    let ctx = s.summary();
    assert_eq!(s.kind, SpanKind::Server, "kind: {ctx}");
    let path = s
        .attr_str("url.path")
        .unwrap_or_else(|| panic!("url.path missing: {ctx}"));
    assert!(!path.contains('?'), "url.path has a query: {ctx}");
    // Name: "<METHOD> <route>" when the daemon knows a route, else "<METHOD> <url.path>".
    let route = s.attr_str("http.route").unwrap_or(path);
    assert_eq!(s.name, format!("{} {}", s.method(), route), "name: {ctx}");
    assert!(!s.method().is_empty(), "http.request.method: {ctx}");
    assert!(
        (100..=999).contains(&s.http_status()),
        "http.response.status_code: {ctx}"
    );
    assert_eq!(s.attr_str("url.scheme"), Some("http"), "url.scheme: {ctx}");
    assert_eq!(
        s.attr_int("server.port"),
        Some(server_port as i64),
        "server.port: {ctx}"
    );
    assert_eq!(
        s.attr_str("server.address"),
        Some("127.0.0.1"),
        "server.address: {ctx}"
    );
    assert_eq!(
        s.attr_str("client.address"),
        Some("127.0.0.1"),
        "client.address: {ctx}"
    );
    for k in ["http.request.body.size", "http.response.body.size"] {
        let v = s
            .attr_int(k)
            .unwrap_or_else(|| panic!("{k} missing or not an int: {ctx}"));
        assert!(v >= 0, "{k} negative: {ctx}");
    }
    let want = if s.http_status() >= 500 {
        SpanStatus::Error
    } else {
        SpanStatus::Unset
    };
    assert_eq!(
        s.status_code == SpanStatus::Error,
        want == SpanStatus::Error,
        "span status must be ERROR iff status >= 500: {ctx}"
    );
    assert_times_sane(s);
}

/// The CLIENT span contract: name, url.full, server.port, status.
pub fn assert_client_span_contract(s: &ReceivedSpan, upstream_port: u16) {
    let ctx = s.summary();
    assert_eq!(s.kind, SpanKind::Client, "kind: {ctx}");
    assert_eq!(s.name, s.method(), "name must be the method: {ctx}");
    assert!(!s.method().is_empty(), "http.request.method: {ctx}");
    assert!(
        (100..=999).contains(&s.http_status()),
        "http.response.status_code: {ctx}"
    );
    let url = s
        .attr_str("url.full")
        .unwrap_or_else(|| panic!("url.full missing: {ctx}"));
    assert!(url.starts_with("http://"), "url.full: {ctx}");
    assert_eq!(
        s.attr_int("server.port"),
        Some(upstream_port as i64),
        "server.port: {ctx}"
    );
    assert!(
        s.attr_str("server.address").is_some_and(|a| !a.is_empty()),
        "server.address: {ctx}"
    );
    assert_eq!(
        s.status_code == SpanStatus::Error,
        s.http_status() >= 400,
        "client span status must be ERROR iff status >= 400: {ctx}"
    );
    assert_times_sane(s);
}

/// start > 0, end >= start, duration < 60 s, start within the last hour of wall-clock time.
pub fn assert_times_sane(s: &ReceivedSpan) {
    let ctx = s.summary();
    assert!(s.start_ns > 0, "start time zero: {ctx}");
    assert!(s.end_ns >= s.start_ns, "end before start: {ctx}");
    assert!(s.duration().as_secs() < 60, "duration >= 60 s: {ctx}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let hour = 3_600_000_000_000u64;
    assert!(
        s.start_ns > now - hour && s.start_ns < now + 60_000_000_000,
        "start time not within the last hour (clock conversion?): start={} now={now}: {ctx}",
        s.start_ns
    );
}

/// Resource attributes of a span of process `pid` (`exe`: expected `process.executable.name`).
pub fn assert_resource(s: &ReceivedSpan, pid: u32, exe: &str) {
    let ctx = s.summary();
    assert_eq!(s.pid(), Some(pid), "process.pid: {ctx}");
    assert_eq!(
        s.res_str("process.executable.name"),
        Some(exe),
        "process.executable.name: {ctx} resource={:?}",
        s.resource
    );
    assert_eq!(
        s.res_str("host.name"),
        Some(crate::procs::hostname().as_str()),
        "host.name: {ctx}"
    );
    for k in ["service.name", "service.instance.id", "telemetry.sdk.name"] {
        assert!(
            s.res_str(k).is_some_and(|v| !v.is_empty()),
            "resource {k} missing: {ctx} resource={:?}",
            s.resource
        );
    }
}

/// Waits for exactly `expected.len()` spans matching `pred` (then [`crate::QUIET`] without
/// another one) and matches them one to one against `expected`.
pub fn expect_spans(
    rx: &OtlpReceiver,
    pred: impl Fn(&ReceivedSpan) -> bool,
    expected: &[ExpectedSpan],
) -> Vec<ReceivedSpan> {
    let spans = rx.wait_for_exact_spans(pred, expected.len(), crate::SPAN_TIMEOUT, crate::QUIET);
    assert_spans_match(&spans, expected);
    spans
}

/// [`assert_server_span_contract`] and [`assert_resource`] for every span.
pub fn check_server_spans(spans: &[ReceivedSpan], port: u16, pid: u32, exe: &str) {
    for s in spans {
        assert_server_span_contract(s, port);
        assert_resource(s, pid, exe);
    }
}

/// [`assert_client_span_contract`] and [`assert_resource`] for every span.
pub fn check_client_spans(spans: &[ReceivedSpan], upstream_port: u16, pid: u32, exe: &str) {
    for s in spans {
        assert_client_span_contract(s, upstream_port);
        assert_resource(s, pid, exe);
    }
}
