//! Probes on OpenSSL's (and BoringSSL's) API, in a shared `libssl` or linked into an
//! executable (Node): `SSL_read`/`SSL_write` and their `_ex` forms carry the plaintext,
//! `SSL_do_handshake` ties a session to its connection before any data moves, `SSL_free` ends
//! it. One return probe serves every call: the entry noted what the call was.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use beyla_rs_common::{DIR_EGRESS, DIR_INGRESS};

use super::{call_entry, call_return, kind, session_freed};

/// `int SSL_read(SSL *ssl, void *buf, int num)`
#[uprobe]
pub fn beyla_ssl_read(ctx: ProbeContext) -> u32 {
    entry(&ctx, DIR_INGRESS, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
#[uprobe]
pub fn beyla_ssl_read_ex(ctx: ProbeContext) -> u32 {
    entry(&ctx, DIR_INGRESS, true);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`
#[uprobe]
pub fn beyla_ssl_write(ctx: ProbeContext) -> u32 {
    entry(&ctx, DIR_EGRESS, false);
    0
}

/// `int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)`
#[uprobe]
pub fn beyla_ssl_write_ex(ctx: ProbeContext) -> u32 {
    entry(&ctx, DIR_EGRESS, true);
    0
}

/// `int SSL_do_handshake(SSL *ssl)` (also what `SSL_accept`/`SSL_connect` run).
#[uprobe]
pub fn beyla_ssl_handshake(ctx: ProbeContext) -> u32 {
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    call_entry(
        bpf_get_current_pid_tgid(),
        ssl,
        0,
        0,
        DIR_INGRESS,
        kind::HANDSHAKE,
    );
    0
}

/// Return of every call above.
#[uretprobe]
pub fn beyla_ssl_return(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    let _ = call_return(bpf_get_current_pid_tgid(), ret as i32 as i64);
    0
}

/// `void SSL_free(SSL *ssl)`
#[uprobe]
pub fn beyla_ssl_free(ctx: ProbeContext) -> u32 {
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    session_freed(bpf_get_current_pid_tgid(), ssl);
    0
}

#[inline(always)]
fn entry(ctx: &ProbeContext, direction: u8, ex: bool) {
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let len_ptr: u64 = if ex { ctx.arg(3).unwrap_or(0) } else { 0 };
    call_entry(
        bpf_get_current_pid_tgid(),
        ssl,
        buf,
        len_ptr,
        direction,
        kind::DATA,
    );
}
