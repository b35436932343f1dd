//! HTTP/1.0 and HTTP/1.1 exchanges from the two byte streams of one connection.
//!
//! [`Http1Connection`] follows both directions of a connection, segment by segment, and turns
//! them into [`Exchange`]s: one per request, paired with its final response in FIFO order
//! (RFC 9112 §9.3.2, pipelining). Heads (start line plus header section, RFC 9112 §2.1) are
//! parsed with `httparse`; bodies are never buffered, only counted, following the message
//! body length rules of RFC 9112 §6.3.
//!
//! # What is kept
//!
//! Only the values of the header fields named in
//! [`KEPT_REQUEST_HEADERS`](super::KEPT_REQUEST_HEADERS) are looked at (see `Field`), and of
//! those only `Host`, `Content-Type`, `traceparent` and `tracestate` are copied into the
//! exchange (the rest drive framing and the h2c upgrade). A head that is split across segments is buffered (bounded by
//! [`MAX_HEAD_BYTES`]) until it is complete; the buffer is zeroed as soon as the head is parsed
//! and is never shown by `Debug`, so secrets such as `Authorization` are never retained beyond
//! the captured bytes of a head in flight.
//!
//! # Body sizes
//!
//! `request_body_size` / `response_body_size` are the *wire* size of the message body
//! (RFC 9112 §6): the `Content-Length` for length-delimited bodies, and for chunked bodies every
//! byte of the chunked coding (chunk-size lines with their extensions, chunk data, CRLFs, the
//! last chunk and the trailer section, RFC 9112 §7.1). This is exact even when most of the body
//! was never captured. A request body whose response completes before the request body does
//! (an early error response) reports what was seen by then. A body that cannot be delimited
//! (see the heuristics below) counts the bytes seen; when the head end itself was not seen the
//! body size is reported as 0.
//!
//! # Truncated captures and heuristics
//!
//! A segment holds only the head of the bytes a syscall moved (`data`), their real count
//! (`total_len`) and the last bytes (`tail`). Framing is followed exactly through the unseen
//! bytes whenever it is known: the remainder of a `Content-Length` body, and the remainder of a
//! chunk whose size line was seen. When framing cannot be followed, these heuristics apply:
//!
//! * **Head not captured to its end** (the empty line ending the head, RFC 9112 §2.1, is beyond
//!   the captured bytes of a truncated segment, or the head outgrows [`MAX_HEAD_BYTES`]): the
//!   start line is still used (request method and target, response status), as are the header
//!   lines captured whole. The exchange gets `flags.partial = true` for a request.
//!   - a request then lasts until response bytes start, or until a request-direction segment
//!     starts with a valid request line (a new request);
//!   - a response then lasts until a request-direction segment starts with a valid request
//!     line (its `end_ns` is the time of the last response segment before it), until a
//!     response-direction segment starts with a valid status line (the next pipelined
//!     response), or until the connection closes.
//! * **Chunk-size line in unseen bytes**: the chunked body ends at the first segment whose last
//!   bytes (`tail`, or `data` when the segment was captured whole) end with the last chunk
//!   `\n0\r\n\r\n` (or that is exactly `0\r\n\r\n`). A last chunk with extensions or trailer
//!   fields is not recognised this way, so such a body also ends like one whose head end was
//!   unseen: a response at the next request line, a request when response bytes start (or at
//!   the next request line); a close before that marks the exchange incomplete.
//! * **A message boundary falls in unseen bytes** (the next message's head was never
//!   captured): a request direction waits for a segment starting with a valid request line and
//!   leaves one placeholder in the FIFO so that later responses stay paired with their
//!   requests; a response direction waits for a segment starting with a valid status line.
//! * **Invalid or conflicting `Content-Length`**, or a request `Transfer-Encoding` whose final
//!   coding is not `chunked` (RFC 9112 §6.3, items 4–5), or a malformed chunked body: treated
//!   as "framing unknown" and handled like a head whose end was unseen.
//! * **Interim (1xx) response whose head end was unseen**: the direction waits for a segment
//!   starting with a status line (the final response).
//!
//! Every time a heuristic is entered [`Http1Stats::resyncs`] is incremented. Segments that moved
//! no bytes are ignored (they carry no byte, hence no timestamp for one).
//!
//! # Timestamps
//!
//! `start_ns` is the `ts_ns` of the segment holding the request's first byte (leading empty
//! lines excluded); `end_ns` that of the segment holding the final response's last byte. For
//! an exchange flushed by [`Http1Connection::on_close`] it is the last response segment's time
//! when some of the response was seen, else the close time.
//!
//! # Memory
//!
//! Per connection: at most two head buffers of [`MAX_HEAD_BYTES`] (only while a head is split
//! across segments; a buffer that grew past 4 KiB is freed after use) and [`MAX_PENDING`]
//! queued requests of at most [`MAX_TARGET_LEN`] + 4 × [`MAX_VALUE_LEN`] +
//! [`MAX_METHOD_LEN`] bytes of strings each. Bodies are never buffered. A head that arrives
//! whole in one segment is parsed in place, without copying.
//!
//! # Not HTTP
//!
//! The first request-direction bytes of a new connection must be a valid request line
//! (RFC 9112 §3: a method token of at most [`MAX_METHOD_LEN`] characters, a target, and
//! `HTTP/1.0` or `HTTP/1.1`, within [`MAX_START_LINE`] bytes), or a prefix of one; otherwise
//! [`Verdict::NotHttp`] is returned (TLS, Redis, SSH, binary protocols). Response heads must
//! start with a status line (RFC 9112 §4) with a status code of at least 100. The same rules
//! apply to complete heads and to heads still arriving, so where segments split never changes
//! the outcome. The same happens later when bytes where a request or response head must
//! start are not one, unless a heuristic was used on the connection (or it was joined midway),
//! in which case the direction waits for the next valid start line instead.
//!
//! # Upgrades
//!
//! The HTTP/2 connection preface (RFC 9113 §3.4) where a request must start, or a
//! `101 Switching Protocols` answering a request with `Upgrade: h2c` (RFC 9110 §7.8), return
//! [`Verdict::SwitchToHttp2`]; no exchange is emitted for the upgrade request: it is HTTP/2
//! stream 1 from there on, handed over by [`Http1Connection::take_h2c_upgrade`]. For the preface,
//! the segment that starts with it is the first HTTP/2 segment; for `h2c` the bytes after the
//! 101 head are HTTP/2. Any other 101, and a 2xx answering `CONNECT` (RFC 9110 §9.3.6), emits
//! the exchange and then ignores the connection (it is a tunnel now).

use std::collections::VecDeque;
use std::fmt;

use super::{Exchange, ExchangeFlags, Protocol, Role, Segment};

/// Most bytes of one head buffered per direction while it is split across segments. A head
/// that grows beyond this is handled as a head whose end was unseen (and counted in
/// [`Http1Stats::head_overflows`]).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most requests awaiting a response. Beyond it the oldest is dropped (its response, when it
/// comes, is skipped) and counted in [`Http1Stats::dropped_pending`].
pub const MAX_PENDING: usize = 64;
/// Header slots handed to `httparse`. A head with more header fields is not an error: its
/// start line is parsed alone and the header lines are scanned by hand.
pub const MAX_HEADERS: usize = 64;
/// Longest request or status line accepted while its end is not yet seen (RFC 9112 §3
/// recommends supporting at least 8000 octets).
pub const MAX_START_LINE: usize = 8 * 1024;
/// Longest method token accepted (RFC 9110 §9.1 sets no limit; real methods are short).
pub const MAX_METHOD_LEN: usize = 32;
/// Longest request target kept in an exchange (longer ones are cut).
pub const MAX_TARGET_LEN: usize = 8 * 1024;
/// Longest kept header value (W3C `tracestate` is at most 512 characters).
pub const MAX_VALUE_LEN: usize = 512;

/// A head buffer larger than this is freed, not kept, once its head is parsed.
const IDLE_BUFFER_CAPACITY: usize = 4096;
/// The part of the HTTP/2 connection preface (RFC 9113 §3.4) that looks like an HTTP/1 head.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the caller should do with the connection after a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep feeding segments.
    Continue,
    /// The bytes are not HTTP/1.x: stop feeding this connection.
    NotHttp,
    /// The connection now speaks HTTP/2: hand later bytes to the HTTP/2 parser.
    SwitchToHttp2,
}

/// Counters of the limits and heuristics hit on one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http1Stats {
    /// Heads larger than [`MAX_HEAD_BYTES`].
    pub head_overflows: u64,
    /// Requests dropped because [`MAX_PENDING`] were already awaiting responses.
    pub dropped_pending: u64,
    /// Times a heuristic replaced exact framing (see the module documentation).
    pub resyncs: u64,
    /// Final responses that matched no seen request.
    pub orphan_responses: u64,
    /// Heads parsed without `httparse`'s header array (too many or malformed header lines).
    pub header_fallbacks: u64,
}

/// The HTTP/1.x state of one connection, both directions.
#[derive(Debug)]
pub struct Http1Connection {
    role: Role,
    mode: Mode,
    /// True once the connection was joined midway or a heuristic replaced exact framing:
    /// unexpected bytes then mean "lost sync", not "not HTTP".
    inexact: bool,
    req: ReqSide,
    resp: RespSide,
    pending: VecDeque<PendingRequest>,
    /// Responses still to come for requests dropped from the front of `pending`.
    skip_responses: u64,
    next_seq: u64,
    /// Set with [`Verdict::SwitchToHttp2`] after an `h2c` upgrade.
    upgrade: Option<H2cUpgrade>,
    /// Limits and heuristics hit so far.
    pub stats: Http1Stats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Joined midway: waiting for a request-direction segment that starts with a request line.
    Syncing,
    Active,
    /// After a non-h2c 101 or a CONNECT tunnel: every byte is ignored.
    Tunnel,
    /// After `on_close`.
    Closed,
    /// `NotHttp` or `SwitchToHttp2` was returned; it is returned again.
    Done(Verdict),
}

/// A request head seen, waiting for its final response.
#[derive(Debug)]
struct PendingRequest {
    seq: u64,
    /// Stands for request bytes never captured: pairs with a response, emits nothing.
    hidden: bool,
    method: String,
    target: String,
    authority: Option<String>,
    content_type: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    start_ns: u64,
    body: u64,
    partial: bool,
    upgrade_h2c: bool,
    is_head: bool,
    is_connect: bool,
}

/// Bytes of a head that arrived in pieces. `Debug` shows only the length: they may hold
/// secrets.
#[derive(Default)]
struct HeadBuf {
    bytes: Vec<u8>,
    /// `ts_ns` of the segment holding the head's first byte.
    start_ns: u64,
    /// The start line was already checked complete and valid.
    line_ok: bool,
}

impl fmt::Debug for HeadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadBuf")
            .field("len", &self.bytes.len())
            .field("start_ns", &self.start_ns)
            .finish()
    }
}

impl HeadBuf {
    fn clear(&mut self) {
        self.bytes.fill(0);
        self.bytes.clear();
        if self.bytes.capacity() > IDLE_BUFFER_CAPACITY {
            self.bytes = Vec::new();
        }
        self.line_ok = false;
    }
}

#[derive(Debug)]
struct ReqSide {
    state: ReqState,
    buf: HeadBuf,
}

#[derive(Debug, Clone, Copy)]
enum ReqState {
    /// Expecting (or inside) a request head.
    Head,
    /// Inside a request body; `count` adds the body bytes to the request's `body`.
    Body { body: Body, seq: u64, count: bool },
    /// Framing unknown: every byte belongs to the last request until response bytes start or
    /// a segment starts with a request line.
    Skip,
    /// A message boundary fell in unseen bytes: wait for a segment starting with a request
    /// line.
    Lost,
}

#[derive(Debug)]
struct RespSide {
    state: RespState,
    buf: HeadBuf,
    /// The response being received, once its final head was parsed.
    cur: Option<CurResponse>,
    /// `ts_ns` of the last response-direction segment.
    last_ts: u64,
}

/// The request that asked for `Upgrade: h2c`, answered by `101 Switching Protocols`: it is
/// HTTP/2 stream 1 from there on (RFC 7540 §3.2), so its response comes in HTTP/2 frames.
#[derive(Debug)]
pub struct H2cUpgrade {
    /// The request, without a response yet (`protocol` is HTTP/2, `stream_id` 1).
    pub request: Exchange,
    /// Where the HTTP/2 bytes start in the segment that carried the 101 head: `None` when the
    /// head's end was not captured.
    pub http2_offset: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum RespState {
    Head,
    Body(Body),
    /// See [`ReqState::Lost`]; waits for a segment starting with a status line.
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct CurResponse {
    status: u16,
    /// Pairs with the front of `pending`.
    matched: bool,
    body: u64,
    /// False when the head end was unseen: the body size is then unknown (reported as 0).
    count: bool,
}

/// How the rest of a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    /// A chunk-size line was unseen: ends at a segment ending with the last chunk.
    ChunkedResync,
    /// Delimited by the connection closing (RFC 9112 §6.3 item 8).
    UntilClose,
    /// Framing unknown (head end unseen): ends at the next request line or close.
    UntilNextRequest,
}

/// Where a chunked body decoder is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        size: u64,
        digits: u8,
    },
    /// After the chunk size: whitespace and chunk extensions, up to LF.
    Ext {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart,
    TrailerCr,
    TrailerLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    More,
    Done,
    Bad,
}

impl Chunk {
    const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    fn after_size_line(size: u64) -> Chunk {
        if size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data(size)
        }
    }

    /// Decodes from `data`; returns the bytes used and whether the body ended (the final
    /// CRLF included) or is malformed.
    fn feed(&mut self, data: &[u8]) -> (usize, Step) {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Chunk::Data(r) => {
                    let take = r.min((data.len() - i) as u64);
                    i += take as usize;
                    *self = if r == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(r - take)
                    };
                    continue;
                }
                Chunk::Ext { size } => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k + 1;
                            *self = Chunk::after_size_line(size);
                        }
                        None => i = data.len(),
                    }
                    continue;
                }
                Chunk::TrailerLine => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k + 1;
                            *self = Chunk::TrailerStart;
                        }
                        None => i = data.len(),
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            match *self {
                Chunk::Size { size, digits } => {
                    if let Some(v) = hex_value(b) {
                        if digits >= 16 {
                            return (i, Step::Bad);
                        }
                        *self = Chunk::Size {
                            size: (size << 4) | u64::from(v),
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return (i, Step::Bad);
                    } else if b == b'\n' {
                        *self = Chunk::after_size_line(size);
                    } else if matches!(b, b';' | b' ' | b'\t' | b'\r') {
                        *self = Chunk::Ext { size };
                    } else {
                        return (i, Step::Bad);
                    }
                }
                Chunk::DataCr => match b {
                    b'\r' => *self = Chunk::DataLf,
                    b'\n' => *self = Chunk::START,
                    _ => return (i, Step::Bad),
                },
                Chunk::DataLf => match b {
                    b'\n' => *self = Chunk::START,
                    _ => return (i, Step::Bad),
                },
                Chunk::TrailerStart => match b {
                    b'\r' => *self = Chunk::TrailerCr,
                    b'\n' => return (i, Step::Done),
                    _ => *self = Chunk::TrailerLine,
                },
                Chunk::TrailerCr => match b {
                    b'\n' => return (i, Step::Done),
                    _ => return (i, Step::Bad),
                },
                Chunk::Data(_) | Chunk::Ext { .. } | Chunk::TrailerLine => unreachable!(),
            }
        }
        (i, Step::More)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Body {
    /// Consumes captured bytes of the body.
    fn visible(&mut self, data: &[u8]) -> (usize, Step) {
        match self {
            Body::Length(r) => {
                let take = (*r).min(data.len() as u64);
                *r -= take;
                (take as usize, if *r == 0 { Step::Done } else { Step::More })
            }
            Body::Chunked(c) => c.feed(data),
            Body::ChunkedResync | Body::UntilClose | Body::UntilNextRequest => {
                (data.len(), Step::More)
            }
        }
    }

    /// Consumes `n` unseen bytes; returns how many belonged to the body, whether it ended, and
    /// whether exact framing was lost (a chunked body then becomes [`Body::ChunkedResync`]).
    fn unseen(&mut self, n: u64) -> (u64, Step, bool) {
        match self {
            Body::Length(r) => {
                let take = (*r).min(n);
                *r -= take;
                (take, if *r == 0 { Step::Done } else { Step::More }, false)
            }
            Body::Chunked(Chunk::Data(r)) if *r >= n => {
                *r -= n;
                if *r == 0 {
                    *self = Body::Chunked(Chunk::DataCr);
                }
                (n, Step::More, false)
            }
            Body::Chunked(_) => {
                *self = Body::ChunkedResync;
                (n, Step::More, true)
            }
            Body::ChunkedResync | Body::UntilClose | Body::UntilNextRequest => {
                (n, Step::More, false)
            }
        }
    }
}

/// True when the segment's last bytes are the last chunk of a chunked body (the heuristic end
/// of a body whose chunk-size lines were unseen).
fn ends_with_last_chunk(seg: &Segment<'_>) -> bool {
    let complete = seg.is_complete();
    let end = if complete { seg.data } else { seg.tail() };
    end.ends_with(b"\n0\r\n\r\n") || (complete && seg.data == b"0\r\n\r\n")
}

/// The total byte count of a segment, trusting `data` if `total_len` is smaller.
fn seg_total(seg: &Segment<'_>) -> u64 {
    seg.total_len.max(seg.data.len() as u64)
}

/// Empty lines before a start line are ignored (RFC 9112 §2.2).
fn skip_empty_lines(data: &[u8]) -> usize {
    data.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len())
}

/// Finds the end of a head (the empty line, RFC 9112 §2.1; bare LF accepted per §2.2) in
/// `data`, which continues `prev`. Returns the index in `data` just after it.
fn find_head_end(prev: &[u8], data: &[u8]) -> Option<usize> {
    let before = |i: usize, k: usize| -> Option<u8> {
        if i >= k {
            Some(data[i - k])
        } else {
            let back = k - i;
            prev.len().checked_sub(back).map(|j| prev[j])
        }
    };
    memchr::memchr_iter(b'\n', data).find_map(|i| match before(i, 1) {
        Some(b'\n') => Some(i + 1),
        Some(b'\r') if before(i, 2) == Some(b'\n') => Some(i + 1),
        _ => None,
    })
}

enum HeadStep {
    /// The head ends after this many bytes of `data`; it is `buf` if `buf` was non-empty
    /// (the bytes were appended), else those bytes of `data`.
    Complete(usize),
    /// All of `data` was buffered.
    Partial,
    /// The head is larger than [`MAX_HEAD_BYTES`]; `buf` holds its first bytes.
    Overflow,
}

fn take_head(buf: &mut HeadBuf, data: &[u8]) -> HeadStep {
    let prev = buf.bytes.len();
    match find_head_end(&buf.bytes, data) {
        Some(n) if prev + n <= MAX_HEAD_BYTES => {
            if prev > 0 {
                buf.bytes.extend_from_slice(&data[..n]);
            }
            HeadStep::Complete(n)
        }
        found => {
            let room = MAX_HEAD_BYTES.saturating_sub(prev);
            buf.bytes.extend_from_slice(&data[..data.len().min(room)]);
            if found.is_some() || prev + data.len() > MAX_HEAD_BYTES {
                HeadStep::Overflow
            } else {
                HeadStep::Partial
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineCheck {
    /// A complete, valid start line.
    Valid,
    /// Could still become a valid start line.
    Prefix,
    Invalid,
}

fn parser_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// Checks the request line (RFC 9112 §3) at the start of `buf`.
fn check_request_line(buf: &[u8]) -> LineCheck {
    if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
        return if buf.len() >= H2_PREFACE_HEAD.len() {
            LineCheck::Valid
        } else {
            LineCheck::Prefix
        };
    }
    let method_end = buf.iter().take(MAX_METHOD_LEN + 1).position(|&b| b == b' ');
    if method_end.is_none() && buf.len() > MAX_METHOD_LEN {
        return LineCheck::Invalid;
    }
    let line_end = memchr::memchr(b'\n', buf);
    if line_end.is_none() && buf.len() > MAX_START_LINE {
        return LineCheck::Invalid;
    }
    let line = line_end.map_or(buf, |e| &buf[..=e]);
    let mut req = httparse::Request::new(&mut []);
    match parser_config().parse_request(&mut req, line) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if line_end.is_some() => LineCheck::Valid,
        Ok(_) => LineCheck::Prefix,
        Err(_) => LineCheck::Invalid,
    }
}

/// Checks the status line (RFC 9112 §4) at the start of `buf`.
fn check_status_line(buf: &[u8]) -> LineCheck {
    let line_end = memchr::memchr(b'\n', buf);
    if line_end.is_none() && buf.len() > MAX_START_LINE {
        return LineCheck::Invalid;
    }
    let line = line_end.map_or(buf, |e| &buf[..=e]);
    let mut resp = httparse::Response::new(&mut []);
    let result = parser_config().parse_response(&mut resp, line);
    if resp.code.is_some_and(|c| c < 100) {
        // RFC 9110 §15: status codes are 100..=599 (recipients accept up to 999).
        return LineCheck::Invalid;
    }
    match result {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if line_end.is_some() => LineCheck::Valid,
        Ok(_) => LineCheck::Prefix,
        Err(_) => LineCheck::Invalid,
    }
}

fn starts_with_request_line(data: &[u8]) -> bool {
    let d = &data[skip_empty_lines(data)..];
    !d.is_empty() && check_request_line(d) == LineCheck::Valid
}

fn starts_with_status_line(data: &[u8]) -> bool {
    let d = &data[skip_empty_lines(data)..];
    !d.is_empty() && check_status_line(d) == LineCheck::Valid
}

/// Framing of a message body as announced by its head (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// `Transfer-Encoding` without final `chunked`.
    OtherCoding,
    /// Neither `Transfer-Encoding` nor `Content-Length`.
    None,
    /// Invalid `Content-Length`.
    Invalid,
}

/// What a head's header fields say, as far as this parser cares.
#[derive(Default)]
struct HeaderInfo {
    request: bool,
    /// `Some(None)`: present but invalid or conflicting (RFC 9112 §6.3 item 5).
    content_length: Option<Option<u64>>,
    te_present: bool,
    te_chunked_last: bool,
    upgrade_h2c: bool,
    host: Option<String>,
    content_type: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Parses a `Content-Length` field value, allowing a list of identical values (RFC 9110 §8.6).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in v.split(|&b| b == b',') {
        let p = trim_ows(part);
        if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = p
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn kept_value(v: &[u8], max: usize) -> String {
    let v = trim_ows(v);
    let mut s = String::from_utf8_lossy(&v[..v.len().min(max)]).into_owned();
    if s.len() > max {
        // Lossy replacement characters can grow it; cut at a char boundary.
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The header fields whose values this parser reads, all named in
/// [`KEPT_REQUEST_HEADERS`](super::KEPT_REQUEST_HEADERS)
/// (a test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    ContentType,
    ContentLength,
    TransferEncoding,
    Traceparent,
    Tracestate,
    Upgrade,
}

impl Field {
    /// The field `name` is (case-insensitive, RFC 9110 §5.1), found by its length first: a
    /// field of any other name costs one comparison of lengths and at most one of bytes.
    fn of(name: &[u8]) -> Option<Field> {
        let (known, field) = match name.len() {
            4 => ("host", Field::Host),
            7 => ("upgrade", Field::Upgrade),
            10 => ("tracestate", Field::Tracestate),
            11 => ("traceparent", Field::Traceparent),
            12 => ("content-type", Field::ContentType),
            14 => ("content-length", Field::ContentLength),
            17 => ("transfer-encoding", Field::TransferEncoding),
            _ => return None,
        };
        known.as_bytes().eq_ignore_ascii_case(name).then_some(field)
    }

    #[cfg(test)]
    const ALL: [Field; 7] = [
        Field::Host,
        Field::ContentType,
        Field::ContentLength,
        Field::TransferEncoding,
        Field::Traceparent,
        Field::Tracestate,
        Field::Upgrade,
    ];
}

impl HeaderInfo {
    fn new(request: bool) -> Self {
        HeaderInfo {
            request,
            ..Default::default()
        }
    }

    /// What the header fields `httparse` parsed say (see [`scan_header_lines`] for heads it
    /// refused).
    fn from_fields(request: bool, fields: &[httparse::Header<'_>]) -> Self {
        let mut info = HeaderInfo::new(request);
        for h in fields {
            info.header(h.name.as_bytes(), h.value);
        }
        info
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        let Some(field) = Field::of(trim_ows(name)) else {
            return;
        };
        match field {
            Field::ContentLength => {
                let n = parse_content_length(value);
                self.content_length = match self.content_length {
                    None => Some(n),
                    Some(prev) if prev == n => Some(n),
                    Some(_) => Some(None),
                };
            }
            Field::TransferEncoding => {
                // RFC 9112 §6.1: the final coding decides; several fields form one list.
                for coding in value.split(|&b| b == b',') {
                    let name = coding.split(|&b| b == b';').next().unwrap_or_default();
                    let name = trim_ows(name);
                    if !name.is_empty() {
                        self.te_present = true;
                        self.te_chunked_last = name.eq_ignore_ascii_case(b"chunked");
                    }
                }
            }
            _ if !self.request => {}
            Field::Host if self.host.is_none() => {
                self.host = Some(kept_value(value, MAX_VALUE_LEN))
            }
            Field::ContentType if self.content_type.is_none() => {
                self.content_type = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Traceparent if self.traceparent.is_none() => {
                self.traceparent = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Tracestate if self.tracestate.is_none() => {
                self.tracestate = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Upgrade => {
                // RFC 9110 §7.8: a list of protocols.
                self.upgrade_h2c |= value
                    .split(|&b| b == b',')
                    .any(|p| trim_ows(p).eq_ignore_ascii_case(b"h2c"));
            }
            _ => {}
        }
    }

    fn framing(&self) -> Framing {
        if self.te_present {
            if self.te_chunked_last {
                Framing::Chunked
            } else {
                Framing::OtherCoding
            }
        } else {
            match self.content_length {
                Some(Some(n)) => Framing::Length(n),
                Some(None) => Framing::Invalid,
                None => Framing::None,
            }
        }
    }
}

/// Scans header lines by hand: used when `httparse` refused the header section (too many
/// fields, malformed lines) or the head is cut. Only lines ending in LF are used.
fn scan_header_lines(section: &[u8], info: &mut HeaderInfo) {
    let mut rest = section;
    while let Some(e) = memchr::memchr(b'\n', rest) {
        let line = &rest[..e];
        rest = &rest[e + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            info.header(&line[..colon], &line[colon + 1..]);
        }
    }
}

struct ParsedRequest {
    method: String,
    target: String,
    info: HeaderInfo,
    fallback: bool,
}

struct ParsedResponse {
    status: u16,
    framing: Framing,
    fallback: bool,
}

/// What [`parse_whole_request`] / [`parse_whole_response`] found: the head's length and its
/// parse (`None`: not a valid head), or `None` to take the general path.
type WholeHead<T> = Option<(usize, Option<T>)>;

/// One `httparse` pass over a whole head at the start of `data`, which may go on past it:
/// `Some((head length, parse))` when httparse finds the head complete. It stops at the first
/// empty line, CRLF or bare LF, which is where [`find_head_end`] ends a head, so the result is
/// what [`take_head`] followed by [`parse_request_head`] would give; the parse is `None` where
/// that would report garbage (a method beyond [`MAX_METHOD_LEN`], the rule of
/// [`check_request_line`]). `None` when the head is partial, too large or refused (too many
/// fields, malformed lines): the caller takes the general path.
fn parse_whole_request(data: &[u8]) -> WholeHead<ParsedRequest> {
    // Uninitialised: httparse writes the headers it finds; zeroing 64 of them per message
    // showed in profiles.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(n)) =
        parser_config().parse_request_with_uninit_headers(&mut req, data, &mut headers)
    else {
        return None;
    };
    if n > MAX_HEAD_BYTES {
        return None;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Some((n, None));
    };
    if method.len() > MAX_METHOD_LEN {
        return Some((n, None));
    }
    let info = HeaderInfo::from_fields(true, req.headers);
    let parsed = ParsedRequest {
        method: method.to_owned(),
        target: kept_value(path.as_bytes(), MAX_TARGET_LEN),
        info,
        fallback: false,
    };
    Some((n, Some(parsed)))
}

/// [`parse_whole_request`] for a response head; the parse is `None` for a status code below
/// 100 (the rule of [`check_status_line`]).
fn parse_whole_response(data: &[u8]) -> WholeHead<ParsedResponse> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Ok(httparse::Status::Complete(n)) =
        parser_config().parse_response_with_uninit_headers(&mut resp, data, &mut headers)
    else {
        return None;
    };
    if n > MAX_HEAD_BYTES {
        return None;
    }
    let status = match resp.code {
        Some(c) if c >= 100 => c,
        _ => return Some((n, None)),
    };
    let info = HeaderInfo::from_fields(false, resp.headers);
    let parsed = ParsedResponse {
        status,
        framing: info.framing(),
        fallback: false,
    };
    Some((n, Some(parsed)))
}

/// Parses a request head (RFC 9112 §3, §5). With `complete == false` the head is cut: the
/// request line and the whole header lines captured are used. `None`: not a request head.
fn parse_request_head(head: &[u8], complete: bool) -> Option<ParsedRequest> {
    // The same start-line rules as while the head is still arriving, so that where segments
    // split never changes the outcome.
    if check_request_line(head) == LineCheck::Invalid || head.starts_with(H2_PREFACE_HEAD) {
        return None;
    }
    let cfg = parser_config();
    if complete && let Some((_, parsed)) = parse_whole_request(head) {
        return parsed;
    }
    let line_end = memchr::memchr(b'\n', head);
    let line = line_end.map_or(head, |e| &head[..=e]);
    let mut req = httparse::Request::new(&mut []);
    let _ = cfg.parse_request(&mut req, line);
    let method = req.method?;
    let target = match req.path {
        Some(p) => p.as_bytes(),
        None => {
            // The line was cut inside the target: keep what was captured.
            let rest = &line[method.len()..];
            let rest = &rest[skip_spaces(rest)..];
            let end = rest
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    let mut info = HeaderInfo::new(true);
    if let Some(e) = line_end {
        scan_header_lines(&head[e + 1..], &mut info);
    }
    Some(ParsedRequest {
        method: method.to_owned(),
        target: kept_value(target, MAX_TARGET_LEN),
        info,
        fallback: complete,
    })
}

fn skip_spaces(d: &[u8]) -> usize {
    d.iter().position(|&b| b != b' ').unwrap_or(d.len())
}

/// Parses a response head (RFC 9112 §4, §5); see [`parse_request_head`].
fn parse_response_head(head: &[u8], complete: bool) -> Option<ParsedResponse> {
    if check_status_line(head) == LineCheck::Invalid {
        return None;
    }
    let cfg = parser_config();
    if complete && let Some((_, parsed)) = parse_whole_response(head) {
        return parsed;
    }
    let line_end = memchr::memchr(b'\n', head);
    let line = line_end.map_or(head, |e| &head[..=e]);
    let mut resp = httparse::Response::new(&mut []);
    let _ = cfg.parse_response(&mut resp, line);
    let status = resp.code?;
    let mut info = HeaderInfo::new(false);
    if let Some(e) = line_end {
        scan_header_lines(&head[e + 1..], &mut info);
    }
    Some(ParsedResponse {
        status,
        framing: info.framing(),
        fallback: complete,
    })
}

impl Http1Connection {
    /// A connection seen from its start (`joined_midway == false`), or one that existed before
    /// the daemon started: then bytes are skipped until a request-direction segment starts
    /// with a valid request line, and responses before it are ignored.
    pub fn new(role: Role, joined_midway: bool) -> Self {
        Http1Connection {
            role,
            mode: if joined_midway {
                Mode::Syncing
            } else {
                Mode::Active
            },
            inexact: joined_midway,
            req: ReqSide {
                state: ReqState::Head,
                buf: HeadBuf::default(),
            },
            resp: RespSide {
                state: RespState::Head,
                buf: HeadBuf::default(),
                cur: None,
                last_ts: 0,
            },
            pending: VecDeque::new(),
            skip_responses: 0,
            next_seq: 0,
            upgrade: None,
            stats: Http1Stats::default(),
        }
    }

    /// After [`Verdict::SwitchToHttp2`] for an `h2c` upgrade: the upgrade request (HTTP/2
    /// stream 1) and where the HTTP/2 bytes start in the segment.
    pub fn take_h2c_upgrade(&mut self) -> Option<H2cUpgrade> {
        self.upgrade.take()
    }

    /// Requests awaiting their final response (at most [`MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one segment; completed exchanges are appended to `out`.
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        let request_dir = seg.direction == self.role.request_direction();
        match self.mode {
            Mode::Done(v) => return v,
            Mode::Tunnel | Mode::Closed => return Verdict::Continue,
            // No bytes moved (EOF reads, empty writes): nothing to see, not even a time.
            _ if seg_total(seg) == 0 => return Verdict::Continue,
            Mode::Syncing => {
                if !request_dir {
                    return Verdict::Continue;
                }
                let d = &seg.data[skip_empty_lines(seg.data)..];
                if d.starts_with(H2_PREFACE_HEAD) {
                    return self.finish(Verdict::SwitchToHttp2);
                }
                if !starts_with_request_line(d) {
                    return Verdict::Continue;
                }
                self.mode = Mode::Active;
            }
            Mode::Active => {}
        }
        if request_dir {
            self.on_request(seg, out)
        } else {
            self.on_response(seg, out)
        }
    }

    /// The connection closed at `ts_ns`: flushes what is in flight (see the type docs).
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if self.mode != Mode::Active {
            if !matches!(self.mode, Mode::Done(_)) {
                self.mode = Mode::Closed;
            }
            self.release();
            return;
        }
        let last = self.resp.last_ts;
        match self.resp.state {
            // RFC 9112 §6.3 item 8: the close is the end of the response.
            RespState::Body(Body::UntilClose | Body::UntilNextRequest) => {
                self.finish_response(last, false, out);
            }
            RespState::Body(_) => self.finish_response(last, true, out),
            RespState::Head if !self.resp.buf.bytes.is_empty() => {
                let status = parse_response_head(&self.resp.buf.bytes, false).map(|p| p.status);
                if let Some(status) = status.filter(|s| !(100..200).contains(s)) {
                    self.resp.cur = Some(CurResponse {
                        status,
                        matched: self.skip_responses == 0 && !self.pending.is_empty(),
                        body: 0,
                        count: false,
                    });
                    self.finish_response(last, true, out);
                }
            }
            RespState::Head | RespState::Lost => {}
        }
        if matches!(self.req.state, ReqState::Head)
            && !self.req.buf.bytes.is_empty()
            && let Some(p) = parse_request_head(&self.req.buf.bytes, false)
        {
            let start = self.req.buf.start_ns;
            self.push_request(p, start, true);
        }
        self.flush_pending(ts_ns, out);
        self.mode = Mode::Closed;
        self.release();
    }

    fn release(&mut self) {
        self.req.buf.clear();
        self.resp.buf.clear();
        self.pending.clear();
        self.req.state = ReqState::Head;
        self.resp.state = RespState::Head;
        self.resp.cur = None;
    }

    fn finish(&mut self, v: Verdict) -> Verdict {
        self.mode = Mode::Done(v);
        self.release();
        v
    }

    /// Emits every pending request as incomplete with no response.
    fn flush_pending(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        while let Some(p) = self.pending.pop_front() {
            if !p.hidden {
                out.push(exchange(p, None, 0, ts_ns, true));
            }
        }
    }

    /// Bytes that cannot be HTTP where a head must start.
    fn garbage(&mut self, request_dir: bool, ts_ns: u64, out: &mut Vec<Exchange>) -> Verdict {
        if !self.inexact {
            self.flush_pending(ts_ns, out);
            return self.finish(Verdict::NotHttp);
        }
        self.stats.resyncs += 1;
        if request_dir {
            self.req.buf.clear();
            self.req.state = ReqState::Lost;
        } else {
            self.resp.buf.clear();
            self.resp.state = RespState::Lost;
        }
        Verdict::Continue
    }

    fn heuristic(&mut self) {
        self.inexact = true;
        self.stats.resyncs += 1;
    }

    fn push_pending(&mut self, p: PendingRequest) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.dropped_pending += 1;
            self.pending.pop_front();
            match &mut self.resp.cur {
                // The dropped request's response is the one in flight: it becomes an orphan.
                Some(cur) if cur.matched => cur.matched = false,
                _ => self.skip_responses += 1,
            }
        }
        self.pending.push_back(p);
    }

    /// Records a request head; returns its sequence number.
    fn push_request(&mut self, p: ParsedRequest, start_ns: u64, partial: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let body = match p.info.framing() {
            Framing::Length(n) => n,
            _ => 0,
        };
        self.push_pending(PendingRequest {
            seq,
            hidden: false,
            is_head: p.method == "HEAD",
            is_connect: p.method == "CONNECT",
            method: p.method,
            target: p.target,
            authority: p.info.host,
            content_type: p.info.content_type,
            traceparent: p.info.traceparent,
            tracestate: p.info.tracestate,
            start_ns,
            body,
            partial,
            upgrade_h2c: p.info.upgrade_h2c,
        });
        seq
    }

    fn push_hidden(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.push_pending(PendingRequest {
            seq,
            hidden: true,
            method: String::new(),
            target: String::new(),
            authority: None,
            content_type: None,
            traceparent: None,
            tracestate: None,
            start_ns: 0,
            body: 0,
            partial: true,
            upgrade_h2c: false,
            is_head: false,
            is_connect: false,
        });
    }

    fn add_request_body(&mut self, seq: u64, n: u64) {
        if let Some(p) = self.pending.iter_mut().rev().find(|p| p.seq == seq) {
            p.body += n;
        }
    }

    /// A request head was parsed (or cut): queue it and choose how its body is delimited.
    fn start_request(&mut self, p: ParsedRequest, start_ns: u64, complete: bool) {
        if p.fallback {
            self.stats.header_fallbacks += 1;
        }
        let framing = p.info.framing();
        let is_connect = p.method == "CONNECT";
        let seq = self.push_request(p, start_ns, !complete);
        self.req.state = if !complete {
            self.heuristic();
            ReqState::Skip
        } else if is_connect {
            // The tunnel (if any) starts after the response; wait for it.
            ReqState::Skip
        } else {
            match framing {
                Framing::Length(0) | Framing::None => ReqState::Head,
                Framing::Length(n) => ReqState::Body {
                    body: Body::Length(n),
                    seq,
                    count: false,
                },
                Framing::Chunked => ReqState::Body {
                    body: Body::Chunked(Chunk::START),
                    seq,
                    count: true,
                },
                // RFC 9112 §6.3 items 4 and 5: the server would reject it; framing unknown.
                Framing::OtherCoding | Framing::Invalid => {
                    self.heuristic();
                    ReqState::Skip
                }
            }
        };
    }

    fn on_request(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        let data = seg.data;
        let resp_waits = matches!(
            self.resp.state,
            RespState::Body(Body::UntilNextRequest | Body::ChunkedResync)
        );
        let req_waits = matches!(
            self.req.state,
            ReqState::Skip
                | ReqState::Lost
                | ReqState::Body {
                    body: Body::ChunkedResync,
                    ..
                }
        );
        if (resp_waits || req_waits) && starts_with_request_line(data) {
            if resp_waits {
                let last = self.resp.last_ts;
                self.finish_response(last, false, out);
                self.resp.state = RespState::Head;
            }
            if req_waits {
                self.req.buf.clear();
                self.req.state = ReqState::Head;
            }
        }
        let mut pos = 0;
        while pos < data.len() {
            match self.req.state {
                ReqState::Head => {
                    if self.req.buf.bytes.is_empty() {
                        pos += skip_empty_lines(&data[pos..]);
                        if pos == data.len() {
                            break;
                        }
                        self.req.buf.start_ns = seg.ts_ns;
                    }
                    let rest = &data[pos..];
                    // The common case, a whole head at the start of the segment, takes one
                    // parser pass; the rest go through the head buffer.
                    let whole = if self.req.buf.bytes.is_empty() {
                        parse_whole_request(rest)
                    } else {
                        None
                    };
                    let step = match whole {
                        Some((n, _)) => HeadStep::Complete(n),
                        None => take_head(&mut self.req.buf, rest),
                    };
                    match step {
                        HeadStep::Complete(n) => {
                            let parsed = match whole {
                                Some((_, parsed)) => parsed,
                                None => {
                                    let head = if self.req.buf.bytes.is_empty() {
                                        &rest[..n]
                                    } else {
                                        &self.req.buf.bytes[..]
                                    };
                                    if head.starts_with(H2_PREFACE_HEAD) {
                                        self.flush_pending(seg.ts_ns, out);
                                        return self.finish(Verdict::SwitchToHttp2);
                                    }
                                    parse_request_head(head, true)
                                }
                            };
                            let Some(parsed) = parsed else {
                                return self.garbage(true, seg.ts_ns, out);
                            };
                            let start = self.req.buf.start_ns;
                            self.req.buf.clear();
                            pos += n;
                            self.start_request(parsed, start, true);
                        }
                        HeadStep::Partial => {
                            pos = data.len();
                            if !self.req.buf.line_ok {
                                match check_request_line(&self.req.buf.bytes) {
                                    LineCheck::Valid => self.req.buf.line_ok = true,
                                    LineCheck::Prefix => {}
                                    LineCheck::Invalid => {
                                        return self.garbage(true, seg.ts_ns, out);
                                    }
                                }
                            }
                        }
                        HeadStep::Overflow => {
                            self.stats.head_overflows += 1;
                            pos = data.len();
                            if let Some(v) = self.cut_request_head(seg.ts_ns, out) {
                                return v;
                            }
                        }
                    }
                }
                ReqState::Body {
                    mut body,
                    seq,
                    count,
                } => {
                    let (used, step) = body.visible(&data[pos..]);
                    pos += used;
                    if count {
                        self.add_request_body(seq, used as u64);
                    }
                    self.req.state = match step {
                        Step::More => ReqState::Body { body, seq, count },
                        Step::Done => ReqState::Head,
                        Step::Bad => {
                            self.heuristic();
                            ReqState::Skip
                        }
                    };
                }
                ReqState::Skip | ReqState::Lost => pos = data.len(),
            }
        }
        let unseen = seg_total(seg) - data.len() as u64;
        if unseen > 0 {
            match self.req.state {
                ReqState::Head if !self.req.buf.bytes.is_empty() => {
                    // The head goes on beyond the capture.
                    if let Some(v) = self.cut_request_head(seg.ts_ns, out) {
                        return v;
                    }
                }
                ReqState::Head => self.lose_request_boundary(),
                ReqState::Body {
                    mut body,
                    seq,
                    count,
                } => {
                    let (used, step, lost) = body.unseen(unseen);
                    if count {
                        self.add_request_body(seq, used);
                    }
                    if lost {
                        self.heuristic();
                    }
                    self.req.state = ReqState::Body { body, seq, count };
                    if step == Step::Done {
                        self.req.state = ReqState::Head;
                        if used < unseen {
                            self.lose_request_boundary();
                        }
                    }
                }
                ReqState::Skip | ReqState::Lost => {}
            }
        }
        if let ReqState::Body {
            body: Body::ChunkedResync,
            ..
        } = self.req.state
            && ends_with_last_chunk(seg)
        {
            self.req.state = ReqState::Head;
        }
        Verdict::Continue
    }

    /// A request head whose end is unseen: keep its request line and wait.
    fn cut_request_head(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) -> Option<Verdict> {
        let parsed = parse_request_head(&self.req.buf.bytes, false);
        let start = self.req.buf.start_ns;
        self.req.buf.clear();
        match parsed {
            Some(p) => {
                self.start_request(p, start, false);
                None
            }
            None => Some(self.garbage(true, ts_ns, out)),
        }
    }

    /// Unseen request bytes hold the start of a request.
    fn lose_request_boundary(&mut self) {
        self.heuristic();
        self.push_hidden();
        self.req.state = ReqState::Lost;
    }

    fn on_response(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        let data = seg.data;
        if matches!(
            self.req.state,
            ReqState::Skip
                | ReqState::Body {
                    body: Body::ChunkedResync,
                    ..
                }
        ) {
            // A request whose end was unknown ends when its response starts.
            self.req.state = ReqState::Head;
        }
        let waits = matches!(
            self.resp.state,
            RespState::Lost | RespState::Body(Body::UntilNextRequest)
        );
        if waits && starts_with_status_line(data) {
            if let RespState::Body(_) = self.resp.state {
                let last = self.resp.last_ts;
                self.finish_response(last, false, out);
            }
            self.resp.buf.clear();
            self.resp.state = RespState::Head;
        }
        self.resp.last_ts = seg.ts_ns;
        let mut pos = 0;
        while pos < data.len() {
            match self.resp.state {
                RespState::Head => {
                    if self.resp.buf.bytes.is_empty() {
                        pos += skip_empty_lines(&data[pos..]);
                        if pos == data.len() {
                            break;
                        }
                        self.resp.buf.start_ns = seg.ts_ns;
                    }
                    let rest = &data[pos..];
                    // As for requests: a whole head at the start takes one parser pass.
                    let whole = if self.resp.buf.bytes.is_empty() {
                        parse_whole_response(rest)
                    } else {
                        None
                    };
                    let step = match whole {
                        Some((n, _)) => HeadStep::Complete(n),
                        None => take_head(&mut self.resp.buf, rest),
                    };
                    match step {
                        HeadStep::Complete(n) => {
                            let parsed = match whole {
                                Some((_, parsed)) => parsed,
                                None => {
                                    let head = if self.resp.buf.bytes.is_empty() {
                                        &rest[..n]
                                    } else {
                                        &self.resp.buf.bytes[..]
                                    };
                                    parse_response_head(head, true)
                                }
                            };
                            let Some(parsed) = parsed else {
                                return self.garbage(false, seg.ts_ns, out);
                            };
                            self.resp.buf.clear();
                            pos += n;
                            if let Some(v) = self.start_response(parsed, seg.ts_ns, true, out) {
                                if let Some(u) = &mut self.upgrade {
                                    u.http2_offset = Some(pos);
                                }
                                return v;
                            }
                        }
                        HeadStep::Partial => {
                            pos = data.len();
                            if !self.resp.buf.line_ok {
                                match check_status_line(&self.resp.buf.bytes) {
                                    LineCheck::Valid => self.resp.buf.line_ok = true,
                                    LineCheck::Prefix => {}
                                    LineCheck::Invalid => {
                                        return self.garbage(false, seg.ts_ns, out);
                                    }
                                }
                            }
                        }
                        HeadStep::Overflow => {
                            self.stats.head_overflows += 1;
                            pos = data.len();
                            if let Some(v) = self.cut_response_head(seg.ts_ns, out) {
                                return v;
                            }
                        }
                    }
                }
                RespState::Body(mut body) => {
                    let (used, step) = body.visible(&data[pos..]);
                    pos += used;
                    if let Some(cur) = &mut self.resp.cur {
                        cur.body += used as u64;
                    }
                    self.resp.state = RespState::Body(body);
                    match step {
                        Step::More => {}
                        Step::Done => {
                            self.finish_response(seg.ts_ns, false, out);
                            self.resp.state = RespState::Head;
                        }
                        Step::Bad => {
                            self.heuristic();
                            self.resp.state = RespState::Body(Body::UntilNextRequest);
                        }
                    }
                }
                RespState::Lost => pos = data.len(),
            }
            if self.mode != Mode::Active {
                // Upgraded to a tunnel: the rest is not HTTP/1.
                return Verdict::Continue;
            }
        }
        let unseen = seg_total(seg) - data.len() as u64;
        if unseen > 0 {
            match self.resp.state {
                RespState::Head if !self.resp.buf.bytes.is_empty() => {
                    if let Some(v) = self.cut_response_head(seg.ts_ns, out) {
                        return v;
                    }
                }
                RespState::Head => {
                    self.heuristic();
                    self.resp.state = RespState::Lost;
                }
                RespState::Body(mut body) => {
                    let (used, step, lost) = body.unseen(unseen);
                    if let Some(cur) = &mut self.resp.cur {
                        cur.body += used;
                    }
                    if lost {
                        self.heuristic();
                    }
                    self.resp.state = RespState::Body(body);
                    if step == Step::Done {
                        self.finish_response(seg.ts_ns, false, out);
                        self.resp.state = RespState::Head;
                        if used < unseen {
                            self.heuristic();
                            self.resp.state = RespState::Lost;
                        }
                    }
                }
                RespState::Lost => {}
            }
        }
        if let RespState::Body(Body::ChunkedResync) = self.resp.state
            && ends_with_last_chunk(seg)
        {
            self.finish_response(seg.ts_ns, false, out);
            self.resp.state = RespState::Head;
        }
        Verdict::Continue
    }

    /// A response head whose end is unseen: keep its status and wait.
    fn cut_response_head(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) -> Option<Verdict> {
        let parsed = parse_response_head(&self.resp.buf.bytes, false);
        self.resp.buf.clear();
        match parsed {
            Some(p) => self.start_response(p, ts_ns, false, out),
            None => Some(self.garbage(false, ts_ns, out)),
        }
    }

    /// A response head was parsed (or cut): pair it and choose how its body is delimited
    /// (RFC 9112 §6.3). Returns a verdict other than `Continue` to stop.
    fn start_response(
        &mut self,
        p: ParsedResponse,
        ts_ns: u64,
        complete: bool,
        out: &mut Vec<Exchange>,
    ) -> Option<Verdict> {
        if p.fallback {
            self.stats.header_fallbacks += 1;
        }
        let status = p.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim response (RFC 9110 §15.2): the final one is still to come. When its end
            // was unseen, wait for a segment starting with the next status line.
            if !complete {
                self.heuristic();
                self.resp.state = RespState::Lost;
            }
            return None;
        }
        let matched = if self.skip_responses > 0 {
            self.skip_responses -= 1;
            false
        } else {
            !self.pending.is_empty()
        };
        let front = self.pending.front().filter(|_| matched);
        if matched && front.is_some_and(|f| f.hidden) {
            // Pairs with unseen request bytes: consumed, not emitted.
        } else if !matched {
            self.stats.orphan_responses += 1;
        }
        let (is_head, is_connect, h2c) = front.map_or((false, false, false), |f| {
            (f.is_head, f.is_connect, f.upgrade_h2c)
        });
        self.resp.cur = Some(CurResponse {
            status,
            matched,
            body: 0,
            count: complete,
        });
        if status == 101 {
            if h2c {
                self.resp.cur = None;
                if let Some(p) = self.pending.pop_front().filter(|p| !p.hidden) {
                    let mut request = exchange(p, None, 0, ts_ns, false);
                    request.protocol = Some(Protocol::Http2);
                    request.stream_id = 1;
                    self.upgrade = Some(H2cUpgrade {
                        request,
                        http2_offset: None,
                    });
                }
                let v = self.finish(Verdict::SwitchToHttp2);
                return Some(v);
            }
            self.finish_response(ts_ns, false, out);
            self.mode = Mode::Tunnel;
            self.release();
            return None;
        }
        if is_connect && (200..300).contains(&status) {
            self.finish_response(ts_ns, false, out);
            self.mode = Mode::Tunnel;
            self.release();
            return None;
        }
        if !complete {
            self.heuristic();
            self.resp.state = RespState::Body(Body::UntilNextRequest);
            return None;
        }
        let body = if is_head || status < 200 || status == 204 || status == 304 {
            None
        } else {
            match p.framing {
                Framing::Length(0) => None,
                Framing::Length(n) => Some(Body::Length(n)),
                Framing::Chunked => Some(Body::Chunked(Chunk::START)),
                Framing::OtherCoding | Framing::None => Some(Body::UntilClose),
                Framing::Invalid => {
                    self.heuristic();
                    Some(Body::UntilNextRequest)
                }
            }
        };
        match body {
            None => {
                self.finish_response(ts_ns, false, out);
                self.resp.state = RespState::Head;
            }
            Some(b) => self.resp.state = RespState::Body(b),
        }
        None
    }

    /// The current response ended (its last byte was seen at `end_ns`).
    fn finish_response(&mut self, end_ns: u64, incomplete: bool, out: &mut Vec<Exchange>) {
        let Some(cur) = self.resp.cur.take() else {
            return;
        };
        if !cur.matched {
            return;
        }
        if let Some(p) = self.pending.pop_front()
            && !p.hidden
        {
            let body = if cur.count { cur.body } else { 0 };
            out.push(exchange(p, Some(cur.status), body, end_ns, incomplete));
        }
    }
}

fn exchange(
    p: PendingRequest,
    status: Option<u16>,
    response_body_size: u64,
    end_ns: u64,
    incomplete: bool,
) -> Exchange {
    Exchange {
        protocol: Some(Protocol::Http1),
        method: p.method,
        target: p.target,
        authority: p.authority,
        scheme: None,
        status,
        grpc_status: None,
        content_type: p.content_type,
        traceparent: p.traceparent,
        tracestate: p.tracestate,
        start_ns: p.start_ns,
        end_ns: end_ns.max(p.start_ns),
        request_body_size: p.body,
        response_body_size,
        stream_id: 0,
        flags: ExchangeFlags {
            partial: p.partial,
            incomplete,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Extents};
    use super::*;

    const REQ: Direction = Direction::Ingress;
    const RESP: Direction = Direction::Egress;

    /// One syscall's worth of bytes in a conversation, seen by a server.
    type Msg<'a> = (Direction, &'a [u8]);

    fn seg(direction: Direction, ts_ns: u64, data: &[u8]) -> Segment<'_> {
        Segment {
            direction,
            ts_ns,
            data,
            total_len: data.len() as u64,
            extents: Extents::EMPTY,
        }
    }

    /// A segment whose capture holds only the first `bound` bytes of `full`.
    fn capped(direction: Direction, ts_ns: u64, full: &[u8], bound: usize) -> Segment<'_> {
        if full.len() <= bound {
            return seg(direction, ts_ns, full);
        }
        Segment {
            direction,
            ts_ns,
            data: &full[..bound],
            total_len: full.len() as u64,
            extents: Extents::test_tail(full, 8),
        }
    }

    struct Run {
        conn: Http1Connection,
        out: Vec<Exchange>,
        verdicts: Vec<Verdict>,
    }

    impl Run {
        fn new(joined_midway: bool) -> Self {
            Run {
                conn: Http1Connection::new(Role::Server, joined_midway),
                out: Vec::new(),
                verdicts: Vec::new(),
            }
        }
        fn feed(&mut self, s: Segment<'_>) -> Verdict {
            let v = self.conn.on_segment(&s, &mut self.out);
            self.verdicts.push(v);
            v
        }
        fn send(&mut self, dir: Direction, ts: u64, data: &[u8]) -> Verdict {
            self.feed(seg(dir, ts, data))
        }
        fn close(&mut self, ts: u64) {
            self.conn.on_close(ts, &mut self.out);
        }
        fn last(&self) -> Verdict {
            *self.verdicts.last().unwrap_or(&Verdict::Continue)
        }
    }

    /// Feeds `steps` (each cut into pieces by `cuts`), the pieces of step `i` at time `i + 1`.
    fn run_with(steps: &[Msg<'_>], close: bool, cuts: impl Fn(usize, &[u8]) -> Vec<usize>) -> Run {
        let mut r = Run::new(false);
        for (i, (dir, bytes)) in steps.iter().enumerate() {
            let mut start = 0;
            for end in cuts(i, bytes).into_iter().chain([bytes.len()]) {
                if end > start {
                    r.send(*dir, i as u64 + 1, &bytes[start..end]);
                    start = end;
                }
            }
        }
        if close {
            r.close(1000);
        }
        r
    }

    fn run(steps: &[Msg<'_>], close: bool) -> Run {
        run_with(steps, close, |_, _| Vec::new())
    }

    /// (method, target, status, request body, response body, incomplete)
    type Summary = (&'static str, &'static str, Option<u16>, u64, u64, bool);

    fn summary(e: &Exchange) -> (String, String, Option<u16>, u64, u64, bool) {
        (
            e.method.clone(),
            e.target.clone(),
            e.status,
            e.request_body_size,
            e.response_body_size,
            e.flags.incomplete,
        )
    }

    fn assert_summaries(got: &[Exchange], want: &[Summary]) {
        let got: Vec<_> = got.iter().map(summary).collect();
        let want: Vec<_> = want
            .iter()
            .map(|&(m, t, s, rq, rs, inc)| (m.to_owned(), t.to_owned(), s, rq, rs, inc))
            .collect();
        assert_eq!(got, want);
    }

    struct Case {
        name: &'static str,
        steps: Vec<Msg<'static>>,
        close: bool,
        want: Vec<Summary>,
    }

    const GET: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nAuthorization: Bearer s3cr3t\r\n\r\n";
    const OK5: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    const CHUNKED_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;name=\"val\"\r\nWiki\r\n5\r\npedia\r\nE ; x=y\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n";

    fn cases() -> Vec<Case> {
        let chunked_len = (CHUNKED_RESP.len()
            - CHUNKED_RESP
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap()
            - 4) as u64;
        vec![
            Case {
                name: "simple get",
                steps: vec![(REQ, GET), (RESP, OK5)],
                close: false,
                want: vec![("GET", "/a?b=1", Some(200), 0, 5, false)],
            },
            Case {
                name: "keep-alive x3",
                steps: vec![
                    (REQ, GET),
                    (RESP, OK5),
                    (REQ, b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
                    (RESP, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                    (REQ, b"DELETE /3 HTTP/1.1\r\n\r\n"),
                    (RESP, OK5),
                ],
                close: false,
                want: vec![
                    ("GET", "/a?b=1", Some(200), 0, 5, false),
                    ("GET", "/2", Some(404), 0, 0, false),
                    ("DELETE", "/3", Some(200), 0, 5, false),
                ],
            },
            Case {
                name: "pipelined",
                steps: vec![
                    (REQ, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\n\r\n"),
                    (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
                    (RESP, b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"),
                ],
                close: false,
                want: vec![
                    ("GET", "/1", Some(200), 0, 1, false),
                    ("POST", "/2", Some(201), 3, 0, false),
                    ("GET", "/3", Some(500), 0, 11, false),
                ],
            },
            Case {
                name: "chunked request and response with extensions and trailers",
                steps: vec![
                    (REQ, b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2;ext=1\r\n{}\r\n0\r\nX-Sum: 1\r\n\r\n"),
                    (RESP, CHUNKED_RESP),
                ],
                close: false,
                want: vec![("POST", "/up", Some(200), 28, chunked_len, false)],
            },
            Case {
                name: "expect 100-continue",
                steps: vec![
                    (REQ, b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
                    (RESP, b"HTTP/1.1 100 Continue\r\n\r\n"),
                    (REQ, b"data"),
                    (RESP, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
                ],
                close: false,
                want: vec![("PUT", "/f", Some(201), 4, 2, false)],
            },
            Case {
                name: "HEAD, 204 and 304 have no body",
                steps: vec![
                    (REQ, b"HEAD /h HTTP/1.1\r\n\r\n"),
                    (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
                    (REQ, b"GET /n HTTP/1.1\r\n\r\n"),
                    (RESP, b"HTTP/1.1 204 No Content\r\n\r\n"),
                    (REQ, b"GET /c HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n"),
                    (RESP, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
                    (REQ, b"GET /after HTTP/1.1\r\n\r\n"),
                    (RESP, OK5),
                ],
                close: false,
                want: vec![
                    ("HEAD", "/h", Some(200), 0, 0, false),
                    ("GET", "/n", Some(204), 0, 0, false),
                    ("GET", "/c", Some(304), 0, 0, false),
                    ("GET", "/after", Some(200), 0, 5, false),
                ],
            },
            Case {
                name: "HTTP/1.0 close-delimited",
                steps: vec![
                    (REQ, b"GET /old HTTP/1.0\r\n\r\n"),
                    (RESP, b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>"),
                    (RESP, b"</html>"),
                ],
                close: true,
                want: vec![("GET", "/old", Some(200), 0, 13, false)],
            },
            Case {
                name: "closed mid-response",
                steps: vec![(REQ, GET), (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")],
                close: true,
                want: vec![("GET", "/a?b=1", Some(200), 0, 3, true)],
            },
            Case {
                name: "closed without response",
                steps: vec![(REQ, GET), (REQ, b"GET /x HTTP/1.1\r\n\r\n")],
                close: true,
                want: vec![
                    ("GET", "/a?b=1", None, 0, 0, true),
                    ("GET", "/x", None, 0, 0, true),
                ],
            },
            Case {
                name: "bare LF line endings and leading empty lines",
                steps: vec![
                    (REQ, b"\r\nGET /lf HTTP/1.1\nHost: h\n\n"),
                    (RESP, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
                ],
                close: false,
                want: vec![("GET", "/lf", Some(200), 0, 2, false)],
            },
            Case {
                name: "websocket upgrade",
                steps: vec![
                    (REQ, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                    (RESP, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
                    (REQ, b"\x81\x85garbage"),
                ],
                close: true,
                want: vec![("GET", "/ws", Some(101), 0, 0, false)],
            },
        ]
    }

    #[test]
    fn table_whole_segments() {
        for c in cases() {
            let r = run(&c.steps, c.close);
            assert!(
                r.verdicts.iter().all(|v| *v == Verdict::Continue),
                "{}",
                c.name
            );
            let got: Vec<_> = r.out.iter().map(summary).collect();
            let want: Vec<_> = c
                .want
                .iter()
                .map(|&(m, t, s, rq, rs, inc)| (m.to_owned(), t.to_owned(), s, rq, rs, inc))
                .collect();
            assert_eq!(got, want, "{}", c.name);
            assert_eq!(r.conn.pending(), 0, "{}", c.name);
        }
    }

    #[test]
    fn table_split_at_every_byte() {
        for c in cases() {
            let base = run(&c.steps, c.close).out;
            for (s, (_, bytes)) in c.steps.iter().enumerate() {
                for i in 1..bytes.len() {
                    let r = run_with(
                        &c.steps,
                        c.close,
                        |k, _| if k == s { vec![i] } else { vec![] },
                    );
                    assert_eq!(r.out, base, "{}: step {s} split at {i}", c.name);
                    assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
                }
            }
        }
    }

    #[test]
    fn table_split_everywhere_at_once() {
        for c in cases() {
            let base = run(&c.steps, c.close).out;
            let r = run_with(&c.steps, c.close, |_, b| (1..b.len()).collect());
            assert_eq!(r.out, base, "{}: one-byte segments", c.name);
            for n in [2, 3, 7] {
                let r = run_with(&c.steps, c.close, |_, b| (1..b.len()).step_by(n).collect());
                assert_eq!(r.out, base, "{}: {n}-byte segments", c.name);
            }
        }
    }

    #[test]
    fn table_every_prefix_is_partial() {
        for c in cases() {
            let full = run(&c.steps, false);
            for (s, (dir, bytes)) in c.steps.iter().enumerate() {
                let before = run(&c.steps[..s], false).out;
                let after = run(&c.steps[..=s], false).out;
                for p in 0..bytes.len() {
                    let mut r = run(&c.steps[..s], false);
                    let v = r.send(*dir, 99, &bytes[..p]);
                    assert_eq!(v, Verdict::Continue, "{}: step {s} prefix {p}", c.name);
                    assert!(r.out.len() >= before.len() && r.out.len() <= after.len());
                    let got: Vec<_> = r.out.iter().map(summary).collect();
                    let want: Vec<_> = full.out[..r.out.len()].iter().map(summary).collect();
                    assert_eq!(got, want, "{}", c.name);
                }
            }
        }
    }

    #[test]
    fn kept_fields() {
        let mut r = Run::new(false);
        r.send(REQ, 5, b"POST /x HTTP/1.1\r\nhOsT: svc:8080\r\nCONTENT-TYPE: application/json\r\ntraceparent: 00-aa-bb-01\r\nTraceState: k=v\r\nCookie: id=secret\r\nContent-Length: 2\r\n\r\n{}");
        r.send(RESP, 9, OK5);
        assert_eq!(r.out.len(), 1);
        let e = &r.out[0];
        assert_eq!(e.protocol, Some(Protocol::Http1));
        assert_eq!(e.authority.as_deref(), Some("svc:8080"));
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(e.traceparent.as_deref(), Some("00-aa-bb-01"));
        assert_eq!(e.tracestate.as_deref(), Some("k=v"));
        assert_eq!(e.scheme, None);
        assert_eq!(e.stream_id, 0);
        assert_eq!((e.start_ns, e.end_ns), (5, 9));
        assert_eq!(e.flags, ExchangeFlags::default());
    }

    #[test]
    fn timestamps_follow_first_and_last_bytes() {
        let mut r = Run::new(false);
        r.send(REQ, 10, b"\r\n");
        r.send(REQ, 11, b"GET /t HTT");
        r.send(REQ, 12, b"P/1.1\r\nHost: h\r\n\r");
        r.send(REQ, 13, b"\n");
        r.send(RESP, 20, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        r.send(RESP, 30, b"cd");
        r.send(REQ, 40, b"GET /u HTTP/1.1\r\n\r\n");
        r.send(RESP, 50, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        r.send(RESP, 60, b"body");
        r.close(70);
        assert_eq!(r.out.len(), 2);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (11, 30));
        assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (40, 60));
        assert_eq!(r.out[1].response_body_size, 4);
        assert!(!r.out[1].flags.incomplete);
    }

    #[test]
    fn no_response_incomplete_ends_at_close() {
        let mut r = Run::new(false);
        r.send(REQ, 10, GET);
        r.close(77);
        assert_eq!(r.out.len(), 1);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (10, 77));
        assert!(r.out[0].flags.incomplete);
        assert_eq!(r.out[0].status, None);
        // Closing twice, or feeding after close, does nothing.
        r.close(80);
        assert_eq!(r.send(REQ, 81, GET), Verdict::Continue);
        assert_eq!(r.out.len(), 1);
    }

    #[test]
    fn closed_mid_head_and_mid_chunked() {
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(RESP, 2, b"HTTP/1.1 503 Unavailable\r\nContent-Le");
        r.close(3);
        assert_summaries(&r.out, &[("GET", "/a?b=1", Some(503), 0, 0, true)]);

        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(
            RESP,
            2,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        );
        r.close(3);
        assert_summaries(&r.out, &[("GET", "/a?b=1", Some(200), 0, 5, true)]);

        // A request head cut by the close still names its request.
        let mut r = Run::new(false);
        r.send(REQ, 1, b"GET /cut HTTP/1.1\r\nHost: h");
        r.close(3);
        assert_summaries(&r.out, &[("GET", "/cut", None, 0, 0, true)]);
    }

    #[test]
    fn keep_alive_many() {
        let mut r = Run::new(false);
        for i in 0..500u64 {
            r.send(REQ, 2 * i, GET);
            assert_eq!(r.conn.pending(), 1);
            r.send(RESP, 2 * i + 1, OK5);
            assert_eq!(r.conn.pending(), 0);
        }
        assert_eq!(r.out.len(), 500);
        assert!(
            r.out
                .iter()
                .all(|e| e.status == Some(200) && e.end_ns == e.start_ns + 1)
        );
    }

    #[test]
    fn pipelining_limit_drops_oldest() {
        let mut r = Run::new(false);
        let mut all = Vec::new();
        for i in 0..(MAX_PENDING + 10) {
            all.extend_from_slice(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
        }
        r.send(REQ, 1, &all);
        assert_eq!(r.conn.pending(), MAX_PENDING);
        assert_eq!(r.conn.stats.dropped_pending, 10);
        let mut resp = Vec::new();
        for i in 0..(MAX_PENDING + 10) {
            resp.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{i}",
                    i.to_string().len()
                )
                .as_bytes(),
            );
        }
        r.send(RESP, 2, &resp);
        assert_eq!(r.out.len(), MAX_PENDING);
        // FIFO pairing survived the drops: /10 got the 11th response ("10").
        assert_eq!(r.out[0].target, "/10");
        assert_eq!(r.out[0].response_body_size, 2);
        assert_eq!(
            r.out.last().unwrap().target,
            format!("/{}", MAX_PENDING + 9)
        );
        assert_eq!(r.conn.pending(), 0);
    }

    #[test]
    fn too_many_headers_still_parsed() {
        let mut head = b"POST /many HTTP/1.1\r\nHost: big\r\n".to_vec();
        for i in 0..200 {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 3\r\n\r\nabc");
        let mut r = Run::new(false);
        r.send(REQ, 1, &head);
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            resp.extend_from_slice(format!("X-R{i}: v\r\n").as_bytes());
        }
        resp.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        r.send(RESP, 2, &resp);
        assert_summaries(&r.out, &[("POST", "/many", Some(200), 3, 2, false)]);
        assert_eq!(r.out[0].authority.as_deref(), Some("big"));
        assert_eq!(r.conn.stats.header_fallbacks, 2);
    }

    #[test]
    fn head_overflow_is_bounded() {
        let mut r = Run::new(false);
        r.send(REQ, 1, b"GET /huge HTTP/1.1\r\n");
        let filler = [b'a'; 1000];
        for _ in 0..100 {
            r.send(REQ, 2, b"X-Big: ");
            assert_eq!(r.send(REQ, 2, &filler), Verdict::Continue);
            r.send(REQ, 2, b"\r\n");
            assert!(r.conn.req.buf.bytes.len() <= MAX_HEAD_BYTES);
        }
        r.send(REQ, 3, b"\r\n");
        assert_eq!(r.conn.stats.head_overflows, 1);
        r.send(RESP, 4, OK5);
        r.send(REQ, 5, b"GET /next HTTP/1.1\r\n\r\n");
        r.send(RESP, 6, OK5);
        assert_summaries(
            &r.out,
            &[
                ("GET", "/huge", Some(200), 0, 5, false),
                ("GET", "/next", Some(200), 0, 5, false),
            ],
        );
        assert!(r.out[0].flags.partial);
    }

    #[test]
    fn truncated_capture_content_length_exact() {
        let mut post =
            b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n".to_vec();
        post.extend(std::iter::repeat_n(b'x', 10000));
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_vec();
        resp.extend(std::iter::repeat_n(b'y', 20000));
        for bound in [64, 100, 1024, 4096] {
            let mut r = Run::new(false);
            for i in 0..3u64 {
                r.feed(capped(REQ, 10 * i, &post, bound));
                r.feed(capped(RESP, 10 * i + 5, &resp, bound));
            }
            // Pipelined in one syscall: the next request begins right after the unseen body.
            let mut two = post.clone();
            two.extend_from_slice(b"GET /tiny HTTP/1.1\r\n\r\n");
            r.feed(Segment {
                direction: REQ,
                ts_ns: 100,
                data: &two[..bound],
                total_len: two.len() as u64,
                extents: Extents::test_tail(&two, 8),
            });
            r.feed(capped(RESP, 105, &resp, bound));
            r.feed(capped(RESP, 106, &resp, bound));
            assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
            assert_eq!(r.out.len(), 4, "bound {bound}");
            for e in &r.out {
                assert_eq!((e.method.as_str(), e.target.as_str()), ("POST", "/upload"));
                assert_eq!((e.request_body_size, e.response_body_size), (10000, 20000));
                assert_eq!(e.status, Some(200));
                assert_eq!(e.end_ns, e.start_ns + 5);
            }
            // The hidden request pairs with the last response but emits nothing.
            assert_eq!(r.conn.pending(), 0);
        }
    }

    #[test]
    fn truncated_capture_chunked() {
        // Large chunk whose size line is seen: exact through unseen data; the tail ends it.
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n".to_vec();
        resp.extend(std::iter::repeat_n(b'z', 0x2710));
        let head_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        resp.extend_from_slice(b"\r\n0\r\n\r\n");
        let body_len = (resp.len() - head_len) as u64;
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.feed(capped(RESP, 2, &resp, 1024));
        r.send(REQ, 3, GET);
        // The same, with the chunk data and the last chunk in later syscalls (exact).
        r.feed(capped(RESP, 4, &resp[..head_len + 6 + 5000], 1024));
        r.feed(capped(
            RESP,
            5,
            &resp[head_len + 6 + 5000..resp.len() - 5],
            1024,
        ));
        r.send(RESP, 6, b"0\r\n\r\n");
        // Chunk-size lines unseen: resync on the segment whose tail is the last chunk.
        let mut many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..50 {
            many.extend_from_slice(b"40\r\n");
            many.extend(std::iter::repeat_n(b'q', 0x40));
            many.extend_from_slice(b"\r\n");
        }
        let many_body = (many.len() - head_len) as u64 + 5;
        r.send(REQ, 7, GET);
        r.feed(capped(RESP, 8, &many, 512));
        r.feed(capped(RESP, 9, &many[head_len..], 512));
        r.send(RESP, 10, b"0\r\n\r\n");
        r.send(REQ, 11, GET);
        r.send(RESP, 12, OK5);
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
        let ends: Vec<_> = r
            .out
            .iter()
            .map(|e| (e.end_ns, e.response_body_size))
            .collect();
        assert_eq!(
            ends,
            vec![
                (2, body_len),
                (6, body_len),
                (10, many_body + (many.len() - head_len) as u64),
                (12, 5)
            ]
        );
        // One resync per segment whose unseen bytes run past the current chunk's data: segment
        // 2 (the rest of the data and the last chunk), 5 (the CRLF after the data) and 8 (the
        // unseen chunk-size lines). Segment 4 ends inside the data and stays exact; 9 is
        // already resyncing.
        assert_eq!(r.conn.stats.resyncs, 3);
    }

    #[test]
    fn truncated_chunked_request() {
        let mut post = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let head_len = post.len() as u64;
        for _ in 0..40 {
            post.extend_from_slice(b"40\r\n");
            post.extend(std::iter::repeat_n(b'q', 0x40));
            post.extend_from_slice(b"\r\n");
        }
        post.extend_from_slice(b"0\r\n\r\n");
        let mut r = Run::new(false);
        r.feed(capped(REQ, 1, &post, 300));
        r.send(RESP, 2, OK5);
        r.send(REQ, 3, b"GET /next HTTP/1.1\r\n\r\n");
        r.send(RESP, 4, OK5);
        assert_summaries(
            &r.out,
            &[
                (
                    "POST",
                    "/c",
                    Some(200),
                    post.len() as u64 - head_len,
                    5,
                    false,
                ),
                ("GET", "/next", Some(200), 0, 5, false),
            ],
        );
    }

    #[test]
    fn truncated_heads_resync() {
        // A request head larger than the capture: method and target survive, partial.
        let mut req = b"GET /big?q=1 HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
        req.extend(std::iter::repeat_n(b'c', 3000));
        req.extend_from_slice(b"\r\n\r\n");
        let mut resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: ".to_vec();
        resp.extend(std::iter::repeat_n(b's', 3000));
        resp.extend_from_slice(b"\r\nContent-Length: 3\r\n\r\nabc");
        let mut r = Run::new(false);
        r.feed(capped(REQ, 1, &req, 1024));
        assert_eq!(r.conn.pending(), 1);
        r.feed(capped(RESP, 2, &resp, 1024));
        r.send(RESP, 3, b"more response bytes");
        r.send(REQ, 4, b"GET /small HTTP/1.1\r\n\r\n");
        r.send(RESP, 5, OK5);
        r.close(6);
        assert_summaries(
            &r.out,
            &[
                ("GET", "/big?q=1", Some(200), 0, 0, false),
                ("GET", "/small", Some(200), 0, 5, false),
            ],
        );
        assert_eq!(r.out[0].authority.as_deref(), Some("h"));
        assert!(r.out[0].flags.partial);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (1, 3));
        // The cut request head (segment 1) and the cut response head (2); the rest of the
        // response (3) is skipped in the state the second entered, without another.
        assert_eq!(r.conn.stats.resyncs, 2);
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
    }

    #[test]
    fn not_http() {
        let inputs: &[&[u8]] = &[
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"*1\r\n$4\r\nPING\r\n",
            b"\x00\x00\x00\x01\x02",
            b"get / http/1.1\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
            b"GET /\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ];
        for i in inputs {
            let mut r = Run::new(false);
            assert_eq!(
                r.send(REQ, 1, i),
                Verdict::NotHttp,
                "{:?}",
                String::from_utf8_lossy(i)
            );
            // Sticky.
            assert_eq!(r.send(REQ, 2, GET), Verdict::NotHttp);
            // Byte by byte, detected as soon as possible and never earlier than "invalid".
            let mut r = Run::new(false);
            let v: Vec<_> = i
                .iter()
                .map(|b| r.send(REQ, 1, std::slice::from_ref(b)))
                .collect();
            assert_eq!(*v.last().unwrap(), Verdict::NotHttp);
        }
        // A line without CRLF longer than the limit.
        let mut r = Run::new(false);
        assert_eq!(r.send(REQ, 1, b"GET /"), Verdict::Continue);
        let long = vec![b'a'; MAX_START_LINE];
        assert_eq!(r.send(REQ, 2, &long), Verdict::NotHttp);
        // A long token with no space is not a method.
        let mut r = Run::new(false);
        assert_eq!(
            r.send(REQ, 1, &[b'A'; MAX_METHOD_LEN + 1]),
            Verdict::NotHttp
        );
        // A server speaking first with something that is not a status line.
        let mut r = Run::new(false);
        assert_eq!(
            r.send(RESP, 1, b"220 smtp.example.com ESMTP\r\n"),
            Verdict::NotHttp
        );
        // Garbage later where a request must start.
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(RESP, 2, OK5);
        assert_eq!(r.send(REQ, 3, b"\x16\x03\x01"), Verdict::NotHttp);
        assert_eq!(r.out.len(), 1);
    }

    #[test]
    fn joined_midway_syncs_on_request_line() {
        let mut r = Run::new(true);
        // The tail of an old response and body bytes: ignored.
        assert_eq!(
            r.send(RESP, 1, b"tail of a body\r\n0\r\n\r\n"),
            Verdict::Continue
        );
        assert_eq!(r.send(REQ, 2, b"\x16\x03garbage"), Verdict::Continue);
        assert_eq!(r.send(REQ, 3, b"d\": 1}"), Verdict::Continue);
        assert_eq!(r.send(RESP, 4, OK5), Verdict::Continue);
        assert!(r.out.is_empty());
        r.send(REQ, 5, GET);
        r.send(RESP, 6, OK5);
        assert_summaries(&r.out, &[("GET", "/a?b=1", Some(200), 0, 5, false)]);
        // After sync, garbage means lost sync (not NotHttp): wait for the next request line.
        assert_eq!(r.send(REQ, 7, b"\x00\x01binary"), Verdict::Continue);
        r.send(REQ, 8, b"GET /again HTTP/1.1\r\n\r\n");
        r.send(RESP, 9, OK5);
        assert_eq!(r.out.len(), 2);
        assert_eq!(r.out[1].target, "/again");
    }

    #[test]
    fn switch_to_http2() {
        // Prior knowledge preface, whole and byte by byte.
        let mut preface = H2_PREFACE.to_vec();
        preface.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        let mut r = Run::new(false);
        assert_eq!(r.send(REQ, 1, &preface), Verdict::SwitchToHttp2);
        assert_eq!(r.send(REQ, 2, GET), Verdict::SwitchToHttp2);
        let mut r = Run::new(false);
        let v: Vec<_> = preface[..H2_PREFACE_HEAD.len()]
            .iter()
            .map(|b| r.send(REQ, 1, std::slice::from_ref(b)))
            .collect();
        assert!(v[..v.len() - 1].iter().all(|v| *v == Verdict::Continue));
        assert_eq!(*v.last().unwrap(), Verdict::SwitchToHttp2);
        // Joined midway, on a segment starting with the preface.
        let mut r = Run::new(true);
        assert_eq!(r.send(REQ, 1, &preface), Verdict::SwitchToHttp2);
        // h2c upgrade.
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(RESP, 2, OK5);
        r.send(REQ, 3, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
        let v = r.send(RESP, 4, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04");
        assert_eq!(v, Verdict::SwitchToHttp2);
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.conn.pending(), 0);
        // The upgrade request is handed over as HTTP/2 stream 1, with where HTTP/2 starts.
        let up = r.conn.take_h2c_upgrade().expect("h2c upgrade request");
        assert_eq!(
            (up.request.method.as_str(), up.request.target.as_str()),
            ("GET", "/")
        );
        assert_eq!(up.request.authority.as_deref(), Some("h"));
        assert_eq!(up.request.start_ns, 3);
        assert_eq!(up.request.stream_id, 1);
        assert_eq!(up.http2_offset, Some(71));
        assert!(r.conn.take_h2c_upgrade().is_none());
        // 101 for something else is an exchange, then the tunnel is ignored.
        let mut r = Run::new(false);
        r.send(REQ, 1, b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(
            r.send(RESP, 2, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Verdict::Continue
        );
        assert_eq!(
            r.send(REQ, 3, b"\x81\x80\x00\x00\x00\x00"),
            Verdict::Continue
        );
        assert_eq!(
            r.send(RESP, 4, b"HTTP/1.1 200 OK\r\n\r\n"),
            Verdict::Continue
        );
        assert_summaries(&r.out, &[("GET", "/chat", Some(101), 0, 0, false)]);
        // CONNECT tunnels too.
        let mut r = Run::new(false);
        r.send(REQ, 1, b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
        r.send(RESP, 2, b"HTTP/1.1 200 Connection established\r\n\r\n");
        assert_eq!(r.send(REQ, 3, b"\x16\x03\x01"), Verdict::Continue);
        r.close(4);
        assert_summaries(&r.out, &[("CONNECT", "db:5432", Some(200), 0, 0, false)]);
    }

    #[test]
    fn secrets_not_retained() {
        let mut r = Run::new(false);
        r.send(
            REQ,
            1,
            b"GET /s HTTP/1.1\r\nAuthorization: Bearer TOPSECRET\r\nCookie: sid=COOKIESECRET\r\n",
        );
        let dbg = format!("{:?}", r.conn);
        assert!(
            !dbg.contains("TOPSECRET") && !dbg.contains("COOKIESECRET"),
            "{dbg}"
        );
        r.send(REQ, 2, b"\r\n");
        r.send(RESP, 3, OK5);
        let dbg = format!("{:?} {:?}", r.conn, r.out);
        assert!(
            !dbg.contains("TOPSECRET") && !dbg.contains("COOKIESECRET"),
            "{dbg}"
        );
        assert!(!dbg.contains("Bearer"));
        // The head buffer was wiped, not just truncated.
        assert!(
            !r.conn.req.buf.bytes.spare_capacity_mut().is_empty()
                || r.conn.req.buf.bytes.capacity() == 0
        );
        let raw = unsafe {
            std::slice::from_raw_parts(
                r.conn.req.buf.bytes.as_ptr(),
                r.conn.req.buf.bytes.capacity(),
            )
        };
        assert!(!raw.windows(9).any(|w| w == b"TOPSECRET"));
    }

    #[test]
    fn chunk_decoder() {
        let body = b"4;a=b\r\nWiki\r\n0\r\nT: 1\r\n\r\n";
        let mut c = Chunk::START;
        assert_eq!(c.feed(body), (body.len(), Step::Done));
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX",
            b"0\r\n\rX",
            b"11111111111111111\r\n",
        ] {
            let mut c = Chunk::START;
            assert_eq!(
                c.feed(bad).1,
                Step::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 42 , 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        // Conflicting Content-Length: framing unknown, response handled heuristically.
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(
            RESP,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        );
        r.send(REQ, 3, GET);
        r.send(RESP, 4, OK5);
        assert_summaries(
            &r.out,
            &[
                ("GET", "/a?b=1", Some(200), 0, 4, false),
                ("GET", "/a?b=1", Some(200), 0, 5, false),
            ],
        );
    }

    #[test]
    fn orphan_response_is_counted_not_emitted() {
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.send(RESP, 2, OK5);
        r.send(
            RESP,
            3,
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.conn.stats.orphan_responses, 1);
        assert_eq!(r.last(), Verdict::Continue);
    }
    #[test]
    fn client_role_requests_are_egress() {
        let mut c = Http1Connection::new(Role::Client, false);
        let mut out = Vec::new();
        let v = c.on_segment(&seg(Direction::Egress, 1, GET), &mut out);
        assert_eq!(v, Verdict::Continue);
        assert_eq!(c.pending(), 1);
        c.on_segment(&seg(Direction::Ingress, 2, OK5), &mut out);
        assert_summaries(&out, &[("GET", "/a?b=1", Some(200), 0, 5, false)]);
        // For a client, TLS goes out first.
        let mut c = Http1Connection::new(Role::Client, false);
        let v = c.on_segment(&seg(Direction::Egress, 1, b"\x16\x03\x01\x00"), &mut out);
        assert_eq!(v, Verdict::NotHttp);
    }

    #[test]
    fn chunked_resync_with_trailers_ends_at_next_request() {
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20 {
            resp.extend_from_slice(b"40\r\n");
            resp.extend(std::iter::repeat_n(b'q', 0x40));
            resp.extend_from_slice(b"\r\n");
        }
        resp.extend_from_slice(b"0\r\nX-Checksum: abc\r\n\r\n");
        let mut r = Run::new(false);
        r.send(REQ, 1, GET);
        r.feed(capped(RESP, 2, &resp, 256));
        assert!(r.out.is_empty());
        r.send(REQ, 3, b"GET /next HTTP/1.1\r\n\r\n");
        r.send(RESP, 4, OK5);
        assert_eq!(r.out.len(), 2);
        assert_eq!((r.out[0].status, r.out[0].end_ns), (Some(200), 2));
        assert!(!r.out[0].flags.incomplete);
        assert_eq!(r.out[1].target, "/next");
    }

    #[test]
    fn fields_are_kept_headers_only() {
        use super::super::KEPT_REQUEST_HEADERS;
        for f in Field::ALL {
            let name = KEPT_REQUEST_HEADERS
                .iter()
                .find(|k| Field::of(k.as_bytes()) == Some(f))
                .unwrap_or_else(|| panic!("{f:?} is not in KEPT_REQUEST_HEADERS"));
            assert_eq!(Field::of(name.to_ascii_uppercase().as_bytes()), Some(f));
        }
        // Names of the same lengths that must never be read, secrets among them.
        for name in [
            "Date",
            "Cookie",
            "Server",
            "Expires",
            "Connection",
            "x-api-key!",
            "Set-Cookie",
            "Www-Authenticate",
            "Authorization",
            "Proxy-Authorization",
            "content-lengtx",
            "transfer-encodinh",
            "hostt",
            "",
        ] {
            let f = Field::of(name.as_bytes());
            assert!(
                f.is_none() || KEPT_REQUEST_HEADERS.contains(&name.to_ascii_lowercase().as_str()),
                "{name} read as {f:?}"
            );
        }
    }

    /// Runs `whole` and an independent path over `cases` and asserts they agree on where the
    /// head ends ([`take_head`]) and on `key` of the parse. The reference parse is the one for
    /// heads cut short (`parse(head, false)`: the start line alone through httparse, the
    /// header lines scanned by hand), since `parse(head, true)` is `whole` itself. Returns how
    /// many cases the one-pass parse took (the rest are left to the general path).
    fn agree<T, K: PartialEq + std::fmt::Debug>(
        cases: &[&[u8]],
        whole: fn(&[u8]) -> WholeHead<T>,
        parse: fn(&[u8], bool) -> Option<T>,
        key: fn(&T) -> K,
    ) -> usize {
        let mut compared = 0;
        for data in cases {
            let Some((n, one_pass)) = whole(data) else {
                continue;
            };
            compared += 1;
            let text = String::from_utf8_lossy(data);
            let HeadStep::Complete(m) = take_head(&mut HeadBuf::default(), data) else {
                panic!("the general path found no head in {text:?}");
            };
            assert_eq!(n, m, "{text:?}");
            let reference = parse(&data[..m], false);
            assert_eq!(
                one_pass.as_ref().map(key),
                reference.as_ref().map(key),
                "{text:?}"
            );
        }
        compared
    }

    /// The one-pass parse of a whole head agrees with finding the head's end and scanning it
    /// line by line, on where the head ends and on everything parsed from it.
    #[test]
    fn whole_head_pass_matches_general_path() {
        let requests: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /x?y=1 HTTP/1.0\n\n",
            b"POST /p HTTP/1.1\r\nHost:  b \r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\ntraceparent: 00-x\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header line\r\nHost: c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: c\n\r\n",
            b"GET  /two-spaces  HTTP/1.1\r\n\r\n",
            b"AVERYLONGMETHODNAMEOFMORETHANTHIRTYTWOCHARS / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            // Left to the general path: the HTTP/2 preface, a cut head, a stray CR.
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        ];
        let request_key = |p: &ParsedRequest| {
            let i = &p.info;
            (
                p.method.clone(),
                p.target.clone(),
                p.fallback,
                i.host.clone(),
                i.content_type.clone(),
                i.traceparent.clone(),
                i.upgrade_h2c,
                i.framing(),
            )
        };
        let n = agree(
            requests,
            parse_whole_request,
            parse_request_head,
            request_key,
        );
        assert_eq!(n, 10, "requests compared");
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 204 No Content\n\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
            b"HTTP/1.1 099 Odd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad line\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
        ];
        let response_key = |p: &ParsedResponse| (p.status, p.framing, p.fallback);
        let n = agree(
            responses,
            parse_whole_response,
            parse_response_head,
            response_key,
        );
        assert_eq!(n, 8, "responses compared");
    }
}
