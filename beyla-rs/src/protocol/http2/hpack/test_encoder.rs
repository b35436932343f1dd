//! A minimal HPACK encoder for tests and fuzz seeds: static/dynamic exact matches are indexed,
//! everything else is a literal with incremental indexing (name indexed when possible), except
//! `authorization` and `cookie` (never-indexed literals).
//!
//! It uses only `super::huffman` and `super::table`, so that `cargo xtask fuzz-seeds` can
//! compile it with those two (`xtask/src/seeds.rs`): the seeds are encoded exactly as the
//! conversations of the parser's tests.

use super::huffman;
use super::table::{DynamicTable, Lookup, STATIC_LEN, STATIC_TABLE};

pub struct Encoder {
    pub table: DynamicTable,
    pub huffman: bool,
    pending_size_updates: Vec<usize>,
}

pub fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

pub fn encode_string(out: &mut Vec<u8>, s: &[u8], huff: bool) {
    if huff {
        encode_integer(out, 0x80, 7, huffman::encoded_len(s));
        huffman::encode(s, out);
    } else {
        encode_integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

impl Encoder {
    pub fn new(huffman: bool) -> Self {
        Encoder {
            table: DynamicTable::new(),
            huffman,
            pending_size_updates: Vec::new(),
        }
    }

    /// Signal a new maximum size at the start of the next block (several may be queued).
    pub fn size_update(&mut self, size: usize) {
        self.pending_size_updates.push(size);
    }

    pub fn encode(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in std::mem::take(&mut self.pending_size_updates) {
            encode_integer(&mut out, 0x20, 5, s);
            self.table.size_update(s);
        }
        for &(name, value) in fields {
            let (n, v) = (name.as_bytes(), value.as_bytes());
            let mut name_idx = None;
            let mut full_idx = None;
            for (i, &(sn, sv)) in STATIC_TABLE.iter().enumerate() {
                if sn == n {
                    name_idx.get_or_insert(i + 1);
                    if sv == v {
                        full_idx = Some(i + 1);
                        break;
                    }
                }
            }
            if full_idx.is_none() {
                for i in 0..self.table.len() {
                    if let Lookup::Known(e) = self.table.get(i)
                        && &*e.name == n
                    {
                        name_idx.get_or_insert(STATIC_LEN + 1 + i);
                        if e.value.as_deref() == Some(v) {
                            full_idx = Some(STATIC_LEN + 1 + i);
                            break;
                        }
                    }
                }
            }
            if let Some(i) = full_idx {
                encode_integer(&mut out, 0x80, 7, i);
                continue;
            }
            let never = matches!(name, "authorization" | "cookie");
            if never {
                encode_integer(&mut out, 0x10, 4, name_idx.unwrap_or(0));
            } else {
                encode_integer(&mut out, 0x40, 6, name_idx.unwrap_or(0));
            }
            if name_idx.is_none() {
                encode_string(&mut out, n, self.huffman);
            }
            encode_string(&mut out, v, self.huffman);
            if !never {
                self.table.insert(n, Some(v), v.len());
            }
        }
        out
    }
}
