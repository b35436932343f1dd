//! Helpers shared by the issue-7 tests (reliability, hostile input, security, configuration):
//! a non-panicking traffic generator, the daemon's BPF objects as the kernel reports them
//! (`/proc/<pid>/fdinfo` + `bpftool`), and the shutdown counters from the daemon's log.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One `GET path` on an open keep-alive connection; returns the status. Never panics.
pub fn try_get(s: &mut TcpStream, path: &str, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes())?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Steady background traffic: `conns` keep-alive connections, each sending `GET path` every
/// `pause`, reconnecting after errors (the server may be restarted underneath).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(port: u16, path: &str, conns: usize, pause: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let threads = (0..conns)
            .map(|_| {
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                let path = path.to_string();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut conn: Option<TcpStream> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn = TcpStream::connect(("127.0.0.1", port)).ok().inspect(|s| {
                                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                                let _ = s.set_nodelay(true);
                            });
                        }
                        match conn.as_mut().map(|s| try_get(s, &path, &mut buf)) {
                            Some(Ok(200)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            errors,
            threads,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops every client (closing their connections); returns (ok, errors).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `name=value` counters from the daemon's `stopped: …` line (only nonzero ones are logged).
pub fn stop_counters(log: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("no `stopped:` line in the daemon log:\n{log}"));
    line.split("stopped:")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A counter from [`stop_counters`], 0 when not logged.
pub fn counter(c: &HashMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// Peak resident set size (VmHWM) of `pid` in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A BPF object (map or program) held by a process, from `/proc/<pid>/fdinfo`.
#[derive(Clone, Debug, Default)]
pub struct BpfObjects {
    pub map_ids: Vec<u32>,
    pub prog_ids: Vec<u32>,
}

/// Map and program ids the process holds fds for (programs also through links).
pub fn bpf_objects_of(pid: u32) -> BpfObjects {
    let mut o = BpfObjects::default();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return o;
    };
    for e in rd.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for l in info.lines() {
            let mut it = l.split(':');
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(id) = v.trim().parse::<u32>() else {
                continue;
            };
            match k.trim() {
                "map_id" => o.map_ids.push(id),
                "prog_id" => o.prog_ids.push(id),
                _ => {}
            }
        }
    }
    o.map_ids.sort_unstable();
    o.map_ids.dedup();
    o.prog_ids.sort_unstable();
    o.prog_ids.dedup();
    o
}

/// Runs `bpftool args`: `Ok(stdout)` when it succeeds, `Err(its message)` when it fails (with
/// `-j` bpftool reports errors on stdout as `{"error": …}`, without it on stderr).
fn bpftool(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("bpftool not found ({e}): run tests/setup.sh"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `bpftool` on one object by id: `None` when the kernel has no object with that id (ENOENT).
/// Any other failure (no permission, a bpftool that cannot parse the map…) panics: an
/// unreadable map must not read as "gone" or "empty".
fn bpftool_by_id(args: &[&str]) -> Option<String> {
    match bpftool(args) {
        Ok(out) => Some(out),
        Err(e) if e.contains("No such file or directory") => None,
        Err(e) => panic!("bpftool {}: {e}", args.join(" ")),
    }
}

/// `bpftool args`, which must succeed.
fn bpftool_ok(args: &[&str]) -> String {
    bpftool(args).unwrap_or_else(|e| panic!("bpftool {}: {e}", args.join(" ")))
}

/// Name of map `id` (None when it does not exist).
pub fn map_name(id: u32) -> Option<String> {
    let j = bpftool_by_id(&["-j", "map", "show", "id", &id.to_string()])?;
    json_str_field(&j, "name")
}

/// Whether program `id` still exists in the kernel.
pub fn prog_exists(id: u32) -> bool {
    bpftool_by_id(&["prog", "show", "id", &id.to_string()]).is_some()
}

/// Whether map `id` still exists in the kernel.
pub fn map_exists(id: u32) -> bool {
    bpftool_by_id(&["map", "show", "id", &id.to_string()]).is_some()
}

/// Names of every loaded program (for failure messages).
pub fn all_prog_names() -> Vec<String> {
    let j = bpftool_ok(&["-j", "prog", "show"]);
    j.split("\"name\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect()
}

fn json_str_field(j: &str, field: &str) -> Option<String> {
    let pat = format!("\"{field}\":\"");
    let i = j.find(&pat)? + pat.len();
    Some(j[i..].split('"').next()?.to_string())
}

/// Entry count of map `id` (`bpftool map dump`). Panics when the map cannot be read (gone,
/// no permission, output that is not a JSON array): a failed read is never "0 entries".
pub fn map_entries(id: u32) -> usize {
    let args = ["-j", "map", "dump", "id", &id.to_string()];
    let j = bpftool_ok(&args);
    match serde_json::from_str::<serde_json::Value>(&j) {
        Ok(serde_json::Value::Array(entries)) => entries.len(),
        other => panic!(
            "bpftool {}: expected a JSON array of entries, got {other:?}",
            args.join(" ")
        ),
    }
}

/// Pids set in the daemon's `TRACKED` bitmap (array map `id`: bit `pid % 64` of the u64 word
/// `pid / 64`). Its entry count is the array's size whatever it holds, so the bits are what
/// tells a tracked process from none. Panics when the map cannot be read.
pub fn tracked_pids(id: u32) -> Vec<u32> {
    let args = ["-j", "map", "dump", "id", &id.to_string()];
    let j = bpftool_ok(&args);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&j)
        .unwrap_or_else(|e| panic!("bpftool {}: not a JSON array ({e})", args.join(" ")));
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .unwrap_or_else(|| panic!("bpftool {}: entry without byte array: {v}", args.join(" ")))
            .iter()
            .map(|b| {
                b.as_str()
                    .and_then(|h| u8::from_str_radix(h.trim_start_matches("0x"), 16).ok())
                    .unwrap_or_else(|| panic!("bpftool {}: not a hex byte: {b}", args.join(" ")))
            })
            .collect()
    };
    let mut pids = Vec::new();
    for e in &entries {
        let key = bytes(&e["key"]);
        let value = bytes(&e["value"]);
        let word = u32::from_le_bytes(key[..4].try_into().expect("4-byte key"));
        let bits = u64::from_le_bytes(value[..8].try_into().expect("8-byte value"));
        pids.extend(
            (0..64)
                .filter(|b| bits >> b & 1 == 1)
                .map(|b| word * 64 + b),
        );
    }
    pids
}

/// The daemon's map called `name` (e.g. `TRACKED`, `CONNS`).
pub fn daemon_map(pid: u32, name: &str) -> u32 {
    let objs = bpf_objects_of(pid);
    objs.map_ids
        .iter()
        .copied()
        .find(|&id| map_name(id).as_deref() == Some(name))
        .unwrap_or_else(|| panic!("daemon pid {pid} holds no map named {name}: {objs:?}"))
}

/// Mount points of every bpf filesystem mounted here (from `/proc/self/mountinfo`).
pub fn bpffs_mounts() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("/proc/self/mountinfo: {e}"));
    info.lines()
        .filter_map(|l| {
            // `id parent major:minor root mount-point options… - fstype source super-options`
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            (fstype == "bpf").then(|| left.split_whitespace().nth(4).map(str::to_owned))?
        })
        .collect()
}

/// A bpf filesystem at `/sys/fs/bpf` for as long as this lives. Pinning needs one: on a
/// machine without it (a plain sysfs directory) "nothing is pinned" would hold whatever the
/// daemon did. Mounted here when none is, unmounted on drop if it was mounted here.
pub struct BpfFs {
    mounted_here: bool,
}

impl BpfFs {
    pub const PATH: &str = "/sys/fs/bpf";

    pub fn ensure() -> BpfFs {
        if bpffs_mounts().iter().any(|m| m == Self::PATH) {
            return BpfFs {
                mounted_here: false,
            };
        }
        // SAFETY: plain mount(2) with NUL-terminated strings and no data.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount -t bpf bpf /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
        BpfFs { mounted_here: true }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if self.mounted_here {
            // SAFETY: umount2(2) of the mount made in `ensure`.
            unsafe { libc::umount2(c"/sys/fs/bpf".as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Every file and directory under every mounted bpf filesystem (pinned objects), sorted.
/// Panics when one cannot be listed.
pub fn bpffs_entries() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
            out.push(e.path().to_string_lossy().into_owned());
        }
    }
    let mut out = Vec::new();
    for m in bpffs_mounts() {
        walk(std::path::Path::new(&m), &mut out);
    }
    out.sort();
    out
}

/// Pins map `id` at `path` (a positive control for [`bpffs_entries`]).
pub fn pin_map(id: u32, path: &str) {
    bpftool_ok(&["map", "pin", "id", &id.to_string(), path]);
}

/// Polls until `f()` is true (every 100 ms) or `timeout`; returns the last value of `f`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to `n` (children inherit it).
pub fn raise_nofile(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        // Raising the hard limit needs CAP_SYS_RESOURCE, which containers often lack.
        r.rlim_cur = n.min(r.rlim_max);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &r),
            0,
            "setrlimit(NOFILE, {n}): {}",
            std::io::Error::last_os_error()
        );
    }
}
