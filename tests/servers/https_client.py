#!/usr/bin/env python3
"""HTTPS client fixture (Python's `ssl`, i.e. the shared libssl) for the beyla-rs integration
tests (tests/tests/https.rs).

    https_client.py --base https://127.0.0.1:P --ca CA [--listen L] [--wait]
                    [--new GET:/a,POST:/b] [--keepalive GET:/c,...]

--new        one new connection per call (urllib.request, `Connection: close`)
--keepalive  all calls on one keep-alive connection (http.client.HTTPSConnection)
POST and PUT send the 12-byte body "twelve bytes". The server's certificate is verified
against CA (and its name against the host of --base).
--listen L   bind a listening socket on 127.0.0.1:L first, so that a daemon selecting port L
             instruments this process (its calls then give CLIENT spans)
--wait       wait for a line on stdin before the calls and, after printing the result, for
             stdin to close before exiting (the test decides when the process goes away)

Prints one JSON line: {"new": [[status, body_len], ...], "keepalive": [...],
"keepalive_connections": K} (K: connections the keep-alive calls opened, 1 when all shared one).
"""

import argparse
import http.client
import json
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

BODY = b"twelve bytes"


def calls(spec):
    out = []
    for item in filter(None, (spec or "").split(",")):
        method, sep, path = item.partition(":")
        if not sep:
            sys.exit(f"bad call {item!r} (want METHOD:PATH)")
        out.append((method, path))
    return out


def body_for(method):
    return BODY if method in ("POST", "PUT") else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--wait", action="store_true")
    ap.add_argument("--new", default="")
    ap.add_argument("--keepalive", default="")
    args = ap.parse_args()

    listener = None
    if args.listen:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.listen))
        listener.listen(1)
    if args.wait:
        sys.stdin.readline()

    ctx = ssl.create_default_context(cafile=args.ca)
    res = {"new": [], "keepalive": [], "keepalive_connections": 0}

    for method, path in calls(args.new):
        req = urllib.request.Request(args.base + path, data=body_for(method), method=method)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
                res["new"].append([r.status, len(r.read())])
        except urllib.error.HTTPError as e:
            res["new"].append([e.code, len(e.read())])
            e.close()

    u = urllib.parse.urlsplit(args.base)
    opened = []

    class CountingConnection(http.client.HTTPSConnection):
        def connect(self):
            opened.append(1)
            super().connect()

    conn = CountingConnection(u.hostname, u.port or 443, timeout=20, context=ctx)
    for method, path in calls(args.keepalive):
        body = body_for(method)
        headers = {"Content-Length": str(len(body))} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        res["keepalive"].append([r.status, len(r.read())])
    conn.close()
    res["keepalive_connections"] = len(opened)

    print(json.dumps(res), flush=True)
    if args.wait:
        sys.stdin.read()
    if listener:
        listener.close()


if __name__ == "__main__":
    main()
