//! Heads (start line plus header section, RFC 9112 §2.1): buffering a head split across
//! segments, checking request and status lines while they arrive, and parsing the header
//! fields this parser reads, with `httparse` or, where it refuses, by hand.

use std::fmt;

use super::{
    MAX_HEAD_BYTES, MAX_HEADERS, MAX_METHOD_LEN, MAX_START_LINE, MAX_TARGET_LEN, MAX_VALUE_LEN,
};

/// A head buffer larger than this is freed, not kept, once its head is parsed.
const IDLE_BUFFER_CAPACITY: usize = 4096;
/// The part of the HTTP/2 connection preface (RFC 9113 §3.4) that looks like an HTTP/1 head.
pub(super) const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a head that arrived in pieces. `Debug` shows only the length: they may hold
/// secrets.
#[derive(Default)]
pub(super) struct HeadBuf {
    pub(super) bytes: Vec<u8>,
    /// `ts_ns` of the segment holding the head's first byte.
    pub(super) start_ns: u64,
    /// The start line was already checked complete and valid.
    pub(super) line_ok: bool,
}

impl fmt::Debug for HeadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadBuf")
            .field("len", &self.bytes.len())
            .field("start_ns", &self.start_ns)
            .finish()
    }
}

impl HeadBuf {
    pub(super) fn clear(&mut self) {
        self.bytes.fill(0);
        self.bytes.clear();
        if self.bytes.capacity() > IDLE_BUFFER_CAPACITY {
            self.bytes = Vec::new();
        }
        self.line_ok = false;
    }
}

/// Empty lines before a start line are ignored (RFC 9112 §2.2).
pub(super) fn skip_empty_lines(data: &[u8]) -> usize {
    data.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len())
}

/// Finds the end of a head (the empty line, RFC 9112 §2.1; bare LF accepted per §2.2) in
/// `data`, which continues `prev`. Returns the index in `data` just after it.
fn find_head_end(prev: &[u8], data: &[u8]) -> Option<usize> {
    let before = |i: usize, k: usize| -> Option<u8> {
        if i >= k {
            Some(data[i - k])
        } else {
            let back = k - i;
            prev.len().checked_sub(back).map(|j| prev[j])
        }
    };
    memchr::memchr_iter(b'\n', data).find_map(|i| match before(i, 1) {
        Some(b'\n') => Some(i + 1),
        Some(b'\r') if before(i, 2) == Some(b'\n') => Some(i + 1),
        _ => None,
    })
}

pub(super) enum HeadStep {
    /// The head ends after this many bytes of `data`; it is `buf` if `buf` was non-empty
    /// (the bytes were appended), else those bytes of `data`.
    Complete(usize),
    /// All of `data` was buffered.
    Partial,
    /// The head is larger than [`MAX_HEAD_BYTES`]; `buf` holds its first bytes.
    Overflow,
}

pub(super) fn take_head(buf: &mut HeadBuf, data: &[u8]) -> HeadStep {
    let prev = buf.bytes.len();
    match find_head_end(&buf.bytes, data) {
        Some(n) if prev + n <= MAX_HEAD_BYTES => {
            if prev > 0 {
                buf.bytes.extend_from_slice(&data[..n]);
            }
            HeadStep::Complete(n)
        }
        found => {
            let room = MAX_HEAD_BYTES.saturating_sub(prev);
            buf.bytes.extend_from_slice(&data[..data.len().min(room)]);
            if found.is_some() || prev + data.len() > MAX_HEAD_BYTES {
                HeadStep::Overflow
            } else {
                HeadStep::Partial
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineCheck {
    /// A complete, valid start line.
    Valid,
    /// Could still become a valid start line.
    Prefix,
    Invalid,
}

fn parser_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// Checks the request line (RFC 9112 §3) at the start of `buf`.
pub(super) fn check_request_line(buf: &[u8]) -> LineCheck {
    if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
        return if buf.len() >= H2_PREFACE_HEAD.len() {
            LineCheck::Valid
        } else {
            LineCheck::Prefix
        };
    }
    let method_end = buf.iter().take(MAX_METHOD_LEN + 1).position(|&b| b == b' ');
    if method_end.is_none() && buf.len() > MAX_METHOD_LEN {
        return LineCheck::Invalid;
    }
    let line_end = memchr::memchr(b'\n', buf);
    if line_end.is_none() && buf.len() > MAX_START_LINE {
        return LineCheck::Invalid;
    }
    let line = line_end.map_or(buf, |e| &buf[..=e]);
    let mut req = httparse::Request::new(&mut []);
    match parser_config().parse_request(&mut req, line) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if line_end.is_some() => LineCheck::Valid,
        Ok(_) => LineCheck::Prefix,
        Err(_) => LineCheck::Invalid,
    }
}

/// Checks the status line (RFC 9112 §4) at the start of `buf`.
pub(super) fn check_status_line(buf: &[u8]) -> LineCheck {
    let line_end = memchr::memchr(b'\n', buf);
    if line_end.is_none() && buf.len() > MAX_START_LINE {
        return LineCheck::Invalid;
    }
    let line = line_end.map_or(buf, |e| &buf[..=e]);
    let mut resp = httparse::Response::new(&mut []);
    let result = parser_config().parse_response(&mut resp, line);
    if resp.code.is_some_and(|c| c < 100) {
        // RFC 9110 §15: status codes are 100..=599 (recipients accept up to 999).
        return LineCheck::Invalid;
    }
    match result {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if line_end.is_some() => LineCheck::Valid,
        Ok(_) => LineCheck::Prefix,
        Err(_) => LineCheck::Invalid,
    }
}

pub(super) fn starts_with_request_line(data: &[u8]) -> bool {
    let d = &data[skip_empty_lines(data)..];
    !d.is_empty() && check_request_line(d) == LineCheck::Valid
}

pub(super) fn starts_with_status_line(data: &[u8]) -> bool {
    let d = &data[skip_empty_lines(data)..];
    !d.is_empty() && check_status_line(d) == LineCheck::Valid
}

/// Framing of a message body as announced by its head (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    /// `Transfer-Encoding` without final `chunked`.
    OtherCoding,
    /// Neither `Transfer-Encoding` nor `Content-Length`.
    None,
    /// Invalid `Content-Length`.
    Invalid,
}

/// What a head's header fields say, as far as this parser cares.
#[derive(Default)]
pub(super) struct HeaderInfo {
    request: bool,
    /// `Some(None)`: present but invalid or conflicting (RFC 9112 §6.3 item 5).
    content_length: Option<Option<u64>>,
    te_present: bool,
    te_chunked_last: bool,
    pub(super) upgrade_h2c: bool,
    pub(super) host: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) tracestate: Option<String>,
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Parses a `Content-Length` field value, allowing a list of identical values (RFC 9110 §8.6).
pub(super) fn parse_content_length(v: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in v.split(|&b| b == b',') {
        let p = trim_ows(part);
        if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = p
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn kept_value(v: &[u8], max: usize) -> String {
    let v = trim_ows(v);
    let mut s = String::from_utf8_lossy(&v[..v.len().min(max)]).into_owned();
    if s.len() > max {
        // Lossy replacement characters can grow it; cut at a char boundary.
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The header fields whose values this parser reads, all named in
/// [`KEPT_REQUEST_HEADERS`](super::super::KEPT_REQUEST_HEADERS)
/// (a test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Host,
    ContentType,
    ContentLength,
    TransferEncoding,
    Traceparent,
    Tracestate,
    Upgrade,
}

impl Field {
    /// The field `name` is (case-insensitive, RFC 9110 §5.1), found by its length first: a
    /// field of any other name costs one comparison of lengths and at most one of bytes.
    pub(super) fn of(name: &[u8]) -> Option<Field> {
        let (known, field) = match name.len() {
            4 => ("host", Field::Host),
            7 => ("upgrade", Field::Upgrade),
            10 => ("tracestate", Field::Tracestate),
            11 => ("traceparent", Field::Traceparent),
            12 => ("content-type", Field::ContentType),
            14 => ("content-length", Field::ContentLength),
            17 => ("transfer-encoding", Field::TransferEncoding),
            _ => return None,
        };
        known.as_bytes().eq_ignore_ascii_case(name).then_some(field)
    }

    #[cfg(test)]
    pub(super) const ALL: [Field; 7] = [
        Field::Host,
        Field::ContentType,
        Field::ContentLength,
        Field::TransferEncoding,
        Field::Traceparent,
        Field::Tracestate,
        Field::Upgrade,
    ];
}

impl HeaderInfo {
    fn new(request: bool) -> Self {
        HeaderInfo {
            request,
            ..Default::default()
        }
    }

    /// What the header fields `httparse` parsed say (see [`scan_header_lines`] for heads it
    /// refused).
    fn from_fields(request: bool, fields: &[httparse::Header<'_>]) -> Self {
        let mut info = HeaderInfo::new(request);
        for h in fields {
            info.header(h.name.as_bytes(), h.value);
        }
        info
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        let Some(field) = Field::of(trim_ows(name)) else {
            return;
        };
        match field {
            Field::ContentLength => {
                let n = parse_content_length(value);
                self.content_length = match self.content_length {
                    None => Some(n),
                    Some(prev) if prev == n => Some(n),
                    Some(_) => Some(None),
                };
            }
            Field::TransferEncoding => {
                // RFC 9112 §6.1: the final coding decides; several fields form one list.
                for coding in value.split(|&b| b == b',') {
                    let name = coding.split(|&b| b == b';').next().unwrap_or_default();
                    let name = trim_ows(name);
                    if !name.is_empty() {
                        self.te_present = true;
                        self.te_chunked_last = name.eq_ignore_ascii_case(b"chunked");
                    }
                }
            }
            _ if !self.request => {}
            Field::Host if self.host.is_none() => {
                self.host = Some(kept_value(value, MAX_VALUE_LEN))
            }
            Field::ContentType if self.content_type.is_none() => {
                self.content_type = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Traceparent if self.traceparent.is_none() => {
                self.traceparent = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Tracestate if self.tracestate.is_none() => {
                self.tracestate = Some(kept_value(value, MAX_VALUE_LEN));
            }
            Field::Upgrade => {
                // RFC 9110 §7.8: a list of protocols.
                self.upgrade_h2c |= value
                    .split(|&b| b == b',')
                    .any(|p| trim_ows(p).eq_ignore_ascii_case(b"h2c"));
            }
            _ => {}
        }
    }

    pub(super) fn framing(&self) -> Framing {
        if self.te_present {
            if self.te_chunked_last {
                Framing::Chunked
            } else {
                Framing::OtherCoding
            }
        } else {
            match self.content_length {
                Some(Some(n)) => Framing::Length(n),
                Some(None) => Framing::Invalid,
                None => Framing::None,
            }
        }
    }
}

/// Scans header lines by hand: used when `httparse` refused the header section (too many
/// fields, malformed lines) or the head is cut. Only lines ending in LF are used.
fn scan_header_lines(section: &[u8], info: &mut HeaderInfo) {
    let mut rest = section;
    while let Some(e) = memchr::memchr(b'\n', rest) {
        let line = &rest[..e];
        rest = &rest[e + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            info.header(&line[..colon], &line[colon + 1..]);
        }
    }
}

pub(super) struct ParsedRequest {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) info: HeaderInfo,
    pub(super) fallback: bool,
}

pub(super) struct ParsedResponse {
    pub(super) status: u16,
    pub(super) framing: Framing,
    pub(super) fallback: bool,
}

/// What [`parse_whole_request`] / [`parse_whole_response`] found: the head's length and its
/// parse (`None`: not a valid head), or `None` to take the general path.
pub(super) type WholeHead<T> = Option<(usize, Option<T>)>;

/// One `httparse` pass over a whole head at the start of `data`, which may go on past it:
/// `Some((head length, parse))` when httparse finds the head complete. It stops at the first
/// empty line, CRLF or bare LF, which is where [`find_head_end`] ends a head, so the result is
/// what [`take_head`] followed by [`parse_request_head`] would give; the parse is `None` where
/// that would report garbage (a method beyond [`MAX_METHOD_LEN`], the rule of
/// [`check_request_line`]). `None` when the head is partial, too large or refused (too many
/// fields, malformed lines): the caller takes the general path.
pub(super) fn parse_whole_request(data: &[u8]) -> WholeHead<ParsedRequest> {
    // Uninitialised: httparse writes the headers it finds; zeroing 64 of them per message
    // showed in profiles.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(n)) =
        parser_config().parse_request_with_uninit_headers(&mut req, data, &mut headers)
    else {
        return None;
    };
    if n > MAX_HEAD_BYTES {
        return None;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Some((n, None));
    };
    if method.len() > MAX_METHOD_LEN {
        return Some((n, None));
    }
    let info = HeaderInfo::from_fields(true, req.headers);
    let parsed = ParsedRequest {
        method: method.to_owned(),
        target: kept_value(path.as_bytes(), MAX_TARGET_LEN),
        info,
        fallback: false,
    };
    Some((n, Some(parsed)))
}

/// [`parse_whole_request`] for a response head; the parse is `None` for a status code below
/// 100 (the rule of [`check_status_line`]).
pub(super) fn parse_whole_response(data: &[u8]) -> WholeHead<ParsedResponse> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Ok(httparse::Status::Complete(n)) =
        parser_config().parse_response_with_uninit_headers(&mut resp, data, &mut headers)
    else {
        return None;
    };
    if n > MAX_HEAD_BYTES {
        return None;
    }
    let status = match resp.code {
        Some(c) if c >= 100 => c,
        _ => return Some((n, None)),
    };
    let info = HeaderInfo::from_fields(false, resp.headers);
    let parsed = ParsedResponse {
        status,
        framing: info.framing(),
        fallback: false,
    };
    Some((n, Some(parsed)))
}

/// Parses a request head (RFC 9112 §3, §5). With `complete == false` the head is cut: the
/// request line and the whole header lines captured are used. `None`: not a request head.
pub(super) fn parse_request_head(head: &[u8], complete: bool) -> Option<ParsedRequest> {
    // The same start-line rules as while the head is still arriving, so that where segments
    // split never changes the outcome.
    if check_request_line(head) == LineCheck::Invalid || head.starts_with(H2_PREFACE_HEAD) {
        return None;
    }
    let cfg = parser_config();
    if complete && let Some((_, parsed)) = parse_whole_request(head) {
        return parsed;
    }
    let line_end = memchr::memchr(b'\n', head);
    let line = line_end.map_or(head, |e| &head[..=e]);
    let mut req = httparse::Request::new(&mut []);
    let _ = cfg.parse_request(&mut req, line);
    let method = req.method?;
    let target = match req.path {
        Some(p) => p.as_bytes(),
        None => {
            // The line was cut inside the target: keep what was captured.
            let rest = &line[method.len()..];
            let rest = &rest[skip_spaces(rest)..];
            let end = rest
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    let mut info = HeaderInfo::new(true);
    if let Some(e) = line_end {
        scan_header_lines(&head[e + 1..], &mut info);
    }
    Some(ParsedRequest {
        method: method.to_owned(),
        target: kept_value(target, MAX_TARGET_LEN),
        info,
        fallback: complete,
    })
}

fn skip_spaces(d: &[u8]) -> usize {
    d.iter().position(|&b| b != b' ').unwrap_or(d.len())
}

/// Parses a response head (RFC 9112 §4, §5); see [`parse_request_head`].
pub(super) fn parse_response_head(head: &[u8], complete: bool) -> Option<ParsedResponse> {
    if check_status_line(head) == LineCheck::Invalid {
        return None;
    }
    let cfg = parser_config();
    if complete && let Some((_, parsed)) = parse_whole_response(head) {
        return parsed;
    }
    let line_end = memchr::memchr(b'\n', head);
    let line = line_end.map_or(head, |e| &head[..=e]);
    let mut resp = httparse::Response::new(&mut []);
    let _ = cfg.parse_response(&mut resp, line);
    let status = resp.code?;
    let mut info = HeaderInfo::new(false);
    if let Some(e) = line_end {
        scan_header_lines(&head[e + 1..], &mut info);
    }
    Some(ParsedResponse {
        status,
        framing: info.framing(),
        fallback: complete,
    })
}
