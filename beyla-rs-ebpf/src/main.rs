//! Kernel side of beyla-rs: capture of tracked processes' connections into a ring buffer.
//!
//! - `maps`: the maps shared with the daemon and their accessors;
//! - `scratch`: the per-CPU workspace (the record being built, the loops' state);
//! - `files`: from a descriptor to its open file and socket (BTF offsets);
//! - `record`: building records in it, bounded user-memory copies, submitting to the ring
//!   buffer;
//! - `data`: the backend-neutral data path (head, tail copy or HTTP/2 frame extents), with
//!   `h2walk` following HTTP/2 frame boundaries;
//! - `process`: process life cycle hooks;
//! - `syscalls`: the syscall-tracepoint backend (raw tracepoint on `sys_exit`);
//! - `sockets`: the socket-level backends (fentry/fexit or kprobes on the TCP socket layer);
//! - `tls`: TLS libraries' plaintext (uprobes), tied to the connections the backends follow.
//!
//! The daemon loads and attaches the programs of one backend (and the process hooks it
//! needs); the others stay in the object unloaded.
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

mod data;
mod files;
mod h2walk;
mod maps;
mod process;
mod record;
mod scratch;
mod sockets;
mod syscalls;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
