//! What the SQL wire-protocol parsers ([`postgres`](super::postgres), [`mysql`](super::mysql))
//! share: statement summaries and the framing of length-prefixed messages.
//!
//! # Summaries
//!
//! [`summarize`] turns statement text into a [`Summary`]: the text with every literal
//! replaced by `?` (so that no value a statement carries is ever exported), the operation
//! (`SELECT`, `INSERT`, …) and the table of simple statements. It is a small lexer, not a
//! parser: it knows the token rules of the two dialects ([`Dialect`]) well enough to find
//! literals, comments and quoted identifiers, and looks at the first statement's first tokens
//! for the operation and the table. It never fails: unterminated quotes and comments run to
//! the end of the text (so an unterminated string hides everything after it), and the work is
//! linear in the input and bounded by [`MAX_TEXT_LEN`] and [`MAX_TOKENS`].
//!
//! # Framing
//!
//! Both protocols are streams of length-prefixed messages (PostgreSQL: type octet and a
//! 32-bit length; MySQL: a 24-bit length and a sequence id). `Reader` follows one direction
//! of a connection across segments with exact byte accounting: a header may be split across
//! segments, a body may run into bytes that were never captured (they are counted, not
//! seen), and a header that falls into uncaptured bytes loses the framing (`Step::Lost`) until
//! the protocol parser finds a message start again. Only a bounded prefix of each message
//! (`MAX_KEEP`, and less where the parser asks for less) is ever copied; a message that lies
//! whole in one segment's captured bytes is handed over without a copy. A copied prefix is
//! zeroed once the message has been handled, so statement values and authentication data are
//! not kept beyond the message in flight.

use std::sync::Arc;

use memchr::{memchr, memchr2, memmem};

/// Longest summarized statement text (octets); longer texts are cut at a character boundary.
pub const MAX_TEXT_LEN: usize = 2048;
/// Longest table name kept in [`Summary::collection`] (octets).
pub const MAX_NAME_LEN: usize = 256;
/// Tokens of the first statement looked at for the operation and the table.
pub const MAX_TOKENS: usize = 1024;
/// Most octets of one message's payload copied while it is split across segments.
pub const MAX_KEEP: usize = 4096;

/// The protocols' shared judgement of first bytes (re-exported for the parsers of this family).
pub use super::Detected;

/// The lexical rules a statement text follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `"…"` is an identifier, `'…'` takes no backslash escapes (unless `E'…'`), `$tag$…$tag$`
    /// quotes, `/* */` comments nest.
    #[default]
    Postgres,
    /// `"…"` is a string (unless `ANSI_QUOTES`, which is not assumed: a value must never
    /// leak), backslash escapes in strings, `` `…` `` identifiers, `#` and `-- ` comments.
    Mysql,
}

/// A statement reduced to what may be exported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The statement's verb, upper case (`SELECT`, `INSERT`, …): the first keyword of the
    /// first statement, or for `WITH` the verb of the main statement. `None` when the text
    /// does not start with a known SQL command keyword.
    pub operation: Option<String>,
    /// The table of a simple statement (see [`summarize`]), unquoted, schema-qualified as
    /// written.
    pub collection: Option<String>,
    /// The whole text with literals as `?`, comments removed and whitespace runs collapsed to
    /// one space, at most [`MAX_TEXT_LEN`] octets.
    pub text: String,
}

/// Summarizes PostgreSQL statement text (see [`summarize_with`]).
pub fn summarize(sql: &str) -> Summary {
    summarize_with(sql, Dialect::Postgres)
}

/// Summarizes statement text.
///
/// Literals replaced by `?`: quoted strings (with doubled-quote escapes, backslash escapes
/// where the dialect has them, `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`), PostgreSQL
/// dollar-quoted strings, and numbers (decimals, exponents, `0x…`, `0b…`, `0o…`). Kept:
/// identifiers (`t1`), quoted identifiers, keywords, operators and placeholders (`$1`, `?`).
///
/// `collection` is found for `SELECT … FROM t` (the first table; none when it is a subquery
/// or a function), `INSERT [INTO] t`, `REPLACE [INTO] t`, `UPDATE t`, `DELETE FROM t`,
/// `CREATE [TEMPORARY] TABLE [IF NOT EXISTS] t`, `DROP TABLE [IF EXISTS] t`,
/// `ALTER TABLE t`, `TRUNCATE [TABLE] t`, `COPY t`, `MERGE INTO t`, and the main statement of
/// a `WITH`.
pub fn summarize_with(sql: &str, dialect: Dialect) -> Summary {
    let mut text = String::with_capacity(sql.len().min(MAX_TEXT_LEN));
    let mut toks: Vec<Tok> = Vec::new();
    // The first statement's tokens are complete (a `;` after some token, or the cap).
    let mut first_done = false;
    let mut space = false;
    for t in Lexer::new(sql.as_bytes(), dialect) {
        if t.kind == TokKind::Space {
            space = true;
            continue;
        }
        if !first_done {
            if t.is_punct(sql, b';') {
                // Leading empty statements (`;;SELECT 1`) are skipped.
                first_done = !toks.is_empty();
            } else if toks.len() < MAX_TOKENS {
                toks.push(t);
            } else {
                first_done = true;
            }
        }
        if text.len() < MAX_TEXT_LEN {
            if space && !text.is_empty() {
                text.push(' ');
            }
            let piece = match t.kind {
                TokKind::Literal => "?",
                _ => t.text(sql),
            };
            push_capped(&mut text, piece, MAX_TEXT_LEN);
        } else if first_done {
            // Nothing more to learn: the text is full and the first statement is complete.
            break;
        }
        space = false;
    }
    let (operation, collection) = analyze(sql, &toks);
    Summary {
        operation,
        collection,
        text,
    }
}

/// The database a `USE db` statement (MySQL) switches to, unquoted.
pub fn use_database(sql: &str, dialect: Dialect) -> Option<String> {
    let mut it = Lexer::new(sql.as_bytes(), dialect).filter(|t| t.kind != TokKind::Space);
    let first = it.next()?;
    if first.kind != TokKind::Word || !first.text(sql).eq_ignore_ascii_case("USE") {
        return None;
    }
    let db = it.next()?;
    let name = match db.kind {
        TokKind::Word => db.text(sql).to_owned(),
        TokKind::QuotedIdent => unquote(db.text(sql)),
        _ => return None,
    };
    // Anything but an optional `;` after the name: not a plain `USE`.
    match it.next() {
        None => {}
        Some(t) if t.is_punct(sql, b';') => {}
        Some(_) => return None,
    }
    (!name.is_empty()).then(|| cap_string(name, MAX_NAME_LEN))
}

/// Appends as much of `piece` as fits in `cap` octets, cut at a character boundary.
fn push_capped(out: &mut String, piece: &str, cap: usize) {
    let room = cap.saturating_sub(out.len());
    if piece.len() <= room {
        out.push_str(piece);
    } else {
        let mut n = room;
        while n > 0 && !piece.is_char_boundary(n) {
            n -= 1;
        }
        out.push_str(piece.get(..n).unwrap_or(""));
    }
}

/// `s` cut to at most `cap` octets at a character boundary.
pub(super) fn cap_string(mut s: String, cap: usize) -> String {
    if s.len() > cap {
        let mut n = cap;
        while n > 0 && !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    s
}

/// `bytes` as text (invalid UTF-8 replaced), cut to at most `cap` octets.
pub(super) fn lossy(bytes: &[u8], cap: usize) -> String {
    let b = bytes.get(..cap).unwrap_or(bytes);
    cap_string(String::from_utf8_lossy(b).into_owned(), cap)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokKind {
    /// Whitespace, control characters, comments.
    Space,
    /// Keywords and identifiers (also `1abc`, a MySQL identifier).
    Word,
    /// `"…"` (PostgreSQL) or `` `…` ``, quotes included.
    QuotedIdent,
    /// Strings and numbers: replaced by `?`.
    Literal,
    /// Anything else, copied as is: operators, punctuation, `$1` placeholders.
    Other,
}

/// A token: its kind and its octet range in the text (always at character boundaries).
#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: TokKind,
    start: u32,
    end: u32,
}

impl Tok {
    fn text<'s>(&self, sql: &'s str) -> &'s str {
        sql.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }

    fn is_punct(&self, sql: &str, c: u8) -> bool {
        self.kind == TokKind::Other && self.text(sql).as_bytes() == [c]
    }

    fn is_word(&self, sql: &str, kw: &str) -> bool {
        self.kind == TokKind::Word && self.text(sql).eq_ignore_ascii_case(kw)
    }
}

fn is_space(c: u8) -> bool {
    c.is_ascii_whitespace() || c < 0x20 || c == 0x7f
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Splits statement text into tokens. Offsets are `u32`: texts longer than 4 GiB end there.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    dialect: Dialect,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8], dialect: Dialect) -> Self {
        let s = s.get(..u32::MAX as usize).unwrap_or(s);
        Lexer { s, i: 0, dialect }
    }

    /// The octet at `i`, or 0 past the end (0 is a control character: never part of a token
    /// that lookahead is testing for).
    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    /// Skips a quoted run whose body starts at `from`: up to the closing `q` (a doubled `q`
    /// and, with `backslash`, a backslash-escaped octet do not close it), or the end.
    fn quoted(&mut self, from: usize, q: u8, backslash: bool) {
        let mut i = from;
        loop {
            let rest = self.s.get(i..).unwrap_or(&[]);
            let hit = if backslash {
                memchr2(q, b'\\', rest)
            } else {
                memchr(q, rest)
            };
            let Some(p) = hit else {
                self.i = self.s.len();
                return;
            };
            let at = i + p;
            if self.at(at) == b'\\' || self.at(at + 1) == q {
                i = at + 2;
                continue;
            }
            self.i = at + 1;
            return;
        }
    }

    /// Skips a `/* … */` comment starting at `start` (nested in PostgreSQL).
    fn block_comment(&mut self, start: usize) {
        let mut i = start + 2;
        let mut depth = 1usize;
        loop {
            let rest = self.s.get(i..).unwrap_or(&[]);
            let Some(p) = memchr2(b'*', b'/', rest) else {
                self.i = self.s.len();
                return;
            };
            let at = i + p;
            if self.at(at) == b'*' && self.at(at + 1) == b'/' {
                depth -= 1;
                i = at + 2;
                if depth == 0 {
                    self.i = i;
                    return;
                }
            } else if self.at(at) == b'/'
                && self.at(at + 1) == b'*'
                && self.dialect == Dialect::Postgres
            {
                depth += 1;
                i = at + 2;
            } else {
                i = at + 1;
            }
        }
    }

    /// `$` in PostgreSQL: a `$n` placeholder, a `$tag$…$tag$` string, or an operator octet.
    fn dollar(&mut self, start: usize) -> TokKind {
        let mut j = start + 1;
        if self.at(j).is_ascii_digit() {
            while self.at(j).is_ascii_digit() {
                j += 1;
            }
            self.i = j;
            return TokKind::Other;
        }
        if is_ident_start(self.at(j)) {
            j += 1;
            while is_ident_cont(self.at(j)) && self.at(j) != b'$' {
                j += 1;
            }
        }
        if self.at(j) != b'$' {
            self.i = start + 1;
            return TokKind::Other;
        }
        let tag = self.s.get(start..=j).unwrap_or(&[]);
        let body = j + 1;
        let rest = self.s.get(body..).unwrap_or(&[]);
        self.i = match memmem::find(rest, tag) {
            Some(p) => body + p + tag.len(),
            None => self.s.len(),
        };
        TokKind::Literal
    }

    fn number(&mut self, start: usize) -> TokKind {
        let mut i = start;
        let radix = match (self.at(i), self.at(i + 1)) {
            (b'0', b'x' | b'X') => Some(16),
            (b'0', b'b' | b'B') => Some(2),
            (b'0', b'o' | b'O') => Some(8),
            _ => None,
        };
        let digit = |c: u8, r: u32| (c as char).is_digit(r);
        match radix {
            Some(r) if digit(self.at(i + 2), r) => {
                i += 2;
                while digit(self.at(i), r) || (self.at(i) == b'_' && digit(self.at(i + 1), r)) {
                    i += 1;
                }
            }
            _ => {
                let digits = |l: &Self, mut i: usize| {
                    while l.at(i).is_ascii_digit()
                        || (l.at(i) == b'_' && l.at(i + 1).is_ascii_digit())
                    {
                        i += 1;
                    }
                    i
                };
                i = digits(self, i);
                if self.at(i) == b'.' && self.at(i + 1) != b'.' {
                    i = digits(self, i + 1);
                }
                if matches!(self.at(i), b'e' | b'E') {
                    if self.at(i + 1).is_ascii_digit() {
                        i = digits(self, i + 1);
                    } else if matches!(self.at(i + 1), b'+' | b'-')
                        && self.at(i + 2).is_ascii_digit()
                    {
                        i = digits(self, i + 2);
                    }
                }
            }
        }
        if is_ident_cont(self.at(i)) {
            // `1abc`, `0x1g`: an identifier in MySQL, an error in PostgreSQL.
            while is_ident_cont(self.at(i)) {
                i += 1;
            }
            self.i = i;
            return TokKind::Word;
        }
        self.i = i;
        TokKind::Literal
    }

    fn word(&mut self, start: usize) -> TokKind {
        let mut i = start + 1;
        while is_ident_cont(self.at(i)) {
            i += 1;
        }
        let mysql = self.dialect == Dialect::Mysql;
        if i == start + 1 && self.at(i) == b'\'' {
            match self.at(start) {
                b'E' | b'e' if !mysql => {
                    self.quoted(i + 1, b'\'', true);
                    return TokKind::Literal;
                }
                b'B' | b'b' | b'X' | b'x' | b'N' | b'n' => {
                    self.quoted(i + 1, b'\'', mysql);
                    return TokKind::Literal;
                }
                _ => {}
            }
        }
        if i == start + 1
            && !mysql
            && matches!(self.at(start), b'U' | b'u')
            && self.at(i) == b'&'
            && self.at(i + 1) == b'\''
        {
            self.quoted(i + 2, b'\'', false);
            return TokKind::Literal;
        }
        self.i = i;
        TokKind::Word
    }
}

impl Iterator for Lexer<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        let start = self.i;
        let c = *self.s.get(start)?;
        let mysql = self.dialect == Dialect::Mysql;
        let kind = if is_space(c) {
            let mut i = start + 1;
            while i < self.s.len() && is_space(self.at(i)) {
                i += 1;
            }
            self.i = i;
            TokKind::Space
        } else if (c == b'-'
            && self.at(start + 1) == b'-'
            && (!mysql || is_space(self.at(start + 2))))
            || (c == b'#' && mysql)
        {
            // MySQL needs a space after `--` (`1--1` is arithmetic there).
            let rest = self.s.get(start..).unwrap_or(&[]);
            self.i = memchr(b'\n', rest).map_or(self.s.len(), |p| start + p + 1);
            TokKind::Space
        } else if c == b'/' && self.at(start + 1) == b'*' {
            self.block_comment(start);
            TokKind::Space
        } else if c == b'\'' {
            self.quoted(start + 1, b'\'', mysql);
            TokKind::Literal
        } else if c == b'"' {
            self.quoted(start + 1, b'"', mysql);
            if mysql {
                TokKind::Literal
            } else {
                TokKind::QuotedIdent
            }
        } else if c == b'`' {
            self.quoted(start + 1, b'`', false);
            TokKind::QuotedIdent
        } else if c == b'$' && !mysql {
            self.dollar(start)
        } else if c.is_ascii_digit() || (c == b'.' && self.at(start + 1).is_ascii_digit()) {
            self.number(start)
        } else if is_ident_start(c) {
            self.word(start)
        } else {
            self.i = start + 1;
            TokKind::Other
        };
        // Every branch advances; the guard keeps the iterator finite whatever happens.
        self.i = self.i.clamp(start + 1, self.s.len().max(start + 1));
        Some(Tok {
            kind,
            start: start as u32,
            end: self.i.min(self.s.len()) as u32,
        })
    }
}

/// SQL command keywords accepted as an operation. Anything else gives no operation: the first
/// word of arbitrary text must not become a metric attribute value.
const OPERATIONS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYSE",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CHECKSUM",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "FLUSH",
    "GRANT",
    "HANDLER",
    "IMPORT",
    "INSERT",
    "KILL",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "OPTIMIZE",
    "PREPARE",
    "PURGE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RENAME",
    "REPAIR",
    "REPLACE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UNLOCK",
    "UPDATE",
    "UPSERT",
    "USE",
    "VACUUM",
    "VALUES",
    "WITH",
    "XA",
];

/// Verbs that can be a `WITH` statement's main statement.
const WITH_VERBS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"];

/// Words that cannot be a table name where one is expected (malformed or unusual syntax).
const NOT_A_TABLE: &[&str] = &[
    "AS", "DEFAULT", "FROM", "JOIN", "LATERAL", "ON", "SELECT", "SET", "USING", "VALUES", "WHERE",
    "WITH",
];

/// The operation and table of the first statement's tokens.
fn analyze(sql: &str, toks: &[Tok]) -> (Option<String>, Option<String>) {
    let mut i = 0;
    while toks.get(i).is_some_and(|t| t.is_punct(sql, b'(')) {
        i += 1;
    }
    let Some(first) = toks.get(i).filter(|t| t.kind == TokKind::Word) else {
        return (None, None);
    };
    let word = first.text(sql);
    let Some(op) = OPERATIONS.iter().find(|k| k.eq_ignore_ascii_case(word)) else {
        return (None, None);
    };
    if *op == "WITH" {
        let mut depth = 0usize;
        for (j, t) in toks.iter().enumerate().skip(i + 1) {
            if t.is_punct(sql, b'(') {
                depth += 1;
            } else if t.is_punct(sql, b')') {
                depth = depth.saturating_sub(1);
            } else if depth == 0
                && let Some(v) = WITH_VERBS.iter().find(|v| t.is_word(sql, v))
            {
                return (Some((*v).to_owned()), collection(sql, toks, v, j));
            }
        }
        return (Some("WITH".to_owned()), None);
    }
    (Some((*op).to_owned()), collection(sql, toks, op, i))
}

/// The table of the statement whose verb `op` is at `toks[i]`.
fn collection(sql: &str, toks: &[Tok], op: &str, i: usize) -> Option<String> {
    let mut k = i + 1;
    let skip = |k: &mut usize, words: &[&str]| {
        while toks
            .get(*k)
            .is_some_and(|t| words.iter().any(|w| t.is_word(sql, w)))
        {
            *k += 1;
        }
    };
    let expect = |k: &mut usize, w: &str| -> bool {
        let ok = toks.get(*k).is_some_and(|t| t.is_word(sql, w));
        if ok {
            *k += 1;
        }
        ok
    };
    let if_exists = |k: &mut usize, not: bool| {
        let save = *k;
        if expect(k, "IF") && (!not || expect(k, "NOT")) && expect(k, "EXISTS") {
            return;
        }
        *k = save;
    };
    match op {
        "SELECT" => {
            let mut depth = 0usize;
            loop {
                let t = toks.get(k)?;
                k += 1;
                if t.is_punct(sql, b'(') {
                    depth += 1;
                } else if t.is_punct(sql, b')') {
                    // The end of an enclosing `( SELECT … )` without FROM.
                    depth = depth.checked_sub(1)?;
                } else if depth == 0 && t.is_word(sql, "FROM") {
                    break;
                }
            }
            skip(&mut k, &["ONLY"]);
            let (name, next) = table_name(sql, toks, k)?;
            // `FROM f(…)`: a function, not a table.
            if toks.get(next).is_some_and(|t| t.is_punct(sql, b'(')) {
                return None;
            }
            Some(name)
        }
        "INSERT" | "REPLACE" => {
            skip(
                &mut k,
                &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"],
            );
            expect(&mut k, "INTO");
            table_name(sql, toks, k).map(|n| n.0)
        }
        "UPDATE" => {
            skip(&mut k, &["LOW_PRIORITY", "IGNORE", "ONLY"]);
            table_name(sql, toks, k).map(|n| n.0)
        }
        "DELETE" => {
            skip(&mut k, &["LOW_PRIORITY", "QUICK", "IGNORE"]);
            if !expect(&mut k, "FROM") {
                return None;
            }
            skip(&mut k, &["ONLY"]);
            table_name(sql, toks, k).map(|n| n.0)
        }
        "CREATE" => {
            if expect(&mut k, "OR") && !expect(&mut k, "REPLACE") {
                return None;
            }
            skip(
                &mut k,
                &["GLOBAL", "LOCAL", "TEMPORARY", "TEMP", "UNLOGGED"],
            );
            if !expect(&mut k, "TABLE") {
                return None;
            }
            if_exists(&mut k, true);
            table_name(sql, toks, k).map(|n| n.0)
        }
        "DROP" | "ALTER" => {
            skip(&mut k, &["TEMPORARY"]);
            if !expect(&mut k, "TABLE") {
                return None;
            }
            if_exists(&mut k, false);
            skip(&mut k, &["ONLY"]);
            table_name(sql, toks, k).map(|n| n.0)
        }
        "TRUNCATE" => {
            skip(&mut k, &["TABLE"]);
            skip(&mut k, &["ONLY"]);
            table_name(sql, toks, k).map(|n| n.0)
        }
        "COPY" => table_name(sql, toks, k).map(|n| n.0),
        "MERGE" => {
            expect(&mut k, "INTO");
            table_name(sql, toks, k).map(|n| n.0)
        }
        _ => None,
    }
}

/// A possibly qualified table name at `toks[k]` (`s.t`, `"S"."t"`), unquoted, and the index
/// of the token after it.
fn table_name(sql: &str, toks: &[Tok], mut k: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    loop {
        let t = toks.get(k)?;
        match t.kind {
            TokKind::Word => {
                let w = t.text(sql);
                if out.is_empty() && NOT_A_TABLE.iter().any(|n| n.eq_ignore_ascii_case(w)) {
                    return None;
                }
                push_capped(&mut out, w, MAX_NAME_LEN);
            }
            TokKind::QuotedIdent => push_capped(&mut out, &unquote(t.text(sql)), MAX_NAME_LEN),
            _ => return None,
        }
        k += 1;
        let dot = toks.get(k).is_some_and(|t| t.is_punct(sql, b'.'));
        let part = toks
            .get(k + 1)
            .is_some_and(|t| matches!(t.kind, TokKind::Word | TokKind::QuotedIdent));
        if !(dot && part) {
            break;
        }
        push_capped(&mut out, ".", MAX_NAME_LEN);
        k += 1;
    }
    (!out.is_empty()).then_some((out, k))
}

/// A quoted identifier's name: the quotes removed, doubled quotes undone.
fn unquote(q: &str) -> String {
    let mut chars = q.chars();
    let Some(quote) = chars.next() else {
        return String::new();
    };
    let body = chars.as_str();
    let body = body.strip_suffix(quote).unwrap_or(body);
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        out.push(c);
        if c == quote && it.peek() == Some(&quote) {
            it.next();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Framing

/// How a message header is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// PostgreSQL typed message: a type octet, then a big-endian 32-bit length that counts
    /// itself but not the type.
    PgTyped,
    /// PostgreSQL startup-family message: a big-endian 32-bit length that counts itself.
    PgUntyped,
    /// A single octet (PostgreSQL's answer to SSLRequest / GSSENCRequest): type, no payload.
    Single,
    /// MySQL packet: 24-bit little-endian payload length, sequence id (the "type").
    MySql,
}

impl Framing {
    fn header_len(self) -> usize {
        match self {
            Framing::PgTyped => 5,
            Framing::PgUntyped | Framing::MySql => 4,
            Framing::Single => 1,
        }
    }

    /// The type and payload length a complete header announces; `None` when it is invalid
    /// (a PostgreSQL length shorter than itself or beyond the server's limits).
    fn decode(self, h: &[u8]) -> Option<(u8, u64)> {
        let be = |b: &[u8]| -> Option<u64> {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(u64::from(u32::from_be_bytes(a)))
        };
        match self {
            // PostgreSQL's own limits: 1 GiB for any message, 10000 octets for startup ones.
            Framing::PgTyped => {
                let len = be(h.get(1..5)?)?;
                if len > 1 << 30 {
                    return None;
                }
                Some((*h.first()?, len.checked_sub(4)?))
            }
            Framing::PgUntyped => {
                let len = be(h.get(..4)?)?;
                if !(8..=10_000).contains(&len) {
                    return None;
                }
                Some((0, len - 4))
            }
            Framing::Single => Some((*h.first()?, 0)),
            Framing::MySql => {
                let &[a, b, c, seq] = h else { return None };
                Some((seq, u64::from(u32::from_le_bytes([a, b, c, 0]))))
            }
        }
    }
}

/// One message of a stream: its header fields and the captured prefix of its payload.
#[derive(Debug)]
pub(super) struct Msg<'a> {
    /// PostgreSQL: the type octet (0 for startup-family messages); MySQL: the sequence id.
    pub typ: u8,
    /// The payload length the header announced.
    pub payload_len: u64,
    /// The payload's first octets as captured: at most what the parser asked for, and only
    /// up to the first uncaptured octet.
    pub payload: &'a [u8],
    /// Time of the segment that held the message's first octet, and of the one that held its
    /// last.
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Msg<'_> {
    /// Every payload octet was captured (and kept).
    pub fn whole(&self) -> bool {
        self.payload.len() as u64 == self.payload_len
    }
}

/// What [`Reader::next`] found.
#[derive(Debug)]
pub(super) enum Step<'a> {
    /// A complete message (its last octet is in this segment).
    Msg(Msg<'a>),
    /// The segment is used up.
    End,
    /// A header falls into uncaptured octets: the framing is lost until [`Reader::resync`].
    Lost,
    /// A header is invalid: the framing is lost until [`Reader::resync`].
    Malformed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RState {
    Header,
    Body,
    Lost,
}

/// Framing of one direction of a connection (see the module documentation).
pub(super) struct Reader {
    pub framing: Framing,
    /// Longest payload accepted: a longer one is `Step::Malformed` (a parser that knows what
    /// must come next, a handshake, rejects garbage as soon as its header is complete).
    pub limit: u64,
    state: RState,
    hdr: [u8; 5],
    hdr_len: usize,
    typ: u8,
    payload_len: u64,
    /// Payload octets still to come.
    left: u64,
    /// Payload octets to keep.
    want: usize,
    /// Octets of the payload went uncaptured: keep no more (the prefix must be contiguous).
    gap: bool,
    start_ns: u64,
    keep: Vec<u8>,
    /// `keep` holds a delivered message: zero it before reuse.
    dirty: bool,
}

impl std::fmt::Debug for Reader {
    // Never shows kept payload octets (statement values, authentication data).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("framing", &self.framing)
            .field("state", &self.state)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub fn new(framing: Framing) -> Self {
        Reader {
            framing,
            limit: u64::MAX,
            state: RState::Header,
            hdr: [0; 5],
            hdr_len: 0,
            typ: 0,
            payload_len: 0,
            left: 0,
            want: 0,
            gap: false,
            start_ns: 0,
            keep: Vec::new(),
            dirty: false,
        }
    }

    /// A reader that starts without framing (a connection joined midway).
    pub fn lost(framing: Framing) -> Self {
        Reader {
            state: RState::Lost,
            ..Reader::new(framing)
        }
    }

    pub fn is_lost(&self) -> bool {
        self.state == RState::Lost
    }

    /// Between messages: no header octet nor payload pending.
    pub fn at_boundary(&self) -> bool {
        self.state == RState::Header && self.hdr_len == 0
    }

    /// The next octet is a message start.
    pub fn resync(&mut self) {
        self.state = RState::Header;
        self.hdr_len = 0;
        self.left = 0;
        self.clear_keep();
    }

    /// Lose the framing (the parser found the stream inconsistent).
    pub fn lose(&mut self) {
        self.state = RState::Lost;
        self.hdr_len = 0;
        self.clear_keep();
    }

    /// The first octets (header included, at most 16 of the payload) of a message that
    /// started but did not end yet: a parser that must judge a connection's first message
    /// judges them as it would judge a segment starting with that message.
    pub fn in_progress(&self) -> Option<Vec<u8>> {
        let header = match self.state {
            RState::Header if self.hdr_len > 0 => self.hdr_len,
            RState::Body => self.framing.header_len(),
            _ => return None,
        };
        let mut v = self.hdr.get(..header).unwrap_or(&[]).to_vec();
        if self.state == RState::Body {
            v.extend_from_slice(self.keep.get(..16).unwrap_or(&self.keep));
        }
        Some(v)
    }

    /// Octets allocated for kept payloads.
    pub fn buffered(&self) -> usize {
        self.keep.capacity()
    }

    fn clear_keep(&mut self) {
        self.keep.fill(0);
        self.keep.clear();
        self.dirty = false;
    }

    /// The next message of the segment `data` (captured head of `total` octets, time `ts`),
    /// from octet `*pos` on; `want(type, payload length)` tells how many payload octets to
    /// keep. Call again until `End`, `Lost` or `Malformed`.
    pub fn next<'a>(
        &'a mut self,
        data: &'a [u8],
        total: u64,
        ts: u64,
        pos: &mut u64,
        want: impl Fn(u8, u64) -> usize,
    ) -> Step<'a> {
        if self.dirty {
            self.clear_keep();
        }
        let total = total.max(data.len() as u64);
        let cap = data.len() as u64;
        loop {
            if *pos >= total {
                return Step::End;
            }
            match self.state {
                RState::Lost => return Step::Lost,
                RState::Header => {
                    if *pos >= cap {
                        self.lose();
                        return Step::Lost;
                    }
                    let hl = self.framing.header_len();
                    // `*pos < cap = data.len()`: it fits in usize.
                    let p = *pos as usize;
                    if self.hdr_len == 0 {
                        self.start_ns = ts;
                    }
                    let n = hl.saturating_sub(self.hdr_len).min(data.len() - p);
                    if let (Some(dst), Some(src)) = (
                        self.hdr.get_mut(self.hdr_len..self.hdr_len + n),
                        data.get(p..p + n),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    self.hdr_len += n;
                    *pos += n as u64;
                    if self.hdr_len < hl {
                        continue;
                    }
                    self.hdr_len = 0;
                    let Some((typ, plen)) = self
                        .framing
                        .decode(self.hdr.get(..hl).unwrap_or(&[]))
                        .filter(|h| h.1 <= self.limit)
                    else {
                        self.lose();
                        return Step::Malformed;
                    };
                    self.typ = typ;
                    self.payload_len = plen;
                    self.left = plen;
                    self.want = want(typ, plen).min(MAX_KEEP);
                    self.gap = false;
                    if plen <= cap - *pos {
                        // Whole in this segment's captured octets: no copy.
                        let p = *pos as usize;
                        let k = (plen as usize).min(self.want);
                        *pos += plen;
                        self.left = 0;
                        return Step::Msg(Msg {
                            typ,
                            payload_len: plen,
                            payload: data.get(p..p + k).unwrap_or(&[]),
                            start_ns: self.start_ns,
                            end_ns: ts,
                        });
                    }
                    self.state = RState::Body;
                }
                RState::Body => {
                    let n = self.left.min(total - *pos);
                    if *pos < cap && !self.gap {
                        let a = *pos as usize;
                        let b = (*pos + n).min(cap) as usize;
                        let room = self.want.saturating_sub(self.keep.len());
                        let take = (b - a).min(room);
                        if let Some(src) = data.get(a..a + take) {
                            self.keep.extend_from_slice(src);
                        }
                    }
                    if *pos + n > cap {
                        self.gap = true;
                    }
                    *pos += n;
                    self.left -= n;
                    if self.left == 0 {
                        self.state = RState::Header;
                        self.dirty = true;
                        return Step::Msg(Msg {
                            typ: self.typ,
                            payload_len: self.payload_len,
                            payload: &self.keep,
                            start_ns: self.start_ns,
                            end_ns: ts,
                        });
                    }
                }
            }
        }
    }
}

/// A map of at most `cap` entries; inserting into a full map evicts the entry inserted (or
/// replaced) longest ago. Prepared statements and portals live here.
#[derive(Debug)]
pub(super) struct BoundedMap<K, V> {
    map: std::collections::HashMap<K, (u64, V)>,
    cap: usize,
    seq: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: std::collections::HashMap::new(),
            cap: cap.max(1),
            seq: 0,
        }
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.seq += 1;
        if !self.map.contains_key(&k)
            && self.map.len() >= self.cap
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        self.map.insert(k, (self.seq, v));
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn remove<Q>(&mut self, k: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.remove(k);
    }

    pub fn clear(&mut self) {
        self.map = std::collections::HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// The summary of statement text as a parser captured it: at most [`MAX_KEEP`] octets, decoded
/// lossily (the cut may split a character), shared by every exchange that runs the statement.
pub(super) fn summarize_captured(text: &[u8], dialect: Dialect) -> Arc<Summary> {
    let text = text.get(..MAX_KEEP).unwrap_or(text);
    Arc::new(summarize_with(&String::from_utf8_lossy(text), dialect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sql: &str) -> Summary {
        summarize(sql)
    }

    fn m(sql: &str) -> Summary {
        summarize_with(sql, Dialect::Mysql)
    }

    /// (input, text, operation, collection) in PostgreSQL dialect.
    const PG_CASES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("SELECT 1", "SELECT ?", Some("SELECT"), None),
        (
            "select * from users where id = 42",
            "select * from users where id = ?",
            Some("SELECT"),
            Some("users"),
        ),
        (
            "SELECT a, b FROM public.accounts a JOIN t2 ON a.id = t2.id",
            "SELECT a, b FROM public.accounts a JOIN t2 ON a.id = t2.id",
            Some("SELECT"),
            Some("public.accounts"),
        ),
        (
            "SELECT * FROM \"My Table\" WHERE x = 'it''s'",
            "SELECT * FROM \"My Table\" WHERE x = ?",
            Some("SELECT"),
            Some("My Table"),
        ),
        (
            "SELECT * FROM \"S\".\"T\"\"q\"",
            "SELECT * FROM \"S\".\"T\"\"q\"",
            Some("SELECT"),
            Some("S.T\"q"),
        ),
        (
            "SELECT * FROM (SELECT 1 FROM t) s",
            "SELECT * FROM (SELECT ? FROM t) s",
            Some("SELECT"),
            None,
        ),
        (
            "SELECT (SELECT max(x) FROM u), y FROM t",
            "SELECT (SELECT max(x) FROM u), y FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * FROM generate_series(?, ?)",
            Some("SELECT"),
            None,
        ),
        (
            "SELECT extract(year FROM d) FROM t",
            "SELECT extract(year FROM d) FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT 1.5, .5, 1e10, 1.5E-3, 0x1F, 1_000, 3. FROM t1",
            "SELECT ?, ?, ?, ?, ?, ?, ? FROM t1",
            Some("SELECT"),
            Some("t1"),
        ),
        (
            "SELECT $1::int, $2 FROM t WHERE a = $3",
            "SELECT $1::int, $2 FROM t WHERE a = $3",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT E'a\\'b', 'c' FROM t",
            "SELECT ?, ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT 'a\\', 'b' FROM t",
            "SELECT ?, ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT $$it's$$, $tag$ x $$ y $tag$ FROM t",
            "SELECT ?, ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT B'101', X'1F', N'n', U&'d\\0061t' FROM t",
            "SELECT ?, ?, ?, ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "  -- leading comment\n  SELECT /* a /* nested */ b */ x\n\tFROM  t -- trailing",
            "SELECT x FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "INSERT INTO orders (id, note) VALUES (1, 'x'), (2, 'y')",
            "INSERT INTO orders (id, note) VALUES (?, ?), (?, ?)",
            Some("INSERT"),
            Some("orders"),
        ),
        (
            "UPDATE ONLY items SET n = n - 1 WHERE id = 7",
            "UPDATE ONLY items SET n = n - ? WHERE id = ?",
            Some("UPDATE"),
            Some("items"),
        ),
        (
            "DELETE FROM s.logs WHERE ts < now() - interval '1 day'",
            "DELETE FROM s.logs WHERE ts < now() - interval ?",
            Some("DELETE"),
            Some("s.logs"),
        ),
        (
            "CREATE TABLE IF NOT EXISTS t (id int)",
            "CREATE TABLE IF NOT EXISTS t (id int)",
            Some("CREATE"),
            Some("t"),
        ),
        (
            "create temporary table tmp_x as select 1",
            "create temporary table tmp_x as select ?",
            Some("CREATE"),
            Some("tmp_x"),
        ),
        (
            "CREATE INDEX i ON t (a)",
            "CREATE INDEX i ON t (a)",
            Some("CREATE"),
            None,
        ),
        (
            "DROP TABLE IF EXISTS a.b, c",
            "DROP TABLE IF EXISTS a.b, c",
            Some("DROP"),
            Some("a.b"),
        ),
        (
            "ALTER TABLE t ADD COLUMN c int DEFAULT 0",
            "ALTER TABLE t ADD COLUMN c int DEFAULT ?",
            Some("ALTER"),
            Some("t"),
        ),
        (
            "TRUNCATE TABLE t",
            "TRUNCATE TABLE t",
            Some("TRUNCATE"),
            Some("t"),
        ),
        ("truncate t2", "truncate t2", Some("TRUNCATE"), Some("t2")),
        (
            "COPY t (a, b) FROM STDIN",
            "COPY t (a, b) FROM STDIN",
            Some("COPY"),
            Some("t"),
        ),
        (
            "COPY (SELECT 1) TO STDOUT",
            "COPY (SELECT ?) TO STDOUT",
            Some("COPY"),
            None,
        ),
        (
            "WITH x AS (SELECT * FROM a) SELECT * FROM x",
            "WITH x AS (SELECT * FROM a) SELECT * FROM x",
            Some("SELECT"),
            Some("x"),
        ),
        (
            "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM r) \
             INSERT INTO t SELECT n FROM r",
            "WITH RECURSIVE r(n) AS (VALUES (?) UNION ALL SELECT n+? FROM r) \
             INSERT INTO t SELECT n FROM r",
            Some("INSERT"),
            Some("t"),
        ),
        ("WITH", "WITH", Some("WITH"), None),
        ("BEGIN", "BEGIN", Some("BEGIN"), None),
        ("commit;", "commit;", Some("COMMIT"), None),
        ("ROLLBACK", "ROLLBACK", Some("ROLLBACK"), None),
        (
            "SET search_path TO a, b",
            "SET search_path TO a, b",
            Some("SET"),
            None,
        ),
        (
            "SHOW server_version",
            "SHOW server_version",
            Some("SHOW"),
            None,
        ),
        ("CALL p(1, 'a')", "CALL p(?, ?)", Some("CALL"), None),
        (
            "SELECT 1; DELETE FROM t",
            "SELECT ?; DELETE FROM t",
            Some("SELECT"),
            None,
        ),
        (
            ";; UPDATE t SET a = 1; SELECT 2",
            ";; UPDATE t SET a = ?; SELECT ?",
            Some("UPDATE"),
            Some("t"),
        ),
        (
            "(SELECT a FROM t1) UNION (SELECT a FROM t2)",
            "(SELECT a FROM t1) UNION (SELECT a FROM t2)",
            Some("SELECT"),
            Some("t1"),
        ),
        (
            "SELECT * FROM t WHERE s = 'unterminated",
            "SELECT * FROM t WHERE s = ?",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT 1 /* unterminated comment",
            "SELECT ?",
            Some("SELECT"),
            None,
        ),
        (
            "SELECT $tag$ never closed",
            "SELECT ?",
            Some("SELECT"),
            None,
        ),
        (
            "SELECT \"unterminated",
            "SELECT \"unterminated",
            Some("SELECT"),
            None,
        ),
        ("hello world", "hello world", None, None),
        ("", "", None, None),
        ("   \n\t ", "", None, None),
        ("42", "?", None, None),
        (
            "SELECT a$1, t1.c2 FROM t1",
            "SELECT a$1, t1.c2 FROM t1",
            Some("SELECT"),
            Some("t1"),
        ),
        (
            "SELECT * FROM ünïcödé WHERE ö = 'ü'",
            "SELECT * FROM ünïcödé WHERE ö = ?",
            Some("SELECT"),
            Some("ünïcödé"),
        ),
        (
            "SELECT x FROM t\u{FFFD}\u{FFFD} WHERE y = 1",
            "SELECT x FROM t\u{FFFD}\u{FFFD} WHERE y = ?",
            Some("SELECT"),
            Some("t\u{FFFD}\u{FFFD}"),
        ),
        ("SELECT -1, +2", "SELECT -?, +?", Some("SELECT"), None),
        (
            "SELECT a--b\nFROM t",
            "SELECT a FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "MERGE INTO tgt USING src ON tgt.id = src.id WHEN MATCHED THEN DELETE",
            "MERGE INTO tgt USING src ON tgt.id = src.id WHEN MATCHED THEN DELETE",
            Some("MERGE"),
            Some("tgt"),
        ),
        (
            "EXPLAIN ANALYZE SELECT * FROM t",
            "EXPLAIN ANALYZE SELECT * FROM t",
            Some("EXPLAIN"),
            None,
        ),
        (
            "SELECT * FROM ONLY p",
            "SELECT * FROM ONLY p",
            Some("SELECT"),
            Some("p"),
        ),
        ("DELETE FROM", "DELETE FROM", Some("DELETE"), None),
        ("INSERT INTO", "INSERT INTO", Some("INSERT"), None),
        ("SELECT * FROM 'x'", "SELECT * FROM ?", Some("SELECT"), None),
        (
            "SELECT 1\0 FROM t",
            "SELECT ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
    ];

    #[test]
    fn postgres_cases() {
        for (sql, text, op, coll) in PG_CASES {
            let got = s(sql);
            assert_eq!(got.text, *text, "text of {sql:?}");
            assert_eq!(got.operation.as_deref(), *op, "operation of {sql:?}");
            assert_eq!(got.collection.as_deref(), *coll, "collection of {sql:?}");
        }
    }

    /// (input, text, operation, collection) in MySQL dialect.
    const MYSQL_CASES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        (
            "SELECT * FROM `db`.`tbl` WHERE name = \"bob\"",
            "SELECT * FROM `db`.`tbl` WHERE name = ?",
            Some("SELECT"),
            Some("db.tbl"),
        ),
        (
            "SELECT 'It\\'s', \"a\\\"b\" FROM t",
            "SELECT ?, ? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "INSERT IGNORE INTO t1 (a) VALUES (1)",
            "INSERT IGNORE INTO t1 (a) VALUES (?)",
            Some("INSERT"),
            Some("t1"),
        ),
        (
            "INSERT t2 VALUES (0b101, 0x1f, X'ab')",
            "INSERT t2 VALUES (?, ?, ?)",
            Some("INSERT"),
            Some("t2"),
        ),
        (
            "REPLACE INTO kv VALUES ('k', 'v')",
            "REPLACE INTO kv VALUES (?, ?)",
            Some("REPLACE"),
            Some("kv"),
        ),
        (
            "UPDATE LOW_PRIORITY `order` SET qty = qty + 1",
            "UPDATE LOW_PRIORITY `order` SET qty = qty + ?",
            Some("UPDATE"),
            Some("order"),
        ),
        (
            "DELETE QUICK FROM t WHERE a = 1 # comment\n",
            "DELETE QUICK FROM t WHERE a = ?",
            Some("DELETE"),
            Some("t"),
        ),
        ("SELECT 1--1", "SELECT ?--?", Some("SELECT"), None),
        ("SELECT 1 -- c\n, 2", "SELECT ? , ?", Some("SELECT"), None),
        (
            "SELECT * FROM 2fa_codes WHERE c = ?",
            "SELECT * FROM 2fa_codes WHERE c = ?",
            Some("SELECT"),
            Some("2fa_codes"),
        ),
        (
            "SELECT $1 FROM t",
            "SELECT $? FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        ("USE shop", "USE shop", Some("USE"), None),
        (
            "SELECT _utf8mb4'x' COLLATE utf8mb4_bin",
            "SELECT _utf8mb4? COLLATE utf8mb4_bin",
            Some("SELECT"),
            None,
        ),
        ("SELECT 'a\\", "SELECT ?", Some("SELECT"), None),
    ];

    #[test]
    fn mysql_cases() {
        for (sql, text, op, coll) in MYSQL_CASES {
            let got = m(sql);
            assert_eq!(got.text, *text, "text of {sql:?}");
            assert_eq!(got.operation.as_deref(), *op, "operation of {sql:?}");
            assert_eq!(got.collection.as_deref(), *coll, "collection of {sql:?}");
        }
    }

    #[test]
    fn no_literal_survives() {
        let secret = "s3cr3t-value";
        for sql in [
            format!("SELECT '{secret}'"),
            format!("SELECT E'{secret}\\''"),
            format!("SELECT $x${secret}$x$"),
            format!("SELECT 'a''{secret}'"),
            format!("SELECT '{secret}"),
            format!("SELECT 1 FROM t WHERE a = 'x' /* '{secret} */"),
        ] {
            assert!(!s(&sql).text.contains(secret), "{sql}");
        }
        for sql in [
            format!("SELECT \"{secret}\""),
            format!("SELECT 'a\\'{secret}'"),
            format!("SELECT 'x' # {secret}"),
        ] {
            assert!(!m(&sql).text.contains(secret), "{sql}");
        }
    }

    #[test]
    fn huge_input_is_capped() {
        let mut sql = String::from("INSERT INTO big (a) VALUES ");
        for i in 0..100_000 {
            sql.push_str(&format!("({i}, 'v{i}'),"));
        }
        let got = s(&sql);
        assert!(got.text.len() <= MAX_TEXT_LEN);
        assert!(
            got.text
                .starts_with("INSERT INTO big (a) VALUES (?, ?),(?, ?)")
        );
        assert_eq!(got.collection.as_deref(), Some("big"));

        // Multibyte characters at the cut stay whole.
        let sql = format!("SELECT {} FROM t", "é".repeat(5000));
        let got = s(&sql);
        assert!(got.text.len() <= MAX_TEXT_LEN && got.text.len() > MAX_TEXT_LEN - 4);
        assert_eq!(
            got.collection.as_deref(),
            Some("t"),
            "one long word is one token"
        );

        // A select list longer than the token limit: no table, but still an operation.
        let sql = format!("SELECT {} FROM t", "a,".repeat(2000));
        assert_eq!(s(&sql).collection, None);
        assert_eq!(s(&sql).operation.as_deref(), Some("SELECT"));

        let name = "n".repeat(1000);
        let got = s(&format!("SELECT * FROM {name}"));
        assert_eq!(got.collection.map(|c| c.len()), Some(MAX_NAME_LEN));
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let inputs: Vec<String> = vec![
            "'".into(),
            "\"".into(),
            "`".into(),
            "$".into(),
            "$$".into(),
            "$a".into(),
            "$a$".into(),
            "/*".into(),
            "/*/".into(),
            "--".into(),
            "#".into(),
            "E'".into(),
            "U&'".into(),
            "U&".into(),
            "0x".into(),
            "1e".into(),
            "1e+".into(),
            ".".into(),
            "..5".into(),
            "\\".into(),
            "'\\".into(),
            "/*".repeat(1000),
            "(".repeat(5000),
            ")".repeat(5000),
            "WITH ".repeat(1000),
            "SELECT FROM FROM FROM".into(),
            String::from_utf8_lossy(&[0xff, 0xfe, b'\'', 0x80, b'$', 0xc3]).into_owned(),
            (0u8..=127).map(char::from).collect(),
        ];
        for i in &inputs {
            for d in [Dialect::Postgres, Dialect::Mysql] {
                let got = summarize_with(i, d);
                assert!(got.text.len() <= MAX_TEXT_LEN);
                let _ = use_database(i, d);
            }
        }
    }

    #[test]
    fn use_statement() {
        let d = Dialect::Mysql;
        assert_eq!(use_database("USE shop", d).as_deref(), Some("shop"));
        assert_eq!(use_database("use `my db`;", d).as_deref(), Some("my db"));
        assert_eq!(use_database(" /* x */ USE a", d).as_deref(), Some("a"));
        assert_eq!(use_database("USE", d), None);
        assert_eq!(use_database("USE a b", d), None);
        assert_eq!(use_database("SELECT 1", d), None);
        assert_eq!(use_database("USE 'x'", d), None);
    }

    fn seg(data: &[u8], total: u64) -> super::super::Segment<'_> {
        super::super::Segment {
            direction: super::super::Direction::Ingress,
            ts_ns: 1,
            data,
            total_len: total,
            extents: super::super::Extents::EMPTY,
        }
    }

    /// Collects (type, payload, payload_len) of the messages of `segs` (data, total).
    fn read_all(
        framing: Framing,
        segs: &[(&[u8], u64)],
        want: usize,
    ) -> (Vec<(u8, Vec<u8>, u64)>, bool) {
        let mut r = Reader::new(framing);
        let mut out = Vec::new();
        let mut lost = false;
        for (d, t) in segs {
            let s = seg(d, *t);
            let mut pos = 0;
            loop {
                match r.next(s.data, s.total_len, s.ts_ns, &mut pos, |_, _| want) {
                    Step::Msg(m) => out.push((m.typ, m.payload.to_vec(), m.payload_len)),
                    Step::End => break,
                    Step::Lost | Step::Malformed => {
                        lost = true;
                        break;
                    }
                }
            }
        }
        (out, lost)
    }

    #[test]
    fn reader_splits_and_truncation() {
        let bytes: &[u8] = b"Q\0\0\0\x09abcd\0S\0\0\0\x04Z\0\0\0\x05I";
        let (whole, lost) = read_all(Framing::PgTyped, &[(bytes, bytes.len() as u64)], 100);
        assert!(!lost);
        assert_eq!(
            whole,
            vec![
                (b'Q', b"abcd\0".to_vec(), 5),
                (b'S', vec![], 0),
                (b'Z', b"I".to_vec(), 1)
            ]
        );
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let (got, lost) = read_all(
                Framing::PgTyped,
                &[(a, a.len() as u64), (b, b.len() as u64)],
                100,
            );
            assert!(!lost);
            assert_eq!(got, whole, "cut at {cut}");
        }
        // Body beyond the capture: counted, the next message still found.
        let (got, lost) = read_all(
            Framing::PgTyped,
            &[(&bytes[..7], 10), (&bytes[10..], (bytes.len() - 10) as u64)],
            100,
        );
        assert!(!lost);
        assert_eq!(got[0], (b'Q', b"ab".to_vec(), 5));
        assert_eq!(got.len(), 3);
        // Header in uncaptured octets: lost.
        let (got, lost) = read_all(Framing::PgTyped, &[(&bytes[..12], bytes.len() as u64)], 100);
        assert!(lost);
        assert_eq!(got.len(), 1);
        // Keep limit.
        let (got, _) = read_all(Framing::PgTyped, &[(bytes, bytes.len() as u64)], 2);
        assert_eq!(got[0], (b'Q', b"ab".to_vec(), 5));
        // Invalid length.
        let (_, lost) = read_all(Framing::PgTyped, &[(b"Q\0\0\0\x03", 5)], 100);
        assert!(lost);
        // MySQL and single-octet framings.
        let (got, _) = read_all(Framing::MySql, &[(b"\x01\0\0\0\x0e\0\0\0\x01", 9)], 100);
        assert_eq!(got, vec![(0, vec![0x0e], 1), (1, vec![], 0)]);
        let (got, _) = read_all(Framing::Single, &[(b"SN", 2)], 100);
        assert_eq!(got, vec![(b'S', vec![], 0), (b'N', vec![], 0)]);
    }

    #[test]
    fn reader_gap_keeps_prefix_contiguous() {
        // A message split over three segments, the middle one truncated.
        let mut r = Reader::new(Framing::PgTyped);
        let mut pos = 0;
        assert!(matches!(
            r.next(b"Q\0\0\0\x0eab", 7, 1, &mut pos, |_, _| 100),
            Step::End
        ));
        pos = 0;
        assert!(matches!(
            r.next(b"cd", 4, 2, &mut pos, |_, _| 100),
            Step::End
        ));
        pos = 0;
        match r.next(b"ghij\0", 5, 3, &mut pos, |_, _| 100) {
            Step::Msg(m) => {
                assert_eq!(m.payload, b"abcd");
                assert_eq!(m.payload_len, 10);
                assert_eq!((m.start_ns, m.end_ns), (1, 3));
                assert!(!m.whole());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut m = BoundedMap::new(3);
        for i in 0..3 {
            m.insert(i, i * 10);
        }
        m.insert(0, 1); // replaced: now the newest
        m.insert(3, 30);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&1), None, "oldest evicted");
        assert_eq!(m.get(&0), Some(&1));
        m.remove(&0);
        m.insert(4, 40);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&2), Some(&20));
    }
}
