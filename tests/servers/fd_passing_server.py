"""A server whose listener and handler are two processes: the listener accepts each connection
and sends it to the handler over a Unix socket (`socket.send_fds`), then closes its own copy;
the handler (`recv_fds`) answers HTTP/1.1 on it, keep-alive, one thread per connection.

Usage: python3 fd_passing_server.py --port N [--handler-after-bind]
The handler is a new program (`subprocess`, fork + exec), started before the listener binds
its port, or after with `--handler-after-bind`; every answer names the process that served it
in `X-Served-By`. Routes: /hello and /status?respond=CODE.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        code, body = 404, b"not found\n"
        if u.path == "/hello":
            code, body = 200, b"hello\n"
        elif u.path == "/status":
            q = urllib.parse.parse_qs(u.query)
            code = int(q.get("respond", ["200"])[0])
            body = f"status {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", str(os.getpid()))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def handler_main(unix_fd):
    unix = socket.socket(fileno=unix_fd)
    sys.stderr.write(f"handler {os.getpid()} ready\n")
    sys.stderr.flush()
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(unix, 16, 4)
        if not msg:
            return
        for fd in fds:
            conn = socket.socket(fileno=fd)
            peer = conn.getpeername()
            threading.Thread(
                target=Handler, args=(conn, peer, None), daemon=True
            ).start()


def listener_main(port, handler_after_bind):
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def start_handler():
        handler = subprocess.Popen(
            [sys.executable, __file__, "--handler-fd", str(child.fileno())],
            pass_fds=[child.fileno()],
        )
        child.close()
        return handler

    if not handler_after_bind:
        handler = start_handler()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    if handler_after_bind:
        handler = start_handler()
    srv.listen(128)
    sys.stderr.write(f"listening on 127.0.0.1:{port} (handler pid {handler.pid})\n")
    sys.stderr.flush()
    while True:
        conn, _ = srv.accept()
        socket.send_fds(parent, [b"c"], [conn.fileno()])
        conn.close()


if __name__ == "__main__":
    if "--handler-fd" in sys.argv:
        handler_main(int(sys.argv[sys.argv.index("--handler-fd") + 1]))
    else:
        listener_main(
            int(sys.argv[sys.argv.index("--port") + 1]),
            "--handler-after-bind" in sys.argv,
        )
