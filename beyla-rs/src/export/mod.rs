//! Where finished spans go: the trace printer (stdout) and the OTLP exporter.
//!
//! The pipeline hands spans to a [`Sink`] and never waits: printing is synchronous and cheap,
//! OTLP export runs in its own task behind a bounded [`Queue`] that drops the *oldest* spans
//! when the collector cannot keep up, counting every drop.

pub mod otlp;
pub mod printer;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

use crate::{span::SpanRecord, stats::Stats};

/// Bounded FIFO between the pipeline and the OTLP export task.
pub struct Queue {
    spans: Mutex<VecDeque<SpanRecord>>,
    capacity: usize,
    batch: usize,
    ready: Notify,
    stats: Arc<Stats>,
}

impl Queue {
    pub fn new(capacity: usize, batch: usize, stats: Arc<Stats>) -> Self {
        Self {
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            batch: batch.max(1),
            ready: Notify::new(),
            stats,
        }
    }

    pub fn push(&self, span: SpanRecord) {
        let len = {
            let mut q = self.spans.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.capacity {
                q.pop_front();
                Stats::inc(&self.stats.spans_dropped);
            }
            q.push_back(span);
            q.len()
        };
        if len >= self.batch {
            self.ready.notify_one();
        }
    }

    /// Up to one batch of the oldest spans.
    pub fn take_batch(&self) -> Vec<SpanRecord> {
        let mut q = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(self.batch);
        q.drain(..n).collect()
    }

    /// Empty the queue; returns how many spans were discarded.
    pub fn take_all_count(&self) -> usize {
        let mut q = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len();
        q.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when a full batch is waiting.
    pub async fn batch_ready(&self) {
        self.ready.notified().await
    }
}

/// The pipeline's handle on every span destination.
pub struct Sink {
    printer: Option<printer::Printer>,
    queue: Option<Arc<Queue>>,
    stats: Arc<Stats>,
}

impl Sink {
    pub fn new(
        printer: Option<printer::Printer>,
        queue: Option<Arc<Queue>>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            printer,
            queue,
            stats,
        }
    }

    pub fn emit(&mut self, span: SpanRecord) {
        Stats::inc(&self.stats.spans_created);
        if let Some(p) = &mut self.printer {
            p.print(&span);
        }
        if let Some(q) = &self.queue {
            q.push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessInfo;
    use opentelemetry::trace::{SpanId, SpanKind, TraceId};
    use std::time::SystemTime;

    fn span(n: u64) -> SpanRecord {
        SpanRecord {
            process: Arc::new(ProcessInfo {
                pid: 1,
                exe_path: String::new(),
                exe_name: "x".into(),
                service_name: "x".into(),
                service_namespace: None,
                instance_id: "h-1".into(),
                host_name: "h".into(),
                extra_resource: vec![],
            }),
            kind: SpanKind::Server,
            name: format!("GET /{n}").into(),
            trace_id: TraceId::from(n as u128 + 1),
            span_id: SpanId::from(n + 1),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: vec![],
            error: false,
        }
    }

    #[test]
    fn queue_drops_oldest_and_counts() {
        let stats = Arc::new(Stats::default());
        let q = Queue::new(3, 2, stats.clone());
        for i in 0..5 {
            q.push(span(i));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(stats.snapshot().spans_dropped, 2);
        let b = q.take_batch();
        assert_eq!(
            b.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["GET /2", "GET /3"]
        );
        assert_eq!(q.take_batch().len(), 1);
        assert!(q.is_empty());
    }
}
