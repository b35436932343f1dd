//! Syscall numbers and `pt_regs` layout of the architectures the capture backend supports.
//!
//! The raw `sys_exit` tracepoint gives the saved user registers; the syscall number is in
//! `orig_ax` and the arguments in the ABI's argument registers, unchanged at exit (only `ax`
//! holds the return value).

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!("beyla-rs-ebpf supports x86_64 only so far (syscall numbers and pt_regs layout)");

// x86_64 `struct pt_regs` offsets (arch/x86/include/asm/ptrace.h).
pub const REG_DX: u64 = 96;
pub const REG_SI: u64 = 104;
pub const REG_DI: u64 = 112;
pub const REG_ORIG_AX: u64 = 120;

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
pub const SYS_READ: u64 = 0;
pub const SYS_WRITE: u64 = 1;
pub const SYS_CLOSE: u64 = 3;
pub const SYS_READV: u64 = 19;
pub const SYS_WRITEV: u64 = 20;
pub const SYS_SENDFILE: u64 = 40;
pub const SYS_DUP: u64 = 32;
pub const SYS_DUP2: u64 = 33;
pub const SYS_CONNECT: u64 = 42;
pub const SYS_ACCEPT: u64 = 43;
pub const SYS_SENDTO: u64 = 44;
pub const SYS_RECVFROM: u64 = 45;
pub const SYS_SENDMSG: u64 = 46;
pub const SYS_RECVMSG: u64 = 47;
pub const SYS_BIND: u64 = 49;
pub const SYS_CLONE: u64 = 56;
pub const SYS_FORK: u64 = 57;
pub const SYS_VFORK: u64 = 58;
pub const SYS_EXECVE: u64 = 59;
pub const SYS_FCNTL: u64 = 72;
pub const SYS_ACCEPT4: u64 = 288;
pub const SYS_DUP3: u64 = 292;
pub const SYS_EXECVEAT: u64 = 322;
pub const SYS_CLONE3: u64 = 435;
// Syscalls that give a new fd (other than accept and dup).
pub const SYS_OPEN: u64 = 2;
pub const SYS_PIPE: u64 = 22;
pub const SYS_SOCKET: u64 = 41;
pub const SYS_CREAT: u64 = 85;
pub const SYS_EPOLL_CREATE: u64 = 213;
pub const SYS_INOTIFY_INIT: u64 = 253;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_SIGNALFD: u64 = 282;
pub const SYS_TIMERFD_CREATE: u64 = 283;
pub const SYS_EVENTFD: u64 = 284;
pub const SYS_SIGNALFD4: u64 = 289;
pub const SYS_EVENTFD2: u64 = 290;
pub const SYS_EPOLL_CREATE1: u64 = 291;
pub const SYS_PIPE2: u64 = 293;
pub const SYS_INOTIFY_INIT1: u64 = 294;
pub const SYS_MEMFD_CREATE: u64 = 319;
pub const SYS_PIDFD_OPEN: u64 = 434;
pub const SYS_OPENAT2: u64 = 437;

pub const EINPROGRESS: i64 = 115;
/// The map helpers' error for a `BPF_NOEXIST` update of a present key.
pub const EEXIST: i64 = 17;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const CLONE_THREAD: u64 = 0x0001_0000;
pub const F_DUPFD: u64 = 0;
pub const F_DUPFD_CLOEXEC: u64 = 1030;
