//! HTTP/1.0 and HTTP/1.1 exchanges from the two byte streams of one connection.
//!
//! [`Http1Connection`] follows both directions of a connection, segment by segment, and turns
//! them into [`HttpExchange`]s: one per request, paired with its final response in FIFO order
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
//! [`Verdict::Reject`] is returned (TLS, Redis, SSH, binary protocols). Response heads must
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

mod body;
mod connection;
mod head;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use super::{H2cUpgrade, HttpExchange, Protocol, Role, Segment, Verdict};
use body::{Body, Chunk, Step, ends_with_last_chunk};
use connection::{
    CurResponse, Mode, PendingRequest, ReqSide, ReqState, RespSide, RespState, exchange,
};
use head::{
    Framing, H2_PREFACE_HEAD, HeadBuf, HeadStep, LineCheck, ParsedRequest, ParsedResponse,
    check_request_line, check_status_line, parse_request_head, parse_response_head,
    parse_whole_request, parse_whole_response, skip_empty_lines, starts_with_request_line,
    starts_with_status_line, take_head,
};

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

/// The total byte count of a segment, trusting `data` if `total_len` is smaller.
fn seg_total(seg: &Segment<'_>) -> u64 {
    seg.total_len.max(seg.data.len() as u64)
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
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) -> Verdict {
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
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
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
    fn flush_pending(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
        while let Some(p) = self.pending.pop_front() {
            if !p.hidden {
                out.push(exchange(p, None, 0, ts_ns, true));
            }
        }
    }

    /// Bytes that cannot be HTTP where a head must start.
    fn garbage(&mut self, request_dir: bool, ts_ns: u64, out: &mut Vec<HttpExchange>) -> Verdict {
        if !self.inexact {
            self.flush_pending(ts_ns, out);
            return self.finish(Verdict::Reject);
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

    fn on_request(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) -> Verdict {
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
    fn cut_request_head(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) -> Option<Verdict> {
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

    fn on_response(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) -> Verdict {
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
    fn cut_response_head(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) -> Option<Verdict> {
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
        out: &mut Vec<HttpExchange>,
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
    fn finish_response(&mut self, end_ns: u64, incomplete: bool, out: &mut Vec<HttpExchange>) {
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

impl super::Parser for Http1Connection {
    fn protocol(&self) -> Protocol {
        Protocol::Http1
    }

    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<super::Exchange>) -> Verdict {
        let mut done = Vec::new();
        let v = Http1Connection::on_segment(self, seg, &mut done);
        out.extend(done.into_iter().map(super::Exchange::from));
        v
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<super::Exchange>) {
        let mut done = Vec::new();
        Http1Connection::on_close(self, ts_ns, &mut done);
        out.extend(done.into_iter().map(super::Exchange::from));
    }

    fn parse_errors(&self) -> u64 {
        self.stats.resyncs + self.stats.head_overflows
    }

    fn take_upgrade(&mut self) -> Option<H2cUpgrade> {
        self.take_h2c_upgrade()
    }
}
