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
//! the parent's (monotonic kernel clock, same host); otherwise the child becomes a root. Held
//! spans wait at most [`MAX_HELD_AGE_NS`] (then go out as roots) and at most
//! [`MAX_HELD_PER_SLOT`] per parent.
//!
//! A request carrying a `traceparent` keeps it (an instrumented app chose its parent), unless
//! it is the very header its parent passes on (see [`forwards`]): a proxy (nginx `proxy_pass`,
//! HAProxy) sends out the `traceparent` it received, so its CLIENT request is the child of the
//! SERVER request it serves, and the upstream's SERVER request (same header, caller found by
//! connection) the child of that CLIENT request. Whether the headers match is known only when
//! the parent finishes (a SERVER request finishes after its CLIENT requests): such a child is
//! held like any other.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
};

/// Keys here are kernel-made ids, pids and socket addresses: foldhash is several times
/// faster than SipHash on them and still seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use super::{SpanRecord, TraceParent};
use crate::protocol::Role;
use crate::sampler::Sampler;

/// Requests in flight longer than this lose their slot (held children go out as roots).
pub const MAX_HELD_AGE_NS: u64 = 60_000_000_000;

/// How long a SERVER span whose caller may be an instrumented client on this host waits for
/// that client's request to be read. The ring buffer orders records by the syscalls' *exits*:
/// on loopback the callee can read the request, answer, and have both records written while
/// the caller is still inside the `write` that sent it (its softirq delivered the bytes), so
/// the callee's span can finish before the caller's request is known.
pub const PARK_NS: u64 = 100_000_000;

/// How far a caller's syscall-exit timestamps may lag behind its callee's. Both ends are
/// timed at syscall exit: the caller's `write` can return after the callee already read the
/// request (and its `read` of the answer before the callee's `write` returns), by as long as
/// the caller's thread waits for a CPU. Causality still holds one way: the caller's answer
/// is read after the callee's request was, which keeps an earlier exchange on the same
/// connection from passing as the caller.
pub const CROSS_PROCESS_SLACK_NS: u64 = 10_000_000;

/// Whether a child over `[cs, ce]` lies inside its parent's `[ps, pe]` (`pe`: `None` while
/// the parent is in flight). `remote`: the two ends are different processes on this host
/// (see [`CROSS_PROCESS_SLACK_NS`]); within a process one thread's order is exact.
fn inside(ps: u64, pe: Option<u64>, cs: u64, ce: u64, remote: bool) -> bool {
    if !remote {
        return ps <= cs && pe.is_none_or(|pe| ce <= pe);
    }
    ps <= cs.saturating_add(CROSS_PROCESS_SLACK_NS)
        && pe.is_none_or(|pe| pe > cs && ce <= pe.saturating_add(CROSS_PROCESS_SLACK_NS))
}

/// Ports remembered as "an instrumented client connected here" (see [`PARK_NS`]).
const MAX_CLIENT_PORTS: usize = 4096;
/// Children held per parent request; more go out as roots.
pub const MAX_HELD_PER_SLOT: usize = 256;
/// Finished requests (and closed client connections) stay findable this long: the kernel may
/// report the end of a callee's response after the caller already read it and closed.
pub const GRACE_NS: u64 = 2_000_000_000;
/// Connection context idle this long is forgotten (as the connection table does).
const CONN_IDLE_NS: u64 = crate::connection::IDLE_TIMEOUT_NS;

type SlotId = u64;

/// A finished span waiting for its parent, or being emitted.
struct Done {
    span: SpanRecord,
    /// The request's own `traceparent` (the span's trace id and parent come from it until a
    /// parent is adopted).
    header: Option<TraceParent>,
    start_ns: u64,
    end_ns: u64,
}

/// The `traceparent` a child request may carry and still be this request's child: for a
/// SERVER request its own incoming header (a process that sends out the header it received
/// passes it through, it is no instrumented app), for a CLIENT request the header it was
/// itself adopted with (its callee received what the proxy passed on). A CLIENT request that
/// kept a header of its own forwards nothing: its callee keeps that header too.
fn forwards(role: Role, header: Option<TraceParent>, adopted: bool) -> Option<TraceParent> {
    match role {
        Role::Server => header,
        Role::Client => header.filter(|_| adopted),
    }
}

/// Whether a child carrying `header` continues a parent that forwards `fwd`: without a header
/// the heuristics decide alone; with one, only the header the parent passes on is its own.
fn continues(header: Option<TraceParent>, fwd: Option<TraceParent>) -> bool {
    header.is_none() || header == fwd
}

struct Slot {
    span_id: SpanId,
    tgid: u32,
    role: Role,
    start_ns: u64,
    thread: Option<(u32, u32)>,
    parent: Option<(SlotId, bool)>,
    /// Finished children waiting for this request, and whether each is in another process.
    held: Vec<(SlotId, bool)>,
    done: Option<Done>,
    /// Some client request named this one its parent: children reported after this span is
    /// emitted must still find it in `resolved`.
    referenced: bool,
}

/// A recently emitted span, for children reported after it.
#[derive(Clone, Copy)]
struct Resolved {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    role: Role,
    start_ns: u64,
    end_ns: u64,
    /// See [`forwards`].
    forwards: Option<TraceParent>,
}

struct ConnCtx {
    current: Option<SlotId>,
    /// The last request that finished on the connection.
    last: Option<SlotId>,
    /// The parent the last finished client request had: requests written together with it
    /// (a Redis pipeline, pipelined HTTP/1) finish without a slot of their own and share it.
    last_parent: Option<(SlotId, bool)>,
    /// Local and peer address of a client connection (`None` until looked up, or unknown:
    /// short-lived connections are often closed before the lookup).
    addrs: Option<(SocketAddr, SocketAddr)>,
    /// The server address a client connection connected to (from the connect event).
    peer: Option<SocketAddr>,
    looked_up: bool,
    last_ns: u64,
    closed: bool,
}

impl ConnCtx {
    fn new(ts_ns: u64) -> Self {
        Self {
            current: None,
            last: None,
            last_parent: None,
            addrs: None,
            peer: None,
            looked_up: false,
            last_ns: ts_ns,
            closed: false,
        }
    }
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
    resolved: HashMap<SlotId, Resolved>,
    resolved_order: VecDeque<(u64, SlotId)>,
    conns: HashMap<u64, ConnCtx>,
    closed_order: VecDeque<(u64, u64)>,
    threads: HashMap<(u32, u32), SlotId>,
    /// SERVER slots in flight per process.
    serving: HashMap<u32, Vec<SlotId>>,
    /// Local address of instrumented client connections → connection id.
    client_local: HashMap<SocketAddr, u64>,
    /// Server port of instrumented client connections → connection ids.
    client_by_port: HashMap<u16, Vec<u64>>,
    /// (slot, span, sampled, parent adopted).
    resolve_stack: Vec<(SlotId, Done, bool, bool)>,
    /// Ports instrumented clients connected to: a server span on one of them with no caller
    /// found yet is parked, not emitted as a root at once.
    client_ports: std::collections::HashSet<u16, foldhash::fast::RandomState>,
    /// Finished SERVER spans (their `Done` is in their slot) waiting for their caller, oldest
    /// first: (slot, peer, local port, deadline).
    parked: VecDeque<(SlotId, SocketAddr, u16, u64)>,
    ids: RandomIdGenerator,
    now_ns: u64,
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
            slots: HashMap::default(),
            resolved: HashMap::default(),
            resolved_order: VecDeque::new(),
            conns: HashMap::default(),
            closed_order: VecDeque::new(),
            threads: HashMap::default(),
            serving: HashMap::default(),
            client_local: HashMap::default(),
            client_by_port: HashMap::default(),
            resolve_stack: Vec::new(),
            client_ports: Default::default(),
            parked: VecDeque::new(),
            ids: RandomIdGenerator::default(),
            now_ns: 0,
        }
    }

    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// Requests in flight or waiting for their parent (for diagnostics and tests).
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Forget what is older than [`GRACE_NS`].
    fn tick(&mut self, ts_ns: u64) {
        self.now_ns = self.now_ns.max(ts_ns);
        let cutoff = self.now_ns.saturating_sub(GRACE_NS);
        while self
            .resolved_order
            .front()
            .is_some_and(|(t, _)| *t < cutoff)
        {
            if let Some((_, id)) = self.resolved_order.pop_front() {
                self.resolved.remove(&id);
            }
        }
        while self.closed_order.front().is_some_and(|(t, _)| *t < cutoff) {
            if let Some((_, cid)) = self.closed_order.pop_front() {
                self.forget_conn(cid);
            }
        }
    }

    fn forget_conn(&mut self, conn_id: u64) {
        let Some(c) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Some((l, _)) = c.addrs
            && self.client_local.get(&l) == Some(&conn_id)
        {
            self.client_local.remove(&l);
        }
        if let Some(p) = c.peer
            && let Some(v) = self.client_by_port.get_mut(&p.port())
        {
            v.retain(|id| *id != conn_id);
            if v.is_empty() {
                self.client_by_port.remove(&p.port());
            }
        }
    }

    /// A client connection was opened to `peer`.
    pub fn on_connect(&mut self, conn_id: u64, peer: Option<SocketAddr>, ts_ns: u64) {
        let Some(peer) = peer.map(norm) else { return };
        let c = self
            .conns
            .entry(conn_id)
            .or_insert_with(|| ConnCtx::new(ts_ns));
        c.peer = Some(peer);
        if self.client_ports.len() < MAX_CLIENT_PORTS {
            self.client_ports.insert(peer.port());
        }
        self.client_by_port
            .entry(peer.port())
            .or_default()
            .push(conn_id);
    }

    /// Whether client request `id` can be the caller of a server request over
    /// `[start_ns, end_ns]`.
    fn may_call(&self, id: SlotId, start_ns: u64, end_ns: u64) -> bool {
        if let Some(s) = self.slots.get(&id) {
            return s.role == Role::Client
                && inside(
                    s.start_ns,
                    s.done.as_ref().map(|d| d.end_ns),
                    start_ns,
                    end_ns,
                    true,
                );
        }
        self.resolved.get(&id).is_some_and(|r| {
            r.role == Role::Client && inside(r.start_ns, Some(r.end_ns), start_ns, end_ns, true)
        })
    }

    /// The instrumented client request a SERVER request on `local_port` from `peer` came
    /// from: the client connection whose local address is `peer`, else the only client
    /// request to that port (local address unknown) whose interval contains the request.
    fn caller(
        &self,
        peer: Option<SocketAddr>,
        local_port: Option<u16>,
        start_ns: u64,
        end_ns: u64,
    ) -> Option<SlotId> {
        let peer = peer.map(norm)?;
        let cand = |c: &ConnCtx| {
            [c.current, c.last]
                .into_iter()
                .flatten()
                .find(|s| self.may_call(*s, start_ns, end_ns))
        };
        if let Some(s) = self
            .client_local
            .get(&peer)
            .and_then(|cid| self.conns.get(cid))
            .and_then(cand)
        {
            return Some(s);
        }
        let mut found = None;
        for cid in self.client_by_port.get(&local_port?)? {
            let Some(c) = self.conns.get(cid) else {
                continue;
            };
            if c.addrs.is_some_and(|(l, _)| l != peer) {
                continue;
            }
            let Some(s) = cand(c) else { continue };
            if found.is_some() {
                return None; // ambiguous
            }
            found = Some(s);
        }
        found
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
        self.tick(ts_ns);
        let c = self
            .conns
            .entry(conn_id)
            .or_insert_with(|| ConnCtx::new(ts_ns));
        c.last_ns = ts_ns;
        if let Some(cur) = c.current.filter(|s| self.slots.contains_key(s)) {
            // A request already in flight: this segment continues it. A client connection's
            // first writes (a database startup or handshake, made while no request was being
            // served) open a slot that its first real request then takes: that request's
            // parent is the server request its thread serves now.
            if role == Role::Client
                && self.slots.get(&cur).is_some_and(|s| s.parent.is_none())
                && let Some(p) = self.client_parent(tgid, tid)
                && let Some(slot) = self.slots.get_mut(&cur)
            {
                slot.parent = Some(p);
            }
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
                    // The lookup runs after the fact: the fd may have been closed and reused
                    // by another socket. Keep the answer only if it names the peer we saw
                    // connected.
                    c.addrs = addrs()
                        .map(|(l, p)| (norm(l), norm(p)))
                        .filter(|(_, p)| c.peer.is_none_or(|cp| cp == *p));
                    if let Some((l, _)) = c.addrs {
                        self.client_local.insert(l, conn_id);
                    }
                }
                self.client_parent(tgid, tid)
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
                done: None,
                referenced: false,
            },
        );
    }

    /// The parent of a client request written by thread `(tgid, tid)` now: the server request
    /// the thread serves, else the process's only one in flight (marked referenced).
    fn client_parent(&mut self, tgid: u32, tid: u32) -> Option<(SlotId, bool)> {
        let in_flight = |s: &SlotId| self.slots.get(s).is_some_and(|s| s.done.is_none());
        let on_thread = self.threads.get(&(tgid, tid)).copied().filter(in_flight);
        let parent = on_thread
            .or_else(|| match self.serving.get(&tgid).map(Vec::as_slice) {
                Some([only]) => Some(*only),
                _ => None,
            })
            .map(|s| (s, false));
        if let Some(p) = parent.and_then(|(p, _)| self.slots.get_mut(&p)) {
            p.referenced = true;
        }
        parent
    }

    fn unlink(&mut self, id: SlotId, thread: Option<(u32, u32)>, role: Role, tgid: u32) {
        if let Some(t) = thread
            && self.threads.get(&t) == Some(&id)
        {
            self.threads.remove(&t);
        }
        if role == Role::Server
            && let Some(v) = self.serving.get_mut(&tgid)
        {
            // The emptied list stays (until the process exits): a server with one request
            // at a time would otherwise allocate it again for every request.
            v.retain(|s| *s != id);
        }
    }

    /// An exchange finished on `conn_id`. `span` comes from [`super::SpanBuilder::prepare`]
    /// (trace id from `header` or fresh); `peer`, `local_port`: the connection's (server
    /// role: the caller's address and the listening port).
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
        local_port: Option<u16>,
        out: &mut Vec<Decided>,
    ) {
        self.tick(end_ns);
        if !self.parked.is_empty() {
            self.poll_parked(end_ns, out);
        }
        let id = self.conns.get_mut(&conn_id).and_then(|c| {
            let s = c.current.take();
            if s.is_some() {
                c.last = s;
            }
            s
        });
        let slot = id.and_then(|id| {
            self.slots
                .get(&id)
                .filter(|s| s.done.is_none())
                .map(|s| (id, s.span_id, s.thread, s.tgid, s.parent))
        });
        if role == Role::Client
            && let Some(c) = self.conns.get_mut(&conn_id)
        {
            match slot {
                Some((.., parent)) => c.last_parent = parent,
                None if header.is_none() => {
                    if let Some(parent) = c.last_parent {
                        // Written together with the last request (pipelined): its sibling.
                        let id = self.next;
                        self.next += 1;
                        self.slots.insert(
                            id,
                            Slot {
                                span_id: span.span_id,
                                tgid: 0,
                                role,
                                start_ns,
                                thread: None,
                                parent: Some(parent),
                                held: Vec::new(),
                                done: None,
                                referenced: false,
                            },
                        );
                        let done = Done {
                            span,
                            header,
                            start_ns,
                            end_ns,
                        };
                        self.settle(id, done, Some(parent), out);
                        return;
                    }
                }
                None => {}
            }
        }
        let Some((id, span_id, thread, tgid, parent)) = slot else {
            // No request start seen (e.g. the connection was joined mid-way): stand-alone.
            let sampled = self
                .sampler
                .sampled(span.trace_id, header.map(|h| h.sampled));
            out.push(Decided { span, sampled });
            return;
        };
        let slot_role = self.slots.get(&id).map_or(role, |s| s.role);
        self.unlink(id, thread, slot_role, tgid);
        span.span_id = span_id;
        let done = Done {
            span,
            header,
            start_ns,
            end_ns,
        };
        // A request with a `traceparent` looks for its parent too: whether it keeps its header
        // depends on the header that parent passes on (see `forwards`).
        let parent = match parent {
            Some(p) => Some(p),
            // The caller may be an instrumented client on this host.
            None if role == Role::Server => self
                .caller(peer, local_port, start_ns, end_ns)
                .map(|s| (s, true)),
            None => None,
        };
        if parent.is_none()
            && role == Role::Server
            && let (Some(peer), Some(port)) = (peer, local_port)
            && self.client_ports.contains(&port)
            && let Some(slot) = self.slots.get_mut(&id)
        {
            // Its caller's request may not have been read yet (see PARK_NS).
            slot.done = Some(done);
            self.parked.push_back((
                id,
                peer,
                port,
                self.now_ns.max(end_ns).saturating_add(PARK_NS),
            ));
            return;
        }
        self.settle(id, done, parent, out);
    }

    /// Parked server spans whose caller is now known join it; those past their deadline go
    /// out as roots. Runs on every finished exchange and on the daemon's drain tick.
    pub fn poll_parked(&mut self, now_ns: u64, out: &mut Vec<Decided>) {
        if self.parked.is_empty() {
            return;
        }
        self.now_ns = self.now_ns.max(now_ns);
        // One pass in order: what still waits goes to the back.
        for _ in 0..self.parked.len() {
            let Some((id, peer, port, deadline)) = self.parked.pop_front() else {
                break;
            };
            let Some(done) = self.slots.get(&id).and_then(|s| s.done.as_ref()) else {
                continue; // emitted meanwhile (abandoned with its process, …)
            };
            let (start_ns, end_ns) = (done.start_ns, done.end_ns);
            let caller = self.caller(Some(peer), Some(port), start_ns, end_ns);
            if caller.is_none() && deadline > self.now_ns {
                self.parked.push_back((id, peer, port, deadline));
                continue;
            }
            let Some(done) = self.slots.get_mut(&id).and_then(|s| s.done.take()) else {
                continue;
            };
            self.settle(id, done, caller.map(|c| (c, true)), out);
        }
    }

    /// Emit span `id` under `parent` (or hold it on a parent still in flight), or as a root
    /// (with its own `traceparent`, if any).
    fn settle(
        &mut self,
        id: SlotId,
        mut d: Done,
        parent: Option<(SlotId, bool)>,
        out: &mut Vec<Decided>,
    ) {
        if let Some((pid, remote)) = parent {
            if let Some(p) = self.slots.get_mut(&pid)
                && inside(
                    p.start_ns,
                    p.done.as_ref().map(|d| d.end_ns),
                    d.start_ns,
                    d.end_ns,
                    remote,
                )
                && p.held.len() < MAX_HELD_PER_SLOT
            {
                p.held.push((id, remote));
                if let Some(s) = self.slots.get_mut(&id) {
                    s.done = Some(d);
                }
                return;
            }
            if let Some(r) = self.resolved.get(&pid).copied()
                && inside(r.start_ns, Some(r.end_ns), d.start_ns, d.end_ns, remote)
                && continues(d.header, r.forwards)
            {
                d.span.trace_id = r.trace_id;
                d.span.parent_span_id = r.span_id;
                d.span.parent_is_remote = remote;
                let sampled = self.sampler.sampled(r.trace_id, Some(r.sampled));
                self.resolve(id, d, sampled, true, out);
                return;
            }
        }
        let sampled = self
            .sampler
            .sampled(d.span.trace_id, d.header.map(|h| h.sampled));
        self.resolve(id, d, sampled, false, out);
    }

    /// Emit `d` (of slot `id`; `adopted`: under a parent slot) and everything held on it,
    /// recursively.
    fn resolve(
        &mut self,
        id: SlotId,
        d: Done,
        sampled: bool,
        adopted: bool,
        out: &mut Vec<Decided>,
    ) {
        // Reused across calls: most spans hold nothing, and this runs once per request.
        let mut stack = std::mem::take(&mut self.resolve_stack);
        stack.push((id, d, sampled, adopted));
        while let Some((id, d, sampled, adopted)) = stack.pop() {
            let slot = self.slots.remove(&id);
            let role = slot.as_ref().map_or(Role::Server, |s| s.role);
            let fwd = forwards(role, d.header, adopted);
            // Only what a later report can still look up is kept: client requests (a server
            // span in another process may name them its caller) and requests some client
            // request named its parent. A plain server request (nginx answering itself) is not.
            if role == Role::Client || slot.as_ref().is_some_and(|s| s.referenced) {
                self.resolved.insert(
                    id,
                    Resolved {
                        trace_id: d.span.trace_id,
                        span_id: d.span.span_id,
                        sampled,
                        role,
                        start_ns: d.start_ns,
                        end_ns: d.end_ns,
                        forwards: fwd,
                    },
                );
                self.resolved_order.push_back((d.end_ns, id));
            }
            if let Some(slot) = slot {
                for (cid, remote) in slot.held {
                    let Some(mut c) = self.slots.get_mut(&cid).and_then(|c| c.done.take()) else {
                        continue;
                    };
                    let adopt = inside(d.start_ns, Some(d.end_ns), c.start_ns, c.end_ns, remote)
                        && continues(c.header, fwd);
                    let child_sampled = if adopt {
                        c.span.trace_id = d.span.trace_id;
                        c.span.parent_span_id = d.span.span_id;
                        c.span.parent_is_remote = remote;
                        self.sampler.sampled(c.span.trace_id, Some(sampled))
                    } else {
                        self.sampler
                            .sampled(c.span.trace_id, c.header.map(|h| h.sampled))
                    };
                    stack.push((cid, c, child_sampled, adopt));
                }
            }
            out.push(Decided {
                span: d.span,
                sampled,
            });
        }
        self.resolve_stack = stack;
    }

    /// Release a slot: a finished one waiting for a parent goes out as a root (or with its
    /// own `traceparent`); an unfinished one releases what it holds the same way.
    fn abandon(&mut self, id: SlotId, out: &mut Vec<Decided>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if let Some(d) = slot.done.take() {
            let sampled = self
                .sampler
                .sampled(d.span.trace_id, d.header.map(|h| h.sampled));
            self.resolve(id, d, sampled, false, out);
            return;
        }
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.unlink(id, slot.thread, slot.role, slot.tgid);
        for (cid, _) in slot.held {
            self.abandon(cid, out);
        }
    }

    /// The connection is gone (closed after its last exchange was flushed, or dropped). Its
    /// context stays findable for [`GRACE_NS`].
    pub fn conn_closed(&mut self, conn_id: u64, out: &mut Vec<Decided>) {
        let Some(c) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let current = c.current.take();
        if !c.closed {
            c.closed = true;
            let t = c.last_ns.max(self.now_ns);
            self.closed_order.push_back((t, conn_id));
        }
        if let Some(s) = current
            && self.slots.get(&s).is_some_and(|s| s.done.is_none())
        {
            self.abandon(s, out);
        }
    }

    /// The process exited: forget its connections and requests.
    pub fn remove_process(&mut self, tgid: u32, out: &mut Vec<Decided>) {
        let ids: Vec<SlotId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.tgid == tgid && s.done.is_none())
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
        self.tick(now_ns);
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
            self.forget_conn(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessInfo;
    use opentelemetry::trace::SpanKind;
    use std::{sync::Arc, time::SystemTime};

    fn span(pid: u32, kind: SpanKind, trace: u128) -> SpanRecord {
        SpanRecord {
            process: Arc::new(ProcessInfo {
                pid,
                exe_path: String::new(),
                exe_name: "x".into(),
                service_name: format!("svc{pid}"),
                service_namespace: None,
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
    /// `known_local`: the client connection's local address was read in time (otherwise the
    /// caller is found as the only request in flight to B's port).
    fn chain_with(
        header: Option<TraceParent>,
        a_tid_client: u32,
        known_local: bool,
    ) -> Vec<Decided> {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        let b_local_port = Some(8081);
        t.on_connect(2, Some(B_ADDR.parse().unwrap()), 15);
        // An idle client connection to B (no request in flight) does not make it ambiguous.
        t.on_connect(9, Some(B_ADDR.parse().unwrap()), 15);
        let addrs = || known_local.then(|| (A_LOCAL.parse().unwrap(), B_ADDR.parse().unwrap()));
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
            b_local_port,
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
            None,
            &mut out,
        );
        assert!(out.is_empty());
        let mut a = span(100, SpanKind::Server, 1);
        if let Some(h) = header {
            a.trace_id = h.trace_id;
            a.parent_span_id = h.span_id;
        }
        t.on_finished(1, Role::Server, a, header, 10, 60, None, None, &mut out);
        assert_eq!(t.in_flight(), 0);
        out
    }

    /// The callee's records come first (it read, answered and both records were written while
    /// the caller was still inside its `write`): B's span is parked, not a root, and joins A's
    /// trace once A's request is read. Without a caller it goes out as a root after PARK_NS.
    /// A database connection opened before any request (its startup written outside one) and
    /// a pipeline of three commands written during a request: all three are the request's
    /// children, the two without a slot of their own as siblings of the first.
    #[test]
    fn pipelined_client_requests_on_an_early_connection_join_the_request() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_connect(2, None, 1);
        // The startup message: no request is being served.
        t.on_request_segment(2, 100, 101, Role::Client, 5, || None);
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        // The pipeline, one write.
        t.on_request_segment(2, 100, 101, Role::Client, 12, || None);
        for (n, (s, e)) in [(12, 14), (12, 15), (12, 16)].into_iter().enumerate() {
            let mut c = span(100, SpanKind::Client, 7 + n as u128);
            c.span_id = SpanId::from(0x100 + n as u64);
            t.on_finished(2, Role::Client, c, None, s, e, None, None, &mut out);
        }
        assert!(out.is_empty(), "held until the request finishes: {out:?}");
        let mut server = span(100, SpanKind::Server, 3);
        server.span_id = SpanId::from(0x99);
        t.on_finished(1, Role::Server, server, None, 10, 20, None, None, &mut out);
        assert_eq!(out.len(), 4, "{out:?}");
        let root = out
            .iter()
            .find(|d| d.span.kind == SpanKind::Server)
            .unwrap();
        for d in out.iter().filter(|d| d.span.kind == SpanKind::Client) {
            assert_eq!(d.span.parent_span_id, root.span.span_id);
            assert_eq!(d.span.trace_id, root.span.trace_id);
        }
        let mut ids: Vec<_> = out.iter().map(|d| d.span.span_id.to_bytes()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "distinct span ids");
        // After the request: a lone command on the same connection is a root, not a late
        // sibling of a finished parent.
        t.on_finished(
            2,
            Role::Client,
            span(100, SpanKind::Client, 11),
            None,
            30,
            31,
            None,
            None,
            &mut out,
        );
        assert_eq!(out.len(), 5);
        assert_eq!(out[4].span.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn callee_finished_before_callers_request_is_read_joins_after_all() {
        for caller_arrives in [true, false] {
            let mut t = Tracker::new(Sampler::default());
            let mut out = Vec::new();
            t.on_connect(2, Some(B_ADDR.parse().unwrap()), 15);
            let addrs = || Some((A_LOCAL.parse().unwrap(), B_ADDR.parse().unwrap()));
            t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
            t.on_request_segment(3, 200, 201, Role::Server, 30, || None);
            t.on_finished(
                3,
                Role::Server,
                span(200, SpanKind::Server, 3),
                None,
                30,
                40,
                Some(A_LOCAL.parse().unwrap()),
                Some(8081),
                &mut out,
            );
            assert!(out.is_empty(), "parked");
            t.poll_parked(45, &mut out);
            assert!(out.is_empty(), "still parked before its deadline");
            if !caller_arrives {
                t.poll_parked(40 + PARK_NS, &mut out);
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].span.parent_span_id, SpanId::INVALID);
                continue;
            }
            t.on_request_segment(2, 100, 101, Role::Client, 20, addrs);
            t.poll_parked(50, &mut out);
            assert!(
                out.is_empty(),
                "held on A's client request, which is in flight"
            );
            t.on_finished(
                2,
                Role::Client,
                span(100, SpanKind::Client, 2),
                None,
                20,
                50,
                None,
                None,
                &mut out,
            );
            t.on_finished(
                1,
                Role::Server,
                span(100, SpanKind::Server, 1),
                None,
                10,
                60,
                None,
                None,
                &mut out,
            );
            assert_eq!(out.len(), 3);
            assert_eq!(t.in_flight(), 0);
            let trace = out[0].span.trace_id;
            assert!(out.iter().all(|d| d.span.trace_id == trace), "one trace");
            let b = out.iter().find(|d| d.span.process.pid == 200).unwrap();
            let a_client = out
                .iter()
                .find(|d| d.span.kind == SpanKind::Client)
                .unwrap();
            assert_eq!(b.span.parent_span_id, a_client.span.span_id);
        }
    }

    /// Timestamps are syscall exits: the caller's `write` may return after the callee read
    /// the request, and its `read` of the answer before the callee's `write` returns. The
    /// callee still joins; an earlier exchange on the same connection, finished before the
    /// callee's request was read, is never taken for its caller.
    #[test]
    fn caller_exits_lagging_the_callee_still_join() {
        let a_local: SocketAddr = A_LOCAL.parse().unwrap();
        let b: SocketAddr = B_ADDR.parse().unwrap();
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_connect(2, Some(b), 5);
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        // B read the request at 18, A's write returned at 20; B's answer returned at 52,
        // A's read of it at 50.
        t.on_request_segment(3, 200, 201, Role::Server, 18, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || Some((a_local, b)));
        let b_span = span(200, SpanKind::Server, 3);
        t.on_finished(
            3,
            Role::Server,
            b_span,
            None,
            18,
            52,
            Some(a_local),
            Some(8081),
            &mut out,
        );
        let c = span(100, SpanKind::Client, 2);
        t.on_finished(2, Role::Client, c, None, 20, 50, None, None, &mut out);
        let a = span(100, SpanKind::Server, 1);
        t.on_finished(1, Role::Server, a, None, 10, 60, None, None, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        let ac = out
            .iter()
            .find(|d| d.span.kind == SpanKind::Client)
            .unwrap();
        let bs = out.iter().find(|d| d.span.process.pid == 200).unwrap();
        assert_eq!(bs.span.parent_span_id, ac.span.span_id);
        assert_eq!(bs.span.trace_id, ac.span.trace_id);

        // Next: a request of B from the same peer, while A's connection has no request in
        // flight (its last one ended at 50, before B read at 70): parked, then a root.
        t.on_request_segment(4, 200, 201, Role::Server, 70, || None);
        let b2 = span(200, SpanKind::Server, 4);
        t.on_finished(
            4,
            Role::Server,
            b2,
            None,
            70,
            75,
            Some(a_local),
            Some(8081),
            &mut out,
        );
        assert_eq!(out.len(), 3, "parked");
        t.poll_parked(75 + PARK_NS, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[3].span.parent_span_id, SpanId::INVALID);
    }

    fn chain(header: Option<TraceParent>, a_tid_client: u32) -> Vec<Decided> {
        chain_with(header, a_tid_client, true)
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
    fn caller_without_local_address_is_the_only_request_to_that_port() {
        let out = chain_with(None, 101, false);
        let ids: std::collections::HashSet<_> = out.iter().map(|d| d.span.trace_id).collect();
        assert_eq!(ids.len(), 1, "{out:?}");
    }

    #[test]
    fn callee_reported_after_the_caller_closed_still_joins() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_connect(2, Some(B_ADDR.parse().unwrap()), 15);
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || None);
        t.on_request_segment(3, 200, 201, Role::Server, 30, || None);
        // A's read of the answer and its close come before B's write is reported.
        let c = span(100, SpanKind::Client, 2);
        t.on_finished(2, Role::Client, c, None, 20, 50, None, None, &mut out);
        t.conn_closed(2, &mut out);
        let b = span(200, SpanKind::Server, 3);
        let a_local = Some(A_LOCAL.parse().unwrap());
        t.on_finished(
            3,
            Role::Server,
            b,
            None,
            30,
            40,
            a_local,
            Some(8081),
            &mut out,
        );
        assert!(out.is_empty());
        let a = span(100, SpanKind::Server, 1);
        t.on_finished(1, Role::Server, a, None, 10, 60, None, None, &mut out);
        assert_eq!(out.len(), 3);
        let ids: std::collections::HashSet<_> = out.iter().map(|d| d.span.trace_id).collect();
        assert_eq!(ids.len(), 1);
        // And after A's span went out (B reported even later): B still joins.
        let mut t2 = Tracker::new(Sampler::default());
        let mut out2 = Vec::new();
        t2.on_connect(2, Some(B_ADDR.parse().unwrap()), 15);
        t2.on_request_segment(2, 100, 101, Role::Client, 20, || None);
        t2.on_request_segment(3, 200, 201, Role::Server, 30, || None);
        let c = span(100, SpanKind::Client, 2);
        t2.on_finished(2, Role::Client, c, None, 20, 50, None, None, &mut out2);
        assert_eq!(out2.len(), 1, "a root client span goes out at once");
        t2.conn_closed(2, &mut out2);
        let b = span(200, SpanKind::Server, 3);
        t2.on_finished(
            3,
            Role::Server,
            b,
            None,
            30,
            40,
            a_local,
            Some(8081),
            &mut out2,
        );
        assert_eq!(out2.len(), 2);
        assert_eq!(out2[1].span.trace_id, out2[0].span.trace_id);
        assert_eq!(out2[1].span.parent_span_id, out2[0].span.span_id);
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
            None,
            &mut out,
        );
        let c = out
            .iter()
            .find(|d| d.span.trace_id == TraceId::from(5u128))
            .unwrap();
        assert_eq!(c.span.parent_span_id, SpanId::INVALID);
    }

    /// The app sends a `traceparent` of its own while serving a request without one: it is
    /// instrumented, and its header names the parent. Decided when the request it serves
    /// finishes (that request's header is known only then).
    #[test]
    fn explicit_traceparent_on_a_client_request_wins() {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || None);
        let tp = tp(0x55, 0x66, true);
        let c = prepared(100, SpanKind::Client, 2, Some(tp));
        t.on_finished(2, Role::Client, c, Some(tp), 20, 30, None, None, &mut out);
        assert!(out.is_empty(), "held until the request it serves finishes");
        let a = prepared(100, SpanKind::Server, 1, None);
        t.on_finished(1, Role::Server, a, None, 10, 40, None, None, &mut out);
        assert_eq!(out.len(), 2);
        let c = out
            .iter()
            .find(|d| d.span.kind == SpanKind::Client)
            .unwrap();
        assert_eq!(c.span.parent_span_id, tp.span_id);
        assert_eq!(c.span.trace_id, tp.trace_id);
        assert!(c.span.parent_is_remote);
    }

    fn tp(trace: u128, span: u64, sampled: bool) -> TraceParent {
        TraceParent {
            trace_id: TraceId::from(trace),
            span_id: SpanId::from(span),
            sampled,
        }
    }

    /// A span as [`super::super::SpanBuilder::prepare`] makes it: trace id and parent from the
    /// request's `traceparent`, else a fresh trace id (`fresh`).
    fn prepared(pid: u32, kind: SpanKind, fresh: u128, header: Option<TraceParent>) -> SpanRecord {
        let mut s = span(pid, kind, fresh);
        if let Some(h) = header {
            s.trace_id = h.trace_id;
            s.parent_span_id = h.span_id;
            s.parent_is_remote = true;
        }
        s
    }

    /// One finished exchange of [`proxy_chain`].
    #[derive(Clone, Copy, Debug)]
    enum Hop {
        /// The proxy's SERVER request (conn 1, 10..60).
        Proxy,
        /// The proxy's CLIENT request to the upstream (conn 2, 20..50).
        ProxyClient,
        /// The upstream's SERVER request (conn 3, 30..40).
        Upstream,
    }

    /// client → proxy (pid 100) → upstream (pid 200, port 8081); `headers`: the `traceparent`
    /// of the proxy's SERVER request, its CLIENT request and the upstream's SERVER request;
    /// `order`: the order the three finish in. Returns (proxy SERVER, proxy CLIENT, upstream
    /// SERVER) as emitted.
    fn proxy_chain(headers: [Option<TraceParent>; 3], order: [Hop; 3]) -> [Decided; 3] {
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        let (a_local, b) = (A_LOCAL.parse().unwrap(), B_ADDR.parse().unwrap());
        t.on_connect(2, Some(b), 15);
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(2, 100, 101, Role::Client, 20, || Some((a_local, b)));
        t.on_request_segment(3, 200, 201, Role::Server, 30, || None);
        for hop in order {
            let (conn, role, kind, pid, (s, e), h, peer, port) = match hop {
                Hop::Proxy => (
                    1,
                    Role::Server,
                    SpanKind::Server,
                    100,
                    (10, 60),
                    headers[0],
                    None,
                    None,
                ),
                Hop::ProxyClient => (
                    2,
                    Role::Client,
                    SpanKind::Client,
                    100,
                    (20, 50),
                    headers[1],
                    None,
                    None,
                ),
                Hop::Upstream => (
                    3,
                    Role::Server,
                    SpanKind::Server,
                    200,
                    (30, 40),
                    headers[2],
                    Some(a_local),
                    Some(8081),
                ),
            };
            let sp = prepared(pid, kind, conn as u128, h);
            t.on_finished(conn, role, sp, h, s, e, peer, port, &mut out);
        }
        // A span the chain did not claim may be parked, waiting for a caller.
        t.poll_parked(60 + PARK_NS, &mut out);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(out.len(), 3, "{out:?}");
        let mut take = |pid: u32, kind: SpanKind| {
            let i = out
                .iter()
                .position(|d| d.span.process.pid == pid && d.span.kind == kind)
                .unwrap();
            out.swap_remove(i)
        };
        let a = take(100, SpanKind::Server);
        let ac = take(100, SpanKind::Client);
        let b = take(200, SpanKind::Server);
        [a, ac, b]
    }

    const ORDERS: [[Hop; 3]; 3] = [
        // The upstream answers before the proxy reads the answer (the usual order).
        [Hop::Upstream, Hop::ProxyClient, Hop::Proxy],
        [Hop::ProxyClient, Hop::Upstream, Hop::Proxy],
        // The upstream's record is handled after the proxy's spans went out.
        [Hop::ProxyClient, Hop::Proxy, Hop::Upstream],
    ];

    /// Asserts proxy SERVER ← proxy CLIENT ← upstream SERVER in one trace.
    fn assert_tree(chain: &[Decided; 3]) {
        let [a, ac, b] = chain;
        assert!(chain.iter().all(|d| d.span.trace_id == a.span.trace_id));
        assert_eq!(ac.span.parent_span_id, a.span.span_id, "{chain:?}");
        assert!(!ac.span.parent_is_remote);
        assert_eq!(b.span.parent_span_id, ac.span.span_id, "{chain:?}");
        assert!(b.span.parent_is_remote);
        assert!(chain.iter().all(|d| d.sampled == a.sampled));
    }

    /// A proxy sends out the very `traceparent` it received: its CLIENT span is the child of
    /// the SERVER span it serves, the upstream's the child of that CLIENT span, whatever order
    /// the three finish in; the caller's sampled flag holds for the whole chain.
    #[test]
    fn pass_through_proxy_is_a_hop_of_the_callers_trace() {
        for sampled in [true, false] {
            let h = tp(0xabc, 0x77, sampled);
            for order in ORDERS {
                let chain = proxy_chain([Some(h); 3], order);
                assert_tree(&chain);
                let a = &chain[0];
                assert_eq!(a.span.trace_id, h.trace_id, "{order:?}");
                assert_eq!(a.span.parent_span_id, h.span_id);
                assert!(a.span.parent_is_remote);
                assert_eq!(a.sampled, sampled);
            }
        }
    }

    /// Without any `traceparent` the same chain is one tree under a fresh trace id.
    #[test]
    fn proxy_chain_without_traceparent_is_one_tree() {
        for order in ORDERS {
            let chain = proxy_chain([None; 3], order);
            assert_tree(&chain);
            assert_eq!(chain[0].span.parent_span_id, SpanId::INVALID, "{order:?}");
            assert!(chain[0].sampled);
        }
    }

    /// An app that sends a different `traceparent` than it received is instrumented: its
    /// CLIENT span and the upstream's keep that header's parent (the app's own span).
    #[test]
    fn instrumented_app_with_a_different_traceparent_keeps_it() {
        let incoming = tp(0xabc, 0x77, true);
        let own = tp(0xabc, 0x88, true);
        for a_header in [Some(incoming), None] {
            for order in ORDERS {
                let [a, ac, b] = proxy_chain([a_header, Some(own), Some(own)], order);
                assert_eq!(
                    a.span.parent_span_id,
                    a_header.map_or(SpanId::INVALID, |h| h.span_id)
                );
                for d in [&ac, &b] {
                    assert_eq!(d.span.trace_id, own.trace_id, "{order:?}");
                    assert_eq!(d.span.parent_span_id, own.span_id, "{order:?}");
                    assert!(d.span.parent_is_remote);
                    assert!(d.sampled);
                }
            }
        }
    }

    /// The upstream read, answered and had both records handled before the proxy's request
    /// was: its span is parked, then joins the proxy's CLIENT span once that request is known.
    #[test]
    fn pass_through_upstream_finished_before_the_proxy_request_was_read() {
        let h = tp(0xabc, 0x77, true);
        let (a_local, b) = (A_LOCAL.parse().unwrap(), B_ADDR.parse().unwrap());
        let mut t = Tracker::new(Sampler::default());
        let mut out = Vec::new();
        t.on_connect(2, Some(b), 15);
        t.on_request_segment(1, 100, 101, Role::Server, 10, || None);
        t.on_request_segment(3, 200, 201, Role::Server, 30, || None);
        let up = prepared(200, SpanKind::Server, 3, Some(h));
        t.on_finished(
            3,
            Role::Server,
            up,
            Some(h),
            30,
            40,
            Some(a_local),
            Some(8081),
            &mut out,
        );
        assert!(out.is_empty(), "parked, not out with the caller's parent");
        t.on_request_segment(2, 100, 101, Role::Client, 20, || Some((a_local, b)));
        t.poll_parked(45, &mut out);
        let ac = prepared(100, SpanKind::Client, 2, Some(h));
        t.on_finished(2, Role::Client, ac, Some(h), 20, 50, None, None, &mut out);
        assert!(out.is_empty(), "held until the proxy's request finishes");
        let a = prepared(100, SpanKind::Server, 1, Some(h));
        t.on_finished(1, Role::Server, a, Some(h), 10, 60, None, None, &mut out);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(out.len(), 3, "{out:?}");
        let find = |pid: u32, kind: SpanKind| {
            out.iter()
                .find(|d| d.span.process.pid == pid && d.span.kind == kind)
                .unwrap()
        };
        let (a, ac, b) = (
            find(100, SpanKind::Server),
            find(100, SpanKind::Client),
            find(200, SpanKind::Server),
        );
        assert!(
            out.iter()
                .all(|d| d.span.trace_id == h.trace_id && d.sampled)
        );
        assert_eq!(a.span.parent_span_id, h.span_id);
        assert_eq!(ac.span.parent_span_id, a.span.span_id);
        assert_eq!(b.span.parent_span_id, ac.span.span_id);
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
            None,
            &mut out,
        );
        t.expire(100 + MAX_HELD_AGE_NS + 1, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(t.in_flight(), 0);
    }
}
