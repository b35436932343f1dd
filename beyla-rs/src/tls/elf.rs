//! Where a function is in an ELF file, as uprobes want it: the file offset of its first
//! instruction. The file is mapped, not read: executables with an embedded TLS library (Node)
//! are around 100 MB.

use std::{fs::File, path::Path};

use memmap2::Mmap;
use object::{Object, ObjectSegment, ObjectSymbol};

use super::TlsError;

/// A mapped ELF file.
pub struct Elf {
    map: Mmap,
}

impl Elf {
    pub fn open(path: &Path) -> Result<Self, TlsError> {
        let io = |source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private; a file changed underneath (a package
        // upgrade writes a new file and renames it) shows as different bytes at worst, which the
        // parser checks like any input.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Elf { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file offsets of the defined functions `names` (in that order; `None` where a name is
    /// absent), from the dynamic symbol table, then the full one. `Err` when the file is not an
    /// ELF object.
    pub fn function_offsets(&self, names: &[&str]) -> Result<Vec<Option<u64>>, object::Error> {
        let file = object::File::parse(&*self.map)?;
        let mut found = vec![None; names.len()];
        let mut left = names.len();
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            if left == 0 {
                break;
            }
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if let Some(i) = names.iter().position(|n| *n == name)
                && found[i].is_none()
                && let Some((_, off)) = code_at(&file, sym.address(), 1)
            {
                found[i] = Some(off);
                left -= 1;
            }
        }
        Ok(found)
    }
}

/// The file's bytes at the virtual addresses `address..address + size` and the file offset of
/// the first: `offset = address - segment address + segment file offset` in the PT_LOAD segment
/// holding them (not past its file size: the rest of a segment is zeroes, not file).
pub fn code_at<'d>(elf: &object::File<'d>, address: u64, size: u64) -> Option<(&'d [u8], u64)> {
    elf.segments().find_map(|segment| {
        let bytes = segment.data_range(address, size).ok()??;
        let offset = segment.file_range().0 + (address - segment.address());
        Some((bytes, offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libc is on every machine that runs the tests: `getpid` is defined in it, `SSL_read` is
    /// not, and the offset found holds the same bytes as the symbol's address in the mapping
    /// this very process made of it.
    #[test]
    fn offsets_of_libc_functions() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("libc is mapped");
        let elf = Elf::open(Path::new(libc)).unwrap();
        let offs = elf.function_offsets(&["getpid", "SSL_read"]).unwrap();
        let getpid = offs[0].expect("getpid is in libc");
        assert!(offs[1].is_none());
        let ours = libc::getpid as *const u8;
        let in_file = &elf.bytes()[getpid as usize..getpid as usize + 16];
        // SAFETY: reading 16 bytes of libc's code in this process.
        let in_memory = unsafe { std::slice::from_raw_parts(ours, 16) };
        assert_eq!(in_file, in_memory, "the offset points at getpid's code");
    }

    #[test]
    fn not_an_elf_file() {
        let dir = std::env::temp_dir().join(format!("beyla-rs-elf-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\necho not an ELF\n").unwrap();
        let elf = Elf::open(&dir).unwrap();
        assert!(elf.function_offsets(&["main"]).is_err());
        let _ = std::fs::remove_file(&dir);
    }
}
