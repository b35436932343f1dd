//! This crate's real product is the `beyla-rs-ebpf` binary (the eBPF object). The library target
//! exists so that `beyla-rs` can name this package as a build dependency, which makes cargo
//! rebuild the daemon when the kernel programs change.
#![no_std]
