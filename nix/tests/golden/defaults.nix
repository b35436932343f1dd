# What nix/modules/alloy.nix passes with every option at its default
# (networking.hostName = "nixos").
{
  hostname = "nixos";
  otlp = {
    listenAddress = "127.0.0.1";
    port = 4318;
    grpcPort = null;
    memoryLimit = "512MiB";
    k8sEndpoint = null;
    bufferSize = 104857600;
    localForwardPort = 4320;
  };
  nodeExporter = {
    scrapeInterval = "15s";
    mimirEndpoint = null;
  };
  journald = null;
  extraConfig = "";
}
