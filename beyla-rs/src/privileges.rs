//! Capability checks before anything is loaded, so a missing privilege is one clear paragraph
//! instead of an `EPERM` from deep inside the loader.

use caps::{CapSet, Capability};

/// What beyla-rs needs, and why.
pub const REQUIRED: &[(Capability, &str)] = &[
    (
        Capability::CAP_BPF,
        "create the eBPF maps and load the programs",
    ),
    (
        Capability::CAP_PERFMON,
        "attach tracing programs (uprobes on TLS libraries too) and read process memory from them",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read /proc/<pid>/{exe,environ,fd,maps,root} of other users' processes (and the TLS libraries they map) and pidfd_getfd(2) their sockets' addresses",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "walk /proc/<pid>/fd of processes owned by other users",
    ),
];

/// The systemd line that grants exactly the required set.
pub fn ambient_line() -> String {
    let names: Vec<String> = REQUIRED.iter().map(|(c, _)| c.to_string()).collect();
    format!("AmbientCapabilities={}", names.join(" "))
}

/// Capabilities from [`REQUIRED`] that the process does not have. CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON, as on kernels before 5.8.
pub fn missing() -> Vec<(Capability, &'static str)> {
    let has = |c: Capability| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    let admin = has(Capability::CAP_SYS_ADMIN);
    REQUIRED
        .iter()
        .copied()
        .filter(|(c, _)| {
            let covered = admin && matches!(c, Capability::CAP_BPF | Capability::CAP_PERFMON);
            !covered && !has(*c)
        })
        .collect()
}

/// Human explanation of what is missing.
pub fn explain(missing: &[(Capability, &str)]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|(c, why)| format!("{c} (to {why})"))
        .collect();
    format!(
        "beyla-rs is missing {}: {}. Run it as root, or grant exactly the capabilities it needs, \
         e.g. in its systemd unit: `{}` with the same list in CapabilityBoundingSet=, or \
         `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep` on the binary. \
         Set BEYLA_ENFORCE_SYS_CAPS=false to try anyway.",
        if missing.len() == 1 {
            "a capability"
        } else {
            "capabilities"
        },
        list.join(", "),
        ambient_line()
    )
}

/// Raise RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (< 5.11). Failing is
/// only worth a warning on newer kernels, which account BPF memory to the cgroup.
pub fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let old_kernel = procfs::sys::kernel::Version::current()
            .map(|v| v < procfs::sys::kernel::Version::new(5, 11, 0))
            .unwrap_or(false);
        let err = std::io::Error::last_os_error();
        if old_kernel {
            log::warn!(
                "cannot raise RLIMIT_MEMLOCK ({err}); kernels before 5.11 need it (CAP_SYS_RESOURCE) to load eBPF maps"
            );
        } else {
            log::debug!("cannot raise RLIMIT_MEMLOCK ({err}); not needed on this kernel");
        }
    }
}
