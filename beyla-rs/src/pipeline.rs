//! Kernel events in, spans out: the one-way flow
//! event → decode → per-connection protocol state → span → sink.
//!
//! The pipeline never changes the kernel maps itself; it records [`KernelAction`]s that the
//! daemon applies after each drain, so that the ring buffer can be read while the maps are
//! updated from the same thread. Sockets named by fd are read through the capture's
//! [`SocketLookup`], which knows whether the fd still holds the connection.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use beyla_rs_common::{EVENT_FLAG_AFTER_LOSS, EVENT_FLAG_MIDWAY, EVENT_FLAG_TLS, EventKind};

use crate::{
    capture::{DecodeError, Event, SocketLookup},
    connection::{ConnMeta, Connections, DataOutcome, Finished},
    export::Sink,
    metrics::Metrics,
    process::{Processes, ScannedProcess, exe_of},
    protocol::{Role, Segment},
    sampler::Sampler,
    span::{
        SpanBuilder,
        context::{Decided, Tracker},
    },
    stats::Stats,
};

/// A change the kernel maps need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelAction {
    TrackPid(u32),
    UntrackPid(u32),
    /// Stop capturing a connection, if `(tgid, fd)` still is `conn_id` (the process may
    /// have closed the fd and reused it for a new connection in the meantime).
    RemoveConn {
        tgid: u32,
        fd: u32,
        conn_id: u64,
    },
    /// Start capturing a connection found in /proc.
    AddConn {
        tgid: u32,
        fd: u32,
        conn_id: u64,
        role: Role,
    },
    /// A tracked process listens on this port (found in /proc).
    ListenPort(u16),
    /// Look for TLS libraries in a tracked process (it was selected, executed a program, or
    /// opens connections: a library may have been loaded since).
    WatchTls(u32),
}

pub struct Pipeline {
    /// The daemon's own pid (`getpid` is a syscall; this is asked for every event).
    self_pid: u32,
    processes: Processes,
    connections: Connections,
    spans: SpanBuilder,
    sink: Sink,
    stats: Arc<Stats>,
    tracked: HashSet<u32>,
    /// Listening sockets: (tgid, fd) → local address.
    listeners: HashMap<(u32, u32), SocketAddr>,
    actions: Vec<KernelAction>,
    finished: Vec<Finished>,
    /// Ids for connections found in /proc: bit 63 set, so they never collide with the kernel's.
    next_user_conn_id: u64,
    /// Trace context across requests (span/context.rs) and the sampler.
    tracker: Tracker,
    decided: Vec<Decided>,
    /// RED metrics, recorded from every finished exchange before sampling.
    metrics: Option<Arc<Metrics>>,
    /// The capture registers every connection of a tracked process itself, also those
    /// opened before start-up, and tells whether it joined them mid-way: the /proc scan only
    /// reports listening ports then.
    kernel_registers_connections: bool,
    /// When each tracked process's libraries were last looked at for TLS from a connection of
    /// its (kernel time): a library loaded after selection (`dlopen`) is found at the next
    /// connection, at most every [`TLS_RESCAN_NS`].
    tls_scanned: HashMap<u32, u64>,
}

/// Least time between two looks at one process's libraries prompted by its connections.
const TLS_RESCAN_NS: u64 = 2_000_000_000;

impl Pipeline {
    pub fn new(processes: Processes, spans: SpanBuilder, sink: Sink, stats: Arc<Stats>) -> Self {
        Self {
            processes,
            connections: Connections::new(),
            spans,
            sink,
            stats,
            tracked: HashSet::new(),
            listeners: HashMap::new(),
            actions: Vec::new(),
            finished: Vec::new(),
            next_user_conn_id: 1 << 63,
            self_pid: std::process::id(),
            tracker: Tracker::new(Sampler::default()),
            decided: Vec::new(),
            metrics: None,
            kernel_registers_connections: false,
            tls_scanned: HashMap::new(),
        }
    }

    /// The capture registers every connection itself (see [`crate::capture::Backend::sees_sockets`]).
    pub fn with_kernel_registered_connections(mut self, yes: bool) -> Self {
        self.kernel_registers_connections = yes;
        self
    }

    /// Record RED metrics into `metrics` and sample spans with `sampler`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>, sampler: Sampler) -> Self {
        self.metrics = metrics;
        self.tracker = Tracker::new(sampler);
        self
    }

    pub fn take_actions(&mut self) -> Vec<KernelAction> {
        std::mem::take(&mut self.actions)
    }

    pub fn tracked(&self) -> &HashSet<u32> {
        &self.tracked
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    fn start_tracking(&mut self, pid: u32, why: &str) {
        if self.tracked.insert(pid) {
            self.actions.push(KernelAction::WatchTls(pid));
            Stats::inc(&self.stats.processes_instrumented);
            let info = self.processes.info(pid);
            log::info!(
                "instrumenting pid {pid} ({}, service {:?}): {why}",
                info.exe_path,
                info.service_name
            );
        }
    }

    /// A process just selected by the port it bound may have started its workers before:
    /// a Node `cluster` primary forks them first and opens the port when they ask to listen,
    /// then passes them every connection it accepts. Its children running its own program are
    /// its workers; other children (a supervisor's services, helper commands) are not taken.
    fn track_workers(&mut self, pid: u32) {
        let Some(own) = exe_of(pid) else { return };
        for kid in children(pid, None) {
            if kid == self.self_pid
                || self.tracked.contains(&kid)
                || exe_of(kid).as_ref() != Some(&own)
            {
                continue;
            }
            self.processes.adopt(pid, kid);
            self.start_tracking(kid, &format!("worker of instrumented pid {pid}"));
            self.actions.push(KernelAction::TrackPid(kid));
        }
    }

    fn stop_tracking(&mut self, pid: u32) {
        if self.tracked.remove(&pid) {
            log::info!("pid {pid} is gone; no longer instrumented");
        }
        self.processes.gone(pid);
        self.tls_scanned.remove(&pid);
        for (tgid, fd, conn_id) in self.connections.remove_process(pid) {
            self.actions
                .push(KernelAction::RemoveConn { tgid, fd, conn_id });
        }
        self.listeners.retain(|(t, _), _| *t != pid);
        self.tracker.remove_process(pid, &mut self.decided);
        if let Some(m) = &self.metrics {
            m.process_gone(pid);
        }
        self.emit_decided();
    }

    /// Reconcile with a /proc scan: start tracking selected processes the kernel did not
    /// report (already running, or with inherited sockets), register their open connections,
    /// and forget processes that no longer exist.
    pub fn apply_scan(&mut self, scan: Vec<ScannedProcess>, now_ns: u64) {
        for sp in scan {
            for (fd, addr) in &sp.listeners {
                self.listeners.insert((sp.pid, *fd), *addr);
            }
            self.processes.assign(sp.pid, sp.entry);
            if self.tracked.contains(&sp.pid) {
                continue;
            }
            self.start_tracking(sp.pid, "found running at scan");
            self.actions.push(KernelAction::TrackPid(sp.pid));
            for (_, addr) in &sp.listeners {
                self.actions.push(KernelAction::ListenPort(addr.port()));
            }
            if self.kernel_registers_connections {
                continue;
            }
            for c in sp.conns {
                let role = if c.server { Role::Server } else { Role::Client };
                let conn_id = self.next_user_conn_id;
                self.next_user_conn_id += 1;
                let meta = ConnMeta {
                    tgid: sp.pid,
                    peer: Some(c.remote),
                    local_port: c.server.then_some(c.local.port()),
                    local: Some(c.local),
                };
                self.connections
                    .open(conn_id, c.fd, role, meta, true, now_ns);
                self.actions.push(KernelAction::AddConn {
                    tgid: sp.pid,
                    fd: c.fd,
                    conn_id,
                    role,
                });
            }
        }
        let gone: Vec<u32> = self
            .tracked
            .iter()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in gone {
            self.stop_tracking(pid);
            self.actions.push(KernelAction::UntrackPid(pid));
        }
    }

    /// Housekeeping: drop idle connections.
    pub fn expire(&mut self, now_ns: u64) {
        for (tgid, fd, conn_id) in self.connections.expire_idle(now_ns) {
            Stats::inc(&self.stats.connections_evicted);
            self.actions
                .push(KernelAction::RemoveConn { tgid, fd, conn_id });
        }
        self.tracker.expire(now_ns, &mut self.decided);
        self.emit_decided();
    }

    /// After each drain: parked server spans whose caller arrived, or whose wait is over, go
    /// out (see `span::context::PARK_NS`). `u64::MAX` at shutdown releases all of them.
    pub fn poll(&mut self, now_ns: u64) {
        self.tracker.poll_parked(now_ns, &mut self.decided);
        self.emit_decided();
    }

    pub fn handle(&mut self, ev: Result<Event<'_>, DecodeError>, sockets: &dyn SocketLookup) {
        Stats::inc(&self.stats.events_read);
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                Stats::inc(&self.stats.events_malformed);
                log::debug!("malformed ring buffer record: {e}");
                return;
            }
        };
        let h = ev.header;
        if log::log_enabled!(log::Level::Trace) {
            // Every record with its connection id, thread and time: races between threads of
            // one process on one fd number are read from this.
            let what = match ev.kind {
                EventKind::Data => {
                    let head = &ev.payload[..ev.payload.len().min(24)];
                    format!("{:?}", String::from_utf8_lossy(head))
                }
                EventKind::Accept | EventKind::Connect => format!("{:?}", ev.sockaddr()),
                _ => String::new(),
            };
            log::trace!(
                "record {:?} tgid {} tid {} fd {} aux {} conn {:#x} len {} ts {} {what}",
                ev.kind,
                h.tgid,
                h.tid,
                h.fd,
                h.aux,
                h.conn_id,
                h.total_len,
                h.ts_ns
            );
        }
        // Never instrument the daemon itself (its own metrics port selected, forked by an
        // instrumented process, a matching executable): its exports would trace themselves.
        let me = self.self_pid;
        let about_me = match ev.kind {
            EventKind::Bind | EventKind::Exec => h.tgid == me,
            EventKind::Fork => h.aux == me,
            _ => false,
        };
        if about_me {
            self.actions.push(KernelAction::UntrackPid(me));
            return;
        }
        match ev.kind {
            EventKind::Data => self.on_data(&ev, sockets),
            EventKind::Accept => self.on_open(&ev, Role::Server, sockets),
            EventKind::Connect => self.on_open(&ev, Role::Client, sockets),
            EventKind::Close => {
                let fd = h.fd as u32;
                let (id, stale) = self.connections.close_owner(h.conn_id, h.tgid, fd);
                if stale {
                    // The kernel kept this connection's entry (see `close_owner`).
                    self.actions.push(KernelAction::RemoveConn {
                        tgid: h.tgid,
                        fd,
                        conn_id: id,
                    });
                }
                self.connections.close(id, h.ts_ns, &mut self.finished);
                self.flush_finished(id);
                self.tracker.conn_closed(id, &mut self.decided);
                self.emit_decided();
            }
            EventKind::Bind => {
                let pid = h.tgid;
                if !self.processes.select_bound(pid, h.aux as u16) {
                    self.actions.push(KernelAction::UntrackPid(pid));
                    return;
                }
                // Socket-level captures report no fd (-1): their accepts carry the local port.
                if let (Some(addr), true) = (ev.sockaddr(), h.fd >= 0) {
                    self.listeners.insert((pid, h.fd as u32), addr);
                }
                self.start_tracking(pid, &format!("bound selected port {}", h.aux));
                self.track_workers(pid);
            }
            EventKind::Fork => {
                let (parent, child) = (h.tgid, h.aux);
                if !self.tracked.contains(&parent) {
                    return;
                }
                let inherited: Vec<_> = self
                    .listeners
                    .iter()
                    .filter(|((t, _), _)| *t == parent)
                    .map(|((_, fd), a)| (*fd, *a))
                    .collect();
                for (fd, a) in inherited {
                    self.listeners.insert((child, fd), a);
                }
                self.processes.inherit(parent, child);
                self.start_tracking(child, &format!("child of instrumented pid {parent}"));
                // The kernel reported the child's pid in the parent's pid namespace; for
                // processes in a container that differs from ours. /proc lists the children
                // as we see them.
                for kid in children(parent, Some(h.tid)) {
                    if kid != child && kid != me && !self.tracked.contains(&kid) {
                        self.processes.inherit(parent, kid);
                        self.start_tracking(kid, &format!("child of instrumented pid {parent}"));
                        self.actions.push(KernelAction::TrackPid(kid));
                    }
                }
            }
            EventKind::Exec => {
                let pid = h.tgid;
                self.processes.forget(pid);
                if self.tracked.contains(&pid) {
                    if self.processes.still_selected(pid) {
                        // A new program image: new libraries.
                        self.actions.push(KernelAction::WatchTls(pid));
                    } else {
                        self.stop_tracking(pid);
                        self.actions.push(KernelAction::UntrackPid(pid));
                    }
                } else if self.processes.select_exec(pid) {
                    self.start_tracking(pid, "executable matches the selector");
                    self.actions.push(KernelAction::TrackPid(pid));
                }
            }
            EventKind::Exit => self.stop_tracking(h.tgid),
            // A passed descriptor in flight holds the connection open as a duplicate does.
            EventKind::Dup | EventKind::Passed => self.connections.dup(h.conn_id),
        }
    }

    fn on_open(&mut self, ev: &Event<'_>, role: Role, sockets: &dyn SocketLookup) {
        let h = ev.header;
        Stats::inc(&self.stats.connections_opened);
        let due = self
            .tls_scanned
            .get(&h.tgid)
            .is_none_or(|&t| h.ts_ns.saturating_sub(t) >= TLS_RESCAN_NS);
        if due && self.tracked.contains(&h.tgid) {
            self.tls_scanned.insert(h.tgid, h.ts_ns);
            self.actions.push(KernelAction::WatchTls(h.tgid));
        }
        let mut meta = ConnMeta {
            tgid: h.tgid,
            peer: ev.sockaddr(),
            local_port: None,
            local: None,
        };
        let midway = h.flags & EVENT_FLAG_MIDWAY != 0;
        if h.fd < 0 {
            // A socket-level capture: no fd, both addresses in the record, the local port in
            // `aux`.
            meta.local = ev.local_sockaddr();
            if role == Role::Server {
                meta.local_port = Some(h.aux as u16);
            }
        } else if role == Role::Server {
            let listen_fd = h.aux;
            let local = match self.listeners.get(&(h.tgid, listen_fd)) {
                Some(a) => Some(*a),
                None => {
                    // A listener we never saw bound (inherited, or bound before start-up).
                    let a = sockets.listen_addr(h.tgid, listen_fd);
                    if let Some(a) = a {
                        self.listeners.insert((h.tgid, listen_fd), a);
                    }
                    a
                }
            };
            meta.local_port = local.map(|a| a.port());
            if meta.peer.is_none() {
                // accept(fd, NULL, NULL): ask the socket itself. By now the connection may be
                // gone: a socket with no peer (closed, the fd reused) or on another port tells
                // nothing; absent beats wrong.
                let port = meta.local_port;
                meta.peer = sockets
                    .conn_addrs(h.tgid, h.fd as u32, h.conn_id)
                    .filter(|(l, p)| {
                        !p.ip().is_unspecified() && port.is_none_or(|port| l.port() == port)
                    })
                    .map(|(_, p)| p);
            }
        }
        if role == Role::Client {
            self.tracker.on_connect(h.conn_id, meta.peer, h.ts_ns);
        }
        for (tgid, fd, conn_id) in
            self.connections
                .open(h.conn_id, h.fd as u32, role, meta, midway, h.ts_ns)
        {
            Stats::inc(&self.stats.connections_evicted);
            self.actions
                .push(KernelAction::RemoveConn { tgid, fd, conn_id });
        }
    }

    fn on_data(&mut self, ev: &Event<'_>, sockets: &dyn SocketLookup) {
        let h = ev.header;
        let seg = Segment {
            direction: ev.direction(),
            ts_ns: h.ts_ns,
            data: ev.payload,
            total_len: h.total_len,
            extents: ev.extents(),
        };
        if let Some(role) = ev.role()
            && seg.direction == role.request_direction()
        {
            let (tgid, fd) = (h.tgid, h.fd as u32);
            let known = self.connections.addrs(h.conn_id);
            self.tracker
                .on_request_segment(h.conn_id, tgid, h.tid, role, h.ts_ns, || {
                    known.or_else(|| sockets.conn_addrs(tgid, fd, h.conn_id))
                });
        }
        let outcome = self.connections.data(
            h.conn_id,
            h.tgid,
            h.fd as u32,
            ev.role(),
            h.flags & EVENT_FLAG_TLS != 0,
            h.flags & EVENT_FLAG_AFTER_LOSS != 0,
            &seg,
            &mut self.finished,
            &self.stats,
        );
        if let DataOutcome::Drop { tgid, fd } = outcome {
            log::debug!(
                "pid {tgid} fd {fd}: not HTTP (or TLS without plaintext); no longer captured"
            );
            self.actions.push(KernelAction::RemoveConn {
                tgid,
                fd,
                conn_id: h.conn_id,
            });
            self.flush_finished(h.conn_id);
            self.tracker.conn_closed(h.conn_id, &mut self.decided);
            self.emit_decided();
            return;
        }
        self.flush_finished(h.conn_id);
    }

    /// Every exchange finished on `conn_id`: metrics first (they count every request), then
    /// the trace context decides parents and sampling.
    fn flush_finished(&mut self, conn_id: u64) {
        for f in self.finished.drain(..) {
            let process = self.processes.info(f.meta.tgid);
            let p = self.spans.prepare(f.role, &f.meta, process, &f.exchange);
            if let Some(m) = &self.metrics
                && !p.ignore.metrics
            {
                m.record(&p.span.process, &p.measurement);
            }
            if p.ignore.span {
                Stats::inc(&self.stats.spans_ignored);
                continue;
            }
            self.tracker.on_finished(
                conn_id,
                f.role,
                p.span,
                p.header,
                f.exchange.start_ns,
                f.exchange.end_ns.max(f.exchange.start_ns),
                f.meta.peer,
                f.meta.local_port,
                &mut self.decided,
            );
        }
        self.emit_decided();
    }

    fn emit_decided(&mut self) {
        for d in self.decided.drain(..) {
            if d.sampled {
                self.sink.emit(d.span);
            } else {
                Stats::inc(&self.stats.spans_not_sampled);
            }
        }
    }
}

/// The children of process `pid` as /proc lists them: those of thread `tid`, or of all its
/// threads.
fn children(pid: u32, tid: Option<u32>) -> Vec<u32> {
    let tids: Vec<u32> = match tid {
        Some(t) => vec![t],
        None => std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    tids.into_iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/task/{t}/children")).ok())
        .flat_map(|kids| {
            kids.split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}
