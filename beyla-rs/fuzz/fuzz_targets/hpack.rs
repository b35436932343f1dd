//! Fuzzes the HPACK decoder (RFC 7541) with sequences of field blocks on one decoder.
//!
//! Input layout: a config byte (bit 0: start unsynced as when joining mid-way, bit 1: decode
//! every block as truncated, bits 2..7: SETTINGS_HEADER_TABLE_SIZE selector), then blocks
//! as a big-endian u16 length and the bytes.
//!
//! Two decoders run side by side, one keeping every value and one keeping none: the value
//! policy must never change table sizes, sync state or errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/protocol"]
mod protocol {
    include!(concat!(env!("OUT_DIR"), "/protocol_types.rs"));
    pub mod http2;
}

use protocol::http2::hpack::table::MAX_TABLE_SIZE;
use protocol::http2::hpack::{Decoder, Field, keep_all};

fn keep_none(_: &[u8]) -> bool {
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut d)) = data.split_first() else {
        return;
    };
    let (mut all, mut none) = if cfg & 1 != 0 {
        (
            Decoder::new_unsynced(keep_all),
            Decoder::new_unsynced(keep_none),
        )
    } else {
        (Decoder::new(keep_all), Decoder::new(keep_none))
    };
    let complete = cfg & 2 == 0;
    let limit = [0u32, 32, 256, 4096, 65536, 1 << 20, u32::MAX][usize::from(cfg >> 2) % 7];
    if cfg >> 2 != 0 {
        all.set_limit(limit);
        none.set_limit(limit);
    }
    while d.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([d[0], d[1]])).min(d.len() - 2);
        let block = &d[2..2 + len];
        d = &d[2 + len..];
        let mut fields_all = 0usize;
        let ra = all.decode(block, complete, &mut |f| {
            if let Field::Known { value, .. } = f {
                assert!(value.is_some());
            }
            fields_all += 1;
        });
        let mut fields_none = 0usize;
        let rn = none.decode(block, complete, &mut |f| {
            if let Field::Known { value, .. } = f {
                assert!(value.is_none());
            }
            fields_none += 1;
        });
        assert_eq!(ra, rn);
        assert_eq!(fields_all, fields_none);
        for dec in [&all, &none] {
            let t = dec.table();
            assert!(t.size() <= t.max_size());
            assert!(t.max_size() <= MAX_TABLE_SIZE);
            assert!(t.memory_estimate() <= 4 * MAX_TABLE_SIZE);
        }
        assert_eq!(all.table().size(), none.table().size());
        assert_eq!(all.table().len(), none.table().len());
        assert_eq!(all.is_synced(), none.is_synced());
    }
});
