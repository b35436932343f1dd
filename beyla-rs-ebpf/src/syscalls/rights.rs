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
//! The message in flight holds a reference of its own: the sender usually closes its
//! descriptor right after sending, before the receiver's `recvmsg` returns, so the send is
//! reported (`Passed`) and the daemon counts it like a duplicated descriptor; the received
//! descriptor's `close` ends it. Only the first control message is read (one `SCM_RIGHTS`
//! message is what these servers send), and at most [`MAX_PASSED`] descriptors of it.

use aya_ebpf::{helpers::generated::bpf_probe_read_user, macros::map, maps::LruHashMap};
use beyla_rs_common::{ConnInfo, EventKind, conn_key};

use super::{Args, insert_conn, live_conn};
use crate::{
    files::file_of,
    record::{Res, emit_conn, user_u64},
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
        if IN_FLIGHT.insert(&file, &conn, 0).is_ok() {
            let _ = emit_conn(EventKind::Passed, pid_tgid, fd as i32, &conn);
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
            continue;
        };
        let _ = IN_FLIGHT.remove(&file);
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
    Ok(())
}
