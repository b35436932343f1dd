//! The input of the segment-sequence fuzz targets (http1, postgres, mysql, redis, memcached)
//! and its replay as the capture layer hands segments to a parser. One decoder for all of
//! them, so that a corpus input means the same to each and a fix to the layout lands in every
//! target. A target includes it with `#[path = "common/segments.rs"] mod segments;` (only the
//! files listed as `[[bin]]` in Cargo.toml are targets).
//!
//! Input layout: one config byte, then segments. Config: bit 0 role (client/server), bit 1
//! joined midway, bits 2..5 the capture bound. Each segment: a header byte (bit 7 direction,
//! bit 6 close the connection before it, bit 5 add unseen bytes, bits 0..4 high length bits),
//! a low length byte, an optional extra-unseen byte, then the segment's bytes.

use std::fmt::Debug;

use super::protocol::{Direction, Extents, Role, Segment, Verdict};

/// The capture bounds config bits 2..5 select (`usize::MAX`: segments captured whole).
const BOUNDS: [usize; 8] = [usize::MAX, 8, 16, 33, 64, 256, 1024, 4096];

/// The config byte.
#[derive(Clone, Copy)]
pub struct Config {
    pub role: Role,
    pub midway: bool,
    /// Octets of each segment captured.
    pub bound: usize,
}

impl Config {
    fn new(cfg: u8) -> Self {
        Config {
            role: if cfg & 1 != 0 {
                Role::Client
            } else {
                Role::Server
            },
            midway: cfg & 2 != 0,
            bound: BOUNDS[usize::from(cfg >> 2) & 7],
        }
    }
}

/// One syscall's data as the input describes it.
pub struct Seg<'a> {
    pub dir: Direction,
    /// The connection closes before this segment (the parser must take no more bytes).
    pub close_before: bool,
    pub bytes: &'a [u8],
    /// Octets the syscall moved past `bytes` (never captured).
    pub extra: u64,
}

pub fn decode(mut d: &[u8]) -> Option<(Config, Vec<Seg<'_>>)> {
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
    Some((Config::new(cfg), segs))
}

/// What [`replay`] asks of the parser.
pub enum Call<'a> {
    Segment(Segment<'a>),
    /// `on_close` at this time.
    Close(u64),
}

/// Replays `segs` on one connection at times 1, 2, …: a close first where a segment asks for
/// one (once), each segment captured up to the bound with the kernel's 8-octet tail copy as
/// an extent, and a close after the last segment unless one came already. `one_byte` hands
/// each wholly captured segment over one octet per syscall.
pub fn replay(cfg: Config, segs: &[Seg<'_>], one_byte: bool, mut call: impl FnMut(Call<'_>)) {
    let mut closed = false;
    let mut ts = 0;
    for s in segs {
        ts += 1;
        if s.close_before && !closed {
            call(Call::Close(ts));
            closed = true;
        }
        let captured = s.bytes.len().min(cfg.bound);
        let total = s.bytes.len() as u64 + s.extra;
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
            call(Call::Segment(Segment {
                direction: s.dir,
                ts_ns: ts,
                data,
                total_len: if data.len() == captured {
                    total
                } else {
                    data.len() as u64
                },
                extents: Extents::new(&tail),
            }));
        }
    }
    if !closed {
        call(Call::Close(ts + 1));
    }
}

/// A final verdict (`Reject`, `SwitchToHttp2`) is given again for every later segment, which
/// yields no exchange. `emitted`: the exchanges the segment that gave `v` produced.
pub fn check_sticky(last: &mut Verdict, v: Verdict, emitted: usize) {
    if *last != Verdict::Continue {
        assert_eq!(v, *last, "a final verdict is sticky");
        assert_eq!(emitted, 0);
    }
    *last = v;
}

/// The differential check. `run(one_byte)` replays the input (see [`replay`]) and returns the
/// exchanges, the connection after its close and the last verdict. When the connection was
/// seen from its start, every octet was captured and the parser needed no heuristic
/// (`exact`), feeding each segment one octet per syscall must give the same verdict and
/// exchanges: where the segments are cut must not matter.
pub fn check_one_byte_feed<E: PartialEq + Debug, C>(
    cfg: Config,
    segs: &[Seg<'_>],
    run: impl Fn(bool) -> (Vec<E>, C, Verdict),
    exact: impl Fn(&C) -> bool,
) {
    let (out, conn, verdict) = run(false);
    let exact_input = !cfg.midway && cfg.bound == usize::MAX && segs.iter().all(|s| s.extra == 0);
    if exact_input && exact(&conn) && segs.len() <= 64 {
        let (out1, conn1, verdict1) = run(true);
        if exact(&conn1) {
            assert_eq!(verdict, verdict1);
            assert_eq!(out, out1);
        }
    }
}
