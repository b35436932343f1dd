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
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg},
};

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
    record::{Res, copy_sockaddr, emit_simple, fill_header, header, submit, submit_now, user_u64},
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
        SYS_OPEN | SYS_OPENAT | SYS_OPENAT2 | SYS_CREAT | SYS_SOCKET | SYS_EVENTFD
        | SYS_EVENTFD2 | SYS_EPOLL_CREATE | SYS_EPOLL_CREATE1 | SYS_TIMERFD_CREATE
        | SYS_SIGNALFD | SYS_SIGNALFD4 | SYS_INOTIFY_INIT | SYS_INOTIFY_INIT1
        | SYS_MEMFD_CREATE | SYS_PIDFD_OPEN
            if ret >= 0 =>
        {
            on_new_fd(pid_tgid, ret as u32, true);
            Ok(())
        }
        SYS_PIPE | SYS_PIPE2 if ret == 0 => on_pipe(&a, pid_tgid),
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
    if addr == 0 || addrlen < 2 {
        return Ok(());
    }
    // The family first, read on its own: `insert_conn` needs the scratch buffer free.
    let family = user_u64(addr)? as u16;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let conn = ConnInfo::new(next_conn_id(), ROLE_CLIENT);
    // `connect` gives no new fd: an entry there is this socket's own (the placeholder its
    // `socket` exit left when the number had been released by a close not yet returned, which
    // counted that close; or an earlier connection of a socket connected again), so no close
    // of another one is pending.
    insert_conn(pid_tgid, fd, conn, false);
    let s = scratch()?;
    let n = copy_sockaddr(s, addr, addrlen);
    fill_header(s, EventKind::Connect, pid_tgid, fd as i32, 0, Some(&conn));
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_close(a: &Args, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    // Most closes are of files and pipes: leave before setting anything up.
    if CONNS.get_ptr_mut(&key).is_none() {
        return Ok(());
    }
    let t = attempt()?;
    t.start(key, ConnInfo::new(0, 0), false);
    // SAFETY: `close_step` is a static subprogram with the callback signature bpf_loop
    // expects; it takes no context (it reads this CPU's `ATTEMPT`).
    unsafe {
        bpf_loop(
            ATTEMPT_LOOPS,
            close_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    match t.outcome {
        RETIRED if !t.conn.is_placeholder() => {
            let s = scratch()?;
            fill_header(s, EventKind::Close, pid_tgid, fd as i32, 0, Some(&t.conn));
            submit(s, 0)
        }
        DONE | RETIRED => Ok(()),
        _ => {
            count(STAT_CONN_CONTENDED);
            Ok(())
        }
    }
}

/// One attempt of a `close` exit at its fd's entry (a bpf_loop callback); returns 1 to stop.
#[inline(never)]
extern "C" fn close_step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Ok(t) = attempt() else {
        return 1;
    };
    let Some(p) = CONNS.get_ptr_mut(&t.key) else {
        return t.finish(DONE);
    };
    let state = fd_state(p);
    let seen = load(state);
    if !still(t.key, p) {
        return t.again();
    }
    if seen & FD_CLOSED != 0 {
        // Another close of this fd won (it is deleting the entry).
        return t.finish(DONE);
    }
    if seen & FD_DISPLACED != 0 {
        // An accept of this fd number is replacing the entry: read the new one once it is
        // there.
        return t.again();
    }
    // A pending close of an earlier connection on this fd, or this connection's own.
    let next = if seen > 0 { seen - 1 } else { FD_CLOSED };
    if !exchange(state, seen, next) {
        return t.again();
    }
    if !still(t.key, p) {
        // Reused for another entry since the check above: give it its state back.
        exchange(state, next, seen);
        return t.again();
    }
    if seen > 0 {
        // The connection it closed was reported closed when its fd number was taken (see
        // `insert_conn`).
        return t.finish(DONE);
    }
    // SAFETY: map value read, before the delete below hands the element back to the LRU
    // map's free list.
    t.conn = unsafe { *p };
    // This CPU retired the entry: nothing else replaces or deletes it (an accept of the fd
    // number waits for the delete, see `insert_step`), so the delete removes this connection
    // and nothing newer.
    let _ = CONNS.remove(&t.key);
    t.finish(RETIRED)
}

/// A `close` or an `accept` (`connect`, `dup`, a fork's hand-over) at an fd's entry, tried
/// again and again by bpf_loop until it settles: [`Attempt::again`] while another CPU holds
/// the entry (retired: between its exchange and its map delete or update) or won the last
/// exchange.
///
/// The other CPU runs only a few instructions in that window, with preemption off, but an
/// interrupt there delays it for as long as the interrupt and the softirqs run at its end take
/// (the kernel allows those up to 2 ms each time), and so does a hypervisor that deschedules
/// its vCPU. A fixed 32 tries (about 2 µs) did not cover that: under load, about one `accept`
/// in a million gave up on an entry whose `close` had been held up so, registered its
/// connection anyway, and the `close`'s delete, when it resumed, removed the new connection,
/// whose data and close records, and so its span, were lost. A retired entry is a lock the
/// other CPU holds: this side waits for it like for a spin lock, bounded by [`SETTLE_NS`].
#[repr(C)]
struct Attempt {
    key: u64,
    /// 0 until the first wait; then when waiting ends (`bpf_ktime_get_ns`).
    deadline: u64,
    /// `close`: the connection it closed (out); `accept`: the new connection (in).
    conn: ConnInfo,
    /// `accept`: the connection it displaced (out).
    displaced: ConnInfo,
    /// `accept`: a close of an earlier connection on this fd may still be pending.
    close_pending: u64,
    /// `PENDING`, `DONE`, `RETIRED` (`close`: it retired and deleted the entry) or
    /// `DISPLACED` (`accept`: it replaced a live entry).
    outcome: u64,
}

const PENDING: u64 = 0;
const DONE: u64 = 1;
const RETIRED: u64 = 2;
const DISPLACED: u64 = 3;

/// Longest wait for another CPU's hold on an entry (see [`Attempt`]).
const SETTLE_NS: u64 = 10_000_000;

/// bpf_loop's bound on an [`Attempt`]'s steps (its maximum); [`SETTLE_NS`] ends the wait
/// long before.
const ATTEMPT_LOOPS: u32 = 1 << 23;

/// This CPU's [`Attempt`]: in a map, not on the stack, whose size the verifier bounds over
/// the deepest chain of calls (an `Attempt` on the stack of this program and of the descriptor
/// passing's subprograms exceeded it).
#[map]
static ATTEMPT: PerCpuArray<Attempt> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn attempt() -> Result<&'static mut Attempt, i64> {
    match ATTEMPT.get_ptr_mut(0) {
        // SAFETY: per-CPU value; a program runs to completion on its CPU, and an attempt
        // (with its bpf_loop) is not nested in another.
        Some(p) => Ok(unsafe { &mut *p }),
        None => Err(-1),
    }
}

impl Attempt {
    #[inline(always)]
    fn start(&mut self, key: u64, conn: ConnInfo, close_pending: bool) {
        self.key = key;
        self.deadline = 0;
        self.conn = conn;
        self.displaced = ConnInfo::new(0, 0);
        self.close_pending = close_pending as u64;
        self.outcome = PENDING;
    }

    #[inline(always)]
    fn finish(&mut self, outcome: u64) -> i64 {
        self.outcome = outcome;
        1
    }

    /// Try again, unless the wait is over (the outcome stays `PENDING`). The clock is read
    /// only once a step had to wait: the common case, a single step, never reads it.
    #[inline(always)]
    fn again(&mut self) -> i64 {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if self.deadline == 0 {
            self.deadline = now + SETTLE_NS;
            return 0;
        }
        (now >= self.deadline) as i64
    }
}

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

/// Whether `p`, looked up under `key`, still is that key's entry. The LRU map hands an element
/// that was deleted or replaced back to its free list at once, not after the programs that
/// looked it up have finished, and the next insert, of any key, may take it while this CPU
/// still holds its address. An exchange on such an element acts on another fd's entry: a
/// `close` that looked up its fd's entry just as an `accept` replaced it retired, through the
/// same memory, the entry of the connection another `accept` had just been given on another
/// fd, then deleted its own fd's new connection; both were lost (seen once in 1,250,000
/// connections). Checked after the state is read and again after an exchange, which is undone
/// when the element changed hands in between.
#[inline(always)]
fn still(key: u64, p: *mut ConnInfo) -> bool {
    CONNS.get_ptr_mut(&key).is_some_and(|q| q == p)
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
/// that, see [`Attempt`]) or moves on to the new one. The scratch buffer must be free (the
/// displaced connection's close record is built there): callers fill it afterwards.
#[inline(always)]
fn insert_conn(pid_tgid: u64, fd: u32, conn: ConnInfo, close_pending: bool) {
    let key = conn_key((pid_tgid >> 32) as u32, fd);
    let Ok(t) = attempt() else {
        return;
    };
    t.start(key, conn, close_pending);
    // SAFETY: `insert_step` is a static subprogram with the callback signature bpf_loop
    // expects; it takes no context (it reads this CPU's `ATTEMPT`).
    unsafe {
        bpf_loop(
            ATTEMPT_LOOPS,
            insert_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    match t.outcome {
        DISPLACED if !t.displaced.is_placeholder() => {
            // Its fd number was released, so the displaced connection is closed on this fd:
            // say so now, ahead of this one's record, as its own close exit will not. Built
            // in the scratch buffer, not on the stack (callers fill it only after this).
            if let Ok(s) = scratch() {
                fill_header(
                    s,
                    EventKind::Close,
                    pid_tgid,
                    fd as i32,
                    0,
                    Some(&t.displaced),
                );
                let _ = submit(s, 0);
            }
        }
        PENDING => {
            // The entry never settled (held longer than `SETTLE_NS`): register the
            // connection anyway, counted; the delete of a close that retired the entry, if
            // it still comes, removes it.
            count(STAT_CONN_CONTENDED);
            if CONNS.insert(&key, &t.conn, 0).is_err() {
                count(STAT_CONN_MAP_FULL);
            }
        }
        _ => {}
    }
}

/// One attempt of [`insert_conn`] (a bpf_loop callback); returns 1 to stop.
#[inline(never)]
extern "C" fn insert_step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Ok(t) = attempt() else {
        return 1;
    };
    let Some(p) = CONNS.get_ptr_mut(&t.key) else {
        return match CONNS.insert(&t.key, &t.conn, BPF_NOEXIST as u64) {
            Ok(()) => t.finish(DONE),
            // Inserted by another CPU since the lookup, or a retired entry whose delete has
            // not happened yet: look again.
            Err(e) if i64::from(e) == -EEXIST => t.again(),
            Err(_) => {
                count(STAT_CONN_MAP_FULL);
                t.finish(DONE)
            }
        };
    };
    let state = fd_state(p);
    let seen = load(state);
    if seen & FD_RETIRED != 0 || !still(t.key, p) {
        // Its close is deleting it (or another CPU is replacing it): replacing it now would
        // let that delete remove this connection.
        return t.again();
    }
    if !exchange(state, seen, FD_DISPLACED) {
        return t.again();
    }
    if !still(t.key, p) {
        // Reused for another entry since the check above: give it its state back.
        exchange(state, FD_DISPLACED, seen);
        return t.again();
    }
    // SAFETY: map value read of an entry this CPU claimed.
    t.displaced = unsafe { *p };
    t.conn.fd_state = (seen + t.close_pending).min(FD_DISPLACED - 1);
    if CONNS.insert(&t.key, &t.conn, 0).is_err() {
        count(STAT_CONN_MAP_FULL);
        // Not left displaced: every close and accept of the fd number would wait on it.
        let _ = CONNS.remove(&t.key);
    }
    t.finish(DISPLACED)
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
    // dup2/dup3 onto an open fd close it themselves, with no `close` to come; dup and
    // F_DUPFD take the lowest free number, which a `close` not yet returned may have freed.
    let close_pending = !matches!(a.nr, SYS_DUP2 | SYS_DUP3);
    let Some(conn) = live_conn(conn_key(tgid, oldfd)) else {
        on_new_fd(pid_tgid, newfd, close_pending);
        return Ok(());
    };
    insert_conn(
        pid_tgid,
        newfd,
        ConnInfo {
            fd_state: 0,
            ..conn
        },
        close_pending,
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

/// The process got fd `fd` for something that is no tracked connection: a file, a pipe, an
/// eventfd, a socket it has not connected, a dup of one of those. A live entry there means,
/// as in [`insert_conn`], that the number was released by a `close` that has not returned
/// yet: a placeholder ([`ConnInfo::placeholder`]) takes the entry's place and counts that
/// close, and the connection it displaced is reported closed. Without it the fd's own close,
/// when it came first, retired the connection's entry, and the late `close` exit then
/// retired the next connection's on the number, whose data and close were lost (a Go server
/// reading a file between a close and its return: once in 1,000,000 connections); and the
/// file's bytes were taken for the connection's (which then was dropped as not HTTP).
#[inline(always)]
fn on_new_fd(pid_tgid: u64, fd: u32, close_pending: bool) {
    let key = conn_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: map value read.
    let held = unsafe { CONNS.get(&key) }.is_some_and(|c| c.fd_state & FD_RETIRED == 0);
    if held {
        insert_conn(pid_tgid, fd, ConnInfo::placeholder(), close_pending);
    }
}

/// `pipe`/`pipe2`: two new fds, written to `int fds[2]`.
fn on_pipe(a: &Args, pid_tgid: u64) -> Res {
    let fds = user_u64(a.di)?;
    on_new_fd(pid_tgid, fds as u32, true);
    on_new_fd(pid_tgid, (fds >> 32) as u32, true);
    Ok(())
}

fn on_exec(pid_tgid: u64) -> Res {
    match config() {
        Some(c) if c.flags & CONFIG_WATCH_EXEC != 0 => {}
        _ => return Ok(()),
    }
    emit_simple(EventKind::Exec, pid_tgid, -1, 0)
}
