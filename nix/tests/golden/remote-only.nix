# A server without a local consumer: gRPC too, listening on every address, no local
# forward, a bigger buffer, the whole journal, hostname left to Alloy, extra config.
{
  hostname = null;
  otlp = {
    listenAddress = "0.0.0.0";
    port = 4318;
    grpcPort = 4317;
    memoryLimit = "1GiB";
    k8sEndpoint = "https://otlp.example.com/otlp";
    bufferSize = 268435456;
    localForwardPort = null;
  };
  nodeExporter = {
    scrapeInterval = "30s";
    mimirEndpoint = "https://mimir.example.com/api/v1/push";
  };
  journald = {
    units = [ ];
    lokiEndpoint = "https://loki.example.com/loki/api/v1/push";
  };
  extraConfig = ''
    prometheus.exporter.self "alloy" { }
  '';
}
