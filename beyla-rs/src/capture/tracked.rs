//! The daemon's view of the kernel's tracked-process bitmap (`TRACKED`).
//!
//! The kernel side sets a process's bit when it binds a selected port or a tracked process
//! forks, and clears it when the process exits; the daemon sets and clears bits for the
//! processes it selects from /proc. Both sides write words of the same array, so a plain
//! read-modify-write through the map syscalls could undo a concurrent kernel update of another
//! bit in the word. The map is `BPF_F_MMAPABLE` instead: the daemon maps it and uses the same
//! atomic operations the programs do.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Map, MapData};
use beyla_rs_common::{TRACKED_PIDS, TRACKED_WORDS};

use super::CaptureError;

/// Bytes of the bitmap (a whole number of pages: 2^16 words of 8 bytes).
const LEN: usize = TRACKED_WORDS as usize * 8;

pub(super) struct TrackedPids {
    words: NonNull<AtomicU64>,
    // Keeps the map's fd open for as long as it is mapped (the mapping would outlive it, but
    // the map is ours to own).
    _map: MapData,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for TrackedPids {}
// SAFETY: as above.
unsafe impl Sync for TrackedPids {}

impl TrackedPids {
    pub(super) fn new(map: Map) -> Result<Self, CaptureError> {
        let Map::Array(map) = map else {
            return Err(CaptureError::MissingMap("TRACKED"));
        };
        // SAFETY: a shared read-write mapping of an mmapable array map of LEN bytes; the kernel
        // checks the size and the flag and fails rather than mapping anything else.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(CaptureError::Mmap {
                name: "TRACKED",
                source: std::io::Error::last_os_error(),
            });
        }
        let words = NonNull::new(p.cast::<AtomicU64>()).ok_or(CaptureError::Mmap {
            name: "TRACKED",
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self { words, _map: map })
    }

    fn word(&self, tgid: u32) -> Option<(&AtomicU64, u64)> {
        if tgid >= TRACKED_PIDS {
            return None;
        }
        // SAFETY: tgid / 64 < TRACKED_WORDS, inside the mapping; u64 words are 8-aligned
        // (the mapping is page-aligned).
        let w = unsafe { &*self.words.as_ptr().add((tgid / 64) as usize) };
        Some((w, 1u64 << (tgid % 64)))
    }

    /// Returns false for a process id the bitmap has no bit for (above the kernel's limit).
    pub(super) fn insert(&self, tgid: u32) -> bool {
        self.word(tgid)
            .map(|(w, bit)| w.fetch_or(bit, Ordering::Relaxed))
            .is_some()
    }

    pub(super) fn remove(&self, tgid: u32) {
        if let Some((w, bit)) = self.word(tgid) {
            w.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

impl Drop for TrackedPids {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; nothing borrows it past `self`.
        unsafe { libc::munmap(self.words.as_ptr().cast(), LEN) };
    }
}
