//! The syscall-tracepoint capture backend.
//!
//! One raw tracepoint on `sys_exit` sees every syscall's return. It reads the syscall number and
//! arguments from the saved user registers (`pt_regs`), so no enter→exit stash map is needed: at
//! exit, read buffers are filled and write buffers still hold what was written. Raw tracepoints
//! attach by name, without tracefs, on every kernel since 4.17 — including kernels built without
//! kprobes, where Beyla captures nothing.
//!
//! Cost model (see `shared/docs/machine.md`): every syscall on the machine runs this program, so
//! the common path must reject fast. The order of checks is: tracked process (a bit in an array
//! lookup the verifier inlines), return value (failed calls such as EAGAIN reads leave at
//! once), syscall number and arguments (one read of the saved registers), tracked socket fd
//! (one LRU lookup). Only then is anything copied.
//!
//! Connections are keyed by `conn_key(tgid, fd)`; a `close` and an `accept` of the same fd
//! number settle the entry by atomic exchange (see `ConnInfo::fd_state`).

mod nr;
mod rights;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::bindings::BPF_NOEXIST;
use beyla_rs_common::{
    CONFIG_WATCH_EXEC, ConnInfo, DIR_EGRESS, DIR_INGRESS, EVENT_HEADER_LEN, EventKind, FD_CLOSED,
    FD_DISPLACED, FD_RETIRED, ROLE_CLIENT, ROLE_SERVER, STAT_CONN_CONTENDED, STAT_CONN_MAP_FULL,
    STAT_PID_MAP_FULL, conn_key,
};
use nr::*;

use crate::{
    data::{self, Source},
    maps::{CONNS, config, count, next_conn_id, port_selected, set_tracked, tracked},
    record::{
        Res, copy_sockaddr, emit_conn, emit_simple, fill_header, header, submit, submit_now,
        user_u64,
    },
    scratch::scratch,
    tls,
};

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn beyla_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Res {
    let ret: i64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !tracked(tgid) {
        // For processes we do not instrument only a successful bind (selection by port) and
        // exec (selection by executable) matter, and both return 0: everything else leaves
        // here without even reading the syscall number.
        if ret != 0 {
            return Ok(());
        }
        let a = args(ctx.arg(0))?;
        return match a.nr {
            SYS_BIND => on_bind(&a, pid_tgid),
            SYS_EXECVE | SYS_EXECVEAT => on_exec(pid_tgid),
            _ => Ok(()),
        };
    }
    // Failed calls matter only for non-blocking connects.
    if ret < 0 && ret != -EINPROGRESS {
        return Ok(());
    }
    let a = args(ctx.arg(0))?;
    match a.nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO | SYS_READV | SYS_WRITEV | SYS_RECVMSG
        | SYS_SENDMSG | SYS_SENDFILE => {
            if ret <= 0 {
                return Ok(());
            }
            // Descriptors passed along (on a Unix socket, which is not followed itself).
            if a.nr == SYS_SENDMSG {
                let _ = rights::on_send(&a, pid_tgid);
            } else if a.nr == SYS_RECVMSG {
                let _ = rights::on_receive(&a, pid_tgid);
            }
            // One call site, inlined: the data path's frame is this program's (the verifier
            // bounds the stack of the deepest chain of calls, bpf_loop callbacks included).
            on_data(&a, pid_tgid, ret as u64)
        }
        SYS_ACCEPT | SYS_ACCEPT4 if ret >= 0 => on_accept(&a, pid_tgid, ret),
        SYS_CONNECT => on_connect(&a, pid_tgid),
        SYS_CLOSE if ret == 0 => on_close(&a, pid_tgid),
        SYS_BIND if ret == 0 => on_bind(&a, pid_tgid),
        SYS_CLONE | SYS_CLONE3 | SYS_FORK | SYS_VFORK if ret > 0 => {
            on_fork(&a, pid_tgid, ret as u32)
        }
        SYS_DUP | SYS_DUP2 | SYS_DUP3 | SYS_FCNTL if ret >= 0 => on_dup(&a, pid_tgid, ret as u32),
        SYS_EXECVE | SYS_EXECVEAT if ret == 0 => on_exec(pid_tgid),
        _ => Ok(()),
    }
}

/// The syscall's number and its first three arguments, as saved in the user registers:
/// `dx`, `si`, `di` and `orig_ax` are adjacent in x86_64's `struct pt_regs`, so one read
/// fetches all four (it was one helper call per register, up to four per data syscall).
#[repr(C)]
struct Args {
    dx: u64,
    si: u64,
    di: u64,
    nr: u64,
}

const _: () = assert!(
    REG_SI == REG_DX + 8
        && REG_DI == REG_DX + 16
        && REG_ORIG_AX == REG_DX + 24
        && core::mem::size_of::<Args>() == 32
);

#[inline(always)]
fn args(regs: u64) -> Result<Args, i64> {
    let mut a = Args {
        dx: 0,
        si: 0,
        di: 0,
        nr: 0,
    };
    // SAFETY: `regs` is the kernel's `struct pt_regs *` for this syscall; the helper checks the
    // read and fails rather than faulting.
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut a).cast(),
            core::mem::size_of::<Args>() as u32,
            (regs + REG_DX) as *const core::ffi::c_void,
        )
    };
    if r < 0 { Err(r) } else { Ok(a) }
}

/// A data syscall on a tracked fd: its buffer or iovec array from the saved registers.
#[inline(always)]
fn on_data(a: &Args, pid_tgid: u64, ret: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    let Some(conn) = live_conn(key) else {
        return Ok(());
    };
    let direction = match a.nr {
        SYS_READ | SYS_RECVFROM | SYS_READV | SYS_RECVMSG => DIR_INGRESS,
        _ => DIR_EGRESS,
    };
    let src = match a.nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO => Source::Buf(a.si),
        SYS_READV | SYS_WRITEV => Source::Iov {
            iov: a.si,
            cnt: a.dx,
            kernel: false,
        },
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
            //                 size_t msg_iovlen; ... }
            let msg = a.si;
            Source::Iov {
                iov: user_u64(msg + 16)?,
                cnt: user_u64(msg + 24)?,
                kernel: false,
            }
        }
        _ => Source::Elsewhere,
    };
    if tls::claimed(key, &conn, direction, src, pid_tgid, fd as i32) {
        return Ok(());
    }
    data::data(key, conn, direction, src, ret, pid_tgid, fd as i32, 0)
}

/// The last connection each tracked process accepted, `[fd, conn_id]`: a server that forks a
/// child to serve each connection it accepts (PostgreSQL's postmaster, inetd-style servers)
/// hands it over at its next fork (see `on_fork`). Processes that serve their own accepts
/// overwrite it each time; LRU: exited processes cannot pin slots.
#[map]
static LAST_ACCEPT: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

fn on_accept(a: &Args, pid_tgid: u64, newfd: i64) -> Res {
    let conn = ConnInfo::new(next_conn_id(), ROLE_SERVER);
    insert_conn(pid_tgid, newfd as u32, conn, true);
    let _ = LAST_ACCEPT.insert(&((pid_tgid >> 32) as u32), &[newfd as u64, conn.conn_id], 0);
    let listen_fd = a.di as u32;
    let addr = a.si;
    let addrlen_ptr = a.dx;
    let s = scratch()?;
    fill_header(
        s,
        EventKind::Accept,
        pid_tgid,
        newfd as i32,
        listen_fd,
        Some(&conn),
    );
    let mut n = 0;
    if addr != 0 && addrlen_ptr != 0 {
        let mut addrlen: u32 = 0;
        // SAFETY: user memory read of the `socklen_t` the kernel just wrote.
        let r =
            unsafe { bpf_probe_read_user((&raw mut addrlen).cast(), 4, addrlen_ptr as *const _) };
        if r == 0 {
            n = copy_sockaddr(s, addr, addrlen as u64);
        }
    }
    header(s).captured_len = n as u32;
    if n == 0 {
        // accept(fd, NULL, NULL) (libuv, Node): the daemon must read the peer from the socket
        // itself before the connection closes, so wake it now rather than at its next tick.
        return submit_now(s, n);
    }
    submit(s, n)
}

fn on_connect(a: &Args, pid_tgid: u64) -> Res {
    let fd = a.di as u32;
    let addr = a.si;
    let addrlen = a.dx;
    let s = scratch()?;
    let n = copy_sockaddr(s, addr, addrlen);
    if n < 2 {
        return Ok(());
    }
    let family = u16::from_ne_bytes([s.buf[EVENT_HEADER_LEN], s.buf[EVENT_HEADER_LEN + 1]]);
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let conn = ConnInfo::new(next_conn_id(), ROLE_CLIENT);
    insert_conn(pid_tgid, fd, conn, true);
    fill_header(s, EventKind::Connect, pid_tgid, fd as i32, 0, Some(&conn));
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_close(a: &Args, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    for _ in 0..EXCHANGE_TRIES {
        let Some(p) = CONNS.get_ptr_mut(&key) else {
            return Ok(());
        };
        let state = fd_state(p);
        let seen = load(state);
        if seen & FD_CLOSED != 0 {
            // Another close of this fd won (it is deleting the entry).
            return Ok(());
        }
        if seen & FD_DISPLACED != 0 {
            // An accept of this fd number is replacing the entry: read the new one.
            continue;
        }
        // A pending close of an earlier connection on this fd, or this connection's own.
        let next = if seen > 0 { seen - 1 } else { FD_CLOSED };
        if !exchange(state, seen, next) {
            continue;
        }
        if seen > 0 {
            // The connection it closed was reported closed when its fd number was taken
            // (see `insert_conn`).
            return Ok(());
        }
        // SAFETY: map value read, before the delete below hands the element back to the LRU
        // map's free list.
        let closed = unsafe { *p };
        // This CPU retired the entry: nothing else replaces or deletes it (an accept of the
        // fd number waits for the delete, see `insert_conn`), so the delete removes this
        // connection and nothing newer.
        let _ = CONNS.remove(&key);
        let s = scratch()?;
        fill_header(s, EventKind::Close, pid_tgid, fd as i32, 0, Some(&closed));
        return submit(s, 0);
    }
    count(STAT_CONN_CONTENDED);
    Ok(())
}

/// Attempts at an entry's exchange before giving up (counted). Another CPU makes this side
/// try again only while it holds the entry between its exchange and its map update or
/// delete, a few hundred nanoseconds with preemption off; one try is a lookup and a load,
/// tens of nanoseconds, so the bound covers that window several times over. A close that gave
/// up would leave its pending count on the next connection, whose own close it then swallows.
const EXCHANGE_TRIES: u32 = 32;

/// The entry's [`ConnInfo::fd_state`], which every writer changes by atomic exchange only.
#[inline(always)]
fn fd_state(p: *mut ConnInfo) -> *mut u64 {
    // SAFETY: a field of a map value; no reference is made, only its address.
    unsafe { &raw mut (*p).fd_state }
}

#[inline(always)]
fn load(state: *mut u64) -> u64 {
    // SAFETY: an aligned field of a map value that outlives the program's run (RCU). An
    // aligned 8-byte load is single-copy atomic on BPF (the backend has no atomic-load node);
    // volatile keeps it one load, re-read on every try.
    unsafe { state.read_volatile() }
}

/// Compare-and-exchange (BPF_CMPXCHG); true when this CPU's exchange took place.
#[inline(always)]
fn exchange(state: *mut u64, seen: u64, next: u64) -> bool {
    // SAFETY: as in `load`; the map's `BPF_ANY` updates replace the element, never write into
    // it, so every in-place writer of the word is an exchange.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Relaxed }>(
            state, seen, next,
        )
        .1
    }
}

/// The entry of `key` when it stands for an open connection.
#[inline(always)]
fn live_conn(key: u64) -> Option<ConnInfo> {
    // SAFETY: map value read.
    let c = unsafe { CONNS.get(&key) }?;
    c.is_live().then_some(*c)
}

/// Register a connection on `fd`. A live entry already there means the fd was released by a
/// `close` that has not returned yet (another thread got the number first: `close_pending`),
/// and so were the fds of the connections that entry displaced in turn: count them all, so
/// that none of those closes is taken for this connection's, and report the displaced
/// connection closed. The old entry is claimed by exchange first, so a
/// `close` exit racing on another CPU either retires it first (and deletes it: this waits for
/// that) or moves on to the new one.
#[inline(always)]
fn insert_conn(pid_tgid: u64, fd: u32, mut conn: ConnInfo, close_pending: bool) {
    let key = conn_key((pid_tgid >> 32) as u32, fd);
    for _ in 0..EXCHANGE_TRIES {
        let Some(p) = CONNS.get_ptr_mut(&key) else {
            match CONNS.insert(&key, &conn, BPF_NOEXIST as u64) {
                Ok(()) => return,
                // Inserted by another CPU since the lookup, or a retired entry whose delete
                // has not happened yet: look again.
                Err(e) if i64::from(e) == -EEXIST => continue,
                Err(_) => {
                    count(STAT_CONN_MAP_FULL);
                    return;
                }
            }
        };
        let state = fd_state(p);
        let seen = load(state);
        if seen & FD_RETIRED != 0 {
            // Its close is deleting it (or another CPU is replacing it): replacing it now
            // would let that delete remove this connection.
            continue;
        }
        if !exchange(state, seen, FD_DISPLACED) {
            continue;
        }
        // SAFETY: map value read of an entry this CPU claimed.
        let displaced = unsafe { *p };
        conn.fd_state = (seen + close_pending as u64).min(FD_DISPLACED - 1);
        if CONNS.insert(&key, &conn, 0).is_err() {
            count(STAT_CONN_MAP_FULL);
        }
        // Its fd number was released, so the displaced connection is closed on this fd: say
        // so now, ahead of this one's record, as its own close exit will not.
        let _ = emit_conn(EventKind::Close, pid_tgid, fd as i32, &displaced);
        return;
    }
    // The entry never settled (a close delayed between its exchange and its delete): register
    // the connection anyway, counted, rather than lose it for certain.
    count(STAT_CONN_CONTENDED);
    if CONNS.insert(&key, &conn, 0).is_err() {
        count(STAT_CONN_MAP_FULL);
    }
}

fn on_bind(a: &Args, pid_tgid: u64) -> Res {
    let addr = a.si;
    // struct sockaddr_in / sockaddr_in6 both start with family (u16) and port (u16, big endian).
    let head = user_u64(addr).unwrap_or(0);
    let family = head as u16;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let port = u16::from_be(((head >> 16) & 0xffff) as u16);
    if !port_selected(port) {
        return Ok(());
    }
    let tgid = (pid_tgid >> 32) as u32;
    match config() {
        Some(c) if c.self_tgid != tgid => {}
        _ => return Ok(()),
    }
    if !set_tracked(tgid, true) {
        count(STAT_PID_MAP_FULL);
    }
    let fd = a.di as i32;
    let addrlen = a.dx;
    let s = scratch()?;
    let n = copy_sockaddr(s, addr, addrlen);
    fill_header(s, EventKind::Bind, pid_tgid, fd, port as u32, None);
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_fork(a: &Args, pid_tgid: u64, child: u32) -> Res {
    let flags = match a.nr {
        SYS_CLONE => a.di,
        // struct clone_args starts with `u64 flags`.
        SYS_CLONE3 => user_u64(a.di)?,
        _ => 0,
    };
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    // `child` is the pid in the parent's pid namespace, which is the daemon's for processes on
    // the host; the daemon reconciles namespaced children from /proc.
    if !set_tracked(child, true) {
        count(STAT_PID_MAP_FULL);
    }
    emit_simple(EventKind::Fork, pid_tgid, -1, child)?;
    hand_over(pid_tgid, child)
}

/// The child of a fork holds a copy of every fd, but connections are keyed by `(tgid, fd)`:
/// the connection the parent accepted last, if still open, is registered for the child too
/// (reported as a `Dup`), so a child that serves it is followed. Only that one: walking every
/// fd of the parent is not possible here, and forking servers fork right after the accept.
fn hand_over(pid_tgid: u64, child: u32) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map value read.
    let Some(&[fd, conn_id]) = (unsafe { LAST_ACCEPT.get(&tgid) }) else {
        return Ok(());
    };
    let _ = LAST_ACCEPT.remove(&tgid);
    let fd = fd as u32;
    let Some(conn) = live_conn(conn_key(tgid, fd)).filter(|c| c.conn_id == conn_id) else {
        return Ok(());
    };
    // The child's fd table is a fresh copy: no close of this fd is pending in it.
    insert_conn(
        (child as u64) << 32 | child as u64,
        fd,
        ConnInfo {
            fd_state: 0,
            ..conn
        },
        false,
    );
    let s = scratch()?;
    fill_header(s, EventKind::Dup, pid_tgid, fd as i32, fd, Some(&conn));
    submit(s, 0)
}

/// A tracked socket was duplicated (`dup*`, `fcntl(F_DUPFD*)`): the new fd is the same
/// connection. Rust's `TcpStream::try_clone` and many servers read on one fd and write on the
/// other.
fn on_dup(a: &Args, pid_tgid: u64, newfd: u32) -> Res {
    if a.nr == SYS_FCNTL {
        let cmd = a.si;
        if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
            return Ok(());
        }
    }
    let tgid = (pid_tgid >> 32) as u32;
    let oldfd = a.di as u32;
    if oldfd == newfd {
        return Ok(());
    }
    let Some(conn) = live_conn(conn_key(tgid, oldfd)) else {
        return Ok(());
    };
    insert_conn(
        pid_tgid,
        newfd,
        ConnInfo {
            fd_state: 0,
            ..conn
        },
        // dup2/dup3 onto an open fd close it themselves, with no `close` to come; dup and
        // F_DUPFD take the lowest free number, which a `close` not yet returned may have freed.
        !matches!(a.nr, SYS_DUP2 | SYS_DUP3),
    );
    let s = scratch()?;
    fill_header(
        s,
        EventKind::Dup,
        pid_tgid,
        newfd as i32,
        oldfd,
        Some(&conn),
    );
    submit(s, 0)
}

fn on_exec(pid_tgid: u64) -> Res {
    match config() {
        Some(c) if c.flags & CONFIG_WATCH_EXEC != 0 => {}
        _ => return Ok(()),
    }
    emit_simple(EventKind::Exec, pid_tgid, -1, 0)
}
