//! Databases and caches for `tests/databases.rs`: private PostgreSQL, MariaDB, Redis and
//! Memcached servers from Debian's packages, the Python client and web app
//! (`servers/db_app.py`), an interactive `psql`, raw-protocol helpers, the spans each client
//! scenario must give, and the database span contract.
//!
//! Every server listens on 127.0.0.1 at a port of [`crate::free_port`] (never the protocol's
//! usual one, so the daemon must recognise the protocol from the bytes), keeps its data in a
//! temp dir removed on drop, is ready (answers its protocol) when its constructor returns, and
//! is stopped gracefully on drop (the group is killed if it lingers).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::daemon::{OutputBuf, tail};
use crate::expect::{resource_violations, time_violations};
use crate::fixtures::{self, ServerProcess, StdinChild, clean_env};
use crate::otlp::{ReceivedSpan, SpanKind, SpanStatus, dump_spans};

/// Password of the `postgres` role for TCP connections (SCRAM-SHA-256; local: trust).
pub const PG_PASSWORD: &str = "beyla-pg-pw";
/// The MariaDB account the clients use (`mysql_native_password`).
pub const MYSQL_USER: &str = "beyla";
pub const MYSQL_PASSWORD: &str = "beyla-my-pw";

/// How long a database server may take to start (initdb and mariadb-install-db included).
pub fn db_start_timeout() -> Duration {
    crate::scaled(Duration::from_secs(60))
}

pub use crate::fixtures::client_timeout;

/// Which database a [`DbServer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    MariaDb,
    Redis,
    Memcached,
}

impl DbKind {
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Postgres => "postgres",
            DbKind::MariaDb => "mariadbd",
            DbKind::Redis => "redis-server",
            DbKind::Memcached => "memcached",
        }
    }
    /// The signal that stops it cleanly (PostgreSQL: SIGINT is the fast shutdown).
    fn stop_signal(self) -> i32 {
        match self {
            DbKind::Postgres => libc::SIGINT,
            _ => libc::SIGTERM,
        }
    }
}

/// A running database server (its own process group), data in a temp dir.
pub struct DbServer {
    kind: DbKind,
    child: Child,
    port: u16,
    output: Arc<OutputBuf>,
    dir: Option<tempfile::TempDir>,
}

fn missing(what: &str, package: &str) -> ! {
    panic!("{what} not found: run tests/setup.sh (installs {package})")
}

/// Whether `p` is an executable file.
fn is_exe(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directory of Debian's newest PostgreSQL binaries (`/usr/lib/postgresql/<v>/bin`).
pub fn pg_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                is_exe(&bin.join("postgres")).then_some((v, bin))
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| missing("/usr/lib/postgresql/*/bin/postgres", "postgresql"))
}

/// The real `psql` (not Debian's `pg_wrapper` script): what `/proc/<pid>/exe` shows.
pub fn psql_path() -> PathBuf {
    pg_bindir().join("psql")
}

/// uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == user {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// Runs `cmd` to completion; panics with its output unless it succeeds. Returns stdout.
fn run_ok(what: &str, cmd: &mut Command) -> String {
    crate::die_with_parent(cmd, libc::SIGKILL);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl DbServer {
    /// Spawns `cmd` in its own group and waits until `ready` says the server answers.
    fn spawn(
        kind: DbKind,
        mut cmd: Command,
        port: u16,
        dir: tempfile::TempDir,
        ready: impl Fn(&DbServer) -> bool,
    ) -> DbServer {
        clean_env(&mut cmd);
        crate::die_with_parent(&mut cmd, libc::SIGKILL);
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({cmd:?}): {e}", kind.name()));
        let output = Arc::new(OutputBuf::default());
        output.capture(child.stdout.take().unwrap(), None);
        output.capture(child.stderr.take().unwrap(), None);
        let mut s = DbServer {
            kind,
            child,
            port,
            output,
            dir: Some(dir),
        };
        let deadline = Instant::now() + db_start_timeout();
        loop {
            if crate::port_accepts(port) && ready(&s) {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited with {st} before it was ready on port {port}:\n{}",
                    kind.name(),
                    s.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready on port {port} within {:?}:\n{}",
                kind.name(),
                db_start_timeout(),
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PostgreSQL: `initdb` (as the `postgres` user, SCRAM-SHA-256 over TCP) into a temp dir,
    /// then the postmaster on 127.0.0.1:`port` with its socket in that dir. Ready when
    /// `pg_isready` says it accepts connections.
    pub fn postgres(port: u16) -> DbServer {
        let bin = pg_bindir();
        let (uid, gid) =
            user_ids("postgres").unwrap_or_else(|| missing("user postgres", "postgresql"));
        let dir = tempfile::Builder::new()
            .prefix("beyla-pg-")
            .tempdir()
            .unwrap();
        chown(dir.path(), uid, gid);
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, PG_PASSWORD).unwrap();
        chown(&pwfile, uid, gid);
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .uid(uid)
            .gid(gid)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        clean_env(&mut initdb);
        run_ok("initdb", &mut initdb);
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.uid(uid).gid(gid).arg("-D").arg(&data);
        cmd.args(["-p", &port.to_string(), "-k"]).arg(dir.path());
        for setting in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "autovacuum=off",
            "max_connections=20",
            "shared_buffers=16MB",
        ] {
            cmd.args(["-c", setting]);
        }
        let pg_isready = bin.join("pg_isready");
        DbServer::spawn(DbKind::Postgres, cmd, port, dir, |_| {
            Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "2"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// MariaDB: `mariadb-install-db` into a temp dir, then `mariadbd` on 127.0.0.1:`port`
    /// running `init` (SQL) at start-up after creating the account [`MYSQL_USER`] (all
    /// privileges). Ready when that account can run a query.
    pub fn mariadb(port: u16, init: &str) -> DbServer {
        let install = fixtures::which("mariadb-install-db")
            .unwrap_or_else(|| missing("mariadb-install-db", "mariadb-server"));
        let mariadbd =
            fixtures::which("mariadbd").unwrap_or_else(|| missing("mariadbd", "mariadb-server"));
        let dir = tempfile::Builder::new()
            .prefix("beyla-mariadb-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]);
        clean_env(&mut cmd);
        run_ok("mariadb-install-db", &mut cmd);
        let init_file = dir.path().join("init.sql");
        fs::write(
            &init_file,
            format!(
                "CREATE USER '{MYSQL_USER}'@'127.0.0.1' IDENTIFIED BY '{MYSQL_PASSWORD}';\n\
                 GRANT ALL ON *.* TO '{MYSQL_USER}'@'127.0.0.1';\n{init}\n"
            ),
        )
        .unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", p("sock")))
            .arg(format!("--pid-file={}", p("mariadbd.pid")))
            .arg(format!("--init-file={}", init_file.display()))
            .args([
                "--user=root",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=20",
            ]);
        DbServer::spawn(DbKind::MariaDb, cmd, port, dir, |s| {
            s.mariadb_cmd("SELECT 1")
                .status()
                .is_ok_and(|st| st.success())
        })
    }

    /// Redis on 127.0.0.1:`port`, no persistence. Ready when it answers PING.
    pub fn redis(port: u16) -> DbServer {
        let bin = fixtures::which("redis-server")
            .unwrap_or_else(|| missing("redis-server", "redis-server"));
        let dir = tempfile::Builder::new()
            .prefix("beyla-redis-")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no", "--logfile", ""])
        .arg("--dir")
        .arg(dir.path());
        DbServer::spawn(DbKind::Redis, cmd, port, dir, |_| {
            redis_command(port, &["PING"]).is_ok_and(|r| r == b"+PONG\r\n")
        })
    }

    /// Memcached on 127.0.0.1:`port`, TCP only (`-U 0`). Ready when it answers `version`.
    pub fn memcached(port: u16) -> DbServer {
        let bin = fixtures::which("memcached").unwrap_or_else(|| missing("memcached", "memcached"));
        let dir = tempfile::Builder::new()
            .prefix("beyla-memcached-")
            .tempdir()
            .unwrap();
        let user = if user_ids("memcache").is_some() {
            "memcache"
        } else {
            "nobody"
        };
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1"])
            .args(["-m", "16", "-t", "2", "-u", user]);
        DbServer::spawn(DbKind::Memcached, cmd, port, dir, |_| {
            raw_exchange(port, b"version\r\n", b"\r\n").is_ok_and(|r| r.starts_with(b"VERSION "))
        })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Pid of the server (PostgreSQL: the postmaster).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Basename of its executable.
    pub fn exe_name(&self) -> String {
        crate::procs::exe_name(self.pid()).unwrap_or_default()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// What the server printed (PostgreSQL and Redis log to stderr/stdout; MariaDB too, as
    /// no `--log-error` is given).
    pub fn logs(&self) -> String {
        tail(&self.output.text(), 6000).to_owned()
    }

    /// `psql` as root over TCP (not selected by any test): `sql` in database `db`, unaligned
    /// tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        assert_eq!(self.kind, DbKind::Postgres);
        let mut cmd = Command::new(psql_path());
        cmd.env("PGPASSWORD", PG_PASSWORD)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-c", sql]);
        clean_env(&mut cmd);
        run_ok("psql", &mut cmd)
    }

    fn mariadb_cmd(&self, sql: &str) -> Command {
        let client =
            fixtures::which("mariadb").unwrap_or_else(|| missing("mariadb", "mariadb-client"));
        let mut cmd = Command::new(client);
        cmd.args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
        ])
        .args(["-u", MYSQL_USER])
        .arg(format!("-p{MYSQL_PASSWORD}"))
        .args(["-N", "-B", "-e", sql])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        clean_env(&mut cmd);
        cmd
    }

    /// The `mariadb` client as root (not selected by any test): runs `sql`, returns its output.
    pub fn mariadb_sql(&self, sql: &str) -> String {
        assert_eq!(self.kind, DbKind::MariaDb);
        let mut cmd = self.mariadb_cmd(sql);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        run_ok("mariadb", &mut cmd)
    }

    /// Stops the server with its clean-shutdown signal and waits (the group is killed after
    /// 20 s); returns how it exited. The temp dir goes with `self`.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, self.kind.stop_signal()) };
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(20));
        let st = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        // Whatever is left of the group (PostgreSQL's backends exit with the postmaster).
        // SAFETY: killpg on the process group created for this child.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        st
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        let st = self.stop_inner();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (port {}, stopped: {st:?}) ---\n{}",
                self.kind.name(),
                self.port,
                self.logs()
            );
        }
        drop(self.dir.take());
    }
}

/// One request–reply on a new connection: writes `req`, reads until the reply ends with
/// `end` (or the server closes). Errors are returned, never panicked on.
pub fn raw_exchange(port: u16, req: &[u8], end: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(crate::scaled(Duration::from_secs(5))))?;
    s.write_all(req)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(end) {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(out)
}

/// One Redis command (RESP array) on a new connection; the raw reply (one line: use it for
/// commands with simple replies).
pub fn redis_command(port: u16, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    raw_exchange(port, &req, b"\r\n")
}

/// Connects, writes `bytes` (as much as the server takes), half-closes, and reads until the
/// server closes or `timeout`. Never panics on I/O errors; returns what the server answered.
pub fn blast(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
    }
    out
}

/// `servers/db_app.py`.
pub fn db_app_script() -> PathBuf {
    crate::tests_dir().join("servers/db_app.py")
}

/// The Python client (`db_app.py client`): one JSON command a line on stdin, one JSON answer
/// a line on stdout. With a listening port it is instrumented by a daemon selecting that
/// port. It exits when [`DbClient::finish`] closes its stdin (killed on drop).
pub struct DbClient {
    proc: StdinChild,
    lines: Receiver<String>,
    stderr: Arc<OutputBuf>,
    seen: Vec<String>,
}

impl DbClient {
    /// Starts the client; with `listen`, it binds 127.0.0.1:`listen` first (returns once that
    /// port accepts). Its database connections are opened per command.
    pub fn spawn(listen: Option<u16>) -> DbClient {
        let mut cmd = Command::new(fixtures::python_exe());
        cmd.arg("-u").arg(db_app_script()).arg("client");
        if let Some(l) = listen {
            cmd.args(["--listen", &l.to_string()]);
        }
        // Library deprecation warnings would only clutter the failure output.
        cmd.env("PYTHONWARNINGS", "ignore");
        let mut proc = StdinChild::spawn("db_app.py", cmd);
        let (tx, lines) = mpsc::channel();
        let stdout = proc.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(OutputBuf::default());
        stderr.capture(proc.child.stderr.take().unwrap(), None);
        let mut c = DbClient {
            proc,
            lines,
            stderr,
            seen: Vec::new(),
        };
        if let Some(l) = listen
            && let Err(why) = c.proc.wait_listening(l)
        {
            panic!("db_app.py {why}:\n{}", c.output());
        }
        c
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Basename of the interpreter's executable (`process.executable.name` of its spans).
    pub fn exe_name(&self) -> String {
        crate::procs::exe_name(self.pid()).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.seen.join("\n"),
            tail(&self.stderr.text(), 4000)
        )
    }

    /// Runs one command (`{"run": scenario, …}`); returns its answer. Panics when the
    /// scenario failed (`"ok": false`) or gave no answer in time.
    pub fn run(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        let stdin = self.proc.stdin.as_mut().expect("client finished");
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("db_app.py: cannot write to stdin: {e}"));
        let line = match self.lines.recv_timeout(client_timeout()) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "db_app.py gave no answer to {cmd} within {:?}:\n{}",
                    client_timeout(),
                    self.output()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100));
                panic!("db_app.py exited while running {cmd}:\n{}", self.output())
            }
        };
        self.seen.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("db_app.py answered {line:?} (not JSON: {e})"));
        assert_eq!(
            v["ok"].as_bool(),
            Some(true),
            "db_app.py scenario {cmd} failed: {}\n{}",
            v["error"],
            v["trace"].as_str().unwrap_or("")
        );
        v
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) {
        match self.proc.close_and_wait(fixtures::start_timeout()) {
            Ok(st) => assert!(
                st.success(),
                "db_app.py exited with {st}:\n{}",
                self.output()
            ),
            Err(why) => panic!("db_app.py {why}:\n{}", self.output()),
        }
    }
}

impl Drop for DbClient {
    fn drop(&mut self) {
        self.proc.stop();
        if std::thread::panicking() {
            eprintln!("--- db_app.py client ---\n{}", self.output());
        }
    }
}

/// The web app (`db_app.py web`) on 127.0.0.1:`port`: `GET /shop/<name>` queries PostgreSQL
/// (database `shop`, table `items`) and Redis (`GET stock:<name>`).
pub fn web_app(port: u16, pg_port: u16, redis_port: u16) -> ServerProcess {
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg("-u")
        .arg(db_app_script())
        .args(["web", "--port", &port.to_string()])
        .args([
            "--pg-port",
            &pg_port.to_string(),
            "--redis-port",
            &redis_port.to_string(),
        ])
        .env("PGPASSWORD", PG_PASSWORD)
        .env("PYTHONWARNINGS", "ignore");
    fixtures::spawn_server("db web app", cmd, port, None)
}

/// An interactive `psql` (the real binary, [`psql_path`]) reading a script from its stdin:
/// connected to `db` at start, it waits for [`Psql::run`] to send it commands.
pub struct Psql {
    proc: StdinChild,
    output: Arc<OutputBuf>,
}

impl Psql {
    pub fn spawn(server: &DbServer, db: &str) -> Psql {
        let mut cmd = Command::new(psql_path());
        cmd.env("PGPASSWORD", PG_PASSWORD)
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &server.port().to_string(),
            ])
            .args(["-U", "postgres", "-d", db]);
        let mut proc = StdinChild::spawn("psql", cmd);
        let output = Arc::new(OutputBuf::default());
        output.capture(proc.child.stdout.take().unwrap(), None);
        output.capture(proc.child.stderr.take().unwrap(), None);
        Psql { proc, output }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends `script`, closes stdin and waits for psql to exit; returns its exit status and
    /// output (stdout and stderr).
    pub fn run(mut self, script: &str) -> (ExitStatus, String) {
        let stdin = self.proc.stdin.as_mut().expect("psql stdin");
        stdin
            .write_all(script.as_bytes())
            .unwrap_or_else(|e| panic!("psql: cannot write its script: {e}"));
        match self.proc.close_and_wait(client_timeout()) {
            Ok(st) => {
                std::thread::sleep(Duration::from_millis(50));
                (st, self.output.text())
            }
            Err(_) => panic!("psql did not finish its script:\n{}", self.output.text()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The database span contract.

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Span status not ERROR, no `db.response.status_code`.
    Ok,
    /// Span status ERROR and `db.response.status_code` = the code.
    Error(String),
    /// Span status ERROR; the status code is not part of the contract for this system
    /// (Memcached).
    ErrorAnyCode,
}

/// One database operation and the span it must give.
#[derive(Clone, Debug, PartialEq)]
pub struct DbOp {
    /// `db.system.name`.
    pub system: String,
    /// `db.operation.name`.
    pub operation: String,
    /// `db.collection.name` (`None`: the attribute must be absent).
    pub collection: Option<String>,
    /// `db.namespace` (`None`: not checked).
    pub namespace: Option<String>,
    /// `db.query.text`, exactly (`None`: not checked).
    pub query: Option<String>,
    pub outcome: Outcome,
}

impl DbOp {
    /// A SQL statement: `query` is the text as sent with every literal replaced by `?`.
    pub fn sql(
        system: &str,
        namespace: &str,
        operation: &str,
        collection: Option<&str>,
        query: &str,
    ) -> DbOp {
        DbOp {
            system: system.into(),
            operation: operation.into(),
            collection: collection.map(Into::into),
            namespace: Some(namespace.into()),
            query: Some(query.into()),
            outcome: Outcome::Ok,
        }
    }
    /// A Redis command in database `namespace`; `text` is the command and its first key
    /// (`db.query.text`), its first word the operation.
    pub fn redis(namespace: &str, text: &str) -> DbOp {
        DbOp {
            system: "redis".into(),
            operation: text.split(' ').next().unwrap().into(),
            collection: None,
            namespace: Some(namespace.into()),
            query: Some(text.into()),
            outcome: Outcome::Ok,
        }
    }
    /// A Memcached command; `text` is the command and its keys.
    pub fn memcached(text: &str) -> DbOp {
        DbOp {
            system: "memcached".into(),
            operation: text.split(' ').next().unwrap().into(),
            collection: None,
            namespace: None,
            query: Some(text.into()),
            outcome: Outcome::Ok,
        }
    }
    /// Ended with error `code`.
    pub fn error(mut self, code: &str) -> DbOp {
        self.outcome = Outcome::Error(code.into());
        self
    }
    /// Ended with an error whose code is not checked.
    pub fn error_any(mut self) -> DbOp {
        self.outcome = Outcome::ErrorAnyCode;
        self
    }
    /// Do not check `db.namespace` (e.g. Redis's `SELECT n` itself, between two databases).
    pub fn any_namespace(mut self) -> DbOp {
        self.namespace = None;
        self
    }
    /// Do not check `db.query.text`.
    pub fn any_query(mut self) -> DbOp {
        self.query = None;
        self
    }

    /// The span name: `"{operation} {collection}"`, else the operation.
    pub fn span_name(&self) -> String {
        match &self.collection {
            Some(c) => format!("{} {c}", self.operation),
            None => self.operation.clone(),
        }
    }

    fn is_error(&self) -> bool {
        !matches!(self.outcome, Outcome::Ok)
    }

    /// Whether `s` is this operation's span (name, operation, query text, namespace, outcome).
    pub fn matches(&self, s: &ReceivedSpan) -> bool {
        s.name == self.span_name()
            && s.attr_str("db.system.name") == Some(self.system.as_str())
            && s.attr_str("db.operation.name") == Some(self.operation.as_str())
            && s.attr_str("db.collection.name") == self.collection.as_deref()
            && self
                .query
                .as_ref()
                .is_none_or(|q| s.attr_str("db.query.text") == Some(q))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| s.attr_str("db.namespace") == Some(n))
            && (s.status_code == SpanStatus::Error) == self.is_error()
            && match &self.outcome {
                Outcome::Ok => s.attr("db.response.status_code").is_none(),
                Outcome::Error(c) => s.attr_str("db.response.status_code") == Some(c),
                Outcome::ErrorAnyCode => true,
            }
    }

    fn describe(&self) -> String {
        let mut d = format!(
            "{:?} [{}] op={}",
            self.span_name(),
            self.system,
            self.operation
        );
        if let Some(c) = &self.collection {
            d += &format!(" collection={c}");
        }
        if let Some(n) = &self.namespace {
            d += &format!(" namespace={n}");
        }
        if let Some(q) = &self.query {
            d += &format!(" query={q:?}");
        }
        match &self.outcome {
            Outcome::Ok => {}
            Outcome::Error(c) => d += &format!(" ERROR code={c}"),
            Outcome::ErrorAnyCode => d += " ERROR",
        }
        d
    }
}

/// Asserts that `spans` and `expected` match one to one (as multisets), reporting what is
/// missing and what is unexpected.
pub fn assert_db_spans_match(what: &str, spans: &[ReceivedSpan], expected: &[DbOp]) {
    let mut used = vec![false; spans.len()];
    let mut missing = Vec::new();
    // Strict expectations first, so that a loose one does not take a span a strict one needs.
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by_key(|&i| (expected[i].query.is_none(), expected[i].namespace.is_none()));
    for i in order {
        match (0..spans.len()).find(|&j| !used[j] && expected[i].matches(&spans[j])) {
            Some(j) => used[j] = true,
            None => missing.push(expected[i].describe()),
        }
    }
    let extra: Vec<ReceivedSpan> = spans
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(s, _)| s.clone())
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        panic!(
            "{what}: spans do not match: {} expected, {} received.\nmissing ({}):\n  {}\n\
             unexpected ({}):\n{}\nall received:\n{}",
            expected.len(),
            spans.len(),
            missing.len(),
            missing.join("\n  "),
            extra.len(),
            dump_spans(&extra),
            dump_spans(spans)
        );
    }
}

/// Where a span must say it went: the database's port, and who made or served it.
#[derive(Clone, Debug)]
pub struct DbSide {
    pub kind: SpanKind,
    /// The database server's port (`server.port`).
    pub db_port: u16,
    /// `process.pid` (`None`: not checked, e.g. PostgreSQL's backends, forked per connection).
    pub pid: Option<u32>,
    /// `process.executable.name`.
    pub exe: String,
}

/// Violations of the database span contract by one span, whatever its operation: kind,
/// system, name from operation and collection, `server.address` (CLIENT: 127.0.0.1; SERVER:
/// 127.0.0.1 or the host name) and `server.port`, SERVER spans' `client.address`, status code only with ERROR, no HTTP or RPC attribute, times, resource.
pub fn db_span_violations(s: &ReceivedSpan, side: &DbSide) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            v.push(format!("{what} in {}", s.summary()));
        }
    };
    check(s.kind == side.kind, format!("kind is not {:?}", side.kind));
    check(
        s.attr_str("db.system.name").is_some_and(|x| !x.is_empty()),
        "db.system.name missing".into(),
    );
    let op = s.attr_str("db.operation.name").unwrap_or("");
    check(!op.is_empty(), "db.operation.name missing".into());
    let want = match s.attr_str("db.collection.name") {
        Some(c) => format!("{op} {c}"),
        None => op.to_string(),
    };
    check(s.name == want, format!("name is not {want:?}"));
    // CLIENT: the address the app connected to. SERVER: the database's own address, which
    // the contract does not pin between the listening address and the host's name (the
    // daemon's HTTP SERVER spans fall back to the host name too): either, never anything else.
    let host = crate::procs::hostname();
    let address_ok = match s.attr_str("server.address") {
        Some("127.0.0.1") => true,
        Some(a) => side.kind == SpanKind::Server && a == host,
        None => false,
    };
    check(
        address_ok,
        if side.kind == SpanKind::Server {
            format!("server.address is neither \"127.0.0.1\" nor the host name {host:?}")
        } else {
            "server.address is not \"127.0.0.1\"".into()
        },
    );
    check(
        s.attr_int("server.port") == Some(i64::from(side.db_port)),
        format!("server.port is not {}", side.db_port),
    );
    if side.kind == SpanKind::Server {
        check(
            s.attr_str("client.address") == Some("127.0.0.1"),
            "client.address is not \"127.0.0.1\"".into(),
        );
    }
    check(
        s.attr("db.response.status_code").is_none() || s.status_code == SpanStatus::Error,
        "db.response.status_code on a span whose status is not ERROR".into(),
    );
    for k in s.attrs.keys() {
        check(
            !k.starts_with("http.") && !k.starts_with("url.") && !k.starts_with("rpc."),
            format!("attribute {k} does not belong on a database span"),
        );
    }
    v.extend(time_violations(s));
    if let Some(pid) = side.pid {
        v.extend(resource_violations(s, pid, &side.exe));
    } else if s.res_str("process.executable.name") != Some(side.exe.as_str()) {
        v.push(format!(
            "process.executable.name is not {:?} in {}",
            side.exe,
            s.summary()
        ));
    }
    v
}

/// Panics listing every contract violation of `spans` (see [`db_span_violations`]) and every
/// attribute or resource value that contains one of `literals` (values the statements carried
/// that must never be exported).
pub fn check_db_spans(spans: &[ReceivedSpan], side: &DbSide, literals: &[&str]) {
    let mut v = Vec::new();
    for s in spans {
        v.extend(db_span_violations(s, side));
        for (k, val) in s.attrs.iter().chain(&s.resource) {
            let text = val.to_string();
            for lit in literals {
                if text.contains(lit) {
                    v.push(format!(
                        "literal {lit:?} exported in {k}={text} of {}",
                        s.summary()
                    ));
                }
            }
        }
    }
    if !v.is_empty() {
        let n = v.len();
        let shown: Vec<String> = v.into_iter().take(50).collect();
        panic!(
            "{n} database span contract violation(s):\n  {}",
            shown.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------
// What each client scenario of db_app.py sends, as the spans it must give.

/// Schema of the PostgreSQL tests (database `shop`, run by [`DbServer::psql`]).
pub const PG_SCHEMA: &str = "CREATE TABLE items (id integer PRIMARY KEY, name text, secret text)";

/// `run_pg` of db_app.py, in database `ns`: 16 statements, one span each.
pub fn pg_scenario_ops(ns: &str) -> Vec<DbOp> {
    let pg = |op: &str, coll: Option<&str>, q: &str| DbOp::sql("postgresql", ns, op, coll, q);
    let mut ops = Vec::new();
    for _ in 0..3 {
        ops.push(pg(
            "INSERT",
            Some("items"),
            "INSERT INTO items (id, name, secret) VALUES ($1, $2, $3)",
        ));
    }
    for _ in 0..4 {
        ops.push(pg(
            "SELECT",
            Some("items"),
            "SELECT name FROM items WHERE id = $1",
        ));
    }
    // prepare=True: parsed once as a named statement, executed three times.
    for _ in 0..3 {
        ops.push(pg(
            "SELECT",
            Some("items"),
            "SELECT secret FROM items WHERE id = $1",
        ));
    }
    ops.push(pg("SELECT", Some("items"), "SELECT count(*) FROM items"));
    ops.push(
        pg(
            "SELECT",
            Some("missing_table"),
            "SELECT * FROM missing_table WHERE id = $1",
        )
        .error("42P01"),
    );
    ops.push(pg("BEGIN", None, "BEGIN"));
    ops.push(pg(
        "UPDATE",
        Some("items"),
        "UPDATE items SET name = $1 WHERE id = $2",
    ));
    ops.push(pg("COMMIT", None, "COMMIT"));
    ops.push(pg(
        "DELETE",
        Some("items"),
        "DELETE FROM items WHERE id = $1",
    ));
    assert_eq!(ops.len(), 16);
    ops
}

/// The MariaDB tests' start-up SQL: databases `shop` (table `items`) and `other` (`notes`).
pub const MARIADB_INIT: &str = "CREATE DATABASE shop;\n\
    CREATE DATABASE other;\n\
    CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64), secret VARCHAR(64));\n\
    CREATE TABLE other.notes (id INT PRIMARY KEY, body TEXT);";

/// `run_mysql` of db_app.py against MariaDB: 13 spans (see its doc). `SET` statements and
/// `USE` name no table; `USE other` itself is not checked for its namespace (it switches it).
pub fn mysql_scenario_ops() -> Vec<DbOp> {
    let my =
        |ns: &str, op: &str, coll: Option<&str>, q: &str| DbOp::sql("mariadb", ns, op, coll, q);
    let ops = vec![
        // PyMySQL
        my("shop", "SET", None, "SET NAMES utf8mb4"),
        my("shop", "SET", None, "SET AUTOCOMMIT = ?"),
        my(
            "shop",
            "INSERT",
            Some("items"),
            "INSERT INTO items (id, name, secret) VALUES (?, ?, ?)",
        ),
        my(
            "shop",
            "SELECT",
            Some("items"),
            "SELECT name FROM items WHERE id = ?",
        ),
        my(
            "shop",
            "SELECT",
            Some("missing_table"),
            "SELECT * FROM missing_table",
        )
        .error("1146"),
        my("shop", "COMMIT", None, "COMMIT"),
        my("shop", "USE", None, "USE other").any_namespace(),
        my(
            "other",
            "SELECT",
            Some("notes"),
            "SELECT COUNT(*) FROM notes",
        ),
        // mysql-connector-python: its two SETs at connect, then the prepared statements.
        my("shop", "SET", None, "SET NAMES ? COLLATE ?"),
        my("shop", "SET", None, "SET @@session.autocommit = OFF"),
        my(
            "shop",
            "SELECT",
            Some("items"),
            "SELECT name FROM items WHERE id = ?",
        ),
        my(
            "shop",
            "SELECT",
            Some("items"),
            "SELECT name FROM items WHERE id = ?",
        ),
        my(
            "other",
            "SELECT",
            Some("notes"),
            "SELECT body FROM notes WHERE id = ?",
        ),
    ];
    assert_eq!(ops.len(), 8 + 2 + 3);
    ops
}

/// `run_redis` of db_app.py: 23 commands, one span each.
pub fn redis_scenario_ops() -> Vec<DbOp> {
    let r0 = |t: &str| DbOp::redis("0", t);
    let mut ops = vec![
        r0("SET user:1"),
        r0("GET user:1"),
        r0("GET missing:key"),
        r0("HSET profile:1"),
        r0("HGETALL profile:1"),
    ];
    ops.extend((0..10).map(|i| r0(&format!("SET pipe:{i}"))));
    ops.extend([
        r0("MULTI"),
        r0("INCRBY tx:counter"),
        r0("GET tx:counter"),
        r0("EXEC"),
    ]);
    ops.push(r0("LPUSH user:1").error("WRONGTYPE"));
    ops.push(r0("SELECT").any_namespace().any_query());
    ops.push(DbOp::redis("2", "SET other:1"));
    ops.push(DbOp::redis("2", "GET other:1"));
    assert_eq!(ops.len(), 23);
    ops
}

/// `run_memcached` of db_app.py: 11 commands, one span each.
pub fn memcached_scenario_ops() -> Vec<DbOp> {
    let m = DbOp::memcached;
    let ops = vec![
        m("set k1"),
        m("set k2"),
        m("set k3"),
        m("get k1"),
        m("get k1 k2 k3"),
        m("get missing"),
        m("delete k2"),
        m("set counter"),
        m("incr counter"),
        m("incr nosuch"),
        m("incr k1").error_any(),
    ];
    assert_eq!(ops.len(), 11);
    ops
}

/// Counts of `ops` per metric attribute set: (system, operation, collection, namespace,
/// status code), with `""` for an absent attribute.
pub fn op_counts(ops: &[DbOp]) -> BTreeMap<[String; 5], u64> {
    let mut m = BTreeMap::new();
    for op in ops {
        let code = match &op.outcome {
            Outcome::Error(c) => c.clone(),
            _ => String::new(),
        };
        let key = [
            op.system.clone(),
            op.operation.clone(),
            op.collection.clone().unwrap_or_default(),
            op.namespace
                .clone()
                .expect("metric counts need a known namespace"),
            code,
        ];
        *m.entry(key).or_insert(0) += 1;
    }
    m
}
