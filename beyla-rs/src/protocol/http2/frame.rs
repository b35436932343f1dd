//! HTTP/2 frame reader for one direction of a connection (RFC 9113 §4, §6).
//!
//! Input is a sequence of captured syscalls: the head of each one's bytes plus the count of
//! bytes that were not captured. The reader reassembles frame headers split across syscalls,
//! keeps a bounded prefix of each frame's payload (only what the connection logic needs: the
//! header block fragment, SETTINGS, the pad length of DATA, …) and skips everything else *by
//! length*, including bytes it never saw, so a 1 MiB DATA frame behind a 1 KiB capture costs
//! nothing and does not lose synchronisation.
//!
//! Synchronisation is lost only when a frame header falls into bytes that were not captured.
//! The reader then looks for a plausible frame boundary at the start of later captures (and at
//! every offset within them) using the structural rules of RFC 9113 §6 (known type, defined
//! flags, fixed lengths, stream-id rules), and requires either two consecutive plausible
//! headers or one whose length ends exactly at the end of the syscall.

/// Length of the frame header (RFC 9113 §4.1).
pub const FRAME_HEADER_LEN: usize = 9;

/// Largest frame payload accepted: 2^24-1, the largest SETTINGS_MAX_FRAME_SIZE
/// (RFC 9113 §6.5.2) and the largest value the 24-bit length field can carry (§4.1).
pub const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// Largest header block (HEADERS/PUSH_PROMISE plus CONTINUATIONs) buffered for HPACK
/// decoding. Beyond it the block is decoded as a truncated prefix.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// SETTINGS payload octets kept (RFC 9113 §6.5.1: 6 octets per setting): 170 settings.
pub const MAX_SETTINGS_PAYLOAD: usize = 1020;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// A parsed frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier with the reserved bit cleared.
    pub stream_id: u32,
    /// The reserved bit (must be ignored on receipt, RFC 9113 §4.1; used as a sync hint).
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        let raw_id = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        FrameHeader {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream_id: raw_id & 0x7fff_ffff,
            reserved: raw_id & 0x8000_0000 != 0,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Violations that are connection errors for a real endpoint (wrong fixed lengths, wrong
    /// stream 0 use; RFC 9113 §6.x): the peer would tear the connection down, so seeing one
    /// means the reader is out of sync. Unknown frame types are valid (§4.1, §5.5).
    pub fn is_structurally_valid(&self) -> bool {
        let zero = self.stream_id == 0;
        let len = self.length;
        match self.kind {
            kind::DATA | kind::HEADERS | kind::CONTINUATION => !zero,
            kind::PRIORITY => !zero && len == 5,
            kind::RST_STREAM => !zero && len == 4,
            kind::SETTINGS => zero && len.is_multiple_of(6) && (!self.has(flags::ACK) || len == 0),
            kind::PUSH_PROMISE => !zero && len >= 4,
            kind::PING => zero && len == 8,
            kind::GOAWAY => zero && len >= 8,
            kind::WINDOW_UPDATE => len == 4,
            _ => true,
        }
    }

    /// Stricter than [`Self::is_structurally_valid`], for finding a frame boundary in bytes of
    /// unknown alignment: known type, no undefined flags, reserved bit clear, no CONTINUATION.
    pub fn is_plausible_boundary(&self) -> bool {
        let allowed = match self.kind {
            kind::DATA => flags::END_STREAM | flags::PADDED,
            kind::HEADERS => {
                flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY
            }
            kind::PRIORITY | kind::RST_STREAM | kind::GOAWAY | kind::WINDOW_UPDATE => 0,
            kind::SETTINGS | kind::PING => flags::ACK,
            kind::PUSH_PROMISE => flags::END_HEADERS | flags::PADDED,
            _ => return false,
        };
        !self.reserved && self.flags & !allowed == 0 && self.is_structurally_valid()
    }
}

/// One frame as delivered to the connection logic.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    /// The captured prefix of the payload, at most the per-type cap.
    pub payload: &'a [u8],
    /// True when `payload` is the whole payload.
    pub complete: bool,
    /// Timestamp of the syscall that carried the frame's first byte.
    pub first_ts: u64,
    /// Timestamp of the syscall that carried the frame's last byte.
    pub last_ts: u64,
}

/// What the reader reports, in stream order.
#[derive(Clone, Copy, Debug)]
pub enum ReadEvent<'a> {
    Frame(Frame<'a>),
    /// Frame boundaries were lost: bytes (possibly whole frames) will be missed.
    SyncLost,
    /// A plausible frame boundary was found after a loss (or when joining mid-way).
    Synced,
    /// The whole client connection preface was consumed (RFC 9113 §3.4): the connection
    /// starts here.
    Preface,
}

/// Outcome of [`FrameReader::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Continue,
    /// The bytes are not HTTP/2 (bad preface, first frame not SETTINGS, or no frame boundary
    /// found within the scan budget when joined mid-way).
    NotHttp2,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Matching the client preface; `matched` octets so far.
    Preface { matched: usize },
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
        first_ts: u64,
    },
    Payload {
        header: FrameHeader,
        /// Payload octets not yet consumed (captured or not).
        remaining: u32,
        /// How many payload octets to keep.
        cap: usize,
        /// Some wanted octet was not captured.
        missed: bool,
        first_ts: u64,
    },
    /// Out of sync: looking for a frame boundary at the start of each capture.
    Lost,
}

/// Frame reader for one direction.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    buf: Vec<u8>,
    /// The next frame must be a SETTINGS frame (connection start, RFC 9113 §3.4).
    expect_settings: bool,
    /// Whether frame boundaries were ever established in this direction.
    ever_synced: bool,
    /// Captured octets scanned without finding a boundary while never synced.
    scanned_unsynced: u64,
}

impl FrameReader {
    /// A reader at the start of a connection. `client_to_server` readers accept (and also
    /// tolerate the absence of) the client preface.
    pub fn new(client_to_server: bool) -> Self {
        FrameReader {
            state: if client_to_server {
                State::Preface { matched: 0 }
            } else {
                State::Header {
                    buf: [0; FRAME_HEADER_LEN],
                    have: 0,
                    first_ts: 0,
                }
            },
            buf: Vec::new(),
            expect_settings: true,
            ever_synced: true,
            scanned_unsynced: 0,
        }
    }

    /// A reader joining a connection mid-way: frame boundaries unknown.
    pub fn new_midway() -> Self {
        FrameReader {
            state: State::Lost,
            buf: Vec::new(),
            expect_settings: false,
            ever_synced: false,
            scanned_unsynced: 0,
        }
    }

    /// Whether frame boundaries were ever established in this direction.
    pub fn ever_synced(&self) -> bool {
        self.ever_synced
    }

    /// Captured octets scanned in vain while never synchronised.
    pub fn scanned_unsynced(&self) -> u64 {
        self.scanned_unsynced
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    pub fn memory_estimate(&self) -> usize {
        self.buf.capacity()
    }

    /// Feeds one syscall: `data` is its captured head, `total_len` the bytes it really moved.
    pub fn feed(
        &mut self,
        data: &[u8],
        total_len: u64,
        ts: u64,
        sink: &mut dyn FnMut(ReadEvent<'_>),
    ) -> Feed {
        self.feed_extents(data, total_len, [], ts, sink)
    }

    /// Like [`Self::feed`], with `extents`: runs of the syscall's octets past the head, as
    /// `(offset in the syscall, octets)` in increasing offset order (the kernel's tail copy,
    /// or the frame headers it followed past the head). The octets between them are skipped
    /// by length; a frame header among skipped octets loses sync. A writer that coalesces
    /// large DATA frames with the small frames after them (trailers, WINDOW_UPDATE, PING) in
    /// one syscall loses nothing then.
    pub fn feed_extents<'e>(
        &mut self,
        data: &[u8],
        total_len: u64,
        extents: impl IntoIterator<Item = (u64, &'e [u8])>,
        ts: u64,
        sink: &mut dyn FnMut(ReadEvent<'_>),
    ) -> Feed {
        let total = total_len.max(data.len() as u64);
        if self.consume(data, total, ts, sink) == Feed::NotHttp2 {
            return Feed::NotHttp2;
        }
        let mut pos = data.len() as u64;
        for (off, bytes) in extents {
            let end = off.saturating_add(bytes.len() as u64);
            if end <= pos || end > total {
                // Already read (overlaps the head), or not of this syscall.
                continue;
            }
            if off > pos && !self.skip(off - pos, ts, sink) {
                return Feed::Continue;
            }
            let bytes = &bytes[(pos.saturating_sub(off)) as usize..];
            let off = off.max(pos);
            if self.consume(bytes, total - off, ts, sink) == Feed::NotHttp2 {
                return Feed::NotHttp2;
            }
            pos = end;
        }
        if total > pos {
            self.skip(total - pos, ts, sink);
        }
        Feed::Continue
    }

    /// Skips `gap` octets that were not captured. Returns false when that lost (or found
    /// lost) the frame boundaries.
    fn skip(&mut self, mut gap: u64, ts: u64, sink: &mut dyn FnMut(ReadEvent<'_>)) -> bool {
        while gap > 0 {
            match self.state {
                State::Payload {
                    header,
                    remaining,
                    cap,
                    missed,
                    first_ts,
                } => {
                    let n = u64::from(remaining).min(gap);
                    gap -= n;
                    let remaining = remaining - n as u32;
                    self.state = State::Payload {
                        header,
                        remaining,
                        cap,
                        missed: missed || self.buf.len() < cap,
                        first_ts,
                    };
                    if remaining == 0 {
                        self.end_payload(ts, sink);
                    }
                }
                State::Lost => return false,
                State::Header { .. } | State::Preface { .. } => {
                    // A frame header (or the preface) is in octets never seen.
                    self.lose(sink);
                    return false;
                }
            }
        }
        true
    }

    /// Reads captured octets: `data` is followed by `total - data.len()` octets not given.
    fn consume(
        &mut self,
        data: &[u8],
        total: u64,
        ts: u64,
        sink: &mut dyn FnMut(ReadEvent<'_>),
    ) -> Feed {
        let mut pos = 0usize;
        while pos < data.len() {
            match self.state {
                State::Lost => {
                    let rest = &data[pos..];
                    let rest_total = total - pos as u64;
                    if !self.ever_synced
                        && preface_match(rest).is_some_and(|n| {
                            n == PREFACE.len() || (n >= 4 && rest_total == n as u64)
                        })
                    {
                        // Joined right at the start after all: consume the preface.
                        self.state = State::Preface { matched: 0 };
                        self.ever_synced = true;
                        continue;
                    }
                    match find_boundary(rest, rest_total) {
                        Some(off) => {
                            pos += off;
                            self.ever_synced = true;
                            self.state = State::Header {
                                buf: [0; FRAME_HEADER_LEN],
                                have: 0,
                                first_ts: ts,
                            };
                            sink(ReadEvent::Synced);
                        }
                        None => {
                            if !self.ever_synced {
                                self.scanned_unsynced += rest.len() as u64;
                            }
                            return Feed::Continue;
                        }
                    }
                }
                State::Preface { matched } => {
                    let want = &PREFACE[matched..];
                    let n = want.len().min(data.len() - pos);
                    if matched == 0 && data[pos] != PREFACE[0] {
                        // No preface: the caller consumed it already (RFC 9113 §3.4 allows
                        // handing over right after it).
                        self.state = State::Header {
                            buf: [0; FRAME_HEADER_LEN],
                            have: 0,
                            first_ts: ts,
                        };
                        continue;
                    }
                    if data[pos..pos + n] != want[..n] {
                        return self.not_http2();
                    }
                    pos += n;
                    if matched + n == PREFACE.len() {
                        sink(ReadEvent::Preface);
                    }
                    self.state = if matched + n == PREFACE.len() {
                        State::Header {
                            buf: [0; FRAME_HEADER_LEN],
                            have: 0,
                            first_ts: ts,
                        }
                    } else {
                        State::Preface {
                            matched: matched + n,
                        }
                    };
                }
                State::Header {
                    mut buf,
                    have,
                    first_ts,
                } => {
                    let first_ts = if have == 0 { ts } else { first_ts };
                    let n = (FRAME_HEADER_LEN - have).min(data.len() - pos);
                    buf[have..have + n].copy_from_slice(&data[pos..pos + n]);
                    pos += n;
                    if have + n < FRAME_HEADER_LEN {
                        self.state = State::Header {
                            buf,
                            have: have + n,
                            first_ts,
                        };
                        continue;
                    }
                    let header = FrameHeader::parse(&buf);
                    if self.expect_settings {
                        // RFC 9113 §3.4: each side's preface ends with a SETTINGS frame.
                        if header.kind != kind::SETTINGS
                            || header.has(flags::ACK)
                            || !header.is_plausible_boundary()
                        {
                            return self.not_http2();
                        }
                        self.expect_settings = false;
                    }
                    if !header.is_structurally_valid() {
                        self.lose(sink);
                        continue;
                    }
                    self.begin_payload(header, first_ts, ts, sink);
                }
                State::Payload {
                    header,
                    remaining,
                    cap,
                    missed,
                    first_ts,
                } => {
                    let n = (remaining as usize).min(data.len() - pos);
                    let want = cap.saturating_sub(self.buf.len()).min(n);
                    self.buf.extend_from_slice(&data[pos..pos + want]);
                    pos += n;
                    let remaining = remaining - n as u32;
                    self.state = State::Payload {
                        header,
                        remaining,
                        cap,
                        missed,
                        first_ts,
                    };
                    if remaining == 0 {
                        self.end_payload(ts, sink);
                    }
                }
            }
        }
        Feed::Continue
    }

    fn not_http2(&mut self) -> Feed {
        self.state = State::Lost;
        Feed::NotHttp2
    }

    fn lose(&mut self, sink: &mut dyn FnMut(ReadEvent<'_>)) {
        self.state = State::Lost;
        self.expect_settings = false;
        self.reset_buf();
        sink(ReadEvent::SyncLost);
    }

    fn begin_payload(
        &mut self,
        header: FrameHeader,
        first_ts: u64,
        ts: u64,
        sink: &mut dyn FnMut(ReadEvent<'_>),
    ) {
        let cap = match header.kind {
            kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => MAX_HEADER_BLOCK,
            kind::SETTINGS => MAX_SETTINGS_PAYLOAD,
            kind::DATA => usize::from(header.has(flags::PADDED)),
            kind::GOAWAY | kind::PING => 8,
            kind::RST_STREAM | kind::WINDOW_UPDATE => 4,
            kind::PRIORITY => 5,
            _ => 0,
        };
        self.buf.clear();
        self.state = State::Payload {
            header,
            remaining: header.length,
            cap,
            missed: false,
            first_ts,
        };
        if header.length == 0 {
            self.end_payload(ts, sink);
        }
    }

    fn end_payload(&mut self, ts: u64, sink: &mut dyn FnMut(ReadEvent<'_>)) {
        let State::Payload {
            header,
            missed,
            first_ts,
            ..
        } = self.state
        else {
            return;
        };
        self.state = State::Header {
            buf: [0; FRAME_HEADER_LEN],
            have: 0,
            first_ts: ts,
        };
        sink(ReadEvent::Frame(Frame {
            header,
            payload: &self.buf,
            complete: !missed && self.buf.len() == header.length as usize,
            first_ts,
            last_ts: ts,
        }));
        self.reset_buf();
    }

    fn reset_buf(&mut self) {
        if self.buf.capacity() > 16 * 1024 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// `Some(n)` when `data` starts with the first `n` octets of the preface (`n >= 1`), i.e. is
/// the preface or a prefix of it, or starts with the whole preface.
pub fn preface_match(data: &[u8]) -> Option<usize> {
    let n = data.len().min(PREFACE.len());
    (n > 0 && data[..n] == PREFACE[..n]).then_some(n)
}

/// How far a chain of plausible frame headers starting at `data[0]` goes.
struct Chain {
    headers: usize,
    /// The chain ends exactly at the end of the syscall (`total` octets).
    exact: bool,
}

/// Follows frame headers from the start of `data` (the captured head of `total` octets).
/// `None` when a header in the captured part is not plausible.
fn chain(data: &[u8], total: u64) -> Option<Chain> {
    let mut pos = 0u64;
    let mut headers = 0usize;
    while let Some(h) = data
        .get(pos as usize..)
        .and_then(|r| r.first_chunk::<FRAME_HEADER_LEN>())
    {
        let h = FrameHeader::parse(h);
        if !h.is_plausible_boundary() || (headers == 0 && h.kind == kind::CONTINUATION) {
            return None;
        }
        headers += 1;
        pos += FRAME_HEADER_LEN as u64 + u64::from(h.length);
        if pos > total {
            break;
        }
    }
    (headers > 0).then_some(Chain {
        headers,
        exact: pos == total,
    })
}

/// Most octets scanned per capture for a frame boundary.
pub const SYNC_SCAN_WINDOW: usize = 4096;

/// Finds the first offset in `data` (captured head of `total` octets) where a plausible frame
/// sequence starts: two or more consecutive plausible headers, or one or more that end
/// exactly at the end of the syscall.
pub fn find_boundary(data: &[u8], total: u64) -> Option<usize> {
    let end = data.len().min(SYNC_SCAN_WINDOW);
    (0..end).find(|&off| {
        chain(&data[off..], total - off as u64).is_some_and(|c| c.exact || c.headers >= 2)
    })
}

/// True when `data` starts with (a prefix of) the client preface, or with a SETTINGS frame
/// (the first frame of both connection prefaces, RFC 9113 §3.4) followed by plausible frames.
pub fn looks_like_http2(data: &[u8]) -> bool {
    if preface_match(data).is_some() {
        return true;
    }
    let Some(h) = data.first_chunk::<FRAME_HEADER_LEN>() else {
        return false;
    };
    let h = FrameHeader::parse(h);
    h.kind == kind::SETTINGS
        && !h.has(flags::ACK)
        && h.is_plausible_boundary()
        && chain(data, data.len() as u64).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = len.to_be_bytes()[1..].to_vec();
        v.push(kind);
        v.push(flags);
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[derive(Debug, PartialEq)]
    enum Ev {
        F(u8, u32, Vec<u8>, bool, u64, u64),
        Lost,
        Synced,
        Preface,
    }

    fn feed_all(r: &mut FrameReader, segs: &[(&[u8], u64, u64)]) -> (Vec<Ev>, Feed) {
        let mut evs = Vec::new();
        let mut last = Feed::Continue;
        for &(d, total, ts) in segs {
            last = r.feed(d, total, ts, &mut |e| {
                evs.push(match e {
                    ReadEvent::Frame(f) => Ev::F(
                        f.header.kind,
                        f.header.stream_id,
                        f.payload.to_vec(),
                        f.complete,
                        f.first_ts,
                        f.last_ts,
                    ),
                    ReadEvent::SyncLost => Ev::Lost,
                    ReadEvent::Synced => Ev::Synced,
                    ReadEvent::Preface => Ev::Preface,
                })
            });
            if last == Feed::NotHttp2 {
                break;
            }
        }
        (evs, last)
    }

    #[test]
    fn preface_and_settings_split_everywhere() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        bytes.extend(frame(kind::PING, 0, 0, &[1; 8]));
        for split in 0..=bytes.len() {
            let mut r = FrameReader::new(true);
            let (evs, v) = feed_all(
                &mut r,
                &[
                    (&bytes[..split], split as u64, 1),
                    (&bytes[split..], (bytes.len() - split) as u64, 2),
                ],
            );
            assert_eq!(v, Feed::Continue);
            assert_eq!(evs[0], Ev::Preface, "split {split}");
            assert_eq!(evs.len(), 3, "split {split}");
        }
    }

    #[test]
    fn missing_preface_is_accepted() {
        let mut r = FrameReader::new(true);
        let b = frame(kind::SETTINGS, 0, 0, &[]);
        let (evs, v) = feed_all(&mut r, &[(&b, b.len() as u64, 1)]);
        assert_eq!(v, Feed::Continue);
        assert_eq!(evs.len(), 1);
    }

    #[test]
    fn bad_preface_or_first_frame_is_not_http2() {
        let mut r = FrameReader::new(true);
        let (_, v) = feed_all(&mut r, &[(b"PRI * HTTP/1.1\r\n", 16, 1)]);
        assert_eq!(v, Feed::NotHttp2);
        let mut r = FrameReader::new(false);
        let b = frame(kind::HEADERS, 4, 1, &[0x82]);
        let (_, v) = feed_all(&mut r, &[(&b, b.len() as u64, 1)]);
        assert_eq!(v, Feed::NotHttp2);
        let mut r = FrameReader::new(true);
        let (_, v) = feed_all(&mut r, &[(b"GET / HTTP/1.1\r\n\r\n", 18, 1)]);
        assert_eq!(v, Feed::NotHttp2);
    }

    #[test]
    fn large_data_frame_skipped_by_length() {
        let mut r = FrameReader::new(false);
        let mut b = frame(kind::SETTINGS, 0, 0, &[]);
        // 1 MiB DATA frame, padded with 7 octets of padding.
        let mut data = frame(kind::DATA, flags::PADDED | flags::END_STREAM, 1, &[]);
        let len: u32 = 1 << 20;
        data[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        data.push(7);
        b.extend(&data);
        let total = b.len() as u64 - 1 + u64::from(len);
        let head = &b[..b.len().min(1024)];
        let ping = frame(kind::PING, 0, 0, &[0; 8]);
        let (evs, _) = feed_all(&mut r, &[(head, total, 5), (&ping, 17, 6)]);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[1], Ev::F(kind::DATA, 1, vec![7], false, 5, 5));
        assert!(matches!(evs[2], Ev::F(kind::PING, 0, _, true, 6, 6)));
    }

    #[test]
    fn header_in_unseen_bytes_loses_then_resyncs() {
        let mut r = FrameReader::new(false);
        let s = frame(kind::SETTINGS, 0, 0, &[]);
        let d = frame(kind::DATA, 0, 1, &[9; 100]);
        let mut seg = s.clone();
        seg.extend(&d);
        seg.extend(&d);
        // Capture only the first 20 octets: the second DATA header is unseen.
        let ping = frame(kind::PING, 0, 0, &[0; 8]);
        let mut two = ping.clone();
        two.extend(&ping);
        let (evs, _) = feed_all(
            &mut r,
            &[
                (&seg[..20], seg.len() as u64, 1),
                (&two, two.len() as u64, 2),
            ],
        );
        assert_eq!(evs[0], Ev::F(kind::SETTINGS, 0, vec![], true, 1, 1));
        assert!(matches!(evs[1], Ev::F(kind::DATA, 1, _, _, 1, 1)));
        assert_eq!(evs[2], Ev::Lost);
        assert_eq!(evs[3], Ev::Synced);
        assert_eq!(evs.len(), 6);
    }

    #[test]
    fn midway_finds_boundary_inside_capture() {
        let mut r = FrameReader::new_midway();
        let mut seg = vec![0xaa; 13]; // tail of some previous frame
        seg.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        seg.extend(frame(kind::HEADERS, 5, 3, &[0x88]));
        let (evs, v) = feed_all(&mut r, &[(&seg, seg.len() as u64, 1)]);
        assert_eq!(v, Feed::Continue);
        assert_eq!(evs[0], Ev::Synced);
        assert_eq!(evs.len(), 3);
    }

    #[test]
    fn looks_like_http2_cases() {
        assert!(looks_like_http2(b"PRI * HT"));
        assert!(looks_like_http2(PREFACE));
        let mut s = frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        assert!(looks_like_http2(&s));
        s.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0xf, 0, 1]));
        assert!(looks_like_http2(&s));
        assert!(!looks_like_http2(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http2(b""));
        assert!(!looks_like_http2(&frame(kind::SETTINGS, 1, 0, &[])));
        assert!(!looks_like_http2(&frame(kind::HEADERS, 4, 1, &[0x82])));
    }
}
