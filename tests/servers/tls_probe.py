#!/usr/bin/env python3
"""TLS that carries no HTTP, for the beyla-rs integration tests (tests/tests/https.rs).

    tls_probe.py echo-server --port P --tls CERT KEY
        A TLS line-echo server (Python's `ssl`, the shared libssl): every line a client sends
        comes back prefixed with "echo: ". Never HTTP. Handshakes run in the connection's
        thread, so an aborted one never blocks the accept loop.
    tls_probe.py line --port P --ca CA --text TEXT
        Full handshake (server verified against CA), sends TEXT + "\\n", reads the echoed line,
        closes. Prints {"echo": "..."}.
    tls_probe.py half-hello --port P [--bytes N]
        Builds a real ClientHello (ssl.MemoryBIO, no socket), connects over plain TCP, sends
        only its first N bytes (default 10), closes. Prints {"sent": N, "hello_len": M}.
    tls_probe.py handshake-only --port P --ca CA
        Full handshake, then closes without sending a byte of application data.
        Prints {"version": "TLSv1.3"}.
"""

import argparse
import json
import socket
import ssl
import sys
import threading


def echo_server(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls[0], args.tls[1])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(64)
    print(f"tls echo server on {args.port}", file=sys.stderr, flush=True)

    def serve(conn):
        try:
            conn.settimeout(30)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                f = tls.makefile("rwb")
                for line in f:
                    f.write(b"echo: " + line)
                    f.flush()
        except (ssl.SSLError, OSError):
            pass  # aborted handshakes and unclean closes are what the tests send
        finally:
            conn.close()

    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def client_ctx(ca):
    return ssl.create_default_context(cafile=ca)


def line(args):
    with socket.create_connection(("127.0.0.1", args.port), timeout=20) as s:
        with client_ctx(args.ca).wrap_socket(s, server_hostname="localhost") as tls:
            tls.sendall(args.text.encode() + b"\n")
            got = b""
            while not got.endswith(b"\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                got += chunk
    print(json.dumps({"echo": got.decode(errors="replace").rstrip("\n")}), flush=True)


def half_hello(args):
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16", f"not a TLS handshake record: {hello[:8]!r}"
    n = min(args.bytes, len(hello))
    with socket.create_connection(("127.0.0.1", args.port), timeout=20) as s:
        s.sendall(hello[:n])
    print(json.dumps({"sent": n, "hello_len": len(hello)}), flush=True)


def handshake_only(args):
    with socket.create_connection(("127.0.0.1", args.port), timeout=20) as s:
        with client_ctx(args.ca).wrap_socket(s, server_hostname="localhost") as tls:
            version = tls.version()
    print(json.dumps({"version": version}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("echo-server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), required=True)
    s = sub.add_parser("line")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ca", required=True)
    s.add_argument("--text", required=True)
    s = sub.add_parser("half-hello")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, default=10)
    s = sub.add_parser("handshake-only")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ca", required=True)
    args = p.parse_args()
    {
        "echo-server": echo_server,
        "line": line,
        "half-hello": half_hello,
        "handshake-only": handshake_only,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
