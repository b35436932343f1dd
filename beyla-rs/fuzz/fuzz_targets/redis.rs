//! Fuzzes the Redis connection parser with arbitrary segment sequences.
//!
//! Input layout: see `common/segments.rs` (a config byte, then segments).
//!
//! Besides "never panics", it checks the parser's invariants (times in order, bounded queue,
//! sticky rejection, close flushes everything, sizes never exceed the bytes fed, bounded
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
    pub mod redis;
    pub mod stream;
}

#[path = "common/db.rs"]
mod db;
#[path = "common/segments.rs"]
mod segments;

use protocol::redis::{MAX_KEY_LEN, MAX_NAME_LEN, MAX_PENDING, RedisConnection, detect};
use protocol::{DbSystem, Exchange, Parser, Role, Verdict};
use segments::{Config, Seg};

fn check(e: &Exchange) {
    assert!(e.end_ns >= e.start_ns, "{e:?}");
    let db = e.db().expect("a Db exchange");
    assert_eq!(db.system, DbSystem::Redis);
    assert_eq!(db.collection, None);
    if let Some(op) = &db.operation {
        assert!(!op.is_empty() && op.len() <= MAX_NAME_LEN);
        assert!(!op.bytes().any(|c| c.is_ascii_lowercase()));
    }
    // A lossy key may triple in size (U+FFFD for each invalid octet).
    let q = db.query.as_ref().map_or(0, String::len);
    assert!(q <= 2 * MAX_NAME_LEN + 3 * MAX_KEY_LEN + 2, "{q}");
    assert!(
        db.namespace
            .as_ref()
            .is_none_or(|n| n.parse::<u32>().is_ok())
    );
    assert!(
        db.status_code
            .as_ref()
            .is_none_or(|s| s.len() <= MAX_NAME_LEN)
    );
    assert!(db.status_code.is_none() || db.error);
    assert!(!(db.error && e.flags.incomplete));
}

/// Runs the segments; `one_byte` feeds complete segments one byte at a time.
fn run(cfg: Config, segs: &[Seg<'_>], one_byte: bool) -> (Vec<Exchange>, RedisConnection, Verdict) {
    let conn = RedisConnection::new(cfg.role, cfg.midway);
    let r = db::run(conn, cfg, segs, one_byte, RedisConnection::pending, |c| {
        assert!(c.pending() <= MAX_PENDING);
    });
    r.out.iter().for_each(check);
    assert!(r.out.iter().map(|e| e.request_size).sum::<u64>() <= r.req_bytes);
    assert!(r.out.iter().map(|e| e.response_size).sum::<u64>() <= r.resp_bytes);
    (r.out, r.conn, r.verdict)
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, segs)) = segments::decode(data) else {
        return;
    };
    for s in segs.iter().take(2) {
        for role in [Role::Client, Role::Server] {
            detect(role, s.dir, s.bytes);
        }
    }
    segments::check_one_byte_feed(
        cfg,
        &segs,
        |one_byte| run(cfg, &segs, one_byte),
        |c: &RedisConnection| c.parse_errors() == 0,
    );
});
