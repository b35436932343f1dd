//! Fuzzes the MySQL connection parser with arbitrary segment sequences.
//!
//! Input layout: see `common/segments.rs` (a config byte, then segments).
//!
//! Besides "never panics", it checks the parser's invariants (times, bounded queues, maps and
//! buffers, close flushes everything, a rejection is final), and, when no heuristic was
//! needed (framing exact all along), that feeding the same bytes in one-byte segments gives
//! the same exchanges.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(
    dead_code,
    reason = "the shared protocol types include what only the other parsers use"
)]
#[path = "../../src/protocol"]
mod protocol {
    include!(concat!(env!("OUT_DIR"), "/protocol_types.rs"));
    pub mod mysql;
    pub mod sql;
    pub mod stream;
}

#[path = "common/db.rs"]
mod db;
#[path = "common/segments.rs"]
mod segments;

use protocol::mysql::{MAX_PENDING, MAX_STATEMENTS, MysqlConnection, detect};
use protocol::sql::{MAX_KEEP, MAX_TEXT_LEN};
use protocol::{Exchange, Role, Verdict};
use segments::{Config, Seg};

fn check(e: &Exchange) {
    assert!(e.end_ns >= e.start_ns, "{e:?}");
    let d = e.db().expect("a database exchange");
    assert!(d.query.as_ref().is_none_or(|q| q.len() <= MAX_TEXT_LEN));
    assert!(d.collection.as_ref().is_none_or(|c| c.len() <= 256));
    // MySQL error numbers are 16-bit.
    assert!(
        d.status_code
            .as_ref()
            .is_none_or(|c| c.parse::<u16>().is_ok())
    );
    assert!(d.status_code.is_none() || d.error);
    assert!(!e.flags.partial || d.operation.is_none());
}

fn check_conn(c: &MysqlConnection) {
    assert!(c.pending() <= MAX_PENDING);
    assert!(c.statements() <= MAX_STATEMENTS);
    assert!(c.buffered() <= 2 * MAX_KEEP);
}

/// Runs the segments; `one_byte` feeds complete segments one byte at a time.
fn run(cfg: Config, segs: &[Seg<'_>], one_byte: bool) -> (Vec<Exchange>, MysqlConnection, Verdict) {
    let conn = MysqlConnection::new(cfg.role, cfg.midway);
    let r = db::run(
        conn,
        cfg,
        segs,
        one_byte,
        MysqlConnection::pending,
        check_conn,
    );
    r.out.iter().for_each(check);
    (r.out, r.conn, r.verdict)
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, segs)) = segments::decode(data) else {
        return;
    };
    if let Some(s) = segs.first() {
        for role in [Role::Client, Role::Server] {
            let _ = detect(role, s.dir, s.bytes);
        }
    }
    // Exact framing all along: no heuristic, no lost or malformed message.
    segments::check_one_byte_feed(
        cfg,
        &segs,
        |one_byte| run(cfg, &segs, one_byte),
        |c: &MysqlConnection| {
            let s = c.stats();
            s.sync_lost + s.malformed + s.resyncs + s.heuristics == 0
        },
    );
});
