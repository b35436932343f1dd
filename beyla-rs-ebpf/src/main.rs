//! Kernel side of beyla-rs: the syscall-tracepoint capture backend.
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
//! Records are written with `BPF_RB_NO_WAKEUP` until the unread part of the ring buffer passes a
//! threshold; the daemon drains on its own timer. Beyla's main CPU cost was one wake-up per
//! event (OBI #1025).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "the BPF target has no atomic read-modify-write in core::sync::atomic; the \
              intrinsics lower to BPF_ATOMIC or/and"
)]

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_and, atomic_or},
};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use beyla_rs_common::{
    CONFIG_WATCH_EXEC, CONN_WIDE_CAPTURE, Config, ConnInfo, DIR_EGRESS, DIR_INGRESS,
    EVENT_HEADER_LEN, EXTENT_HEADER_LEN, EventHeader, EventKind, MAX_CAPTURE, MAX_EXTENTS_LEN,
    MAX_IOV, ROLE_CLIENT, ROLE_SERVER, SOCKADDR_LEN, STAT_CAPTURE_FAULT, STAT_CONN_MAP_FULL,
    STAT_COUNT, STAT_PID_MAP_FULL, STAT_RINGBUF_FULL, TAIL_LEN, TRACKED_PIDS, TRACKED_WORDS,
    WIDE_TAIL_LEN, conn_key, h2walk_key,
};

mod h2walk;
mod syscalls;
use syscalls::*;

/// Events to user space. The daemon sets the real size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Processes (tgids) being instrumented: bit `tgid % 64` of word `tgid / 64` (see
/// [`TRACKED_WORDS`]). Updated with atomic operations only, here and in the daemon's mapping.
#[map]
static TRACKED: Array<u64> = Array::with_max_entries(TRACKED_WORDS, BPF_F_MMAPABLE);

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

/// Room for one record: header, then payload (head, then tail copy). The payload area is four
/// times the largest capture so that the verifier can prove that any copy with
/// `offset < 2 * MAX_CAPTURE && len <= MAX_CAPTURE` stays inside it (see `copy_user`).
#[repr(C)]
struct Scratch {
    buf: [u8; EVENT_HEADER_LEN + 4 * MAX_CAPTURE],
    iov: IovTotals,
    walk: h2walk::WalkState,
}

/// State of the iovec walk (see [`iov_step`]): its inputs and running totals. The walk runs
/// under `bpf_loop`, which has the verifier check one step once instead of every unrolled
/// combination of partial totals (64 iterations with a head and a tail copy each exceeded its
/// one-million-instruction budget); the step reads everything from here.
#[repr(C)]
struct IovTotals {
    /// User address of the `struct iovec` array and its length.
    iov: u64,
    iovcnt: u64,
    /// Bytes the syscall moved.
    ret: u64,
    /// Bytes of head to capture.
    want: u64,
    /// Head bytes captured so far.
    captured: u64,
    /// Syscall bytes walked so far.
    seen: u64,
    /// Offset in the syscall's data where the tail copy starts (`ret`: no tail copy).
    tail_start: u64,
    /// A tail segment could not be read: send no tail.
    tail_failed: u64,
    /// The head could not be read: send nothing.
    failed: u64,
}

/// Vectored I/O with at most this many entries is walked without bpf_loop.
const INLINE_IOV: u64 = 2;

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: u64 = 24;

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
    if tracked(tgid) {
        set_tracked(tgid, false);
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
    match TRACKED.get(tgid / 64) {
        Some(w) => *w & (1u64 << (tgid % 64)) != 0,
        None => false,
    }
}

/// Set or clear `tgid`'s bit. Atomic: the daemon and other CPUs update bits of the same word.
/// Returns false for a tgid without a bit.
#[inline(always)]
fn set_tracked(tgid: u32, on: bool) -> bool {
    if tgid >= TRACKED_PIDS {
        return false;
    }
    let Some(p) = TRACKED.get_ptr_mut(tgid / 64) else {
        return false;
    };
    let bit = 1u64 << (tgid % 64);
    // SAFETY: an 8-aligned map value that lives as long as the map; every writer uses atomics.
    unsafe {
        if on {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(p, bit);
        } else {
            atomic_and::<u64, u64, { AtomicOrdering::Relaxed }>(p, !bit);
        }
    }
    true
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
    h._reserved = 0;
    h.captured_len = 0;
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.fd = fd;
    h.aux = aux;
    h.conn_id = conn.map(|c| c.conn_id).unwrap_or(0);
    // SAFETY: helper without preconditions.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.total_len = 0;
}

fn emit_simple(kind: EventKind, pid_tgid: u64, fd: i32, aux: u32) -> Res {
    let s = scratch()?;
    fill_header(s, kind, pid_tgid, fd, aux, None);
    submit(s, 0)
}

/// Write an `ExtentHeader` (`offset`, `len`) at payload offset `at`.
#[inline(always)]
fn put_extent_header(s: &mut Scratch, at: u64, offset: u64, len: u64) {
    let at = opaque(at as usize) & (2 * MAX_CAPTURE - 1);
    // SAFETY: `at + 8` is inside the payload area (masked above; the area is 4 * MAX_CAPTURE
    // long); unaligned writes of plain bytes.
    unsafe {
        let p = s.buf.as_mut_ptr().add(EVENT_HEADER_LEN + at);
        core::ptr::write_unaligned(p as *mut u32, offset as u32);
        core::ptr::write_unaligned(p.add(4) as *mut u32, len as u32);
    }
}

/// Hide a value from the optimiser so that the masks below survive to the bytecode: LLVM would
/// otherwise drop them as redundant, and the verifier, which tracks ranges less precisely than
/// LLVM, would then reject the helper call.
#[inline(always)]
fn opaque(v: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Copy `len` bytes of user memory at `src` to payload offset `off`. Both are masked so the
/// verifier can bound the destination; callers guarantee `off < 2 * MAX_CAPTURE` and
/// `len <= MAX_CAPTURE`, which makes the masks no-ops.
#[inline(always)]
fn copy_user(s: &mut Scratch, off: usize, src: u64, len: usize) -> Res {
    let off = opaque(off) & (2 * MAX_CAPTURE - 1);
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

/// One step of the iovec walk of `readv`/`writev`/`recvmsg`/`sendmsg`, a `bpf_loop` callback:
/// copies iovec `i`'s part of the head, and its part of the tail window right after the head
/// (small frames at the end of a write, such as gRPC trailers, often span several iovecs).
/// Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn iov_step(i: u64, _ctx: *mut c_void) -> i64 {
    match try_iov_step(i) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(_) => {
            if let Ok(s) = scratch() {
                iov_put(&mut s.iov.failed, 1);
            }
            1
        }
    }
}

#[inline(always)]
fn try_iov_step(i: u64) -> Result<bool, i64> {
    let s = scratch()?;
    let ret = iov_get(&s.iov.ret);
    let seen = iov_get(&s.iov.seen);
    if i >= iov_get(&s.iov.iovcnt) || seen >= ret {
        return Ok(false);
    }
    let iov = iov_get(&s.iov.iov);
    // struct iovec { void *iov_base; size_t iov_len; }: one read for both fields.
    let mut entry = [0u64; 2];
    // SAFETY: reading the traced process's memory into a local; the helper faults safely.
    let r =
        unsafe { bpf_probe_read_user(entry.as_mut_ptr().cast(), 16, (iov + i * 16) as *const _) };
    if r < 0 {
        return Err(r);
    }
    let [base, len] = entry;
    let left = ret - seen;
    let avail = if left < len { left } else { len };
    let want = iov_get(&s.iov.want);
    let done = iov_get(&s.iov.captured);
    if done < want && avail > 0 {
        let room = want - done;
        let n = if avail < room { avail } else { room };
        copy_user(s, done as usize, base, n as usize)?;
        iov_put(&mut s.iov.captured, done + n);
    }
    let tail_start = iov_get(&s.iov.tail_start);
    let end = seen + avail;
    if end > tail_start {
        let from = if seen > tail_start { seen } else { tail_start };
        let off = want + EXTENT_HEADER_LEN as u64 + (from - tail_start);
        if copy_user(s, off as usize, base + (from - seen), (end - from) as usize).is_err() {
            iov_put(&mut s.iov.tail_failed, 1);
        }
    }
    iov_put(&mut s.iov.seen, end);
    Ok(true)
}

fn on_data(a: &Args, pid_tgid: u64, ret: u64) -> Res {
    let nr = a.nr;
    let tgid = (pid_tgid >> 32) as u32;
    let fd = a.di as u32;
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
    // `want` is at most `cap`, but kernels before 6.8 do not learn a register's bound from a
    // comparison with another register (`ret < cap`): without this mask the 6.1 verifier
    // sees the head length as unbounded wherever `want` is `ret`.
    let want =
        opaque((if ret < cap { ret } else { cap }) as usize) as u64 & (2 * MAX_CAPTURE as u64 - 1);
    let direction = match nr {
        SYS_READ | SYS_RECVFROM | SYS_READV | SYS_RECVMSG => DIR_INGRESS,
        _ => DIR_EGRESS,
    };
    let wide = conn.flags & CONN_WIDE_CAPTURE != 0;
    let walk_key = h2walk_key(conn.conn_id, direction);
    // On HTTP/2 connections the kernel follows frame boundaries past the head (see h2walk).
    let mut walking = if wide {
        h2walk::lookup(&walk_key)
    } else {
        None
    };
    // Otherwise a tail copy: the syscall's last octets when the head does not hold them all.
    // It may overlap the head; it is the one extent after the head.
    let tail_cap = if wide {
        WIDE_TAIL_LEN as u64
    } else {
        TAIL_LEN as u64
    };
    let tail_start = if walking.is_none() && ret > want && ret >= tail_cap {
        ret - tail_cap
    } else {
        ret
    };

    let s = scratch()?;
    fill_header(s, EventKind::Data, pid_tgid, fd as i32, 0, Some(&conn));

    let mut captured: u64 = 0;
    let mut tail_len: u64 = 0;
    // Where the walk reads from: one buffer, or an iovec array.
    let mut walk_src: Option<(bool, u64, u64)> = None;
    match nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO => {
            let buf = a.si;
            copy_user(s, 0, buf, want as usize)?;
            captured = want;
            if tail_start < ret
                && copy_user(
                    s,
                    want as usize + EXTENT_HEADER_LEN,
                    buf + tail_start,
                    (ret - tail_start) as usize,
                )
                .is_ok()
            {
                tail_len = ret - tail_start;
            }
            walk_src = Some((true, buf, 1));
        }
        SYS_READV | SYS_WRITEV | SYS_RECVMSG | SYS_SENDMSG => {
            let (iov, iovcnt) = if nr == SYS_READV || nr == SYS_WRITEV {
                (a.si, a.dx)
            } else {
                // struct msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
                //                 size_t msg_iovlen; ... }
                let msg = a.si;
                (user_u64(msg + 16)?, user_u64(msg + 24)?)
            };
            walk_src = Some((false, iov, iovcnt));
            let w = &mut s.iov;
            iov_put(&mut w.iov, iov);
            iov_put(&mut w.iovcnt, iovcnt);
            iov_put(&mut w.ret, ret);
            iov_put(&mut w.want, want);
            iov_put(&mut w.captured, 0);
            iov_put(&mut w.seen, 0);
            iov_put(&mut w.tail_start, tail_start);
            iov_put(&mut w.tail_failed, 0);
            iov_put(&mut w.failed, 0);
            if iovcnt <= INLINE_IOV {
                // Most vectored I/O has one or two entries (nginx: status line and headers,
                // then the body): walk them inline, which costs a fraction of bpf_loop's
                // indirect calls and per-step map lookup.
                for i in 0..INLINE_IOV {
                    match try_iov_step(i) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(_) => {
                            iov_put(&mut scratch()?.iov.failed, 1);
                            break;
                        }
                    }
                }
            } else {
                // SAFETY: `iov_step` is a static subprogram with the callback signature
                // bpf_loop expects; it takes no context.
                unsafe {
                    bpf_loop(
                        MAX_IOV as u32,
                        iov_step as *mut c_void,
                        core::ptr::null_mut(),
                        0,
                    )
                };
            }
            let s = scratch()?;
            let w = &s.iov;
            if iov_get(&w.failed) != 0 {
                return Err(-1);
            }
            captured = opaque(iov_get(&w.captured) as usize) as u64 & (2 * MAX_CAPTURE as u64 - 1);
            // A tail is only usable whole and when the walk reached the syscall's end.
            if iov_get(&w.tail_failed) == 0 && iov_get(&w.seen) >= ret {
                tail_len = ret - tail_start;
            }
        }
        // sendfile: the bytes come from a file, not from user memory; only the count matters.
        _ => {}
    }

    // The HTTP/2 client preface starts the connection ("PRI * HTTP/2.0\r\n…", RFC 9113 §3.4):
    // from now on capture the widest bound for it, and follow its frame boundaries: the
    // preface's direction from the preface's end, the other from its next syscall.
    if captured >= 4 && !wide && s.buf[EVENT_HEADER_LEN..EVENT_HEADER_LEN + 4] == *b"PRI " {
        let wide = ConnInfo {
            flags: conn.flags | CONN_WIDE_CAPTURE,
            ..conn
        };
        let _ = CONNS.insert(&conn_key(tgid, fd), &wide, 0);
        h2walk::start_next(&h2walk_key(conn.conn_id, direction ^ 1));
        walking = Some(h2walk::at(PREFACE_LEN));
        tail_len = 0;
    }
    // Extents were written right after the full head; a head cut short (a fault in the iovec
    // walk stops it early) would leave a hole between them.
    let mut ext_len = 0;
    if walking.is_some() && walk_src.is_none() {
        // sendfile: the bytes are not in user memory; the boundaries are lost.
        let _ = h2walk::H2WALK.remove(&walk_key);
    } else if captured == want {
        if let (Some(prev), Some((single, base, iovcnt))) = (walking, walk_src) {
            ext_len = h2walk::walk(s, &walk_key, prev, single, base, iovcnt, ret, want);
        } else if tail_len > 0 {
            let tail_len = opaque(tail_len as usize) as u64 & (WIDE_TAIL_LEN as u64 * 2 - 1);
            put_extent_header(s, want, tail_start, tail_len);
            ext_len = EXTENT_HEADER_LEN as u64 + tail_len;
        }
    } else if walking.is_some() {
        let _ = h2walk::H2WALK.remove(&walk_key);
    }
    let ext_len = opaque(ext_len as usize) as u64 & (MAX_EXTENTS_LEN as u64 * 2 - 1);
    let h = header(s);
    h.direction = direction;
    h.captured_len = captured as u32;
    h.aux = ext_len as u32;
    h.total_len = ret;
    submit(s, (captured + ext_len) as usize)
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

fn on_accept(a: &Args, pid_tgid: u64, newfd: i64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let conn = ConnInfo::new(next_conn_id(), ROLE_SERVER);
    insert_conn(conn_key(tgid, newfd as u32), conn);
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
    let tgid = (pid_tgid >> 32) as u32;
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
    insert_conn(conn_key(tgid, fd), conn);
    fill_header(s, EventKind::Connect, pid_tgid, fd as i32, 0, Some(&conn));
    header(s).captured_len = n as u32;
    submit(s, n)
}

fn on_close(a: &Args, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&key) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    let closed = if conn.displaced > 0 {
        // The close of a connection this one displaced (see `ConnInfo::displaced`): keep this
        // one. Only the first reports a connection closed: the others' ids are not kept.
        let current = ConnInfo {
            displaced: conn.displaced - 1,
            prev_conn_id: 0,
            ..conn
        };
        let _ = CONNS.insert(&key, &current, 0);
        if conn.prev_conn_id == 0 {
            return Ok(());
        }
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
/// `close` that has not returned yet (another thread got the number first), and so were the
/// fds of the connections that entry displaced in turn: count them all, so that none of those
/// closes is taken for this connection's.
#[inline(always)]
fn insert_conn(key: u64, mut conn: ConnInfo) {
    // SAFETY: map value read.
    if let Some(old) = unsafe { CONNS.get(&key) } {
        conn.prev_conn_id = old.conn_id;
        conn.displaced = old.displaced.saturating_add(1);
    }
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
    emit_simple(EventKind::Fork, pid_tgid, -1, child)
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
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&conn_key(tgid, oldfd)) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    insert_conn(
        conn_key(tgid, newfd),
        ConnInfo {
            displaced: 0,
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
