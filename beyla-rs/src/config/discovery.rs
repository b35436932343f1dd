//! Which processes are instrumented, and under which service name: Beyla's
//! `discovery.instrument` entries (each one a service), `exclude_instrument` and
//! `default_exclude_instrument`. The environment's selectors (`BEYLA_OPEN_PORT`,
//! `BEYLA_AUTO_TARGET_EXE`, …) form one more entry, named by `BEYLA_SERVICE_NAME`.

use super::values::PortSet;

/// One entry: a process must match every criterion set in it.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub open_ports: PortSet,
    pub exe_glob: Option<glob::Pattern>,
    pub exe_regex: Option<regex::Regex>,
    pub target_pid: Option<u32>,
    /// `service.name` of what it selects (else the process's own name).
    pub name: Option<String>,
    /// `service.namespace` of what it selects.
    pub namespace: Option<String>,
}

impl Selector {
    /// True when matching needs the process's executable.
    pub fn uses_exe(&self) -> bool {
        self.exe_glob.is_some() || self.exe_regex.is_some()
    }

    /// No criterion at all (an environment without selectors).
    pub fn is_empty(&self) -> bool {
        self.open_ports.is_empty() && !self.uses_exe() && self.target_pid.is_none()
    }

    /// The criteria other than ports. `exe` is read only when needed (it costs a readlink).
    pub fn matches_process(&self, pid: u32, exe: &mut impl FnMut() -> Option<String>) -> bool {
        if self.target_pid.is_some_and(|t| t != pid) {
            return false;
        }
        if !self.uses_exe() {
            return true;
        }
        let Some(exe) = exe() else { return false };
        self.exe_glob.as_ref().is_none_or(|g| g.matches(&exe))
            && self.exe_regex.as_ref().is_none_or(|r| r.is_match(&exe))
    }

    /// Ports: none configured matches any process; otherwise one of `ports` must be listed.
    pub fn matches_ports(&self, ports: &[u16]) -> bool {
        self.open_ports.is_empty() || ports.iter().any(|&p| self.open_ports.contains(p))
    }
}

/// Beyla's default exclusions: itself, Alloy, the OpenTelemetry Collector (and beyla-rs).
pub const DEFAULT_EXCLUDE_EXE: &[&str] = &[
    "*beyla",
    "*beyla-rs",
    "*ebpf-instrument",
    "*alloy",
    "*grafana-agent",
    "*otelcol*",
];

/// The whole selection.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Entries in order: the first one that matches names the process.
    pub instrument: Vec<Selector>,
    /// `exclude_instrument` and `default_exclude_instrument`: a match is never instrumented.
    pub exclude: Vec<Selector>,
}

impl Selection {
    /// One entry, no exclusions.
    pub fn single(s: Selector) -> Self {
        Self {
            instrument: vec![s],
            exclude: Vec::new(),
        }
    }

    /// Some entry depends on the executable: exec events must be watched.
    pub fn uses_exe(&self) -> bool {
        self.instrument.iter().any(Selector::uses_exe)
    }

    /// Every port some entry selects (the kernel tracks processes that bind one).
    pub fn ports(&self) -> PortSet {
        let mut out = PortSet::default();
        for s in &self.instrument {
            out.extend(&s.open_ports);
        }
        out
    }

    /// The first entry that selects `pid`, which listens on `ports` (`None`: ports unknown,
    /// only entries without ports can select it), unless an exclusion matches.
    pub fn choose(
        &self,
        pid: u32,
        ports: Option<&[u16]>,
        exe: &mut impl FnMut() -> Option<String>,
    ) -> Option<usize> {
        let found = self.instrument.iter().position(|s| {
            let by_port = match ports {
                Some(p) => s.matches_ports(p),
                None => s.open_ports.is_empty(),
            };
            by_port && s.matches_process(pid, exe)
        })?;
        (!self.excluded(pid, ports.unwrap_or(&[]), exe)).then_some(found)
    }

    /// An exclusion entry matches. An entry with ports needs one of them among `ports`.
    pub fn excluded(
        &self,
        pid: u32,
        ports: &[u16],
        exe: &mut impl FnMut() -> Option<String>,
    ) -> bool {
        self.exclude
            .iter()
            .any(|s| s.matches_ports(ports) && s.matches_process(pid, exe))
    }

    /// A one-line description for the start-up log.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        for s in &self.instrument {
            let mut parts = Vec::new();
            if !s.open_ports.is_empty() {
                parts.push(format!("{} port(s)", s.open_ports.ports().len()));
            }
            if let Some(g) = &s.exe_glob {
                parts.push(format!("exe glob {}", g.as_str()));
            }
            if let Some(r) = &s.exe_regex {
                parts.push(format!("exe regex {}", r.as_str()));
            }
            if let Some(p) = s.target_pid {
                parts.push(format!("pid {p}"));
            }
            let what = parts.join(" and ");
            out.push(match &s.name {
                Some(n) => format!("{what} as {n:?}"),
                None => what,
            });
        }
        let mut line = out.join("; ");
        if !self.exclude.is_empty() {
            line.push_str(&format!(" ({} exclusion(s))", self.exclude.len()));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(ports: &str, exe: Option<&str>, name: &str) -> Selector {
        Selector {
            open_ports: if ports.is_empty() {
                PortSet::default()
            } else {
                PortSet::parse("t", ports).unwrap()
            },
            exe_glob: exe.map(|e| glob::Pattern::new(e).unwrap()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn first_matching_entry_names_the_process() {
        let s = Selection {
            instrument: vec![
                sel("8080", Some("*/python3*"), "py"),
                sel("8080-8090", None, "any"),
                sel("", Some("*/node"), "node"),
            ],
            exclude: vec![sel("", Some("*alloy"), "x")],
        };
        let exe = |e: &'static str| move || Some(e.to_owned());
        assert_eq!(
            s.choose(1, Some(&[8080]), &mut exe("/usr/bin/python3.11")),
            Some(0)
        );
        assert_eq!(
            s.choose(1, Some(&[8080]), &mut exe("/usr/sbin/nginx")),
            Some(1)
        );
        assert_eq!(
            s.choose(1, Some(&[9999]), &mut exe("/usr/sbin/nginx")),
            None
        );
        // Port-less entries select by executable alone, with or without ports known.
        assert_eq!(s.choose(1, None, &mut exe("/usr/bin/node")), Some(2));
        assert_eq!(
            s.choose(1, Some(&[3000]), &mut exe("/usr/bin/node")),
            Some(2)
        );
        assert_eq!(s.choose(1, None, &mut exe("/usr/bin/python3")), None);
        // Exclusions win.
        assert_eq!(s.choose(1, Some(&[8080]), &mut exe("/usr/bin/alloy")), None);
        assert_eq!(s.ports().ports().len(), 11);
        assert!(s.uses_exe());
    }

    #[test]
    fn exe_is_read_only_when_needed() {
        let s = Selection::single(sel("80", None, "a"));
        let mut reads = 0;
        let mut exe = || {
            reads += 1;
            None
        };
        assert_eq!(s.choose(7, Some(&[80]), &mut exe), Some(0));
        assert_eq!(reads, 0);
    }
}
