//! The HPACK Huffman code (RFC 7541 §5.2 and Appendix B).
//!
//! Decoding walks a binary tree built at compile time from the Appendix B table, one bit at a
//! time. That is not the fastest possible decoder, but it is obviously bounded (eight steps per
//! input byte), allocation-free, and header blocks are small. Every malformed input — the EOS
//! symbol inside a string, padding longer than seven bits, padding that is not a prefix of EOS
//! (RFC 7541 §5.2) — is an error value, never a panic.

/// `(code, bit length)` for symbols 0..=255 and EOS (256), RFC 7541 Appendix B.
pub(crate) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

/// Symbol index of EOS (RFC 7541 §5.2).
const EOS: u16 = 256;
/// Marks a tree slot as a leaf; the low bits hold the symbol.
const LEAF: u16 = 0x8000;
/// The Huffman code is complete (Kraft sum exactly 1), so the tree has 256 internal nodes.
const NODES: usize = 256;

/// `TREE[node][bit]` is either another internal node index or `LEAF | symbol`. Slot value 0
/// means "no child" (node 0 is the root and is never a child); it cannot occur for a complete
/// code, and decoding treats it as an error anyway.
static TREE: [[u16; 2]; NODES] = build_tree();

const fn build_tree() -> [[u16; 2]; NODES] {
    let mut tree = [[0u16; 2]; NODES];
    let mut next_free: usize = 1;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0usize;
        let mut i = len;
        while i > 0 {
            i -= 1;
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                tree[node][bit] = LEAF | sym as u16;
            } else {
                if tree[node][bit] == 0 {
                    tree[node][bit] = next_free as u16;
                    next_free += 1;
                }
                node = tree[node][bit] as usize;
            }
        }
        sym += 1;
    }
    tree
}

/// Why a Huffman-coded string is invalid (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared inside the string.
    EosInString,
    /// More than seven bits of padding.
    PaddingTooLong,
    /// Padding bits that are not the most significant bits of EOS (all ones).
    InvalidPadding,
}

impl std::fmt::Display for HuffmanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HuffmanError::EosInString => "EOS symbol in Huffman string",
            HuffmanError::PaddingTooLong => "Huffman padding longer than 7 bits",
            HuffmanError::InvalidPadding => "Huffman padding is not a prefix of EOS",
        })
    }
}

/// Decodes `input`, handing every decoded octet to `emit`. Returns the number of octets
/// decoded.
pub fn decode(input: &[u8], mut emit: impl FnMut(u8)) -> Result<usize, HuffmanError> {
    let mut node = 0usize;
    // Bits consumed since the last complete symbol, and whether they were all ones: at the end
    // they are the padding, which must be at most 7 bits of EOS's prefix (all ones).
    let mut pending_bits = 0u32;
    let mut pending_all_ones = true;
    let mut count = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            let bit = ((byte >> shift) & 1) as usize;
            let slot = TREE[node][bit];
            if slot & LEAF != 0 {
                let sym = slot & !LEAF;
                if sym == EOS {
                    return Err(HuffmanError::EosInString);
                }
                emit(sym as u8);
                count += 1;
                node = 0;
                pending_bits = 0;
                pending_all_ones = true;
            } else if slot == 0 {
                // Unreachable for the complete RFC code; kept as an error, not a panic.
                return Err(HuffmanError::InvalidPadding);
            } else {
                node = slot as usize;
                pending_bits += 1;
                pending_all_ones &= bit == 1;
            }
        }
    }
    if pending_bits > 7 {
        return Err(HuffmanError::PaddingTooLong);
    }
    if !pending_all_ones {
        return Err(HuffmanError::InvalidPadding);
    }
    Ok(count)
}

/// Huffman-encodes `input` (used by tests and fuzz seed generation; the daemon only decodes).
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS (all ones), RFC 7541 §5.2.
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

/// Length of the Huffman encoding of `input`, in octets.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input.iter().map(|&b| CODES[b as usize].1 as usize).sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut v = Vec::new();
        decode(input, |b| v.push(b)).map(|_| v)
    }

    #[test]
    fn code_is_prefix_free_and_complete() {
        // Kraft sum of a complete prefix code is exactly 1: sum 2^(30-len) == 2^30.
        let sum: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(sum, 1 << 30);
        // Every internal node is used and every symbol reachable.
        for sym in 0..=255u8 {
            assert_eq!(
                dec(&{
                    let mut v = Vec::new();
                    encode(&[sym], &mut v);
                    v
                }),
                Ok(vec![sym])
            );
        }
    }

    #[test]
    fn round_trips_all_octets() {
        let input: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut enc = Vec::new();
        encode(&input, &mut enc);
        assert_eq!(enc.len(), encoded_len(&input));
        assert_eq!(dec(&enc).unwrap(), input);
    }

    #[test]
    fn rfc7541_c4_strings() {
        // RFC 7541 Appendix C.4.1: "www.example.com".
        let enc = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(dec(&enc).unwrap(), b"www.example.com");
        let mut v = Vec::new();
        encode(b"www.example.com", &mut v);
        assert_eq!(v, enc);
        // C.4.2: "no-cache".
        assert_eq!(
            dec(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(),
            b"no-cache"
        );
    }

    #[test]
    fn empty_string_is_valid() {
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn eos_in_string_is_error() {
        // EOS is 30 ones; 0xff 0xff 0xff 0xfc carries 30 ones then "00" — the decoder hits
        // EOS after 30 bits.
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EosInString)
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xfc]),
            Err(HuffmanError::EosInString)
        );
    }

    #[test]
    fn padding_longer_than_seven_bits_is_error() {
        // 'a' = 00011 (5 bits) followed by 11 bits of ones: padding of 11 bits.
        assert_eq!(dec(&[0x1f, 0xff]), Err(HuffmanError::PaddingTooLong));
        // A whole byte of ones alone is 8 bits of padding.
        assert_eq!(dec(&[0xff]), Err(HuffmanError::PaddingTooLong));
    }

    #[test]
    fn padding_not_eos_prefix_is_error() {
        // 'a' (00011) then padding 000 instead of 111.
        assert_eq!(dec(&[0x18]), Err(HuffmanError::InvalidPadding));
        // 'a' then padding 110.
        assert_eq!(dec(&[0x1e]), Err(HuffmanError::InvalidPadding));
        // Correct padding 111 decodes.
        assert_eq!(dec(&[0x1f]).unwrap(), b"a");
    }

    #[test]
    fn exhaustive_two_byte_inputs_never_panic() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = dec(&[a, b]);
            }
        }
    }
}
