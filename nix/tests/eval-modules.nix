# lib.evalModules harness for nix/modules/*.nix. Needs only nixpkgs' lib (no
# nixpkgs, no NixOS): the few NixOS options the modules touch are stubbed below.
#
#   nix-instantiate --eval --strict --json nix/tests/eval-modules.nix \
#     --arg nixpkgsLib /path/to/nixpkgs/lib
#
# Returns { results = [ { name; ok; detail; } ]; unit = "<beyla-rs unit file>";
# settingsUnit = "<unit of golden/beyla-rs/settings.nix>"; rendered = { <golden name> =
# "<configuration file>"; }; }. nix/tests/check.sh runs it when NIXPKGS_LIB is set and
# compares each rendered file with nix/tests/golden/<golden name>.yaml as YAML data.
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  inherit (lib) mkOption types;

  atom = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];

  # Stand-in for nixpkgs' `pkgs.formats.yaml { }`: the same value type (as in
  # pkgs/pkgs-lib/formats.nix); `generate` writes JSON, which is YAML with the same data,
  # with builtins.toFile (the path is computed, nothing is written under --eval) and
  # keeps the text for the golden comparison.
  yamlFormat = {
    type =
      let
        valueType =
          types.nullOr
            (types.oneOf [
              types.bool
              types.int
              types.float
              types.str
              types.path
              (types.attrsOf valueType)
              (types.listOf valueType)
            ])
          // {
            description = "YAML value";
          };
      in
      valueType;
    generate =
      name: value:
      let
        text = builtins.toJSON value;
      in
      {
        inherit name text;
        outPath = builtins.toFile name text;
      };
  };

  # Stand-ins for the NixOS options the modules read or write. services.alloy mirrors
  # the interface of nixpkgs' nixos/modules/services/monitoring/alloy.nix (the
  # modules extend it and never declare it themselves).
  stubs =
    { config, ... }:
    {
      options = {
        assertions = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        warnings = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        networking.hostName = mkOption {
          type = types.str;
          default = "nixos";
        };
        boot.kernel.sysctl = mkOption {
          type = types.attrsOf atom;
          default = { };
        };
        environment.etc = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
            }
          );
          default = { };
        };
        systemd.services = mkOption {
          type = types.attrsOf (
            types.submodule {
              options = {
                description = mkOption {
                  type = types.str;
                  default = "";
                };
                after = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                wants = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                wantedBy = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                environment = mkOption {
                  type = types.attrsOf types.str;
                  default = { };
                };
                reloadTriggers = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                serviceConfig = mkOption {
                  type = types.attrsOf (types.either atom (types.listOf atom));
                  default = { };
                };
              };
            }
          );
          default = { };
        };
        services.alloy = {
          enable = lib.mkEnableOption "Grafana Alloy (stub)";
          configPath = mkOption {
            type = types.path;
            default = "/etc/alloy";
          };
          extraFlags = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        };
        # The part of nixpkgs' nixos/modules/services/monitoring/grafana.nix the
        # beyla-rs module writes (provision.dashboards.settings, its providers).
        services.grafana = {
          enable = lib.mkEnableOption "Grafana (stub)";
          provision = {
            enable = lib.mkEnableOption "provisioning (stub)";
            dashboards.settings = mkOption {
              type = types.nullOr (
                types.submodule {
                  options.apiVersion = mkOption {
                    type = types.int;
                    default = 1;
                  };
                  options.providers = mkOption {
                    type = types.listOf (
                      types.submodule {
                        freeformType = yamlFormat.type;
                        options = {
                          name = mkOption {
                            type = types.str;
                            default = "default";
                          };
                          type = mkOption {
                            type = types.str;
                            default = "file";
                          };
                          options.path = mkOption { type = types.path; };
                        };
                      }
                    );
                    default = [ ];
                  };
                }
              );
              default = null;
            };
          };
        };
      };

      # What nixpkgs' module sets on the unit (the part the modules interact with).
      config.systemd.services.alloy = lib.mkIf config.services.alloy.enable {
        serviceConfig = {
          DynamicUser = true;
          SupplementaryGroups = [ "systemd-journal" ];
          StateDirectory = "alloy";
        };
      };
    };

  fakePackage = {
    type = "derivation";
    name = "beyla-rs-0.0.0";
    outPath = "/nix/store/00000000000000000000000000000000-beyla-rs-0.0.0";
  };

  eval =
    modules:
    (lib.evalModules {
      modules = [
        stubs
        ../modules/beyla-rs.nix
        ../modules/alloy.nix
        ../modules/pyroscope.nix
        {
          _module.args.pkgs = {
            callPackage = _: _: throw "the harness has no nixpkgs: set services.beyla-rs.package";
            formats.yaml = {}: yamlFormat;
          };
        }
      ]
      ++ modules;
    });

  failedAssertions = cfg: map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  check = name: ok: detail: { inherit name ok detail; };
  checkEq = name: expected: actual: check name (expected == actual) (builtins.toJSON { inherit expected actual; });

  golden = case: builtins.readFile (./golden + "/${case}.alloy");

  # ---- beyla-rs alone -------------------------------------------------------
  beylaOnly = eval [
    {
      services.beyla-rs = {
        enable = true;
        package = fakePackage;
        openPorts = [
          80
          443
          "8000-8999"
        ];
        environmentFile = "/run/secrets/beyla-rs.env";
      };
    }
  ];
  bc = beylaOnly.config;
  beylaUnit = bc.systemd.services.beyla-rs;
  expectedService = import ../lib/beyla-rs-service.nix {
    execStart = "${fakePackage.outPath}/bin/beyla-rs";
    inherit (bc.services.beyla-rs) configFile;
    environmentFile = "/run/secrets/beyla-rs.env";
  };

  # ---- beyla-rs + the Alloy module --------------------------------------------
  withAlloy = eval [
    {
      services.beyla-rs = {
        enable = true;
        package = fakePackage;
        openPorts = [ 8080 ];
        serviceName = "shop";
        tracePrinter = "json";
        environment.BEYLA_LOG_LEVEL = "debug";
      };
      services.observability.alloy = {
        enable = true;
        otlpPort = 4319;
      };
    }
  ];
  wc = withAlloy.config;

  alloyDefaults = eval [{ services.observability.alloy.enable = true; }];

  # ---- settings (the configuration file) ---------------------------------------------
  settingsCase = eval [
    ./golden/beyla-rs/settings.nix
    { services.beyla-rs.package = fakePackage; }
  ];
  sc = settingsCase.config;
  settingsUnit = import ../lib/systemd-unit.nix sc.systemd.services.beyla-rs;

  # A value set in settings wins over the option mapped onto it.
  overridden =
    (eval [
      {
        services.beyla-rs = {
          enable = true;
          package = fakePackage;
          openPorts = [ 80 ];
          serviceName = "web";
          tracePrinter = "json";
          settings = {
            open_port = "8080";
            trace_printer = "text";
            otel_traces_export.endpoint = "http://tempo.example:4318";
          };
        };
      }
    ]).config.services.beyla-rs.settings;

  # Process selection: the warning when nothing is selected, none otherwise.
  warningsWith =
    beyla:
    (eval [
      {
        services.beyla-rs = {
          enable = true;
          package = fakePackage;
        }
        // beyla;
      }
    ]).config.warnings;

  # ---- Grafana dashboards -------------------------------------------------------------
  dashboardsOf = modules: (eval modules).config.services.grafana.provision.dashboards.settings;
  grafanaOn = eval [{ services.grafana.enable = true; }];
  grafanaProviders = grafanaOn.config.services.grafana.provision.dashboards.settings.providers;
  grafanaProvider = builtins.head grafanaProviders;
  # dashboards/ is written alongside; the default path copies it (its *.json) to the store.
  dashboardsPresent =
    builtins.pathExists ../../dashboards
    && lib.all (f: (builtins.readDir ../../dashboards) ? ${f}) [
      "beyla-rs-red.json"
      "beyla-rs-daemon.json"
    ];

  thinkpad = eval [
    {
      networking.hostName = "thinkpad";
      services.observability.alloy = {
        enable = true;
        k8sEndpoint = "http://otel-collector.tail0000.ts.net:4318";
        mimirEndpoint = "http://mimir.tail0000.ts.net:9009/api/v1/push";
        lokiEndpoint = "http://loki.tail0000.ts.net:3100/loki/api/v1/push";
        journaldUnits = [
          "beyla-rs"
          "alloy"
          "user@1000.service"
          "nixos-upgrade.timer"
        ];
      };
    }
  ];

  # ---- invalid values -----------------------------------------------------------
  invalid = eval [
    {
      services.beyla-rs = {
        enable = true;
        package = fakePackage;
        openPorts = [ "9000-8000" ];
        otlpEndpoint = "localhost 4318";
        settings.otel_metrics_export.endpoint = "mimir:4318";
      };
      services.observability.alloy = {
        enable = true;
        k8sEndpoint = "otel-collector:4318";
        mimirEndpoint = "ftp://mimir.example";
        lokiEndpoint = "https://loki.example.com/loki/api/v1/push";
      };
      services.observability.pyroscope = {
        enable = true;
        serverAddress = "pyroscope:4040";
        applications.nothing = { };
        applications.sdkapp.sdk = true;
      };
    }
  ];
  invalidMessages = failedAssertions invalid.config;
  hasMessage = needle: lib.any (lib.hasInfix needle) invalidMessages;

  # ---- Pyroscope ----------------------------------------------------------------
  pyroscope = eval [
    {
      networking.hostName = "hetzner";
      services.observability.pyroscope = {
        enable = true;
        serverAddress = "http://pyroscope.tail0000.ts.net:4040";
        applications = {
          api = {
            matchService = "api";
            labels = {
              env = "prod";
              team = "web";
            };
          };
          postgres = {
            matchExe = ".*/bin/postgres";
            matchService = "postgresql.service";
          };
          worker = {
            matchExe = ".*/bin/worker";
            labels.cost = "$5";
          };
          python-app = {
            matchService = "python-app.service";
            sdk = true;
          };
        };
      };
    }
  ];
  pc = pyroscope.config;

  sdkOnly = eval [
    {
      services.observability.alloy.enable = true;
      services.observability.pyroscope = {
        enable = true;
        serverAddress = "http://pyroscope.example:4040";
        applications.python-app = {
          matchService = "python-app";
          sdk = true;
        };
      };
    }
  ];

  # ---- the example host configurations ----------------------------------------------
  examples = lib.genAttrs [ "thinkpad" "hetzner" ] (
    host:
    (eval [
      (../examples + "/${host}.nix")
      { services.beyla-rs.package = fakePackage; }
    ]).config
  );
  exampleChecks = lib.concatLists (
    lib.mapAttrsToList
      (host: c: [
        (checkEq "example ${host}: assertions pass" [ ] (failedAssertions c))
        (checkEq "example ${host}: no warnings" [ ] c.warnings)
        (check "example ${host}: Alloy config and beyla-rs unit render"
          (
            builtins.isString c.environment.etc."alloy/config.alloy".text
            && lib.hasInfix "[Service]" (import ../lib/systemd-unit.nix c.systemd.services.beyla-rs)
          ) "")
      ])
      examples
  );

  # ---- the option surface (names, defaults, descriptions) --------------------------
  opts = alloyDefaults.options;
  expectedDefaults = {
    "services.beyla-rs" = {
      enable = false;
      openPorts = [ ];
      serviceName = null;
      otlpEndpoint = "http://127.0.0.1:4318";
      tracePrinter = "disabled";
      settings = { };
      environment = { };
      environmentFile = null;
    };
    "services.beyla-rs.grafanaDashboards" = {
      enable = false;
      folder = "beyla-rs";
    };
    "services.observability.alloy" = {
      enable = false;
      otlpPort = 4318;
      k8sEndpoint = null;
      bufferSize = 104857600;
      localForwardPort = 4320;
      enableNodeExporter = true;
      scrapeInterval = "15s";
      mimirEndpoint = null;
      enableJournald = true;
      journaldUnits = [ ];
      lokiEndpoint = null;
      extraConfig = "";
    };
    "services.observability.pyroscope" = {
      enable = false;
      applications = { };
    };
  };
  optionAt = path: lib.attrByPath (lib.splitString "." path) null opts;
  surfaceChecks = lib.concatLists (
    lib.mapAttrsToList
      (
        prefix: defaults:
          lib.mapAttrsToList
            (
              name: expected:
                let
                  o = optionAt "${prefix}.${name}";
                in
                check "option ${prefix}.${name}: default and description"
                  (o != null && (o.default or "<none>") == expected && (o.description or null) != null)
                  (builtins.toJSON {
                    inherit expected;
                    actual = if o == null then "<missing>" else o.default or "<none>";
                  })
            )
            defaults
      )
      expectedDefaults
  );
  appOptions = opts.services.observability.pyroscope.applications.type.getSubOptions [ ];
  beylaOptions = opts.services.beyla-rs;

  typeError =
    beyla:
    builtins.tryEval
      (builtins.toJSON
        (eval [
          {
            services.beyla-rs = {
              enable = true;
              package = fakePackage;
            }
            // beyla;
          }
        ]).config.services.beyla-rs.configFile.text);
  goodTypes = typeError {
    openPorts = [
      80
      "8000-8999"
    ];
    tracePrinter = "json";
  };
  badPortType = typeError { openPorts = [ "http" ]; };
  badPrinter = typeError { tracePrinter = "yaml"; };
  badLogLevel = typeError { settings.log_level = "verbose"; };
  goodSettings = typeError {
    settings = {
      log_level = "warn";
      trace_printer = "json_indent";
      discovery.instrument = [{ exe_path = "*/nginx"; }];
      ebpf.capture_backend = "kprobe";
    };
  };
in
{
  results =
    surfaceChecks
    ++ exampleChecks
    ++ [
      (check "option services.beyla-rs.package exists" (beylaOptions ? package) "")
      (check "option services.observability.pyroscope.serverAddress exists"
        (
          opts.services.observability.pyroscope ? serverAddress
        ) "")
      (check "pyroscope application options name/matchExe/matchService/labels"
        (lib.all (n: appOptions ? ${n}) [
          "name"
          "matchExe"
          "matchService"
          "labels"
        ]) "")
      (check "a valid openPorts/tracePrinter evaluates" goodTypes.success "")
      (check "openPorts type rejects a non-port string" (!badPortType.success) "")
      (check "tracePrinter type rejects unknown printers" (!badPrinter.success) "")
      (check "settings.log_level type rejects unknown levels" (!badLogLevel.success) "")
      (check "settings: typed and free-form keys evaluate" goodSettings.success "")

      # beyla-rs alone
      (checkEq "beyla-rs: openPorts becomes settings.open_port" "80,443,8000-8999" bc.services.beyla-rs.settings.open_port)
      (checkEq "beyla-rs: default OTLP endpoint (traces and metrics) is the local Alloy receiver"
        {
          traces = "http://127.0.0.1:4318";
          metrics = "http://127.0.0.1:4318";
        }
        {
          traces = bc.services.beyla-rs.settings.otel_traces_export.endpoint;
          metrics = bc.services.beyla-rs.settings.otel_metrics_export.endpoint;
        })
      (check "beyla-rs: no global service name by default" (!(bc.services.beyla-rs.settings ? service_name)) "")
      (checkEq "beyla-rs: typed settings defaults"
        {
          log_level = "info";
          trace_printer = "disabled";
        }
        (lib.getAttrs [ "log_level" "trace_printer" ] bc.services.beyla-rs.settings))
      (checkEq "beyla-rs: the options set no environment (one source: the file)" { } beylaUnit.environment)
      (checkEq "beyla-rs: ExecStart passes the rendered file with --config" "${fakePackage.outPath}/bin/beyla-rs --config ${bc.services.beyla-rs.configFile}"
        beylaUnit.serviceConfig.ExecStart)
      (checkEq "beyla-rs: ambient capabilities are exactly the four" [
        "CAP_BPF"
        "CAP_PERFMON"
        "CAP_SYS_PTRACE"
        "CAP_DAC_READ_SEARCH"
      ]
        beylaUnit.serviceConfig.AmbientCapabilities)
      (checkEq "beyla-rs: bounding set equals ambient set" beylaUnit.serviceConfig.AmbientCapabilities beylaUnit.serviceConfig.CapabilityBoundingSet)
      (checkEq "beyla-rs: unit equals nix/lib/beyla-rs-service.nix (same as packaging/)" expectedService.serviceConfig beylaUnit.serviceConfig)
      (checkEq "beyla-rs: non-root, hardened"
        {
          DynamicUser = true;
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          Restart = "on-failure";
        }
        (lib.getAttrs [ "DynamicUser" "NoNewPrivileges" "ProtectSystem" "Restart" ] beylaUnit.serviceConfig))
      (checkEq "beyla-rs: perf_event_paranoid = 1" 1 bc.boot.kernel.sysctl."kernel.perf_event_paranoid")
      (checkEq "beyla-rs: no Alloy ordering without Alloy" [ "network.target" ] beylaUnit.after)
      (checkEq "beyla-rs: assertions pass" [ ] (failedAssertions bc))
      (checkEq "beyla-rs: no warnings" [ ] bc.warnings)

      # with Alloy
      (checkEq "beyla-rs + alloy: after/wants alloy.service"
        {
          after = [
            "network.target"
            "alloy.service"
          ];
          wants = [ "alloy.service" ];
        }
        { inherit (wc.systemd.services.beyla-rs) after wants; })
      (checkEq "beyla-rs + alloy: endpoint follows otlpPort" "http://127.0.0.1:4319" wc.services.beyla-rs.settings.otel_traces_export.endpoint)
      (checkEq "beyla-rs + alloy: service name and printer in settings"
        {
          service_name = "shop";
          trace_printer = "json";
          open_port = "8080";
        }
        (lib.getAttrs [ "service_name" "trace_printer" "open_port" ] wc.services.beyla-rs.settings))
      (checkEq "beyla-rs + alloy: environment holds only the overrides" { BEYLA_LOG_LEVEL = "debug"; } wc.systemd.services.beyla-rs.environment)

      # settings
      (checkEq "settings: golden/beyla-rs/settings.nix renders golden/beyla-rs/settings.service" (builtins.readFile ./golden/beyla-rs/settings.service) settingsUnit)
      (checkEq "settings: mapped defaults merge into nested settings"
        {
          endpoint = "http://127.0.0.1:4318";
          sampler = {
            name = "parentbased_traceidratio";
            arg = "0.1";
          };
        }
        sc.services.beyla-rs.settings.otel_traces_export)
      (checkEq "settings: discovery.instrument selects, no warning" [ ] sc.warnings)
      (checkEq "settings: assertions pass" [ ] (failedAssertions sc))
      (checkEq "settings: a value set in settings wins over the mapped option"
        {
          open_port = "8080";
          trace_printer = "text";
          service_name = "web";
          traces = "http://tempo.example:4318";
          metrics = "http://127.0.0.1:4318";
        }
        {
          inherit (overridden) open_port trace_printer service_name;
          traces = overridden.otel_traces_export.endpoint;
          metrics = overridden.otel_metrics_export.endpoint;
        })
      (check "settings: warning when no process is selected"
        (lib.any (lib.hasInfix "no process selector is set") (warningsWith { })) "")
      (checkEq "settings: auto_target_exe, executable_name, BEYLA_TARGET_PID each select"
        [
          [ ]
          [ ]
          [ ]
        ]
        [
          (warningsWith { settings.auto_target_exe = "*/nginx"; })
          (warningsWith { settings.executable_name = "nginx"; })
          (warningsWith { environment.BEYLA_TARGET_PID = "1"; })
        ])

      # Grafana dashboards
      (check "dashboards: no provider without Grafana" (alloyDefaults.config.services.grafana.provision.dashboards.settings == null) "")
      (checkEq "dashboards: Grafana on -> one beyla-rs file provider"
        {
          count = 1;
          name = "beyla-rs";
          type = "file";
          folder = "beyla-rs";
          provision = true;
        }
        {
          count = builtins.length grafanaProviders;
          inherit (grafanaProvider) name type folder;
          provision = grafanaOn.config.services.grafana.provision.enable;
        })
      (check "dashboards: repository has dashboards/beyla-rs-red.json and beyla-rs-daemon.json" dashboardsPresent "")
      (check "dashboards: the provider serves the dashboards directory from the store"
        (dashboardsPresent && lib.hasSuffix "-beyla-rs-dashboards" (toString grafanaProvider.options.path))
        (if dashboardsPresent then toString grafanaProvider.options.path else "dashboards/ missing"))
      (check "dashboards: grafanaDashboards.enable = false -> no provider"
        (
          dashboardsOf [
            {
              services.grafana.enable = true;
              services.beyla-rs.grafanaDashboards.enable = false;
            }
          ] == null
        ) "")
      (checkEq "dashboards: grafanaDashboards.path and folder"
        [
          {
            name = "beyla-rs";
            type = "file";
            folder = "Observability";
            options.path = "/srv/grafana/beyla-rs";
          }
        ]
        (dashboardsOf [
          {
            services.grafana.enable = true;
            services.beyla-rs.grafanaDashboards = {
              path = "/srv/grafana/beyla-rs";
              folder = "Observability";
            };
          }
        ]).providers)
      (check "alloy module enables nixpkgs' services.alloy" wc.services.alloy.enable "")
      (check "alloy: otlpPort reaches the receiver" (lib.hasInfix "endpoint = \"127.0.0.1:4319\"" wc.environment.etc."alloy/config.alloy".text) "")
      (checkEq "alloy: all defaults render golden/defaults.alloy" (golden "defaults") alloyDefaults.config.environment.etc."alloy/config.alloy".text)
      (checkEq "alloy: thinkpad options render golden/thinkpad.alloy" (golden "thinkpad") thinkpad.config.environment.etc."alloy/config.alloy".text)
      (checkEq "alloy: nixpkgs' unit keeps DynamicUser without Pyroscope" true alloyDefaults.config.systemd.services.alloy.serviceConfig.DynamicUser)

      # invalid values
      (check "assertion: beyla-rs otlpEndpoint URL" (hasMessage "services.beyla-rs.otlpEndpoint must be an http:// or https:// URL") (builtins.toJSON invalidMessages))
      (check "assertion: openPorts range order" (hasMessage "services.beyla-rs.openPorts: a range must be FROM-TO") "")
      (check "assertion: endpoint set in settings" (hasMessage "services.beyla-rs.settings.otel_metrics_export.endpoint must be") "")
      (check "assertion: k8sEndpoint URL" (hasMessage "services.observability.alloy.k8sEndpoint must be") "")
      (check "assertion: mimirEndpoint URL" (hasMessage "services.observability.alloy.mimirEndpoint must be") "")
      (check "assertion: valid lokiEndpoint accepted" (!hasMessage "lokiEndpoint") "")
      (check "assertion: pyroscope serverAddress URL" (hasMessage "services.observability.pyroscope.serverAddress must be") "")
      (check "assertion: application without a matcher" (hasMessage "applications.nothing: set matchExe and/or matchService") "")
      (check "assertion: sdk application without matchService" (hasMessage "applications.sdkapp: sdk = true needs matchService") "")
      (checkEq "assertions: exactly the 8 expected failures" 8 (builtins.length invalidMessages))

      # Pyroscope
      (checkEq "pyroscope: eBPF applications render golden/pyroscope.alloy" (golden "pyroscope") pc.environment.etc."alloy/pyroscope.alloy".text)
      (check "pyroscope: enables services.alloy" pc.services.alloy.enable "")
      (checkEq "pyroscope: Alloy runs as root with a bounded capability set"
        {
          DynamicUser = false;
          User = "root";
          hasBpf = true;
        }
        {
          inherit (pc.systemd.services.alloy.serviceConfig) DynamicUser User;
          hasBpf = lib.elem "CAP_BPF" pc.systemd.services.alloy.serviceConfig.CapabilityBoundingSet;
        })
      (checkEq "pyroscope: SDK app gets PYROSCOPE_SERVER_ADDRESS" "http://pyroscope.tail0000.ts.net:4040" pc.systemd.services.python-app.environment.PYROSCOPE_SERVER_ADDRESS)
      (checkEq "pyroscope: reload trigger for pyroscope.alloy" 1 (builtins.length pc.systemd.services.alloy.reloadTriggers))
      (checkEq "pyroscope: SDK-only leaves Alloy unprivileged" true sdkOnly.config.systemd.services.alloy.serviceConfig.DynamicUser)
      (check "pyroscope: SDK-only writes no pyroscope.alloy" (!(sdkOnly.config.environment.etc ? "alloy/pyroscope.alloy")) "")
      (check "example hetzner: profiles api, nginx, postgres; ingest uses the SDK"
        (
          lib.all (a: lib.hasInfix "application \"${a}\"" examples.hetzner.environment.etc."alloy/pyroscope.alloy".text) [
            "api"
            "nginx"
            "postgres"
          ]
          && examples.hetzner.systemd.services.ingest.environment.PYROSCOPE_SERVER_ADDRESS == "http://pyroscope.tail0000.ts.net:4040"
        ) "")
    ];

  # The unit NixOS would run for the module (ExecStart points into a fake store path).
  unit = import ../lib/systemd-unit.nix bc.systemd.services.beyla-rs;
  inherit settingsUnit;

  # Configuration files to compare with nix/tests/golden/<name>.yaml as YAML data.
  rendered."beyla-rs/settings" = sc.services.beyla-rs.configFile.text;
}
