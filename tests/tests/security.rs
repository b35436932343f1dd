//! Issue 7, security: no secrets in exported OTLP, printer output or logs; least privilege
//! (non-root with exactly the documented ambient capabilities, a clear refusal when one is
//! missing); nothing pinned or readable by other users; no listening sockets beyond
//! localhost; no writes into the instrumented processes.
//!
//! Needs root (it drops to `nobody` with `setpriv` itself), the daemon binary, `setpriv`
//! (util-linux) and `bpftool`; when no bpf filesystem is mounted at `/sys/fs/bpf` it mounts one
//! for the pinning check (and unmounts it after); run serially:
//! `cargo test -p beyla-rs-tests --test security -- --test-threads=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use beyla_rs_tests::daemon::{self, Daemon, DaemonBuilder};
use beyla_rs_tests::fixtures::{self, ServerProcess};
use beyla_rs_tests::otlp::{self, OtlpReceiver, ReceivedSpan};
use beyla_rs_tests::rawhttp::{RawConn, Request};
use beyla_rs_tests::{free_port, quiet, require_root, scaled, settle, span_timeout};
use common::*;

// ---------------------------------------------------------------------------------------------
// Secrets

/// Every secret value a request or response carries; none may appear anywhere downstream.
const SECRETS: &[&str] = &[
    "AUTHZ-s3cr3t-1111",
    "COOKIE-s3cr3t-2222",
    "SETCOOKIE-s3cr3t-3333",
    "PROXYAUTH-s3cr3t-4444",
    "QPASSWORD-s3cr3t-5555",
    "QTOKEN-s3cr3t-6666",
    "QAPIKEY-s3cr3t-7777",
    "QSECRET-s3cr3t-8888",
    "QSIG-s3cr3t-9999",
    "QKEY-s3cr3t-aaaa",
    "QACCESSTOKEN-s3cr3t-bbbb",
    "QCLIENTSECRET-s3cr3t-cccc",
    "QAMZSIG-s3cr3t-dddd",
    "QSESSION-s3cr3t-eeee",
];

fn secret_query() -> String {
    format!(
        "user=bob&password={}&token={}&api_key={}&secret={}&sig={}&key={}&access_token={}\
         &client_secret={}&X-Amz-Signature={}&session={}",
        SECRETS[4],
        SECRETS[5],
        SECRETS[6],
        SECRETS[7],
        SECRETS[8],
        SECRETS[9],
        SECRETS[10],
        SECRETS[11],
        SECRETS[12],
        SECRETS[13]
    )
}

/// A small server: `/login` answers with `Set-Cookie`; `/call` makes a request to
/// `$UPSTREAM/login?<secret query>` carrying Authorization, Cookie and Proxy-Authorization
/// (a CLIENT span full of secrets) and answers 200.
const SECRET_SERVER: &str = r#"
import http.client, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
S = sys.argv[2].split(",")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/login"):
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Set-Cookie", "sid=%s; HttpOnly" % S[2])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/call"):
            u = os.environ["UPSTREAM"].split(":")
            c = http.client.HTTPConnection(u[0], int(u[1]), timeout=10)
            c.request("GET", "/login?" + sys.argv[3], headers={
                "Authorization": "Bearer " + S[0],
                "Cookie": "sid=" + S[1],
                "Proxy-Authorization": "Basic " + S[3],
            })
            r = c.getresponse(); r.read(); c.close()
            body = b"called\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn secret_server(dir: &tempfile::TempDir, port: u16, upstream: Option<u16>) -> ServerProcess {
    let script = dir.path().join("secret_server.py");
    std::fs::write(&script, SECRET_SERVER).unwrap();
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg(&script)
        .arg(port.to_string())
        .arg(SECRETS.join(","))
        .arg(secret_query());
    if let Some(u) = upstream {
        cmd.env("UPSTREAM", format!("127.0.0.1:{u}"));
    }
    fixtures::spawn_server("secret-python", cmd, port, None)
}

fn grep_secrets(what: &str, text: &str) {
    for s in SECRETS {
        assert!(
            !text.contains(s),
            "secret {s:?} found in {what}:\n{}",
            text.lines()
                .filter(|l| l.contains(s))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn secrets_never_leave_the_host() {
    let _guard = require_root();
    daemon::daemon_bin();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let b = secret_server(&dir, pb, None);
    let a = secret_server(&dir, pa, Some(pb));
    let mut total_spans = 0;
    for printer in ["text", "json", "json_indent"] {
        let rx = OtlpReceiver::start();
        let d = Daemon::builder()
            .open_ports(&[pa, pb])
            .otlp(&rx)
            .env("BEYLA_TRACE_PRINTER", printer)
            .env("BEYLA_LOG_LEVEL", "debug")
            .start();
        std::thread::sleep(settle());
        let mut c = RawConn::connect(pa);
        let r = c.request(
            &Request::get(&format!("/call?{}", secret_query()))
                .header("Authorization", &format!("Bearer {}", SECRETS[0]))
                .header("Cookie", &format!("sid={}; other=1", SECRETS[1]))
                .header("Proxy-Authorization", &format!("Basic {}", SECRETS[3])),
        );
        assert_eq!(r.status, 200);
        let r = c.request(
            &Request::get(&format!("/login?{}", secret_query()))
                .header("Cookie", &format!("sid={}", SECRETS[1])),
        );
        assert_eq!(r.status, 200);
        assert!(
            r.header("set-cookie")
                .is_some_and(|v| v.contains(SECRETS[2])),
            "the fixture sends Set-Cookie"
        );
        // A: SERVER /call, CLIENT → B, SERVER /login; B: SERVER /login (from A's call).
        let spans = rx.wait_for_spans(otlp::any_span, 4, span_timeout());
        rx.assert_quiet(otlp::any_span, 4, quiet());
        let client: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.is_client() && s.pid() == Some(a.pid()))
            .collect();
        assert_eq!(client.len(), 1, "{spans:#?}");
        let url = client[0].attr_str("url.full").unwrap_or("");
        assert!(
            url.contains("user=bob") && url.contains("password=REDACTED"),
            "url.full keeps harmless query values and redacts secrets: {url}"
        );
        let exit = d.stop_ok();
        rx.assert_no_secrets(SECRETS);
        for r in rx.requests() {
            grep_secrets("an OTLP request body", &String::from_utf8_lossy(&r.body));
        }
        assert!(
            !exit.stdout.trim().is_empty(),
            "the {printer} printer printed nothing"
        );
        grep_secrets(&format!("{printer} printer output"), &exit.stdout);
        grep_secrets("the daemon log (debug level)", &exit.stderr);
        total_spans += spans.len();
    }
    drop((a, b));
    eprintln!(
        "[measured] secrets: {} secret values (Authorization, Cookie, Set-Cookie, \
         Proxy-Authorization, 10 sensitive query keys) on SERVER and CLIENT spans; \
         {total_spans} spans over 3 runs (text/json/json_indent printers + OTLP, debug log): \
         0 occurrences in OTLP bodies/headers, printer output or logs",
        SECRETS.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Least privilege

const CAPS: &[&str] = &["bpf", "perfmon", "sys_ptrace", "dac_read_search"];

/// The daemon run as `nobody` through `setpriv` with exactly `caps` as ambient capabilities
/// (and bounding set).
fn as_nobody(caps: &[&str]) -> DaemonBuilder {
    let list = if caps.is_empty() {
        "-all".to_string()
    } else {
        format!(
            "-all,{}",
            caps.iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Daemon::builder()
        .bin("/usr/bin/setpriv")
        .args(&[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={list}"),
            &format!("--ambient-caps={list}"),
            &format!("--bounding-set={list}"),
            "--",
        ])
        .arg(daemon::daemon_bin().to_string_lossy())
}

trait Args {
    fn args(self, a: &[&str]) -> Self;
}
impl Args for DaemonBuilder {
    fn args(mut self, a: &[&str]) -> Self {
        for x in a {
            self = self.arg(*x);
        }
        self
    }
}

/// Waits for a non-waiting daemon to exit; returns its code and stderr, or None after
/// `timeout` (then it is killed).
fn exit_of(mut d: Daemon, timeout: Duration) -> Option<(i32, String)> {
    let t = Instant::now();
    while d.is_running() {
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit = d.stop();
    use std::os::unix::process::ExitStatusExt;
    Some((
        exit.status
            .code()
            .unwrap_or(128 + exit.status.signal().unwrap_or(0)),
        exit.stderr,
    ))
}

fn setpriv_available() {
    assert!(
        PathBuf::from("/usr/bin/setpriv").is_file(),
        "setpriv (util-linux) is needed: run tests/setup.sh"
    );
}

/// Spans from a root-owned server that ran before the daemon (found by the /proc scan: needs
/// reading other users' /proc) and from one started after on `after_port` (found by the
/// kernel at bind). Select exactly these ports: a range would also select the ports this test
/// process probes in `free_port()`, and with it every child through fork.
fn check_instrumentation(
    rx: &OtlpReceiver,
    before: &ServerProcess,
    after_port: u16,
) -> (bool, bool) {
    let after = fixtures::go(after_port);
    std::thread::sleep(settle());
    for srv in [before, &after] {
        let _ = RawConn::connect(srv.port()).request(&Request::get("/hello"));
    }
    // One request each: one span, or none when the process is not instrumented.
    let got = |pid: u32| {
        let some = eventually(scaled(Duration::from_secs(8)), || {
            rx.span_count(otlp::server_of(pid)) >= 1
        });
        let n = rx.span_count(otlp::server_of(pid));
        assert!(n <= 1, "{n} spans for one request to pid {pid}");
        some
    };
    (got(before.pid()), got(after.pid()))
}

#[test]
fn runs_as_nobody_with_exactly_the_documented_ambient_capabilities() {
    let _guard = require_root();
    setpriv_available();
    let rx = OtlpReceiver::start();
    let before = fixtures::python(free_port());
    let after_port = free_port();
    let mut d = as_nobody(CAPS)
        .open_ports(&[before.port(), after_port])
        .otlp(&rx)
        .start();
    let uid = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or("")
        .to_string();
    let (scan, bind) = check_instrumentation(&rx, &before, after_port);
    d.assert_running();
    let exit = d.stop_ok();
    eprintln!(
        "[measured] as nobody ({uid}) with ambient {CAPS:?}: ready, spans from a root-owned \
         server found by the /proc scan: {scan}, from one started later: {bind}"
    );
    assert!(
        uid.contains("65534"),
        "the daemon did not run as nobody: {uid}"
    );
    assert!(scan && bind, "no spans without root:\n{}", exit.stderr);
}

#[test]
fn each_missing_capability_is_refused_with_its_name() {
    let _guard = require_root();
    setpriv_available();
    for missing in CAPS {
        let caps: Vec<&str> = CAPS.iter().copied().filter(|c| c != missing).collect();
        let d = as_nobody(&caps).open_port("8080").no_wait().start();
        let (code, stderr) = exit_of(d, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("without {missing} the daemon did not exit"));
        let name = format!("CAP_{}", missing.to_ascii_uppercase());
        assert_eq!(code, 2, "without {name}: exit {code}\n{stderr}");
        assert!(
            stderr.contains(&name) && stderr.contains("AmbientCapabilities="),
            "without {name} the message does not name it:\n{stderr}"
        );
        let others: Vec<String> = caps
            .iter()
            .map(|c| format!("CAP_{} (", c.to_ascii_uppercase()))
            .collect();
        for o in &others {
            assert!(
                !stderr.contains(o.as_str()),
                "without {name} the message also blames {o}:\n{stderr}"
            );
        }
    }
    // No capability at all: every one is named.
    let d = as_nobody(&[]).open_port("8080").no_wait().start();
    let (code, stderr) = exit_of(d, Duration::from_secs(10)).expect("exits");
    assert_eq!(code, 2);
    for c in CAPS {
        assert!(stderr.contains(&format!("CAP_{}", c.to_ascii_uppercase())));
    }
}

/// Which of the documented capabilities this kernel really needs: each one dropped in turn with
/// `BEYLA_ENFORCE_SYS_CAPS=false`. Every one must be needed for something (loading, or tracing
/// a process of another user found at start-up), i.e. the documented set is minimal.
#[test]
fn minimal_capability_set_by_experiment() {
    let _guard = require_root();
    setpriv_available();
    let before = fixtures::python(free_port());
    let mut report = Vec::new();
    let mut unneeded = Vec::new();
    for missing in CAPS {
        let caps: Vec<&str> = CAPS.iter().copied().filter(|c| c != missing).collect();
        let rx = OtlpReceiver::start();
        let after_port = free_port();
        let mut d = as_nobody(&caps)
            .open_ports(&[before.port(), after_port])
            .otlp(&rx)
            .env("BEYLA_ENFORCE_SYS_CAPS", "false")
            .no_wait()
            .start();
        let name = format!("CAP_{}", missing.to_ascii_uppercase());
        let t = Instant::now();
        while d.is_running() && !d.logs().contains(daemon::READY_MARKER) {
            assert!(
                t.elapsed() < daemon::ready_timeout(),
                "without {name} the daemon neither got ready nor exited:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its own diagnosis names the missing capability (BEYLA_ENFORCE_SYS_CAPS=false turns
        // the refusal into a warning).
        assert!(
            d.logs()
                .contains(&format!("beyla-rs is missing a capability: {name} (")),
            "without {name} the daemon's warning does not name it:\n{}",
            d.logs()
        );
        // A capability counts as needed only for the reasons it is documented for: the kernel
        // refuses to load (EPERM), or the start-up scan cannot see another user's process
        // while the daemon otherwise works. Any other failure fails the test.
        let outcome = if d.logs().contains(daemon::READY_MARKER) {
            let (scan, bind) = check_instrumentation(&rx, &before, after_port);
            if scan && bind {
                unneeded.push(name.clone());
            } else {
                assert!(
                    bind && !scan && d.logs().contains("ready: 0 process(es) instrumented"),
                    "without {name}: scan-found server traced: {scan}, later server traced: \
                     {bind}; expected only the start-up scan to miss:\n{}",
                    d.logs()
                );
            }
            format!("loads; scan-found server traced: {scan}; later server traced: {bind}")
        } else {
            let (code, stderr) = exit_of(d, daemon::ready_timeout()).unwrap_or_else(|| {
                panic!("without {name} the daemon stopped logging, not exiting")
            });
            assert!(
                code != 0 && stderr.contains("Operation not permitted (os error 1)"),
                "without {name}: exit {code}, expected a load refused with EPERM:\n{stderr}"
            );
            let err = stderr
                .lines()
                .find(|l| l.contains("ERROR"))
                .unwrap_or_default()
                .to_owned();
            format!("fails (exit {code}, EPERM): {err}")
        };
        report.push(format!("without {name}: {outcome}"));
    }
    eprintln!(
        "[measured] capability experiment:\n  {}",
        report.join("\n  ")
    );
    assert!(
        unneeded.is_empty(),
        "the documented capability set is not minimal on this kernel: everything works \
         without {unneeded:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Exposure

/// Local addresses of the TCP sockets `pid` listens on.
fn listening_addrs(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(l) = std::fs::read_link(e.path()) {
                let l = l.to_string_lossy().into_owned();
                if let Some(i) = l.strip_prefix("socket:[").and_then(|x| x.strip_suffix(']')) {
                    inodes.push(i.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for l in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let c: Vec<&str> = l.split_whitespace().collect();
            if c.len() > 9 && c[3] == "0A" && inodes.iter().any(|i| i == c[9]) {
                out.push(c[1].to_string());
            }
        }
    }
    out
}

fn is_loopback_hex(addr: &str) -> bool {
    let ip = addr.split(':').next().unwrap_or("");
    // IPv4 127.x.x.x is stored little-endian: last byte first → ends with "7F".
    (ip.len() == 8 && ip.ends_with("7F")) || ip == "00000000000000000000000001000000"
}

#[test]
fn maps_not_pinned_or_readable_by_others_and_endpoints_on_localhost() {
    let _guard = require_root();
    setpriv_available();
    let rx = OtlpReceiver::start();
    let srv = fixtures::python(free_port());
    let _bpffs = BpfFs::ensure();
    let pinned_before = bpffs_entries();

    // Default configuration: no listening socket at all.
    let d = Daemon::start(&[srv.port()], &rx);
    let listen_default = listening_addrs(d.pid());
    let conns_map = daemon_map(d.pid(), "CONNS");
    // Positive control for the check below: root reads the map by id.
    let entries = map_entries(conns_map);
    // Another user cannot reach the maps by id (needs CAP_SYS_ADMIN), and nothing is pinned.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "bpftool",
            "map",
            "dump",
            "id",
            &conns_map.to_string(),
        ])
        .output()
        .unwrap();
    let pinned = bpffs_entries();
    // Positive control for "nothing pinned": a pin shows in the listing.
    let pin = format!("{}/beyla-rs-test-pin-{}", BpfFs::PATH, std::process::id());
    pin_map(conns_map, &pin);
    let with_pin = bpffs_entries();
    std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("unpin {pin}: {e}"));
    assert!(with_pin.contains(&pin), "{pin} not listed: {with_pin:?}");
    d.stop_ok();
    assert!(
        listen_default.is_empty(),
        "the daemon listens by default: {listen_default:?}"
    );
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("Operation not permitted"),
        "an unprivileged user's dump of CONNS (root read {entries} entries) must fail with \
         EPERM: {} / {refused}",
        out.status
    );
    assert_eq!(pinned, pinned_before, "the daemon pinned BPF objects");

    // With the Prometheus endpoint on: bound to loopback unless told otherwise. Its port is
    // selected too: the daemon must not instrument itself (its scrapes and exports would
    // become spans of their own).
    let prom = free_port();
    rx.clear();
    let d = Daemon::builder()
        .open_ports(&[srv.port(), prom])
        .otlp(&rx)
        .env("BEYLA_PROMETHEUS_PORT", prom.to_string())
        .start();
    let dpid = d.pid();
    let listen_prom = listening_addrs(dpid);
    for _ in 0..3 {
        let r = RawConn::connect(prom).request(&Request::get("/metrics"));
        assert_eq!(r.status, 200);
    }
    RawConn::connect(srv.port()).request(&Request::get("/hello"));
    rx.wait_for_spans(otlp::server_of(srv.pid()), 1, span_timeout());
    std::thread::sleep(quiet());
    let exit = d.stop_ok();
    assert_eq!(
        rx.span_count(otlp::of_pid(dpid)),
        0,
        "the daemon traced itself: {:#?}",
        rx.spans_matching(otlp::of_pid(dpid))
    );
    assert!(
        !exit.stderr.contains(&format!("instrumenting pid {dpid} ")),
        "the daemon instrumented itself:\n{}",
        exit.stderr
    );
    eprintln!(
        "[measured] exposure: listening sockets by default {listen_default:?}; with \
         BEYLA_PROMETHEUS_PORT {listen_prom:?} (hex /proc/net/tcp form); {pinned:?} \
         in bpf filesystems (as before it started); unprivileged `bpftool map dump` refused: {}",
        refused.trim()
    );
    assert!(!listen_prom.is_empty(), "no Prometheus listener");
    assert!(
        listen_prom.iter().all(|a| is_loopback_hex(a)),
        "Prometheus listens beyond localhost: {listen_prom:?}"
    );
}

#[test]
fn instrumented_processes_are_not_traced_or_altered() {
    let _guard = require_root();
    let rx = OtlpReceiver::start();
    let srv = fixtures::python(free_port());
    let body: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let echo = |port| RawConn::connect(port).request(&Request::post("/echo", body.clone()));
    let plain = echo(srv.port());
    let mut d = Daemon::start(&[srv.port()], &rx);
    std::thread::sleep(settle());
    let traced = echo(srv.port());
    let tracer = std::fs::read_to_string(format!("/proc/{}/status", srv.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("TracerPid:"))
        .unwrap_or("")
        .to_string();
    // The daemon holds no /proc/<pid>/mem of anything.
    let mem_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.ends_with("/mem"))
        .collect();
    rx.wait_for_spans(otlp::server_of(srv.pid()), 1, span_timeout());
    d.assert_running();
    d.stop_ok();
    assert_eq!(plain.status, 200);
    assert_eq!(
        (traced.status, &traced.body),
        (plain.status, &plain.body),
        "the response changed under instrumentation"
    );
    assert_eq!(traced.body, body);
    assert_eq!(tracer.split_whitespace().nth(1), Some("0"), "{tracer}");
    assert!(mem_fds.is_empty(), "{mem_fds:?}");
}
