//! Byte-stream helpers the database parsers share: how many octets a segment stands for, a
//! segment walked as captured and unseen stretches, its last octets, lines received across
//! segments, and what the command/reply protocols (Redis, memcached) keep per connection: its
//! state and the queue of commands waiting for their replies.
//!
//! A [`Segment`] holds only the head of what its syscall moved (the capture bound), its true
//! length and a tail copy. Every parser must account for the octets it never saw exactly as
//! for those it saw, or its framing drifts: these are the pieces that do that accounting, in
//! one place so that the parsers cannot disagree on it.
//!
//! Only `super::` paths: the fuzz targets and the development harnesses compile this module
//! alone with the shared protocol types.

use std::collections::VecDeque;

use memchr::memchr;

use super::{Db, DbSystem, Exchange, ExchangeFlags, Kind, Segment, Verdict};

/// The octets a segment stands for: its head cannot be longer, whatever `total_len` says
/// ([`Segment`] promises `data.len() <= total_len`; a parser does not trust that promise with
/// its byte accounting).
pub(super) fn seg_total(seg: &Segment<'_>) -> u64 {
    seg.total_len.max(seg.data.len() as u64)
}

/// The last `n` octets of a segment, when known: from the captured head when it holds the
/// whole segment, else from the tail copy. A parser that lost its framing inside a large
/// message looks there for the message that ends a batch or a result.
pub(super) fn segment_end<'a>(seg: &Segment<'a>, n: usize) -> Option<&'a [u8]> {
    let b = if seg.is_complete() {
        seg.data
    } else {
        seg.tail()
    };
    b.len().checked_sub(n).and_then(|s| b.get(s..))
}

/// A stretch of a segment's bytes: captured, or known only by its length.
#[derive(Clone, Copy, Debug)]
pub(super) enum Run<'a> {
    Seen(&'a [u8]),
    Unseen(u64),
}

impl<'a> Run<'a> {
    pub(super) fn len(&self) -> u64 {
        match self {
            Run::Seen(b) => b.len() as u64,
            Run::Unseen(n) => *n,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consumes up to `n` octets: the captured ones (empty when unseen) and how many.
    pub(super) fn take(&mut self, n: u64) -> (&'a [u8], u64) {
        match self {
            Run::Seen(b) => {
                let k = usize::try_from(n).unwrap_or(usize::MAX).min(b.len());
                let (head, rest) = b.split_at(k);
                *b = rest;
                (head, k as u64)
            }
            Run::Unseen(u) => {
                let k = n.min(*u);
                *u -= k;
                (&[], k)
            }
        }
    }

    /// Consumes up to `n` octets whose content does not matter (a data block); returns how
    /// many.
    pub(super) fn skip(&mut self, n: u64) -> u64 {
        self.take(n).1
    }
}

/// A segment as runs in order: the captured head, then unseen gaps and the extents past the
/// head (the tail copy), then what remains unseen. The runs add up to [`seg_total`] octets, so
/// a parser that consumes every run keeps exact byte accounting.
pub(super) fn runs<'a>(seg: &Segment<'a>) -> impl Iterator<Item = Run<'a>> + use<'a> {
    let total = seg_total(seg);
    let data = seg.data;
    let mut extents = seg.extents.iter();
    let mut pos = 0u64;
    let mut started = false;
    let mut queued: Option<Run<'a>> = None;
    std::iter::from_fn(move || {
        if let Some(r) = queued.take() {
            return Some(r);
        }
        if !started {
            started = true;
            pos = data.len() as u64;
            if !data.is_empty() {
                return Some(Run::Seen(data));
            }
        }
        for (off, bytes) in extents.by_ref() {
            let end = off.saturating_add(bytes.len() as u64).min(total);
            if off >= total || end <= pos {
                continue;
            }
            let from = off.max(pos);
            let lo = usize::try_from(from - off).unwrap_or(usize::MAX);
            let hi = usize::try_from(end - off).unwrap_or(usize::MAX);
            let seen = bytes.get(lo..hi).unwrap_or(&[]);
            let gap = from - pos;
            pos = end;
            if gap > 0 {
                queued = Some(Run::Seen(seen));
                return Some(Run::Unseen(gap));
            }
            return Some(Run::Seen(seen));
        }
        if pos < total {
            let gap = total - pos;
            pos = total;
            return Some(Run::Unseen(gap));
        }
        None
    })
}

/// A line being received, possibly across segments and runs; octets past the cap given to
/// [`take`](LineBuf::take) are dropped (and remembered as an overflow), so a line costs
/// bounded memory however long it is on the wire.
#[derive(Debug, Default)]
pub(super) struct LineBuf {
    buf: Vec<u8>,
    overflow: bool,
}

impl LineBuf {
    /// Takes octets from `input` up to and including the next LF, keeping at most `cap` octets
    /// of the line; true when the line is whole.
    pub(super) fn take(&mut self, input: &mut &[u8], cap: usize) -> bool {
        let (part, rest, done) = match memchr(b'\n', input) {
            Some(i) => {
                let (part, rest) = input.split_at(i);
                (part, rest.get(1..).unwrap_or(&[]), true)
            }
            None => (*input, &[][..], false),
        };
        let room = cap.saturating_sub(self.buf.len());
        if part.len() > room {
            self.overflow = true;
        }
        self.buf.extend_from_slice(part.get(..room).unwrap_or(part));
        *input = rest;
        done
    }

    /// The line without its CR (when the CR was kept).
    pub(super) fn line(&self) -> &[u8] {
        strip_cr(&self.buf)
    }

    /// Octets of the line were dropped past the cap.
    pub(super) fn overflowed(&self) -> bool {
        self.overflow
    }

    /// The line ended with CRLF (unknown, hence accepted, when it overflowed).
    pub(super) fn crlf(&self) -> bool {
        self.overflow || self.buf.ends_with(b"\r")
    }

    /// Empties the line, zeroing it first (a line may hold a password: an inline `AUTH`); a
    /// buffer that grew past `keep` octets of capacity is freed.
    pub(super) fn clear(&mut self, keep: usize) {
        self.buf.fill(0);
        self.buf.clear();
        self.overflow = false;
        if self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
    }

    /// The line, leaving the buffer empty, for a parser that must hold the line while it
    /// changes its own state; give the buffer back with [`restore`](LineBuf::restore).
    pub(super) fn take_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Puts back a buffer from [`take_buf`](LineBuf::take_buf), emptied as by
    /// [`clear`](LineBuf::clear) (so its allocation serves the next line).
    pub(super) fn restore(&mut self, buf: Vec<u8>, keep: usize) {
        self.buf = buf;
        self.clear(keep);
    }

    /// The buffer's allocation, for the tests of the memory bounds.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// A line without its trailing CR, if it has one (the line protocols end lines with CRLF and
/// the LF is split off first).
pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `needle` occurs in `hay` (detection looks for ` HTTP/` in a first line; lines are short).
pub(super) fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Why a line protocol's reader lost its framing: the parsers count the two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// A header, a line boundary or a message boundary fell in uncaptured bytes.
    Unseen,
    /// The bytes are not the protocol where the protocol had to be.
    Malformed,
}

/// What a command/reply parser does with the next segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Active,
    /// The connection became a stream the parser does not pair (Redis pub/sub, `MONITOR`,
    /// replication; memcached `watch`): every byte is ignored.
    Ignore,
    /// After `on_close`.
    Closed,
    /// Not this protocol: `Reject` was returned and is returned again.
    Rejected,
}

impl Mode {
    /// The verdict on a segment the parser does not read: every segment once it is not
    /// `Active`, and one that moved no bytes (EOF reads, empty writes: nothing to see, not even
    /// a time). `None`: the parser reads it.
    pub(super) fn skips(self, seg: &Segment<'_>) -> Option<Verdict> {
        match self {
            Mode::Rejected => Some(Verdict::Reject),
            Mode::Ignore | Mode::Closed => Some(Verdict::Continue),
            Mode::Active if seg_total(seg) == 0 => Some(Verdict::Continue),
            Mode::Active => None,
        }
    }
}

/// Whether the reply direction of a command/reply connection is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplySync {
    InSync,
    /// Reply framing is lost; `may_resync` once the outstanding commands were finished.
    Lost {
        may_resync: bool,
    },
}

/// A command sent, waiting for its reply: what its exchange is made of, and `proto`, what the
/// protocol needs to pair the reply with it and act on it.
#[derive(Debug)]
pub(super) struct Pending<X> {
    pub(super) start_ns: u64,
    pub(super) request_size: u64,
    pub(super) operation: Option<String>,
    pub(super) query: Option<String>,
    pub(super) partial: bool,
    /// Stands for commands in uncaptured bytes: consumes replies, emits nothing.
    pub(super) hidden: bool,
    /// Reply octets counted for it so far (a multi-reply command, lost sync).
    pub(super) reply_bytes: u64,
    pub(super) proto: X,
}

impl<X> Pending<X> {
    /// The placeholder queued at `ts` for the commands lost in uncaptured bytes.
    pub(super) fn hidden(ts: u64, proto: X) -> Self {
        Pending {
            start_ns: ts,
            request_size: 0,
            operation: None,
            query: None,
            partial: true,
            hidden: true,
            reply_bytes: 0,
            proto,
        }
    }

    /// The command's exchange, ended at `end_ns` (never before it started).
    pub(super) fn exchange(
        self,
        to: DbConn,
        end_ns: u64,
        response_size: u64,
        incomplete: bool,
        error: bool,
        status_code: Option<String>,
    ) -> Exchange {
        Exchange {
            start_ns: self.start_ns,
            end_ns: end_ns.max(self.start_ns),
            request_size: self.request_size,
            response_size,
            flags: ExchangeFlags {
                partial: self.partial,
                incomplete,
            },
            kind: Kind::Db(Db {
                system: to.system,
                operation: self.operation,
                collection: None,
                namespace: to.namespace,
                query: self.query,
                status_code,
                error,
            }),
        }
    }
}

/// Counts `n` reply octets read while reply framing is lost for the oldest command.
pub(super) fn add_lost_reply<X>(pending: &mut VecDeque<Pending<X>>, n: u64) {
    if let Some(p) = pending.front_mut() {
        p.reply_bytes = p.reply_bytes.saturating_add(n);
    }
}

/// What the exchanges of a connection's commands say of it: its system and database.
#[derive(Clone, Debug)]
pub(super) struct DbConn {
    pub(super) system: DbSystem,
    pub(super) namespace: Option<String>,
}

/// Finishes every command of `pending` as incomplete, when sync was lost and a new command
/// starts (the client is done waiting for them): each ends with the last reply seen
/// (`last_reply_ns`) if that came after it started, else at `ts`, with the reply octets counted
/// for it. Placeholders emit nothing.
pub(super) fn finish_waiting<X>(
    pending: &mut VecDeque<Pending<X>>,
    to: &DbConn,
    last_reply_ns: u64,
    ts: u64,
    out: &mut Vec<Exchange>,
) {
    while let Some(p) = pending.pop_front() {
        if p.hidden {
            continue;
        }
        let end = if last_reply_ns >= p.start_ns {
            last_reply_ns
        } else {
            ts
        };
        let size = p.reply_bytes;
        out.push(p.exchange(to.clone(), end, size, true, false, None));
    }
}

/// Finishes every command of `pending` as incomplete when the connection closes at `ts_ns`;
/// the `reading` octets of the reply being read belong to the oldest (unless a placeholder
/// is first: then they are nobody's).
pub(super) fn close_waiting<X>(
    pending: &mut VecDeque<Pending<X>>,
    to: &DbConn,
    mut reading: u64,
    ts_ns: u64,
    out: &mut Vec<Exchange>,
) {
    while let Some(p) = pending.pop_front() {
        if p.hidden {
            reading = 0;
            continue;
        }
        let size = p.reply_bytes.saturating_add(std::mem::take(&mut reading));
        out.push(p.exchange(to.clone(), ts_ns, size, true, false, None));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Extents};
    use super::*;

    fn seg<'a>(data: &'a [u8], total: u64, extents: Extents<'a>) -> Segment<'a> {
        Segment {
            direction: Direction::Egress,
            ts_ns: 1,
            data,
            total_len: total,
            extents,
        }
    }

    #[test]
    fn runs_cover_head_gap_and_tail() {
        let full: Vec<u8> = (0..40u8).collect();
        let raw = Extents::encode(&[(32, &full[32..])]);
        let s = seg(&full[..10], 40, Extents::new(&raw));
        let r: Vec<String> = runs(&s).map(|r| format!("{r:?}")).collect();
        assert_eq!(r.len(), 3);
        assert!(r[1].contains("Unseen(22)"));
        // A tail overlapping the head is clipped; bad extents are ignored.
        let raw = Extents::encode(&[(5, &full[5..12]), (100, b"zz")]);
        let s = seg(&full[..10], 12, Extents::new(&raw));
        let total: u64 = runs(&s).map(|r| r.len()).sum();
        assert_eq!(total, 12);
        assert!(runs(&s).all(|r| matches!(r, Run::Seen(_))));
    }

    #[test]
    fn segment_end_uses_tail_or_data() {
        let data = b"xxxxZ\0\0\0\x05I";
        let mut sg = seg(data, data.len() as u64, Extents::EMPTY);
        assert_eq!(segment_end(&sg, 6), Some(&b"Z\0\0\0\x05I"[..]));
        sg.data = &data[..3];
        assert_eq!(segment_end(&sg, 6), None);
        sg.extents = Extents::test_tail(data, 8);
        assert_eq!(segment_end(&sg, 6), Some(&b"Z\0\0\0\x05I"[..]));
        assert_eq!(segment_end(&sg, 9), None);
    }
}
