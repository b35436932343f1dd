# services.observability.pyroscope: continuous profiling. The standalone Pyroscope
# agent is gone upstream; profiling now runs in Grafana Alloy (discovery.process ->
# pyroscope.ebpf -> pyroscope.write), written to /etc/alloy/pyroscope.alloy next to
# the config of nix/modules/alloy.nix. Applications that push profiles with a
# Pyroscope SDK instead get PYROSCOPE_SERVER_ADDRESS on their systemd service.
{ config, lib, ... }:
let
  cfg = config.services.observability.pyroscope;
  inherit (lib) mkOption types;
  url = import ../lib/url.nix;

  hostName = config.networking.hostName or "";

  apps = lib.attrValues cfg.applications;
  ebpfApps = lib.filter (a: !a.sdk) apps;
  sdkApps = lib.filter (a: a.sdk) apps;

  serviceAttr = s: lib.removeSuffix ".service" s;

  pyroscopeConfig = import ../lib/alloy-config.nix {
    hostname = if hostName == "" then null else hostName;
    pyroscope = {
      inherit (cfg) serverAddress;
      applications = map
        (a: {
          inherit (a)
            name
            matchExe
            matchService
            labels
            ;
        })
        ebpfApps;
    };
  };

  # pyroscope.ebpf and discovery.process must run as root in the host PID namespace
  # (Alloy's documentation). Root, but bounded to what eBPF profiling uses: load
  # programs (BPF), sample all CPUs (PERFMON), read other processes' maps and ELF
  # files (SYS_PTRACE, DAC_READ_SEARCH, CHECKPOINT_RESTORE), kernel symbols (SYSLOG),
  # and the memlock limit on kernels before 5.11 (SYS_RESOURCE).
  profilerCapabilities = [
    "CAP_BPF"
    "CAP_PERFMON"
    "CAP_SYS_PTRACE"
    "CAP_DAC_READ_SEARCH"
    "CAP_CHECKPOINT_RESTORE"
    "CAP_SYSLOG"
    "CAP_SYS_RESOURCE"
  ];

  application = types.submodule (
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.strMatching "[A-Za-z0-9_.-]+";
          default = name;
          defaultText = lib.literalMD "the attribute name";
          description = "Service name the profiles are stored under in Pyroscope (`service_name`).";
        };

        matchExe = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = ".*/bin/python3.*";
          description = ''
            RE2 regular expression, anchored at both ends, matched against the
            executable path of each process (`__meta_process_exe`).
          '';
        };

        matchService = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "api";
          description = ''
            systemd service whose processes are profiled (matched on the process's
            cgroup path; `api` and `api.service` are the same). With
            {option}`matchExe` also set, a process must match both. With
            {option}`sdk`, the service that gets `PYROSCOPE_SERVER_ADDRESS`.
          '';
        };

        labels = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            env = "prod";
          };
          description = "Extra labels attached to this application's profiles.";
        };

        sdk = mkOption {
          type = types.bool;
          default = false;
          description = ''
            The application pushes its own profiles with a Pyroscope SDK: it is not
            profiled with eBPF, and `PYROSCOPE_SERVER_ADDRESS` is set to
            {option}`services.observability.pyroscope.serverAddress` in the
            environment of {option}`matchService`.
          '';
        };
      };
    }
  );
in
{
  options.services.observability.pyroscope = {
    enable = lib.mkEnableOption "continuous profiling with Grafana Alloy's eBPF profiler, sent to a Pyroscope server";

    serverAddress = mkOption {
      type = types.str;
      example = "http://pyroscope.example:4040";
      description = ''
        Base URL of the Pyroscope server (`pyroscope.write`, and
        `PYROSCOPE_SERVER_ADDRESS` for SDK applications). Checked at evaluation time
        to be an http(s) URL.
      '';
    };

    applications = mkOption {
      type = types.attrsOf application;
      default = { };
      example = lib.literalExpression ''
        {
          api = { matchService = "api"; labels.env = "prod"; };
          worker = { matchExe = ".*/bin/worker"; };
          python-app = { matchService = "python-app"; sdk = true; };
        }
      '';
      description = ''
        Applications to profile. Each needs {option}`matchExe` and/or
        {option}`matchService` ({option}`matchService` when it uses an SDK).
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          (url.assertHttpUrl "services.observability.pyroscope.serverAddress" cfg.serverAddress)
        ]
        ++ map
          (a: {
            assertion = a.matchExe != null || a.matchService != null;
            message = "services.observability.pyroscope.applications.${a.name}: set matchExe and/or matchService.";
          })
          ebpfApps
        ++ map
          (a: {
            assertion = a.matchService != null;
            message = "services.observability.pyroscope.applications.${a.name}: sdk = true needs matchService (the systemd service that gets PYROSCOPE_SERVER_ADDRESS).";
          })
          sdkApps;

        warnings = lib.optional (apps == [ ]) "services.observability.pyroscope is enabled but has no applications: nothing is profiled.";

        systemd.services = lib.listToAttrs (
          map
            (a: lib.nameValuePair (serviceAttr a.matchService) { environment.PYROSCOPE_SERVER_ADDRESS = cfg.serverAddress; })
            (lib.filter (a: a.matchService != null) sdkApps)
        );
      }

      (lib.mkIf (ebpfApps != [ ]) {
        services.alloy.enable = true;

        environment.etc."alloy/pyroscope.alloy".text = pyroscopeConfig;

        systemd.services.alloy = {
          # nixpkgs only reloads Alloy for changes of config.alloy.
          reloadTriggers = [ (builtins.hashString "sha256" pyroscopeConfig) ];
          serviceConfig = {
            DynamicUser = lib.mkForce false;
            User = "root";
            Group = "root";
            CapabilityBoundingSet = profilerCapabilities;
          };
        };
      })
    ]
  );
}
