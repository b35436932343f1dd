#!/usr/bin/env bash
# Checks of the Nix side (flake.nix, nix/, packaging/) that run on a plain Debian machine
# without nixpkgs. From the repository root:
#
#   bash nix/tests/check.sh                                   # everything but the module evaluation
#   NIXPKGS_LIB=/path/to/nixpkgs/lib bash nix/tests/check.sh  # plus the lib.evalModules harness
#
# Installs what is missing (nix-bin and systemd from apt; deadnix and nixpkgs-fmt from
# crates.io), then: every .nix file parses; deadnix finds nothing; nixpkgs-fmt would
# change nothing; nix/lib/url.nix cases; the golden Alloy configs; systemd-analyze verify
# of packaging/beyla-rs.service and of the unit rendered from nix/lib/beyla-rs-service.nix,
# and that both carry the same hardening; with NIXPKGS_LIB, nix/tests/eval-modules.nix
# (including the rendered beyla-rs configuration files against golden YAML, as data).
# Ends with "nix checks: N passed, M failed" and exits non-zero when M > 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

DEADNIX_VERSION=1.3.1
NIXPKGS_FMT_VERSION=1.3.0

passed=0
failed=0
pass() {
  passed=$((passed + 1))
  echo "ok    $1"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ]; then sed 's/^/      /' <<<"$2"; fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- tools ----------------------------------------------------------------------
apt_packages=()
command -v nix-instantiate >/dev/null || apt_packages+=(nix-bin)
command -v systemd-analyze >/dev/null || apt_packages+=(systemd)
command -v python3 >/dev/null || apt_packages+=(python3)
# PyYAML reads the golden configuration files (nix/tests/golden/*/*.yaml).
python3 -c 'import yaml' 2>/dev/null || apt_packages+=(python3-yaml)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "installing ${apt_packages[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
if ! command -v deadnix >/dev/null; then
  echo "installing deadnix $DEADNIX_VERSION (cargo)"
  cargo install --locked --quiet deadnix --version "$DEADNIX_VERSION"
fi
if ! command -v nixpkgs-fmt >/dev/null; then
  echo "installing nixpkgs-fmt $NIXPKGS_FMT_VERSION (cargo)"
  cargo install --locked --quiet nixpkgs-fmt --version "$NIXPKGS_FMT_VERSION"
fi

# Decodes the JSON string printed by `nix-instantiate --eval --json`.
json_string() { python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))'; }

# `systemd-analyze verify` of a unit whose ExecStart is replaced by /bin/true (the
# real binary is not installed here). Any message counts as a failure.
verify_unit() {
  local dir
  dir=$(mktemp -d -p "$work")
  sed 's#^ExecStart=.*#ExecStart=/bin/true#' "$1" >"$dir/beyla-rs.service"
  systemd-analyze verify "$dir/beyla-rs.service" 2>&1
}

mapfile -t nix_files < <({
  echo flake.nix
  find nix -name '*.nix'
} | sort)

# ---- parse, lint, format ------------------------------------------------------------
for f in "${nix_files[@]}"; do
  if out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then pass "parses: $f"; else fail "parses: $f" "$out"; fi
done

if out=$(deadnix --fail "${nix_files[@]}" 2>&1); then pass "deadnix: no unused code"; else fail "deadnix: no unused code" "$out"; fi

if out=$(nixpkgs-fmt --check "${nix_files[@]}" 2>&1); then
  pass "nixpkgs-fmt: formatted"
else
  fail "nixpkgs-fmt: formatted (run: nixpkgs-fmt flake.nix nix)" "$out"
fi

# ---- pure functions ---------------------------------------------------------------
if out=$(nix-instantiate --eval --strict --json nix/tests/url-cases.nix 2>&1) && [ "$out" = "[]" ]; then
  pass "url.nix: accepts and rejects the URL cases"
else
  fail "url.nix: accepts and rejects the URL cases (wrong: $out)"
fi

for case_file in nix/tests/golden/*.nix; do
  name=$(basename "$case_file" .nix)
  expected="nix/tests/golden/$name.alloy"
  if ! rendered=$(nix-instantiate --eval --strict --json \
    -E "import ./nix/lib/alloy-config.nix (import ./$case_file)" 2>&1); then
    fail "golden $name: renders" "$rendered"
    continue
  fi
  json_string <<<"$rendered" >"$work/$name.alloy"
  if out=$(diff -u "$expected" "$work/$name.alloy"); then
    pass "golden $name: matches $expected"
  else
    fail "golden $name: matches $expected" "$out"
  fi
done

# ---- systemd units --------------------------------------------------------------
if out=$(verify_unit packaging/beyla-rs.service) && [ -z "$out" ]; then
  pass "systemd-analyze verify packaging/beyla-rs.service"
else
  fail "systemd-analyze verify packaging/beyla-rs.service" "$out"
fi

# The module's unit, rendered purely from the same data the module uses.
if rendered=$(nix-instantiate --eval --strict --json -E '
    import ./nix/lib/systemd-unit.nix (import ./nix/lib/beyla-rs-service.nix {
      execStart = "/run/current-system/sw/bin/beyla-rs";
      configFile = "/etc/beyla-rs/config.yaml";
      environmentFile = "/run/secrets/beyla-rs.env";
      environment.OTEL_RESOURCE_ATTRIBUTES = "deployment.environment=prod,note=100%";
      withAlloy = true;
    })' 2>&1); then
  json_string <<<"$rendered" >"$work/module.service"
  if out=$(verify_unit "$work/module.service") && [ -z "$out" ]; then
    pass "systemd-analyze verify of the module's unit (nix/lib/beyla-rs-service.nix)"
  else
    fail "systemd-analyze verify of the module's unit (nix/lib/beyla-rs-service.nix)" "$out"
  fi
  # Same hardening, ordering and install target; only the environment and ExecStart
  # may differ.
  settings() { grep -Ev '^(#|$|\[|Environment=|EnvironmentFile=|ExecStart=)' "$1" | sort; }
  if out=$(diff -u <(settings "$work/module.service") <(settings packaging/beyla-rs.service)); then
    pass "packaging/beyla-rs.service has the module's hardening"
  else
    fail "packaging/beyla-rs.service has the module's hardening (- module, + packaging)" "$out"
  fi
else
  fail "render the module's unit" "$rendered"
fi

# ---- module evaluation (needs nixpkgs' lib) -----------------------------------------
if [ -z "${NIXPKGS_LIB:-}" ]; then
  echo "skip  lib.evalModules harness: NIXPKGS_LIB is not set (nixpkgs is not available" \
    "offline here); point it at a nixpkgs lib/ directory to run nix/tests/eval-modules.nix"
elif [ ! -f "$NIXPKGS_LIB/default.nix" ]; then
  fail "lib.evalModules harness: NIXPKGS_LIB=$NIXPKGS_LIB has no default.nix"
elif ! out=$(nix-instantiate --eval --strict --json nix/tests/eval-modules.nix \
  --arg nixpkgsLib "$NIXPKGS_LIB" 2>&1 >"$work/harness.json"); then
  fail "lib.evalModules harness evaluates" "$out"
else
  while IFS=$'\t' read -r ok name detail; do
    if [ "$ok" = 1 ]; then pass "modules: $name"; else fail "modules: $name" "$detail"; fi
  done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("1" if r["ok"] else "0", r["name"], r["detail"].replace("\t", " ").replace("\n", " "), sep="\t")
' "$work/harness.json")
  for unit in unit settingsUnit; do
    python3 -c 'import json, sys; sys.stdout.write(json.load(open(sys.argv[1]))[sys.argv[2]])' \
      "$work/harness.json" "$unit" >"$work/evaluated-$unit.service"
    if out=$(verify_unit "$work/evaluated-$unit.service") && [ -z "$out" ]; then
      pass "modules: systemd-analyze verify of the evaluated beyla-rs unit ($unit)"
    else
      fail "modules: systemd-analyze verify of the evaluated beyla-rs unit ($unit)" "$out"
    fi
  done
  # Each rendered configuration file (JSON from the harness' stand-in generator, which
  # is YAML) must hold the same data as its golden YAML file. Details come with \n for
  # line breaks.
  while IFS=$'\t' read -r ok name detail; do
    if [ "$ok" = 1 ]; then pass "modules: $name"; else fail "modules: $name" "$(printf '%b' "$detail")"; fi
  done < <(python3 -c '
import difflib, json, os, sys, yaml
for name, text in sorted(json.load(open(sys.argv[1]))["rendered"].items()):
    golden = os.path.join("nix/tests/golden", name + ".yaml")
    title = "configuration file %s matches %s (as YAML data)" % (name, golden)
    try:
        expected = yaml.safe_load(open(golden))
    except (OSError, yaml.YAMLError) as e:
        print("0", title, str(e).replace("\t", " ").replace("\n", " "), sep="\t")
        continue
    actual = yaml.safe_load(text)
    if actual == expected:
        print("1", title, "", sep="\t")
    else:
        dump = lambda d: json.dumps(d, indent=1, sort_keys=True).splitlines()
        diff = "\\n".join(difflib.unified_diff(dump(expected), dump(actual), "golden", "rendered", lineterm=""))
        print("0", title, diff, sep="\t")
' "$work/harness.json")
fi

echo "nix checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
