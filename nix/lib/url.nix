# URL validation shared by the modules' assertions. builtins only (no nixpkgs).
let
  # scheme://host[:port][/path]; host is a DNS name, an IPv4 address or [IPv6].
  httpUrl = "https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[[][0-9A-Fa-f:.]+[]])(:[0-9]{1,5})?(/[^[:space:]]*)?";
in
{
  isHttpUrl = s: builtins.isString s && builtins.match httpUrl s != null;

  # One NixOS assertion per endpoint option that is set.
  assertHttpUrl = name: value: {
    assertion = value == null || (builtins.isString value && builtins.match httpUrl value != null);
    message = "${name} must be an http:// or https:// URL such as http://collector.example:4318 (scheme, host, optional port and path, no spaces); got: ${builtins.toJSON value}";
  };
}
