//! HTTP/2 and gRPC exchanges from captured syscalls (RFC 9113, RFC 7541).
//!
//! One [`Http2Connection`] per TCP connection sees both directions. Per direction it runs a
//! [`frame::FrameReader`] (reassembly, skipping payload it does not need by length, resync
//! after bytes it never saw) and an [`hpack::Decoder`] whose dynamic table may be partly
//! unknown. Streams are tracked independently, so any number of concurrent streams on one
//! connection each give exactly one [`HttpExchange`], from the first byte of the request HEADERS to
//! the frame carrying END_STREAM in the response direction (RFC 9113 §5.1, §8.1), trailers
//! included: unary, client-, server-streaming and bidi gRPC calls get their true duration.
//!
//! Values are never guessed: a field the decoder cannot know (a dynamic-table index defined
//! before the daemon joined, or after a header block truncated by the capture) makes the
//! exchange [`ExchangeFlags::partial`] instead.
//!
//! Only the values of the header fields the exchange carries are kept; `authorization`,
//! `cookie` and everything else are decoded only far enough for HPACK table consistency.

pub mod frame;
pub mod hpack;

use std::collections::{BTreeMap, VecDeque};

use super::{Direction, ExchangeFlags, HttpExchange, Protocol, Role, Segment, Verdict};
use frame::{Feed, Frame, FrameReader, ReadEvent, flags, kind};
use hpack::{Decoder, Field};

/// Largest frame payload accepted (RFC 9113 §4.2, §6.5.2: 2^24-1).
pub const MAX_FRAME_SIZE: u32 = frame::MAX_FRAME_SIZE;
/// Cap on each direction's HPACK dynamic table, whatever SETTINGS_HEADER_TABLE_SIZE says
/// (RFC 7541 §4.2 lets the decoder's side bound it; a passive observer bounds its copy).
pub const MAX_HPACK_TABLE_SIZE: usize = hpack::table::MAX_TABLE_SIZE;
/// Largest header block buffered; beyond it the block is decoded as a truncated prefix and the
/// stream is partial.
pub const MAX_HEADER_BLOCK: usize = frame::MAX_HEADER_BLOCK;
/// Most streams tracked per connection; beyond it the oldest (lowest id) is dropped.
pub const MAX_STREAMS: usize = 1024;
/// Most octets of `:path` kept.
pub const MAX_TARGET_LEN: usize = 2048;
/// Most octets kept of any other header value.
pub const MAX_VALUE_LEN: usize = 512;
/// Bound on the memory of tracked streams per connection; beyond it the oldest are dropped.
pub const MAX_STREAMS_MEMORY: usize = 2 * 1024 * 1024;
/// Unacknowledged SETTINGS frames remembered per direction (RFC 9113 §6.5.3).
pub const MAX_PENDING_SETTINGS: usize = 8;
/// Joined mid-way: captured octets scanned for a frame boundary before giving up.
pub const SYNC_SCAN_BUDGET: u64 = 64 * 1024;
/// Joined mid-way: segments without a frame boundary before giving up.
pub const SYNC_SEGMENT_BUDGET: u32 = 64;
/// Upper bound of [`Http2Connection::memory_estimate`] (about 3.2 MiB): per direction an
/// HPACK table (its octets, at most 2048 entries of at least 32 octets each in a deque of at
/// most twice that capacity, 8 KiB of scratch) plus a frame buffer and a header block buffer
/// (each at most twice [`MAX_HEADER_BLOCK`] of capacity); then the streams and the fixed part.
pub const MAX_CONNECTION_MEMORY: usize = 2
    * (MAX_HPACK_TABLE_SIZE
        + 2 * (MAX_HPACK_TABLE_SIZE / hpack::table::ENTRY_OVERHEAD)
            * std::mem::size_of::<hpack::table::Entry>()
        + 8192
        + 4 * MAX_HEADER_BLOCK
        + 1024)
    + MAX_STREAMS_MEMORY
    + 64 * 1024;

/// Drops and parse failures, for the daemon's internal metrics. All counts are cumulative for
/// the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Counters {
    /// Frames parsed.
    pub frames: u64,
    /// Frame boundaries lost (a frame header fell in uncaptured bytes, or an invalid frame).
    pub sync_lost: u64,
    /// Frame boundaries found again (including the first one when joined mid-way).
    pub resyncs: u64,
    /// Header blocks that failed HPACK decoding (RFC 7541 §5, §6).
    pub hpack_errors: u64,
    /// Times a direction's HPACK dynamic table became unknown.
    pub hpack_desyncs: u64,
    /// Field lines referencing dynamic-table entries that were unknown.
    pub unknown_dynamic_refs: u64,
    /// Header blocks truncated by the capture bound or [`MAX_HEADER_BLOCK`].
    pub truncated_header_blocks: u64,
    /// Streams dropped because of [`MAX_STREAMS`] / [`MAX_STREAMS_MEMORY`].
    pub streams_dropped: u64,
    /// Response-direction frames for streams whose request was never seen.
    pub orphan_frames: u64,
    /// Frames violating RFC 9113 sequencing (CONTINUATION rules, bad padding, …).
    pub protocol_errors: u64,
    /// RST_STREAM frames that ended a tracked stream.
    pub resets: u64,
    /// GOAWAY frames seen.
    pub goaways: u64,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// Header names whose values the HPACK decoders materialise.
fn keep_value(name: &[u8]) -> bool {
    matches!(
        name,
        b":method"
            | b":path"
            | b":authority"
            | b":scheme"
            | b":status"
            | b"content-type"
            | b"traceparent"
            | b"tracestate"
            | b"grpc-status"
            | b"host"
    )
}

/// HTTP/2 (and gRPC) state of one connection, both directions.
#[derive(Debug)]
pub struct Http2Connection {
    readers: [FrameReader; 2],
    conn: ConnState,
    joined_midway: bool,
    not_http2: bool,
    unsynced_segments: u32,
}

#[derive(Debug)]
struct ConnState {
    req_dir: Direction,
    dirs: [DirState; 2],
    streams: BTreeMap<u32, Stream>,
    streams_bytes: usize,
    /// Highest request stream id seen (client stream ids only increase, RFC 9113 §5.1.1).
    max_request_stream: u32,
    /// Header blocks decoded so far, both directions.
    header_blocks: u64,
    counters: Http2Counters,
}

#[derive(Debug)]
struct DirState {
    decoder: Decoder,
    block: Option<PendingBlock>,
    /// SETTINGS_HEADER_TABLE_SIZE of SETTINGS frames sent in this direction and not yet
    /// acknowledged (`None`: the frame did not carry it).
    pending_settings: VecDeque<Option<u32>>,
}

/// A header block being assembled from HEADERS/PUSH_PROMISE and CONTINUATION frames
/// (RFC 9113 §4.3, §6.10).
#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    /// Some of the block was not captured (or exceeded [`MAX_HEADER_BLOCK`]).
    truncated: bool,
    first_ts: u64,
    last_ts: u64,
}

#[derive(Debug)]
struct Stream {
    ex: HttpExchange,
    /// A final (non-1xx) response header block was seen; later blocks are trailers.
    final_response: bool,
    mem: usize,
}

/// What a decoded header block said (only the fields an exchange needs).
#[derive(Debug, Default)]
struct BlockInfo {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    host: Option<String>,
    scheme: Option<String>,
    status: Option<u16>,
    content_type: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    grpc_status: Option<u32>,
    unknown: usize,
}

fn value_string(v: Option<&[u8]>, max: usize) -> Option<String> {
    let v = v?;
    Some(String::from_utf8_lossy(&v[..v.len().min(max)]).into_owned())
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

impl BlockInfo {
    fn add(&mut self, field: Field<'_>) {
        let Field::Known { name, value } = field else {
            self.unknown += 1;
            return;
        };
        let s = |max| value_string(value, max);
        match name {
            b":method" => self.method = s(MAX_VALUE_LEN),
            b":path" => self.path = s(MAX_TARGET_LEN),
            b":authority" => self.authority = s(MAX_VALUE_LEN),
            b"host" => self.host = s(MAX_VALUE_LEN),
            b":scheme" => self.scheme = s(MAX_VALUE_LEN),
            b":status" => {
                self.status = value
                    .filter(|v| v.len() == 3)
                    .and_then(parse_u32)
                    .and_then(|c| u16::try_from(c).ok())
            }
            b"content-type" => self.content_type = s(MAX_VALUE_LEN),
            b"traceparent" => self.traceparent = s(MAX_VALUE_LEN),
            b"tracestate" => self.tracestate = s(MAX_VALUE_LEN),
            b"grpc-status" => self.grpc_status = value.and_then(parse_u32),
            _ => {}
        }
    }
}

fn is_grpc_content_type(ct: &str) -> bool {
    ct.get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}

/// True when `data` starts with (a prefix of) the client connection preface, or with a
/// SETTINGS frame followed by plausible frames (RFC 9113 §3.4: both sides' prefaces begin with
/// SETTINGS). Detection by frame shape, not by port.
pub fn looks_like_http2(data: &[u8]) -> bool {
    frame::looks_like_http2(data)
}

impl super::Parser for Http2Connection {
    fn protocol(&self) -> Protocol {
        Protocol::Http2
    }

    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<super::Exchange>) -> Verdict {
        let mut done = Vec::new();
        let v = Http2Connection::on_segment(self, seg, &mut done);
        out.extend(done.into_iter().map(super::Exchange::from));
        v
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<super::Exchange>) {
        let mut done = Vec::new();
        Http2Connection::on_close(self, ts_ns, &mut done);
        out.extend(done.into_iter().map(super::Exchange::from));
    }

    fn parse_errors(&self) -> u64 {
        let c = self.counters();
        c.sync_lost + c.hpack_errors + c.protocol_errors
    }
}

impl Http2Connection {
    /// `joined_midway`: the connection existed before the daemon saw it, so frame boundaries
    /// and both HPACK dynamic tables are unknown at first.
    pub fn new(role: Role, joined_midway: bool) -> Self {
        let req_dir = role.request_direction();
        let reader = |d: Direction| {
            if joined_midway {
                FrameReader::new_midway()
            } else {
                FrameReader::new(d == req_dir)
            }
        };
        let dir = || DirState {
            decoder: if joined_midway {
                Decoder::new_unsynced(keep_value)
            } else {
                Decoder::new(keep_value)
            },
            block: None,
            pending_settings: VecDeque::new(),
        };
        Http2Connection {
            readers: [reader(Direction::Ingress), reader(Direction::Egress)],
            conn: ConnState {
                req_dir,
                dirs: [dir(), dir()],
                streams: BTreeMap::new(),
                streams_bytes: 0,
                max_request_stream: 0,
                header_blocks: 0,
                counters: Http2Counters::default(),
            },
            joined_midway,
            not_http2: false,
            unsynced_segments: 0,
        }
    }

    /// After an `h2c` upgrade (RFC 7540 §3.2): `request`, made in HTTP/1.1, is stream 1, whose
    /// response comes in HTTP/2 frames. Call before feeding the first HTTP/2 bytes.
    pub fn upgraded(role: Role, mut request: HttpExchange) -> Self {
        let mut c = Self::new(role, false);
        request.stream_id = 1;
        request.protocol = Some(
            if request
                .content_type
                .as_deref()
                .is_some_and(is_grpc_content_type)
            {
                Protocol::Grpc
            } else {
                Protocol::Http2
            },
        );
        let mem =
            std::mem::size_of::<Stream>() + request.method.capacity() + request.target.capacity();
        c.conn.max_request_stream = 1;
        c.conn.streams_bytes = mem;
        c.conn.streams.insert(
            1,
            Stream {
                ex: request,
                final_response: false,
                mem,
            },
        );
        c
    }

    /// Feeds one captured syscall; finished exchanges are appended to `out`.
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) -> Verdict {
        if self.not_http2 {
            return Verdict::Reject;
        }
        let d = seg.direction;
        let conn = &mut self.conn;
        let feed = self.readers[dir_index(d)].feed_extents(
            seg.data,
            seg.total_len,
            seg.extents.iter(),
            seg.ts_ns,
            &mut |ev| conn.on_event(d, ev, out),
        );
        if feed == Feed::NotHttp2 {
            self.not_http2 = true;
            return Verdict::Reject;
        }
        if self.joined_midway && !self.readers.iter().any(FrameReader::ever_synced) {
            self.unsynced_segments += 1;
            let scanned: u64 = self.readers.iter().map(FrameReader::scanned_unsynced).sum();
            if scanned >= SYNC_SCAN_BUDGET || self.unsynced_segments >= SYNC_SEGMENT_BUDGET {
                self.not_http2 = true;
                return Verdict::Reject;
            }
        }
        Verdict::Continue
    }

    /// The connection closed at `ts_ns`: every open stream becomes an exchange with
    /// `flags.incomplete = true` and `end_ns = ts_ns`.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
        let ids: Vec<u32> = self.conn.streams.keys().copied().collect();
        for id in ids {
            self.conn.finish(id, ts_ns, true, out);
        }
        for d in &mut self.conn.dirs {
            d.block = None;
        }
    }

    /// Streams with a request seen and no end yet.
    pub fn open_streams(&self) -> usize {
        self.conn.streams.len()
    }

    /// Bytes held: HPACK tables, frame and header block buffers, streams. Never above
    /// [`MAX_CONNECTION_MEMORY`].
    pub fn memory_estimate(&self) -> usize {
        let readers: usize = self.readers.iter().map(FrameReader::memory_estimate).sum();
        let dirs: usize = self
            .conn
            .dirs
            .iter()
            .map(|d| {
                d.decoder.memory_estimate()
                    + d.block.as_ref().map_or(0, |b| b.buf.capacity())
                    + d.pending_settings.capacity() * 8
            })
            .sum();
        std::mem::size_of::<Self>() + readers + dirs + self.conn.streams_bytes
    }

    /// Drop and failure counters for internal metrics.
    pub fn counters(&self) -> &Http2Counters {
        &self.conn.counters
    }

    /// Whether the HPACK dynamic table of `direction` is fully known.
    pub fn hpack_synced(&self, direction: Direction) -> bool {
        self.conn.dirs[dir_index(direction)].decoder.is_synced()
    }
}

impl ConnState {
    fn on_event(&mut self, d: Direction, ev: ReadEvent<'_>, out: &mut Vec<HttpExchange>) {
        match ev {
            ReadEvent::Frame(f) => self.on_frame(d, f, out),
            ReadEvent::SyncLost => {
                self.counters.sync_lost += 1;
                // Whole frames may be missed: a header block among them would change the
                // table (RFC 7541 §2.3.2).
                if let Some(mut b) = self.dirs[dir_index(d)].block.take() {
                    b.truncated = true;
                    self.finish_block(d, b, out);
                }
                self.desync(d);
            }
            ReadEvent::Synced => self.counters.resyncs += 1,
            ReadEvent::Preface if self.header_blocks == 0 => {
                // Joined mid-way but the connection starts right here: both dynamic tables
                // are empty and of the default size (RFC 7541 §2.3.2, RFC 9113 §6.5.2).
                for d in &mut self.dirs {
                    d.decoder = Decoder::new(keep_value);
                }
            }
            ReadEvent::Preface => {}
        }
    }

    fn desync(&mut self, d: Direction) {
        let dec = &mut self.dirs[dir_index(d)].decoder;
        if dec.is_synced() {
            self.counters.hpack_desyncs += 1;
        }
        dec.desync();
    }

    fn on_frame(&mut self, d: Direction, f: Frame<'_>, out: &mut Vec<HttpExchange>) {
        self.counters.frames += 1;
        let h = f.header;
        let di = dir_index(d);
        // RFC 9113 §6.10: a header block's CONTINUATION frames follow it immediately.
        if let Some(block) = self.dirs[di].block.as_mut() {
            if h.kind == kind::CONTINUATION && h.stream_id == block.stream_id {
                append_fragment(block, f.payload, f.complete);
                block.last_ts = f.last_ts;
                if h.has(flags::END_HEADERS)
                    && let Some(b) = self.dirs[di].block.take()
                {
                    self.finish_block(d, b, out);
                }
                return;
            }
            self.counters.protocol_errors += 1;
            if let Some(mut b) = self.dirs[di].block.take() {
                b.truncated = true;
                self.finish_block(d, b, out);
            }
        }
        match h.kind {
            kind::DATA => self.on_data(d, f, out),
            kind::HEADERS | kind::PUSH_PROMISE => self.on_headers(d, f, out),
            kind::RST_STREAM if self.streams.contains_key(&h.stream_id) => {
                self.counters.resets += 1;
                self.finish(h.stream_id, f.last_ts, true, out);
            }
            kind::SETTINGS => self.on_settings(d, f),
            kind::GOAWAY => self.on_goaway(d, f, out),
            kind::CONTINUATION => self.counters.protocol_errors += 1,
            // PING, WINDOW_UPDATE, PRIORITY and extension frames carry nothing for spans.
            _ => {}
        }
    }

    /// RFC 9113 §6.1. Body size excludes the pad length octet and the padding.
    fn on_data(&mut self, d: Direction, f: Frame<'_>, out: &mut Vec<HttpExchange>) {
        let h = f.header;
        let mut body = u64::from(h.length);
        if h.has(flags::PADDED) {
            // The pad length octet may be uncaptured; then the padding is unknown (0).
            let pad = f.payload.first().map_or(0, |&p| u64::from(p));
            if pad + 1 > body {
                self.counters.protocol_errors += 1;
                body = 0;
            } else {
                body -= pad + 1;
            }
        }
        let Some(st) = self.streams.get_mut(&h.stream_id) else {
            if d != self.req_dir {
                self.counters.orphan_frames += 1;
            }
            return;
        };
        if d == self.req_dir {
            st.ex.request_body_size += body;
        } else {
            st.ex.response_body_size += body;
            if h.has(flags::END_STREAM) {
                self.finish(h.stream_id, f.last_ts, false, out);
            }
        }
    }

    /// HEADERS (RFC 9113 §6.2) or PUSH_PROMISE (§6.6): strip padding, priority and the
    /// promised stream id, then start a header block.
    fn on_headers(&mut self, d: Direction, f: Frame<'_>, out: &mut Vec<HttpExchange>) {
        let h = f.header;
        let push = h.kind == kind::PUSH_PROMISE;
        let len = h.length as usize;
        let p = f.payload;
        let mut start = 0usize;
        let mut pad = 0usize;
        let mut pad_known = true;
        if h.has(flags::PADDED) {
            match p.first() {
                Some(&pl) => pad = usize::from(pl),
                None => pad_known = false,
            }
            start += 1;
        }
        if push {
            start += 4;
        } else if h.has(flags::PRIORITY) {
            start += 5;
        }
        let mut block = PendingBlock {
            stream_id: h.stream_id,
            push,
            end_stream: !push && h.has(flags::END_STREAM),
            buf: Vec::new(),
            truncated: false,
            first_ts: f.first_ts,
            last_ts: f.last_ts,
        };
        if start + pad > len {
            self.counters.protocol_errors += 1;
            block.truncated = true;
        } else {
            let end = len - pad;
            let frag = &p[start.min(p.len())..end.min(p.len())];
            let complete = pad_known && p.len() >= end;
            append_fragment(&mut block, frag, complete);
        }
        if h.has(flags::END_HEADERS) {
            self.finish_block(d, block, out);
        } else {
            self.dirs[dir_index(d)].block = Some(block);
        }
    }

    fn finish_block(&mut self, d: Direction, block: PendingBlock, out: &mut Vec<HttpExchange>) {
        let di = dir_index(d);
        self.header_blocks += 1;
        let mut info = BlockInfo::default();
        let was_synced = self.dirs[di].decoder.is_synced();
        let res = self.dirs[di]
            .decoder
            .decode(&block.buf, !block.truncated, &mut |f| info.add(f));
        if was_synced && !self.dirs[di].decoder.is_synced() {
            self.counters.hpack_desyncs += 1;
        }
        if block.truncated {
            self.counters.truncated_header_blocks += 1;
        }
        self.counters.unknown_dynamic_refs += info.unknown as u64;
        if res.is_err() {
            self.counters.hpack_errors += 1;
        }
        if block.push {
            return;
        }
        let partial = block.truncated || info.unknown > 0 || res.is_err();
        let id = block.stream_id;
        if d == self.req_dir {
            self.on_request_block(id, block, info, partial, out);
        } else {
            self.on_response_block(id, block, info, partial, out);
        }
    }

    fn on_request_block(
        &mut self,
        id: u32,
        block: PendingBlock,
        info: BlockInfo,
        partial: bool,
        _out: &mut Vec<HttpExchange>,
    ) {
        if let Some(st) = self.streams.get_mut(&id) {
            // Request trailers (client streaming ends with them, RFC 9113 §8.1).
            st.ex.flags.partial |= partial;
            return;
        }
        if id.is_multiple_of(2) || id <= self.max_request_stream {
            // Not a client-initiated stream, or trailers of a stream already ended.
            self.counters.protocol_errors += 1;
            return;
        }
        self.max_request_stream = id;
        let protocol = if info
            .content_type
            .as_deref()
            .is_some_and(is_grpc_content_type)
        {
            Protocol::Grpc
        } else {
            Protocol::Http2
        };
        let ex = HttpExchange {
            protocol: Some(protocol),
            method: info.method.unwrap_or_default(),
            target: info.path.unwrap_or_default(),
            authority: info.authority.or(info.host),
            scheme: info.scheme,
            status: None,
            grpc_status: None,
            content_type: info.content_type,
            traceparent: info.traceparent,
            tracestate: info.tracestate,
            start_ns: block.first_ts,
            end_ns: block.first_ts,
            request_body_size: 0,
            response_body_size: 0,
            stream_id: id,
            flags: ExchangeFlags {
                partial,
                incomplete: false,
            },
        };
        let mem = std::mem::size_of::<Stream>()
            + 32
            + ex.method.capacity()
            + ex.target.capacity()
            + [
                &ex.authority,
                &ex.scheme,
                &ex.content_type,
                &ex.traceparent,
                &ex.tracestate,
            ]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum::<usize>();
        while !self.streams.is_empty()
            && (self.streams.len() >= MAX_STREAMS || self.streams_bytes + mem > MAX_STREAMS_MEMORY)
        {
            if let Some((_, old)) = self.streams.pop_first() {
                self.streams_bytes -= old.mem;
                self.counters.streams_dropped += 1;
            }
        }
        self.streams_bytes += mem;
        self.streams.insert(
            id,
            Stream {
                ex,
                final_response: false,
                mem,
            },
        );
    }

    fn on_response_block(
        &mut self,
        id: u32,
        block: PendingBlock,
        info: BlockInfo,
        partial: bool,
        out: &mut Vec<HttpExchange>,
    ) {
        let Some(st) = self.streams.get_mut(&id) else {
            self.counters.orphan_frames += 1;
            return;
        };
        st.ex.flags.partial |= partial;
        if !st.final_response {
            if info.status.is_some_and(|s| (100..200).contains(&s)) {
                // Interim response (RFC 9113 §8.1): not the exchange's status.
            } else {
                st.final_response = true;
                st.ex.status = info.status;
                if info.status.is_none() {
                    st.ex.flags.partial = true;
                }
                if info
                    .content_type
                    .as_deref()
                    .is_some_and(is_grpc_content_type)
                {
                    st.ex.protocol = Some(Protocol::Grpc);
                }
            }
        }
        // Trailers, or a Trailers-Only response (gRPC over HTTP/2 spec).
        if let Some(gs) = info.grpc_status {
            st.ex.grpc_status = Some(gs);
            st.ex.protocol = Some(Protocol::Grpc);
        }
        if block.end_stream {
            self.finish(id, block.last_ts, false, out);
        }
    }

    /// RFC 9113 §6.5: remember SETTINGS_HEADER_TABLE_SIZE until the peer acknowledges it;
    /// it bounds the table of the decoder for the blocks the *acknowledging* side sends
    /// (§6.5.2, RFC 7541 §4.2).
    fn on_settings(&mut self, d: Direction, f: Frame<'_>) {
        if f.header.has(flags::ACK) {
            let sender = dir_index(opposite(d));
            if let Some(v) = self.dirs[sender].pending_settings.pop_front()
                && let Some(size) = v
            {
                self.dirs[dir_index(d)].decoder.set_limit(size);
            }
            return;
        }
        let mut table_size = None;
        for s in f.payload.chunks_exact(6) {
            if u16::from_be_bytes([s[0], s[1]]) == 0x1 {
                table_size = Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
            }
        }
        let pending = &mut self.dirs[dir_index(d)].pending_settings;
        if pending.len() >= MAX_PENDING_SETTINGS {
            pending.pop_front();
        }
        pending.push_back(table_size);
    }

    /// RFC 9113 §6.8: a GOAWAY from the server means streams above its last stream id were
    /// not processed.
    fn on_goaway(&mut self, d: Direction, f: Frame<'_>, out: &mut Vec<HttpExchange>) {
        self.counters.goaways += 1;
        if d == self.req_dir {
            return;
        }
        let Some(b) = f.payload.first_chunk::<4>() else {
            return;
        };
        let last = u32::from_be_bytes(*b) & 0x7fff_ffff;
        let ids: Vec<u32> = self
            .streams
            .range(last.saturating_add(1)..)
            .map(|(&k, _)| k)
            .collect();
        for id in ids {
            self.finish(id, f.last_ts, true, out);
        }
    }

    fn finish(&mut self, id: u32, end_ns: u64, incomplete: bool, out: &mut Vec<HttpExchange>) {
        if let Some(st) = self.streams.remove(&id) {
            self.streams_bytes -= st.mem;
            let mut ex = st.ex;
            ex.end_ns = end_ns.max(ex.start_ns);
            ex.flags.incomplete |= incomplete;
            out.push(ex);
        }
    }
}

fn append_fragment(block: &mut PendingBlock, frag: &[u8], complete: bool) {
    if block.truncated {
        return;
    }
    let room = MAX_HEADER_BLOCK - block.buf.len();
    if frag.len() > room {
        block.buf.extend_from_slice(&frag[..room]);
        block.truncated = true;
        return;
    }
    block.buf.extend_from_slice(frag);
    if !complete {
        block.truncated = true;
    }
}

#[cfg(test)]
mod tests;
