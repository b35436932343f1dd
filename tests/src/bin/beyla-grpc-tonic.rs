//! tonic (hyper + h2) server and client for the gRPC integration tests (`tests/grpc.rs`): the
//! Rust twin of `servers/grpc/grpcio_fixture.py`, same service (`servers/grpc/echo.proto`),
//! same command line and the same JSON line from the client.
//!
//! ```text
//! beyla-grpc-tonic server --port P
//! beyla-grpc-tonic client --target 127.0.0.1:P [--listen L] SCENARIO [N]
//! ```
//!
//! The messages are written by hand with `prost` derives and the service is routed by hand
//! with tonic's generic `server::Grpc`/`client::Grpc`, so no code generation (and no protoc)
//! is needed to build the tests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Req {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    fail_code: i32,
    #[prost(int32, tag = "3")]
    count: i32,
    #[prost(int32, tag = "4")]
    sleep_ms: i32,
    #[prost(bytes = "vec", tag = "5")]
    payload: Vec<u8>,
    #[prost(int32, tag = "6")]
    resp_size: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resp {
    #[prost(string, tag = "1")]
    msg: String,
    #[prost(bytes = "vec", tag = "2")]
    payload: Vec<u8>,
}

const MAX_MSG: usize = 8 * 1024 * 1024;
const SERVICE: &str = "beyla.test.Echo";

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type RespStream = Pin<Box<dyn Stream<Item = Result<Resp, Status>> + Send>>;

fn sleep_ms(ms: i32) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms.max(0) as u64))
}

async fn unary(req: Request<Req>) -> Result<Response<Resp>, Status> {
    let r = req.into_inner();
    sleep_ms(r.sleep_ms).await;
    if r.fail_code != 0 {
        return Err(Status::new(
            Code::from(r.fail_code),
            format!("failing with {}", r.fail_code),
        ));
    }
    Ok(Response::new(Resp {
        msg: format!("hello {}", r.name),
        payload: vec![b'r'; r.resp_size.max(0) as usize],
    }))
}

fn server_stream(req: Request<Req>) -> RespStream {
    let r = req.into_inner();
    Box::pin(async_stream(r))
}

fn async_stream(r: Req) -> impl Stream<Item = Result<Resp, Status>> + Send {
    tokio_stream::iter(0..r.count.max(0)).then(move |i| {
        let name = r.name.clone();
        let size = r.resp_size.max(0) as usize;
        let ms = r.sleep_ms;
        async move {
            sleep_ms(ms).await;
            Ok(Resp {
                msg: format!("{name} {i}"),
                payload: vec![b's'; size],
            })
        }
    })
}

fn bidi(req: Request<Streaming<Req>>) -> RespStream {
    let s = req.into_inner().then(|r| async move {
        let r = r?;
        sleep_ms(r.sleep_ms).await;
        Ok(Resp {
            msg: format!("re {}", r.name),
            payload: Vec::new(),
        })
    });
    Box::pin(s)
}

/// `tower::Service` adapters for tonic's generic server.
#[derive(Clone, Copy)]
struct Fn1<F>(F);

impl<F, Fut> tower::Service<Request<Req>> for Fn1<F>
where
    F: Fn(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = BoxFut<Result<Response<Resp>, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Req>) -> Self::Future {
        Box::pin((self.0)(req))
    }
}

#[derive(Clone, Copy)]
struct StreamFn<F>(F);

impl<F, In> tower::Service<Request<In>> for StreamFn<F>
where
    F: Fn(Request<In>) -> RespStream,
{
    type Response = Response<RespStream>;
    type Error = Status;
    type Future = std::future::Ready<Result<Response<RespStream>, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<In>) -> Self::Future {
        std::future::ready(Ok(Response::new((self.0)(req))))
    }
}

/// The `beyla.test.Echo` service, routed by path.
#[derive(Clone, Copy)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

fn grpc_server() -> tonic::server::Grpc<ProstCodec<Resp, Req>> {
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG)
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            let resp = match path.strip_prefix("/beyla.test.Echo/") {
                Some("Unary") => grpc_server().unary(Fn1(unary), req).await,
                Some("ServerStream") => {
                    grpc_server()
                        .server_streaming(StreamFn(server_stream), req)
                        .await
                }
                Some("Bidi") => grpc_server().streaming(StreamFn(bidi), req).await,
                _ => Status::unimplemented(path).into_http(),
            };
            Ok(resp)
        })
    }
}

async fn serve(port: u16) {
    let addr = ([127, 0, 0, 1], port).into();
    println!("tonic server on {port}");
    Server::builder()
        .add_service(EchoServer)
        .serve(addr)
        .await
        .expect("tonic server");
}

#[derive(Default)]
struct Results {
    ok: usize,
    codes: Vec<i32>,
    extra: Vec<(String, f64)>,
}

struct Client {
    grpc: tonic::client::Grpc<Channel>,
}

impl Client {
    fn path(m: &str) -> http::uri::PathAndQuery {
        http::uri::PathAndQuery::try_from(format!("/{SERVICE}/{m}")).unwrap()
    }

    async fn unary(&mut self, req: Req) -> Result<Resp, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let codec: ProstCodec<Req, Resp> = ProstCodec::default();
        self.grpc
            .unary(Request::new(req), Self::path("Unary"), codec)
            .await
            .map(Response::into_inner)
    }

    async fn server_stream(&mut self, req: Req) -> Result<usize, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let codec: ProstCodec<Req, Resp> = ProstCodec::default();
        let mut s = self
            .grpc
            .server_streaming(Request::new(req), Self::path("ServerStream"), codec)
            .await?
            .into_inner();
        let mut n = 0;
        while s.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn bidi(&mut self, reqs: Vec<Req>) -> Result<usize, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let codec: ProstCodec<Req, Resp> = ProstCodec::default();
        let mut s = self
            .grpc
            .streaming(
                Request::new(tokio_stream::iter(reqs)),
                Self::path("Bidi"),
                codec,
            )
            .await?
            .into_inner();
        let mut n = 0;
        while s.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

async fn client(target: &str, listen: Option<u16>, scenario: &str, n: usize) {
    let _listener = listen.map(|p| {
        let l = std::net::TcpListener::bind(("127.0.0.1", p)).expect("bind --listen port");
        std::thread::sleep(Duration::from_millis(300));
        l
    });
    let channel = Endpoint::from_shared(format!("http://{target}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG);
    let mut c = Client { grpc };
    let mut res = Results::default();
    let t0 = Instant::now();
    let record = |res: &mut Results, r: Result<Resp, Status>| match r {
        Ok(_) => {
            res.ok += 1;
            res.codes.push(0);
        }
        Err(s) => res.codes.push(s.code() as i32),
    };
    let req = |name: String| Req {
        name,
        ..Default::default()
    };
    match scenario {
        "unary" | "load" => {
            for i in 0..n {
                let r = c.unary(req(format!("u{i}"))).await;
                if scenario == "load" {
                    res.ok += usize::from(r.is_ok());
                } else {
                    record(&mut res, r);
                }
            }
        }
        "concurrent" => {
            // 300 ms, stretched like the harness's timeouts in emulated guests, where issuing
            // the calls alone takes longer than that.
            let sleep = (300.0
                * std::env::var("BEYLA_TEST_TIME_SCALE")
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(1.0))
            .round() as i32;
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let mut c2 = Client {
                    grpc: c.grpc.clone(),
                };
                set.spawn(async move {
                    (
                        i,
                        c2.unary(Req {
                            name: format!("c{i}"),
                            sleep_ms: sleep,
                            ..Default::default()
                        })
                        .await,
                    )
                });
            }
            let mut all: Vec<_> = set.join_all().await;
            all.sort_by_key(|(i, _)| *i);
            for (_, r) in all {
                record(&mut res, r);
            }
        }
        "flood" => {
            // n calls, 64 in flight at a time, on the one connection.
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let mut c2 = Client {
                    grpc: c.grpc.clone(),
                };
                set.spawn(async move {
                    let r = c2.unary(req(format!("f{i}"))).await;
                    drop(permit);
                    r.is_ok()
                });
            }
            res.ok = set.join_all().await.into_iter().filter(|ok| *ok).count();
        }
        "conns" => {
            // n connections (one channel each), one call on each, all held open until the
            // file named by $HOLD_UNTIL_GONE is removed (or 30 s pass).
            let mut held = Vec::new();
            for i in 0..n {
                let ch = Endpoint::from_shared(format!("http://{target}"))
                    .unwrap()
                    .connect()
                    .await
                    .expect("connect");
                let mut c2 = Client {
                    grpc: tonic::client::Grpc::new(ch),
                };
                let r = c2.unary(req(format!("k{i}"))).await;
                record(&mut res, r);
                held.push(c2);
            }
            println!("held {n}");
            if let Ok(f) = std::env::var("HOLD_UNTIL_GONE") {
                let deadline = Instant::now() + Duration::from_secs(30);
                while std::path::Path::new(&f).exists() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            drop(held);
        }
        "errors" => {
            for code in [5, 13, 14, 3, 0] {
                let r = c
                    .unary(Req {
                        name: format!("e{code}"),
                        fail_code: code,
                        ..Default::default()
                    })
                    .await;
                record(&mut res, r);
            }
        }
        "stream" => {
            let t = Instant::now();
            let msgs = c
                .server_stream(Req {
                    name: "ss".into(),
                    count: 5,
                    sleep_ms: 80,
                    ..Default::default()
                })
                .await
                .expect("server stream");
            res.extra.push(("server_stream_msgs".into(), msgs as f64));
            res.extra
                .push(("server_stream_s".into(), t.elapsed().as_secs_f64()));
            let t = Instant::now();
            let reqs = (0..4)
                .map(|i| Req {
                    name: format!("b{i}"),
                    sleep_ms: 100,
                    ..Default::default()
                })
                .collect();
            let msgs = c.bidi(reqs).await.expect("bidi");
            res.extra.push(("bidi_msgs".into(), msgs as f64));
            res.extra.push(("bidi_s".into(), t.elapsed().as_secs_f64()));
            res.ok = 2;
        }
        "big" => {
            for size in [64 * 1024, 1024 * 1024] {
                let r = c
                    .unary(Req {
                        name: format!("big{size}"),
                        payload: vec![b'q'; size],
                        resp_size: size as i32,
                        ..Default::default()
                    })
                    .await
                    .expect("big call");
                assert_eq!(r.payload.len(), size);
                res.ok += 1;
            }
        }
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    drop(c);
    drop(channel);
    // Let the connection close while the process (and its listener) still exist.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let codes: Vec<String> = res.codes.iter().map(i32::to_string).collect();
    let mut line = format!(
        "{{\"ok\": {}, \"codes\": [{}], \"elapsed_s\": {elapsed}",
        res.ok,
        codes.join(", ")
    );
    for (k, v) in &res.extra {
        line.push_str(&format!(", \"{k}\": {v}"));
    }
    line.push('}');
    println!("{line}");
}

fn usage() -> ! {
    eprintln!(
        "usage: beyla-grpc-tonic server --port P | client --target HOST:P [--listen L] SCENARIO [N]"
    );
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("server") => {
            let port = flag("--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| usage());
            serve(port).await;
        }
        Some("client") => {
            let target = flag("--target").unwrap_or_else(|| usage());
            let listen = flag("--listen").and_then(|p| p.parse().ok());
            // Positional arguments: everything but the flags and their values.
            let positional: Vec<&String> = {
                let mut v = Vec::new();
                let mut skip = false;
                for a in &args[1..] {
                    if skip {
                        skip = false;
                    } else if a.starts_with("--") {
                        skip = true;
                    } else {
                        v.push(a);
                    }
                }
                v
            };
            let scenario = positional
                .first()
                .map(|s| s.as_str())
                .unwrap_or_else(|| usage());
            let n = positional.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
            client(&target, listen, scenario, n).await;
        }
        _ => usage(),
    }
}
