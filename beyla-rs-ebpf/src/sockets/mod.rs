//! The socket-level capture backends: hooks on the kernel's TCP socket functions instead of on
//! every syscall. `tcp_sendmsg`/`tcp_recvmsg` run only for TCP socket I/O, so processes that are
//! not instrumented, and syscalls that move no socket data (`epoll_wait`, file I/O), cost
//! nothing beyond the function's own entry; the process test comes first.
//!
//! Two flavours attach the same bodies: fentry/fexit (BTF trampolines) where the kernel
//! allows them ([`fentry`]), kprobes/kretprobes otherwise ([`kprobe`]).
//!
//! - Data: at entry the message's `iov_iter` is noted per thread (the call advances it), at
//!   exit the bytes the call moved are read from it through the shared data path ([`data`]).
//! - Connections are keyed by their socket's address, not `(tgid, fd)`: a socket is registered
//!   the first time a tracked process moves data on it, whoever created it, accepted it or
//!   passed it over a Unix socket. Its role follows from its local port: one that a tracked
//!   process listens on makes it the server side. `tcp_close` ends it.
//! - Processes: `inet_csk_listen_start` selects processes by port (and records the ports
//!   tracked processes listen on); fork and exec come from the scheduler's tracepoints
//!   ([`crate::process`]).
//!
//! Structure layouts differ between kernels: the daemon reads the offsets this needs from the
//! kernel's BTF into [`OFFSETS`].

pub mod fentry;
pub mod kprobe;

use aya_ebpf::{macros::map, maps::LruHashMap};
use beyla_rs_common::{
    CONN_DROPPED, ConnInfo, DIR_INGRESS, EVENT_FLAG_MIDWAY, EVENT_HEADER_LEN, EventKind,
    KernelOffsets, ROLE_CLIENT, ROLE_SERVER, SOCKADDR_LEN, SOCKADDR_PAIR_LEN, STAT_CONN_MAP_FULL,
    STAT_PID_MAP_FULL,
};

use crate::{
    data::{self, Source},
    maps::{CONNS, OFFSETS, config, count, next_conn_id, port_selected, set_tracked, tracked},
    record::{Res, fill_header, header, kernel_read, kernel_u64, submit},
    scratch::{Scratch, scratch},
    tls,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `MSG_PEEK`: the bytes stay queued and are read again; capture them then.
pub const MSG_PEEK: u64 = 2;
/// `tcp_recvmsg`'s flags, given its arguments 3 and 4: which one they are depends on the
/// kernel ([`KernelOffsets::recvmsg_flags_arg`]). Both are read and one is masked away: a
/// choice between the two reads would be compiled into a read at a computed offset of the
/// context, which the verifier refuses.
#[inline(always)]
pub fn recvmsg_flags(arg3: u64, arg4: u64) -> u64 {
    let idx = offsets().map(|o| o.recvmsg_flags_arg).unwrap_or(3);
    let use4 = (crate::record::opaque(idx as usize) == 4) as u64;
    (arg3 & use4.wrapping_sub(1)) | (arg4 & 0u64.wrapping_sub(use4))
}

/// [`Stash::iter_type`] of calls whose bytes are not in user memory (`tcp_sendpage`).
const NOT_USER: u32 = u32::MAX;

/// What a call's entry noted for its exit, per thread (`pid_tgid`): socket functions may sleep
/// and resume on another CPU. LRU: an entry whose exit never ran cannot pin a slot.
#[map]
static STASH: LruHashMap<u64, Stash> = LruHashMap::with_max_entries(16384, 0);

/// Local ports that tracked processes listen on (key: the port). The daemon adds those it
/// finds at start-up.
#[map]
pub static LISTEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// The socket of each connection id, so that the daemon, which knows ids, can mark a
/// connection dropped.
#[map]
pub static SOCKS_BY_ID: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Per thread, kprobe flavour: a chunk an in-flight read is copying (see [`chunk_entry`]).
#[map]
static CHUNK: LruHashMap<u64, Stash> = LruHashMap::with_max_entries(4096, 0);

const IPPROTO_TCP: u16 = 6;

#[repr(C)]
#[derive(Clone, Copy)]
struct Stash {
    sk: u64,
    /// The iterator's data pointer (`ubuf` or the iovec array), segments and offset into the
    /// first, as they were at entry.
    ptr: u64,
    nr_segs: u64,
    iov_offset: u64,
    /// `enum iter_type`, or [`NOT_USER`].
    iter_type: u32,
    direction: u32,
    /// A chunk's length (kprobe flavour of the in-flight read).
    len: u64,
}

impl Stash {
    /// A call whose bytes are not in user memory: only their count matters.
    #[inline(always)]
    fn not_user(sk: u64, direction: u8) -> Self {
        Stash {
            sk,
            ptr: 0,
            nr_segs: 0,
            iov_offset: 0,
            iter_type: NOT_USER,
            direction: direction as u32,
            len: 0,
        }
    }
}

/// Removes and returns the thread's entry of `map` (what its call's entry noted).
#[inline(always)]
fn take(map: &LruHashMap<u64, Stash>, pid_tgid: u64) -> Option<Stash> {
    // SAFETY: map value read, copied out before the entry is removed.
    let stash = unsafe { map.get(&pid_tgid) }.copied()?;
    let _ = map.remove(&pid_tgid);
    Some(stash)
}

#[inline(always)]
fn offsets() -> Result<&'static KernelOffsets, i64> {
    OFFSETS.get(0).ok_or(-1)
}

/// Entry of `tcp_sendmsg`/`tcp_recvmsg`: note where the message's bytes are.
#[inline(always)]
pub fn msg_entry(sk: u64, msg: u64, direction: u8, pid_tgid: u64) -> Res {
    if !tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // SAFETY: map value read.
    if let Some(c) = unsafe { CONNS.get(&sk) }
        && c.flags & CONN_DROPPED != 0
    {
        return Ok(());
    }
    let o = offsets()?;
    let it = msg + o.msghdr_iter as u64;
    let stash = Stash {
        sk,
        ptr: kernel_u64(it + o.iter_ptr as u64)?,
        nr_segs: kernel_u64(it + o.iter_nr_segs as u64)?,
        iov_offset: kernel_u64(it + o.iter_iov_offset as u64)?,
        iter_type: kernel_read::<u8>(it + o.iter_type as u64)? as u32,
        direction: direction as u32,
        len: 0,
    };
    let _ = STASH.insert(&pid_tgid, &stash, 0);
    Ok(())
}

/// Entry of a call whose bytes are not in user memory (`tcp_sendpage`): only the count.
#[inline(always)]
pub fn not_user_entry(sk: u64, direction: u8, pid_tgid: u64) -> Res {
    if !tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let _ = STASH.insert(&pid_tgid, &Stash::not_user(sk, direction), 0);
    Ok(())
}

/// Exit of a call noted by [`msg_entry`] or [`not_user_entry`]: `ret` bytes moved.
#[inline(always)]
pub fn msg_exit(pid_tgid: u64, ret: i64) -> Res {
    let Some(stash) = take(&STASH, pid_tgid) else {
        return Ok(());
    };
    if ret <= 0 {
        return Ok(());
    }
    moved(stash, ret as u64, pid_tgid, true)
}

/// Exit of `tcp_sendpage` seen by fexit, which has the arguments at hand: no entry needed.
#[inline(always)]
pub fn not_user_exit(sk: u64, direction: u8, pid_tgid: u64, ret: i64) -> Res {
    if ret <= 0 || !tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    moved(Stash::not_user(sk, direction), ret as u64, pid_tgid, true)
}

/// `ret` bytes moved as `stash` says. `call_done`: the whole call is over (its exit), so a
/// read has already advanced the application's read position by `ret`; false for a chunk an
/// in-flight read is still copying.
#[inline(always)]
fn moved(stash: Stash, ret: u64, pid_tgid: u64, call_done: bool) -> Res {
    let sk = stash.sk;
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&sk) } {
        Some(c) => *c,
        None => {
            // Registered at the exit of its first call: a read has already moved the
            // application's read position by what it returned.
            let read_now = if call_done && stash.direction == DIR_INGRESS as u32 {
                ret as u32
            } else {
                0
            };
            register(sk, pid_tgid, read_now)?
        }
    };
    if conn.flags & CONN_DROPPED != 0 {
        return Ok(());
    }
    let o = offsets()?;
    let src = if stash.iter_type == o.iter_ubuf {
        Source::Buf(stash.ptr + stash.iov_offset)
    } else if stash.iter_type == o.iter_iovec && stash.iov_offset == 0 {
        // `import_iovec` copied the process's iovec array into the kernel; its buffers are
        // the process's. A call made from a syscall starts at the first byte of its first
        // iovec; anything else (an offset into it) is not a fresh message: count it only.
        Source::Iov {
            iov: stash.ptr,
            cnt: stash.nr_segs,
            kernel: true,
        }
    } else {
        // Pages (sendfile, splice), kernel vectors: the bytes are not the process's memory.
        Source::Elsewhere
    };
    if tls::claimed(sk, &conn, stash.direction as u8, src, pid_tgid, -1) {
        return Ok(());
    }
    data::data(sk, conn, stash.direction as u8, src, ret, pid_tgid, -1, 0)
}

/// A chunk that `skb_copy_datagram_iter` copies into `to`, the `iov_iter` of a TCP read by a
/// tracked thread that the `tcp_recvmsg` hooks did not see begin: a read that was already
/// blocked when they were attached (a thread-per-connection server waiting on a keep-alive
/// connection opened before the daemon started). Neither fexit nor a kretprobe fires for a
/// call entered before them; the copy happens after the thread wakes up, so its hook does.
/// User buffers (`ITER_UBUF`, or `ITER_IOVEC` with the chunk in one entry); `advanced`: the
/// iterator has already moved past the chunk (at its exit).
#[inline(always)]
fn in_flight_chunk(skb: u64, to: u64, len: u64, advanced: bool, pid_tgid: u64) -> Option<Stash> {
    if !tracked((pid_tgid >> 32) as u32) {
        return None;
    }
    // SAFETY: map value read.
    if unsafe { STASH.get(&pid_tgid) }.is_some() {
        // The `tcp_recvmsg` hooks have this call.
        return None;
    }
    let o = offsets().ok()?;
    let sk: u64 = kernel_read(skb + o.skb_sk as u64).ok()?;
    if sk == 0 || kernel_read::<u16>(sk + o.sk_protocol as u64).ok()? != IPPROTO_TCP {
        return None;
    }
    let kind = kernel_read::<u8>(to + o.iter_type as u64).ok()? as u32;
    let ptr = kernel_u64(to + o.iter_ptr as u64).ok()?;
    let off = kernel_u64(to + o.iter_iov_offset as u64).ok()?;
    let dest = if kind == o.iter_ubuf {
        // One buffer: `iov_offset` is where the chunk goes, or ends once copied.
        if advanced {
            ptr + off.wrapping_sub(len)
        } else {
            ptr + off
        }
    } else if kind == o.iter_iovec {
        // An iovec array (kernel memory; before 6.4 a plain `read`/`recvfrom` has one entry):
        // the chunk must lie within one entry. Once copied, an entry it filled is behind the
        // iterator: the chunk then ends where the previous entry ends.
        if !advanced {
            let base = kernel_u64(ptr).ok()?;
            let room = kernel_u64(ptr + 8).ok()?;
            if off + len > room {
                return None;
            }
            base + off
        } else if off >= len {
            kernel_u64(ptr).ok()? + off - len
        } else if off == 0 {
            let base = kernel_u64(ptr - 16).ok()?;
            let room = kernel_u64(ptr - 8).ok()?;
            if room < len {
                return None;
            }
            base + room - len
        } else {
            return None;
        }
    } else {
        return None;
    };
    Some(Stash {
        sk,
        ptr: dest,
        nr_segs: 0,
        iov_offset: 0,
        iter_type: o.iter_ubuf,
        direction: DIR_INGRESS as u32,
        len,
    })
}

/// Exit of `skb_copy_datagram_iter` (fexit: arguments at hand, the copy done when `ret` is 0).
#[inline(always)]
pub fn chunk_exit(skb: u64, to: u64, len: u64, ret: i64, pid_tgid: u64) -> Res {
    if ret != 0 || len == 0 {
        return Ok(());
    }
    match in_flight_chunk(skb, to, len, true, pid_tgid) {
        Some(stash) => moved(stash, len, pid_tgid, false),
        None => Ok(()),
    }
}

/// Entry of `skb_copy_datagram_iter` (kprobe flavour: the return sees no arguments).
#[inline(always)]
pub fn chunk_entry(skb: u64, to: u64, len: u64, pid_tgid: u64) -> Res {
    if len == 0 {
        return Ok(());
    }
    if let Some(stash) = in_flight_chunk(skb, to, len, false, pid_tgid) {
        let _ = CHUNK.insert(&pid_tgid, &stash, 0);
    }
    Ok(())
}

/// Return of `skb_copy_datagram_iter` (kprobe flavour).
#[inline(always)]
pub fn chunk_return(pid_tgid: u64, ret: i64) -> Res {
    let Some(stash) = take(&CHUNK, pid_tgid) else {
        return Ok(());
    };
    if ret != 0 {
        return Ok(());
    }
    moved(stash, stash.len, pid_tgid, false)
}

/// A socket a tracked process moves data on for the first time: register it and tell the
/// daemon (an accept or connect record with both addresses). `read_now`: bytes the call being
/// registered has just read.
#[inline(always)]
fn register(sk: u64, pid_tgid: u64, read_now: u32) -> Result<ConnInfo, i64> {
    let o = offsets()?;
    let family: u16 = kernel_read(sk + o.sk_family as u64)?;
    if family != AF_INET && family != AF_INET6 {
        return Err(-1);
    }
    let lport: u16 = kernel_read(sk + o.sk_num as u64)?;
    // SAFETY: map value read.
    let server = unsafe { LISTEN.get(&(lport as u32)) }.is_some();
    let role = if server { ROLE_SERVER } else { ROLE_CLIENT };
    // The application had read nothing before this call iff its read position, less what
    // this call read, is where the stream began: `rcv_nxt - bytes_received` (sequence
    // numbers wrap; `bytes_received` counts every byte received).
    let copied: u32 = kernel_read(sk + o.tp_copied_seq as u64)?;
    let rcv_nxt: u32 = kernel_read(sk + o.tp_rcv_nxt as u64)?;
    let received: u64 = kernel_read(sk + o.tp_bytes_received as u64)?;
    let midway = copied.wrapping_sub(read_now) != rcv_nxt.wrapping_sub(received as u32);
    let conn = ConnInfo::new(next_conn_id(), role);
    if CONNS.insert(&sk, &conn, 0).is_err() {
        count(STAT_CONN_MAP_FULL);
    }
    let _ = SOCKS_BY_ID.insert(&conn.conn_id, &sk, 0);

    let s = scratch()?;
    let kind = if server {
        EventKind::Accept
    } else {
        EventKind::Connect
    };
    fill_header(s, kind, pid_tgid, -1, lport as u32, Some(&conn));
    let dport: u16 = kernel_read(sk + o.sk_dport as u64)?;
    if family == AF_INET {
        let daddr: [u8; 4] = kernel_read(sk + o.sk_daddr as u64)?;
        let saddr: [u8; 4] = kernel_read(sk + o.sk_rcv_saddr as u64)?;
        put_sockaddr_in(s, 0, dport, &daddr);
        put_sockaddr_in(s, SOCKADDR_LEN, lport.to_be(), &saddr);
    } else {
        let daddr: [u8; 16] = kernel_read(sk + o.sk_v6_daddr as u64)?;
        let saddr: [u8; 16] = kernel_read(sk + o.sk_v6_rcv_saddr as u64)?;
        put_sockaddr_in6(s, 0, dport, &daddr);
        put_sockaddr_in6(s, SOCKADDR_LEN, lport.to_be(), &saddr);
    }
    let h = header(s);
    h.captured_len = SOCKADDR_PAIR_LEN as u32;
    if midway {
        h.flags = EVENT_FLAG_MIDWAY;
    }
    submit(s, SOCKADDR_PAIR_LEN)?;
    Ok(conn)
}

/// `struct sockaddr_in` at payload offset `at` (`port` in network order).
#[inline(always)]
fn put_sockaddr_in(s: &mut Scratch, at: usize, port: u16, addr: &[u8; 4]) {
    let p = &mut s.buf[EVENT_HEADER_LEN + at..EVENT_HEADER_LEN + at + SOCKADDR_LEN];
    p.fill(0);
    p[..2].copy_from_slice(&AF_INET.to_ne_bytes());
    p[2..4].copy_from_slice(&port.to_ne_bytes());
    p[4..8].copy_from_slice(addr);
}

/// `struct sockaddr_in6` at payload offset `at` (`port` in network order).
#[inline(always)]
fn put_sockaddr_in6(s: &mut Scratch, at: usize, port: u16, addr: &[u8; 16]) {
    let p = &mut s.buf[EVENT_HEADER_LEN + at..EVENT_HEADER_LEN + at + SOCKADDR_LEN];
    p.fill(0);
    p[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
    p[2..4].copy_from_slice(&port.to_ne_bytes());
    p[8..24].copy_from_slice(addr);
}

/// `tcp_close`: the connection ends (whichever process closes the last reference).
#[inline(always)]
pub fn close(sk: u64, pid_tgid: u64) -> Res {
    // SAFETY: map value read.
    let conn = match unsafe { CONNS.get(&sk) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    let _ = CONNS.remove(&sk);
    let _ = SOCKS_BY_ID.remove(&conn.conn_id);
    if conn.flags & CONN_DROPPED != 0 {
        return Ok(());
    }
    let s = scratch()?;
    fill_header(s, EventKind::Close, pid_tgid, -1, 0, Some(&conn));
    submit(s, 0)
}

/// `inet_csk_listen_start`: a process starts listening. On a selected port it is selected
/// (as the syscall backend's `bind`); a tracked process's listening port makes the sockets
/// accepted on it server sides.
#[inline(always)]
pub fn listen(sk: u64, pid_tgid: u64) -> Res {
    let tgid = (pid_tgid >> 32) as u32;
    let o = offsets()?;
    let lport: u16 = kernel_read(sk + o.sk_num as u64)?;
    let selected = port_selected(lport);
    if !selected && !tracked(tgid) {
        return Ok(());
    }
    match config() {
        Some(c) if c.self_tgid != tgid => {}
        _ => return Ok(()),
    }
    let _ = LISTEN.insert(&(lport as u32), &1, 0);
    if !selected {
        return Ok(());
    }
    if !set_tracked(tgid, true) {
        count(STAT_PID_MAP_FULL);
    }
    let family: u16 = kernel_read(sk + o.sk_family as u64)?;
    let s = scratch()?;
    fill_header(s, EventKind::Bind, pid_tgid, -1, lport as u32, None);
    if family == AF_INET6 {
        let saddr: [u8; 16] = kernel_read(sk + o.sk_v6_rcv_saddr as u64)?;
        put_sockaddr_in6(s, 0, lport.to_be(), &saddr);
    } else {
        let saddr: [u8; 4] = kernel_read(sk + o.sk_rcv_saddr as u64)?;
        put_sockaddr_in(s, 0, lport.to_be(), &saddr);
    }
    header(s).captured_len = SOCKADDR_LEN as u32;
    submit(s, SOCKADDR_LEN)
}
