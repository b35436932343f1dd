//! The Prometheus scrape endpoint (`BEYLA_PROMETHEUS_PORT`): `GET /metrics` (application
//! metrics) and, with `BEYLA_INTERNAL_METRICS_EXPORTER=prometheus`, the daemon's own counters
//! at `/internal/metrics` (`BEYLA_INTERNAL_METRICS_PROMETHEUS_PATH`). HTTP/1.1 on the
//! daemon's runtime; rendering happens on request, from the same cumulative aggregation the
//! OTLP exporter reads.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use super::{Metrics, internal, prom};
use crate::stats::Stats;

/// What one listener serves.
#[derive(Clone)]
pub struct Endpoints {
    /// (path, metrics): application metrics, at `/metrics` unless configured otherwise.
    pub app: Option<(String, Arc<Metrics>)>,
    /// (path, counters): internal metrics.
    pub internal: Option<(String, Arc<Stats>)>,
}

fn respond(ep: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, ctype: &'static str| {
        Response::builder()
            .status(status)
            .header("Content-Type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            "text/plain",
        );
    }
    let path = req.uri().path();
    if let Some((p, m)) = &ep.app
        && path == p
    {
        return text(
            StatusCode::OK,
            prom::render(&m.collect(false, false)),
            prom::CONTENT_TYPE,
        );
    }
    if let Some((p, stats)) = &ep.internal
        && path == p
    {
        return text(
            StatusCode::OK,
            internal::render_prometheus(stats),
            prom::CONTENT_TYPE,
        );
    }
    text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain")
}

/// Bind now (so a bad address fails start-up), serve until `shutdown` flips.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, ep: Endpoints, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let ep = ep.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = respond(&ep, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}
