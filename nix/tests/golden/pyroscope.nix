# What nix/modules/pyroscope.nix passes for pyroscope.alloy (SDK applications are left
# out by the module): by executable, by systemd service, by both, with labels.
{
  hostname = "hetzner";
  pyroscope = {
    serverAddress = "http://pyroscope.tail0000.ts.net:4040";
    applications = [
      {
        name = "api";
        matchExe = null;
        matchService = "api";
        labels = {
          env = "prod";
          team = "web";
        };
      }
      {
        name = "postgres";
        matchExe = ".*/bin/postgres";
        matchService = "postgresql.service";
        labels = { };
      }
      {
        name = "worker";
        matchExe = ".*/bin/worker";
        matchService = null;
        labels = {
          cost = "$5";
        };
      }
    ];
  };
}
