//! Finding the TLS libraries an instrumented process runs, so that the capture can put its
//! probes on them: OpenSSL (or BoringSSL) as a shared `libssl`, or linked into an executable or
//! another library that exports its API (Node), and Go's `crypto/tls` in Go executables
//! ([`go`]).
//!
//! A uprobe belongs to a file (its inode), not to a process: each file is probed once, for every
//! process that maps it, and the kernel side filters by tracked process. Files are identified
//! by the device and inode `/proc/PID/maps` reports, inspected once, and remembered (the ones
//! without a TLS library too), so re-scanning a process costs one read of its maps.
//!
//! Not covered: TLS libraries without stable exported symbols (rustls, GnuTLS, NSS), Go on
//! other architectures than x86-64 or before 1.17, and kernel TLS (`setsockopt(TCP_ULP, "tls")`), whose records
//! the kernel encrypts below the socket layer after the handshake.

mod elf;
pub mod go;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use thiserror::Error;

pub use elf::Elf;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// OpenSSL's entry points the probes use, as file offsets. `SSL_read_ex`/`SSL_write_ex` exist
/// from OpenSSL 1.1.1 on (not in BoringSSL); the others are required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSsl {
    pub read: u64,
    pub write: u64,
    pub read_ex: Option<u64>,
    pub write_ex: Option<u64>,
    pub handshake: u64,
    pub free: u64,
}

const OPENSSL_SYMBOLS: [&str; 6] = [
    "SSL_read",
    "SSL_write",
    "SSL_read_ex",
    "SSL_write_ex",
    "SSL_do_handshake",
    "SSL_free",
];

impl OpenSsl {
    /// The entry points in `elf`, if it defines OpenSSL's API; `None` otherwise (also for files
    /// that are not ELF).
    pub fn find(elf: &Elf) -> Option<Self> {
        let offs = elf.function_offsets(&OPENSSL_SYMBOLS).ok()?;
        Some(OpenSsl {
            read: offs[0]?,
            write: offs[1]?,
            read_ex: offs[2],
            write_ex: offs[3],
            handshake: offs[4]?,
            free: offs[5]?,
        })
    }
}

/// What to probe in a file.
#[derive(Clone, Debug)]
pub enum Probes {
    OpenSsl(OpenSsl),
    Go(go::GoTls),
}

impl Probes {
    pub fn name(&self) -> &'static str {
        match self {
            Probes::OpenSsl(_) => "OpenSSL API",
            Probes::Go(_) => "Go crypto/tls",
        }
    }
}

/// A file to probe: a path to it that the kernel can open (through the process's root, so
/// files of other mount namespaces are found), and what to probe in it.
#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub id: FileId,
    pub probes: Probes,
}

/// A file's identity: device (as `/proc/PID/maps` prints it) and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Files inspected at most this many; past it the memory of files without a TLS library is
/// cleared (they would be inspected again if a process still maps them).
const MAX_FILES: usize = 8192;

/// The files seen so far and what they hold.
#[derive(Default)]
pub struct Libraries {
    /// `None`: inspected, nothing to probe (or not readable).
    seen: HashMap<FileId, Option<Target>>,
}

impl Libraries {
    pub fn new() -> Self {
        Self::default()
    }

    /// The TLS libraries process `pid` maps that were not found before (each file is returned
    /// once, for the first process found to map it).
    pub fn scan(&mut self, pid: u32) -> Vec<Target> {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return Vec::new();
        };
        let mut new = Vec::new();
        for (id, path) in executable_files(&maps) {
            if self.seen.contains_key(&id) {
                continue;
            }
            if self.seen.len() >= MAX_FILES {
                self.seen.retain(|_, t| t.is_some());
            }
            let via_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
            let found = inspect(&via_root).map(|probes| Target {
                path: via_root,
                id,
                probes,
            });
            if let Some(t) = &found {
                new.push(t.clone());
            }
            self.seen.insert(id, found);
        }
        new
    }

    /// Forget a file whose probes could not be attached, so that a later scan tries again.
    pub fn forget(&mut self, id: FileId) {
        self.seen.remove(&id);
    }
}

fn inspect(path: &Path) -> Option<Probes> {
    let elf = match Elf::open(path) {
        Ok(elf) => elf,
        Err(e) => {
            log::debug!("{e}");
            return None;
        }
    };
    if let Some(o) = OpenSsl::find(&elf) {
        return Some(Probes::OpenSsl(o));
    }
    match go::inspect(path, elf.bytes()) {
        Ok(Some(g)) if g.offsets == go::GoOffsets::default() => Some(Probes::Go(g)),
        Ok(Some(g)) => {
            log::warn!(
                "TLS: {} ({}) lays out crypto/tls.Conn's socket differently ({:?}): not probed",
                path.display(),
                g.version.as_deref().unwrap_or("unknown Go version"),
                g.offsets
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            log::info!("TLS: {e}");
            None
        }
    }
}

/// The distinct files a process maps executable code from: `(identity, path)`. Deleted files
/// (replaced by an upgrade while mapped) and anonymous or special mappings are skipped.
fn executable_files(maps: &str) -> Vec<(FileId, &str)> {
    let mut out: Vec<(FileId, &str)> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut f = line.splitn(6, ' ');
        let (Some(_), Some(perms), Some(_), Some(dev), Some(ino), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = path.trim_start();
        if !perms.contains('x') || !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let (Some(dev), Ok(ino)) = (parse_dev(dev), ino.parse::<u64>()) else {
            continue;
        };
        let id = FileId { dev, ino };
        if ino != 0 && !out.iter().any(|(i, _)| *i == id) {
            out.push((id, path));
        }
    }
    out
}

/// `major:minor` in hex, as `/proc/PID/maps` prints devices.
fn parse_dev(s: &str) -> Option<u64> {
    let (major, minor) = s.split_once(':')?;
    Some((u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_mappings_once_each() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 1315 /usr/sbin/nginx
55d0c0a28000-55d0c0b00000 r-xp 00028000 fe:01 1315 /usr/sbin/nginx
7f1e2a000000-7f1e2a060000 r-xp 00022000 fe:01 2042 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2a100000-7f1e2a200000 r-xp 00000000 00:00 0 
7f1e2a200000-7f1e2a201000 r-xp 00000000 fe:01 77 /tmp/old lib.so (deleted)
7f1e2a300000-7f1e2a301000 r-xp 00000000 fe:01 78 /opt/with space/lib.so
7ffd1e3f0000-7ffd1e3f2000 r-xp 00000000 00:00 0                          [vdso]
";
        let files = executable_files(maps);
        let paths: Vec<&str> = files.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            paths,
            [
                "/usr/sbin/nginx",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/opt/with space/lib.so"
            ]
        );
        assert_eq!(
            files[1].0,
            FileId {
                dev: (0xfe << 32) | 1,
                ino: 2042
            }
        );
    }

    /// The test process maps libc, which has no TLS library: scanned once, remembered, and
    /// not returned again.
    #[test]
    fn files_are_inspected_once() {
        let mut libs = Libraries::new();
        let pid = std::process::id();
        let first = libs.scan(pid);
        assert!(first.iter().all(|t| !t.path.ends_with("libc.so.6")));
        let seen = libs.seen.len();
        assert!(seen > 0, "the test binary and libc are mapped");
        assert!(libs.scan(pid).is_empty());
        assert_eq!(libs.seen.len(), seen);
    }

    /// Debian's libssl (curl and nginx, which the integration tests need, depend on it).
    #[test]
    fn openssl_entry_points_in_libssl() {
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let o = OpenSsl::find(&Elf::open(path).unwrap()).expect("libssl defines SSL_read");
        assert!(
            o.read_ex.is_some() && o.write_ex.is_some(),
            "OpenSSL 3 has the _ex forms"
        );
        let all = [o.read, o.write, o.handshake, o.free];
        assert!(all.iter().all(|&a| a > 0));
        let mut dedup = all.to_vec();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
    }
}
