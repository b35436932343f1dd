//! The capture layer: loads the eBPF programs, owns their maps, and drains the ring buffer.
//!
//! Backends differ in which kernel hooks feed the same maps and the same event records, so
//! everything downstream of [`Capture::drain`] is backend-agnostic:
//! - [`Backend::Fentry`] and [`Backend::Kprobe`] hook the TCP socket layer (`tcp_sendmsg`,
//!   `tcp_recvmsg`, `tcp_close`, `inet_csk_listen_start`) through BTF trampolines or kprobes:
//!   they run only for socket I/O, so processes that are not instrumented pay nothing, and
//!   connections are identified by their socket;
//! - [`Backend::SyscallTracepoints`] (raw tracepoints on `sys_exit`) works on every kernel
//!   with eBPF, including those without kprobes or fentry, at the price of a program run on
//!   every syscall of every process.
//!
//! `BEYLA_CAPTURE_BACKEND=auto` takes the first of them that loads and attaches, in that order
//! ([`ATTEMPTS`]), and logs why each earlier one was skipped.

mod btf;
pub mod event;
mod lookup;
pub mod probe;
mod sockets;
mod syscalls;
mod tracked;
mod uprobes;

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use beyla_rs_common::{
    CONFIG_SOCKET_KEYS, CONFIG_TLS, CONFIG_WATCH_EXEC, CONN_DROPPED, Config as KernelConfig,
    ConnInfo, STAT_CAPTURE_FAULT, STAT_CONN_CONTENDED, STAT_CONN_MAP_FULL, STAT_PID_MAP_FULL,
    STAT_RINGBUF_FULL, STAT_TLS_UNBOUND, conn_key,
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::config::{CaptureBackend, Config, PortSet};
pub use event::{DecodeError, Event};
pub use lookup::SocketLookup;

/// The eBPF object, built by `build.rs` (aya-build) and embedded: one binary, no runtime files.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/beyla-rs-ebpf"));

/// Which kernel hooks feed the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// fentry/fexit on the TCP socket layer.
    Fentry,
    /// kprobes/kretprobes on the TCP socket layer.
    Kprobe,
    /// Raw tracepoints on syscall exit: works everywhere eBPF does.
    SyscallTracepoints,
}

impl Backend {
    /// The short name (`BEYLA_CAPTURE_BACKEND`'s value, the internal metrics' label).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::SyscallTracepoints => "syscall",
        }
    }

    /// The backend sees sockets, not descriptors: it registers every connection of a tracked
    /// process itself (also those opened before start-up) and reports no fds.
    pub fn sees_sockets(self) -> bool {
        !matches!(self, Backend::SyscallTracepoints)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Fentry => f.write_str("fentry/fexit on the TCP socket layer"),
            Backend::Kprobe => f.write_str("kprobes on the TCP socket layer"),
            Backend::SyscallTracepoints => f.write_str("syscall raw tracepoints (sys_exit)"),
        }
    }
}

/// The backend the daemon's capture runs on, once it started: the internal metrics label the
/// kernel-fed counters with it.
static ACTIVE: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();

/// The capture backend in use, once the capture started.
pub fn active_backend() -> Option<Backend> {
    ACTIVE.get().copied()
}

/// Attaches a backend's programs to a loaded object.
type Attach = fn(&mut Ebpf) -> Result<(), CaptureError>;

/// The backends `auto` tries, in order, with the function that attaches each.
const ATTEMPTS: &[(Backend, Attach)] = &[
    (Backend::Fentry, sockets::attach_fentry),
    (Backend::Kprobe, sockets::attach_kprobe),
    (Backend::SyscallTracepoints, syscalls::attach),
];

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("mapping eBPF map {name} into memory: {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("process id {0} is above the kernel's limit and cannot be tracked")]
    PidOutOfRange(u32),
    #[error("registering the ring buffer with the event loop: {0}")]
    Poll(#[source] std::io::Error),
    #[error("{0}")]
    Btf(#[from] btf::BtfError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the {backend} backend (BEYLA_CAPTURE_BACKEND={}) cannot be used here: {source}", backend.label())]
    ForcedBackend {
        backend: Backend,
        #[source]
        source: Box<CaptureError>,
    },
    #[error("no capture backend loads here; the last one tried ({backend}): {source}")]
    NoBackend {
        backend: Backend,
        #[source]
        source: Box<CaptureError>,
    },
}

impl CaptureError {
    /// A deployment error (exit 2, like a missing capability) rather than a runtime failure:
    /// the backend the user asked for cannot work on this kernel.
    pub fn is_unusable_backend(&self) -> bool {
        matches!(self, CaptureError::ForcedBackend { .. })
    }
}

/// Loads and attaches each (program, raw tracepoint) pair.
fn attach_raw_tracepoints(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &str)],
) -> Result<(), CaptureError> {
    for &(name, tracepoint) in programs {
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or(CaptureError::MissingProgram(name))?
            .try_into()
            .map_err(|source| CaptureError::Program { name, source })?;
        program
            .load()
            .map_err(|source| CaptureError::Program { name, source })?;
        program
            .attach(tracepoint)
            .map_err(|source| CaptureError::Program { name, source })?;
    }
    Ok(())
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> CaptureError {
    move |source| CaptureError::Map { name, source }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Records lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Copies from user memory that faulted.
    pub capture_faults: u64,
    /// Connections that could not be added to the connection map.
    pub conn_map_full: u64,
    /// Connection-map updates given up after losing the entry's exchange to other CPUs.
    pub conn_contended: u64,
    /// Processes that could not be tracked (a process id above the kernel's limit: never).
    pub pid_map_full: u64,
    /// TLS plaintext not sent: its session was not tied to a tracked connection.
    pub tls_unbound: u64,
}

/// The loaded programs and their maps.
pub struct Capture {
    backend: Backend,
    // Keeps the programs and links alive: dropping `Ebpf` detaches everything. The TLS
    // probes are attached to library files as they are found.
    ebpf: Ebpf,
    /// The TLS probes' programs loaded (they are attached per library file).
    tls_loaded: bool,
    /// Some TLS probe is attached (the kernel's `CONFIG_TLS` is set).
    tls_on: bool,
    events: AsyncFd<RingBuf<MapData>>,
    tracked: tracked::TrackedPids,
    conns: HashMap<MapData, u64, ConnInfo>,
    stats: PerCpuArray<MapData, u64>,
    /// Socket-level backends: the socket of each connection id, and the listening ports.
    socks_by_id: Option<HashMap<MapData, u64, u64>>,
    listen: Option<HashMap<MapData, u32, u8>>,
}

impl Capture {
    /// Load the programs of the configured backend (`auto`: the first that loads) and attach
    /// them. Must run inside the tokio runtime (the ring buffer is registered with its
    /// reactor).
    pub fn start(config: &Config) -> Result<Self, CaptureError> {
        let wanted = match config.capture_backend {
            CaptureBackend::Auto => None,
            CaptureBackend::Fentry => Some(Backend::Fentry),
            CaptureBackend::Kprobe => Some(Backend::Kprobe),
            CaptureBackend::Syscall => Some(Backend::SyscallTracepoints),
        };
        let mut last = None;
        for &(backend, attach) in ATTEMPTS {
            if wanted.is_some_and(|w| w != backend) {
                continue;
            }
            match Self::start_with(config, backend, attach) {
                Ok(c) => {
                    let _ = ACTIVE.set(backend);
                    // The heap that start-up's BTF parsing used (the loader's, fentry's
                    // attach points, the structure offsets: one at a time) is free now, but
                    // the allocator keeps it: hand it back (tens of MB of RSS otherwise).
                    // SAFETY: no preconditions; it only releases free memory.
                    unsafe { libc::malloc_trim(0) };
                    return Ok(c);
                }
                Err(e) if wanted.is_some() => {
                    return Err(CaptureError::ForcedBackend {
                        backend,
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    log::info!("capture backend {backend} skipped: {e}");
                    last = Some((backend, e));
                }
            }
        }
        let (backend, e) = last.expect("ATTEMPTS is not empty");
        Err(CaptureError::NoBackend {
            backend,
            source: Box::new(e),
        })
    }

    /// Load the object afresh (a failed attempt's programs and maps go with it) and attach
    /// `backend`.
    fn start_with(config: &Config, backend: Backend, attach: Attach) -> Result<Self, CaptureError> {
        // The loader parses the kernel's BTF for itself; it is dropped with the statement.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", config.ringbuf_bytes)
            .load(EBPF_OBJECT)?;

        let mut kconfig: Array<_, KernelConfig> = Array::try_from(
            ebpf.map_mut("CONFIG")
                .ok_or(CaptureError::MissingMap("CONFIG"))?,
        )
        .map_err(map_err("CONFIG"))?;
        let mut flags = if config.selection.uses_exe() {
            CONFIG_WATCH_EXEC
        } else {
            0
        };
        if backend.sees_sockets() {
            flags |= CONFIG_SOCKET_KEYS;
        }
        kconfig
            .set(
                0,
                KernelConfig {
                    self_tgid: std::process::id(),
                    capture_bytes: config.capture_bytes,
                    flags,
                    // Wake the reader early only when a quarter of the ring is pending; below
                    // that it drains on its timer, batching hundreds of records per wake-up.
                    wakeup_bytes: config.ringbuf_bytes / 4,
                },
                0,
            )
            .map_err(map_err("CONFIG"))?;

        write_ports(&mut ebpf, &config.selection.ports())?;

        attach(&mut ebpf)?;
        // TLS capture is an addition: without it, plaintext HTTP is still captured.
        let tls_loaded = match uprobes::load(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("TLS capture unavailable, HTTPS will not be seen: {e}");
                false
            }
        };

        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or(CaptureError::MissingMap("EVENTS"))?,
        )
        .map_err(map_err("EVENTS"))?;
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as long as it is
        // registered with the reactor.
        let events = unsafe { AsyncFd::register(events) }
            .map_err(|e| CaptureError::Poll(e.into_parts().1))?;
        let tracked = tracked::TrackedPids::new(
            ebpf.take_map("TRACKED")
                .ok_or(CaptureError::MissingMap("TRACKED"))?,
        )?;
        let conns = HashMap::try_from(
            ebpf.take_map("CONNS")
                .ok_or(CaptureError::MissingMap("CONNS"))?,
        )
        .map_err(map_err("CONNS"))?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map("STATS")
                .ok_or(CaptureError::MissingMap("STATS"))?,
        )
        .map_err(map_err("STATS"))?;
        let (socks_by_id, listen) = if backend.sees_sockets() {
            (
                Some(
                    HashMap::try_from(
                        ebpf.take_map("SOCKS_BY_ID")
                            .ok_or(CaptureError::MissingMap("SOCKS_BY_ID"))?,
                    )
                    .map_err(map_err("SOCKS_BY_ID"))?,
                ),
                Some(
                    HashMap::try_from(
                        ebpf.take_map("LISTEN")
                            .ok_or(CaptureError::MissingMap("LISTEN"))?,
                    )
                    .map_err(map_err("LISTEN"))?,
                ),
            )
        } else {
            (None, None)
        };

        Ok(Self {
            backend,
            ebpf,
            tls_loaded,
            tls_on: false,
            events,
            tracked,
            conns,
            stats,
            socks_by_id,
            listen,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Wait until the kernel signals unread records (it does so only past the wake-up
    /// threshold; callers also drain on a timer).
    pub async fn readable(&self) -> std::io::Result<()> {
        let mut guard = self.events.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hand every record now in the ring buffer to `f`, with a lookup of the sockets its
    /// fds name; returns how many were read. Records that do not decode are passed as errors
    /// so the caller can count them.
    pub fn drain(
        &mut self,
        mut f: impl FnMut(Result<Event<'_>, DecodeError>, &dyn SocketLookup),
    ) -> usize {
        let lookup = lookup::ConnMapLookup {
            conns: &self.conns,
            fd_keyed: !self.backend.sees_sockets(),
        };
        let ring = self.events.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            f(Event::decode(&item), &lookup);
        }
        n
    }

    pub fn track_pid(&mut self, tgid: u32) -> Result<(), CaptureError> {
        if self.tracked.insert(tgid) {
            Ok(())
        } else {
            Err(CaptureError::PidOutOfRange(tgid))
        }
    }

    pub fn untrack_pid(&mut self, tgid: u32) {
        self.tracked.remove(tgid);
    }

    /// Register a connection the daemon found in /proc (opened before it started). Only the
    /// syscall backend needs this: the socket-level ones register every connection at its
    /// first I/O (see [`Backend::sees_sockets`]).
    pub fn add_conn(&mut self, tgid: u32, fd: u32, info: ConnInfo) -> Result<(), CaptureError> {
        if self.backend.sees_sockets() {
            return Ok(());
        }
        self.conns
            .insert(conn_key(tgid, fd), info, 0)
            .map_err(map_err("CONNS"))
    }

    /// A port a tracked process listens on (found in /proc): connections on it are the server
    /// side. Only the socket-level backends decide roles this way.
    pub fn add_listen_port(&mut self, port: u16) -> Result<(), CaptureError> {
        match &mut self.listen {
            Some(l) => l.insert(port as u32, 1, 0).map_err(map_err("LISTEN")),
            None => Ok(()),
        }
    }

    /// Stop capturing a connection (non-HTTP traffic, or its process is gone), unless its key
    /// now refers to another connection: with the syscall backend the process may have closed
    /// the fd and accepted a new one on it before the daemon got here. The socket-level
    /// backends keep the entry, marked dropped, so that the socket's next I/O does not
    /// register it again; its close removes it.
    pub fn remove_conn(&mut self, tgid: u32, fd: u32, conn_id: u64) {
        let key = match &self.socks_by_id {
            Some(ids) => match ids.get(&conn_id, 0) {
                Ok(sk) => sk,
                Err(_) => return,
            },
            None => conn_key(tgid, fd),
        };
        match self.conns.get(&key, 0) {
            Ok(c) if c.conn_id == conn_id && self.backend.sees_sockets() => {
                let dropped = ConnInfo {
                    flags: c.flags | CONN_DROPPED,
                    ..c
                };
                let _ = self.conns.insert(key, dropped, 0);
            }
            Ok(c) if c.conn_id == conn_id => {
                let _ = self.conns.remove(&key);
            }
            _ => {}
        }
    }

    /// Entries in the connection map (walks the map: for tests and diagnostics, not hot paths).
    pub fn conn_count(&self) -> usize {
        self.conns.keys().count()
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |i: u32| -> u64 {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().copied().sum())
                .unwrap_or(0)
        };
        KernelStats {
            ringbuf_full: sum(STAT_RINGBUF_FULL),
            capture_faults: sum(STAT_CAPTURE_FAULT),
            conn_map_full: sum(STAT_CONN_MAP_FULL),
            conn_contended: sum(STAT_CONN_CONTENDED),
            pid_map_full: sum(STAT_PID_MAP_FULL),
            tls_unbound: sum(STAT_TLS_UNBOUND),
        }
    }

    /// Time the kernel spent in this daemon's programs and how many times they ran, for the
    /// capture backend's programs and for the TLS probes: `[(ns, runs); 2]`. The kernel
    /// counts only while `kernel.bpf_stats_enabled` is 1 (it costs a clock read per run).
    pub fn bpf_cost(&self) -> [(u64, u64); 2] {
        let mut cost = [(0, 0); 2];
        for (name, program) in self.ebpf.programs() {
            let Ok(info) = program.info() else { continue };
            let slot = &mut cost[uprobes::is_tls_program(name) as usize];
            slot.0 += info.run_time().as_nanos() as u64;
            slot.1 += info.run_count();
        }
        cost
    }

    /// Put the TLS probes on a library file; returns how many were attached. The first file
    /// switches the kernel's socket paths to tying TLS sessions to connections.
    pub fn attach_tls(&mut self, target: &crate::tls::Target) -> Result<usize, CaptureError> {
        if !self.tls_loaded {
            return Err(CaptureError::Unsupported(
                "the TLS probes did not load on this kernel",
            ));
        }
        let n = uprobes::attach_target(&mut self.ebpf, target)?;
        if !self.tls_on {
            let mut kconfig: Array<_, KernelConfig> = Array::try_from(
                self.ebpf
                    .map_mut("CONFIG")
                    .ok_or(CaptureError::MissingMap("CONFIG"))?,
            )
            .map_err(map_err("CONFIG"))?;
            let mut c = kconfig.get(&0, 0).map_err(map_err("CONFIG"))?;
            c.flags |= CONFIG_TLS;
            kconfig.set(0, c, 0).map_err(map_err("CONFIG"))?;
            self.tls_on = true;
        }
        Ok(n)
    }

    /// The ring buffer's fd, for diagnostics.
    pub fn ring_fd(&self) -> i32 {
        self.events.get_ref().as_raw_fd()
    }
}

fn write_ports(ebpf: &mut Ebpf, ports: &PortSet) -> Result<(), CaptureError> {
    let mut words = [0u64; 1024];
    for p in ports.ports() {
        words[p as usize / 64] |= 1 << (p % 64);
    }
    let mut map: Array<_, u64> = Array::try_from(
        ebpf.map_mut("PORTS")
            .ok_or(CaptureError::MissingMap("PORTS"))?,
    )
    .map_err(map_err("PORTS"))?;
    for (i, w) in words.iter().enumerate() {
        if *w != 0 {
            map.set(i as u32, *w, 0).map_err(map_err("PORTS"))?;
        }
    }
    Ok(())
}
