//! Probes on Go's `crypto/tls`, compiled into each Go executable: `(*Conn).Write` at its
//! entry (the plaintext is its argument), `(*Conn).Read` at its entry (where the plaintext will
//! go) and at each of its `RET` instructions (how much came). Not uretprobes: Go moves
//! goroutine stacks and refuses return addresses it does not know.
//!
//! Register ABI (Go 1.17 on, x86-64): the receiver in RAX, the slice in RBX (pointer) and RCX
//! (length), the count returned in RAX, the current goroutine in R14. A read is keyed by its
//! goroutine, which may run on another thread by the time it returns.
//!
//! The connection is the socket the `*tls.Conn` wraps: its fd is read from the Go structures
//! (`GO_*` offsets), then the connection's key in `CONNS`: `conn_key(tgid, fd)`, or the socket
//! the fd refers to for the socket-level backends.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use beyla_rs_common::{
    CONFIG_SOCKET_KEYS, CONN_DROPPED, CONN_TLS, ConnInfo, DIR_EGRESS, DIR_INGRESS, EVENT_FLAG_TLS,
    GO_NETFD_PFD, GO_PFD_SYSFD, GO_TCPCONN_FD, GO_TLS_CONN_CONN, conn_key,
};

use crate::{
    data::{self, Source},
    files::socket_of,
    maps::{CONNS, config, tracked},
    record::{Res, user_u64},
};

/// A `Read` in progress.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoRead {
    conn: u64,
    buf: u64,
}

/// Reads in progress by `[tgid, goroutine]`. LRU: a goroutine that panicked out of a read
/// leaves its entry behind.
#[map]
static GO_READS: LruHashMap<[u64; 2], GoRead> = LruHashMap::with_max_entries(16384, 0);

/// `func (c *Conn) Write(b []byte) (int, error)`: entry.
#[uprobe]
pub fn beyla_go_tls_write(ctx: ProbeContext) -> u32 {
    let _ = try_write(&ctx);
    0
}

fn try_write(ctx: &ProbeContext) -> Res {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // SAFETY: the probe's context is the traced thread's saved registers.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    send(pid_tgid, conn, buf, len, DIR_EGRESS)
}

/// `func (c *Conn) Read(b []byte) (int, error)`: entry. The connection is marked now, before
/// the read's socket I/O, so that its encrypted bytes are not sent.
#[uprobe]
pub fn beyla_go_tls_read(ctx: ProbeContext) -> u32 {
    let _ = try_read(&ctx);
    0
}

fn try_read(ctx: &ProbeContext) -> Res {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // SAFETY: the probe's context is the traced thread's saved registers.
    let (conn, buf, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
    let _ = connection(pid_tgid, conn)?;
    let _ = GO_READS.insert(&[pid_tgid >> 32, g], &GoRead { conn, buf }, 0);
    Ok(())
}

/// A `RET` of `(*Conn).Read`.
#[uprobe]
pub fn beyla_go_tls_read_ret(ctx: ProbeContext) -> u32 {
    let _ = try_read_ret(&ctx);
    0
}

fn try_read_ret(ctx: &ProbeContext) -> Res {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the probe's context is the traced thread's saved registers.
    let (n, g) = unsafe { ((*ctx.regs).rax as i64, (*ctx.regs).r14) };
    let key = [pid_tgid >> 32, g];
    // SAFETY: map value read, copied out before the entry is removed.
    let Some(read) = (unsafe { GO_READS.get(&key) }).copied() else {
        return Ok(());
    };
    let _ = GO_READS.remove(&key);
    if n <= 0 {
        return Ok(());
    }
    send(pid_tgid, read.conn, read.buf, n as u64, DIR_INGRESS)
}

/// Send `len` plaintext bytes at `buf` that `*tls.Conn` `conn` moved in `direction`.
#[inline(always)]
fn send(pid_tgid: u64, conn: u64, buf: u64, len: u64, direction: u8) -> Res {
    if len == 0 {
        return Ok(());
    }
    let (key, info, fd) = connection(pid_tgid, conn)?;
    if info.flags & CONN_DROPPED != 0 {
        return Ok(());
    }
    data::data(
        key,
        info,
        direction,
        Source::Buf(buf),
        len,
        pid_tgid,
        fd,
        EVENT_FLAG_TLS,
    )
}

/// The tracked connection a `*tls.Conn` wraps, marked as TLS: its key in `CONNS`, its entry and
/// the fd to report (-1 for socket keys).
#[inline(always)]
fn connection(pid_tgid: u64, tls_conn: u64) -> Result<(u64, ConnInfo, i32), i64> {
    // The `net.Conn` interface's data word: a `*net.TCPConn`.
    let tcp = user_u64(tls_conn + GO_TLS_CONN_CONN + 8)?;
    let netfd = user_u64(tcp + GO_TCPCONN_FD)?;
    let fd = user_u64(netfd + GO_NETFD_PFD + GO_PFD_SYSFD)? as i64;
    if !(0..=i32::MAX as i64).contains(&fd) {
        return Err(-1);
    }
    let socket_keys = config().is_some_and(|c| c.flags & CONFIG_SOCKET_KEYS != 0);
    let (key, reported) = if socket_keys {
        (socket_of(fd as u64)?, -1)
    } else {
        (conn_key((pid_tgid >> 32) as u32, fd as u32), fd as i32)
    };
    let p = CONNS.get_ptr_mut(&key).ok_or(-1)?;
    // SAFETY: map value; the flag byte is written in place (see `CONN_WIDE_CAPTURE`'s).
    let info = unsafe {
        (*p).flags |= CONN_TLS;
        *p
    };
    if !info.is_live() {
        return Err(-1);
    }
    Ok((key, info, reported))
}
