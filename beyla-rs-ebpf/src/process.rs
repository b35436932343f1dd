//! Process life cycle hooks shared by the capture backends.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use beyla_rs_common::EventKind;

use crate::{
    maps::{set_tracked, tracked},
    record::emit_simple,
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
