//! Kernel side of beyla-rs: the syscall-tracepoint capture backend.
//!
//! One raw tracepoint on `sys_exit` sees every syscall's return. It reads the syscall number and
//! arguments from the saved user registers (`pt_regs`), so no enter→exit stash map is needed: at
//! exit, read buffers are filled and write buffers still hold what was written. Raw tracepoints
//! attach by name, without tracefs, on every kernel since 4.17 — including kernels built without
//! kprobes, where Beyla captures nothing.
//!
//! Cost model (see `shared/docs/machine.md`): every syscall on the machine runs this program, so
//! the common path must reject fast. The order of checks is: syscall number (one register read),
//! return value (EAGAIN reads cost nothing more), tracked process (one hash lookup), tracked
//! socket fd (one LRU lookup). Only then is anything copied.
//!
//! Records are written with `BPF_RB_NO_WAKEUP` until the unread part of the ring buffer passes a
//! threshold; the daemon drains on its own timer. Beyla's main CPU cost was one wake-up per
//! event (OBI #1025).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use beyla_rs_common::{
    CONFIG_WATCH_EXEC, CONN_PREV_OPEN, CONN_WIDE_CAPTURE, Config, ConnInfo, DIR_EGRESS,
    DIR_INGRESS, EVENT_HEADER_LEN, EventHeader, EventKind, MAX_CAPTURE, MAX_IOV, PID_TRACKED,
    ROLE_CLIENT, ROLE_SERVER, SOCKADDR_LEN, STAT_CAPTURE_FAULT, STAT_CONN_MAP_FULL, STAT_COUNT,
    STAT_PID_MAP_FULL, STAT_RINGBUF_FULL, TAIL_LEN, conn_key,
};

mod syscalls;
use syscalls::*;

/// Events to user space. The daemon sets the real size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Processes (tgids) being instrumented.
#[map]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Tracked connections by `conn_key(tgid, fd)`. LRU so that connections whose close we never
/// saw (process killed, fd passed away) cannot exhaust it.
#[map]
static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// Bitmap of selected ports: bit `port % 64` of word `port / 64`.
#[map]
static PORTS: Array<u64> = Array::with_max_entries(1024, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-CPU sequence for connection ids; combined with the CPU number it is unique.
#[map]
static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Room for one record: header, then payload. The payload area is twice the largest capture so
/// that the verifier can prove `offset < MAX_CAPTURE && len <= MAX_CAPTURE` stays inside it.
#[repr(C)]
struct Scratch {
    buf: [u8; EVENT_HEADER_LEN + 2 * MAX_CAPTURE],
    iov: IovTotals,
}

/// Running totals of the iovec walk (see `on_data`).
#[repr(C)]
struct IovTotals {
    captured: u64,
    seen: u64,
    tail_end: u64,
}

#[inline(always)]
fn iov_get(v: &u64) -> u64 {
    // SAFETY: volatile read of our own per-CPU memory.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn iov_put(v: &mut u64, x: u64) {
    // SAFETY: volatile write of our own per-CPU memory.
    unsafe { core::ptr::write_volatile(v, x) }
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn beyla_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

/// The main thread of a process exits: forget it if it was tracked.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn beyla_process_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return 0;
    }
    // SAFETY: reading a map value; the verifier checks the pointer.
    if unsafe { TRACKED.get(&tgid) }.is_some() {
        let _ = TRACKED.remove(&tgid);
        let _ = emit_simple(EventKind::Exit, pid_tgid, -1, 0);
    }
    0
}

type Res = Result<(), i64>;

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
        let regs: u64 = ctx.arg(0);
        return match reg(regs, REG_ORIG_AX)? {
            SYS_BIND => on_bind(regs, pid_tgid),
            SYS_EXECVE | SYS_EXECVEAT => on_exec(pid_tgid),
            _ => Ok(()),
        };
    }
    // Failed calls matter only for non-blocking connects.
    if ret < 0 && ret != -EINPROGRESS {
        return Ok(());
    }
    let regs: u64 = ctx.arg(0);
    let nr = reg(regs, REG_ORIG_AX)?;
    match nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO | SYS_READV | SYS_WRITEV | SYS_RECVMSG
        | SYS_SENDMSG | SYS_SENDFILE => {
            if ret <= 0 {
                return Ok(());
            }
            on_data(regs, pid_tgid, nr, ret as u64)
        }
        SYS_ACCEPT | SYS_ACCEPT4 if ret >= 0 => on_accept(regs, pid_tgid, ret),
        SYS_CONNECT => on_connect(regs, pid_tgid),
        SYS_CLOSE if ret == 0 => on_close(regs, pid_tgid),
        SYS_BIND if ret == 0 => on_bind(regs, pid_tgid),
        SYS_CLONE | SYS_CLONE3 | SYS_FORK | SYS_VFORK if ret > 0 => {
            on_fork(regs, pid_tgid, nr, ret as u32)
        }
        SYS_DUP | SYS_DUP2 | SYS_DUP3 | SYS_FCNTL if ret >= 0 => {
            on_dup(regs, pid_tgid, nr, ret as u32)
        }
        SYS_EXECVE | SYS_EXECVEAT if ret == 0 => on_exec(pid_tgid),
        _ => Ok(()),
    }
}

#[inline(always)]
fn reg(regs: u64, offset: u64) -> Result<u64, i64> {
    let mut v: u64 = 0;
    // SAFETY: `regs` is the kernel's `struct pt_regs *` for this syscall; the helper checks the
    // read and fails rather than faulting.
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            8,
            (regs + offset) as *const core::ffi::c_void,
        )
    };
    if r < 0 { Err(r) } else { Ok(v) }
}

#[inline(always)]
fn user_u64(addr: u64) -> Result<u64, i64> {
    let mut v: u64 = 0;
    // SAFETY: reading from the traced process's memory; the helper faults safely.
    let r = unsafe { bpf_probe_read_user((&raw mut v).cast(), 8, addr as *const _) };
    if r < 0 { Err(r) } else { Ok(v) }
}

#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
fn tracked(tgid: u32) -> bool {
    // SAFETY: map value read.
    unsafe { TRACKED.get(&tgid) }.is_some()
}

#[inline(always)]
fn count(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

fn next_conn_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let seq = match CONN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    // Bit 63 is reserved for ids the daemon assigns to connections it finds at start-up.
    ((cpu & 0x7fff) << 48) | (seq & 0xffff_ffff_ffff)
}

fn scratch() -> Result<&'static mut Scratch, i64> {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU buffer; a program runs to completion on its CPU before the next.
        Some(p) => Ok(unsafe { &mut *p }),
        None => Err(-1),
    }
}

#[inline(always)]
fn header(s: &mut Scratch) -> &mut EventHeader {
    // SAFETY: the buffer starts with room for a header; EventHeader has no invalid bit patterns
    // and the buffer is 8-aligned (it is the start of a map value).
    unsafe { &mut *(s.buf.as_mut_ptr() as *mut EventHeader) }
}

/// Write the record in `s` (header plus `payload_len` bytes) to the ring buffer.
#[inline(always)]
fn submit(s: &Scratch, payload_len: usize) -> Res {
    let wakeup = match config() {
        Some(c) => EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= c.wakeup_bytes as u64,
        None => true,
    };
    output(s, payload_len, wakeup)
}

/// Like [`submit`], but wake the reader at once.
#[inline(always)]
fn submit_now(s: &Scratch, payload_len: usize) -> Res {
    output(s, payload_len, true)
}

#[inline(always)]
fn output(s: &Scratch, payload_len: usize, wakeup: bool) -> Res {
    let len = EVENT_HEADER_LEN + (opaque(payload_len) & (2 * MAX_CAPTURE - 1));
    if len > s.buf.len() {
        return Err(-1);
    }
    let flags = if wakeup {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    } as u64;
    if EVENTS.output::<[u8]>(&s.buf[..len], flags).is_err() {
        count(STAT_RINGBUF_FULL);
        return Err(-1);
    }
    Ok(())
}

#[inline(always)]
fn fill_header(
    s: &mut Scratch,
    kind: EventKind,
    pid_tgid: u64,
    fd: i32,
    aux: u32,
    conn: Option<&ConnInfo>,
) {
    let h = header(s);
    h.kind = kind as u8;
    h.direction = 0;
    h.role = conn.map(|c| c.role).unwrap_or(0);
    h.tail_len = 0;
    h.captured_len = 0;
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.fd = fd;
    h.aux = aux;
    h.conn_id = conn.map(|c| c.conn_id).unwrap_or(0);
    // SAFETY: helper without preconditions.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.total_len = 0;
    h.tail = [0; TAIL_LEN];
}

fn emit_simple(kind: EventKind, pid_tgid: u64, fd: i32, aux: u32) -> Res {
    let s = scratch()?;
    fill_header(s, kind, pid_tgid, fd, aux, None);
    submit(s, 0)
}

/// Copy `len` bytes of user memory at `src` to payload offset `off`. Both are masked so the
/// verifier can bound the destination; callers guarantee `off < MAX_CAPTURE` and
/// `len <= MAX_CAPTURE`, which makes the masks no-ops.
/// Hide a value from the optimiser so that the masks below survive to the bytecode: LLVM would
/// otherwise drop them as redundant, and the verifier, which tracks ranges less precisely than
/// LLVM, would then reject the helper call.
#[inline(always)]
fn opaque(v: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&v) }
}

#[inline(always)]
fn copy_user(s: &mut Scratch, off: usize, src: u64, len: usize) -> Res {
    let off = opaque(off) & (MAX_CAPTURE - 1);
    let len = opaque(len) & (2 * MAX_CAPTURE - 1);
    if len == 0 || len > MAX_CAPTURE {
        return Ok(());
    }
    // SAFETY: destination bounded as above inside the per-CPU buffer; the helper faults safely.
    let r = unsafe {
        bpf_probe_read_user(
            s.buf.as_mut_ptr().add(EVENT_HEADER_LEN + off).cast(),
            len as u32,
            src as *const _,
        )
    };
    if r < 0 {
        count(STAT_CAPTURE_FAULT);
        return Err(r);
    }
    Ok(())
}

#[inline(always)]
fn copy_tail(s: &mut Scratch, end: u64) -> u8 {
    let h = header(s);
    // SAFETY: user memory read into the header's tail array.
    let r = unsafe {
        bpf_probe_read_user(
            h.tail.as_mut_ptr().cast(),
            TAIL_LEN as u32,
            (end - TAIL_LEN as u64) as *const _,
        )
    };
    if r < 0 { 0 } else { TAIL_LEN as u8 }
}

fn on_data(regs: u64, pid_tgid: u64, nr: u64, ret: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = reg(regs, REG_DI)? as u32;
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&conn_key(tgid, fd)) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    let cap = match config() {
        Some(_) if conn.flags & CONN_WIDE_CAPTURE != 0 => MAX_CAPTURE as u64,
        Some(c) => c.capture_bytes as u64,
        None => return Ok(()),
    };
    let cap = if cap > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        cap
    };
    let want = if ret < cap { ret } else { cap };

    let s = scratch()?;
    fill_header(s, EventKind::Data, pid_tgid, fd as i32, 0, Some(&conn));
    let direction = match nr {
        SYS_READ | SYS_RECVFROM | SYS_READV | SYS_RECVMSG => DIR_INGRESS,
        _ => DIR_EGRESS,
    };

    let mut captured: u64 = 0;
    let mut tail_len: u8 = 0;
    match nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO => {
            let buf = reg(regs, REG_SI)?;
            copy_user(s, 0, buf, want as usize)?;
            captured = want;
            if ret > want && ret >= TAIL_LEN as u64 {
                tail_len = copy_tail(s, buf + ret);
            }
        }
        SYS_READV | SYS_WRITEV | SYS_RECVMSG | SYS_SENDMSG => {
            let (iov, iovcnt) = if nr == SYS_READV || nr == SYS_WRITEV {
                (reg(regs, REG_SI)?, reg(regs, REG_DX)?)
            } else {
                // struct msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
                //                 size_t msg_iovlen; ... }
                let msg = reg(regs, REG_SI)?;
                (user_u64(msg + 16)?, user_u64(msg + 24)?)
            };
            // The loop keeps its running totals in the per-CPU buffer, not in registers: the
            // verifier then sees the same register state at the top of every iteration and
            // prunes, instead of exploring every combination of partial totals (which
            // exceeded its one-million-instruction budget).
            iov_put(&mut s.iov.captured, 0);
            iov_put(&mut s.iov.seen, 0);
            iov_put(&mut s.iov.tail_end, 0);
            for i in 0..MAX_IOV as u64 {
                let seen = iov_get(&s.iov.seen);
                if i >= iovcnt || seen >= ret {
                    break;
                }
                let base = user_u64(iov + i * 16)?;
                let len = user_u64(iov + i * 16 + 8)?;
                let left = ret - seen;
                let avail = if left < len { left } else { len };
                let done = iov_get(&s.iov.captured);
                if done < want && avail > 0 {
                    let room = want - done;
                    let n = if avail < room { avail } else { room };
                    copy_user(s, done as usize, base, n as usize)?;
                    iov_put(&mut s.iov.captured, done + n);
                }
                // The syscall's last byte is in this iovec: remember where it ends for the tail.
                if avail >= TAIL_LEN as u64 && avail == left {
                    iov_put(&mut s.iov.tail_end, base + avail);
                }
                iov_put(&mut s.iov.seen, seen + avail);
            }
            captured = iov_get(&s.iov.captured) & (2 * MAX_CAPTURE as u64 - 1);
            let tail_end = iov_get(&s.iov.tail_end);
            if ret > want && tail_end != 0 {
                tail_len = copy_tail(s, tail_end);
            }
        }
        // sendfile: the bytes come from a file, not from user memory; only the count matters.
        _ => {}
    }

    // The HTTP/2 client preface starts the connection ("PRI * HTTP/2.0\r\n…", RFC 9113 §3.4):
    // from now on capture the widest bound for it.
    if captured >= 4
        && conn.flags & CONN_WIDE_CAPTURE == 0
        && s.buf[EVENT_HEADER_LEN..EVENT_HEADER_LEN + 4] == *b"PRI "
    {
        let wide = ConnInfo {
            flags: conn.flags | CONN_WIDE_CAPTURE,
            ..conn
        };
        let _ = CONNS.insert(&conn_key(tgid, fd), &wide, 0);
    }
    let h = header(s);
    h.direction = direction;
    h.captured_len = captured as u32;
    h.total_len = ret;
    h.tail_len = tail_len;
    submit(s, captured as usize)
}

/// Copy a socket address from user memory into the payload; returns the bytes copied.
#[inline(always)]
fn copy_sockaddr(s: &mut Scratch, addr: u64, len: u64) -> usize {
    if addr == 0 || len < 2 {
        return 0;
    }
    let n = if len > SOCKADDR_LEN as u64 {
        SOCKADDR_LEN as u64
    } else {
        len
    };
    match copy_user(s, 0, addr, n as usize) {
        Ok(()) => n as usize,
        Err(_) => 0,
    }
}

fn on_accept(regs: u64, pid_tgid: u64, newfd: i64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let conn = ConnInfo {
        conn_id: next_conn_id(),
        role: ROLE_SERVER,
        prev_conn_id: 0,
        flags: 0,
        _pad: [0; 6],
    };
    insert_conn(conn_key(tgid, newfd as u32), conn);
    let listen_fd = reg(regs, REG_DI)? as u32;
    let addr = reg(regs, REG_SI)?;
    let addrlen_ptr = reg(regs, REG_DX)?;
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

fn on_connect(regs: u64, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = reg(regs, REG_DI)? as u32;
    let addr = reg(regs, REG_SI)?;
    let addrlen = reg(regs, REG_DX)?;
    let s = scratch()?;
    let n = copy_sockaddr(s, addr, addrlen);
    if n < 2 {
        return Ok(());
    }
    let family = u16::from_ne_bytes([s.buf[EVENT_HEADER_LEN], s.buf[EVENT_HEADER_LEN + 1]]);
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let conn = ConnInfo {
        conn_id: next_conn_id(),
        role: ROLE_CLIENT,
        prev_conn_id: 0,
        flags: 0,
        _pad: [0; 6],
    };
    insert_conn(conn_key(tgid, fd), conn);
    fill_header(s, EventKind::Connect, pid_tgid, fd as i32, 0, Some(&conn));
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_close(regs: u64, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = reg(regs, REG_DI)? as u32;
    let key = conn_key(tgid, fd);
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&key) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    let closed = if conn.flags & CONN_PREV_OPEN != 0 {
        // This close is the previous owner's (see CONN_PREV_OPEN): keep the new connection.
        let current = ConnInfo {
            flags: conn.flags & !CONN_PREV_OPEN,
            prev_conn_id: 0,
            ..conn
        };
        let _ = CONNS.insert(&key, &current, 0);
        ConnInfo {
            conn_id: conn.prev_conn_id,
            ..conn
        }
    } else {
        let _ = CONNS.remove(&key);
        conn
    };
    let s = scratch()?;
    fill_header(s, EventKind::Close, pid_tgid, fd as i32, 0, Some(&closed));
    submit(s, 0)
}

/// Register a connection under `key`. An entry already there means the fd was released by a
/// `close` that has not returned yet (another thread got the number first): remember it, so
/// that close is not taken for this connection's.
#[inline(always)]
fn insert_conn(key: u64, mut conn: ConnInfo) {
    // SAFETY: map value read.
    if let Some(old) = unsafe { CONNS.get(&key) } {
        conn.prev_conn_id = old.conn_id;
        conn.flags |= CONN_PREV_OPEN;
    }
    if CONNS.insert(&key, &conn, 0).is_err() {
        count(STAT_CONN_MAP_FULL);
    }
}

fn on_bind(regs: u64, pid_tgid: u64) -> Res {
    let addr = reg(regs, REG_SI)?;
    // struct sockaddr_in / sockaddr_in6 both start with family (u16) and port (u16, big endian).
    let head = user_u64(addr).unwrap_or(0);
    let family = head as u16;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let port = u16::from_be(((head >> 16) & 0xffff) as u16);
    let word = match PORTS.get(port as u32 / 64) {
        Some(w) => *w,
        None => return Ok(()),
    };
    if word & (1u64 << (port % 64)) == 0 {
        return Ok(());
    }
    let tgid = (pid_tgid >> 32) as u32;
    match config() {
        Some(c) if c.self_tgid != tgid => {}
        _ => return Ok(()),
    }
    if TRACKED.insert(&tgid, &PID_TRACKED, 0).is_err() {
        count(STAT_PID_MAP_FULL);
    }
    let fd = reg(regs, REG_DI)? as i32;
    let addrlen = reg(regs, REG_DX)?;
    let s = scratch()?;
    let n = copy_sockaddr(s, addr, addrlen);
    fill_header(s, EventKind::Bind, pid_tgid, fd, port as u32, None);
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_fork(regs: u64, pid_tgid: u64, nr: u64, child: u32) -> Res {
    let flags = match nr {
        SYS_CLONE => reg(regs, REG_DI)?,
        // struct clone_args starts with `u64 flags`.
        SYS_CLONE3 => user_u64(reg(regs, REG_DI)?)?,
        _ => 0,
    };
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    // `child` is the pid in the parent's pid namespace, which is the daemon's for processes on
    // the host; the daemon reconciles namespaced children from /proc.
    if TRACKED.insert(&child, &PID_TRACKED, 0).is_err() {
        count(STAT_PID_MAP_FULL);
    }
    emit_simple(EventKind::Fork, pid_tgid, -1, child)
}

/// A tracked socket was duplicated (`dup*`, `fcntl(F_DUPFD*)`): the new fd is the same
/// connection. Rust's `TcpStream::try_clone` and many servers read on one fd and write on the
/// other.
fn on_dup(regs: u64, pid_tgid: u64, nr: u64, newfd: u32) -> Res {
    if nr == SYS_FCNTL {
        let cmd = reg(regs, REG_SI)?;
        if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
            return Ok(());
        }
    }
    let tgid = (pid_tgid >> 32) as u32;
    let oldfd = reg(regs, REG_DI)? as u32;
    if oldfd == newfd {
        return Ok(());
    }
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&conn_key(tgid, oldfd)) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    insert_conn(
        conn_key(tgid, newfd),
        ConnInfo {
            flags: conn.flags & !CONN_PREV_OPEN,
            prev_conn_id: 0,
            ..conn
        },
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
