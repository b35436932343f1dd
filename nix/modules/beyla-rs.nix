# services.beyla-rs: the beyla-rs eBPF auto-instrumentation daemon.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.beyla-rs;
  inherit (lib) mkOption types;
  url = import ../lib/url.nix;

  # Present when nix/modules/alloy.nix is imported; 4318 otherwise.
  alloyOtlpPort = config.services.observability.alloy.otlpPort or 4318;
  alloyEnabled = config.services.alloy.enable or false;

  portRange = types.strMatching "[0-9]+-[0-9]+";

  badRanges = lib.filter
    (
      p:
      builtins.isString p
      && (
        let
          bounds = map lib.toInt (lib.splitString "-" p);
        in
        builtins.elemAt bounds 0 > builtins.elemAt bounds 1 || builtins.elemAt bounds 1 > 65535
      )
    )
    cfg.openPorts;

  service = import ../lib/beyla-rs-service.nix {
    execStart = lib.getExe' cfg.package "beyla-rs";
    inherit (cfg)
      openPorts
      serviceName
      otlpEndpoint
      tracePrinter
      environment
      environmentFile
      extraCapabilities
      ;
    withAlloy = alloyEnabled;
  };
in
{
  options.services.beyla-rs = {
    enable = lib.mkEnableOption "beyla-rs, eBPF auto-instrumentation that turns the HTTP/gRPC traffic of local processes into OpenTelemetry traces and metrics";

    package = mkOption {
      type = types.package;
      default = pkgs.beyla-rs or (pkgs.callPackage ../package.nix { });
      defaultText = lib.literalExpression "pkgs.beyla-rs or (pkgs.callPackage ./nix/package.nix { })";
      description = ''
        The beyla-rs package to run. The flake's `nixosModules.beyla-rs` sets this to
        the flake's own `packages.''${system}.beyla-rs`.
      '';
    };

    openPorts = mkOption {
      type = types.listOf (types.either types.port portRange);
      default = [ ];
      example = [
        80
        443
        "8000-8999"
      ];
      description = ''
        Instrument every process that has one of these ports open (listening or
        connected): single ports or `"FROM-TO"` ranges. Rendered as
        `BEYLA_OPEN_PORT` (`80,443,8000-8999`). A match instruments the whole
        process. Empty leaves `BEYLA_OPEN_PORT` unset (select processes through
        {option}`services.beyla-rs.environment` instead, e.g.
        `BEYLA_AUTO_TARGET_EXE`).
      '';
    };

    serviceName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "web-frontend";
      description = ''
        One service name for everything instrumented (`BEYLA_SERVICE_NAME`). `null`
        names each process on its own: its `OTEL_SERVICE_NAME` /
        `OTEL_RESOURCE_ATTRIBUTES`, else its executable name.
      '';
    };

    otlpEndpoint = mkOption {
      type = types.nullOr types.str;
      default = "http://127.0.0.1:${toString alloyOtlpPort}";
      defaultText = lib.literalExpression ''"http://127.0.0.1:''${toString config.services.observability.alloy.otlpPort}" # 4318'';
      example = "http://otel-collector.example:4318";
      description = ''
        OTLP base URL spans and metrics are exported to
        (`OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/traces` and `/v1/metrics` are
        appended). The default is the local Alloy receiver of
        {option}`services.observability.alloy`. `null` exports nothing (useful with
        {option}`services.beyla-rs.tracePrinter`).
      '';
    };

    tracePrinter = mkOption {
      type = types.enum [
        "disabled"
        "text"
        "json"
      ];
      default = "disabled";
      description = ''
        Also print every span to the journal (`BEYLA_TRACE_PRINTER`): `text` or
        `json` lines, or `disabled`.
      '';
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        BEYLA_LOG_LEVEL = "debug";
        OTEL_RESOURCE_ATTRIBUTES = "deployment.environment=prod";
      };
      description = ''
        Extra environment variables for the daemon (any `BEYLA_*` / `OTEL_*`
        variable it reads). They override the ones derived from the options above.
        They end up in the Nix store: put secrets in
        {option}`services.beyla-rs.environmentFile`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/beyla-rs.env";
      description = ''
        File of `KEY=value` lines loaded by systemd (`EnvironmentFile=`), read at
        service start and kept out of the Nix store: e.g.
        `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer …`.
      '';
    };

    extraCapabilities = mkOption {
      type = types.listOf (types.strMatching "CAP_[A-Z_]+");
      default = [ ];
      example = [ "CAP_NET_ADMIN" ];
      description = ''
        Capabilities added to the unit's `AmbientCapabilities` and
        `CapabilityBoundingSet` on top of the four beyla-rs needs (CAP_BPF,
        CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
        Leave empty: no current feature uses TC or socket filters, so neither
        CAP_NET_ADMIN nor CAP_NET_RAW is needed.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      (url.assertHttpUrl "services.beyla-rs.otlpEndpoint" cfg.otlpEndpoint)
      {
        assertion = badRanges == [ ];
        message = "services.beyla-rs.openPorts: a range must be FROM-TO with FROM <= TO <= 65535; got: ${builtins.toJSON badRanges}";
      }
    ];

    warnings = lib.optional
      (
        cfg.openPorts == [ ]
        && !(cfg.environment ? BEYLA_AUTO_TARGET_EXE)
        && !(cfg.environment ? BEYLA_EXECUTABLE_NAME)
        && !(cfg.environment ? BEYLA_TARGET_PID)
      ) "services.beyla-rs: openPorts is empty and no other process selector is set in services.beyla-rs.environment, so nothing will be instrumented.";

    # CAP_PERFMON only grants perf events while kernel.perf_event_paranoid <= 2 (some
    # kernels default to 3). mkDefault: a host may pick another value <= 2.
    boot.kernel.sysctl."kernel.perf_event_paranoid" = lib.mkDefault 1;

    systemd.services.beyla-rs = {
      inherit (service)
        description
        after
        wants
        wantedBy
        environment
        serviceConfig
        ;
    };
  };
}
