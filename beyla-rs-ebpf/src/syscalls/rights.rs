//! Connections passed between processes over a Unix socket (`SCM_RIGHTS`).
//!
//! A Node `cluster` master (and PM2, some pre-fork servers and socket-activation helpers)
//! accepts each connection and sends it to a worker with `sendmsg`; the worker's descriptor
//! for it is a new number in another process, unknown under `conn_key(tgid, fd)`. Both
//! descriptors refer to one open file, so the sender's side notes the connection under its
//! `struct file *` while the message is in flight, and the receiver's side registers it under
//! its own `(tgid, fd)`: the same connection (same id), now moved by the receiver, whose
//! records then carry its pid.
//!
//! The receiver's `recvmsg` can return before the sender's `sendmsg` does (the message is
//! queued, and read on another CPU, while the sender is still inside the call): then the
//! receiver leaves its descriptor under the open file and the sender's exit registers it.
//!
//! The message in flight holds a reference of its own: the sender usually closes its
//! descriptor right after sending, before the receiver's `recvmsg` returns, so the send is
//! reported (`Passed`) and the daemon counts it like a duplicated descriptor; the received
//! descriptor's `close` ends it. Only the first control message is read (one `SCM_RIGHTS`
//! message is what these servers send), and at most [`MAX_PASSED`] descriptors of it.

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::map,
    maps::LruHashMap,
};
use beyla_rs_common::{ConnInfo, EventKind, STAT_CONN_CONTENDED, conn_key};

use super::{Args, insert_conn, live_conn};
use crate::{
    files::file_of,
    maps::{CONNS, count},
    record::{Res, fill_header, submit, user_u64},
    scratch::scratch,
};

/// `struct user_msghdr`: `msg_control` and `msg_controllen` (which `recvmsg` sets to what it
/// wrote).
const MSG_CONTROL: u64 = 32;
const MSG_CONTROLLEN: u64 = 40;
/// `struct cmsghdr`: `size_t cmsg_len; int cmsg_level; int cmsg_type;`, then the data.
const CMSG_HEADER: u64 = 16;
const SOL_SOCKET: u64 = 1;
const SCM_RIGHTS: u64 = 1;
/// Descriptors of one message looked at.
pub const MAX_PASSED: u64 = 8;

/// Connections in flight by the open file their descriptor refers to. LRU: a message never
/// received (its receiver not tracked, or gone) cannot pin a slot.
#[map]
static IN_FLIGHT: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(4096, 0);

/// A descriptor received before its sender's `sendmsg` returned, by the open file: the
/// sender's exit registers it. Also every other descriptor a tracked process receives (files,
/// pipes, sockets of untracked senders): LRU, and an entry older than [`PAIR_WINDOW_NS`] is
/// not taken (its file may since be another, at the same address).
#[map]
static RECEIVED: LruHashMap<u64, Received> = LruHashMap::with_max_entries(4096, 0);

/// How long a received descriptor waits for its sender's exit: the two run at the same
/// moment on two CPUs, so this only has to cover a preempted exit.
const PAIR_WINDOW_NS: u64 = 1_000_000_000;

/// The receiving process's key for the descriptor (`conn_key(tgid, fd)`), and when it
/// received it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Received {
    owner: u64,
    ts_ns: u64,
}

/// The `SCM_RIGHTS` descriptors of a `sendmsg`/`recvmsg` that returned: the address of the
/// first and how many (0 when the call passed none).
#[inline(always)]
fn passed_fds(a: &Args) -> (u64, u64) {
    let msg = a.si;
    let Ok(len) = user_u64(msg + MSG_CONTROLLEN) else {
        return (0, 0);
    };
    if len < CMSG_HEADER + 4 {
        return (0, 0);
    }
    let Ok(control) = user_u64(msg + MSG_CONTROL) else {
        return (0, 0);
    };
    let (Ok(cmsg_len), Ok(level_type)) = (user_u64(control), user_u64(control + 8)) else {
        return (0, 0);
    };
    if level_type & 0xffff_ffff != SOL_SOCKET || level_type >> 32 != SCM_RIGHTS {
        return (0, 0);
    }
    let len = if cmsg_len < len { cmsg_len } else { len };
    if len < CMSG_HEADER {
        return (0, 0);
    }
    let n = (len - CMSG_HEADER) / 4;
    (
        control + CMSG_HEADER,
        if n > MAX_PASSED { MAX_PASSED } else { n },
    )
}

#[inline(always)]
fn user_fd(addr: u64) -> Option<u32> {
    let mut fd: u32 = 0;
    // SAFETY: reading from the traced process's memory; the helper fails rather than faults.
    let r = unsafe { bpf_probe_read_user((&raw mut fd).cast(), 4, addr as *const _) };
    (r == 0).then_some(fd)
}

/// A tracked process sent descriptors: note the connections among them. Not inlined: its
/// locals stay off the stack of the data path (the verifier bounds the combined stack).
#[inline(never)]
pub fn on_send(a: &Args, pid_tgid: u64) -> Res {
    let (at, n) = passed_fds(a);
    let tgid = (pid_tgid >> 32) as u32;
    for i in 0..MAX_PASSED {
        if i >= n {
            break;
        }
        let Some(fd) = user_fd(at + 4 * i) else {
            break;
        };
        let Some(conn) = live_conn(conn_key(tgid, fd)) else {
            continue;
        };
        let Ok(file) = file_of(fd as u64) else {
            continue;
        };
        if IN_FLIGHT.insert(&file, &conn, 0).is_err() {
            continue;
        }
        // In the scratch buffer, not on the stack (the data path fills it anew after this).
        if let Ok(s) = scratch() {
            fill_header(s, EventKind::Passed, pid_tgid, fd as i32, 0, Some(&conn));
            let _ = submit(s, 0);
        }
        // The receiver's `recvmsg` may have returned before this `sendmsg` did (it runs on
        // another CPU as soon as the message is queued): it left its descriptor here.
        // SAFETY: map value read, copied.
        if let Some(r) = unsafe { RECEIVED.get(&file) }.copied()
            && bpf_now().saturating_sub(r.ts_ns) < PAIR_WINDOW_NS
            && claim(file)
        {
            let _ = RECEIVED.remove(&file);
            // A plain insert, not `insert_conn`'s settling with a pending close (the stack of
            // this call chain is bounded): an entry still there for the receiver's fd number
            // (a close not yet returned) makes it fail, counted.
            let fresh = ConnInfo {
                fd_state: 0,
                ..conn
            };
            if CONNS
                .insert(&(r.owner), &fresh, BPF_NOEXIST as u64)
                .is_err()
            {
                count(STAT_CONN_CONTENDED);
            }
        }
    }
    Ok(())
}

/// A tracked process received descriptors: a connection among them is now also its own.
#[inline(never)]
pub fn on_receive(a: &Args, pid_tgid: u64) -> Res {
    let (at, n) = passed_fds(a);
    for i in 0..MAX_PASSED {
        if i >= n {
            break;
        }
        let Some(fd) = user_fd(at + 4 * i) else {
            break;
        };
        let Ok(file) = file_of(fd as u64) else {
            continue;
        };
        // SAFETY: map value read, copied before the entry is removed.
        let Some(conn) = (unsafe { IN_FLIGHT.get(&file) }).copied() else {
            // Not noted (yet): the sender's exit may still be to come; it looks here.
            let r = Received {
                owner: conn_key((pid_tgid >> 32) as u32, fd),
                ts_ns: bpf_now(),
            };
            let _ = RECEIVED.insert(&file, &r, 0);
            continue;
        };
        if claim(file) {
            // A received descriptor takes the lowest free number, which a `close` not yet
            // returned on another thread may have freed (see `insert_conn`).
            insert_conn(
                pid_tgid,
                fd,
                ConnInfo {
                    fd_state: 0,
                    ..conn
                },
                true,
            );
        }
    }
    Ok(())
}

/// Whichever side of a pass finds the other's entry registers the connection; removing the
/// in-flight entry is the claim, so that exactly one of them does when both look at once.
#[inline(always)]
fn claim(file: u64) -> bool {
    IN_FLIGHT.remove(&file).is_ok()
}

#[inline(always)]
fn bpf_now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}
