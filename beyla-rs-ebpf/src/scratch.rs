//! The per-CPU workspace every program builds its record in, and the state of the loops that
//! run over several steps (`bpf_loop` callbacks read and write it here: they take no context).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use beyla_rs_common::{EVENT_HEADER_LEN, MAX_CAPTURE};

/// Room for one record: header, then payload (head, then tail copy). The payload area is four
/// times the largest capture so that the verifier can prove that any copy with
/// `offset < 2 * MAX_CAPTURE && len <= MAX_CAPTURE` stays inside it (see `copy_user`).
#[repr(C)]
pub struct Scratch {
    pub buf: [u8; EVENT_HEADER_LEN + 4 * MAX_CAPTURE],
    pub iov: IovTotals,
    pub walk: WalkState,
}

/// State of the iovec walk (see `data::iov_step`): its inputs and running totals. The walk runs
/// under `bpf_loop`, which has the verifier check one step once instead of every unrolled
/// combination of partial totals (64 iterations with a head and a tail copy each exceeded its
/// one-million-instruction budget); the step reads everything from here.
#[repr(C)]
pub struct IovTotals {
    /// Address of the `struct iovec` array and its length.
    pub iov: u64,
    pub iovcnt: u64,
    /// 1: the array is in kernel memory (its buffers are user memory either way).
    pub iov_kernel: u64,
    /// Bytes the syscall moved.
    pub ret: u64,
    /// Bytes of head to capture.
    pub want: u64,
    /// Head bytes captured so far.
    pub captured: u64,
    /// Syscall bytes walked so far.
    pub seen: u64,
    /// Offset in the syscall's data where the tail copy starts (`ret`: no tail copy).
    pub tail_start: u64,
    /// A tail segment could not be read: send no tail.
    pub tail_failed: u64,
    /// The head could not be read: send nothing.
    pub failed: u64,
}

/// The HTTP/2 frame walk's state (`h2walk`), in the per-CPU scratch buffer (see [`IovTotals`] for why).
#[repr(C)]
pub struct WalkState {
    /// `LAYOUT_*`: where the data is.
    pub layout: u64,
    pub base: u64,
    pub iovcnt: u64,
    pub ret: u64,
    /// Captured head length: extents start there in the payload.
    pub want: u64,
    pub phase: u64,
    pub status: u64,
    /// Syscall offset of the current frame's header (normal case).
    pub pos: u64,
    /// Copy in progress: syscall bytes `[from, to)` to payload offset `dst`.
    pub from: u64,
    pub to: u64,
    pub dst: u64,
    /// The header straddles the end of this syscall.
    pub straddle: u64,
    /// Current frame: first octet to send, end of its copied prefix, end of the frame.
    pub emit_from: u64,
    pub prefix_end: u64,
    pub frame_end: u64,
    /// Extent bytes written after the head.
    pub ext_len: u64,
    /// Iovec cursor: entry index, its start offset in the syscall's data, base and length.
    pub idx: u64,
    pub cur_start: u64,
    pub cur_base: u64,
    pub cur_len: u64,
    pub cur_valid: u64,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

pub fn scratch() -> Result<&'static mut Scratch, i64> {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU buffer; a program runs to completion on its CPU before the next.
        Some(p) => Ok(unsafe { &mut *p }),
        None => Err(-1),
    }
}

#[inline(always)]
pub fn iov_get(v: &u64) -> u64 {
    // SAFETY: volatile read of our own per-CPU memory.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub fn iov_put(v: &mut u64, x: u64) {
    // SAFETY: volatile write of our own per-CPU memory.
    unsafe { core::ptr::write_volatile(v, x) }
}
