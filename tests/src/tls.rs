//! TLS fixtures for the HTTPS tests (`tests/https.rs`): a test certificate authority, HTTPS
//! servers (nginx `listen … ssl` with an optional `proxy_pass https://` upstream, Python
//! `http.server` + `ssl`, Node `https`, Go `crypto/tls`, grpcio over TLS), HTTPS clients
//! (Python urllib/http.client, Node `https`, Go `net/http`), a TLS echo server that speaks no
//! HTTP with probes that abort handshakes, and the HTTPS variant of the span contract.
//!
//! Which TLS library each fixture uses (what the daemon has to hook):
//! - nginx, Python (`_ssl`), curl: the system's shared `libssl.so.3`;
//! - Node: the OpenSSL linked statically into its executable;
//! - Go: `crypto/tls`;
//! - grpcio: the BoringSSL built into its C core (`cygrpc*.so`, symbols not exported), which
//!   encrypts into memory buffers and writes the ciphertext itself.
//!
//! Every server certificate names `localhost` and `127.0.0.1` and is signed by the test CA of
//! [`TestCa`]; clients trust that CA explicitly (curl `--cacert`, Python `cafile=`, Node
//! `ca:`, Go `RootCAs`, grpcio `root_certificates=`), and fixture servers calling an https
//! upstream trust it through `SSL_CERT_FILE` (Python, Go) and `NODE_EXTRA_CA_CERTS` (Node).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::daemon::OutputBuf;
use crate::expect;
use crate::fixtures::{self, Nginx, NginxOpts, ServerKind, ServerOpts, ServerProcess, StdinChild};
use crate::otlp::ReceivedSpan;

/// `https://127.0.0.1:<port><path>` (the certificates name 127.0.0.1).
pub fn https_url(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

/// The `openssl` command-line tool. Panics when missing.
pub fn openssl_bin() -> PathBuf {
    fixtures::which("openssl").unwrap_or_else(|| {
        panic!("`openssl` not found on PATH: run tests/setup.sh (installs openssl)")
    })
}

/// A throw-away certificate authority and one server certificate it signed (ECDSA P-256,
/// SHA-256; subjectAltName `DNS:localhost, IP:127.0.0.1`; server and client auth), made with
/// the `openssl` CLI in a temporary directory that is removed on drop.
pub struct TestCa {
    dir: tempfile::TempDir,
}

const CA_CNF: &str = "[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = beyla-rs test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

const SERVER_CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_srv]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
";

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("beyla-tls-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(d.join("server.cnf"), SERVER_CNF).unwrap();
        const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256";
        openssl(
            d,
            &format!("req -x509 -new {EC} -days 3650 -config ca.cnf -keyout ca.key -out ca.crt"),
        );
        openssl(
            d,
            &format!("req -new {EC} -config server.cnf -keyout server.key -out server.csr"),
        );
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ ((std::process::id() as u64) << 40);
        openssl(
            d,
            &format!(
                "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 0x{serial:016x} \
                 -sha256 -days 825 -extfile server.cnf -extensions v3_srv -out server.crt"
            ),
        );
        TestCa { dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The CA certificate (PEM): what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    /// The server certificate (PEM), signed by the CA.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    /// The server certificate's private key (PEM, PKCS#8, unencrypted).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    /// [`Self::ca_cert`] as a `String` (for command lines).
    pub fn ca_str(&self) -> String {
        self.ca_cert().display().to_string()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Runs `openssl <args>` (split at whitespace) in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new(openssl_bin())
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where process `pid` gets OpenSSL from: the path of the shared `libssl` it maps, or
/// `"none mapped (static or other TLS library)"` (Node from nodesource links OpenSSL into its
/// executable; Debian's `nodejs` uses the shared libssl; Go and grpcio use their own).
pub fn libssl_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libssl.so"))
        })
        .map(str::to_string)
        .unwrap_or_else(|| "none mapped (static or other TLS library)".to_string())
}

/// Environment that makes a fixture process trust the test CA when it calls an https
/// upstream: `SSL_CERT_FILE` (OpenSSL's default verify paths: Python's default context,
/// Go's system roots) and `NODE_EXTRA_CA_CERTS`.
pub fn trust_env(ca: &TestCa) -> [(String, String); 2] {
    [
        ("SSL_CERT_FILE".to_string(), ca.ca_str()),
        ("NODE_EXTRA_CA_CERTS".to_string(), ca.ca_str()),
    ]
}

/// Starts a server of `kind` serving HTTPS on `port` with the CA's server certificate (same
/// routes as the plain fixtures, HTTP/1.1 only). `opts.upstream` may be an `https://` URL: the
/// server trusts the test CA for it. The Rust hyper fixture has no TLS: panics for it.
pub fn start_https(kind: ServerKind, port: u16, ca: &TestCa, opts: &ServerOpts) -> ServerProcess {
    let mut opts = opts.clone();
    let (cert, key) = (
        ca.cert().display().to_string(),
        ca.key().display().to_string(),
    );
    match kind {
        ServerKind::Python | ServerKind::Node => {
            opts = opts.arg("--tls").arg(cert).arg(key);
        }
        ServerKind::Go => {
            opts = opts.arg("-tls-cert").arg(cert).arg("-tls-key").arg(key);
        }
        ServerKind::Rust => panic!("the Rust hyper fixture does not serve TLS"),
    }
    for (k, v) in trust_env(ca) {
        opts = opts.env(k, v);
    }
    fixtures::start(kind, port, &opts)
}

/// Python `http.server` over TLS (`servers/http_server.py --tls`).
pub fn python_https(port: u16, ca: &TestCa) -> ServerProcess {
    start_https(ServerKind::Python, port, ca, &ServerOpts::default())
}

/// `https://127.0.0.1:<port>` upstream for [`ServerOpts::upstream`].
pub fn https_upstream(port: u16) -> String {
    https_url(port, "")
}

/// nginx over TLS.
#[derive(Clone, Debug, Default)]
pub struct NginxTlsOpts {
    /// HTTPS upstream for `/proxy/` and `/echo` (`proxy_pass https://`, keep-alive pool of 8,
    /// the upstream's certificate verified against the test CA under the name `localhost`).
    pub upstream_port: Option<u16>,
    /// Worker processes (default 2).
    pub workers: Option<u32>,
    /// A second, plaintext `listen` on this port in the same `server` (same routes).
    pub plain_port: Option<u16>,
}

/// [`fixtures::nginx_conf`] with `listen 127.0.0.1:<port> ssl` and the CA's server
/// certificate, and, with an upstream, `proxy_pass https://…` verifying it.
pub fn nginx_tls_conf(prefix: &Path, port: u16, ca: &TestCa, opts: &NginxTlsOpts) -> String {
    let plain = NginxOpts {
        upstream_port: opts.upstream_port,
        workers: opts.workers,
    };
    let conf = fixtures::nginx_conf(prefix, port, &plain);
    let listen = format!("    listen 127.0.0.1:{port};\n");
    assert_eq!(
        conf.matches(&listen).count(),
        1,
        "unexpected nginx.conf:\n{conf}"
    );
    let mut tls = format!(
        "    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    \
         ssl_certificate_key {};\n",
        ca.cert().display(),
        ca.key().display()
    );
    if let Some(p) = opts.plain_port {
        tls += &format!("    listen 127.0.0.1:{p};\n");
    }
    let mut conf = conf;
    if opts.upstream_port.is_some() {
        tls += &format!(
            "    proxy_ssl_trusted_certificate {};\n    proxy_ssl_verify on;\n    \
             proxy_ssl_verify_depth 2;\n    proxy_ssl_name localhost;\n    \
             proxy_ssl_server_name on;\n",
            ca.ca_cert().display()
        );
        let plain_pass = "proxy_pass http://backend/";
        assert_eq!(
            conf.matches(plain_pass).count(),
            2,
            "unexpected nginx.conf:\n{conf}"
        );
        conf = conf.replace(plain_pass, "proxy_pass https://backend/");
    }
    conf.replace(&listen, &tls)
}

/// nginx (master + workers) serving HTTPS on `port` (see [`nginx_tls_conf`]).
pub fn nginx_https(port: u16, ca: &TestCa, opts: &NginxTlsOpts) -> Nginx {
    Nginx::start_with(port, opts.workers.unwrap_or(2), |prefix| {
        nginx_tls_conf(prefix, port, ca, opts)
    })
}

fn grpcio_script() -> PathBuf {
    crate::tests_dir().join("servers/grpc/grpcio_fixture.py")
}

/// The Python whose grpcio does TLS through the system's libssl: Debian's, with Debian's
/// `python3-grpcio` (PyPI's grpcio wheels carry their own stripped BoringSSL, which exports no
/// symbol to probe; tests/setup.sh installs the Debian packages).
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// grpcio (C core) gRPC server over TLS (`servers/grpc/grpcio_fixture.py server --tls`).
pub fn grpcio_tls_server(port: u16, ca: &TestCa) -> ServerProcess {
    let mut cmd = Command::new(DEBIAN_PYTHON);
    cmd.arg("-u")
        .arg(grpcio_script())
        .args(["server", "--port", &port.to_string(), "--tls"]);
    cmd.arg(ca.cert()).arg(ca.key());
    fixtures::spawn_server("grpcio TLS", cmd, port, None)
}

fn tls_probe_script() -> PathBuf {
    crate::tests_dir().join("servers/tls_probe.py")
}

/// A TLS line-echo server that speaks no HTTP (`servers/tls_probe.py echo-server`).
pub fn tls_echo_server(port: u16, ca: &TestCa) -> ServerProcess {
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg("-u")
        .arg(tls_probe_script())
        .args(["echo-server", "--port", &port.to_string(), "--tls"])
        .arg(ca.cert())
        .arg(ca.key());
    fixtures::spawn_server("tls echo", cmd, port, None)
}

/// Runs `servers/tls_probe.py <args>` to completion (a client subcommand: `line`,
/// `half-hello`, `handshake-only`) and returns its JSON line.
pub fn tls_probe(args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(fixtures::python_exe());
    cmd.arg("-u").arg(tls_probe_script()).args(args);
    run_json(&format!("tls_probe.py {}", args.join(" ")), cmd)
}

/// Which HTTPS client fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// `servers/https_client.py`: urllib (new connections), http.client (keep-alive).
    Python,
    /// `servers/https_client.js`: Node `https` (`agent: false`; a keep-alive agent).
    Node,
    /// `goserver client` (`servers/go/main.go`): `net/http` over `crypto/tls`.
    Go,
}

impl ClientKind {
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Python => "python",
            ClientKind::Node => "node",
            ClientKind::Go => "go",
        }
    }
}

/// What a client is to do: calls `"METHOD:PATH"` (POST and PUT send the 12-byte body
/// [`CLIENT_BODY`]) on new connections, then on one keep-alive connection.
#[derive(Clone, Debug, Default)]
pub struct ClientPlan {
    pub new: Vec<String>,
    pub keepalive: Vec<String>,
}

/// The body the HTTPS clients send with POST and PUT.
pub const CLIENT_BODY: &str = "twelve bytes";

/// What a client fixture reported: `(status, response body length)` per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReport {
    pub new: Vec<(u16, usize)>,
    pub keepalive: Vec<(u16, usize)>,
    /// Connections the keep-alive calls opened (1: all on one).
    pub keepalive_connections: u64,
}

impl ClientReport {
    fn parse(v: &serde_json::Value) -> ClientReport {
        let pairs = |k: &str| -> Vec<(u16, usize)> {
            v[k].as_array()
                .unwrap_or_else(|| panic!("{k} missing in client output {v}"))
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().expect("status") as u16,
                        p[1].as_u64().expect("length") as usize,
                    )
                })
                .collect()
        };
        ClientReport {
            new: pairs("new"),
            keepalive: pairs("keepalive"),
            keepalive_connections: v["keepalive_connections"]
                .as_u64()
                .unwrap_or_else(|| panic!("keepalive_connections missing in {v}")),
        }
    }
}

fn client_command(
    kind: ClientKind,
    ca: &TestCa,
    port: u16,
    plan: &ClientPlan,
    listen: Option<u16>,
) -> Command {
    let mut cmd = match kind {
        ClientKind::Python => {
            let mut c = Command::new(fixtures::python_exe());
            c.arg("-u")
                .arg(crate::tests_dir().join("servers/https_client.py"));
            c
        }
        ClientKind::Node => {
            let node = fixtures::which("node").unwrap_or_else(|| {
                panic!("`node` not found on PATH: run tests/setup.sh (installs nodejs)")
            });
            let mut c = Command::new(node);
            c.arg(crate::tests_dir().join("servers/https_client.js"));
            c
        }
        ClientKind::Go => {
            let mut c = Command::new(fixtures::go_server_bin());
            c.arg("client");
            c
        }
    };
    // Go's flag package takes `--name value` as well.
    cmd.args(["--base", &https_url(port, ""), "--ca", &ca.ca_str()]);
    if let Some(l) = listen {
        cmd.args(["--listen", &l.to_string(), "--wait"]);
    }
    if !plan.new.is_empty() {
        cmd.args(["--new", &plan.new.join(",")]);
    }
    if !plan.keepalive.is_empty() {
        cmd.args(["--keepalive", &plan.keepalive.join(",")]);
    }
    cmd
}

use crate::fixtures::clean_env;
pub use crate::fixtures::client_timeout;

fn run_json(what: &str, mut cmd: Command) -> serde_json::Value {
    clean_env(&mut cmd);
    crate::die_with_parent(&mut cmd, libc::SIGKILL);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    last_json_line(&stdout).unwrap_or_else(|| panic!("no JSON line from {what}: {stdout:?}"))
}

fn last_json_line(text: &str) -> Option<serde_json::Value> {
    text.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
}

/// Runs an HTTPS client of `kind` against `https://127.0.0.1:<port>` to completion (not
/// selected by any daemon: it binds no listener) and returns what it reported.
pub fn run_https_client(
    kind: ClientKind,
    ca: &TestCa,
    port: u16,
    plan: &ClientPlan,
) -> ClientReport {
    let cmd = client_command(kind, ca, port, plan, None);
    ClientReport::parse(&run_json(&format!("{} HTTPS client", kind.name()), cmd))
}

/// A client process that binds a listener on a port (so that a daemon selecting that port
/// instruments it) and then waits: start it before the daemon, start the daemon, then
/// [`HeldClient::go`]. It exits when [`HeldClient::finish`] closes its stdin (or on drop).
pub struct HeldClient {
    proc: StdinChild,
    name: String,
    stdout: Arc<OutputBuf>,
    stderr: Arc<OutputBuf>,
    result: Option<serde_json::Value>,
}

impl HeldClient {
    /// Spawns `cmd` (which must bind 127.0.0.1:`listen`, then wait for a line on stdin, do
    /// its work, print one JSON line, and exit at stdin EOF); returns once `listen` accepts.
    pub fn spawn(name: &str, cmd: Command, listen: u16) -> HeldClient {
        let mut proc = StdinChild::spawn(name, cmd);
        let stdout = Arc::new(OutputBuf::default());
        let stderr = Arc::new(OutputBuf::default());
        stdout.capture(proc.child.stdout.take().unwrap(), None);
        stderr.capture(proc.child.stderr.take().unwrap(), None);
        let mut c = HeldClient {
            proc,
            name: name.to_string(),
            stdout,
            stderr,
            result: None,
        };
        if let Err(why) = c.proc.wait_listening(listen) {
            panic!("{name} {why}:\n{}", c.output());
        }
        c
    }

    /// An HTTPS client of `kind` (see [`run_https_client`]) held on `listen`.
    pub fn https(
        kind: ClientKind,
        ca: &TestCa,
        port: u16,
        plan: &ClientPlan,
        listen: u16,
    ) -> HeldClient {
        let cmd = client_command(kind, ca, port, plan, Some(listen));
        HeldClient::spawn(&format!("{} HTTPS client", kind.name()), cmd, listen)
    }

    /// The grpcio client over TLS (`grpcio_fixture.py client --ca … --wait`) held on
    /// `listen`, to run `scenario n` against 127.0.0.1:`port`.
    pub fn grpcio_tls(ca: &TestCa, port: u16, listen: u16, scenario: &str, n: usize) -> HeldClient {
        let mut cmd = Command::new(DEBIAN_PYTHON);
        cmd.arg("-u").arg(grpcio_script()).args([
            "client",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--listen",
            &listen.to_string(),
            "--ca",
            &ca.ca_str(),
            "--wait",
            scenario,
            &n.to_string(),
        ]);
        HeldClient::spawn("grpcio TLS client", cmd, listen)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Captured stdout and stderr.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            crate::daemon::tail(&self.stderr.text(), 4000)
        )
    }

    /// Lets the client do its work; returns its JSON line (the process stays alive).
    pub fn go(&mut self) -> serde_json::Value {
        let stdin = self.proc.stdin.as_mut().expect("go() twice");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot write to stdin: {e}", self.name));
        let child = &mut self.proc.child;
        let done = self.stdout.wait_for("}\n", client_timeout(), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        let v = last_json_line(&self.stdout.text());
        match (done, v) {
            (true, Some(v)) => {
                self.result = Some(v.clone());
                v
            }
            _ => panic!(
                "{} gave no result within {:?}:\n{}",
                self.name,
                client_timeout(),
                self.output()
            ),
        }
    }

    /// [`Self::go`] for an HTTPS client: its report.
    pub fn go_report(&mut self) -> ClientReport {
        ClientReport::parse(&self.go())
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) {
        match self.proc.close_and_wait(fixtures::start_timeout()) {
            Ok(st) => assert!(
                st.success(),
                "{} exited with {st}:\n{}",
                self.name,
                self.output()
            ),
            Err(why) => panic!("{} {why}:\n{}", self.name, self.output()),
        }
    }
}

impl Drop for HeldClient {
    fn drop(&mut self) {
        self.proc.stop();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.output());
        }
    }
}

// The HTTPS span contract: the plain contract of `expect`, with `https` where it says `http`.

/// [`expect::server_span_violations`] for a span of an HTTPS connection: `url.scheme` is
/// `https`; everything else as for plaintext.
pub fn https_server_span_violations(s: &ReceivedSpan, server_port: u16) -> Vec<String> {
    expect::scheme_server_span_violations(s, server_port, "https")
}

/// [`expect::client_span_violations`] for a call over TLS: `url.full` starts with
/// `https://`, and a `url.scheme`, if the span has one, is `https`.
pub fn https_client_span_violations(s: &ReceivedSpan, upstream_port: u16) -> Vec<String> {
    let mut v = expect::scheme_client_span_violations(s, upstream_port, "https");
    if s.attr_str("url.scheme").is_some_and(|x| x != "https") {
        v.push(format!("url.scheme is not \"https\" in {}", s.summary()));
    }
    v
}

/// Violations of the HTTPS SERVER span and resource contracts by `spans`; `pid`: `None`
/// takes each span's own (nginx workers).
pub fn https_server_spans_violations(
    spans: &[ReceivedSpan],
    port: u16,
    pid: Option<u32>,
    exe: &str,
) -> Vec<String> {
    spans_violations(spans, pid, exe, |s| https_server_span_violations(s, port))
}

/// Violations of the HTTPS CLIENT span and resource contracts by `spans` (see
/// [`https_server_spans_violations`] for `pid`).
pub fn https_client_spans_violations(
    spans: &[ReceivedSpan],
    upstream_port: u16,
    pid: Option<u32>,
    exe: &str,
) -> Vec<String> {
    spans_violations(spans, pid, exe, |s| {
        https_client_span_violations(s, upstream_port)
    })
}

/// `span` violations of each span, then its resource's.
fn spans_violations(
    spans: &[ReceivedSpan],
    pid: Option<u32>,
    exe: &str,
    span: impl Fn(&ReceivedSpan) -> Vec<String>,
) -> Vec<String> {
    let mut v = Vec::new();
    for s in spans {
        v.extend(span(s));
        let pid = pid.or(s.pid()).unwrap_or(0);
        v.extend(expect::resource_violations(s, pid, exe));
    }
    v
}

/// Panics listing every violation (of several checks, collected first, so that one report
/// shows them all).
pub fn assert_no_violations(violations: Vec<String>, what: &str) {
    if !violations.is_empty() {
        let n = violations.len();
        let shown: Vec<String> = violations.into_iter().take(60).collect();
        panic!("{n} {what} violation(s):\n  {}", shown.join("\n  "));
    }
}

/// HTTPS SERVER span and resource contract for every span; reports all violations at once.
pub fn check_https_server_spans(spans: &[ReceivedSpan], port: u16, pid: Option<u32>, exe: &str) {
    assert_no_violations(
        https_server_spans_violations(spans, port, pid, exe),
        "HTTPS SERVER span contract",
    );
}

/// HTTPS CLIENT span and resource contract for every span; reports all violations at once.
pub fn check_https_client_spans(
    spans: &[ReceivedSpan],
    upstream_port: u16,
    pid: Option<u32>,
    exe: &str,
) {
    assert_no_violations(
        https_client_spans_violations(spans, upstream_port, pid, exe),
        "HTTPS CLIENT span contract",
    );
}

/// Self-tests of the fixtures (no daemon, no root): every server answers HTTPS with the test
/// CA trusted, every client reports what it got, the probes do what they say.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::free_port;
    use crate::rawhttp;

    fn plan(new: &[&str], keepalive: &[&str]) -> ClientPlan {
        ClientPlan {
            new: new.iter().map(|s| s.to_string()).collect(),
            keepalive: keepalive.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ca_signs_a_server_certificate_for_localhost_and_127_0_0_1() {
        let ca = TestCa::new();
        let out = Command::new(openssl_bin())
            .args(["verify", "-CAfile"])
            .arg(ca.ca_cert())
            .args(["-purpose", "sslserver", "-verify_ip", "127.0.0.1"])
            .arg(ca.cert())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = Command::new(openssl_bin())
            .args(["verify", "-CAfile"])
            .arg(ca.ca_cert())
            .args(["-verify_hostname", "localhost"])
            .arg(ca.cert())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // A second CA is another CA: its clients do not trust the first one's certificate.
        let other = TestCa::new();
        let out = Command::new(openssl_bin())
            .args(["verify", "-CAfile"])
            .arg(other.ca_cert())
            .arg(ca.cert())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
    }

    /// The plan the HTTPS app tests use (new connections + keep-alive, via /proxy/ to an
    /// HTTPS upstream), against a server of `server` driven by a client of `client`.
    fn app_roundtrip(server: ServerKind, client: ClientKind) {
        let ca = TestCa::new();
        let up = python_https(free_port(), &ca);
        let port = free_port();
        let srv = start_https(
            server,
            port,
            &ca,
            &ServerOpts::default().upstream(https_upstream(up.port())),
        );
        let p = plan(
            &[
                "GET:/hello",
                "GET:/status?respond=404",
                "POST:/echo",
                "GET:/proxy/status?respond=201",
            ],
            &[
                "GET:/hello",
                "PUT:/proxy/status?respond=404",
                "POST:/proxy/echo",
                "GET:/nope",
            ],
        );
        let r = run_https_client(client, &ca, port, &p);
        assert_eq!(
            r,
            ClientReport {
                new: vec![(200, 6), (404, 11), (200, 12), (201, 11)],
                keepalive: vec![(200, 6), (404, 11), (200, 12), (404, 10)],
                keepalive_connections: 1,
            },
            "{} server, {} client:\n{}",
            server.name(),
            client.name(),
            srv.output()
        );
        // The same client held on a listener, released later.
        let listen = free_port();
        let mut held = HeldClient::https(client, &ca, port, &plan(&["GET:/hello"], &[]), listen);
        let r = held.go_report();
        assert_eq!(r.new, vec![(200, 6)]);
        held.finish();
        // curl trusts the CA too, and the plain-HTTP client cannot talk to it.
        let url = https_url(port, "/hello");
        let r = rawhttp::curl_many("GET", &[url.clone(), url], &["--cacert", &ca.ca_str()]);
        assert_eq!(r.statuses, vec![200, 200], "{r:?}");
        assert_eq!(r.connects, vec![1, 0], "{r:?}");
        let r = rawhttp::curl_many("GET", &[https_url(port, "/hello")], &[]);
        assert_eq!(
            r.statuses,
            vec![0],
            "curl without the CA must refuse: {r:?}"
        );
    }

    #[test]
    fn python_https_server_and_client() {
        app_roundtrip(ServerKind::Python, ClientKind::Python);
    }

    #[test]
    fn node_https_server_and_client() {
        app_roundtrip(ServerKind::Node, ClientKind::Node);
    }

    #[test]
    fn go_https_server_and_client() {
        app_roundtrip(ServerKind::Go, ClientKind::Go);
    }

    #[test]
    fn nginx_https_with_an_https_upstream() {
        let ca = TestCa::new();
        let up = python_https(free_port(), &ca);
        let plain_port = free_port();
        let ng = nginx_https(
            free_port(),
            &ca,
            &NginxTlsOpts {
                upstream_port: Some(up.port()),
                workers: Some(2),
                plain_port: Some(plain_port),
            },
        );
        assert_eq!(ng.worker_pids().len(), 2);
        let conf = std::fs::read_to_string(ng.prefix().join("nginx.conf")).unwrap();
        assert!(conf.contains(&format!("listen 127.0.0.1:{} ssl;", ng.port())));
        assert_eq!(conf.matches("proxy_pass https://backend/").count(), 2);
        let u = |p: &str| https_url(ng.port(), p);
        let r = rawhttp::curl_many(
            "GET",
            &[
                u("/hello"),
                u("/proxy/status?respond=404"),
                u("/nope"),
                u("/proxy/hello"),
            ],
            &["--cacert", &ca.ca_str()],
        );
        assert_eq!(
            r.statuses,
            vec![200, 404, 404, 200],
            "{r:?}\n{}",
            ng.error_log()
        );
        assert_eq!(r.connects, vec![1, 0, 0, 0], "{r:?}");
        let r = run_https_client(
            ClientKind::Python,
            &ca,
            ng.port(),
            &plan(&["POST:/proxy/echo", "GET:/status?respond=503"], &[]),
        );
        assert_eq!(r.new, vec![(200, 12), (503, 11)], "{}", ng.error_log());
        // The plaintext listener of the same server.
        let r = rawhttp::RawConn::connect(plain_port).request(&rawhttp::Request::get("/hello"));
        assert_eq!(r.status, 200);
        // Plain nginx is unchanged: no `ssl` in its listen line.
        let plain = fixtures::nginx_conf(ng.prefix(), 1234, &NginxOpts::default());
        assert!(!plain.contains("ssl"));
    }

    #[test]
    fn grpcio_over_tls() {
        let ca = TestCa::new();
        let port = free_port();
        let _srv = grpcio_tls_server(port, &ca);
        let listen = free_port();
        let mut c = HeldClient::grpcio_tls(&ca, port, listen, "unary", 3);
        let v = c.go();
        assert_eq!(v["ok"], 3, "{v}");
        c.finish();
    }

    #[test]
    fn tls_probes_against_echo_and_https_servers() {
        let ca = TestCa::new();
        let mut echo = tls_echo_server(free_port(), &ca);
        let mut https = python_https(free_port(), &ca);
        let ep = echo.port().to_string();
        let v = tls_probe(&[
            "line",
            "--port",
            &ep,
            "--ca",
            &ca.ca_str(),
            "--text",
            "PING x",
        ]);
        assert_eq!(v["echo"], "echo: PING x");
        for port in [echo.port(), https.port()] {
            let p = port.to_string();
            let v = tls_probe(&["half-hello", "--port", &p, "--bytes", "10"]);
            assert_eq!(v["sent"], 10);
            assert!(v["hello_len"].as_u64().unwrap() > 100, "{v}");
            let v = tls_probe(&["handshake-only", "--port", &p, "--ca", &ca.ca_str()]);
            assert!(v["version"].as_str().unwrap().starts_with("TLSv1"), "{v}");
        }
        assert!(echo.is_running() && https.is_running());
        let r = run_https_client(
            ClientKind::Python,
            &ca,
            https.port(),
            &plan(&["GET:/hello"], &[]),
        );
        assert_eq!(r.new, vec![(200, 6)], "{}", https.output());
        let v = tls_probe(&[
            "line",
            "--port",
            &ep,
            "--ca",
            &ca.ca_str(),
            "--text",
            "again",
        ]);
        assert_eq!(v["echo"], "echo: again", "{}", echo.output());
    }
}
