# Renders the Grafana Alloy configuration used by nix/modules/alloy.nix and
# nix/modules/pyroscope.nix.
#
# A pure function that uses builtins only (no nixpkgs), so nix/tests/check.sh can
# evaluate it with a plain `nix-instantiate --eval --strict` and compare the result
# with the golden files in nix/tests/golden/.
#
# Every section is optional (null = not rendered):
#   hostname      string, or null to let Alloy use `constants.hostname`
#   otlp          { listenAddress, port, grpcPort (null = no gRPC), memoryLimit,
#                   k8sEndpoint (null = no remote export), bufferSize (bytes),
#                   localForwardPort (null = no local forward) }
#   nodeExporter  { scrapeInterval, mimirEndpoint (null = exporter only) }
#   journald      { units (list; [] = every unit), lokiEndpoint }
#   pyroscope     { serverAddress, applications (list of { name, matchExe,
#                   matchService, labels }) }
#   extraConfig   string appended verbatim
{ hostname ? null
, otlp ? null
, nodeExporter ? null
, journald ? null
, pyroscope ? null
, extraConfig ? ""
,
}:
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    elemAt
    filter
    foldl'
    genList
    length
    map
    match
    replaceStrings
    stringLength
    substring
    ;

  # ---- Alloy syntax helpers ------------------------------------------------

  # Alloy string literal (Go-style escapes).
  str =
    s:
    "\""
    + replaceStrings [ "\\" "\"" "\n" "\t" ] [ "\\\\" "\\\"" "\\n" "\\t" ] s
    + "\"";

  int = toString;

  list = items: "[" + concatStringsSep ", " items + "]";

  # Escapes RE2 metacharacters so a literal becomes a regex matching only itself.
  escapeRegex = replaceStrings
    [ "\\" "." "+" "*" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ]
    [ "\\\\" "\\." "\\+" "\\*" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" ];

  # Relabel replacement strings expand `$1`/`${name}`: keep literal dollars.
  escapeReplacement = replaceStrings [ "$" ] [ "$$" ];

  hostExpr = if hostname == null then "constants.hostname" else str hostname;

  # ---- a tiny block renderer ----------------------------------------------

  attr = k: v: {
    type = "attr";
    inherit k v;
  };
  block = name: label: items: {
    type = "block";
    inherit name label items;
  };
  comment = text: {
    type = "comment";
    inherit text;
  };

  last = l: elemAt l (length l - 1);
  init = l: genList (elemAt l) (length l - 1);
  pad = n: s: if stringLength s >= n then s else pad n (s + " ");
  maxLen = foldl' (m: s: if stringLength s > m then stringLength s else m) 0;

  # Groups consecutive attributes so their `=` can be aligned like `alloy fmt` does,
  # and keeps comments glued to the item that follows them.
  runsOf = foldl'
    (
      acc: it:
        if it.type == "attr" && acc != [ ] && (last acc).type == "attrs" then
          init acc
          ++ [
            {
              type = "attrs";
              attrs = (last acc).attrs ++ [ it ];
            }
          ]
        else
          acc
          ++ [
            (
              if it.type == "attr" then
                {
                  type = "attrs";
                  attrs = [ it ];
                }
              else
                it
            )
          ]
    ) [ ];

  header = b: b.name + (if b.label == null then "" else " " + str b.label);

  renderRun =
    ind: r:
    if r.type == "attrs" then
      let
        w = maxLen (map (a: a.k) r.attrs);
      in
      map (a: ind + pad w a.k + " = " + a.v) r.attrs
    else if r.type == "comment" then
      [ (ind + "// " + r.text) ]
    else if r.items == [ ] then
      [ (ind + header r + " { }") ]
    else
      [ (ind + header r + " {") ] ++ renderItems (ind + "  ") r.items ++ [ (ind + "}") ];

  # A blank line separates runs, except right after a comment.
  renderItems =
    ind: items:
    let
      runs = runsOf items;
    in
    concatLists (
      genList
        (
          i:
          let
            r = elemAt runs i;
          in
          (if i > 0 && (elemAt runs (i - 1)).type != "comment" then [ "" ] else [ ]) ++ renderRun ind r
        )
        (length runs)
    );

  # ---- OTLP traces / metrics / logs ----------------------------------------

  otlpComponents =
    let
      o = otlp;
      exporters =
        (if o.k8sEndpoint != null then [ "otelcol.exporter.otlphttp.k8s.input" ] else [ ])
        ++ (if o.localForwardPort != null then [ "otelcol.exporter.otlphttp.local.input" ] else [ ]);
      outputTo = targets: [
        (block "output" null [
          (attr "metrics" (list targets))
          (attr "logs" (list targets))
          (attr "traces" (list targets))
        ])
      ];
    in
    [
      (comment "OTLP in: beyla-rs and SDK-instrumented applications send here.")
      (block "otelcol.receiver.otlp" "default" (
        [
          (block "http" null [ (attr "endpoint" (str "${o.listenAddress}:${int o.port}")) ])
        ]
        ++ (
          if o.grpcPort == null then
            [ ]
          else
            [ (block "grpc" null [ (attr "endpoint" (str "${o.listenAddress}:${int o.grpcPort}")) ]) ]
        )
        ++ outputTo [ "otelcol.processor.memory_limiter.default.input" ]
      ))
      (comment "Refuse data (the sender retries) before Alloy runs out of memory.")
      (block "otelcol.processor.memory_limiter" "default" (
        [
          (attr "check_interval" (str "1s"))
          (attr "limit" (str o.memoryLimit))
        ]
        ++ outputTo [ "otelcol.processor.batch.default.input" ]
      ))
      (comment "One batch output feeds every exporter: each has its own queue, so a dead remote never blocks the local forward.")
      (block "otelcol.processor.batch" "default" (
        [
          (attr "send_batch_size" (int 1000))
          (attr "timeout" (str "10s"))
        ]
        ++ outputTo exporters
      ))
    ]
    ++ (
      if o.k8sEndpoint == null then
        [ ]
      else
        [
          (comment "Remote export, buffered in memory up to ${int o.bufferSize} bytes while the remote is unreachable.")
          (block "otelcol.exporter.otlphttp" "k8s" [
            (block "client" null [ (attr "endpoint" (str o.k8sEndpoint)) ])
            (block "sending_queue" null [
              (attr "enabled" "true")
              (attr "sizer" (str "bytes"))
              (attr "queue_size" (int o.bufferSize))
              (attr "block_on_overflow" "false")
            ])
            (block "retry_on_failure" null [
              (attr "enabled" "true")
              (attr "initial_interval" (str "5s"))
              (attr "max_interval" (str "30s"))
              (attr "max_elapsed_time" (str "1h"))
            ])
          ])
        ]
    )
    ++ (
      if o.localForwardPort == null then
        [ ]
      else
        [
          (comment "Local forward (dual export) to a consumer on this host.")
          (block "otelcol.exporter.otlphttp" "local" [
            (block "client" null [ (attr "endpoint" (str "http://127.0.0.1:${int o.localForwardPort}")) ])
            (block "sending_queue" null [
              (attr "enabled" "true")
              (attr "queue_size" (int 1000))
              (attr "block_on_overflow" "false")
            ])
            (block "retry_on_failure" null [
              (attr "enabled" "true")
              (attr "initial_interval" (str "1s"))
              (attr "max_interval" (str "5s"))
              (attr "max_elapsed_time" (str "1m"))
            ])
          ])
        ]
    );

  # ---- host metrics --------------------------------------------------------

  nodeComponents =
    let
      n = nodeExporter;
    in
    [
      (comment "Host metrics (node_exporter built into Alloy).")
      (block "prometheus.exporter.unix" "default" [ ])
    ]
    ++ (
      if n.mimirEndpoint == null then
        [ ]
      else
        [
          (block "prometheus.scrape" "node" [
            (attr "targets" "prometheus.exporter.unix.default.targets")
            (attr "forward_to" (list [ "prometheus.remote_write.mimir.receiver" ]))
            (attr "scrape_interval" (str n.scrapeInterval))
          ])
          (comment "The WAL keeps samples through a remote outage of up to max_keepalive_time.")
          (block "prometheus.remote_write" "mimir" [
            (attr "external_labels" "{ host = ${hostExpr} }")
            (block "endpoint" null [ (attr "url" (str n.mimirEndpoint)) ])
            (block "wal" null [
              (attr "truncate_frequency" (str "2h"))
              (attr "min_keepalive_time" (str "5m"))
              (attr "max_keepalive_time" (str "8h"))
            ])
          ])
        ]
    );

  # ---- journald logs -------------------------------------------------------

  # "nginx" means "nginx.service"; names with a suffix are used as given.
  unitName = u: if match ".*\\.[a-z]+" u != null then u else u + ".service";

  journalComponents =
    let
      j = journald;
      units = map unitName j.units;
    in
    [
      (comment "loki.source.journal drops __journal_* labels before forward_to, so the")
      (comment "rules of loki.relabel.journal run inside the source (relabel_rules).")
      (block "loki.relabel" "journal" (
        [ (attr "forward_to" (list [ ])) ]
        ++ (
          if units == [ ] then
            [ ]
          else
            [
              (block "rule" null [
                (attr "source_labels" (list [ (str "__journal__systemd_unit") ]))
                (attr "regex" (str ("(" + concatStringsSep "|" (map escapeRegex units) + ")")))
                (attr "action" (str "keep"))
              ])
            ]
        )
        ++ [
          (block "rule" null [
            (attr "source_labels" (list [ (str "__journal__systemd_unit") ]))
            (attr "target_label" (str "unit"))
          ])
          (block "rule" null [
            (attr "target_label" (str "host"))
            (attr "replacement" hostExpr)
          ])
        ]
      ))
      (block "loki.source.journal" "default" [
        (attr "forward_to" (list [ "loki.write.default.receiver" ]))
        (attr "relabel_rules" "loki.relabel.journal.rules")
        (attr "max_age" (str "12h"))
      ])
      (block "loki.write" "default" [ (block "endpoint" null [ (attr "url" (str j.lokiEndpoint)) ]) ])
    ];

  # ---- continuous profiling ------------------------------------------------

  serviceRegex =
    s:
    let
      unit = if match ".*\\.service" s != null then s else s + ".service";
    in
    ".*/" + escapeRegex unit + "(?:[/|].*)?";

  # Tags a matching process with the application's name in `__tmp_app`. With both
  # matchExe and matchService set, a process must match both.
  tagRule =
    a:
    let
      sources =
        (if a.matchExe != null then [ "__meta_process_exe" ] else [ ])
        ++ (if a.matchService != null then [ "__meta_process_cgroup_path" ] else [ ]);
      regexes =
        (if a.matchExe != null then [ a.matchExe ] else [ ])
        ++ (if a.matchService != null then [ (serviceRegex a.matchService) ] else [ ]);
    in
    [
      (comment "application ${str a.name}")
      (block "rule" null [
        (attr "source_labels" (list (map str sources)))
        (attr "regex" (str (concatStringsSep ";" regexes)))
        (attr "target_label" (str "__tmp_app"))
        (attr "replacement" (str (escapeReplacement a.name)))
      ])
    ];

  labelRules =
    a:
    map
      (
        k:
        block "rule" null [
          (attr "source_labels" (list [ (str "__tmp_app") ]))
          (attr "regex" (str (escapeRegex a.name)))
          (attr "target_label" (str k))
          (attr "replacement" (str (escapeReplacement a.labels.${k})))
        ]
      )
      (attrNames a.labels);

  pyroscopeComponents =
    let
      p = pyroscope;
    in
    if p.applications == [ ] then
      [ ]
    else
      [
        (comment "Continuous profiling: pyroscope.ebpf needs Alloy to run as root in the host PID namespace.")
        (block "discovery.process" "pyroscope" [
          (attr "refresh_interval" (str "60s"))
          (block "discover_config" null [ (attr "cgroup_path" "true") ])
        ])
        (block "discovery.relabel" "pyroscope" (
          [ (attr "targets" "discovery.process.pyroscope.targets") ]
          ++ concatLists (map tagRule p.applications)
          ++ concatLists (map labelRules p.applications)
          ++ [
            (comment "only processes that matched an application")
            (block "rule" null [
              (attr "source_labels" (list [ (str "__tmp_app") ]))
              (attr "regex" (str ".+"))
              (attr "action" (str "keep"))
            ])
            (block "rule" null [
              (attr "source_labels" (list [ (str "__tmp_app") ]))
              (attr "target_label" (str "service_name"))
            ])
          ]
        ))
        (block "pyroscope.ebpf" "default" [
          (attr "targets" "discovery.relabel.pyroscope.output")
          (attr "forward_to" (list [ "pyroscope.write.default.receiver" ]))
        ])
        (block "pyroscope.write" "default" [
          (attr "external_labels" "{ host = ${hostExpr} }")
          (block "endpoint" null [ (attr "url" (str p.serverAddress)) ])
        ])
      ];

  sections = filter (s: s != [ ]) [
    (if otlp == null then [ ] else otlpComponents)
    (if nodeExporter == null then [ ] else nodeComponents)
    (if journald == null then [ ] else journalComponents)
    (if pyroscope == null then [ ] else pyroscopeComponents)
  ];

  body = concatStringsSep "\n" (
    [ "// Generated by beyla-rs nix/lib/alloy-config.nix: set NixOS options instead of editing." ]
    ++ map (s: "\n" + concatStringsSep "\n" (renderItems "" s)) sections
  );
in
body
+ "\n"
  + (
  if extraConfig == "" then
    ""
  else
    "\n" + extraConfig + (if substring (stringLength extraConfig - 1) 1 extraConfig == "\n" then "" else "\n")
)
