//! Sending one encoded `ExportTraceServiceRequest`: OTLP/HTTP with protobuf or JSON bodies,
//! or an OTLP/gRPC unary call. One attempt per call; the caller decides about retries from
//! the error ([`ExportError::is_retryable`], [`ExportError::retry_after`]).

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

use super::ExportError;
use crate::config::{OtlpConfig, OtlpProtocol};

const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Longest `Retry-After` obeyed, as opentelemetry-otlp: a misconfigured collector must not
/// stall export for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

pub enum Transport {
    Http {
        client: reqwest::Client,
        url: String,
        headers: HeaderMap,
        json: bool,
    },
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    },
}

impl Transport {
    /// Nothing connects here: the first export does (gRPC channels connect lazily).
    pub fn new(cfg: &OtlpConfig) -> Result<Self, ExportError> {
        let endpoint = &cfg.traces_endpoint;
        match cfg.protocol {
            OtlpProtocol::Grpc => {
                let ep =
                    tonic::transport::Endpoint::from_shared(endpoint.clone()).map_err(|e| {
                        ExportError::Endpoint {
                            endpoint: endpoint.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                // tonic is built without TLS here (as opentelemetry-otlp was): refuse at start
                // rather than fail every export.
                if ep.uri().scheme_str() == Some("https") {
                    return Err(ExportError::Endpoint {
                        endpoint: endpoint.clone(),
                        reason: "gRPC over TLS (https) is not supported".to_owned(),
                    });
                }
                let headers: std::collections::HashMap<String, String> =
                    cfg.headers.iter().cloned().collect();
                Ok(Self::Grpc {
                    client: tonic::client::Grpc::new(ep.timeout(cfg.timeout).connect_lazy()),
                    metadata: super::grpc_metadata(&headers),
                    timeout: cfg.timeout,
                })
            }
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                let client = reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .build()
                    .map_err(|e| ExportError::Endpoint {
                        endpoint: endpoint.clone(),
                        reason: format!("building the HTTP client: {e}"),
                    })?;
                // Pairs that are not valid HTTP headers are skipped, as opentelemetry-otlp
                // did (the configuration already rejects most of them).
                let mut headers = HeaderMap::new();
                for (k, v) in &cfg.headers {
                    if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                        headers.insert(k, v);
                    }
                }
                Ok(Self::Http {
                    client,
                    url: endpoint.clone(),
                    headers,
                    json: cfg.protocol == OtlpProtocol::HttpJson,
                })
            }
        }
    }

    /// One attempt to deliver `body`, a protobuf `ExportTraceServiceRequest`.
    pub async fn send(&mut self, body: &[u8]) -> Result<(), ExportError> {
        match self {
            Self::Http {
                client,
                url,
                headers,
                json,
            } => {
                let (body, content_type) = if *json {
                    (to_json(body)?, "application/json")
                } else {
                    (body.to_vec(), "application/x-protobuf")
                };
                let resp = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(CONTENT_TYPE, content_type)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| ExportError::Unavailable(error_chain(&e)))?;
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Read the (small) response so the connection goes back to the pool.
                let _ = resp.bytes().await;
                classify_http(status.as_u16(), retry_after)
            }
            Self::Grpc {
                client,
                metadata,
                timeout,
            } => {
                client
                    .ready()
                    .await
                    .map_err(|e| ExportError::Unavailable(format!("gRPC channel: {e}")))?;
                let mut req = tonic::Request::new(Bytes::copy_from_slice(body));
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(*timeout);
                let path = http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH);
                client
                    .unary(req, path, PassThrough)
                    .await
                    .map(|_| ())
                    .map_err(classify_grpc)
            }
        }
    }
}

/// OTLP/JSON of a protobuf request, through opentelemetry-proto's serde mapping (hex ids,
/// enum numbers, 64-bit integers as strings): the rare protocol, not worth its own encoder.
fn to_json(body: &[u8]) -> Result<Vec<u8>, ExportError> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let req = ExportTraceServiceRequest::decode(body)
        .map_err(|e| ExportError::Encode(format!("re-reading the encoded request: {e}")))?;
    serde_json::to_vec(&req).map_err(|e| ExportError::Encode(format!("OTLP/JSON: {e}")))
}

/// The OTLP/HTTP rules: 429/502/503/504 (and any 5xx) are worth retrying, with the server's
/// `Retry-After` on 429/503; any other 4xx means the request itself is refused and would be
/// refused again.
fn classify_http(status: u16, retry_after: Option<Duration>) -> Result<(), ExportError> {
    match (status, retry_after) {
        (200..=299, _) => Ok(()),
        (429 | 503, Some(after)) => Err(ExportError::Throttled { status, after }),
        (400..=499, _) if status != 429 => {
            Err(ExportError::Rejected(format!("HTTP status {status}")))
        }
        _ => Err(ExportError::Unavailable(format!("HTTP status {status}"))),
    }
}

/// gRPC codes that say the request is wrong or not allowed (the equivalents of HTTP 4xx) are
/// permanent; the rest (unavailable, deadline exceeded, resource exhausted, …) are retried.
fn classify_grpc(s: Status) -> ExportError {
    use tonic::Code;
    let message = format!("gRPC status {:?}: {}", s.code(), s.message());
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::Unauthenticated => ExportError::Rejected(message),
        _ => ExportError::Unavailable(message),
    }
}

/// `Retry-After`: delay seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// reqwest's top-level message ("error sending request") hides the cause (connection refused,
/// timeout): give the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The request is already protobuf bytes; the response's content (a possible partial-success
/// report) is not used.
#[derive(Clone, Copy, Debug, Default)]
struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_classes() {
        assert!(classify_http(200, None).is_ok());
        assert!(classify_http(204, None).is_ok());
        let throttled = classify_http(429, Some(Duration::from_secs(3)));
        assert_eq!(
            throttled.as_ref().err().and_then(ExportError::retry_after),
            Some(Duration::from_secs(3))
        );
        assert!(matches!(
            classify_http(503, Some(Duration::from_secs(1))),
            Err(ExportError::Throttled { status: 503, .. })
        ));
        for s in [429, 500, 502, 503, 504] {
            assert!(
                matches!(classify_http(s, None), Err(ExportError::Unavailable(_))),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(
                matches!(classify_http(s, None), Err(ExportError::Rejected(_))),
                "{s}"
            );
        }
        // Retry-After on a permanent refusal does not make it retryable.
        assert!(matches!(
            classify_http(400, Some(Duration::from_secs(1))),
            Err(ExportError::Rejected(_))
        ));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon"), None);
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let d = parse_retry_after(&in_a_minute).unwrap_or_default();
        assert!(
            (Duration::from_secs(59)..=Duration::from_secs(61)).contains(&d),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn grpc_codes() {
        assert!(matches!(
            classify_grpc(Status::unavailable("down")),
            ExportError::Unavailable(_)
        ));
        assert!(matches!(
            classify_grpc(Status::deadline_exceeded("slow")),
            ExportError::Unavailable(_)
        ));
        assert!(matches!(
            classify_grpc(Status::unauthenticated("who")),
            ExportError::Rejected(_)
        ));
        assert!(matches!(
            classify_grpc(Status::invalid_argument("bad")),
            ExportError::Rejected(_)
        ));
    }

    #[test]
    fn json_is_otlp_json() {
        use opentelemetry_proto::tonic::{
            collector::trace::v1::ExportTraceServiceRequest,
            common::v1::{AnyValue, KeyValue, any_value},
            trace::v1::{ResourceSpans, ScopeSpans, Span},
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "GET /".into(),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_001,
                        flags: 0x101,
                        attributes: vec![KeyValue {
                            key: "http.response.status_code".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::IntValue(200)),
                            }),
                            key_strindex: 0,
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let json = to_json(&req.encode_to_vec()).expect("converts");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        // OTLP/JSON: hex ids, 64-bit integers as strings, enums as numbers.
        assert_eq!(span["traceId"], "abababababababababababababababab");
        assert_eq!(span["spanId"], "0101010101010101");
        assert_eq!(span["startTimeUnixNano"], "1700000000000000001");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["attributes"][0]["value"]["intValue"], "200");
        let back: ExportTraceServiceRequest = serde_json::from_slice(&json).expect("reads back");
        assert_eq!(back, req);
        assert!(matches!(to_json(b"\xff\xff"), Err(ExportError::Encode(_))));
    }
}
