//! `cargo xtask bench`: what beyla-rs costs, as ratios against the same workload without it,
//! measured in the same run, several rounds, medians.
//!
//! Workloads (all on loopback):
//! 1. nginx `return 200` at saturation with `wrk` (keep-alive): throughput and latency ratios,
//!    and spans received per request.
//! 2. the same at fixed rates (5k and 20k req/s, our own paced generator): achieved rates,
//!    daemon CPU per request, nginx CPU per request with and without, daemon peak RSS, spans
//!    received vs requests sent, BPF time per request (`kernel.bpf_stats_enabled`).
//! 3. a new connection per request at a fixed rate: the accept/close path.
//! 4. a busy process that is *not* selected (`dd` doing small reads and writes): the cost we
//!    impose on everything else.
//! 5. nginx over HTTPS at a fixed rate with keep-alive (wrk, paced): nginx's and the daemon's
//!    CPU and the BPF time per request, and the cost to wrk, an unselected process that maps
//!    the same libssl the uprobes are on (see [`https`]).
//! 6. a private PostgreSQL under `pgbench -S` at a fixed rate, and a private Redis under
//!    `redis-benchmark -t get,set`: the server's and the daemon's CPU and the BPF time per
//!    query or request, spans against the operations (see [`db`]).
//!
//! `--only saturation,rates,https,unselected,pgbench,redis` runs only those (`cargo xtask
//! bench --only https`); `--quick` halves the rounds' length.
//!
//! What keeps it measuring the daemon rather than itself:
//! - Rounds are counterbalanced: without → with in even rounds, with → without in odd ones,
//!   over an even number of rounds, so a drift of the machine during the run favours neither
//!   side.
//! - The fixed-rate generator is closed-loop per connection (a connection waits for its
//!   answer): a slower server gets fewer requests. Each row reports the achieved rate next to
//!   its target, and every per-request figure is divided by the requests actually completed.
//! - The in-process OTLP receiver decodes every request; one it cannot decode is answered 400
//!   and fails the run. Spans are counted once the daemon has exited and the receiver has
//!   closed its last connection, and must equal the spans the daemon reports as exported.
//! - BPF time counts only the programs of the daemon under test (by the ids it holds). The
//!   programs also run for the load generator's own syscalls or socket calls (this process,
//!   not selected) and for every other process of the machine: those shares are reported
//!   apart, the generator's from its own count of what it did (requests, pauses,
//!   connections) and the measured cost of each for an unselected process under the same
//!   capture backend, the machine's from the programs' time per second without load.
//! - The saturation rows report spans received per request: a daemon that dropped its work
//!   cannot look cheap.
//! - The daemon's log is read while it runs (a full pipe would stall it); its exit summary
//!   gives its counters (spans exported and dropped, kernel records lost).
//!
//! Output: a Markdown table on stdout and `target/bench/bench-<unix time>.json`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use prost::Message;

mod db;
mod https;
pub mod vm;

/// Rounds per workload: even, so that each side runs first in half of them.
const ROUNDS: usize = 4;

/// The two sides of an A/B round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Without,
    With,
}

/// Counterbalanced order (ABBA…): without → with in even rounds, with → without in odd ones.
fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Without, Side::With]
    } else {
        [Side::With, Side::Without]
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// user+system CPU seconds of a process (from /proc/<pid>/stat).
/// CPU time of a process, all its live threads: the scheduler's `sum_exec_runtime`
/// (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds). `/proc/<pid>/stat`'s user+sys is
/// sampled at the timer tick (250 Hz here, tick-based accounting): a daemon that runs a few
/// percent of the time is charged in whole ticks, about ±10 % per 10 s round. Falls back to
/// that when schedstat is missing (kernels without `CONFIG_SCHED_INFO`).
fn cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            if let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    stat_cpu_seconds(pid)
}

/// user+sys from `/proc/<pid>/stat` (includes exited threads), in seconds.
fn stat_cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = s.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime is field 14, stime 15 (1-based); after ')' the state is field 3 → index 0.
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A private nginx serving `return 200` with one worker.
struct Nginx {
    child: Child,
    port: u16,
    /// Its prefix: configuration, logs, and (HTTPS) certificate, key and the wrk script.
    dir: PathBuf,
}

impl Nginx {
    /// Plain HTTP.
    fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// `tls`: `listen … ssl` with a self-signed certificate for localhost and 127.0.0.1, made
    /// with `openssl req` in its directory; otherwise the same server.
    fn start_with(tls: bool) -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "beyla-bench-nginx-{}{port}",
            if tls { "tls-" } else { "" }
        ));
        std::fs::create_dir_all(dir.join("logs"))?;
        let (ssl, certs) = if tls {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .context("running openssl req (apt-get install openssl)")?;
            if !out.status.success() {
                bail!(
                    "openssl req failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            (
                " ssl",
                format!(
                    "    ssl_certificate {};\n    ssl_certificate_key {};\n",
                    cert.display(),
                    key.display()
                ),
            )
        } else {
            ("", String::new())
        };
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
               server {{\n    listen 127.0.0.1:{port}{ssl} backlog=4096;\n{certs}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .args(["-p", &dir.display().to_string(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not start on port {port}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, port, dir })
    }

    fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.child.id()];
        v.extend(children_of(self.child.id()));
        v
    }

    fn cpu(&self) -> f64 {
        self.pids().into_iter().map(cpu_seconds).sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL stops the master only: its worker would live on (orphaned, still holding
        // the port), and idle workers left from earlier workloads skew the later ones.
        let workers = children_of(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            let _ = Command::new("kill")
                .args(["-KILL", &w.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What the in-process OTLP receiver saw.
#[derive(Default)]
struct RecvState {
    spans: AtomicU64,
    metrics_requests: AtomicU64,
    /// Connections accepted and not yet closed.
    active: AtomicUsize,
    /// Requests it could not decode (answered 400): any fails the run.
    errors: Mutex<Vec<String>>,
}

/// Decodes and counts what arrives over OTLP/HTTP (protobuf): spans at `/v1/traces`, requests
/// at `/v1/metrics` (the daemon's default metrics export).
struct Receiver {
    port: u16,
    st: Arc<RecvState>,
}

/// Decrements the active-connection count when a connection's thread ends.
struct ActiveConn(Arc<RecvState>);

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Receiver {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let st = Arc::new(RecvState::default());
        let shared = st.clone();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                shared.active.fetch_add(1, Ordering::SeqCst);
                let guard = ActiveConn(shared.clone());
                thread::spawn(move || serve_otlp(s, &guard.0));
            }
        });
        Ok(Self { port, st })
    }

    fn spans(&self) -> u64 {
        self.st.spans.load(Ordering::SeqCst)
    }

    /// Waits until every connection is closed: called after the daemon exited, it returns
    /// once each request the daemon sent has been answered and counted.
    fn drained(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.st.active.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                bail!(
                    "the OTLP receiver still has {} open connections 10 s after the daemon exited",
                    self.st.active.load(Ordering::SeqCst)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Fails when any request could not be decoded.
    fn check(&self) -> Result<()> {
        let errors = self.st.errors.lock().unwrap_or_else(|p| p.into_inner());
        if !errors.is_empty() {
            bail!(
                "the OTLP receiver could not decode {} requests (the span counts would be \
                 wrong): {:?}",
                errors.len(),
                &errors[..errors.len().min(5)]
            );
        }
        Ok(())
    }
}

/// Decodes one request body by path; returns the spans it carried.
fn decode_otlp(path: &str, head: &str, body: &[u8], st: &RecvState) -> Result<u64, String> {
    if head.lines().any(|l| {
        l.strip_prefix("content-encoding:")
            .is_some_and(|v| v.trim() != "identity")
    }) {
        return Err(format!("{path}: compressed body: {head:?}"));
    }
    match path {
        "/v1/traces" => {
            let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                .map_err(|e| format!("{path}: {e}"))?;
            Ok(req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum())
        }
        "/v1/metrics" => {
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(
                body,
            )
            .map_err(|e| format!("{path}: {e}"))?;
            st.metrics_requests.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        }
        other => Err(format!("unexpected path {other}")),
    }
}

fn serve_otlp(mut s: TcpStream, st: &RecvState) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // Read one request: head, then Content-Length bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let len: Option<usize> = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok());
        let Some(len) = len else {
            // Chunked or unframed: this receiver cannot tell where the body ends.
            st.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{path}: no Content-Length: {head:?}"));
            let _ = s.write_all(
                b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        while buf.len() < head_end + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let resp: &[u8] = match decode_otlp(&path, &head, &buf[head_end..head_end + len], st) {
            Ok(n) => {
                st.spans.fetch_add(n, Ordering::SeqCst);
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
            }
            Err(e) => {
                st.errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
            }
        };
        buf.drain(..head_end + len);
        if s.write_all(resp).is_err() {
            return;
        }
    }
}

/// The line the daemon logs once its programs are attached and the start-up scan is done.
const READY: &str = "beyla-rs ready";

/// A running daemon; its log is read by a thread while it runs. Killed if dropped running.
struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    /// Ids of the BPF programs it holds (its own, whatever they are named).
    prog_ids: Vec<u32>,
}

/// The daemon's counters from its exit summary (`stopped: name=value …`, nonzero ones).
struct ExitCounters(HashMap<String, u64>);

impl ExitCounters {
    /// From the last `stopped:` line of the log.
    fn parse(log: &[String]) -> Option<ExitCounters> {
        let summary = log
            .iter()
            .rev()
            .find_map(|l| l.split_once("stopped:").map(|(_, s)| s))?;
        Some(ExitCounters(
            summary
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        ))
    }

    fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

impl Daemon {
    fn start(bin: &PathBuf, ports: &str, receiver: u16) -> Result<Self> {
        Self::start_env(bin, ports, receiver, &[])
    }

    /// [`Self::start`] with more environment variables (the VM bench forces a backend).
    fn start_env(bin: &PathBuf, ports: &str, receiver: u16, env: &[(&str, &str)]) -> Result<Self> {
        let mut child = Command::new(bin)
            .envs(env.iter().copied())
            .env("BEYLA_OPEN_PORT", ports)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{receiver}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            // Info: the ready line and the exit summary (a handful of lines per run).
            .env("BEYLA_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting beyla-rs")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().context("daemon stderr")?;
        let lines = log.clone();
        let reader = thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
            }
        });
        let mut d = Self {
            child: Some(child),
            log,
            reader: Some(reader),
            prog_ids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.log_lines().iter().any(|l| l.contains(READY)) {
                break;
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().transpose()) {
                let st = st?;
                d.join_reader();
                bail!(
                    "beyla-rs exited early ({st}):\n{}",
                    d.log_lines().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "beyla-rs did not log {READY:?} within 30 s:\n{}",
                    d.log_lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        d.prog_ids = prog_ids_of(d.pid());
        if d.prog_ids.is_empty() {
            bail!("beyla-rs (pid {}) holds no BPF program", d.pid());
        }
        Ok(d)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGTERM, wait, and the counters of its exit summary. Its warnings (ring buffer
    /// overflow, export failures, losses at exit) are printed: they explain a "lost" column
    /// that is not zero.
    fn stop(mut self) -> Result<ExitCounters> {
        let mut child = self.child.take().context("daemon already stopped")?;
        // SAFETY: signalling our own child.
        unsafe { kill(child.id() as i32, 15) };
        let st = child.wait()?;
        self.join_reader();
        let log = self.log_lines();
        for line in log
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(10)
        {
            eprintln!("    beyla-rs: {line}");
        }
        if !st.success() {
            bail!("beyla-rs exited with {st}:\n{}", log.join("\n"));
        }
        ExitCounters::parse(&log)
            .with_context(|| format!("no exit summary in the daemon log:\n{}", log.join("\n")))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_reader();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Ids of the BPF programs `pid` holds (program fds and links), from `/proc/<pid>/fdinfo`.
fn prog_ids_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for e in rd.flatten() {
            let Ok(info) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            ids.extend(info.lines().filter_map(|l| {
                l.strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            }));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[derive(serde::Deserialize)]
struct BpfProg {
    id: u32,
    /// The kernel's name (up to 15 characters) or, when bpftool finds it in the BTF, the
    /// whole function name.
    #[serde(default)]
    name: String,
    run_time_ns: Option<u64>,
    run_cnt: Option<u64>,
}

/// Every loaded program, from `bpftool prog show --json`.
fn bpf_progs() -> Result<Vec<BpfProg>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("bpftool prog show --json")
}

/// (run_time_ns, run_cnt) summed over the programs `ids` (one daemon's).
fn bpf_time(ids: &[u32]) -> Result<(u64, u64)> {
    Ok(bpf_time_split(ids, "")?.0)
}

/// [`bpf_time`], and the same summed over those of the programs whose name starts with
/// `prefix` (`beyla_ssl`: the OpenSSL uprobes).
fn bpf_time_split(ids: &[u32], prefix: &str) -> Result<((u64, u64), (u64, u64))> {
    let progs = bpf_progs()?;
    let (mut all, mut some) = ((0, 0), (0, 0));
    for id in ids {
        let p = progs
            .iter()
            .find(|p| p.id == *id)
            .with_context(|| format!("BPF program {id} of the daemon is gone"))?;
        let (t, n) = (p.run_time_ns.unwrap_or(0), p.run_cnt.unwrap_or(0));
        all.0 += t;
        all.1 += n;
        if p.name.starts_with(prefix) {
            some.0 += t;
            some.1 += n;
        }
    }
    Ok((all, some))
}

/// What the load generator does that makes the daemon's programs run, counted exactly by the
/// generator (its threads' own start and exit, a few dozen syscalls, are not counted).
#[derive(Clone, Copy, Default)]
struct GenOps {
    /// Requests written, each followed by reading its response.
    exchanges: u64,
    /// Pauses to keep the schedule (one clock_nanosleep each).
    sleeps: u64,
    /// Connections opened (socket, connect, setsockopt) and later closed.
    connections: u64,
}

impl GenOps {
    fn add(&mut self, o: GenOps) {
        self.exchanges += o.exchanges;
        self.sleeps += o.sleeps;
        self.connections += o.connections;
    }
}

/// BPF nanoseconds the daemon's programs spend per operation of a process they do not select
/// (the load generator), whatever the capture backend: the syscall backend runs for every
/// syscall, the socket-level ones for socket calls only.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct GenCosts {
    /// One request written and its response read, on an open connection.
    exchange_ns: f64,
    /// One pause.
    sleep_ns: f64,
    /// One connection opened and closed.
    connection_ns: f64,
}

impl GenCosts {
    fn of(&self, ops: &GenOps) -> f64 {
        ops.exchanges as f64 * self.exchange_ns
            + ops.sleeps as f64 * self.sleep_ns
            + ops.connections as f64 * self.connection_ns
    }
}

/// BPF nanoseconds per second the daemon's programs spend while this benchmark does nothing
/// (the other processes of the machine, and one bpftool run), over `window`.
fn bpf_background(d: &Daemon, window: Duration) -> Result<f64> {
    let (t0, _) = bpf_time(&d.prog_ids)?;
    let t = Instant::now();
    thread::sleep(window);
    let (t1, _) = bpf_time(&d.prog_ids)?;
    Ok((t1 - t0) as f64 / t.elapsed().as_secs_f64())
}

/// The BPF nanoseconds `f` causes: the daemon's programs' time over `f`, less the
/// background rate over the same time.
fn bpf_cost_of(d: &Daemon, background: f64, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let (t0, _) = bpf_time(&d.prog_ids)?;
    let t = Instant::now();
    f()?;
    let elapsed = t.elapsed().as_secs_f64();
    let (t1, _) = bpf_time(&d.prog_ids)?;
    Ok(((t1 - t0) as f64 - background * elapsed).max(0.0))
}

/// Measures [`GenCosts`] with a daemon that selects nothing here, each operation done many
/// times by this process, the background rate subtracted:
/// - an exchange against a server thread of this process, whose side does the same socket
///   calls (a read and a write), so half of it is the generator's;
/// - a pause as sched_yield: like the generator's clock_nanosleep, a syscall that is no
///   socket call and returns 0 (the syscall backend's programs read its number; the
///   socket-level ones do not run);
/// - a connection opened (socket, connect, setsockopt) and closed against a listener that
///   never accepts (the kernel completes the handshake; no server process acts), renewed
///   before its backlog fills.
fn generator_costs(bin: &PathBuf, recv: &Receiver) -> Result<GenCosts> {
    const EXCHANGES: u64 = 50_000;
    const PAUSES: u64 = 200_000;
    const CONNECTIONS: u64 = 5_000;
    const BACKLOG_USE: u64 = 64;
    // The server side of the exchanges: one connection, a read and a write per request.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let d = Daemon::start(bin, &free_port()?.to_string(), recv.port)?;
    let background = bpf_background(&d, Duration::from_secs(1))?;
    let req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_nodelay(true)?;
    let mut buf = Vec::new();
    let exchanges = bpf_cost_of(&d, background, || {
        for _ in 0..EXCHANGES {
            c.write_all(req)?;
            read_response(&mut c, &mut buf)?;
        }
        Ok(())
    })?;
    drop(c);
    let pauses = bpf_cost_of(&d, background, || {
        for _ in 0..PAUSES {
            thread::yield_now();
        }
        Ok(())
    })?;
    let connections = bpf_cost_of(&d, background, || {
        let mut listener = TcpListener::bind("127.0.0.1:0")?;
        for i in 0..CONNECTIONS {
            if i % BACKLOG_USE == 0 {
                listener = TcpListener::bind("127.0.0.1:0")?;
            }
            let c = TcpStream::connect(listener.local_addr()?)?;
            c.set_nodelay(true)?;
        }
        Ok(())
    })?;
    d.stop()?;
    Ok(GenCosts {
        exchange_ns: exchanges / 2.0 / EXCHANGES as f64,
        sleep_ns: pauses / PAUSES as f64,
        connection_ns: connections / CONNECTIONS as f64,
    })
}

/// Read one HTTP/1.1 response with Content-Length from `s`, using `buf` as carry-over.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..i];
            let len = std::str::from_utf8(head)
                .ok()
                .and_then(|h| {
                    h.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())
                            .flatten()
                    })
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                buf.drain(..i + 4 + len);
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a paced load did.
#[derive(Clone, Copy)]
struct Load {
    /// Requests answered.
    done: u64,
    /// From the first scheduled request until every connection stopped.
    elapsed: Duration,
    /// What the generator did, for its share of the BPF time.
    ops: GenOps,
}

impl Load {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// Paced load: `rate` requests per second for `dur`, over `conns` connections (keep-alive) or
/// a new connection per request. Closed-loop per connection: a connection sends its next
/// request when the previous one was answered, so a slow server gets fewer requests (a late
/// connection then sends at once until it is back on schedule).
fn paced_load(port: u16, rate: u64, dur: Duration, conns: usize, keepalive: bool) -> Load {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ops_total = Arc::new(Mutex::new(GenOps::default()));
    let per_conn_interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let done = done.clone();
            let stop = stop.clone();
            let ops_total = ops_total.clone();
            thread::spawn(move || {
                let req: &[u8] = if keepalive {
                    b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
                } else {
                    b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                };
                let mut ops = GenOps::default();
                // Stagger the connections across one interval.
                let mut next = start + per_conn_interval.mul_f64(i as f64 / conns as f64);
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        thread::sleep(next - now);
                        ops.sleeps += 1;
                    }
                    next += per_conn_interval;
                    if conn.is_none() {
                        conn = TcpStream::connect(("127.0.0.1", port)).ok();
                        buf.clear();
                        if let Some(c) = &conn {
                            let _ = c.set_nodelay(true);
                            ops.connections += 1;
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    ops.exchanges += 1;
                    let ok = c.write_all(req).is_ok() && read_response(c, &mut buf).is_ok();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    if !ok || !keepalive {
                        conn = None;
                    }
                }
                ops_total.lock().unwrap_or_else(|p| p.into_inner()).add(ops);
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed();
    let ops = *ops_total.lock().unwrap_or_else(|p| p.into_inner());
    Load {
        done: done.load(Ordering::Relaxed),
        elapsed,
        ops,
    }
}

/// The daemon's run summed over the instrumented rounds of a workload.
#[derive(Default, Clone, serde::Serialize)]
struct Delivery {
    /// Spans the receiver decoded (equal to what the daemon reports as exported).
    spans: u64,
    /// Spans the daemon dropped (export queue full).
    spans_dropped: u64,
    /// Kernel records lost (ring buffer full).
    events_lost: u64,
}

/// Stops the daemon, waits for the receiver to drain, and accounts the round's spans; fails
/// when the receiver and the daemon disagree.
fn finish_round(d: Daemon, recv: &Receiver, spans_before: u64, acc: &mut Delivery) -> Result<()> {
    let c = d.stop()?;
    recv.drained()?;
    let spans = recv.spans() - spans_before;
    if spans != c.get("spans_exported") {
        bail!(
            "the receiver counted {spans} spans, the daemon exported {}: {:?}",
            c.get("spans_exported"),
            c.0
        );
    }
    acc.spans += spans;
    acc.spans_dropped += c.get("spans_dropped");
    acc.events_lost += c.get("events_lost_kernel");
    Ok(())
}

#[derive(Default, Clone, serde::Serialize)]
struct RateResult {
    label: String,
    /// Target request rate.
    rate: u64,
    /// Achieved request rates (medians over the rounds).
    achieved_rate_base: f64,
    achieved_rate_inst: f64,
    requests_base: u64,
    requests_inst: u64,
    delivery: Delivery,
    /// Per request completed (achieved), medians.
    server_cpu_us_per_req_base: f64,
    server_cpu_us_per_req_inst: f64,
    daemon_cpu_us_per_req: f64,
    /// The daemon's programs only, everything they ran for.
    bpf_ns_per_req: f64,
    bpf_ns_per_run: f64,
    bpf_runs_per_req: f64,
    /// Of `bpf_ns_per_req`: what the load generator's own operations cost (see
    /// [`generator_costs`]), what the rest of the machine caused (the background rate
    /// measured with the daemon loaded just before the load), and the rest: the traced
    /// server's.
    bpf_generator_ns_per_req: f64,
    bpf_background_ns_per_req: f64,
    bpf_server_ns_per_req: f64,
    /// Peak RSS over the daemon's life: includes start-up, where parsing the kernel's BTF
    /// peaks.
    daemon_peak_rss_kb: u64,
    /// RSS at the end of the loaded period (largest over the rounds): the steady-state size.
    daemon_rss_kb: u64,
}

/// Fixed-rate A/B rounds against nginx. `generator` is [`generator_costs`].
#[allow(clippy::too_many_arguments)]
fn rate_workload(
    bin: &PathBuf,
    label: &str,
    rate: u64,
    dur: Duration,
    conns: usize,
    keepalive: bool,
    generator: GenCosts,
) -> Result<RateResult> {
    let nginx = Nginx::start()?;
    let recv = Receiver::start()?;
    let mut r = RateResult {
        label: label.to_owned(),
        rate,
        ..Default::default()
    };
    let (mut sb, mut si, mut dc, mut bpf_req, mut bpf_run, mut runs_req) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut ab, mut ai, mut gen_req, mut bg_req, mut srv_req) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        eprintln!("  {label}: round {}/{ROUNDS}", round + 1);
        for side in order(round) {
            match side {
                Side::Without => {
                    let c0 = nginx.cpu();
                    let load = paced_load(nginx.port, rate, dur, conns, keepalive);
                    sb.push((nginx.cpu() - c0) * 1e6 / load.done.max(1) as f64);
                    ab.push(load.rate());
                    r.requests_base += load.done;
                }
                Side::With => {
                    let spans0 = recv.spans();
                    let d = Daemon::start(bin, &nginx.port.to_string(), recv.port)?;
                    let background = bpf_background(&d, Duration::from_secs(1))?;
                    let (t0, k0) = bpf_time(&d.prog_ids)?;
                    let dc0 = cpu_seconds(d.pid());
                    let c0 = nginx.cpu();
                    let load = paced_load(nginx.port, rate, dur, conns, keepalive);
                    let server = nginx.cpu() - c0;
                    let daemon = cpu_seconds(d.pid()) - dc0;
                    r.daemon_rss_kb = r.daemon_rss_kb.max(status_kb(d.pid(), "VmRSS:"));
                    let (t1, k1) = bpf_time(&d.prog_ids)?;
                    r.daemon_peak_rss_kb = r.daemon_peak_rss_kb.max(status_kb(d.pid(), "VmHWM:"));
                    finish_round(d, &recv, spans0, &mut r.delivery)?;
                    let n = load.done.max(1) as f64;
                    si.push(server * 1e6 / n);
                    dc.push(daemon * 1e6 / n);
                    bpf_req.push((t1 - t0) as f64 / n);
                    bpf_run.push((t1 - t0) as f64 / (k1 - k0).max(1) as f64);
                    runs_req.push((k1 - k0) as f64 / n);
                    let total = (t1 - t0) as f64 / n;
                    let generator_share = generator.of(&load.ops) / n;
                    let background_share = background * load.elapsed.as_secs_f64() / n;
                    gen_req.push(generator_share);
                    bg_req.push(background_share);
                    srv_req.push(total - generator_share - background_share);
                    ai.push(load.rate());
                    r.requests_inst += load.done;
                }
            }
        }
    }
    recv.check()?;
    r.achieved_rate_base = median(&mut ab);
    r.achieved_rate_inst = median(&mut ai);
    r.server_cpu_us_per_req_base = median(&mut sb);
    r.server_cpu_us_per_req_inst = median(&mut si);
    r.daemon_cpu_us_per_req = median(&mut dc);
    r.bpf_ns_per_req = median(&mut bpf_req);
    r.bpf_ns_per_run = median(&mut bpf_run);
    r.bpf_runs_per_req = median(&mut runs_req);
    r.bpf_generator_ns_per_req = median(&mut gen_req);
    r.bpf_background_ns_per_req = median(&mut bg_req);
    r.bpf_server_ns_per_req = median(&mut srv_req);
    Ok(r)
}

#[derive(Default, Clone, serde::Serialize)]
struct WrkResult {
    rps_base: f64,
    rps_inst: f64,
    p50_ms_base: f64,
    p50_ms_inst: f64,
    p99_ms_base: f64,
    p99_ms_inst: f64,
    /// Requests wrk completed in the instrumented rounds, and what became of them.
    requests_inst: u64,
    delivery: Delivery,
}

/// One wrk run: (requests/s, p50 ms, p99 ms, requests completed).
fn wrk(port: u16, dur: Duration) -> Result<(f64, f64, f64, u64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{}s", dur.as_secs()),
            "--latency",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// (requests/s, p50 ms, p99 ms, requests completed) from wrk's output.
fn parse_wrk(text: &str) -> Result<(f64, f64, f64, u64)> {
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk output")?;
    // "  123456 requests in 5.00s, 12.34MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    let pct = |p: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix(p).map(|v| v.trim().to_owned())
            })
            .map(|v| parse_wrk_time(&v))
            .unwrap_or(f64::NAN)
    };
    Ok((rps, pct("50%"), pct("99%"), requests))
}

fn parse_wrk_time(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        _ => f64::NAN,
    }
}

fn saturation(bin: &PathBuf, dur: Duration) -> Result<WrkResult> {
    let nginx = Nginx::start()?;
    let recv = Receiver::start()?;
    let mut res = WrkResult::default();
    let (mut rb, mut ri, mut p50b, mut p50i, mut p99b, mut p99i) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        eprintln!("  saturation: round {}/{ROUNDS}", round + 1);
        for side in order(round) {
            match side {
                Side::Without => {
                    let (r, p50, p99, _) = wrk(nginx.port, dur)?;
                    rb.push(r);
                    p50b.push(p50);
                    p99b.push(p99);
                }
                Side::With => {
                    let spans0 = recv.spans();
                    let d = Daemon::start(bin, &nginx.port.to_string(), recv.port)?;
                    let (r, p50, p99, n) = wrk(nginx.port, dur)?;
                    finish_round(d, &recv, spans0, &mut res.delivery)?;
                    res.requests_inst += n;
                    ri.push(r);
                    p50i.push(p50);
                    p99i.push(p99);
                }
            }
        }
    }
    recv.check()?;
    res.rps_base = median(&mut rb);
    res.rps_inst = median(&mut ri);
    res.p50_ms_base = median(&mut p50b);
    res.p50_ms_inst = median(&mut p50i);
    res.p99_ms_base = median(&mut p99b);
    res.p99_ms_inst = median(&mut p99i);
    Ok(res)
}

#[derive(Default, Clone, serde::Serialize)]
struct UnselectedResult {
    block_bytes: u64,
    syscalls: u64,
    seconds_base: f64,
    seconds_inst: f64,
}

/// A busy process we do not select: `dd` copying /dev/zero to /dev/null in `bs`-byte blocks
/// (two syscalls per block). 64-byte blocks are the worst case (the syscalls do almost nothing,
/// so any per-syscall cost shows); 64 KiB blocks are closer to a real program's I/O.
fn unselected(bin: &PathBuf, bs: u64, count: u64) -> Result<UnselectedResult> {
    const DD_ROUNDS: usize = 6;
    let run_dd = || -> Result<f64> {
        let t = Instant::now();
        let st = Command::new("dd")
            .args([
                "if=/dev/zero",
                "of=/dev/null",
                &format!("bs={bs}"),
                &format!("count={count}"),
            ])
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("dd failed");
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let recv = Receiver::start()?;
    let unused = free_port()?;
    let (mut b, mut i) = (vec![], vec![]);
    for round in 0..DD_ROUNDS {
        eprintln!("  unselected dd bs={bs}: round {}/{DD_ROUNDS}", round + 1);
        for side in order(round) {
            match side {
                Side::Without => b.push(run_dd()?),
                Side::With => {
                    let d = Daemon::start(bin, &unused.to_string(), recv.port)?;
                    i.push(run_dd()?);
                    d.stop()?;
                }
            }
        }
    }
    recv.check()?;
    Ok(UnselectedResult {
        block_bytes: bs,
        syscalls: count * 2,
        seconds_base: median(&mut b),
        seconds_inst: median(&mut i),
    })
}

fn machine_info() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "cpu": cpu,
        "cores": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel.trim(),
        "memory_gib": mem_kb / 1024 / 1024,
    })
}

fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "nginx"),
        ("wrk", "wrk"),
        ("bpftool", "bpftool"),
        ("openssl", "openssl"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The host bench's workloads, for `--only` (all when it is not given).
const WORKLOADS: [&str; 6] = [
    "saturation",
    "rates",
    "https",
    "unselected",
    db::ROWS[0],
    db::ROWS[1],
];

/// `--only a,b` from the command line (`cargo xtask bench --only https`): the workloads to
/// run; all without it.
fn selected_workloads(args: &[String]) -> Result<Vec<&'static str>> {
    let Some(i) = args.iter().position(|a| a == "--only") else {
        return Ok(WORKLOADS.to_vec());
    };
    let list = args.get(i + 1).with_context(|| {
        format!(
            "--only needs a comma-separated list of: {}",
            WORKLOADS.join(", ")
        )
    })?;
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let w = WORKLOADS
            .iter()
            .find(|w| **w == name)
            .with_context(|| format!("--only {name:?}: one of {}", WORKLOADS.join(", ")))?;
        if !out.contains(w) {
            out.push(*w);
        }
    }
    if out.is_empty() {
        bail!("--only: no workload named");
    }
    Ok(out)
}

/// Restores `kernel.bpf_stats_enabled` when dropped (also when a workload fails).
struct StatsRestore(String);

impl Drop for StatsRestore {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", self.0.trim());
    }
}

pub fn run(quick: bool) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs and needs root");
    }
    // `main` passes `--quick` only; the selection is read here.
    let args: Vec<String> = std::env::args().collect();
    let only = selected_workloads(&args)?;
    let want = |w: &str| only.contains(&w);
    // The host rows' tools (nginx, wrk, openssl) are not needed by the database rows, whose
    // servers and load generators are Debian's packages too.
    if only.iter().any(|w| !db::ROWS.contains(w)) {
        ensure_tools()?;
    }
    if db::check_tools(want("pgbench"), want("redis")).is_err() {
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(["postgresql", "redis-server", "redis-tools", "bpftool"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    db::check_tools(want("pgbench"), want("redis"))?;
    let bin = crate::build(true)?;
    // BPF run-time statistics give the in-kernel cost, but cost something themselves (two
    // clock reads per program run; in a KVM guest the clock is paravirtual): they are on only
    // for the fixed-rate workloads that report BPF time, off for the throughput and
    // unselected-process ratios. Restored afterwards.
    let _restore = StatsRestore(
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default(),
    );
    let bpf_stats = |on: bool| {
        std::fs::write(
            "/proc/sys/kernel/bpf_stats_enabled",
            if on { "1" } else { "0" },
        )
        .context("setting kernel.bpf_stats_enabled")
    };
    bpf_stats(false)?;
    let scale = if quick { 1 } else { 2 };
    let dur = Duration::from_secs(5 * scale);
    let started = Instant::now();
    let sat = if want("saturation") {
        eprintln!("bench: nginx at saturation (wrk -t1 -c32)");
        Some(saturation(&bin, dur)?)
    } else {
        None
    };
    let mut generator = None;
    let mut rates = Vec::new();
    if want("rates") {
        eprintln!("bench: fixed rates");
        bpf_stats(true)?;
        let g = {
            let recv = Receiver::start()?;
            let cost = generator_costs(&bin, &recv)?;
            recv.check()?;
            cost
        };
        generator = Some(g);
        rates.push(rate_workload(&bin, "keep-alive", 5_000, dur, 16, true, g)?);
        rates.push(rate_workload(&bin, "keep-alive", 20_000, dur, 32, true, g)?);
        rates.push(rate_workload(
            &bin,
            "new connection per request",
            2_000,
            dur,
            8,
            false,
            g,
        )?);
    }
    let tls = if want("https") {
        eprintln!(
            "bench: HTTPS at a fixed rate (nginx ssl, wrk -t1 -c{} paced at {} req/s)",
            https::CONNS,
            https::RATE
        );
        bpf_stats(true)?;
        Some(https::workload(&bin, dur)?)
    } else {
        None
    };
    let mut dbs = Vec::new();
    if want("pgbench") {
        eprintln!(
            "bench: PostgreSQL, pgbench -S at {} tx/s over {} connections",
            db::PG_RATE,
            db::PG_CLIENTS
        );
        bpf_stats(true)?;
        dbs.push(db::pgbench(&bin, dur)?);
    }
    if want("redis") {
        eprintln!(
            "bench: Redis, redis-benchmark -t get,set over {} connections",
            db::REDIS_CLIENTS
        );
        bpf_stats(true)?;
        dbs.push(db::redis(&bin, dur)?);
    }
    bpf_stats(false)?;
    let mut uns = Vec::new();
    if want("unselected") {
        eprintln!("bench: unselected busy process");
        uns.push(unselected(&bin, 64, 1_000_000)?);
        uns.push(unselected(&bin, 65536, 50_000)?);
    }
    drop(_restore);

    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let mut md = String::new();
    if let Some(sat) = &sat {
        md.push_str(&format!(
            "| nginx `return 200`, saturation (wrk -t1 -c32, {}s × {ROUNDS} rounds, counterbalanced) | without | with | ratio |\n|---|---|---|---|\n",
            dur.as_secs()
        ));
        md.push_str(&format!(
            "| throughput (req/s) | {:.0} | {:.0} | {:.3} |\n| p50 latency (ms) | {:.3} | {:.3} | {:.2} |\n| p99 latency (ms) | {:.3} | {:.3} | {:.2} |\n",
            sat.rps_base, sat.rps_inst, sat.rps_inst / sat.rps_base,
            sat.p50_ms_base, sat.p50_ms_inst, sat.p50_ms_inst / sat.p50_ms_base,
            sat.p99_ms_base, sat.p99_ms_inst, sat.p99_ms_inst / sat.p99_ms_base,
        ));
        md.push_str(&format!(
            "| spans received / requests (spans dropped, kernel records lost) | | {} / {} ({}, {}) | {:.4} |\n\n",
            sat.delivery.spans,
            sat.requests_inst,
            sat.delivery.spans_dropped,
            sat.delivery.events_lost,
            ratio(sat.delivery.spans, sat.requests_inst),
        ));
    }
    if let Some(generator) = &generator {
        md.push_str("| fixed rate (nginx) | req/s: target, achieved without / with | requests (with) | spans received | lost | nginx CPU µs/req without → with | daemon CPU µs/req | BPF ns/req (runs/req × ns/run) | of which: traced server / load generator / rest of the machine | daemon RSS under load (peak incl. start-up) |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &rates {
            md.push_str(&format!(
                "| {} | {}: {:.0} / {:.0} | {} | {} | {} | {:.1} → {:.1} | {:.2} | {:.0} ({:.1} × {:.0}) | {:.0} / {:.0} / {:.0} | {:.1} MB ({:.1} MB) |\n",
                r.label,
                r.rate,
                r.achieved_rate_base,
                r.achieved_rate_inst,
                r.requests_inst,
                r.delivery.spans,
                r.requests_inst as i64 - r.delivery.spans as i64,
                r.server_cpu_us_per_req_base,
                r.server_cpu_us_per_req_inst,
                r.daemon_cpu_us_per_req,
                r.bpf_ns_per_req,
                r.bpf_runs_per_req,
                r.bpf_ns_per_run,
                r.bpf_server_ns_per_req,
                r.bpf_generator_ns_per_req,
                r.bpf_background_ns_per_req,
                r.daemon_rss_kb as f64 / 1024.0,
                r.daemon_peak_rss_kb as f64 / 1024.0,
            ));
        }
        md.push_str(&format!(
            "\nPer request: per request completed ({ROUNDS} rounds of {}s, counterbalanced, medians). BPF: the daemon's own programs; the load generator's share is its operations (counted) × their measured cost for an unselected process ({:.0} ns per request and response, {:.0} ns per pause, {:.0} ns per connection), the rest of the machine's the programs' time per second without load (measured before each round) × the round's length; medians of each share.\n",
            dur.as_secs(),
            generator.exchange_ns,
            generator.sleep_ns,
            generator.connection_ns
        ));
        for r in &rates {
            if r.delivery.spans_dropped > 0 || r.delivery.events_lost > 0 {
                md.push_str(&format!(
                    "{} {} req/s: {} spans dropped by the export queue, {} kernel records lost.\n",
                    r.label, r.rate, r.delivery.spans_dropped, r.delivery.events_lost
                ));
            }
        }
        md.push('\n');
    }
    if let Some(tls) = &tls {
        md.push_str(&https::markdown(tls, dur));
        md.push('\n');
    }
    if !dbs.is_empty() {
        md.push_str(&db::markdown(&dbs, dur));
        md.push('\n');
    }
    if !uns.is_empty() {
        md.push_str("| unselected busy process (dd /dev/zero → /dev/null) | syscalls | without (s) | with (s) | slowdown |\n|---|---|---|---|---|\n");
        for u in &uns {
            md.push_str(&format!(
                "| {}-byte blocks | {} | {:.3} | {:.3} | {:+.1} % |\n",
                u.block_bytes,
                u.syscalls,
                u.seconds_base,
                u.seconds_inst,
                (u.seconds_inst / u.seconds_base - 1.0) * 100.0
            ));
        }
    }
    let elapsed = started.elapsed().as_secs();
    let machine = machine_info();
    println!(
        "\n## beyla-rs benchmark ({} cores, {}, kernel {}, {elapsed} s)\n\n{md}",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["kernel"].as_str().unwrap_or("")
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let out_dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("bench-{now}.json"));
    let json = serde_json::json!({
        "unix_time": now,
        "machine": machine,
        "rounds": ROUNDS,
        "round_seconds": dur.as_secs(),
        "workloads": only,
        "saturation": sat,
        "bpf_ns_of_generator_operations": generator,
        "rates": rates,
        "https": tls,
        "databases": dbs,
        "unselected": uns,
        "markdown": md,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("written: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_counterbalanced() {
        assert!(ROUNDS.is_multiple_of(2));
        let first_without = (0..ROUNDS)
            .filter(|&r| order(r)[0] == Side::Without)
            .count();
        assert_eq!(first_without, ROUNDS / 2);
        for r in 0..ROUNDS {
            assert!(order(r).contains(&Side::With) && order(r).contains(&Side::Without));
        }
    }

    #[test]
    fn workload_selection() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            selected_workloads(&args(&["xtask", "bench", "--quick"])).unwrap(),
            WORKLOADS
        );
        assert_eq!(
            selected_workloads(&args(&["xtask", "bench", "--only", "https,rates,https"])).unwrap(),
            ["https", "rates"]
        );
        assert!(selected_workloads(&args(&["xtask", "bench", "--only", "tls"])).is_err());
        assert!(selected_workloads(&args(&["xtask", "bench", "--only"])).is_err());
    }

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 5s test @ http://127.0.0.1:8080/\n  1 threads and 32 connections\n  \
                    Latency Distribution\n     50%  382.00us\n     75%  500.00us\n     90%  \
                    600.00us\n     99%    4.51ms\n  326325 requests in 5.00s, 51.35MB read\n\
                    Requests/sec:  65265.00\nTransfer/sec:     10.27MB\n";
        let (rps, p50, p99, n) = parse_wrk(text).unwrap();
        assert_eq!((rps, n), (65265.0, 326325));
        assert!((p50 - 0.382).abs() < 1e-9 && (p99 - 4.51).abs() < 1e-9);
        assert!(parse_wrk("Requests/sec: 1\n").is_err(), "no request count");
    }

    #[test]
    fn exit_summary_counters() {
        let log = vec![
            "2026-12-03T10:58:10.596Z INFO  beyla-rs: SIGTERM: shutting down".to_owned(),
            "2026-12-03T10:58:10.601Z WARN  beyla-rs: stopped: events_read=12 spans_exported=5 \
             spans_dropped=2"
                .to_owned(),
        ];
        let c = ExitCounters::parse(&log).unwrap();
        assert_eq!(
            (
                c.get("events_read"),
                c.get("spans_exported"),
                c.get("spans_dropped")
            ),
            (12, 5, 2)
        );
        assert_eq!(
            c.get("events_lost_kernel"),
            0,
            "only nonzero counters are logged"
        );
        assert!(ExitCounters::parse(&log[..1]).is_none());
    }

    fn post(port: u16, path: &str, extra: &str, body: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn receiver_counts_decoded_spans_and_fails_on_anything_else() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let recv = Receiver::start().unwrap();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(), Span::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let ok = post(recv.port, "/v1/traces", "", &req.encode_to_vec());
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        recv.drained().unwrap();
        assert_eq!(recv.spans(), 2);
        recv.check().unwrap();
        // Undecodable, compressed, or to an unknown path: answered 400, and the run fails.
        for (path, extra, body) in [
            ("/v1/traces", "", &b"\xff\xff\xff"[..]),
            (
                "/v1/traces",
                "Content-Encoding: gzip\r\n",
                &req.encode_to_vec()[..],
            ),
            ("/v1/logs", "", &req.encode_to_vec()[..]),
        ] {
            let r = post(recv.port, path, extra, body);
            assert!(r.starts_with("HTTP/1.1 400 "), "{path} {extra}: {r}");
        }
        recv.drained().unwrap();
        assert_eq!(recv.spans(), 2);
        let e = recv.check().unwrap_err().to_string();
        assert!(e.contains("could not decode 3 requests"), "{e}");
    }
}
