//! The socket-level backends: attach the TCP socket hooks (fentry/fexit or kprobes) and the
//! scheduler's process tracepoints, after writing this kernel's structure offsets (from its
//! BTF) into the `OFFSETS` map.

use std::path::Path;

use aya::{
    Btf, Ebpf,
    maps::Array,
    programs::{KProbe, Program},
};
use beyla_rs_common::KernelOffsets;

use super::{
    CaptureError, attach_raw_tracepoints,
    btf::{self, KernelBtf},
    map_err,
};

/// Process life cycle for the socket-level backends: exit, fork, exec.
const PROCESS_HOOKS: &[(&str, &str)] = &[
    ("beyla_process_exit", "sched_process_exit"),
    ("beyla_process_fork", "sched_process_fork"),
    ("beyla_process_exec", "sched_process_exec"),
];

/// A hook on a kernel function: program, function, whether the kernel may lack the function
/// (then the hook is skipped).
struct Hook {
    program: &'static str,
    function: &'static str,
    optional: bool,
}

const fn hook(program: &'static str, function: &'static str) -> Hook {
    Hook {
        program,
        function,
        optional: false,
    }
}

/// `tcp_sendpage` carried `sendfile` to TCP sockets until Linux 6.5; later kernels send pages
/// through `tcp_sendmsg`.
const SENDPAGE: &str = "tcp_sendpage";

/// fentry and fexit programs (aya tells them apart by their section).
const TRAMPOLINES: &[Hook] = &[
    hook("beyla_fentry_tcp_sendmsg", "tcp_sendmsg"),
    hook("beyla_fentry_tcp_recvmsg", "tcp_recvmsg"),
    hook("beyla_fentry_tcp_close", "tcp_close"),
    hook("beyla_fentry_listen", "inet_csk_listen_start"),
    hook("beyla_fexit_tcp_sendmsg", "tcp_sendmsg"),
    hook("beyla_fexit_tcp_recvmsg", "tcp_recvmsg"),
    hook("beyla_fexit_skb_copy", "skb_copy_datagram_iter"),
    Hook {
        program: "beyla_fexit_tcp_sendpage",
        function: SENDPAGE,
        optional: true,
    },
];

const KPROBES: &[Hook] = &[
    hook("beyla_kprobe_tcp_sendmsg", "tcp_sendmsg"),
    hook("beyla_kprobe_tcp_recvmsg", "tcp_recvmsg"),
    Hook {
        program: "beyla_kprobe_tcp_sendpage",
        function: SENDPAGE,
        optional: true,
    },
    hook("beyla_kprobe_tcp_close", "tcp_close"),
    hook("beyla_kprobe_listen", "inet_csk_listen_start"),
    hook("beyla_kprobe_skb_copy", "skb_copy_datagram_iter"),
];
/// The return of `skb_copy_datagram_iter` (reads that were in flight at attach).
const KRETPROBE_COPY: &str = "beyla_kretprobe_skb_copy";
/// One return probe serves the three data functions.
const KRETPROBE: &str = "beyla_kretprobe_tcp_io";
const KRETPROBE_ON: &[Hook] = &[
    hook(KRETPROBE, "tcp_sendmsg"),
    hook(KRETPROBE, "tcp_recvmsg"),
    Hook {
        program: KRETPROBE,
        function: SENDPAGE,
        optional: true,
    },
];

/// The perf event source kprobes attach through.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CaptureError {
    move |source| CaptureError::Program { name, source }
}

/// Reads this kernel's offsets from its BTF and writes them for the programs; returns the
/// parsed BTF for the checks of what functions exist.
pub(super) fn write_offsets(ebpf: &mut Ebpf) -> Result<KernelBtf, CaptureError> {
    let kernel = KernelBtf::load(Path::new(btf::VMLINUX_BTF))?;
    let offsets: KernelOffsets = kernel.offsets()?;
    log::debug!("kernel structure offsets: {offsets:?}");
    let mut map: Array<_, KernelOffsets> = Array::try_from(
        ebpf.map_mut("OFFSETS")
            .ok_or(CaptureError::MissingMap("OFFSETS"))?,
    )
    .map_err(map_err("OFFSETS"))?;
    map.set(0, offsets, 0).map_err(map_err("OFFSETS"))?;
    Ok(kernel)
}

/// Loads (verifies) the fentry or fexit program of `h`.
fn load_trampoline(ebpf: &mut Ebpf, h: &Hook, btf: &Btf) -> Result<(), CaptureError> {
    let err = program_err(h.program);
    match ebpf.program_mut(h.program) {
        Some(Program::FEntry(p)) => p.load(h.function, btf).map_err(err),
        Some(Program::FExit(p)) => p.load(h.function, btf).map_err(err),
        _ => Err(CaptureError::MissingProgram(h.program)),
    }
}

fn attach_trampoline(ebpf: &mut Ebpf, h: &Hook) -> Result<(), CaptureError> {
    let err = program_err(h.program);
    match ebpf.program_mut(h.program) {
        Some(Program::FEntry(p)) => p.attach().map(drop).map_err(err),
        Some(Program::FExit(p)) => p.attach().map(drop).map_err(err),
        _ => Err(CaptureError::MissingProgram(h.program)),
    }
}

pub(super) fn attach_fentry(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    // aya resolves the functions' BTF ids from its own parse.
    let btf = Btf::from_sys_fs().map_err(|e| {
        CaptureError::Btf(btf::BtfError::Missing(format!(
            "usable BTF at {} ({e})",
            btf::VMLINUX_BTF
        )))
    })?;
    let btf = &btf;
    // Load first: a kernel that refuses trampolines (EPERM) says so here, before the
    // structure offsets are looked up (parsing the BTF for them costs memory and time).
    for h in TRAMPOLINES.iter().filter(|h| !h.optional) {
        load_trampoline(ebpf, h, btf)?;
    }
    let kernel = write_offsets(ebpf)?;
    let present: Vec<&Hook> = TRAMPOLINES
        .iter()
        .filter(|h| !h.optional || kernel.has_function(h.function))
        .collect();
    drop(kernel);
    for h in present.iter().filter(|h| h.optional) {
        load_trampoline(ebpf, h, btf)?;
    }
    for h in present {
        attach_trampoline(ebpf, h)?;
    }
    attach_raw_tracepoints(ebpf, PROCESS_HOOKS)
}

pub(super) fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    if !Path::new(KPROBE_PMU).exists() {
        return Err(CaptureError::Unsupported(
            "this kernel has no kprobes (no kprobe event source: CONFIG_KPROBES is not set)",
        ));
    }
    let kernel = write_offsets(ebpf)?;
    let present: Vec<&Hook> = KPROBES
        .iter()
        .chain(KRETPROBE_ON)
        .filter(|h| !h.optional || kernel.has_function(h.function))
        .collect();
    drop(kernel);
    for h in present.iter().filter(|h| h.program != KRETPROBE) {
        let p: &mut KProbe = ebpf
            .program_mut(h.program)
            .ok_or(CaptureError::MissingProgram(h.program))?
            .try_into()
            .map_err(program_err(h.program))?;
        p.load().map_err(program_err(h.program))?;
        p.attach(h.function, 0).map_err(program_err(h.program))?;
    }
    let p: &mut KProbe = ebpf
        .program_mut(KRETPROBE)
        .ok_or(CaptureError::MissingProgram(KRETPROBE))?
        .try_into()
        .map_err(program_err(KRETPROBE))?;
    p.load().map_err(program_err(KRETPROBE))?;
    for h in present.iter().filter(|h| h.program == KRETPROBE) {
        p.attach(h.function, 0).map_err(program_err(KRETPROBE))?;
    }
    let p: &mut KProbe = ebpf
        .program_mut(KRETPROBE_COPY)
        .ok_or(CaptureError::MissingProgram(KRETPROBE_COPY))?
        .try_into()
        .map_err(program_err(KRETPROBE_COPY))?;
    p.load().map_err(program_err(KRETPROBE_COPY))?;
    p.attach("skb_copy_datagram_iter", 0)
        .map_err(program_err(KRETPROBE_COPY))?;
    attach_raw_tracepoints(ebpf, PROCESS_HOOKS)
}
