//! The capture layer: loads the eBPF programs, owns their maps, and drains the ring buffer.
//!
//! Backends differ in which kernel hooks feed the same maps and the same event records, so
//! everything downstream of [`Capture::drain`] is backend-agnostic. Today there is one backend,
//! [`Backend::SyscallTracepoints`] (raw tracepoints on `sys_exit` and `sched_process_exit`),
//! which works on every kernel with eBPF, including those without kprobes or fentry. A faster
//! kernel-function backend (fentry/kprobes on `tcp_sendmsg`/`tcp_recvmsg`) would be another
//! variant chosen at start-up by what loads.

pub mod event;
pub mod probe;
mod syscalls;
mod tracked;

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use beyla_rs_common::{
    CONFIG_WATCH_EXEC, Config as KernelConfig, ConnInfo, STAT_CAPTURE_FAULT, STAT_CONN_MAP_FULL,
    STAT_PID_MAP_FULL, STAT_RINGBUF_FULL, conn_key,
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::config::{Config, PortSet};
pub use event::{DecodeError, Event};

/// The eBPF object, built by `build.rs` (aya-build) and embedded: one binary, no runtime files.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/beyla-rs-ebpf"));

/// Which kernel hooks feed the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Raw tracepoints on syscall exit: works everywhere eBPF does.
    SyscallTracepoints,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::SyscallTracepoints => f.write_str("syscall raw tracepoints (sys_exit)"),
        }
    }
}

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
    /// Processes that could not be tracked (a process id above the kernel's limit: never).
    pub pid_map_full: u64,
}

/// The loaded programs and their maps.
pub struct Capture {
    backend: Backend,
    // Keeps the programs and links alive: dropping `Ebpf` detaches everything.
    _ebpf: Ebpf,
    events: AsyncFd<RingBuf<MapData>>,
    tracked: tracked::TrackedPids,
    conns: HashMap<MapData, u64, ConnInfo>,
    stats: PerCpuArray<MapData, u64>,
}

impl Capture {
    /// Load the programs with the configured limits and attach them. Must run inside the tokio
    /// runtime (the ring buffer is registered with its reactor).
    pub fn start(config: &Config) -> Result<Self, CaptureError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", config.ringbuf_bytes)
            .load(EBPF_OBJECT)?;

        let mut kconfig: Array<_, KernelConfig> = Array::try_from(
            ebpf.map_mut("CONFIG")
                .ok_or(CaptureError::MissingMap("CONFIG"))?,
        )
        .map_err(map_err("CONFIG"))?;
        let flags = if config.selection.uses_exe() {
            CONFIG_WATCH_EXEC
        } else {
            0
        };
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

        write_ports(&mut ebpf, &config.selection.open_ports)?;

        let backend = syscalls::attach(&mut ebpf)?;

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

        Ok(Self {
            backend,
            _ebpf: ebpf,
            events,
            tracked,
            conns,
            stats,
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

    /// Hand every record now in the ring buffer to `f`; returns how many were read. Records
    /// that do not decode are passed as errors so the caller can count them.
    pub fn drain(&mut self, mut f: impl FnMut(Result<Event<'_>, DecodeError>)) -> usize {
        let ring = self.events.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            f(Event::decode(&item));
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

    /// Register a connection the daemon found in /proc (opened before it started).
    pub fn add_conn(&mut self, tgid: u32, fd: u32, info: ConnInfo) -> Result<(), CaptureError> {
        self.conns
            .insert(conn_key(tgid, fd), info, 0)
            .map_err(map_err("CONNS"))
    }

    /// Stop capturing a connection (non-HTTP traffic, or its process is gone), unless the fd
    /// now refers to another connection: the process may have closed it and accepted a new
    /// one on the same fd before the daemon got here.
    pub fn remove_conn(&mut self, tgid: u32, fd: u32, conn_id: u64) {
        let key = conn_key(tgid, fd);
        if self.conns.get(&key, 0).is_ok_and(|c| c.conn_id == conn_id) {
            let _ = self.conns.remove(&key);
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
            pid_map_full: sum(STAT_PID_MAP_FULL),
        }
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
