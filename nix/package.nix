# beyla-rs as one binary with its eBPF object built in.
#
# beyla-rs/build.rs builds beyla-rs-ebpf for bpfel-unknown-none through aya-build,
# which runs `cargo build -Z build-std=core` with the current toolchain when rustup is
# absent (as in the Nix sandbox). nixpkgs has no nightly, so: stable rustc/cargo with
# RUSTC_BOOTSTRAP=1 (unstable flags allowed), core's sources from
# rustPlatform.rustLibSrc (via cargo's __CARGO_TESTS_ONLY_SRC_ROOT), and nixpkgs'
# bpf-linker, which is built against the same LLVM major version as rustc.
{ lib
, rustPlatform
, bpf-linker
}:
let
  manifest = lib.importTOML ../beyla-rs/Cargo.toml;
  workspace = lib.importTOML ../Cargo.toml;
  version =
    let
      v = manifest.package.version or null;
    in
    if builtins.isString v then v else workspace.workspace.package.version or "0.0.0";

  rustLibSrc = rustPlatform.rustLibSrc;
in
rustPlatform.buildRustPackage {
  pname = "beyla-rs";
  inherit version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../beyla-rs
      ../beyla-rs-common
      ../beyla-rs-ebpf
      ../xtask
      ../tests
      (lib.fileset.maybeMissing ../.cargo)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ bpf-linker ];

  env = {
    RUSTC_BOOTSTRAP = "1";
    __CARGO_TESTS_ONLY_SRC_ROOT = "${rustLibSrc}";
  };

  # `-Z build-std=core` resolves the standard library's own workspace, whose
  # crates.io dependencies are not in our vendor directory and cannot be downloaded
  # in the sandbox. rustLibSrc is library/ of the rustc source tarball; the tarball's
  # top-level vendor/ holds those crates. Build a vendor directory with both and point
  # this source tree's cargo config at it (deeper .cargo/config.toml files win).
  preBuild = ''
    ourVendor=$(cargo -Zunstable-options config get --format json-value \
      source.vendored-sources.directory | tr -d '"')
    if [ ! -d "$ourVendor" ]; then
      echo "beyla-rs: cannot find the vendored-sources directory (got '$ourVendor')" >&2
      exit 1
    fi
    vendor="$NIX_BUILD_TOP/beyla-rs-vendor"
    mkdir -p "$vendor" "$NIX_BUILD_TOP/rustc-src"
    for d in "$ourVendor"/*; do
      if [ -d "$d" ]; then ln -s "$d" "$vendor/"; fi
    done

    rustcSrc="$NIX_BUILD_TOP/rustc-src"
    tar -xf ${rustLibSrc.src} -C "$rustcSrc" --strip-components=1 --wildcards '*/vendor/*'
    awk '/^\[\[package\]\]/ { n = ""; v = "" }
         /^name = / { n = $3 }
         /^version = / { v = $3 }
         /^source = "registry\+/ { gsub(/"/, "", n); gsub(/"/, "", v); print n, v }' \
      ${rustLibSrc}/Cargo.lock | sort -u | while read -r name ver; do
        [ -e "$vendor/$name-$ver" ] && continue
        # `cargo vendor` names directories name-version, or just name without --versioned-dirs.
        if [ -d "$rustcSrc/vendor/$name-$ver" ]; then
          ln -s "$rustcSrc/vendor/$name-$ver" "$vendor/$name-$ver"
        elif grep -qs "^version = \"$ver\"" "$rustcSrc/vendor/$name/Cargo.toml"; then
          ln -s "$rustcSrc/vendor/$name" "$vendor/$name-$ver"
        else
          echo "beyla-rs: standard library dependency $name $ver is not in rustc's vendor/" >&2
          exit 1
        fi
      done

    mkdir -p .cargo
    printf '\n[source.vendored-sources]\ndirectory = "%s"\n' "$vendor" >> .cargo/config.toml
  '';

  cargoBuildFlags = [
    "--package"
    "beyla-rs"
  ];

  # The test suite loads eBPF programs (needs CAP_BPF and a real kernel); the NixOS VM
  # test (nix/tests/vm.nix, `checks.<system>.vm`) exercises the built binary instead.
  doCheck = false;

  meta = {
    description = "eBPF auto-instrumentation daemon, a drop-in replacement for Grafana Beyla";
    license = with lib.licenses; [
      mit
      asl20
    ];
    platforms = lib.platforms.linux;
    mainProgram = "beyla-rs";
  };
}
