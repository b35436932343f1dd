//! What the running kernel offers, asked before anything is loaded.
//!
//! A program that uses a missing helper or map type fails in the verifier with a message that
//! names neither the feature nor the kernel it first appeared in. Asking first turns that into
//! one line a user can act on ("this kernel lacks bpf_loop, added in Linux 5.17"), and no
//! kernel gets a partial capture: either every feature the programs need is there, or the
//! daemon does not start.
//!
//! The probes load tiny programs (or create one-entry maps) the way libbpf's do; see
//! [`aya::sys::is_helper_supported`].

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use thiserror::Error;

/// One kernel feature the capture programs depend on.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// The name users and kernel docs know it by (also the test switch's spelling).
    pub name: &'static str,
    /// What it is, for the message.
    pub what: &'static str,
    /// The first mainline release that has it.
    pub since: &'static str,
    probe: Probe,
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    Program(ProgramType),
    Map(MapType),
    /// A helper callable from raw tracepoint programs.
    Helper(BpfHelper),
}

/// Every feature the programs need, oldest first. The newest of them sets the minimum kernel;
/// the BPF atomic instructions (5.12) and `BPF_F_MMAPABLE` arrays (5.5) the programs also use
/// are older than it and are not probed on their own.
pub const REQUIRED: &[Feature] = &[
    Feature {
        name: "raw_tracepoint",
        what: "raw tracepoint programs",
        since: "4.17",
        probe: Probe::Program(ProgramType::RawTracePoint),
    },
    Feature {
        name: "bpf_probe_read_user",
        what: "BPF helper reading user memory",
        since: "5.5",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_probe_read_user),
    },
    Feature {
        name: "ringbuf",
        what: "BPF ring buffer maps",
        since: "5.8",
        probe: Probe::Map(MapType::RingBuf),
    },
    Feature {
        name: "bpf_ringbuf_query",
        what: "BPF helper asking the ring buffer how much is unread",
        since: "5.8",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_ringbuf_query),
    },
    Feature {
        name: "bpf_loop",
        what: "BPF helper running a callback in a bounded loop",
        since: "5.17",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_loop),
    },
];

/// The oldest kernel every feature in [`REQUIRED`] is in.
pub const MINIMUM_KERNEL: &str = "5.17";

/// Test switch: the probe of the feature named here reports it missing, so that the
/// missing-feature path can be tested on a kernel that has everything. Not a user setting.
pub const PRETEND_MISSING_ENV: &str = "BEYLA_TEST_PRETEND_MISSING_KERNEL_FEATURE";

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "this kernel ({kernel}) lacks {} ({}, Linux {} and later), which the capture programs \
         need; beyla-rs needs Linux {MINIMUM_KERNEL} or later",
        feature.name, feature.what, feature.since
    )]
    Missing { feature: Feature, kernel: String },
    #[error("{PRETEND_MISSING_ENV}={0:?} names no probed feature (known: {1})")]
    UnknownPretend(String, String),
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown release".to_owned())
}

/// Checks every feature in [`REQUIRED`]. A probe that cannot decide (the probe itself failed,
/// e.g. for lack of privileges with `BEYLA_ENFORCE_SYS_CAPS=false`) is logged and passed: the
/// load that follows then reports the real error.
pub fn check() -> Result<(), ProbeError> {
    let pretend = std::env::var(PRETEND_MISSING_ENV).ok();
    if let Some(p) = &pretend
        && !REQUIRED.iter().any(|f| f.name == p)
    {
        let known: Vec<&str> = REQUIRED.iter().map(|f| f.name).collect();
        return Err(ProbeError::UnknownPretend(p.clone(), known.join(", ")));
    }
    let kernel = kernel_release();
    for feature in REQUIRED {
        let present = if pretend.as_deref() == Some(feature.name) {
            Ok(false)
        } else {
            match feature.probe {
                Probe::Program(t) => is_program_supported(t).map_err(|e| e.to_string()),
                Probe::Map(t) => is_map_supported(t).map_err(|e| e.to_string()),
                Probe::Helper(h) => {
                    is_helper_supported(ProgramType::RawTracePoint, h).map_err(|e| e.to_string())
                }
            }
        };
        match present {
            Ok(true) => {}
            Ok(false) => {
                return Err(ProbeError::Missing {
                    feature: *feature,
                    kernel,
                });
            }
            Err(e) => log::warn!("cannot probe the kernel for {}: {e}", feature.name),
        }
    }
    log::debug!(
        "kernel {kernel} has every feature the capture needs ({})",
        REQUIRED
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_is_the_newest_requirement() {
        let version = |s: &str| -> (u32, u32) {
            let (a, b) = s.split_once('.').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let newest = REQUIRED.iter().map(|f| version(f.since)).max().unwrap();
        assert_eq!(newest, version(MINIMUM_KERNEL));
        // Oldest first, as documented.
        let since: Vec<_> = REQUIRED.iter().map(|f| version(f.since)).collect();
        assert!(since.is_sorted(), "{since:?}");
    }

    #[test]
    fn message_names_kernel_feature_and_version() {
        let e = ProbeError::Missing {
            feature: REQUIRED[4],
            kernel: "5.15.0-91-generic".into(),
        };
        assert_eq!(
            e.to_string(),
            "this kernel (5.15.0-91-generic) lacks bpf_loop (BPF helper running a callback in \
             a bounded loop, Linux 5.17 and later), which the capture programs need; beyla-rs \
             needs Linux 5.17 or later"
        );
    }
}
