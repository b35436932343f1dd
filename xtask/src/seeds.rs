//! `cargo xtask fuzz-seeds [--check] [--dir DIR]`: writes the seed inputs of the HTTP/2 fuzz
//! targets (`http2_frames`, `hpack`) into `beyla-rs/fuzz/corpus/<target>/` (or `DIR/corpus/…`).
//! With `--check` it writes nothing and fails when a checked-in seed differs from what it
//! would write (a changed encoder or conversation that was not re-seeded).
//!
//! The seeds are realistic conversations: a gRPC handshake, unary calls and a server stream,
//! in every role and capture-bound configuration the `http2_frames` target knows, plus HPACK
//! blocks including RFC 7541 C.4 and C.6. Header blocks are encoded by the HPACK encoder the
//! parser's tests use, compiled here from the daemon's sources (as the fuzz targets compile
//! the parsers): the seeds and the tests agree on every byte. Input layouts: see the doc
//! comments of `beyla-rs/fuzz/fuzz_targets/{http2_frames,hpack}.rs`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

#[allow(dead_code)]
#[path = "../../beyla-rs/src/protocol/http2/hpack/huffman.rs"]
mod huffman;
#[allow(dead_code)]
#[path = "../../beyla-rs/src/protocol/http2/hpack/table.rs"]
mod table;
#[allow(dead_code)]
#[path = "../../beyla-rs/src/protocol/http2/hpack/test_encoder.rs"]
mod test_encoder;

use test_encoder::Encoder;

/// RFC 9113 §3.4: the client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// RFC 9113 §6: frame types and flags used here.
mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const SETTINGS: u8 = 0x4;
    pub const WINDOW_UPDATE: u8 = 0x8;
}
mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

fn frame(k: u8, fl: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.push(k);
    v.push(fl);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
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

/// gRPC length-prefixed message of `n` octets.
fn grpc_msg(n: usize) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend(std::iter::repeat_n(0x2a, n));
    v
}

/// Which endpoint wrote the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Client,
    Server,
}

/// Both directions of a conversation as a list of writes (the builder of the parser's tests,
/// `beyla-rs/src/protocol/http2/tests.rs`, reduced to what the seeds use).
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
        self.writes.push((From::Client, c));
        let mut s = settings(&[(0x3, 100), (0x5, 16384)]);
        s.extend(frame(kind::SETTINGS, flags::ACK, 0, &[]));
        self.writes.push((From::Server, s));
        self.writes
            .push((From::Client, frame(kind::SETTINGS, flags::ACK, 0, &[])));
        self
    }

    fn headers(&mut self, from: From, stream: u32, end_stream: bool, fields: &[(&str, &str)]) {
        let block = match from {
            From::Client => self.client.encode(fields),
            From::Server => self.server.encode(fields),
        };
        let fl = flags::END_HEADERS | if end_stream { flags::END_STREAM } else { 0 };
        self.writes
            .push((from, frame(kind::HEADERS, fl, stream, &block)));
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
    fn trailers(&mut self, stream: u32, code: u32) {
        let c = code.to_string();
        self.headers(
            From::Server,
            stream,
            true,
            &[("grpc-status", &c), ("grpc-message", "")],
        );
    }

    fn data(&mut self, from: From, stream: u32, end_stream: bool, payload: &[u8]) {
        let fl = if end_stream { flags::END_STREAM } else { 0 };
        self.writes
            .push((from, frame(kind::DATA, fl, stream, payload)));
    }

    fn unary(&mut self, stream: u32, method: &str, code: u32) {
        self.grpc_request(stream, method);
        self.data(From::Client, stream, true, &grpc_msg(10));
        self.response_headers(stream);
        self.data(From::Server, stream, false, &grpc_msg(20));
        self.trailers(stream, code);
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex literal"))
        .collect()
}

/// Every seed: path relative to the corpus directory → content.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut convs = Vec::new();
    let mut conv = Conv::new(true).handshake();
    conv.unary(1, "Get", 0);
    conv.unary(3, "Put", 14);
    convs.push(("unary", conv));
    let mut conv = Conv::new(false).handshake();
    conv.grpc_request(1, "Watch");
    conv.response_headers(1);
    for _ in 0..5 {
        conv.data(From::Server, 1, false, &grpc_msg(30));
    }
    conv.trailers(1, 0);
    convs.push(("stream", conv));
    // http2_frames: config byte (bit 0 client role, bit 1 joined mid-way), capture-bound
    // selector, then per write: direction bit, big-endian u16 length, the bytes.
    for (name, conv) in &convs {
        for (config, bound, suffix) in [
            (0u8, 0u8, "server"),
            (1, 0, "client"),
            (2, 0, "midway"),
            (0, 4, "server_cap64"),
            (3, 6, "client_midway_cap1024"),
        ] {
            let mut input = vec![config, bound];
            for (from, bytes) in &conv.writes {
                input.push(u8::from(*from == From::Server));
                input.extend((bytes.len() as u16).to_be_bytes());
                input.extend(bytes);
            }
            out.insert(format!("http2_frames/{name}_{suffix}"), input);
        }
    }
    // hpack: config byte (table size selector << 2), then length-prefixed header blocks. The
    // two request blocks of one encoder: the second indexes what the first inserted. (Named
    // "unary" as it always was.)
    let mut enc = Encoder::new(true);
    let mut input = vec![0u8];
    for fields in [
        vec![(":method", "POST"), (":path", "/a.B/C"), ("te", "trailers")],
        vec![(":method", "POST"), (":path", "/a.B/C"), ("x", "y")],
    ] {
        let b = enc.encode(&fields);
        input.extend((b.len() as u16).to_be_bytes());
        input.extend(b);
    }
    out.insert("hpack/unary".to_owned(), input);
    // RFC 7541 C.4 requests and C.6 responses (table limit 256: config selector 2).
    for (name, cfg, blocks) in [
        (
            "rfc7541_c4",
            0u8,
            vec![
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ),
        (
            "rfc7541_c6",
            2 << 2,
            vec![
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
            ],
        ),
    ] {
        let mut input = vec![cfg];
        for b in blocks {
            let b = hex(b);
            input.extend((b.len() as u16).to_be_bytes());
            input.extend(b);
        }
        out.insert(format!("hpack/{name}"), input);
    }
    out
}

/// Writes (or with `check`, compares) every seed under `corpus`; returns what differed.
fn sync(corpus: &Path, check: bool) -> Result<Vec<String>> {
    let mut differ = Vec::new();
    for (rel, bytes) in seeds() {
        let path = corpus.join(&rel);
        let same = std::fs::read(&path).is_ok_and(|old| old == bytes);
        if same {
            continue;
        }
        differ.push(rel.clone());
        if !check {
            let dir = path.parent().context("seed path has a parent")?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
    }
    Ok(differ)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut check = false;
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--dir" => dir = Some(it.next().context("--dir needs a directory")?.into()),
            other => bail!("fuzz-seeds: unknown argument {other:?} (--check, --dir DIR)"),
        }
    }
    let fuzz = dir.unwrap_or_else(|| crate::workspace_root().join("beyla-rs/fuzz"));
    let corpus = fuzz.join("corpus");
    let differ = sync(&corpus, check)?;
    let total = seeds().len();
    if check {
        if !differ.is_empty() {
            bail!(
                "{} of {total} seeds in {} differ from what `cargo xtask fuzz-seeds` writes: \
                 {differ:?}",
                differ.len(),
                corpus.display()
            );
        }
        println!("all {total} seeds in {} are current", corpus.display());
    } else {
        println!(
            "{} of {total} seeds written to {} ({} already current)",
            differ.len(),
            corpus.display(),
            total - differ.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in corpus is what the generator writes.
    #[test]
    fn checked_in_seeds_are_current() {
        let corpus = crate::workspace_root().join("beyla-rs/fuzz/corpus");
        assert_eq!(sync(&corpus, true).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn writes_every_seed_and_then_has_nothing_to_do() {
        let dir = std::env::temp_dir().join(format!("beyla-seeds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = sync(&dir, false).unwrap();
        assert_eq!(first.len(), seeds().len());
        assert_eq!(first.len(), 13);
        assert!(sync(&dir, true).unwrap().is_empty());
        std::fs::write(dir.join("hpack/unary"), b"changed").unwrap();
        assert_eq!(sync(&dir, true).unwrap(), ["hpack/unary"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
