//! Builds the eBPF object (`beyla-rs-ebpf`) for the BPF target with the nightly toolchain and
//! places it in OUT_DIR, from where `capture::syscalls` embeds it: the daemon is one binary with
//! no runtime files. `cargo xtask build` installs what this needs (rust-src, bpf-linker).
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../beyla-rs-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "beyla-rs-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
