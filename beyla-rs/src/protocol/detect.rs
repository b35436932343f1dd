//! Which protocol a connection speaks, decided once from its first captured bytes (in either
//! direction: a MySQL server talks first), and the parser for it.
//!
//! Each protocol module offers a judgement of first bytes ([`Detected`]) and a constructor;
//! the table below lists them. `Yes` is unmistakable (a PostgreSQL startup message, a MySQL
//! greeting, a RESP array naming a known command); `Maybe` is plausible traffic of a
//! connection joined mid-way, and counts only on the protocol's usual port. HTTP/2 (preface or
//! frame shapes) is tried first; whatever no entry claims goes to the HTTP/1 parser, which
//! rejects bytes that are not HTTP. Adding a protocol is its module plus one line here.
//!
//! The HTTP/1 → HTTP/2 hand-over (`Upgrade: h2c`, or the prior-knowledge preface that the
//! HTTP/1 parser recognises) is decided here too: [`switch_to_http2`].

use super::{
    Detected, Direction, Exchange, Parser, Protocol, Role, Segment, http1::Http1Connection,
    http2::Http2Connection, memcached, mysql, postgres, redis,
};

/// One protocol the daemon can parse besides HTTP.
struct Entry {
    protocol: Protocol,
    /// Its usual server port: the tie-breaker for [`Detected::Maybe`].
    port: u16,
    detect: fn(Role, Direction, &[u8]) -> Detected,
    new: fn(Role, bool) -> Box<dyn Parser>,
}

/// The protocols recognised by their first bytes, in the order they are asked.
const TABLE: &[Entry] = &[
    Entry {
        protocol: Protocol::Postgres,
        port: postgres::DEFAULT_PORT,
        detect: postgres::detect,
        new: |role, midway| Box::new(postgres::PostgresConnection::new(role, midway)),
    },
    Entry {
        protocol: Protocol::Mysql,
        port: mysql::DEFAULT_PORT,
        detect: mysql::detect,
        new: |role, midway| Box::new(mysql::MysqlConnection::new(role, midway)),
    },
    Entry {
        protocol: Protocol::Redis,
        port: redis::DEFAULT_PORT,
        detect: redis::detect,
        new: |role, midway| Box::new(redis::RedisConnection::new(role, midway)),
    },
    Entry {
        protocol: Protocol::Memcached,
        port: memcached::DEFAULT_PORT,
        detect: memcached::detect,
        new: |role, midway| Box::new(memcached::MemcachedConnection::new(role, midway)),
    },
];

/// The parser for a connection whose first captured segment is `seg`. `server_port`: the
/// port of the connection's server end (the local port for servers, the peer's for clients).
pub fn detect(
    role: Role,
    seg: &Segment<'_>,
    server_port: Option<u16>,
    joined_midway: bool,
) -> Box<dyn Parser> {
    if super::http2::looks_like_http2(seg.data) {
        return Box::new(Http2Connection::new(role, joined_midway));
    }
    let judged = || {
        TABLE
            .iter()
            .map(|e| (e, (e.detect)(role, seg.direction, seg.data)))
    };
    let chosen = judged()
        .find(|(_, d)| *d == Detected::Yes)
        .or_else(|| judged().find(|(e, d)| *d == Detected::Maybe && server_port == Some(e.port)));
    match chosen {
        Some((e, _)) => {
            log::trace!("connection detected as {}", e.protocol.name());
            (e.new)(role, joined_midway)
        }
        None => Box::new(Http1Connection::new(role, joined_midway)),
    }
}

/// The HTTP/2 parser that takes over after `old` (HTTP/1) returned
/// [`super::Verdict::SwitchToHttp2`] on `seg`; the HTTP/2 bytes already in `seg` are fed to
/// it, their exchanges appended to `out`.
pub fn switch_to_http2(
    role: Role,
    old: &mut dyn Parser,
    seg: &Segment<'_>,
    out: &mut Vec<Exchange>,
) -> Box<dyn Parser> {
    let upgrade = old.take_upgrade();
    let mut h2: Box<dyn Parser> = match &upgrade {
        Some(u) => Box::new(Http2Connection::upgraded(role, u.request.clone())),
        None => Box::new(Http2Connection::new(role, false)),
    };
    if seg.data.starts_with(b"PRI * HTTP/2.0") {
        // With prior knowledge the preface is in this very segment: the HTTP/2 parser takes
        // it from the start.
        let _ = h2.on_segment(seg, out);
    } else if let Some(off) = upgrade.and_then(|u| u.http2_offset) {
        // After an h2c upgrade the server's HTTP/2 bytes (its SETTINGS, often the response to
        // the upgrade request) may follow the 101 head in the same segment.
        let rest = Segment {
            data: &seg.data[off.min(seg.data.len())..],
            total_len: seg.total_len.saturating_sub(off as u64),
            extents: seg.extents.after(off as u64),
            ..*seg
        };
        if rest.total_len > 0 {
            let _ = h2.on_segment(&rest, out);
        }
    }
    h2
}
