//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, with the OpenTelemetry SDKs' semantics.
//!
//! Sampling only decides which *spans* are exported: metrics are recorded from every finished
//! exchange before a span is sampled out.

use opentelemetry::trace::TraceId;

/// The sampler for root spans (no parent anywhere), and whether a parent's decision wins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// A span with a parent (remote, from `traceparent`, or local, from the request the
    /// process was serving) follows the parent's sampled flag; roots use the inner sampler.
    ParentBased(Root),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

/// The ratio sampler of the OpenTelemetry specification: a trace is sampled when the low 63
/// bits of its trace id's last 8 bytes fall below `ratio * 2^63`, so every service with the
/// same ratio makes the same decision for a trace.
fn ratio_sampled(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    x < bound
}

impl Sampler {
    /// Parses the variables' values; `Err` names what is wrong.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1"
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio()?)),
            _ => {
                return Err(
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                        .to_owned(),
                );
            }
        })
    }

    /// Whether a span of `trace_id` is sampled; `parent`: the parent's sampled flag, if the
    /// span has a parent.
    pub fn sampled(&self, trace_id: TraceId, parent: Option<bool>) -> bool {
        match *self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(r) => ratio_sampled(r, trace_id),
            Sampler::ParentBased(root) => match parent {
                Some(p) => p,
                None => match root {
                    Root::AlwaysOn => true,
                    Root::AlwaysOff => false,
                    Root::TraceIdRatio(r) => ratio_sampled(r, trace_id),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_decide() {
        let t = TraceId::from(0x1234u128);
        assert_eq!(Sampler::parse("always_on", None), Ok(Sampler::AlwaysOn));
        assert!(Sampler::parse("sometimes", None).is_err());
        assert!(Sampler::parse("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::parse("traceidratio", Some("x")).is_err());
        let pb = Sampler::default();
        assert!(pb.sampled(t, None));
        assert!(!pb.sampled(t, Some(false)));
        assert!(Sampler::AlwaysOn.sampled(t, Some(false)));
        assert!(!Sampler::AlwaysOff.sampled(t, Some(true)));
        let off = Sampler::parse("parentbased_always_off", None).unwrap();
        assert!(!off.sampled(t, None));
        assert!(off.sampled(t, Some(true)));
    }

    #[test]
    fn ratio_is_close_and_deterministic() {
        let s = Sampler::parse("traceidratio", Some("0.25")).unwrap();
        let mut n = 0;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = TraceId::from(((x as u128) << 64) | x as u128);
            if s.sampled(id, None) {
                n += 1;
            }
            assert_eq!(s.sampled(id, None), s.sampled(id, Some(false)));
        }
        assert!((4_000..6_000).contains(&n), "{n}");
        assert!(!Sampler::TraceIdRatio(0.0).sampled(TraceId::from(1u128), None));
    }
}
