//! The backend-neutral data path: one data record for bytes a tracked connection moved, from a
//! user buffer or an iovec array, with the head, then the tail copy or the HTTP/2 frame
//! extents.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user};
use beyla_rs_common::{
    CONN_WIDE_CAPTURE, ConnInfo, EVENT_FLAG_AFTER_LOSS, EVENT_HEADER_LEN, EXTENT_HEADER_LEN,
    EventKind, MAX_CAPTURE, MAX_EXTENTS_LEN, MAX_IOV, TAIL_LEN, WIDE_TAIL_LEN, h2walk_key,
};

use crate::{
    h2walk,
    maps::{CONNS, config},
    record::{Res, copy_user, fill_header, header, opaque, put_extent_header, submit},
    scratch::{iov_get, iov_put, scratch},
};

/// Vectored I/O with at most this many entries is walked without bpf_loop.
pub const INLINE_IOV: u64 = 2;

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE_LEN: u64 = 24;

/// Where the bytes a call moved are.
#[derive(Clone, Copy)]
pub enum Source {
    /// One user buffer.
    Buf(u64),
    /// An array of `cnt` `struct iovec` at `iov`, in user memory, or in kernel memory
    /// (`kernel`: the copy a socket call's `iov_iter` walks) with user buffers.
    Iov { iov: u64, cnt: u64, kernel: bool },
    /// Not in user memory (`sendfile`): only the count matters.
    Elsewhere,
}

/// Sends the data record for `ret` bytes that connection `conn` (under `key` in `CONNS`)
/// moved in `direction`, read from `src`. `fd` is reported as is (the syscall backend's fd).
/// `flags` (`EVENT_FLAG_*`) go into the record: `EVENT_FLAG_TLS` for a TLS library's
/// plaintext. The backends ask `tls::claimed` first: socket bytes that a TLS session's
/// plaintext stands for are not sent.
#[expect(
    clippy::too_many_arguments,
    reason = "what one call moved; both backends fill these from different places"
)]
#[inline(always)]
pub fn data(
    key: u64,
    conn: ConnInfo,
    direction: u8,
    src: Source,
    ret: u64,
    pid_tgid: u64,
    fd: i32,
    flags: u8,
) -> Res {
    // A lost record leaves a hole in the connection's bytes: the next record says so (the
    // daemon then resynchronises instead of misreading what follows).
    let flags = if conn.lost != 0 {
        flags | EVENT_FLAG_AFTER_LOSS
    } else {
        flags
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
    fill_header(s, EventKind::Data, pid_tgid, fd, 0, Some(&conn));

    let mut captured: u64 = 0;
    let mut tail_len: u64 = 0;
    // Where the walk reads from: one buffer, or an iovec array.
    let mut walk_src: Option<(u64, u64, u64)> = None;
    match src {
        Source::Buf(buf) => {
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
            walk_src = Some((h2walk::LAYOUT_BUF, buf, 1));
        }
        Source::Iov {
            iov,
            cnt: iovcnt,
            kernel,
        } => {
            let layout = if kernel {
                h2walk::LAYOUT_KERNEL_IOV
            } else {
                h2walk::LAYOUT_USER_IOV
            };
            walk_src = Some((layout, iov, iovcnt));
            let w = &mut s.iov;
            iov_put(&mut w.iov, iov);
            iov_put(&mut w.iovcnt, iovcnt);
            iov_put(&mut w.iov_kernel, kernel as u64);
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
        Source::Elsewhere => {}
    }

    // The HTTP/2 client preface starts the connection ("PRI * HTTP/2.0\r\n…", RFC 9113 §3.4):
    // from now on capture the widest bound for it, and follow its frame boundaries: the
    // preface's direction from the preface's end, the other from its next syscall.
    if captured >= 4 && !wide && s.buf[EVENT_HEADER_LEN..EVENT_HEADER_LEN + 4] == *b"PRI " {
        // In place: a whole-entry update would write back this call's copy of the entry's
        // state, which another CPU may have changed since (see `ConnInfo::fd_state`).
        if let Some(p) = CONNS.get_ptr_mut(&key) {
            // SAFETY: map value byte write; no program writes this byte in place elsewhere.
            unsafe { (*p).flags |= CONN_WIDE_CAPTURE };
        }
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
        if let (Some(prev), Some((layout, base, iovcnt))) = (walking, walk_src) {
            ext_len = h2walk::walk(s, &walk_key, prev, layout, base, iovcnt, ret, want);
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
    h.flags = flags;
    h.captured_len = captured as u32;
    h.aux = ext_len as u32;
    h.total_len = ret;
    let after_loss = flags & EVENT_FLAG_AFTER_LOSS != 0;
    let sent = submit(s, (captured + ext_len) as usize);
    // The ring buffer was full: flag the connection for its next record. In place, only when
    // it changes.
    if sent.is_err() != after_loss
        && let Some(p) = CONNS.get_ptr_mut(&key)
    {
        // SAFETY: map value byte write; only this path writes `lost`.
        unsafe { (*p).lost = sent.is_err() as u8 };
    }
    sent
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
    let at = (iov + i * 16) as *const c_void;
    // SAFETY: reading the traced process's memory, or the kernel's copy of its iovec array,
    // into a local; the helpers fault safely.
    let r = unsafe {
        if iov_get(&s.iov.iov_kernel) != 0 {
            bpf_probe_read_kernel(entry.as_mut_ptr().cast(), 16, at)
        } else {
            bpf_probe_read_user(entry.as_mut_ptr().cast(), 16, at)
        }
    };
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
