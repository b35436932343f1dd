//! The kernel the tests run on: the programs load and attach (the capture backend is logged
//! with the kernel's release), and a kernel missing a feature the programs need stops the
//! daemon with exit 2 naming the feature, the kernel and the minimum version, before anything
//! is loaded. A test switch (`BEYLA_TEST_PRETEND_MISSING_KERNEL_FEATURE`) makes one probe
//! report its feature missing, so the path is tested on kernels that have everything.
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
