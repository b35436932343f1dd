//! Rebuild the eBPF object when the linker changes (a rebuilt bpf-linker may emit different BTF).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
