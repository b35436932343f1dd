//! Message body framing (RFC 9112 §6.3, §7.1): bodies are never buffered, only counted, so
//! a body is a position in its framing (bytes left of a `Content-Length`, or where a chunked
//! decoder is) fed captured and unseen bytes.

use super::super::Segment;

/// How the rest of a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    Length(u64),
    Chunked(Chunk),
    /// A chunk-size line was unseen: ends at a segment ending with the last chunk.
    ChunkedResync,
    /// Delimited by the connection closing (RFC 9112 §6.3 item 8).
    UntilClose,
    /// Framing unknown (head end unseen): ends at the next request line or close.
    UntilNextRequest,
}

/// Where a chunked body decoder is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size {
        size: u64,
        digits: u8,
    },
    /// After the chunk size: whitespace and chunk extensions, up to LF.
    Ext {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart,
    TrailerCr,
    TrailerLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    Done,
    Bad,
}

impl Chunk {
    pub(super) const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    fn after_size_line(size: u64) -> Chunk {
        if size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data(size)
        }
    }

    /// Decodes from `data`; returns the bytes used and whether the body ended (the final
    /// CRLF included) or is malformed.
    pub(super) fn feed(&mut self, data: &[u8]) -> (usize, Step) {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Chunk::Data(r) => {
                    let take = r.min((data.len() - i) as u64);
                    i += take as usize;
                    *self = if r == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(r - take)
                    };
                    continue;
                }
                Chunk::Ext { size } => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k + 1;
                            *self = Chunk::after_size_line(size);
                        }
                        None => i = data.len(),
                    }
                    continue;
                }
                Chunk::TrailerLine => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k + 1;
                            *self = Chunk::TrailerStart;
                        }
                        None => i = data.len(),
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            match *self {
                Chunk::Size { size, digits } => {
                    if let Some(v) = hex_value(b) {
                        if digits >= 16 {
                            return (i, Step::Bad);
                        }
                        *self = Chunk::Size {
                            size: (size << 4) | u64::from(v),
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return (i, Step::Bad);
                    } else if b == b'\n' {
                        *self = Chunk::after_size_line(size);
                    } else if matches!(b, b';' | b' ' | b'\t' | b'\r') {
                        *self = Chunk::Ext { size };
                    } else {
                        return (i, Step::Bad);
                    }
                }
                Chunk::DataCr => match b {
                    b'\r' => *self = Chunk::DataLf,
                    b'\n' => *self = Chunk::START,
                    _ => return (i, Step::Bad),
                },
                Chunk::DataLf => match b {
                    b'\n' => *self = Chunk::START,
                    _ => return (i, Step::Bad),
                },
                Chunk::TrailerStart => match b {
                    b'\r' => *self = Chunk::TrailerCr,
                    b'\n' => return (i, Step::Done),
                    _ => *self = Chunk::TrailerLine,
                },
                Chunk::TrailerCr => match b {
                    b'\n' => return (i, Step::Done),
                    _ => return (i, Step::Bad),
                },
                Chunk::Data(_) | Chunk::Ext { .. } | Chunk::TrailerLine => unreachable!(),
            }
        }
        (i, Step::More)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Body {
    /// Consumes captured bytes of the body.
    pub(super) fn visible(&mut self, data: &[u8]) -> (usize, Step) {
        match self {
            Body::Length(r) => {
                let take = (*r).min(data.len() as u64);
                *r -= take;
                (take as usize, if *r == 0 { Step::Done } else { Step::More })
            }
            Body::Chunked(c) => c.feed(data),
            Body::ChunkedResync | Body::UntilClose | Body::UntilNextRequest => {
                (data.len(), Step::More)
            }
        }
    }

    /// Consumes `n` unseen bytes; returns how many belonged to the body, whether it ended, and
    /// whether exact framing was lost (a chunked body then becomes [`Body::ChunkedResync`]).
    pub(super) fn unseen(&mut self, n: u64) -> (u64, Step, bool) {
        match self {
            Body::Length(r) => {
                let take = (*r).min(n);
                *r -= take;
                (take, if *r == 0 { Step::Done } else { Step::More }, false)
            }
            Body::Chunked(Chunk::Data(r)) if *r >= n => {
                *r -= n;
                if *r == 0 {
                    *self = Body::Chunked(Chunk::DataCr);
                }
                (n, Step::More, false)
            }
            Body::Chunked(_) => {
                *self = Body::ChunkedResync;
                (n, Step::More, true)
            }
            Body::ChunkedResync | Body::UntilClose | Body::UntilNextRequest => {
                (n, Step::More, false)
            }
        }
    }
}

/// True when the segment's last bytes are the last chunk of a chunked body (the heuristic end
/// of a body whose chunk-size lines were unseen).
pub(super) fn ends_with_last_chunk(seg: &Segment<'_>) -> bool {
    let complete = seg.is_complete();
    let end = if complete { seg.data } else { seg.tail() };
    end.ends_with(b"\n0\r\n\r\n") || (complete && seg.data == b"0\r\n\r\n")
}
