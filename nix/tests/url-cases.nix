# Cases for nix/lib/url.nix; evaluates to the list of cases it gets wrong (empty = ok).
let
  inherit (import ../lib/url.nix) isHttpUrl;
  valid = [
    "http://127.0.0.1:4318"
    "http://otel-collector.tail0000.ts.net:4318"
    "https://otlp.example.com/otlp"
    "http://mimir:9009/api/v1/push"
    "http://[::1]:4318/v1"
  ];
  invalid = [
    "otel-collector:4318"
    "127.0.0.1:4318"
    "localhost 4318"
    "ftp://mimir.example"
    "http://"
    "http://a b"
    "https://-bad-.example"
    ""
  ];
in
builtins.filter (u: !isHttpUrl u) valid ++ builtins.filter isHttpUrl invalid
