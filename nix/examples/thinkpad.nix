# Example: a laptop. Alloy exports to the cluster's collector over the tailnet and also
# forwards locally to an OTLP consumer on port 4320 (dual export); host metrics go to
# Mimir and the journal of a few units to Loki; beyla-rs instruments the local
# development services. Host names are examples.
#
# Use it from a flake:
#   nixosConfigurations.thinkpad = nixpkgs.lib.nixosSystem {
#     modules = [ beyla-rs.nixosModules.default ./hardware.nix ./thinkpad.nix ];
#   };
{
  networking.hostName = "thinkpad";

  services.observability.alloy = {
    enable = true;
    k8sEndpoint = "http://otel-collector.tail0000.ts.net:4318";
    localForwardPort = 4320;
    mimirEndpoint = "http://mimir.tail0000.ts.net:9009/api/v1/push";
    lokiEndpoint = "http://loki.tail0000.ts.net:3100/loki/api/v1/push";
    journaldUnits = [
      "alloy"
      "beyla-rs"
      "nixos-upgrade"
      "tailscaled"
    ];
  };

  services.beyla-rs = {
    enable = true;
    # Local web apps and dev servers; everything talking on these ports is traced.
    openPorts = [
      3000
      5173
      "8000-8099"
    ];
  };
}
