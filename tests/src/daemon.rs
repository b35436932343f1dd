//! Spawning and stopping the beyla-rs daemon under test.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::counters::{self, Counters};
use crate::otlp::OtlpReceiver;

/// The line the daemon logs once its programs are attached and the initial scan is done.
pub const READY_MARKER: &str = "beyla-rs ready";

/// How long to wait for [`READY_MARKER`].
pub fn ready_timeout() -> Duration {
    crate::scaled(Duration::from_secs(60))
}

/// Path of the daemon binary: `$BEYLA_RS_BIN`, else `<workspace>/target/release/beyla-rs`.
pub fn daemon_bin_path() -> PathBuf {
    match std::env::var_os("BEYLA_RS_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::workspace_root().join("target/release/beyla-rs"),
    }
}

/// [`daemon_bin_path`], checked: panics with build instructions when it does not exist.
pub fn daemon_bin() -> PathBuf {
    check_daemon_bin(daemon_bin_path())
}

/// Returns `p` if it is a file, else panics with the "binary missing" message.
pub fn check_daemon_bin(p: PathBuf) -> PathBuf {
    if !p.is_file() {
        panic!(
            "beyla-rs daemon binary missing: {} does not exist.\n\
             Build it first with `cargo xtask build --release` (from {}), \
             or point BEYLA_RS_BIN at a built binary.",
            p.display(),
            crate::workspace_root().display()
        );
    }
    p
}

/// Output captured from a child process by a reader thread, with change notification.
#[derive(Default)]
pub struct OutputBuf {
    data: Mutex<Vec<u8>>,
    changed: Condvar,
}

impl OutputBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Spawns a thread copying `r` into the buffer line by line; `echo` prefixes and mirrors
    /// each line to the test's stderr.
    pub fn capture(
        self: &Arc<Self>,
        r: impl Read + Send + 'static,
        echo: Option<String>,
    ) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(p) = &echo {
                            eprint!("{p}{}", String::from_utf8_lossy(&line));
                        }
                        me.data
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend_from_slice(&line);
                        me.changed.notify_all();
                    }
                }
            }
            me.changed.notify_all();
        })
    }

    /// Waits until the captured text contains `needle` or `timeout` passes / `give_up` says so.
    pub fn wait_for(
        &self,
        needle: &str,
        timeout: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if String::from_utf8_lossy(&data).contains(needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || give_up() {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            data = self
                .changed
                .wait_timeout(data, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Configuration of one daemon run. Built by [`Daemon::builder`].
#[derive(Clone, Debug)]
pub struct DaemonBuilder {
    open_port: Option<String>,
    endpoint: Option<String>,
    env: Vec<(String, String)>,
    ready_timeout: Duration,
    wait_ready: bool,
    args: Vec<String>,
    bin: Option<PathBuf>,
    internal_metrics: bool,
}

impl DaemonBuilder {
    /// `BEYLA_OPEN_PORT` (e.g. `"8080"`, `"8000-8100,9090"`).
    pub fn open_port(mut self, spec: impl Into<String>) -> Self {
        self.open_port = Some(spec.into());
        self
    }
    /// `BEYLA_OPEN_PORT` from a list of ports.
    pub fn open_ports(self, ports: &[u16]) -> Self {
        let s: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        self.open_port(s.join(","))
    }
    /// Export to this receiver (`OTEL_EXPORTER_OTLP_ENDPOINT`, http/protobuf).
    pub fn otlp(mut self, rx: &OtlpReceiver) -> Self {
        self.endpoint = Some(rx.endpoint());
        self
    }
    /// Export to this base URL.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// Any extra environment variable (overrides the defaults below).
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }
    /// Use this binary instead of [`daemon_bin`] (harness self-tests use a fake daemon).
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }
    /// Serve the daemon's internal counters (`BEYLA_INTERNAL_METRICS_EXPORTER=prometheus`) on
    /// a port of their own, for [`Daemon::counters`] and [`Daemon::wait_idle`].
    pub fn internal_metrics(mut self) -> Self {
        self.internal_metrics = true;
        self
    }
    /// Do not wait for the ready line (for tests of start-up failures).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Spawns the daemon and (unless [`Self::no_wait`]) waits for [`READY_MARKER`].
    ///
    /// Defaults: `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, `OTEL_BSP_SCHEDULE_DELAY=200`,
    /// `BEYLA_TRACE_PRINTER=disabled`, `BEYLA_LOG_LEVEL=info` (or `$BEYLA_TEST_LOG_LEVEL`).
    /// Every `OTEL_*`/`BEYLA_*` variable of the test's own environment is removed first.
    /// `BEYLA_TEST_ECHO=1` mirrors the daemon's output to the test's stderr.
    pub fn start(self) -> Daemon {
        let bin = self.bin.clone().unwrap_or_else(daemon_bin);
        let mut cmd = Command::new(&bin);
        crate::die_with_parent(&mut cmd, libc::SIGTERM);
        cmd.args(&self.args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::fixtures::clean_env(&mut cmd);
        let level = std::env::var("BEYLA_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        cmd.env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("BEYLA_TRACE_PRINTER", "disabled")
            .env("BEYLA_LOG_LEVEL", level);
        // The capture backend under test: `cargo xtask vm` runs the suite under each.
        if let Ok(b) = std::env::var("BEYLA_TEST_CAPTURE_BACKEND") {
            cmd.env("BEYLA_CAPTURE_BACKEND", b);
        }
        if let Some(p) = &self.open_port {
            cmd.env("BEYLA_OPEN_PORT", p);
        }
        if let Some(e) = &self.endpoint {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", e);
        }
        let internal_port = self.internal_metrics.then(crate::free_port);
        if let Some(p) = internal_port {
            cmd.env("BEYLA_INTERNAL_METRICS_EXPORTER", "prometheus")
                .env("BEYLA_INTERNAL_METRICS_PROMETHEUS_PORT", p.to_string());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let echo = std::env::var("BEYLA_TEST_ECHO").is_ok_and(|v| v == "1");
        let stderr = Arc::new(OutputBuf::default());
        let stdout = Arc::new(OutputBuf::default());
        let readers = vec![
            stderr.capture(
                child.stderr.take().unwrap(),
                echo.then(|| "[beyla-rs] ".to_string()),
            ),
            stdout.capture(
                child.stdout.take().unwrap(),
                echo.then(|| "[beyla-rs stdout] ".to_string()),
            ),
        ];
        let mut d = Daemon {
            child: Some(child),
            stderr,
            stdout,
            readers,
            started: Instant::now(),
            internal_port,
        };
        if self.wait_ready {
            d.wait_ready(self.ready_timeout);
        }
        d
    }
}

/// How the daemon ended.
#[derive(Debug)]
pub struct DaemonExit {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
}

impl DaemonExit {
    /// Panics with the logs unless the daemon exited with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "beyla-rs exited with {} (expected 0).\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.status,
            self.stderr,
            tail(&self.stdout, 4000)
        );
    }
}

/// A running daemon. Dropping it kills it (SIGKILL) and, when the test is panicking, prints
/// its logs.
pub struct Daemon {
    child: Option<Child>,
    stderr: Arc<OutputBuf>,
    stdout: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    internal_port: Option<u16>,
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            open_port: None,
            endpoint: None,
            env: Vec::new(),
            ready_timeout: ready_timeout(),
            wait_ready: true,
            args: Vec::new(),
            bin: None,
            internal_metrics: false,
        }
    }

    /// The common case: select `ports`, export to `rx`, wait until ready.
    pub fn start(ports: &[u16], rx: &OtlpReceiver) -> Daemon {
        Daemon::builder().open_ports(ports).otlp(rx).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Captured stderr (the daemon's log) so far.
    pub fn logs(&self) -> String {
        self.stderr.text()
    }

    /// Captured stdout (trace printer output) so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics (with logs) unless the daemon is still running.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            let st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "beyla-rs is not running any more (status {st:?}).\n--- stderr ---\n{}",
                self.logs()
            );
        }
    }

    /// Waits for the ready line; panics with the log on timeout or early exit.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let child = self.child.as_mut().expect("daemon already stopped");
        let mut exited = None;
        let ok = self.stderr.wait_for(READY_MARKER, timeout, || {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                true
            } else {
                false
            }
        });
        if ok {
            return;
        }
        // Let the reader threads drain whatever the process wrote last.
        std::thread::sleep(Duration::from_millis(100));
        let logs = self.logs();
        match exited {
            Some(st) => panic!(
                "beyla-rs exited with {st} before logging {READY_MARKER:?}.\n--- stderr ---\n{logs}\n--- stdout ---\n{}",
                tail(&self.stdout(), 4000)
            ),
            None => panic!(
                "beyla-rs did not log {READY_MARKER:?} within {timeout:?}.\n--- stderr ---\n{logs}"
            ),
        }
    }

    /// Waits until the log contains `needle`; returns whether it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.stderr.wait_for(needle, timeout, || false)
    }

    /// The daemon's internal counters now. Panics (with the log) when they cannot be read;
    /// needs [`DaemonBuilder::internal_metrics`].
    pub fn counters(&self) -> Counters {
        let port = self
            .internal_port
            .expect("Daemon::counters needs DaemonBuilder::internal_metrics()");
        counters::scrape(port, "/internal/metrics", crate::rawhttp::io_timeout())
            .and_then(|text| Counters::parse(&text))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot read the daemon's counters: {e}\n--- stderr ---\n{}",
                    tail(&self.logs(), 8000)
                )
            })
    }

    /// Waits until the daemon is idle: its traffic counters (records read, connections,
    /// spans built, exported, dropped…) have not moved for [`counters::idle_window`] and every span it
    /// built has left the export queue (exported or counted as dropped). Returns the counters
    /// then. Panics at [`crate::span_timeout`] with the last counters and the log. See
    /// [`counters::wait_idle`].
    pub fn wait_idle(&self) -> Counters {
        self.wait_idle_within(crate::span_timeout())
    }

    /// [`Self::wait_idle`] with another deadline (for bursts that take long to export).
    pub fn wait_idle_within(&self, timeout: Duration) -> Counters {
        counters::wait_idle(|| self.counters(), timeout)
            .unwrap_or_else(|e| panic!("{e}\n--- stderr ---\n{}", tail(&self.logs(), 8000)))
    }

    /// Time since spawn.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Resident set size in KiB (from /proc), while running.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::procs::rss_kib(self.pid())
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM, then waits (up to 20 s, then SIGKILL and panic) and returns status and logs.
    pub fn stop(mut self) -> DaemonExit {
        self.stop_inner(crate::scaled(Duration::from_secs(20)))
    }

    /// [`Self::stop`] and assert exit status 0.
    pub fn stop_ok(self) -> DaemonExit {
        let exit = self.stop();
        exit.assert_success();
        exit
    }

    fn stop_inner(&mut self, timeout: Duration) -> DaemonExit {
        let mut child = self.child.take().expect("daemon already stopped");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    // SAFETY: killpg on the process group created for this child.
                    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
                    let _ = child.kill();
                    let _ = child.wait();
                    self.join_readers();
                    panic!(
                        "beyla-rs did not exit within {timeout:?} of SIGTERM.\n--- stderr ---\n{}",
                        self.logs()
                    );
                }
            }
        };
        self.join_readers();
        DaemonExit {
            status,
            stderr: self.logs(),
            stdout: self.stdout(),
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: killpg on the process group created for this child (kills helpers too).
            unsafe { libc::killpg(c.id() as i32, libc::SIGKILL) };
            let _ = c.kill();
            let _ = c.wait();
            self.join_readers();
            if std::thread::panicking() {
                eprintln!(
                    "--- beyla-rs stderr (test failed) ---\n{}\n--- end ---",
                    tail(&self.logs(), 20_000)
                );
            }
        }
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
