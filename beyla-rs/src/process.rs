//! Process discovery: which processes are selected, what they are called, and which of their
//! sockets existed before the daemon started.
//!
//! The kernel selects new servers itself (it sees `bind` on a selected port and forks of
//! tracked processes). This module covers what the kernel cannot see: processes that were
//! already running at start-up, listening sockets inherited without a `bind` (socket
//! activation), executable-based selectors, and the names and resources spans need.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::Arc,
};

use procfs::process::{FDTarget, Process};

use crate::{
    config::Selection,
    sockets::{self, Which},
};

/// What spans of one process carry as their resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe_path: String,
    pub exe_name: String,
    pub service_name: String,
    /// `service.namespace` of the discovery entry that selected it.
    pub service_namespace: Option<String>,
    /// `service.instance.id`: unique per process instance.
    pub instance_id: String,
    pub host_name: String,
    /// The process's own `OTEL_RESOURCE_ATTRIBUTES`, minus `service.name`.
    pub extra_resource: Vec<(String, String)>,
}

/// A TCP connection found in /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingConn {
    pub fd: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The local port is one of the process's listening ports: it is the server side.
    pub server: bool,
}

/// One selected process found by a scan.
#[derive(Clone, Debug, Default)]
pub struct ScannedProcess {
    pub pid: u32,
    /// The discovery entry that selects it.
    pub entry: usize,
    /// Listening sockets: fd → local address.
    pub listeners: Vec<(u32, SocketAddr)>,
    pub conns: Vec<ExistingConn>,
}

/// Host-wide facts read once.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub host_name: String,
}

impl HostInfo {
    pub fn read() -> Self {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self { host_name }
    }
}

/// Resolves and caches [`ProcessInfo`], and decides selection.
pub struct Processes {
    selection: Selection,
    host: HostInfo,
    self_pid: u32,
    infos: HashMap<u32, Arc<ProcessInfo>>,
    /// The discovery entry each selected process belongs to (its service name and
    /// namespace); children inherit it.
    entries: HashMap<u32, usize>,
}

/// The executable of `pid`, without the " (deleted)" of a binary replaced on disk.
pub fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
}

impl Processes {
    pub fn new(selection: Selection, host: HostInfo) -> Self {
        Self {
            selection,
            host,
            self_pid: std::process::id(),
            infos: HashMap::new(),
            entries: HashMap::new(),
        }
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// The entry that selects `pid` (listening on `ports`, or `None`: ports unknown).
    fn choose(&self, pid: u32, ports: Option<&[u16]>) -> Option<usize> {
        if pid == self.self_pid {
            return None;
        }
        self.selection.choose(pid, ports, &mut || exe_of(pid))
    }

    /// `pid` belongs to `entry` from now on (its name is read afresh).
    pub fn assign(&mut self, pid: u32, entry: usize) {
        if self.entries.insert(pid, entry) != Some(entry) {
            self.infos.remove(&pid);
        }
    }

    /// `pid` bound `port`, which some entry selects: whether it is instrumented.
    pub fn select_bound(&mut self, pid: u32, port: u16) -> bool {
        match self.choose(pid, Some(&[port])) {
            Some(e) => {
                self.assign(pid, e);
                true
            }
            None => false,
        }
    }

    /// An untracked process exec'd: whether an entry without ports selects it now.
    pub fn select_exec(&mut self, pid: u32) -> bool {
        match self.choose(pid, None) {
            Some(e) => {
                self.assign(pid, e);
                true
            }
            None => false,
        }
    }

    /// A tracked process exec'd: whether it still matches an entry by its executable (it
    /// keeps its entry when that one still matches) and no exclusion.
    pub fn still_selected(&mut self, pid: u32) -> bool {
        if pid == self.self_pid {
            return false;
        }
        // An exec: the executable is what changed, read it once.
        let exe = exe_of(pid);
        if self.selection.excluded(pid, &[], &mut || exe.clone()) {
            return false;
        }
        let matches = |i: &usize| {
            self.selection
                .instrument
                .get(*i)
                .is_some_and(|s| s.matches_process(pid, &mut || exe.clone()))
        };
        let kept = self.entries.get(&pid).copied().filter(matches);
        match kept.or_else(|| (0..self.selection.instrument.len()).find(matches)) {
            Some(e) => {
                self.assign(pid, e);
                true
            }
            None => false,
        }
    }

    /// A running child of a tracked process (its worker) belongs to the parent's entry; its
    /// facts are its own (read from /proc on first use).
    pub fn adopt(&mut self, parent: u32, child: u32) {
        if let Some(&e) = self.entries.get(&parent) {
            self.assign(child, e);
        }
    }

    /// A tracked process forked: the child belongs to the parent's entry.
    pub fn inherit(&mut self, parent: u32, child: u32) {
        self.adopt(parent, child);
        // Until it execs, a forked child runs the parent's program with its environment: its
        // facts are the parent's. Taken now, because a child that serves one connection
        // (PostgreSQL's backends) may be gone before its first span is built.
        if !self.infos.contains_key(&child) {
            let p = self.info(parent);
            let info = ProcessInfo {
                pid: child,
                instance_id: format!("{}-{child}", self.host.host_name),
                ..(*p).clone()
            };
            self.infos.insert(child, Arc::new(info));
        }
    }

    /// Resource facts for a process, read from /proc on first use.
    pub fn info(&mut self, pid: u32) -> Arc<ProcessInfo> {
        if let Some(i) = self.infos.get(&pid) {
            return i.clone();
        }
        let info = Arc::new(self.read_info(pid));
        self.infos.insert(pid, info.clone());
        info
    }

    /// Forget what was read of a process (it exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.infos.remove(&pid);
    }

    /// A process exited.
    pub fn gone(&mut self, pid: u32) {
        self.infos.remove(&pid);
        self.entries.remove(&pid);
    }

    fn read_info(&self, pid: u32) -> ProcessInfo {
        let exe_path = exe_of(pid).unwrap_or_default();
        let exe_name = Path::new(&exe_path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| format!("pid-{pid}"));

        let mut own_name = None;
        let mut extra = Vec::new();
        if let Ok(env) = Process::new(pid as i32).and_then(|p| p.environ()) {
            if let Some(v) = env.get(std::ffi::OsStr::new("OTEL_SERVICE_NAME")) {
                let v = v.to_string_lossy().trim().to_owned();
                if !v.is_empty() {
                    own_name = Some(v);
                }
            }
            if let Some(v) = env.get(std::ffi::OsStr::new("OTEL_RESOURCE_ATTRIBUTES"))
                && let Ok(pairs) =
                    crate::config::parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v.to_string_lossy())
            {
                for (k, v) in pairs {
                    if k == "service.name" {
                        own_name.get_or_insert(v);
                    } else {
                        extra.push((k, v));
                    }
                }
            }
        }
        let entry = self
            .entries
            .get(&pid)
            .and_then(|&e| self.selection.instrument.get(e));
        let service_name = entry
            .and_then(|e| e.name.clone())
            .or(own_name)
            .unwrap_or_else(|| exe_name.clone());
        ProcessInfo {
            service_namespace: entry.and_then(|e| e.namespace.clone()),
            pid,
            instance_id: format!("{}-{pid}", self.host.host_name),
            host_name: self.host.host_name.clone(),
            exe_path,
            exe_name,
            service_name,
            extra_resource: extra,
        }
    }

    /// Find the selected processes that are running now, with their listening sockets, and
    /// the established TCP connections of those not in `known` (processes already tracked:
    /// the kernel reports their connections). Listening sockets come from the kernel's
    /// listening hash; established ones are only listed when a new process needs them, as
    /// listing them costs a walk over the whole connection table ([`crate::sockets`]).
    pub fn scan(&self, known: &HashSet<u32>) -> Vec<ScannedProcess> {
        let listening = sockets::tcp_sockets(Which::Listening);
        let Ok(all) = procfs::process::all_processes() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Socket fds of new selected processes that are not listening: (index in out, fd, inode).
        let mut others: Vec<(usize, u32, u64)> = Vec::new();
        for p in all.flatten() {
            let pid = p.pid as u32;
            if pid == self.self_pid {
                continue;
            }
            let Ok(fds) = p.fd() else { continue };
            let mut sp = ScannedProcess {
                pid,
                ..Default::default()
            };
            let mut sockets = Vec::new();
            for fd in fds.flatten() {
                let FDTarget::Socket(inode) = fd.target else {
                    continue;
                };
                match listening.get(&inode) {
                    Some((local, _, _)) => sp.listeners.push((fd.fd as u32, *local)),
                    None => sockets.push((fd.fd as u32, inode)),
                }
            }
            let ports: Vec<u16> = sp.listeners.iter().map(|(_, a)| a.port()).collect();
            let Some(entry) = self.choose(pid, Some(&ports)) else {
                continue;
            };
            sp.entry = entry;
            if !known.contains(&pid) {
                others.extend(sockets.into_iter().map(|(fd, ino)| (out.len(), fd, ino)));
            }
            out.push(sp);
        }
        if !others.is_empty() {
            let established = sockets::tcp_sockets(Which::Established);
            for (i, fd, inode) in others {
                let (Some(sp), Some((local, remote, _))) =
                    (out.get_mut(i), established.get(&inode))
                else {
                    continue;
                };
                let server = sp.listeners.iter().any(|(_, a)| a.port() == local.port());
                sp.conns.push(ExistingConn {
                    fd,
                    local: *local,
                    remote: *remote,
                    server,
                });
            }
        }
        out
    }
}

/// Socket addresses of another process's fd, read by duplicating it with `pidfd_getfd(2)`
/// (CAP_SYS_PTRACE). Nothing is written to the process; the duplicate is closed at once.
pub fn socket_addrs(pid: u32, fd: u32) -> Option<(SocketAddr, SocketAddr)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain syscalls; every fd returned is owned and closed by OwnedFd.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        use std::os::fd::AsRawFd;
        let dup = libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            fd as libc::c_int,
            0,
        );
        if dup < 0 {
            return None;
        }
        let dup = OwnedFd::from_raw_fd(dup as i32);
        let local = sock_name(dup.as_raw_fd(), libc::getsockname)?;
        let peer = sock_name(dup.as_raw_fd(), libc::getpeername)
            .unwrap_or_else(|| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0));
        Some((local, peer))
    }
}

type SockNameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sock_name(fd: i32, f: SockNameFn) -> Option<SocketAddr> {
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage is large enough for any address; len tells the kernel so.
    let r = unsafe { f(fd, (&raw mut storage).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes of a sockaddr into storage.
    let bytes =
        unsafe { std::slice::from_raw_parts((&raw const storage).cast::<u8>(), len as usize) };
    crate::capture::event::parse_sockaddr(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortSet, Selector};

    #[test]
    fn finds_own_sockets_via_pidfd() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let me = std::process::id();
        // pidfd_open and pidfd_getfd on ourselves need no privilege (Linux 5.6+): the daemon
        // reads the addresses of connections opened before it started this way, so a failure
        // here is a failure, not a reason to skip.
        let addrs = |fd: i32| {
            socket_addrs(me, fd as u32).unwrap_or_else(|| {
                panic!(
                    "pidfd_open/pidfd_getfd/getsockname on our own fd {fd} failed: {}",
                    std::io::Error::last_os_error()
                )
            })
        };
        // A listener has no peer.
        let unspecified = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        assert_eq!(addrs(l.as_raw_fd()), (l.local_addr().unwrap(), unspecified));
        // Both ends of a connection, each from its own side.
        assert_eq!(
            addrs(server.as_raw_fd()),
            (server.local_addr().unwrap(), client.local_addr().unwrap())
        );
        assert_eq!(
            addrs(client.as_raw_fd()),
            (client.local_addr().unwrap(), server.local_addr().unwrap())
        );
        // Not a socket: no addresses.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(socket_addrs(me, file.as_raw_fd() as u32), None);
    }

    #[test]
    fn selection_excludes_self_and_respects_pid() {
        let sel = Selection::single(Selector {
            open_ports: PortSet::parse("X", "80").unwrap(),
            target_pid: Some(1),
            ..Default::default()
        });
        let mut p = Processes::new(sel, HostInfo::read());
        assert!(!p.select_bound(std::process::id(), 80));
        assert!(!p.select_bound(2, 80));
        assert!(p.select_bound(1, 80));
        assert!(!p.select_bound(1, 81));
    }

    #[test]
    fn the_entry_names_the_process_and_its_children() {
        let pid = std::process::id();
        let mut p = Processes::new(Selection::default(), HostInfo::read());
        let info = p.info(pid);
        assert!(!info.exe_name.is_empty());
        assert_eq!(info.pid, pid);
        assert_eq!(info.service_name, info.exe_name);
        let sel = Selection::single(Selector {
            open_ports: PortSet::parse("X", "80").unwrap(),
            name: Some("svc".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        });
        let mut p = Processes::new(sel, HostInfo::read());
        // pid 1 stands for any selected process: the daemon never selects itself.
        assert!(p.select_bound(1, 80));
        assert_eq!(p.info(1).service_name, "svc");
        assert_eq!(p.info(1).service_namespace.as_deref(), Some("ns"));
        p.inherit(1, pid);
        assert_eq!(p.info(pid).service_name, "svc");
        p.gone(pid);
        assert_ne!(p.info(pid).service_name, "svc");
    }
}
