//! This kernel's structure layouts, from its BTF (`/sys/kernel/btf/vmlinux`), for the
//! socket-level backends.
//!
//! The kernel programs are built once for every kernel and read a few fields of `struct
//! msghdr`, `struct iov_iter`, `struct sock` and `struct task_struct`. Those layouts move
//! between releases (`iov_iter` was reordered in 6.4, `ITER_UBUF` added in 6.0 and renumbered
//! in 6.4, `tcp_recvmsg` lost an argument in 5.19), and the Rust eBPF toolchain emits no CO-RE
//! relocations, so the daemon looks the offsets up here and hands them to the programs.

use std::path::Path;

use beyla_rs_common::KernelOffsets;
use btf_rs::{Backend, Btf, Type};
use thiserror::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading the kernel's BTF ({path}): {source}")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
    #[error("the kernel's BTF: {0}")]
    Parse(#[from] btf_rs::Error),
    #[error("{0} is a bit field")]
    BitField(String),
}

/// A kernel's BTF, parsed.
pub struct KernelBtf(Btf);

impl KernelBtf {
    /// Maps the file where the kernel allows it (the parsed form of a whole kernel's BTF
    /// takes tens of MB of heap), else parses it.
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(path, Backend::Cache))
            .map(KernelBtf)
            .map_err(|source| BtfError::Read {
                path: path.display().to_string(),
                source,
            })
    }

    /// Whether the kernel has function `name` (a hook on a missing one cannot load).
    pub fn has_function(&self, name: &str) -> bool {
        self.0
            .resolve_types_by_name(name)
            .is_ok_and(|ts| ts.iter().any(|t| matches!(t, Type::Func(_))))
    }

    /// The offsets the socket-level programs need.
    pub fn offsets(&self) -> Result<KernelOffsets, BtfError> {
        kernel_offsets(&self.0)
    }
}

fn kernel_offsets(b: &Btf) -> Result<KernelOffsets, BtfError> {
    let iter_ptr = member_offset(b, "iov_iter", &["__iov", "iov"])?;
    let ubuf = member_offset(b, "iov_iter", &["ubuf"]).ok();
    if ubuf.is_some_and(|u| u != iter_ptr) {
        // The programs read one pointer for both; a layout where they differ is not one they
        // know.
        return Err(BtfError::Missing(
            "iov_iter.ubuf in the union of iov_iter.__iov".into(),
        ));
    }
    Ok(KernelOffsets {
        msghdr_iter: member_offset(b, "msghdr", &["msg_iter"])?,
        iter_type: member_offset(b, "iov_iter", &["iter_type"])?,
        iter_iov_offset: member_offset(b, "iov_iter", &["iov_offset"])?,
        iter_count: member_offset(b, "iov_iter", &["count"])?,
        iter_ptr,
        iter_nr_segs: member_offset(b, "iov_iter", &["nr_segs"])?,
        iter_ubuf: enum_value(b, "iter_type", "ITER_UBUF").unwrap_or(u8::MAX as u32),
        iter_iovec: enum_value(b, "iter_type", "ITER_IOVEC")?,
        sk_family: member_offset(b, "sock_common", &["skc_family"])?,
        sk_num: member_offset(b, "sock_common", &["skc_num"])?,
        sk_dport: member_offset(b, "sock_common", &["skc_dport"])?,
        sk_daddr: member_offset(b, "sock_common", &["skc_daddr"])?,
        sk_rcv_saddr: member_offset(b, "sock_common", &["skc_rcv_saddr"])?,
        sk_v6_daddr: member_offset(b, "sock_common", &["skc_v6_daddr"])?,
        sk_v6_rcv_saddr: member_offset(b, "sock_common", &["skc_v6_rcv_saddr"])?,
        tp_copied_seq: member_offset(b, "tcp_sock", &["copied_seq"])?,
        tp_rcv_nxt: member_offset(b, "tcp_sock", &["rcv_nxt"])?,
        tp_bytes_received: member_offset(b, "tcp_sock", &["bytes_received"])?,
        task_pid: member_offset(b, "task_struct", &["pid"])?,
        task_tgid: member_offset(b, "task_struct", &["tgid"])?,
        recvmsg_flags_arg: param_index(b, "tcp_recvmsg", "flags")?,
        skb_sk: member_offset(b, "sk_buff", &["sk"])?,
        sk_protocol: member_offset(b, "sock", &["sk_protocol"])?,
        task_files: member_offset(b, "task_struct", &["files"])?,
        files_fdt: member_offset(b, "files_struct", &["fdt"])?,
        fdt_fd: member_offset(b, "fdtable", &["fd"])?,
        fdt_max_fds: member_offset(b, "fdtable", &["max_fds"])?,
        file_private_data: member_offset(b, "file", &["private_data"])?,
        socket_sk: member_offset(b, "socket", &["sk"])?,
        _pad: 0,
    })
}

/// The struct or union named `name` (the first with members: forward declarations have none).
fn composite(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    btf.resolve_types_by_name(name)
        .map_err(|_| BtfError::Missing(format!("struct {name}")))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::Missing(format!("struct {name}")))
}

/// Byte offset of the first of `names` found in struct `outer`, looking into anonymous
/// structs and unions as C does.
fn member_offset(btf: &Btf, outer: &str, names: &[&str]) -> Result<u32, BtfError> {
    let s = composite(btf, outer)?;
    for name in names {
        if let Some(bits) = find_member(btf, &s, name, 0)? {
            if bits % 8 != 0 {
                return Err(BtfError::BitField(format!("{outer}.{name}")));
            }
            return Ok(bits / 8);
        }
    }
    Err(BtfError::Missing(format!("{outer}.{}", names.join(" or "))))
}

/// Bit offset of `name` in `s` (itself at bit `base`), searching anonymous members.
fn find_member(
    btf: &Btf,
    s: &btf_rs::Struct,
    name: &str,
    base: u32,
) -> Result<Option<u32>, BtfError> {
    for m in &s.members {
        let here = base + m.bit_offset();
        let member_name = btf.resolve_name(m)?;
        if member_name == name {
            if m.bitfield_size().is_some_and(|n| n != 0) {
                return Err(BtfError::BitField(name.to_owned()));
            }
            return Ok(Some(here));
        }
        if member_name.is_empty() {
            let mut t = btf.resolve_chained_type(m)?;
            // Qualifiers and typedefs stand between a member and its struct.
            for _ in 0..8 {
                match t {
                    Type::Struct(_) | Type::Union(_) => break,
                    Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) => {
                        let next = match t.as_btf_type() {
                            Some(bt) => btf.resolve_chained_type(bt)?,
                            None => break,
                        };
                        t = next;
                    }
                    _ => break,
                }
            }
            if let Type::Struct(inner) | Type::Union(inner) = &t
                && let Some(found) = find_member(btf, inner, name, here)?
            {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// The value of enumerator `member` of `enum name`.
fn enum_value(btf: &Btf, name: &str, member: &str) -> Result<u32, BtfError> {
    for t in btf.resolve_types_by_name(name).unwrap_or_default() {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m)? == member {
                    return Ok(m.val());
                }
            }
        }
    }
    Err(BtfError::Missing(format!("enum {name}::{member}")))
}

/// Index of parameter `param` of function `func`.
fn param_index(btf: &Btf, func: &str, param: &str) -> Result<u32, BtfError> {
    for t in btf.resolve_types_by_name(func).unwrap_or_default() {
        if let Type::Func(f) = &t
            && let Type::FuncProto(proto) = btf.resolve_chained_type(f)?
        {
            for (i, p) in proto.parameters.iter().enumerate() {
                if btf.resolve_name(p)? == param {
                    return Ok(i as u32);
                }
            }
        }
    }
    Err(BtfError::Missing(format!("parameter {param} of {func}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the machine the tests run on: the offsets agree with what this kernel's BTF says
    /// about the fields' neighbours (sizes and order that every supported kernel shares).
    #[test]
    fn offsets_of_the_running_kernel() {
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).expect("this kernel's BTF");
        let o = btf.offsets().expect("every offset");
        assert!(btf.has_function("tcp_sendmsg"));
        assert!(!btf.has_function("no_such_function_in_any_kernel"));
        // `struct sock_common` starts with the address pair, then the port pair.
        assert_eq!(o.sk_daddr, 0);
        assert_eq!(o.sk_rcv_saddr, 4);
        assert_eq!(o.sk_dport, 12);
        assert_eq!(o.sk_num, 14);
        assert_eq!(o.sk_family, 16);
        // `iter_type` is the first member of `struct iov_iter`.
        assert_eq!(o.iter_type, 0);
        assert_ne!(o.iter_ubuf, o.iter_iovec);
        assert!(o.iter_count > 0 && o.iter_ptr > 0 && o.iter_nr_segs > o.iter_ptr);
        // `pid` and `tgid` are adjacent `pid_t`s.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert_eq!(o.recvmsg_flags_arg, 3);
        assert!(o.tp_copied_seq > 0 && o.tp_rcv_nxt > 0 && o.tp_bytes_received > 0);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = KernelBtf::load(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("no such file");
        assert!(
            e.to_string()
                .starts_with("reading the kernel's BTF (/nonexistent/vmlinux)")
        );
    }
}
