# Example: a server. beyla-rs instruments the public services, Alloy ships traces,
# metrics and logs to the cluster, and the services are profiled continuously with
# Alloy's eBPF profiler (one Python service pushes its own profiles with the Pyroscope
# SDK instead). Host names are examples.
#
# Use it from a flake:
#   nixosConfigurations.hetzner = nixpkgs.lib.nixosSystem {
#     modules = [ beyla-rs.nixosModules.default ./hardware.nix ./hetzner.nix ];
#   };
{
  networking.hostName = "hetzner";

  services.observability.alloy = {
    enable = true;
    k8sEndpoint = "http://otel-collector.tail0000.ts.net:4318";
    # No OTLP consumer on this host.
    localForwardPort = null;
    mimirEndpoint = "http://mimir.tail0000.ts.net:9009/api/v1/push";
    lokiEndpoint = "http://loki.tail0000.ts.net:3100/loki/api/v1/push";
    journaldUnits = [
      "nginx"
      "api"
      "postgresql"
      "beyla-rs"
    ];
  };

  services.beyla-rs = {
    enable = true;
    openPorts = [
      80
      443
      "8000-8999"
    ];
    environment.OTEL_RESOURCE_ATTRIBUTES = "deployment.environment=production";
  };

  services.observability.pyroscope = {
    enable = true;
    serverAddress = "http://pyroscope.tail0000.ts.net:4040";
    applications = {
      api = {
        matchService = "api";
        labels.env = "production";
      };
      nginx.matchService = "nginx";
      postgres = {
        matchExe = ".*/bin/postgres";
        matchService = "postgresql";
      };
      ingest = {
        matchService = "ingest";
        sdk = true;
      };
    };
  };
}
