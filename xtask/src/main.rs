//! `cargo xtask <command>`: the project's build, test and demo entry points. Each command first
//! installs what a fresh machine lacks (the nightly's rust-src, a bpf-linker built against the
//! nightly's own LLVM, Debian packages the tests use), so the README's two commands work on a
//! new machine.

mod bench;
mod demo;
mod fuzz;
mod seeds;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \n\
         commands:\n  \
           build [--release]    install missing toolchain parts, build the eBPF object and the daemon\n  \
           demo [--seconds N]   build, start a bundled HTTP server and client, run beyla-rs on them\n  \
           bench [--quick] [--only saturation,rates,https,unselected,pgbench,redis]\n                       \
           overhead of beyla-rs vs. no instrumentation (nginx, wrk, dd)\n  \
           bench --vm 6.1|6.12  the capture backends compared inside a Debian kernel in QEMU\n  \
           fuzz [--seconds N]   run every cargo-fuzz target for N seconds (default 60)\n  \
           fuzz-seeds [--check] write the HTTP/2 and HPACK fuzz seeds (--check: fail if the\n                       \
           checked-in ones differ)\n  \
           test                 every test: unit, integration (real kernel, needs root), the kernel\n                       \
           matrix (vm), nix checks\n  \
           vm [--kernel 6.1|6.12|all] [--backend B,...|all] [-- COMMAND...]\n                       \
           boot Debian's kernels in QEMU, run the smoke suite (under each capture\n                       \
           backend B; default auto) or COMMAND in each\n  \
           setup                only install what builds and tests need"
    );
    std::process::exit(2)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Run a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

pub fn build(release: bool) -> Result<PathBuf> {
    toolchain::ensure()?;
    let mut c = cargo();
    c.args(["build", "-p", "beyla-rs"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let bin = workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("beyla-rs");
    println!("built {}", bin.display());
    Ok(bin)
}

fn setup_test_deps() -> Result<()> {
    run(Command::new("bash").arg(workspace_root().join("tests/setup.sh")))
}

fn test() -> Result<()> {
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs into the kernel and must run as root \
             (they fail rather than skip without it)"
        );
    }
    setup_test_deps()?;
    let bin = build(true)?;
    let mut failures = Vec::new();
    let mut step = |name: &str, cmd: &mut Command| {
        println!("\n==> {name}");
        if let Err(e) = run(cmd) {
            eprintln!("{name}: {e:#}");
            failures.push(name.to_owned());
        }
    };
    // The crates whose tests need no kernel.
    const UNIT: [&str; 6] = ["-p", "beyla-rs", "-p", "beyla-rs-common", "-p", "xtask"];
    step("unit tests", cargo().args(["test", "--release"]).args(UNIT));
    // Again in the dev profile: overflow checks on, so arithmetic on captured lengths that
    // wraps in release panics here.
    step(
        "unit tests (dev profile, overflow checks)",
        cargo().arg("test").args(UNIT),
    );
    step(
        "integration tests (real kernel)",
        cargo()
            .args([
                "test",
                "--release",
                // Every test file runs even after one fails: a red run shows all failures.
                "--no-fail-fast",
                "-p",
                "beyla-rs-tests",
                "--",
                "--test-threads=1",
            ])
            .env("BEYLA_RS_BIN", &bin),
    );
    // Each kernel runs the suite with the default (`auto`: fentry there) and one forced
    // backend, so every run covers all three backends and both kernels.
    for (kernel, forced) in [("6.1", "kprobe"), ("6.12", "syscall")] {
        step(
            &format!("kernel matrix: Debian {kernel} in QEMU (auto, {forced})"),
            Command::new(std::env::current_exe().expect("own path")).args([
                "vm",
                "--kernel",
                kernel,
                "--backend",
                &format!("auto,{forced}"),
            ]),
        );
    }
    let nix_check = workspace_root().join("nix/tests/check.sh");
    if nix_check.exists() {
        step("nix checks", Command::new("bash").arg(nix_check));
    }
    if failures.is_empty() {
        println!("\nall test steps passed");
        Ok(())
    } else {
        bail!("failed: {}", failures.join(", "))
    }
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let rest = &args[1..];
    match cmd.as_str() {
        "build" => {
            let release = rest.iter().any(|a| a == "--release");
            build(release).map(|_| ())
        }
        "demo" => {
            let mut seconds = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--seconds" => {
                        seconds = Some(
                            it.next()
                                .context("--seconds needs a value")?
                                .parse()
                                .context("--seconds takes whole seconds")?,
                        )
                    }
                    _ => usage(),
                }
            }
            demo::run(seconds)
        }
        "test" => test(),
        "bench" => match rest.iter().position(|a| a == "--vm") {
            Some(i) => bench::vm::run(rest.get(i + 1).map_or("6.12", String::as_str)),
            None => bench::run(rest.iter().any(|a| a == "--quick")),
        },
        // Inside a guest of `bench --vm`: not for direct use.
        "bench-guest" => bench::vm::guest(rest),
        "fuzz" => fuzz::run(rest),
        "fuzz-seeds" => seeds::run(rest),
        "vm" => vm::main(rest),
        // Inside a guest of `vm`: not for direct use.
        "vm-guest" => vm::guest(rest),
        "setup" => {
            toolchain::ensure()?;
            setup_test_deps()
        }
        _ => usage(),
    }
}
