# A laptop: remote export to the cluster's collector plus the local forward to 4320,
# host metrics to Mimir, selected journald units to Loki.
{
  hostname = "thinkpad";
  otlp = {
    listenAddress = "127.0.0.1";
    port = 4318;
    grpcPort = null;
    memoryLimit = "512MiB";
    k8sEndpoint = "http://otel-collector.tail0000.ts.net:4318";
    bufferSize = 104857600;
    localForwardPort = 4320;
  };
  nodeExporter = {
    scrapeInterval = "15s";
    mimirEndpoint = "http://mimir.tail0000.ts.net:9009/api/v1/push";
  };
  journald = {
    units = [
      "beyla-rs"
      "alloy"
      "user@1000.service"
      "nixos-upgrade.timer"
    ];
    lokiEndpoint = "http://loki.tail0000.ts.net:3100/loki/api/v1/push";
  };
  extraConfig = "";
}
