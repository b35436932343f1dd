//! `cargo xtask fuzz [--seconds N] [target…]`: runs every cargo-fuzz target of
//! `beyla-rs/fuzz` for N seconds each (default 60) and prints executions and crashes per
//! target.
//!
//! New inputs go to a fresh temporary corpus directory, listed first so that libFuzzer writes
//! there; the checked-in seed corpus (`beyla-rs/fuzz/corpus/<target>`) is only read. Crash,
//! timeout and out-of-memory inputs land in `beyla-rs/fuzz/artifacts/<target>/` (git-ignored).
//! Limits: `-rss_limit_mb=2048` (and the same malloc limit: bounded allocations),
//! `-timeout=10` (an input running longer is a hang).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

struct Outcome {
    target: String,
    executions: Option<u64>,
    secs: f64,
    new_inputs: usize,
    crashed: bool,
    artifact: Option<String>,
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("beyla-rs/fuzz")
}

/// Target names from `[[bin]]` sections of the fuzz crate's Cargo.toml.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let toml = std::fs::read_to_string(dir.join("Cargo.toml"))
        .with_context(|| format!("reading {}/Cargo.toml", dir.display()))?;
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name") {
            let name = v
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            out.push(name.to_owned());
        }
    }
    if out.is_empty() {
        bail!("no [[bin]] targets in {}/Cargo.toml", dir.display());
    }
    Ok(out)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("installing cargo-fuzz");
        crate::run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    Ok(())
}

fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

fn run_target(target: &str, seconds: u64) -> Result<Outcome> {
    let dir = fuzz_dir();
    let seed = dir.join("corpus").join(target);
    let tmp = std::env::temp_dir().join(format!("beyla-rs-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir.parent().expect("beyla-rs/fuzz has a parent"))
        .args(["+nightly", "fuzz", "run", target])
        .arg(&tmp);
    if seed.is_dir() {
        cmd.arg(&seed);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        .arg("-malloc_limit_mb=2048")
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!(
        "\n==> fuzz {target} for {seconds}s (corpus {} + seed {})",
        tmp.display(),
        seed.display()
    );
    let started = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let artifact = log
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|s| s.trim().to_owned());
    let crashed = !out.status.success();
    if crashed {
        // The tail of libFuzzer's report: the panic message and the reproducer.
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        if artifact.is_none() && !log.contains("==ERROR") && !log.contains("panicked") {
            bail!("cargo fuzz run {target} failed before fuzzing:\n{log}");
        }
    }
    let new_inputs = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Outcome {
        target: target.to_owned(),
        executions: stat(&log, "stat::number_of_executed_units:"),
        secs,
        new_inputs,
        crashed,
        artifact,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds takes whole seconds")?
            }
            t if !t.starts_with('-') => only.push(t.to_owned()),
            other => bail!("unknown fuzz option {other} (usage: fuzz [--seconds N] [target…])"),
        }
    }
    ensure_cargo_fuzz()?;
    let all = targets(&fuzz_dir())?;
    for t in &only {
        if !all.contains(t) {
            bail!("no fuzz target {t} (targets: {})", all.join(", "));
        }
    }
    let chosen: Vec<String> = if only.is_empty() { all } else { only };
    let mut outcomes = Vec::new();
    for t in &chosen {
        outcomes.push(run_target(t, seconds)?);
    }
    println!(
        "\n{:<14} {:>12} {:>10} {:>8} {:>8}  artifact",
        "target", "executions", "exec/s", "new", "crashes"
    );
    for o in &outcomes {
        let execs = o.executions.map_or("?".to_owned(), |e| e.to_string());
        let rate = o.executions.map_or("?".to_owned(), |e| {
            format!("{:.0}", e as f64 / seconds.max(1) as f64)
        });
        println!(
            "{:<14} {:>12} {:>10} {:>8} {:>8}  {}  ({:.0}s wall incl. build)",
            o.target,
            execs,
            rate,
            o.new_inputs,
            u8::from(o.crashed),
            o.artifact.as_deref().unwrap_or("-"),
            o.secs
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if crashed.is_empty() {
        println!("\nno crashes, hangs or out-of-memory inputs");
        Ok(())
    } else {
        bail!(
            "fuzzing found problems in: {} (reproduce with `cargo +nightly fuzz run <target> <artifact>` in beyla-rs/)",
            crashed.join(", ")
        )
    }
}
