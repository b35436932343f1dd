//! The daemon's own counters: what an operator reads when spans are missing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic counters, shared between the pipeline and the exporters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $(pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl Snapshot {
            /// `(name, value)` pairs, for logs and metrics endpoints.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Ring buffer records read.
    events_read,
    /// Records that did not decode.
    events_malformed,
    /// Records lost in the kernel because the ring buffer was full.
    events_lost_kernel,
    /// Processes instrumented (ever).
    processes_instrumented,
    /// Connections opened on instrumented processes.
    connections_opened,
    /// Connections whose traffic no parser takes (garbage, a protocol without a parser, TLS
    /// answered in the clear): dropped, not parsed.
    connections_not_http,
    /// Connections dropped from the daemon's table for idleness or the table bound.
    connections_evicted,
    /// Connections joined anew after the kernel lost a record of their bytes (what was in
    /// flight went out incomplete; parsing resumed at the next message).
    connections_resynced,
    /// Connections followed through their TLS library's plaintext.
    connections_tls,
    /// Connections carrying TLS application data that no TLS probe covers (a library without
    /// probes: rustls, …): dropped.
    connections_tls_uncovered,
    /// Library files the TLS probes were attached to.
    tls_libraries_probed,
    /// HTTP/1 parse failures (bytes that broke framing and forced a resync).
    http1_parse_errors,
    /// HTTP/2 parse failures.
    http2_parse_errors,
    /// PostgreSQL, MySQL, Redis and Memcached parse failures (lost message sync, malformed
    /// messages).
    postgres_parse_errors,
    mysql_parse_errors,
    redis_parse_errors,
    memcached_parse_errors,
    /// Spans built.
    spans_created,
    /// Spans not built because the caller's trace context was not sampled.
    spans_not_sampled,
    /// Spans not built because the request's route is ignored (`routes.ignored_patterns`).
    spans_ignored,
    /// Spans the exporter delivered.
    spans_exported,
    /// Spans dropped because the export queue was full (collector down or slow).
    spans_dropped,
    /// Failed export requests.
    export_errors,
    /// Kernel: copies from user memory that faulted (set from the kernel's counters).
    kernel_capture_faults,
    /// Kernel: connections not followed because the connection map was full.
    kernel_conn_map_full,
    /// Kernel: connection-map updates given up because other CPUs kept changing the entry.
    kernel_conn_contended,
    /// Kernel: processes not tracked because the process map was full.
    kernel_pid_map_full,
    /// Kernel: nanoseconds spent in the capture backend's programs and their runs (counted
    /// only while `kernel.bpf_stats_enabled` is 1).
    kernel_bpf_ns_capture,
    kernel_bpf_runs_capture,
    /// Kernel: the same for the TLS probes.
    kernel_bpf_ns_tls,
    kernel_bpf_runs_tls,
    /// Kernel: TLS plaintext not sent because its session was not tied to a tracked
    /// connection.
    kernel_tls_unbound,
    /// OTLP metrics export requests.
    metrics_exports,
    /// Failed OTLP metrics export requests.
    metrics_export_errors,
}

impl Stats {
    /// The parse-failure counter of `protocol`'s parser.
    pub fn parse_errors(&self, protocol: crate::protocol::Protocol) -> &AtomicU64 {
        use crate::protocol::Protocol;
        match protocol {
            Protocol::Http1 => &self.http1_parse_errors,
            Protocol::Http2 | Protocol::Grpc => &self.http2_parse_errors,
            Protocol::Postgres => &self.postgres_parse_errors,
            Protocol::Mysql => &self.mysql_parse_errors,
            Protocol::Redis => &self.redis_parse_errors,
            Protocol::Memcached => &self.memcached_parse_errors,
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Relaxed);
    }
}
