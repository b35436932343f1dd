//! Integration-test harness for beyla-rs.
//!
//! The tests in `tests/tests/*.rs` run the real daemon (`target/release/beyla-rs`, or
//! `$BEYLA_RS_BIN`) as root against the real kernel, start real servers, drive traffic and
//! decode the OTLP the daemon exports at an in-test receiver:
//!
//! - [`otlp::OtlpReceiver`]: OTLP/HTTP receiver (traces, metrics, logs) with fault knobs.
//! - [`daemon::Daemon`]: spawns the daemon, captures its output, waits for readiness, SIGTERM.
//! - [`fixtures`]: nginx, Python `http.server`, Go `net/http`, a Rust hyper server, Node `http`.
//! - [`rawhttp`]: a raw-socket HTTP/1.x client (keep-alive, pipelining, split writes, chunked,
//!   `Expect: 100-continue`, HEAD) plus a `curl` wrapper.
//! - [`counters`]: the daemon's own counters, read while it runs; [`Daemon::wait_idle`]
//!   waits on them instead of sleeping.
//! - [`expect`]: exact-count span expectations with readable failure reports.
//! - [`databases`]: private PostgreSQL, MariaDB, Redis and Memcached servers, the Python
//!   database client and web app, the database span contract.
//! - [`tls`]: a test CA, HTTPS servers and clients (nginx, Python, Node, Go, grpcio), TLS
//!   probes that speak no HTTP, the HTTPS span contract.
//! - [`require_root`]: every kernel-touching test calls it first. It panics (never skips) when
//!   the test cannot run, and serialises tests across threads and processes with a file lock.
//!
//! Run the suite serially: `cargo test -p beyla-rs-tests -- --test-threads=1` (the lock makes
//! it safe anyway, but serial runs keep the per-test timeouts meaningful).

pub mod counters;
pub mod daemon;
pub mod databases;
pub mod expect;
pub mod exposition;
pub mod fixtures;
pub mod otlp;
pub mod procs;
pub mod rawhttp;
pub mod scenarios;
pub mod tls;

use std::fs::{File, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use daemon::{Daemon, DaemonBuilder, DaemonExit};
pub use expect::{ExpectedSpan, assert_spans_match};
pub use otlp::{AttrValue, Fault, OtlpReceiver, ReceivedSpan, SpanKind, SpanStatus};

/// Root of the cargo workspace (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// This crate's directory (`<workspace>/tests`).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Holds the global test lock; drop it at the end of the test (keep it in a `_guard` binding).
pub struct TestGuard {
    _lock: File,
}

const LOCK_PATH: &str = "/tmp/beyla-rs-tests.lock";

/// Every test that needs the kernel calls this first.
///
/// Panics with a clear message when the test cannot run here (not root, BPF unavailable), so CI
/// fails loudly instead of skipping. Returns a guard holding an exclusive `flock` on
/// `/tmp/beyla-rs-tests.lock`: tests in all threads and processes run one at a time.
pub fn require_root() -> TestGuard {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "beyla-rs integration tests must run as root (euid is {euid}): they load eBPF \
             programs into the running kernel. Run them as root, e.g. \
             `sudo -E cargo test -p beyla-rs-tests -- --test-threads=1`. This is a failure, \
             not a skip, on purpose."
        );
    }
    if let Err(e) = bpf_available() {
        panic!(
            "BPF is not available on this machine ({e}); beyla-rs integration tests need \
             bpf(2) (CAP_BPF / root, kernel with CONFIG_BPF_SYSCALL, not blocked by seccomp)."
        );
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("warning: /sys/kernel/btf/vmlinux is missing; the daemon may fail to load");
    }
    TestGuard {
        _lock: global_lock(),
    }
}

/// The cross-process lock alone (for tests that need serialisation but not root).
pub fn global_lock() -> File {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("cannot open {LOCK_PATH}: {e}"));
    // SAFETY: valid fd; flock blocks until the exclusive lock is granted.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock({LOCK_PATH}): {}",
        std::io::Error::last_os_error()
    );
    f
}

/// Creates (and closes) a one-entry BPF array map: proves bpf(2) works for us.
fn bpf_available() -> Result<(), String> {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, ...
    let mut attr = [0u8; 128];
    let fields: [u32; 4] = [2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1];
    for (i, v) in fields.iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, /* BPF_MAP_CREATE */
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "bpf(BPF_MAP_CREATE) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned by the kernel and is owned by us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A free TCP port on 127.0.0.1 in 20000..30000.
///
/// Fixture ports come from below the kernel's ephemeral range (32768+) on purpose: client
/// sockets (the test process, curl, proxies) then never have a local port that a test's
/// `BEYLA_OPEN_PORT` selects.
pub fn free_port() -> u16 {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1000 {
        let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let x = seed
            .wrapping_add(n.wrapping_mul(7919))
            .wrapping_mul(2_246_822_519);
        let port = 20000 + (x >> 8) % 10000;
        let port = port as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && !port_accepts(port) {
            return port;
        }
    }
    panic!("no free port found in 20000..30000");
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How much slower than the development machine this run is: `BEYLA_TEST_TIME_SCALE` (a
/// number ≥ 1, default 1). The kernel-matrix runs set it inside emulated guests, where
/// everything takes 5–30× as long. It stretches every timeout and wait of the harness, never a
/// bound a test asserts on a measured duration.
pub fn time_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var("BEYLA_TEST_TIME_SCALE") {
        Err(_) => 1.0,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 1.0 => x,
            _ => panic!("BEYLA_TEST_TIME_SCALE={v:?}: expected a number >= 1"),
        },
    })
}

/// `d` stretched by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// The settle time tests leave between starting a process and sending it traffic while the
/// daemon runs (the daemon watches bind/listen in the kernel, so this is only slack).
pub fn settle() -> Duration {
    scaled(Duration::from_millis(300))
}

/// Timeout for spans to show up at the receiver (export every 200 ms in the tests).
pub fn span_timeout() -> Duration {
    scaled(Duration::from_secs(15))
}

/// Quiet period after the expected spans arrived during which no further span may arrive.
pub fn quiet() -> Duration {
    scaled(Duration::from_millis(2000))
}

/// Makes the child get `sig` when the spawning thread dies (e.g. the test run is interrupted
/// with Ctrl-C: the children live in their own process groups and would survive otherwise).
pub fn die_with_parent(cmd: &mut std::process::Command, sig: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
