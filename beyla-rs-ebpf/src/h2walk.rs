//! Following HTTP/2 frame boundaries through the bytes the head does not capture.
//!
//! A gRPC response of 1 MiB is 64 DATA frames and the trailers, often in one syscall; a
//! reader gets them in chunks of whatever size it reads. The daemon sees the head of each
//! syscall and skips DATA payloads by length, but a frame header that lies past the head is
//! lost to it, and with it the frame boundaries and everything after (the trailers carry
//! `grpc-status`). So the kernel follows the boundaries itself: from where the previous
//! syscall left off (`H2WALK` map) it reads each frame header past the head and sends it, with
//! the first [`H2_PAYLOAD_PREFIX`] octets of non-DATA payloads, as extents after the head.
//! The daemon still parses everything; a walk that meets something that is not a frame header
//! stops following that direction, and the daemon resynchronises as it would without it.
//!
//! The walk is a state machine stepped by `bpf_loop`: the verifier checks one step once. Each
//! step does one thing: move the iovec cursor, or copy one piece of a range, or decide what to
//! do after a frame header.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::map, maps::LruHashMap};
use beyla_rs_common::{EXTENT_HEADER_LEN, H2_PAYLOAD_PREFIX, H2Walk, MAX_CAPTURE, MAX_EXTENTS_LEN};

use crate::{
    record::{copy_user, iovec_u64, put_extent_header},
    scratch::{Scratch, iov_get, iov_put, scratch},
};

/// Per connection and direction: where the next frame header is. LRU: entries of connections
/// whose close was never seen age out.
#[map]
pub static H2WALK: LruHashMap<[u64; 2], H2Walk> = LruHashMap::with_max_entries(16384, 0);

const FRAME_HEADER_LEN: u64 = 9;
const TYPE_DATA: u8 = 0;
const TYPE_MAX: u8 = 9;
const FLAG_PADDED: u8 = 0x8;
/// Largest frame payload a peer may allow (RFC 9113 §4.2: 2^24 - 1).
const MAX_FRAME_LEN: u64 = (1 << 24) - 1;
/// Steps one syscall may take: cursor moves plus copies. 1 MiB of 16 KiB DATA frames in one
/// write is 64 frames and about as many iovecs.
const MAX_STEPS: u32 = 1024;
/// Payload offset of the 16-byte area where frame headers are assembled. Past the head and
/// every extent (head ≤ MAX_CAPTURE, extents ≤ MAX_EXTENTS_LEN), inside the payload area.
pub const HDR_AREA: u64 = 2 * MAX_CAPTURE as u64 - 64;
const _: () = assert!(MAX_CAPTURE + MAX_EXTENTS_LEN + 16 <= HDR_AREA as usize);

/// The data is one user buffer at `base`.
pub const LAYOUT_BUF: u64 = 1;
/// An array of `iovcnt` iovecs at `base`, in user memory.
pub const LAYOUT_USER_IOV: u64 = 0;
/// An array of `iovcnt` iovecs at `base`, in kernel memory (a socket call's `iov_iter`).
pub const LAYOUT_KERNEL_IOV: u64 = 2;

const PHASE_FRAME: u64 = 0;
const PHASE_HEADER: u64 = 1;
const PHASE_EMIT: u64 = 2;
const PHASE_FRAME_DONE: u64 = 3;
const PHASE_DECIDE: u64 = 4;

const STATUS_RUNNING: u64 = 0;
const STATUS_SYNCED: u64 = 1;
const STATUS_LOST: u64 = 2;

#[inline(always)]
fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// Where a direction's walk stands, if the kernel follows it.
#[inline(always)]
pub fn lookup(key: &[u64; 2]) -> Option<H2Walk> {
    // SAFETY: map value read.
    unsafe { H2WALK.get(key) }.copied()
}

/// A walk state starting at syscall offset `next` (the end of the client preface).
#[inline(always)]
pub fn at(next: u64) -> H2Walk {
    H2Walk {
        next: next as u32,
        copy_first: 0,
        have: 0,
        _pad: [0; 7],
        part: [0; 8],
    }
}

/// Walks one call's data from `prev`; `layout` (`LAYOUT_*`) says what `base` is. Writes extents after the head (`want` octets) and
/// returns their length; saves where the next syscall continues, or forgets the direction when
/// the walk got lost.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the syscall's shape"
)]
#[inline(always)]
pub fn walk(
    s: &mut Scratch,
    key: &[u64; 2],
    prev: H2Walk,
    layout: u64,
    base: u64,
    iovcnt: u64,
    ret: u64,
    want: u64,
) -> u64 {
    let w = &mut s.walk;
    iov_put(&mut w.layout, layout);
    iov_put(&mut w.base, base);
    iov_put(&mut w.iovcnt, iovcnt);
    iov_put(&mut w.ret, ret);
    iov_put(&mut w.want, want);
    iov_put(&mut w.status, STATUS_RUNNING);
    iov_put(&mut w.ext_len, 0);
    iov_put(&mut w.idx, 0);
    iov_put(&mut w.cur_start, 0);
    iov_put(&mut w.cur_valid, 0);
    iov_put(&mut w.straddle, 0);
    let have = (prev.have as u64) & 7;
    if prev.have != 0 {
        // A header begun in the previous syscall: its first octets go to the header area, the
        // rest is read from the start of this one.
        let hdr = hdr_area(s);
        *hdr = prev.part;
        let w = &mut s.walk;
        if ret < FRAME_HEADER_LEN - have {
            iov_put(&mut w.status, STATUS_LOST);
        } else {
            iov_put(&mut w.from, 0);
            iov_put(&mut w.to, FRAME_HEADER_LEN - have);
            iov_put(&mut w.dst, HDR_AREA + have);
            // The header's first octets were sent with the previous syscall.
            iov_put(&mut w.emit_from, want);
            iov_put(&mut w.phase, PHASE_HEADER);
        }
    } else if prev.copy_first != 0 {
        // The previous frame's copied prefix continues here.
        iov_put(&mut w.emit_from, want);
        iov_put(&mut w.prefix_end, prev.copy_first as u64);
        iov_put(&mut w.frame_end, prev.next as u64);
        iov_put(&mut w.phase, PHASE_DECIDE);
    } else {
        iov_put(&mut w.pos, prev.next as u64);
        iov_put(&mut w.phase, PHASE_FRAME);
    }
    if iov_get(&s.walk.status) == STATUS_RUNNING {
        // SAFETY: `walk_step` is a static subprogram with the callback signature bpf_loop
        // expects; it takes no context.
        unsafe {
            bpf_loop(
                MAX_STEPS,
                walk_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    let w = &s.walk;
    if iov_get(&w.status) != STATUS_SYNCED {
        let _ = H2WALK.remove(key);
        // Extents written before the walk got lost are still right.
        return iov_get(&w.ext_len);
    }
    let frame_end = iov_get(&w.frame_end);
    let prefix_end = iov_get(&w.prefix_end);
    let mut next = at(0);
    if iov_get(&w.straddle) != 0 {
        let have = (ret - iov_get(&w.pos)) & 7;
        next.have = have as u8;
        next.part = *hdr_area(s);
    } else {
        next.next = (frame_end - ret) as u32;
        if prefix_end > ret {
            next.copy_first = (prefix_end - ret) as u32;
        }
    }
    let _ = H2WALK.insert(key, &next, 0);
    iov_get(&s.walk.ext_len)
}

/// Starts following a direction at the next syscall: its data begins at a frame boundary.
#[inline(always)]
pub fn start_next(key: &[u64; 2]) {
    let _ = H2WALK.insert(key, &at(0), 0);
}

#[inline(always)]
fn hdr_area(s: &mut Scratch) -> &mut [u8; 8] {
    // SAFETY: HDR_AREA + 16 is inside the payload area (asserted above); u8 arrays have no
    // alignment requirement.
    unsafe {
        &mut *(s
            .buf
            .as_mut_ptr()
            .add(beyla_rs_common::EVENT_HEADER_LEN + HDR_AREA as usize)
            as *mut [u8; 8])
    }
}

#[inline(never)]
extern "C" fn walk_step(_i: u64, _ctx: *mut c_void) -> i64 {
    let s = match scratch() {
        Ok(s) => s,
        Err(_) => return 1,
    };
    if try_step(s).is_err() {
        iov_put(&mut s.walk.status, STATUS_LOST);
    }
    if iov_get(&s.walk.status) == STATUS_RUNNING {
        0
    } else {
        1
    }
}

#[inline(always)]
fn try_step(s: &mut Scratch) -> Result<(), i64> {
    let ret = iov_get(&s.walk.ret);
    let want = iov_get(&s.walk.want);
    match iov_get(&s.walk.phase) {
        PHASE_FRAME => {
            let pos = iov_get(&s.walk.pos);
            if pos >= ret {
                // The frame ends at or past the end of this syscall: next one continues.
                iov_put(&mut s.walk.frame_end, pos);
                iov_put(&mut s.walk.prefix_end, 0);
                iov_put(&mut s.walk.status, STATUS_SYNCED);
                return Ok(());
            }
            let w = &mut s.walk;
            iov_put(&mut w.from, pos);
            iov_put(&mut w.dst, HDR_AREA);
            iov_put(&mut w.emit_from, max(pos, want));
            if pos + FRAME_HEADER_LEN > ret {
                // The header straddles the end of the syscall: keep its first octets.
                iov_put(&mut w.straddle, 1);
                iov_put(&mut w.to, ret);
            } else {
                iov_put(&mut w.to, pos + FRAME_HEADER_LEN);
            }
            iov_put(&mut w.phase, PHASE_HEADER);
            Ok(())
        }
        PHASE_HEADER | PHASE_EMIT => {
            let from = iov_get(&s.walk.from);
            let to = iov_get(&s.walk.to);
            if from < to {
                return copy_piece(s, from, to);
            }
            if iov_get(&s.walk.phase) == PHASE_EMIT {
                iov_put(&mut s.walk.phase, PHASE_FRAME_DONE);
                return Ok(());
            }
            if iov_get(&s.walk.straddle) != 0 {
                iov_put(&mut s.walk.prefix_end, ret);
                iov_put(&mut s.walk.frame_end, ret);
                iov_put(&mut s.walk.phase, PHASE_DECIDE);
                return Ok(());
            }
            // A whole header is in the header area (RFC 9113 §4.1).
            let h = *hdr_area_9(s);
            let len = ((h[0] as u64) << 16) | ((h[1] as u64) << 8) | h[2] as u64;
            let kind = h[3];
            let flags = h[4];
            if kind > TYPE_MAX || h[5] & 0x80 != 0 || len > MAX_FRAME_LEN {
                return Err(-1);
            }
            let prefix = if kind == TYPE_DATA {
                (flags & FLAG_PADDED != 0) as u64
            } else {
                min(len, H2_PAYLOAD_PREFIX as u64)
            };
            let body = to;
            iov_put(&mut s.walk.prefix_end, body + prefix);
            iov_put(&mut s.walk.frame_end, body + len);
            iov_put(&mut s.walk.phase, PHASE_DECIDE);
            Ok(())
        }
        PHASE_DECIDE => {
            let from = iov_get(&s.walk.emit_from);
            let end = min(iov_get(&s.walk.prefix_end), ret);
            if end > from {
                let ext = iov_get(&s.walk.ext_len);
                let n = end - from;
                if ext + EXTENT_HEADER_LEN as u64 + n > MAX_EXTENTS_LEN as u64 {
                    return Err(-1);
                }
                put_extent_header(s, want + ext, from, n);
                let w = &mut s.walk;
                iov_put(&mut w.from, from);
                iov_put(&mut w.to, end);
                iov_put(&mut w.dst, want + ext + EXTENT_HEADER_LEN as u64);
                iov_put(&mut w.ext_len, ext + EXTENT_HEADER_LEN as u64 + n);
                iov_put(&mut w.phase, PHASE_EMIT);
            } else {
                iov_put(&mut s.walk.phase, PHASE_FRAME_DONE);
            }
            Ok(())
        }
        PHASE_FRAME_DONE => {
            let frame_end = iov_get(&s.walk.frame_end);
            if iov_get(&s.walk.straddle) != 0
                || frame_end >= ret
                || iov_get(&s.walk.prefix_end) > ret
            {
                iov_put(&mut s.walk.status, STATUS_SYNCED);
            } else {
                iov_put(&mut s.walk.pos, frame_end);
                iov_put(&mut s.walk.phase, PHASE_FRAME);
            }
            Ok(())
        }
        _ => Err(-1),
    }
}

#[inline(always)]
fn hdr_area_9(s: &mut Scratch) -> &[u8; 9] {
    // SAFETY: as `hdr_area`; 9 ≤ 16 octets.
    unsafe {
        &*(s.buf
            .as_ptr()
            .add(beyla_rs_common::EVENT_HEADER_LEN + HDR_AREA as usize)
            as *const [u8; 9])
    }
}

/// One step of copying syscall bytes `[from, to)`: either move the iovec cursor onto `from`,
/// or copy the part of `[from, to)` the cursor's entry holds.
#[inline(always)]
fn copy_piece(s: &mut Scratch, from: u64, to: u64) -> Result<(), i64> {
    let ret = iov_get(&s.walk.ret);
    if iov_get(&s.walk.cur_valid) == 0
        || from >= iov_get(&s.walk.cur_start) + iov_get(&s.walk.cur_len)
    {
        let w = &mut s.walk;
        if iov_get(&w.layout) == LAYOUT_BUF {
            iov_put(&mut w.cur_base, iov_get(&w.base));
            iov_put(&mut w.cur_start, 0);
            iov_put(&mut w.cur_len, ret);
            iov_put(&mut w.cur_valid, 1);
            return if from < ret { Ok(()) } else { Err(-1) };
        }
        let mut idx = iov_get(&w.idx);
        if iov_get(&w.cur_valid) != 0 {
            let next_start = iov_get(&w.cur_start) + iov_get(&w.cur_len);
            iov_put(&mut w.cur_start, next_start);
            idx += 1;
        }
        if idx >= iov_get(&w.iovcnt) {
            return Err(-1);
        }
        let at = iov_get(&w.base) + idx * 16;
        let kernel = iov_get(&w.layout) == LAYOUT_KERNEL_IOV;
        let base = iovec_u64(kernel, at)?;
        let len = iovec_u64(kernel, at + 8)?;
        let w = &mut s.walk;
        iov_put(&mut w.idx, idx);
        iov_put(&mut w.cur_base, base);
        iov_put(&mut w.cur_len, len);
        iov_put(&mut w.cur_valid, 1);
        return Ok(());
    }
    let cur_start = iov_get(&s.walk.cur_start);
    if from < cur_start {
        return Err(-1);
    }
    let end = min(to, cur_start + iov_get(&s.walk.cur_len));
    let n = end - from;
    let dst = iov_get(&s.walk.dst);
    copy_user(
        s,
        dst as usize,
        iov_get(&s.walk.cur_base) + (from - cur_start),
        n as usize,
    )?;
    iov_put(&mut s.walk.from, end);
    iov_put(&mut s.walk.dst, dst + n);
    Ok(())
}
