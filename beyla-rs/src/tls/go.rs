//! Go's `crypto/tls`, seen from its executable: where the uprobes that capture a Go program's
//! TLS plaintext go, and how they get from a `*tls.Conn` to the socket.
//!
//! Go does not use a shared TLS library: `crypto/tls` is compiled into the executable, so the
//! plaintext is captured by uprobes on `crypto/tls.(*Conn).Read` and `Write` there, at the file
//! offsets [`inspect`] finds.
//!
//! - **No uretprobes.** A uretprobe replaces the return address on the stack with a trampoline's.
//!   Go copies goroutine stacks elsewhere when they grow and walks them (garbage collector,
//!   tracebacks, panics); a return address it does not know crashes the program ("unexpected
//!   return pc"). The end of `Read`, when the plaintext is in the caller's buffer, is therefore
//!   captured by plain uprobes on every `RET` instruction of the function. They are found by
//!   decoding the function with an x86-64 decoder: a search for the byte 0xC3 also finds
//!   immediates, displacements and ModRM bytes of other instructions, and a uprobe placed inside
//!   an instruction corrupts it.
//! - **Register ABI.** Since Go 1.17 on x86-64, arguments and results travel in registers: the
//!   receiver in RAX, the buffer in RBX (pointer) and RCX (length), the count returned in RAX, the
//!   current goroutine in R14. The probes read those; older Go passes everything on the stack,
//!   at other places, and is refused.
//! - **Where the functions are.** `.symtab` when the binary has one. A binary linked with `-s` has
//!   none, but Go keeps its own function table, `.gopclntab`, for tracebacks: its Go 1.16+
//!   formats are read instead. A binary with neither is reported as stripped.
//! - **Struct offsets** from a `*tls.Conn` to the socket's fd are read from DWARF when the binary
//!   has it (the Go linker compresses it with zlib); without (`-w`) they are
//!   [`GoOffsets::default`].

use std::borrow::Cow;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use gimli::Reader as _;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, Register};

use object::{
    Architecture, CompressionFormat, Object, ObjectSection, ObjectSegment, ObjectSymbol,
    SegmentFlags, SymbolSection,
};
use thiserror::Error;

use super::elf::code_at;

/// The functions probed, as Go names them (in `.symtab` and `.gopclntab` alike).
const READ_FN: &str = "crypto/tls.(*Conn).Read";
const WRITE_FN: &str = "crypto/tls.(*Conn).Write";
const FUNCTIONS: [&str; 2] = [READ_FN, WRITE_FN];

const ELF_MAGIC: &[u8] = b"\x7fELF";

/// What the uprobes on a Go executable's crypto/tls need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTls {
    /// The Go version from the build info (`.go.buildinfo`), e.g. "go1.19.8"; `None` when it
    /// cannot be read.
    pub version: Option<String>,
    /// File offset (what uprobe attach wants) of `crypto/tls.(*Conn).Read`'s entry.
    pub read: u64,
    /// File offsets of every RET instruction inside `crypto/tls.(*Conn).Read`.
    pub read_returns: Vec<u64>,
    /// File offset of `crypto/tls.(*Conn).Write`'s entry.
    pub write: u64,
    pub offsets: GoOffsets,
}

/// Struct field offsets to walk from a *tls.Conn to the socket fd:
/// tls.Conn.conn (net.Conn interface: itab ptr, data ptr) -> data points to *net.TCPConn -> its
/// embedded net.conn.fd (*net.netFD) -> netFD.pfd (internal/poll.FD) -> FD.Sysfd (int)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoOffsets {
    /// `crypto/tls.Conn.conn`: the `net.Conn` interface (itab pointer, then data pointer).
    pub tls_conn_conn: u32,
    /// `net.TCPConn`'s embedded `net.conn` plus `net.conn.fd` (a `*net.netFD`).
    pub tcpconn_fd: u32,
    /// `net.netFD.pfd` (an `internal/poll.FD`, inline).
    pub netfd_pfd: u32,
    /// `internal/poll.FD.Sysfd` (an `int`).
    pub pfd_sysfd: u32,
}

impl Default for GoOffsets {
    /// The layout of Go 1.17–1.23, for binaries without DWARF: each field but `Sysfd` is the
    /// first of its struct, and `Sysfd` follows `poll.FD.fdmu` (an `fdMutex`: a `uint64` and two
    /// `uint32`s). Checked against the DWARF of Debian's go1.19.8 (see the tests); for the other
    /// versions it is the struct definitions of Go's sources, not a binary, that say so.
    fn default() -> Self {
        // The kernel probes read these very offsets (they are the shared constants).
        Self {
            tls_conn_conn: beyla_rs_common::GO_TLS_CONN_CONN as u32,
            tcpconn_fd: beyla_rs_common::GO_TCPCONN_FD as u32,
            netfd_pfd: beyla_rs_common::GO_NETFD_PFD as u32,
            pfd_sysfd: beyla_rs_common::GO_PFD_SYSFD as u32,
        }
    }
}

/// Why a Go executable's TLS cannot be probed. Each message names the file and, where it is
/// about the binary rather than the I/O, says that TLS capture is skipped for it.
#[derive(Debug, Error)]
pub enum GoError {
    #[error("{}: malformed or unexpected executable ({reason}); Go TLS capture is skipped for it", .path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: Go binary for {arch}, but Go TLS capture supports only x86-64; skipped for it", .path.display())]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error(
        "{}: built with {version}, but Go TLS capture needs Go 1.17 or later (register ABI); skipped for it",
        .path.display()
    )]
    UnsupportedGoVersion { path: PathBuf, version: String },
    #[error(
        "{}: Go binary is stripped (no .symtab and no .gopclntab to find {READ_FN} and {WRITE_FN} in); TLS capture is skipped for it",
        .path.display()
    )]
    Stripped { path: PathBuf },
    #[error(
        "{}: Go's function table (.gopclntab) cannot be used: {reason}; TLS capture is skipped for it",
        .path.display()
    )]
    Pclntab { path: PathBuf, reason: String },
    #[error("{}: has one of {READ_FN} and {WRITE_FN} but not {missing}; TLS capture is skipped for it", .path.display())]
    MissingFunction {
        path: PathBuf,
        missing: &'static str,
    },
}

/// Inspects the executable at `path`, whose bytes are `data` (mapped by the caller, once for
/// every inspection of the file), for the uprobes on Go's crypto/tls.
///
/// `Ok(None)`: not a Go binary (anything that is not ELF, such as a script or a text file,
/// included), or a Go binary without `crypto/tls.(*Conn).Read` and `Write`. A Go binary that
/// cannot be probed (another architecture, Go older than 1.17, stripped of both symbol tables)
/// is an error even if it might not use TLS, since that cannot be told.
pub fn inspect(path: &Path, data: &[u8]) -> Result<Option<GoTls>, GoError> {
    if !data.starts_with(ELF_MAGIC) {
        return Ok(None);
    }
    let elf = object::File::parse(data).map_err(|e| malformed(path, e))?;
    let buildinfo = find_buildinfo(&elf);
    let pclntab = pclntab_section(&elf);
    if buildinfo.is_none() && pclntab.is_none() && elf.section_by_name(".note.go.buildid").is_none()
    {
        return Ok(None);
    }
    let arch = elf.architecture();
    if arch != Architecture::X86_64 {
        return Err(GoError::UnsupportedArch {
            path: path.to_path_buf(),
            arch: format!("{arch:?}"),
        });
    }
    let version = buildinfo.and_then(|info| buildinfo_version(&elf, info));
    let pclntab_magic = pclntab
        .as_ref()
        .and_then(|section| section.data().ok())
        .and_then(|table| le_uint(table, 0, 4))
        .and_then(|magic| u32::try_from(magic).ok());
    check_version(path, version.as_deref(), pclntab_magic)?;

    let Some([read, write]) = find_functions(path, &elf)? else {
        return Ok(None);
    };
    let read_returns = ret_offsets(&elf, read).ok_or_else(|| {
        malformed(
            path,
            format!(
                "{READ_FN} at {:#x} is not in a loadable segment",
                read.address
            ),
        )
    })?;
    if read_returns.is_empty() {
        return Err(malformed(path, format!("no RET instruction in {READ_FN}")));
    }
    let entry = |func: Func, name: &str| {
        code_at(&elf, func.address, 1)
            .map(|(_, offset)| offset)
            .ok_or_else(|| {
                malformed(
                    path,
                    format!("{name} at {:#x} is not in a loadable segment", func.address),
                )
            })
    };
    let offsets = match dwarf_member_offsets(&elf) {
        Ok(found) => offsets_from(found),
        Err(e) => {
            log::debug!(
                "{}: cannot read Go struct offsets from DWARF ({e}); using the defaults",
                path.display()
            );
            GoOffsets::default()
        }
    };
    Ok(Some(GoTls {
        version,
        read: entry(read, READ_FN)?,
        read_returns,
        write: entry(write, WRITE_FN)?,
        offsets,
    }))
}

fn malformed(path: &Path, reason: impl std::fmt::Display) -> GoError {
    GoError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// `.gopclntab`'s first word, which tells its format: Go 1.2–1.15 (not read by this module),
/// Go 1.16–1.17, Go 1.18–1.19, Go 1.20 and later.
const PCLNTAB_GO12: u32 = 0xffff_fffb;
const PCLNTAB_GO116: u32 = 0xffff_fffa;
const PCLNTAB_GO118: u32 = 0xffff_fff0;
const PCLNTAB_GO120: u32 = 0xffff_fff1;

/// Refuses Go older than 1.17: its functions take their arguments on the stack, not in the
/// registers the probes read.
fn check_version(
    path: &Path,
    version: Option<&str>,
    pclntab_magic: Option<u32>,
) -> Result<(), GoError> {
    let too_old = match version.and_then(go_minor) {
        Some(minor) => minor < 17,
        // No readable version (development builds, damaged build info): the function table's
        // format still tells Go 1.15 and older apart.
        None => pclntab_magic == Some(PCLNTAB_GO12),
    };
    if too_old {
        return Err(GoError::UnsupportedGoVersion {
            path: path.to_path_buf(),
            version: version
                .unwrap_or("Go 1.15 or older (by its .gopclntab)")
                .to_owned(),
        });
    }
    Ok(())
}

/// The minor version of a Go version string: 19 for "go1.19.8", "go1.19rc1",
/// "go1.21.0 X:loopvar" or "devel go1.19-abcdef".
fn go_minor(version: &str) -> Option<u32> {
    let rest = &version[version.find("go1.")? + 4..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// A function's address range in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Func {
    address: u64,
    end: u64,
}

/// `Read` and `Write`, from `.symtab`, else from `.gopclntab`; `None` when neither has them.
fn find_functions(path: &Path, elf: &object::File) -> Result<Option<[Func; 2]>, GoError> {
    let found = match symtab_functions(elf) {
        [Some(read), Some(write)] => [Some(read), Some(write)],
        from_symtab => match pclntab_section(elf) {
            Some(section) => pclntab_functions(path, elf, &section)?,
            None if elf.symbol_table().is_none() => {
                return Err(GoError::Stripped {
                    path: path.to_path_buf(),
                });
            }
            None => from_symtab,
        },
    };
    match found {
        [Some(read), Some(write)] => Ok(Some([read, write])),
        [None, None] => Ok(None),
        [read, _] => Err(GoError::MissingFunction {
            path: path.to_path_buf(),
            missing: if read.is_none() { READ_FN } else { WRITE_FN },
        }),
    }
}

fn symtab_functions(elf: &object::File) -> [Option<Func>; 2] {
    let mut found = [None, None];
    for symbol in elf.symbols() {
        let Ok(name) = symbol.name_bytes() else {
            continue;
        };
        let Some(i) = FUNCTIONS.iter().position(|f| f.as_bytes() == name) else {
            continue;
        };
        let address = symbol.address();
        let end = match symbol.size() {
            // No size recorded: the function ends where the next symbol of its section starts.
            0 => next_symbol_address(elf, address, symbol.section()).unwrap_or(address),
            size => address.saturating_add(size),
        };
        found[i] = Some(Func { address, end });
    }
    found
}

fn next_symbol_address(elf: &object::File, address: u64, section: SymbolSection) -> Option<u64> {
    elf.symbols()
        .filter(|s| s.section() == section && s.address() > address)
        .map(|s| s.address())
        .min()
        .or_else(|| {
            let index = section.index()?;
            let section = elf.section_by_index(index).ok()?;
            section.address().checked_add(section.size())
        })
}

/// Go's function table: `.gopclntab`, or `.data.rel.ro.gopclntab` in position-independent
/// executables (where the linker makes it writable for relocation).
fn pclntab_section<'d, 'f>(elf: &'f object::File<'d>) -> Option<object::Section<'d, 'f>> {
    elf.section_by_name(".gopclntab")
        .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
}

/// `Read` and `Write` from Go's own function table, for binaries linked without `.symtab`.
fn pclntab_functions(
    path: &Path,
    elf: &object::File,
    section: &object::Section,
) -> Result<[Option<Func>; 2], GoError> {
    let error = |reason: String| GoError::Pclntab {
        path: path.to_path_buf(),
        reason,
    };
    let data = section.data().map_err(|e| error(e.to_string()))?;
    let text = elf.section_by_name(".text").map(|s| s.address());
    let table = Pclntab::parse(data, text).map_err(error)?;
    let mut found = [None, None];
    for i in 0..table.nfunc {
        let name = table
            .name(i)
            .ok_or_else(|| error(format!("function {i} is out of the table")))?;
        let Some(slot) = FUNCTIONS.iter().position(|f| f.as_bytes() == name) else {
            continue;
        };
        let (Some(address), Some(end)) = (table.entry(i), table.entry(i + 1)) else {
            return Err(error(format!("function {i} is out of the table")));
        };
        let func = Func { address, end };
        // The table's addresses are only as right as its text base (left unrelocated in some
        // position-independent builds). A uprobe at a wrong address corrupts the program, so
        // each function must start like Go code: with its stack-bound check against the
        // goroutine in R14.
        let starts_like_go = code_at(elf, address, end.saturating_sub(address))
            .is_some_and(|(code, _)| has_stack_check(code, address));
        if !starts_like_go {
            return Err(error(format!(
                "{} at {address:#x} does not start with Go's stack check",
                FUNCTIONS[slot]
            )));
        }
        found[slot] = Some(func);
    }
    Ok(found)
}

/// Whether the first instructions of `code` compare against `g.stackguard0` (offset 0x10 of the
/// goroutine, held in R14 under the register ABI), as every Go function that can grow its
/// stack does first: `CMP SP, [R14+0x10]`, or after computing SP minus the frame size in a
/// register (one instruction for big frames, three for huge ones).
fn has_stack_check(code: &[u8], ip: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    for _ in 0..5 {
        if !decoder.can_decode() {
            return false;
        }
        decoder.decode_out(&mut instruction);
        if instruction.mnemonic() == Mnemonic::Cmp
            && instruction.memory_base() == Register::R14
            && instruction.memory_displacement64() == 0x10
        {
            return true;
        }
    }
    false
}

/// The parts of `.gopclntab` (`runtime.pcHeader` and what follows it) that map function names to
/// entry addresses, for the formats of Go 1.16/1.17 and Go 1.18 and later.
struct Pclntab<'d> {
    /// Go 1.18+: entries are 32-bit offsets from `text_start`; Go 1.16/1.17: absolute addresses
    /// of pointer size.
    relative: bool,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    funcnametab: &'d [u8],
    /// The function table (`nfunc` pairs of entry and `_func` offset, then the end of the text)
    /// and the `_func` records the offsets point to.
    pclntab: &'d [u8],
}

impl<'d> Pclntab<'d> {
    fn parse(data: &'d [u8], text_section: Option<u64>) -> Result<Self, String> {
        let magic = le_uint(data, 0, 4).ok_or("shorter than its header")?;
        let relative = match u32::try_from(magic) {
            Ok(PCLNTAB_GO118 | PCLNTAB_GO120) => true,
            Ok(PCLNTAB_GO116) => false,
            Ok(PCLNTAB_GO12) => return Err("format of Go 1.15 or older".to_owned()),
            _ => return Err(format!("unknown format {magic:#x}")),
        };
        let ptr_size = match data.get(7) {
            Some(4) => 4,
            Some(8) => 8,
            _ => return Err("bad pointer size".to_owned()),
        };
        let word = |i: usize| -> Result<u64, String> {
            le_uint(data, 8 + i * ptr_size, ptr_size).ok_or_else(|| "truncated header".to_owned())
        };
        let offset = |i: usize| -> Result<usize, String> {
            usize::try_from(word(i)?).map_err(|_| "offset out of range".to_owned())
        };
        let nfunc = offset(0)?;
        // Header words after nfunc and nfiles: Go 1.18 added textStart before the offsets.
        let (text_start, first_offset) = if relative {
            let header = word(2)?;
            // 0 in the file if only a dynamic relocation fills it: the text then starts at the
            // .text section, which is what Go's own debug/gosym assumes.
            let text_start = if header != 0 {
                Some(header)
            } else {
                text_section
            };
            (text_start.ok_or("no text start")?, 3)
        } else {
            (0, 2)
        };
        let funcnametab = data
            .get(offset(first_offset)?..)
            .ok_or("function name table out of range")?;
        let pclntab = data
            .get(offset(first_offset + 4)?..)
            .ok_or("function table out of range")?;
        let table = Self {
            relative,
            ptr_size,
            nfunc,
            text_start,
            funcnametab,
            pclntab,
        };
        let functab_len = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(table.field_size()));
        if functab_len.is_none_or(|len| len > pclntab.len()) {
            return Err(format!("{nfunc} functions do not fit in the table"));
        }
        Ok(table)
    }

    fn field_size(&self) -> usize {
        if self.relative { 4 } else { self.ptr_size }
    }

    /// Entry address of function `i`; for `i == nfunc`, the end of the last function.
    fn entry(&self, i: usize) -> Option<u64> {
        let size = self.field_size();
        let value = le_uint(self.pclntab, i.checked_mul(2 * size)?, size)?;
        if self.relative {
            self.text_start.checked_add(value)
        } else {
            Some(value)
        }
    }

    /// Name of function `i`, from its `_func` record's `nameOff`, which follows the entry.
    fn name(&self, i: usize) -> Option<&'d [u8]> {
        let size = self.field_size();
        let at = i.checked_mul(2)?.checked_add(1)?.checked_mul(size)?;
        let func = le_uint(self.pclntab, at, size)?;
        let name_at = usize::try_from(func).ok()?.checked_add(size)?;
        let name_offset = usize::try_from(le_uint(self.pclntab, name_at, 4)?).ok()?;
        let name = self.funcnametab.get(name_offset..)?;
        let len = name.iter().position(|&b| b == 0)?;
        Some(&name[..len])
    }
}

/// File offsets of the RET instructions of `func`; `None` if its code is not in the file.
fn ret_offsets(elf: &object::File, func: Func) -> Option<Vec<u64>> {
    let (code, offset) = code_at(elf, func.address, func.end.checked_sub(func.address)?)?;
    let mut decoder = Decoder::with_ip(64, code, func.address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(offset + (instruction.ip() - func.address));
        }
    }
    Some(returns)
}

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// How far into the first data segment Go's debug/buildinfo looks for the build info when there
/// is no section header to name it.
const BUILDINFO_SEARCH: usize = 64 * 1024;

/// The build info block (header first), from `.go.buildinfo`, else from where Go's own
/// debug/buildinfo looks: 16-byte aligned in the first writable, non-executable segment.
fn find_buildinfo<'d>(elf: &object::File<'d>) -> Option<&'d [u8]> {
    if let Some(section) = elf.section_by_name(".go.buildinfo") {
        return section
            .data()
            .ok()
            .filter(|data| data.starts_with(BUILDINFO_MAGIC));
    }
    let writable_data = |segment: &object::Segment| {
        matches!(segment.flags(), SegmentFlags::Elf { p_flags }
            if p_flags & object::elf::PF_W != 0 && p_flags & object::elf::PF_X == 0)
    };
    let data = elf.segments().find(writable_data)?.data().ok()?;
    let window = &data[..data.len().min(BUILDINFO_SEARCH)];
    (0..window.len())
        .step_by(16)
        .find(|&i| window[i..].starts_with(BUILDINFO_MAGIC))
        .map(|i| &data[i..])
}

/// The Go version recorded in a build info block.
fn buildinfo_version(elf: &object::File, info: &[u8]) -> Option<String> {
    let ptr_size = usize::from(*info.get(14)?);
    let flags = *info.get(15)?;
    let bytes = if flags & 2 != 0 {
        // Go 1.18+: the version string follows the 32-byte header, prefixed by its length as
        // a uvarint.
        let rest = info.get(32..)?;
        let (len, skip) = uvarint(rest)?;
        rest.get(skip..skip.checked_add(usize::try_from(len).ok()?)?)?
    } else {
        // Go 1.13–1.17: the address of a Go string header (data pointer, length) in memory.
        let big_endian = flags & 1 != 0;
        let header_address = read_uint(info.get(16..16 + ptr_size)?, big_endian)?;
        let (header, _) = code_at(elf, header_address, 2 * ptr_size as u64)?;
        let data = read_uint(&header[..ptr_size], big_endian)?;
        let len = read_uint(&header[ptr_size..], big_endian)?;
        code_at(elf, data, len)?.0
    };
    let version = std::str::from_utf8(bytes).ok()?;
    (!version.is_empty()).then(|| version.to_owned())
}

/// Go's `binary.Uvarint`: the value and the number of bytes it took.
fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A 4- or 8-byte unsigned integer.
fn read_uint(bytes: &[u8], big_endian: bool) -> Option<u64> {
    match bytes.len() {
        4 => {
            let bytes = bytes.try_into().ok()?;
            Some(u64::from(if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }))
        }
        8 => {
            let bytes = bytes.try_into().ok()?;
            Some(if big_endian {
                u64::from_be_bytes(bytes)
            } else {
                u64::from_le_bytes(bytes)
            })
        }
        _ => None,
    }
}

/// A little-endian integer of `size` (4 or 8) bytes at `offset` of `data`.
fn le_uint(data: &[u8], offset: usize, size: usize) -> Option<u64> {
    read_uint(data.get(offset..offset.checked_add(size)?)?, false)
}

/// The (struct, member) pairs whose offsets DWARF gives, in the order of
/// [`dwarf_member_offsets`]'s result. Go names types with their full package path; the member
/// of an embedded field is named after its type (`TCPConn`'s `conn`).
const DWARF_FIELDS: [(&str, &str); 5] = [
    ("crypto/tls.Conn", "conn"),
    ("net.TCPConn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
];

/// Larger decompressed debug sections than this are not read (the defaults are used).
const MAX_DWARF_SECTION: u64 = 1 << 30;

/// The offsets DWARF gave (see [`DWARF_FIELDS`]), each one it did not from the defaults.
fn offsets_from(found: [Option<u64>; 5]) -> GoOffsets {
    let defaults = GoOffsets::default();
    let field = |value: Option<u64>, default| {
        value
            .and_then(|value| u32::try_from(value).ok())
            .unwrap_or(default)
    };
    let [tls_conn_conn, tcpconn_conn, conn_fd, netfd_pfd, pfd_sysfd] = found;
    GoOffsets {
        tls_conn_conn: field(tls_conn_conn, defaults.tls_conn_conn),
        tcpconn_fd: field(
            tcpconn_conn
                .zip(conn_fd)
                .and_then(|(a, b)| a.checked_add(b)),
            defaults.tcpconn_fd,
        ),
        netfd_pfd: field(netfd_pfd, defaults.netfd_pfd),
        pfd_sysfd: field(pfd_sysfd, defaults.pfd_sysfd),
    }
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// The offsets of [`DWARF_FIELDS`] in `.debug_info`. Go puts every type at the top level of a
/// compilation unit (go1.19: the runtime's), the struct's members as its children.
fn dwarf_member_offsets(elf: &object::File) -> Result<[Option<u64>; 5], String> {
    let mut found = [None; 5];
    let Some(info) = debug_section(elf, ".debug_info")? else {
        return Ok(found);
    };
    let abbrev = debug_section(elf, ".debug_abbrev")?.ok_or("no .debug_abbrev")?;
    let strings = debug_section(elf, ".debug_str")?.unwrap_or_default();
    let debug_info = gimli::DebugInfo::new(&info, gimli::LittleEndian);
    let debug_abbrev = gimli::DebugAbbrev::new(&abbrev, gimli::LittleEndian);
    let debug_str = gimli::DebugStr::new(&strings, gimli::LittleEndian);
    let mut units = debug_info.units();
    while let Some(unit) = units.next().map_err(|e| format!(".debug_info: {e}"))? {
        let abbrevs = unit
            .abbreviations(&debug_abbrev)
            .map_err(|e| format!(".debug_abbrev: {e}"))?;
        let mut entries = unit.entries(&abbrevs);
        // The index in DWARF_FIELDS of the struct whose members are being read.
        let mut current = None;
        while let Some(entry) = entries
            .next_dfs()
            .map_err(|e| format!(".debug_info: {e}"))?
        {
            match entry.depth() {
                1 => {
                    current = (entry.tag() == gimli::DW_TAG_structure_type)
                        .then(|| entry_name(entry, &debug_str))
                        .flatten()
                        .and_then(|name| {
                            DWARF_FIELDS.iter().position(|(s, _)| s.as_bytes() == name)
                        });
                }
                2 => {
                    if let Some(i) = current
                        && found[i].is_none()
                        && entry.tag() == gimli::DW_TAG_member
                        && entry_name(entry, &debug_str) == Some(DWARF_FIELDS[i].1.as_bytes())
                    {
                        found[i] = member_offset(entry);
                    }
                }
                _ => {}
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(found)
}

/// A debug section's contents, decompressed: the Go linker compresses DWARF with zlib, as
/// `SHF_COMPRESSED` sections (go1.19.8) or, in older versions, `.zdebug_*` ones; `object` finds
/// and unwraps both by the `.debug_*` name.
fn debug_section<'d>(elf: &object::File<'d>, name: &str) -> Result<Option<Cow<'d, [u8]>>, String> {
    let Some(section) = elf.section_by_name(name) else {
        return Ok(None);
    };
    let compressed = section
        .compressed_data()
        .map_err(|e| format!("{name}: {e}"))?;
    match compressed.format {
        CompressionFormat::None => Ok(Some(Cow::Borrowed(compressed.data))),
        CompressionFormat::Zlib => {
            let size = compressed.uncompressed_size;
            if size > MAX_DWARF_SECTION {
                return Err(format!("{name}: {size} bytes decompressed is too large"));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).map_err(|e| e.to_string())?);
            flate2::read::ZlibDecoder::new(compressed.data)
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| format!("{name}: {e}"))?;
            if data.len() as u64 != size {
                return Err(format!(
                    "{name}: decompressed to {} bytes, not {size}",
                    data.len()
                ));
            }
            Ok(Some(Cow::Owned(data)))
        }
        other => Err(format!("{name}: unsupported compression {other:?}")),
    }
}

fn entry_name<'a>(
    entry: &gimli::DebuggingInformationEntry<Slice<'a>>,
    strings: &gimli::DebugStr<Slice<'a>>,
) -> Option<&'a [u8]> {
    match entry.attr_value(gimli::DW_AT_name)? {
        gimli::AttributeValue::String(name) => Some(name.slice()),
        gimli::AttributeValue::DebugStrRef(offset) => {
            strings.get_str(offset).ok().map(|s| s.slice())
        }
        _ => None,
    }
}

fn member_offset(entry: &gimli::DebuggingInformationEntry<Slice>) -> Option<u64> {
    match entry.attr_value(gimli::DW_AT_data_member_location)? {
        // Older Go wrote the offset as a location expression: DW_OP_plus_uconst N.
        gimli::AttributeValue::Exprloc(gimli::Expression(mut expression)) => {
            if expression.read_u8().ok()? != gimli::DW_OP_plus_uconst.0 {
                return None;
            }
            let offset = expression.read_uleb128().ok()?;
            expression.is_empty().then_some(offset)
        }
        value => value.udata_value(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps `path` as the daemon does (one mapping per file, `tls::Elf`) and inspects it.
    fn inspect_file(path: &Path) -> Result<Option<GoTls>, GoError> {
        let elf = super::super::Elf::open(path).expect("the file maps");
        inspect(path, elf.bytes())
    }
    use std::fs;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A Go program that links crypto/tls's client and both methods (it never runs).
    const PROGRAM: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"os"
)

func main() {
	conn, err := tls.Dial("tcp", "127.0.0.1:1", &tls.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	buf := make([]byte, 16)
	_, _ = conn.Write([]byte("hello"))
	_, _ = conn.Read(buf)
}
"#;

    /// A directory of its own for one test, removed with everything in it when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "beyla-rs-go-tls-{}-{tag}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `go` with everything it writes inside `dir`, for linux/amd64, without network or cgo.
    fn go(dir: &TempDir, args: &[&str]) -> String {
        let src = dir.path("src");
        fs::create_dir_all(&src).unwrap();
        let output = Command::new("go")
            .args(args)
            .current_dir(&src)
            .env("HOME", dir.path("home"))
            .env("GOCACHE", dir.path("cache"))
            .env("GOPATH", dir.path("gopath"))
            .env("GOFLAGS", "-mod=mod -modcacherw")
            .env("GOPROXY", "off")
            .env("GO111MODULE", "on")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .env("GOOS", "linux")
            .env("GOARCH", "amd64")
            .output()
            .expect("these tests need Go (Debian's golang-go) on the PATH");
        assert!(
            output.status.success(),
            "go {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Builds [`PROGRAM`] into `dir/name` with `flags` added to `go build`.
    fn build(dir: &TempDir, name: &str, flags: &[&str]) -> PathBuf {
        let src = dir.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("main.go"), PROGRAM).unwrap();
        fs::write(src.join("go.mod"), "module tlsprobe\n\ngo 1.17\n").unwrap();
        let out = dir.path(name);
        let out_arg = out.to_str().unwrap();
        let mut args = vec!["build", "-o", out_arg];
        args.extend_from_slice(flags);
        args.push(".");
        go(dir, &args);
        out
    }

    /// Every offset is a RET in the file: the byte Go emits for it (0xC3), decoded as one.
    fn assert_rets(file: &[u8], offsets: &[u64]) {
        for &offset in offsets {
            let code = &file[usize::try_from(offset).unwrap()..];
            assert_eq!(code[0], 0xc3, "byte at {offset:#x}");
            let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
            assert_eq!(decoder.decode().mnemonic(), Mnemonic::Ret, "at {offset:#x}");
        }
    }

    /// The address of `name` in the output of `go tool nm`.
    fn nm_address(nm: &str, name: &str) -> u64 {
        nm.lines()
            .find_map(|line| {
                let fields: Vec<_> = line.split_whitespace().collect();
                (fields.len() == 3 && fields[2] == name)
                    .then(|| u64::from_str_radix(fields[0], 16).unwrap())
            })
            .unwrap_or_else(|| panic!("{name} not in go tool nm's output"))
    }

    /// `(address, bytes, instruction)` of each line of `go tool objdump -s` for one function.
    fn go_disassembly(dir: &TempDir, binary: &Path, name: &str) -> Vec<(u64, Vec<u8>, String)> {
        let pattern = format!(
            "^{}$",
            name.replace('.', "\\.")
                .replace('(', "\\(")
                .replace(')', "\\)")
                .replace('*', "\\*")
        );
        let output = go(
            dir,
            &["tool", "objdump", "-s", &pattern, binary.to_str().unwrap()],
        );
        output
            .lines()
            .filter(|line| !line.starts_with("TEXT"))
            .map(|line| {
                let fields: Vec<_> = line.split('\t').filter(|f| !f.is_empty()).collect();
                let address = u64::from_str_radix(fields[1].trim_start_matches("0x"), 16).unwrap();
                let bytes = (0..fields[2].len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&fields[2][i..i + 2], 16).unwrap())
                    .collect();
                (address, bytes, fields[3].trim().to_owned())
            })
            .collect()
    }

    /// The code at `tls`'s offsets is what `go tool objdump` (Go's own reader of the symbol
    /// table or, in stripped binaries, `.gopclntab`) shows for `Read` and `Write`: their first
    /// instructions' bytes, and the RETs of `Read` at the same places. Returns the functions'
    /// addresses according to go tool objdump.
    fn assert_matches_go_objdump(dir: &TempDir, binary: &Path, tls: &GoTls) -> [u64; 2] {
        let file = fs::read(binary).unwrap();
        let mut entries = [0; 2];
        for (i, (name, offset)) in [(READ_FN, tls.read), (WRITE_FN, tls.write)]
            .into_iter()
            .enumerate()
        {
            let disassembly = go_disassembly(dir, binary, name);
            let (address, first_bytes, _) = &disassembly[0];
            entries[i] = *address;
            let at = usize::try_from(offset).unwrap();
            assert_eq!(
                &file[at..at + first_bytes.len()],
                &first_bytes[..],
                "{name}"
            );
            if name == READ_FN {
                let rets: Vec<u64> = disassembly
                    .iter()
                    .filter(|(_, _, instruction)| instruction == "RET")
                    .map(|(address, _, _)| *address)
                    .collect();
                let ours: Vec<u64> = tls
                    .read_returns
                    .iter()
                    .map(|ret| ret - tls.read + address)
                    .collect();
                assert_eq!(ours, rets, "RETs of {name}");
            }
        }
        entries
    }

    /// Two builds of the same program have the same code at their offsets: the same bytes at
    /// `Read` and `Write` and the RETs at the same distances from `Read`'s entry.
    fn assert_same_code(file: &[u8], tls: &GoTls, reference_file: &[u8], reference: &GoTls) {
        let code =
            |file: &[u8], offset: u64| file[usize::try_from(offset).unwrap()..][..64].to_vec();
        assert_eq!(code(file, tls.read), code(reference_file, reference.read));
        assert_eq!(code(file, tls.write), code(reference_file, reference.write));
        let relative = |tls: &GoTls| -> Vec<u64> {
            tls.read_returns.iter().map(|ret| ret - tls.read).collect()
        };
        assert_eq!(relative(tls), relative(reference));
    }

    #[test]
    fn go_binary_with_symbols_and_dwarf() {
        let dir = TempDir::new("full");
        let binary = build(&dir, "prog", &[]);
        let tls = inspect_file(&binary)
            .unwrap()
            .expect("a Go binary with crypto/tls");
        let version = tls.version.as_deref().unwrap();
        assert!(version.starts_with("go1."), "{version}");
        assert!(
            tls.read != 0 && tls.write != 0 && tls.read != tls.write,
            "{tls:?}"
        );
        assert!(!tls.read_returns.is_empty());
        let file = fs::read(&binary).unwrap();
        assert_rets(&file, &tls.read_returns);
        assert_eq!(
            tls.offsets,
            GoOffsets {
                tls_conn_conn: 0,
                tcpconn_fd: 0,
                netfd_pfd: 0,
                pfd_sysfd: 16
            }
        );

        // The offsets come from DWARF, not the defaults: each field was found there.
        let elf = object::File::parse(&*file).unwrap();
        assert!(elf.section_by_name(".debug_info").is_some());
        assert_eq!(
            dwarf_member_offsets(&elf).unwrap(),
            [Some(0), Some(0), Some(0), Some(0), Some(16)]
        );

        // Go's own tools agree: the symbols are where go tool nm says, and the code at our
        // offsets is what go tool objdump shows there.
        let nm = go(&dir, &["tool", "nm", binary.to_str().unwrap()]);
        let entries = assert_matches_go_objdump(&dir, &binary, &tls);
        assert_eq!(
            entries,
            [nm_address(&nm, READ_FN), nm_address(&nm, WRITE_FN)]
        );

        // A symbol without a size ends where the next one starts: the same RETs.
        let read_symbol = elf
            .symbols()
            .find(|symbol| symbol.name() == Ok(READ_FN))
            .unwrap();
        let symtab = elf
            .section_by_name(".symtab")
            .unwrap()
            .file_range()
            .unwrap();
        // st_size is the last field (offset 16) of a 24-byte Elf64_Sym.
        let size_at = usize::try_from(symtab.0).unwrap() + read_symbol.index().0 * 24 + 16;
        assert_eq!(file[size_at..size_at + 8], read_symbol.size().to_le_bytes());
        let mut sizeless = file.clone();
        sizeless[size_at..size_at + 8].fill(0);
        let path = dir.path("prog-sizeless");
        fs::write(&path, &sizeless).unwrap();
        assert_eq!(inspect_file(&path).unwrap().as_ref(), Some(&tls));

        // .gopclntab, the stripped binaries' source, finds the same functions and RETs.
        let section = elf.section_by_name(".gopclntab").unwrap();
        let from_pclntab = pclntab_functions(&binary, &elf, &section).unwrap();
        let from_symtab = symtab_functions(&elf);
        for (pclntab, symtab) in from_pclntab.into_iter().zip(from_symtab) {
            let (pclntab, symtab) = (pclntab.unwrap(), symtab.unwrap());
            assert_eq!(pclntab.address, symtab.address);
            // .symtab's size stops at the last instruction, the table at the next function.
            assert!(pclntab.end >= symtab.end);
            assert_eq!(ret_offsets(&elf, pclntab), ret_offsets(&elf, symtab));
        }
    }

    #[test]
    fn stripped_go_binary() {
        let dir = TempDir::new("stripped");
        let full = build(&dir, "prog", &[]);
        let stripped = build(&dir, "prog-stripped", &["-ldflags=-s -w"]);
        let file = fs::read(&stripped).unwrap();
        let elf = object::File::parse(&*file).unwrap();
        assert!(elf.symbol_table().is_none() && elf.section_by_name(".debug_info").is_none());

        // Found through .gopclntab: the same functions as in the unstripped build.
        let tls = inspect_file(&stripped)
            .unwrap()
            .expect("found through .gopclntab");
        let reference = inspect_file(&full).unwrap().unwrap();
        assert_rets(&file, &tls.read_returns);
        assert_same_code(&file, &tls, &fs::read(&full).unwrap(), &reference);
        assert_eq!(tls.version, reference.version);
        assert_eq!(tls.offsets, GoOffsets::default());

        // Without .gopclntab either, nothing is left to find the functions in.
        let mut no_pclntab = file.clone();
        let names = elf
            .section_by_name(".shstrtab")
            .unwrap()
            .file_range()
            .unwrap();
        let names = usize::try_from(names.0).unwrap()..usize::try_from(names.0 + names.1).unwrap();
        let at = no_pclntab[names.clone()]
            .windows(11)
            .position(|w| w == b".gopclntab\0")
            .unwrap();
        no_pclntab[names.start + at + 1] = b'x';
        let path = dir.path("prog-no-pclntab");
        fs::write(&path, &no_pclntab).unwrap();
        let error = inspect_file(&path).unwrap_err();
        assert!(matches!(error, GoError::Stripped { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("stripped") && message.contains("skipped"),
            "{message}"
        );
    }

    /// Position-independent executables keep the table in `.data.rel.ro.gopclntab`. (Slow: Go
    /// compiles the standard library again for `-buildmode=pie`.)
    #[test]
    fn stripped_position_independent_go_binary() {
        let dir = TempDir::new("pie");
        let full = build(&dir, "prog-pie-full", &["-buildmode=pie"]);
        let binary = build(&dir, "prog-pie", &["-buildmode=pie", "-ldflags=-s -w"]);
        let file = fs::read(&binary).unwrap();
        let elf = object::File::parse(&*file).unwrap();
        assert_eq!(elf.kind(), object::ObjectKind::Dynamic);
        assert!(elf.symbol_table().is_none() && elf.section_by_name(".gopclntab").is_none());
        assert!(elf.section_by_name(".data.rel.ro.gopclntab").is_some());
        let tls = inspect_file(&binary)
            .unwrap()
            .expect("found in .data.rel.ro.gopclntab");
        assert_rets(&file, &tls.read_returns);
        assert_eq!(tls.offsets, GoOffsets::default());

        // go tool objdump cannot read a stripped PIE: it checks the unstripped build, whose
        // code is the same as the stripped one's.
        let reference = inspect_file(&full).unwrap().unwrap();
        assert_matches_go_objdump(&dir, &full, &reference);
        assert_same_code(&file, &tls, &fs::read(&full).unwrap(), &reference);
    }

    #[test]
    fn go_binaries_that_cannot_be_probed() {
        let dir = TempDir::new("refused");
        let binary = build(&dir, "prog", &[]);
        let file = fs::read(&binary).unwrap();
        let elf = object::File::parse(&*file).unwrap();
        let info = elf
            .section_by_name(".go.buildinfo")
            .unwrap()
            .file_range()
            .unwrap();
        let info = usize::try_from(info.0).unwrap()..usize::try_from(info.0 + info.1).unwrap();

        // Go 1.16: refused for its stack ABI.
        let version = inspect_file(&binary).unwrap().unwrap().version.unwrap();
        let minor = format!("go1.{}", go_minor(&version).unwrap());
        assert_eq!(minor.len(), 6, "a two-digit minor version: {version}");
        let mut old = file.clone();
        let at = old[info.clone()]
            .windows(minor.len())
            .position(|w| w == minor.as_bytes())
            .unwrap();
        old[info.start + at..][..6].copy_from_slice(b"go1.16");
        let path = dir.path("prog-go1.16");
        fs::write(&path, &old).unwrap();
        let error = inspect_file(&path).unwrap_err();
        assert!(
            matches!(error, GoError::UnsupportedGoVersion { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("go1.16"), "{error}");
        assert!(error.to_string().contains("Go 1.17"), "{error}");

        // Another architecture (e_machine = EM_AARCH64).
        let mut arm = file.clone();
        arm[18..20].copy_from_slice(&object::elf::EM_AARCH64.to_le_bytes());
        let path = dir.path("prog-arm64");
        fs::write(&path, &arm).unwrap();
        let error = inspect_file(&path).unwrap_err();
        assert!(
            matches!(error, GoError::UnsupportedArch { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("x86-64"), "{error}");

        // Truncated: its section headers are gone.
        let path = dir.path("prog-truncated");
        fs::write(&path, &file[..4096]).unwrap();
        let error = inspect_file(&path).unwrap_err();
        assert!(matches!(error, GoError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn files_that_are_not_go_binaries() {
        // ELF executables of other languages: this test's own binary (Rust, with .symtab) and
        // a C one.
        let this = std::env::current_exe().unwrap();
        assert_eq!(inspect_file(&this).unwrap(), None);
        let true_ = Path::new("/bin/true");
        if true_.exists() {
            assert_eq!(inspect_file(true_).unwrap(), None);
        }

        // A text file and an empty file are no Go binaries either: Ok(None), not an error.
        let dir = TempDir::new("other");
        let text = dir.path("script.sh");
        fs::write(&text, "#!/bin/sh\necho crypto/tls.(*Conn).Read\n").unwrap();
        assert_eq!(inspect_file(&text).unwrap(), None);
        assert_eq!(inspect(&dir.path("empty"), b"").unwrap(), None);

        // A file that is not there: the mapping fails, naming it.
        let missing = dir.path("missing");
        let error = super::super::Elf::open(&missing)
            .err()
            .expect("no such file");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn go_versions() {
        assert_eq!(go_minor("go1.19.8"), Some(19));
        assert_eq!(go_minor("go1.9"), Some(9));
        assert_eq!(go_minor("go1.22rc1"), Some(22));
        assert_eq!(go_minor("go1.21.0 X:loopvar"), Some(21));
        assert_eq!(go_minor("devel go1.23-abcdef Tue"), Some(23));
        assert_eq!(go_minor("devel +abcdef"), None);
        let path = Path::new("prog");
        assert!(check_version(path, Some("go1.17"), None).is_ok());
        assert!(check_version(path, Some("go1.16.15"), None).is_err());
        assert!(check_version(path, None, Some(PCLNTAB_GO12)).is_err());
        assert!(check_version(path, None, Some(PCLNTAB_GO118)).is_ok());
    }

    #[test]
    fn uvarints() {
        assert_eq!(uvarint(&[0x08, 0xff]), Some((8, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[]), None);
    }
}
