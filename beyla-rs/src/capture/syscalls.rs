//! The syscall-tracepoint backend: attaches the raw tracepoint programs.

use aya::Ebpf;

use super::{CaptureError, attach_raw_tracepoints};

/// (program name in the object, raw tracepoint it attaches to)
const PROGRAMS: &[(&str, &str)] = &[
    ("beyla_sys_exit", "sys_exit"),
    ("beyla_process_exit", "sched_process_exit"),
];

pub(super) fn attach(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    // A connection passed to another process (`SCM_RIGHTS`) is followed through the open file
    // its descriptors share, which the programs find with the kernel's structure offsets. A
    // kernel without BTF loses only that.
    if let Err(e) = super::sockets::write_offsets(ebpf) {
        log::warn!(
            "connections passed between processes (SCM_RIGHTS, Node cluster workers) will not \
             be followed: {e}"
        );
    }
    attach_raw_tracepoints(ebpf, PROGRAMS)
}
