//! The database rows of `cargo xtask bench`: a private PostgreSQL under `pgbench -S` at a fixed
//! rate, and a private Redis under `redis-benchmark -t get,set`, each without and with the
//! daemon in counterbalanced rounds like the other rows, medians. The daemon selects the
//! server by its port (`BEYLA_OPEN_PORT`), so it traces the server side of every query.
//!
//! - PostgreSQL: the Debian server binaries (`/usr/lib/postgresql/<version>/bin`), `initdb`
//!   into a temporary directory as the `postgres` user (the server refuses root), the server
//!   on a free port of 127.0.0.1 with its Unix socket in that directory, `pgbench -i -s 1`
//!   over the socket (100,000 accounts). `fsync` is off (nothing here needs the data to
//!   survive) and autovacuum off (a read-only load leaves it nothing to do, and its wake-ups
//!   would be server CPU that no query caused).
//! - The load: `pgbench -S -M simple -R <rate> -c <clients> -j 1 -T <round>` over TCP
//!   (the selected port; libpq's defaults, so each connection opens with an SSLRequest that
//!   the server declines). Each select-only transaction is one `SELECT`, sent as one simple
//!   Query message: one span. pgbench also sends [`PGBENCH_SETUP_QUERIES`] queries on a
//!   connection of its own before the run (the branch count and the partitioning of
//!   `pgbench_accounts`, seen with `log_statement=all`); `-n` leaves out its vacuums.
//!   pgbench's rate limit is a schedule (Poisson arrivals at the target rate); it reports
//!   the transactions completed, which every per-query figure is divided by.
//! - PostgreSQL forks a backend per connection, and pgbench's backends exit when it
//!   disconnects, before anything could read their `/proc` entries. The server's CPU is the
//!   scheduler runtime (as in the other rows) of the postmaster and every live descendant,
//!   plus the postmaster's `cutime + cstime`: the CPU of the children it has reaped, which
//!   the kernel keeps as their scheduler runtime (split into user and system time) and shows
//!   in clock ticks (10 ms, so at most 10 ms off per round). It is read only when no client
//!   backend is left (after a run, once the postmaster has reaped them all), so that no
//!   process is counted both live and reaped. It includes pgbench's connection start-ups.
//! - Redis: `redis-server --save "" --appendonly no` on a free port (and a Unix socket in its
//!   temporary directory), as root. `redis-benchmark` has no rate limit: each side runs a
//!   fixed amount of work (`-n <requests> -c <clients> -t get,set -P 1`: that many `SET`s,
//!   then as many `GET`s, one command per round trip) at saturation, and every figure is per
//!   request. The server's CPU is its threads' scheduler runtime; it forks nothing (no
//!   snapshots).
//! - A working capture: in each instrumented round the spans received must match the
//!   operations. pgbench: its transactions completed plus its set-up queries, up to one more
//!   per client (a transaction answered but not counted when the run stopped; pgbench
//!   finishes them, so this has not been seen). Redis: exactly the commands the server
//!   executed, from `INFO commandstats` (over the Unix socket, `INFO` itself left out) read
//!   before the daemon starts and after it stopped: the daemon traces every connection of
//!   the selected process, the Unix socket's too. That is `redis-benchmark`'s requests plus
//!   what it asks first (`CONFIG GET save` and `appendonly` in version 7). A row whose
//!   capture fails in any round is run to its end, then fails the run with every round's
//!   counts.
//! - BPF time: the daemon's programs by the ids it holds; the rest of the machine's share
//!   from the programs' time per second without load, measured before each round. The load
//!   generator's own runs (pgbench and redis-benchmark are not selected, but the syscall
//!   backend's programs run for every syscall) are in the total, not separated.
//! - Alone: another `beyla-rs` on the machine (a test suite's, say) runs its programs for the
//!   server's syscalls too, whichever side is measured. Each side waits until no other one
//!   runs, watches for one while it runs, and is run again (up to [`ATTEMPTS`] times) when
//!   one appeared.
//!
//! Nothing is installed here: missing tools fail the run with the Debian packages to install.
//! Servers are stopped and their directories removed when a row ends, also on error.

use std::{
    fs::File,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Daemon, Delivery, ROUNDS, Receiver, Side, bpf_background, bpf_time, cpu_seconds, finish_round,
    free_port,
    https::{ATTEMPTS, Watch, wait_alone},
    kill, median, order, status_kb,
};

/// The rows, by their `--only` names.
pub(super) const ROWS: [&str; 2] = ["pgbench", "redis"];

/// pgbench's target rate (transactions = queries per second) and connections.
pub(super) const PG_RATE: u64 = 2_000;
pub(super) const PG_CLIENTS: usize = 8;
/// Queries pgbench (13 and later) sends before the run on a connection of its own: `select
/// count(*) from pgbench_branches` and one on `pg_catalog` for the partitioning of
/// `pgbench_accounts`.
const PGBENCH_SETUP_QUERIES: u64 = 2;

/// redis-benchmark's connections.
pub(super) const REDIS_CLIENTS: usize = 8;
/// Requests of each command (`SET`, `GET`) per second of the round's nominal length: about
/// half of it unloaded on this machine, as each side is a fixed amount of work.
const REDIS_REQUESTS_PER_SECOND: u64 = 15_000;

/// Fails, naming the Debian packages, when a tool of the selected rows is missing.
pub(super) fn check_tools(pg: bool, redis: bool) -> Result<()> {
    let mut missing = Vec::new();
    if !on_path("bpftool") {
        missing.push("bpftool (package bpftool)".to_owned());
    }
    if pg {
        if let Err(e) = pg_bindir() {
            missing.push(format!("{e:#}"));
        } else if user_ids("postgres").is_err() {
            missing.push(
                "the `postgres` user (created by the package postgresql-<version>)".to_owned(),
            );
        }
    }
    if redis {
        if !on_path("redis-server") {
            missing.push("redis-server (package redis-server)".to_owned());
        }
        for bin in ["redis-benchmark", "redis-cli"] {
            if !on_path(bin) {
                missing.push(format!("{bin} (package redis-tools)"));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "the database rows need, and not found even after installing them:\n  {}\n(apt-get install \
             postgresql postgresql-contrib redis-server redis-tools bpftool)",
            missing.join("\n  ")
        );
    }
    Ok(())
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            d.join(bin)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The directory with `postgres`, `initdb` and `pgbench`: Debian's
/// `/usr/lib/postgresql/<major>/bin` (the newest major), else `postgres`'s own directory
/// on the PATH. Debian's `/usr/bin/pgbench` is a wrapper that picks a version by the
/// clusters it knows of, none of which is ours.
fn pg_bindir() -> Result<PathBuf> {
    let has_all = |d: &Path| {
        ["postgres", "initdb", "pgbench"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((major, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    if let Some(dir) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .filter_map(|d| std::fs::canonicalize(d.join("postgres")).ok())
            .find_map(|p| p.parent().filter(|d| has_all(d)).map(Path::to_path_buf))
    }) {
        return Ok(dir);
    }
    bail!(
        "PostgreSQL's postgres, initdb and pgbench (in /usr/lib/postgresql/<version>/bin: \
         packages postgresql and, for pgbench on older releases, postgresql-contrib)"
    )
}

/// (uid, gid) of `user`, from `getent passwd`.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .context("running getent")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.trim().split(':').collect();
    match (
        f.get(2).and_then(|v| v.parse().ok()),
        f.get(3).and_then(|v| v.parse().ok()),
    ) {
        (Some(uid), Some(gid)) if out.status.success() => Ok((uid, gid)),
        _ => bail!("no user {user:?}"),
    }
}

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(name);
        // A leftover of a run that was killed (same port, so not in use now).
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every descendant of `pid`, through each thread's `children` (a child belongs to the thread
/// that forked it).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in kids
                .split_whitespace()
                .filter_map(|v| v.parse::<u32>().ok())
            {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// CPU seconds of the children `pid` has reaped (and of theirs): `cutime + cstime` of
/// `/proc/<pid>/stat`, in clock ticks of 10 ms (`USER_HZ`).
fn reaped_cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = s.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17 (1-based); after ')' the state (3) is index 0.
    (ticks(13) + ticks(14)) / 100.0
}

/// `<name> <version>` from `bin --version`: the word after `marker` in its first line
/// (`postgres (PostgreSQL) 15.18 (Debian …)`, `Redis server v=7.0.15 sha=…`).
fn version_of(bin: &Path, name: &str, marker: &str) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let first = out.lines().next().unwrap_or("").trim();
    match first.split_once(marker) {
        Some((_, rest)) => format!(
            "{name} {}",
            rest.split_whitespace().next().unwrap_or("").trim()
        ),
        None => first.to_owned(),
    }
}

/// Stops `child`: `sig`, and SIGKILL after 15 s, then also to `also` (its descendants as
/// they were before, which might outlive it holding the port). A server that stops by
/// itself has stopped its own processes: nothing else is signalled (their ids may be
/// reused by then).
fn stop_child(child: &mut Child, sig: i32, also: &[u32]) {
    // SAFETY: signalling our own child.
    unsafe { kill(child.id() as i32, sig) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            for &p in also {
                // SAFETY: processes the server forked, seen just before the stop.
                unsafe { kill(p as i32, 9) };
            }
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A server under test.
trait Server {
    fn port(&self) -> u16;
    /// CPU seconds it used so far, all its processes and threads. Read only when it is idle.
    fn cpu(&self) -> f64;
    /// Runs the load once, and returns once the server is idle again.
    fn load(&self, dur: Duration) -> Result<LoadRun>;
    /// Operations the server counts as executed so far, when it counts them. Read when no
    /// daemon runs: the read itself is an operation on a connection of the server's.
    fn executed(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// What one load run did.
struct LoadRun {
    /// Operations completed: pgbench's transactions (one query each), redis-benchmark's
    /// requests.
    ops: u64,
    /// Operations per second (the generator's own figure).
    rate: f64,
    /// Mean latency (ms) as the generator reports it.
    latency_ms: f64,
    /// Wall time of the run, start-up included.
    elapsed: Duration,
    /// The spans the daemon must have made for this run: at least, at most (unless the
    /// server counts what it executed: [`Server::executed`]).
    spans_min: u64,
    spans_max: u64,
}

/// A private PostgreSQL (see the module's documentation).
struct Postgres {
    child: Option<Child>,
    port: u16,
    bindir: PathBuf,
    /// Its descendants with no client connected (the auxiliary processes: checkpointer,
    /// background writer, WAL writer, …): what it returns to after a run.
    idle: Vec<u32>,
    version: String,
    // Last: removed after the server stopped (fields drop after `Drop::drop`).
    dir: TempDir,
}

impl Postgres {
    fn start() -> Result<Self> {
        let bindir = pg_bindir()?;
        let (uid, gid) = user_ids("postgres")?;
        let port = free_port()?;
        let dir = TempDir::new(&format!("beyla-bench-pg-{port}"))?;
        std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))?;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))?;
        let data = dir.0.join("data");
        let as_postgres = |bin: &str| {
            let mut c = Command::new(bindir.join(bin));
            c.uid(uid)
                .gid(gid)
                .current_dir(&dir.0)
                .env("LC_ALL", "C")
                .stdin(Stdio::null());
            c
        };
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log_path = dir.0.join("postgres.log");
        let log = File::create(&log_path)?;
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir.0)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "autovacuum=off"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let version = version_of(&bindir.join("postgres"), "PostgreSQL", "(PostgreSQL)");
        let mut pg = Self {
            child: Some(child),
            port,
            bindir,
            idle: Vec::new(),
            version,
            dir,
        };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // Ready: pg_isready over the Unix socket (the postmaster accepts on its port before
        // it can serve).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg.bindir.join("pg_isready"))
                .args(["-q", "-h"])
                .arg(&pg.dir.0)
                .args(["-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Some(st) = pg.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("postgres exited ({st}):\n{}", log());
            }
            if Instant::now() > deadline {
                bail!("postgres not ready within 30 s:\n{}", log());
            }
            thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new(pg.bindir.join("pgbench"))
            .args(["-i", "-s", "1", "-q", "-h"])
            .arg(&pg.dir.0)
            .args(["-p", &port.to_string(), "-U", "postgres", "postgres"])
            .output()
            .context("running pgbench -i")?;
        if !out.status.success() {
            bail!(
                "pgbench -i failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log()
            );
        }
        // The idle set: the descendants once they stayed the same for a second (the
        // backends of pg_isready and pgbench -i have exited by then).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Vec::new();
        let mut stable_since = Instant::now();
        loop {
            let mut now = descendants(pg.pid());
            now.sort_unstable();
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_secs(1) {
                break;
            }
            if Instant::now() > deadline {
                bail!("postgres's processes did not settle within 30 s: {last:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        pg.idle = last;
        Ok(pg)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until every client backend has exited and been reaped.
    fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let extra: Vec<u32> = descendants(self.pid())
                .into_iter()
                .filter(|p| !self.idle.contains(p))
                .collect();
            if extra.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let names: Vec<String> = extra
                    .iter()
                    .map(|p| {
                        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                        format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
                    })
                    .collect();
                bail!("postgres processes still there 10 s after pgbench exited: {names:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server for Postgres {
    fn port(&self) -> u16 {
        self.port
    }

    fn cpu(&self) -> f64 {
        let pm = self.pid();
        let live: f64 = std::iter::once(pm)
            .chain(descendants(pm))
            .map(cpu_seconds)
            .sum();
        live + reaped_cpu_seconds(pm)
    }

    fn load(&self, dur: Duration) -> Result<LoadRun> {
        let t = Instant::now();
        let out = Command::new(self.bindir.join("pgbench"))
            .args(["-S", "-n", "-M", "simple"])
            .args(["-R", &PG_RATE.to_string(), "-c", &PG_CLIENTS.to_string()])
            .args(["-j", "1", "-T", &dur.as_secs().max(1).to_string()])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "postgres"])
            .stdin(Stdio::null())
            .output()
            .context("running pgbench")?;
        let elapsed = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let p = parse_pgbench(&text)?;
        self.settle()?;
        Ok(LoadRun {
            ops: p.transactions,
            rate: p.tps,
            latency_ms: p.latency_ms,
            elapsed,
            spans_min: p.transactions + PGBENCH_SETUP_QUERIES,
            spans_max: p.transactions + PGBENCH_SETUP_QUERIES + PG_CLIENTS as u64,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let all = descendants(c.id());
            // SIGINT: fast shutdown (clients disconnected, a checkpoint, exit).
            stop_child(&mut c, 2, &all);
        }
    }
}

/// pgbench's summary.
struct Pgbench {
    transactions: u64,
    tps: f64,
    latency_ms: f64,
}

fn parse_pgbench(text: &str) -> Result<Pgbench> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    };
    // "number of transactions actually processed: 19985" (or "19985/20000" with -t).
    let transactions = field("number of transactions actually processed:")
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no transaction count in pgbench's output:\n{text}"))?;
    // 15 and later; a failed transaction is a query that got no answer to trace.
    if let Some(failed) = field("number of failed transactions:")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        && failed > 0
    {
        bail!("pgbench: {failed} failed transactions:\n{text}");
    }
    // "tps = 1971.922761 (without initial connection time)"
    let tps = field("tps =")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{text}"))?;
    // "latency average = 0.323 ms" (from each transaction's scheduled start under -R)
    let latency_ms = field("latency average =")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Pgbench {
        transactions,
        tps,
        latency_ms,
    })
}

/// A private Redis (see the module's documentation).
struct Redis {
    child: Option<Child>,
    port: u16,
    sock: PathBuf,
    version: String,
    // Last: removed after the server stopped.
    dir: TempDir,
}

impl Redis {
    fn start() -> Result<Self> {
        let port = free_port()?;
        let dir = TempDir::new(&format!("beyla-bench-redis-{port}"))?;
        let sock = dir.0.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&dir.0)
            .arg("--logfile")
            .arg(dir.0.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let mut r = Self {
            child: Some(child),
            port,
            sock,
            version: version_of(Path::new("redis-server"), "Redis", "v="),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cli(&["ping"]).map(|o| o.trim() == "PONG") != Ok(true) {
            let log = || std::fs::read_to_string(r.dir.0.join("redis.log")).unwrap_or_default();
            if let Some(st) = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("redis-server exited ({st}):\n{}", log());
            }
            if Instant::now() > deadline {
                bail!("redis-server not ready within 10 s:\n{}", log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `redis-cli` over the Unix socket (not selected: the daemon does not see it).
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Commands the server has executed, `INFO` left out.
    fn commands(&self) -> Result<u64> {
        let text = self
            .cli(&["info", "commandstats"])
            .map_err(|e| anyhow::anyhow!("redis-cli info commandstats: {e}"))?;
        Ok(commands_executed(&text))
    }
}

/// The calls of every command in `INFO commandstats`, except `INFO`'s.
fn commands_executed(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| *name != "info")
        .filter_map(|(_, stats)| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

impl Server for Redis {
    fn port(&self) -> u16 {
        self.port
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    fn load(&self, dur: Duration) -> Result<LoadRun> {
        let n = REDIS_REQUESTS_PER_SECOND * dur.as_secs().max(1);
        let t = Instant::now();
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &n.to_string(), "-c", &REDIS_CLIENTS.to_string()])
            .args(["-t", "get,set", "-P", "1"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-benchmark (apt-get install redis-tools)")?;
        let elapsed = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "redis-benchmark failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let b = parse_redis_benchmark(&text)?;
        if b.requests != 2 * n {
            bail!(
                "redis-benchmark completed {} requests of {}:\n{}",
                b.requests,
                2 * n,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(LoadRun {
            ops: b.requests,
            rate: b.requests as f64 / b.seconds,
            latency_ms: b.latency_ms,
            elapsed,
            spans_min: b.requests,
            spans_max: b.requests,
        })
    }

    fn executed(&self) -> Result<Option<u64>> {
        self.commands().map(Some)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: exits at once (nothing to save).
            stop_child(&mut c, 15, &[]);
        }
    }
}

/// redis-benchmark's summary over its tests.
struct RedisBenchmark {
    /// Requests completed, all tests.
    requests: u64,
    /// Their time, all tests.
    seconds: f64,
    /// Mean of the tests' average latencies, weighted by their requests.
    latency_ms: f64,
}

fn parse_redis_benchmark(text: &str) -> Result<RedisBenchmark> {
    let (mut requests, mut seconds, mut weighted) = (0u64, 0.0f64, 0.0f64);
    let mut lines = text.lines().map(str::trim);
    let mut last = 0u64;
    while let Some(l) = lines.next() {
        // "20000 requests completed in 0.41 seconds"
        if let Some((n, rest)) = l.split_once(" requests completed in ") {
            let n: u64 = n.trim().parse().context("redis-benchmark request count")?;
            let s: f64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("redis-benchmark duration")?;
            requests += n;
            seconds += s;
            last = n;
        }
        // "latency summary (msec):", a header line, then "avg min p50 …" values.
        if l.starts_with("latency summary") {
            let _header = lines.next();
            let avg: f64 = lines
                .next()
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            weighted += avg * last as f64;
        }
    }
    if requests == 0 || seconds <= 0.0 {
        bail!("no completed requests in redis-benchmark's output:\n{text}");
    }
    Ok(RedisBenchmark {
        requests,
        seconds,
        latency_ms: weighted / requests as f64,
    })
}

#[derive(Default, Clone, serde::Serialize)]
pub(super) struct DbResult {
    pub label: String,
    pub server: String,
    /// Target operations per second; `None`: saturation (a fixed amount of work).
    pub target_rate: Option<u64>,
    pub clients: usize,
    /// Operations per second (the generator's), medians over the rounds.
    pub achieved_rate_base: f64,
    pub achieved_rate_inst: f64,
    /// Operations completed.
    pub ops_base: u64,
    pub ops_inst: u64,
    /// Spans the instrumented rounds had to produce, summed: at least, at most.
    pub spans_min: u64,
    pub spans_max: u64,
    pub delivery: Delivery,
    /// Per operation completed, medians: the server (all its processes), the daemon.
    pub server_cpu_us_per_op_base: f64,
    pub server_cpu_us_per_op_inst: f64,
    pub daemon_cpu_us_per_op: f64,
    /// The daemon's programs, everything they ran for.
    pub bpf_us_per_op: f64,
    pub bpf_ns_per_run: f64,
    pub bpf_runs_per_op: f64,
    /// Of which the rest of the machine (background rate × the round's length).
    pub bpf_background_us_per_op: f64,
    /// The generator's mean latency (ms), medians.
    pub latency_ms_base: f64,
    pub latency_ms_inst: f64,
    pub daemon_rss_kb: u64,
    pub daemon_peak_rss_kb: u64,
    /// Most other `beyla-rs` processes seen during a kept side.
    pub other_daemons: usize,
    /// Sides run again because another `beyla-rs` ran during them.
    pub retries: usize,
    /// Every side of every round, in the order run.
    pub rounds: Vec<DbRound>,
}

/// One side of one round.
#[derive(Default, Clone, serde::Serialize)]
pub(super) struct DbRound {
    pub round: usize,
    pub with_daemon: bool,
    pub ops: u64,
    pub rate: f64,
    pub latency_ms: f64,
    pub server_cpu_us_per_op: f64,
    pub other_daemons: usize,
    pub retries: usize,
    /// With the daemon only.
    pub spans: u64,
    pub spans_min: u64,
    pub spans_max: u64,
    pub spans_dropped: u64,
    pub events_lost: u64,
    pub daemon_cpu_us_per_op: f64,
    pub bpf_us_per_op: f64,
    pub bpf_ns_per_run: f64,
    pub bpf_runs_per_op: f64,
    pub bpf_background_us_per_op: f64,
}

impl DbRound {
    fn capture_ok(&self) -> bool {
        !self.with_daemon || (self.spans_min..=self.spans_max).contains(&self.spans)
    }
}

fn side_without(server: &dyn Server, dur: Duration) -> Result<DbRound> {
    wait_alone(None);
    let watch = Watch::start(None);
    let c0 = server.cpu();
    let run = server.load(dur);
    let cpu = server.cpu() - c0;
    let others = watch.finish();
    let run = run?;
    Ok(DbRound {
        with_daemon: false,
        ops: run.ops,
        rate: run.rate,
        latency_ms: run.latency_ms,
        server_cpu_us_per_op: cpu * 1e6 / run.ops.max(1) as f64,
        other_daemons: others,
        ..Default::default()
    })
}

fn side_with(
    bin: &PathBuf,
    server: &dyn Server,
    recv: &Receiver,
    dur: Duration,
    rss: &mut (u64, u64),
) -> Result<DbRound> {
    let spans0 = recv.spans();
    let executed0 = server.executed()?;
    // At full speed (redis-benchmark) the spans come faster than one export request at a
    // time drains a default-sized queue into the in-process receiver: a larger queue keeps the
    // check on the capture, not on the exporter's pace.
    let d = Daemon::start_env(
        bin,
        &server.port().to_string(),
        recv.port,
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "262144")],
    )?;
    wait_alone(Some(d.pid()));
    let background = bpf_background(&d, Duration::from_secs(1))?;
    let watch = Watch::start(Some(d.pid()));
    let (t0, k0) = bpf_time(&d.prog_ids)?;
    let dc0 = cpu_seconds(d.pid());
    let c0 = server.cpu();
    let run = server.load(dur);
    let cpu = server.cpu() - c0;
    let daemon = cpu_seconds(d.pid()) - dc0;
    let others = watch.finish();
    let run = run?;
    rss.0 = rss.0.max(status_kb(d.pid(), "VmRSS:"));
    let (t1, k1) = bpf_time(&d.prog_ids)?;
    rss.1 = rss.1.max(status_kb(d.pid(), "VmHWM:"));
    let mut got = Delivery::default();
    finish_round(d, recv, spans0, &mut got)?;
    let (spans_min, spans_max) = match (executed0, server.executed()?) {
        (Some(a), Some(b)) => {
            let executed = b.saturating_sub(a);
            if executed < run.ops {
                bail!(
                    "the server executed {executed} operations, fewer than the {} the load \
                     generator completed",
                    run.ops
                );
            }
            (executed, executed)
        }
        _ => (run.spans_min, run.spans_max),
    };
    let n = run.ops.max(1) as f64;
    Ok(DbRound {
        with_daemon: true,
        ops: run.ops,
        rate: run.rate,
        latency_ms: run.latency_ms,
        server_cpu_us_per_op: cpu * 1e6 / n,
        other_daemons: others,
        spans: got.spans,
        spans_min,
        spans_max,
        spans_dropped: got.spans_dropped,
        events_lost: got.events_lost,
        daemon_cpu_us_per_op: daemon * 1e6 / n,
        bpf_us_per_op: (t1 - t0) as f64 / 1e3 / n,
        bpf_ns_per_run: (t1 - t0) as f64 / (k1 - k0).max(1) as f64,
        bpf_runs_per_op: (k1 - k0) as f64 / n,
        bpf_background_us_per_op: background * run.elapsed.as_secs_f64() / 1e3 / n,
        ..Default::default()
    })
}

/// The A/B rounds against `server`; fails after the last round when the capture failed in
/// any.
fn rounds(bin: &PathBuf, server: &dyn Server, mut r: DbResult, dur: Duration) -> Result<DbResult> {
    let recv = Receiver::start()?;
    let mut rss = (0, 0);
    for round in 0..ROUNDS {
        for side in order(round) {
            for attempt in 0..ATTEMPTS {
                let mut s = match side {
                    Side::Without => side_without(server, dur)?,
                    Side::With => side_with(bin, server, &recv, dur, &mut rss)?,
                };
                eprintln!(
                    "  {}: round {}/{ROUNDS} {}: {} ops, {:.0}/s, server {:.1} µs/op{}",
                    r.label,
                    round + 1,
                    if s.with_daemon { "with" } else { "without" },
                    s.ops,
                    s.rate,
                    s.server_cpu_us_per_op,
                    if s.with_daemon {
                        format!(
                            ", daemon {:.2} µs/op, BPF {:.2} µs/op, spans {} (expected {}{})",
                            s.daemon_cpu_us_per_op,
                            s.bpf_us_per_op,
                            s.spans,
                            s.spans_min,
                            if s.spans_max > s.spans_min {
                                format!("–{}", s.spans_max)
                            } else {
                                String::new()
                            }
                        )
                    } else {
                        String::new()
                    }
                );
                if s.other_daemons > 0 && attempt + 1 < ATTEMPTS {
                    eprintln!(
                        "    another beyla-rs ran during this side: its programs run for the \
                         server's syscalls too; running it again"
                    );
                    r.retries += 1;
                    continue;
                }
                s.round = round + 1;
                s.retries = attempt;
                r.other_daemons = r.other_daemons.max(s.other_daemons);
                if s.with_daemon {
                    r.ops_inst += s.ops;
                    r.spans_min += s.spans_min;
                    r.spans_max += s.spans_max;
                    r.delivery.spans += s.spans;
                    r.delivery.spans_dropped += s.spans_dropped;
                    r.delivery.events_lost += s.events_lost;
                } else {
                    r.ops_base += s.ops;
                }
                r.rounds.push(s);
                break;
            }
        }
    }
    recv.check()?;
    (r.daemon_rss_kb, r.daemon_peak_rss_kb) = rss;
    let m = |with: bool, f: fn(&DbRound) -> f64| {
        median(
            &mut r
                .rounds
                .iter()
                .filter(|s| s.with_daemon == with)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    r.achieved_rate_base = m(false, |s| s.rate);
    r.achieved_rate_inst = m(true, |s| s.rate);
    r.server_cpu_us_per_op_base = m(false, |s| s.server_cpu_us_per_op);
    r.server_cpu_us_per_op_inst = m(true, |s| s.server_cpu_us_per_op);
    r.daemon_cpu_us_per_op = m(true, |s| s.daemon_cpu_us_per_op);
    r.bpf_us_per_op = m(true, |s| s.bpf_us_per_op);
    r.bpf_ns_per_run = m(true, |s| s.bpf_ns_per_run);
    r.bpf_runs_per_op = m(true, |s| s.bpf_runs_per_op);
    r.bpf_background_us_per_op = m(true, |s| s.bpf_background_us_per_op);
    r.latency_ms_base = m(false, |s| s.latency_ms);
    r.latency_ms_inst = m(true, |s| s.latency_ms);
    let failed: Vec<String> = r
        .rounds
        .iter()
        .filter(|s| !s.capture_ok())
        .map(|s| {
            format!(
                "round {}: {} spans for {} operations (expected {}–{}; {} spans dropped, {} \
                 kernel records lost)",
                s.round, s.spans, s.ops, s.spans_min, s.spans_max, s.spans_dropped, s.events_lost
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{}: the capture is not working:\n  {}\n\n{}",
            r.label,
            failed.join("\n  "),
            markdown(std::slice::from_ref(&r), dur)
        );
    }
    Ok(r)
}

/// The PostgreSQL row (see the module's documentation).
pub(super) fn pgbench(bin: &PathBuf, dur: Duration) -> Result<DbResult> {
    let pg = Postgres::start()?;
    let r = DbResult {
        label: format!(
            "pgbench -S, {}k tx/s, {PG_CLIENTS} clients",
            PG_RATE as f64 / 1000.0
        ),
        server: pg.version.clone(),
        target_rate: Some(PG_RATE),
        clients: PG_CLIENTS,
        ..Default::default()
    };
    rounds(bin, &pg, r, dur)
}

/// The Redis row (see the module's documentation).
pub(super) fn redis(bin: &PathBuf, dur: Duration) -> Result<DbResult> {
    let redis = Redis::start()?;
    let n = REDIS_REQUESTS_PER_SECOND * dur.as_secs().max(1);
    let r = DbResult {
        label: format!("redis-benchmark -t get,set -n {n} -P 1, {REDIS_CLIENTS} clients"),
        server: redis.version.clone(),
        target_rate: None,
        clients: REDIS_CLIENTS,
        ..Default::default()
    };
    rounds(bin, &redis, r, dur)
}

/// The rows' Markdown: one table (the columns are per operation: a query for PostgreSQL, a
/// request for Redis) and a note.
pub(super) fn markdown(rows: &[DbResult], dur: Duration) -> String {
    let mut md = String::from(
        "| database (server selected by its port) | ops/s: target, achieved without / with | spans received / expected (ops completed, with) | server CPU µs/op without → with (ratio) | daemon CPU µs/op | BPF µs/op (runs/op × ns/run) | of which rest of the machine | latency avg ms without → with | daemon RSS under load (peak incl. start-up) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let expected = if r.spans_max > r.spans_min {
            format!("{}–{}", r.spans_min, r.spans_max)
        } else {
            r.spans_min.to_string()
        };
        md.push_str(&format!(
            "| {} ({}) | {}: {:.0} / {:.0} | {} / {} ({}) | {:.1} → {:.1} ({:.2}×) | {:.2} | {:.2} ({:.1} × {:.0}) | {:.2} | {:.3} → {:.3} | {:.1} MB ({:.1} MB) |\n",
            r.label,
            r.server,
            r.target_rate.map_or("saturation".to_owned(), |t| t.to_string()),
            r.achieved_rate_base,
            r.achieved_rate_inst,
            r.delivery.spans,
            expected,
            r.ops_inst,
            r.server_cpu_us_per_op_base,
            r.server_cpu_us_per_op_inst,
            r.server_cpu_us_per_op_inst / r.server_cpu_us_per_op_base,
            r.daemon_cpu_us_per_op,
            r.bpf_us_per_op,
            r.bpf_runs_per_op,
            r.bpf_ns_per_run,
            r.bpf_background_us_per_op,
            r.latency_ms_base,
            r.latency_ms_inst,
            r.daemon_rss_kb as f64 / 1024.0,
            r.daemon_peak_rss_kb as f64 / 1024.0,
        ));
    }
    md.push_str(&format!(
        "\nDatabases: per operation completed ({ROUNDS} rounds, counterbalanced, medians). pgbench ({}s per side): one `SELECT` (a simple Query message) per transaction; the server's CPU is the postmaster's and all its backends' (live ones' scheduler runtime, reaped ones' from the postmaster's cutime + cstime); expected spans are pgbench's transactions plus its {PGBENCH_SETUP_QUERIES} set-up queries (up to one more per client). redis-benchmark: a fixed amount of work per side ({} `SET`s, then as many `GET`s), at saturation; expected spans are the commands the server executed (`INFO commandstats`, read before the daemon started and after it stopped), redis-benchmark's requests plus its `CONFIG GET`s. The BPF total includes the load generators' own runs (they are not selected).\n",
        dur.as_secs(),
        REDIS_REQUESTS_PER_SECOND * dur.as_secs().max(1),
    ));
    for r in rows {
        if r.delivery.spans_dropped > 0 || r.delivery.events_lost > 0 {
            md.push_str(&format!(
                "{}: {} spans dropped by the export queue, {} kernel records lost.\n",
                r.label, r.delivery.spans_dropped, r.delivery.events_lost
            ));
        }
        if r.retries > 0 {
            md.push_str(&format!(
                "{}: {} side(s) were run again because another beyla-rs ran during them.\n",
                r.label, r.retries
            ));
        }
        if r.other_daemons > 0 {
            md.push_str(&format!(
                "{}: **{} other beyla-rs process(es) ran during a side even after {ATTEMPTS} attempts**: the figures are not clean.\n",
                r.label, r.other_daemons
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_parsed() {
        let text = "pgbench (15.18 (Debian 15.18-0+deb12u1))\ntransaction type: <builtin: \
                    select only>\nscaling factor: 1\nquery mode: simple\nnumber of clients: \
                    8\nnumber of threads: 1\nmaximum number of tries: 1\nduration: 2 s\n\
                    number of transactions actually processed: 3916\nnumber of failed \
                    transactions: 0 (0.000%)\nlatency average = 0.323 ms\nlatency stddev = \
                    0.330 ms\nrate limit schedule lag: avg 0.100 (max 4.582) ms\ninitial \
                    connection time = 20.553 ms\ntps = 1971.922761 (without initial \
                    connection time)\n";
        let p = parse_pgbench(text).unwrap();
        assert_eq!(p.transactions, 3916);
        assert!((p.tps - 1971.922761).abs() < 1e-9 && (p.latency_ms - 0.323).abs() < 1e-9);
        let failed = text.replace("transactions: 0 (0.000%)", "transactions: 3 (0.1%)");
        assert!(parse_pgbench(&failed).is_err(), "failed transactions");
        assert_eq!(
            parse_pgbench(&text.replace("processed: 3916", "processed: 100/100"))
                .unwrap()
                .transactions,
            100
        );
        assert!(parse_pgbench("tps = 1\n").is_err());
    }

    #[test]
    fn redis_benchmark_output_is_parsed() {
        let test = |name: &str, n: u64, s: f64, avg: f64| {
            format!(
                " {name}: rps=0.0 (overall: 8000.0)\r {name}: rps=1.0\r====== {name} ======\n  \
                 {n} requests completed in {s:.2} seconds\n  8 parallel clients\n\nSummary:\n  \
                 throughput summary: 49261.09 requests per second\n  latency summary \
                 (msec):\n          avg       min       p50       p95       p99       max\n   \
                 {avg:.3}     0.024     0.103     0.159     0.207     2.487\n"
            )
        };
        let text = test("SET", 20000, 0.4, 0.1) + &test("GET", 20000, 0.35, 0.2);
        let b = parse_redis_benchmark(&text).unwrap();
        assert_eq!(b.requests, 40000);
        assert!((b.seconds - 0.75).abs() < 1e-9 && (b.latency_ms - 0.15).abs() < 1e-9);
        assert!(parse_redis_benchmark("nothing\n").is_err());
    }

    #[test]
    fn commandstats_leave_out_info() {
        let text = "# Commandstats\r\ncmdstat_get:calls=20000,usec=2325,usec_per_call=0.12,\
                    rejected_calls=0,failed_calls=0\r\ncmdstat_set:calls=20000,usec=4798\r\n\
                    cmdstat_info:calls=7,usec=300\r\ncmdstat_config|get:calls=2,usec=11\r\n";
        assert_eq!(commands_executed(text), 40002);
    }

    #[test]
    fn reaped_children_cpu_is_counted() {
        // A child that burns CPU and is reaped: it shows in our cutime + cstime.
        let before = reaped_cpu_seconds(std::process::id());
        let st = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(st.success());
        let after = reaped_cpu_seconds(std::process::id());
        assert!(after > before, "{before} → {after}");
    }

    #[test]
    fn descendants_are_found_recursively() {
        let mut c = Command::new("sh")
            .args(["-c", "sh -c 'sleep 30; :' & wait"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut d = descendants(c.id());
        while d.len() < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            d = descendants(c.id());
        }
        for p in &d {
            // SAFETY: processes this test started.
            unsafe { kill(*p as i32, 9) };
        }
        let _ = c.kill();
        let _ = c.wait();
        assert!(d.len() >= 2, "{d:?}");
    }
}
