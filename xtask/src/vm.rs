//! `cargo xtask vm`: the kernel matrix. Boots Debian's kernels (6.1, the stock kernel of
//! Debian 12, and 6.12) in QEMU with virtme-ng over this machine's own root filesystem and runs
//! the smoke suite inside each: the release daemon loads into that kernel, and a selection of
//! the integration tests (real nginx, Python, Go and grpcio servers, exact span counts) runs
//! against it, with the harness's timeouts stretched for emulation.
//!
//! Nested KVM does not work on this machine kind, so the guests run under TCG emulation, 5–30×
//! slower than the host: absolute times in a guest mean nothing, pass/fail and counts do.
//!
//! The guest side is this same binary (`xtask vm-guest PLAN`): the host writes a plan (what to
//! run, where the binaries are) into a folder the guest may write, boots the kernel with that
//! command, and reads the results back from the same folder.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{cargo, run, workspace_root};

/// A kernel of the matrix: the label users pass to `--kernel`, the `/boot/vmlinuz-*` prefix
/// that finds it, and the Debian package that installs it.
struct Kernel {
    label: &'static str,
    prefix: &'static str,
    package: &'static str,
}

const KERNELS: &[Kernel] = &[
    Kernel {
        label: "6.1",
        prefix: "vmlinuz-6.1.",
        package: "linux-image-amd64",
    },
    Kernel {
        label: "6.12",
        prefix: "vmlinuz-6.12.",
        package: "linux-image-6.12-amd64",
    },
];

/// The smoke suite: (integration test file, exact test name). Each is an integration test the
/// host runs too; together they cover loading and the choice of backend, HTTP/1 servers of
/// three stacks with keep-alive and `proxy_pass` CLIENT spans, connections opened before
/// start-up, servers started later, HTTP/2 and gRPC with the kernel's frame walk (1 MiB
/// messages, 50 concurrent streams), HTTPS through OpenSSL's shared libssl (nginx with a
/// plaintext listener beside, Python server and client), databases (PostgreSQL's forked
/// backends as SERVER spans; a web app's PostgreSQL and Redis CLIENT spans as children of its
/// HTTP spans), trace joining across processes (also while the fd of a finished call
/// already holds the next one), and a Node cluster whose primary passes every connection to
/// its workers.
pub const SMOKE: &[(&str, &str)] = &[
    (
        "kernel",
        "programs_load_and_the_backend_is_logged_with_the_kernel",
    ),
    (
        "kernel",
        "a_missing_kernel_feature_exits_2_naming_it_before_loading_anything",
    ),
    ("kernel", "auto_takes_the_first_backend_that_loads"),
    (
        "http1_nginx",
        "nginx_keepalive_proxy_pass_200_mixed_requests",
    ),
    ("http1_servers", "python_http_server_spans"),
    ("http1_servers", "go_net_http_server_spans"),
    (
        "http1_lifecycle",
        "connection_opened_before_the_daemon_is_followed",
    ),
    (
        "http1_lifecycle",
        "server_started_after_the_daemon_is_instrumented",
    ),
    ("grpc", "grpcio_unary_sequential"),
    ("grpc", "grpcio_50_concurrent_calls_on_one_connection"),
    ("grpc", "grpcio_64k_and_1m_messages"),
    ("http2", "nginx_h2c_server_spans_from_curl_prior_knowledge"),
    ("https", "nginx_https_keepalive_and_new_connections"),
    ("https", "python_https_server_and_client"),
    ("databases", "postgres_server_spans_from_forked_backends"),
    (
        "databases",
        "web_app_database_spans_are_children_of_its_http_spans",
    ),
    ("context", "python_chain_joins_the_callers_trace"),
    (
        "context",
        "python_chain_through_a_slow_callee_joins_each_round",
    ),
    ("handoff", "node_cluster_round_robin_workers_are_followed"),
];

/// `BEYLA_TEST_TIME_SCALE` inside the guests. Whole tests took 5–11× their host time in the
/// guests here; the harness's timeouts already have several times that in hand.
const TIME_SCALE: f64 = 4.0;

/// How long one guest may take before it is killed (boot, load check, smoke suite).
const GUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the guest runs, written by the host as `plan.json` in the guest's output folder.
#[derive(Serialize, Deserialize)]
struct Plan {
    daemon: PathBuf,
    /// Integration test executables by file name (`kernel` → `target/release/deps/kernel-…`).
    tests: Vec<PlannedTest>,
    time_scale: f64,
    /// `PATH` inside the guest (its own is minimal).
    path: String,
    /// Where the integration tests run (they find their fixtures relative to it).
    cwd: PathBuf,
    /// `BEYLA_CAPTURE_BACKEND` values to run the suite under, one after the other.
    backends: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PlannedTest {
    file: String,
    name: String,
    exe: PathBuf,
}

/// What the guest found, written as `results.json`.
#[derive(Serialize, Deserialize, Default)]
struct Results {
    kernel: String,
    runs: Vec<BackendRun>,
}

/// The suite under one `BEYLA_CAPTURE_BACKEND` value.
#[derive(Serialize, Deserialize, Default)]
struct BackendRun {
    /// The value asked for.
    requested: String,
    /// The daemon's "capture backend: …" line, if it loaded.
    backend: Option<String>,
    /// Why the programs did not load: the error and the verifier's last lines.
    load_failure: Option<String>,
    tests: Vec<TestResult>,
}

#[derive(Serialize, Deserialize)]
struct TestResult {
    file: String,
    name: String,
    passed: bool,
    seconds: f64,
    /// The test's output file, relative to the output folder.
    log: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask vm [--kernel 6.1|6.12|all] [--backend B[,B...]|all] [-- COMMAND...]\n\
         \n\
         Boots each kernel in QEMU (TCG) over this machine's root filesystem and runs the\n\
         smoke suite inside it under each capture backend B (auto, fentry, kprobe, syscall;\n\
         default auto), or COMMAND (run by bash, as root, in the workspace)."
    );
    std::process::exit(2)
}

/// The values `--backend all` stands for.
const ALL_BACKENDS: &[&str] = &["fentry", "kprobe", "syscall"];

pub fn main(args: &[String]) -> Result<()> {
    let mut which = "all".to_owned();
    let mut backends = vec!["auto".to_owned()];
    let mut command = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => which = it.next().cloned().unwrap_or_else(|| usage()),
            "--backend" => {
                let v = it.next().cloned().unwrap_or_else(|| usage());
                backends = if v == "all" {
                    ALL_BACKENDS.iter().map(|b| (*b).to_owned()).collect()
                } else {
                    v.split(',').map(str::to_owned).collect()
                };
                if !backends
                    .iter()
                    .all(|b| b == "auto" || ALL_BACKENDS.contains(&b.as_str()))
                {
                    usage()
                }
            }
            "--" => {
                let rest: Vec<String> = it.by_ref().cloned().collect();
                if rest.is_empty() {
                    usage()
                }
                command = Some(rest.join(" "));
            }
            _ => usage(),
        }
    }
    let kernels: Vec<&Kernel> = match which.as_str() {
        "all" => KERNELS.iter().collect(),
        l => vec![
            KERNELS
                .iter()
                .find(|k| k.label == l)
                .unwrap_or_else(|| usage()),
        ],
    };
    if !crate::is_root() {
        bail!("the kernel matrix runs the daemon as root inside the guests: run it as root");
    }
    ensure_tools(&kernels)?;
    match command {
        Some(c) => run_command(&kernels, &c),
        None => smoke(&kernels, &backends),
    }
}

/// Installs what is missing: QEMU, a static busybox (virtme-ng's init needs it), the kernels,
/// virtme-ng.
fn ensure_tools(kernels: &[&Kernel]) -> Result<()> {
    let mut apt = Vec::new();
    if which("qemu-system-x86_64").is_none() {
        apt.push("qemu-system-x86");
    }
    // virtme-ng's init needs a statically linked busybox; Debian's `busybox` is dynamic.
    let static_busybox = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if !static_busybox {
        apt.push("busybox-static");
    }
    for k in kernels {
        if find_kernel(k).is_none() {
            apt.push(k.package);
        }
    }
    if !apt.is_empty() {
        println!("installing {}", apt.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&apt)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if vng().is_none() {
        println!("installing virtme-ng");
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .arg("virtme-ng")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !pip(&[]) && !pip(&["--break-system-packages"]) {
            bail!("pip install virtme-ng failed");
        }
        if vng().is_none() {
            bail!("virtme-ng is installed but its `vng` script is nowhere to be found");
        }
    }
    for k in kernels {
        if find_kernel(k).is_none() {
            bail!("no /boot/{}* after installing {}", k.prefix, k.package);
        }
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// virtme-ng's `vng`: on `PATH`, or in the scripts folder of the `python3` that installed it
/// (an interpreter manager may not have made a shim for it yet).
fn vng() -> Option<PathBuf> {
    which("vng").or_else(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("vng");
        p.is_file().then_some(p)
    })
}

/// The newest `/boot/vmlinuz-<prefix>*` (Debian updates the patch level; the label stays).
fn find_kernel(k: &Kernel) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(k.prefix))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Boots `kernel` and runs `script` (bash) in it; the guest may write `out`. Returns whether
/// the script exited 0. The console goes to `out/console.log`.
fn boot(kernel: &Path, out: &Path, script: &str) -> Result<bool> {
    let console = std::fs::File::create(out.join("console.log"))?;
    let mut child = Command::new(vng().context("vng (virtme-ng) is not installed")?)
        .arg("--run")
        .arg(kernel)
        .args(["--disable-kvm", "--memory", "3G", "--cpus", "2"])
        .arg(format!("--rwdir={}", out.display()))
        .arg(format!("--cwd={}", workspace_root().display()))
        .args(["--", script])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        // Its own process group: a timeout kills vng and QEMU together.
        .process_group(0)
        .spawn()
        .context("starting vng (virtme-ng)")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if started.elapsed() > GUEST_TIMEOUT {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { kill(-(child.id() as i32), 9) };
            let _ = child.wait();
            bail!("the guest did not finish within {GUEST_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Boots the kernel labelled `label` (`6.1`, `6.12`) with `script`, for other commands (the
/// VM bench); the guest may write `out`. Installs what is missing first.
pub(crate) fn boot_label(label: &str, out: &Path, script: &str) -> Result<bool> {
    let k = KERNELS
        .iter()
        .find(|k| k.label == label)
        .with_context(|| format!("no kernel {label:?} in the matrix (6.1, 6.12)"))?;
    ensure_tools(&[k])?;
    let vmlinuz = find_kernel(k).expect("checked by ensure_tools");
    println!("==> kernel {} ({})", k.label, vmlinuz.display());
    boot(&vmlinuz, out, script)
}

fn out_dir(k: &Kernel) -> Result<PathBuf> {
    let out = workspace_root().join("target/vm").join(k.label);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

fn run_command(kernels: &[&Kernel], command: &str) -> Result<()> {
    crate::build(true)?;
    let mut failed = Vec::new();
    for k in kernels {
        let vmlinuz = find_kernel(k).expect("checked by ensure_tools");
        let out = out_dir(k)?;
        println!("==> {} ({}): {command}", k.label, vmlinuz.display());
        let ok = boot(&vmlinuz, &out, command)?;
        let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
        print!("{console}");
        println!("{}: {}", k.label, if ok { "exit 0" } else { "failed" });
        if !ok {
            failed.push(k.label);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("the command failed on {}", failed.join(", "))
    }
}

/// Runs the smoke suite on each kernel under each backend and prints one line per kernel and
/// backend.
fn smoke(kernels: &[&Kernel], backends: &[String]) -> Result<()> {
    let daemon = crate::build(true)?;
    let exes = test_executables()?;
    prepare_fixtures(&exes)?;
    // The guests read the host's files while they run, for many minutes: run copies, so that
    // a build in the meantime cannot swap a binary under a running suite.
    let bin = workspace_root().join("target/vm/bin");
    let daemon = snapshot(&daemon, &bin)?;
    let exes = exes
        .iter()
        .map(|(f, e)| Ok((f.clone(), snapshot(e, &bin)?)))
        .collect::<Result<Vec<_>>>()?;
    let me = snapshot(&std::env::current_exe()?, &bin)?;
    let tests = SMOKE
        .iter()
        .map(|(file, name)| {
            Ok(PlannedTest {
                file: (*file).to_owned(),
                name: (*name).to_owned(),
                exe: exes
                    .iter()
                    .find(|(f, _)| f == file)
                    .map(|(_, e)| e.clone())
                    .with_context(|| format!("no integration test executable `{file}`"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = Plan {
        daemon,
        tests,
        time_scale: TIME_SCALE,
        path: guest_path()?,
        cwd: workspace_root().join("tests"),
        backends: backends.to_vec(),
    };
    let mut lines = Vec::new();
    let mut ok = true;
    for k in kernels {
        let vmlinuz = find_kernel(k).expect("checked by ensure_tools");
        let out = out_dir(k)?;
        std::fs::write(out.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;
        println!(
            "\n==> kernel {} ({}): smoke suite, {} tests, time scale {TIME_SCALE}, backends {}",
            k.label,
            vmlinuz.display(),
            plan.tests.len(),
            backends.join(", ")
        );
        let started = Instant::now();
        let script = format!("{} vm-guest {}", me.display(), out.display());
        let booted = boot(&vmlinuz, &out, &script);
        let took = started.elapsed();
        let results: Option<Results> = std::fs::read(out.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (report, passed) = report(k, &out, booted, results, backends, took);
        ok &= passed;
        println!("{report}");
        lines.push(report);
    }
    println!("\nkernel matrix:");
    for l in &lines {
        println!("{l}");
    }
    if ok {
        Ok(())
    } else {
        bail!("the smoke suite failed on a kernel of the matrix (logs: target/vm/<kernel>/)")
    }
}

/// One line per backend run on the kernel (version, backend, result), plus the details of
/// what failed.
fn report(
    k: &Kernel,
    out: &Path,
    booted: Result<bool>,
    results: Option<Results>,
    backends: &[String],
    took: Duration,
) -> (String, bool) {
    let minutes = format!("{}m{:02}s", took.as_secs() / 60, took.as_secs() % 60);
    let Some(r) = results else {
        let why = match booted {
            Err(e) => format!("{e:#}"),
            Ok(_) => "the guest wrote no results".to_owned(),
        };
        let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
        return (
            format!(
                "  {:<6} FAILED: {why} ({minutes}); console tail:\n{}",
                k.label,
                indent(tail_lines(&console, 20))
            ),
            false,
        );
    };
    let mut all = booted.is_ok() && r.runs.len() == backends.len();
    let mut lines = Vec::new();
    for run in &r.runs {
        let asked = format!("{:<8}", run.requested);
        if let Some(why) = &run.load_failure {
            all = false;
            lines.push(format!(
                "  {:<6} {:<24} {asked} programs do not load:\n{}",
                k.label,
                r.kernel,
                indent(why)
            ));
            continue;
        }
        let passed = run.tests.iter().filter(|t| t.passed).count();
        all &= passed == run.tests.len() && run.tests.len() == SMOKE.len();
        let backend = run
            .backend
            .as_deref()
            .map(backend_name)
            .unwrap_or("(no backend line)");
        let seconds: f64 = run.tests.iter().map(|t| t.seconds).sum();
        let mut line = format!(
            "  {:<6} {:<24} {asked} backend: {backend:<38} smoke: {passed}/{} passed ({seconds:.0} s)",
            k.label,
            r.kernel,
            run.tests.len(),
        );
        for t in run.tests.iter().filter(|t| !t.passed) {
            let log = std::fs::read_to_string(out.join(&t.log)).unwrap_or_default();
            line.push_str(&format!(
                "\n    FAILED {}::{} ({:.0} s), output tail ({}):\n{}",
                t.file,
                t.name,
                t.seconds,
                out.join(&t.log).display(),
                indent(tail_lines(&log, 25))
            ));
        }
        lines.push(line);
    }
    lines.push(format!("  {:<6} guest total {minutes}", k.label));
    (lines.join("\n"), all)
}

/// `syscall raw tracepoints (sys_exit)` from the daemon's "capture backend: … (kernel …)" line.
fn backend_name(line: &str) -> &str {
    let b = line
        .split_once("capture backend: ")
        .map_or(line, |(_, b)| b);
    b.rsplit_once(" (kernel ").map_or(b, |(b, _)| b)
}

fn tail_lines(s: &str, n: usize) -> &str {
    let mut idx = s.len();
    for _ in 0..n {
        match s[..idx.saturating_sub(1)].rfind('\n') {
            Some(i) => idx = i + 1,
            None => return s,
        }
    }
    &s[idx..]
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Copies `file` into `dir` (under its own name) and returns the copy's path.
pub(crate) fn snapshot(file: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let to = dir.join(file.file_name().context("a file name")?);
    let tmp = to.with_extension("tmp");
    std::fs::copy(file, &tmp).with_context(|| format!("copying {}", file.display()))?;
    std::fs::rename(&tmp, &to)?;
    Ok(to)
}

/// The integration tests' executables, built in release (`target/release/deps/<file>-<hash>`).
fn test_executables() -> Result<Vec<(String, PathBuf)>> {
    let out = cargo()
        .args([
            "test",
            "--release",
            "-p",
            "beyla-rs-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut exes = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            v["target"]["name"].as_str(),
            v["executable"].as_str(),
        ) {
            exes.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(exes)
}

/// Builds on the host what the fixtures would otherwise build inside every guest at emulated
/// speed (the Go server: the guest sees the host's `/tmp` through an overlay).
fn prepare_fixtures(exes: &[(String, PathBuf)]) -> Result<()> {
    let harness = exes
        .iter()
        .find(|(f, _)| f == "harness")
        .map(|(_, e)| e)
        .context("no harness test executable")?;
    run(Command::new(harness)
        .args(["--exact", "fixture_go", "--test-threads=1"])
        .current_dir(workspace_root().join("tests"))
        .stdout(Stdio::null()))
    .context("building the Go fixture on the host")
}

/// The guest's `PATH`: the real directory of this machine's `python3` first (an interpreter
/// manager's shims do not work on the read-only root), then the usual system directories.
pub(crate) fn guest_path() -> Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.dirname(os.path.realpath(sys.executable)))",
        ])
        .output()
        .context("python3 is needed by the fixtures")?;
    let py = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(format!(
        "{py}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ))
}

/// Inside the guest: the load check, then each test of the plan; results into the folder.
pub fn guest(args: &[String]) -> Result<()> {
    let out = PathBuf::from(args.first().context("vm-guest needs the output folder")?);
    let plan: Plan = serde_json::from_slice(&std::fs::read(out.join("plan.json"))?)?;
    let home = PathBuf::from("/tmp/beyla-rs-vm-home");
    std::fs::create_dir_all(&home)?;
    let mut results = Results {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_owned(),
        ..Default::default()
    };
    let write = |r: &Results| -> Result<()> {
        std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(r)?)?;
        Ok(())
    };
    for backend in &plan.backends {
        let mut run = BackendRun {
            requested: backend.clone(),
            ..Default::default()
        };
        match load_check(&plan, backend, &home, &out) {
            Ok(line) => run.backend = Some(line),
            Err(why) => {
                run.load_failure = Some(why);
                results.runs.push(run);
                write(&results)?;
                continue;
            }
        }
        results.runs.push(run);
        write(&results)?;
        for t in &plan.tests {
            let log = format!("{backend}-{}-{}.log", t.file, t.name);
            let file = std::fs::File::create(out.join(&log))?;
            let started = Instant::now();
            let status = Command::new(&t.exe)
                .args(["--exact", &t.name, "--test-threads=1", "--nocapture"])
                .current_dir(&plan.cwd)
                .env_clear()
                .env("PATH", &plan.path)
                .env("HOME", &home)
                .env("BEYLA_RS_BIN", &plan.daemon)
                .env("BEYLA_TEST_TIME_SCALE", plan.time_scale.to_string())
                .env("BEYLA_TEST_CAPTURE_BACKEND", backend)
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .status()?;
            let run = results.runs.last_mut().expect("pushed above");
            run.tests.push(TestResult {
                file: t.file.clone(),
                name: t.name.clone(),
                passed: status.success(),
                seconds: started.elapsed().as_secs_f64(),
                log,
            });
            write(&results)?;
        }
    }
    Ok(())
}

/// Starts the daemon and waits for it to report ready. Returns its backend line, or why it
/// did not load: its error and the verifier's last lines.
fn load_check(plan: &Plan, backend: &str, home: &Path, out: &Path) -> Result<String, String> {
    let log = out.join(format!("{backend}-load.log"));
    let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new(&plan.daemon)
        .env_clear()
        .env("PATH", &plan.path)
        .env("HOME", home)
        // A port nothing listens on: load and attach, select nothing.
        .env("BEYLA_OPEN_PORT", "1")
        .env("BEYLA_LOG_LEVEL", "info")
        .env("BEYLA_CAPTURE_BACKEND", backend)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.daemon.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60).mul_f64(plan.time_scale);
    let text = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    loop {
        let t = text();
        if t.contains("beyla-rs ready") {
            // SAFETY: kill(2) on our own child.
            unsafe { kill(child.id() as i32, 15) };
            let _ = child.wait();
            return t
                .lines()
                .find(|l| l.contains("capture backend: "))
                .map(str::to_owned)
                .ok_or_else(|| format!("ready, but no backend line:\n{t}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(load_failure(&text(), &status.to_string()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "not ready within the deadline:\n{}",
                tail_lines(&t, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon's error line, the instruction the verifier refused, and the verifier's last
/// lines, from the daemon's log of a failed load.
fn load_failure(log: &str, status: &str) -> String {
    let error = log
        .lines()
        .find(|l| l.contains(" ERROR ") || l.starts_with("beyla-rs: "))
        .unwrap_or("(no error line)");
    let error = error.split(" beyla-rs: ").nth(1).unwrap_or(error);
    let error: String = error.chars().take(300).collect();
    // Verifier lines that are instructions: "1532: (73) *(u8 *)(r2 +55) = r3".
    let is_insn = |l: &str| {
        let l = l.trim_start();
        l.split_once(": (")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let lines: Vec<&str> = log.lines().collect();
    let mut s = format!("daemon exited ({status}): {error}");
    if let Some(i) = lines.iter().rposition(|l| is_insn(l)) {
        s.push_str(&format!("\nrefused instruction: {}", lines[i].trim()));
        let end = (i + 6).min(lines.len());
        s.push_str("\nverifier's last lines:");
        for l in lines[i.saturating_sub(6)..end]
            .iter()
            .filter(|l| !l.trim().is_empty())
        {
            let l: String = l.chars().take(200).collect();
            s.push_str(&format!("\n  {l}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of the 6.1 verifier's refusal, as the daemon logged it before the bounds fix.
    const REFUSED: &str = "\
2026-12-03T09:40:01.000Z INFO  beyla-rs: exporting traces to http://127.0.0.1:4318/v1/traces
2026-12-03T09:40:02.000Z ERROR beyla-rs: eBPF program beyla_sys_exit: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: reg type unsupported for arg#0 function beyla_sys_exit#17
1527: (15) if r1 == 0x0 goto pc+230   ; R1=8
1528: (bf) r2 = r6                    ; R2_w=map_value(off=0,ks=4,vs=16672,imm=0)
1529: (0f) r2 += r9                   ; R2_w=map_value(off=0,ks=4,vs=16672,umin=4)
1530: (bf) r3 = r1                    ; R1=8 R3_w=8
1531: (77) r3 >>= 24                  ; R3_w=0
1532: (73) *(u8 *)(r2 +55) = r3
R2 unbounded memory access, make sure to bounds check any such access
verification time 681313 usec
stack depth 320+0+56+56+16
processed 22427 insns (limit 1000000) max_states_per_insn 16 total_states 1400 peak_states
";

    #[test]
    fn load_failure_names_error_and_refused_instruction() {
        let s = load_failure(REFUSED, "exit status: 1");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "daemon exited (exit status: 1): eBPF program beyla_sys_exit: the BPF_PROG_LOAD \
             syscall returned Permission denied (os error 13). Verifier output: reg type \
             unsupported for arg#0 function beyla_sys_exit#17"
        );
        assert_eq!(
            lines[1],
            "refused instruction: 1532: (73) *(u8 *)(r2 +55) = r3"
        );
        assert_eq!(lines[2], "verifier's last lines:");
        assert_eq!(
            lines.last().copied(),
            Some(
                "  processed 22427 insns (limit 1000000) max_states_per_insn 16 total_states 1400 peak_states"
            )
        );
        assert!(s.contains("  R2 unbounded memory access"));
    }

    #[test]
    fn backend_name_from_the_log_line() {
        assert_eq!(
            backend_name(
                "2026-12-03T10:13:07.823Z INFO  beyla-rs: capture backend: syscall raw \
                 tracepoints (sys_exit) (kernel 6.1.0-57-amd64)"
            ),
            "syscall raw tracepoints (sys_exit)"
        );
    }

    #[test]
    fn tail_lines_keeps_the_last_n() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\n", 5), "a\n");
    }

    #[test]
    fn every_smoke_test_is_a_test_of_its_file() {
        for (file, name) in SMOKE {
            let src = workspace_root().join(format!("tests/tests/{file}.rs"));
            let text = std::fs::read_to_string(&src).unwrap();
            assert!(
                text.contains(&format!("#[test]\nfn {name}()")),
                "{name} is not a test in {}",
                src.display()
            );
        }
    }
}
