#!/usr/bin/env python3
"""grpcio (C core) server and client for the gRPC integration tests (tests/tests/grpc.rs).

    grpcio_fixture.py server --port P [--tls CERT KEY]
    grpcio_fixture.py client --target 127.0.0.1:P [--listen L] [--ca CA] [--wait] SCENARIO [ARG]

The service is echo.proto beside this file, compiled with grpcio-tools into a temporary
directory at start-up. The client prints one JSON line with what happened, e.g.
{"ok": 50, "codes": [...], "elapsed_s": 0.31}. `--listen L` makes the client bind a
listening socket on 127.0.0.1:L first (and wait a little), so that a daemon selecting port L
instruments the client process too.

TLS (tests/tests/https.rs): `server --tls CERT KEY` serves over grpc.ssl_server_credentials,
`client --ca CA` connects with grpc.secure_channel trusting CA (the certificate names
127.0.0.1). grpcio's TLS is the BoringSSL built into its C core, not the system libssl.
`client --wait` waits for a line on stdin after binding the --listen socket (instead of the
0.3 s pause), and after printing its result for stdin to close before exiting.

Scenarios (client):
    unary N        N sequential unary calls
    concurrent N   N unary calls in flight at once on ONE channel (one HTTP/2 connection),
                   each sleeping 300 ms in the server so that they overlap (times
                   BEYLA_TEST_TIME_SCALE: issuing 50 calls takes longer than 300 ms in an
                   emulated guest)
    errors         unary calls failing with NOT_FOUND, INTERNAL, UNAVAILABLE,
                   INVALID_ARGUMENT, then one OK call
    stream         one server-streaming call (5 messages, 80 ms apart) and one bidi call
                   (4 requests, each answered after 100 ms)
    big            unary 64 KiB request / 64 KiB response, then 1 MiB / 1 MiB
    load N         N sequential unary calls as fast as possible (prints elapsed_s)
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs():
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="beyla-grpc-py-")
    rc = protoc.main(
        ["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"]
    )
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc


pb, pb_grpc = load_stubs()
import grpc  # noqa: E402

MAX_MSG = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
]


class Echo(pb_grpc.EchoServicer):
    def Unary(self, req, ctx):
        if req.sleep_ms:
            time.sleep(req.sleep_ms / 1000)
        if req.fail_code:
            ctx.abort(grpc.StatusCode(_code(req.fail_code)), f"failing with {req.fail_code}")
        return pb.Resp(msg=f"hello {req.name}", payload=b"r" * req.resp_size)

    def ServerStream(self, req, ctx):
        for i in range(req.count):
            time.sleep(req.sleep_ms / 1000)
            yield pb.Resp(msg=f"{req.name} {i}", payload=b"s" * req.resp_size)

    def Bidi(self, it, ctx):
        for req in it:
            time.sleep(req.sleep_ms / 1000)
            yield pb.Resp(msg=f"re {req.name}")


def _code(n):
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c.value
    raise ValueError(n)


def serve(port, tls=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=80), options=OPTIONS)
    pb_grpc.add_EchoServicer_to_server(Echo(), server)
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpcio server on {port}", flush=True)
    server.wait_for_termination()


def client(args):
    listener = None
    if args.listen:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.listen))
        listener.listen(1)
        if not args.wait:
            time.sleep(0.3)
    if args.wait:
        sys.stdin.readline()
    if args.ca:
        with open(args.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ch = grpc.secure_channel(args.target, creds, options=OPTIONS)
    else:
        ch = grpc.insecure_channel(args.target, options=OPTIONS)
    grpc.channel_ready_future(ch).result(timeout=10)
    stub = pb_grpc.EchoStub(ch)
    res = {"ok": 0, "codes": []}
    t0 = time.monotonic()
    n = args.n

    def call(req):
        try:
            stub.Unary(req, timeout=30)
            res["codes"].append(0)
            res["ok"] += 1
        except grpc.RpcError as e:
            res["codes"].append(e.code().value[0])

    if args.scenario == "unary":
        for i in range(n):
            call(pb.Req(name=f"u{i}"))
    elif args.scenario == "load":
        for i in range(n):
            stub.Unary(pb.Req(name=f"u{i}"), timeout=30)
            res["ok"] += 1
    elif args.scenario == "concurrent":
        sleep_ms = round(300 * float(os.environ.get("BEYLA_TEST_TIME_SCALE", "1")))
        fs = [stub.Unary.future(pb.Req(name=f"c{i}", sleep_ms=sleep_ms), timeout=30) for i in range(n)]
        for f in fs:
            try:
                f.result()
                res["ok"] += 1
                res["codes"].append(0)
            except grpc.RpcError as e:
                res["codes"].append(e.code().value[0])
    elif args.scenario == "errors":
        for code in (5, 13, 14, 3, 0):
            call(pb.Req(name=f"e{code}", fail_code=code))
    elif args.scenario == "stream":
        t = time.monotonic()
        msgs = list(stub.ServerStream(pb.Req(name="ss", count=5, sleep_ms=80), timeout=30))
        res["server_stream_msgs"] = len(msgs)
        res["server_stream_s"] = time.monotonic() - t
        t = time.monotonic()
        reqs = iter([pb.Req(name=f"b{i}", sleep_ms=100) for i in range(4)])
        msgs = list(stub.Bidi(reqs, timeout=30))
        res["bidi_msgs"] = len(msgs)
        res["bidi_s"] = time.monotonic() - t
        res["ok"] = 2
    elif args.scenario == "big":
        for size in (64 * 1024, 1024 * 1024):
            r = stub.Unary(pb.Req(name=f"big{size}", payload=b"q" * size, resp_size=size), timeout=30)
            assert len(r.payload) == size
            res["ok"] += 1
    else:
        sys.exit(f"unknown scenario {args.scenario}")
    res["elapsed_s"] = time.monotonic() - t0
    ch.close()
    # Let the connection close while the process (and its listener) still exist.
    time.sleep(0.2)
    print(json.dumps(res), flush=True)
    if args.wait:
        sys.stdin.read()
    if listener:
        listener.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--listen", type=int, default=0)
    c.add_argument("--ca")
    c.add_argument("--wait", action="store_true")
    c.add_argument("scenario")
    c.add_argument("n", type=int, nargs="?", default=1)
    args = p.parse_args()
    if args.cmd == "server":
        serve(args.port, args.tls)
    else:
        client(args)


if __name__ == "__main__":
    main()
