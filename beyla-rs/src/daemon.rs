//! The daemon's event loop: start-up, the drain loop, housekeeping and shutdown.

use std::{sync::Arc, time::Duration};

use thiserror::Error;
use tokio::sync::watch;

use crate::{
    capture::{Capture, CaptureError},
    clock::Clock,
    config::Config,
    export::{
        Queue, Sink,
        otlp::{self, ExportError},
        printer::Printer,
    },
    pipeline::{KernelAction, Pipeline},
    process::{HostInfo, Processes},
    resource::GlobalResource,
    span::SpanBuilder,
    stats::Stats,
    tls::Libraries,
};
use beyla_rs_common::ConnInfo;

/// How often the ring buffer is drained when the kernel has not woken us. The kernel wakes the
/// reader when a quarter of the ring is pending (about 25 ms of events at 20k requests/s with
/// the default 1 MiB), so this only bounds the delay at low rates. Every tick costs wake-ups
/// when idle (two: tokio's timer wheel cascades a timer this far out before firing it); at
/// 250 ms the idle daemon uses 1.3 ms of CPU a second, at 100 ms 2.8. Spans wait up to 5 s in
/// the export batch by default, so the extra delay does not show.
const DRAIN_INTERVAL: Duration = Duration::from_millis(250);
/// Records handled between two `sched_yield`s while draining. A drain after a wake-up holds
/// hundreds to thousands of records (milliseconds of work); on a busy machine the
/// instrumented server waits for the core that long, which is where its tail latency went.
/// Yielding every 256 records (about 0.6 ms of work) lets runnable application threads go
/// first and costs nothing when none is waiting. Measured at nginx saturation on 2 cores:
/// p99 4.0–4.3 ms → 1.9–2.2 ms, throughput up 10 %, no ring buffer loss; every 64 records
/// the daemon fell behind and the kernel ring buffer overflowed.
const YIELD_EVERY: u32 = 256;
/// How often /proc is scanned for selected processes the kernel could not report.
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// How long queued spans may take to flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The deployment cannot work as configured (exit 2, like bad configuration): a capture
    /// backend forced with `BEYLA_CAPTURE_BACKEND` that this kernel cannot load.
    pub fn is_deployment_error(&self) -> bool {
        matches!(self, DaemonError::Capture(c) if c.is_unusable_backend())
    }
}

/// Copy the kernel's counters into `stats`.
fn kernel_stats(capture: &Capture, stats: &Stats) -> crate::capture::KernelStats {
    let k = capture.stats();
    Stats::set(&stats.events_lost_kernel, k.ringbuf_full);
    Stats::set(&stats.kernel_capture_faults, k.capture_faults);
    Stats::set(&stats.kernel_conn_map_full, k.conn_map_full);
    Stats::set(&stats.kernel_conn_contended, k.conn_contended);
    Stats::set(&stats.kernel_pid_map_full, k.pid_map_full);
    Stats::set(&stats.kernel_tls_unbound, k.tls_unbound);
    let [(capture_ns, capture_runs), (tls_ns, tls_runs)] = capture.bpf_cost();
    Stats::set(&stats.kernel_bpf_ns_capture, capture_ns);
    Stats::set(&stats.kernel_bpf_runs_capture, capture_runs);
    Stats::set(&stats.kernel_bpf_ns_tls, tls_ns);
    Stats::set(&stats.kernel_bpf_runs_tls, tls_runs);
    k
}

/// Metrics: the shared aggregation, the OTLP export task and the Prometheus listeners.
async fn start_metrics(
    config: &Config,
    shape: &crate::metrics::Shape,
    stats: &Arc<Stats>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<
    (
        Option<Arc<crate::metrics::Metrics>>,
        Vec<tokio::task::JoinHandle<()>>,
    ),
    DaemonError,
> {
    use crate::{config::InternalMetrics, metrics};
    let mc = &config.metrics;
    let internal_otel = mc.internal == InternalMetrics::Otel;
    if !mc.enabled() && mc.internal == InternalMetrics::Disabled {
        return Ok((None, Vec::new()));
    }
    let m = Arc::new(metrics::Metrics::with_shape(
        GlobalResource {
            attributes: config.resource_attributes.clone(),
        },
        internal_otel.then(|| stats.clone()),
        shape.clone(),
    ));
    let mut tasks = Vec::new();
    if let Some(o) = &mc.otlp {
        let exporter = metrics::otlp::build_exporter(o)?;
        tasks.push(tokio::spawn(metrics::otlp::run(
            exporter,
            o.traces_endpoint.clone(),
            m.clone(),
            internal_otel,
            mc.interval,
            stats.clone(),
            stop_rx.clone(),
            FLUSH_TIMEOUT,
        )));
        log::info!(
            "exporting metrics to {} ({:?}) every {:?}",
            o.traces_endpoint,
            o.protocol,
            mc.interval
        );
    }
    let mut listeners: Vec<(std::net::SocketAddr, metrics::server::Endpoints)> = Vec::new();
    if let Some(a) = mc.prometheus {
        listeners.push((
            a,
            metrics::server::Endpoints {
                app: Some((mc.prometheus_path.clone(), m.clone())),
                internal: None,
            },
        ));
    }
    if let Some((a, path)) = &mc.internal_prometheus {
        let internal = Some((path.clone(), stats.clone()));
        match listeners.iter_mut().find(|(la, _)| la.port() == a.port()) {
            Some((_, ep)) => ep.internal = internal,
            None => listeners.push((
                *a,
                metrics::server::Endpoints {
                    app: None,
                    internal,
                },
            )),
        }
    }
    for (addr, ep) in listeners {
        let l = metrics::server::bind(addr)
            .await
            .map_err(|source| DaemonError::MetricsListen { addr, source })?;
        log::info!(
            "serving Prometheus metrics on http://{addr}{}{}",
            if ep.app.is_some() { "/metrics" } else { "" },
            ep.internal
                .as_ref()
                .map(|(p, _)| format!(" (internal: {p})"))
                .unwrap_or_default()
        );
        tasks.push(tokio::spawn(metrics::server::serve(l, ep, stop_rx.clone())));
    }
    Ok((Some(m), tasks))
}

/// Apply what the pipeline asked of the kernel maps and probes.
fn apply(
    capture: &mut Capture,
    libraries: &mut Libraries,
    stats: &Stats,
    actions: Vec<KernelAction>,
) {
    // The map updates first, the TLS probes last: scanning a process's libraries and
    // attaching uprobes takes milliseconds (seconds in an emulated guest), and a worker to
    // track queued behind its primary's probes missed every request served meanwhile.
    let (tls, maps): (Vec<_>, Vec<_>) = actions
        .into_iter()
        .partition(|a| matches!(a, KernelAction::WatchTls(_)));
    for a in maps.into_iter().chain(tls) {
        match a {
            KernelAction::WatchTls(pid) => {
                for target in libraries.scan(pid) {
                    match capture.attach_tls(&target) {
                        Ok(n) => {
                            Stats::inc(&stats.tls_libraries_probed);
                            log::info!(
                                "TLS: {n} probes on {} ({}), mapped by pid {pid}",
                                target.path.display(),
                                target.probes.name()
                            );
                        }
                        Err(e) => log::warn!(
                            "TLS: cannot probe {} (mapped by pid {pid}): {e}",
                            target.path.display()
                        ),
                    }
                }
            }
            KernelAction::TrackPid(pid) => {
                if let Err(e) = capture.track_pid(pid) {
                    log::warn!("cannot track pid {pid}: {e}");
                }
            }
            KernelAction::UntrackPid(pid) => capture.untrack_pid(pid),
            KernelAction::RemoveConn { tgid, fd, conn_id } => {
                capture.remove_conn(tgid, fd, conn_id)
            }
            KernelAction::AddConn {
                tgid,
                fd,
                conn_id,
                role,
            } => {
                let info = ConnInfo::new(
                    conn_id,
                    match role {
                        crate::protocol::Role::Server => beyla_rs_common::ROLE_SERVER,
                        crate::protocol::Role::Client => beyla_rs_common::ROLE_CLIENT,
                    },
                );
                if let Err(e) = capture.add_conn(tgid, fd, info) {
                    log::warn!("cannot follow pid {tgid} fd {fd}: {e}");
                }
            }
            KernelAction::ListenPort(port) => {
                if let Err(e) = capture.add_listen_port(port) {
                    log::warn!("cannot note listening port {port}: {e}");
                }
            }
        }
    }
}

/// Run until `shutdown` resolves; returns the final counters.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<crate::stats::Snapshot, DaemonError> {
    let stats = Arc::new(Stats::default());
    let clock = Clock::new();
    let (stop_tx, stop_rx) = watch::channel(false);

    let (queue, export_task) = match &config.otlp {
        Some(o) => {
            let transport = otlp::build_exporter(o)?;
            let queue = Arc::new(Queue::new(
                config.queue_size,
                config.batch_size,
                stats.clone(),
            ));
            let task = tokio::spawn(otlp::run(
                transport,
                o.traces_endpoint.clone(),
                queue.clone(),
                GlobalResource {
                    attributes: config.resource_attributes.clone(),
                },
                config.export_interval,
                stats.clone(),
                stop_rx.clone(),
                FLUSH_TIMEOUT,
            ));
            log::info!(
                "exporting traces to {} ({:?})",
                o.traces_endpoint,
                o.protocol
            );
            (Some(queue), Some(task))
        }
        None => (None, None),
    };
    let sink = Sink::new(Printer::new(config.printer), queue, stats.clone());
    // Buckets and attribute selection: the histograms use them, the span builder fills the
    // optional attributes they select.
    let shape = crate::metrics::Shape::new(
        config.metrics.duration_buckets.clone(),
        config.metrics.size_buckets.clone(),
        &config.metrics.select,
    );
    let (metrics, metrics_tasks) = start_metrics(&config, &shape, &stats, &stop_rx).await?;

    let mut capture = Capture::start(&config)?;
    log::info!(
        "capture backend: {} (kernel {})",
        capture.backend(),
        crate::capture::probe::kernel_release()
    );

    let processes = Processes::new(config.selection.clone(), HostInfo::read());
    let router = crate::route::Router::new(config.routes.clone(), config.max_routes)
        .ignoring(config.routes_ignored.clone(), config.routes_ignore_mode)
        .unmatched(config.routes_unmatched);
    let spans = SpanBuilder::with_router(clock, router).with_extras(shape.extras());
    let mut pipeline = Pipeline::new(processes, spans, sink, stats.clone())
        .with_metrics(metrics, config.sampler)
        .with_kernel_registered_connections(capture.backend().sees_sockets());

    // Processes that were running before we attached. Anything that binds from now on is
    // caught by the kernel, so there is no gap between the scan and the programs.
    let scan_processes = Processes::new(config.selection.clone(), HostInfo::read());
    let scan = scan_processes.scan(pipeline.tracked());
    pipeline.apply_scan(scan, Clock::monotonic_ns());
    let mut libraries = Libraries::new();
    apply(
        &mut capture,
        &mut libraries,
        &stats,
        pipeline.take_actions(),
    );
    log::info!(
        "beyla-rs ready: {} process(es) instrumented, selecting {}",
        pipeline.tracked().len(),
        config.selection.describe()
    );

    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rescan_tick = tokio::time::interval(RESCAN_INTERVAL);
    rescan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan_tick.tick().await;
    let mut last_lost = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = capture.readable() => {
                if let Err(e) = r {
                    log::warn!("ring buffer poll failed: {e}");
                }
            }
            _ = drain_tick.tick() => {}
            _ = rescan_tick.tick() => {
                let scan = scan_processes.scan(pipeline.tracked());
                pipeline.apply_scan(scan, Clock::monotonic_ns());
                pipeline.expire(Clock::monotonic_ns());
                let k = kernel_stats(&capture, &stats);
                if k.ringbuf_full > last_lost {
                    log::warn!(
                        "kernel ring buffer overflowed: {} records lost since start (raise BEYLA_RINGBUF_SIZE)",
                        k.ringbuf_full
                    );
                    last_lost = k.ringbuf_full;
                }
                log::debug!("stats: {:?} kernel: {:?} connections: {}", stats.snapshot().pairs(), k, pipeline.connection_count());
            }
            _ = &mut shutdown => break,
        }
        let mut handled = 0u32;
        capture.drain(|ev, lookup| {
            pipeline.handle(ev, lookup);
            handled = handled.wrapping_add(1);
            if handled.is_multiple_of(YIELD_EVERY) {
                std::thread::yield_now();
            }
        });
        pipeline.poll(Clock::monotonic_ns());
        apply(
            &mut capture,
            &mut libraries,
            &stats,
            pipeline.take_actions(),
        );
    }

    // Last records, then detach (dropping `capture` detaches every program).
    capture.drain(|ev, lookup| pipeline.handle(ev, lookup));
    // Spans still waiting for a caller go out as they are.
    pipeline.poll(u64::MAX);
    kernel_stats(&capture, &stats);
    drop(capture);
    log::info!("detached; flushing spans");
    let _ = stop_tx.send(true);
    if let Some(t) = export_task {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), t).await;
    }
    for t in metrics_tasks {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), t).await;
    }
    Ok(stats.snapshot())
}
