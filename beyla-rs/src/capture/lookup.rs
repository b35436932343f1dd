//! Socket addresses read after the fact, for records that carry an fd instead of them.
//!
//! The syscall backend reports a connection by `(process, fd)`. Its addresses come from the
//! process's socket, read when the daemon handles the record: up to one drain interval
//! later, when the process may have closed the fd and opened another connection on the same
//! number, often to the same server. Such an answer names the wrong connection (and with it
//! the wrong caller of a request). The kernel's connection map says which connection an fd
//! holds now: a lookup counts only when the map names the record's connection both before
//! and after the socket is read. (One window stays: between a `close` releasing the number
//! in the kernel and its exit updating the map, another thread may open a socket on it.)

use std::net::SocketAddr;

use aya::maps::{HashMap, MapData};
use beyla_rs_common::{ConnInfo, conn_key};

/// Addresses of a process's sockets, as they are now.
pub trait SocketLookup {
    /// Local and peer address of connection `conn_id`, reported on `fd` of `tgid`; `None`
    /// when the fd no longer holds that connection or the socket cannot be read.
    fn conn_addrs(&self, tgid: u32, fd: u32, conn_id: u64) -> Option<(SocketAddr, SocketAddr)>;

    /// Local address of listening socket `fd` of `tgid` (listeners live as long as the
    /// server: their fds are not reused under a connection).
    fn listen_addr(&self, tgid: u32, fd: u32) -> Option<SocketAddr>;
}

/// The lookup of a loaded capture: the fd-keyed connection map vouches for each answer.
pub(super) struct ConnMapLookup<'a> {
    pub(super) conns: &'a HashMap<MapData, u64, ConnInfo>,
    /// The map is keyed by `(tgid, fd)` (syscall backend); the socket-level backends key it
    /// by socket and report addresses in their records.
    pub(super) fd_keyed: bool,
}

impl ConnMapLookup<'_> {
    fn holds(&self, tgid: u32, fd: u32, conn_id: u64) -> bool {
        self.conns
            .get(&conn_key(tgid, fd), 0)
            .is_ok_and(|c| c.conn_id == conn_id && c.is_live())
    }
}

impl SocketLookup for ConnMapLookup<'_> {
    fn conn_addrs(&self, tgid: u32, fd: u32, conn_id: u64) -> Option<(SocketAddr, SocketAddr)> {
        if !self.fd_keyed || !self.holds(tgid, fd, conn_id) {
            return None;
        }
        let addrs = crate::process::socket_addrs(tgid, fd)?;
        // Closed and reused while the socket was read: the entry changed (a close retires it,
        // the next connection on the fd gets a new id).
        self.holds(tgid, fd, conn_id).then_some(addrs)
    }

    fn listen_addr(&self, tgid: u32, fd: u32) -> Option<SocketAddr> {
        crate::process::socket_addrs(tgid, fd).map(|(local, _)| local)
    }
}
