//! PostgreSQL frontend/backend protocol 3 exchanges from the two byte streams of one
//! connection.
//!
//! [`PostgresConnection`] follows the frontend messages (the client's) and the backend
//! messages (the server's) of a connection, whichever end the instrumented process is, and
//! emits one database [`Exchange`] per statement:
//!
//! * **Simple query** (`Query`): one exchange per `Query` message, from its first octet to
//!   the `ReadyForQuery` that ends it. A text with several statements is one exchange: the
//!   operation and table are the first statement's, the text is the whole text summarized.
//! * **Extended query**: one exchange per `Execute`, ended by its `CommandComplete`,
//!   `EmptyQueryResponse`, `PortalSuspended` or `ErrorResponse`. Its statement is found
//!   through `Bind` (portal → statement) and `Parse` (statement → text); named statements are
//!   remembered (at most [`MAX_STATEMENTS`], the oldest forgotten first) and forgotten on
//!   `Close`. An `Execute` of a statement never seen (prepared before the daemon joined, or
//!   forgotten) gives an exchange without operation, flagged `partial`. Pipelines (several
//!   `Parse`/`Bind`/`Execute` before one `Sync`) are paired in order. After an
//!   `ErrorResponse` the server skips to the `Sync`: the failing `Execute` carries the error
//!   and the later `Execute`s of that batch give no exchange. An error for a batch without
//!   `Execute` (a `Parse` that fails: a syntax error while preparing) gives an exchange for
//!   that `Parse`. Its start is the first message after the previous `Execute`/`Sync` (the
//!   `Parse`/`Bind` that lead to it).
//! * **COPY**: `CopyData`/`CopyDone`/`CopyFail` count toward the `COPY` statement's exchange;
//!   it ends like its statement (`CommandComplete`, or `ReadyForQuery` for a simple query).
//! * **Errors**: the `C` field of `ErrorResponse` (SQLSTATE) becomes `status_code`, with
//!   `error = true` (the first error of a simple query with several statements).
//! * **Startup**: `StartupMessage` gives the namespace (`database`, else `user`);
//!   `SSLRequest` / `GSSENCRequest` and the one-octet answer: after `S` (or `G`) the
//!   ciphertext that follows is ignored until a segment starts with a `StartupMessage` (the
//!   TLS library's plaintext); after `N` the `StartupMessage` follows in the clear. A
//!   `CancelRequest` ends the interest in the connection. Authentication,
//!   `ParameterStatus`, `BackendKeyData`, `NoticeResponse` and `NotificationResponse` give no
//!   exchange. `FunctionCall` is followed (to stay paired) but gives no exchange.
//!
//! # Times and sizes
//!
//! `start_ns` is the time of the segment holding the first octet of the request's first
//! message, `end_ns` that of the segment holding the last octet of the message that ends the
//! exchange. `request_size` / `response_size` count the whole messages (headers included)
//! attributed to the exchange: for an `Execute`, the `Parse`/`Bind`/`Describe` before it and
//! the `Sync` after it; the responses from the first one after the previous exchange ended.
//!
//! # Truncated captures and lost framing
//!
//! Message boundaries are followed exactly through uncaptured octets (a body longer than the
//! capture is counted, not seen). When a message *header* falls into uncaptured octets the
//! direction's framing is lost (counted in [`PostgresStats::sync_lost`]) and found again:
//! * at the end of a segment whose last octets (its tail copy, or its captured octets when it
//!   was captured whole) are a `ReadyForQuery` (backend; it is handled as such) or a `Sync`
//!   (frontend; handled) or `CopyDone` / `Flush`;
//! * else at the start of a later segment that starts with plausible messages (valid type and
//!   length, and the messages after it in the captured octets valid too).
//!
//! While the backend's framing is lost, a new request (`Query`, `Execute`) first ends every
//! exchange still waiting, at the time of the last backend segment. A connection joined
//! midway (`joined_midway`) starts with both directions' framing lost, without namespace.
//! None of this ever rejects the connection: [`Verdict::Reject`] is returned only for first
//! bytes that cannot be PostgreSQL (see [`detect`]).
//!
//! # Memory
//!
//! Per connection: two readers keeping at most [`MAX_KEEP`](super::sql) octets each of a
//! message split across segments (zeroed after use), [`MAX_STATEMENTS`] statement summaries
//! (of at most [`MAX_TEXT_LEN`](super::sql::MAX_TEXT_LEN) octets of text each, shared between
//! names), [`MAX_PORTALS`] portals, and a queue of [`MAX_QUEUE`] awaited responses of which
//! at most [`MAX_PENDING`] carry an exchange (further `Execute`s are counted, not tracked).

use std::collections::VecDeque;
use std::sync::Arc;

use memchr::memchr;

use super::sql::{
    self, BoundedMap, Detected, Dialect, Framing, MAX_KEEP, Msg, Reader, Step, Summary,
};
use super::stream::{seg_total, segment_end};
use super::{
    Db, DbSystem, Direction, Exchange, ExchangeFlags, Kind, Protocol, Role, Segment, Verdict,
};

/// The IANA port of PostgreSQL.
pub const DEFAULT_PORT: u16 = 5432;
/// Named prepared statements remembered per connection.
pub const MAX_STATEMENTS: usize = 256;
/// Named portals remembered per connection.
pub const MAX_PORTALS: usize = 64;
/// Exchanges awaiting their response; further `Execute`s are counted in
/// [`PostgresStats::dropped`]. Pipelining clients put hundreds in flight (psycopg's
/// `executemany` sends every `Execute` of the batch before reading): about 100 octets each.
pub const MAX_PENDING: usize = 1024;
/// Awaited responses of any kind (`Sync`s, untracked `Execute`s included; 16 octets each).
pub const MAX_QUEUE: usize = 4096;
/// Longest statement or portal name remembered (PostgreSQL cuts names at 63 octets).
pub const MAX_NAME_LEN: usize = 256;

/// StartupMessage protocol versions are 3.x: `3 << 16 | minor`.
const PROTOCOL_MAJOR: u32 = 3;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// PostgreSQL's limit on startup-family messages (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_LEN: u64 = 10_000;
/// PostgreSQL's limits on message lengths: `PQ_LARGE_MESSAGE_LIMIT` for data-carrying
/// messages, `PQ_SMALL_MESSAGE_LIMIT` for the others.
const LARGE: u64 = (1 << 30) - 1;
const SMALL: u64 = 10_000;
/// Octets of an `ErrorResponse` kept to find its SQLSTATE (`C`) field: servers send the
/// severity fields and the code first.
const ERROR_KEEP: usize = 1024;

/// Counters of what happened on one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostgresStats {
    /// Message headers that fell into uncaptured octets: framing lost.
    pub sync_lost: u64,
    /// Invalid headers, unknown message types, inconsistent messages.
    pub malformed: u64,
    /// Framing found again at a segment's start or end (also the StartupMessage that starts
    /// the plaintext after an SSLRequest).
    pub resyncs: u64,
    /// A connection not joined midway whose first bytes were not a startup message but
    /// plausible messages: followed as if joined midway.
    pub heuristics: u64,
    /// `Execute`s not tracked ([`MAX_PENDING`]) and exchanges flushed as incomplete because
    /// the queue was full ([`MAX_QUEUE`]).
    pub dropped: u64,
    /// Completions and errors that matched no request (normal after joining midway).
    pub orphans: u64,
}

/// The PostgreSQL state of one connection, both directions.
#[derive(Debug)]
pub struct PostgresConnection {
    role: Role,
    /// Frontend (client → server) messages.
    fe: Reader,
    /// Backend (server → client) messages.
    be: Reader,
    st: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting the frontend's startup-family message.
    Startup,
    /// SSLRequest / GSSENCRequest sent: expecting the one-octet answer.
    EncAnswer,
    /// Encryption accepted: ciphertext, until a frontend segment starts with a
    /// StartupMessage.
    Encrypted,
    /// Typed messages both ways.
    Ready,
    /// A CancelRequest: nothing more to see.
    Cancel,
    Closed,
    Rejected,
}

/// A request awaiting its end.
#[derive(Debug)]
struct Pending {
    start_ns: u64,
    req: u64,
    resp: u64,
    /// `None`: the statement is unknown (the exchange is partial).
    summary: Option<Arc<Summary>>,
    status: Option<String>,
    error: bool,
}

/// A `Parse` not followed by an `Execute` in its batch: an error for the batch is its.
#[derive(Debug)]
struct Prepared {
    summary: Arc<Summary>,
    start_ns: u64,
    req: u64,
}

/// What the backend will answer, in order.
#[derive(Debug)]
enum Item {
    /// A simple `Query`: ended by `ReadyForQuery`.
    Query(Box<Pending>),
    /// An `Execute`: ended by `CommandComplete`, `EmptyQueryResponse`, `PortalSuspended` or
    /// `ErrorResponse`.
    Exec(Box<Pending>),
    /// That many `Execute`s not tracked: their completions are consumed, nothing emitted.
    Untracked(u32),
    /// A `Sync`, answered by `ReadyForQuery`.
    Sync(Option<Box<Prepared>>),
    /// A `FunctionCall`, answered by `FunctionCallResponse` and `ReadyForQuery`.
    Function,
}

/// What a message asks of the connection (readers are not reachable from [`State`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    None,
    /// A StartupMessage: typed messages from now on.
    Typed,
    /// SSLRequest / GSSENCRequest: the backend answers with one octet.
    EncRequest,
    /// `S` / `G`: encrypted from now on.
    Encrypted,
    /// `N`: the StartupMessage follows in the clear.
    Plain,
    Cancel,
    /// Not a valid message where one must be.
    Malformed,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Nothing valid seen yet on a connection seen from its start: invalid bytes reject it.
    strict: bool,
    namespace: Option<String>,
    statements: BoundedMap<Box<[u8]>, Arc<Summary>>,
    unnamed_statement: Option<Arc<Summary>>,
    /// Portal → its statement (`None`: a statement never seen).
    portals: BoundedMap<Box<[u8]>, Option<Arc<Summary>>>,
    /// `None`: no unnamed portal bound; `Some(None)`: bound to an unknown statement.
    unnamed_portal: Option<Option<Arc<Summary>>>,
    queue: VecDeque<Item>,
    /// `Query` and `Exec` items in `queue`.
    tracked: usize,
    /// Frontend messages since the last exchange or `Sync`: (first octet's time, octets).
    accum: Option<(u64, u64)>,
    /// The batch's last `Parse` when no `Execute` followed it yet.
    batch_parse: Option<Box<Prepared>>,
    /// An error was answered before the batch's `Sync` was sent: the server ignores the
    /// frontend messages until then.
    discard_until_sync: bool,
    /// Time of the last backend segment.
    last_be_ns: u64,
    stats: PostgresStats,
}

impl PostgresConnection {
    /// A connection seen from its start (`joined_midway == false`): it must start with a
    /// startup-family message. One that existed before the daemon: messages are followed
    /// from the first plausible message start in each direction.
    pub fn new(role: Role, joined_midway: bool) -> Self {
        let (fe, be, phase) = if joined_midway {
            (
                Reader::lost(Framing::PgTyped),
                Reader::lost(Framing::PgTyped),
                Phase::Ready,
            )
        } else {
            (
                Reader::new(Framing::PgUntyped),
                Reader::new(Framing::PgTyped),
                Phase::Startup,
            )
        };
        PostgresConnection {
            role,
            fe,
            be,
            st: State {
                phase,
                strict: !joined_midway,
                namespace: None,
                statements: BoundedMap::new(MAX_STATEMENTS),
                unnamed_statement: None,
                portals: BoundedMap::new(MAX_PORTALS),
                unnamed_portal: None,
                queue: VecDeque::new(),
                tracked: 0,
                accum: None,
                batch_parse: None,
                discard_until_sync: false,
                last_be_ns: 0,
                stats: PostgresStats::default(),
            },
        }
    }

    /// Counters of this connection.
    pub fn stats(&self) -> PostgresStats {
        self.st.stats
    }

    /// Responses awaited (at most [`MAX_QUEUE`]).
    pub fn pending(&self) -> usize {
        self.st.queue.len()
    }

    /// Named statements and portals remembered.
    pub fn remembered(&self) -> (usize, usize) {
        (self.st.statements.len(), self.st.portals.len())
    }

    /// Octets allocated by the readers for messages split across segments.
    pub fn buffered(&self) -> usize {
        self.fe.buffered() + self.be.buffered()
    }

    /// The database of the connection (`None` until a StartupMessage named one).
    pub fn namespace(&self) -> Option<&str> {
        self.st.namespace.as_deref()
    }

    /// Feeds one segment; finished exchanges are appended to `out`.
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        match self.st.phase {
            Phase::Rejected => return Verdict::Reject,
            Phase::Closed | Phase::Cancel => return Verdict::Continue,
            _ => {}
        }
        if seg_total(seg) == 0 {
            return Verdict::Continue;
        }
        let frontend = seg.direction == self.role.request_direction();
        let v = if frontend {
            self.frontend(seg, out)
        } else {
            self.backend(seg, out)
        };
        if v == Verdict::Reject {
            self.st.phase = Phase::Rejected;
            self.st.release();
            self.fe.resync();
            self.be.resync();
        }
        v
    }

    /// The connection closed at `ts_ns`: every exchange still waiting is emitted, incomplete.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if matches!(self.st.phase, Phase::Rejected | Phase::Closed) {
            return;
        }
        self.st.flush(ts_ns, true, out);
        self.st.release();
        self.st.phase = Phase::Closed;
        self.fe.resync();
        self.be.resync();
    }

    fn frontend(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        match self.st.phase {
            Phase::Encrypted | Phase::EncAnswer => {
                // TLS handshake records until the library's plaintext, which starts with the
                // StartupMessage (or, without TLS after all, the StartupMessage itself).
                if !is_startup_family(seg.data, true) {
                    return Verdict::Continue;
                }
                self.fe = Reader::new(Framing::PgUntyped);
                self.be = Reader::new(Framing::PgTyped);
                self.st.phase = Phase::Startup;
                self.st.stats.resyncs += 1;
            }
            Phase::Startup if self.fe.is_lost() => {
                if !is_startup_family(seg.data, false) {
                    return Verdict::Continue;
                }
                self.fe.resync();
                self.st.stats.resyncs += 1;
            }
            Phase::Startup
                if self.st.strict && self.fe.at_boundary() && !startup_prefix_ok(seg.data) =>
            {
                if !plausible_typed(seg.data, true) {
                    return Verdict::Reject;
                }
                // Not the connection's first bytes after all: follow it as joined midway.
                self.st.stats.heuristics += 1;
                self.st.strict = false;
                self.st.phase = Phase::Ready;
                self.fe = Reader::new(Framing::PgTyped);
                self.be = Reader::lost(Framing::PgTyped);
            }
            _ => {}
        }
        if self.fe.is_lost() {
            if !plausible_typed(seg.data, true) {
                self.st.add_request(seg.total_len);
                self.frontend_end(seg, out);
                return Verdict::Continue;
            }
            self.fe.resync();
            self.st.stats.resyncs += 1;
        }
        let mut pos = 0;
        loop {
            let framing = self.fe.framing;
            let be_lost = self.be.is_lost();
            let act = match self
                .fe
                .next(seg.data, seg.total_len, seg.ts_ns, &mut pos, |t, _| {
                    want_frontend(framing, t)
                }) {
                Step::End => break,
                Step::Msg(m) => self.st.frontend_message(framing, &m, be_lost, out),
                Step::Lost => {
                    self.st.stats.sync_lost += 1;
                    let rest = seg_total(seg).saturating_sub(pos);
                    self.st.add_request(rest);
                    self.frontend_end(seg, out);
                    break;
                }
                Step::Malformed => Act::Malformed,
            };
            match act {
                Act::None | Act::Encrypted | Act::Plain => {}
                Act::Typed => {
                    self.fe.framing = Framing::PgTyped;
                    self.be.framing = Framing::PgTyped;
                }
                Act::EncRequest => {
                    self.st.phase = Phase::EncAnswer;
                    self.be = Reader::new(Framing::Single);
                }
                Act::Cancel => {
                    self.st.phase = Phase::Cancel;
                    self.st.release();
                    return Verdict::Continue;
                }
                Act::Malformed => {
                    if self.st.strict {
                        return Verdict::Reject;
                    }
                    self.st.stats.malformed += 1;
                    self.fe.lose();
                    self.frontend_end(seg, out);
                    break;
                }
            }
        }
        // A first message still arriving: judge its code as soon as it is there, as a
        // segment holding the whole message would be judged.
        if self.st.strict
            && self.fe.framing == Framing::PgUntyped
            && self
                .fe
                .in_progress()
                .is_some_and(|start| !startup_prefix_ok(&start))
        {
            return Verdict::Reject;
        }
        Verdict::Continue
    }

    /// Frontend framing lost: found again if the segment ends with a message that ends a
    /// batch.
    fn frontend_end(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.st.phase != Phase::Ready {
            return;
        }
        let Some(end) = segment_end(seg, 5) else {
            return;
        };
        match end {
            b"S\0\0\0\x04" => {
                self.st.sync(seg.ts_ns, 5, out);
            }
            b"c\0\0\0\x04" | b"H\0\0\0\x04" => {}
            _ => return,
        }
        self.fe.resync();
        self.st.stats.resyncs += 1;
    }

    fn backend(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        self.st.last_be_ns = seg.ts_ns;
        match self.st.phase {
            Phase::Encrypted => return Verdict::Continue,
            Phase::Startup => {
                if !(self.st.strict && self.be.at_boundary()) {
                    // The server does not speak before the StartupMessage.
                    return Verdict::Continue;
                }
                if !plausible_typed(seg.data, false) {
                    return Verdict::Reject;
                }
                self.st.stats.heuristics += 1;
                self.st.strict = false;
                self.st.phase = Phase::Ready;
                self.fe = Reader::lost(Framing::PgTyped);
                self.be = Reader::new(Framing::PgTyped);
            }
            _ => {}
        }
        if self.be.is_lost() {
            if self.st.phase != Phase::Ready || !plausible_typed(seg.data, false) {
                self.st.add_response(seg.total_len);
                self.backend_end(seg, out);
                return Verdict::Continue;
            }
            self.be.resync();
            self.st.stats.resyncs += 1;
        }
        let mut pos = 0;
        loop {
            let framing = self.be.framing;
            let act = match self
                .be
                .next(seg.data, seg.total_len, seg.ts_ns, &mut pos, |t, _| {
                    want_backend(framing, t)
                }) {
                Step::End => break,
                Step::Msg(m) => self.st.backend_message(framing, &m, out),
                Step::Lost => {
                    self.st.stats.sync_lost += 1;
                    self.st.add_response(seg_total(seg).saturating_sub(pos));
                    self.backend_end(seg, out);
                    break;
                }
                Step::Malformed => Act::Malformed,
            };
            match act {
                Act::None | Act::Typed | Act::EncRequest | Act::Cancel => {}
                Act::Encrypted => {
                    self.st.phase = Phase::Encrypted;
                    return Verdict::Continue;
                }
                Act::Plain => {
                    self.st.phase = Phase::Startup;
                    self.be.framing = Framing::PgTyped;
                }
                Act::Malformed => {
                    if self.st.strict {
                        return Verdict::Reject;
                    }
                    self.st.stats.malformed += 1;
                    self.be.lose();
                    self.backend_end(seg, out);
                    break;
                }
            }
        }
        Verdict::Continue
    }

    /// Backend framing lost: found again if the segment ends with `ReadyForQuery`, which is
    /// then handled.
    fn backend_end(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.st.phase != Phase::Ready {
            return;
        }
        if let Some([b'Z', 0, 0, 0, 5, s]) = segment_end(seg, 6)
            && matches!(s, b'I' | b'T' | b'E')
        {
            self.st.ready_for_query(seg.ts_ns, 0, out);
            self.be.resync();
            self.st.stats.resyncs += 1;
        }
    }
}

impl super::Parser for PostgresConnection {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        PostgresConnection::on_segment(self, seg, out)
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        PostgresConnection::on_close(self, ts_ns, out);
    }

    fn parse_errors(&self) -> u64 {
        self.st.stats.sync_lost + self.st.stats.malformed
    }
}

/// Payload octets kept of a frontend message.
fn want_frontend(framing: Framing, typ: u8) -> usize {
    match (framing, typ) {
        (Framing::PgUntyped, _) | (Framing::PgTyped, b'Q' | b'P') => MAX_KEEP,
        // Names only (Bind's parameter values are not needed).
        (Framing::PgTyped, b'B' | b'E' | b'C' | b'D') => 2 * MAX_NAME_LEN + 4,
        _ => 0,
    }
}

/// Payload octets kept of a backend message.
fn want_backend(framing: Framing, typ: u8) -> usize {
    match (framing, typ) {
        (Framing::PgTyped, b'E') => ERROR_KEEP,
        (Framing::PgTyped, b'Z') => 1,
        _ => 0,
    }
}

/// The C string at the start of `b`: its octets, what follows its NUL, and whether the NUL
/// was there (else the string may be cut by the capture).
fn cstr(b: &[u8]) -> (&[u8], &[u8], bool) {
    match memchr(0, b) {
        Some(i) => (
            b.get(..i).unwrap_or(&[]),
            b.get(i + 1..).unwrap_or(&[]),
            true,
        ),
        None => (b, &[], false),
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The SQLSTATE (`C` field) of an ErrorResponse payload.
fn sqlstate(p: &[u8]) -> Option<String> {
    let mut rest = p;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let (v, next, terminated) = cstr(r);
        if !terminated {
            return None;
        }
        if t == b'C' {
            return (v.len() == 5 && v.iter().all(u8::is_ascii_alphanumeric))
                .then(|| String::from_utf8_lossy(v).into_owned());
        }
        rest = next;
    }
    None
}

impl State {
    /// Forgets everything about requests (close, reject, cancel).
    fn release(&mut self) {
        self.queue = VecDeque::new();
        self.tracked = 0;
        self.statements.clear();
        self.portals.clear();
        self.unnamed_statement = None;
        self.unnamed_portal = None;
        self.accum = None;
        self.batch_parse = None;
    }

    fn db(&self, summary: Option<&Summary>, status: Option<String>, error: bool) -> Kind {
        Kind::Db(Db {
            system: DbSystem::Postgresql,
            operation: summary.and_then(|s| s.operation.clone()),
            collection: summary.and_then(|s| s.collection.clone()),
            namespace: self.namespace.clone(),
            query: summary
                .filter(|s| !s.text.is_empty())
                .map(|s| s.text.clone()),
            status_code: status,
            error,
        })
    }

    fn emit(&self, p: Pending, end_ns: u64, incomplete: bool, out: &mut Vec<Exchange>) {
        let Pending {
            start_ns,
            req,
            resp,
            summary,
            status,
            error,
        } = p;
        out.push(Exchange {
            start_ns,
            end_ns: end_ns.max(start_ns),
            request_size: req,
            response_size: resp,
            flags: ExchangeFlags {
                partial: summary.is_none(),
                incomplete,
            },
            kind: self.db(summary.as_deref(), status, error),
        });
    }

    /// Emits every exchange still waiting (ended at `end_ns`) and empties the queue.
    fn flush(&mut self, end_ns: u64, incomplete: bool, out: &mut Vec<Exchange>) {
        while let Some(item) = self.pop() {
            match item {
                Item::Query(p) | Item::Exec(p) => self.emit(*p, end_ns, incomplete, out),
                Item::Untracked(_) | Item::Sync(_) | Item::Function => {}
            }
        }
    }

    /// The front of the queue, removed.
    fn pop(&mut self) -> Option<Item> {
        let item = self.queue.pop_front();
        if matches!(item, Some(Item::Query(_) | Item::Exec(_))) {
            self.tracked = self.tracked.saturating_sub(1);
        }
        item
    }

    fn push(&mut self, item: Item, ts: u64, out: &mut Vec<Exchange>) {
        if let (Item::Untracked(n), Some(Item::Untracked(m))) = (&item, self.queue.back_mut()) {
            *m = m.saturating_add(*n);
            return;
        }
        if self.queue.len() >= MAX_QUEUE {
            // A client that does not read its responses: give up pairing what is queued.
            self.stats.dropped += self.tracked as u64;
            self.flush(ts, true, out);
        }
        if matches!(item, Item::Query(_) | Item::Exec(_)) {
            self.tracked += 1;
        }
        self.queue.push_back(item);
    }

    fn accumulate(&mut self, start_ns: u64, wire: u64) {
        let a = self.accum.get_or_insert((start_ns, 0));
        a.1 = a.1.saturating_add(wire);
    }

    /// A new request while the backend framing is lost: what is queued was answered in the
    /// octets not seen.
    fn new_request(&mut self, be_lost: bool, out: &mut Vec<Exchange>) {
        if be_lost && !self.queue.is_empty() {
            let end = self.last_be_ns;
            self.flush(end, false, out);
        }
    }

    /// A request that gives an exchange: `Query` or `Execute`.
    fn push_exchange(
        &mut self,
        query: bool,
        summary: Option<Arc<Summary>>,
        m: &Msg<'_>,
        wire: u64,
        out: &mut Vec<Exchange>,
    ) {
        let (start_ns, req) = match self.accum.take() {
            Some((s, n)) => (s, n.saturating_add(wire)),
            None => (m.start_ns, wire),
        };
        if self.tracked >= MAX_PENDING {
            self.stats.dropped += 1;
            self.push(Item::Untracked(1), m.end_ns, out);
            return;
        }
        let p = Box::new(Pending {
            start_ns,
            req,
            resp: 0,
            summary,
            status: None,
            error: false,
        });
        let item = if query { Item::Query(p) } else { Item::Exec(p) };
        self.push(item, m.end_ns, out);
    }

    fn frontend_message(
        &mut self,
        framing: Framing,
        m: &Msg<'_>,
        be_lost: bool,
        out: &mut Vec<Exchange>,
    ) -> Act {
        let act = match framing {
            Framing::PgUntyped => self.startup_message(m),
            Framing::PgTyped => self.typed_frontend(m, be_lost, out),
            Framing::Single | Framing::MySql => Act::Malformed,
        };
        if act != Act::Malformed {
            self.strict = false;
        }
        act
    }

    fn startup_message(&mut self, m: &Msg<'_>) -> Act {
        let Some(code) = be_u32(m.payload) else {
            // The code was not captured (a capture bound under 8 octets): assume a startup.
            return if m.payload_len >= 4 {
                self.phase = Phase::Ready;
                Act::Typed
            } else {
                Act::Malformed
            };
        };
        if !startup_code_ok(m.payload_len.saturating_add(4), code) {
            return Act::Malformed;
        }
        match code {
            SSL_REQUEST | GSSENC_REQUEST => Act::EncRequest,
            CANCEL_REQUEST => Act::Cancel,
            _ => {
                let mut user = None;
                let mut database = None;
                let mut rest = m.payload.get(4..).unwrap_or(&[]);
                while !rest.is_empty() {
                    let (k, r, _) = cstr(rest);
                    if k.is_empty() {
                        break;
                    }
                    let (v, r, _) = cstr(r);
                    match k {
                        b"user" => user = Some(v),
                        b"database" => database = Some(v),
                        _ => {}
                    }
                    rest = r;
                }
                // The server's default database is the user's name.
                self.namespace = database
                    .filter(|d| !d.is_empty())
                    .or(user)
                    .filter(|n| !n.is_empty())
                    .map(|n| sql::lossy(n, MAX_NAME_LEN));
                self.phase = Phase::Ready;
                Act::Typed
            }
        }
    }

    fn typed_frontend(&mut self, m: &Msg<'_>, be_lost: bool, out: &mut Vec<Exchange>) -> Act {
        let wire = m.payload_len.saturating_add(5);
        let p = m.payload;
        match m.typ {
            b'Q' => {
                self.new_request(be_lost, out);
                let (text, _, _) = cstr(p);
                let summary = sql::summarize_captured(text, Dialect::Postgres);
                self.push_exchange(true, Some(summary), m, wire, out);
            }
            b'P' => {
                let (name, rest, named) = cstr(p);
                let (text, _, _) = cstr(rest);
                let summary = sql::summarize_captured(text, Dialect::Postgres);
                if named {
                    if name.is_empty() {
                        self.unnamed_statement = Some(summary.clone());
                    } else if name.len() <= MAX_NAME_LEN {
                        self.statements.insert(name.into(), summary.clone());
                    }
                }
                let start_ns = self.accum.map_or(m.start_ns, |a| a.0);
                self.batch_parse = Some(Box::new(Prepared {
                    summary,
                    start_ns,
                    req: wire,
                }));
                self.accumulate(m.start_ns, wire);
            }
            b'B' => {
                let (portal, rest, p_ok) = cstr(p);
                let (stmt, _, s_ok) = cstr(rest);
                if p_ok && s_ok {
                    let s = if stmt.is_empty() {
                        self.unnamed_statement.clone()
                    } else {
                        self.statements.get(stmt).cloned()
                    };
                    if portal.is_empty() {
                        self.unnamed_portal = Some(s);
                    } else if portal.len() <= MAX_NAME_LEN {
                        self.portals.insert(portal.into(), s);
                    }
                } else if p_ok && portal.is_empty() {
                    self.unnamed_portal = Some(None);
                }
                self.accumulate(m.start_ns, wire);
            }
            b'E' => {
                self.new_request(be_lost, out);
                if self.discard_until_sync {
                    // The server skips it: no exchange.
                    self.accum = None;
                    return Act::None;
                }
                let (portal, _, ok) = cstr(p);
                let summary = match (ok, portal.is_empty()) {
                    (false, _) => None,
                    (true, true) => self.unnamed_portal.clone().flatten(),
                    (true, false) => self.portals.get(portal).cloned().flatten(),
                };
                self.batch_parse = None;
                self.push_exchange(false, summary, m, wire, out);
            }
            b'C' => {
                let (name, _, ok) = cstr(p.get(1..).unwrap_or(&[]));
                if ok {
                    match (p.first(), name.is_empty()) {
                        (Some(b'S'), true) => self.unnamed_statement = None,
                        (Some(b'S'), false) => self.statements.remove(name),
                        (Some(b'P'), true) => self.unnamed_portal = None,
                        (Some(b'P'), false) => self.portals.remove(name),
                        _ => {}
                    }
                }
                self.accumulate(m.start_ns, wire);
            }
            b'D' => self.accumulate(m.start_ns, wire),
            b'H' => {
                // A Flush ends what was sent so far: it belongs with the Execute before it,
                // not with the next request.
                match (self.accum.is_some(), self.queue.back_mut()) {
                    (true, _) => self.accumulate(m.start_ns, wire),
                    (false, Some(Item::Exec(x))) => x.req = x.req.saturating_add(wire),
                    (false, _) => {}
                }
            }
            b'S' => self.sync(m.end_ns, wire, out),
            b'd' | b'c' | b'f' => {
                // COPY FROM STDIN data: part of the COPY statement's request.
                if let Some(Item::Query(x) | Item::Exec(x)) = self.queue.back_mut() {
                    x.req = x.req.saturating_add(wire);
                }
            }
            b'F' => {
                self.new_request(be_lost, out);
                self.accum = None;
                self.push(Item::Function, m.end_ns, out);
            }
            // Terminate; password, SASL and GSSAPI responses.
            b'X' | b'p' => {}
            _ => return Act::Malformed,
        }
        Act::None
    }

    fn sync(&mut self, ts: u64, wire: u64, out: &mut Vec<Exchange>) {
        if self.accum.is_none()
            && let Some(Item::Exec(x)) = self.queue.back_mut()
        {
            x.req = x.req.saturating_add(wire);
        }
        self.accum = None;
        self.discard_until_sync = false;
        let prep = self.batch_parse.take();
        self.push(Item::Sync(prep), ts, out);
    }

    fn backend_message(&mut self, framing: Framing, m: &Msg<'_>, out: &mut Vec<Exchange>) -> Act {
        if framing == Framing::Single {
            return match m.typ {
                b'S' | b'G' => Act::Encrypted,
                b'N' => Act::Plain,
                _ => Act::Malformed,
            };
        }
        if framing != Framing::PgTyped {
            return Act::Malformed;
        }
        let wire = m.payload_len.saturating_add(5);
        let ts = m.end_ns;
        match m.typ {
            b'Z' => {
                if m.payload_len != 1 || !matches!(m.payload, [b'I' | b'T' | b'E']) {
                    return Act::Malformed;
                }
                self.ready_for_query(ts, wire, out);
            }
            b'C' | b'I' | b's' => self.complete(ts, wire, out),
            b'E' => self.error(sqlstate(m.payload), ts, wire, out),
            // Asynchronous, or part of the startup.
            b'N' | b'A' | b'S' | b'R' | b'K' | b'v' => {}
            b'1' | b'2' | b'3' | b'n' | b't' | b'T' | b'D' | b'G' | b'H' | b'W' | b'd' | b'c'
            | b'V' => self.add_response(wire),
            _ => return Act::Malformed,
        }
        self.strict = false;
        Act::None
    }

    /// Frontend octets not framed (lost framing): most likely more of the last request (COPY
    /// data, a large batch).
    fn add_request(&mut self, n: u64) {
        if self.phase == Phase::Ready
            && let Some(Item::Query(x) | Item::Exec(x)) = self.queue.back_mut()
        {
            x.req = x.req.saturating_add(n);
        }
    }

    /// Response octets for the exchange answered now.
    fn add_response(&mut self, n: u64) {
        if let Some(Item::Query(x) | Item::Exec(x)) = self.queue.front_mut() {
            x.resp = x.resp.saturating_add(n);
        }
    }

    fn ready_for_query(&mut self, ts: u64, wire: u64, out: &mut Vec<Exchange>) {
        while let Some(item) = self.pop() {
            match item {
                Item::Query(mut p) => {
                    p.resp = p.resp.saturating_add(wire);
                    self.emit(*p, ts, false, out);
                    return;
                }
                Item::Sync(_) | Item::Function => return,
                // Its completion was not seen (lost framing): it ended by now.
                Item::Exec(p) => self.emit(*p, ts, false, out),
                Item::Untracked(_) => {}
            }
        }
    }

    fn complete(&mut self, ts: u64, wire: u64, out: &mut Vec<Exchange>) {
        match self.queue.front_mut() {
            Some(Item::Exec(_)) => {
                if let Some(Item::Exec(mut p)) = self.pop() {
                    p.resp = p.resp.saturating_add(wire);
                    self.emit(*p, ts, false, out);
                }
            }
            Some(Item::Untracked(n)) => {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.pop();
                }
            }
            // One statement of several in the query string.
            Some(Item::Query(p)) => p.resp = p.resp.saturating_add(wire),
            Some(Item::Sync(_) | Item::Function) | None => self.stats.orphans += 1,
        }
    }

    fn error(&mut self, code: Option<String>, ts: u64, wire: u64, out: &mut Vec<Exchange>) {
        match self.queue.front_mut() {
            Some(Item::Query(p)) => {
                p.resp = p.resp.saturating_add(wire);
                if !p.error {
                    p.error = true;
                    p.status = code;
                }
            }
            Some(Item::Exec(_) | Item::Untracked(_)) => {
                if let Some(Item::Exec(mut p)) = self.pop() {
                    p.resp = p.resp.saturating_add(wire);
                    p.error = true;
                    p.status = code;
                    self.emit(*p, ts, false, out);
                }
                // The server skips to the batch's Sync: its other Executes never run.
                while matches!(self.queue.front(), Some(Item::Exec(_) | Item::Untracked(_))) {
                    self.pop();
                }
                if self.queue.is_empty() {
                    self.discard_until_sync = true;
                    self.batch_parse = None;
                }
            }
            Some(Item::Sync(prep)) => {
                if let Some(p) = prep.take() {
                    self.emit_prepared(*p, code, ts, wire, out);
                }
            }
            Some(Item::Function) => {}
            None => {
                if let Some(p) = self.batch_parse.take() {
                    // A Parse failed before its batch's Sync was sent.
                    self.emit_prepared(*p, code, ts, wire, out);
                    self.discard_until_sync = true;
                    self.accum = None;
                } else {
                    self.stats.orphans += 1;
                }
            }
        }
    }

    fn emit_prepared(
        &self,
        p: Prepared,
        code: Option<String>,
        ts: u64,
        wire: u64,
        out: &mut Vec<Exchange>,
    ) {
        out.push(Exchange {
            start_ns: p.start_ns,
            end_ns: ts.max(p.start_ns),
            request_size: p.req,
            response_size: wire,
            flags: ExchangeFlags::default(),
            kind: self.db(Some(&p.summary), code, true),
        });
    }
}

/// `data` is consistent, as far as it goes, with a startup-family message.
fn startup_prefix_ok(data: &[u8]) -> bool {
    let Some(len) = be_u32(data).map(u64::from) else {
        return true;
    };
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return false;
    }
    be_u32(data.get(4..).unwrap_or(&[])).is_none_or(|code| startup_code_ok(len, code))
}

/// A startup-family message of `len` octets (length field included) may have this code.
fn startup_code_ok(len: u64, code: u32) -> bool {
    match code {
        SSL_REQUEST | GSSENC_REQUEST => len == 8,
        CANCEL_REQUEST => (16..=272).contains(&len),
        c => c >> 16 == PROTOCOL_MAJOR && len > 8,
    }
}

/// `data` starts with a whole startup-family header (`startup_only`: a StartupMessage) whose
/// parameters, as far as captured, look like `key\0value\0` pairs.
fn is_startup_family(data: &[u8], startup_only: bool) -> bool {
    if data.len() < 8 || !startup_prefix_ok(data) {
        return false;
    }
    let (Some(len), Some(code)) = (be_u32(data), be_u32(data.get(4..).unwrap_or(&[]))) else {
        return false;
    };
    if code >> 16 != PROTOCOL_MAJOR {
        return !startup_only;
    }
    let len = len as usize;
    let params = data.get(8..len.min(data.len())).unwrap_or(&[]);
    // Parameter names and values are text: no control octet but the NULs.
    if params
        .iter()
        .any(|&b| b != 0 && (b < 0x20 || b == 0x7f) && b != b'\t')
    {
        return false;
    }
    // The first name is a word; a whole message ends with its terminating NUL.
    let first_ok = params
        .first()
        .is_none_or(|&b| b.is_ascii_alphabetic() || b == b'_');
    let end_ok = data.len() < len || data.get(len - 1) == Some(&0);
    first_ok && end_ok
}

/// Smallest and largest length field (which counts itself) of a message type.
fn len_bounds(typ: u8, frontend: bool) -> Option<(u64, u64)> {
    Some(if frontend {
        match typ {
            b'Q' => (5, LARGE),
            b'P' => (8, LARGE),
            b'B' => (12, LARGE),
            b'F' => (14, LARGE),
            b'd' => (4, LARGE),
            b'E' => (9, SMALL),
            b'D' | b'C' => (6, SMALL),
            b'H' | b'S' | b'X' | b'c' => (4, 4),
            b'f' => (5, SMALL),
            b'p' => (5, 1 << 20),
            _ => return None,
        }
    } else {
        match typ {
            b'R' => (8, SMALL),
            b'K' => (12, 264),
            b'S' => (6, SMALL),
            b'Z' => (5, 5),
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => (4, 4),
            b'C' => (5, 1000),
            b'T' | b'D' | b'd' | b'V' => (6, LARGE),
            b't' | b'E' | b'N' | b'A' => (5, 1 << 20),
            b'G' | b'H' | b'W' => (7, 1 << 20),
            b'v' => (12, SMALL),
            _ => return None,
        }
    })
}

/// Checks of a message body captured whole.
fn valid_body(typ: u8, body: &[u8], frontend: bool) -> bool {
    let ends_nul = body.last() == Some(&0);
    if frontend {
        match typ {
            b'Q' => memchr(0, body) == Some(body.len().saturating_sub(1)),
            b'P' => memchr::memchr_iter(0, body).nth(1).is_some(),
            b'E' => body.len() >= 5 && body.get(body.len() - 5) == Some(&0),
            b'D' | b'C' => matches!(body.first(), Some(b'S' | b'P')) && ends_nul,
            _ => true,
        }
    } else {
        match typ {
            b'Z' => matches!(body, [b'I' | b'T' | b'E']),
            b'C' => ends_nul && body.first().is_some_and(u8::is_ascii_uppercase),
            b'E' | b'N' => ends_nul && body.first().is_some_and(u8::is_ascii_alphabetic),
            b'R' => be_u32(body).is_some_and(|c| c <= 12),
            _ => true,
        }
    }
}

/// `data` starts with a plausible typed message of one side, and every message after it in
/// the captured octets is plausible too (at most 16 are checked).
fn plausible_typed(data: &[u8], frontend: bool) -> bool {
    let mut off = 0usize;
    for n in 0..16 {
        let Some(h) = data.get(off..off + 5) else {
            // A header cut by the end of the capture: its type at least must be valid.
            return n > 0
                && data
                    .get(off)
                    .is_none_or(|&t| len_bounds(t, frontend).is_some());
        };
        let typ = h.first().copied().unwrap_or(0);
        let Some(len) = be_u32(h.get(1..).unwrap_or(&[])).map(u64::from) else {
            return false;
        };
        let Some((min, max)) = len_bounds(typ, frontend) else {
            return false;
        };
        if len < min || len > max {
            return false;
        }
        // `len <= LARGE` fits in usize.
        let end = off.saturating_add(1).saturating_add(len as usize);
        if let Some(body) = data.get(off + 5..end)
            && !valid_body(typ, body, frontend)
        {
            return false;
        }
        if end >= data.len() {
            return true;
        }
        off = end;
    }
    true
}

/// Judges the first captured bytes of a connection in `direction`.
///
/// `Yes` for a frontend startup-family message (StartupMessage of protocol 3, SSLRequest,
/// GSSENCRequest, CancelRequest); `Maybe` for plausible typed messages of the side that
/// `direction` carries (such as `Q` + length + text + NUL); `No` otherwise (HTTP, TLS, …).
pub fn detect(role: Role, direction: Direction, data: &[u8]) -> Detected {
    let frontend = direction == role.request_direction();
    if frontend && is_startup_family(data, false) {
        return Detected::Yes;
    }
    if plausible_typed(data, frontend) {
        return Detected::Maybe;
    }
    if frontend && (4..8).contains(&data.len()) && startup_prefix_ok(data) {
        return Detected::Maybe;
    }
    Detected::No
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        self, Step, TestConn, cat, db, hex, request as fe, response as be, truncated,
    };
    use super::*;

    // ----- encoders -----

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend(((body.len() + 4) as u32).to_be_bytes());
        v.extend(body);
        v
    }

    fn untyped(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend(code.to_be_bytes());
        v.extend(rest);
        v
    }

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in params {
            b.extend(k.as_bytes());
            b.push(0);
            b.extend(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        untyped(196_608, &b)
    }

    fn cstrs(parts: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        for p in parts {
            b.extend(p.as_bytes());
            b.push(0);
        }
        b
    }

    fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &cstrs(&[sql]))
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = cstrs(&[name, sql]);
        b.extend(0u16.to_be_bytes());
        msg(b'P', &b)
    }

    fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        let mut b = cstrs(&[portal, stmt]);
        // No format codes, one text parameter "42", no result formats.
        b.extend(0u16.to_be_bytes());
        b.extend(1u16.to_be_bytes());
        b.extend(2u32.to_be_bytes());
        b.extend(b"42");
        b.extend(0u16.to_be_bytes());
        msg(b'B', &b)
    }

    fn execute(portal: &str, max_rows: u32) -> Vec<u8> {
        let mut b = cstrs(&[portal]);
        b.extend(max_rows.to_be_bytes());
        msg(b'E', &b)
    }

    fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        b.extend(cstrs(&[name]));
        msg(b'D', &b)
    }

    fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        b.extend(cstrs(&[name]));
        msg(b'C', &b)
    }

    fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }

    fn ready(s: u8) -> Vec<u8> {
        msg(b'Z', &[s])
    }

    fn complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cstrs(&[tag]))
    }

    fn row_desc(n: u16) -> Vec<u8> {
        let mut b = n.to_be_bytes().to_vec();
        for i in 0..n {
            b.extend(cstrs(&[&format!("col{i}")]));
            b.extend([0u8; 18]);
        }
        msg(b'T', &b)
    }

    fn data_row(vals: &[&[u8]]) -> Vec<u8> {
        let mut b = (vals.len() as u16).to_be_bytes().to_vec();
        for v in vals {
            b.extend((v.len() as u32).to_be_bytes());
            b.extend(*v);
        }
        msg(b'D', &b)
    }

    fn error(code: &str) -> Vec<u8> {
        let mut b = cstrs(&["SERROR", "VERROR", &format!("C{code}"), "Msomething failed"]);
        b.push(0);
        msg(b'E', &b)
    }

    fn notice() -> Vec<u8> {
        let mut b = cstrs(&["SNOTICE", "C00000", "Mhello"]);
        b.push(0);
        msg(b'N', &b)
    }

    fn auth_ok() -> Vec<u8> {
        msg(b'R', &0u32.to_be_bytes())
    }

    fn param_status(k: &str, v: &str) -> Vec<u8> {
        msg(b'S', &cstrs(&[k, v]))
    }

    fn key_data() -> Vec<u8> {
        msg(b'K', &[0, 0, 0, 7, 1, 2, 3, 4])
    }

    /// The backend's answer to a StartupMessage.
    fn welcome() -> Vec<u8> {
        cat(&[
            auth_ok(),
            param_status("server_version", "16.2"),
            key_data(),
            ready(b'I'),
        ])
    }

    // ----- harness -----

    impl TestConn for PostgresConnection {
        fn open(role: Role, joined_midway: bool) -> Self {
            PostgresConnection::new(role, joined_midway)
        }

        fn waiting(&self) -> usize {
            self.pending()
        }

        fn check_bounds(&self) {
            assert!(self.pending() <= MAX_QUEUE);
            let (s, p) = self.remembered();
            assert!(s <= MAX_STATEMENTS && p <= MAX_PORTALS);
            assert!(self.buffered() <= 2 * MAX_KEEP);
        }
    }

    type Run = testing::Run<PostgresConnection>;

    fn run_cut(role: Role, midway: bool, steps: &[Step], cut: Option<(usize, usize)>) -> Run {
        testing::run_cut(role, midway, steps, cut)
    }

    fn run(role: Role, steps: &[Step]) -> Run {
        run_cut(role, false, steps, None)
    }

    /// Same exchanges whatever the role and wherever one step is cut in two (and as many framing
    /// losses).
    fn run_all_ways(steps: &[Step]) -> Vec<Exchange> {
        testing::run_all_ways(steps, |c: &PostgresConnection| c.stats().sync_lost)
    }

    fn login() -> Vec<Step> {
        vec![
            fe(startup(&[("user", "alice"), ("database", "shop")])),
            be(welcome()),
        ]
    }

    // ----- tests -----

    #[test]
    fn simple_query() {
        let q = query("SELECT * FROM users WHERE id = 1");
        let resp = cat(&[
            row_desc(2),
            data_row(&[b"1", b"alice"]),
            data_row(&[b"2", b"bob"]),
            complete("SELECT 2"),
            ready(b'I'),
        ]);
        let mut steps = login();
        steps.push(fe(q.clone()));
        steps.push(be(resp.clone()));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.start_ns, e.end_ns), (30, 40));
        assert_eq!(e.request_size, q.len() as u64);
        assert_eq!(e.response_size, resp.len() as u64);
        assert_eq!(e.flags, ExchangeFlags::default());
        assert_eq!(
            db(e),
            &Db {
                system: DbSystem::Postgresql,
                operation: Some("SELECT".into()),
                collection: Some("users".into()),
                namespace: Some("shop".into()),
                query: Some("SELECT * FROM users WHERE id = ?".into()),
                status_code: None,
                error: false,
            }
        );
    }

    #[test]
    fn namespace_defaults_to_user() {
        let steps = vec![
            fe(startup(&[("user", "bob"), ("application_name", "psql")])),
            be(welcome()),
            fe(query("SELECT 1")),
            be(cat(&[
                row_desc(1),
                data_row(&[b"1"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
        ];
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert_eq!(db(&r.out[0]).namespace.as_deref(), Some("bob"));
        assert_eq!(r.conn.namespace(), Some("bob"));
    }

    #[test]
    fn responses_over_many_segments() {
        let mut steps = login();
        steps.push(fe(query("SELECT a FROM t")));
        steps.push(be(row_desc(1)));
        steps.push(be(data_row(&[b"x"])));
        steps.push(be(cat(&[data_row(&[b"y"]), complete("SELECT 2")])));
        steps.push(be(ready(b'I')));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ns, out[0].end_ns), (30, 70));
    }

    #[test]
    fn simple_query_error() {
        let mut steps = login();
        steps.push(fe(query("SELEC 1")));
        steps.push(be(cat(&[error("42601"), ready(b'I')])));
        steps.push(fe(query("SELECT * FROM nope")));
        steps.push(be(cat(&[error("42P01"), ready(b'I')])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        let d = db(&out[0]);
        assert!(d.error);
        assert_eq!(d.status_code.as_deref(), Some("42601"));
        assert_eq!(d.operation, None);
        let d = db(&out[1]);
        assert_eq!(d.status_code.as_deref(), Some("42P01"));
        assert_eq!(d.collection.as_deref(), Some("nope"));
    }

    #[test]
    fn multi_statement_query_is_one_exchange() {
        let mut steps = login();
        steps.push(fe(query(
            "INSERT INTO a VALUES (1); SELECT 2; SELECT x FROM b",
        )));
        steps.push(be(cat(&[
            complete("INSERT 0 1"),
            row_desc(1),
            data_row(&[b"2"]),
            complete("SELECT 1"),
            error("42703"),
            ready(b'E'),
        ])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        let d = db(&out[0]);
        assert_eq!(d.operation.as_deref(), Some("INSERT"));
        assert_eq!(d.collection.as_deref(), Some("a"));
        assert_eq!(
            d.query.as_deref(),
            Some("INSERT INTO a VALUES (?); SELECT ?; SELECT x FROM b")
        );
        assert_eq!(d.status_code.as_deref(), Some("42703"));
    }

    #[test]
    fn extended_query() {
        let req = cat(&[
            parse("", "SELECT name FROM users WHERE id = $1"),
            bind("", ""),
            describe(b'P', ""),
            execute("", 0),
            sync(),
        ]);
        let resp = cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            row_desc(1),
            data_row(&[b"alice"]),
            complete("SELECT 1"),
            ready(b'I'),
        ]);
        let mut steps = login();
        steps.push(fe(req.clone()));
        steps.push(be(resp.clone()));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.start_ns, e.end_ns), (30, 40));
        assert_eq!(e.request_size, req.len() as u64);
        // ReadyForQuery answers the Sync after the exchange ended.
        assert_eq!(e.response_size, (resp.len() - 6) as u64);
        let d = db(e);
        assert_eq!(d.operation.as_deref(), Some("SELECT"));
        assert_eq!(d.collection.as_deref(), Some("users"));
        assert_eq!(
            d.query.as_deref(),
            Some("SELECT name FROM users WHERE id = $1")
        );
        assert!(!e.flags.partial);
    }

    #[test]
    fn pipeline_in_order() {
        let mut steps = login();
        steps.push(fe(cat(&[
            parse("", "INSERT INTO a VALUES ($1)"),
            bind("", ""),
            execute("", 0),
            parse("", "UPDATE b SET x = $1"),
            bind("", ""),
            execute("", 0),
            parse("", "DELETE FROM c"),
            bind("", ""),
            execute("", 0),
            sync(),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("INSERT 0 1"),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("UPDATE 3"),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("DELETE 0"),
            ready(b'I'),
        ])));
        let out = run_all_ways(&steps);
        let got: Vec<_> = out
            .iter()
            .map(|e| (db(e).collection.clone().unwrap_or_default(), e.end_ns))
            .collect();
        assert_eq!(got, [("a".into(), 40), ("b".into(), 50), ("c".into(), 60)]);
    }

    #[test]
    fn pipeline_error_skips_rest_of_batch() {
        let mut steps = login();
        steps.push(fe(cat(&[
            parse("", "INSERT INTO a VALUES ($1)"),
            bind("", ""),
            execute("", 0),
            parse("", "INSERT INTO uniq VALUES ($1)"),
            bind("", ""),
            execute("", 0),
            parse("", "INSERT INTO c VALUES ($1)"),
            bind("", ""),
            execute("", 0),
            sync(),
            query("SELECT 1"),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("INSERT 0 1"),
            msg(b'1', &[]),
            msg(b'2', &[]),
            error("23505"),
            ready(b'E'),
            row_desc(1),
            data_row(&[b"1"]),
            complete("SELECT 1"),
            ready(b'I'),
        ])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 3);
        assert_eq!(db(&out[0]).collection.as_deref(), Some("a"));
        assert!(!db(&out[0]).error);
        assert_eq!(db(&out[1]).collection.as_deref(), Some("uniq"));
        assert_eq!(db(&out[1]).status_code.as_deref(), Some("23505"));
        assert!(db(&out[1]).error);
        assert_eq!(db(&out[2]).query.as_deref(), Some("SELECT ?"));
    }

    #[test]
    fn error_before_sync_discards_until_sync() {
        let mut steps = login();
        // Flush instead of Sync: the client sees the error before ending the batch.
        steps.push(fe(cat(&[
            parse("", "INSERT INTO t VALUES ($1)"),
            bind("", ""),
            execute("", 0),
            flush(),
        ])));
        steps.push(be(cat(&[msg(b'1', &[]), msg(b'2', &[]), error("23502")])));
        steps.push(fe(cat(&[bind("", ""), execute("", 0), sync()])));
        steps.push(be(ready(b'I')));
        steps.push(fe(query("COMMIT")));
        steps.push(be(cat(&[complete("ROLLBACK"), ready(b'I')])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(db(&out[0]).status_code.as_deref(), Some("23502"));
        assert_eq!(db(&out[1]).operation.as_deref(), Some("COMMIT"));
    }

    #[test]
    fn named_statement_reused() {
        let mut steps = login();
        // Prepare: Parse + Describe + Sync, no exchange.
        steps.push(fe(cat(&[
            parse("stmt_1", "SELECT * FROM orders WHERE id = $1"),
            describe(b'S', "stmt_1"),
            sync(),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b't', &[0, 1, 0, 0, 0, 23]),
            row_desc(3),
            ready(b'I'),
        ])));
        for _ in 0..3 {
            steps.push(fe(cat(&[bind("", "stmt_1"), execute("", 0), sync()])));
            steps.push(be(cat(&[
                msg(b'2', &[]),
                data_row(&[b"1", b"2", b"3"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])));
        }
        // Closed: an Execute of it now is of an unknown statement.
        steps.push(fe(cat(&[close(b'S', "stmt_1"), sync()])));
        steps.push(be(cat(&[msg(b'3', &[]), ready(b'I')])));
        steps.push(fe(cat(&[bind("", "stmt_1"), execute("", 0), sync()])));
        steps.push(be(cat(&[error("26000"), ready(b'I')])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 4);
        for e in &out[..3] {
            assert_eq!(db(e).collection.as_deref(), Some("orders"));
            assert!(!e.flags.partial);
        }
        assert!(out[3].flags.partial);
        assert_eq!(db(&out[3]).operation, None);
        assert_eq!(db(&out[3]).status_code.as_deref(), Some("26000"));
    }

    #[test]
    fn named_portals_and_suspension() {
        let mut steps = login();
        steps.push(fe(cat(&[
            parse("s", "SELECT * FROM big"),
            bind("cur", "s"),
            execute("cur", 2),
            flush(),
        ])));
        steps.push(be(cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            data_row(&[b"1"]),
            data_row(&[b"2"]),
            msg(b's', &[]),
        ])));
        steps.push(fe(cat(&[execute("cur", 2), sync()])));
        steps.push(be(cat(&[
            data_row(&[b"3"]),
            complete("SELECT 1"),
            ready(b'T'),
        ])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].start_ns, out[0].end_ns), (30, 40));
        assert_eq!((out[1].start_ns, out[1].end_ns), (50, 60));
        assert!(
            out.iter()
                .all(|e| db(e).collection.as_deref() == Some("big"))
        );
    }

    #[test]
    fn parse_error_without_execute() {
        let mut steps = login();
        steps.push(fe(cat(&[
            parse("bad", "SELEC * FROM t WHERE a = 'x'"),
            describe(b'S', "bad"),
            sync(),
        ])));
        steps.push(be(cat(&[error("42601"), ready(b'I')])));
        // A Parse error with an Execute in the batch: the Execute carries it.
        steps.push(fe(cat(&[
            parse("", "SELECT * FROM missing"),
            bind("", ""),
            execute("", 0),
            sync(),
        ])));
        steps.push(be(cat(&[error("42P01"), ready(b'I')])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!(db(&out[0]).status_code.as_deref(), Some("42601"));
        assert_eq!(
            db(&out[0]).query.as_deref(),
            Some("SELEC * FROM t WHERE a = ?")
        );
        assert_eq!((out[0].start_ns, out[0].end_ns), (30, 40));
        assert_eq!(db(&out[1]).collection.as_deref(), Some("missing"));
        assert_eq!(db(&out[1]).status_code.as_deref(), Some("42P01"));
    }

    #[test]
    fn copy_in_and_out() {
        let mut steps = login();
        steps.push(fe(query("COPY items (a, b) FROM STDIN")));
        steps.push(be(msg(b'G', &[0, 0, 2, 0, 0, 0, 0])));
        steps.push(fe(msg(b'd', b"1\tx\n2\ty\n")));
        steps.push(fe(cat(&[msg(b'd', b"3\tz\n"), msg(b'c', &[])])));
        steps.push(be(cat(&[complete("COPY 3"), ready(b'I')])));
        steps.push(fe(query("COPY items TO STDOUT")));
        steps.push(be(cat(&[
            msg(b'H', &[0, 0, 2, 0, 0, 0, 0]),
            msg(b'd', b"1\tx\n"),
            msg(b'd', b"2\ty\n"),
            msg(b'c', &[]),
            complete("COPY 2"),
            ready(b'I'),
        ])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!(db(&out[0]).operation.as_deref(), Some("COPY"));
        assert_eq!(db(&out[0]).collection.as_deref(), Some("items"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (30, 70));
        let q_len = query("COPY items (a, b) FROM STDIN").len() as u64;
        assert_eq!(out[0].request_size, q_len + 13 + 9 + 5);
        assert_eq!((out[1].start_ns, out[1].end_ns), (80, 90));
    }

    #[test]
    fn ssl_request_then_plaintext_startup() {
        let steps = vec![
            fe(untyped(SSL_REQUEST, &[])),
            be(b"S".to_vec()),
            // TLS handshake records on the socket.
            fe(vec![0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]),
            be(vec![0x16, 3, 3, 0, 2, 2, 0]),
            // The TLS library's plaintext.
            fe(startup(&[("user", "u"), ("database", "secure")])),
            be(welcome()),
            fe(query("SELECT 1")),
            be(cat(&[complete("SELECT 1"), ready(b'I')])),
        ];
        let r = run(Role::Client, &steps);
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
        assert_eq!(r.out.len(), 1);
        assert_eq!(db(&r.out[0]).namespace.as_deref(), Some("secure"));
        assert_eq!(
            r.conn.stats(),
            PostgresStats {
                resyncs: 1,
                ..PostgresStats::default()
            }
        );
    }

    #[test]
    fn ssl_refused_then_clear_startup() {
        let steps = vec![
            fe(untyped(SSL_REQUEST, &[])),
            be(b"N".to_vec()),
            fe(startup(&[("user", "u"), ("database", "plain")])),
            be(welcome()),
            fe(query("SELECT 1")),
            be(cat(&[complete("SELECT 1"), ready(b'I')])),
        ];
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).namespace.as_deref(), Some("plain"));
    }

    #[test]
    fn cancel_request_gives_nothing() {
        let mut body = 1234u32.to_be_bytes().to_vec();
        body.extend(5678u32.to_be_bytes());
        let steps = vec![fe(untyped(CANCEL_REQUEST, &body)), fe(query("SELECT 1"))];
        let r = run(Role::Client, &steps);
        assert!(r.out.is_empty());
        assert_eq!(r.verdicts, [Verdict::Continue, Verdict::Continue]);
    }

    #[test]
    fn long_query_beyond_capture_keeps_framing() {
        let long = format!("INSERT INTO logs (msg) VALUES ('{}')", "x".repeat(20_000));
        let q = query(&long);
        let mut steps = login();
        steps.push(truncated(fe(q.clone()), 1024));
        steps.push(be(cat(&[complete("INSERT 0 1"), ready(b'I')])));
        steps.push(fe(query("SELECT 1")));
        steps.push(be(cat(&[complete("SELECT 1"), ready(b'I')])));
        let mut r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 2);
        r.out.truncate(1);
        assert_eq!(r.out.len(), 1);
        let d = db(&r.out[0]);
        assert_eq!(d.operation.as_deref(), Some("INSERT"));
        assert_eq!(d.collection.as_deref(), Some("logs"));
        assert_eq!(d.query.as_deref(), Some("INSERT INTO logs (msg) VALUES (?"));
        assert_eq!(r.out[0].request_size, q.len() as u64);
        assert_eq!(r.conn.stats().sync_lost, 0);
    }

    fn big_result(rows: usize) -> Vec<u8> {
        let mut v = row_desc(2);
        for i in 0..rows {
            v.extend(data_row(&[format!("{i}").as_bytes(), &[b'v'; 100]]));
        }
        v.extend(complete(&format!("SELECT {rows}")));
        v
    }

    #[test]
    fn lost_sync_in_large_result_resyncs_at_tail() {
        let mut resp = big_result(1000);
        resp.extend(ready(b'I'));
        let (a, b) = resp.split_at(60_000);
        let mut steps = login();
        steps.push(fe(query("SELECT * FROM big")));
        steps.push(truncated(be(a.to_vec()), 1024));
        steps.push(truncated(be(b.to_vec()), 1024));
        steps.push(fe(query("SELECT 2")));
        steps.push(be(cat(&[
            row_desc(1),
            data_row(&[b"2"]),
            complete("SELECT 1"),
            ready(b'I'),
        ])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 2, "{:#?}", r.out);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (30, 50));
        assert_eq!(r.out[0].response_size, resp.len() as u64);
        assert_eq!(db(&r.out[0]).collection.as_deref(), Some("big"));
        assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (60, 70));
        assert_eq!(db(&r.out[1]).query.as_deref(), Some("SELECT ?"));
        assert_eq!(r.conn.stats().sync_lost, 1);
        assert_eq!(super::super::Parser::parse_errors(&r.conn), 1);
    }

    #[test]
    fn lost_sync_without_tail_ends_at_next_request() {
        let resp = big_result(1000);
        let (a, b) = resp.split_at(60_000);
        let mut steps = login();
        steps.push(fe(query("SELECT * FROM big")));
        steps.push(truncated(be(a.to_vec()), 1024));
        // Ends mid-row: not a ReadyForQuery, and the Z comes in a segment of its own that
        // starts mid-message.
        steps.push(truncated(be(b.to_vec()), 1024));
        steps.push(fe(query("SELECT 2")));
        steps.push(be(cat(&[
            row_desc(1),
            data_row(&[b"2"]),
            complete("SELECT 1"),
            ready(b'I'),
        ])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 2, "{:#?}", r.out);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (30, 50));
        assert!(!r.out[0].flags.incomplete);
        assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (60, 70));
        assert_eq!(r.conn.stats().resyncs, 1);
    }

    #[test]
    fn frontend_lost_in_pipeline_resyncs_at_sync() {
        // 200 inserts in one write of which 1024 octets are captured.
        let mut batch = Vec::new();
        for i in 0..200 {
            batch.extend(parse("", &format!("INSERT INTO t{i} VALUES ($1)")));
            batch.extend(bind("", ""));
            batch.extend(execute("", 0));
        }
        batch.extend(sync());
        let mut resp = Vec::new();
        for i in 0..200 {
            resp.extend(cat(&[
                msg(b'1', &[]),
                msg(b'2', &[]),
                complete(&format!("INSERT 0 {i}")),
            ]));
        }
        resp.extend(ready(b'I'));
        let mut steps = login();
        steps.push(truncated(fe(batch), 1024));
        steps.push(be(resp));
        steps.push(fe(query("SELECT 1")));
        steps.push(be(cat(&[complete("SELECT 1"), ready(b'I')])));
        let r = run(Role::Server, &steps);
        let n = r.out.len();
        assert!(n > 5 && n < 20, "{n}");
        for (i, e) in r.out[..n - 1].iter().enumerate() {
            assert_eq!(db(e).collection, Some(format!("t{i}")));
            assert_eq!(e.end_ns, 40);
        }
        assert_eq!(db(&r.out[n - 1]).query.as_deref(), Some("SELECT ?"));
        assert_eq!(r.conn.stats().sync_lost, 1);
        assert_eq!(r.conn.stats().resyncs, 1);
    }

    #[test]
    fn joined_midway() {
        let steps = vec![
            // The end of a message from before.
            fe(b"ERE id = 3\0".to_vec()),
            be(cat(&[complete("SELECT 1"), ready(b'I')])),
            fe(query("UPDATE t SET a = 1")),
            be(cat(&[complete("UPDATE 1"), ready(b'I')])),
            // An Execute of a statement prepared before the daemon joined.
            fe(cat(&[bind("", "S_1"), execute("", 0), sync()])),
            be(cat(&[msg(b'2', &[]), complete("INSERT 0 1"), ready(b'I')])),
        ];
        let r = run_cut(Role::Client, true, &steps, None);
        assert_eq!(r.out.len(), 2);
        assert_eq!(db(&r.out[0]).operation.as_deref(), Some("UPDATE"));
        assert_eq!(db(&r.out[0]).namespace, None);
        assert!(!r.out[0].flags.partial);
        assert!(r.out[1].flags.partial);
        assert_eq!(db(&r.out[1]).operation, None);
        assert_eq!(db(&r.out[1]).query, None);
    }

    #[test]
    fn close_flushes_incomplete() {
        let mut steps = login();
        steps.push(fe(query("SELECT pg_sleep(10)")));
        steps.push(be(row_desc(1)));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert!(r.out[0].flags.incomplete);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (30, 10_000));
        assert_eq!(r.conn.pending(), 0);
    }

    #[test]
    fn empty_query_function_call_and_async_messages() {
        let mut steps = login();
        steps.push(fe(query("")));
        steps.push(be(cat(&[msg(b'I', &[]), ready(b'I')])));
        steps.push(fe(msg(b'F', &[0, 0, 4, 0, 0, 0, 0, 0, 0, 0])));
        steps.push(be(cat(&[msg(b'V', &[0, 0, 0, 0]), ready(b'I')])));
        steps.push(fe(query("LISTEN ch")));
        steps.push(be(cat(&[
            notice(),
            param_status("TimeZone", "UTC"),
            complete("LISTEN"),
            msg(b'A', &cat(&[vec![0, 0, 0, 1], cstrs(&["ch", "payload"])])),
            ready(b'I'),
        ])));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!(db(&out[0]).operation, None);
        assert_eq!(db(&out[0]).query, None);
        assert_eq!(db(&out[1]).operation.as_deref(), Some("LISTEN"));
        assert_eq!((out[1].start_ns, out[1].end_ns), (70, 80));
    }

    #[test]
    fn long_pipeline_is_tracked() {
        // psycopg's executemany: every Execute of the batch sent before reading.
        let mut steps = login();
        steps.push(fe(parse("ins", "INSERT INTO w VALUES ($1, $2)")));
        for _ in 0..500 {
            steps.push(fe(cat(&[
                bind("", "ins"),
                describe(b'P', ""),
                execute("", 0),
            ])));
        }
        steps.push(fe(sync()));
        let mut resp = msg(b'1', &[]);
        for _ in 0..500 {
            resp.extend(cat(&[
                msg(b'2', &[]),
                msg(b'n', &[]),
                complete("INSERT 0 1"),
            ]));
        }
        resp.extend(ready(b'I'));
        steps.push(be(resp));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 500);
        assert!(
            r.out
                .iter()
                .all(|e| db(e).collection.as_deref() == Some("w"))
        );
        assert_eq!(r.out[499].start_ns, 10 * 503);
        assert_eq!(r.conn.stats(), PostgresStats::default());
    }

    #[test]
    fn too_many_pending_executes() {
        let mut req = Vec::new();
        let mut resp = Vec::new();
        for _ in 0..MAX_PENDING + 36 {
            req.extend(cat(&[bind("", "s"), execute("", 0)]));
            resp.extend(cat(&[msg(b'2', &[]), complete("UPDATE 1")]));
        }
        req.extend(sync());
        resp.extend(ready(b'I'));
        let mut steps = login();
        steps.push(fe(parse("s", "UPDATE t SET a = a + 1")));
        steps.push(fe(req));
        steps.push(be(cat(&[msg(b'1', &[]), resp])));
        steps.push(fe(query("SELECT 1")));
        steps.push(be(cat(&[complete("SELECT 1"), ready(b'I')])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), MAX_PENDING + 1);
        assert_eq!(r.conn.stats().dropped, 36);
        assert_eq!(db(&r.out[MAX_PENDING]).query.as_deref(), Some("SELECT ?"));
    }

    #[test]
    fn statements_are_bounded() {
        let mut steps = login();
        for i in 0..1000 {
            steps.push(fe(cat(&[
                parse(&format!("s{i}"), &format!("SELECT {i} FROM t{i}")),
                sync(),
            ])));
            steps.push(be(cat(&[msg(b'1', &[]), ready(b'I')])));
        }
        steps.push(fe(cat(&[
            bind("", "s0"),
            execute("", 0),
            bind("", "s999"),
            execute("", 0),
            sync(),
        ])));
        steps.push(be(cat(&[
            msg(b'2', &[]),
            complete("SELECT 1"),
            msg(b'2', &[]),
            complete("SELECT 1"),
            ready(b'I'),
        ])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.conn.remembered().0, 0, "released at close");
        assert_eq!(r.out.len(), 2);
        assert!(r.out[0].flags.partial, "s0 was forgotten");
        assert_eq!(db(&r.out[1]).collection.as_deref(), Some("t999"));
    }

    #[test]
    fn queue_overflow_flushes() {
        let mut steps = login();
        let mut req = Vec::new();
        for _ in 0..MAX_QUEUE + 44 {
            req.extend(sync());
        }
        req.extend(query("SELECT 1"));
        steps.push(fe(req));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert!(r.out[0].flags.incomplete);
    }

    #[test]
    fn rejects_what_is_not_postgres() {
        for first in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"POST /a HTTP/1.1\r\n".to_vec(),
            vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3],
            b"\0\0\0\x08\0\0\0\0".to_vec(),
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        ] {
            let steps = vec![fe(first.clone()), fe(query("SELECT 1"))];
            let r = run(Role::Client, &steps);
            assert_eq!(r.verdicts, [Verdict::Reject, Verdict::Reject], "{first:?}");
            assert!(r.out.is_empty());
            // Byte by byte: rejected as well, at the latest once the header is complete.
            let steps: Vec<Step> = first.iter().map(|b| fe(vec![*b])).collect();
            let r = run(Role::Client, &steps);
            assert_eq!(r.verdicts.last(), Some(&Verdict::Reject), "{first:?}");
        }
        let steps = vec![be(b"HTTP/1.1 200 OK\r\n\r\n".to_vec())];
        assert_eq!(run(Role::Client, &steps).verdicts, [Verdict::Reject]);
    }

    #[test]
    fn typed_first_bytes_followed_as_midway() {
        let steps = vec![
            fe(query("SELECT 1")),
            be(cat(&[complete("SELECT 1"), ready(b'I')])),
        ];
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.conn.stats().heuristics, 1);
    }

    #[test]
    fn detection() {
        use Direction::{Egress, Ingress};
        let c = Role::Client;
        let s = Role::Server;
        let su = startup(&[("user", "a"), ("database", "b")]);
        assert_eq!(detect(c, Egress, &su), Detected::Yes);
        assert_eq!(detect(s, Ingress, &su), Detected::Yes);
        assert_eq!(detect(c, Egress, &su[..20]), Detected::Yes);
        assert_eq!(detect(c, Egress, &untyped(SSL_REQUEST, &[])), Detected::Yes);
        assert_eq!(
            detect(c, Egress, &untyped(GSSENC_REQUEST, &[])),
            Detected::Yes
        );
        assert_eq!(
            detect(
                c,
                Egress,
                &untyped(CANCEL_REQUEST, &[0, 0, 0, 1, 0, 0, 0, 2])
            ),
            Detected::Yes
        );
        assert_eq!(detect(c, Egress, &su[..5]), Detected::Maybe);
        assert_eq!(detect(c, Egress, &query("SELECT 1")), Detected::Maybe);
        assert_eq!(
            detect(
                c,
                Egress,
                &cat(&[parse("", "SELECT 1"), bind("", ""), execute("", 0), sync()])
            ),
            Detected::Maybe
        );
        assert_eq!(
            detect(c, Ingress, &cat(&[complete("SELECT 1"), ready(b'I')])),
            Detected::Maybe
        );
        assert_eq!(detect(s, Egress, &welcome()), Detected::Maybe);
        // A startup message in the response direction is not one.
        assert_eq!(detect(c, Ingress, &su), Detected::No);
        assert_eq!(detect(c, Egress, &query("SELECT 1")[..4]), Detected::No);
        testing::assert_rejects_other_protocols(detect);
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        // Real messages mixed with random octets, cut at random places.
        let pieces: Vec<Vec<u8>> = vec![
            startup(&[("user", "u")]),
            query("SELECT 1"),
            parse("s", "SELECT $1"),
            bind("", "s"),
            execute("", 0),
            sync(),
            welcome(),
            complete("SELECT 1"),
            ready(b'I'),
            error("XX000"),
            data_row(&[b"abc"]),
            msg(b'd', b"data"),
            untyped(SSL_REQUEST, &[]),
            b"S".to_vec(),
        ];
        testing::garbage_messages::<PostgresConnection>(0x9e37_79b9_7f4a_7c15, &pieces, |e| {
            assert!(
                db(e)
                    .query
                    .as_ref()
                    .is_none_or(|q| q.len() <= sql::MAX_TEXT_LEN)
            );
            assert!(db(e).status_code.as_ref().is_none_or(|c| c.len() == 5));
        });
    }

    /// psycopg 3.3 (libpq 15) against PostgreSQL 15: `sslmode=prefer` refused, then a pipeline
    /// of three INSERTs whose second violates the primary key, then `SELECT 42`, as a TCP
    /// proxy received it (frontend `true`).
    const PSYCOPG_PIPELINE: &[(bool, &str)] = &[
        (true, "0000000804d2162f"),
        (false, "4e"),
        (
            true,
            "00000025000300007573657200706f7374677265730064617461626173650073686f700000",
        ),
        (
            false,
            concat!(
                "52000000080000000053000000166170706c69636174696f6e5f6e616d6500005300000019636c69",
                "656e745f656e636f64696e670055544638005300000017446174655374796c650049534f2c204d44",
                "5900530000002664656661756c745f7472616e73616374696f6e5f726561645f6f6e6c79006f6666",
                "005300000017696e5f686f745f7374616e646279006f6666005300000019696e74656765725f6461",
                "746574696d6573006f6e00530000001b496e74657276616c5374796c6500706f7374677265730053",
                "0000001469735f737570657275736572006f6e0053000000197365727665725f656e636f64696e67",
                "00555446380053000000327365727665725f76657273696f6e0031352e3138202844656269616e20",
                "31352e31382d302b646562313275312900530000002373657373696f6e5f617574686f72697a6174",
                "696f6e00706f7374677265730053000000237374616e646172645f636f6e666f726d696e675f7374",
                "72696e6773006f6e00530000001554696d655a6f6e65004574632f555443004b0000000c00004d3c",
                "b9906c225a0000000549",
            ),
        ),
        (
            true,
            concat!(
                "500000003100494e5345525420494e544f206974656d732056414c554553202824312c2024322900",
                "00020000001500000000420000001d00000002000100000002000000021388000000016100010000",
                "4400000006500045000000090000000000500000003100494e5345525420494e544f206974656d73",
                "2056414c554553202824312c202432290000020000001500000000420000001d0000000200010000",
                "00020000000213880000000162000100004400000006500045000000090000000000500000003100",
                "494e5345525420494e544f206974656d732056414c554553202824312c2024322900000200000015",
                "00000000420000001d00000002000100000002000000021389000000016300010000440000000650",
                "004500000009000000000053000000044800000004",
            ),
        ),
        (
            false,
            concat!(
                "310000000432000000046e00000004430000000f494e534552542030203100310000000432000000",
                "046e0000000445000000b7534552524f5200564552524f5200433233353035004d6475706c696361",
                "7465206b65792076616c75652076696f6c6174657320756e6971756520636f6e73747261696e7420",
                "226974656d735f706b65792200444b657920286964293d28353030302920616c7265616479206578",
                "697374732e00737075626c696300746974656d73006e6974656d735f706b657900466e6274696e73",
                "6572742e63004c36363400525f62745f636865636b5f756e6971756500005a0000000549",
            ),
        ),
        (true, "510000000e53454c45435420343200"),
        (
            false,
            concat!(
                "540000002100013f636f6c756d6e3f00000000000000000000170004ffffffff0000440000000c00",
                "01000000023432430000000d53454c4543542031005a0000000549",
            ),
        ),
        (true, "5800000004"),
    ];

    #[test]
    fn real_psycopg_pipeline() {
        let steps: Vec<Step> = PSYCOPG_PIPELINE
            .iter()
            .map(|(f, h)| if *f { fe(hex(h)) } else { be(hex(h)) })
            .collect();
        let out = run_all_ways(&steps);
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                let d = db(e);
                (
                    e.start_ns,
                    e.end_ns,
                    d.operation.clone(),
                    d.status_code.clone(),
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            got,
            [
                (50, 60, s("INSERT"), None),
                (50, 60, s("INSERT"), s("23505")),
                (70, 80, s("SELECT"), None),
            ]
        );
        assert!(
            out.iter()
                .all(|e| db(e).namespace.as_deref() == Some("shop"))
        );
        // The default capture: same exchanges.
        let cut: Vec<Step> = steps.iter().cloned().map(|s| truncated(s, 1024)).collect();
        assert_eq!(run(Role::Client, &cut).out, out);
    }
}
