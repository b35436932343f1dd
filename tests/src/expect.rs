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

/// Collects contract violations with the span's summary.
struct Violations<'a> {
    span: &'a ReceivedSpan,
    out: Vec<String>,
}

impl Violations<'_> {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.out
                .push(format!("{} in {}", what(), self.span.summary()));
        }
    }
}

/// Violations of the SERVER span contract: name, scheme, addresses, port, sizes, status, times.
pub fn server_span_violations(s: &ReceivedSpan, server_port: u16) -> Vec<String> {
    scheme_server_span_violations(s, server_port, "http")
}

/// [`server_span_violations`] for a request that came over `scheme` (`https`: TLS).
pub fn scheme_server_span_violations(
    s: &ReceivedSpan,
    server_port: u16,
    scheme: &str,
) -> Vec<String> {
    let mut v = Violations {
        span: s,
        out: Vec::new(),
    };
    v.check(s.kind == SpanKind::Server, || "kind is not SERVER".into());
    let path = s.attr_str("url.path").unwrap_or("");
    v.check(!path.is_empty(), || "url.path missing".into());
    v.check(!path.contains('?'), || "url.path has a query".into());
    // Name: "<METHOD> <route>" when the daemon knows a route, else "<METHOD> <url.path>".
    let route = s.attr_str("http.route").unwrap_or(path);
    let want = format!("{} {}", s.method(), route);
    v.check(s.name == want, || format!("name is not {want:?}"));
    v.check(!s.method().is_empty(), || {
        "http.request.method missing".into()
    });
    v.check((100..=999).contains(&s.http_status()), || {
        "http.response.status_code missing or not an int".into()
    });
    v.check(s.attr_str("url.scheme") == Some(scheme), || {
        format!("url.scheme is not {scheme:?}")
    });
    v.check(
        s.attr_int("server.port") == Some(server_port as i64),
        || format!("server.port is not {server_port}"),
    );
    v.check(s.attr_str("server.address") == Some("127.0.0.1"), || {
        "server.address is not \"127.0.0.1\"".into()
    });
    // Servers that accept with accept(fd, NULL, NULL) (libuv: Node) give the kernel no peer
    // address; the daemon then reads it from the socket, which a very short connection may
    // already have closed. Absent is allowed for them (documented limit); wrong never is.
    let node = s.res_str("process.executable.name") == Some("node");
    v.check(
        s.attr_str("client.address") == Some("127.0.0.1")
            || (node && s.attr_str("client.address").is_none()),
        || "client.address is not \"127.0.0.1\"".into(),
    );
    for k in ["http.request.body.size", "http.response.body.size"] {
        v.check(s.attr_int(k).is_some_and(|n| n >= 0), || {
            format!("{k} missing, not an int, or negative")
        });
    }
    v.check(
        (s.status_code == SpanStatus::Error) == (s.http_status() >= 500),
        || "span status must be ERROR iff status >= 500".into(),
    );
    v.out.extend(time_violations(s));
    v.out
}

/// Violations of the CLIENT span contract: name, url.full, server address/port, status.
pub fn client_span_violations(s: &ReceivedSpan, upstream_port: u16) -> Vec<String> {
    scheme_client_span_violations(s, upstream_port, "http")
}

/// [`client_span_violations`] for a call made over `scheme` (`https`: TLS).
pub fn scheme_client_span_violations(
    s: &ReceivedSpan,
    upstream_port: u16,
    scheme: &str,
) -> Vec<String> {
    let mut v = Violations {
        span: s,
        out: Vec::new(),
    };
    v.check(s.kind == SpanKind::Client, || "kind is not CLIENT".into());
    v.check(s.name == s.method(), || "name is not the method".into());
    v.check(!s.method().is_empty(), || {
        "http.request.method missing".into()
    });
    v.check((100..=999).contains(&s.http_status()), || {
        "http.response.status_code missing or not an int".into()
    });
    v.check(
        s.attr_str("url.full")
            .is_some_and(|u| u.strip_prefix(scheme).is_some_and(|r| r.starts_with("://"))),
        || format!("url.full missing or not {scheme}://"),
    );
    v.check(
        s.attr_int("server.port") == Some(upstream_port as i64),
        || format!("server.port is not {upstream_port}"),
    );
    v.check(
        s.attr_str("server.address").is_some_and(|a| !a.is_empty()),
        || "server.address missing".into(),
    );
    v.check(
        (s.status_code == SpanStatus::Error) == (s.http_status() >= 400),
        || "client span status must be ERROR iff status >= 400".into(),
    );
    v.out.extend(time_violations(s));
    v.out
}

/// start > 0, end >= start, duration < 60 s, start within the last hour of wall-clock time.
pub fn time_violations(s: &ReceivedSpan) -> Vec<String> {
    let mut v = Violations {
        span: s,
        out: Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let hour = 3_600_000_000_000u64;
    v.check(s.start_ns > 0, || "start time is zero".into());
    v.check(s.end_ns >= s.start_ns, || "end before start".into());
    v.check(s.duration().as_secs() < 60, || "duration >= 60 s".into());
    v.check(
        s.start_ns > now - hour && s.start_ns < now + 60_000_000_000,
        || format!("start time not within the last hour (now={now}; clock conversion?)"),
    );
    v.out
}

/// Violations of the resource contract for a span of process `pid` (`exe`: expected
/// `process.executable.name`).
pub fn resource_violations(s: &ReceivedSpan, pid: u32, exe: &str) -> Vec<String> {
    let mut v = Violations {
        span: s,
        out: Vec::new(),
    };
    v.check(s.pid() == Some(pid), || format!("process.pid is not {pid}"));
    v.check(s.res_str("process.executable.name") == Some(exe), || {
        format!(
            "process.executable.name is not {exe:?} (resource {:?})",
            s.resource
        )
    });
    let host = crate::procs::hostname();
    v.check(s.res_str("host.name") == Some(host.as_str()), || {
        format!("host.name is not {host:?}")
    });
    for k in ["service.name", "service.instance.id", "telemetry.sdk.name"] {
        v.check(s.res_str(k).is_some_and(|x| !x.is_empty()), || {
            format!("resource {k} missing (resource {:?})", s.resource)
        });
    }
    v.out
}

fn fail_on(violations: Vec<String>, what: &str) {
    if !violations.is_empty() {
        let n = violations.len();
        let shown: Vec<String> = violations.into_iter().take(50).collect();
        panic!("{n} {what} violation(s):\n  {}", shown.join("\n  "));
    }
}

/// Panics listing every violation of the SERVER span contract.
pub fn assert_server_span_contract(s: &ReceivedSpan, server_port: u16) {
    fail_on(
        server_span_violations(s, server_port),
        "SERVER span contract",
    );
}

/// Panics listing every violation of the CLIENT span contract.
pub fn assert_client_span_contract(s: &ReceivedSpan, upstream_port: u16) {
    fail_on(
        client_span_violations(s, upstream_port),
        "CLIENT span contract",
    );
}

/// Panics unless the span's times are sane (see [`time_violations`]).
pub fn assert_times_sane(s: &ReceivedSpan) {
    fail_on(time_violations(s), "span time");
}

/// Panics listing every violation of the resource contract.
pub fn assert_resource(s: &ReceivedSpan, pid: u32, exe: &str) {
    fail_on(resource_violations(s, pid, exe), "resource");
}

/// Waits for exactly `expected.len()` spans matching `pred` (then [`crate::quiet`] without
/// another one) and matches them one to one against `expected`.
pub fn expect_spans(
    rx: &OtlpReceiver,
    pred: impl Fn(&ReceivedSpan) -> bool,
    expected: &[ExpectedSpan],
) -> Vec<ReceivedSpan> {
    let spans =
        rx.wait_for_exact_spans(pred, expected.len(), crate::span_timeout(), crate::quiet());
    assert_spans_match(&spans, expected);
    spans
}

/// SERVER span and resource contract for every span; reports all violations at once.
pub fn check_server_spans(spans: &[ReceivedSpan], port: u16, pid: u32, exe: &str) {
    let mut v = Vec::new();
    for s in spans {
        v.extend(server_span_violations(s, port));
        v.extend(resource_violations(s, pid, exe));
    }
    fail_on(v, "SERVER span contract");
}

/// CLIENT span and resource contract for every span; reports all violations at once.
pub fn check_client_spans(spans: &[ReceivedSpan], upstream_port: u16, pid: u32, exe: &str) {
    let mut v = Vec::new();
    for s in spans {
        v.extend(client_span_violations(s, upstream_port));
        v.extend(resource_violations(s, pid, exe));
    }
    fail_on(v, "CLIENT span contract");
}

/// Checks the gRPC attributes of one span of `service`'s `method` that ended with `code`
/// (name, rpc.*, server address and port, status per role, times); panics listing them.
pub fn check_grpc_span(s: &ReceivedSpan, service: &str, method: &str, code: u32, server_port: u16) {
    let want_name = format!("/{service}/{method}");
    let mut bad = Vec::new();
    if s.name != want_name {
        bad.push(format!("name {:?} != {want_name:?}", s.name));
    }
    for (k, v) in [
        ("rpc.system", "grpc"),
        ("rpc.service", service),
        ("rpc.method", method),
        ("server.address", "127.0.0.1"),
    ] {
        if s.attr_str(k) != Some(v) {
            bad.push(format!("{k} = {:?}, want {v:?}", s.attr_str(k)));
        }
    }
    if s.attr_int("rpc.grpc.status_code") != Some(i64::from(code)) {
        bad.push(format!(
            "rpc.grpc.status_code = {:?}, want {code}",
            s.attr_int("rpc.grpc.status_code")
        ));
    }
    if s.attr_int("server.port") != Some(i64::from(server_port)) {
        bad.push(format!("server.port = {:?}", s.attr_int("server.port")));
    }
    for k in ["beyla.partial", "beyla.incomplete"] {
        if s.attr(k).is_some() {
            bad.push(format!("{k} is set"));
        }
    }
    let error = if s.is_server() {
        matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
    } else {
        code != 0
    };
    let status_ok = if error {
        s.status_code == SpanStatus::Error
    } else {
        s.status_code != SpanStatus::Error
    };
    if !status_ok {
        bad.push(format!(
            "status {:?}, want {}",
            s.status_code,
            if error { "Error" } else { "not Error" }
        ));
    }
    if s.end_ns < s.start_ns || s.start_ns == 0 {
        bad.push("bad start/end".into());
    }
    assert!(bad.is_empty(), "{}: {}", s.summary(), bad.join("; "));
}
