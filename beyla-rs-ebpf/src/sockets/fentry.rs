//! The fentry/fexit flavour of the socket-level backend: BTF trampolines, the cheapest way
//! into a kernel function, where the kernel allows them (not under lockdown, not on the
//! development VM, which refuses them with EPERM).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use beyla_rs_common::{DIR_EGRESS, DIR_INGRESS};

use super::{
    MSG_PEEK, chunk_exit, close, listen, msg_entry, msg_exit, not_user_exit, recvmsg_flags,
};

#[fentry(function = "tcp_sendmsg")]
pub fn beyla_fentry_tcp_sendmsg(ctx: FEntryContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let msg: u64 = ctx.arg(1);
    let _ = msg_entry(sk, msg, DIR_EGRESS, bpf_get_current_pid_tgid());
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn beyla_fexit_tcp_sendmsg(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.ret::<i32>().unwrap_or(0) as i64;
    let _ = msg_exit(bpf_get_current_pid_tgid(), ret);
    0
}

#[fentry(function = "tcp_recvmsg")]
pub fn beyla_fentry_tcp_recvmsg(ctx: FEntryContext) -> i32 {
    if recvmsg_flags(ctx.arg(3), ctx.arg(4)) & MSG_PEEK != 0 {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let msg: u64 = ctx.arg(1);
    let _ = msg_entry(sk, msg, DIR_INGRESS, bpf_get_current_pid_tgid());
    0
}

#[fexit(function = "tcp_recvmsg")]
pub fn beyla_fexit_tcp_recvmsg(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.ret::<i32>().unwrap_or(0) as i64;
    let _ = msg_exit(bpf_get_current_pid_tgid(), ret);
    0
}

/// `sendfile`/`splice` to a TCP socket before Linux 6.5 (later ones go through
/// `tcp_sendmsg` with page vectors). Attached only where the kernel has it.
#[fexit(function = "tcp_sendpage")]
pub fn beyla_fexit_tcp_sendpage(ctx: FExitContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret: i64 = ctx.ret::<i32>().unwrap_or(0) as i64;
    let _ = not_user_exit(sk, DIR_EGRESS, bpf_get_current_pid_tgid(), ret);
    0
}

/// Copies into a read's buffer: only reads already blocked when the hooks were attached are
/// taken from here (see `in_flight_chunk`).
#[fexit(function = "skb_copy_datagram_iter")]
pub fn beyla_fexit_skb_copy(ctx: FExitContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let to: u64 = ctx.arg(2);
    let len: i32 = ctx.arg(3);
    let ret: i64 = ctx.ret::<i32>().unwrap_or(-1) as i64;
    let _ = chunk_exit(skb, to, len as u64, ret, bpf_get_current_pid_tgid());
    0
}

#[fentry(function = "tcp_close")]
pub fn beyla_fentry_tcp_close(ctx: FEntryContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let _ = close(sk, bpf_get_current_pid_tgid());
    0
}

#[fentry(function = "inet_csk_listen_start")]
pub fn beyla_fentry_listen(ctx: FEntryContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let _ = listen(sk, bpf_get_current_pid_tgid());
    0
}
