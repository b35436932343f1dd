//! The per-direction state of an HTTP/1 connection: what each side is inside (head, body,
//! lost), the response in flight, the requests awaiting their responses, and the exchange a
//! pending request becomes.

use super::super::{ExchangeFlags, HttpExchange, Protocol, Verdict};
use super::body::Body;
use super::head::HeadBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Joined midway: waiting for a request-direction segment that starts with a request line.
    Syncing,
    Active,
    /// After a non-h2c 101 or a CONNECT tunnel: every byte is ignored.
    Tunnel,
    /// After `on_close`.
    Closed,
    /// `Reject` or `SwitchToHttp2` was returned; it is returned again.
    Done(Verdict),
}

/// A request head seen, waiting for its final response.
#[derive(Debug)]
pub(super) struct PendingRequest {
    pub(super) seq: u64,
    /// Stands for request bytes never captured: pairs with a response, emits nothing.
    pub(super) hidden: bool,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) authority: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) tracestate: Option<String>,
    pub(super) start_ns: u64,
    pub(super) body: u64,
    pub(super) partial: bool,
    pub(super) upgrade_h2c: bool,
    pub(super) is_head: bool,
    pub(super) is_connect: bool,
}

#[derive(Debug)]
pub(super) struct ReqSide {
    pub(super) state: ReqState,
    pub(super) buf: HeadBuf,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum ReqState {
    /// Expecting (or inside) a request head.
    Head,
    /// Inside a request body; `count` adds the body bytes to the request's `body`.
    Body { body: Body, seq: u64, count: bool },
    /// Framing unknown: every byte belongs to the last request until response bytes start or
    /// a segment starts with a request line.
    Skip,
    /// A message boundary fell in unseen bytes: wait for a segment starting with a request
    /// line.
    Lost,
}

#[derive(Debug)]
pub(super) struct RespSide {
    pub(super) state: RespState,
    pub(super) buf: HeadBuf,
    /// The response being received, once its final head was parsed.
    pub(super) cur: Option<CurResponse>,
    /// `ts_ns` of the last response-direction segment.
    pub(super) last_ts: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum RespState {
    Head,
    Body(Body),
    /// See [`ReqState::Lost`]; waits for a segment starting with a status line.
    Lost,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CurResponse {
    pub(super) status: u16,
    /// Pairs with the front of `pending`.
    pub(super) matched: bool,
    pub(super) body: u64,
    /// False when the head end was unseen: the body size is then unknown (reported as 0).
    pub(super) count: bool,
}

pub(super) fn exchange(
    p: PendingRequest,
    status: Option<u16>,
    response_body_size: u64,
    end_ns: u64,
    incomplete: bool,
) -> HttpExchange {
    HttpExchange {
        protocol: Some(Protocol::Http1),
        method: p.method,
        target: p.target,
        authority: p.authority,
        scheme: None,
        status,
        grpc_status: None,
        content_type: p.content_type,
        traceparent: p.traceparent,
        tracestate: p.tracestate,
        start_ns: p.start_ns,
        end_ns: end_ns.max(p.start_ns),
        request_body_size: p.body,
        response_body_size,
        stream_id: 0,
        flags: ExchangeFlags {
            partial: p.partial,
            incomplete,
        },
    }
}
