//! The harness the database parsers' unit tests share: segments built as the capture layer
//! builds them (the head up to a capture bound, the 8-octet tail copy as an extent), one
//! connection fed a segment at a time ([`Conv`]) or from a script of steps ([`run_cut`],
//! [`run_all_ways`]), and the garbage tests' generators and loops.
//!
//! It knows no parser: a parser's tests implement [`TestConn`] for their connection type.
//! Only `super::` paths, so that the development harnesses can mount it with the shared
//! protocol types alone. It is declared `pub mod testing;` with the `cfg` here rather than on
//! the declaration: the fuzz crate and the harnesses drop the `pub mod ` lines of `mod.rs`
//! (an attribute line above one would then land on the next item), and a harness that runs
//! the parsers' tests declares this module itself.
#![cfg(test)]

use std::fmt::Debug;

use super::{Db, Direction, Exchange, Extents, Parser, Role, Segment, Verdict};

/// A connection type the harness can drive.
pub(super) trait TestConn: Parser + Sized {
    /// The parser's constructor.
    fn open(role: Role, joined_midway: bool) -> Self;
    /// Commands or exchanges it still holds (none once closed).
    fn waiting(&self) -> usize;
    /// Asserts its memory bounds (checked after every segment and after the close).
    fn check_bounds(&self);
}

/// The direction a request (`request`) or a response travels in when the process has `role`.
pub(super) fn direction(role: Role, request: bool) -> Direction {
    match (request, role.request_direction()) {
        (true, d) => d,
        (false, Direction::Ingress) => Direction::Egress,
        (false, Direction::Egress) => Direction::Ingress,
    }
}

/// The raw extents of a syscall that moved `full` and was captured up to `captured` octets:
/// the kernel's copy of the last 8 octets, or nothing when the capture holds them all.
pub(super) fn tail_copy(full: &[u8], captured: usize) -> Vec<u8> {
    if captured < full.len() {
        let t = &full[full.len().saturating_sub(8)..];
        Extents::encode(&[((full.len() - t.len()) as u64, t)])
    } else {
        Vec::new()
    }
}

pub(super) fn db(e: &Exchange) -> &Db {
    e.db().expect("a Db exchange")
}

/// `db.operation.name`, or `""`.
pub(super) fn op(e: &Exchange) -> &str {
    db(e).operation.as_deref().unwrap_or("")
}

/// `db.query.text`, or `""`.
pub(super) fn query(e: &Exchange) -> &str {
    db(e).query.as_deref().unwrap_or("")
}

/// Octets written as hex digits (wire captures pasted into tests).
pub(super) fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

pub(super) fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// First bytes of other protocols (HTTP/1, HTTP/2, TLS) and none at all: no database parser
/// may claim them, in either direction and role.
pub(super) const OTHER_PROTOCOLS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\n",
    b"PUT /x HTTP/1.1\r\n",
    b"DELETE /x HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n",
    b"PATCH / HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"CONNECT a:443 HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    &[0x16, 3, 1, 0, 0x80],
    b"",
];

/// Asserts that `detect` says [`Detected::No`](super::Detected::No) to every one of
/// [`OTHER_PROTOCOLS`].
pub(super) fn assert_rejects_other_protocols(
    detect: fn(Role, Direction, &[u8]) -> super::Detected,
) {
    use Direction::{Egress, Ingress};
    let (c, s) = (Role::Client, Role::Server);
    for http in OTHER_PROTOCOLS {
        for (r, d) in [(c, Egress), (c, Ingress), (s, Egress), (s, Ingress)] {
            assert_eq!(
                detect(r, d, http),
                super::Detected::No,
                "{http:?} {r:?} {d:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One segment at a time.

/// One connection fed by a test, each call one segment at the next time stamp.
pub(super) struct Conv<P> {
    pub(super) conn: P,
    role: Role,
    out: Vec<Exchange>,
    ts: u64,
}

impl<P: TestConn> Conv<P> {
    pub(super) fn new(role: Role, midway: bool) -> Self {
        Conv {
            conn: P::open(role, midway),
            role,
            out: Vec::new(),
            ts: 0,
        }
    }

    pub(super) fn client() -> Self {
        Conv::new(Role::Client, false)
    }

    /// A segment holding the first `bound` octets of `full` and an 8-octet tail copy.
    pub(super) fn feed(&mut self, request: bool, full: &[u8], bound: usize) -> Verdict {
        self.ts += 1;
        let n = bound.min(full.len());
        let raw = tail_copy(full, n);
        let seg = Segment {
            direction: direction(self.role, request),
            ts_ns: self.ts,
            data: &full[..n],
            total_len: full.len() as u64,
            extents: Extents::new(&raw),
        };
        self.conn.on_segment(&seg, &mut self.out)
    }

    pub(super) fn cmd(&mut self, b: &[u8]) -> Verdict {
        self.feed(true, b, usize::MAX)
    }

    pub(super) fn reply(&mut self, b: &[u8]) -> Verdict {
        self.feed(false, b, usize::MAX)
    }

    pub(super) fn close(&mut self) {
        self.ts += 1;
        self.conn.on_close(self.ts, &mut self.out);
    }

    pub(super) fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts of steps.

/// One segment of a script: a request or a response, its octets, and how many of them were
/// captured (`None`: all).
#[derive(Clone)]
pub(super) struct Step {
    pub(super) request: bool,
    pub(super) bytes: Vec<u8>,
    pub(super) captured: Option<usize>,
}

/// A step in the request direction (PostgreSQL frontend, MySQL client).
pub(super) fn request(bytes: Vec<u8>) -> Step {
    Step {
        request: true,
        bytes,
        captured: None,
    }
}

/// A step in the response direction (PostgreSQL backend, MySQL server).
pub(super) fn response(bytes: Vec<u8>) -> Step {
    Step {
        request: false,
        bytes,
        captured: None,
    }
}

/// The step with only its first `captured` octets captured (and the tail copy).
pub(super) fn truncated(mut s: Step, captured: usize) -> Step {
    s.captured = Some(captured);
    s
}

/// What a script produced: the exchanges, the connection after its close, and the verdict of
/// every segment fed.
pub(super) struct Run<P> {
    pub(super) out: Vec<Exchange>,
    pub(super) conn: P,
    pub(super) verdicts: Vec<Verdict>,
}

/// Feeds step `i` at time `10 * (i + 1)` (`cut`: step `cut.0`, when wholly captured, as two
/// segments split at octet `cut.1`, same time), then closes at 10_000. Checks the bounds after
/// every segment and after the close, that the close leaves nothing waiting, and that no
/// exchange ends before it starts.
pub(super) fn run_cut<P: TestConn>(
    role: Role,
    midway: bool,
    steps: &[Step],
    cut: Option<(usize, usize)>,
) -> Run<P> {
    let mut conn = P::open(role, midway);
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let ts = 10 * (i as u64 + 1);
        let captured = s.captured.unwrap_or(s.bytes.len()).min(s.bytes.len());
        let tail_raw = tail_copy(&s.bytes, captured);
        let pieces: Vec<(&[u8], u64)> = match cut {
            Some((step, at)) if step == i && s.captured.is_none() && at <= s.bytes.len() => {
                let (a, b) = s.bytes.split_at(at);
                vec![(a, a.len() as u64), (b, b.len() as u64)]
            }
            _ => vec![(&s.bytes[..captured], s.bytes.len() as u64)],
        };
        for (data, total) in pieces {
            let seg = Segment {
                direction: direction(role, s.request),
                ts_ns: ts,
                data,
                total_len: total,
                extents: if total > data.len() as u64 {
                    Extents::new(&tail_raw)
                } else {
                    Extents::EMPTY
                },
            };
            verdicts.push(conn.on_segment(&seg, &mut out));
            conn.check_bounds();
        }
    }
    conn.on_close(10_000, &mut out);
    conn.check_bounds();
    assert_eq!(conn.waiting(), 0);
    for e in &out {
        assert!(e.start_ns <= e.end_ns, "{e:?}");
    }
    Run {
        out,
        conn,
        verdicts,
    }
}

/// The exchanges of `steps`, asserted to be the same whatever the role and wherever one wholly
/// captured step is cut in two; `stable` is what else of the connection must not depend on
/// the cut (its counters of lost framing, say).
pub(super) fn run_all_ways<P: TestConn, S: PartialEq + Debug>(
    steps: &[Step],
    stable: impl Fn(&P) -> S,
) -> Vec<Exchange> {
    let base = run_cut::<P>(Role::Client, false, steps, None);
    let other = run_cut::<P>(Role::Server, false, steps, None);
    assert_eq!(base.out, other.out, "roles differ");
    for (i, s) in steps.iter().enumerate() {
        if s.captured.is_some() {
            continue;
        }
        for at in 0..=s.bytes.len() {
            let r = run_cut::<P>(Role::Client, false, steps, Some((i, at)));
            assert_eq!(r.out, base.out, "step {i} cut at {at}");
            assert_eq!(stable(&r.conn), stable(&base.conn), "step {i} cut at {at}");
        }
    }
    base.out
}

// ---------------------------------------------------------------------------------------------
// Garbage.

/// A small deterministic generator (64-bit LCG, high bits) for the line protocols' garbage.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Feeds 3000 connections (both roles, some joined midway) up to 11 segments each of random
/// octets, random `alphabet` octets, or slices of a pipeline's `cmds` and `replies`, some with
/// a long run of `z` appended, captured up to a random bound, in random directions. Nothing
/// may panic; the bounds hold after every segment; the close leaves nothing waiting; every
/// exchange ends after it starts and passes `check`.
pub(super) fn garbage_pipelines<P: TestConn>(
    seed: u64,
    alphabet: &[u8],
    cmds: &[u8],
    replies: &[u8],
    check: impl Fn(&Exchange),
) {
    let mut rng = Lcg(seed);
    for round in 0..3000 {
        let midway = round % 3 == 0;
        let role = if round % 2 == 0 {
            Role::Client
        } else {
            Role::Server
        };
        let mut c = Conv::<P>::new(role, midway);
        for _ in 0..(rng.next() % 12) {
            let len = (rng.next() % 200) as usize;
            let mut buf: Vec<u8> = match rng.next() % 4 {
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                1 => (0..len)
                    .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                    .collect(),
                2 => {
                    let from = (rng.next() as usize) % cmds.len();
                    cmds[from..(from + len).min(cmds.len())].to_vec()
                }
                _ => {
                    let from = (rng.next() as usize) % replies.len();
                    replies[from..(from + len).min(replies.len())].to_vec()
                }
            };
            if rng.next().is_multiple_of(5) {
                buf.extend(std::iter::repeat_n(b'z', (rng.next() % 3000) as usize));
            }
            let bound = [8, 16, 64, 1024, usize::MAX][(rng.next() % 5) as usize];
            c.feed(rng.next().is_multiple_of(2), &buf, bound);
            c.conn.check_bounds();
        }
        c.close();
        assert_eq!(c.conn.waiting(), 0);
        for e in c.take() {
            assert!(e.end_ns >= e.start_ns);
            check(&e);
        }
    }
}

/// A small deterministic generator (xorshift64) for the message protocols' garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Feeds 3000 connections (both roles, some joined midway) a stream of real messages from
/// `pieces` (some with an octet changed) mixed with random octets, cut at random places into
/// segments of random direction, some captured only in part, some with unseen octets. Nothing
/// may panic; the bounds hold after every segment; the close leaves nothing waiting; every
/// exchange ends after it starts and passes `check`.
pub(super) fn garbage_messages<P: TestConn>(
    seed: u64,
    pieces: &[Vec<u8>],
    check: impl Fn(&Exchange),
) {
    let mut rng = Rng(seed);
    for round in 0..3000 {
        let role = if round % 2 == 0 {
            Role::Client
        } else {
            Role::Server
        };
        let mut conn = P::open(role, round % 3 == 0);
        let mut out = Vec::new();
        let mut stream = Vec::new();
        for _ in 0..rng.below(40) {
            if rng.below(4) == 0 {
                let n = rng.below(30) as usize;
                stream.extend((0..n).map(|_| rng.next() as u8));
            } else {
                let mut p = pieces[rng.below(pieces.len() as u64) as usize].clone();
                if rng.below(10) == 0 && !p.is_empty() {
                    let i = rng.below(p.len() as u64) as usize;
                    p[i] = rng.next() as u8;
                }
                stream.extend(p);
            }
        }
        let mut at = 0;
        let mut ts = 0;
        while at < stream.len() {
            let n = (1 + rng.below(200) as usize).min(stream.len() - at);
            let chunk = &stream[at..at + n];
            at += n;
            ts += 1 + rng.below(3);
            let cap = if rng.below(3) == 0 {
                rng.below(n as u64 + 1) as usize
            } else {
                n
            };
            let extra = if rng.below(5) == 0 {
                rng.below(100_000)
            } else {
                0
            };
            let tail = Extents::encode(&[(
                (n as u64 + extra).saturating_sub(8),
                &chunk[n.saturating_sub(8)..],
            )]);
            let seg = Segment {
                direction: if rng.below(2) == 0 {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                ts_ns: ts,
                data: &chunk[..cap],
                total_len: n as u64 + extra,
                extents: Extents::new(&tail),
            };
            let _ = conn.on_segment(&seg, &mut out);
            conn.check_bounds();
        }
        conn.on_close(ts + 1, &mut out);
        assert_eq!(conn.waiting(), 0);
        for e in &out {
            assert!(e.start_ns <= e.end_ns);
            check(e);
        }
    }
}
