//! `cargo xtask bench`: what beyla-rs costs, as ratios against the same workload without it,
//! measured in the same run, A/B alternating, several rounds, medians.
//!
//! Workloads (all on loopback):
//! 1. nginx `return 200` at saturation with `wrk` (keep-alive): throughput and latency ratios.
//! 2. the same at fixed rates (5k and 20k req/s, our own paced generator): daemon CPU per
//!    request, nginx CPU per request with and without, daemon peak RSS, spans received vs
//!    requests sent, BPF time per request (`kernel.bpf_stats_enabled`).
//! 3. a new connection per request at a fixed rate: the accept/close path.
//! 4. a busy process that is *not* selected (`dd` doing small reads and writes): the cost we
//!    impose on everything else.
//!
//! Output: a Markdown table on stdout and `target/bench/bench-<unix time>.json`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use prost::Message;

const ROUNDS: usize = 3;

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
    _dir: PathBuf,
}

impl Nginx {
    fn start() -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("beyla-bench-nginx-{port}"));
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
               server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
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
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
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

/// Counts spans that arrive over OTLP/HTTP (protobuf).
struct Receiver {
    port: u16,
    spans: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let spans = Arc::new(AtomicU64::new(0));
        let counter = spans.clone();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let counter = counter.clone();
                thread::spawn(move || serve_otlp(s, &counter));
            }
        });
        Ok(Self { port, spans })
    }
}

fn serve_otlp(mut s: TcpStream, counter: &AtomicU64) {
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
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = &buf[head_end..head_end + len];
        if let Ok(req) =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body,
            )
        {
            let n: usize = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        buf.drain(..head_end + len);
        let resp =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if s.write_all(resp).is_err() {
            return;
        }
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(bin: &PathBuf, ports: &str, receiver: u16) -> Result<Self> {
        let mut child = Command::new(bin)
            .env("BEYLA_OPEN_PORT", ports)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{receiver}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("BEYLA_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting beyla-rs")?;
        // Ready when it has attached: wait for its log line (info is off), so poll for the
        // attached programs instead: bpftool lists them.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("beyla-rs exited early ({st}): {err}");
            }
            if programs_loaded() {
                break;
            }
            if Instant::now() > deadline {
                bail!("beyla-rs did not attach within 30 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
        // Give the start-up scan a moment to register the running server.
        thread::sleep(Duration::from_millis(700));
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { kill(self.child.id() as i32, 15) };
        let st = self.child.wait()?;
        // Its warnings (ring buffer overflow, export failures, losses at exit) explain a
        // "lost" column that is not zero.
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        for line in err.lines().filter(|l| !l.trim().is_empty()).take(10) {
            eprintln!("    beyla-rs: {line}");
        }
        if !st.success() {
            bail!("beyla-rs exited with {st}");
        }
        Ok(())
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[derive(serde::Deserialize)]
struct BpfProg {
    name: Option<String>,
    run_time_ns: Option<u64>,
    run_cnt: Option<u64>,
}

fn bpf_progs() -> Vec<BpfProg> {
    Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

fn programs_loaded() -> bool {
    bpf_progs()
        .iter()
        .any(|p| p.name.as_deref() == Some("beyla_sys_exit"))
}

/// (run_time_ns, run_cnt) summed over our programs.
fn bpf_time() -> (u64, u64) {
    bpf_progs()
        .iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| n.starts_with("beyla_")))
        .fold((0, 0), |(t, c), p| {
            (t + p.run_time_ns.unwrap_or(0), c + p.run_cnt.unwrap_or(0))
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

/// Paced load: `rate` requests per second for `dur`, over `conns` connections (keep-alive) or
/// a new connection per request. Returns the number of completed requests.
fn paced_load(port: u16, rate: u64, dur: Duration, conns: usize, keepalive: bool) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let per_conn_interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let done = done.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let req: &[u8] = if keepalive {
                    b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
                } else {
                    b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                };
                // Stagger the connections across one interval.
                let mut next = start + per_conn_interval.mul_f64(i as f64 / conns as f64);
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        thread::sleep(next - now);
                    }
                    next += per_conn_interval;
                    if conn.is_none() {
                        conn = TcpStream::connect(("127.0.0.1", port)).ok();
                        buf.clear();
                        if let Some(c) = &conn {
                            let _ = c.set_nodelay(true);
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let ok = c.write_all(req).is_ok() && read_response(c, &mut buf).is_ok();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    if !ok || !keepalive {
                        conn = None;
                    }
                }
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed)
}

#[derive(Default, Clone, serde::Serialize)]
struct RateResult {
    label: String,
    rate: u64,
    requests_base: u64,
    requests_inst: u64,
    spans: u64,
    server_cpu_us_per_req_base: f64,
    server_cpu_us_per_req_inst: f64,
    daemon_cpu_us_per_req: f64,
    bpf_ns_per_req: f64,
    bpf_ns_per_run: f64,
    bpf_runs_per_req: f64,
    /// Peak RSS over the daemon's life: includes start-up, where parsing the kernel's BTF
    /// peaks.
    daemon_peak_rss_kb: u64,
    /// RSS at the end of the loaded period (largest over the rounds): the steady-state size.
    daemon_rss_kb: u64,
}

/// Fixed-rate A/B rounds against nginx.
fn rate_workload(
    bin: &PathBuf,
    label: &str,
    rate: u64,
    dur: Duration,
    conns: usize,
    keepalive: bool,
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
    for round in 0..ROUNDS {
        eprintln!("  {label}: round {}/{ROUNDS}", round + 1);
        // A: without instrumentation.
        let c0 = nginx.cpu();
        let n = paced_load(nginx.port, rate, dur, conns, keepalive);
        sb.push((nginx.cpu() - c0) * 1e6 / n.max(1) as f64);
        r.requests_base += n;
        // B: with instrumentation.
        let spans0 = recv.spans.load(Ordering::Relaxed);
        let d = Daemon::start(bin, &nginx.port.to_string(), recv.port)?;
        let (t0, k0) = bpf_time();
        let dc0 = cpu_seconds(d.pid());
        let c0 = nginx.cpu();
        let n = paced_load(nginx.port, rate, dur, conns, keepalive);
        let server = nginx.cpu() - c0;
        let daemon = cpu_seconds(d.pid()) - dc0;
        r.daemon_rss_kb = r.daemon_rss_kb.max(status_kb(d.pid(), "VmRSS:"));
        let (t1, k1) = bpf_time();
        r.daemon_peak_rss_kb = r.daemon_peak_rss_kb.max(status_kb(d.pid(), "VmHWM:"));
        d.stop()?;
        thread::sleep(Duration::from_millis(300));
        let spans = recv.spans.load(Ordering::Relaxed) - spans0;
        si.push(server * 1e6 / n.max(1) as f64);
        dc.push(daemon * 1e6 / n.max(1) as f64);
        bpf_req.push((t1 - t0) as f64 / n.max(1) as f64);
        bpf_run.push((t1 - t0) as f64 / (k1 - k0).max(1) as f64);
        runs_req.push((k1 - k0) as f64 / n.max(1) as f64);
        r.requests_inst += n;
        r.spans += spans;
    }
    r.server_cpu_us_per_req_base = median(&mut sb);
    r.server_cpu_us_per_req_inst = median(&mut si);
    r.daemon_cpu_us_per_req = median(&mut dc);
    r.bpf_ns_per_req = median(&mut bpf_req);
    r.bpf_ns_per_run = median(&mut bpf_run);
    r.bpf_runs_per_req = median(&mut runs_req);
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
}

fn wrk(port: u16, dur: Duration) -> Result<(f64, f64, f64)> {
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
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk output")?;
    let pct = |p: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix(p).map(|v| v.trim().to_owned())
            })
            .map(|v| parse_wrk_time(&v))
            .unwrap_or(f64::NAN)
    };
    Ok((rps, pct("50%"), pct("99%")))
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
    let (mut rb, mut ri, mut p50b, mut p50i, mut p99b, mut p99i) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        eprintln!("  saturation: round {}/{ROUNDS}", round + 1);
        let (r, p50, p99) = wrk(nginx.port, dur)?;
        rb.push(r);
        p50b.push(p50);
        p99b.push(p99);
        let d = Daemon::start(bin, &nginx.port.to_string(), recv.port)?;
        let (r, p50, p99) = wrk(nginx.port, dur)?;
        d.stop()?;
        ri.push(r);
        p50i.push(p50);
        p99i.push(p99);
    }
    Ok(WrkResult {
        rps_base: median(&mut rb),
        rps_inst: median(&mut ri),
        p50_ms_base: median(&mut p50b),
        p50_ms_inst: median(&mut p50i),
        p99_ms_base: median(&mut p99b),
        p99_ms_inst: median(&mut p99i),
    })
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
    for round in 0..5 {
        eprintln!("  unselected dd bs={bs}: round {}/5", round + 1);
        b.push(run_dd()?);
        let d = Daemon::start(bin, &unused.to_string(), recv.port)?;
        i.push(run_dd()?);
        d.stop()?;
    }
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
    let missing: Vec<&str> = [("nginx", "nginx"), ("wrk", "wrk"), ("bpftool", "bpftool")]
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

pub fn run(quick: bool) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs and needs root");
    }
    ensure_tools()?;
    let bin = crate::build(true)?;
    // BPF run-time statistics give the in-kernel cost, but cost something themselves (two
    // clock reads per program run; in a KVM guest the clock is paravirtual): they are on only
    // for the fixed-rate workloads that report BPF time, off for the throughput and
    // unselected-process ratios. Restored afterwards.
    let stats_before =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
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
    eprintln!("bench: nginx at saturation (wrk -t1 -c32)");
    let sat = saturation(&bin, dur)?;
    eprintln!("bench: fixed rates");
    bpf_stats(true)?;
    let r5k = rate_workload(&bin, "keep-alive 5k req/s", 5_000, dur, 16, true)?;
    let r20k = rate_workload(&bin, "keep-alive 20k req/s", 20_000, dur, 32, true)?;
    let rconn = rate_workload(
        &bin,
        "new connection per request 2k req/s",
        2_000,
        dur,
        8,
        false,
    )?;
    bpf_stats(false)?;
    eprintln!("bench: unselected busy process");
    let uns = [
        unselected(&bin, 64, 1_000_000)?,
        unselected(&bin, 65536, 50_000)?,
    ];
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());

    let mut md = String::new();
    md.push_str(&format!(
        "| nginx `return 200`, saturation (wrk -t1 -c32, {}s × {ROUNDS} rounds) | without | with | ratio |\n|---|---|---|---|\n",
        dur.as_secs()
    ));
    md.push_str(&format!(
        "| throughput (req/s) | {:.0} | {:.0} | {:.3} |\n| p50 latency (ms) | {:.3} | {:.3} | {:.2} |\n| p99 latency (ms) | {:.3} | {:.3} | {:.2} |\n\n",
        sat.rps_base, sat.rps_inst, sat.rps_inst / sat.rps_base,
        sat.p50_ms_base, sat.p50_ms_inst, sat.p50_ms_inst / sat.p50_ms_base,
        sat.p99_ms_base, sat.p99_ms_inst, sat.p99_ms_inst / sat.p99_ms_base,
    ));
    md.push_str("| fixed rate | requests (with) | spans received | lost | nginx CPU µs/req without → with | daemon CPU µs/req | BPF ns/req (runs/req × ns/run) | daemon RSS under load (peak incl. start-up) |\n|---|---|---|---|---|---|---|---|\n");
    for r in [&r5k, &r20k, &rconn] {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} → {:.1} | {:.2} | {:.0} ({:.1} × {:.0}) | {:.1} MB ({:.1} MB) |\n",
            r.label,
            r.requests_inst,
            r.spans,
            r.requests_inst as i64 - r.spans as i64,
            r.server_cpu_us_per_req_base,
            r.server_cpu_us_per_req_inst,
            r.daemon_cpu_us_per_req,
            r.bpf_ns_per_req,
            r.bpf_runs_per_req,
            r.bpf_ns_per_run,
            r.daemon_rss_kb as f64 / 1024.0,
            r.daemon_peak_rss_kb as f64 / 1024.0,
        ));
    }
    md.push_str("\n| unselected busy process (dd /dev/zero → /dev/null) | syscalls | without (s) | with (s) | slowdown |\n|---|---|---|---|---|\n");
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
        "saturation": sat,
        "rates": [r5k, r20k, rconn],
        "unselected": uns,
        "markdown": md,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("written: {}", path.display());
    Ok(())
}
