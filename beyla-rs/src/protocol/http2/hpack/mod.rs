//! HPACK field block decoder (RFC 7541) for a passive observer.
//!
//! Differences from a decoder inside an HTTP/2 endpoint, all deliberate:
//! - The dynamic table may be partly unknown (see [`table`]): an index into the unknown part
//!   yields [`Field::Unknown`] instead of an error or a guess.
//! - A field block may be truncated by the capture bound: [`Decoder::decode`] with
//!   `complete = false` returns the fields it could decode and then forgets the table, because
//!   the unseen part may have inserted entries.
//! - Values are materialised only for names the caller's [`KeepPolicy`] accepts. Every other
//!   value (`authorization`, `cookie`, …) is decoded only far enough to know its length, which
//!   the table needs (§4.1), and is never stored in the table or anywhere else.
//! - Every malformed input is an [`HpackError`]; after an error the table is forgotten as well.
//!
//! No allocation is proportional to anything but the block being decoded (bounded by the
//! caller) and the dynamic table (bounded by [`table::MAX_TABLE_SIZE`]).

pub mod huffman;
pub mod table;

use table::{DynamicTable, Lookup, STATIC_LEN, STATIC_TABLE};

/// Which header names get their values materialised (and kept in the dynamic table).
pub type KeepPolicy = fn(&[u8]) -> bool;

/// Keep every value (tests, fuzzing, debugging).
pub fn keep_all(_: &[u8]) -> bool {
    true
}

/// One decoded field line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// `value` is `None` when the [`KeepPolicy`] dropped it.
    Known {
        name: &'a [u8],
        value: Option<&'a [u8]>,
    },
    /// The field's name refers to dynamic-table content this decoder never saw.
    Unknown,
}

/// What one call to [`Decoder::decode`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Field lines decoded (known and unknown).
    pub fields: usize,
    /// Field lines reported as [`Field::Unknown`].
    pub unknown: usize,
    /// The block ended in the middle of a field line (only with `complete = false`).
    pub truncated: bool,
}

/// Why a field block could not be decoded (RFC 7541 §5, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// An integer does not fit in 32 bits (§5.1).
    IntegerOverflow,
    /// The block ends inside a field line although it was said to be complete.
    Truncated,
    /// Index 0 (§6.1) or an index past the end of a fully known table (§2.3.3).
    InvalidIndex,
    /// A Huffman string is malformed (§5.2).
    Huffman(huffman::HuffmanError),
    /// A dynamic table size update after the first field line (§4.2).
    LateSizeUpdate,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HpackError::IntegerOverflow => f.write_str("HPACK integer overflow"),
            HpackError::Truncated => f.write_str("HPACK block truncated"),
            HpackError::InvalidIndex => f.write_str("HPACK invalid index"),
            HpackError::Huffman(e) => write!(f, "HPACK {e}"),
            HpackError::LateSizeUpdate => f.write_str("HPACK size update after a field line"),
        }
    }
}

impl std::error::Error for HpackError {}

/// Decodes a prefixed integer (RFC 7541 §5.1) at the start of `buf`. `Ok(None)` means `buf`
/// ends inside the integer. Values above `u32::MAX` are an error.
pub fn decode_integer(buf: &[u8], prefix_bits: u8) -> Result<Option<(u32, usize)>, HpackError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let max_prefix = (1u32 << prefix_bits) - 1;
    let mut value = u32::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(Some((value, 1)));
    }
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        let add = u64::from(b & 0x7f) << shift;
        let sum = u64::from(value) + add;
        if shift > 28 || sum > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        value = sum as u32;
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        shift += 7;
    }
    Ok(None)
}

/// Where a decoded name/value currently lives.
#[derive(Clone, Copy)]
enum Src {
    Static(usize),
    Dynamic(usize),
    /// In the decoder's scratch buffer for names / values.
    Scratch,
    /// Not materialised (dropped by policy or unknown).
    None,
}

/// An HPACK decoder for one direction of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    keep: KeepPolicy,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// A decoder from the start of a connection: empty table of 4096 octets.
    pub fn new(keep: KeepPolicy) -> Self {
        Decoder {
            table: DynamicTable::new(),
            keep,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// A decoder joining a connection mid-way: the table content is unknown.
    pub fn new_unsynced(keep: KeepPolicy) -> Self {
        Decoder {
            table: DynamicTable::new_unknown(),
            ..Self::new(keep)
        }
    }

    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// True when every dynamic table entry is known.
    pub fn is_synced(&self) -> bool {
        self.table.is_synced()
    }

    /// Forget the dynamic table (missed or truncated block, lost frame sync).
    pub fn desync(&mut self) {
        self.table.desync();
    }

    /// SETTINGS_HEADER_TABLE_SIZE acknowledged by the peer (RFC 9113 §6.5.2, RFC 7541 §4.2).
    pub fn set_limit(&mut self, limit: u32) {
        self.table.set_limit(limit as usize);
    }

    /// Bytes held: dynamic table plus scratch buffers.
    pub fn memory_estimate(&self) -> usize {
        self.table.memory_estimate() + self.name_buf.capacity() + self.value_buf.capacity()
    }

    /// Decodes one complete field block (RFC 7541 §3), or its captured prefix when
    /// `complete` is false, calling `on_field` for every field line in order.
    ///
    /// After an error or a truncated block the dynamic table is forgotten (desynchronised):
    /// later blocks decode static and literal fields, and report dynamic references they
    /// cannot resolve as [`Field::Unknown`].
    pub fn decode(
        &mut self,
        block: &[u8],
        complete: bool,
        on_field: &mut dyn FnMut(Field<'_>),
    ) -> Result<BlockOutcome, HpackError> {
        let mut outcome = BlockOutcome::default();
        let r = self.decode_inner(block, complete, &mut outcome, on_field);
        if r.is_err() || !complete || outcome.truncated {
            self.table.desync();
        }
        // Scratch buffers only ever hold one string; do not keep a hostile block's worth.
        if self.name_buf.capacity() > 4096 {
            self.name_buf = Vec::new();
        }
        if self.value_buf.capacity() > 4096 {
            self.value_buf = Vec::new();
        }
        r.map(|()| outcome)
    }

    fn decode_inner(
        &mut self,
        block: &[u8],
        complete: bool,
        outcome: &mut BlockOutcome,
        on_field: &mut dyn FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let mut pos = 0usize;
        // Returned when the block ends inside a field line.
        let short = |outcome: &mut BlockOutcome| {
            if complete {
                Err(HpackError::Truncated)
            } else {
                outcome.truncated = true;
                Ok(())
            }
        };
        while pos < block.len() {
            let rest = &block[pos..];
            let b = rest[0];
            if b & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let Some((idx, n)) = decode_integer(rest, 7)? else {
                    return short(outcome);
                };
                pos += n;
                outcome.fields += 1;
                match self.resolve(idx)? {
                    Resolved::Static(i) => {
                        let (name, value) = STATIC_TABLE[i];
                        let value = (self.keep)(name).then_some(value);
                        on_field(Field::Known { name, value });
                    }
                    Resolved::Dynamic(i) => {
                        let Lookup::Known(e) = self.table.get(i) else {
                            return Err(HpackError::InvalidIndex);
                        };
                        let value = if (self.keep)(&e.name) {
                            e.value.as_deref()
                        } else {
                            None
                        };
                        on_field(Field::Known {
                            name: &e.name,
                            value,
                        });
                    }
                    Resolved::Unknown => {
                        outcome.unknown += 1;
                        on_field(Field::Unknown);
                    }
                }
                continue;
            }
            if b & 0xe0 == 0x20 {
                // §6.3 Dynamic Table Size Update: only before the first field line (§4.2).
                let Some((size, n)) = decode_integer(rest, 5)? else {
                    return short(outcome);
                };
                if outcome.fields > 0 {
                    return Err(HpackError::LateSizeUpdate);
                }
                pos += n;
                self.table.size_update(size as usize);
                continue;
            }
            // §6.2 Literal Header Field: with incremental indexing (01, 6-bit index), without
            // indexing (0000, 4-bit) or never indexed (0001, 4-bit).
            let (indexing, prefix) = if b & 0xc0 == 0x40 {
                (true, 6)
            } else {
                (false, 4)
            };
            let Some((idx, n)) = decode_integer(rest, prefix)? else {
                return short(outcome);
            };
            let mut p = pos + n;
            // Name.
            let name_src = if idx == 0 {
                self.name_buf.clear();
                let name_buf = &mut self.name_buf;
                match read_string(&block[p..], |o| name_buf.push(o))? {
                    Some((_, used)) => p += used,
                    None => return short(outcome),
                }
                Src::Scratch
            } else {
                match self.resolve(idx)? {
                    Resolved::Static(i) => Src::Static(i),
                    Resolved::Dynamic(i) => Src::Dynamic(i),
                    Resolved::Unknown => Src::None,
                }
            };
            let name: Option<&[u8]> = match name_src {
                Src::Static(i) => Some(STATIC_TABLE[i].0),
                Src::Dynamic(i) => match self.table.get(i) {
                    Lookup::Known(e) => Some(&e.name),
                    _ => return Err(HpackError::InvalidIndex),
                },
                Src::Scratch => Some(&self.name_buf),
                Src::None => None,
            };
            // Value: materialised only when kept.
            let keep_value = name.is_some_and(|n| (self.keep)(n));
            self.value_buf.clear();
            let value_buf = &mut self.value_buf;
            let value_len = match read_string(&block[p..], |o| {
                if keep_value {
                    value_buf.push(o)
                }
            })? {
                Some((len, used)) => {
                    p += used;
                    len
                }
                None => return short(outcome),
            };
            pos = p;
            outcome.fields += 1;
            let value_src = if keep_value { Src::Scratch } else { Src::None };
            match name {
                Some(name) => {
                    let value = matches!(value_src, Src::Scratch).then_some(&self.value_buf[..]);
                    on_field(Field::Known { name, value });
                    if indexing {
                        // Copy the name out before the table is mutated.
                        let name: Box<[u8]> = name.into();
                        self.table
                            .insert(&name, value.map(|_| &self.value_buf[..]), value_len);
                    }
                }
                None => {
                    outcome.unknown += 1;
                    on_field(Field::Unknown);
                    if indexing {
                        self.table.insert_placeholder(value_len);
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve(&self, idx: u32) -> Result<Resolved, HpackError> {
        let idx = idx as usize;
        if idx == 0 {
            return Err(HpackError::InvalidIndex);
        }
        if idx <= STATIC_LEN {
            return Ok(Resolved::Static(idx - 1));
        }
        match self.table.get(idx - STATIC_LEN - 1) {
            Lookup::Known(_) => Ok(Resolved::Dynamic(idx - STATIC_LEN - 1)),
            Lookup::Unknown => Ok(Resolved::Unknown),
            Lookup::Invalid => Err(HpackError::InvalidIndex),
        }
    }
}

enum Resolved {
    Static(usize),
    Dynamic(usize),
    Unknown,
}

/// Reads a string literal (RFC 7541 §5.2) at the start of `buf`, handing decoded octets to
/// `emit`. Returns `(decoded length, octets consumed)`, or `None` if `buf` ends inside it.
fn read_string(buf: &[u8], mut emit: impl FnMut(u8)) -> Result<Option<(usize, usize)>, HpackError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, n)) = decode_integer(buf, 7)? else {
        return Ok(None);
    };
    let len = len as usize;
    let Some(raw) = buf.get(n..n.saturating_add(len)) else {
        return Ok(None);
    };
    let decoded = if first & 0x80 != 0 {
        huffman::decode(raw, emit).map_err(HpackError::Huffman)?
    } else {
        raw.iter().for_each(|&o| emit(o));
        raw.len()
    };
    Ok(Some((decoded, n + len)))
}

// The encoder the tests build conversations with (and `cargo xtask fuzz-seeds` its seeds).
#[cfg(test)]
pub(crate) mod test_encoder;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        d.decode(block, true, &mut |f| match f {
            Field::Known { name, value } => v.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value.unwrap_or(b"<dropped>")).into_owned(),
            )),
            Field::Unknown => v.push(("<unknown>".into(), String::new())),
        })
        .unwrap();
        v
    }

    fn table(d: &Decoder) -> Vec<(String, String)> {
        d.table()
            .entries()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.name).into_owned(),
                    String::from_utf8_lossy(e.value.as_deref().unwrap_or(b"")).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|&(a, b)| (a.into(), b.into())).collect()
    }

    #[test]
    fn integers_rfc7541_c1() {
        // C.1.1: 10 with a 5-bit prefix.
        assert_eq!(decode_integer(&[0x0a], 5), Ok(Some((10, 1))));
        // C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(decode_integer(&[0x1f, 0x9a, 0x0a], 5), Ok(Some((1337, 3))));
        // C.1.3: 42 starting at an octet boundary.
        assert_eq!(decode_integer(&[0x2a], 8), Ok(Some((42, 1))));
        assert_eq!(decode_integer(&[0x1f, 0x9a], 5), Ok(None));
        assert_eq!(
            decode_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], 5),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            decode_integer(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 5),
            Err(HpackError::IntegerOverflow)
        );
    }

    #[test]
    fn c2_1_literal_with_indexing() {
        let mut d = Decoder::new(keep_all);
        let b = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut d, &b),
            pairs(&[("custom-key", "custom-header")])
        );
        assert_eq!(table(&d), pairs(&[("custom-key", "custom-header")]));
        assert_eq!(d.table().size(), 55);
    }

    #[test]
    fn c2_2_literal_without_indexing() {
        let mut d = Decoder::new(keep_all);
        let b = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(decode(&mut d, &b), pairs(&[(":path", "/sample/path")]));
        assert!(d.table().is_empty());
    }

    #[test]
    fn c2_3_literal_never_indexed() {
        let mut d = Decoder::new(keep_all);
        let b = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(decode(&mut d, &b), pairs(&[("password", "secret")]));
        assert!(d.table().is_empty());
    }

    #[test]
    fn c2_4_indexed() {
        let mut d = Decoder::new(keep_all);
        assert_eq!(decode(&mut d, &[0x82]), pairs(&[(":method", "GET")]));
        assert!(d.table().is_empty());
    }

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(keep_all);
        assert_eq!(
            decode(&mut d, &hex(blocks[0])),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(table(&d), pairs(&[(":authority", "www.example.com")]));
        assert_eq!(d.table().size(), 57);
        assert_eq!(
            decode(&mut d, &hex(blocks[1])),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table().size(), 110);
        assert_eq!(
            decode(&mut d, &hex(blocks[2])),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table().size(), 164);
    }

    #[test]
    fn c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(keep_all);
        d.set_limit(256);
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let loc = "https://www.example.com";
        assert_eq!(
            decode(&mut d, &hex(blocks[0])),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", loc)
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("location", loc),
                ("date", date1),
                ("cache-control", "private"),
                (":status", "302")
            ])
        );
        assert_eq!(d.table().size(), 222);
        assert_eq!(
            decode(&mut d, &hex(blocks[1])),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", loc)
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                (":status", "307"),
                ("location", loc),
                ("date", date1),
                ("cache-control", "private")
            ])
        );
        assert_eq!(d.table().size(), 222);
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        assert_eq!(
            decode(&mut d, &hex(blocks[2])),
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", date2),
                ("location", loc),
                ("content-encoding", "gzip"),
                ("set-cookie", cookie)
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("set-cookie", cookie),
                ("content-encoding", "gzip"),
                ("date", date2)
            ])
        );
        assert_eq!(d.table().size(), 215);
    }

    #[test]
    fn c5_responses_without_huffman() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        ]);
    }

    #[test]
    fn c6_responses_with_huffman() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    fn keep_pseudo(name: &[u8]) -> bool {
        name.starts_with(b":")
    }

    #[test]
    fn policy_drops_values_but_keeps_table_consistent() {
        // C.5 with a policy keeping only pseudo-headers: same sizes, no secret values held.
        let mut d = Decoder::new(keep_pseudo);
        d.set_limit(256);
        let b3 = hex(
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        );
        decode(
            &mut d,
            &hex(
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            ),
        );
        decode(&mut d, &hex("4803 3330 37c1 c0bf"));
        let fields = decode(&mut d, &b3);
        assert_eq!(fields[0], (":status".into(), "200".into()));
        assert_eq!(fields[5], ("set-cookie".into(), "<dropped>".into()));
        assert_eq!(d.table().size(), 215);
        assert!(d.table().entries().all(|e| e.value.is_none()));
    }

    #[test]
    fn unknown_dynamic_index_when_unsynced() {
        let mut d = Decoder::new_unsynced(keep_all);
        // :method GET (static), then dynamic index 62 (unknown), then literal indexed name.
        let got = decode(&mut d, &[0x82, 0xbe, 0x44, 0x01, b'/']);
        assert_eq!(
            got,
            pairs(&[(":method", "GET"), ("<unknown>", ""), (":path", "/")])
        );
        // The literal inserted ":path: /" which is now index 62 and known.
        assert_eq!(decode(&mut d, &[0xbe]), pairs(&[(":path", "/")]));
        // Index 63 is still unknown.
        assert_eq!(decode(&mut d, &[0xbf]), pairs(&[("<unknown>", "")]));
    }

    #[test]
    fn invalid_index_when_synced_is_error_then_unsynced() {
        let mut d = Decoder::new(keep_all);
        assert_eq!(
            d.decode(&[0xbe], true, &mut |_| {}),
            Err(HpackError::InvalidIndex)
        );
        assert!(!d.is_synced());
        assert_eq!(
            d.decode(&[0x80], true, &mut |_| {}),
            Err(HpackError::InvalidIndex)
        );
    }

    #[test]
    fn truncated_block_desyncs() {
        let mut d = Decoder::new(keep_all);
        let b = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        let mut n = 0;
        let out = d.decode(&b[..8], false, &mut |_| n += 1).unwrap();
        assert_eq!(n, 3);
        assert!(out.truncated);
        assert!(!d.is_synced());
        assert_eq!(
            d.decode(&b[..8], true, &mut |_| {}),
            Err(HpackError::Truncated)
        );
    }

    #[test]
    fn late_size_update_is_error() {
        let mut d = Decoder::new(keep_all);
        assert_eq!(
            d.decode(&[0x82, 0x20], true, &mut |_| {}),
            Err(HpackError::LateSizeUpdate)
        );
    }

    #[test]
    fn size_update_to_zero_resyncs() {
        let mut d = Decoder::new_unsynced(keep_all);
        assert!(!d.is_synced());
        decode(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]);
        assert!(d.is_synced());
        assert_eq!(d.table().max_size(), 4096);
    }

    #[test]
    fn encoder_round_trip_with_and_without_huffman() {
        for huff in [false, true] {
            let mut e = test_encoder::Encoder::new(huff);
            let mut d = Decoder::new(keep_all);
            let f = [
                (":method", "POST"),
                (":path", "/pkg.Svc/Method"),
                ("content-type", "application/grpc"),
                ("authorization", "Bearer x"),
                ("te", "trailers"),
            ];
            for _ in 0..3 {
                let b = e.encode(&f);
                assert_eq!(decode(&mut d, &b), pairs(&f));
            }
            assert_eq!(d.table().size(), e.table.size());
        }
    }

    #[test]
    fn malformed_blocks_never_panic() {
        let mut d = Decoder::new(keep_all);
        for a in 0..=255u8 {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let _ = d.decode(&[a, b, 0xff, 0x01], true, &mut |_| {});
                let _ = d.decode(&[a, b], false, &mut |_| {});
            }
        }
    }
}
