//! Fuzzes the memcached connection parser with arbitrary segment sequences.
//!
//! Input layout (as the HTTP/1 target): one config byte, then segments. Config: bit 0 role
//! (client/server), bit 1 joined midway, bits 2..5 the capture bound. Each segment: a header
//! byte (bit 7 direction, bit 6 close the connection before it, bit 5 add unseen bytes, bits
//! 0..4 high length bits), a low length byte, an optional extra-unseen byte, then the
//! segment's bytes.
//!
//! Besides "never panics", it checks the parser's invariants (times in order, bounded queue,
//! sticky rejection, close flushes everything, reply sizes never exceed the bytes fed, bounded
//! strings) and, when the capture was exact and no parse error occurred, that feeding the same
//! bytes in one-byte segments gives the same exchanges.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(
    dead_code,
    reason = "the shared types serve every parser; this target uses a few"
)]
#[path = "../../src/protocol"]
mod protocol {
    include!(concat!(env!("OUT_DIR"), "/protocol_types.rs"));
    pub mod memcached;
    pub mod redis;
}

use protocol::memcached::{MAX_PENDING, MAX_QUERY_LEN, MemcachedConnection, detect};
use protocol::{DbSystem, Direction, Exchange, Extents, Parser, Role, Segment, Verdict};

const BOUNDS: [usize; 8] = [usize::MAX, 8, 16, 33, 64, 256, 1024, 4096];

struct Seg<'a> {
    dir: Direction,
    close_before: bool,
    bytes: &'a [u8],
    extra: u64,
}

fn decode(mut d: &[u8]) -> Option<(u8, Vec<Seg<'_>>)> {
    let (&cfg, rest) = d.split_first()?;
    d = rest;
    let mut segs = Vec::new();
    while d.len() >= 2 {
        let h = d[0];
        let len = (usize::from(h & 0x1f) << 8 | usize::from(d[1])).min(d.len() - 2);
        d = &d[2..];
        let mut extra = 0;
        if h & 0x20 != 0 && !d.is_empty() {
            extra = u64::from(d[0]) * 61;
            d = &d[1..];
        }
        let len = len.min(d.len());
        segs.push(Seg {
            dir: if h & 0x80 != 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            close_before: h & 0x40 != 0,
            bytes: &d[..len],
            extra,
        });
        d = &d[len..];
    }
    Some((cfg, segs))
}

fn check(e: &Exchange) {
    assert!(e.end_ns >= e.start_ns, "{e:?}");
    let db = e.db().expect("a Db exchange");
    assert_eq!(db.system, DbSystem::Memcached);
    assert_eq!(db.collection, None);
    assert_eq!(db.namespace, None);
    if let Some(op) = &db.operation {
        assert!(!op.is_empty() && op.len() <= 32);
    }
    let q = db.query.as_ref().map_or(0, String::len);
    assert!(q <= MAX_QUERY_LEN, "{q}");
    let codes = ["ERROR", "CLIENT_ERROR", "SERVER_ERROR"];
    assert!(
        db.status_code
            .as_ref()
            .is_none_or(|s| codes.contains(&s.as_str()))
    );
    assert!(db.status_code.is_none() || db.error);
    assert!(!(db.error && e.flags.incomplete));
}

/// Runs the segments; `one_byte` feeds complete segments one byte at a time.
fn run(cfg: u8, segs: &[Seg<'_>], one_byte: bool) -> (Vec<Exchange>, MemcachedConnection, Verdict) {
    let role = if cfg & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let bound = BOUNDS[usize::from(cfg >> 2) & 7];
    let mut conn = MemcachedConnection::new(role, cfg & 2 != 0);
    let mut out = Vec::new();
    let mut last = Verdict::Continue;
    let mut closed = false;
    let mut ts = 0;
    let (mut req_bytes, mut resp_bytes) = (0u64, 0u64);
    let mut errors = 0;
    for s in segs {
        ts += 1;
        if s.close_before && !closed {
            conn.on_close(ts, &mut out);
            closed = true;
        }
        let captured = s.bytes.len().min(bound);
        let total = s.bytes.len() as u64 + s.extra;
        if !closed {
            if s.dir == role.request_direction() {
                req_bytes += total;
            } else {
                resp_bytes += total;
            }
        }
        // The kernel's 8-octet tail copy, as an extent at the end of the syscall's data.
        let tail = if (captured as u64) < total {
            let t = &s.bytes[s.bytes.len().saturating_sub(8)..];
            Extents::encode(&[(total - t.len() as u64, t)])
        } else {
            Vec::new()
        };
        let pieces: Vec<&[u8]> = if one_byte && (captured as u64) == total {
            s.bytes.chunks(1).collect()
        } else {
            vec![&s.bytes[..captured]]
        };
        for data in pieces {
            let seg = Segment {
                direction: s.dir,
                ts_ns: ts,
                data,
                total_len: if data.len() == captured {
                    total
                } else {
                    data.len() as u64
                },
                extents: Extents::new(&tail),
            };
            let before = out.len();
            let v = conn.on_segment(&seg, &mut out);
            if last != Verdict::Continue {
                assert_eq!(v, last, "a final verdict is sticky");
                assert_eq!(out.len(), before);
            }
            assert_ne!(v, Verdict::SwitchToHttp2);
            last = v;
            assert!(conn.pending() <= MAX_PENDING);
            assert!(conn.parse_errors() >= errors, "parse errors only grow");
            errors = conn.parse_errors();
        }
    }
    if !closed {
        conn.on_close(ts + 1, &mut out);
    }
    assert_eq!(conn.pending(), 0, "close flushes everything");
    out.iter().for_each(check);
    // Request sizes are not checked: a storage command's size is known from its line, before
    // its data block arrives (memcached may answer first).
    let _ = req_bytes;
    assert!(out.iter().map(|e| e.response_size).sum::<u64>() <= resp_bytes);
    (out, conn, last)
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, segs)) = decode(data) else {
        return;
    };
    for s in segs.iter().take(2) {
        for role in [Role::Client, Role::Server] {
            detect(role, s.dir, s.bytes);
        }
    }
    let (out, conn, verdict) = run(cfg, &segs, false);
    // Differential: with exact framing, segment boundaries must not matter.
    let exact = cfg & 2 == 0
        && BOUNDS[usize::from(cfg >> 2) & 7] == usize::MAX
        && segs.iter().all(|s| s.extra == 0)
        && conn.parse_errors() == 0;
    if exact && segs.len() <= 64 {
        let (out1, conn1, verdict1) = run(cfg, &segs, true);
        if conn1.parse_errors() == 0 {
            assert_eq!(verdict, verdict1);
            assert_eq!(out, out1);
        }
    }
});
