{
  description = "beyla-rs: eBPF auto-instrumentation (a Grafana Beyla replacement) with NixOS modules for the Alloy / journald / Pyroscope host stack";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # eBPF and the modules are Linux-only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        beyla-rs = pkgs.callPackage ./nix/package.nix { };
        default = beyla-rs;
      });

      overlays.default = final: _prev: { beyla-rs = final.callPackage ./nix/package.nix { }; };

      nixosModules = {
        # The flake's build of beyla-rs is the default package.
        beyla-rs =
          { pkgs, ... }:
          {
            imports = [ ./nix/modules/beyla-rs.nix ];
            services.beyla-rs.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.beyla-rs;
          };
        alloy = ./nix/modules/alloy.nix;
        pyroscope = ./nix/modules/pyroscope.nix;
        default = {
          imports = [
            self.nixosModules.beyla-rs
            self.nixosModules.alloy
            self.nixosModules.pyroscope
          ];
        };
      };

      checks = forAllSystems (pkgs: {
        # NixOS VM test: needs KVM (and network to fetch nixpkgs and crates).
        vm = import ./nix/tests/vm.nix { inherit pkgs self; };

        # The golden Alloy configs, as in nix/tests/check.sh.
        alloy-config-golden = pkgs.runCommand "alloy-config-golden" { } (
          lib.concatMapStrings
            (
              name:
              let
                case = lib.removeSuffix ".nix" name;
                rendered = import ./nix/lib/alloy-config.nix (import (./nix/tests/golden + "/${name}"));
              in
              ''
                diff -u ${./nix/tests/golden + "/${case}.alloy"} ${pkgs.writeText "${case}.alloy" rendered}
              ''
            )
            (lib.filter (lib.hasSuffix ".nix") (lib.attrNames (builtins.readDir ./nix/tests/golden)))
          + "touch $out\n"
        );
      });

      devShells = forAllSystems (pkgs: {
        # nixpkgs has no nightly: its stable rustc with RUSTC_BOOTSTRAP=1 allows the
        # `-Z build-std=core` aya-build uses, with core's sources from rustLibSrc, and
        # its bpf-linker is built against the same LLVM major version as that rustc.
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            rust-analyzer
            bpf-linker
            bpftools
            nixpkgs-fmt
            deadnix
            systemd
          ];
          env = {
            RUSTC_BOOTSTRAP = "1";
            RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
            __CARGO_TESTS_ONLY_SRC_ROOT = "${pkgs.rustPlatform.rustLibSrc}";
          };
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
