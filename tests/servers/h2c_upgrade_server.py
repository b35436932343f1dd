#!/usr/bin/env python3
"""HTTP/1.1 server that accepts `Upgrade: h2c` (RFC 7540 §3.2) and then speaks HTTP/2 with the
`h2` library; for the h2c tests in tests/tests/http2.rs (nginx has no h2c upgrade).

    h2c_upgrade_server.py --port P

Routes: /hello -> 200 "hello\\n"; /status?respond=NNN -> NNN; anything else -> 404. The
upgraded request is answered on stream 1, later requests on their own streams.
"""

import argparse
import socket
import threading
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events


def route(path):
    u = urlsplit(path)
    if u.path == "/hello":
        return 200, b"hello\n"
    if u.path == "/status":
        code = int(parse_qs(u.query).get("respond", ["400"])[0])
        return code, f"status {code}\n".encode()
    return 404, b"not found\n"


def respond(conn, stream_id, path):
    status, body = route(path)
    conn.send_headers(
        stream_id,
        [(":status", str(status)), ("content-type", "text/plain"), ("content-length", str(len(body)))],
    )
    conn.send_data(stream_id, body, end_stream=True)


def handle(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("upgrade", "").lower() != "h2c" or "http2-settings" not in headers:
        status, body = route(target)
        sock.sendall(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        return
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.initiate_upgrade_connection(headers["http2-settings"])
    # 101, then the server preface, then the answer to the upgraded request on stream 1: one
    # write, as servers commonly do.
    respond(conn, 1, target)
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        + conn.data_to_send()
    )
    data = rest
    while True:
        if data:
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    h = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in ev.headers}
                    respond(conn, ev.stream_id, h.get(":path", "/"))
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        data = sock.recv(65536)
        if not data:
            return


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(64)
    print(f"h2c upgrade server on {args.port}", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=lambda s=s: (handle(s), s.close()), daemon=True).start()


if __name__ == "__main__":
    main()
