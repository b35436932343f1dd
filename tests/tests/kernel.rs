//! The kernel the tests run on: the programs load and attach (the capture backend is logged
//! with the kernel's release), and a kernel missing a feature the programs need stops the
//! daemon with exit 2 naming the feature, the kernel and the minimum version, before anything
//! is loaded. A test switch (`BEYLA_TEST_PRETEND_MISSING_KERNEL_FEATURE`) makes one probe
//! report its feature missing, so the path is tested on kernels that have everything.
//!
//! Which capture backend loads is the kernel's to say: each forced backend either starts or
//! exits 2 naming why, and `auto` takes the first that starts (fentry, kprobe, syscall).
//!
//! Runs on the host and inside every kernel of the VM matrix (`cargo xtask vm`).

use std::time::Instant;

use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::{require_root, scaled};

/// The features the daemon probes, in its order (`beyla-rs/src/capture/probe.rs`).
const FEATURES: &[&str] = &[
    "raw_tracepoint",
    "bpf_probe_read_user",
    "ringbuf",
    "bpf_ringbuf_query",
    "bpf_loop",
];

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("/proc/sys/kernel/osrelease")
        .trim()
        .to_owned()
}

#[test]
fn programs_load_and_the_backend_is_logged_with_the_kernel() {
    let _guard = require_root();
    daemon::daemon_bin();
    let d = Daemon::builder().open_port("18081").start();
    let logs = d.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("capture backend: "))
        .unwrap_or_else(|| panic!("no backend line in the log:\n{logs}"));
    eprintln!("[measured] {line}");
    assert!(
        line.ends_with(&format!("(kernel {})", release())),
        "the backend line names the running kernel: {line}"
    );
    d.stop_ok();
}

#[test]
fn a_missing_kernel_feature_exits_2_naming_it_before_loading_anything() {
    let _guard = require_root();
    daemon::daemon_bin();
    let kernel = release();
    for feature in FEATURES {
        let mut d = Daemon::builder()
            .no_wait()
            .open_port("18081")
            .env("BEYLA_TEST_PRETEND_MISSING_KERNEL_FEATURE", *feature)
            .start();
        let started = Instant::now();
        while d.is_running() && started.elapsed() < scaled(std::time::Duration::from_secs(10)) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!d.is_running(), "{feature}: the daemon did not exit");
        let exit = d.stop();
        assert_eq!(exit.status.code(), Some(2), "{feature}: {}", exit.stderr);
        let want = format!("this kernel ({kernel}) lacks {feature} (");
        assert!(
            exit.stderr.contains(&want) && exit.stderr.contains("needs Linux 5.17 or later"),
            "{feature}: the message names the feature, the kernel and the minimum: {}",
            exit.stderr
        );
        assert!(
            !exit.stderr.contains("capture backend"),
            "{feature}: nothing is loaded: {}",
            exit.stderr
        );
    }
    // A name no probe has is refused, not ignored (a typo would otherwise test nothing).
    let mut d = Daemon::builder()
        .no_wait()
        .open_port("18081")
        .env("BEYLA_TEST_PRETEND_MISSING_KERNEL_FEATURE", "bpf_loops")
        .start();
    let started = Instant::now();
    while d.is_running() && started.elapsed() < scaled(std::time::Duration::from_secs(10)) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let exit = d.stop();
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("names no probed feature"),
        "{}",
        exit.stderr
    );
}

/// (`BEYLA_CAPTURE_BACKEND` value, what the daemon's backend line says), in `auto`'s order.
const BACKENDS: &[(&str, &str)] = &[
    ("fentry", "fentry/fexit on the TCP socket layer"),
    ("kprobe", "kprobes on the TCP socket layer"),
    ("syscall", "syscall raw tracepoints (sys_exit)"),
];

/// Starts the daemon with `BEYLA_CAPTURE_BACKEND=value`; returns its backend line if it
/// became ready, or asserts that it exited 2 naming the backend and why.
fn start_with_backend(value: &str) -> Option<String> {
    let mut d = Daemon::builder()
        .no_wait()
        .open_port("18081")
        .env("BEYLA_CAPTURE_BACKEND", value)
        .start();
    let deadline = Instant::now() + scaled(std::time::Duration::from_secs(60));
    while d.is_running() && !d.logs().contains("beyla-rs ready") && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if d.is_running() {
        let logs = d.logs();
        assert!(
            logs.contains("beyla-rs ready"),
            "{value}: neither ready nor exited:\n{logs}"
        );
        let line = logs
            .lines()
            .find_map(|l| l.split_once("capture backend: ").map(|(_, b)| b.to_owned()))
            .unwrap_or_else(|| panic!("{value}: no backend line:\n{logs}"));
        d.stop_ok();
        return Some(line);
    }
    let exit = d.stop();
    assert_eq!(exit.status.code(), Some(2), "{value}: {}", exit.stderr);
    assert!(
        exit.stderr.contains(&format!(
            "backend (BEYLA_CAPTURE_BACKEND={value}) cannot be used here: "
        )),
        "{value}: the refusal names the backend and the reason: {}",
        exit.stderr
    );
    None
}

#[test]
fn auto_takes_the_first_backend_that_loads() {
    let _guard = require_root();
    daemon::daemon_bin();
    let mut loads = Vec::new();
    for (value, name) in BACKENDS {
        if let Some(line) = start_with_backend(value) {
            assert!(line.starts_with(name), "{value} started as {line}");
            loads.push(*value);
        }
    }
    eprintln!(
        "[measured] kernel {}: backends that load: {loads:?}",
        release()
    );
    // Raw tracepoints are everywhere the programs can run at all.
    assert!(loads.contains(&"syscall"), "{loads:?}");
    let auto = start_with_backend("auto").expect("auto starts");
    let first = BACKENDS.iter().find(|(v, _)| *v == loads[0]).unwrap().1;
    assert!(
        auto.starts_with(first),
        "auto chose {auto}, the first that loads is {first}"
    );
}
