//! The kprobe/kretprobe flavour of the socket-level backend, for kernels that refuse fentry
//! (no BTF trampolines) but have kprobes. A kretprobe sees no arguments: every call is noted
//! at entry.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use beyla_rs_common::{DIR_EGRESS, DIR_INGRESS};

use super::{
    MSG_PEEK, chunk_entry, chunk_return, close, listen, msg_entry, msg_exit, not_user_entry,
    recvmsg_flags,
};

#[kprobe]
pub fn beyla_kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        let _ = msg_entry(sk, msg, DIR_EGRESS, bpf_get_current_pid_tgid());
    }
    0
}

#[kprobe]
pub fn beyla_kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    let flags = recvmsg_flags(
        ctx.arg::<u64>(3).unwrap_or(0),
        ctx.arg::<u64>(4).unwrap_or(0),
    );
    if flags & MSG_PEEK != 0 {
        return 0;
    }
    if let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        let _ = msg_entry(sk, msg, DIR_INGRESS, bpf_get_current_pid_tgid());
    }
    0
}

#[kprobe]
pub fn beyla_kprobe_tcp_sendpage(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        let _ = not_user_entry(sk, DIR_EGRESS, bpf_get_current_pid_tgid());
    }
    0
}

/// The return of `tcp_sendmsg`, `tcp_recvmsg` and `tcp_sendpage`: one program, attached to
/// each (what the entry noted says which).
#[kretprobe]
pub fn beyla_kretprobe_tcp_io(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret::<i32>() as i64;
    let _ = msg_exit(bpf_get_current_pid_tgid(), ret);
    0
}

/// Copies into a read's buffer: only reads already blocked when the hooks were attached are
/// taken from here (see `in_flight_chunk`).
#[kprobe]
pub fn beyla_kprobe_skb_copy(ctx: ProbeContext) -> u32 {
    if let (Some(skb), Some(to), Some(len)) =
        (ctx.arg::<u64>(0), ctx.arg::<u64>(2), ctx.arg::<i32>(3))
    {
        let _ = chunk_entry(skb, to, len as u64, bpf_get_current_pid_tgid());
    }
    0
}

#[kretprobe]
pub fn beyla_kretprobe_skb_copy(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret::<i32>() as i64;
    let _ = chunk_return(bpf_get_current_pid_tgid(), ret);
    0
}

#[kprobe]
pub fn beyla_kprobe_tcp_close(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        let _ = close(sk, bpf_get_current_pid_tgid());
    }
    0
}

#[kprobe]
pub fn beyla_kprobe_listen(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        let _ = listen(sk, bpf_get_current_pid_tgid());
    }
    0
}
