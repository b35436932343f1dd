//! Fuzzes the HTTP/2 connection parser (frame reader, HPACK, stream state) with arbitrary
//! segment sequences in both directions.
//!
//! Input layout: a config byte (bit 0: role client, bit 1: joined mid-way), a capture-bound
//! selector byte, then records: a header byte (bit 0: written by the server, bit 1: a byte
//! follows the length giving extra uncaptured octets ×97, bit 2: call `on_close` first), a
//! big-endian u16 length, the bytes.
//!
//! Besides "never panics", it checks the parser's invariants and, when no heuristic was
//! involved (start of connection, full capture, no lost sync), that feeding every record one
//! octet per syscall gives exactly the same exchanges.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/protocol"]
mod protocol {
    include!(concat!(env!("OUT_DIR"), "/protocol_types.rs"));
    pub mod http2;
}

use protocol::http2::{Http2Connection, MAX_CONNECTION_MEMORY, MAX_STREAMS, MAX_TARGET_LEN};
use protocol::{Direction, Extents, HttpExchange, Role, Segment, Verdict};

const BOUNDS: [usize; 8] = [usize::MAX, 9, 16, 33, 64, 256, 1024, 4096];

struct Rec<'a> {
    server: bool,
    close_before: bool,
    extra: u64,
    bytes: &'a [u8],
}

fn parse(mut d: &[u8]) -> Vec<Rec<'_>> {
    let mut v = Vec::new();
    while d.len() >= 3 {
        let h = d[0];
        let len = usize::from(u16::from_be_bytes([d[1], d[2]]));
        d = &d[3..];
        let mut extra = 0;
        if h & 2 != 0 {
            let Some((&e, rest)) = d.split_first() else {
                break;
            };
            extra = u64::from(e) * 97;
            d = rest;
        }
        let n = len.min(d.len());
        v.push(Rec {
            server: h & 1 != 0,
            close_before: h & 4 != 0,
            extra,
            bytes: &d[..n],
        });
        d = &d[n..];
    }
    v
}

fn check(c: &Http2Connection, out: &[HttpExchange]) {
    assert!(
        c.memory_estimate() <= MAX_CONNECTION_MEMORY,
        "{}",
        c.memory_estimate()
    );
    assert!(c.open_streams() <= MAX_STREAMS);
    for e in out {
        assert!(e.end_ns >= e.start_ns);
        assert!(e.stream_id % 2 == 1);
        // Lossy UTF-8 can triple the octets kept.
        assert!(e.target.len() <= 3 * MAX_TARGET_LEN);
    }
}

/// Runs the records; `bytewise` splits each into one-octet syscalls.
fn run(
    role: Role,
    midway: bool,
    bound: usize,
    recs: &[Rec<'_>],
    bytewise: bool,
) -> (Vec<HttpExchange>, u64) {
    let mut c = Http2Connection::new(role, midway);
    let mut out = Vec::new();
    let req = role.request_direction();
    let mut not_http2 = false;
    for (i, r) in recs.iter().enumerate() {
        if r.close_before {
            c.on_close(i as u64, &mut out);
            assert_eq!(c.open_streams(), 0);
        }
        let direction = match (r.server, req) {
            (false, d) => d,
            (true, Direction::Ingress) => Direction::Egress,
            (true, Direction::Egress) => Direction::Ingress,
        };
        let cap = r.bytes.len().min(bound);
        let total = r.bytes.len() as u64 + r.extra;
        // The kernel's tail copy on HTTP/2 connections, as an extent ending the data.
        let tail = if (cap as u64) < total {
            let t = &r.bytes[r.bytes.len().saturating_sub(256)..];
            Extents::encode(&[(total - t.len() as u64, t)])
        } else {
            Vec::new()
        };
        let pieces: Vec<&[u8]> = if bytewise {
            r.bytes.chunks(1).collect()
        } else {
            vec![&r.bytes[..cap]]
        };
        for p in pieces {
            let seg = Segment {
                direction,
                ts_ns: i as u64,
                data: p,
                total_len: if bytewise { 1 } else { total },
                extents: if bytewise {
                    Extents::EMPTY
                } else {
                    Extents::new(&tail)
                },
            };
            let v = c.on_segment(&seg, &mut out);
            if not_http2 {
                assert_eq!(v, Verdict::Reject, "NotHttp2 is sticky");
            }
            not_http2 |= v == Verdict::Reject;
            check(&c, &out);
        }
    }
    c.on_close(u64::MAX, &mut out);
    assert_eq!(c.open_streams(), 0);
    check(&c, &out);
    (out, c.counters().sync_lost + u64::from(not_http2))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let role = if data[0] & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let midway = data[0] & 2 != 0;
    let bound = BOUNDS[usize::from(data[1] & 7)];
    let recs = parse(&data[2..]);
    let (whole, trouble) = run(role, midway, bound, &recs, false);
    let plain = !midway && bound == usize::MAX && recs.iter().all(|r| r.extra == 0);
    if plain && trouble == 0 {
        let (bytewise, _) = run(role, midway, bound, &recs, true);
        assert_eq!(whole, bytewise);
    }
});
