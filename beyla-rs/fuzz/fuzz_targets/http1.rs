//! Fuzzes the HTTP/1.x connection parser with arbitrary segment sequences.
//!
//! Input layout: see `common/segments.rs` (a config byte, then segments).
//!
//! Besides "never panics", it checks the parser's invariants, and, when no heuristic was
//! needed, that feeding the same bytes in one-byte segments gives the same exchanges.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/protocol"]
mod protocol {
    include!(concat!(env!("OUT_DIR"), "/protocol_types.rs"));
    pub mod http1;
}

#[path = "common/segments.rs"]
mod segments;

use protocol::Verdict;
use protocol::http1::{Http1Connection, MAX_PENDING, MAX_TARGET_LEN, MAX_VALUE_LEN};
use protocol::{HttpExchange, Protocol};
use segments::{Call, Config, Seg};

fn check(e: &HttpExchange) {
    assert_eq!(e.protocol, Some(Protocol::Http1));
    assert_eq!(e.stream_id, 0);
    assert!(e.end_ns >= e.start_ns, "{e:?}");
    assert!(e.target.len() <= MAX_TARGET_LEN);
    for v in [&e.authority, &e.content_type, &e.traceparent, &e.tracestate]
        .into_iter()
        .flatten()
    {
        assert!(v.len() <= MAX_VALUE_LEN);
    }
    assert!(
        e.status
            .is_none_or(|s| (100..=999).contains(&s) && !(100..200).contains(&s) || s == 101)
    );
    assert!(e.status.is_some() || e.flags.incomplete);
}

/// Runs the segments; `one_byte` feeds complete segments one byte at a time.
fn run(
    cfg: Config,
    segs: &[Seg<'_>],
    one_byte: bool,
) -> (Vec<HttpExchange>, Http1Connection, Verdict) {
    let mut conn = Http1Connection::new(cfg.role, cfg.midway);
    let mut out = Vec::new();
    let mut last = Verdict::Continue;
    segments::replay(cfg, segs, one_byte, |call| match call {
        Call::Close(ts) => conn.on_close(ts, &mut out),
        Call::Segment(seg) => {
            let before = out.len();
            let v = conn.on_segment(&seg, &mut out);
            segments::check_sticky(&mut last, v, out.len() - before);
            assert!(conn.pending() <= MAX_PENDING);
        }
    });
    assert_eq!(conn.pending(), 0, "close flushes everything");
    out.iter().for_each(check);
    (out, conn, last)
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, segs)) = segments::decode(data) else {
        return;
    };
    segments::check_one_byte_feed(
        cfg,
        &segs,
        |one_byte| run(cfg, &segs, one_byte),
        |c: &Http1Connection| c.stats.resyncs == 0 && c.stats.head_overflows == 0,
    );
});
