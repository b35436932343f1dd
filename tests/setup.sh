#!/usr/bin/env bash
# Installs what the integration tests (beyla-rs-tests) need. Idempotent and quick when all is there.
# Called by CI before `cargo test -p beyla-rs-tests -- --test-threads=1`.
set -euo pipefail

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# The proxy tests (tests/proxies.rs) run HAProxy in front of an upstream, like nginx.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
# The HTTPS tests (tests/https.rs) make their test CA and certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Issue-7 tests: BPF object counts and leftovers (bpftool), running as nobody with ambient
# capabilities (setpriv, util-linux).
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || need_apt+=(bpftool)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
# gRPC over TLS (tests/https.rs) runs Debian's grpcio under Debian's Python: its C core does TLS
# through the system libssl, which the daemon probes (PyPI's wheels embed a stripped BoringSSL).
/usr/bin/python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1 ||
    need_apt+=(python3-grpcio python3-grpc-tools)
# Database and cache spans (tests/databases.rs) run private instances of Debian's PostgreSQL
# (initdb, postgres, psql), MariaDB (mariadb-install-db, mariadbd, the mariadb client), Redis
# and Memcached on free ports.
need_db=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_db+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_db+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || need_db+=(redis-server)
command -v memcached >/dev/null 2>&1 || need_db+=(memcached)
need_apt+=("${need_db[@]}")
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Debian's nginx and haproxy packages start system instances; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then
    for svc in nginx haproxy; do
        systemctl is-active --quiet "$svc" 2>/dev/null && { systemctl stop "$svc" || true; }
    done
fi
# Likewise the database servers just installed (where a service manager started them): the
# tests run private instances, the system ones would only take memory and CPU.
if [ "${#need_db[@]}" -gt 0 ] && command -v systemctl >/dev/null 2>&1; then
    for svc in postgresql mariadb redis-server memcached; do
        systemctl is-active --quiet "$svc" 2>/dev/null && { systemctl stop "$svc" || true; }
    done
fi

# The harness self-test exports a real span with the OpenTelemetry Python SDK (an independent
# OTLP/HTTP encoder) to check the in-test receiver's decoding.
# The metrics tests parse /metrics with prometheus-client's text parser.
if ! python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, prometheus_client' >/dev/null 2>&1; then
    echo "setup.sh: installing the OpenTelemetry Python SDK + OTLP/HTTP exporter" >&2
    python3 -m pip install --quiet --disable-pip-version-check \
        opentelemetry-sdk opentelemetry-exporter-otlp-proto-http prometheus-client ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            opentelemetry-sdk opentelemetry-exporter-otlp-proto-http prometheus-client
fi

# The gRPC tests (tests/grpc.rs) run a grpcio server and client (gRPC's C core under Python);
# grpcio-tools compiles servers/grpc/echo.proto at test time.
# The h2c upgrade test (tests/http2.rs) runs servers/h2c_upgrade_server.py on Python's h2.
if ! python3 -c 'import grpc, grpc_tools, h2' >/dev/null 2>&1; then
    echo "setup.sh: installing grpcio + grpcio-tools + h2" >&2
    python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools h2 ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            grpcio grpcio-tools h2
fi

# The database tests' clients (servers/db_app.py): psycopg 3 (libpq), PyMySQL,
# mysql-connector-python, redis-py, pymemcache. Pinned: what a library sends when it connects
# (SET NAMES, SET AUTOCOMMIT, CLIENT SETINFO, ...) is part of the spans the tests count.
db_py_pins=(psycopg==3.3.9 psycopg-binary==3.3.9 PyMySQL==1.2.4 mysql-connector-python==26.10.0
    redis==8.2.0 pymemcache==4.0.0)
if ! python3 -c '
import sys, importlib.metadata as m
sys.exit(any(m.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
' "${db_py_pins[@]}" >/dev/null 2>&1; then
    echo "setup.sh: installing ${db_py_pins[*]}" >&2
    python3 -m pip install --quiet --disable-pip-version-check "${db_py_pins[@]}" ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            "${db_py_pins[@]}"
fi

echo "setup.sh: ok (nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(go version | awk '{print $3}'), $(python3 --version))" >&2
