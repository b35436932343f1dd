//! HPACK indexing tables: the static table (RFC 7541 §2.3.1, Appendix A) and a dynamic table
//! (RFC 7541 §2.3.2, §4) that can be *partially known*.
//!
//! A passive observer may not know the whole dynamic table: it may have joined the connection
//! mid-way, or a header block may have been truncated by the capture bound, in which case the
//! entries that block inserted are unknowable. The table therefore models
//!
//! ```text
//!   [ known entries, newest first, exact sizes ] ++ [ unknown tail of unknown entries ]
//! ```
//!
//! Known entries are always the newest ones, so an index that falls inside the known region
//! resolves to exactly what the encoder meant (RFC 7541 §2.3.3 indexes from the newest entry),
//! and eviction (§4.4, oldest first) removes unknown-tail entries before any known one. An
//! index beyond the known region resolves to [`Lookup::Unknown`] while the tail may be
//! non-empty — never to a guessed value. The tail is proven empty again (resynchronised) when
//! the maximum size is known and no entry (at least 32 octets, §4.1) fits beside the known
//! entries, e.g. after a dynamic table size update to 0.
//!
//! An entry inserted with a name the decoder cannot resolve (a literal whose name is an
//! unknown dynamic index) has an unknown size but a known *position*: it is kept as an
//! [`Entry`] with `known = false` and its lower-bound size (32 + value length). Eviction uses
//! lower bounds, so the decoder's list is always a superset whose prefix is the encoder's real
//! table: every index the encoder can legally use still resolves to the right entry (or to
//! `Unknown`), it only may keep entries the encoder already evicted — which the encoder can no
//! longer reference.

use std::collections::VecDeque;

/// RFC 7541 §4.1: each entry costs its name and value lengths plus 32 octets.
pub const ENTRY_OVERHEAD: usize = 32;

/// Hard cap on the dynamic table size the decoder will hold, whatever SETTINGS or size updates
/// say. When a peer uses a larger table, entries beyond the cap become an unknown tail.
pub const MAX_TABLE_SIZE: usize = 64 * 1024;

/// RFC 9113 §6.5.2: initial value of SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// RFC 7541 Appendix A: the static table, index 1..=61.
pub static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Number of static table entries: dynamic indexes start after it (RFC 7541 §2.3.3).
pub const STATIC_LEN: usize = STATIC_TABLE.len();

/// One dynamic table entry. The value is only held when the decoder's policy keeps values for
/// that name; the accounted `size` is the true one (§4.1), or a lower bound when `!known`.
#[derive(Debug)]
pub struct Entry {
    pub name: Box<[u8]>,
    pub value: Option<Box<[u8]>>,
    pub size: usize,
    /// False for a placeholder whose name (and so size) is unknown.
    pub known: bool,
}

/// Result of resolving a dynamic index.
#[derive(Debug)]
pub enum Lookup<'a> {
    Known(&'a Entry),
    /// The index points into entries the decoder never saw (joined mid-way, desynchronised).
    Unknown,
    /// The index is past the end of a fully known table: a decoding error (RFC 7541 §2.3.3).
    Invalid,
}

/// A dynamic table whose oldest part may be unknown (see the module docs).
#[derive(Debug)]
pub struct DynamicTable {
    /// Newest first.
    entries: VecDeque<Entry>,
    /// Sum of the entry sizes (§4.1), lower bounds for placeholders.
    size: usize,
    /// Placeholders (entries of unknown name) in `entries`.
    placeholders: usize,
    /// Number and total size of the known entries at the front (newest), before any
    /// placeholder.
    front_len: usize,
    front_size: usize,
    /// Current maximum size as the decoder believes it (§4.2), capped at [`MAX_TABLE_SIZE`].
    max_size: usize,
    /// Protocol bound, SETTINGS_HEADER_TABLE_SIZE as acknowledged (RFC 9113 §6.5.2), capped.
    limit: usize,
    /// Whether `max_size` is exact (false after joining mid-way until a size update is seen).
    max_known: bool,
    /// The peer's real maximum is above [`MAX_TABLE_SIZE`]: entries we evict may still exist.
    over_cap: bool,
    /// Entries older than the known ones may exist.
    unknown_tail: bool,
    /// Name and value octets actually held.
    held: usize,
}

impl DynamicTable {
    /// A table at connection start: empty, known, 4096 octets (RFC 9113 §6.5.2).
    pub fn new() -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            placeholders: 0,
            front_len: 0,
            front_size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            limit: DEFAULT_TABLE_SIZE,
            max_known: true,
            over_cap: false,
            unknown_tail: false,
            held: 0,
        }
    }

    /// A table of a connection joined mid-way: content and maximum size unknown.
    pub fn new_unknown() -> Self {
        let mut t = Self::new();
        t.max_size = MAX_TABLE_SIZE;
        t.limit = MAX_TABLE_SIZE;
        t.max_known = false;
        t.unknown_tail = true;
        t
    }

    /// Resolves a 0-based dynamic index (HPACK index minus 62).
    pub fn get(&self, idx: usize) -> Lookup<'_> {
        match self.entries.get(idx) {
            Some(e) if e.known => Lookup::Known(e),
            Some(_) => Lookup::Unknown,
            None if self.unknown_tail => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// Inserts a new entry (§4.4): evicts from the oldest end until it fits; an entry larger
    /// than the maximum empties the table and is not inserted.
    pub fn insert(&mut self, name: &[u8], value: Option<&[u8]>, value_len: usize) {
        let size = name
            .len()
            .saturating_add(value_len)
            .saturating_add(ENTRY_OVERHEAD);
        if !self.make_room(size) {
            return;
        }
        self.held += name.len() + value.map_or(0, <[u8]>::len);
        self.entries.push_front(Entry {
            name: name.into(),
            value: value.map(Into::into),
            size,
            known: true,
        });
        self.size += size;
        self.front_len += 1;
        self.front_size += size;
        self.try_resync();
    }

    /// Inserts an entry whose name is unknown (a literal with incremental indexing whose name
    /// index pointed at unknown content): its position is known, its size only bounded below.
    pub fn insert_placeholder(&mut self, value_len: usize) {
        let min_size = value_len.saturating_add(ENTRY_OVERHEAD);
        if !self.make_room(min_size) {
            return;
        }
        self.entries.push_front(Entry {
            name: Box::default(),
            value: None,
            size: min_size,
            known: false,
        });
        self.size += min_size;
        self.placeholders += 1;
        self.front_len = 0;
        self.front_size = 0;
    }

    /// Evicts for an entry of (at least) `size` octets (§4.4). Returns false when the entry
    /// is larger than the maximum: the table is then emptied and the entry not inserted.
    fn make_room(&mut self, size: usize) -> bool {
        if size > self.max_size {
            self.clear_known();
            if self.max_known && !self.over_cap {
                // The whole real table was emptied too (§4.4).
                self.unknown_tail = false;
            }
            return false;
        }
        while self.size + size > self.max_size && !self.entries.is_empty() {
            self.evict_oldest();
        }
        true
    }

    /// A dynamic table size update (RFC 7541 §6.3, §4.3). Values above [`MAX_TABLE_SIZE`] are
    /// held at the cap and the excess becomes an unknown tail. Sizes above the acknowledged
    /// SETTINGS limit are accepted (a passive observer may have misordered the ACK); the peer
    /// decoder would reject them and close the connection anyway.
    pub fn size_update(&mut self, new_max: usize) {
        self.max_known = true;
        self.over_cap = new_max > MAX_TABLE_SIZE;
        if self.over_cap {
            self.unknown_tail = true;
        }
        self.max_size = new_max.min(MAX_TABLE_SIZE);
        self.evict_to_fit();
        self.try_resync();
    }

    /// The decoder side acknowledged a SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2). The
    /// maximum can only shrink here; growing it takes a size update from the encoder (§4.2).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_TABLE_SIZE);
        if limit < self.max_size {
            self.max_size = limit;
            if limit <= MAX_TABLE_SIZE {
                self.over_cap = false;
            }
            self.evict_to_fit();
        }
        self.try_resync();
    }

    /// Forget everything: the table content is no longer knowable.
    pub fn desync(&mut self) {
        self.clear_known();
        self.unknown_tail = true;
    }

    /// True when every entry of the table is known.
    pub fn is_synced(&self) -> bool {
        !self.unknown_tail && self.placeholders == 0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of entry sizes (§4.1); placeholders count with their lower bound.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries (including placeholders), newest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Bytes of memory held by the table (entries, their octets, the deque).
    pub fn memory_estimate(&self) -> usize {
        self.held + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    fn evict_oldest(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.size -= e.size;
            self.held -= e.name.len() + e.value.as_ref().map_or(0, |v| v.len());
            if !e.known {
                self.placeholders -= 1;
            }
            if self.front_len > self.entries.len() {
                // The evicted entry was part of the all-known front.
                self.front_len -= 1;
                self.front_size -= e.size;
            }
        }
    }

    fn evict_to_fit(&mut self) {
        while self.size > self.max_size {
            self.evict_oldest();
        }
        if self.entries.capacity() > 4 * self.entries.len().max(16) {
            self.entries.shrink_to_fit();
        }
    }

    fn clear_known(&mut self) {
        self.entries.clear();
        self.entries.shrink_to(16);
        self.size = 0;
        self.held = 0;
        self.placeholders = 0;
        self.front_len = 0;
        self.front_size = 0;
    }

    /// With an exact maximum, nothing older than the newest known entries survives once no
    /// entry fits beside them: every entry is at least [`ENTRY_OVERHEAD`] octets (§4.1).
    /// Older entries (placeholders, unknown tail) are then dropped and the table is exact.
    fn try_resync(&mut self) {
        if (self.unknown_tail || self.placeholders > 0)
            && self.max_known
            && !self.over_cap
            && self.front_size + ENTRY_OVERHEAD > self.max_size
        {
            while self.entries.len() > self.front_len {
                self.evict_oldest();
            }
            self.unknown_tail = false;
        }
    }
}

impl Default for DynamicTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_matches_appendix_a_spot_checks() {
        assert_eq!(STATIC_TABLE[0], (&b":authority"[..], &b""[..]));
        assert_eq!(STATIC_TABLE[1], (&b":method"[..], &b"GET"[..]));
        assert_eq!(STATIC_TABLE[14].0, b"accept-charset");
        assert_eq!(
            STATIC_TABLE[15],
            (&b"accept-encoding"[..], &b"gzip, deflate"[..])
        );
        assert_eq!(STATIC_TABLE[30].0, b"content-type");
        assert_eq!(STATIC_TABLE[60].0, b"www-authenticate");
    }

    #[test]
    fn eviction_is_oldest_first() {
        let mut t = DynamicTable::new();
        t.size_update(100);
        t.insert(b"a", Some(b"1"), 1); // 34
        t.insert(b"b", Some(b"2"), 1); // 34
        t.insert(b"c", Some(b"3"), 1); // 34 -> evicts "a"
        assert_eq!(t.len(), 2);
        assert_eq!(t.size(), 68);
        match t.get(1) {
            Lookup::Known(e) => assert_eq!(&*e.name, b"b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.get(2), Lookup::Invalid));
    }

    #[test]
    fn oversized_entry_empties_table() {
        let mut t = DynamicTable::new();
        t.size_update(64);
        t.insert(b"a", Some(b"1"), 1);
        t.insert(b"name", Some(&[b'x'; 40]), 40);
        assert!(t.is_empty());
        assert!(t.is_synced());
    }

    #[test]
    fn unknown_tail_resolves_unknown_until_resync() {
        let mut t = DynamicTable::new_unknown();
        t.insert(b"a", Some(b"1"), 1);
        assert!(matches!(t.get(0), Lookup::Known(_)));
        assert!(matches!(t.get(1), Lookup::Unknown));
        // Maximum still unknown: no resync even though the known part is small.
        assert!(!t.is_synced());
        t.size_update(0);
        assert!(t.is_synced());
        assert!(matches!(t.get(0), Lookup::Invalid));
        t.size_update(4096);
        t.insert(b"b", Some(b"2"), 1);
        assert!(matches!(t.get(0), Lookup::Known(_)));
        assert!(matches!(t.get(1), Lookup::Invalid));
    }

    #[test]
    fn resync_when_known_entries_fill_the_table() {
        let mut t = DynamicTable::new();
        t.size_update(100);
        t.desync();
        assert!(!t.is_synced());
        t.insert(b"a", Some(&[b'v'; 40]), 40); // 73: 27 left, no entry fits
        assert!(t.is_synced());
    }

    #[test]
    fn placeholder_keeps_positions_and_evicts_by_lower_bound() {
        let mut t = DynamicTable::new();
        t.size_update(200);
        t.insert(b"k0", Some(b"v"), 1); // 35
        t.insert_placeholder(10); // >= 42
        t.insert(b"k1", Some(b"v"), 1); // 35
        assert!(!t.is_synced());
        assert!(matches!(t.get(0), Lookup::Known(e) if &*e.name == b"k1"));
        assert!(matches!(t.get(1), Lookup::Unknown));
        assert!(matches!(t.get(2), Lookup::Known(e) if &*e.name == b"k0"));
        // The encoder's table is a prefix of ours: past the end is invalid.
        assert!(matches!(t.get(3), Lookup::Invalid));
        // Known entries filling the table prove everything older evicted: exact again.
        // 112 + 38 + 38 = 188; the third insert evicts k0 (35), the fourth the placeholder
        // (42), the fifth k1 (35): five entries of 38 remain, and 10 octets cannot hold one.
        for i in 0..5u8 {
            t.insert(&[b'n', i], Some(&[b'x'; 4]), 4); // 38 each
        }
        assert!(t.is_synced());
        assert!(t.entries().all(|e| e.known));
        assert_eq!((t.len(), t.size()), (5, 5 * 38));
        let names: Vec<&[u8]> = t.entries().map(|e| &*e.name).collect();
        assert_eq!(names, [b"n\x04", b"n\x03", b"n\x02", b"n\x01", b"n\x00"]);
    }

    #[test]
    fn over_cap_keeps_unknown_tail() {
        let mut t = DynamicTable::new();
        t.size_update(1 << 20);
        assert_eq!(t.max_size(), MAX_TABLE_SIZE);
        assert!(!t.is_synced());
        t.insert(b"a", Some(b"1"), 1);
        assert!(matches!(t.get(1), Lookup::Unknown));
        t.size_update(0);
        assert!(t.is_synced());
    }

    #[test]
    fn limit_shrinks_table() {
        let mut t = DynamicTable::new();
        for i in 0..10u8 {
            t.insert(&[b'a' + i], Some(&[b'x'; 60]), 60);
        }
        assert_eq!(t.len(), 10);
        t.set_limit(200);
        // 93 octets each: the two newest fit in 200, the eight older are evicted.
        assert_eq!((t.len(), t.size()), (2, 2 * 93));
        assert_eq!(t.max_size(), 200);
        let names: Vec<&[u8]> = t.entries().map(|e| &*e.name).collect();
        assert_eq!(names, [b"j", b"i"]);
        // Held octets: name and value of the two survivors; the deque keeps the capacity it
        // grew to for ten entries.
        assert_eq!(t.held, 2 * (1 + 60));
        assert!(t.entries.capacity() >= 10);
        assert_eq!(
            t.memory_estimate(),
            2 * (1 + 60) + t.entries.capacity() * std::mem::size_of::<Entry>()
        );
    }
}
