#!/usr/bin/env python3
"""Test HTTP/1.1 server (stdlib http.server) used by the beyla-rs integration tests.

Routes (same on every fixture server):
  /hello            200 "hello\\n"
  /status?respond=NNN  status NNN, body "status NNN\\n" (no body for 1xx/204/304); /status/NNN too
  /sleep?ms=MS      sleeps MS milliseconds, then 200 "slept\\n"; /sleep/MS too
  /echo             200, body = request body
  /proxy/<rest>     same-method request to $UPSTREAM_URL/<rest>?<query>, answers with the
                    upstream's status and body (502 when the upstream fails)
  anything else     404 "not found\\n"
Keep-alive (HTTP/1.1), request bodies by Content-Length or chunked, Expect: 100-continue.
Usage: http_server.py --port N [--tls CERT KEY]
  --tls CERT KEY    serve HTTPS (OpenSSL through the `ssl` module) with this certificate chain
                    and key; the handshake runs in the connection's thread, so a stalled or
                    aborted handshake never blocks the accept loop.
An https:// $UPSTREAM_URL is verified against the default trust store, which honours
$SSL_CERT_FILE (the tests point it at their test CA).
"""

import argparse
import http.client
import ssl
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NO_BODY = lambda code: 100 <= code < 200 or code in (204, 304)  # noqa: E731


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "beyla-test-python"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # The listening socket does not handshake on accept (see main): do it here.
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after the chunk
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, code, body=b"", ctype="text/plain"):
        self.send_response(code)
        if NO_BODY(code):
            self.end_headers()
            return
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def proxy(self, rest, body):
        upstream = self.server.upstream
        if not upstream:
            return self.reply(502, b"no UPSTREAM_URL\n")
        u = urllib.parse.urlsplit(upstream)
        target = (u.path.rstrip("/") + "/" + rest.lstrip("/")) or "/"
        query = urllib.parse.urlsplit(self.path).query
        if query:
            target += "?" + query
        try:
            if u.scheme == "https":
                conn = http.client.HTTPSConnection(
                    u.hostname, u.port or 443, timeout=10, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
            headers = {"Content-Length": str(len(body))} if body or self.command in ("POST", "PUT") else {}
            conn.request(self.command, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            return self.reply(resp.status, data)
        except OSError as e:
            return self.reply(502, ("upstream error: %s\n" % e).encode())

    def handle_any(self):
        body = self.read_body()
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = urllib.parse.parse_qs(split.query)
        if path == "/status" and "respond" in query:
            path = "/status/" + query["respond"][0]
        if path == "/sleep" and "ms" in query:
            path = "/sleep/" + query["ms"][0]
        if path == "/hello":
            return self.reply(200, b"hello\n")
        if path.startswith("/status/"):
            try:
                code = int(path[len("/status/"):])
            except ValueError:
                return self.reply(400, b"bad status\n")
            return self.reply(code, ("status %d\n" % code).encode())
        if path.startswith("/sleep/"):
            time.sleep(int(path[len("/sleep/"):]) / 1000.0)
            return self.reply(200, b"slept\n")
        if path == "/echo":
            return self.reply(200, body, "application/octet-stream")
        if path.startswith("/proxy/"):
            return self.proxy(path[len("/proxy"):], body)
        return self.reply(404, b"not found\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    import os

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        base_handle_error = srv.handle_error

        def handle_error(request, client_address):
            # Failed handshakes (readiness probes, the aborted-handshake tests) are expected.
            if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
                return
            base_handle_error(request, client_address)

        srv.handle_error = handle_error
    srv.upstream = os.environ.get("UPSTREAM_URL", "")
    print("listening on %s:%d" % (args.host, args.port), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
