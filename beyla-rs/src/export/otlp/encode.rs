//! `ExportTraceServiceRequest` protobuf bytes straight from [`SpanRecord`]s.
//!
//! The SDK path cloned every span into `SpanData`, then every key and value into a `String` of
//! a prost struct, then encoded that: most of the daemon's CPU per request. Here each field is
//! written once into one reusable buffer. Protobuf length prefixes come before the bytes they
//! measure, so every message is sized first (cheap arithmetic over the same fields) and then
//! written; sizing and writing walk the fields in the same order, which the tests check by
//! decoding the result with the generated prost types.
//!
//! Field numbers are those of opentelemetry-proto's generated code
//! (`opentelemetry.proto.{collector.trace,trace,common,resource}.v1`). The output matches what
//! opentelemetry-otlp's conversion produced: a `Status` on every span (empty when unset),
//! `flags` = sampled | "context has is-remote" | "is remote" for remote parents, no
//! `parent_span_id` for roots, zero timestamps omitted.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, KeyValue, Value,
    trace::{SpanId, SpanKind},
};
use prost::encoding::{WireType, encoded_len_varint};

use crate::span::SpanRecord;

// ExportTraceServiceRequest
const REQUEST_RESOURCE_SPANS: u32 = 1;
// ResourceSpans
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
// Resource
const RESOURCE_ATTRIBUTES: u32 = 1;
// ScopeSpans
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
// InstrumentationScope
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
// Span
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
// Status
const STATUS_CODE: u32 = 3;
const STATUS_CODE_ERROR: u64 = 2;
// KeyValue
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
// AnyValue (a oneof: a set member is written even when it holds the default value)
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
// ArrayValue
const ARRAY_VALUES: u32 = 1;

/// `SpanFlags`: W3C sampled (every exported span is sampled).
const FLAG_SAMPLED: u32 = 0x01;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the SDK sets it on every span.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: the parent came from another process.
const FLAG_IS_REMOTE: u32 = 0x200;

const TRACE_ID_LEN: usize = 16;
const SPAN_ID_LEN: usize = 8;

/// A base-128 varint. Nearly every value written here (keys, lengths of attributes and
/// spans, status codes) is below 2^14: those take one or two pushes instead of prost's
/// general loop, which was the encoder's largest single cost.
#[inline]
fn encode_varint(v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
    } else if v < 0x4000 {
        buf.extend_from_slice(&[(v as u8) | 0x80, (v >> 7) as u8]);
    } else {
        prost::encoding::encode_varint(v, buf);
    }
}

#[inline]
fn encode_key(tag: u32, wire: WireType, buf: &mut Vec<u8>) {
    encode_varint((u64::from(tag) << 3) | wire as u64, buf);
}

/// Tags below 16 have a one-byte key; `flags` (16) takes two.
const fn key_len(tag: u32) -> usize {
    encoded_len_varint((tag as u64) << 3)
}

/// A length-delimited field holding `len` bytes: key, length, payload.
const fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_delimited_header(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

/// A proto3 string field: absent when empty, as prost writes it.
fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

fn put_string_field(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, tag, s.as_bytes());
    }
}

/// Unix nanoseconds; before the epoch counts as 0, as the SDK's `to_nanos`.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn fixed64_field_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_fixed64_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn kind_number(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// An `AnyValue` borrowed from a [`Value`] or from one element of an [`Array`].
#[derive(Clone, Copy)]
enum Any<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
    Array(&'a Array),
    /// `Value` and `Array` are non-exhaustive; a kind added later goes out as an empty
    /// `AnyValue` rather than a panic.
    Unknown,
}

impl<'a> From<&'a Value> for Any<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Bool(b) => Any::Bool(*b),
            Value::I64(i) => Any::Int(*i),
            Value::F64(f) => Any::Double(*f),
            Value::String(s) => Any::Str(s.as_str()),
            Value::Array(a) => Any::Array(a),
            _ => Any::Unknown,
        }
    }
}

/// Size of an `AnyValue` message's contents.
fn any_value_len(v: Any<'_>) -> usize {
    match v {
        Any::Bool(_) => key_len(ANY_BOOL) + 1,
        Any::Int(i) => key_len(ANY_INT) + encoded_len_varint(i as u64),
        Any::Double(_) => key_len(ANY_DOUBLE) + 8,
        Any::Str(s) => delimited_len(ANY_STRING, s.len()),
        Any::Array(a) => delimited_len(ANY_ARRAY, array_len(a)),
        Any::Unknown => 0,
    }
}

fn put_any_value(buf: &mut Vec<u8>, v: Any<'_>) {
    match v {
        Any::Bool(b) => {
            encode_key(ANY_BOOL, WireType::Varint, buf);
            buf.push(u8::from(b));
        }
        Any::Int(i) => {
            encode_key(ANY_INT, WireType::Varint, buf);
            // int64 is a plain (not zigzag) varint: negative values take ten bytes.
            encode_varint(i as u64, buf);
        }
        Any::Double(f) => {
            encode_key(ANY_DOUBLE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Any::Str(s) => put_bytes(buf, ANY_STRING, s.as_bytes()),
        Any::Array(a) => {
            put_delimited_header(buf, ANY_ARRAY, array_len(a));
            put_array(buf, a);
        }
        Any::Unknown => {}
    }
}

/// The elements of an `Array` as `AnyValue`s, without collecting them.
fn for_each_element(a: &Array, mut f: impl FnMut(Any<'_>)) {
    match a {
        Array::Bool(v) => v.iter().for_each(|x| f(Any::Bool(*x))),
        Array::I64(v) => v.iter().for_each(|x| f(Any::Int(*x))),
        Array::F64(v) => v.iter().for_each(|x| f(Any::Double(*x))),
        Array::String(v) => v.iter().for_each(|x| f(Any::Str(x.as_str()))),
        _ => {}
    }
}

/// Size of an `ArrayValue` message's contents.
fn array_len(a: &Array) -> usize {
    let mut n = 0;
    for_each_element(a, |v| n += delimited_len(ARRAY_VALUES, any_value_len(v)));
    n
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    for_each_element(a, |v| {
        put_delimited_header(buf, ARRAY_VALUES, any_value_len(v));
        put_any_value(buf, v);
    });
}

/// Size of a `KeyValue` message's contents. The value is always present (the SDK wrote
/// `Some(AnyValue)` for every attribute).
fn key_value_len(kv: &KeyValue) -> usize {
    string_field_len(KV_KEY, kv.key.as_str())
        + delimited_len(KV_VALUE, any_value_len(Any::from(&kv.value)))
}

fn put_key_value(buf: &mut Vec<u8>, kv: &KeyValue) {
    put_string_field(buf, KV_KEY, kv.key.as_str());
    let v = Any::from(&kv.value);
    put_delimited_header(buf, KV_VALUE, any_value_len(v));
    put_any_value(buf, v);
}

fn attributes_len(tag: u32, attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .map(|kv| delimited_len(tag, key_value_len(kv)))
        .sum()
}

fn put_attributes(buf: &mut Vec<u8>, tag: u32, attrs: &[KeyValue]) {
    for kv in attrs {
        put_delimited_header(buf, tag, key_value_len(kv));
        put_key_value(buf, kv);
    }
}

fn status_len(s: &SpanRecord) -> usize {
    if s.error {
        key_len(STATUS_CODE) + encoded_len_varint(STATUS_CODE_ERROR)
    } else {
        0
    }
}

fn flags(s: &SpanRecord) -> u32 {
    let mut f = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
    if s.parent_is_remote {
        f |= FLAG_IS_REMOTE;
    }
    f
}

/// Size of a `Span` message's contents.
fn span_len(s: &SpanRecord) -> usize {
    let mut n =
        delimited_len(SPAN_TRACE_ID, TRACE_ID_LEN) + delimited_len(SPAN_SPAN_ID, SPAN_ID_LEN);
    if s.parent_span_id != SpanId::INVALID {
        n += delimited_len(SPAN_PARENT_SPAN_ID, SPAN_ID_LEN);
    }
    n += string_field_len(SPAN_NAME, s.name.as_str());
    n += key_len(SPAN_KIND) + encoded_len_varint(kind_number(&s.kind));
    n += fixed64_field_len(SPAN_START, unix_nanos(s.start));
    n += fixed64_field_len(SPAN_END, unix_nanos(s.end));
    n += attributes_len(SPAN_ATTRIBUTES, &s.attributes);
    n += delimited_len(SPAN_STATUS, status_len(s));
    n += key_len(SPAN_FLAGS) + 4;
    n
}

fn put_span(buf: &mut Vec<u8>, s: &SpanRecord) {
    put_bytes(buf, SPAN_TRACE_ID, &s.trace_id.to_bytes());
    put_bytes(buf, SPAN_SPAN_ID, &s.span_id.to_bytes());
    if s.parent_span_id != SpanId::INVALID {
        put_bytes(buf, SPAN_PARENT_SPAN_ID, &s.parent_span_id.to_bytes());
    }
    put_string_field(buf, SPAN_NAME, s.name.as_str());
    encode_key(SPAN_KIND, WireType::Varint, buf);
    encode_varint(kind_number(&s.kind), buf);
    put_fixed64_field(buf, SPAN_START, unix_nanos(s.start));
    put_fixed64_field(buf, SPAN_END, unix_nanos(s.end));
    put_attributes(buf, SPAN_ATTRIBUTES, &s.attributes);
    put_delimited_header(buf, SPAN_STATUS, status_len(s));
    if s.error {
        encode_key(STATUS_CODE, WireType::Varint, buf);
        encode_varint(STATUS_CODE_ERROR, buf);
    }
    encode_key(SPAN_FLAGS, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&flags(s).to_le_bytes());
}

/// A process's `Resource`, encoded once as the `resource` field of `ResourceSpans` (key and
/// length included) and copied into every request that carries its spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedResource(Vec<u8>);

impl EncodedResource {
    pub fn new(attributes: &[KeyValue]) -> Self {
        let len = attributes_len(RESOURCE_ATTRIBUTES, attributes);
        let mut buf = Vec::with_capacity(delimited_len(RESOURCE_SPANS_RESOURCE, len));
        put_delimited_header(&mut buf, RESOURCE_SPANS_RESOURCE, len);
        put_attributes(&mut buf, RESOURCE_ATTRIBUTES, attributes);
        Self(buf)
    }
}

/// Builds one `ExportTraceServiceRequest` at a time in a buffer that is kept between requests.
pub struct Encoder {
    buf: Vec<u8>,
    /// The `scope` field of `ScopeSpans` (`beyla-rs` and the crate version), key included.
    scope: Vec<u8>,
    /// Each span's size, from the sizing pass of the group being written.
    span_lens: Vec<usize>,
    spans: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let name = "beyla-rs";
        let version = env!("CARGO_PKG_VERSION");
        let len = string_field_len(SCOPE_NAME, name) + string_field_len(SCOPE_VERSION, version);
        let mut scope = Vec::with_capacity(delimited_len(SCOPE_SPANS_SCOPE, len));
        put_delimited_header(&mut scope, SCOPE_SPANS_SCOPE, len);
        put_string_field(&mut scope, SCOPE_NAME, name);
        put_string_field(&mut scope, SCOPE_VERSION, version);
        Self {
            buf: Vec::new(),
            scope,
            span_lens: Vec::new(),
            spans: 0,
        }
    }

    /// Start a new request; the buffer keeps its capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans = 0;
    }

    /// Append one `ResourceSpans`: `spans` (all of one process) under `resource`.
    pub fn push_group(&mut self, resource: &EncodedResource, spans: &[SpanRecord]) {
        if spans.is_empty() {
            return;
        }
        self.span_lens.clear();
        self.span_lens.extend(spans.iter().map(span_len));
        let scope_spans_len = self.scope.len()
            + self
                .span_lens
                .iter()
                .map(|&n| delimited_len(SCOPE_SPANS_SPANS, n))
                .sum::<usize>();
        let resource_spans_len =
            resource.0.len() + delimited_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        self.buf
            .reserve(delimited_len(REQUEST_RESOURCE_SPANS, resource_spans_len));

        let buf = &mut self.buf;
        put_delimited_header(buf, REQUEST_RESOURCE_SPANS, resource_spans_len);
        buf.extend_from_slice(&resource.0);
        put_delimited_header(buf, RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        buf.extend_from_slice(&self.scope);
        for (s, &n) in spans.iter().zip(&self.span_lens) {
            put_delimited_header(buf, SCOPE_SPANS_SPANS, n);
            put_span(buf, s);
        }
        self.spans += spans.len();
    }

    /// The request so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Spans in the request so far.
    pub fn span_count(&self) -> usize {
        self.spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_prost() {
        let values = (0..70_000u64).chain([
            (1 << 21) - 1,
            1 << 21,
            u32::MAX as u64,
            i64::MAX as u64,
            -1i64 as u64,
        ]);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for v in values {
            ours.clear();
            theirs.clear();
            encode_varint(v, &mut ours);
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(ours.len(), encoded_len_varint(v), "{v}");
        }
    }
}
