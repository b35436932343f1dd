//! The daemon's own counters, read while it runs from its internal metrics endpoint
//! (`BEYLA_INTERNAL_METRICS_EXPORTER=prometheus`, see [`crate::DaemonBuilder::internal_metrics`]).
//!
//! Tests synchronise on these instead of sleeping: [`crate::Daemon::wait_idle`] returns once
//! the daemon has read every record the kernel wrote and exported every span it built, so a
//! late span cannot arrive after a test cleared its receiver, and a slow machine only makes
//! the wait longer instead of making the test wrong.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Series of the counters the idle check reads (Prometheus names, labels included).
pub const EVENTS_READ: &str = "beyla_events_read_total";
pub const SPANS_CREATED: &str = "beyla_spans_created_total";
pub const SPANS_EXPORTED: &str = "beyla_spans_exported_total";
pub const SPANS_DROPPED: &str = "beyla_spans_dropped_total";
/// Connections dropped as not HTTP, and parse failures by protocol.
pub const NOT_HTTP: &str = "beyla_connections_dropped_total{reason=\"not_http\"}";
pub const HTTP1_PARSE_ERRORS: &str = "beyla_parse_errors_total{protocol=\"http1\"}";
pub const HTTP2_PARSE_ERRORS: &str = "beyla_parse_errors_total{protocol=\"http2\"}";

/// Series that move on their own schedule (the periodic OTLP metrics export), not because of
/// traffic: the idle check ignores them.
const PERIODIC: &[&str] = &[
    "beyla_metrics_exports_total",
    "beyla_export_errors_total{signal=\"metrics\"}",
];

/// One scrape: series (name plus `{labels}` as the daemon writes them) → value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// Parses the Prometheus text exposition of the daemon's internal counters. Every sample
    /// must be a non-negative integer (they are counters); anything else is an error.
    pub fn parse(text: &str) -> Result<Counters, String> {
        let mut m = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            // The daemon's counters; its RSS and CPU time (`process_*`) are not counts.
            if line.is_empty() || line.starts_with('#') || line.starts_with("process_") {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("no value in sample line {line:?}"))?;
            let v: u64 = value
                .parse()
                .map_err(|e| format!("sample {line:?}: value is not a counter: {e}"))?;
            if m.insert(series.to_owned(), v).is_some() {
                return Err(format!("series {series:?} appears twice"));
            }
        }
        if m.is_empty() {
            return Err(format!("no samples in {text:?}"));
        }
        Ok(Counters(m))
    }

    /// The value of `series`; panics when the daemon does not export it (a renamed counter
    /// must fail the test, not read as 0).
    pub fn get(&self, series: &str) -> u64 {
        *self.0.get(series).unwrap_or_else(|| {
            panic!(
                "the daemon exports no counter {series:?}; it has {:?}",
                self.0.keys()
            )
        })
    }

    /// Counters that moved because of traffic (everything but [`PERIODIC`]).
    fn traffic(&self) -> BTreeMap<&str, u64> {
        self.0
            .iter()
            .filter(|(k, _)| !PERIODIC.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// True when these traffic counters equal `other`'s.
    pub fn same_traffic(&self, other: &Counters) -> bool {
        self.traffic() == other.traffic()
    }

    /// Every span built has left the export queue: delivered or counted as dropped.
    pub fn queue_drained(&self) -> bool {
        self.get(SPANS_CREATED) == self.get(SPANS_EXPORTED) + self.get(SPANS_DROPPED)
    }
}

/// How long the traffic counters must stand still before [`wait_idle`] calls the daemon idle:
/// four drain ticks (the daemon reads the ring buffer at least every 250 ms) and five export
/// schedule delays (200 ms in the tests), so a record still in the ring or a span still
/// waiting for its batch moves a counter inside the window.
pub fn idle_window() -> Duration {
    crate::scaled(Duration::from_millis(1000))
}

/// Reads counters with `read` every 50 ms until the traffic counters have not moved for
/// [`idle_window`] and the export queue is drained ([`Counters::queue_drained`]); returns
/// them then, or an error with the last counters at `timeout`.
pub fn wait_idle(
    mut read: impl FnMut() -> Counters,
    timeout: Duration,
) -> Result<Counters, String> {
    let deadline = Instant::now() + timeout;
    let mut last = read();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        if !now.same_traffic(&last) {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= idle_window() && now.queue_drained() {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the daemon did not become idle within {timeout:?} (counters still moving or \
                 spans still queued): {:?}",
                last.0
            ));
        }
    }
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`; the body of a 200 answer.
pub fn scrape(port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("GET {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("GET {path}: reading the answer: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("GET {path}: not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no complete head in {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("GET {path}: {head}"));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP beyla_events_read Kernel ring buffer records read\n\
                        # TYPE beyla_events_read counter\n\
                        beyla_events_read_total 42\n\
                        beyla_connections_dropped_total{reason=\"not_http\"} 3\n\
                        beyla_connections_dropped_total{reason=\"evicted\"} 0\n\
                        beyla_spans_created_total 7\n\
                        beyla_spans_exported_total 5\n\
                        beyla_spans_dropped_total 2\n\
                        beyla_metrics_exports_total 1\n";

    #[test]
    fn parses_series_with_labels() {
        let c = Counters::parse(TEXT).unwrap();
        assert_eq!(c.get(EVENTS_READ), 42);
        assert_eq!(
            c.get("beyla_connections_dropped_total{reason=\"not_http\"}"),
            3
        );
        assert_eq!(
            c.get("beyla_connections_dropped_total{reason=\"evicted\"}"),
            0
        );
        assert_eq!(c.0.len(), 7);
        assert!(c.queue_drained());
    }

    #[test]
    fn queue_not_drained_while_a_span_is_waiting() {
        let c = Counters::parse(&TEXT.replace("created_total 7", "created_total 8")).unwrap();
        assert!(!c.queue_drained());
    }

    #[test]
    fn periodic_series_do_not_count_as_traffic() {
        let a = Counters::parse(TEXT).unwrap();
        let b = Counters::parse(&TEXT.replace("exports_total 1", "exports_total 2")).unwrap();
        assert!(a.same_traffic(&b));
        let c = Counters::parse(&TEXT.replace("read_total 42", "read_total 43")).unwrap();
        assert!(!a.same_traffic(&c));
    }

    #[test]
    fn rejects_what_is_not_a_counter_exposition() {
        assert!(Counters::parse("").is_err());
        assert!(Counters::parse("beyla_events_read_total 1.5\n").is_err());
        assert!(Counters::parse("beyla_events_read_total -1\n").is_err());
        assert!(Counters::parse("beyla_events_read_total\n").is_err());
        assert!(Counters::parse("a_total 1\na_total 2\n").is_err());
    }

    #[test]
    fn idle_once_nothing_moves_and_the_queue_is_drained() {
        // Records still being read, then a span queued, then exported: idle only after that.
        let texts = [
            TEXT.replace("read_total 42", "read_total 40"),
            TEXT.replace("created_total 7", "created_total 8"),
            TEXT.replace("created_total 7", "created_total 8")
                .replace("exported_total 5", "exported_total 6"),
        ];
        let mut reads = 0;
        let t = Instant::now();
        let c = wait_idle(
            || {
                reads += 1;
                Counters::parse(&texts[(reads - 1).min(2)]).unwrap()
            },
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.get(SPANS_EXPORTED), 6);
        assert!(t.elapsed() >= idle_window());
    }

    #[test]
    fn not_idle_while_a_span_stays_queued() {
        let queued = TEXT.replace("created_total 7", "created_total 8");
        let e = wait_idle(
            || Counters::parse(&queued).unwrap(),
            idle_window() + Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(e.contains("did not become idle"), "{e}");
    }

    #[test]
    #[should_panic(expected = "no counter")]
    fn a_missing_series_fails_instead_of_reading_zero() {
        Counters::parse(TEXT)
            .unwrap()
            .get("beyla_spans_renamed_total");
    }
}
