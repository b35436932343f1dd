//! Per-connection state: which protocol a connection speaks, its parser, and what is known
//! about its endpoints.
//!
//! A connection's protocol is decided from its first bytes, not its port: the HTTP/2 preface or
//! HTTP/2 frame shapes select the HTTP/2 parser, anything else goes to the HTTP/1 parser, which
//! rejects non-HTTP bytes (TLS, Redis, garbage). Rejected connections are dropped here and in
//! the kernel, and counted.

use std::net::SocketAddr;

use crate::protocol::{
    Direction, Exchange, Role, Segment,
    http1::{Http1Connection, Verdict},
    http2::{self, Http2Connection, Verdict2},
};

/// What is known about a connection's endpoints.
#[derive(Clone, Debug, Default)]
pub struct ConnMeta {
    pub tgid: u32,
    /// The peer (the client for server spans, the server for client spans).
    pub peer: Option<SocketAddr>,
    /// The local listening port for server connections.
    pub local_port: Option<u16>,
    /// The local address, where the capture reported it (the socket-level backends do).
    pub local: Option<SocketAddr>,
}

/// Keys here are kernel-made ids, pids and socket addresses: foldhash is several times
/// faster than SipHash on them and still seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Connections idle for this long are dropped from the table (their kernel entry too).
pub const IDLE_TIMEOUT_NS: u64 = 15 * 60 * 1_000_000_000;
/// Hard bound on tracked connections; past it the least recently active are evicted.
pub const MAX_CONNECTIONS: usize = 65_536;

enum Parser {
    /// No data seen yet.
    Detect,
    Http1(Box<Http1Connection>),
    Http2(Box<Http2Connection>),
}

struct Conn {
    meta: ConnMeta,
    fd: u32,
    /// Open file descriptors referring to the connection (`dup` adds one, `close` removes
    /// one); the connection ends with the last.
    fds: u32,
    role: Role,
    joined_midway: bool,
    last_ns: u64,
    parser: Parser,
}

/// What the caller must do after feeding data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataOutcome {
    Continue,
    /// Not HTTP: the caller stops capturing the connection `(tgid, fd)` in the kernel.
    Drop {
        tgid: u32,
        fd: u32,
    },
}

/// A finished exchange with its connection's identity.
pub struct Finished {
    pub role: Role,
    pub meta: ConnMeta,
    pub exchange: Exchange,
}

/// Parse failures so far on one connection: (HTTP/1: lost framing or oversized heads,
/// HTTP/2: lost frame sync, HPACK and protocol errors).
fn parse_errors(p: &Parser) -> (u64, u64) {
    match p {
        Parser::Detect => (0, 0),
        Parser::Http1(h) => (h.stats.resyncs + h.stats.head_overflows, 0),
        Parser::Http2(h) => {
            let c = h.counters();
            (0, c.sync_lost + c.hpack_errors + c.protocol_errors)
        }
    }
}

/// Connection ids whose close was seen lately, remembered to recognise a second close
/// attributed to one of them (see [`Connections::close_owner`]).
const RECENTLY_CLOSED: usize = 1024;

#[derive(Default)]
pub struct Connections {
    conns: HashMap<u64, Conn>,
    scratch: Vec<Exchange>,
    /// Ring of the last [`RECENTLY_CLOSED`] closed ids (0 = empty slot) and its next slot.
    closed: Vec<u64>,
    closed_next: usize,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connection's (local, peer) addresses, where the capture reported both.
    pub fn addrs(&self, conn_id: u64) -> Option<(SocketAddr, SocketAddr)> {
        let m = &self.conns.get(&conn_id)?.meta;
        Some((m.local?, m.peer?))
    }

    /// Start following a connection. `joined_midway`: it existed before the daemon started,
    /// so the first bytes seen may be in the middle of a message.
    pub fn open(
        &mut self,
        conn_id: u64,
        fd: u32,
        role: Role,
        meta: ConnMeta,
        joined_midway: bool,
        now_ns: u64,
    ) -> Vec<(u32, u32, u64)> {
        let evicted = if self.conns.len() >= MAX_CONNECTIONS {
            self.evict_oldest(MAX_CONNECTIONS / 64)
        } else {
            Vec::new()
        };
        self.conns.insert(
            conn_id,
            Conn {
                meta,
                fd,
                fds: 1,
                role,
                joined_midway,
                last_ns: now_ns,
                parser: Parser::Detect,
            },
        );
        evicted
    }

    fn evict_oldest(&mut self, n: usize) -> Vec<(u32, u32, u64)> {
        let mut by_age: Vec<(u64, u64)> =
            self.conns.iter().map(|(id, c)| (c.last_ns, *id)).collect();
        by_age.sort_unstable();
        by_age
            .into_iter()
            .take(n)
            .filter_map(|(_, id)| self.conns.remove(&id).map(|c| (c.meta.tgid, c.fd, id)))
            .collect()
    }

    /// Feed one data event. `role_hint` is used for connections the daemon never saw open.
    #[expect(clippy::too_many_arguments, reason = "the fields of one kernel event")]
    pub fn data(
        &mut self,
        conn_id: u64,
        tgid: u32,
        fd: u32,
        role_hint: Option<Role>,
        seg: &Segment<'_>,
        out: &mut Vec<Finished>,
        stats: &crate::stats::Stats,
    ) -> DataOutcome {
        let conn = self.conns.entry(conn_id).or_insert_with(|| {
            // Opened before we were ready (or evicted and back): follow from the next request.
            let role = role_hint.unwrap_or(match seg.direction {
                Direction::Ingress => Role::Server,
                Direction::Egress => Role::Client,
            });
            Conn {
                meta: ConnMeta {
                    tgid,
                    ..Default::default()
                },
                fd,
                fds: 1,
                role,
                joined_midway: true,
                last_ns: seg.ts_ns,
                parser: Parser::Detect,
            }
        });
        conn.last_ns = seg.ts_ns;
        if matches!(conn.parser, Parser::Detect) {
            conn.parser = if http2::looks_like_http2(seg.data) {
                Parser::Http2(Box::new(Http2Connection::new(
                    conn.role,
                    conn.joined_midway,
                )))
            } else {
                Parser::Http1(Box::new(Http1Connection::new(
                    conn.role,
                    conn.joined_midway,
                )))
            };
        }
        let errors_before = parse_errors(&conn.parser);
        let ex = &mut self.scratch;
        ex.clear();
        let drop = match &mut conn.parser {
            Parser::Detect => unreachable!("set above"),
            Parser::Http1(p) => match p.on_segment(seg, ex) {
                Verdict::Continue => false,
                Verdict::NotHttp => true,
                Verdict::SwitchToHttp2 => {
                    let upgrade = p.take_h2c_upgrade();
                    let mut h2 = match &upgrade {
                        Some(u) => {
                            Box::new(Http2Connection::upgraded(conn.role, u.request.clone()))
                        }
                        None => Box::new(Http2Connection::new(conn.role, false)),
                    };
                    if seg.data.starts_with(b"PRI * HTTP/2.0") {
                        // With prior knowledge the preface is in this very segment: the HTTP/2
                        // parser takes it from the start.
                        let _ = h2.on_segment(seg, ex);
                    } else if let Some(off) = upgrade.and_then(|u| u.http2_offset) {
                        // After an h2c upgrade the server's HTTP/2 bytes (its SETTINGS, often
                        // the response to the upgrade request) may follow the 101 head in the
                        // same segment.
                        let rest = Segment {
                            data: &seg.data[off.min(seg.data.len())..],
                            total_len: seg.total_len.saturating_sub(off as u64),
                            extents: seg.extents.after(off as u64),
                            ..*seg
                        };
                        if rest.total_len > 0 {
                            let _ = h2.on_segment(&rest, ex);
                        }
                    }
                    conn.parser = Parser::Http2(h2);
                    false
                }
            },
            Parser::Http2(p) => matches!(p.on_segment(seg, ex), Verdict2::NotHttp2),
        };
        let errors_after = parse_errors(&conn.parser);
        crate::stats::Stats::add(
            &stats.http1_parse_errors,
            errors_after.0.saturating_sub(errors_before.0),
        );
        crate::stats::Stats::add(
            &stats.http2_parse_errors,
            errors_after.1.saturating_sub(errors_before.1),
        );
        for exchange in ex.drain(..) {
            out.push(Finished {
                role: conn.role,
                meta: conn.meta.clone(),
                exchange,
            });
        }
        if drop {
            crate::stats::Stats::inc(&stats.connections_not_http);
            let fd = conn.fd;
            self.conns.remove(&conn_id);
            return DataOutcome::Drop { tgid, fd };
        }
        DataOutcome::Continue
    }

    /// Another fd now refers to the connection.
    pub fn dup(&mut self, conn_id: u64) {
        if let Some(c) = self.conns.get_mut(&conn_id) {
            c.fds = c.fds.saturating_add(1);
        }
    }

    /// The connection a kernel `close` of `(tgid, fd)` attributed to `conn_id` really ends, and
    /// whether its kernel entry must be removed by the daemon.
    ///
    /// The kernel counts, on a connection accepted on an fd whose previous `close` had not
    /// returned yet, the closes still to come for earlier connections
    /// (`ConnInfo::fd_state`) so that they are not taken for it, and settles a `close` exit
    /// and an `accept` exit racing on two CPUs by atomic exchange. A second close of a
    /// connection closed moments ago would mean a close reported under the wrong id (a
    /// connection-map entry updated by the daemon in between, see `Capture::remove_conn`):
    /// it belongs to the connection now open on the same fd.
    pub fn close_owner(&self, conn_id: u64, tgid: u32, fd: u32) -> (u64, bool) {
        if self.conns.contains_key(&conn_id) || !self.closed.contains(&conn_id) {
            return (conn_id, false);
        }
        match self
            .conns
            .iter()
            .find(|(_, c)| c.meta.tgid == tgid && c.fd == fd)
        {
            Some((&id, _)) => (id, true),
            None => (conn_id, false),
        }
    }

    fn remember_closed(&mut self, conn_id: u64) {
        if self.closed.len() < RECENTLY_CLOSED {
            self.closed.push(conn_id);
        } else {
            self.closed[self.closed_next] = conn_id;
            self.closed_next = (self.closed_next + 1) % RECENTLY_CLOSED;
        }
    }

    /// One of the connection's fds was closed; with the last one, flush what its parser
    /// holds.
    pub fn close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<Finished>) {
        match self.conns.get_mut(&conn_id) {
            Some(c) if c.fds > 1 => {
                c.fds -= 1;
                return;
            }
            Some(_) => {}
            None => return,
        }
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        self.remember_closed(conn_id);
        let ex = &mut self.scratch;
        ex.clear();
        match &mut conn.parser {
            Parser::Detect => {}
            Parser::Http1(p) => p.on_close(ts_ns, ex),
            Parser::Http2(p) => p.on_close(ts_ns, ex),
        }
        for exchange in ex.drain(..) {
            out.push(Finished {
                role: conn.role,
                meta: conn.meta.clone(),
                exchange,
            });
        }
    }

    /// Forget every connection of a process that exited (its fds are gone; nothing to flush
    /// that the kernel did not already report). Returns their `(tgid, fd, conn_id)`: the
    /// kernel does not see fds closed by exit, so their entries must go too.
    pub fn remove_process(&mut self, tgid: u32) -> Vec<(u32, u32, u64)> {
        let mut gone = Vec::new();
        self.conns.retain(|id, c| {
            let keep = c.meta.tgid != tgid;
            if !keep {
                gone.push((c.meta.tgid, c.fd, *id));
            }
            keep
        });
        gone
    }

    /// Drop connections idle since before `now_ns - IDLE_TIMEOUT_NS`; returns their
    /// `(tgid, fd, conn_id)` so the kernel entries go too.
    pub fn expire_idle(&mut self, now_ns: u64) -> Vec<(u32, u32, u64)> {
        let cutoff = now_ns.saturating_sub(IDLE_TIMEOUT_NS);
        let mut gone = Vec::new();
        self.conns.retain(|id, c| {
            let keep = c.last_ns >= cutoff;
            if !keep {
                gone.push((c.meta.tgid, c.fd, *id));
            }
            keep
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(tgid: u32) -> ConnMeta {
        ConnMeta {
            tgid,
            peer: None,
            local_port: Some(8080),
            local: None,
        }
    }

    #[test]
    fn a_second_close_of_a_closed_connection_ends_the_one_now_on_its_fd() {
        let mut c = Connections::new();
        let mut out = Vec::new();
        c.open(1, 7, Role::Server, meta(10), false, 0);
        c.open(5, 7, Role::Server, meta(11), false, 0);
        // Ordinary close: its own connection.
        assert_eq!(c.close_owner(1, 10, 7), (1, false));
        c.close(1, 1, &mut out);
        // The race: connection 2 took fd 7 with a stale "previous close pending" mark, so
        // its own close comes back attributed to 1.
        c.open(2, 7, Role::Server, meta(10), false, 2);
        assert_eq!(c.close_owner(1, 10, 7), (2, true));
        // Same fd number in another process, or an id never seen: left as reported.
        assert_eq!(c.close_owner(1, 12, 7), (1, false));
        assert_eq!(c.close_owner(99, 10, 7), (99, false));
        c.close(2, 3, &mut out);
        assert_eq!(
            c.close_owner(1, 10, 7),
            (1, false),
            "nothing open on the fd"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn recently_closed_ids_are_bounded() {
        let mut c = Connections::new();
        let mut out = Vec::new();
        for id in 1..=(RECENTLY_CLOSED as u64 * 3) {
            c.open(id, 3, Role::Client, meta(1), false, 0);
            c.close(id, 0, &mut out);
        }
        assert_eq!(c.closed.len(), RECENTLY_CLOSED);
        c.open(10_000, 3, Role::Client, meta(1), false, 0);
        // The newest are remembered, the oldest forgotten.
        assert_eq!(
            c.close_owner(RECENTLY_CLOSED as u64 * 3, 1, 3),
            (10_000, true)
        );
        assert_eq!(c.close_owner(1, 1, 3), (1, false));
    }
}
