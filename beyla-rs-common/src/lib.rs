//! Types shared by the eBPF programs (`beyla-rs-ebpf`) and the daemon (`beyla-rs`).
//!
//! Everything here is `#[repr(C)]`, has no `bool` and no implicit padding, and its size is
//! asserted at compile time, so both sides agree on the bytes that cross the ring buffer and the
//! maps without any serialisation step.
#![no_std]

use core::mem::size_of;

/// Upper bound, in bytes, of the payload copied out of one syscall buffer. The runtime bound
/// (`BEYLA_BPF_CAPTURE_BYTES`) may be lower, never higher. A power of two so that the eBPF
/// programs can mask offsets with `MAX_CAPTURE - 1` to satisfy the verifier.
pub const MAX_CAPTURE: usize = 4096;

/// Bytes copied from the *end* of every data syscall whose payload was longer than the captured
/// head. Enough to recognise the last chunk of a chunked body (`0\r\n\r\n`) and the end of a
/// header block (`\r\n\r\n`) without copying the body.
pub const TAIL_LEN: usize = 8;

/// The tail copy on HTTP/2 connections ([`CONN_WIDE_CAPTURE`]) whose frame boundaries the
/// kernel does not follow (joined mid-way, or lost): small frames at the end of a write, such
/// as gRPC trailers after a large DATA frame, are found there.
pub const WIDE_TAIL_LEN: usize = 256;

/// Room, in bytes, for the extents that follow the head of a data event (see [`ExtentHeader`]).
pub const MAX_EXTENTS_LEN: usize = 2048;

/// Payload octets of a non-DATA HTTP/2 frame copied as an extent when the frame lies beyond
/// the captured head (trailers, RST_STREAM, WINDOW_UPDATE, a HEADERS block's start).
pub const H2_PAYLOAD_PREFIX: usize = 256;

/// A run of a data syscall's bytes beyond the captured head: `len` octets from offset `offset`
/// of the syscall's data follow this header in the record. A data event's extents (`aux` bytes
/// after the head) are in increasing offset order and never overlap each other; an extent may
/// overlap the head. Two kinds exist: the tail copy (the syscall's last octets) and, on HTTP/2
/// connections whose frame boundaries the kernel follows, every frame header past the head with
/// the start of non-DATA payloads.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExtentHeader {
    pub offset: u32,
    pub len: u32,
}

pub const EXTENT_HEADER_LEN: usize = size_of::<ExtentHeader>();
const _: () = assert!(EXTENT_HEADER_LEN == 8);

/// Where the next HTTP/2 frame header is in one direction of a connection, carried from one
/// syscall to the next (the `H2WALK` map, keyed by [`h2walk_key`]). An entry exists only while
/// the kernel is in sync with the frame boundaries of that direction.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct H2Walk {
    /// Offset, in the next syscall's data, of the next frame header.
    pub next: u32,
    /// Octets at the start of the next syscall that belong to the current frame's copied
    /// payload prefix (they are sent as an extent).
    pub copy_first: u32,
    /// Octets of a frame header that were at the end of the previous syscall (0..=8).
    pub have: u8,
    pub _pad: [u8; 7],
    /// Those octets.
    pub part: [u8; 8],
}

const _: () = assert!(size_of::<H2Walk>() == 24);

/// Key of the `H2WALK` map.
#[inline(always)]
pub const fn h2walk_key(conn_id: u64, direction: u8) -> [u64; 2] {
    [conn_id, direction as u64]
}

/// Number of iovecs of a `readv`/`writev`/`recvmsg`/`sendmsg` call that the programs walk.
/// gRPC's C core (grpcio) sends one iovec per header field: 26 in one `sendmsg` for the first
/// request of a connection.
pub const MAX_IOV: usize = 64;

/// Largest socket address copied for connection events (`sockaddr_in6` is 28 bytes).
pub const SOCKADDR_LEN: usize = 28;

/// Size of the ring buffer records' fixed part; the payload follows it directly.
pub const EVENT_HEADER_LEN: usize = size_of::<EventHeader>();

/// What an [`EventHeader`] describes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes moved on a tracked connection. Payload: the captured head of the data.
    Data = 1,
    /// A tracked process accepted a connection. `aux` is the listening fd; payload: the peer's
    /// `sockaddr` when the application asked for it (empty otherwise).
    Accept = 2,
    /// A tracked process connected a socket. Payload: the destination `sockaddr`.
    Connect = 3,
    /// A tracked connection was closed by `close(2)`.
    Close = 4,
    /// A process bound a socket to one of the selected ports (the kernel already tracks it).
    /// `aux` is the port; payload: the `sockaddr`.
    Bind = 5,
    /// A tracked process created a child process; `aux` is the child's pid (the kernel already
    /// tracks it).
    Fork = 6,
    /// A process called `execve` successfully (only sent while exec watching is enabled).
    Exec = 7,
    /// The main thread of a tracked process exited; the kernel already forgot it.
    Exit = 8,
    /// A tracked connection's fd was duplicated; `fd` is the new fd, `aux` the old one. The
    /// connection lives until its last fd is closed.
    Dup = 9,
    /// A tracked connection's fd was sent to a process (`SCM_RIGHTS`); `fd` is the sender's.
    /// The message in flight holds a reference, as a duplicated fd does; the receiver's fd
    /// is registered as the same connection when it arrives.
    Passed = 10,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Accept,
            3 => Self::Connect,
            4 => Self::Close,
            5 => Self::Bind,
            6 => Self::Fork,
            7 => Self::Exec,
            8 => Self::Exit,
            9 => Self::Dup,
            10 => Self::Passed,
            _ => return None,
        })
    }
}

/// Direction of a data event, seen from the instrumented process.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Role of a connection, decided where the kernel first saw it.
pub const ROLE_UNKNOWN: u8 = 0;
/// Accepted by the process: it is the server; ingress bytes are requests.
pub const ROLE_SERVER: u8 = 1;
/// Connected by the process: it is the client; egress bytes are requests.
pub const ROLE_CLIENT: u8 = 2;

/// Fixed part of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`] for data events.
    pub direction: u8,
    /// The connection's role (`ROLE_*`).
    pub role: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u8,
    /// Bytes of the captured head that follow this header in the record.
    pub captured_len: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The file descriptor the event is about; -1 from the socket-level backends, which see
    /// sockets, not descriptors.
    pub fd: i32,
    /// Kind-specific: listening fd (accept; the local port when `fd` is -1), port (bind), child
    /// pid (fork), old fd (dup). Data events: bytes of extents ([`ExtentHeader`]) that follow
    /// the head in the record.
    pub aux: u32,
    /// Kernel-assigned identity of the connection, unique for the daemon's lifetime, so that a
    /// reused fd number never mixes two connections.
    pub conn_id: u64,
    /// `bpf_ktime_get_ns()` at syscall exit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Bytes the syscall actually moved (its return value); may exceed `captured_len`.
    pub total_len: u64,
}

const _: () = assert!(size_of::<EventHeader>() == 48);

/// [`EventHeader::flags`] of accept/connect events: the connection existed before the capture
/// first saw it (the process had already read from it), so its first bytes may be in the
/// middle of a message.
pub const EVENT_FLAG_MIDWAY: u8 = 1;

/// [`EventHeader::flags`] of data events: the payload is the plaintext a TLS library call
/// (`SSL_read`, `SSL_write`, …) returned or was given, not the bytes on the socket. The
/// connection is the socket the library reads and writes.
pub const EVENT_FLAG_TLS: u8 = 2;

/// [`EventHeader::flags`] of data events: bytes of this connection moved before these were
/// not captured (a record lost: ring buffer full, user memory unreadable), so these may start
/// in the middle of a message. The daemon joins the connection anew from here.
pub const EVENT_FLAG_AFTER_LOSS: u8 = 4;

/// Accept/connect events of the socket-level backends carry two socket addresses, each in
/// [`SOCKADDR_LEN`] bytes: the peer's, then the local one.
pub const SOCKADDR_PAIR_LEN: usize = 2 * SOCKADDR_LEN;

/// Key of the connection map: `(tgid << 32) | fd`.
#[inline(always)]
pub const fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Value of the connection map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub conn_id: u64,
    /// `ROLE_*`.
    pub role: u8,
    /// `CONN_*` bits.
    pub flags: u8,
    /// Non-zero while a record of the connection's bytes was lost (ring buffer full, user
    /// memory unreadable) and no later one was sent: the next carries
    /// [`EVENT_FLAG_AFTER_LOSS`]. A byte of its own, written in place by the data path alone,
    /// so that it never races with the updates of `flags`.
    pub lost: u8,
    pub _pad: [u8; 5],
    /// The syscall backend's account of the fd, changed in place by atomic compare-and-exchange
    /// only: [`FD_CLOSED`] or [`FD_DISPLACED`], or else the number of closes of earlier
    /// connections on this fd that have not returned yet. A syscall's exit is the only point
    /// that backend sees, and `close` releases the fd before it returns, so another thread's
    /// `accept` can get the same number first (again and again under load, hence a count): the
    /// next that many `close` exits on the fd are theirs, not this connection's (the `accept`
    /// reports the connection it displaced closed, since its fd was released). Any other
    /// syscall that gives the number out (`open`, `pipe`, `socket`, …) leaves a
    /// [`ConnInfo::placeholder`] that counts the same way. When a `close` exit and an
    /// `accept` exit of the same fd number run at the same moment on two CPUs, exactly one
    /// wins the exchange on the old entry: the close retires it and deletes it (the accept
    /// waits for the delete), or the accept claims it and the close moves on to the new entry.
    /// A plain lookup-then-delete let the close delete the connection just accepted.
    pub fd_state: u64,
}

/// [`ConnInfo::fd_state`]: the connection's own `close` returned; its entry is being deleted.
pub const FD_CLOSED: u64 = 1 << 63;
/// [`ConnInfo::fd_state`]: an `accept`/`connect`/`dup` that got the fd number before this
/// connection's `close` returned is replacing the entry (for the few instructions between the
/// exchange and the map update).
pub const FD_DISPLACED: u64 = 1 << 62;
/// [`ConnInfo::fd_state`] bits that mean the entry no longer stands for an open connection.
pub const FD_RETIRED: u64 = FD_CLOSED | FD_DISPLACED;

impl ConnInfo {
    /// A connection with no flags that displaced nothing (see [`ConnInfo::fd_state`]).
    pub const fn new(conn_id: u64, role: u8) -> Self {
        ConnInfo {
            conn_id,
            role,
            flags: 0,
            lost: 0,
            _pad: [0; 5],
            fd_state: 0,
        }
    }

    /// The syscall backend's entry for an fd that holds no connection (a file, a pipe, a
    /// socket not connected) but got its number before the `close` of a tracked connection
    /// on it returned: it only counts that close (see [`ConnInfo::fd_state`]), so that the
    /// close is not taken for the next connection's on the same number. Connection ids are
    /// never 0.
    pub const fn placeholder() -> Self {
        Self::new(0, ROLE_UNKNOWN)
    }

    pub const fn is_placeholder(&self) -> bool {
        self.conn_id == 0
    }

    /// The entry stands for an open connection (see [`ConnInfo::fd_state`]).
    pub const fn is_live(&self) -> bool {
        self.fd_state & FD_RETIRED == 0 && !self.is_placeholder()
    }
}

/// The connection speaks HTTP/2: capture [`MAX_CAPTURE`] bytes per syscall whatever the
/// configured bound, because one write often carries many HEADERS frames (50 concurrent gRPC
/// calls from tonic arrive as one 1.5 KiB write), and a lost header block breaks HPACK for
/// the rest of the connection.
pub const CONN_WIDE_CAPTURE: u8 = 1;

/// The daemon stopped capturing the connection (not HTTP). The socket-level backends keep the
/// entry so that the socket is not registered again at its next I/O; its close removes it.
pub const CONN_DROPPED: u8 = 2;

/// A TLS library's calls read and write this connection ([`EVENT_FLAG_TLS`] records carry
/// its plaintext): its encrypted bytes on the socket are not sent.
pub const CONN_TLS: u8 = 4;

const _: () = assert!(size_of::<ConnInfo>() == 24);

/// Where the fields the socket-level backends read are in this kernel's structures, and the
/// values of `enum iter_type` they compare with. The daemon reads them from the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) and writes them into the `OFFSETS` map before attaching: the
/// programs are built once for every kernel, and these layouts differ between releases
/// (`struct iov_iter` was reordered in 6.4, `ITER_UBUF` added in 6.0 and moved to 0 in 6.4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct msghdr`: `msg_iter`.
    pub msghdr_iter: u32,
    /// `struct iov_iter`: `iter_type` (u8), `iov_offset`, `count`, the data pointer (`ubuf`,
    /// `__iov`/`iov`: one union), `nr_segs`.
    pub iter_type: u32,
    pub iter_iov_offset: u32,
    pub iter_count: u32,
    pub iter_ptr: u32,
    pub iter_nr_segs: u32,
    /// `enum iter_type` values: user buffer, user iovec array (`ITER_UBUF` is 255 where the
    /// kernel has none).
    pub iter_ubuf: u32,
    pub iter_iovec: u32,
    /// `struct sock_common` (the start of `struct sock`): family, local port (host order),
    /// peer port (network order), IPv4 peer and local addresses, IPv6 peer and local.
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `struct tcp_sock`: where the application's reading stands (`copied_seq`), the next
    /// sequence number expected (`rcv_nxt`) and the bytes received so far (`bytes_received`):
    /// together they tell whether the application has read anything yet.
    pub tp_copied_seq: u32,
    pub tp_rcv_nxt: u32,
    pub tp_bytes_received: u32,
    /// `struct task_struct`: `pid`, `tgid` (for the fork tracepoint's child).
    pub task_pid: u32,
    pub task_tgid: u32,
    /// Which argument of `tcp_recvmsg` is `flags`: 3, or 4 before Linux 5.19 (which passed
    /// `nonblock` before it).
    pub recvmsg_flags_arg: u32,
    /// `struct sk_buff`: `sk`; `struct sock`: `sk_protocol` (u16). A read that was already
    /// blocked in `tcp_recvmsg` when the hooks were attached is seen only where it copies
    /// (`skb_copy_datagram_iter`): these tell its socket and whether it is TCP.
    pub skb_sk: u32,
    pub sk_protocol: u32,
    /// From a descriptor to its socket (Go's TLS probes know the fd, the socket-level
    /// backends key connections by socket): `task_struct.files`, `files_struct.fdt`,
    /// `fdtable.fd` and `fdtable.max_fds`, `file.private_data`, `socket.sk`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 120);

/// Flags in [`Config::flags`].
pub const CONFIG_WATCH_EXEC: u32 = 1;
/// TLS library probes are attached: socket I/O made inside (or right after) a TLS library call
/// ties the library's session to the connection (see `EVENT_FLAG_TLS`).
pub const CONFIG_TLS: u32 = 2;
/// The connection map is keyed by socket address (the socket-level backends), not by
/// [`conn_key`].
pub const CONFIG_SOCKET_KEYS: u32 = 4;

/// Where Go's `crypto/tls` probes find the socket's fd, from a `*tls.Conn`: its `conn`
/// (a `net.Conn` interface: type word, then data pointer to a `*net.TCPConn`), the
/// `TCPConn`'s `fd` (`*net.netFD`), the `netFD`'s `pfd` (`internal/poll.FD`) and its `Sysfd`.
/// The same in every Go release with the register ABI (1.17 on); the daemon checks each
/// executable's DWARF against them where it has one.
pub const GO_TLS_CONN_CONN: u64 = 0;
pub const GO_TCPCONN_FD: u64 = 0;
pub const GO_NETFD_PFD: u64 = 0;
pub const GO_PFD_SYSFD: u64 = 16;

/// Runtime settings the daemon writes into the `CONFIG` array map before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The daemon's own pid: never instrumented, even when it binds a selected port.
    pub self_tgid: u32,
    /// Bytes copied per data syscall, at most [`MAX_CAPTURE`].
    pub capture_bytes: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Unread ring buffer bytes above which a record wakes the reader up; below it records are
    /// written without a wake-up and the reader drains on its own timer.
    pub wakeup_bytes: u32,
}

const _: () = assert!(size_of::<Config>() == 16);

/// Indices into the per-CPU `STATS` array map.
pub const STAT_RINGBUF_FULL: u32 = 0;
pub const STAT_CAPTURE_FAULT: u32 = 1;
pub const STAT_CONN_MAP_FULL: u32 = 2;
pub const STAT_PID_MAP_FULL: u32 = 3;
/// An `accept`/`close` of one fd number found its entry held by another CPU (see
/// [`ConnInfo::fd_state`]) for longer than it waits (10 ms), and gave up.
pub const STAT_CONN_CONTENDED: u32 = 4;
/// Plaintext a TLS library call moved on a session not (or no longer) tied to a tracked
/// connection: not sent.
pub const STAT_TLS_UNBOUND: u32 = 5;
pub const STAT_COUNT: u32 = 8;

/// Words of the tracked-process bitmap (`TRACKED`, an `Array<u64>`): one bit per process id
/// below the kernel's `PID_MAX_LIMIT` on 64-bit (2^22), so the set is exact. A bit test in an
/// array the verifier inlines costs a few instructions where a hash lookup costs tens of
/// nanoseconds, and the test runs on every syscall exit of every process. The map is
/// `BPF_F_MMAPABLE`: the daemon sets and clears bits with atomic operations on its mapping,
/// the same ones the kernel side uses, so neither side loses the other's update of a word.
pub const TRACKED_WORDS: u32 = 1 << 16;
/// Process ids at or above this have no bit (the kernel never hands them out).
pub const TRACKED_PIDS: u32 = TRACKED_WORDS * 64;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are plain-old-data `repr(C)` structs with no padding (asserted above).
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::H2Walk {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
