# Receiver only: no exporter (both endpoints null), no host metrics, no logs.
{
  hostname = "box";
  otlp = {
    listenAddress = "127.0.0.1";
    port = 14318;
    grpcPort = null;
    memoryLimit = "256MiB";
    k8sEndpoint = null;
    bufferSize = 1048576;
    localForwardPort = null;
  };
}
