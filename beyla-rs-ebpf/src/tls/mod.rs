//! TLS plaintext: what a TLS library's calls read and write, tied to the connection whose
//! socket the library uses.
//!
//! The probes on the library ([`openssl`]) note each call per thread at its entry and send the
//! plaintext at its return, as a data record of the session's connection flagged
//! `EVENT_FLAG_TLS`. A session (`SSL *`, per process) is tied to a connection by the socket
//! I/O the library causes:
//! - inside a call (a library that reads and writes the socket itself: nginx, Python's `ssl`,
//!   curl): the socket I/O a thread performs while it is in a call is that session's;
//! - right after a call that moved nothing through a socket (a library on memory buffers that
//!   the application moves to the socket itself: Node, Python's asyncio): the thread's next
//!   write of TLS records on a connection not yet tied to a session. The handshake's first
//!   flight is such a write, so sessions are tied before any application data moves.
//!
//! Go's `crypto/tls` ([`go`]) needs none of this: its probes read the socket's fd from the Go
//! structures.
//!
//! A tied connection is marked `CONN_TLS`: its encrypted bytes are not sent; the backends' data
//! path asks [`claimed`] before sending socket bytes.

pub mod go;
pub mod openssl;

use aya_ebpf::{macros::map, maps::LruHashMap};
use beyla_rs_common::{
    CONFIG_TLS, CONN_DROPPED, CONN_TLS, ConnInfo, DIR_EGRESS, EVENT_FLAG_TLS, STAT_TLS_UNBOUND,
};

use crate::{
    data::{self, Source},
    maps::{CONNS, config, count, tracked},
    record::{Res, iovec_u64, user_u64},
};

/// [`TlsThread::kind`]: a call that moves application data.
const KIND_DATA: u8 = 0;
/// [`TlsThread::kind`]: a handshake call (its socket I/O ties the session, nothing is sent).
const KIND_HANDSHAKE: u8 = 1;

/// A thread's TLS library call in progress, and the session of its last call that could not be
/// tied to a connection.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsThread {
    ssl: u64,
    buf: u64,
    /// `size_t *` where the `_ex` forms return the byte count; 0 for the others, which return
    /// it.
    len_ptr: u64,
    /// Session awaiting its connection (see the module documentation); 0: none.
    pending: u64,
    direction: u8,
    kind: u8,
    /// A call is in progress (entry seen, return not yet).
    active: u8,
    _pad: [u8; 5],
}

/// Per thread (`pid_tgid`). LRU: threads that exit leave their entry behind.
#[map]
static TLS_THREADS: LruHashMap<u64, TlsThread> = LruHashMap::with_max_entries(16384, 0);

/// Which connection a session is tied to.
#[repr(C)]
#[derive(Clone, Copy)]
struct Binding {
    /// The connection's key in `CONNS` and its id there when tied (a key reused by another
    /// connection no longer matches).
    key: u64,
    conn_id: u64,
    /// The descriptor the syscall backend reports (-1 from the socket-level ones).
    fd: i32,
    _pad: u32,
}

/// Sessions by `[tgid, SSL *]`.
#[map]
static TLS_SESSIONS: LruHashMap<[u64; 2], Binding> = LruHashMap::with_max_entries(65536, 0);

/// Entry of a library call on session `ssl` by a tracked thread.
#[inline(always)]
pub fn call_entry(pid_tgid: u64, ssl: u64, buf: u64, len_ptr: u64, direction: u8, kind: u8) {
    if ssl == 0 || !tracked((pid_tgid >> 32) as u32) {
        return;
    }
    match TLS_THREADS.get_ptr_mut(&pid_tgid) {
        // SAFETY: map value pointer of this thread's own entry.
        Some(t) => unsafe {
            (*t).ssl = ssl;
            (*t).buf = buf;
            (*t).len_ptr = len_ptr;
            (*t).direction = direction;
            (*t).kind = kind;
            (*t).active = 1;
        },
        None => {
            let t = TlsThread {
                ssl,
                buf,
                len_ptr,
                pending: 0,
                direction,
                kind,
                active: 1,
                _pad: [0; 5],
            };
            let _ = TLS_THREADS.insert(&pid_tgid, &t, 0);
        }
    }
}

/// Return of the thread's call with `ret`: send the plaintext it moved, on the session's
/// connection.
#[inline(always)]
pub fn call_return(pid_tgid: u64, ret: i64) -> Res {
    let Some(t) = TLS_THREADS.get_ptr_mut(&pid_tgid) else {
        return Ok(());
    };
    // SAFETY: map value pointer of this thread's own entry; copied out, then the call is
    // marked finished.
    let call = unsafe { *t };
    if call.active == 0 {
        return Ok(());
    }
    unsafe { (*t).active = 0 };
    let moved = if call.kind != KIND_DATA || ret <= 0 {
        0
    } else if call.len_ptr != 0 {
        // `SSL_read_ex`/`SSL_write_ex` return 1 and store the count.
        if ret == 1 {
            user_u64(call.len_ptr).unwrap_or(0)
        } else {
            0
        }
    } else {
        ret as u64
    };
    let tgid = pid_tgid >> 32;
    let session = [tgid, call.ssl];
    // SAFETY: map value read, copied.
    let tied = unsafe { TLS_SESSIONS.get(&session) }
        .copied()
        .and_then(|b| {
            // SAFETY: map value read, copied.
            let conn = unsafe { CONNS.get(&b.key) }.copied()?;
            (conn.conn_id == b.conn_id && conn.is_live()).then_some((b, conn))
        });
    let Some((b, conn)) = tied else {
        // Not tied yet (a library on memory buffers), or its connection is gone: the thread's
        // next TLS write ties it.
        let _ = TLS_SESSIONS.remove(&session);
        // SAFETY: as above.
        unsafe { (*t).pending = call.ssl };
        if moved > 0 {
            count(STAT_TLS_UNBOUND);
        }
        return Ok(());
    };
    if moved == 0 || conn.flags & CONN_DROPPED != 0 {
        return Ok(());
    }
    data::data(
        b.key,
        conn,
        call.direction,
        Source::Buf(call.buf),
        moved,
        pid_tgid,
        b.fd,
        EVENT_FLAG_TLS,
    )
}

/// The session is freed: its address may be reused by the next.
#[inline(always)]
pub fn session_freed(pid_tgid: u64, ssl: u64) {
    let tgid = pid_tgid >> 32;
    if tracked(tgid as u32) {
        let _ = TLS_SESSIONS.remove(&[tgid, ssl]);
    }
}

/// Whether socket bytes that connection `conn` (`key` in `CONNS`) moves are TLS records a
/// session's plaintext stands for (then they are not sent): it is tied to one already, or the
/// bytes are TLS records and the thread is in a library call (this is the call's socket I/O)
/// or has just returned from a call of a session not yet tied.
#[inline(always)]
pub fn claimed(
    key: u64,
    conn: &ConnInfo,
    direction: u8,
    src: Source,
    pid_tgid: u64,
    fd: i32,
) -> bool {
    if conn.flags & CONN_TLS != 0 {
        return true;
    }
    match config() {
        Some(c) if c.flags & CONFIG_TLS != 0 => {}
        _ => return false,
    }
    let Some(t) = TLS_THREADS.get_ptr_mut(&pid_tgid) else {
        return false;
    };
    // SAFETY: map value pointer of this thread's own entry.
    let (active, ssl, pending) = unsafe { ((*t).active, (*t).ssl, (*t).pending) };
    // A library on memory buffers reads the socket before its call and writes it after:
    // only a write follows the call it carries.
    let pending = if direction == DIR_EGRESS { pending } else { 0 };
    // Only bytes that look like TLS records tie: a call whose return was never seen (the
    // thread left it some other way) must not claim the thread's plaintext connections.
    if (active == 0 && pending == 0) || !tls_records(src) {
        return false;
    }
    let ssl = if active != 0 {
        ssl
    } else {
        // SAFETY: as above.
        unsafe { (*t).pending = 0 };
        pending
    };
    let b = Binding {
        key,
        conn_id: conn.conn_id,
        fd,
        _pad: 0,
    };
    let _ = TLS_SESSIONS.insert(&[pid_tgid >> 32, ssl], &b, 0);
    if let Some(p) = CONNS.get_ptr_mut(&key) {
        // SAFETY: map value byte write in place (see `CONN_WIDE_CAPTURE`'s).
        unsafe { (*p).flags |= CONN_TLS };
    }
    true
}

/// The bytes start like a TLS record: content type 20..=24 (change_cipher_spec, alert,
/// handshake, application_data, heartbeat), protocol version 3.x.
#[inline(always)]
fn tls_records(src: Source) -> bool {
    let start = match src {
        Source::Buf(b) => b,
        Source::Iov { iov, kernel, .. } => match iovec_u64(kernel, iov) {
            Ok(b) => b,
            Err(_) => return false,
        },
        Source::Elsewhere => return false,
    };
    let Ok(w) = user_u64(start) else {
        return false;
    };
    let [ty, major, minor, ..] = w.to_le_bytes();
    (20..=24).contains(&ty) && major == 3 && minor <= 4
}

/// The kinds of call, for the probes.
pub mod kind {
    pub const DATA: u8 = super::KIND_DATA;
    pub const HANDSHAKE: u8 = super::KIND_HANDSHAKE;
}
