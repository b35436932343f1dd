# services.observability.alloy: turns on nixpkgs' services.alloy (package, DynamicUser,
# systemd-journal group, config directory /etc/alloy) and writes its config.alloy for
# the host pipeline: OTLP in -> memory_limiter -> batch -> remote and local OTLP/HTTP
# exporters; node metrics -> Mimir; journald -> Loki.
{ config, lib, ... }:
let
  cfg = config.services.observability.alloy;
  inherit (lib) mkOption types;
  url = import ../lib/url.nix;

  hostName = config.networking.hostName or "";

  alloyConfig = import ../lib/alloy-config.nix {
    hostname = if hostName == "" then null else hostName;
    otlp = {
      listenAddress = cfg.otlpListenAddress;
      port = cfg.otlpPort;
      grpcPort = cfg.otlpGrpcPort;
      inherit (cfg)
        memoryLimit
        k8sEndpoint
        bufferSize
        localForwardPort
        ;
    };
    nodeExporter =
      if cfg.enableNodeExporter then
        {
          inherit (cfg) scrapeInterval mimirEndpoint;
        }
      else
        null;
    journald =
      if cfg.enableJournald && cfg.lokiEndpoint != null then
        {
          units = cfg.journaldUnits;
          inherit (cfg) lokiEndpoint;
        }
      else
        null;
    inherit (cfg) extraConfig;
  };

  endpoint =
    example: what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      inherit example;
      description = what + " Checked at evaluation time to be an http(s) URL.";
    };
in
{
  options.services.observability.alloy = {
    enable = lib.mkEnableOption ''
      the host observability pipeline in Grafana Alloy: this enables nixpkgs'
      {option}`services.alloy` and writes {file}`/etc/alloy/config.alloy`
    '';

    otlpPort = mkOption {
      type = types.port;
      default = 4318;
      description = ''
        Port of the OTLP/HTTP receiver (`otelcol.receiver.otlp`). beyla-rs exports
        here by default.
      '';
    };

    otlpGrpcPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      example = 4317;
      description = "Port of an additional OTLP/gRPC receiver; `null` serves HTTP only.";
    };

    otlpListenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address the OTLP receivers listen on. The default accepts only local
        senders; open the firewall yourself if you widen it.
      '';
    };

    memoryLimit = mkOption {
      type = types.strMatching "[0-9]+(B|KiB|MiB|GiB)";
      default = "512MiB";
      description = ''
        `limit` of `otelcol.processor.memory_limiter`, first after the receiver:
        above it Alloy refuses OTLP data (senders retry) instead of growing. Keep it
        well above {option}`services.observability.alloy.bufferSize`.
      '';
    };

    k8sEndpoint = endpoint "http://otel-collector.example:4318" ''
      Base URL of the remote OTLP/HTTP collector (for example the cluster's
      OpenTelemetry collector) that receives every span, metric and log through
      `otelcol.exporter.otlphttp "k8s"` with `retry_on_failure` and a bounded
      in-memory `sending_queue`. `null`: no remote export.
    '';

    bufferSize = mkOption {
      type = types.ints.positive;
      default = 100 * 1024 * 1024;
      defaultText = lib.literalExpression "100 * 1024 * 1024";
      description = ''
        Bytes of telemetry queued in memory for {option}`services.observability.alloy.k8sEndpoint`
        while it is unreachable (`sending_queue` with `sizer = "bytes"`); beyond it
        new data is dropped rather than blocking the pipeline.
      '';
    };

    localForwardPort = mkOption {
      type = types.nullOr types.port;
      default = 4320;
      description = ''
        Also forward everything over OTLP/HTTP to `http://127.0.0.1:<port>`, a
        consumer on this host (dual export from the same batch output; it has its
        own queue, so a dead remote never delays it). `null` disables it.
      '';
    };

    enableNodeExporter = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Collect host metrics with `prometheus.exporter.unix`; with
        {option}`services.observability.alloy.mimirEndpoint` set they are scraped
        every {option}`services.observability.alloy.scrapeInterval` and remote-written
        there.
      '';
    };

    scrapeInterval = mkOption {
      type = types.strMatching "[0-9]+(ms|s|m|h)";
      default = "15s";
      description = "How often `prometheus.scrape` collects the host metrics.";
    };

    mimirEndpoint = endpoint "http://mimir.example:9009/api/v1/push" ''
      Full Prometheus remote-write URL (Mimir: `…/api/v1/push`) for the host metrics.
      `prometheus.remote_write` keeps a write-ahead log, so an outage of up to 8 hours
      loses no samples. `null`: no scrape and no remote write (the exporter is still
      reachable through Alloy's HTTP server).
    '';

    enableJournald = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Ship journald logs to {option}`services.observability.alloy.lokiEndpoint`
        (`loki.source.journal` with `host` and `unit` labels). Nothing is shipped
        while `lokiEndpoint` is `null`.
      '';
    };

    journaldUnits = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "nginx"
        "beyla-rs"
        "sshd.service"
      ];
      description = ''
        systemd units whose journal entries are shipped (a `keep` rule on
        `__journal__systemd_unit`); a name without a suffix means `<name>.service`.
        Empty ships the whole journal.
      '';
    };

    lokiEndpoint = endpoint "http://loki.example:3100/loki/api/v1/push" ''
      Full Loki push URL (`…/loki/api/v1/push`) for journald logs (`loki.write`).
    '';

    extraConfig = mkOption {
      type = types.lines;
      default = "";
      example = ''
        prometheus.exporter.self "alloy" { }
      '';
      description = "Alloy configuration appended verbatim to the generated config.alloy.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      (url.assertHttpUrl "services.observability.alloy.k8sEndpoint" cfg.k8sEndpoint)
      (url.assertHttpUrl "services.observability.alloy.mimirEndpoint" cfg.mimirEndpoint)
      (url.assertHttpUrl "services.observability.alloy.lokiEndpoint" cfg.lokiEndpoint)
    ];

    services.alloy.enable = true;

    # nixpkgs' services.alloy reads /etc/alloy and reloads on changes of this file.
    environment.etc."alloy/config.alloy".text = alloyConfig;
  };
}
