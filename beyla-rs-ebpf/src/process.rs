//! Process life cycle hooks shared by the capture backends.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use beyla_rs_common::{CONFIG_WATCH_EXEC, EventKind, STAT_PID_MAP_FULL};

use crate::{
    maps::{OFFSETS, config, count, set_tracked, tracked},
    record::{Res, emit_simple, kernel_read},
};

/// The main thread of a process exits: forget it if it was tracked.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn beyla_process_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return 0;
    }
    if tracked(tgid) {
        set_tracked(tgid, false);
        let _ = emit_simple(EventKind::Exit, pid_tgid, -1, 0);
    }
    0
}

/// A process forks (socket-level backends; the syscall backend sees `clone` return). The
/// tracepoint runs in the parent; the child's pid and tgid are in its `task_struct`, and are
/// the pids of the initial namespace, the daemon's.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn beyla_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Res {
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent = (pid_tgid >> 32) as u32;
    if !tracked(parent) {
        return Ok(());
    }
    let o = OFFSETS.get(0).ok_or(-1)?;
    let child: u64 = ctx.arg(1);
    let tgid: u32 = kernel_read(child + o.task_tgid as u64)?;
    if tgid == parent {
        // A new thread of the same process.
        return Ok(());
    }
    if !set_tracked(tgid, true) {
        count(STAT_PID_MAP_FULL);
    }
    emit_simple(EventKind::Fork, pid_tgid, -1, tgid)
}

/// A process executes a program (socket-level backends): only sent while exec watching is
/// enabled (selection by executable).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn beyla_process_exec(_ctx: RawTracePointContext) -> i32 {
    match config() {
        Some(c) if c.flags & CONFIG_WATCH_EXEC != 0 => {}
        _ => return 0,
    }
    let _ = emit_simple(EventKind::Exec, bpf_get_current_pid_tgid(), -1, 0);
    0
}
