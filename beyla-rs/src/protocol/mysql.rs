//! MySQL / MariaDB client/server protocol exchanges from the two byte streams of one
//! connection.
//!
//! [`MysqlConnection`] follows the packets (24-bit little-endian payload length, sequence id;
//! a payload of `0xFFFFFF` octets continues in the next packet) of both directions, whichever
//! end the instrumented process is, and emits one database [`Exchange`] per statement:
//!
//! * **Connection phase**: the server greeting (protocol 10) gives the system (`mariadb`
//!   when its version contains `MariaDB`) and the server's capabilities; the client's
//!   `HandshakeResponse41` the negotiated capabilities and the database (namespace, with
//!   `CLIENT_CONNECT_WITH_DB`). A short SSL request means TLS follows: the ciphertext is
//!   ignored until a client segment starts with the handshake response again (the TLS
//!   library's plaintext). Auth switch and auth-more-data packets lead to the server's OK,
//!   after which commands flow. With `CLIENT_COMPRESS` (or zstd) negotiated the packets that
//!   follow are compressed: the connection is then ignored.
//! * **Commands** (sequence id 0 from the client): `COM_QUERY` (with
//!   `CLIENT_QUERY_ATTRIBUTES` the attribute prefix is skipped, values included) and
//!   `COM_STMT_EXECUTE` (also MariaDB's `COM_STMT_BULK_EXECUTE`) give an exchange each.
//!   `COM_STMT_PREPARE` remembers the statement under the id its answer names (at most
//!   [`MAX_STATEMENTS`], oldest forgotten first; MariaDB's id `0xFFFFFFFF` means the last
//!   prepared) and gives an exchange only when it fails (a syntax error). An execute of an
//!   unknown id gives an exchange without operation, flagged `partial`. `COM_STMT_CLOSE` and
//!   `COM_STMT_SEND_LONG_DATA` have no answer. `COM_INIT_DB`, `COM_CHANGE_USER` and a
//!   successful `USE db` set the namespace. `COM_PING`, `COM_STMT_RESET`,
//!   `COM_RESET_CONNECTION`, `COM_STATISTICS`, `COM_FIELD_LIST`, `COM_STMT_FETCH`, … are
//!   followed to stay paired but give no exchange. `COM_BINLOG_DUMP` turns the connection
//!   into a replication stream: ignored from then on.
//! * **Responses**: OK, ERR (error number → `status_code`, `error = true`; MariaDB progress
//!   reports are skipped), result sets (column count, column definitions, EOF unless
//!   `CLIENT_DEPRECATE_EOF`, text or binary rows, EOF or OK terminator; MariaDB's
//!   `MARIADB_CLIENT_CACHE_METADATA` skipped column definitions), several result sets while
//!   `SERVER_MORE_RESULTS_EXISTS` is set, `LOCAL INFILE` requests (the client's file packets
//!   count toward the request). The exchange ends with the final OK, ERR or terminator.
//! * Commands are answered in order; a client may send several before reading (MariaDB's
//!   prepare-and-execute pipelining): they are queued (at most [`MAX_PENDING`]).
//!
//! # Times and sizes
//!
//! `start_ns` is the time of the segment holding the command's first octet, `end_ns` that of
//! the segment holding the last octet of the packet that ends the response. Sizes count the
//! packets, headers included (continuation packets and `LOCAL INFILE` data too).
//!
//! # Truncated captures and lost framing
//!
//! Packet boundaries are followed exactly through uncaptured octets. When a packet header
//! falls into uncaptured octets (a large result set captured in part) the server direction's
//! framing is lost ([`MysqlStats::sync_lost`]). It is found again:
//! * at the end of a segment in a result set's rows whose last octets (tail copy, or the
//!   captured octets of a segment captured whole) are an EOF packet, or an OK terminator with
//!   no rows affected (`CLIENT_DEPRECATE_EOF`), without `SERVER_MORE_RESULTS_EXISTS`: the
//!   exchange ends there;
//! * else when the client sends its next command: the protocol is strictly request then
//!   response, so every command still waiting ends, at the time of its last response
//!   segment, and the server's next segment starts the new command's response.
//!
//! A lost client framing is found again at the next client segment that starts with a
//! plausible command packet. A connection joined midway starts that way (no namespace, no
//! greeting: system `mysql`). [`Verdict::Reject`] is returned only when a connection seen from
//! its start does not start with a greeting or a handshake response (see [`detect`]).
//!
//! # Memory
//!
//! Per connection: two readers keeping at most [`MAX_KEEP`](super::sql) octets of a packet
//! split across segments (zeroed after use), [`MAX_STATEMENTS`] statement summaries and
//! [`MAX_PENDING`] queued commands.
//!
//! Not parsed: the compressed protocol, `CLIENT_OPTIONAL_RESULTSET_METADATA` (MySQL 8
//! optional metadata: a result set whose metadata was skipped loses the framing of its rows
//! until the next command), the X protocol (another port), replication events.

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

/// The IANA port of MySQL.
pub const DEFAULT_PORT: u16 = 3306;
/// Prepared statements remembered per connection.
pub const MAX_STATEMENTS: usize = 256;
/// Commands awaiting their response; beyond, the oldest is emitted as incomplete.
pub const MAX_PENDING: usize = 64;
/// Longest namespace kept (MySQL database names have at most 64 characters).
pub const MAX_NAMESPACE_LEN: usize = 256;

const CLIENT_MYSQL: u64 = 1;
const CLIENT_CONNECT_WITH_DB: u64 = 0x8;
const CLIENT_COMPRESS: u64 = 0x20;
const CLIENT_PROTOCOL_41: u64 = 0x200;
const CLIENT_SSL: u64 = 0x800;
const CLIENT_SECURE_CONNECTION: u64 = 0x8000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u64 = 0x20_0000;
const CLIENT_DEPRECATE_EOF: u64 = 0x100_0000;
const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u64 = 0x400_0000;
const CLIENT_QUERY_ATTRIBUTES: u64 = 0x800_0000;
/// MariaDB's extended capabilities sit in bits 32..64 of the capabilities kept here.
const MARIADB_CLIENT_CACHE_METADATA: u64 = 1 << (32 + 4);

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// A payload of this length continues in the next packet.
const MAX_PACKET: u64 = 0xFF_FFFF;
/// Longest greeting or handshake response accepted at a connection's start.
const MAX_HANDSHAKE: u64 = 1 << 16;
/// Payload octets kept of a server packet (OK, ERR, EOF, column count, prepare OK, greeting
/// start).
const SERVER_KEEP: usize = 64;
const GREETING_KEEP: usize = 512;

/// Counters of what happened on one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MysqlStats {
    /// Packet headers that fell into uncaptured octets: framing lost.
    pub sync_lost: u64,
    /// Packets that are not what the protocol allows where they are.
    pub malformed: u64,
    /// Framing found again (also the handshake response that starts the plaintext after an
    /// SSL request).
    pub resyncs: u64,
    /// A connection not joined midway whose first bytes were a command, not a handshake:
    /// followed as if joined midway.
    pub heuristics: u64,
    /// Commands emitted as incomplete because [`MAX_PENDING`] were waiting.
    pub dropped: u64,
    /// Server packets that matched no command (normal after joining midway).
    pub orphans: u64,
}

/// The MySQL state of one connection, both directions.
#[derive(Debug)]
pub struct MysqlConnection {
    role: Role,
    cli: Reader,
    srv: Reader,
    st: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting the server greeting (or, from the TLS library, the handshake response).
    Greeting,
    /// Greeting seen: expecting the client's handshake response.
    Handshake,
    /// SSL request seen: ciphertext until the plaintext handshake response.
    Tls,
    /// Handshake response seen: authentication until the server's OK.
    Auth,
    Command,
    /// Compressed protocol, replication stream, refused connection: nothing more to parse.
    Ignore,
    Closed,
    Rejected,
}

/// What a command's response is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// OK, ERR, LOCAL INFILE request, or result sets.
    ResultSet,
    /// COM_STMT_PREPARE's OK and definitions, or ERR.
    Prepare,
    /// One OK or ERR (or EOF).
    OkErr,
    /// One packet of anything (COM_STATISTICS).
    AnyOne,
    /// Column definitions until EOF (COM_FIELD_LIST).
    FieldList,
    /// An authentication exchange until OK or ERR (COM_CHANGE_USER).
    Auth,
    /// Rows until a terminator (COM_STMT_FETCH).
    Rows,
}

/// Where in a response the server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resp {
    First,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    PrepParams { left: u64, cols: u64 },
    PrepParamsEof { cols: u64 },
    PrepCols { left: u64 },
    PrepColsEof,
    Infile,
}

/// A command awaiting its response.
#[derive(Debug)]
struct Cmd {
    expect: Expect,
    /// Gives an exchange (a query or an execute; a prepare only when it fails).
    exchange: bool,
    /// COM_STMT_PREPARE: `summary` is registered under the id of its OK.
    prepare: bool,
    /// Binary result set (execute): MariaDB's metadata cache applies.
    binary: bool,
    start_ns: u64,
    req: u64,
    resp: u64,
    last_resp_ns: u64,
    summary: Option<Arc<Summary>>,
    partial: bool,
    status: Option<String>,
    error: bool,
    /// The namespace from now on if the command succeeds (COM_INIT_DB, USE, COM_CHANGE_USER).
    namespace: Option<String>,
}

/// What a packet asks of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    None,
    /// SSL request: ciphertext follows.
    Tls,
    /// Nothing more to parse.
    Ignore,
    /// A new command while the server framing was lost: its response starts the server's
    /// next segment.
    ServerResync,
    Malformed,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Nothing valid seen yet on a connection seen from its start.
    strict: bool,
    system: DbSystem,
    greeting_seen: bool,
    /// Server capabilities (MariaDB's extended ones in bits 32..64).
    server_caps: u64,
    /// Negotiated capabilities.
    caps: u64,
    namespace: Option<String>,
    statements: BoundedMap<u32, Arc<Summary>>,
    /// The last COM_STMT_PREPARE's statement (MariaDB's execute of id `0xFFFFFFFF`).
    last_prepare: Option<Arc<Summary>>,
    queue: VecDeque<Cmd>,
    /// Where the front command's response is.
    resp: Resp,
    /// The last client / server packet was `MAX_PACKET` long: the next one continues it.
    cli_cont: bool,
    srv_cont: bool,
    /// Resynchronize the server framing at its next segment.
    srv_resync: bool,
    last_srv_ns: u64,
    stats: MysqlStats,
}

fn le_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(..2)?.try_into().ok()?))
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn le_u24(b: &[u8]) -> Option<u64> {
    let [a, b, c] = *b.get(..3)? else {
        return None;
    };
    Some(u64::from(u32::from_le_bytes([a, b, c, 0])))
}

/// A length-encoded integer: its value and its size.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    match first {
        0..=0xfa => Some((u64::from(first), 1)),
        0xfc => Some((u64::from(le_u16(b.get(1..)?)?), 3)),
        0xfd => Some((le_u24(b.get(1..)?)?, 4)),
        0xfe => Some((u64::from_le_bytes(b.get(1..9)?.try_into().ok()?), 9)),
        // 0xfb is NULL, 0xff an ERR packet's header.
        _ => None,
    }
}

/// A length-encoded string's octets and the rest.
fn lenenc_str(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, k) = lenenc(b)?;
    let end = k.checked_add(usize::try_from(n).ok()?)?;
    Some((b.get(k..end)?, b.get(end..)?))
}

/// The C string at the start of `b` (`None` without its NUL) and the rest.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr(0, b)?;
    Some((b.get(..i)?, b.get(i + 1..)?))
}

/// Octets of a binary protocol value of column type `t` at the start of `b`.
fn binary_value_len(t: u8, b: &[u8]) -> Option<usize> {
    Some(match t {
        0x06 => 0,
        0x01 => 1,
        0x02 | 0x0d => 2,
        0x03 | 0x04 | 0x09 => 4,
        0x05 | 0x08 => 8,
        0x07 | 0x0a | 0x0b | 0x0c | 0x0e | 0x11 | 0x12 | 0x13 => 1 + usize::from(*b.first()?),
        0x00 | 0x0f | 0x10 | 0xf5..=0xff => {
            let (n, k) = lenenc(b)?;
            k.checked_add(usize::try_from(n).ok()?)?
        }
        _ => return None,
    })
}

/// The statement text of a COM_QUERY payload (after the command octet) with query
/// attributes: `None` when the attributes cannot be skipped.
fn skip_query_attributes(p: &[u8]) -> Option<&[u8]> {
    let (count, k) = lenenc(p)?;
    let p = p.get(k..)?;
    let (_sets, k) = lenenc(p)?;
    let mut p = p.get(k..)?;
    if count == 0 {
        return Some(p);
    }
    let count = usize::try_from(count).ok().filter(|c| *c <= 4096)?;
    let bitmap = p.get(..count.div_ceil(8))?;
    p = p.get(count.div_ceil(8)..)?;
    let (&bound, rest) = p.split_first()?;
    if bound != 1 {
        return None;
    }
    p = rest;
    let mut types = Vec::with_capacity(count);
    for _ in 0..count {
        let t = *p.first()?;
        types.push(t);
        let (_name, rest) = lenenc_str(p.get(2..)?)?;
        p = rest;
    }
    for (i, t) in types.into_iter().enumerate() {
        let null = bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        if !null {
            p = p.get(binary_value_len(t, p)?..)?;
        }
    }
    Some(p)
}

impl MysqlConnection {
    /// A connection seen from its start (`joined_midway == false`): it must start with the
    /// server greeting or the client's handshake response. One that existed before the
    /// daemon: followed from the first plausible command.
    pub fn new(role: Role, joined_midway: bool) -> Self {
        let (cli, srv, phase) = if joined_midway {
            (
                Reader::lost(Framing::MySql),
                Reader::lost(Framing::MySql),
                Phase::Command,
            )
        } else {
            let mut cli = Reader::new(Framing::MySql);
            let mut srv = Reader::new(Framing::MySql);
            cli.limit = MAX_HANDSHAKE;
            srv.limit = MAX_HANDSHAKE;
            (cli, srv, Phase::Greeting)
        };
        MysqlConnection {
            role,
            cli,
            srv,
            st: State {
                phase,
                strict: !joined_midway,
                system: DbSystem::Mysql,
                greeting_seen: false,
                server_caps: 0,
                caps: CLIENT_PROTOCOL_41,
                namespace: None,
                statements: BoundedMap::new(MAX_STATEMENTS),
                last_prepare: None,
                queue: VecDeque::new(),
                resp: Resp::First,
                cli_cont: false,
                srv_cont: false,
                srv_resync: false,
                last_srv_ns: 0,
                stats: MysqlStats::default(),
            },
        }
    }

    /// Counters of this connection.
    pub fn stats(&self) -> MysqlStats {
        self.st.stats
    }

    /// Commands awaiting their response (at most [`MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.st.queue.len()
    }

    /// Prepared statements remembered.
    pub fn statements(&self) -> usize {
        self.st.statements.len()
    }

    /// Octets allocated by the readers for packets split across segments.
    pub fn buffered(&self) -> usize {
        self.cli.buffered() + self.srv.buffered()
    }

    /// The current database.
    pub fn namespace(&self) -> Option<&str> {
        self.st.namespace.as_deref()
    }

    /// `mysql`, or `mariadb` once a MariaDB greeting (or client) was seen.
    pub fn system(&self) -> DbSystem {
        self.st.system
    }

    /// Feeds one segment; finished exchanges are appended to `out`.
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        match self.st.phase {
            Phase::Rejected => return Verdict::Reject,
            Phase::Closed | Phase::Ignore => return Verdict::Continue,
            _ => {}
        }
        if seg_total(seg) == 0 {
            return Verdict::Continue;
        }
        let v = if seg.direction == self.role.request_direction() {
            self.client(seg, out)
        } else {
            self.server(seg, out)
        };
        if v == Verdict::Reject {
            self.st.phase = Phase::Rejected;
            self.st.release();
        }
        if self.st.phase == Phase::Ignore {
            self.st.release();
        }
        v
    }

    /// The connection closed at `ts_ns`: every command still waiting is emitted, incomplete.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if matches!(self.st.phase, Phase::Rejected | Phase::Closed) {
            return;
        }
        while let Some(c) = self.st.queue.pop_front() {
            self.st.emit(c, ts_ns, true, out);
        }
        self.st.release();
        self.st.phase = Phase::Closed;
    }

    fn client(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        match self.st.phase {
            Phase::Tls => {
                if !is_handshake_response(seg.data) {
                    return Verdict::Continue;
                }
                self.cli = Reader::new(Framing::MySql);
                self.srv = Reader::new(Framing::MySql);
                self.st.cli_cont = false;
                self.st.srv_cont = false;
                self.st.phase = Phase::Handshake;
                self.st.stats.resyncs += 1;
            }
            // The client speaks first: the TLS library's plaintext (starting with the
            // handshake response), or a connection whose start was missed.
            Phase::Greeting
                if self.st.strict && self.cli.at_boundary() && !handshake_prefix_ok(seg.data) =>
            {
                if !plausible_command(seg.data) {
                    return Verdict::Reject;
                }
                self.st.stats.heuristics += 1;
                self.st.strict = false;
                self.st.phase = Phase::Command;
                self.cli.limit = u64::MAX;
                self.srv = Reader::lost(Framing::MySql);
            }
            _ => {}
        }
        if self.cli.is_lost() {
            if self.st.phase != Phase::Command || !plausible_command(seg.data) {
                self.st.add_request(seg.total_len);
                return Verdict::Continue;
            }
            self.cli.resync();
            self.st.cli_cont = false;
            self.st.stats.resyncs += 1;
        }
        let mut pos = 0;
        loop {
            let phase = self.st.phase;
            let srv_lost = self.srv.is_lost();
            let act = match self
                .cli
                .next(seg.data, seg.total_len, seg.ts_ns, &mut pos, |seq, _| {
                    match phase {
                        Phase::Greeting | Phase::Handshake => GREETING_KEEP,
                        _ if seq == 0 => MAX_KEEP,
                        // Authentication data, LOCAL INFILE contents: never kept.
                        _ => 0,
                    }
                }) {
                Step::End => break,
                Step::Msg(m) => self.st.client_packet(&m, srv_lost, out),
                Step::Lost => {
                    self.st.stats.sync_lost += 1;
                    let rest = seg_total(seg).saturating_sub(pos);
                    self.st.add_request(rest);
                    break;
                }
                Step::Malformed => Act::Malformed,
            };
            if self.st.phase != Phase::Greeting && self.st.phase != Phase::Handshake {
                self.cli.limit = u64::MAX;
            }
            match act {
                Act::None => {}
                Act::ServerResync => self.st.srv_resync = true,
                Act::Tls => {
                    self.st.phase = Phase::Tls;
                    return Verdict::Continue;
                }
                Act::Ignore => {
                    self.st.phase = Phase::Ignore;
                    return Verdict::Continue;
                }
                Act::Malformed => {
                    if self.st.strict {
                        return Verdict::Reject;
                    }
                    self.st.stats.malformed += 1;
                    self.cli.lose();
                    break;
                }
            }
        }
        // A first packet still arriving: judged as soon as its start is there, as a segment
        // holding it whole would be.
        if self.st.strict
            && self.st.phase == Phase::Greeting
            && self
                .cli
                .in_progress()
                .is_some_and(|start| !handshake_prefix_ok(&start))
        {
            return Verdict::Reject;
        }
        Verdict::Continue
    }

    fn server(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        self.st.last_srv_ns = seg.ts_ns;
        match self.st.phase {
            Phase::Tls => return Verdict::Continue,
            Phase::Greeting
                if self.st.strict && self.srv.at_boundary() && !greeting_prefix_ok(seg.data) =>
            {
                return Verdict::Reject;
            }
            _ => {}
        }
        if self.st.srv_resync {
            self.st.srv_resync = false;
            if self.srv.is_lost() {
                self.st.stats.resyncs += 1;
            }
            self.srv.resync();
            self.st.srv_cont = false;
        }
        if self.srv.is_lost() {
            self.st.add_response(seg.total_len, seg.ts_ns);
            self.server_end(seg, out);
            return Verdict::Continue;
        }
        let mut pos = 0;
        loop {
            let keep = if self.st.phase == Phase::Greeting {
                GREETING_KEEP
            } else {
                SERVER_KEEP
            };
            let act = match self
                .srv
                .next(seg.data, seg.total_len, seg.ts_ns, &mut pos, |_, _| keep)
            {
                Step::End => break,
                Step::Msg(m) => self.st.server_packet(&m, out),
                Step::Lost => {
                    self.st.stats.sync_lost += 1;
                    let rest = seg_total(seg).saturating_sub(pos);
                    self.st.add_response(rest, seg.ts_ns);
                    self.server_end(seg, out);
                    break;
                }
                Step::Malformed => Act::Malformed,
            };
            if self.st.phase != Phase::Greeting {
                self.srv.limit = u64::MAX;
            }
            match act {
                Act::None | Act::Tls | Act::ServerResync => {}
                Act::Ignore => {
                    self.st.phase = Phase::Ignore;
                    return Verdict::Continue;
                }
                Act::Malformed => {
                    if self.st.strict {
                        return Verdict::Reject;
                    }
                    self.st.stats.malformed += 1;
                    self.srv.lose();
                    break;
                }
            }
        }
        if self.st.strict
            && self.st.phase == Phase::Greeting
            && self
                .srv
                .in_progress()
                .is_some_and(|start| !greeting_prefix_ok(&start))
        {
            return Verdict::Reject;
        }
        Verdict::Continue
    }

    /// Server framing lost in a result set's rows: found again if the segment ends with the
    /// result set's terminator (and no more results follow), which ends the exchange.
    fn server_end(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.st.phase != Phase::Command || self.st.resp != Resp::Rows || self.st.queue.is_empty()
        {
            return;
        }
        let Some(t) = segment_end(seg, 8) else {
            return;
        };
        let status = if self.st.caps & CLIENT_DEPRECATE_EOF != 0 {
            // OK with 0xFE header, no rows affected, no insert id: seq FE 00 00 status warnings.
            match t {
                [_, 0xfe, 0, 0, s0, s1, _, _] => u16::from_le_bytes([*s0, *s1]),
                _ => return,
            }
        } else {
            // EOF: length 5 (its first octet is before the tail), seq, FE, warnings, status.
            match t {
                [0, 0, _, 0xfe, _, _, s0, s1] => u16::from_le_bytes([*s0, *s1]),
                _ => return,
            }
        };
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            return;
        }
        self.st.finish(seg.ts_ns, out);
        self.srv.resync();
        self.st.srv_cont = false;
        self.st.stats.resyncs += 1;
    }
}

impl super::Parser for MysqlConnection {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }

    fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) -> Verdict {
        MysqlConnection::on_segment(self, seg, out)
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        MysqlConnection::on_close(self, ts_ns, out);
    }

    fn parse_errors(&self) -> u64 {
        self.st.stats.sync_lost + self.st.stats.malformed
    }
}

impl State {
    fn release(&mut self) {
        self.queue = VecDeque::new();
        self.statements.clear();
        self.last_prepare = None;
        self.resp = Resp::First;
    }

    fn emit(&self, c: Cmd, end_ns: u64, incomplete: bool, out: &mut Vec<Exchange>) {
        if !(c.exchange || (c.prepare && c.error)) {
            return;
        }
        let s = c.summary.as_deref();
        out.push(Exchange {
            start_ns: c.start_ns,
            end_ns: end_ns.max(c.start_ns),
            request_size: c.req,
            response_size: c.resp,
            flags: ExchangeFlags {
                partial: c.partial,
                incomplete,
            },
            kind: Kind::Db(Db {
                system: self.system,
                operation: s.and_then(|s| s.operation.clone()),
                collection: s.and_then(|s| s.collection.clone()),
                namespace: self.namespace.clone(),
                query: s.filter(|s| !s.text.is_empty()).map(|s| s.text.clone()),
                status_code: c.status,
                error: c.error,
            }),
        });
    }

    /// The front command's response ended at `end_ns`.
    fn finish(&mut self, end_ns: u64, out: &mut Vec<Exchange>) {
        self.resp = Resp::First;
        let Some(c) = self.queue.pop_front() else {
            return;
        };
        let ns = if c.error { None } else { c.namespace.clone() };
        self.emit(c, end_ns, false, out);
        if let Some(ns) = ns {
            self.namespace = Some(ns);
        }
    }

    /// Client octets not framed (lost framing): most likely more of the last command (a
    /// large statement, LOCAL INFILE contents).
    fn add_request(&mut self, n: u64) {
        if let Some(c) = self.queue.back_mut() {
            c.req = c.req.saturating_add(n);
        }
    }

    /// Response octets for the front command.
    fn add_response(&mut self, n: u64, ts: u64) {
        if let Some(c) = self.queue.front_mut() {
            c.resp = c.resp.saturating_add(n);
            c.last_resp_ns = ts;
        }
    }

    fn client_packet(&mut self, m: &Msg<'_>, srv_lost: bool, out: &mut Vec<Exchange>) -> Act {
        let wire = m.payload_len.saturating_add(4);
        if self.cli_cont {
            self.cli_cont = m.payload_len == MAX_PACKET;
            if let Some(c) = self.queue.back_mut() {
                c.req = c.req.saturating_add(wire);
            }
            return Act::None;
        }
        self.cli_cont = m.payload_len == MAX_PACKET;
        let act = match self.phase {
            Phase::Greeting | Phase::Handshake => self.handshake_response(m),
            Phase::Auth if m.typ == 0 => {
                // A command: the server's OK was not seen.
                self.phase = Phase::Command;
                self.command(m, srv_lost, out)
            }
            Phase::Command if m.typ == 0 => self.command(m, srv_lost, out),
            Phase::Command => {
                // LOCAL INFILE contents (or the rest of something not followed).
                if let Some(c) = self.queue.back_mut() {
                    c.req = c.req.saturating_add(wire);
                }
                Act::None
            }
            _ => Act::None,
        };
        if act != Act::Malformed {
            self.strict = false;
        }
        act
    }

    fn handshake_response(&mut self, m: &Msg<'_>) -> Act {
        let p = m.payload;
        let Some(caps) = le_u32(p).map(u64::from) else {
            return Act::Malformed;
        };
        if !matches!(m.typ, 1 | 2) || m.payload_len < 32 || caps & CLIENT_PROTOCOL_41 == 0 {
            return Act::Malformed;
        }
        if m.payload_len == 32 && caps & CLIENT_SSL != 0 {
            return Act::Tls;
        }
        let ext = p.get(28..32).and_then(le_u32).map_or(0, u64::from);
        // The response is laid out by the client's flags; what both sides do after by the
        // flags both have.
        let client_caps = caps;
        let mut caps = caps | (ext << 32);
        if self.greeting_seen {
            caps &= self.server_caps;
        } else if caps & CLIENT_MYSQL == 0 && ext != 0 {
            // MariaDB clients talking to a MariaDB server clear CLIENT_MYSQL to send
            // extended capabilities.
            self.system = DbSystem::Mariadb;
        }
        self.caps = caps | CLIENT_PROTOCOL_41;
        self.phase = Phase::Auth;
        let db = (|| {
            let (_user, rest) = cstr(p.get(32..)?)?;
            let rest = if client_caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
                lenenc_str(rest)?.1
            } else if client_caps & CLIENT_SECURE_CONNECTION != 0 {
                let (&n, r) = rest.split_first()?;
                r.get(usize::from(n)..)?
            } else {
                cstr(rest)?.1
            };
            if client_caps & CLIENT_CONNECT_WITH_DB == 0 {
                return None;
            }
            cstr(rest).map(|d| d.0)
        })();
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            self.namespace = Some(sql::lossy(db, MAX_NAMESPACE_LEN));
        }
        Act::None
    }

    fn push(&mut self, c: Cmd, out: &mut Vec<Exchange>) {
        if self.queue.len() >= MAX_PENDING
            && let Some(old) = self.queue.pop_front()
        {
            self.stats.dropped += 1;
            self.resp = Resp::First;
            self.emit(old, c.start_ns, true, out);
        }
        self.queue.push_back(c);
    }

    fn command(&mut self, m: &Msg<'_>, srv_lost: bool, out: &mut Vec<Exchange>) -> Act {
        let mut act = Act::None;
        if srv_lost {
            // Request then response: what is queued was answered in octets not seen.
            while let Some(c) = self.queue.pop_front() {
                let end = if c.resp > 0 {
                    c.last_resp_ns
                } else {
                    self.last_srv_ns
                };
                self.emit(c, end, false, out);
            }
            self.resp = Resp::First;
            act = Act::ServerResync;
        }
        let p = m.payload;
        let Some((&code, args)) = p.split_first() else {
            return Act::Malformed;
        };
        let mut c = Cmd {
            expect: Expect::OkErr,
            exchange: false,
            prepare: false,
            binary: false,
            start_ns: m.start_ns,
            req: m.payload_len.saturating_add(4),
            resp: 0,
            last_resp_ns: m.end_ns,
            summary: None,
            partial: false,
            status: None,
            error: false,
            namespace: None,
        };
        match code {
            // COM_QUERY
            0x03 => {
                let text = if self.caps & CLIENT_QUERY_ATTRIBUTES != 0 {
                    skip_query_attributes(args)
                } else {
                    Some(args)
                };
                if let Some(t) = text {
                    let s = sql::summarize_captured(t, Dialect::Mysql);
                    if s.operation.as_deref() == Some("USE") {
                        c.namespace =
                            sql::use_database(&String::from_utf8_lossy(t), Dialect::Mysql)
                                .map(|n| sql::cap_string(n, MAX_NAMESPACE_LEN));
                    }
                    c.summary = Some(s);
                } else {
                    c.partial = true;
                }
                c.expect = Expect::ResultSet;
                c.exchange = true;
            }
            // COM_STMT_PREPARE
            0x16 => {
                let s = sql::summarize_captured(args, Dialect::Mysql);
                self.last_prepare = Some(s.clone());
                c.summary = Some(s);
                c.expect = Expect::Prepare;
                c.prepare = true;
            }
            // COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE (MariaDB)
            0x17 | 0xfa => {
                c.summary = match le_u32(args) {
                    Some(0xffff_ffff) => self.last_prepare.clone(),
                    Some(id) => self.statements.get(&id).cloned(),
                    None => None,
                };
                c.partial = c.summary.is_none();
                c.expect = Expect::ResultSet;
                c.exchange = true;
                c.binary = true;
            }
            // COM_STMT_CLOSE: no response.
            0x19 => {
                if let Some(id) = le_u32(args) {
                    self.statements.remove(&id);
                }
                return act;
            }
            // COM_STMT_SEND_LONG_DATA, COM_QUIT: no response.
            0x18 | 0x01 => return act,
            // COM_INIT_DB
            0x02 => {
                if m.whole() && !args.is_empty() {
                    c.namespace = Some(sql::lossy(args, MAX_NAMESPACE_LEN));
                }
            }
            // COM_CHANGE_USER: user, auth data, database, … then an authentication exchange.
            0x11 => {
                c.expect = Expect::Auth;
                c.namespace = (|| {
                    let (_user, rest) = cstr(args)?;
                    let rest = if self.caps & CLIENT_SECURE_CONNECTION != 0 {
                        let (&n, r) = rest.split_first()?;
                        r.get(usize::from(n)..)?
                    } else {
                        cstr(rest)?.1
                    };
                    let (db, _) = cstr(rest)?;
                    (!db.is_empty()).then(|| sql::lossy(db, MAX_NAMESPACE_LEN))
                })();
            }
            // COM_PING, COM_STMT_RESET, COM_RESET_CONNECTION, COM_SET_OPTION, COM_DEBUG,
            // COM_REFRESH, COM_SHUTDOWN, COM_PROCESS_KILL, COM_REGISTER_SLAVE.
            0x0e | 0x1a | 0x1f | 0x1b | 0x0d | 0x07 | 0x08 | 0x0c | 0x15 => {}
            // COM_STATISTICS: a plain string.
            0x09 => c.expect = Expect::AnyOne,
            // COM_FIELD_LIST
            0x04 => c.expect = Expect::FieldList,
            // COM_PROCESS_INFO
            0x0a => c.expect = Expect::ResultSet,
            // COM_STMT_FETCH
            0x1c => c.expect = Expect::Rows,
            // COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID: a stream of events follows.
            0x12 | 0x1e => return Act::Ignore,
            _ => {
                // The server answers an unknown command with ERR; most likely a misparse.
                self.stats.malformed += 1;
            }
        }
        self.push(c, out);
        act
    }

    fn server_packet(&mut self, m: &Msg<'_>, out: &mut Vec<Exchange>) -> Act {
        let wire = m.payload_len.saturating_add(4);
        if self.srv_cont {
            self.srv_cont = m.payload_len == MAX_PACKET;
            self.add_response(wire, m.end_ns);
            return Act::None;
        }
        self.srv_cont = m.payload_len == MAX_PACKET;
        let p = m.payload;
        let act = match self.phase {
            Phase::Greeting => self.greeting(m),
            Phase::Auth => match p.first() {
                Some(0x00) => {
                    self.phase = Phase::Command;
                    if self.caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM) != 0 {
                        Act::Ignore
                    } else {
                        Act::None
                    }
                }
                // ERR (the connection ends), auth switch, more data.
                _ => Act::None,
            },
            Phase::Command => self.response(m, out),
            _ => Act::None,
        };
        if act != Act::Malformed {
            self.strict = false;
        }
        act
    }

    fn greeting(&mut self, m: &Msg<'_>) -> Act {
        let p = m.payload;
        if m.typ != 0 {
            return Act::Malformed;
        }
        match p.first() {
            Some(10) => {}
            // The server refuses the connection (too many connections, host not allowed).
            Some(0xff) => return Act::Ignore,
            _ => return Act::Malformed,
        }
        let Some((version, rest)) = p.get(1..).and_then(cstr) else {
            return Act::Malformed;
        };
        if version.is_empty() || !version.iter().all(|b| b.is_ascii_graphic()) {
            return Act::Malformed;
        }
        if memchr::memmem::find(version, b"MariaDB").is_some() {
            self.system = DbSystem::Mariadb;
        }
        let low = rest.get(13..).and_then(le_u16).map_or(0, u64::from);
        let high = rest.get(18..).and_then(le_u16).map_or(0, u64::from);
        let mut caps = low | (high << 16);
        if caps & CLIENT_MYSQL == 0 {
            // MariaDB's extended capabilities, in the last 4 reserved octets.
            caps |= rest.get(27..).and_then(le_u32).map_or(0, u64::from) << 32;
        }
        self.server_caps = caps;
        self.greeting_seen = true;
        self.phase = Phase::Handshake;
        Act::None
    }

    /// OK / EOF status flags of a terminator (`0x00` or `0xFE` header).
    fn status_flags(&self, p: &[u8], eof: bool) -> u16 {
        let rest = p.get(1..).unwrap_or(&[]);
        if eof {
            // warnings, status
            return rest.get(2..).and_then(le_u16).unwrap_or(0);
        }
        (|| {
            let (_, a) = lenenc(rest)?;
            let (_, b) = lenenc(rest.get(a..)?)?;
            le_u16(rest.get(a + b..)?)
        })()
        .unwrap_or(0)
    }

    /// An EOF packet (`0xFE`, shorter than 9 octets).
    fn is_eof(p: &[u8], len: u64) -> bool {
        p.first() == Some(&0xfe) && len < 9
    }

    /// The end of a result set's rows, and its status flags.
    fn terminator(&self, p: &[u8], len: u64) -> Option<u16> {
        if p.first() != Some(&0xfe) {
            return None;
        }
        if self.caps & CLIENT_DEPRECATE_EOF != 0 {
            (len < MAX_PACKET).then(|| self.status_flags(p, false))
        } else {
            (len < 9).then(|| self.status_flags(p, true))
        }
    }

    fn response(&mut self, m: &Msg<'_>, out: &mut Vec<Exchange>) -> Act {
        let wire = m.payload_len.saturating_add(4);
        let ts = m.end_ns;
        let p = m.payload;
        let len = m.payload_len;
        let deprecate_eof = self.caps & CLIENT_DEPRECATE_EOF != 0;
        let Some(cmd) = self.queue.front_mut() else {
            self.stats.orphans += 1;
            return Act::None;
        };
        cmd.resp = cmd.resp.saturating_add(wire);
        cmd.last_resp_ns = ts;
        let expect = cmd.expect;
        let binary = cmd.binary;
        if p.first() == Some(&0xff) && expect != Expect::AnyOne {
            let code = le_u16(p.get(1..).unwrap_or(&[]));
            if code == Some(0xffff) {
                // MariaDB progress report, not the end.
                return Act::None;
            }
            cmd.error = true;
            cmd.status = code.map(|c| c.to_string());
            self.finish(ts, out);
            return Act::None;
        }
        let ok = p.first() == Some(&0x00);
        match (self.resp, expect) {
            (Resp::First, Expect::ResultSet) => match p.first() {
                Some(0x00) => {
                    if self.status_flags(p, false) & SERVER_MORE_RESULTS_EXISTS == 0 {
                        self.finish(ts, out);
                    }
                }
                Some(0xfb) => self.resp = Resp::Infile,
                Some(0xfe) => self.finish(ts, out),
                _ => match lenenc(p) {
                    Some((n, k)) if n > 0 => {
                        let skip_meta = binary
                            && self.caps & MARIADB_CLIENT_CACHE_METADATA != 0
                            && p.get(k) == Some(&0);
                        self.resp = if skip_meta {
                            Resp::Rows
                        } else {
                            Resp::Columns { left: n }
                        };
                    }
                    _ => return Act::Malformed,
                },
            },
            (Resp::First, Expect::Prepare) => {
                if !ok {
                    return Act::Malformed;
                }
                let id = p.get(1..).and_then(le_u32);
                let cols = p.get(5..).and_then(le_u16).map_or(0, u64::from);
                let params = p.get(7..).and_then(le_u16).map_or(0, u64::from);
                if let (Some(id), Some(s)) = (id, cmd.summary.clone()) {
                    self.statements.insert(id, s);
                }
                self.resp = if params > 0 {
                    Resp::PrepParams { left: params, cols }
                } else if cols > 0 {
                    Resp::PrepCols { left: cols }
                } else {
                    self.finish(ts, out);
                    return Act::None;
                };
            }
            (Resp::First, Expect::OkErr | Expect::AnyOne) => self.finish(ts, out),
            (Resp::First, Expect::FieldList) => {
                if Self::is_eof(p, len) || (deprecate_eof && ok) {
                    self.finish(ts, out);
                }
            }
            (Resp::First, Expect::Auth) => {
                if ok {
                    self.finish(ts, out);
                }
            }
            (Resp::First, Expect::Rows) | (Resp::Rows, _) => {
                if let Some(status) = self.terminator(p, len) {
                    if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                        self.resp = Resp::First;
                    } else {
                        self.finish(ts, out);
                    }
                } else {
                    self.resp = Resp::Rows;
                }
            }
            (Resp::Columns { left }, _) => {
                let left = left.saturating_sub(1);
                self.resp = match (left, deprecate_eof) {
                    (0, true) => Resp::Rows,
                    (0, false) => Resp::ColumnsEof,
                    _ => Resp::Columns { left },
                };
            }
            (Resp::ColumnsEof, _) => {
                if !Self::is_eof(p, len) {
                    return Act::Malformed;
                }
                if self.status_flags(p, true) & SERVER_STATUS_CURSOR_EXISTS != 0 {
                    // Rows come with COM_STMT_FETCH.
                    self.finish(ts, out);
                } else {
                    self.resp = Resp::Rows;
                }
            }
            (Resp::PrepParams { left, cols }, _) => {
                let left = left.saturating_sub(1);
                self.resp = match (left, deprecate_eof, cols) {
                    (0, false, _) => Resp::PrepParamsEof { cols },
                    (0, true, 0) => {
                        self.finish(ts, out);
                        return Act::None;
                    }
                    (0, true, _) => Resp::PrepCols { left: cols },
                    _ => Resp::PrepParams { left, cols },
                };
            }
            (Resp::PrepParamsEof { cols }, _) => {
                if cols == 0 {
                    self.finish(ts, out);
                } else {
                    self.resp = Resp::PrepCols { left: cols };
                }
            }
            (Resp::PrepCols { left }, _) => {
                let left = left.saturating_sub(1);
                match (left, deprecate_eof) {
                    (0, true) => self.finish(ts, out),
                    (0, false) => self.resp = Resp::PrepColsEof,
                    _ => self.resp = Resp::PrepCols { left },
                }
            }
            (Resp::PrepColsEof, _) => self.finish(ts, out),
            (Resp::Infile, _) => {
                if ok && self.status_flags(p, false) & SERVER_MORE_RESULTS_EXISTS != 0 {
                    self.resp = Resp::First;
                } else {
                    self.finish(ts, out);
                }
            }
        }
        Act::None
    }
}

/// `data` is consistent, as far as it goes, with a server greeting (or a refusal).
fn greeting_prefix_ok(data: &[u8]) -> bool {
    let len_ok = le_u24(data).is_none_or(|l| (1..=MAX_HANDSHAKE).contains(&l));
    let seq_ok = data.get(3).is_none_or(|&s| s == 0);
    let proto_ok = data.get(4).is_none_or(|&p| p == 10 || p == 0xff);
    len_ok && seq_ok && proto_ok
}

/// `data` is consistent, as far as it goes, with a HandshakeResponse41 or an SSL request.
fn handshake_prefix_ok(data: &[u8]) -> bool {
    let len_ok = le_u24(data).is_none_or(|l| (32..=MAX_HANDSHAKE).contains(&l));
    let seq_ok = data.get(3).is_none_or(|&s| s == 1 || s == 2);
    let caps_ok = data
        .get(4..8)
        .and_then(le_u32)
        .is_none_or(|c| u64::from(c) & CLIENT_PROTOCOL_41 != 0);
    len_ok && seq_ok && caps_ok
}

/// `data` starts with a whole HandshakeResponse41 header: protocol 4.1 capabilities and the
/// 23-octet filler (zeros, but for MariaDB's 4 octets of extended capabilities).
fn is_handshake_response(data: &[u8]) -> bool {
    handshake_prefix_ok(data)
        && data
            .get(13..32)
            .is_some_and(|filler| filler.iter().all(|&b| b == 0))
}

/// `data` starts with a plausible command packet (sequence id 0, a known command and a length
/// that fits it).
fn plausible_command(data: &[u8]) -> bool {
    let (Some(len), Some(&0), Some(&cmd)) = (le_u24(data), data.get(3), data.get(4)) else {
        return false;
    };
    let arg = data.get(5..).unwrap_or(&[]);
    let text_ok = |a: &[u8]| {
        a.first()
            .is_none_or(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    };
    match cmd {
        // COM_QUERY (with query attributes: two small length-encoded counts first).
        0x03 => len >= 2 && (text_ok(arg) || arg.get(..2) == Some(&[0, 1][..])),
        0x16 | 0x02 => len >= 2 && text_ok(arg),
        // COM_STMT_EXECUTE: id, flags, iteration count (always 1).
        0x17 => len >= 10 && arg.get(5..9).is_none_or(|c| c == [1, 0, 0, 0]),
        0x19 | 0x1a => len == 5,
        0x1c => len == 9,
        0x18 => len >= 7,
        0x01 | 0x0e | 0x09 | 0x0a | 0x1f | 0x0d => len == 1,
        0x1b => len == 3,
        0x11 | 0x04 => len >= 2,
        _ => false,
    }
}

/// `data` starts with a plausible response packet (a connection joined midway): OK, ERR,
/// EOF, or a column count followed by a column definition.
fn plausible_response(data: &[u8]) -> bool {
    let (Some(len), Some(&seq), Some(&first)) = (le_u24(data), data.get(3), data.get(4)) else {
        return false;
    };
    if seq == 0 {
        return false;
    }
    match first {
        0x00 => (7..=MAX_HANDSHAKE).contains(&len),
        0xff => (3..=1024).contains(&len) && data.get(7).is_none_or(|&b| b == b'#'),
        0xfe => (5..=MAX_HANDSHAKE).contains(&len),
        1..=250 if len == 1 => {
            // The first column definition: its catalog is always "def".
            let next = data.get(5..).unwrap_or(&[]);
            let header_ok = next.get(3).is_none_or(|&s| s == seq.wrapping_add(1));
            let def_ok = next
                .get(4..8)
                .is_none_or(|d| d == b"\x03def".get(..d.len()).unwrap_or(&[]));
            !next.is_empty() && header_ok && def_ok
        }
        _ => false,
    }
}

/// Judges the first captured bytes of a connection in `direction`.
///
/// `Yes` for a server greeting (length, sequence 0, protocol 10, a printable version string
/// ending with NUL) and for a client handshake response or SSL request (sequence 1, or 2:
/// the TLS plaintext; protocol 4.1 capabilities, the zero filler); `Maybe` for a command
/// packet (sequence 0, a known command and a length that fits it), a plausible server
/// response (OK, ERR, EOF, column count and definition) or a server refusal (ERR as
/// greeting); `No` otherwise (HTTP, TLS, …).
pub fn detect(role: Role, direction: Direction, data: &[u8]) -> Detected {
    let client = direction == role.request_direction();
    if client {
        // Sequence id 2 after an SSL request: the TLS library's plaintext starts there.
        if is_handshake_response(data) {
            return Detected::Yes;
        }
        if plausible_command(data) {
            return Detected::Maybe;
        }
        return Detected::No;
    }
    if plausible_response(data) {
        return Detected::Maybe;
    }
    let (Some(len), Some(&0)) = (le_u24(data), data.get(3)) else {
        return Detected::No;
    };
    match data.get(4) {
        // Only the header: clients that read each packet's four header octets with a call of
        // their own (mysql-connector-python). A server speaking first with a greeting-sized
        // packet numbered 0 is MySQL's opening; the body follows in the next read.
        None if data.len() == 4 && (20..=MAX_HANDSHAKE).contains(&len) => Detected::Yes,
        Some(10) if (20..=MAX_HANDSHAKE).contains(&len) => {
            let v = data.get(5..).unwrap_or(&[]);
            let v = v.get(..v.len().min(64)).unwrap_or(&[]);
            match memchr(0, v) {
                Some(n) if n > 0 => {
                    let version = v.get(..n).unwrap_or(&[]);
                    if version.first().is_some_and(u8::is_ascii_digit)
                        && version.iter().all(u8::is_ascii_graphic)
                    {
                        Detected::Yes
                    } else {
                        Detected::No
                    }
                }
                _ => Detected::No,
            }
        }
        Some(0xff) if (3..=1024).contains(&len) => Detected::Maybe,
        _ => Detected::No,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Extents;
    use super::super::testing::{
        self, Step, TestConn, cat, db, hex, request as cl, response as sv, truncated,
    };
    use super::*;

    // ----- encoders -----

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend(payload);
        v
    }

    /// Packets with consecutive sequence ids from `seq`.
    fn packets(seq: u8, payloads: &[Vec<u8>]) -> Vec<u8> {
        payloads
            .iter()
            .enumerate()
            .flat_map(|(i, p)| packet(seq.wrapping_add(i as u8), p))
            .collect()
    }

    fn lenenc_int(n: u64) -> Vec<u8> {
        match n {
            0..=250 => vec![n as u8],
            251..=0xffff => {
                let mut v = vec![0xfc];
                v.extend((n as u16).to_le_bytes());
                v
            }
            _ => {
                let mut v = vec![0xfe];
                v.extend(n.to_le_bytes());
                v
            }
        }
    }

    fn lenenc_s(s: &[u8]) -> Vec<u8> {
        let mut v = lenenc_int(s.len() as u64);
        v.extend(s);
        v
    }

    const BASE_CAPS: u32 = 0x0000_0001 // CLIENT_LONG_PASSWORD
        | 0x0000_0200 // PROTOCOL_41
        | 0x0000_8000 // SECURE_CONNECTION
        | 0x0002_0000 // MULTI_RESULTS
        | 0x0008_0000; // PLUGIN_AUTH

    fn greeting(version: &str, caps: u32, ext: u32) -> Vec<u8> {
        let mut p = vec![10];
        p.extend(version.as_bytes());
        p.push(0);
        p.extend(7u32.to_le_bytes());
        p.extend(b"abcdefgh");
        p.push(0);
        p.extend((caps as u16).to_le_bytes());
        p.push(0x21);
        p.extend(2u16.to_le_bytes());
        p.extend(((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend([0u8; 6]);
        p.extend(ext.to_le_bytes());
        p.extend(b"ijklmnopqrst\0");
        p.extend(b"mysql_native_password\0");
        packet(0, &p)
    }

    fn handshake_response(seq: u8, caps: u32, ext: u32, user: &str, db: Option<&str>) -> Vec<u8> {
        let mut caps = caps;
        if db.is_some() {
            caps |= 0x8;
        }
        let mut p = caps.to_le_bytes().to_vec();
        p.extend(16_777_216u32.to_le_bytes());
        p.push(0x21);
        p.extend([0u8; 19]);
        p.extend(ext.to_le_bytes());
        p.extend(user.as_bytes());
        p.push(0);
        p.push(20);
        p.extend([0x5a; 20]);
        if let Some(db) = db {
            p.extend(db.as_bytes());
            p.push(0);
        }
        p.extend(b"mysql_native_password\0");
        packet(seq, &p)
    }

    fn ssl_request(caps: u32) -> Vec<u8> {
        let mut p = (caps | 0x800).to_le_bytes().to_vec();
        p.extend(16_777_216u32.to_le_bytes());
        p.push(0x21);
        p.extend([0u8; 23]);
        packet(1, &p)
    }

    fn ok_payload(header: u8, affected: u64, status: u16) -> Vec<u8> {
        let mut p = vec![header];
        p.extend(lenenc_int(affected));
        p.extend(lenenc_int(0));
        p.extend(status.to_le_bytes());
        p.extend(0u16.to_le_bytes());
        p
    }

    fn ok(seq: u8, affected: u64, status: u16) -> Vec<u8> {
        packet(seq, &ok_payload(0, affected, status))
    }

    fn err_payload(code: u16, state: &str, msg: &str) -> Vec<u8> {
        let mut p = vec![0xff];
        p.extend(code.to_le_bytes());
        p.push(b'#');
        p.extend(state.as_bytes());
        p.extend(msg.as_bytes());
        p
    }

    fn eof_payload(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend(status.to_le_bytes());
        p
    }

    fn column_def(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "shop", "t", "t", name, name] {
            p.extend(lenenc_s(s.as_bytes()));
        }
        p.push(0x0c);
        p.extend(0x21u16.to_le_bytes());
        p.extend(255u32.to_le_bytes());
        p.push(0xfd);
        p.extend(0u16.to_le_bytes());
        p.push(0);
        p.extend([0, 0]);
        p
    }

    fn text_row(vals: &[&[u8]]) -> Vec<u8> {
        vals.iter().flat_map(|v| lenenc_s(v)).collect()
    }

    /// A text (or, `binary`, binary) result set from sequence id 1, with terminator `status`.
    fn result_set(
        cols: usize,
        rows: usize,
        deprecate_eof: bool,
        binary: bool,
        status: u16,
    ) -> Vec<Vec<u8>> {
        let mut ps = vec![lenenc_int(cols as u64)];
        for i in 0..cols {
            ps.push(column_def(&format!("c{i}")));
        }
        if !deprecate_eof {
            ps.push(eof_payload(2));
        }
        for r in 0..rows {
            let v = format!("value{r}");
            if binary {
                let mut row = vec![0, 0];
                for _ in 0..cols {
                    row.extend(lenenc_s(v.as_bytes()));
                }
                ps.push(row);
            } else {
                let vals: Vec<&[u8]> = (0..cols).map(|_| v.as_bytes()).collect();
                ps.push(text_row(&vals));
            }
        }
        ps.push(if deprecate_eof {
            ok_payload(0xfe, 0, status)
        } else {
            eof_payload(status)
        });
        ps
    }

    fn com_query(sql: &str) -> Vec<u8> {
        let mut p = vec![0x03];
        p.extend(sql.as_bytes());
        packet(0, &p)
    }

    fn com(code: u8, args: &[u8]) -> Vec<u8> {
        let mut p = vec![code];
        p.extend(args);
        packet(0, &p)
    }

    fn com_execute(id: u32) -> Vec<u8> {
        let mut a = id.to_le_bytes().to_vec();
        a.push(0);
        a.extend(1u32.to_le_bytes());
        com(0x17, &a)
    }

    fn prepare_ok(id: u32, cols: u16, params: u16) -> Vec<u8> {
        let mut p = vec![0];
        p.extend(id.to_le_bytes());
        p.extend(cols.to_le_bytes());
        p.extend(params.to_le_bytes());
        p.push(0);
        p.extend(0u16.to_le_bytes());
        p
    }

    // ----- harness -----

    impl TestConn for MysqlConnection {
        fn open(role: Role, joined_midway: bool) -> Self {
            MysqlConnection::new(role, joined_midway)
        }

        fn waiting(&self) -> usize {
            self.pending()
        }

        fn check_bounds(&self) {
            assert!(self.pending() <= MAX_PENDING);
            assert!(self.statements() <= MAX_STATEMENTS);
            assert!(self.buffered() <= 2 * MAX_KEEP);
        }
    }

    type Run = testing::Run<MysqlConnection>;

    fn run_cut(role: Role, midway: bool, steps: &[Step], cut: Option<(usize, usize)>) -> Run {
        testing::run_cut(role, midway, steps, cut)
    }

    fn run(role: Role, steps: &[Step]) -> Run {
        run_cut(role, false, steps, None)
    }

    /// Same exchanges whatever the role and wherever one step is cut in two (and the same
    /// counters).
    fn run_all_ways(steps: &[Step]) -> Vec<Exchange> {
        testing::run_all_ways(steps, |c: &MysqlConnection| c.stats())
    }

    /// Greeting, handshake response (database `shop`), OK.
    fn login(caps: u32) -> Vec<Step> {
        vec![
            sv(greeting("8.0.36", caps, 0)),
            cl(handshake_response(1, caps, 0, "app", Some("shop"))),
            sv(ok(2, 0, 2)),
        ]
    }

    // ----- tests -----

    #[test]
    fn handshake_and_query() {
        let q = com_query("SELECT * FROM users WHERE name = 'bob'");
        let resp = packets(1, &result_set(2, 3, false, false, 0x22));
        let mut steps = login(BASE_CAPS);
        steps.push(cl(q.clone()));
        steps.push(sv(resp.clone()));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.start_ns, e.end_ns), (40, 50));
        assert_eq!(e.request_size, q.len() as u64);
        assert_eq!(e.response_size, resp.len() as u64);
        assert_eq!(
            db(e),
            &Db {
                system: DbSystem::Mysql,
                operation: Some("SELECT".into()),
                collection: Some("users".into()),
                namespace: Some("shop".into()),
                query: Some("SELECT * FROM users WHERE name = ?".into()),
                status_code: None,
                error: false,
            }
        );
    }

    #[test]
    fn deprecate_eof_and_multiple_results() {
        let caps = BASE_CAPS | 0x0100_0000;
        let mut steps = login(caps);
        // CALL: two result sets then the final OK.
        steps.push(cl(com_query("CALL report(1)")));
        let mut ps = result_set(1, 2, true, false, 0x0008 | 2);
        ps.extend(result_set(2, 1, true, false, 0x0008 | 2));
        ps.push(ok_payload(0, 0, 2));
        steps.push(sv(packets(1, &ps)));
        // Multi statement: OK with more results, then a result set.
        steps.push(cl(com_query("UPDATE t SET a = 1; SELECT 1")));
        let mut ps = vec![ok_payload(0, 3, 0x0008 | 2)];
        ps.extend(result_set(1, 1, true, false, 2));
        steps.push(sv(packets(1, &ps)));
        // A row starting with 0xFE (an 8-octet length) is not a terminator here: its packet
        // is long.
        steps.push(cl(com_query("SELECT b FROM blobs")));
        let mut ps = vec![lenenc_int(1), column_def("b")];
        let mut row = lenenc_int(300).clone();
        row.extend([b'x'; 300]);
        ps.push(row);
        ps.push(ok_payload(0xfe, 0, 2));
        steps.push(sv(packets(1, &ps)));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 3);
        assert_eq!(db(&out[0]).operation.as_deref(), Some("CALL"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (40, 50));
        assert_eq!(db(&out[1]).collection.as_deref(), Some("t"));
        assert_eq!((out[1].start_ns, out[1].end_ns), (60, 70));
        assert_eq!(db(&out[2]).collection.as_deref(), Some("blobs"));
    }

    #[test]
    fn error_response() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com_query("SELECT * FROM nope")));
        steps.push(sv(packet(
            1,
            &err_payload(1146, "42S02", "Table 'shop.nope' doesn't exist"),
        )));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        let d = db(&out[0]);
        assert!(d.error);
        assert_eq!(d.status_code.as_deref(), Some("1146"));
        assert!(!db(&out[1]).error);
    }

    #[test]
    fn prepared_statements() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com(0x16, b"SELECT name FROM users WHERE id = ?")));
        steps.push(sv(packets(
            1,
            &[
                prepare_ok(7, 1, 1),
                column_def("?"),
                eof_payload(2),
                column_def("name"),
                eof_payload(2),
            ],
        )));
        for _ in 0..2 {
            steps.push(cl(com_execute(7)));
            steps.push(sv(packets(1, &result_set(1, 2, false, true, 2))));
        }
        // Unknown id: partial.
        steps.push(cl(com_execute(99)));
        steps.push(sv(packet(
            1,
            &err_payload(1243, "HY000", "Unknown prepared statement"),
        )));
        // Closed: no response; the id is forgotten.
        steps.push(cl(cat(&[com(0x19, &7u32.to_le_bytes()), com_execute(7)])));
        steps.push(sv(packet(
            1,
            &err_payload(1243, "HY000", "Unknown prepared statement"),
        )));
        // A prepare that fails gives an exchange.
        steps.push(cl(com(0x16, b"SELEC 1")));
        steps.push(sv(packet(
            1,
            &err_payload(1064, "42000", "You have an error"),
        )));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 5);
        for e in &out[..2] {
            assert_eq!(db(e).collection.as_deref(), Some("users"));
            assert_eq!(
                db(e).query.as_deref(),
                Some("SELECT name FROM users WHERE id = ?")
            );
            assert!(!e.flags.partial);
        }
        assert!(out[2].flags.partial && out[3].flags.partial);
        assert_eq!(db(&out[2]).operation, None);
        assert_eq!(db(&out[3]).status_code.as_deref(), Some("1243"));
        assert_eq!(db(&out[4]).status_code.as_deref(), Some("1064"));
        assert_eq!(db(&out[4]).query.as_deref(), Some("SELEC ?"));
    }

    #[test]
    fn prepare_with_deprecate_eof() {
        let caps = BASE_CAPS | 0x0100_0000;
        let mut steps = login(caps);
        steps.push(cl(com(0x16, b"INSERT INTO t (a, b) VALUES (?, ?)")));
        steps.push(sv(packets(
            1,
            &[prepare_ok(1, 0, 2), column_def("?"), column_def("?")],
        )));
        steps.push(cl(com_execute(1)));
        steps.push(sv(ok(1, 1, 2)));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).operation.as_deref(), Some("INSERT"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (60, 70));
    }

    #[test]
    fn namespace_changes() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com(0x02, b"other")));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        steps.push(cl(com_query("USE `third`")));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_query("SELECT 2")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        // A failed COM_INIT_DB changes nothing.
        steps.push(cl(com(0x02, b"missing")));
        steps.push(sv(packet(
            1,
            &err_payload(1049, "42000", "Unknown database"),
        )));
        steps.push(cl(com(0x0e, &[])));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_query("SELECT 3")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        let ns: Vec<_> = out
            .iter()
            .map(|e| db(e).namespace.clone().unwrap_or_default())
            .collect();
        assert_eq!(ns, ["other", "other", "third", "third"]);
        assert_eq!(db(&out[1]).operation.as_deref(), Some("USE"));
    }

    #[test]
    fn mariadb_greeting_and_cache_metadata() {
        let caps = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0100_0000;
        let ext = 1 << 4;
        let steps = vec![
            sv(greeting("5.5.5-10.11.6-MariaDB-0+deb12u1", caps, ext)),
            cl(handshake_response(1, caps, ext, "app", Some("m"))),
            sv(ok(2, 0, 2)),
            cl(com(0x16, b"SELECT a FROM t WHERE id = ?")),
            sv(packets(
                1,
                &[prepare_ok(3, 1, 1), column_def("?"), column_def("a")],
            )),
            cl(com_execute(3)),
            // Metadata cached: the column count packet says none follows.
            sv(packets(
                1,
                &[vec![1, 0], vec![0, 0, 1, b'x'], ok_payload(0xfe, 0, 2)],
            )),
        ];
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).system, DbSystem::Mariadb);
        assert_eq!(db(&out[0]).collection.as_deref(), Some("t"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (60, 70));
    }

    #[test]
    fn mariadb_pipelined_prepare_and_execute() {
        let caps = 0x0000_0200 | 0x0000_8000 | 0x0008_0000;
        let steps = vec![
            sv(greeting("11.4.2-MariaDB", caps, 0)),
            cl(handshake_response(1, caps, 0, "app", None)),
            sv(ok(2, 0, 2)),
            cl(cat(&[
                com(0x16, b"DELETE FROM q WHERE id = ?"),
                com_execute(0xffff_ffff),
            ])),
            sv(cat(&[
                packets(1, &[prepare_ok(1, 0, 1), column_def("?"), eof_payload(2)]),
                ok(1, 1, 2),
            ])),
        ];
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).system, DbSystem::Mariadb);
        assert_eq!(db(&out[0]).operation.as_deref(), Some("DELETE"));
        assert_eq!(db(&out[0]).namespace, None);
    }

    #[test]
    fn ssl_then_plaintext_handshake() {
        let caps = BASE_CAPS | 0x800;
        let steps = vec![
            sv(greeting("8.0.36", caps, 0)),
            cl(ssl_request(caps)),
            cl(vec![0x16, 3, 1, 0, 4, 1, 0, 0, 0]),
            sv(vec![0x16, 3, 3, 0, 2, 2, 0]),
            cl(handshake_response(2, caps, 0, "app", Some("secure"))),
            sv(ok(3, 0, 2)),
            cl(com_query("SELECT 1")),
            sv(packets(1, &result_set(1, 1, false, false, 2))),
        ];
        let r = run(Role::Client, &steps);
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
        assert_eq!(r.out.len(), 1);
        assert_eq!(db(&r.out[0]).namespace.as_deref(), Some("secure"));
        // A fresh parser fed the TLS plaintext only.
        let r = run(Role::Client, &steps[4..]);
        assert_eq!(r.out.len(), 1);
        assert_eq!(db(&r.out[0]).namespace.as_deref(), Some("secure"));
        assert_eq!(r.conn.stats(), MysqlStats::default());
    }

    #[test]
    fn auth_switch_and_more_data() {
        let mut steps = vec![
            sv(greeting("8.0.36", BASE_CAPS, 0)),
            cl(handshake_response(1, BASE_CAPS, 0, "app", Some("db1"))),
        ];
        let mut switch = vec![0xfe];
        switch.extend(b"caching_sha2_password\0");
        switch.extend([0x11; 20]);
        switch.push(0);
        steps.push(sv(packet(2, &switch)));
        steps.push(cl(packet(3, &[0x22; 32])));
        steps.push(sv(packet(4, &[0x01, 0x03])));
        steps.push(sv(ok(5, 0, 2)));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).namespace.as_deref(), Some("db1"));
    }

    #[test]
    fn query_attributes() {
        let caps = BASE_CAPS | 0x0800_0000;
        let mut steps = login(caps);
        // No attributes.
        let mut p = vec![0x03, 0, 1];
        p.extend(b"SELECT 1 FROM a");
        steps.push(cl(packet(0, &p)));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        // One string attribute and one NULL attribute.
        let mut p = vec![0x03, 2, 1, 0b10, 1];
        p.extend([0xfe, 0]);
        p.extend(lenenc_s(b"traceparent"));
        p.extend([0x06, 0]);
        p.extend(lenenc_s(b"n"));
        p.extend(lenenc_s(b"00-abc-def-01"));
        p.extend(b"SELECT 2 FROM b");
        steps.push(cl(packet(0, &p)));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!(db(&out[0]).collection.as_deref(), Some("a"));
        assert_eq!(db(&out[1]).collection.as_deref(), Some("b"));
        assert_eq!(db(&out[1]).query.as_deref(), Some("SELECT ? FROM b"));
    }

    #[test]
    fn local_infile() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com_query(
            "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t",
        )));
        steps.push(sv(packet(1, b"\xfb/tmp/x")));
        steps.push(cl(cat(&[packet(2, b"1,2\n3,4\n"), packet(3, b"")])));
        steps.push(sv(ok(4, 2, 2)));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).operation.as_deref(), Some("LOAD"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (40, 70));
        let q = com_query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t").len() as u64;
        assert_eq!(out[0].request_size, q + 12 + 4);
    }

    #[test]
    fn other_commands_keep_pairing() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com(0x0e, &[])));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com(0x09, &[])));
        steps.push(sv(packet(1, b"Uptime: 100  Threads: 1")));
        steps.push(cl(com(0x04, b"t\0")));
        steps.push(sv(packets(
            1,
            &[column_def("a"), column_def("b"), eof_payload(2)],
        )));
        steps.push(cl(com(0x1a, &1u32.to_le_bytes())));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com(0x1f, &[])));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ns, out[0].end_ns), (140, 150));
    }

    #[test]
    fn change_user_sets_namespace() {
        let mut steps = login(BASE_CAPS);
        let mut a = b"other\0".to_vec();
        a.push(20);
        a.extend([1; 20]);
        a.extend(b"newdb\0");
        a.extend(0x21u16.to_le_bytes());
        a.extend(b"mysql_native_password\0");
        steps.push(cl(com(0x11, &a)));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let out = run_all_ways(&steps);
        assert_eq!(out.len(), 1);
        assert_eq!(db(&out[0]).namespace.as_deref(), Some("newdb"));
    }

    fn big_result(rows: usize, deprecate: bool) -> Vec<u8> {
        let mut ps = vec![lenenc_int(2), column_def("id"), column_def("v")];
        if !deprecate {
            ps.push(eof_payload(2));
        }
        for i in 0..rows {
            ps.push(text_row(&[format!("{i}").as_bytes(), &[b'v'; 100]]));
        }
        ps.push(if deprecate {
            ok_payload(0xfe, 0, 0x22)
        } else {
            eof_payload(0x22)
        });
        packets(1, &ps)
    }

    #[test]
    fn lost_sync_in_large_result_ends_at_tail_terminator() {
        for deprecate in [false, true] {
            let caps = BASE_CAPS | if deprecate { 0x0100_0000 } else { 0 };
            let resp = big_result(1000, deprecate);
            let (a, b) = resp.split_at(50_000);
            let mut steps = login(caps);
            steps.push(cl(com_query("SELECT * FROM big")));
            steps.push(truncated(sv(a.to_vec()), 1024));
            steps.push(truncated(sv(b.to_vec()), 1024));
            steps.push(cl(com_query("SELECT 1")));
            steps.push(sv(packets(1, &result_set(1, 1, deprecate, false, 2))));
            let r = run(Role::Client, &steps);
            assert_eq!(r.out.len(), 2, "{:#?}", r.out);
            assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (40, 60));
            assert_eq!(r.out[0].response_size, resp.len() as u64);
            assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (70, 80));
            assert_eq!(r.conn.stats().sync_lost, 1);
            assert_eq!(r.conn.stats().resyncs, 1);
            assert_eq!(super::super::Parser::parse_errors(&r.conn), 1);
        }
    }

    #[test]
    fn lost_sync_ends_at_next_command() {
        let resp = big_result(1000, false);
        // The last segment ends in the middle of a row.
        let (a, b) = resp.split_at(50_000);
        let b = &b[..b.len() - 30];
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com_query("SELECT * FROM big")));
        steps.push(truncated(sv(a.to_vec()), 1024));
        steps.push(truncated(sv(b.to_vec()), 1024));
        steps.push(cl(com_query("SELECT 1")));
        steps.push(sv(packets(1, &result_set(1, 1, false, false, 2))));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 2, "{:#?}", r.out);
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (40, 60));
        assert!(!r.out[0].flags.incomplete);
        assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (70, 80));
        assert_eq!(db(&r.out[1]).query.as_deref(), Some("SELECT ?"));
        assert_eq!(r.conn.stats().sync_lost, 1);
    }

    #[test]
    fn continuation_packets_are_not_interpreted() {
        // A row of 0xFFFFFF octets continues in a packet that starts with 0xFE.
        let mut row = vec![0u8; MAX_PACKET as usize];
        row[0] = 0xfe;
        let mut first = packet(2, &[]);
        first[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
        first.extend(&row);
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com_query("SELECT doc FROM huge")));
        steps.push(sv(packets(
            1,
            &[lenenc_int(1), column_def("doc"), eof_payload(2)],
        )
        .into_iter()
        .chain(first.clone())
        .collect()));
        steps[4].captured = Some(1024);
        steps.push(sv(cat(&[
            packet(5, &[0xfe, 1, 2]),
            packet(6, &eof_payload(2)),
        ])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.out[0].end_ns, 60);
        assert!(!r.out[0].flags.incomplete);
        assert_eq!(r.conn.stats().sync_lost, 0);
    }

    #[test]
    fn joined_midway() {
        let steps = vec![
            cl(b"ROM t WHERE x = 1".to_vec()),
            sv(packets(3, &[text_row(&[b"a"]), eof_payload(2)])),
            cl(com_query("UPDATE t SET a = 2")),
            sv(ok(1, 1, 2)),
            cl(com_execute(5)),
            sv(ok(1, 1, 2)),
        ];
        let r = run_cut(Role::Client, true, &steps, None);
        assert_eq!(r.out.len(), 2);
        assert_eq!(db(&r.out[0]).operation.as_deref(), Some("UPDATE"));
        assert_eq!(db(&r.out[0]).namespace, None);
        assert!(r.out[1].flags.partial);
    }

    #[test]
    fn close_flushes_incomplete() {
        let mut steps = login(BASE_CAPS);
        steps.push(cl(com_query("SELECT SLEEP(10)")));
        steps.push(cl(com(0x0e, &[])));
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 1);
        assert!(r.out[0].flags.incomplete);
        assert_eq!(r.out[0].end_ns, 10_000);
    }

    #[test]
    fn pending_is_bounded() {
        let mut steps = login(BASE_CAPS);
        for i in 0..100 {
            steps.push(cl(com_query(&format!("INSERT INTO t VALUES ({i})"))));
        }
        let r = run(Role::Client, &steps);
        assert_eq!(r.out.len(), 100);
        assert_eq!(r.conn.stats().dropped, 100 - MAX_PENDING as u64);
        assert!(r.out.iter().all(|e| e.flags.incomplete));
    }

    #[test]
    fn statements_are_bounded() {
        let mut steps = login(BASE_CAPS);
        for i in 0..1000u32 {
            steps.push(cl(com(0x16, format!("SELECT * FROM t{i}").as_bytes())));
            steps.push(sv(packets(1, &[prepare_ok(i, 0, 0)])));
        }
        steps.push(cl(com_execute(0)));
        steps.push(sv(ok(1, 0, 2)));
        steps.push(cl(com_execute(999)));
        steps.push(sv(ok(1, 0, 2)));
        let mut conn = MysqlConnection::new(Role::Client, false);
        let mut out = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let seg = Segment {
                direction: testing::direction(Role::Client, s.request),
                ts_ns: i as u64,
                data: &s.bytes,
                total_len: s.bytes.len() as u64,
                extents: Extents::EMPTY,
            };
            conn.on_segment(&seg, &mut out);
            conn.check_bounds();
        }
        assert_eq!(conn.statements(), MAX_STATEMENTS);
        assert_eq!(out.len(), 2);
        assert!(out[0].flags.partial);
        assert_eq!(db(&out[1]).collection.as_deref(), Some("t999"));
    }

    #[test]
    fn compressed_protocol_is_ignored() {
        let caps = BASE_CAPS | 0x20;
        let mut steps = login(caps);
        steps.push(cl(vec![9, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
        let r = run(Role::Client, &steps);
        assert!(r.out.is_empty());
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
        assert_eq!(r.conn.stats().malformed, 0);
    }

    #[test]
    fn rejects_what_is_not_mysql() {
        for (client, first) in [
            (true, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            (true, b"POST /a HTTP/1.1\r\n".to_vec()),
            (true, vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3]),
            (false, b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
            (false, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
            (false, b"+OK\r\n".to_vec()),
            (false, packet(1, b"\x0a5.7\0")),
        ] {
            let s = if client {
                cl(first.clone())
            } else {
                sv(first.clone())
            };
            let r = run(Role::Client, &[s.clone(), s]);
            assert_eq!(r.verdicts, [Verdict::Reject, Verdict::Reject], "{first:?}");
            let steps: Vec<Step> = first
                .iter()
                .map(|b| if client { cl(vec![*b]) } else { sv(vec![*b]) })
                .collect();
            let r = run(Role::Client, &steps);
            assert_eq!(
                r.verdicts.last(),
                Some(&Verdict::Reject),
                "{first:?} byte by byte"
            );
        }
    }

    #[test]
    fn command_as_first_bytes_followed_as_midway() {
        let steps = vec![
            cl(com_query("SELECT 1")),
            sv(packets(1, &result_set(1, 1, false, false, 2))),
        ];
        let r = run(Role::Server, &steps);
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.conn.stats().heuristics, 1);
    }

    #[test]
    fn detection() {
        use Direction::{Egress, Ingress};
        let c = Role::Client;
        let s = Role::Server;
        let g = greeting("8.0.36", BASE_CAPS, 0);
        assert_eq!(detect(c, Ingress, &g), Detected::Yes);
        assert_eq!(detect(s, Egress, &g), Detected::Yes);
        // mysql-connector-python reads the greeting's header alone first.
        assert_eq!(detect(c, Ingress, &g[..4]), Detected::Yes);
        assert_eq!(detect(c, Ingress, &g[..3]), Detected::No);
        assert_eq!(detect(c, Ingress, &packet(0, &[0; 8])[..4]), Detected::No);
        assert_eq!(
            detect(s, Egress, &greeting("10.6.4-MariaDB", BASE_CAPS, 0)),
            Detected::Yes
        );
        assert_eq!(
            detect(c, Egress, &g),
            Detected::No,
            "a greeting from the client"
        );
        let hr = handshake_response(1, BASE_CAPS, 0, "u", Some("d"));
        assert_eq!(detect(c, Egress, &hr), Detected::Yes);
        assert_eq!(detect(s, Ingress, &ssl_request(BASE_CAPS)), Detected::Yes);
        let plaintext = handshake_response(2, BASE_CAPS | 0x800, 0, "u", None);
        assert_eq!(detect(c, Egress, &plaintext), Detected::Yes);
        // Responses first (a connection joined midway).
        assert_eq!(detect(c, Ingress, &ok(1, 1, 2)), Detected::Maybe);
        assert_eq!(
            detect(c, Ingress, &packets(1, &result_set(2, 1, false, false, 2))),
            Detected::Maybe
        );
        assert_eq!(
            detect(
                s,
                Egress,
                &packet(1, &err_payload(1146, "42S02", "no table"))
            ),
            Detected::Maybe
        );
        // A column count alone is too little to go on.
        assert_eq!(detect(s, Egress, &packet(1, &[2])), Detected::No);
        assert_eq!(detect(s, Egress, &packet(1, &[2, 0])), Detected::No);
        assert_eq!(
            detect(s, Egress, &cat(&[packet(1, &[2]), packet(2, b"\x03abc")])),
            Detected::No
        );
        assert_eq!(detect(c, Egress, &com_query("SELECT 1")), Detected::Maybe);
        assert_eq!(detect(s, Ingress, &com_execute(1)), Detected::Maybe);
        assert_eq!(detect(c, Egress, &com(0x0e, &[])), Detected::Maybe);
        assert_eq!(
            detect(
                c,
                Ingress,
                &packet(0, &err_payload(1040, "08004", "Too many connections"))
            ),
            Detected::Maybe
        );
        assert_eq!(detect(c, Egress, &com(0x0e, &[1])), Detected::No);
        assert_eq!(detect(c, Egress, &packet(1, b"\x03SELECT 1")), Detected::No);
        testing::assert_rejects_other_protocols(detect);
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        let pieces: Vec<Vec<u8>> = vec![
            greeting("8.0.36", BASE_CAPS | 0x0100_0000, 0),
            handshake_response(1, BASE_CAPS | 0x0800_0000, 0, "u", Some("d")),
            ok(2, 0, 2),
            com_query("SELECT 1"),
            com(0x16, b"SELECT ?"),
            com_execute(1),
            packets(1, &result_set(2, 2, false, false, 2)),
            packets(1, &result_set(1, 1, true, true, 8)),
            packet(1, &prepare_ok(1, 1, 1)),
            packet(1, &err_payload(1, "HY000", "x")),
            packet(1, b"\xfb"),
            vec![0xff, 0xff, 0xff, 0],
        ];
        testing::garbage_messages::<MysqlConnection>(0x2545_f491_4f6c_dd1d, &pieces, |e| {
            assert!(
                db(e)
                    .query
                    .as_ref()
                    .is_none_or(|q| q.len() <= sql::MAX_TEXT_LEN)
            );
        });
    }

    /// mysql-connector-python 26 (pure Python, prepared cursor) against MariaDB 10.11, as a TCP
    /// proxy received it (client `true`; the auth response zeroed).
    const CONNECTOR_PREPARED: &[(bool, &str)] = &[
        (
            false,
            concat!(
                "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b64656231327531000700",
                "00002e5f76537b32256100fef72d0200ff81150000000000001d0000003a3d65623d4b3f3a463265",
                "27006d7973716c5f6e61746976655f70617373776f726400",
            ),
        ),
        (
            true,
            concat!(
                "e30000010da23b00000000402d000000000000000000000000000000000000000000000061707000",
                "14000000000000000000000000000000000000000073686f70006d7973716c5f6e61746976655f70",
                "617373776f7264008e045f706964053139383337095f706c6174666f726d067838365f36340c5f73",
                "6f757263655f686f737402766d0c5f636c69656e745f6e616d65166d7973716c2d636f6e6e656374",
                "6f722d707974686f6e0f5f636c69656e745f6c6963656e73650747504c2d322e300f5f636c69656e",
                "745f76657273696f6e0732362e31302e30035f6f730944656269616e2d3132",
            ),
        ),
        (false, "0700000200000002000000"),
        (
            true,
            concat!(
                "3100000003534554204e414d45532027757466386d62342720434f4c4c4154452027757466386d62",
                "345f67656e6572616c5f636927",
            ),
        ),
        (false, "0700000100000002000000"),
        (
            true,
            "1f0000000353455420404073657373696f6e2e6175746f636f6d6d6974203d204f4646",
        ),
        (false, "0700000100000000000000"),
        (true, "010000000e"),
        (false, "0700000100000000000000"),
        (
            true,
            "240000001653454c454354206e616d652046524f4d206974656d73205748455245206964203d203f",
        ),
        (
            false,
            concat!(
                "0c0000010001000000010001000000001700000203646566000000013f000c3f0000000000068000",
                "00000005000003fe000000002c000004036465660473686f70056974656d73056974656d73046e61",
                "6d65046e616d650c2d0020030000fd000000000005000005fe00000000",
            ),
        ),
        (true, "050000001a01000000"),
        (false, "0700000100000000000000"),
        (true, "0f000000170100000000010000000001018000"),
        (
            false,
            concat!(
                "01000001012c000002036465660473686f70056974656d73056974656d73046e616d65046e616d65",
                "0c2d0020030000fd000000000005000003fe0000010005000004fe00000100",
            ),
        ),
        (true, "050000001a01000000"),
        (false, "0700000100000001000000"),
        (true, "0f000000170100000000010000000001018001"),
        (
            false,
            concat!(
                "01000001012c000002036465660473686f70056974656d73056974656d73046e616d65046e616d65",
                "0c2d0020030000fd000000000005000003fe000001000a0000040000076170706c65277305000005",
                "fe00000100",
            ),
        ),
        (true, "050000001a01000000"),
        (false, "0700000100000001000000"),
        (true, "0f000000170100000000010000000001018002"),
        (
            false,
            concat!(
                "01000001012c000002036465660473686f70056974656d73056974656d73046e616d65046e616d65",
                "0c2d0020030000fd000000000005000003fe0000010005000004fe00000100",
            ),
        ),
        (true, "050000001901000000"),
        (
            true,
            "2000000016494e5345525420494e544f206974656d732056414c55455320283f2c203f29",
        ),
        (
            false,
            concat!(
                "0c0000010002000000000002000000001700000203646566000000013f000c3f0000000000068000",
                "0000001700000303646566000000013f000c3f000000000006800000000005000004fe00000100",
            ),
        ),
        (true, "050000001a02000000"),
        (false, "0700000100000001000000"),
        (true, "130000001702000000000100000000010180fe004d0170"),
        (false, "0700000100010001000000"),
        (true, "050000001a02000000"),
        (false, "0700000100000001000000"),
        (true, "130000001702000000000100000000010180fe004d0170"),
        (
            false,
            concat!(
                "2f000001ff26042332333030304475706c696361746520656e747279202737372720666f72206b65",
                "7920275052494d41525927",
            ),
        ),
        (true, "0500000019020000000100000001"),
    ];

    #[test]
    fn real_connector_prepared() {
        let steps: Vec<Step> = CONNECTOR_PREPARED
            .iter()
            .map(|(c, h)| if *c { cl(hex(h)) } else { sv(hex(h)) })
            .collect();
        let out = run_all_ways(&steps);
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                let d = db(e);
                (
                    e.start_ns,
                    d.operation.clone(),
                    d.collection.clone(),
                    d.status_code.clone(),
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            got,
            [
                (40, s("SET"), None, None),
                (60, s("SET"), None, None),
                (140, s("SELECT"), s("items"), None),
                (180, s("SELECT"), s("items"), None),
                (220, s("SELECT"), s("items"), None),
                (290, s("INSERT"), s("items"), None),
                (330, s("INSERT"), s("items"), s("1062")),
            ]
        );
        assert!(out.iter().all(|e| db(e).system == DbSystem::Mariadb));
        assert!(
            out.iter()
                .all(|e| db(e).namespace.as_deref() == Some("shop"))
        );
        assert_eq!(
            db(&out[2]).query.as_deref(),
            Some("SELECT name FROM items WHERE id = ?")
        );
    }
}
