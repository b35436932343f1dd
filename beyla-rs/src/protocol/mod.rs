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

pub mod http1;
pub mod http2;

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
    /// The last bytes of the data (at most 8) when `total_len > data.len()`; empty otherwise.
    pub tail: &'a [u8],
}

impl Segment<'_> {
    /// True when the capture holds every byte the syscall moved.
    pub fn is_complete(&self) -> bool {
        self.data.len() as u64 >= self.total_len
    }
}

/// The application protocol an [`Exchange`] was carried in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// HTTP/2 with `content-type: application/grpc*`.
    Grpc,
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

/// One request and its response on one connection: what a span is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
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
