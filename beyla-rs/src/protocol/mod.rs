//! Per-connection protocol state: bytes seen on one connection in, request/response exchanges
//! out.
//!
//! The capture layer hands every data syscall of a connection to [`Segment`]s in the order the
//! kernel saw them. A segment carries only the *head* of the bytes the syscall moved (the
//! capture bound) plus their true length and the last few bytes, so the parsers here must keep
//! byte accounting exact for data they never see (bodies) and must never treat a truncated
//! capture as an error.
//!
//! Nothing in this module knows about eBPF, processes or OpenTelemetry: it is pure and
//! deterministic, which is what makes it testable over every split point and fuzzable.

pub mod detect;
pub mod http1;
pub mod http2;
pub mod memcached;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod stream;
// Test-only: `#![cfg(test)]` is inside, so that this line goes the way of the others where
// the modules are mounted alone (the fuzz crate and harnesses strip `pub mod ` lines).
pub mod testing;

/// Which way the bytes went, seen from the instrumented process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read by the process (`read`, `recvfrom`, `readv`, `recvmsg`).
    Ingress,
    /// Written by the process (`write`, `sendto`, `writev`, `sendmsg`, `sendfile`).
    Egress,
}

/// The process's role on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process accepted the connection: ingress carries requests.
    Server,
    /// The process connected: egress carries requests.
    Client,
}

impl Role {
    /// The direction in which requests travel for this role.
    pub fn request_direction(self) -> Direction {
        match self {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
        }
    }
}

/// The bytes of one syscall on one connection.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub direction: Direction,
    /// Monotonic kernel time of the syscall's exit, in nanoseconds.
    pub ts_ns: u64,
    /// The captured head of the data: `data.len() <= total_len`.
    pub data: &'a [u8],
    /// How many bytes the syscall really moved.
    pub total_len: u64,
    /// Runs of the data past the captured head: the tail copy, or HTTP/2 frame headers.
    pub extents: Extents<'a>,
}

impl<'a> Segment<'a> {
    /// True when the capture holds every byte the syscall moved.
    pub fn is_complete(&self) -> bool {
        self.data.len() as u64 >= self.total_len
    }

    /// The last octets of the data when the head does not hold them: the last extent, if it
    /// ends where the data ends (it may overlap `data`). Empty otherwise.
    pub fn tail(&self) -> &'a [u8] {
        match self.extents.iter().last() {
            Some((off, b)) if off + b.len() as u64 == self.total_len => b,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod extent_tests {
    use super::Extents;

    #[test]
    fn iterates_shifts_and_stops_at_malformed() {
        let raw = Extents::encode(&[(10, b"abc"), (20, b"defg")]);
        let e = Extents::new(&raw);
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            [(10, &b"abc"[..]), (20, &b"defg"[..])]
        );
        assert_eq!(
            e.after(11).iter().collect::<Vec<_>>(),
            [(0, &b"bc"[..]), (9, &b"defg"[..])]
        );
        assert_eq!(e.after(22).iter().collect::<Vec<_>>(), [(0, &b"fg"[..])]);
        assert_eq!(e.after(24).iter().count(), 0);
        // A length past the end stops the iteration; a short header is ignored.
        let mut bad = raw.clone();
        bad[4] = 200;
        assert_eq!(Extents::new(&bad).iter().count(), 0);
        assert_eq!(Extents::new(&raw[..raw.len() - 1]).iter().count(), 1);
        assert_eq!(Extents::new(&raw[..5]).iter().count(), 0);
    }
}

/// The extents of a data event as the kernel lays them out: each an 8-octet header
/// (`ExtentHeader`: offset and length, native endian) and its octets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extents<'a> {
    raw: &'a [u8],
    /// Offsets are reported relative to this offset of the syscall's data (see `after`).
    base: u64,
}

impl<'a> Extents<'a> {
    pub const EMPTY: Extents<'static> = Extents { raw: &[], base: 0 };

    pub fn new(raw: &'a [u8]) -> Self {
        Extents { raw, base: 0 }
    }

    /// The same extents seen from `n` octets further into the data (a segment whose first
    /// `n` octets were consumed by another parser); octets before that are dropped.
    pub fn after(self, n: u64) -> Self {
        Extents {
            base: self.base + n,
            ..self
        }
    }

    /// `(offset in the syscall's data, octets)` in the kernel's order; a malformed extent
    /// (length past the end) ends the iteration.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + use<'a> {
        let mut rest = self.raw;
        let base = self.base;
        std::iter::from_fn(move || {
            loop {
                let (h, body) = rest.split_first_chunk::<8>()?;
                let off = u64::from(u32::from_ne_bytes([h[0], h[1], h[2], h[3]]));
                let len = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
                if len > body.len() {
                    rest = &[];
                    return None;
                }
                let (bytes, next) = body.split_at(len);
                rest = next;
                if off + len as u64 <= base {
                    continue;
                }
                let skip = base.saturating_sub(off);
                return Some((off + skip - base, &bytes[skip as usize..]));
            }
        })
    }

    /// Extents holding the last `n` octets of `data` (the kernel's tail copy), for tests.
    #[cfg(test)]
    pub fn test_tail(data: &[u8], n: usize) -> Extents<'static> {
        let n = n.min(data.len());
        let raw = Self::encode(&[((data.len() - n) as u64, &data[data.len() - n..])]);
        Extents::new(Vec::leak(raw))
    }

    /// The kernel's encoding of `list` (tests and fuzz targets build segments with it).
    pub fn encode(list: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (off, b) in list {
            v.extend_from_slice(&(*off as u32).to_ne_bytes());
            v.extend_from_slice(&(b.len() as u32).to_ne_bytes());
            v.extend_from_slice(b);
        }
        v
    }
}

/// The application protocol an exchange was carried in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    /// HTTP/2 with `content-type: application/grpc*`.
    Grpc,
    /// PostgreSQL frontend/backend protocol 3.
    Postgres,
    /// MySQL client/server protocol (MariaDB too).
    Mysql,
    /// Redis serialization protocol (RESP2, RESP3, inline commands).
    Redis,
    /// Memcached text protocol (and its meta commands).
    Memcached,
}

impl Protocol {
    /// Every protocol, for per-protocol counters.
    pub const ALL: [Protocol; 7] = [
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Grpc,
        Protocol::Postgres,
        Protocol::Mysql,
        Protocol::Redis,
        Protocol::Memcached,
    ];

    /// A short lower-case name (counter labels, logs).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Postgres => "postgresql",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Memcached => "memcached",
        }
    }
}

/// Why an exchange is less than complete. Spans carry these so that a user can tell a partial
/// observation from a real property of the traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeFlags {
    /// The daemon joined the connection mid-way and some request fields are unknown (for
    /// example an HPACK dynamic-table index it never saw being defined).
    pub partial: bool,
    /// The connection closed (or was reset) before the response was complete.
    pub incomplete: bool,
}

/// One request and its response on one connection, whatever the protocol: what a span and a
/// metric measurement are built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// First byte of the request seen (monotonic ns).
    pub start_ns: u64,
    /// Last byte of the response seen (monotonic ns).
    pub end_ns: u64,
    /// Payload octets each way: the body sizes for HTTP, the messages for the others.
    pub request_size: u64,
    pub response_size: u64,
    pub flags: ExchangeFlags,
    pub kind: Kind,
}

/// What the exchange was, per protocol family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Http(Http),
    Db(Db),
}

/// An HTTP request/response (HTTP/1.x, HTTP/2, gRPC).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http {
    pub protocol: Option<Protocol>,
    pub method: String,
    pub target: String,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub stream_id: u32,
}

/// The database or cache system of a [`Db`] exchange (`db.system.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DbSystem {
    Postgresql,
    Mysql,
    Mariadb,
    Redis,
    Memcached,
}

impl DbSystem {
    /// The semantic conventions' `db.system.name` value.
    pub fn name(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Mariadb => "mariadb",
            DbSystem::Redis => "redis",
            DbSystem::Memcached => "memcached",
        }
    }
}

/// One database or cache operation: a statement and its result, a command and its reply.
/// Holds no values: query text has its literals replaced by `?`, Redis keeps command and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Db {
    pub system: DbSystem,
    /// `db.operation.name`: `SELECT`, `INSERT`, `GET`, `HSET`, `get`, … (upper case for SQL
    /// and Redis, as sent for Memcached).
    pub operation: Option<String>,
    /// `db.collection.name`: the table the statement names, when it names one.
    pub collection: Option<String>,
    /// `db.namespace`: the database (PostgreSQL startup, MySQL handshake / `COM_INIT_DB` /
    /// `USE`), the Redis database index after `SELECT n` (`"0"` before one).
    pub namespace: Option<String>,
    /// `db.query.text`: SQL with literals as `?`; Redis: command and first key; Memcached:
    /// command and keys.
    pub query: Option<String>,
    /// `db.response.status_code`: SQLSTATE, MySQL error number, Redis error prefix
    /// (`ERR`, `WRONGTYPE`), Memcached error reply (`SERVER_ERROR`, `CLIENT_ERROR`, `ERROR`).
    pub status_code: Option<String>,
    /// The operation failed (an error reply).
    pub error: bool,
}

/// What a parser asks of its caller after a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep feeding segments.
    Continue,
    /// The bytes are not this parser's protocol: stop feeding the connection to it.
    Reject,
    /// The connection now speaks HTTP/2 (h2c upgrade or prior knowledge): hand later bytes to
    /// the HTTP/2 parser ([`Parser::take_upgrade`] holds the upgrade request).
    SwitchToHttp2,
}

/// How sure a protocol module is that a connection's first bytes are its protocol (see
/// `detect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// Not this protocol.
    No,
    /// Could be this protocol mid-way (the port decides).
    Maybe,
    /// Certainly this protocol.
    Yes,
}

/// The request that asked for `Upgrade: h2c`, answered by `101 Switching Protocols`: it is
/// HTTP/2 stream 1 from there on (RFC 7540 §3.2), so its response comes in HTTP/2 frames.
#[derive(Debug)]
pub struct H2cUpgrade {
    /// The request, without a response yet (`protocol` is HTTP/2, `stream_id` 1).
    pub request: HttpExchange,
    /// Where the HTTP/2 bytes start in the segment that carried the 101 head: `None` when the
    /// head's end was not captured.
    pub http2_offset: Option<usize>,
}

/// One protocol's per-connection parser: segments in the kernel's order in, finished exchanges
/// out. Parsers keep bounded memory per connection whatever the input, never panic, and treat
/// a truncated capture (a segment's head only) as normal.
pub trait Parser: Send {
    /// The protocol parsed (for per-protocol counters; the HTTP/2 parser says `Http2`).
    fn protocol(&self) -> Protocol;
    /// Feed one segment; finished exchanges are appended to `out`.
    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict;
    /// The connection closed at `ts_ns`: flush what is pending (as incomplete where the
    /// response was not seen whole).
    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>);
    /// Parse failures on this connection so far (cumulative): lost framing, malformed
    /// messages, length fields that do not add up.
    fn parse_errors(&self) -> u64;
    /// After [`Verdict::SwitchToHttp2`]: the `h2c` upgrade request, if that was the reason.
    fn take_upgrade(&mut self) -> Option<H2cUpgrade> {
        None
    }
}

/// One HTTP request and its response as the HTTP parsers build it: the [`Http`] fields and
/// the exchange's times and sizes together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpExchange {
    pub protocol: Option<Protocol>,
    /// Request method (`GET`, …; `POST` for gRPC).
    pub method: String,
    /// The raw request target: origin-form `path?query`, absolute-form URL, or `:path`.
    pub target: String,
    /// `Host` header or `:authority`, as sent.
    pub authority: Option<String>,
    /// `:scheme` for HTTP/2; `None` for HTTP/1.x (the transport decides: cleartext here).
    pub scheme: Option<String>,
    /// HTTP status of the final response (interim 1xx responses are not exchanges).
    pub status: Option<u16>,
    /// `grpc-status` from the trailers (or a Trailers-Only response).
    pub grpc_status: Option<u32>,
    /// Request `content-type`.
    pub content_type: Option<String>,
    /// Request `traceparent` / `tracestate` (W3C trace context), as sent.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// First byte of the request seen (monotonic ns).
    pub start_ns: u64,
    /// Last byte of the response seen (monotonic ns).
    pub end_ns: u64,
    /// Body bytes (after de-chunking framing is *not* required: the wire size of the body).
    pub request_body_size: u64,
    pub response_body_size: u64,
    /// HTTP/2 stream id; 0 for HTTP/1.x.
    pub stream_id: u32,
    pub flags: ExchangeFlags,
}

impl From<HttpExchange> for Exchange {
    fn from(h: HttpExchange) -> Self {
        Exchange {
            start_ns: h.start_ns,
            end_ns: h.end_ns,
            request_size: h.request_body_size,
            response_size: h.response_body_size,
            flags: h.flags,
            kind: Kind::Http(Http {
                protocol: h.protocol,
                method: h.method,
                target: h.target,
                authority: h.authority,
                scheme: h.scheme,
                status: h.status,
                grpc_status: h.grpc_status,
                content_type: h.content_type,
                traceparent: h.traceparent,
                tracestate: h.tracestate,
                stream_id: h.stream_id,
            }),
        }
    }
}

impl Exchange {
    /// The HTTP fields, for HTTP exchanges.
    pub fn http(&self) -> Option<&Http> {
        match &self.kind {
            Kind::Http(h) => Some(h),
            Kind::Db(_) => None,
        }
    }

    /// The database fields, for database and cache exchanges.
    pub fn db(&self) -> Option<&Db> {
        match &self.kind {
            Kind::Db(d) => Some(d),
            Kind::Http(_) => None,
        }
    }
}

/// The only request headers whose *values* the parsers keep. Everything else is skipped: the
/// daemon never exports header values other than these, and never stores secrets
/// (`Authorization`, `Cookie`, …) even transiently beyond the captured buffer.
pub const KEPT_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "traceparent",
    "tracestate",
    "upgrade",
    "connection",
    "expect",
];
