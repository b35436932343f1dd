//! The maps both sides share, and the small accessors every program uses.

use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or};

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use beyla_rs_common::{Config, ConnInfo, KernelOffsets, STAT_COUNT, TRACKED_PIDS, TRACKED_WORDS};

/// Events to user space. The daemon sets the real size at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Processes (tgids) being instrumented: bit `tgid % 64` of word `tgid / 64` (see
/// [`TRACKED_WORDS`]). Updated with atomic operations only, here and in the daemon's mapping.
#[map]
pub static TRACKED: Array<u64> = Array::with_max_entries(TRACKED_WORDS, BPF_F_MMAPABLE);

/// Tracked connections by the capture backend's connection key: `conn_key(tgid, fd)` for the
/// syscall backend. LRU so that connections whose close we never saw (process killed, fd passed
/// away) cannot exhaust it.
#[map]
pub static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// Bitmap of selected ports: bit `port % 64` of word `port / 64`.
#[map]
pub static PORTS: Array<u64> = Array::with_max_entries(1024, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-CPU sequence for connection ids; combined with the CPU number it is unique.
#[map]
pub static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This kernel's structure layouts, written by the daemon before attaching (socket-level
/// backends and the fork hook).
#[map]
pub static OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn tracked(tgid: u32) -> bool {
    match TRACKED.get(tgid / 64) {
        Some(w) => *w & (1u64 << (tgid % 64)) != 0,
        None => false,
    }
}

/// Set or clear `tgid`'s bit. Atomic: the daemon and other CPUs update bits of the same word.
/// Returns false for a tgid without a bit.
#[inline(always)]
pub fn set_tracked(tgid: u32, on: bool) -> bool {
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
pub fn count(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

pub fn next_conn_id() -> u64 {
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

/// Whether `port` is one of the selected ports.
#[inline(always)]
pub fn port_selected(port: u16) -> bool {
    match PORTS.get(port as u32 / 64) {
        Some(w) => *w & (1u64 << (port % 64)) != 0,
        None => false,
    }
}
