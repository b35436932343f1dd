//! Memcached exchanges (text protocol and meta commands) from the two byte streams of one
//! connection.
//!
//! [`MemcachedConnection`] follows both directions of a connection, segment by segment, and
//! turns them into [`Exchange`]s: one per command, paired with its reply in FIFO order
//! (memcached answers the commands of a connection in the order it reads them). It works for
//! either role: a client application or a selected `memcached` server.
//!
//! # Commands
//!
//! A command is a line (`\r\n` or a bare `\n` ends it; tokens are separated by spaces, as
//! memcached's tokenizer does), followed by a data block for storage commands
//! (`set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]`,
//! `cas … <cas unique> [noreply]`, `ms <key> <datalen> <flags>*`). The exchange keeps the
//! command word as sent (`db.operation.name`: `get`, `set`, `mg`, …) and `db.query.text` = the
//! command and its keys (`get a b c`, `set a`, `gat a` without the expiry, `stats items` with
//! its subcommand), never values, flags or numbers; at most [`MAX_QUERY_LEN`] octets of keys
//! are kept. A line memcached would answer with `ERROR` (an unknown word, a wrong token count)
//! is still a command: it gets that reply.
//!
//! Commands that get no reply are emitted as soon as they are read (`end_ns` is the time of
//! their last octet): `noreply` on `set|add|replace|append|prepend|cas|delete|incr|decr|touch|
//! flush_all|verbosity|cache_memlimit` (memcached then suppresses errors too), and `quit`.
//!
//! Meta commands (`mg ms md ma me mn`) with the quiet flag `q` get no reply on success (`mg`: no
//! `EN`; `ms`, `md`: no `HD`; `ma`: no `HD`/`VA`), so replies are matched FIFO skipping quiet
//! commands that cannot have sent them. A quiet command can have sent a reply when the code is
//! one its flags allow (`NS` needs an `ms` mode flag `M[EAPR]`, `EX` a compare-CAS `C`, …), is
//! not its suppressed success, and the reply's opaque `O` token and returned key `k` are
//! exactly the ones it asked for; error lines match the oldest. A reply reaching a quiet
//! command that could not have sent it means that command succeeded silently: it is emitted as
//! a success ending at that reply. When several quiet commands could have sent a reply the
//! oldest takes it (clients that need certainty send `O` tokens). A quiet command still
//! outstanding at close is incomplete.
//!
//! # Replies
//!
//! `VALUE <key> <flags> <bytes> [<cas>]` lines with their data blocks until `END` (retrieval
//! commands), `STAT`/`ITEM`/`PREFIX`/`key=value` lines until `END` (`stats`,
//! `lru_crawler metadump`; `EN` ends `lru_crawler mgdump`), `VA <size> <flags>*` with its data
//! block (meta), every other reply one line. `ERROR`, `CLIENT_ERROR <msg>` and
//! `SERVER_ERROR <msg>` make the exchange an error with that word as
//! `db.response.status_code`; misses (`NOT_FOUND`, `EN`, `NOT_STORED`, …) are not errors. After
//! `watch` is answered `OK` the connection is a log stream and is no longer parsed.
//!
//! # Truncated captures and lost sync
//!
//! A segment holds only the head of the bytes a syscall moved plus their count and its last
//! octets (the tail copy). Data blocks that are not captured are skipped by exact accounting
//! across segments; the tail copy is parsed when the octets before it were all accounted for.
//! When a line boundary falls in uncaptured bytes sync is lost for that direction and a parse
//! error is counted ([`MemcachedStats`]):
//!
//! * **Commands**: the command whose line was cut is still queued (with `flags.partial`, its
//!   query made of the captured keys) followed by a placeholder for the unknown commands of the
//!   unseen bytes; replies reaching the placeholder are consumed without an exchange. The
//!   direction resyncs at the next segment that starts with a command line (see [`detect`]).
//! * **Replies**: a multi-line retrieval (or `stats`) reply for the only outstanding command
//!   ends at the first segment whose last octets are `\r\nEND\r\n` (memcached writes `END` right
//!   after the last data block, so a multi-get of large values resyncs exactly). Otherwise the
//!   reply direction's octets are counted into the oldest outstanding command until a new
//!   command starts; then every outstanding command is finished as `flags.incomplete` and the
//!   reply direction resyncs at the next segment that starts with a reply keyword.
//!
//! A connection joined midway starts in that state: replies with no command are ignored until
//! a command is seen.
//!
//! # Times and sizes
//!
//! `start_ns` is the time of the segment holding the command's first octet, `end_ns` that of
//! the segment completing its reply (never before `start_ns`); `request_size` and
//! `response_size` are the octets of the command (line and data block) and of its reply.
//! `on_close` finishes outstanding commands as incomplete at the close time. `db.namespace` and
//! `db.collection.name` are never set (memcached has neither).
//!
//! # Not Memcached
//!
//! On a connection seen from its start, the first command must start with a lower-case letter
//! and its first word must be a memcached command; otherwise [`Verdict::Reject`] is returned
//! (HTTP methods are upper case, the binary protocol starts with `0x80`, TLS with `0x16`).
//!
//! # Memory
//!
//! Per connection: at most [`MAX_PENDING`] outstanding commands (beyond it the oldest is
//! dropped and its reply skipped), each with an operation and a query of at most
//! [`MAX_QUERY_LEN`] octets and, for quiet meta commands, an opaque and a key; two line buffers
//! of at most [`MAX_LINE`] octets.

use std::collections::VecDeque;

use memchr::memchr;

use super::stream::{
    self, DbConn, Fault, LineBuf, Mode, ReplySync, Run, add_lost_reply, close_waiting,
    finish_waiting, memmem, runs, seg_total, strip_cr,
};
use super::{DbSystem, Detected, Direction, Exchange, Protocol, Role, Segment, Verdict};

/// The port memcached listens on by default.
pub const DEFAULT_PORT: u16 = 11211;
/// Most commands awaiting a reply on one connection.
pub const MAX_PENDING: usize = 1024;
/// Longest line kept (a longer multi-get line keeps its first keys).
pub const MAX_LINE: usize = 4096;
/// Longest `db.query.text` (command and keys).
pub const MAX_QUERY_LEN: usize = 512;
/// Longest key (memcached's `KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;

/// Longest data block accepted (memcached's item size limit is at most 1 GiB).
const MAX_DATA: u64 = i32::MAX as u64;
/// Longest opaque token kept (memcached's `MFLAG_MAX_OPAQUE_LENGTH`).
const MAX_OPAQUE: usize = 32;

/// Judges the first captured bytes of a connection in `direction`.
///
/// In the request direction: a known command word (lower case, as memcached requires)
/// followed by a space or the line end, on a well-formed line (`get k\r\n`,
/// `set k 0 0 5\r\n`, `mg k v\r\n`, `version\r\n`), is [`Detected::Yes`]; a known word on a
/// line that is malformed or cut by the capture is `Maybe`. In the reply direction a reply line
/// (`VALUE k 0 5`, `STORED`, `END`, `HD`, `VERSION 1.6.21`, …) is `Maybe`: the connection was
/// joined midway. Anything else (HTTP, the binary protocol, TLS) is `No`.
pub fn detect(role: Role, direction: Direction, data: &[u8]) -> Detected {
    if direction == role.request_direction() {
        detect_command(data)
    } else if reply_start_plausible(data) {
        Detected::Maybe
    } else {
        Detected::No
    }
}

/// Counters of the limits and heuristics hit on one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcachedStats {
    /// Times a line boundary fell in uncaptured bytes.
    pub lost_sync: u64,
    /// Reply lines that do not fit the reply being read.
    pub malformed: u64,
    /// Replies that matched no command (error lines excluded: they may answer `noreply`).
    pub orphan_replies: u64,
    /// Commands dropped because [`MAX_PENDING`] were already outstanding.
    pub dropped_pending: u64,
}

/// The memcached state of one connection, both directions.
#[derive(Debug)]
pub struct MemcachedConnection {
    role: Role,
    midway: bool,
    mode: Mode,
    /// A command was parsed: the connection is memcached, it is never rejected.
    established: bool,
    req: Reader,
    /// The command direction lost sync: wait for a segment that starts with a command.
    req_lost: bool,
    /// Time of the first octet of the command being read.
    cmd_start: u64,
    /// A command line read, waiting for its data block.
    building: Option<Pending>,
    resp: Reader,
    reply_sync: ReplySync,
    /// The multi-line (or data-carrying) reply being read.
    cur: Option<Cur>,
    /// Reply sync was lost inside a multi-line reply: an `END` at a segment end may end it.
    lost_in_values: bool,
    /// Sync was lost somewhere: finish the outstanding commands when the next command starts.
    flush_due: bool,
    pending: VecDeque<Pending>,
    /// Replies still to come for commands dropped from the front of `pending`.
    skip_replies: u64,
    last_reply_ns: u64,
    /// Limits and heuristics hit so far.
    pub stats: MemcachedStats,
}

/// The shape of the reply a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// One line (`VA` with its data block).
    Line,
    /// `VALUE` items until `END`.
    Values,
    /// Lines until `END` (or `EN`), unless the first line is a single-line reply.
    Lines,
    /// `OK`, then a log stream.
    Watch,
}

/// What a quiet meta command (`q` flag) may answer.
#[derive(Debug)]
struct Quiet {
    /// The meta codes ([`code_bit`]) it may send, its flags considered, the suppressed success
    /// code excluded.
    answers: u8,
    /// The `O` token sent, copied back in the reply.
    opaque: Option<Vec<u8>>,
    /// The key, when the `k` flag asks for it in the reply.
    key: Option<Vec<u8>>,
}

const HD: u8 = 1;
const VA: u8 = 2;
const EN: u8 = 4;
const NF: u8 = 8;
const NS: u8 = 16;
const EX: u8 = 32;

/// The bit of a meta reply code (`OK` is `HD` with `-o meta_response_old`).
fn code_bit(word: &[u8]) -> u8 {
    match word {
        b"HD" | b"OK" => HD,
        b"VA" => VA,
        b"EN" => EN,
        b"NF" => NF,
        b"NS" => NS,
        b"EX" => EX,
        _ => 0,
    }
}

/// A command sent, waiting for its reply.
type Pending = stream::Pending<Awaited>;

/// What a command sent means for its reply.
#[derive(Debug)]
struct Awaited {
    expect: Expect,
    quiet: Option<Quiet>,
    /// No reply comes (`noreply`, `quit`).
    silent: bool,
}

/// What every exchange says of the connection.
const MEMCACHED: DbConn = DbConn {
    system: DbSystem::Memcached,
    namespace: None,
};

/// Whose reply is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The oldest outstanding command's.
    Front,
    /// Nobody's (a skipped reply, a placeholder's, an orphan).
    Nobody,
}

/// How the reply being read continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `VALUE` items until `END`.
    Values,
    /// Lines until `END`/`EN`.
    Lines,
    /// Complete after the data block being read.
    Data,
}

#[derive(Debug)]
struct Cur {
    target: Target,
    shape: Shape,
    error: bool,
    status: Option<String>,
}

impl MemcachedConnection {
    /// A connection seen from its start (`joined_midway == false`), or one that existed before
    /// the daemon started: then bytes are skipped until a command-direction segment starts
    /// with a command line, and replies before it are ignored.
    pub fn new(role: Role, joined_midway: bool) -> Self {
        MemcachedConnection {
            role,
            midway: joined_midway,
            mode: Mode::Active,
            established: false,
            req: Reader::default(),
            req_lost: joined_midway,
            cmd_start: 0,
            building: None,
            resp: Reader::default(),
            reply_sync: if joined_midway {
                ReplySync::Lost { may_resync: false }
            } else {
                ReplySync::InSync
            },
            cur: None,
            lost_in_values: false,
            flush_due: joined_midway,
            pending: VecDeque::new(),
            skip_replies: 0,
            last_reply_ns: 0,
            stats: MemcachedStats::default(),
        }
    }

    /// Commands awaiting their reply (at most [`MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn handle_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        if let Some(v) = self.mode.skips(seg) {
            return v;
        }
        if seg.direction == self.role.request_direction() {
            self.on_commands(seg, out)
        } else {
            self.on_replies(seg, out);
            Verdict::Continue
        }
    }

    fn on_commands(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        if self.req_lost {
            if detect_command(seg.data) == Detected::No {
                return Verdict::Continue;
            }
            self.req_lost = false;
            self.req = Reader::default();
            self.building = None;
        }
        let ts = seg.ts_ns;
        for mut run in runs(seg) {
            loop {
                match self.req.step(&mut run) {
                    Step::More => break,
                    Step::Started(first) => {
                        if self.strict() && !first.is_ascii_lowercase() {
                            return self.reject();
                        }
                        if self.flush_due {
                            self.flush(ts, out);
                        }
                        self.cmd_start = ts;
                    }
                    Step::Line => {
                        let buf = self.req.line.take_buf();
                        let parsed = parse_command(strip_cr(&buf), self.cmd_start);
                        self.req.line.restore(buf, 2 * MAX_LINE);
                        let mut p = parsed;
                        if self.strict() && !p.known {
                            return self.reject();
                        }
                        self.established = true;
                        match p.data.take() {
                            // memcached may answer before it has swallowed the data block
                            // (`SERVER_ERROR object too large for cache`): the command is
                            // queued now, its size known from the line.
                            Some(n) if !p.pending.proto.silent => {
                                let mut pending = p.pending;
                                pending.request_size = self.req.take_size() + n + 2;
                                self.req.expect_data(n + 2);
                                self.enqueue(pending);
                            }
                            // No reply: the exchange ends with the data block.
                            Some(n) => {
                                self.req.expect_data(n + 2);
                                self.building = Some(p.pending);
                            }
                            None => self.on_command(p.pending, ts, out),
                        }
                    }
                    Step::DataDone => match self.building.take() {
                        Some(p) => self.on_command(p, ts, out),
                        // Counted with its command already.
                        None => _ = self.req.take_size(),
                    },
                    Step::Bad(fault) => {
                        self.lose_commands(fault, ts, out);
                        return Verdict::Continue;
                    }
                }
            }
        }
        Verdict::Continue
    }

    /// Until a first command was parsed on a connection seen from its start, bytes that are not
    /// memcached reject it.
    fn strict(&self) -> bool {
        !self.established && !self.midway
    }

    fn reject(&mut self) -> Verdict {
        self.mode = Mode::Rejected;
        self.release();
        Verdict::Reject
    }

    /// A command read whole (or cut by lost sync).
    fn on_command(&mut self, mut p: Pending, ts: u64, out: &mut Vec<Exchange>) {
        p.request_size = self.req.take_size();
        if p.proto.silent {
            out.push(p.exchange(MEMCACHED, ts, 0, false, false, None));
            return;
        }
        self.enqueue(p);
    }

    fn enqueue(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            if let Some(old) = self.pending.pop_front()
                && !old.hidden
                && old.proto.quiet.is_none()
            {
                // A quiet command may never get a reply: skipping one would lose a reply
                // that belongs to a later command.
                self.skip_replies = self.skip_replies.saturating_add(1);
            }
            self.stats.dropped_pending += 1;
        }
        self.pending.push_back(p);
    }

    /// Command framing is lost: queue what is known and a placeholder for the unseen commands.
    fn lose_commands(&mut self, fault: Fault, ts: u64, out: &mut Vec<Exchange>) {
        self.count(fault);
        if let Some(mut p) = self.building.take() {
            p.partial = true;
            self.on_command(p, ts, out);
        } else if self.req.in_line() {
            let buf = self.req.line.take_buf();
            let parsed = parse_command(strip_cr(&buf), self.cmd_start);
            self.req.line.restore(buf, 2 * MAX_LINE);
            if parsed.known {
                let mut p = parsed.pending;
                p.partial = true;
                self.on_command(p, ts, out);
            }
        }
        self.enqueue(Pending::hidden(
            ts,
            Awaited {
                expect: Expect::Line,
                quiet: None,
                silent: false,
            },
        ));
        self.req = Reader::default();
        self.req_lost = true;
        self.flush_due = true;
    }

    fn on_replies(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let ts = seg.ts_ns;
        self.last_reply_ns = ts;
        match self.reply_sync {
            ReplySync::Lost { may_resync: false } => {
                add_lost_reply(&mut self.pending, seg_total(seg));
                self.try_end_lost_values(seg, out);
                return;
            }
            ReplySync::Lost { may_resync: true } => {
                if !reply_start_plausible(seg.data) {
                    return;
                }
                self.resp = Reader::default();
                self.cur = None;
                self.reply_sync = ReplySync::InSync;
            }
            ReplySync::InSync => {}
        }
        let total = seg_total(seg);
        let mut used = 0u64;
        for mut run in runs(seg) {
            loop {
                let before = run.len();
                let step = self.resp.step(&mut run);
                used += before - run.len();
                let r = match step {
                    Step::More => break,
                    Step::Started(_) => Ok(()),
                    Step::Line => {
                        let buf = self.resp.line.take_buf();
                        let r = self.on_reply_line(strip_cr(&buf), ts, out);
                        self.resp.line.restore(buf, 2 * MAX_LINE);
                        r
                    }
                    Step::DataDone => {
                        if self.cur.as_ref().is_some_and(|c| c.shape == Shape::Data) {
                            self.complete(ts, out);
                        }
                        Ok(())
                    }
                    Step::Bad(fault) => Err(fault),
                };
                if let Err(fault) = r {
                    self.lose_replies(fault, seg, total.saturating_sub(used), out);
                    return;
                }
                if self.mode != Mode::Active {
                    return;
                }
            }
        }
    }

    fn on_reply_line(
        &mut self,
        line: &[u8],
        ts: u64,
        out: &mut Vec<Exchange>,
    ) -> Result<(), Fault> {
        let word = first_word(line);
        let Some(cur) = self.cur.as_mut() else {
            return self.begin_reply(word, line, ts, out);
        };
        match cur.shape {
            Shape::Values => {
                if word == b"VALUE" {
                    let n = data_len(line, 3).ok_or(Fault::Malformed)?;
                    self.resp.expect_data(n + 2);
                    return Ok(());
                }
                if is_error(word) {
                    cur.error = true;
                    cur.status = Some(error_word(word).to_string());
                } else if word != b"END" {
                    return Err(Fault::Malformed);
                }
                self.complete(ts, out);
            }
            Shape::Lines => {
                if word == b"END" || word == b"EN" {
                    self.complete(ts, out);
                }
            }
            // The reader is in its data block: no line can come.
            Shape::Data => return Err(Fault::Malformed),
        }
        Ok(())
    }

    /// The first line of a reply.
    fn begin_reply(
        &mut self,
        word: &[u8],
        line: &[u8],
        ts: u64,
        out: &mut Vec<Exchange>,
    ) -> Result<(), Fault> {
        let target = self.match_reply(word, line, ts, out);
        let expect = match target {
            Target::Front => self
                .pending
                .front()
                .map_or(Expect::Line, |p| p.proto.expect),
            Target::Nobody => guess_expect(word),
        };
        let error = is_error(word);
        let status = error.then(|| error_word(word).to_string());
        let shape = if word == b"VALUE" {
            let n = data_len(line, 3).ok_or(Fault::Malformed)?;
            self.resp.expect_data(n + 2);
            Some(Shape::Values)
        } else if word == b"VA" {
            let n = data_len(line, 1).ok_or(Fault::Malformed)?;
            self.resp.expect_data(n + 2);
            Some(Shape::Data)
        } else if expect == Expect::Lines && !error && !is_single_line(word) {
            Some(Shape::Lines)
        } else {
            None
        };
        self.cur = Some(Cur {
            target,
            shape: shape.unwrap_or(Shape::Data),
            error,
            status,
        });
        if shape.is_none() {
            let watching = target == Target::Front && expect == Expect::Watch && word == b"OK";
            self.complete(ts, out);
            if watching {
                self.mode = Mode::Ignore;
                self.release();
            }
        }
        Ok(())
    }

    /// Which command a reply starting with `word` answers; closes the quiet commands it
    /// passes over.
    fn match_reply(
        &mut self,
        word: &[u8],
        line: &[u8],
        ts: u64,
        out: &mut Vec<Exchange>,
    ) -> Target {
        if self.skip_replies > 0 {
            self.skip_replies -= 1;
            return Target::Nobody;
        }
        loop {
            let Some(front) = self.pending.front() else {
                if !is_error(word) {
                    self.stats.orphan_replies += 1;
                }
                return Target::Nobody;
            };
            if front.hidden {
                return Target::Nobody;
            }
            match &front.proto.quiet {
                Some(q) if !q.could_answer(word, line) => {
                    // It succeeded silently.
                    if let Some(p) = self.pending.pop_front() {
                        out.push(p.exchange(MEMCACHED, ts, 0, false, false, None));
                    }
                }
                _ => return Target::Front,
            }
        }
    }

    /// The reply being read is whole.
    fn complete(&mut self, ts: u64, out: &mut Vec<Exchange>) {
        let size = self.resp.take_size();
        let Some(cur) = self.cur.take() else {
            return;
        };
        if cur.target == Target::Front
            && let Some(p) = self.pending.pop_front()
        {
            let size = p.reply_bytes.saturating_add(size);
            out.push(p.exchange(MEMCACHED, ts, size, false, cur.error, cur.status));
        }
    }

    fn lose_replies(
        &mut self,
        fault: Fault,
        seg: &Segment<'_>,
        rest: u64,
        out: &mut Vec<Exchange>,
    ) {
        self.count(fault);
        let front = self.cur.as_ref().is_some_and(|c| c.target == Target::Front);
        let read = self.resp.take_size();
        let lost = if front { read } else { 0 }.saturating_add(rest);
        let in_values = front
            && self
                .cur
                .as_ref()
                .is_some_and(|c| matches!(c.shape, Shape::Values | Shape::Lines));
        self.resp = Reader::default();
        self.cur = None;
        add_lost_reply(&mut self.pending, lost);
        self.reply_sync = ReplySync::Lost { may_resync: false };
        self.lost_in_values = in_values;
        self.flush_due = true;
        self.try_end_lost_values(seg, out);
    }

    /// While reply sync is lost inside a multi-line reply of the only outstanding command: a
    /// segment ending with `\r\nEND\r\n` ends it, and sync is back.
    fn try_end_lost_values(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if !self.lost_in_values || self.pending.len() != 1 {
            return;
        }
        let last = if seg.is_complete() {
            seg.data
        } else {
            seg.tail()
        };
        if !(last.ends_with(b"\r\nEND\r\n") || (seg.is_complete() && last == b"END\r\n")) {
            return;
        }
        if let Some(p) = self.pending.pop_front() {
            let size = p.reply_bytes;
            out.push(p.exchange(MEMCACHED, seg.ts_ns, size, false, false, None));
        }
        self.lost_in_values = false;
        self.reply_sync = ReplySync::InSync;
        self.resp = Reader::default();
    }

    /// Finishes every outstanding command as incomplete (sync was lost and a new command
    /// starts: the client is done waiting for them).
    fn flush(&mut self, ts: u64, out: &mut Vec<Exchange>) {
        finish_waiting(&mut self.pending, &MEMCACHED, self.last_reply_ns, ts, out);
        // A reply still being read belongs to a command just finished.
        if let Some(cur) = self.cur.as_mut() {
            cur.target = Target::Nobody;
        }
        self.skip_replies = 0;
        self.lost_in_values = false;
        self.flush_due = false;
        if let ReplySync::Lost { .. } = self.reply_sync {
            self.reply_sync = ReplySync::Lost { may_resync: true };
        }
    }

    fn release(&mut self) {
        self.pending = VecDeque::new();
        self.building = None;
        self.cur = None;
        self.req = Reader::default();
        self.resp = Reader::default();
    }

    fn count(&mut self, fault: Fault) {
        match fault {
            Fault::Unseen => self.stats.lost_sync += 1,
            Fault::Malformed => self.stats.malformed += 1,
        }
    }

    fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if self.mode == Mode::Active {
            // The reply being read belongs to the oldest command.
            let reading = if self.reply_sync == ReplySync::InSync
                && self.cur.as_ref().is_some_and(|c| c.target == Target::Front)
            {
                self.resp.take_size()
            } else {
                0
            };
            close_waiting(&mut self.pending, &MEMCACHED, reading, ts_ns, out);
        }
        if self.mode != Mode::Rejected {
            self.mode = Mode::Closed;
        }
        self.release();
    }
}

impl super::Parser for MemcachedConnection {
    fn protocol(&self) -> Protocol {
        Protocol::Memcached
    }

    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        self.handle_segment(seg, out)
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        self.close(ts_ns, out);
    }

    fn parse_errors(&self) -> u64 {
        self.stats.lost_sync + self.stats.malformed + self.stats.orphan_replies
    }
}

impl Quiet {
    /// Whether a reply `line` starting with `word` can be this quiet command's: a code it may
    /// send, with the `O` token and the `k` key it asked for (memcached always copies them
    /// back), and only those.
    fn could_answer(&self, word: &[u8], line: &[u8]) -> bool {
        if is_error(word) {
            // Errors carry no tokens: the oldest candidate is taken.
            return true;
        }
        let bit = code_bit(word);
        if bit == 0 {
            // Text-protocol replies, `MN`, `ME` answer other commands.
            return false;
        }
        let (mut opaque, mut key) = (None, None);
        for f in tokens(line).skip(if bit == VA { 2 } else { 1 }) {
            match f.split_first() {
                Some((b'O', o)) => opaque = Some(o),
                Some((b'k', k)) => key = Some(k),
                _ => {}
            }
        }
        self.answers & bit != 0 && self.opaque.as_deref() == opaque && self.key.as_deref() == key
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines.

/// A command line, parsed.
struct Parsed {
    pending: Pending,
    /// A data block of this many octets follows (CRLF excluded).
    data: Option<u64>,
    /// The first word is a memcached command.
    known: bool,
    /// memcached accepts the line's format (for [`detect`]).
    valid: bool,
}

fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&c| c == b' ').filter(|t| !t.is_empty())
}

fn first_word(line: &[u8]) -> &[u8] {
    tokens(line).next().unwrap_or(&[])
}

/// A key as shown in `db.query.text`.
fn push_key(q: &mut String, key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key.get(..MAX_KEY_LEN).unwrap_or(key));
    if q.len() + 1 + key.len() > MAX_QUERY_LEN {
        return false;
    }
    q.push(' ');
    q.push_str(&key);
    true
}

/// A subcommand shown in `db.query.text` (`stats items`): a short lower-case word.
fn push_sub(q: &mut String, sub: Option<&[u8]>) {
    if let Some(s) = sub.filter(|s| {
        s.len() <= 32
            && s.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
    }) {
        push_key(q, s);
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', d)) => parse_u64(d).and_then(|n| i64::try_from(n).ok()).map(|n| -n),
        _ => parse_u64(s).and_then(|n| i64::try_from(n).ok()),
    }
}

/// A data block length as memcached accepts it (a non-negative 32-bit integer).
fn parse_len(s: &[u8]) -> Option<u64> {
    parse_u64(s).filter(|&n| n <= MAX_DATA - 2)
}

/// Parses a command line. An unknown word is still a command (memcached answers it with
/// `ERROR`); it has no operation when it is not even a printable token.
fn parse_command(line: &[u8], start_ns: u64) -> Parsed {
    let toks: Vec<&[u8]> = tokens(line).collect();
    let (word, args) = match toks.split_first() {
        Some((w, a)) => (*w, a),
        None => (&[][..], &[][..]),
    };
    let arg = |i: usize| args.get(i).copied();
    let noreply = args.last().is_some_and(|a| *a == b"noreply");
    let name = std::str::from_utf8(word).unwrap_or("");
    let mut p = Pending {
        start_ns,
        request_size: 0,
        operation: Some(name.to_string()),
        query: None,
        partial: false,
        hidden: false,
        reply_bytes: 0,
        proto: Awaited {
            expect: Expect::Line,
            quiet: None,
            silent: false,
        },
    };
    let mut q = name.to_string();
    let mut data = None;
    let mut valid = true;
    match name {
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => {
            let n = if name == "cas" { 5 } else { 4 };
            if let Some(k) = arg(0) {
                push_key(&mut q, k);
            }
            if args.len() == n || args.len() == n + 1 {
                p.proto.silent = noreply;
                let numbers = arg(1)
                    .and_then(parse_u64)
                    .is_some_and(|f| f <= u64::from(u32::MAX))
                    && arg(2).and_then(parse_i64).is_some()
                    && (name != "cas" || arg(4).and_then(parse_u64).is_some());
                data = arg(3).and_then(parse_len).filter(|_| numbers);
                valid = data.is_some() && (args.len() == n || noreply);
            } else {
                valid = false;
            }
        }
        "get" | "gets" | "bget" | "gat" | "gats" => {
            let keys = if name.starts_with("gat") {
                valid = arg(0).and_then(parse_i64).is_some();
                args.get(1..).unwrap_or(&[])
            } else {
                args
            };
            valid &= !keys.is_empty();
            for k in keys {
                if !push_key(&mut q, k) {
                    break;
                }
            }
            p.proto.expect = Expect::Values;
        }
        "delete" | "incr" | "decr" | "touch" => {
            let (min, max) = if name == "delete" { (1, 3) } else { (2, 3) };
            if let Some(k) = arg(0) {
                push_key(&mut q, k);
            }
            if (min..=max).contains(&args.len()) {
                p.proto.silent = noreply;
            } else {
                valid = false;
            }
        }
        "flush_all" | "verbosity" | "cache_memlimit" => {
            let (min, max) = if name == "flush_all" { (0, 2) } else { (1, 2) };
            if (min..=max).contains(&args.len()) {
                p.proto.silent = noreply;
            } else {
                valid = false;
            }
        }
        "version" | "quit" | "shutdown" | "misbehave" | "debugtime" | "refresh_certs" => {
            p.proto.silent = name == "quit";
        }
        "slabs" | "lru" | "extstore" => {
            push_sub(&mut q, arg(0));
            valid = !args.is_empty();
        }
        "stats" => {
            push_sub(&mut q, arg(0));
            p.proto.expect = Expect::Lines;
        }
        "lru_crawler" => {
            push_sub(&mut q, arg(0));
            if matches!(arg(0), Some(b"metadump" | b"mgdump")) {
                p.proto.expect = Expect::Lines;
            }
            valid = !args.is_empty();
        }
        "watch" => p.proto.expect = Expect::Watch,
        "mn" => {}
        "mg" | "ms" | "md" | "ma" | "me" => {
            let Some(k) = arg(0) else {
                p.query = Some(q);
                return Parsed {
                    pending: p,
                    data,
                    known: true,
                    valid: false,
                };
            };
            push_key(&mut q, k);
            let flags = if name == "ms" {
                data = arg(1).and_then(parse_len);
                valid = data.is_some();
                args.get(2..).unwrap_or(&[])
            } else {
                args.get(1..).unwrap_or(&[])
            };
            let has = |f: &[u8]| flags.contains(&f);
            let cas = flags.iter().any(|f| f.first() == Some(&b'C'));
            let value = if has(b"v") { VA } else { HD };
            let if_cas = |bits: u8| if cas { bits } else { 0 };
            // The codes each command may send given its flags (memcached's proto_text.c), and
            // the success code `q` suppresses.
            let (answers, suppressed) = match name {
                "mg" => (value | EN, EN),
                "ms" => {
                    // Add, append, prepend and replace modes may not store.
                    let mode = flags.iter().find_map(|f| f.strip_prefix(b"M"));
                    let ns = if matches!(mode, Some(b"E" | b"A" | b"P" | b"R")) {
                        NS
                    } else {
                        0
                    };
                    (HD | ns | if_cas(EX | NF), HD)
                }
                "md" => (HD | NF | if_cas(EX), HD),
                "ma" => (value | NF | NS | if_cas(EX), value),
                _ => (0, 0),
            };
            if has(b"q") && suppressed != 0 {
                let opaque = flags
                    .iter()
                    .find_map(|f| f.strip_prefix(b"O"))
                    .map(|o| o.get(..MAX_OPAQUE).unwrap_or(o).to_vec());
                let key = has(b"k").then(|| k.get(..MAX_KEY_LEN).unwrap_or(k).to_vec());
                p.proto.quiet = Some(Quiet {
                    answers: answers & !suppressed,
                    opaque,
                    key,
                });
            }
        }
        _ => {
            // memcached answers `ERROR`: still a command (and a reply) to pair. Only a
            // plausible word is shown.
            valid = false;
            if word.is_empty() || word.len() > 32 || !word.iter().all(u8::is_ascii_graphic) {
                p.operation = None;
                return Parsed {
                    pending: p,
                    data,
                    known: false,
                    valid,
                };
            }
        }
    }
    p.query = Some(q);
    Parsed {
        known: is_command(word),
        pending: p,
        data,
        valid,
    }
}

/// The words memcached knows as commands.
fn is_command(word: &[u8]) -> bool {
    matches!(
        word,
        b"set"
            | b"add"
            | b"replace"
            | b"append"
            | b"prepend"
            | b"cas"
            | b"get"
            | b"gets"
            | b"bget"
            | b"gat"
            | b"gats"
            | b"delete"
            | b"incr"
            | b"decr"
            | b"touch"
            | b"flush_all"
            | b"verbosity"
            | b"cache_memlimit"
            | b"version"
            | b"quit"
            | b"shutdown"
            | b"misbehave"
            | b"debugtime"
            | b"refresh_certs"
            | b"slabs"
            | b"lru"
            | b"extstore"
            | b"stats"
            | b"lru_crawler"
            | b"watch"
            | b"mn"
            | b"mg"
            | b"ms"
            | b"md"
            | b"ma"
            | b"me"
    )
}

// ---------------------------------------------------------------------------------------------
// Reply lines.

fn is_error(word: &[u8]) -> bool {
    word.starts_with(b"ERROR") || word == b"CLIENT_ERROR" || word == b"SERVER_ERROR"
}

/// `ERROR: shutdown not enabled` is an `ERROR` too.
fn error_word(word: &[u8]) -> &'static str {
    match word {
        b"CLIENT_ERROR" => "CLIENT_ERROR",
        b"SERVER_ERROR" => "SERVER_ERROR",
        _ => "ERROR",
    }
}

/// Replies of `stats`-like commands that are one line (the rest are lines until `END`).
fn is_single_line(word: &[u8]) -> bool {
    matches!(
        word,
        b"END" | b"EN" | b"RESET" | b"OK" | b"BUSY" | b"BADCLASS" | b"NOTSTARTED"
    ) || is_error(word)
}

/// The shape of a reply whose command is unknown, from its first word.
fn guess_expect(word: &[u8]) -> Expect {
    if matches!(word, b"STAT" | b"ITEM" | b"PREFIX") || word.contains(&b'=') {
        Expect::Lines
    } else {
        Expect::Line
    }
}

/// The data block length at token `i` of a `VALUE` (3) or `VA` (1) line.
fn data_len(line: &[u8], i: usize) -> Option<u64> {
    tokens(line).nth(i).and_then(parse_len)
}

/// Reply keywords (a number answers `incr`/`decr`).
fn is_reply_word(word: &[u8]) -> bool {
    matches!(
        word,
        b"VALUE"
            | b"END"
            | b"STORED"
            | b"NOT_STORED"
            | b"EXISTS"
            | b"NOT_FOUND"
            | b"DELETED"
            | b"TOUCHED"
            | b"OK"
            | b"ERROR"
            | b"CLIENT_ERROR"
            | b"SERVER_ERROR"
            | b"VERSION"
            | b"STAT"
            | b"ITEM"
            | b"PREFIX"
            | b"RESET"
            | b"BUSY"
            | b"BADCLASS"
            | b"NOTSTARTED"
            | b"HD"
            | b"VA"
            | b"EN"
            | b"NF"
            | b"NS"
            | b"EX"
            | b"MN"
            | b"ME"
    )
}

/// Bytes where a reply may start: a reply keyword (or a number) ending at a space or the line
/// end, on a line that ends with CRLF within the captured bytes.
fn reply_start_plausible(data: &[u8]) -> bool {
    let Some(i) = memchr(b'\n', data).filter(|&i| i <= MAX_LINE) else {
        return false;
    };
    let Some(line) = data.get(..i).and_then(|l| l.strip_suffix(b"\r")) else {
        return false;
    };
    if line.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return false;
    }
    let end = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
    let word = line.get(..end).unwrap_or(line);
    match word {
        b"VALUE" => data_len(line, 3).is_some(),
        b"VA" => data_len(line, 1).is_some(),
        _ => {
            is_reply_word(word)
                || (!word.is_empty() && word.len() <= 20 && word.iter().all(u8::is_ascii_digit))
        }
    }
}

/// Judges bytes where a command must start (first bytes, or a resync point).
fn detect_command(data: &[u8]) -> Detected {
    let end = data
        .iter()
        .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .unwrap_or(data.len());
    let word = data.get(..end).unwrap_or(data);
    if !is_command(word) {
        return Detected::No;
    }
    let Some(i) = memchr(b'\n', data).filter(|&i| i <= MAX_LINE) else {
        // The line is cut by the capture (or the segment).
        return if data.len() <= MAX_LINE && !data.iter().any(|&c| c < 0x20 && c != b'\r') {
            Detected::Maybe
        } else {
            Detected::No
        };
    };
    let line = strip_cr(data.get(..i).unwrap_or(data));
    if line.iter().any(|&c| c < 0x20 || c == 0x7f) || memmem(line, b" HTTP/") {
        return Detected::No;
    }
    if parse_command(line, 0).valid {
        Detected::Yes
    } else {
        Detected::Maybe
    }
}

// ---------------------------------------------------------------------------------------------
// Lines and data blocks.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ReadState {
    /// A line starts with the next octet.
    #[default]
    Start,
    Line,
    /// Data block octets still to come (CRLF included).
    Data(u64),
}

enum Step {
    /// The run is used up.
    More,
    /// A line starts with this octet.
    Started(u8),
    /// A line is whole in the line buffer.
    Line,
    /// The data block is read.
    DataDone,
    Bad(Fault),
}

/// Lines and data blocks of one direction.
#[derive(Debug, Default)]
struct Reader {
    state: ReadState,
    line: LineBuf,
    /// Octets read since the last `take_size`.
    size: u64,
}

impl Reader {
    fn in_line(&self) -> bool {
        self.state == ReadState::Line
    }

    fn expect_data(&mut self, n: u64) {
        self.state = ReadState::Data(n);
    }

    fn take_size(&mut self) -> u64 {
        std::mem::take(&mut self.size)
    }

    fn step(&mut self, run: &mut Run<'_>) -> Step {
        loop {
            if run.is_empty() {
                return Step::More;
            }
            match self.state {
                ReadState::Start => {
                    let Run::Seen(b) = run else {
                        return Step::Bad(Fault::Unseen);
                    };
                    let Some(&c) = b.first() else {
                        return Step::More;
                    };
                    self.state = ReadState::Line;
                    return Step::Started(c);
                }
                ReadState::Line => {
                    let Run::Seen(b) = run else {
                        return Step::Bad(Fault::Unseen);
                    };
                    let before = b.len();
                    let done = self.line.take(b, MAX_LINE);
                    self.size += (before - b.len()) as u64;
                    if done {
                        self.state = ReadState::Start;
                        return Step::Line;
                    }
                    return Step::More;
                }
                ReadState::Data(left) => {
                    let k = run.skip(left);
                    self.size += k;
                    let left = left - k;
                    if left == 0 {
                        self.state = ReadState::Start;
                        return Step::DataDone;
                    }
                    self.state = ReadState::Data(left);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, TestConn, db, op, query};
    use super::super::{ExchangeFlags, Parser};
    use super::*;

    type Conv = testing::Conv<MemcachedConnection>;

    impl TestConn for MemcachedConnection {
        fn open(role: Role, joined_midway: bool) -> Self {
            MemcachedConnection::new(role, joined_midway)
        }

        fn waiting(&self) -> usize {
            self.pending()
        }

        fn check_bounds(&self) {
            assert!(self.pending() <= MAX_PENDING);
        }
    }

    /// Query, reply size, error status of each exchange.
    type Summary = Vec<(String, u64, Option<String>)>;

    fn summary(ex: &[Exchange]) -> Summary {
        ex.iter()
            .map(|e| {
                (
                    query(e).to_string(),
                    e.response_size,
                    db(e).status_code.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn detects_first_bytes() {
        use Detected::*;
        let c = |d: &[u8]| detect(Role::Client, Direction::Egress, d);
        let r = |d: &[u8]| detect(Role::Client, Direction::Ingress, d);
        assert_eq!(c(b"get k\r\n"), Yes);
        assert_eq!(c(b"get a b c\r\n"), Yes);
        assert_eq!(c(b"gets k\n"), Yes);
        assert_eq!(c(b"gat 10 k\r\n"), Yes);
        assert_eq!(c(b"set k 0 0 5\r\nhello\r\n"), Yes);
        assert_eq!(c(b"set k 0 0 5 noreply\r\nhello\r\n"), Yes);
        assert_eq!(c(b"cas k 0 0 5 99\r\nhello\r\n"), Yes);
        assert_eq!(c(b"mg k v\r\n"), Yes);
        assert_eq!(c(b"ms k 5 T60\r\nhello\r\n"), Yes);
        assert_eq!(c(b"mn\r\n"), Yes);
        assert_eq!(c(b"version\r\n"), Yes);
        assert_eq!(c(b"stats\r\n"), Yes);
        assert_eq!(c(b"delete k\r\n"), Yes);
        assert_eq!(c(b"incr k 1\r\n"), Yes);
        // Known words on malformed or cut lines.
        assert_eq!(c(b"get\r\n"), Maybe);
        assert_eq!(c(b"set k x 0 5\r\n"), Maybe);
        assert_eq!(c(b"get somekey"), Maybe);
        assert_eq!(c(b"get"), Maybe);
        // Not memcached.
        assert_eq!(c(b"GET k\r\n"), No);
        assert_eq!(c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), No);
        assert_eq!(c(b"get / HTTP/1.1\r\n"), No);
        assert_eq!(c(b"getx k\r\n"), No);
        assert_eq!(c(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), No);
        assert_eq!(c(b"\x80\x00\x00\x05\x00\x00\x00\x00"), No);
        assert_eq!(c(b"\x16\x03\x01\x00\xa5"), No);
        assert_eq!(c(b"get k\x00\r\n"), No);
        assert_eq!(c(b""), No);
        assert_eq!(c(b"STORED\r\n"), No);
        // Replies seen first: joined midway.
        assert_eq!(r(b"VALUE k 0 5\r\nhello\r\nEND\r\n"), Maybe);
        assert_eq!(r(b"STORED\r\n"), Maybe);
        assert_eq!(r(b"END\r\n"), Maybe);
        assert_eq!(r(b"HD c123\r\n"), Maybe);
        assert_eq!(r(b"VA 5 f0\r\nhello\r\n"), Maybe);
        assert_eq!(r(b"VERSION 1.6.21\r\n"), Maybe);
        assert_eq!(r(b"STAT pid 1\r\n"), Maybe);
        assert_eq!(r(b"42\r\n"), Maybe);
        assert_eq!(r(b"VALUE k 0\r\n"), No);
        assert_eq!(r(b"STORED"), No);
        assert_eq!(r(b"+OK\r\n"), No);
        assert_eq!(r(b"HTTP/1.1 200 OK\r\n"), No);
        assert_eq!(detect(Role::Server, Direction::Ingress, b"get k\r\n"), Yes);
        assert_eq!(detect(Role::Server, Direction::Egress, b"END\r\n"), Maybe);
    }

    #[test]
    fn retrieval_as_pymemcache_sends_it() {
        let mut c = Conv::client();
        c.cmd(b"get user:1\r\n");
        c.reply(b"VALUE user:1 0 5\r\nalice\r\nEND\r\n");
        c.cmd(b"get missing\r\n");
        c.reply(b"END\r\n");
        c.cmd(b"get a b c\r\n");
        c.reply(b"VALUE a 0 1\r\n1\r\nVALUE c 16 3\r\nccc\r\nEND\r\n");
        c.cmd(b"gets a\r\n");
        c.reply(b"VALUE a 0 1 42\r\n1\r\nEND\r\n");
        c.cmd(b"gat 3600 a b\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        let q: Vec<&str> = ex.iter().map(query).collect();
        assert_eq!(
            q,
            [
                "get user:1",
                "get missing",
                "get a b c",
                "gets a",
                "gat a b"
            ]
        );
        let ops: Vec<&str> = ex.iter().map(op).collect();
        assert_eq!(ops, ["get", "get", "get", "gets", "gat"]);
        assert_eq!(ex[0].request_size, 12);
        assert_eq!(ex[0].response_size, 30);
        assert_eq!((ex[0].start_ns, ex[0].end_ns), (1, 2));
        assert_eq!(ex[1].response_size, 5);
        assert_eq!(ex[2].response_size, 40);
        for e in &ex {
            let d = db(e);
            assert_eq!(d.system, DbSystem::Memcached);
            assert_eq!(d.namespace, None);
            assert_eq!(d.collection, None);
            assert!(!d.error);
            assert!(!format!("{e:?}").contains("alice"));
        }
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn storage_and_other_commands() {
        let mut c = Conv::client();
        let pairs: &[(&[u8], &[u8], &str)] = &[
            (b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n", "set k"),
            (b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n", "add k"),
            (b"replace k 1 60 1\r\ny\r\n", b"STORED\r\n", "replace k"),
            (b"append k 0 0 2\r\nzz\r\n", b"STORED\r\n", "append k"),
            (b"prepend k 0 0 0\r\n\r\n", b"STORED\r\n", "prepend k"),
            (b"cas k 0 0 1 12345\r\nq\r\n", b"EXISTS\r\n", "cas k"),
            (b"delete k\r\n", b"DELETED\r\n", "delete k"),
            (b"delete k\r\n", b"NOT_FOUND\r\n", "delete k"),
            (b"incr n 5\r\n", b"15\r\n", "incr n"),
            (b"decr n 100\r\n", b"0  \r\n", "decr n"),
            (b"touch k 10\r\n", b"TOUCHED\r\n", "touch k"),
            (b"flush_all\r\n", b"OK\r\n", "flush_all"),
            (b"version\r\n", b"VERSION 1.6.21\r\n", "version"),
            (b"verbosity 1\r\n", b"OK\r\n", "verbosity"),
            (b"cache_memlimit 100\r\n", b"OK\r\n", "cache_memlimit"),
            (b"slabs automove 1\r\n", b"OK\r\n", "slabs automove"),
        ];
        for (cmd, reply, _) in pairs {
            c.cmd(cmd);
            c.reply(reply);
        }
        let ex = c.take();
        assert_eq!(ex.len(), pairs.len());
        for (e, (cmd, reply, q)) in ex.iter().zip(pairs) {
            assert_eq!(query(e), *q);
            assert_eq!(e.request_size, cmd.len() as u64, "{q}");
            assert_eq!(e.response_size, reply.len() as u64, "{q}");
            assert!(!db(e).error);
        }
        assert!(!format!("{ex:?}").contains("hello"));
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn noreply_and_quit_end_at_the_request() {
        let mut c = Conv::client();
        // pymemcache's default: noreply storage.
        c.cmd(b"set a 0 0 5 noreply\r\nhello\r\n");
        c.cmd(b"delete b noreply\r\nincr c 1 noreply\r\nget a\r\n");
        c.reply(b"VALUE a 0 5\r\nhello\r\nEND\r\n");
        // The data block in its own write.
        c.cmd(b"set big 0 0 3 noreply\r\n");
        c.cmd(b"xyz\r\n");
        c.cmd(b"quit\r\n");
        let ex = c.take();
        let q: Vec<&str> = ex.iter().map(query).collect();
        assert_eq!(
            q,
            ["set a", "delete b", "incr c", "get a", "set big", "quit"]
        );
        assert_eq!((ex[0].start_ns, ex[0].end_ns), (1, 1));
        assert_eq!(ex[0].request_size, 28);
        assert_eq!(ex[0].response_size, 0);
        assert_eq!((ex[4].start_ns, ex[4].end_ns), (4, 5));
        assert_eq!(ex[4].request_size, 28);
        assert!(ex.iter().all(|e| e.flags == ExchangeFlags::default()));
        assert_eq!(c.conn.pending(), 0);
    }

    #[test]
    fn error_replies() {
        let mut c = Conv::client();
        c.cmd(b"version\r\n");
        c.reply(b"VERSION 1.6.21\r\n");
        c.take();
        c.cmd(b"bogus\r\n");
        c.reply(b"ERROR\r\n");
        // A data block one octet too long: memcached reads 3 octets (`xx\r`), answers
        // CLIENT_ERROR, then reads `\n` as an empty command line and answers ERROR.
        c.cmd(b"set k 0 0 1\r\nxx\r\n");
        c.reply(b"CLIENT_ERROR bad data chunk\r\nERROR\r\n");
        // Too large: memcached answers at once, then swallows the data block.
        c.cmd(b"set k 0 0 2000000\r\n");
        c.reply(b"SERVER_ERROR object too large for cache\r\n");
        c.feed(true, &vec![b'x'; 2_000_002], 1024);
        c.cmd(b"get a b\r\n");
        c.reply(b"VALUE a 0 1\r\n1\r\nSERVER_ERROR out of memory writing get response\r\n");
        // An error after a `noreply` command matches no command and is not counted.
        c.cmd(b"set k 0 0 1 noreply\r\nx\r\n");
        c.reply(b"SERVER_ERROR out of memory storing object\r\n");
        let ex = c.take();
        let s = summary(&ex);
        let code = |x: &str| Some(x.to_string());
        assert_eq!(s[0], ("bogus".to_string(), 7, code("ERROR")));
        assert_eq!(s[1].2, code("CLIENT_ERROR"));
        assert_eq!(s[2].2, code("ERROR"));
        assert_eq!(ex[2].db().unwrap().operation, None);
        assert_eq!(s[3].2, code("SERVER_ERROR"));
        assert_eq!(ex[3].request_size, 2_000_021);
        assert_eq!(s[4].2, code("SERVER_ERROR"));
        assert!(ex[..5].iter().all(|e| db(e).error));
        assert_eq!(query(&ex[5]), "set k");
        assert!(!db(&ex[5]).error);
        assert_eq!(ex.len(), 6);
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn stats_are_many_lines() {
        let mut c = Conv::client();
        c.cmd(b"stats\r\n");
        let stats = b"STAT pid 1\r\nSTAT uptime 10\r\nSTAT version 1.6.21\r\nEND\r\n";
        c.reply(&stats[..20]);
        c.reply(&stats[20..]);
        c.cmd(b"stats reset\r\n");
        c.reply(b"RESET\r\n");
        c.cmd(b"stats items\r\n");
        c.reply(b"END\r\n");
        c.cmd(b"stats cachedump 1 0\r\n");
        c.reply(b"ITEM k [5 b; 0 s]\r\nEND\r\n");
        c.cmd(b"lru_crawler metadump all\r\n");
        c.reply(b"key=k exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\nEND\r\n");
        c.cmd(b"version\r\n");
        c.reply(b"VERSION 1.6.21\r\n");
        let ex = c.take();
        let q: Vec<&str> = ex.iter().map(query).collect();
        assert_eq!(
            q,
            [
                "stats",
                "stats reset",
                "stats items",
                "stats cachedump",
                "lru_crawler metadump",
                "version"
            ]
        );
        assert_eq!(ex[0].response_size, stats.len() as u64);
        assert_eq!(ex[0].end_ns, 3);
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn meta_commands() {
        let mut c = Conv::client();
        c.cmd(b"ms k 5 T60 F3\r\nhello\r\n");
        c.reply(b"HD\r\n");
        c.cmd(b"mg k v f t\r\n");
        c.reply(b"VA 5 f3 t59\r\nhello\r\n");
        c.cmd(b"mg missing v\r\n");
        c.reply(b"EN\r\n");
        c.cmd(b"ma n N0 J10 v\r\n");
        c.reply(b"VA 2\r\n10\r\n");
        c.cmd(b"md k\r\n");
        c.reply(b"HD\r\n");
        c.cmd(b"me k\r\n");
        c.reply(b"ME k exp=-1 la=3 cas=2 fetch=no cls=1 size=63\r\n");
        c.cmd(b"mn\r\n");
        c.reply(b"MN\r\n");
        let ex = c.take();
        let q: Vec<&str> = ex.iter().map(query).collect();
        assert_eq!(
            q,
            ["ms k", "mg k", "mg missing", "ma n", "md k", "me k", "mn"]
        );
        assert_eq!(ex[0].request_size, 22);
        assert_eq!(ex[1].response_size, 20);
        assert_eq!(ex[3].response_size, 10);
        assert!(ex.iter().all(|e| !db(e).error));
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn quiet_meta_commands() {
        // a hits, b misses (EN suppressed), mn flushes.
        let mut c = Conv::client();
        c.cmd(b"mg a v q\r\nmg b v q\r\nmn\r\n");
        c.reply(b"VA 1\r\nx\r\nMN\r\n");
        let ex = c.take();
        let s = summary(&ex);
        assert_eq!(
            s.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["mg a", "mg b", "mn"]
        );
        assert_eq!(ex[0].response_size, 9);
        assert_eq!(ex[1].response_size, 0);
        assert_eq!(ex[1].end_ns, 2);
        assert!(ex.iter().all(|e| !e.flags.incomplete && !db(e).error));
        // Opaque tokens tell which command answered.
        let mut c = Conv::client();
        c.cmd(b"mg a v q Oa1\r\nmg b v q Ob2\r\nmn\r\n");
        c.reply(b"VA 1 Ob2\r\ny\r\nMN\r\n");
        let ex = c.take();
        assert_eq!(summary(&ex)[0], ("mg a".to_string(), 0, None));
        assert_eq!(summary(&ex)[1], ("mg b".to_string(), 13, None));
        // So do returned keys.
        let mut c = Conv::client();
        c.cmd(b"mg a v q k\r\nmg b v q k\r\nmn\r\n");
        c.reply(b"VA 1 kb\r\ny\r\nMN\r\n");
        let ex = c.take();
        assert_eq!(ex[0].response_size, 0);
        assert_eq!(ex[1].response_size, 12);
        // Quiet sets: only failures answer, and only a mode flag makes `NS` possible.
        let mut c = Conv::client();
        c.cmd(b"ms a 1 q\r\n1\r\nms b 1 q\r\n2\r\nms c 1 q MR\r\n3\r\nmn\r\n");
        c.reply(b"NS\r\nMN\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 4);
        let sizes: Vec<u64> = ex.iter().map(|e| e.response_size).collect();
        assert_eq!(sizes, [0, 0, 4, 4]);
        // An error answers the oldest quiet command.
        let mut c = Conv::client();
        c.cmd(b"ms a 1 q\r\n1\r\nms b 1 q\r\n2\r\nmn\r\n");
        c.reply(b"SERVER_ERROR out of memory storing object\r\nMN\r\n");
        let ex = c.take();
        assert!(db(&ex[0]).error);
        assert!(!db(&ex[1]).error);
        // A text-protocol reply passes over quiet commands.
        let mut c = Conv::client();
        c.cmd(b"md a q\r\nget b\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        assert_eq!(
            summary(&ex),
            [
                ("md a".to_string(), 0, None),
                ("get b".to_string(), 5, None)
            ]
        );
        // A quiet command never answered is incomplete at close.
        let mut c = Conv::client();
        c.cmd(b"mg a v q\r\n");
        c.close();
        let ex = c.take();
        assert!(ex[0].flags.incomplete);
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn quiet_pipelines_as_memcached_1_6_18_answers_them() {
        // Captured from memcached 1.6.18 (mk exists, nope does not, q1 exists, q2 does not).
        let mut c = Conv::client();
        c.cmd(b"mg mk v q Oa1\r\nmg nope v q Ob2\r\nmg mk s q k\r\nmn\r\n");
        c.reply(b"VA 5 Oa1\r\nhello\r\nHD s5 kmk\r\nMN\r\n");
        c.cmd(b"ms q1 1 q\r\n1\r\nms q2 1 q MR\r\n2\r\nmn\r\n");
        c.reply(b"NS\r\nMN\r\n");
        c.cmd(b"ma cnt N0 J10 v\r\nma cnt v\r\nma nope q\r\nmn\r\n");
        c.reply(b"VA 2\r\n10\r\nVA 2\r\n11\r\nNF\r\nMN\r\n");
        let ex = c.take();
        let got: Vec<(&str, u64)> = ex.iter().map(|e| (query(e), e.response_size)).collect();
        assert_eq!(
            got,
            [
                ("mg mk", 17),
                ("mg nope", 0),
                ("mg mk", 11),
                ("mn", 4),
                ("ms q1", 0),
                ("ms q2", 4),
                ("mn", 4),
                ("ma cnt", 10),
                ("ma cnt", 10),
                ("ma nope", 4),
                ("mn", 4),
            ]
        );
        assert!(ex.iter().all(|e| !e.flags.incomplete && !db(e).error));
        assert_eq!(c.conn.parse_errors(), 0);
    }

    /// A pipeline of `n` commands and their replies.
    fn pipeline(n: usize) -> (Vec<u8>, Vec<u8>, Summary) {
        let mut cmds = Vec::new();
        let mut replies = Vec::new();
        let mut want = Vec::new();
        for i in 0..n {
            let (c, r, q, code): (String, String, String, Option<String>) = match i % 6 {
                0 => (
                    format!("get k{i}\r\n"),
                    format!("VALUE k{i} 0 3\r\nv{i:02}\r\nEND\r\n"),
                    format!("get k{i}"),
                    None,
                ),
                1 => (
                    format!("set k{i} 0 0 2\r\nab\r\n"),
                    "STORED\r\n".into(),
                    format!("set k{i}"),
                    None,
                ),
                2 => (
                    format!("incr k{i} 1\r\n"),
                    format!("{i}\r\n"),
                    format!("incr k{i}"),
                    None,
                ),
                3 => (
                    format!("mg k{i} v\r\n"),
                    "VA 2\r\nxy\r\n".into(),
                    format!("mg k{i}"),
                    None,
                ),
                4 => (
                    format!("delete k{i}\r\n"),
                    "CLIENT_ERROR bad command line format\r\n".into(),
                    format!("delete k{i}"),
                    Some("CLIENT_ERROR".into()),
                ),
                _ => (
                    "stats\r\n".into(),
                    "STAT a 1\r\nEND\r\n".into(),
                    "stats".into(),
                    None,
                ),
            };
            want.push((q, r.len() as u64, code));
            cmds.extend(c.into_bytes());
            replies.extend(r.into_bytes());
        }
        (cmds, replies, want)
    }

    #[test]
    fn pipeline_of_ten_split_at_every_octet() {
        let (cmds, replies, want) = pipeline(10);
        for split in 0..=replies.len() {
            let mut c = Conv::client();
            c.cmd(&cmds);
            c.reply(&replies[..split]);
            c.reply(&replies[split..]);
            let ex = c.take();
            assert_eq!(summary(&ex), want, "split at {split}");
            assert!(
                ex.iter()
                    .all(|e| e.start_ns == 1 && (2..=3).contains(&e.end_ns))
            );
            assert_eq!(c.conn.parse_errors(), 0);
        }
        for split in 0..=cmds.len() {
            let mut c = Conv::client();
            c.cmd(&cmds[..split]);
            c.cmd(&cmds[split..]);
            c.reply(&replies);
            assert_eq!(summary(&c.take()), want, "split at {split}");
            assert_eq!(c.conn.parse_errors(), 0);
        }
        let mut c = Conv::new(Role::Server, false);
        for b in cmds.chunks(1) {
            c.cmd(b);
        }
        for b in replies.chunks(1) {
            c.reply(b);
        }
        assert_eq!(summary(&c.take()), want);
    }

    #[test]
    fn big_values_beyond_the_capture() {
        let value = vec![b'v'; 100_000];
        for bound in [32, 64, 1024, 4096] {
            let mut c = Conv::client();
            let mut set = b"set big 0 0 100000\r\n".to_vec();
            set.extend_from_slice(&value);
            set.extend_from_slice(b"\r\n");
            c.feed(true, &set, bound);
            c.feed(false, b"STORED\r\n", bound);
            c.feed(true, b"get big\r\n", bound);
            let mut reply = b"VALUE big 0 100000\r\n".to_vec();
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\nEND\r\n");
            // Read in 4 KiB chunks, as pymemcache does.
            for chunk in reply.chunks(4096) {
                c.feed(false, chunk, bound);
            }
            c.feed(true, b"get small\r\n", bound);
            c.feed(false, b"END\r\n", bound);
            let ex = c.take();
            assert_eq!(summary(&ex).len(), 3, "bound {bound}");
            assert_eq!(ex[0].request_size, set.len() as u64);
            assert_eq!(ex[1].response_size, reply.len() as u64);
            assert_eq!(ex[1].end_ns, 3 + reply.len().div_ceil(4096) as u64);
            assert!(ex.iter().all(|e| e.flags == ExchangeFlags::default()));
            assert_eq!(c.conn.parse_errors(), 0, "bound {bound}");
        }
    }

    #[test]
    fn multi_get_of_large_values_ends_at_the_tail_end() {
        let mut reply = Vec::new();
        for k in ["a", "b", "c"] {
            reply.extend_from_slice(format!("VALUE {k} 0 3000\r\n").as_bytes());
            reply.extend(std::iter::repeat_n(b'x', 3000));
            reply.extend_from_slice(b"\r\n");
        }
        reply.extend_from_slice(b"END\r\n");
        // One read of the whole reply.
        let mut c = Conv::client();
        c.cmd(b"get a b c\r\n");
        c.feed(false, &reply, 1024);
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].response_size, reply.len() as u64);
        assert!(!ex[0].flags.incomplete);
        assert_eq!(c.conn.stats.lost_sync, 1);
        c.cmd(b"get a\r\n");
        c.reply(b"END\r\n");
        assert_eq!(c.take().len(), 1);
        // Several reads: the last one ends with END.
        let mut c = Conv::client();
        c.cmd(b"get a b c\r\n");
        c.feed(false, &reply[..5000], 1024);
        c.feed(false, &reply[5000..], 1024);
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].end_ns, 3);
        assert_eq!(ex[0].response_size, reply.len() as u64);
        // With more outstanding commands, END could be anyone's: wait for the next command.
        let mut c = Conv::client();
        c.cmd(b"get a b c\r\nget d\r\n");
        c.feed(false, &reply, 1024);
        assert!(c.take().is_empty());
        c.cmd(b"version\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 2);
        assert!(ex.iter().all(|e| e.flags.incomplete));
        c.reply(b"VERSION 1.6.21\r\n");
        let ex = c.take();
        assert_eq!(query(&ex[0]), "version");
    }

    #[test]
    fn long_multi_get_line_beyond_the_capture() {
        let mut line = b"get".to_vec();
        for i in 0..300 {
            line.extend_from_slice(format!(" key:{i:04}").as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        let mut c = Conv::client();
        c.feed(true, &line, 1024);
        c.reply(b"VALUE key:0001 0 1\r\n1\r\nEND\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert!(ex[0].flags.partial);
        assert!(query(&ex[0]).starts_with("get key:0000 key:0001"));
        assert!(query(&ex[0]).len() <= MAX_QUERY_LEN);
        assert_eq!(ex[0].response_size, 28);
        c.cmd(b"get x\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(query(&ex[0]), "get x");
        assert_eq!(c.conn.parse_errors(), 1);
    }

    #[test]
    fn set_many_beyond_the_capture() {
        // pymemcache's set_many: all commands in one write.
        let mut cmds = Vec::new();
        let mut replies = Vec::new();
        for i in 0..50 {
            cmds.extend_from_slice(format!("set k{i} 0 0 40\r\n{:040}\r\n", i).as_bytes());
            replies.extend_from_slice(b"STORED\r\n");
        }
        let mut c = Conv::client();
        c.feed(true, &cmds, 1024);
        c.reply(&replies);
        let ex = c.take();
        assert!(ex.len() >= 15, "{}", ex.len());
        assert!(ex.iter().all(|e| e.response_size == 8));
        c.cmd(b"get k1\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(query(&ex[0]), "get k1");
    }

    #[test]
    fn joined_midway() {
        let mut c = Conv::new(Role::Client, true);
        c.reply(b"lue\r\nEND\r\n");
        c.cmd(b"xxxx\r\nget a\r\n");
        c.reply(b"END\r\n");
        c.cmd(b"get a\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].start_ns, 4);
        assert_eq!(c.conn.parse_errors(), 0);
        let mut c = Conv::new(Role::Client, true);
        assert_eq!(c.cmd(b"GET / HTTP/1.1\r\n\r\n"), Verdict::Continue);
    }

    #[test]
    fn rejects_what_is_not_memcached() {
        for first in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\x80\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x05",
            b"\x16\x03\x01\x00\xa5",
            b"hello world\r\n",
            b"*1\r\n$4\r\nPING\r\n",
        ] {
            let mut c = Conv::client();
            assert_eq!(c.cmd(first), Verdict::Reject, "{first:?}");
            assert_eq!(c.reply(b"END\r\n"), Verdict::Reject);
            assert_eq!(c.cmd(b"get a\r\n"), Verdict::Reject);
            c.close();
            assert!(c.take().is_empty());
        }
        let mut c = Conv::client();
        let mut last = Verdict::Continue;
        for b in b"hello world\r\n".chunks(1) {
            last = c.cmd(b);
        }
        assert_eq!(last, Verdict::Reject);
        // Once memcached, unknown commands are just commands.
        let mut c = Conv::client();
        c.cmd(b"version\r\nfoo\r\n");
        c.reply(b"VERSION 1\r\nERROR\r\n");
        assert_eq!(c.take().len(), 2);
    }

    #[test]
    fn watch_turns_the_connection_into_a_stream() {
        let mut c = Conv::client();
        c.cmd(b"watch fetchers\r\n");
        c.reply(b"OK\r\n");
        c.reply(b"ts=1 gid=2 type=item_get key=a status=not_found\r\n");
        c.close();
        let ex = c.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(query(&ex[0]), "watch");
        assert_eq!(c.conn.parse_errors(), 0);
    }

    #[test]
    fn close_finishes_outstanding_commands() {
        let mut c = Conv::client();
        c.cmd(b"get a\r\nget b\r\n");
        c.reply(b"VALUE a 0 10\r\n01234");
        c.close();
        let ex = c.take();
        assert_eq!(ex.len(), 2);
        assert!(ex.iter().all(|e| e.flags.incomplete && e.end_ns == 3));
        assert_eq!(ex[0].response_size, 19);
        assert_eq!(ex[1].response_size, 0);
        c.reply(b"56789\r\nEND\r\n");
        assert!(c.take().is_empty());
    }

    #[test]
    fn orphans_and_malformed_replies() {
        let mut c = Conv::client();
        c.cmd(b"get a\r\n");
        c.reply(b"END\r\nSTORED\r\n");
        assert_eq!(c.take().len(), 1);
        assert_eq!(c.conn.stats.orphan_replies, 1);
        c.cmd(b"get a\r\n");
        c.reply(b"VALUE a 0 1\r\nx\r\nGARBAGE\r\n");
        c.cmd(b"get b\r\n");
        c.reply(b"END\r\n");
        let ex = c.take();
        assert_eq!(ex.len(), 2);
        assert!(ex[0].flags.incomplete);
        assert_eq!(query(&ex[1]), "get b");
        assert_eq!(c.conn.stats.malformed, 1);
    }

    #[test]
    fn endless_pipelining_is_bounded() {
        let mut c = Conv::client();
        let n = MAX_PENDING + 10;
        for i in 0..n {
            c.cmd(format!("incr k{i} 1\r\n").as_bytes());
            assert!(c.conn.pending() <= MAX_PENDING);
        }
        assert_eq!(c.conn.stats.dropped_pending, 10);
        let mut replies = Vec::new();
        for i in 0..n {
            replies.extend(format!("{i}\r\n").as_bytes());
        }
        c.reply(&replies);
        let ex = c.take();
        assert_eq!(ex.len(), MAX_PENDING);
        for (j, e) in ex.iter().enumerate() {
            let i = j + 10;
            assert_eq!(query(e), format!("incr k{i}"));
            assert_eq!(e.response_size, format!("{i}\r\n").len() as u64);
        }
        let mut c = Conv::client();
        c.cmd(b"version\r\n");
        for _ in 0..100 {
            c.cmd(&[b'a'; 1000]);
        }
        assert!(c.conn.req.line.capacity() <= 2 * MAX_LINE);
    }

    #[test]
    fn garbage_never_panics() {
        let alphabet = b"VALUE END STORED get set mg ms q O k v 0 1 5 \r\n HD VA EN MN";
        let (cmds, replies, _) = pipeline(24);
        testing::garbage_pipelines::<MemcachedConnection>(11, alphabet, &cmds, &replies, |e| {
            assert!(
                db(e)
                    .query
                    .as_ref()
                    .is_none_or(|q| q.len() <= MAX_QUERY_LEN)
            );
        });
    }

    #[test]
    fn empty_segments_are_ignored() {
        let mut c = Conv::client();
        c.cmd(b"");
        c.reply(b"");
        c.cmd(b"version\r\n");
        c.reply(b"VERSION 1.6.21\r\n");
        assert_eq!(c.take().len(), 1);
        assert_eq!(c.conn.parse_errors(), 0);
    }
}
