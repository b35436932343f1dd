//! The HTTPS row of `cargo xtask bench`: nginx `listen … ssl` (a self-signed certificate made
//! with `openssl req`) at a fixed rate with keep-alive, `wrk` as the client, without and with
//! the daemon in counterbalanced rounds like the other rows, medians.
//!
//! - The daemon sees HTTPS through uprobes on OpenSSL's `SSL_read`/`SSL_write` (their `_ex`
//!   forms, `SSL_do_handshake`, `SSL_free`, and a return probe) in `libssl.so.3`. A uprobe
//!   belongs to the file: every process that maps it traps into the programs, which leave at
//!   the tracked-process test for one that is not selected. wrk links the same
//!   `libssl.so.3` and is not selected (only nginx's port is), so it pays the trap on each of
//!   its own TLS calls: its CPU per request without and with the daemon is the cost to an
//!   untracked process using the same libssl.
//! - wrk has no fixed-rate mode; a Lua script paces it. `delay()`, which wrk calls after each
//!   response before the connection's next request, hands out the slots of one schedule at
//!   the target rate, read from the monotonic clock through LuaJIT's FFI. wrk's timers have
//!   millisecond resolution, so a request may leave up to 1 ms before its slot; the schedule,
//!   not the timers, sets the long-run rate. Closed-loop like the plaintext generator: a
//!   slow server gets fewer requests (a late connection sends at once until it is back on
//!   schedule), the achieved rate is reported next to the target and every figure is per
//!   request completed.
//! - CPU: nginx's and the daemon's from their threads' scheduler runtime, as in the other
//!   rows; wrk's from its rusage when reaped (`wait4`: user + system, which the kernel scales
//!   to the scheduler runtime of all its threads).
//! - BPF time: the daemon's programs by the ids it holds, the uprobe programs (`beyla_ssl_*`)
//!   among them and also reported apart; the rest of the machine's share from the programs'
//!   time per second without load, measured before each round. wrk's own runs (its SSL
//!   calls, and its syscalls under the syscall backend) are in the total, not separated.
//! - A working capture: in each instrumented round the spans received must be at least the
//!   requests wrk completed and at most that plus its connections (a request in flight when
//!   wrk stops is answered and traced, not counted by wrk), and the TLS programs must have
//!   run; otherwise the run fails.
//! - Alone: another `beyla-rs` (a test suite's, say) puts its own probes on the same libssl,
//!   which then trap nginx and wrk whichever side is measured. Each side waits until no other
//!   one runs, watches for one while it runs (every 100 ms), and is run again (up to
//!   [`ATTEMPTS`] times) when one appeared; the output says how many sides were re-run.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Daemon, Delivery, Nginx, ROUNDS, Receiver, Side, bpf_background, bpf_time_split, cpu_seconds,
    finish_round, median, order, parse_wrk, status_kb,
};

/// Target rate and connections: the plaintext keep-alive 5k row's.
pub(super) const RATE: u64 = 5_000;
pub(super) const CONNS: usize = 16;

/// The daemon's OpenSSL uprobe programs.
const TLS_PROGRAMS: &str = "beyla_ssl";

/// Paces wrk at `BEYLA_BENCH_RATE` requests per second over all its connections (one thread).
const PACE_LUA: &str = r#"-- beyla-rs bench: fixed request rate for wrk (one thread).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } beyla_bench_timespec;
int clock_gettime(int clock, beyla_bench_timespec *ts);
]]
local ts = ffi.new("beyla_bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval_ms = 1000 / tonumber(os.getenv("BEYLA_BENCH_RATE"))
local next_ms = nil
-- Called after each response, before the connection's next request: the next slot.
function delay()
  local now = now_ms()
  if next_ms == nil then next_ms = now end
  next_ms = next_ms + interval_ms
  local d = next_ms - now
  if d <= 0 then return 0 end
  return math.floor(d)
end
"#;

#[derive(Default, Clone, serde::Serialize)]
pub(super) struct HttpsResult {
    pub label: String,
    pub rate: u64,
    pub connections: usize,
    /// Achieved request rates (wrk's requests/s, medians over the rounds).
    pub achieved_rate_base: f64,
    pub achieved_rate_inst: f64,
    /// Requests wrk completed.
    pub requests_base: u64,
    pub requests_inst: u64,
    pub delivery: Delivery,
    /// Per request completed, medians: nginx (all its processes), wrk (the untracked client
    /// on the same libssl), the daemon.
    pub server_cpu_us_per_req_base: f64,
    pub server_cpu_us_per_req_inst: f64,
    pub client_cpu_us_per_req_base: f64,
    pub client_cpu_us_per_req_inst: f64,
    pub daemon_cpu_us_per_req: f64,
    /// The daemon's programs, everything they ran for.
    pub bpf_ns_per_req: f64,
    pub bpf_ns_per_run: f64,
    pub bpf_runs_per_req: f64,
    /// Of which the OpenSSL uprobe programs (`beyla_ssl_*`), for nginx and wrk alike.
    pub bpf_tls_ns_per_req: f64,
    pub bpf_tls_runs_per_req: f64,
    /// Of which the rest of the machine (background rate × the round's length).
    pub bpf_background_ns_per_req: f64,
    /// wrk's latency percentiles (ms), medians.
    pub p50_ms_base: f64,
    pub p50_ms_inst: f64,
    pub p99_ms_base: f64,
    pub p99_ms_inst: f64,
    pub daemon_rss_kb: u64,
    pub daemon_peak_rss_kb: u64,
    /// Most `beyla-rs` processes other than the one under test seen during a kept side (0
    /// unless one stayed through every attempt): their probes on the same libssl trap nginx
    /// and wrk too.
    pub other_daemons: usize,
    /// Sides run again because another `beyla-rs` ran during them.
    pub retries: usize,
    /// Every side of every round, in the order run (the medians' inputs).
    pub rounds: Vec<HttpsRound>,
}

/// One side of one round.
#[derive(Default, Clone, serde::Serialize)]
pub(super) struct HttpsRound {
    pub round: usize,
    pub with_daemon: bool,
    pub requests: u64,
    pub rate: f64,
    pub server_cpu_us_per_req: f64,
    pub client_cpu_us_per_req: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub other_daemons: usize,
    /// Sides run again because another `beyla-rs` ran during an earlier attempt.
    pub retries: usize,
    /// With the daemon only.
    pub spans: u64,
    pub daemon_cpu_us_per_req: f64,
    pub bpf_ns_per_req: f64,
    pub bpf_ns_per_run: f64,
    pub bpf_runs_per_req: f64,
    pub bpf_tls_ns_per_req: f64,
    pub bpf_tls_runs_per_req: f64,
    pub bpf_background_ns_per_req: f64,
}

/// One paced wrk run.
struct WrkRun {
    /// Requests completed.
    done: u64,
    /// wrk's requests per second.
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// wrk's CPU (user + system), seconds.
    cpu: f64,
    /// Wall time of the run (start-up included).
    elapsed: Duration,
}

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` (x86_64 and aarch64 Linux: two timevals, then 14 longs).
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    _rest: [i64; 14],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

/// Reaps child `pid`: (exit code, or `None` when killed by a signal; its CPU seconds).
fn reap(pid: u32) -> Result<(Option<i32>, f64)> {
    let mut status = 0i32;
    let mut ru = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        _rest: [0; 14],
    };
    loop {
        // SAFETY: our own child; `status` and `ru` are valid for writes.
        let r = unsafe { wait4(pid as i32, &mut status, 0, &mut ru) };
        if r == pid as i32 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    let tv = |t: &Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    let code = (status & 0x7f == 0).then_some((status >> 8) & 0xff);
    Ok((code, tv(&ru.utime) + tv(&ru.stime)))
}

/// wrk -t1 against `https://127.0.0.1:port/` at `rate` for `dur`, paced by `script`.
fn paced_wrk(port: u16, rate: u64, dur: Duration, conns: usize, script: &Path) -> Result<WrkRun> {
    let t = Instant::now();
    let mut child = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{}s", dur.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("https://127.0.0.1:{port}/"))
        .env("BEYLA_BENCH_RATE", rate.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running wrk (apt-get install wrk)")?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("wrk stdout")?
        .read_to_string(&mut out)?;
    let (code, cpu) = reap(child.id())?;
    let elapsed = t.elapsed();
    if code != Some(0) {
        bail!("wrk failed ({code:?}):\n{out}");
    }
    // A client that errs or gets errors measures something else.
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        bail!("wrk: {}:\n{out}", l.trim());
    }
    let (rps, p50_ms, p99_ms, done) = parse_wrk(&out)?;
    Ok(WrkRun {
        done,
        rps,
        p50_ms,
        p99_ms,
        cpu,
        elapsed,
    })
}

/// Processes named `beyla-rs` other than `ours`.
pub(super) fn other_daemons(ours: Option<u32>) -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| Some(pid) != ours)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beyla-rs")
        })
        .count()
}

/// Waits (up to 5 minutes) until no other `beyla-rs` runs: another daemon's probes on the same
/// libssl trap nginx and wrk too, whichever side is measured.
pub(super) fn wait_alone(ours: Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut said = false;
    while other_daemons(ours) > 0 && Instant::now() < deadline {
        if !said {
            eprintln!("    another beyla-rs is running: waiting for it to stop");
            said = true;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Samples [`other_daemons`] every 100 ms until [`Watch::finish`], which returns the most seen.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<usize>,
}

impl Watch {
    pub(super) fn start(ours: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut most = 0;
            while !s.load(Ordering::Relaxed) {
                most = most.max(other_daemons(ours));
                thread::sleep(Duration::from_millis(100));
            }
            most
        });
        Self { stop, handle }
    }

    pub(super) fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// Attempts per side: a side during which another `beyla-rs` ran is run again.
pub(super) const ATTEMPTS: usize = 3;

/// One side without the daemon.
fn side_without(nginx: &Nginx, script: &Path, dur: Duration) -> Result<HttpsRound> {
    wait_alone(None);
    let watch = Watch::start(None);
    let c0 = nginx.cpu();
    let w = paced_wrk(nginx.port, RATE, dur, CONNS, script);
    let server = nginx.cpu() - c0;
    let others = watch.finish();
    let w = w?;
    let n = w.done.max(1) as f64;
    Ok(HttpsRound {
        with_daemon: false,
        requests: w.done,
        rate: w.rps,
        server_cpu_us_per_req: server * 1e6 / n,
        client_cpu_us_per_req: w.cpu * 1e6 / n,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        other_daemons: others,
        ..Default::default()
    })
}

/// One side with the daemon; its spans and losses go to `delivery`. Fails when the capture
/// did not work (see the module's documentation).
fn side_with(
    bin: &PathBuf,
    nginx: &Nginx,
    recv: &Receiver,
    script: &Path,
    dur: Duration,
    delivery: &mut Delivery,
    rss: &mut (u64, u64),
) -> Result<HttpsRound> {
    let spans0 = recv.spans();
    let d = Daemon::start(bin, &nginx.port.to_string(), recv.port)?;
    wait_alone(Some(d.pid()));
    let background = bpf_background(&d, Duration::from_secs(1))?;
    let watch = Watch::start(Some(d.pid()));
    let ((t0, k0), (tt0, tk0)) = bpf_time_split(&d.prog_ids, TLS_PROGRAMS)?;
    let dc0 = cpu_seconds(d.pid());
    let c0 = nginx.cpu();
    let w = paced_wrk(nginx.port, RATE, dur, CONNS, script);
    let server = nginx.cpu() - c0;
    let daemon = cpu_seconds(d.pid()) - dc0;
    let others = watch.finish();
    let w = w?;
    rss.0 = rss.0.max(status_kb(d.pid(), "VmRSS:"));
    let ((t1, k1), (tt1, tk1)) = bpf_time_split(&d.prog_ids, TLS_PROGRAMS)?;
    rss.1 = rss.1.max(status_kb(d.pid(), "VmHWM:"));
    let mut got = Delivery::default();
    finish_round(d, recv, spans0, &mut got)?;
    if tk1 == tk0 {
        bail!(
            "HTTPS: the daemon's TLS programs ({TLS_PROGRAMS}*) never ran: its uprobes are not \
             on nginx's libssl"
        );
    }
    if got.spans < w.done || got.spans > w.done + CONNS as u64 {
        bail!(
            "HTTPS: {} spans for {done} requests completed by wrk (expected {done} to {done} + \
             {CONNS} in flight at its stop; {} spans dropped, {} kernel records lost): the \
             capture is not working",
            got.spans,
            got.spans_dropped,
            got.events_lost,
            done = w.done,
        );
    }
    delivery.spans += got.spans;
    delivery.spans_dropped += got.spans_dropped;
    delivery.events_lost += got.events_lost;
    let n = w.done.max(1) as f64;
    Ok(HttpsRound {
        with_daemon: true,
        requests: w.done,
        rate: w.rps,
        server_cpu_us_per_req: server * 1e6 / n,
        client_cpu_us_per_req: w.cpu * 1e6 / n,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        other_daemons: others,
        spans: got.spans,
        daemon_cpu_us_per_req: daemon * 1e6 / n,
        bpf_ns_per_req: (t1 - t0) as f64 / n,
        bpf_ns_per_run: (t1 - t0) as f64 / (k1 - k0).max(1) as f64,
        bpf_runs_per_req: (k1 - k0) as f64 / n,
        bpf_tls_ns_per_req: (tt1 - tt0) as f64 / n,
        bpf_tls_runs_per_req: (tk1 - tk0) as f64 / n,
        bpf_background_ns_per_req: background * w.elapsed.as_secs_f64() / n,
        ..Default::default()
    })
}

/// The HTTPS fixed-rate A/B rounds (see the module's documentation).
pub(super) fn workload(bin: &PathBuf, dur: Duration) -> Result<HttpsResult> {
    let nginx = Nginx::start_with(true)?;
    let script = nginx.dir.join("pace.lua");
    std::fs::write(&script, PACE_LUA)?;
    let recv = Receiver::start()?;
    let label = format!("keep-alive {}k req/s", RATE / 1000);
    let mut r = HttpsResult {
        label: label.clone(),
        rate: RATE,
        connections: CONNS,
        ..Default::default()
    };
    let mut rss = (0, 0);
    for round in 0..ROUNDS {
        eprintln!("  HTTPS {label}: round {}/{ROUNDS}", round + 1);
        for side in order(round) {
            for attempt in 0..ATTEMPTS {
                let mut s = match side {
                    Side::Without => side_without(&nginx, &script, dur)?,
                    Side::With => {
                        side_with(bin, &nginx, &recv, &script, dur, &mut r.delivery, &mut rss)?
                    }
                };
                if s.other_daemons > 0 && attempt + 1 < ATTEMPTS {
                    eprintln!(
                        "    another beyla-rs ran during this side: its probes trap nginx and \
                         wrk too; running it again"
                    );
                    r.retries += 1;
                    continue;
                }
                s.round = round + 1;
                s.retries = attempt;
                r.other_daemons = r.other_daemons.max(s.other_daemons);
                if s.with_daemon {
                    r.requests_inst += s.requests;
                } else {
                    r.requests_base += s.requests;
                }
                r.rounds.push(s);
                break;
            }
        }
    }
    recv.check()?;
    (r.daemon_rss_kb, r.daemon_peak_rss_kb) = rss;
    let m = |with: bool, f: fn(&HttpsRound) -> f64| {
        median(
            &mut r
                .rounds
                .iter()
                .filter(|s| s.with_daemon == with)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    r.achieved_rate_base = m(false, |s| s.rate);
    r.achieved_rate_inst = m(true, |s| s.rate);
    r.server_cpu_us_per_req_base = m(false, |s| s.server_cpu_us_per_req);
    r.server_cpu_us_per_req_inst = m(true, |s| s.server_cpu_us_per_req);
    r.client_cpu_us_per_req_base = m(false, |s| s.client_cpu_us_per_req);
    r.client_cpu_us_per_req_inst = m(true, |s| s.client_cpu_us_per_req);
    r.daemon_cpu_us_per_req = m(true, |s| s.daemon_cpu_us_per_req);
    r.bpf_ns_per_req = m(true, |s| s.bpf_ns_per_req);
    r.bpf_ns_per_run = m(true, |s| s.bpf_ns_per_run);
    r.bpf_runs_per_req = m(true, |s| s.bpf_runs_per_req);
    r.bpf_tls_ns_per_req = m(true, |s| s.bpf_tls_ns_per_req);
    r.bpf_tls_runs_per_req = m(true, |s| s.bpf_tls_runs_per_req);
    r.bpf_background_ns_per_req = m(true, |s| s.bpf_background_ns_per_req);
    r.p50_ms_base = m(false, |s| s.p50_ms);
    r.p50_ms_inst = m(true, |s| s.p50_ms);
    r.p99_ms_base = m(false, |s| s.p99_ms);
    r.p99_ms_inst = m(true, |s| s.p99_ms);
    Ok(r)
}

/// The row's Markdown: a table of its own (its load generator and columns differ from the
/// plaintext fixed-rate table's) and a note.
pub(super) fn markdown(r: &HttpsResult, dur: Duration) -> String {
    let mut md = format!(
        "| fixed rate, HTTPS (nginx `listen … ssl`, wrk -t1 -c{} paced, keep-alive) | req/s: target, achieved without / with | spans received / requests completed (with) | nginx CPU µs/req without → with (ratio) | daemon CPU µs/req | BPF ns/req (runs/req × ns/run) | of which: TLS uprobe programs (runs/req) / rest of the machine | untracked client on the same libssl (wrk) CPU µs/req without → with (ratio) | p99 latency ms without → with | daemon RSS under load (peak incl. start-up) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        r.connections
    );
    md.push_str(&format!(
        "| {} | {}: {:.0} / {:.0} | {} / {} | {:.1} → {:.1} ({:.2}×) | {:.2} | {:.0} ({:.1} × {:.0}) | {:.0} ({:.1}) / {:.0} | {:.1} → {:.1} ({:.2}×) | {:.2} → {:.2} | {:.1} MB ({:.1} MB) |\n",
        r.label,
        r.rate,
        r.achieved_rate_base,
        r.achieved_rate_inst,
        r.delivery.spans,
        r.requests_inst,
        r.server_cpu_us_per_req_base,
        r.server_cpu_us_per_req_inst,
        r.server_cpu_us_per_req_inst / r.server_cpu_us_per_req_base,
        r.daemon_cpu_us_per_req,
        r.bpf_ns_per_req,
        r.bpf_runs_per_req,
        r.bpf_ns_per_run,
        r.bpf_tls_ns_per_req,
        r.bpf_tls_runs_per_req,
        r.bpf_background_ns_per_req,
        r.client_cpu_us_per_req_base,
        r.client_cpu_us_per_req_inst,
        r.client_cpu_us_per_req_inst / r.client_cpu_us_per_req_base,
        r.p99_ms_base,
        r.p99_ms_inst,
        r.daemon_rss_kb as f64 / 1024.0,
        r.daemon_peak_rss_kb as f64 / 1024.0,
    ));
    md.push_str(&format!(
        "\nHTTPS: per request completed ({ROUNDS} rounds of {}s, counterbalanced, medians). Only nginx's port is selected; wrk maps the same libssl.so.3, so its SSL_read/SSL_write calls trap into the daemon's uprobes too (a uprobe is on the file, for every process mapping it) and leave at the tracked-process test: its CPU per request is the cost to an untracked process using that libssl. The BPF total includes wrk's runs. Spans received were checked per round to lie between wrk's completed requests and that plus its {} connections (requests in flight at its stop).\n",
        dur.as_secs(),
        r.connections,
    ));
    if r.delivery.spans_dropped > 0 || r.delivery.events_lost > 0 {
        md.push_str(&format!(
            "HTTPS {}: {} spans dropped by the export queue, {} kernel records lost.\n",
            r.label, r.delivery.spans_dropped, r.delivery.events_lost
        ));
    }
    if r.retries > 0 {
        md.push_str(&format!(
            "HTTPS: {} side(s) were run again because another beyla-rs ran during them.\n",
            r.retries
        ));
    }
    if r.other_daemons > 0 {
        md.push_str(&format!(
            "HTTPS: **{} other beyla-rs process(es) ran during a side even after {ATTEMPTS} attempts**: their probes on the same libssl trap nginx and wrk too; the figures are not clean.\n",
            r.other_daemons
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    // The children are reaped by `reap` (wait4), which clippy does not know of.
    #[allow(clippy::zombie_processes)]
    #[test]
    fn reaped_child_exit_code_and_cpu() {
        let c = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
            ])
            .spawn()
            .unwrap();
        let (code, cpu) = reap(c.id()).unwrap();
        assert_eq!(code, Some(3));
        assert!(cpu > 0.0 && cpu < 60.0, "{cpu}");
        let c = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(reap(c.id()).unwrap().0, None, "killed by a signal");
    }
}
