# services.beyla-rs configured through settings: two services selected with
# discovery.instrument (no openPorts), route patterns, an attribute selection, a
# Prometheus endpoint and a trace sampler next to the OTLP endpoint the module maps from
# otlpEndpoint. nix/tests/eval-modules.nix evaluates it and compares the configuration
# file with settings.yaml (as data) and the unit with settings.service.
{
  services.beyla-rs = {
    enable = true;
    serviceName = null;
    tracePrinter = "json";
    environmentFile = "/run/secrets/beyla-rs.env";
    settings = {
      log_level = "debug";
      discovery.instrument = [
        {
          open_ports = 8080;
          exe_path = "*/python3*";
          name = "checkout";
          namespace = "shop";
        }
        {
          open_ports = "9000-9100";
          name = "payments";
          namespace = "shop";
        }
      ];
      routes = {
        patterns = [
          "/users/{id}"
          "/orders/{id}/items"
        ];
        ignored_patterns = [ "/health" ];
        ignore_mode = "traces";
        unmatched = "heuristic";
      };
      attributes.select.http_server_request_duration = {
        include = [ "*" ];
        exclude = [ "url.path" ];
      };
      prometheus_export = {
        port = 9400;
        path = "/metrics";
        buckets.duration_histogram = [
          0
          0.005
          0.01
          0.1
          1
        ];
      };
      otel_traces_export.sampler = {
        name = "parentbased_traceidratio";
        arg = "0.1";
      };
    };
  };
}
