# Renders a service in the shape of nix/lib/beyla-rs-service.nix as a unit file, the
# way NixOS does (lists become repeated lines, booleans true/false). Used by the
# checks; NixOS itself renders systemd.services. builtins only (no nixpkgs).
svc:
let
  inherit (builtins) attrNames concatLists concatStringsSep isBool isList replaceStrings;

  value = v: if isBool v then (if v then "true" else "false") else toString v;
  lines = k: v: map (x: "${k}=${value x}") (if isList v then v else [ v ]);

  # Environment="KEY=value": quote, escape \ and ", and double % (unit specifiers).
  envLine =
    k:
    "Environment=\""
    + replaceStrings [ "\\" "\"" "%" ] [ "\\\\" "\\\"" "%%" ] "${k}=${svc.environment.${k}}"
    + "\"";

  unitSection =
    [ "[Unit]" "Description=${svc.description}" ]
    ++ (if svc.after == [ ] then [ ] else [ "After=${concatStringsSep " " svc.after}" ])
    ++ (if svc.wants == [ ] then [ ] else [ "Wants=${concatStringsSep " " svc.wants}" ]);

  serviceSection =
    [ "[Service]" ]
    ++ map envLine (attrNames svc.environment)
    ++ concatLists (map (k: lines k svc.serviceConfig.${k}) (attrNames svc.serviceConfig));

  installSection = [ "[Install]" "WantedBy=${concatStringsSep " " svc.wantedBy}" ];
in
concatStringsSep "\n" (unitSection ++ [ "" ] ++ serviceSection ++ [ "" ] ++ installSection) + "\n"
