//! The run loop of the database fuzz targets (postgres, mysql, redis, memcached), which check
//! the same invariants of every [`Parser`]. A target includes it with
//! `#[path = "common/db.rs"] mod db;`, next to `common/segments.rs`.

use super::protocol::{Exchange, Parser, Verdict};
use super::segments::{self, Call, Config, Seg};

/// What [`run`] produced.
#[allow(
    dead_code,
    reason = "the SQL targets do not check sizes against the octets fed"
)]
pub struct Run<P> {
    pub out: Vec<Exchange>,
    /// The connection after its close.
    pub conn: P,
    /// The verdict on the last segment.
    pub verdict: Verdict,
    /// Octets fed before the close in the request direction, and in the response direction.
    pub req_bytes: u64,
    pub resp_bytes: u64,
}

/// Replays the segments on `conn` (see [`segments::replay`]) and checks: a final verdict is
/// sticky, never a switch to HTTP/2, `check_conn` (the parser's bounds) after every segment,
/// parse errors only grow, and after every close nothing is `waiting`.
pub fn run<P: Parser>(
    mut conn: P,
    cfg: Config,
    segs: &[Seg<'_>],
    one_byte: bool,
    waiting: impl Fn(&P) -> usize,
    check_conn: impl Fn(&P),
) -> Run<P> {
    let mut out = Vec::new();
    let mut last = Verdict::Continue;
    let mut closed = false;
    let (mut req_bytes, mut resp_bytes) = (0u64, 0u64);
    let mut errors = 0;
    segments::replay(cfg, segs, one_byte, |call| match call {
        Call::Close(ts) => {
            conn.on_close(ts, &mut out);
            assert_eq!(waiting(&conn), 0, "close flushes everything");
            closed = true;
        }
        Call::Segment(seg) => {
            if !closed {
                if seg.direction == cfg.role.request_direction() {
                    req_bytes += seg.total_len;
                } else {
                    resp_bytes += seg.total_len;
                }
            }
            let before = out.len();
            let v = conn.on_segment(&seg, &mut out);
            segments::check_sticky(&mut last, v, out.len() - before);
            assert_ne!(v, Verdict::SwitchToHttp2);
            check_conn(&conn);
            assert!(conn.parse_errors() >= errors, "parse errors only grow");
            errors = conn.parse_errors();
        }
    });
    Run {
        out,
        conn,
        verdict: last,
        req_bytes,
        resp_bytes,
    }
}
