//! Kernel monotonic time (`bpf_ktime_get_ns`) to wall-clock time.
//!
//! The offset between CLOCK_REALTIME and CLOCK_MONOTONIC is read once at start-up, so every span
//! of a run is on one consistent time base even if the wall clock is stepped later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in nanoseconds.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Monotonic nanoseconds now (the kernel's time base).
    pub fn monotonic_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn to_system_time(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let c = Clock::new();
        let t = c.to_system_time(Clock::monotonic_ns());
        let d = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(d < Duration::from_millis(100), "{d:?}");
    }
}
