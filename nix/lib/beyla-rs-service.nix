# The beyla-rs systemd service as plain data: nix/modules/beyla-rs.nix turns it into
# systemd.services.beyla-rs, and nix/tests/check.sh renders it (nix/lib/systemd-unit.nix)
# to run `systemd-analyze verify` and to compare its hardening with
# packaging/beyla-rs.service. builtins only (no nixpkgs).
#
# The daemon's settings live in configFile (YAML, `--config`); environment variables
# override it (the daemon reads both, the environment last).
{ execStart
, configFile ? null
, environment ? { }
, environmentFile ? null
, extraCapabilities ? [ ]
, withAlloy ? false
,
}:
let
  # Exactly what beyla-rs uses (the daemon checks these four; the issue-7 tests run it
  # as `nobody` with exactly them and prove each necessary): load eBPF programs and maps
  # (BPF), attach tracing programs (PERFMON), read /proc/<pid>/{exe,environ} and
  # pidfd_getfd other users' sockets (SYS_PTRACE), walk /proc/<pid>/fd (DAC_READ_SEARCH).
  # No NET_ADMIN/NET_RAW (no TC or socket filters), no CHECKPOINT_RESTORE.
  capabilities = [
    "CAP_BPF"
    "CAP_PERFMON"
    "CAP_SYS_PTRACE"
    "CAP_DAC_READ_SEARCH"
  ]
  ++ extraCapabilities;

  alloy = if withAlloy then [ "alloy.service" ] else [ ];
in
{
  description = "beyla-rs eBPF auto-instrumentation";
  after = [ "network.target" ] ++ alloy;
  wants = alloy;
  wantedBy = [ "multi-user.target" ];

  inherit environment;

  serviceConfig = {
    ExecStart = if configFile == null then execStart else "${execStart} --config ${configFile}";
    Restart = "on-failure";
    RestartSec = "5s";
    TimeoutStopSec = "30s";

    # Its own non-root user; the capabilities below are all it gets.
    DynamicUser = true;
    AmbientCapabilities = capabilities;
    CapabilityBoundingSet = capabilities;
    NoNewPrivileges = true;
    # Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; systemd raises it so the
    # service needs no CAP_SYS_RESOURCE.
    LimitMEMLOCK = "infinity";

    # Filesystem: read-only everywhere. /home stays readable (read-only) because
    # instrumented binaries and libraries may live there; /proc and /sys/kernel/btf must
    # stay visible, so no ProtectProc=invisible / ProcSubset=pid.
    ProtectSystem = "strict";
    ProtectHome = "read-only";
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    UMask = "0077";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
      "AF_NETLINK"
    ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "bpf"
      "perf_event_open"
      "pidfd_open"
      "pidfd_getfd"
    ];
  }
  // (if environmentFile == null then { } else { EnvironmentFile = toString environmentFile; });
}
