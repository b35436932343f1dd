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

  printers = [
    "disabled"
    "text"
    "json"
    "json_indent"
  ];

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

  settingsFormat = pkgs.formats.yaml { };

  service = import ../lib/beyla-rs-service.nix {
    execStart = lib.getExe' cfg.package "beyla-rs";
    inherit (cfg)
      configFile
      environment
      environmentFile
      extraCapabilities
      ;
    withAlloy = alloyEnabled;
  };

  # Process selectors: the top-level ones (file or environment) and discovery.instrument.
  selectorKeys = [
    "open_port"
    "auto_target_exe"
    "executable_name"
  ];
  selectorVars = [
    "BEYLA_OPEN_PORT"
    "BEYLA_AUTO_TARGET_EXE"
    "BEYLA_EXECUTABLE_NAME"
    "BEYLA_TARGET_PID"
  ];
  instrumentEntries = lib.attrByPath [ "discovery" "instrument" ] [ ] cfg.settings;
  selects =
    lib.any (k: (cfg.settings.${k} or null) != null) selectorKeys
    || lib.any (v: cfg.environment ? ${v}) selectorVars
    || (builtins.isList instrumentEntries && instrumentEntries != [ ]);

  # Endpoints set in settings directly (the ones from otlpEndpoint are checked as that option).
  settingsEndpoints = lib.filter (e: e.value != null && e.value != cfg.otlpEndpoint) (
    map
      (signal: {
        name = "services.beyla-rs.settings.${signal}.endpoint";
        value = lib.attrByPath [ signal "endpoint" ] null cfg.settings;
      })
      [
        "otel_traces_export"
        "otel_metrics_export"
      ]
  );

  # The repository's dashboards/*.json, copied to the store on their own.
  dashboardsDir = builtins.path {
    name = "beyla-rs-dashboards";
    path = ../../dashboards;
    filter = path: type: type == "regular" && lib.hasSuffix ".json" path;
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
        connected): single ports or `"FROM-TO"` ranges. The default of
        {option}`services.beyla-rs.settings` `open_port` (`"80,443,8000-8999"`). A
        match instruments the whole process. Empty leaves `open_port` unset (select
        processes through {option}`services.beyla-rs.settings` instead, e.g.
        `discovery.instrument` or `auto_target_exe`).
      '';
    };

    serviceName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "web-frontend";
      description = ''
        One service name for what the top-level selection selects (the default of
        `settings.service_name`). `null` names each process on its own: its
        `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, else its executable name.
      '';
    };

    otlpEndpoint = mkOption {
      type = types.nullOr types.str;
      default = "http://127.0.0.1:${toString alloyOtlpPort}";
      defaultText = lib.literalExpression ''"http://127.0.0.1:''${toString config.services.observability.alloy.otlpPort}" # 4318'';
      example = "http://otel-collector.example:4318";
      description = ''
        OTLP base URL spans and metrics are exported to (`/v1/traces` and
        `/v1/metrics` are appended): the default of both
        `settings.otel_traces_export.endpoint` and
        `settings.otel_metrics_export.endpoint`. The default is the local Alloy
        receiver of {option}`services.observability.alloy`. `null` sets neither, so
        nothing is exported over OTLP unless `settings` sets an endpoint (useful with
        {option}`services.beyla-rs.tracePrinter`).
      '';
    };

    tracePrinter = mkOption {
      type = types.enum printers;
      default = "disabled";
      description = ''
        Also print every span to the journal (the default of
        `settings.trace_printer`): `text`, `json` or `json_indent`, or `disabled`.
      '';
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          log_level = mkOption {
            type = types.enum [
              "debug"
              "info"
              "warn"
              "error"
            ];
            default = "info";
            description = "The daemon's log level.";
          };
          trace_printer = mkOption {
            type = types.enum printers;
            default = "disabled";
            defaultText = lib.literalExpression "config.services.beyla-rs.tracePrinter";
            description = "Also print every span to the journal.";
          };
        };
      };
      default = { };
      example = lib.literalExpression ''
        {
          discovery.instrument = [
            { open_ports = 8080; exe_path = "*/python3*"; name = "checkout"; namespace = "shop"; }
            { open_ports = "9000-9100"; name = "payments"; namespace = "shop"; }
          ];
          routes = {
            patterns = [ "/users/{id}" ];
            ignored_patterns = [ "/health" ];
          };
          attributes.select.http_server_request_duration = {
            include = [ "*" ];
            exclude = [ "url.path" ];
          };
          prometheus_export.port = 9400;
        }
      '';
      description = ''
        The daemon's configuration file (Grafana Beyla's key names), rendered to YAML
        in the Nix store and passed with `--config`. Free-form: any key the daemon
        reads can be set. {option}`services.beyla-rs.openPorts`,
        {option}`services.beyla-rs.serviceName`,
        {option}`services.beyla-rs.otlpEndpoint` and
        {option}`services.beyla-rs.tracePrinter` set `open_port`, `service_name`,
        `otel_traces_export.endpoint` / `otel_metrics_export.endpoint` and
        `trace_printer` here with `mkDefault`; a value set here wins. Variables in
        {option}`services.beyla-rs.environment` and
        {option}`services.beyla-rs.environmentFile` override the file. The file is
        world-readable in the store: no secrets (e.g. `otel_traces_export.headers`
        with a token) here, use `environmentFile`.
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = settingsFormat.generate "beyla-rs.yaml" cfg.settings;
      defaultText = lib.literalExpression ''(pkgs.formats.yaml { }).generate "beyla-rs.yaml" config.services.beyla-rs.settings'';
      description = "The YAML file rendered from {option}`services.beyla-rs.settings` (read-only).";
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
        variable it reads). They override the configuration file
        ({option}`services.beyla-rs.settings` and the options mapped onto it).
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

    grafanaDashboards = {
      enable = mkOption {
        type = types.bool;
        default = config.services.grafana.enable or false;
        defaultText = lib.literalExpression "config.services.grafana.enable";
        description = ''
          Provision the beyla-rs dashboards (RED metrics per service, the daemon's
          own health) in this host's Grafana, through a file provider in
          {option}`services.grafana.provision.dashboards.settings`. On by default
          when Grafana runs on the host, whether or not the daemon does (the
          dashboards read Prometheus/Mimir, fed by any host).
        '';
      };

      path = mkOption {
        type = types.path;
        default = dashboardsDir;
        defaultText = lib.literalExpression "the repository's dashboards/*.json, copied to the store";
        description = "Directory of dashboard JSON files the provider serves.";
      };

      folder = mkOption {
        type = types.str;
        default = "beyla-rs";
        description = "Grafana folder the dashboards appear in.";
      };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.enable {
      # The options above are defaults of the configuration file: one source, and a
      # value set in settings wins.
      services.beyla-rs.settings = {
        open_port = lib.mkIf (cfg.openPorts != [ ]) (lib.mkDefault (builtins.concatStringsSep "," (map toString cfg.openPorts)));
        service_name = lib.mkIf (cfg.serviceName != null) (lib.mkDefault cfg.serviceName);
        otel_traces_export = lib.mkIf (cfg.otlpEndpoint != null) { endpoint = lib.mkDefault cfg.otlpEndpoint; };
        otel_metrics_export = lib.mkIf (cfg.otlpEndpoint != null) { endpoint = lib.mkDefault cfg.otlpEndpoint; };
        trace_printer = lib.mkDefault cfg.tracePrinter;
      };

      assertions = [
        (url.assertHttpUrl "services.beyla-rs.otlpEndpoint" cfg.otlpEndpoint)
        {
          assertion = badRanges == [ ];
          message = "services.beyla-rs.openPorts: a range must be FROM-TO with FROM <= TO <= 65535; got: ${builtins.toJSON badRanges}";
        }
      ]
      ++ map (e: url.assertHttpUrl e.name e.value) settingsEndpoints;

      warnings = lib.optional (!selects) "services.beyla-rs: no process selector is set (openPorts, settings.open_port / auto_target_exe / executable_name, settings.discovery.instrument, or BEYLA_OPEN_PORT / BEYLA_AUTO_TARGET_EXE / BEYLA_EXECUTABLE_NAME / BEYLA_TARGET_PID in services.beyla-rs.environment), so nothing will be instrumented.";

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
    })

    # Grafana side: a file provider for the dashboards, only where Grafana runs.
    (lib.mkIf cfg.grafanaDashboards.enable {
      services.grafana.provision = {
        enable = lib.mkDefault true;
        dashboards.settings.providers = [
          {
            name = "beyla-rs";
            type = "file";
            inherit (cfg.grafanaDashboards) folder;
            options.path = cfg.grafanaDashboards.path;
          }
        ];
      };
    })
  ];
}
