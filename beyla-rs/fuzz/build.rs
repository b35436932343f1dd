//! The daemon crate is too heavy to build for fuzzing, so the fuzz targets compile the pure
//! protocol parsers directly. `protocol/mod.rs` declares every parser module; this copies only
//! its shared types (without the `mod` declarations and the inner doc comments) so that each
//! target can pick the parser modules it needs.
use std::path::Path;

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/protocol/mod.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src).expect("read protocol/mod.rs");
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("//!") && !l.trim_start().starts_with("pub mod "))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("protocol_types.rs");
    std::fs::write(out, kept).expect("write protocol_types.rs");
}
