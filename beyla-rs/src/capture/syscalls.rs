//! The syscall-tracepoint backend: attaches the raw tracepoint programs.

use aya::{Ebpf, programs::RawTracePoint};

use super::{Backend, CaptureError};

/// (program name in the object, raw tracepoint it attaches to)
const PROGRAMS: &[(&str, &str)] = &[
    ("beyla_sys_exit", "sys_exit"),
    ("beyla_process_exit", "sched_process_exit"),
];

pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Backend, CaptureError> {
    for &(name, tracepoint) in PROGRAMS {
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
    Ok(Backend::SyscallTracepoints)
}
