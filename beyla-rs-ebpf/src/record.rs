//! Building records in the per-CPU scratch buffer and writing them to the ring buffer, and the
//! bounded copies from user memory into it.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
};
use beyla_rs_common::{
    ConnInfo, EVENT_HEADER_LEN, EventHeader, EventKind, MAX_CAPTURE, SOCKADDR_LEN,
    STAT_CAPTURE_FAULT, STAT_RINGBUF_FULL,
};

use crate::{
    maps::{EVENTS, config, count},
    scratch::{Scratch, scratch},
};

pub type Res = Result<(), i64>;

/// A word of an iovec array: in kernel memory (`kernel`) or in the process's.
#[inline(always)]
pub fn iovec_u64(kernel: bool, addr: u64) -> Result<u64, i64> {
    if kernel {
        kernel_u64(addr)
    } else {
        user_u64(addr)
    }
}

/// A kernel value of type `T` (a field of a kernel structure).
#[inline(always)]
pub fn kernel_read<T: Copy + Default>(addr: u64) -> Result<T, i64> {
    let mut v = T::default();
    // SAFETY: reading a field of a kernel structure into a local; the helper checks the read
    // and fails rather than faulting.
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        )
    };
    if r < 0 { Err(r) } else { Ok(v) }
}

/// A word of kernel memory (a field of a kernel structure).
#[inline(always)]
pub fn kernel_u64(addr: u64) -> Result<u64, i64> {
    let mut v: u64 = 0;
    // SAFETY: the helper checks the read and fails rather than faulting.
    let r = unsafe { bpf_probe_read_kernel((&raw mut v).cast(), 8, addr as *const _) };
    if r < 0 { Err(r) } else { Ok(v) }
}

#[inline(always)]
pub fn user_u64(addr: u64) -> Result<u64, i64> {
    let mut v: u64 = 0;
    // SAFETY: reading from the traced process's memory; the helper faults safely.
    let r = unsafe { bpf_probe_read_user((&raw mut v).cast(), 8, addr as *const _) };
    if r < 0 { Err(r) } else { Ok(v) }
}

#[inline(always)]
pub fn header(s: &mut Scratch) -> &mut EventHeader {
    // SAFETY: the buffer starts with room for a header; EventHeader has no invalid bit patterns
    // and the buffer is 8-aligned (it is the start of a map value).
    unsafe { &mut *(s.buf.as_mut_ptr() as *mut EventHeader) }
}

/// Write the record in `s` (header plus `payload_len` bytes) to the ring buffer.
#[inline(always)]
pub fn submit(s: &Scratch, payload_len: usize) -> Res {
    let wakeup = match config() {
        Some(c) => EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= c.wakeup_bytes as u64,
        None => true,
    };
    output(s, payload_len, wakeup)
}

/// Like [`submit`], but wake the reader at once.
#[inline(always)]
pub fn submit_now(s: &Scratch, payload_len: usize) -> Res {
    output(s, payload_len, true)
}

#[inline(always)]
pub fn output(s: &Scratch, payload_len: usize, wakeup: bool) -> Res {
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

/// The header of a record about `conn` (or about no connection), payload length 0.
#[inline(always)]
fn new_header(
    kind: EventKind,
    pid_tgid: u64,
    fd: i32,
    aux: u32,
    conn: Option<&ConnInfo>,
) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        direction: 0,
        role: conn.map(|c| c.role).unwrap_or(0),
        flags: 0,
        captured_len: 0,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
        aux,
        conn_id: conn.map(|c| c.conn_id).unwrap_or(0),
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        total_len: 0,
    }
}

#[inline(always)]
pub fn fill_header(
    s: &mut Scratch,
    kind: EventKind,
    pid_tgid: u64,
    fd: i32,
    aux: u32,
    conn: Option<&ConnInfo>,
) {
    *header(s) = new_header(kind, pid_tgid, fd, aux, conn);
}

/// A record without payload about `conn`, built on the stack: for callers whose scratch
/// already holds another record in the making.
pub fn emit_conn(kind: EventKind, pid_tgid: u64, fd: i32, conn: &ConnInfo) -> Res {
    let h = new_header(kind, pid_tgid, fd, 0, Some(conn));
    if EVENTS
        .output::<EventHeader>(&h, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(STAT_RINGBUF_FULL);
        return Err(-1);
    }
    Ok(())
}

pub fn emit_simple(kind: EventKind, pid_tgid: u64, fd: i32, aux: u32) -> Res {
    let s = scratch()?;
    fill_header(s, kind, pid_tgid, fd, aux, None);
    submit(s, 0)
}

/// Write an `ExtentHeader` (`offset`, `len`) at payload offset `at`.
#[inline(always)]
pub fn put_extent_header(s: &mut Scratch, at: u64, offset: u64, len: u64) {
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
pub fn opaque(v: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Copy `len` bytes of user memory at `src` to payload offset `off`. Both are masked so the
/// verifier can bound the destination; callers guarantee `off < 2 * MAX_CAPTURE` and
/// `len <= MAX_CAPTURE`, which makes the masks no-ops.
#[inline(always)]
pub fn copy_user(s: &mut Scratch, off: usize, src: u64, len: usize) -> Res {
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

/// Copy a socket address from user memory into the payload; returns the bytes copied.
#[inline(always)]
pub fn copy_sockaddr(s: &mut Scratch, addr: u64, len: u64) -> usize {
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
