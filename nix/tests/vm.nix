# NixOS VM test: Alloy + beyla-rs + nginx on one machine. A request to nginx must
# become a span that Alloy's OTLP receiver accepted, visible in Alloy's own metrics
# (otelcol_receiver_accepted_spans).
#
# Run on a NixOS/Nix host with KVM (and network, to fetch nixpkgs and the crates):
#   nix build .#checks.x86_64-linux.vm -L
# It cannot run on the Debian development machines (no KVM, no nixpkgs).
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "beyla-rs-alloy";

  nodes.machine = {
    imports = [ self.nixosModules.default ];

    virtualisation.memorySize = 2048;

    services.nginx = {
      enable = true;
      virtualHosts.localhost.locations."/".return = "200 'hello from nginx'";
    };

    services.observability.alloy = {
      enable = true;
      # No remote endpoints in the sandbox: the receiver and its metrics are enough.
      localForwardPort = null;
      enableJournald = false;
    };

    services.beyla-rs = {
      enable = true;
      openPorts = [ 80 ];
      tracePrinter = "text";
      environment.BEYLA_LOG_LEVEL = "debug";
    };

    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    machine.wait_for_unit("alloy.service")
    machine.wait_for_unit("nginx.service")
    machine.wait_for_unit("beyla-rs.service")
    machine.wait_for_open_port(80)
    machine.wait_for_open_port(4318)
    machine.wait_for_open_port(12345)

    # The daemon runs unprivileged with exactly its ambient capabilities.
    machine.succeed("systemctl show beyla-rs -p User -p DynamicUser | grep -q 'DynamicUser=yes'")
    machine.succeed("grep -Eq '^CapAmb:[[:space:]]+0*[1-9a-f]' /proc/$(systemctl show -p MainPID --value beyla-rs)/status")
    assert machine.succeed("sysctl -n kernel.perf_event_paranoid").strip() == "1"

    # Keep sending requests until one shows up as an accepted span in Alloy's metrics
    # (the batch processor flushes every 10 s).
    machine.wait_until_succeeds(
        "curl -sf http://127.0.0.1/ >/dev/null && "
        "curl -sf http://127.0.0.1:12345/metrics"
        " | grep -E '^otelcol_receiver_accepted_spans(_total)?[{ ].* [1-9][0-9.e+]*$'",
        timeout=180,
    )

    # SIGTERM: beyla-rs flushes and exits 0.
    machine.succeed("systemctl stop beyla-rs")
    machine.fail("systemctl is-failed beyla-rs")
  '';
}
