//! Test HTTP/1.1 server (hyper) used by the beyla-rs integration tests: the "Rust server"
//! fixture. Same routes as `servers/http_server.py`; `/proxy/<rest>` calls
//! `$UPSTREAM_URL/<rest>?<query>` with the same method over a fresh hyper client connection.
//! Usage: `beyla-test-server --port N`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn no_body(code: u16) -> bool {
    (100..200).contains(&code) || code == 204 || code == 304
}

fn reply(code: u16, body: impl Into<Bytes>, ctype: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if no_body(code) {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let body: Bytes = body.into();
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("content-length", body.len())
        .body(Full::new(body))
        .unwrap()
}

async fn proxy(
    upstream: &str,
    method: hyper::Method,
    rest: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let hostport = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut target = rest.to_string();
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let stream = TcpStream::connect(&hostport)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", &hostport);
    if !body.is_empty() {
        b = b.header("content-length", body.len());
    }
    let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let data = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, data))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let param = |k: &str| {
        query.as_deref().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
        })
    };
    let mut path = req.uri().path().to_string();
    let rewrite = match path.as_str() {
        "/status" => param("respond").map(|c| format!("/status/{c}")),
        "/sleep" => param("ms").map(|ms| format!("/sleep/{ms}")),
        _ => None,
    };
    if let Some(p) = rewrite {
        path = p;
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, "bad body\n", "text/plain")),
    };
    let resp = if path == "/hello" {
        reply(200, "hello\n", "text/plain")
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code.parse::<u16>() {
            Ok(c) if (100..=999).contains(&c) => reply(c, format!("status {c}\n"), "text/plain"),
            _ => reply(400, "bad status\n", "text/plain"),
        }
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        reply(200, "slept\n", "text/plain")
    } else if path == "/echo" {
        reply(200, body, "application/octet-stream")
    } else if let Some(rest) = path.strip_prefix("/proxy") {
        match std::env::var("UPSTREAM_URL") {
            Ok(up) if !up.is_empty() => {
                match proxy(&up, method, rest, query.as_deref(), body).await {
                    Ok((code, data)) => reply(code, data, "text/plain"),
                    Err(e) => reply(502, format!("upstream error: {e}\n"), "text/plain"),
                }
            }
            _ => reply(502, "no UPSTREAM_URL\n", "text/plain"),
        }
    } else {
        reply(404, "not found\n", "text/plain")
    };
    Ok(resp)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .expect("usage: beyla-test-server --port N");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        eprintln!("listening on 127.0.0.1:{port}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}
