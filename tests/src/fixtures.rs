//! Real servers to instrument: nginx, HAProxy, Python `http.server`, Go `net/http`, a Rust
//! hyper server and Node `http`. Each listens on 127.0.0.1:`port`, is ready (accepts) when the
//! constructor returns, and is killed (its whole process group) on drop.
//!
//! Every server (nginx where noted) answers the same routes:
//! - `/hello` → 200 `"hello\n"` (6 bytes)
//! - `/status?respond=NNN` (or `/status/NNN`) → NNN with body `"status NNN\n"` (none for
//!   1xx/204/304). Tests use the query form: a non-numeric `url.path` keeps span names stable
//!   under the daemon's route heuristic (`/status/503` becomes `/status/{id}`).
//! - `/sleep?ms=MS` (or `/sleep/MS`) → sleeps MS ms, then 200 `"slept\n"` (not nginx)
//! - `/echo` → 200 echoing the request body (nginx: proxied to its upstream, if any)
//! - `/proxy/<rest>?<q>` → same-method request to `<upstream>/<rest>?<q>`, answered with the
//!   upstream's status and body (nginx: `proxy_pass` to a keep-alive upstream)
//! - anything else → 404 `"not found\n"`

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::daemon::OutputBuf;
use crate::procs;

/// How long a fixture may take to accept connections.
pub fn start_timeout() -> Duration {
    crate::scaled(Duration::from_secs(20))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Python,
    Go,
    Rust,
    Node,
}

impl ServerKind {
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Python,
        ServerKind::Go,
        ServerKind::Rust,
        ServerKind::Node,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Python => "python",
            ServerKind::Go => "go",
            ServerKind::Rust => "rust",
            ServerKind::Node => "node",
        }
    }
}

/// Options for the single-process fixtures.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Base URL for `/proxy/` (`UPSTREAM_URL`), e.g. `http://127.0.0.1:20001`.
    pub upstream: Option<String>,
    /// Extra environment for the server process (e.g. `OTEL_SERVICE_NAME`).
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments, after `--port N` (e.g. the TLS ones of [`crate::tls`]).
    pub args: Vec<String>,
}

impl ServerOpts {
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }
    /// Upstream on 127.0.0.1:`port`.
    pub fn upstream_port(self, port: u16) -> Self {
        self.upstream(format!("http://127.0.0.1:{port}"))
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
}

/// A running server process (process-group leader). Killed with its group on drop.
pub struct ServerProcess {
    child: Child,
    port: u16,
    name: String,
    output: Arc<OutputBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Pid of the spawned process (for nginx: the master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    /// `127.0.0.1:<port>` (for the Host header).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// Captured stdout+stderr.
    pub fn output(&self) -> String {
        self.output.text()
    }
    /// Basename of the process's executable.
    pub fn exe_name(&self) -> String {
        procs::exe_name(self.pid()).unwrap_or_default()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill_group(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: killpg on the process group we created for this child.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_group();
        if std::thread::panicking() {
            let out = self.output();
            if !out.trim().is_empty() {
                eprintln!(
                    "--- {} server output ---\n{}",
                    self.name,
                    crate::daemon::tail(&out, 4000)
                );
            }
        }
    }
}

/// Removes the test's own `OTEL_*`/`BEYLA_*` variables from a child's environment: a fixture
/// must not inherit the selection and exporter settings meant for the daemon.
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("BEYLA_") {
            cmd.env_remove(&*k);
        }
    }
}

/// How long a client fixture may take for its calls (one command, one run of a plan).
pub fn client_timeout() -> Duration {
    crate::scaled(Duration::from_secs(60))
}

/// A fixture process driven through its stdin (a client that waits for commands, `psql`
/// reading a script): all three streams piped (the owner takes stdout and stderr), the
/// environment cleaned, killed with the test process and, at the latest, on drop.
pub struct StdinChild {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
}

impl StdinChild {
    pub fn spawn(name: &str, mut cmd: Command) -> StdinChild {
        clean_env(&mut cmd);
        crate::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        StdinChild {
            stdin: child.stdin.take(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `port` accepts; why not, if the process exits first or [`start_timeout`]
    /// passes (the caller adds the output).
    pub fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + start_timeout();
        while !crate::port_accepts(port) {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the output readers catch up with what it printed last.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("exited with {st} before listening on {port}"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not listen on {port} within {:?}",
                    start_timeout()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Closes stdin and waits up to `timeout` for the exit status.
    pub fn close_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return Err("did not exit after stdin closed".to_owned()),
            }
        }
    }

    /// Closes stdin, kills the process if it still runs, and reaps it.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for StdinChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` in its own process group with captured output, waits until `port` accepts.
pub fn spawn_server(
    name: &str,
    mut cmd: Command,
    port: u16,
    dir: Option<tempfile::TempDir>,
) -> ServerProcess {
    clean_env(&mut cmd);
    crate::die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} server ({cmd:?}): {e}"));
    let output = Arc::new(OutputBuf::default());
    output.capture(child.stdout.take().unwrap(), None);
    output.capture(child.stderr.take().unwrap(), None);
    let mut sp = ServerProcess {
        child,
        port,
        name: name.to_string(),
        output,
        _dir: dir,
    };
    let deadline = Instant::now() + start_timeout();
    loop {
        if crate::port_accepts(port) {
            return sp;
        }
        if let Ok(Some(st)) = sp.child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "{name} server exited with {st} before accepting on port {port}:\n{}",
                sp.output()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{name} server did not accept on port {port} within {:?}:\n{}",
                start_timeout(),
                sp.output()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts a server of `kind` on `port`.
pub fn start(kind: ServerKind, port: u16, opts: &ServerOpts) -> ServerProcess {
    match kind {
        ServerKind::Python => python_with(port, opts),
        ServerKind::Go => go_with(port, opts),
        ServerKind::Rust => rust_with(port, opts),
        ServerKind::Node => node_with(port, opts),
    }
}

fn apply_opts(cmd: &mut Command, opts: &ServerOpts) {
    if let Some(u) = &opts.upstream {
        cmd.env("UPSTREAM_URL", u);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.args(&opts.args);
}

/// The real Python interpreter (symlinks and pyenv shims resolved), so the spawned pid is
/// the interpreter itself.
pub fn python_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os,sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("python3 not found ({e}): run tests/setup.sh"));
        assert!(out.status.success(), "python3 failed: {out:?}");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// Python `http.server` fixture (`servers/http_server.py`).
pub fn python(port: u16) -> ServerProcess {
    python_with(port, &ServerOpts::default())
}

pub fn python_with(port: u16, opts: &ServerOpts) -> ServerProcess {
    let mut cmd = Command::new(python_exe());
    cmd.arg("-u")
        .arg(crate::tests_dir().join("servers/http_server.py"))
        .args(["--port", &port.to_string()]);
    apply_opts(&mut cmd, opts);
    spawn_server("python", cmd, port, None)
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Builds `servers/go/main.go` (once per source version) and returns the binary
/// (`/tmp/beyla-rs-tests/go-<hash>/goserver`).
pub fn go_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = crate::tests_dir().join("servers/go/main.go");
        let code = fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let dir = PathBuf::from(format!("/tmp/beyla-rs-tests/go-{:016x}", fnv1a(&code)));
        let bin = dir.join("goserver");
        if bin.is_file() {
            return bin;
        }
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("goserver.tmp{}", std::process::id()));
        let mut cmd = Command::new("go");
        cmd.arg("build").arg("-o").arg(&tmp).arg(&src);
        cmd.current_dir(&dir).env("GO111MODULE", "off");
        if std::env::var_os("HOME").is_none() && std::env::var_os("GOCACHE").is_none() {
            cmd.env("GOCACHE", "/tmp/beyla-rs-tests/gocache");
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("`go` not found ({e}): run tests/setup.sh (installs golang-go)")
        });
        assert!(
            out.status.success(),
            "go build of {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &bin).unwrap();
        bin
    })
    .clone()
}

/// Go `net/http` fixture (`servers/go/main.go`).
pub fn go(port: u16) -> ServerProcess {
    go_with(port, &ServerOpts::default())
}

pub fn go_with(port: u16, opts: &ServerOpts) -> ServerProcess {
    let mut cmd = Command::new(go_server_bin());
    cmd.args(["-port", &port.to_string()]);
    apply_opts(&mut cmd, opts);
    spawn_server("go", cmd, port, None)
}

/// The `beyla-test-server` binary of this crate: `$BEYLA_TEST_SERVER_BIN`, else next to the
/// running test executable's `deps/` directory (cargo builds it for integration tests).
pub fn rust_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BEYLA_TEST_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut candidates = Vec::new();
    for anc in exe.ancestors().skip(1).take(3) {
        candidates.push(anc.join("beyla-test-server"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "beyla-test-server binary not found next to {} (looked at {candidates:?}); \
                 run the tests with `cargo test -p beyla-rs-tests`, which builds it, or set \
                 BEYLA_TEST_SERVER_BIN",
                exe.display()
            )
        })
}

/// Rust hyper fixture (`src/bin/beyla-test-server.rs`).
pub fn rust(port: u16) -> ServerProcess {
    rust_with(port, &ServerOpts::default())
}

pub fn rust_with(port: u16, opts: &ServerOpts) -> ServerProcess {
    let mut cmd = Command::new(rust_server_bin());
    cmd.args(["--port", &port.to_string()]);
    apply_opts(&mut cmd, opts);
    spawn_server("rust", cmd, port, None)
}

/// Node `http` fixture (`servers/node_server.js`). Panics when `node` is missing.
pub fn node(port: u16) -> ServerProcess {
    node_with(port, &ServerOpts::default())
}

pub fn node_with(port: u16, opts: &ServerOpts) -> ServerProcess {
    let node = which("node").unwrap_or_else(|| {
        panic!("`node` not found on PATH: run tests/setup.sh (installs nodejs)")
    });
    let mut cmd = Command::new(node);
    cmd.arg(crate::tests_dir().join("servers/node_server.js"))
        .args(["--port", &port.to_string()]);
    apply_opts(&mut cmd, opts);
    spawn_server("node", cmd, port, None)
}

/// First `name` on PATH (following symlinks is left to the caller).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Status codes nginx answers at `/status?respond=NNN` and `/status/NNN` (via `return`).
pub const NGINX_STATUSES: &[u16] = &[
    200, 201, 202, 204, 304, 400, 401, 403, 404, 409, 418, 429, 500, 502, 503, 504,
];

/// nginx options.
#[derive(Clone, Debug, Default)]
pub struct NginxOpts {
    /// Upstream for `/proxy/` and `/echo` (keep-alive pool of 8).
    pub upstream_port: Option<u16>,
    /// Worker processes (default 2).
    pub workers: Option<u32>,
}

/// nginx from Debian, master + workers, own prefix in a temp dir.
pub struct Nginx {
    proc_: ServerProcess,
    prefix: PathBuf,
}

impl Nginx {
    pub fn start(port: u16, opts: &NginxOpts) -> Nginx {
        Nginx::start_with(port, opts.workers.unwrap_or(2), |prefix| {
            nginx_conf(prefix, port, opts)
        })
    }

    /// [`Nginx::start`] with the nginx.conf that `conf` writes for the prefix directory (e.g.
    /// [`nginx_conf`] edited); `workers` must match its `worker_processes`.
    pub fn start_with(port: u16, workers: u32, conf: impl FnOnce(&Path) -> String) -> Nginx {
        let nginx = which("nginx")
            .unwrap_or_else(|| panic!("`nginx` not found: run tests/setup.sh (installs nginx)"));
        let dir = tempfile::Builder::new()
            .prefix("beyla-nginx-")
            .tempdir()
            .unwrap();
        let prefix = dir.path().to_path_buf();
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
        for sub in [
            "logs",
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            let p = prefix.join(sub);
            fs::create_dir_all(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        fs::set_permissions(prefix.join("tmp"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(prefix.join("nginx.conf"), conf(&prefix)).unwrap();
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("logs/error.log"));
        let proc_ = spawn_server("nginx", cmd, port, Some(dir));
        let n = Nginx { proc_, prefix };
        let want = workers as usize;
        let ok = crate::wait_until(start_timeout(), || n.worker_pids().len() == want);
        assert!(
            ok,
            "nginx did not start {want} workers: {:?}\n{}",
            n.worker_pids(),
            n.error_log()
        );
        n
    }

    pub fn port(&self) -> u16 {
        self.proc_.port()
    }
    pub fn master_pid(&self) -> u32 {
        self.proc_.pid()
    }
    /// Worker pids (children of the master).
    pub fn worker_pids(&self) -> Vec<u32> {
        procs::children_of(self.master_pid())
    }
    pub fn url(&self, path: &str) -> String {
        self.proc_.url(path)
    }
    pub fn host(&self) -> String {
        self.proc_.host()
    }
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }
    pub fn process(&self) -> &ServerProcess {
        &self.proc_
    }
}

fn worker_user() -> &'static str {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.starts_with("www-data:")) {
        "www-data"
    } else {
        "nobody"
    }
}

/// The nginx.conf the fixture uses (public so a test can print it).
pub fn nginx_conf(prefix: &Path, port: u16, opts: &NginxOpts) -> String {
    let p = prefix.display();
    let workers = opts.workers.unwrap_or(2);
    let mut s = String::new();
    let _ = write!(
        s,
        "daemon off;\nmaster_process on;\nworker_processes {workers};\nuser {};\n\
         pid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  default_type text/plain;\n  access_log {p}/logs/access.log;\n\
         \x20 client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n\
         \x20 scgi_temp_path {p}/tmp/scgi;\n  keepalive_requests 100000;\n  keepalive_timeout 120s;\n",
        worker_user()
    );
    if let Some(up) = opts.upstream_port {
        let _ = writeln!(
            s,
            "  upstream backend {{ server 127.0.0.1:{up}; keepalive 8; }}"
        );
    }
    let _ = writeln!(s, "  server {{\n    listen 127.0.0.1:{port};");
    s.push_str("    location = /hello { return 200 \"hello\\n\"; }\n");
    s.push_str("    location = /status {\n");
    for code in NGINX_STATUSES {
        if *code == 204 || *code == 304 {
            let _ = writeln!(s, "      if ($arg_respond = {code}) {{ return {code}; }}");
        } else {
            let _ = writeln!(
                s,
                "      if ($arg_respond = {code}) {{ return {code} \"status {code}\\n\"; }}"
            );
        }
    }
    s.push_str("      return 400 \"bad status\\n\";\n    }\n");
    for code in NGINX_STATUSES {
        if *code == 204 || *code == 304 {
            let _ = writeln!(s, "    location = /status/{code} {{ return {code}; }}");
        } else {
            let _ = writeln!(
                s,
                "    location = /status/{code} {{ return {code} \"status {code}\\n\"; }}"
            );
        }
    }
    if let Some(up) = opts.upstream_port {
        let proxy = format!(
            "proxy_http_version 1.1; proxy_set_header Connection \"\"; \
             proxy_set_header Host 127.0.0.1:{up};"
        );
        let _ = writeln!(
            s,
            "    location /proxy/ {{ proxy_pass http://backend/; {proxy} }}"
        );
        let _ = writeln!(
            s,
            "    location = /echo {{ proxy_pass http://backend/echo; {proxy} }}"
        );
    }
    s.push_str("    location / { return 404 \"not found\\n\"; }\n  }\n}\n");
    s
}

/// HAProxy from Debian in the foreground (`-db`, one process), `mode http`: every request to
/// 127.0.0.1:`port` goes unchanged (path, headers, `traceparent`) to the one server of its
/// backend, 127.0.0.1:`upstream_port`. No health checks: the upstream sees only what is
/// forwarded.
pub struct HaProxy {
    proc_: ServerProcess,
}

impl HaProxy {
    pub fn start(port: u16, upstream_port: u16) -> HaProxy {
        let haproxy = which("haproxy").unwrap_or_else(|| {
            panic!("`haproxy` not found: run tests/setup.sh (installs haproxy)")
        });
        let dir = tempfile::Builder::new()
            .prefix("beyla-haproxy-")
            .tempdir()
            .unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(&cfg, haproxy_cfg(port, upstream_port)).unwrap();
        let mut cmd = Command::new(haproxy);
        cmd.arg("-f").arg(&cfg).arg("-db");
        HaProxy {
            proc_: spawn_server("haproxy", cmd, port, Some(dir)),
        }
    }

    pub fn port(&self) -> u16 {
        self.proc_.port()
    }
    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }
    pub fn process(&self) -> &ServerProcess {
        &self.proc_
    }
}

/// The haproxy.cfg the fixture uses.
pub fn haproxy_cfg(port: u16, upstream_port: u16) -> String {
    format!(
        "global\n  maxconn 512\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n\
         \x20 timeout server 120s\n  timeout http-keep-alive 120s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  server up 127.0.0.1:{upstream_port}\n"
    )
}

/// `beyla-grpc-tonic`, built by cargo next to the test executable (or `$BEYLA_GRPC_TONIC_BIN`).
pub fn tonic_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BEYLA_GRPC_TONIC_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("beyla-grpc-tonic"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "beyla-grpc-tonic not found near {}; run the tests with `cargo test -p \
                 beyla-rs-tests`, which builds it, or set BEYLA_GRPC_TONIC_BIN",
                exe.display()
            )
        })
}
