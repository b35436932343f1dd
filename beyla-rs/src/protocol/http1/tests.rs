//! Connection-level tests: a table of conversations delivered as segments split every way,
//! then limits, truncated captures, resyncs, upgrades and the head and body helpers.

use super::super::{Direction, ExchangeFlags, Extents};
use super::head::{Field, H2_PREFACE, WholeHead, parse_content_length};
use super::*;

const REQ: Direction = Direction::Ingress;
const RESP: Direction = Direction::Egress;

/// One syscall's worth of bytes in a conversation, seen by a server.
type Msg<'a> = (Direction, &'a [u8]);

fn seg(direction: Direction, ts_ns: u64, data: &[u8]) -> Segment<'_> {
    Segment {
        direction,
        ts_ns,
        data,
        total_len: data.len() as u64,
        extents: Extents::EMPTY,
    }
}

/// A segment whose capture holds only the first `bound` bytes of `full`.
fn capped(direction: Direction, ts_ns: u64, full: &[u8], bound: usize) -> Segment<'_> {
    if full.len() <= bound {
        return seg(direction, ts_ns, full);
    }
    Segment {
        direction,
        ts_ns,
        data: &full[..bound],
        total_len: full.len() as u64,
        extents: Extents::test_tail(full, 8),
    }
}

struct Run {
    conn: Http1Connection,
    out: Vec<HttpExchange>,
    verdicts: Vec<Verdict>,
}

impl Run {
    fn new(joined_midway: bool) -> Self {
        Run {
            conn: Http1Connection::new(Role::Server, joined_midway),
            out: Vec::new(),
            verdicts: Vec::new(),
        }
    }
    fn feed(&mut self, s: Segment<'_>) -> Verdict {
        let v = self.conn.on_segment(&s, &mut self.out);
        self.verdicts.push(v);
        v
    }
    fn send(&mut self, dir: Direction, ts: u64, data: &[u8]) -> Verdict {
        self.feed(seg(dir, ts, data))
    }
    fn close(&mut self, ts: u64) {
        self.conn.on_close(ts, &mut self.out);
    }
    fn last(&self) -> Verdict {
        *self.verdicts.last().unwrap_or(&Verdict::Continue)
    }
}

/// Feeds `steps` (each cut into pieces by `cuts`), the pieces of step `i` at time `i + 1`.
fn run_with(steps: &[Msg<'_>], close: bool, cuts: impl Fn(usize, &[u8]) -> Vec<usize>) -> Run {
    let mut r = Run::new(false);
    for (i, (dir, bytes)) in steps.iter().enumerate() {
        let mut start = 0;
        for end in cuts(i, bytes).into_iter().chain([bytes.len()]) {
            if end > start {
                r.send(*dir, i as u64 + 1, &bytes[start..end]);
                start = end;
            }
        }
    }
    if close {
        r.close(1000);
    }
    r
}

fn run(steps: &[Msg<'_>], close: bool) -> Run {
    run_with(steps, close, |_, _| Vec::new())
}

/// (method, target, status, request body, response body, incomplete)
type Summary = (&'static str, &'static str, Option<u16>, u64, u64, bool);

fn summary(e: &HttpExchange) -> (String, String, Option<u16>, u64, u64, bool) {
    (
        e.method.clone(),
        e.target.clone(),
        e.status,
        e.request_body_size,
        e.response_body_size,
        e.flags.incomplete,
    )
}

fn assert_summaries(got: &[HttpExchange], want: &[Summary]) {
    let got: Vec<_> = got.iter().map(summary).collect();
    let want: Vec<_> = want
        .iter()
        .map(|&(m, t, s, rq, rs, inc)| (m.to_owned(), t.to_owned(), s, rq, rs, inc))
        .collect();
    assert_eq!(got, want);
}

struct Case {
    name: &'static str,
    steps: Vec<Msg<'static>>,
    close: bool,
    want: Vec<Summary>,
}

const GET: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nAuthorization: Bearer s3cr3t\r\n\r\n";
const OK5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
const CHUNKED_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;name=\"val\"\r\nWiki\r\n5\r\npedia\r\nE ; x=y\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n";

fn cases() -> Vec<Case> {
    let chunked_len = (CHUNKED_RESP.len()
        - CHUNKED_RESP
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
        - 4) as u64;
    vec![
        Case {
            name: "simple get",
            steps: vec![(REQ, GET), (RESP, OK5)],
            close: false,
            want: vec![("GET", "/a?b=1", Some(200), 0, 5, false)],
        },
        Case {
            name: "keep-alive x3",
            steps: vec![
                (REQ, GET),
                (RESP, OK5),
                (REQ, b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
                (RESP, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                (REQ, b"DELETE /3 HTTP/1.1\r\n\r\n"),
                (RESP, OK5),
            ],
            close: false,
            want: vec![
                ("GET", "/a?b=1", Some(200), 0, 5, false),
                ("GET", "/2", Some(404), 0, 0, false),
                ("DELETE", "/3", Some(200), 0, 5, false),
            ],
        },
        Case {
            name: "pipelined",
            steps: vec![
                (REQ, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\n\r\n"),
                (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
                (RESP, b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"),
            ],
            close: false,
            want: vec![
                ("GET", "/1", Some(200), 0, 1, false),
                ("POST", "/2", Some(201), 3, 0, false),
                ("GET", "/3", Some(500), 0, 11, false),
            ],
        },
        Case {
            name: "chunked request and response with extensions and trailers",
            steps: vec![
                (REQ, b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2;ext=1\r\n{}\r\n0\r\nX-Sum: 1\r\n\r\n"),
                (RESP, CHUNKED_RESP),
            ],
            close: false,
            want: vec![("POST", "/up", Some(200), 28, chunked_len, false)],
        },
        Case {
            name: "expect 100-continue",
            steps: vec![
                (REQ, b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
                (RESP, b"HTTP/1.1 100 Continue\r\n\r\n"),
                (REQ, b"data"),
                (RESP, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
            ],
            close: false,
            want: vec![("PUT", "/f", Some(201), 4, 2, false)],
        },
        Case {
            name: "HEAD, 204 and 304 have no body",
            steps: vec![
                (REQ, b"HEAD /h HTTP/1.1\r\n\r\n"),
                (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
                (REQ, b"GET /n HTTP/1.1\r\n\r\n"),
                (RESP, b"HTTP/1.1 204 No Content\r\n\r\n"),
                (REQ, b"GET /c HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n"),
                (RESP, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
                (REQ, b"GET /after HTTP/1.1\r\n\r\n"),
                (RESP, OK5),
            ],
            close: false,
            want: vec![
                ("HEAD", "/h", Some(200), 0, 0, false),
                ("GET", "/n", Some(204), 0, 0, false),
                ("GET", "/c", Some(304), 0, 0, false),
                ("GET", "/after", Some(200), 0, 5, false),
            ],
        },
        Case {
            name: "HTTP/1.0 close-delimited",
            steps: vec![
                (REQ, b"GET /old HTTP/1.0\r\n\r\n"),
                (RESP, b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>"),
                (RESP, b"</html>"),
            ],
            close: true,
            want: vec![("GET", "/old", Some(200), 0, 13, false)],
        },
        Case {
            name: "closed mid-response",
            steps: vec![(REQ, GET), (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")],
            close: true,
            want: vec![("GET", "/a?b=1", Some(200), 0, 3, true)],
        },
        Case {
            name: "closed without response",
            steps: vec![(REQ, GET), (REQ, b"GET /x HTTP/1.1\r\n\r\n")],
            close: true,
            want: vec![
                ("GET", "/a?b=1", None, 0, 0, true),
                ("GET", "/x", None, 0, 0, true),
            ],
        },
        Case {
            name: "bare LF line endings and leading empty lines",
            steps: vec![
                (REQ, b"\r\nGET /lf HTTP/1.1\nHost: h\n\n"),
                (RESP, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
            ],
            close: false,
            want: vec![("GET", "/lf", Some(200), 0, 2, false)],
        },
        Case {
            name: "websocket upgrade",
            steps: vec![
                (REQ, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                (RESP, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
                (REQ, b"\x81\x85garbage"),
            ],
            close: true,
            want: vec![("GET", "/ws", Some(101), 0, 0, false)],
        },
    ]
}

#[test]
fn table_whole_segments() {
    for c in cases() {
        let r = run(&c.steps, c.close);
        assert!(
            r.verdicts.iter().all(|v| *v == Verdict::Continue),
            "{}",
            c.name
        );
        let got: Vec<_> = r.out.iter().map(summary).collect();
        let want: Vec<_> = c
            .want
            .iter()
            .map(|&(m, t, s, rq, rs, inc)| (m.to_owned(), t.to_owned(), s, rq, rs, inc))
            .collect();
        assert_eq!(got, want, "{}", c.name);
        assert_eq!(r.conn.pending(), 0, "{}", c.name);
    }
}

#[test]
fn table_split_at_every_byte() {
    for c in cases() {
        let base = run(&c.steps, c.close).out;
        for (s, (_, bytes)) in c.steps.iter().enumerate() {
            for i in 1..bytes.len() {
                let r = run_with(
                    &c.steps,
                    c.close,
                    |k, _| if k == s { vec![i] } else { vec![] },
                );
                assert_eq!(r.out, base, "{}: step {s} split at {i}", c.name);
                assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
            }
        }
    }
}

#[test]
fn table_split_everywhere_at_once() {
    for c in cases() {
        let base = run(&c.steps, c.close).out;
        let r = run_with(&c.steps, c.close, |_, b| (1..b.len()).collect());
        assert_eq!(r.out, base, "{}: one-byte segments", c.name);
        for n in [2, 3, 7] {
            let r = run_with(&c.steps, c.close, |_, b| (1..b.len()).step_by(n).collect());
            assert_eq!(r.out, base, "{}: {n}-byte segments", c.name);
        }
    }
}

#[test]
fn table_every_prefix_is_partial() {
    for c in cases() {
        let full = run(&c.steps, false);
        for (s, (dir, bytes)) in c.steps.iter().enumerate() {
            let before = run(&c.steps[..s], false).out;
            let after = run(&c.steps[..=s], false).out;
            for p in 0..bytes.len() {
                let mut r = run(&c.steps[..s], false);
                let v = r.send(*dir, 99, &bytes[..p]);
                assert_eq!(v, Verdict::Continue, "{}: step {s} prefix {p}", c.name);
                assert!(r.out.len() >= before.len() && r.out.len() <= after.len());
                let got: Vec<_> = r.out.iter().map(summary).collect();
                let want: Vec<_> = full.out[..r.out.len()].iter().map(summary).collect();
                assert_eq!(got, want, "{}", c.name);
            }
        }
    }
}

#[test]
fn kept_fields() {
    let mut r = Run::new(false);
    r.send(REQ, 5, b"POST /x HTTP/1.1\r\nhOsT: svc:8080\r\nCONTENT-TYPE: application/json\r\ntraceparent: 00-aa-bb-01\r\nTraceState: k=v\r\nCookie: id=secret\r\nContent-Length: 2\r\n\r\n{}");
    r.send(RESP, 9, OK5);
    assert_eq!(r.out.len(), 1);
    let e = &r.out[0];
    assert_eq!(e.protocol, Some(Protocol::Http1));
    assert_eq!(e.authority.as_deref(), Some("svc:8080"));
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(e.traceparent.as_deref(), Some("00-aa-bb-01"));
    assert_eq!(e.tracestate.as_deref(), Some("k=v"));
    assert_eq!(e.scheme, None);
    assert_eq!(e.stream_id, 0);
    assert_eq!((e.start_ns, e.end_ns), (5, 9));
    assert_eq!(e.flags, ExchangeFlags::default());
}

#[test]
fn timestamps_follow_first_and_last_bytes() {
    let mut r = Run::new(false);
    r.send(REQ, 10, b"\r\n");
    r.send(REQ, 11, b"GET /t HTT");
    r.send(REQ, 12, b"P/1.1\r\nHost: h\r\n\r");
    r.send(REQ, 13, b"\n");
    r.send(RESP, 20, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
    r.send(RESP, 30, b"cd");
    r.send(REQ, 40, b"GET /u HTTP/1.1\r\n\r\n");
    r.send(RESP, 50, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    r.send(RESP, 60, b"body");
    r.close(70);
    assert_eq!(r.out.len(), 2);
    assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (11, 30));
    assert_eq!((r.out[1].start_ns, r.out[1].end_ns), (40, 60));
    assert_eq!(r.out[1].response_body_size, 4);
    assert!(!r.out[1].flags.incomplete);
}

#[test]
fn no_response_incomplete_ends_at_close() {
    let mut r = Run::new(false);
    r.send(REQ, 10, GET);
    r.close(77);
    assert_eq!(r.out.len(), 1);
    assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (10, 77));
    assert!(r.out[0].flags.incomplete);
    assert_eq!(r.out[0].status, None);
    // Closing twice, or feeding after close, does nothing.
    r.close(80);
    assert_eq!(r.send(REQ, 81, GET), Verdict::Continue);
    assert_eq!(r.out.len(), 1);
}

#[test]
fn closed_mid_head_and_mid_chunked() {
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(RESP, 2, b"HTTP/1.1 503 Unavailable\r\nContent-Le");
    r.close(3);
    assert_summaries(&r.out, &[("GET", "/a?b=1", Some(503), 0, 0, true)]);

    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(
        RESP,
        2,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    r.close(3);
    assert_summaries(&r.out, &[("GET", "/a?b=1", Some(200), 0, 5, true)]);

    // A request head cut by the close still names its request.
    let mut r = Run::new(false);
    r.send(REQ, 1, b"GET /cut HTTP/1.1\r\nHost: h");
    r.close(3);
    assert_summaries(&r.out, &[("GET", "/cut", None, 0, 0, true)]);
}

#[test]
fn keep_alive_many() {
    let mut r = Run::new(false);
    for i in 0..500u64 {
        r.send(REQ, 2 * i, GET);
        assert_eq!(r.conn.pending(), 1);
        r.send(RESP, 2 * i + 1, OK5);
        assert_eq!(r.conn.pending(), 0);
    }
    assert_eq!(r.out.len(), 500);
    assert!(
        r.out
            .iter()
            .all(|e| e.status == Some(200) && e.end_ns == e.start_ns + 1)
    );
}

#[test]
fn pipelining_limit_drops_oldest() {
    let mut r = Run::new(false);
    let mut all = Vec::new();
    for i in 0..(MAX_PENDING + 10) {
        all.extend_from_slice(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
    }
    r.send(REQ, 1, &all);
    assert_eq!(r.conn.pending(), MAX_PENDING);
    assert_eq!(r.conn.stats.dropped_pending, 10);
    let mut resp = Vec::new();
    for i in 0..(MAX_PENDING + 10) {
        resp.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{i}",
                i.to_string().len()
            )
            .as_bytes(),
        );
    }
    r.send(RESP, 2, &resp);
    assert_eq!(r.out.len(), MAX_PENDING);
    // FIFO pairing survived the drops: /10 got the 11th response ("10").
    assert_eq!(r.out[0].target, "/10");
    assert_eq!(r.out[0].response_body_size, 2);
    assert_eq!(
        r.out.last().unwrap().target,
        format!("/{}", MAX_PENDING + 9)
    );
    assert_eq!(r.conn.pending(), 0);
}

#[test]
fn too_many_headers_still_parsed() {
    let mut head = b"POST /many HTTP/1.1\r\nHost: big\r\n".to_vec();
    for i in 0..200 {
        head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"Content-Length: 3\r\n\r\nabc");
    let mut r = Run::new(false);
    r.send(REQ, 1, &head);
    let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..100 {
        resp.extend_from_slice(format!("X-R{i}: v\r\n").as_bytes());
    }
    resp.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    r.send(RESP, 2, &resp);
    assert_summaries(&r.out, &[("POST", "/many", Some(200), 3, 2, false)]);
    assert_eq!(r.out[0].authority.as_deref(), Some("big"));
    assert_eq!(r.conn.stats.header_fallbacks, 2);
}

#[test]
fn head_overflow_is_bounded() {
    let mut r = Run::new(false);
    r.send(REQ, 1, b"GET /huge HTTP/1.1\r\n");
    let filler = [b'a'; 1000];
    for _ in 0..100 {
        r.send(REQ, 2, b"X-Big: ");
        assert_eq!(r.send(REQ, 2, &filler), Verdict::Continue);
        r.send(REQ, 2, b"\r\n");
        assert!(r.conn.req.buf.bytes.len() <= MAX_HEAD_BYTES);
    }
    r.send(REQ, 3, b"\r\n");
    assert_eq!(r.conn.stats.head_overflows, 1);
    r.send(RESP, 4, OK5);
    r.send(REQ, 5, b"GET /next HTTP/1.1\r\n\r\n");
    r.send(RESP, 6, OK5);
    assert_summaries(
        &r.out,
        &[
            ("GET", "/huge", Some(200), 0, 5, false),
            ("GET", "/next", Some(200), 0, 5, false),
        ],
    );
    assert!(r.out[0].flags.partial);
}

#[test]
fn truncated_capture_content_length_exact() {
    let mut post = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n".to_vec();
    post.extend(std::iter::repeat_n(b'x', 10000));
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'y', 20000));
    for bound in [64, 100, 1024, 4096] {
        let mut r = Run::new(false);
        for i in 0..3u64 {
            r.feed(capped(REQ, 10 * i, &post, bound));
            r.feed(capped(RESP, 10 * i + 5, &resp, bound));
        }
        // Pipelined in one syscall: the next request begins right after the unseen body.
        let mut two = post.clone();
        two.extend_from_slice(b"GET /tiny HTTP/1.1\r\n\r\n");
        r.feed(Segment {
            direction: REQ,
            ts_ns: 100,
            data: &two[..bound],
            total_len: two.len() as u64,
            extents: Extents::test_tail(&two, 8),
        });
        r.feed(capped(RESP, 105, &resp, bound));
        r.feed(capped(RESP, 106, &resp, bound));
        assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
        assert_eq!(r.out.len(), 4, "bound {bound}");
        for e in &r.out {
            assert_eq!((e.method.as_str(), e.target.as_str()), ("POST", "/upload"));
            assert_eq!((e.request_body_size, e.response_body_size), (10000, 20000));
            assert_eq!(e.status, Some(200));
            assert_eq!(e.end_ns, e.start_ns + 5);
        }
        // The hidden request pairs with the last response but emits nothing.
        assert_eq!(r.conn.pending(), 0);
    }
}

#[test]
fn truncated_capture_chunked() {
    // Large chunk whose size line is seen: exact through unseen data; the tail ends it.
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'z', 0x2710));
    let head_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    resp.extend_from_slice(b"\r\n0\r\n\r\n");
    let body_len = (resp.len() - head_len) as u64;
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.feed(capped(RESP, 2, &resp, 1024));
    r.send(REQ, 3, GET);
    // The same, with the chunk data and the last chunk in later syscalls (exact).
    r.feed(capped(RESP, 4, &resp[..head_len + 6 + 5000], 1024));
    r.feed(capped(
        RESP,
        5,
        &resp[head_len + 6 + 5000..resp.len() - 5],
        1024,
    ));
    r.send(RESP, 6, b"0\r\n\r\n");
    // Chunk-size lines unseen: resync on the segment whose tail is the last chunk.
    let mut many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..50 {
        many.extend_from_slice(b"40\r\n");
        many.extend(std::iter::repeat_n(b'q', 0x40));
        many.extend_from_slice(b"\r\n");
    }
    let many_body = (many.len() - head_len) as u64 + 5;
    r.send(REQ, 7, GET);
    r.feed(capped(RESP, 8, &many, 512));
    r.feed(capped(RESP, 9, &many[head_len..], 512));
    r.send(RESP, 10, b"0\r\n\r\n");
    r.send(REQ, 11, GET);
    r.send(RESP, 12, OK5);
    assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
    let ends: Vec<_> = r
        .out
        .iter()
        .map(|e| (e.end_ns, e.response_body_size))
        .collect();
    assert_eq!(
        ends,
        vec![
            (2, body_len),
            (6, body_len),
            (10, many_body + (many.len() - head_len) as u64),
            (12, 5)
        ]
    );
    // One resync per segment whose unseen bytes run past the current chunk's data: segment
    // 2 (the rest of the data and the last chunk), 5 (the CRLF after the data) and 8 (the
    // unseen chunk-size lines). Segment 4 ends inside the data and stays exact; 9 is
    // already resyncing.
    assert_eq!(r.conn.stats.resyncs, 3);
}

#[test]
fn truncated_chunked_request() {
    let mut post = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let head_len = post.len() as u64;
    for _ in 0..40 {
        post.extend_from_slice(b"40\r\n");
        post.extend(std::iter::repeat_n(b'q', 0x40));
        post.extend_from_slice(b"\r\n");
    }
    post.extend_from_slice(b"0\r\n\r\n");
    let mut r = Run::new(false);
    r.feed(capped(REQ, 1, &post, 300));
    r.send(RESP, 2, OK5);
    r.send(REQ, 3, b"GET /next HTTP/1.1\r\n\r\n");
    r.send(RESP, 4, OK5);
    assert_summaries(
        &r.out,
        &[
            (
                "POST",
                "/c",
                Some(200),
                post.len() as u64 - head_len,
                5,
                false,
            ),
            ("GET", "/next", Some(200), 0, 5, false),
        ],
    );
}

#[test]
fn truncated_heads_resync() {
    // A request head larger than the capture: method and target survive, partial.
    let mut req = b"GET /big?q=1 HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'c', 3000));
    req.extend_from_slice(b"\r\n\r\n");
    let mut resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: ".to_vec();
    resp.extend(std::iter::repeat_n(b's', 3000));
    resp.extend_from_slice(b"\r\nContent-Length: 3\r\n\r\nabc");
    let mut r = Run::new(false);
    r.feed(capped(REQ, 1, &req, 1024));
    assert_eq!(r.conn.pending(), 1);
    r.feed(capped(RESP, 2, &resp, 1024));
    r.send(RESP, 3, b"more response bytes");
    r.send(REQ, 4, b"GET /small HTTP/1.1\r\n\r\n");
    r.send(RESP, 5, OK5);
    r.close(6);
    assert_summaries(
        &r.out,
        &[
            ("GET", "/big?q=1", Some(200), 0, 0, false),
            ("GET", "/small", Some(200), 0, 5, false),
        ],
    );
    assert_eq!(r.out[0].authority.as_deref(), Some("h"));
    assert!(r.out[0].flags.partial);
    assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (1, 3));
    // The cut request head (segment 1) and the cut response head (2); the rest of the
    // response (3) is skipped in the state the second entered, without another.
    assert_eq!(r.conn.stats.resyncs, 2);
    assert!(r.verdicts.iter().all(|v| *v == Verdict::Continue));
}

#[test]
fn not_http() {
    let inputs: &[&[u8]] = &[
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x00\x00\x00\x01\x02",
        b"get / http/1.1\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
        b"GET /\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ];
    for i in inputs {
        let mut r = Run::new(false);
        assert_eq!(
            r.send(REQ, 1, i),
            Verdict::Reject,
            "{:?}",
            String::from_utf8_lossy(i)
        );
        // Sticky.
        assert_eq!(r.send(REQ, 2, GET), Verdict::Reject);
        // Byte by byte, detected as soon as possible and never earlier than "invalid".
        let mut r = Run::new(false);
        let v: Vec<_> = i
            .iter()
            .map(|b| r.send(REQ, 1, std::slice::from_ref(b)))
            .collect();
        assert_eq!(*v.last().unwrap(), Verdict::Reject);
    }
    // A line without CRLF longer than the limit.
    let mut r = Run::new(false);
    assert_eq!(r.send(REQ, 1, b"GET /"), Verdict::Continue);
    let long = vec![b'a'; MAX_START_LINE];
    assert_eq!(r.send(REQ, 2, &long), Verdict::Reject);
    // A long token with no space is not a method.
    let mut r = Run::new(false);
    assert_eq!(r.send(REQ, 1, &[b'A'; MAX_METHOD_LEN + 1]), Verdict::Reject);
    // A server speaking first with something that is not a status line.
    let mut r = Run::new(false);
    assert_eq!(
        r.send(RESP, 1, b"220 smtp.example.com ESMTP\r\n"),
        Verdict::Reject
    );
    // Garbage later where a request must start.
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(RESP, 2, OK5);
    assert_eq!(r.send(REQ, 3, b"\x16\x03\x01"), Verdict::Reject);
    assert_eq!(r.out.len(), 1);
}

#[test]
fn joined_midway_syncs_on_request_line() {
    let mut r = Run::new(true);
    // The tail of an old response and body bytes: ignored.
    assert_eq!(
        r.send(RESP, 1, b"tail of a body\r\n0\r\n\r\n"),
        Verdict::Continue
    );
    assert_eq!(r.send(REQ, 2, b"\x16\x03garbage"), Verdict::Continue);
    assert_eq!(r.send(REQ, 3, b"d\": 1}"), Verdict::Continue);
    assert_eq!(r.send(RESP, 4, OK5), Verdict::Continue);
    assert!(r.out.is_empty());
    r.send(REQ, 5, GET);
    r.send(RESP, 6, OK5);
    assert_summaries(&r.out, &[("GET", "/a?b=1", Some(200), 0, 5, false)]);
    // After sync, garbage means lost sync (not a rejection): wait for the next request line.
    assert_eq!(r.send(REQ, 7, b"\x00\x01binary"), Verdict::Continue);
    r.send(REQ, 8, b"GET /again HTTP/1.1\r\n\r\n");
    r.send(RESP, 9, OK5);
    assert_eq!(r.out.len(), 2);
    assert_eq!(r.out[1].target, "/again");
}

#[test]
fn switch_to_http2() {
    // Prior knowledge preface, whole and byte by byte.
    let mut preface = H2_PREFACE.to_vec();
    preface.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let mut r = Run::new(false);
    assert_eq!(r.send(REQ, 1, &preface), Verdict::SwitchToHttp2);
    assert_eq!(r.send(REQ, 2, GET), Verdict::SwitchToHttp2);
    let mut r = Run::new(false);
    let v: Vec<_> = preface[..H2_PREFACE_HEAD.len()]
        .iter()
        .map(|b| r.send(REQ, 1, std::slice::from_ref(b)))
        .collect();
    assert!(v[..v.len() - 1].iter().all(|v| *v == Verdict::Continue));
    assert_eq!(*v.last().unwrap(), Verdict::SwitchToHttp2);
    // Joined midway, on a segment starting with the preface.
    let mut r = Run::new(true);
    assert_eq!(r.send(REQ, 1, &preface), Verdict::SwitchToHttp2);
    // h2c upgrade.
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(RESP, 2, OK5);
    r.send(REQ, 3, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
    let v = r.send(RESP, 4, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04");
    assert_eq!(v, Verdict::SwitchToHttp2);
    assert_eq!(r.out.len(), 1);
    assert_eq!(r.conn.pending(), 0);
    // The upgrade request is handed over as HTTP/2 stream 1, with where HTTP/2 starts.
    let up = r.conn.take_h2c_upgrade().expect("h2c upgrade request");
    assert_eq!(
        (up.request.method.as_str(), up.request.target.as_str()),
        ("GET", "/")
    );
    assert_eq!(up.request.authority.as_deref(), Some("h"));
    assert_eq!(up.request.start_ns, 3);
    assert_eq!(up.request.stream_id, 1);
    assert_eq!(up.http2_offset, Some(71));
    assert!(r.conn.take_h2c_upgrade().is_none());
    // 101 for something else is an exchange, then the tunnel is ignored.
    let mut r = Run::new(false);
    r.send(REQ, 1, b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(
        r.send(RESP, 2, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        Verdict::Continue
    );
    assert_eq!(
        r.send(REQ, 3, b"\x81\x80\x00\x00\x00\x00"),
        Verdict::Continue
    );
    assert_eq!(
        r.send(RESP, 4, b"HTTP/1.1 200 OK\r\n\r\n"),
        Verdict::Continue
    );
    assert_summaries(&r.out, &[("GET", "/chat", Some(101), 0, 0, false)]);
    // CONNECT tunnels too.
    let mut r = Run::new(false);
    r.send(REQ, 1, b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
    r.send(RESP, 2, b"HTTP/1.1 200 Connection established\r\n\r\n");
    assert_eq!(r.send(REQ, 3, b"\x16\x03\x01"), Verdict::Continue);
    r.close(4);
    assert_summaries(&r.out, &[("CONNECT", "db:5432", Some(200), 0, 0, false)]);
}

#[test]
fn secrets_not_retained() {
    let mut r = Run::new(false);
    r.send(
        REQ,
        1,
        b"GET /s HTTP/1.1\r\nAuthorization: Bearer TOPSECRET\r\nCookie: sid=COOKIESECRET\r\n",
    );
    let dbg = format!("{:?}", r.conn);
    assert!(
        !dbg.contains("TOPSECRET") && !dbg.contains("COOKIESECRET"),
        "{dbg}"
    );
    r.send(REQ, 2, b"\r\n");
    r.send(RESP, 3, OK5);
    let dbg = format!("{:?} {:?}", r.conn, r.out);
    assert!(
        !dbg.contains("TOPSECRET") && !dbg.contains("COOKIESECRET"),
        "{dbg}"
    );
    assert!(!dbg.contains("Bearer"));
    // The head buffer was wiped, not just truncated.
    assert!(
        !r.conn.req.buf.bytes.spare_capacity_mut().is_empty()
            || r.conn.req.buf.bytes.capacity() == 0
    );
    let raw = unsafe {
        std::slice::from_raw_parts(
            r.conn.req.buf.bytes.as_ptr(),
            r.conn.req.buf.bytes.capacity(),
        )
    };
    assert!(!raw.windows(9).any(|w| w == b"TOPSECRET"));
}

#[test]
fn chunk_decoder() {
    let body = b"4;a=b\r\nWiki\r\n0\r\nT: 1\r\n\r\n";
    let mut c = Chunk::START;
    assert_eq!(c.feed(body), (body.len(), Step::Done));
    for bad in [
        &b"x\r\n"[..],
        b"4\r\nWikiXX",
        b"0\r\n\rX",
        b"11111111111111111\r\n",
    ] {
        let mut c = Chunk::START;
        assert_eq!(
            c.feed(bad).1,
            Step::Bad,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn content_length_rules() {
    assert_eq!(parse_content_length(b"42"), Some(42));
    assert_eq!(parse_content_length(b" 42 , 42"), Some(42));
    assert_eq!(parse_content_length(b"42, 43"), None);
    assert_eq!(parse_content_length(b"-1"), None);
    assert_eq!(parse_content_length(b""), None);
    assert_eq!(parse_content_length(b"99999999999999999999"), None);
    // Conflicting Content-Length: framing unknown, response handled heuristically.
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(
        RESP,
        2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    r.send(REQ, 3, GET);
    r.send(RESP, 4, OK5);
    assert_summaries(
        &r.out,
        &[
            ("GET", "/a?b=1", Some(200), 0, 4, false),
            ("GET", "/a?b=1", Some(200), 0, 5, false),
        ],
    );
}

#[test]
fn orphan_response_is_counted_not_emitted() {
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.send(RESP, 2, OK5);
    r.send(
        RESP,
        3,
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.out.len(), 1);
    assert_eq!(r.conn.stats.orphan_responses, 1);
    assert_eq!(r.last(), Verdict::Continue);
}
#[test]
fn client_role_requests_are_egress() {
    let mut c = Http1Connection::new(Role::Client, false);
    let mut out = Vec::new();
    let v = c.on_segment(&seg(Direction::Egress, 1, GET), &mut out);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(c.pending(), 1);
    c.on_segment(&seg(Direction::Ingress, 2, OK5), &mut out);
    assert_summaries(&out, &[("GET", "/a?b=1", Some(200), 0, 5, false)]);
    // For a client, TLS goes out first.
    let mut c = Http1Connection::new(Role::Client, false);
    let v = c.on_segment(&seg(Direction::Egress, 1, b"\x16\x03\x01\x00"), &mut out);
    assert_eq!(v, Verdict::Reject);
}

#[test]
fn chunked_resync_with_trailers_ends_at_next_request() {
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        resp.extend_from_slice(b"40\r\n");
        resp.extend(std::iter::repeat_n(b'q', 0x40));
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"0\r\nX-Checksum: abc\r\n\r\n");
    let mut r = Run::new(false);
    r.send(REQ, 1, GET);
    r.feed(capped(RESP, 2, &resp, 256));
    assert!(r.out.is_empty());
    r.send(REQ, 3, b"GET /next HTTP/1.1\r\n\r\n");
    r.send(RESP, 4, OK5);
    assert_eq!(r.out.len(), 2);
    assert_eq!((r.out[0].status, r.out[0].end_ns), (Some(200), 2));
    assert!(!r.out[0].flags.incomplete);
    assert_eq!(r.out[1].target, "/next");
}

#[test]
fn fields_are_kept_headers_only() {
    use super::super::KEPT_REQUEST_HEADERS;
    for f in Field::ALL {
        let name = KEPT_REQUEST_HEADERS
            .iter()
            .find(|k| Field::of(k.as_bytes()) == Some(f))
            .unwrap_or_else(|| panic!("{f:?} is not in KEPT_REQUEST_HEADERS"));
        assert_eq!(Field::of(name.to_ascii_uppercase().as_bytes()), Some(f));
    }
    // Names of the same lengths that must never be read, secrets among them.
    for name in [
        "Date",
        "Cookie",
        "Server",
        "Expires",
        "Connection",
        "x-api-key!",
        "Set-Cookie",
        "Www-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "content-lengtx",
        "transfer-encodinh",
        "hostt",
        "",
    ] {
        let f = Field::of(name.as_bytes());
        assert!(
            f.is_none() || KEPT_REQUEST_HEADERS.contains(&name.to_ascii_lowercase().as_str()),
            "{name} read as {f:?}"
        );
    }
}

/// Runs `whole` and an independent path over `cases` and asserts they agree on where the
/// head ends ([`take_head`]) and on `key` of the parse. The reference parse is the one for
/// heads cut short (`parse(head, false)`: the start line alone through httparse, the
/// header lines scanned by hand), since `parse(head, true)` is `whole` itself. Returns how
/// many cases the one-pass parse took (the rest are left to the general path).
fn agree<T, K: PartialEq + std::fmt::Debug>(
    cases: &[&[u8]],
    whole: fn(&[u8]) -> WholeHead<T>,
    parse: fn(&[u8], bool) -> Option<T>,
    key: fn(&T) -> K,
) -> usize {
    let mut compared = 0;
    for data in cases {
        let Some((n, one_pass)) = whole(data) else {
            continue;
        };
        compared += 1;
        let text = String::from_utf8_lossy(data);
        let HeadStep::Complete(m) = take_head(&mut HeadBuf::default(), data) else {
            panic!("the general path found no head in {text:?}");
        };
        assert_eq!(n, m, "{text:?}");
        let reference = parse(&data[..m], false);
        assert_eq!(
            one_pass.as_ref().map(key),
            reference.as_ref().map(key),
            "{text:?}"
        );
    }
    compared
}

/// The one-pass parse of a whole head agrees with finding the head's end and scanning it
/// line by line, on where the head ends and on everything parsed from it.
#[test]
fn whole_head_pass_matches_general_path() {
    let requests: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x?y=1 HTTP/1.0\n\n",
        b"POST /p HTTP/1.1\r\nHost:  b \r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\ntraceparent: 00-x\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\nHost: c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: c\n\r\n",
        b"GET  /two-spaces  HTTP/1.1\r\n\r\n",
        b"AVERYLONGMETHODNAMEOFMORETHANTHIRTYTWOCHARS / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        // Left to the general path: the HTTP/2 preface, a cut head, a stray CR.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
    ];
    let request_key = |p: &ParsedRequest| {
        let i = &p.info;
        (
            p.method.clone(),
            p.target.clone(),
            p.fallback,
            i.host.clone(),
            i.content_type.clone(),
            i.traceparent.clone(),
            i.upgrade_h2c,
            i.framing(),
        )
    };
    let n = agree(
        requests,
        parse_whole_request,
        parse_request_head,
        request_key,
    );
    assert_eq!(n, 10, "requests compared");
    let responses: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\n\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad line\r\n\r\n",
        b"HTTP/1.1 200\r\n\r\n",
    ];
    let response_key = |p: &ParsedResponse| (p.status, p.framing, p.fallback);
    let n = agree(
        responses,
        parse_whole_response,
        parse_response_head,
        response_key,
    );
    assert_eq!(n, 8, "responses compared");
}
