//! From a descriptor of the current process to the kernel objects behind it, through the
//! structure offsets the daemon read from the kernel's BTF (`OFFSETS`).

use aya_ebpf::helpers::bpf_get_current_task;

use crate::{
    maps::OFFSETS,
    record::{kernel_read, kernel_u64},
};

/// The open file (`struct file *`) descriptor `fd` of the current process refers to: the one
/// object that stays the same when a descriptor is duplicated or passed to another process.
/// Fails where the offsets were not written (a kernel without BTF).
#[inline(always)]
pub fn file_of(fd: u64) -> Result<u64, i64> {
    let o = OFFSETS.get(0).ok_or(-1)?;
    if o.task_files == 0 {
        return Err(-1);
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files = kernel_u64(task + o.task_files as u64)?;
    let fdt = kernel_u64(files + o.files_fdt as u64)?;
    let max: u32 = kernel_read(fdt + o.fdt_max_fds as u64)?;
    if fd >= max as u64 {
        return Err(-1);
    }
    let table = kernel_u64(fdt + o.fdt_fd as u64)?;
    let file = kernel_u64(table + fd * 8)?;
    if file == 0 { Err(-1) } else { Ok(file) }
}

/// The socket (`struct sock *`) descriptor `fd` of the current process refers to.
#[inline(always)]
pub fn socket_of(fd: u64) -> Result<u64, i64> {
    let o = OFFSETS.get(0).ok_or(-1)?;
    let socket = kernel_u64(file_of(fd)? + o.file_private_data as u64)?;
    kernel_u64(socket + o.socket_sk as u64)
}
