//! Per-connection state: which protocol a connection speaks, its parser, and what is known
//! about its endpoints.
//!
//! A connection's protocol is decided from its first bytes (`protocol::detect`; the port only
//! breaks ties); its parser is one `protocol::Parser`. Connections whose parser rejects them
//! (garbage, a protocol without a parser) are dropped here and in the kernel, and counted.
//!
//! TLS: the plaintext a TLS library's calls moved arrives flagged as such, on the connection
//! whose socket the library uses; from the first of it on, the connection's protocol is
//! decided on the plaintext and its socket bytes are ignored. Socket bytes that are TLS records
//! wait for that plaintext (the kernel ties a session to its connection during the handshake);
//! application data in TLS records with no plaintext means no probe covers the library (rustls,
//! …): the connection is dropped and counted as such.

use std::net::SocketAddr;

use crate::protocol::{Direction, Exchange, Kind, Parser, Role, Segment, Verdict, detect};

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

/// Whether a connection speaks TLS, as far as known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// No TLS record seen.
    No,
    /// TLS records on the socket, first in direction `from`, no plaintext yet; `answered`: the
    /// other direction started with a TLS record too.
    Encrypted { from: Direction, answered: bool },
    /// The library's plaintext arrives: it alone is parsed.
    Plaintext,
}

/// TLS record content types (RFC 8446 §5.1): change_cipher_spec, alert, handshake,
/// application_data, heartbeat.
const TLS_RECORD_TYPES: std::ops::RangeInclusive<u8> = 20..=24;
const TLS_APPLICATION_DATA: u8 = 23;

/// The content type of the TLS record `b` starts with (protocol version 3.x), if it does.
fn tls_record(b: &[u8]) -> Option<u8> {
    match b {
        [ty, 3, minor, ..] if TLS_RECORD_TYPES.contains(ty) && *minor <= 4 => Some(*ty),
        _ => None,
    }
}

/// `b` is a TLS record's start, or too short to tell: nginx peeks at the first octet of a
/// connection on a TLS port (`recv(…, 1, MSG_PEEK)`, to answer plain HTTP with an error).
fn tls_start(b: &[u8]) -> bool {
    match b {
        [ty] | [ty, 3] => TLS_RECORD_TYPES.contains(ty),
        _ => tls_record(b).is_some(),
    }
}

struct Conn {
    meta: ConnMeta,
    tls: Tls,
    fd: u32,
    /// Open file descriptors referring to the connection (`dup` adds one, `close` removes
    /// one); the connection ends with the last.
    fds: u32,
    role: Role,
    joined_midway: bool,
    last_ns: u64,
    /// `None` until the first bytes decide the protocol.
    parser: Option<Box<dyn Parser>>,
}

impl Conn {
    /// What the parser holds pending goes out (as incomplete where the response was not seen
    /// whole), as the connection ends at `ts_ns`; `scratch` is the table's reused buffer.
    fn flush(&mut self, ts_ns: u64, scratch: &mut Vec<Exchange>, out: &mut Vec<Finished>) {
        scratch.clear();
        if let Some(p) = &mut self.parser {
            p.on_close(ts_ns, scratch);
        }
        for exchange in scratch.drain(..) {
            out.push(Finished {
                role: self.role,
                meta: self.meta.clone(),
                exchange,
            });
        }
    }
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

/// Add the parse failures `parser` had since it counted `before` to its protocol's counter.
fn count_errors(stats: &crate::stats::Stats, parser: &dyn Parser, before: u64) {
    crate::stats::Stats::add(
        stats.parse_errors(parser.protocol()),
        parser.parse_errors().saturating_sub(before),
    );
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
                parser: None,
                tls: Tls::No,
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

    /// Feed one data event. `role_hint` is used for connections the daemon never saw open;
    /// `tls`: the segment is a TLS library's plaintext, not socket bytes; `after_loss`: the
    /// kernel lost bytes of the connection just before these.
    #[expect(clippy::too_many_arguments, reason = "the fields of one kernel event")]
    pub fn data(
        &mut self,
        conn_id: u64,
        tgid: u32,
        fd: u32,
        role_hint: Option<Role>,
        tls: bool,
        after_loss: bool,
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
                parser: None,
                tls: Tls::No,
            }
        });
        conn.last_ns = seg.ts_ns;
        // The process that moves a connection's bytes serves it: a forking server's child
        // (PostgreSQL's backends) after the parent accepted it, a worker the connection was
        // passed to. Its fd is the one the kernel entry to remove is under.
        if conn.meta.tgid != tgid {
            conn.meta.tgid = tgid;
            conn.fd = fd;
        }
        if tls {
            if conn.tls != Tls::Plaintext {
                // Whatever was parsed of the socket bytes is void: the plaintext starts with
                // the session's first application data.
                conn.tls = Tls::Plaintext;
                conn.parser = None;
                conn.joined_midway = false;
                crate::stats::Stats::inc(&stats.connections_tls);
            }
        } else {
            if conn.tls == Tls::No && conn.parser.is_none() && tls_start(seg.data) {
                conn.tls = Tls::Encrypted {
                    from: seg.direction,
                    answered: false,
                };
            }
            match conn.tls {
                Tls::No => {}
                Tls::Plaintext => return DataOutcome::Continue,
                Tls::Encrypted { .. } if tls_record(seg.data) == Some(TLS_APPLICATION_DATA) => {
                    crate::stats::Stats::inc(&stats.connections_tls_uncovered);
                    let fd = conn.fd;
                    self.conns.remove(&conn_id);
                    return DataOutcome::Drop { tgid, fd };
                }
                Tls::Encrypted {
                    from,
                    answered: false,
                } if seg.direction != from => {
                    if !tls_start(seg.data) {
                        // The peer answered in the clear (a ClientHello sent to a plaintext
                        // server): not a TLS connection.
                        crate::stats::Stats::inc(&stats.connections_not_http);
                        let fd = conn.fd;
                        self.conns.remove(&conn_id);
                        return DataOutcome::Drop { tgid, fd };
                    }
                    conn.tls = Tls::Encrypted {
                        from,
                        answered: true,
                    };
                    return DataOutcome::Continue;
                }
                Tls::Encrypted { .. } => return DataOutcome::Continue,
            }
        }
        if after_loss {
            // The bytes before these are gone: what the parser holds in flight goes out as
            // incomplete, and parsing starts over as on a connection joined mid-way (from the
            // next message that starts here or later) rather than misreading the rest.
            conn.flush(seg.ts_ns, &mut self.scratch, out);
            conn.parser = None;
            conn.joined_midway = true;
            crate::stats::Stats::inc(&stats.connections_resynced);
        }
        let role = conn.role;
        let server_port = match role {
            Role::Server => conn.meta.local_port,
            Role::Client => conn.meta.peer.map(|p| p.port()),
        };
        let parser = conn
            .parser
            .get_or_insert_with(|| detect::detect(role, seg, server_port, conn.joined_midway));
        let errors_before = parser.parse_errors();
        let ex = &mut self.scratch;
        ex.clear();
        let verdict = parser.on_segment(seg, ex);
        count_errors(stats, parser.as_ref(), errors_before);
        let drop = match verdict {
            Verdict::Continue => false,
            Verdict::Reject => true,
            Verdict::SwitchToHttp2 => {
                let h2 = detect::switch_to_http2(role, parser.as_mut(), seg, ex);
                count_errors(stats, h2.as_ref(), 0);
                conn.parser = Some(h2);
                false
            }
        };
        for mut exchange in ex.drain(..) {
            if conn.tls == Tls::Plaintext
                && let Kind::Http(h) = &mut exchange.kind
                && h.scheme.is_none()
            {
                h.scheme = Some("https".to_owned());
            }
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
        conn.flush(ts_ns, &mut self.scratch, out);
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

    fn seg(direction: Direction, ts_ns: u64, data: &[u8]) -> Segment<'_> {
        Segment {
            direction,
            ts_ns,
            data,
            total_len: data.len() as u64,
            extents: crate::protocol::Extents::new(&[]),
        }
    }

    const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03";
    const APP_DATA: &[u8] = b"\x17\x03\x03\x00\x20garbagegarbagegarbagegarbage1234";
    const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// Records lost in the kernel: the next one is flagged. The request in flight goes out
    /// incomplete, the bytes after the hole (the rest of a response, the middle of a request)
    /// are not taken for anything, and the next request on the connection is a span again;
    /// without the flag the same bytes make the connection "not HTTP".
    #[test]
    fn after_a_kernel_loss_the_connection_is_joined_anew() {
        use Direction::{Egress, Ingress};
        const MIDDLE: &[u8] = b"er: 1\r\nX-Other: 2\r\n\r\n";
        for flagged in [true, false] {
            let stats = crate::stats::Stats::default();
            let mut c = Connections::new();
            let mut out = Vec::new();
            c.open(1, 7, Role::Server, meta(10), false, 0);
            let mut feed = |lost, s: &Segment<'_>| {
                c.data(
                    1,
                    10,
                    7,
                    Some(Role::Server),
                    false,
                    lost,
                    s,
                    &mut out,
                    &stats,
                )
            };
            feed(false, &seg(Ingress, 1, REQUEST));
            // The response and the start of the next request were lost.
            let after = feed(flagged, &seg(Ingress, 5, MIDDLE));
            if !flagged {
                assert_eq!(after, DataOutcome::Drop { tgid: 10, fd: 7 });
                assert_eq!(stats.snapshot().connections_not_http, 1);
                continue;
            }
            assert_eq!(after, DataOutcome::Continue);
            feed(false, &seg(Egress, 6, RESPONSE));
            feed(false, &seg(Ingress, 7, REQUEST));
            feed(false, &seg(Egress, 8, RESPONSE));
            let statuses: Vec<_> = out
                .iter()
                .map(|f| {
                    (
                        f.exchange.http().and_then(|h| h.status),
                        f.exchange.flags.incomplete,
                    )
                })
                .collect();
            assert_eq!(statuses, [(None, true), (Some(200), false)]);
            let s = stats.snapshot();
            assert_eq!((s.connections_resynced, s.connections_not_http), (1, 0));
        }
    }

    /// Handshake records wait for the plaintext; from the first plaintext on, it alone is
    /// parsed (socket bytes that still arrive are ignored) and the exchange is `https`.
    #[test]
    fn tls_records_wait_for_the_plaintext() {
        let stats = crate::stats::Stats::default();
        let mut c = Connections::new();
        let mut out = Vec::new();
        c.open(1, 7, Role::Server, meta(10), false, 0);
        let feed = |c: &mut Connections, out: &mut Vec<Finished>, tls, s: &Segment<'_>| {
            c.data(1, 10, 7, Some(Role::Server), tls, false, s, out, &stats)
        };
        use Direction::{Egress, Ingress};
        assert_eq!(
            feed(&mut c, &mut out, false, &seg(Ingress, 1, CLIENT_HELLO)),
            DataOutcome::Continue
        );
        assert_eq!(
            feed(&mut c, &mut out, true, &seg(Ingress, 2, REQUEST)),
            DataOutcome::Continue
        );
        // Encrypted bytes that slipped through are not parsed.
        assert_eq!(
            feed(&mut c, &mut out, false, &seg(Egress, 3, APP_DATA)),
            DataOutcome::Continue
        );
        feed(&mut c, &mut out, true, &seg(Egress, 4, RESPONSE));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].exchange.http().and_then(|h| h.scheme.as_deref()),
            Some("https")
        );
        assert_eq!(out[0].exchange.http().and_then(|h| h.status), Some(200));
        let s = stats.snapshot();
        assert_eq!((s.connections_tls, s.connections_not_http), (1, 0));
    }

    /// Application data in TLS records and no plaintext: no probe covers the library; the
    /// connection is dropped as such, not as "not HTTP". Plain HTTP is untouched.
    /// nginx peeks at one octet of a new connection on a TLS port before the handshake.
    #[test]
    fn a_peeked_first_octet_of_a_handshake_waits_too() {
        let stats = crate::stats::Stats::default();
        let mut c = Connections::new();
        let mut out = Vec::new();
        c.open(1, 7, Role::Server, meta(10), false, 0);
        let peek = seg(Direction::Ingress, 1, b"\x16");
        assert_eq!(
            c.data(1, 10, 7, None, false, false, &peek, &mut out, &stats),
            DataOutcome::Continue
        );
        c.data(
            1,
            10,
            7,
            None,
            true,
            false,
            &seg(Direction::Ingress, 2, REQUEST),
            &mut out,
            &stats,
        );
        c.data(
            1,
            10,
            7,
            None,
            true,
            false,
            &seg(Direction::Egress, 3, RESPONSE),
            &mut out,
            &stats,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].meta.local_port,
            Some(8080),
            "the connection's own entry"
        );
        assert_eq!(stats.snapshot().connections_not_http, 0);
        // Plain bytes are still judged at once.
        assert!(!tls_start(b"G"));
        assert!(!tls_start(b"\x16\x01"));
    }

    /// A ClientHello sent to a plaintext server, answered in the clear: not HTTP, not TLS.
    #[test]
    fn a_client_hello_answered_in_the_clear_is_not_http() {
        let stats = crate::stats::Stats::default();
        let mut c = Connections::new();
        let mut out = Vec::new();
        c.open(1, 7, Role::Server, meta(10), false, 0);
        let hello = seg(Direction::Ingress, 1, CLIENT_HELLO);
        assert_eq!(
            c.data(1, 10, 7, None, false, false, &hello, &mut out, &stats),
            DataOutcome::Continue
        );
        let answer = seg(Direction::Egress, 2, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(
            c.data(1, 10, 7, None, false, false, &answer, &mut out, &stats),
            DataOutcome::Drop { tgid: 10, fd: 7 }
        );
        assert!(out.is_empty());
        let s = stats.snapshot();
        assert_eq!(
            (s.connections_not_http, s.connections_tls_uncovered),
            (1, 0)
        );
    }

    #[test]
    fn tls_application_data_without_plaintext_is_uncovered() {
        let stats = crate::stats::Stats::default();
        let mut c = Connections::new();
        let mut out = Vec::new();
        c.open(1, 7, Role::Server, meta(10), false, 0);
        c.open(2, 8, Role::Server, meta(10), false, 0);
        let hello = seg(Direction::Ingress, 1, CLIENT_HELLO);
        let app = seg(Direction::Ingress, 2, APP_DATA);
        assert_eq!(
            c.data(1, 10, 7, None, false, false, &hello, &mut out, &stats),
            DataOutcome::Continue
        );
        assert_eq!(
            c.data(1, 10, 7, None, false, false, &app, &mut out, &stats),
            DataOutcome::Drop { tgid: 10, fd: 7 }
        );
        let req = seg(Direction::Ingress, 3, REQUEST);
        c.data(2, 10, 8, None, false, false, &req, &mut out, &stats);
        let resp = seg(Direction::Egress, 4, RESPONSE);
        c.data(2, 10, 8, None, false, false, &resp, &mut out, &stats);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].exchange.http().and_then(|h| h.scheme.clone()),
            None,
            "cleartext: the transport says http"
        );
        let s = stats.snapshot();
        assert_eq!(
            (
                s.connections_tls_uncovered,
                s.connections_not_http,
                s.connections_tls
            ),
            (1, 0, 0)
        );
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
