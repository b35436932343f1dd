//! What building the eBPF object needs, installed when missing:
//! - the nightly toolchain's `rust-src` (for `-Z build-std=core`);
//! - `bpf-linker` built against the nightly's own libLLVM, so its LLVM major version matches
//!   the bitcode rustc emits. Versions are read from `rustc +nightly -vV`, never hard-coded; a
//!   stamp file records which nightly the installed linker was built for.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::run;

const NIGHTLY: &str = "nightly";

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Nightly {
    /// `1.97.0-nightly`
    release: String,
    /// `22`
    llvm_major: String,
    sysroot: PathBuf,
}

fn nightly() -> Result<Nightly> {
    let vv = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"])).context(
        "a nightly Rust toolchain is needed to build the eBPF programs (rustup toolchain install nightly)",
    )?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let release = field("release:").context("no release in rustc -vV")?;
    let llvm = field("LLVM version:").context("no LLVM version in rustc -vV")?;
    let llvm_major = llvm.split('.').next().unwrap_or_default().to_owned();
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    Ok(Nightly {
        release,
        llvm_major,
        sysroot: PathBuf::from(sysroot.trim()),
    })
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("installing rust-src for the {NIGHTLY} toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("beyla-rs")
}

/// The nightly's own libLLVM shared library file.
fn find_libllvm(sysroot: &Path, major: &str) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&format!("libLLVM.so.{major}"))
                || n.starts_with(&format!("libLLVM-{major}"))
        })
        .collect();
    candidates.sort();
    // Prefer the versioned soname (libLLVM.so.22.1-rust-…), which is what the linker loads.
    candidates
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("libLLVM.so.")
        })
        .or(candidates.first())
        .cloned()
        .with_context(|| format!("no libLLVM {major} in {}", lib.display()))
}

fn ensure_bpf_linker(n: &Nightly) -> Result<()> {
    let stamp_dir = data_dir();
    let stamp = stamp_dir.join("bpf-linker.stamp");
    let want = format!("{} llvm-{}", n.release, n.llvm_major);
    let have_linker = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let stamp_ok = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want);
    if have_linker && (stamp_ok || std::env::var_os("BEYLA_TRUST_BPF_LINKER").is_some()) {
        return Ok(());
    }
    if have_linker && !stamp.exists() {
        // A linker installed by other means: trust it if it loads the nightly's LLVM.
        let lib = find_libllvm(&n.sysroot, &n.llvm_major)?;
        let soname = lib
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let which = output(Command::new("sh").args(["-c", "command -v bpf-linker"]))?;
        let ldd = output(Command::new("ldd").arg(which.trim())).unwrap_or_default();
        if ldd.contains(&soname) && !ldd.contains("not found") {
            std::fs::create_dir_all(&stamp_dir)?;
            std::fs::write(&stamp, &want)?;
            return Ok(());
        }
    }
    let lib = find_libllvm(&n.sysroot, &n.llvm_major)?;
    let soname = lib.file_name().unwrap_or_default().to_owned();
    // The linker keeps prefix/lib as its runpath: the prefix must stay where it is.
    let prefix = stamp_dir.join(format!("llvm-{}-rust-{}", n.llvm_major, n.release));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname.as_os_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "building bpf-linker against {} (LLVM {}), about two minutes",
        lib.display(),
        n.llvm_major
    );
    run(Command::new("cargo")
        .args([
            "install",
            "--force",
            "bpf-linker",
            "--version",
            "~0.13",
            "--no-default-features",
            "--features",
            &format!("llvm-{}", n.llvm_major),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(&stamp, &want)?;
    Ok(())
}

pub fn ensure() -> Result<()> {
    let n = nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker(&n)
}
