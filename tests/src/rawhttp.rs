//! A raw-socket HTTP/1.x client for edge cases no normal client produces on demand, and a
//! `curl` wrapper.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Default socket read timeout.
pub fn io_timeout() -> Duration {
    crate::scaled(Duration::from_secs(15))
}

#[derive(Clone, Debug)]
pub enum Body {
    None,
    /// Sent with `Content-Length`.
    Fixed(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`, one chunk per element.
    Chunked(Vec<Vec<u8>>),
}

impl Body {
    /// Payload length (decoded size for chunked bodies).
    pub fn len(&self) -> usize {
        match self {
            Body::None => 0,
            Body::Fixed(b) => b.len(),
            Body::Chunked(c) => c.iter().map(Vec::len).sum(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An HTTP/1.x request to serialise by hand.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Host header value; `None` → the connection's `127.0.0.1:<port>`.
    pub host: Option<String>,
    /// Do not add a Host header at all.
    pub no_host: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".to_string(),
            headers: Vec::new(),
            body: Body::None,
            host: None,
            no_host: false,
        }
    }
    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }
    pub fn head(target: &str) -> Request {
        Request::new("HEAD", target)
    }
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", target).body(body)
    }
    pub fn header(mut self, k: &str, v: &str) -> Request {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Request {
        self.body = Body::Fixed(b.into());
        self
    }
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.body = Body::Chunked(chunks);
        self
    }
    pub fn version(mut self, v: &str) -> Request {
        self.version = v.to_string();
        self
    }
    pub fn host(mut self, h: &str) -> Request {
        self.host = Some(h.to_string());
        self
    }
    pub fn without_host(mut self) -> Request {
        self.no_host = true;
        self
    }
    /// Adds `n` headers `X-Filler-<i>` of `each` bytes of value (nginx's default limit is one
    /// 8 KiB buffer per header line, so spread a large header block over several lines).
    pub fn filler_headers(mut self, n: usize, each: usize) -> Request {
        for i in 0..n {
            let v: String = (0..each)
                .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
                .collect();
            self.headers.push((format!("X-Filler-{i}"), v));
        }
        self
    }

    /// Request line and headers (with the blank line), without the body.
    pub fn head_bytes(&self, default_host: &str) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.target, self.version);
        if !self.no_host {
            s += &format!("Host: {}\r\n", self.host.as_deref().unwrap_or(default_host));
        }
        for (k, v) in &self.headers {
            s += &format!("{k}: {v}\r\n");
        }
        match &self.body {
            Body::None => {}
            Body::Fixed(b) => s += &format!("Content-Length: {}\r\n", b.len()),
            Body::Chunked(_) => s += "Transfer-Encoding: chunked\r\n",
        }
        s += "\r\n";
        s.into_bytes()
    }

    /// The body as it goes on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Fixed(b) => b.clone(),
            Body::Chunked(chunks) => {
                let mut out = Vec::new();
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        }
    }

    /// The whole request.
    pub fn to_bytes(&self, default_host: &str) -> Vec<u8> {
        let mut v = self.head_bytes(default_host);
        v.extend(self.body_bytes());
        v
    }
}

/// A parsed response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Status codes of interim (1xx) responses received before this one.
    pub interim: Vec<u16>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One TCP connection with a read buffer.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl RawConn {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(io_timeout())).unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
    /// Local (client-side) port.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }
    fn default_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes all bytes in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// Writes `bytes` in pieces of `chunk` bytes, sleeping `pause` between them (TCP_NODELAY
    /// is on, so each piece is its own segment and, usually, its own read on the server).
    pub fn send_split(&mut self, bytes: &[u8], chunk: usize, pause: Duration) {
        let n = bytes.chunks(chunk.max(1)).count();
        for (i, piece) in bytes.chunks(chunk.max(1)).enumerate() {
            self.send(piece);
            if i + 1 < n {
                std::thread::sleep(pause);
            }
        }
    }

    /// Sends a request.
    pub fn send_request(&mut self, req: &Request) {
        let b = req.to_bytes(&self.default_host());
        self.send(&b);
    }

    /// Sends `req` and reads its response.
    pub fn request(&mut self, req: &Request) -> Response {
        self.send_request(req);
        self.read_response(&req.method)
    }

    /// Sends `req` split into `chunk`-byte writes `pause` apart, reads the response.
    pub fn request_split(&mut self, req: &Request, chunk: usize, pause: Duration) -> Response {
        let b = req.to_bytes(&self.default_host());
        self.send_split(&b, chunk, pause);
        self.read_response(&req.method)
    }

    /// Sends the head with `Expect: 100-continue`, waits (up to `wait`) for the interim
    /// `100 Continue`, then sends the body and reads the final response. A final response
    /// that comes instead of the 100 is returned as is (the body is then not sent).
    pub fn request_expect_continue(&mut self, req: &Request, wait: Duration) -> Response {
        let mut req = req.clone();
        req.headers
            .push(("Expect".to_string(), "100-continue".to_string()));
        let head = req.head_bytes(&self.default_host());
        self.send(&head);
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let first = self.try_read_head();
        self.stream.set_read_timeout(Some(io_timeout())).unwrap();
        match first {
            Some(100) => {
                let body = req.body_bytes();
                self.send(&body);
                let mut r = self.read_response(&req.method);
                r.interim.insert(0, 100);
                r
            }
            Some(_) => self.read_response(&req.method),
            None => {
                // No interim response in time: send the body anyway (as curl does).
                let body = req.body_bytes();
                self.send(&body);
                self.read_response(&req.method)
            }
        }
    }

    /// Waits for a complete response head and returns its status; a 1xx head is consumed, a
    /// final one is left in the buffer.
    fn try_read_head(&mut self) -> Option<u16> {
        let deadline = Instant::now() + io_timeout();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let status = parse_status(&self.buf[..end]);
                if (100..200).contains(&status) {
                    self.buf.drain(..end + 4);
                }
                return Some(status);
            }
            if Instant::now() > deadline || !self.fill_once() {
                return None;
            }
        }
    }

    /// Reads one byte chunk into the buffer; false on EOF, timeout or error.
    fn fill_once(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => false,
        }
    }

    fn fill_or_panic(&mut self, what: &str) {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!(
                "connection closed while reading {what}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) => panic!(
                "read error while reading {what}: {e}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one final response to a request with `method` (skipping and recording 1xx).
    pub fn read_response(&mut self, method: &str) -> Response {
        let mut interim = Vec::new();
        loop {
            let end = loop {
                if let Some(e) = find(&self.buf, b"\r\n\r\n") {
                    break e;
                }
                self.fill_or_panic("a response head");
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_string();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let reason = parts.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    Some((k.trim().to_string(), v.trim().to_string()))
                })
                .collect();
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let mut resp = Response {
                version,
                status,
                reason,
                headers,
                body: Vec::new(),
                interim,
            };
            let no_body = method.eq_ignore_ascii_case("HEAD")
                || status == 204
                || status == 304
                || (100..200).contains(&status);
            if no_body {
                return resp;
            }
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked {
                resp.body = self.read_chunked();
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len.trim().parse().expect("content-length");
                while self.buf.len() < len {
                    self.fill_or_panic("a response body");
                }
                resp.body = self.buf.drain(..len).collect();
            } else {
                // Until EOF.
                while self.fill_once() {}
                resp.body = std::mem::take(&mut self.buf);
            }
            return resp;
        }
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(e) = find(&self.buf, b"\r\n") {
                    break e;
                }
                self.fill_or_panic("a chunk size");
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let e = loop {
                        if let Some(e) = find(&self.buf, b"\r\n") {
                            break e;
                        }
                        self.fill_or_panic("chunked trailers");
                    };
                    self.buf.drain(..e + 2);
                    if e == 0 {
                        return body;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                self.fill_or_panic("a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads whatever arrives until EOF or `timeout` (for non-HTTP probes).
    pub fn read_until_close(&mut self, timeout: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.fill_once() {}
        self.stream.set_read_timeout(Some(io_timeout())).unwrap();
        std::mem::take(&mut self.buf)
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn parse_status(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `reqs` one after the other on one keep-alive connection.
pub fn keepalive(port: u16, reqs: &[Request]) -> Vec<Response> {
    let mut c = RawConn::connect(port);
    reqs.iter().map(|r| c.request(r)).collect()
}

/// Sends all `reqs` in a single write (pipelining), then reads all responses in order.
pub fn pipelined(port: u16, reqs: &[Request]) -> Vec<Response> {
    let mut c = RawConn::connect(port);
    let host = format!("127.0.0.1:{port}");
    let all: Vec<u8> = reqs.iter().flat_map(|r| r.to_bytes(&host)).collect();
    c.send(&all);
    reqs.iter().map(|r| c.read_response(&r.method)).collect()
}

/// Opens a connection, writes `bytes`, half-closes, and returns whatever comes back within
/// `timeout` (for garbage / non-HTTP probes).
pub fn send_raw(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut c = RawConn::connect(port);
    c.send(bytes);
    std::thread::sleep(Duration::from_millis(50));
    c.shutdown_write();
    c.read_until_close(timeout)
}

/// A plausible TLS 1.2/1.3 ClientHello record (bytes only; no handshake follows).
pub fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
    hello.push(0); // session id length
    hello.extend([0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // cipher suites
    hello.extend([0x01, 0x00]); // compression methods: null
    let sni = b"example.test";
    let mut ext = Vec::new();
    // server_name extension
    let list_len = sni.len() + 3;
    ext.extend([0x00, 0x00]);
    ext.extend(((list_len + 2) as u16).to_be_bytes());
    ext.extend((list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend((sni.len() as u16).to_be_bytes());
    ext.extend(sni);
    hello.extend((ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut hs = vec![0x01]; // ClientHello
    hs.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend(hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Redis `PING` in RESP.
pub const REDIS_PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Random-looking binary garbage of `n` bytes (deterministic).
pub fn garbage(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e3779b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

/// Result of one `curl` run: one entry per URL.
#[derive(Clone, Debug)]
pub struct CurlResult {
    /// HTTP status per URL (0 when no response).
    pub statuses: Vec<u16>,
    /// `num_connects` per URL: 0 means the connection was reused (keep-alive).
    pub connects: Vec<u32>,
    pub stderr: String,
}

/// Runs one `curl --http1.1` invocation fetching every URL in `urls` with `method` (HEAD uses
/// `-I`), re-using one keep-alive connection. `extra` goes before the URLs (e.g. `-H`, `-d`).
pub fn curl_many(method: &str, urls: &[String], extra: &[&str]) -> CurlResult {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http1.1", "--max-time", "20"]);
    if method.eq_ignore_ascii_case("HEAD") {
        cmd.arg("-I");
    } else if method != "GET" {
        cmd.args(["-X", method]);
    }
    cmd.args(["-w", "%{http_code} %{num_connects}\\n"]);
    cmd.args(extra);
    for u in urls {
        cmd.args(["-o", "/dev/null", u]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("curl not found ({e}): run tests/setup.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut statuses = Vec::new();
    let mut connects = Vec::new();
    for line in stdout.lines() {
        let mut it = line.split_whitespace();
        statuses.push(it.next().and_then(|s| s.parse().ok()).unwrap_or(0));
        connects.push(it.next().and_then(|s| s.parse().ok()).unwrap_or(0));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        statuses.len(),
        urls.len(),
        "curl printed {} results for {} URLs: stdout {stdout:?} stderr {stderr:?}",
        statuses.len(),
        urls.len()
    );
    CurlResult {
        statuses,
        connects,
        stderr,
    }
}
