//! Connection-level tests: realistic byte streams built with a test HPACK encoder, delivered
//! as syscalls in every interesting way.

use super::frame::{PREFACE, flags, kind};
use super::hpack::test_encoder::Encoder;
use super::*;
use crate::protocol::Extents;

/// Which endpoint wrote the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    Client,
    Server,
}

fn frame(k: u8, fl: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.push(k);
    v.push(fl);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A DATA frame header announcing `len` payload octets (payload not included).
fn data_header(fl: u8, stream: u32, len: u32) -> Vec<u8> {
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.push(kind::DATA);
    v.push(fl);
    v.extend_from_slice(&stream.to_be_bytes());
    v
}

fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for &(id, v) in entries {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flags::ACK, 0, &[])
}

/// gRPC length-prefixed message of `n` octets.
fn grpc_msg(n: usize) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend(std::iter::repeat_n(0x2a, n));
    v
}

/// Builds both directions of a conversation as a list of writes.
struct Conv {
    client: Encoder,
    server: Encoder,
    writes: Vec<(From, Vec<u8>)>,
}

impl Conv {
    fn new(huffman: bool) -> Self {
        Conv {
            client: Encoder::new(huffman),
            server: Encoder::new(!huffman),
            writes: Vec::new(),
        }
    }

    /// Preface, SETTINGS both ways, ACKs both ways, a WINDOW_UPDATE.
    fn handshake(mut self) -> Self {
        let mut c = PREFACE.to_vec();
        c.extend(settings(&[(0x2, 0), (0x4, 4 << 20)]));
        c.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0x3f, 0, 1]));
        self.push(From::Client, c);
        let mut s = settings(&[(0x3, 100), (0x5, 16384)]);
        s.extend(settings_ack());
        self.push(From::Server, s);
        self.push(From::Client, settings_ack());
        self
    }

    fn push(&mut self, from: From, bytes: Vec<u8>) {
        self.writes.push((from, bytes));
    }

    fn block(&mut self, from: From, fields: &[(&str, &str)]) -> Vec<u8> {
        match from {
            From::Client => self.client.encode(fields),
            From::Server => self.server.encode(fields),
        }
    }

    fn headers(&mut self, from: From, stream: u32, end_stream: bool, fields: &[(&str, &str)]) {
        let b = self.block(from, fields);
        let fl = flags::END_HEADERS | if end_stream { flags::END_STREAM } else { 0 };
        self.push(from, frame(kind::HEADERS, fl, stream, &b));
    }

    fn grpc_request(&mut self, stream: u32, method: &str) {
        let path = format!("/pkg.Service/{method}");
        let tp = format!("00-0af7651916cd43dd8448eb211c80319c-{stream:016x}-01");
        self.headers(
            From::Client,
            stream,
            false,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", &path),
                (":authority", "backend:50051"),
                ("content-type", "application/grpc"),
                ("user-agent", "grpc-go/1.60"),
                ("te", "trailers"),
                ("authorization", "Bearer s3cr3t-token"),
                ("traceparent", &tp),
            ],
        );
    }

    fn response_headers(&mut self, stream: u32) {
        self.headers(
            From::Server,
            stream,
            false,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
    }

    /// The trailers HEADERS frame (END_STREAM) with `grpc-status: code`.
    fn trailers_frame(&mut self, stream: u32, code: u32) -> Vec<u8> {
        let c = code.to_string();
        let b = self.block(From::Server, &[("grpc-status", &c), ("grpc-message", "")]);
        frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            stream,
            &b,
        )
    }

    fn trailers(&mut self, stream: u32, code: u32) {
        let f = self.trailers_frame(stream, code);
        self.push(From::Server, f);
    }

    fn data(&mut self, from: From, stream: u32, end_stream: bool, payload: &[u8]) {
        let fl = if end_stream { flags::END_STREAM } else { 0 };
        self.push(from, frame(kind::DATA, fl, stream, payload));
    }

    fn unary(&mut self, stream: u32, method: &str, code: u32) {
        self.grpc_request(stream, method);
        self.data(From::Client, stream, true, &grpc_msg(10));
        self.response_headers(stream);
        self.data(From::Server, stream, false, &grpc_msg(20));
        self.trailers(stream, code);
    }
}

fn dir_of(role: Role, from: From) -> Direction {
    let req = role.request_direction();
    match from {
        From::Client => req,
        From::Server => opposite(req),
    }
}

/// Delivers every write as one complete segment, ts = 1000 * (index + 1).
fn run_writes(
    role: Role,
    midway: bool,
    writes: &[(From, Vec<u8>)],
) -> (Http2Connection, Vec<HttpExchange>) {
    let mut c = Http2Connection::new(role, midway);
    let mut out = Vec::new();
    for (i, (from, bytes)) in writes.iter().enumerate() {
        let seg = Segment {
            direction: dir_of(role, *from),
            ts_ns: 1000 * (i as u64 + 1),
            data: bytes,
            total_len: bytes.len() as u64,
            extents: Extents::EMPTY,
        };
        assert_eq!(c.on_segment(&seg, &mut out), Verdict::Continue, "write {i}");
    }
    (c, out)
}

fn seg(direction: Direction, ts_ns: u64, data: &[u8]) -> Segment<'_> {
    Segment {
        direction,
        ts_ns,
        data,
        total_len: data.len() as u64,
        extents: Extents::EMPTY,
    }
}

fn check_unary(ex: &HttpExchange, stream: u32, method: &str, code: u32) {
    assert_eq!(ex.protocol, Some(Protocol::Grpc));
    assert_eq!(ex.method, "POST");
    assert_eq!(ex.target, format!("/pkg.Service/{method}"));
    assert_eq!(ex.authority.as_deref(), Some("backend:50051"));
    assert_eq!(ex.scheme.as_deref(), Some("http"));
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.grpc_status, Some(code));
    assert_eq!(ex.content_type.as_deref(), Some("application/grpc"));
    assert_eq!(
        ex.traceparent,
        Some(format!(
            "00-0af7651916cd43dd8448eb211c80319c-{stream:016x}-01"
        ))
    );
    assert_eq!(ex.request_body_size, 15);
    assert_eq!(ex.response_body_size, 25);
    assert_eq!(ex.stream_id, stream);
    assert_eq!(ex.flags, ExchangeFlags::default());
}

#[test]
fn unary_grpc_both_roles_with_and_without_huffman() {
    for huff in [false, true] {
        for role in [Role::Server, Role::Client] {
            let mut conv = Conv::new(huff).handshake();
            conv.unary(1, "Get", 0);
            conv.unary(3, "Put", 5);
            let (c, out) = run_writes(role, false, &conv.writes);
            assert_eq!(out.len(), 2);
            check_unary(&out[0], 1, "Get", 0);
            check_unary(&out[1], 3, "Put", 5);
            // Request HEADERS is write 3 (0-based), the trailers write 7.
            assert_eq!(out[0].start_ns, 4000);
            assert_eq!(out[0].end_ns, 8000);
            assert_eq!(c.open_streams(), 0);
            assert_eq!(c.counters().hpack_errors, 0);
            assert!(c.hpack_synced(Direction::Ingress) && c.hpack_synced(Direction::Egress));
        }
    }
}

#[test]
fn secrets_are_not_held() {
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "Get", 0);
    conv.unary(3, "Get", 0);
    let (c, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 2);
    for d in &c.conn.dirs {
        for e in d.decoder.table().entries() {
            assert!(e.value.is_none() || keep_value(&e.name), "{:?}", e.name);
        }
    }
    assert!(!format!("{:?}", c).contains("s3cr3t"));
}

/// The byte streams of a conversation, per direction, with the writes concatenated.
fn streams(writes: &[(From, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for (f, b) in writes {
        match f {
            From::Client => c.extend(b),
            From::Server => s.extend(b),
        }
    }
    (c, s)
}

#[test]
fn reassembly_over_every_split_point() {
    let mut conv = Conv::new(true).handshake();
    conv.unary(1, "Get", 0);
    conv.unary(3, "List", 7);
    let (req, resp) = streams(&conv.writes);
    let reference = {
        let (_, out) = run_writes(Role::Server, false, &conv.writes);
        out
    };
    assert_eq!(reference.len(), 2);
    let strip = |mut e: HttpExchange| {
        e.start_ns = 0;
        e.end_ns = 0;
        e
    };
    // Split the request stream at every point (response delivered whole afterwards), and
    // the response stream at every point.
    for (which, len) in [(0, req.len()), (1, resp.len())] {
        for k in 0..=len {
            let mut c = Http2Connection::new(Role::Server, false);
            let mut out = Vec::new();
            let (a, b) = if which == 0 {
                req.split_at(k)
            } else {
                resp.split_at(k)
            };
            let (d1, d2) = if which == 0 {
                (Direction::Ingress, Direction::Egress)
            } else {
                (Direction::Egress, Direction::Ingress)
            };
            let whole = if which == 0 { &resp } else { &req };
            // Requests must precede responses: deliver the request side first.
            let order: Vec<Segment<'_>> = if which == 0 {
                vec![seg(d1, 1, a), seg(d1, 2, b), seg(d2, 3, whole)]
            } else {
                vec![seg(d2, 1, whole), seg(d1, 2, a), seg(d1, 3, b)]
            };
            for s in &order {
                assert_eq!(c.on_segment(s, &mut out), Verdict::Continue, "{which} {k}");
            }
            assert_eq!(out.len(), 2, "split {which}/{k}");
            for (got, want) in out.into_iter().zip(&reference) {
                assert_eq!(strip(got), strip(want.clone()), "split {which}/{k}");
            }
            assert_eq!(c.counters().sync_lost, 0);
        }
    }
    // Three-way splits of the request stream, sampled.
    for k1 in (0..req.len()).step_by(7) {
        for k2 in (k1..req.len()).step_by(11) {
            let mut c = Http2Connection::new(Role::Server, false);
            let mut out = Vec::new();
            for (i, part) in [&req[..k1], &req[k1..k2], &req[k2..]].iter().enumerate() {
                c.on_segment(&seg(Direction::Ingress, i as u64, part), &mut out);
            }
            c.on_segment(&seg(Direction::Egress, 9, &resp), &mut out);
            assert_eq!(out.len(), 2);
        }
    }
}

#[test]
fn start_and_end_timestamps_follow_the_carrying_segment() {
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "Get", 0);
    let (req, resp) = streams(&conv.writes);
    // Offset of the request HEADERS frame in the client stream.
    let hdr_off = req.len() - (conv.writes[3].1.len() + conv.writes[4].1.len());
    for k in [hdr_off - 1, hdr_off, hdr_off + 1] {
        let mut c = Http2Connection::new(Role::Server, false);
        let mut out = Vec::new();
        c.on_segment(&seg(Direction::Ingress, 10, &req[..k]), &mut out);
        c.on_segment(&seg(Direction::Ingress, 20, &req[k..]), &mut out);
        // Response: everything but the last octet, then the last octet.
        c.on_segment(
            &seg(Direction::Egress, 30, &resp[..resp.len() - 1]),
            &mut out,
        );
        assert!(out.is_empty());
        c.on_segment(
            &seg(Direction::Egress, 40, &resp[resp.len() - 1..]),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let want_start = if k <= hdr_off { 20 } else { 10 };
        assert_eq!(out[0].start_ns, want_start, "k={k}");
        assert_eq!(out[0].end_ns, 40);
    }
}

#[test]
fn truncated_capture_with_1mib_data_frame() {
    let mut conv = Conv::new(true).handshake();
    conv.grpc_request(1, "Upload");
    let n = 1 << 20;
    let mut big = data_header(flags::END_STREAM, 1, n as u32);
    big.extend(grpc_msg(n - 5));
    conv.push(From::Client, big);
    conv.response_headers(1);
    conv.trailers(1, 0);
    for role in [Role::Server, Role::Client] {
        let mut c = Http2Connection::new(role, false);
        let mut out = Vec::new();
        for (i, (from, bytes)) in conv.writes.iter().enumerate() {
            // Capture bound of 1024 octets, with an 8-octet tail.
            let cap = bytes.len().min(1024);
            let s = Segment {
                direction: dir_of(role, *from),
                ts_ns: i as u64 + 1,
                data: &bytes[..cap],
                total_len: bytes.len() as u64,
                extents: if cap < bytes.len() {
                    Extents::test_tail(bytes, 8)
                } else {
                    Extents::EMPTY
                },
            };
            assert_eq!(c.on_segment(&s, &mut out), Verdict::Continue);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_body_size, n as u64);
        assert_eq!(out[0].grpc_status, Some(0));
        assert_eq!(out[0].flags, ExchangeFlags::default());
        assert_eq!(c.counters().sync_lost, 0);
    }
}

/// grpcio writes a large response as HEADERS + DATA + trailers in one `sendmsg`: past the
/// captured head, the trailers (and a WINDOW_UPDATE after the request's DATA) are only in the
/// capture's tail copy. With a tail long enough to hold them, they are read from it; with the
/// 8-octet tail they are lost, and that is a sync loss, never a wrong value.
#[test]
fn small_frames_after_large_data_are_read_from_the_tail() {
    let n = 64 * 1024;
    let mut conv = Conv::new(true).handshake();
    conv.grpc_request(1, "Big");
    let mut req = data_header(flags::END_STREAM, 1, n as u32);
    req.extend(grpc_msg(n - 5));
    req.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]));
    conv.push(From::Client, req);
    let mut resp = conv.block(
        From::Server,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    resp = frame(kind::HEADERS, flags::END_HEADERS, 1, &resp);
    resp.extend(data_header(0, 1, n as u32));
    resp.extend(grpc_msg(n - 5));
    resp.extend(conv.trailers_frame(1, 0));
    conv.push(From::Server, resp);
    conv.unary(3, "After", 0);
    for tail_len in [8usize, 64, 256] {
        for role in [Role::Server, Role::Client] {
            let mut c = Http2Connection::new(role, false);
            let mut out = Vec::new();
            for (i, (from, bytes)) in conv.writes.iter().enumerate() {
                let cap = bytes.len().min(1024);
                let s = Segment {
                    direction: dir_of(role, *from),
                    ts_ns: i as u64 + 1,
                    data: &bytes[..cap],
                    total_len: bytes.len() as u64,
                    extents: if cap < bytes.len() {
                        Extents::test_tail(bytes, tail_len)
                    } else {
                        Extents::EMPTY
                    },
                };
                assert_eq!(c.on_segment(&s, &mut out), Verdict::Continue);
            }
            if tail_len >= 64 {
                assert_eq!(out.len(), 2, "tail {tail_len} {role:?}: {out:?}");
                assert_eq!(out[0].target, "/pkg.Service/Big");
                assert_eq!(out[0].grpc_status, Some(0));
                assert_eq!(out[0].request_body_size, n as u64);
                assert_eq!(out[0].response_body_size, n as u64);
                assert_eq!(out[0].flags, ExchangeFlags::default());
                check_unary(&out[1], 3, "After", 0);
                assert_eq!(c.counters().sync_lost, 0);
            } else {
                // Lost in the gap: stream 1 never ends by itself, stream 3 still gets its
                // span (possibly partial), and nothing is guessed.
                assert_eq!(c.counters().sync_lost, 2, "tail {tail_len} {role:?}");
                assert!(out.iter().all(|e| e.stream_id != 1 || e.flags.incomplete));
                assert!(out.iter().all(|e| e.grpc_status.is_none_or(|g| g == 0)));
            }
        }
    }
}

/// What the kernel's frame walk (`beyla-rs-ebpf/src/h2walk.rs`) sends for one direction's
/// byte stream cut into syscalls of `chunks` octets with a `cap`-octet head: per syscall, the
/// head and, as extents, every part of a frame header or of a non-DATA payload's first
/// `H2_PAYLOAD_PREFIX` octets that lies past the head. `start` is where the first frame
/// header is (24 after the client preface).
fn kernel_view(
    stream: &[u8],
    start: usize,
    cap: usize,
    chunks: usize,
) -> Vec<(usize, usize, Vec<u8>)> {
    let mut ranges = Vec::new();
    let mut pos = start;
    while pos + 9 <= stream.len() {
        let len = u32::from_be_bytes([0, stream[pos], stream[pos + 1], stream[pos + 2]]) as usize;
        let prefix = if stream[pos + 3] == kind::DATA {
            usize::from(stream[pos + 4] & flags::PADDED != 0)
        } else {
            len.min(beyla_rs_common::H2_PAYLOAD_PREFIX)
        };
        ranges.push((pos, pos + 9 + prefix));
        pos += 9 + len;
    }
    let mut out = Vec::new();
    let mut c0 = 0;
    while c0 < stream.len() {
        let c1 = (c0 + chunks).min(stream.len());
        let head = (c1 - c0).min(cap);
        let mut ext = Vec::new();
        for &(a, b) in &ranges {
            let (a, b) = (a.max(c0 + head), b.min(c1));
            if a < b {
                ext.push(((a - c0) as u64, &stream[a..b]));
            }
        }
        out.push((c0, c1, Extents::encode(&ext)));
        c0 = c1;
    }
    out
}

/// A 1 MiB gRPC response is 64 DATA frames and the trailers; grpcio writes them in one
/// `sendmsg`, its peer reads them in 64 KiB chunks. With the kernel's frame walk every frame
/// header past the 1 KiB head arrives as an extent: both sides keep sync, the trailers give
/// the status, and the next call on the connection is exact.
#[test]
fn frame_headers_past_the_head_arrive_as_extents() {
    let n = 1 << 20;
    let mut conv = Conv::new(true).handshake();
    conv.grpc_request(1, "Big");
    conv.data(From::Client, 1, true, &grpc_msg(5));
    let mut resp = conv.block(
        From::Server,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    resp = frame(kind::HEADERS, flags::END_HEADERS, 1, &resp);
    for part in grpc_msg(n).chunks(16384) {
        resp.extend(frame(kind::DATA, 0, 1, part));
    }
    resp.extend(conv.trailers_frame(1, 0));
    conv.push(From::Server, resp);
    conv.unary(3, "After", 0);
    for role in [Role::Server, Role::Client] {
        for chunk in [65536usize, 4000, 1 << 24] {
            // Each direction's bytes as one stream, as the kernel walk sees it.
            let mut streams: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            let mut order = Vec::new();
            for (from, bytes) in &conv.writes {
                let k = usize::from(*from == From::Server);
                order.push((*from, streams[k].len(), streams[k].len() + bytes.len()));
                streams[k].extend_from_slice(bytes);
            }
            let views = [
                kernel_view(&streams[0], PREFACE.len(), 1024, chunk),
                kernel_view(&streams[1], 0, 1024, chunk),
            ];
            // Syscalls of each write: the writer's own cut (the reader's chunks when reading).
            let mut c = Http2Connection::new(role, false);
            let mut out = Vec::new();
            let mut ts = 0;
            // Next syscall of each direction: one is made once its first octet is written.
            let mut next = [0usize; 2];
            for (from, _, b) in order {
                let k = usize::from(from == From::Server);
                while let Some((c0, c1, ext)) = views[k].get(next[k]).filter(|v| v.0 < b) {
                    next[k] += 1;
                    ts += 1;
                    let data = &streams[k][*c0..*c1];
                    let s = Segment {
                        direction: dir_of(role, from),
                        ts_ns: ts,
                        data: &data[..data.len().min(1024)],
                        total_len: data.len() as u64,
                        extents: Extents::new(ext),
                    };
                    assert_eq!(c.on_segment(&s, &mut out), Verdict::Continue);
                }
            }
            assert_eq!(out.len(), 2, "{role:?} chunk {chunk}: {out:?}");
            assert_eq!(out[0].target, "/pkg.Service/Big");
            assert_eq!(out[0].grpc_status, Some(0));
            assert_eq!(out[0].response_body_size, n as u64 + 5);
            assert_eq!(out[0].flags, ExchangeFlags::default());
            check_unary(&out[1], 3, "After", 0);
            assert_eq!(c.counters().sync_lost, 0, "{role:?} chunk {chunk}");
        }
    }
}

/// What a connection holds between calls: after 100 unary gRPC calls (each request's
/// traceparent inserted into the client's dynamic table) and with none open, only the two
/// HPACK tables (bounded by the negotiated 4096-octet size) and small buffers remain.
#[test]
fn memory_estimate_of_an_idle_grpc_connection() {
    let mut conv = Conv::new(true).handshake();
    for i in 0..100 {
        conv.unary(2 * i + 1, "Get", 0);
    }
    let (c, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 100);
    let mem = c.memory_estimate();
    eprintln!("Http2Connection::memory_estimate after 100 unary calls: {mem} bytes");
    assert!(mem < 16 * 1024, "{mem}");
    assert!(mem <= MAX_CONNECTION_MEMORY);
}

/// h2c upgrade (RFC 7540 §3.2): the HTTP/1.1 request is stream 1; its response comes in
/// HTTP/2 after the server's SETTINGS, and later requests are ordinary streams.
#[test]
fn h2c_upgraded_request_is_stream_1() {
    for role in [Role::Server, Role::Client] {
        let request = HttpExchange {
            protocol: Some(Protocol::Http1),
            method: "GET".into(),
            target: "/up?x=1".into(),
            authority: Some("h:80".into()),
            scheme: None,
            status: None,
            grpc_status: None,
            content_type: None,
            traceparent: None,
            tracestate: None,
            start_ns: 5,
            end_ns: 5,
            request_body_size: 0,
            response_body_size: 0,
            stream_id: 0,
            flags: ExchangeFlags::default(),
        };
        let mut c = Http2Connection::upgraded(role, request);
        let mut conv = Conv::new(false);
        // Server preface and the response to the upgrade request, in one write.
        let mut w = settings(&[(0x3, 100)]);
        w.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS,
            1,
            &conv.server.encode(&[(":status", "200")]),
        ));
        w.extend(frame(kind::DATA, flags::END_STREAM, 1, b"hello\n"));
        let resp = opposite(role.request_direction());
        let req = role.request_direction();
        let mut out = Vec::new();
        assert_eq!(
            c.on_segment(&seg(resp, 10, &w), &mut out),
            Verdict::Continue
        );
        // Then the client's preface and a second request on stream 3.
        let mut w2 = PREFACE.to_vec();
        w2.extend(settings(&[]));
        w2.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            3,
            &conv.client.encode(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/next"),
                (":authority", "h:80"),
            ]),
        ));
        assert_eq!(
            c.on_segment(&seg(req, 20, &w2), &mut out),
            Verdict::Continue
        );
        let w3 = frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            3,
            &conv.server.encode(&[(":status", "404")]),
        );
        assert_eq!(
            c.on_segment(&seg(resp, 30, &w3), &mut out),
            Verdict::Continue
        );
        assert_eq!(out.len(), 2, "{role:?}: {out:?}");
        assert_eq!(out[0].target, "/up?x=1");
        assert_eq!(out[0].protocol, Some(Protocol::Http2));
        assert_eq!(out[0].status, Some(200));
        assert_eq!(out[0].response_body_size, 6);
        assert_eq!((out[0].start_ns, out[0].end_ns), (5, 10));
        assert_eq!(out[0].stream_id, 1);
        assert_eq!(out[0].flags, ExchangeFlags::default());
        assert_eq!(out[1].target, "/next");
        assert_eq!(out[1].status, Some(404));
        assert_eq!(c.open_streams(), 0);
    }
}

#[test]
fn data_frames_many_per_segment_and_large_across_segments() {
    // A 1 MiB DATA frame written in 16 syscalls of 64 KiB, each captured to 1024 octets,
    // followed in the last syscall by the trailers HEADERS... which then is uncaptured; so
    // the trailers go in their own syscall, as real servers do.
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "Warmup", 0);
    conv.grpc_request(3, "Download");
    conv.data(From::Client, 3, true, &grpc_msg(3));
    conv.response_headers(3);
    let writes_before = conv.writes.clone();
    let n: usize = 1 << 20;
    let mut big = data_header(0, 3, n as u32);
    big.extend(vec![0u8; n]);
    let mut c = Http2Connection::new(Role::Client, false);
    let mut out = Vec::new();
    for (i, (from, bytes)) in writes_before.iter().enumerate() {
        c.on_segment(&seg(dir_of(Role::Client, *from), i as u64, bytes), &mut out);
    }
    for (i, chunk) in big.chunks(64 * 1024).enumerate() {
        let s = Segment {
            direction: Direction::Ingress,
            ts_ns: 100 + i as u64,
            data: &chunk[..chunk.len().min(1024)],
            total_len: chunk.len() as u64,
            extents: Extents::test_tail(chunk, 8),
        };
        c.on_segment(&s, &mut out);
    }
    conv.writes.clear();
    conv.trailers(3, 0);
    let t = conv.writes[0].1.clone();
    c.on_segment(&seg(Direction::Ingress, 500, &t), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].response_body_size, n as u64);
    assert_eq!(out[1].end_ns, 500);
    assert_eq!(c.counters().sync_lost, 0);
}

#[test]
fn server_streaming_many_data_frames() {
    let mut conv = Conv::new(true).handshake();
    conv.grpc_request(1, "Watch");
    conv.data(From::Client, 1, true, &grpc_msg(4));
    conv.response_headers(1);
    for _ in 0..200 {
        conv.data(From::Server, 1, false, &grpc_msg(100));
    }
    conv.push(
        From::Client,
        frame(kind::WINDOW_UPDATE, 0, 1, &[0, 0, 0x40, 0]),
    );
    conv.push(From::Client, frame(kind::PING, 0, 0, &[7; 8]));
    conv.push(From::Server, frame(kind::PING, flags::ACK, 0, &[7; 8]));
    conv.trailers(1, 0);
    let last = conv.writes.len() as u64;
    let (_, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_body_size, 200 * 105);
    assert_eq!(out[0].start_ns, 4000);
    assert_eq!(out[0].end_ns, 1000 * last);
    assert_eq!(out[0].grpc_status, Some(0));
}

#[test]
fn bidi_and_client_streaming() {
    let mut conv = Conv::new(false).handshake();
    conv.grpc_request(1, "Chat");
    conv.response_headers(1);
    for i in 0..20 {
        conv.data(From::Client, 1, false, &grpc_msg(i));
        conv.data(From::Server, 1, false, &grpc_msg(2 * i));
    }
    // Client half-closes with request trailers-less END_STREAM on an empty DATA frame.
    conv.data(From::Client, 1, true, &[]);
    conv.data(From::Server, 1, false, &grpc_msg(1));
    conv.trailers(1, 0);
    // Client streaming: request END_STREAM long after, response only at the end.
    conv.grpc_request(3, "Upload");
    for _ in 0..10 {
        conv.data(From::Client, 3, false, &grpc_msg(8));
    }
    conv.data(From::Client, 3, true, &grpc_msg(8));
    conv.response_headers(3);
    conv.data(From::Server, 3, false, &grpc_msg(2));
    conv.trailers(3, 0);
    let n = conv.writes.len() as u64;
    let (_, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].target, "/pkg.Service/Chat");
    assert_eq!(
        out[0].request_body_size,
        (0..20).map(|i| i + 5).sum::<u64>()
    );
    assert_eq!(
        out[0].response_body_size,
        (0..20).map(|i| 2 * i + 5).sum::<u64>() + 6
    );
    assert_eq!(out[1].target, "/pkg.Service/Upload");
    assert_eq!(out[1].request_body_size, 11 * 13);
    assert_eq!(out[1].end_ns, 1000 * n);
    assert!(out[1].end_ns - out[1].start_ns >= 14_000);
}

#[test]
fn fifty_concurrent_interleaved_streams() {
    for role in [Role::Server, Role::Client] {
        let mut conv = Conv::new(true).handshake();
        let ids: Vec<u32> = (0..60).map(|i| 2 * i + 1).collect();
        for &id in &ids {
            conv.grpc_request(id, &format!("M{id}"));
        }
        for &id in &ids {
            conv.data(From::Client, id, true, &grpc_msg(id as usize));
        }
        // Responses in a scrambled order, frames of different streams interleaved.
        let mut order = ids.clone();
        order.sort_by_key(|id| (id * 37) % 61);
        for &id in &order {
            conv.response_headers(id);
        }
        for &id in order.iter().rev() {
            conv.data(From::Server, id, false, &grpc_msg(1));
        }
        for &id in &order {
            conv.trailers(id, id % 17);
        }
        // Coalesce: several frames per syscall, in each direction.
        let mut merged: Vec<(From, Vec<u8>)> = Vec::new();
        for (f, b) in conv.writes {
            match merged.last_mut() {
                Some((lf, lb)) if *lf == f && lb.len() < 3000 => lb.extend(b),
                _ => merged.push((f, b)),
            }
        }
        let (c, out) = run_writes(role, false, &merged);
        assert_eq!(out.len(), ids.len());
        assert_eq!(c.open_streams(), 0);
        let mut seen: Vec<u32> = out.iter().map(|e| e.stream_id).collect();
        seen.sort();
        assert_eq!(seen, ids);
        for e in &out {
            let id = e.stream_id;
            assert_eq!(e.target, format!("/pkg.Service/M{id}"));
            assert_eq!(e.grpc_status, Some(id % 17));
            assert_eq!(e.request_body_size, u64::from(id) + 5);
            assert_eq!(e.response_body_size, 6);
            assert_eq!(e.status, Some(200));
            assert!(!e.flags.partial && !e.flags.incomplete);
        }
    }
}

#[test]
fn rst_stream_and_goaway_end_streams_incomplete() {
    let mut conv = Conv::new(false).handshake();
    conv.grpc_request(1, "A");
    conv.grpc_request(3, "B");
    conv.grpc_request(5, "C");
    conv.grpc_request(7, "D");
    conv.push(From::Client, frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    conv.response_headers(3);
    conv.push(From::Server, frame(kind::RST_STREAM, 0, 3, &[0, 0, 0, 2]));
    let mut goaway = 5u32.to_be_bytes().to_vec();
    goaway.extend([0, 0, 0, 0]);
    goaway.extend(b"shutting down");
    conv.push(From::Server, frame(kind::GOAWAY, 0, 0, &goaway));
    let (mut c, mut out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].stream_id, 1);
    assert!(out[0].flags.incomplete);
    assert_eq!(out[0].end_ns, 8000);
    assert_eq!(out[1].stream_id, 3);
    assert_eq!(out[1].status, Some(200));
    assert!(out[1].flags.incomplete);
    assert_eq!(out[2].stream_id, 7);
    assert!(out[2].flags.incomplete);
    assert_eq!(c.counters().resets, 2);
    assert_eq!(c.counters().goaways, 1);
    assert_eq!(c.open_streams(), 1);
    c.on_close(99_000, &mut out);
    assert_eq!(out.len(), 4);
    assert_eq!(out[3].stream_id, 5);
    assert!(out[3].flags.incomplete);
    assert_eq!(out[3].end_ns, 99_000);
    assert_eq!(c.open_streams(), 0);
}

#[test]
fn trailers_only_error() {
    let mut conv = Conv::new(true).handshake();
    conv.grpc_request(1, "Missing");
    conv.data(From::Client, 1, true, &grpc_msg(1));
    conv.headers(
        From::Server,
        1,
        true,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-message", "unavailable"),
        ],
    );
    let (_, out) = run_writes(Role::Client, false, &conv.writes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, Some(200));
    assert_eq!(out[0].grpc_status, Some(14));
    assert_eq!(out[0].response_body_size, 0);
    assert!(!out[0].flags.incomplete);
}

#[test]
fn plain_http2_request_and_interim_response() {
    let mut conv = Conv::new(false).handshake();
    conv.headers(
        From::Client,
        1,
        true,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/items?id=3"),
            (":authority", "localhost:8080"),
            ("accept", "*/*"),
            ("cookie", "session=abc"),
        ],
    );
    conv.headers(From::Server, 1, false, &[(":status", "103")]);
    conv.headers(
        From::Server,
        1,
        false,
        &[(":status", "404"), ("content-type", "text/plain")],
    );
    conv.data(From::Server, 1, true, b"not found");
    let (_, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.protocol, Some(Protocol::Http2));
    assert_eq!(e.method, "GET");
    assert_eq!(e.target, "/items?id=3");
    assert_eq!(e.status, Some(404));
    assert_eq!(e.content_type, None);
    assert_eq!(e.response_body_size, 9);
}

#[test]
fn table_size_update_and_settings_header_table_size() {
    // The server advertises a 256-octet table (SETTINGS, ACKed by the client): the client
    // encoder must signal it and evicts constantly.
    let mut conv = Conv::new(false);
    let mut c = PREFACE.to_vec();
    c.extend(settings(&[]));
    conv.push(From::Client, c);
    let mut s = settings(&[(0x1, 256)]);
    s.extend(settings_ack());
    conv.push(From::Server, s);
    conv.push(From::Client, settings_ack());
    conv.client.size_update(256);
    for i in 0..20u32 {
        conv.unary(2 * i + 1, &format!("Method{}", i % 3), 0);
    }
    // Then the client shrinks to 0 (clearing) and grows back to 128.
    conv.client.size_update(0);
    conv.unary(41, "AfterClear", 0);
    conv.client.size_update(128);
    conv.unary(43, "Regrow", 0);
    let (c, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 22);
    for e in &out {
        assert!(!e.flags.partial, "{e:?}");
        assert!(e.target.starts_with("/pkg.Service/"));
    }
    assert_eq!(out[20].target, "/pkg.Service/AfterClear");
    let table = c.conn.dirs[dir_index(Direction::Ingress)].decoder.table();
    assert_eq!(table.limit(), 256);
    assert_eq!(table.max_size(), 128);
    assert!(table.size() <= 128);
    assert_eq!(c.counters().hpack_errors, 0);
}

#[test]
fn continuation_frames() {
    let mut conv = Conv::new(true).handshake();
    let block = conv.block(
        From::Client,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/pkg.Service/Big"),
            (":authority", "backend:50051"),
            ("content-type", "application/grpc+proto"),
            ("x-big", &"v".repeat(300)),
            ("tracestate", "vendor=value"),
        ],
    );
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(100);
    let mut w = frame(kind::HEADERS, 0, 1, a);
    w.extend(frame(kind::CONTINUATION, 0, 1, b));
    conv.push(From::Client, w);
    conv.push(
        From::Client,
        frame(kind::CONTINUATION, flags::END_HEADERS, 1, c),
    );
    conv.data(From::Client, 1, true, &grpc_msg(1));
    conv.response_headers(1);
    // Response trailers split with CONTINUATION too.
    let t = conv.block(From::Server, &[("grpc-status", "3")]);
    let mut w = frame(kind::HEADERS, flags::END_STREAM, 1, &t[..1]);
    w.extend(frame(kind::CONTINUATION, flags::END_HEADERS, 1, &t[1..]));
    conv.push(From::Server, w);
    let (_, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].protocol, Some(Protocol::Grpc));
    assert_eq!(out[0].target, "/pkg.Service/Big");
    assert_eq!(out[0].tracestate.as_deref(), Some("vendor=value"));
    assert_eq!(out[0].grpc_status, Some(3));
    assert_eq!(out[0].start_ns, 4000);
    assert!(!out[0].flags.partial);
}

#[test]
fn padded_and_priority_flags() {
    let mut conv = Conv::new(false).handshake();
    let block = conv.block(
        From::Client,
        &[
            (":method", "POST"),
            (":path", "/pkg.Service/Pad"),
            (":scheme", "http"),
            ("content-type", "application/grpc"),
        ],
    );
    let mut p = vec![6u8]; // pad length
    p.extend([0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 15
    p.extend(&block);
    p.extend([0u8; 6]);
    conv.push(
        From::Client,
        frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::PADDED | flags::PRIORITY,
            1,
            &p,
        ),
    );
    let mut d = vec![3u8];
    d.extend(grpc_msg(10));
    d.extend([0u8; 3]);
    conv.push(
        From::Client,
        frame(kind::DATA, flags::PADDED | flags::END_STREAM, 1, &d),
    );
    conv.push(From::Client, frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 1]));
    conv.response_headers(1);
    conv.trailers(1, 0);
    let (_, out) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].target, "/pkg.Service/Pad");
    assert_eq!(out[0].request_body_size, 15);
    assert!(!out[0].flags.partial);
}

#[test]
fn joined_midway_unknown_dynamic_index_is_partial_not_wrong() {
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "Get", 0);
    conv.unary(3, "Get", 0);
    let skip = conv.writes.len();
    // From here the daemon watches. Stream 5 reuses dynamic entries (path, authority,
    // content-type...) defined before it joined.
    conv.unary(5, "Get", 0);
    // A new method: :path is a literal with an indexed (static) name: known.
    conv.unary(7, "Fresh", 4);
    // Stream 9 reuses the path inserted by stream 7, which the daemon saw.
    conv.unary(9, "Fresh", 0);
    let (c, out) = run_writes(Role::Server, true, &conv.writes[skip..]);
    assert_eq!(out.len(), 3);
    let e5 = &out[0];
    assert_eq!(e5.stream_id, 5);
    assert!(e5.flags.partial);
    assert_eq!(e5.method, "POST"); // static table index 3
    assert_eq!(e5.target, ""); // dynamic, unknown: not guessed
    // content-type, the response's content-type and grpc-status were all dynamic entries
    // from before the join: gRPC cannot be asserted, so it is not.
    assert_eq!(e5.protocol, Some(Protocol::Http2));
    assert_eq!(e5.grpc_status, None);
    let e7 = &out[1];
    assert_eq!(e7.target, "/pkg.Service/Fresh");
    assert!(e7.flags.partial); // content-type etc. still from before the join
    // "grpc-status: 4" is a literal whose *name* is a dynamic entry from before the join.
    assert_eq!(e7.grpc_status, None);
    let e9 = &out[2];
    assert_eq!(e9.target, "/pkg.Service/Fresh");
    // Field lines that hit the unknown part of a table: each request's :authority,
    // content-type, user-agent, te and the name of its new traceparent (5 × 3), stream 5's
    // :path (1); each response's content-type, grpc-status (entry or name) and grpc-message
    // (3 × 3). 15 + 1 + 9.
    assert_eq!(c.counters().unknown_dynamic_refs, 25);
    for e in &out {
        assert!(e.target.is_empty() || e.target.starts_with("/pkg.Service/"));
        assert_ne!(e.target, "/pkg.Service/Get");
    }
}

#[test]
fn joined_midway_at_connection_start_is_exact() {
    // The daemon flags the connection as joined mid-way but sees the preface: nothing is
    // unknown.
    let mut conv = Conv::new(true).handshake();
    conv.unary(1, "A", 0);
    conv.unary(3, "A", 0);
    let (c, out) = run_writes(Role::Server, true, &conv.writes);
    assert_eq!(out.len(), 2);
    for e in &out {
        assert!(!e.flags.partial, "{e:?}");
        check_unary(e, e.stream_id, "A", 0);
    }
    assert!(c.hpack_synced(Direction::Ingress) && c.hpack_synced(Direction::Egress));
}

#[test]
fn joined_midway_resyncs_after_size_update_to_zero() {
    let mut conv = Conv::new(true).handshake();
    conv.unary(1, "Old", 0);
    let skip = conv.writes.len();
    conv.client.size_update(0);
    conv.client.size_update(4096);
    conv.unary(3, "Old", 0);
    let (c, out) = run_writes(Role::Server, true, &conv.writes[skip..]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].target, "/pkg.Service/Old");
    assert!(!out[0].flags.partial || out[0].grpc_status.is_none());
    assert!(c.hpack_synced(Direction::Ingress));
}

#[test]
fn truncated_header_block_is_partial_and_desyncs() {
    let mut conv = Conv::new(false).handshake();
    conv.grpc_request(1, "Big");
    // Header block larger than the capture: an enormous cookie after the known fields.
    let big = "c".repeat(3000);
    conv.headers(
        From::Client,
        3,
        true,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/pkg.Service/Huge"),
            ("cookie", &big),
            ("x-after", "inserted-but-unseen"),
        ],
    );
    // Stream 5 reuses the dynamic entry for x-after (unknowable) and the :path of stream 1
    // (also unknowable now: the unseen part shifted the indexes).
    conv.headers(
        From::Client,
        5,
        true,
        &[
            (":method", "POST"),
            (":path", "/pkg.Service/Big"),
            ("x-after", "inserted-but-unseen"),
        ],
    );
    for id in [1, 3, 5] {
        conv.response_headers(id);
        conv.trailers(id, 0);
    }
    let mut c = Http2Connection::new(Role::Server, false);
    let mut out = Vec::new();
    for (i, (from, bytes)) in conv.writes.iter().enumerate() {
        let cap = bytes.len().min(1024);
        let s = Segment {
            direction: dir_of(Role::Server, *from),
            ts_ns: i as u64,
            data: &bytes[..cap],
            total_len: bytes.len() as u64,
            extents: Extents::EMPTY,
        };
        c.on_segment(&s, &mut out);
    }
    assert_eq!(out.len(), 3);
    assert!(!out[0].flags.partial);
    assert_eq!(out[1].stream_id, 3);
    assert!(out[1].flags.partial);
    assert_eq!(out[1].target, "/pkg.Service/Huge"); // decoded from the captured prefix
    assert_eq!(out[2].stream_id, 5);
    assert!(out[2].flags.partial);
    assert_eq!(out[2].method, "POST");
    assert_eq!(out[2].target, "");
    assert_eq!(c.counters().truncated_header_blocks, 1);
    assert!(!c.hpack_synced(Direction::Ingress));
}

#[test]
fn lost_frame_sync_recovers_at_next_segment() {
    // A syscall carrying a DATA frame and the trailers HEADERS, captured to 64 octets: the
    // trailers' header is never seen. The next syscalls start on frame boundaries.
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "A", 0);
    let setup = conv.writes.len();
    conv.grpc_request(3, "B");
    conv.data(From::Client, 3, true, &grpc_msg(1));
    conv.response_headers(3);
    let mut w = frame(kind::DATA, 0, 3, &grpc_msg(500));
    conv.writes.clear();
    conv.trailers(3, 0);
    w.extend(&conv.writes[0].1);
    let mut c = Http2Connection::new(Role::Server, false);
    let mut out = Vec::new();
    let mut all = Conv::new(false).handshake();
    all.unary(1, "A", 0);
    all.grpc_request(3, "B");
    all.data(From::Client, 3, true, &grpc_msg(1));
    all.response_headers(3);
    for (i, (from, bytes)) in all.writes.iter().enumerate() {
        c.on_segment(&seg(dir_of(Role::Server, *from), i as u64, bytes), &mut out);
    }
    assert_eq!(out.len(), setup - 3 - 4);
    let s = Segment {
        direction: Direction::Egress,
        ts_ns: 100,
        data: &w[..64],
        total_len: w.len() as u64,
        extents: Extents::test_tail(&w, 8),
    };
    c.on_segment(&s, &mut out);
    assert_eq!(c.counters().sync_lost, 1);
    assert_eq!(c.open_streams(), 1);
    c.on_segment(
        &seg(Direction::Egress, 101, &frame(kind::PING, 0, 0, &[1; 8])),
        &mut out,
    );
    assert_eq!(c.counters().resyncs, 1);
    c.on_close(200, &mut out);
    assert_eq!(out.len(), 2);
    assert!(out[1].flags.incomplete);
}

#[test]
fn stream_limit_drops_oldest_and_counts() {
    let mut conv = Conv::new(false).handshake();
    for i in 0..(MAX_STREAMS as u32 + 10) {
        conv.grpc_request(2 * i + 1, "Open");
    }
    let (c, _) = run_writes(Role::Server, false, &conv.writes);
    assert_eq!(c.open_streams(), MAX_STREAMS);
    assert_eq!(c.counters().streams_dropped, 10);
    assert!(c.memory_estimate() <= MAX_CONNECTION_MEMORY);
}

/// Tiny deterministic generator for garbage.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn garbage_is_not_http2_without_panic() {
    let mut seed = 42u64;
    for round in 0..200 {
        let midway = round % 2 == 0;
        let mut c = Http2Connection::new(Role::Server, midway);
        let mut out = Vec::new();
        let mut verdict = Verdict::Continue;
        for i in 0..100 {
            let len = (lcg(&mut seed) % 2000) as usize;
            let data: Vec<u8> = (0..len).map(|_| lcg(&mut seed) as u8).collect();
            let cap = data.len().min(1024);
            let s = Segment {
                direction: if i % 3 == 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                ts_ns: i,
                data: &data[..cap],
                total_len: data.len() as u64,
                extents: Extents::EMPTY,
            };
            verdict = c.on_segment(&s, &mut out);
            assert!(c.memory_estimate() <= MAX_CONNECTION_MEMORY);
            if verdict == Verdict::Reject {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Reject, "round {round}");
    }
    // HTTP/1.1 on a fresh connection.
    let mut c = Http2Connection::new(Role::Server, false);
    let mut out = Vec::new();
    assert_eq!(
        c.on_segment(
            &seg(Direction::Ingress, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            &mut out
        ),
        Verdict::Reject
    );
}

#[test]
fn looks_like_http2_detection() {
    assert!(looks_like_http2(PREFACE));
    assert!(looks_like_http2(&PREFACE[..10]));
    let mut s = settings(&[(0x3, 100)]);
    s.extend(settings_ack());
    assert!(looks_like_http2(&s));
    assert!(!looks_like_http2(b"HTTP/1.1 200 OK\r\n"));
    assert!(!looks_like_http2(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 0, 0
    ]));
}

#[test]
fn preface_split_across_segments_and_absent() {
    let mut conv = Conv::new(false).handshake();
    conv.unary(1, "A", 0);
    let (req, resp) = streams(&conv.writes);
    for k in 0..=PREFACE.len() {
        let mut c = Http2Connection::new(Role::Client, false);
        let mut out = Vec::new();
        c.on_segment(&seg(Direction::Egress, 1, &req[..k]), &mut out);
        c.on_segment(&seg(Direction::Egress, 2, &req[k..]), &mut out);
        c.on_segment(&seg(Direction::Ingress, 3, &resp), &mut out);
        assert_eq!(out.len(), 1, "k={k}");
    }
    // Handed over after the preface (the HTTP/1 parser consumed it).
    let mut c = Http2Connection::new(Role::Client, false);
    let mut out = Vec::new();
    c.on_segment(&seg(Direction::Egress, 1, &req[PREFACE.len()..]), &mut out);
    c.on_segment(&seg(Direction::Ingress, 3, &resp), &mut out);
    assert_eq!(out.len(), 1);
}
