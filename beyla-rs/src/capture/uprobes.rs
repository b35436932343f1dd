//! The TLS library probes: loaded with the backend, attached to each library file as
//! instrumented processes are found to map one (see [`crate::tls`]).

use aya::{
    Ebpf,
    programs::{ProgramError, UProbe, uprobe::UProbeScope},
};

use super::CaptureError;
use crate::tls::{OpenSsl, Probes, Target, go::GoTls};

/// The entry probes, and the one return probe that serves them all.
const OPENSSL_ENTRIES: &[&str] = &[
    "beyla_ssl_read",
    "beyla_ssl_read_ex",
    "beyla_ssl_write",
    "beyla_ssl_write_ex",
    "beyla_ssl_handshake",
    "beyla_ssl_free",
];
const OPENSSL_RETURN: &str = "beyla_ssl_return";
/// Go's crypto/tls: `Write`'s entry, `Read`'s entry and `RET`s (plain uprobes).
const GO: &[&str] = &[
    "beyla_go_tls_write",
    "beyla_go_tls_read",
    "beyla_go_tls_read_ret",
];

/// Whether `name` is one of the TLS probes' programs.
pub(super) fn is_tls_program(name: &str) -> bool {
    OPENSSL_ENTRIES.contains(&name) || name == OPENSSL_RETURN || GO.contains(&name)
}

/// Load the probes' programs (not attached yet).
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    for &name in OPENSSL_ENTRIES.iter().chain([&OPENSSL_RETURN]).chain(GO) {
        program(ebpf, name)?
            .load()
            .map_err(|source| CaptureError::Program { name, source })?;
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, CaptureError> {
    ebpf.program_mut(name)
        .ok_or(CaptureError::MissingProgram(name))?
        .try_into()
        .map_err(|source| CaptureError::Program { name, source })
}

/// Attach the probes `target` calls for; returns how many were attached. A failure part-way
/// leaves the probes attached so far (each works on its own: a missing write probe loses
/// writes, nothing else).
pub(super) fn attach_target(ebpf: &mut Ebpf, target: &Target) -> Result<usize, CaptureError> {
    match &target.probes {
        Probes::OpenSsl(o) => attach_openssl(ebpf, o, target),
        Probes::Go(g) => attach_go(ebpf, g, target),
    }
}

fn attach_go(ebpf: &mut Ebpf, g: &GoTls, target: &Target) -> Result<usize, CaptureError> {
    // The `RET` probes first, as the OpenSSL return probe (see below).
    for &ret in &g.read_returns {
        attach(ebpf, "beyla_go_tls_read_ret", ret, target)?;
    }
    attach(ebpf, "beyla_go_tls_read", g.read, target)?;
    attach(ebpf, "beyla_go_tls_write", g.write, target)?;
    Ok(g.read_returns.len() + 2)
}

fn attach_openssl(ebpf: &mut Ebpf, o: &OpenSsl, target: &Target) -> Result<usize, CaptureError> {
    let calls = [
        ("beyla_ssl_read", Some(o.read)),
        ("beyla_ssl_read_ex", o.read_ex),
        ("beyla_ssl_write", Some(o.write)),
        ("beyla_ssl_write_ex", o.write_ex),
        ("beyla_ssl_handshake", Some(o.handshake)),
    ];
    let mut n = 0;
    for (name, offset) in calls {
        let Some(offset) = offset else { continue };
        // The return probe goes on first: a return without its entry is ignored, an entry
        // without its return would leave the thread marked as in a call.
        attach(ebpf, OPENSSL_RETURN, offset, target)?;
        attach(ebpf, name, offset, target)?;
        n += 2;
    }
    attach(ebpf, "beyla_ssl_free", o.free, target)?;
    Ok(n + 1)
}

fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    offset: u64,
    target: &Target,
) -> Result<(), CaptureError> {
    program(ebpf, name)?
        .attach(offset, &target.path, UProbeScope::AllProcesses)
        .map(drop)
        .map_err(|source: ProgramError| CaptureError::Program { name, source })
}
