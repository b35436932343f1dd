#!/usr/bin/env python3
"""Database and cache client fixture for the beyla-rs integration tests (tests/tests/databases.rs).

    db_app.py client [--listen L]
        Reads one JSON command a line on stdin, runs it, prints one JSON line with what
        happened ({"ok": true, ...} or {"ok": false, "error": "..."}), and exits at stdin EOF.
        Commands: {"run": SCENARIO, ...arguments}; the scenarios are the functions `run_*`
        below, each documenting exactly what it sends (the tests count spans from that).
    db_app.py web --port W --pg-port P --redis-port R [--dbname D --user U]
        A thread-per-request HTTP server (http.server): GET /shop/<name> looks <name> up in
        PostgreSQL (one extended-protocol SELECT) and in Redis (one GET stock:<name>), and
        answers 200 "<id> <stock>\\n". Its database connections are opened at the first
        request (so a daemon started after the server sees them from their first byte) and
        shared by the handler threads under a lock.

--listen L   bind a listening socket on 127.0.0.1:L first, so that a daemon selecting port L
             instruments this process; its database connections then give CLIENT spans.

Every client opens its connections when a command runs and closes them before answering, so
each command's traffic starts with the protocol's handshake.
Libraries: psycopg 3 (libpq, `psycopg[binary]`), PyMySQL, mysql-connector-python (pure
Python, prepared cursor), redis-py, pymemcache; versions are pinned by tests/setup.sh because
what a library sends at connect is part of the expected counts.
"""

import argparse
import json
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# --- PostgreSQL (psycopg 3) ----------------------------------------------------------------

def pg_connect(cmd, autocommit=True):
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=cmd["port"],
        dbname=cmd.get("dbname", "shop"),
        user=cmd.get("user", "postgres"),
        password=cmd.get("password"),
        autocommit=autocommit,
        connect_timeout=10,
    )


def run_pg(cmd):
    """psycopg 3, one connection in autocommit mode (libpq's default sslmode=prefer: an
    SSLRequest the server answers 'N', then the startup message; psycopg itself sends no query
    at connect). Statements, one span each:

      3 × INSERT INTO items … VALUES (%s, %s, %s)      extended protocol (Parse/Bind/Describe/
                                                        Execute/Sync), the 3rd carries `secret`
      4 × SELECT name FROM items WHERE id = %s          extended protocol, unnamed statement
      3 × SELECT secret FROM items WHERE id = %s        prepare=True: Parse of a named statement
                                                        (its own Sync), then Bind/Execute of it
      1 × SELECT count(*) FROM items                    no parameters: simple protocol (Query)
      1 × SELECT * FROM missing_table WHERE id = %s     error 42P01 (undefined table)
      BEGIN, UPDATE items SET name = %s WHERE id = %s, COMMIT    conn.transaction()
      1 × DELETE FROM items WHERE id = %s

    16 statements. Then Terminate (no span).
    """
    import psycopg

    secret = cmd["secret"]
    out = {"ok": True}
    with pg_connect(cmd) as conn:
        cur = conn.cursor()
        for i in (1, 2, 3):
            cur.execute(
                "INSERT INTO items (id, name, secret) VALUES (%s, %s, %s)",
                (i, f"item{i}", secret if i == 3 else "nothing"),
            )
        names = []
        for i in (1, 2, 3, 4):
            cur.execute("SELECT name FROM items WHERE id = %s", (i,))
            row = cur.fetchone()
            names.append(row[0] if row else None)
        out["names"] = names
        secrets = []
        for i in (3, 2, 3):
            cur.execute("SELECT secret FROM items WHERE id = %s", (i,), prepare=True)
            secrets.append(cur.fetchone()[0] == secret)
        out["secret_rows"] = secrets
        cur.execute("SELECT count(*) FROM items")
        out["count"] = cur.fetchone()[0]
        try:
            cur.execute("SELECT * FROM missing_table WHERE id = %s", (1,))
            out["missing"] = "no error"
        except psycopg.Error as e:
            out["missing"] = e.sqlstate
        with conn.transaction():
            cur.execute("UPDATE items SET name = %s WHERE id = %s", ("renamed", 1))
            out["updated"] = cur.rowcount
        cur.execute("DELETE FROM items WHERE id = %s", (2,))
        out["deleted"] = cur.rowcount
    return out


def run_pg_select(cmd):
    """`n` × SELECT name FROM items WHERE id = %s (extended protocol) on one connection."""
    with pg_connect(cmd) as conn:
        cur = conn.cursor()
        for i in range(cmd["n"]):
            cur.execute("SELECT name FROM items WHERE id = %s", (i,))
            cur.fetchall()
    return {"ok": True, "n": cmd["n"]}


# --- MySQL / MariaDB (PyMySQL, mysql-connector-python) -------------------------------------

def run_mysql(cmd):
    """PyMySQL (text protocol) then mysql-connector-python (binary protocol, prepared cursor),
    each connecting to database `shop`.

    PyMySQL, after the handshake, sends `SET NAMES utf8mb4` and `SET AUTOCOMMIT = 0` (the
    server starts in autocommit mode, PyMySQL's default is off); COM_QUERY each:
      SET NAMES utf8mb4, SET AUTOCOMMIT = 0
      INSERT INTO items (id, name, secret) VALUES (1, 'pear', '<secret>')   literal values
      SELECT name FROM items WHERE id = 1                     a literal in the text
      SELECT * FROM missing_table                             error 1146
      COMMIT
      USE other                                               a statement: namespace "other"
      SELECT COUNT(*) FROM notes                              in "other"
      COM_QUIT                                                no span
    mysql-connector-python (pure Python), after the handshake: `SET NAMES 'utf8mb4' COLLATE
    'utf8mb4_general_ci'`, `SET @@session.autocommit = OFF` (COM_QUERY each), COM_PING (no
    span); then a prepared cursor:
      COM_STMT_PREPARE SELECT name FROM items WHERE id = ?    no span
      2 × (COM_STMT_RESET, COM_STMT_EXECUTE)                  a span per execute, in "shop"
      COM_INIT_DB other                                       no span; namespace "other"
      COM_STMT_CLOSE, COM_STMT_PREPARE SELECT body FROM notes WHERE id = ?   no span
      COM_STMT_RESET, COM_STMT_EXECUTE                        a span, in "other"
      COM_STMT_CLOSE, COM_QUIT                                no span
    Spans: 8 (PyMySQL) + 2 (connector's SETs) + 3 (executes) = 13.
    """
    import mysql.connector
    import pymysql

    secret = cmd["secret"]
    out = {"ok": True}
    conn = pymysql.connect(
        host="127.0.0.1",
        port=cmd["port"],
        user=cmd["user"],
        password=cmd["password"],
        database="shop",
        connect_timeout=10,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO items (id, name, secret) VALUES (1, 'pear', '{secret}')"
            )
            cur.execute("SELECT name FROM items WHERE id = 1")
            out["name"] = cur.fetchone()[0]
            try:
                cur.execute("SELECT * FROM missing_table")
                out["missing"] = "no error"
            except pymysql.MySQLError as e:
                out["missing"] = e.args[0]
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("USE other")
            cur.execute("SELECT COUNT(*) FROM notes")
            out["notes"] = cur.fetchone()[0]
    finally:
        conn.close()

    c = mysql.connector.connect(
        host="127.0.0.1",
        port=cmd["port"],
        user=cmd["user"],
        password=cmd["password"],
        database="shop",
        use_pure=True,
        ssl_disabled=True,
    )
    try:
        cur = c.cursor(prepared=True)
        names = []
        for i in (1, 7):
            cur.execute("SELECT name FROM items WHERE id = %s", (i,))
            row = cur.fetchone()
            names.append(row[0] if row else None)
        out["prepared_names"] = names
        c.cmd_init_db("other")
        cur.execute("SELECT body FROM notes WHERE id = %s", (1,))
        out["prepared_note"] = cur.fetchall()
        cur.close()
    finally:
        c.close()
    return out


# --- Redis (redis-py) ---------------------------------------------------------------------

def redis_client(cmd):
    import redis

    # One connection for everything (SELECT must stay on it), RESP2, and no CLIENT SETINFO
    # at connect (redis-py sends it by default; Redis 7.0 answers it with an error).
    return redis.Redis(
        host="127.0.0.1",
        port=cmd["port"],
        single_connection_client=True,
        driver_info=None,
        protocol=2,
        socket_timeout=10,
    )


def run_redis(cmd):
    """redis-py (nothing sent at connect). Commands, one span each, on one connection but for
    the pipelines, which take a second connection from the client's pool:

      SET user:1 <secret>, GET user:1, GET missing:key (a miss: nil, not an error),
      HSET profile:1 name bob, HGETALL profile:1                                 5
      pipeline(transaction=False): SET pipe:0 … SET pipe:9, one write            10
      pipeline(transaction=True): MULTI, INCRBY tx:counter 1, GET tx:counter, EXEC 4
      LPUSH user:1 x → WRONGTYPE error                                            1
      SELECT 2, SET other:1 v, GET other:1 (namespace "2")                        3

    23 commands.
    """
    import redis

    secret = cmd["secret"]
    r = redis_client(cmd)
    out = {"ok": True}
    try:
        r.set("user:1", secret)
        out["get"] = (r.get("user:1") or b"").decode() == secret
        out["miss"] = r.get("missing:key")
        r.hset("profile:1", "name", "bob")
        out["hgetall"] = {k.decode(): v.decode() for k, v in r.hgetall("profile:1").items()}
        p = r.pipeline(transaction=False)
        for i in range(10):
            p.set(f"pipe:{i}", str(i))
        out["pipeline"] = p.execute()
        p = r.pipeline(transaction=True)
        p.incr("tx:counter")
        p.get("tx:counter")
        out["multi"] = [x.decode() if isinstance(x, bytes) else x for x in p.execute()]
        try:
            r.lpush("user:1", "x")
            out["wrongtype"] = "no error"
        except redis.ResponseError as e:
            out["wrongtype"] = str(e).split(" ", 1)[0]
        r.execute_command("SELECT", 2)
        r.set("other:1", "v")
        out["other"] = (r.get("other:1") or b"").decode()
    finally:
        r.close()
    return out


def run_redis_get(cmd):
    """`n` × GET key (one connection)."""
    r = redis_client(cmd)
    try:
        for _ in range(cmd["n"]):
            r.get(cmd.get("key", "k"))
    finally:
        r.close()
    return {"ok": True, "n": cmd["n"]}


# --- Memcached (pymemcache) ---------------------------------------------------------------

def run_memcached(cmd):
    """pymemcache, text protocol, replies awaited (default_noreply=False). One span each:

      set k1, set k2, set k3 (the 3rd carries the secret), get k1,
      get_many([k1, k2, k3]) (one `get k1 k2 k3`), get missing (a miss), delete k2,
      set counter 10, incr counter 5, incr nosuch 1 (miss: NOT_FOUND),
      incr k1 1 (k1 is not a number: CLIENT_ERROR)

    11 commands.
    """
    from pymemcache.client.base import Client
    from pymemcache.exceptions import MemcacheClientError

    secret = cmd["secret"]
    c = Client(("127.0.0.1", cmd["port"]), default_noreply=False, connect_timeout=10, timeout=10)
    out = {"ok": True}
    try:
        c.set("k1", "v1")
        c.set("k2", "v2")
        c.set("k3", secret)
        out["get"] = (c.get("k1") or b"").decode()
        many = c.get_many(["k1", "k2", "k3"])
        out["many"] = sorted(k if isinstance(k, str) else k.decode() for k in many)
        out["miss"] = c.get("missing")
        out["deleted"] = c.delete("k2")
        c.set("counter", "10")
        out["incr"] = c.incr("counter", 5)
        out["incr_miss"] = c.incr("nosuch", 1)
        try:
            c.incr("k1", 1)
            out["incr_error"] = "no error"
        except MemcacheClientError as e:
            out["incr_error"] = str(e)
    finally:
        c.close()
    return out


SCENARIOS = {
    "pg": run_pg,
    "pg_select": run_pg_select,
    "mysql": run_mysql,
    "redis": run_redis,
    "redis_get": run_redis_get,
    "memcached": run_memcached,
}


def client(args):
    listener = None
    if args.listen:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.listen))
        listener.listen(1)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            out = SCENARIOS[cmd["run"]](cmd)
        except Exception as e:  # reported to the test, which fails with it
            out = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        print(json.dumps(out, default=str), flush=True)
    if listener:
        listener.close()


# --- The web app ----------------------------------------------------------------------------

class App:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.pg = None
        self.redis = None

    def lookup(self, name):
        with self.lock:
            if self.pg is None:
                self.pg = pg_connect(
                    {"port": self.args.pg_port, "dbname": self.args.dbname, "user": self.args.user}
                )
                self.redis = redis_client({"port": self.args.redis_port})
            cur = self.pg.cursor()
            cur.execute("SELECT id FROM items WHERE name = %s", (name,))
            row = cur.fetchone()
            stock = self.redis.get(f"stock:{name}")
        return (row[0] if row else None), (stock.decode() if stock else None)


class WebHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "shop":
            item_id, stock = self.server.app.lookup(parts[1])
            body = f"{item_id} {stock}\n".encode()
            code = 200 if item_id is not None else 404
        else:
            body, code = b"not found\n", 404
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def web(args):
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), WebHandler)
    srv.daemon_threads = True
    srv.app = App(args)
    srv.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("--listen", type=int, default=0)
    w = sub.add_parser("web")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--pg-port", type=int, required=True)
    w.add_argument("--redis-port", type=int, required=True)
    w.add_argument("--dbname", default="shop")
    w.add_argument("--user", default="postgres")
    args = ap.parse_args()
    if args.mode == "client":
        client(args)
    else:
        web(args)


if __name__ == "__main__":
    main()
