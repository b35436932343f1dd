//! `BEYLA_TRACE_PRINTER`: spans on stdout, one per line (text or JSON), for first runs and
//! debugging.

use std::{
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry::{Value, trace::SpanKind};

use crate::{config::TracePrinter, span::SpanRecord};

pub struct Printer {
    format: TracePrinter,
    out: std::io::Stdout,
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm), so no date crate is needed for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn kind(k: &SpanKind) -> &'static str {
    match k {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Internal => "INTERNAL",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => (*b).into(),
        Value::I64(i) => (*i).into(),
        Value::F64(f) => (*f).into(),
        other => other.as_str().into_owned().into(),
    }
}

impl Printer {
    pub fn new(format: TracePrinter) -> Option<Self> {
        match format {
            TracePrinter::Disabled => None,
            f => Some(Self {
                format: f,
                out: std::io::stdout(),
            }),
        }
    }

    pub fn print(&mut self, s: &SpanRecord) {
        let line = match self.format {
            TracePrinter::Disabled => return,
            TracePrinter::Text => Self::text(s),
            TracePrinter::Json | TracePrinter::JsonIndent => {
                let v = Self::json(s);
                let r = if self.format == TracePrinter::Json {
                    serde_json::to_string(&v)
                } else {
                    serde_json::to_string_pretty(&v)
                };
                r.unwrap_or_default()
            }
        };
        let mut out = self.out.lock();
        // A closed stdout must not take the daemon down.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn text(s: &SpanRecord) -> String {
        let dur = s.end.duration_since(s.start).unwrap_or_default();
        let mut attrs = String::new();
        for kv in &s.attributes {
            attrs.push_str(&format!(" {}={}", kv.key, kv.value.as_str()));
        }
        format!(
            "{} ({:.3}ms) {} {}{} [{} pid={}] trace_id={} span_id={} parent={}{}",
            rfc3339(s.start),
            dur.as_secs_f64() * 1e3,
            kind(&s.kind),
            s.name,
            if s.error { " ERROR" } else { "" },
            s.process.service_name,
            s.process.pid,
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            attrs
        )
    }

    fn json(s: &SpanRecord) -> serde_json::Value {
        let attrs: serde_json::Map<String, serde_json::Value> = s
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), json_value(&kv.value)))
            .collect();
        serde_json::json!({
            "name": s.name.as_str(),
            "kind": kind(&s.kind),
            "trace_id": s.trace_id.to_string(),
            "span_id": s.span_id.to_string(),
            "parent_span_id": s.parent_span_id.to_string(),
            "start": rfc3339(s.start),
            "end": rfc3339(s.end),
            "duration_us": s.end.duration_since(s.start).unwrap_or_default().as_micros() as u64,
            "status": if s.error { "ERROR" } else { "UNSET" },
            "attributes": attrs,
            "resource": {
                "service.name": s.process.service_name,
                "process.pid": s.process.pid,
                "process.executable.name": s.process.exe_name,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
    }
}
