//! Joining spans into traces without touching the traffic.
//!
//! Every request gets a *slot* when its first byte is seen (the first request-direction
//! segment on a connection with no request in flight). The slot pre-assigns the span id and
//! remembers a *parent slot*:
//!
//! - a CLIENT request's parent is the SERVER request that the writing thread `(tgid, tid)` is
//!   serving (the last request whose first byte that thread read and whose response is not
//!   finished), or, when that thread serves nothing, the only SERVER request in flight in the
//!   process (none when there are several: ambiguous);
//! - a SERVER request without a `traceparent` header whose peer address is the local address
//!   of an instrumented CLIENT connection on this host has that client request as parent (the
//!   caller is instrumented by us too; the kernel shows both ends of the socket).
//!
//! A finished span whose parent slot is still in flight is *held* until the parent finishes:
//! only then are the trace id (the parent's may come from its own `traceparent`) and the
//! sampling decision known. The parent is adopted only when the child's interval lies inside
//! the parent's (monotonic kernel clock, same host); otherwise the child becomes a root. An
//! explicit `traceparent` on a request always wins over these heuristics. Held spans wait at
//! most [`MAX_HELD_AGE_NS`] (then go out as roots) and at most [`MAX_HELD_PER_SLOT`] per
//! parent.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use super::{SpanRecord, TraceParent, sampler::Sampler};
use crate::protocol::Role;

/// Requests in flight longer than this lose their slot (held children go out as roots).
pub const MAX_HELD_AGE_NS: u64 = 60_000_000_000;
/// Children held per parent request; more go out as roots.
pub const MAX_HELD_PER_SLOT: usize = 256;
/// Connection context idle this long is forgotten (as the connection table does).
const CONN_IDLE_NS: u64 = crate::connection::IDLE_TIMEOUT_NS;

type SlotId = u64;

struct Slot {
    span_id: SpanId,
    tgid: u32,
    role: Role,
    start_ns: u64,
    thread: Option<(u32, u32)>,
    parent: Option<(SlotId, bool)>,
    held: Vec<Held>,
}

struct Held {
    span: SpanRecord,
    slot: Slot,
    start_ns: u64,
    end_ns: u64,
    remote: bool,
}

struct ConnCtx {
    current: Option<SlotId>,
    /// Local and peer address of a client connection (`None` until looked up, or unknown).
    addrs: Option<(SocketAddr, SocketAddr)>,
    looked_up: bool,
    last_ns: u64,
}

/// A span ready for the sink, with its sampling decision.
#[derive(Debug)]
pub struct Decided {
    pub span: SpanRecord,
    pub sampled: bool,
}

/// The per-request context tracker (see the module docs).
pub struct Tracker {
    sampler: Sampler,
    next: SlotId,
    slots: HashMap<SlotId, Slot>,
    conns: HashMap<u64, ConnCtx>,
    threads: HashMap<(u32, u32), SlotId>,
    /// SERVER slots in flight per process.
    serving: HashMap<u32, Vec<SlotId>>,
    /// Local address of instrumented client connections → connection id.
    client_local: HashMap<SocketAddr, u64>,
    ids: RandomIdGenerator,
}

fn norm(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

impl Tracker {
    pub fn new(sampler: Sampler) -> Self {
        Self {
            sampler,
            next: 1,
            slots: HashMap::new(),
            conns: HashMap::new(),
            threads: HashMap::new(),
            serving: HashMap::new(),
            client_local: HashMap::new(),
            ids: RandomIdGenerator::default(),
        }
    }

    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// Requests in flight (for diagnostics and tests).
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// A request-direction segment on `conn_id`, written or read by thread `tid` of `tgid`.
    /// `addrs` is asked (once per client connection) for its (local, peer) addresses.
    pub fn on_request_segment(
        &mut self,
        conn_id: u64,
        tgid: u32,
        tid: u32,
        role: Role,
        ts_ns: u64,
        addrs: impl FnOnce() -> Option<(SocketAddr, SocketAddr)>,
    ) {
        let c = self.conns.entry(conn_id).or_insert(ConnCtx {
            current: None,
            addrs: None,
            looked_up: false,
            last_ns: ts_ns,
        });
        c.last_ns = ts_ns;
        if c.current.is_some_and(|s| self.slots.contains_key(&s)) {
            return;
        }
        let id = self.next;
        self.next += 1;
        c.current = Some(id);
        let parent = match role {
            Role::Server => None,
            Role::Client => {
                if !c.looked_up {
                    c.looked_up = true;
                    c.addrs = addrs().map(|(l, p)| (norm(l), norm(p)));
                    if let Some((l, _)) = c.addrs {
                        self.client_local.insert(l, conn_id);
                    }
                }
                let on_thread = self
                    .threads
                    .get(&(tgid, tid))
                    .copied()
                    .filter(|s| self.slots.contains_key(s));
                on_thread
                    .or_else(|| match self.serving.get(&tgid).map(Vec::as_slice) {
                        Some([only]) => Some(*only),
                        _ => None,
                    })
                    .map(|s| (s, false))
            }
        };
        let thread = (role == Role::Server).then_some((tgid, tid));
        if let Some(t) = thread {
            self.threads.insert(t, id);
            self.serving.entry(tgid).or_default().push(id);
        }
        self.slots.insert(
            id,
            Slot {
                span_id: self.ids.new_span_id(),
                tgid,
                role,
                start_ns: ts_ns,
                thread,
                parent,
                held: Vec::new(),
            },
        );
    }

    fn unlink(&mut self, id: SlotId, slot: &Slot) {
        if let Some(t) = slot.thread
            && self.threads.get(&t) == Some(&id)
        {
            self.threads.remove(&t);
        }
        if slot.role == Role::Server
            && let Some(v) = self.serving.get_mut(&slot.tgid)
        {
            v.retain(|s| *s != id);
            if v.is_empty() {
                self.serving.remove(&slot.tgid);
            }
        }
    }

    /// An exchange finished on `conn_id`. `span` comes from [`super::SpanBuilder::prepare`]
    /// (trace id from `header` or fresh); `peer`: the connection's peer (server role).
    #[expect(clippy::too_many_arguments, reason = "one finished exchange")]
    pub fn on_finished(
        &mut self,
        conn_id: u64,
        role: Role,
        mut span: SpanRecord,
        header: Option<TraceParent>,
        start_ns: u64,
        end_ns: u64,
        peer: Option<SocketAddr>,
        out: &mut Vec<Decided>,
    ) {
        let slot_id = self.conns.get_mut(&conn_id).and_then(|c| c.current.take());
        let slot = slot_id.and_then(|id| self.slots.remove(&id).map(|s| (id, s)));
        let Some((id, mut slot)) = slot else {
            // No request start seen (e.g. the connection was joined mid-way): stand-alone.
            let sampled = self
                .sampler
                .sampled(span.trace_id, header.map(|h| h.sampled));
            out.push(Decided { span, sampled });
            return;
        };
        self.unlink(id, &slot);
        span.span_id = slot.span_id;
        if let Some(h) = header {
            let sampled = self.sampler.sampled(span.trace_id, Some(h.sampled));
            self.resolve(slot, span, sampled, start_ns, end_ns, out);
            return;
        }
        if slot.parent.is_none() && role == Role::Server {
            // The caller may be an instrumented client on this host.
            slot.parent = peer
                .map(norm)
                .and_then(|p| self.client_local.get(&p))
                .and_then(|cid| self.conns.get(cid))
                .and_then(|c| c.current)
                .map(|s| (s, true));
        }
        if let Some((pid, remote)) = slot.parent
            && let Some(p) = self.slots.get_mut(&pid)
            && p.start_ns <= start_ns
            && p.held.len() < MAX_HELD_PER_SLOT
        {
            p.held.push(Held {
                span,
                slot,
                start_ns,
                end_ns,
                remote,
            });
            return;
        }
        let sampled = self.sampler.sampled(span.trace_id, None);
        self.resolve(slot, span, sampled, start_ns, end_ns, out);
    }

    /// Emit `span` and everything held on its slot, recursively.
    fn resolve(
        &mut self,
        slot: Slot,
        span: SpanRecord,
        sampled: bool,
        start_ns: u64,
        end_ns: u64,
        out: &mut Vec<Decided>,
    ) {
        let mut stack = vec![(slot, span, sampled, start_ns, end_ns)];
        while let Some((slot, span, sampled, s0, e0)) = stack.pop() {
            for h in slot.held {
                let mut child = h.span;
                let child_sampled = if h.start_ns >= s0 && h.end_ns <= e0 {
                    child.trace_id = span.trace_id;
                    child.parent_span_id = span.span_id;
                    child.parent_is_remote = h.remote;
                    self.sampler.sampled(child.trace_id, Some(sampled))
                } else {
                    self.sampler.sampled(child.trace_id, None)
                };
                stack.push((h.slot, child, child_sampled, h.start_ns, h.end_ns));
            }
            out.push(Decided { span, sampled });
        }
    }

    /// Release a slot that will never finish: its held children go out as roots.
    fn abandon(&mut self, id: SlotId, out: &mut Vec<Decided>) {
        if let Some(slot) = self.slots.remove(&id) {
            self.unlink(id, &slot);
            for h in slot.held {
                let sampled = self.sampler.sampled(h.span.trace_id, None);
                self.resolve(h.slot, h.span, sampled, h.start_ns, h.end_ns, out);
            }
        }
    }

    /// The connection is gone (closed after its last exchange was flushed, or dropped).
    pub fn conn_closed(&mut self, conn_id: u64, out: &mut Vec<Decided>) {
        if let Some(c) = self.conns.remove(&conn_id) {
            if let Some((l, _)) = c.addrs
                && self.client_local.get(&l) == Some(&conn_id)
            {
                self.client_local.remove(&l);
            }
            if let Some(s) = c.current {
                self.abandon(s, out);
            }
        }
    }

    /// The process exited: forget its connections and requests.
    pub fn remove_process(&mut self, tgid: u32, out: &mut Vec<Decided>) {
        let ids: Vec<SlotId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.tgid == tgid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abandon(id, out);
        }
        self.threads.retain(|(t, _), _| *t != tgid);
        self.serving.remove(&tgid);
    }

    /// Housekeeping: requests in flight for too long, idle connections.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Decided>) {
        let cutoff = now_ns.saturating_sub(MAX_HELD_AGE_NS);
        let old: Vec<SlotId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.start_ns < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.abandon(id, out);
        }
        let idle = now_ns.saturating_sub(CONN_IDLE_NS);
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ns < idle)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.conn_closed(id, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessInfo;
    use opentelemetry::trace::{SpanKind, TraceId};
    use std::{sync::Arc, time::SystemTime};

    fn span(pid: u32, kind: SpanKind, trace: u128) -> SpanRecord {
        SpanRecord {
            process: Arc::new(ProcessInfo {
                pid,
                exe_path: String::new(),
                exe_name: "x".into(),
                service_name: format!("svc{pid}"),
                instance_id: format!("h-{pid}"),
                host_name: "h".into(),
                extra_resource: vec![],
            }),
            kind,
            name: "GET".into(),
            trace_id: TraceId::from(trace),
            span_id: SpanId::from(1),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: vec![],
            error: false,
        }
    }

    const A_LOCAL: &str = "127.0.0.1:40000";
    const B_ADDR: &str = "127.0.0.1:8081";

    /// client → A (server conn 1, client conn 2 to B) → B (server conn 3).
    fn chain(header: Option<TraceParent>, a_tid_client: u32) -> Vec<Decided> {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        let addrs = || Some((A_LOCAL.parse().unwrap(), B_ADDR.parse().unwrap()));
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, a_tid_client, Role::Client, 20, addrs);
        t.on_request_segment(3, 200, 201, Role::Server, 30, || None);
        // B answers, A reads the answer, A answers.
        t.on_finished(
            3,
            Role::Server,
            span(200, SpanKind::Server, 3),
            None,
            30,
            40,
            Some(A_LOCAL.parse().unwrap()),
            &mut out,
        );
        assert!(out.is_empty(), "B's span waits for its parent");
        t.on_finished(
            2,
            Role::Client,
            span(100, SpanKind::Client, 2),
            None,
            20,
            50,
            None,
            &mut out,
        );
        assert!(out.is_empty());
        let mut a = span(100, SpanKind::Server, 1);
        if let Some(h) = header {
            a.trace_id = h.trace_id;
            a.parent_span_id = h.span_id;
        }
        t.on_finished(1, Role::Server, a, header, 10, 60, None, &mut out);
        assert_eq!(t.in_flight(), 0);
        out
    }

    #[test]
    fn chain_joins_one_trace() {
        let tp = TraceParent {
            trace_id: TraceId::from(0xabcu128),
            span_id: SpanId::from(0x77),
            sampled: true,
        };
        let out = chain(Some(tp), 101);
        assert_eq!(out.len(), 3);
        let by_pid_kind = |pid, k: SpanKind| {
            out.iter()
                .find(|d| d.span.process.pid == pid && d.span.kind == k)
                .unwrap()
        };
        let a = by_pid_kind(100, SpanKind::Server);
        let ac = by_pid_kind(100, SpanKind::Client);
        let b = by_pid_kind(200, SpanKind::Server);
        assert!(
            out.iter()
                .all(|d| d.sampled && d.span.trace_id == tp.trace_id)
        );
        assert_eq!(a.span.parent_span_id, tp.span_id);
        assert_eq!(ac.span.parent_span_id, a.span.span_id);
        assert!(!ac.span.parent_is_remote);
        assert_eq!(b.span.parent_span_id, ac.span.span_id);
        assert!(b.span.parent_is_remote);
        // Span ids were pre-assigned and are distinct.
        assert_ne!(a.span.span_id, ac.span.span_id);
        assert_ne!(ac.span.span_id, b.span.span_id);
    }

    #[test]
    fn other_thread_falls_back_to_the_only_request_in_flight() {
        let out = chain(None, 999);
        let ids: std::collections::HashSet<_> = out.iter().map(|d| d.span.trace_id).collect();
        assert_eq!(ids.len(), 1, "{out:?}");
    }

    #[test]
    fn not_sampled_parent_drops_the_whole_chain() {
        let tp = TraceParent {
            trace_id: TraceId::from(0xabcu128),
            span_id: SpanId::from(0x77),
            sampled: false,
        };
        let out = chain(Some(tp), 101);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|d| !d.sampled));
    }

    #[test]
    fn ambiguous_or_outside_parents_are_not_adopted() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        // Two requests in flight on other threads: a client call from a third thread has no
        // parent.
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(4, 100, 102, Role::Server, 11, || None);
        t.on_request_segment(2, 100, 103, Role::Client, 20, || None);
        t.on_finished(
            2,
            Role::Client,
            span(100, SpanKind::Client, 2),
            None,
            20,
            30,
            None,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].span.parent_span_id, SpanId::INVALID);
        // A client request on the serving thread that outlives the server request: root.
        t.on_request_segment(5, 100, 101, Role::Client, 40, || None);
        t.on_finished(
            5,
            Role::Client,
            span(100, SpanKind::Client, 5),
            None,
            40,
            90,
            None,
            &mut out,
        );
        t.on_finished(
            1,
            Role::Server,
            span(100, SpanKind::Server, 1),
            None,
            10,
            50,
            None,
            &mut out,
        );
        let c = out
            .iter()
            .find(|d| d.span.trace_id == TraceId::from(5u128))
            .unwrap();
        assert_eq!(c.span.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn explicit_traceparent_on_a_client_request_wins() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || None);
        let tp = TraceParent {
            trace_id: TraceId::from(0x55u128),
            span_id: SpanId::from(0x66),
            sampled: true,
        };
        let mut c = span(100, SpanKind::Client, 0x55);
        c.parent_span_id = tp.span_id;
        t.on_finished(2, Role::Client, c, Some(tp), 20, 30, None, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].span.parent_span_id, tp.span_id);
        assert_eq!(out[0].span.trace_id, tp.trace_id);
    }

    #[test]
    fn abandoned_parents_release_children_as_roots() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || None);
        t.on_finished(
            2,
            Role::Client,
            span(100, SpanKind::Client, 2),
            None,
            20,
            30,
            None,
            &mut out,
        );
        assert!(out.is_empty());
        t.conn_closed(1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].span.parent_span_id, SpanId::INVALID);
        // Expiry does the same for requests that never finish.
        t.on_request_segment(3, 100, 101, Role::Server, 100, || None);
        t.on_request_segment(6, 100, 101, Role::Client, 120, || None);
        t.on_finished(
            6,
            Role::Client,
            span(100, SpanKind::Client, 6),
            None,
            120,
            130,
            None,
            &mut out,
        );
        t.expire(100 + MAX_HELD_AGE_NS + 1, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(t.in_flight(), 0);
    }
}
