use std::sync::Arc;

use super::*;
use crate::{process::ProcessInfo, stats::Stats};

fn process(pid: u32) -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        pid,
        exe_path: "/usr/bin/app".into(),
        exe_name: "app".into(),
        service_name: "shop".into(),
        service_namespace: None,
        instance_id: format!("h-{pid}"),
        host_name: "h".into(),
        extra_resource: vec![],
    })
}

/// An HTTP exchange of `ms` milliseconds with a 3-byte request and a 100-byte response body.
fn http(server: bool, status: u16, ms: u64, route: Option<&str>) -> Measurement {
    Measurement {
        series: Series::Http {
            server,
            method: "GET".into(),
            status: Some(status),
            route: route.map(Arc::from),
            address: None,
            port: None,
            url_path: None,
            client_address: None,
        },
        seconds: ms as f64 / 1000.0,
        request_size: 3,
        response_size: 100,
    }
}

fn client(status: u16, ms: u64, address: &'static str, port: u16) -> Measurement {
    let mut m = http(false, status, ms, None);
    if let Series::Http {
        address: a,
        port: p,
        ..
    } = &mut m.series
    {
        *a = Some(address.into());
        *p = Some(port);
    }
    m
}

#[test]
fn histograms_count_per_attribute_set_and_render_prometheus() {
    let m = Metrics::new(GlobalResource::default(), None);
    let p = process(7);
    for _ in 0..3 {
        m.record(&p, &http(true, 200, 20, Some("/users/{id}")));
    }
    m.record(&p, &http(true, 500, 3000, Some("/users/{id}")));
    m.record(&p, &client(404, 1, "db", 5432));
    let text = prom::render(&m.collect(false, false));
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_owned()
    };
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
    let ok = "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/users/{id}\",service_instance_id=\"h-7\",service_name=\"shop\"}";
    assert_eq!(line(ok), format!("{ok} 3"));
    // 20 ms: first bucket holding it is 0.025; 3 s is only in 5 and above.
    assert!(text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/users/{id}\",service_instance_id=\"h-7\",service_name=\"shop\",le=\"0.01\"} 0"));
    assert!(text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/users/{id}\",service_instance_id=\"h-7\",service_name=\"shop\",le=\"0.025\"} 3"));
    assert!(text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"500\",http_route=\"/users/{id}\",service_instance_id=\"h-7\",service_name=\"shop\",le=\"2.5\"} 0"));
    assert!(text.contains("le=\"+Inf\"} 1"));
    assert!(text.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"404\",server_address=\"db\",server_port=\"5432\",service_instance_id=\"h-7\",service_name=\"shop\"} 1"));
    assert!(text.contains("http_server_response_body_size_bytes_sum{"));
    assert!(text.contains("target_info{"));
    // Never: high-cardinality attributes.
    assert!(
        !text.contains("url_path") && !text.contains("client_address"),
        "{text}"
    );
    // Every bucket boundary is Beyla's.
    let les: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("status_code=\"200\"")
        })
        .filter_map(|l| l.split("le=\"").nth(1))
        .map(|l| l.split('"').next().unwrap())
        .collect();
    assert_eq!(
        les,
        [
            "0", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1",
            "2.5", "5", "7.5", "10", "+Inf"
        ]
    );
}

#[test]
fn rpc_metrics_and_gone_processes() {
    let m = Metrics::new(GlobalResource::default(), None);
    let rpc = Measurement {
        series: Series::Rpc {
            server: true,
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status: Some(0),
            address: None,
            port: None,
            client_address: None,
        },
        seconds: 0.005,
        request_size: 0,
        response_size: 0,
    };
    m.record(&process(7), &rpc);
    let text = prom::render(&m.collect(false, false));
    assert!(text.contains("rpc_server_duration_seconds_count{rpc_grpc_status_code=\"0\",rpc_method=\"SayHello\",rpc_service=\"helloworld.Greeter\",rpc_system=\"grpc\",service_instance_id=\"h-7\",service_name=\"shop\"} 1"), "{text}");
    assert!(!text.contains("http_server_request_duration_seconds_count"));
    m.process_gone(7);
    assert_eq!(m.collect(false, true).len(), 1, "exported once more");
    assert!(m.collect(false, true).is_empty());
}

#[test]
fn internal_metrics_render() {
    let stats = Arc::new(Stats::default());
    Stats::add(&stats.events_lost_kernel, 5);
    Stats::add(&stats.http1_parse_errors, 2);
    let text = internal::render_prometheus(&stats);
    assert!(
        text.contains("beyla_events_lost_total{reason=\"ringbuf_full\"} 5"),
        "{text}"
    );
    assert!(text.contains("beyla_parse_errors_total{protocol=\"http1\"} 2"));
    assert!(text.contains("beyla_parse_errors_total{protocol=\"http2\"} 0"));
    assert_eq!(text.matches("# TYPE beyla_parse_errors counter").count(), 1);
    let m = Metrics::new(GlobalResource::default(), Some(stats));
    let c = m.collect(true, false);
    assert_eq!(c.len(), 1);
    let text = prom::render(&c);
    assert!(
        text.contains("beyla_events_lost_total{reason=\"ringbuf_full\",service_instance_id="),
        "{text}"
    );
}

#[test]
fn bound_and_unbound_recording_count_the_same() {
    // More attribute sets than are bound per process: the sets past MAX_BOUND record through
    // the unbound path and count exactly like the bound ones; server and client sets with the
    // same attributes stay in their own instruments.
    let m = Metrics::new(GlobalResource::default(), None);
    let p = process(7);
    let routes = MAX_BOUND + 200;
    for _ in 0..2 {
        for r in 0..routes {
            m.record(&p, &http(true, 200, 20, Some(&format!("/r{r}"))));
        }
    }
    m.record(&p, &http(false, 200, 1, None));
    m.record(&p, &http(false, 200, 1, None));
    let text = prom::render(&m.collect(false, false));
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), routes, "one series per route");
    assert!(counts.iter().all(|&c| c == 2), "every series counted twice");
    let body_counts = text
        .lines()
        .filter(|l| l.starts_with("http_server_response_body_size_bytes_count{"))
        .count();
    assert_eq!(body_counts, routes);
    let client_count: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_client_request_duration_seconds_count{"))
        .collect();
    assert_eq!(client_count.len(), 1, "{client_count:?}");
    assert!(client_count[0].ends_with(" 2"), "{client_count:?}");
}

/// Database operations, built by the span builder as the pipeline does: the client and server
/// families with the conventions' names, no query text, the error's status code.
#[test]
fn db_metrics_from_spans() {
    use crate::{
        clock::Clock,
        connection::ConnMeta,
        protocol::{Db, DbSystem, Exchange, ExchangeFlags, Kind, Role},
        span::SpanBuilder,
    };
    let m = Metrics::new(GlobalResource::default(), None);
    let b = SpanBuilder::new(Clock::new());
    let op = |error: bool| Exchange {
        start_ns: 1_000,
        end_ns: 3_001_000,
        request_size: 40,
        response_size: 90,
        flags: ExchangeFlags::default(),
        kind: Kind::Db(Db {
            system: DbSystem::Postgresql,
            operation: Some("SELECT".into()),
            collection: Some("items".into()),
            namespace: Some("shop".into()),
            query: Some("SELECT name FROM items WHERE id = $1".into()),
            status_code: error.then(|| "42P01".into()),
            error,
        }),
    };
    let conn = ConnMeta {
        tgid: 7,
        peer: Some("127.0.0.1:5432".parse().unwrap()),
        local_port: None,
        local: None,
    };
    for error in [false, false, true] {
        let p = b.prepare(Role::Client, &conn, process(7), &op(error));
        m.record(&p.span.process, &p.measurement);
    }
    let server = ConnMeta {
        tgid: 8,
        peer: Some("127.0.0.1:40000".parse().unwrap()),
        local_port: Some(5432),
        local: None,
    };
    let p = b.prepare(Role::Server, &server, process(8), &op(false));
    m.record(&p.span.process, &p.measurement);
    let text = prom::render(&m.collect(false, false));
    let ok = "db_client_operation_duration_seconds_count{db_collection_name=\"items\",db_namespace=\"shop\",db_operation_name=\"SELECT\",db_system_name=\"postgresql\",server_address=\"127.0.0.1\",server_port=\"5432\",service_instance_id=\"h-7\",service_name=\"shop\"}";
    assert!(text.contains(&format!("{ok} 2")), "{text}");
    assert!(text.contains("db_response_status_code=\"42P01\""), "{text}");
    assert!(text.contains("db_server_operation_duration_seconds_count{db_collection_name=\"items\",db_namespace=\"shop\",db_operation_name=\"SELECT\",db_system_name=\"postgresql\",service_instance_id=\"h-8\",service_name=\"shop\"} 1"), "{text}");
    assert!(
        !text.contains("WHERE") && !text.contains("client_address"),
        "{text}"
    );
}
