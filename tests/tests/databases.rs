//! Database and cache spans: PostgreSQL (v3 protocol), MariaDB (MySQL protocol), Redis
//! (RESP) and Memcached (text protocol), recognised from the first bytes of connections of
//! selected processes (every server here runs on a free port, never the protocol's usual
//! one). Real servers from Debian's packages, private instances in temp dirs; real client
//! libraries; exact span counts:
//!
//! - PostgreSQL, CLIENT side: psycopg 3 in an app selected by a listening port gives one span
//!   per executed statement: extended protocol (Parse/Bind/Describe/Execute/Sync is one
//!   span), a server-side prepared statement executed three times (three spans, named by the
//!   statement parsed once), the simple protocol, a transaction (BEGIN, COMMIT), an undefined
//!   table (ERROR, SQLSTATE 42P01); SCRAM authentication and the startup give none. `psql`,
//!   selected by its executable path, gives one span per Query message. No literal or bound
//!   value (a secret among them) reaches the export.
//! - PostgreSQL, SERVER side: the postmaster selected by its port; its backends (forked per
//!   connection after the accept) give the same statements as SERVER spans.
//! - MariaDB: PyMySQL (text protocol: literals replaced by `?`, error 1146, `USE` switching
//!   `db.namespace`) and mysql-connector-python's prepared cursor (COM_STMT_PREPARE gives no
//!   span, each COM_STMT_EXECUTE one, named by the prepared text; COM_INIT_DB switches the
//!   namespace; COM_PING, COM_STMT_RESET, COM_STMT_CLOSE, COM_QUIT give none);
//!   `db.system.name` = `mariadb`. The same statements as CLIENT spans of the app and, in a
//!   second test, as SERVER spans of mariadbd. (mysql-connector-python reads each packet's
//!   4-octet header with a `recv` of its own: the first bytes the client side sees of its
//!   connection are those 4 octets.)
//! - Redis: redis-py, app and redis-server both selected: every command a CLIENT and a
//!   SERVER span, a 10-command pipeline ten, MULTI/queued/EXEC each one, WRONGTYPE an error,
//!   `SELECT 2` moves `db.namespace` to "2"; `db.query.text` is the command and first key.
//! - Memcached: pymemcache, app and memcached both selected: every command a span (a
//!   multi-key get one), a miss is no error, CLIENT_ERROR is.
//! - A thread-per-request web app querying PostgreSQL and Redis per HTTP request: each
//!   request's database CLIENT spans are children of its HTTP SERVER span.
//! - Metrics: `db_client_operation_duration_seconds` / `db_server_…` on `/metrics` (and
//!   `db.client.operation.duration` over OTLP) count every operation per attribute set; no
//!   label carries query text.
//! - Hostile bytes to selected PostgreSQL and Redis servers (garbage, a truncated startup
//!   message, absurd lengths, unterminated commands) give no span and leave the daemon up;
//!   normal traffic to the same servers is traced afterwards.
//!
//! Fixtures: `src/databases.rs`, `servers/db_app.py`. Needs root, the daemon binary, and what
//! tests/setup.sh installs (postgresql, mariadb-server, redis-server, memcached, the Python
//! client libraries at pinned versions); run serially:
//! `cargo test -p beyla-rs-tests --test databases -- --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use beyla_rs_tests::counters::SPANS_CREATED;
use beyla_rs_tests::daemon::{self, Daemon};
use beyla_rs_tests::databases::{
    self, DbClient, DbOp, DbServer, DbSide, MARIADB_INIT, MYSQL_PASSWORD, MYSQL_USER, PG_PASSWORD,
    PG_SCHEMA, Psql, assert_db_spans_match, blast, check_db_spans,
};
use beyla_rs_tests::expect::{ExpectedSpan, check_server_spans, expect_spans};
use beyla_rs_tests::exposition;
use beyla_rs_tests::otlp::{self, AttrValue, OtlpReceiver, ReceivedSpan, SpanKind, attrs_to_map};
use beyla_rs_tests::rawhttp::{self, Request};
use beyla_rs_tests::{free_port, quiet, require_root, span_timeout, wait_until};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::json;

/// A value the scenarios store (as a bound parameter, a SQL literal, a Redis value, a
/// Memcached value): it must never reach the export.
const SECRET: &str = "s3cr3t-db-7731";

fn span_pid_is(pid: u32) -> impl Fn(&ReceivedSpan) -> bool + Clone {
    move |s| s.pid() == Some(pid)
}

/// Waits for at least `n` spans matching `pred` (no quiet period: the test asserts the
/// total once at the end).
fn wait_n(rx: &OtlpReceiver, pred: impl Fn(&ReceivedSpan) -> bool, n: usize) -> Vec<ReceivedSpan> {
    rx.wait_for_spans(pred, n, span_timeout())
}

/// A PostgreSQL server with database `shop` and its table `items` (made before any daemon
/// runs, by a psql no test selects).
fn postgres_with_schema() -> DbServer {
    let pg = DbServer::postgres(free_port());
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", PG_SCHEMA);
    pg
}

fn pg_command(pg: &DbServer, run: &str) -> serde_json::Value {
    json!({"run": run, "port": pg.port(), "dbname": "shop", "user": "postgres",
           "password": PG_PASSWORD, "secret": SECRET})
}

/// Checks the answer of db_app.py's `pg` scenario.
fn check_pg_answer(v: &serde_json::Value) {
    assert_eq!(v["names"], json!(["item1", "item2", "item3", null]), "{v}");
    assert_eq!(v["secret_rows"], json!([true, false, true]), "{v}");
    assert_eq!(v["count"], json!(3), "{v}");
    assert_eq!(v["missing"], json!("42P01"), "{v}");
    assert_eq!(
        (&v["updated"], &v["deleted"]),
        (&json!(1), &json!(1)),
        "{v}"
    );
}

/// Values the `pg` scenario binds as parameters: none may be exported.
const PG_BOUND: &[&str] = &[SECRET, "item1", "item2", "item3", "nothing", "renamed"];

#[test]
fn postgres_client_spans_from_psycopg_and_psql() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let pg = postgres_with_schema();
    let listen = free_port();
    let mut app = DbClient::spawn(Some(listen));
    // psql is selected by its executable path (a discovery entry of the configuration file);
    // it connects at once, before the daemon runs, and opens the connection under test with
    // `\connect` once the daemon has picked it up.
    let psql = Psql::spawn(&pg, "shop");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("beyla-rs.yaml");
    std::fs::write(
        &config,
        format!(
            "discovery:\n  instrument:\n    - exe_path: \"{}\"\n",
            databases::psql_path().display()
        ),
    )
    .unwrap();
    let mut d = Daemon::builder()
        .open_ports(&[listen])
        .otlp(&rx)
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();
    let picked = format!("instrumenting pid {} ", psql.pid());
    assert!(
        d.wait_for_log(&picked, span_timeout()),
        "the daemon did not select psql by its executable path:\n{}",
        d.logs()
    );

    let v = app.run(pg_command(&pg, "pg"));
    check_pg_answer(&v);
    let psql_pid = psql.pid();
    let (st, out) = psql.run(
        "\\connect shop\n\
         SELECT name FROM items WHERE id = 424242\\g\n\
         SELECT 1 FROM nosuch\\g\n",
    );
    assert!(st.success(), "psql: {st}\n{out}");
    assert!(
        out.contains("(0 rows)") && out.contains("\"nosuch\" does not exist"),
        "{out}"
    );

    let pg_ops = databases::pg_scenario_ops("shop");
    wait_n(&rx, span_pid_is(app.pid()), pg_ops.len());
    wait_n(&rx, span_pid_is(psql_pid), 2);
    rx.assert_quiet(otlp::any_span, pg_ops.len() + 2, quiet());
    let app_spans = rx.spans_matching(span_pid_is(app.pid()));
    let psql_spans = rx.spans_matching(span_pid_is(psql_pid));

    assert_db_spans_match("psycopg", &app_spans, &pg_ops);
    let pg_op = |op, coll, q| DbOp::sql("postgresql", "shop", op, coll, q);
    assert_db_spans_match(
        "psql",
        &psql_spans,
        &[
            pg_op(
                "SELECT",
                Some("items"),
                "SELECT name FROM items WHERE id = ?",
            ),
            pg_op("SELECT", Some("nosuch"), "SELECT ? FROM nosuch").error("42P01"),
        ],
    );
    let side = |pid: u32, exe: String| DbSide {
        kind: SpanKind::Client,
        db_port: pg.port(),
        pid: Some(pid),
        exe,
    };
    check_db_spans(&app_spans, &side(app.pid(), app.exe_name()), PG_BOUND);
    check_db_spans(&psql_spans, &side(psql_pid, "psql".into()), &["424242"]);
    rx.assert_no_secrets(PG_BOUND);
    rx.assert_no_secrets(&["424242", PG_PASSWORD]);
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}

/// The postmaster is selected by its port; it accepts each connection and forks a backend
/// that serves it. The backends' statements must come out as SERVER spans.
#[test]
fn postgres_server_spans_from_forked_backends() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let pg = postgres_with_schema();
    let mut app = DbClient::spawn(None);
    let mut d = Daemon::start(&[pg.port()], &rx);

    let v = app.run(pg_command(&pg, "pg"));
    check_pg_answer(&v);
    // And psql -c (simple protocol, a literal).
    pg.psql("shop", "SELECT name FROM items WHERE id = 424242");

    let mut expected = databases::pg_scenario_ops("shop");
    expected.push(DbOp::sql(
        "postgresql",
        "shop",
        "SELECT",
        Some("items"),
        "SELECT name FROM items WHERE id = ?",
    ));
    let from_postgres = |s: &ReceivedSpan| s.res_str("process.executable.name") == Some("postgres");
    wait_n(&rx, from_postgres, expected.len());
    rx.assert_quiet(otlp::any_span, expected.len(), quiet());
    let spans = rx.spans();
    assert_db_spans_match("postgres backends", &spans, &expected);
    let side = DbSide {
        kind: SpanKind::Server,
        db_port: pg.port(),
        pid: None,
        exe: "postgres".into(),
    };
    check_db_spans(&spans, &side, PG_BOUND);
    let pids: BTreeSet<u32> = spans.iter().filter_map(ReceivedSpan::pid).collect();
    assert!(
        !pids.contains(&pg.pid()),
        "the postmaster serves no statement, its backends do: {pids:?}"
    );
    assert_eq!(
        pids.len(),
        2,
        "one backend per connection (psycopg's, psql's): {pids:?}"
    );
    rx.assert_no_secrets(PG_BOUND);
    rx.assert_no_secrets(&["424242", PG_PASSWORD]);
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}

/// db_app.py's `mysql` scenario against a private MariaDB, with either the client app
/// (`kind` CLIENT, selected by a listening port) or mariadbd (SERVER, by its port) selected:
/// the same 13 spans either way.
fn mariadb_spans(kind: SpanKind) {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let db = DbServer::mariadb(free_port(), MARIADB_INIT);
    let listen = free_port();
    let client_side = kind == SpanKind::Client;
    let mut app = DbClient::spawn(client_side.then_some(listen));
    let selected = if client_side { listen } else { db.port() };
    let mut d = Daemon::start(&[selected], &rx);

    let v = app.run(
        json!({"run": "mysql", "port": db.port(), "user": MYSQL_USER,
                           "password": MYSQL_PASSWORD, "secret": SECRET}),
    );
    assert_eq!(v["name"], json!("pear"), "{v}");
    assert_eq!(v["missing"], json!(1146), "{v}");
    assert_eq!(v["notes"], json!(0), "{v}");
    assert_eq!(v["prepared_names"], json!(["pear", null]), "{v}");
    assert_eq!(v["prepared_note"], json!([]), "{v}");

    let expected = databases::mysql_scenario_ops();
    let (pid, exe) = if client_side {
        (app.pid(), app.exe_name())
    } else {
        (db.pid(), db.exe_name())
    };
    wait_n(&rx, span_pid_is(pid), expected.len());
    rx.assert_quiet(otlp::any_span, expected.len(), quiet());
    let spans = rx.spans();
    assert_db_spans_match(
        if client_side {
            "PyMySQL + mysql-connector (CLIENT)"
        } else {
            "mariadbd (SERVER)"
        },
        &spans,
        &expected,
    );
    let side = DbSide {
        kind,
        db_port: db.port(),
        pid: Some(pid),
        exe,
    };
    check_db_spans(&spans, &side, &[SECRET, "pear"]);
    rx.assert_no_secrets(&[SECRET, MYSQL_PASSWORD]);
    rx.assert_no_errors();
    d.assert_running();
    // The secret did go into the table (checked by a client no daemon selects, after the
    // spans).
    assert_eq!(
        db.mariadb_sql("SELECT secret FROM shop.items WHERE id = 1")
            .trim(),
        SECRET
    );
    app.finish();
    d.stop_ok();
}

#[test]
fn mariadb_client_spans_from_pymysql_and_prepared_statements() {
    mariadb_spans(SpanKind::Client);
}

/// mariadbd (a thread per connection) selected by its port: the statements it serves, as
/// SERVER spans, `client.address` included.
#[test]
fn mariadb_server_spans() {
    mariadb_spans(SpanKind::Server);
}

#[test]
fn redis_client_and_server_spans() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let redis = DbServer::redis(free_port());
    let listen = free_port();
    let mut app = DbClient::spawn(Some(listen));
    let mut d = Daemon::start(&[redis.port(), listen], &rx);

    let v = app.run(json!({"run": "redis", "port": redis.port(), "secret": SECRET}));
    assert_eq!(v["get"], json!(true), "{v}");
    assert_eq!(v["miss"], json!(null), "{v}");
    assert_eq!(v["pipeline"], json!(vec![true; 10]), "{v}");
    assert_eq!(v["multi"], json!([1, "1"]), "{v}");
    assert_eq!(v["wrongtype"], json!("WRONGTYPE"), "{v}");
    assert_eq!(v["other"], json!("v"), "{v}");

    let expected = databases::redis_scenario_ops();
    let n = expected.len();
    wait_n(&rx, otlp::client_of(app.pid()), n);
    wait_n(&rx, otlp::server_of(redis.pid()), n);
    rx.assert_quiet(otlp::any_span, 2 * n, quiet());
    let client = rx.spans_matching(otlp::client_of(app.pid()));
    let server = rx.spans_matching(otlp::server_of(redis.pid()));
    assert_db_spans_match("redis-py (CLIENT)", &client, &expected);
    assert_db_spans_match("redis-server (SERVER)", &server, &expected);
    let literals = [SECRET, "bob"];
    check_db_spans(
        &client,
        &DbSide {
            kind: SpanKind::Client,
            db_port: redis.port(),
            pid: Some(app.pid()),
            exe: app.exe_name(),
        },
        &literals,
    );
    check_db_spans(
        &server,
        &DbSide {
            kind: SpanKind::Server,
            db_port: redis.port(),
            pid: Some(redis.pid()),
            exe: redis.exe_name(),
        },
        &literals,
    );
    rx.assert_no_secrets(&[SECRET]);
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}

#[test]
fn memcached_client_and_server_spans() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let mc = DbServer::memcached(free_port());
    let listen = free_port();
    let mut app = DbClient::spawn(Some(listen));
    let mut d = Daemon::start(&[mc.port(), listen], &rx);

    let v = app.run(json!({"run": "memcached", "port": mc.port(), "secret": SECRET}));
    assert_eq!(v["get"], json!("v1"), "{v}");
    assert_eq!(v["many"], json!(["k1", "k2", "k3"]), "{v}");
    assert_eq!(
        (&v["miss"], &v["deleted"]),
        (&json!(null), &json!(true)),
        "{v}"
    );
    assert_eq!(
        (&v["incr"], &v["incr_miss"]),
        (&json!(15), &json!(null)),
        "{v}"
    );
    assert!(
        v["incr_error"]
            .as_str()
            .is_some_and(|e| e.contains("non-numeric")),
        "{v}"
    );

    let expected = databases::memcached_scenario_ops();
    let n = expected.len();
    wait_n(&rx, otlp::client_of(app.pid()), n);
    wait_n(&rx, otlp::server_of(mc.pid()), n);
    rx.assert_quiet(otlp::any_span, 2 * n, quiet());
    let client = rx.spans_matching(otlp::client_of(app.pid()));
    let server = rx.spans_matching(otlp::server_of(mc.pid()));
    assert_db_spans_match("pymemcache (CLIENT)", &client, &expected);
    assert_db_spans_match("memcached (SERVER)", &server, &expected);
    check_db_spans(
        &client,
        &DbSide {
            kind: SpanKind::Client,
            db_port: mc.port(),
            pid: Some(app.pid()),
            exe: app.exe_name(),
        },
        &[SECRET],
    );
    check_db_spans(
        &server,
        &DbSide {
            kind: SpanKind::Server,
            db_port: mc.port(),
            pid: Some(mc.pid()),
            exe: mc.exe_name(),
        },
        &[SECRET],
    );
    rx.assert_no_secrets(&[SECRET]);
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}

/// Item names the web app test looks up (non-numeric path segments: the route heuristic
/// leaves them alone), with their ids in PostgreSQL and stock in Redis.
const SHOP: [(&str, u32, u32); 5] = [
    ("apple", 1, 11),
    ("pear", 2, 12),
    ("plum", 3, 13),
    ("fig", 4, 14),
    ("kiwi", 5, 15),
];

#[test]
fn web_app_database_spans_are_children_of_its_http_spans() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let pg = postgres_with_schema();
    let redis = DbServer::redis(free_port());
    for (name, id, stock) in SHOP {
        pg.psql(
            "shop",
            &format!("INSERT INTO items (id, name, secret) VALUES ({id}, '{name}', 'x')"),
        );
        let r = databases::redis_command(
            redis.port(),
            &["SET", &format!("stock:{name}"), &stock.to_string()],
        )
        .unwrap();
        assert_eq!(r, b"+OK\r\n");
    }
    let port = free_port();
    let web = databases::web_app(port, pg.port(), redis.port());
    let mut d = Daemon::start(&[port], &rx);

    // One connection per request: each is served by a thread of its own.
    for (name, id, stock) in SHOP {
        let r = rawhttp::keepalive(port, &[Request::get(&format!("/shop/{name}"))]);
        assert_eq!(
            (r[0].status, r[0].body_str()),
            (200, format!("{id} {stock}\n")),
            "GET /shop/{name}\n{}",
            web.output()
        );
    }

    let m = SHOP.len();
    let http_expected: Vec<ExpectedSpan> = SHOP
        .iter()
        .map(|(name, _, _)| ExpectedSpan::server("GET", &format!("/shop/{name}"), 200).port(port))
        .collect();
    wait_n(&rx, otlp::client_of(web.pid()), 2 * m);
    let http = expect_spans(&rx, otlp::server_of(web.pid()), &http_expected);
    rx.assert_quiet(otlp::any_span, 3 * m, Duration::ZERO);
    check_server_spans(&http, port, web.pid(), &web.exe_name());
    let db_spans = rx.spans_matching(otlp::client_of(web.pid()));
    let mut expected: Vec<DbOp> = SHOP
        .iter()
        .map(|_| {
            DbOp::sql(
                "postgresql",
                "shop",
                "SELECT",
                Some("items"),
                "SELECT id FROM items WHERE name = $1",
            )
        })
        .collect();
    expected.extend(
        SHOP.iter()
            .map(|(name, _, _)| DbOp::redis("0", &format!("GET stock:{name}"))),
    );
    assert_db_spans_match("web app", &db_spans, &expected);
    let (pg_spans, redis_spans): (Vec<ReceivedSpan>, Vec<ReceivedSpan>) = db_spans
        .iter()
        .cloned()
        .partition(|s| s.attr_str("db.system.name") == Some("postgresql"));
    let side = |db_port| DbSide {
        kind: SpanKind::Client,
        db_port,
        pid: Some(web.pid()),
        exe: web.exe_name(),
    };
    check_db_spans(
        &pg_spans,
        &side(pg.port()),
        &["apple", "pear", "plum", "fig", "kiwi"],
    );
    check_db_spans(&redis_spans, &side(redis.port()), &[]);

    // Each request's two database spans: in its trace, children of its SERVER span, within
    // its time. The Redis key names the request; the PostgreSQL span is the one in the trace.
    let mut problems = Vec::new();
    for (name, _, _) in SHOP {
        let path = format!("/shop/{name}");
        let parent = http
            .iter()
            .find(|s| s.attr_str("url.path") == Some(path.as_str()))
            .unwrap();
        let key = format!("GET stock:{name}");
        let redis_span = redis_spans
            .iter()
            .find(|s| s.attr_str("db.query.text") == Some(key.as_str()))
            .unwrap();
        let in_trace: Vec<&ReceivedSpan> = pg_spans
            .iter()
            .filter(|s| s.trace_id == parent.trace_id)
            .collect();
        if in_trace.len() != 1 {
            problems.push(format!(
                "{path}: {} PostgreSQL spans in its trace {} (want 1)",
                in_trace.len(),
                parent.trace_id
            ));
        }
        for child in in_trace.into_iter().chain([redis_span]) {
            if child.trace_id != parent.trace_id || child.parent_span_id != parent.span_id {
                problems.push(format!(
                    "{path}: {} has trace {} parent {:?}; want trace {} parent {}",
                    child.name,
                    child.trace_id,
                    child.parent_span_id,
                    parent.trace_id,
                    parent.span_id
                ));
            }
            if child.start_ns < parent.start_ns || child.end_ns > parent.end_ns {
                problems.push(format!(
                    "{path}: {} [{}, {}] is not within its request [{}, {}]",
                    child.name, child.start_ns, child.end_ns, parent.start_ns, parent.end_ns
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "database spans not joined to their HTTP requests:\n  {}\nall spans:\n{}",
        problems.join("\n  "),
        otlp::dump_spans(&rx.spans())
    );
    rx.assert_no_errors();
    d.assert_running();
    d.stop_ok();
}

/// (system, operation, collection, namespace, status code) → count, from `/metrics` samples
/// of `family` (`_count`) of service instance `pid`; also returns every label set seen.
fn prom_db_counts(
    samples: &[exposition::Sample],
    family: &str,
    pid: u32,
    db_port: u16,
) -> BTreeMap<[String; 5], u64> {
    let mut m = BTreeMap::new();
    let count = format!("{family}_count");
    for s in samples {
        if s.name != count
            || s.labels
                .get("service_instance_id")
                .is_none_or(|i| !i.ends_with(&format!("-{pid}")))
            || s.labels.get("server_port").map(String::as_str) != Some(&db_port.to_string())
        {
            continue;
        }
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        let key = [
            l("db_system_name"),
            l("db_operation_name"),
            l("db_collection_name"),
            l("db_namespace"),
            l("db_response_status_code"),
        ];
        *m.entry(key).or_insert(0) += s.value as u64;
    }
    m
}

/// Sum of the `name` histogram's counts over the last OTLP request that carries it for
/// process `pid` (cumulative), and every attribute key its data points had.
fn otlp_db_count(rx: &OtlpReceiver, name: &str, pid: u32) -> (u64, BTreeSet<String>) {
    for req in rx.metrics().iter().rev() {
        for rm in &req.resource_metrics {
            let res = attrs_to_map(
                &rm.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            );
            if res.get("process.pid").and_then(AttrValue::as_int) != Some(i64::from(pid)) {
                continue;
            }
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                if m.name != name {
                    continue;
                }
                let Some(Data::Histogram(h)) = &m.data else {
                    panic!("{name} is not a histogram: {m:?}")
                };
                let keys = h
                    .data_points
                    .iter()
                    .flat_map(|dp| dp.attributes.iter().map(|kv| kv.key.clone()))
                    .collect();
                return (h.data_points.iter().map(|dp| dp.count).sum(), keys);
            }
        }
    }
    (0, BTreeSet::new())
}

#[test]
fn db_operation_duration_metrics_count_every_operation() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let pg = postgres_with_schema();
    let redis = DbServer::redis(free_port());
    let listen = free_port();
    let mut app = DbClient::spawn(Some(listen));
    let prom_port = free_port();
    let mut d = Daemon::builder()
        .open_ports(&[listen, redis.port()])
        .otlp(&rx)
        .env("BEYLA_PROMETHEUS_PORT", prom_port.to_string())
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300ms")
        .start();

    check_pg_answer(&app.run(pg_command(&pg, "pg")));
    let gets = 7;
    app.run(json!({"run": "redis_get", "port": redis.port(), "n": gets, "key": "user:9"}));

    // The spans first: every operation was seen.
    let pg_ops = databases::pg_scenario_ops("shop");
    let redis_ops = vec![DbOp::redis("0", "GET user:9"); gets];
    let client_n = pg_ops.len() + gets;
    wait_n(&rx, otlp::client_of(app.pid()), client_n);
    wait_n(&rx, otlp::server_of(redis.pid()), gets);
    rx.assert_quiet(otlp::any_span, client_n + gets, quiet());

    let scrape = || {
        let r = rawhttp::keepalive(prom_port, &[Request::get("/metrics")]);
        assert_eq!(r[0].status, 200, "GET /metrics: {}", r[0].body_str());
        let text = r[0].body_str();
        (
            exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
            text,
        )
    };
    let want_pg = databases::op_counts(&pg_ops);
    let want_redis = databases::op_counts(&redis_ops);
    let client_family = "db_client_operation_duration_seconds";
    let server_family = "db_server_operation_duration_seconds";
    let mut samples = Vec::new();
    let mut text = String::new();
    let complete = |samples: &[exposition::Sample]| {
        prom_db_counts(samples, client_family, app.pid(), pg.port())
            .values()
            .sum::<u64>()
            >= pg_ops.len() as u64
            && prom_db_counts(samples, client_family, app.pid(), redis.port())
                .values()
                .sum::<u64>()
                >= gets as u64
    };
    let ok = wait_until(span_timeout(), || {
        (samples, text) = scrape();
        complete(&samples)
    });
    assert!(
        ok,
        "db_client_operation_duration_seconds never counted every operation:\n{text}"
    );
    assert_eq!(
        prom_db_counts(&samples, client_family, app.pid(), pg.port()),
        want_pg,
        "PostgreSQL operations per attribute set (system, operation, collection, namespace, \
         status code)\n{text}"
    );
    assert_eq!(
        prom_db_counts(&samples, client_family, app.pid(), redis.port()),
        want_redis,
        "Redis operations per attribute set\n{text}"
    );
    // The server side (redis-server is selected): its own series, by instance.
    let server: u64 = samples
        .iter()
        .filter(|s| {
            s.name == format!("{server_family}_count")
                && s.labels
                    .get("service_instance_id")
                    .is_some_and(|i| i.ends_with(&format!("-{}", redis.pid())))
        })
        .inspect(|s| {
            assert_eq!(
                (
                    s.labels.get("db_system_name").map(String::as_str),
                    s.labels.get("db_operation_name").map(String::as_str),
                    s.labels.get("db_namespace").map(String::as_str),
                ),
                (Some("redis"), Some("GET"), Some("0")),
                "{s:?}"
            )
        })
        .map(|s| s.value as u64)
        .sum();
    assert_eq!(
        server, gets as u64,
        "{server_family}_count of redis-server\n{text}"
    );
    // Client series name their server; no label carries query text (or anything of it).
    for s in samples.iter().filter(|s| s.name.starts_with("db_")) {
        assert!(
            !s.labels.contains_key("db_query_text"),
            "query text as a label: {s:?}"
        );
        for (k, v) in &s.labels {
            for bad in ["FROM", "WHERE", "$1", "user:9", SECRET, "item1"] {
                assert!(
                    !v.contains(bad),
                    "label {k}={v:?} carries query text ({bad:?}): {s:?}"
                );
            }
        }
        if s.name.starts_with(client_family) {
            assert_eq!(
                s.labels.get("server_address").map(String::as_str),
                Some("127.0.0.1"),
                "{s:?}"
            );
        }
    }
    // The same counts over OTLP, without the query text either.
    let mut got = (0, BTreeSet::new());
    let ok = wait_until(span_timeout(), || {
        got = otlp_db_count(&rx, "db.client.operation.duration", app.pid());
        got.0 >= client_n as u64
    });
    assert!(
        ok,
        "OTLP db.client.operation.duration never reached {client_n}: {got:?}"
    );
    assert_eq!(got.0, client_n as u64, "{got:?}");
    assert!(!got.1.contains("db.query.text"), "{got:?}");
    rx.assert_no_secrets(&[SECRET]);
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}

/// A PostgreSQL startup message: protocol 3.0, `user`, `database`.
fn pg_startup(user: &str, db: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

#[test]
fn garbage_to_database_ports_gives_no_span() {
    let _guard = require_root();
    daemon::daemon_bin();
    let rx = OtlpReceiver::start();
    let mut pg = postgres_with_schema();
    let mut redis = DbServer::redis(free_port());
    let mut d = Daemon::builder()
        .open_ports(&[pg.port(), redis.port()])
        .otlp(&rx)
        .internal_metrics()
        .start();

    let t = beyla_rs_tests::scaled(Duration::from_secs(3));
    let startup = pg_startup("postgres", "shop");
    let mut truncated = startup.clone();
    truncated.truncate(startup.len() - 9);
    let mut startup_then_noise = startup.clone();
    startup_then_noise.extend(rawhttp::garbage(300));
    let pg_cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", rawhttp::garbage(4096)),
        ("truncated startup message", truncated),
        (
            "startup length 2^31-1",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        ),
        (
            "SSLRequest, then close",
            vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
        ),
        ("startup, then noise instead of SCRAM", startup_then_noise),
    ];
    let mut noise = rawhttp::garbage(4096);
    noise[0] = 0;
    let redis_cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", noise),
        ("array of 10^9 elements", b"*1000000000\r\n".to_vec()),
        ("bulk of 2^31-1 bytes", b"*1\r\n$2147483647\r\n".to_vec()),
        (
            "unterminated command",
            b"*2\r\n$3\r\nGET\r\n$3\r\nab".to_vec(),
        ),
        ("inline unknown command", b"xyzzy plugh\r\n".to_vec()),
    ];
    let mut answers = Vec::new();
    for (what, bytes) in &pg_cases {
        answers.push(format!(
            "postgres {what}: {} bytes back",
            blast(pg.port(), bytes, t).len()
        ));
    }
    for (what, bytes) in &redis_cases {
        let back = blast(redis.port(), bytes, t);
        answers.push(format!(
            "redis {what}: {:?}",
            String::from_utf8_lossy(&back[..back.len().min(60)])
        ));
    }
    eprintln!("[info] servers answered:\n  {}", answers.join("\n  "));
    let idle = d.wait_idle();
    d.assert_running();
    assert!(pg.is_running() && redis.is_running(), "a server died");
    assert_eq!(
        idle.get(SPANS_CREATED),
        0,
        "{idle:?}\n{}",
        otlp::dump_spans(&rx.spans())
    );
    rx.assert_quiet(otlp::any_span, 0, Duration::ZERO);

    // Positive controls on the same servers, in the same run.
    let mut app = DbClient::spawn(None);
    app.run(json!({"run": "redis_get", "port": redis.port(), "n": 3, "key": "k"}));
    let spans = wait_n(&rx, otlp::server_of(redis.pid()), 3);
    assert_db_spans_match("redis control", &spans, &vec![DbOp::redis("0", "GET k"); 3]);
    app.run(
        json!({"run": "pg_select", "port": pg.port(), "dbname": "shop", "user": "postgres",
                   "password": PG_PASSWORD, "n": 2}),
    );
    let from_postgres = |s: &ReceivedSpan| s.res_str("process.executable.name") == Some("postgres");
    let spans = wait_n(&rx, from_postgres, 2);
    assert_db_spans_match(
        "postgres control",
        &spans,
        &vec![
            DbOp::sql(
                "postgresql",
                "shop",
                "SELECT",
                Some("items"),
                "SELECT name FROM items WHERE id = $1"
            );
            2
        ],
    );
    rx.assert_quiet(otlp::any_span, 5, quiet());
    rx.assert_no_errors();
    d.assert_running();
    app.finish();
    d.stop_ok();
}
