//! `cargo xtask bench --vm 6.1|6.12`: the capture backends compared inside a Debian kernel
//! that has all three (fentry, kprobes, raw tracepoints), booted in QEMU like the kernel
//! matrix. Emulation (TCG) makes absolute times meaningless; what one guest run measures for
//! every side under the same emulation is comparable, so everything is a ratio or a count:
//!
//! - an unselected busy process (`dd bs=64`, two syscalls per block): its time with each
//!   backend running over its time with none;
//! - nginx `return 200` at saturation (wrk): throughput with each backend over none, and the
//!   spans received per request;
//! - nginx at a fixed rate with BPF statistics on: the daemon's program runs and BPF
//!   nanoseconds per request (its own programs, by id; both include the runs the load
//!   generator's own socket calls or syscalls cause, which leave at the first test).
//!
//! Rounds rotate the order of the sides (a Latin square: each side runs in each position
//! once per four rounds), medians over the rounds.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Daemon, Nginx, Receiver, bpf_time, finish_round, median, paced_load, wrk};

/// The sides: no daemon, then each backend forced.
const SIDES: &[&str] = &["none", "syscall", "kprobe", "fentry"];
const ROUNDS: usize = 4;
/// dd blocks per run (two syscalls each).
const DD_BLOCKS: u64 = 200_000;
const WRK_SECONDS: u64 = 5;
/// Fixed rate for the BPF statistics: low enough that the emulated guest keeps up.
const RATE: u64 = 200;
const RATE_SECONDS: u64 = 5;

/// Side `i` of round `round`: the order rotates by one each round.
fn side(round: usize, i: usize) -> &'static str {
    SIDES[(i + round) % SIDES.len()]
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct SideResult {
    side: String,
    dd_seconds: f64,
    wrk_rps: f64,
    /// Saturation: spans received and requests wrk completed (daemon sides).
    spans: u64,
    requests: u64,
    /// Saturation: spans the daemon's export queue dropped, kernel records lost (ring full).
    #[serde(default)]
    spans_dropped: u64,
    #[serde(default)]
    events_lost: u64,
    /// Fixed rate: the daemon's program runs and BPF ns per request completed.
    runs_per_req: f64,
    bpf_ns_per_req: f64,
    achieved_rate: f64,
}

#[derive(Serialize, Deserialize)]
struct GuestResults {
    kernel: String,
    sides: Vec<SideResult>,
    seconds: f64,
}

/// Host side: boots the kernel and runs [`guest`] in it; prints the table.
pub fn run(label: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs and needs root");
    }
    super::ensure_tools()?;
    let daemon = crate::build(true)?;
    let bin = crate::workspace_root().join("target/vm/bin");
    let daemon = crate::vm::snapshot(&daemon, &bin)?;
    let me = crate::vm::snapshot(&std::env::current_exe()?, &bin)?;
    let out = crate::workspace_root().join(format!("target/vm/bench-{label}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let script = format!(
        "export PATH={}; {} bench-guest {} {}",
        crate::vm::guest_path()?,
        me.display(),
        out.display(),
        daemon.display()
    );
    let ok = crate::vm::boot_label(label, &out, &script)?;
    let results: GuestResults = std::fs::read(out.join("bench.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| {
            let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
            format!("the guest wrote no results (exit ok: {ok}); console:\n{console}")
        })?;
    let md = table(&results);
    println!(
        "\n## capture backends in a {label} guest (kernel {}, {:.0} s in the guest)\n\n{md}",
        results.kernel, results.seconds
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("bench-vm-{label}-{now}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({
            "unix_time": now,
            "kernel": results.kernel,
            "rounds": ROUNDS,
            "sides": results.sides,
            "markdown": md,
        }))?,
    )?;
    println!("written: {}", path.display());
    Ok(())
}

fn table(r: &GuestResults) -> String {
    let none = r
        .sides
        .iter()
        .find(|s| s.side == "none")
        .cloned()
        .unwrap_or_default();
    let syscall_ns = r
        .sides
        .iter()
        .find(|s| s.side == "syscall")
        .map_or(0.0, |s| s.bpf_ns_per_req);
    let mut md = String::from(
        "| backend | unselected `dd bs=64`: time / without | nginx saturation: throughput / without | spans received / requests (spans dropped, kernel records lost) | BPF program runs / request | BPF ns / request | BPF time / syscall backend's |\n|---|---|---|---|---|---|---|\n",
    );
    for s in r.sides.iter().filter(|s| s.side != "none") {
        md.push_str(&format!(
            "| {} | {:.3} | {:.3} | {} / {} ({}, {}) | {:.2} | {:.0} | {:.2} |\n",
            s.side,
            s.dd_seconds / none.dd_seconds,
            s.wrk_rps / none.wrk_rps,
            s.spans,
            s.requests,
            s.spans_dropped,
            s.events_lost,
            s.runs_per_req,
            s.bpf_ns_per_req,
            s.bpf_ns_per_req / syscall_ns,
        ));
    }
    md.push_str(&format!(
        "\nWithout the daemon: dd {:.2} s for {} syscalls, nginx {:.0} req/s (emulated). Fixed rate {RATE} req/s for {RATE_SECONDS} s (achieved: {}). {ROUNDS} rounds, the order of the sides rotated each round, medians.\n",
        none.dd_seconds,
        DD_BLOCKS * 2,
        none.wrk_rps,
        r.sides
            .iter()
            .filter(|s| s.side != "none")
            .map(|s| format!("{} {:.0}", s.side, s.achieved_rate))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    md
}

fn dd() -> Result<f64> {
    let t = Instant::now();
    let st = Command::new("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64",
            &format!("count={DD_BLOCKS}"),
        ])
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("dd failed");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Guest side: every workload, every side, [`ROUNDS`] rounds; results into `out/bench.json`.
pub fn guest(args: &[String]) -> Result<()> {
    let out = PathBuf::from(args.first().context("bench-guest OUT DAEMON")?);
    let daemon = PathBuf::from(args.get(1).context("bench-guest OUT DAEMON")?);
    let started = Instant::now();
    let stats = |on: bool| {
        std::fs::write(
            "/proc/sys/kernel/bpf_stats_enabled",
            if on { "1" } else { "0" },
        )
        .context("setting kernel.bpf_stats_enabled")
    };
    stats(false)?;
    let mut dd_s: Vec<Vec<f64>> = vec![Vec::new(); SIDES.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); SIDES.len()];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); SIDES.len()];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); SIDES.len()];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); SIDES.len()];
    let mut delivered = vec![(0u64, 0u64); SIDES.len()];
    let mut losses = vec![(0u64, 0u64); SIDES.len()];
    let recv = Receiver::start()?;
    let nginx = Nginx::start()?;
    let unused = super::free_port()?.to_string();
    let port = nginx.port.to_string();
    let start = |side: &str, ports: &str| -> Result<Option<Daemon>> {
        if side == "none" {
            return Ok(None);
        }
        Daemon::start_env(
            &daemon,
            ports,
            recv.port,
            &[("BEYLA_CAPTURE_BACKEND", side)],
        )
        .map(Some)
    };
    for round in 0..ROUNDS {
        for i in 0..SIDES.len() {
            let s = side(round, i);
            let k = SIDES.iter().position(|x| *x == s).expect("a side");
            eprintln!("round {}/{ROUNDS}: {s}", round + 1);
            // The unselected process.
            let d = start(s, &unused)?;
            dd_s[k].push(dd()?);
            if let Some(d) = d {
                d.stop()?;
            }
            // Saturation.
            let spans0 = recv.spans();
            let d = start(s, &port)?;
            let (r, _, _, n) = wrk(nginx.port, Duration::from_secs(WRK_SECONDS))?;
            rps[k].push(r);
            if let Some(d) = d {
                let mut acc = super::Delivery::default();
                finish_round(d, &recv, spans0, &mut acc)?;
                delivered[k].0 += acc.spans;
                delivered[k].1 += n;
                losses[k].0 += acc.spans_dropped;
                losses[k].1 += acc.events_lost;
            }
            // Fixed rate, BPF statistics on. The receiver's count before the daemon starts:
            // it exports while the load runs.
            let spans0 = recv.spans();
            if let Some(d) = start(s, &port)? {
                stats(true)?;
                let (t0, c0) = bpf_time(&d.prog_ids)?;
                let load = paced_load(nginx.port, RATE, Duration::from_secs(RATE_SECONDS), 4, true);
                let (t1, c1) = bpf_time(&d.prog_ids)?;
                stats(false)?;
                let mut acc = super::Delivery::default();
                finish_round(d, &recv, spans0, &mut acc)?;
                let n = load.done.max(1) as f64;
                runs[k].push((c1 - c0) as f64 / n);
                ns[k].push((t1 - t0) as f64 / n);
                rate[k].push(load.rate());
            }
        }
    }
    recv.check()?;
    let sides = SIDES
        .iter()
        .enumerate()
        .map(|(k, s)| SideResult {
            side: (*s).to_owned(),
            dd_seconds: median(&mut dd_s[k]),
            wrk_rps: median(&mut rps[k]),
            spans: delivered[k].0,
            requests: delivered[k].1,
            spans_dropped: losses[k].0,
            events_lost: losses[k].1,
            runs_per_req: if runs[k].is_empty() {
                0.0
            } else {
                median(&mut runs[k])
            },
            bpf_ns_per_req: if ns[k].is_empty() {
                0.0
            } else {
                median(&mut ns[k])
            },
            achieved_rate: if rate[k].is_empty() {
                0.0
            } else {
                median(&mut rate[k])
            },
        })
        .collect();
    let r = GuestResults {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_owned(),
        sides,
        seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("bench.json"), serde_json::to_vec_pretty(&r)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_side_runs_in_every_position() {
        for i in 0..SIDES.len() {
            let mut seen: Vec<&str> = (0..ROUNDS).map(|r| side(r, i)).collect();
            seen.sort_unstable();
            let mut all = SIDES.to_vec();
            all.sort_unstable();
            assert_eq!(seen, all, "position {i}");
        }
    }

    #[test]
    fn rounds_cover_the_sides() {
        assert_eq!(ROUNDS % SIDES.len(), 0);
    }
}
